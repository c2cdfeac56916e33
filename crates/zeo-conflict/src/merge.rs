//! The three-way merge of bucket and set states, with BTrees' rules and
//! refusals.
//!
//! The rules (`BTrees/Interfaces.py` numbers the refusals): a key both
//! sides leave alone stays; one side may change a value the other left
//! alone (both making the same change is fine); one side may delete a key
//! the other left alone, except the bucket's first key (that changes the
//! parent node); each side may insert keys the other did not insert. The
//! merge refuses when either side emptied the bucket or changed its next
//! bucket, when both insert the same key, when both delete one key, when
//! one deletes what the other changed, and when the result would be
//! empty.
//!
//! Where both sides keep a key, the merged bucket takes the key object
//! (and value) from the side whose value wins, the new state when neither
//! changed it, as BTrees' C implementation does; which object is kept
//! matters for the pickle, whose memo shares objects by identity.

use crate::error::Error;
use crate::objects::{Obj, Records};
use crate::registry::Datum;
use crate::writer::Out;

/// A key or value as the bucket holds it: objects keep their identity,
/// integers and floats are held by value, as the C buckets do.
#[derive(Debug, Clone)]
pub(crate) enum Elem {
    Obj(Obj),
    Int(i128),
    Float(f32),
}

impl Elem {
    fn out(&self) -> Out {
        match self {
            Elem::Obj(o) => Out::Obj(*o),
            Elem::Int(n) => Out::Int(*n),
            Elem::Float(f) => Out::Float(f64::from(*f)),
        }
    }
}

/// What a bucket's state says its next bucket is: nothing, or an object
/// (a persistent reference, or `None` spelled out), compared by identity.
#[derive(Debug, Clone)]
pub(crate) enum Next {
    Absent,
    Obj(Obj),
}

/// A bucket or set as `__setstate__` would build it.
#[derive(Debug, Clone)]
pub(crate) struct Bucket {
    pub(crate) keys: Vec<Elem>,
    /// Values, for buckets; `None` for sets.
    pub(crate) values: Option<Vec<Elem>>,
    pub(crate) next: Next,
}

impl Bucket {
    /// Reads a bucket (`value` is `Some`) or set state the way BTrees'
    /// `__setstate__` does; a `None` state is an empty bucket.
    pub(crate) fn read(
        records: &Records,
        state: Obj,
        key: Datum,
        value: Option<Datum>,
    ) -> Result<Bucket, Error> {
        let mut bucket = Bucket {
            keys: Vec::new(),
            values: value.map(|_| Vec::new()),
            next: Next::Absent,
        };
        if state.slot == zeo_pickle::graph::Slot::None {
            return Ok(bucket);
        }
        let parts: Vec<Obj> = records
            .tuple(state)
            .ok_or_else(|| Error::Refused("bucket state is not a tuple".into()))?
            .collect();
        let (items, next) = match parts.as_slice() {
            [items] => (*items, Next::Absent),
            [items, next] => (*items, Next::Obj(*next)),
            _ => return Err(Error::Refused("bucket state of wrong length".into())),
        };
        if let Next::Obj(next) = next {
            // Next pointers are compared by identity: persistent references
            // (shared by the reference factory) and None are what states hold.
            let is_ref = matches!(
                records.node(next),
                Some(zeo_pickle::graph::GraphNode::PersistentId(_))
            );
            if !is_ref && next.slot != zeo_pickle::graph::Slot::None {
                return Err(Error::Unsupported("next bucket of unexpected kind".into()));
            }
        }
        bucket.next = next;
        let items: Vec<Obj> = records
            .tuple(items)
            .ok_or_else(|| Error::Refused("tuple required for first state element".into()))?
            .collect();
        match (&mut bucket.values, value) {
            (Some(values), Some(value)) => {
                // An odd trailing item is ignored, as the C buckets do.
                for pair in items.chunks_exact(2) {
                    bucket.keys.push(elem(records, pair[0], key)?);
                    values.push(elem(records, pair[1], value)?);
                }
            }
            _ => {
                for k in items {
                    bucket.keys.push(elem(records, k, key)?);
                }
            }
        }
        Ok(bucket)
    }

    /// The state `__getstate__` gives: `(items,)` or `(items, next)`.
    pub(crate) fn state(&self) -> Out {
        let items = match &self.values {
            Some(values) => self
                .keys
                .iter()
                .zip(values)
                .flat_map(|(k, v)| [k.out(), v.out()])
                .collect(),
            None => self.keys.iter().map(Elem::out).collect(),
        };
        let mut state = vec![Out::Tuple(items)];
        if let Next::Obj(next) = &self.next {
            state.push(Out::Obj(*next));
        }
        Out::Tuple(state)
    }
}

