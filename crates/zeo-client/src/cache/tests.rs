use std::collections::BTreeMap;

use proptest::prelude::*;

use super::*;

fn tmp_cache(capacity: u64) -> (tempfile::TempDir, PathBuf, ClientCache) {
    let dir = tempfile::tempdir().unwrap();
    let path = ClientCache::persistent_path(dir.path(), "test", "1");
    let cache = ClientCache::open(&path, "1", capacity).unwrap();
    (dir, path, cache)
}

#[test]
fn invalidate_keeps_the_old_revision_as_non_current() {
    let c = ClientCache::memory(1 << 20);
    c.store(Oid(1), Tid(10), None, b"a");
    c.invalidate(Oid(1), Tid(20));
    assert_eq!(c.load(Oid(1)), None);
    assert_eq!(
        c.load_before(Oid(1), Tid(10)),
        None,
        "nothing before the first revision"
    );
    let r = c.load_before(Oid(1), Tid(11)).unwrap();
    assert_eq!(
        (r.data, r.start, r.end),
        (b"a".to_vec(), Tid(10), Some(Tid(20)))
    );
    assert!(
        c.load_before(Oid(1), Tid(20)).is_some(),
        "before == end is still this revision"
    );
    assert_eq!(
        c.load_before(Oid(1), Tid(21)),
        None,
        "after the end: unknown"
    );
    c.store(Oid(1), Tid(20), None, b"b");
    assert_eq!(c.load(Oid(1)), Some((b"b".to_vec(), Tid(20))));
    assert_eq!(c.load_before(Oid(1), Tid(21)).unwrap().data, b"b");
    assert_eq!(c.load_before(Oid(1), Tid::MAX).unwrap().end, None);
    assert_eq!(c.len(), 2);
}

#[test]
fn invalidation_with_the_current_tid_is_ignored_and_misses_are_noops() {
    let c = ClientCache::memory(1 << 20);
    c.store(Oid(1), Tid(10), None, b"a");
    c.invalidate(Oid(1), Tid(10));
    assert_eq!(c.load(Oid(1)), Some((b"a".to_vec(), Tid(10))));
    c.invalidate(Oid(2), Tid(11));
    assert_eq!(c.len(), 1);
}

#[test]
fn drop_current_keeps_history() {
    let c = ClientCache::memory(1 << 20);
    c.store(Oid(1), Tid(5), Some(Tid(10)), b"old");
    c.store(Oid(1), Tid(10), None, b"new");
    c.drop_current(Oid(1));
    assert_eq!(c.load(Oid(1)), None);
    assert_eq!(c.load_before(Oid(1), Tid(10)).unwrap().data, b"old");
    assert_eq!(c.load_before(Oid(1), Tid(11)), None);
}

#[test]
fn storing_a_known_revision_is_a_noop_and_newer_current_wins() {
    let c = ClientCache::memory(1 << 20);
    c.store(Oid(1), Tid(10), None, b"a");
    c.store(Oid(1), Tid(10), None, b"zzz");
    assert_eq!(c.load(Oid(1)).unwrap().0, b"a");
    // An older current revision is refused...
    c.store(Oid(1), Tid(5), None, b"older");
    assert_eq!(c.load(Oid(1)).unwrap().1, Tid(10));
    // ...a newer one replaces the stale one.
    c.store(Oid(1), Tid(12), None, b"newer");
    assert_eq!(c.load(Oid(1)).unwrap(), (b"newer".to_vec(), Tid(12)));
    assert_eq!(c.len(), 1);
    // Learning the end of the current revision through a store.
    c.store(Oid(1), Tid(12), Some(Tid(15)), b"newer");
    assert_eq!(c.load(Oid(1)), None);
    assert_eq!(c.load_before(Oid(1), Tid(13)).unwrap().end, Some(Tid(15)));
    // Nonsense ranges are refused.
    c.store(Oid(2), Tid(9), Some(Tid(9)), b"x");
    assert_eq!(c.load_before(Oid(2), Tid(10)), None);
}

