//! PostgreSQL figures: loads and commits through zeo-server serving a
//! RelStorage database, beside Python RelStorage using the same database
//! directly (`tests/python/bench_relstorage.py`).
//!
//! A throwaway PostgreSQL cluster of its own (Unix socket only, durable:
//! `fsync` stays on) holds one database. zeo-server serves it; the objects
//! are written once through zeo-server and read by every side, since both
//! use RelStorage's schema. Measured, for each client count: the Rust
//! client and the stock Python ZEO client through zeo-server, and
//! RelStorage in the Python process with its local cache off (so every
//! load reaches the database, as the ZEO clients' zero-size caches make
//! every load reach the server).

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use super::{capture, collect, raised_fd_limit, wait_listening, with_logs, Scratch};
use crate::postgres::{is_root, pg_program};
use crate::process;

/// The workloads measured on every side (`ping` has no RelStorage meaning).
const WORKLOADS: &str = "load,commit,commit100";

/// What the PostgreSQL runs need.
pub(super) struct Inputs<'a> {
    pub server_bin: &'a Path,
    pub client_bin: &'a Path,
    /// The ZEO 6 venv's Python, for the Python ZEO client.
    pub zeo_python: &'a Path,
    /// The RelStorage venv's Python.
    pub relstorage_python: &'a Path,
    pub root: &'a Path,
    pub dir: &'a Path,
    pub duration: f64,
    pub objects: u64,
    pub clients: &'a str,
}

/// `results[(side, client, workload, clients)] = (ops/s, p50 µs)`.
pub(super) type Results = BTreeMap<(String, String, String, usize), (f64, f64)>;

/// A throwaway cluster in the scratch directory, on a Unix socket only,
/// stopped when dropped.
pub(super) struct Cluster {
    bin: PathBuf,
    dir: PathBuf,
}

impl Cluster {
    /// initdb and start in `dir`, with `settings` (`-c name=value ...`)
    /// beyond the socket-only listening.
    pub(super) fn start(bin: PathBuf, dir: PathBuf, settings: &str) -> Result<Cluster, String> {
        fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        if is_root() {
            capture(
                Command::new("chown")
                    .args(["-R", "postgres:postgres"])
                    .arg(&dir),
                Duration::from_secs(60),
            )?;
        }
        let data = dir.join("data");
        capture(
            pg_program(&bin, "initdb").arg("-D").arg(&data).args([
                "-A",
                "trust",
                "-U",
                "postgres",
                "--no-sync",
                "-E",
                "UTF8",
            ]),
            Duration::from_secs(120),
        )?;
        let options = format!("-k {} -c listen_addresses='' {settings}", dir.display());
        capture(
            pg_program(&bin, "pg_ctl")
                .arg("-D")
                .arg(&data)
                .args(["-w", "-t", "60", "-l"])
                .arg(dir.join("server.log"))
                .args(["-o", &options, "start"]),
            Duration::from_secs(120),
        )?;
        Ok(Cluster { bin, dir })
    }

    pub(super) fn dsn(&self, dbname: &str) -> String {
        format!("host={} dbname={dbname} user=postgres", self.dir.display())
    }

    pub(super) fn create_database(&self, name: &str) -> Result<(), String> {
        capture(
            Command::new("psql")
                .args(["-X", "-q", "-v", "ON_ERROR_STOP=1", "-h"])
                .arg(&self.dir)
                .args(["-U", "postgres", "-d", "postgres", "-c"])
                .arg(format!("CREATE DATABASE {name}")),
            Duration::from_secs(60),
        )
        .map(drop)
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        let _ = capture(
            pg_program(&self.bin, "pg_ctl")
                .arg("-D")
                .arg(self.dir.join("data"))
                .args(["-w", "-t", "60", "-m", "fast", "stop"]),
            Duration::from_secs(90),
        );
    }
}

/// Starts zeo-server `name` (a release binary) over the RelStorage
/// database `dsn`, its configuration and log in `dir` as `<stem>.conf`
/// and `<stem>.log`; returns its port once it listens.
pub(super) fn start_server(
    scratch: &mut Scratch,
    (server_bin, dir): (&Path, &Path),
    dsn: &str,
    name: &str,
    stem: &str,
) -> Result<u16, String> {
    let port = super::free_port()?;
    let conf = dir.join(format!("{stem}.conf"));
    fs::write(
        &conf,
        format!(
            "%import relstorage\n<zeo>\n  address 127.0.0.1:{port}\n</zeo>\n\
             <relstorage 1>\n  <postgresql>\n    dsn {dsn}\n  </postgresql>\n</relstorage>\n"
        ),
    )
    .map_err(|e| format!("{}: {e}", conf.display()))?;
    let mut cmd = raised_fd_limit(server_bin.as_os_str(), &["-C".as_ref(), conf.as_os_str()]);
    with_logs(&mut cmd, &dir.join(format!("{stem}.log")))?;
    scratch.spawn(name, &mut cmd)?;
    wait_listening(scratch, name, port)?;
    Ok(port)
}

