//! Helpers shared by the workspace's tests, above all the interop tests that
//! check our storage and protocol against Python ZODB and ZEO.
//!
//! The Python side lives in two virtual environments that `cargo xtask test`
//! (or `cargo xtask venv`) creates under `target/python`:
//!
//! * `zeo6`: current ZODB and ZEO, found through `ZEO_PYTHON6`;
//! * `zeo5`: ZEO 5.4.1 with ZODB 5, found through `ZEO_PYTHON5`.
//!
//! A test that needs Python fails, never skips, when its venv is missing:
//! a skipped interop test would let CI pass without checking compatibility.
//!
//! ```no_run
//! use zeo_testkit::{python6, run_python, script, TempDir};
//!
//! let dir = TempDir::new().unwrap();
//! let out = run_python(&python6(), &script("fsdump.py"), &["Data.fs"], dir.path());
//! let text = zeo_testkit::stdout_of(&out, "fsdump.py");
//! assert!(text.contains("Trans #"));
//! ```

#![warn(missing_docs)]

pub mod postgres;

use std::ffi::OsStr;
use std::io::Read;
use std::net::{Ipv4Addr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::thread;
use std::time::{Duration, Instant};

pub use serde_json;
pub use tempfile::TempDir;

/// What a test says when a Python venv is missing.
const MISSING_VENV: &str =
    "run `cargo xtask test` (or `cargo xtask venv`) to create the Python test environments";

/// How long [`run_python`] lets a script run before killing it.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(120);

/// The workspace root (the directory holding the root `Cargo.toml`).
pub fn workspace_root() -> PathBuf {
    // This crate sits at <root>/crates/zeo-testkit. The `..`s are resolved
    // here because a venv interpreter finds its venv from its own path, and
    // Python folds `..` lexically, which goes wrong across a symlink.
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join("..");
    std::fs::canonicalize(&root).unwrap_or(root)
}

/// The interpreter of the ZODB 6 / ZEO 6 venv: `$ZEO_PYTHON6`, else
/// `<workspace>/target/python/zeo6/bin/python`.
///
/// # Panics
///
/// When the interpreter does not exist, with a message saying how to
/// create it.
pub fn python6() -> PathBuf {
    venv_python("ZEO_PYTHON6", "zeo6")
}

/// The interpreter of the ZEO 5.4.1 / ZODB 5 venv: `$ZEO_PYTHON5`, else
/// `<workspace>/target/python/zeo5/bin/python`.
///
/// # Panics
///
/// When the interpreter does not exist, with a message saying how to
/// create it.
pub fn python5() -> PathBuf {
    venv_python("ZEO_PYTHON5", "zeo5")
}

/// The interpreter of the RelStorage 4.3 venv (with psycopg2, ZODB and
/// ZEO 6): `$ZEO_PYTHON_RELSTORAGE`, else
/// `<workspace>/target/python/relstorage/bin/python`.
///
/// # Panics
///
/// When the interpreter does not exist, with a message saying how to
/// create it.
pub fn python_relstorage() -> PathBuf {
    venv_python("ZEO_PYTHON_RELSTORAGE", "relstorage")
}

fn venv_python(var: &str, name: &str) -> PathBuf {
    let (python, source) = match std::env::var_os(var) {
        Some(p) if !p.is_empty() => (PathBuf::from(p), format!("${var}")),
        _ => (
            workspace_root()
                .join("target")
                .join("python")
                .join(name)
                .join("bin")
                .join("python"),
            "the default location".to_owned(),
        ),
    };
    assert!(
        python.is_file(),
        "Python venv `{name}` not found at {} ({source}): {MISSING_VENV}",
        python.display()
    );
    python
}

/// `tests/python/<name>` in the workspace: our Python scripts for tests.
///
/// # Panics
///
/// When the script does not exist.
pub fn script(name: &str) -> PathBuf {
    let path = workspace_root().join("tests").join("python").join(name);
    assert!(
        path.is_file(),
        "test script {} does not exist",
        path.display()
    );
    path
}

/// Runs `python script args...` in `cwd` with [`DEFAULT_TIMEOUT`] and
/// returns its exit status and captured output.
///
/// # Panics
///
/// When the script cannot be started or outlives the timeout (it is killed
/// first; the panic message carries what it printed so far).
pub fn run_python<S: AsRef<OsStr>>(
    python: &Path,
    script_path: &Path,
    args: &[S],
    cwd: &Path,
) -> Output {
    run_python_with_timeout(python, script_path, args, cwd, DEFAULT_TIMEOUT)
}

/// [`run_python`] with an explicit timeout.
///
/// # Panics
///
/// As [`run_python`].
pub fn run_python_with_timeout<S: AsRef<OsStr>>(
    python: &Path,
    script_path: &Path,
    args: &[S],
    cwd: &Path,
    timeout: Duration,
) -> Output {
    let mut cmd = Command::new(python);
    cmd.arg(script_path)
        .args(args)
        .current_dir(cwd)
        // Keep tests/python free of __pycache__ and output stable across
        // locales.
        .env("PYTHONDONTWRITEBYTECODE", "1")
        .env("PYTHONIOENCODING", "utf-8");
    run_with_timeout(&mut cmd, timeout)
}

/// Runs any command with captured output, killing it after `timeout`.
///
/// # Panics
///
/// When the command cannot be started or outlives the timeout.
pub fn run_with_timeout(cmd: &mut Command, timeout: Duration) -> Output {
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {cmd:?}: {e}"));
    // Both pipes are drained concurrently: a child blocked on a full stderr
    // pipe would otherwise never exit and look like a timeout.
    let drain = |pipe: Option<Box<dyn Read + Send>>| {
        thread::spawn(move || {
            let mut buf = Vec::new();
            if let Some(mut p) = pipe {
                let _ = p.read_to_end(&mut buf);
            }
            buf
        })
    };
    let stdout = drain(
        child
            .stdout
            .take()
            .map(|p| Box::new(p) as Box<dyn Read + Send>),
    );
    let stderr = drain(
        child
            .stderr
            .take()
            .map(|p| Box::new(p) as Box<dyn Read + Send>),
    );

    let started = Instant::now();
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break status,
            Ok(None) if started.elapsed() >= timeout => {
                let _ = child.kill();
                let _ = child.wait();
                let out = stdout.join().unwrap_or_default();
                let err = stderr.join().unwrap_or_default();
                panic!(
                    "{cmd:?} did not finish within {timeout:?} and was killed\n\
                     --- stdout ---\n{}\n--- stderr ---\n{}",
                    String::from_utf8_lossy(&out),
                    String::from_utf8_lossy(&err)
                );
            }
            // allow-sleep: a child process ends with no event to wait on
            Ok(None) => thread::sleep(Duration::from_millis(20)),
            Err(e) => panic!("waiting for {cmd:?}: {e}"),
        }
    };
    Output {
        status,
        stdout: stdout.join().unwrap_or_default(),
        stderr: stderr.join().unwrap_or_default(),
    }
}

