//! Argument parsing of every method a ZEO 5/6 client calls.

use zeo_pickle::Value;
use zeo_protocol::*;
use zeo_storage::{Oid, Tid, TxnStatus};

fn oid(n: u64) -> Value {
    Value::Bytes(n.to_be_bytes().to_vec())
}

fn tidv(n: u64) -> Value {
    oid(n)
}

fn s(text: &str) -> Value {
    Value::Str(text.to_owned())
}

fn b(bytes: &[u8]) -> Value {
    Value::Bytes(bytes.to_vec())
}

fn int(n: i64) -> Value {
    Value::Int(n)
}

fn parse(method: &str, args: Vec<Value>) -> Result<ServerRequest> {
    ServerRequest::parse_call(method, &Value::Tuple(args))
}

fn ok(method: &str, args: Vec<Value>) -> ServerRequest {
    let request = parse(method, args).unwrap_or_else(|e| panic!("{method}: {e}"));
    assert_eq!(request.method(), method, "method() names the wire method");
    request
}

/// Asserts a BadArguments error for `method` whose reason mentions `needle`.
fn bad(method: &str, args: Vec<Value>, needle: &str) {
    match parse(method, args) {
        Err(Error::BadArguments { method: m, reason }) => {
            assert_eq!(m, method);
            assert!(
                reason.contains(needle),
                "{method}: {reason:?} lacks {needle:?}"
            );
        }
        other => panic!("{method}: expected BadArguments, got {other:?}"),
    }
}

#[test]
fn register_accepts_python_truth_values() {
    use ServerRequest::Register;
    let reg = |storage: &str, read_only| Register {
        storage: storage.into(),
        read_only,
    };
    assert_eq!(
        ok("register", vec![s("1"), Value::Bool(false)]),
        reg("1", false)
    );
    assert_eq!(ok("register", vec![s("1"), int(0)]), reg("1", false));
    assert_eq!(ok("register", vec![s("main"), int(1)]), reg("main", true));
    assert_eq!(ok("register", vec![s("1"), Value::None]), reg("1", false));
    assert_eq!(
        ok("register", vec![b(b"1"), Value::Bool(true)]),
        reg("1", true)
    );
    // ZEO 5.0-5.4 clients with credentials send a third argument.
    assert_eq!(
        ok("register", vec![s("1"), int(0), Value::None]),
        reg("1", false)
    );
    bad(
        "register",
        vec![s("1")],
        "takes 2 to 3 positional arguments but 1 were given",
    );
    bad(
        "register",
        vec![int(1), int(0)],
        "storage_id must be str, got int",
    );
    bad("register", vec![b(b"\xff"), int(0)], "non-UTF-8");
}

#[test]
fn no_argument_methods() {
    for (method, expected) in [
        ("get_info", ServerRequest::GetInfo),
        ("lastTransaction", ServerRequest::LastTransaction),
        ("new_oid", ServerRequest::NewOid),
        ("storeBlobStart", ServerRequest::StoreBlobStart),
        ("server_status", ServerRequest::ServerStatus),
        ("ping", ServerRequest::Ping),
    ] {
        assert_eq!(ok(method, vec![]), expected);
        bad(
            method,
            vec![int(1)],
            "takes 0 positional arguments but 1 were given",
        );
    }
}

#[test]
fn loads() {
    assert_eq!(
        ok("loadBefore", vec![oid(0), tidv(1)]),
        ServerRequest::LoadBefore {
            oid: Oid(0),
            before: Tid(1)
        }
    );
    assert_eq!(
        ok("loadSerial", vec![oid(3), tidv(9)]),
        ServerRequest::LoadSerial {
            oid: Oid(3),
            serial: Tid(9)
        }
    );
    assert_eq!(
        ok("getTid", vec![oid(3)]),
        ServerRequest::GetTid { oid: Oid(3) }
    );
    assert_eq!(
        ok("getInvalidations", vec![tidv(5)]),
        ServerRequest::GetInvalidations { tid: Tid(5) }
    );
    bad(
        "loadBefore",
        vec![oid(0)],
        "takes 2 positional arguments but 1 were given",
    );
    bad(
        "loadBefore",
        vec![b(b"short"), tidv(1)],
        "oid must be 8 bytes, got 5",
    );
    bad(
        "loadBefore",
        vec![s("00000000"), tidv(1)],
        "oid must be 8 bytes, got str",
    );
    bad(
        "loadBefore",
        vec![oid(0), Value::None],
        "tid must be 8 bytes, got NoneType",
    );
    bad(
        "getInvalidations",
        vec![int(5)],
        "tid must be 8 bytes, got int",
    );
}

