//! Per-storage counters reported by `server_status`, `ruok`, the monitor
//! and the metrics endpoint, and the latency histograms the metrics
//! endpoint exposes.

use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::time::Duration;

/// Upper bounds, in seconds, of the buckets of every latency histogram:
/// half a millisecond (an fsync on a fast disk) to a minute (a commit
/// stuck behind a long lock hold).
pub const LATENCY_BUCKETS: [f64; 16] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
    60.0,
];

/// A latency histogram with the fixed [`LATENCY_BUCKETS`], updated
/// without locks.
#[derive(Debug)]
pub struct Histogram {
    buckets: [AtomicU64; LATENCY_BUCKETS.len()],
    count: AtomicU64,
    /// Microseconds observed in all.
    sum_micros: AtomicU64,
}

/// What a [`Histogram`] held at one moment.
#[derive(Clone, Debug, PartialEq)]
pub struct HistogramSnapshot {
    /// Observations at or below each of [`LATENCY_BUCKETS`], cumulative.
    pub cumulative: [u64; LATENCY_BUCKETS.len()],
    /// All observations (the `+Inf` bucket).
    pub count: u64,
    /// Their sum in seconds.
    pub sum_seconds: f64,
}

impl Histogram {
    /// An empty histogram.
    pub fn new() -> Self {
        Histogram {
            buckets: std::array::from_fn(|_| AtomicU64::new(0)),
            count: AtomicU64::new(0),
            sum_micros: AtomicU64::new(0),
        }
    }

    /// Records one duration.
    pub fn observe(&self, d: Duration) {
        let seconds = d.as_secs_f64();
        if let Some(i) = LATENCY_BUCKETS.iter().position(|&b| seconds <= b) {
            self.buckets[i].fetch_add(1, Ordering::Relaxed);
        }
        self.count.fetch_add(1, Ordering::Relaxed);
        let micros = u64::try_from(d.as_micros()).unwrap_or(u64::MAX);
        self.sum_micros.fetch_add(micros, Ordering::Relaxed);
    }

    /// The counts so far, cumulative as Prometheus exposes them.
    pub fn snapshot(&self) -> HistogramSnapshot {
        let mut cumulative = [0u64; LATENCY_BUCKETS.len()];
        let mut running = 0u64;
        for (slot, bucket) in cumulative.iter_mut().zip(&self.buckets) {
            running += bucket.load(Ordering::Relaxed);
            *slot = running;
        }
        // Read after the buckets: a concurrent observation may show in the
        // count and not yet in its bucket, never the other way round
        // enough to make a bucket exceed the count.
        let count = self.count.load(Ordering::Relaxed).max(running);
        HistogramSnapshot {
            cumulative,
            count,
            sum_seconds: self.sum_micros.load(Ordering::Relaxed) as f64 / 1e6,
        }
    }
}

impl Default for Histogram {
    fn default() -> Self {
        Self::new()
    }
}

/// ZEO's `StorageStats`: counters a monitor reads.
#[derive(Debug)]
pub struct StorageStats {
    /// `loadBefore` calls.
    pub loads: AtomicU64,
    /// Stores, deletions and restores received.
    pub stores: AtomicU64,
    /// Finished transactions.
    pub commits: AtomicU64,
    /// Aborted transactions.
    pub aborts: AtomicU64,
    /// Open transactions (begun, not yet finished or aborted).
    pub active_txns: AtomicI64,
    /// Votes that failed with a conflict.
    pub conflicts: AtomicU64,
    /// Conflicts resolved on the server (never, as in ZEO 5).
    pub conflicts_resolved: AtomicU64,
    /// `invalidateTransaction` messages queued to clients.
    pub invalidations_sent: AtomicU64,
    /// Times a connection stopped reading requests because its replies
    /// (or the server's) were queued past the limits.
    pub backpressure_events: AtomicU64,
    /// Packs run (finished or failed).
    pub packs: AtomicU64,
    /// How long packs took.
    pub pack_seconds: Histogram,
    /// From the vote taking the commit lock to `tpc_finish` returning, for
    /// transactions that committed.
    pub commit_seconds: Histogram,
    /// How long the storage's `tpc_finish` took: writing the transaction
    /// and syncing it to disk.
    pub finish_seconds: Histogram,
    /// When the server started, as `time.ctime()` prints it.
    pub start: String,
}

impl StorageStats {
    /// Zeroed counters stamped with the current time.
    pub fn new() -> Self {
        StorageStats {
            loads: AtomicU64::new(0),
            stores: AtomicU64::new(0),
            commits: AtomicU64::new(0),
            aborts: AtomicU64::new(0),
            active_txns: AtomicI64::new(0),
            conflicts: AtomicU64::new(0),
            conflicts_resolved: AtomicU64::new(0),
            invalidations_sent: AtomicU64::new(0),
            backpressure_events: AtomicU64::new(0),
            packs: AtomicU64::new(0),
            pack_seconds: Histogram::new(),
            commit_seconds: Histogram::new(),
            finish_seconds: Histogram::new(),
            start: ctime_now(),
        }
    }

    /// Adds one to a counter.
    pub fn bump(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }

    /// Counts a pack that took `took`, finished or failed.
    pub fn record_pack(&self, took: Duration) {
        Self::bump(&self.packs);
        self.pack_seconds.observe(took);
    }
}

impl Default for StorageStats {
    fn default() -> Self {
        Self::new()
    }
}

/// The local time in C's `ctime` layout without the newline, e.g.
/// `Wed Nov 25 11:21:31 2026`, as Python's `time.ctime()` gives it.
pub fn ctime_now() -> String {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as libc::time_t)
        .unwrap_or(0);
    // SAFETY: `tm` is plain data that localtime_r fills in; both pointers
    // are valid for the duration of the call.
    let tm = unsafe {
        let mut tm: libc::tm = std::mem::zeroed();
        if libc::localtime_r(&now, &mut tm).is_null() {
            return String::from("Thu Jan  1 00:00:00 1970");
        }
        tm
    };
    const DAYS: [&str; 7] = ["Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat"];
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let day = DAYS.get(tm.tm_wday as usize).copied().unwrap_or("???");
    let month = MONTHS.get(tm.tm_mon as usize).copied().unwrap_or("???");
    format!(
        "{day} {month} {:>2} {:02}:{:02}:{:02} {}",
        tm.tm_mday,
        tm.tm_hour,
        tm.tm_min,
        tm.tm_sec,
        tm.tm_year + 1900
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_buckets_are_cumulative() {
        use std::time::Duration;

        let h = Histogram::new();
        h.observe(Duration::from_millis(3));
        h.observe(Duration::from_secs(2));
        let snapshot = h.snapshot();
        assert_eq!(snapshot.count, 2);
        // Cumulative: 0.005 s and up hold the first, 2.5 s and up both.
        assert_eq!(snapshot.cumulative[3], 1);
        assert_eq!(snapshot.cumulative[11], 2);
        assert!((snapshot.sum_seconds - 2.003).abs() < 1e-6);
    }

    #[test]
    fn ctime_layout() {
        let s = super::ctime_now();
        assert_eq!(s.len(), 24, "{s}");
        assert_eq!(&s[3..4], " ");
        assert_eq!(&s[13..14], ":");
    }
}
