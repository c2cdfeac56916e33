//! Storage errors on the wire, handshakes, framing limits and the pickle
//! global policies.

use bytes::BytesMut;
use tokio_util::codec::{Decoder, Encoder};
use zeo_pickle::Value;
use zeo_protocol::*;
use zeo_storage::{Error as StorageError, Oid, Tid};

fn s(text: &str) -> Value {
    Value::Str(text.to_owned())
}

fn id(n: u64) -> Value {
    Value::Bytes(n.to_be_bytes().to_vec())
}

#[test]
fn every_storage_error_maps_to_its_python_class_and_fields() {
    use std::path::PathBuf;
    let cases: Vec<(StorageError, &str, Value)> = vec![
        (
            StorageError::PosKey {
                oid: Oid(3),
                serial: None,
            },
            "ZODB.POSException.POSKeyError",
            Value::Tuple(vec![id(3)]),
        ),
        (
            StorageError::PosKey {
                oid: Oid(3),
                serial: Some(Tid(4)),
            },
            "ZODB.POSException.POSKeyError",
            Value::Tuple(vec![id(3), id(4)]),
        ),
        (
            StorageError::Conflict {
                oid: Oid(1),
                committed: Tid(9),
                old: Tid(5),
            },
            "ZODB.POSException.ConflictError",
            Value::Dict(vec![
                (s("message"), s("database conflict error")),
                (s("oid"), id(1)),
                (s("class_name"), Value::None),
                (s("serials"), Value::Tuple(vec![id(9), id(5)])),
            ]),
        ),
        (
            StorageError::ReadConflict {
                oid: Oid(1),
                committed: Tid(9),
                old: Tid(5),
            },
            "ZODB.POSException.ReadConflictError",
            Value::Dict(vec![
                (s("message"), s("database read conflict error")),
                (s("oid"), id(1)),
                (s("class_name"), Value::None),
                (s("serials"), Value::Tuple(vec![id(9), id(5)])),
            ]),
        ),
        (
            StorageError::Transaction("Already voting (locked)".into()),
            "ZODB.POSException.StorageTransactionError",
            Value::Tuple(vec![s("Already voting (locked)")]),
        ),
        (
            StorageError::ReadOnly,
            "ZODB.POSException.ReadOnlyError",
            Value::Tuple(vec![]),
        ),
        (
            StorageError::Undo {
                reason: "non-undoable transaction".into(),
                oid: None,
            },
            "ZODB.POSException.UndoError",
            Value::Dict(vec![
                (s("_reason"), s("non-undoable transaction")),
                (s("_oid"), Value::None),
            ]),
        ),
        (
            StorageError::Undo {
                reason: "Some data were modified by a later transaction".into(),
                oid: Some(Oid(1)),
            },
            "ZODB.POSException.MultipleUndoErrors",
            Value::Dict(vec![
                (
                    s("_reason"),
                    s("Some data were modified by a later transaction"),
                ),
                (s("_oid"), id(1)),
                (
                    s("_errs"),
                    Value::List(vec![Value::Tuple(vec![
                        id(1),
                        s("Some data were modified by a later transaction"),
                    ])]),
                ),
            ]),
        ),
        (
            StorageError::Format {
                path: PathBuf::from("Data.fs"),
                pos: 4,
                reason: "bad".into(),
            },
            "ZODB.FileStorage.FileStorage.FileStorageFormatError",
            Value::Tuple(vec![s("Data.fs"), Value::Int(4), s("bad")]),
        ),
        (
            StorageError::FileStorage("user name too long".into()),
            "ZODB.FileStorage.FileStorage.FileStorageError",
            Value::Tuple(vec![s("user name too long")]),
        ),
        (
            StorageError::Locked {
                path: PathBuf::from("Data.fs.lock"),
            },
            "zc.lockfile.LockError",
            Value::Tuple(vec![s("Couldn't lock \"Data.fs.lock\"")]),
        ),
        (
            StorageError::InvalidArgument("pack time is in the future".into()),
            "builtins.ValueError",
            Value::Tuple(vec![s("pack time is in the future")]),
        ),
        (
            StorageError::Key("no root".into()),
            "builtins.KeyError",
            Value::Tuple(vec![s("no root")]),
        ),
        (
            StorageError::Storage("oops".into()),
            "ZODB.POSException.StorageError",
            Value::Tuple(vec![s("oops")]),
        ),
        (
            StorageError::Closed,
            "ZODB.POSException.StorageError",
            Value::Tuple(vec![s("StorageError: the storage is closed")]),
        ),
    ];
    for (err, class, fields) in cases {
        let wire = WireError::from(&err);
        assert_eq!(wire.class, class, "{err}");
        assert_eq!(wire.fields, fields, "{err}");
        // Every one is encodable in both encodings.
        for encoding in [Encoding::Pickle, Encoding::Msgpack] {
            let msg = Reply::error(Value::Int(1), &wire);
            let bytes = Marshaller::server(encoding).encode(&msg).unwrap();
            let back = Marshaller::client(encoding).decode(&bytes).unwrap();
            let ClientIncoming::Reply {
                result: Err(got), ..
            } = ClientIncoming::parse(&back).unwrap()
            else {
                panic!("{err}")
            };
            assert_eq!(got.class, class);
        }
    }
    let io = StorageError::io("fsync", std::io::Error::other("disk gone"));
    let wire = WireError::from(&io);
    assert_eq!(wire.class, "ZODB.POSException.StorageSystemError");
    assert_eq!(
        wire.fields,
        Value::Tuple(vec![s("I/O error: fsync: disk gone")])
    );
}

