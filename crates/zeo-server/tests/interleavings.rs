//! Randomized interleavings of several clients, served over in-memory
//! pipes on a current-thread runtime with a paused clock.
//!
//! Each step one client does one thing (load, `lastTransaction`, begin and
//! store, vote, resolve conflicts and vote again, finish, abort, disconnect,
//! reconnect, or let its transaction hold the lock past
//! `transaction-timeout`), then every client reads
//! what the server sent until the server is idle. After every message the
//! ordering invariants of `docs/ARCHITECTURE.md` are checked:
//!
//! * the transactions a client learns of (register, invalidations, its own
//!   `tpc_finish`) come in strictly increasing tid order, and `tpc_finish`
//!   replies over all clients come in tid order;
//! * no load answers a revision newer than what the client was told, nor
//!   presents a revision as current after an invalidation superseding it;
//! * no `lastTransaction` answer runs ahead of the invalidations sent;
//! * a vote that waits once the server is idle waits for a lock a live
//!   client holds, no two clients hold it, and a vote after resolving
//!   conflicts under the kept lock does not conflict again;
//! * a transaction left past `transaction-timeout` loses its connection.
//!
//! At the end of each seed every committed object is loaded back and must
//! hold the data of its last commit.
//!
//! The run is reproducible from its seed, printed on failure:
//! `ZEO_INTERLEAVINGS_SEED=n` runs that seed alone,
//! `ZEO_INTERLEAVINGS_SEEDS` and `ZEO_INTERLEAVINGS_STEPS` set the budget
//! (`docs/testing.md`).

mod common;

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use common::*;
use zeo_pickle::Value;
use zeo_protocol::client::replies::{self, VoteItem};
use zeo_protocol::{ClientRequest, Message, TxnId};
use zeo_server::ServerSettings;
use zeo_storage::filestorage::{FileStorage, FileStorageOptions};
use zeo_storage::{MappingStorage, Oid, Storage, Tid, TxnStatus};

const DEFAULT_SEEDS: u64 = 200;
const DEFAULT_STEPS: usize = 500;
/// Seeds run against a FileStorage (each commit syncs the disk).
const DEFAULT_FILE_SEEDS: u64 = 20;
const CLIENTS: usize = 3;
const OBJECTS: u64 = 4;
const TXN_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a client listens for more before the server counts as idle.
/// The clock is paused, so this passes only when nothing is left to run.
const QUIET: Duration = Duration::from_millis(1);
/// Steps of history kept for the failure message.
const TRACE: usize = 40;

/// SplitMix64: small, and the same sequence everywhere.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

#[derive(Debug)]
enum Txn {
    None,
    Open {
        id: TxnId,
        stores: Vec<(Oid, Vec<u8>)>,
    },
    Voting {
        id: TxnId,
        stores: Vec<(Oid, Vec<u8>)>,
        /// A vote after resolving conflicts under the kept lock: it must
        /// not conflict again.
        resolved: bool,
    },
    Voted {
        id: TxnId,
        stores: Vec<(Oid, Vec<u8>)>,
    },
    /// The vote reported conflicts, and the server kept the commit lock:
    /// the client re-stores against the committed serials and votes again,
    /// or gives up and aborts.
    Conflicted {
        id: TxnId,
        stores: Vec<(Oid, Vec<u8>)>,
        /// Each conflicting object and the serial committed meanwhile.
        conflicts: Vec<(Oid, Tid)>,
    },
    /// The vote failed; the server ended the transaction. The client
    /// aborts.
    Failed {
        id: TxnId,
    },
    Finishing,
}

enum Asked {
    LastTransaction,
    Vote,
    Finish(Vec<(Oid, Vec<u8>)>),
    Abort,
}

struct Conn {
    client: Client,
    /// The newest transaction the client was told of.
    told: Tid,
    /// The newest invalidation received, per object.
    invalidated: HashMap<Oid, Tid>,
    /// The serial the client would store against, per object.
    serials: HashMap<Oid, Tid>,
    txn: Txn,
    asked: HashMap<i64, Asked>,
    /// Set once its transaction was left past the timeout: the server
    /// must close the connection.
    must_close: bool,
}

