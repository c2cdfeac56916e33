//! Pack on RelStorage's tables: the rows our pack leaves equal the rows
//! RelStorage's own pack leaves on an identical copy, and each can pack
//! after the other.

mod pgx_support;

use std::collections::BTreeSet;

use pgx_support::{connect, count, relstorage, MODES};
use postgres::Client;
use zeo_storage::{Oid, Tid};
use zeo_storage_postgres::testing_internals::pack::{self, PackOutcome};
use zeo_storage_postgres::HistoryMode;
use zeo_testkit::postgres::TestDatabase;

/// A database RelStorage built with `pgx_pack.py build`.
struct Built {
    db: TestDatabase,
    dir: tempfile::TempDir,
    name: &'static str,
    /// Every commit's tid, in order.
    tids: Vec<u64>,
    pack_at: Tid,
}

impl Built {
    fn new(label: &str, name: &'static str, via_new: bool) -> Built {
        let db = TestDatabase::create(&format!("pgx_pack_{label}_{name}"));
        let dir = tempfile::tempdir().unwrap();
        let mut built = Built {
            db,
            dir,
            name,
            tids: Vec::new(),
            pack_at: Tid(0),
        };
        let out = built.run(if via_new {
            &["build", "via-new"]
        } else {
            &["build"]
        });
        let mut lines = out.lines();
        built.tids = parse_tids(lines.next().unwrap());
        let pack_line = lines.next().unwrap();
        built.pack_at = Tid(pack_line.strip_prefix("PACK ").unwrap().parse().unwrap());
        assert_eq!(built.tids.len(), 9, "{out}");
        built
    }

    fn run(&self, args: &[&str]) -> String {
        let dsn = self.db.dsn();
        let cache = self.dir.path().join("cache");
        let mut all = vec![args[0], &dsn, self.name, cache.to_str().unwrap()];
        all.extend(&args[1..]);
        relstorage("pgx_pack.py", &all, self.dir.path())
    }

    fn more(&mut self) {
        let out = self.run(&["more"]);
        self.tids.extend(parse_tids(&out));
    }

    fn relstorage_pack(&self, tid: Tid, gc: bool) {
        self.run(&["pack", &tid.0.to_string(), if gc { "1" } else { "0" }]);
    }

    fn our_pack(&self, mode: HistoryMode, tid: Tid, gc: bool) -> (PackOutcome, Vec<(Oid, Tid)>) {
        let mut removed = Vec::new();
        let mut client = connect(&self.db.dsn());
        let outcome =
            pack::pack(&mut client, mode, tid, gc, &mut |o, t| removed.push((o, t))).unwrap();
        (outcome, removed)
    }

    fn last(&self) -> Tid {
        Tid(*self.tids.last().unwrap())
    }

    /// The pack-relevant content with tids replaced by commit positions
    /// (-1 for tid 0), so two builds compare.
    fn snapshot(&self, mode: HistoryMode) -> Snapshot {
        let mut c = connect(&self.db.dsn());
        let at = |tid: i64| -> i64 {
            if tid == 0 {
                return -1;
            }
            self.tids
                .iter()
                .position(|&t| t as i64 == tid)
                .expect("tid of a commit") as i64
        };
        let pairs = |c: &mut Client, sql: &str| -> BTreeSet<(i64, i64)> {
            c.query(sql, &[])
                .unwrap()
                .iter()
                .map(|r| (r.get(0), at(r.get(1))))
                .collect()
        };
        let preserving = mode == HistoryMode::Preserving;
        let snapshot = Snapshot {
            states: pairs(&mut c, "SELECT zoid, tid FROM object_state"),
            blobs: pairs(&mut c, "SELECT zoid, tid FROM blob_chunk"),
            transactions: if preserving {
                pairs(&mut c, "SELECT 0::BIGINT, tid FROM transaction")
            } else {
                BTreeSet::new()
            },
            current: if preserving {
                pairs(&mut c, "SELECT zoid, tid FROM current_object")
            } else {
                BTreeSet::new()
            },
            prev_tids: if preserving {
                pairs(&mut c, "SELECT zoid, prev_tid FROM object_state")
            } else {
                BTreeSet::new()
            },
            refs: c
                .query("SELECT zoid, tid, to_zoid FROM object_ref", &[])
                .unwrap()
                .iter()
                .map(|r| (r.get(0), at(r.get(1)), r.get(2)))
                .collect(),
            refs_added: if preserving {
                pairs(&mut c, "SELECT 0::BIGINT, tid FROM object_refs_added")
            } else {
                pairs(&mut c, "SELECT zoid, tid FROM object_refs_added")
            },
            large_objects: count(&mut c, "SELECT count(*) FROM pg_largeobject_metadata"),
        };
        assert_eq!(
            count(&mut c, "SELECT count(*) FROM pack_object"),
            0,
            "scratch table left full"
        );
        snapshot
    }

