//! A blob directory laid out exactly as ZODB lays it out, so that Python's
//! `FileStorage(blob_dir=…)` and `BlobStorage` open what is written here and
//! the other way round.
//!
//! ```text
//! <blob_dir>/.layout                 "bushy" or "lawn"
//! <blob_dir>/tmp/                    files being uploaded
//! <blob_dir>/0x00/…/0x00/0x2a/       bushy: one directory per oid byte
//! <blob_dir>/0x2a/                   lawn: one directory per oid
//!             0x03d0a1c2e4f5a6b7.blob   one committed revision (read-only)
//! ```
//!
//! Directory and file names come from ZODB's `oid_repr`/`tid_repr`.
//! Committed files are made read-only, as ZODB does. Unlike ZODB, which
//! fsyncs no blob file, [`BlobDir::make_durable`] syncs a committed file and
//! its directory, so that a storage can make them durable before the data
//! record that names them.
//!
//! ```
//! use zeo_storage::blobdir::{BlobDir, Layout};
//! use zeo_storage::{Oid, Tid};
//!
//! let dir = tempfile::tempdir().unwrap();
//! let blobs = BlobDir::open(dir.path().join("blobs"), false).unwrap();
//! assert_eq!(blobs.layout(), Layout::Bushy);
//! let name = blobs.blob_path(Oid(0x2a), Tid(0x03d0));
//! assert!(name.ends_with("0x00/0x00/0x00/0x00/0x00/0x00/0x00/0x2a/0x03d0.blob"));
//! ```

use std::collections::BTreeSet;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};
use crate::ids::{Oid, Tid};
use crate::interface::{BlobSource, TxnHandle};

/// The name of the layout marker file.
pub const LAYOUT_MARKER: &str = ".layout";
/// The suffix of committed blob files.
pub const BLOB_SUFFIX: &str = ".blob";
/// The name of the temporary directory inside the blob directory.
pub const TMP_DIR: &str = "tmp";

/// How oids map to directories.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Layout {
    /// One directory level per oid byte, most significant first
    /// (`0x00/0x00/0x00/0x00/0x00/0x00/0x01/0x2a`).
    Bushy,
    /// One directory per oid, named by `oid_repr` (`0x012a`); deprecated
    /// in ZODB, still read and written.
    Lawn,
}

impl Layout {
    /// The name ZODB writes in `.layout`.
    pub fn name(self) -> &'static str {
        match self {
            Layout::Bushy => "bushy",
            Layout::Lawn => "lawn",
        }
    }

    /// Parses a layout name.
    pub fn from_name(name: &str) -> Option<Layout> {
        match name {
            "bushy" => Some(Layout::Bushy),
            "lawn" => Some(Layout::Lawn),
            _ => None,
        }
    }

    /// The directory of an oid's revisions, relative to the blob directory.
    pub fn oid_path(self, oid: Oid) -> PathBuf {
        match self {
            Layout::Bushy => oid
                .0
                .to_be_bytes()
                .iter()
                .map(|b| format!("0x{b:02x}"))
                .collect(),
            Layout::Lawn => PathBuf::from(oid_repr(oid.0)),
        }
    }

    /// The oid whose directory `rel` (relative to the blob directory) is,
    /// `None` when it is not one.
    pub fn path_to_oid(self, rel: &Path) -> Option<Oid> {
        match self {
            Layout::Bushy => {
                let mut oid = 0u64;
                let mut n = 0;
                for part in rel.components() {
                    let part = part.as_os_str().to_str()?;
                    let hex = part.strip_prefix("0x")?;
                    if hex.is_empty() || hex.len() > 2 {
                        return None;
                    }
                    oid = (oid << 8) | u64::from(u8::from_str_radix(hex, 16).ok()?);
                    n += 1;
                }
                (n == 8).then_some(Oid(oid))
            }
            Layout::Lawn => {
                let mut parts = rel.components();
                let part = parts.next()?.as_os_str().to_str()?;
                if parts.next().is_some() {
                    return None;
                }
                repr_to_u64(part).map(Oid)
            }
        }
    }
}

