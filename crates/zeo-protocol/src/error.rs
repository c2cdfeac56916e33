//! The one error type of the protocol layer.

use std::io;

/// Result alias for protocol operations.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything framing, handshaking, marshalling and request parsing can fail
/// with.
///
/// A server treats every variant except [`Error::BadArguments`] on a
/// synchronous call as fatal for the connection, as ZEO does; a bad-arguments
/// error on a synchronous call becomes a `builtins.TypeError` reply
/// ([`crate::WireError::type_error`]).
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The transport failed (only the frame codec sees this).
    #[error("I/O error: {0}")]
    Io(#[from] io::Error),

    /// A frame announced more bytes than the configured maximum; nothing was
    /// allocated for it.
    #[error("frame of {len} bytes exceeds max-message-size {max}")]
    FrameTooLarge {
        /// The length the frame announced (or the payload length on encode).
        len: u64,
        /// The limit in force.
        max: u64,
    },

    /// The input ended inside a frame.
    #[error("truncated frame: need {needed} bytes, have {available}")]
    Truncated {
        /// Bytes the frame needs, length prefix included.
        needed: u64,
        /// Bytes that were there.
        available: u64,
    },

    /// The peer's protocol-version frame is not one we can speak.
    #[error("bad handshake: {reason} (received {received:?})")]
    BadHandshake {
        /// What is wrong with it.
        reason: &'static str,
        /// The frame, lossily shown as text.
        received: String,
    },

    /// The bytes are not a well-formed encoding (msgpack or pickle).
    #[error("malformed {encoding} message: {reason}")]
    Malformed {
        /// `"msgpack"` or `"pickle"`.
        encoding: &'static str,
        /// What is wrong.
        reason: String,
    },

    /// A message exceeds a decoding limit (nesting depth, memory budget):
    /// it is hostile or not meant for us. Nothing more was allocated for it.
    #[error("{encoding} message exceeds a limit: {limit}")]
    LimitExceeded {
        /// `"msgpack"` or `"pickle"`.
        encoding: &'static str,
        /// Which limit, with its value.
        limit: String,
    },

    /// A pickle names a global that the receiving side refuses to resolve
    /// (ZEO's `find_global` / `server_find_global`).
    #[error("forbidden global in message: {module}.{name}")]
    ForbiddenGlobal {
        /// The module part.
        module: String,
        /// The attribute part.
        name: String,
    },

    /// The decoded value is not a `(msgid, flags, name, args)` tuple.
    #[error("not a ZEO message: {0}")]
    NotAMessage(String),

    /// A value cannot be represented in the chosen encoding (for example a
    /// set or a class reference in msgpack, or an integer wider than 64
    /// bits).
    #[error("cannot encode value: {0}")]
    Unencodable(String),

    /// A call names a method outside the set a ZEO 5 server exposes.
    #[error("unknown method {0:?}")]
    UnknownMethod(String),

    /// A call's arguments do not fit the method's signature.
    #[error("bad arguments to {method}: {reason}")]
    BadArguments {
        /// The method called.
        method: String,
        /// What does not fit.
        reason: String,
    },

    /// A reply or server message does not have the shape its method
    /// promises (client side).
    #[error("unexpected reply to {method}: {reason}")]
    BadReply {
        /// The method whose reply it is.
        method: String,
        /// What does not fit.
        reason: String,
    },
}

impl Error {
    /// The exception a server sends for this error on a synchronous call,
    /// when ZEO answers rather than closing the connection: arguments that
    /// do not fit a method are Python's `TypeError`.
    ///
    /// ```
    /// use zeo_pickle::Value;
    /// use zeo_protocol::ServerRequest;
    ///
    /// let err = ServerRequest::parse_call("vote", &Value::Tuple(vec![])).unwrap_err();
    /// let wire = err.to_wire_error().unwrap();
    /// assert_eq!(wire.class, "builtins.TypeError");
    /// assert!(ServerRequest::parse_call("undo", &Value::Tuple(vec![])).unwrap_err().to_wire_error().is_none());
    /// ```
    pub fn to_wire_error(&self) -> Option<crate::WireError> {
        match self {
            Error::BadArguments { method, reason } => Some(crate::WireError::type_error(&format!(
                "{method}() {reason}"
            ))),
            _ => None,
        }
    }

    pub(crate) fn malformed(encoding: &'static str, reason: impl Into<String>) -> Self {
        Error::Malformed {
            encoding,
            reason: reason.into(),
        }
    }

    pub(crate) fn limit(encoding: &'static str, limit: impl Into<String>) -> Self {
        Error::LimitExceeded {
            encoding,
            limit: limit.into(),
        }
    }

    pub(crate) fn bad_handshake(reason: &'static str, received: &[u8]) -> Self {
        Error::BadHandshake {
            reason,
            received: String::from_utf8_lossy(received).into_owned(),
        }
    }
}
