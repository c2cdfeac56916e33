//! Object and transaction identifiers.
//!
//! Both are 8 raw bytes that ZODB compares bytewise, which is the same as
//! comparing them as unsigned big-endian integers; storing the integer keeps
//! ordering, hashing and arithmetic cheap while `to_bytes` gives the wire and
//! file form.

use std::fmt;

use crate::timestamp::TimeStamp;

/// An object id. Oid 0 is the database root.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Oid(pub u64);

/// A transaction id (also called a serial when it names an object revision).
///
/// The bytes are a ZODB `TimeStamp`; see [`TimeStamp`] for the encoding.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Tid(pub u64);

macro_rules! id_common {
    ($ty:ident) => {
        impl $ty {
            /// The all-zero id (`z64` in ZODB).
            pub const ZERO: $ty = $ty(0);

            /// Builds the id from its 8-byte big-endian form.
            pub const fn from_bytes(bytes: [u8; 8]) -> Self {
                $ty(u64::from_be_bytes(bytes))
            }

            /// Builds the id from a slice that must be exactly 8 bytes long.
            pub fn from_slice(bytes: &[u8]) -> Option<Self> {
                <[u8; 8]>::try_from(bytes).ok().map(Self::from_bytes)
            }

            /// The 8-byte big-endian form used on disk and on the wire.
            pub const fn to_bytes(self) -> [u8; 8] {
                self.0.to_be_bytes()
            }

            /// The id as an unsigned integer (`u64` in ZODB's `utils`).
            pub const fn as_u64(self) -> u64 {
                self.0
            }
        }

        impl fmt::Debug for $ty {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, concat!(stringify!($ty), "(0x{:016x})"), self.0)
            }
        }

        impl fmt::Display for $ty {
            /// ZODB prints ids as `0x` followed by the hex of the integer.
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "0x{:016x}", self.0)
            }
        }

        impl fmt::LowerHex for $ty {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                fmt::LowerHex::fmt(&self.0, f)
            }
        }

        impl From<[u8; 8]> for $ty {
            fn from(bytes: [u8; 8]) -> Self {
                Self::from_bytes(bytes)
            }
        }

        impl From<$ty> for [u8; 8] {
            fn from(id: $ty) -> Self {
                id.to_bytes()
            }
        }
    };
}

id_common!(Oid);
id_common!(Tid);

impl Oid {
    /// The root object's id.
    pub const ROOT: Oid = Oid(0);
}

impl Tid {
    /// The largest tid a client may ask to load before (`maxtid` in ZEO):
    /// the high bit stays clear because Python code treats tids as signed.
    pub const MAX: Tid = Tid(0x7fff_ffff_ffff_ffff);

    /// The tid as a ZODB timestamp.
    pub fn timestamp(self) -> TimeStamp {
        TimeStamp::from_tid(self)
    }

    /// Seconds since the Unix epoch, as `TimeStamp.timeTime()` computes them.
    pub fn unix_time(self) -> f64 {
        self.timestamp().unix_time()
    }

    /// The tid right after this one: what ZODB's `p64(u64(tid) + 1)` gives.
    pub fn next(self) -> Tid {
        Tid(self.0.saturating_add(1))
    }
}
