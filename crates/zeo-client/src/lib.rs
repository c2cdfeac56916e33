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
//! A round trip through an in-process server:
//!
//! ```
//! use std::sync::Arc;
//! use zeo_client::{ClientOptions, ClientStorage, ServerAddress};
//! use zeo_server::{BoundAddress, ListenAddress, ServerBuilder, ServerSettings};
//! use zeo_storage::{BeginOptions, MappingStorage, Storage, Tid, TransactionMetaData};
//!
//! let rt = tokio::runtime::Runtime::new().unwrap();
//! let server = ServerBuilder::new(ServerSettings::default())
//!     .storage("1", Arc::new(MappingStorage::new("1")))
//!     .build()
//!     .unwrap();
//! let port = {
//!     let _runtime = rt.enter();
//!     match &server.bind(&ListenAddress::localhost(0)).unwrap()[0] {
//!         BoundAddress::Tcp(addr) => addr.port(),
//!         other => panic!("{other}"),
//!     }
//! };
//! let handle = server.handle();
//! rt.spawn(server.serve(std::future::pending()));
//!
//! let storage = ClientStorage::open(ClientOptions::new(vec![ServerAddress::localhost(port)])).unwrap();
//! let oid = storage.new_oid().unwrap();
//! let txn = storage.tpc_begin(&TransactionMetaData::default(), BeginOptions::default()).unwrap();
//! storage.store(txn, oid, Tid::ZERO, b"some record").unwrap();
//! storage.tpc_vote(txn).unwrap();
//! let tid = storage.tpc_finish(txn, &mut |_| {}).unwrap();
//! assert_eq!(storage.load(oid).unwrap(), (b"some record".to_vec(), tid));
//! assert_eq!(storage.last_transaction(), tid);
//! drop(storage);
//! handle.shutdown();
//! ```
//!
//! Iteration, the undo log (filtered here, since a filter cannot travel to
//! the server) and undo, against an in-process server over FileStorage:
//!
//! ```
//! use std::sync::Arc;
//! use zeo_client::{ClientOptions, ClientStorage, ServerAddress};
//! use zeo_server::{BoundAddress, ListenAddress, ServerBuilder, ServerSettings};
//! use zeo_storage::filestorage::FileStorageOptions;
//! use zeo_storage::{BeginOptions, FileStorage, Storage, Tid, TransactionMetaData, UndoEntry};
//!
//! let dir = tempfile::tempdir().unwrap();
//! let file = FileStorage::open(&dir.path().join("Data.fs"), FileStorageOptions::default()).unwrap();
//! let rt = tokio::runtime::Runtime::new().unwrap();
//! let server = ServerBuilder::new(ServerSettings::default())
//!     .storage("1", Arc::new(file))
//!     .build()
//!     .unwrap();
//! let port = {
//!     let _runtime = rt.enter();
//!     match &server.bind(&ListenAddress::localhost(0)).unwrap()[0] {
//!         BoundAddress::Tcp(addr) => addr.port(),
//!         other => panic!("{other}"),
//!     }
//! };
//! let handle = server.handle();
//! rt.spawn(server.serve(std::future::pending()));
//! let storage = ClientStorage::open(ClientOptions::new(vec![ServerAddress::localhost(port)])).unwrap();
//!
//! let commit = |description: &str, serial: Tid, data: &[u8]| {
//!     let meta = TransactionMetaData { description: description.into(), ..Default::default() };
//!     let txn = storage.tpc_begin(&meta, BeginOptions::default()).unwrap();
//!     storage.store(txn, zeo_storage::Oid::ROOT, serial, data).unwrap();
//!     storage.tpc_vote(txn).unwrap();
//!     storage.tpc_finish(txn, &mut |_| {}).unwrap()
//! };
//! let t1 = commit("first", Tid::ZERO, b"one");
//! let t2 = commit("second", t1, b"two");
//!
//! // Transactions come one at a time, each with its data records.
//! let tids: Vec<Tid> = storage.iterator(None, None).unwrap().map(|t| t.unwrap().tid).collect();
//! assert_eq!(tids, [t1, t2]);
//!
//! // Undo the second transaction, found through a filter.
//! assert!(storage.supports_undo());
//! let second = |e: &UndoEntry| e.description == b"second";
//! let entry = storage.undo_log(0, -20, Some(&second)).unwrap().remove(0);
//! assert_eq!(entry.tid, t2);
//! let txn = storage.tpc_begin(&TransactionMetaData::default(), BeginOptions::default()).unwrap();
//! storage.undo(txn, &entry.id).unwrap();
//! assert_eq!(storage.tpc_vote(txn).unwrap(), [zeo_storage::Oid::ROOT]);
//! let t3 = storage.tpc_finish(txn, &mut |_| {}).unwrap();
//! assert_eq!(storage.load(zeo_storage::Oid::ROOT).unwrap(), (b"one".to_vec(), t3));
//! drop(storage);
//! handle.shutdown();
//! ```

#![warn(missing_docs)]

pub mod cache;
mod client;
mod connection;
pub mod error;
mod iteration;
mod options;
mod storage;

pub use cache::{CacheStats, ClientCache};
pub use client::{AsyncClientStorage, ClientStats};
pub use connection::Notice;
pub use error::{is_client_disconnected, Error, Result};
pub use iteration::TransactionStream;
pub use options::{ClientOptions, ConflictInfo, ConflictResolver, ServerAddress};
pub use storage::ClientStorage;
