//! The crate's error type.

/// Why a pickle could not be read or written.
///
/// Decoding errors carry the byte offset (from the start of the input given
/// to the decoder) of the opcode that failed, so a bad record or message can
/// be located with a hex dump.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    /// The input ended inside an opcode or before `STOP`.
    #[error("pickle: at byte {offset}: unexpected end of data")]
    Truncated {
        /// Offset of the opcode that needed more bytes.
        offset: usize,
    },
    /// A byte that is not a pickle opcode.
    #[error("pickle: at byte {offset}: unknown opcode 0x{opcode:02x}")]
    UnknownOpcode {
        /// Offset of the byte.
        offset: usize,
        /// The byte.
        opcode: u8,
    },
    /// A valid opcode this crate deliberately does not support (extension
    /// registry codes, out-of-band buffers, protocols above 5).
    #[error("pickle: at byte {offset}: unsupported: {what}")]
    Unsupported {
        /// Offset of the opcode.
        offset: usize,
        /// What is not supported.
        what: String,
    },
    /// The opcodes are individually valid but do not form a valid pickle
    /// (stack underflow, missing MARK, bad argument text, invalid UTF-8...).
    #[error("pickle: at byte {offset}: {message}")]
    Malformed {
        /// Offset of the opcode.
        offset: usize,
        /// What is wrong.
        message: String,
    },
    /// A `GET` of a memo slot that was never `PUT`.
    #[error("pickle: at byte {offset}: memo key {key} was never stored")]
    MissingMemo {
        /// Offset of the opcode.
        offset: usize,
        /// The memo key.
        key: u64,
    },
    /// The `find_global` policy refused a global.
    #[error("pickle: at byte {offset}: global {module}.{name} is not allowed")]
    GlobalRejected {
        /// Offset of the opcode.
        offset: usize,
        /// Module of the refused global.
        module: String,
        /// Name of the refused global.
        name: String,
    },
    /// A resource limit (nesting depth, output size, digits of a text
    /// integer) was exceeded: the input is hostile or not meant for us.
    #[error("pickle: at byte {offset}: limit exceeded: {what}")]
    LimitExceeded {
        /// Offset of the opcode (for output limits, of the pickle's end).
        offset: usize,
        /// Which limit.
        what: String,
    },
    /// The decoded structure refers to itself, which [`crate::Value`] cannot
    /// represent.
    #[error("pickle: at byte {offset}: the pickled structure contains itself")]
    Recursive {
        /// Offset of the end of the pickle.
        offset: usize,
    },
    /// Bytes follow the `STOP` of a pickle that was expected to fill the input.
    #[error("pickle: at byte {offset}: trailing data after STOP")]
    TrailingData {
        /// Offset of the first byte after `STOP`.
        offset: usize,
    },
    /// A ZODB persistent reference that has no usable oid.
    #[error("pickle: bad persistent reference: {0}")]
    BadReference(String),
    /// A ZODB record whose state does not have the shape its class (or the
    /// accessor used) requires.
    #[error("pickle: unexpected record shape: {0}")]
    Shape(String),
    /// A value that the chosen protocol cannot express.
    #[error("pickle: cannot encode: {0}")]
    Unencodable(String),
}

impl Error {
    pub(crate) fn malformed(offset: usize, message: impl Into<String>) -> Self {
        Error::Malformed {
            offset,
            message: message.into(),
        }
    }
}
