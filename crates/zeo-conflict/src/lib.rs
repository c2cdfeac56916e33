//! Native conflict resolution for the ZODB classes that resolve conflicts
//! in practice: the `BTrees` buckets and sets of every family, BTrees and
//! TreeSets while they are a single inline bucket, `BTrees.Length.Length`,
//! and the counter ZODB ships as its example of a resolvable class
//! (`ZODB.tests.ConflictResolution.PCounter`).
//!
//! When two transactions change one object, ZODB asks the object's class
//! (`_p_resolveConflict`) to merge the old state with the two new ones,
//! and re-pickles the result. [`resolve`] does the same for the classes
//! [`registry::lookup`] knows, with no Python and no I/O: its output is
//! byte for byte the record ZODB's `tryToResolveConflict` writes, and
//! where Python refuses, it refuses with the same `BTreesConflictError`
//! reason. Anything else — another class, or a state holding objects this
//! crate does not model — is an [`Error`] saying so, and the caller keeps
//! its usual path (sending the conflict to a client that runs the class's
//! own code).
//!
//! Records are untrusted: they are decoded with `zeo-pickle`'s bounded
//! decoder into flat object graphs, and comparing and writing objects
//! bound their depth and work.
//!
//! ```
//! use zeo_conflict::resolve;
//! use zeo_pickle::{encode_record, Value};
//!
//! // A BTrees.Length.Length at 10; one transaction adds 1, another 5.
//! let class = Value::global("BTrees.Length", "Length");
//! let record = |n: i64| encode_record(&class, &Value::Int(n)).unwrap();
//! let merged = resolve(&record(10), &record(11), &record(15))?;
//! assert_eq!(merged, record(16));
//! # Ok::<(), zeo_conflict::Error>(())
//! ```
#![warn(missing_docs)]

mod error;
mod merge;
mod objects;
pub mod registry;
mod writer;

pub use error::Error;
pub use objects::MAX_RECORD;
pub use registry::{lookup, Kind};

use merge::{merge, Bucket};
use objects::{Obj, Records, COMMITTED, NEW, OLD};
use writer::{Out, Writer};
use zeo_pickle::graph::{GraphNode, Slot};

/// The `(module, name)` of the class a record's class pickle names, when
/// it is spelled as a global (`cls`, or `(cls, args)` as ZODB writes for
/// classes with constructor arguments).
pub fn record_class(record: &[u8]) -> Option<(String, String)> {
    zeo_pickle::class_of(record)
}

/// Whether records of `module.name` are resolved natively.
pub fn resolves(module: &str, name: &str) -> bool {
    lookup(module, name).is_some()
}

/// Resolves a write conflict: `old` is the record both transactions
/// started from, `committed` the one already committed, `new` the one
/// being stored (each a full ZODB record: class pickle, then state). On
/// success the merged record, as ZODB would store it.
pub fn resolve(old: &[u8], committed: &[u8], new: &[u8]) -> Result<Vec<u8>, Error> {
    let (module, name) = record_class(new)
        .ok_or_else(|| Error::Unsupported("class pickle that names no class".into()))?;
    let kind = lookup(&module, &name).ok_or(Error::UnknownClass { module, name })?;
    let records = Records::decode(old, committed, new)?;
    let meta = records.root(NEW, 0);
    check_meta(&records, meta)?;
    let state = |record| records.root(record, 1);
    let merged = match kind {
        Kind::Length => length(&records, state(OLD), state(COMMITTED), state(NEW))?,
        Kind::Counter => counter(&records, state(OLD), state(COMMITTED), state(NEW))?,
        Kind::Bucket { key, value, tree } => bucket_kind(&records, key, Some(value), tree, state)?,
        Kind::Set { key, tree } => bucket_kind(&records, key, None, tree, state)?,
    };
    let mut writer = Writer::new(&records);
    writer.dump(&Out::Obj(meta))?;
    writer.dump(&merged)?;
    Ok(writer.into_bytes())
}

/// The class pickle ZODB re-uses must be the class, or `(class, None)`
/// where the class may also be spelled `(module, name)`, as ZODB's test
/// helper `zodb_pickle` writes it.
fn check_meta(records: &Records, meta: Obj) -> Result<(), Error> {
    match records.node(meta) {
        Some(GraphNode::Global { .. }) => Ok(()),
        Some(GraphNode::Tuple(items)) => match items.as_slice() {
            [class, Slot::None] => match records.node(Obj {
                record: NEW,
                slot: *class,
            }) {
                Some(GraphNode::Global { .. }) => Ok(()),
                Some(GraphNode::Tuple(names))
                    if names.len() == 2
                        && names.iter().all(|slot| {
                            matches!(
                                records.node(Obj {
                                    record: NEW,
                                    slot: *slot
                                }),
                                Some(GraphNode::Str(_))
                            )
                        }) =>
                {
                    Ok(())
                }
                _ => Err(Error::Unsupported("class pickle form".into())),
            },
            _ => Err(Error::Unsupported("class pickle with arguments".into())),
        },
        _ => Err(Error::Unsupported("class pickle form".into())),
    }
}

