//! ZODB records of the classes every database has, read and written the
//! way a Python application stores them.
//!
//! A ZODB record is two pickles: the class (usually a bare `GLOBAL`), then
//! the state `__getstate__` returned. [`Record`] holds both as [`Value`]s.
//! Constructors and accessors cover:
//!
//! * `persistent.mapping.PersistentMapping` (the root object of every
//!   database): state `{'data': {...}}`; records from old databases use
//!   `_container` instead of `data`, which reading accepts;
//! * `persistent.list.PersistentList`: state `{'data': [...]}`;
//! * `BTrees.OOBTree.OOBTree` / `OOBucket`, read only: [`bucket_items`] for
//!   one bucket's state, [`btree_items`] for a whole tree, loading its
//!   buckets through a closure.
//!
//! References to other persistent objects are [`Value::PersistentId`]s,
//! built with [`Value::persistent_ref`] and read with
//! [`Value::reference_oid`]. See `docs/rust-records.md` for a guide.
//!
//! ```
//! use zeo_pickle::zodb::{Record, PERSISTENT_LIST};
//! use zeo_pickle::Value;
//!
//! let mut root = Record::persistent_mapping([(Value::str("name"), Value::str("demo"))]);
//! root.mapping_set(Value::str("items"), Value::persistent_ref(7, Some(PERSISTENT_LIST.global())));
//! let bytes = root.encode()?;
//!
//! let back = Record::decode(&bytes)?;
//! assert!(back.is(zeo_pickle::zodb::PERSISTENT_MAPPING));
//! assert_eq!(back.mapping_get("name").and_then(Value::as_str), Some("demo"));
//! assert_eq!(back.mapping_get("items").and_then(Value::reference_oid), Some(7));
//! # Ok::<(), zeo_pickle::Error>(())
//! ```

use std::collections::HashSet;

use crate::decode::Decoder;
use crate::error::Error;
use crate::record::encode_record;
use crate::value::Value;

/// A Python class named by module and name.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct ClassName {
    /// The module, e.g. `persistent.mapping`.
    pub module: &'static str,
    /// The class name, e.g. `PersistentMapping`.
    pub name: &'static str,
}

impl ClassName {
    /// The `GLOBAL` that names the class in a pickle.
    pub fn global(self) -> Value {
        Value::global(self.module, self.name)
    }
}

/// `persistent.mapping.PersistentMapping`, the class of the root object.
pub const PERSISTENT_MAPPING: ClassName = ClassName {
    module: "persistent.mapping",
    name: "PersistentMapping",
};

/// `persistent.list.PersistentList`.
pub const PERSISTENT_LIST: ClassName = ClassName {
    module: "persistent.list",
    name: "PersistentList",
};

/// `BTrees.OOBTree.OOBTree`.
pub const OOBTREE: ClassName = ClassName {
    module: "BTrees.OOBTree",
    name: "OOBTree",
};

/// `BTrees.OOBTree.OOBucket`, the leaves of an [`OOBTREE`].
pub const OOBUCKET: ClassName = ClassName {
    module: "BTrees.OOBTree",
    name: "OOBucket",
};

/// Default for the `max_items` of [`btree_items`]: large trees should be
/// read bucket by bucket instead.
pub const DEFAULT_MAX_BTREE_ITEMS: usize = 1_000_000;

/// `(key, value)` pairs, in order.
pub type Items = Vec<(Value, Value)>;

/// One ZODB object record: its class pickle and its state pickle.
#[derive(Clone, Debug, PartialEq)]
pub struct Record {
    /// The class metadata: the class itself (a [`Value::Global`]), or
    /// `(class, args)` for classes with `__getnewargs__`.
    pub class: Value,
    /// The object's state, as its `__getstate__` returned it.
    pub state: Value,
}

fn shape(message: impl Into<String>) -> Error {
    Error::Shape(message.into())
}

impl Record {
    /// A record of `class` with `state`.
    pub fn new(class: ClassName, state: Value) -> Record {
        Record {
            class: class.global(),
            state,
        }
    }

    /// Reads a record (both pickles, one memo). The input must hold exactly
    /// the two pickles.
    ///
    /// # Errors
    ///
    /// Any decoding error, or [`Error::TrailingData`] after the state.
    pub fn decode(data: &[u8]) -> Result<Record, Error> {
        let mut d = Decoder::new(data);
        let class = d.next_pickle()?;
        let state = d.next_pickle()?;
        if !d.is_at_end() {
            return Err(Error::TrailingData {
                offset: d.position(),
            });
        }
        Ok(Record { class, state })
    }

