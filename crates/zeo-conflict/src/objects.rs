//! The objects of the three records, as Python sees them while resolving:
//! their identity (what the pickler memoizes), the persistent references
//! ZODB's reference factory shares between the records, and Python's
//! comparison rules for the object kinds bucket keys and values use.

use std::cmp::Ordering;

use zeo_pickle::graph::{decode_graph, Graph, GraphNode, Slot};

use crate::error::Error;

/// Index of the old state's record in [`Records`].
pub(crate) const OLD: usize = 0;
/// Index of the committed state's record.
pub(crate) const COMMITTED: usize = 1;
/// Index of the new state's record (whose class pickle is re-used).
pub(crate) const NEW: usize = 2;

/// Deepest tuple nesting compared or written; deeper states are left to
/// Python rather than walked.
const MAX_DEPTH: usize = 100;
/// Most element comparisons one resolution may make (tuples of shared
/// tuples can make comparing cost more than the input's size). Real merges
/// of buckets of a few dozen items make a few thousand; the bound keeps a
/// hostile one to a fraction of a second on the thread running the vote.
const MAX_STEPS: usize = 1 << 20;
/// Working memory the decoder may use per input byte, on top of a fixed
/// allowance.
const WORK_PER_BYTE: usize = 128;
/// Largest record resolved here: buckets hold a few dozen items, and a
/// bigger record is left to the client rather than decoded under the
/// commit lock with a working memory of up to `WORK_PER_BYTE` times it.
pub const MAX_RECORD: usize = 1 << 20;

/// One object of one of the three records.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Obj {
    pub(crate) record: usize,
    pub(crate) slot: Slot,
}

/// What the pickler memoizes an object by: the object's identity. Objects
/// CPython shares process-wide (the empty and one-character strings and
/// bytes, classes, persistent references from ZODB's reference factory)
/// are keyed by what makes them the same object.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) enum Ident {
    Node(usize, usize),
    Str(String),
    Bytes(Vec<u8>),
    Class(String, String),
    RefData(RefKey),
    RefOid(RefKey),
}

/// The key ZODB's `PersistentReferenceFactory` shares references by.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) enum RefKey {
    /// `(oid, class)` with the class as a global.
    Pair(Vec<u8>, String, String),
    /// A bare oid.
    Bare(Vec<u8>),
}

