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
            oneway_bytes_call(encoding, payload, METHOD),
            Some([&b"ab"[..]])
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
                let fast = oneway_bytes_call::<1>(encoding, &payload, METHOD).map(|[c]| c);
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
                oneway_bytes_call::<1>(encoding, &payload, METHOD),
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

/// Damages `payload` at the place `at` picks: `edit` 0 changes a byte to
/// `byte`, 1 cuts it short there, 2 inserts `byte`, 3 removes a byte.
fn damage(payload: &mut Vec<u8>, at: prop::sample::Index, byte: u8, edit: u8) {
    let i = at.index(payload.len());
    match edit {
        0 => payload[i] = byte,
        1 => payload.truncate(i),
        2 => payload.insert(i, byte),
        _ => {
            payload.remove(i);
        }
    }
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
        damage(&mut damaged, at, byte, edit);
        if let Some([fast]) = oneway_bytes_call(encoding, &damaged, METHOD) {
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
        if let Some([fast]) = oneway_bytes_call(encoding, &bytes, METHOD) {
            let slow = general(encoding, &bytes);
            prop_assert_eq!(slow.as_deref(), Some(fast));
        }
    }
}

/// `oneway_bytes_call::<N>` with its arguments as a slice.
fn read_back<'a, const N: usize>(
    encoding: Encoding,
    payload: &'a [u8],
    method: &str,
) -> Option<Vec<&'a [u8]>> {
    oneway_bytes_call::<N>(encoding, payload, method).map(Vec::from)
}

#[test]
fn the_direct_encoder_writes_what_the_marshaller_writes() {
    for encoding in ENCODINGS {
        for len in [0usize, 1, 255, 256, 65_535, 65_536, 59_000, 300_000] {
            let chunk: Vec<u8> = (0..len).map(|i| (i * 3) as u8).collect();
            for method in [
                METHOD,
                "m",
                &"n".repeat(31),
                &"o".repeat(32),
                &"p".repeat(255),
            ] {
                for count in [0usize, 1, 2, 3, 4, 7] {
                    let args: Vec<&[u8]> = (0..count)
                        .map(|i| &chunk[..len.min(i * 100 + len / 2)])
                        .collect();
                    let values = args.iter().map(|a| Value::Bytes(a.to_vec())).collect();
                    let general = Marshaller::client(encoding)
                        .encode(&Message::call_async(method, values))
                        .unwrap();
                    let mut direct = b"kept".to_vec();
                    encode_oneway_bytes_call(encoding, method, &args, &mut direct).unwrap();
                    assert!(
                        direct[4..] == general[..],
                        "{encoding:?} {method} {len} {count}"
                    );
                    let direct = &direct[4..];
                    let read = match count {
                        0 => read_back::<0>(encoding, direct, method),
                        1 => read_back::<1>(encoding, direct, method),
                        2 => read_back::<2>(encoding, direct, method),
                        3 => read_back::<3>(encoding, direct, method),
                        4 => read_back::<4>(encoding, direct, method),
                        _ => read_back::<7>(encoding, direct, method),
                    };
                    assert_eq!(read.as_deref(), Some(&args[..]));
                    // Another count is not read as this call.
                    assert_eq!(oneway_bytes_call::<5>(encoding, direct, method), None);
                }
            }
        }
    }
}

/// What the general path makes of a server's `receiveBlobChunk` payload:
/// its three byte strings.
fn general_receive(encoding: Encoding, payload: &[u8]) -> Option<[Vec<u8>; 3]> {
    let message = Marshaller::client(encoding).decode(payload).ok()?;
    if message.flags != Flags::Async || message.method != "receiveBlobChunk" {
        return None;
    }
    match message.args {
        Value::Tuple(items) => match <[Value; 3]>::try_from(items).ok()? {
            [Value::Bytes(a), Value::Bytes(b), Value::Bytes(c)] => Some([a, b, c]),
            _ => None,
        },
        _ => None,
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(1000))]

    /// The same for a download's three-argument chunks, damaged anywhere.
    #[test]
    fn receive_chunks_read_in_place_agree_with_the_general_decoder(
        chunk in proptest::collection::vec(any::<u8>(), 0..400),
        pickle in any::<bool>(),
        at in any::<prop::sample::Index>(),
        byte in any::<u8>(),
        edit in 0u8..4,
    ) {
        let encoding = if pickle { Encoding::Pickle } else { Encoding::Msgpack };
        let mut payload = Vec::new();
        encode_oneway_bytes_call(encoding, "receiveBlobChunk", &[&[0; 8], &[1; 8], &chunk], &mut payload).unwrap();
        let [a, b, c] = oneway_bytes_call::<3>(encoding, &payload, "receiveBlobChunk").unwrap();
        prop_assert_eq!((a, b, c), (&[0u8; 8][..], &[1u8; 8][..], &chunk[..]));
        damage(&mut payload, at, byte, edit);
        if let Some(fast) = oneway_bytes_call::<3>(encoding, &payload, "receiveBlobChunk") {
            let slow = general_receive(encoding, &payload);
            prop_assert_eq!(slow.as_ref().map(|[a, b, c]| [&a[..], &b[..], &c[..]]), Some(fast));
        }
    }
}
