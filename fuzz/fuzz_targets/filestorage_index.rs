//! Feeds arbitrary bytes to the `Data.fs.index` reader, alone and as the
//! index of a small sound data file that is then opened and read.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    zeo_storage::filestorage::fuzzing::index_file(data);
});