#[test]
fn last_tid_only_moves_forward_while_not_empty() {
    let c = ClientCache::memory(1 << 20);
    c.set_last_tid(Tid::ZERO).unwrap();
    assert_eq!(c.last_tid(), None);
    c.set_last_tid(Tid(10)).unwrap();
    c.set_last_tid(Tid(5)).unwrap(); // empty: allowed
    assert_eq!(c.last_tid(), Some(Tid(5)));
    c.store(Oid(1), Tid(5), None, b"x");
    c.set_last_tid(Tid(5)).unwrap();
    assert!(matches!(
        c.set_last_tid(Tid(4)),
        Err(Error::TidRegression { .. })
    ));
    c.clear();
    assert!(c.is_empty());
    assert_eq!(c.last_tid(), Some(Tid(5)), "clear keeps the last tid");
}

#[test]
fn too_big_revisions_are_not_cached() {
    let c = ClientCache::memory(100);
    c.store(Oid(1), Tid(1), None, &[0u8; 100]);
    assert!(c.is_empty());
    c.store(Oid(1), Tid(1), None, &[0u8; 10]);
    assert_eq!(c.len(), 1);
}

#[test]
fn capacity_bounds_the_bytes_held() {
    let c = ClientCache::memory(10_000);
    for i in 0..1000u64 {
        c.store(Oid(i), Tid(1), None, &[7u8; 100]);
        assert!(c.stats().bytes <= 10_000);
    }
    let s = c.stats();
    assert!(s.evictions > 900, "{s:?}");
    assert!(
        s.revisions >= 50,
        "the cache should stay mostly full: {s:?}"
    );
}

#[test]
fn a_hot_set_survives_a_scan() {
    // 20 hot objects read over and over while 2000 one-off objects stream
    // through: S3-FIFO keeps the hot ones.
    let c = ClientCache::memory(20_000);
    let hot: Vec<Oid> = (0..20).map(Oid).collect();
    for &oid in &hot {
        c.store(oid, Tid(1), None, &[1u8; 100]);
    }
    let mut hot_hits = 0;
    for i in 0..2000u64 {
        for &oid in &hot[..(i % 20) as usize + 1] {
            if c.load(oid).is_some() {
                hot_hits += 1;
            } else {
                c.store(oid, Tid(1), None, &[1u8; 100]);
            }
        }
        c.store(Oid(1000 + i), Tid(1), None, &[2u8; 100]);
    }
    let lookups: u64 = (0..2000u64).map(|i| i % 20 + 1).sum();
    assert!(
        hot_hits as f64 > 0.95 * lookups as f64,
        "{hot_hits} of {lookups}"
    );
}

#[test]
fn persistent_cache_survives_reopen() {
    let (_dir, path, c) = tmp_cache(1 << 20);
    assert!(c.is_persistent());
    c.store(Oid(1), Tid(10), None, b"one");
    c.store(Oid(2), Tid(10), None, b"two");
    c.store(Oid(3), Tid(4), Some(Tid(8)), b"three-old");
    c.apply_invalidations(Tid(20), &[Oid(2)]).unwrap();
    c.drop_current(Oid(1));
    drop(c);
    let c = ClientCache::open(&path, "1", 1 << 20).unwrap();
    assert_eq!(c.last_tid(), Some(Tid(20)));
    assert_eq!(c.load(Oid(1)), None);
    assert_eq!(c.load(Oid(2)), None);
    assert_eq!(c.load_before(Oid(2), Tid(20)).unwrap().end, Some(Tid(20)));
    assert_eq!(c.load_before(Oid(3), Tid(5)).unwrap().data, b"three-old");
    assert_eq!(c.len(), 2);
}

