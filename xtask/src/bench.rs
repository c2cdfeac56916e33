//! `cargo xtask bench`: our server and client side by side with Python
//! ZEO 6's, on this machine, in one table of ratios.
//!
//! Builds `zeo-server` and `zeo-client` in release, starts Python's
//! `runzeo` and our `zeo-server` on free 127.0.0.1 ports, each with its
//! own FileStorage in a scratch directory under the target directory (a
//! real disk, so that fsync costs what it costs), loads the same objects
//! into both, then drives both with `zeo-client bench` (the Rust client)
//! and `tests/python/bench_client.py` (the stock Python client) and
//! measures each server's resident memory with many idle clients.
//! See `docs/benchmarks.md` for how to read the table.
//!
//! Every child runs under a deadline and all of them are killed when this
//! returns, whether it succeeded or not.

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::fs::{self, File};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use crate::process;

mod blob;
mod connections;
mod group_commit;
mod pingpong;
mod postgresql;
mod prefetch;
mod servers;
mod start_scan;

/// The Rust client's workloads; the Python client runs all but `prefetch`
/// (Python's ClientStorage prefetches without waiting, so it has no rate).
const WORKLOADS: [&str; 5] = ["ping", "load", "prefetch", "commit", "commit100"];

/// `cargo xtask bench` options.
pub struct BenchOptions {
    duration: f64,
    clients: String,
    objects: u64,
    idle: usize,
    keep: bool,
    tls: bool,
    debug: bool,
    only_group_commit: bool,
    only_postgresql: bool,
    only_servers: bool,
    blob_mb: u64,
    only_blob: bool,
    only_prefetch: bool,
    start: Start,
    connections: Connections,
}

/// Whether the fan-out and idle-memory figures with many connections are
/// measured.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Connections {
    Also,
    Only,
    Skip,
}

/// Whether the server start figures are measured.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Start {
    /// With the rest (the default).
    Also,
    /// Alone.
    Only,
    /// Not at all.
    Skip,
    /// Not measured; the cached files are deleted instead.
    RemoveFiles,
}

impl BenchOptions {
    /// Parses `[--duration S] [--clients LIST] [--objects N] [--idle N]
    /// [--keep] [--no-tls] [--debug] [--only-group-commit]
    /// [--only-postgresql] [--only-servers] [--blob-mb N] [--only-blob] [--only-start]
    /// [--no-start] [--remove-start-files] [--only-connections]
    /// [--no-connections] [--only-prefetch]`.
    pub fn parse(args: Vec<OsString>) -> Result<Self, String> {
        let mut o = BenchOptions {
            duration: 2.0,
            clients: "1,4,8".into(),
            objects: 10_000,
            idle: 1000,
            keep: false,
            tls: true,
            debug: false,
            only_group_commit: false,
            start: Start::Also,
            connections: Connections::Also,
            only_postgresql: false,
            only_servers: false,
            blob_mb: 100,
            only_blob: false,
            only_prefetch: false,
        };
        let mut args = args.into_iter().map(|a| a.to_string_lossy().into_owned());
        while let Some(arg) = args.next() {
            let mut value = |name: &str| args.next().ok_or_else(|| format!("{name} needs a value"));
            match arg.as_str() {
                "--duration" => {
                    o.duration = value("--duration")?
                        .parse()
                        .ok()
                        .filter(|d: &f64| *d > 0.0 && *d <= 60.0)
                        .ok_or("--duration: seconds, more than 0 and at most 60")?
                }
                "--clients" => {
                    let v = value("--clients")?;
                    let ok = v
                        .split(',')
                        .all(|c| c.parse::<usize>().is_ok_and(|n| (1..=64).contains(&n)));
                    if !ok {
                        return Err("--clients: comma-separated counts from 1 to 64".into());
                    }
                    o.clients = v;
                }
                "--objects" => {
                    o.objects = value("--objects")?
                        .parse()
                        .ok()
                        .filter(|n| (1..=1_000_000).contains(n))
                        .ok_or("--objects: 1 to 1000000")?
                }
                "--idle" => {
                    o.idle = value("--idle")?
                        .parse()
                        .ok()
                        .filter(|n| *n <= 10_000)
                        .ok_or("--idle: 0 to 10000")?
                }
                "--keep" => o.keep = true,
                "--no-tls" => o.tls = false,
                // Only the group commit figures (and the fsync baseline).
                "--only-group-commit" => o.only_group_commit = true,
                // The server start figures: alone, not at all, or deleting
                // the large files they keep under the target directory.
                "--only-start" => o.start = Start::Only,
                "--no-start" => o.start = Start::Skip,
                "--remove-start-files" => o.start = Start::RemoveFiles,
                // The invalidation fan-out and 10,000 idle connections.
                "--only-connections" => o.connections = Connections::Only,
                "--no-connections" => o.connections = Connections::Skip,
                // Only zeo-server on PostgreSQL beside RelStorage direct.
                "--only-postgresql" => o.only_postgresql = true,
                // Only two zeo-servers over one PostgreSQL database.
                "--only-servers" => o.only_servers = true,
                // The size of the blob workload's blob; 0 leaves it out.
                "--blob-mb" => {
                    o.blob_mb = value("--blob-mb")?
                        .parse()
                        .ok()
                        .filter(|n| *n <= 2000)
                        .ok_or("--blob-mb: 0 to 2000")?
                }
                // Only the blob workload.
                "--only-blob" => o.only_blob = true,
                "--only-prefetch" => o.only_prefetch = true,
                // Smoke runs of this command itself: the figures mean nothing.
                "--debug" => o.debug = true,
                other => return Err(format!("bench: unknown option {other}")),
            }
        }
        Ok(o)
    }

    /// `zeo-client bench` arguments measuring `workloads` as asked.
    fn bench_args(&self, workloads: &[&str]) -> Vec<String> {
        [
            "--json",
            "--clients",
            &self.clients,
            "--duration",
            &self.duration.to_string(),
            "--objects",
            &self.objects.to_string(),
            "--workloads",
            &workloads.join(","),
        ]
        .map(str::to_owned)
        .to_vec()
    }

