//! `zeo-server backup` / `restore` in repozo's format: backups of a file a
//! server is committing to, restored by Python's repozo byte for byte, and
//! repozo's backups restored (and continued) by us; a pack replacing the
//! file during a backup does not change what is copied.

mod common;

use std::path::Path;
use std::process::{Command, Output};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::{binary, ServerProcess};
use zeo_storage::filestorage::{FileStorage, FileStorageOptions};
use zeo_storage::{BeginOptions, Oid, Pack, Storage, Tid, TransactionMetaData};
use zeo_testkit::serde_json::{self, Value};
use zeo_testkit::TempDir;

fn zeo_server(args: &[&str], cwd: &Path) -> Output {
    zeo_testkit::run_with_timeout(
        Command::new(binary()).args(args).current_dir(cwd),
        Duration::from_secs(120),
    )
}

/// `zeo-server backup [EXTRA] -f Data.fs -r repo --time STAMP` in `cwd`,
/// which must succeed; its line of output.
fn backup_at(cwd: &Path, stamp: &str, extra: &[&str]) -> String {
    let args = [
        &["backup"],
        extra,
        &["-f", "Data.fs", "-r", "repo", "--time", stamp],
    ]
    .concat();
    ok(&zeo_server(&args, cwd), "backup").trim().to_owned()
}

fn ok(out: &Output, what: &str) -> String {
    zeo_testkit::stdout_of(out, what)
}

/// Python's repozo with its file names fixed to `stamp`.
fn repozo(stamp: &str, args: &[&str], cwd: &Path) -> Output {
    zeo_testkit::run_python(
        &zeo_testkit::python6(),
        &zeo_testkit::script("repozo_run.py"),
        &[&[stamp][..], args].concat(),
        cwd,
    )
}

/// Commits `n` transactions of one object each (oids from `first`).
fn commit_objects(storage: &dyn Storage, first: u64, n: u64) {
    for i in first..first + n {
        let meta = TransactionMetaData {
            description: format!("txn {i}").into_bytes(),
            ..TransactionMetaData::default()
        };
        let txn = storage.tpc_begin(&meta, BeginOptions::default()).unwrap();
        storage
            .store(txn, Oid(i), Tid::ZERO, format!("object {i}").as_bytes())
            .unwrap();
        storage.tpc_vote(txn).unwrap();
        storage.tpc_finish(txn, &mut |_| {}).unwrap();
    }
}

