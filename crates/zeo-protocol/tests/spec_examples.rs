//! The byte-level examples of the protocol spec (sections 2.6 and 2.7),
//! recorded from real ZEO 5.4.1: each frame must decode to the message the
//! spec describes and that message must encode back to the same frame.

use zeo_pickle::Value;
use zeo_protocol::*;
use zeo_storage::{Error as StorageError, Oid, Tid};

const TID1: Tid = Tid(0x03d8_1e8a_1234_5678);
const TID2: Tid = Tid(0x03d8_1e8a_1234_5679);

/// Hex with optional spaces, and `"text"` spans for ASCII runs.
fn bytes(spec: &str) -> Vec<u8> {
    let mut out = Vec::new();
    for (i, part) in spec.split('"').enumerate() {
        if i % 2 == 1 {
            out.extend_from_slice(part.as_bytes());
        } else {
            let hex: String = part.split_whitespace().collect();
            out.extend(hex::decode(hex).unwrap());
        }
    }
    out
}

/// Checks `frame` is `msg` framed and marshalled with `encoding`.
fn check(encoding: Encoding, frame: &str, msg: &Message) {
    let frame = bytes(frame);
    let (payload, rest) = decode_frame(&frame).unwrap();
    assert!(rest.is_empty());
    for m in [Marshaller::server(encoding), Marshaller::client(encoding)] {
        let mut expected = msg.clone();
        if encoding == Encoding::Msgpack {
            // msgpack arrays always decode as tuples.
            expected.args = lists_to_tuples(expected.args);
        }
        assert_eq!(m.decode(payload).unwrap(), expected);
        let encoded = encode_frame(&m.encode(msg).unwrap()).unwrap();
        assert_eq!(hex::encode(encoded), hex::encode(&frame), "{}", msg.method);
    }
}

fn lists_to_tuples(v: Value) -> Value {
    match v {
        Value::List(items) | Value::Tuple(items) => {
            Value::Tuple(items.into_iter().map(lists_to_tuples).collect())
        }
        Value::Dict(pairs) => Value::Dict(
            pairs
                .into_iter()
                .map(|(k, v)| (lists_to_tuples(k), lists_to_tuples(v)))
                .collect(),
        ),
        other => other,
    }
}

fn tid(t: Tid) -> Value {
    Value::Bytes(t.to_bytes().to_vec())
}

#[test]
fn msgpack_handshake_frames() {
    let hs = ServerHandshake::new(Encoding::Msgpack);
    assert_eq!(
        encode_frame(&hs.greeting()).unwrap(),
        bytes("00 00 00 02 4d 35")
    );
    let (encoding, answer) = ClientHandshake::new().receive(&hs.greeting()).unwrap();
    assert_eq!(encoding, Encoding::Msgpack);
    assert_eq!(encode_frame(&answer).unwrap(), bytes("00 00 00 02 4d 35"));
    assert_eq!(
        hs.receive(&answer).unwrap(),
        ClientHello::Accepted(Encoding::Msgpack)
    );
}

#[test]
fn msgpack_register() {
    check(
        Encoding::Msgpack,
        r#"00 00 00 10 94 01 c2 a8 "register" 92 a1 31 c2"#,
        &ClientRequest::register(1, "1", false),
    );
}

#[test]
fn msgpack_register_reply() {
    check(
        Encoding::Msgpack,
        r#"00 00 00 14 94 01 00 a6 ".reply" c4 08 03 d8 1e 8a 12 34 56 78"#,
        &Reply::value(Value::Int(1), tid(TID1)),
    );
}

#[test]
fn msgpack_last_transaction() {
    check(
        Encoding::Msgpack,
        r#"00 00 00 14 94 01 c2 af "lastTransaction" 90"#,
        &ClientRequest::last_transaction(1),
    );
}

#[test]
fn msgpack_heartbeat() {
    check(
        Encoding::Msgpack,
        r#"00 00 00 0b 94 ff 00 a6 ".reply" c0"#,
        &Message::heartbeat(),
    );
}

#[test]
fn msgpack_invalidate_transaction() {
    check(
        Encoding::Msgpack,
        r#"00 00 00 2f 94 00 c3 b5 "invalidateTransaction" 92 c4 08 03 d8 1e 8a 12 34 56 79
           91 c4 08 00 00 00 00 00 00 00 01"#,
        &ClientEvent::invalidate_transaction(TID2, &[Oid(1)]),
    );
}

#[test]
fn msgpack_pos_key_error() {
    check(
        Encoding::Msgpack,
        r#"00 00 00 34 94 02 02 a6 ".reply" 92 bd "ZODB.POSException.POSKeyError"
           91 c4 08 00 00 00 00 00 00 00 00"#,
        &Reply::error(
            Value::Int(2),
            &WireError::from(&StorageError::pos_key(Oid(0))),
        ),
    );
}

