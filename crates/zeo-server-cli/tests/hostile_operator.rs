//! The `zeo-server` binary against operator mistakes and resource limits:
//! the `<zeo>` limit keys load from a configuration file and take effect,
//! and a Unix socket address naming an existing file never deletes it.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::Command;
use std::time::Duration;

use common::*;

#[test]
fn resource_limit_keys_are_accepted_from_a_config_file_and_applied() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("zeo.conf"),
        "<zeo>
  address 127.0.0.1:0
  reply-backlog-pause 1MB
  max-client-backlog 8MB
  max-total-backlog 32MB
  max-connections 1
  max-connections-per-address 1
  max-transaction-size 10MB
  login-timeout 30s
  public-status false
</zeo>
<mappingstorage 1>
</mappingstorage>
",
    )
    .unwrap();
    let server = ServerProcess::start(dir.path(), &["-C", "zeo.conf"]);

    // The first connection takes the only place (it reads its greeting,
    // so it is being served) ...
    let mut first = TcpStream::connect(server.addr()).unwrap();
    first
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut greeting = [0u8; 6];
    first.read_exact(&mut greeting).unwrap();
    assert_eq!(&greeting[4..], b"Z5");

    // ... so the second is closed at once, without a greeting.
    let mut second = TcpStream::connect(server.addr()).unwrap();
    second
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut buf = Vec::new();
    let n = second.read_to_end(&mut buf).unwrap_or(0);
    assert_eq!(n, 0, "a connection over max-connections got {buf:?}");

    // The first is served all the same: it asks for the status.
    first.write_all(b"\0\0\0\x04ruok").unwrap();
    let mut len = [0u8; 4];
    first.read_exact(&mut len).unwrap();
    let mut body = vec![0u8; u32::from_be_bytes(len) as usize];
    first.read_exact(&mut body).unwrap();
    let status = String::from_utf8(body).unwrap();
    // No authentication is configured: the full status, as ZEO answers.
    assert!(status.contains("\"1\""), "{status}");

    server.signal(libc::SIGTERM);
    let (status, stderr) = server.wait();
    assert!(status.success(), "{status:?}\n{stderr}");
    assert!(stderr.contains("max-connections"), "{stderr}");
}

#[test]
fn a_unix_address_naming_the_database_is_refused_and_the_file_survives() {
    let dir = tempfile::tempdir().unwrap();
    let served = dir.path().join("Data.fs");
    let out = Command::new(binary())
        .args(["-f", "Data.fs", "-a"])
        .arg(&served)
        .current_dir(dir.path())
        .output()
        .unwrap();
    // The storage was opened (so the file exists) before the address was
    // tried: the address must not remove it.
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(stderr.contains("not a socket"), "{stderr}");
    let data = std::fs::read(&served).expect("Data.fs was removed");
    assert!(data.starts_with(b"FS30"), "{data:?}");

    let check = Command::new(binary())
        .args(["check", "Data.fs"])
        .current_dir(dir.path())
        .output()
        .unwrap();
    assert!(check.status.success(), "{check:?}");
}

#[test]
fn a_bad_limit_value_stops_startup_naming_the_key() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("zeo.conf"),
        "<zeo>\n  address 127.0.0.1:0\n  max-client-backlog 0\n</zeo>\n<mappingstorage/>\n",
    )
    .unwrap();
    let out = Command::new(binary())
        .args(["-C", "zeo.conf"])
        .current_dir(dir.path())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(stderr.contains("max-client-backlog"), "{stderr}");
}