/// Starts the cluster and zeo-server on it, and measures every side.
pub(super) fn run(scratch: &mut Scratch, inputs: &Inputs<'_>) -> Result<Results, String> {
    let bin = crate::postgres::ensure_installed()?;
    process::header("PostgreSQL: zeo-server on a RelStorage database vs RelStorage direct");
    // fsync stays on: the figures are for a database as deployed.
    let cluster = Cluster::start(bin, inputs.dir.join("pg"), "")?;
    cluster.create_database("zodb")?;
    let dsn = cluster.dsn("zodb");
    let name = "zeo-server (PostgreSQL)";
    let port = start_server(
        scratch,
        (inputs.server_bin, inputs.dir),
        &dsn,
        name,
        "pg-server",
    )?;
    let addr = format!("127.0.0.1:{port}");
    let objects = inputs.objects.to_string();
    let duration = inputs.duration.to_string();
    let limit = Duration::from_secs_f64(60.0 + 3.0 * 3.0 * (inputs.duration + 20.0));

    let prepared = capture(
        Command::new(inputs.client_bin).args([
            "--server",
            &addr,
            "bench",
            "--prepare-only",
            "--objects",
            &objects,
        ]),
        Duration::from_secs(600),
    )?;
    print!("{prepared}");

    let mut results = Results::new();
    // The same run, as each client's command line spells it.
    let common = [
        "--clients",
        inputs.clients,
        "--duration",
        &duration,
        "--objects",
        &objects,
        "--workloads",
        WORKLOADS,
    ];
    println!("Rust client through zeo-server");
    let out = capture(
        Command::new(inputs.client_bin)
            .args(["--server", &addr, "bench", "--json"])
            .args(common),
        limit,
    )?;
    collect(&out, "zeo-server", &mut results)?;
    scratch.check_alive(name)?;

    println!("Python ZEO client through zeo-server");
    let out = capture(
        Command::new(inputs.zeo_python)
            .arg(inputs.root.join("tests/python/bench_client.py"))
            .args(["--server", &addr])
            .args(common),
        limit,
    )?;
    collect(&out, "zeo-server", &mut results)?;
    scratch.check_alive(name)?;

    println!("Python RelStorage on the same database, no server");
    let out = capture(
        Command::new(inputs.relstorage_python)
            .arg(inputs.root.join("tests/python/bench_relstorage.py"))
            .args(["--dsn", &dsn])
            .args(common),
        limit,
    )?;
    collect(&out, "direct", &mut results)?;
    drop(cluster);
    Ok(results)
}

/// The side-by-side table: ops/s of each side and their ratio to
/// RelStorage direct.
pub(super) fn print(results: &Results, counts: &[usize]) {
    println!();
    println!("PostgreSQL (ops/s; ratio = through zeo-server / RelStorage direct)");
    println!(
        "{:<10} {:>7} {:>14} {:>14} {:>14} {:>9} {:>9}",
        "workload",
        "clients",
        "zeo-server+rs",
        "zeo-server+py",
        "RelStorage",
        "rs ratio",
        "py ratio"
    );
    for workload in WORKLOADS.split(',') {
        for &n in counts {
            let get = |side: &str, client: &str| {
                results
                    .get(&(side.into(), client.into(), workload.into(), n))
                    .map(|(rate, _)| *rate)
            };
            let rs = get("zeo-server", "rust");
            let py = get("zeo-server", "python");
            let direct = get("direct", "relstorage");
            let cell = |v: Option<f64>| v.map_or("-".to_owned(), |v| format!("{v:.0}"));
            let ratio = |a: Option<f64>| match (a, direct) {
                (Some(a), Some(d)) if d > 0.0 => format!("{:.2}", a / d),
                _ => "-".to_owned(),
            };
            println!(
                "{workload:<10} {n:>7} {:>14} {:>14} {:>14} {:>9} {:>9}",
                cell(rs),
                cell(py),
                cell(direct),
                ratio(rs),
                ratio(py)
            );
        }
    }
}