/// Waits, at most `within`, until `ready` holds, checking it every 10 ms;
/// returns whether it did. For state that only another process or thread
/// changes and that announces nothing: a port a child process opens, a
/// server's connection count. Where the code under test sends an event,
/// wait for the event instead.
pub fn wait_until(within: Duration, mut ready: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + within;
    loop {
        if ready() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        // allow-sleep: the one poll of state that announces nothing, bounded
        thread::sleep(Duration::from_millis(10));
    }
}

/// The stdout of a command that must have succeeded, as text.
///
/// # Panics
///
/// When the command failed or printed invalid UTF-8; the message names
/// `what` and carries both output streams.
pub fn stdout_of(output: &Output, what: &str) -> String {
    assert!(
        output.status.success(),
        "{what} failed ({})\n--- stdout ---\n{}\n--- stderr ---\n{}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout.clone())
        .unwrap_or_else(|e| panic!("{what} printed invalid UTF-8: {e}"))
}

/// A `kB` field of `/proc/<pid>/status` (`None`: this process), in KiB:
/// `VmHWM` (peak resident size), `VmPeak` (peak virtual size), `VmRSS`.
///
/// # Panics
///
/// When the file cannot be read (the process is gone) or has no such field.
pub fn proc_status_kib(pid: Option<u32>, field: &str) -> u64 {
    let path = match pid {
        Some(pid) => format!("/proc/{pid}/status"),
        None => "/proc/self/status".to_owned(),
    };
    let status = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
    status
        .lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or_else(|| panic!("no {field} in {path}"))
}

/// Bytes the calling thread has read through system calls so far (`rchar`
/// of `/proc/thread-self/io`), page-cache hits included: what a walk reads,
/// unaffected by other threads of the process.
///
/// # Panics
///
/// When the file cannot be read or has no `rchar` line.
pub fn thread_read_bytes() -> u64 {
    let path = "/proc/thread-self/io";
    let io = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{path}: {e}"));
    io.lines()
        .find_map(|l| l.strip_prefix("rchar:"))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no rchar in {path}"))
}

/// A TCP port on 127.0.0.1 that was free a moment ago.
///
/// The port is released before returning, so another process may take it
/// first; tests that can bind port 0 themselves should prefer that.
pub fn free_port() -> u16 {
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .unwrap_or_else(|e| panic!("cannot bind 127.0.0.1:0: {e}"));
    listener
        .local_addr()
        .unwrap_or_else(|e| panic!("no local address for a bound socket: {e}"))
        .port()
}

/// Writes `dir/zeo.conf` for a `runzeo` listening on `127.0.0.1:port`
/// that serves `dir/Data.fs` with its blobs in `dir/server-blobs`
/// (`<filestorage>` with `blob-dir`, as ZEO's blob tests configure it).
pub fn write_runzeo_blob_config(dir: &Path, port: u16) {
    let conf = format!(
        "<zeo>\n  address 127.0.0.1:{port}\n</zeo>\n<filestorage>\n  path {}\n  blob-dir {}\n</filestorage>\n",
        dir.join("Data.fs").display(),
        dir.join("server-blobs").display()
    );
    std::fs::write(dir.join("zeo.conf"), conf)
        .unwrap_or_else(|e| panic!("cannot write {}/zeo.conf: {e}", dir.display()));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn free_port_is_bindable() {
        let port = free_port();
        assert_ne!(port, 0);
        TcpListener::bind((Ipv4Addr::LOCALHOST, port)).unwrap();
    }

    #[test]
    fn timeout_kills_the_child() {
        let started = Instant::now();
        let result = std::panic::catch_unwind(|| {
            run_with_timeout(Command::new("sleep").arg("30"), Duration::from_millis(300))
        });
        let message = *result.unwrap_err().downcast::<String>().unwrap();
        assert!(message.contains("was killed"), "{message}");
        assert!(started.elapsed() < Duration::from_secs(10));
    }

    #[test]
    fn output_is_captured() {
        let out = run_with_timeout(
            Command::new("sh").args(["-c", "echo out; echo err >&2; exit 3"]),
            DEFAULT_TIMEOUT,
        );
        assert_eq!(out.status.code(), Some(3));
        assert_eq!(out.stdout, b"out\n");
        assert_eq!(out.stderr, b"err\n");
    }

    #[test]
    fn missing_venv_names_the_fix() {
        let err = std::panic::catch_unwind(|| venv_python("ZEO_TESTKIT_NO_SUCH_VAR", "nope"))
            .unwrap_err();
        let message = *err.downcast::<String>().unwrap();
        assert!(message.contains("cargo xtask test"), "{message}");
    }

    #[test]
    fn venvs_hold_the_expected_versions() {
        // Fails (rather than skips) outside `cargo xtask test` on purpose.
        let version = |python: PathBuf| {
            let out = run_with_timeout(
                Command::new(python).args([
                    "-c",
                    "import importlib.metadata as m; print(m.version('ZEO'), m.version('ZODB'))",
                ]),
                DEFAULT_TIMEOUT,
            );
            stdout_of(&out, "version check")
        };
        let v6 = version(python6());
        assert!(v6.starts_with("6."), "zeo6 venv has ZEO/ZODB {v6}");
        let v5 = version(python5());
        assert!(v5.starts_with("5.4.1 5."), "zeo5 venv has ZEO/ZODB {v5}");
    }
}
