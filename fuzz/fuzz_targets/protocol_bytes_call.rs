//! Feeds arbitrary bytes to the in-place reader of blob chunk calls: it
//! must return, not panic, and agree with the general decoder on whatever
//! it reads.
#![no_main]

use libfuzzer_sys::fuzz_target;

mod check {
    include!("../checks/protocol_bytes_call.rs");
}

fuzz_target!(|data: &[u8]| check::run(data));
