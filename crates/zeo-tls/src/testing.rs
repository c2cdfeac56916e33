//! Certificate factories for tests (feature `testing`): a CA, the
//! certificates it signs, ZEO-style self-signed ones, expired ones and
//! CRLs, written as PEM files that Rust and Python peers both read.

use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, Certificate, CertificateParams, CertificateRevocationListParams, DnType,
    IsCa, KeyIdMethod, KeyPair, KeyUsagePurpose, RevokedCertParams, SanType, SerialNumber,
};
use time::{Duration, OffsetDateTime};

/// A certificate written to disk: `NAME.pem` and `NAME_key.pem`.
#[derive(Debug, Clone)]
pub struct Issued {
    /// The PEM certificate.
    pub certificate: PathBuf,
    /// The PEM private key.
    pub key: PathBuf,
    /// The serial number.
    pub serial: u64,
}

/// What a certificate says.
#[derive(Debug, Clone)]
pub struct Spec {
    /// Subject CN.
    pub common_name: String,
    /// subjectAltName DNS names and IP addresses (none: CN only).
    pub alt_names: Vec<String>,
    /// Days from now the validity starts (negative: in the past).
    pub starts_in_days: i64,
    /// Days from now it ends.
    pub ends_in_days: i64,
    /// Whether the certificate says `CA:TRUE`.
    pub ca: bool,
}

impl Spec {
    /// A certificate for `cn`, valid from yesterday for a year, with
    /// `alt_names` as subjectAltName.
    pub fn new(cn: &str, alt_names: &[&str]) -> Self {
        Spec {
            common_name: cn.into(),
            alt_names: alt_names.iter().map(|s| s.to_string()).collect(),
            starts_in_days: -1,
            ends_in_days: 365,
            ca: false,
        }
    }

    /// The same, expired since yesterday.
    pub fn expired(mut self) -> Self {
        self.starts_in_days = -30;
        self.ends_in_days = -1;
        self
    }

    /// The same, valid only from tomorrow.
    pub fn not_yet_valid(mut self) -> Self {
        self.starts_in_days = 1;
        self.ends_in_days = 30;
        self
    }

    fn params(&self, serial: u64) -> CertificateParams {
        let mut params = CertificateParams::default();
        params
            .distinguished_name
            .push(DnType::CommonName, self.common_name.clone());
        params
            .distinguished_name
            .push(DnType::OrganizationName, "zeo-rs tests");
        params.subject_alt_names = self
            .alt_names
            .iter()
            .map(|n| match n.parse::<std::net::IpAddr>() {
                Ok(ip) => SanType::IpAddress(ip),
                Err(_) => SanType::DnsName(n.clone().try_into().expect("a DNS name")),
            })
            .collect();
        let now = OffsetDateTime::now_utc();
        params.not_before = now + Duration::days(self.starts_in_days);
        params.not_after = now + Duration::days(self.ends_in_days);
        params.serial_number = Some(SerialNumber::from(serial));
        if self.ca {
            params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
            params.key_usages = vec![
                KeyUsagePurpose::KeyCertSign,
                KeyUsagePurpose::CrlSign,
                KeyUsagePurpose::DigitalSignature,
            ];
        }
        params
    }
}

/// A certificate authority writing certificates into a directory.
pub struct CertAuthority {
    dir: PathBuf,
    cert: Certificate,
    key: KeyPair,
    /// The CA's own certificate file.
    pub certificate: PathBuf,
    next_serial: u64,
}

impl CertAuthority {
    /// A new CA, `NAME.pem` in `dir`.
    pub fn new(dir: &Path, name: &str) -> Self {
        let key = KeyPair::generate().expect("a key");
        let mut spec = Spec::new(&format!("{name} CA"), &[]);
        spec.ca = true;
        let cert = spec.params(1).self_signed(&key).expect("a CA certificate");
        let certificate = dir.join(format!("{name}.pem"));
        std::fs::write(&certificate, cert.pem()).expect("writing the CA");
        CertAuthority {
            dir: dir.to_owned(),
            cert,
            key,
            certificate,
            next_serial: 100,
        }
    }

