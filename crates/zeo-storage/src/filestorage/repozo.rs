//! Backups in ZODB's repozo format, file for file, so that either repozo
//! or this module restores what the other backed up (`zeo-server backup`,
//! `restore` and `verify` run it), and blob directories copied beside.
//!
//! A repository holds, per backup, files named by the UTC time it was
//! taken (`YYYY-MM-DD-HH-MM-SS`): a full backup `.fs` (the first bytes of
//! `Data.fs` up to its last committed transaction), or an incremental
//! `.deltafs` (the bytes added since the previous backup); the `.index` of
//! the file as of that backup; and, beside each full backup, a `.dat`
//! listing it and the incrementals after it, one `PATH START END MD5` line
//! each. Restoring concatenates the last full backup at or before the
//! asked time with the incrementals after it.
//!
//! The backup reads the file a server is serving, while commits go on: it
//! opens the storage read-only (no lock), takes the committed size and the
//! index from that one open file, and copies from that same handle, so a
//! transaction being written is left out and a pack that replaces the file
//! meanwhile does not change what is copied.
//!
//! Blob files (ZODB's blob directory, whatever its layout) are copied into
//! the repository's `blobs/` after the data file: a blob file is written
//! and synced before the record naming it is committed, and never changes
//! afterwards, so every transaction the copied data file holds finds its
//! files there. Files already copied are skipped; files a pack removes stay
//! in the backup, so restoring an older state finds them too.

use std::fs::{File, OpenOptions};
use std::io::{BufRead, Read, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use md5::{Digest, Md5};

use super::{FileStorage, FileStorageOptions};
use crate::error::{Error, Result};

/// Bytes copied at a time.
const CHUNK: usize = 64 * 1024;

/// What a backup did to the data file.
#[derive(Debug, PartialEq, Eq)]
pub enum Backup {
    /// A full backup.
    Full {
        /// The `.fs` written.
        path: PathBuf,
        /// Its size.
        bytes: u64,
    },
    /// An incremental backup.
    Incremental {
        /// The `.deltafs` written.
        path: PathBuf,
        /// Its size.
        bytes: u64,
    },
    /// The file has not changed since the last backup.
    Unchanged,
}

/// The directory of a repository that holds the copied blob files.
pub const BLOB_DIR: &str = "blobs";

/// Deepest directory nesting walked in a blob directory: ZODB's bushy
/// layout uses eight levels (one per oid byte).
const MAX_BLOB_DEPTH: usize = 16;

/// How to back up.
#[derive(Debug)]
pub struct BackupOptions<'a> {
    /// The Data.fs.
    pub file: &'a Path,
    /// The repository directory (must exist).
    pub repository: &'a Path,
    /// Force a full backup.
    pub full: bool,
    /// Decide on an incremental from the last `.dat` line only (repozo's
    /// `-Q`) instead of checksumming the whole repository.
    pub quick: bool,
    /// After a full backup, delete the older backups.
    pub kill_old_on_full: bool,
    /// The UTC time naming the files, `YYYY-MM-DD-HH-MM-SS`.
    pub stamp: String,
    /// The storage's blob directory, copied into the repository's
    /// [`BLOB_DIR`] after the data file.
    pub blob_dir: Option<&'a Path>,
}

/// The current UTC time as repozo names files.
pub fn stamp_now() -> String {
    let (y, mo, d, h, mi, s) = crate::timestamp::TimeStamp::now().parts();
    format!("{y:04}-{mo:02}-{d:02}-{h:02}-{mi:02}-{:02}", s as u32)
}

/// Whether `stamp` is a `YYYY-MM-DD-HH-MM-SS` time.
pub fn is_stamp(stamp: &str) -> bool {
    let b = stamp.as_bytes();
    b.len() == 19
        && b.iter().enumerate().all(|(i, c)| {
            if [4, 7, 10, 13, 16].contains(&i) {
                *c == b'-'
            } else {
                c.is_ascii_digit()
            }
        })
}

