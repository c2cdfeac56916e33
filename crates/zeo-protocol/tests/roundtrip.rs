//! Property tests: messages survive both marshallers, and no input makes
//! any decoder panic.

use bytes::BytesMut;
use proptest::prelude::*;
use tokio_util::codec::Decoder;
use zeo_pickle::Value;
use zeo_protocol::*;

/// The values ZEO messages carry.
fn value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::None),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::Int),
        // Unsigned 64-bit values beyond i64 (msgpack's uint64).
        (i64::MAX as u64 + 1..=u64::MAX).prop_map(|u| {
            let mut le = u.to_le_bytes().to_vec();
            le.push(0);
            Value::BigInt(le)
        }),
        any::<f64>()
            .prop_filter("NaN never equals itself", |f| !f.is_nan())
            .prop_map(Value::Float),
        proptest::collection::vec(any::<u8>(), 0..40).prop_map(Value::Bytes),
        ".{0,20}".prop_map(Value::Str),
    ];
    leaf.prop_recursive(4, 48, 6, |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..6).prop_map(Value::Tuple),
            proptest::collection::vec(inner.clone(), 0..6).prop_map(Value::List),
            proptest::collection::vec((key(), inner), 0..5).prop_map(Value::Dict),
        ]
    })
}

/// Dict keys: hashable scalars.
fn key() -> impl Strategy<Value = Value> {
    prop_oneof![
        ".{0,8}".prop_map(Value::Str),
        proptest::collection::vec(any::<u8>(), 0..8).prop_map(Value::Bytes),
        any::<i64>().prop_map(Value::Int),
    ]
}

fn message() -> impl Strategy<Value = Message> {
    (
        value(),
        prop_oneof![Just(Flags::None), Just(Flags::Async), Just(Flags::Error)],
        "[a-zA-Z_.]{1,20}",
        value(),
    )
        .prop_map(|(msgid, flags, method, args)| {
            // Flags::Async only makes sense on calls, Flags::Error on replies.
            let flags = match (flags, method == REPLY) {
                (Flags::Async, true) => Flags::Error,
                (Flags::Error, false) => Flags::Async,
                (f, _) => f,
            };
            Message {
                msgid,
                flags,
                method,
                args,
            }
        })
}

/// What msgpack gives back: every list is a tuple.
fn as_msgpack_sees_it(v: &Value) -> Value {
    match v {
        Value::List(items) | Value::Tuple(items) => {
            Value::Tuple(items.iter().map(as_msgpack_sees_it).collect())
        }
        Value::Dict(pairs) => Value::Dict(
            pairs
                .iter()
                .map(|(k, v)| (as_msgpack_sees_it(k), as_msgpack_sees_it(v)))
                .collect(),
        ),
        other => other.clone(),
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn pickle_roundtrip(msg in message()) {
        for (enc, dec) in [
            (Marshaller::client(Encoding::Pickle), Marshaller::server(Encoding::Pickle)),
            (Marshaller::server(Encoding::Pickle), Marshaller::client(Encoding::Pickle)),
        ] {
            let bytes = enc.encode(&msg).unwrap();
            prop_assert_eq!(dec.decode(&bytes).unwrap(), msg.clone());
        }
    }

    #[test]
    fn msgpack_roundtrip(msg in message()) {
        let m = Marshaller::server(Encoding::Msgpack);
        let bytes = m.encode(&msg).unwrap();
        let back = Marshaller::client(Encoding::Msgpack).decode(&bytes).unwrap();
        let expected = Message {
            msgid: as_msgpack_sees_it(&msg.msgid),
            args: as_msgpack_sees_it(&msg.args),
            ..msg
        };
        prop_assert_eq!(&back, &expected);
        // Decoded messages re-encode to the same bytes.
        prop_assert_eq!(m.encode(&back).unwrap(), bytes);
    }

    #[test]
    fn garbage_never_panics(data in proptest::collection::vec(any::<u8>(), 0..256)) {
        for encoding in [Encoding::Pickle, Encoding::Msgpack] {
            for m in [Marshaller::server(encoding), Marshaller::client(encoding)] {
                if let Ok(msg) = m.decode(&data) {
                    let _ = ServerRequest::parse(&msg);
                    let _ = ClientIncoming::parse(&msg);
                    let _ = m.encode(&msg);
                }
            }
        }
        let _ = ServerHandshake::new(Encoding::Pickle).receive(&data);
        let _ = ClientHandshake::new().receive(&data);
        let _ = decode_frame(&data);
        let mut codec = FrameCodec::with_max_frame(128);
        let mut buf = BytesMut::from(&data[..]);
        while let Ok(Some(_)) = codec.decode(&mut buf) {}
    }

    #[test]
    fn mutated_messages_never_panic(
        msg in message(),
        flips in proptest::collection::vec((any::<usize>(), any::<u8>()), 1..4),
        cut in any::<usize>(),
    ) {
        for encoding in [Encoding::Pickle, Encoding::Msgpack] {
            let m = Marshaller::server(encoding);
            let mut bytes = m.encode(&msg).unwrap();
            for (at, byte) in &flips {
                let i = at % bytes.len();
                bytes[i] ^= byte;
            }
            let truncated = &bytes[..cut % (bytes.len() + 1)];
            for data in [&bytes[..], truncated] {
                if let Ok(msg) = m.decode(data) {
                    let _ = ServerRequest::parse(&msg);
                    let _ = ClientIncoming::parse(&msg);
                }
            }
        }
    }

    #[test]
    fn typed_requests_survive_the_wire(oid in any::<u64>(), tid in any::<u64>(), data in proptest::collection::vec(any::<u8>(), 0..64), txn in any::<i64>()) {
        use zeo_storage::{Oid, Tid};
        let msg = ClientRequest::storea(Oid(oid), Tid(tid), &data, TxnId(txn));
        for encoding in [Encoding::Pickle, Encoding::Msgpack] {
            let bytes = Marshaller::client(encoding).encode(&msg).unwrap();
            let back = Marshaller::server(encoding).decode(&bytes).unwrap();
            let Ok(Incoming::Call(call)) = ServerRequest::parse(&back) else { panic!() };
            prop_assert_eq!(call.request, ServerRequest::Storea { oid: Oid(oid), serial: Tid(tid), data: data.clone(), txn: TxnId(txn) });
        }
    }
}

#[test]
fn huge_bytes_use_the_32_bit_forms() {
    let msg = Reply::value(Value::Int(1), Value::Bytes(vec![0xab; 70_000]));
    let pickle = Marshaller::server(Encoding::Pickle).encode(&msg).unwrap();
    let at = pickle
        .windows(5)
        .position(|w| w == [b'B', 0x70, 0x11, 0x01, 0x00]);
    assert!(at.is_some(), "BINBYTES with a 4-byte length");
    let mp = Marshaller::server(Encoding::Msgpack).encode(&msg).unwrap();
    let at = mp
        .windows(5)
        .position(|w| w == [0xc6, 0x00, 0x01, 0x11, 0x70]);
    assert!(at.is_some(), "bin32");
    for encoding in [Encoding::Pickle, Encoding::Msgpack] {
        let m = Marshaller::client(encoding);
        assert_eq!(m.decode(&m.encode(&msg).unwrap()).unwrap(), msg);
    }
}