/// ZODB's `oid_repr` of an 8-byte id: `0x` and the hex digits without
/// leading zero bytes (`0x00` for zero, `0x012a` for 0x12a).
pub fn oid_repr(id: u64) -> String {
    let hex = format!("{id:x}");
    if id == 0 {
        "0x00".to_string()
    } else if hex.len() % 2 == 1 {
        format!("0x0{hex}")
    } else {
        format!("0x{hex}")
    }
}

/// ZODB's `tid_repr` (the same form as [`oid_repr`]).
pub fn tid_repr(tid: Tid) -> String {
    oid_repr(tid.0)
}

/// Parses an [`oid_repr`]-style name (ZODB's `repr_to_oid`).
pub fn repr_to_u64(s: &str) -> Option<u64> {
    let hex = s.strip_prefix("0x")?;
    if hex.is_empty() || hex.len() > 16 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    u64::from_str_radix(hex, 16).ok()
}

/// ZODB's `auto_layout_select`: the marker wins; a missing or empty
/// directory (hidden files aside) gets `bushy`; an unmarked directory with
/// files is taken to be `lawn`. Returns the marker's text when it names no
/// known layout.
pub fn auto_layout_select(dir: &Path) -> Result<std::result::Result<Layout, String>> {
    let marker = dir.join(LAYOUT_MARKER);
    match fs::read_to_string(&marker) {
        Ok(text) => {
            let name = text.trim();
            return Ok(Layout::from_name(name).ok_or_else(|| name.to_string()));
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(Error::io(format!("reading {}", marker.display()), e)),
    }
    let entries = match fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Ok(Layout::Bushy)),
        Err(e) => return Err(Error::io(format!("listing {}", dir.display()), e)),
    };
    for entry in entries {
        let entry = entry.map_err(|e| Error::io(format!("listing {}", dir.display()), e))?;
        if !entry.file_name().to_string_lossy().starts_with('.') {
            return Ok(Ok(Layout::Lawn));
        }
    }
    Ok(Ok(Layout::Bushy))
}

/// An open blob directory.
#[derive(Debug)]
pub struct BlobDir {
    base: PathBuf,
    tmp: PathBuf,
    layout: Layout,
}

impl BlobDir {
    /// Opens (creating it when missing) the blob directory at `dir` with
    /// the layout [`auto_layout_select`] picks; `wipe` removes what is
    /// there first, as ZODB's `FileStorage(create=True)` does. Leftover
    /// temporary files of an earlier run are removed.
    pub fn open(dir: impl AsRef<Path>, wipe: bool) -> Result<BlobDir> {
        Self::open_with_layout(dir, None, wipe)
    }

    /// [`BlobDir::open`] with a layout asked for (`None`: automatic). A
    /// marker naming another layout is refused with ZODB's message.
    pub fn open_with_layout(
        dir: impl AsRef<Path>,
        layout: Option<Layout>,
        wipe: bool,
    ) -> Result<BlobDir> {
        let base = std::path::absolute(dir.as_ref())
            .map_err(|e| Error::io(format!("resolving {}", dir.as_ref().display()), e))?;
        if wipe && base.exists() {
            remove_tree(&base)?;
        }
        let selected = match layout {
            Some(l) => l,
            None => auto_layout_select(&base)?.map_err(|name| {
                Error::InvalidArgument(format!(
                    "unknown blob directory layout `{name}` in {}",
                    base.join(LAYOUT_MARKER).display()
                ))
            })?,
        };
        if selected == Layout::Lawn {
            tracing::warn!(
                "The `lawn` blob directory layout is deprecated due to scalability issues on \
                 some file systems, please consider migrating to the `bushy` layout."
            );
        }
        let tmp = base.join(TMP_DIR);
        create_dirs(&tmp)?;
        let marker = base.join(LAYOUT_MARKER);
        match fs::read_to_string(&marker) {
            Ok(text) => {
                let found = text.trim();
                if found != selected.name() {
                    return Err(Error::InvalidArgument(format!(
                        "Directory layout `{}` selected for blob directory {}{}, but marker \
                         found for layout `{found}`",
                        selected.name(),
                        base.display(),
                        std::path::MAIN_SEPARATOR
                    )));
                }
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                write_durably(&marker, selected.name().as_bytes())?;
            }
            Err(e) => return Err(Error::io(format!("reading {}", marker.display()), e)),
        }
        let dir = BlobDir {
            base,
            tmp,
            layout: selected,
        };
        dir.remove_stale_temporaries();
        Ok(dir)
    }

