//! FileStorage benchmarks: random loads from a 100k-object file, commits of
//! 1 and 100 objects (each with its fsync), and opening with and without
//! `Data.fs.index`.

use std::hint::black_box;
use std::path::Path;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use zeo_storage::filestorage::{FileStorage, FileStorageOptions};
use zeo_storage::interface::BeginOptions;
use zeo_storage::{Oid, Storage, Tid, TransactionMetaData};

const OBJECTS: u64 = 100_000;
const PER_TXN: u64 = 5_000;

fn record(oid: u64) -> Vec<u8> {
    let mut v = b"\x80\x03cpersistent.mapping\nPersistentMapping\nq\x00.\x80\x03}q\x01".to_vec();
    v.extend_from_slice(format!("object {oid:08} ").repeat(6).as_bytes());
    v.push(b'.');
    v
}

/// Builds the 100k-object file once, in a few large transactions.
fn build(path: &Path) {
    let fs = FileStorage::open(
        path,
        FileStorageOptions {
            create: true,
            ..Default::default()
        },
    )
    .unwrap();
    for chunk in 0..OBJECTS / PER_TXN {
        let txn = fs
            .tpc_begin(&TransactionMetaData::default(), BeginOptions::default())
            .unwrap();
        for oid in chunk * PER_TXN..(chunk + 1) * PER_TXN {
            fs.store(txn, Oid(oid), Tid::ZERO, &record(oid)).unwrap();
        }
        fs.tpc_vote(txn).unwrap();
        fs.tpc_finish(txn, &mut |_| {}).unwrap();
    }
    fs.close().unwrap();
}

/// xorshift64*: a cheap, dependency-free oid sequence.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
}

fn benches(c: &mut Criterion) {
    let dir = tempfile::tempdir().unwrap();
    let big = dir.path().join("big.fs");
    build(&big);
    let no_index = dir.path().join("noindex.fs");
    std::fs::copy(&big, &no_index).unwrap();
    let ro = FileStorageOptions {
        read_only: true,
        ..Default::default()
    };

    {
        let fs = FileStorage::open(&big, ro).unwrap();
        let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
        let mut group = c.benchmark_group("filestorage");
        group.throughput(Throughput::Elements(1));
        group.bench_function("load_random_of_100k", |b| {
            b.iter(|| black_box(fs.load(Oid(rng.next() % OBJECTS)).unwrap()))
        });
        // What a ZEO server's loadBefore of a current revision asks for.
        group.bench_function("load_before_current_of_100k", |b| {
            b.iter(|| black_box(fs.load_before(Oid(rng.next() % OBJECTS), Tid::MAX).unwrap()))
        });
        group.finish();
    }

    {
        let mut group = c.benchmark_group("filestorage_commit");
        group
            .sample_size(20)
            .measurement_time(Duration::from_secs(5));
        let path = dir.path().join("commit.fs");
        let fs = FileStorage::open(&path, FileStorageOptions::default()).unwrap();
        let data = record(1);
        let mut serials = vec![Tid::ZERO; 100];
        for n in [1usize, 100] {
            group.throughput(Throughput::Elements(n as u64));
            group.bench_function(format!("commit_{n}_objects"), |b| {
                b.iter(|| {
                    let txn = fs
                        .tpc_begin(&TransactionMetaData::default(), BeginOptions::default())
                        .unwrap();
                    for (i, serial) in serials.iter().enumerate().take(n) {
                        fs.store(txn, Oid(i as u64), *serial, &data).unwrap();
                    }
                    fs.tpc_vote(txn).unwrap();
                    let tid = fs.tpc_finish(txn, &mut |_| {}).unwrap();
                    serials.iter_mut().take(n).for_each(|s| *s = tid);
                })
            });
        }
        group.finish();
    }

    {
        let mut group = c.benchmark_group("filestorage_open_100k");
        group
            .sample_size(10)
            .measurement_time(Duration::from_secs(5));
        group.bench_function("with_index", |b| {
            b.iter_batched(
                || (),
                |_| FileStorage::open(&big, ro).unwrap(),
                BatchSize::PerIteration,
            )
        });
        group.bench_function("without_index", |b| {
            b.iter_batched(
                || (),
                |_| FileStorage::open(&no_index, ro).unwrap(),
                BatchSize::PerIteration,
            )
        });
        group.finish();
    }
}

criterion_group!(filestorage, benches);
criterion_main!(filestorage);
