//! Replays every fuzz input kept in the repository (`fuzz/corpus/<target>/`
//! and, when present, the crash reproductions in `fuzz/artifacts/<target>/`)
//! through the very checks the libFuzzer targets run, on a stable
//! toolchain, so the corpora stay meaningful and no crash comes back.

mod protocol_bytes_call {
    include!("../../../fuzz/checks/protocol_bytes_call.rs");
}

mod protocol_decode_msgpack {
    include!("../../../fuzz/checks/protocol_decode_msgpack.rs");
}

mod protocol_decode_pickle {
    include!("../../../fuzz/checks/protocol_decode_pickle.rs");
}

mod protocol_frame {
    include!("../../../fuzz/checks/protocol_frame.rs");
}

mod replay {
    include!("../../../fuzz/checks/replay.rs");
}

use replay::replay;

#[test]
fn protocol_bytes_call_corpus() {
    replay("protocol_bytes_call", protocol_bytes_call::run);
    // Every message of the decoders' corpora too.
    replay("protocol_decode_pickle", protocol_bytes_call::run);
    replay("protocol_decode_msgpack", protocol_bytes_call::run);
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