fn read(path: &Path) -> Vec<u8> {
    std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

#[test]
fn backups_of_a_served_file_are_restored_by_repozo() {
    let dir = TempDir::new().unwrap();
    let d = dir.path();
    std::fs::create_dir(d.join("repo")).unwrap();
    let server = ServerProcess::start(d, &["-a", "127.0.0.1:0", "-f", "Data.fs"]);
    let port = server.port();

    // A client commits without pause while the backups run (bounded: at
    // most 5000 transactions).
    let stop = Arc::new(AtomicBool::new(false));
    // Each commit is announced (without ever blocking the committer), so
    // that every backup starts after at least one more commit.
    let (committed_tx, committed_rx) = std::sync::mpsc::sync_channel::<()>(1);
    let committer = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            let client = zeo_client::ClientStorage::open(zeo_client::ClientOptions::new(vec![
                zeo_client::ServerAddress::localhost(port),
            ]))
            .unwrap();
            let mut n = 0;
            while !stop.load(Ordering::SeqCst) && n < 5000 {
                commit_objects(&client, n + 1, 1);
                let _ = committed_tx.try_send(());
                n += 1;
            }
            client.close().unwrap();
            n
        })
    };
    let stamps = [
        "2024-01-01-00-00-00",
        "2024-01-01-00-00-01",
        "2024-01-01-00-00-02",
    ];
    let mut outputs = Vec::new();
    for stamp in stamps {
        while committed_rx.try_recv().is_ok() {}
        committed_rx
            .recv_timeout(Duration::from_secs(20))
            .expect("a commit within 20 s");
        outputs.push(backup_at(d, stamp, &[]));
    }
    stop.store(true, Ordering::SeqCst);
    let committed = committer.join().unwrap();
    assert!(committed > 0);
    server.signal(libc::SIGTERM);
    let (status, _) = server.wait();
    assert!(status.success());
    // The last backup, with the server stopped, catches up with the end.
    let last = backup_at(d, "2024-01-01-00-00-03", &[]);
    outputs.push(last);
    assert!(outputs[0].starts_with("full backup: "), "{outputs:?}");
    assert!(
        outputs[3].starts_with("incremental backup: "),
        "{outputs:?}"
    );
    // Once more: nothing changed.
    let again = backup_at(d, "2024-01-01-00-00-04", &[]);
    assert_eq!(again, "no changes since the last backup");
    assert!(!d.join("repo/2024-01-01-00-00-04.index").exists());

    let dat = std::fs::read_to_string(d.join("repo/2024-01-01-00-00-00.dat")).unwrap();
    assert_eq!(dat.lines().count(), 4, "{dat}");
    for stamp in stamps {
        assert!(d.join(format!("repo/{stamp}.index")).exists());
    }

    // repozo verifies and restores it, byte for byte, with our index.
    let verified = repozo("now", &["-V", "-r", "repo"], d);
    assert!(verified.status.success(), "{verified:?}");
    let restored = repozo("now", &["-R", "-r", "repo", "-o", "py.fs"], d);
    assert!(restored.status.success(), "{restored:?}");
    assert_eq!(read(&d.join("py.fs")), read(&d.join("Data.fs")));
    let checked = zeo_testkit::run_python(
        &zeo_testkit::python6(),
        &zeo_testkit::script("check_file.py"),
        &["py.fs"],
        d,
    );
    let seen: Value = serde_json::from_str(&ok(&checked, "check_file.py")).unwrap();
    assert_eq!(seen["index"]["matches_rebuilt"], true, "{}", seen["index"]);
    assert_eq!(seen["index"]["sane"], true, "{}", seen["index"]);

    // As of the second backup: ours and repozo's agree, and the file is a
    // prefix of the whole that ends where that backup ended.
    let ours = zeo_server(
        &[
            "restore",
            "-r",
            "repo",
            "-D",
            "2024-01-01-00-00-01",
            "-o",
            "ours.fs",
            "-w",
        ],
        d,
    );
    ok(&ours, "restore");
    let py = repozo(
        "now",
        &[
            "-R",
            "-r",
            "repo",
            "-D",
            "2024-01-01-00-00-01",
            "-o",
            "py1.fs",
        ],
        d,
    );
    assert!(py.status.success(), "{py:?}");
    let partial = read(&d.join("ours.fs"));
    assert_eq!(partial, read(&d.join("py1.fs")));
    let end: usize = dat
        .lines()
        .nth(1)
        .unwrap()
        .split_whitespace()
        .nth(2)
        .unwrap()
        .parse()
        .unwrap();
    assert_eq!(partial.len(), end);
    assert_eq!(partial[..], read(&d.join("Data.fs"))[..end]);
    assert!(d.join("ours.fs.index").exists());
    let check = zeo_server(&["check", "ours.fs"], d);
    ok(&check, "check");
}

