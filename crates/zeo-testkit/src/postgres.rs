//! A throwaway PostgreSQL cluster for tests, and one fresh database per test.
//!
//! The cluster lives in `$ZEO_PG_CLUSTER_DIR` (default
//! `<workspace>/target/pg-cluster`), listens only on a Unix socket in that
//! directory, and runs with `fsync=off`: it holds nothing worth keeping.
//! The first test that needs it starts it (under a file lock, so concurrent
//! test processes start it once); later tests and processes reuse it.
//! `cargo xtask test` stops and removes it at the end of the run.
//!
//! Each [`TestDatabase`] is a database of its own, created empty and dropped
//! when the value is dropped, so tests never see each other's rows.
//!
//! There is no "skip when PostgreSQL is missing": a test that needs the
//! database panics with the reason, as every real-peer test does.

use std::fs::{self, OpenOptions};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use crate::{run_with_timeout, workspace_root};

/// How long `initdb` and `pg_ctl start` may take on a busy machine.
const START_LIMIT: Duration = Duration::from_secs(120);
/// `psql` creating or dropping one database.
const SQL_LIMIT: Duration = Duration::from_secs(60);

/// The cluster directory: `$ZEO_PG_CLUSTER_DIR` or `target/pg-cluster`.
pub fn cluster_dir() -> PathBuf {
    match std::env::var_os("ZEO_PG_CLUSTER_DIR") {
        Some(d) if !d.is_empty() => PathBuf::from(d),
        _ => workspace_root().join("target").join("pg-cluster"),
    }
}

/// The directory of PostgreSQL's server programs (`initdb`, `pg_ctl`):
/// `$ZEO_PG_BIN`, else the newest `/usr/lib/postgresql/<major>/bin`.
///
/// # Panics
///
/// When none is installed, saying how to install it.
pub fn bin_dir() -> PathBuf {
    if let Some(d) = std::env::var_os("ZEO_PG_BIN").filter(|d| !d.is_empty()) {
        return PathBuf::from(d);
    }
    let mut majors: Vec<(u32, PathBuf)> = fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let major = e.file_name().to_str()?.parse::<u32>().ok()?;
            let bin = e.path().join("bin");
            bin.join("initdb").is_file().then_some((major, bin))
        })
        .collect();
    majors.sort();
    match majors.pop() {
        Some((_, bin)) => bin,
        None => panic!(
            "PostgreSQL server programs not found under /usr/lib/postgresql \
             (install the `postgresql` package, or set ZEO_PG_BIN); \
             `cargo xtask test` installs it when missing"
        ),
    }
}

/// Whether the tests run as root (server programs then run as `postgres`).
pub fn running_as_root() -> bool {
    // /proc/self belongs to the process's effective user.
    fs::metadata("/proc/self")
        .map(|m| m.uid() == 0)
        .unwrap_or(false)
}

/// A command for a server program, run as `postgres` when we are root
/// (initdb refuses to run as root).
pub fn pg_command(program: &str) -> Command {
    let path = bin_dir().join(program);
    if running_as_root() {
        let mut cmd = Command::new("runuser");
        cmd.args(["-u", "postgres", "--"]).arg(path);
        cmd
    } else {
        Command::new(path)
    }
}

