//! The client over TLS: commits through zeo-server (TCP and Unix socket)
//! and through Python's `runzeo` with ZEO's own test certificates, and
//! fails fast with an error naming the reason for each TLS failure.

mod common;

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{commit_with, run_runzeo, TestServer};
use zeo_client::{ClientOptions, ClientStorage, Error, ServerAddress};
use zeo_server::{ListenAddress, ServerBuilder, ServerSettings};
use zeo_storage::{MappingStorage, Oid, Storage, Tid, TransactionMetaData};
use zeo_tls::testing::{client_tls, server_tls, CertAuthority, Issued, Pki, Spec};
use zeo_tls::{ClientTls, ClientTlsFiles, FailureReason};

struct Certs {
    dir: tempfile::TempDir,
    ca: CertAuthority,
    server: Issued,
    client: Issued,
}

fn certs() -> Certs {
    let dir = tempfile::tempdir().unwrap();
    let Pki { ca, server, client } = Pki::new(dir.path());
    Certs {
        dir,
        ca,
        server,
        client,
    }
}

fn tls_settings(server: &Issued, authenticate: &Path) -> ServerSettings {
    let tls = server_tls(server, authenticate).with_handshake_timeout(Duration::from_secs(1));
    ServerSettings {
        tls: Some(Arc::new(tls)),
        ..ServerSettings::default()
    }
}

fn commit_and_load(storage: &ClientStorage, data: &[u8]) -> Tid {
    let oid = storage.new_oid().unwrap();
    let tid = commit_with(
        storage,
        &TransactionMetaData::default(),
        &[(oid, Tid::ZERO, data)],
    )
    .unwrap();
    assert_eq!(storage.load(oid).unwrap(), (data.to_vec(), tid));
    tid
}

#[test]
fn commits_and_loads_through_zeo_server_over_tls() {
    let c = certs();
    let server = TestServer::start(
        &c.dir.path().join("Data.fs"),
        0,
        tls_settings(&c.server, &c.ca.certificate),
    );
    let mut options = server.options();
    options.tls = Some(client_tls(Some(&c.client), &c.ca.certificate, None));
    let a = ClientStorage::open(options.clone()).unwrap();
    let b = ClientStorage::open(options).unwrap();
    let t1 = commit_and_load(&a, b"over TLS");
    assert!(commit_and_load(&b, b"again") > t1);
}

#[test]
fn commits_over_tls_on_a_unix_socket() {
    let c = certs();
    let socket = c.dir.path().join("zeo.sock");
    let storage: Arc<dyn Storage> = Arc::new(MappingStorage::new("tls"));
    let server = ServerBuilder::new(tls_settings(&c.server, &c.ca.certificate))
        .storage("1", storage)
        .build()
        .unwrap();
    let rt = tokio::runtime::Runtime::new().unwrap();
    {
        let _guard = rt.enter();
        server.bind(&ListenAddress::Unix(socket.clone())).unwrap();
    }
    let running = server.spawn_on(rt.handle());
    let mut options = ClientOptions::new(vec![ServerAddress::Unix(socket)]);
    options.wait_timeout = Duration::from_secs(10);
    // A Unix socket has no host: the name checked is `localhost`.
    options.tls = Some(client_tls(Some(&c.client), &c.ca.certificate, None));
    let client = ClientStorage::open(options).unwrap();
    commit_and_load(&client, b"over a Unix socket");
    drop(client);
    rt.block_on(running.shutdown()).unwrap();
}

/// Opens a client with a long wait timeout and returns its error, which
/// must come long before that timeout.
fn open_error(mut options: ClientOptions) -> Error {
    options.wait_timeout = Duration::from_secs(60);
    let started = Instant::now();
    let err = ClientStorage::open(options).map(|_| ()).unwrap_err();
    assert!(
        started.elapsed() < Duration::from_secs(30),
        "{err} took {:?}",
        started.elapsed()
    );
    err
}

fn tls_reason(err: &Error) -> &FailureReason {
    match err {
        Error::Tls { reason, .. } => reason,
        other => panic!("not a TLS error: {other}"),
    }
}

