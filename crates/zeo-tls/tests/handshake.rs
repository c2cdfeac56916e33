//! Handshakes between zeo-tls servers and clients over in-memory streams:
//! what is accepted (pinned ZEO-style certificates, CA-signed ones, CN
//! host names) and the reason each refusal gives, on both sides.

use std::path::Path;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use zeo_tls::testing::{client_tls, self_signed, server_tls, CertAuthority, Issued, Pki, Spec};
use zeo_tls::{ClientTls, ClientTlsFiles, Error, FailureReason, ServerTls, ServerTlsFiles};

fn server(issued: &Issued, authenticate: &Path) -> ServerTls {
    server_tls(issued, authenticate)
}

fn client(issued: Option<&Issued>, authenticate: &Path, hostname: Option<&str>) -> ClientTls {
    client_tls(issued, authenticate, hostname)
}

/// Runs both sides; the server greets as a ZEO server does and the client
/// reads the greeting, where a TLS 1.3 client learns its certificate was
/// refused.
async fn exchange(
    server: &ServerTls,
    client: &ClientTls,
    host: &str,
) -> (Result<(), FailureReason>, Result<(), Error>) {
    let (a, b) = tokio::io::duplex(64 * 1024);
    let serve = async {
        let mut tls = server.accept(a).await?;
        let _ = tls.write_all(b"Z5").await;
        let _ = tls.flush().await;
        let mut byte = [0u8; 1];
        // Keeps the stream open until the client is done.
        let _ = tls.read(&mut byte).await;
        Ok(())
    };
    let connect = async {
        let mut tls = client.connect(b, host).await?;
        let mut greeting = [0u8; 2];
        let read = tls.read_exact(&mut greeting).await;
        let _ = tls.shutdown().await;
        match read {
            Ok(_) => {
                assert_eq!(&greeting, b"Z5");
                Ok(())
            }
            Err(e) => Err(Error::Handshake(FailureReason::from_handshake_io(&e))),
        }
    };
    tokio::join!(serve, connect)
}

/// Why the server refuses a client presenting `who`.
async fn refusal(server: &ServerTls, who: &Issued, ca: &Path) -> FailureReason {
    let (served, _) = exchange(server, &client(Some(who), ca, None), "localhost").await;
    served.expect_err("the server refuses the client")
}

/// Asserts the fixture's client and `server` complete a handshake.
async fn accepts_the_client(server: &ServerTls, f: &Fixture) {
    let c = client(Some(&f.client), &f.ca.certificate, None);
    let (a, b) = exchange(server, &c, "localhost").await;
    a.unwrap();
    b.unwrap();
}

struct Fixture {
    dir: tempfile::TempDir,
    ca: CertAuthority,
    server: Issued,
    client: Issued,
}

fn fixture() -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let Pki { ca, server, client } = Pki::new(dir.path());
    Fixture {
        dir,
        ca,
        server,
        client,
    }
}

#[tokio::test]
async fn ca_signed_certificates_are_accepted_both_ways() {
    let f = fixture();
    let s = server(&f.server, &f.ca.certificate);
    let c = client(Some(&f.client), &f.ca.certificate, None);
    let (srv, cli) = exchange(&s, &c, "127.0.0.1").await;
    srv.unwrap();
    cli.unwrap();
    let (srv, cli) = exchange(&s, &c, "localhost").await;
    srv.unwrap();
    cli.unwrap();
}

#[tokio::test]
async fn zeo_style_self_signed_certificates_are_pinned_and_matched_on_their_cn() {
    let dir = tempfile::tempdir().unwrap();
    // As ZEO's server.pem/client.pem: self-signed, CA:TRUE, no SAN.
    let srv = self_signed(dir.path(), "server", &Spec::new("zodb.org", &[]));
    let cli = self_signed(dir.path(), "client", &Spec::new("client", &[]));
    let s = server(&srv, &cli.certificate);
    let c = client(Some(&cli), &srv.certificate, Some("zodb.org"));
    let (a, b) = exchange(&s, &c, "127.0.0.1").await;
    a.unwrap();
    b.unwrap();

    let wrong = client(Some(&cli), &srv.certificate, Some("example.org"));
    let (_, b) = exchange(&s, &wrong, "127.0.0.1").await;
    let err = b.unwrap_err();
    assert!(
        matches!(&err, Error::Handshake(FailureReason::HostnameMismatch { expected }) if expected == "example.org"),
        "{err}"
    );
    assert!(
        err.to_string().contains("does not name \"example.org\""),
        "{err}"
    );

    // With the address's host (127.0.0.1) checked against a CN-only
    // certificate, Python refuses too; check-hostname false accepts.
    let by_address = client(Some(&cli), &srv.certificate, None);
    let (_, b) = exchange(&s, &by_address, "127.0.0.1").await;
    assert!(matches!(
        b,
        Err(Error::Handshake(FailureReason::HostnameMismatch { .. }))
    ));
    let unchecked = ClientTls::load(ClientTlsFiles {
        check_hostname: false,
        ..by_address.files().clone()
    })
    .unwrap();
    let (a, b) = exchange(&s, &unchecked, "127.0.0.1").await;
    a.unwrap();
    b.unwrap();
}

