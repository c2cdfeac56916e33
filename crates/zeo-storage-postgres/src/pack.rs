//! Pack with garbage collection computed here, on RelStorage 4's tables, so
//! that RelStorage and zeo-rs can take turns packing one database.
//!
//! # What survives (the same rows RelStorage's own pack keeps)
//!
//! The *pack tid* is the newest transaction at or before the pack point
//! (history-preserving: not yet packed; history-free: the newest
//! `object_state` tid). Nothing happens when there is none.
//!
//! History-preserving: every object with a revision at or before the pack
//! tid has one *kept* revision, its newest at or before it; older ones go.
//! With `gc`, an object is removed entirely (all its revisions up to the
//! pack tid) unless it is reachable from the roots: oid 0, objects changed
//! after the pack tid, and objects that revisions after the pack tid
//! reference. Reachability follows the references of every revision from
//! the kept one on. Without `gc`, only the newest revision of an object
//! whose newest revision is a deletion (state NULL) goes besides the old
//! revisions. Transactions left without rows are deleted, the others
//! marked `packed`; `prev_tid` pointers to packed transactions are reset.
//!
//! One deliberate difference: RelStorage 4.3 starts its walk from oid 0
//! alone (its other roots are marked in a transaction its walk does not
//! see yet), so what an object changed or referenced after the pack tid
//! references is collected unless oid 0 reaches it, leaving a kept object
//! with dangling references. The walk here starts from every root, so such
//! a pack keeps those objects too; in every other case the surviving rows
//! are RelStorage's.
//!
//! History-free: only with `gc`; every object not reachable from oid 0 and
//! the objects changed after the pack tid is deleted.
//!
//! A removed revision's `blob_chunk` row goes with it (its large object is
//! unlinked by the `blob_chunk_delete` trigger).
//!
//! # Bookkeeping RelStorage relies on
//!
//! References live in `object_ref`; `object_refs_added` says which
//! transactions (history-preserving) or object revisions (history-free)
//! have been analysed, so each pack only reads new pickles. Both are
//! filled and pruned here exactly as RelStorage expects, and the scratch
//! tables `pack_object`, `pack_state`, `pack_state_tid` are emptied at the
//! end. References are read with the pickle scanner FileStorage's pack
//! uses ([`zeo_storage::gc::record_references`]).
//!
//! # Locking and the API the storage calls
//!
//! [`pack`] takes RelStorage's pack lock (session advisory lock -2, tried,
//! not waited for: a second pack or an undo in progress makes it fail) on
//! the connection it is given, and releases it before returning. It does
//! not take the commit lock: commits go on while it runs, each of its
//! database transactions covering a bounded batch. Use a connection of its
//! own (the work is long and commits as it goes), and [`pack_point`] to
//! turn a pack time into the pack point. `on_removed` hears of every
//! removed revision, for cache and blob-cache cleanup.

use std::collections::{HashMap, HashSet};

use postgres::{Client, GenericClient, Transaction};
use zeo_storage::{Oid, Storage, Tid, TimeStamp};

use crate::options::HistoryMode;
use crate::storage::PostgresStorage;

use crate::PACK_LOCK;
/// RelStorage's largest tid (its `MAX_TID`): 2**63 - 1.
const MAX_TID: i64 = i64::MAX;
/// Transactions (history-preserving) analysed or packed per database
/// transaction.
const TID_BATCH: usize = 200;
/// Objects (history-free) analysed or removed per database transaction.
const OID_BATCH: usize = 1000;
/// Rows fetched per round trip when streaming pickles or references.
const FETCH: i32 = 500;
/// References buffered before they are written.
const REF_FLUSH: usize = 10_000;

/// What a pack did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct PackOutcome {
    /// The transaction packed to; `None` when there was nothing to pack.
    pub pack_tid: Option<Tid>,
    /// Object revisions removed.
    pub removed_states: u64,
}

