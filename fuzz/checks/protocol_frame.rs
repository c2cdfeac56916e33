// Drives the frame codec and both handshakes with arbitrary bytes, fed in
// arbitrary pieces: no panic, and frames never exceed the limit.
//
// Shared (through `include!`) by the libFuzzer target
// `fuzz_targets/protocol_frame.rs` and the stable corpus replay test, so
// both run exactly this.

use bytes::BytesMut;
use tokio_util::codec::Decoder;
use zeo_protocol::{decode_frame, ClientHandshake, Encoding, FrameCodec, ServerHandshake};

/// Runs one input; panics on a defect.
pub fn run(data: &[u8]) {
    let Some((&step, data)) = data.split_first() else {
        return;
    };
    let step = usize::from(step).max(1);
    let mut codec = FrameCodec::with_max_frame(4096);
    let mut buf = BytesMut::new();
    'feed: for piece in data.chunks(step) {
        buf.extend_from_slice(piece);
        loop {
            match codec.decode(&mut buf) {
                Ok(Some(frame)) => {
                    assert!(frame.len() <= 4096);
                    let _ = ServerHandshake::new(Encoding::Pickle).receive(&frame);
                    let _ = ClientHandshake::new().receive(&frame);
                }
                Ok(None) => break,
                Err(_) => break 'feed,
            }
        }
    }
    let mut rest = data;
    while let Ok((_, next)) = decode_frame(rest) {
        if next.len() == rest.len() {
            break;
        }
        rest = next;
    }
}