    /// Writes the record as ZODB does (see [`encode_record`]).
    ///
    /// # Errors
    ///
    /// A value protocol 3 cannot express.
    pub fn encode(&self) -> Result<Vec<u8>, Error> {
        encode_record(&self.class, &self.state)
    }

    /// The `(module, name)` of the record's class, in any of the forms
    /// ZODB writes the class metadata in.
    pub fn class_name(&self) -> Option<(&str, &str)> {
        let class = match &self.class {
            Value::Tuple(items) => items.first()?,
            other => other,
        };
        match class {
            Value::Global { module, name } => Some((module, name)),
            Value::Tuple(pair) => match pair.as_slice() {
                [Value::Str(module), Value::Str(name)] => Some((module, name)),
                _ => None,
            },
            _ => None,
        }
    }

    /// Whether the record's class is `class`.
    pub fn is(&self, class: ClassName) -> bool {
        self.class_name() == Some((class.module, class.name))
    }

    /// A `PersistentMapping` holding `items`, in order.
    pub fn persistent_mapping(items: impl IntoIterator<Item = (Value, Value)>) -> Record {
        let data = Value::Dict(items.into_iter().collect());
        Record::new(
            PERSISTENT_MAPPING,
            Value::Dict(vec![(Value::str("data"), data)]),
        )
    }

    /// A `PersistentList` holding `items`.
    pub fn persistent_list(items: impl IntoIterator<Item = Value>) -> Record {
        let data = Value::List(items.into_iter().collect());
        Record::new(
            PERSISTENT_LIST,
            Value::Dict(vec![(Value::str("data"), data)]),
        )
    }

    fn data_slot(&self, keys: &[&str]) -> Option<&Value> {
        keys.iter().find_map(|k| self.state.get(k))
    }

    fn data_slot_mut(&mut self, keys: &[&str]) -> Option<&mut Value> {
        let Value::Dict(entries) = &mut self.state else {
            return None;
        };
        entries
            .iter_mut()
            .rev()
            .find(|(k, _)| k.as_str().is_some_and(|k| keys.contains(&k)))
            .map(|(_, v)| v)
    }

    /// The items of a mapping record: the dict under `data` (or the older
    /// `_container`) in its state. Any class with that state shape is
    /// accepted, so subclasses of `PersistentMapping` read too.
    ///
    /// # Errors
    ///
    /// [`Error::Shape`] when the state has no such dict.
    pub fn mapping_items(&self) -> Result<&[(Value, Value)], Error> {
        self.data_slot(&["data", "_container"])
            .and_then(Value::as_dict)
            .ok_or_else(|| self.not_a("mapping ({'data': {...}})"))
    }

    /// The value under the string key `key` of a mapping record.
    pub fn mapping_get(&self, key: &str) -> Option<&Value> {
        self.mapping_items()
            .ok()?
            .iter()
            .rev()
            .find(|(k, _)| k.as_str() == Some(key))
            .map(|(_, v)| v)
    }

    /// Sets `key` to `value` in a mapping record, replacing an equal key
    /// or appending.
    ///
    /// # Errors
    ///
    /// [`Error::Shape`] when the record is not a mapping.
    pub fn try_mapping_set(&mut self, key: Value, value: Value) -> Result<(), Error> {
        let err = self.not_a("mapping ({'data': {...}})");
        let Some(Value::Dict(items)) = self.data_slot_mut(&["data", "_container"]) else {
            return Err(err);
        };
        match items.iter_mut().rev().find(|(k, _)| *k == key) {
            Some(slot) => slot.1 = value,
            None => items.push((key, value)),
        }
        Ok(())
    }

    /// [`Record::try_mapping_set`] for records built with
    /// [`Record::persistent_mapping`].
    ///
    /// # Panics
    ///
    /// When the record is not a mapping.
    pub fn mapping_set(&mut self, key: Value, value: Value) {
        if let Err(e) = self.try_mapping_set(key, value) {
            panic!("{e}");
        }
    }

