//! Decoder semantics (sharing, mutation, object opcodes, policy) and its
//! behaviour on hostile input.

use zeo_pickle::{
    decode, decode_prefix, encode, references, zeo_server_find_global, Decoder, Error, Protocol,
    Value,
};

fn h(s: &str) -> Vec<u8> {
    hex::decode(s.replace(' ', "")).unwrap()
}

fn int(n: i64) -> Value {
    Value::Int(n)
}

// ----- Python object semantics -----

#[test]
fn memoized_list_sees_later_appends() {
    // EMPTY_LIST, BINPUT 0, BININT1 1, APPEND, BINGET 0, TUPLE2: the memo
    // holds the list object, not a snapshot of it.
    let v = decode(b"]q\x00K\x01ah\x00\x86.").unwrap();
    let l = Value::List(vec![int(1)]);
    assert_eq!(v, Value::Tuple(vec![l.clone(), l]));
}

#[test]
fn build_is_seen_through_the_memo() {
    // GLOBAL mod.K, EMPTY_TUPLE, NEWOBJ, BINPUT 0, EMPTY_DICT, BUILD, BINGET 0, TUPLE2
    let v = decode(b"cmod\nK\n)\x81q\x00}bh\x00\x86.").unwrap();
    let built = Value::Build {
        object: Box::new(Value::Call {
            callable: Box::new(Value::global("mod", "K")),
            args: Box::new(Value::Tuple(vec![])),
            new_object: true,
        }),
        state: Box::new(Value::Dict(vec![])),
    };
    assert_eq!(v, Value::Tuple(vec![built.clone(), built]));
}

#[test]
fn ordered_dict_and_list_subclass_round_trip() {
    // Python 3.11, zodbpickle protocol 3, fast mode.
    let od = |items: Vec<(Value, Value)>| Value::DictItems {
        object: Box::new(Value::Call {
            callable: Box::new(Value::global("collections", "OrderedDict")),
            args: Box::new(Value::Tuple(vec![])),
            new_object: false,
        }),
        items,
    };
    let cases = [
        (
            "800363636f6c6c656374696f6e730a4f726465726564446963740a2952285801000000614b015801000000624b02752e",
            od(vec![(Value::str("a"), int(1)), (Value::str("b"), int(2))]),
        ),
        (
            "800363636f6c6c656374696f6e730a4f726465726564446963740a29525801000000614b01732e",
            od(vec![(Value::str("a"), int(1))]),
        ),
        (
            // class L(list) instance [1, 2, 3] with attribute x = 5
            "8003636d6f640a4c0a2981284b014b024b03657d5801000000784b0573622e",
            Value::Build {
                object: Box::new(Value::ListItems {
                    object: Box::new(Value::Call {
                        callable: Box::new(Value::global("mod", "L")),
                        args: Box::new(Value::Tuple(vec![])),
                        new_object: true,
                    }),
                    items: vec![int(1), int(2), int(3)],
                }),
                state: Box::new(Value::Dict(vec![(Value::str("x"), int(5))])),
            },
        ),
        (
            // (KeyError, KeyError('k')): a ZEO 4 style error reply body
            "8003636275696c74696e730a4b65794572726f720a636275696c74696e730a4b65794572726f720a58010000006b8552862e",
            Value::Tuple(vec![
                Value::global("builtins", "KeyError"),
                Value::Call {
                    callable: Box::new(Value::global("builtins", "KeyError")),
                    args: Box::new(Value::Tuple(vec![Value::str("k")])),
                    new_object: false,
                },
            ]),
        ),
    ];
    for (hex_bytes, value) in cases {
        let bytes = h(hex_bytes);
        assert_eq!(decode(&bytes).unwrap(), value);
        assert_eq!(encode(&value, Protocol::V3).unwrap(), bytes);
    }
}

#[test]
fn newobj_ex_becomes_copyreg_call() {
    // The list subclass above at protocol 4: FRAME, SHORT_BINUNICODE,
    // MEMOIZE, STACK_GLOBAL, NEWOBJ (pickle 4 keeps NEWOBJ for no kwargs).
    let bytes = h("80049522000000000000008c036d6f64948c014c949394298194284b014b024b03657d948c0178944b0573622e");
    let v = decode(&bytes).unwrap();
    let Value::Build { object, .. } = &v else {
        panic!("{v:?}")
    };
    assert!(matches!(&**object, Value::ListItems { .. }));
    // NEWOBJ_EX proper: cls, args, kwargs.
    let v = decode(b"\x80\x04cmod\nK\n)}\x92.").unwrap();
    assert_eq!(
        v,
        Value::Call {
            callable: Box::new(Value::global("copyreg", "__newobj_ex__")),
            args: Box::new(Value::Tuple(vec![
                Value::global("mod", "K"),
                Value::Tuple(vec![]),
                Value::Dict(vec![])
            ])),
            new_object: false,
        }
    );
}

