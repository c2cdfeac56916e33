//! TLS to the database: a cluster of the test's own with `ssl = on` on
//! 127.0.0.1, reached with `sslmode=verify-full`, `require` and a CA that
//! did not sign the server's certificate.

use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use zeo_storage::{BeginOptions, Oid, Storage, Tid, TransactionMetaData};
use zeo_storage_postgres::{PostgresOptions, PostgresStorage};
use zeo_testkit::postgres::{running_as_root, PrivateCluster};
use zeo_testkit::{free_port, run_with_timeout};
use zeo_tls::testing::Pki;

const LIMIT: Duration = Duration::from_secs(120);

fn check(out: std::process::Output, what: &str) {
    assert!(
        out.status.success(),
        "{what}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A cluster with TLS on a TCP port, stopped and removed on drop.
/// A private cluster listening on 127.0.0.1 with TLS, its certificates
/// from a test PKI.
struct TlsCluster {
    pg: PrivateCluster,
    port: u16,
    pki: Pki,
    /// Held for its removal on drop (after the cluster's stop).
    _pki_dir: tempfile::TempDir,
}

impl TlsCluster {
    fn start() -> TlsCluster {
        let pki_dir = tempfile::tempdir().expect("a temporary directory");
        std::fs::set_permissions(pki_dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        let pki = Pki::new(pki_dir.path());
        // PostgreSQL reads its key only when its own user owns it, 0600.
        std::fs::set_permissions(&pki.server.key, std::fs::Permissions::from_mode(0o600)).unwrap();
        if running_as_root() {
            check(
                run_with_timeout(
                    Command::new("chown")
                        .args(["-R", "postgres:postgres"])
                        .arg(pki_dir.path()),
                    LIMIT,
                ),
                "chown",
            );
        }
        let port = free_port();
        let pg = PrivateCluster::start_with(&format!(
            "-p {port} -c listen_addresses=127.0.0.1 -c ssl=on \
             -c ssl_cert_file={cert} -c ssl_key_file={key}",
            cert = pki.server.certificate.display(),
            key = pki.server.key.display(),
        ));
        TlsCluster {
            pg,
            port,
            pki,
            _pki_dir: pki_dir,
        }
    }

    fn dsn(&self, host: &str, tls: &str) -> String {
        format!(
            "host={host} port={} dbname=postgres user=postgres {tls}",
            self.port
        )
    }

    fn socket_dsn(&self) -> String {
        format!(
            "host={} port={} dbname=postgres user=postgres",
            self.pg.cluster().socket_dir().display(),
            self.port
        )
    }

    /// How many of our sessions (application_name zeo-server) use TLS.
    fn tls_sessions(&self) -> i64 {
        let mut c = postgres::Client::connect(&self.socket_dsn(), postgres::NoTls).unwrap();
        c.query_one(
            "SELECT count(*) FROM pg_stat_ssl JOIN pg_stat_activity USING (pid) \
             WHERE ssl AND application_name = 'zeo-server'",
            &[],
        )
        .unwrap()
        .get(0)
    }

    fn ca(&self) -> PathBuf {
        self.pki.ca.certificate.clone()
    }
}

fn commit_root(s: &PostgresStorage) -> Tid {
    let t = s
        .tpc_begin(&TransactionMetaData::default(), BeginOptions::default())
        .unwrap();
    s.store(t, Oid::ROOT, Tid::ZERO, b"root over TLS").unwrap();
    s.tpc_vote(t).unwrap();
    s.tpc_finish(t, &mut |_| {}).unwrap()
}

fn open(dsn: String) -> zeo_storage_postgres::Result<PostgresStorage> {
    PostgresStorage::open(PostgresOptions::new(dsn))
}

#[test]
fn tls_to_the_database_verifies_as_sslmode_says() {
    let cluster = TlsCluster::start();
    let ca = cluster.ca();
    let full = open(cluster.dsn(
        "localhost",
        &format!("sslmode=verify-full sslrootcert={}", ca.display()),
    ))
    .expect("verify-full against the CA that signed the server");
    let tid = commit_root(&full);
    assert_eq!(
        full.load(Oid::ROOT).unwrap(),
        (b"root over TLS".to_vec(), tid)
    );
    assert!(
        cluster.tls_sessions() > 0,
        "the storage's sessions are not encrypted"
    );

    // Another CA: the server's certificate does not chain to it.
    let other = tempfile::tempdir().unwrap();
    let stranger = Pki::new(other.path());
    let err = open(cluster.dsn(
        "127.0.0.1",
        &format!(
            "sslmode=verify-full sslrootcert={}",
            stranger.ca.certificate.display()
        ),
    ))
    .err()
    .expect("a server certificate from another CA is refused");
    assert!(err.to_string().contains("certificate"), "{err}");

    // `require` without a root certificate encrypts without checking.
    let required = open(cluster.dsn(
        "127.0.0.1",
        "sslmode=require sslrootcert=/nonexistent/root.crt",
    ))
    .expect("sslmode=require");
    assert_eq!(required.load(Oid::ROOT).unwrap().1, tid);
}
