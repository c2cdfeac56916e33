//! Server start figures: how long zeo-server and Python's runzeo take from
//! being started to accepting a connection on a large `Data.fs`, with its
//! saved index and without one (a full scan), on two kinds of file: many
//! small records (1,000,000 × 500 B) and few large ones (10,000 × 100 KB).
//!
//! The files are written once, directly in the FS30 format (no server is
//! needed to fill them), and cached under `<target>/bench-data/start`
//! between runs; `--remove-start-files` deletes them. Before timing, each
//! file is read once so that the page cache is warm, and each figure is the
//! median of [`RUNS`] starts. The scan rate is the file's size over the
//! start time without an index, so it includes process start and writing
//! the new index.

use std::fs::{self, File};
use std::io::{BufWriter, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

/// Starts measured per figure; the median is reported.
const RUNS: usize = 3;
/// How long one start may take before the bench gives up.
const START_LIMIT: Duration = Duration::from_secs(120);

/// One kind of file.
pub(super) struct Kind {
    name: &'static str,
    title: &'static str,
    transactions: u64,
    records_per_txn: u64,
    record_len: usize,
}

pub(super) const KINDS: [Kind; 2] = [
    Kind {
        name: "small",
        title: "1,000,000 x 500 B",
        transactions: 1_000,
        records_per_txn: 1_000,
        record_len: 500,
    },
    Kind {
        name: "large",
        title: "10,000 x 100 KB",
        transactions: 10_000,
        records_per_txn: 1,
        record_len: 100_000,
    },
];

/// What the start runs (and those with many connections) need.
pub(super) struct Inputs<'a> {
    pub server_bin: &'a Path,
    pub runzeo: &'a Path,
    pub target: &'a Path,
    pub dir: &'a Path,
}

/// Median start times of one server on one kind of file, seconds.
#[derive(Clone, Debug)]
pub(super) struct Measured {
    kind: usize,
    server: &'static str,
    size: u64,
    with_index: f64,
    without_index: f64,
}

/// Where the cached files live.
fn cache_dir(target: &Path) -> PathBuf {
    target.join("bench-data").join("start")
}