fn elem(records: &Records, obj: Obj, datum: Datum) -> Result<Elem, Error> {
    if let Some((low, high)) = datum.int_range() {
        if records.is_float(obj) {
            return Err(Error::Refused("expected integer key or value".into()));
        }
        let n = records
            .int(obj)?
            .ok_or_else(|| Error::Refused("expected integer key or value".into()))?;
        if n < low || n > high {
            return Err(Error::Refused("integer out of range".into()));
        }
        return Ok(Elem::Int(n));
    }
    match datum {
        Datum::Float32 => {
            let f = if records.is_float(obj) {
                records.number(obj)?.map(|f| f as f32)
            } else {
                match records.int(obj)? {
                    Some(n) => Some(
                        i64::try_from(n).map_err(|_| Error::Refused("int too large".into()))?
                            as f32,
                    ),
                    None => None,
                }
            };
            f.map(Elem::Float)
                .ok_or_else(|| Error::Refused("expected float or int value".into()))
        }
        _ => Ok(Elem::Obj(obj)),
    }
}

fn compare(records: &Records, a: &Elem, b: &Elem) -> Result<i8, Error> {
    let sign = |o: Option<std::cmp::Ordering>| match o {
        Some(std::cmp::Ordering::Less) => -1,
        Some(std::cmp::Ordering::Greater) => 1,
        _ => 0,
    };
    match (a, b) {
        (Elem::Obj(x), Elem::Obj(y)) => records.compare(*x, *y),
        (Elem::Int(x), Elem::Int(y)) => Ok(sign(Some(x.cmp(y)))),
        // BTrees' float macro: neither smaller nor larger is equal (NaN too).
        (Elem::Float(x), Elem::Float(y)) => Ok(sign(x.partial_cmp(y))),
        _ => Err(Error::Unsupported("mixed element kinds".into())),
    }
}

/// A pass over one bucket, with BTrees' position numbering: 1 after the
/// first item is taken, -1 once exhausted.
struct Cursor<'b> {
    bucket: &'b Bucket,
    position: i64,
}

impl<'b> Cursor<'b> {
    fn new(bucket: &'b Bucket) -> Self {
        let mut c = Cursor {
            bucket,
            position: 0,
        };
        c.advance();
        c
    }

    fn active(&self) -> bool {
        self.position >= 0
    }

    fn index(&self) -> usize {
        (self.position - 1) as usize
    }

    fn key(&self) -> &'b Elem {
        &self.bucket.keys[self.index()]
    }

    fn value(&self) -> Option<&'b Elem> {
        self.bucket.values.as_ref().map(|v| &v[self.index()])
    }

    fn advance(&mut self) {
        if self.position >= 0 && (self.position as usize) < self.bucket.keys.len() {
            self.position += 1;
        } else {
            self.position = -1;
        }
    }
}

/// The three passes of a merge and the bucket being built.
struct Merge<'b> {
    old: Cursor<'b>,
    committed: Cursor<'b>,
    new: Cursor<'b>,
    out: Bucket,
}

/// One of the two changed states.
#[derive(Clone, Copy, PartialEq)]
enum Side {
    Committed,
    New,
}

impl<'b> Merge<'b> {
    fn side(&mut self, side: Side) -> &mut Cursor<'b> {
        match side {
            Side::Committed => &mut self.committed,
            Side::New => &mut self.new,
        }
    }

    fn fail<T>(&self, reason: i64) -> Result<T, Error> {
        Err(Error::merge(
            [
                self.old.position,
                self.committed.position,
                self.new.position,
            ],
            reason,
        ))
    }

    /// Appends the current item of `side` without moving past it.
    fn push(&mut self, side: Side) {
        let from = match side {
            Side::Committed => &self.committed,
            Side::New => &self.new,
        };
        self.out.keys.push(from.key().clone());
        if let (Some(values), Some(v)) = (self.out.values.as_mut(), from.value()) {
            values.push(v.clone());
        }
    }

    /// Appends the current item of `side` and moves past it.
    fn take(&mut self, side: Side) {
        self.push(side);
        self.side(side).advance();
    }

    /// Whether the old value equals `side`'s current one (sets: always).
    fn unchanged(&mut self, records: &Records, side: Side) -> Result<bool, Error> {
        let old = self.old.value();
        match (old, self.side(side).value()) {
            (Some(x), Some(y)) => Ok(compare(records, x, y)? == 0),
            _ => Ok(true),
        }
    }

    /// The old key is still first at `kept` but not at `moved`, which is
    /// past it (`old_vs_moved > 0`: `moved` inserted a smaller key) or
    /// deleted it (allowed when `kept` left its value alone, unless it was
    /// the bucket's first key).
    fn one_side_moved(
        &mut self,
        records: &Records,
        kept: Side,
        moved: Side,
        old_vs_moved: i8,
        reason: i64,
    ) -> Result<(), Error> {
        if old_vs_moved > 0 {
            self.take(moved);
        } else if self.unchanged(records, kept)? {
            if self.side(moved).position == 1 {
                return self.fail(13);
            }
            self.old.advance();
            self.side(kept).advance();
        } else {
            return self.fail(reason);
        }
        Ok(())
    }

    /// `moved` has ended: every old key left must be deleted by it, so
    /// `kept` may only still insert keys or hold them unchanged.
    fn rest_deleted(&mut self, records: &Records, kept: Side, reason: i64) -> Result<(), Error> {
        while self.old.active() && self.side(kept).active() {
            let c = compare(records, self.old.key(), self.side(kept).key())?;
            if c > 0 {
                self.take(kept);
            } else if c == 0 && self.unchanged(records, kept)? {
                self.old.advance();
                self.side(kept).advance();
            } else {
                return self.fail(reason);
            }
        }
        Ok(())
    }
}

