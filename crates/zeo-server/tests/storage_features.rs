//! Server features that need more of the storage: FileStorage across a
//! restart, large (spilled) transactions, Unix sockets, iteration, undo,
//! restore-style commits and record iteration.

mod common;

use std::sync::Arc;

use common::*;
use zeo_pickle::Value;
use zeo_protocol::client::replies;
use zeo_protocol::{ClientRequest, IteratorId, TxnId};
use zeo_server::{ListenAddress, ServerBuilder, ServerSettings};
use zeo_storage::filestorage::{FileStorage, FileStorageOptions};
use zeo_storage::{Oid, Tid, TxnStatus};

fn open_fs(path: &std::path::Path) -> Arc<FileStorage> {
    Arc::new(FileStorage::open(path, FileStorageOptions::default()).unwrap())
}

#[tokio::test]
async fn filestorage_survives_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("Data.fs");
    let server = TestServer::with_storage(ServerSettings::default(), open_fs(&path)).await;
    let mut c = server.client().await;
    let t1 = c
        .commit(1, &[(Oid(0), Tid::ZERO, b"root".to_vec())])
        .await
        .unwrap();
    let t2 = c
        .commit(
            2,
            &[
                (Oid(0), t1, b"root 2".to_vec()),
                (Oid(1), Tid::ZERO, b"one".to_vec()),
            ],
        )
        .await
        .unwrap();
    drop(c);
    server.stop().await; // closes the storage, releasing its lock

    let server = TestServer::with_storage(ServerSettings::default(), open_fs(&path)).await;
    let mut c = Client::connect(server.addr, None).await;
    assert_eq!(c.register("1", false).await.unwrap(), t2);
    let rev = c.load(Oid(0)).await.unwrap().unwrap();
    assert_eq!(
        (rev.data.as_slice(), rev.start, rev.end),
        (&b"root 2"[..], t2, None)
    );
    // After a restart the queue is seeded with the storage's last
    // transactions, as ZEO does: clients that missed only those verify
    // quickly; older ones are told to drop their caches.
    assert_eq!(
        c.call("getInvalidations", vec![bytes(&t2.to_bytes())])
            .await
            .unwrap(),
        Value::Tuple(vec![bytes(&t2.to_bytes()), Value::List(vec![])])
    );
    assert_eq!(
        c.call("getInvalidations", vec![bytes(&t1.to_bytes())])
            .await
            .unwrap(),
        Value::Tuple(vec![
            bytes(&t2.to_bytes()),
            Value::List(vec![bytes(&Oid(0).to_bytes()), bytes(&Oid(1).to_bytes())])
        ])
    );
    assert_eq!(
        c.call("getInvalidations", vec![bytes(&Tid::ZERO.to_bytes())])
            .await
            .unwrap(),
        Value::None
    );
    server.stop().await;
}

#[tokio::test]
async fn invalidation_age_walks_the_storage_for_older_clients() {
    let settings = ServerSettings {
        invalidation_queue_size: 1,
        invalidation_age: Some(std::time::Duration::from_secs(3600)),
        ..Default::default()
    };
    let server = TestServer::start(settings).await;
    let mut c = server.client().await;
    let t1 = c
        .commit(1, &[(Oid(1), Tid::ZERO, b"a".to_vec())])
        .await
        .unwrap();
    let t2 = c
        .commit(2, &[(Oid(2), Tid::ZERO, b"b".to_vec())])
        .await
        .unwrap();
    let t3 = c
        .commit(3, &[(Oid(3), Tid::ZERO, b"c".to_vec())])
        .await
        .unwrap();
    let v = c
        .call("getInvalidations", vec![bytes(&t1.to_bytes())])
        .await
        .unwrap();
    let (latest, oids) = replies::invalidations(&v).unwrap().unwrap();
    assert_eq!((latest, oids), (t3, vec![Oid(2), Oid(3)]));
    let _ = t2;
    server.stop().await;
}

