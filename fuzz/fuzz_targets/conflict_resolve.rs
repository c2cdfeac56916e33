//! Feeds arbitrary records to native conflict resolution: it must return,
//! not panic, and what it merges must read back.
#![no_main]

use libfuzzer_sys::fuzz_target;

mod check {
    include!("../checks/conflict_resolve.rs");
}

fuzz_target!(|data: &[u8]| check::run(data));
