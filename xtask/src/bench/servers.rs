//! Two zeo-servers over one PostgreSQL database: how long a commit made
//! through one server takes to reach a client of the other, and what
//! commits per second two servers with four clients each reach next to one
//! server with all eight.
//!
//! The database is a throwaway PostgreSQL cluster in the scratch directory
//! (Unix socket only, `fsync=off`: what is compared is the servers'
//! work, not the disk's). The clients are raw `Z5` connections opened by
//! this process (`connections.rs`), each on a thread of its own, committing
//! one new object per transaction (`tpc_begin`, `storea`, `vote`,
//! `tpc_finish`, as a stock client sends them); every client writes its
//! own objects, so no commit conflicts.

use std::path::Path;
use std::sync::{mpsc, Arc, Barrier};
use std::thread;
use std::time::{Duration, Instant};

use super::connections::{commit, contains, pct, read_frame, registered};
use super::postgresql::{self, Cluster};
use super::Scratch;

/// Commits timed from server A to a client of server B.
const DELAY_COMMITS: usize = 300;
/// Clients in each throughput run, split evenly over the servers.
const CLIENTS: usize = 8;
/// How long an invalidation may take before the run fails.
const RECEIVE_LIMIT: Duration = Duration::from_secs(30);

/// What the two-server runs need.
pub(super) struct Inputs<'a> {
    pub server_bin: &'a Path,
    pub dir: &'a Path,
    /// Seconds of each throughput run.
    pub duration: f64,
}

/// The figures of one run.
pub(super) struct Measured {
    /// Seconds from sending `tpc_finish` to A until B's client had the
    /// invalidation, sorted.
    delays: Vec<f64>,
    /// Seconds from sending `tpc_finish` to A until its reply, sorted: the
    /// commit's own share of the delay.
    finishes: Vec<f64>,
    /// Commits per second: one server with all clients, two servers with
    /// half of them each.
    one_server: f64,
    two_servers: f64,
}

/// Commits [`DELAY_COMMITS`] one-object transactions through `a`, each
/// timed until a client registered with `b` receives its invalidation;
/// returns those delays and the `tpc_finish` round trips, both sorted.
fn delays(a: u16, b: u16) -> Result<(Vec<f64>, Vec<f64>), String> {
    let (tx, rx) = mpsc::channel::<Result<Instant, String>>();
    let mut receiver = registered(b)?;
    let reading = thread::spawn(move || {
        for _ in 0..DELAY_COMMITS {
            let got = loop {
                match read_frame(&mut receiver) {
                    Ok(f) if contains(&f, b"invalidateTransaction") => break Ok(Instant::now()),
                    Ok(_) => {}
                    Err(e) => break Err(format!("client of B: {e}")),
                }
            };
            let failed = got.is_err();
            if tx.send(got).is_err() || failed {
                return;
            }
        }
    });
    let mut committer = registered(a)?;
    let mut delays = Vec::with_capacity(DELAY_COMMITS);
    let mut finishes = Vec::with_capacity(DELAY_COMMITS);
    for k in 0..DELAY_COMMITS {
        let mut sent = None;
        commit(
            &mut committer,
            k as u32 + 1,
            (3 << 40) + k as u64,
            &mut sent,
        )?;
        let sent = sent.ok_or("tpc_finish was not sent")?;
        finishes.push(sent.elapsed().as_secs_f64());
        let at = rx.recv_timeout(RECEIVE_LIMIT).map_err(|_| {
            "an invalidation did not reach the client of B within 30 s".to_owned()
        })??;
        delays.push(at.saturating_duration_since(sent).as_secs_f64());
    }
    let _ = reading.join();
    delays.sort_by(f64::total_cmp);
    finishes.sort_by(f64::total_cmp);
    Ok((delays, finishes))
}

