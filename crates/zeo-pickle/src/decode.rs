//! Decoding pickles into [`Value`]s.

use crate::error::Error;
use crate::machine::{FindGlobal, Item, Machine, Node, NodeId};
use crate::value::Value;

/// Default limit on nesting depth of a decoded value. Python's own pickler
/// cannot write anything deeper than its recursion limit (1000).
pub const DEFAULT_MAX_DEPTH: usize = 1000;

/// Fixed part of the default output budget, in bytes.
const DEFAULT_OUTPUT_BASE: usize = 1 << 20;
/// Per input byte part of the default output budget. One opcode byte makes
/// at most one [`Value`] node, so only shared (memo) objects copied many
/// times can approach this.
const DEFAULT_OUTPUT_PER_INPUT_BYTE: usize = 64;

/// A pickle reader over a byte string that may hold several pickles back to
/// back, sharing one memo.
///
/// ZODB object records are two pickles (class, then state) written by one
/// pickler without clearing its memo, so the state pickle may `GET` what the
/// class pickle `PUT`. Read both with one `Decoder`:
///
/// ```
/// # use zeo_pickle::{Decoder, Value};
/// // class pickle memoizes its GLOBAL as 0; state pickle refers to it with BINGET 0.
/// let record = b"\x80\x03cmod\nKlass\nq\x00.\x80\x03h\x00.";
/// let mut d = Decoder::new(record);
/// let class = d.next_pickle()?;
/// let state = d.next_pickle()?;
/// assert_eq!(class, state);
/// assert!(d.is_at_end());
/// # Ok::<(), zeo_pickle::Error>(())
/// ```
///
/// Hostile input is safe to feed: lengths are checked against the input
/// before use, working memory grows at most linearly with the input (and
/// can be capped with [`Decoder::with_max_work`]), values nest at most
/// [`Decoder::with_max_depth`] deep, and the decoded output (where shared
/// objects are copied) is capped by [`Decoder::with_max_output`], the
/// copies alone by [`Decoder::with_max_copied_output`].
///
/// The depth limit is what keeps the recursive operations of a [`Value`]
/// (`Drop`, `Clone`, `PartialEq`, `Debug`) within the thread's stack: the
/// decoder itself never recurses.
pub struct Decoder<'a> {
    machine: Machine<'a, 'a>,
    max_depth: usize,
    max_output: usize,
    output_left: usize,
    max_copies: usize,
    copies_left: usize,
}

impl std::fmt::Debug for Decoder<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Decoder")
            .field("position", &self.machine.position())
            .field("max_depth", &self.max_depth)
            .field("max_output", &self.max_output)
            .field("output_left", &self.output_left)
            .field("max_copies", &self.max_copies)
            .finish_non_exhaustive()
    }
}

impl<'a> Decoder<'a> {
    /// A decoder positioned at the start of `data`, allowing every global.
    pub fn new(data: &'a [u8]) -> Self {
        let output = DEFAULT_OUTPUT_BASE
            .saturating_add(data.len().saturating_mul(DEFAULT_OUTPUT_PER_INPUT_BYTE));
        Decoder {
            machine: Machine::new(data),
            max_depth: DEFAULT_MAX_DEPTH,
            max_output: output,
            output_left: output,
            max_copies: usize::MAX,
            copies_left: usize::MAX,
        }
    }

    /// Restricts the globals (`GLOBAL`, `STACK_GLOBAL`, `INST`) a pickle may
    /// name: `allowed(module, name)` is asked with the names exactly as the
    /// pickle spells them, and a `false` fails decoding with
    /// [`Error::GlobalRejected`]. See [`zeo_server_find_global`].
    pub fn with_find_global(mut self, allowed: impl Fn(&str, &str) -> bool + 'a) -> Self {
        let f: FindGlobal<'a> = Box::new(allowed);
        self.machine.set_find_global(Some(f));
        self
    }

    /// Sets the maximum nesting depth of a decoded value (default
    /// [`DEFAULT_MAX_DEPTH`]).
    pub fn with_max_depth(mut self, depth: usize) -> Self {
        self.max_depth = depth;
        self
    }

