//! Several servers over one database: what one server's clients commit,
//! the other server's clients are told of, in tid order, once, and never
//! after a reply that reflects it.
//!
//! The database is `zeo_storage::testing::SharedDatabase`; each server
//! opens its own handle on it, as each zeo-server opens its own
//! connections to one PostgreSQL database.

mod common;

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{invalidation, Client, TestServer};
use zeo_protocol::client::replies::{self, VoteItem};
use zeo_protocol::{ClientRequest, Message};
use zeo_server::ServerSettings;
use zeo_storage::testing::{commit, SharedDatabase};
use zeo_storage::{Oid, Storage, Tid};

async fn server_on(db: &SharedDatabase) -> TestServer {
    TestServer::with_storage(ServerSettings::default(), Arc::new(db.handle())).await
}

/// Waits for the next invalidation, bounded by [`WAIT`].
async fn next_invalidation(client: &mut Client) -> (Tid, Vec<Oid>) {
    invalidation(&client.next_event("invalidateTransaction").await)
}

fn percentile(sorted: &[Duration], p: usize) -> Duration {
    sorted[(sorted.len() * p / 100).min(sorted.len() - 1)]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn twenty_commits_through_a_each_reach_a_client_of_b() {
    let db = SharedDatabase::new("shared");
    let (a, b) = (server_on(&db).await, server_on(&db).await);
    let mut writer = a.client().await;
    let mut reader = b.client().await;
    let oid = writer.new_oids().await[0];
    let mut serial = Tid::ZERO;
    let mut delays = Vec::new();
    for i in 0..20u8 {
        let started = Instant::now();
        let tid = writer
            .commit(i64::from(i) + 1, &[(oid, serial, vec![i])])
            .await
            .unwrap();
        let (seen, oids) = next_invalidation(&mut reader).await;
        delays.push(started.elapsed());
        assert_eq!((seen, oids), (tid, vec![oid]), "commit {i}");
        let loaded = reader.load(oid).await.unwrap().unwrap();
        assert_eq!((loaded.data, loaded.start), (vec![i], tid));
        serial = tid;
    }
    let last = reader.call("lastTransaction", vec![]).await.unwrap();
    assert_eq!(replies::tid("lastTransaction", &last).unwrap(), serial);
    let told: Vec<_> = writer
        .events()
        .into_iter()
        .filter(|m| m.method == "invalidateTransaction")
        .collect();
    assert!(
        told.is_empty(),
        "a committer is never told of its own commits: {told:?}"
    );
    delays.sort();
    // A figure for the record, not a claim: commit on A to receipt by a
    // client of B, including the commit's own round trips.
    eprintln!(
        "invalidation delay A -> client of B over 20 commits: p50 {:?}, p99 {:?}",
        percentile(&delays, 50),
        percentile(&delays, 99)
    );
    a.stop().await;
    b.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conflicting_changes_through_a_and_b_give_exactly_one_conflict() {
    let db = SharedDatabase::new("shared");
    let (a, b) = (server_on(&db).await, server_on(&db).await);
    let mut on_a = a.client().await;
    let mut on_b = b.client().await;
    let oid = on_a.new_oids().await[0];
    let base = on_a
        .commit(1, &[(oid, Tid::ZERO, b"base".to_vec())])
        .await
        .unwrap();
    assert_eq!(next_invalidation(&mut on_b).await.0, base);
    // Both change the object from the same revision; the votes race.
    on_a.begin(2).await;
    on_a.store(2, oid, base, b"from a").await;
    on_b.begin(2).await;
    on_b.store(2, oid, base, b"from b").await;
    // Each side goes on independently: the database's commit lock makes
    // the later vote wait for the earlier commit.
    async fn vote_then_end(client: &mut Client) -> Result<Tid, ()> {
        let vote = client.send_vote(2).await;
        let conflicted = match &client.reply_to(&vote).await {
            Ok(v) => replies::vote(v)
                .unwrap()
                .iter()
                .any(|i| matches!(i, VoteItem::Conflict(_))),
            Err(e) => e.class.contains("ConflictError"),
        };
        if conflicted {
            client.abort(2).await.unwrap();
            Err(())
        } else {
            Ok(client.finish(2).await.unwrap())
        }
    }
    let (ended_a, ended_b) = tokio::join!(vote_then_end(&mut on_a), vote_then_end(&mut on_b));
    let conflicts = [ended_a, ended_b].iter().filter(|e| e.is_err()).count();
    let committed: Vec<Tid> = [ended_a, ended_b].into_iter().flatten().collect();
    assert_eq!(conflicts, 1, "exactly one of the two commits conflicts");
    assert_eq!(committed.len(), 1);
    let (data, tid) = db.handle().load(oid).unwrap();
    assert_eq!(tid, committed[0]);
    assert!(data == b"from a" || data == b"from b");
    a.stop().await;
    b.stop().await;
}

/// What one client has been told, checked as its messages arrive: the
/// invariants a client of several servers relies on.
#[derive(Default)]
struct History {
    /// The newest tid the client has heard of (register, invalidations,
    /// its own finishes, lastTransaction).
    known: Tid,
    /// Invalidations received, by oid: the newest tid.
    invalidated: HashMap<Oid, Tid>,
    /// What a client's cache would hold: the revision last loaded as
    /// current (or committed) per object, until an invalidation drops it.
    cached: HashMap<Oid, Tid>,
}

impl History {
    /// One message, in arrival order: invalidations come in tid order,
    /// each after everything the client heard before.
    fn take(&mut self, m: &Message) {
        if m.method == "invalidateTransaction" {
            let (tid, oids) = invalidation(m);
            assert!(
                tid > self.known,
                "invalidation {tid} not after {} (out of order or repeated)",
                self.known
            );
            self.known = tid;
            for oid in oids {
                self.invalidated.insert(oid, tid);
                self.cached.remove(&oid);
            }
        }
    }

    /// A load's answer: never newer than what the client was told, never
    /// current when an invalidation superseded it.
    fn check_load(&mut self, oid: Oid, start: Tid, end: Option<Tid>) {
        if let Some(&cached) = self.cached.get(&oid) {
            // A real client answers from its cache here: the server must
            // have invalidated it if the object changed.
            assert_eq!(
                cached, start,
                "stale read: {oid} is at {start}, the cache still holds {cached} uninvalidated"
            );
        }
        if end.is_none() {
            self.cached.insert(oid, start);
        }
        assert!(
            start <= self.known,
            "load of {oid} returned revision {start}, newer than the last announced tid {}",
            self.known
        );
        if end.is_none() {
            if let Some(&inv) = self.invalidated.get(&oid) {
                assert!(
                    inv <= start,
                    "load of {oid} says {start} is current after an invalidation at {inv}"
                );
            }
        }
    }
}

/// A client that records everything and checks it against [`History`].
struct Checked {
    client: Client,
    history: History,
    /// How much of the client's log was checked.
    seen: usize,
    /// The last value read per counter: reads are monotonic.
    last_read: BTreeMap<Oid, u64>,
    next_txn: i64,
}

fn counter(value: u64) -> Vec<u8> {
    value.to_le_bytes().to_vec()
}

impl Checked {
    async fn connect(server: &TestServer) -> Self {
        let mut checked = Checked {
            client: Client::connect(server.addr, None).await,
            history: History::default(),
            seen: 0,
            last_read: BTreeMap::new(),
            next_txn: 1,
        };
        checked.register().await;
        checked
    }

    async fn register(&mut self) {
        let registered = self.client.register("1", false).await.unwrap();
        self.catch_up();
        self.history.known = self.history.known.max(registered);
    }

    /// Moves to another server (a restart, a fail-over), keeping what the
    /// client was told; waits, bounded, for the server to have caught up
    /// with it, as our client does, instead of reading older data.
    async fn reconnect(&mut self, server: &TestServer, at_least: Tid) {
        let mut client = Client::connect(server.addr, None).await;
        let mut registered = client.register("1", false).await.unwrap();
        let target = self.history.known.max(at_least);
        // The server announces what it was behind on: each wait is bounded
        // by the client's own timeout, and each step moves forward.
        while registered < target {
            let (tid, _) = next_invalidation(&mut client).await;
            assert!(tid > registered);
            registered = tid;
        }
        self.client = client;
        self.seen = self.client.log.len();
        // Invalidations sent before the move are not sent again: a real
        // client verifies its cache here, this one starts a new record.
        self.history.invalidated.clear();
        self.history.cached.clear();
        self.history.known = registered;
    }

    /// Takes in every message that arrived, up to the last.
    fn catch_up(&mut self) {
        for m in &self.client.log[self.seen..] {
            self.history.take(m);
        }
        self.seen = self.client.log.len();
    }

    async fn read(&mut self, oid: Oid) -> (u64, Tid) {
        let msg = ClientRequest::load_before(oid, Tid::MAX);
        let msgid = msg.msgid.clone();
        self.client.send(&msg).await;
        let reply = self.client.reply_to(&msgid).await.unwrap();
        // The reply is the last message read: everything before it counts.
        self.catch_up();
        let rev = replies::load_before(&reply).unwrap().unwrap();
        self.history.check_load(oid, rev.start, rev.end);
        let value = u64::from_le_bytes(rev.data[..8].try_into().unwrap());
        let last = self.last_read.entry(oid).or_default();
        assert!(
            value >= *last,
            "reads of {oid} went back: {value} after {last}"
        );
        *last = value;
        (value, rev.start)
    }

    /// Reads a counter and commits it plus one: `true` when acknowledged,
    /// `false` on a conflict.
    async fn increment(&mut self, oid: Oid) -> bool {
        let (value, serial) = self.read(oid).await;
        self.commit_increment(oid, value, serial).await
    }

    /// Commits `value + 1` on top of `serial` (read earlier).
    async fn commit_increment(&mut self, oid: Oid, value: u64, serial: Tid) -> bool {
        let txn = self.next_txn;
        self.next_txn += 1;
        self.client.begin(txn).await;
        self.client
            .store(txn, oid, serial, &counter(value + 1))
            .await;
        let voted = self.client.vote(txn).await;
        let conflicted = match &voted {
            Ok(items) => items.iter().any(|i| matches!(i, VoteItem::Conflict(_))),
            Err(_) => true,
        };
        if conflicted {
            self.client.abort(txn).await.unwrap();
            self.catch_up();
            return false;
        }
        let tid = self.client.finish(txn).await.unwrap();
        self.catch_up();
        assert!(
            tid > self.history.known,
            "own commit {tid} announced after {}",
            self.history.known
        );
        self.history.known = tid;
        self.history.cached.insert(oid, tid);
        self.last_read.insert(oid, value + 1);
        true
    }
}

/// A small deterministic generator (xorshift), so a failure replays.
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jepsen_style_history_over_two_servers_with_restarts() {
    jepsen_style_history(SharedDatabase::new("shared"), 240).await;
}

/// The same with servers that learn of each other's commits only by their
/// periodic poll: own commits must announce the foreign ones below them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jepsen_style_history_when_only_polling_finds_foreign_commits() {
    jepsen_style_history(SharedDatabase::without_wakeup("shared"), 120).await;
}

async fn jepsen_style_history(db: SharedDatabase, steps: usize) {
    let writer = db.handle();
    let counters: Vec<Oid> = (0..3).map(|_| writer.new_oid().unwrap()).collect();
    for &oid in &counters {
        commit(&writer, &[(oid, Tid::ZERO, counter(0))]).unwrap();
    }
    let mut servers = [server_on(&db).await, server_on(&db).await];
    let mut clients = Vec::new();
    for i in 0..4 {
        clients.push((i % 2, Checked::connect(&servers[i % 2]).await));
    }
    let mut acked: BTreeMap<Oid, u64> = counters.iter().map(|&o| (o, 0)).collect();
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let (mut conflicts, mut restarts, mut moves) = (0, 0, 0);
    for step in 0..steps {
        let c = rng.below(clients.len() as u64) as usize;
        let oid = counters[rng.below(counters.len() as u64) as usize];
        match rng.below(20) {
            0..=8 => {
                clients[c].1.read(oid).await;
            }
            9..=13 => {
                if clients[c].1.increment(oid).await {
                    *acked.get_mut(&oid).unwrap() += 1;
                } else {
                    conflicts += 1;
                }
            }
            14..=17 => {
                // Two clients read the same revision and both write it:
                // the second must conflict, or an update would be lost.
                let d = (c + 1 + rng.below(clients.len() as u64 - 1) as usize) % clients.len();
                let (value_c, serial_c) = clients[c].1.read(oid).await;
                let (value_d, serial_d) = clients[d].1.read(oid).await;
                let c_won = clients[c].1.commit_increment(oid, value_c, serial_c).await;
                if c_won {
                    *acked.get_mut(&oid).unwrap() += 1;
                }
                if clients[d].1.commit_increment(oid, value_d, serial_d).await {
                    assert!(
                        !(c_won && serial_c == serial_d),
                        "a stale write was accepted"
                    );
                    *acked.get_mut(&oid).unwrap() += 1;
                } else {
                    conflicts += 1;
                }
            }
            18 => {
                // Fail-over: the client moves to the other server.
                let to = 1 - clients[c].0;
                clients[c].1.reconnect(&servers[to], Tid::ZERO).await;
                clients[c].0 = to;
                moves += 1;
            }
            _ => {
                // A server restarts over the same database; its clients
                // come back to the new one.
                let which = step % 2;
                let restarted = server_on(&db).await;
                let old = std::mem::replace(&mut servers[which], restarted);
                old.stop().await;
                for (at, client) in clients.iter_mut() {
                    if *at == which {
                        client.reconnect(&servers[which], Tid::ZERO).await;
                    }
                }
                restarts += 1;
            }
        }
        // Every client also learns of what the others do, in order.
        for (_, client) in clients.iter_mut() {
            client.catch_up();
        }
    }
    // No acknowledged increment was lost, and every client reads the end
    // state once its server has announced it.
    let last = db.last_transaction();
    for (at, client) in clients.iter_mut() {
        client.reconnect(&servers[*at], last).await;
        assert!(client.history.known >= last);
        for &oid in &counters {
            assert_eq!(client.read(oid).await.0, acked[&oid], "counter {oid}");
        }
    }
    for &oid in &counters {
        let (data, _) = writer.load(oid).unwrap();
        assert_eq!(data, counter(acked[&oid]));
    }
    eprintln!(
        "history: {} acknowledged increments, {conflicts} conflicts, {restarts} restarts, {moves} fail-overs",
        acked.values().sum::<u64>()
    );
    assert!(acked.values().sum::<u64>() > 0 && conflicts > 0 && restarts > 0 && moves > 0);
    for server in servers {
        server.stop().await;
    }
}

/// A commit the server has not announced yet is not served: a load
/// answers as of the last announced tid, or comes after the
/// invalidation that announces the commit.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn loads_never_run_ahead_of_the_invalidations() {
    // No wake-ups: the server learns of the other writer's commits only
    // at its periodic poll, which leaves a window to load in.
    let db = SharedDatabase::without_wakeup("shared");
    let other = db.handle();
    let oid = other.new_oid().unwrap();
    let mut serial = commit(&other, &[(oid, Tid::ZERO, counter(0))]).unwrap();
    let server = server_on(&db).await;
    let mut client = Checked::connect(&server).await;
    assert_eq!(client.read(oid).await, (0, serial));
    let mut stale = 0;
    for value in 1..=20 {
        serial = commit(&other, &[(oid, serial, counter(value))]).unwrap();
        // Checked against what the client was told: never newer than the
        // announced horizon, never current past an invalidation.
        let (read, _) = client.read(oid).await;
        if read < value {
            stale += 1;
        }
        let v = client.client.call("lastTransaction", vec![]).await.unwrap();
        client.catch_up();
        let last = replies::tid("lastTransaction", &v).unwrap();
        assert!(last <= client.history.known, "lastTransaction ran ahead");
    }
    // Without the cap, every one of these loads would have returned the
    // new revision; with it most come before the poll.
    assert!(stale > 0, "no load fell between a commit and its poll");
    server.stop().await;
}

