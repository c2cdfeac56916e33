//! Certificate verifiers that accept what OpenSSL accepts for ZEO's
//! configurations.
//!
//! ZEO lists trusted certificates in `authenticate`, and its own test
//! certificates are self-signed, SHA-1, `CA:TRUE` and without subject
//! alternative names: the WebPKI verifier refuses them as end entities. A
//! presented certificate byte-equal to a listed one is therefore accepted
//! after its validity period and CRLs are checked (pinning); any other goes
//! through standard chain validation to the listed CAs. Host names are
//! matched on subjectAltName, or on the subject CN when there is none, as
//! OpenSSL does for Python.

use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{verify_tls12_signature, verify_tls13_signature, CryptoProvider};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::{
    CertificateError, DigitallySignedStruct, DistinguishedName, RootCertStore, SignatureScheme,
};
use rustls_pki_types::{CertificateDer, CertificateRevocationListDer, ServerName, UnixTime};
use x509_parser::prelude::{FromDer, GeneralName, ParsedExtension, X509Certificate};
use x509_parser::revocation_list::CertificateRevocationList;

use crate::files::Authorities;

/// The handshake-signature methods both verifier traits have: checked
/// with the provider's algorithms against the presented certificate's key,
/// whatever algorithm signed the certificate itself (ZEO's are SHA-1).
macro_rules! handshake_signatures {
    () => {
        fn verify_tls12_signature(
            &self,
            message: &[u8],
            cert: &CertificateDer<'_>,
            dss: &DigitallySignedStruct,
        ) -> Result<HandshakeSignatureValid, rustls::Error> {
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
        ) -> Result<HandshakeSignatureValid, rustls::Error> {
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
    };
}

/// The listed certificates, their CRLs, and the chain verifier for the rest.
#[derive(Debug)]
struct Pins {
    listed: Vec<CertificateDer<'static>>,
    crls: Vec<CertificateRevocationListDer<'static>>,
}

impl Pins {
    fn new(auth: &Authorities) -> Self {
        Pins {
            listed: auth.certificates.clone(),
            crls: auth.crls.clone(),
        }
    }

    /// `Some(result)` when `cert` is one of the listed certificates: its
    /// validity at `now` and its revocation status.
    fn check(&self, cert: &CertificateDer<'_>, now: UnixTime) -> Option<Result<(), rustls::Error>> {
        if !self.listed.iter().any(|c| c.as_ref() == cert.as_ref()) {
            return None;
        }
        Some(self.check_listed(cert, now))
    }

    fn check_listed(&self, cert: &CertificateDer<'_>, now: UnixTime) -> Result<(), rustls::Error> {
        let bad = |e: CertificateError| Err(rustls::Error::InvalidCertificate(e));
        // A listed certificate came from the operator's own file.
        let Ok((_, parsed)) = X509Certificate::from_der(cert.as_ref()) else {
            return bad(CertificateError::BadEncoding);
        };
        let now = now.as_secs() as i64;
        let validity = parsed.validity();
        if now < validity.not_before.timestamp() {
            return bad(CertificateError::NotValidYet);
        }
        if now > validity.not_after.timestamp() {
            return bad(CertificateError::Expired);
        }
        if self.crls.is_empty() {
            return Ok(());
        }
        let mut covered = false;
        for der in &self.crls {
            let Ok((_, crl)) = CertificateRevocationList::from_der(der.as_ref()) else {
                continue;
            };
            if crl.issuer().as_raw() != parsed.issuer().as_raw() {
                continue;
            }
            if crl.next_update().is_some_and(|next| next.timestamp() < now) {
                return bad(CertificateError::ExpiredRevocationList);
            }
            covered = true;
            if crl
                .iter_revoked_certificates()
                .any(|r| r.raw_serial() == parsed.raw_serial())
            {
                return bad(CertificateError::Revoked);
            }
        }
        if covered {
            Ok(())
        } else {
            bad(CertificateError::UnknownRevocationStatus)
        }
    }
}

fn root_store(auth: &Authorities) -> RootCertStore {
    let mut roots = RootCertStore::empty();
    // Certificates rustls cannot use as anchors may still be pinned.
    roots.add_parsable_certificates(auth.certificates.iter().cloned());
    roots
}

/// Verifies client certificates on the server: mandatory, pinned or
/// chained to a listed CA, CRLs checked for the leaf.
#[derive(Debug)]
pub struct ClientVerifier {
    pins: Pins,
    chain: Option<Arc<dyn ClientCertVerifier>>,
    hints: Vec<DistinguishedName>,
    provider: Arc<CryptoProvider>,
}

impl ClientVerifier {
    /// A verifier for the certificates and CRLs of `auth`.
    pub fn new(auth: &Authorities, provider: Arc<CryptoProvider>) -> Result<Self, String> {
        let roots = root_store(auth);
        let hints = roots.subjects();
        let chain = if roots.is_empty() {
            None
        } else {
            let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
                Arc::new(roots),
                provider.clone(),
            )
            .with_crls(auth.crls.iter().cloned())
            .only_check_end_entity_revocation()
            .enforce_revocation_expiration()
            .build()
            .map_err(|e| format!("{e}"))?;
            Some(verifier)
        };
        Ok(ClientVerifier {
            pins: Pins::new(auth),
            chain,
            hints,
            provider,
        })
    }
}

impl ClientCertVerifier for ClientVerifier {
    fn client_auth_mandatory(&self) -> bool {
        true
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        &self.hints
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        if let Some(result) = self.pins.check(end_entity, now) {
            return result.map(|()| ClientCertVerified::assertion());
        }
        match &self.chain {
            Some(chain) => chain.verify_client_cert(end_entity, intermediates, now),
            None => Err(rustls::Error::InvalidCertificate(
                CertificateError::UnknownIssuer,
            )),
        }
    }

