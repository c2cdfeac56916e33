//! [`PostgresStorage`]: the storage contract over RelStorage's schema.
//!
//! Reads run on pooled connections. A transaction stages its records in
//! memory until the vote; the vote and the finish run on one connection of
//! their own inside one database transaction, following the commit
//! protocol described in the [crate documentation](crate).

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Condvar, Mutex, MutexGuard, RwLock};

use postgres::types::Type;
use postgres::Client;
use zeo_storage::{
    BeginOptions, Error as StorageError, HistoryEntry, LoadedRevision, Oid, Result, Storage, Tid,
    TransactionMetaData, TxnHandle, TxnStatus,
};

use zeo_storage::blobdir::BlobDir;

use crate::blobs;
use crate::changes;
use crate::error::Error;
use crate::options::{HistoryMode, PostgresOptions};
use crate::pool::{drop_off_runtime, Pool};
use crate::schema;

use crate::{COMMIT_LOCK, PACK_LOCK};

/// How many oids one value of `zoid_seq` stands for (RelStorage's blocks).
const OID_BLOCK: u64 = 16;

/// The tid the database's clock gives, as ZODB encodes timestamps
/// (minutes since 1900 in the high 32 bits, the fraction of the minute in
/// the low ones), or `$1` when that is later: the tid rule, evaluated by
/// the database so that no server clock takes part.
const CLOCK_TID: &str = "GREATEST(\
    (((((EXTRACT(YEAR FROM c.t)::bigint - 1900) * 12 + EXTRACT(MONTH FROM c.t)::bigint - 1) * 31 \
       + EXTRACT(DAY FROM c.t)::bigint - 1) * 1440 \
       + EXTRACT(HOUR FROM c.t)::bigint * 60 + EXTRACT(MINUTE FROM c.t)::bigint) << 32) \
    + trunc(EXTRACT(SECOND FROM c.t) * 4294967296 / 60)::bigint, $1::bigint)";

/// One staged record.
pub(crate) struct Staged {
    /// The revision the record was based on; checked at the vote.
    pub(crate) serial: Tid,
    /// The record, `None` for "the object does not exist" (undone
    /// creation).
    pub(crate) data: Option<Vec<u8>>,
    /// Whether the vote checks `serial` (not for restored records).
    pub(crate) checked: bool,
    /// The revision's blob.
    pub(crate) blob: StagedBlob,
}

/// Where a staged revision's blob comes from.
pub(crate) enum StagedBlob {
    /// It has none.
    None,
    /// A file of the storage's own in the blob directory's `tmp`, uploaded
    /// at the vote and removed (or moved into the cache) at the end.
    File(std::path::PathBuf),
    /// The blob of the object's revision at this tid (undo), shared.
    SameAs(Tid),
}

/// The table with one row per existing object in `mode`.
fn current_table(mode: HistoryMode) -> &'static str {
    match mode {
        HistoryMode::Preserving => "current_object",
        HistoryMode::Free => "object_state",
    }
}

/// How many objects the database holds, and the bytes of `object_state`.
fn object_counts(client: &mut Client, mode: HistoryMode) -> std::result::Result<(u64, u64), Error> {
    let table = current_table(mode);
    let count: i64 = client
        .query_one(&format!("SELECT count(*) FROM {table}"), &[])?
        .get(0);
    let bytes: i64 = client
        .query_one("SELECT pg_total_relation_size('object_state')", &[])?
        .get(0);
    Ok((count.max(0) as u64, bytes.max(0) as u64))
}

impl Staged {
    /// A record without a blob.
    pub(crate) fn record(serial: Tid, data: Option<Vec<u8>>, checked: bool) -> Staged {
        Staged {
            serial,
            data,
            checked,
            blob: StagedBlob::None,
        }
    }
}

impl Drop for StagedBlob {
    fn drop(&mut self) {
        // The storage owns the files it was handed: one not moved into the
        // cache by a finish goes with its staging.
        if let StagedBlob::File(path) = self {
            if !path.as_os_str().is_empty() {
                let _ = std::fs::remove_file(path);
            }
        }
    }
}

/// The transaction holding the storage's commit lock.
struct Pending {
    handle: TxnHandle,
    meta: TransactionMetaData,
    /// The tid a restore or copy commits under.
    tid: Option<Tid>,
    packed: bool,
    staged: BTreeMap<Oid, Staged>,
    /// Oids checked with `check_current_serial`, and the serial read.
    read_current: BTreeMap<Oid, Tid>,
    /// The connection of the database transaction the vote opened.
    conn: Option<Client>,
    /// Each staged oid's current tid at the vote (0 for new objects).
    prev: BTreeMap<Oid, Tid>,
    voted: bool,
    /// Whether the transaction undoes another (it then takes the pack
    /// lock at the vote, as RelStorage's undo does).
    undoing: bool,
    /// The tid and database transaction id chosen at the vote, under the
    /// commit lock held from then on (blobs in a shared blob directory).
    voted_tid: Option<(Tid, i64)>,
}