#[tokio::test]
async fn an_unlisted_client_certificate_is_refused_as_unknown_ca_on_both_sides() {
    let f = fixture();
    let mut other = CertAuthority::new(f.dir.path(), "other");
    let stranger = other.issue("stranger", &Spec::new("stranger", &[]));
    let s = server(&f.server, &f.ca.certificate);
    let c = client(Some(&stranger), &f.ca.certificate, None);
    let (a, b) = exchange(&s, &c, "localhost").await;
    assert_eq!(a.unwrap_err(), FailureReason::UnknownIssuer);
    let err = b.unwrap_err().to_string();
    assert!(err.contains("unknown CA"), "{err}");
}

#[tokio::test]
async fn a_server_certificate_from_an_unknown_ca_is_refused_by_the_client() {
    let f = fixture();
    let mut other = CertAuthority::new(f.dir.path(), "other");
    let impostor = other.issue("impostor", &Spec::new("impostor", &["localhost"]));
    let s = server(&impostor, &f.ca.certificate);
    let c = client(Some(&f.client), &f.ca.certificate, None);
    let (_, b) = exchange(&s, &c, "localhost").await;
    let err = b.unwrap_err();
    assert!(
        matches!(err, Error::Handshake(FailureReason::UnknownIssuer)),
        "{err}"
    );
    assert!(err.to_string().contains("unknown CA"), "{err}");
}

#[tokio::test]
async fn expired_and_not_yet_valid_certificates_are_named_so() {
    let mut f = fixture();
    let old =
        f.ca.issue("old", &Spec::new("old", &["localhost"]).expired());
    let early =
        f.ca.issue("early", &Spec::new("early", &[]).not_yet_valid());
    let s = server(&f.server, &f.ca.certificate);
    assert_eq!(
        refusal(&s, &old, &f.ca.certificate).await,
        FailureReason::Expired
    );
    assert_eq!(
        refusal(&s, &early, &f.ca.certificate).await,
        FailureReason::NotYetValid
    );

    let expired_server = server(&old, &f.ca.certificate);
    let (_, b) = exchange(
        &expired_server,
        &client(Some(&f.client), &f.ca.certificate, None),
        "localhost",
    )
    .await;
    let err = b.unwrap_err();
    assert!(err.to_string().contains("has expired"), "{err}");

    // A pinned certificate's dates are checked too.
    let dir = tempfile::tempdir().unwrap();
    let pinned = self_signed(dir.path(), "pinned", &Spec::new("pinned", &[]).expired());
    let s = server(&f.server, &pinned.certificate);
    assert_eq!(
        refusal(&s, &pinned, &f.ca.certificate).await,
        FailureReason::Expired
    );
}

#[tokio::test]
async fn a_client_without_certificate_is_refused() {
    let f = fixture();
    let s = server(&f.server, &f.ca.certificate);
    let c = client(None, &f.ca.certificate, None);
    let (a, b) = exchange(&s, &c, "localhost").await;
    let reason = a.unwrap_err();
    assert_eq!(reason, FailureReason::NoClientCertificate);
    assert!(reason.to_string().contains("presented no certificate"));
    let err = b.unwrap_err().to_string();
    assert!(err.contains("requires a client certificate"), "{err}");
}

