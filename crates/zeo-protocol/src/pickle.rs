//! The `Z` encoding: messages as pickles, with ZEO's global policies.
//!
//! Encoding is protocol 3 in fast mode (no memo), as ZEO 5's marshaller
//! writes. Decoding accepts protocols 0–3 in full (peers need not use fast
//! mode) and restricts which globals a message may name:
//!
//! * a server accepts only modules `ZopeUndo.Prefix`, `zodbpickle`,
//!   `builtins`, `copy_reg` and `__builtin__` (`server_find_global`);
//! * a client accepts exception classes and objects marked free of side
//!   effects (`find_global`). Python decides that by importing the class;
//!   we decide by name: builtin exception classes, classes of any module
//!   whose names end like exception classes do, ZODB's `_recon` helper and
//!   `ZopeUndo.Prefix.Prefix`.

use zeo_pickle::{Decoder, Protocol, Value};

use crate::error::{Error, Result};

const ENCODING: &str = "pickle";

/// Which peer is decoding; it selects the global policy.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Side {
    /// A server reading client messages (`server_find_global`).
    Server,
    /// A client reading server messages (`find_global`).
    Client,
}

/// Encodes one value as a protocol 3 pickle, fast mode.
pub(crate) fn encode_value(value: &Value) -> Result<Vec<u8>> {
    zeo_pickle::encode(value, Protocol::V3).map_err(|e| Error::Unencodable(e.to_string()))
}

/// Decodes a message pickle under `side`'s global policy.
///
/// Bytes after the pickle's `STOP` are ignored, as Python's `Unpickler.load`
/// ignores them.
pub(crate) fn decode_message_value(data: &[u8], side: Side) -> Result<Value> {
    let policy: fn(&str, &str) -> bool = match side {
        Side::Server => zeo_pickle::zeo_server_find_global,
        Side::Client => client_find_global,
    };
    let value = Decoder::new(data)
        .with_find_global(policy)
        .next_pickle()
        .map_err(map_err)?;
    Ok(normalize(value))
}

/// Decodes a pickle with no global restriction (transaction extensions,
/// which ZODB unpickles freely).
pub(crate) fn decode_any(data: &[u8]) -> Result<Value> {
    zeo_pickle::decode(data).map_err(map_err)
}

fn map_err(err: zeo_pickle::Error) -> Error {
    match err {
        zeo_pickle::Error::GlobalRejected { module, name, .. } => {
            Error::ForbiddenGlobal { module, name }
        }
        other => Error::malformed(ENCODING, other.to_string()),
    }
}

/// Python's builtin exception classes that derive from `Exception`
/// (`BaseException`, `SystemExit`, `KeyboardInterrupt` and `GeneratorExit`
/// do not, so ZEO's client refuses them).
const BUILTIN_EXCEPTIONS: &[&str] = &[
    "Exception",
    "ArithmeticError",
    "AssertionError",
    "AttributeError",
    "BlockingIOError",
    "BrokenPipeError",
    "BufferError",
    "BytesWarning",
    "ChildProcessError",
    "ConnectionAbortedError",
    "ConnectionError",
    "ConnectionRefusedError",
    "ConnectionResetError",
    "DeprecationWarning",
    "EOFError",
    "EnvironmentError",
    "FileExistsError",
    "FileNotFoundError",
    "FloatingPointError",
    "FutureWarning",
    "IOError",
    "ImportError",
    "ImportWarning",
    "IndentationError",
    "IndexError",
    "InterruptedError",
    "IsADirectoryError",
    "KeyError",
    "LookupError",
    "MemoryError",
    "ModuleNotFoundError",
    "NameError",
    "NotADirectoryError",
    "NotImplementedError",
    "OSError",
    "OverflowError",
    "PendingDeprecationWarning",
    "PermissionError",
    "ProcessLookupError",
    "RecursionError",
    "ReferenceError",
    "ResourceWarning",
    "RuntimeError",
    "RuntimeWarning",
    "StandardError",
    "StopAsyncIteration",
    "StopIteration",
    "SyntaxError",
    "SyntaxWarning",
    "SystemError",
    "TabError",
    "TimeoutError",
    "TypeError",
    "UnboundLocalError",
    "UnicodeDecodeError",
    "UnicodeEncodeError",
    "UnicodeError",
    "UnicodeTranslateError",
    "UnicodeWarning",
    "UserWarning",
    "ValueError",
    "Warning",
    "ZeroDivisionError",
];

/// The client's global policy (see the module documentation).
///
/// ```
/// use zeo_protocol::client_find_global;
///
/// assert!(client_find_global("ZODB.POSException", "ConflictError"));
/// assert!(client_find_global("builtins", "KeyError"));
/// assert!(!client_find_global("os", "system"));
/// ```
pub fn client_find_global(module: &str, name: &str) -> bool {
    match module {
        "builtins" | "exceptions" | "__builtin__" => BUILTIN_EXCEPTIONS.contains(&name),
        // `_recon` rebuilds POSError instances and is marked side-effect free.
        "ZODB.POSException" if name == "_recon" => true,
        "ZopeUndo.Prefix" if name == "Prefix" => true,
        // Exception classes whose names do not say so.
        "ZEO.Exceptions" => {
            matches!(
                name,
                "UnrecognizedResult" | "ClientDisconnected" | "ServerException"
            ) || name.ends_with("Error")
        }
        "ZODB.POSException" => name.ends_with("Error") || name.ends_with("Errors"),
        _ => {
            !module.is_empty()
                && ["Error", "Errors", "Exception", "Warning", "Conflict"]
                    .iter()
                    .any(|suffix| name.ends_with(suffix))
        }
    }
}

/// Folds the spellings Python 2 peers use for byte strings back to bytes:
/// `zodbpickle.binary(data)` and `copy_reg._reconstructor(zodbpickle.binary,
/// str, data)`.
fn normalize(value: Value) -> Value {
    match value {
        Value::Call {
            callable,
            args,
            new_object,
        } => match binary_payload(&callable, &args) {
            Some(bytes) => Value::Bytes(bytes),
            None => Value::Call {
                callable: Box::new(normalize(*callable)),
                args: Box::new(normalize(*args)),
                new_object,
            },
        },
        Value::Tuple(items) => Value::Tuple(items.into_iter().map(normalize).collect()),
        Value::List(items) => Value::List(items.into_iter().map(normalize).collect()),
        Value::Dict(pairs) => Value::Dict(
            pairs
                .into_iter()
                .map(|(k, v)| (normalize(k), normalize(v)))
                .collect(),
        ),
        other => other,
    }
}

fn is_global(value: &Value, module: &str, name: &str) -> bool {
    matches!(value, Value::Global { module: m, name: n } if m == module && n == name)
}

fn binary_payload(callable: &Value, args: &Value) -> Option<Vec<u8>> {
    let Value::Tuple(args) = args else {
        return None;
    };
    let data = if is_global(callable, "zodbpickle", "binary") {
        match args.as_slice() {
            [data] => data,
            _ => return None,
        }
    } else if is_global(callable, "copy_reg", "_reconstructor") {
        match args.as_slice() {
            [class, _, data] if is_global(class, "zodbpickle", "binary") => data,
            _ => return None,
        }
    } else {
        return None;
    };
    match data {
        Value::Bytes(b) => Some(b.clone()),
        Value::Str(s) => Some(s.as_bytes().to_vec()),
        _ => None,
    }
}
