//! The `zeo-client` binary against an in-process `zeo-server` on
//! 127.0.0.1: every subcommand, its output and its exit status.

mod common;

use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::TestServer;
use serde_json::Value as Json;
use zeo_client::ClientStorage;
use zeo_storage::{BeginOptions, Oid, Storage, Tid, TransactionMetaData};

fn zeo_client(server: &str, args: &[&str]) -> Output {
    let out = Command::new(env!("CARGO_BIN_EXE_zeo-client"))
        .args(["--server", server, "--timeout", "20"])
        .args(args)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!stderr.contains("panicked"), "{args:?}: {stderr}");
    out
}

fn stdout(out: &Output) -> String {
    assert!(
        out.status.success(),
        "{:?}\nstdout: {}\nstderr: {}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout.clone()).unwrap()
}

/// A failure is one line on stderr and exit status 1.
fn one_line_failure(out: &Output) -> String {
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let stderr = String::from_utf8(out.stderr.clone()).unwrap();
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(stderr.starts_with("zeo-client: "), "{stderr}");
    stderr
}

fn json_lines(text: &str) -> Vec<Json> {
    text.lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{l}: {e}")))
        .collect()
}

/// Commits `data` to `oid` in its own transaction.
fn commit(storage: &ClientStorage, oid: Oid, serial: Tid, data: &[u8], description: &str) -> Tid {
    let meta = TransactionMetaData {
        user: b"tester".to_vec(),
        description: description.as_bytes().to_vec(),
        extension: Vec::new(),
    };
    let txn = storage.tpc_begin(&meta, BeginOptions::default()).unwrap();
    storage.store(txn, oid, serial, data).unwrap();
    storage.tpc_vote(txn).unwrap();
    storage.tpc_finish(txn, &mut |_| {}).unwrap()
}

#[test]
fn up_reports_health_and_commits_an_empty_transaction() {
    let server = TestServer::start();
    let text = stdout(&zeo_client(&server.addr(), &["up"]));
    assert!(text.contains("no root object yet"), "{text}");
    assert!(text.contains("read-only"), "{text}");
    assert!(text.contains("healthy"), "{text}");
    let before = server.handle.status("1").unwrap().commits;

    let text = stdout(&zeo_client(&server.addr(), &["up", "--commit"]));
    assert!(text.contains("writable"), "{text}");
    assert!(text.contains("committed an empty transaction 0x"), "{text}");
    assert_eq!(server.handle.status("1").unwrap().commits, before + 1);

    // The transaction it wrote is the newest in the log.
    let log = json_lines(&stdout(&zeo_client(
        &server.addr(),
        &["log", "-n", "1", "--json"],
    )));
    assert_eq!(log.len(), 1);
    assert_eq!(log[0]["description"], "zeo-client up");

    // With a root object, `up` loads it.
    let storage = server.client();
    commit(&storage, Oid::ROOT, Tid::ZERO, b"root record", "root");
    let text = stdout(&zeo_client(&server.addr(), &["up"]));
    assert!(text.contains("root object: 11 bytes"), "{text}");
}

#[test]
fn up_fails_within_its_timeout_when_nothing_listens() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let started = Instant::now();
    let out = Command::new(env!("CARGO_BIN_EXE_zeo-client"))
        .args([
            "up",
            "--server",
            &format!("127.0.0.1:{port}"),
            "--timeout",
            "1",
        ])
        .output()
        .unwrap();
    assert!(started.elapsed() < Duration::from_secs(10));
    let stderr = one_line_failure(&out);
    assert!(stderr.contains("unhealthy"), "{stderr}");
}