#[test]
fn each_tls_failure_fails_fast_with_an_error_naming_its_reason() {
    let mut c = certs();
    let dir = c.dir.path().to_owned();
    let secured = TestServer::start(
        &dir.join("a.fs"),
        0,
        tls_settings(&c.server, &c.ca.certificate),
    );
    let with = |tls: ClientTls| {
        let mut o = secured.options();
        o.tls = Some(tls);
        o
    };

    // A TLS client reaching a server without TLS.
    let plain = TestServer::start(&dir.join("b.fs"), 0, ServerSettings::default());
    let mut o = plain.options();
    o.tls = Some(client_tls(Some(&c.client), &c.ca.certificate, None));
    let err = open_error(o);
    assert_eq!(tls_reason(&err), &FailureReason::NotTls);
    assert_eq!(
        err.to_string(),
        format!("TLS: 127.0.0.1:{}: the peer does not speak TLS", plain.port)
    );

    // The server's certificate names another host.
    let err = open_error(with(client_tls(
        Some(&c.client),
        &c.ca.certificate,
        Some("db.example"),
    )));
    assert!(
        err.to_string()
            .contains("does not name \"db.example\" (hostname mismatch"),
        "{err}"
    );

    // The server's certificate comes from a CA we do not list.
    let mut other = CertAuthority::new(&dir, "other");
    let err = open_error(with(client_tls(Some(&c.client), &other.certificate, None)));
    assert_eq!(tls_reason(&err), &FailureReason::UnknownIssuer);
    assert!(err.to_string().contains("(unknown CA)"), "{err}");

    // Our certificate comes from a CA the server does not list.
    let stranger = other.issue("stranger", &Spec::new("stranger", &[]));
    let err = open_error(with(client_tls(Some(&stranger), &c.ca.certificate, None)));
    assert!(
        err.to_string()
            .contains("the peer refused the handshake: it does not know the CA of our certificate"),
        "{err}"
    );

    // No client certificate at all.
    let err = open_error(with(client_tls(None, &c.ca.certificate, None)));
    assert!(
        err.to_string().contains("it requires a client certificate"),
        "{err}"
    );

    // The server's certificate expired.
    let old =
        c.ca.issue("old", &Spec::new("old", &["127.0.0.1"]).expired());
    let stale = TestServer::start(&dir.join("c.fs"), 0, tls_settings(&old, &c.ca.certificate));
    let mut o = stale.options();
    o.tls = Some(client_tls(Some(&c.client), &c.ca.certificate, None));
    let err = open_error(o);
    assert_eq!(tls_reason(&err), &FailureReason::Expired);
    assert!(
        err.to_string()
            .ends_with("the peer's certificate has expired"),
        "{err}"
    );

    // A key that is not the certificate's is refused when loading.
    let err = ClientTls::load(ClientTlsFiles {
        certificate: Some(c.client.certificate.clone()),
        key: Some(c.server.key.clone()),
        authenticate: Some(c.ca.certificate.clone()),
        ..Default::default()
    })
    .unwrap_err();
    assert_eq!(
        err.to_string(),
        format!(
            "{}: the private key does not match the certificate in {}",
            c.server.key.display(),
            c.client.certificate.display()
        )
    );

    // A client without TLS reaching the TLS server is told what may be up.
    let mut o = secured.options();
    o.wait_timeout = Duration::from_secs(3);
    let err = ClientStorage::open(o).map(|_| ()).unwrap_err();
    assert!(
        err.to_string()
            .contains("a server with TLS (<ssl>) waits for a TLS handshake"),
        "{err}"
    );

    // The server counted each failure under its reason, for the metrics
    // endpoint (the count follows the client's error: wait for it).
    let counted = zeo_testkit::wait_until(Duration::from_secs(10), || {
        let failures = secured.tls_failures();
        [
            "unknown_issuer",
            "no_client_certificate",
            "rejected_by_peer",
            "timeout",
        ]
        .iter()
        .all(|reason| failures.get(*reason).is_some_and(|n| *n >= 1))
    });
    assert!(counted, "{:?}", secured.tls_failures());

    // The server kept serving through all of it.
    let ok =
        ClientStorage::open(with(client_tls(Some(&c.client), &c.ca.certificate, None))).unwrap();
    commit_and_load(&ok, b"still serving");
}

/// The directory of ZEO's test certificates in the ZEO 6 venv.
fn zeo_test_certs() -> std::path::PathBuf {
    let out = zeo_testkit::run_with_timeout(
        std::process::Command::new(zeo_testkit::python6()).args([
            "-c",
            "import os, ZEO.tests; print(os.path.dirname(ZEO.tests.__file__))",
        ]),
        Duration::from_secs(60),
    );
    zeo_testkit::stdout_of(&out, "locating ZEO.tests")
        .trim()
        .into()
}

#[test]
fn commits_through_python_runzeo_with_zeo_test_certificates() {
    let certs = zeo_test_certs();
    let dir = tempfile::tempdir().unwrap();
    let port = zeo_testkit::free_port();
    std::fs::write(
        dir.path().join("zeo.conf"),
        format!(
            "<zeo>\n  address 127.0.0.1:{port}\n  <ssl>\n    certificate {c}/server.pem\n    \
             key {c}/server_key.pem\n    authenticate {c}/client.pem\n  </ssl>\n</zeo>\n\
             <filestorage>\n  path {}\n</filestorage>\n",
            dir.path().join("Data.fs").display(),
            c = certs.display()
        ),
    )
    .unwrap();
    let _server = run_runzeo(dir.path(), port);
    // One file configures the Python and the Rust client alike.
    let config = zeo_config::ClientConfig::from_str(
        &format!(
            "%import ZEO\n<clientstorage>\n  server 127.0.0.1:{port}\n  wait-timeout 30\n  <ssl>\n    \
             certificate {c}/client.pem\n    key {c}/client_key.pem\n    authenticate {c}/server.pem\n    \
             server-hostname zodb.org\n  </ssl>\n</clientstorage>\n",
            c = certs.display()
        ),
        "client.conf",
    )
    .unwrap();
    let options = ClientOptions::try_from(&config).unwrap();
    let client = ClientStorage::open(options.clone()).unwrap();
    commit_and_load(&client, b"rust over TLS to runzeo");
    assert!(client.load(Oid(1)).is_ok());

    // runzeo's certificate (CN zodb.org, no SAN) does not name 127.0.0.1.
    let mut unnamed = options;
    let tls = unnamed.tls.take().unwrap();
    unnamed.tls = Some(
        ClientTls::load(ClientTlsFiles {
            server_hostname: None,
            ..tls.files().clone()
        })
        .unwrap(),
    );
    let err = open_error(unnamed);
    assert!(
        matches!(tls_reason(&err), FailureReason::HostnameMismatch { expected } if expected == "127.0.0.1"),
        "{err}"
    );
}
