//! The embeddable ZEO 5 storage server.
//!
//! Serves [`zeo_storage::Storage`] implementations to Python ZEO 5/6 clients
//! (and ours) over TCP or Unix sockets, on the host's tokio runtime:
//!
//! ```no_run
//! # async fn run() -> Result<(), zeo_server::Error> {
//! use std::sync::Arc;
//! use zeo_server::{ListenAddress, ServerBuilder, ServerSettings};
//! use zeo_storage::MappingStorage;
//!
//! let server = ServerBuilder::new(ServerSettings::default())
//!     .storage("1", Arc::new(MappingStorage::new("1")))
//!     .build()?;
//! let bound = server.bind(&ListenAddress::localhost(0))?;
//! println!("listening on {}", bound[0]);
//! server.serve(async { let _ = tokio::signal::ctrl_c().await; }).await
//! # }
//! ```
//!
//! Each connection runs in its own task, with a writer task draining an
//! ordered outbox. Each storage has a [`hub::StorageHub`]: the commit lock
//! taken at `vote`, the invalidation queue, the registered clients and the
//! counters. See `docs/server.md` for the ordering invariant that ties loads
//! and invalidations together.
#![warn(missing_docs)]

pub mod commit;
pub mod commit_lock;
mod connection;
pub mod error;
mod frame_reader;
pub mod hub;
pub mod invalidations;
pub mod iterators;
pub mod logging;
pub mod monitor;
pub mod outbox;
mod server;
pub mod settings;
pub mod stats;
pub mod txn_log;

pub use error::{Error, Result};
pub use server::{
    BackgroundServer, BoundAddress, ListenAddress, RunningServer, Server, ServerBuilder,
    ServerHandle,
};
pub use settings::ServerSettings;
