//! Walks that need only oids and tids, on files whose records are large
//! (10,000 records of 100 KB) or small (1,000,000 records of 500 B): opening
//! without `Data.fs.index` (the scan that builds the index) and seeding a
//! server's invalidation queue with every transaction
//! (`last_invalidations`). Neither needs the records' data, so the large
//! file should cost little more than its record count says.
//!
//! The two files (about 1.5 GB together) are written once, straight in the
//! FS30 layout, and kept under `<target>/bench-data/` for later runs.
//!
//! Times are the measuring thread's CPU time (user and system, which
//! includes copying from the page cache), not wall time: on a machine
//! shared with builds, wall time varies with the load several times over,
//! while CPU time follows the work done. Each walk's bytes read
//! (`rchar`) are printed once as well.

use std::fs::File;
use std::hint::black_box;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

use criterion::{criterion_group, criterion_main, Criterion};
use zeo_storage::filestorage::{FileStorage, FileStorageOptions};
use zeo_storage::Storage;

/// One synthetic file: `txns` transactions of `per_txn` records of
/// `data_len` bytes, every record a new object.
struct Shape {
    name: &'static str,
    txns: u64,
    per_txn: u64,
    data_len: u64,
}

const BIG_RECORDS: Shape = Shape {
    name: "10k_x_100KB",
    txns: 1_000,
    per_txn: 10,
    data_len: 100 * 1024,
};

const SMALL_RECORDS: Shape = Shape {
    name: "1M_x_500B",
    txns: 10_000,
    per_txn: 100,
    data_len: 500,
};

/// `<target>/bench-data`, found from the bench executable's own path
/// (`<target>/<profile>/deps/walk-…`).
fn cache_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("bench executable path");
    let target = exe
        .ancestors()
        .nth(3)
        .map(Path::to_path_buf)
        .unwrap_or_else(std::env::temp_dir);
    target.join("bench-data")
}

/// The file for `shape`, written when missing (or left incomplete by an
/// interrupted run: it is written under a temporary name and renamed).
fn cached(shape: &Shape) -> PathBuf {
    let dir = cache_dir();
    std::fs::create_dir_all(&dir).expect("creating the bench data directory");
    let path = dir.join(format!("walk-{}.fs", shape.name));
    if !path.exists() {
        let tmp = dir.join(format!("walk-{}.fs.tmp", shape.name));
        write_file(&tmp, shape).expect("writing the bench file");
        std::fs::rename(&tmp, &path).expect("renaming the bench file");
    }
    path
}

/// Writes the FS30 layout directly: commits through the storage would
/// fsync once per transaction and take minutes for no benefit.
fn write_file(path: &Path, shape: &Shape) -> std::io::Result<()> {
    let mut out = BufWriter::with_capacity(1 << 20, File::create(path)?);
    let data = vec![b'x'; shape.data_len as usize];
    let description = b"bench";
    let header_len = 23 + description.len() as u64;
    let tlen = header_len + shape.per_txn * (42 + shape.data_len);
    out.write_all(b"FS30")?;
    let mut pos = 4u64;
    // An arbitrary first tid, then one more per transaction.
    let base_tid: u64 = 0x03f6_2c40_0000_0000;
    for t in 0..shape.txns {
        let tid = base_tid + t + 1;
        out.write_all(&tid.to_be_bytes())?;
        out.write_all(&tlen.to_be_bytes())?;
        out.write_all(b" ")?;
        out.write_all(&0u16.to_be_bytes())?;
        out.write_all(&(description.len() as u16).to_be_bytes())?;
        out.write_all(&0u16.to_be_bytes())?;
        out.write_all(description)?;
        for r in 0..shape.per_txn {
            let oid = t * shape.per_txn + r;
            out.write_all(&oid.to_be_bytes())?;
            out.write_all(&tid.to_be_bytes())?;
            out.write_all(&0u64.to_be_bytes())?; // prev: first revision
            out.write_all(&pos.to_be_bytes())?; // tloc
            out.write_all(&0u16.to_be_bytes())?; // vlen
            out.write_all(&shape.data_len.to_be_bytes())?;
            out.write_all(&data)?;
        }
        out.write_all(&tlen.to_be_bytes())?;
        pos += tlen + 8;
    }
    out.into_inner().map_err(|e| e.into_error())?.sync_all()
}

/// CPU time the calling thread has used.
fn thread_cpu() -> Duration {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid timespec for the call to fill.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    assert_eq!(rc, 0, "clock_gettime");
    Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
}

/// Runs `f` `iters` times; returns the CPU time they took.
fn cpu_time<T>(iters: u64, mut f: impl FnMut() -> T) -> Duration {
    let start = thread_cpu();
    for _ in 0..iters {
        black_box(f());
    }
    thread_cpu() - start
}

/// Prints how many bytes one run of `f` reads.
fn report_reads<T>(name: &str, size: u64, f: impl FnOnce() -> T) {
    let before = zeo_testkit::thread_read_bytes();
    black_box(f());
    let read = zeo_testkit::thread_read_bytes() - before;
    eprintln!("{name}: read {read} bytes of a {size}-byte file");
}

fn benches(c: &mut Criterion) {
    let ro = FileStorageOptions {
        read_only: true,
        ..Default::default()
    };
    let mut group = c.benchmark_group("filestorage_walk");
    group
        .sample_size(10)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(10));
    for shape in [&BIG_RECORDS, &SMALL_RECORDS] {
        let path = cached(shape);
        let size = std::fs::metadata(&path).unwrap().len();
        let open = || FileStorage::open(&path, ro).unwrap();
        let name = format!("open_without_index/{}", shape.name);
        report_reads(&name, size, open);
        group.bench_function(name, |b| b.iter_custom(|iters| cpu_time(iters, open)));
        let fs = open();
        let seed = || {
            let seeded = fs.last_invalidations(shape.txns as usize).unwrap();
            assert_eq!(seeded.len() as u64, shape.txns);
            seeded
        };
        let name = format!("seed_invalidations_all/{}", shape.name);
        report_reads(&name, size, seed);
        group.bench_function(name, |b| b.iter_custom(|iters| cpu_time(iters, seed)));
    }
    group.finish();
}

criterion_group!(walk, benches);
criterion_main!(walk);
