//! Pickles decoded to an object graph that keeps Python's object identity.
//!
//! [`crate::decode`] gives a [`crate::Value`] tree, where an object the
//! pickle shares (a memo `GET`) becomes a copy. Code that must write a
//! pickle back the way Python's pickler would (which emits `GET` for an
//! object it meets twice) needs to know which places hold *the same*
//! object: this view keeps the unpickler's arena, so every non-scalar is a
//! [`GraphNode`] with an index, and two [`Slot`]s hold the same object
//! exactly when they hold the same index.
//!
//! The graph is flat (children are indices), so walking it needs no
//! recursion and dropping it none either; it may contain cycles (a list
//! that contains itself), so walkers must bound their own depth.
//!
//! ```
//! use zeo_pickle::graph::{decode_graph, GraphNode, Slot};
//!
//! // ('a', <the same 'a'>): SHORT_BINUNICODE 'ab', BINPUT 0, BINGET 0, TUPLE2.
//! let g = decode_graph(b"\x80\x03X\x02\x00\x00\x00abq\x00h\x00\x86q\x01.", 1, 1 << 20)?;
//! let Slot::Node(t) = g.roots()[0] else { panic!() };
//! let GraphNode::Tuple(items) = g.node(t).unwrap() else { panic!() };
//! assert_eq!(items[0], items[1]);
//! # Ok::<(), zeo_pickle::Error>(())
//! ```

use crate::error::Error;
use crate::machine::{Item, Machine, Node};

/// A place in the graph: scalars inline (Python does not memoize them, so
/// their identity never shows), everything else as a node index.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Slot {
    /// `None`.
    None,
    /// `True` / `False`.
    Bool(bool),
    /// An integer that fits in 64 bits.
    Int(i64),
    /// A float.
    Float(f64),
    /// The object at this index of [`Graph::node`].
    Node(usize),
}

/// An object of the graph; mirrors [`crate::Value`], with [`Slot`]s for
/// children.
#[derive(Debug, Clone, PartialEq)]
pub enum GraphNode {
    /// An integer outside `i64`, as [`crate::Value::BigInt`].
    BigInt(Vec<u8>),
    /// `bytes` (or a Python 2 byte string, see [`Graph::has_py2_strings`]).
    Bytes(Vec<u8>),
    /// `bytearray`.
    ByteArray(Vec<u8>),
    /// `str`.
    Str(String),
    /// A tuple.
    Tuple(Vec<Slot>),
    /// A list.
    List(Vec<Slot>),
    /// A dict, in insertion order.
    Dict(Vec<(Slot, Slot)>),
    /// A set.
    Set(Vec<Slot>),
    /// A frozenset.
    FrozenSet(Vec<Slot>),
    /// A module attribute (`GLOBAL` / `STACK_GLOBAL`).
    Global {
        /// Module path.
        module: String,
        /// Attribute name.
        name: String,
    },
    /// A call, as [`crate::Value::Call`].
    Call {
        /// What is called.
        callable: Slot,
        /// The argument tuple.
        args: Slot,
        /// Whether this came from `NEWOBJ`/`NEWOBJ_EX`.
        new_object: bool,
    },
    /// `BUILD`, as [`crate::Value::Build`].
    Build {
        /// The object being built.
        object: Slot,
        /// Its state.
        state: Slot,
    },
    /// A persistent id.
    PersistentId(Slot),
    /// Items appended to an object that is not a plain list.
    ListItems {
        /// The object appended to.
        object: Slot,
        /// The items.
        items: Vec<Slot>,
    },
    /// Items stored into an object that is not a plain dict.
    DictItems {
        /// The object stored into.
        object: Slot,
        /// The pairs.
        items: Vec<(Slot, Slot)>,
    },
}

/// One or more pickles read with one memo (a ZODB record is two), as an
/// object graph.
#[derive(Debug, Clone)]
pub struct Graph {
    nodes: Vec<GraphNode>,
    roots: Vec<Slot>,
    persistent_ids: Vec<Slot>,
    py2_strings: bool,
}