    /// Sets the budget, in bytes, for all values this decoder returns
    /// (default 1 MiB + 64 × input length). Each value node counts as
    /// `size_of::<Value>()` plus its string or byte payload.
    pub fn with_max_output(mut self, bytes: usize) -> Self {
        self.max_output = bytes;
        self.output_left = bytes;
        self
    }

    /// Caps, in bytes counted as for [`Decoder::with_max_output`], the part
    /// of the output that repeats an object the pickle shares: a memo
    /// reference (`GET`) to an object already built makes a second copy of
    /// it in the tree, which is how a few bytes of input can stand for
    /// megabytes of output. Unlimited by default (only the output budget
    /// applies). Pickles written without a memo (ZEO's messages, Python's
    /// pickler in fast mode) make no copies, so a tight cap here bounds
    /// amplification without refusing large trees of fresh values.
    pub fn with_max_copied_output(mut self, bytes: usize) -> Self {
        self.max_copies = bytes;
        self.copies_left = bytes;
        self
    }

    /// Caps the decoder's own working memory (its stack, memo and the
    /// objects under construction), estimated in bytes; past it decoding
    /// fails with [`Error::LimitExceeded`]. Unlimited by default: the
    /// working memory is linear in the input, but one input byte can cost
    /// around a hundred bytes, which a caller decoding untrusted input of
    /// known purpose may want to bound more tightly.
    pub fn with_max_work(mut self, bytes: usize) -> Self {
        self.machine.set_max_work(bytes);
        self
    }

    /// Decodes the next pickle (up to and including its `STOP`).
    pub fn next_pickle(&mut self) -> Result<Value, Error> {
        let root = self.machine.run()?;
        let mut m = Materializer {
            machine: &self.machine,
            on_path: vec![false; self.machine.arena.len()],
            built: vec![false; self.machine.arena.len()],
            output_left: self.output_left,
            max_output: self.max_output,
            copies_left: self.copies_left,
            max_copies: self.max_copies,
            max_depth: self.max_depth,
            offset: self.machine.position(),
        };
        let v = m.value(root, 0)?;
        self.output_left = m.output_left;
        self.copies_left = m.copies_left;
        Ok(v)
    }

    /// Runs the next pickle without building its value; its memo entries
    /// stay available to the following pickles.
    pub fn skip_pickle(&mut self) -> Result<(), Error> {
        self.machine.run().map(|_| ())
    }

    /// Offset of the next unread byte.
    pub fn position(&self) -> usize {
        self.machine.position()
    }

    /// The bytes not read yet.
    pub fn remaining(&self) -> &'a [u8] {
        self.machine
            .data()
            .get(self.machine.position()..)
            .unwrap_or_default()
    }

    /// Whether all input has been read.
    pub fn is_at_end(&self) -> bool {
        self.remaining().is_empty()
    }
}

/// The global policy of ZEO's server-side message unpickler
/// (`ZEO.asyncio.marshal.server_find_global`): only globals from the modules
/// `ZopeUndo.Prefix`, `zodbpickle`, `builtins`, `copy_reg` and
/// `__builtin__` may appear in a client's message. (Python additionally
/// fails when the name does not exist in the module; no Python runs here,
/// so any name in those modules passes.)
pub fn zeo_server_find_global(module: &str, _name: &str) -> bool {
    matches!(
        module,
        "ZopeUndo.Prefix" | "zodbpickle" | "builtins" | "copy_reg" | "__builtin__"
    )
}

/// Decodes a byte string holding exactly one pickle.
///
/// Unlike Python's `loads`, bytes after the `STOP` are an error
/// ([`Error::TrailingData`]); use [`decode_prefix`] or [`Decoder`] to read
/// a pickle followed by more data.
pub fn decode(data: &[u8]) -> Result<Value, Error> {
    let (v, used) = decode_prefix(data)?;
    if used != data.len() {
        return Err(Error::TrailingData { offset: used });
    }
    Ok(v)
}

/// Decodes the pickle at the start of `data`; returns it and the number of
/// bytes it occupied.
pub fn decode_prefix(data: &[u8]) -> Result<(Value, usize), Error> {
    let mut d = Decoder::new(data);
    let v = d.next_pickle()?;
    Ok((v, d.position()))
}