    /// How long a `zeo-client bench` run of `workloads` may take.
    fn bench_limit(&self, workloads: usize) -> Duration {
        Duration::from_secs_f64(
            60.0 + self.client_counts().len() as f64 * workloads as f64 * (self.duration + 10.0),
        )
    }

    fn client_counts(&self) -> Vec<usize> {
        self.clients
            .split(',')
            .filter_map(|c| c.parse().ok())
            .collect()
    }
}

/// Child processes killed (and reaped) on drop, and the scratch directory
/// removed unless asked to keep it.
struct Scratch {
    dir: PathBuf,
    keep: bool,
    children: Vec<(String, Child)>,
}

impl Scratch {
    fn spawn(&mut self, name: &str, cmd: &mut Command) -> Result<u32, String> {
        let child = cmd
            .spawn()
            .map_err(|e| format!("could not start {name} (`{}`): {e}", process::display(cmd)))?;
        let pid = child.id();
        self.children.push((name.to_owned(), child));
        Ok(pid)
    }

    /// Fails when the named child has exited.
    fn check_alive(&mut self, name: &str) -> Result<(), String> {
        for (n, child) in &mut self.children {
            if n == name {
                if let Ok(Some(status)) = child.try_wait() {
                    return Err(format!(
                        "{name} exited ({status}); see {}",
                        self.dir.display()
                    ));
                }
            }
        }
        Ok(())
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        for (_, child) in &mut self.children {
            let _ = child.kill();
            let _ = child.wait();
        }
        if self.keep {
            println!("scratch directory kept: {}", self.dir.display());
        } else {
            let _ = fs::remove_dir_all(&self.dir);
        }
    }
}