impl Graph {
    /// The object at `index`, if there is one.
    pub fn node(&self, index: usize) -> Option<&GraphNode> {
        self.nodes.get(index)
    }

    /// The number of objects.
    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    /// Whether the graph holds no objects (only scalars).
    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty()
    }

    /// What each pickle returned, in order.
    pub fn roots(&self) -> &[Slot] {
        &self.roots
    }

    /// The persistent ids, in the order the unpickler loaded them (the
    /// order `persistent_load` would be called).
    pub fn persistent_ids(&self) -> &[Slot] {
        &self.persistent_ids
    }

    /// Whether a Python 2 byte string opcode was read. Python 3 loads
    /// those as `str` when they decode (ZODB reads with `encoding='ASCII',
    /// errors='bytes'`), so a graph with them does not say which `bytes`
    /// nodes Python would see as `str`.
    pub fn has_py2_strings(&self) -> bool {
        self.py2_strings
    }
}

fn slot(item: Item) -> Slot {
    match item {
        Item::None => Slot::None,
        Item::Bool(b) => Slot::Bool(b),
        Item::Int(n) => Slot::Int(n),
        Item::Float(f) => Slot::Float(f),
        Item::Node(id) => Slot::Node(id),
    }
}

fn slots(items: &[Item]) -> Vec<Slot> {
    items.iter().copied().map(slot).collect()
}

fn pairs(items: &[(Item, Item)]) -> Vec<(Slot, Slot)> {
    items.iter().map(|&(k, v)| (slot(k), slot(v))).collect()
}

/// Reads `pickles` pickles from the start of `data` with one memo, as one
/// unpickler calling `load()` that many times. `max_work` caps the
/// decoder's working memory in bytes (see [`crate::Decoder::with_max_work`]);
/// the graph itself is linear in the input.
pub fn decode_graph(data: &[u8], pickles: usize, max_work: usize) -> Result<Graph, Error> {
    let mut m = Machine::new(data);
    m.set_max_work(max_work);
    m.persistent_ids = Some(Vec::new());
    let mut roots = Vec::with_capacity(pickles.min(16));
    for _ in 0..pickles {
        roots.push(slot(m.run()?));
    }
    let persistent_ids = slots(&m.persistent_ids.take().unwrap_or_default());
    let nodes = m
        .arena
        .iter()
        .map(|node| match node {
            Node::BigInt(b) => GraphNode::BigInt(b.clone()),
            Node::Bytes(b) => GraphNode::Bytes(b.to_vec()),
            Node::ByteArray(b) => GraphNode::ByteArray(b.to_vec()),
            Node::Str(s) => GraphNode::Str(s.to_string()),
            Node::Tuple(v) => GraphNode::Tuple(slots(v)),
            Node::List(v) => GraphNode::List(slots(v)),
            Node::Dict(v) => GraphNode::Dict(pairs(v)),
            Node::Set(v) => GraphNode::Set(slots(v)),
            Node::FrozenSet(v) => GraphNode::FrozenSet(slots(v)),
            Node::Global { module, name } => GraphNode::Global {
                module: module.to_string(),
                name: name.to_string(),
            },
            Node::Call {
                callable,
                args,
                new_object,
            } => GraphNode::Call {
                callable: slot(*callable),
                args: slot(*args),
                new_object: *new_object,
            },
            Node::Build { object, state } => GraphNode::Build {
                object: slot(*object),
                state: slot(*state),
            },
            Node::PersistentId(p) => GraphNode::PersistentId(slot(*p)),
            Node::ListItems { object, items } => GraphNode::ListItems {
                object: slot(*object),
                items: slots(items),
            },
            Node::DictItems { object, items } => GraphNode::DictItems {
                object: slot(*object),
                items: pairs(items),
            },
        })
        .collect();
    Ok(Graph {
        nodes,
        roots,
        persistent_ids,
        py2_strings: m.py2_strings,
    })
}
