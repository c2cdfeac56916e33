//! Records are untrusted: whatever they hold, resolution answers with a
//! merged record or an error, within bounded stack and memory.

use zeo_conflict::{resolve, Error};
use zeo_pickle::{encode_record, Value};

fn class_pickle(module: &str, name: &str) -> Vec<u8> {
    let mut p = vec![0x80, 3, b'c'];
    p.extend_from_slice(module.as_bytes());
    p.push(b'\n');
    p.extend_from_slice(name.as_bytes());
    p.extend_from_slice(b"\nq\x00.");
    p
}

/// An OOBucket record whose only key is a tuple nested `depth` deep.
fn deep_key_bucket(depth: usize) -> Vec<u8> {
    let mut r = class_pickle("BTrees.OOBTree", "OOBucket");
    r.extend_from_slice(&[0x80, 3]);
    r.push(b')'); // ()
    r.extend(std::iter::repeat_n(0x85u8, depth)); // ((...),)
    r.extend_from_slice(b"K\x01"); // value 1
    r.extend_from_slice(&[0x86, 0x85, b'.']); // ((key, 1),)
    r
}

fn bucket(items: &[(&str, i64)]) -> Vec<u8> {
    let class = Value::global("BTrees.OOBTree", "OOBucket");
    let flat = items
        .iter()
        .flat_map(|(k, v)| [Value::str(*k), Value::Int(*v)])
        .collect();
    encode_record(&class, &Value::Tuple(vec![Value::Tuple(flat)])).unwrap()
}

#[test]
fn deeply_nested_keys_are_left_to_python_without_recursing() {
    let deep = deep_key_bucket(200_000);
    let other = deep_key_bucket(199_999);
    match resolve(&deep, &other, &deep) {
        Err(Error::Unsupported(_) | Error::Pickle(_)) => {}
        other => panic!("expected a refusal to walk, got {other:?}"),
    }
}

#[test]
fn truncated_and_garbage_records_are_errors() {
    let good = bucket(&[("a", 1)]);
    for bad in [
        &good[..good.len() - 1],
        b"\x80\x03cBTrees.OOBTree\nOOBucket\n.\xff",
        b"",
    ] {
        let err = resolve(&good, &good, bad).unwrap_err();
        assert!(!matches!(err, Error::BTreesConflict { .. }), "{err:?}");
        let err = resolve(bad, &good, &good).unwrap_err();
        assert!(!matches!(err, Error::BTreesConflict { .. }), "{err:?}");
    }
}

/// An OOBucket record `(('k', v),)` where `v` is a tuple of three copies
/// of a tuple of three copies ... (`levels` deep) of the string `leaf`:
/// a few bytes standing for 3^levels leaves through the memo.
fn amplified_bucket(levels: u8, leaf: u8, first: bool) -> Vec<u8> {
    let mut r = class_pickle("BTrees.OOBTree", "OOBucket");
    r.extend_from_slice(&[0x80, 3, b'(']);
    if first {
        // A first item ('a', 1) before it.
        r.extend_from_slice(b"X\x01\x00\x00\x00aK\x01");
    }
    r.extend_from_slice(b"X\x01\x00\x00\x00kq\x01");
    r.extend_from_slice(&[b'X', 1, 0, 0, 0, leaf, b'q', 2, b'0']);
    for level in 0..levels {
        let below = 2 + level;
        r.extend_from_slice(&[
            b'h',
            below,
            b'h',
            below,
            b'h',
            below,
            0x87,
            b'q',
            below + 1,
            b'0',
        ]);
    }
    r.extend_from_slice(&[b'h', 2 + levels]);
    r.extend_from_slice(&[b't', 0x85, b'.']);
    r
}

#[test]
fn memo_amplification_is_bounded() {
    let old = amplified_bucket(40, b'x', false);
    let committed = amplified_bucket(40, b'y', false);
    let started = std::time::Instant::now();
    // Deciding whether the committed value changed means comparing 3^40
    // leaves; the work bound stops that and leaves the record to Python.
    let result = resolve(&old, &committed, &old);
    assert!(matches!(result, Err(Error::Unsupported(_))), "{result:?}");
    assert!(started.elapsed() < std::time::Duration::from_secs(60));
    // Where nothing needs comparing deeply, the shared value is written
    // back through the memo, as small as it came.
    let before = bucket(&[("a", 1)]);
    let inserted = amplified_bucket(40, b'y', true);
    let merged = resolve(&before, &before, &inserted).unwrap();
    assert!(merged.len() < 2 * inserted.len(), "{} bytes", merged.len());
}

#[test]
fn unknown_classes_fall_through() {
    let class = Value::global("persistent.mapping", "PersistentMapping");
    let r = encode_record(&class, &Value::Dict(vec![])).unwrap();
    assert_eq!(
        resolve(&r, &r, &r),
        Err(Error::UnknownClass {
            module: "persistent.mapping".into(),
            name: "PersistentMapping".into()
        })
    );
}

#[test]
fn disjoint_inserts_merge_and_dueling_inserts_refuse() {
    let old = bucket(&[("a", 1), ("m", 2)]);
    let committed = bucket(&[("a", 1), ("b", 5), ("m", 2)]);
    let new = bucket(&[("a", 1), ("m", 2), ("z", 9)]);
    let merged = resolve(&old, &committed, &new).unwrap();
    assert_eq!(
        merged,
        bucket(&[("a", 1), ("b", 5), ("m", 2), ("z", 9)]),
        "one memo, every string new"
    );
    let also_b = bucket(&[("a", 1), ("b", 6), ("m", 2)]);
    assert_eq!(
        resolve(&old, &committed, &also_b),
        Err(Error::BTreesConflict {
            positions: [2, 2, 2],
            reason: 4
        })
    );
}

#[test]
fn records_over_the_size_limit_are_left_to_the_client() {
    let small = bucket(&[("a", 1)]);
    let key = "k".repeat(zeo_conflict::MAX_RECORD);
    let big = bucket(&[("a", 1), (key.as_str(), 2)]);
    assert!(matches!(
        resolve(&small, &small, &big),
        Err(Error::Unsupported(_))
    ));
}

#[test]
fn a_list_inside_itself_is_written_through_the_memo() {
    let old = bucket(&[("a", 1)]);
    // ((a, 1, k, L),) where L = [L].
    let mut new = class_pickle("BTrees.OOBTree", "OOBucket");
    new.extend_from_slice(b"\x80\x03(X\x01\x00\x00\x00aK\x01X\x01\x00\x00\x00k]q\x01h\x01at\x85.");
    let merged = resolve(&old, &old, &new).unwrap();
    let g = zeo_pickle::graph::decode_graph(&merged, 2, 1 << 20).unwrap();
    use zeo_pickle::graph::{GraphNode, Slot};
    let lists: Vec<usize> = (0..g.len())
        .filter(|&i| matches!(g.node(i), Some(GraphNode::List(_))))
        .collect();
    assert_eq!(lists.len(), 1, "one list");
    let Some(GraphNode::List(items)) = g.node(lists[0]) else {
        unreachable!()
    };
    assert_eq!(
        items.as_slice(),
        [Slot::Node(lists[0])],
        "the list holds itself"
    );
    // Comparing such values would recurse without end in Python too: left
    // to the client, never a stack overflow here.
    assert!(resolve(&new, &new, &old).is_err());
}