#[test]
fn history_size_defaults_and_clamps() {
    let h = |size| ServerRequest::History { oid: Oid(1), size };
    assert_eq!(ok("history", vec![oid(1)]), h(1));
    assert_eq!(ok("history", vec![oid(1), int(10)]), h(10));
    assert_eq!(ok("history", vec![oid(1), int(-3)]), h(0));
    bad("history", vec![oid(1), s("2")], "size must be int, got str");
}

#[test]
fn record_iternext() {
    assert_eq!(
        ok("record_iternext", vec![]),
        ServerRequest::RecordIternext { next: None }
    );
    assert_eq!(
        ok("record_iternext", vec![Value::None]),
        ServerRequest::RecordIternext { next: None }
    );
    assert_eq!(
        ok("record_iternext", vec![oid(7)]),
        ServerRequest::RecordIternext { next: Some(Oid(7)) }
    );
}

#[test]
fn new_oids_clamps_like_zeo() {
    let n = |n| ServerRequest::NewOids { n };
    assert_eq!(ok("new_oids", vec![]), n(100));
    assert_eq!(ok("new_oids", vec![int(5)]), n(5));
    assert_eq!(ok("new_oids", vec![int(1000)]), n(100));
    assert_eq!(ok("new_oids", vec![int(0)]), n(1));
    assert_eq!(ok("new_oids", vec![int(-7)]), n(1));
    bad(
        "new_oids",
        vec![Value::Float(2.0)],
        "n must be int, got float",
    );
}

#[test]
fn pack_and_undo_queries() {
    assert_eq!(
        ok("pack", vec![Value::Float(1.5e9)]),
        ServerRequest::Pack {
            time: 1.5e9,
            wait: true
        }
    );
    assert_eq!(
        ok("pack", vec![int(1_500_000_000), int(0)]),
        ServerRequest::Pack {
            time: 1.5e9,
            wait: false
        }
    );
    bad("pack", vec![s("now")], "t must be a number");
    assert_eq!(
        ok("undoLog", vec![int(0), int(-20)]),
        ServerRequest::UndoLog {
            first: 0,
            last: -20
        }
    );
    assert_eq!(
        ok("undoInfo", vec![int(0), int(-20), Value::None]),
        ServerRequest::UndoInfo {
            first: 0,
            last: -20,
            specification: None
        }
    );
    assert_eq!(
        ok("undoInfo", vec![int(0), int(-20), Value::Dict(vec![])]),
        ServerRequest::UndoInfo {
            first: 0,
            last: -20,
            specification: None
        }
    );
    let spec = Value::Dict(vec![(s("user_name"), b(b"bob"))]);
    assert_eq!(
        ok("undoInfo", vec![int(0), int(5), spec]),
        ServerRequest::UndoInfo {
            first: 0,
            last: 5,
            specification: Some(UndoSpec {
                conditions: vec![(s("user_name"), UndoMatch::Equals(b(b"bob")))]
            })
        }
    );
    bad(
        "undoInfo",
        vec![int(0), int(5), int(3)],
        "specification must be a dict",
    );
    bad("undoLog", vec![int(0)], "takes 2 positional arguments");
}

