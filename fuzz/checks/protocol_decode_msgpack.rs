// Feeds arbitrary bytes to the msgpack marshaller on both sides: it must
// return, not panic; whatever decodes must parse without panicking and
// re-encode to bytes that decode to the same message.
//
// Shared (through `include!`) by the libFuzzer target
// `fuzz_targets/protocol_decode_msgpack.rs` and the stable corpus replay test, so
// both run exactly this.

use zeo_protocol::{ClientIncoming, Encoding, Marshaller, ServerRequest};

/// Runs one input; panics on a defect.
pub fn run(data: &[u8]) {
    let server = Marshaller::server(Encoding::Msgpack);
    if let Ok(msg) = server.decode(data) {
        let _ = ServerRequest::parse(&msg);
        let _ = ClientIncoming::parse(&msg);
        let bytes = server
            .encode(&msg)
            .expect("a decoded msgpack message re-encodes");
        let again = server.decode(&bytes).expect("re-encoded message decodes");
        // NaN floats defeat equality; compare encodings instead.
        assert_eq!(server.encode(&again).ok(), Some(bytes));
    }
}
