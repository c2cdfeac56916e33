//! A ZEO client: the Rust counterpart of `ZEO.ClientStorage`, wire
//! compatible with ZEO 5/6 servers (pickle `Z5` and msgpack `M5`).
//!
//! * [`ClientCache`] — current and non-current object revisions, bounded,
//!   persistent across restarts when given a file
//!   (`docs/design/client-cache.md`).
//! * [`AsyncClientStorage`] — the client for async callers: connects to one
//!   of several servers, verifies its cache on every (re)connect,
//!   reconnects with back-off, falls back to read-only servers when allowed,
//!   and runs ZEO's two-phase commit with optional client-side conflict
//!   resolution.
//! * [`ClientStorage`] — the same behind the blocking
//!   [`zeo_storage::Storage`] trait, on a runtime of its own.
//!
//! See `docs/client.md` for the behaviour in detail.
//!
//! Errors: [`AsyncClientStorage`] and the helpers return [`Error`];
//! [`ClientStorage`] returns `zeo_storage::Error` through the
//! [`zeo_storage::Storage`] trait. Ask either the same questions through
//! [`ErrorKind`] (`is_conflict`, `is_disconnected`, `is_read_only`,
//! `is_pos_key`).
//!
//! Logs go through [`tracing`](https://docs.rs/tracing): connection
//! attempts, disconnections and cache trouble are only visible once the
//! application installs a subscriber (e.g. `tracing_subscriber::fmt::init()`).
//!
//! A round trip through an in-process server, storing the root object the
//! way a Python application does (a `PersistentMapping`, holding a
//! reference to a `PersistentList`; see `docs/rust-records.md`):
//!
//! ```
//! use std::sync::Arc;
//! use zeo_client::records::{oid_of, reference, Record, PERSISTENT_LIST};
//! use zeo_client::{ClientOptions, ClientStorage, CommitOptions, ServerAddress};
//! use zeo_pickle::Value;
//! use zeo_server::{ListenAddress, ServerBuilder, ServerSettings};
//! use zeo_storage::{MappingStorage, Oid, Storage, Tid};
//!
//! let server = ServerBuilder::new(ServerSettings::default())
//!     .storage("1", Arc::new(MappingStorage::new("1")))
//!     .build()
//!     .unwrap();
//! server.bind(&ListenAddress::localhost(0)).unwrap(); // the system picks a port
//! // The server on a runtime of its own, for a program that is not async.
//! let background = server.start_background().unwrap();
//! let port = background.port().unwrap();
//!
//! let storage = ClientStorage::open(ClientOptions::new(vec![ServerAddress::localhost(port)])).unwrap();
//! let options = CommitOptions::new().user("demo").description("create the root");
//! let (list_oid, tid) = storage
//!     .commit(&options, |txn| {
//!         let list_oid = txn.new_oid()?;
//!         let list = Record::persistent_list([Value::str("first"), Value::Int(2)]);
//!         txn.store_record(list_oid, Tid::ZERO, &list)?;
//!         let root = Record::persistent_mapping([
//!             (Value::str("title"), Value::str("demo")),
//!             (Value::str("items"), reference(list_oid, PERSISTENT_LIST)),
//!         ]);
//!         txn.store_record(Oid::ROOT, Tid::ZERO, &root)?;
//!         Ok(list_oid)
//!     })
//!     .unwrap();
//!
//! let (root, serial) = storage.load_record(Oid::ROOT).unwrap();
//! assert_eq!(serial, tid);
//! assert_eq!(root.mapping_get("title").and_then(Value::as_str), Some("demo"));
//! let items = root.mapping_get("items").and_then(oid_of).unwrap();
//! assert_eq!(items, list_oid);
//! let (list, _) = storage.load_record(items).unwrap();
//! assert_eq!(list.list_items().unwrap(), [Value::str("first"), Value::Int(2)]);
//! assert_eq!(storage.last_transaction(), tid);
//! storage.close().unwrap();
//! // Returns once the server's storages are closed.
//! background.shutdown().unwrap();
//! ```
//!
//! Iteration, the undo log (filtered here, since a filter cannot travel to
//! the server) and undo, against an in-process server over FileStorage:
//!
//! ```
//! use std::sync::Arc;
//! use zeo_client::{ClientOptions, ClientStorage, ServerAddress};
//! use zeo_client::records::Record;
//! use zeo_pickle::Value;
//! use zeo_server::{ListenAddress, ServerBuilder, ServerSettings};
//! use zeo_storage::filestorage::FileStorageOptions;
//! use zeo_storage::{BeginOptions, FileStorage, Iteration, Storage, Tid, TransactionMetaData, Undo, UndoEntry};
//!
//! let dir = tempfile::tempdir().unwrap();
//! let file = FileStorage::open(&dir.path().join("Data.fs"), FileStorageOptions::default()).unwrap();
//! let server = ServerBuilder::new(ServerSettings::default())
//!     .storage("1", Arc::new(file))
//!     .build()
//!     .unwrap();
//! server.bind(&ListenAddress::localhost(0)).unwrap();
//! let background = server.start_background().unwrap();
//! let port = background.port().unwrap();
//! let storage = ClientStorage::open(ClientOptions::new(vec![ServerAddress::localhost(port)])).unwrap();
//!
//! // The root, a PersistentMapping, with a different "n" in each transaction.
//! let root = |n: i64| Record::persistent_mapping([(Value::str("n"), Value::Int(n))]).encode().unwrap();
//! let commit = |description: &str, serial: Tid, n: i64| {
//!     let meta = TransactionMetaData { description: description.into(), ..Default::default() };
//!     let txn = storage.tpc_begin(&meta, BeginOptions::default()).unwrap();
//!     storage.store(txn, zeo_storage::Oid::ROOT, serial, &root(n)).unwrap();
//!     storage.tpc_vote(txn).unwrap();
//!     storage.finish(txn).unwrap()
//! };
//! let t1 = commit("first", Tid::ZERO, 1);
//! let t2 = commit("second", t1, 2);
//!
//! // Transactions come one at a time, each with its data records.
//! let tids: Vec<Tid> = storage.iterator(None, None).unwrap().map(|t| t.unwrap().tid).collect();
//! assert_eq!(tids, [t1, t2]);
//!
//! // Undo the second transaction, found through a filter.
//! assert!(storage.as_undo().is_some(), "the server supports undo");
//! let second = |e: &UndoEntry| e.description == b"second";
//! let entry = storage.undo_log(0, -20, Some(&second)).unwrap().remove(0);
//! assert_eq!(entry.tid, t2);
//! let txn = storage.tpc_begin(&TransactionMetaData::default(), BeginOptions::default()).unwrap();
//! storage.undo(txn, &entry.id).unwrap();
//! assert_eq!(storage.tpc_vote(txn).unwrap(), [zeo_storage::Oid::ROOT]);
//! let t3 = storage.finish(txn).unwrap();
//! assert_eq!(storage.load(zeo_storage::Oid::ROOT).unwrap(), (root(1), t3));
//! storage.close().unwrap();
//! // Returns once the server's storages are closed.
//! background.shutdown().unwrap();
//! ```