    handshake_signatures!();
}

/// Verifies the server's certificate on the client: pinned or chained to
/// the listed (or system) CAs, then its host name unless checking is off.
#[derive(Debug)]
pub struct ServerVerifier {
    pins: Pins,
    chain: Option<Arc<rustls::client::WebPkiServerVerifier>>,
    check_hostname: bool,
    provider: Arc<CryptoProvider>,
}

impl ServerVerifier {
    /// A verifier for the certificates and CRLs of `auth`.
    pub fn new(
        auth: &Authorities,
        check_hostname: bool,
        provider: Arc<CryptoProvider>,
    ) -> Result<Self, String> {
        let roots = root_store(auth);
        let chain = if roots.is_empty() {
            None
        } else {
            let verifier = rustls::client::WebPkiServerVerifier::builder_with_provider(
                Arc::new(roots),
                provider.clone(),
            )
            .with_crls(auth.crls.iter().cloned())
            .only_check_end_entity_revocation()
            .enforce_revocation_expiration()
            .build()
            .map_err(|e| format!("{e}"))?;
            Some(verifier)
        };
        Ok(ServerVerifier {
            pins: Pins::new(auth),
            chain,
            check_hostname,
            provider,
        })
    }
}

impl ServerCertVerifier for ServerVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let chained = match self.pins.check(end_entity, now) {
            Some(result) => result,
            None => match &self.chain {
                Some(chain) => {
                    match chain.verify_server_cert(
                        end_entity,
                        intermediates,
                        server_name,
                        ocsp_response,
                        now,
                    ) {
                        Ok(_) => return Ok(ServerCertVerified::assertion()),
                        // The chain is valid; only the SAN name check failed,
                        // which the CN fallback below may still pass.
                        Err(rustls::Error::InvalidCertificate(
                            CertificateError::NotValidForName
                            | CertificateError::NotValidForNameContext { .. },
                        )) => Ok(()),
                        Err(e) => Err(e),
                    }
                }
                None => Err(rustls::Error::InvalidCertificate(
                    CertificateError::UnknownIssuer,
                )),
            },
        };
        chained?;
        if self.check_hostname && !names_host(end_entity, server_name) {
            return Err(rustls::Error::InvalidCertificate(
                CertificateError::NotValidForNameContext {
                    expected: server_name.to_owned(),
                    presented: Vec::new(),
                },
            ));
        }
        Ok(ServerCertVerified::assertion())
    }

    handshake_signatures!();
}

/// Whether `cert` names `host` as OpenSSL checks it for Python: DNS names
/// against the subjectAltName DNS entries (a `*` only as a whole leftmost
/// label), or against the subject CNs when there is no DNS entry; IP
/// addresses against subjectAltName IP entries only.
pub fn names_host(cert: &CertificateDer<'_>, host: &ServerName<'_>) -> bool {
    // Only certificates that passed pinning or chain validation get here.
    let Ok((_, parsed)) = X509Certificate::from_der(cert.as_ref()) else {
        return false;
    };
    let mut dns = Vec::new();
    let mut ips = Vec::new();
    for ext in parsed.extensions() {
        if let ParsedExtension::SubjectAlternativeName(san) = ext.parsed_extension() {
            for name in &san.general_names {
                match name {
                    GeneralName::DNSName(d) => dns.push(d.to_string()),
                    GeneralName::IPAddress(ip) => ips.push(ip.to_vec()),
                    _ => {}
                }
            }
        }
    }
    match host {
        ServerName::DnsName(name) => {
            let wanted = name.as_ref().trim_end_matches('.').to_ascii_lowercase();
            if dns.is_empty() {
                parsed
                    .subject()
                    .iter_common_name()
                    .filter_map(|cn| cn.as_str().ok())
                    .any(|cn| dns_matches(cn, &wanted))
            } else {
                dns.iter().any(|d| dns_matches(d, &wanted))
            }
        }
        ServerName::IpAddress(ip) => {
            let octets: Vec<u8> = match std::net::IpAddr::from(*ip) {
                std::net::IpAddr::V4(v4) => v4.octets().to_vec(),
                std::net::IpAddr::V6(v6) => v6.octets().to_vec(),
            };
            ips.contains(&octets)
        }
        _ => false,
    }
}

fn dns_matches(pattern: &str, wanted: &str) -> bool {
    let pattern = pattern.trim_end_matches('.').to_ascii_lowercase();
    match pattern.strip_prefix("*.") {
        // A wildcard stands for exactly one label, never the whole name.
        Some(rest) if !rest.is_empty() && rest.contains('.') => wanted
            .split_once('.')
            .is_some_and(|(label, tail)| !label.is_empty() && tail == rest),
        _ => pattern == wanted,
    }
}

#[cfg(test)]
mod tests {
    use super::dns_matches;

    #[test]
    fn wildcards_stand_for_one_leftmost_label() {
        assert!(dns_matches("zodb.org", "zodb.org"));
        assert!(dns_matches("ZODB.org.", "zodb.org"));
        assert!(dns_matches("*.zodb.org", "www.zodb.org"));
        assert!(!dns_matches("*.zodb.org", "a.b.zodb.org"));
        assert!(!dns_matches("*.zodb.org", "zodb.org"));
        assert!(!dns_matches("*.org", "zodb.org"));
        assert!(!dns_matches("zodb.org", "example.org"));
    }
}