#[test]
fn a_second_process_is_locked_out() {
    let (_dir, path, _c) = tmp_cache(1 << 20);
    assert!(matches!(
        ClientCache::open(&path, "1", 1 << 20),
        Err(Error::CacheLocked { .. })
    ));
}

fn reopen_after(path: &Path, damage: impl FnOnce(&mut Vec<u8>)) -> ClientCache {
    let mut bytes = fs::read(path).unwrap();
    damage(&mut bytes);
    fs::write(path, &bytes).unwrap();
    ClientCache::open(path, "1", 1 << 20).unwrap()
}

fn filled(path: &Path) {
    let c = ClientCache::open(path, "1", 1 << 20).unwrap();
    for i in 0..10u64 {
        c.store(Oid(i), Tid(5), None, format!("object {i}").as_bytes());
    }
    c.set_last_tid(Tid(5)).unwrap();
}

#[test]
fn foreign_file_is_set_aside() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("x.zec");
    // What Python ZEO writes: "ZEC3" and a last tid.
    let mut zec = b"ZEC3\0\0\0\0\0\0\x01\x01".to_vec();
    zec.resize(400, b'f');
    fs::write(&path, &zec).unwrap();
    let c = ClientCache::open(&path, "1", 1 << 20).unwrap();
    assert!(c.is_empty());
    assert_eq!(c.last_tid(), None);
    assert_eq!(fs::read(suffixed(&path, ".bad")).unwrap(), zec);
    c.store(Oid(1), Tid(1), None, b"x");
    drop(c);
    assert_eq!(ClientCache::open(&path, "1", 1 << 20).unwrap().len(), 1);
}

#[test]
fn cache_of_another_storage_is_not_used() {
    let (_dir, path, c) = tmp_cache(1 << 20);
    c.store(Oid(1), Tid(1), None, b"x");
    drop(c);
    let other = ClientCache::open(&path, "2", 1 << 20).unwrap();
    assert!(other.is_empty());
}

#[test]
fn damaged_header_discards_everything() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("c.zec");
    filled(&path);
    for at in [0, 9, 13, 29] {
        filled(&path);
        let c = reopen_after(&path, |b| b[at] ^= 0x40);
        assert!(c.is_empty(), "header byte {at}");
        assert_eq!(c.last_tid(), None);
    }
}

#[test]
fn truncation_keeps_a_consistent_prefix() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("c.zec");
    filled(&path);
    let full = fs::read(&path).unwrap();
    // Cut at every possible length: never a panic, never a revision that
    // was not written, and the last tid only once its record is whole.
    for len in 0..=full.len() {
        fs::write(&path, &full[..len]).unwrap();
        let c = ClientCache::open(&path, "1", 1 << 20).unwrap();
        for i in 0..10u64 {
            if let Some((data, tid)) = c.load(Oid(i)) {
                assert_eq!((data, tid), (format!("object {i}").into_bytes(), Tid(5)));
            }
        }
        if len < full.len() {
            assert_eq!(c.last_tid(), None, "cut at {len}");
        } else {
            assert_eq!(c.last_tid(), Some(Tid(5)));
            assert_eq!(c.len(), 10);
        }
    }
}

#[test]
fn every_flipped_byte_is_detected() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("c.zec");
    filled(&path);
    let full = fs::read(&path).unwrap();
    for at in 0..full.len() {
        let mut bytes = full.clone();
        bytes[at] ^= 0x01;
        fs::write(&path, &bytes).unwrap();
        let c = ClientCache::open(&path, "1", 1 << 20).unwrap();
        // The flipped record and all after it are dropped: the last tid
        // (the final record) goes with them.
        assert_eq!(c.last_tid(), None, "flip at {at}");
        for i in 0..10u64 {
            if let Some((data, _)) = c.load(Oid(i)) {
                assert_eq!(data, format!("object {i}").into_bytes());
            }
        }
    }
}