/// Runs the whole comparison and prints the table.
pub fn run(options: &BenchOptions, root: &Path, cargo: impl Fn() -> Command) -> Result<(), String> {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .map(|t| if t.is_absolute() { t } else { root.join(t) })
        .unwrap_or_else(|| root.join("target"));
    let venvs = std::env::var_os("ZEO_XTASK_VENV_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| root.join("target").join("python"));
    let venv = venvs.join("zeo6");
    let relstorage_python = venvs.join("relstorage").join("bin").join("python");
    let runzeo = venv.join("bin").join("runzeo");
    let python = venv.join("bin").join("python");
    if !runzeo.is_file() || !python.is_file() {
        return Err(format!(
            "{} not found: run `cargo xtask venv` first",
            runzeo.display()
        ));
    }

    if options.start == Start::RemoveFiles {
        return start_scan::remove_files(&target);
    }
    let profile = if options.debug { "debug" } else { "release" };
    process::header(&format!("build zeo-server and zeo-client ({profile})"));
    let mut build = cargo();
    build.args(["build", "-p", "zeo-server-cli", "-p", "zeo-client-cli"]);
    if !options.debug {
        build.arg("--release");
    }
    process::run(&mut build)?;
    let server_bin = target.join(profile).join("zeo-server");
    let client_bin = target.join(profile).join("zeo-client");

    let stamp = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    let dir = target
        .join("bench-runs")
        .join(format!("{}-{stamp}", std::process::id()));
    fs::create_dir_all(dir.join("py")).map_err(|e| format!("{}: {e}", dir.display()))?;
    fs::create_dir_all(dir.join("rs")).map_err(|e| format!("{}: {e}", dir.display()))?;
    let mut scratch = Scratch {
        dir: dir.clone(),
        keep: options.keep,
        children: Vec::new(),
    };

    process::header("fsync baseline");
    let fsync = fsync_seconds(&dir.join("rs"))?;
    println!(
        "write + fsync of 4 KiB in {}: median {:.3} ms, mean {:.3} ms",
        dir.display(),
        fsync.median * 1e3,
        fsync.mean * 1e3
    );

    process::header("loopback ping-pong baseline (C, 40 bytes, blocking sockets)");
    let pingpong = match pingpong::measure(&dir, options.duration.max(1.0)) {
        Ok(p) => {
            println!(
                "{:.0} round trips/s, median {:.3} ms",
                p.per_sec,
                p.median_s * 1e3
            );
            Some(p)
        }
        Err(e) => {
            println!("skipped: {e}");
            None
        }
    };

    if options.only_prefetch {
        let before = pingpong.ok_or("--only-prefetch needs the C ping-pong: no C compiler")?;
        let inputs = prefetch::Inputs {
            server_bin: &server_bin,
            client_bin: &client_bin,
            dir: &dir,
            duration: options.duration,
            objects: options.objects,
        };
        let measured = prefetch::run(&mut scratch, &inputs, before)?;
        process::header("Results");
        prefetch::print(&measured);
        return Ok(());
    }
    let group_inputs = group_commit::Inputs {
        server_bin: &server_bin,
        client_bin: &client_bin,
        dir: &dir,
        duration: options.duration,
    };
    let start_inputs = start_scan::Inputs {
        server_bin: &server_bin,
        runzeo: &runzeo,
        target: &target,
        dir: &dir,
    };
    if options.connections == Connections::Only {
        let measured = connections::run(&mut scratch, &start_inputs)?;
        process::header("Results");
        connections::print(&measured);
        return Ok(());
    }
    if options.start == Start::Only {
        let start = start_scan::run(&start_inputs)?;
        process::header("Results");
        start_scan::print(&start);
        return Ok(());
    }
    let pg_inputs = postgresql::Inputs {
        server_bin: &server_bin,
        client_bin: &client_bin,
        zeo_python: &python,
        relstorage_python: &relstorage_python,
        root,
        dir: &dir,
        duration: options.duration,
        objects: options.objects,
        clients: &options.clients,
    };
    if options.only_postgresql {
        let pg = postgresql::run(&mut scratch, &pg_inputs)?;
        process::header("Results");
        postgresql::print(&pg, &options.client_counts());
        return Ok(());
    }
    if options.only_servers {
        let inputs = servers::Inputs {
            server_bin: &server_bin,
            dir: &dir,
            duration: options.duration,
        };
        let measured = servers::run(&mut scratch, &inputs)?;
        process::header("Results");
        servers::print(&measured);
        return Ok(());
    }
    if options.only_group_commit {
        let group = group_commit::run(&mut scratch, &group_inputs)?;
        process::header("Results");
        group_commit::print(&group, fsync);
        return Ok(());
    }
    let blob_script = root.join("tests/python/bench_blob.py");
    let blob_inputs = blob::Inputs {
        runzeo: &runzeo,
        python: &python,
        script: &blob_script,
        server_bin: &server_bin,
        client_bin: &client_bin,
        dir: &dir,
        megabytes: options.blob_mb.max(1),
    };
    if options.only_blob {
        let blobs = blob::run(&mut scratch, &blob_inputs)?;
        process::header("Results");
        blob::print(&blobs);
        return Ok(());
    }

    process::header("start the servers");
    let py_port = free_port()?;
    let rs_port = free_port()?;
    let conf = write_zeo_conf(&dir.join("py"), &format!("127.0.0.1:{py_port}"), "", "")?;
    let mut cmd = raised_fd_limit(runzeo.as_os_str(), &["-C".as_ref(), conf.as_os_str()]);
    with_logs(&mut cmd, &dir.join("py").join("server.log"))?;
    let py_pid = scratch.spawn("runzeo", &mut cmd)?;
    // zeo-server caps connections (1,024, and 256 per peer address) by
    // default; the idle-memory step opens 1,000 from one address, and
    // runzeo has no such caps, so both serve without them.
    let rs_conf = write_zeo_conf(
        &dir.join("rs"),
        &format!("127.0.0.1:{rs_port}"),
        "  max-connections 0\n  max-connections-per-address 0\n",
        "",
    )?;
    let mut cmd = raised_fd_limit(
        server_bin.as_os_str(),
        &["-C".as_ref(), rs_conf.as_os_str()],
    );
    with_logs(&mut cmd, &dir.join("rs").join("server.log"))?;
    let rs_pid = scratch.spawn("zeo-server", &mut cmd)?;
    wait_listening(&mut scratch, "runzeo", py_port)?;
    wait_listening(&mut scratch, "zeo-server", rs_port)?;
    println!("Python ZEO 6 runzeo on 127.0.0.1:{py_port} (pid {py_pid}), zeo-server on 127.0.0.1:{rs_port} (pid {rs_pid})");

    let servers = [("py", py_port, py_pid), ("rs", rs_port, rs_pid)];
    let objects = options.objects.to_string();
    process::header(&format!(
        "prepare {} objects of 1 KiB in each",
        options.objects
    ));
    for (_, port, _) in servers {
        let out = capture(
            Command::new(&client_bin).args([
                "--server",
                &format!("127.0.0.1:{port}"),
                "bench",
                "--prepare-only",
                "--objects",
                &objects,
            ]),
            Duration::from_secs(300),
        )?;
        print!("127.0.0.1:{port}: {out}");
    }

    let mut rss: BTreeMap<(&str, &str), f64> = BTreeMap::new();
    if options.idle > 0 {
        process::header(&format!("server memory with {} idle clients", options.idle));
        for (name, port, pid) in servers {
            let before = vm_rss_kib(pid)?;
            let held = hold_idle(&client_bin, port, options.idle, &dir)?;
            let with = vm_rss_kib(pid);
            held.release();
            let with = with?;
            println!(
                "{name}: {before} KiB idle, {with} KiB with {} clients",
                options.idle
            );
            rss.insert((name, "idle"), before as f64);
            rss.insert((name, "held"), with as f64);
        }
    }

    // results[(server, client, workload, clients)] = (ops/s, p50 us)
    let mut results: BTreeMap<(String, String, String, usize), (f64, f64)> = BTreeMap::new();
    let duration = options.duration.to_string();
    let counts = options.client_counts();
    let limit = options.bench_limit(WORKLOADS.len());
    for (name, port, _) in servers {
        let addr = format!("127.0.0.1:{port}");
        process::header(&format!("Rust client against {}", server_title(name)));
        let out = capture(
            Command::new(&client_bin)
                .args(["--server", &addr, "bench"])
                .args(options.bench_args(&WORKLOADS)),
            limit,
        )?;
        collect(&out, name, &mut results)?;
        scratch.check_alive(if name == "py" { "runzeo" } else { "zeo-server" })?;

        process::header(&format!("Python client against {}", server_title(name)));
        let out = capture(
            Command::new(&python)
                .arg(root.join("tests/python/bench_client.py"))
                .args([
                    "--server",
                    &addr,
                    "--clients",
                    &options.clients,
                    "--duration",
                    &duration,
                    "--objects",
                    &objects,
                ]),
            limit,
        )?;
        collect(&out, name, &mut results)?;
        scratch.check_alive(if name == "py" { "runzeo" } else { "zeo-server" })?;
    }

    if options.tls {
        let bins = Binaries {
            runzeo: &runzeo,
            python: &python,
            server: &server_bin,
            client: &client_bin,
        };
        tls_runs(options, &bins, &dir, &mut scratch, &mut results)?;
    }

    // How long a well-behaved client waits while others never read.
    let mut slow: Vec<(&str, f64, f64, u64, u64)> = Vec::new();
    process::header(&format!(
        "ping p50 while {SLOW_READERS} clients send loads and never read their replies"
    ));
    for (name, port, pid) in servers {
        let addr = format!("127.0.0.1:{port}");
        let ping = || -> Result<f64, String> {
            let out = capture(
                Command::new(&client_bin).args([
                    "--server",
                    &addr,
                    "bench",
                    "--json",
                    "--clients",
                    "1",
                    "--duration",
                    &duration,
                    "--workloads",
                    "ping",
                ]),
                Duration::from_secs_f64(60.0 + options.duration),
            )?;
            out.lines()
                .find_map(|l| field(l, "p50_us")?.parse::<f64>().ok())
                .ok_or_else(|| format!("no ping result in {out:?}"))
        };
        let quiet = ping()?;
        let before = vm_rss_kib(pid)?;
        let readers = slow_readers(port, SLOW_READERS)?;
        let loaded = ping();
        let during = vm_rss_kib(pid);
        drop(readers);
        let (loaded, during) = (loaded?, during?);
        println!(
            "{name}: ping p50 {:.3} ms quiet, {:.3} ms with slow readers; RSS {before} -> {during} KiB",
            quiet / 1e3,
            loaded / 1e3
        );
        slow.push((name, quiet, loaded, before, during));
        scratch.check_alive(if name == "py" { "runzeo" } else { "zeo-server" })?;
    }

    let group = group_commit::run(&mut scratch, &group_inputs)?;
    let many = if options.connections == Connections::Also {
        connections::run(&mut scratch, &start_inputs)?
    } else {
        Vec::new()
    };
    let start = if options.start == Start::Also {
        start_scan::run(&start_inputs)?
    } else {
        Vec::new()
    };
    let pg = postgresql::run(&mut scratch, &pg_inputs)?;
    let blobs = if options.blob_mb > 0 {
        Some(blob::run(&mut scratch, &blob_inputs)?)
    } else {
        None
    };

    let hot = hot_bucket(
        &mut scratch,
        &HotBucket {
            python: &python,
            script: &root.join("tests/python/bench_hot_bucket.py"),
            server_bin: &server_bin,
            dir: &dir,
            py_port,
            rs_port,
            duration: &duration,
        },
    )?;

    process::header(
        "Results (ratio = zeo-server / Python server; higher is better except memory and latency)",
    );
    print_table(options, &counts, &results, &rss, fsync, pingpong);
    group_commit::print(&group, fsync);
    start_scan::print(&start);
    connections::print(&many);
    postgresql::print(&pg, &counts);
    if let Some(blobs) = &blobs {
        blob::print(blobs);
    }
    print_hot_bucket(&hot);
    for (name, quiet, loaded, before, during) in slow {
        println!(
            "{:<45} {:>8.3} ms p50 with {SLOW_READERS} slow readers, {:.1}x its quiet p50; RSS {} -> {} MiB",
            format!("ping, {}", server_title(name)),
            loaded / 1e3,
            loaded / quiet.max(1.0),
            before / 1024,
            during / 1024
        );
    }
    drop(scratch);
    Ok(())
}

/// Stock Python clients committing to one hot OOBTree bucket.
const HOT_BUCKET_CLIENTS: usize = 8;

/// What the hot-bucket measurement needs.
struct HotBucket<'a> {
    python: &'a Path,
    script: &'a Path,
    server_bin: &'a Path,
    dir: &'a Path,
    py_port: u16,
    rs_port: u16,
    duration: &'a str,
}