#[test]
fn repozo_backups_are_restored_and_continued_by_us() {
    let dir = TempDir::new().unwrap();
    let d = dir.path();
    std::fs::create_dir(d.join("repo")).unwrap();
    let path = d.join("Data.fs");
    let grow = |first, n| {
        let fs = FileStorage::open(&path, FileStorageOptions::default()).unwrap();
        commit_objects(&fs, first, n);
        fs.close().unwrap();
    };
    grow(1, 20);
    let full = repozo(
        "2024-02-01-00-00-00",
        &["-B", "-f", "Data.fs", "-r", "repo"],
        d,
    );
    assert!(full.status.success(), "{full:?}");
    grow(21, 20);
    let inc = repozo(
        "2024-02-01-00-00-01",
        &["-B", "-f", "Data.fs", "-r", "repo"],
        d,
    );
    assert!(inc.status.success(), "{inc:?}");
    assert!(d.join("repo/2024-02-01-00-00-01.deltafs").exists());

    let out = zeo_server(
        &["restore", "-r", "repo", "-o", "ours.fs", "--with-verify"],
        d,
    );
    ok(&out, "restore");
    assert_eq!(read(&d.join("ours.fs")), read(&path));
    assert_eq!(
        read(&d.join("ours.fs.index")),
        read(&d.join("repo/2024-02-01-00-00-01.index"))
    );

    // Our incremental on top of repozo's, restored by repozo.
    grow(41, 20);
    let ours = backup_at(d, "2024-02-01-00-00-02", &[]);
    assert!(ours.starts_with("incremental backup: "), "{ours}");
    let quick = backup_at(d, "2024-02-01-00-00-03", &["-Q"]);
    assert_eq!(quick, "no changes since the last backup");
    let py = repozo("now", &["-R", "-r", "repo", "-o", "py.fs"], d);
    assert!(py.status.success(), "{py:?}");
    assert_eq!(read(&d.join("py.fs")), read(&path));

    // Both verify the mixed repository; a flipped byte fails both.
    let verified = zeo_server(&["verify", "-r", "repo"], d);
    assert_eq!(ok(&verified, "verify").trim(), "3 backup files verified");
    let inc = d.join("repo/2024-02-01-00-00-01.deltafs");
    let mut bytes = read(&inc);
    bytes[10] ^= 1;
    std::fs::write(&inc, bytes).unwrap();
    let broken = zeo_server(&["verify", "-r", "repo"], d);
    assert_eq!(broken.status.code(), Some(1), "{broken:?}");
    assert!(String::from_utf8_lossy(&broken.stderr).contains("has checksum"));
    let py_broken = repozo("now", &["-V", "-r", "repo"], d);
    assert!(!py_broken.status.success());
    let quick = zeo_server(&["verify", "-Q", "-r", "repo"], d);
    ok(&quick, "verify -Q");

    // A full backup with -k leaves only itself.
    let killed = backup_at(d, "2024-02-01-00-00-04", &["-F", "-k"]);
    assert!(killed.starts_with("full backup: "), "{killed}");
    let mut left: Vec<String> = std::fs::read_dir(d.join("repo"))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    left.sort();
    assert_eq!(
        left,
        [
            "2024-02-01-00-00-04.dat",
            "2024-02-01-00-00-04.fs",
            "2024-02-01-00-00-04.index"
        ]
    );
}

#[test]
fn a_pack_replacing_the_file_does_not_change_the_backup_point() {
    let dir = TempDir::new().unwrap();
    let path = dir.path().join("Data.fs");
    let fs = FileStorage::open(&path, FileStorageOptions::default()).unwrap();
    commit_objects(&fs, 1, 10);
    // A second revision of oid 1, so that the pack has one to remove.
    let (_, serial) = fs.load(Oid(1)).unwrap();
    let txn = fs
        .tpc_begin(&TransactionMetaData::default(), BeginOptions::default())
        .unwrap();
    fs.store(txn, Oid(1), serial, b"object 1, again").unwrap();
    fs.tpc_vote(txn).unwrap();
    fs.tpc_finish(txn, &mut |_| {}).unwrap();
    let before = read(&path);
    let reader = FileStorage::open(
        &path,
        FileStorageOptions {
            read_only: true,
            ..FileStorageOptions::default()
        },
    )
    .unwrap();
    let (file, size, indexed) = reader
        .backup_point(&dir.path().join("backup.index"))
        .unwrap();
    assert!(indexed);
    // The pack (without garbage collection: these records are not
    // pickles) drops the old revision and renames a new file over the
    // path; commits go on after it.
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64();
    fs.pack(now + 1.0, false).unwrap();
    commit_objects(&fs, 11, 3);
    assert_ne!(read(&path)[..], before[..]);
    let mut copied = vec![0u8; usize::try_from(size).unwrap()];
    std::os::unix::fs::FileExt::read_exact_at(&*file, &mut copied, 0).unwrap();
    assert_eq!(copied, before);
}

