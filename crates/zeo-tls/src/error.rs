//! The one error type of zeo-tls: what is wrong with a TLS configuration,
//! or why a handshake failed.

use std::path::PathBuf;

use crate::reason::FailureReason;

/// A TLS configuration that cannot be used, or a failed handshake.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A file named in the configuration could not be read.
    #[error("{path}: cannot read: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// A file is larger than any certificate, key or CRL file should be.
    #[error("{path}: {size} bytes is larger than the {limit} bytes a TLS file may have")]
    TooLarge {
        /// The file.
        path: PathBuf,
        /// Its size.
        size: u64,
        /// The limit.
        limit: u64,
    },
    /// A PEM file is malformed.
    #[error("{path}: not a valid PEM file: {reason}")]
    BadPem {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// The certificate file holds no certificate.
    #[error("{path}: no certificate found (expected a PEM `CERTIFICATE` block)")]
    NoCertificate {
        /// The file.
        path: PathBuf,
    },
    /// The key file (or the certificate file, when no key is named) holds
    /// no private key.
    #[error("{path}: no private key found (expected a PEM `PRIVATE KEY`, `RSA PRIVATE KEY` or `EC PRIVATE KEY` block)")]
    NoKey {
        /// The file.
        path: PathBuf,
    },
    /// The private key is encrypted and no `password-file` was given.
    #[error("{path}: the private key is encrypted: name a file holding its password with password-file (zeo-rs's alternative to password-function), or decrypt it with `openssl pkey`")]
    EncryptedKey {
        /// The file.
        path: PathBuf,
    },
    /// The key uses OpenSSL's legacy PEM encryption (`Proc-Type`), which
    /// zeo-rs does not read.
    #[error("{path}: the private key uses OpenSSL's legacy PEM encryption; convert it to encrypted PKCS#8 with `openssl pkcs8 -topk8 -in {path} -out KEY.pem` (then use password-file), or decrypt it with `openssl pkey`")]
    LegacyEncryptedKey {
        /// The file.
        path: PathBuf,
    },
    /// The password of `password-file` does not decrypt the key.
    #[error("{path}: the password in password-file does not decrypt the private key")]
    WrongPassword {
        /// The key file.
        path: PathBuf,
    },
    /// The private key does not belong to the certificate.
    #[error("{key}: the private key does not match the certificate in {certificate}")]
    KeyMismatch {
        /// The certificate file.
        certificate: PathBuf,
        /// The key file.
        key: PathBuf,
    },
    /// A certificate or key that rustls refuses.
    #[error("{path}: {reason}")]
    Unusable {
        /// The file.
        path: PathBuf,
        /// What rustls said.
        reason: String,
    },
    /// `authenticate` names no certificate (a file or directory without
    /// any).
    #[error("{path}: authenticate names no CA or client certificate")]
    NoAuthorities {
        /// The file or directory.
        path: PathBuf,
    },
    /// `authenticate DYNAMIC`: only a Python hook can fill such a context.
    #[error("authenticate DYNAMIC is a hook for Python code that loads certificates into the SSL context later; zeo-rs has no such hook: name a CA file or a directory of CA and client certificates")]
    Dynamic,
    /// `password-function`: a Python callable zeo-rs cannot call.
    #[error("password-function {0} names a Python function, which zeo-rs cannot call; name a file holding the key's password with password-file instead (a zeo-rs extension, docs/tls.md)")]
    PasswordFunction(String),
    /// The system's CA certificates could not be loaded.
    #[error("cannot load the system's CA certificates: {0}")]
    SystemRoots(String),
    /// The server-hostname is not a DNS name or IP address.
    #[error("server-hostname {0:?} is not a DNS name or an IP address")]
    BadServerName(String),
    /// A handshake failed, for this reason.
    #[error("TLS handshake failed: {0}")]
    Handshake(FailureReason),
}

/// zeo-tls results.
pub type Result<T, E = Error> = std::result::Result<T, E>;
