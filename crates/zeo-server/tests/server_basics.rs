//! A ZEO session against an in-process server: handshake, register, loads,
//! commits, invalidations, conflicts, the commit lock queue, timeouts,
//! read-only refusals.

mod common;

use std::time::Duration;

use common::*;
use zeo_pickle::Value;
use zeo_protocol::client::replies::VoteItem;
use zeo_protocol::{Encoding, FrameCodec};
use zeo_server::ServerSettings;
use zeo_storage::{Oid, Tid};

#[tokio::test]
async fn greeting_follows_the_msgpack_setting_and_client_choice_wins() {
    for (msgpack, letter) in [(false, b'Z'), (true, b'M')] {
        let server = TestServer::start(ServerSettings {
            msgpack,
            ..Default::default()
        })
        .await;
        let mut stream = tokio::net::TcpStream::connect(server.addr).await.unwrap();
        let mut buf = [0u8; 6];
        tokio::io::AsyncReadExt::read_exact(&mut stream, &mut buf)
            .await
            .unwrap();
        assert_eq!(buf, [0, 0, 0, 2, letter, b'5']);
        drop(stream);
        // Whatever was announced, the server speaks what the client answers.
        for enc in [Encoding::Pickle, Encoding::Msgpack] {
            let mut c = Client::connect(server.addr, Some(enc)).await;
            assert_eq!(c.register("1", false).await.unwrap(), Tid::ZERO);
            assert_eq!(c.call("ping", vec![]).await.unwrap(), Value::None);
        }
        server.stop().await;
    }
}

#[tokio::test]
async fn ruok_answers_json_status_and_closes() {
    let server = TestServer::start(ServerSettings::default()).await;
    let stream = tokio::net::TcpStream::connect(server.addr).await.unwrap();
    let (r, mut w) = stream.into_split();
    let mut reader = tokio_util::codec::FramedRead::new(r, FrameCodec::new());
    use futures::StreamExt;
    let _greeting = reader.next().await.unwrap().unwrap();
    tokio::io::AsyncWriteExt::write_all(&mut w, &zeo_protocol::encode_frame(b"ruok").unwrap())
        .await
        .unwrap();
    let reply = reader.next().await.unwrap().unwrap();
    let json: serde_json::Value = serde_json::from_slice(&reply).unwrap();
    assert_eq!(json["1"]["connections"], 0);
    assert_eq!(json["1"]["timeout-thread-is-alive"], "stub");
    assert_eq!(json["1"]["last-transaction"], "0000000000000000");
    assert!(reader.next().await.is_none(), "ruok closes the connection");
    server.stop().await;
}