struct Sim {
    rng: Rng,
    server: PipeServer,
    conns: Vec<Option<Conn>>,
    /// Data of every commit the model knows, per object and tid.
    history: BTreeMap<(Oid, Tid), Vec<u8>>,
    last_finish: Tid,
    next_txn: i64,
    trace: Vec<String>,
    seen: Seen,
}

/// What a run went through, so a budget that exercises nothing fails.
#[derive(Debug, Default, Clone, Copy)]
struct Seen {
    commits: u64,
    conflicts: u64,
    resolutions: u64,
    lock_waits: u64,
    timeouts: u64,
    loads: u64,
}

impl Seen {
    fn add(&mut self, other: Seen) {
        self.commits += other.commits;
        self.conflicts += other.conflicts;
        self.resolutions += other.resolutions;
        self.lock_waits += other.lock_waits;
        self.timeouts += other.timeouts;
        self.loads += other.loads;
    }
}

impl Sim {
    fn new(seed: u64, settings: ServerSettings, storage: Arc<dyn Storage>) -> Self {
        Sim {
            rng: Rng(seed),
            server: PipeServer::with_storage(settings, storage),
            conns: (0..CLIENTS).map(|_| None).collect(),
            history: BTreeMap::new(),
            last_finish: Tid::ZERO,
            next_txn: 0,
            trace: Vec::new(),
            seen: Seen::default(),
        }
    }

    fn note(&mut self, line: String) {
        if self.trace.len() == TRACE {
            self.trace.remove(0);
        }
        self.trace.push(line);
    }

    fn fail(&self, what: &str) -> ! {
        panic!("{what}\nlast steps:\n  {}", self.trace.join("\n  "))
    }

    async fn connect(&mut self, c: usize) {
        let (mut client, _task) = self.server.connect().await;
        let told = client.register("1", false).await.unwrap();
        self.note(format!("c{c} connects, told {told}"));
        self.conns[c] = Some(Conn {
            client,
            told,
            invalidated: HashMap::new(),
            serials: HashMap::new(),
            txn: Txn::None,
            asked: HashMap::new(),
            must_close: false,
        });
    }

