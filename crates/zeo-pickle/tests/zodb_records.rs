//! Records written by Python ZODB 6 (`tests/data/zodb_records.txt`, made
//! with persistent, BTrees and a MappingStorage) read through the `zodb`
//! helpers, and records written here read the same way.

use std::collections::HashMap;

use zeo_pickle::zodb::{
    btree_items, bucket_items, Record, OOBTREE, OOBUCKET, PERSISTENT_LIST, PERSISTENT_MAPPING,
};
use zeo_pickle::{Error, Value};

struct Fixture {
    named: HashMap<String, Vec<u8>>,
    big_oid: u64,
    buckets: HashMap<u64, Vec<u8>>,
}

fn fixture() -> Fixture {
    let text = include_str!("data/zodb_records.txt");
    let mut f = Fixture {
        named: HashMap::new(),
        big_oid: 0,
        buckets: HashMap::new(),
    };
    let oid = |s: &str| u64::from_str_radix(s, 16).unwrap();
    for line in text.lines() {
        let parts: Vec<&str> = line.split(' ').collect();
        match parts.as_slice() {
            ["big", o, data] => {
                f.big_oid = oid(o);
                f.named.insert("big".into(), hex::decode(data).unwrap());
            }
            ["bucket", o, data] => {
                f.buckets.insert(oid(o), hex::decode(data).unwrap());
            }
            [name, data] => {
                f.named.insert((*name).into(), hex::decode(data).unwrap());
            }
            _ => panic!("bad fixture line {line}"),
        }
    }
    f
}

#[test]
fn python_root_reads_as_a_mapping_with_references() {
    let f = fixture();
    let root = Record::decode(&f.named["root"]).unwrap();
    assert!(root.is(PERSISTENT_MAPPING));
    assert_eq!(
        root.mapping_get("name").and_then(Value::as_str),
        Some("demo")
    );
    let list_ref = root.mapping_get("list").unwrap();
    assert_eq!(list_ref.reference_oid(), Some(1));
    assert_eq!(
        list_ref.reference_class(),
        Some(("persistent.list", "PersistentList"))
    );
    assert_eq!(
        root.mapping_get("big").and_then(Value::reference_oid),
        Some(f.big_oid)
    );
    assert!(root.mapping_get("missing").is_none());
    // Written back unchanged, it decodes to the same record.
    assert_eq!(Record::decode(&root.encode().unwrap()).unwrap(), root);
}

#[test]
fn python_list_reads_and_changes() {
    let f = fixture();
    let mut list = Record::decode(&f.named["list"]).unwrap();
    assert!(list.is(PERSISTENT_LIST));
    assert_eq!(
        list.list_items().unwrap(),
        [Value::Int(1), Value::str("two")]
    );
    list.list_items_mut().unwrap().push(Value::Int(3));
    let back = Record::decode(&list.encode().unwrap()).unwrap();
    assert_eq!(back.list_items().unwrap().len(), 3);
    assert!(
        matches!(list.mapping_items(), Err(Error::Shape(m)) if m.contains("persistent.list.PersistentList"))
    );
}

#[test]
fn small_btree_is_read_inline_without_loads() {
    let f = fixture();
    let tree = Record::decode(&f.named["small"]).unwrap();
    assert!(tree.is(OOBTREE));
    let items = btree_items::<Error>(&tree.state, 10, |oid| panic!("loaded {oid}")).unwrap();
    assert_eq!(
        items,
        [
            (Value::str("a"), Value::Int(1)),
            (Value::str("b"), Value::Int(2))
        ]
    );
    // One item over the limit is refused, naming the limit.
    let err = btree_items::<Error>(&tree.state, 1, |_| unreachable!()).unwrap_err();
    assert!(
        err.to_string().contains("OOBTree items: more than 1"),
        "{err}"
    );
}

