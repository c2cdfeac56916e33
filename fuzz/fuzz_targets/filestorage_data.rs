//! Feeds arbitrary bytes to FileStorage as a `Data.fs`: the open-time scan,
//! the record reader, the iterator, `check` and `check_refs` must return
//! errors, never panic, loop or allocate beyond the input's size.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    zeo_storage::filestorage::fuzzing::data_file(data);
});
