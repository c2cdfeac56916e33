//! Blobs through the Rust client against a stock Python ZEO 6 server
//! (`runzeo` with `<filestorage>` and `blob-dir`), beside Python clients:
//! the cache in ZEO's `zeocache` layout, uploads and downloads byte-exact
//! both ways, a cache directory shared with a Python client through ZEO's
//! `.lock` files, the size bound, and a shared blob directory.
//!
//! Needs the venv `cargo xtask test` creates; fails (never skips) without it.

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use common::{run_runzeo, Runzeo};
use zeo_client::{ClientOptions, ClientStorage, Layout, ServerAddress};
use zeo_storage::{BeginOptions, BlobSource, Blobs, Oid, Storage, Tid, TransactionMetaData};
use zeo_testkit::{free_port, python6, run_with_timeout, stdout_of, wait_until};

/// `runzeo` serving `dir/Data.fs` with its blobs in `dir/server-blobs`.
fn start_runzeo(dir: &Path) -> Runzeo {
    let port = free_port();
    zeo_testkit::write_runzeo_blob_config(dir, port);
    run_runzeo(dir, port)
}

fn options(port: u16, blob_dir: &Path, shared: bool) -> ClientOptions {
    let mut o = ClientOptions::new(vec![ServerAddress::localhost(port)]);
    o.wait_timeout = Duration::from_secs(20);
    o.blob_dir = Some(blob_dir.to_path_buf());
    o.shared_blob_dir = shared;
    o
}

/// Bytes that differ at every position of a 59,000-byte chunk.
fn pattern(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u32).wrapping_mul(2_654_435_761).to_be_bytes()[0] ^ seed)
        .collect()
}

/// Commits one blob revision of `oid` from `source`.
fn commit_blob(storage: &ClientStorage, oid: Oid, serial: Tid, source: BlobSource) -> Tid {
    let txn = storage
        .tpc_begin(&TransactionMetaData::default(), BeginOptions::default())
        .unwrap();
    let stored = storage
        .store_blob(txn, oid, serial, b"blob record", source)
        .and_then(|()| storage.tpc_vote(txn).map(drop));
    if let Err(e) = stored {
        storage.tpc_abort(txn);
        panic!("storing a blob: {e}");
    }
    storage.tpc_finish(txn, &mut |_| {}).unwrap()
}

/// A Python ZEO client with a blob directory runs `script`.
fn python(port: u16, blob_dir: &Path, shared: bool, script: &str) -> String {
    let full = format!(
        "import sys, hashlib, ZEO.ClientStorage\n\
         from ZODB.utils import p64, u64\n\
         from ZODB.Connection import TransactionMetaData\n\
         cs = ZEO.ClientStorage.ClientStorage(('127.0.0.1', {port}), wait_timeout=30, \
         blob_dir={blob_dir:?}, shared_blob_dir={shared})\n\
         {script}\n\
         cs.close()\n",
        blob_dir = blob_dir.display().to_string(),
        shared = if shared { "True" } else { "False" },
    );
    let out = run_with_timeout(
        Command::new(python6()).args(["-c", &full]),
        Duration::from_secs(90),
    );
    stdout_of(&out, "python ZEO client").trim().to_owned()
}

/// A Python client commits one new object with a blob holding the bytes of
/// the Python expression `content`; its oid and tid.
fn python_commits_blob(port: u16, blob_dir: &Path, shared: bool, content: &str) -> (Oid, Tid) {
    let out = python(
        port,
        blob_dir,
        shared,
        &format!(
            "import tempfile, os\n\
             oid = cs.new_oid()\n\
             fd, name = tempfile.mkstemp(dir=cs.temporaryDirectory())\n\
             os.write(fd, {content}); os.close(fd)\n\
             t = TransactionMetaData()\n\
             cs.tpc_begin(t)\n\
             cs.storeBlob(oid, p64(0), b'py record', name, '', t)\n\
             cs.tpc_vote(t)\n\
             tid = cs.tpc_finish(t)\n\
             print(u64(oid), u64(tid))"
        ),
    );
    let (oid, tid) = out.split_once(' ').unwrap();
    (Oid(oid.parse().unwrap()), Tid(tid.parse().unwrap()))
}

