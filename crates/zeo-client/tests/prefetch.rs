//! `prefetch` against scripted servers on a paused clock: requests are
//! pipelined, results land in the cache, loads of the same revision share
//! one request, and invalidations racing a prefetch leave no stale current
//! revision.

mod harness;

use harness::{connected, one_server, FakeServer};
use zeo_client::PREFETCH_WINDOW;
use zeo_pickle::Value;
use zeo_protocol::{reply, ClientEvent, Message};
use zeo_storage::{Oid, Tid};

const TWO: [Oid; 2] = [Oid(1), Oid(2)];
const NINE: [Oid; 1] = [Oid(9)];

/// The oid a `loadBefore` call asks for.
fn oid_of(call: &Message) -> Oid {
    match &call.call_args().unwrap()[0] {
        Value::Bytes(b) => Oid::from_slice(b).unwrap(),
        other => panic!("loadBefore({other:?})"),
    }
}

/// A current revision `data` of `start`, as `loadBefore` returns it.
fn current(data: &[u8], start: Tid) -> Value {
    Value::Tuple(vec![
        Value::Bytes(data.to_vec()),
        reply::tid(start),
        Value::None,
    ])
}

/// Takes `n` `loadBefore` calls before answering any of them.
async fn take_loads(conn: &mut FakeServer, n: usize) -> Vec<Message> {
    let mut calls = Vec::with_capacity(n);
    for _ in 0..n {
        calls.push(conn.expect("loadBefore").await);
    }
    calls
}

#[tokio::test(start_paused = true)]
async fn prefetched_revisions_are_pipelined_and_cached() {
    let (net, server) = one_server();
    let (client, mut conn) = connected(&net, net.options(vec![server]), Tid(9)).await;
    let oids: Vec<Oid> = (1..=5).map(Oid).collect();
    let server_side = async {
        // All five requests arrive before the first is answered.
        let calls = take_loads(&mut conn, oids.len()).await;
        for call in calls.iter().rev() {
            let oid = oid_of(call);
            conn.reply(call, current(&oid.0.to_be_bytes(), Tid(oid.0)))
                .await;
        }
    };
    let (done, ()) = tokio::join!(client.prefetch(&oids, Tid::MAX), server_side);
    done.unwrap();
    for &oid in &oids {
        assert_eq!(
            client.cache().load(oid),
            Some((oid.0.to_be_bytes().to_vec(), Tid(oid.0)))
        );
    }
    assert_eq!(client.stats().server_loads, 5);
    // Everything cached: prefetching again sends nothing, and the next
    // request the server sees is the load of an uncached object.
    client.prefetch(&oids, Tid::MAX).await.unwrap();
    let (other, ()) = tokio::join!(
        client.load(Oid(42)),
        conn.answer_load(Oid(42), b"x", Tid(3))
    );
    assert_eq!(other.unwrap(), (b"x".to_vec(), Tid(3)));
    client.close().unwrap();
}

#[tokio::test(start_paused = true)]
async fn a_prefetch_keeps_at_most_a_window_of_requests_unanswered() {
    let (net, server) = one_server();
    let (client, mut conn) = connected(&net, net.options(vec![server]), Tid(9)).await;
    let oids: Vec<Oid> = (1..=(PREFETCH_WINDOW as u64 + 3)).map(Oid).collect();
    let server_side = async {
        let first = take_loads(&mut conn, PREFETCH_WINDOW).await;
        // Answering the oldest lets exactly one more through.
        conn.reply(&first[0], current(b"a", Tid(1))).await;
        let next = conn.expect("loadBefore").await;
        assert_eq!(oid_of(&next), Oid(PREFETCH_WINDOW as u64 + 1));
        for call in first[1..].iter().chain([&next]) {
            conn.reply(call, current(b"a", Tid(1))).await;
        }
        for call in take_loads(&mut conn, 2).await {
            conn.reply(&call, current(b"a", Tid(1))).await;
        }
    };
    let (done, ()) = tokio::join!(client.prefetch(&oids, Tid::MAX), server_side);
    done.unwrap();
    assert_eq!(client.stats().server_loads, oids.len() as u64);
    assert!(oids.iter().all(|&o| client.cache().load(o).is_some()));
    client.close().unwrap();
}