#[test]
fn wire_errors_turn_back_into_storage_errors() {
    let round = |e: StorageError| WireError::from(&e).to_storage_error();
    assert!(matches!(
        round(StorageError::pos_key(Oid(2))),
        StorageError::PosKey {
            oid: Oid(2),
            serial: None
        }
    ));
    assert!(matches!(
        round(StorageError::PosKey {
            oid: Oid(2),
            serial: Some(Tid(3))
        }),
        StorageError::PosKey {
            oid: Oid(2),
            serial: Some(Tid(3))
        }
    ));
    assert!(matches!(
        round(StorageError::ReadConflict {
            oid: Oid(1),
            committed: Tid(2),
            old: Tid(1)
        }),
        StorageError::ReadConflict {
            oid: Oid(1),
            committed: Tid(2),
            old: Tid(1)
        }
    ));
    assert!(matches!(
        round(StorageError::ReadOnly),
        StorageError::ReadOnly
    ));
    assert!(
        matches!(round(StorageError::Transaction("x".into())), StorageError::Transaction(m) if m == "x")
    );
    assert!(matches!(
        round(StorageError::Undo { reason: "r".into(), oid: Some(Oid(4)) }),
        StorageError::Undo { reason, oid: Some(Oid(4)) } if reason == "r"
    ));
    assert!(
        matches!(round(StorageError::InvalidArgument("v".into())), StorageError::InvalidArgument(m) if m == "v")
    );
    assert!(matches!(round(StorageError::Key("k".into())), StorageError::Key(m) if m == "k"));
    let other = WireError::no_attribute("new_oid").to_storage_error();
    assert!(
        matches!(&other, StorageError::Storage(m) if m.contains("AttributeError") && m.contains("new_oid")),
        "{other}"
    );
    let mismatch = WireError::transaction_mismatch(Some(TxnId(1)), TxnId(2));
    assert_eq!(
        mismatch.fields,
        Value::Tuple(vec![Value::Int(1), Value::Int(2)])
    );
    assert!(matches!(
        mismatch.to_storage_error(),
        StorageError::Transaction(_)
    ));
}

#[test]
fn zeo4_style_exception_replies_are_errors_on_the_client() {
    // A ZEO 3/4 server pickles (ExceptionClass, instance) as a plain reply.
    let reply = Message::reply(
        Value::Int(1),
        Value::Tuple(vec![
            Value::global("ZODB.POSException", "POSKeyError"),
            Value::Call {
                callable: Box::new(Value::global("ZODB.POSException", "_recon")),
                args: Box::new(Value::Tuple(vec![])),
                new_object: false,
            },
        ]),
    );
    let m = Marshaller::client(Encoding::Pickle);
    let back = m.decode(&m.encode(&reply).unwrap()).unwrap();
    let ClientIncoming::Reply {
        result: Err(err), ..
    } = ClientIncoming::parse(&back).unwrap()
    else {
        panic!()
    };
    assert_eq!(err.class, "ZODB.POSException.POSKeyError");
    // The same pickle is refused by a server.
    let bytes = m.encode(&reply).unwrap();
    assert!(matches!(
        Marshaller::server(Encoding::Pickle).decode(&bytes),
        Err(Error::ForbiddenGlobal { module, .. }) if module == "ZODB.POSException"
    ));
}

