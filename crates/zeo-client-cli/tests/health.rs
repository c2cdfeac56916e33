//! Health checks: `status --nagios` (against Python's zeo-nagios on the
//! same server and state file), `up --json` and `up --nagios`, and the
//! credentials options against a server that requires a login.

mod common;

use std::process::{Command, Output};
use std::sync::Arc;
use std::time::Duration;

use common::TestServer;
use zeo_server::ServerSettings;
use zeo_storage::{BeginOptions, MappingStorage, Oid, Storage, Tid, TransactionMetaData};
use zeo_testkit::serde_json::{self, Value as Json};

fn zeo_client(port: u16, args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_zeo-client"));
    cmd.args(["--server", &format!("127.0.0.1:{port}")]);
    if !args.contains(&"--timeout") {
        cmd.args(["--timeout", "20"]);
    }
    cmd.args(args);
    for (k, v) in env {
        cmd.env(k, v);
    }
    zeo_testkit::run_with_timeout(&mut cmd, Duration::from_secs(60))
}

fn text(out: &Output) -> String {
    String::from_utf8(out.stdout.clone()).unwrap()
}

/// Python's `zeo-nagios -m [-s STATE] 127.0.0.1:PORT`.
fn zeo_nagios(port: u16, state: Option<&std::path::Path>) -> Output {
    let mut cmd = Command::new(zeo_testkit::python6());
    cmd.args([
        "-c",
        "import sys, ZEO.nagios; sys.exit(ZEO.nagios.main())",
        "-m",
    ]);
    if let Some(state) = state {
        cmd.arg("-s").arg(state);
    }
    cmd.arg(format!("127.0.0.1:{port}"));
    zeo_testkit::run_with_timeout(&mut cmd, Duration::from_secs(60))
}

fn commit_one(server: &TestServer) {
    let client = server.client();
    let meta = TransactionMetaData::default();
    let txn = client.tpc_begin(&meta, BeginOptions::default()).unwrap();
    client.store(txn, Oid(0), Tid::ZERO, b"root").unwrap();
    client.tpc_vote(txn).unwrap();
    client.tpc_finish(txn, &mut |_| {}).unwrap();
    client.close().unwrap();
}

#[test]
fn status_nagios_matches_zeo_nagios_and_shares_its_state_file() {
    let server = TestServer::start();
    // Empty storage: WARNING, as zeo-nagios says.
    let ours = zeo_client(server.port, &["status", "--nagios"], &[]);
    let python = zeo_nagios(server.port, None);
    assert_eq!(ours.status.code(), Some(1), "{ours:?}");
    assert_eq!(python.status.code(), Some(1), "{python:?}");
    assert!(
        text(&ours).starts_with("Empty storage '1'|active_txns=0\n"),
        "{}",
        text(&ours)
    );
    assert!(
        text(&python).starts_with("Empty storage '1'|active_txns=0\n"),
        "{}",
        text(&python)
    );

    commit_one(&server);
    // Python keeps the state; we read it and report rates, then write it
    // back in the same format, which Python reads in turn.
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("zeo-nagios.json");
    let python = zeo_nagios(server.port, Some(&state));
    assert_eq!(python.status.code(), Some(0), "{python:?}");
    let state_arg = state.to_str().unwrap();
    let ours = zeo_client(
        server.port,
        &[
            "status",
            "--nagios",
            "--state-file",
            state_arg,
            "--per",
            "seconds",
        ],
        &[],
    );
    assert_eq!(ours.status.code(), Some(0), "{ours:?}");
    let out = text(&ours);
    assert!(out.starts_with("OK|active_txns=0\n| "), "{out}");
    // The gauges match Python's lines (connections differs by the checker
    // itself: zeo-nagios sends ruok, which registers nothing).
    assert!(out.contains("\n waiting=0\n"), "{out}");
    for rate in ["commits", "loads", "stores", "aborts", "conflicts"] {
        assert!(
            out.contains(&format!("\n {rate}=")),
            "{rate} missing: {out}"
        );
    }
    let saved: Json = serde_json::from_str(&std::fs::read_to_string(&state).unwrap()).unwrap();
    assert_eq!(saved["1"]["commits"], 1);
    let python = zeo_nagios(server.port, Some(&state));
    assert_eq!(python.status.code(), Some(0), "{python:?}");
    assert!(text(&python).contains("\n commits="), "{}", text(&python));
}

