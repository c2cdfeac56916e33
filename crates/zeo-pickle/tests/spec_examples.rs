//! Byte examples from the project specs (zeo-protocol.md 2.7,
//! filestorage-format.md 1.5 and 2.3), decoded and re-encoded.

use zeo_pickle::{decode, encode, Decoder, Encoder, Protocol, Value};

fn h(s: &str) -> Vec<u8> {
    hex::decode(s.replace(' ', "")).unwrap()
}

fn s(x: &str) -> Value {
    Value::str(x)
}

#[test]
fn z5_last_transaction_call() {
    let bytes = h(
        "80 03 28 4b 01 89 58 0f 00 00 00 6c 61 73 74 54 72 61 6e 73 61 63 74 69 6f 6e 29 74 2e",
    );
    let v = Value::Tuple(vec![
        Value::Int(1),
        Value::Bool(false),
        s("lastTransaction"),
        Value::Tuple(vec![]),
    ]);
    assert_eq!(decode(&bytes).unwrap(), v);
    assert_eq!(encode(&v, Protocol::V3).unwrap(), bytes);
}

#[test]
fn z5_reply_and_heartbeat() {
    let reply = h(
        "80 03 28 4b 01 4b 00 58 06 00 00 00 2e 72 65 70 6c 79 43 08 03 d8 1e 8a 12 34 56 78 74 2e",
    );
    let v = Value::Tuple(vec![
        Value::Int(1),
        Value::Int(0),
        s(".reply"),
        Value::bytes(h("03d81e8a12345678")),
    ]);
    assert_eq!(decode(&reply).unwrap(), v);
    assert_eq!(encode(&v, Protocol::V3).unwrap(), reply);

    let heartbeat = h("80 03 28 4a ff ff ff ff 4b 00 58 06 00 00 00 2e 72 65 70 6c 79 4e 74 2e");
    let v = Value::Tuple(vec![
        Value::Int(-1),
        Value::Int(0),
        s(".reply"),
        Value::None,
    ]);
    assert_eq!(decode(&heartbeat).unwrap(), v);
    assert_eq!(encode(&v, Protocol::V3).unwrap(), heartbeat);
}

#[test]
fn z5_pos_key_error_reply() {
    let mut bytes = h("80 03 28 4b 02 4b 02 58 06 00 00 00 2e 72 65 70 6c 79 58 1d 00 00 00");
    bytes.extend_from_slice(b"ZODB.POSException.POSKeyError");
    bytes.extend(h("43 08 0000000000000000 85 86 74 2e"));
    let v = Value::Tuple(vec![
        Value::Int(2),
        Value::Int(2),
        s(".reply"),
        Value::Tuple(vec![
            s("ZODB.POSException.POSKeyError"),
            Value::Tuple(vec![Value::bytes(vec![0; 8])]),
        ]),
    ]);
    assert_eq!(decode(&bytes).unwrap(), v);
    assert_eq!(encode(&v, Protocol::V3).unwrap(), bytes);
}

#[test]
fn extension_dict_with_memo() {
    let bytes = h("80 03 7d 71 00 58 01 00 00 00 6b 71 01 58 01 00 00 00 76 71 02 73 2e");
    let v = Value::Dict(vec![(s("k"), s("v"))]);
    assert_eq!(decode(&bytes).unwrap(), v);
    let mut e = Encoder::new(Protocol::V3).with_memo(true);
    e.dump(&v).unwrap();
    assert_eq!(e.into_bytes(), bytes);
}

#[test]
fn filestorage_index_file() {
    let bytes = h(concat!(
        "80 03 4d 7d 06 2e",
        "80 03 43 06 000000000000 43 20 0000 0001 0002 0003",
        " 0000000005f0 0000000002a0 00000000046c 000000000562 86 2e",
        "80 03 4e 2e"
    ));
    let mut d = Decoder::new(&bytes);
    assert_eq!(d.next_pickle().unwrap(), Value::Int(1661));
    let bucket = d.next_pickle().unwrap();
    assert_eq!(
        bucket,
        Value::Tuple(vec![
            Value::bytes(vec![0; 6]),
            Value::bytes(h(
                "0000000100020003 0000000005f0 0000000002a0 00000000046c 000000000562"
            )),
        ])
    );
    assert_eq!(d.next_pickle().unwrap(), Value::None);
    assert!(d.is_at_end());

    let mut e = Encoder::new(Protocol::V3);
    e.dump(&Value::Int(1661)).unwrap();
    e.dump(&bucket).unwrap();
    e.dump(&Value::None).unwrap();
    assert_eq!(e.into_bytes(), bytes);
}
