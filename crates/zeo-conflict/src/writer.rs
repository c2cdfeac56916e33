//! Pickling the resolved record the way ZODB does after a resolution: one
//! protocol 3 pickler, not in fast mode, dumping the class pickle of the
//! new record and then the merged state, so objects met twice (the same
//! key object, a shared class, one persistent reference) are written once
//! and fetched from the memo afterwards.

use std::collections::HashMap;

use zeo_pickle::graph::{GraphNode, Slot};

use crate::error::Error;
use crate::objects::{Ident, Obj, Records, RefKey};

use zeo_pickle::opcodes::*;

/// Deepest object the writer follows; Python's own pickler stops at its
/// recursion limit, and such states are left to it.
const MAX_DEPTH: usize = 100;

/// A part of the resolved state: an object of one of the records, a value
/// the merge computed, or a tuple the merge built (never shared).
#[derive(Debug, Clone)]
pub(crate) enum Out {
    Obj(Obj),
    Int(i128),
    Float(f64),
    Tuple(Vec<Out>),
    /// A dict built here, written as CPython's pickler writes a dict.
    Dict(Vec<(Out, Out)>),
}

enum Task {
    Obj(Obj, usize),
    Pid(RefKey),
    Op(u8),
    Put(Option<Ident>),
}

pub(crate) struct Writer<'r> {
    records: &'r Records,
    out: Vec<u8>,
    memo: HashMap<Ident, u32>,
    next: u32,
}

impl<'r> Writer<'r> {
    pub(crate) fn new(records: &'r Records) -> Self {
        Writer {
            records,
            out: Vec::new(),
            memo: HashMap::new(),
            next: 0,
        }
    }

    pub(crate) fn into_bytes(self) -> Vec<u8> {
        self.out
    }

    /// One pickle of `value`.
    pub(crate) fn dump(&mut self, value: &Out) -> Result<(), Error> {
        self.out.extend_from_slice(&[PROTO, 3]);
        self.out_value(value, 0)?;
        self.out.push(STOP);
        Ok(())
    }

    fn out_value(&mut self, value: &Out, depth: usize) -> Result<(), Error> {
        // Merged states nest a handful of levels; bound it all the same.
        if depth > MAX_DEPTH {
            return Err(Error::Unsupported("state nested too deep".into()));
        }
        match value {
            Out::Obj(obj) => self.obj(*obj),
            Out::Int(n) => {
                self.int(*n);
                Ok(())
            }
            Out::Float(f) => {
                self.out.push(BINFLOAT);
                self.out.extend_from_slice(&f.to_be_bytes());
                Ok(())
            }
            Out::Tuple(items) => {
                if items.is_empty() {
                    self.out.push(EMPTY_TUPLE);
                    return Ok(());
                }
                if items.len() > 3 {
                    self.out.push(MARK);
                }
                for item in items {
                    self.out_value(item, depth + 1)?;
                }
                self.out.push(tuple_op(items.len()));
                self.put(None);
                Ok(())
            }
            Out::Dict(items) => {
                // Memoized before its items; one item is a SETITEM, more
                // go in MARK ... SETITEMS batches of 1000.
                self.out.push(EMPTY_DICT);
                self.put(None);
                if let [(key, value)] = items.as_slice() {
                    self.out_value(key, depth + 1)?;
                    self.out_value(value, depth + 1)?;
                    self.out.push(SETITEM);
                    return Ok(());
                }
                for chunk in items.chunks(1000) {
                    self.out.push(MARK);
                    for (key, value) in chunk {
                        self.out_value(key, depth + 1)?;
                        self.out_value(value, depth + 1)?;
                    }
                    self.out.push(SETITEMS);
                }
                Ok(())
            }
        }
    }

    fn put(&mut self, ident: Option<Ident>) {
        let index = self.next;
        self.next += 1;
        match u8::try_from(index) {
            Ok(i) => self.out.extend_from_slice(&[BINPUT, i]),
            Err(_) => {
                self.out.push(LONG_BINPUT);
                self.out.extend_from_slice(&index.to_le_bytes());
            }
        }
        if let Some(ident) = ident {
            self.memo.insert(ident, index);
        }
    }

