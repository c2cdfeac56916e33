//! The `zeo-server` binary with `<ssl>`: stock ZEO 6 clients commit and
//! read over TLS with ZEO's own test certificates; a plain client, a wrong
//! `server-hostname` and an unlisted certificate are refused with a WARNING
//! naming the reason while the server keeps serving; bad configurations
//! refuse to start; SIGUSR1 reloads the certificates.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use common::*;
use tokio::io::AsyncReadExt;
use zeo_tls::testing::{CertAuthority, Spec};

/// The directory of ZEO's test certificates in the ZEO 6 venv.
fn zeo_test_certs() -> PathBuf {
    let out = zeo_testkit::run_with_timeout(
        Command::new(zeo_testkit::python6()).args([
            "-c",
            "import os, ZEO.tests; print(os.path.dirname(ZEO.tests.__file__))",
        ]),
        Duration::from_secs(60),
    );
    PathBuf::from(zeo_testkit::stdout_of(&out, "locating ZEO.tests").trim())
}

/// Waits (20 s at most) for the log file to contain `needle`; returns it.
fn wait_for_log(path: &Path, needle: &str) -> String {
    let mut text = String::new();
    let logged = zeo_testkit::wait_until(Duration::from_secs(20), || {
        text = std::fs::read_to_string(path).unwrap_or_default();
        text.contains(needle)
    });
    assert!(logged, "{needle:?} never logged:\n{text}");
    text
}

fn server_config(certificate: &Path, key: &Path, authenticate: &Path) -> String {
    format!(
        "<zeo>\n  address 127.0.0.1:0\n  <ssl>\n    certificate {}\n    key {}\n    \
         authenticate {}\n    handshake-timeout 1\n  </ssl>\n</zeo>\n\
         <filestorage 1>\n  path Data.fs\n</filestorage>\n\
         <eventlog>\n  level info\n  <logfile>\n    path zeo.log\n    \
         format %(levelname)s %(message)s\n  </logfile>\n</eventlog>\n",
        certificate.display(),
        key.display(),
        authenticate.display()
    )
}

/// Stock ZEO 6 clients configured as ZODB configures them (`%import ZEO`,
/// `<clientstorage>`, `<ssl>`); each case prints one line.
const PYTHON_CLIENTS: &str = r#"
import os, sys, time
import transaction, ZODB, ZODB.config, ZEO
from ZEO.Exceptions import ClientDisconnected
port, here = int(sys.argv[1]), sys.argv[2]
pem = lambda name: os.path.join(here, name)

def storage(ssl, wait_timeout=30):
    return ZODB.config.storageFromString("""
        %%import ZEO
        <clientstorage>
          server 127.0.0.1:%d
          wait-timeout %d
          %s
        </clientstorage>
    """ % (port, wait_timeout, ssl))

good = """<ssl>
    certificate %s
    key %s
    authenticate %s
    server-hostname zodb.org
    </ssl>""" % (pem('client.pem'), pem('client_key.pem'), pem('server.pem'))

db = ZODB.DB(storage(good))
with db.transaction() as conn:
    conn.root()['tls'] = 'committed over TLS'
db.close()
db = ZODB.DB(storage(good))
with db.transaction() as conn:
    print('read:', conn.root()['tls'])
db.close()

def refused(name, make):
    started = time.time()
    try:
        make().close()
        print(name, 'connected')
    except ClientDisconnected:
        print(name, 'refused')

refused('plain', lambda: ZEO.client(('127.0.0.1', port), wait_timeout=8))
refused('hostname', lambda: storage(good.replace('zodb.org', 'example.org'), 3))
refused('unlisted', lambda: storage(good.replace('client.pem', 'server.pem'), 3))

db = ZODB.DB(storage(good))
with db.transaction() as conn:
    print('still serving:', conn.root()['tls'])
db.close()
"#;

