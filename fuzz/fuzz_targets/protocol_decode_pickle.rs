//! Feeds arbitrary bytes to the pickle marshaller with the server's and the
//! client's global policies: it must return, not panic, and whatever the
//! server accepts must parse without panicking.
#![no_main]

use libfuzzer_sys::fuzz_target;
use zeo_protocol::{ClientIncoming, Encoding, Error, Marshaller, ServerRequest};

fuzz_target!(|data: &[u8]| {
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
                Error::ForbiddenGlobal { .. } | Error::Malformed { .. } | Error::NotAMessage(_),
            ) => {}
            Err(other) => panic!("unexpected decode error kind: {other}"),
        }
    }
});
