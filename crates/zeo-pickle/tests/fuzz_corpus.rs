//! Replays every fuzz input kept in the repository (`fuzz/corpus/<target>/`
//! and, when present, the crash reproductions in `fuzz/artifacts/<target>/`)
//! through the very checks the libFuzzer targets run, on a stable
//! toolchain, so the corpora stay meaningful and no crash comes back.

use std::path::{Path, PathBuf};

mod pickle_decode {
    include!("../../../fuzz/checks/pickle_decode.rs");
}

mod pickle_references {
    include!("../../../fuzz/checks/pickle_references.rs");
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
fn pickle_decode_corpus() {
    replay("pickle_decode", pickle_decode::run);
}

#[test]
fn pickle_references_corpus() {
    replay("pickle_references", pickle_references::run);
}