/// A backup data file's name: a stamp and `.fs`, `.deltafs`, `.fsz` or
/// `.deltafsz`.
fn is_data_file(name: &str) -> bool {
    let Some((root, ext)) = name.split_once('.') else {
        return false;
    };
    is_stamp(root) && matches!(ext, "fs" | "deltafs" | "fsz" | "deltafsz")
}

fn is_full(path: &Path) -> bool {
    matches!(
        path.extension().and_then(|e| e.to_str()),
        Some("fs" | "fsz")
    )
}

fn with_extension(path: &Path, ext: &str) -> PathBuf {
    path.with_extension(ext)
}

fn io(what: &str, path: &Path) -> impl FnOnce(std::io::Error) -> Error {
    let context = format!("{what} {}", path.display());
    move |e| Error::io(context, e)
}

/// A repository problem: what the backup holds does not allow the request.
fn repository_error(message: String) -> Error {
    Error::Storage(message)
}

/// The files to restore the state as of `when` (a stamp or a prefix of
/// one; `None`: now), oldest first: the last full backup at or before it
/// and the incrementals after that full backup, up to `when`.
pub fn find_files(repository: &Path, when: Option<&str>) -> Result<Vec<PathBuf>> {
    let when = when.map_or_else(stamp_now, str::to_owned);
    let mut names: Vec<String> = std::fs::read_dir(repository)
        .map_err(io("reading", repository))?
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter(|n| is_data_file(n))
        .collect();
    names.sort_unstable_by(|a, b| b.cmp(a));
    let mut needed = Vec::new();
    for name in names {
        let (root, _) = name.split_once('.').unwrap_or((&name, ""));
        if root <= when.as_str() {
            let path = repository.join(&name);
            let full = is_full(&path);
            needed.push(path);
            if full {
                break;
            }
        }
    }
    needed.reverse();
    Ok(needed)
}

/// Reads `path` (a repository file) through `each`, returning its size.
fn read_through(path: &Path, each: &mut dyn FnMut(&[u8])) -> Result<u64> {
    if path
        .extension()
        .is_some_and(|e| e == "fsz" || e == "deltafsz")
    {
        return Err(repository_error(format!(
            "{}: compressed backups (repozo -z) are not supported; restore them with repozo",
            path.display()
        )));
    }
    let mut file = File::open(path).map_err(io("opening", path))?;
    let mut buf = vec![0u8; CHUNK];
    let mut total = 0u64;
    loop {
        let n = file.read(&mut buf).map_err(io("reading", path))?;
        if n == 0 {
            return Ok(total);
        }
        each(&buf[..n]);
        total += n as u64;
    }
}