fn db(e: postgres::Error) -> zeo_storage::Error {
    crate::Error::from(e).into()
}

/// Runs `statements` in one database transaction, rolled back on failure
/// (so the connection stays usable to release the pack lock).
fn in_transaction(client: &mut Client, statements: &str) -> zeo_storage::Result<()> {
    let mut tx = client.transaction().map_err(db)?;
    tx.batch_execute(statements).map_err(db)?;
    tx.commit().map_err(db)
}

/// The one `BIGINT` column of a query's rows.
fn ids(
    client: &mut impl GenericClient,
    sql: &str,
    params: &[&(dyn postgres::types::ToSql + Sync)],
) -> zeo_storage::Result<Vec<i64>> {
    Ok(client
        .query(sql, params)
        .map_err(db)?
        .iter()
        .map(|r| r.get(0))
        .collect())
}

/// The pack point for a pack time (Unix seconds), as RelStorage computes
/// it: a time at or after `now` means "everything committed".
pub fn pack_point(pack_time: f64, now: f64) -> Tid {
    if pack_time < 0.0 || pack_time >= now {
        Tid((MAX_TID - 1) as u64)
    } else {
        TimeStamp::from_unix(pack_time).tid()
    }
}

/// Packs the database to `pack_point` (see the module documentation),
/// holding the pack lock throughout.
///
/// # Errors
///
/// `StorageError` when a pack or undo holds the lock or a pickle cannot be
/// scanned for references; database failures. A failed pack leaves the
/// database as a consistent, partly packed one; the next pack finishes.
pub fn pack(
    client: &mut Client,
    mode: HistoryMode,
    pack_point: Tid,
    gc: bool,
    on_removed: &mut dyn FnMut(Oid, Tid),
) -> zeo_storage::Result<PackOutcome> {
    let locked: bool = client
        .query_one("SELECT pg_try_advisory_lock($1)", &[&PACK_LOCK])
        .map_err(db)?
        .get(0);
    if !locked {
        return Err(zeo_storage::Error::Storage(
            "a pack or undo operation is in progress".to_owned(),
        ));
    }
    let point = i64::try_from(pack_point.0).unwrap_or(MAX_TID);
    let result = choose_pack_tid(client, mode, point).and_then(|pack_tid| match pack_tid {
        None => Ok(PackOutcome::default()),
        Some(t) if mode == HistoryMode::Preserving => pack_preserving(client, t, gc, on_removed),
        Some(t) => pack_free(client, t, gc, on_removed),
    });
    // A broken connection has released the lock with its session.
    let unlocked = client.execute("SELECT pg_advisory_unlock($1)", &[&PACK_LOCK]);
    let outcome = result?;
    unlocked.map_err(db)?;
    Ok(outcome)
}

/// The newest transaction at or before `point` still to pack: not marked
/// packed (history-preserving), the newest revision (history-free).
fn choose_pack_tid(
    client: &mut Client,
    mode: HistoryMode,
    point: i64,
) -> zeo_storage::Result<Option<i64>> {
    let sql = match mode {
        HistoryMode::Preserving => {
            "SELECT max(tid) FROM transaction WHERE tid > 0 AND tid <= $1 AND NOT packed"
        }
        HistoryMode::Free => "SELECT max(tid) FROM object_state WHERE tid > 0 AND tid <= $1",
    };
    Ok(client.query_one(sql, &[&point]).map_err(db)?.get(0))
}

/// The storage's pack capability: a connection of its own for the pack's
/// duration, the pack time turned into a pack point by `pack_point`.
impl zeo_storage::Pack for PostgresStorage {
    fn pack(&self, pack_time: f64, gc: bool) -> zeo_storage::Result<()> {
        self.check_open()?;
        if self.is_read_only() {
            return Err(zeo_storage::Error::ReadOnly);
        }
        let mut client = self.pool.connect()?;
        let point = pack_point(pack_time, TimeStamp::now().unix_time());
        let outcome = pack(
            &mut client,
            self.history_mode(),
            point,
            gc,
            &mut |oid, tid| self.remove_packed_blob(oid, tid),
        )?;
        // len() and size() reflect what the pack removed.
        self.recount(&mut client)?;
        tracing::info!(
            storage = self.name(),
            pack_tid = ?outcome.pack_tid,
            removed = outcome.removed_states,
            "packed"
        );
        Ok(())
    }
}