/// One hot-bucket result: commits/s, ConflictErrors the application saw,
/// conflicts the clients resolved themselves.
struct HotResult {
    title: &'static str,
    commits_per_sec: f64,
    conflict_errors: u64,
    client_resolutions: u64,
}

/// [`HOT_BUCKET_CLIENTS`] stock Python clients inserting into and deleting
/// from one OOBTree bucket (`tests/python/bench_hot_bucket.py`): against
/// zeo-server resolving natively, against a second zeo-server with
/// `native-conflict-resolution false` (the clients resolve), and against
/// runzeo (the server resolves with Python), one after the other.
fn hot_bucket(scratch: &mut Scratch, h: &HotBucket<'_>) -> Result<Vec<HotResult>, String> {
    process::header(&format!(
        "{HOT_BUCKET_CLIENTS} clients on one hot OOBTree bucket"
    ));
    let client_port = free_port()?;
    let client_dir = h.dir.join("rs-client");
    fs::create_dir_all(&client_dir).map_err(|e| format!("{}: {e}", client_dir.display()))?;
    let conf = write_zeo_conf(
        &client_dir,
        &format!("127.0.0.1:{client_port}"),
        "  native-conflict-resolution false\n",
        "",
    )?;
    let mut cmd = raised_fd_limit(h.server_bin.as_os_str(), &["-C".as_ref(), conf.as_os_str()]);
    with_logs(&mut cmd, &client_dir.join("server.log"))?;
    scratch.spawn("zeo-server (client-side resolution)", &mut cmd)?;
    wait_listening(scratch, "zeo-server (client-side resolution)", client_port)?;
    let runs = [
        ("zeo-server, native resolution", h.rs_port),
        ("zeo-server, client-side resolution", client_port),
        ("runzeo, Python resolution in the server", h.py_port),
    ];
    let mut results = Vec::new();
    for (title, port) in runs {
        let out = capture(
            Command::new(h.python).arg(h.script).args([
                "--server",
                &format!("127.0.0.1:{port}"),
                "--clients",
                &HOT_BUCKET_CLIENTS.to_string(),
                "--duration",
                h.duration,
            ]),
            Duration::from_secs(120),
        )?;
        let line = out.lines().last().unwrap_or_default();
        let number = |key: &str| -> Result<f64, String> {
            field(line, key)
                .and_then(|v| v.parse::<f64>().ok())
                .ok_or_else(|| format!("no {key} in {out:?}"))
        };
        let result = HotResult {
            title,
            commits_per_sec: number("commits_per_sec")?,
            conflict_errors: number("conflict_errors")? as u64,
            client_resolutions: number("client_resolutions")? as u64,
        };
        println!(
            "{title}: {:.1} commits/s, {} ConflictErrors, {} resolved by the clients",
            result.commits_per_sec, result.conflict_errors, result.client_resolutions
        );
        results.push(result);
    }
    Ok(results)
}

/// The hot-bucket lines of the results, with ratios to native resolution.
fn print_hot_bucket(results: &[HotResult]) {
    let Some(native) = results.first() else {
        return;
    };
    for r in results {
        println!(
            "{:<45} {:>8.1} commits/s, native = {:.2}x this; {} ConflictErrors, {} client resolutions",
            format!("hot bucket ({HOT_BUCKET_CLIENTS} clients), {}", r.title),
            r.commits_per_sec,
            native.commits_per_sec / r.commits_per_sec.max(f64::MIN_POSITIVE),
            r.conflict_errors,
            r.client_resolutions
        );
    }
}

/// The programs a run drives.
struct Binaries<'a> {
    runzeo: &'a Path,
    python: &'a Path,
    server: &'a Path,
    client: &'a Path,
}

/// The servers started with `<ssl>`: the name their results go under, and
/// the name their process is watched under.
const TLS_SERVERS: [(&str, &str); 2] = [("py-tls", "runzeo (TLS)"), ("rs-tls", "zeo-server (TLS)")];