/// The size and md5 of `files` one after another.
fn concat(files: &[PathBuf], out: Option<&mut File>) -> Result<(u64, String)> {
    let mut md5 = Md5::new();
    let mut total = 0;
    let mut failed = None;
    let mut out = out;
    for f in files {
        total += read_through(f, &mut |chunk| {
            md5.update(chunk);
            if let Some(o) = out.as_deref_mut() {
                if let Err(e) = o.write_all(chunk) {
                    failed.get_or_insert(e.to_string());
                }
            }
        })?;
        if let Some(e) = failed.take() {
            return Err(repository_error(format!("writing the restored file: {e}")));
        }
    }
    Ok((total, hex(&md5.finalize())))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The md5 of `len` bytes of `file` from `start`, each chunk also given
/// to `each`.
fn md5_range(
    file: &File,
    start: u64,
    len: u64,
    each: &mut dyn FnMut(&[u8]) -> std::io::Result<()>,
) -> std::io::Result<String> {
    let mut md5 = Md5::new();
    let mut buf = vec![0u8; CHUNK];
    let mut done = 0u64;
    while done < len {
        let want = usize::try_from((len - done).min(CHUNK as u64)).unwrap_or(CHUNK);
        file.read_exact_at(&mut buf[..want], start + done)?;
        md5.update(&buf[..want]);
        each(&buf[..want])?;
        done += want as u64;
    }
    Ok(hex(&md5.finalize()))
}

/// Copies `len` bytes of `source` from `start` to `dest`, through a
/// synced temporary file renamed into place; returns their md5.
fn copy_range(source: &File, start: u64, len: u64, dest: &Path) -> Result<String> {
    let dir = dest.parent().unwrap_or(Path::new("."));
    let tmp = dir.join("tmp.tmp");
    let mut out = File::create(&tmp).map_err(io("creating", &tmp))?;
    let sum = md5_range(source, start, len, &mut |chunk| out.write_all(chunk))
        .map_err(io("copying to", &tmp))?;
    out.sync_all().map_err(io("syncing", &tmp))?;
    drop(out);
    std::fs::rename(&tmp, dest).map_err(io("renaming to", dest))?;
    Ok(sum)
}

/// Appends one line to a `.dat` file and syncs it.
fn append_dat(dat: &Path, line: &str) -> Result<()> {
    let mut f = OpenOptions::new()
        .create(true)
        .append(true)
        .open(dat)
        .map_err(io("opening", dat))?;
    writeln!(f, "{line}").map_err(io("writing", dat))?;
    f.sync_all().map_err(io("syncing", dat))
}

/// The last line of the `.dat` beside the full backup `full`: (start,
/// end, md5) of the last backup listed.
fn last_dat_entry(full: &Path) -> Result<Option<(u64, u64, String)>> {
    let dat = with_extension(full, "dat");
    let file = match File::open(&dat) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(repository_error(format!("opening {}: {e}", dat.display()))),
    };
    let mut last = None;
    for line in std::io::BufReader::new(file).lines() {
        last = Some(line.map_err(io("reading", &dat))?);
    }
    let Some(line) = last else {
        return Ok(None);
    };
    let fields: Vec<&str> = line.split_whitespace().collect();
    match fields.as_slice() {
        [_, start, end, sum] => match (start.parse(), end.parse()) {
            (Ok(s), Ok(e)) => Ok(Some((s, e, (*sum).to_owned()))),
            _ => Err(repository_error(format!(
                "{}: bad line {line:?}",
                dat.display()
            ))),
        },
        _ => Err(repository_error(format!(
            "{}: bad line {line:?}",
            dat.display()
        ))),
    }
}

/// Backs `options.file` up into `options.repository`: incrementally when
/// the repository holds a backup that the file still starts with, else in
/// full.
pub fn backup(options: &BackupOptions<'_>) -> Result<Backup> {
    if !is_stamp(&options.stamp) {
        return Err(repository_error(format!(
            "{:?}: not a YYYY-MM-DD-HH-MM-SS time",
            options.stamp
        )));
    }
    let repofiles = find_files(options.repository, Some(&options.stamp))?;
    let read_only = FileStorageOptions {
        read_only: true,
        ..FileStorageOptions::default()
    };
    let storage = FileStorage::open(options.file, read_only)?;
    // The index is written first, under a name the backup's data file
    // will share; a backup that finds nothing to do removes it again.
    let index = options.repository.join(format!("{}.index", options.stamp));
    if index.exists() {
        return Err(repository_error(format!(
            "will not overwrite {}",
            index.display()
        )));
    }
    let point = storage.backup_point(&index);
    let _ = crate::Storage::close(&storage);
    let (file, size, _) = point?;
    let decision = decide(options, &repofiles, &file, size);
    let done = match decision {
        Ok(Decision::Full) => full_backup(options, &file, size),
        Ok(Decision::Incremental(from)) => incremental(options, &repofiles, &file, from, size),
        Ok(Decision::Unchanged) => Ok(Backup::Unchanged),
        Err(e) => Err(e),
    };
    if !matches!(done, Ok(Backup::Full { .. } | Backup::Incremental { .. })) {
        let _ = std::fs::remove_file(&index);
    }
    let done = done?;
    // After the data file: every blob its transactions name is on disk by
    // now (blob files are synced before their records are written).
    if let Some(blob_dir) = options.blob_dir {
        copy_blob_tree(blob_dir, &options.repository.join(BLOB_DIR))?;
    }
    Ok(done)
}