    /// The items of a list record: the list under `data` in its state.
    ///
    /// # Errors
    ///
    /// [`Error::Shape`] when the state has no such list.
    pub fn list_items(&self) -> Result<&[Value], Error> {
        self.data_slot(&["data"])
            .and_then(Value::as_list)
            .ok_or_else(|| self.not_a("list ({'data': [...]})"))
    }

    /// The list of a list record, to change in place.
    ///
    /// # Errors
    ///
    /// [`Error::Shape`] when the state has no such list.
    pub fn list_items_mut(&mut self) -> Result<&mut Vec<Value>, Error> {
        let err = self.not_a("list ({'data': [...]})");
        match self.data_slot_mut(&["data"]) {
            Some(Value::List(items)) => Ok(items),
            _ => Err(err),
        }
    }

    fn not_a(&self, what: &str) -> Error {
        let class = match self.class_name() {
            Some((m, n)) => format!("{m}.{n}"),
            None => format!("a class given as {}", self.class.type_name()),
        };
        shape(format!(
            "record of {class} with a {} state is not a {what}",
            self.state.type_name()
        ))
    }
}

impl Value {
    /// The oid a persistent reference points at: `(oid, class)` or a bare
    /// 8-byte oid, as ZODB writes them. `None` for anything else,
    /// including weak and cross-database references.
    pub fn reference_oid(&self) -> Option<u64> {
        let Value::PersistentId(id) = self else {
            return None;
        };
        let oid = match id.as_ref() {
            Value::Tuple(items) => items.first()?,
            other => other,
        };
        let bytes: [u8; 8] = oid.as_bytes()?.try_into().ok()?;
        Some(u64::from_be_bytes(bytes))
    }

    /// The `(module, name)` of the class a persistent reference names, when
    /// it names one.
    pub fn reference_class(&self) -> Option<(&str, &str)> {
        let Value::PersistentId(id) = self else {
            return None;
        };
        match id.as_tuple()? {
            [_, Value::Global { module, name }] => Some((module, name)),
            _ => None,
        }
    }
}

/// The `(key, value)` pairs of an `OOBucket` state (`((k1, v1, k2, v2,
/// ...),)`, with the next bucket's reference as a second item when the
/// bucket belongs to a larger tree), and the oid of that next bucket.
///
/// # Errors
///
/// [`Error::Shape`] for any other state.
pub fn bucket_items(state: &Value) -> Result<(Items, Option<u64>), Error> {
    let bad = || shape(format!("not an OOBucket state: {}", state.type_name()));
    let (flat, next) = match state {
        Value::None => return Ok((Vec::new(), None)),
        Value::Tuple(parts) => match parts.as_slice() {
            [flat] => (flat, None),
            [flat, next] => (
                flat,
                Some(
                    next.reference_oid()
                        .ok_or_else(|| shape("OOBucket next is not a reference"))?,
                ),
            ),
            _ => return Err(bad()),
        },
        _ => return Err(bad()),
    };
    let flat = flat.as_tuple().ok_or_else(bad)?;
    if flat.len() % 2 != 0 {
        return Err(shape("OOBucket state has an odd number of items"));
    }
    let items = flat
        .chunks_exact(2)
        .map(|kv| (kv[0].clone(), kv[1].clone()))
        .collect();
    Ok((items, next))
}

/// All `(key, value)` pairs of an `OOBTree`, in key order, given the tree
/// record's state and `load`, which returns the record stored under an oid
/// (e.g. a client's `load`).
///
/// A small tree keeps its one bucket inline and needs no load. A larger one
/// names its first bucket; the walk follows the chain of buckets
/// iteratively, each bucket loaded once, and stops with
/// [`Error::LimitExceeded`] past `max_items` pairs or as many buckets (see
/// [`DEFAULT_MAX_BTREE_ITEMS`]), or with [`Error::Shape`] if the chain
/// loops. [`BTreeWalk`] is the same walk for callers whose loads cannot be
/// a closure (async code).
///
/// # Errors
///
/// What `load` returned, decoding errors of the bucket records, and the
/// limits above.
pub fn btree_items<E: From<Error>>(
    state: &Value,
    max_items: usize,
    mut load: impl FnMut(u64) -> Result<Vec<u8>, E>,
) -> Result<Items, E> {
    let mut walk = BTreeWalk::new(state, max_items)?;
    while let Some(oid) = walk.next_bucket() {
        walk.feed(&load(oid)?)?;
    }
    Ok(walk.into_items())
}