#[tokio::test]
async fn commit_load_and_invalidate_other_clients_only() {
    let server = TestServer::start(ServerSettings::default()).await;
    let mut a = server.client().await;
    let mut b = server.client().await;

    let err = a.load(Oid::ROOT).await.unwrap_err();
    assert_eq!(err.class, "ZODB.POSException.POSKeyError");

    let t1 = a
        .commit(1, &[(Oid::ROOT, Tid::ZERO, b"root v1".to_vec())])
        .await
        .unwrap();
    // The committer hears `info` just before its tid reply, never an
    // invalidation for its own commit.
    let info_pos = a.log.iter().position(|m| m.method == "info").unwrap();
    let reply_pos = a.log.iter().rposition(|m| m.is_reply()).unwrap();
    assert!(info_pos < reply_pos);
    assert!(a
        .events()
        .iter()
        .all(|m| m.method != "invalidateTransaction"));

    let inv = b.next_event("invalidateTransaction").await;
    assert_eq!(invalidation(&inv), (t1, vec![Oid::ROOT]));

    let rev = b.load(Oid::ROOT).await.unwrap().unwrap();
    assert_eq!(
        (rev.data.as_slice(), rev.start, rev.end),
        (&b"root v1"[..], t1, None)
    );
    let t2 = b
        .commit(7, &[(Oid::ROOT, t1, b"root v2".to_vec())])
        .await
        .unwrap();
    assert!(t2 > t1);
    let inv = a.next_event("invalidateTransaction").await;
    assert_eq!(invalidation(&inv), (t2, vec![Oid::ROOT]));
    let old = a.load_before(Oid::ROOT, t2).await.unwrap().unwrap();
    assert_eq!((old.data.as_slice(), old.end), (&b"root v1"[..], Some(t2)));
    assert_eq!(a.load_before(Oid::ROOT, t1).await.unwrap(), None);

    let last = a.call("lastTransaction", vec![]).await.unwrap();
    assert_eq!(last, bytes(&t2.to_bytes()));
    let inv = a
        .call("getInvalidations", vec![bytes(&t1.to_bytes())])
        .await
        .unwrap();
    assert_eq!(
        inv,
        Value::Tuple(vec![
            bytes(&t2.to_bytes()),
            Value::List(vec![bytes(&Oid::ROOT.to_bytes())])
        ])
    );
    // The sentinel entry is the last transaction at start-up (none).
    let none = a
        .call("getInvalidations", vec![bytes(&[0, 0, 0, 0, 0, 0, 0, 0])])
        .await
        .unwrap();
    assert_eq!(
        none,
        Value::Tuple(vec![
            bytes(&t2.to_bytes()),
            Value::List(vec![bytes(&Oid::ROOT.to_bytes())])
        ])
    );

    let status = a.call("server_status", vec![]).await.unwrap();
    let Value::Dict(pairs) = status else { panic!() };
    let get = |k: &str| {
        pairs
            .iter()
            .find(|(key, _)| *key == Value::Str(k.into()))
            .unwrap()
            .1
            .clone()
    };
    assert_eq!(get("commits"), Value::Int(2));
    assert_eq!(get("connections"), Value::Int(2));
    assert_eq!(get("active_txns"), Value::Int(0));
    server.stop().await;
}

#[tokio::test]
async fn get_info_new_oids_history_and_blob_refusal() {
    let server = TestServer::start(ServerSettings::default()).await;
    let mut a = server.client().await;
    let info = a.call("get_info", vec![]).await.unwrap();
    let Value::Dict(pairs) = info else { panic!() };
    let keys: Vec<_> = pairs.iter().map(|(k, _)| k.clone()).collect();
    for k in [
        "length",
        "size",
        "name",
        "supportsUndo",
        "supports_record_iternext",
        "interfaces",
    ] {
        assert!(keys.contains(&Value::Str(k.into())), "{k}");
    }
    let ifaces = &pairs
        .iter()
        .find(|(k, _)| *k == Value::Str("interfaces".into()))
        .unwrap()
        .1;
    assert!(!format!("{ifaces:?}").contains("IBlob"));

    let oids = a.new_oids().await;
    assert_eq!(oids.len(), 100);
    assert_eq!(oids[0], Oid(1));
    let five = a.call("new_oids", vec![Value::Int(5)]).await.unwrap();
    assert_eq!(
        zeo_protocol::client::replies::oids("new_oids", &five).unwrap()[0],
        Oid(101)
    );
    let err = a.call("new_oid", vec![]).await.unwrap_err();
    assert_eq!(err.class, "builtins.AttributeError");

    let t1 = a
        .commit(1, &[(Oid(1), Tid::ZERO, b"x".to_vec())])
        .await
        .unwrap();
    let hist = a
        .call("history", vec![bytes(&Oid(1).to_bytes()), Value::Int(5)])
        .await
        .unwrap();
    assert!(format!("{hist:?}").contains("user_name"));
    assert_eq!(
        a.call("getTid", vec![bytes(&Oid(1).to_bytes())])
            .await
            .unwrap(),
        bytes(&t1.to_bytes())
    );
    assert_eq!(
        a.call(
            "loadSerial",
            vec![bytes(&Oid(1).to_bytes()), bytes(&t1.to_bytes())]
        )
        .await
        .unwrap(),
        bytes(b"x")
    );
    let err = a
        .call(
            "sendBlob",
            vec![bytes(&Oid(1).to_bytes()), bytes(&t1.to_bytes())],
        )
        .await
        .unwrap_err();
    assert!(format!("{:?}", err.fields).contains("blobs are not supported"));
    // A one-way blob upload cannot be answered: the connection goes.
    a.call_async("storeBlobStart", vec![]).await;
    assert!(a.closed().await);
    server.stop().await;
}

