//! The ZEO 5 wire protocol as plain data transformations, in the manner of
//! `quinn-proto`: no sockets, no storage, no runtime. Servers and clients
//! feed it bytes and get bytes and typed values back.
//!
//! * [`frame`]: 4-byte big-endian length framing, sealed with a MAC after
//!   a digest login ([`FrameCodec`], also for `tokio_util::codec`;
//!   [`encode_frame`]/[`decode_frame`]); buffers grow as bytes arrive,
//!   never to a peer's announced length at once.
//! * [`limits`]: what decoding one message may cost (nesting depth
//!   [`MAX_MESSAGE_DEPTH`], memory budgets); past a limit decoding fails
//!   with [`Error::LimitExceeded`] naming it.
//! * [`handshake`]: the `Z5`/`M5` version exchange and `ruok` probes
//!   ([`ServerHandshake`], [`ClientHandshake`]).
//! * [`Message`] and [`Marshaller`]: the `(msgid, flags, name, args)` tuple
//!   in pickle (protocol 3, with ZEO's global policies) or msgpack.
//! * [`ServerRequest`]: typed calls for a server; [`Reply`] and the
//!   [`reply`] value builders for its answers; [`WireError`] for exceptions,
//!   with the mapping from [`zeo_storage::Error`].
//! * [`ClientRequest`], [`ClientIncoming`], [`ClientEvent`] and
//!   [`client::replies`]: the same conversation seen from a client.
//!
//! A server connection in a few lines:
//!
//! ```
//! use zeo_protocol::*;
//! use zeo_pickle::Value;
//! use zeo_storage::Tid;
//!
//! let hs = ServerHandshake::new(Encoding::Pickle);
//! let greeting = encode_frame(&hs.greeting()).unwrap(); // send this first
//! let ClientHello::Accepted(encoding) = hs.receive(b"Z5").unwrap() else { unreachable!() };
//! let m = Marshaller::server(encoding);
//!
//! let request = m.encode(&ClientRequest::register(1, "1", false)).unwrap(); // from the client
//! match ServerRequest::parse(&m.decode(&request).unwrap()).unwrap() {
//!     Incoming::Call(Call { msgid, request: ServerRequest::Register { storage, .. }, .. }) => {
//!         assert_eq!(storage, "1");
//!         let answer = m.encode(&Reply::value(msgid, reply::tid(Tid(0)))).unwrap();
//!         let _frame = encode_frame(&answer).unwrap();
//!     }
//!     other => panic!("{other:?}"),
//! }
//! # let _ = greeting;
//! ```

#![warn(missing_docs)]

mod args;
pub mod buffer_pool;
mod bytes_call;
pub mod client;
mod error;
pub mod frame;
pub mod handshake;
pub mod limits;
pub mod login;
mod marshal;
mod message;
mod msgpack;
mod pickle;
pub mod reply;
mod request;
mod types;
mod wire_error;

pub use bytes_call::{encode_chunked_calls, encode_oneway_bytes_call, oneway_bytes_call};
pub use client::{ClientEvent, ClientIncoming, ClientRequest};
pub use error::{Error, Result};
pub use frame::{decode_frame, encode_frame, FrameCodec, FrameHeader, DEFAULT_MAX_FRAME};
pub use handshake::{ClientHandshake, ClientHello, Encoding, ServerHandshake};
pub use limits::MAX_MESSAGE_DEPTH;
pub use login::{LoginMethod, LoginRequest};
pub use marshal::Marshaller;
pub use message::{Flags, Message, REPLY};
pub use pickle::{client_find_global, Side};
pub use reply::{ruok_reply, Reply};
pub use request::{Call, Incoming, ServerRequest, MAX_NEW_OIDS};
pub use types::{IteratorId, ServerStatus, StorageInfo, TxnId, UndoMatch, UndoSpec};
pub use wire_error::{python_class, WireError};