#[test]
fn server_pickle_policy_matches_server_find_global() {
    let server = Marshaller::server(Encoding::Pickle);
    let msg_with =
        |global: Value| Message::call(1, "undoInfo", vec![Value::Int(0), Value::Int(1), global]);
    for (module, name, allowed) in [
        ("ZopeUndo.Prefix", "Prefix", true),
        ("zodbpickle", "binary", true),
        ("builtins", "set", true),
        ("copy_reg", "_reconstructor", true),
        ("__builtin__", "set", true),
        ("os", "system", false),
        ("builtins.sub", "x", false),
        ("ZODB.POSException", "ConflictError", false),
        ("ZopeUndo", "Prefix", false),
    ] {
        let bytes = Marshaller::client(Encoding::Pickle)
            .encode(&msg_with(Value::global(module, name)))
            .unwrap();
        match server.decode(&bytes) {
            Ok(_) => assert!(allowed, "{module}.{name} must be refused"),
            Err(Error::ForbiddenGlobal { module: m, name: n }) => {
                assert!(!allowed, "{module}.{name} must be allowed");
                assert_eq!((m.as_str(), n.as_str()), (module, name));
            }
            Err(other) => panic!("{module}.{name}: {other}"),
        }
    }
}

#[test]
fn client_pickle_policy_allows_exceptions_only() {
    for (module, name, allowed) in [
        ("builtins", "KeyError", true),
        ("exceptions", "ValueError", true),
        ("builtins", "SystemExit", false),
        ("builtins", "eval", false),
        ("ZODB.POSException", "ConflictError", true),
        ("ZODB.POSException", "_recon", true),
        ("ZEO.Exceptions", "ClientDisconnected", true),
        ("ZODB.POSException", "oid_repr", false),
        ("transaction.interfaces", "TransientError", true),
        ("ZEO.Exceptions", "ProtocolError", true),
        ("ZopeUndo.Prefix", "Prefix", true),
        ("os", "system", false),
        ("subprocess", "Popen", false),
    ] {
        assert_eq!(client_find_global(module, name), allowed, "{module}.{name}");
    }
}

#[test]
fn python2_binary_strings_become_bytes() {
    // zodbpickle.binary(b'...') as a Python 2 client could send it.
    let oid = Value::Call {
        callable: Box::new(Value::global("zodbpickle", "binary")),
        args: Box::new(Value::Tuple(vec![id(5)])),
        new_object: false,
    };
    let msg = Message::call(1, "getTid", vec![oid]);
    let bytes = Marshaller::client(Encoding::Pickle).encode(&msg).unwrap();
    let back = Marshaller::server(Encoding::Pickle).decode(&bytes).unwrap();
    let Incoming::Call(call) = ServerRequest::parse(&back).unwrap() else {
        panic!()
    };
    assert_eq!(call.request, ServerRequest::GetTid { oid: Oid(5) });
    // Python 2 native strings (SHORT_BINSTRING) for names and oids.
    let py2 = b"\x80\x02(K\x01\x89U\x06getTidU\x08\x00\x00\x00\x00\x00\x00\x00\x05\x85t.";
    let back = Marshaller::server(Encoding::Pickle).decode(py2).unwrap();
    let Incoming::Call(call) = ServerRequest::parse(&back).unwrap() else {
        panic!()
    };
    assert_eq!(call.request, ServerRequest::GetTid { oid: Oid(5) });
}

#[test]
fn msgpack_refuses_what_python_msgpack_refuses() {
    let m = Marshaller::server(Encoding::Msgpack);
    for value in [
        Value::Set(vec![Value::Int(1)]),
        Value::global("datetime", "datetime"),
        Value::BigInt(vec![0, 0, 0, 0, 0, 0, 0, 0, 1]),
    ] {
        let msg = Reply::value(Value::Int(1), value);
        assert!(matches!(m.encode(&msg), Err(Error::Unencodable(_))));
    }
    // Pickle takes them.
    let msg = Reply::value(Value::Int(1), Value::Set(vec![Value::Int(1)]));
    assert!(Marshaller::server(Encoding::Pickle).encode(&msg).is_ok());
}