#[test]
fn stock_zeo6_clients_commit_over_tls_and_bad_ones_are_refused_with_a_reason() {
    let certs = zeo_test_certs();
    let dir = zeo_testkit::TempDir::new().unwrap();
    // Python's handshakes on a loaded machine need more than a second.
    let config = server_config(
        &certs.join("server.pem"),
        &certs.join("server_key.pem"),
        &certs.join("client.pem"),
    )
    .replace("handshake-timeout 1", "handshake-timeout 5");
    std::fs::write(dir.path().join("zeo.conf"), config).unwrap();
    let server = ServerProcess::start(dir.path(), &["-C", "zeo.conf"]);
    let out = zeo_testkit::run_with_timeout(
        Command::new(zeo_testkit::python6())
            .args(["-c", PYTHON_CLIENTS, &server.port().to_string()])
            .arg(&certs)
            .current_dir(dir.path())
            .env("PYTHONDONTWRITEBYTECODE", "1"),
        Duration::from_secs(120),
    );
    let stdout = zeo_testkit::stdout_of(&out, "the ZEO 6 clients");
    assert_eq!(
        stdout.lines().collect::<Vec<_>>(),
        [
            "read: committed over TLS",
            "plain refused",
            "hostname refused",
            "unlisted refused",
            "still serving: committed over TLS",
        ],
        "{stdout}"
    );
    let log = dir.path().join("zeo.log");
    // The plain client waited for a greeting; the server ended it.
    wait_for_log(&log, "no TLS handshake within 5.0s");
    // Python drops a connection whose certificate has the wrong name.
    wait_for_log(
        &log,
        "the peer closed the connection during the TLS handshake",
    );
    // The server certificate is not listed for clients.
    let text = wait_for_log(&log, "unknown CA");
    assert!(
        text.lines()
            .filter(|l| l.contains("TLS handshake failed"))
            .all(|l| l.starts_with("WARNING") && l.contains("127.0.0.1:")),
        "{text}"
    );
    server.signal(libc::SIGTERM);
    assert!(server.wait().0.success());
}

/// Runs the binary with `<ssl>` naming these files; returns its stderr,
/// asserting it refused to start.
fn refused_to_start(
    dir: &Path,
    certificate: &Path,
    key: &Path,
    authenticate: &Path,
    extra: &str,
) -> String {
    let config = server_config(certificate, key, authenticate).replace(
        "    handshake-timeout 1\n",
        &format!("    handshake-timeout 1\n{extra}"),
    );
    std::fs::write(dir.join("zeo.conf"), config).unwrap();
    let out = zeo_testkit::run_with_timeout(
        Command::new(binary())
            .args(["-C", "zeo.conf"])
            .current_dir(dir),
        Duration::from_secs(30),
    );
    assert!(!out.status.success(), "{out:?}");
    assert!(!String::from_utf8_lossy(&out.stdout).contains("listening on"));
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn a_bad_ssl_configuration_refuses_to_start_naming_the_file_and_the_reason() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let mut ca = CertAuthority::new(d, "ca");
    let server = ca.issue("server", &Spec::new("server", &["localhost"]));
    let other = ca.issue("other", &Spec::new("other", &[]));

    let missing = d.join("missing_key.pem");
    let err = refused_to_start(d, &server.certificate, &missing, &ca.certificate, "");
    assert!(
        err.contains(&format!(
            "zeo.conf: <ssl>: {}: cannot read",
            missing.display()
        )),
        "{err}"
    );

    let err = refused_to_start(d, &server.certificate, &other.key, &ca.certificate, "");
    assert!(
        err.contains(&format!(
            "{}: the private key does not match the certificate in {}",
            other.key.display(),
            server.certificate.display()
        )),
        "{err}"
    );

    let err = refused_to_start(
        d,
        &server.certificate,
        &server.key,
        &ca.certificate,
        "    password-function ZEO.tests.testssl.pwfunc\n",
    );
    assert!(
        err.contains("password-function ZEO.tests.testssl.pwfunc names a Python function"),
        "{err}"
    );

    let err = refused_to_start(d, &server.certificate, &server.key, &server.key, "");
    assert!(
        err.contains("authenticate names no CA or client certificate"),
        "{err}"
    );
}

/// Connects with TLS checking the name `host`, and reads the greeting.
async fn greeting(
    port: u16,
    tls: &zeo_tls::ClientTls,
    host: &str,
) -> Result<Vec<u8>, zeo_tls::Error> {
    let tcp = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .unwrap();
    let named = zeo_tls::ClientTls::load(zeo_tls::ClientTlsFiles {
        server_hostname: Some(host.to_owned()),
        ..tls.files().clone()
    })?;
    let mut stream = named.connect(tcp, "127.0.0.1").await?;
    let mut greeting = vec![0u8; 6];
    stream.read_exact(&mut greeting).await.unwrap();
    Ok(greeting)
}

