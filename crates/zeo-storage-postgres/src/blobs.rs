//! The blob capability: blobs live in the database as large objects
//! (`blob_chunk`, RelStorage's `shared-blob-dir false`), and `blob-dir`
//! caches the revisions loaded and holds uploads until they are sent.
//!
//! A transaction's blob files are uploaded at the vote, before any lock is
//! taken, into the connection's `temp_blob_chunk`; the finish moves them to
//! `blob_chunk` under the tid inside the same database transaction, so the
//! commit lock is held no longer for blobs. The uploaded files then become
//! the cache's copies. An undo shares the restored revision's large object.
//!
//! With `shared-blob-dir true` (RelStorage's shared mode) blobs live only
//! in `blob-dir`, a directory every server and RelStorage client of the
//! database shares, in ZODB's layout (bushy unless the directory says
//! otherwise); no `blob_chunk` rows are written, as RelStorage writes none.
//! A file's name holds its tid, so a transaction with blobs takes the
//! commit lock at its vote, chooses the tid, moves its files into place
//! and syncs them, all before COMMIT; an abort removes them.

use std::collections::BTreeMap;

use postgres::Client;
use zeo_storage::interface::Blobs;
use zeo_storage::{BlobData, BlobSource, Error as StorageError, Oid, Result, Tid, TxnHandle};

use crate::blob_chunk;
use crate::error::Error;
use crate::options::HistoryMode;
use crate::storage::{PostgresStorage, Staged, StagedBlob};
use zeo_storage::blobdir::BlobDir;

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

/// Opens a shared blob directory. Once it exists, without removing what
/// is in its `tmp` (other servers' uploads in progress).
pub(crate) fn open_shared_dir(dir: &std::path::Path) -> Result<BlobDir> {
    if !dir.join(".layout").is_file() {
        return BlobDir::open(dir, false);
    }
    let shared = BlobDir::open_read_only(dir)?;
    std::fs::create_dir_all(shared.tmp_dir()).map_err(|e| {
        StorageError::Storage(format!("creating {}: {e}", shared.tmp_dir().display()))
    })?;
    Ok(shared)
}

/// Whether the transaction writes a blob revision.
pub(crate) fn has_blobs(staged: &BTreeMap<Oid, Staged>) -> bool {
    staged.values().any(|s| !matches!(s.blob, StagedBlob::None))
}

/// Moves the staged blob files into the shared directory under `tid`
/// (an undo's shared revision is linked or copied) and syncs them. Each
/// placed file stays staged, so that an abort removes it.
pub(crate) fn place_shared(
    dir: &BlobDir,
    staged: &mut BTreeMap<Oid, Staged>,
    tid: Tid,
) -> Result<()> {
    let mut placed = Vec::new();
    for (oid, s) in staged.iter_mut() {
        let target = match &s.blob {
            StagedBlob::None => continue,
            StagedBlob::File(src) => dir.commit_file(src, *oid, tid)?,
            StagedBlob::SameAs(from) => dir.copy_revision(*oid, *from, tid)?,
        };
        s.blob = StagedBlob::File(target.clone());
        placed.push(target);
    }
    BlobDir::make_durable(&placed)
}

/// Removes the staged files now: placed ones before the commit lock is
/// released, so that they cannot take the name of a file another
/// committer places under the same tid afterwards.
pub(crate) fn remove_placed(staged: &mut BTreeMap<Oid, Staged>) {
    for s in staged.values_mut() {
        // Dropping a file staging removes its file.
        s.blob = StagedBlob::None;
    }
}

/// Leaves the staged files where they are when the staging goes.
pub(crate) fn keep_placed(staged: &mut BTreeMap<Oid, Staged>) {
    for s in staged.values_mut() {
        if let StagedBlob::File(path) = &mut s.blob {
            // An empty path names no file for the drop to remove.
            std::mem::take(path);
        }
    }
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
        if self.shared_blobs {
            // Placed at the vote: committed now.
            keep_placed(staged);
            return;
        }
        for (oid, s) in staged.iter_mut() {
            if let StagedBlob::File(path) = &s.blob {
                if let Err(e) = cache.commit_file(path, *oid, tid) {
                    tracing::debug!(%oid, %tid, error = %e, "blob not cached");
                }
            }
        }
    }

    /// After a history-free commit with a shared blob directory: the files
    /// of the revisions it replaced go, as their rows went (`prev`: each
    /// stored oid's revision before the commit).
    pub(crate) fn remove_replaced_shared_blobs(&self, prev: &BTreeMap<Oid, Tid>) {
        if self.history_mode() != HistoryMode::Free {
            return;
        }
        let Ok(dir) = self.shared_dir() else {
            return;
        };
        for (oid, tid) in prev.iter().filter(|(_, t)| **t != Tid::ZERO) {
            if let Err(e) = BlobDir::remove_committed(&dir.blob_path(*oid, *tid)) {
                tracing::warn!(%oid, %tid, error = %e, "replaced blob file not removed");
            }
        }
    }

    /// The shared blob directory.
    pub(crate) fn shared_dir(&self) -> Result<&BlobDir> {
        match &self.blob_cache {
            Some(dir) if self.shared_blobs => Ok(dir),
            _ => Err(StorageError::Storage("no shared blob directory".into())),
        }
    }

    /// Whether `oid` has a blob at `tid` in the shared directory.
    pub(crate) fn shared_blob_exists(&self, oid: Oid, tid: Tid) -> bool {
        self.shared_dir()
            .is_ok_and(|dir| dir.blob_path(oid, tid).is_file())
    }

    /// After a pack removed the revision `(oid, tid)`: its blob file goes
    /// (the cached copy, or in a shared directory the blob itself, as
    /// RelStorage's pack removes it). History-free: every file of the
    /// object, which the pack removed entirely.
    pub(crate) fn remove_packed_blob(&self, oid: Oid, tid: Tid) {
        let Some(dir) = &self.blob_cache else {
            return;
        };
        let files = match self.history_mode() {
            HistoryMode::Preserving => vec![dir.blob_path(oid, tid)],
            HistoryMode::Free => std::fs::read_dir(dir.oid_dir(oid))
                .map(|entries| entries.flatten().map(|e| e.path()).collect())
                .unwrap_or_default(),
        };
        for file in files {
            if file.extension().is_some_and(|e| e == "blob") {
                if let Err(e) = BlobDir::remove_committed(&file) {
                    tracing::warn!(%oid, %tid, error = %e, "packed blob file not removed");
                }
            }
        }
        // The object's directory goes once empty (a non-empty one stays).
        let _ = std::fs::remove_dir(dir.oid_dir(oid));
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

    fn oid_directory(&self, oid: Oid) -> Option<std::path::PathBuf> {
        // ZEO clients sharing the directory write their blobs here.
        self.shared_dir().ok().map(|dir| dir.oid_dir(oid))
    }

    fn load_blob(&self, oid: Oid, serial: Tid) -> Result<BlobData> {
        let cache = self.cache()?;
        if self.shared_blobs {
            // The shared directory is where blobs live: a file missing
            // there is missing everywhere.
            return Ok(BlobData::Path(cache.existing_blob(oid, serial)?));
        }
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
