//! `sendBlob` for a backend that may block: its `load_blob` can be a
//! database round trip or a whole download (PostgreSQL with blobs in the
//! database), which must not run on an async worker. The blob is loaded on
//! the blocking pool first, and the connection then streams it through a
//! view of the backend whose `load_blob` answers with what was loaded.

use std::sync::{Arc, Mutex};

use zeo_protocol::WireError;
use zeo_storage::interface::Blobs;
use zeo_storage::{
    BlobData, BlobSource, Error as StorageError, Oid, Result, Storage, Tid, TxnHandle,
};

use crate::storage_calls::run_storage;

/// A backend's blobs with one revision already loaded.
pub(crate) struct Preloaded<'a> {
    inner: &'a dyn Blobs,
    loaded: Mutex<Option<(Oid, Tid, Result<BlobData>)>>,
}

impl<'a> Preloaded<'a> {
    /// Loads `(oid, serial)` of `storage` off the async workers.
    pub(crate) async fn load(
        storage: &Arc<dyn Storage>,
        inner: &'a dyn Blobs,
        oid: Oid,
        serial: Tid,
    ) -> std::result::Result<Preloaded<'a>, WireError> {
        let storage = storage.clone();
        let loaded = run_storage(false, move || match storage.as_blobs() {
            Some(blobs) => blobs.load_blob(oid, serial),
            None => Err(StorageError::Unsupported("sendBlob")),
        })
        .await
        .map_err(|p| WireError::from(&StorageError::Storage(p.to_string())))?;
        Ok(Preloaded {
            inner,
            loaded: Mutex::new(Some((oid, serial, loaded))),
        })
    }
}

impl Blobs for Preloaded<'_> {
    fn temporary_directory(&self) -> &std::path::Path {
        self.inner.temporary_directory()
    }

    fn store_blob(
        &self,
        txn: TxnHandle,
        oid: Oid,
        serial: Tid,
        data: &[u8],
        blob: BlobSource,
    ) -> Result<()> {
        self.inner.store_blob(txn, oid, serial, data, blob)
    }

    fn load_blob(&self, oid: Oid, serial: Tid) -> Result<BlobData> {
        let mut loaded = self.loaded.lock().unwrap_or_else(|e| e.into_inner());
        match loaded.take() {
            Some((o, s, blob)) if (o, s) == (oid, serial) => blob,
            // Only the preloaded revision is asked for; anything else is
            // refused rather than loaded here, on an async worker.
            _ => Err(StorageError::Unsupported("a blob not loaded beforehand")),
        }
    }

    fn oid_directory(&self, oid: Oid) -> Option<std::path::PathBuf> {
        self.inner.oid_directory(oid)
    }
}
