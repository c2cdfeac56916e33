//! The blob capability: blobs live in the database as large objects
//! (`blob_chunk`, RelStorage's `shared-blob-dir false`), and `blob-dir`
//! caches the revisions loaded and holds uploads until they are sent.
//!
//! A transaction's blob files are uploaded at the vote, before any lock is
//! taken, into the connection's `temp_blob_chunk`; the finish moves them to
//! `blob_chunk` under the tid inside the same database transaction, so the
//! commit lock is held no longer for blobs. The uploaded files then become
//! the cache's copies. An undo shares the restored revision's large object.

use std::collections::BTreeMap;

use postgres::Client;
use zeo_storage::interface::Blobs;
use zeo_storage::{BlobData, BlobSource, Error as StorageError, Oid, Result, Tid, TxnHandle};

use crate::blob_chunk;
use crate::error::Error;
use crate::options::HistoryMode;
use crate::storage::{PostgresStorage, Staged, StagedBlob};

/// Uploads the staged blob files into the connection's temporary table.
pub(crate) fn upload_staged(client: &mut Client, staged: &BTreeMap<Oid, Staged>) -> Result<()> {
    let mut files = staged.iter().filter_map(|(oid, s)| match &s.blob {
        StagedBlob::File(path) => Some((*oid, path)),
        _ => None,
    });
    let Some(first) = files.next() else {
        return Ok(());
    };
    blob_chunk::ensure_temp_table(client)?;
    for (oid, path) in std::iter::once(first).chain(files) {
        blob_chunk::upload_temp_file(client, oid, path)?;
    }
    Ok(())
}

/// Files the staged blobs under `tid`, after the transaction's rows.
pub(crate) fn move_staged(
    client: &mut Client,
    mode: HistoryMode,
    staged: &BTreeMap<Oid, Staged>,
    tid: Tid,
) -> Result<()> {
    if staged
        .values()
        .any(|s| matches!(s.blob, StagedBlob::File(_)))
    {
        let stored: Vec<Oid> = staged.keys().copied().collect();
        blob_chunk::move_temp_to_committed(client, mode, tid, &stored)?;
    }
    let (oids, from): (Vec<i64>, Vec<i64>) = staged
        .iter()
        .filter_map(|(oid, s)| match s.blob {
            StagedBlob::SameAs(from) => Some((oid.0 as i64, from.0 as i64)),
            _ => None,
        })
        .unzip();
    if !oids.is_empty() {
        client
            .execute(
                "INSERT INTO blob_chunk (zoid, tid, chunk_num, chunk) \
                 SELECT b.zoid, $1, b.chunk_num, b.chunk FROM blob_chunk b \
                 JOIN unnest($2::bigint[], $3::bigint[]) AS u(z, t) \
                   ON b.zoid = u.z AND b.tid = u.t",
                &[&(tid.0 as i64), &oids, &from],
            )
            .map_err(|e| StorageError::from(Error::Postgres(e)))?;
    }
    Ok(())
}

impl PostgresStorage {
    /// After a commit: the uploaded files become the cache's copies of the
    /// new revisions (a file that cannot be moved is just removed).
    pub(crate) fn cache_committed_blobs(&self, staged: &mut BTreeMap<Oid, Staged>, tid: Tid) {
        let Some(cache) = &self.blob_cache else {
            return;
        };
        for (oid, s) in staged.iter_mut() {
            if let StagedBlob::File(path) = &s.blob {
                if let Err(e) = cache.commit_file(path, *oid, tid) {
                    tracing::debug!(%oid, %tid, error = %e, "blob not cached");
                }
            }
        }
    }

    fn cache(&self) -> Result<&zeo_storage::blobdir::BlobDir> {
        self.blob_cache
            .as_ref()
            .ok_or(StorageError::Unsupported("blobs (no blob-dir)"))
    }

    /// Stages a revision with a blob file the storage now owns.
    fn stage_blob(
        &self,
        txn: TxnHandle,
        oid: Oid,
        serial: Tid,
        data: Option<&[u8]>,
        blob: BlobSource,
        checked: bool,
    ) -> Result<()> {
        let file = StagedBlob::File(self.cache()?.source_file(blob)?);
        if checked {
            // On a conflict the file is dropped (removed) with `file`.
            self.check_store(txn, oid, serial)?;
        }
        let mut revision = Staged::record(serial, data.map(<[u8]>::to_vec), checked);
        revision.blob = file;
        self.stage(txn, oid, revision)
    }
}

impl Blobs for PostgresStorage {
    fn temporary_directory(&self) -> &std::path::Path {
        match &self.blob_cache {
            Some(cache) => cache.tmp_dir(),
            // Not reached: without a cache the capability is not offered.
            None => std::path::Path::new("."),
        }
    }

    fn store_blob(
        &self,
        txn: TxnHandle,
        oid: Oid,
        serial: Tid,
        data: &[u8],
        blob: BlobSource,
    ) -> Result<()> {
        self.stage_blob(txn, oid, serial, Some(data), blob, true)
    }

    fn load_blob(&self, oid: Oid, serial: Tid) -> Result<BlobData> {
        let cache = self.cache()?;
        let path = cache.blob_path(oid, serial);
        if path.is_file() {
            // A pack may have removed the revision since it was cached.
            let chunks = self.read(|c| Ok(blob_chunk::chunks_of(c, oid, serial)));
            return match chunks.and_then(|c| c) {
                Ok(_) => Ok(BlobData::Path(path)),
                Err(e) => {
                    if e.is_pos_key() {
                        let _ = std::fs::remove_file(&path);
                    }
                    Err(e)
                }
            };
        }
        let (_, tmp) = cache.new_temporary()?;
        let fetched = self.read(|c| {
            // One snapshot for the chunk list and the bytes.
            let mut txn = c
                .build_transaction()
                .isolation_level(postgres::IsolationLevel::RepeatableRead)
                .read_only(true)
                .start()?;
            let got = blob_chunk::download_to_file(&mut txn, oid, serial, &tmp);
            txn.commit()?;
            Ok(got)
        });
        match fetched.and_then(|got| got) {
            Ok(_) => Ok(BlobData::Path(cache.commit_file(&tmp, oid, serial)?)),
            Err(e) => {
                let _ = std::fs::remove_file(&tmp);
                Err(e)
            }
        }
    }

    fn restore_blob(
        &self,
        txn: TxnHandle,
        oid: Oid,
        serial: Tid,
        data: Option<&[u8]>,
        blob: Option<BlobSource>,
    ) -> Result<()> {
        match blob {
            Some(blob) => self.stage_blob(txn, oid, serial, data, blob, false),
            None => self.stage(
                txn,
                oid,
                Staged::record(serial, data.map(<[u8]>::to_vec), false),
            ),
        }
    }
}
