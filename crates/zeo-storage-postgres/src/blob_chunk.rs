//! Blobs stored in the database: one `blob_chunk` row per blob revision,
//! naming a PostgreSQL large object that holds the blob's bytes, as
//! RelStorage 4 keeps them (`shared-blob-dir false`).
//!
//! # Tables
//!
//! * `blob_chunk (zoid, tid, chunk_num, chunk)`: committed blobs. RelStorage
//!   4 writes one chunk per blob (`chunk_num` 0); older databases may hold
//!   several, which are read in `chunk_num` order. In history-preserving
//!   mode the key is `(zoid, tid, chunk_num)`, in history-free mode
//!   `(zoid, chunk_num)`; both reference `object_state` with
//!   `ON DELETE CASCADE`, so a removed object revision takes its blob row
//!   with it.
//! * `temp_blob_chunk (zoid, chunk_num, chunk)`: a per-connection temporary
//!   table (emptied at every COMMIT) holding the blobs a transaction stored
//!   before its tid is known.
//! * The large objects themselves are unlinked when their last
//!   `blob_chunk` row goes, by a `BEFORE DELETE` row trigger named
//!   `blob_chunk_delete` (the name RelStorage looks for, so it does not
//!   install its own). Databases RelStorage created use RelStorage's trigger
//!   function; databases zeo-rs creates use [`UNLINK_FUNCTION_SQL`] and
//!   [`UNLINK_TRIGGER_SQL`], which the schema creation runs.
//!
//! # The API the storage calls
//!
//! Every function takes any [`GenericClient`] (a `Client` or a
//! `Transaction`) and returns the storage contract's errors.
//!
//! * Once per store connection: [`ensure_temp_table`].
//! * While a transaction stores: [`upload_temp`] / [`upload_temp_file`]
//!   (a second store of the same oid replaces the first and frees its large
//!   object).
//! * At commit, after the transaction's `object_state` rows are in place
//!   (the foreign key needs them) and inside the same database transaction:
//!   [`move_temp_to_committed`]. On abort nothing is needed: the rollback
//!   takes the large objects created since BEGIN with it.
//! * Restore and copy with an explicit tid: [`upload_committed`].
//! * Loads: [`chunks_of`] for POSKeyError semantics, [`download`] and
//!   [`download_to_file`] to stream the bytes out. Call them inside one
//!   transaction (REPEATABLE READ) to read a consistent snapshot.
//!
//! Bytes move in pieces of at most [`IO_CHUNK`] through `lo_put` and
//! `lo_get`, so a blob is never whole in memory on either side.

use std::fs::{self, File};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use postgres::GenericClient;
use zeo_storage::{Oid, Tid};

use crate::options::HistoryMode;

/// The most bytes one `lo_put` or `lo_get` moves.
pub const IO_CHUNK: usize = 1 << 20;

/// Chunks one blob revision may have: RelStorage 4 writes one; databases
/// from RelStorage 2 had one per `blob-chunk-size` (1 MiB by default), so
/// this allows blobs of a few terabytes written that way while bounding
/// what a damaged table can make us hold.
const MAX_CHUNKS: i64 = 1 << 22;

/// The trigger function zeo-rs installs when it creates the schema: unlinks
/// a deleted `blob_chunk` row's large object unless another row still
/// names it (undo in history-preserving mode copies rows, sharing the
/// object). Rows deleted earlier in the same statement are already
/// invisible to the query, so the last row of a shared object unlinks it.
pub const UNLINK_FUNCTION_SQL: &str = "
CREATE OR REPLACE FUNCTION zeo_blob_chunk_unlink() RETURNS trigger
LANGUAGE plpgsql AS $zeo_unlink$
BEGIN
    IF NOT EXISTS (
        SELECT 1 FROM blob_chunk other
        WHERE other.chunk = OLD.chunk
          AND (other.zoid, other.tid, other.chunk_num)
              IS DISTINCT FROM (OLD.zoid, OLD.tid, OLD.chunk_num)
    ) AND EXISTS (
        SELECT 1 FROM pg_catalog.pg_largeobject_metadata lo
        WHERE lo.oid = OLD.chunk
    ) THEN
        PERFORM lo_unlink(OLD.chunk);
    END IF;
    RETURN OLD;
END
$zeo_unlink$";

/// Installs [`UNLINK_FUNCTION_SQL`] on `blob_chunk` under the trigger name
/// RelStorage checks for.
pub const UNLINK_TRIGGER_SQL: &str = "
CREATE TRIGGER blob_chunk_delete
    BEFORE DELETE ON blob_chunk
    FOR EACH ROW EXECUTE FUNCTION zeo_blob_chunk_unlink()";

/// The transaction's staged blobs. `ON COMMIT DELETE ROWS` clears it at
/// every commit; the rows have been moved by then.
const TEMP_TABLE_SQL: &str = "
CREATE TEMPORARY TABLE IF NOT EXISTS temp_blob_chunk (
    zoid      BIGINT NOT NULL,
    chunk_num BIGINT NOT NULL,
    chunk     OID,
    PRIMARY KEY (zoid, chunk_num)
) ON COMMIT DELETE ROWS";