#[test]
fn inst_obj_persid_and_text_memo() {
    let v = decode(b"(K\x01imod\nK\n.").unwrap();
    assert_eq!(
        v,
        Value::Call {
            callable: Box::new(Value::global("mod", "K")),
            args: Box::new(Value::Tuple(vec![int(1)])),
            new_object: false,
        }
    );
    let v = decode(b"(cmod\nK\nK\x02o.").unwrap();
    assert_eq!(
        v,
        Value::Call {
            callable: Box::new(Value::global("mod", "K")),
            args: Box::new(Value::Tuple(vec![int(2)])),
            new_object: false,
        }
    );
    let v = decode(b"Pabc\np7\ng7\n\x86.").unwrap();
    let pid = Value::PersistentId(Box::new(Value::str("abc")));
    assert_eq!(v, Value::Tuple(vec![pid.clone(), pid]));
}

#[test]
fn protocol_4_and_5_containers() {
    // EMPTY_SET + ADDITEMS, FROZENSET, BYTEARRAY8, BINUNICODE8, BINBYTES8
    let mut b = vec![0x80, 5, 0x8f, b'(', b'K', 1, b'K', 2, 0x90];
    b.extend([b'(', b'K', 3, 0x91]);
    b.extend([0x96, 2, 0, 0, 0, 0, 0, 0, 0, b'x', b'y']);
    b.extend([0x8d, 1, 0, 0, 0, 0, 0, 0, 0, b'z']);
    b.extend([0x8e, 1, 0, 0, 0, 0, 0, 0, 0, b'w']);
    b.extend([0x87, 0x87, b'.']);
    let v = decode(&b).unwrap();
    assert_eq!(
        v,
        Value::Tuple(vec![
            Value::Set(vec![int(1), int(2)]),
            Value::FrozenSet(vec![int(3)]),
            Value::Tuple(vec![
                Value::ByteArray(b"xy".to_vec()),
                Value::str("z"),
                Value::bytes(b"w".to_vec()),
            ]),
        ])
    );
}

#[test]
fn pop_semantics_follow_python() {
    // POP on an empty mark frame pops the mark itself.
    assert_eq!(decode(b"K\x01(0.").unwrap(), int(1));
    assert_eq!(decode(b"K\x01K\x020.").unwrap(), int(1));
    assert_eq!(decode(b"(K\x01K\x021K\x03.").unwrap(), int(3));
    assert_eq!(
        decode(b"K\x012\x86.").unwrap(),
        Value::Tuple(vec![int(1), int(1)])
    );
    // Opcodes see only the items above the innermost mark.
    assert!(matches!(decode(b"K\x01(2."), Err(Error::Malformed { .. })));
    assert!(matches!(decode(b"]K\x01(a."), Err(Error::Malformed { .. })));
}

// ----- several pickles, shared memo -----

#[test]
fn second_pickle_uses_first_memo() {
    let data = b"\x80\x03cmod\nK\nq\x00.\x80\x03C\x08\x00\x00\x00\x00\x00\x00\x00\x05h\x00\x86Q.";
    let mut d = Decoder::new(data);
    assert_eq!(d.next_pickle().unwrap(), Value::global("mod", "K"));
    assert_eq!(
        d.next_pickle().unwrap(),
        Value::persistent_ref(5, Some(Value::global("mod", "K")))
    );
    assert!(d.is_at_end());
    assert_eq!(references(data).unwrap(), vec![5]);
    // Alone, the second pickle is missing its memo entry, as in Python.
    let second = &data[data.iter().position(|&b| b == b'.').unwrap() + 1..];
    assert_eq!(
        decode(second),
        Err(Error::MissingMemo { offset: 12, key: 0 })
    );
    // skip_pickle keeps the memo too.
    let mut d = Decoder::new(data);
    d.skip_pickle().unwrap();
    assert!(d.next_pickle().is_ok());
}

#[test]
fn prefix_and_trailing_data() {
    assert_eq!(decode_prefix(b"N.rest").unwrap(), (Value::None, 2));
    assert_eq!(decode(b"N.rest"), Err(Error::TrailingData { offset: 2 }));
    let mut d = Decoder::new(b"N.");
    d.next_pickle().unwrap();
    assert_eq!(d.next_pickle(), Err(Error::Truncated { offset: 2 }));
}