#[test]
fn undo_info_with_a_zope_prefix_over_the_wire() {
    // Zope's undo screen sends {'user_name': Prefix('/app')}; in pickle mode
    // the Prefix instance travels as NEWOBJ + BUILD of ZopeUndo.Prefix.Prefix
    // (a module server_find_global allows). Bytes from ZEO 6's encoder.
    let pickle = hex::decode(
        "8003284b01895808000000756e646f496e666f4b004b147d5809000000757365725f6e616d65635a6f70\
         65556e646f2e5072656669780a5072656669780a29817d2858060000006c656e6774684b02580400000070\
         6174685d28580000000058030000006170706575627387742e",
    )
    .unwrap();
    let m = Marshaller::server(Encoding::Pickle);
    let msg = m.decode(&pickle).unwrap();
    assert_eq!(m.encode(&msg).unwrap(), pickle, "re-encodes byte for byte");
    let Incoming::Call(call) = ServerRequest::parse(&msg).unwrap() else {
        panic!()
    };
    let ServerRequest::UndoInfo {
        first: 0,
        last: 20,
        specification: Some(spec),
    } = call.request
    else {
        panic!("{:?}", call.request)
    };
    assert_eq!(
        spec.conditions,
        vec![(
            s("user_name"),
            UndoMatch::Prefix(vec!["".into(), "app".into()])
        )]
    );
    let entry = |user: &[u8]| vec![(s("user_name"), b(user))];
    assert!(spec.matches(&entry(b"/app admin")));
    assert!(spec.matches(&entry(b"/app/sub admin")));
    assert!(!spec.matches(&entry(b"/apple admin")));
    assert!(!spec.matches(&entry(b"/other admin")));
    assert!(!spec.matches(&[]));
}

#[test]
fn tpc_begin_defaults_and_tolerance() {
    let txn = int(140_326_466_128_656);
    let r = ok(
        "tpc_begin",
        vec![txn.clone(), b(b"u"), s("d\u{e9}"), Value::Dict(vec![])],
    );
    assert_eq!(
        r,
        ServerRequest::TpcBegin {
            txn: TxnId(140_326_466_128_656),
            user: b"u".to_vec(),
            description: "d\u{e9}".as_bytes().to_vec(),
            extension: Value::Dict(vec![]),
            tid: None,
            status: TxnStatus::Committed,
        }
    );
    let r = ok(
        "tpc_begin",
        vec![txn.clone(), b(b""), b(b""), Value::None, tidv(9), b(b"p")],
    );
    let ServerRequest::TpcBegin {
        extension,
        tid,
        status,
        ..
    } = r
    else {
        panic!()
    };
    assert_eq!(
        (extension, tid, status),
        (Value::Dict(vec![]), Some(Tid(9)), TxnStatus::Packed)
    );
    bad(
        "tpc_begin",
        vec![txn.clone(), b(b""), b(b"")],
        "takes 4 to 6 positional arguments",
    );
    bad(
        "tpc_begin",
        vec![s("id"), b(b""), b(b""), Value::Dict(vec![])],
        "transaction id must be int",
    );
    bad(
        "tpc_begin",
        vec![txn.clone(), int(1), b(b""), Value::Dict(vec![])],
        "user must be bytes or str",
    );
    bad(
        "tpc_begin",
        vec![txn.clone(), b(b""), b(b""), int(3)],
        "ext must be a dict",
    );
    bad(
        "tpc_begin",
        vec![
            txn.clone(),
            b(b""),
            b(b""),
            Value::Dict(vec![]),
            Value::None,
            s("x"),
        ],
        "unknown transaction status",
    );
    bad(
        "tpc_begin",
        vec![
            txn,
            b(b""),
            b(b""),
            Value::Dict(vec![]),
            Value::None,
            s("  "),
        ],
        "status must be one character",
    );
    bad(
        "tpc_begin",
        vec![
            Value::BigInt(vec![0; 9]),
            b(b""),
            b(b""),
            Value::Dict(vec![]),
        ],
        "does not fit in 64 bits",
    );
}

