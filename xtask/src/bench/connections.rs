//! Figures with many connected clients, zeo-server next to runzeo, each on
//! a fresh Data.fs: how long a commit's invalidation takes to reach the
//! last of [`FANOUT_CLIENTS`] registered clients, and the server's memory
//! per idle connection with [`IDLE_CLIENTS`] of them.
//!
//! The clients are raw `Z5` connections opened by this process (a blocking
//! thread with a small stack per receiver), not client processes, so what
//! is measured is the server: a receiver stamps the arrival of the frame
//! that carries `invalidateTransaction`, and one more connection commits a
//! one-object transaction with the calls a stock client sends
//! (`tpc_begin`, `storea`, `vote`, `tpc_finish`). The time of a commit is
//! counted from sending `tpc_finish`, so it includes the commit's fsync.
//! This process raises its own descriptor limit with `setrlimit`.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::Command;
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use super::start_scan::Inputs;
use super::{free_port, raised_fd_limit, vm_rss_kib, wait_listening, with_logs, Scratch};

/// Registered clients that receive each commit's invalidation.
pub(super) const FANOUT_CLIENTS: usize = 1_000;
/// Commits timed per server.
const COMMITS: usize = 100;
/// Idle registered connections for the memory figure.
pub(super) const IDLE_CLIENTS: usize = 10_000;
/// How long any one read may wait.
const READ_LIMIT: Duration = Duration::from_secs(30);

/// Both figures for one server.
#[derive(Clone, Debug)]
pub(super) struct Measured {
    server: &'static str,
    /// Per commit: seconds from sending `tpc_finish` until the last
    /// receiver had the invalidation, sorted.
    last: Vec<f64>,
    /// Every receiver's delay over all commits, sorted.
    all: Vec<f64>,
    /// Resident KiB before the idle connections and with them.
    rss_before: u64,
    rss_with: u64,
    idle: usize,
}

/// A pickled (protocol 3) `(msgid, async, method, args)` frame, as a stock
/// client writes them (no memo); `args` is a pickled tuple.
pub(super) fn call_frame(msgid: u32, oneway: bool, method: &str, args: &[u8]) -> Vec<u8> {
    let mut p = vec![0x80, 3, b'(', b'J'];
    p.extend_from_slice(&msgid.to_le_bytes());
    p.push(if oneway { 0x88 } else { 0x89 });
    p.push(b'X');
    p.extend_from_slice(&(method.len() as u32).to_le_bytes());
    p.extend_from_slice(method.as_bytes());
    p.extend_from_slice(args);
    p.extend_from_slice(b"t.");
    let mut frame = (p.len() as u32).to_be_bytes().to_vec();
    frame.extend_from_slice(&p);
    frame
}

/// `register("1", False)`.
pub(super) fn register_frame() -> Vec<u8> {
    call_frame(1, false, "register", b"X\x01\x00\x00\x001\x89\x86")
}

/// A pickled 8-byte string (`SHORT_BINBYTES`).
fn bytes8(v: u64) -> Vec<u8> {
    let mut b = vec![b'C', 8];
    b.extend_from_slice(&v.to_be_bytes());
    b
}

/// Reads one frame's payload.
pub(super) fn read_frame(s: &mut TcpStream) -> std::io::Result<Vec<u8>> {
    let mut len = [0u8; 4];
    s.read_exact(&mut len)?;
    let n = u32::from_be_bytes(len) as usize;
    if n > 64 << 20 {
        return Err(std::io::Error::other(format!("frame of {n} bytes")));
    }
    let mut payload = vec![0u8; n];
    s.read_exact(&mut payload)?;
    Ok(payload)
}

pub(super) fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

/// A connection that has shaken hands and registered, with the reply read.
pub(super) fn registered(port: u16) -> Result<TcpStream, String> {
    let io = |e: std::io::Error| format!("client of 127.0.0.1:{port}: {e}");
    let mut s = TcpStream::connect(("127.0.0.1", port)).map_err(io)?;
    s.set_read_timeout(Some(READ_LIMIT)).map_err(io)?;
    s.set_nodelay(true).map_err(io)?;
    read_frame(&mut s).map_err(io)?;
    s.write_all(&[0, 0, 0, 2, b'Z', b'5']).map_err(io)?;
    s.write_all(&register_frame()).map_err(io)?;
    loop {
        if contains(&read_frame(&mut s).map_err(io)?, b".reply") {
            return Ok(s);
        }
    }
}

