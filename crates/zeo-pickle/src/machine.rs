//! The unpickling stack machine.
//!
//! Python objects are mutable and shared: the pickler memoizes an empty list
//! *before* appending to it, a `GET` may hand the same dict to two places,
//! and `BUILD` sets the state of an object already in the memo. So the
//! machine keeps every non-scalar object in an arena and moves cheap handles
//! ([`Item`]) around the stack and memo; mutations change the arena node and
//! are seen by every holder, as in Python. Strings and bytes borrow from the
//! input where they can, so scanning a record for references copies little.
//!
//! Growth is bounded by the input: each opcode consumes at least one byte and
//! adds at most two arena nodes and one stack or memo entry, and nothing is
//! ever allocated from a length field before the bytes are known to exist.
//! That still lets one input byte cost a hundred bytes of working memory
//! (`)` makes an arena node and a stack slot), so the machine also keeps a
//! running estimate of what it allocated and stops at a budget
//! ([`Machine::set_max_work`]).
//! Turning the arena into a [`crate::Value`] tree (where sharing becomes
//! copying) is done by [`crate::decode`] under an output budget.

use std::borrow::Cow;
use std::collections::HashMap;

use crate::error::Error;
use crate::opcodes::*;
use crate::text::{self, Integer};

/// Index of a node in the arena.
pub(crate) type NodeId = usize;

/// A stack or memo slot: scalars inline, everything else in the arena.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum Item {
    None,
    Bool(bool),
    Int(i64),
    Float(f64),
    Node(NodeId),
}

/// An object under construction; mirrors [`crate::Value`] with handles.
#[derive(Debug)]
pub(crate) enum Node<'a> {
    BigInt(Vec<u8>),
    Bytes(Cow<'a, [u8]>),
    ByteArray(Cow<'a, [u8]>),
    Str(Cow<'a, str>),
    Tuple(Vec<Item>),
    List(Vec<Item>),
    Dict(Vec<(Item, Item)>),
    Set(Vec<Item>),
    FrozenSet(Vec<Item>),
    Global {
        module: Cow<'a, str>,
        name: Cow<'a, str>,
    },
    Call {
        callable: Item,
        args: Item,
        new_object: bool,
    },
    Build {
        object: Item,
        state: Item,
    },
    PersistentId(Item),
    ListItems {
        object: Item,
        items: Vec<Item>,
    },
    DictItems {
        object: Item,
        items: Vec<(Item, Item)>,
    },
}

/// Decides whether a `GLOBAL` may be loaded: `(module, name) -> allowed`.
pub(crate) type FindGlobal<'h> = Box<dyn Fn(&str, &str) -> bool + 'h>;

/// Memo slots: dense for the keys picklers really use (0, 1, 2, ...), a map
/// for anything else so a huge key cannot force a huge vector.
#[derive(Debug, Default)]
struct Memo {
    dense: Vec<Option<Item>>,
    sparse: HashMap<u64, Item>,
    count: usize,
}

/// How far past the end of the dense part a key may land and still be
/// stored densely; bounds the padding one opcode can cause.
const MEMO_DENSE_SLACK: u64 = 16;

impl Memo {
    fn put(&mut self, key: u64, item: Item) {
        let len = self.dense.len() as u64;
        let fresh = if key < len {
            self.dense[key as usize].replace(item).is_none()
        } else if key < len + MEMO_DENSE_SLACK && self.sparse.is_empty() {
            self.dense.resize(key as usize, None);
            self.dense.push(Some(item));
            true
        } else {
            self.sparse.insert(key, item).is_none()
        };
        if fresh {
            self.count += 1;
        }
    }

    fn get(&self, key: u64) -> Option<Item> {
        // Keys at or past the dense part's end (which stops growing once
        // the map is in use) live in the map.
        match usize::try_from(key).ok().and_then(|k| self.dense.get(k)) {
            Some(slot) => *slot,
            None => self.sparse.get(&key).copied(),
        }
    }
}

/// The unpickler state that outlives one pickle: input, arena and memo.
pub(crate) struct Machine<'a, 'h> {
    data: &'a [u8],
    pos: usize,
    /// Offset of the opcode being executed, for error messages.
    op_pos: usize,
    pub(crate) arena: Vec<Node<'a>>,
    memo: Memo,
    stack: Vec<Item>,
    marks: Vec<usize>,
    find_global: Option<FindGlobal<'h>>,
    /// When set, every persistent id loaded is recorded here.
    pub(crate) persistent_ids: Option<Vec<Item>>,
    /// Whether a Python 2 byte string opcode (`STRING`, `BINSTRING`,
    /// `SHORT_BINSTRING`) was read: Python 3 loads those as `str` where
    /// they decode, which the graph view's users must know.
    pub(crate) py2_strings: bool,
    /// Bytes allocated so far (stack and arena allocations, node vectors,
    /// memo entries, copied strings), estimated; it only ever grows, freed
    /// allocations included, so it bounds the peak.
    work: usize,
    /// Budget for `work`, checked before every opcode.
    max_work: usize,
}

/// Estimated cost of one memo entry (slot plus map overhead).
const MEMO_ENTRY_COST: usize = 2 * std::mem::size_of::<Item>();

fn utf8<'a>(offset: usize, bytes: &'a [u8], what: &str) -> Result<Cow<'a, str>, Error> {
    std::str::from_utf8(bytes)
        .map(Cow::Borrowed)
        .map_err(|e| Error::malformed(offset, format!("{what} is not valid UTF-8: {e}")))
}