    /// Writes a memo fetch if the object was written before.
    fn get(&mut self, ident: &Ident) -> bool {
        let Some(&index) = self.memo.get(ident) else {
            return false;
        };
        match u8::try_from(index) {
            Ok(i) => self.out.extend_from_slice(&[BINGET, i]),
            Err(_) => {
                self.out.push(LONG_BINGET);
                self.out.extend_from_slice(&index.to_le_bytes());
            }
        }
        true
    }

    fn int(&mut self, n: i128) {
        match n {
            0..=0xff => self.out.extend_from_slice(&[BININT1, n as u8]),
            0x100..=0xffff => {
                self.out.push(BININT2);
                self.out.extend_from_slice(&(n as u16).to_le_bytes());
            }
            _ => match i32::try_from(n) {
                Ok(n) => {
                    self.out.push(BININT);
                    self.out.extend_from_slice(&n.to_le_bytes());
                }
                Err(_) => self.long(&minimal_le(n)),
            },
        }
    }

    fn long(&mut self, le: &[u8]) {
        match u8::try_from(le.len()) {
            Ok(n) => self.out.extend_from_slice(&[LONG1, n]),
            Err(_) => {
                self.out.push(LONG4);
                self.out.extend_from_slice(&(le.len() as u32).to_le_bytes());
            }
        }
        self.out.extend_from_slice(le);
    }

    fn bytes(&mut self, b: &[u8]) -> Result<(), Error> {
        match u8::try_from(b.len()) {
            Ok(n) => self.out.extend_from_slice(&[SHORT_BINBYTES, n]),
            Err(_) => {
                let n = u32::try_from(b.len())
                    .map_err(|_| Error::Unsupported("bytes over 4 GiB".into()))?;
                self.out.push(BINBYTES);
                self.out.extend_from_slice(&n.to_le_bytes());
            }
        }
        self.out.extend_from_slice(b);
        Ok(())
    }

    fn global(&mut self, module: &str, name: &str) {
        self.out.push(GLOBAL);
        self.out.extend_from_slice(module.as_bytes());
        self.out.push(b'\n');
        self.out.extend_from_slice(name.as_bytes());
        self.out.push(b'\n');
    }