#[test]
fn store_family() {
    let t = TxnId(7);
    assert_eq!(
        ok("storea", vec![oid(1), tidv(0), b(b"data"), int(7)]),
        ServerRequest::Storea {
            oid: Oid(1),
            serial: Tid(0),
            data: b"data".to_vec(),
            txn: t
        }
    );
    assert_eq!(
        ok(
            "checkCurrentSerialInTransaction",
            vec![oid(1), tidv(2), int(7)]
        ),
        ServerRequest::CheckCurrentSerial {
            oid: Oid(1),
            serial: Tid(2),
            txn: t
        }
    );
    assert_eq!(
        ok("deleteObject", vec![oid(1), tidv(2), int(7)]),
        ServerRequest::DeleteObject {
            oid: Oid(1),
            serial: Tid(2),
            txn: t
        }
    );
    assert_eq!(
        ok(
            "restorea",
            vec![oid(1), tidv(2), Value::None, Value::None, int(7)]
        ),
        ServerRequest::Restorea {
            oid: Oid(1),
            serial: Tid(2),
            data: None,
            prev_txn: None,
            txn: t
        }
    );
    assert_eq!(
        ok("restorea", vec![oid(1), tidv(2), b(b"x"), tidv(1), int(7)]),
        ServerRequest::Restorea {
            oid: Oid(1),
            serial: Tid(2),
            data: Some(b"x".to_vec()),
            prev_txn: Some(Tid(1)),
            txn: t
        }
    );
    assert_eq!(
        ok("storeBlobChunk", vec![b(b"chunk")]),
        ServerRequest::StoreBlobChunk {
            chunk: b"chunk".to_vec()
        }
    );
    assert_eq!(
        ok("storeBlobEnd", vec![oid(1), tidv(0), b(b"d"), int(7)]),
        ServerRequest::StoreBlobEnd {
            oid: Oid(1),
            serial: Tid(0),
            data: b"d".to_vec(),
            txn: t
        }
    );
    assert_eq!(
        ok(
            "storeBlobShared",
            vec![oid(1), tidv(0), b(b"d"), s("x.tmp-"), int(7)]
        ),
        ServerRequest::StoreBlobShared {
            oid: Oid(1),
            serial: Tid(0),
            data: b"d".to_vec(),
            filename: "x.tmp-".into(),
            txn: t
        }
    );
    assert_eq!(
        ok("undoa", vec![b(b"BA1Aac2xMSI="), int(7)]),
        ServerRequest::Undoa {
            undo_id: b"BA1Aac2xMSI=".to_vec(),
            txn: t
        }
    );
    bad(
        "storea",
        vec![oid(1), tidv(0), Value::Dict(vec![]), int(7)],
        "data must be bytes, got dict",
    );
    bad(
        "storea",
        vec![oid(1), tidv(0), b(b"d"), Value::None],
        "transaction id must be int",
    );
    bad("storeBlobChunk", vec![int(1)], "chunk must be bytes");
    bad(
        "storeBlobShared",
        vec![oid(1), tidv(0), b(b"d"), int(1), int(7)],
        "filename must be str",
    );
    bad(
        "deleteObject",
        vec![oid(1), tidv(0)],
        "takes 3 positional arguments",
    );
}

/// A dict subclass reducing to `dict(items)` arrives as a call of
/// `builtins.dict`; Python's server unpickles it to a plain dict.
#[test]
fn tpc_begin_extension_built_by_dict_call() {
    let dict = |args: Vec<Value>| Value::Call {
        callable: Box::new(Value::Global {
            module: "builtins".into(),
            name: "dict".into(),
        }),
        args: Box::new(Value::Tuple(args)),
        new_object: false,
    };
    let ext_of = |ext: Value| match ok("tpc_begin", vec![int(1), b(b""), b(b""), ext]) {
        ServerRequest::TpcBegin { extension, .. } => extension,
        other => panic!("not tpc_begin: {other:?}"),
    };
    let pair = |k: &str, v: i64| Value::Tuple(vec![s(k), int(v)]);
    assert_eq!(
        ext_of(dict(vec![Value::Tuple(vec![
            pair("foo", 1),
            pair("bar", 2),
            pair("foo", 3)
        ])])),
        Value::Dict(vec![(s("foo"), int(3)), (s("bar"), int(2))])
    );
    assert_eq!(ext_of(dict(vec![])), Value::Dict(vec![]));
    assert_eq!(
        ext_of(dict(vec![Value::Dict(vec![(s("a"), int(1))])])),
        Value::Dict(vec![(s("a"), int(1))])
    );
    bad(
        "tpc_begin",
        vec![
            int(1),
            b(b""),
            b(b""),
            dict(vec![Value::Tuple(vec![int(1)])]),
        ],
        "ext must be a dict",
    );
    let not_dict = Value::Call {
        callable: Box::new(Value::Global {
            module: "builtins".into(),
            name: "list".into(),
        }),
        args: Box::new(Value::Tuple(vec![])),
        new_object: false,
    };
    bad(
        "tpc_begin",
        vec![int(1), b(b""), b(b""), not_dict],
        "ext must be a dict",
    );
}

