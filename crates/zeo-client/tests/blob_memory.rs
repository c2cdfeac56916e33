//! A 100 MB blob goes up to a stock Python ZEO 6 server (`runzeo`) and
//! comes down into another client's cache while this process's heap grows
//! by less than 64 MiB each way: uploads are read a chunk at a time and
//! wait for the connection's queue, downloads are written as they arrive.
//! The heap is measured by a counting global allocator, so everything the
//! client's threads allocate counts.
//!
//! Needs the venv `cargo xtask test` creates; fails (never skips) without it.

mod common;

use std::alloc::{GlobalAlloc, Layout, System};
use std::io::{Read, Write};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use common::run_runzeo;
use zeo_client::{ClientOptions, ClientStorage, ServerAddress};
use zeo_storage::{BeginOptions, BlobSource, Blobs, Storage, Tid, TransactionMetaData};
use zeo_testkit::free_port;

struct Counting;

static CURRENT: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);

fn grew(by: usize) {
    let now = CURRENT.fetch_add(by, Ordering::Relaxed) + by;
    PEAK.fetch_max(now, Ordering::Relaxed);
}

// SAFETY: every call is forwarded to the system allocator unchanged; the
// counters only observe sizes.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: the caller's contract is passed on as is.
        let p = unsafe { System.alloc(layout) };
        if !p.is_null() {
            grew(layout.size());
        }
        p
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: as for `alloc`.
        unsafe { System.dealloc(ptr, layout) };
        CURRENT.fetch_sub(layout.size(), Ordering::Relaxed);
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: as for `alloc`.
        let p = unsafe { System.realloc(ptr, layout, new_size) };
        if !p.is_null() {
            CURRENT.fetch_sub(layout.size(), Ordering::Relaxed);
            grew(new_size);
        }
        p
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

/// Runs `f` and returns how far the heap rose above where it stood.
fn heap_growth<T>(f: impl FnOnce() -> T) -> (T, usize) {
    let base = CURRENT.load(Ordering::Relaxed);
    PEAK.store(base, Ordering::Relaxed);
    let out = f();
    (out, PEAK.load(Ordering::Relaxed).saturating_sub(base))
}

const SIZE: usize = 100 * 1024 * 1024;
const LIMIT: usize = 64 * 1024 * 1024;

/// The byte at `i` of the test blob.
fn byte(i: usize) -> u8 {
    (i as u32).wrapping_mul(2_654_435_761).to_be_bytes()[0]
}

#[test]
fn a_100_mb_blob_goes_up_and_down_in_bounded_memory() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    zeo_testkit::write_runzeo_blob_config(dir.path(), port);
    let _server = run_runzeo(dir.path(), port);
    let options = |cache: &str| {
        let mut o = ClientOptions::new(vec![ServerAddress::localhost(port)]);
        o.wait_timeout = Duration::from_secs(60);
        o.blob_dir = Some(dir.path().join(cache));
        o
    };
    let up = ClientStorage::open(options("cache-up")).unwrap();
    let down = ClientStorage::open(options("cache-down")).unwrap();

    // The blob, written a megabyte at a time.
    let source = up.temporary_directory().join("big");
    {
        let mut f = std::io::BufWriter::new(std::fs::File::create(&source).unwrap());
        let mut buf = vec![0u8; 1 << 20];
        for start in (0..SIZE).step_by(buf.len()) {
            for (k, b) in buf.iter_mut().enumerate() {
                *b = byte(start + k);
            }
            f.write_all(&buf).unwrap();
        }
        f.flush().unwrap();
    }

    let oid = up.new_oid().unwrap();
    let (tid, growth_up) = heap_growth(|| {
        let txn = up
            .tpc_begin(&TransactionMetaData::default(), BeginOptions::default())
            .unwrap();
        up.store_blob(
            txn,
            oid,
            Tid::ZERO,
            b"blob record",
            BlobSource::File(source),
        )
        .unwrap();
        up.tpc_vote(txn).unwrap();
        up.tpc_finish(txn, &mut |_| {}).unwrap()
    });
    assert!(
        growth_up < LIMIT,
        "uploading grew the heap by {growth_up} bytes"
    );

    let (path, growth_down) = heap_growth(|| down.load_blob(oid, tid).unwrap());
    assert!(
        growth_down < LIMIT,
        "downloading grew the heap by {growth_down} bytes"
    );
    println!(
        "heap growth: up {:.3} of the blob, down {:.3}",
        growth_up as f64 / SIZE as f64,
        growth_down as f64 / SIZE as f64
    );

    // Byte-exact, compared a buffer at a time.
    let mut f = std::io::BufReader::new(std::fs::File::open(path).unwrap());
    let mut buf = vec![0u8; 1 << 20];
    let mut at = 0;
    for _ in 0..=SIZE / buf.len() {
        let n = f.read(&mut buf).unwrap();
        if n == 0 {
            break;
        }
        assert!(
            buf[..n].iter().enumerate().all(|(k, &b)| b == byte(at + k)),
            "mismatch in the megabyte at {at}"
        );
        at += n;
    }
    assert_eq!(at, SIZE);
    up.close().unwrap();
    down.close().unwrap();
}
