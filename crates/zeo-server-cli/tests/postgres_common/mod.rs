//! What the PostgreSQL fault and history tests share: `zeo-server`
//! processes over a private cluster, clients of them, commits and
//! questions to the database.
#![allow(dead_code)]

use std::path::Path;
use std::time::{Duration, Instant};

use zeo_client::{ClientOptions, ClientStorage, ServerAddress};
use zeo_storage::{BeginOptions, Oid, Storage, Tid, TransactionMetaData};
use zeo_testkit::postgres::PrivateCluster;
use zeo_testkit::run_with_timeout;

use crate::common::ServerProcess;

/// How long any one wait of these tests may take.
pub const PATIENCE: Duration = Duration::from_secs(60);

/// Starts a `zeo-server` serving the database at `dsn` as storage `1`.
pub fn serve(dir: &Path, address: &str, dsn: &str) -> ServerProcess {
    std::fs::create_dir_all(dir).unwrap();
    let conf = format!(
        "%import relstorage\n<zeo>\n  address {address}\n</zeo>\n\
         <relstorage 1>\n  <postgresql>\n    dsn {dsn}\n  </postgresql>\n</relstorage>\n"
    );
    std::fs::write(dir.join("zeo.conf"), conf).unwrap();
    ServerProcess::start(dir, &["-C", "zeo.conf"])
}

pub fn client(server: &ServerProcess) -> ClientStorage {
    let mut options = ClientOptions::new(vec![ServerAddress::localhost(server.port())]);
    // Reconnect promptly after the server dropped the connection.
    options.min_disconnect_poll = Duration::from_millis(50);
    options.max_disconnect_poll = Duration::from_millis(500);
    ClientStorage::open(options).expect("connect to zeo-server")
}

/// Stores each `(oid, serial, data)` in one transaction, up to the vote.
pub fn begin_and_vote(
    s: &ClientStorage,
    records: &[(Oid, Tid, Vec<u8>)],
) -> zeo_storage::Result<zeo_storage::TxnHandle> {
    let txn = s.tpc_begin(&TransactionMetaData::default(), BeginOptions::default())?;
    let voted = records
        .iter()
        .try_for_each(|(oid, serial, data)| s.store(txn, *oid, *serial, data))
        .and_then(|()| s.tpc_vote(txn).map(drop));
    match voted {
        Ok(()) => Ok(txn),
        Err(e) => {
            s.tpc_abort(txn);
            Err(e)
        }
    }
}

/// Commits the records; aborts and returns the error when any step fails.
pub fn commit(s: &ClientStorage, records: &[(Oid, Tid, Vec<u8>)]) -> zeo_storage::Result<Tid> {
    let txn = begin_and_vote(s, records)?;
    s.tpc_finish(txn, &mut |_| {})
        .inspect_err(|_| s.tpc_abort(txn))
}

/// Commits, retrying (bounded) while the failure is the database or the
/// server coming back; panics when it does not succeed in time.
pub fn commit_eventually(s: &ClientStorage, records: &[(Oid, Tid, Vec<u8>)]) -> Tid {
    let deadline = Instant::now() + PATIENCE;
    let mut last = None;
    for _ in 0..10_000 {
        if Instant::now() >= deadline {
            break;
        }
        let _ = s.wait_connected(PATIENCE);
        match commit(s, records) {
            Ok(tid) => return tid,
            Err(e) => last = Some(e.to_string()),
        }
        // The server's back-off after a failed connection attempt is
        // short; a client's next attempt follows a ping round trip.
        let _ = s.ping();
    }
    panic!("no commit succeeded within {PATIENCE:?}; last error: {last:?}");
}

/// One number of the database, through psql.
pub fn count(pg: &PrivateCluster, db: &str, sql: &str) -> i64 {
    let out = run_with_timeout(
        std::process::Command::new("psql")
            .args(["-X", "-q", "-t", "-A", "-v", "ON_ERROR_STOP=1", "-h"])
            .arg(pg.cluster().socket_dir())
            .args(["-U", "postgres", "-d", db, "-c", sql]),
        PATIENCE,
    );
    assert!(out.status.success(), "{sql}: {out:?}");
    String::from_utf8_lossy(&out.stdout)
        .trim()
        .parse()
        .unwrap_or_else(|e| panic!("{sql}: {e}: {out:?}"))
}

/// Waits (bounded) until `c` loads `want` for `oid`: each round trip to
/// the server brings the invalidations sent before it.
pub fn wait_for_value(c: &ClientStorage, oid: Oid, want: &[u8]) {
    let deadline = Instant::now() + PATIENCE;
    let mut seen = None;
    for _ in 0..100_000 {
        seen = c.load(oid).ok();
        if seen.as_ref().is_some_and(|(d, _)| d == want) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{oid:?} still reads {seen:?}, not {want:?}"
        );
        let _ = c.ping();
    }
    panic!("{oid:?} still reads {seen:?}, not {want:?}");
}
