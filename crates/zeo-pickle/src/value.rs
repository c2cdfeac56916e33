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
    /// carries them. The decoder produces it only for values outside `i64`,
    /// in minimal form (see [`Value::from_le_bytes`]).
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
    ///
    /// The decoder turns the calls protocols 2 and 3 use for `set`,
    /// `frozenset`, `bytearray` and (protocol 2) `bytes` into those values,
    /// gives `INST`/`OBJ` as plain calls of the class with the argument
    /// tuple, and `NEWOBJ_EX` as a call of `copyreg.__newobj_ex__` with
    /// `(cls, args, kwargs)` (what protocols below 4 write for it).
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
    /// Items appended (`APPEND` / `APPENDS`) to an object that is not a
    /// plain list, e.g. an instance of a list subclass made by `NEWOBJ`.
    ListItems {
        /// The object appended to.
        object: Box<Value>,
        /// The appended items, in order.
        items: Vec<Value>,
    },
    /// Items stored (`SETITEM` / `SETITEMS`) into an object that is not a
    /// plain dict, e.g. a `collections.OrderedDict` made by `REDUCE`.
    DictItems {
        /// The object stored into.
        object: Box<Value>,
        /// The `(key, value)` pairs, in order.
        items: Vec<(Value, Value)>,
    },
}

impl Value {
    /// A `Global` from its module and name.
    pub fn global(module: impl Into<String>, name: impl Into<String>) -> Value {
        Value::Global {
            module: module.into(),
            name: name.into(),
        }
    }

    /// A `Str`.
    pub fn str(s: impl Into<String>) -> Value {
        Value::Str(s.into())
    }

    /// A `Bytes`.
    pub fn bytes(b: impl Into<Vec<u8>>) -> Value {
        Value::Bytes(b.into())
    }

    /// An integer from little-endian two's complement bytes of any length:
    /// `Int` when it fits in 64 bits, otherwise `BigInt` in minimal form
    /// (the form the decoder produces and Python's pickler writes).
    pub fn from_le_bytes(bytes: &[u8]) -> Value {
        match crate::text::integer_from_le(bytes) {
            crate::text::Integer::Small(n) => Value::Int(n),
            crate::text::Integer::Big(b) => Value::BigInt(b),
        }
    }

    /// A ZODB persistent reference to `oid`, the way `ZODB.serialize`
    /// writes one: `(oid, class)` when the class is known (pass
    /// [`ClassName::global`](crate::zodb::ClassName::global)), the bare
    /// 8-byte oid otherwise. Read it back with [`Value::reference_oid`].
    ///
    /// `oid` is the oid's 64-bit number: for a `zeo_storage::Oid`, its
    /// `.0` (this crate sits below the storage crate and cannot name its
    /// type; `zeo_client::records` has `Oid`-typed helpers).
    pub fn persistent_ref(oid: u64, class: Option<Value>) -> Value {
        let oid = Value::Bytes(oid.to_be_bytes().to_vec());
        Value::PersistentId(Box::new(match class {
            Some(class) => Value::Tuple(vec![oid, class]),
            None => oid,
        }))
    }

    /// Whether this is `None`.
    pub fn is_none(&self) -> bool {
        matches!(self, Value::None)
    }

    /// The boolean, if this is a `Bool`.
    pub fn as_bool(&self) -> Option<bool> {
        match self {
            Value::Bool(b) => Some(*b),
            _ => None,
        }
    }

    /// The integer, if this is an `Int`.
    pub fn as_i64(&self) -> Option<i64> {
        match self {
            Value::Int(n) => Some(*n),
            _ => None,
        }
    }

    /// The float, if this is a `Float`.
    pub fn as_f64(&self) -> Option<f64> {
        match self {
            Value::Float(f) => Some(*f),
            _ => None,
        }
    }

    /// The string, if this is a `Str`.
    pub fn as_str(&self) -> Option<&str> {
        match self {
            Value::Str(s) => Some(s),
            _ => None,
        }
    }

    /// The bytes, if this is `Bytes`.
    pub fn as_bytes(&self) -> Option<&[u8]> {
        match self {
            Value::Bytes(b) => Some(b),
            _ => None,
        }
    }

    /// The items, if this is a `Tuple`.
    pub fn as_tuple(&self) -> Option<&[Value]> {
        match self {
            Value::Tuple(v) => Some(v),
            _ => None,
        }
    }

    /// The items, if this is a `List`.
    pub fn as_list(&self) -> Option<&[Value]> {
        match self {
            Value::List(v) => Some(v),
            _ => None,
        }
    }

    /// The pairs, if this is a `Dict`.
    pub fn as_dict(&self) -> Option<&[(Value, Value)]> {
        match self {
            Value::Dict(v) => Some(v),
            _ => None,
        }
    }

    /// In a `Dict`, the value of the last entry whose key is the string
    /// `key` (the last, because that is the one a Python dict keeps).
    pub fn get(&self, key: &str) -> Option<&Value> {
        self.as_dict()?
            .iter()
            .rev()
            .find(|(k, _)| k.as_str() == Some(key))
            .map(|(_, v)| v)
    }

    /// The Python type name of the value, for error messages.
    pub fn type_name(&self) -> &'static str {
        match self {
            Value::None => "NoneType",
            Value::Bool(_) => "bool",
            Value::Int(_) | Value::BigInt(_) => "int",
            Value::Float(_) => "float",
            Value::Bytes(_) => "bytes",
            Value::ByteArray(_) => "bytearray",
            Value::Str(_) => "str",
            Value::Tuple(_) => "tuple",
            Value::List(_) => "list",
            Value::Dict(_) => "dict",
            Value::Set(_) => "set",
            Value::FrozenSet(_) => "frozenset",
            Value::Global { .. } => "global",
            Value::Call { .. }
            | Value::Build { .. }
            | Value::ListItems { .. }
            | Value::DictItems { .. } => "object",
            Value::PersistentId(_) => "persistent reference",
        }
    }
}

/// A `str`.
impl From<&str> for Value {
    fn from(s: &str) -> Value {
        Value::Str(s.to_owned())
    }
}

/// A `str`.
impl From<String> for Value {
    fn from(s: String) -> Value {
        Value::Str(s)
    }
}

/// An `int`.
impl From<i64> for Value {
    fn from(n: i64) -> Value {
        Value::Int(n)
    }
}

/// A `bool`.
impl From<bool> for Value {
    fn from(b: bool) -> Value {
        Value::Bool(b)
    }
}

/// A `float`.
impl From<f64> for Value {
    fn from(f: f64) -> Value {
        Value::Float(f)
    }
}
