//! The client side: ZEO's client `<ssl>` settings turned into a connector
//! that checks the server as Python's `ssl` module does.

use std::path::PathBuf;
use std::sync::Arc;

use rustls_pki_types::ServerName;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio_rustls::client::TlsStream;

use crate::error::{Error, Result};
use crate::files::{load_authorities, Authorities};
use crate::reason::FailureReason;
use crate::server::{certified_key, provider};
use crate::verify::ServerVerifier;

/// A client's `<ssl>` settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientTlsFiles {
    /// PEM certificate chain presented to the server (`certificate`);
    /// ZEO servers require one.
    pub certificate: Option<PathBuf>,
    /// PEM private key (`key`); read from `certificate` when `None`.
    pub key: Option<PathBuf>,
    /// A file whose first line is the password of an encrypted PKCS#8 key
    /// (`password-file`, a zeo-rs extension).
    pub password_file: Option<PathBuf>,
    /// CA file or directory for the server's certificate
    /// (`authenticate`); the system's CAs when `None`.
    pub authenticate: Option<PathBuf>,
    /// Check that the server's certificate names the host (default true).
    pub check_hostname: bool,
    /// The name to check and send as SNI; the host of the address
    /// connected to when `None`.
    pub server_hostname: Option<String>,
}

impl Default for ClientTlsFiles {
    fn default() -> Self {
        ClientTlsFiles {
            certificate: None,
            key: None,
            password_file: None,
            authenticate: None,
            check_hostname: true,
            server_hostname: None,
        }
    }
}

/// A loaded client TLS configuration.
///
/// ```no_run
/// use zeo_tls::{ClientTls, ClientTlsFiles};
/// # async fn f() -> Result<(), Box<dyn std::error::Error>> {
/// let tls = ClientTls::load(ClientTlsFiles {
///     certificate: Some("client.pem".into()),
///     key: Some("client_key.pem".into()),
///     authenticate: Some("server.pem".into()),
///     server_hostname: Some("zodb.org".into()),
///     ..ClientTlsFiles::default()
/// })?;
/// let tcp = tokio::net::TcpStream::connect("127.0.0.1:8100").await?;
/// let stream = tls.connect(tcp, "127.0.0.1").await?;
/// # drop(stream); Ok(()) }
/// ```
#[derive(Debug, Clone)]
pub struct ClientTls {
    files: ClientTlsFiles,
    config: Arc<rustls::ClientConfig>,
}

impl ClientTls {
    /// Reads the files; every error names the file at fault.
    pub fn load(files: ClientTlsFiles) -> Result<Self> {
        let provider = provider();
        let auth = match &files.authenticate {
            Some(path) => load_authorities(path)?,
            None => system_authorities()?,
        };
        let path_for_errors = files
            .authenticate
            .clone()
            .unwrap_or_else(|| PathBuf::from("(system CAs)"));
        let verifier = ServerVerifier::new(&auth, files.check_hostname, provider.clone()).map_err(
            |reason| Error::Unusable {
                path: path_for_errors.clone(),
                reason,
            },
        )?;
        let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
            .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
            .map_err(|e| Error::Unusable {
                path: path_for_errors,
                reason: e.to_string(),
            })?
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(verifier));
        let config = match &files.certificate {
            Some(cert) => {
                let key = certified_key(
                    cert,
                    files.key.as_deref(),
                    files.password_file.as_deref(),
                    &provider,
                )?;
                builder
                    .with_client_cert_resolver(Arc::new(rustls::sign::SingleCertAndKey::from(key)))
            }
            None => builder.with_no_client_auth(),
        };
        if let Some(name) = &files.server_hostname {
            server_name(name)?;
        }
        Ok(ClientTls {
            files,
            config: Arc::new(config),
        })
    }

    /// The settings this configuration was loaded from.
    pub fn files(&self) -> &ClientTlsFiles {
        &self.files
    }

    /// The name checked when connecting to `host`: `server-hostname`, or
    /// the host itself.
    pub fn name_for<'a>(&'a self, host: &'a str) -> &'a str {
        self.files.server_hostname.as_deref().unwrap_or(host)
    }

    /// Runs the client side of the handshake over `stream`, connected to
    /// `host` (a name or an IP address; for a Unix socket, pass
    /// `localhost` or set `server_hostname`).
    pub async fn connect<S>(&self, stream: S, host: &str) -> Result<TlsStream<S>>
    where
        S: AsyncRead + AsyncWrite + Unpin,
    {
        let name = server_name(self.name_for(host))?;
        tokio_rustls::TlsConnector::from(self.config.clone())
            .connect(name, stream)
            .await
            .map_err(|err| Error::Handshake(FailureReason::from_handshake_io(&err)))
    }
}

fn server_name(host: &str) -> Result<ServerName<'static>> {
    let bare = host
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host);
    ServerName::try_from(bare.to_owned()).map_err(|_| Error::BadServerName(host.to_owned()))
}

fn system_authorities() -> Result<Authorities> {
    let found = rustls_native_certs::load_native_certs();
    if found.certs.is_empty() {
        let why = found
            .errors
            .first()
            .map(|e| e.to_string())
            .unwrap_or_else(|| "none found".to_owned());
        return Err(Error::SystemRoots(why));
    }
    Ok(Authorities {
        certificates: found.certs,
        crls: Vec::new(),
    })
}