#[test]
fn cat_history_and_log_show_what_was_committed() {
    let server = TestServer::start();
    let storage = server.client();
    let oid = storage.new_oid().unwrap();
    let t1 = commit(&storage, oid, Tid::ZERO, b"first\x00\xff", "one");
    let t2 = commit(&storage, oid, t1, b"second", "two");
    let addr = server.addr();
    let decimal = oid.as_u64().to_string();
    let hex = format!("{oid}");

    let raw = zeo_client(&addr, &["cat", &decimal]);
    assert_eq!(stdout(&raw).as_bytes(), b"second");
    let old = zeo_client(&addr, &["cat", &hex, "--serial", &format!("{t1}")]);
    assert!(old.status.success());
    assert_eq!(old.stdout, b"first\x00\xff");
    let hexed = stdout(&zeo_client(
        &addr,
        &["cat", "--hex", &hex, "--serial", &t1.as_u64().to_string()],
    ));
    assert_eq!(hexed, "6669727374".to_owned() + "00ff\n");

    let history = json_lines(&stdout(&zeo_client(&addr, &["history", &hex, "--json"])));
    let tids: Vec<&str> = history.iter().map(|h| h["tid"].as_str().unwrap()).collect();
    assert_eq!(
        tids,
        [
            format!("{:016x}", t2.as_u64()),
            format!("{:016x}", t1.as_u64())
        ]
    );
    assert_eq!(history[0]["description"], "two");
    assert_eq!(history[0]["user"], "tester");
    let one = stdout(&zeo_client(&addr, &["history", &hex, "--size", "1"]));
    assert_eq!(one.lines().count(), 1, "{one}");
    assert!(one.contains(&format!("{t2}")), "{one}");

    let log = stdout(&zeo_client(&addr, &["log", "-n", "5"]));
    let lines: Vec<&str> = log.lines().collect();
    assert_eq!(lines.len(), 2, "{log}");
    assert!(
        lines[0].starts_with(&format!("{t2} ")) && lines[0].contains("\"two\""),
        "{log}"
    );
    assert!(
        lines[1].starts_with(&format!("{t1} ")) && lines[1].contains("\"one\""),
        "{log}"
    );

    // Unknown objects and bad ids fail with one line.
    let stderr = one_line_failure(&zeo_client(&addr, &["cat", "999999"]));
    assert!(
        stderr.contains("POSKeyError")
            || stderr.contains("999999")
            || stderr.contains("0x00000000000f423f"),
        "{stderr}"
    );
    let stderr = one_line_failure(&zeo_client(&addr, &["history", "0xnothex"]));
    assert!(stderr.contains("oid \"0xnothex\""), "{stderr}");
}

#[test]
fn status_and_info_as_lines_and_json() {
    let server = TestServer::start();
    let storage = server.client();
    let oid = storage.new_oid().unwrap();
    let tid = commit(&storage, oid, Tid::ZERO, b"x", "status");
    let addr = server.addr();

    let status = json_lines(&stdout(&zeo_client(&addr, &["status", "--json"])));
    assert_eq!(
        status[0]["last-transaction"],
        format!("{:016x}", tid.as_u64())
    );
    // The test's client and the command's own.
    assert_eq!(status[0]["connections"], 2);
    assert_eq!(status[0]["commits"], 1);
    let lines = stdout(&zeo_client(&addr, &["status"]));
    assert!(
        lines
            .lines()
            .any(|l| l.starts_with("commits:") && l.ends_with(" 1")),
        "{lines}"
    );

    let info = json_lines(&stdout(&zeo_client(&addr, &["info", "--json"])));
    assert_eq!(info[0]["length"], 1);
    assert_eq!(info[0]["supportsUndo"], true);
    let lines = stdout(&zeo_client(&addr, &["info"]));
    assert!(
        lines
            .lines()
            .any(|l| l.starts_with("length:") && l.ends_with(" 1")),
        "{lines}"
    );
}

#[test]
fn pack_discards_old_revisions() {
    let server = TestServer::start();
    let storage = server.client();
    // The root object: always reachable, so only its old revision can go.
    let record = |text: &str| {
        zeo_pickle::encode_record(
            &zeo_pickle::Value::global("persistent.mapping", "PersistentMapping"),
            &zeo_pickle::Value::Dict(vec![(
                zeo_pickle::Value::Str("data".into()),
                zeo_pickle::Value::Str(text.into()),
            )]),
        )
        .unwrap()
    };
    let t1 = commit(&storage, Oid::ROOT, Tid::ZERO, &record("old"), "one");
    commit(&storage, Oid::ROOT, t1, &record("new"), "two");
    let addr = server.addr();
    let revisions = || {
        stdout(&zeo_client(&addr, &["history", "0", "--size", "10"]))
            .lines()
            .count()
    };
    assert_eq!(revisions(), 2);

    // Keeping a day and a half keeps everything.
    let text = stdout(&zeo_client(&addr, &["pack", "--days", "1.5"]));
    assert!(text.starts_with("packed storage \"1\" to "), "{text}");
    assert_eq!(revisions(), 2);

    stdout(&zeo_client(&addr, &["pack"]));
    assert_eq!(revisions(), 1);

    let stderr = one_line_failure(&zeo_client(&addr, &["pack", "--days=-1"]));
    assert!(stderr.contains("--days"), "{stderr}");
}

