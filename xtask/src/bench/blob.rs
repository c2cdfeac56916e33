//! The blob workload: one large blob (100 MB by default) committed and
//! then downloaded into an empty blob cache, through `runzeo` and through
//! `zeo-server` (each serving `<filestorage>` with a `blob-dir`), with the
//! Rust client (`zeo-client blob put` / `blob get`) and the stock Python
//! client (`tests/python/bench_blob.py`), all in the same run. Both
//! servers run side by side and take turns, round by round; each transfer
//! runs [`ROUNDS`] times and the fastest counts; the servers' peak
//! resident memory is read at the end.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use super::{
    capture, free_port, process, run_timed, wait_listening, with_logs, write_zeo_conf, Output,
    Scratch,
};

/// Transfers of each kind; the fastest is reported. Even, so that each
/// server goes first in half the rounds (see [`run`]).
const ROUNDS: usize = 4;

/// What the blob runs need.
pub(super) struct Inputs<'a> {
    pub runzeo: &'a Path,
    pub python: &'a Path,
    pub script: &'a Path,
    pub server_bin: &'a Path,
    pub client_bin: &'a Path,
    pub dir: &'a Path,
    pub megabytes: u64,
}

/// The best seconds of each transfer, and each server's peak RSS.
pub(super) struct Measured {
    megabytes: u64,
    /// `[server][client][direction]`: server 0 runzeo, 1 zeo-server;
    /// client 0 Rust, 1 Python; direction 0 up, 1 down.
    seconds: [[[f64; 2]; 2]; 2],
    peak_kib: [u64; 2],
    /// Seconds the input file's `fsync` took.
    fsync: f64,
    /// The server's CPU seconds (user and system, all threads) over all
    /// rounds, indexed as `seconds`.
    cpu: [[[f64; 2]; 2]; 2],
}

const SERVERS: [&str; 2] = ["runzeo", "zeo-server"];
const CLIENTS: [&str; 2] = ["Rust client", "Python client"];
const DIRECTIONS: [&str; 2] = ["up", "down"];

/// Writes `megabytes` MB of bytes that do not compress; returns the
/// seconds its one `fsync` took: what making such a blob durable costs on
/// this disk, which zeo-server pays at the vote and runzeo does not.
fn write_input(path: &Path, megabytes: u64) -> Result<f64, String> {
    let mut file = fs::File::create(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let mut block = vec![0u8; 1 << 20];
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    for _ in 0..megabytes {
        for b in block.iter_mut() {
            // xorshift: cheap bytes no file system compresses.
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            *b = x as u8;
        }
        file.write_all(&block)
            .map_err(|e| format!("{}: {e}", path.display()))?;
    }
    let started = std::time::Instant::now();
    file.sync_all()
        .map_err(|e| format!("{}: {e}", path.display()))?;
    Ok(started.elapsed().as_secs_f64())
}

/// Runs `cmd` to its end (killed past `limit`): its standard output
/// (unless `discard`) and its wall time, to the millisecond.
fn timed(cmd: &mut Command, limit: Duration, discard: bool) -> Result<(String, f64), String> {
    let output = if discard {
        Output::Discard
    } else {
        Output::Capture
    };
    run_timed(cmd, limit, output, Duration::from_millis(1))
}

/// A server's peak resident memory (`VmHWM`), KiB.
fn peak_kib(pid: u32) -> Result<u64, String> {
    let status = fs::read_to_string(format!("/proc/{pid}/status"))
        .map_err(|e| format!("/proc/{pid}/status: {e}"))?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .ok_or_else(|| format!("no VmHWM for pid {pid}"))
}

/// A process's CPU time so far, user and system, every thread it ran
/// (those gone included), in seconds: `/proc/PID/stat` in clock ticks
/// (`USER_HZ`, 100 on Linux), so good to 10 ms.
fn cpu_seconds(pid: u32) -> Result<f64, String> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat"))
        .map_err(|e| format!("/proc/{pid}/stat: {e}"))?;
    // Fields after the command name, which is in parentheses and may hold
    // spaces: state is the first, utime the 12th, stime the 13th.
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map(|(_, rest)| rest.split_whitespace().collect())
        .unwrap_or_default();
    let tick = |i: usize| fields.get(i).and_then(|f| f.parse::<u64>().ok());
    match (tick(11), tick(12)) {
        (Some(user), Some(system)) => Ok((user + system) as f64 / 100.0),
        _ => Err(format!("/proc/{pid}/stat: no utime/stime in {stat:?}")),
    }
}

/// Starts one server on a `<filestorage>` with a blob directory in `dir`.
fn start_server(
    scratch: &mut Scratch,
    inputs: &Inputs<'_>,
    which: usize,
    dir: &Path,
) -> Result<(u16, u32), String> {
    fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let port = free_port()?;
    let conf = write_zeo_conf(
        dir,
        &format!("127.0.0.1:{port}"),
        "",
        &format!("  blob-dir {}\n", dir.join("blobs").display()),
    )?;
    let program = if which == 0 {
        inputs.runzeo
    } else {
        inputs.server_bin
    };
    let mut cmd = Command::new(program);
    cmd.arg("-C").arg(&conf);
    with_logs(&mut cmd, &dir.join("server.log"))?;
    let name = format!("{} (blobs)", SERVERS[which]);
    let pid = scratch.spawn(&name, &mut cmd)?;
    wait_listening(scratch, &name, port)?;
    Ok((port, pid))
}

