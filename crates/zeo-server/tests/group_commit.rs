//! Group commit through the server: concurrent committers share fsyncs
//! (counted as `fsyncs` in `server_status`), `group-commit false` gives
//! each transaction its own, and either way every client sees its own
//! `tpc_finish` reply and the others' invalidations in tid order.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::*;
use zeo_pickle::Value;
use zeo_server::ServerSettings;
use zeo_storage::filestorage::{FaultInjector, FileStorage, FileStorageOptions};
use zeo_storage::{Oid, Tid};

const CLIENTS: u64 = 8;
const COMMITS: u64 = 8;

fn status_number(status: &Value, key: &str) -> Option<i64> {
    let Value::Dict(pairs) = status else {
        panic!("server_status: {status:?}")
    };
    pairs.iter().find_map(|(k, v)| match (k, v) {
        (Value::Str(k), Value::Int(n)) if k == key => Some(*n),
        _ => None,
    })
}

/// `CLIENTS` clients commit `COMMITS` transactions each, at once, on a
/// FileStorage whose fsyncs take 3 ms; returns (commits, fsyncs) as
/// `server_status` reports them.
async fn commit_concurrently(group_commit: bool) -> (i64, i64) {
    let dir = tempfile::tempdir().unwrap();
    let faults = FaultInjector::new();
    // A slow disk, so that commits queue behind an fsync.
    faults.delay_syncs(Duration::from_millis(3));
    let storage = FileStorage::open_with_faults(
        dir.path().join("Data.fs"),
        FileStorageOptions::default(),
        faults,
    )
    .unwrap();
    let settings = ServerSettings {
        group_commit,
        ..ServerSettings::default()
    };
    let server = TestServer::with_storage(settings, Arc::new(storage)).await;
    let mut tasks = Vec::new();
    for c in 0..CLIENTS {
        let mut client = server.client().await;
        tasks.push(tokio::spawn(async move {
            let oid = Oid(1 + c);
            let mut serial = Tid::ZERO;
            for i in 0..COMMITS {
                let data = format!("c{c} {i}").into_bytes();
                serial = client
                    .commit((c * 1000 + i) as i64, &[(oid, serial, data)])
                    .await
                    .unwrap();
            }
            // What this client learned, in the order it arrived: others'
            // invalidations and its own finish replies (the only replies
            // that are 8 bytes, with register's last tid).
            let learned: Vec<Tid> = client
                .log
                .iter()
                .filter_map(|m| match (&m.method[..], &m.args) {
                    ("invalidateTransaction", _) => Some(invalidation(m).0),
                    (_, Value::Bytes(b)) if m.is_reply() && b.len() == 8 => Tid::from_slice(b),
                    _ => None,
                })
                .collect();
            assert!(learned.len() as u64 > COMMITS, "c{c}: {learned:?}");
            assert!(
                learned.windows(2).all(|w| w[0] < w[1]),
                "c{c} learned of transactions out of tid order: {learned:?}"
            );
            client
        }));
    }
    let mut clients = Vec::new();
    for t in tasks {
        clients.push(t.await.unwrap());
    }
    let status = clients[0].call("server_status", vec![]).await.unwrap();
    let commits = status_number(&status, "commits").unwrap();
    let fsyncs = status_number(&status, "fsyncs").expect("fsyncs in server_status");
    drop(clients);
    server.stop().await;
    (commits, fsyncs)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_committers_share_fsyncs() {
    let (commits, fsyncs) = commit_concurrently(true).await;
    assert_eq!(commits, (CLIENTS * COMMITS) as i64);
    assert!(
        fsyncs * 2 <= commits,
        "{fsyncs} fsyncs for {commits} commits: too little sharing"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_group_commit_each_transaction_has_its_own_fsync() {
    let (commits, fsyncs) = commit_concurrently(false).await;
    assert_eq!(commits, (CLIENTS * COMMITS) as i64);
    assert_eq!(fsyncs, commits);
}