/// Copies the blob files of `from` that `to` lacks (or holds with another
/// size, from a copy cut short) into `to`, each through a synced temporary
/// file renamed into place; ZODB's `tmp/` and other dot files but
/// `.layout` are left out. Returns how many files were copied. Blob files
/// never change once committed, so a file present with its size is done.
pub fn copy_blob_tree(from: &Path, to: &Path) -> Result<u64> {
    let mut copied = 0u64;
    let mut stack = vec![(from.to_path_buf(), to.to_path_buf(), 0usize)];
    while let Some((src, dst, depth)) = stack.pop() {
        if depth > MAX_BLOB_DEPTH {
            return Err(repository_error(format!(
                "{}: blob directories nested deeper than {MAX_BLOB_DEPTH} levels",
                src.display()
            )));
        }
        std::fs::create_dir_all(&dst).map_err(io("creating", &dst))?;
        let mut added = false;
        for entry in std::fs::read_dir(&src).map_err(io("reading", &src))? {
            let entry = entry.map_err(io("reading", &src))?;
            let name = entry.file_name();
            let Some(text) = name.to_str() else { continue };
            let kind = entry.file_type().map_err(io("reading", &entry.path()))?;
            let skipped = (text.starts_with('.') && text != ".layout")
                || (depth == 0 && text == "tmp")
                || text.ends_with(".tmp");
            if skipped {
                continue;
            }
            let target = dst.join(&name);
            if kind.is_dir() {
                stack.push((entry.path(), target, depth + 1));
            } else if kind.is_file() {
                let size = entry
                    .metadata()
                    .map_err(io("reading", &entry.path()))?
                    .len();
                if std::fs::metadata(&target).is_ok_and(|m| m.len() == size) {
                    continue;
                }
                let part = dst.join(format!("{text}.part"));
                std::fs::copy(entry.path(), &part).map_err(io("copying to", &part))?;
                File::open(&part)
                    .and_then(|f| f.sync_all())
                    .map_err(io("syncing", &part))?;
                std::fs::rename(&part, &target).map_err(io("renaming to", &target))?;
                copied += 1;
                added = true;
            }
        }
        if added {
            File::open(&dst)
                .and_then(|d| d.sync_all())
                .map_err(io("syncing", &dst))?;
        }
    }
    Ok(copied)
}

enum Decision {
    Full,
    Incremental(u64),
    Unchanged,
}

/// repozo's choice between a full and an incremental backup.
fn decide(
    options: &BackupOptions<'_>,
    repofiles: &[PathBuf],
    file: &File,
    size: u64,
) -> Result<Decision> {
    let Some(full) = repofiles.first() else {
        return Ok(Decision::Full);
    };
    if options.full {
        return Ok(Decision::Full);
    }
    let source = options.file;
    let none = &mut |_: &[u8]| Ok(());
    if options.quick {
        let Some((start, end, sum)) = last_dat_entry(full)? else {
            return Ok(Decision::Full);
        };
        if size < end {
            return Ok(Decision::Full);
        }
        let now = md5_range(file, start, end - start, none).map_err(io("reading", source))?;
        return Ok(match (now == sum, size == end) {
            (false, _) => Decision::Full,
            (true, true) => Decision::Unchanged,
            (true, false) => Decision::Incremental(end),
        });
    }
    let (repo_size, repo_sum) = concat(repofiles, None)?;
    if size < repo_size {
        // Shrunk: packed since.
        return Ok(Decision::Full);
    }
    let backed_up = md5_range(file, 0, repo_size, none).map_err(io("reading", source))?;
    Ok(match (backed_up == repo_sum, size == repo_size) {
        (false, _) => Decision::Full,
        (true, true) => Decision::Unchanged,
        (true, false) => Decision::Incremental(repo_size),
    })
}

fn full_backup(options: &BackupOptions<'_>, file: &File, size: u64) -> Result<Backup> {
    let dest = options.repository.join(format!("{}.fs", options.stamp));
    if dest.exists() {
        return Err(repository_error(format!(
            "will not overwrite {}",
            dest.display()
        )));
    }
    let sum = copy_range(file, 0, size, &dest)?;
    append_dat(
        &with_extension(&dest, "dat"),
        &format!("{} 0 {size} {sum}", dest.display()),
    )?;
    if options.kill_old_on_full {
        delete_old_backups(options.repository)?;
    }
    Ok(Backup::Full {
        path: dest,
        bytes: size,
    })
}