/// A ZODB storage in a PostgreSQL database, in RelStorage 4's schema.
///
/// Open one with [`PostgresStorage::open`] (or [`crate::open_storage`]).
pub struct PostgresStorage {
    name: String,
    mode: HistoryMode,
    read_only: bool,
    lock_timeout_ms: u64,
    pub(crate) pool: Pool,
    /// The connection commits use between transactions.
    store_conn: Mutex<Option<Client>>,
    pending: Mutex<Option<Pending>>,
    lock_free: Condvar,
    /// Held for writing from the COMMIT of one of our transactions until
    /// its `on_commit` returned, and for reading by every load: no reader
    /// sees a transaction before its invalidations are queued.
    gate: RwLock<()>,
    last_tid: AtomicU64,
    handles: AtomicU64,
    /// Oids of the block last taken from `zoid_seq`, lowest last.
    oids: Mutex<Vec<u64>>,
    /// The highest oid allocated or stored here: storing beyond it raises
    /// `zoid_seq`.
    max_oid: AtomicU64,
    objects: AtomicU64,
    bytes: AtomicU64,
    closed: AtomicBool,
    /// The SQL that differs between the schema's two variants.
    sql: Sql,
    /// Where loaded blobs are cached and uploads wait (`blob-dir`); `None`
    /// keeps blobs unsupported. With `shared_blobs` it is where blobs live.
    pub(crate) blob_cache: Option<BlobDir>,
    /// `shared-blob-dir true`: blob files live only in `blob_cache`, a
    /// directory every server and RelStorage client of the database shares.
    pub(crate) shared_blobs: bool,
    /// The connection listening for other writers' commits (`poll.rs`).
    pub(crate) listener: crate::poll::Listener,
}

/// Statements whose text depends on the history mode.
struct Sql {
    current_tid: String,
    current_tids: String,
    load: String,
    last_tid: String,
}

impl Sql {
    fn new(mode: HistoryMode) -> Sql {
        let (cur, last) = match mode {
            HistoryMode::Preserving => ("current_object", "\"transaction\""),
            HistoryMode::Free => ("object_state", "object_state"),
        };
        Sql {
            current_tid: format!("SELECT tid FROM {cur} WHERE zoid = $1"),
            current_tids: format!("SELECT zoid, tid FROM {cur} WHERE zoid = ANY($1)"),
            load: match mode {
                HistoryMode::Preserving => "SELECT s.state, s.tid FROM current_object c \
                     JOIN object_state s USING (zoid, tid) WHERE c.zoid = $1"
                    .to_owned(),
                HistoryMode::Free => {
                    "SELECT state, tid FROM object_state WHERE zoid = $1".to_owned()
                }
            },
            last_tid: format!("SELECT COALESCE(max(tid), 0) FROM {last}"),
        }
    }
}

/// How long a finish that lost its connection during COMMIT keeps asking
/// the database whether the transaction made it, before answering with an
/// error of unknown outcome.
const OUTCOME_PATIENCE: std::time::Duration = std::time::Duration::from_secs(30);
/// The shortest pause between two such questions.
const OUTCOME_RETRY: std::time::Duration = std::time::Duration::from_millis(50);

fn pg<T>(r: std::result::Result<T, postgres::Error>) -> crate::error::Result<T> {
    r.map_err(Error::Postgres)
}

fn not_current() -> StorageError {
    StorageError::Transaction("not the current transaction".into())
}

impl PostgresStorage {
    /// Connects, checks (or creates) the schema and reads where the
    /// database stands.
    ///
    /// # Errors
    ///
    /// When the database cannot be reached, its schema is the other
    /// variant or incomplete, or an option is unusable.
    pub fn open(options: PostgresOptions) -> crate::error::Result<PostgresStorage> {
        let blob_cache = match (&options.blob_dir, options.shared_blob_dir) {
            (Some(dir), true) => Some(
                blobs::open_shared_dir(dir)
                    .map_err(|e| Error::Config(format!("blob-dir {}: {e}", dir.display())))?,
            ),
            (Some(dir), false) => Some(
                BlobDir::open(dir, false)
                    .map_err(|e| Error::Config(format!("blob-dir {}: {e}", dir.display())))?,
            ),
            (None, _) => None,
        };
        let pool = Pool::new(&options.dsn, options.pool_size, String::new())?;
        let mut client = pool.connect()?;
        schema::prepare(&mut client, options.history, options.create_schema)?;
        let sql = Sql::new(options.history);
        let last: i64 = client.query_one(sql.last_tid.as_str(), &[])?.get(0);
        let (count, bytes) = object_counts(&mut client, options.history)?;
        let cur = current_table(options.history);
        let max_oid: i64 = client
            .query_one(&format!("SELECT COALESCE(max(zoid), 0) FROM {cur}"), &[])?
            .get(0);
        pool.give_back(client);
        Ok(PostgresStorage {
            name: options.name.clone(),
            mode: options.history,
            read_only: options.read_only,
            lock_timeout_ms: options.commit_lock_timeout.as_millis().clamp(1, 1 << 31) as u64,
            pool,
            store_conn: Mutex::new(None),
            pending: Mutex::new(None),
            lock_free: Condvar::new(),
            gate: RwLock::new(()),
            last_tid: AtomicU64::new(last as u64),
            handles: AtomicU64::new(1),
            oids: Mutex::new(Vec::new()),
            max_oid: AtomicU64::new(max_oid as u64),
            objects: AtomicU64::new(count),
            bytes: AtomicU64::new(bytes),
            closed: AtomicBool::new(false),
            sql,
            shared_blobs: options.shared_blob_dir && blob_cache.is_some(),
            blob_cache,
            listener: crate::poll::Listener::default(),
        })
    }