/// Turns arena handles into an owned [`Value`] tree.
///
/// Iterative (an explicit task stack instead of recursion), so the depth
/// limit bounds the output, not this thread's stack.
struct Materializer<'m, 'a> {
    machine: &'m Machine<'a, 'a>,
    /// Nodes between the root and the node being built: meeting one again
    /// means the structure contains itself.
    on_path: Vec<bool>,
    /// Nodes already built once: building one again is a copy.
    built: Vec<bool>,
    output_left: usize,
    max_output: usize,
    copies_left: usize,
    max_copies: usize,
    max_depth: usize,
    offset: usize,
}

/// Work items of the materializer.
enum Task {
    /// Produce the value of this item (pushing it on the value stack), at
    /// this depth; `true` when it is part of a copy of a shared object.
    Visit(Item, usize, bool),
    /// The children of this node are on the value stack: assemble it.
    Finish(NodeId),
}

impl Materializer<'_, '_> {
    fn charge(&mut self, payload: usize, copy: bool) -> Result<(), Error> {
        let cost = std::mem::size_of::<Value>().saturating_add(payload);
        match self.output_left.checked_sub(cost) {
            Some(left) => self.output_left = left,
            None => {
                return Err(Error::LimitExceeded {
                    offset: self.offset,
                    what: format!("decoded output over {} bytes", self.max_output),
                })
            }
        }
        if copy {
            match self.copies_left.checked_sub(cost) {
                Some(left) => self.copies_left = left,
                None => {
                    return Err(Error::LimitExceeded {
                        offset: self.offset,
                        what: format!("copies of shared objects over {} bytes", self.max_copies),
                    })
                }
            }
        }
        Ok(())
    }

    fn dangling(&self) -> Error {
        Error::malformed(self.offset, "internal: dangling node")
    }

    fn value(&mut self, root: Item, depth: usize) -> Result<Value, Error> {
        let machine = self.machine;
        let mut tasks = vec![Task::Visit(root, depth, false)];
        let mut values: Vec<Value> = Vec::new();
        while let Some(task) = tasks.pop() {
            match task {
                Task::Visit(item, depth, copy) => {
                    self.charge(0, copy)?;
                    let id = match item {
                        Item::None => {
                            values.push(Value::None);
                            continue;
                        }
                        Item::Bool(b) => {
                            values.push(Value::Bool(b));
                            continue;
                        }
                        Item::Int(n) => {
                            values.push(Value::Int(n));
                            continue;
                        }
                        Item::Float(f) => {
                            values.push(Value::Float(f));
                            continue;
                        }
                        Item::Node(id) => id,
                    };
                    if depth >= self.max_depth {
                        return Err(Error::LimitExceeded {
                            offset: self.offset,
                            what: format!("nesting deeper than {}", self.max_depth),
                        });
                    }
                    let node = machine.node(id).ok_or_else(|| self.dangling())?;
                    let copy = match self.built.get_mut(id) {
                        Some(built) => copy || std::mem::replace(built, true),
                        None => return Err(self.dangling()),
                    };
                    let leaf = match node {
                        Node::BigInt(b) => Some((b.len(), Value::BigInt(b.clone()))),
                        Node::Bytes(b) => Some((b.len(), Value::Bytes(b.to_vec()))),
                        Node::ByteArray(b) => Some((b.len(), Value::ByteArray(b.to_vec()))),
                        Node::Str(s) => Some((s.len(), Value::Str(s.to_string()))),
                        Node::Global { module, name } => Some((
                            module.len() + name.len(),
                            Value::Global {
                                module: module.to_string(),
                                name: name.to_string(),
                            },
                        )),
                        _ => None,
                    };
                    if let Some((payload, v)) = leaf {
                        self.charge(payload, copy)?;
                        values.push(v);
                        continue;
                    }
                    match self.on_path.get_mut(id) {
                        Some(flag) if *flag => {
                            return Err(Error::Recursive {
                                offset: self.offset,
                            })
                        }
                        Some(flag) => *flag = true,
                        None => return Err(self.dangling()),
                    }
                    tasks.push(Task::Finish(id));
                    let d = depth + 1;
                    // Children are pushed last-first so they finish in order.
                    let visit = |tasks: &mut Vec<Task>, items: &[Item]| {
                        tasks.extend(items.iter().rev().map(|&i| Task::Visit(i, d, copy)));
                    };
                    let visit_pairs = |tasks: &mut Vec<Task>, items: &[(Item, Item)]| {
                        for &(k, v) in items.iter().rev() {
                            tasks.push(Task::Visit(v, d, copy));
                            tasks.push(Task::Visit(k, d, copy));
                        }
                    };
                    match node {
                        Node::Tuple(items)
                        | Node::List(items)
                        | Node::Set(items)
                        | Node::FrozenSet(items) => visit(&mut tasks, items),
                        Node::Dict(items) => visit_pairs(&mut tasks, items),
                        Node::Call { callable, args, .. } => visit(&mut tasks, &[*callable, *args]),
                        Node::Build { object, state } => visit(&mut tasks, &[*object, *state]),
                        Node::PersistentId(pid) => visit(&mut tasks, &[*pid]),
                        Node::ListItems { object, items } => {
                            visit(&mut tasks, items);
                            tasks.push(Task::Visit(*object, d, copy));
                        }
                        Node::DictItems { object, items } => {
                            visit_pairs(&mut tasks, items);
                            tasks.push(Task::Visit(*object, d, copy));
                        }
                        Node::BigInt(_)
                        | Node::Bytes(_)
                        | Node::ByteArray(_)
                        | Node::Str(_)
                        | Node::Global { .. } => return Err(self.dangling()),
                    }
                }
                Task::Finish(id) => {
                    let node = machine.node(id).ok_or_else(|| self.dangling())?;
                    let v = self.assemble(node, &mut values)?;
                    values.push(v);
                    if let Some(flag) = self.on_path.get_mut(id) {
                        *flag = false;
                    }
                }
            }
        }
        values.pop().ok_or_else(|| self.dangling())
    }