#[test]
fn msgpack_read_only_error() {
    check(
        Encoding::Msgpack,
        r#"00 00 00 2c 94 01 02 a6 ".reply" 92 bf "ZODB.POSException.ReadOnlyError" 90"#,
        &Reply::error(Value::Int(1), &WireError::from(&StorageError::ReadOnly)),
    );
}

#[test]
fn msgpack_conflict_error() {
    check(
        Encoding::Msgpack,
        r#"00 00 00 84 94 05 02 a6 ".reply" 92 bf "ZODB.POSException.ConflictError"
           84 a7 "message" b7 "database conflict error"
              a3 "oid" c4 08 00 00 00 00 00 00 00 01
              aa "class_name" a1 "."
              a7 "serials" 92 c4 08 03 d8 1e 8a 12 34 56 79 c4 08 03 d8 1e 8a 12 34 56 78"#,
        &Reply::error(
            Value::Int(5),
            &WireError {
                class: "ZODB.POSException.ConflictError".into(),
                fields: Value::Dict(vec![
                    (Value::str("message"), Value::str("database conflict error")),
                    (Value::str("oid"), Value::Bytes(Oid(1).to_bytes().to_vec())),
                    (Value::str("class_name"), Value::str(".")),
                    (
                        Value::str("serials"),
                        Value::Tuple(vec![tid(TID2), tid(TID1)]),
                    ),
                ]),
            },
        ),
    );
}

#[test]
fn pickle_last_transaction() {
    check(
        Encoding::Pickle,
        r#"00 00 00 1d 80 03 28 4b 01 89 58 0f 00 00 00 "lastTransaction" 29 74 2e"#,
        &ClientRequest::last_transaction(1),
    );
}

#[test]
fn pickle_reply_tid() {
    check(
        Encoding::Pickle,
        r#"00 00 00 1e 80 03 28 4b 01 4b 00 58 06 00 00 00 ".reply"
           43 08 03 d8 1e 8a 12 34 56 78 74 2e"#,
        &Reply::value(Value::Int(1), tid(TID1)),
    );
}

#[test]
fn pickle_heartbeat() {
    check(
        Encoding::Pickle,
        r#"00 00 00 18 80 03 28 4a ff ff ff ff 4b 00 58 06 00 00 00 ".reply" 4e 74 2e"#,
        &Message::heartbeat(),
    );
}

#[test]
fn pickle_register() {
    check(
        Encoding::Pickle,
        r#"00 00 00 1d 80 03 28 4b 01 89 58 08 00 00 00 "register" 58 01 00 00 00 "1" 89 86 74 2e"#,
        &ClientRequest::register(1, "1", false),
    );
}

#[test]
fn pickle_pos_key_error() {
    check(
        Encoding::Pickle,
        r#"00 00 00 42 80 03 28 4b 02 4b 02 58 06 00 00 00 ".reply"
           58 1d 00 00 00 "ZODB.POSException.POSKeyError" 43 08 00 00 00 00 00 00 00 00 85 86 74 2e"#,
        &Reply::error(
            Value::Int(2),
            &WireError::from(&StorageError::pos_key(Oid(0))),
        ),
    );
}

#[test]
fn pickle_tpc_begin() {
    // 140000000000 = 0x20_98a6_7800, LONG1 with 5 little-endian bytes.
    let frame = r#"80 03 28 4b 03 89 58 09 00 00 00 "tpc_begin" 28 8a 05 00 78 a6 98 20
                   43 04 "user" 43 04 "desc" 7d 4e 58 01 00 00 00 20 74 74 2e"#;
    let payload = bytes(frame);
    let framed = hex::encode(encode_frame(&payload).unwrap());
    let msg = Message::call(
        3,
        "tpc_begin",
        vec![
            Value::Int(140_000_000_000),
            Value::bytes(*b"user"),
            Value::bytes(*b"desc"),
            Value::Dict(vec![]),
            Value::None,
            Value::str(" "),
        ],
    );
    check(Encoding::Pickle, &framed, &msg);
    let Incoming::Call(call) = ServerRequest::parse(&msg).unwrap() else {
        panic!()
    };
    assert_eq!(
        call.request,
        ServerRequest::TpcBegin {
            txn: TxnId(140_000_000_000),
            user: b"user".to_vec(),
            description: b"desc".to_vec(),
            extension: Value::Dict(vec![]),
            tid: None,
            status: zeo_storage::TxnStatus::Committed,
        }
    );
}

#[test]
fn zeo4_heartbeat_is_still_understood() {
    // ZEO 4 clients sent this protocol-1 pickle as their keep-alive.
    let m = Marshaller::server(Encoding::Pickle);
    let msg = m.decode(b"(J\xff\xff\xff\xffK\x00U\x06.replyNt.").unwrap();
    assert_eq!(ServerRequest::parse(&msg).unwrap(), Incoming::Heartbeat);
}
