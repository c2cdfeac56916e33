//! The client against scripted servers over in-memory pipes, on a paused
//! clock (`tests/harness`): reconnection schedules, `fail_fast`,
//! `wait_timeout`, cache verification after a reconnect, the vote's
//! conflict-resolution rounds and heartbeats, each at exact virtual times.

mod harness;

use std::sync::Arc;
use std::time::Duration;

use harness::{connected, load_into_cache, notice, one_server, Net};
use tokio::time::Instant;
use zeo_client::{AsyncClientStorage, Notice, ServerAddress};
use zeo_pickle::Value;
use zeo_protocol::reply::{self, VoteConflict};
use zeo_protocol::ClientEvent;
use zeo_storage::{BeginOptions, Oid, Tid, TransactionMetaData};

fn address(port: u16) -> ServerAddress {
    ServerAddress::localhost(port)
}

/// Whether `d` lies in `[base, base + 25%]`: a back-off wait with jitter.
fn jittered(d: Duration, base: Duration) -> bool {
    d >= base && d <= base.mul_f64(1.25) + Duration::from_millis(1)
}

#[tokio::test(start_paused = true)]
async fn reconnection_backs_off_doubling_to_the_maximum() {
    let net = Net::new();
    let server = address(8100);
    let mut options = net.options(vec![server.clone()]);
    options.wait = false;
    let client = AsyncClientStorage::connect(options).await.unwrap();
    // Five refused rounds, then the server comes up.
    let mut seen = 0;
    for _ in 0..1000 {
        seen = net.attempts().len();
        if seen == 5 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(seen, 5, "five attempts within the loop's bound");
    net.up(&server);
    let mut conn = net.accept().await;
    conn.accept_client(Tid(5)).await;
    client.wait_connected(Duration::from_secs(1)).await.unwrap();

    let times: Vec<Instant> = net.attempts().iter().map(|a| a.1).collect();
    let gaps: Vec<Duration> = times.windows(2).map(|w| w[1] - w[0]).collect();
    let bases = [1, 2, 4, 4, 4].map(Duration::from_secs);
    for (gap, base) in gaps.iter().zip(bases) {
        assert!(jittered(*gap, base), "gaps {gaps:?}");
    }
    assert_eq!(client.stats().connections, 1);
    client.close().unwrap();
}

#[tokio::test(start_paused = true)]
async fn fail_fast_gives_up_at_once_when_every_address_refuses() {
    let net = Net::new();
    let mut options = net.options(vec![address(8100), address(8101)]);
    options.fail_fast = true;
    let started = Instant::now();
    let err = AsyncClientStorage::connect(options).await.unwrap_err();
    assert!(err.to_string().contains("every server refused"), "{err}");
    assert!(err.to_string().contains("8101"), "{err}");
    assert_eq!(started.elapsed(), Duration::ZERO, "no virtual time passed");
}

#[tokio::test(start_paused = true)]
async fn without_fail_fast_opening_waits_exactly_wait_timeout() {
    let net = Net::new();
    let mut options = net.options(vec![address(8100)]);
    options.wait_timeout = Duration::from_secs(5);
    let started = Instant::now();
    let err = AsyncClientStorage::connect(options).await.unwrap_err();
    assert_eq!(started.elapsed(), Duration::from_secs(5));
    let text = err.to_string();
    assert!(text.contains("timed out after 5s"), "{text}");
    assert!(text.contains("127.0.0.1:8100"), "{text}");
    // It kept trying meanwhile: at 0, ~1, ~3 seconds.
    assert_eq!(net.attempts().len(), 3);
}

#[tokio::test(start_paused = true)]
async fn a_reconnect_verifies_the_cache_before_serving_it() {
    let (net, server) = one_server();
    let (client, conn) = connected(&net, net.options(vec![server.clone()]), Tid(5)).await;
    let mut conn = conn;
    let mut notices = client.subscribe();
    let oid = Oid(1);
    load_into_cache(&client, &mut conn, oid, b"v1", Tid(4)).await;
    assert_eq!(client.cache().load(oid), Some((b"v1".to_vec(), Tid(4))));

    // The connection drops; the client notices and reconnects at once
    // (only failed rounds back off).
    drop(conn);
    let lost = Instant::now();
    notice(&mut notices, |n| (n == Notice::Disconnected).then_some(())).await;
    let mut conn = net.accept().await;
    assert_eq!(lost.elapsed(), Duration::ZERO);
    // The cache knows up to 5: it asks what changed since.
    conn.accept_verifying(Tid(9), Tid(5), &[oid]).await;
    let (tid, oids) = notice(&mut notices, |n| match n {
        Notice::Invalidated { tid, oids } => Some((tid, oids)),
        _ => None,
    })
    .await;
    assert_eq!((tid, oids), (Tid(9), vec![oid]));
    client.wait_connected(Duration::from_secs(1)).await.unwrap();
    assert_eq!(client.cache().load(oid), None, "the stale revision is gone");
    assert_eq!(client.last_transaction(), Tid(9));
    assert_eq!(client.stats().connections, 2);
    client.close().unwrap();
    conn.closed().await;
}

#[tokio::test(start_paused = true)]
async fn invalidations_sent_before_a_reply_apply_before_it() {
    let (net, server) = one_server();
    let (client, mut conn) = connected(&net, net.options(vec![server]), Tid(5)).await;
    let oid = Oid(3);
    load_into_cache(&client, &mut conn, oid, b"old", Tid(4)).await;
    // An invalidation, then the reply to a load of another object.
    let server_side = async {
        conn.send(&ClientEvent::invalidate_transaction(Tid(6), &[oid]))
            .await;
        conn.answer_load(Oid(4), b"other", Tid(6)).await;
    };
    let (other, ()) = tokio::join!(client.load(Oid(4)), server_side);
    assert_eq!(other.unwrap(), (b"other".to_vec(), Tid(6)));
    // By the time the reply woke the caller, the invalidation was applied.
    assert_eq!(client.cache().load(oid), None);
    assert_eq!(client.last_transaction(), Tid(6));
    client.close().unwrap();
}

/// Begins a transaction storing `data` for `oid` as a change of revision
/// 3; the server takes `tpc_begin` and `storea`.
async fn begin_and_store(
    client: &AsyncClientStorage,
    conn: &mut harness::FakeServer,
    oid: Oid,
    data: &[u8],
) -> zeo_storage::TxnHandle {
    let txn = client
        .tpc_begin(&TransactionMetaData::default(), BeginOptions::default())
        .await
        .unwrap();
    client.store(txn, oid, Tid(3), data).unwrap();
    conn.expect("tpc_begin").await;
    conn.expect("storea").await;
    txn
}

/// Answers the next vote with a conflict on `oid`: revision 5 was
/// committed meanwhile over the revision 3 that `data` was based on.
async fn vote_conflict(conn: &mut harness::FakeServer, oid: Oid, data: &[u8]) {
    let vote = conn.expect("vote").await;
    let conflict = VoteConflict {
        oid,
        committed: Tid(5),
        old: Tid(3),
        data: data.to_vec(),
    };
    conn.reply(&vote, reply::vote_conflicts(&[conflict])).await;
}

#[tokio::test(start_paused = true)]
async fn conflicts_at_vote_are_resolved_restored_and_voted_again() {
    let (net, server) = one_server();
    let mut options = net.options(vec![server]);
    options.conflict_resolver = Some(Arc::new(|c: &zeo_client::ConflictInfo| {
        assert_eq!(c.committed_data, b"theirs");
        assert_eq!(c.old_data.as_deref(), Some(&b"base"[..]));
        let mut merged = c.committed_data.clone();
        merged.extend_from_slice(&c.data);
        Some(merged)
    }));
    let (client, mut conn) = connected(&net, options, Tid(5)).await;
    let oid = Oid(7);

    let txn = begin_and_store(&client, &mut conn, oid, b"+mine").await;
    let server_side = async {
        vote_conflict(&mut conn, oid, b"+mine").await;
        // The resolver's states, committed first.
        for (serial, data) in [(Tid(5), &b"theirs"[..]), (Tid(3), b"base")] {
            let load = conn.expect("loadSerial").await;
            assert_eq!(load.call_args().unwrap()[1], reply::tid(serial));
            conn.reply(&load, Value::Bytes(data.to_vec())).await;
        }
        let restored = conn.expect("storea").await;
        let args = restored.call_args().unwrap();
        assert_eq!(args[1], reply::tid(Tid(5)));
        assert_eq!(args[2], Value::Bytes(b"theirs+mine".to_vec()));
        let vote = conn.expect("vote").await;
        conn.reply(&vote, Value::None).await;
    };
    let (voted, ()) = tokio::join!(client.tpc_vote(txn), server_side);
    assert_eq!(voted.unwrap(), vec![oid]);

    let server_side = async {
        let finish = conn.expect("tpc_finish").await;
        conn.reply(&finish, reply::tid(Tid(8))).await;
    };
    let (finished, ()) = tokio::join!(client.tpc_finish(txn), server_side);
    assert_eq!(finished.unwrap(), Tid(8));
    assert_eq!(
        client.cache().load(oid),
        Some((b"theirs+mine".to_vec(), Tid(8)))
    );
    client.close().unwrap();
}

#[tokio::test(start_paused = true)]
async fn an_unresolved_conflict_fails_the_vote_and_drops_the_cached_revision() {
    let (net, server) = one_server();
    let (client, mut conn) = connected(&net, net.options(vec![server]), Tid(5)).await;
    let oid = Oid(2);
    load_into_cache(&client, &mut conn, oid, b"cached", Tid(3)).await;
    let txn = begin_and_store(&client, &mut conn, oid, b"mine").await;
    let (voted, ()) = tokio::join!(client.tpc_vote(txn), vote_conflict(&mut conn, oid, b"mine"));
    assert!(voted.unwrap_err().is_conflict());
    assert_eq!(client.cache().load(oid), None);
    let server_side = async {
        let abort = conn.expect("tpc_abort").await;
        conn.reply(&abort, Value::None).await;
    };
    tokio::join!(client.tpc_abort(txn), server_side);
    client.close().unwrap();
}

/// A `tpc_finish` that fails leaves the client unsure of what the server
/// committed: it drops the connection, and the reconnect verifies the
/// cache from the last tid it knows.
#[tokio::test(start_paused = true)]
async fn a_failed_finish_reconnects_and_verifies_the_cache() {
    let (net, server) = one_server();
    let (client, mut conn) = connected(&net, net.options(vec![server]), Tid(5)).await;
    let oid = Oid(4);
    load_into_cache(&client, &mut conn, oid, b"v1", Tid(3)).await;
    let txn = begin_and_store(&client, &mut conn, oid, b"maybe").await;
    let server_side = async {
        let vote = conn.expect("vote").await;
        conn.reply(&vote, Value::None).await;
    };
    let (voted, ()) = tokio::join!(client.tpc_vote(txn), server_side);
    voted.unwrap();
    let server_side = async {
        let finish = conn.expect("tpc_finish").await;
        let failed =
            zeo_protocol::WireError::from(&zeo_storage::Error::Storage("disk full".into()));
        conn.send(&zeo_protocol::Reply::error(finish.msgid.clone(), &failed))
            .await;
        conn.closed().await;
    };
    let (finished, ()) = tokio::join!(client.tpc_finish(txn), server_side);
    assert!(finished.unwrap_err().to_string().contains("disk full"));
    assert_eq!(
        client.cache().load(oid),
        Some((b"v1".to_vec(), Tid(3))),
        "nothing cached as committed"
    );
    let mut conn = net.accept().await;
    conn.accept_verifying(Tid(6), Tid(5), &[oid]).await;
    client.wait_connected(Duration::from_secs(1)).await.unwrap();
    assert_eq!(client.last_transaction(), Tid(6));
    assert_eq!(client.cache().load(oid), None, "the stale revision is gone");
    client.close().unwrap();
}

#[tokio::test(start_paused = true)]
async fn an_idle_connection_sends_heartbeats_on_the_interval() {
    let (net, server) = one_server();
    let mut options = net.options(vec![server]);
    options.heartbeat_interval = Duration::from_secs(60);
    let (client, mut conn) = connected(&net, options, Tid(5)).await;
    let connected = Instant::now();
    for beat in 1..=3u32 {
        let msg = conn.next_message().await.unwrap();
        assert!(msg.is_heartbeat(), "{msg:?}");
        assert_eq!(connected.elapsed(), Duration::from_secs(60) * beat);
    }
    client.close().unwrap();
}

/// After a digest login every frame is sealed, heartbeats included: the
/// server checks the MAC chain across three heartbeats and a call, and the
/// client checks the server's sealed reply.
#[tokio::test(start_paused = true)]
async fn heartbeats_are_sealed_in_the_mac_chain_after_a_login() {
    let (net, server) = one_server();
    let mut options = net.options(vec![server]);
    options.username = Some("alice".into());
    options.password = Some("s3cret".into());
    options.heartbeat_interval = Duration::from_secs(20);
    let client = AsyncClientStorage::connect(options);
    let server_side = async {
        let mut conn = net.accept().await;
        conn.handshake().await;
        conn.login("alice", "s3cret").await;
        let register = conn.expect("register").await;
        conn.reply(&register, reply::tid(Tid(5))).await;
        conn.answer_get_info().await;
        conn
    };
    let (client, mut conn) = tokio::join!(client, server_side);
    let client = client.unwrap();
    for _ in 0..3 {
        assert!(conn.next_message().await.unwrap().is_heartbeat());
    }
    load_into_cache(&client, &mut conn, Oid(1), b"sealed", Tid(4)).await;
    client.close().unwrap();
}

#[tokio::test(start_paused = true)]
async fn a_read_only_fallback_moves_to_a_writable_server_when_one_appears() {
    let net = Net::new();
    let (replica, primary) = (address(8100), address(8101));
    net.up(&replica);
    let mut options = net.options(vec![replica.clone(), primary.clone()]);
    options.read_only_fallback = true;
    let client = AsyncClientStorage::connect(options);
    let server_side = async {
        let mut ro = net.accept().await;
        ro.handshake().await;
        let register = ro.expect("register").await;
        assert_eq!(register.call_args().unwrap()[1], Value::Bool(false));
        let read_only = zeo_protocol::WireError::from(&zeo_storage::Error::ReadOnly);
        let reply = zeo_protocol::Reply::error(register.msgid.clone(), &read_only);
        ro.send(&reply).await;
        let register = ro.expect("register").await;
        assert_eq!(register.call_args().unwrap()[1], Value::Bool(true));
        ro.reply(&register, reply::tid(Tid(5))).await;
        ro.answer_get_info().await;
        ro
    };
    let (client, mut ro) = tokio::join!(client, server_side);
    let client = client.unwrap();
    assert!(client.is_read_only());
    let mut notices = client.subscribe();
    // The primary comes up (and the replica goes): the client finds it on
    // its next probe, a back-off delay later, and lets the replica go.
    net.up(&primary);
    net.down(&replica);
    let probing = Instant::now();
    let mut rw = net.accept().await;
    assert_eq!(rw.address, primary.to_string());
    assert!(
        jittered(probing.elapsed(), Duration::from_secs(1)),
        "{:?}",
        probing.elapsed()
    );
    rw.accept_client(Tid(5)).await;
    let address = notice(&mut notices, |n| match n {
        Notice::Connected { address, read_only } => Some((address, read_only)),
        _ => None,
    })
    .await;
    assert_eq!(address, (primary.to_string(), false));
    assert!(!client.is_read_only());
    ro.closed().await;
    client.close().unwrap();
}
