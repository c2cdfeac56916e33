//! The server side: ZEO's `<ssl>` files turned into a rustls configuration
//! that can be reloaded while serving, and the handshake of one accepted
//! connection, bounded in time.

use std::path::PathBuf;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite};
use tokio_rustls::server::TlsStream;

use crate::error::{Error, Result};
use crate::files::{load_authorities, load_certificates, load_private_key};
use crate::reason::FailureReason;
use crate::verify::ClientVerifier;

/// How long a server waits for a TLS handshake by default.
pub const DEFAULT_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// The files of a server's `<ssl>` section.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerTlsFiles {
    /// PEM certificate chain, leaf first (`certificate`).
    pub certificate: PathBuf,
    /// PEM private key (`key`); the key is read from `certificate` when
    /// `None`.
    pub key: Option<PathBuf>,
    /// CA file, or directory of CA and client certificates and CRLs
    /// (`authenticate`).
    pub authenticate: PathBuf,
    /// A file whose first line is the password of an encrypted PKCS#8 key
    /// (`password-file`, a zeo-rs extension standing in for ZEO's Python
    /// `password-function`).
    pub password_file: Option<PathBuf>,
}

/// A server's TLS configuration, replaced in place by [`ServerTls::reload`].
///
/// ```no_run
/// use zeo_tls::{ServerTls, ServerTlsFiles};
/// let tls = ServerTls::load(ServerTlsFiles {
///     certificate: "server.pem".into(),
///     key: Some("server_key.pem".into()),
///     authenticate: "clients.pem".into(),
///     password_file: None,
/// })?;
/// // Later, after the files were replaced:
/// tls.reload()?;
/// # Ok::<(), zeo_tls::Error>(())
/// ```
#[derive(Debug)]
pub struct ServerTls {
    files: ServerTlsFiles,
    handshake_timeout: Duration,
    config: RwLock<Arc<rustls::ServerConfig>>,
}

impl ServerTls {
    /// Reads the files and builds the configuration; every error names the
    /// file at fault.
    pub fn load(files: ServerTlsFiles) -> Result<Self> {
        let config = build(&files)?;
        Ok(ServerTls {
            files,
            handshake_timeout: DEFAULT_HANDSHAKE_TIMEOUT,
            config: RwLock::new(Arc::new(config)),
        })
    }

    /// The same, with another handshake timeout.
    pub fn with_handshake_timeout(mut self, timeout: Duration) -> Self {
        self.handshake_timeout = timeout;
        self
    }

    /// How long [`ServerTls::accept`] waits for a handshake.
    pub fn handshake_timeout(&self) -> Duration {
        self.handshake_timeout
    }

    /// The files this configuration reads.
    pub fn files(&self) -> &ServerTlsFiles {
        &self.files
    }

    /// Reads the files again and serves new connections with what they
    /// hold; on error the configuration in use stays and the error says
    /// why. Connections already served keep their session.
    pub fn reload(&self) -> Result<()> {
        let config = build(&self.files)?;
        *self.config.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(config);
        Ok(())
    }

    fn current(&self) -> Arc<rustls::ServerConfig> {
        self.config
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Runs the server side of the handshake on an accepted stream, for
    /// at most the handshake timeout.
    pub async fn accept<S>(&self, stream: S) -> Result<TlsStream<S>, FailureReason>
    where
        S: AsyncRead + AsyncWrite + Unpin,
    {
        let acceptor = tokio_rustls::TlsAcceptor::from(self.current());
        match tokio::time::timeout(self.handshake_timeout, acceptor.accept(stream)).await {
            Err(_) => Err(FailureReason::Timeout(self.handshake_timeout)),
            Ok(Ok(tls)) => Ok(tls),
            Ok(Err(err)) => Err(FailureReason::from_handshake_io(&err)),
        }
    }
}

/// The crypto provider of every zeo-rs TLS configuration: ring, which
/// builds with a C compiler alone.
pub(crate) fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// The certificate chain and key of `certificate`/`key`, checked to match.
pub(crate) fn certified_key(
    certificate: &std::path::Path,
    key: Option<&std::path::Path>,
    password_file: Option<&std::path::Path>,
    provider: &rustls::crypto::CryptoProvider,
) -> Result<Arc<rustls::sign::CertifiedKey>> {
    let chain = load_certificates(certificate)?;
    let key_path = key.unwrap_or(certificate);
    let key_der = load_private_key(key_path, password_file)?;
    let signer = provider
        .key_provider
        .load_private_key(key_der)
        .map_err(|e| Error::Unusable {
            path: key_path.to_owned(),
            reason: format!("unusable private key: {e}"),
        })?;
    let certified = rustls::sign::CertifiedKey::new(chain, signer);
    match certified.keys_match() {
        Ok(()) | Err(rustls::Error::InconsistentKeys(rustls::InconsistentKeys::Unknown)) => {
            Ok(Arc::new(certified))
        }
        Err(_) => Err(Error::KeyMismatch {
            certificate: certificate.to_owned(),
            key: key_path.to_owned(),
        }),
    }
}

fn build(files: &ServerTlsFiles) -> Result<rustls::ServerConfig> {
    let provider = provider();
    let key = certified_key(
        &files.certificate,
        files.key.as_deref(),
        files.password_file.as_deref(),
        &provider,
    )?;
    let auth = load_authorities(&files.authenticate)?;
    let verifier =
        ClientVerifier::new(&auth, provider.clone()).map_err(|reason| Error::Unusable {
            path: files.authenticate.clone(),
            reason,
        })?;
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .map_err(|e| Error::Unusable {
            path: files.certificate.clone(),
            reason: e.to_string(),
        })?
        .with_client_cert_verifier(Arc::new(verifier))
        .with_cert_resolver(Arc::new(rustls::sign::SingleCertAndKey::from(key)));
    Ok(config)
}
