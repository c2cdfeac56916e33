//! Starting the `zeo-server` binary for tests.
#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
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
    /// Everything it wrote to stderr, sent when the pipe closes: when
    /// the process has exited.
    stderr: mpsc::Receiver<String>,
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
        let (err_tx, stderr) = mpsc::channel();
        std::thread::spawn(move || {
            let mut s = String::new();
            let _ = err_pipe.read_to_string(&mut s);
            let _ = err_tx.send(s);
        });
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        // Every bound address, up to the `ready` line that ends them.
        let mut addrs = Vec::new();
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match rx.recv_timeout(left) {
                Ok(line) if line == "ready" => break,
                Ok(line) => {
                    if let Some(a) = line.strip_prefix("listening on ") {
                        addrs.push(a.to_owned());
                    }
                }
                Err(_) => {
                    let _ = child.kill();
                    let err = stderr.recv().unwrap_or_default();
                    panic!("zeo-server did not report ready; stderr:\n{err}");
                }
            }
        }
        assert!(!addrs.is_empty(), "zeo-server reported no address");
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
        // Its stderr closes when it exits: that is the event waited for.
        match self.stderr.recv_timeout(Duration::from_secs(10)) {
            Ok(stderr) => (self.child.wait().unwrap(), stderr),
            Err(_) => {
                let _ = self.child.kill();
                panic!("zeo-server did not exit");
            }
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

/// Waits (at most `patience`) until `path` exists, woken by inotify on its
/// directory rather than by polling; `give_up` is asked every half second
/// (e.g. whether the process that should create the file has ended).
/// Returns whether the file appeared.
pub fn wait_for_file(path: &Path, patience: Duration, give_up: impl Fn() -> bool) -> bool {
    use std::os::unix::ffi::OsStrExt;
    let dir = path.parent().filter(|d| !d.as_os_str().is_empty());
    let dir = std::ffi::CString::new(dir.unwrap_or(Path::new(".")).as_os_str().as_bytes()).unwrap();
    // SAFETY: plain system calls on a descriptor this function owns.
    let fd = unsafe { libc::inotify_init1(libc::IN_CLOEXEC | libc::IN_NONBLOCK) };
    assert!(fd >= 0, "inotify_init1 failed");
    let mask = libc::IN_CREATE | libc::IN_MOVED_TO;
    // SAFETY: `dir` is a valid C string; `fd` is ours.
    let watch = unsafe { libc::inotify_add_watch(fd, dir.as_ptr(), mask) };
    assert!(watch >= 0, "inotify_add_watch failed");
    let deadline = Instant::now() + patience;
    let mut buf = [0u8; 4096];
    // Checked after the watch is in place, so no creation is missed.
    let found = loop {
        if path.exists() {
            break true;
        }
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() || give_up() {
            break path.exists();
        }
        let slice = left.min(Duration::from_millis(500)).as_millis() as libc::c_int;
        let mut pfd = libc::pollfd {
            fd,
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: one valid pollfd; the events read are discarded.
        unsafe {
            libc::poll(&mut pfd, 1, slice.max(1));
            while libc::read(fd, buf.as_mut_ptr().cast(), buf.len()) > 0 {}
        }
    };
    // SAFETY: closing the descriptor opened above.
    unsafe { libc::close(fd) };
    found
}

/// Every blob file under `dir` (path relative to it, bytes), sorted;
/// temporary files excluded.
pub fn blob_files(dir: &Path) -> Vec<(PathBuf, Vec<u8>)> {
    let mut found = Vec::new();
    let mut pending = vec![dir.to_path_buf()];
    while let Some(next) = pending.pop() {
        for entry in std::fs::read_dir(&next).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                if path.file_name() != Some("tmp".as_ref()) {
                    pending.push(path);
                }
            } else if path.extension() == Some("blob".as_ref()) {
                let bytes = std::fs::read(&path).unwrap();
                found.push((path.strip_prefix(dir).unwrap().to_path_buf(), bytes));
            }
        }
        assert!(found.len() < 10_000, "runaway walk under {}", dir.display());
    }
    found.sort();
    found
}
