//! Replays every fuzz input kept in the repository for native conflict
//! resolution (`fuzz/corpus/conflict_resolve/`, and crash reproductions in
//! `fuzz/artifacts/conflict_resolve/` when present) through the check the
//! libFuzzer target runs, on a stable toolchain.

mod conflict_resolve {
    include!("../../../fuzz/checks/conflict_resolve.rs");
}

mod replay {
    include!("../../../fuzz/checks/replay.rs");
}

#[test]
fn conflict_resolve_corpus() {
    replay::replay("conflict_resolve", conflict_resolve::run);
}