const PYTHON_CLIENTS: &str = r#"
import sys, transaction, ZODB, ZEO.ClientStorage

def open_db(port):
    cs = ZEO.ClientStorage.ClientStorage(('127.0.0.1', int(port)), wait_timeout=20, server_sync=True)
    return ZODB.DB(cs)

db_a, db_b = open_db(sys.argv[1]), open_db(sys.argv[2])
tm_a, tm_b = transaction.TransactionManager(), transaction.TransactionManager()
c_a, c_b = db_a.open(tm_a), db_b.open(tm_b)

def seen_by_b(key, value):
    # Each begin() is a round trip to B (server_sync): bounded by count,
    # it waits for B to announce what A committed.
    for _ in range(200000):
        tm_b.begin()
        if c_b.root().get(key) == value:
            return True
    return False

rounds = 0
for i in range(20):
    c_a.root()['x'] = i
    tm_a.commit()
    assert seen_by_b('x', i), "B never showed %d" % i
    rounds += 1
# And the other way: a commit through B reaches A's client.
c_b.root()['y'] = 'from b'
tm_b.commit()
for _ in range(200000):
    tm_a.begin()
    if c_a.root().get('y') == 'from b':
        break
else:
    sys.exit("A never showed B's commit")
db_a.close(); db_b.close()
print("OK", rounds)
"#;

/// Stock ZEO 6 clients of two servers over one database see each other's
/// commits.
#[test]
fn python_zeo_clients_of_two_servers_see_each_others_commits() {
    let db = SharedDatabase::new("shared");
    let start = |db: &SharedDatabase| {
        let server = zeo_server::ServerBuilder::new(ServerSettings::default())
            .storage("1", Arc::new(db.handle()))
            .build()
            .unwrap();
        server
            .bind(&zeo_server::ListenAddress::localhost(0))
            .unwrap();
        server.start_background().unwrap()
    };
    let (a, b) = (start(&db), start(&db));
    let dir = tempfile::tempdir().unwrap();
    let script = dir.path().join("clients.py");
    std::fs::write(&script, PYTHON_CLIENTS).unwrap();
    let ports = [a.port().unwrap().to_string(), b.port().unwrap().to_string()];
    let out = zeo_testkit::run_python(&zeo_testkit::python6(), &script, &ports, dir.path());
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && stdout.contains("OK 20"),
        "stdout:\n{stdout}\nstderr:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    a.shutdown().unwrap();
    b.shutdown().unwrap();
}
