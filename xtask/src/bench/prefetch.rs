//! `--only-prefetch`: one Rust client's ping, cold loads and prefetched
//! loads on zeo-server, between two C ping-pong measurements of the same
//! run, so the prefetch figure reads as a multiple of the machine's
//! synchronous round-trip rate without the rest of the bench around it.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use super::pingpong::{self, PingPong};
use super::{capture, collect, raised_fd_limit, wait_listening, with_logs, Scratch};

/// What the run needs.
pub(super) struct Inputs<'a> {
    pub server_bin: &'a Path,
    pub client_bin: &'a Path,
    pub dir: &'a Path,
    pub duration: f64,
    pub objects: u64,
}

/// The figures of one run.
pub(super) struct Measured {
    /// The ping-pong before and after the client's workloads.
    pingpong: [PingPong; 2],
    /// Rate per second and p50 in µs of `ping`, `load` and `prefetch`.
    rates: BTreeMap<String, (f64, f64)>,
}

/// The workloads measured, in order.
const WORKLOADS: [&str; 3] = ["ping", "load", "prefetch"];

/// Starts zeo-server on a new Data.fs, stores the objects, and measures.
pub(super) fn run(
    scratch: &mut Scratch,
    inputs: &Inputs<'_>,
    before: PingPong,
) -> Result<Measured, String> {
    super::process::header("one Rust client on zeo-server: ping, cold and prefetched loads");
    let port = super::free_port()?;
    let addr = format!("127.0.0.1:{port}");
    let data = inputs.dir.join("rs").join("prefetch.fs");
    let mut cmd = raised_fd_limit(
        inputs.server_bin.as_os_str(),
        &[
            "-a".as_ref(),
            addr.as_ref(),
            "-f".as_ref(),
            data.as_os_str(),
        ],
    );
    with_logs(&mut cmd, &inputs.dir.join("rs").join("prefetch-server.log"))?;
    scratch.spawn("zeo-server", &mut cmd)?;
    wait_listening(scratch, "zeo-server", port)?;
    let objects = inputs.objects.to_string();
    let bench = |args: &[&str], limit: Duration| {
        capture(
            Command::new(inputs.client_bin)
                .args(["--server", &addr, "bench", "--objects", &objects])
                .args(args),
            limit,
        )
    };
    let out = bench(&["--prepare-only"], Duration::from_secs(300))?;
    print!("{addr}: {out}");
    let duration = inputs.duration.to_string();
    let workloads = WORKLOADS.join(",");
    let out = bench(
        &[
            "--json",
            "--clients",
            "1",
            "--duration",
            &duration,
            "--workloads",
            &workloads,
        ],
        Duration::from_secs_f64(60.0 + WORKLOADS.len() as f64 * (inputs.duration + 10.0)),
    )?;
    let mut results = BTreeMap::new();
    collect(&out, "rs", &mut results)?;
    scratch.check_alive("zeo-server")?;
    let after = pingpong::measure(inputs.dir, inputs.duration.max(1.0))?;
    println!(
        "C ping-pong after: {:.0} round trips/s, median {:.3} ms",
        after.per_sec,
        after.median_s * 1e3
    );
    let rates = results
        .into_iter()
        .map(|((_, _, workload, _), rate)| (workload, rate))
        .collect();
    Ok(Measured {
        pingpong: [before, after],
        rates,
    })
}

/// The lines of the results: each rate as a multiple of the ping-pong's.
pub(super) fn print(m: &Measured) {
    let [before, after] = m.pingpong;
    let limit = (before.per_sec + after.per_sec) / 2.0;
    println!();
    println!(
        "C ping-pong, 40 bytes on loopback: {:.0}/s before, {:.0}/s after (mean {limit:.0}/s), median {:.3} / {:.3} ms",
        before.per_sec,
        after.per_sec,
        before.median_s * 1e3,
        after.median_s * 1e3
    );
    for workload in WORKLOADS {
        let Some(&(rate, p50)) = m.rates.get(workload) else {
            continue;
        };
        let aim = if workload == "prefetch" {
            let verdict = if rate / limit >= 2.0 {
                "met"
            } else {
                "NOT met"
            };
            format!(" (aim >= 2x: {verdict})")
        } else {
            String::new()
        };
        println!(
            "  {workload:<9} on zeo-server, 1 client: {rate:>9.0}/s = {:.2}x the ping-pong's mean{aim} [p50 {:.3} ms]",
            rate / limit,
            p50 / 1e3
        );
    }
}
