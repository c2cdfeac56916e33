//! The value model pickles decode to and encode from.
//!
//! It covers what ZODB records and ZEO messages hold: Python's built-in
//! scalars and containers, plus the object-building opcodes (GLOBAL, REDUCE,
//! NEWOBJ, BUILD) and persistent ids kept as structure rather than executed,
//! since no Python runs here.

/// A Python value as a pickle describes it.
#[derive(Clone, Debug, PartialEq)]
pub enum Value {
    /// `None`.
    None,
    /// `True` / `False`.
    Bool(bool),
    /// An integer that fits in 64 bits.
    Int(i64),
    /// A larger integer: little-endian two's complement bytes, as `LONG1`
    /// carries them.
    BigInt(Vec<u8>),
    /// A float.
    Float(f64),
    /// `bytes`.
    Bytes(Vec<u8>),
    /// `bytearray`.
    ByteArray(Vec<u8>),
    /// `str`.
    Str(String),
    /// A tuple.
    Tuple(Vec<Value>),
    /// A list.
    List(Vec<Value>),
    /// A dict, in insertion order.
    Dict(Vec<(Value, Value)>),
    /// A set.
    Set(Vec<Value>),
    /// A frozenset.
    FrozenSet(Vec<Value>),
    /// A reference to a module attribute (`GLOBAL` / `STACK_GLOBAL`), e.g. a
    /// class.
    Global {
        /// Module path, e.g. `persistent.mapping`.
        module: String,
        /// Attribute name, e.g. `PersistentMapping`.
        name: String,
    },
    /// `callable(*args)` (`REDUCE`), or `cls.__new__(cls, *args)` (`NEWOBJ`,
    /// with `new_object` set).
    Call {
        /// What is called.
        callable: Box<Value>,
        /// The argument tuple.
        args: Box<Value>,
        /// Whether this came from `NEWOBJ`/`NEWOBJ_EX`.
        new_object: bool,
    },
    /// `obj.__setstate__(state)` (`BUILD`).
    Build {
        /// The object being built.
        object: Box<Value>,
        /// Its state.
        state: Box<Value>,
    },
    /// A persistent id (`PERSID` / `BINPERSID`): in ZODB, a reference to
    /// another persistent object.
    PersistentId(Box<Value>),
}