    /// Opens an existing blob directory without writing to it (read-only
    /// storages): no directory, marker or cleanup.
    pub fn open_read_only(dir: impl AsRef<Path>) -> Result<BlobDir> {
        let base = std::path::absolute(dir.as_ref())
            .map_err(|e| Error::io(format!("resolving {}", dir.as_ref().display()), e))?;
        let layout = auto_layout_select(&base)?.map_err(|name| {
            Error::InvalidArgument(format!("unknown blob directory layout `{name}`"))
        })?;
        Ok(BlobDir {
            tmp: base.join(TMP_DIR),
            base,
            layout,
        })
    }

    fn remove_stale_temporaries(&self) {
        let Ok(entries) = fs::read_dir(&self.tmp) else {
            return;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            if entry.file_type().is_ok_and(|t| t.is_file()) {
                match fs::remove_file(&path) {
                    Ok(()) => tracing::info!("removed stale blob temporary {}", path.display()),
                    Err(e) => tracing::warn!("removing {}: {e}", path.display()),
                }
            }
        }
    }

    /// The blob directory (absolute).
    pub fn path(&self) -> &Path {
        &self.base
    }

    /// `<blob_dir>/tmp`, where uploads are written before they are stored.
    pub fn tmp_dir(&self) -> &Path {
        &self.tmp
    }

    /// The layout in use.
    pub fn layout(&self) -> Layout {
        self.layout
    }

    /// The directory of an oid's revisions.
    pub fn oid_dir(&self, oid: Oid) -> PathBuf {
        self.base.join(self.layout.oid_path(oid))
    }

    /// The file of one committed revision (ZODB's `getBlobFilename`).
    pub fn blob_path(&self, oid: Oid, tid: Tid) -> PathBuf {
        self.oid_dir(oid)
            .join(format!("{}{BLOB_SUFFIX}", tid_repr(tid)))
    }

    /// The oid and tid a committed blob file's path names.
    pub fn split_blob_path(&self, path: &Path) -> Option<(Oid, Tid)> {
        let name = path.file_name()?.to_str()?;
        let tid = repr_to_u64(name.strip_suffix(BLOB_SUFFIX)?)?;
        let rel = path.parent()?.strip_prefix(&self.base).ok()?;
        Some((self.layout.path_to_oid(rel)?, Tid(tid)))
    }

    /// A new empty file in [`BlobDir::tmp_dir`], kept on disk: the caller
    /// stores it or removes it.
    pub fn new_temporary(&self) -> Result<(File, PathBuf)> {
        let named = tempfile::Builder::new()
            .suffix(".tmp")
            .tempfile_in(&self.tmp)
            .map_err(|e| Error::io(format!("creating a file in {}", self.tmp.display()), e))?;
        named
            .keep()
            .map_err(|e| Error::io("keeping a blob temporary file", e.error))
    }

    /// Copies a stream into a new temporary file and returns its path.
    pub fn write_temporary(&self, source: &mut dyn Read) -> Result<PathBuf> {
        let (mut file, path) = self.new_temporary()?;
        let res = io::copy(source, &mut file).and_then(|_| file.flush());
        if let Err(e) = res {
            let _ = fs::remove_file(&path);
            return Err(Error::io(format!("writing {}", path.display()), e));
        }
        Ok(path)
    }