    async fn step(&mut self, step: usize) {
        let c = self.rng.below(CLIENTS as u64) as usize;
        let roll = self.rng.below(100);
        let oid = Oid(self.rng.below(OBJECTS));
        let Some(conn) = self.conns[c].as_mut() else {
            return self.connect(c).await;
        };
        if conn.must_close {
            return;
        }
        let action = match (&conn.txn, roll) {
            (_, 0..=3) => "disconnect",
            (Txn::None, 4..=44) => "load",
            (Txn::None, 45..=54) => "lastTransaction",
            (Txn::None, 55..=84) => "begin",
            (Txn::Open { .. }, 4..=34) => "store",
            (Txn::Open { .. }, 35..=84) => "vote",
            (Txn::Voting { .. }, 4..=14) => "abort",
            (Txn::Voted { .. }, 4..=64) => "finish",
            (Txn::Voted { .. }, 65..=69) => "timeout",
            (Txn::Open { .. } | Txn::Voted { .. }, 85..=99) => "abort",
            (Txn::Conflicted { .. }, 4..=59) => "resolve",
            (Txn::Conflicted { .. }, 60..=62) => "timeout",
            (Txn::Conflicted { .. } | Txn::Failed { .. }, _) => "abort",
            _ => "listen",
        };
        let line = format!("{step}: c{c} {action} {oid} ({:?})", conn.txn);
        self.note(line);
        let conn = self.conns[c].as_mut().unwrap();
        match action {
            "disconnect" => {
                self.conns[c] = None;
            }
            "load" => {
                // Its msgid is (oid, tid), as the stock client sends it.
                conn.client
                    .send(&ClientRequest::load_before(oid, Tid::MAX))
                    .await;
            }
            "lastTransaction" => {
                let id = conn.client.msgid();
                conn.asked.insert(id, Asked::LastTransaction);
                conn.client
                    .send(&Message::call(id, "lastTransaction", vec![]))
                    .await;
            }
            "begin" => {
                self.next_txn += 1;
                let id = TxnId(self.next_txn);
                conn.client
                    .send(&ClientRequest::tpc_begin(
                        id,
                        b"sim",
                        b"",
                        Value::Dict(vec![]),
                        None,
                        TxnStatus::Committed,
                    ))
                    .await;
                conn.txn = Txn::Open { id, stores: vec![] };
                store(conn, oid).await;
            }
            "store" => store(conn, oid).await,
            "vote" => {
                let Txn::Open { id, stores } = std::mem::replace(&mut conn.txn, Txn::None) else {
                    unreachable!()
                };
                send_vote(conn, id, stores, false).await;
            }
            "resolve" => {
                let Txn::Conflicted {
                    id,
                    mut stores,
                    conflicts,
                } = std::mem::replace(&mut conn.txn, Txn::None)
                else {
                    unreachable!()
                };
                for (oid, committed) in conflicts {
                    let data = format!("{}:r{}", id.0, stores.len()).into_bytes();
                    conn.client
                        .send(&ClientRequest::storea(oid, committed, &data, id))
                        .await;
                    stores.retain(|(o, _)| *o != oid);
                    stores.push((oid, data));
                }
                send_vote(conn, id, stores, true).await;
            }
            "finish" => {
                let Txn::Voted { id, stores } = std::mem::replace(&mut conn.txn, Txn::None) else {
                    unreachable!()
                };
                let msgid = conn.client.msgid();
                conn.asked.insert(msgid, Asked::Finish(stores));
                conn.client
                    .send(&ClientRequest::tpc_finish(msgid, id))
                    .await;
                conn.txn = Txn::Finishing;
            }
            "abort" => {
                let id = match conn.txn {
                    Txn::Open { id, .. }
                    | Txn::Voting { id, .. }
                    | Txn::Voted { id, .. }
                    | Txn::Conflicted { id, .. }
                    | Txn::Failed { id } => id,
                    _ => unreachable!(),
                };
                let msgid = conn.client.msgid();
                conn.asked.insert(msgid, Asked::Abort);
                conn.client.send(&ClientRequest::tpc_abort(msgid, id)).await;
                conn.txn = Txn::None;
            }
            "timeout" => {
                conn.must_close = true;
                tokio::time::advance(TXN_TIMEOUT + Duration::from_secs(1)).await;
            }
            _ => {}
        }
    }

    /// Every client reads until the server is idle; checks each message.
    async fn settle(&mut self) {
        for c in 0..CLIENTS {
            while let Some(conn) = self.conns[c].as_mut() {
                match conn.client.recv_within(QUIET).await {
                    None => break,
                    Some(None) => {
                        if !conn.must_close {
                            self.fail(&format!("the server closed c{c} unasked"));
                        }
                        self.note(format!("c{c} closed by the server"));
                        self.seen.timeouts += 1;
                        self.conns[c] = None;
                    }
                    Some(Some(m)) => self.received(c, m),
                }
            }
            if self.conns[c].as_ref().is_some_and(|k| k.must_close) {
                // A timed-out connection closes before the server is idle.
                self.fail(&format!("c{c} outlived its transaction timeout"));
            }
        }
        // A vote still unanswered once the server is idle waits for a
        // lock that another live client holds, or the lock is lost.
        let waiting = self
            .conns
            .iter()
            .filter(|k| {
                matches!(
                    k,
                    Some(Conn {
                        txn: Txn::Voting { .. },
                        ..
                    })
                )
            })
            .count();
        let holding = self
            .conns
            .iter()
            .filter(|k| {
                matches!(
                    k,
                    Some(Conn {
                        txn: Txn::Voted { .. } | Txn::Conflicted { .. },
                        ..
                    })
                )
            })
            .count();
        if waiting > 0 && holding == 0 {
            self.fail("a vote waits for a commit lock nobody holds");
        }
        if holding > 1 {
            self.fail("two clients hold the commit lock");
        }
        self.seen.lock_waits += waiting as u64;
    }

