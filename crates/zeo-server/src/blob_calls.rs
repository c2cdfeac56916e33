//! The blob calls of a connection: uploads (`storeBlobStart/Chunk/End`)
//! streamed to a file in the storage's blob temporary directory,
//! `storeBlobShared`'s file name rules, and `sendBlob` downloads streamed
//! in chunks as the connection's outbox makes room.
//!
//! Uploads never sit in memory: each chunk is written to the file as it
//! arrives, and the connection reads no further message until it is. The
//! file belongs to the connection until the store is logged, then to the
//! transaction's commit log, which removes it when the transaction ends;
//! the storage is handed a hard link to it at each vote, so a vote that
//! is replayed (after conflicts) finds the upload still there.

use std::fs::File;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use zeo_protocol::{ClientEvent, WireError};
use zeo_storage::{BlobData, Blobs, Error as StorageError, Oid, Tid};

use crate::outbox::Outbox;
use crate::txn_log::TxnOp;

/// The size of the chunks `sendBlob` sends, as ZEO's server reads them.
pub(crate) const SEND_CHUNK: usize = 59_000;

/// A blob upload in progress: `storeBlobStart` created the file,
/// `storeBlobChunk` appends. Dropped before `storeBlobEnd` (the client
/// left, or started another upload), it removes the file.
pub(crate) struct Upload {
    file: File,
    path: Option<PathBuf>,
    len: u64,
    limit: Option<u64>,
}

impl Upload {
    /// Starts an upload into a new file in `blobs`' temporary directory;
    /// `limit` bounds its size (the server's `max-transaction-size`).
    pub(crate) fn start(blobs: &dyn Blobs, limit: Option<u64>) -> Result<Upload, WireError> {
        let named = tempfile::Builder::new()
            .suffix(".tmp")
            .tempfile_in(blobs.temporary_directory())
            .map_err(|e| io_error("creating a blob upload file", e))?;
        let (file, path) = named
            .keep()
            .map_err(|e| io_error("creating a blob upload file", e.error))?;
        Ok(Upload {
            file,
            path: Some(path),
            len: 0,
            limit,
        })
    }

    /// Appends the next chunk through the storage's write path. On an
    /// error (the reason, for the client) the caller drops the upload,
    /// which removes its file.
    pub(crate) fn write(&mut self, blobs: &dyn Blobs, chunk: &[u8]) -> Result<(), String> {
        self.len = self.len.saturating_add(chunk.len() as u64);
        if let Some(limit) = self.limit.filter(|l| self.len > *l) {
            return Err(format!(
                "blob upload exceeds max-transaction-size ({limit} bytes)"
            ));
        }
        blobs
            .append_to_temporary(&self.file, chunk)
            .map_err(|e| format!("writing a blob upload: {e}"))
    }

    /// Ends the upload and hands its file over.
    pub(crate) fn finish(mut self) -> PathBuf {
        self.path.take().unwrap_or_default()
    }
}

impl Drop for Upload {
    fn drop(&mut self) {
        if let Some(path) = self.path.take() {
            remove_quietly(&path);
        }
    }
}

/// An uploaded file named by a store not yet in the commit log: removed
/// on every way out except [`Unlogged::logged`].
pub(crate) struct Unlogged(Option<PathBuf>);

impl Unlogged {
    /// Guards the file `op` names, if any.
    pub(crate) fn of(op: &TxnOp) -> Self {
        match op {
            TxnOp::StoreBlob { path, .. } => Unlogged(Some(path.clone())),
            _ => Unlogged(None),
        }
    }

    /// The commit log owns the file now.
    pub(crate) fn logged(mut self) {
        self.0 = None;
    }
}

impl Drop for Unlogged {
    fn drop(&mut self) {
        if let Some(path) = self.0.take() {
            remove_quietly(&path);
        }
    }
}

fn remove_quietly(path: &Path) {
    match std::fs::remove_file(path) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => tracing::warn!("removing blob upload {}: {e}", path.display()),
    }
}

fn io_error(what: &str, e: std::io::Error) -> WireError {
    WireError::from(&StorageError::io(what, e))
}

/// Whether `filename` is a name ZEO's server accepts in
/// `storeBlobShared`: bare (no path separator) and ending in `.tmp`, or in
/// `.tmp` and one more character.
pub(crate) fn valid_shared_name(filename: &str) -> bool {
    let mut without_last = filename.chars();
    without_last.next_back();
    !filename.contains(std::path::MAIN_SEPARATOR)
        && !filename.contains('/')
        && (filename.ends_with(".tmp") || without_last.as_str().ends_with(".tmp"))
}