    fn verify(&self) -> String {
        self.run(&["verify"])
    }
}

#[derive(Debug, PartialEq, Eq)]
struct Snapshot {
    states: BTreeSet<(i64, i64)>,
    blobs: BTreeSet<(i64, i64)>,
    transactions: BTreeSet<(i64, i64)>,
    current: BTreeSet<(i64, i64)>,
    prev_tids: BTreeSet<(i64, i64)>,
    refs: BTreeSet<(i64, i64, i64)>,
    refs_added: BTreeSet<(i64, i64)>,
    large_objects: i64,
}

fn parse_tids(line: &str) -> Vec<u64> {
    line.split_whitespace()
        .map(|w| w.parse().expect(line))
        .collect()
}

/// Packs one copy with RelStorage and one with ours at the same commit,
/// then, after more commits, each with the other's pack to the end.
fn same_as_relstorage(mode: HistoryMode, gc: bool) {
    let name = MODES.iter().find(|(m, _)| *m == mode).unwrap().1;
    let label = if gc { "gc" } else { "nogc" };
    let mut theirs = Built::new(&format!("{label}_rs"), name, false);
    let mut ours = Built::new(&format!("{label}_us"), name, false);
    let before = ours.snapshot(mode);
    assert_eq!(before, theirs.snapshot(mode), "the two builds differ");

    theirs.relstorage_pack(theirs.pack_at, gc);
    let (outcome, removed) = ours.our_pack(mode, ours.pack_at, gc);
    let after = ours.snapshot(mode);
    assert_eq!(after, theirs.snapshot(mode), "{name} gc={gc}: first pack");
    assert_eq!(outcome.removed_states as usize, removed.len());
    assert_eq!(
        before.states.len() - after.states.len(),
        removed.len(),
        "{name} gc={gc}"
    );
    if gc || mode == HistoryMode::Preserving {
        assert!(
            !removed.is_empty(),
            "{name} gc={gc}: the pack removed nothing"
        );
    }
    if mode == HistoryMode::Preserving {
        assert_eq!(outcome.pack_tid, Some(ours.pack_at));
    }
    if gc {
        assert!(
            after.large_objects < before.large_objects,
            "{name}: garbage blobs stay"
        );
    }
    assert!(dangling(&after).is_empty(), "{name} gc={gc}");
    assert_eq!(ours.verify(), theirs.verify());

    // Now the other way round: we pack after RelStorage, it after us.
    theirs.more();
    ours.more();
    let (last_theirs, last_ours) = (theirs.last(), ours.last());
    theirs.our_pack(mode, last_theirs, gc);
    ours.relstorage_pack(last_ours, gc);
    assert_eq!(
        ours.snapshot(mode),
        theirs.snapshot(mode),
        "{name} gc={gc}: second pack"
    );
    assert_eq!(ours.verify(), theirs.verify());
}

#[test]
fn history_preserving_gc_pack_leaves_what_relstorage_leaves() {
    same_as_relstorage(HistoryMode::Preserving, true);
}

