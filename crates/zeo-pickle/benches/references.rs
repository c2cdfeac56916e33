//! `references()` over a typical small record: an OOBTree bucket written by
//! ZODB 6 (441 bytes, 16 references) and a ~1 KB PersistentMapping-like
//! record built here; plus full decoding of the same records for contrast.

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use std::hint::black_box;
use zeo_pickle::{encode_record, references, Decoder, Value};

/// The `bucket` record of `tests/data/golden.rs`.
const BUCKET: &str = include_str!("bucket_record.hex");

/// A PersistentMapping with 20 string keys: 10 references to other
/// mappings, 10 small scalars. About 1 KB, like many application records.
fn mapping_record() -> Vec<u8> {
    let class = Value::global("persistent.mapping", "PersistentMapping");
    let mut items = Vec::new();
    for i in 0..20u64 {
        let key = Value::str(format!("some_attribute_name_{i:02}"));
        let value = if i % 2 == 0 {
            Value::persistent_ref(1000 + i, Some(class.clone()))
        } else {
            Value::str(format!("a short text value number {i}"))
        };
        items.push((key, value));
    }
    let state = Value::Dict(vec![(Value::str("data"), Value::Dict(items))]);
    encode_record(&class, &state).expect("encodable")
}

fn bench(c: &mut Criterion) {
    let bucket = hex::decode(BUCKET.trim()).expect("hex");
    let mapping = mapping_record();
    for (name, record) in [("bucket", &bucket), ("mapping_1k", &mapping)] {
        let mut g = c.benchmark_group(name);
        g.throughput(Throughput::Bytes(record.len() as u64));
        g.bench_function("references", |b| {
            b.iter(|| references(black_box(record)).expect("valid record"))
        });
        g.bench_function("decode_both_pickles", |b| {
            b.iter(|| {
                let mut d = Decoder::new(black_box(record));
                (
                    d.next_pickle().expect("class"),
                    d.next_pickle().expect("state"),
                )
            })
        });
        g.finish();
    }
}

criterion_group!(benches, bench);
criterion_main!(benches);