#![warn(missing_docs)]

pub mod blob_cache;
mod blobs;
pub mod cache;
mod client;
mod commit;
mod connection;
pub mod error;
mod iteration;
mod manager;
mod options;
mod reconnect;
pub mod records;
mod storage;
mod verify;
mod vote;

pub use blob_cache::{BlobDir, Layout};
pub use blobs::{BLOB_CHUNK, UPLOAD_QUEUE_LIMIT};
pub use cache::{CacheStats, ClientCache};
pub use client::{AsyncClientStorage, ClientStats, PREFETCH_WINDOW};
pub use commit::{AsyncTransaction, CommitOptions, Transaction};
pub use connection::Notice;
pub use error::{is_client_disconnected, Error, ErrorKind, Result};
pub use iteration::TransactionStream;
pub use options::{
    ClientOptions, ConflictInfo, ConflictResolver, Connecting, Connector, ServerAddress, Transport,
};
pub use storage::ClientStorage;

/// `docs/client.md`, whose examples run as doctests.
#[cfg(doctest)]
#[doc = include_str!("../../../docs/client.md")]
pub struct ClientGuide;

/// `docs/rust-records.md`, whose examples run as doctests.
#[cfg(doctest)]
#[doc = include_str!("../../../docs/rust-records.md")]
pub struct RustRecordsGuide;