    /// The schema variant the storage serves.
    pub fn history_mode(&self) -> HistoryMode {
        self.mode
    }

    /// Counts the objects and bytes again: after a pack, which removes
    /// objects the running totals only ever grow by.
    pub(crate) fn recount(&self, client: &mut Client) -> Result<()> {
        let (count, bytes) = object_counts(client, self.mode)?;
        self.objects.store(count, Ordering::Relaxed);
        self.bytes.store(bytes, Ordering::Relaxed);
        Ok(())
    }

    pub(crate) fn check_open(&self) -> Result<()> {
        if self.closed.load(Ordering::Acquire) {
            Err(StorageError::Closed)
        } else {
            Ok(())
        }
    }

    /// Runs a read on a pooled connection, behind the publication gate.
    pub(crate) fn read<T>(
        &self,
        mut f: impl FnMut(&mut Client) -> crate::error::Result<T>,
    ) -> Result<T> {
        self.check_open()?;
        let _gate = self.gate.read().unwrap_or_else(|e| e.into_inner());
        Ok(self.pool.with(|c| f(c))?)
    }

    fn lock(&self) -> MutexGuard<'_, Option<Pending>> {
        self.pending.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn with_txn<T>(&self, txn: TxnHandle, f: impl FnOnce(&mut Pending) -> Result<T>) -> Result<T> {
        self.check_open()?;
        match self.lock().as_mut() {
            Some(p) if p.handle == txn => f(p),
            _ => Err(not_current()),
        }
    }

    /// The object's current tid, `None` when it does not exist.
    pub(crate) fn committed_tid(&self, oid: Oid) -> Result<Option<Tid>> {
        let sql = &self.sql.current_tid;
        self.read(|c| {
            let row = c.query_typed_opt(sql.as_str(), &[(&(oid.0 as i64), Type::INT8)])?;
            Ok(row.map(|r| Tid(r.get::<_, i64>(0) as u64)))
        })
    }

    /// The commit connection: the one kept from the last transaction, or
    /// a new one.
    fn take_store_conn(&self) -> crate::error::Result<Client> {
        let kept = self
            .store_conn
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take();
        match kept {
            Some(c) if !c.is_closed() => Ok(c),
            _ => self.pool.connect(),
        }
    }

    fn keep_store_conn(&self, client: Client) {
        if !client.is_closed() {
            *self.store_conn.lock().unwrap_or_else(|e| e.into_inner()) = Some(client);
        }
    }

    /// What a store checks first: the transaction, and the serial against
    /// the committed rows (now, so that the server can resolve a conflict;
    /// the vote checks again under the locks).
    pub(crate) fn check_store(&self, txn: TxnHandle, oid: Oid, serial: Tid) -> Result<()> {
        self.transaction_is(txn)?;
        if serial == Tid::ZERO {
            // A new object: nothing to resolve a conflict against, so the
            // vote's check (an oid taken meanwhile) is enough, and a large
            // transaction of new objects saves a round trip per object.
            return Ok(());
        }
        let committed = self.committed_tid(oid)?.unwrap_or(Tid::ZERO);
        if committed != serial {
            return Err(StorageError::Conflict {
                oid,
                committed,
                old: serial,
            });
        }
        Ok(())
    }

    /// The serial and data of what `txn` staged for `oid`, if anything.
    pub(crate) fn staged_record(
        &self,
        txn: TxnHandle,
        oid: Oid,
    ) -> Result<Option<(Tid, Option<Vec<u8>>)>> {
        self.with_txn(txn, |p| {
            Ok(p.staged.get(&oid).map(|s| (s.serial, s.data.clone())))
        })
    }

    /// Fails unless `txn` is the current transaction.
    pub(crate) fn transaction_is(&self, txn: TxnHandle) -> Result<()> {
        self.with_txn(txn, |_| Ok(()))
    }

    /// Marks the transaction as an undo.
    pub(crate) fn mark_undo(&self, txn: TxnHandle) -> Result<()> {
        self.with_txn(txn, |p| {
            p.undoing = true;
            Ok(())
        })
    }

    /// Stages a record in the current transaction (store, undo, restore).
    pub(crate) fn stage(&self, txn: TxnHandle, oid: Oid, staged: Staged) -> Result<()> {
        self.with_txn(txn, |p| {
            if p.voted {
                return Err(StorageError::Transaction("store after the vote".into()));
            }
            p.staged.insert(oid, staged);
            Ok(())
        })
    }

