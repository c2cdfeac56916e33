//! Encode/decode cost of the messages a busy ZEO connection carries most,
//! in both encodings.

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use zeo_protocol::{
    reply, ClientEvent, ClientRequest, Encoding, Marshaller, Message, Reply, ServerRequest, TxnId,
};
use zeo_storage::{LoadedRevision, Oid, Tid};

fn messages() -> Vec<(&'static str, Message)> {
    let oid = Oid(0x1234);
    let tid = Tid(0x03d8_1e8a_1234_5678);
    let data: Vec<u8> = (0..1024u32).map(|i| (i % 251) as u8).collect();
    let oids: Vec<Oid> = (1..=100).map(Oid).collect();
    vec![
        ("loadBefore", ClientRequest::load_before(oid, tid)),
        (
            "loadBefore_reply_1k",
            Reply::value(
                ClientRequest::load_before(oid, tid).msgid,
                reply::load_before(Some(&LoadedRevision {
                    data: data.clone(),
                    start: tid,
                    end: None,
                })),
            ),
        ),
        (
            "storea_1k",
            ClientRequest::storea(oid, Tid(0), &data, TxnId(140_326_466_128_656)),
        ),
        (
            "invalidateTransaction_100",
            ClientEvent::invalidate_transaction(tid, &oids),
        ),
    ]
}

fn bench(c: &mut Criterion) {
    for (encoding, label) in [(Encoding::Pickle, "pickle"), (Encoding::Msgpack, "msgpack")] {
        let server = Marshaller::server(encoding);
        let client = Marshaller::client(encoding);
        let mut group = c.benchmark_group(format!("marshal/{label}"));
        for (name, msg) in messages() {
            let bytes = server.encode(&msg).expect("encodable");
            group.throughput(Throughput::Bytes(bytes.len() as u64));
            group.bench_with_input(BenchmarkId::new("encode", name), &msg, |b, msg| {
                b.iter(|| server.encode(black_box(msg)).expect("encodable"))
            });
            group.bench_with_input(BenchmarkId::new("decode", name), &bytes, |b, bytes| {
                b.iter(|| client.decode(black_box(bytes)).expect("decodable"))
            });
            if !msg.is_reply() && msg.method != "invalidateTransaction" {
                group.bench_with_input(
                    BenchmarkId::new("decode+parse", name),
                    &bytes,
                    |b, bytes| {
                        b.iter(|| {
                            let msg = server.decode(black_box(bytes)).expect("decodable");
                            ServerRequest::parse(&msg).expect("valid request")
                        })
                    },
                );
            }
        }
        group.finish();
    }
}

criterion_group!(benches, bench);
criterion_main!(benches);
