// Feeds arbitrary bytes to the in-place reader of one-way byte-string
// calls (`zeo_protocol::oneway_bytes_call`) in both encodings: it must
// return, not panic, and whatever it reads as a `storeBlobChunk` or a
// `receiveBlobChunk` the general decoder must read as the same call with
// the same bytes (the model it is held to).
//
// Shared (through `include!`) by the libFuzzer target
// `fuzz_targets/protocol_bytes_call.rs` and the stable corpus replay test, so
// both run exactly this.

use zeo_pickle::Value;
use zeo_protocol::{oneway_bytes_call, Call, Encoding, Flags, Incoming, Marshaller, ServerRequest};

/// Runs one input; panics on a defect.
pub fn run(data: &[u8]) {
    for encoding in [Encoding::Pickle, Encoding::Msgpack] {
        if let Some([chunk]) = oneway_bytes_call(encoding, data, "storeBlobChunk") {
            let message = Marshaller::server(encoding)
                .decode(data)
                .expect("the general decoder reads what was read in place");
            match ServerRequest::parse(&message) {
                Ok(Incoming::Call(Call {
                    oneway: true,
                    request: ServerRequest::StoreBlobChunk { chunk: general },
                    ..
                })) => assert_eq!(general, chunk),
                other => panic!("read in place as storeBlobChunk, in general as {other:?}"),
            }
        }
        if let Some(args) = oneway_bytes_call::<3>(encoding, data, "receiveBlobChunk") {
            let message = Marshaller::client(encoding)
                .decode(data)
                .expect("the general decoder reads what was read in place");
            assert_eq!(message.flags, Flags::Async);
            assert_eq!(message.method, "receiveBlobChunk");
            let general: Vec<Value> = args.iter().map(|a| Value::Bytes(a.to_vec())).collect();
            assert_eq!(message.args, Value::Tuple(general));
        }
    }
}
