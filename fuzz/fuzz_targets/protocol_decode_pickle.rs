//! Feeds arbitrary bytes to the pickle marshaller with the server's and the
//! client's global policies: it must return, not panic, and whatever the
//! server accepts must parse without panicking.
#![no_main]

use libfuzzer_sys::fuzz_target;

mod check {
    include!("../checks/protocol_decode_pickle.rs");
}

fuzz_target!(|data: &[u8]| check::run(data));