fn db(e: postgres::Error) -> zeo_storage::Error {
    crate::Error::from(e).into()
}

/// Oids and tids are unsigned in zeo-rs and `BIGINT` in the schema.
fn int8(id: u64) -> i64 {
    id as i64
}

/// Creates the connection's `temp_blob_chunk` table when absent.
pub fn ensure_temp_table(client: &mut impl GenericClient) -> zeo_storage::Result<()> {
    client.batch_execute(TEMP_TABLE_SQL).map_err(db)
}

/// Copies `reader` into a new large object, `IO_CHUNK` bytes at a time;
/// returns its id and the byte count.
fn write_large_object(
    client: &mut impl GenericClient,
    reader: &mut dyn Read,
) -> zeo_storage::Result<(u32, u64)> {
    let loid: u32 = client
        .query_one("SELECT lo_create(0)", &[])
        .map_err(db)?
        .get(0);
    let mut buf = vec![0u8; IO_CHUNK];
    let mut offset: u64 = 0;
    loop {
        let filled = fill(reader, &mut buf)
            .map_err(|e| zeo_storage::Error::io("reading a blob to upload", e))?;
        if filled == 0 {
            break;
        }
        client
            .execute(
                "SELECT lo_put($1, $2, $3)",
                &[&loid, &int8(offset), &&buf[..filled]],
            )
            .map_err(db)?;
        offset += filled as u64;
        if filled < buf.len() {
            break;
        }
    }
    Ok((loid, offset))
}

/// Reads until `buf` is full or the reader ends.
fn fill(reader: &mut dyn Read, buf: &mut [u8]) -> io::Result<usize> {
    let mut filled = 0;
    while filled < buf.len() {
        match reader.read(&mut buf[filled..]) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(filled)
}

/// Stages `oid`'s blob for the current transaction; returns its size.
/// A blob staged earlier for `oid` is replaced and its large object freed.
pub fn upload_temp(
    client: &mut impl GenericClient,
    oid: Oid,
    reader: &mut dyn Read,
) -> zeo_storage::Result<u64> {
    discard_temp(client, Some(oid))?;
    let (loid, size) = write_large_object(client, reader)?;
    client
        .execute(
            "INSERT INTO temp_blob_chunk (zoid, chunk_num, chunk) VALUES ($1, 0, $2)",
            &[&int8(oid.0), &loid],
        )
        .map_err(db)?;
    Ok(size)
}

/// [`upload_temp`] from a file.
pub fn upload_temp_file(
    client: &mut impl GenericClient,
    oid: Oid,
    path: &Path,
) -> zeo_storage::Result<u64> {
    let mut file = File::open(path)
        .map_err(|e| zeo_storage::Error::io(format!("opening blob {}", path.display()), e))?;
    upload_temp(client, oid, &mut file)
}

/// Drops staged blobs (of `oid`, or all) and unlinks their large objects.
/// Needed only when a transaction goes on after dropping a store; an
/// aborted database transaction takes its large objects with it.
pub fn discard_temp(client: &mut impl GenericClient, oid: Option<Oid>) -> zeo_storage::Result<()> {
    let zoid = oid.map(|o| int8(o.0));
    // A staged object is never named by blob_chunk, but an unlink of one
    // that is would lose a committed blob: check rather than trust.
    client
        .execute(
            "WITH gone AS (
                DELETE FROM temp_blob_chunk
                WHERE $1::BIGINT IS NULL OR zoid = $1
                RETURNING chunk
            )
            SELECT lo_unlink(g.chunk) FROM gone g
            WHERE g.chunk IS NOT NULL
              AND NOT EXISTS (SELECT 1 FROM blob_chunk b WHERE b.chunk = g.chunk)",
            &[&zoid],
        )
        .map_err(db)?;
    Ok(())
}

/// Moves the staged blobs to `blob_chunk` under `tid`; returns how many.
/// `stored` lists every object the transaction stored, blob or not: in
/// history-free mode their previous blob rows go first (the trigger
/// unlinks the large objects), since a history-free object keeps no
/// older revision for a blob to belong to.
pub fn move_temp_to_committed(
    client: &mut impl GenericClient,
    mode: HistoryMode,
    tid: Tid,
    stored: &[Oid],
) -> zeo_storage::Result<u64> {
    if mode == HistoryMode::Free {
        let zoids: Vec<i64> = stored.iter().map(|o| int8(o.0)).collect();
        client
            .execute(
                "DELETE FROM blob_chunk
                 WHERE zoid = ANY($1) OR zoid IN (SELECT zoid FROM temp_blob_chunk)",
                &[&zoids],
            )
            .map_err(db)?;
    }
    let moved = client
        .execute(
            "INSERT INTO blob_chunk (zoid, tid, chunk_num, chunk)
             SELECT zoid, $1, chunk_num, chunk FROM temp_blob_chunk",
            &[&int8(tid.0)],
        )
        .map_err(db)?;
    // No trigger on the temporary table: its objects now belong to
    // blob_chunk and must stay.
    client
        .execute("DELETE FROM temp_blob_chunk", &[])
        .map_err(db)?;
    Ok(moved)
}