fn words(text: &str, n: usize) -> Result<Vec<String>, String> {
    let words: Vec<String> = text.split_whitespace().map(str::to_owned).collect();
    if words.len() < n {
        return Err(format!("expected {n} words, got {text:?}"));
    }
    Ok(words)
}

/// Hands the page cache that a server's files in `dir` hold back to the
/// kernel once a round is over (their blobs are not read again): each file
/// is synced, then dropped from the cache (`POSIX_FADV_DONTNEED`).
///
/// Without this the servers' blob directories keep 200 MB more of the
/// cache each round, and on a virtual machine that hands freed memory back
/// to its host the writes of later rounds land on pages the host must
/// provide anew, at several times the cost of a copy (2.7 ms per MB
/// against 0.5, seen as the server's CPU per MB). Which transfer pays
/// depends on the order: without the release, Python-client uploads to
/// zeo-server, the last writes of its rounds, measured 0.24x to 0.51x
/// runzeo's in four runs.
fn release_page_cache(dir: &Path) {
    // `off_t` is 64 bits wide there, as declared below.
    #[cfg(all(target_os = "linux", target_pointer_width = "64"))]
    {
        use std::os::fd::AsRawFd;
        extern "C" {
            fn posix_fadvise(fd: i32, offset: i64, len: i64, advice: i32) -> i32;
        }
        const POSIX_FADV_DONTNEED: i32 = 4;
        let mut pending = vec![dir.to_path_buf()];
        // Bounded: the servers' blob directories are a few levels deep.
        while let Some(d) = pending.pop() {
            let Ok(entries) = fs::read_dir(&d) else {
                continue;
            };
            for entry in entries.flatten() {
                let path = entry.path();
                match entry.file_type() {
                    Ok(t) if t.is_dir() => pending.push(path),
                    Ok(t) if t.is_file() => {
                        if let Ok(file) = fs::File::open(&path) {
                            let _ = file.sync_all();
                            // SAFETY: the descriptor is open for this call.
                            unsafe { posix_fadvise(file.as_raw_fd(), 0, 0, POSIX_FADV_DONTNEED) };
                        }
                    }
                    _ => {}
                }
            }
        }
    }
    #[cfg(not(all(target_os = "linux", target_pointer_width = "64")))]
    let _ = dir;
}

/// One blob up and down with each client, the `round`th time.
fn transfers(
    inputs: &Inputs<'_>,
    port: u16,
    dir: &Path,
    input: &Path,
    round: usize,
    (pid, best, cpu): (u32, &mut [[f64; 2]; 2], &mut [[f64; 2]; 2]),
) -> Result<(), String> {
    let mut spent = |client: usize, dir: usize, since: f64| -> Result<f64, String> {
        let now = cpu_seconds(pid)?;
        cpu[client][dir] += now - since;
        Ok(now)
    };
    let start = cpu_seconds(pid)?;
    let addr = format!("127.0.0.1:{port}");
    let limit = Duration::from_secs(120 + inputs.megabytes);
    let cache = |name: &str, round: usize| dir.join(format!("{name}-{round}"));
    let path = |p: &Path| p.to_string_lossy().into_owned();
    // The Rust client.
    let up_cache = cache("rs-up", round);
    let client = |args: &[&str]| {
        let mut cmd = Command::new(inputs.client_bin);
        cmd.args(["--server", &addr, "--timeout", "600", "blob"])
            .args(args);
        cmd
    };
    let (out, up) = timed(
        &mut client(&["put", &path(input), "--blob-dir", &path(&up_cache)]),
        limit,
        false,
    )?;
    let mark = spent(0, 0, start)?;
    let ids = words(&out, 2)?;
    let down_cache = cache("rs-down", round);
    let (_, down) = timed(
        &mut client(&[
            "get",
            &format!("0x{}", ids[0]),
            "--tid",
            &format!("0x{}", ids[1]),
            "--blob-dir",
            &path(&down_cache),
        ]),
        limit,
        true,
    )?;
    let mark = spent(0, 1, mark)?;
    best[0][0] = best[0][0].min(up);
    best[0][1] = best[0][1].min(down);
    // The Python client times itself, from an open database (up) and
    // from before connecting (down).
    let up_cache_py = cache("py-up", round);
    let out = capture(
        Command::new(inputs.python).arg(inputs.script).args([
            "up",
            &port.to_string(),
            &path(input),
            &path(&up_cache_py),
        ]),
        limit,
    )?;
    let mark = spent(1, 0, mark)?;
    let up_py = words(&out, 3)?;
    let down_cache_py = cache("py-down", round);
    let out = capture(
        Command::new(inputs.python).arg(inputs.script).args([
            "down",
            &port.to_string(),
            &up_py[0],
            &up_py[1],
            &path(&down_cache_py),
        ]),
        limit,
    )?;
    spent(1, 1, mark)?;
    let seconds = |s: &str| {
        s.parse::<f64>()
            .map_err(|e| format!("not a time: {s:?}: {e}"))
    };
    best[1][0] = best[1][0].min(seconds(&up_py[2])?);
    best[1][1] = best[1][1].min(seconds(words(&out, 1)?[0].as_str())?);
    for c in [up_cache, down_cache, up_cache_py, down_cache_py] {
        let _ = fs::remove_dir_all(c);
    }
    release_page_cache(dir);
    Ok(())
}