/// Every file under `dir` (relative path, bytes), sorted.
fn tree(dir: &Path) -> Vec<(String, Vec<u8>)> {
    let mut files = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                stack.push(path);
            } else {
                let rel = path.strip_prefix(dir).unwrap().display().to_string();
                files.push((rel, read(&path)));
            }
        }
    }
    files.sort();
    files
}

#[test]
fn blob_files_are_backed_up_beside_and_restored() {
    let dir = TempDir::new().unwrap();
    let d = dir.path();
    let fs = FileStorage::open(d.join("Data.fs"), FileStorageOptions::default()).unwrap();
    commit_objects(&fs, 1, 3);
    fs.close().unwrap();
    // A blob directory in ZODB's bushy layout, with what a backup leaves
    // out: the temporary directory and pack's `.removed` list.
    let blobs = d.join("blobs");
    let revision = |oid: u8, tid: u8| {
        let dir = blobs.join(format!("0x00/0x00/0x00/0x00/0x00/0x00/0x00/0x{oid:02x}"));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join(format!("0x00000000000000{tid:02x}.blob"));
        std::fs::write(&path, vec![oid ^ tid; 1000 + usize::from(tid)]).unwrap();
    };
    std::fs::create_dir_all(d.join("repo")).unwrap();
    std::fs::create_dir_all(blobs.join("tmp")).unwrap();
    std::fs::write(blobs.join("tmp/upload.tmp"), b"partial").unwrap();
    std::fs::write(blobs.join(".layout"), "bushy").unwrap();
    std::fs::write(blobs.join(".removed"), b"").unwrap();
    revision(1, 1);
    revision(2, 1);
    backup_at(d, "2024-03-01-10-00-00", &["--blob-dir", "blobs"]);
    let kept = |t: Vec<(String, Vec<u8>)>| -> Vec<(String, Vec<u8>)> {
        t.into_iter()
            .filter(|(name, _)| !name.starts_with("tmp/") && name != ".removed")
            .collect()
    };
    assert_eq!(tree(&d.join("repo/blobs")), kept(tree(&blobs)));
    assert!(!d.join("repo/blobs/tmp").exists());

    // The next backup copies only what is new; a file gone from the
    // storage (packed away) stays in the backup.
    revision(1, 2);
    let first = blobs.join("0x00/0x00/0x00/0x00/0x00/0x00/0x00/0x02/0x0000000000000001.blob");
    std::fs::remove_file(&first).unwrap();
    let mut expected = kept(tree(&blobs));
    let fs = FileStorage::open(d.join("Data.fs"), FileStorageOptions::default()).unwrap();
    commit_objects(&fs, 4, 1);
    fs.close().unwrap();
    backup_at(d, "2024-03-01-11-00-00", &["--blob-dir", "blobs"]);
    expected.push((
        "0x00/0x00/0x00/0x00/0x00/0x00/0x00/0x02/0x0000000000000001.blob".into(),
        vec![3; 1001],
    ));
    expected.sort();
    assert_eq!(tree(&d.join("repo/blobs")), expected);

    let out = ok(
        &zeo_server(
            &[
                "restore",
                "-r",
                "repo",
                "-o",
                "Restored.fs",
                "--blob-dir",
                "restored-blobs",
            ],
            d,
        ),
        "restore",
    );
    assert!(out.contains("4 blob files to restored-blobs"), "{out}");
    assert_eq!(tree(&d.join("restored-blobs")), expected);
    assert_eq!(read(&d.join("Restored.fs")), read(&d.join("Data.fs")));
}
