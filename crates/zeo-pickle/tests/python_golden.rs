//! Pickles produced by real Python (CPython `pickle`, zodbpickle, ZODB 6),
//! embedded by `data/gen_golden.py`: we must decode what Python writes and
//! write what Python writes.

use zeo_pickle::{
    class_of, decode, encode, encode_record, references, Decoder, Encoder, Protocol, Value,
};

fn h(s: &str) -> Vec<u8> {
    hex::decode(s).unwrap()
}

/// One Python value and its pickles.
struct Case {
    name: &'static str,
    value: Value,
    /// `pickle.dumps(value, protocol)` for protocols 0..=5.
    by_protocol: Vec<&'static str>,
    /// zodbpickle, protocol 2, `fast = True`.
    fast2: &'static str,
    /// zodbpickle, protocol 3, `fast = True`.
    fast3: &'static str,
    /// zodbpickle `dumps(value, 3)` (memoizing).
    memo3: &'static str,
}

/// An object record loaded from a ZODB 6 FileStorage.
struct Record {
    name: &'static str,
    #[allow(dead_code)]
    oid: u64,
    data: Vec<u8>,
    /// `ZODB.serialize.referencesf(data)`.
    refs: Vec<u64>,
    /// `ZODB.utils.get_pickle_metadata(data)`.
    class: (&'static str, &'static str),
}

mod golden {
    use super::{h, Case, Record};
    use zeo_pickle::Value;
    include!("data/golden.rs");
}

#[test]
fn decodes_python_pickles_of_every_protocol() {
    for case in golden::values() {
        for (protocol, bytes) in case.by_protocol.iter().enumerate() {
            let got = decode(&h(bytes));
            assert_eq!(
                got.as_ref(),
                Ok(&case.value),
                "{} at protocol {protocol}",
                case.name
            );
        }
        for (what, bytes) in [
            ("fast2", case.fast2),
            ("fast3", case.fast3),
            ("memo3", case.memo3),
        ] {
            assert_eq!(
                decode(&h(bytes)).as_ref(),
                Ok(&case.value),
                "{} {what}",
                case.name
            );
        }
    }
}

#[test]
fn encodes_like_python_fast_mode() {
    for case in golden::values() {
        assert_eq!(
            hex::encode(encode(&case.value, Protocol::V2).unwrap()),
            case.fast2,
            "{} protocol 2",
            case.name
        );
        assert_eq!(
            hex::encode(encode(&case.value, Protocol::V3).unwrap()),
            case.fast3,
            "{} protocol 3",
            case.name
        );
    }
}

#[test]
fn encodes_like_python_memo_mode() {
    for case in golden::values() {
        // Python's memo also deduplicates objects it meets twice (small ints
        // are not memoized, but interned strings are); the cases avoid that.
        let mut e = Encoder::new(Protocol::V3).with_memo(true);
        e.dump(&case.value).unwrap();
        assert_eq!(hex::encode(e.into_bytes()), case.memo3, "{}", case.name);
    }
}

#[test]
fn python2_strings_decode_to_bytes() {
    for (name, bytes, value) in golden::py2() {
        assert_eq!(decode(&bytes).as_ref(), Ok(&value), "{name}");
    }
}

#[test]
fn zodb_records_references_and_class() {
    let records = golden::records();
    assert_eq!(records.len(), 5);
    for r in &records {
        assert_eq!(references(&r.data).as_ref(), Ok(&r.refs), "{}", r.name);
        assert_eq!(
            class_of(&r.data),
            Some((r.class.0.to_string(), r.class.1.to_string())),
            "{}",
            r.name
        );
        // Both pickles decode with the shared memo.
        let mut d = Decoder::new(&r.data);
        d.next_pickle().unwrap();
        d.next_pickle().unwrap();
        assert!(d.is_at_end(), "{}", r.name);
    }
    // The test data must really exercise references.
    assert!(records.iter().any(|r| r.refs.len() > 10));
}