    /// The vote's database work: locks, conflict checks, oid sequence.
    /// Runs in the database transaction `client` has open.
    fn vote_in_db(&self, client: &mut Client, p: &mut Pending) -> Result<()> {
        // Before any lock: uploading can take a while. A shared blob
        // directory holds the files instead (placed after these checks).
        if !self.shared_blobs {
            blobs::upload_staged(client, &p.staged)?;
        }
        if p.undoing {
            // Pack and undo exclude each other through the pack lock; it
            // goes with the database transaction.
            let got: bool =
                pg(client.query_one("SELECT pg_try_advisory_xact_lock($1)", &[&PACK_LOCK]))?.get(0);
            if !got {
                return Err(StorageError::transient(Error::Schema(
                    "a pack or undo is in progress".into(),
                )));
            }
        }
        if !p.read_current.is_empty() {
            let oids: Vec<i64> = p.read_current.keys().map(|o| o.0 as i64).collect();
            // Shared locks, tried without waiting as RelStorage does: an
            // object some committer holds exclusively is about to change.
            let all: Option<bool> = pg(client.query_one(
                "SELECT bool_and(pg_try_advisory_xact_lock_shared(z)) \
                 FROM unnest($1::bigint[]) AS z",
                &[&oids],
            ))?
            .get(0);
            let rows = pg(client.query(self.sql.current_tids.as_str(), &[&oids]))?;
            let current: BTreeMap<u64, u64> = rows
                .iter()
                .map(|r| (r.get::<_, i64>(0) as u64, r.get::<_, i64>(1) as u64))
                .collect();
            for (oid, serial) in &p.read_current {
                let committed = Tid(current.get(&oid.0).copied().unwrap_or(0));
                if committed != *serial || all != Some(true) {
                    return Err(StorageError::ReadConflict {
                        oid: *oid,
                        committed,
                        old: *serial,
                    });
                }
            }
        }
        if p.staged.is_empty() {
            return Ok(());
        }
        let oids: Vec<i64> = p.staged.keys().map(|o| o.0 as i64).collect();
        // Exclusive locks in oid order (the keys are sorted), as every
        // RelStorage committer takes them: no two committers deadlock.
        pg(client.execute(
            "SELECT pg_advisory_xact_lock(z) FROM unnest($1::bigint[]) AS z",
            &[&oids],
        ))?;
        let rows = pg(client.query(self.sql.current_tids.as_str(), &[&oids]))?;
        let current: BTreeMap<u64, u64> = rows
            .iter()
            .map(|r| (r.get::<_, i64>(0) as u64, r.get::<_, i64>(1) as u64))
            .collect();
        p.prev.clear();
        for (oid, staged) in &p.staged {
            let committed = Tid(current.get(&oid.0).copied().unwrap_or(0));
            if staged.checked && committed != staged.serial {
                return Err(StorageError::Conflict {
                    oid: *oid,
                    committed,
                    old: staged.serial,
                });
            }
            p.prev.insert(*oid, committed);
        }
        let max_stored = p.staged.keys().next_back().map_or(0, |o| o.0);
        if max_stored > self.max_oid.load(Ordering::Acquire) {
            // Copied or restored oids: the sequence must not hand them out
            // again (RelStorage raises it the same way).
            let block = max_stored.div_ceil(OID_BLOCK) as i64;
            pg(client.execute(
                "SELECT CASE WHEN $1 > nextval('zoid_seq') THEN setval('zoid_seq', $1) ELSE 0 END",
                &[&block],
            ))?;
        }
        Ok(())
    }

    /// The finish's database work under the commit lock: the tid, the
    /// rows, COMMIT. Returns the tid and the database transaction's id,
    /// by which the outcome of a COMMIT whose connection was lost is asked
    /// (a tid alone cannot tell: after a lost commit, another writer may
    /// commit under the same tid).
    fn move_rows(&self, client: &mut Client, p: &Pending) -> crate::error::Result<(Tid, i64)> {
        let (tid, xid) = match p.voted_tid {
            Some(chosen) => chosen,
            None => self.lock_and_choose_tid(client, p)?,
        };
        self.write_rows(client, p, tid.0 as i64)?;
        Ok((tid, xid))
    }

    /// Takes the commit lock (held until the database transaction ends)
    /// and chooses the tid: the one a restore asked for, or the later of
    /// the database clock and the last tid + 1.
    fn lock_and_choose_tid(
        &self,
        client: &mut Client,
        p: &Pending,
    ) -> crate::error::Result<(Tid, i64)> {
        client.execute("SELECT pg_advisory_xact_lock($1)", &[&COMMIT_LOCK])?;
        let floor = self.last_tid.load(Ordering::Acquire).saturating_add(1) as i64;
        let (tid, xid): (i64, i64) = match p.tid {
            Some(tid) => {
                let row = client.query_one(
                    format!("SELECT ({}), txid_current()", self.sql.last_tid).as_str(),
                    &[],
                )?;
                let last: i64 = row.get(0);
                if tid.0 as i64 <= last {
                    return Err(Error::Schema(format!(
                        "cannot commit under {tid}: the last transaction is {}",
                        Tid(last as u64)
                    )));
                }
                (tid.0 as i64, row.get(1))
            }
            None => {
                let sql = format!(
                    "SELECT GREATEST({CLOCK_TID}, ({}) + 1), txid_current() \
                     FROM (SELECT clock_timestamp() AT TIME ZONE 'UTC' AS t) c",
                    self.sql.last_tid
                );
                let row = client.query_one(&sql, &[&floor])?;
                (row.get(0), row.get(1))
            }
        };
        Ok((Tid(tid as u64), xid))
    }

