//! Replays every fuzz input kept in the repository (`fuzz/corpus/<target>/`
//! and, when present, the crash reproductions in `fuzz/artifacts/<target>/`)
//! through the very checks the libFuzzer targets run, on a stable
//! toolchain, so the corpora stay meaningful and no crash comes back.

mod pickle_decode {
    include!("../../../fuzz/checks/pickle_decode.rs");
}

mod pickle_references {
    include!("../../../fuzz/checks/pickle_references.rs");
}

mod replay {
    include!("../../../fuzz/checks/replay.rs");
}

use replay::replay;

#[test]
fn pickle_decode_corpus() {
    replay("pickle_decode", pickle_decode::run);
}

#[test]
fn pickle_references_corpus() {
    replay("pickle_references", pickle_references::run);
}