/// Deletes the cached files.
pub(super) fn remove_files(target: &Path) -> Result<(), String> {
    let dir = cache_dir(target);
    match fs::remove_dir_all(&dir) {
        Ok(()) => {
            println!("removed {}", dir.display());
            Ok(())
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(format!("{}: {e}", dir.display())),
    }
}

/// A tid on 2020-01-01 at 00:00 plus `n` fractions of its minute: ZODB's
/// `TimeStamp` layout (minutes since 1900 in the high 32 bits, the second
/// as a fraction of 2^32 / 60 in the low ones).
fn tid(n: u64) -> [u8; 8] {
    let minutes: u64 = 120 * 12 * 31 * 24 * 60;
    ((minutes << 32) + n + 1).to_be_bytes()
}

/// Writes `kind`'s file at `path`: every record a new object (no previous
/// revision), transactions without metadata, all committed.
fn write_file(kind: &Kind, path: &Path) -> Result<(), String> {
    let io = |e: std::io::Error| format!("{}: {e}", path.display());
    let mut out = BufWriter::with_capacity(1 << 20, File::create(path).map_err(io)?);
    out.write_all(b"FS30").map_err(io)?;
    let mut pos: u64 = 4;
    let data: Vec<u8> = (0..kind.record_len).map(|i| (i % 251) as u8).collect();
    let record_len = 42 + kind.record_len as u64;
    let mut oid: u64 = 0;
    for t in 0..kind.transactions {
        let tid = tid(t);
        let tlen = 23 + kind.records_per_txn * record_len;
        let tpos = pos;
        out.write_all(&tid).map_err(io)?;
        out.write_all(&tlen.to_be_bytes()).map_err(io)?;
        // Status ' ', then empty user, description and extension.
        out.write_all(&[b' ', 0, 0, 0, 0, 0, 0]).map_err(io)?;
        for _ in 0..kind.records_per_txn {
            out.write_all(&oid.to_be_bytes()).map_err(io)?;
            out.write_all(&tid).map_err(io)?;
            out.write_all(&0u64.to_be_bytes()).map_err(io)?;
            out.write_all(&tpos.to_be_bytes()).map_err(io)?;
            out.write_all(&0u16.to_be_bytes()).map_err(io)?;
            out.write_all(&(kind.record_len as u64).to_be_bytes())
                .map_err(io)?;
            out.write_all(&data).map_err(io)?;
            oid += 1;
        }
        out.write_all(&tlen.to_be_bytes()).map_err(io)?;
        pos += tlen + 8;
    }
    out.into_inner()
        .map_err(|e| io(e.into_error()))?
        .sync_all()
        .map_err(io)
}

/// The cached file of `kind`, written first when missing or incomplete.
fn cached_file(target: &Path, kind: &Kind) -> Result<PathBuf, String> {
    let dir = cache_dir(target).join(kind.name);
    let data = dir.join("Data.fs");
    let done = dir.join("complete");
    if done.is_file() {
        return Ok(data);
    }
    fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let size = kind.transactions * kind.records_per_txn * kind.record_len as u64;
    println!(
        "writing {} ({} MB of records; kept for later runs, `--remove-start-files` deletes it)",
        data.display(),
        size / 1_000_000
    );
    let _ = fs::remove_file(dir.join("Data.fs.index"));
    write_file(kind, &data)?;
    File::create(&done).map_err(|e| format!("{}: {e}", done.display()))?;
    Ok(data)
}

/// Reads the whole file so that the starts find it in the page cache.
fn warm(path: &Path) -> Result<u64, String> {
    let mut file = File::open(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let mut buf = vec![0u8; 1 << 20];
    let mut total = 0u64;
    loop {
        match file.read(&mut buf) {
            Ok(0) => return Ok(total),
            Ok(n) => total += n as u64,
            Err(e) => return Err(format!("{}: {e}", path.display())),
        }
    }
}

/// Seconds from starting `cmd` until its server accepts a connection on
/// `port`; the server is killed right after.
fn time_start(name: &str, cmd: &mut Command, port: u16, log: &Path) -> Result<f64, String> {
    super::with_logs(cmd, log)?;
    let started = Instant::now();
    let mut child = cmd
        .spawn()
        .map_err(|e| format!("could not start {name}: {e}"))?;
    let result = loop {
        if TcpStream::connect(("127.0.0.1", port)).is_ok() {
            break Ok(started.elapsed().as_secs_f64());
        }
        if let Ok(Some(status)) = child.try_wait() {
            break Err(format!("{name} exited ({status}); see {}", log.display()));
        }
        if started.elapsed() > START_LIMIT {
            break Err(format!(
                "{name} did not listen within {} s",
                START_LIMIT.as_secs()
            ));
        }
        thread::sleep(Duration::from_millis(1));
    };
    let _ = child.kill();
    let _ = child.wait();
    result
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// Measures both servers on both kinds of file.
pub(super) fn run(inputs: &Inputs<'_>) -> Result<Vec<Measured>, String> {
    super::process::header("server start on large files, with and without the index");
    let mut measured = Vec::new();
    for (k, kind) in KINDS.iter().enumerate() {
        let data = cached_file(inputs.target, kind)?;
        let index = data.with_file_name("Data.fs.index");
        let size = warm(&data)?;
        for server in ["rs", "py"] {
            let mut times = [Vec::new(), Vec::new()];
            for run in 0..RUNS {
                // Without the index first: the scan writes a new one, which
                // the start with the index then uses.
                for (with, times) in times.iter_mut().enumerate().rev() {
                    if with == 0 {
                        let _ = fs::remove_file(&index);
                    }
                    let port = super::free_port()?;
                    let addr = format!("127.0.0.1:{port}");
                    let mut cmd = Command::new(if server == "rs" {
                        inputs.server_bin
                    } else {
                        inputs.runzeo
                    });
                    cmd.args(["-a", &addr, "-f"]).arg(&data);
                    cmd.stdin(Stdio::null());
                    let log = inputs
                        .dir
                        .join(format!("start-{}-{server}-{run}.log", kind.name));
                    let name = super::server_title(server);
                    times.push(time_start(name, &mut cmd, port, &log)?);
                }
            }
            let m = Measured {
                kind: k,
                server,
                size,
                with_index: median(times[1].clone()),
                without_index: median(times[0].clone()),
            };
            println!(
                "  {:<20} {:<18}: {:.3} s with the index, {:.3} s without ({:.2} GB/s)",
                super::server_title(server),
                kind.title,
                m.with_index,
                m.without_index,
                m.size as f64 / m.without_index / 1e9
            );
            measured.push(m);
        }
    }
    Ok(measured)
}

/// The start lines of the results, with the ratios to runzeo.
pub(super) fn print(measured: &[Measured]) {
    println!();
    println!("Server start until accepting a connection (warm page cache, median of {RUNS}):");
    for (k, kind) in KINDS.iter().enumerate() {
        let get = |server: &str| measured.iter().find(|m| m.kind == k && m.server == server);
        let (Some(rs), Some(py)) = (get("rs"), get("py")) else {
            continue;
        };
        println!(
            "  {:<18} ({:.2} GB): with index zeo-server {:.3} s, runzeo {:.3} s = {:.2}x faster (aim <= 0.2 s, >= 1x); \
             without zeo-server {:.3} s ({:.2} GB/s, aim >= 1), runzeo {:.3} s ({:.2} GB/s) = {:.2}x faster",
            kind.title,
            rs.size as f64 / 1e9,
            rs.with_index,
            py.with_index,
            py.with_index / rs.with_index,
            rs.without_index,
            rs.size as f64 / rs.without_index / 1e9,
            py.without_index,
            py.size as f64 / py.without_index / 1e9,
            py.without_index / rs.without_index
        );
    }
}