fn pack_preserving(
    client: &mut Client,
    pack_tid: i64,
    gc: bool,
    on_removed: &mut dyn FnMut(Oid, Tid),
) -> zeo_storage::Result<PackOutcome> {
    if gc {
        analyse_transactions(client)?;
    }
    let mut tx = client.transaction().map_err(db)?;
    tx.execute("TRUNCATE pack_object", &[]).map_err(db)?;
    tx.execute(
        "INSERT INTO pack_object (zoid, keep, keep_tid)
         SELECT zoid, NOT $2, max(tid) FROM object_state
         WHERE tid > 0 AND tid <= $1 GROUP BY zoid",
        &[&pack_tid, &gc],
    )
    .map_err(db)?;
    tx.execute("UPDATE pack_object SET keep = true WHERE zoid = 0", &[])
        .map_err(db)?;
    if gc {
        // Objects changed after the pack tid, and what their revisions
        // reference, are roots.
        tx.execute(
            "UPDATE pack_object SET keep = true WHERE zoid IN (
                 SELECT zoid FROM current_object WHERE tid > $1)",
            &[&pack_tid],
        )
        .map_err(db)?;
        tx.execute(
            "UPDATE pack_object SET keep = true WHERE zoid IN (
                 SELECT to_zoid FROM object_ref WHERE tid > $1)",
            &[&pack_tid],
        )
        .map_err(db)?;
        mark_reachable(&mut tx)?;
    }
    tx.execute("TRUNCATE pack_state", &[]).map_err(db)?;
    if gc {
        tx.execute(
            "INSERT INTO pack_state (tid, zoid)
             SELECT o.tid, o.zoid FROM object_state o JOIN pack_object p USING (zoid)
             WHERE NOT p.keep AND o.tid > 0 AND o.tid <= $1",
            &[&pack_tid],
        )
        .map_err(db)?;
    } else {
        // Objects whose newest revision says they are gone (external GC).
        tx.execute(
            "INSERT INTO pack_state (tid, zoid)
             SELECT o.tid, o.zoid FROM object_state o
             WHERE o.state IS NULL
               AND o.tid = (SELECT max(i.tid) FROM object_state i WHERE i.zoid = o.zoid)
             ON CONFLICT DO NOTHING",
            &[],
        )
        .map_err(db)?;
    }
    tx.execute(
        "INSERT INTO pack_state (tid, zoid)
         SELECT o.tid, o.zoid FROM object_state o JOIN pack_object p USING (zoid)
         WHERE p.keep AND o.tid > 0 AND o.tid <> p.keep_tid AND o.tid <= $1
         ON CONFLICT DO NOTHING",
        &[&pack_tid],
    )
    .map_err(db)?;
    tx.execute("TRUNCATE pack_state_tid", &[]).map_err(db)?;
    tx.execute(
        "INSERT INTO pack_state_tid (tid) SELECT DISTINCT tid FROM pack_state",
        &[],
    )
    .map_err(db)?;
    tx.commit().map_err(db)?;

    let tids: Vec<(i64, bool)> = client
        .query(
            "SELECT t.tid, s.tid IS NOT NULL FROM transaction t
             LEFT JOIN pack_state_tid s USING (tid)
             WHERE t.tid > 0 AND t.tid <= $1 AND (NOT t.packed OR s.tid IS NOT NULL)
             ORDER BY t.tid",
            &[&pack_tid],
        )
        .map_err(db)?
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    let mut removed_states = 0;
    for batch in tids.chunks(TID_BATCH) {
        let all: Vec<i64> = batch.iter().map(|(t, _)| *t).collect();
        let removable: Vec<i64> = batch.iter().filter(|(_, r)| *r).map(|(t, _)| *t).collect();
        let mut tx = client.transaction().map_err(db)?;
        let mut removed = Vec::new();
        if !removable.is_empty() {
            for row in tx
                .query(
                    "SELECT zoid, tid FROM pack_state WHERE tid = ANY($1)",
                    &[&removable],
                )
                .map_err(db)?
            {
                removed.push((
                    Oid(row.get::<_, i64>(0) as u64),
                    Tid(row.get::<_, i64>(1) as u64),
                ));
            }
            for table in ["current_object", "blob_chunk", "object_state"] {
                let n = tx
                    .execute(
                        &format!(
                            "DELETE FROM {table} d USING pack_state p
                             WHERE p.tid = ANY($1) AND d.zoid = p.zoid AND d.tid = p.tid"
                        ),
                        &[&removable],
                    )
                    .map_err(db)?;
                if table == "object_state" {
                    removed_states += n;
                }
            }
            tx.execute(
                "UPDATE object_state SET prev_tid = 0 WHERE prev_tid = ANY($1) AND tid <= $2",
                &[&removable, &pack_tid],
            )
            .map_err(db)?;
        }
        tx.execute(
            "UPDATE transaction t SET packed = true,
                 is_empty = NOT EXISTS (SELECT 1 FROM object_state o WHERE o.tid = t.tid)
             WHERE t.tid = ANY($1)",
            &[&all],
        )
        .map_err(db)?;
        tx.commit().map_err(db)?;
        for (oid, tid) in removed {
            on_removed(oid, tid);
        }
    }

    in_transaction(
        client,
        "DELETE FROM object_refs_added
                 WHERE tid IN (SELECT tid FROM transaction WHERE is_empty);
             DELETE FROM object_ref
                 WHERE tid IN (SELECT tid FROM transaction WHERE is_empty);
             DELETE FROM transaction WHERE packed AND is_empty;
             TRUNCATE pack_object, pack_state, pack_state_tid;",
    )?;
    Ok(PackOutcome {
        pack_tid: Some(Tid(pack_tid as u64)),
        removed_states,
    })
}