fn incremental(
    options: &BackupOptions<'_>,
    repofiles: &[PathBuf],
    file: &File,
    from: u64,
    size: u64,
) -> Result<Backup> {
    let dest = options
        .repository
        .join(format!("{}.deltafs", options.stamp));
    if dest.exists() {
        return Err(repository_error(format!(
            "will not overwrite {}",
            dest.display()
        )));
    }
    let sum = copy_range(file, from, size - from, &dest)?;
    let dat = with_extension(&repofiles[0], "dat");
    append_dat(&dat, &format!("{} {from} {size} {sum}", dest.display()))?;
    Ok(Backup::Incremental {
        path: dest,
        bytes: size - from,
    })
}

/// Deletes every backup but the most recent full one (and its
/// incrementals' data files, `.dat` and `.index`), as repozo's `-k`.
fn delete_old_backups(repository: &Path) -> Result<()> {
    let mut names: Vec<String> = std::fs::read_dir(repository)
        .map_err(io("reading", repository))?
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter(|n| is_data_file(n))
        .collect();
    names.sort_unstable();
    let Some(recent) = names
        .iter()
        .rev()
        .find(|n| is_full(Path::new(n.as_str())))
        .cloned()
    else {
        return Ok(());
    };
    for name in names.iter().filter(|n| **n != recent) {
        let path = repository.join(name);
        for ext in ["dat", "index"] {
            let _ = std::fs::remove_file(with_extension(&path, ext));
        }
        std::fs::remove_file(&path).map_err(io("removing", &path))?;
    }
    Ok(())
}

/// Restores into `output` the state as of `date` (repozo's `-D`, a UTC
/// `YYYY-MM-DD[-HH[-MM[-SS]]]`; `None`: the latest), checking each file
/// against the `.dat` when `verify`; copies the last file's `.index`
/// beside `output`. Returns the bytes restored. Blob files, when the
/// repository has them, are restored apart with [`copy_blob_tree`] from
/// its [`BLOB_DIR`] (files of later transactions come along; nothing
/// refers to them).
pub fn restore(repository: &Path, date: Option<&str>, output: &Path, verify: bool) -> Result<u64> {
    let files = find_files(repository, date)?;
    if files.is_empty() {
        return Err(match date {
            Some(d) => {
                repository_error(format!("no backups in {} before {d}", repository.display()))
            }
            None => repository_error(format!("no backups in {}", repository.display())),
        });
    }
    if output.exists() {
        std::fs::remove_file(output).map_err(io("removing", output))?;
    }
    let part = PathBuf::from(format!("{}.part", output.display()));
    let mut out = File::create(&part).map_err(io("creating", &part))?;
    let total = if verify {
        let truth = dat_entries(&files[0])?;
        let mut total = 0;
        for f in &files {
            let (size, sum) = concat(std::slice::from_ref(f), Some(&mut out))?;
            let name = f.file_name().and_then(|n| n.to_str()).unwrap_or("");
            match truth.iter().find(|(n, _, _)| n == name) {
                Some((_, want_size, want_sum)) if *want_size == size && *want_sum == sum => {}
                Some((_, want_size, want_sum)) => {
                    return Err(repository_error(format!(
                        "{}: {size} bytes with md5 {sum}, the .dat says {want_size} bytes with md5 {want_sum}",
                        f.display()
                    )))
                }
                None => return Err(repository_error(format!("{}: not listed in the .dat", f.display()))),
            }
            total += size;
        }
        total
    } else {
        concat(&files, Some(&mut out))?.0
    };
    out.sync_all().map_err(io("syncing", &part))?;
    drop(out);
    let last = files.last().map(|f| with_extension(f, "index"));
    if let Some(index) = last.filter(|i| i.exists()) {
        let target = PathBuf::from(format!("{}.index", output.display()));
        std::fs::copy(&index, &target).map_err(io("copying the index to", &target))?;
    }
    std::fs::rename(&part, output).map_err(io("renaming to", output))?;
    Ok(total)
}

