//! Which classes resolve natively, by `(module, name)` as records spell
//! their class.
//!
//! `BTrees` builds every family from one template: a module
//! `BTrees.<K><V>BTree` holds `<K><V>Bucket`, `<K><V>Set`, `<K><V>BTree`
//! and `<K><V>TreeSet`. Buckets and sets always merge; a BTree or TreeSet
//! merges only while it is a single bucket kept inline (its state then
//! wraps a bucket state), and refuses otherwise (reason 11). The `fs`
//! family stores its items as packed strings and is left to Python.

/// What a key or value of a family is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Datum {
    /// Any comparable Python object (`O`).
    Object,
    /// A signed 32-bit integer (`I`).
    Int32,
    /// A signed 64-bit integer (`L`).
    Int64,
    /// An unsigned 32-bit integer (`U`).
    UInt32,
    /// An unsigned 64-bit integer (`Q`).
    UInt64,
    /// A 32-bit float (`F`, values only).
    Float32,
}

impl Datum {
    fn from_letter(c: u8, value: bool) -> Option<Datum> {
        Some(match c {
            b'O' => Datum::Object,
            b'I' => Datum::Int32,
            b'L' => Datum::Int64,
            b'U' => Datum::UInt32,
            b'Q' => Datum::UInt64,
            b'F' if value => Datum::Float32,
            _ => return None,
        })
    }

    /// The inclusive range of an integer datum.
    pub(crate) fn int_range(self) -> Option<(i128, i128)> {
        match self {
            Datum::Int32 => Some((i32::MIN.into(), i32::MAX.into())),
            Datum::Int64 => Some((i64::MIN.into(), i64::MAX.into())),
            Datum::UInt32 => Some((0, u32::MAX.into())),
            Datum::UInt64 => Some((0, u64::MAX.into())),
            Datum::Object | Datum::Float32 => None,
        }
    }
}

/// The families `BTrees` ships, as `(key, value)` letters.
/// (There is no `OF`: object keys with float values are not built.)
pub const FAMILIES: [&str; 21] = [
    "OO", "OI", "OL", "OU", "OQ", "IO", "II", "IF", "IU", "LO", "LL", "LF", "LQ", "UO", "UI", "UF",
    "UU", "QO", "QL", "QF", "QQ",
];

/// The shape of a class's state and how it merges.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// `BTrees.Length.Length`: an integer; merged as `committed + new - old`.
    Length,
    /// `ZODB.tests.ConflictResolution.PCounter`, the resolvable class ZODB
    /// ships as its example (and that ZEO's undo tests use): an instance
    /// dictionary whose `_value` merges as Length's integer does, every
    /// other attribute kept from the old state.
    Counter,
    /// A bucket (`*Bucket`), or a BTree in its one-bucket form (`tree`).
    Bucket {
        /// Key type.
        key: Datum,
        /// Value type.
        value: Datum,
        /// Whether the class is the `*BTree` wrapping the bucket.
        tree: bool,
    },
    /// A set (`*Set`), or a TreeSet in its one-bucket form (`tree`).
    Set {
        /// Key type.
        key: Datum,
        /// Whether the class is the `*TreeSet` wrapping the set.
        tree: bool,
    },
}

/// The resolver for the class `module.name`, if there is one.
///
/// ```
/// use zeo_conflict::registry::{lookup, Datum, Kind};
///
/// assert_eq!(
///     lookup("BTrees.OOBTree", "OOBucket"),
///     Some(Kind::Bucket { key: Datum::Object, value: Datum::Object, tree: false })
/// );
/// assert_eq!(lookup("BTrees.Length", "Length"), Some(Kind::Length));
/// assert_eq!(lookup("ZODB.tests.ConflictResolution", "PCounter"), Some(Kind::Counter));
/// assert_eq!(lookup("ZODB.tests.ConflictResolution", "PCounter2"), None);
/// assert_eq!(lookup("persistent.mapping", "PersistentMapping"), None);
/// ```
pub fn lookup(module: &str, name: &str) -> Option<Kind> {
    match (module, name) {
        ("BTrees.Length", "Length") => return Some(Kind::Length),
        // Only PCounter itself: its subclasses in that module refuse or
        // fail to resolve on purpose.
        ("ZODB.tests.ConflictResolution", "PCounter") => return Some(Kind::Counter),
        _ => {}
    }
    let family = module.strip_prefix("BTrees.")?.strip_suffix("BTree")?;
    if !FAMILIES.contains(&family) {
        return None;
    }
    let [k, v] = family.as_bytes() else {
        return None;
    };
    let key = Datum::from_letter(*k, false)?;
    let value = Datum::from_letter(*v, true)?;
    match name.strip_prefix(family)? {
        "Bucket" => Some(Kind::Bucket {
            key,
            value,
            tree: false,
        }),
        "BTree" => Some(Kind::Bucket {
            key,
            value,
            tree: true,
        }),
        "Set" => Some(Kind::Set { key, tree: false }),
        "TreeSet" => Some(Kind::Set { key, tree: true }),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_family_and_flavour_is_known_and_fs_is_not() {
        for family in FAMILIES {
            for flavour in ["Bucket", "Set", "BTree", "TreeSet"] {
                let module = format!("BTrees.{family}BTree");
                let name = format!("{family}{flavour}");
                assert!(lookup(&module, &name).is_some(), "{module}.{name}");
            }
        }
        assert_eq!(lookup("BTrees.fsBTree", "fsBucket"), None);
        assert_eq!(lookup("BTrees.OFBTree", "OFBucket"), None);
        assert_eq!(lookup("BTrees.OOBTree", "IIBucket"), None);
        assert_eq!(lookup("BTrees.OOBTree", "OOBucketPy"), None);
    }
}
