//! A client with credentials against a stock Python ZEO 6 server, which
//! knows nothing of authentication: a clear `AuthError`, not a hang.
//!
//! Needs the venv `cargo xtask test` creates; fails (never skips) without it.

mod common;

use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use zeo_client::{ClientOptions, ClientStorage, Notice, ServerAddress};
use zeo_testkit::{free_port, python6};

struct Runzeo(Child);

impl Drop for Runzeo {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn credentials_for_a_stock_zeo6_server_are_an_auth_error() {
    let dir = zeo_testkit::TempDir::new().unwrap();
    let port = free_port();
    std::fs::write(
        dir.path().join("zeo.conf"),
        format!(
            "<zeo>\n  address 127.0.0.1:{port}\n</zeo>\n<filestorage>\n  path Data.fs\n</filestorage>\n"
        ),
    )
    .unwrap();
    let runzeo = python6().parent().unwrap().join("runzeo");
    let _server = Runzeo(
        Command::new(runzeo)
            .args(["-C", "zeo.conf"])
            .current_dir(dir.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("cannot start runzeo: run `cargo xtask test` to create the Python venvs"),
    );
    assert!(
        zeo_testkit::wait_until(Duration::from_secs(30), || {
            TcpStream::connect(("127.0.0.1", port)).is_ok()
        }),
        "runzeo did not start listening"
    );

    let mut options = ClientOptions::new(vec![ServerAddress::localhost(port)]);
    options.username = Some("alice".into());
    options.password = Some("s3cret".into());
    options.wait = false;
    options.min_disconnect_poll = Duration::from_millis(50);
    let client = ClientStorage::open(options.clone()).unwrap();
    let mut notices = client.subscribe();
    let reason = common::wait_notice(&mut notices, Duration::from_secs(20), |n| match n {
        Notice::AuthenticationFailed { reason, .. } => Some(reason),
        Notice::Connected { .. } => panic!("connected to a server that cannot authenticate"),
        _ => None,
    })
    .expect("no authentication failure reported");
    assert!(
        reason.contains("does not support authentication"),
        "{reason}"
    );
    drop(client);

    // Without credentials the same server serves the client.
    options.username = None;
    options.password = None;
    options.wait = true;
    options.wait_timeout = Duration::from_secs(20);
    let client = ClientStorage::open(options).unwrap();
    assert!(zeo_storage::Storage::new_oid(&client).is_ok());
}