    /// The file a [`BlobSource`] names, or a stream written to a new
    /// temporary file.
    pub fn source_file(&self, blob: BlobSource) -> Result<PathBuf> {
        match blob {
            BlobSource::File(path) => Ok(path),
            BlobSource::Stream(mut reader) => self.write_temporary(&mut reader),
        }
    }

    /// Moves `src` into place as the file of `(oid, tid)` (a rename, or a
    /// copy when `src` is on another file system) and makes it read-only.
    /// Directories it creates are made durable now; the file itself by
    /// [`BlobDir::make_durable`].
    pub fn commit_file(&self, src: &Path, oid: Oid, tid: Tid) -> Result<PathBuf> {
        let dir = self.oid_dir(oid);
        create_dirs(&dir)?;
        let target = self.blob_path(oid, tid);
        if fs::rename(src, &target).is_err() {
            // Another file system: copied next to the target first, so
            // that the target's name only ever shows a whole file.
            let (_, tmp) = self.new_temporary()?;
            let placed = copy_file(src, &tmp).and_then(|_| {
                fs::rename(&tmp, &target)
                    .map_err(|e| Error::io(format!("moving a copy to {}", target.display()), e))
            });
            if placed.is_err() {
                let _ = fs::remove_file(&tmp);
            }
            placed?;
            let _ = fs::remove_file(src);
        }
        set_not_writable(&target)?;
        Ok(target)
    }

    /// Links (or copies) the committed file of `(oid, from)` as the file of
    /// `(oid, to)`, as undo does; fails with [`Error::PosKey`] when there is
    /// no such file.
    pub fn copy_revision(&self, oid: Oid, from: Tid, to: Tid) -> Result<PathBuf> {
        let src = self.blob_path(oid, from);
        if !src.exists() {
            return Err(Error::PosKey {
                oid,
                serial: Some(from),
            });
        }
        let target = self.blob_path(oid, to);
        if target.exists() {
            // Copied already by this transaction: a transaction may hold
            // two records of one object (ZEO writes a blob store twice).
            // Writing through the existing name would truncate a link that
            // shares the source's data.
            return Ok(target);
        }
        if fs::hard_link(&src, &target).is_err() {
            let (_, tmp) = self.new_temporary()?;
            let copied = copy_file(&src, &tmp).and_then(|_| set_not_writable(&tmp));
            let placed = copied.and_then(|_| {
                fs::rename(&tmp, &target)
                    .map_err(|e| Error::io(format!("moving a copy to {}", target.display()), e))
            });
            if placed.is_err() {
                let _ = fs::remove_file(&tmp);
            }
            placed?;
        }
        Ok(target)
    }

    /// Syncs each file and then, once each, the directories holding them.
    pub fn make_durable(paths: &[PathBuf]) -> Result<()> {
        Self::make_durable_with(paths, &|f| f.sync_all())
    }

    /// [`BlobDir::make_durable`] with each file synced by `sync` (a
    /// storage's write path, which tests can make fail).
    pub(crate) fn make_durable_with(
        paths: &[PathBuf],
        sync: &dyn Fn(&File) -> io::Result<()>,
    ) -> Result<()> {
        let mut dirs = BTreeSet::new();
        for path in paths {
            File::open(path)
                .and_then(|f| sync(&f))
                .map_err(|e| Error::io(format!("syncing {}", path.display()), e))?;
            if let Some(d) = path.parent() {
                dirs.insert(d.to_path_buf());
            }
        }
        for dir in dirs {
            sync_dir(&dir)?;
        }
        Ok(())
    }