#[test]
fn persistent_mapping_record_structure() {
    let records = golden::records();
    let pm = records.iter().find(|r| r.name == "pm").unwrap();
    let mut d = Decoder::new(&pm.data);
    let class = d.next_pickle().unwrap();
    let state = d.next_pickle().unwrap();
    assert_eq!(
        class,
        Value::global("persistent.mapping", "PersistentMapping")
    );
    // state = {'data': {'kid0': <ref>, ..., 'list': <ref>, 'weak': WeakRef(...)}}
    let data = state
        .get("data")
        .expect("PersistentMapping state has 'data'");
    let kid0 = data.get("kid0").unwrap();
    // kid0 is another PersistentMapping, so its class is the memoized
    // GLOBAL of the first pickle (BINGET 0 across pickles).
    assert_eq!(
        kid0,
        &Value::persistent_ref(pm.refs[0], Some(class.clone()))
    );
    // ZODB writes a persistent.wref.WeakRef as a ['w', (oid,)] persistent
    // id, which references() must not count.
    let weak = data.get("weak").unwrap();
    let Value::PersistentId(pid) = weak else {
        panic!("WeakRef decoded as {weak:?}");
    };
    let [Value::Str(w), Value::Tuple(target)] = pid.as_list().unwrap() else {
        panic!("WeakRef id is {pid:?}");
    };
    assert_eq!(w, "w");
    let weak_oid = u64::from_be_bytes(target[0].as_bytes().unwrap().try_into().unwrap());
    // The weak target is also a strong 'kid1' entry; only that one counts.
    assert_eq!(pm.refs.iter().filter(|&&o| o == weak_oid).count(), 1);
    assert_eq!(pm.refs.len(), 4);
}

#[test]
fn every_persistent_id_shape() {
    let data = h(golden::ALL_PID_SHAPES);
    assert_eq!(references(&data).unwrap(), golden::all_pid_shapes_refs());
    assert_eq!(references(&data).unwrap(), vec![5, 6, 12]);
    assert_eq!(class_of(&data), Some(("mod".into(), "K".into())));
}

#[test]
fn python2_record() {
    let data = h(golden::PY2_RECORD);
    assert_eq!(references(&data).unwrap(), golden::py2_record_refs());
    let (m, n) = golden::PY2_RECORD_CLASS;
    assert_eq!(class_of(&data), Some((m.to_string(), n.to_string())));
}

#[test]
fn record_reencodes_to_equal_values() {
    for r in golden::records() {
        let mut d = Decoder::new(&r.data);
        let class = d.next_pickle().unwrap();
        let state = d.next_pickle().unwrap();
        let again = encode_record(&class, &state).unwrap();
        assert_eq!(references(&again).unwrap(), r.refs, "{}", r.name);
        let mut d = Decoder::new(&again);
        assert_eq!(d.next_pickle().unwrap(), class, "{}", r.name);
        assert_eq!(d.next_pickle().unwrap(), state, "{}", r.name);
        assert!(d.is_at_end());
    }
}

#[test]
fn python_loads_our_records() {
    // Each line: name, ZODB's record, our re-encoding of it. Python was run
    // once on the third column (`gen_golden.py --verify`) and loaded the
    // same class, state and references as from ZODB's bytes.
    let verified = include_str!("data/python_verified_records.txt");
    let mut n = 0;
    for line in verified.lines() {
        let mut cols = line.split(' ');
        let (name, orig, ours) = (
            cols.next().unwrap(),
            cols.next().unwrap(),
            cols.next().unwrap(),
        );
        let orig = h(orig);
        let mut d = Decoder::new(&orig);
        let class = d.next_pickle().unwrap();
        let state = d.next_pickle().unwrap();
        assert_eq!(
            hex::encode(encode_record(&class, &state).unwrap()),
            ours,
            "{name}"
        );
        n += 1;
    }
    assert_eq!(n, 5);
}

#[test]
fn bench_uses_the_bucket_record() {
    let records = golden::records();
    let bucket = records.iter().find(|r| r.name == "bucket").unwrap();
    assert_eq!(bucket.data.len(), golden::BUCKET_LEN);
    let bench = include_str!("../benches/bucket_record.hex");
    assert_eq!(hex::decode(bench.trim()).unwrap(), bucket.data);
}
