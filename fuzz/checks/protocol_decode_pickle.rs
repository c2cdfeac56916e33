// Feeds arbitrary bytes to the pickle marshaller with the server's and the
// client's global policies: it must return, not panic, and whatever the
// server accepts must parse without panicking.
//
// Shared (through `include!`) by the libFuzzer target
// `fuzz_targets/protocol_decode_pickle.rs` and the stable corpus replay test, so
// both run exactly this.

use zeo_protocol::{ClientIncoming, Encoding, Error, Marshaller, ServerRequest};

/// Runs one input; panics on a defect.
pub fn run(data: &[u8]) {
    for m in [
        Marshaller::server(Encoding::Pickle),
        Marshaller::client(Encoding::Pickle),
    ] {
        match m.decode(data) {
            Ok(msg) => {
                let _ = ServerRequest::parse(&msg);
                let _ = ClientIncoming::parse(&msg);
                let _ = m.encode(&msg);
            }
            Err(
                Error::ForbiddenGlobal { .. }
                | Error::Malformed { .. }
                | Error::LimitExceeded { .. }
                | Error::NotAMessage(_),
            ) => {}
            Err(other) => panic!("unexpected decode error kind: {other}"),
        }
    }
}
