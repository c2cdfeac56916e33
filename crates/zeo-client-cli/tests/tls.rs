//! `zeo-client` over TLS: `--ssl-*` options on any subcommand, `-C FILE`
//! with a `<clientstorage>` `<ssl>` section, and a TLS failure reported by
//! its reason instead of a timeout.

use std::path::Path;
use std::process::{Command, Output};
use std::sync::Arc;
use std::time::{Duration, Instant};

use zeo_server::{BackgroundServer, ListenAddress, ServerBuilder, ServerSettings};
use zeo_storage::MappingStorage;
use zeo_tls::testing::{server_tls, CertAuthority, Issued, Spec};

fn tls_server(server: &Issued, authenticate: &Path) -> BackgroundServer {
    let settings = ServerSettings {
        tls: Some(Arc::new(server_tls(server, authenticate))),
        ..ServerSettings::default()
    };
    let server = ServerBuilder::new(settings)
        .storage("1", Arc::new(MappingStorage::new("1")))
        .build()
        .unwrap();
    server.bind(&ListenAddress::localhost(0)).unwrap();
    server.start_background().unwrap()
}

fn zeo_client(dir: &Path, args: &[&str]) -> Output {
    zeo_testkit::run_with_timeout(
        Command::new(env!("CARGO_BIN_EXE_zeo-client"))
            .args(args)
            .current_dir(dir),
        Duration::from_secs(60),
    )
}

#[test]
fn ssl_options_and_a_client_config_file_reach_a_tls_server() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let mut ca = CertAuthority::new(d, "ca");
    let server_cert = ca.issue("server", &Spec::new("server", &["db.example"]));
    let client_cert = ca.issue("client", &Spec::new("client", &[]));
    let server = tls_server(&server_cert, &ca.certificate);
    let addr = format!("127.0.0.1:{}", server.port().unwrap());
    let (cert, key, auth) = (
        client_cert.certificate.display().to_string(),
        client_cert.key.display().to_string(),
        ca.certificate.display().to_string(),
    );

    let ssl = [
        "-s",
        &addr,
        "--ssl-certificate",
        &cert,
        "--ssl-key",
        &key,
        "--ssl-authenticate",
        &auth,
    ];
    let out = zeo_client(
        d,
        &[
            &["up", "--commit"],
            &ssl[..],
            &["--ssl-server-hostname", "db.example"],
        ]
        .concat(),
    );
    assert!(out.status.success(), "{out:?}");

    // The same settings as a Python client configuration.
    std::fs::write(
        d.join("client.conf"),
        format!(
            "%import ZEO\n<clientstorage>\n  server {addr}\n  <ssl>\n    certificate {cert}\n    \
             key {key}\n    authenticate {auth}\n    server-hostname db.example\n  </ssl>\n</clientstorage>\n"
        ),
    )
    .unwrap();
    let out = zeo_client(d, &["info", "-C", "client.conf"]);
    assert!(out.status.success(), "{out:?}");
    // Command-line options win over the file's.
    let out = zeo_client(
        d,
        &[
            "status",
            "-C",
            "client.conf",
            "--ssl-no-check-hostname",
            "--ssl-server-hostname",
            "other.example",
        ],
    );
    assert!(out.status.success(), "{out:?}");

    // Checked against the address's host, the certificate does not match:
    // the command says so at once, not after its 30 s timeout.
    let started = Instant::now();
    let out = zeo_client(d, &[&["up"], &ssl[..]].concat());
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(&format!(
            "TLS: {addr}: the server's certificate does not name \"127.0.0.1\" (hostname mismatch"
        )),
        "{stderr}"
    );
    assert!(started.elapsed() < Duration::from_secs(20));

    // A bad file is named.
    let out = zeo_client(d, &["up", "-s", &addr, "--ssl-certificate", "missing.pem"]);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("--ssl-*: missing.pem: cannot read"),
        "{stderr}"
    );
    server.shutdown().unwrap();
}
