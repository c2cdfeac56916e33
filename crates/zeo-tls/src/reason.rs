//! Why a TLS handshake failed, in words an operator can act on.
//!
//! rustls reports failures as protocol errors and alerts; ZEO users used to
//! see them only as a connection that timed out (ZEO issue #151). Both sides
//! classify what went wrong into a [`FailureReason`] and say it.

use std::fmt;
use std::io;
use std::time::Duration;

use rustls::{AlertDescription, CertificateError, InvalidMessage};

/// The reason a TLS handshake (or the first read after it) failed.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum FailureReason {
    /// The peer sent something that is not TLS: a client or server
    /// without TLS.
    NotTls,
    /// The peer said nothing within the handshake timeout: typically a
    /// client without TLS waiting for the server's ZEO greeting.
    Timeout(Duration),
    /// The peer closed the connection during the handshake.
    Closed,
    /// The peer's certificate is neither listed nor signed by a listed CA.
    UnknownIssuer,
    /// The certificate does not name the host name checked.
    HostnameMismatch {
        /// The name checked.
        expected: String,
    },
    /// The certificate has expired.
    Expired,
    /// The certificate is not valid yet.
    NotYetValid,
    /// A CRL lists the certificate.
    Revoked,
    /// CRLs are configured but none covers the certificate's issuer.
    UnknownRevocationStatus,
    /// The client presented no certificate; ZEO servers require one.
    NoClientCertificate,
    /// The peer refused our certificate or the handshake, with this alert.
    RejectedByPeer(String),
    /// Any other TLS failure, as rustls describes it.
    Other(String),
}

impl fmt::Display for FailureReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FailureReason::NotTls => f.write_str("the peer does not speak TLS"),
            FailureReason::Timeout(d) => write!(
                f,
                "no TLS handshake within {:.1}s (a peer without TLS waits for the other side to speak first)",
                d.as_secs_f64()
            ),
            FailureReason::Closed => {
                f.write_str("the peer closed the connection during the TLS handshake")
            }
            FailureReason::UnknownIssuer => f.write_str(
                "the peer's certificate is not listed in authenticate and no listed CA signed it (unknown CA)",
            ),
            FailureReason::HostnameMismatch { expected } => write!(
                f,
                "the server's certificate does not name {expected:?} (hostname mismatch; set server-hostname, or check-hostname false)"
            ),
            FailureReason::Expired => f.write_str("the peer's certificate has expired"),
            FailureReason::NotYetValid => f.write_str("the peer's certificate is not valid yet"),
            FailureReason::Revoked => f.write_str("the peer's certificate is revoked by a CRL"),
            FailureReason::UnknownRevocationStatus => f.write_str(
                "CRLs are configured but none is from the issuer of the peer's certificate",
            ),
            FailureReason::NoClientCertificate => {
                f.write_str("the client presented no certificate (the server requires one)")
            }
            FailureReason::RejectedByPeer(alert) => {
                write!(f, "the peer refused the handshake: {alert}")
            }
            FailureReason::Other(text) => f.write_str(text),
        }
    }
}

