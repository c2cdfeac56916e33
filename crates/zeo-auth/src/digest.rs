//! The ZEO 3/4 `digest` scheme: password hashes, challenges, responses and
//! session keys, modelled on HTTP digest authentication (RFC 2069).
//!
//! Every hash is SHA-1. Texts are hashed as their UTF-8 bytes, as ZEO 4 on
//! Python 3 does (`str.encode()`), and hex digests are lowercase.
//!
//! The exchange, after the handshake and before `register`:
//!
//! 1. the client asks `getAuthProtocol()` and gets [`PROTOCOL`];
//! 2. `auth_get_challenge()` returns a [`Challenge`]: the realm, a challenge
//!    nonce and a key nonce ([`ServerAuthenticator::challenge`]);
//! 3. the client answers `auth_response((user, challenge, response))` with
//!    [`ClientProof::new`]'s response;
//! 4. the server checks it ([`ServerAuthenticator::verify`]); on success both
//!    sides hold the same [`SessionKey`] and MAC every later message.

use std::fmt;
use std::net::SocketAddr;
use std::time::{SystemTime, UNIX_EPOCH};

use rand::RngCore;
use sha1::{Digest, Sha1};
use subtle::ConstantTimeEq;

use crate::database::PasswordDatabase;
use crate::error::{Error, Result};

/// The name `getAuthProtocol()` answers for this scheme.
pub const PROTOCOL: &str = "digest";

/// Bytes in a session key: 20 raw SHA-1 bytes and the 40 hex digits of the
/// password hash.
pub const SESSION_KEY_LEN: usize = 60;

/// Bytes of the server's nonce secret.
pub const NONCE_KEY_LEN: usize = 8;

/// Lowercase hex SHA-1 of the UTF-8 bytes of `text`.
pub fn sha1_hex(text: &str) -> String {
    hex::encode(Sha1::digest(text.as_bytes()))
}

/// The password hash a digest database stores and both sides compute:
/// `sha1("user:realm:password")` in hex (ZEO's `h_up`).
///
/// ```
/// assert_eq!(
///     zeo_auth::password_hash("alice", "zeo-realm", "s3cret"),
///     "9d77f5676c3bf529f37fe6e19a23d08a79b2ab40"
/// );
/// ```
pub fn password_hash(user: &str, realm: &str, password: &str) -> String {
    sha1_hex(&format!("{user}:{realm}:{password}"))
}

/// The client's answer to `challenge`: `sha1("h_up:challenge")` in hex.
pub fn response(h_up: &str, challenge: &str) -> String {
    sha1_hex(&format!("{h_up}:{challenge}"))
}

/// The 60-byte HMAC key of an authenticated connection.
#[derive(Clone, PartialEq, Eq)]
pub struct SessionKey([u8; SESSION_KEY_LEN]);

impl SessionKey {
    /// ZEO's derivation: the raw `sha1("h_up:key_nonce")` followed by the
    /// first 40 bytes of `h_up` itself. The second half never changes for a
    /// user, which is why the nonce-dependent half comes first.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidName`] when `h_up` is not 40 ASCII characters (every
    /// SHA-1 hex digest is).
    pub fn derive(h_up: &str, key_nonce: &str) -> Result<Self> {
        let tail = h_up.as_bytes();
        if tail.len() != 40 || !h_up.is_ascii() {
            return Err(Error::InvalidName {
                what: "password hash",
                value: h_up.to_owned(),
                reason: "not a 40-digit SHA-1 hex digest",
            });
        }
        let mut key = [0u8; SESSION_KEY_LEN];
        let (head, rest) = key.split_at_mut(20);
        head.copy_from_slice(&Sha1::digest(format!("{h_up}:{key_nonce}").as_bytes()));
        rest.copy_from_slice(tail);
        Ok(SessionKey(key))
    }

    /// The key bytes.
    pub fn as_bytes(&self) -> &[u8; SESSION_KEY_LEN] {
        &self.0
    }
}

impl fmt::Debug for SessionKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Never print key material.
        f.write_str("SessionKey(..)")
    }
}

/// What `auth_get_challenge()` returns: `(realm, challenge, key_nonce)`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Challenge {
    /// The server's realm.
    pub realm: String,
    /// The nonce the client must hash its password hash with.
    pub challenge: String,
    /// The nonce the session key is derived from.
    pub key_nonce: String,
}

/// The server's per-process secret mixed into every nonce (ZEO keeps one
/// per password database, 8 bytes from the system's random source).
#[derive(Clone)]
pub struct NonceKey([u8; NONCE_KEY_LEN]);

impl NonceKey {
    /// A fresh random key.
    pub fn generate() -> Self {
        let mut key = [0u8; NONCE_KEY_LEN];
        rand::rng().fill_bytes(&mut key);
        NonceKey(key)
    }

    /// A fixed key (tests, reproducible nonces).
    pub fn from_bytes(key: [u8; NONCE_KEY_LEN]) -> Self {
        NonceKey(key)
    }
}

impl fmt::Debug for NonceKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("NonceKey(..)")
    }
}

/// How Python prints a peer address tuple (`str(addr)`), the text ZEO puts
/// first in a nonce: `('127.0.0.1', 53422)` for IPv4 and
/// `('::1', 53422, 0, 0)` (with flow info and scope id) for IPv6.
pub fn python_peer_text(addr: &SocketAddr) -> String {
    match addr {
        SocketAddr::V4(a) => format!("('{}', {})", a.ip(), a.port()),
        SocketAddr::V6(a) => format!(
            "('{}', {}, {}, {})",
            a.ip(),
            a.port(),
            a.flowinfo(),
            a.scope_id()
        ),
    }
}