#[tokio::test]
async fn conflicts_come_back_from_vote_and_the_client_can_resolve_them() {
    let server = TestServer::start(ServerSettings::default()).await;
    let mut a = server.client().await;
    let mut b = server.client().await;
    let t1 = a
        .commit(1, &[(Oid(1), Tid::ZERO, b"base".to_vec())])
        .await
        .unwrap();
    let t2 = a.commit(2, &[(Oid(1), t1, b"a's".to_vec())]).await.unwrap();

    // b still thinks t1 is current.
    b.begin(9).await;
    b.store(9, Oid(1), t1, b"b's").await;
    b.store(9, Oid(2), Tid::ZERO, b"new").await;
    let voted = b.vote(9).await.unwrap();
    assert_eq!(voted.len(), 1);
    let VoteItem::Conflict(c) = &voted[0] else {
        panic!("{voted:?}")
    };
    assert_eq!(
        (c.oid, c.committed, c.old, c.data.as_slice()),
        (Oid(1), t2, t1, &b"b's"[..])
    );
    // b keeps the commit lock while it resolves, so its resolution is
    // checked against a state nobody can move meanwhile: a's commit waits.
    let a_commit = tokio::spawn(async move {
        let t3 = a
            .commit(3, &[(Oid(3), Tid::ZERO, b"other".to_vec())])
            .await
            .unwrap();
        (a, t3)
    });
    // allow-sleep: not yet on a paused clock or an awaited event
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    assert!(
        !a_commit.is_finished(),
        "a committed while b was resolving its conflicts"
    );
    // b resolves and re-stores against the committed serial, then votes.
    b.store(9, Oid(1), t2, b"merged").await;
    let voted = b.vote(9).await.unwrap();
    assert!(voted.is_empty(), "{voted:?}");
    let t4 = b.finish(9).await.unwrap();
    let (mut a, t3) = a_commit.await.unwrap();
    assert!(t3 > t4, "a's commit went through once b finished");
    let rev = a.load(Oid(1)).await.unwrap().unwrap();
    assert_eq!((rev.data.as_slice(), rev.start), (&b"merged"[..], t4));
    assert_eq!(a.load(Oid(2)).await.unwrap().unwrap().data, b"new");

    // A stale delete is a plain ConflictError (no client resolution).
    a.begin(5).await;
    a.call_async(
        "deleteObject",
        vec![
            bytes(&Oid(3).to_bytes()),
            bytes(&t1.to_bytes()),
            Value::Int(5),
        ],
    )
    .await;
    let err = a.vote(5).await.unwrap_err();
    assert_eq!(err.class, "ZODB.POSException.ConflictError");
    // The failed vote ended the transaction.
    let err = a.vote(5).await.unwrap_err();
    assert_eq!(err.class, "ZODB.POSException.StorageTransactionError");
    server.stop().await;
}

#[tokio::test]
async fn read_conflicts_fail_the_vote() {
    let server = TestServer::start(ServerSettings::default()).await;
    let mut a = server.client().await;
    let t1 = a
        .commit(1, &[(Oid(1), Tid::ZERO, b"v1".to_vec())])
        .await
        .unwrap();
    let _t2 = a.commit(2, &[(Oid(1), t1, b"v2".to_vec())]).await.unwrap();
    a.begin(3).await;
    a.call_async(
        "checkCurrentSerialInTransaction",
        vec![
            bytes(&Oid(1).to_bytes()),
            bytes(&t1.to_bytes()),
            Value::Int(3),
        ],
    )
    .await;
    a.store(3, Oid(2), Tid::ZERO, b"x").await;
    let err = a.vote(3).await.unwrap_err();
    assert_eq!(err.class, "ZODB.POSException.ReadConflictError");
    server.stop().await;
}

