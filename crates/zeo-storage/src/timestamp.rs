//! ZODB's `TimeStamp`: how a transaction id encodes the wall-clock time.
//!
//! The high 4 bytes count minutes since 1900-01-01 in a synthetic calendar of
//! twelve 31-day months; the low 4 bytes are the seconds within that minute
//! scaled so that 2^32 units make 60 seconds. The encoding is monotonic in
//! real time (gaps at short month ends), which is all ordering needs.

use std::fmt;
use std::time::{SystemTime, UNIX_EPOCH};

use crate::ids::Tid;

/// One unit of the low word, in seconds.
const SECOND_UNIT: f64 = 60.0 / 4_294_967_296.0;

/// A decoded transaction timestamp.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct TimeStamp(Tid);

impl TimeStamp {
    /// Wraps a tid.
    pub const fn from_tid(tid: Tid) -> Self {
        TimeStamp(tid)
    }

    /// The tid this timestamp encodes.
    pub const fn tid(self) -> Tid {
        self.0
    }

    /// Encodes a UTC calendar time. `second` may carry a fraction; it is
    /// truncated to the unit, as ZODB does.
    pub fn from_parts(
        year: i32,
        month: u32,
        day: u32,
        hour: u32,
        minute: u32,
        second: f64,
    ) -> Self {
        let years = i64::from(year) - 1900;
        let minutes = (((years * 12 + i64::from(month) - 1) * 31 + i64::from(day) - 1) * 24
            + i64::from(hour))
            * 60
            + i64::from(minute);
        let high = minutes.clamp(0, i64::from(u32::MAX)) as u64;
        let low = (second / SECOND_UNIT).clamp(0.0, f64::from(u32::MAX)) as u64;
        TimeStamp(Tid((high << 32) | low))
    }

    /// Encodes a POSIX time (seconds since 1970, UTC), the way
    /// `TimeStamp(*gmtime(t)[:5] + (t % 60,))` does.
    pub fn from_unix(t: f64) -> Self {
        let whole = t.floor();
        let secs = whole as i64;
        let days = secs.div_euclid(86_400);
        let in_day = secs.rem_euclid(86_400);
        let (year, month, day) = civil_from_days(days);
        let hour = (in_day / 3600) as u32;
        let minute = (in_day % 3600 / 60) as u32;
        let second = t.rem_euclid(60.0);
        Self::from_parts(year, month, day, hour, minute, second)
    }

    /// The current wall-clock time.
    pub fn now() -> Self {
        let t = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs_f64())
            .unwrap_or(0.0);
        Self::from_unix(t)
    }

    /// Year, month (1-12), day (1-31), hour, minute and fractional second.
    pub fn parts(self) -> (i32, u32, u32, u32, u32, f64) {
        let high = self.0 .0 >> 32;
        let low = self.0 .0 & 0xffff_ffff;
        let minute = (high % 60) as u32;
        let hour = (high / 60 % 24) as u32;
        let day = (high / 1440 % 31) as u32 + 1;
        let month = (high / 44_640 % 12) as u32 + 1;
        let year = (high / 535_680) as i32 + 1900;
        (year, month, day, hour, minute, low as f64 * SECOND_UNIT)
    }

    /// Seconds since the Unix epoch using the real calendar
    /// (`TimeStamp.timeTime()`).
    pub fn unix_time(self) -> f64 {
        let (year, month, day, hour, minute, second) = self.parts();
        let days = days_from_civil(year, month, day);
        (days * 86_400 + i64::from(hour) * 3600 + i64::from(minute) * 60) as f64 + second
    }

    /// The smallest timestamp that is both `>= self` and strictly later than
    /// `other`: ZODB's `laterThan`, which keeps tids increasing when the clock
    /// stalls or steps back.
    pub fn later_than(self, other: TimeStamp) -> TimeStamp {
        if self > other {
            return self;
        }
        let high = other.0 .0 >> 32;
        let low = other.0 .0 & 0xffff_ffff;
        if low < 0xffff_ffff {
            return TimeStamp(Tid((high << 32) | (low + 1)));
        }
        // The low word is exhausted: move to the next real minute, seconds 0.
        let (year, month, day, hour, minute, _) = other.parts();
        let t = days_from_civil(year, month, day) * 86_400
            + i64::from(hour) * 3600
            + i64::from(minute) * 60
            + 60;
        TimeStamp::from_unix(t as f64)
    }
}

impl fmt::Display for TimeStamp {
    /// The format of Python's `str(TimeStamp)`, e.g. `2026-11-25 11:18:20.479513`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (y, mo, d, h, mi, s) = self.parts();
        write!(f, "{y:04}-{mo:02}-{d:02} {h:02}:{mi:02}:{s:09.6}")
    }
}

impl fmt::Debug for TimeStamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "TimeStamp({self})")
    }
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's
/// algorithm).
fn days_from_civil(year: i32, month: u32, day: u32) -> i64 {
    let y = i64::from(year) - i64::from(month <= 2);
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let m = i64::from(month);
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + i64::from(day) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// The inverse of [`days_from_civil`].
fn civil_from_days(days: i64) -> (i32, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    ((y + i64::from(m <= 2)) as i32, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sample_tid_prints_like_fsdump() {
        let ts = TimeStamp::from_tid(Tid(0x040d_4066_5761_16cc));
        assert_eq!(ts.to_string(), "2026-11-25 11:18:20.479513");
    }

    #[test]
    fn unix_round_trip_within_one_unit() {
        for t in [
            0.0,
            1_000_000_000.5,
            1_764_069_500.479_513,
            4_102_444_799.999,
        ] {
            let ts = TimeStamp::from_unix(t);
            assert!(
                (ts.unix_time() - t).abs() < 1e-6,
                "{t} -> {}",
                ts.unix_time()
            );
        }
    }

    #[test]
    fn epoch_encodes_to_known_minutes() {
        let ts = TimeStamp::from_unix(0.0);
        assert_eq!(ts.parts().0, 1970);
        assert_eq!(ts.tid().0 >> 32, 70 * 12 * 31 * 24 * 60);
    }

    #[test]
    fn later_than_increments_low_word() {
        let a = TimeStamp::from_tid(Tid(0x0000_0001_0000_0005));
        let later = a.later_than(a);
        assert_eq!(later.tid(), Tid(0x0000_0001_0000_0006));
        let newer = TimeStamp::from_tid(Tid(0x0000_0002_0000_0000));
        assert_eq!(newer.later_than(a), newer);
    }

    #[test]
    fn later_than_rolls_over_the_minute_and_month() {
        // 2026-02-28 23:59 with an exhausted low word: next is 2026-03-01 00:00.
        let base = TimeStamp::from_parts(2026, 2, 28, 23, 59, 0.0).tid().0 | 0xffff_ffff;
        let next = TimeStamp::from_tid(Tid(base)).later_than(TimeStamp::from_tid(Tid(base)));
        assert_eq!(next.parts().0..=next.parts().0, 2026..=2026);
        assert_eq!((next.parts().1, next.parts().2, next.parts().3), (3, 1, 0));
        assert!(next.tid() > Tid(base));
    }
}