/// The kinds of object merges compare.
enum Kind<'r> {
    None,
    Num(Num),
    Str(&'r str),
    Bytes(&'r [u8]),
    /// A tuple (`list: false`) or a list: both compare item by item.
    Seq {
        list: bool,
        items: &'r [Slot],
    },
    Ref(RefKey),
}

#[derive(Clone, Copy)]
enum Num {
    Int(i128),
    Float(f64),
}

/// The three records, decoded as object graphs.
pub(crate) struct Records {
    graphs: [Graph; 3],
    steps: std::cell::Cell<usize>,
}

impl Records {
    /// Decodes the old, committed and new records (class and state
    /// pickle each).
    pub(crate) fn decode(old: &[u8], committed: &[u8], new: &[u8]) -> Result<Records, Error> {
        let one = |data: &[u8]| -> Result<Graph, Error> {
            if data.len() > MAX_RECORD {
                return Err(Error::Unsupported(format!(
                    "record of {} bytes (over {MAX_RECORD})",
                    data.len()
                )));
            }
            let work = (1usize << 20).saturating_add(data.len().saturating_mul(WORK_PER_BYTE));
            let g = decode_graph(data, 2, work)?;
            if g.has_py2_strings() {
                return Err(Error::Unsupported("Python 2 byte strings".into()));
            }
            Ok(g)
        };
        Ok(Records {
            graphs: [one(old)?, one(committed)?, one(new)?],
            steps: std::cell::Cell::new(0),
        })
    }

    /// The class pickle (`which = 0`) or state (`1`) of a record.
    pub(crate) fn root(&self, record: usize, which: usize) -> Obj {
        Obj {
            record,
            slot: self.graphs[record].roots()[which],
        }
    }

    pub(crate) fn node(&self, obj: Obj) -> Option<&GraphNode> {
        match obj.slot {
            Slot::Node(i) => self.graphs[obj.record].node(i),
            _ => None,
        }
    }

    /// The items of a tuple, as objects of the same record.
    pub(crate) fn tuple(&self, obj: Obj) -> Option<impl ExactSizeIterator<Item = Obj> + '_> {
        match self.node(obj)? {
            GraphNode::Tuple(items) => Some(items.iter().map(move |&slot| Obj {
                record: obj.record,
                slot,
            })),
            _ => None,
        }
    }

    /// The pickler's memo key for the object, `None` for objects it never
    /// memoizes (scalars, integers, floats).
    pub(crate) fn ident(&self, obj: Obj) -> Result<Option<Ident>, Error> {
        let Slot::Node(i) = obj.slot else {
            return Ok(None);
        };
        Ok(match self.node(obj) {
            Some(GraphNode::BigInt(_)) => None,
            Some(GraphNode::Str(s))
                if s.chars().count() <= 1 && s.chars().all(|c| c < '\u{100}') =>
            {
                Some(Ident::Str(s.clone()))
            }
            Some(GraphNode::Bytes(b)) if b.len() <= 1 => Some(Ident::Bytes(b.clone())),
            Some(GraphNode::Global { module, name }) => {
                Some(Ident::Class(module.clone(), name.clone()))
            }
            Some(GraphNode::PersistentId(_)) => Some(Ident::RefData(self.ref_key(obj)?)),
            _ => Some(Ident::Node(obj.record, i)),
        })
    }

    /// The factory key of a persistent reference node.
    pub(crate) fn ref_key(&self, obj: Obj) -> Result<RefKey, Error> {
        let Some(GraphNode::PersistentId(pid)) = self.node(obj) else {
            return Err(Error::Unsupported("not a persistent reference".into()));
        };
        let pid = Obj {
            record: obj.record,
            slot: *pid,
        };
        match self.node(pid) {
            Some(GraphNode::Bytes(oid)) => Ok(RefKey::Bare(oid.clone())),
            Some(GraphNode::Tuple(items)) => match items.as_slice() {
                [oid, class] => {
                    let oid = self.node(Obj {
                        record: obj.record,
                        slot: *oid,
                    });
                    let class = self.node(Obj {
                        record: obj.record,
                        slot: *class,
                    });
                    match (oid, class) {
                        (Some(GraphNode::Bytes(oid)), Some(GraphNode::Global { module, name })) => {
                            Ok(RefKey::Pair(oid.clone(), module.clone(), name.clone()))
                        }
                        _ => Err(Error::Unsupported("persistent reference form".into())),
                    }
                }
                _ => Err(Error::Unsupported("persistent reference form".into())),
            },
            _ => Err(Error::Unsupported("persistent reference form".into())),
        }
    }

    /// The integer an object holds (`bool` counts, as in Python).
    pub(crate) fn int(&self, obj: Obj) -> Result<Option<i128>, Error> {
        Ok(match self.kind(obj)? {
            Kind::Num(Num::Int(n)) => Some(n),
            _ => None,
        })
    }

    /// The float or integer an object holds, as a float.
    pub(crate) fn number(&self, obj: Obj) -> Result<Option<f64>, Error> {
        Ok(match self.kind(obj)? {
            Kind::Num(Num::Float(f)) => Some(f),
            Kind::Num(Num::Int(n)) => Some(n as f64),
            _ => None,
        })
    }

    /// Whether the object is a float (as opposed to an integer).
    pub(crate) fn is_float(&self, obj: Obj) -> bool {
        matches!(obj.slot, Slot::Float(_))
    }

    fn kind(&self, obj: Obj) -> Result<Kind<'_>, Error> {
        Ok(match obj.slot {
            Slot::None => Kind::None,
            Slot::Bool(b) => Kind::Num(Num::Int(b.into())),
            Slot::Int(n) => Kind::Num(Num::Int(n.into())),
            Slot::Float(f) => Kind::Num(Num::Float(f)),
            Slot::Node(_) => match self.node(obj) {
                Some(GraphNode::BigInt(b)) => {
                    Kind::Num(Num::Int(int_from_le(b).ok_or_else(|| {
                        Error::Unsupported("integer wider than 128 bits".into())
                    })?))
                }
                Some(GraphNode::Str(s)) => Kind::Str(s),
                Some(GraphNode::Bytes(b)) => Kind::Bytes(b),
                Some(GraphNode::Tuple(items)) => Kind::Seq { list: false, items },
                Some(GraphNode::List(items)) => Kind::Seq { list: true, items },
                Some(GraphNode::PersistentId(_)) => Kind::Ref(self.ref_key(obj)?),
                Some(other) => {
                    return Err(Error::Unsupported(format!(
                        "object of kind {}",
                        node_kind(other)
                    )))
                }
                None => return Err(Error::Unsupported("dangling object".into())),
            },
        })
    }

    fn step(&self, depth: usize) -> Result<(), Error> {
        let steps = self.steps.get() + 1;
        self.steps.set(steps);
        if steps > MAX_STEPS || depth > MAX_DEPTH {
            return Err(Error::Unsupported("comparison too deep or too long".into()));
        }
        Ok(())
    }

    fn same(&self, a: Obj, b: Obj) -> Result<bool, Error> {
        if !matches!(a.slot, Slot::Node(_)) || !matches!(b.slot, Slot::Node(_)) {
            return Ok(false);
        }
        Ok(match (self.ident(a)?, self.ident(b)?) {
            (Some(x), Some(y)) => x == y,
            _ => false,
        })
    }

    /// Python's `a == b` with `PyObject_RichCompareBool`'s identity
    /// shortcut; `Err(Refused)` where Python raises.
    fn eq(&self, a: Obj, b: Obj, depth: usize) -> Result<bool, Error> {
        self.step(depth)?;
        if self.same(a, b)? {
            return Ok(true);
        }
        Ok(match (self.kind(a)?, self.kind(b)?) {
            (Kind::Ref(x), Kind::Ref(y)) if x == y => true,
            (Kind::Ref(_), _) | (_, Kind::Ref(_)) => return Err(uncomparable_refs()),
            (Kind::None, Kind::None) => true,
            (Kind::Num(x), Kind::Num(y)) => num_cmp(x, y) == Some(Ordering::Equal),
            (Kind::Str(x), Kind::Str(y)) => x == y,
            (Kind::Bytes(x), Kind::Bytes(y)) => x == y,
            (Kind::Seq { list: l, items: x }, Kind::Seq { list: m, items: y }) if l == m => {
                if x.len() != y.len() {
                    return Ok(false);
                }
                for (&p, &q) in x.iter().zip(y) {
                    let (p, q) = (at(a.record, p), at(b.record, q));
                    if !self.eq(p, q, depth + 1)? {
                        return Ok(false);
                    }
                }
                true
            }
            _ => false,
        })
    }

    /// Python's `a < b`; `Err(Refused)` where Python raises.
    fn lt(&self, a: Obj, b: Obj, depth: usize) -> Result<bool, Error> {
        self.step(depth)?;
        Ok(match (self.kind(a)?, self.kind(b)?) {
            (Kind::Ref(x), Kind::Ref(y)) if x == y => false,
            (Kind::Ref(_), _) | (_, Kind::Ref(_)) => return Err(uncomparable_refs()),
            (Kind::Num(x), Kind::Num(y)) => num_cmp(x, y) == Some(Ordering::Less),
            (Kind::Str(x), Kind::Str(y)) => x < y,
            (Kind::Bytes(x), Kind::Bytes(y)) => x < y,
            (Kind::Seq { list: l, items: x }, Kind::Seq { list: m, items: y }) if l == m => {
                for (&p, &q) in x.iter().zip(y) {
                    let (p, q) = (at(a.record, p), at(b.record, q));
                    if !self.eq(p, q, depth + 1)? {
                        return self.lt(p, q, depth + 1);
                    }
                }
                x.len() < y.len()
            }
            _ => {
                return Err(Error::Refused(
                    "'<' not supported between the key types".into(),
                ))
            }
        })
    }

    /// BTrees' `COMPARE` of two objects: `None` sorts first without
    /// asking Python, then `<`, then `==`; `-1`, `0` or `1`.
    pub(crate) fn compare(&self, a: Obj, b: Obj) -> Result<i8, Error> {
        Ok(match (a.slot, b.slot) {
            (Slot::None, Slot::None) => 0,
            (Slot::None, _) => -1,
            (_, Slot::None) => 1,
            _ if self.lt(a, b, 0)? => -1,
            _ if self.eq(a, b, 0)? => 0,
            _ => 1,
        })
    }
}