fn is_read_only(path: &Path) -> bool {
    std::fs::metadata(path).unwrap().permissions().mode() & 0o222 == 0
}

#[test]
fn blobs_go_up_and_down_byte_exact_between_rust_and_python_clients() {
    let dir = tempfile::tempdir().unwrap();
    let server = start_runzeo(dir.path());
    let cache_a = dir.path().join("cache-a");
    let a = ClientStorage::open(options(server.port, &cache_a, false)).unwrap();
    assert_eq!(
        std::fs::read_to_string(cache_a.join(".layout")).unwrap(),
        "zeocache"
    );
    assert!(cache_a.join("tmp").is_dir());

    // Up from a stream, 3 MB: 51 chunks and a partial one.
    let big = pattern(3_000_000, 1);
    let oid = a.new_oid().unwrap();
    let t1 = commit_blob(
        &a,
        oid,
        Tid::ZERO,
        BlobSource::Stream(Box::new(std::io::Cursor::new(big.clone()))),
    );
    // The committer's cache holds it under ZEO's name, read-only.
    let cached = cache_a.join(Layout::ZeoCache.file(oid, t1));
    assert_eq!(
        cached,
        cache_a.join(format!(
            "{}/{}.{:016x}.blob",
            oid.0 % 997,
            oid.0 / 997,
            t1.0
        ))
    );
    assert!(std::fs::read(&cached).unwrap() == big);
    assert!(is_read_only(&cached));
    // The server has it in its bushy layout.
    let on_server = dir
        .path()
        .join("server-blobs")
        .join(Layout::Bushy.file(oid, t1));
    assert!(std::fs::read(&on_server).unwrap() == big);
    assert_eq!(
        a.stats().blob_downloads,
        0,
        "the committer keeps its upload"
    );

    // Up from a file in the temporary directory: it is taken over.
    let small = pattern(10_000, 2);
    let temp = a.temporary_directory().join("upload");
    std::fs::write(&temp, &small).unwrap();
    let t2 = commit_blob(&a, oid, t1, BlobSource::File(temp.clone()));
    assert!(!temp.exists());
    assert!(std::fs::read(a.load_blob(oid, t2).unwrap()).unwrap() == small);

    // Down into another Rust client's cache.
    let cache_b = dir.path().join("cache-b");
    let b = ClientStorage::open(options(server.port, &cache_b, false)).unwrap();
    let path = b.load_blob(oid, t1).unwrap();
    assert_eq!(path, cache_b.join(Layout::ZeoCache.file(oid, t1)));
    assert!(std::fs::read(&path).unwrap() == big);
    assert_eq!(
        std::fs::metadata(&path).unwrap().permissions().mode() & 0o777,
        0o400
    );
    assert!(!PathBuf::from(format!("{}.dl", path.display())).exists());
    let mut read = Vec::new();
    b.open_blob(oid, t2)
        .unwrap()
        .read_to_end(&mut read)
        .unwrap();
    assert!(read == small);
    assert_eq!(b.stats().blob_downloads, 2);
    // Cached now: no download.
    b.load_blob(oid, t1).unwrap();
    assert_eq!(b.stats().blob_downloads, 2);
    // Through the kit's trait, generically.
    let generic: &dyn Storage = &b;
    match generic.as_blobs().unwrap().load_blob(oid, t2).unwrap() {
        zeo_storage::BlobData::Path(p) => assert!(std::fs::read(p).unwrap() == small),
        _ => panic!("a client hands out paths"),
    }
    // A revision without a blob is a POSKeyError.
    let err = b.load_blob(oid, Tid(t1.0 - 1)).unwrap_err();
    assert!(err.is_pos_key(), "{err}");

    // Python reads what Rust wrote, byte-exact.
    let cache_py = dir.path().join("cache-py");
    let digest = python(
        server.port,
        &cache_py,
        false,
        &format!(
            "data = open(cs.loadBlob(p64({}), p64({})), 'rb').read()\n\
             print(len(data), data == open({:?}, 'rb').read())",
            oid.0,
            t1.0,
            cached.display().to_string()
        ),
    );
    assert_eq!(digest, "3000000 True");

    // Rust reads what Python wrote.
    let (py_oid, py_tid) =
        python_commits_blob(server.port, &cache_py, false, "bytes(range(256)) * 4000");
    let expected: Vec<u8> = (0..4000).flat_map(|_| 0..=255u8).collect();
    assert!(std::fs::read(b.load_blob(py_oid, py_tid).unwrap()).unwrap() == expected);
    // ...and the Python client's cache uses the layout ours does.
    assert!(cache_py
        .join(Layout::ZeoCache.file(py_oid, py_tid))
        .exists());

    // An aborted blob store leaves no file behind.
    let txn = a
        .tpc_begin(&TransactionMetaData::default(), BeginOptions::default())
        .unwrap();
    a.store_blob(
        txn,
        oid,
        t2,
        b"rec",
        BlobSource::Stream(Box::new(std::io::Cursor::new(vec![1u8; 1000]))),
    )
    .unwrap();
    a.tpc_abort(txn);
    let oid_dir = cache_a.join(Layout::ZeoCache.oid_dir(oid));
    let left: Vec<_> = std::fs::read_dir(&oid_dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|n| n.ends_with(".tmp-"))
        .collect();
    assert!(left.is_empty(), "{left:?}");
    a.close().unwrap();
    b.close().unwrap();
}

