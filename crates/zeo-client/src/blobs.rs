//! Blobs through the client: `load_blob`, `open_blob` and `store_blob` on
//! [`AsyncClientStorage`], the downloads the connection's reader task
//! writes (`receiveBlobStart/Chunk/Stop`), and the files a transaction
//! stages until `tpc_finish` moves them into the cache.
//!
//! Blob bytes never sit whole in memory: uploads are read about 1 MB at a
//! time (a stream copied to the cache's file on the way) and sent only
//! while the connection's outgoing queue is under [`UPLOAD_QUEUE_LIMIT`]; downloads are written to `<file>.dl` chunk
//! by chunk as the frames arrive. A download holds its directory's `.lock`
//! from before `sendBlob` until the file is in place, so concurrent loads
//! of one blob, in this process or another one sharing the directory,
//! download it once.

use std::collections::HashMap;
use std::fs::File;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};

use tracing::warn;
use zeo_protocol::buffer_pool::BufferPool;
use zeo_protocol::encode_chunked_calls;
use zeo_protocol::{ClientEvent, ClientRequest};
use zeo_storage::block_buffer::BlockBuffer;
use zeo_storage::{BlobSource, Oid, Tid, TxnHandle};

use crate::blob_cache::{blob_io, set_read_only, touch, BlobDir, DirLock, SizeBound};
use crate::client::AsyncClientStorage;
use crate::error::{Error, Result};
use crate::options::ClientOptions;

/// Bytes of an upload sent per `storeBlobChunk`, as ZEO sends them.
pub const BLOB_CHUNK: usize = 59_000;

/// How many bytes of encoded messages may wait for the socket before an
/// upload stops reading its file: the bound on an upload's memory.
pub const UPLOAD_QUEUE_LIMIT: usize = 4 << 20;

/// The client's blob directory and the downloads in progress.
#[derive(Debug)]
pub(crate) struct BlobState {
    pub dir: BlobDir,
    bound: Option<SizeBound>,
    /// Downloads asked for with `sendBlob`; the server may send only
    /// these.
    downloads: Mutex<HashMap<(Oid, Tid), Download>>,
    /// One upload at a time: its chunks must reach the server back to
    /// back.
    upload: tokio::sync::Mutex<()>,
}

#[derive(Debug, Default)]
struct Download {
    file: Option<File>,
    /// Received bytes not written yet: chunks go to the file in aligned
    /// blocks, half the page-cache cost of chunk-sized writes.
    pending: BlockBuffer,
    done: bool,
    error: Option<io::Error>,
}

/// A `receiveBlob*` message for a download.
enum BlobMessage<'a> {
    Start,
    Chunk(&'a [u8]),
    Stop,
}

/// The `.dl` file a download is written to before it is renamed.
fn download_path(path: &Path) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(".dl");
    PathBuf::from(name)
}

impl BlobState {
    /// The blob state the options ask for; `None` without `blob_dir`.
    pub fn open(options: &ClientOptions) -> Result<Option<Arc<BlobState>>> {
        let Some(base) = &options.blob_dir else {
            return Ok(None);
        };
        if options.blob_cache_size_check >= 100 {
            return Err(Error::Config(
                "blob_cache_size_check must be below 100".into(),
            ));
        }
        let dir = BlobDir::open(base, options.shared_blob_dir)?;
        let bound = match (options.blob_cache_size, options.shared_blob_dir) {
            (Some(size), false) => Some(SizeBound::new(size, options.blob_cache_size_check)),
            _ => None,
        };
        let state = Arc::new(BlobState {
            dir,
            bound,
            downloads: Mutex::default(),
            upload: tokio::sync::Mutex::new(()),
        });
        if let Some(bound) = &state.bound {
            // ZEO checks when the client starts.
            bound.start(state.dir.base());
        }
        Ok(Some(state))
    }

    /// Whether a size check is running.
    pub fn checking_size(&self) -> bool {
        self.bound.as_ref().is_some_and(SizeBound::is_running)
    }

    fn added(&self, bytes: u64) {
        if let Some(bound) = &self.bound {
            bound.added(self.dir.base(), bytes);
        }
    }

    fn expect(&self, oid: Oid, serial: Tid) {
        self.lock_downloads()
            .insert((oid, serial), Download::default());
    }

