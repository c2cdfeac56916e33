//! Hostile messages: nesting, claimed lengths and decoded size are bounded,
//! and every refusal is an error naming its limit, on the server's side and
//! the client's.

use bytes::BytesMut;
use tokio_util::codec::Decoder;
use zeo_pickle::Value;
use zeo_protocol::frame::FRAME_GROW_STEP;
use zeo_protocol::{
    ClientIncoming, Encoding, Error, FrameCodec, Marshaller, Message, ServerRequest,
    MAX_MESSAGE_DEPTH,
};

const ENCODINGS: [Encoding; 2] = [Encoding::Pickle, Encoding::Msgpack];

fn both_sides(encoding: Encoding) -> [Marshaller; 2] {
    [Marshaller::server(encoding), Marshaller::client(encoding)]
}

fn assert_limit(result: Result<Message, Error>, what: &str) {
    match result {
        Err(err @ Error::LimitExceeded { .. }) => {
            assert!(err.to_string().contains(what), "{err}");
        }
        other => panic!("expected a limit error naming {what:?}, got {other:?}"),
    }
}

/// `N` followed by `n` `TUPLE1`s: an `n`-deep value at a stack height of one.
fn tuple1_chain(n: usize) -> Vec<u8> {
    let mut p = b"\x80\x03N".to_vec();
    p.extend(std::iter::repeat_n(0x85, n));
    p.push(b'.');
    p
}

#[test]
fn fifty_thousand_tuple1_is_a_limit_error_not_a_stack_overflow() {
    let payload = tuple1_chain(50_000);
    for m in both_sides(Encoding::Pickle) {
        assert_limit(m.decode(&payload), "nesting deeper than 64");
    }
    // The same through the generic decoder (a memo opcode up front).
    let mut generic = b"\x80\x03Nq\x00".to_vec();
    generic.extend(std::iter::repeat_n(0x85, 50_000));
    generic.push(b'.');
    for m in both_sides(Encoding::Pickle) {
        assert!(
            matches!(m.decode(&generic), Err(Error::LimitExceeded { .. })),
            "generic"
        );
    }
    // And msgpack: fifty thousand one-element arrays.
    let mut packed = vec![0x91; 50_000];
    packed.push(0xc0);
    for m in both_sides(Encoding::Msgpack) {
        assert_limit(m.decode(&packed), "nesting deeper than 64");
    }
}

/// A message whose whole value nests exactly `depth` containers deep
/// (the message tuple is one of them).
fn message_of_depth(depth: usize, innermost: Value) -> Message {
    let mut args = innermost;
    for i in 0..depth - 3 {
        args = if i % 2 == 0 {
            Value::Tuple(vec![Value::Int(i as i64), args])
        } else {
            Value::List(vec![args])
        };
    }
    Message::call(1, "loadBefore", vec![args])
}

/// Everything a server or client does with a decoded message that recurses
/// over it, on a thread whose stack is `stack` bytes.
fn exercise_on_small_stack(m: Marshaller, payload: Vec<u8>, stack: usize) -> Result<(), String> {
    std::thread::Builder::new()
        .stack_size(stack)
        .spawn(move || {
            let msg = m.decode(&payload).map_err(|e| e.to_string())?;
            let _ = ServerRequest::parse(&msg);
            let _ = ClientIncoming::parse(&msg);
            let copy = msg.clone();
            assert!(copy == msg);
            assert!(!format!("{msg:?}").is_empty());
            let again = m.encode(&msg).map_err(|e| e.to_string())?;
            assert_eq!(m.decode(&again).map_err(|e| e.to_string())?, msg);
            drop(copy);
            drop(msg);
            Ok(())
        })
        .expect("spawn")
        .join()
        .expect("no stack overflow")
}

#[test]
fn the_deepest_accepted_message_is_safe_on_a_small_stack() {
    // Decoding and encoding keep their own stacks; drop, clone, equality,
    // Debug and normalizing recurse per level, and fit in this even in an
    // unoptimized build.
    let stack = 128 * 1024;
    // A dict at the bottom sends a pickle to the generic decoder; plain data
    // is read by the direct reader.
    let innermosts = [
        ("direct", Value::Tuple(vec![])),
        ("generic", Value::Dict(vec![(Value::Int(1), Value::None)])),
    ];
    for encoding in ENCODINGS {
        for (label, innermost) in &innermosts {
            let deepest = message_of_depth(MAX_MESSAGE_DEPTH, innermost.clone());
            let too_deep = message_of_depth(MAX_MESSAGE_DEPTH + 1, innermost.clone());
            for m in both_sides(encoding) {
                let payload = m.encode(&deepest).unwrap();
                exercise_on_small_stack(m, payload, stack)
                    .unwrap_or_else(|e| panic!("{encoding:?} {label}: {e}"));
                let payload = m.encode(&too_deep).unwrap();
                assert_limit(m.decode(&payload), "nesting deeper than 64");
            }
        }
    }
}