#[tokio::test]
async fn crls_in_authenticate_revoke_the_leaf() {
    let mut f = fixture();
    let revoked = f.ca.issue("revoked", &Spec::new("revoked", &[]));
    let auth = f.dir.path().join("auth");
    std::fs::create_dir(&auth).unwrap();
    std::fs::copy(&f.ca.certificate, auth.join("ca.pem")).unwrap();
    let crl = f.ca.crl("crl", &[revoked.serial]);
    std::fs::copy(&crl, auth.join("ca.r0")).unwrap();
    std::fs::write(auth.join("README"), "not PEM").unwrap();
    let s = server(&f.server, &auth);
    assert_eq!(
        refusal(&s, &revoked, &f.ca.certificate).await,
        FailureReason::Revoked
    );
    accepts_the_client(&s, &f).await;
}

#[tokio::test]
async fn a_plain_peer_is_told_apart_from_a_tls_failure() {
    let f = fixture();
    // A TLS client reaching a plain ZEO server reads its greeting frame.
    let c = client(Some(&f.client), &f.ca.certificate, None);
    let (mut plain, b) = tokio::io::duplex(4096);
    plain.write_all(b"\0\0\0\x02Z5").await.unwrap();
    let err = c.connect(b, "localhost").await.unwrap_err();
    assert!(
        matches!(err, Error::Handshake(FailureReason::NotTls)),
        "{err}"
    );
    assert!(err.to_string().contains("does not speak TLS"), "{err}");

    // A plain client that writes first is named so by the server.
    let s = server(&f.server, &f.ca.certificate);
    let (mut plain, a) = tokio::io::duplex(4096);
    plain.write_all(b"\0\0\0\x02Z5").await.unwrap();
    assert_eq!(s.accept(a).await.unwrap_err(), FailureReason::NotTls);
}

#[tokio::test(start_paused = true)]
async fn a_silent_peer_ends_at_the_handshake_timeout() {
    let f = fixture();
    let s = server(&f.server, &f.ca.certificate).with_handshake_timeout(Duration::from_secs(3));
    // A plain ZEO client waits for the server's greeting and says nothing.
    let (_silent, a) = tokio::io::duplex(4096);
    let reason = s.accept(a).await.unwrap_err();
    assert_eq!(reason, FailureReason::Timeout(Duration::from_secs(3)));
    assert!(reason.to_string().contains("no TLS handshake within 3.0s"));
}

#[test]
fn bad_configurations_name_the_file_and_the_reason() {
    let f = fixture();
    let dir = f.dir.path();
    let load = |cert: &Path, key: &Path, auth: &Path| {
        ServerTls::load(ServerTlsFiles {
            certificate: cert.to_owned(),
            key: Some(key.to_owned()),
            authenticate: auth.to_owned(),
            password_file: None,
        })
        .unwrap_err()
        .to_string()
    };
    let missing = dir.join("missing.pem");
    let err = load(&missing, &f.server.key, &f.ca.certificate);
    assert!(
        err.starts_with(&format!("{}: cannot read", missing.display())),
        "{err}"
    );

    let err = load(&f.server.certificate, &f.client.key, &f.ca.certificate);
    assert!(err.contains("does not match the certificate"), "{err}");
    assert!(
        err.starts_with(&f.client.key.display().to_string()),
        "{err}"
    );

    let err = load(
        &f.server.certificate,
        &f.server.certificate,
        &f.ca.certificate,
    );
    assert!(err.contains("no private key found"), "{err}");

    let err = load(&f.server.key, &f.server.key, &f.ca.certificate);
    assert!(err.contains("no certificate found"), "{err}");

    let encrypted = dir.join("encrypted_key.pem");
    std::fs::write(
        &encrypted,
        "-----BEGIN RSA PRIVATE KEY-----\nProc-Type: 4,ENCRYPTED\nDEK-Info: DES-EDE3-CBC,00\n\nAAAA\n-----END RSA PRIVATE KEY-----\n",
    )
    .unwrap();
    let err = load(&f.server.certificate, &encrypted, &f.ca.certificate);
    assert!(
        err.contains("the private key uses OpenSSL's legacy PEM encryption"),
        "{err}"
    );

    let err = load(&f.server.certificate, &f.server.key, &f.server.key);
    assert!(
        err.contains("authenticate names no CA or client certificate"),
        "{err}"
    );
}