#[test]
fn large_btree_walks_its_bucket_chain() {
    let f = fixture();
    let tree = Record::decode(&f.named["big"]).unwrap();
    let mut loads = 0;
    let items = btree_items::<Error>(&tree.state, 1000, |oid| {
        loads += 1;
        Ok(f.buckets[&oid].clone())
    })
    .unwrap();
    assert_eq!(loads, f.buckets.len());
    assert_eq!(items.len(), 200);
    for (i, (k, v)) in items.iter().enumerate() {
        assert_eq!(k.as_str(), Some(format!("k{i:03}").as_str()));
        assert_eq!(v.as_i64(), Some(i as i64));
    }
    let first = Record::decode(f.buckets.values().next().unwrap()).unwrap();
    assert!(first.is(OOBUCKET));
    assert!(!bucket_items(&first.state).unwrap().0.is_empty());
    let err =
        btree_items::<Error>(&tree.state, 150, |oid| Ok(f.buckets[&oid].clone())).unwrap_err();
    assert!(matches!(err, Error::LimitExceeded { .. }), "{err}");
}

#[test]
fn a_looping_bucket_chain_is_refused() {
    // A bucket whose next is itself.
    let bucket = Record::new(
        OOBUCKET,
        Value::Tuple(vec![
            Value::Tuple(vec![Value::str("k"), Value::Int(1)]),
            Value::persistent_ref(5, Some(OOBUCKET.global())),
        ]),
    )
    .encode()
    .unwrap();
    let tree = Value::Tuple(vec![
        Value::Tuple(vec![Value::persistent_ref(5, None)]),
        Value::persistent_ref(5, None),
    ]);
    let err = btree_items::<Error>(&tree, 1000, |_| Ok(bucket.clone())).unwrap_err();
    assert!(
        matches!(&err, Error::Shape(m) if m.contains("loops")),
        "{err}"
    );
}

#[test]
fn records_built_here_have_python_layout() {
    let mut root = Record::persistent_mapping([(Value::str("n"), Value::Int(1))]);
    root.mapping_set(Value::str("n"), Value::Int(2));
    root.mapping_set(
        Value::str("l"),
        Value::persistent_ref(9, Some(PERSISTENT_LIST.global())),
    );
    let bytes = root.encode().unwrap();
    assert_eq!(
        zeo_pickle::class_of(&bytes).unwrap(),
        ("persistent.mapping".into(), "PersistentMapping".into())
    );
    assert_eq!(zeo_pickle::references(&bytes).unwrap(), [9]);
    let back = Record::decode(&bytes).unwrap();
    assert_eq!(back.mapping_items().unwrap().len(), 2);
    assert_eq!(back.mapping_get("n").and_then(Value::as_i64), Some(2));
    // Old databases spell the slot `_container`.
    let old = Record::new(
        PERSISTENT_MAPPING,
        Value::Dict(vec![(
            Value::str("_container"),
            Value::Dict(vec![(Value::str("x"), Value::None)]),
        )]),
    );
    assert!(old.mapping_get("x").unwrap().is_none());
    // Trailing bytes after the two pickles are refused.
    let mut long = bytes.clone();
    long.push(b'.');
    assert!(matches!(
        Record::decode(&long),
        Err(Error::TrailingData { .. })
    ));
}

proptest::proptest! {
    /// Arbitrary bytes as a tree, a bucket or a root: errors, never panics,
    /// and a walk over them loads at most `max_items` buckets.
    #[test]
    fn arbitrary_records_fail_cleanly(data in proptest::collection::vec(proptest::num::u8::ANY, 0..256)) {
        if let Ok(record) = Record::decode(&data) {
            let _ = record.mapping_items();
            let _ = record.list_items();
            let _ = bucket_items(&record.state);
            let mut loads = 0;
            let _ = btree_items::<Error>(&record.state, 3, |_| {
                loads += 1;
                Ok(data.clone())
            });
            proptest::prop_assert!(loads <= 4);
        }
    }
}