    /// Writes the transaction's rows under `tid`.
    fn write_rows(&self, client: &mut Client, p: &Pending, tid: i64) -> crate::error::Result<()> {
        let oids: Vec<i64> = p.staged.keys().map(|o| o.0 as i64).collect();
        let states: Vec<Option<&[u8]>> = p.staged.values().map(|s| s.data.as_deref()).collect();
        match self.mode {
            HistoryMode::Preserving => {
                client.execute(
                    "INSERT INTO \"transaction\" \
                     (tid, packed, is_empty, username, description, extension) \
                     VALUES ($1, $2, $3, $4, $5, $6)",
                    &[
                        &tid,
                        &p.packed,
                        &p.staged.is_empty(),
                        &p.meta.user,
                        &p.meta.description,
                        &p.meta.extension,
                    ],
                )?;
                if !oids.is_empty() {
                    let prev: Vec<i64> = p
                        .staged
                        .keys()
                        .map(|o| p.prev.get(o).map_or(0, |t| t.0 as i64))
                        .collect();
                    // md5 as RelStorage fills it: the hex digest of the state.
                    client.execute(
                        "WITH moved AS (\
                           INSERT INTO object_state (zoid, tid, prev_tid, md5, state_size, state) \
                           SELECT z, $1, p, md5(s), COALESCE(length(s), 0), s \
                           FROM unnest($2::bigint[], $3::bigint[], $4::bytea[]) AS r(z, p, s) \
                           RETURNING zoid) \
                         INSERT INTO current_object (zoid, tid) SELECT zoid, $1 FROM moved \
                         ON CONFLICT (zoid) DO UPDATE SET tid = excluded.tid",
                        &[&tid, &oids, &prev, &states],
                    )?;
                }
            }
            HistoryMode::Free => {
                if !oids.is_empty() {
                    // The replaced revisions' blobs go with them.
                    client.execute(
                        "DELETE FROM blob_chunk WHERE zoid = ANY($1) AND tid <> $2",
                        &[&oids, &tid],
                    )?;
                    client.execute(
                        "INSERT INTO object_state (zoid, tid, state_size, state) \
                         SELECT z, $1, COALESCE(length(s), 0), s \
                         FROM unnest($2::bigint[], $3::bytea[]) AS r(z, s) \
                         ON CONFLICT (zoid) DO UPDATE SET tid = excluded.tid, \
                           state_size = excluded.state_size, state = excluded.state",
                        &[&tid, &oids, &states],
                    )?;
                }
            }
        }
        Ok(())
    }

