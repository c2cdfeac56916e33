// Feeds arbitrary bytes to the pickle decoder: it must return, not panic,
// and what it returns must survive re-encoding.
//
// Shared (through `include!`) by the libFuzzer target
// `fuzz_targets/pickle_decode.rs` and the stable corpus replay test, so
// both run exactly this.

use zeo_pickle::{encode, zeo_server_find_global, Decoder, Protocol};

/// Runs one input; panics on a defect.
pub fn run(data: &[u8]) {
    let mut d = Decoder::new(data);
    while let Ok(v) = d.next_pickle() {
        // Anything decoded re-encodes (protocol 3 can spell every value,
        // barring newlines in global names) and decodes to itself.
        if let Ok(bytes) = encode(&v, Protocol::V3) {
            // Protocol 3 spells a set as set(list) (two levels deeper than
            // protocol 4 does), so allow more depth on the way back.
            let again = Decoder::new(&bytes)
                .with_max_depth(4 * zeo_pickle::DEFAULT_MAX_DEPTH)
                .next_pickle()
                .expect("re-encoded pickle decodes");
            // NaN floats make equality fail; compare encodings instead.
            assert_eq!(encode(&again, Protocol::V3).ok(), Some(bytes));
        }
        if d.is_at_end() {
            break;
        }
    }
    let _ = Decoder::new(data)
        .with_find_global(zeo_server_find_global)
        .next_pickle();
}
