//! Helpers shared by the FileStorage test files.

#![allow(dead_code)] // Each test crate uses its own subset.

use std::path::Path;

use zeo_storage::filestorage::{FileStorage, FileStorageOptions};
use zeo_storage::interface::BeginOptions;
use zeo_storage::{Oid, Storage, Tid, TransactionMetaData};

/// Opens (creating when missing) the FileStorage at `path`, writable.
pub fn open(path: &Path) -> FileStorage {
    FileStorage::open(path, FileStorageOptions::default()).unwrap()
}

/// Commits `stores` (`(oid, serial, data)`) in one transaction described
/// by `meta`. FileStorage resolves no conflicts, so the vote names no
/// objects.
pub fn commit_as(
    fs: &FileStorage,
    meta: &TransactionMetaData,
    stores: &[(u64, Tid, &[u8])],
) -> Tid {
    let txn = fs.tpc_begin(meta, BeginOptions::default()).unwrap();
    for (oid, serial, data) in stores {
        fs.store(txn, Oid(*oid), *serial, data).unwrap();
    }
    assert!(fs.tpc_vote(txn).unwrap().is_empty());
    fs.tpc_finish(txn, &mut |_| {}).unwrap()
}

/// Runs this test binary again to run only its ignored test `child_test`,
/// with the variables of `env` set, and kills it with SIGKILL once it printed `kill_after`
/// lines that start with `STAGE ` or `COMMITTED ` (the child flushes each).
/// Returns every complete `COMMITTED ` line, without the prefix. Panics,
/// with the child's standard error, when the child stalls for `stall`.
pub fn run_child_and_kill(
    child_test: &str,
    env: &[(&str, &std::ffi::OsStr)],
    kill_after: usize,
    stall: std::time::Duration,
) -> Vec<String> {
    use std::io::{BufRead, BufReader};
    use std::process::{Command, Stdio};

    let exe = std::env::current_exe().unwrap();
    let mut child = Command::new(exe)
        .args([
            "--exact",
            child_test,
            "--nocapture",
            "--include-ignored",
            "--test-threads=1",
        ])
        .envs(env.iter().copied())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stderr = child.stderr.take().unwrap();
    let errors = std::thread::spawn(move || {
        let mut text = String::new();
        let _ = std::io::Read::read_to_string(&mut stderr, &mut text);
        text
    });
    let stdout = child.stdout.take().unwrap();
    let (events, seen) = std::sync::mpsc::channel();
    let reader = std::thread::spawn(move || {
        let mut committed = Vec::new();
        for line in BufReader::new(stdout).split(b'\n') {
            let Ok(line) = line else { break };
            let line = String::from_utf8_lossy(&line);
            if line.starts_with("STAGE ") || line.starts_with("COMMITTED ") {
                // The parent may have stopped listening: it kills anyway.
                let _ = events.send(());
            }
            if let Some(rest) = line.strip_prefix("COMMITTED ") {
                committed.push(rest.to_string());
            }
        }
        committed
    });
    let deadline = std::time::Instant::now() + stall;
    for n in 0..kill_after {
        if seen
            .recv_timeout(deadline.saturating_duration_since(std::time::Instant::now()))
            .is_err()
        {
            let _ = child.kill();
            let status = child.wait().unwrap();
            panic!(
                "the child printed {n} of {kill_after} lines, then stopped ({status}):\n{}",
                errors.join().unwrap()
            );
        }
    }
    // Child::kill sends SIGKILL: no destructor, no flush, no close.
    child.kill().unwrap();
    child.wait().unwrap();
    // The pipes close with the child, so every complete line is read.
    reader.join().unwrap()
}