#[tokio::test]
async fn large_transactions_spill_to_disk_and_commit() {
    let settings = ServerSettings {
        commit_log_spill_threshold: 16 * 1024,
        ..Default::default()
    };
    let server = TestServer::start(settings).await;
    let mut c = server.client().await;
    let stores: Vec<_> = (1..=300u64)
        .map(|i| (Oid(i), Tid::ZERO, vec![(i % 251) as u8; 1000 + i as usize]))
        .collect();
    let tid = c.commit(1, &stores).await.unwrap();
    for i in [1u64, 150, 300] {
        let rev = c.load(Oid(i)).await.unwrap().unwrap();
        assert_eq!(rev.start, tid);
        assert_eq!(rev.data, vec![(i % 251) as u8; 1000 + i as usize]);
    }
    server.stop().await;
}

#[tokio::test]
async fn unix_socket_listener() {
    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("zeo.sock");
    let server = ServerBuilder::new(ServerSettings::default())
        .storage("1", Arc::new(zeo_storage::MappingStorage::new("m")))
        .build()
        .unwrap();
    server.bind(&ListenAddress::Unix(sock.clone())).unwrap();
    let handle = server.handle();
    let task = tokio::spawn(server.serve(std::future::pending()));
    let mut s = tokio::net::UnixStream::connect(&sock).await.unwrap();
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut greeting = [0u8; 6];
    s.read_exact(&mut greeting).await.unwrap();
    assert_eq!(&greeting, b"\0\0\0\x02Z5");
    s.write_all(b"\0\0\0\x04ruok").await.unwrap();
    let mut reply = Vec::new();
    s.read_to_end(&mut reply).await.unwrap();
    assert!(String::from_utf8_lossy(&reply).contains("\"connections\": 0"));
    handle.shutdown();
    task.await.unwrap().unwrap();
    assert!(!sock.exists(), "socket file removed at shutdown");
}

#[tokio::test]
async fn transaction_and_record_iterators() {
    let server = TestServer::start(ServerSettings::default()).await;
    let mut c = server.client().await;
    let t1 = c
        .commit(1, &[(Oid(0), Tid::ZERO, b"r".to_vec())])
        .await
        .unwrap();
    let t2 = c
        .commit(
            2,
            &[
                (Oid(1), Tid::ZERO, b"x".to_vec()),
                (Oid(2), Tid::ZERO, b"y".to_vec()),
            ],
        )
        .await
        .unwrap();
    let id = c.msgid();
    c.send(&ClientRequest::iterator_start(id, None, None)).await;
    let iid = c.reply_to(&Value::Int(id)).await.unwrap();
    assert_eq!(iid, Value::Int(0));
    let mut seen = Vec::new();
    loop {
        let id = c.msgid();
        c.send(&ClientRequest::iterator_next(id, IteratorId(0)))
            .await;
        let v = c.reply_to(&Value::Int(id)).await.unwrap();
        let Value::Tuple(items) = v else {
            assert_eq!(v, Value::None);
            break;
        };
        let tid = replies::tid("iterator_next", &items[0]).unwrap();
        assert_eq!(items[1], Value::Str(" ".into()));
        assert_eq!(items[2], bytes(b"user"));
        let id = c.msgid();
        c.send(&ClientRequest::iterator_record_start(
            id,
            IteratorId(0),
            tid,
        ))
        .await;
        let Value::Int(rid) = c.reply_to(&Value::Int(id)).await.unwrap() else {
            panic!()
        };
        let mut oids = Vec::new();
        loop {
            let id = c.msgid();
            c.send(&ClientRequest::iterator_record_next(id, IteratorId(rid)))
                .await;
            match c.reply_to(&Value::Int(id)).await.unwrap() {
                Value::Tuple(r) => oids.push(
                    Oid::from_slice(match &r[0] {
                        Value::Bytes(b) => b,
                        _ => panic!(),
                    })
                    .unwrap(),
                ),
                Value::None => break,
                other => panic!("{other:?}"),
            }
        }
        seen.push((tid, oids));
    }
    assert_eq!(seen, vec![(t1, vec![Oid(0)]), (t2, vec![Oid(1), Oid(2)])]);
    // The exhausted iterator is gone: KeyError.
    let id = c.msgid();
    c.send(&ClientRequest::iterator_next(id, IteratorId(0)))
        .await;
    assert_eq!(
        c.reply_to(&Value::Int(id)).await.unwrap_err().class,
        "builtins.KeyError"
    );
    // A record iterator for a transaction the iterator did not just return.
    let id = c.msgid();
    c.send(&ClientRequest::iterator_start(id, None, None)).await;
    let Value::Int(iid) = c.reply_to(&Value::Int(id)).await.unwrap() else {
        panic!()
    };
    let id = c.msgid();
    c.send(&ClientRequest::iterator_next(id, IteratorId(iid)))
        .await;
    c.reply_to(&Value::Int(id)).await.unwrap();
    let id = c.msgid();
    c.send(&ClientRequest::iterator_record_start(
        id,
        IteratorId(iid),
        t2,
    ))
    .await;
    assert_eq!(
        c.reply_to(&Value::Int(id)).await.unwrap_err().class,
        "builtins.Exception"
    );
    c.send(&ClientRequest::iterator_gc(&[
        IteratorId(iid),
        IteratorId(99),
    ]))
    .await;
    assert_eq!(c.call("ping", vec![]).await.unwrap(), Value::None);

    // record_iternext walks current records.
    let v = c.call("record_iternext", vec![]).await.unwrap();
    let Value::Tuple(items) = v else {
        panic!("{v:?}")
    };
    assert_eq!(items[0], bytes(&Oid(0).to_bytes()));
    assert_eq!(items[3], bytes(&Oid(1).to_bytes()));
    server.stop().await;
}

