//! `oneway_bytes_arg`, the in-place reader of `storeBlobChunk` frames,
//! held to the general decoder: whatever it recognizes, the general
//! decoder reads as the same one-way call with the same bytes, and frames
//! as ZEO's marshallers write them are recognized.

use proptest::prelude::*;
use zeo_pickle::Value;
use zeo_protocol::*;

const METHOD: &str = "storeBlobChunk";
const ENCODINGS: [Encoding; 2] = [Encoding::Pickle, Encoding::Msgpack];

/// What the general path makes of `payload`: the chunk of a one-way
/// `storeBlobChunk`, or `None` for anything else.
fn general(encoding: Encoding, payload: &[u8]) -> Option<Vec<u8>> {
    let message = Marshaller::server(encoding).decode(payload).ok()?;
    match ServerRequest::parse(&message).ok()? {
        Incoming::Call(Call {
            oneway: true,
            request: ServerRequest::StoreBlobChunk { chunk },
            ..
        }) => Some(chunk),
        _ => None,
    }
}

fn call(msgid: Value, method: &str, args: Vec<Value>) -> Message {
    Message {
        msgid,
        flags: Flags::Async,
        method: method.into(),
        args: Value::Tuple(args),
    }
}

#[test]
fn frames_as_zeo_writes_them_are_read_in_place() {
    // ZEO 5.4 and 6.2's `encoder(b'Z5')` and `encoder(b'M5')` for
    // `(0, True, 'storeBlobChunk', (b'ab',))`.
    let pickle = b"\x80\x03(K\x00\x88X\x0e\x00\x00\x00storeBlobChunkC\x02ab\x85t.";
    let msgpack = b"\x94\x00\xc3\xaestoreBlobChunk\x91\xc4\x02ab";
    for (encoding, payload) in [
        (Encoding::Pickle, &pickle[..]),
        (Encoding::Msgpack, &msgpack[..]),
    ] {
        assert_eq!(
            oneway_bytes_arg(encoding, payload, METHOD),
            Some(&b"ab"[..])
        );
        assert_eq!(general(encoding, payload), Some(b"ab".to_vec()));
    }
}

#[test]
fn every_length_form_and_msgid_form_is_read() {
    let msgids = [0i64, 1, 255, 256, 65_535, 65_536, i32::MAX as i64, i64::MAX];
    for encoding in ENCODINGS {
        for len in [0usize, 1, 255, 256, 65_535, 65_536, 59_000, 300_000] {
            let chunk: Vec<u8> = (0..len).map(|i| (i * 7) as u8).collect();
            for msgid in msgids {
                let message = call(Value::Int(msgid), METHOD, vec![Value::Bytes(chunk.clone())]);
                let payload = Marshaller::client(encoding).encode(&message).unwrap();
                let fast = oneway_bytes_arg(encoding, &payload, METHOD);
                assert_eq!(general(encoding, &payload).as_deref(), Some(&chunk[..]));
                // A pickle's msgid past 32 bits is a LONG: left to the
                // general path, which is correct either way.
                if fast.is_some() || encoding == Encoding::Msgpack || msgid <= i32::MAX as i64 {
                    assert_eq!(
                        fast,
                        Some(&chunk[..]),
                        "{encoding:?} len {len} msgid {msgid}"
                    );
                }
            }
        }
    }
}

#[test]
fn other_calls_are_left_to_the_general_path() {
    for encoding in ENCODINGS {
        let m = Marshaller::client(encoding);
        let others = [
            // Synchronous.
            Message::call(3, METHOD, vec![Value::Bytes(b"ab".to_vec())]),
            // Another method, same shape.
            call(
                Value::Int(0),
                "storeBlobChunX",
                vec![Value::Bytes(b"ab".to_vec())],
            ),
            call(Value::Int(0), "store", vec![Value::Bytes(b"ab".to_vec())]),
            // Not bytes, or not one argument.
            call(Value::Int(0), METHOD, vec![Value::Str("ab".into())]),
            call(Value::Int(0), METHOD, vec![]),
            call(
                Value::Int(0),
                METHOD,
                vec![Value::Bytes(vec![1]), Value::Bytes(vec![2])],
            ),
            // Negative msgids (-1 is a heartbeat).
            call(Value::Int(-5), METHOD, vec![Value::Bytes(b"ab".to_vec())]),
            call(Value::Int(-1), METHOD, vec![Value::Bytes(b"ab".to_vec())]),
        ];
        for message in others {
            let payload = m.encode(&message).unwrap();
            assert_eq!(
                oneway_bytes_arg(encoding, &payload, METHOD),
                None,
                "{message:?}"
            );
        }
    }
}

fn chunk_payload() -> impl Strategy<Value = (Encoding, Vec<u8>)> {
    (
        prop_oneof![Just(Encoding::Pickle), Just(Encoding::Msgpack)],
        proptest::collection::vec(any::<u8>(), 0..600),
        0i64..100_000,
    )
        .prop_map(|(encoding, chunk, msgid)| {
            let message = call(Value::Int(msgid), METHOD, vec![Value::Bytes(chunk)]);
            (
                encoding,
                Marshaller::client(encoding).encode(&message).unwrap(),
            )
        })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    /// Damaged frames (a byte changed, cut short, bytes added, bytes
    /// removed) are either refused here or read exactly as the general
    /// decoder reads them.
    #[test]
    fn whatever_is_recognized_decodes_the_same_in_general(
        (encoding, payload) in chunk_payload(),
        at in any::<prop::sample::Index>(),
        byte in any::<u8>(),
        edit in 0u8..4,
    ) {
        let mut damaged = payload.clone();
        let i = at.index(damaged.len());
        match edit {
            0 => damaged[i] = byte,
            1 => damaged.truncate(i),
            2 => damaged.insert(i, byte),
            _ => { damaged.remove(i); }
        }
        if let Some(fast) = oneway_bytes_arg(encoding, &damaged, METHOD) {
            let slow = general(encoding, &damaged);
            prop_assert_eq!(slow.as_deref(), Some(fast));
        }
    }

    /// Arbitrary bytes never panic and are never read as something the
    /// general decoder disagrees with.
    #[test]
    fn arbitrary_bytes_agree_with_the_general_decoder(
        bytes in proptest::collection::vec(any::<u8>(), 0..200),
        pickle in any::<bool>(),
    ) {
        let encoding = if pickle { Encoding::Pickle } else { Encoding::Msgpack };
        if let Some(fast) = oneway_bytes_arg(encoding, &bytes, METHOD) {
            let slow = general(encoding, &bytes);
            prop_assert_eq!(slow.as_deref(), Some(fast));
        }
    }
}