    fn lock_downloads(&self) -> std::sync::MutexGuard<'_, HashMap<(Oid, Tid), Download>> {
        self.downloads.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Ends the download of `(oid, serial)` after `sendBlob` returned: its
    /// write error, or an incomplete download (whose `.dl` is removed).
    fn finish_download(&self, oid: Oid, serial: Tid) -> Result<()> {
        let Some(download) = self.lock_downloads().remove(&(oid, serial)) else {
            return Ok(());
        };
        let path = self.dir.path(oid, serial);
        if let Some(e) = download.error {
            return Err(blob_io(path, e));
        }
        if download.file.is_some() || !download.done {
            drop(download.file);
            let _ = std::fs::remove_file(download_path(&path));
        }
        Ok(())
    }

    /// Handles a `receiveBlob*` message in the reader task. Messages for a
    /// blob not asked for are dropped with a warning: a server may not
    /// write into the cache at will. The file work is done right here, as
    /// ZEO's I/O thread does it: the chunks go into the page cache in
    /// aligned blocks (`zeo_storage::block_buffer`), the rest with
    /// `receiveBlobStop`, and doing it in order on the reader is what
    /// makes the file complete when the `sendBlob` reply wakes the loader.
    pub fn on_event(&self, event: ClientEvent, server: &str) {
        match event {
            ClientEvent::ReceiveBlobStart { oid, serial } => {
                self.on_blob_message(oid, serial, BlobMessage::Start, server)
            }
            ClientEvent::ReceiveBlobChunk { oid, serial, chunk } => {
                self.on_blob_message(oid, serial, BlobMessage::Chunk(&chunk), server)
            }
            ClientEvent::ReceiveBlobStop { oid, serial } => {
                self.on_blob_message(oid, serial, BlobMessage::Stop, server)
            }
            _ => {}
        }
    }

    /// [`BlobState::on_event`] for a `receiveBlobChunk` read in place
    /// (`zeo_protocol::oneway_bytes_call`): the chunk borrowed from the
    /// frame, not copied into an event.
    pub fn on_chunk(&self, oid: Oid, serial: Tid, chunk: &[u8], server: &str) {
        self.on_blob_message(oid, serial, BlobMessage::Chunk(chunk), server)
    }

    fn on_blob_message(&self, oid: Oid, serial: Tid, message: BlobMessage<'_>, server: &str) {
        let mut downloads = self.lock_downloads();
        let Some(download) = downloads.get_mut(&(oid, serial)) else {
            warn!(%oid, %serial, server, "ignoring blob data that was not asked for");
            return;
        };
        if download.error.is_some() {
            return;
        }
        let path = self.dir.path(oid, serial);
        let dl = download_path(&path);
        let result = match message {
            BlobMessage::Start => File::create(&dl).map(|f| {
                download.file = Some(f);
            }),
            BlobMessage::Chunk(chunk) => match download.file.as_mut() {
                Some(f) => download
                    .pending
                    .push(chunk, |block| f.write_all(block))
                    .map(|()| self.added(chunk.len() as u64)),
                None => Err(io::Error::other("receiveBlobChunk before receiveBlobStart")),
            },
            BlobMessage::Stop => match download.file.take() {
                Some(mut f) => download
                    .pending
                    .flush(|rest| f.write_all(rest))
                    .and_then(|()| {
                        drop(f);
                        download.done = true;
                        std::fs::rename(&dl, &path).and_then(|()| {
                            use std::os::unix::fs::PermissionsExt;
                            // ZEO makes downloaded files owner-read-only.
                            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o400))
                        })
                    }),
                None => Err(io::Error::other("receiveBlobStop before receiveBlobStart")),
            },
        };
        if let Err(e) = result {
            warn!(%oid, %serial, server, error = %e, "writing a downloaded blob");
            download.file = None;
            download.pending = BlockBuffer::default();
            download.error = Some(e);
            let _ = std::fs::remove_file(&dl);
        }
    }
}

/// Blob files a transaction staged in the cache directory: moved into
/// place by `tpc_finish`, removed when the transaction ends any other way.
#[derive(Debug, Default)]
pub(crate) struct StagedBlobs(Vec<(Oid, PathBuf)>);

impl StagedBlobs {
    fn take(&mut self) -> Vec<(Oid, PathBuf)> {
        std::mem::take(&mut self.0)
    }
}