/// Checks the backups of the latest full backup against its `.dat`, as
/// repozo's `-V`: each file's size and (unless `quick`) md5. Returns how
/// many files were checked.
pub fn verify(repository: &Path, quick: bool) -> Result<usize> {
    let files = find_files(repository, None)?;
    let Some(full) = files.first() else {
        return Err(repository_error(format!(
            "no backups in {}",
            repository.display()
        )));
    };
    let entries = dat_entries(full)?;
    for (name, size, sum) in &entries {
        let path = repository.join(name);
        let (actual_size, actual_sum) = if quick {
            let len = std::fs::metadata(&path)
                .map_err(|_| repository_error(format!("{} is missing", path.display())))?
                .len();
            (len, sum.clone())
        } else {
            if !path.exists() {
                return Err(repository_error(format!("{} is missing", path.display())));
            }
            concat(std::slice::from_ref(&path), None)?
        };
        if actual_size != *size {
            return Err(repository_error(format!(
                "{} is {actual_size} bytes, should be {size} bytes",
                path.display()
            )));
        }
        if actual_sum != *sum {
            return Err(repository_error(format!(
                "{} has checksum {actual_sum} instead of {sum}",
                path.display()
            )));
        }
    }
    Ok(entries.len())
}

/// The `.dat` beside the full backup `full`: (file name, size, md5) of
/// each backup it lists.
fn dat_entries(full: &Path) -> Result<Vec<(String, u64, String)>> {
    let dat = with_extension(full, "dat");
    let text = std::fs::read_to_string(&dat).map_err(io("reading", &dat))?;
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|line| {
            let bad = || repository_error(format!("{}: bad line {line:?}", dat.display()));
            let fields: Vec<&str> = line.split_whitespace().collect();
            let [path, start, end, sum] = fields.as_slice() else {
                return Err(bad());
            };
            let (start, end): (u64, u64) = (
                start.parse().map_err(|_| bad())?,
                end.parse().map_err(|_| bad())?,
            );
            let name = Path::new(path)
                .file_name()
                .and_then(|n| n.to_str())
                .ok_or_else(bad)?
                .to_owned();
            Ok((name, end.saturating_sub(start), (*sum).to_owned()))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_as_repozo_writes_them() {
        assert!(is_stamp("2024-01-31-23-59-07"));
        assert!(!is_stamp("2024-01-31-23-59"));
        assert!(!is_stamp("2024_01-31-23-59-07"));
        assert!(is_data_file("2024-01-31-23-59-07.fs"));
        assert!(is_data_file("2024-01-31-23-59-07.deltafsz"));
        assert!(!is_data_file("2024-01-31-23-59-07.dat"));
        assert!(!is_data_file("tmp.tmp"));
        assert!(is_stamp(&stamp_now()));
    }

    #[test]
    fn find_files_takes_the_last_full_and_its_incrementals() {
        let dir = tempfile::tempdir().unwrap();
        for name in [
            "2024-01-01-00-00-00.fs",
            "2024-01-02-00-00-00.deltafs",
            "2024-01-03-00-00-00.fs",
            "2024-01-04-00-00-00.deltafs",
            "2024-01-05-00-00-00.deltafs",
            "2024-01-03-00-00-00.dat",
        ] {
            std::fs::write(dir.path().join(name), b"").unwrap();
        }
        let names = |when| -> Vec<String> {
            find_files(dir.path(), when)
                .unwrap()
                .iter()
                .map(|p| p.file_name().unwrap().to_str().unwrap().to_owned())
                .collect()
        };
        assert_eq!(
            names(None),
            [
                "2024-01-03-00-00-00.fs",
                "2024-01-04-00-00-00.deltafs",
                "2024-01-05-00-00-00.deltafs"
            ]
        );
        assert_eq!(
            names(Some("2024-01-02-12")),
            ["2024-01-01-00-00-00.fs", "2024-01-02-00-00-00.deltafs"]
        );
        assert!(names(Some("2023-12-31")).is_empty());
    }
}