/// Records the references of every transaction not analysed yet
/// (`object_refs_added` keyed by tid), a batch of transactions per
/// database transaction, pickles streamed.
fn analyse_transactions(client: &mut Client) -> zeo_storage::Result<()> {
    let tids = ids(
        client,
        "SELECT t.tid FROM transaction t
         WHERE NOT EXISTS (SELECT 1 FROM object_refs_added a WHERE a.tid = t.tid)
         ORDER BY t.tid",
        &[],
    )?;
    for batch in tids.chunks(TID_BATCH) {
        let mut tx = client.transaction().map_err(db)?;
        tx.execute("DELETE FROM object_ref WHERE tid = ANY($1)", &[&batch])
            .map_err(db)?;
        record_references(
            &mut tx,
            "SELECT zoid, tid, state FROM object_state WHERE tid = ANY($1) ORDER BY tid, zoid",
            batch,
        )?;
        tx.execute(
            "INSERT INTO object_refs_added (tid) SELECT unnest($1::BIGINT[])
             ON CONFLICT DO NOTHING",
            &[&batch],
        )
        .map_err(db)?;
        tx.commit().map_err(db)?;
    }
    Ok(())
}

/// Writes to `object_ref` the references of the `(zoid, tid, state)` rows
/// `select` finds for `batch`, streaming the pickles.
fn record_references(
    tx: &mut Transaction<'_>,
    select: &str,
    batch: &[i64],
) -> zeo_storage::Result<()> {
    let portal = tx.bind(select, &[&batch]).map_err(db)?;
    let mut refs = RefBuffer::default();
    loop {
        let rows = tx.query_portal(&portal, FETCH).map_err(db)?;
        for row in &rows {
            let (zoid, tid): (i64, i64) = (row.get(0), row.get(1));
            let state: Option<&[u8]> = row.get(2);
            let Some(state) = state.filter(|s| !s.is_empty()) else {
                continue;
            };
            let mut to = zeo_storage::gc::record_references(state).map_err(|e| {
                zeo_storage::Error::Storage(format!(
                    "pack: cannot scan {} at {} for references: {e}",
                    Oid(zoid as u64),
                    Tid(tid as u64)
                ))
            })?;
            to.sort_unstable();
            to.dedup();
            for oid in to {
                refs.push(zoid, tid, oid.0 as i64);
            }
            if refs.zoids.len() >= REF_FLUSH {
                refs.flush(tx)?;
            }
        }
        if rows.len() < FETCH as usize {
            return refs.flush(tx);
        }
    }
}

