//! Interop against bytes produced once by Python ZEO's own marshaller
//! (`tests/golden/generate.py`, run under ZEO 5.4.1 and ZEO 6 with
//! identical results). No Python is needed to run these.

#[path = "golden/data.rs"]
mod data;

use zeo_pickle::Value;
use zeo_protocol::reply::{self, VoteConflict};
use zeo_protocol::*;
use zeo_storage::{Error as StorageError, HistoryEntry, LoadedRevision, Oid, Tid, TxnStatus};

const TID1: Tid = Tid(0x03d8_1e8a_1234_5678);
const TID2: Tid = Tid(0x03d8_1e8a_1234_5679);
const OID1: Oid = Oid(1);
const TXN: TxnId = TxnId(140_326_466_128_656);

fn golden(name: &str, letter: char) -> Vec<u8> {
    let (_, _, hex) = data::GOLDEN
        .iter()
        .find(|(n, l, _)| *n == name && *l == letter)
        .unwrap_or_else(|| panic!("no golden {name} {letter}"));
    hex::decode(hex).unwrap()
}

fn encodings() -> [(Encoding, char); 2] {
    [(Encoding::Pickle, 'Z'), (Encoding::Msgpack, 'M')]
}

fn data1k() -> Vec<u8> {
    (0..4).flat_map(|_| 0..=255u8).collect()
}

fn b(bytes: &[u8]) -> Value {
    Value::Bytes(bytes.to_vec())
}

fn s(text: &str) -> Value {
    Value::Str(text.to_owned())
}

#[test]
fn every_golden_message_decodes_and_reencodes_byte_for_byte() {
    for (name, letter, hex) in data::GOLDEN {
        let bytes = hex::decode(hex).unwrap();
        let encoding = Encoding::from_letter(*letter as u8).unwrap();
        for m in [Marshaller::server(encoding), Marshaller::client(encoding)] {
            let msg = m
                .decode(&bytes)
                .unwrap_or_else(|e| panic!("{name} {letter}: {e}"));
            let again = m
                .encode(&msg)
                .unwrap_or_else(|e| panic!("{name} {letter}: {e}"));
            assert_eq!(hex::encode(&again), *hex, "{name} {letter}");
        }
    }
}