    /// An object of a record, without recursion: a task stack holds what
    /// is left to write.
    fn obj(&mut self, root: Obj) -> Result<(), Error> {
        let records = self.records;
        let mut tasks = vec![Task::Obj(root, 0)];
        while let Some(task) = tasks.pop() {
            match task {
                Task::Op(op) => self.out.push(op),
                Task::Put(ident) => self.put(ident),
                Task::Pid(key) => self.pid(key)?,
                Task::Obj(obj, depth) => {
                    if depth > MAX_DEPTH {
                        return Err(Error::Unsupported("state nested too deep".into()));
                    }
                    match obj.slot {
                        Slot::None => self.out.push(NONE),
                        Slot::Bool(true) => self.out.push(NEWTRUE),
                        Slot::Bool(false) => self.out.push(NEWFALSE),
                        Slot::Int(n) => self.int(n.into()),
                        Slot::Float(f) => {
                            self.out.push(BINFLOAT);
                            self.out.extend_from_slice(&f.to_be_bytes());
                        }
                        Slot::Node(_) => {
                            let node = records
                                .node(obj)
                                .ok_or_else(|| Error::Unsupported("dangling object".into()))?;
                            // A reference is not memoized itself: its
                            // persistent id is, and `Task::Pid` fetches that.
                            let ident = match node {
                                GraphNode::PersistentId(_) => None,
                                _ => records.ident(obj)?,
                            };
                            if let Some(ident) = &ident {
                                if self.get(ident) {
                                    continue;
                                }
                            }
                            match node {
                                GraphNode::BigInt(le) => self.long(le),
                                GraphNode::Str(s) => {
                                    let n = u32::try_from(s.len())
                                        .map_err(|_| Error::Unsupported("str over 4 GiB".into()))?;
                                    self.out.push(BINUNICODE);
                                    self.out.extend_from_slice(&n.to_le_bytes());
                                    self.out.extend_from_slice(s.as_bytes());
                                    self.put(ident);
                                }
                                GraphNode::Bytes(b) => {
                                    self.bytes(b)?;
                                    self.put(ident);
                                }
                                GraphNode::Global { module, name } => {
                                    self.global(module, name);
                                    self.put(ident);
                                }
                                GraphNode::Tuple(items) if items.is_empty() => {
                                    self.out.push(EMPTY_TUPLE)
                                }
                                GraphNode::Tuple(items) => {
                                    if items.len() > 3 {
                                        self.out.push(MARK);
                                    }
                                    tasks.push(Task::Put(ident));
                                    tasks.push(Task::Op(tuple_op(items.len())));
                                    for &slot in items.iter().rev() {
                                        tasks.push(Task::Obj(
                                            Obj {
                                                record: obj.record,
                                                slot,
                                            },
                                            depth + 1,
                                        ));
                                    }
                                }
                                GraphNode::List(items) => {
                                    // Memoized before its items, as Python
                                    // does, so a list inside itself is a
                                    // memo fetch.
                                    self.out.push(EMPTY_LIST);
                                    self.put(ident);
                                    let at = |slot: &Slot| {
                                        Task::Obj(
                                            Obj {
                                                record: obj.record,
                                                slot: *slot,
                                            },
                                            depth + 1,
                                        )
                                    };
                                    let mut seq = Vec::new();
                                    if let [single] = items.as_slice() {
                                        seq.extend([at(single), Task::Op(APPEND)]);
                                    } else {
                                        // Batches of 1000, as CPython's pickler.
                                        for chunk in items.chunks(1000) {
                                            seq.push(Task::Op(MARK));
                                            seq.extend(chunk.iter().map(at));
                                            seq.push(Task::Op(APPENDS));
                                        }
                                    }
                                    tasks.extend(seq.into_iter().rev());
                                }
                                GraphNode::PersistentId(_) => {
                                    let key = records.ref_key(obj)?;
                                    tasks.push(Task::Op(BINPERSID));
                                    tasks.push(Task::Pid(key));
                                }
                                _ => {
                                    return Err(Error::Unsupported(
                                        "object kind the writer does not model".into(),
                                    ))
                                }
                            }
                        }
                    }
                }
            }
        }
        Ok(())
    }

    /// The persistent id of a reference: the reference's data, shared by
    /// every occurrence of the same reference in the three records.
    fn pid(&mut self, key: RefKey) -> Result<(), Error> {
        let data = Ident::RefData(key.clone());
        if self.get(&data) {
            return Ok(());
        }
        match &key {
            RefKey::Bare(oid) => {
                self.bytes(oid)?;
            }
            RefKey::Pair(oid, module, name) => {
                self.bytes(oid)?;
                self.put(Some(Ident::RefOid(key.clone())));
                let class = Ident::Class(module.clone(), name.clone());
                if !self.get(&class) {
                    self.global(module, name);
                    self.put(Some(class));
                }
                self.out.push(tuple_op(2));
            }
        }
        self.put(Some(data));
        Ok(())
    }
}

fn tuple_op(len: usize) -> u8 {
    match len {
        1..=3 => TUPLE1 + (len as u8 - 1),
        _ => TUPLE,
    }
}

/// The shortest little-endian two's complement form of `n`, as Python's
/// pickler writes a `LONG1` argument.
pub(crate) fn minimal_le(n: i128) -> Vec<u8> {
    let mut b = n.to_le_bytes().to_vec();
    while let [.., prev, last] = b[..] {
        let redundant = (last == 0 && prev & 0x80 == 0) || (last == 0xff && prev & 0x80 != 0);
        if !redundant {
            break;
        }
        b.pop();
    }
    b
}

#[cfg(test)]
mod tests {
    use super::minimal_le;

    #[test]
    fn longs_are_minimal() {
        assert_eq!(minimal_le(1 << 63), [0, 0, 0, 0, 0, 0, 0, 0x80, 0]);
        assert_eq!(minimal_le(-128), [0x80]);
        assert_eq!(minimal_le(-129), [0x7f, 0xff]);
        assert_eq!(
            minimal_le(u64::MAX.into()),
            [0xff; 8].iter().copied().chain([0]).collect::<Vec<_>>()
        );
    }
}