/// `object_ref` rows waiting to be written.
#[derive(Default)]
struct RefBuffer {
    zoids: Vec<i64>,
    tids: Vec<i64>,
    to_zoids: Vec<i64>,
}

impl RefBuffer {
    fn push(&mut self, zoid: i64, tid: i64, to_zoid: i64) {
        self.zoids.push(zoid);
        self.tids.push(tid);
        self.to_zoids.push(to_zoid);
    }

    fn flush(&mut self, tx: &mut impl GenericClient) -> zeo_storage::Result<()> {
        if !self.zoids.is_empty() {
            tx.execute(
                "INSERT INTO object_ref (zoid, tid, to_zoid)
                 SELECT * FROM unnest($1::BIGINT[], $2::BIGINT[], $3::BIGINT[])
                 ON CONFLICT DO NOTHING",
                &[&self.zoids, &self.tids, &self.to_zoids],
            )
            .map_err(db)?;
        }
        self.zoids.clear();
        self.tids.clear();
        self.to_zoids.clear();
        Ok(())
    }
}

/// Marks `keep` every `pack_object` reachable from the ones marked, along
/// the references of revisions from each object's kept one on. The graph
/// is held in memory (one entry per reference), as RelStorage's is; the
/// walk is iterative.
fn mark_reachable(tx: &mut Transaction<'_>) -> zeo_storage::Result<()> {
    let mut edges: HashMap<i64, Vec<i64>> = HashMap::new();
    let portal = tx
        .bind(
            "SELECT r.zoid, r.to_zoid FROM object_ref r JOIN pack_object p USING (zoid)
             WHERE r.tid >= p.keep_tid",
            &[],
        )
        .map_err(db)?;
    loop {
        let rows = tx.query_portal(&portal, FETCH * 20).map_err(db)?;
        for row in &rows {
            edges.entry(row.get(0)).or_default().push(row.get(1));
        }
        if rows.len() < (FETCH * 20) as usize {
            break;
        }
    }
    let mut todo = ids(tx, "SELECT zoid FROM pack_object WHERE keep", &[])?;
    let mut reached: HashSet<i64> = todo.iter().copied().collect();
    while let Some(zoid) = todo.pop() {
        for to in edges.remove(&zoid).unwrap_or_default() {
            if reached.insert(to) {
                todo.push(to);
            }
        }
    }
    drop(edges);
    let reached: Vec<i64> = reached.into_iter().collect();
    for batch in reached.chunks(REF_FLUSH) {
        tx.execute(
            "UPDATE pack_object SET keep = true, visited = true WHERE zoid = ANY($1)",
            &[&batch],
        )
        .map_err(db)?;
    }
    Ok(())
}

