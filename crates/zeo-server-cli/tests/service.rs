//! Running under systemd: the real binary tells `NOTIFY_SOCKET` when it is
//! ready and when it stops.

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::net::UnixDatagram;
use std::process::{Command, Stdio};
use std::time::Duration;

use common::binary;

/// The next notification, waiting at most 20 s.
fn next_message(socket: &UnixDatagram) -> String {
    let mut buf = [0u8; 4096];
    let n = socket.recv(&mut buf).expect("a notification within 20 s");
    String::from_utf8(buf[..n].to_vec()).unwrap()
}

#[test]
fn ready_after_binding_and_stopping_on_sigterm_reach_notify_socket() {
    let dir = tempfile::tempdir().unwrap();
    let socket_path = dir.path().join("notify.sock");
    let socket = UnixDatagram::bind(&socket_path).unwrap();
    socket
        .set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    let mut child = Command::new(binary())
        .args([
            "-a",
            "127.0.0.1:0",
            "-f",
            "Data.fs",
            "--metrics",
            "127.0.0.1:0",
        ])
        .current_dir(dir.path())
        .env("NOTIFY_SOCKET", &socket_path)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let pid = child.id();
    let stdout = child.stdout.take().unwrap();
    // The child is waited for on a thread, so that the test bounds how long
    // it waits for the exit.
    let (exited, exit) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = exited.send(child.wait());
    });
    let kill = |sig| {
        // SAFETY: kill(2) on our own child's pid.
        unsafe {
            libc::kill(pid as libc::pid_t, sig);
        }
    };

    let ready = next_message(&socket);
    let lines: Vec<&str> = ready.lines().collect();
    assert_eq!(lines[0], "READY=1", "{ready}");
    assert!(
        lines.contains(&format!("MAINPID={pid}").as_str()),
        "{ready}"
    );
    // READY=1 comes after the addresses were bound: they are already
    // printed, and they accept connections.
    let mut lines = BufReader::new(stdout).lines();
    let first = lines.next().unwrap().unwrap();
    assert!(first.starts_with("listening on 127.0.0.1:"), "{first}");
    let port = first.trim().rsplit(':').next().unwrap();
    std::net::TcpStream::connect(format!("127.0.0.1:{port}")).unwrap();
    let second = lines.next().unwrap().unwrap();
    let metrics = second
        .strip_prefix("metrics listening on ")
        .unwrap_or_else(|| panic!("{second}"));
    let mut scrape = std::net::TcpStream::connect(metrics).unwrap();
    scrape
        .set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    scrape.write_all(b"GET /metrics HTTP/1.1\r\n\r\n").unwrap();
    let mut body = String::new();
    scrape.read_to_string(&mut body).unwrap();
    assert!(body.starts_with("HTTP/1.1 200 OK\r\n"), "{body}");
    assert!(
        body.contains("\nzeo_connected_clients{storage=\"1\"} 0\n"),
        "{body}"
    );

    kill(libc::SIGTERM);
    let stopping = next_message(&socket);
    assert_eq!(stopping.lines().next(), Some("STOPPING=1"), "{stopping}");
    match exit.recv_timeout(Duration::from_secs(20)) {
        Ok(status) => assert!(status.unwrap().success()),
        Err(_) => {
            kill(libc::SIGKILL);
            panic!("zeo-server did not exit after SIGTERM");
        }
    }
}