#[test]
fn a_torn_append_is_cut_off_and_later_writes_are_kept() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("c.zec");
    filled(&path);
    // Half a record of garbage, as a crash in the middle of a write leaves.
    let c = reopen_after(&path, |b| b.extend_from_slice(&[40, 0, 0, 0, 3, 1, 2]));
    assert_eq!(c.last_tid(), Some(Tid(5)));
    assert_eq!(c.len(), 10);
    c.store(Oid(99), Tid(5), None, b"after");
    drop(c);
    let c = ClientCache::open(&path, "1", 1 << 20).unwrap();
    assert_eq!(c.load(Oid(99)).unwrap().0, b"after");
}

#[test]
fn damage_after_open_reads_as_a_miss() {
    let (_dir, path, c) = tmp_cache(1 << 20);
    c.store(Oid(1), Tid(1), None, b"precious data");
    let mut bytes = fs::read(&path).unwrap();
    let at = bytes.windows(8).position(|w| w == b"precious").unwrap();
    bytes[at] = b'P';
    fs::write(&path, &bytes).unwrap();
    assert_eq!(c.load(Oid(1)), None);
    assert!(c.is_empty());
}

#[test]
fn compaction_bounds_the_file_and_keeps_contents() {
    let (_dir, path, c) = tmp_cache(64 * 1024);
    for round in 0..200u64 {
        for i in 0..10u64 {
            c.store(Oid(i), Tid(round + 1), None, &vec![round as u8; 1000]);
        }
        let oids: Vec<Oid> = (0..10).map(Oid).collect();
        c.apply_invalidations(Tid(round + 2), &oids).unwrap();
    }
    let len = fs::metadata(&path).unwrap().len();
    assert!(
        len <= compact_threshold(64 * 1024) + 64 * 1024,
        "file is {len} bytes"
    );
    let before = c.load_before(Oid(3), Tid(200)).map(|r| r.data);
    let n = c.len();
    drop(c);
    let c = ClientCache::open(&path, "1", 64 * 1024).unwrap();
    assert_eq!(c.len(), n);
    assert_eq!(c.load_before(Oid(3), Tid(200)).map(|r| r.data), before);
    assert_eq!(c.last_tid(), Some(Tid(201)));
}

/// The server a property test plays: every object's full history.
#[derive(Default)]
struct Server {
    history: BTreeMap<Oid, Vec<(Tid, Vec<u8>)>>,
    last: Tid,
}

impl Server {
    fn commit(&mut self, oids: &[Oid]) -> Tid {
        self.last = Tid(self.last.0 + 1);
        for &oid in oids {
            let data = format!("{oid}@{}", self.last.0).into_bytes();
            self.history.entry(oid).or_default().push((self.last, data));
        }
        self.last
    }

    fn before(&self, oid: Oid, before: Tid) -> Option<LoadedRevision> {
        let revs = self.history.get(&oid)?;
        let i = revs.iter().rposition(|(t, _)| *t < before)?;
        let (start, data) = revs[i].clone();
        Some(LoadedRevision {
            data,
            start,
            end: revs.get(i + 1).map(|r| r.0),
        })
    }

    fn changed_since(&self, tid: Tid) -> Vec<Oid> {
        self.history
            .iter()
            .filter(|(_, revs)| revs.iter().any(|(t, _)| *t > tid))
            .map(|(o, _)| *o)
            .collect()
    }
}

#[derive(Debug, Clone)]
enum Op {
    Commit(Vec<u64>),
    Load(u64),
    LoadBefore(u64, u64),
    Reopen,
    Crash(u64),
    Flip(u64),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        3 => prop::collection::vec(0..12u64, 1..4).prop_map(Op::Commit),
        5 => (0..12u64).prop_map(Op::Load),
        4 => (0..12u64, 0..40u64).prop_map(|(o, b)| Op::LoadBefore(o, b)),
        1 => Just(Op::Reopen),
        1 => any::<u64>().prop_map(Op::Crash),
        1 => any::<u64>().prop_map(Op::Flip),
    ]
}

