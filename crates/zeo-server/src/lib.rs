//! The embeddable ZEO 5 storage server.
//!
//! Serves [`zeo_storage::Storage`] implementations to Python ZEO 5/6 clients
//! (and ours) over TCP or Unix sockets, on the host's tokio runtime:
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), zeo_server::Error> {
//! use std::sync::Arc;
//! use zeo_server::{ListenAddress, ServerBuilder, ServerSettings};
//! use zeo_storage::MappingStorage;
//!
//! let server = ServerBuilder::new(ServerSettings::default())
//!     .storage("1", Arc::new(MappingStorage::new("1")))
//!     .build()?;
//! let bound = server.bind(&ListenAddress::localhost(0))?;
//! println!("listening on {}", bound[0]);
//! let running = server.spawn();
//! assert_eq!(running.port(), bound[0].port());
//! // ... clients connect to 127.0.0.1 on that port ...
//! running.shutdown().await // the storages are closed once this returns
//! # }
//! ```
//!
//! [`Server::spawn`] returns a [`RunningServer`] whose `shutdown().await`
//! waits until every storage is closed; [`Server::serve`] runs the same
//! loop in place until a given future resolves; programs that are not async
//! use [`Server::start_background`]. `docs/server.md` ("Embedding it")
//! walks through a complete program with a client.
//!
//! The public surface is what an embedder needs: [`ServerBuilder`] and
//! [`ServerSettings`] to configure, [`Server`] to bind and serve,
//! [`RunningServer`], [`BackgroundServer`] and [`ServerHandle`] to control
//! and observe it (including [`ServerHandle::serve_stream`] for streams
//! accepted elsewhere), [`Error`], [`MonitorReport`] for the monitor's
//! format and [`logging`] for ZEO's log format. Everything else (the
//! per-connection session, the commit lock, the invalidation queue, the
//! outbox) is private to the crate; `docs/ARCHITECTURE.md` maps it.
//!
//! Each connection runs in its own task, with a writer task draining an
//! ordered outbox. Each storage has a hub: the commit lock taken at `vote`,
//! the invalidation queue, the registered clients and the counters. See
//! `docs/server.md` for the ordering invariant that ties loads and
//! invalidations together.
#![warn(missing_docs)]

mod blob_calls;
mod commit;
mod commit_lock;
mod connection;
mod error;
mod foreign;
mod frame_reader;
mod hub;
mod invalidations;
mod iterators;
pub mod logging;
mod metrics;
mod monitor;
mod outbox;
mod server;
mod session;
mod settings;
mod stats;
mod storage_calls;
mod txn_log;

pub use error::{Error, Result};
pub use metrics::ProcessMetrics;
pub use monitor::{MonitorReport, MonitorStats};
pub use server::{
    BackgroundServer, BoundAddress, ListenAddress, RunningServer, Server, ServerBuilder,
    ServerHandle,
};
pub use settings::ServerSettings;

/// The Rust examples of `docs/server.md`, compiled and run as
/// documentation tests so that the guide cannot drift from the API.
#[cfg(doctest)]
#[doc = include_str!("../../../docs/server.md")]
pub struct ServerGuide;

/// The Rust examples of `docs/configuration.md`, should it grow any.
#[cfg(doctest)]
#[doc = include_str!("../../../docs/configuration.md")]
pub struct ConfigurationGuide;

/// The Rust examples of the top-level `README.md`, should it grow any.
#[cfg(doctest)]
#[doc = include_str!("../../../README.md")]
pub struct Readme;