/// ZODB's tests store new objects with a serial of `None` or the 8-char
/// `str` `'\0' * 8`; Python's server hands either to the storage, which
/// ignores the serial of a new object.
#[test]
fn storea_serial_none_or_latin1_str() {
    let store = |serial: Value| ok("storea", vec![oid(1), serial, b(b"d"), int(7)]);
    let serial_of = |r: ServerRequest| match r {
        ServerRequest::Storea { serial, .. } => serial,
        other => panic!("not a store: {other:?}"),
    };
    assert_eq!(serial_of(store(Value::None)), Tid(0));
    assert_eq!(serial_of(store(s("\0\0\0\0\0\0\0\0"))), Tid(0));
    assert_eq!(serial_of(store(s("\0\0\0\0\0\0\0\u{ff}"))), Tid(0xff));
    bad(
        "storea",
        vec![oid(1), s("\0\0\0\0\0\0\0\u{100}"), b(b"d"), int(7)],
        "non-Latin-1",
    );
    bad(
        "storea",
        vec![oid(1), s("short"), b(b"d"), int(7)],
        "serial must be 8 bytes, got str",
    );
    bad(
        "storea",
        vec![oid(1), b(b"short"), b(b"d"), int(7)],
        "serial must be 8 bytes, got 5",
    );
}

/// A store whose record is a plain value but not bytes is kept as such
/// (Python's server fails it at the vote); other arguments are still
/// checked, and a container record stays an argument error.
#[test]
fn stores_of_records_that_are_not_bytes() {
    for method in ["storea", "storeBlobEnd"] {
        match ok(method, vec![oid(3), Value::None, s("foo"), int(7)]) {
            ServerRequest::StoreNotBytes {
                method: m,
                oid: o,
                txn,
                type_name,
            } => {
                assert_eq!((m, o, txn, type_name), (method, Oid(3), TxnId(7), "str"));
            }
            other => panic!("{other:?}"),
        }
        match ok(method, vec![oid(3), Value::None, int(5), int(7)]) {
            ServerRequest::StoreNotBytes { type_name, .. } => assert_eq!(type_name, "int"),
            other => panic!("{other:?}"),
        }
        bad(
            method,
            vec![oid(3), Value::None, Value::List(vec![]), int(7)],
            "data must be bytes, got list",
        );
        bad(method, vec![b(b"x"), Value::None, s("foo"), int(7)], "oid");
    }
}

/// The blob stores take the serials `storea` takes (ZODB's blob doctests
/// store new blobs with `'\0' * 8`).
#[test]
fn blob_store_serials_as_storea() {
    let zero = || s("\0\0\0\0\0\0\0\0");
    match ok("storeBlobEnd", vec![oid(1), zero(), b(b"d"), int(7)]) {
        ServerRequest::StoreBlobEnd { serial, .. } => assert_eq!(serial, Tid(0)),
        other => panic!("{other:?}"),
    }
    let shared = vec![oid(1), Value::None, b(b"d"), s("x.tmp-"), int(7)];
    match ok("storeBlobShared", shared) {
        ServerRequest::StoreBlobShared { serial, .. } => assert_eq!(serial, Tid(0)),
        other => panic!("{other:?}"),
    }
}