#[test]
fn history_preserving_pack_without_gc_leaves_what_relstorage_leaves() {
    same_as_relstorage(HistoryMode::Preserving, false);
}

#[test]
fn history_free_gc_pack_leaves_what_relstorage_leaves() {
    same_as_relstorage(HistoryMode::Free, true);
}

#[test]
fn history_free_pack_without_gc_leaves_what_relstorage_leaves() {
    same_as_relstorage(HistoryMode::Free, false);
}

/// Our history-preserving GC pack of everything `built` committed.
fn hp_gc_pack(client: &mut Client, built: &Built) -> zeo_storage::Result<PackOutcome> {
    pack::pack(
        client,
        HistoryMode::Preserving,
        built.last(),
        true,
        &mut |_, _| {},
    )
}

/// References from current revisions to objects that have no revision.
fn dangling(s: &Snapshot) -> BTreeSet<i64> {
    let oids: BTreeSet<i64> = s.states.iter().map(|(oid, _)| *oid).collect();
    s.refs
        .iter()
        .filter(|(from, tid, to)| s.current.contains(&(*from, *tid)) && !oids.contains(to))
        .map(|(_, _, to)| *to)
        .collect()
}

/// RelStorage 4.3 walks the graph from the root alone: an object changed
/// or referenced after the pack point is kept, but what it references is
/// collected unless the root reaches it through older revisions, which
/// leaves dangling references (RelStorage then raises POSKeyError loading
/// them). Ours walks from every kept object and keeps exactly those
/// objects more.
#[test]
fn history_preserving_gc_keeps_what_objects_newer_than_the_pack_point_reference() {
    let mode = HistoryMode::Preserving;
    let theirs = Built::new("vianew_rs", "hp", true);
    let ours = Built::new("vianew_us", "hp", true);
    theirs.relstorage_pack(theirs.pack_at, true);
    ours.our_pack(mode, ours.pack_at, true);
    let (t, o) = (theirs.snapshot(mode), ours.snapshot(mode));
    assert!(o.states.is_superset(&t.states), "{o:?}\n{t:?}");
    let extra: BTreeSet<i64> = o
        .states
        .difference(&t.states)
        .map(|(oid, _)| *oid)
        .collect();
    let lost = dangling(&t);
    assert!(!lost.is_empty(), "RelStorage's pack kept everything: {t:?}");
    assert_eq!(extra, lost);
    assert!(dangling(&o).is_empty());
    assert!(ours.verify().starts_with("objects "));
}

#[test]
fn a_pack_in_progress_elsewhere_makes_pack_fail_without_touching_rows() {
    let built = Built::new("locked", "hp", false);
    let before = built.snapshot(HistoryMode::Preserving);
    let mut holder = connect(&built.db.dsn());
    holder.execute("SELECT pg_advisory_lock(-2)", &[]).unwrap();
    let mut client = connect(&built.db.dsn());
    let err = hp_gc_pack(&mut client, &built).unwrap_err();
    assert!(err.to_string().contains("in progress"), "{err}");
    assert_eq!(built.snapshot(HistoryMode::Preserving), before);
    holder
        .execute("SELECT pg_advisory_unlock(-2)", &[])
        .unwrap();
    let outcome = hp_gc_pack(&mut client, &built).unwrap();
    assert_eq!(outcome.pack_tid, Some(built.last()));
    // Our lock is released again: another session can take it.
    let free: bool = holder
        .query_one("SELECT pg_try_advisory_lock(-2)", &[])
        .unwrap()
        .get(0);
    assert!(free);
}

#[test]
fn packing_before_the_first_commit_does_nothing() {
    for (mode, name) in MODES {
        let built = Built::new("early", name, false);
        let before = built.snapshot(mode);
        let (outcome, removed) = built.our_pack(mode, Tid(built.tids[0] - 1), true);
        assert_eq!(
            (outcome, removed.len()),
            (PackOutcome::default(), 0),
            "{name}"
        );
        assert_eq!(built.snapshot(mode), before, "{name}");
    }
}

