//! Feeds arbitrary bytes to the client cache as its persistent file: the
//! replay at open must keep what verifies, set the rest aside, and never
//! panic or allocate what the file merely claims.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let dir = tempfile::tempdir_in("/dev/shm")
        .or_else(|_| tempfile::tempdir())
        .expect("a temporary directory");
    zeo_client::cache::fuzz_replay(dir.path(), data);
});