/// Stores `oid`'s blob directly under `tid` (restore, copy), replacing a
/// blob already stored there. The `object_state` row must exist.
pub fn upload_committed(
    client: &mut impl GenericClient,
    mode: HistoryMode,
    oid: Oid,
    tid: Tid,
    reader: &mut dyn Read,
) -> zeo_storage::Result<u64> {
    match mode {
        HistoryMode::Preserving => client.execute(
            "DELETE FROM blob_chunk WHERE zoid = $1 AND tid = $2",
            &[&int8(oid.0), &int8(tid.0)],
        ),
        HistoryMode::Free => {
            client.execute("DELETE FROM blob_chunk WHERE zoid = $1", &[&int8(oid.0)])
        }
    }
    .map_err(db)?;
    let (loid, size) = write_large_object(client, reader)?;
    client
        .execute(
            "INSERT INTO blob_chunk (zoid, tid, chunk_num, chunk) VALUES ($1, $2, 0, $3)",
            &[&int8(oid.0), &int8(tid.0), &loid],
        )
        .map_err(db)?;
    Ok(size)
}

/// The large objects holding the blob of `oid` at `tid`, in order;
/// `POSKeyError` when that revision has no blob.
pub fn chunks_of(
    client: &mut impl GenericClient,
    oid: Oid,
    tid: Tid,
) -> zeo_storage::Result<Vec<u32>> {
    let rows = client
        .query(
            "SELECT chunk FROM blob_chunk WHERE zoid = $1 AND tid = $2
             ORDER BY chunk_num LIMIT $3",
            &[&int8(oid.0), &int8(tid.0), &(MAX_CHUNKS + 1)],
        )
        .map_err(db)?;
    if rows.is_empty() {
        return Err(zeo_storage::Error::PosKey {
            oid,
            serial: Some(tid),
        });
    }
    if rows.len() as i64 > MAX_CHUNKS {
        return Err(zeo_storage::Error::Storage(format!(
            "blob of {oid} at {tid} has more than {MAX_CHUNKS} chunks"
        )));
    }
    Ok(rows.iter().map(|r| r.get(0)).collect())
}

/// Streams the blob of `oid` at `tid` into `out`, `IO_CHUNK` bytes per
/// round trip; returns its size. `POSKeyError` when there is none.
pub fn download(
    client: &mut impl GenericClient,
    oid: Oid,
    tid: Tid,
    out: &mut dyn Write,
) -> zeo_storage::Result<u64> {
    let chunks = chunks_of(client, oid, tid)?;
    let mut total: u64 = 0;
    for loid in chunks {
        let mut offset: u64 = 0;
        loop {
            let piece: Vec<u8> = client
                .query_one(
                    "SELECT lo_get($1, $2, $3)",
                    &[&loid, &int8(offset), &(IO_CHUNK as i32)],
                )
                .map_err(db)?
                .get(0);
            if piece.len() > IO_CHUNK {
                return Err(zeo_storage::Error::Storage(format!(
                    "large object {loid} answered {} bytes for {IO_CHUNK}",
                    piece.len()
                )));
            }
            out.write_all(&piece)
                .map_err(|e| zeo_storage::Error::io("writing a downloaded blob", e))?;
            offset += piece.len() as u64;
            if piece.len() < IO_CHUNK {
                break;
            }
        }
        total += offset;
    }
    Ok(total)
}

static PARTIAL: AtomicU64 = AtomicU64::new(0);

/// [`download`] into the file `path`: written beside it under a private
/// name, synced, then renamed, so `path` never shows a partial blob.
pub fn download_to_file(
    client: &mut impl GenericClient,
    oid: Oid,
    tid: Tid,
    path: &Path,
) -> zeo_storage::Result<u64> {
    let partial = partial_name(path);
    let result = (|| {
        let mut file = io::BufWriter::with_capacity(
            64 * 1024,
            File::create(&partial).map_err(|e| {
                zeo_storage::Error::io(format!("creating {}", partial.display()), e)
            })?,
        );
        let size = download(client, oid, tid, &mut file)?;
        let file = file.into_inner().map_err(|e| {
            zeo_storage::Error::io(format!("writing {}", partial.display()), e.into_error())
        })?;
        file.sync_all()
            .map_err(|e| zeo_storage::Error::io(format!("syncing {}", partial.display()), e))?;
        fs::rename(&partial, path)
            .map_err(|e| zeo_storage::Error::io(format!("renaming into {}", path.display()), e))?;
        Ok(size)
    })();
    if result.is_err() {
        let _ = fs::remove_file(&partial);
    }
    result
}

fn partial_name(path: &Path) -> PathBuf {
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(format!(
        ".{}-{}.partial",
        std::process::id(),
        PARTIAL.fetch_add(1, Ordering::Relaxed)
    ));
    path.with_file_name(name)
}