#[tokio::test]
async fn votes_queue_behind_the_lock_holder_and_see_its_invalidations_first() {
    let server = TestServer::start(ServerSettings::default()).await;
    let mut a = server.client().await;
    let mut b = server.client().await;
    let mut c = server.client().await;
    a.begin(1).await;
    a.store(1, Oid(1), Tid::ZERO, b"a").await;
    assert!(a.vote(1).await.unwrap().is_empty());

    b.begin(2).await;
    b.store(2, Oid(2), Tid::ZERO, b"b").await;
    let b_vote = b.send_vote(2).await;
    c.begin(3).await;
    c.store(3, Oid(3), Tid::ZERO, b"c").await;
    let c_vote = c.send_vote(3).await;
    // Nothing comes back while a holds the lock; b still answers pings.
    assert_eq!(b.call("ping", vec![]).await.unwrap(), Value::None);
    // allow-sleep: not yet on a paused clock or an awaited event
    tokio::time::sleep(Duration::from_millis(100)).await;
    let status = server.handle.status("1").unwrap();
    assert_eq!(status.waiting, 2);
    assert!(status.lock_time.is_some());
    // Voting twice is refused.
    let err = b.vote(2).await.unwrap_err();
    assert!(format!("{:?}", err.fields).contains("Already voting (waiting)"));

    let ta = a.finish(1).await.unwrap();
    b.reply_to(&b_vote).await.unwrap();
    let tb = b.finish(2).await.unwrap();
    c.reply_to(&c_vote).await.unwrap();
    let tc = c.finish(3).await.unwrap();
    assert!(ta < tb && tb < tc);
    // b saw a's invalidation before its vote reply.
    let pos_inv = b
        .log
        .iter()
        .position(|m| m.method == "invalidateTransaction")
        .unwrap();
    let pos_vote = b
        .log
        .iter()
        .position(|m| m.is_reply() && m.msgid == b_vote)
        .unwrap();
    assert!(pos_inv < pos_vote);
    server.stop().await;
}

#[tokio::test]
async fn transaction_timeout_cuts_off_a_hung_client() {
    let settings = ServerSettings {
        transaction_timeout: Some(Duration::from_millis(300)),
        ..Default::default()
    };
    let server = TestServer::start(settings).await;
    let mut hung = server.client().await;
    let mut good = server.client().await;
    hung.begin(1).await;
    hung.store(1, Oid(1), Tid::ZERO, b"never").await;
    assert!(hung.vote(1).await.unwrap().is_empty());
    // The hung client never finishes; the other one's vote waits, then
    // proceeds once the timeout closed the hung connection.
    let started = std::time::Instant::now();
    let t = good
        .commit(2, &[(Oid(2), Tid::ZERO, b"ok".to_vec())])
        .await
        .unwrap();
    assert!(started.elapsed() >= Duration::from_millis(250));
    assert!(hung.closed().await);
    assert!(
        good.load(Oid(1)).await.is_err(),
        "the hung transaction was aborted"
    );
    assert_eq!(good.load(Oid(2)).await.unwrap().unwrap().start, t);
    let status = server.handle.status("1").unwrap();
    assert_eq!(status.timeout_thread_alive, Some(true));
    assert_eq!(status.active_txns, 0);
    server.stop().await;
}

#[tokio::test]
async fn disconnect_mid_commit_releases_the_lock() {
    let server = TestServer::start(ServerSettings::default()).await;
    let mut a = server.client().await;
    let mut b = server.client().await;
    a.begin(1).await;
    a.store(1, Oid(1), Tid::ZERO, b"a").await;
    assert!(a.vote(1).await.unwrap().is_empty());
    let b_vote = {
        b.begin(2).await;
        b.store(2, Oid(2), Tid::ZERO, b"b").await;
        b.send_vote(2).await
    };
    drop(a);
    b.reply_to(&b_vote).await.unwrap();
    b.finish(2).await.unwrap();
    assert!(b.load(Oid(1)).await.is_err());
    server.stop().await;
}