impl Drop for StagedBlobs {
    fn drop(&mut self) {
        for (_, path) in self.0.drain(..) {
            let _ = std::fs::remove_file(path);
        }
    }
}

/// Puts a blob to store into a new temporary file in `oid`'s directory:
/// renamed (or copied, across file systems) from a file, or copied from a
/// stream. The file is made read-only, as ZODB's `rename_or_copy_blob`
/// leaves it.
fn stage(dir: &BlobDir, oid: Oid, serial: Tid, blob: BlobSource) -> Result<PathBuf> {
    let (mut file, target) = dir.temp_file(oid, serial)?;
    let placed = match blob {
        BlobSource::File(source) => {
            drop(file);
            match std::fs::rename(&source, &target) {
                Ok(()) => Ok(()),
                Err(_) => std::fs::copy(&source, &target)
                    .and_then(|_| std::fs::remove_file(&source))
                    .map_err(|e| blob_io(&source, e)),
            }
        }
        // A large buffer: a blob is copied in far fewer system calls than
        // with io::copy's default 8 KiB.
        BlobSource::Stream(reader) => io::copy(
            &mut io::BufReader::with_capacity(1 << 20, reader),
            &mut file,
        )
        .and_then(|_| file.flush())
        .map(drop)
        .map_err(|e| blob_io(&target, e)),
        _ => Err(zeo_storage::Error::Unsupported("this kind of blob source").into()),
    };
    let placed = placed.and_then(|()| set_read_only(&target).map_err(|e| blob_io(&target, e)));
    match placed {
        Ok(()) => Ok(target),
        Err(e) => {
            let _ = std::fs::remove_file(&target);
            Err(e)
        }
    }
}

/// Bytes of an upload read (and written to the cache) at once: 1 MiB per
/// blocking call instead of one call per chunk, and aligned, so the cache
/// file is written in whole pages (half the page-cache cost of unaligned
/// writes). Sent as 59,000-byte chunks and a shorter last one per block.
const UPLOAD_BLOCK: usize = 1 << 20;

/// Where an upload's bytes come from: the blob's file in the cache, or a
/// stream that is written to that file as it is read. Moved into a
/// blocking task for each block.
struct UploadSource {
    reader: Box<dyn io::Read + Send>,
    /// The cache's file a stream is copied to.
    copy: Option<File>,
    path: PathBuf,
    block: Vec<u8>,
}

impl UploadSource {
    fn reading(file: File, path: PathBuf) -> Self {
        Self::new(Box::new(file), None, path)
    }

    fn copying(reader: Box<dyn io::Read + Send>, file: File, path: PathBuf) -> Self {
        Self::new(reader, Some(file), path)
    }

    fn new(reader: Box<dyn io::Read + Send>, copy: Option<File>, path: PathBuf) -> Self {
        UploadSource {
            reader,
            copy,
            path,
            block: vec![0; UPLOAD_BLOCK],
        }
    }

    /// Fills `block` with the next bytes (fewer only at the end), copying
    /// them to the cache's file; the bytes read.
    fn next_block(&mut self) -> Result<usize> {
        let mut filled = 0;
        while filled < self.block.len() {
            match self.reader.read(&mut self.block[filled..]) {
                Ok(0) => break,
                Ok(n) => filled += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(blob_io(&self.path, e)),
            }
        }
        if let Some(file) = self.copy.as_mut() {
            file.write_all(&self.block[..filled])
                .map_err(|e| blob_io(&self.path, e))?;
        }
        Ok(filled)
    }
}

/// Runs blocking file work on tokio's blocking pool.
async fn blocking<T: Send + 'static>(f: impl FnOnce() -> Result<T> + Send + 'static) -> Result<T> {
    joined(tokio::task::spawn_blocking(f).await)
}

/// The result of a blocking task, its panic as an I/O error.
fn joined<T>(outcome: std::result::Result<Result<T>, tokio::task::JoinError>) -> Result<T> {
    outcome.map_err(|e| Error::BlobIo {
        path: PathBuf::new(),
        source: io::Error::other(e),
    })?
}

/// Reads `source`'s next block on a blocking thread.
fn read_next_block(
    mut source: UploadSource,
) -> tokio::task::JoinHandle<Result<(UploadSource, usize)>> {
    tokio::task::spawn_blocking(move || source.next_block().map(|n| (source, n)))
}