#[tokio::test]
async fn reload_serves_new_files_and_a_failed_reload_keeps_the_old() {
    let mut f = fixture();
    let s = server(&f.server, &f.ca.certificate);
    let c = client(Some(&f.client), &f.ca.certificate, None);
    let (a, b) = exchange(&s, &c, "localhost").await;
    a.unwrap();
    b.unwrap();

    // The server certificate is replaced by one for another name only.
    let renamed =
        f.ca.issue("renamed", &Spec::new("renamed", &["renamed.example"]));
    std::fs::copy(&renamed.certificate, &f.server.certificate).unwrap();
    std::fs::copy(&renamed.key, &f.server.key).unwrap();
    s.reload().unwrap();
    let (_, b) = exchange(&s, &c, "localhost").await;
    assert!(matches!(
        b,
        Err(Error::Handshake(FailureReason::HostnameMismatch { .. }))
    ));

    // A broken file leaves the renamed certificate in service.
    std::fs::write(&f.server.key, "garbage").unwrap();
    let err = s.reload().unwrap_err().to_string();
    assert!(err.contains("no private key found"), "{err}");
    let (a, b) = exchange(&s, &c, "renamed.example").await;
    a.unwrap();
    b.unwrap();
}

fn openssl(dir: &Path, args: &[&str]) {
    let out = zeo_testkit::run_with_timeout(
        std::process::Command::new("openssl")
            .args(args)
            .current_dir(dir),
        Duration::from_secs(60),
    );
    assert!(out.status.success(), "openssl {args:?}: {out:?}");
}

#[tokio::test]
async fn an_encrypted_pkcs8_key_is_read_with_its_password_file() {
    let f = fixture();
    let d = f.dir.path();
    let key = f.server.key.display().to_string();
    openssl(
        d,
        &[
            "pkcs8",
            "-topk8",
            "-in",
            &key,
            "-out",
            "enc_key.pem",
            "-passout",
            "pass:s3cret",
        ],
    );
    openssl(
        d,
        &[
            "ec",
            "-in",
            &key,
            "-aes256",
            "-out",
            "legacy_key.pem",
            "-passout",
            "pass:s3cret",
        ],
    );
    std::fs::write(d.join("password"), "s3cret\n").unwrap();
    std::fs::write(d.join("wrong"), "guess\n").unwrap();
    let load = |key: &str, password: Option<&str>| {
        ServerTls::load(ServerTlsFiles {
            certificate: f.server.certificate.clone(),
            key: Some(d.join(key)),
            authenticate: f.ca.certificate.clone(),
            password_file: password.map(|p| d.join(p)),
        })
    };
    let err = load("enc_key.pem", None).unwrap_err().to_string();
    assert!(
        err.contains(
            "the private key is encrypted: name a file holding its password with password-file"
        ),
        "{err}"
    );
    let err = load("enc_key.pem", Some("wrong")).unwrap_err().to_string();
    assert!(
        err.contains("the password in password-file does not decrypt the private key"),
        "{err}"
    );
    let err = load("legacy_key.pem", Some("password"))
        .unwrap_err()
        .to_string();
    assert!(
        err.contains(
            "legacy PEM encryption; convert it to encrypted PKCS#8 with `openssl pkcs8 -topk8"
        ),
        "{err}"
    );

    let s = load("enc_key.pem", Some("password")).unwrap();
    accepts_the_client(&s, &f).await;
}

#[tokio::test]
async fn tls_1_2_clients_are_served_with_client_certificates() {
    let f = fixture();
    let s = server(&f.server, &f.ca.certificate);
    let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
    let auth = zeo_tls::files::load_authorities(&f.ca.certificate).unwrap();
    let verifier = zeo_tls::verify::ServerVerifier::new(&auth, true, provider.clone()).unwrap();
    let chain = zeo_tls::files::load_certificates(&f.client.certificate).unwrap();
    let key = zeo_tls::files::load_private_key(&f.client.key, None).unwrap();
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS12])
        .unwrap()
        .dangerous()
        .with_custom_certificate_verifier(std::sync::Arc::new(verifier))
        .with_client_auth_cert(chain, key)
        .unwrap();
    let connector = tokio_rustls::TlsConnector::from(std::sync::Arc::new(config));
    let name = rustls_pki_types::ServerName::try_from("localhost").unwrap();
    let (a, b) = tokio::io::duplex(64 * 1024);
    let (served, connected) = tokio::join!(s.accept(a), connector.connect(name, b));
    let served = served.unwrap();
    connected.unwrap();
    assert_eq!(
        served.get_ref().1.protocol_version(),
        Some(rustls::ProtocolVersion::TLSv1_2)
    );
}
