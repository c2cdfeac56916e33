//! TLS to the database on rustls, set up from the DSN's libpq keys.
//!
//! The driver's own DSN parser knows `sslmode` only as `disable`,
//! `prefer` and `require`, and no certificate keys, so the TLS keys are
//! taken out of the DSN here and given to rustls:
//!
//! | `sslmode` | encrypted | server certificate checked |
//! |---|---|---|
//! | `disable` | no | — |
//! | `allow`, `prefer` (libpq's default) | when the server offers it | no |
//! | `require` | yes | against `sslrootcert` when given, else not at all |
//! | `verify-ca` | yes | chain to `sslrootcert` |
//! | `verify-full` | yes | chain to `sslrootcert`, and the host name |
//!
//! `sslrootcert` is a PEM file of trusted certificates (`system`: the
//! platform's roots; default `~/.postgresql/root.crt`, as libpq);
//! `sslcert`/`sslkey` a client certificate and its key. A Unix-socket
//! connection is never encrypted, as with libpq.

use std::future::Future;
use std::io;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use postgres::tls::{ChannelBinding, MakeTlsConnect, TlsConnect, TlsStream};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::WebPkiServerVerifier;
use rustls::crypto::{verify_tls12_signature, verify_tls13_signature, CryptoProvider};
use rustls::{
    CertificateError, ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme,
};
use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use crate::error::{Error, Result};

/// libpq's `sslmode` values.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum SslMode {
    Disable,
    Prefer,
    Require,
    VerifyCa,
    VerifyFull,
}

/// The TLS keys of a DSN.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct TlsSettings {
    pub(crate) mode: SslMode,
    root_cert: Option<String>,
    client_cert: Option<PathBuf>,
    client_key: Option<PathBuf>,
}

/// Keys this module takes out of the DSN.
const TLS_KEYS: &[&str] = &["sslmode", "sslrootcert", "sslcert", "sslkey"];

/// Splits a libpq `key=value` string into pairs (values may be quoted
/// with `'`, with `\` escaping the next character).
fn conninfo_pairs(dsn: &str) -> Result<Vec<(String, String)>> {
    let bad = |why: &str| Error::Config(format!("dsn: {why}"));
    let mut pairs = Vec::new();
    let mut chars = dsn.chars().peekable();
    loop {
        while chars.next_if(|c| c.is_whitespace()).is_some() {}
        if chars.peek().is_none() {
            return Ok(pairs);
        }
        let mut key = String::new();
        while let Some(c) = chars.next_if(|c| *c != '=' && !c.is_whitespace()) {
            key.push(c);
        }
        while chars.next_if(|c| c.is_whitespace()).is_some() {}
        if chars.next() != Some('=') {
            return Err(bad(&format!("{key:?} has no value")));
        }
        while chars.next_if(|c| c.is_whitespace()).is_some() {}
        let mut value = String::new();
        if chars.next_if_eq(&'\'').is_some() {
            loop {
                match chars.next() {
                    Some('\'') => break,
                    Some('\\') => value.push(chars.next().ok_or_else(|| bad("dangling \\"))?),
                    Some(c) => value.push(c),
                    None => return Err(bad("unterminated quote")),
                }
            }
        } else {
            while let Some(c) = chars.next_if(|c| !c.is_whitespace()) {
                if c == '\\' {
                    value.push(chars.next().ok_or_else(|| bad("dangling \\"))?);
                } else {
                    value.push(c);
                }
            }
        }
        pairs.push((key, value));
    }
}

fn quote(value: &str) -> String {
    let mut out = String::from("'");
    for c in value.chars() {
        if c == '\'' || c == '\\' {
            out.push('\\');
        }
        out.push(c);
    }
    out.push('\'');
    out
}

