//! Drives the frame codec and both handshakes with arbitrary bytes, fed in
//! arbitrary pieces: no panic, and frames never exceed the limit.
#![no_main]

use libfuzzer_sys::fuzz_target;

mod check {
    include!("../checks/protocol_frame.rs");
}

fuzz_target!(|data: &[u8]| check::run(data));