#[test]
fn two_phase_commit_calls() {
    let t = TxnId(-5);
    assert_eq!(ok("vote", vec![int(-5)]), ServerRequest::Vote { txn: t });
    assert_eq!(
        ok("tpc_finish", vec![int(-5)]),
        ServerRequest::TpcFinish { txn: t }
    );
    assert_eq!(
        ok("tpc_abort", vec![int(-5)]),
        ServerRequest::TpcAbort { txn: t }
    );
    // Python's ints and bools compare equal; True is transaction 1.
    assert_eq!(
        ok("vote", vec![Value::Bool(true)]),
        ServerRequest::Vote { txn: TxnId(1) }
    );
    bad(
        "vote",
        vec![],
        "takes 1 positional arguments but 0 were given",
    );
    bad(
        "tpc_finish",
        vec![b(b"x")],
        "transaction id must be int, got bytes",
    );
}

#[test]
fn blobs_and_iteration() {
    assert_eq!(
        ok("sendBlob", vec![oid(1), tidv(2)]),
        ServerRequest::SendBlob {
            oid: Oid(1),
            serial: Tid(2)
        }
    );
    assert_eq!(
        ok("iterator_start", vec![Value::None, tidv(3)]),
        ServerRequest::IteratorStart {
            start: None,
            stop: Some(Tid(3))
        }
    );
    assert_eq!(
        ok("iterator_next", vec![int(0)]),
        ServerRequest::IteratorNext { iid: IteratorId(0) }
    );
    assert_eq!(
        ok("iterator_record_start", vec![int(0), tidv(3)]),
        ServerRequest::IteratorRecordStart {
            txn_iid: IteratorId(0),
            tid: Tid(3)
        }
    );
    assert_eq!(
        ok("iterator_record_next", vec![int(1)]),
        ServerRequest::IteratorRecordNext { iid: IteratorId(1) }
    );
    assert_eq!(
        ok(
            "iterator_gc",
            vec![Value::List(vec![int(1), s("junk"), int(2)])]
        ),
        ServerRequest::IteratorGc {
            iids: vec![IteratorId(1), IteratorId(2)]
        }
    );
    assert_eq!(
        ok("iterator_gc", vec![Value::Tuple(vec![])]),
        ServerRequest::IteratorGc { iids: vec![] }
    );
    bad("iterator_gc", vec![int(1)], "iids must be a sequence");
    bad("iterator_next", vec![s("0")], "iid must be int");
    bad(
        "iterator_start",
        vec![int(0), Value::None],
        "start must be 8 bytes",
    );
}

#[test]
fn client_label_is_shown_like_python_str() {
    let label = |v| match ok("set_client_label", vec![v]) {
        ServerRequest::SetClientLabel { label } => label,
        other => panic!("{other:?}"),
    };
    assert_eq!(label(s("worker 1")), "worker 1");
    assert_eq!(label(int(3)), "3");
    assert_eq!(label(Value::None), "None");
}

#[test]
fn unknown_and_forbidden_methods() {
    for method in [
        "undo",
        "ruok",
        "loadEx",
        "zeoVerify",
        "getAuthProtocol",
        "__init__",
        "",
    ] {
        assert!(
            matches!(parse(method, vec![]), Err(Error::UnknownMethod(m)) if m == method),
            "{method}"
        );
    }
    // Every allowed name parses to a request naming itself (given suitable
    // arguments), and nothing else is allowed.
    assert_eq!(ServerRequest::METHODS.len(), 36);
}

#[test]
fn arguments_must_be_a_sequence() {
    let err = ServerRequest::parse_call("ping", &Value::None).unwrap_err();
    assert!(matches!(err, Error::BadArguments { .. }), "{err}");
    // A list is as good as a tuple (Python splats either).
    assert_eq!(
        ServerRequest::parse_call("getTid", &Value::List(vec![oid(1)])).unwrap(),
        ServerRequest::GetTid { oid: Oid(1) }
    );
}

