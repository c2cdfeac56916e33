//! Property tests: encode/decode round trips, and no panics on arbitrary or
//! mutated input.

use proptest::prelude::*;
use zeo_pickle::{
    decode, decode_prefix, encode, encode_record, references, Decoder, Encoder, Protocol, Value,
};

fn leaf() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(Value::None),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::Int),
        // Values outside i64, in the minimal form the decoder produces.
        proptest::collection::vec(any::<u8>(), 9..40).prop_filter_map("fits i64", |b| {
            match Value::from_le_bytes(&b) {
                v @ Value::BigInt(_) => Some(v),
                _ => None,
            }
        }),
        // Floats compare by value; NaN != NaN, so leave it out here.
        any::<f64>()
            .prop_filter("not NaN", |f| !f.is_nan())
            .prop_map(Value::Float),
        proptest::collection::vec(any::<u8>(), 0..300).prop_map(Value::Bytes),
        proptest::collection::vec(any::<u8>(), 0..20).prop_map(Value::ByteArray),
        any::<String>().prop_map(Value::Str),
        "[a-z_.]{1,12}".prop_map(|m| Value::global(format!("m_{m}"), "Name")),
    ]
}

fn value() -> impl Strategy<Value = Value> {
    leaf().prop_recursive(5, 64, 8, |inner| {
        let items = proptest::collection::vec(inner.clone(), 0..8);
        let pairs = proptest::collection::vec((inner.clone(), inner.clone()), 0..6);
        prop_oneof![
            items.clone().prop_map(Value::Tuple),
            items.clone().prop_map(Value::List),
            pairs.clone().prop_map(Value::Dict),
            items.clone().prop_map(Value::Set),
            items.clone().prop_map(Value::FrozenSet),
            (inner.clone(), items.clone(), any::<bool>()).prop_map(|(c, a, new_object)| {
                Value::Call {
                    callable: Box::new(c),
                    args: Box::new(Value::Tuple(a)),
                    new_object,
                }
            }),
            (inner.clone(), inner.clone()).prop_map(|(o, s)| Value::Build {
                object: Box::new(o),
                state: Box::new(s),
            }),
            inner.clone().prop_map(|p| Value::PersistentId(Box::new(p))),
            (inner.clone(), items).prop_map(|(o, items)| Value::ListItems {
                // A list object would absorb the items; use a call.
                object: Box::new(Value::Call {
                    callable: Box::new(o),
                    args: Box::new(Value::Tuple(vec![])),
                    new_object: true,
                }),
                items,
            }),
            (inner, pairs).prop_map(|(o, items)| Value::DictItems {
                object: Box::new(Value::Call {
                    callable: Box::new(o),
                    args: Box::new(Value::Tuple(vec![])),
                    new_object: true,
                }),
                items,
            }),
        ]
    })
}

/// ListItems/DictItems with no items encode to just their object.
fn normalize(v: Value) -> Value {
    match v {
        Value::ListItems { object, items } if items.is_empty() => normalize(*object),
        Value::DictItems { object, items } if items.is_empty() => normalize(*object),
        Value::ListItems { object, items } => Value::ListItems {
            object: Box::new(normalize(*object)),
            items: items.into_iter().map(normalize).collect(),
        },
        Value::DictItems { object, items } => Value::DictItems {
            object: Box::new(normalize(*object)),
            items: items
                .into_iter()
                .map(|(k, v)| (normalize(k), normalize(v)))
                .collect(),
        },
        Value::Tuple(v) => Value::Tuple(v.into_iter().map(normalize).collect()),
        Value::List(v) => Value::List(v.into_iter().map(normalize).collect()),
        Value::Set(v) => Value::Set(v.into_iter().map(normalize).collect()),
        Value::FrozenSet(v) => Value::FrozenSet(v.into_iter().map(normalize).collect()),
        Value::Dict(v) => Value::Dict(
            v.into_iter()
                .map(|(k, v)| (normalize(k), normalize(v)))
                .collect(),
        ),
        Value::Call {
            callable,
            args,
            new_object,
        } => Value::Call {
            callable: Box::new(normalize(*callable)),
            args: Box::new(normalize(*args)),
            new_object,
        },
        Value::Build { object, state } => Value::Build {
            object: Box::new(normalize(*object)),
            state: Box::new(normalize(*state)),
        },
        Value::PersistentId(p) => Value::PersistentId(Box::new(normalize(*p))),
        other => other,
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn round_trip_protocol_3(v in value()) {
        let v = normalize(v);
        let bytes = encode(&v, Protocol::V3).unwrap();
        prop_assert_eq!(decode(&bytes).unwrap(), v);
    }

    #[test]
    fn round_trip_protocol_2(v in value()) {
        let v = normalize(v);
        let bytes = encode(&v, Protocol::V2).unwrap();
        prop_assert_eq!(decode(&bytes).unwrap(), v);
    }

    #[test]
    fn round_trip_with_memo_and_several_pickles(a in value(), b in value()) {
        let (a, b) = (normalize(a), normalize(b));
        let mut e = Encoder::new(Protocol::V3).with_memo(true);
        e.dump(&a).unwrap();
        e.dump(&b).unwrap();
        let bytes = e.into_bytes();
        let mut d = Decoder::new(&bytes);
        prop_assert_eq!(d.next_pickle().unwrap(), a);
        prop_assert_eq!(d.next_pickle().unwrap(), b);
        prop_assert!(d.is_at_end());
    }

    #[test]
    fn references_finds_every_strong_reference(
        oids in proptest::collection::vec(any::<u64>(), 0..20),
        with_class in proptest::collection::vec(any::<bool>(), 20),
        weak in proptest::collection::vec(any::<u64>(), 0..5),
    ) {
        let class = Value::global("persistent.mapping", "PersistentMapping");
        let mut items: Vec<Value> = oids
            .iter()
            .zip(&with_class)
            .map(|(&oid, &c)| Value::persistent_ref(oid, c.then(|| class.clone())))
            .collect();
        for w in &weak {
            items.push(Value::PersistentId(Box::new(Value::List(vec![
                Value::str("w"),
                Value::Tuple(vec![Value::bytes(w.to_be_bytes().to_vec())]),
            ]))));
        }
        let state = Value::Dict(vec![(Value::str("data"), Value::List(items))]);
        let record = encode_record(&class, &state).unwrap();
        prop_assert_eq!(references(&record).unwrap(), oids);
    }

    #[test]
    fn arbitrary_bytes_never_panic(data in proptest::collection::vec(any::<u8>(), 0..200)) {
        let _ = decode(&data);
        let _ = decode_prefix(&data);
        let _ = references(&data);
        let _ = zeo_pickle::class_of(&data);
    }

    #[test]
    fn mutated_pickles_never_panic(
        v in value(),
        edits in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>(), 0u8..3), 1..6),
    ) {
        let mut data = encode_record(&Value::global("m", "K"), &normalize(v)).unwrap();
        for (at, byte, kind) in edits {
            if data.is_empty() {
                break;
            }
            let i = at.index(data.len());
            match kind {
                0 => data[i] = byte,
                1 => data.insert(i, byte),
                _ => { data.remove(i); }
            }
        }
        let _ = decode(&data);
        let _ = references(&data);
        let mut d = Decoder::new(&data);
        while d.next_pickle().is_ok() && !d.is_at_end() {}
    }
}

#[test]
fn nan_round_trips_bitwise() {
    let v = Value::Float(f64::NAN);
    let Value::Float(f) = decode(&encode(&v, Protocol::V3).unwrap()).unwrap() else {
        panic!()
    };
    assert_eq!(f.to_bits(), f64::NAN.to_bits());
}