/// `%XX` decoding of a URL query value.
fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = |b: u8| (b as char).to_digit(16);
        match (bytes[i], bytes.get(i + 1), bytes.get(i + 2)) {
            (b'%', Some(&h), Some(&l)) if hex(h).is_some() && hex(l).is_some() => {
                out.push((hex(h).unwrap_or(0) * 16 + hex(l).unwrap_or(0)) as u8);
                i += 3;
            }
            (b, _, _) => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The DSN without its TLS keys (with the `sslmode` the driver knows put
/// back), and the TLS settings.
pub(crate) fn split_dsn(dsn: &str) -> Result<(String, TlsSettings)> {
    let is_url = dsn.starts_with("postgres://") || dsn.starts_with("postgresql://");
    let mut tls_pairs = Vec::new();
    let rest = if is_url {
        let (base, query) = dsn.split_once('?').unwrap_or((dsn, ""));
        let mut kept = Vec::new();
        for param in query.split('&').filter(|p| !p.is_empty()) {
            let (k, v) = param.split_once('=').unwrap_or((param, ""));
            if TLS_KEYS.contains(&k) {
                tls_pairs.push((k.to_owned(), percent_decode(v)));
            } else {
                kept.push(param);
            }
        }
        (base.to_owned(), kept.join("&"))
    } else {
        let mut kept = Vec::new();
        for (k, v) in conninfo_pairs(dsn)? {
            if TLS_KEYS.contains(&k.as_str()) {
                tls_pairs.push((k, v));
            } else {
                kept.push(format!("{k}={}", quote(&v)));
            }
        }
        (kept.join(" "), String::new())
    };
    let mut settings = TlsSettings {
        mode: SslMode::Prefer,
        root_cert: None,
        client_cert: None,
        client_key: None,
    };
    for (k, v) in tls_pairs {
        match k.as_str() {
            "sslmode" => {
                settings.mode = match v.as_str() {
                    "disable" => SslMode::Disable,
                    "allow" | "prefer" => SslMode::Prefer,
                    "require" => SslMode::Require,
                    "verify-ca" => SslMode::VerifyCa,
                    "verify-full" => SslMode::VerifyFull,
                    other => return Err(Error::Config(format!("dsn: unknown sslmode {other:?}"))),
                }
            }
            "sslrootcert" => settings.root_cert = Some(v),
            "sslcert" => settings.client_cert = Some(PathBuf::from(v)),
            _ => settings.client_key = Some(PathBuf::from(v)),
        }
    }
    let driver_mode = match settings.mode {
        SslMode::Disable => "disable",
        SslMode::Prefer => "prefer",
        _ => "require",
    };
    let driver = if is_url {
        let (base, query) = rest;
        let sep = if query.is_empty() { "" } else { "&" };
        format!("{base}?{query}{sep}sslmode={driver_mode}")
    } else {
        format!("{} sslmode={driver_mode}", rest.0)
    };
    Ok((driver, settings))
}

fn read_pem(path: &Path, what: &str) -> Result<Vec<u8>> {
    std::fs::read(path).map_err(|e| Error::Config(format!("{what} {}: {e}", path.display())))
}

fn root_store(root: &str, mode: SslMode) -> Result<Option<RootCertStore>> {
    let mut store = RootCertStore::empty();
    if root == "system" {
        let found = rustls_native_certs::load_native_certs();
        for cert in found.certs {
            // A platform root rustls cannot parse is skipped, as libpq's
            // OpenSSL skips it.
            let _ = store.add(cert);
        }
        return Ok(Some(store));
    }
    let path = Path::new(root);
    if !path.exists() && matches!(mode, SslMode::Require | SslMode::Prefer) {
        // libpq checks the chain at `require` only when the file exists.
        return Ok(None);
    }
    let pem = read_pem(path, "sslrootcert")?;
    for cert in rustls_pemfile::certs(&mut pem.as_slice()) {
        let cert = cert.map_err(|e| Error::Config(format!("sslrootcert {root}: {e}")))?;
        store
            .add(cert)
            .map_err(|e| Error::Config(format!("sslrootcert {root}: {e}")))?;
    }
    if store.is_empty() {
        return Err(Error::Config(format!("sslrootcert {root}: no certificate")));
    }
    Ok(Some(store))
}

/// libpq's default root certificate file.
fn default_root() -> String {
    let home = std::env::var_os("HOME").unwrap_or_default();
    Path::new(&home)
        .join(".postgresql")
        .join("root.crt")
        .to_string_lossy()
        .into_owned()
}

/// Checks the server's certificate as `sslmode` says.
#[derive(Debug)]
struct Verifier {
    provider: Arc<CryptoProvider>,
    /// The chain check, `None` when certificates are not checked.
    chain: Option<Arc<WebPkiServerVerifier>>,
    /// Whether the host name must match (`verify-full`).
    check_name: bool,
}

impl ServerCertVerifier for Verifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> std::result::Result<ServerCertVerified, rustls::Error> {
        let Some(chain) = &self.chain else {
            return Ok(ServerCertVerified::assertion());
        };
        match chain.verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now) {
            Err(rustls::Error::InvalidCertificate(
                CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
            )) if !self.check_name => Ok(ServerCertVerified::assertion()),
            other => other,
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> std::result::Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> std::result::Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

/// The rustls configuration `settings` call for, `None` for `disable`.
pub(crate) fn client_config(settings: &TlsSettings) -> Result<Option<MakeRustls>> {
    if settings.mode == SslMode::Disable {
        return Ok(None);
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let root = settings.root_cert.clone().unwrap_or_else(default_root);
    let roots = root_store(&root, settings.mode)?;
    let chain = match roots {
        Some(roots) => Some(
            WebPkiServerVerifier::builder_with_provider(Arc::new(roots), Arc::clone(&provider))
                .build()
                .map_err(|e| Error::Config(format!("sslrootcert {root}: {e}")))?,
        ),
        None => None,
    };
    let verifier = Verifier {
        provider: Arc::clone(&provider),
        chain,
        check_name: settings.mode == SslMode::VerifyFull,
    };
    let builder = ClientConfig::builder_with_provider(Arc::clone(&provider))
        .with_safe_default_protocol_versions()
        .map_err(|e| Error::Config(format!("TLS: {e}")))?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(verifier));
    let config = match (&settings.client_cert, &settings.client_key) {
        (Some(cert), Some(key)) => {
            let pem = read_pem(cert, "sslcert")?;
            let chain: Vec<CertificateDer<'static>> = rustls_pemfile::certs(&mut pem.as_slice())
                .collect::<std::result::Result<_, _>>()
                .map_err(|e| Error::Config(format!("sslcert {}: {e}", cert.display())))?;
            let pem = read_pem(key, "sslkey")?;
            let key: PrivateKeyDer<'static> = rustls_pemfile::private_key(&mut pem.as_slice())
                .map_err(|e| Error::Config(format!("sslkey {}: {e}", key.display())))?
                .ok_or_else(|| Error::Config(format!("sslkey {}: no key", key.display())))?;
            builder
                .with_client_auth_cert(chain, key)
                .map_err(|e| Error::Config(format!("sslcert: {e}")))?
        }
        (None, None) => builder.with_no_client_auth(),
        _ => return Err(Error::Config("dsn: sslcert and sslkey go together".into())),
    };
    Ok(Some(MakeRustls {
        config: Arc::new(config),
    }))
}

/// Makes the driver's TLS connections with rustls.
#[derive(Clone)]
pub(crate) struct MakeRustls {
    config: Arc<ClientConfig>,
}

impl<S> MakeTlsConnect<S> for MakeRustls
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    type Stream = RustlsStream<S>;
    type TlsConnect = RustlsConnect;
    type Error = io::Error;

    fn make_tls_connect(&mut self, domain: &str) -> io::Result<RustlsConnect> {
        // The driver asks for Unix-socket hosts too (a path, not a name)
        // and then never connects with TLS: a bad name fails only the
        // handshake.
        Ok(RustlsConnect {
            config: Arc::clone(&self.config),
            name: ServerName::try_from(domain.to_owned()).map_err(|e| e.to_string()),
        })
    }
}

/// One TLS handshake to come.
pub(crate) struct RustlsConnect {
    config: Arc<ClientConfig>,
    name: std::result::Result<ServerName<'static>, String>,
}

impl<S> TlsConnect<S> for RustlsConnect
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    type Stream = RustlsStream<S>;
    type Error = io::Error;
    type Future = Pin<Box<dyn Future<Output = io::Result<RustlsStream<S>>> + Send>>;

    fn connect(self, stream: S) -> Self::Future {
        Box::pin(async move {
            let name = self
                .name
                .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
            let stream = tokio_rustls::TlsConnector::from(self.config)
                .connect(name, stream)
                .await?;
            Ok(RustlsStream(stream))
        })
    }
}

/// A TLS connection to the database.
pub(crate) struct RustlsStream<S>(tokio_rustls::client::TlsStream<S>);

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncRead for RustlsStream<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_read(cx, buf)
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncWrite for RustlsStream<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.0).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_shutdown(cx)
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> TlsStream for RustlsStream<S> {
    fn channel_binding(&self) -> ChannelBinding {
        // SCRAM's channel binding is optional (the driver's default is
        // "prefer"): authentication goes on without it.
        ChannelBinding::none()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tls_keys_leave_a_conninfo_dsn() {
        let (dsn, s) =
            split_dsn("host=db.example dbname='my db' sslmode=verify-full sslrootcert=/etc/ca.pem")
                .unwrap();
        assert_eq!(dsn, "host='db.example' dbname='my db' sslmode=require");
        assert_eq!(s.mode, SslMode::VerifyFull);
        assert_eq!(s.root_cert.as_deref(), Some("/etc/ca.pem"));
        let (dsn, s) = split_dsn("host=/tmp dbname=x").unwrap();
        assert_eq!(dsn, "host='/tmp' dbname='x' sslmode=prefer");
        assert_eq!(s.mode, SslMode::Prefer);
        assert!(split_dsn("host=x sslmode=bogus").is_err());
        assert!(split_dsn("host='x").is_err());
    }

    #[test]
    fn tls_keys_leave_a_url_dsn() {
        let (dsn, s) = split_dsn(
            "postgresql://u@db:5432/zodb?sslmode=verify-ca&sslrootcert=%2Fetc%2Fca.pem&connect_timeout=5",
        )
        .unwrap();
        assert_eq!(
            dsn,
            "postgresql://u@db:5432/zodb?connect_timeout=5&sslmode=require"
        );
        assert_eq!(s.mode, SslMode::VerifyCa);
        assert_eq!(s.root_cert.as_deref(), Some("/etc/ca.pem"));
    }

    #[test]
    fn verification_needs_a_root_certificate() {
        let (_, s) = split_dsn("host=x sslmode=verify-full sslrootcert=/nonexistent.pem").unwrap();
        assert!(client_config(&s).is_err());
        let (_, s) = split_dsn("host=x sslmode=require sslrootcert=/nonexistent.pem").unwrap();
        assert!(client_config(&s).unwrap().is_some());
        let (_, s) = split_dsn("host=x sslmode=disable").unwrap();
        assert!(client_config(&s).unwrap().is_none());
    }
}