/// What a client does on reconnect (ZEO 5's verification).
fn verify(cache: &ClientCache, server: &Server) {
    match cache.last_tid() {
        None if !cache.is_empty() => cache.clear(),
        None => {}
        Some(t) if t < server.last => {
            for oid in server.changed_since(t) {
                cache.drop_current(oid);
            }
        }
        Some(_) => {}
    }
    cache.set_last_tid(server.last).unwrap();
}

fn check(cache: &ClientCache, server: &Server) -> Result<(), TestCaseError> {
    let horizon = Tid(server.last.0 + 1);
    for o in 0..12u64 {
        let oid = Oid(o);
        if let Some((data, start)) = cache.load(oid) {
            let truth = server.before(oid, horizon).unwrap();
            prop_assert_eq!(
                (data, start),
                (truth.data, truth.start),
                "stale load of {}",
                oid
            );
        }
        for b in 1..=horizon.0 {
            if let Some(r) = cache.load_before(oid, Tid(b)) {
                let truth = server.before(oid, Tid(b)).unwrap();
                prop_assert_eq!(&r.data, &truth.data);
                prop_assert_eq!(r.start, truth.start);
                prop_assert!(r.end.is_none() || r.end == truth.end);
                prop_assert!(r.end.is_some() || truth.end.is_none());
            }
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    /// Whatever happens (evictions, reopens, crashes at any byte, bit
    /// flips), every answer the cache gives is the server's truth.
    #[test]
    fn cache_never_answers_stale(ops in prop::collection::vec(op(), 1..60), capacity in 300..3000u64) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("p.zec");
        let mut server = Server::default();
        let mut cache = Some(ClientCache::open(&path, "1", capacity).unwrap());
        let mem = ClientCache::memory(capacity);
        for op in ops {
            let c = cache.as_ref().unwrap();
            match op {
                Op::Commit(oids) => {
                    let oids: Vec<Oid> = oids.into_iter().map(Oid).collect();
                    let tid = server.commit(&oids);
                    c.apply_invalidations(tid, &oids).unwrap();
                    mem.apply_invalidations(tid, &oids).unwrap();
                }
                Op::Load(o) => {
                    for c in [c, &mem] {
                        if c.load(Oid(o)).is_none() {
                            if let Some(r) = server.before(Oid(o), Tid(server.last.0 + 1)) {
                                c.store(Oid(o), r.start, r.end, &r.data);
                            }
                        }
                    }
                }
                Op::LoadBefore(o, b) => {
                    let before = Tid(b.min(server.last.0 + 1));
                    for c in [c, &mem] {
                        if c.load_before(Oid(o), before).is_none() {
                            if let Some(r) = server.before(Oid(o), before) {
                                c.store(Oid(o), r.start, r.end, &r.data);
                            }
                        }
                    }
                }
                Op::Reopen => {
                    drop(cache.take());
                    cache = Some(ClientCache::open(&path, "1", capacity).unwrap());
                    verify(cache.as_ref().unwrap(), &server);
                }
                Op::Crash(at) | Op::Flip(at) => {
                    drop(cache.take());
                    let mut bytes = fs::read(&path).unwrap();
                    if !bytes.is_empty() {
                        let at = (at % bytes.len() as u64) as usize;
                        if matches!(op, Op::Crash(_)) {
                            bytes.truncate(at);
                        } else {
                            bytes[at] ^= 0x10;
                        }
                    }
                    fs::write(&path, &bytes).unwrap();
                    cache = Some(ClientCache::open(&path, "1", capacity).unwrap());
                    verify(cache.as_ref().unwrap(), &server);
                }
            }
            let c = cache.as_ref().unwrap();
            prop_assert!(c.stats().bytes <= capacity);
            check(c, &server)?;
            check(&mem, &server)?;
        }
    }
}