    /// Signs a certificate for `spec`, written as `NAME.pem`/`NAME_key.pem`.
    pub fn issue(&mut self, name: &str, spec: &Spec) -> Issued {
        self.next_serial += 1;
        let serial = self.next_serial;
        let key = KeyPair::generate().expect("a key");
        let cert = spec
            .params(serial)
            .signed_by(&key, &self.cert, &self.key)
            .expect("a certificate");
        write(&self.dir, name, &cert, &key, serial)
    }

    /// Writes `NAME.pem`, a CRL of this CA revoking `serials`.
    pub fn crl(&self, name: &str, serials: &[u64]) -> PathBuf {
        let now = OffsetDateTime::now_utc();
        let crl = CertificateRevocationListParams {
            this_update: now - Duration::days(1),
            next_update: now + Duration::days(30),
            crl_number: SerialNumber::from(1u64),
            issuing_distribution_point: None,
            revoked_certs: serials
                .iter()
                .map(|s| RevokedCertParams {
                    serial_number: SerialNumber::from(*s),
                    revocation_time: now - Duration::days(1),
                    reason_code: None,
                    invalidity_date: None,
                })
                .collect(),
            key_identifier_method: KeyIdMethod::Sha256,
        }
        .signed_by(&self.cert, &self.key)
        .expect("a CRL");
        let path = self.dir.join(format!("{name}.pem"));
        std::fs::write(&path, crl.pem().expect("CRL PEM")).expect("writing the CRL");
        path
    }
}

/// A self-signed `CA:TRUE` certificate without subjectAltName, as ZEO's
/// test certificates are, written as `NAME.pem`/`NAME_key.pem`.
pub fn self_signed(dir: &Path, name: &str, spec: &Spec) -> Issued {
    let key = KeyPair::generate().expect("a key");
    let mut spec = spec.clone();
    spec.ca = true;
    let cert = spec.params(7).self_signed(&key).expect("a certificate");
    write(dir, name, &cert, &key, 7)
}

fn write(dir: &Path, name: &str, cert: &Certificate, key: &KeyPair, serial: u64) -> Issued {
    let certificate = dir.join(format!("{name}.pem"));
    let key_path = dir.join(format!("{name}_key.pem"));
    std::fs::write(&certificate, cert.pem()).expect("writing a certificate");
    std::fs::write(&key_path, key.serialize_pem()).expect("writing a key");
    Issued {
        certificate,
        key: key_path,
        serial,
    }
}

/// A CA with a server certificate (for `localhost` and `127.0.0.1`) and a
/// client certificate, as most TLS tests need.
pub struct Pki {
    /// The CA; `ca.certificate` is what both sides authenticate against.
    pub ca: CertAuthority,
    /// `server.pem`/`server_key.pem`.
    pub server: Issued,
    /// `client.pem`/`client_key.pem`.
    pub client: Issued,
}

impl Pki {
    /// Writes the CA and both certificates into `dir`.
    pub fn new(dir: &Path) -> Self {
        let mut ca = CertAuthority::new(dir, "ca");
        let server = ca.issue("server", &Spec::new("server", &["localhost", "127.0.0.1"]));
        let client = ca.issue("client", &Spec::new("client", &[]));
        Pki { ca, server, client }
    }
}

/// A server configuration presenting `server`, accepting clients listed
/// in or signed by `authenticate`.
pub fn server_tls(server: &Issued, authenticate: &Path) -> crate::ServerTls {
    crate::ServerTls::load(crate::ServerTlsFiles {
        certificate: server.certificate.clone(),
        key: Some(server.key.clone()),
        authenticate: authenticate.to_owned(),
        password_file: None,
    })
    .expect("server TLS")
}

/// A client configuration presenting `client` (none: no certificate),
/// checking the server against `authenticate` and, when given, `hostname`.
pub fn client_tls(
    client: Option<&Issued>,
    authenticate: &Path,
    hostname: Option<&str>,
) -> crate::ClientTls {
    crate::ClientTls::load(crate::ClientTlsFiles {
        certificate: client.map(|c| c.certificate.clone()),
        key: client.map(|c| c.key.clone()),
        authenticate: Some(authenticate.to_owned()),
        check_hostname: true,
        server_hostname: hostname.map(str::to_owned),
        ..Default::default()
    })
    .expect("client TLS")
}