/// Workloads measured over TLS (with the Rust client: Python's ZEO client
/// pays its own TLS costs, which are not zeo-server's).
const TLS_WORKLOADS: [&str; 2] = ["load", "commit"];

/// Starts both servers again with `<ssl>` and ZEO's own test certificates
/// (from the venv), prepares the same objects over TLS and runs the Rust
/// client's loads and commits against each; results go under `py-tls` and
/// `rs-tls`.
fn tls_runs(
    options: &BenchOptions,
    bins: &Binaries<'_>,
    dir: &Path,
    scratch: &mut Scratch,
    results: &mut BTreeMap<(String, String, String, usize), (f64, f64)>,
) -> Result<(), String> {
    process::header("both servers with <ssl> (ZEO's test certificates), Rust client over TLS");
    let certs = capture(
        Command::new(bins.python).args([
            "-c",
            "import os, ZEO.tests; print(os.path.dirname(ZEO.tests.__file__))",
        ]),
        Duration::from_secs(60),
    )?;
    let certs = Path::new(certs.trim());
    let pem = |name: &str| certs.join(name).display().to_string();
    let ssl_section = format!(
        "  <ssl>\n    certificate {}\n    key {}\n    authenticate {}\n  </ssl>\n",
        pem("server.pem"),
        pem("server_key.pem"),
        pem("client.pem")
    );
    let client_ssl = [
        "--ssl-certificate".to_owned(),
        pem("client.pem"),
        "--ssl-key".to_owned(),
        pem("client_key.pem"),
        "--ssl-authenticate".to_owned(),
        pem("server.pem"),
        "--ssl-server-hostname".to_owned(),
        "zodb.org".to_owned(),
    ];
    let mut started = Vec::new();
    for (name, label) in TLS_SERVERS {
        let sub = dir.join(name);
        fs::create_dir_all(&sub).map_err(|e| format!("{}: {e}", sub.display()))?;
        let port = free_port()?;
        let conf = write_zeo_conf(&sub, &format!("127.0.0.1:{port}"), &ssl_section, "")?;
        let program = if name == "py-tls" {
            bins.runzeo
        } else {
            bins.server
        };
        let mut cmd = raised_fd_limit(program.as_os_str(), &["-C".as_ref(), conf.as_os_str()]);
        with_logs(&mut cmd, &sub.join("server.log"))?;
        scratch.spawn(label, &mut cmd)?;
        started.push((name, label, port));
    }
    let objects = options.objects.to_string();
    let limit = options.bench_limit(TLS_WORKLOADS.len());
    for (name, label, port) in started {
        wait_listening(scratch, label, port)?;
        let addr = format!("127.0.0.1:{port}");
        let client = || {
            let mut cmd = Command::new(bins.client);
            cmd.args(["--server", &addr]).args(&client_ssl).arg("bench");
            cmd
        };
        let out = capture(
            client().args(["--prepare-only", "--objects", &objects]),
            Duration::from_secs(300),
        )?;
        print!("{label} on {addr}: {out}");
        let out = capture(client().args(options.bench_args(&TLS_WORKLOADS)), limit)?;
        collect(&out, name, results)?;
        scratch.check_alive(label)?;
    }
    Ok(())
}

/// Clients in the slow-reader measurement.
const SLOW_READERS: usize = 3;

/// Requests each slow reader sends at most: 100 MB of replies for the
/// prepared 1 KiB object, bounded so a server that buffers every reply
/// (as Python's does) holds a known amount.
const SLOW_READER_REQUESTS: usize = 100_000;

/// `n` raw `Z5` connections that register, send up to
/// [`SLOW_READER_REQUESTS`] `loadBefore` calls of oid 1 and never read a
/// reply; they stay connected until dropped. Sending stops early when the
/// server stops reading (its back-pressure, or full socket buffers).
fn slow_readers(port: u16, n: usize) -> Result<Vec<TcpStream>, String> {
    let register = connections::register_frame();
    let mut args = vec![b'C', 8];
    args.extend_from_slice(&1u64.to_be_bytes());
    args.extend_from_slice(&[b'C', 8]);
    args.extend_from_slice(&(i64::MAX as u64).to_be_bytes());
    args.push(0x86);
    let load = connections::call_frame(2, false, "loadBefore", &args);
    let batch: Vec<u8> = load.repeat(1000);
    let io = |e: std::io::Error| format!("slow reader on port {port}: {e}");
    let mut out = Vec::new();
    for _ in 0..n {
        let mut s = TcpStream::connect(("127.0.0.1", port)).map_err(io)?;
        s.set_read_timeout(Some(Duration::from_secs(10)))
            .map_err(io)?;
        s.set_write_timeout(Some(Duration::from_secs(2)))
            .map_err(io)?;
        let mut len = [0u8; 4];
        s.read_exact(&mut len).map_err(io)?;
        let mut greeting = vec![0u8; u32::from_be_bytes(len).min(16) as usize];
        s.read_exact(&mut greeting).map_err(io)?;
        s.write_all(&[0, 0, 0, 2, b'Z', b'5']).map_err(io)?;
        s.write_all(&register).map_err(io)?;
        for _ in 0..SLOW_READER_REQUESTS / 1000 {
            match s.write_all(&batch) {
                Ok(()) => {}
                Err(e)
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ) =>
                {
                    break
                }
                Err(e) => return Err(io(e)),
            }
        }
        out.push(s);
    }
    Ok(out)
}

fn server_title(name: &str) -> &'static str {
    if name == "py" {
        "Python ZEO 6 runzeo"
    } else {
        "zeo-server"
    }
}

/// `sh -c 'ulimit -n <hard>; exec PROGRAM ARGS'`: a thousand idle clients
/// need more descriptors than the usual soft limit of 1024, and xtask has
/// no `setrlimit` of its own.
fn raised_fd_limit(program: &std::ffi::OsStr, args: &[&std::ffi::OsStr]) -> Command {
    let mut cmd = Command::new("sh");
    cmd.arg("-c")
        .arg("ulimit -n \"$(ulimit -Hn)\" 2>/dev/null; exec \"$0\" \"$@\"")
        .arg(program)
        .args(args);
    cmd
}

