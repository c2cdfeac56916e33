//! Why a conflict was not resolved.

/// Why [`crate::resolve`] returned no merged record. Every variant means
/// "not resolved here"; the variants say whether Python would have
/// refused too ([`Error::BTreesConflict`], [`Error::Refused`]) or whether
/// the record is outside what this crate models, so that resolving it is
/// left to a peer that runs the class's own Python code
/// ([`Error::UnknownClass`], [`Error::Unsupported`]).
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum Error {
    /// The record's class has no native resolver.
    #[error("no native conflict resolution for class {module}.{name}")]
    UnknownClass {
        /// Module of the class.
        module: String,
        /// Name of the class.
        name: String,
    },
    /// The merge rules refuse the three states: Python raises
    /// `BTreesConflictError(p1, p2, p3, reason)` with these numbers.
    #[error("BTrees conflict, reason {reason} at positions {positions:?}")]
    BTreesConflict {
        /// Positions of the old, committed and new iterations (`-1` when
        /// the refusal concerns the whole bucket).
        positions: [i64; 3],
        /// The reason number `BTrees.Interfaces` documents.
        reason: i64,
    },
    /// Python would raise another exception (a key that cannot be
    /// compared, a malformed state), which ZODB turns into a conflict.
    #[error("conflict not resolvable: {0}")]
    Refused(String),
    /// The states hold something this crate does not model (an object
    /// value built by a class call, a dict, a Python 2 byte string...), so
    /// it cannot promise ZODB's result byte for byte.
    #[error("state not handled natively: {0}")]
    Unsupported(String),
    /// A record is not a readable pickle within the decoder's limits.
    #[error("conflict record: {0}")]
    Pickle(#[from] zeo_pickle::Error),
}

impl Error {
    /// Whether Python, running the class's own `_p_resolveConflict`,
    /// would refuse these states too (as opposed to this crate not
    /// handling them).
    pub fn is_refusal(&self) -> bool {
        matches!(self, Error::BTreesConflict { .. } | Error::Refused(_))
    }

    pub(crate) fn merge(positions: [i64; 3], reason: i64) -> Error {
        Error::BTreesConflict { positions, reason }
    }
}