    /// The path of a committed revision's file, [`Error::PosKey`] (with
    /// ZODB's "No blob file" wording in the log) when it is missing.
    pub fn existing_blob(&self, oid: Oid, tid: Tid) -> Result<PathBuf> {
        let path = self.blob_path(oid, tid);
        if path.is_file() {
            Ok(path)
        } else {
            tracing::debug!("No blob file at {}", path.display());
            Err(Error::PosKey {
                oid,
                serial: Some(tid),
            })
        }
    }

    /// Every committed blob file, as `(oid, tid, path)`, in a stable order.
    /// Walks with an explicit stack, so a deep or looping tree does not
    /// exhaust the call stack.
    pub fn list_blobs(&self) -> Result<Vec<(Oid, Tid, PathBuf)>> {
        let mut out = Vec::new();
        let mut stack = vec![(self.base.clone(), 0usize)];
        let max_depth = match self.layout {
            Layout::Bushy => 8,
            Layout::Lawn => 1,
        };
        while let Some((dir, depth)) = stack.pop() {
            let mut entries: Vec<_> = fs::read_dir(&dir)
                .map_err(|e| Error::io(format!("listing {}", dir.display()), e))?
                .filter_map(|e| e.ok())
                .collect();
            entries.sort_by_key(|e| e.file_name());
            for entry in entries.into_iter().rev() {
                let path = entry.path();
                let Ok(kind) = entry.file_type() else {
                    continue;
                };
                if kind.is_dir() && depth < max_depth {
                    if depth == 0 && entry.file_name() == TMP_DIR {
                        continue;
                    }
                    stack.push((path, depth + 1));
                } else if kind.is_file() && depth == max_depth {
                    if let Some((oid, tid)) = self.split_blob_path(&path) {
                        out.push((oid, tid, path));
                    }
                }
            }
        }
        out.sort();
        Ok(out)
    }

    /// Removes the file of `(oid, tid)`, if any, and the directories it
    /// leaves empty.
    pub(crate) fn remove_revision(&self, oid: Oid, tid: Tid) -> Result<()> {
        BlobDir::remove_committed(&self.blob_path(oid, tid))?;
        self.remove_empty_parents(&self.oid_dir(oid))
    }

    /// Removes `from` and its parents while they are empty, never the blob
    /// directory itself (ZODB's `maybe_remove_empty_dir_containing`).
    pub(crate) fn remove_empty_parents(&self, from: &Path) -> Result<()> {
        let mut at = from.to_path_buf();
        // At most the eight levels of the bushy layout.
        for _ in 0..8 {
            if at == self.base || !at.starts_with(&self.base) {
                break;
            }
            let empty = fs::read_dir(&at)
                .map(|mut entries| entries.next().is_none())
                .unwrap_or(false);
            if !empty || fs::remove_dir(&at).is_err() {
                break;
            }
            match at.parent() {
                Some(p) => at = p.to_path_buf(),
                None => break,
            }
        }
        Ok(())
    }

    /// Removes a committed file (and nothing else).
    pub fn remove_committed(path: &Path) -> Result<()> {
        match fs::remove_file(path) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(Error::io(format!("removing {}", path.display()), e)),
        }
    }
}

/// The name of the journal, in the blob directory, of the files moved into
/// place for transactions not yet known to be durable: one path (relative
/// to the blob directory) per line, written before the file is moved. A
/// storage opening after a crash removes the listed files whose revision
/// never reached it (see `TxnFiles::journaled`). Hidden, so ZODB's layout
/// detection and its tools pass over it.
pub const PLACED_JOURNAL: &str = ".placed";

/// The longest journal line read back; longer ones name no blob file.
const MAX_JOURNAL_LINE: usize = 512;

/// The files one transaction moved into place, so that its abort can
/// remove them (ZODB's `dirty_oids`), and optionally their journal.
#[derive(Default)]
pub(crate) struct TxnFiles {
    staged: std::sync::Mutex<StagedFiles>,
    /// `(blob directory, journal file)` when placements are journaled.
    journal: Option<(PathBuf, PathBuf)>,
}