#[test]
fn bench_reports_every_workload_and_loads_go_to_the_server() {
    let server = TestServer::start();
    let addr = server.addr();
    let loads_before = server.handle.status("1").unwrap().loads;
    let text = stdout(&zeo_client(
        &addr,
        &[
            "bench",
            "--prepare",
            "--objects",
            "50",
            "--ops",
            "40",
            "--clients",
            "1,2",
            "--object-size",
            "100",
            "--json",
        ],
    ));
    let lines = json_lines(&text);
    assert_eq!(lines[0]["prepared"], 50);
    let results = &lines[1..];
    let names: Vec<(&str, u64)> = results
        .iter()
        .map(|r| {
            (
                r["workload"].as_str().unwrap(),
                r["clients"].as_u64().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        names,
        [
            ("ping", 1),
            ("load", 1),
            ("prefetch", 1),
            ("commit", 1),
            ("commit100", 1),
            ("ping", 2),
            ("load", 2),
            ("prefetch", 2),
            ("commit", 2),
            ("commit100", 2)
        ]
    );
    for r in results {
        assert_eq!(r["ops"], 40, "{r}");
        assert!(r["ops_per_sec"].as_f64().unwrap() > 0.0, "{r}");
        assert!(
            r["p99_us"].as_f64().unwrap() >= r["p50_us"].as_f64().unwrap(),
            "{r}"
        );
    }
    // Cold loads: each of the 80 loads and the 80 prefetched ones (less
    // repeats within a batch) reached the server.
    let loads = server.handle.status("1").unwrap().loads - loads_before;
    assert!(loads >= 120, "{loads}");

    // The prepared objects are there, with the requested size.
    let record = zeo_client(&addr, &["cat", "50"]);
    assert_eq!(record.stdout.len(), 100);
    // Commit workloads created their own objects; preparing again finds
    // the storage in use.
    let stderr = one_line_failure(&zeo_client(
        &addr,
        &["bench", "--prepare-only", "--objects", "5"],
    ));
    assert!(stderr.contains("needs a new storage"), "{stderr}");
}

#[test]
fn bench_load_without_data_says_how_to_prepare() {
    let server = TestServer::start();
    let out = zeo_client(
        &server.addr(),
        &[
            "bench",
            "--workloads",
            "load",
            "--ops",
            "5",
            "--clients",
            "1",
        ],
    );
    let stderr = one_line_failure(&out);
    assert!(stderr.contains("--prepare"), "{stderr}");
}

#[test]
fn bench_idle_holds_connections_until_stdin_closes() {
    let server = TestServer::start();
    let mut child = Command::new(env!("CARGO_BIN_EXE_zeo-client"))
        .args(["--server", &server.addr(), "bench", "--idle", "30"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let ready: Json = serde_json::from_str(&line).unwrap();
    assert_eq!(ready["idle_connections"], 30);
    assert_eq!(server.handle.status("1").unwrap().connections, 30);
    let mut stdin = child.stdin.take().unwrap();
    stdin.write_all(b"done\n").unwrap();
    drop(stdin);
    assert!(child.wait().unwrap().success());
    // The server announces no closed connection: poll its count, bounded.
    assert!(
        zeo_testkit::wait_until(Duration::from_secs(10), || {
            server.handle.status("1").unwrap().connections == 0
        }),
        "connections not closed"
    );
}

#[test]
fn bad_addresses_and_arguments_fail_cleanly() {
    let stderr = one_line_failure(&zeo_client("no-port-here", &["status"]));
    assert!(stderr.contains("bad server address"), "{stderr}");
    let out = Command::new(env!("CARGO_BIN_EXE_zeo-client"))
        .args(["frobnicate"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let out = Command::new(env!("CARGO_BIN_EXE_zeo-client"))
        .args(["--help"])
        .output()
        .unwrap();
    assert!(out.status.success());
    for sub in [
        "up", "pack", "status", "info", "history", "cat", "log", "blob", "bench",
    ] {
        assert!(String::from_utf8_lossy(&out.stdout).contains(sub), "{sub}");
    }
}
