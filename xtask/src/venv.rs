//! The two Python virtual environments the interop tests run against.
//!
//! Each venv carries a stamp file holding the exact requirement strings it
//! was installed from. A matching stamp means pip is not run at all, so a
//! warm `cargo xtask test` costs nothing here; a missing or different stamp
//! first asks pip, offline, whether the installed packages already satisfy
//! the requirements (a venv created by hand with the same command only needs
//! stamping), and only then installs from PyPI.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use crate::process;

/// One virtual environment: a directory name and what pip installs into it.
pub struct Venv {
    /// Directory name under the venv root, and the name tests know it by.
    pub name: &'static str,
    /// The environment variable through which tests find its interpreter.
    pub env_var: &'static str,
    /// The requirement strings, exactly as passed to `pip install`.
    pub requirements: &'static [&'static str],
}

/// Current ZODB and ZEO (6.x), the main interop partner, and
/// `prometheus_client`, the reference parser the metrics endpoint's
/// output is checked with.
pub const ZEO6: Venv = Venv {
    name: "zeo6",
    env_var: "ZEO_PYTHON6",
    requirements: &["ZODB", "ZEO", "msgpack", "prometheus_client"],
};

/// ZEO 5, whose protocol version and quirks clients in the field still use.
pub const ZEO5: Venv = Venv {
    name: "zeo5",
    env_var: "ZEO_PYTHON5",
    requirements: &["ZEO==5.4.1", "ZODB<6", "msgpack"],
};

/// RelStorage 4.3 on PostgreSQL (psycopg2), the peer that shares a
/// database with the PostgreSQL backend, with the ZODB and ZEO its
/// `zodbconvert` and `runzeo` run on.
pub const RELSTORAGE: Venv = Venv {
    name: "relstorage",
    env_var: "ZEO_PYTHON_RELSTORAGE",
    requirements: &[
        "RelStorage==4.3.0",
        "psycopg2-binary",
        "ZODB",
        "ZEO",
        "msgpack",
    ],
};

/// Every venv, in the order they are prepared.
pub const ALL: [&Venv; 3] = [&ZEO6, &ZEO5, &RELSTORAGE];

/// The file, inside a venv, that records what it was installed from.
const STAMP: &str = ".zeo-requirements";

/// Creating a venv is local work; anything slower than this is stuck.
const CREATE_LIMIT: Duration = Duration::from_secs(300);
/// The offline "already satisfied?" check touches no network.
const CHECK_LIMIT: Duration = Duration::from_secs(120);
/// A full install downloads a few megabytes; pip's own per-request timeout
/// and retries handle flaky connections, this bounds the whole.
const INSTALL_LIMIT: Duration = Duration::from_secs(900);

/// The interpreter that creates venvs: `$PYTHON` or `python3`.
fn base_python() -> String {
    std::env::var("PYTHON").unwrap_or_else(|_| "python3".to_owned())
}

impl Venv {
    /// The venv directory under `root`.
    pub fn dir(&self, root: &Path) -> PathBuf {
        root.join(self.name)
    }

    /// The venv's interpreter.
    pub fn python(&self, root: &Path) -> PathBuf {
        self.dir(root).join("bin").join("python")
    }

    fn stamp_text(&self) -> String {
        let mut text = String::new();
        for r in self.requirements {
            text.push_str(r);
            text.push('\n');
        }
        text
    }

    /// Makes sure the venv exists with its requirements installed and
    /// returns its interpreter.
    pub fn ensure(&self, root: &Path) -> Result<PathBuf, String> {
        let dir = self.dir(root);
        let python = self.python(root);
        let stamp = dir.join(STAMP);
        let wanted = self.stamp_text();

        let usable = process::succeeds_quietly(Command::new(&python).args(["-c", "import sys"]))
            .unwrap_or(false);
        if usable && fs::read_to_string(&stamp).ok().as_deref() == Some(wanted.as_str()) {
            println!("{}: up to date ({})", self.name, python.display());
            return Ok(python);
        }

        if !usable {
            println!("{}: creating venv at {}", self.name, dir.display());
            fs::create_dir_all(root).map_err(|e| format!("creating {}: {e}", root.display()))?;
            // --clear: a half-made or moved venv whose interpreter no longer
            // runs is rebuilt rather than patched.
            process::run_with_deadline(
                Command::new(base_python())
                    .arg("-m")
                    .arg("venv")
                    .arg("--clear")
                    .arg(&dir),
                CREATE_LIMIT,
            )?;
        } else {
            println!(
                "{}: no matching stamp; checking installed packages offline",
                self.name
            );
            let satisfied = process::run_with_deadline(
                Command::new(&python)
                    .args(["-m", "pip", "install", "--no-index", "--quiet"])
                    .args(["--disable-pip-version-check", "--no-input"])
                    .args(self.requirements),
                CHECK_LIMIT,
            );
            if satisfied.is_ok() {
                write_stamp(&stamp, &wanted)?;
                println!("{}: requirements already satisfied; stamped", self.name);
                return Ok(python);
            }
        }

        println!(
            "{}: installing {} from PyPI",
            self.name,
            self.requirements.join(" ")
        );
        process::run_with_deadline(
            Command::new(&python)
                .args([
                    "-m",
                    "pip",
                    "install",
                    "--quiet",
                    "--disable-pip-version-check",
                ])
                .args(["--no-input", "--timeout", "60", "--retries", "5"])
                .args(self.requirements),
            INSTALL_LIMIT,
        )?;
        write_stamp(&stamp, &wanted)?;
        println!("{}: ready ({})", self.name, python.display());
        Ok(python)
    }
}

/// Writes the stamp through a temporary file, so that an interrupted run
/// never leaves a stamp that claims more than was installed.
fn write_stamp(stamp: &Path, text: &str) -> Result<(), String> {
    let tmp = stamp.with_extension("tmp");
    fs::write(&tmp, text).map_err(|e| format!("writing {}: {e}", tmp.display()))?;
    fs::rename(&tmp, stamp).map_err(|e| format!("renaming {}: {e}", tmp.display()))
}