impl<'a, 'h> Machine<'a, 'h> {
    pub(crate) fn new(data: &'a [u8]) -> Self {
        Machine {
            data,
            pos: 0,
            op_pos: 0,
            // Roughly one node per few input bytes; capped so a large input
            // does not reserve memory before it is read.
            arena: Vec::with_capacity((data.len() / 4).min(1 << 12)),
            memo: Memo::default(),
            stack: Vec::with_capacity(32),
            marks: Vec::new(),
            find_global: None,
            persistent_ids: None,
            py2_strings: false,
            work: 0,
            max_work: usize::MAX,
        }
    }

    /// Caps the estimated working memory (see the module documentation).
    pub(crate) fn set_max_work(&mut self, bytes: usize) {
        self.max_work = bytes;
    }

    fn charge(&mut self, bytes: usize) {
        self.work = self.work.saturating_add(bytes);
    }

    fn charge_items(&mut self, n: usize) {
        self.charge(n.saturating_mul(std::mem::size_of::<Item>()));
    }

    pub(crate) fn set_find_global(&mut self, f: Option<FindGlobal<'h>>) {
        self.find_global = f;
    }

    pub(crate) fn position(&self) -> usize {
        self.pos
    }

    pub(crate) fn data(&self) -> &'a [u8] {
        self.data
    }

    pub(crate) fn node(&self, id: NodeId) -> Option<&Node<'a>> {
        self.arena.get(id)
    }

    // ----- input -----

    fn truncated(&self) -> Error {
        Error::Truncated {
            offset: self.op_pos,
        }
    }

    fn malformed(&self, message: impl Into<String>) -> Error {
        Error::malformed(self.op_pos, message)
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8], Error> {
        let end = self.pos.checked_add(n).ok_or_else(|| self.truncated())?;
        let bytes = self
            .data
            .get(self.pos..end)
            .ok_or_else(|| self.truncated())?;
        self.pos = end;
        Ok(bytes)
    }

    fn take_array<const N: usize>(&mut self) -> Result<[u8; N], Error> {
        let bytes = self.take(N)?;
        let mut out = [0u8; N];
        out.copy_from_slice(bytes);
        Ok(out)
    }

    fn take_u8(&mut self) -> Result<u8, Error> {
        Ok(self.take_array::<1>()?[0])
    }

    fn take_u32(&mut self) -> Result<u32, Error> {
        Ok(u32::from_le_bytes(self.take_array()?))
    }

    /// A length field; the bytes it announces are checked when taken.
    fn take_len4(&mut self) -> Result<usize, Error> {
        let n = self.take_u32()?;
        usize::try_from(n).map_err(|_| self.truncated())
    }

    fn take_len8(&mut self) -> Result<usize, Error> {
        let n = u64::from_le_bytes(self.take_array()?);
        usize::try_from(n).map_err(|_| self.truncated())
    }

    /// A newline-terminated argument, without the newline.
    fn take_line(&mut self) -> Result<&'a [u8], Error> {
        let rest = self.data.get(self.pos..).unwrap_or_default();
        let n = rest
            .iter()
            .position(|&b| b == b'\n')
            .ok_or_else(|| self.truncated())?;
        self.pos += n + 1;
        Ok(&rest[..n])
    }

    // ----- stack -----

    fn floor(&self) -> usize {
        self.marks.last().copied().unwrap_or(0)
    }

    fn push(&mut self, item: Item) {
        let before = self.stack.capacity();
        self.stack.push(item);
        // Charged by allocation, since the stack's capacity can reach twice
        // its length.
        if self.stack.capacity() != before {
            self.charge_items(self.stack.capacity());
        }
    }

    fn push_node(&mut self, node: Node<'a>) {
        let id = self.alloc(node);
        self.push(Item::Node(id));
    }

    fn alloc(&mut self, node: Node<'a>) -> NodeId {
        if self.arena.len() == self.arena.capacity() {
            // What the arena's next allocation will hold at most.
            let grown = self.arena.capacity().saturating_mul(2).max(4);
            self.charge(grown.saturating_mul(std::mem::size_of::<Node<'a>>()));
        }
        if let Node::Bytes(Cow::Owned(b)) | Node::ByteArray(Cow::Owned(b)) = &node {
            self.charge(b.len());
        }
        if let Node::Str(Cow::Owned(s)) = &node {
            self.charge(s.len());
        }
        self.arena.push(node);
        self.arena.len() - 1
    }

    fn pop(&mut self) -> Result<Item, Error> {
        if self.stack.len() <= self.floor() {
            return Err(self.malformed("stack underflow"));
        }
        self.stack
            .pop()
            .ok_or_else(|| self.malformed("stack underflow"))
    }

    fn top_index(&self) -> Result<usize, Error> {
        if self.stack.len() <= self.floor() {
            return Err(self.malformed("stack underflow"));
        }
        Ok(self.stack.len() - 1)
    }

    fn top(&self) -> Result<Item, Error> {
        let i = self.top_index()?;
        Ok(self.stack[i])
    }

    fn pop_mark(&mut self) -> Result<Vec<Item>, Error> {
        let mark = self
            .marks
            .pop()
            .ok_or_else(|| self.malformed("MARK expected but not found"))?;
        // The items move to a fresh vector; the stack keeps its capacity.
        self.charge_items(self.stack.len().saturating_sub(mark));
        Ok(self.stack.split_off(mark.min(self.stack.len())))
    }

    fn node_mut(&mut self, id: NodeId) -> Result<&mut Node<'a>, Error> {
        let offset = self.op_pos;
        self.arena
            .get_mut(id)
            .ok_or_else(|| Error::malformed(offset, "internal: dangling node"))
    }

    fn str_of(&self, item: Item) -> Option<&str> {
        match item {
            Item::Node(id) => match self.arena.get(id)? {
                Node::Str(s) => Some(s),
                _ => None,
            },
            _ => None,
        }
    }

    /// Replaces node `id` by `wrap(old node as a fresh node)`; holders of
    /// `id` then see the wrapper, as Python's in-place mutation would show.
    fn wrap_node(&mut self, id: NodeId, wrap: impl FnOnce(Item) -> Node<'a>) -> Result<(), Error> {
        let old = std::mem::replace(self.node_mut(id)?, Node::Tuple(Vec::new()));
        let inner = self.alloc(old);
        *self.node_mut(id)? = wrap(Item::Node(inner));
        Ok(())
    }

    fn append_to_top(&mut self, items: Vec<Item>) -> Result<(), Error> {
        let i = self.top_index()?;
        if items.is_empty() {
            // Nothing to record; a wrapper without items would not survive
            // re-encoding.
            return Ok(());
        }
        let target = self.stack[i];
        let Item::Node(id) = target else {
            let id = self.alloc(Node::ListItems {
                object: target,
                items,
            });
            self.stack[i] = Item::Node(id);
            return Ok(());
        };
        match self.node_mut(id)? {
            Node::List(v) | Node::ListItems { items: v, .. } => {
                v.extend(items);
                Ok(())
            }
            _ => self.wrap_node(id, |object| Node::ListItems { object, items }),
        }
    }

    fn setitems_on_top(&mut self, pairs: Vec<(Item, Item)>) -> Result<(), Error> {
        let i = self.top_index()?;
        if pairs.is_empty() {
            return Ok(());
        }
        let target = self.stack[i];
        let Item::Node(id) = target else {
            let id = self.alloc(Node::DictItems {
                object: target,
                items: pairs,
            });
            self.stack[i] = Item::Node(id);
            return Ok(());
        };
        match self.node_mut(id)? {
            Node::Dict(v) | Node::DictItems { items: v, .. } => {
                v.extend(pairs);
                Ok(())
            }
            _ => self.wrap_node(id, |object| Node::DictItems {
                object,
                items: pairs,
            }),
        }
    }

    fn pairs(&mut self, items: Vec<Item>) -> Result<Vec<(Item, Item)>, Error> {
        if items.len() % 2 != 0 {
            return Err(self.malformed("odd number of items for SETITEMS/DICT"));
        }
        self.charge_items(items.len());
        let mut out = Vec::with_capacity(items.len() / 2);
        let mut it = items.into_iter();
        while let (Some(k), Some(v)) = (it.next(), it.next()) {
            out.push((k, v));
        }
        Ok(out)
    }

    fn global(&mut self, module: Cow<'a, str>, name: Cow<'a, str>) -> Result<NodeId, Error> {
        if let Some(allowed) = &self.find_global {
            if !allowed(&module, &name) {
                return Err(Error::GlobalRejected {
                    offset: self.op_pos,
                    module: module.into_owned(),
                    name: name.into_owned(),
                });
            }
        }
        Ok(self.alloc(Node::Global { module, name }))
    }

    fn memo_get(&mut self, key: u64) -> Result<(), Error> {
        let item = self.memo.get(key).ok_or(Error::MissingMemo {
            offset: self.op_pos,
            key,
        })?;
        self.push(item);
        Ok(())
    }

    fn memo_put(&mut self, key: u64) -> Result<(), Error> {
        let item = self.top()?;
        self.charge(MEMO_ENTRY_COST);
        self.memo.put(key, item);
        Ok(())
    }

    fn line_key(&self, line: &[u8]) -> Result<u64, Error> {
        std::str::from_utf8(line)
            .ok()
            .and_then(|s| s.trim().parse::<u64>().ok())
            .ok_or_else(|| self.malformed("bad memo key text"))
    }

    fn push_integer(&mut self, v: Integer) {
        match v {
            Integer::Small(n) => self.push(Item::Int(n)),
            Integer::Big(b) => self.push_node(Node::BigInt(b)),
        }
    }

    fn text_integer(&mut self, line: &[u8]) -> Result<(), Error> {
        match text::parse_decimal(line) {
            Ok(Some(v)) => {
                self.push_integer(v);
                Ok(())
            }
            Ok(None) => Err(self.malformed("invalid integer text")),
            Err(()) => Err(Error::LimitExceeded {
                offset: self.op_pos,
                what: format!("more than {} decimal digits", text::MAX_DECIMAL_DIGITS),
            }),
        }
    }

    fn persistent_id(&mut self, pid: Item) {
        if let Some(ids) = &mut self.persistent_ids {
            ids.push(pid);
        }
        self.push_node(Node::PersistentId(pid));
    }

    /// Runs one pickle up to and including its `STOP`; returns its value.
    ///
    /// The memo and arena carry over to the next call, which is how the
    /// second pickle of a ZODB record refers to the first one's memo.
    pub(crate) fn run(&mut self) -> Result<Item, Error> {
        self.stack.clear();
        self.marks.clear();
        loop {
            self.op_pos = self.pos;
            if self.work > self.max_work {
                return Err(Error::LimitExceeded {
                    offset: self.op_pos,
                    what: format!("pickle decoder working memory over {} bytes", self.max_work),
                });
            }
            let op = self.take_u8()?;
            match op {
                PROTO => {
                    let p = self.take_u8()?;
                    if p > HIGHEST_PROTOCOL {
                        return Err(Error::Unsupported {
                            offset: self.op_pos,
                            what: format!("pickle protocol {p}"),
                        });
                    }
                }
                FRAME => {
                    // Frames only help buffered readers; just check the
                    // announced size is there.
                    let n = self.take_len8()?;
                    if n > self.data.len().saturating_sub(self.pos) {
                        return Err(self.truncated());
                    }
                }
                STOP => {
                    let v = self.pop()?;
                    self.stack.clear();
                    self.marks.clear();
                    return Ok(v);
                }
                MARK => self.marks.push(self.stack.len()),
                POP => {
                    if self.stack.len() > self.floor() {
                        self.stack.pop();
                    } else {
                        // Python pops the mark itself when the frame is empty.
                        self.pop_mark()?;
                    }
                }
                POP_MARK => {
                    self.pop_mark()?;
                }
                DUP => {
                    let v = self.top()?;
                    self.push(v);
                }

                // ----- memo -----
                PUT => {
                    let line = self.take_line()?;
                    let key = self.line_key(line)?;
                    self.memo_put(key)?;
                }
                BINPUT => {
                    let key = self.take_u8()?;
                    self.memo_put(u64::from(key))?;
                }
                LONG_BINPUT => {
                    let key = self.take_u32()?;
                    self.memo_put(u64::from(key))?;
                }
                MEMOIZE => {
                    let key = self.memo.count as u64;
                    self.memo_put(key)?;
                }
                GET => {
                    let line = self.take_line()?;
                    let key = self.line_key(line)?;
                    self.memo_get(key)?;
                }
                BINGET => {
                    let key = self.take_u8()?;
                    self.memo_get(u64::from(key))?;
                }
                LONG_BINGET => {
                    let key = self.take_u32()?;
                    self.memo_get(u64::from(key))?;
                }

                // ----- scalars -----
                NONE => self.push(Item::None),
                NEWTRUE => self.push(Item::Bool(true)),
                NEWFALSE => self.push(Item::Bool(false)),
                INT => {
                    let line = self.take_line()?;
                    match line {
                        b"00" => self.push(Item::Bool(false)),
                        b"01" => self.push(Item::Bool(true)),
                        _ => self.text_integer(line)?,
                    }
                }
                LONG => {
                    let line = self.take_line()?;
                    let line = line.strip_suffix(b"L").unwrap_or(line);
                    self.text_integer(line)?;
                }
                BININT => {
                    let v = i32::from_le_bytes(self.take_array()?);
                    self.push(Item::Int(i64::from(v)));
                }
                BININT1 => {
                    let v = self.take_u8()?;
                    self.push(Item::Int(i64::from(v)));
                }
                BININT2 => {
                    let v = u16::from_le_bytes(self.take_array()?);
                    self.push(Item::Int(i64::from(v)));
                }
                LONG1 => {
                    let n = usize::from(self.take_u8()?);
                    let bytes = self.take(n)?;
                    self.push_integer(text::integer_from_le(bytes));
                }
                LONG4 => {
                    let n = i32::from_le_bytes(self.take_array()?);
                    let n = usize::try_from(n)
                        .map_err(|_| self.malformed("LONG4 with negative byte count"))?;
                    let bytes = self.take(n)?;
                    self.push_integer(text::integer_from_le(bytes));
                }
                FLOAT => {
                    let line = self.take_line()?;
                    let v = std::str::from_utf8(line)
                        .ok()
                        .and_then(|s| s.trim().parse::<f64>().ok())
                        .ok_or_else(|| self.malformed("invalid float text"))?;
                    self.push(Item::Float(v));
                }
                BINFLOAT => {
                    let v = f64::from_be_bytes(self.take_array()?);
                    self.push(Item::Float(v));
                }

                // ----- strings -----
                STRING => {
                    self.py2_strings = true;
                    let line = self.take_line()?;
                    let line = line.trim_ascii_end();
                    let quoted = match line {
                        [q @ (b'"' | b'\''), inner @ .., last] if last == q => inner,
                        _ => return Err(self.malformed("STRING argument must be quoted")),
                    };
                    let bytes = text::escape_decode(quoted).map_err(|e| self.malformed(e))?;
                    self.push_node(Node::Bytes(Cow::Owned(bytes)));
                }
                BINSTRING => {
                    self.py2_strings = true;
                    let n = i32::from_le_bytes(self.take_array()?);
                    let n = usize::try_from(n)
                        .map_err(|_| self.malformed("BINSTRING with negative length"))?;
                    let bytes = self.take(n)?;
                    self.push_node(Node::Bytes(Cow::Borrowed(bytes)));
                }
                SHORT_BINSTRING | SHORT_BINBYTES => {
                    self.py2_strings |= op == SHORT_BINSTRING;
                    let n = usize::from(self.take_u8()?);
                    let bytes = self.take(n)?;
                    self.push_node(Node::Bytes(Cow::Borrowed(bytes)));
                }
                BINBYTES => {
                    let n = self.take_len4()?;
                    let bytes = self.take(n)?;
                    self.push_node(Node::Bytes(Cow::Borrowed(bytes)));
                }
                BINBYTES8 => {
                    let n = self.take_len8()?;
                    let bytes = self.take(n)?;
                    self.push_node(Node::Bytes(Cow::Borrowed(bytes)));
                }
                BYTEARRAY8 => {
                    let n = self.take_len8()?;
                    let bytes = self.take(n)?;
                    self.push_node(Node::ByteArray(Cow::Borrowed(bytes)));
                }
                UNICODE => {
                    let line = self.take_line()?;
                    let s = text::raw_unicode_escape(line).map_err(|e| self.malformed(e))?;
                    self.push_node(Node::Str(Cow::Owned(s)));
                }
                SHORT_BINUNICODE => {
                    let n = usize::from(self.take_u8()?);
                    let s = utf8(self.op_pos, self.take(n)?, "string")?;
                    self.push_node(Node::Str(s));
                }
                BINUNICODE => {
                    let n = self.take_len4()?;
                    let s = utf8(self.op_pos, self.take(n)?, "string")?;
                    self.push_node(Node::Str(s));
                }
                BINUNICODE8 => {
                    let n = self.take_len8()?;
                    let s = utf8(self.op_pos, self.take(n)?, "string")?;
                    self.push_node(Node::Str(s));
                }

                // ----- containers -----
                EMPTY_TUPLE => self.push_node(Node::Tuple(Vec::new())),
                TUPLE1 | TUPLE2 | TUPLE3 => {
                    let n = usize::from(op - TUPLE1 + 1);
                    let floor = self.floor();
                    if self.stack.len() < floor + n {
                        return Err(self.malformed("stack underflow"));
                    }
                    self.charge_items(n);
                    let items = self.stack.split_off(self.stack.len() - n);
                    self.push_node(Node::Tuple(items));
                }
                TUPLE => {
                    let items = self.pop_mark()?;
                    self.push_node(Node::Tuple(items));
                }
                EMPTY_LIST => self.push_node(Node::List(Vec::new())),
                LIST => {
                    let items = self.pop_mark()?;
                    self.push_node(Node::List(items));
                }
                APPEND => {
                    let v = self.pop()?;
                    self.append_to_top(vec![v])?;
                }
                APPENDS => {
                    let items = self.pop_mark()?;
                    self.append_to_top(items)?;
                }
                EMPTY_DICT => self.push_node(Node::Dict(Vec::new())),
                DICT => {
                    let items = self.pop_mark()?;
                    let pairs = self.pairs(items)?;
                    self.push_node(Node::Dict(pairs));
                }
                SETITEM => {
                    let v = self.pop()?;
                    let k = self.pop()?;
                    self.setitems_on_top(vec![(k, v)])?;
                }
                SETITEMS => {
                    let items = self.pop_mark()?;
                    let pairs = self.pairs(items)?;
                    self.setitems_on_top(pairs)?;
                }
                EMPTY_SET => self.push_node(Node::Set(Vec::new())),
                ADDITEMS => {
                    let items = self.pop_mark()?;
                    let id = match self.top()? {
                        Item::Node(id) => id,
                        _ => return Err(self.malformed("ADDITEMS target is not a set")),
                    };
                    match self.node_mut(id)? {
                        Node::Set(v) => v.extend(items),
                        _ => return Err(self.malformed("ADDITEMS target is not a set")),
                    }
                }
                FROZENSET => {
                    let items = self.pop_mark()?;
                    self.push_node(Node::FrozenSet(items));
                }

                // ----- objects -----
                GLOBAL => {
                    let module = utf8(self.op_pos, self.take_line()?, "module name")?;
                    let name = utf8(self.op_pos, self.take_line()?, "global name")?;
                    let id = self.global(module, name)?;
                    self.push(Item::Node(id));
                }
                STACK_GLOBAL => {
                    let name = self.pop()?;
                    let module = self.pop()?;
                    let (Some(module), Some(name)) = (self.str_of(module), self.str_of(name))
                    else {
                        return Err(self.malformed("STACK_GLOBAL requires str"));
                    };
                    let (module, name) = (module.to_owned(), name.to_owned());
                    let id = self.global(Cow::Owned(module), Cow::Owned(name))?;
                    self.push(Item::Node(id));
                }
                REDUCE => {
                    let args = self.pop()?;
                    let callable = self.pop()?;
                    self.push_node(Node::Call {
                        callable,
                        args,
                        new_object: false,
                    });
                }
                NEWOBJ => {
                    let args = self.pop()?;
                    let callable = self.pop()?;
                    self.push_node(Node::Call {
                        callable,
                        args,
                        new_object: true,
                    });
                }
                NEWOBJ_EX => {
                    // Spelled the way protocols < 4 spell it, so it fits the
                    // value model: copyreg.__newobj_ex__(cls, args, kwargs).
                    let kwargs = self.pop()?;
                    let args = self.pop()?;
                    let class = self.pop()?;
                    let callable = self.alloc(Node::Global {
                        module: Cow::Borrowed("copyreg"),
                        name: Cow::Borrowed("__newobj_ex__"),
                    });
                    let args = self.alloc(Node::Tuple(vec![class, args, kwargs]));
                    self.push_node(Node::Call {
                        callable: Item::Node(callable),
                        args: Item::Node(args),
                        new_object: false,
                    });
                }
                INST => {
                    let module = utf8(self.op_pos, self.take_line()?, "module name")?;
                    let name = utf8(self.op_pos, self.take_line()?, "class name")?;
                    let args = self.pop_mark()?;
                    let class = self.global(module, name)?;
                    let args = self.alloc(Node::Tuple(args));
                    self.push_node(Node::Call {
                        callable: Item::Node(class),
                        args: Item::Node(args),
                        new_object: false,
                    });
                }
                OBJ => {
                    let mut args = self.pop_mark()?;
                    if args.is_empty() {
                        return Err(self.malformed("OBJ without a class"));
                    }
                    let class = args.remove(0);
                    let args = self.alloc(Node::Tuple(args));
                    self.push_node(Node::Call {
                        callable: class,
                        args: Item::Node(args),
                        new_object: false,
                    });
                }
                BUILD => {
                    let state = self.pop()?;
                    let i = self.top_index()?;
                    match self.stack[i] {
                        Item::Node(id) => {
                            self.wrap_node(id, |object| Node::Build { object, state })?;
                        }
                        object => {
                            let id = self.alloc(Node::Build { object, state });
                            self.stack[i] = Item::Node(id);
                        }
                    }
                }
                PERSID => {
                    let line = self.take_line()?;
                    if !line.is_ascii() {
                        return Err(self.malformed("PERSID argument is not ASCII"));
                    }
                    let s = utf8(self.op_pos, line, "persistent id")?;
                    let id = self.alloc(Node::Str(s));
                    self.persistent_id(Item::Node(id));
                }
                BINPERSID => {
                    let pid = self.pop()?;
                    self.persistent_id(pid);
                }
                EXT1 | EXT2 | EXT4 => {
                    return Err(Error::Unsupported {
                        offset: self.op_pos,
                        what: "extension registry codes (EXT1/EXT2/EXT4)".into(),
                    })
                }
                NEXT_BUFFER | READONLY_BUFFER => {
                    return Err(Error::Unsupported {
                        offset: self.op_pos,
                        what: "out-of-band buffers (NEXT_BUFFER/READONLY_BUFFER)".into(),
                    })
                }
                other => {
                    return Err(Error::UnknownOpcode {
                        offset: self.op_pos,
                        opcode: other,
                    })
                }
            }
        }
    }
}