    /// Builds a compound node from its children's values, which are the
    /// last entries of `values`.
    fn assemble(&self, node: &Node<'_>, values: &mut Vec<Value>) -> Result<Value, Error> {
        let mut take = |n: usize| -> Result<Vec<Value>, Error> {
            let start = values.len().checked_sub(n).ok_or_else(|| self.dangling())?;
            Ok(values.split_off(start))
        };
        let pairs = |flat: Vec<Value>| -> Vec<(Value, Value)> {
            let mut out = Vec::with_capacity(flat.len() / 2);
            let mut it = flat.into_iter();
            while let (Some(k), Some(v)) = (it.next(), it.next()) {
                out.push((k, v));
            }
            out
        };
        let two = |mut v: Vec<Value>| -> Result<(Value, Value), Error> {
            match (v.pop(), v.pop()) {
                (Some(second), Some(first)) => Ok((first, second)),
                _ => Err(self.dangling()),
            }
        };
        Ok(match node {
            Node::Tuple(items) => Value::Tuple(take(items.len())?),
            Node::List(items) => Value::List(take(items.len())?),
            Node::Set(items) => Value::Set(take(items.len())?),
            Node::FrozenSet(items) => Value::FrozenSet(take(items.len())?),
            Node::Dict(items) => Value::Dict(pairs(take(items.len() * 2)?)),
            Node::Call { new_object, .. } => {
                let (callable, args) = two(take(2)?)?;
                if *new_object {
                    Value::Call {
                        callable: Box::new(callable),
                        args: Box::new(args),
                        new_object: true,
                    }
                } else {
                    fold_builtin_call(callable, args)
                }
            }
            Node::Build { .. } => {
                let (object, state) = two(take(2)?)?;
                Value::Build {
                    object: Box::new(object),
                    state: Box::new(state),
                }
            }
            Node::PersistentId(_) => {
                let pid = take(1)?.pop().ok_or_else(|| self.dangling())?;
                Value::PersistentId(Box::new(pid))
            }
            Node::ListItems { items, .. } => {
                let mut all = take(items.len() + 1)?.into_iter();
                let object = all.next().ok_or_else(|| self.dangling())?;
                Value::ListItems {
                    object: Box::new(object),
                    items: all.collect(),
                }
            }
            Node::DictItems { items, .. } => {
                let mut all = take(items.len() * 2 + 1)?.into_iter();
                let object = all.next().ok_or_else(|| self.dangling())?;
                Value::DictItems {
                    object: Box::new(object),
                    items: pairs(all.collect()),
                }
            }
            Node::BigInt(_)
            | Node::Bytes(_)
            | Node::ByteArray(_)
            | Node::Str(_)
            | Node::Global { .. } => return Err(self.dangling()),
        })
    }
}

