//! The PostgreSQL server the backend's tests run against.
//!
//! The test command installs Debian's `postgresql` package when its server
//! programs are missing, points the tests at a throwaway cluster directory
//! under `target/` (the tests start the cluster on first use, see
//! `zeo_testkit::postgres`), and stops and removes that cluster when the run
//! ends, whatever its outcome.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use crate::process;

/// apt downloads a few tens of megabytes.
const INSTALL_LIMIT: Duration = Duration::from_secs(900);
/// pg_ctl's own wait is 60 s.
const STOP_LIMIT: Duration = Duration::from_secs(90);

/// The newest installed `/usr/lib/postgresql/<major>/bin`, if any.
fn installed_bin() -> Option<PathBuf> {
    let mut majors: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .ok()?
        .flatten()
        .filter_map(|e| {
            let major = e.file_name().to_str()?.parse::<u32>().ok()?;
            let bin = e.path().join("bin");
            bin.join("initdb").is_file().then_some((major, bin))
        })
        .collect();
    majors.sort();
    majors.pop().map(|(_, bin)| bin)
}

/// Makes sure PostgreSQL's server programs are installed; installs the
/// distribution's package when they are not (needs root and apt).
pub fn ensure_installed() -> Result<PathBuf, String> {
    process::header("PostgreSQL");
    if let Some(bin) = installed_bin() {
        println!("PostgreSQL server programs in {}", bin.display());
        return Ok(bin);
    }
    println!("PostgreSQL is not installed; installing the `postgresql` package");
    process::run_with_deadline(
        Command::new("apt-get").args(["update", "-q"]),
        INSTALL_LIMIT,
    )?;
    process::run_with_deadline(
        Command::new("apt-get")
            .args([
                "install",
                "-y",
                "-q",
                "--no-install-recommends",
                "postgresql",
            ])
            .env("DEBIAN_FRONTEND", "noninteractive"),
        INSTALL_LIMIT,
    )?;
    installed_bin().ok_or_else(|| {
        "the `postgresql` package installed no /usr/lib/postgresql/<major>/bin/initdb".to_owned()
    })
}

/// The cluster directory the tests of this run use.
pub fn cluster_dir(root: &Path) -> PathBuf {
    root.join("target").join("pg-cluster")
}

/// Stops the run's cluster if the tests started it, and deletes it.
pub fn remove_cluster(bin: &Path, dir: &Path) {
    let data = dir.join("data");
    if data.join("postmaster.pid").is_file() {
        let mut cmd = pg_program(bin, "pg_ctl");
        cmd.arg("-D")
            .arg(&data)
            .args(["-w", "-t", "60", "-m", "immediate", "stop"]);
        if let Err(e) = process::run_with_deadline(&mut cmd, STOP_LIMIT) {
            println!("stopping the test cluster: {e}");
        }
    }
    let _ = std::fs::remove_dir_all(dir);
    let _ = std::fs::remove_file(dir.with_extension("lock"));
}

/// A PostgreSQL server program from `bin`, run as `postgres` when this
/// process is root (initdb refuses root).
pub fn pg_program(bin: &Path, program: &str) -> Command {
    if is_root() {
        let mut cmd = Command::new("runuser");
        cmd.args(["-u", "postgres", "--"]).arg(bin.join(program));
        cmd
    } else {
        Command::new(bin.join(program))
    }
}

/// Whether this process runs as root (/proc/self belongs to its
/// effective user).
pub fn is_root() -> bool {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata("/proc/self")
        .map(|m| m.uid() == 0)
        .unwrap_or(false)
}
