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
use std::sync::Arc;

use zeo_protocol::{ClientEvent, WireError};
use zeo_storage::block_buffer::BlockBuffer;
use zeo_storage::{BlobData, Blobs, Error as StorageError, Oid, Storage, Tid};

use crate::outbox::Outbox;
use crate::storage_calls::run_storage;
use crate::txn_log::TxnOp;

/// The size of the chunks `sendBlob` sends, as ZEO's server reads them.
pub(crate) const SEND_CHUNK: usize = 59_000;

/// The one-way call carrying a download's chunks.
const RECEIVE_CHUNK: &str = "receiveBlobChunk";

/// A blob upload in progress: `storeBlobStart` created the file,
/// `storeBlobChunk` appends. Dropped before `storeBlobEnd` (the client
/// left, or started another upload), it removes the file.
pub(crate) struct Upload {
    file: File,
    path: Option<PathBuf>,
    len: u64,
    limit: Option<u64>,
    /// Received bytes not written yet: the chunks go to the file in
    /// aligned blocks (`zeo_storage::block_buffer`), the largest share of
    /// the server's work in an upload made half as costly.
    pending: BlockBuffer,
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
            pending: BlockBuffer::default(),
        })
    }

    /// Takes the next chunk, writing whole blocks through the storage's
    /// write path. On an error (the reason, for the client) the caller
    /// drops the upload, which removes its file.
    pub(crate) fn write(&mut self, blobs: &dyn Blobs, chunk: &[u8]) -> Result<(), String> {
        self.len = self.len.saturating_add(chunk.len() as u64);
        if let Some(limit) = self.limit.filter(|l| self.len > *l) {
            return Err(format!(
                "blob upload exceeds max-transaction-size ({limit} bytes)"
            ));
        }
        let file = &self.file;
        self.pending
            .push(chunk, |block| blobs.append_to_temporary(file, block))
            .map_err(|e| format!("writing a blob upload: {e}"))
    }

    /// Ends the upload: writes what is pending and hands the file over.
    /// On an error the upload is dropped, which removes its file.
    pub(crate) fn finish(mut self, blobs: &dyn Blobs) -> Result<PathBuf, String> {
        let file = &self.file;
        self.pending
            .flush(|rest| blobs.append_to_temporary(file, rest))
            .map_err(|e| format!("writing a blob upload: {e}"))?;
        Ok(self.path.take().unwrap_or_default())
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

/// Chunks read from the blob file with one read (944,000 bytes), so a
/// 100 MB blob costs about a hundred reads rather than 1,700. Smaller
/// blocks cost more than reads: each block queued is a hand-over between
/// the connection's task and its writer, and with 236 KB blocks the
/// server switched threads about 800 times per 100 MB download (against
/// about 60 with these), half of them preempting the client's process on
/// a two-core machine.
pub(crate) const READ_CHUNKS: usize = 16;

/// Blocks of a download queued at most (about 1.9 MB), beyond what the
/// socket's buffer holds: the writer has a block to write while the next
/// is read, and a block is written soon after it was encoded, rather than
/// behind the 4 MiB the pause threshold would let wait.
const QUEUED_BLOCKS: usize = 2;

/// Streams the blob of `(oid, serial)` to the client as
/// `receiveBlobStart`, `receiveBlobChunk`s of [`SEND_CHUNK`] bytes and
/// `receiveBlobStop`. The file is read [`READ_CHUNKS`] chunks at a time,
/// and each such block is queued whole once the outbox has room for it
/// ([`Outbox::reserve`]) within [`QUEUED_BLOCKS`] blocks (or the pause
/// threshold, `reply-backlog-pause`, if that is less): the writer always
/// has a block to write while the next is read, and the server holds no
/// more of the blob than that. Returns false when the connection closed
/// meanwhile.
///
/// The blob is looked up through the storage's blocking contract: a
/// backend that may block (PostgreSQL, whose `load_blob` can be a database
/// download) is asked on the blocking pool, never on an async worker.
pub(crate) async fn send_blob(
    outbox: &Outbox,
    storage: &Arc<dyn Storage>,
    oid: Oid,
    serial: Tid,
) -> Result<bool, WireError> {
    let loader = storage.clone();
    let loaded = run_storage(!storage.may_block(), move || match loader.as_blobs() {
        Some(blobs) => blobs.load_blob(oid, serial),
        None => Err(StorageError::Unsupported("sendBlob")),
    })
    .await
    .map_err(|p| WireError::from(&StorageError::Storage(p.to_string())))?;
    let mut reader: Box<dyn Read + Send> = match loaded.map_err(|e| WireError::from(&e))? {
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
    stream_blob(outbox, &mut *reader, oid, serial).await
}

/// [`send_blob`]'s messages, the blob read from `reader`.
async fn stream_blob(
    outbox: &Outbox,
    reader: &mut (dyn Read + Send),
    oid: Oid,
    serial: Tid,
) -> Result<bool, WireError> {
    outbox.send(&ClientEvent::receive_blob_start(oid, serial));
    let mut block = vec![0u8; SEND_CHUNK * READ_CHUNKS];
    let pool = zeo_protocol::buffer_pool::BufferPool::default();
    loop {
        let filled =
            read_full(reader, &mut block).map_err(|e| io_error("reading a blob file", e))?;
        if filled == 0 {
            break;
        }
        // Each message is the chunk and under 64 bytes of framing.
        let chunks = filled.div_ceil(SEND_CHUNK);
        if !outbox
            .reserve(
                filled + 64 * chunks,
                QUEUED_BLOCKS * (block.len() + 64 * READ_CHUNKS),
            )
            .await
        {
            return Ok(false);
        }
        // The block's messages are written straight from it into one
        // pooled buffer, each queued as a slice of that buffer.
        let messages = zeo_protocol::encode_chunked_calls(
            &pool,
            outbox.encoding(),
            RECEIVE_CHUNK,
            &[&oid.to_bytes(), &serial.to_bytes()],
            &block[..filled],
            SEND_CHUNK,
        )
        .map_err(|e| WireError::from(&StorageError::Storage(e.to_string())))?;
        for message in messages {
            outbox.send_encoded(message);
        }
        if filled < block.len() {
            break;
        }
    }
    outbox.send(&ClientEvent::receive_blob_stop(oid, serial));
    Ok(true)
}

/// Reads until `buf` is full or the reader is at its end; the bytes read.
fn read_full(reader: &mut (dyn Read + Send), buf: &mut [u8]) -> std::io::Result<usize> {
    let mut filled = 0;
    while filled < buf.len() {
        match reader.read(&mut buf[filled..]) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(filled)
}

#[cfg(test)]
mod tests {
    use super::*;
    use zeo_storage::block_buffer::BLOCK as WRITE_BLOCK;

    #[test]
    fn shared_names_follow_zeo() {
        for ok in ["0x03.tmp", "abc.tmpX", ".tmp", "x.tmp1"] {
            assert!(valid_shared_name(ok), "{ok}");
        }
        for bad in ["x.blob", "../x.tmp", "a/b.tmp", "x.tmp12", "", "x.tm"] {
            assert!(!valid_shared_name(bad), "{bad}");
        }
    }

    /// The chunk sizes of the `receiveBlobChunk`s in `wire` (framed
    /// messages), and their bytes put together.
    fn chunks_of(mut wire: &[u8]) -> (Vec<usize>, Vec<u8>) {
        let (mut sizes, mut bytes) = (Vec::new(), Vec::new());
        while !wire.is_empty() {
            let (payload, rest) = zeo_protocol::decode_frame(wire).unwrap();
            wire = rest;
            let message = zeo_protocol::Marshaller::client(zeo_protocol::Encoding::Pickle)
                .decode(payload)
                .unwrap();
            if message.method != "receiveBlobChunk" {
                continue;
            }
            // Written in place, byte for byte what the general encoder
            // writes.
            let general = zeo_protocol::Marshaller::server(zeo_protocol::Encoding::Pickle)
                .encode(&message)
                .unwrap();
            assert!(general == payload);
            let zeo_pickle::Value::Tuple(args) = &message.args else {
                panic!("{message:?}");
            };
            let zeo_pickle::Value::Bytes(chunk) = &args[2] else {
                panic!("{message:?}");
            };
            sizes.push(chunk.len());
            bytes.extend_from_slice(chunk);
        }
        (sizes, bytes)
    }

    /// Streams a blob of two and a half blocks through an outbox pausing
    /// at `pause` into a small pipe; checks what arrives and returns the
    /// most that was queued at once.
    async fn stream_through(pause: usize) -> usize {
        use crate::outbox::{OutboxLimits, OutputBudget};
        use tokio::io::AsyncReadExt;

        let block = SEND_CHUNK * READ_CHUNKS;
        let blob: Vec<u8> = (0..block * 5 / 2 + 1234).map(|i| (i % 251) as u8).collect();
        let limits = OutboxLimits {
            pause,
            max_backlog: usize::MAX,
        };
        let budget = OutputBudget::new(0);
        let (outbox, receiver) = Outbox::new(
            1,
            "test",
            zeo_protocol::Encoding::Pickle,
            limits,
            budget.clone(),
        );
        // A pipe far smaller than the blob: the writer waits for the
        // reader below, so the stream has to wait for room.
        let (sink, mut peer) = tokio::io::duplex(64 * 1024);
        let writer = tokio::spawn(receiver.write_all(sink));
        let reading = tokio::spawn(async move {
            let mut wire = Vec::new();
            peer.read_to_end(&mut wire).await.unwrap();
            wire
        });
        let mut reader = std::io::Cursor::new(blob.clone());
        assert!(stream_blob(&outbox, &mut reader, Oid(7), Tid(9))
            .await
            .unwrap());
        drop(outbox);
        writer.await.unwrap().unwrap();
        let (sizes, bytes) = chunks_of(&reading.await.unwrap());
        assert!(bytes == blob);
        let mut expected = vec![SEND_CHUNK; blob.len() / SEND_CHUNK];
        expected.push(blob.len() % SEND_CHUNK);
        assert_eq!(sizes, expected);
        budget.peak()
    }

    #[tokio::test]
    async fn downloads_go_out_in_blocks_within_the_queue_threshold() {
        let block = SEND_CHUNK * READ_CHUNKS + 64 * READ_CHUNKS;
        // The pause threshold holds one block and a half: the stream
        // waits for it.
        let peak = stream_through(block * 3 / 2).await;
        assert!(peak <= block * 3 / 2, "{peak}");
        assert!(peak > SEND_CHUNK * READ_CHUNKS, "blocks go out whole");
        // Under the default threshold, at most `QUEUED_BLOCKS` wait.
        let peak = stream_through(4 << 20).await;
        assert!(peak <= QUEUED_BLOCKS * block, "{peak}");
        assert!(peak > SEND_CHUNK * READ_CHUNKS, "blocks go out whole");
    }

    /// A storage with a blob directory, in a directory that goes when
    /// the first value is dropped.
    fn blob_storage() -> (tempfile::TempDir, zeo_storage::MappingStorage) {
        let dir = tempfile::tempdir().unwrap();
        let storage =
            zeo_storage::MappingStorage::with_blob_dir("m", dir.path().join("b")).unwrap();
        (dir, storage)
    }

    #[test]
    fn uploads_are_written_in_whole_blocks_and_the_rest_at_finish() {
        let (_dir, storage) = blob_storage();
        let blobs: &dyn Blobs = &storage;
        let mut upload = Upload::start(blobs, None).unwrap();
        let path = upload.path.clone().unwrap();
        let on_disk = || std::fs::metadata(&path).unwrap().len() as usize;
        let chunk: Vec<u8> = (0..SEND_CHUNK).map(|i| (i % 253) as u8).collect();
        let mut sent = Vec::new();
        for _ in 0..4 {
            upload.write(blobs, &chunk).unwrap();
            sent.extend_from_slice(&chunk);
        }
        // 236,000 bytes: less than a block, all pending.
        assert_eq!(on_disk(), 0);
        upload.write(blobs, &chunk).unwrap();
        sent.extend_from_slice(&chunk);
        assert_eq!(on_disk(), WRITE_BLOCK);
        for _ in 0..7 {
            upload.write(blobs, &chunk).unwrap();
            sent.extend_from_slice(&chunk);
        }
        assert_eq!(on_disk(), 2 * WRITE_BLOCK);
        let finished = upload.finish(blobs).unwrap();
        assert_eq!(finished, path);
        assert!(std::fs::read(&path).unwrap() == sent);
    }

    #[test]
    fn an_upload_over_the_limit_fails_and_its_file_goes() {
        let (_dir, storage) = blob_storage();
        let blobs: &dyn Blobs = &storage;
        let mut upload = Upload::start(blobs, Some(100_000)).unwrap();
        let path = upload.path.clone().unwrap();
        upload.write(blobs, &[1; 60_000]).unwrap();
        let err = upload.write(blobs, &[1; 60_000]).unwrap_err();
        assert!(err.contains("max-transaction-size"), "{err}");
        drop(upload);
        assert!(!path.exists());
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