/// Builds each golden message from the typed API and compares bytes.
#[test]
fn typed_builders_produce_zeo_bytes() {
    let poskey = Reply::error(
        Value::Int(2),
        &WireError::from(&StorageError::pos_key(Oid(0))),
    );
    let cases: Vec<(&str, Message)> = vec![
        ("register", ClientRequest::register(1, "1", false)),
        ("lastTransaction", ClientRequest::last_transaction(1)),
        ("reply_tid", Reply::value(Value::Int(1), reply::tid(TID1))),
        ("heartbeat", Message::heartbeat()),
        ("loadBefore", ClientRequest::load_before(OID1, TID1)),
        (
            "loadBefore_reply",
            Reply::value(
                ClientRequest::load_before(OID1, TID1).msgid,
                reply::load_before(Some(&LoadedRevision {
                    data: data1k(),
                    start: TID1,
                    end: None,
                })),
            ),
        ),
        (
            "loadBefore_reply_end",
            Reply::value(
                ClientRequest::load_before(OID1, TID1).msgid,
                reply::load_before(Some(&LoadedRevision {
                    data: b"x".to_vec(),
                    start: TID1,
                    end: Some(TID2),
                })),
            ),
        ),
        (
            "loadBefore_none",
            Reply::value(
                ClientRequest::load_before(OID1, TID1).msgid,
                reply::load_before(None),
            ),
        ),
        (
            "tpc_begin",
            ClientRequest::tpc_begin(
                TXN,
                b"user",
                b"desc",
                Value::Dict(vec![]),
                None,
                TxnStatus::Committed,
            ),
        ),
        (
            "tpc_begin_ext",
            ClientRequest::tpc_begin(
                TXN,
                b"",
                b"initial",
                Value::Dict(vec![(s("k"), s("v")), (s("n"), Value::Int(1))]),
                Some(TID1),
                TxnStatus::Packed,
            ),
        ),
        (
            "storea",
            ClientRequest::storea(OID1, Tid(0), &data1k(), TXN),
        ),
        ("vote", ClientRequest::vote(3, TXN)),
        (
            "vote_reply_empty",
            Reply::value(Value::Int(3), reply::oid_list(&[])),
        ),
        (
            "vote_reply_oids",
            Reply::value(Value::Int(3), reply::oid_list(&[OID1, Oid(0)])),
        ),
        (
            "vote_reply_conflicts",
            Reply::value(
                Value::Int(3),
                reply::vote_conflicts(&[VoteConflict {
                    oid: OID1,
                    committed: TID2,
                    old: TID1,
                    data: b"d".to_vec(),
                }]),
            ),
        ),
        (
            "tpc_finish_reply",
            Reply::value(Value::Int(4), reply::tid(TID2)),
        ),
        (
            "new_oids_reply",
            Reply::value(Value::Int(5), reply::oid_list(&[Oid(1), Oid(2), Oid(3)])),
        ),
        (
            "getInvalidations_reply",
            Reply::value(
                Value::Int(2),
                reply::invalidations(Some((TID2, &[Oid(0), OID1][..]))),
            ),
        ),
        (
            "invalidateTransaction",
            ClientEvent::invalidate_transaction(TID2, &[OID1]),
        ),
        ("info", ClientEvent::info(1, 166)),
        (
            "receiveBlobChunk",
            ClientEvent::receive_blob_chunk(OID1, TID1, b"chunk"),
        ),
        (
            "get_info_reply",
            Reply::value(
                Value::Int(2),
                reply::get_info(&StorageInfo {
                    length: 0,
                    size: 4,
                    name: "var/Data.fs".into(),
                    supports_undo: true,
                    supports_record_iternext: true,
                    interfaces: vec![
                        ("ZODB.interfaces".into(), "IStorage".into()),
                        ("zope.interface".into(), "Interface".into()),
                    ],
                }),
            ),
        ),
        (
            "history_reply",
            Reply::value(
                Value::Int(6),
                reply::history(&[HistoryEntry {
                    tid: TID1,
                    time: 1_700_000_000.25,
                    user: b"u".to_vec(),
                    description: b"d".to_vec(),
                    // {'k': 'v'} pickled by ZODB (protocol 3, memo on).
                    extension: b"\x80\x03}q\x00X\x01\x00\x00\x00kq\x01X\x01\x00\x00\x00vq\x02s."
                        .to_vec(),
                    size: 42,
                }])
                .unwrap(),
            ),
        ),
        (
            "server_status_reply",
            Reply::value(
                Value::Int(8),
                reply::server_status(&ServerStatus {
                    connections: 1,
                    loads: 2,
                    stores: 3,
                    commits: 4,
                    aborts: 5,
                    active_txns: 0,
                    lock_time: None,
                    conflicts: 0,
                    conflicts_resolved: 0,
                    fsyncs: None,
                    start: "Wed Nov 25 11:21:31 2026".into(),
                    waiting: 0,
                    timeout_thread_alive: None,
                    last_transaction: TID1,
                }),
            ),
        ),
        ("err_poskey", poskey),
        (
            "err_poskey_serial",
            Reply::error(
                Value::Int(2),
                &WireError::from(&StorageError::PosKey {
                    oid: OID1,
                    serial: Some(TID1),
                }),
            ),
        ),
        (
            "err_readonly",
            Reply::error(Value::Int(1), &WireError::from(&StorageError::ReadOnly)),
        ),
        (
            "err_conflict",
            Reply::error(
                Value::Int(5),
                &WireError::conflict(
                    OID1,
                    TID2,
                    TID1,
                    Some("persistent.mapping.PersistentMapping"),
                ),
            ),
        ),
        (
            "err_conflict_plain",
            Reply::error(
                Value::Int(5),
                &WireError::from(&StorageError::Conflict {
                    oid: OID1,
                    committed: TID2,
                    old: TID1,
                }),
            ),
        ),
        (
            "err_read_conflict",
            Reply::error(
                Value::Int(5),
                &WireError::from(&StorageError::ReadConflict {
                    oid: OID1,
                    committed: TID2,
                    old: TID1,
                }),
            ),
        ),
        (
            "err_txn_mismatch",
            Reply::error(
                Value::Int(3),
                &WireError::transaction_mismatch(None, TxnId(123)),
            ),
        ),
        (
            "err_txn_message",
            Reply::error(
                Value::Int(3),
                &WireError::from(&StorageError::Transaction("Already voting (locked)".into())),
            ),
        ),
        (
            "err_undo",
            Reply::error(
                Value::Int(3),
                &WireError::from(&StorageError::Undo {
                    reason: "non-undoable transaction".into(),
                    oid: None,
                }),
            ),
        ),
        (
            "err_type",
            Reply::error(Value::Int(9), &WireError::type_error("bad args")),
        ),
        (
            "err_value_unpicklable",
            Reply::error(Value::Int(9), &WireError::unencodable_reply()),
        ),
    ];
    for (name, msg) in cases {
        for (encoding, letter) in encodings() {
            let m = Marshaller::server(encoding);
            assert_eq!(
                hex::encode(m.encode(&msg).unwrap()),
                hex::encode(golden(name, letter)),
                "{name} {letter}"
            );
        }
    }
}