/// A Python process that holds a blob directory's `.lock` until told to
/// let go; before letting go it copies `source` to `target`, as a
/// download by that process would leave it.
struct PythonLockHolder {
    child: std::process::Child,
    stdin: std::process::ChildStdin,
}

impl PythonLockHolder {
    fn start(dir: &Path, source: &Path, target: &Path) -> PythonLockHolder {
        let script = format!(
            "import sys, shutil, os, zc.lockfile\n\
             lock = zc.lockfile.LockFile(os.path.join({dir:?}, '.lock'))\n\
             print('locked', flush=True)\n\
             sys.stdin.readline()\n\
             shutil.copyfile({source:?}, {target:?})\n\
             lock.close()\n",
            dir = dir.display().to_string(),
            source = source.display().to_string(),
            target = target.display().to_string(),
        );
        let mut child = Command::new(python6())
            .args(["-c", &script])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let stdin = child.stdin.take().unwrap();
        let mut out = BufReader::new(child.stdout.take().unwrap());
        let mut line = String::new();
        out.read_line(&mut line).unwrap();
        assert_eq!(line.trim(), "locked");
        PythonLockHolder { child, stdin }
    }

    fn release(mut self) {
        writeln!(self.stdin, "go").unwrap();
        self.stdin.flush().unwrap();
        let status = self.child.wait().unwrap();
        assert!(status.success());
    }
}