#[tokio::test(start_paused = true)]
async fn a_load_of_a_prefetched_oid_joins_its_request() {
    let (net, server) = one_server();
    let (client, mut conn) = connected(&net, net.options(vec![server]), Tid(9)).await;
    let oid = Oid(7);
    let server_side = async {
        let call = conn.expect("loadBefore").await;
        assert_eq!(oid_of(&call), oid);
        // Let the load start while the prefetch's request is unanswered.
        tokio::task::yield_now().await;
        conn.reply(&call, current(b"seven", Tid(5))).await;
    };
    let prefetch = client.prefetch(std::slice::from_ref(&oid), Tid::MAX);
    let load = async {
        // The prefetch sent its request first (join! polls in order).
        client.load(oid).await
    };
    let (done, loaded, ()) = tokio::join!(prefetch, load, server_side);
    done.unwrap();
    assert_eq!(loaded.unwrap(), (b"seven".to_vec(), Tid(5)));
    // One request went out: the next one the server sees is another oid's.
    let (other, ()) = tokio::join!(
        client.load(Oid(8)),
        conn.answer_load(Oid(8), b"eight", Tid(2))
    );
    assert_eq!(other.unwrap(), (b"eight".to_vec(), Tid(2)));
    client.close().unwrap();
}

#[tokio::test(start_paused = true)]
async fn an_invalidation_after_the_reply_ends_the_prefetched_revision() {
    let (net, server) = one_server();
    let (client, mut conn) = connected(&net, net.options(vec![server]), Tid(5)).await;
    let oid = Oid(3);
    let mut notices = client.subscribe();
    let server_side = async {
        let call = conn.expect("loadBefore").await;
        conn.reply(&call, current(b"old", Tid(4))).await;
        conn.send(&ClientEvent::invalidate_transaction(Tid(6), &[oid]))
            .await;
    };
    let (done, ()) = tokio::join!(
        client.prefetch(std::slice::from_ref(&oid), Tid::MAX),
        server_side
    );
    done.unwrap();
    harness::notice(&mut notices, |n| {
        matches!(n, zeo_client::Notice::Invalidated { .. }).then_some(())
    })
    .await;
    assert_eq!(client.cache().load(oid), None, "no stale current revision");
    let old = client.cache().load_before(oid, Tid(6)).unwrap();
    assert_eq!(
        (old.data, old.start, old.end),
        (b"old".to_vec(), Tid(4), Some(Tid(6)))
    );
    client.close().unwrap();
}

#[tokio::test(start_paused = true)]
async fn an_invalidation_before_the_reply_leaves_the_new_revision_current() {
    let (net, server) = one_server();
    let (client, mut conn) = connected(&net, net.options(vec![server]), Tid(5)).await;
    let oid = Oid(3);
    let server_side = async {
        let call = conn.expect("loadBefore").await;
        // A commit lands between the request and its reply: the server
        // sends the invalidation first, then the revision it made.
        conn.send(&ClientEvent::invalidate_transaction(Tid(6), &[oid]))
            .await;
        conn.reply(&call, current(b"new", Tid(6))).await;
    };
    let (done, ()) = tokio::join!(
        client.prefetch(std::slice::from_ref(&oid), Tid::MAX),
        server_side
    );
    done.unwrap();
    assert_eq!(client.cache().load(oid), Some((b"new".to_vec(), Tid(6))));
    assert_eq!(client.last_transaction(), Tid(6));
    client.close().unwrap();
}

#[tokio::test(start_paused = true)]
async fn a_missing_object_is_skipped_and_a_lost_connection_fails_the_prefetch() {
    let (net, server) = one_server();
    let (client, mut conn) = connected(&net, net.options(vec![server]), Tid(5)).await;
    let server_side = async {
        let calls = take_loads(&mut conn, 2).await;
        conn.reply(&calls[0], Value::None).await;
        conn.reply(&calls[1], current(b"two", Tid(2))).await;
    };
    let (done, ()) = tokio::join!(client.prefetch(&TWO, Tid::MAX), server_side);
    done.unwrap();
    assert_eq!(client.cache().load(Oid(2)), Some((b"two".to_vec(), Tid(2))));

    let server_side = async {
        let _ = conn.expect("loadBefore").await;
        drop(conn);
    };
    let (done, ()) = tokio::join!(client.prefetch(&NINE, Tid::MAX), server_side);
    let err = done.unwrap_err();
    assert!(err.is_disconnected(), "{err}");
    client.close().unwrap();
}
