//! Feeds arbitrary bytes to the pickle decoder: it must return, not panic,
//! and what it returns must survive re-encoding.
#![no_main]

use libfuzzer_sys::fuzz_target;

mod check {
    include!("../checks/pickle_decode.rs");
}

fuzz_target!(|data: &[u8]| check::run(data));
