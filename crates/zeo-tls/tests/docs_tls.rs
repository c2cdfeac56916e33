//! `docs/tls.md` runs as written: its `openssl` commands make certificates
//! that zeo-tls accepts both ways and that Python's `ssl`, configured by
//! ZEO's own `ZEO.zconfig.ssl_config`, accepts with its strict checks; its
//! revocation commands make a CRL that refuses the revoked client.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use zeo_tls::testing::{client_tls, server_tls, Issued};
use zeo_tls::FailureReason;

/// The `sh` blocks of docs/tls.md, in order.
fn shell_blocks() -> Vec<String> {
    let doc =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs/tls.md"))
            .expect("docs/tls.md");
    let mut blocks = Vec::new();
    let mut current: Option<String> = None;
    for line in doc.lines() {
        match (&mut current, line.trim_end()) {
            (None, "```sh") => current = Some(String::new()),
            (Some(block), "```") => {
                blocks.push(std::mem::take(block));
                current = None;
            }
            (Some(block), text) => {
                block.push_str(text);
                block.push('\n');
            }
            (None, _) => {}
        }
    }
    blocks
}

fn run_shell(dir: &Path, script: &str) {
    let out = zeo_testkit::run_with_timeout(
        Command::new("bash")
            .args(["-e", "-c", script])
            .current_dir(dir),
        Duration::from_secs(120),
    );
    assert!(out.status.success(), "{script}\n{out:?}");
}

fn issued(dir: &Path, name: &str) -> Issued {
    Issued {
        certificate: dir.join(format!("{name}.pem")),
        key: dir.join(format!("{name}_key.pem")),
        serial: 0,
    }
}

async fn handshake(
    server: &zeo_tls::ServerTls,
    client: &zeo_tls::ClientTls,
    host: &str,
) -> Result<(), FailureReason> {
    let (a, b) = tokio::io::duplex(64 * 1024);
    let serve = async {
        let mut tls = server.accept(a).await?;
        tls.write_all(b"Z5")
            .await
            .map_err(|e| FailureReason::from_handshake_io(&e))?;
        tls.flush()
            .await
            .map_err(|e| FailureReason::from_handshake_io(&e))?;
        let mut byte = [0u8; 1];
        let _ = tls.read(&mut byte).await;
        Ok(())
    };
    let connect = async {
        let mut tls = client
            .connect(b, host)
            .await
            .map_err(|e| FailureReason::Other(e.to_string()))?;
        let mut greeting = [0u8; 2];
        let read = tls.read_exact(&mut greeting).await;
        let _ = tls.shutdown().await;
        read.map(|_| ())
            .map_err(|e| FailureReason::from_handshake_io(&e))
    };
    let (served, connected) = tokio::join!(serve, connect);
    // The server's reason when it refused; else the client's.
    served?;
    connected
}

/// ZEO's own context set-up, both sides, and a handshake between them.
const PYTHON_STRICT: &str = r#"
import socket, ssl, sys, threading
from ZEO.zconfig import ssl_config
d = sys.argv[1]
class Section:
    def __init__(self, **kw):
        self.password_function = None
        self.__dict__.update(kw)
server = ssl_config(Section(certificate=d + '/server.pem', key=d + '/server_key.pem',
                            authenticate=d + '/ca.pem'), True)
client, hostname = ssl_config(Section(certificate=d + '/client.pem', key=d + '/client_key.pem',
                                      authenticate=d + '/ca.pem', check_hostname=True,
                                      server_hostname='zeo.example.com'), False)
assert server.verify_flags & ssl.VERIFY_X509_STRICT
a, b = socket.socketpair()
errors = []
def serve():
    try:
        with server.wrap_socket(a, server_side=True) as s:
            s.sendall(b'Z5')
    except Exception as e:
        errors.append(e)
t = threading.Thread(target=serve)
t.start()
with client.wrap_socket(b, server_hostname=hostname) as c:
    print(c.recv(2).decode(), c.version())
t.join()
print(errors or 'server ok')
"#;

#[tokio::test]
async fn the_documented_commands_make_certificates_both_stacks_accept() {
    let blocks = shell_blocks();
    assert_eq!(blocks.len(), 2, "docs/tls.md has its two sh blocks");
    let dir = tempfile::tempdir().unwrap();
    let d: PathBuf = dir.path().to_owned();
    run_shell(&d, &blocks[0]);

    let ca = d.join("ca.pem");
    let server = server_tls(&issued(&d, "server"), &ca);
    for host in ["zeo.example.com", "localhost", "127.0.0.1"] {
        let client = client_tls(Some(&issued(&d, "client")), &ca, Some(host));
        handshake(&server, &client, host).await.unwrap();
    }

    let out = zeo_testkit::run_with_timeout(
        Command::new(zeo_testkit::python6())
            .arg("-c")
            .arg(PYTHON_STRICT)
            .arg(&d),
        Duration::from_secs(60),
    );
    let stdout = zeo_testkit::stdout_of(&out, "Python's strict verification");
    assert!(stdout.starts_with("Z5 TLSv1."), "{stdout}");
    assert!(stdout.contains("server ok"), "{stdout}");

    // Revocation as documented: the CRL in an authenticate directory.
    run_shell(&d, &blocks[1]);
    let guarded = server_tls(&issued(&d, "server"), &d.join("authenticate"));
    let client = client_tls(Some(&issued(&d, "client")), &ca, Some("localhost"));
    assert_eq!(
        handshake(&guarded, &client, "localhost").await,
        Err(FailureReason::Revoked)
    );
}