impl AsyncClientStorage {
    pub(crate) fn blob_state(&self) -> Result<&Arc<BlobState>> {
        self.inner.shared.blobs.as_ref().ok_or_else(|| {
            zeo_storage::Error::Unsupported("No blob cache directory is configured.").into()
        })
    }

    /// The blob directory: the cache, or the server's shared directory;
    /// `None` without `blob_dir`.
    pub fn blob_dir(&self) -> Option<&BlobDir> {
        self.inner.shared.blobs.as_deref().map(|b| &b.dir)
    }

    /// Whether a blob cache size check is running in the background.
    pub fn checking_blob_cache_size(&self) -> bool {
        self.inner
            .shared
            .blobs
            .as_ref()
            .is_some_and(|b| b.checking_size())
    }

    /// Runs a size check of the blob cache now, as the client does after
    /// every `blob_cache_size_check` percent of `blob_cache_size`
    /// downloaded (and as ZEO's `zeo-check-blob-size` script does): files
    /// accessed least recently are removed until the cache is within
    /// `blob_cache_size` less that percentage. Returns the bytes left (0
    /// when another process was checking; it looks again before it stops).
    ///
    /// # Errors
    ///
    /// `Unsupported` without a bounded, non-shared blob cache;
    /// [`Error::BlobIo`] when the directory cannot be read.
    pub async fn check_blob_cache_size(&self) -> Result<u64> {
        let state = self.blob_state()?.clone();
        let Some(target) = state.bound.as_ref().map(SizeBound::target) else {
            return Err(zeo_storage::Error::Unsupported("blob_cache_size is not set").into());
        };
        blocking(move || crate::blob_cache::check_size(state.dir.base(), target)).await
    }

    /// The file holding the blob of revision `serial` of `oid` (ZEO's
    /// `loadBlob`). In a shared blob directory it is the server's file; in
    /// a cache it is downloaded first unless present, under the
    /// directory's `.lock` so that one download serves every concurrent
    /// loader on the host. The file is read-only; a cached one may be
    /// removed by a later size check, so open it soon (or use
    /// [`AsyncClientStorage::open_blob`]).
    ///
    /// # Errors
    ///
    /// `Unsupported` without `blob_dir`, `POSKeyError` when the revision has
    /// no blob, [`Error::BlobIo`] when the file cannot be written,
    /// [`Error::Disconnected`].
    pub async fn load_blob(&self, oid: Oid, serial: Tid) -> Result<PathBuf> {
        let state = self.blob_state()?.clone();
        let path = state.dir.path(oid, serial);
        let missing = || -> Error {
            zeo_storage::Error::PosKey {
                oid,
                serial: Some(serial),
            }
            .into()
        };
        if state.dir.is_shared() {
            return if path.exists() {
                Ok(path)
            } else {
                Err(missing())
            };
        }
        if path.exists() {
            touch(&path);
            return Ok(path);
        }
        let lock_state = state.clone();
        let inner = self.inner.clone();
        let _lock = blocking(move || {
            let dir = lock_state.dir.oid_dir(oid)?;
            DirLock::acquire_with(&dir, || {
                inner.blob_lock_waits.fetch_add(1, Ordering::Relaxed);
            })
            .map_err(|e| blob_io(dir, e))
        })
        .await?;
        // Someone else may have downloaded it while we waited.
        if path.exists() {
            touch(&path);
            return Ok(path);
        }
        let conn = self.conn(self.inner.options.wait_timeout).await?;
        state.expect(oid, serial);
        self.inner.blob_downloads.fetch_add(1, Ordering::Relaxed);
        let reply = conn
            .call(|id| ClientRequest::send_blob(id, oid, serial))
            .await;
        let received = state.finish_download(oid, serial);
        reply?;
        received?;
        if path.exists() {
            touch(&path);
            Ok(path)
        } else {
            Err(missing())
        }
    }