/// Reads frames until a reply comes; fails on an error reply.
fn await_reply(s: &mut TcpStream, what: &str) -> Result<(), String> {
    loop {
        let frame = read_frame(s).map_err(|e| format!("{what}: {e}"))?;
        if contains(&frame, b".reply") {
            if contains(&frame, b"Error") || contains(&frame, b"Exception") {
                return Err(format!(
                    "{what} failed: {}",
                    String::from_utf8_lossy(&frame)
                ));
            }
            return Ok(());
        }
    }
}

/// One one-object commit of the new object `oid`; returns when
/// `tpc_finish` was sent, then waits for its reply.
pub(super) fn commit(
    s: &mut TcpStream,
    txn: u32,
    oid: u64,
    sent: &mut Option<Instant>,
) -> Result<(), String> {
    let io = |e: std::io::Error| format!("committer: {e}");
    let mut id = vec![b'J'];
    id.extend_from_slice(&txn.to_le_bytes());
    // tpc_begin(id, b"", b"", {}, None, " ")
    let mut begin = vec![b'('];
    begin.extend_from_slice(&id);
    begin.extend_from_slice(b"C\x00C\x00}NX\x01\x00\x00\x00 t");
    // storea(oid, z64, data, id): the data is a pickle of the int 1.
    let mut store = vec![b'('];
    store.extend_from_slice(&bytes8(oid));
    store.extend_from_slice(&bytes8(0));
    store.extend_from_slice(b"C\x05\x80\x03K\x01.");
    store.extend_from_slice(&id);
    store.push(b't');
    let mut one = vec![b'('];
    one.extend_from_slice(&id);
    one.push(b't');
    let mut out = call_frame(0, true, "tpc_begin", &begin);
    out.extend(call_frame(0, true, "storea", &store));
    out.extend(call_frame(2, false, "vote", &one));
    s.write_all(&out).map_err(io)?;
    await_reply(s, "vote")?;
    *sent = Some(Instant::now());
    s.write_all(&call_frame(3, false, "tpc_finish", &one))
        .map_err(io)?;
    await_reply(s, "tpc_finish")
}

/// Raises this process's soft descriptor limit to its hard limit.
pub(super) fn raise_fd_limit() {
    #[repr(C)]
    struct Rlimit {
        cur: u64,
        max: u64,
    }
    extern "C" {
        fn getrlimit(resource: i32, rlim: *mut Rlimit) -> i32;
        fn setrlimit(resource: i32, rlim: *const Rlimit) -> i32;
    }
    const RLIMIT_NOFILE: i32 = 7;
    let mut lim = Rlimit { cur: 0, max: 0 };
    // SAFETY: both calls only read or write the struct passed, which has
    // the layout of `struct rlimit` on 64-bit Linux.
    unsafe {
        if getrlimit(RLIMIT_NOFILE, &mut lim) == 0 && lim.cur < lim.max {
            lim.cur = lim.max;
            setrlimit(RLIMIT_NOFILE, &lim);
        }
    }
}

/// Starts `server` ("rs" or "py") on a fresh Data.fs; returns its port and pid.
fn start(scratch: &mut Scratch, inputs: &Inputs<'_>, server: &str) -> Result<(u16, u32), String> {
    let dir = inputs.dir.join(format!("connections-{server}"));
    std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let port = free_port()?;
    let addr = format!("127.0.0.1:{port}");
    // zeo-server caps connections (1,024, and 256 per peer address) by
    // default; runzeo does not and rejects the keys.
    let (program, limits) = if server == "rs" {
        (
            inputs.server_bin,
            "  max-connections 0\n  max-connections-per-address 0\n",
        )
    } else {
        (inputs.runzeo, "")
    };
    let conf = super::write_zeo_conf(&dir, &addr, limits, "")?;
    let mut cmd: Command = raised_fd_limit(program.as_os_str(), &["-C".as_ref(), conf.as_os_str()]);
    with_logs(&mut cmd, &dir.join("server.log"))?;
    let name = super::server_title(server);
    let pid = scratch.spawn(name, &mut cmd)?;
    wait_listening(scratch, name, port)?;
    Ok((port, pid))
}

