//! Python pickles for ZODB records and ZEO messages.
//!
//! * [`decode`] / [`decode_prefix`] / [`Decoder`] read protocols 0 to 5 into
//!   a [`Value`] tree, keeping `GLOBAL`, `REDUCE`, `BUILD` and persistent ids
//!   as structure (nothing is executed), with an optional global policy
//!   ([`Decoder::with_find_global`], [`zeo_server_find_global`]).
//! * [`encode`] / [`Encoder`] write protocols 2 and 3 the way Python's
//!   pickler does.
//! * [`references`], [`class_of`] and [`encode_record`] know the layout of
//!   ZODB object records (two pickles sharing one memo).
//! * [`graph`] decodes to an object graph that keeps Python's object
//!   identity (which places share one object), for code that must pickle
//!   the objects back the way Python would.
//! * [`zodb`] reads and writes the records of the classes every ZODB
//!   database has (`PersistentMapping`, `PersistentList`, `OOBTree`), so
//!   that Rust and Python programs can share data; `docs/rust-records.md`
//!   is the guide.
//!
//! Python 2 byte strings (`STRING`, `BINSTRING`, `SHORT_BINSTRING`) decode
//! to [`Value::Bytes`], as ZODB reads them (`encoding='ASCII',
//! errors='bytes'`).
#![warn(missing_docs)]

mod decode;
pub mod describe;
mod encode;
mod error;
pub mod graph;
mod machine;
pub mod opcodes;
mod record;
mod text;
pub mod value;
pub mod zodb;

pub use decode::{decode, decode_prefix, zeo_server_find_global, Decoder, DEFAULT_MAX_DEPTH};
pub use encode::{encode, Encoder, Protocol, MAX_ENCODE_DEPTH};
pub use error::Error;
pub use record::{class_of, encode_record, references, references_into};
pub use text::{int_len, minimal_le, write_int};
pub use value::Value;