    /// An open reader of the blob of revision `serial` of `oid` (ZEO's
    /// `openCommittedBlobFile`): [`AsyncClientStorage::load_blob`], then
    /// open, loading again if a size check removed the file in between.
    ///
    /// # Errors
    ///
    /// As [`AsyncClientStorage::load_blob`].
    pub async fn open_blob(&self, oid: Oid, serial: Tid) -> Result<File> {
        let mut last = None;
        for _ in 0..3 {
            let path = self.load_blob(oid, serial).await?;
            match File::open(&path) {
                Ok(f) => return Ok(f),
                Err(e) if e.kind() == io::ErrorKind::NotFound => last = Some(blob_io(path, e)),
                Err(e) => return Err(blob_io(path, e)),
            }
        }
        Err(last.unwrap_or_else(|| zeo_storage::Error::pos_key(oid).into()))
    }

    /// Stages a new revision with its blob (ZEO's `storeBlob`): the record
    /// goes out as `storea`, and the blob is streamed to the server in
    /// `storeBlobChunk`s of up to 59,000 bytes, never more than
    /// [`UPLOAD_QUEUE_LIMIT`] queued: a [`BlobSource::File`] is taken over
    /// into the blob directory and sent from there, a
    /// [`BlobSource::Stream`] is sent as it is read, each block also
    /// written to a file in the blob directory, so it is read once. With a
    /// shared blob directory the file is placed there first and named to
    /// the server with `storeBlobShared`. After `tpc_finish` the blob is
    /// in the cache under the new tid; an abort removes the file.
    ///
    /// ```no_run
    /// # async fn demo(client: zeo_client::AsyncClientStorage) -> Result<(), Box<dyn std::error::Error>> {
    /// use zeo_storage::{BlobSource, BeginOptions, Tid, TransactionMetaData};
    ///
    /// let txn = client.tpc_begin(&TransactionMetaData::default(), BeginOptions::default()).await?;
    /// let oid = client.new_oid().await?;
    /// let record = b"a record whose class is a ZODB.blob.Blob".to_vec();
    /// let bytes = std::io::Cursor::new(vec![7u8; 1 << 20]);
    /// client.store_blob(txn, oid, Tid::ZERO, &record, BlobSource::Stream(Box::new(bytes))).await?;
    /// client.tpc_vote(txn).await?;
    /// let tid = client.tpc_finish(txn).await?;
    /// assert_eq!(std::fs::read(client.load_blob(oid, tid).await?)?.len(), 1 << 20);
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    ///
    /// `Unsupported` without `blob_dir`, [`Error::BlobIo`] when the file
    /// cannot be placed or read, and what [`AsyncClientStorage::store`]
    /// fails with.
    pub async fn store_blob(
        &self,
        txn: TxnHandle,
        oid: Oid,
        serial: Tid,
        data: &[u8],
        blob: BlobSource,
    ) -> Result<()> {
        let state = self.blob_state()?.clone();
        let (conn, id) = self.with_txn(txn, |s| Ok((s.conn.clone(), s.id)))?;
        if state.dir.is_shared() {
            let stage_state = state.clone();
            let target = blocking(move || stage(&stage_state.dir, oid, serial, blob)).await?;
            let mut staged = StagedBlobs(vec![(oid, target.clone())]);
            self.store(txn, oid, serial, data)?;
            let name = target
                .file_name()
                .and_then(|n| n.to_str())
                .unwrap_or_default()
                .to_owned();
            conn.call_async(&ClientRequest::store_blob_shared(
                oid, serial, data, &name, id,
            ))?;
            // The server moves the file at vote.
            staged.take();
            return Ok(());
        }
        // A file is moved into the cache first and uploaded from there; a
        // stream is uploaded as it is read, each block written to the
        // cache's file on the way, so it is read once.
        let stage_state = state.clone();
        let (source, target) = blocking(move || match blob {
            BlobSource::Stream(reader) => {
                let (file, target) = stage_state.dir.temp_file(oid, serial)?;
                Ok((UploadSource::copying(reader, file, target.clone()), target))
            }
            other => {
                let target = stage(&stage_state.dir, oid, serial, other)?;
                let file = File::open(&target).map_err(|e| blob_io(&target, e))?;
                Ok((UploadSource::reading(file, target.clone()), target))
            }
        })
        .await?;
        let mut staged = StagedBlobs(vec![(oid, target.clone())]);
        self.store(txn, oid, serial, data)?;
        let _upload = state.upload.lock().await;
        conn.send_when_room(&ClientRequest::store_blob_start(), UPLOAD_QUEUE_LIMIT)
            .await?;
        // The next block is read (and copied to the cache) while this one
        // is sent: two blocks in memory, the file and the socket both busy.
        // Each block's chunks are encoded straight from it into one
        // pooled buffer and queued as slices of it: one copy, and no fresh
        // allocation per chunk or block.
        let pool = BufferPool::default();
        let encoding = conn.encoding();
        let mut spare = vec![0; source.block.len()];
        let mut next = Some(read_next_block(source));
        while let Some(reading) = next.take() {
            let (mut source, filled) = joined(reading.await)?;
            let block = std::mem::replace(&mut source.block, std::mem::take(&mut spare));
            if filled == block.len() {
                next = Some(read_next_block(source));
            }
            let messages = encode_chunked_calls(
                &pool,
                encoding,
                "storeBlobChunk",
                &[],
                &block[..filled],
                BLOB_CHUNK,
            )
            .map_err(|e| Error::Protocol(e.to_string()))?;
            for message in messages {
                conn.send_encoded_when_room(message, UPLOAD_QUEUE_LIMIT)
                    .await?;
            }
            spare = block;
        }
        blocking(move || set_read_only(&target).map_err(|e| blob_io(&target, e))).await?;
        conn.call_async(&ClientRequest::store_blob_end(oid, serial, data, id))?;
        let files = staged.take();
        self.with_txn(txn, |s| {
            s.blobs.0.extend(files);
            Ok(())
        })
    }