#[test]
fn a_pack_time_now_or_later_means_everything() {
    let now = 1_700_000_000.0;
    assert_eq!(pack::pack_point(now, now), Tid(i64::MAX as u64 - 1));
    assert_eq!(pack::pack_point(-1.0, now), Tid(i64::MAX as u64 - 1));
    let earlier = pack::pack_point(now - 60.0, now);
    assert_eq!(earlier, zeo_storage::TimeStamp::from_unix(now - 60.0).tid());
}

#[test]
fn an_unreadable_pickle_fails_the_pack_cleanly_and_frees_the_lock() {
    let built = Built::new("badpickle", "hp", false);
    let mut client = connect(&built.db.dsn());
    client
        .execute(
            "UPDATE object_state SET state = '\\x8003ff'::bytea
             WHERE zoid = 1 AND tid = (SELECT max(tid) FROM object_state WHERE zoid = 1)",
            &[],
        )
        .unwrap();
    let before = built.snapshot(HistoryMode::Preserving);
    let err = hp_gc_pack(&mut client, &built).unwrap_err();
    assert!(err.to_string().contains("cannot scan"), "{err}");
    assert_eq!(
        built.snapshot(HistoryMode::Preserving).states,
        before.states
    );
    let mut other = connect(&built.db.dsn());
    let free: bool = other
        .query_one("SELECT pg_try_advisory_lock(-2)", &[])
        .unwrap()
        .get(0);
    assert!(free, "the failed pack kept the pack lock");
    // The connection it used is still usable.
    assert_eq!(count(&mut client, "SELECT 1::BIGINT"), 1);
}

#[test]
fn the_storage_packs_through_its_pack_capability_as_relstorage_does() {
    for (mode, name) in MODES {
        let theirs = Built::new("capability_rs", name, false);
        let ours = Built::new("capability_us", name, false);
        theirs.relstorage_pack(theirs.last(), true);
        let mut options = zeo_storage_postgres::PostgresOptions::new(ours.db.dsn());
        options.history = mode;
        options.create_schema = false;
        let storage = zeo_storage_postgres::PostgresStorage::open(options).unwrap();
        let packer = zeo_storage::Storage::as_pack(&storage).expect("pack capability");
        // A pack time at or after now packs everything.
        packer
            .pack(zeo_storage::TimeStamp::now().unix_time() + 60.0, true)
            .unwrap();
        assert_eq!(ours.snapshot(mode), theirs.snapshot(mode), "{name}");
        zeo_storage::Storage::close(&storage).unwrap();
        assert!(matches!(
            packer.pack(0.0, true),
            Err(zeo_storage::Error::Closed)
        ));
    }
}

#[test]
fn len_counts_the_objects_a_gc_pack_left() {
    use zeo_storage::testing::{commit, record};
    use zeo_storage::Storage;
    for (mode, name) in MODES {
        let db = TestDatabase::create(&format!("pack_len_{name}"));
        let mut options = zeo_storage_postgres::PostgresOptions::new(db.dsn());
        options.history = mode;
        let s = zeo_storage_postgres::PostgresStorage::open(options).unwrap();
        // The root references oid 1, then no longer does.
        let t1 = commit(
            &s,
            &[
                (Oid(0), Tid::ZERO, record(&[Oid(1)], b"root")),
                (Oid(1), Tid::ZERO, record(&[], b"child")),
            ],
        )
        .unwrap();
        commit(&s, &[(Oid(0), t1, record(&[], b"root"))]).unwrap();
        assert_eq!(s.len(), 2, "{name}");
        let packer = s.as_pack().expect("pack capability");
        packer
            .pack(zeo_storage::TimeStamp::now().unix_time() + 60.0, true)
            .unwrap();
        assert_eq!(s.len(), 1, "{name}");
        s.close().unwrap();
    }
}
