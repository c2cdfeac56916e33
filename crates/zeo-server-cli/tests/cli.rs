//! The `zeo-server` binary: serving, signals, log rotation, and the offline
//! `check`, `dump` and `pack` subcommands.

mod common;

use std::process::Command;
use std::time::Duration;

use common::*;

#[test]
fn serves_a_filestorage_and_exits_cleanly_on_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    let server = ServerProcess::start(
        dir.path(),
        &[
            "-a",
            "127.0.0.1:0",
            "-f",
            "Data.fs",
            "--pid-file",
            "zeo.pid",
        ],
    );
    let status = ruok(server.addr());
    assert!(status.contains("\"1\""), "{status}");
    assert!(
        status.contains("\"last-transaction\": \"0000000000000000\""),
        "{status}"
    );
    let pid = std::fs::read_to_string(dir.path().join("zeo.pid")).unwrap();
    assert_eq!(pid.trim(), server.child.id().to_string());
    server.signal(libc::SIGTERM);
    let (status, stderr) = server.wait();
    assert!(status.success(), "{status:?}\n{stderr}");
    assert!(stderr.contains("closed storage"), "{stderr}");
    assert!(!dir.path().join("zeo.pid").exists());
    assert!(
        !dir.path().join("Data.fs.lock").exists()
            || std::fs::metadata(dir.path().join("Data.fs")).is_ok()
    );
    // The file it created is a sound, empty Data.fs.
    let out = Command::new(binary())
        .args(["check", "Data.fs"])
        .current_dir(dir.path())
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
}

#[test]
fn default_is_var_data_fs() {
    let dir = tempfile::tempdir().unwrap();
    // Only the address is given (port 8100 may be taken on a shared host).
    let server = ServerProcess::start(dir.path(), &["-a", "127.0.0.1:0"]);
    assert!(dir.path().join("var/Data.fs").is_file());
    server.signal(libc::SIGINT);
    assert!(server.wait().0.success());
}

#[test]
fn sigusr2_reopens_a_renamed_log_file() {
    let dir = tempfile::tempdir().unwrap();
    let conf = dir.path().join("zeo.conf");
    std::fs::write(
        &conf,
        "<zeo>\n  address 127.0.0.1:0\n</zeo>\n<mappingstorage 1>\n</mappingstorage>\n<eventlog>\n  level info\n  <logfile>\n    path zeo.log\n    format %(levelname)s %(message)s\n  </logfile>\n</eventlog>\n",
    )
    .unwrap();
    let server = ServerProcess::start(dir.path(), &["-C", "zeo.conf"]);
    let log = dir.path().join("zeo.log");
    let first = std::fs::read_to_string(&log).unwrap();
    assert!(first.contains("INFO listening"), "{first}");
    std::fs::rename(&log, dir.path().join("zeo.log.1")).unwrap();
    server.signal(libc::SIGUSR2);
    assert!(
        wait_for_file(&log, Duration::from_secs(10), || false),
        "log not reopened"
    );
    let _ = ruok(server.addr());
    server.signal(libc::SIGTERM);
    assert!(server.wait().0.success());
    let fresh = std::fs::read_to_string(&log).unwrap();
    assert!(fresh.contains("shutting down"), "{fresh}");
    let old = std::fs::read_to_string(dir.path().join("zeo.log.1")).unwrap();
    assert!(!old.contains("shutting down"), "{old}");
}

#[test]
fn a_tls_configuration_is_refused_rather_than_served_in_the_clear() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("zeo.conf"),
        "<zeo>\n  address 127.0.0.1:0\n  <ssl>\n    certificate server.pem\n    authenticate DYNAMIC\n  </ssl>\n</zeo>\n\
         <filestorage>\n  path Data.fs\n</filestorage>\n",
    )
    .unwrap();
    let out = Command::new(binary())
        .args(["-C", "zeo.conf"])
        .current_dir(dir.path())
        .output()
        .unwrap();
    assert!(!out.status.success(), "{out:?}");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(!stdout.contains("listening on"), "{out:?}");
    assert!(
        String::from_utf8_lossy(&out.stderr)
            .contains("zeo.conf: <ssl>: authenticate DYNAMIC is a hook for Python code"),
        "{out:?}"
    );
}

#[test]
fn second_server_on_the_same_address_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let first = ServerProcess::start(dir.path(), &["-a", "127.0.0.1:0", "-f", "a.fs"]);
    let addr = first.addr().to_string();
    let out = Command::new(binary())
        .args(["-a", &addr, "-f", "b.fs"])
        .current_dir(dir.path())
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("in use"),
        "{out:?}"
    );
}

#[test]
fn check_reports_damage_with_an_offset() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("bad.fs"), b"FS30\0\0\0\0garbage").unwrap();
    let out = Command::new(binary())
        .args(["check", "bad.fs"])
        .current_dir(dir.path())
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("at byte"), "{err}");
}

#[test]
fn dump_and_pack_an_empty_storage() {
    let dir = tempfile::tempdir().unwrap();
    let server = ServerProcess::start(dir.path(), &["-a", "127.0.0.1:0", "-f", "Data.fs"]);
    server.signal(libc::SIGTERM);
    assert!(server.wait().0.success());
    let out = Command::new(binary())
        .args(["dump", "Data.fs"])
        .current_dir(dir.path())
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let out = Command::new(binary())
        .args(["pack", "Data.fs", "--days", "1"])
        .current_dir(dir.path())
        .output()
        .unwrap();
    // An empty storage has no root to collect from: ZODB says KeyError.
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success() || err.contains("KeyError") || err.contains("root"),
        "{out:?}"
    );
}