/// Writes `dir/zeo.conf` and returns its path: a `<zeo>` section listening
/// on `address` with `zeo_lines` added (each line indented and ending in a
/// newline), serving `<filestorage 1>` at `dir/Data.fs` with
/// `storage_lines` added.
pub(super) fn write_zeo_conf(
    dir: &Path,
    address: &str,
    zeo_lines: &str,
    storage_lines: &str,
) -> Result<PathBuf, String> {
    let conf = dir.join("zeo.conf");
    fs::write(
        &conf,
        format!(
            "<zeo>\n  address {address}\n{zeo_lines}</zeo>\n<filestorage 1>\n  path {}\n{storage_lines}</filestorage>\n",
            dir.join("Data.fs").display()
        ),
    )
    .map_err(|e| format!("{}: {e}", conf.display()))?;
    Ok(conf)
}

/// Sends a server's output to its log file in the scratch directory.
fn with_logs(cmd: &mut Command, log: &Path) -> Result<(), String> {
    let out = File::create(log).map_err(|e| format!("{}: {e}", log.display()))?;
    let err = out
        .try_clone()
        .map_err(|e| format!("{}: {e}", log.display()))?;
    cmd.stdin(Stdio::null()).stdout(out).stderr(err);
    Ok(())
}

fn free_port() -> Result<u16, String> {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .map_err(|e| format!("no free port on 127.0.0.1: {e}"))
}

fn wait_listening(scratch: &mut Scratch, name: &str, port: u16) -> Result<(), String> {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return Ok(());
        }
        scratch.check_alive(name)?;
        if Instant::now() > deadline {
            return Err(format!(
                "{name} did not listen on 127.0.0.1:{port} within 60 s"
            ));
        }
        thread::sleep(Duration::from_millis(100));
    }
}

/// Times of writing 4 KiB at the end of a file and fsyncing it, the cost a
/// commit pays at least once, in seconds.
#[derive(Clone, Copy)]
struct Fsync {
    median: f64,
    mean: f64,
}

fn fsync_seconds(dir: &Path) -> Result<Fsync, String> {
    let path = dir.join("fsync-probe");
    let mut file = File::create(&path).map_err(|e| format!("{}: {e}", path.display()))?;
    let block = [0x5au8; 4096];
    let mut times = Vec::new();
    for _ in 0..50 {
        let t = Instant::now();
        file.write_all(&block)
            .and_then(|_| file.sync_all())
            .map_err(|e| format!("{}: {e}", path.display()))?;
        times.push(t.elapsed().as_secs_f64());
    }
    let _ = fs::remove_file(&path);
    times.sort_by(f64::total_cmp);
    Ok(Fsync {
        median: times[times.len() / 2],
        mean: times.iter().sum::<f64>() / times.len() as f64,
    })
}

/// Runs a command to completion under `limit`, returning its stdout;
/// stderr is passed through.
fn capture(cmd: &mut Command, limit: Duration) -> Result<String, String> {
    run_timed(cmd, limit, Output::Capture, Duration::from_millis(50)).map(|(text, _)| text)
}

/// What [`run_timed`] does with a command's standard output.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Output {
    Capture,
    Discard,
}

/// Runs a command to completion under `limit`, checking on it every
/// `poll`: its stdout (empty when discarded) and its wall time in seconds,
/// to within `poll`. Stderr is passed through.
fn run_timed(
    cmd: &mut Command,
    limit: Duration,
    output: Output,
    poll: Duration,
) -> Result<(String, f64), String> {
    println!("$ {}", process::display(cmd));
    let started = Instant::now();
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(match output {
            Output::Capture => Stdio::piped(),
            Output::Discard => Stdio::null(),
        })
        .stderr(Stdio::inherit())
        .spawn()
        .map_err(|e| format!("could not start `{}`: {e}", process::display(cmd)))?;
    let reader = child.stdout.take().map(|mut stdout| {
        thread::spawn(move || {
            let mut text = String::new();
            let _ = stdout.read_to_string(&mut text);
            text
        })
    });
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break status,
            Ok(None) if started.elapsed() > limit => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(format!(
                    "`{}` did not finish within {} s and was killed",
                    process::display(cmd),
                    limit.as_secs()
                ));
            }
            Ok(None) => thread::sleep(poll),
            Err(e) => return Err(format!("waiting for `{}`: {e}", process::display(cmd))),
        }
    };
    let seconds = started.elapsed().as_secs_f64();
    let text = reader
        .map(|r| r.join().unwrap_or_default())
        .unwrap_or_default();
    if status.success() {
        Ok((text, seconds))
    } else {
        Err(format!(
            "`{}` failed ({status})\n{text}",
            process::display(cmd)
        ))
    }
}

/// A `zeo-client bench --idle` process holding its connections open.
struct Held {
    child: Child,
}

impl Held {
    fn release(mut self) {
        // Closing stdin tells it to disconnect and exit.
        drop(self.child.stdin.take());
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn hold_idle(client_bin: &Path, port: u16, n: usize, dir: &Path) -> Result<Held, String> {
    let log = dir.join(format!("idle-{port}.log"));
    let err = File::create(&log).map_err(|e| format!("{}: {e}", log.display()))?;
    let mut cmd = raised_fd_limit(
        client_bin.as_os_str(),
        &[
            "--server".as_ref(),
            format!("127.0.0.1:{port}").as_ref(),
            "--timeout".as_ref(),
            "120".as_ref(),
            "bench".as_ref(),
            "--idle".as_ref(),
            n.to_string().as_ref(),
        ],
    );
    cmd.stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(err);
    println!("$ zeo-client --server 127.0.0.1:{port} bench --idle {n}");
    let mut child = cmd
        .spawn()
        .map_err(|e| format!("could not start zeo-client: {e}"))?;
    let stdout = child.stdout.take().ok_or("no stdout pipe")?;
    let held = Held { child };
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || {
        let mut line = String::new();
        let _ = BufReader::new(stdout).read_line(&mut line);
        let _ = tx.send(line);
    });
    let line = rx.recv_timeout(Duration::from_secs(180)).map_err(|_| {
        format!(
            "{n} idle clients did not connect within 180 s (see {})",
            log.display()
        )
    })?;
    if field(&line, "idle_connections").and_then(|v| v.parse::<usize>().ok()) != Some(n) {
        return Err(format!(
            "idle clients did not all connect: {line:?} (see {})",
            log.display()
        ));
    }
    // Let the server settle after the burst of registrations.
    thread::sleep(Duration::from_millis(500));
    Ok(held)
}

fn vm_rss_kib(pid: u32) -> Result<u64, String> {
    let status = fs::read_to_string(format!("/proc/{pid}/status"))
        .map_err(|e| format!("/proc/{pid}/status: {e}"))?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .ok_or_else(|| format!("no VmRSS in /proc/{pid}/status"))
}

/// The raw text of `key`'s value in a flat JSON object (numbers and
/// strings without escapes are all the bench lines hold).
fn field<'a>(line: &'a str, key: &str) -> Option<&'a str> {
    let at = line.find(&format!("\"{key}\""))? + key.len() + 2;
    let rest = line[at..].trim_start().strip_prefix(':')?.trim_start();
    if let Some(s) = rest.strip_prefix('"') {
        return s.split('"').next();
    }
    let end = rest.find([',', '}']).unwrap_or(rest.len());
    Some(rest[..end].trim())
}

