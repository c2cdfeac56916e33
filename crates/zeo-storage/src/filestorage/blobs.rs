//! FileStorage's blob support (`FileStorage(blob_dir=…)`): revisions'
//! files in a [`BlobDir`] beside `Data.fs`.
//!
//! A stored blob is moved into place under the transaction's tid at once,
//! as ZODB does; the vote syncs every such file and its directory before
//! the transaction's records are written to `Data.fs`, so a record that a
//! finished commit made durable never names a file that a power loss can
//! take back. An abort (or a close with the transaction still open)
//! removes the files; a crash before finish leaves files no record names,
//! which pack's cleanup of unreferenced revisions ignores and which are
//! harmless to readers.

use std::path::{Path, PathBuf};
use std::sync::Mutex;

use crate::blobdir::BlobDir;
use crate::error::{Error, Result};
use crate::ids::{Oid, Tid};
use crate::interface::{BlobData, BlobSource, Blobs, TxnHandle};

use super::{lock, FileStorage};

/// The blob directory and the files the open transaction put in it.
pub(crate) struct BlobState {
    pub(crate) dir: BlobDir,
    staged: Mutex<StagedBlobs>,
}

/// Files moved into place by one transaction, removed if it aborts.
#[derive(Default)]
struct StagedBlobs {
    txn: Option<TxnHandle>,
    files: Vec<PathBuf>,
}

impl BlobState {
    pub(crate) fn new(dir: BlobDir) -> Self {
        BlobState {
            dir,
            staged: Mutex::new(StagedBlobs::default()),
        }
    }

    /// Records a file `txn` moved into place. Files of an earlier
    /// transaction still listed belong to a finished one (finish in two
    /// halves does not come back here) and are kept.
    fn add(&self, txn: TxnHandle, path: PathBuf) {
        let mut staged = lock(&self.staged);
        if staged.txn != Some(txn) {
            staged.txn = Some(txn);
            staged.files.clear();
        }
        staged.files.push(path);
    }

    /// Syncs the files of `txn` and their directories.
    pub(crate) fn make_durable(&self, txn: TxnHandle) -> Result<()> {
        let staged = lock(&self.staged);
        if staged.txn == Some(txn) {
            BlobDir::make_durable(&staged.files)?;
        }
        Ok(())
    }

    /// Forgets the files of a finished `txn`.
    pub(crate) fn finished(&self, txn: TxnHandle) {
        let mut staged = lock(&self.staged);
        if staged.txn == Some(txn) {
            *staged = StagedBlobs::default();
        }
    }

    /// Removes the files of an aborted `txn`.
    pub(crate) fn aborted(&self, txn: TxnHandle) {
        let mut staged = lock(&self.staged);
        if staged.txn != Some(txn) {
            return;
        }
        for path in staged.files.drain(..) {
            if let Err(e) = BlobDir::remove_committed(&path) {
                tracing::warn!("removing the blob of an aborted transaction: {e}");
            }
        }
        staged.txn = None;
    }
}

impl FileStorage {
    /// Opens the storage with its blobs in `blob_dir` (ZODB's
    /// `FileStorage(path, blob_dir=…)`): the directory is created when
    /// missing, its layout chosen as ZODB's `auto_layout_select` does,
    /// wiped when [`super::FileStorageOptions::create`] is set, and its
    /// stale temporary files removed. A read-only open changes nothing.
    ///
    /// ```
    /// use zeo_storage::filestorage::FileStorageOptions;
    /// use zeo_storage::{FileStorage, Storage};
    ///
    /// let dir = tempfile::tempdir().unwrap();
    /// let fs = FileStorage::open_with_blobs(
    ///     dir.path().join("Data.fs"),
    ///     FileStorageOptions::default(),
    ///     dir.path().join("blobs"),
    /// ).unwrap();
    /// assert!(fs.capabilities().blobs);
    /// assert!(dir.path().join("blobs/.layout").exists());
    /// ```
    pub fn open_with_blobs(
        path: impl AsRef<Path>,
        options: super::FileStorageOptions,
        blob_dir: impl AsRef<Path>,
    ) -> Result<FileStorage> {
        let dir = if options.read_only {
            BlobDir::open_read_only(blob_dir)?
        } else {
            BlobDir::open(blob_dir, options.create)?
        };
        let mut storage = Self::open(path, options)?;
        storage.blobs = Some(BlobState::new(dir));
        Ok(storage)
    }

    /// The blob directory, when the storage has one.
    pub fn blob_dir(&self) -> Option<&BlobDir> {
        self.blobs.as_ref().map(|b| &b.dir)
    }

    fn blob_state(&self) -> Result<&BlobState> {
        self.blobs
            .as_ref()
            .ok_or(Error::Unsupported("blobs (no blob directory)"))
    }

    /// The path of a caller's file, or a stream written to a temporary.
    fn blob_source_path(dir: &BlobDir, blob: BlobSource) -> Result<PathBuf> {
        match blob {
            BlobSource::File(path) => Ok(path),
            BlobSource::Stream(mut reader) => dir.write_temporary(&mut reader),
        }
    }

    fn place_blob(
        &self,
        state: &BlobState,
        txn: TxnHandle,
        oid: Oid,
        tid: Tid,
        src: &Path,
    ) -> Result<()> {
        let placed = state.dir.commit_file(src, oid, tid);
        if placed.is_err() {
            let _ = std::fs::remove_file(src);
        }
        state.add(txn, placed?);
        Ok(())
    }

    /// Whether `txn` is the transaction in progress.
    pub(crate) fn is_current(&self, txn: TxnHandle) -> bool {
        lock(&self.commit)
            .active
            .as_ref()
            .is_some_and(|a| a.handle == txn)
    }

    /// The handle of the transaction in progress.
    pub(crate) fn current_txn(&self) -> Option<TxnHandle> {
        lock(&self.commit).active.as_ref().map(|a| a.handle)
    }
}

impl Blobs for FileStorage {
    fn temporary_directory(&self) -> &Path {
        match &self.blobs {
            Some(b) => b.dir.tmp_dir(),
            None => Path::new(""),
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
        let state = self.blob_state()?;
        let src = Self::blob_source_path(&state.dir, blob)?;
        let stored = self
            .store_record(txn, oid, serial, data)
            .and_then(|_| self.txn_tid(txn));
        match stored {
            Ok(tid) => self.place_blob(state, txn, oid, tid, &src),
            Err(e) => {
                let _ = std::fs::remove_file(&src);
                Err(e)
            }
        }
    }

    fn load_blob(&self, oid: Oid, serial: Tid) -> Result<BlobData> {
        self.check_open()?;
        Ok(BlobData::Path(
            self.blob_state()?.dir.existing_blob(oid, serial)?,
        ))
    }

    fn oid_directory(&self, oid: Oid) -> Option<PathBuf> {
        self.blobs.as_ref().map(|b| b.dir.oid_dir(oid))
    }

    fn restore_blob(
        &self,
        txn: TxnHandle,
        oid: Oid,
        serial: Tid,
        data: Option<&[u8]>,
        blob: Option<BlobSource>,
    ) -> Result<()> {
        let state = self.blob_state()?;
        let src = blob
            .map(|b| Self::blob_source_path(&state.dir, b))
            .transpose()?;
        let restored = self.restore_record(txn, oid, serial, data, None);
        match (restored, src) {
            (Ok(()), Some(src)) => self.place_blob(state, txn, oid, serial, &src),
            (Ok(()), None) => Ok(()),
            (Err(e), src) => {
                if let Some(src) = src {
                    let _ = std::fs::remove_file(src);
                }
                Err(e)
            }
        }
    }
}
