//! Hostile or broken input costs only the connection it came on.

mod common;

use common::*;
use tokio::io::AsyncWriteExt;
use zeo_pickle::Value;
use zeo_protocol::{Encoding, Message};
use zeo_server::ServerSettings;
use zeo_storage::{Oid, Tid};

/// After each abuse, a well-behaved client still commits and loads.
async fn server_still_works(server: &TestServer, txn: i64) {
    let mut good = server.client().await;
    let oid = good.new_oids().await[0];
    let tid = good
        .commit(txn, &[(oid, Tid::ZERO, b"fine".to_vec())])
        .await
        .unwrap();
    assert_eq!(good.load(oid).await.unwrap().unwrap().start, tid);
}

#[tokio::test]
async fn garbage_payloads_close_only_that_connection() {
    let server = TestServer::start(ServerSettings::default()).await;
    let mut bystander = server.client().await;
    for enc in [Encoding::Pickle, Encoding::Msgpack] {
        for garbage in [&b"\xff\xfe\xfd"[..], b"", b"\x80\x03(K\x01", b"\x94\x01"] {
            let mut c = Client::connect(server.addr, Some(enc)).await;
            c.register("1", false).await.unwrap();
            c.send_raw(garbage).await;
            assert!(c.closed().await, "{enc:?} {garbage:?}");
        }
    }
    assert_eq!(bystander.call("ping", vec![]).await.unwrap(), Value::None);
    server_still_works(&server, 1).await;
    server.stop().await;
}

#[tokio::test]
async fn bad_handshakes_are_refused() {
    let server = TestServer::start(ServerSettings::default()).await;
    for hello in [&b"Z4"[..], b"X5", b"", b"Z3101"] {
        let mut stream = tokio::net::TcpStream::connect(server.addr).await.unwrap();
        let mut greeting = [0u8; 6];
        tokio::io::AsyncReadExt::read_exact(&mut stream, &mut greeting)
            .await
            .unwrap();
        stream
            .write_all(&zeo_protocol::encode_frame(hello).unwrap())
            .await
            .unwrap();
        let mut rest = Vec::new();
        let n = tokio::time::timeout(
            WAIT,
            tokio::io::AsyncReadExt::read_to_end(&mut stream, &mut rest),
        )
        .await
        .unwrap()
        .unwrap_or(0);
        assert_eq!(n, 0, "{hello:?} got an answer");
    }
    server_still_works(&server, 1).await;
    server.stop().await;
}

#[tokio::test]
async fn oversized_and_truncated_frames() {
    let settings = ServerSettings {
        max_message_size: 1024 * 1024,
        ..Default::default()
    };
    let server = TestServer::start(settings).await;
    // A length far beyond the limit: refused before any allocation.
    let mut c = server.client().await;
    c.writer
        .write_all(&[0xff, 0xff, 0xff, 0xff, 1, 2, 3])
        .await
        .unwrap();
    assert!(c.closed().await);
    // Just over the limit.
    let mut c = server.client().await;
    c.writer
        .write_all(&(1024u32 * 1024 + 1).to_be_bytes())
        .await
        .unwrap();
    assert!(c.closed().await);
    // A frame cut short by the client going away.
    let mut c = server.client().await;
    c.writer.write_all(&[0, 0, 0, 100, 1, 2, 3]).await.unwrap();
    c.writer.shutdown().await.unwrap();
    assert!(c.closed().await);
    server_still_works(&server, 1).await;
    server.stop().await;
}

#[tokio::test]
async fn unknown_methods_close_the_connection() {
    let server = TestServer::start(ServerSettings::default()).await;
    for method in ["undo", "loadEx", "__init__", "zeoVerify", "ruok"] {
        let mut c = server.client().await;
        let id = c.msgid();
        c.send(&Message::call(id, method, vec![])).await;
        assert!(c.closed().await, "{method}");
    }
    server_still_works(&server, 1).await;
    server.stop().await;
}

#[tokio::test]
async fn wrong_argument_types() {
    let server = TestServer::start(ServerSettings::default()).await;
    let mut c = server.client().await;
    // Synchronous: a TypeError reply, and the connection goes on.
    for (method, args) in [
        ("loadBefore", vec![Value::Int(1), Value::Int(2)]),
        (
            "loadBefore",
            vec![bytes(b"short"), bytes(&Tid::MAX.to_bytes())],
        ),
        ("getTid", vec![]),
        (
            "history",
            vec![bytes(&Oid(0).to_bytes()), Value::Str("many".into())],
        ),
        ("new_oids", vec![Value::Float(1.5)]),
    ] {
        let err = c.call(method, args).await.unwrap_err();
        assert_eq!(err.class, "builtins.TypeError", "{method}");
    }
    assert_eq!(c.call("ping", vec![]).await.unwrap(), Value::None);
    // Not even a tuple of arguments.
    let id = c.msgid();
    c.send(&Message {
        args: Value::Int(3),
        ..Message::call(id, "ping", vec![])
    })
    .await;
    let err = c.reply_to(&Value::Int(id)).await.unwrap_err();
    assert_eq!(err.class, "builtins.TypeError");
    // One-way: nobody to tell, so the connection closes.
    c.call_async("storea", vec![Value::None]).await;
    assert!(c.closed().await);
    server_still_works(&server, 1).await;
    server.stop().await;
}

#[tokio::test]
async fn forbidden_pickle_globals_close_the_connection() {
    let server = TestServer::start(ServerSettings::default()).await;
    let mut c = Client::connect(server.addr, Some(Encoding::Pickle)).await;
    c.register("1", false).await.unwrap();
    // (1, False, 'ping', (os.system('true'),)) as a protocol-3 pickle.
    let evil = zeo_pickle::encode(
        &Value::Tuple(vec![
            Value::Int(2),
            Value::Bool(false),
            Value::Str("ping".into()),
            Value::Tuple(vec![Value::Call {
                callable: Box::new(Value::Global {
                    module: "os".into(),
                    name: "system".into(),
                }),
                args: Box::new(Value::Tuple(vec![Value::Str("true".into())])),
                new_object: false,
            }]),
        ]),
        zeo_pickle::Protocol::V3,
    )
    .unwrap();
    c.send_raw(&evil).await;
    assert!(c.closed().await);
    server_still_works(&server, 1).await;
    server.stop().await;
}

#[tokio::test]
async fn transaction_id_mismatches() {
    let server = TestServer::start(ServerSettings::default()).await;
    let mut c = server.client().await;
    // vote without a transaction: StorageTransactionError(None, id).
    let err = c.vote(5).await.unwrap_err();
    assert_eq!(err.class, "ZODB.POSException.StorageTransactionError");
    assert_eq!(err.fields, Value::Tuple(vec![Value::None, Value::Int(5)]));
    // finish / abort of an unknown transaction answer None.
    assert_eq!(c.abort(5).await.unwrap(), Value::None);
    c.begin(6).await;
    let err = c.vote(7).await.unwrap_err();
    assert_eq!(err.fields, Value::Tuple(vec![Value::Int(6), Value::Int(7)]));
    // finish before vote: AssertionError.
    let id = c.msgid();
    c.send(&zeo_protocol::ClientRequest::tpc_finish(
        id,
        zeo_protocol::TxnId(6),
    ))
    .await;
    let err = c.reply_to(&Value::Int(id)).await.unwrap_err();
    assert_eq!(err.class, "builtins.AssertionError");
    // A second tpc_begin with another id closes the connection.
    c.begin(8).await;
    assert!(c.closed().await);
    server_still_works(&server, 1).await;
    server.stop().await;
}
