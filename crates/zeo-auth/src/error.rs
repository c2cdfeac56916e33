//! The one error type of this crate.
//!
//! Messages that a ZEO 4 peer or tool would show repeat ZEO's wording, so
//! that logs and scripts read the same.

use std::path::PathBuf;

/// Everything that can go wrong while authenticating, framing or managing
/// the password database.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The client was configured for one realm and the server announced
    /// another (ZEO's `AuthError` text, server realm first).
    #[error("expected realm {server:?}, got realm {client:?}")]
    RealmMismatch {
        /// The realm the server announced.
        server: String,
        /// The realm the client was configured with.
        client: String,
    },
    /// Authentication needs both a user name and a password.
    #[error("empty username or password")]
    EmptyCredentials,
    /// The server turned the response down (wrong password).
    #[error("Authentication failed")]
    AuthenticationFailed,
    /// `auth_response` named a challenge other than the one issued on this
    /// connection, or none was issued.
    #[error("invalid challenge")]
    InvalidChallenge,
    /// The user is not in the password database.
    #[error("No such user: {0}")]
    NoSuchUser(String),
    /// `add_user` for a user already in the database.
    #[error("User {0} already exists")]
    UserExists(String),
    /// The realm given on the command line or in the configuration differs
    /// from the one recorded in the database file.
    #[error("Specified realm {specified:?} differs from database realm {database:?}")]
    RealmConflict {
        /// The realm asked for.
        specified: String,
        /// The realm in the file.
        database: String,
    },
    /// A digest database was used without any realm: the password hashes
    /// include the realm, so there is nothing to hash against.
    #[error("the password database has no realm and none was given")]
    MissingRealm,
    /// A user name, password or realm that the file format cannot hold
    /// (a line break, or a `:` in a user name) or that is empty.
    #[error("invalid {what} {value:?}: {reason}")]
    InvalidName {
        /// `user name`, `realm` or `password`.
        what: &'static str,
        /// The rejected text.
        value: String,
        /// Why.
        reason: &'static str,
    },
    /// A database line that is neither the realm line nor `user: hash`.
    #[error("{path}:{line}: not a `user: hash` line")]
    BadDatabaseLine {
        /// The database file.
        path: PathBuf,
        /// 1-based line number.
        line: usize,
    },
    /// Reading or writing the database file failed.
    #[error("{path}: {source}")]
    Io {
        /// The database file.
        path: PathBuf,
        /// The system error.
        source: std::io::Error,
    },
    /// A frame without the MAC bit arrived after the session key was set.
    #[error("Received message without MAC")]
    MissingMac,
    /// A frame's MAC did not match: the message was altered, replayed,
    /// reordered or dropped. The connection must be closed.
    #[error("MAC failed")]
    MacFailed,
    /// The MAC state already failed once; nothing more can be trusted.
    #[error("the message authentication failed earlier on this connection")]
    Poisoned,
    /// A frame too short for its header and MAC, or whose length word
    /// disagrees with its size.
    #[error("malformed MAC'd frame: {0}")]
    BadFrame(&'static str),
    /// A payload too long for the 31 bits the length word leaves.
    #[error("a payload of {0} bytes does not fit a MAC'd frame")]
    PayloadTooLarge(usize),
}

/// This crate's `Result`.
pub type Result<T, E = Error> = std::result::Result<T, E>;