#[test]
fn references_of_empty_record_is_empty() {
    assert_eq!(references(b"").unwrap(), Vec::<u64>::new());
}

#[test]
fn references_rejects_bad_oids() {
    // (b'abc', None) as persistent id: the oid is not 8 bytes.
    let rec = b"\x80\x03cmod\nK\n.\x80\x03C\x03abcN\x86Q.";
    assert!(matches!(references(rec), Err(Error::BadReference(_))));
    // A dict as persistent id: Python's referencesf asserts.
    let rec = b"\x80\x03cmod\nK\n.\x80\x03}Q.";
    assert!(matches!(references(rec), Err(Error::BadReference(_))));
    // Only one pickle.
    assert!(matches!(
        references(b"\x80\x03N."),
        Err(Error::Truncated { .. })
    ));
}

// ----- find_global policy -----

#[test]
fn zeo_server_policy() {
    let allowed = [
        b"\x80\x03cZopeUndo.Prefix\nPrefix\nX\x01\x00\x00\x00a\x85R.".to_vec(),
        b"\x80\x03czodbpickle\nbinary\nC\x01a\x85R.".to_vec(),
        b"\x80\x03cbuiltins\nset\n]\x85R.".to_vec(),
        b"\x80\x02c__builtin__\nset\n]\x85R.".to_vec(),
        b"\x80\x02ccopy_reg\n_reconstructor\n.".to_vec(),
    ];
    for p in &allowed {
        let d = Decoder::new(p).with_find_global(zeo_server_find_global);
        let mut d = d;
        assert!(d.next_pickle().is_ok(), "{}", String::from_utf8_lossy(p));
    }
    let rejected: [&[u8]; 4] = [
        b"\x80\x03cos\nsystem\nX\x02\x00\x00\x00ls\x85R.",
        b"\x80\x04\x8c\x02os\x8c\x06system\x93.",
        b"(ios\nsystem\n.",
        b"\x80\x03cZopeUndo\nPrefix\n.",
    ];
    for p in rejected {
        let mut d = Decoder::new(p).with_find_global(zeo_server_find_global);
        let err = d.next_pickle().unwrap_err();
        assert!(matches!(err, Error::GlobalRejected { .. }), "{err}");
    }
    let mut d = Decoder::new(b"\x80\x03cos\nsystem\n.").with_find_global(zeo_server_find_global);
    assert_eq!(
        d.next_pickle().unwrap_err().to_string(),
        "pickle: at byte 2: global os.system is not allowed"
    );
    // Without a policy everything decodes (nothing is executed anyway).
    assert!(decode(b"\x80\x03cos\nsystem\n.").is_ok());
}

// ----- errors and hostile input -----

#[test]
fn error_messages_carry_offsets() {
    assert_eq!(
        decode(b"\x80\x03\xff").unwrap_err().to_string(),
        "pickle: at byte 2: unknown opcode 0xff"
    );
    assert_eq!(
        decode(b"\x80\x03K").unwrap_err(),
        Error::Truncated { offset: 2 }
    );
    assert!(matches!(
        decode(b"\x80\x06N."),
        Err(Error::Unsupported { offset: 0, .. })
    ));
    assert!(matches!(
        decode(b"\x82\x01."),
        Err(Error::Unsupported { .. })
    ));
    assert!(matches!(decode(b"\x97."), Err(Error::Unsupported { .. })));
    assert!(matches!(
        decode(b"."),
        Err(Error::Malformed { offset: 0, .. })
    ));
    assert!(matches!(decode(b"a."), Err(Error::Malformed { .. })));
    assert!(matches!(decode(b"t."), Err(Error::Malformed { .. })));
    assert!(matches!(decode(b"(K\x01u."), Err(Error::Malformed { .. })));
    assert!(matches!(
        decode(b"X\x02\x00\x00\x00\xff\xfe."),
        Err(Error::Malformed { .. })
    ));
    assert!(matches!(decode(b"S'abc\n."), Err(Error::Malformed { .. })));
    assert!(matches!(decode(b"Iabc\n."), Err(Error::Malformed { .. })));
}