/// Measures both servers, running each round on one and then the other,
/// so that a change in the machine's load during the run weighs on both.
/// The server that goes first alternates: whichever goes second is slower
/// on this kind of machine even when both are runzeo (about 2% on 100 MB
/// Python downloads, median of 15 pairs), so a fixed order would favour
/// the first.
pub(super) fn run(scratch: &mut Scratch, inputs: &Inputs<'_>) -> Result<Measured, String> {
    process::header(&format!(
        "blobs: {} MB up and down, Rust and Python clients, runzeo and zeo-server",
        inputs.megabytes
    ));
    let input = inputs.dir.join("blob-input.bin");
    let fsync = write_input(&input, inputs.megabytes)?;
    let mut measured = Measured {
        megabytes: inputs.megabytes,
        seconds: [[[f64::INFINITY; 2]; 2]; 2],
        peak_kib: [0; 2],
        fsync,
        cpu: [[[0.0; 2]; 2]; 2],
    };
    let mut started = Vec::new();
    for (which, server) in SERVERS.iter().enumerate() {
        let dir: PathBuf = inputs.dir.join(format!("blob-{server}"));
        let (port, pid) = start_server(scratch, inputs, which, &dir)?;
        started.push((dir, port, pid));
    }
    for round in 0..ROUNDS {
        for turn in 0..SERVERS.len() {
            let which = if round % 2 == 0 { turn } else { 1 - turn };
            let (dir, port, pid) = &started[which];
            transfers(
                inputs,
                *port,
                dir,
                &input,
                round,
                (*pid, &mut measured.seconds[which], &mut measured.cpu[which]),
            )?;
        }
    }
    for (which, server) in SERVERS.iter().enumerate() {
        measured.peak_kib[which] = peak_kib(started[which].2)?;
        scratch.check_alive(&format!("{server} (blobs)"))?;
    }
    let _ = fs::remove_file(&input);
    Ok(measured)
}

/// One line per client and direction: `value(server, client, direction)`
/// for runzeo and zeo-server, `(width, decimals)` each, and their ratio.
fn ratio_rows(
    indent: &str,
    label: usize,
    (width, decimals): (usize, usize),
    value: impl Fn(usize, usize, usize) -> f64,
) {
    for (client, client_name) in CLIENTS.iter().enumerate() {
        for (dir, direction) in DIRECTIONS.iter().enumerate() {
            let (old, new) = (value(0, client, dir), value(1, client, dir));
            println!(
                "{indent}{:<label$} runzeo {old:>width$.decimals$}  zeo-server {new:>width$.decimals$}  ratio {:.2}x",
                format!("{direction} {client_name}"),
                new / old
            );
        }
    }
}

/// The blob lines of the results: MB/s per server and client, the ratio
/// zeo-server / runzeo for each client, and zeo-server with the Rust
/// client against runzeo with the Python client.
pub(super) fn print(m: &Measured) {
    let rate = |server: usize, client: usize, dir: usize| {
        m.megabytes as f64 / m.seconds[server][client][dir]
    };
    println!();
    println!(
        "Blobs, {} MB (best of {ROUNDS}, MB/s; ratio = zeo-server / runzeo):",
        m.megabytes
    );
    ratio_rows("  ", 22, (7, 1), rate);
    for (dir, direction) in DIRECTIONS.iter().enumerate() {
        println!(
            "  {direction:<5} zeo-server + Rust client / runzeo + Python client: {:.2}x (aim >= 2x)",
            rate(1, 0, dir) / rate(0, 1, dir)
        );
    }
    // CPU time does not shift with the machine's load the way a 0.1 s
    // transfer's wall time does: the steadier comparison of the servers.
    let per_mb = |server: usize, client: usize, dir: usize| {
        1000.0 * m.cpu[server][client][dir] / (ROUNDS as f64 * m.megabytes as f64)
    };
    println!(
        "  server CPU per MB (ms, user + system, mean of {ROUNDS}; ratio = zeo-server / runzeo):"
    );
    ratio_rows("    ", 20, (6, 3), per_mb);
    println!(
        "  peak server RSS over the run: runzeo {} MiB, zeo-server {} MiB",
        m.peak_kib[0] / 1024,
        m.peak_kib[1] / 1024
    );
    println!(
        "  fsync of the {} MB input file: {:.0} ms, {:.0}% of zeo-server's best Rust-client upload",
        m.megabytes,
        m.fsync * 1000.0,
        100.0 * m.fsync / m.seconds[1][0][0]
    );
}
