//! Feeds arbitrary bytes to the ZODB record scanners: they must return,
//! not panic.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = zeo_pickle::references(data);
    let _ = zeo_pickle::class_of(data);
});
