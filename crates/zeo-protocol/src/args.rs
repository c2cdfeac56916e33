//! Reading positional arguments the way a Python method signature accepts
//! them, with errors that name the method and the parameter.

use zeo_pickle::Value;
use zeo_storage::{Oid, Tid};

use crate::error::{Error, Result};
use crate::message::truthy;
use crate::types::TxnId;

/// The positional arguments of one call.
pub(crate) struct Args<'a> {
    method: &'a str,
    items: &'a [Value],
}

impl<'a> Args<'a> {
    /// Checks the count against a signature with `required` parameters and
    /// `optional` defaulted ones, as Python's call machinery does.
    pub(crate) fn new(
        method: &'a str,
        items: &'a [Value],
        required: usize,
        optional: usize,
    ) -> Result<Self> {
        let args = Args { method, items };
        let n = items.len();
        if n < required || n > required + optional {
            let expected = if optional == 0 {
                format!("{required}")
            } else {
                format!("{required} to {}", required + optional)
            };
            return Err(args.error(format!(
                "takes {expected} positional arguments but {n} were given"
            )));
        }
        Ok(args)
    }

    pub(crate) fn error(&self, reason: impl Into<String>) -> Error {
        Error::BadArguments {
            method: self.method.to_owned(),
            reason: reason.into(),
        }
    }

    fn wrong(&self, name: &str, expected: &str, got: &Value) -> Error {
        self.error(format!(
            "{name} must be {expected}, got {}",
            got.type_name()
        ))
    }

    /// The argument at `i`, or `None` when the caller left it to its default.
    pub(crate) fn get(&self, i: usize) -> Option<&'a Value> {
        self.items.get(i)
    }

    fn at(&self, i: usize) -> Result<&'a Value> {
        self.items
            .get(i)
            .ok_or_else(|| self.error(format!("missing argument {i}")))
    }

    pub(crate) fn bytes(&self, i: usize, name: &str) -> Result<Vec<u8>> {
        match self.at(i)? {
            Value::Bytes(b) | Value::ByteArray(b) => Ok(b.clone()),
            other => Err(self.wrong(name, "bytes", other)),
        }
    }

    pub(crate) fn opt_bytes(&self, i: usize, name: &str) -> Result<Option<Vec<u8>>> {
        match self.at(i)? {
            Value::None => Ok(None),
            _ => self.bytes(i, name).map(Some),
        }
    }

    /// `bytes`, or `str` taken as UTF-8 (ZODB's TransactionMetaData encodes
    /// text user names and descriptions that way).
    pub(crate) fn text_bytes(&self, i: usize, name: &str) -> Result<Vec<u8>> {
        match self.at(i)? {
            Value::Bytes(b) | Value::ByteArray(b) => Ok(b.clone()),
            Value::Str(s) => Ok(s.as_bytes().to_vec()),
            other => Err(self.wrong(name, "bytes or str", other)),
        }
    }

    /// A `str`, or UTF-8 `bytes` (Python 2 native strings).
    pub(crate) fn string(&self, i: usize, name: &str) -> Result<String> {
        match self.at(i)? {
            Value::Str(s) => Ok(s.clone()),
            Value::Bytes(b) => String::from_utf8(b.clone())
                .map_err(|_| self.error(format!("{name} must be text, got non-UTF-8 bytes"))),
            other => Err(self.wrong(name, "str", other)),
        }
    }

    fn id8(&self, i: usize, name: &str) -> Result<[u8; 8]> {
        match self.at(i)? {
            Value::Bytes(b) | Value::ByteArray(b) => <[u8; 8]>::try_from(&b[..])
                .map_err(|_| self.error(format!("{name} must be 8 bytes, got {}", b.len()))),
            other => Err(self.wrong(name, "8 bytes", other)),
        }
    }

    pub(crate) fn oid(&self, i: usize, name: &str) -> Result<Oid> {
        self.id8(i, name).map(Oid::from_bytes)
    }

    pub(crate) fn tid(&self, i: usize, name: &str) -> Result<Tid> {
        self.id8(i, name).map(Tid::from_bytes)
    }

    /// The serial a store is based on. Besides 8 bytes, Python's server
    /// passes anything through to the storage, which compares it only when
    /// the object already exists; ZODB's own tests send `None` and an
    /// 8-character `str` for new objects. Both are taken as that revision
    /// (`None` as `z64`), so a new object stores and an existing one
    /// conflicts, as with Python's storages.
    pub(crate) fn store_serial(&self, i: usize, name: &str) -> Result<Tid> {
        match self.at(i)? {
            Value::None => Ok(Tid::ZERO),
            Value::Str(s) if s.chars().count() == 8 => {
                let mut id = [0u8; 8];
                for (slot, c) in id.iter_mut().zip(s.chars()) {
                    *slot = u8::try_from(u32::from(c)).map_err(|_| {
                        self.error(format!("{name} must be 8 bytes, got a non-Latin-1 str"))
                    })?;
                }
                Ok(Tid::from_bytes(id))
            }
            _ => self.tid(i, name),
        }
    }

    /// A tid, `None`, or absent (defaulting to `None`).
    pub(crate) fn opt_tid(&self, i: usize, name: &str) -> Result<Option<Tid>> {
        match self.get(i) {
            None | Some(Value::None) => Ok(None),
            Some(_) => self.tid(i, name).map(Some),
        }
    }

    pub(crate) fn opt_oid(&self, i: usize, name: &str) -> Result<Option<Oid>> {
        match self.get(i) {
            None | Some(Value::None) => Ok(None),
            Some(_) => self.oid(i, name).map(Some),
        }
    }

    /// An int (bools count, as in Python).
    pub(crate) fn int(&self, i: usize, name: &str) -> Result<i64> {
        match self.at(i)? {
            Value::Int(n) => Ok(*n),
            Value::Bool(b) => Ok(i64::from(*b)),
            Value::BigInt(_) => Err(self.error(format!("{name} does not fit in 64 bits"))),
            other => Err(self.wrong(name, "int", other)),
        }
    }

    /// A number taken as a float (`pack`'s time may be an int).
    pub(crate) fn float(&self, i: usize, name: &str) -> Result<f64> {
        match self.at(i)? {
            Value::Float(f) => Ok(*f),
            Value::Int(n) => Ok(*n as f64),
            Value::Bool(b) => Ok(f64::from(u8::from(*b))),
            other => Err(self.wrong(name, "a number", other)),
        }
    }

    /// Python truth value; absent means `default`.
    pub(crate) fn flag(&self, i: usize, default: bool) -> bool {
        self.get(i).map_or(default, truthy)
    }

    pub(crate) fn txn(&self, i: usize) -> Result<TxnId> {
        self.int(i, "transaction id").map(TxnId)
    }
}
