//! TLS for ZEO servers and clients, on rustls with the ring provider.
//!
//! ZEO 6 configures TLS with an `<ssl>` section; this crate turns the files
//! such a section names into rustls configurations that behave as Python's
//! `ssl` module does with them:
//!
//! - servers require a client certificate, accepted when it equals one
//!   listed in `authenticate` (pinning: ZEO's own test certificates are
//!   self-signed, SHA-1 and `CA:TRUE`, which WebPKI validation refuses) or
//!   when it chains to a listed CA; CRLs found in `authenticate` are
//!   checked for the leaf;
//! - clients check the server's certificate the same way and match the host
//!   name on subjectAltName, or on the subject CN when there is none;
//! - TLS 1.2 and 1.3;
//! - failures are classified into a [`FailureReason`] that says what went
//!   wrong, on both sides.
//!
//! [`ServerTls`] can be reloaded while serving. It knows nothing of ZEO's
//! protocol: the server and client wrap their streams with it.

#![warn(missing_docs)]

pub mod client;
pub mod error;
pub mod files;
pub mod reason;
pub mod server;
pub mod verify;

pub use client::{ClientTls, ClientTlsFiles};
pub use error::{Error, Result};
pub use reason::FailureReason;
pub use server::{ServerTls, ServerTlsFiles, DEFAULT_HANDSHAKE_TIMEOUT};

/// The server side's stream once the handshake is done.
pub type ServerStream<S> = tokio_rustls::server::TlsStream<S>;
/// The client side's stream once the handshake is done.
pub type ClientStream<S> = tokio_rustls::client::TlsStream<S>;

#[cfg(feature = "testing")]
pub mod testing;
