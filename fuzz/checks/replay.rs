// The stable replay of a target's kept inputs, shared by the crates'
// `tests/fuzz_corpus.rs` (each `include!`s this file, so the path below is
// the including crate's).

/// The directory of `target`'s inputs of `kind` (`corpus` or `artifacts`).
pub fn kept_inputs_dir(kind: &str, target: &str) -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../fuzz")
        .join(kind)
        .join(target)
}

/// Runs `run` on every file of `fuzz/corpus/<target>/` and
/// `fuzz/artifacts/<target>/` (corpus first, each in name order) and fails
/// naming every input that panicked. The seeds are committed, so an empty
/// corpus is a failure too: without them this would pass by doing nothing.
pub fn replay(target: &str, run: impl Fn(&[u8]) + std::panic::RefUnwindSafe) {
    let mut seeds = 0;
    let mut failed = Vec::new();
    for kind in ["corpus", "artifacts"] {
        let Ok(entries) = std::fs::read_dir(kept_inputs_dir(kind, target)) else {
            continue;
        };
        let mut files: Vec<std::path::PathBuf> = entries
            .map(|e| e.expect("readable directory").path())
            .filter(|p| p.is_file())
            .collect();
        files.sort();
        if kind == "corpus" {
            seeds = files.len();
        }
        for path in files {
            let data = std::fs::read(&path).expect("readable input");
            if std::panic::catch_unwind(|| run(&data)).is_err() {
                failed.push(path.display().to_string());
            }
        }
    }
    assert!(seeds > 0, "no corpus for {target}");
    assert!(failed.is_empty(), "{target} fails on {failed:#?}");
}
