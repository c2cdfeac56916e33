//! ZEO's own test suite, shipped in the ZEO wheels, run against the
//! `zeo-server` binary instead of Python's server.
//!
//! `tests/python/zeo_suite/run.py` replaces ZEO's `start_zeo_server` (the
//! one place ZEO's tests start servers) with one that writes the same
//! ZConfig file and starts this binary, then runs the generic storage tests
//! (`testZEO.FileStorageTests`, `MappingStorageTests`, ...), connection,
//! invalidation and conflict-resolution tests, and the blob test classes
//! and doctests (`BlobAdaptedFileStorageTests`, `BlobWritableCacheTests`,
//! ZODB's `storage_reusable_suite` with non-shared and shared blob
//! directories, `zeo_blob_cache.test`). Tests that cannot apply (Python
//! server internals) are listed with their reasons in
//! `tests/python/zeo_suite/skips.txt`.
//!
//! By default a selection bounded to about a minute per ZEO version runs;
//! `ZEO_SUITE_FULL=1` adds the long tail (reconnection and invalidation
//! stress tests, ZODB's long race tests).
//!
//! On PostgreSQL (`run.py --postgres`), every storage section the tests
//! write becomes a `<relstorage>` on a fresh database of the test cluster,
//! and `FileStorageTests` runs (its mixins assume a storage, not a
//! Data.fs, and include every one `MappingStorageTests` runs), with the
//! blob doctests and the blob tests of the blob classes (a shared blob
//! directory), and the exceptions in
//! `tests/python/zeo_suite/skips_postgres.txt`.

mod common;

use std::io::Read;
use std::net::TcpStream;
use std::path::Path;
use std::time::{Duration, Instant};

use common::ServerProcess;

use zeo_testkit::serde_json::Value;
use zeo_testkit::{python5, python6, run_python_with_timeout, script, TempDir};

/// Fewer tests than this means the selection silently lost classes.
const MIN_TESTS_RUN: u64 = 450;

fn full_run() -> bool {
    std::env::var_os("ZEO_SUITE_FULL").is_some_and(|v| !v.is_empty() && v != "0")
}

/// Runs the suite with `python` and checks its summary line.
fn run_suite(python: &Path, label: &str) {
    run_suite_with(python, label, &[], MIN_TESTS_RUN);
}

/// [`run_suite`] with more arguments for `run.py` and its own floor on the
/// number of tests run.
fn run_suite_with(python: &Path, label: &str, extra: &[&str], min_run: u64) {
    let dir = TempDir::new().unwrap();
    // On PostgreSQL every commit is a database transaction: the selection
    // takes about 4.5 minutes alone, more beside the other suites.
    let timeout = if full_run() || !extra.is_empty() {
        Duration::from_secs(900)
    } else {
        Duration::from_secs(300)
    };
    let server = env!("CARGO_BIN_EXE_zeo-server");
    let out = run_python_with_timeout(
        python,
        &script("zeo_suite/run.py"),
        &[&["--server", server], extra].concat(),
        dir.path(),
        timeout,
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    let report = || format!("--- stdout ---\n{stdout}\n--- stderr ---\n{stderr}");
    let summary: Value = stdout
        .lines()
        .rev()
        .find_map(|l| l.strip_prefix("ZEO_SUITE_SUMMARY "))
        .map(|json| zeo_testkit::serde_json::from_str(json).unwrap())
        .unwrap_or_else(|| panic!("{label}: the suite printed no summary\n{}", report()));
    let count = |key: &str| summary[key].as_u64().unwrap_or(u64::MAX);
    assert!(
        out.status.success() && count("failed") == 0 && count("errors") == 0,
        "{label}: ZEO tests failed against zeo-server: {}\n{}",
        summary["failing"],
        report()
    );
    assert!(
        count("run") >= min_run,
        "{label}: only {} tests ran\n{}",
        count("run"),
        report()
    );
    assert_eq!(
        count("passed") + count("skipped"),
        count("run"),
        "{label}: every test passes or is a listed skip\n{}",
        report()
    );
    // What `cargo test -- --nocapture` shows: the per-class table.
    let table = stdout
        .lines()
        .skip_while(|l| !l.starts_with("class "))
        .take_while(|l| !l.starts_with("ZEO_SUITE_SUMMARY"))
        .collect::<Vec<_>>()
        .join("\n");
    println!("{label}\n{table}");
}

#[test]
fn zeo6_test_suite_passes_against_zeo_server() {
    run_suite(&python6(), "ZEO 6");
}

#[test]
fn zeo5_test_suite_passes_against_zeo_server() {
    run_suite(&python5(), "ZEO 5.4.1");
}

/// Fewer tests than this on PostgreSQL means the selection lost classes.
const MIN_TESTS_RUN_POSTGRES: u64 = 135;

#[test]
fn zeo6_generic_tests_pass_against_zeo_server_on_postgresql() {
    let cluster = zeo_testkit::postgres::Cluster::ensure();
    let socket_dir = cluster.socket_dir().to_str().unwrap().to_owned();
    run_suite_with(
        &python6(),
        "ZEO 6 on PostgreSQL",
        &["--postgres", &socket_dir],
        MIN_TESTS_RUN_POSTGRES,
    );
}

/// Found by `checkDisconnectionError` stalling 30 s: a peer that connected
/// but never answered the protocol greeting held up a SIGTERM shutdown for
/// the 60 s handshake timeout (ZEO's tests leave such sockets behind).
#[test]
fn sigterm_does_not_wait_for_a_peer_that_never_answered_the_greeting() {
    let dir = TempDir::new().unwrap();
    let server = ServerProcess::start(dir.path(), &["-a", "127.0.0.1:0", "-f", "Data.fs"]);
    let mut silent = TcpStream::connect(server.addr()).unwrap();
    // The greeting arrives, so the connection is past accept().
    silent
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut greeting = [0u8; 6];
    silent.read_exact(&mut greeting).unwrap();
    let started = Instant::now();
    server.signal(libc::SIGTERM);
    let (status, stderr) = server.wait();
    assert!(status.success(), "{status:?}\n{stderr}");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "shutdown took {:?}",
        started.elapsed()
    );
}
