//! Turning [`Message`]s into frame payloads and back, in either encoding.

use zeo_pickle::Value;

use crate::error::Result;
use crate::handshake::Encoding;
use crate::message::Message;
use crate::msgpack;
use crate::pickle::{self, Side};

/// Encodes and decodes messages for one connection end.
///
/// ```
/// use zeo_protocol::{Encoding, Marshaller, Message};
///
/// let m = Marshaller::client(Encoding::Msgpack);
/// let bytes = m.encode(&Message::call(1, "lastTransaction", vec![])).unwrap();
/// assert_eq!(bytes, b"\x94\x01\xc2\xaflastTransaction\x90");
///
/// let server = Marshaller::server(Encoding::Msgpack);
/// assert_eq!(server.decode(&bytes).unwrap().method, "lastTransaction");
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Marshaller {
    encoding: Encoding,
    side: Side,
}

impl Marshaller {
    /// A marshaller for `encoding`, decoding with `side`'s global policy.
    pub fn new(encoding: Encoding, side: Side) -> Self {
        Marshaller { encoding, side }
    }

    /// A server's marshaller: pickles from clients may only name globals
    /// ZEO's `server_find_global` allows.
    pub fn server(encoding: Encoding) -> Self {
        Self::new(encoding, Side::Server)
    }

    /// A client's marshaller: pickles from servers may name exception
    /// classes.
    pub fn client(encoding: Encoding) -> Self {
        Self::new(encoding, Side::Client)
    }

    /// Which peer this marshaller decodes for (its global policy and
    /// budgets).
    pub fn side(&self) -> Side {
        self.side
    }

    /// The encoding in use.
    pub fn encoding(&self) -> Encoding {
        self.encoding
    }

    /// The frame payload for `msg`.
    ///
    /// # Errors
    ///
    /// [`Error::Unencodable`](crate::Error::Unencodable) when a value cannot be carried by the
    /// encoding (msgpack has no sets or objects; neither encoding takes
    /// over-long data). A server answers such a reply with
    /// [`crate::WireError::unencodable_reply`], as ZEO does.
    pub fn encode(&self, msg: &Message) -> Result<Vec<u8>> {
        match self.encoding {
            Encoding::Pickle => pickle::encode_message(msg),
            Encoding::Msgpack => {
                // Written piecewise so large arguments are not cloned. (An
                // exact size would take a second pass over the arguments,
                // which costs more than the occasional reallocation.)
                let mut out = Vec::with_capacity(32 + msg.method.len() + approx_size(&msg.args));
                out.push(0x94);
                msgpack::encode_value(&msg.msgid, &mut out)?;
                msgpack::encode_value(&msg.flags.to_value(&msg.method), &mut out)?;
                msgpack::encode_str(&msg.method, &mut out)?;
                msgpack::encode_value(&msg.args, &mut out)?;
                Ok(out)
            }
        }
    }

    /// Reads a frame payload.
    ///
    /// # Errors
    ///
    /// [`Error::Malformed`](crate::Error::Malformed) for undecodable bytes, [`Error::ForbiddenGlobal`](crate::Error::ForbiddenGlobal)
    /// for a pickle naming a global this side refuses, [`Error::NotAMessage`](crate::Error::NotAMessage)
    /// when the value is not a `(msgid, flags, name, args)` tuple,
    /// [`Error::LimitExceeded`](crate::Error::LimitExceeded) for a message
    /// nested deeper than [`MAX_MESSAGE_DEPTH`](crate::MAX_MESSAGE_DEPTH)
    /// or over its memory budget (see [`crate::limits`]).
    pub fn decode(&self, payload: &[u8]) -> Result<Message> {
        let value = match self.encoding {
            Encoding::Pickle => pickle::decode_message_value(payload, self.side)?,
            Encoding::Msgpack => msgpack::decode_value_for(payload, self.side)?,
        };
        Message::from_value(value)
    }
}

/// A cheap estimate of a value's encoded size, to size the buffer once for
/// the common case of a tuple of byte strings.
fn approx_size(value: &Value) -> usize {
    let flat = |v: &Value| match v {
        Value::Bytes(b) => b.len() + 5,
        Value::Str(s) => s.len() + 5,
        _ => 9,
    };
    match value {
        Value::Tuple(items) | Value::List(items) => items.iter().map(flat).sum::<usize>() + 5,
        other => flat(other),
    }
}