impl FailureReason {
    /// A short stable name for the kind of failure, without the details
    /// the message carries: a metric label, a key to count by.
    ///
    /// ```
    /// use zeo_tls::FailureReason;
    /// assert_eq!(FailureReason::UnknownIssuer.label(), "unknown_issuer");
    /// assert_eq!(FailureReason::RejectedByPeer("bad certificate".into()).label(), "rejected_by_peer");
    /// ```
    pub fn label(&self) -> &'static str {
        match self {
            FailureReason::NotTls => "not_tls",
            FailureReason::Timeout(_) => "timeout",
            FailureReason::Closed => "closed",
            FailureReason::UnknownIssuer => "unknown_issuer",
            FailureReason::HostnameMismatch { .. } => "hostname_mismatch",
            FailureReason::Expired => "expired",
            FailureReason::NotYetValid => "not_yet_valid",
            FailureReason::Revoked => "revoked",
            FailureReason::UnknownRevocationStatus => "unknown_revocation_status",
            FailureReason::NoClientCertificate => "no_client_certificate",
            FailureReason::RejectedByPeer(_) => "rejected_by_peer",
            FailureReason::Other(_) => "other",
        }
    }

    /// Classifies a rustls error.
    pub fn from_rustls(err: &rustls::Error) -> Self {
        use rustls::Error as E;
        match err {
            E::InvalidMessage(InvalidMessage::InvalidContentType)
            | E::InvalidMessage(InvalidMessage::UnknownProtocolVersion)
            | E::InvalidMessage(InvalidMessage::MessageTooLarge) => FailureReason::NotTls,
            E::NoCertificatesPresented => FailureReason::NoClientCertificate,
            E::InvalidCertificate(c) => Self::from_certificate_error(c),
            E::AlertReceived(alert) => Self::from_alert(*alert),
            other => FailureReason::Other(other.to_string()),
        }
    }

    fn from_certificate_error(err: &CertificateError) -> Self {
        use CertificateError as C;
        match err {
            C::UnknownIssuer | C::BadSignature => FailureReason::UnknownIssuer,
            // A self-signed CA:TRUE certificate (as ZEO's test ones are)
            // that is not listed, so not pinned: WebPKI will not take a CA
            // as a peer, and nothing listed vouches for it.
            C::Other(other) if format!("{other:?}").contains("CaUsedAsEndEntity") => {
                FailureReason::UnknownIssuer
            }
            C::Expired | C::ExpiredContext { .. } => FailureReason::Expired,
            C::NotValidYet | C::NotValidYetContext { .. } => FailureReason::NotYetValid,
            C::Revoked => FailureReason::Revoked,
            C::UnknownRevocationStatus => FailureReason::UnknownRevocationStatus,
            C::ExpiredRevocationList | C::ExpiredRevocationListContext { .. } => {
                FailureReason::Other(
                    "the CRL of the peer's certificate issuer is past its next update: regenerate it"
                        .to_owned(),
                )
            }
            C::NotValidForNameContext { expected, .. } => FailureReason::HostnameMismatch {
                expected: server_name_text(expected),
            },
            C::NotValidForName => FailureReason::HostnameMismatch {
                expected: String::new(),
            },
            other => FailureReason::Other(format!("invalid peer certificate: {other:?}")),
        }
    }

    fn from_alert(alert: AlertDescription) -> Self {
        let what = match alert {
            AlertDescription::UnknownCA => {
                "it does not know the CA of our certificate (unknown CA)".to_owned()
            }
            AlertDescription::CertificateRequired => {
                "it requires a client certificate and none was configured".to_owned()
            }
            AlertDescription::CertificateExpired => "our certificate has expired".to_owned(),
            AlertDescription::CertificateRevoked => "our certificate is revoked".to_owned(),
            AlertDescription::BadCertificate => "it rejects our certificate".to_owned(),
            AlertDescription::ProtocolVersion => "no TLS version in common".to_owned(),
            AlertDescription::HandshakeFailure => "no cipher suite in common".to_owned(),
            other => format!("alert {other:?}"),
        };
        FailureReason::RejectedByPeer(what)
    }

    /// Classifies an I/O error that carries a TLS failure: one met during
    /// a handshake, or on the first read after it (a TLS 1.3 server checks
    /// the client's certificate after the client considers the handshake
    /// done). `None` when the error is not about TLS.
    pub fn from_io(err: &io::Error) -> Option<Self> {
        err.get_ref()
            .and_then(|inner| inner.downcast_ref::<rustls::Error>())
            .map(Self::from_rustls)
    }

    /// Classifies any I/O error that ended a handshake: a TLS failure, the
    /// peer closing, or the error's own text.
    pub fn from_handshake_io(err: &io::Error) -> Self {
        if let Some(reason) = Self::from_io(err) {
            return reason;
        }
        match err.kind() {
            io::ErrorKind::UnexpectedEof
            | io::ErrorKind::ConnectionReset
            | io::ErrorKind::BrokenPipe => FailureReason::Closed,
            _ => FailureReason::Other(err.to_string()),
        }
    }
}

pub(crate) fn server_name_text(name: &rustls_pki_types::ServerName<'_>) -> String {
    match name {
        rustls_pki_types::ServerName::DnsName(d) => d.as_ref().to_owned(),
        rustls_pki_types::ServerName::IpAddress(ip) => std::net::IpAddr::from(*ip).to_string(),
        other => format!("{other:?}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classifies_what_operators_must_tell_apart() {
        let plain = rustls::Error::InvalidMessage(InvalidMessage::InvalidContentType);
        assert_eq!(FailureReason::from_rustls(&plain), FailureReason::NotTls);
        let expired = rustls::Error::InvalidCertificate(CertificateError::Expired);
        assert_eq!(FailureReason::from_rustls(&expired), FailureReason::Expired);
        let alert = rustls::Error::AlertReceived(AlertDescription::UnknownCA);
        assert!(FailureReason::from_rustls(&alert)
            .to_string()
            .contains("unknown CA"));
        let io = io::Error::new(
            io::ErrorKind::InvalidData,
            rustls::Error::NoCertificatesPresented,
        );
        assert_eq!(
            FailureReason::from_io(&io),
            Some(FailureReason::NoClientCertificate)
        );
        let eof = io::Error::from(io::ErrorKind::UnexpectedEof);
        assert_eq!(FailureReason::from_io(&eof), None);
        assert_eq!(
            FailureReason::from_handshake_io(&eof),
            FailureReason::Closed
        );
        assert_eq!(FailureReason::from_io(&io::Error::other("x")), None);
    }
}