/// An `OOBTree` read bucket by bucket: ask [`BTreeWalk::next_bucket`] for
/// the oid to load, give its record to [`BTreeWalk::feed`], until there is
/// none; then [`BTreeWalk::into_items`]. Limits and checks as
/// [`btree_items`].
///
/// ```
/// use zeo_pickle::zodb::{BTreeWalk, Record, OOBUCKET};
/// use zeo_pickle::Value;
///
/// // A tree whose first (and only) bucket is object 5.
/// let tree = Value::Tuple(vec![
///     Value::Tuple(vec![Value::persistent_ref(5, None)]),
///     Value::persistent_ref(5, None),
/// ]);
/// let bucket = Record::new(OOBUCKET, Value::Tuple(vec![Value::Tuple(vec!["k".into(), 1.into()])]));
/// let mut walk = BTreeWalk::new(&tree, 100)?;
/// while let Some(oid) = walk.next_bucket() {
///     assert_eq!(oid, 5);
///     walk.feed(&bucket.encode()?)?;
/// }
/// assert_eq!(walk.into_items(), [(Value::str("k"), Value::Int(1))]);
/// # Ok::<(), zeo_pickle::Error>(())
/// ```
#[derive(Debug)]
pub struct BTreeWalk {
    items: Items,
    next: Option<u64>,
    seen: HashSet<u64>,
    max_items: usize,
}

impl BTreeWalk {
    /// Starts reading the tree whose record state is `state`.
    ///
    /// # Errors
    ///
    /// [`Error::Shape`] for a state that is not an `OOBTree`'s, or the
    /// item limit for an inline bucket.
    pub fn new(state: &Value, max_items: usize) -> Result<BTreeWalk, Error> {
        let mut walk = BTreeWalk {
            items: Items::new(),
            next: None,
            seen: HashSet::new(),
            max_items,
        };
        match state {
            Value::None => {}
            Value::Tuple(parts) => match parts.as_slice() {
                // A single bucket saved inline: `((bucket_state,),)`.
                [inline] => match inline.as_tuple() {
                    Some([bucket]) => {
                        let (items, _) = bucket_items(bucket)?;
                        check_items(items.len(), max_items)?;
                        walk.items = items;
                    }
                    _ => return Err(shape("OOBTree inline state is not ((bucket,),)")),
                },
                // `(children, first_bucket)`.
                [_, first] => {
                    walk.next = Some(
                        first
                            .reference_oid()
                            .ok_or_else(|| shape("OOBTree first bucket is not a reference"))?,
                    );
                }
                _ => return Err(shape("not an OOBTree state")),
            },
            other => {
                return Err(shape(format!(
                    "not an OOBTree state: {}",
                    other.type_name()
                )))
            }
        }
        Ok(walk)
    }

    /// The oid of the bucket to load next, if any.
    pub fn next_bucket(&self) -> Option<u64> {
        self.next
    }

    /// Takes in the record of the bucket [`BTreeWalk::next_bucket`] named.
    ///
    /// # Errors
    ///
    /// A record that is not a bucket, a chain that loops, the limits.
    pub fn feed(&mut self, record: &[u8]) -> Result<(), Error> {
        let Some(oid) = self.next.take() else {
            return Err(shape("OOBTree walk fed a bucket it did not ask for"));
        };
        if !self.seen.insert(oid) {
            return Err(shape(format!("OOBTree bucket chain loops at oid {oid:#x}")));
        }
        if self.seen.len() > self.max_items.max(1) {
            return Err(limit(format!(
                "OOBTree buckets: more than {}",
                self.max_items
            )));
        }
        let record = Record::decode(record)?;
        let (items, following) = bucket_items(&record.state)?;
        check_items(self.items.len().saturating_add(items.len()), self.max_items)?;
        self.items.extend(items);
        self.next = following;
        Ok(())
    }

    /// The pairs read so far (all of them once no bucket is left).
    pub fn into_items(self) -> Items {
        self.items
    }
}

fn check_items(n: usize, max: usize) -> Result<(), Error> {
    if n > max {
        return Err(limit(format!("OOBTree items: more than {max}")));
    }
    Ok(())
}

fn limit(what: String) -> Error {
    Error::LimitExceeded { offset: 0, what }
}