#[test]
fn not_a_message() {
    let m = Marshaller::server(Encoding::Msgpack);
    for (bytes, what) in [
        (&b"\x93\x01\xc2\xa4ping"[..], "expected 4 elements, got 3"),
        (b"\x01", "expected a 4-tuple, got int"),
        (
            b"\x94\x01\xc2\x01\x90",
            "method name must be a string, got int",
        ),
    ] {
        match m.decode(bytes) {
            Err(Error::NotAMessage(reason)) => assert!(reason.contains(what), "{reason}"),
            other => panic!("{other:?}"),
        }
    }
    assert!(matches!(
        m.decode(b"\x94\x01\xc2\xa4ping\x90\x00"),
        Err(Error::Malformed { .. })
    ));
    let p = Marshaller::server(Encoding::Pickle);
    assert!(matches!(
        p.decode(b"\x80\x03K\x01."),
        Err(Error::NotAMessage(_))
    ));
    assert!(matches!(
        p.decode(b"\x80\x03(K\x01"),
        Err(Error::Malformed { .. })
    ));
}

#[test]
fn flags_follow_python_truthiness() {
    let m = Marshaller::server(Encoding::Msgpack);
    // ZEO 4 style int flags on a call: 1 means async.
    let msg = m.decode(b"\x94\x00\x01\xa4ping\x90").unwrap();
    assert_eq!(msg.flags, Flags::Async);
    // Any truthy flags on a reply mean error.
    let msg = m.decode(b"\x94\x01\xc3\xa6.reply\x92\xa1x\x90").unwrap();
    assert_eq!(msg.flags, Flags::Error);
    let msg = m.decode(b"\x94\x01\xc0\xa6.reply\xc0").unwrap();
    assert_eq!(msg.flags, Flags::None);
}

#[test]
fn server_handshake_cases() {
    let z = ServerHandshake::new(Encoding::Pickle);
    assert_eq!(z.greeting(), b"Z5");
    assert_eq!(ServerHandshake::new(Encoding::Msgpack).greeting(), b"M5");
    assert_eq!(
        z.receive(b"Z5").unwrap(),
        ClientHello::Accepted(Encoding::Pickle)
    );
    assert_eq!(
        z.receive(b"M5").unwrap(),
        ClientHello::Accepted(Encoding::Msgpack)
    );
    assert_eq!(z.receive(b"ruok").unwrap(), ClientHello::Ruok);
    for refused in [
        &b"Z4"[..],
        b"Z3101",
        b"Z309",
        b"Z6",
        b"Z55",
        b"X5",
        b"",
        b"5",
        b"ruok\n",
    ] {
        assert!(
            matches!(z.receive(refused), Err(Error::BadHandshake { .. })),
            "{:?}",
            String::from_utf8_lossy(refused)
        );
    }
}

#[test]
fn client_handshake_cases() {
    let c = ClientHandshake::new();
    assert_eq!(
        c.receive(b"Z5").unwrap(),
        (Encoding::Pickle, b"Z5".to_vec())
    );
    assert_eq!(
        c.receive(b"M5").unwrap(),
        (Encoding::Msgpack, b"M5".to_vec())
    );
    // min(server, '5') is '5' for any newer version.
    assert_eq!(
        c.receive(b"Z6").unwrap(),
        (Encoding::Pickle, b"Z5".to_vec())
    );
    assert_eq!(
        c.receive(b"M51").unwrap(),
        (Encoding::Msgpack, b"M5".to_vec())
    );
    for refused in [&b"Z4"[..], b"Z3101", b"Z", b"", b"X5"] {
        assert!(matches!(
            c.receive(refused),
            Err(Error::BadHandshake { .. })
        ));
    }
    let prefer = ClientHandshake::prefer(Encoding::Msgpack);
    assert_eq!(
        prefer.receive(b"Z5").unwrap(),
        (Encoding::Msgpack, b"M5".to_vec())
    );
    assert_eq!(ClientHandshake::ruok_request(), b"ruok");
}