/// `Length._p_resolveConflict`: `committed + new - old`.
fn length(records: &Records, old: Obj, committed: Obj, new: Obj) -> Result<Out, Error> {
    let count = |obj| count(records, obj, "length");
    merged_count(count(old)?, count(committed)?, count(new)?, "length").map(Out::Int)
}

/// `PCounter._p_resolveConflict`: the old state with its `_value` set to
/// `old + (committed - old) + (new - old)`. A state without `_value` is
/// Python's `KeyError`: a refusal.
fn counter(records: &Records, old: Obj, committed: Obj, new: Obj) -> Result<Out, Error> {
    let old_attributes = attributes(records, old)?;
    let value = |attributes: &[(String, Obj, Obj)]| -> Result<i128, Error> {
        let (_, _, found) = attributes
            .iter()
            .find(|(name, _, _)| name == "_value")
            .ok_or_else(|| Error::Refused("KeyError: '_value'".into()))?;
        count(records, *found, "counter")
    };
    let merged = merged_count(
        value(&old_attributes)?,
        value(&attributes(records, committed)?)?,
        value(&attributes(records, new)?)?,
        "counter",
    )?;
    // Python assigns into the old state's dict: every key keeps its place.
    let items = old_attributes
        .into_iter()
        .map(|(name, key, value)| {
            let value = if name == "_value" {
                Out::Int(merged)
            } else {
                Out::Obj(value)
            };
            (Out::Obj(key), value)
        })
        .collect();
    Ok(Out::Dict(items))
}

/// An integer count (`what`: Length's state, PCounter's `_value`); a float
/// or anything else is not merged here.
fn count(records: &Records, obj: Obj, what: &str) -> Result<i128, Error> {
    if records.is_float(obj) {
        return Err(Error::Unsupported(format!("float {what}")));
    }
    records
        .int(obj)?
        .ok_or_else(|| Error::Unsupported(format!("{what} that is not an integer")))
}

/// `committed + new - old`, the merge of both counters.
fn merged_count(old: i128, committed: i128, new: i128, what: &str) -> Result<i128, Error> {
    committed
        .checked_add(new)
        .and_then(|s| s.checked_sub(old))
        .ok_or_else(|| Error::Unsupported(format!("{what} beyond 128 bits")))
}

/// An instance dictionary's `(name, key, value)` triples in order; names
/// must be distinct strings, as attribute names are.
fn attributes(records: &Records, state: Obj) -> Result<Vec<(String, Obj, Obj)>, Error> {
    let Some(GraphNode::Dict(pairs)) = records.node(state) else {
        return Err(Error::Unsupported("state that is not a dict".into()));
    };
    let at = |slot: Slot| Obj {
        record: state.record,
        slot,
    };
    let mut out: Vec<(String, Obj, Obj)> = Vec::with_capacity(pairs.len());
    for (key, value) in pairs {
        let Some(GraphNode::Str(name)) = records.node(at(*key)) else {
            return Err(Error::Unsupported(
                "attribute name that is not a str".into(),
            ));
        };
        if out.iter().any(|(seen, _, _)| seen == name) {
            return Err(Error::Unsupported("attribute set twice".into()));
        }
        out.push((name.clone(), at(*key), at(*value)));
    }
    Ok(out)
}

fn bucket_kind(
    records: &Records,
    key: registry::Datum,
    value: Option<registry::Datum>,
    tree: bool,
    state: impl Fn(usize) -> Obj,
) -> Result<Out, Error> {
    let mut buckets = Vec::with_capacity(3);
    for record in [OLD, COMMITTED, NEW] {
        let s = if tree {
            tree_bucket_state(records, state(record))?
        } else {
            state(record)
        };
        buckets.push(Bucket::read(records, s, key, value)?);
    }
    let merged = merge(records, &buckets[0], &buckets[1], &buckets[2])?.state();
    Ok(if tree {
        Out::Tuple(vec![Out::Tuple(vec![merged])])
    } else {
        merged
    })
}

/// The bucket state inside a BTree or TreeSet state `((bucket_state,),)`;
/// a tree of more than one bucket refuses (reason 11).
fn tree_bucket_state(records: &Records, state: Obj) -> Result<Obj, Error> {
    if state.slot == Slot::None {
        return Ok(state);
    }
    let outer: Vec<Obj> = records
        .tuple(state)
        .ok_or_else(|| Error::Refused("expected tuple or None for state".into()))?
        .collect();
    match outer.as_slice() {
        [_, _] => Err(Error::merge([-1; 3], 11)),
        [inner] => {
            let inner: Vec<Obj> = records
                .tuple(*inner)
                .ok_or_else(|| Error::Refused("expected 1-tuple containing bucket state".into()))?
                .collect();
            match inner.as_slice() {
                [bucket] if records.tuple(*bucket).is_some() => Ok(*bucket),
                [_] => Err(Error::Refused("expected tuple for bucket state".into())),
                _ => Err(Error::Refused(
                    "expected 1-tuple containing bucket state".into(),
                )),
            }
        }
        _ => Err(Error::Refused("expected 1- or 2-tuple for state".into())),
    }
}
