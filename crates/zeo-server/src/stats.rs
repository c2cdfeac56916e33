//! Per-storage counters reported by `server_status` and `ruok`.

use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};

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
            start: ctime_now(),
        }
    }

    /// Adds one to a counter.
    pub fn bump(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
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
    #[test]
    fn ctime_layout() {
        let s = super::ctime_now();
        assert_eq!(s.len(), 24, "{s}");
        assert_eq!(&s[3..4], " ");
        assert_eq!(&s[13..14], ":");
    }
}