/// Where a shared-directory client put the blob of `oid`: `filename` in
/// the oid's directory, or ZEO's `ValueError` for a name it refuses.
pub(crate) fn shared_path(
    blobs: &dyn Blobs,
    oid: Oid,
    filename: &str,
) -> Result<PathBuf, WireError> {
    if !valid_shared_name(filename) {
        tracing::error!("bad filename to storeBlobShared, {filename:?}");
        return Err(WireError::value_error(filename));
    }
    let dir = blobs
        .oid_directory(oid)
        .ok_or_else(|| WireError::unsupported("storeBlobShared"))?;
    let path = dir.join(filename);
    // A regular file only: a symlink moved into place would let sendBlob
    // serve whatever it points at.
    match std::fs::symlink_metadata(&path) {
        Ok(meta) if meta.file_type().is_file() => Ok(path),
        _ => {
            tracing::error!("storeBlobShared names no regular file: {}", path.display());
            Err(WireError::value_error(filename))
        }
    }
}

/// A new name for `path` in its own directory, linked to the same file
/// (or, where links fail, a copy): what a vote hands the storage, which
/// moves it into place or removes it.
pub(crate) fn link_for_storage(path: &Path) -> std::io::Result<PathBuf> {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let mut last = None;
    for _ in 0..16 {
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let mut name = path.as_os_str().to_owned();
        name.push(format!(".{}-{n}.tmp", std::process::id()));
        let link = PathBuf::from(name);
        match std::fs::hard_link(path, &link) {
            Ok(()) => return Ok(link),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => last = Some(e),
            Err(_) => {
                std::fs::copy(path, &link)?;
                return Ok(link);
            }
        }
    }
    Err(last.unwrap_or_else(|| std::io::Error::other("no free name for a blob link")))
}

/// Streams the blob of `(oid, serial)` to the client as
/// `receiveBlobStart`, `receiveBlobChunk`s of [`SEND_CHUNK`] bytes and
/// `receiveBlobStop`, waiting for room in the outbox before each chunk.
/// Returns false when the connection closed meanwhile.
pub(crate) async fn send_blob(
    outbox: &Outbox,
    blobs: &dyn Blobs,
    oid: Oid,
    serial: Tid,
) -> Result<bool, WireError> {
    let mut reader: Box<dyn Read + Send> = match blobs
        .load_blob(oid, serial)
        .map_err(|e| WireError::from(&e))?
    {
        BlobData::Path(path) => Box::new(File::open(&path).map_err(|e| {
            if e.kind() == std::io::ErrorKind::NotFound {
                WireError::from(&StorageError::PosKey {
                    oid,
                    serial: Some(serial),
                })
            } else {
                io_error("opening a blob file", e)
            }
        })?),
        BlobData::Reader(reader) => reader,
        _ => return Err(WireError::unsupported("sendBlob")),
    };
    outbox.send(&ClientEvent::receive_blob_start(oid, serial));
    let mut chunk = vec![0u8; SEND_CHUNK];
    loop {
        let mut filled = 0;
        while filled < SEND_CHUNK {
            let n = reader
                .read(&mut chunk[filled..])
                .map_err(|e| io_error("reading a blob file", e))?;
            if n == 0 {
                break;
            }
            filled += n;
        }
        if filled == 0 {
            break;
        }
        if !outbox.reserve(filled + 64).await {
            return Ok(false);
        }
        outbox.send(&ClientEvent::receive_blob_chunk(
            oid,
            serial,
            &chunk[..filled],
        ));
        if filled < SEND_CHUNK {
            break;
        }
    }
    outbox.send(&ClientEvent::receive_blob_stop(oid, serial));
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shared_names_follow_zeo() {
        for ok in ["0x03.tmp", "abc.tmpX", ".tmp", "x.tmp1"] {
            assert!(valid_shared_name(ok), "{ok}");
        }
        for bad in ["x.blob", "../x.tmp", "a/b.tmp", "x.tmp12", "", "x.tm"] {
            assert!(!valid_shared_name(bad), "{bad}");
        }
    }

    #[test]
    fn links_keep_the_upload() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("u.tmp");
        std::fs::write(&path, b"abc").unwrap();
        let link = link_for_storage(&path).unwrap();
        assert_ne!(link, path);
        std::fs::remove_file(&link).unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"abc");
    }
}