impl Drop for PythonLockHolder {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The first line of `out` containing `needle`, reading at most 10,000
/// lines; `None` at the end of the output.
fn line_with(out: &mut impl BufRead, needle: &str) -> Option<String> {
    for _ in 0..10_000 {
        let mut line = String::new();
        if out.read_line(&mut line).unwrap() == 0 {
            return None;
        }
        if line.contains(needle) {
            return Some(line);
        }
    }
    None
}

#[test]
fn a_cache_directory_is_shared_with_a_python_client_through_its_locks() {
    let dir = tempfile::tempdir().unwrap();
    let server = start_runzeo(dir.path());
    let writer = ClientStorage::open(options(server.port, &dir.path().join("w"), false)).unwrap();
    let data = pattern(500_000, 3);
    let oid = writer.new_oid().unwrap();
    let tid = commit_blob(
        &writer,
        oid,
        Tid::ZERO,
        BlobSource::Stream(Box::new(std::io::Cursor::new(data.clone()))),
    );
    let committed = writer.load_blob(oid, tid).unwrap();

    // Python holds the directory's lock: our load waits for it, then
    // finds the file Python put there and downloads nothing.
    let shared = dir.path().join("shared-cache");
    let rust = ClientStorage::open(options(server.port, &shared, false)).unwrap();
    let oid_dir = shared.join(Layout::ZeoCache.oid_dir(oid));
    std::fs::create_dir_all(&oid_dir).unwrap();
    let target = shared.join(Layout::ZeoCache.file(oid, tid));
    let holder = PythonLockHolder::start(&oid_dir, &committed, &target);
    let loaded = std::thread::scope(|s| {
        let load = s.spawn(|| rust.load_blob(oid, tid));
        assert!(
            wait_until(Duration::from_secs(30), || rust.stats().blob_lock_waits
                == 1),
            "the load did not wait for the lock"
        );
        holder.release();
        load.join().unwrap()
    });
    assert_eq!(loaded.unwrap(), target);
    assert_eq!(rust.stats().blob_downloads, 0);
    assert!(std::fs::read(&target).unwrap() == data);

    // The other way: we hold the lock, Python's loadBlob waits, then takes
    // what we left instead of downloading it.
    let oid2 = writer.new_oid().unwrap();
    let tid2 = commit_blob(
        &writer,
        oid2,
        Tid::ZERO,
        BlobSource::Stream(Box::new(std::io::Cursor::new(data.clone()))),
    );
    let committed2 = writer.load_blob(oid2, tid2).unwrap();
    let oid2_dir = shared.join(Layout::ZeoCache.oid_dir(oid2));
    std::fs::create_dir_all(&oid2_dir).unwrap();
    let lock = zeo_client::blob_cache::DirLock::try_acquire(&oid2_dir)
        .unwrap()
        .expect("nobody holds it");
    let script = format!(
        "import logging, sys\n\
         logging.basicConfig(stream=sys.stdout, level=logging.DEBUG, format='%(message)s')\n\
         import ZEO.ClientStorage\n\
         from ZODB.utils import p64\n\
         cs = ZEO.ClientStorage.ClientStorage(('127.0.0.1', {port}), wait_timeout=30, blob_dir={shared:?})\n\
         received = []\n\
         original = cs.receiveBlobStart\n\
         cs.receiveBlobStart = lambda *a: (received.append(a), original(*a))\n\
         path = cs.loadBlob(p64({oid}), p64({tid}))\n\
         print('RESULT', len(received), open(path, 'rb').read() == open({committed:?}, 'rb').read(), flush=True)\n\
         cs.close()\n",
        port = server.port,
        shared = shared.display().to_string(),
        oid = oid2.0,
        tid = tid2.0,
        committed = committed2.display().to_string(),
    );
    let mut child = Command::new(python6())
        .args(["-c", &script])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut out = BufReader::new(child.stdout.take().unwrap());
    let waiting = line_with(&mut out, "failed to lock");
    assert!(waiting.is_some(), "Python never waited for our lock");
    std::fs::copy(&committed2, shared.join(Layout::ZeoCache.file(oid2, tid2))).unwrap();
    drop(lock);
    let result = line_with(&mut out, "RESULT");
    assert!(child.wait().unwrap().success());
    assert_eq!(result.as_deref().map(str::trim), Some("RESULT 0 True"));
    writer.close().unwrap();
    rust.close().unwrap();
}

/// The `.blob` files of a `zeocache` directory and their total size.
fn cached_blobs(base: &Path) -> (Vec<PathBuf>, u64) {
    let mut files = Vec::new();
    let mut size = 0;
    for dir in std::fs::read_dir(base).unwrap() {
        let dir = dir.unwrap();
        if !dir
            .file_name()
            .to_string_lossy()
            .bytes()
            .all(|b| b.is_ascii_digit())
        {
            continue;
        }
        for f in std::fs::read_dir(dir.path()).unwrap() {
            let f = f.unwrap();
            if f.file_name().to_string_lossy().ends_with(".blob") {
                size += f.metadata().unwrap().len();
                files.push(f.path());
            }
        }
    }
    (files, size)
}

fn set_accessed(path: &Path, secs: u64) {
    std::fs::File::open(path)
        .unwrap()
        .set_times(
            std::fs::FileTimes::new()
                .set_accessed(std::time::UNIX_EPOCH + Duration::from_secs(secs)),
        )
        .unwrap();
}

#[test]
fn the_blob_cache_stays_bounded_evicting_what_was_accessed_least_recently() {
    const BLOB: usize = 200_000;
    let dir = tempfile::tempdir().unwrap();
    let server = start_runzeo(dir.path());
    let writer = ClientStorage::open(options(server.port, &dir.path().join("w"), false)).unwrap();
    let revisions: Vec<(Oid, Tid)> = (0..8u8)
        .map(|i| {
            let oid = writer.new_oid().unwrap();
            let source = BlobSource::Stream(Box::new(std::io::Cursor::new(pattern(BLOB, i))));
            (oid, commit_blob(&writer, oid, Tid::ZERO, source))
        })
        .collect();

    // 1,000,000 bytes, checked every 10%: brought down to 900,000.
    let cache = dir.path().join("bounded");
    let mut o = options(server.port, &cache, false);
    o.blob_cache_size = Some(1_000_000);
    let reader = ClientStorage::open(o).unwrap();
    let idle = || {
        wait_until(Duration::from_secs(30), || {
            !reader.as_async().checking_blob_cache_size()
        })
    };
    assert!(idle());
    for &(oid, tid) in &revisions {
        let path = reader.load_blob(oid, tid).unwrap();
        assert_eq!(std::fs::read(path).unwrap().len(), BLOB);
        assert!(idle(), "a size check did not end");
    }
    // Downloads trigger checks on their own: what is left is the target
    // plus at most the blob downloaded after the last check's scan.
    let (_, size) = cached_blobs(&cache);
    assert!(size <= 900_000 + BLOB as u64, "{size} bytes cached");

    let rt = tokio::runtime::Runtime::new().unwrap();
    let left = rt
        .block_on(reader.as_async().check_blob_cache_size())
        .unwrap();
    assert!(left <= 900_000, "{left}");
    reader.close().unwrap();
    drop(reader);

    // Least recently accessed first. An unbounded client fills the same
    // directory again; every file is made old, the first one the oldest
    // but accessed last.
    let filler = ClientStorage::open(options(server.port, &cache, false)).unwrap();
    for (i, &(oid, tid)) in revisions.iter().enumerate() {
        filler.load_blob(oid, tid).unwrap();
        let path = cache.join(Layout::ZeoCache.file(oid, tid));
        set_accessed(&path, 1_000 + i as u64);
    }
    let first = cache.join(Layout::ZeoCache.file(revisions[0].0, revisions[0].1));
    set_accessed(&first, 10_000);
    // Hold the lock of the second-oldest's directory: it is in use.
    let second = revisions[1];
    let held = zeo_client::blob_cache::DirLock::try_acquire(
        &cache.join(Layout::ZeoCache.oid_dir(second.0)),
    )
    .unwrap()
    .unwrap();
    let (before, _) = cached_blobs(&cache);
    assert_eq!(before.len(), 8, "every revision was loaded again");
    let left = zeo_client::blob_cache::check_size(&cache, 900_000).unwrap();
    drop(held);
    let (files, size) = cached_blobs(&cache);
    assert_eq!(left, size);
    assert!(size <= 900_000, "{size}");
    // 8 files, 1.6 MB: four go. The locked one is skipped, so the
    // oldest unlocked ones go: 3, 4, 5, 6 (by index 2..=5).
    let kept =
        |(oid, tid): (Oid, Tid)| files.contains(&cache.join(Layout::ZeoCache.file(oid, tid)));
    assert!(kept(revisions[0]), "the most recently accessed stays");
    assert!(kept(second), "a file whose directory is locked stays");
    for &r in &revisions[2..6] {
        assert!(!kept(r), "{r:?} was accessed before the others");
    }
    for &r in &revisions[6..] {
        assert!(kept(r));
    }
    writer.close().unwrap();
    filler.close().unwrap();
}

#[test]
fn a_shared_blob_directory_is_read_and_written_in_place() {
    let dir = tempfile::tempdir().unwrap();
    let server = start_runzeo(dir.path());
    let server_blobs = dir.path().join("server-blobs");
    let shared = ClientStorage::open(options(server.port, &server_blobs, true)).unwrap();
    assert_eq!(
        shared.as_async().blob_dir().unwrap().layout(),
        Layout::Bushy
    );

    // Written in place: the server renames our file at vote.
    let data = pattern(1_000_000, 4);
    let oid = shared.new_oid().unwrap();
    let tid = commit_blob(
        &shared,
        oid,
        Tid::ZERO,
        BlobSource::Stream(Box::new(std::io::Cursor::new(data.clone()))),
    );
    let path = shared.load_blob(oid, tid).unwrap();
    assert_eq!(path, server_blobs.join(Layout::Bushy.file(oid, tid)));
    assert!(std::fs::read(&path).unwrap() == data);
    assert_eq!(shared.stats().blob_downloads, 0);
    let oid_dir = server_blobs.join(Layout::Bushy.oid_dir(oid));
    let temps: Vec<_> = std::fs::read_dir(&oid_dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|n| n.contains(".tmp"))
        .collect();
    assert!(temps.is_empty(), "{temps:?}");

    // A Python client with a cache of its own downloads it byte-exact.
    let out = python(
        server.port,
        &dir.path().join("py-cache"),
        false,
        &format!(
            "print(open(cs.loadBlob(p64({}), p64({})), 'rb').read() == open({:?}, 'rb').read())",
            oid.0,
            tid.0,
            path.display().to_string()
        ),
    );
    assert_eq!(out, "True");

    // A Python client on the shared directory writes; we read in place.
    let (py_oid, py_tid) =
        python_commits_blob(server.port, &server_blobs, true, "b'shared' * 1000");
    let path = shared.load_blob(py_oid, py_tid).unwrap();
    assert!(std::fs::read(path).unwrap() == b"shared".repeat(1000));
    // No file, no blob: nothing is asked of the server.
    let err = shared.load_blob(py_oid, Tid(py_tid.0 - 1)).unwrap_err();
    assert!(err.is_pos_key(), "{err}");
    assert_eq!(shared.stats().blob_downloads, 0);
    shared.close().unwrap();
}

#[test]
fn python_size_checks_our_cache_and_we_read_what_python_cached() {
    let dir = tempfile::tempdir().unwrap();
    let server = start_runzeo(dir.path());
    let cache = dir.path().join("cache");
    let client = ClientStorage::open(options(server.port, &cache, false)).unwrap();
    let revisions: Vec<(Oid, Tid)> = (0..4u8)
        .map(|i| {
            let oid = client.new_oid().unwrap();
            let source = BlobSource::Stream(Box::new(std::io::Cursor::new(pattern(100_000, i))));
            (oid, commit_blob(&client, oid, Tid::ZERO, source))
        })
        .collect();
    // The two least recently accessed go when Python's own check brings
    // our cache to 250,000 bytes: it reads our layout as its own.
    for (i, &(oid, tid)) in revisions.iter().enumerate() {
        set_accessed(
            &cache.join(Layout::ZeoCache.file(oid, tid)),
            1_000 + i as u64,
        );
    }
    let out = run_with_timeout(
        Command::new(python6()).args([
            "-c",
            &format!(
                "import ZEO.ClientStorage\nZEO.ClientStorage._check_blob_cache_size({:?}, 250000)\nprint('ok')",
                cache.display().to_string()
            ),
        ]),
        Duration::from_secs(60),
    );
    assert_eq!(stdout_of(&out, "python size check").trim(), "ok");
    let (files, size) = cached_blobs(&cache);
    assert_eq!(size, 200_000);
    for (i, &(oid, tid)) in revisions.iter().enumerate() {
        assert_eq!(
            files.contains(&cache.join(Layout::ZeoCache.file(oid, tid))),
            i >= 2
        );
    }
    // What a Python client downloads into the same directory, we take.
    let (oid, tid) = revisions[0];
    let out = python(
        server.port,
        &cache,
        false,
        &format!(
            "print(len(open(cs.loadBlob(p64({}), p64({})), 'rb').read()))",
            oid.0, tid.0
        ),
    );
    assert_eq!(out, "100000");
    let downloads = client.stats().blob_downloads;
    assert!(client.load_blob(oid, tid).unwrap().exists());
    assert_eq!(client.stats().blob_downloads, downloads);
    client.close().unwrap();
}
