//! MappingStorage's blob capability: records in memory, blob files in a
//! ZODB blob directory ([`BlobDir`]). It lets the contract suite hold the
//! capability to one behaviour on both storages; files are not synced (the
//! records they belong to are not durable either).

use std::path::{Path, PathBuf};

use crate::blobdir::{BlobDir, TxnFiles};
use crate::error::{Error, Result};
use crate::ids::{Oid, Tid};
use crate::interface::{BlobData, BlobSource, Blobs, Storage, TxnHandle};

use super::MappingStorage;

/// The blob directory and the files the open transaction put in it.
pub(super) struct MappingBlobs {
    pub(super) dir: BlobDir,
    pub(super) staged: TxnFiles,
}

impl MappingStorage {
    /// An empty storage with its blobs in `blob_dir` (created when
    /// missing, emptied when it holds files of an earlier run, since the
    /// records they belonged to are gone).
    ///
    /// ```
    /// use zeo_storage::{MappingStorage, Storage};
    ///
    /// let dir = tempfile::tempdir().unwrap();
    /// let m = MappingStorage::with_blob_dir("m", dir.path().join("blobs")).unwrap();
    /// assert!(m.capabilities().blobs);
    /// ```
    pub fn with_blob_dir(name: impl Into<String>, blob_dir: impl AsRef<Path>) -> Result<Self> {
        let mut storage = Self::new(name);
        storage.blobs = Some(MappingBlobs {
            dir: BlobDir::open(blob_dir, true)?,
            staged: TxnFiles::default(),
        });
        Ok(storage)
    }

    fn blob_state(&self) -> Result<&MappingBlobs> {
        self.blobs
            .as_ref()
            .ok_or(Error::Unsupported("blobs (no blob directory)"))
    }
}

impl Blobs for MappingStorage {
    fn temporary_directory(&self) -> &Path {
        self.blobs
            .as_ref()
            .map_or(Path::new(""), |b| b.dir.tmp_dir())
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
        let src = state.dir.source_file(blob)?;
        let placed = self
            .store(txn, oid, serial, data)
            .and_then(|_| self.transaction_tid(txn))
            .and_then(|tid| {
                let tid = tid.ok_or_else(|| Error::Transaction("no tid".into()))?;
                state.dir.commit_file(&src, oid, tid)
            });
        match placed {
            Ok(path) => {
                state.staged.add(txn, path);
                Ok(())
            }
            Err(e) => {
                let _ = std::fs::remove_file(&src);
                Err(e)
            }
        }
    }

    fn load_blob(&self, oid: Oid, serial: Tid) -> Result<BlobData> {
        let state = self.blob_state()?;
        // Only revisions the storage still holds have blobs.
        self.load_serial(oid, serial)?;
        Ok(BlobData::Path(state.dir.existing_blob(oid, serial)?))
    }

    fn oid_directory(&self, oid: Oid) -> Option<PathBuf> {
        self.blobs.as_ref().map(|b| b.dir.oid_dir(oid))
    }
}