/// A nonce as ZEO computes it: the lowercase hex SHA-1 of, in order,
///
/// 1. `peer`, the peer address text ([`python_peer_text`]; ZEO sees an empty
///    string for a Unix-socket peer),
/// 2. `unix_seconds` truncated to a 32-bit signed integer in native byte
///    order (Python's `struct.pack("i", int(time.time()))`),
/// 3. the 8 bytes of the server's [`NonceKey`].
///
/// Only the server ever computes a nonce (the client echoes it), so the
/// exact bytes matter for reproducing ZEO, not for interoperating.
pub fn nonce(peer: &str, unix_seconds: i64, key: &NonceKey) -> String {
    let mut h = Sha1::new();
    h.update(peer.as_bytes());
    // Truncation is what ZEO's 32-bit "i" packing does (it would raise
    // after 2038; wrapping keeps the nonce defined).
    h.update((unix_seconds as i32).to_ne_bytes());
    h.update(key.0);
    hex::encode(h.finalize())
}

/// Whether two texts are equal, in time that depends only on their lengths.
pub fn constant_time_eq(a: &str, b: &str) -> bool {
    a.len() == b.len() && bool::from(a.as_bytes().ct_eq(b.as_bytes()))
}

/// What the client sends and keeps after seeing a [`Challenge`].
#[derive(Clone, Debug)]
pub struct ClientProof {
    /// The `response` member of `auth_response((user, challenge, response))`.
    pub response: String,
    /// The key to install once the server answers `True`.
    pub session_key: SessionKey,
}

impl ClientProof {
    /// Computes the response to `challenge` for `user`/`password`.
    ///
    /// `realm` is the realm the client was configured with; `None` accepts
    /// whatever realm the server announces (ZEO 4 insisted on a configured
    /// realm; the hash binds user, realm and password either way, so
    /// trusting the server's name gives nothing away).
    ///
    /// # Errors
    ///
    /// [`Error::EmptyCredentials`] for an empty user or password,
    /// [`Error::RealmMismatch`] when the realms differ.
    pub fn new(
        user: &str,
        password: &str,
        realm: Option<&str>,
        challenge: &Challenge,
    ) -> Result<Self> {
        if user.is_empty() || password.is_empty() {
            return Err(Error::EmptyCredentials);
        }
        if let Some(realm) = realm {
            if realm != challenge.realm {
                return Err(Error::RealmMismatch {
                    server: challenge.realm.clone(),
                    client: realm.to_owned(),
                });
            }
        }
        let h_up = password_hash(user, &challenge.realm, password);
        Ok(ClientProof {
            response: response(&h_up, &challenge.challenge),
            session_key: SessionKey::derive(&h_up, &challenge.key_nonce)?,
        })
    }
}

/// The server side of the scheme, shared by every connection: the password
/// database, its realm and the nonce secret.
#[derive(Debug)]
pub struct ServerAuthenticator {
    realm: String,
    database: PasswordDatabase,
    nonce_key: NonceKey,
}

impl ServerAuthenticator {
    /// Serves `database`, which must carry a realm.
    ///
    /// # Errors
    ///
    /// [`Error::MissingRealm`] when the database has none.
    pub fn new(database: PasswordDatabase) -> Result<Self> {
        Self::with_nonce_key(database, NonceKey::generate())
    }

    /// Like [`ServerAuthenticator::new`] with a fixed nonce secret.
    ///
    /// # Errors
    ///
    /// [`Error::MissingRealm`] when the database has none.
    pub fn with_nonce_key(database: PasswordDatabase, nonce_key: NonceKey) -> Result<Self> {
        let realm = database.realm().ok_or(Error::MissingRealm)?.to_owned();
        Ok(ServerAuthenticator {
            realm,
            database,
            nonce_key,
        })
    }

    /// The realm announced to clients.
    pub fn realm(&self) -> &str {
        &self.realm
    }

    /// The password database.
    pub fn database(&self) -> &PasswordDatabase {
        &self.database
    }

    /// A challenge for the peer described by `peer` (see [`nonce`]), at
    /// time `now`. Both nonces are computed the same way and are therefore
    /// equal within one second, exactly as in ZEO.
    pub fn challenge(&self, peer: &str, now: SystemTime) -> Challenge {
        let secs = now
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs() as i64)
            .unwrap_or(0);
        Challenge {
            realm: self.realm.clone(),
            challenge: nonce(peer, secs, &self.nonce_key),
            key_nonce: nonce(peer, secs, &self.nonce_key),
        }
    }

    /// Checks `auth_response((user, challenge, response))` against the
    /// challenge `issued` on this connection.
    ///
    /// Returns the session key when the response is right and `None` when
    /// it is wrong (ZEO answers `False`).
    ///
    /// # Errors
    ///
    /// [`Error::InvalidChallenge`] when nothing was issued or `challenge`
    /// is not what was issued, [`Error::NoSuchUser`] for an unknown user
    /// (ZEO's `LookupError`).
    pub fn verify(
        &self,
        issued: Option<&Challenge>,
        user: &str,
        challenge: &str,
        response_text: &str,
    ) -> Result<Option<SessionKey>> {
        let issued = issued.ok_or(Error::InvalidChallenge)?;
        if issued.challenge != challenge {
            return Err(Error::InvalidChallenge);
        }
        let h_up = self.database.get(user)?;
        let expected = response(h_up, challenge);
        if constant_time_eq(&expected, response_text) {
            Ok(Some(SessionKey::derive(h_up, &issued.key_nonce)?))
        } else {
            Ok(None)
        }
    }
}