fn is_builtins(module: &str) -> bool {
    module == "builtins" || module == "__builtin__"
}

fn is_latin1_name(v: &Value) -> bool {
    matches!(v, Value::Str(s) if s == "latin1" || s == "latin-1")
}

fn latin1_bytes(s: &str) -> Option<Vec<u8>> {
    s.chars().map(|c| u8::try_from(u32::from(c)).ok()).collect()
}

/// Builtin types that protocols 2 and 3 spell as a call.
#[derive(Clone, Copy)]
enum Builtin {
    Bytes,
    Latin1Encode,
    ByteArray,
    Set,
    FrozenSet,
}

fn builtin_of(callable: &Value) -> Option<Builtin> {
    let Value::Global { module, name } = callable else {
        return None;
    };
    match (module.as_str(), name.as_str()) {
        ("_codecs", "encode") => Some(Builtin::Latin1Encode),
        (m, "bytes") if is_builtins(m) => Some(Builtin::Bytes),
        (m, "bytearray") if is_builtins(m) => Some(Builtin::ByteArray),
        (m, "set") if is_builtins(m) => Some(Builtin::Set),
        (m, "frozenset") if is_builtins(m) => Some(Builtin::FrozenSet),
        _ => None,
    }
}

/// Recognizes how protocols 2 and 3 spell builtin types that have no opcode
/// (`set`, `frozenset`, `bytearray`, and `bytes` under protocol 2) and gives
/// the value Python's `loads` would produce; any other call stays a call.
fn fold_builtin_call(callable: Value, args: Value) -> Value {
    let Some(kind) = builtin_of(&callable) else {
        return Value::Call {
            callable: Box::new(callable),
            args: Box::new(args),
            new_object: false,
        };
    };
    let folded = match (kind, args) {
        (Builtin::Bytes, Value::Tuple(a)) if a.is_empty() => Ok(Value::Bytes(Vec::new())),
        (Builtin::ByteArray, Value::Tuple(a)) if a.is_empty() => Ok(Value::ByteArray(Vec::new())),
        (Builtin::Set, Value::Tuple(a)) if a.is_empty() => Ok(Value::Set(Vec::new())),
        (Builtin::FrozenSet, Value::Tuple(a)) if a.is_empty() => Ok(Value::FrozenSet(Vec::new())),
        (Builtin::Latin1Encode, Value::Tuple(a)) => match a.as_slice() {
            [Value::Str(s), enc] if is_latin1_name(enc) => match latin1_bytes(s) {
                Some(b) => Ok(Value::Bytes(b)),
                None => Err(Value::Tuple(a)),
            },
            _ => Err(Value::Tuple(a)),
        },
        (Builtin::ByteArray, Value::Tuple(mut a)) => match a.as_mut_slice() {
            [Value::Bytes(b)] => Ok(Value::ByteArray(std::mem::take(b))),
            [Value::Str(s), enc] if is_latin1_name(enc) => match latin1_bytes(s) {
                Some(b) => Ok(Value::ByteArray(b)),
                None => Err(Value::Tuple(a)),
            },
            _ => Err(Value::Tuple(a)),
        },
        (Builtin::Set | Builtin::FrozenSet, Value::Tuple(mut a)) => match a.as_mut_slice() {
            [Value::List(items)] => {
                let items = std::mem::take(items);
                Ok(match kind {
                    Builtin::Set => Value::Set(items),
                    _ => Value::FrozenSet(items),
                })
            }
            _ => Err(Value::Tuple(a)),
        },
        (_, other) => Err(other),
    };
    folded.unwrap_or_else(|args| Value::Call {
        callable: Box::new(callable),
        args: Box::new(args),
        new_object: false,
    })
}