#[test]
fn golden_values_decode_to_the_python_values() {
    let m = Marshaller::client(Encoding::Msgpack);
    let ints = m.decode(&golden("ints", 'M')).unwrap();
    let p = Marshaller::client(Encoding::Pickle)
        .decode(&golden("ints", 'Z'))
        .unwrap();
    assert_eq!(ints, p, "both encodings give the same ints");
    let Value::Tuple(items) = ints.args else {
        panic!()
    };
    assert_eq!(items[1], Value::Int(-1));
    assert_eq!(items[16], Value::Int(i64::MAX));
    assert_eq!(items[17], Value::Int(i64::MIN));
    assert_eq!(
        items[18],
        Value::BigInt(vec![0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0])
    );

    let strings = m.decode(&golden("strings", 'M')).unwrap();
    let Value::Tuple(items) = strings.args else {
        panic!()
    };
    assert_eq!(items[1], s("é€😀"));
    assert_eq!(items[5], b(&[b'z'; 300]));

    // msgpack has no lists: Python's lists come back as tuples, while
    // pickle keeps them apart.
    let lists_m = m.decode(&golden("lists", 'M')).unwrap();
    let lists_z = Marshaller::client(Encoding::Pickle)
        .decode(&golden("lists", 'Z'))
        .unwrap();
    let (Value::Tuple(lm), Value::Tuple(lz)) = (&lists_m.args, &lists_z.args) else {
        panic!()
    };
    assert_eq!(lm[0], Value::Tuple(vec![Value::Int(1)]));
    assert_eq!(lz[0], Value::List(vec![Value::Int(1)]));
}

#[test]
fn golden_calls_parse_into_typed_requests() {
    for (encoding, letter) in encodings() {
        let m = Marshaller::server(encoding);
        let parse =
            |name: &str| match ServerRequest::parse(&m.decode(&golden(name, letter)).unwrap()) {
                Ok(Incoming::Call(call)) => call,
                other => panic!("{name}: {other:?}"),
            };
        let call = parse("register_int_flag");
        assert_eq!(
            call.request,
            ServerRequest::Register {
                storage: "1".into(),
                read_only: false
            }
        );
        let call = parse("loadBefore");
        assert_eq!(
            call.msgid,
            Value::Tuple(vec![b(&OID1.to_bytes()), b(&TID1.to_bytes())])
        );
        assert_eq!(
            call.request,
            ServerRequest::LoadBefore {
                oid: OID1,
                before: TID1
            }
        );
        let call = parse("tpc_begin_ext");
        assert!(call.oneway);
        let ServerRequest::TpcBegin {
            txn,
            tid,
            status,
            extension,
            ..
        } = call.request
        else {
            panic!()
        };
        assert_eq!((txn, tid, status), (TXN, Some(TID1), TxnStatus::Packed));
        assert_eq!(extension.get("k"), Some(&s("v")));
        let call = parse("storea");
        assert_eq!(
            call.request,
            ServerRequest::Storea {
                oid: OID1,
                serial: Tid(0),
                data: data1k(),
                txn: TXN
            }
        );
        let heartbeat = m.decode(&golden("heartbeat", letter)).unwrap();
        assert_eq!(
            ServerRequest::parse(&heartbeat).unwrap(),
            Incoming::Heartbeat
        );
    }
}

#[test]
fn golden_server_messages_parse_on_the_client() {
    for (encoding, letter) in encodings() {
        let m = Marshaller::client(encoding);
        let incoming =
            |name: &str| ClientIncoming::parse(&m.decode(&golden(name, letter)).unwrap());
        assert_eq!(
            incoming("invalidateTransaction").unwrap(),
            ClientIncoming::Event(ClientEvent::InvalidateTransaction {
                tid: TID2,
                oids: vec![OID1]
            })
        );
        let ClientIncoming::Reply {
            result: Err(err), ..
        } = incoming("err_conflict").unwrap()
        else {
            panic!()
        };
        assert!(matches!(
            err.to_storage_error(),
            StorageError::Conflict {
                oid: OID1,
                committed: TID2,
                old: TID1
            }
        ));
        let ClientIncoming::Reply {
            result: Err(err), ..
        } = incoming("err_poskey").unwrap()
        else {
            panic!()
        };
        assert!(matches!(
            err.to_storage_error(),
            StorageError::PosKey {
                oid: Oid(0),
                serial: None
            }
        ));
        let ClientIncoming::Reply {
            result: Ok(value), ..
        } = incoming("loadBefore_reply").unwrap()
        else {
            panic!()
        };
        let rev = client::replies::load_before(&value).unwrap().unwrap();
        assert_eq!((rev.data, rev.start, rev.end), (data1k(), TID1, None));
        let ClientIncoming::Reply {
            result: Ok(value), ..
        } = incoming("vote_reply_conflicts").unwrap()
        else {
            panic!()
        };
        assert_eq!(
            client::replies::vote(&value).unwrap(),
            vec![client::replies::VoteItem::Conflict(VoteConflict {
                oid: OID1,
                committed: TID2,
                old: TID1,
                data: b"d".to_vec()
            })]
        );
    }
}
