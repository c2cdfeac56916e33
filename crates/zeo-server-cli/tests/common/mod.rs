//! Starting the `zeo-server` binary for tests.
#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// The binary under test.
pub fn binary() -> &'static str {
    env!("CARGO_BIN_EXE_zeo-server")
}

/// A running `zeo-server`, killed when dropped.
pub struct ServerProcess {
    pub child: Child,
    /// Every "listening on" address it printed.
    pub addrs: Vec<String>,
    stderr: std::thread::JoinHandle<String>,
}

impl ServerProcess {
    /// Starts the binary in `cwd` with `args` and waits (10 s at most) for
    /// it to print where it listens.
    pub fn start(cwd: &Path, args: &[&str]) -> Self {
        Self::start_program(cwd, binary(), args)
    }

    /// Like [`ServerProcess::start`], but runs `program` (e.g. `prlimit`
    /// wrapping the binary, which it execs into, keeping the pid).
    pub fn start_program(cwd: &Path, program: &str, args: &[&str]) -> Self {
        let mut child = Command::new(program)
            .args(args)
            .current_dir(cwd)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start zeo-server");
        let stdout = child.stdout.take().unwrap();
        let mut err_pipe = child.stderr.take().unwrap();
        let stderr = std::thread::spawn(move || {
            let mut s = String::new();
            let _ = err_pipe.read_to_string(&mut s);
            s
        });
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let mut addrs = Vec::new();
        let deadline = Instant::now() + Duration::from_secs(10);
        while addrs.is_empty() {
            let left = deadline.saturating_duration_since(Instant::now());
            match rx.recv_timeout(left) {
                Ok(line) => {
                    if let Some(a) = line.strip_prefix("listening on ") {
                        addrs.push(a.to_owned());
                    }
                }
                Err(_) => {
                    let _ = child.kill();
                    let err = stderr.join().unwrap_or_default();
                    panic!("zeo-server did not report its address; stderr:\n{err}");
                }
            }
        }
        // Give multi-address servers a moment to print the rest.
        while let Ok(line) = rx.recv_timeout(Duration::from_millis(100)) {
            if let Some(a) = line.strip_prefix("listening on ") {
                addrs.push(a.to_owned());
            }
        }
        ServerProcess {
            child,
            addrs,
            stderr,
        }
    }

    /// The first TCP address.
    pub fn addr(&self) -> SocketAddr {
        self.addrs
            .iter()
            .find_map(|a| a.parse().ok())
            .expect("a TCP address")
    }

    /// The port of the first TCP address.
    pub fn port(&self) -> u16 {
        self.addr().port()
    }

    /// Sends a signal to the process.
    pub fn signal(&self, sig: libc::c_int) {
        // SAFETY: kill(2) on our own child's pid.
        unsafe {
            libc::kill(self.child.id() as libc::pid_t, sig);
        }
    }

    /// Waits (10 s at most) for the process to exit; returns its status and
    /// what it wrote to stderr.
    pub fn wait(mut self) -> (ExitStatus, String) {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                let stderr = std::mem::replace(&mut self.stderr, std::thread::spawn(String::new));
                return (status, stderr.join().unwrap_or_default());
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                panic!("zeo-server did not exit");
            }
            // allow-sleep: not yet on a paused clock or an awaited event
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Adds `user` to the password database `zeo.conf` in `dir` names, with
/// `zeo-server passwd -C zeo.conf`.
pub fn add_user(dir: &Path, user: &str, password: &str) {
    let out = Command::new(binary())
        .args(["passwd", "-C", "zeo.conf", user, password])
        .current_dir(dir)
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
}

/// Asks a server `ruok` and returns the JSON text.
pub fn ruok(addr: SocketAddr) -> String {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut greeting = [0u8; 6];
    s.read_exact(&mut greeting).unwrap();
    s.write_all(b"\0\0\0\x04ruok").unwrap();
    let mut len = [0u8; 4];
    s.read_exact(&mut len).unwrap();
    let mut body = vec![0u8; u32::from_be_bytes(len) as usize];
    s.read_exact(&mut body).unwrap();
    String::from_utf8(body).unwrap()
}