fn chown_postgres(path: &Path) {
    if running_as_root() {
        let out = run_with_timeout(
            Command::new("chown")
                .args(["-R", "postgres:postgres"])
                .arg(path),
            SQL_LIMIT,
        );
        assert!(
            out.status.success(),
            "chown postgres {}: {}",
            path.display(),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

fn check(out: &std::process::Output, what: &str) {
    assert!(
        out.status.success(),
        "{what} failed ({}):\n{}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The running test cluster: its socket directory is the `host` of a DSN.
#[derive(Debug, Clone)]
pub struct Cluster {
    dir: PathBuf,
}

impl Cluster {
    /// Starts the cluster when it is not running (creating it when it does
    /// not exist) and returns it.
    ///
    /// # Panics
    ///
    /// When PostgreSQL is not installed or the cluster cannot start.
    pub fn ensure() -> Cluster {
        let dir = cluster_dir();
        fs::create_dir_all(&dir).expect("create the cluster directory");
        // Lock outside the directory postgres owns, so that chown and the
        // lock file never meet.
        let lock_path = dir.with_extension("lock");
        let lock = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .expect("open the cluster lock file");
        fs4::FileExt::lock(&lock).expect("lock the cluster");
        let cluster = Cluster { dir };
        cluster.start_locked();
        drop(lock);
        cluster
    }

    fn data_dir(&self) -> PathBuf {
        self.dir.join("data")
    }

    /// The directory holding the server's Unix socket: a DSN's `host`.
    pub fn socket_dir(&self) -> &Path {
        &self.dir
    }

    /// A libpq DSN for `dbname` on this cluster.
    pub fn dsn(&self, dbname: &str) -> String {
        format!("host={} dbname={dbname} user=postgres", self.dir.display())
    }

    fn is_running(&self) -> bool {
        if !self.data_dir().join("PG_VERSION").is_file() {
            return false;
        }
        let out = run_with_timeout(
            pg_command("pg_ctl")
                .arg("-D")
                .arg(self.data_dir())
                .arg("status"),
            SQL_LIMIT,
        );
        out.status.success()
    }

    fn start_locked(&self) {
        if self.is_running() {
            return;
        }
        chown_postgres(&self.dir);
        if !self.data_dir().join("PG_VERSION").is_file() {
            let _ = fs::remove_dir_all(self.data_dir());
            self.initdb();
        }
        // A crashed earlier run may have left its pid file behind; pg_ctl
        // copes with a stale one, so it stays.
        self.pg_ctl_start(
            "-c listen_addresses='' -c fsync=off -c full_page_writes=off \
             -c synchronous_commit=off -c max_connections=200",
        );
    }

    /// Creates the data directory.
    fn initdb(&self) {
        let out = run_with_timeout(
            pg_command("initdb").arg("-D").arg(self.data_dir()).args([
                "-A",
                "trust",
                "-U",
                "postgres",
                "--no-sync",
                "-E",
                "UTF8",
            ]),
            START_LIMIT,
        );
        check(&out, "initdb");
    }

    /// Starts the server with its socket in the cluster directory and
    /// `settings` (`-c name=value …`), waiting until it accepts sessions.
    fn pg_ctl_start(&self, settings: &str) {
        let options = format!("-k {} {settings}", self.dir.display());
        let out = run_with_timeout(
            pg_command("pg_ctl")
                .arg("-D")
                .arg(self.data_dir())
                .args(["-w", "-t", "60", "-l"])
                .arg(self.dir.join("server.log"))
                .args(["-o", &options, "start"]),
            START_LIMIT,
        );
        check(&out, "pg_ctl start");
    }

    /// Runs one SQL statement as `postgres` on database `postgres`.
    ///
    /// # Panics
    ///
    /// When psql fails.
    pub fn psql(&self, sql: &str) -> String {
        let out = run_with_timeout(
            Command::new("psql")
                .args(["-X", "-q", "-t", "-A", "-v", "ON_ERROR_STOP=1", "-h"])
                .arg(&self.dir)
                .args(["-U", "postgres", "-d", "postgres", "-c", sql]),
            SQL_LIMIT,
        );
        check(&out, &format!("psql -c {sql:?}"));
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Stops the cluster (fast shutdown). For tests that need the database
    /// gone, such as restart tests; [`Cluster::ensure`] starts it again.
    pub fn stop(&self) {
        self.stop_with(Shutdown::Fast);
    }

    /// Stops the cluster the way `mode` says and waits until it is down.
    ///
    /// # Panics
    ///
    /// When `pg_ctl stop` fails.
    pub fn stop_with(&self, mode: Shutdown) {
        let out = run_with_timeout(
            pg_command("pg_ctl").arg("-D").arg(self.data_dir()).args([
                "-w",
                "-t",
                "60",
                "-m",
                mode.as_pg_ctl(),
                "stop",
            ]),
            START_LIMIT,
        );
        check(&out, "pg_ctl stop");
    }
}

/// How `pg_ctl stop` shuts a cluster down.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shutdown {
    /// Sessions are terminated, open transactions rolled back, and a
    /// checkpoint written: what an operator's restart does.
    Fast,
    /// Every process quits at once, with no checkpoint; the next start
    /// recovers from the WAL: the nearest thing to a crash of the host's
    /// database (committed transactions survive, since the WAL is
    /// written before a commit returns on a [`PrivateCluster`]).
    Immediate,
}

impl Shutdown {
    fn as_pg_ctl(self) -> &'static str {
        match self {
            Shutdown::Fast => "fast",
            Shutdown::Immediate => "immediate",
        }
    }
}

/// A cluster of one test's own, in a temporary directory, for tests that
/// stop, crash or replicate the database (the shared [`Cluster`] must
/// stay up for every other test). Unlike the shared cluster, a commit
/// returns only once its WAL is written (`synchronous_commit` on), so
/// that an immediate shutdown loses no acknowledged commit. Stopped
/// (immediately) and removed when dropped.
///
/// ```
/// use zeo_testkit::postgres::{PrivateCluster, Shutdown};
///
/// let pg = PrivateCluster::start();
/// let dsn = pg.create_database("zodb");
/// pg.cluster().psql("CREATE TABLE kept (n int); INSERT INTO kept VALUES (1)");
/// pg.restart(Shutdown::Immediate);
/// assert!(dsn.contains("dbname=zodb"));
/// assert_eq!(pg.cluster().psql("SELECT count(*) FROM kept").trim(), "1");
/// ```
#[derive(Debug)]
pub struct PrivateCluster {
    cluster: Cluster,
    /// Settings given to [`PrivateCluster::start_with`], after the usual
    /// ones, at every start.
    settings: String,
    /// Held for its removal on drop.
    _dir: tempfile::TempDir,
}

/// The settings of a private cluster (and of its replicas).
const PRIVATE_OPTIONS: &str = "-c listen_addresses='' -c fsync=off -c full_page_writes=off \
     -c max_connections=100 -c wal_level=replica -c max_wal_senders=5 -c hot_standby=on";

impl PrivateCluster {
    /// Creates and starts a cluster in a new temporary directory.
    ///
    /// # Panics
    ///
    /// When PostgreSQL is not installed or the cluster cannot start.
    pub fn start() -> PrivateCluster {
        PrivateCluster::start_with("")
    }

    /// [`PrivateCluster::start`] with `settings` (`-p PORT`, `-c
    /// name=value …`) after the usual ones, which they override (the last
    /// setting of a name wins): a TCP listener, TLS, and so on. Kept for
    /// every later start.
    ///
    /// # Panics
    ///
    /// When PostgreSQL is not installed or the cluster cannot start.
    pub fn start_with(settings: &str) -> PrivateCluster {
        let dir = private_dir();
        let cluster = Cluster {
            dir: dir.path().to_owned(),
        };
        cluster.initdb();
        let private = PrivateCluster {
            cluster,
            settings: settings.to_owned(),
            _dir: dir,
        };
        private.start_again();
        private
    }

    /// A hot standby of `primary`, streaming from it: a base backup taken
    /// with `pg_basebackup -R` (an immediate checkpoint, not a spread one)
    /// into a new temporary directory, started
    /// with its own socket. Read-only; it replays what the primary
    /// commits, a little later.
    ///
    /// # Panics
    ///
    /// When the backup or the start fails.
    pub fn replica_of(primary: &PrivateCluster) -> PrivateCluster {
        let dir = private_dir();
        let cluster = Cluster {
            dir: dir.path().to_owned(),
        };
        let out = run_with_timeout(
            pg_command("pg_basebackup")
                .arg("-D")
                .arg(cluster.data_dir())
                .arg("-h")
                .arg(primary.cluster.socket_dir())
                .args([
                    "-U",
                    "postgres",
                    "-R",
                    "-X",
                    "stream",
                    "--no-sync",
                    "--checkpoint=fast",
                ]),
            START_LIMIT,
        );
        check(&out, "pg_basebackup");
        let replica = PrivateCluster {
            cluster,
            settings: String::new(),
            _dir: dir,
        };
        replica.start_again();
        replica
    }

    /// The cluster: its socket directory, DSNs, `psql`.
    pub fn cluster(&self) -> &Cluster {
        &self.cluster
    }

    /// Creates database `name` and returns its DSN.
    ///
    /// # Panics
    ///
    /// When psql fails.
    pub fn create_database(&self, name: &str) -> String {
        self.cluster.psql(&format!("CREATE DATABASE {name}"));
        self.cluster.dsn(name)
    }

    /// A DSN for database `name` (whether or not it exists).
    pub fn dsn(&self, name: &str) -> String {
        self.cluster.dsn(name)
    }

    /// Stops the cluster the way `mode` says.
    pub fn stop(&self, mode: Shutdown) {
        self.cluster.stop_with(mode);
    }

    /// Starts the (stopped) cluster and waits until it accepts
    /// connections (after crash recovery, when it was stopped
    /// immediately).
    ///
    /// # Panics
    ///
    /// When `pg_ctl start` fails.
    pub fn start_again(&self) {
        self.cluster
            .pg_ctl_start(&format!("{PRIVATE_OPTIONS} {}", self.settings));
    }

    /// Stops the cluster the way `mode` says and starts it again.
    pub fn restart(&self, mode: Shutdown) {
        self.stop(mode);
        self.start_again();
    }

    /// The primary's current WAL position (an LSN such as `0/3000148`).
    pub fn current_lsn(&self) -> String {
        self.cluster
            .psql("SELECT pg_current_wal_lsn()")
            .trim()
            .to_owned()
    }

    /// Waits (at most `patience`) until this standby has replayed the
    /// WAL up to `lsn`; returns whether it has. The standby offers no
    /// event to wait on, so it is asked every 20 ms.
    pub fn wait_replayed(&self, lsn: &str, patience: Duration) -> bool {
        let deadline = std::time::Instant::now() + patience;
        let sql = format!("SELECT pg_last_wal_replay_lsn() >= '{lsn}'::pg_lsn");
        loop {
            if self.cluster.psql(&sql).trim() == "t" {
                return true;
            }
            if std::time::Instant::now() >= deadline {
                return false;
            }
            // allow-sleep: a standby announces no replay progress, bounded by `patience`
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for PrivateCluster {
    fn drop(&mut self) {
        let _ = run_with_timeout(
            pg_command("pg_ctl")
                .arg("-D")
                .arg(self.cluster.data_dir())
                .args(["-w", "-t", "60", "-m", "immediate", "stop"]),
            START_LIMIT,
        );
    }
}

/// A new temporary directory the `postgres` user may use.
fn private_dir() -> tempfile::TempDir {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::Builder::new()
        .prefix("zeo-pg-")
        .tempdir()
        .expect("a temporary directory");
    fs::set_permissions(dir.path(), fs::Permissions::from_mode(0o755))
        .expect("open the temporary directory to postgres");
    chown_postgres(dir.path());
    dir
}

/// A database of its own on the test cluster, dropped with the value.
#[derive(Debug)]
pub struct TestDatabase {
    cluster: Cluster,
    name: String,
}

static COUNTER: AtomicU32 = AtomicU32::new(0);

impl TestDatabase {
    /// Creates an empty database named after `label`, the process and a
    /// counter (names stay unique across parallel test processes).
    ///
    /// # Panics
    ///
    /// When the cluster cannot start or the database cannot be created.
    pub fn create(label: &str) -> TestDatabase {
        let cluster = Cluster::ensure();
        let clean: String = label
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() {
                    c.to_ascii_lowercase()
                } else {
                    '_'
                }
            })
            .take(30)
            .collect();
        let name = format!(
            "t_{clean}_{}_{}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::Relaxed)
        );
        cluster.psql(&format!("DROP DATABASE IF EXISTS {name}"));
        cluster.psql(&format!("CREATE DATABASE {name}"));
        TestDatabase { cluster, name }
    }

    /// The database's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// A libpq DSN for this database.
    pub fn dsn(&self) -> String {
        self.cluster.dsn(&self.name)
    }

    /// The cluster the database lives on.
    pub fn cluster(&self) -> &Cluster {
        &self.cluster
    }
}

impl Drop for TestDatabase {
    fn drop(&mut self) {
        // Best effort: a database left behind by a panicking test goes with
        // the cluster at the end of the run.
        let _ = run_with_timeout(
            Command::new("psql")
                .args(["-X", "-q", "-h"])
                .arg(&self.cluster.dir)
                .args(["-U", "postgres", "-d", "postgres", "-c"])
                .arg(format!(
                    "DROP DATABASE IF EXISTS {} WITH (FORCE)",
                    self.name
                )),
            SQL_LIMIT,
        );
    }
}

/// Removes the test cluster: stops it if it runs, then deletes its
/// directory. What `cargo xtask test` does at the end of a run.
pub fn remove_cluster(dir: &Path) {
    let cluster = Cluster {
        dir: dir.to_owned(),
    };
    if cluster.is_running() {
        cluster.stop();
    }
    let _ = fs::remove_dir_all(dir);
    let _ = fs::remove_file(dir.with_extension("lock"));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_test_database_is_created_empty_and_dropped() {
        let db = TestDatabase::create("testkit smoke");
        let cluster = db.cluster().clone();
        let name = db.name().to_owned();
        let found = cluster.psql(&format!(
            "SELECT count(*) FROM pg_database WHERE datname = '{name}'"
        ));
        assert_eq!(found.trim(), "1");
        drop(db);
        let found = cluster.psql(&format!(
            "SELECT count(*) FROM pg_database WHERE datname = '{name}'"
        ));
        assert_eq!(found.trim(), "0");
    }
}
