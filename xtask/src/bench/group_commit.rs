//! Group commit figures: zeo-server with and without group commit, on the
//! disk as it is and with every commit fsync slowed by 2 ms (the
//! FileStorage fault seam, through `zeo-server --bench-fsync-delay-us`), each
//! measured with 1 and 8 committing clients in the same run, with the
//! fsyncs per commit read from `server_status` before and after.

use std::fs;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use super::{capture, field, raised_fd_limit, wait_listening, with_logs, Fsync, Scratch};

/// The injected fsync latency, microseconds.
const SLOW_FSYNC_US: u64 = 2000;
/// Committer counts measured on every server.
const COMMITTERS: [usize; 2] = [1, 8];

/// One server set-up.
struct Setup {
    title: &'static str,
    group: bool,
    delay_us: u64,
}

const SETUPS: [Setup; 4] = [
    Setup {
        title: "group commit",
        group: true,
        delay_us: 0,
    },
    Setup {
        title: "no group commit",
        group: false,
        delay_us: 0,
    },
    Setup {
        title: "group commit, fsync +2 ms",
        group: true,
        delay_us: SLOW_FSYNC_US,
    },
    Setup {
        title: "no group commit, fsync +2 ms",
        group: false,
        delay_us: SLOW_FSYNC_US,
    },
];

/// One measurement: commits/s, p50 latency (µs) and fsyncs per commit.
#[derive(Clone, Copy, Debug)]
pub(super) struct Measured {
    setup: usize,
    committers: usize,
    rate: f64,
    p50_us: f64,
    fsyncs_per_commit: f64,
}

/// What the group commit runs need.
pub(super) struct Inputs<'a> {
    pub server_bin: &'a Path,
    pub client_bin: &'a Path,
    pub dir: &'a Path,
    pub duration: f64,
}

/// `commits` and `fsyncs` from the server's `server_status`.
fn counters(client_bin: &Path, addr: &str) -> Result<(f64, f64), String> {
    let out = capture(
        Command::new(client_bin).args(["--server", addr, "status", "--json"]),
        Duration::from_secs(60),
    )?;
    let number = |key: &str| {
        field(&out, key)
            .and_then(|v| v.parse::<f64>().ok())
            .ok_or_else(|| format!("no {key} in the status: {out}"))
    };
    Ok((number("commits")?, number("fsyncs")?))
}

/// Starts one server per set-up in turn and measures it.
pub(super) fn run(scratch: &mut Scratch, inputs: &Inputs<'_>) -> Result<Vec<Measured>, String> {
    super::process::header("group commit: 1 and 8 committers, with and without");
    let mut measured = Vec::new();
    for (i, setup) in SETUPS.iter().enumerate() {
        let dir = inputs.dir.join(format!("group-{i}"));
        fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        let port = super::free_port()?;
        let addr = format!("127.0.0.1:{port}");
        let data = dir.join("Data.fs");
        let mut args: Vec<&std::ffi::OsStr> = vec![
            "-a".as_ref(),
            addr.as_ref(),
            "-f".as_ref(),
            data.as_os_str(),
        ];
        if !setup.group {
            args.push("--no-group-commit".as_ref());
        }
        let delay = setup.delay_us.to_string();
        if setup.delay_us > 0 {
            args.push("--bench-fsync-delay-us".as_ref());
            args.push(delay.as_ref());
        }
        let mut cmd = raised_fd_limit(inputs.server_bin.as_os_str(), &args);
        with_logs(&mut cmd, &dir.join("server.log"))?;
        let name = format!("zeo-server ({})", setup.title);
        scratch.spawn(&name, &mut cmd)?;
        wait_listening(scratch, &name, port)?;
        for committers in COMMITTERS {
            let (commits0, fsyncs0) = counters(inputs.client_bin, &addr)?;
            let out = capture(
                Command::new(inputs.client_bin).args([
                    "--server",
                    &addr,
                    "bench",
                    "--json",
                    "--clients",
                    &committers.to_string(),
                    "--duration",
                    &inputs.duration.to_string(),
                    "--objects",
                    "1000",
                    "--workloads",
                    "commit",
                ]),
                Duration::from_secs_f64(120.0 + inputs.duration),
            )?;
            let (commits1, fsyncs1) = counters(inputs.client_bin, &addr)?;
            let line = out
                .lines()
                .find(|l| field(l, "workload") == Some("commit"))
                .ok_or_else(|| format!("no commit result in {out:?}"))?;
            let number = |key: &str| {
                field(line, key)
                    .and_then(|v| v.parse::<f64>().ok())
                    .ok_or_else(|| format!("no {key} in {line:?}"))
            };
            let m = Measured {
                setup: i,
                committers,
                rate: number("ops_per_sec")?,
                p50_us: number("p50_us")?,
                fsyncs_per_commit: (fsyncs1 - fsyncs0) / (commits1 - commits0).max(1.0),
            };
            println!(
                "  {:<30} x{committers}: {:>8.0} commits/s, p50 {:.3} ms, {:.3} fsyncs per commit",
                setup.title,
                m.rate,
                m.p50_us / 1e3,
                m.fsyncs_per_commit
            );
            measured.push(m);
        }
    }
    Ok(measured)
}

/// The group commit lines of the results, as ratios to the same run's
/// figures without group commit and to the physical limit (one commit per
/// fsync).
pub(super) fn print(measured: &[Measured], fsync: Fsync) {
    let get = |setup: usize, committers: usize| {
        measured
            .iter()
            .find(|m| m.setup == setup && m.committers == committers)
    };
    println!();
    println!(
        "Group commit (same run; fsync probe mean {:.3} ms):",
        fsync.mean * 1e3
    );
    for (i, setup) in SETUPS.iter().enumerate() {
        for committers in COMMITTERS {
            if let Some(m) = get(i, committers) {
                let per_fsync = 1.0 / (fsync.mean + setup.delay_us as f64 / 1e6);
                println!(
                    "  {:<30} x{committers}: {:>8.0} commits/s = {:.2}x one commit per fsync ({per_fsync:.0}/s), {:.3} fsyncs per commit, p50 {:.3} ms",
                    setup.title,
                    m.rate,
                    m.rate / per_fsync,
                    m.fsyncs_per_commit,
                    m.p50_us / 1e3
                );
            }
        }
    }
    let ratio = |a: Option<&Measured>, b: Option<&Measured>| match (a, b) {
        (Some(a), Some(b)) if b.rate > 0.0 => format!("{:.2}x", a.rate / b.rate),
        _ => "n/a".into(),
    };
    let fsyncs = get(0, 8).map_or("n/a".into(), |m| format!("{:.3}", m.fsyncs_per_commit));
    println!("  8 committers, fsyncs per commit with group commit: {fsyncs} (aim <= 0.35)");
    println!(
        "  8 committers, group commit / none: {} (aim >= 2x); with fsync +2 ms: {}",
        ratio(get(0, 8), get(1, 8)),
        ratio(get(2, 8), get(3, 8))
    );
    if let Some(m) = get(2, 8) {
        let per_fsync = 1.0 / (fsync.mean + SLOW_FSYNC_US as f64 / 1e6);
        println!(
            "  8 committers with fsync +2 ms: {:.2}x the one-commit-per-fsync rate (aim >= 3x)",
            m.rate / per_fsync
        );
    }
    println!(
        "  1 committer, group commit / none: {} (aim >= 1x)",
        ratio(get(0, 1), get(1, 1))
    );
}
