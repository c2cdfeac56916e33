//! Replays every fuzz input kept in the repository (`fuzz/corpus/<target>/`
//! and, when present, the crash reproductions in `fuzz/artifacts/<target>/`)
//! through the very checks the libFuzzer targets run, on a stable
//! toolchain, so the corpora stay meaningful and no crash comes back.

use std::path::{Path, PathBuf};

mod protocol_decode_msgpack {
    include!("../../../fuzz/checks/protocol_decode_msgpack.rs");
}

mod protocol_decode_pickle {
    include!("../../../fuzz/checks/protocol_decode_pickle.rs");
}

mod protocol_frame {
    include!("../../../fuzz/checks/protocol_frame.rs");
}

/// The kept inputs of `target`, corpus first, in name order.
fn inputs(target: &str) -> (Vec<PathBuf>, usize) {
    let fuzz = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fuzz");
    let mut all = Vec::new();
    let mut seeds = 0;
    for dir in ["corpus", "artifacts"] {
        let Ok(entries) = std::fs::read_dir(fuzz.join(dir).join(target)) else {
            continue;
        };
        let mut files: Vec<PathBuf> = entries
            .map(|e| e.expect("readable directory").path())
            .filter(|p| p.is_file())
            .collect();
        files.sort();
        if dir == "corpus" {
            seeds = files.len();
        }
        all.extend(files);
    }
    (all, seeds)
}

fn replay(target: &str, run: fn(&[u8])) {
    let (files, seeds) = inputs(target);
    // Without its seeds this test would pass by doing nothing.
    assert!(seeds > 0, "no corpus for {target}");
    let failed: Vec<String> = files
        .iter()
        .filter(|path| {
            let data = std::fs::read(path).expect("readable input");
            std::panic::catch_unwind(|| run(&data)).is_err()
        })
        .map(|path| path.display().to_string())
        .collect();
    assert!(failed.is_empty(), "{target} fails on {failed:#?}");
}

#[test]
fn protocol_decode_msgpack_corpus() {
    replay("protocol_decode_msgpack", protocol_decode_msgpack::run);
}

#[test]
fn protocol_decode_pickle_corpus() {
    replay("protocol_decode_pickle", protocol_decode_pickle::run);
}

#[test]
fn protocol_frame_corpus() {
    replay("protocol_frame", protocol_frame::run);
}