/// Commits per second of [`CLIENTS`] clients spread round-robin over
/// `ports`, each committing its own new objects for `duration` seconds.
/// `run` keeps the oids of different runs apart.
fn throughput(ports: &[u16], duration: f64, run: u64) -> Result<f64, String> {
    let start = Arc::new(Barrier::new(CLIENTS + 1));
    let mut clients = Vec::with_capacity(CLIENTS);
    for c in 0..CLIENTS {
        let mut s = registered(ports[c % ports.len()])?;
        let start = start.clone();
        let first_oid = (4 << 40) + (run << 32) + ((c as u64) << 24);
        clients.push(thread::spawn(move || -> Result<u64, String> {
            start.wait();
            let until = Instant::now() + Duration::from_secs_f64(duration);
            let mut done = 0u64;
            while Instant::now() < until {
                let mut sent = None;
                commit(&mut s, done as u32 + 1, first_oid + done, &mut sent)?;
                done += 1;
            }
            Ok(done)
        }));
    }
    start.wait();
    let began = Instant::now();
    let mut total = 0;
    for client in clients {
        total += client.join().map_err(|_| "a client thread panicked")??;
    }
    Ok(total as f64 / began.elapsed().as_secs_f64())
}

/// Starts the cluster and the servers, and measures.
pub(super) fn run(scratch: &mut Scratch, inputs: &Inputs<'_>) -> Result<Measured, String> {
    super::process::header("two zeo-servers over one PostgreSQL database");
    let bin = crate::postgres::ensure_installed()?;
    let database = Cluster::start(
        bin,
        inputs.dir.join("servers-pg"),
        "-c fsync=off -c max_connections=100",
    )?;
    database.create_database("zodb")?;
    let dsn = database.dsn("zodb");
    let start_server = |scratch: &mut Scratch, name, stem| {
        postgresql::start_server(scratch, (inputs.server_bin, inputs.dir), &dsn, name, stem)
    };
    let a = start_server(scratch, "zeo-server A", "servers-a")?;
    // One server alone first: B does not yet read the database.
    let one_server = throughput(&[a], inputs.duration, 1)?;
    println!("  1 server x {CLIENTS} clients: {one_server:.0} commits/s");
    let b = start_server(scratch, "zeo-server B", "servers-b")?;
    let (delays, finishes) = delays(a, b)?;
    println!(
        "  commit on A to a client of B over {DELAY_COMMITS} commits: p50 {:.2} ms, p99 {:.2} ms",
        pct(&delays, 0.5) * 1e3,
        pct(&delays, 0.99) * 1e3
    );
    let two_servers = throughput(&[a, b], inputs.duration, 2)?;
    println!(
        "  2 servers x {} clients: {two_servers:.0} commits/s",
        CLIENTS / 2
    );
    scratch.check_alive("zeo-server A")?;
    scratch.check_alive("zeo-server B")?;
    drop(database);
    Ok(Measured {
        delays,
        finishes,
        one_server,
        two_servers,
    })
}

/// The table of one run.
pub(super) fn print(m: &Measured) {
    println!("Two zeo-servers over one PostgreSQL database");
    println!(
        "  {:<40} {:>9} {:>9}",
        format!("{} commits through A (ms)", m.delays.len()),
        "p50",
        "p99"
    );
    let row = |what: &str, sorted: &[f64]| {
        println!(
            "  {what:<40} {:>9.2} {:>9.2}",
            pct(sorted, 0.5) * 1e3,
            pct(sorted, 0.99) * 1e3
        )
    };
    row("tpc_finish reply on A", &m.finishes);
    row("invalidation at a client of B", &m.delays);
    println!(
        "  {:<40} {:>9.2} {:>9.2}",
        "ratio B's invalidation / A's reply",
        pct(&m.delays, 0.5) / pct(&m.finishes, 0.5),
        pct(&m.delays, 0.99) / pct(&m.finishes, 0.99)
    );
    println!("  {:<26} {:>10} {:>7}", "commits/s", "", "ratio");
    println!(
        "  {:<26} {:>10.0} {:>7.2}",
        format!("1 server x {CLIENTS} clients"),
        m.one_server,
        1.0
    );
    println!(
        "  {:<26} {:>10.0} {:>7.2}",
        format!("2 servers x {} clients", CLIENTS / 2),
        m.two_servers,
        m.two_servers / m.one_server
    );
}