#[test]
fn parse_reports_oneway_and_msgid() {
    let msg = ClientRequest::storea(Oid(1), Tid(0), b"x", TxnId(4));
    let Incoming::Call(call) = ServerRequest::parse(&msg).unwrap() else {
        panic!()
    };
    assert!(call.oneway);
    assert_eq!(call.msgid, Value::Int(0));
    let msg = ClientRequest::vote(12, TxnId(4));
    let Incoming::Call(call) = ServerRequest::parse(&msg).unwrap() else {
        panic!()
    };
    assert!(!call.oneway);
    assert_eq!(call.msgid, Value::Int(12));
    // A heartbeat is recognised by its msgid alone, as ZEO does.
    let odd = Message::call(-1, "nonsense", vec![]);
    assert_eq!(ServerRequest::parse(&odd).unwrap(), Incoming::Heartbeat);
}

#[test]
fn every_client_request_builder_parses_back() {
    let t = TxnId(99);
    let msgs = vec![
        ClientRequest::register(1, "1", true),
        ClientRequest::get_info(2),
        ClientRequest::last_transaction(3),
        ClientRequest::get_invalidations(4, Tid(5)),
        ClientRequest::load_before(Oid(1), Tid(2)),
        ClientRequest::load_serial(5, Oid(1), Tid(2)),
        ClientRequest::get_tid(6, Oid(1)),
        ClientRequest::history(7, Oid(1), 3),
        ClientRequest::record_iternext(8, Some(Oid(4))),
        ClientRequest::new_oids(9),
        ClientRequest::pack(10, 1.0, true),
        ClientRequest::undo_log(11, 0, -20),
        ClientRequest::undo_info(12, 0, -20),
        ClientRequest::tpc_begin(
            t,
            b"u",
            b"d",
            Value::Dict(vec![]),
            None,
            TxnStatus::Committed,
        ),
        ClientRequest::storea(Oid(1), Tid(0), b"x", t),
        ClientRequest::check_current_serial(Oid(1), Tid(0), t),
        ClientRequest::delete_object(Oid(1), Tid(0), t),
        ClientRequest::restorea(Oid(1), Tid(2), None, None, t),
        ClientRequest::store_blob_shared(Oid(1), Tid(0), b"x", "a.tmp-", t),
        ClientRequest::send_blob(13, Oid(1), Tid(2)),
        ClientRequest::vote(14, t),
        ClientRequest::tpc_finish(15, t),
        ClientRequest::tpc_abort(16, t),
        ClientRequest::undoa(b"id", t),
        ClientRequest::iterator_start(17, None, None),
        ClientRequest::iterator_next(18, IteratorId(0)),
        ClientRequest::iterator_record_start(19, IteratorId(0), Tid(1)),
        ClientRequest::iterator_record_next(20, IteratorId(1)),
        ClientRequest::iterator_gc(&[IteratorId(0)]),
        ClientRequest::server_status(21),
        ClientRequest::set_client_label("me"),
        ClientRequest::ping(22),
    ]
    .into_iter()
    .chain(ClientRequest::store_blob(
        Oid(1),
        Tid(0),
        b"x",
        t,
        [&b"ab"[..], b"cd"],
    ));
    let mut seen = std::collections::BTreeSet::new();
    for msg in msgs {
        for encoding in [Encoding::Pickle, Encoding::Msgpack] {
            let wire = Marshaller::client(encoding).encode(&msg).unwrap();
            let back = Marshaller::server(encoding).decode(&wire).unwrap();
            match ServerRequest::parse(&back) {
                Ok(Incoming::Call(call)) => {
                    assert_eq!(call.request.method(), msg.method);
                    seen.insert(msg.method.clone());
                }
                other => panic!("{}: {other:?}", msg.method),
            }
        }
    }
    // All but new_oid, which the stock client never calls.
    assert_eq!(seen.len(), ServerRequest::METHODS.len() - 1);
}