#[test]
fn frame_codec_splits_and_joins() {
    let mut codec = FrameCodec::new();
    let mut out = BytesMut::new();
    codec.encode(&b"Z5"[..], &mut out).unwrap();
    codec.encode(Vec::new(), &mut out).unwrap();
    codec
        .encode(bytes::Bytes::from_static(b"abc"), &mut out)
        .unwrap();
    assert_eq!(&out[..], b"\0\0\0\x02Z5\0\0\0\0\0\0\0\x03abc");
    // Fed one byte at a time, the same frames come out.
    let mut input = BytesMut::new();
    let mut frames = Vec::new();
    for byte in out.iter() {
        input.extend_from_slice(&[*byte]);
        while let Some(frame) = codec.decode(&mut input).unwrap() {
            frames.push(frame.to_vec());
        }
    }
    assert_eq!(frames, vec![b"Z5".to_vec(), vec![], b"abc".to_vec()]);
    assert!(input.is_empty());
}

#[test]
fn frame_too_large_is_refused_before_buffering() {
    let mut codec = FrameCodec::with_max_frame(1024);
    assert_eq!(codec.max_frame(), 1024);
    let mut ok = BytesMut::from(&[0u8, 0, 4, 0][..]);
    assert!(
        codec.decode(&mut ok).unwrap().is_none(),
        "exactly the maximum is fine"
    );
    let mut buf = BytesMut::from(&[0u8, 0, 4, 1, 0xaa][..]);
    match codec.decode(&mut buf) {
        Err(Error::FrameTooLarge { len, max }) => assert_eq!((len, max), (1025, 1024)),
        other => panic!("{other:?}"),
    }
    // A 4 GiB announcement against the default limit: refused, and the
    // buffer was not grown for it.
    let mut codec = FrameCodec::new();
    let mut huge = BytesMut::from(&[0xffu8, 0xff, 0xff, 0xff][..]);
    let before = huge.capacity();
    assert!(matches!(
        codec.decode(&mut huge),
        Err(Error::FrameTooLarge {
            len: 0xffff_ffff,
            ..
        })
    ));
    assert_eq!(huge.capacity(), before);
    assert_eq!(DEFAULT_MAX_FRAME, 64 << 20);
}

#[test]
fn truncated_frames() {
    assert!(matches!(
        decode_frame(b"\0\0"),
        Err(Error::Truncated {
            needed: 4,
            available: 2
        })
    ));
    assert!(matches!(
        decode_frame(b"\0\0\0\x05abc"),
        Err(Error::Truncated {
            needed: 9,
            available: 7
        })
    ));
    let (payload, rest) = decode_frame(b"\0\0\0\0").unwrap();
    assert!(payload.is_empty() && rest.is_empty());
    // The codec waits rather than failing.
    let mut codec = FrameCodec::new();
    let mut buf = BytesMut::from(&b"\0\0\0\x05abc"[..]);
    assert!(codec.decode(&mut buf).unwrap().is_none());
    assert_eq!(buf.len(), 7, "nothing consumed while incomplete");
}

#[test]
fn ruok_reply_is_python_json() {
    let status = ServerStatus {
        connections: 2,
        loads: 1,
        stores: 0,
        commits: 0,
        aborts: 0,
        active_txns: 0,
        lock_time: Some(1_700_000_000.0),
        conflicts: 0,
        conflicts_resolved: 0,
        fsyncs: None,
        start: "Wed Nov 25 11:21:31 2026".into(),
        waiting: 0,
        timeout_thread_alive: Some(true),
        last_transaction: Tid(0x03d8_1e8a_1234_5678),
    };
    let json = String::from_utf8(ruok_reply(&[("1", &status), ("caf\u{e9}", &status)])).unwrap();
    let one = "{\"connections\": 2, \"loads\": 1, \"stores\": 0, \"commits\": 0, \"aborts\": 0, \
               \"active_txns\": 0, \"lock_time\": 1700000000.0, \"conflicts\": 0, \
               \"conflicts_resolved\": 0, \"start\": \"Wed Nov 25 11:21:31 2026\", \"waiting\": 0, \
               \"timeout-thread-is-alive\": true, \"last-transaction\": \"03d81e8a12345678\"}";
    assert_eq!(json, format!("{{\"1\": {one}, \"caf\\u00e9\": {one}}}"));
    assert_eq!(ruok_reply(&[]), b"{}");
}