fn collect(
    out: &str,
    server: &str,
    results: &mut BTreeMap<(String, String, String, usize), (f64, f64)>,
) -> Result<(), String> {
    let mut n = 0;
    for line in out.lines().filter(|l| l.starts_with('{')) {
        let (Some(client), Some(workload), Some(clients), Some(rate), Some(p50)) = (
            field(line, "client"),
            field(line, "workload"),
            field(line, "clients").and_then(|v| v.parse::<usize>().ok()),
            field(line, "ops_per_sec").and_then(|v| v.parse::<f64>().ok()),
            field(line, "p50_us").and_then(|v| v.parse::<f64>().ok()),
        ) else {
            continue;
        };
        println!(
            "  {client:<6} client {workload:<10} x{clients:<2} {rate:>10.0} ops/s  p50 {:.3} ms",
            p50 / 1e3
        );
        results.insert(
            (server.into(), client.into(), workload.into(), clients),
            (rate, p50),
        );
        n += 1;
    }
    if n == 0 {
        return Err(format!("no results in the bench output:\n{out}"));
    }
    Ok(())
}

fn print_table(
    options: &BenchOptions,
    counts: &[usize],
    results: &BTreeMap<(String, String, String, usize), (f64, f64)>,
    rss: &BTreeMap<(&str, &str), f64>,
    fsync: Fsync,
    pingpong: Option<pingpong::PingPong>,
) {
    let get = |server: &str, client: &str, workload: &str, n: usize| {
        results
            .get(&(server.into(), client.into(), workload.into(), n))
            .copied()
    };
    let row = |label: &str, py: Option<f64>, rs: Option<f64>, unit: &str| {
        let cell = |v: Option<f64>| {
            v.map_or("-".to_owned(), |v| {
                if v.abs() < 10.0 {
                    format!("{v:.3}")
                } else {
                    format!("{v:.1}")
                }
            })
        };
        let ratio = match (py, rs) {
            (Some(p), Some(r)) if p > 0.0 => format!("{:.2}x", r / p),
            _ => "-".into(),
        };
        println!(
            "{:<44} {:>14} {:>14} {:>8}  {unit}",
            label,
            cell(py),
            cell(rs),
            ratio
        );
    };
    println!(
        "{:<44} {:>14} {:>14} {:>8}",
        "workload", "Python server", "zeo-server", "ratio"
    );
    println!("{}", "-".repeat(88));
    for (client, title) in [("rust", "Rust client"), ("python", "Python client")] {
        for workload in WORKLOADS {
            for &n in counts {
                let py = get("py", client, workload, n);
                let rs = get("rs", client, workload, n);
                if py.is_none() && rs.is_none() {
                    continue;
                }
                let what = match workload {
                    "ping" => "ping round trips",
                    "load" => "cold loads",
                    "commit" => "1-object commits",
                    "prefetch" => "prefetched loads",
                    _ => "100-object commits",
                };
                row(
                    &format!("{title}, {what}, {n} client(s)"),
                    py.map(|v| v.0),
                    rs.map(|v| v.0),
                    "/s",
                );
                if workload == "load" {
                    row(
                        &format!("{title}, cold load p50, {n} client(s)"),
                        py.map(|v| v.1 / 1e3),
                        rs.map(|v| v.1 / 1e3),
                        "ms",
                    );
                }
            }
        }
    }
    for workload in TLS_WORKLOADS {
        for &n in counts {
            let py = get("py-tls", "rust", workload, n);
            let rs = get("rs-tls", "rust", workload, n);
            if py.is_some() || rs.is_some() {
                row(
                    &format!("Rust client over TLS, {workload}s, {n} client(s)"),
                    py.map(|v| v.0),
                    rs.map(|v| v.0),
                    "/s",
                );
            }
        }
    }
    if !rss.is_empty() {
        let mib = |k: Option<&f64>| k.map(|k| k / 1024.0);
        row(
            "server RSS, no clients",
            mib(rss.get(&("py", "idle"))),
            mib(rss.get(&("rs", "idle"))),
            "MiB",
        );
        row(
            &format!("server RSS, {} idle clients", options.idle),
            mib(rss.get(&("py", "held"))),
            mib(rss.get(&("rs", "held"))),
            "MiB",
        );
        let per = |s: &str| match (rss.get(&(s, "idle")), rss.get(&(s, "held"))) {
            (Some(a), Some(b)) if options.idle > 0 => Some((b - a) / options.idle as f64),
            _ => None,
        };
        row("server memory per idle client", per("py"), per("rs"), "KiB");
    }

    println!("\nbaselines (this run):");
    let ping1 = get("rs", "rust", "ping", 1);
    // Mean round trip (from the rate) and median (p50).
    let rtt = ping1.map(|(rate, p50)| (1.0 / rate, p50 / 1e6));
    println!(
        "  write + fsync of 4 KiB: median {:.3} ms, mean {:.3} ms",
        fsync.median * 1e3,
        fsync.mean * 1e3
    );
    if let Some((mean, median)) = rtt {
        println!(
            "  ping round trip, Rust client to zeo-server, 1 client: median {:.3} ms, mean {:.3} ms",
            median * 1e3,
            mean * 1e3
        );
    }
    if let Some(p) = pingpong {
        println!(
            "  C ping-pong of 40 bytes on loopback: {:.0} round trips/s, median {:.3} ms",
            p.per_sec,
            p.median_s * 1e3
        );
    }

    println!("\naims (verdicts on throughput; medians in brackets for the noise):");
    let verdict = |ok: bool| if ok { "met" } else { "NOT met" };
    if let Some(p) = pingpong {
        if let Some(ping) = get("rs", "rust", "ping", 1) {
            println!(
                "  ZEO ping on zeo-server, 1 client: {:.0}/s = {:.0}% of the C ping-pong's {:.0}/s (the machine's limit) [p50 {:.3} vs {:.3} ms]",
                ping.0,
                100.0 * ping.0 / p.per_sec,
                p.per_sec,
                ping.1 / 1e3,
                p.median_s * 1e3
            );
        }
        if let Some(load) = get("rs", "rust", "load", 1) {
            println!(
                "  cold loads on zeo-server, 1 client: {:.0}/s = {:.0}% of the C ping-pong",
                load.0,
                100.0 * load.0 / p.per_sec
            );
        }
        if let Some(prefetch) = get("rs", "rust", "prefetch", 1) {
            let r = prefetch.0 / p.per_sec;
            println!(
                "  prefetched loads on zeo-server, 1 client: {:.0}/s = {r:.1}x the C ping-pong's synchronous rate (aim >= 2x): {}",
                prefetch.0,
                verdict(r >= 2.0)
            );
        }
    }
    for &n in counts {
        if let (Some(ours), Some(theirs)) =
            (get("rs", "rust", "load", n), get("py", "python", "load", n))
        {
            let r = ours.0 / theirs.0;
            println!(
                "  cold loads, {n} client(s): Rust pair {:.0}/s vs Python pair {:.0}/s = {r:.1}x (aim >= 10x): {} [p50 {:.3} vs {:.3} ms]",
                ours.0,
                theirs.0,
                verdict(r >= 10.0),
                ours.1 / 1e3,
                theirs.1 / 1e3
            );
        }
    }
    for &n in counts {
        if let (Some(load), Some(ping)) =
            (get("rs", "rust", "load", n), get("rs", "rust", "ping", n))
        {
            let r = load.0 / ping.0;
            println!(
                "  loads vs ping round trips on zeo-server, {n} client(s): {:.0}% (aim >= 65%): {} [p50 ping/load {:.0}%]",
                r * 100.0,
                verdict(r >= 0.65),
                100.0 * ping.1 / load.1.max(f64::MIN_POSITIVE)
            );
        }
    }
    if let (Some(commit), Some((rtt_mean, rtt_median))) = (get("rs", "rust", "commit", 1), rtt) {
        let bound = 1.0 / (fsync.mean + 2.0 * rtt_mean);
        let r = commit.0 / bound;
        let typical = fsync.median + 2.0 * rtt_median;
        println!(
            "  1-object commits, 1 client: {:.0}/s vs 1/(fsync + 2 RTT) = {bound:.0}/s: {:.0}% (aim >= 80%): {} [p50 {:.3} ms vs fsync + 2 RTT {:.3} ms: {:.0}%]",
            commit.0,
            r * 100.0,
            verdict(r >= 0.8),
            commit.1 / 1e3,
            typical * 1e3,
            100.0 * typical * 1e6 / commit.1.max(f64::MIN_POSITIVE)
        );
    }
    for &n in counts {
        if let (Some(ours), Some(theirs)) = (
            get("rs-tls", "rust", "load", n),
            get("py-tls", "rust", "load", n),
        ) {
            let r = ours.0 / theirs.0;
            println!(
                "  TLS cold loads, Rust client, {n} client(s): zeo-server {:.0}/s vs runzeo {:.0}/s = {r:.1}x (aim >= 3x): {}",
                ours.0,
                theirs.0,
                verdict(r >= 3.0)
            );
        }
        for workload in TLS_WORKLOADS {
            for (server, title) in [("rs", "zeo-server"), ("py", "runzeo")] {
                let tls = get(&format!("{server}-tls"), "rust", workload, n);
                if let (Some(tls), Some(plain)) = (tls, get(server, "rust", workload, n)) {
                    let cost = 1.0 - tls.0 / plain.0;
                    let aim = if server == "rs" && workload == "load" {
                        format!(" (aim <= 25%): {}", verdict(cost <= 0.25))
                    } else {
                        String::new()
                    };
                    println!(
                        "  TLS cost on {title}, {workload}s, {n} client(s): {:.0}/s vs {:.0}/s plain: TLS costs {:.0}% of the throughput{aim}",
                        tls.0,
                        plain.0,
                        cost * 100.0
                    );
                }
            }
        }
    }
    let load = fs::read_to_string("/proc/loadavg").unwrap_or_default();
    println!(
        "\nmachine: {} CPU(s), load average {} — ratios within one run compare; absolute numbers do not travel",
        thread::available_parallelism().map(|n| n.get()).unwrap_or(1),
        load.split_whitespace().take(3).collect::<Vec<_>>().join(" ")
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fields_of_both_json_spellings() {
        let rust = r#"{"client":"rust","clients":4,"ops_per_sec":123.5,"p50_us":80.0}"#;
        let python = r#"{"client": "python", "clients": 4, "ops_per_sec": 99.25, "p50_us": 1e3}"#;
        assert_eq!(field(rust, "client"), Some("rust"));
        assert_eq!(field(rust, "clients"), Some("4"));
        assert_eq!(field(rust, "p50_us"), Some("80.0"));
        assert_eq!(field(python, "client"), Some("python"));
        assert_eq!(field(python, "ops_per_sec"), Some("99.25"));
        assert_eq!(field(python, "p50_us"), Some("1e3"));
        assert_eq!(field(python, "missing"), None);
    }
}