fn pack_free(
    client: &mut Client,
    pack_tid: i64,
    gc: bool,
    on_removed: &mut dyn FnMut(Oid, Tid),
) -> zeo_storage::Result<PackOutcome> {
    if !gc {
        // Without history there is nothing else to remove.
        return Ok(PackOutcome {
            pack_tid: Some(Tid(pack_tid as u64)),
            removed_states: 0,
        });
    }
    client.execute("TRUNCATE pack_object", &[]).map_err(db)?;
    client
        .execute(
            "INSERT INTO pack_object (zoid, keep, keep_tid)
             SELECT zoid, tid > $1, tid FROM object_state",
            &[&pack_tid],
        )
        .map_err(db)?;
    client
        .execute("UPDATE pack_object SET keep = true WHERE zoid = 0", &[])
        .map_err(db)?;
    analyse_objects(client)?;
    let mut tx = client.transaction().map_err(db)?;
    mark_reachable(&mut tx)?;
    tx.commit().map_err(db)?;

    let doomed: Vec<i64> = client
        .query(
            "SELECT zoid FROM pack_object WHERE NOT keep ORDER BY zoid",
            &[],
        )
        .map_err(db)?
        .iter()
        .map(|r| r.get(0))
        .collect();
    let mut removed_states = 0;
    for batch in doomed.chunks(OID_BATCH) {
        let mut tx = client.transaction().map_err(db)?;
        // Only the revision judged unreachable: an object changed since
        // (a commit racing the pack) stays.
        tx.execute(
            "DELETE FROM blob_chunk b USING pack_object p
             WHERE p.zoid = ANY($1) AND b.zoid = p.zoid AND b.tid = p.keep_tid",
            &[&batch],
        )
        .map_err(db)?;
        let rows = tx
            .query(
                "DELETE FROM object_state o USING pack_object p
                 WHERE p.zoid = ANY($1) AND o.zoid = p.zoid AND o.tid = p.keep_tid
                 RETURNING o.zoid, o.tid",
                &[&batch],
            )
            .map_err(db)?;
        tx.commit().map_err(db)?;
        removed_states += rows.len() as u64;
        for row in rows {
            on_removed(
                Oid(row.get::<_, i64>(0) as u64),
                Tid(row.get::<_, i64>(1) as u64),
            );
        }
    }
    in_transaction(
        client,
        "DELETE FROM object_refs_added
                 WHERE zoid IN (SELECT zoid FROM pack_object WHERE NOT keep);
             DELETE FROM object_ref
                 WHERE zoid IN (SELECT zoid FROM pack_object WHERE NOT keep);
             TRUNCATE pack_object;",
    )?;
    Ok(PackOutcome {
        pack_tid: Some(Tid(pack_tid as u64)),
        removed_states,
    })
}

/// Records the references of every object whose current revision has not
/// been analysed (`object_refs_added` keyed by oid, naming the tid read).
fn analyse_objects(client: &mut Client) -> zeo_storage::Result<()> {
    let oids = ids(
        client,
        "SELECT p.zoid FROM pack_object p JOIN object_state o USING (zoid)
         LEFT JOIN object_refs_added a USING (zoid)
         WHERE a.tid IS NULL OR a.tid <> o.tid
         ORDER BY p.zoid",
        &[],
    )?;
    for batch in oids.chunks(OID_BATCH) {
        let mut tx = client.transaction().map_err(db)?;
        tx.execute("DELETE FROM object_ref WHERE zoid = ANY($1)", &[&batch])
            .map_err(db)?;
        tx.execute(
            "DELETE FROM object_refs_added WHERE zoid = ANY($1)",
            &[&batch],
        )
        .map_err(db)?;
        tx.execute(
            "INSERT INTO object_refs_added (zoid, tid)
             SELECT zoid, tid FROM object_state WHERE zoid = ANY($1)",
            &[&batch],
        )
        .map_err(db)?;
        record_references(
            &mut tx,
            "SELECT zoid, tid, state FROM object_state WHERE zoid = ANY($1) ORDER BY zoid",
            batch,
        )?;
        tx.commit().map_err(db)?;
    }
    Ok(())
}