#[test]
fn msgpack_headers_claiming_billions_of_elements_reserve_nothing() {
    // array32(0xFFFFFFFF) at every level, then nothing.
    let mut packed = Vec::new();
    for _ in 0..MAX_MESSAGE_DEPTH + 10 {
        packed.extend_from_slice(&[0xdd, 0xff, 0xff, 0xff, 0xff]);
    }
    for m in both_sides(Encoding::Msgpack) {
        assert_limit(m.decode(&packed), "nesting deeper than 64");
        // Within the depth limit it is merely truncated.
        let err = m.decode(&packed[..5 * 10]).unwrap_err();
        assert!(matches!(err, Error::Malformed { .. }), "{err}");
    }
}

#[test]
fn plain_data_over_its_budget_is_refused() {
    // A list of a few million one-byte Nones would cost fifty times its size
    // as values.
    let n = 4_000_000;
    let mut p = b"\x80\x03]".to_vec();
    for _ in 0..n / 1000 {
        p.push(b'(');
        p.extend(std::iter::repeat_n(b'N', 1000));
        p.push(b'e');
    }
    p.push(b'.');
    for m in both_sides(Encoding::Pickle) {
        assert_limit(m.decode(&p), "decoded value over");
    }
    let mut packed = vec![0xdd];
    packed.extend_from_slice(&(n as u32).to_be_bytes());
    packed.extend(std::iter::repeat_n(0xc0, n));
    for m in both_sides(Encoding::Msgpack) {
        assert_limit(m.decode(&packed), "decoded value over");
    }
}

#[test]
fn a_claimed_frame_length_reserves_only_what_arrived() {
    let claimed = 64u32 << 20;
    let mut codec = FrameCodec::with_max_frame(256 << 20);
    let mut buf = BytesMut::new();
    buf.extend_from_slice(&claimed.to_be_bytes());
    buf.extend_from_slice(b"Z5 and a few");
    assert!(codec.decode(&mut buf).unwrap().is_none());
    assert!(
        buf.capacity() <= buf.len() + FRAME_GROW_STEP,
        "{} bytes reserved",
        buf.capacity()
    );
    // It grows with what arrives, never past the frame.
    let total = 4 + claimed as usize;
    let chunk = vec![7u8; 1 << 20];
    while buf.len() < total {
        let n = chunk.len().min(total - buf.len());
        buf.extend_from_slice(&chunk[..n]);
        let frame = codec.decode(&mut buf).unwrap();
        if let Some(frame) = frame {
            assert_eq!(frame.len(), claimed as usize);
            assert!(frame.capacity() <= claimed as usize + 2 * FRAME_GROW_STEP);
            return;
        }
        assert!(buf.capacity() <= 2 * buf.len() + FRAME_GROW_STEP);
    }
    panic!("the frame never completed");
}

#[test]
fn an_oversized_frame_names_max_message_size() {
    let mut codec = FrameCodec::with_max_frame(1024);
    let mut buf = BytesMut::from(&1025u32.to_be_bytes()[..]);
    let err = codec.decode(&mut buf).unwrap_err();
    assert_eq!(
        err.to_string(),
        "frame of 1025 bytes exceeds max-message-size 1024"
    );
}

/// An `undoLog` reply as a ZEO server sends it: thousands of small dicts
/// with short keys, a tree that costs many times its bytes once decoded.
fn undo_log_reply(entries: usize) -> Message {
    let entry = |i: usize| {
        Value::Dict(vec![
            (Value::str("id"), Value::bytes((i as u64).to_be_bytes())),
            (Value::str("time"), Value::Float(1.7e9 + i as f64)),
            (Value::str("user_name"), Value::str("")),
            (Value::str("description"), Value::str("")),
            (Value::str("size"), Value::Int(120)),
        ])
    };
    Message::reply(
        Value::Int(7),
        Value::List((0..entries).map(entry).collect()),
    )
}

#[test]
fn a_client_reads_large_trees_of_small_values_from_its_server() {
    for encoding in [Encoding::Pickle, Encoding::Msgpack] {
        let reply = undo_log_reply(100_000);
        let payload = Marshaller::server(encoding).encode(&reply).unwrap();
        let decoded = Marshaller::client(encoding).decode(&payload).unwrap();
        assert_eq!(
            decoded
                .args
                .as_list()
                .or(decoded.args.as_tuple())
                .map(<[Value]>::len),
            Some(100_000),
            "{encoding:?}"
        );
    }
}
