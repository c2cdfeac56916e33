//! Feeds arbitrary bytes to the ZODB record scanners: they must return,
//! not panic.
#![no_main]

use libfuzzer_sys::fuzz_target;

mod check {
    include!("../checks/pickle_references.rs");
}

fuzz_target!(|data: &[u8]| check::run(data));
