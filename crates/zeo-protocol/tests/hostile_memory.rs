//! What hostile messages cost in memory, measured by a counting allocator:
//! a memo bomb stays within a few times its size, and claimed lengths
//! reserve nothing.
//!
//! Every test here takes `LOCK`, so the allocator's peak belongs to one
//! test at a time.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;

use zeo_protocol::{Encoding, Error, Marshaller, Side};

struct Counting;

static LIVE: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);

fn grew(bytes: usize) {
    let live = LIVE.fetch_add(bytes, Ordering::SeqCst) + bytes;
    PEAK.fetch_max(live, Ordering::SeqCst);
}

// SAFETY: forwards to the system allocator, only counting.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        grew(layout.size());
        System.alloc(layout)
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        grew(layout.size());
        System.alloc_zeroed(layout)
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE.fetch_sub(layout.size(), Ordering::SeqCst);
        System.dealloc(ptr, layout)
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // Counted as a fresh allocation alongside the old one, as a copy
        // would need.
        grew(new_size);
        let p = System.realloc(ptr, layout, new_size);
        LIVE.fetch_sub(layout.size(), Ordering::SeqCst);
        p
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

static LOCK: Mutex<()> = Mutex::new(());

/// The most bytes allocated at once while `f` ran, beyond what was live
/// before it.
fn peak_during<T>(f: impl FnOnce() -> T) -> (T, usize) {
    let base = LIVE.load(Ordering::SeqCst);
    PEAK.store(base, Ordering::SeqCst);
    let out = f();
    (out, PEAK.load(Ordering::SeqCst) - base)
}

const MIB: usize = 1 << 20;

/// A 16 MiB message: one `size`-byte string memoized, then `BINGET`s of it
/// until the frame is full, in a list.
fn memo_bomb(size: usize) -> Vec<u8> {
    let total = 16 * MIB;
    let mut p = b"\x80\x03]q\x01(".to_vec();
    p.push(b'B');
    p.extend_from_slice(&(size as u32).to_le_bytes());
    p.extend(std::iter::repeat_n(b'x', size));
    p.extend_from_slice(b"q\x00");
    while p.len() < total - 2 {
        p.extend_from_slice(b"h\x00");
    }
    p.extend_from_slice(b"e.");
    p
}

#[test]
fn a_memo_bomb_costs_less_than_three_times_its_size_beyond_the_frame() {
    let _guard = LOCK.lock().unwrap_or_else(|e| e.into_inner());
    for size in [8, 1024, MIB] {
        let payload = memo_bomb(size);
        for m in [
            Marshaller::server(Encoding::Pickle),
            Marshaller::client(Encoding::Pickle),
        ] {
            let (result, peak) = peak_during(|| m.decode(&payload));
            assert!(
                matches!(&result, Err(Error::LimitExceeded { .. })),
                "{size}: {result:?}"
            );
            eprintln!(
                "memo bomb of {size}-byte values: peak {peak} bytes for {} input",
                payload.len()
            );
            // A server decodes requests from peers it does not trust under
            // tight budgets; a client gives its server's replies room for
            // large trees (crate::limits), still bounded by the frame.
            let factor = match m.side() {
                Side::Server => 3,
                _ => 25,
            };
            assert!(
                peak < factor * payload.len(),
                "{size}-byte memo bomb: {peak} bytes for {} input",
                payload.len()
            );
        }
    }
}

#[test]
fn nested_sharing_costs_no_more_than_the_budget() {
    let _guard = LOCK.lock().unwrap_or_else(|e| e.into_inner());
    // Each level a tuple of the previous one twice: 2**40 leaves.
    let mut p = b"\x80\x03C\x08xxxxxxxxq\x00".to_vec();
    for level in 0..40u8 {
        p.extend_from_slice(&[b'h', level, b'h', level, 0x86, b'q', level + 1]);
    }
    p.push(b'.');
    let m = Marshaller::server(Encoding::Pickle);
    let (result, peak) = peak_during(|| m.decode(&p));
    assert!(
        matches!(result, Err(Error::LimitExceeded { .. })),
        "{result:?}"
    );
    assert!(
        peak < 3 * zeo_protocol::limits::MESSAGE_BUDGET_BASE,
        "{peak}"
    );
}

#[test]
fn a_megabyte_of_huge_msgpack_headers_allocates_little() {
    let _guard = LOCK.lock().unwrap_or_else(|e| e.into_inner());
    let mut packed = Vec::new();
    while packed.len() < MIB {
        packed.extend_from_slice(&[0xdd, 0xff, 0xff, 0xff, 0xff]);
    }
    let m = Marshaller::server(Encoding::Msgpack);
    let (result, peak) = peak_during(|| m.decode(&packed));
    assert!(
        matches!(result, Err(Error::LimitExceeded { .. })),
        "{result:?}"
    );
    assert!(peak < 256 * 1024, "{peak}");
}