/// Merges `old`, `committed` and `new` (all buckets or all sets) into the
/// merged bucket, or the refusal BTrees gives.
pub(crate) fn merge(
    records: &Records,
    old: &Bucket,
    committed: &Bucket,
    new: &Bucket,
) -> Result<Bucket, Error> {
    if !same_next(records, &old.next, &committed.next)?
        || !same_next(records, &old.next, &new.next)?
    {
        return Err(Error::merge([-1; 3], 0));
    }
    if committed.keys.is_empty() || new.keys.is_empty() {
        return Err(Error::merge([-1; 3], 12));
    }
    let mut m = Merge {
        old: Cursor::new(old),
        committed: Cursor::new(committed),
        new: Cursor::new(new),
        out: Bucket {
            keys: Vec::new(),
            values: old.values.as_ref().map(|_| Vec::new()),
            next: old.next.clone(),
        },
    };
    use Side::{Committed, New};

    while m.old.active() && m.committed.active() && m.new.active() {
        let oc = compare(records, m.old.key(), m.committed.key())?;
        let on = compare(records, m.old.key(), m.new.key())?;
        if oc == 0 && on == 0 {
            if m.unchanged(records, Committed)? {
                m.push(New);
            } else if m.unchanged(records, New)? {
                m.push(Committed);
            } else {
                return m.fail(1);
            }
            m.old.advance();
            m.committed.advance();
            m.new.advance();
        } else if oc == 0 {
            m.one_side_moved(records, Committed, New, on, 2)?;
        } else if on == 0 {
            m.one_side_moved(records, New, Committed, oc, 3)?;
        } else {
            let cn = compare(records, m.committed.key(), m.new.key())?;
            if cn == 0 {
                return m.fail(4);
            }
            if oc > 0 {
                m.take(if cn > 0 { New } else { Committed });
            } else if on > 0 {
                m.take(New);
            } else {
                return m.fail(5);
            }
        }
    }
    while m.committed.active() && m.new.active() {
        let cn = compare(records, m.committed.key(), m.new.key())?;
        if cn == 0 {
            return m.fail(6);
        }
        m.take(if cn > 0 { New } else { Committed });
    }
    m.rest_deleted(records, Committed, 7)?;
    m.rest_deleted(records, New, 8)?;
    if m.old.active() {
        return m.fail(9);
    }
    while m.committed.active() {
        m.take(Committed);
    }
    while m.new.active() {
        m.take(New);
    }
    if m.out.keys.is_empty() {
        return Err(Error::merge([-1; 3], 10));
    }
    Ok(m.out)
}

/// Whether two next pointers are the same object (BTrees compares the
/// pointers): both absent, both `None`, or one shared persistent reference.
fn same_next(records: &Records, a: &Next, b: &Next) -> Result<bool, Error> {
    Ok(match (a, b) {
        (Next::Absent, Next::Absent) => true,
        (Next::Obj(x), Next::Obj(y)) => match (x.slot, y.slot) {
            (zeo_pickle::graph::Slot::None, zeo_pickle::graph::Slot::None) => true,
            (zeo_pickle::graph::Slot::None, _) | (_, zeo_pickle::graph::Slot::None) => false,
            _ => records.ref_key(*x)? == records.ref_key(*y)?,
        },
        _ => false,
    })
}
