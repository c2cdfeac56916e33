//! The client's typed reply readers against the server's reply builders,
//! through both marshallers.

use zeo_pickle::Value;
use zeo_protocol::{client::replies, reply, Encoding, Marshaller, Reply};
use zeo_storage::{undo_id, HistoryEntry, Tid, UndoEntry};

fn s(text: &str) -> Value {
    Value::Str(text.to_owned())
}

/// A pickled extension dict, as a storage keeps it.
fn extension(pairs: &[(&str, Value)]) -> Vec<u8> {
    let dict = pairs.iter().map(|(k, v)| (s(k), v.clone())).collect();
    zeo_pickle::encode(&Value::Dict(dict), zeo_pickle::Protocol::V3).unwrap()
}

/// `value` as a client receives it from a server speaking `encoding`.
fn over_the_wire(encoding: Encoding, value: Value) -> Value {
    let bytes = Marshaller::server(encoding)
        .encode(&Reply::value(Value::Int(1), value))
        .unwrap();
    Marshaller::client(encoding).decode(&bytes).unwrap().args
}

fn history_entries() -> Vec<HistoryEntry> {
    vec![
        HistoryEntry {
            tid: Tid(0x03d5_6c8f_1a2b_3c4d),
            time: 1_700_000_000.25,
            user: b"/ alice".to_vec(),
            description: "caf\u{e9}".as_bytes().to_vec(),
            extension: extension(&[("note", s("hi")), ("n", Value::Int(3))]),
            size: 120,
        },
        HistoryEntry {
            tid: Tid(1),
            time: 0.0,
            user: Vec::new(),
            description: Vec::new(),
            extension: Vec::new(),
            size: 0,
        },
    ]
}

fn undo_entries() -> Vec<UndoEntry> {
    [
        (Tid(0x040d_4066_4778_a6aa), extension(&[("note", s("x"))])),
        (Tid(u64::MAX), Vec::new()),
    ]
    .into_iter()
    .map(|(tid, extension)| UndoEntry {
        id: undo_id(tid),
        tid,
        time: tid.unix_time(),
        user: b"bob".to_vec(),
        description: b"undo me".to_vec(),
        extension,
        size: 4096,
    })
    .collect()
}

#[test]
fn history_round_trips() {
    let entries = history_entries();
    let value = reply::history(&entries).unwrap();
    assert_eq!(replies::history(&value).unwrap(), entries);
    for encoding in [Encoding::Pickle, Encoding::Msgpack] {
        let received = over_the_wire(encoding, value.clone());
        assert_eq!(
            replies::history(&received).unwrap(),
            entries,
            "{encoding:?}"
        );
    }
}

#[test]
fn undo_log_round_trips() {
    let entries = undo_entries();
    let value = reply::undo_log(&entries).unwrap();
    assert_eq!(replies::undo_log(&value).unwrap(), entries);
    for encoding in [Encoding::Pickle, Encoding::Msgpack] {
        let received = over_the_wire(encoding, value.clone());
        assert_eq!(
            replies::undo_log(&received).unwrap(),
            entries,
            "{encoding:?}"
        );
    }
}

#[test]
fn history_reads_serial_and_drops_version() {
    let value = Value::List(vec![Value::Dict(vec![
        (s("serial"), Value::Bytes(vec![0, 0, 0, 0, 0, 0, 0, 9])),
        (s("version"), s("")),
        (s("time"), Value::Int(5)),
        (s("size"), Value::Int(-1)),
    ])]);
    let entries = replies::history(&value).unwrap();
    assert_eq!(entries.len(), 1);
    assert_eq!(entries[0].tid, Tid(9));
    assert_eq!(entries[0].time, 5.0);
    assert_eq!(entries[0].size, 0);
    assert!(entries[0].extension.is_empty());
}

#[test]
fn undo_ids_of_another_form_give_tid_zero() {
    let value = Value::Tuple(vec![Value::Dict(vec![
        (s("id"), s("opaque")),
        (s("version"), s("v")),
    ])]);
    let entries = replies::undo_log(&value).unwrap();
    assert_eq!(entries[0].id, b"opaque");
    assert_eq!(entries[0].tid, Tid::ZERO);
    // Only history dicts drop `version`: here it is an extension key.
    assert_eq!(entries[0].extension, extension(&[("version", s("v"))]));
}

#[test]
fn malformed_replies_are_errors() {
    for value in [
        Value::None,
        Value::List(vec![Value::Int(1)]),
        Value::List(vec![Value::Dict(vec![(s("tid"), Value::Bytes(vec![1]))])]),
    ] {
        assert!(
            matches!(
                replies::history(&value),
                Err(zeo_protocol::Error::BadReply { .. })
            ),
            "{value:?}"
        );
    }
    for value in [Value::Int(0), Value::List(vec![s("entry")])] {
        assert!(
            matches!(
                replies::undo_log(&value),
                Err(zeo_protocol::Error::BadReply { .. })
            ),
            "{value:?}"
        );
    }
}