    fn received(&mut self, c: usize, m: Message) {
        if m.method == "invalidateTransaction" {
            let (tid, oids) = invalidation(&m);
            let conn = self.conns[c].as_mut().unwrap();
            if tid <= conn.told {
                let told = conn.told;
                self.fail(&format!("c{c}: invalidation {tid} after being told {told}"));
            }
            conn.told = tid;
            for oid in oids {
                conn.invalidated.insert(oid, tid);
            }
            return;
        }
        if !m.is_reply() {
            return; // info
        }
        let Value::Int(msgid) = m.msgid else {
            // loadBefore uses (oid, tid) as its msgid.
            return self.load_reply(c, m);
        };
        let conn = self.conns[c].as_mut().unwrap();
        let Some(asked) = conn.asked.remove(&msgid) else {
            self.fail(&format!("c{c}: reply to unknown msgid {msgid}"))
        };
        let result = result_of(m);
        match asked {
            Asked::LastTransaction => {
                let tid = replies::tid("lastTransaction", &result.unwrap()).unwrap();
                if tid > conn.told {
                    let told = conn.told;
                    self.fail(&format!("c{c}: lastTransaction {tid} ahead of {told}"));
                }
            }
            Asked::Abort => {}
            Asked::Vote => {
                let items = match &result {
                    Ok(v) => Some(replies::vote(v).unwrap()),
                    Err(e) if e.class.ends_with("ConflictError") => None,
                    Err(e) => self.fail(&format!("c{c}: vote failed: {e:?}")),
                };
                let conn = self.conns[c].as_mut().unwrap();
                let Txn::Voting {
                    id,
                    stores,
                    resolved,
                } = std::mem::replace(&mut conn.txn, Txn::None)
                else {
                    return; // aborted while waiting for the lock
                };
                let conflicts: Option<Vec<(Oid, Tid)>> = items.map(|items| {
                    items
                        .iter()
                        .filter_map(|i| match i {
                            VoteItem::Conflict(k) => Some((k.oid, k.committed)),
                            VoteItem::Changed(_) => None,
                        })
                        .collect()
                });
                conn.txn = match conflicts {
                    Some(conflicts) if conflicts.is_empty() => {
                        if resolved {
                            self.seen.resolutions += 1;
                        }
                        Txn::Voted { id, stores }
                    }
                    other => {
                        if resolved {
                            self.fail(&format!(
                                "c{c}: conflicts again after resolving under the kept lock"
                            ));
                        }
                        self.seen.conflicts += 1;
                        conn.serials.clear();
                        match other {
                            Some(conflicts) => Txn::Conflicted {
                                id,
                                stores,
                                conflicts,
                            },
                            None => Txn::Failed { id },
                        }
                    }
                };
            }
            Asked::Finish(stores) => {
                let tid = match result {
                    Ok(v) => replies::tid("tpc_finish", &v).unwrap(),
                    Err(e) => self.fail(&format!("c{c}: tpc_finish failed: {e:?}")),
                };
                if tid <= conn.told || tid <= self.last_finish {
                    let (told, last) = (conn.told, self.last_finish);
                    self.fail(&format!(
                        "c{c}: finished {tid} after being told {told}, last finish {last}"
                    ));
                }
                conn.told = tid;
                conn.txn = Txn::None;
                for (oid, data) in stores {
                    conn.serials.insert(oid, tid);
                    self.history.insert((oid, tid), data);
                }
                self.last_finish = tid;
                self.seen.commits += 1;
            }
        }
    }

    fn load_reply(&mut self, c: usize, m: Message) {
        let conn = self.conns[c].as_mut().unwrap();
        let oid = match &m.msgid {
            Value::Tuple(items) => match items.first() {
                Some(Value::Bytes(b)) => Oid::from_slice(b).unwrap(),
                _ => self.fail("load msgid"),
            },
            _ => self.fail("load msgid"),
        };
        let loaded = match result_of(m) {
            Ok(v) => replies::load_before(&v).unwrap(),
            Err(e) if e.class.ends_with("POSKeyError") => None,
            Err(e) => self.fail(&format!("c{c}: load failed: {e:?}")),
        };
        self.seen.loads += 1;
        let Some(rev) = loaded else {
            return;
        };
        if rev.start > conn.told {
            let told = conn.told;
            self.fail(&format!(
                "c{c}: loaded {oid} at {} newer than told {told}",
                rev.start
            ));
        }
        if let Some(&inv) = conn.invalidated.get(&oid) {
            if rev.end.is_none() && rev.start < inv {
                self.fail(&format!(
                    "c{c}: {oid} at {} current after invalidation {inv}",
                    rev.start
                ));
            }
        }
        if let Some(data) = self.history.get(&(oid, rev.start)) {
            if *data != rev.data {
                self.fail(&format!("c{c}: {oid} at {} holds other data", rev.start));
            }
        }
        let conn = self.conns[c].as_mut().unwrap();
        conn.serials.insert(oid, rev.start);
    }
}