fn at(record: usize, slot: Slot) -> Obj {
    Obj { record, slot }
}

fn uncomparable_refs() -> Error {
    Error::Refused("can't reliably compare against different PersistentReferences".into())
}

fn node_kind(node: &GraphNode) -> &'static str {
    match node {
        GraphNode::BigInt(_) => "int",
        GraphNode::Bytes(_) => "bytes",
        GraphNode::ByteArray(_) => "bytearray",
        GraphNode::Str(_) => "str",
        GraphNode::Tuple(_) => "tuple",
        GraphNode::List(_) => "list",
        GraphNode::Dict(_) => "dict",
        GraphNode::Set(_) => "set",
        GraphNode::FrozenSet(_) => "frozenset",
        GraphNode::Global { .. } => "global",
        GraphNode::Call { .. }
        | GraphNode::Build { .. }
        | GraphNode::ListItems { .. }
        | GraphNode::DictItems { .. } => "instance",
        GraphNode::PersistentId(_) => "persistent reference",
    }
}

/// A little-endian two's complement integer, if it fits in 128 bits.
pub(crate) fn int_from_le(b: &[u8]) -> Option<i128> {
    let negative = b.last().is_some_and(|&x| x & 0x80 != 0);
    let fill = if negative { 0xff } else { 0 };
    if b.len() > 16 {
        // Longer forms fit only when the extra bytes are sign fill.
        let (low, high) = b.split_at(16);
        if high.iter().any(|&x| x != fill) || (low[15] & 0x80 != 0) != negative {
            return None;
        }
        return int_from_le(low);
    }
    let mut buf = [fill; 16];
    buf[..b.len()].copy_from_slice(b);
    Some(i128::from_le_bytes(buf))
}