#[tokio::test]
async fn sigusr1_reloads_the_certificate_and_a_failed_reload_keeps_the_old_one() {
    let dir = zeo_testkit::TempDir::new().unwrap();
    let d = dir.path();
    let mut ca = CertAuthority::new(d, "ca");
    let server_cert = ca.issue("server", &Spec::new("first", &["first.example"]));
    let client_cert = ca.issue("client", &Spec::new("client", &[]));
    std::fs::write(
        d.join("zeo.conf"),
        server_config(&server_cert.certificate, &server_cert.key, &ca.certificate),
    )
    .unwrap();
    let server = ServerProcess::start(d, &["-C", "zeo.conf"]);
    let port = server.port();
    let client = zeo_tls::ClientTls::load(zeo_tls::ClientTlsFiles {
        certificate: Some(client_cert.certificate.clone()),
        key: Some(client_cert.key.clone()),
        authenticate: Some(ca.certificate.clone()),
        ..Default::default()
    })
    .unwrap();
    assert_eq!(
        greeting(port, &client, "first.example").await.unwrap(),
        b"\0\0\0\x02Z5"
    );

    let second = ca.issue("second", &Spec::new("second", &["second.example"]));
    std::fs::copy(&second.certificate, &server_cert.certificate).unwrap();
    std::fs::copy(&second.key, &server_cert.key).unwrap();
    server.signal(libc::SIGUSR1);
    let log = d.join("zeo.log");
    wait_for_log(
        &log,
        "INFO SIGUSR1: TLS certificates, key and CRLs reloaded",
    );
    assert_eq!(
        greeting(port, &client, "second.example").await.unwrap(),
        b"\0\0\0\x02Z5"
    );
    let err = greeting(port, &client, "first.example").await.unwrap_err();
    assert!(err.to_string().contains("hostname mismatch"), "{err}");

    std::fs::write(&server_cert.key, "not a key").unwrap();
    server.signal(libc::SIGUSR1);
    let text = wait_for_log(
        &log,
        "TLS reload failed, still serving the previous certificates",
    );
    assert!(text.contains("no private key found"), "{text}");
    assert_eq!(
        greeting(port, &client, "second.example").await.unwrap(),
        b"\0\0\0\x02Z5"
    );
    server.signal(libc::SIGTERM);
    assert!(server.wait().0.success());
}

/// A stock ZEO 6 client trusting ZEO's `serverpw.pem`.
const PYTHON_PW_CLIENT: &str = r#"
import os, sys
import ZODB, ZODB.config
port, here = int(sys.argv[1]), sys.argv[2]
db = ZODB.DB(ZODB.config.storageFromString("""
    %%import ZEO
    <clientstorage>
      server 127.0.0.1:%d
      <ssl>
        certificate %s/client.pem
        key %s/client_key.pem
        authenticate %s/serverpw.pem
        server-hostname zodb.org
      </ssl>
    </clientstorage>
""" % (port, here, here, here)))
with db.transaction() as conn:
    conn.root()['pw'] = 'key decrypted'
with db.transaction() as conn:
    print(conn.root()['pw'])
db.close()
"#;

#[test]
fn zeo_password_protected_test_key_is_served_with_password_file() {
    // ZEO's test_ssl_pw key (password 1234, legacy PEM encryption), as its
    // operator would convert it for zeo-server.
    let certs = zeo_test_certs();
    let dir = zeo_testkit::TempDir::new().unwrap();
    let d = dir.path();
    let legacy = certs.join("serverpw_key.pem");
    let out = zeo_testkit::run_with_timeout(
        Command::new("openssl")
            .args([
                "pkcs8",
                "-topk8",
                "-passin",
                "pass:1234",
                "-passout",
                "pass:1234",
                "-in",
            ])
            .arg(&legacy)
            .args(["-out", "serverpw_key.pem"])
            .current_dir(d),
        Duration::from_secs(60),
    );
    assert!(out.status.success(), "{out:?}");
    std::fs::write(d.join("password"), "1234\n").unwrap();
    // The legacy file itself is refused with the command that converts it.
    let err = refused_to_start(
        d,
        &certs.join("serverpw.pem"),
        &legacy,
        &certs.join("client.pem"),
        "    password-file password\n",
    );
    assert!(err.contains("legacy PEM encryption; convert it"), "{err}");

    let config = server_config(
        &certs.join("serverpw.pem"),
        &d.join("serverpw_key.pem"),
        &certs.join("client.pem"),
    )
    .replace(
        "    handshake-timeout 1\n",
        "    handshake-timeout 5\n    password-file password\n",
    );
    std::fs::write(d.join("zeo.conf"), config).unwrap();
    let server = ServerProcess::start(d, &["-C", "zeo.conf"]);
    let out = zeo_testkit::run_with_timeout(
        Command::new(zeo_testkit::python6())
            .args(["-c", PYTHON_PW_CLIENT, &server.port().to_string()])
            .arg(&certs)
            .current_dir(d)
            .env("PYTHONDONTWRITEBYTECODE", "1"),
        Duration::from_secs(120),
    );
    assert_eq!(
        zeo_testkit::stdout_of(&out, "the ZEO 6 client").trim(),
        "key decrypted"
    );
    server.signal(libc::SIGTERM);
    assert!(server.wait().0.success());
}
