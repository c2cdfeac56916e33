//! The `zeo-server` binary configured for ZEO 3/4 digest authentication,
//! with a password database made by `zeo-server passwd`: zeo-rs clients log
//! in, stock Python ZEO 6 clients are turned away with an `AuthError`.

mod common;

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use common::*;
use zeo_client::{ClientOptions, ClientStorage, ServerAddress};
use zeo_storage::{BeginOptions, Storage, Tid, TransactionMetaData};

const CONFIG: &str = "<zeo>\n  address 127.0.0.1:0\n  authentication-protocol digest\n  \
                      authentication-database auth.db\n  authentication-realm zeo\n</zeo>\n\
                      <filestorage 1>\n  path Data.fs\n</filestorage>\n";

/// Writes the configuration and adds alice with `zeo-server passwd -C`.
fn configure(dir: &Path) {
    std::fs::write(dir.join("zeo.conf"), CONFIG).unwrap();
    add_user(dir, "alice", "s3cret");
    let db = std::fs::read_to_string(dir.join("auth.db")).unwrap();
    assert!(db.starts_with("realm zeo\nalice: "), "{db}");
}

fn options(port: u16, user: &str, password: &str) -> ClientOptions {
    let mut o = ClientOptions::new(vec![ServerAddress::localhost(port)]);
    o.username = Some(user.into());
    o.password = Some(password.into());
    o.wait_timeout = Duration::from_secs(10);
    o.min_disconnect_poll = Duration::from_millis(50);
    o
}

fn commit_and_load(client: &ClientStorage, data: &[u8]) -> Tid {
    let oid = client.new_oid().unwrap();
    let txn = client
        .tpc_begin(&TransactionMetaData::default(), BeginOptions::default())
        .unwrap();
    client.store(txn, oid, Tid::ZERO, data).unwrap();
    client.tpc_vote(txn).unwrap();
    let tid = client.tpc_finish(txn, &mut |_| {}).unwrap();
    assert_eq!(client.load(oid).unwrap(), (data.to_vec(), tid));
    tid
}

#[test]
fn our_client_logs_in_to_the_binary_and_commits() {
    let dir = zeo_testkit::TempDir::new().unwrap();
    configure(dir.path());
    let server = ServerProcess::start(dir.path(), &["-C", "zeo.conf"]);
    let client = ClientStorage::open(options(server.port(), "alice", "s3cret")).unwrap();
    let t1 = commit_and_load(&client, b"logged in");
    // A wrong password never gets a connection.
    let mut wrong = options(server.port(), "alice", "guess");
    wrong.wait_timeout = Duration::from_millis(500);
    let err = ClientStorage::open(wrong).unwrap_err();
    assert!(err.is_disconnected(), "{err}");
    // The first client is unaffected.
    assert!(commit_and_load(&client, b"still in") > t1);
    drop(client);
    server.signal(libc::SIGTERM);
    let (status, _) = server.wait();
    assert!(status.success(), "{status:?}");
}

/// A stock ZEO 6 client: `register` fails with the server's `AuthError`,
/// which ZEO logs, and the client gives up when its wait timeout ends.
const PYTHON_CLIENT: &str = r#"
import io, logging, sys, time
log = io.StringIO()
logging.basicConfig(stream=log, level=logging.ERROR)
import ZEO
from ZEO.Exceptions import ClientDisconnected
started = time.time()
try:
    ZEO.client(('127.0.0.1', int(sys.argv[1])), wait_timeout=3)
except ClientDisconnected:
    print('gave up after %.1f s' % (time.time() - started))
else:
    print('connected')
print(log.getvalue())
"#;

#[test]
fn a_stock_zeo6_client_gets_an_auth_error_not_a_hang() {
    let dir = zeo_testkit::TempDir::new().unwrap();
    configure(dir.path());
    let server = ServerProcess::start(dir.path(), &["-C", "zeo.conf"]);
    let started = Instant::now();
    let out = zeo_testkit::run_with_timeout(
        Command::new(zeo_testkit::python6())
            .args(["-c", PYTHON_CLIENT, &server.port().to_string()])
            .current_dir(dir.path())
            .env("PYTHONDONTWRITEBYTECODE", "1"),
        Duration::from_secs(60),
    );
    let stdout = zeo_testkit::stdout_of(&out, "the ZEO 6 client");
    assert!(stdout.starts_with("gave up after"), "{stdout}");
    assert!(stdout.contains("ZEO.Exceptions.AuthError"), "{stdout}");
    assert!(
        stdout.contains("Client was never authenticated with server!"),
        "{stdout}"
    );
    assert!(started.elapsed() < Duration::from_secs(30));
    // The server keeps serving zeo-rs clients.
    let client = ClientStorage::open(options(server.port(), "alice", "s3cret")).unwrap();
    commit_and_load(&client, b"after python");
    drop(client);
    drop(server);
}