async fn send_vote(conn: &mut Conn, id: TxnId, stores: Vec<(Oid, Vec<u8>)>, resolved: bool) {
    let msgid = conn.client.msgid();
    conn.asked.insert(msgid, Asked::Vote);
    conn.client.send(&ClientRequest::vote(msgid, id)).await;
    conn.txn = Txn::Voting {
        id,
        stores,
        resolved,
    };
}

async fn store(conn: &mut Conn, oid: Oid) {
    let Txn::Open { id, stores } = &mut conn.txn else {
        unreachable!()
    };
    let serial = conn.serials.get(&oid).copied().unwrap_or(Tid::ZERO);
    let data = format!("{}:{}", id.0, stores.len()).into_bytes();
    conn.client
        .send(&ClientRequest::storea(oid, serial, &data, *id))
        .await;
    stores.retain(|(o, _)| *o != oid);
    stores.push((oid, data));
}

/// Loads every object back: each holds the data of its last commit.
/// Returns what each holds.
async fn check_final_state(sim: &mut Sim) -> BTreeMap<Oid, (Tid, Vec<u8>)> {
    let mut last: BTreeMap<Oid, (Tid, Vec<u8>)> = BTreeMap::new();
    for ((oid, tid), data) in &sim.history {
        last.insert(*oid, (*tid, data.clone()));
    }
    let mut reader = sim.server.client().await;
    for (oid, (tid, data)) in &last {
        let rev = reader.load(*oid).await.unwrap().unwrap();
        if (rev.start, &rev.data) != (*tid, data) {
            sim.fail(&format!("{oid} ends at {} rather than {tid}", rev.start));
        }
    }
    last
}

/// The storage a run serves.
#[derive(Clone, Copy, Debug)]
enum Backend {
    Mapping,
    /// A FileStorage in a temporary directory, read back from the file
    /// once the server closed it; group commit on, and a third of the
    /// steps leave the server busy, so finishes, votes and loads of
    /// several clients are in flight at once and share fsyncs.
    File,
    /// The same with `group-commit false`: the lock held through each
    /// transaction's own fsync.
    FileWithoutGroupCommit,
}

async fn run_seed(seed: u64, steps: usize, backend: Backend) -> Seen {
    let settings = ServerSettings {
        transaction_timeout: Some(TXN_TIMEOUT),
        group_commit: !matches!(backend, Backend::FileWithoutGroupCommit),
        ..ServerSettings::default()
    };
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("Data.fs");
    let storage: Arc<dyn Storage> = match backend {
        Backend::Mapping => Arc::new(MappingStorage::new("test")),
        Backend::File | Backend::FileWithoutGroupCommit => {
            Arc::new(FileStorage::open(&path, FileStorageOptions::default()).unwrap())
        }
    };
    let mut sim = Sim::new(seed, settings, storage);
    for c in 0..CLIENTS {
        sim.connect(c).await;
    }
    for step in 0..steps {
        sim.step(step).await;
        let overlap = matches!(backend, Backend::File) && sim.rng.below(3) == 0;
        if !overlap {
            sim.settle().await;
        }
    }
    sim.settle().await;
    // Whatever is still open is aborted by disconnecting.
    for c in 0..CLIENTS {
        sim.conns[c] = None;
    }
    let last = check_final_state(&mut sim).await;
    sim.server.handle.shutdown();
    sim.server.handle.stopped().await;
    if let Backend::File | Backend::FileWithoutGroupCommit = backend {
        let options = FileStorageOptions {
            read_only: true,
            ..FileStorageOptions::default()
        };
        let file = FileStorage::open(&path, options).unwrap();
        for (oid, (tid, data)) in last {
            if file.load(oid).unwrap() != (data, tid) {
                sim.fail(&format!(
                    "{oid} in the reopened file is not its last commit"
                ));
            }
        }
    }
    sim.seen
}

