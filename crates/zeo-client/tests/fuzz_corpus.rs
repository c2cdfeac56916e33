//! Replays the committed corpus (and any crash inputs) of the
//! `client_cache_replay` fuzz target through the same entry point, so CI
//! checks them on stable Rust without cargo-fuzz.
//!
//! `cargo test -p zeo-client --test fuzz_corpus -- --ignored` rewrites the
//! seed files from caches written here.

use zeo_client::ClientCache;
use zeo_storage::{Oid, Tid};

mod replay {
    include!("../../../fuzz/checks/replay.rs");
}

use replay::{kept_inputs_dir, replay};

#[test]
fn client_cache_replay_corpus_replays() {
    replay("client_cache_replay", |data| {
        let dir = tempfile::tempdir().unwrap();
        zeo_client::cache::fuzz_replay(dir.path(), data);
    });
}

#[test]
#[ignore = "rewrites the committed seed corpus"]
fn write_seed_corpus() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("fuzz-1.zec");
    {
        let c = ClientCache::open(&path, "1", 1 << 20).unwrap();
        c.store(Oid(0), Tid(5), None, b"root state");
        c.store(Oid(1), Tid(3), Some(Tid(5)), b"old revision");
        c.store(Oid(1), Tid(5), None, b"new revision");
        c.store(Oid(2), Tid(5), None, &[7u8; 300]);
        c.set_last_tid(Tid(5)).unwrap();
        c.apply_invalidations(Tid(6), &[Oid(2)]).unwrap();
        c.sync().unwrap();
    }
    let bytes = std::fs::read(&path).unwrap();
    let out = kept_inputs_dir("corpus", "client_cache_replay");
    std::fs::create_dir_all(&out).unwrap();
    std::fs::write(out.join("sample"), &bytes).unwrap();
    std::fs::write(out.join("torn-tail"), &bytes[..bytes.len() - 5]).unwrap();
    let fresh = dir.path().join("fresh-1.zec");
    drop(ClientCache::open(&fresh, "1", 1 << 20).unwrap());
    std::fs::write(out.join("fresh"), std::fs::read(&fresh).unwrap()).unwrap();
}