/// Python's exact comparison of two numbers (`None` when a NaN is
/// involved: every comparison is then false).
fn num_cmp(a: Num, b: Num) -> Option<Ordering> {
    match (a, b) {
        (Num::Int(x), Num::Int(y)) => Some(x.cmp(&y)),
        (Num::Float(x), Num::Float(y)) => x.partial_cmp(&y),
        (Num::Int(x), Num::Float(y)) => int_float_cmp(x, y),
        (Num::Float(x), Num::Int(y)) => int_float_cmp(y, x).map(Ordering::reverse),
    }
}

/// `i` against `f` exactly, as Python compares an int with a float.
fn int_float_cmp(i: i128, f: f64) -> Option<Ordering> {
    if f.is_nan() {
        return None;
    }
    // 2^127: past it (or at it) every i128 is smaller in magnitude.
    const LIMIT: f64 = 170_141_183_460_469_231_731_687_303_715_884_105_728.0;
    if f >= LIMIT {
        return Some(Ordering::Less);
    }
    if f < -LIMIT {
        return Some(Ordering::Greater);
    }
    let floor = f.floor();
    // `floor` is integral and within i128, so the cast is exact.
    let whole = floor as i128;
    Some(match i.cmp(&whole) {
        Ordering::Equal if f > floor => Ordering::Less,
        other => other,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ints_compare_with_floats_exactly() {
        let big = (1i128 << 53) + 1;
        assert_eq!(
            int_float_cmp(big, 9007199254740992.0),
            Some(Ordering::Greater)
        );
        assert_eq!(int_float_cmp(3, 3.5), Some(Ordering::Less));
        assert_eq!(int_float_cmp(-3, -3.5), Some(Ordering::Greater));
        assert_eq!(int_float_cmp(4, 4.0), Some(Ordering::Equal));
        assert_eq!(int_float_cmp(0, f64::NAN), None);
        assert_eq!(
            int_float_cmp(i128::MAX, f64::INFINITY),
            Some(Ordering::Less)
        );
    }

    #[test]
    fn little_endian_integers_up_to_128_bits() {
        assert_eq!(int_from_le(&[0xff]), Some(-1));
        assert_eq!(int_from_le(&[0, 0x80]), Some(-32768));
        assert_eq!(int_from_le(&[0; 20]), Some(0));
        let mut wide = vec![0u8; 17];
        wide[16] = 1;
        assert_eq!(int_from_le(&wide), None);
    }
}