fn env_number(name: &str) -> Option<u64> {
    let text = std::env::var(name).ok()?;
    Some(
        text.parse()
            .unwrap_or_else(|_| panic!("{name}={text} is not a number")),
    )
}

/// Runs one seed on a fresh current-thread runtime with a paused clock,
/// naming the seed when it fails.
fn run_reported(seed: u64, steps: usize, backend: Backend) -> Seen {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .start_paused(true)
        .build()
        .unwrap();
    let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        runtime.block_on(run_seed(seed, steps, backend))
    }));
    outcome.unwrap_or_else(|panic| {
        eprintln!("interleavings failed on {backend:?}: rerun with ZEO_INTERLEAVINGS_SEED={seed} ZEO_INTERLEAVINGS_STEPS={steps}");
        std::panic::resume_unwind(panic)
    })
}

/// Runs the seeds the environment asks for (`default_seeds` of them
/// unless told) on `backend`.
fn run_budget(backend: Backend, default_seeds: u64) -> (Seen, usize) {
    let steps = env_number("ZEO_INTERLEAVINGS_STEPS").map_or(DEFAULT_STEPS, |n| n as usize);
    let seeds = match env_number("ZEO_INTERLEAVINGS_SEED") {
        Some(seed) => seed..seed + 1,
        None => 0..env_number("ZEO_INTERLEAVINGS_SEEDS").unwrap_or(default_seeds),
    };
    let mut seen = Seen::default();
    for seed in seeds {
        seen.add(run_reported(seed, steps, backend));
    }
    eprintln!("interleavings on {backend:?}: {seen:?}");
    (seen, steps)
}

/// A few seeds against a FileStorage: the same invariants with real disk
/// writes and fsyncs under the lock, and the file read back at the end.
#[test]
fn random_interleavings_on_a_file_storage() {
    let (seen, _) = run_budget(Backend::File, DEFAULT_FILE_SEEDS);
    assert!(seen.commits > 0, "{seen:?}");
}

/// The same without group commit.
#[test]
fn random_interleavings_on_a_file_storage_without_group_commit() {
    let (seen, _) = run_budget(Backend::FileWithoutGroupCommit, DEFAULT_FILE_SEEDS / 2);
    assert!(seen.commits > 0, "{seen:?}");
}

#[test]
fn random_interleavings_keep_the_ordering_invariants() {
    let (seen, steps) = run_budget(Backend::Mapping, DEFAULT_SEEDS);
    // The default budget must reach every situation at least once.
    if steps >= DEFAULT_STEPS {
        assert!(
            seen.commits > 0
                && seen.conflicts > 0
                && seen.resolutions > 0
                && seen.lock_waits > 0
                && seen.timeouts > 0
                && seen.loads > 0,
            "the budget exercised too little: {seen:?}"
        );
    }
}

/// The simulation can fail: a client that trusts a stale lastTransaction
/// answer is caught, so the checks above are not vacuous.
#[test]
#[should_panic(expected = "ahead of")]
fn the_checks_catch_a_reply_ahead_of_the_invalidations() {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .start_paused(true)
        .build()
        .unwrap();
    runtime.block_on(async {
        let storage = Arc::new(MappingStorage::new("test"));
        let mut sim = Sim::new(0, ServerSettings::default(), storage);
        sim.connect(0).await;
        let conn = sim.conns[0].as_mut().unwrap();
        conn.asked.insert(99, Asked::LastTransaction);
        // A reply naming a transaction the client was never told of.
        let forged = Message::reply(Value::Int(99), replies_tid(Tid(5)));
        sim.received(0, forged);
    });
}

fn replies_tid(tid: Tid) -> Value {
    zeo_protocol::reply::tid(tid)
}