#[tokio::test]
async fn undo_through_the_server() {
    let server = TestServer::start(ServerSettings::default()).await;
    let mut a = server.client().await;
    let mut b = server.client().await;
    let t1 = a
        .commit(1, &[(Oid(1), Tid::ZERO, b"v1".to_vec())])
        .await
        .unwrap();
    let _t2 = a.commit(2, &[(Oid(1), t1, b"v2".to_vec())]).await.unwrap();
    let log = a
        .call("undoLog", vec![Value::Int(0), Value::Int(-20)])
        .await
        .unwrap();
    let Value::List(entries) = log else {
        panic!("{log:?}")
    };
    assert_eq!(entries.len(), 2);
    let Value::Dict(newest) = &entries[0] else {
        panic!()
    };
    let undo_id = newest
        .iter()
        .find(|(k, _)| *k == Value::Str("id".into()))
        .unwrap()
        .1
        .clone();
    let info = a
        .call(
            "undoInfo",
            vec![Value::Int(0), Value::Int(-20), Value::None],
        )
        .await
        .unwrap();
    assert_eq!(info, Value::List(entries.clone()));

    a.begin(3).await;
    a.call_async("undoa", vec![undo_id, Value::Int(3)]).await;
    let voted = a.vote(3).await.unwrap();
    assert_eq!(voted, vec![replies::VoteItem::Changed(Oid(1))]);
    let t3 = a.finish(3).await.unwrap();
    let mut got = Vec::new();
    while got.last().map(|(t, _)| *t) != Some(t3) {
        got.push(invalidation(&b.next_event("invalidateTransaction").await));
    }
    assert_eq!(got.len(), 3);
    assert_eq!(got[2], (t3, vec![Oid(1)]));
    assert_eq!(b.load(Oid(1)).await.unwrap().unwrap().data, b"v1");
    server.stop().await;
}

#[tokio::test]
async fn restore_style_commit_with_explicit_tid() {
    let server = TestServer::start(ServerSettings::default()).await;
    let mut c = server.client().await;
    let tid = Tid(0x0300_0000_0000_0001);
    c.send(&ClientRequest::tpc_begin(
        TxnId(5),
        b"u",
        b"copied",
        Value::Dict(vec![(Value::Str("k".into()), Value::Str("v".into()))]),
        Some(tid),
        TxnStatus::Packed,
    ))
    .await;
    c.call_async(
        "restorea",
        vec![
            bytes(&Oid(4).to_bytes()),
            bytes(&tid.to_bytes()),
            bytes(b"restored"),
            Value::None,
            Value::Int(5),
        ],
    )
    .await;
    assert!(c.vote(5).await.unwrap().is_empty());
    assert_eq!(c.finish(5).await.unwrap(), tid);
    let rev = c.load(Oid(4)).await.unwrap().unwrap();
    assert_eq!((rev.data.as_slice(), rev.start), (&b"restored"[..], tid));
    let hist = c
        .call("history", vec![bytes(&Oid(4).to_bytes())])
        .await
        .unwrap();
    let text = format!("{hist:?}");
    assert!(
        text.contains("Str(\"k\")") && text.contains("Str(\"v\")"),
        "{text}"
    );
    server.stop().await;
}