    /// Moves the blobs a committed transaction staged into the cache under
    /// `tid`, each under its directory's `.lock`, as ZEO's
    /// `_update_blob_cache` does.
    pub(crate) async fn commit_blobs(&self, mut staged: StagedBlobs, tid: Tid) {
        let files = staged.take();
        let Some(state) = self.inner.shared.blobs.clone() else {
            return;
        };
        if files.is_empty() {
            return;
        }
        let moved = blocking(move || {
            let mut bytes = 0;
            for (oid, temp) in files {
                let target = state.dir.path(oid, tid);
                let dir = state.dir.oid_dir(oid)?;
                let _lock = DirLock::acquire(&dir).map_err(|e| blob_io(&dir, e))?;
                bytes += std::fs::metadata(&temp).map(|m| m.len()).unwrap_or(0);
                if let Err(e) = std::fs::rename(&temp, &target) {
                    let _ = std::fs::remove_file(&temp);
                    return Err(blob_io(target, e));
                }
            }
            state.added(bytes);
            Ok(())
        })
        .await;
        if let Err(e) = moved {
            // The commit stands; the blob is downloaded again when needed.
            warn!(error = %e, "could not move a committed blob into the cache");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A reader that fails after `ok` bytes.
    struct FailsAfter {
        ok: usize,
    }

    impl io::Read for FailsAfter {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            if self.ok == 0 {
                return Err(io::Error::other("source went away"));
            }
            let n = buf.len().min(self.ok).min(10_000);
            buf[..n].fill(1);
            self.ok -= n;
            Ok(n)
        }
    }

    #[test]
    fn a_stream_is_read_in_blocks_and_copied_to_the_cache_file_on_the_way() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("staged");
        let block = UPLOAD_BLOCK;
        let bytes: Vec<u8> = (0..block * 2 + 777).map(|i| (i % 253) as u8).collect();
        let file = File::create(&path).unwrap();
        let mut source =
            UploadSource::copying(Box::new(io::Cursor::new(bytes.clone())), file, path.clone());
        let mut sent = Vec::new();
        let mut sizes = Vec::new();
        loop {
            let n = source.next_block().unwrap();
            sizes.push(n);
            sent.extend_from_slice(&source.block[..n]);
            if n < block {
                break;
            }
        }
        assert_eq!(sizes, [block, block, 777]);
        assert!(sent == bytes);
        drop(source);
        assert!(std::fs::read(&path).unwrap() == bytes);
    }

    #[test]
    fn a_failing_stream_is_an_error_naming_the_cache_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("staged");
        let file = File::create(&path).unwrap();
        let mut source =
            UploadSource::copying(Box::new(FailsAfter { ok: 25_000 }), file, path.clone());
        let err = source.next_block().unwrap_err();
        assert!(err.to_string().contains("staged"), "{err}");
    }
}