    /// After the connection was lost during COMMIT: whether the
    /// transaction `tid` made it, asked on a fresh connection. A database
    /// that is restarting (the usual reason for the loss) is asked again,
    /// on the pool's back-off, for up to [`OUTCOME_PATIENCE`]: an answer
    /// turns a commit of unknown outcome into a known one.
    fn committed_after_all(&self, xid: i64) -> crate::error::Result<bool> {
        let deadline = std::time::Instant::now() + OUTCOME_PATIENCE;
        loop {
            match self.ask_committed(xid) {
                Ok(None) => {
                    // Still in progress: the old backend is finishing it.
                    if std::time::Instant::now() >= deadline {
                        return Err(Error::Unreachable {
                            reason: format!("transaction {xid} still in progress"),
                            retry_in: std::time::Duration::ZERO,
                        });
                    }
                    std::thread::sleep(OUTCOME_RETRY);
                }
                Ok(Some(done)) => return Ok(done),
                Err(e) if e.is_connection_lost() => {
                    let left = deadline.saturating_duration_since(std::time::Instant::now());
                    if left.is_zero() {
                        return Err(e);
                    }
                    let pause = match &e {
                        Error::Unreachable { retry_in, .. } => *retry_in,
                        _ => OUTCOME_RETRY,
                    };
                    std::thread::sleep(pause.max(OUTCOME_RETRY).min(left));
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// One attempt of [`Self::committed_after_all`]: `Some(committed)`
    /// once the database knows, `None` while the transaction is still in
    /// progress. `txid_status` answers for recent transactions, which is
    /// what a COMMIT just lost is.
    fn ask_committed(&self, xid: i64) -> crate::error::Result<Option<bool>> {
        let mut client = self.pool.connect()?;
        let status: Option<String> = client.query_one("SELECT txid_status($1)", &[&xid])?.get(0);
        self.pool.give_back(client);
        match status.as_deref() {
            Some("committed") => Ok(Some(true)),
            Some("aborted") => Ok(Some(false)),
            Some(_) => Ok(None),
            None => Err(Error::Schema(format!(
                "the database no longer knows the outcome of transaction {xid}"
            ))),
        }
    }

    fn release(&self, mut pending: MutexGuard<'_, Option<Pending>>) {
        if let Some(mut p) = pending.take() {
            if p.voted_tid.is_some() {
                blobs::remove_placed(&mut p.staged);
            }
            if let Some(mut conn) = p.conn.take() {
                if conn.batch_execute("ROLLBACK").is_ok() {
                    self.keep_store_conn(conn);
                }
            }
        }
        drop(pending);
        self.lock_free.notify_one();
    }

    /// Every connection the storage holds outside a transaction, with
    /// `extra`, taken out.
    fn connections(&self, extra: Option<Client>) -> Vec<Client> {
        let mut all = self.pool.take_idle();
        all.extend(
            self.store_conn
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .take(),
        );
        all.extend(extra);
        all
    }

    /// Allocates oids from `zoid_seq`, 16 per value as RelStorage does.
    fn next_oid(&self) -> Result<Oid> {
        let mut block = self.oids.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(oid) = block.pop() {
            return Ok(Oid(oid));
        }
        let n: i64 = self.read(|c| Ok(c.query_one("SELECT nextval('zoid_seq')", &[])?.get(0)))?;
        let high = (n as u64) * OID_BLOCK;
        // Lowest last, so that pop hands them out in increasing order.
        *block = ((high + 1 - OID_BLOCK)..=high).rev().collect();
        self.max_oid.fetch_max(high, Ordering::AcqRel);
        Ok(Oid(block.pop().unwrap_or(high)))
    }
}

impl Storage for PostgresStorage {
    fn name(&self) -> &str {
        &self.name
    }

    fn is_read_only(&self) -> bool {
        self.read_only
    }

    fn size(&self) -> u64 {
        self.bytes.load(Ordering::Relaxed)
    }

    fn len(&self) -> u64 {
        self.objects.load(Ordering::Relaxed)
    }

    fn last_transaction(&self) -> Tid {
        Tid(self.last_tid.load(Ordering::Acquire))
    }

    fn may_block(&self) -> bool {
        true
    }

    fn load(&self, oid: Oid) -> Result<(Vec<u8>, Tid)> {
        let sql = &self.sql.load;
        let row =
            self.read(|c| Ok(c.query_typed_opt(sql.as_str(), &[(&(oid.0 as i64), Type::INT8)])?))?;
        match row {
            Some(r) => match r.get::<_, Option<Vec<u8>>>(0) {
                Some(data) => Ok((data, Tid(r.get::<_, i64>(1) as u64))),
                None => Err(StorageError::pos_key(oid)),
            },
            None => Err(StorageError::pos_key(oid)),
        }
    }

    fn load_before(&self, oid: Oid, before: Tid) -> Result<Option<LoadedRevision>> {
        if self.mode == HistoryMode::Free {
            let (data, start) = self.load(oid)?;
            return Ok((start < before).then_some(LoadedRevision {
                data,
                start,
                end: None,
            }));
        }
        let o = oid.0 as i64;
        let b = before.0.min(i64::MAX as u64) as i64;
        let row = self.read(|c| {
            Ok(c.query_typed_opt(
                "SELECT s.state, s.tid, \
                   (SELECT min(n.tid) FROM object_state n WHERE n.zoid = $1 AND n.tid > s.tid) \
                 FROM object_state s WHERE s.zoid = $1 AND s.tid < $2 \
                 ORDER BY s.tid DESC LIMIT 1",
                &[(&o, Type::INT8), (&b, Type::INT8)],
            )?)
        })?;
        match row {
            Some(r) => {
                let start = Tid(r.get::<_, i64>(1) as u64);
                let end = r.get::<_, Option<i64>>(2).map(|t| Tid(t as u64));
                match r.get::<_, Option<Vec<u8>>>(0) {
                    Some(data) => Ok(Some(LoadedRevision { data, start, end })),
                    // The revision says the object did not exist then.
                    None => Err(StorageError::pos_key(oid)),
                }
            }
            None => match self.committed_tid(oid)? {
                Some(_) => Ok(None),
                None => Err(StorageError::pos_key(oid)),
            },
        }
    }

    fn load_serial(&self, oid: Oid, serial: Tid) -> Result<Vec<u8>> {
        let missing = || StorageError::PosKey {
            oid,
            serial: Some(serial),
        };
        if self.mode == HistoryMode::Free {
            return match self.load(oid)? {
                (data, tid) if tid == serial => Ok(data),
                _ => Err(missing()),
            };
        }
        let row = self.read(|c| {
            Ok(c.query_typed_opt(
                "SELECT state FROM object_state WHERE zoid = $1 AND tid = $2",
                &[
                    (&(oid.0 as i64), Type::INT8),
                    (&(serial.0 as i64), Type::INT8),
                ],
            )?)
        })?;
        row.and_then(|r| r.get::<_, Option<Vec<u8>>>(0))
            .ok_or_else(missing)
    }

    fn history(&self, oid: Oid, size: usize) -> Result<Vec<HistoryEntry>> {
        let limit = size.min(i64::MAX as usize) as i64;
        // The history-free schema has the current revision only, and no
        // transaction metadata.
        let sql = match self.mode {
            HistoryMode::Preserving => {
                "SELECT s.tid, s.state_size, t.username, t.description, t.extension \
                 FROM object_state s JOIN \"transaction\" t USING (tid) \
                 WHERE s.zoid = $1 ORDER BY s.tid DESC LIMIT $2"
            }
            HistoryMode::Free => {
                "SELECT tid, state_size, ''::bytea, ''::bytea, ''::bytea \
                 FROM object_state WHERE zoid = $1 LIMIT $2"
            }
        };
        let rows = self.read(|c| Ok(c.query(sql, &[&(oid.0 as i64), &limit])?))?;
        if rows.is_empty() {
            // Tell "no such object" from "asked for nothing".
            if size == 0 && self.committed_tid(oid)?.is_some() {
                return Ok(Vec::new());
            }
            return Err(StorageError::pos_key(oid));
        }
        Ok(rows
            .iter()
            .map(|r| {
                let tid = Tid(r.get::<_, i64>(0) as u64);
                HistoryEntry {
                    tid,
                    time: tid.unix_time(),
                    user: r.get(2),
                    description: r.get(3),
                    extension: r.get::<_, Option<Vec<u8>>>(4).unwrap_or_default(),
                    size: r.get::<_, i64>(1) as u64,
                }
            })
            .collect())
    }

    fn new_oid(&self) -> Result<Oid> {
        self.check_open()?;
        if self.read_only {
            return Err(StorageError::ReadOnly);
        }
        self.next_oid()
    }

    fn tpc_begin(&self, meta: &TransactionMetaData, options: BeginOptions) -> Result<TxnHandle> {
        if self.read_only {
            return Err(StorageError::ReadOnly);
        }
        let packed = match options.status {
            TxnStatus::Committed => false,
            TxnStatus::Packed => true,
            _ => return Err(StorageError::Unsupported("commit with this status")),
        };
        let mut pending = self.lock();
        while pending.is_some() && !self.closed.load(Ordering::Acquire) {
            pending = self
                .lock_free
                .wait(pending)
                .unwrap_or_else(|e| e.into_inner());
        }
        self.check_open()?;
        let handle = TxnHandle(self.handles.fetch_add(1, Ordering::AcqRel));
        *pending = Some(Pending {
            handle,
            meta: meta.clone(),
            tid: options.tid,
            packed,
            staged: BTreeMap::new(),
            read_current: BTreeMap::new(),
            conn: None,
            prev: BTreeMap::new(),
            voted: false,
            undoing: false,
            voted_tid: None,
        });
        Ok(handle)
    }

    fn transaction_tid(&self, txn: TxnHandle) -> Result<Option<Tid>> {
        self.with_txn(txn, |p| Ok(p.tid))
    }

    fn store(&self, txn: TxnHandle, oid: Oid, serial: Tid, data: &[u8]) -> Result<()> {
        self.check_store(txn, oid, serial)?;
        self.stage(txn, oid, Staged::record(serial, Some(data.to_vec()), true))
    }

    fn check_current_serial(&self, txn: TxnHandle, oid: Oid, serial: Tid) -> Result<()> {
        self.with_txn(txn, |_| Ok(()))?;
        let committed = self
            .committed_tid(oid)?
            .ok_or_else(|| StorageError::pos_key(oid))?;
        if committed != serial {
            return Err(StorageError::ReadConflict {
                oid,
                committed,
                old: serial,
            });
        }
        self.with_txn(txn, |p| {
            p.read_current.insert(oid, serial);
            Ok(())
        })
    }

    fn tpc_vote(&self, txn: TxnHandle) -> Result<Vec<Oid>> {
        self.check_open()?;
        let mut pending = self.lock();
        let p = match pending.as_mut() {
            Some(p) if p.handle == txn => p,
            _ => return Err(not_current()),
        };
        if p.voted {
            return Err(StorageError::Transaction("voted twice".into()));
        }
        let mut client = match p.conn.take() {
            Some(c) => c,
            None => self.take_store_conn()?,
        };
        let begin = format!(
            "BEGIN; SET LOCAL lock_timeout = '{}ms'",
            self.lock_timeout_ms
        );
        if let Err(e) = client.batch_execute(&begin) {
            // The kept connection died since the last commit (a database
            // restart): nothing was done on it yet, so a fresh one serves.
            if !crate::error::connection_lost(&e) {
                return Err(Error::Postgres(e).into());
            }
            drop(client);
            client = self.pool.connect()?;
            client.batch_execute(&begin).map_err(Error::Postgres)?;
        }
        let mut result = self.vote_in_db(&mut client, p);
        if result.is_ok() && self.shared_blobs && blobs::has_blobs(&p.staged) {
            // Blob files go into the shared directory under their tid now,
            // so that they are durable before COMMIT: the commit lock is
            // taken here and held until the finish (RelStorage's
            // shared-blob-dir does the same).
            result = self
                .lock_and_choose_tid(&mut client, p)
                .map_err(StorageError::from)
                .and_then(|chosen| {
                    p.voted_tid = Some(chosen);
                    blobs::place_shared(self.shared_dir()?, &mut p.staged, chosen.0)
                });
        }
        p.conn = Some(client);
        result?;
        p.voted = true;
        Ok(Vec::new())
    }

    fn tpc_finish(&self, txn: TxnHandle, on_commit: &mut dyn FnMut(Tid)) -> Result<Tid> {
        self.check_open()?;
        let mut pending = self.lock();
        match pending.as_ref() {
            Some(p) if p.handle == txn && p.voted => {}
            Some(p) if p.handle == txn => {
                return Err(StorageError::Transaction("finish without a vote".into()))
            }
            _ => return Err(not_current()),
        }
        let mut p = pending.take().expect("checked above");
        let mut client = p
            .conn
            .take()
            .expect("a voted transaction has its connection");
        let moved = self
            .move_rows(&mut client, &p)
            .map_err(StorageError::from)
            .and_then(|(tid, xid)| {
                if !self.shared_blobs {
                    blobs::move_staged(&mut client, self.mode, &p.staged, tid)?;
                }
                Ok((tid, xid))
            });
        let (tid, xid) = match moved {
            Ok(moved) => moved,
            Err(e) => {
                // Nothing was committed: roll back and stay in the
                // transaction, which the caller aborts.
                if p.voted_tid.is_some() {
                    blobs::remove_placed(&mut p.staged);
                }
                if client.batch_execute("ROLLBACK").is_ok() {
                    p.conn = None;
                    self.keep_store_conn(client);
                }
                p.voted = false;
                p.voted_tid = None;
                *pending = Some(p);
                return Err(e);
            }
        };
        let gate = self.gate.write().unwrap_or_else(|e| e.into_inner());
        let mut unknown = false;
        let committed = match client.batch_execute("COMMIT") {
            Ok(()) => {
                self.keep_store_conn(client);
                true
            }
            Err(e) if crate::error::connection_lost(&e) => {
                // The COMMIT may or may not have happened: ask.
                drop(client);
                match self.committed_after_all(xid) {
                    Ok(true) => true,
                    Ok(false) => false,
                    Err(check) => {
                        tracing::error!(%tid, error = %check,
                            "lost the connection during COMMIT and cannot tell whether it committed");
                        unknown = true;
                        false
                    }
                }
            }
            Err(_) => false,
        };
        if !committed {
            if unknown && self.shared_blobs {
                // The rows may have committed: their blob files stay.
                blobs::keep_placed(&mut p.staged);
            }
            drop(gate);
            drop(pending);
            self.lock_free.notify_one();
            return Err(StorageError::transient(Error::Unreachable {
                reason: format!("the connection was lost before {tid} committed"),
                retry_in: std::time::Duration::ZERO,
            }));
        }
        // Other writers' commits are visible at their COMMIT anyway: a
        // server orders what its clients see by the tid it announced
        // (`SharedCommits`), and its callback takes its publication lock,
        // which loads hold while they wait for this gate.
        drop(gate);
        on_commit(tid);
        self.last_tid.fetch_max(tid.0, Ordering::AcqRel);
        self.cache_committed_blobs(&mut p.staged, tid);
        self.remove_replaced_shared_blobs(&p.prev);
        let new = p.prev.values().filter(|t| **t == Tid::ZERO).count() as u64;
        self.objects.fetch_add(new, Ordering::Relaxed);
        let added: u64 = p
            .staged
            .values()
            .map(|s| s.data.as_ref().map_or(0, |d| d.len() as u64))
            .sum();
        self.bytes.fetch_add(added, Ordering::Relaxed);
        if let Some(max) = p.staged.keys().next_back() {
            if max.0 > self.max_oid.fetch_max(max.0, Ordering::AcqRel) {
                // Cached oids at or below a restored one are not fresh.
                self.oids
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .retain(|o| *o > max.0);
            }
        }
        drop(pending);
        self.lock_free.notify_one();
        Ok(tid)
    }

    fn tpc_abort(&self, txn: TxnHandle) {
        let pending = self.lock();
        if pending.as_ref().is_some_and(|p| p.handle == txn) {
            self.release(pending);
        }
    }

    fn as_undo(&self) -> Option<&dyn zeo_storage::Undo> {
        (self.mode == HistoryMode::Preserving).then_some(self as _)
    }

    fn as_external_gc(&self) -> Option<&dyn zeo_storage::ExternalGc> {
        (self.mode == HistoryMode::Preserving).then_some(self as _)
    }

    fn as_iteration(&self) -> Option<&dyn zeo_storage::Iteration> {
        (self.mode == HistoryMode::Preserving).then_some(self as _)
    }

    fn as_record_iteration(&self) -> Option<&dyn zeo_storage::RecordIteration> {
        Some(self)
    }

    fn as_restore(&self) -> Option<&dyn zeo_storage::Restore> {
        Some(self)
    }

    fn as_blobs(&self) -> Option<&dyn zeo_storage::Blobs> {
        self.blob_cache.as_ref().map(|_| self as _)
    }

    fn as_shared_commits(&self) -> Option<&dyn zeo_storage::SharedCommits> {
        Some(self)
    }

    fn as_pack(&self) -> Option<&dyn zeo_storage::Pack> {
        Some(self)
    }

    fn last_invalidations(&self, count: usize) -> Result<Vec<(Tid, Vec<Oid>)>> {
        if count == 0 {
            return Ok(Vec::new());
        }
        let mode = self.mode;
        self.read(|c| changes::newest_changes(c, mode, count))
    }

    fn close(&self) -> Result<()> {
        self.closed.store(true, Ordering::Release);
        let mut pending = self.lock();
        self.lock_free.notify_all();
        // A transaction still open in the database is rolled back by it
        // when its connection goes.
        let open_txn = pending.as_mut().and_then(|p| p.conn.take());
        drop(pending);
        let mut connections = self.connections(open_txn);
        connections.extend(self.listener.take());
        drop_off_runtime(connections);
        Ok(())
    }
}

impl Drop for PostgresStorage {
    fn drop(&mut self) {
        // Dropped without `close` (or on an async worker): the connections
        // must still not be closed on a runtime thread.
        let open_txn = self
            .pending
            .get_mut()
            .unwrap_or_else(|e| e.into_inner())
            .as_mut()
            .and_then(|p| p.conn.take());
        drop_off_runtime(self.connections(open_txn));
    }
}