#[tokio::test]
async fn read_only_server_refuses_writes_but_packs() {
    let server = TestServer::start(ServerSettings {
        read_only: true,
        ..Default::default()
    })
    .await;
    let mut c = Client::connect(server.addr, None).await;
    let err = c.register("1", false).await.unwrap_err();
    assert_eq!(err.class, "ZODB.POSException.ReadOnlyError");
    assert_eq!(c.register("1", true).await.unwrap(), Tid::ZERO);
    let err = c.call("new_oids", vec![]).await.unwrap_err();
    assert_eq!(err.class, "ZODB.POSException.ReadOnlyError");
    let err = c.call("vote", vec![Value::Int(1)]).await.unwrap_err();
    assert_eq!(err.class, "ZODB.POSException.ReadOnlyError");
    // Packing is allowed on a read-only connection (it fails here only
    // because the storage has no root yet).
    let packed = c
        .call("pack", vec![Value::Float(1e10), Value::Bool(true)])
        .await;
    assert!(packed.is_ok() || packed.unwrap_err().class != "ZODB.POSException.ReadOnlyError");
    // tpc_begin is one-way: refusing it closes the connection.
    c.begin(1).await;
    assert!(c.closed().await);
    server.stop().await;
}

#[tokio::test]
async fn registration_rules() {
    let server = TestServer::start(ServerSettings::default()).await;
    let mut c = Client::connect(server.addr, None).await;
    let err = c.register("nope", false).await.unwrap_err();
    assert_eq!(err.class, "builtins.ValueError");
    assert!(format!("{:?}", err.fields).contains("unknown storage: nope"));
    // The failed register left the connection usable for another try.
    c.register("1", false).await.unwrap();
    // register twice closes, as in ZEO.
    let id = c.msgid();
    c.send(&zeo_protocol::ClientRequest::register(id, "1", false))
        .await;
    assert!(c.closed().await);

    // Calls before register close the connection.
    let mut d = Client::connect(server.addr, None).await;
    d.call_async("ping", vec![]).await;
    assert!(d.closed().await);
    server.stop().await;
}

#[tokio::test]
async fn pack_broadcasts_size_info() {
    let storage = zeo_storage::MappingStorage::with_references(
        "test",
        std::sync::Arc::new(|_: &[u8]| Ok(Vec::new())),
    );
    let server =
        TestServer::with_storage(ServerSettings::default(), std::sync::Arc::new(storage)).await;
    let mut a = server.client().await;
    let mut b = server.client().await;
    let t1 = a
        .commit(1, &[(Oid::ROOT, Tid::ZERO, root_pickle())])
        .await
        .unwrap();
    let _t2 = a
        .commit(2, &[(Oid::ROOT, t1, root_pickle())])
        .await
        .unwrap();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64();
    a.call("pack", vec![Value::Float(now + 10.0), Value::Int(1)])
        .await
        .unwrap();
    let info = b.next_event("info").await;
    assert!(format!("{info:?}").contains("length"));
    server.stop().await;
}

/// A PersistentMapping record with no references, as ZODB writes it.
fn root_pickle() -> Vec<u8> {
    let class = zeo_pickle::encode(
        &Value::Tuple(vec![
            Value::Global {
                module: "persistent.mapping".into(),
                name: "PersistentMapping".into(),
            },
            Value::None,
        ]),
        zeo_pickle::Protocol::V3,
    )
    .unwrap();
    let state = zeo_pickle::encode(
        &Value::Dict(vec![(Value::Str("data".into()), Value::Dict(vec![]))]),
        zeo_pickle::Protocol::V3,
    )
    .unwrap();
    [class, state].concat()
}
