//! ZEO 3/4 digest authentication, without any I/O.
//!
//! ZEO 3 and 4 could require clients to log in with a user name and
//! password (`authentication-protocol digest`) and then authenticated every
//! message with a chained HMAC-SHA1. ZEO 5 removed all of it, so stock
//! ZEO 5/6 Python clients cannot use it; zeo-rs keeps it as an opt-in
//! between its own server and client. This crate holds the pieces, free of
//! sockets and runtimes:
//!
//! * [`digest`]: password hashes, nonces, challenges, responses and the
//!   60-byte [`SessionKey`], client side ([`ClientProof`]) and server side
//!   ([`ServerAuthenticator`]);
//! * [`mac`]: the [`MacState`] framer that seals and opens MAC'd frames;
//! * [`database`]: the `zeopasswd` file ([`PasswordDatabase`]).
//!
//! ```
//! use std::time::SystemTime;
//! use zeo_auth::{ClientProof, MacState, PasswordDatabase, ServerAuthenticator};
//!
//! let mut db = PasswordDatabase::new(Some("zeo")).unwrap();
//! db.add_user("alice", "s3cret").unwrap();
//! let server = ServerAuthenticator::new(db).unwrap();
//!
//! let challenge = server.challenge("('127.0.0.1', 53422)", SystemTime::now());
//! let proof = ClientProof::new("alice", "s3cret", Some("zeo"), &challenge).unwrap();
//! let key = server
//!     .verify(Some(&challenge), "alice", &challenge.challenge, &proof.response)
//!     .unwrap()
//!     .expect("right password");
//! assert_eq!(key, proof.session_key);
//!
//! let mut client_send = MacState::new(&proof.session_key);
//! let mut server_recv = MacState::new(&key);
//! let frame = client_send.seal(b"register").unwrap();
//! assert_eq!(server_recv.open(&frame).unwrap(), b"register");
//! ```
//!
//! See `docs/auth.md` for the protocol and its limits.
#![warn(missing_docs)]

pub mod database;
pub mod digest;
pub mod error;
pub mod mac;

pub use database::{update_file, PasswdAction, PasswdOutcome, PasswordDatabase};
pub use digest::{
    constant_time_eq, nonce, password_hash, python_peer_text, response, Challenge, ClientProof,
    NonceKey, ServerAuthenticator, SessionKey, PROTOCOL,
};
pub use error::{Error, Result};
pub use mac::{body_len, split_length_word, MacState, MAC_BIT, MAC_LEN};