#[derive(Default)]
struct StagedFiles {
    txn: Option<TxnHandle>,
    files: Vec<PathBuf>,
}

impl TxnFiles {
    /// Staged files whose placements are journaled in `dir`'s
    /// [`PLACED_JOURNAL`], so that a crash between a transaction's first
    /// placement and its durable finish leaves a list of the files to
    /// check at the next open.
    pub(crate) fn journaled(dir: &BlobDir) -> Self {
        TxnFiles {
            staged: Default::default(),
            journal: Some((dir.path().to_path_buf(), dir.path().join(PLACED_JOURNAL))),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, StagedFiles> {
        self.staged
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Journals `path` before it is moved or linked into place.
    pub(crate) fn will_place(&self, path: &Path) -> Result<()> {
        let Some((base, journal)) = &self.journal else {
            return Ok(());
        };
        let rel = path.strip_prefix(base).unwrap_or(path);
        let mut line = rel.as_os_str().to_string_lossy().into_owned();
        line.push('\n');
        let _guard = self.lock();
        OpenOptions::new()
            .create(true)
            .append(true)
            .open(journal)
            .and_then(|mut f| f.write_all(line.as_bytes()))
            .map_err(|e| Error::io(format!("writing {}", journal.display()), e))
    }

    /// Records a file `txn` moved into place. Files of an earlier
    /// transaction still listed belong to a finished one (a backend may
    /// finish without coming back here) and are kept.
    pub(crate) fn add(&self, txn: TxnHandle, path: PathBuf) {
        let mut staged = self.lock();
        if staged.txn != Some(txn) {
            staged.txn = Some(txn);
            staged.files.clear();
        }
        staged.files.push(path);
    }

    /// Syncs the files of `txn` (each with `sync`) and their directories.
    pub(crate) fn make_durable(
        &self,
        txn: TxnHandle,
        sync: &dyn Fn(&File) -> io::Result<()>,
    ) -> Result<()> {
        let staged = self.lock();
        if staged.txn == Some(txn) {
            if let Some((_, journal)) = &self.journal {
                // The list before the renames it covers.
                File::open(journal)
                    .and_then(|f| sync(&f))
                    .map_err(|e| Error::io(format!("syncing {}", journal.display()), e))?;
            }
            BlobDir::make_durable_with(&staged.files, sync)?;
        }
        Ok(())
    }

    /// Forgets the files of a durably finished `txn`. When no later
    /// transaction placed files since, the journal goes: every file it
    /// lists belongs to a durable transaction or was removed.
    pub(crate) fn finished(&self, txn: TxnHandle) {
        let mut staged = self.lock();
        if staged.txn == Some(txn) {
            *staged = StagedFiles::default();
            if let Some((_, journal)) = &self.journal {
                match fs::remove_file(journal) {
                    Ok(()) => {}
                    Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                    Err(e) => tracing::warn!("removing {}: {e}", journal.display()),
                }
            }
        }
    }

    /// Removes the files of an aborted `txn`.
    pub(crate) fn aborted(&self, txn: TxnHandle) {
        let mut staged = self.lock();
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

/// The committed files a [`PLACED_JOURNAL`] in `dir` lists, as `(oid,
/// tid)`; lines that name no blob file of `dir`'s layout are skipped, so a
/// damaged journal names nothing outside the directory. Reads at most
/// `max_lines` lines.
pub(crate) fn journaled_files(dir: &BlobDir, max_lines: usize) -> Result<Vec<(Oid, Tid)>> {
    use std::io::BufRead;
    let path = dir.path().join(PLACED_JOURNAL);
    let file = match File::open(&path) {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(Error::io(format!("reading {}", path.display()), e)),
    };
    let mut reader = io::BufReader::new(file);
    let mut out = BTreeSet::new();
    let mut line = Vec::new();
    for _ in 0..max_lines {
        line.clear();
        let n = (&mut reader)
            .take(MAX_JOURNAL_LINE as u64 + 1)
            .read_until(b'\n', &mut line)
            .map_err(|e| Error::io(format!("reading {}", path.display()), e))?;
        if n == 0 {
            break;
        }
        if line.last() != Some(&b'\n') {
            // Over-long or torn: skip to the end of the line.
            if n > MAX_JOURNAL_LINE {
                skip_line(&mut reader)
                    .map_err(|e| Error::io(format!("reading {}", path.display()), e))?;
            }
            continue;
        }
        let Ok(rel) = std::str::from_utf8(&line[..line.len() - 1]) else {
            continue;
        };
        if let Some(found) = dir.split_blob_path(&dir.path().join(rel)) {
            out.insert(found);
        }
    }
    Ok(out.into_iter().collect())
}

/// Reads past the next newline without keeping what it reads.
fn skip_line(reader: &mut impl io::BufRead) -> io::Result<()> {
    loop {
        let buf = reader.fill_buf()?;
        if buf.is_empty() {
            return Ok(());
        }
        match buf.iter().position(|&b| b == b'\n') {
            Some(i) => {
                reader.consume(i + 1);
                return Ok(());
            }
            None => {
                let n = buf.len();
                reader.consume(n);
            }
        }
    }
}

/// ZODB's `set_not_writable`: no write bits, the directory's read bits.
fn set_not_writable(path: &Path) -> Result<()> {
    let io_err = |e| Error::io(format!("setting the mode of {}", path.display()), e);
    let mode = fs::symlink_metadata(path)
        .map_err(io_err)?
        .permissions()
        .mode()
        & 0o7777;
    let dir_read = path
        .parent()
        .and_then(|d| fs::symlink_metadata(d).ok())
        .map_or(0, |m| m.permissions().mode() & 0o444);
    fs::set_permissions(path, fs::Permissions::from_mode((mode & !0o222) | dir_read))
        .map_err(io_err)
}

fn copy_file(src: &Path, dst: &Path) -> Result<()> {
    fs::copy(src, dst)
        .map(|_| ())
        .map_err(|e| Error::io(format!("copying {} to {}", src.display(), dst.display()), e))
}

fn sync_dir(dir: &Path) -> Result<()> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| Error::io(format!("syncing directory {}", dir.display()), e))
}

/// Creates `dir` and its missing parents, syncing the parent of each one
/// created so that the new entries survive a power loss.
fn create_dirs(dir: &Path) -> Result<()> {
    if dir.is_dir() {
        return Ok(());
    }
    let mut missing = Vec::new();
    let mut at = dir;
    while !at.is_dir() {
        missing.push(at.to_path_buf());
        match at.parent() {
            Some(p) if !p.as_os_str().is_empty() => at = p,
            _ => break,
        }
    }
    for d in missing.iter().rev() {
        match fs::create_dir(d) {
            Ok(()) => {
                if let Some(parent) = d.parent() {
                    sync_dir(parent)?;
                }
            }
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(Error::io(format!("creating {}", d.display()), e)),
        }
    }
    Ok(())
}

/// Writes a small file and syncs it and its directory.
fn write_durably(path: &Path, bytes: &[u8]) -> Result<()> {
    let io_err = |e| Error::io(format!("writing {}", path.display()), e);
    let mut f = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .open(path)
        .map_err(io_err)?;
    f.write_all(bytes)
        .and_then(|_| f.sync_all())
        .map_err(io_err)?;
    if let Some(parent) = path.parent() {
        sync_dir(parent)?;
    }
    Ok(())
}

/// Removes a directory tree whose committed files are read-only (ZODB's
/// `remove_committed_dir`); read-only files go on POSIX since the
/// directories are writable.
fn remove_tree(dir: &Path) -> Result<()> {
    fs::remove_dir_all(dir).map_err(|e| Error::io(format!("removing {}", dir.display()), e))
}

#[cfg(test)]
mod tests;
