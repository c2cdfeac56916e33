//! ZConfig-format configuration for the ZEO server and client.
//!
//! Two layers:
//!
//! * [`syntax`]: the generic ZConfig text format (sections, `key value`
//!   lines, `%define`/`%include`/`%import`, `$` substitution), producing a
//!   [`Section`] tree with a file and line for every entry;
//! * typed configurations checked against the keys of ZEO's and ZODB's
//!   schemas: [`ServerConfig`] for `runzeo -C` files and [`ClientConfig`]
//!   for `<zeoclient>` / `<clientstorage>` sections, with ZEO's defaults.
//!
//! Unknown keys and sections are errors naming file and line, as in ZConfig.
//! Settings that parse but that zeo-rs does not act on are listed in each
//! configuration's `unsupported` field so programs can warn about them.
//!
//! ```
//! let config = zeo_config::ServerConfig::from_str(
//!     "<zeo>\n  address 127.0.0.1:8100\n</zeo>\n<mappingstorage/>\n",
//!     "example.conf",
//! )?;
//! assert_eq!(config.storages[0].name, "1");
//! assert_eq!(config.zeo.invalidation_queue_size, 100);
//! # Ok::<(), zeo_config::Error>(())
//! ```

#![warn(missing_docs)]

pub mod client;
pub mod convert;
pub mod datatypes;
pub mod error;
pub mod logging;
pub mod relstorage;
mod schema;
pub mod server;
pub mod ssl;
pub mod storage;
mod substitution;
pub mod support;
pub mod syntax;

pub use client::{ClientConfig, ClientSectionKind, DatabaseConfig};
pub use convert::ConvertConfig;
pub use datatypes::{ByteSize, Interval, LogLevel, SocketAddress};
pub use error::{Error, Location, Result};
pub use logging::{
    EventLog, LogFile, LogFormatStyle, LogHandler, LogPath, LogRotation, DEFAULT_DATE_FORMAT,
    DEFAULT_LOG_FORMAT,
};
pub use relstorage::RelStorageConfig;
pub use server::{ServerConfig, ZeoConfig};
pub use ssl::{ClientSsl, ServerSsl, SslAuthenticate};
pub use storage::{
    BlobStorageConfig, FileStorageConfig, MappingStorageConfig, StorageConfig, StorageKind,
};
pub use support::Unsupported;
pub use syntax::{parse, parse_file, Item, KeyValue, Parser, Section};