#[test]
fn up_as_json_and_nagios_and_down_is_critical() {
    let server = TestServer::start();
    let json = zeo_client(server.port, &["up", "--json", "--commit"], &[]);
    assert!(json.status.success(), "{json:?}");
    let v: Json = serde_json::from_str(text(&json).trim()).unwrap();
    assert_eq!(v["healthy"], true);
    assert_eq!(v["storage"], "1");
    assert_eq!(v["read_only"], false);
    assert!(v["committed"].is_string(), "{v}");
    assert!(v["root"].is_null(), "{v}");

    let nagios = zeo_client(server.port, &["up", "--nagios"], &[]);
    assert_eq!(nagios.status.code(), Some(0), "{nagios:?}");
    assert!(
        text(&nagios).starts_with("OK: storage \"1\" answers|elapsed="),
        "{}",
        text(&nagios)
    );

    // Nobody listens on a port just released.
    let dead = zeo_testkit::free_port();
    let args = ["--timeout", "1"];
    let down = zeo_client(dead, &[&args[..], &["up", "--nagios"]].concat(), &[]);
    assert_eq!(down.status.code(), Some(2), "{down:?}");
    assert!(text(&down).starts_with("CRITICAL: "), "{}", text(&down));
    let down = zeo_client(dead, &[&args[..], &["status", "--nagios"]].concat(), &[]);
    assert_eq!(down.status.code(), Some(2), "{down:?}");
    assert!(text(&down).starts_with("Can't connect "), "{}", text(&down));
    let down = zeo_client(dead, &[&args[..], &["up", "--json"]].concat(), &[]);
    assert_eq!(down.status.code(), Some(1), "{down:?}");
    let v: Json = serde_json::from_str(text(&down).trim()).unwrap();
    assert_eq!(v["healthy"], false);
}

#[test]
fn checks_log_in_with_the_credentials_options() {
    let mut db = zeo_auth::PasswordDatabase::new(Some("zeo")).unwrap();
    db.add_user("nagios", "s3cret").unwrap();
    let settings = ServerSettings {
        authentication: Some(Arc::new(zeo_auth::ServerAuthenticator::new(db).unwrap())),
        ..ServerSettings::default()
    };
    let server = TestServer::with_settings(settings, Arc::new(MappingStorage::new("1")));
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("password");
    std::fs::write(&file, "s3cret\n").unwrap();
    let file = file.to_str().unwrap();

    let ok = zeo_client(
        server.port,
        &[
            "--username",
            "nagios",
            "--password-file",
            file,
            "status",
            "--nagios",
        ],
        &[],
    );
    assert_eq!(ok.status.code(), Some(1), "empty storage: {ok:?}");
    assert!(text(&ok).starts_with("Empty storage"), "{ok:?}");
    let ok = zeo_client(
        server.port,
        &["--username", "nagios", "--realm", "zeo", "up", "--json"],
        &[("ZEO_PASSWORD", "s3cret")],
    );
    assert!(ok.status.success(), "{ok:?}");
    let args = ["--timeout", "2", "--username", "nagios", "up", "--nagios"];
    let wrong = zeo_client(server.port, &args, &[("ZEO_PASSWORD", "wrong")]);
    assert_eq!(wrong.status.code(), Some(2), "{wrong:?}");
    assert!(text(&wrong).starts_with("CRITICAL: "), "{wrong:?}");
}
