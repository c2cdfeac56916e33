//! The `<ssl>` subsections of `<zeo>` and `<clientstorage>` (ZEO 5's
//! `server.xml` and `component.xml`).

use std::path::PathBuf;

use crate::datatypes::Interval;
use crate::error::Result;
use crate::schema::{key, Checked, KeySpec};
use crate::syntax::Section;

/// What the server checks client certificates against.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SslAuthenticate {
    /// A CA file, or a directory of CA/client certificates.
    Path(PathBuf),
    /// `DYNAMIC`: ZEO passes no CA file and expects certificates to be
    /// loaded into the context later by application code.
    Dynamic,
}

/// Server-side TLS settings (`<ssl>` inside `<zeo>`).
///
/// ZEO requires client certificates whenever TLS is on (`CERT_REQUIRED`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerSsl {
    /// The server's certificate chain (required).
    pub certificate: PathBuf,
    /// The private key, if not inside `certificate`.
    pub key: Option<PathBuf>,
    /// Dotted name of a Python function returning the key password.
    pub password_function: Option<String>,
    /// A file whose first line is the password of an encrypted PKCS#8
    /// key (`password-file`, ours: what zeo-rs uses instead of
    /// `password-function`).
    pub password_file: Option<PathBuf>,
    /// Client certificate authority (required).
    pub authenticate: SslAuthenticate,
    /// How long an accepted connection may take to complete its TLS
    /// handshake (`handshake-timeout`, ours; default
    /// [`DEFAULT_HANDSHAKE_TIMEOUT`]). A client without TLS waits for the
    /// server to speak first, so without it such a connection would hang.
    pub handshake_timeout: Interval,
}

/// Default `handshake-timeout`: 10 seconds.
pub const DEFAULT_HANDSHAKE_TIMEOUT: Interval = Interval(10);

/// Client-side TLS settings (`<ssl>` inside `<clientstorage>`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientSsl {
    /// The client's certificate chain (required by ZEO's schema).
    pub certificate: PathBuf,
    /// The private key, if not inside `certificate`.
    pub key: Option<PathBuf>,
    /// Dotted name of a Python function returning the key password.
    pub password_function: Option<String>,
    /// A file whose first line is the password of an encrypted PKCS#8
    /// key (`password-file`, ours).
    pub password_file: Option<PathBuf>,
    /// CA file or directory for the server certificate; the system's default
    /// CAs when absent.
    pub authenticate: Option<PathBuf>,
    /// Check the server certificate's host name (default true).
    pub check_hostname: bool,
    /// Host name to check; defaults to the host of the address connected to.
    pub server_hostname: Option<String>,
}

const SERVER_KEYS: &[KeySpec] = &[
    key("certificate"),
    key("key"),
    key("password-function"),
    key("password-file"),
    key("authenticate"),
    key("handshake-timeout"),
];

const CLIENT_KEYS: &[KeySpec] = &[
    key("certificate"),
    key("key"),
    key("password-function"),
    key("password-file"),
    key("authenticate"),
    key("check-hostname"),
    key("server-hostname"),
];

impl ServerSsl {
    pub(crate) fn from_section(section: &Section) -> Result<Self> {
        let c = Checked::new(section, SERVER_KEYS, &[])?;
        let certificate = c
            .path("certificate")
            .ok_or_else(|| c.missing("certificate"))?;
        let authenticate = match c.string("authenticate") {
            Some(v) if v.trim() == "DYNAMIC" => SslAuthenticate::Dynamic,
            Some(_) => SslAuthenticate::Path(
                c.path("authenticate")
                    .ok_or_else(|| c.missing("authenticate"))?,
            ),
            None => return Err(c.missing("authenticate")),
        };
        Ok(ServerSsl {
            certificate,
            key: c.path("key"),
            password_function: c.string("password-function"),
            password_file: c.path("password-file"),
            authenticate,
            handshake_timeout: c
                .parsed::<Interval>("handshake-timeout")?
                .unwrap_or(DEFAULT_HANDSHAKE_TIMEOUT),
        })
    }
}

impl ClientSsl {
    pub(crate) fn from_section(section: &Section) -> Result<Self> {
        let c = Checked::new(section, CLIENT_KEYS, &[])?;
        Ok(ClientSsl {
            certificate: c
                .path("certificate")
                .ok_or_else(|| c.missing("certificate"))?,
            key: c.path("key"),
            password_function: c.string("password-function"),
            password_file: c.path("password-file"),
            authenticate: c.path("authenticate"),
            check_hostname: c.bool("check-hostname")?.unwrap_or(true),
            server_hostname: c.string("server-hostname"),
        })
    }
}