/// The fan-out of [`COMMITS`] commits to [`FANOUT_CLIENTS`] receivers.
fn fanout(port: u16) -> Result<(Vec<f64>, Vec<f64>), String> {
    let (tx, rx) = mpsc::channel::<Result<Instant, String>>();
    let mut receivers = Vec::new();
    for _ in 0..FANOUT_CLIENTS {
        let mut s = registered(port)?;
        let tx = tx.clone();
        let handle = thread::Builder::new()
            .stack_size(64 << 10)
            .spawn(move || {
                for _ in 0..COMMITS {
                    let got = loop {
                        match read_frame(&mut s) {
                            Ok(f) if contains(&f, b"invalidateTransaction") => {
                                break Ok(Instant::now())
                            }
                            Ok(_) => {}
                            Err(e) => break Err(format!("receiver: {e}")),
                        }
                    };
                    let failed = got.is_err();
                    if tx.send(got).is_err() || failed {
                        return;
                    }
                }
            })
            .map_err(|e| format!("receiver thread: {e}"))?;
        receivers.push(handle);
    }
    drop(tx);
    let mut committer = registered(port)?;
    let mut last = Vec::new();
    let mut all = Vec::new();
    for k in 0..COMMITS {
        let mut sent = None;
        commit(
            &mut committer,
            k as u32 + 1,
            (1 << 40) + k as u64,
            &mut sent,
        )?;
        let sent = sent.ok_or("tpc_finish was not sent")?;
        let mut latest = 0.0f64;
        for _ in 0..FANOUT_CLIENTS {
            let at = rx
                .recv_timeout(READ_LIMIT)
                .map_err(|_| "an invalidation did not arrive within 30 s".to_owned())??;
            let delay = at.saturating_duration_since(sent).as_secs_f64();
            latest = latest.max(delay);
            all.push(delay);
        }
        last.push(latest);
    }
    for r in receivers {
        let _ = r.join();
    }
    last.sort_by(f64::total_cmp);
    all.sort_by(f64::total_cmp);
    Ok((last, all))
}

/// Measures both servers.
pub(super) fn run(scratch: &mut Scratch, inputs: &Inputs<'_>) -> Result<Vec<Measured>, String> {
    super::process::header(&format!(
        "invalidation fan-out to {FANOUT_CLIENTS} clients, memory with {IDLE_CLIENTS} idle connections"
    ));
    raise_fd_limit();
    let mut measured = Vec::new();
    for server in ["rs", "py"] {
        let (port, pid) = start(scratch, inputs, server)?;
        let (last, all) = fanout(port)?;
        scratch.check_alive(super::server_title(server))?;
        let rss_before = vm_rss_kib(pid)?;
        let mut idle = Vec::with_capacity(IDLE_CLIENTS);
        for _ in 0..IDLE_CLIENTS {
            match registered(port) {
                Ok(s) => idle.push(s),
                Err(e) => {
                    println!("  stopped at {} idle connections: {e}", idle.len());
                    break;
                }
            }
        }
        let rss_with = vm_rss_kib(pid)?;
        let m = Measured {
            server,
            last,
            all,
            rss_before,
            rss_with,
            idle: idle.len(),
        };
        drop(idle);
        println!(
            "  {:<20} last of {FANOUT_CLIENTS} receivers: p50 {:.2} ms, p99 {:.2} ms; {} idle: {} -> {} KiB ({:.1} KiB each)",
            super::server_title(server),
            pct(&m.last, 0.5) * 1e3,
            pct(&m.last, 0.99) * 1e3,
            m.idle,
            m.rss_before,
            m.rss_with,
            per_connection(&m)
        );
        measured.push(m);
    }
    Ok(measured)
}

pub(super) fn pct(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    sorted[((sorted.len() - 1) as f64 * q).round() as usize]
}

fn per_connection(m: &Measured) -> f64 {
    m.rss_with.saturating_sub(m.rss_before) as f64 / m.idle.max(1) as f64
}

/// The lines of the results, with zeo-server's ratios to runzeo.
pub(super) fn print(measured: &[Measured]) {
    let get = |server: &str| measured.iter().find(|m| m.server == server);
    let (Some(rs), Some(py)) = (get("rs"), get("py")) else {
        return;
    };
    println!();
    println!(
        "Invalidation fan-out, {FANOUT_CLIENTS} registered clients, {COMMITS} one-object commits (from sending tpc_finish):"
    );
    for (label, q) in [("p50", 0.5), ("p99", 0.99)] {
        let (r, p) = (pct(&rs.last, q), pct(&py.last, q));
        println!(
            "  last receiver {label}: zeo-server {:.2} ms, runzeo {:.2} ms = {:.2}x faster",
            r * 1e3,
            p * 1e3,
            p / r
        );
    }
    println!(
        "  any receiver p50: zeo-server {:.2} ms, runzeo {:.2} ms",
        pct(&rs.all, 0.5) * 1e3,
        pct(&py.all, 0.5) * 1e3
    );
    println!(
        "Idle connections: zeo-server {:.1} KiB each over {} (aim <= 16), runzeo {:.1} KiB each over {} = {:.2}x less",
        per_connection(rs),
        rs.idle,
        per_connection(py),
        py.idle,
        per_connection(py) / per_connection(rs).max(0.001)
    );
}