#[test]
fn huge_length_fields_do_not_allocate() {
    let cases: [&[u8]; 7] = [
        b"X\xff\xff\xff\xff",
        b"B\xff\xff\xff\xffab",
        b"\x8e\xff\xff\xff\xff\xff\xff\xff\xff",
        b"\x8d\x00\x00\x00\x00\x00\x00\x00\x80",
        b"\x96\xff\xff\xff\xff\xff\xff\xff\x7f",
        b"\x95\xff\xff\xff\xff\xff\xff\xff\xffN.",
        b"\x8b\xff\xff\xff\x7f",
    ];
    for c in cases {
        assert!(matches!(decode(c), Err(Error::Truncated { .. })), "{c:?}");
    }
    assert!(matches!(
        decode(b"\x8b\xff\xff\xff\xff."),
        Err(Error::Malformed { .. })
    ));
    assert!(matches!(
        decode(b"T\xff\xff\xff\xff."),
        Err(Error::Malformed { .. })
    ));
}

#[test]
fn sparse_memo_keys() {
    // LONG_BINPUT / LONG_BINGET with a key of 4 billion: stored sparsely.
    let v = decode(b"K\x07r\xff\xff\xff\xff0j\xff\xff\xff\xff.").unwrap();
    assert_eq!(v, int(7));
    assert!(matches!(
        decode(b"h\x05."),
        Err(Error::MissingMemo { key: 5, .. })
    ));
    // MEMOIZE numbers by count.
    assert_eq!(
        decode(b"\x80\x04K\x09\x94K\x08\x94h\x00h\x01\x86.").unwrap(),
        Value::Tuple(vec![int(9), int(8)])
    );
}

/// A "billion laughs" pickle: each step makes a tuple of two copies of the
/// previous one, doubling the decoded size.
fn laughs(steps: usize) -> Vec<u8> {
    let mut p = b"\x80\x03X\x10\x00\x00\x00ha ha ha ha ha !q\x00".to_vec();
    for _ in 0..steps {
        p.extend_from_slice(b"h\x00h\x00\x86q\x00");
    }
    p.push(b'.');
    p
}

#[test]
fn exponential_sharing_hits_the_output_budget() {
    let p = laughs(64);
    let err = decode(&p).unwrap_err();
    assert!(matches!(err, Error::LimitExceeded { .. }), "{err}");
    // Small sharing is fine.
    let v = decode(&laughs(3)).unwrap();
    let Value::Tuple(items) = v else { panic!() };
    assert_eq!(items[0], items[1]);
    // An explicit budget applies.
    let err = Decoder::new(&laughs(8))
        .with_max_output(1000)
        .next_pickle()
        .unwrap_err();
    assert!(matches!(err, Error::LimitExceeded { .. }));
    // The reference scanner never expands sharing.
    let rec: Vec<u8> = [b"\x80\x03cmod\nK\n.".as_slice(), &p].concat();
    assert_eq!(references(&rec).unwrap(), Vec::<u64>::new());
}

#[test]
fn deep_nesting_is_refused_not_overflowing() {
    let depth = 200_000;
    let mut p = vec![b']'; depth];
    p.extend(std::iter::repeat_n(b'a', depth - 1));
    p.push(b'.');
    let err = decode(&p).unwrap_err();
    assert!(matches!(err, Error::LimitExceeded { .. }), "{err}");
    // Within the limit it decodes.
    let mut p = vec![b']'; 100];
    p.extend(std::iter::repeat_n(b'a', 99));
    p.push(b'.');
    assert!(decode(&p).is_ok());
    let err = Decoder::new(&p)
        .with_max_depth(10)
        .next_pickle()
        .unwrap_err();
    assert!(matches!(err, Error::LimitExceeded { .. }));
}

#[test]
fn self_containing_structures_are_an_error() {
    // l = []; l.append(l)
    assert!(matches!(
        decode(b"]q\x00h\x00a."),
        Err(Error::Recursive { .. })
    ));
    // Object whose state refers to itself (common in Python object graphs).
    let p = b"\x80\x03cmod\nK\nq\x00.\x80\x03h\x00)\x81q\x01}X\x04\x00\x00\x00selfh\x01sb.";
    let mut d = Decoder::new(p);
    d.next_pickle().unwrap();
    assert!(matches!(d.next_pickle(), Err(Error::Recursive { .. })));
    // references() does not need a tree, so it copes.
    assert_eq!(references(p).unwrap(), Vec::<u64>::new());
}

#[test]
fn long_decimal_text_is_limited() {
    let mut p = b"L".to_vec();
    p.extend(std::iter::repeat_n(b'9', 5000));
    p.extend(b"L\n.");
    assert!(matches!(decode(&p), Err(Error::LimitExceeded { .. })));
}
