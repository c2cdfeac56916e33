//! Feeds arbitrary bytes to the msgpack marshaller on both sides: it must
//! return, not panic; whatever decodes must parse without panicking and
//! re-encode to bytes that decode to the same message.
#![no_main]

use libfuzzer_sys::fuzz_target;

mod check {
    include!("../checks/protocol_decode_msgpack.rs");
}

fuzz_target!(|data: &[u8]| check::run(data));
