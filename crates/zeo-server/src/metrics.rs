//! The metrics endpoint (`metrics-address`): Prometheus' text exposition
//! format (version 0.0.4, which OpenMetrics scrapers read too) over a
//! minimal HTTP/1.1 responder that answers `GET /metrics` and closes.
//!
//! Per storage (label `storage`): connected clients, loads, stores,
//! commits, aborts, conflicts, commit-lock waits (a histogram: count and
//! seconds), commit and `tpc_finish` (write and fsync) latency histograms,
//! invalidations sent, back-pressure events, active transactions, the last
//! transaction's time and age, database size and object count, pack runs
//! and their duration. Per process: build information, start time and
//! uptime, open connections by state, queued reply bytes, TLS handshake
//! failures by reason and authentication failures.
//!
//! The endpoint needs no login, so a bare port binds `127.0.0.1`; exposing
//! it takes an explicit host (`docs/security.md`). A request is bounded in
//! size ([`MAX_REQUEST`]) and time ([`REQUEST_TIMEOUT`]), and at most
//! [`MAX_SCRAPES`] are answered at once; a peer past a bound is answered
//! with an error status (or dropped) and logged once.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use crate::error::Result;
use crate::hub::StorageHub;
use crate::server::{accept_until_shutdown, BoundAddress, ListenAddress, Listener, Shared};
use crate::stats::{HistogramSnapshot, LATENCY_BUCKETS};

/// Largest request head read (request line and headers).
pub const MAX_REQUEST: usize = 8 * 1024;
/// Longest a peer may take to send its request and read the answer.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// Scrapes answered at once; more connections are closed unanswered.
pub const MAX_SCRAPES: usize = 16;

/// The exposition format's content type.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Reasons with no more distinct labels than this are counted apart;
/// others share the label `other`, so a peer cannot grow the output.
const MAX_REASONS: usize = 32;

/// Counters of the whole process that no storage owns. The TLS layer and
/// the login step call [`ProcessMetrics::tls_handshake_failed`] and
/// [`ProcessMetrics::auth_failed`]; [`crate::ServerHandle::metrics`] gives
/// the server's.
///
/// ```
/// use zeo_server::ProcessMetrics;
///
/// let m = ProcessMetrics::new();
/// m.tls_handshake_failed("bad_certificate");
/// m.tls_handshake_failed("bad_certificate");
/// m.auth_failed();
/// assert_eq!(m.tls_handshake_failures()["bad_certificate"], 2);
/// assert_eq!(m.auth_failures(), 1);
/// ```
#[derive(Debug)]
pub struct ProcessMetrics {
    started: Instant,
    started_at: SystemTime,
    tls_failures: Mutex<BTreeMap<String, u64>>,
    auth_failures: AtomicU64,
}

impl ProcessMetrics {
    /// Counters at zero, the process "started" now.
    pub fn new() -> Self {
        ProcessMetrics {
            started: Instant::now(),
            started_at: SystemTime::now(),
            tls_failures: Mutex::new(BTreeMap::new()),
            auth_failures: AtomicU64::new(0),
        }
    }

    /// Counts a failed TLS handshake under `reason` (a short
    /// `snake_case` word: `bad_certificate`, `no_client_certificate`,
    /// `protocol_version`, `timeout`, ...).
    pub fn tls_handshake_failed(&self, reason: &str) {
        let mut map = self.tls_failures.lock().unwrap_or_else(|p| p.into_inner());
        let key = if map.contains_key(reason) || map.len() < MAX_REASONS {
            reason
        } else {
            "other"
        };
        *map.entry(key.to_owned()).or_insert(0) += 1;
    }

    /// Counts a client that failed to log in.
    pub fn auth_failed(&self) {
        self.auth_failures.fetch_add(1, Ordering::Relaxed);
    }

    /// Failed TLS handshakes by reason.
    pub fn tls_handshake_failures(&self) -> BTreeMap<String, u64> {
        self.tls_failures
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Failed logins.
    pub fn auth_failures(&self) -> u64 {
        self.auth_failures.load(Ordering::Relaxed)
    }
}

impl Default for ProcessMetrics {
    fn default() -> Self {
        Self::new()
    }
}

/// Writes families in the exposition format.
struct Exposition {
    out: String,
}

impl Exposition {
    fn family(&mut self, name: &str, kind: &str, help: &str) {
        let _ = writeln!(self.out, "# HELP {name} {help}");
        let _ = writeln!(self.out, "# TYPE {name} {kind}");
    }

    fn sample(&mut self, name: &str, labels: &[(&str, &str)], value: f64) {
        self.out.push_str(name);
        if !labels.is_empty() {
            self.out.push('{');
            for (i, (k, v)) in labels.iter().enumerate() {
                if i > 0 {
                    self.out.push(',');
                }
                let _ = write!(self.out, "{k}=\"{}\"", escape_label(v));
            }
            self.out.push('}');
        }
        let _ = writeln!(self.out, " {}", number(value));
    }

    fn histogram(&mut self, name: &str, labels: &[(&str, &str)], h: &HistogramSnapshot) {
        let bucket = format!("{name}_bucket");
        for (bound, count) in LATENCY_BUCKETS.iter().zip(h.cumulative) {
            let le = number(*bound);
            let mut with_le = labels.to_vec();
            with_le.push(("le", &le));
            self.sample(&bucket, &with_le, count as f64);
        }
        let mut with_le = labels.to_vec();
        with_le.push(("le", "+Inf"));
        self.sample(&bucket, &with_le, h.count as f64);
        self.sample(&format!("{name}_sum"), labels, h.sum_seconds);
        self.sample(&format!("{name}_count"), labels, h.count as f64);
    }
}

fn escape_label(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

fn number(v: f64) -> String {
    if v.is_finite() && v.fract() == 0.0 && v.abs() < 1e15 {
        format!("{}", v as i64)
    } else {
        format!("{v}")
    }
}

fn unix_seconds(t: SystemTime) -> f64 {
    t.duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

/// What one storage reports; read on a blocking thread, since the
/// storage's size and last transaction may touch its file.
struct StorageSample<'a> {
    name: &'a str,
    hub: &'a StorageHub,
    last_tid_time: Option<f64>,
    size: u64,
    objects: u64,
}

/// Renders every metric of `shared` as of `now`.
pub(crate) fn render(shared: &Shared, metrics: &ProcessMetrics, now: SystemTime) -> String {
    let samples: Vec<StorageSample<'_>> = shared
        .hubs
        .iter()
        .map(|(name, hub)| {
            let storage = hub.storage();
            let tid = storage.last_transaction();
            StorageSample {
                name,
                hub,
                last_tid_time: (tid != zeo_storage::Tid::ZERO)
                    .then(|| zeo_storage::timestamp::TimeStamp::from_tid(tid).unix_time()),
                size: storage.size(),
                objects: storage.len(),
            }
        })
        .collect();
    let now_s = unix_seconds(now);
    let mut e = Exposition { out: String::new() };

    type Read = fn(&StorageSample<'_>) -> f64;
    let per_storage: [(&str, &str, &str, Read); 14] = [
        ("zeo_connected_clients", "gauge", "Client connections registered with the storage.", |s| s.hub.client_count() as f64),
        ("zeo_loads_total", "counter", "Object loads (loadBefore) served.", |s| s.hub.stats().loads.load(Ordering::Relaxed) as f64),
        ("zeo_stores_total", "counter", "Stores, deletions and restores received.", |s| s.hub.stats().stores.load(Ordering::Relaxed) as f64),
        ("zeo_commits_total", "counter", "Transactions committed.", |s| s.hub.stats().commits.load(Ordering::Relaxed) as f64),
        ("zeo_fsyncs_total", "counter", "Syncs the storage made to commit (with group commit one covers several transactions).", |s| s.hub.storage().syncs().unwrap_or(0) as f64),
        ("zeo_aborts_total", "counter", "Transactions aborted.", |s| s.hub.stats().aborts.load(Ordering::Relaxed) as f64),
        ("zeo_conflicts_total", "counter", "Votes that failed with a conflict.", |s| s.hub.stats().conflicts.load(Ordering::Relaxed) as f64),
        ("zeo_invalidations_sent_total", "counter", "invalidateTransaction messages queued to clients.", |s| s.hub.stats().invalidations_sent.load(Ordering::Relaxed) as f64),
        ("zeo_backpressure_events_total", "counter", "Times a connection stopped reading requests because queued replies passed reply-backlog-pause or max-total-backlog.", |s| s.hub.stats().backpressure_events.load(Ordering::Relaxed) as f64),
        ("zeo_active_transactions", "gauge", "Transactions begun and not yet finished or aborted.", |s| s.hub.stats().active_txns.load(Ordering::Relaxed).max(0) as f64),
        ("zeo_commit_lock_waiting", "gauge", "Votes queued for the commit lock now.", |s| s.hub.commit_lock().waiting() as f64),
        ("zeo_database_size_bytes", "gauge", "Size of the storage (the Data.fs file).", |s| s.size as f64),
        ("zeo_objects", "gauge", "Objects in the storage.", |s| s.objects as f64),
        ("zeo_packs_total", "counter", "Packs run, finished or failed.", |s| s.hub.stats().packs.load(Ordering::Relaxed) as f64),
    ];
    for (name, kind, help, read) in per_storage {
        e.family(name, kind, help);
        for s in &samples {
            e.sample(name, &[("storage", s.name)], read(s));
        }
    }
    e.family(
        "zeo_last_transaction_timestamp_seconds",
        "gauge",
        "Commit time of the storage's last transaction (Unix seconds; absent while the storage is empty).",
    );
    for s in &samples {
        if let Some(t) = s.last_tid_time {
            e.sample(
                "zeo_last_transaction_timestamp_seconds",
                &[("storage", s.name)],
                t,
            );
        }
    }
    e.family(
        "zeo_last_transaction_age_seconds",
        "gauge",
        "Seconds since the storage's last transaction (absent while the storage is empty).",
    );
    for s in &samples {
        if let Some(t) = s.last_tid_time {
            e.sample(
                "zeo_last_transaction_age_seconds",
                &[("storage", s.name)],
                (now_s - t).max(0.0),
            );
        }
    }
    type Hist = fn(&StorageHub) -> HistogramSnapshot;
    let histograms: [(&str, &str, Hist); 4] = [
        ("zeo_commit_lock_wait_seconds", "Time votes waited for the commit lock held by another transaction (count: the waits).", |h| h.commit_lock().waits().snapshot()),
        ("zeo_commit_duration_seconds", "From the vote taking the commit lock to tpc_finish returning, for committed transactions.", |h| h.stats().commit_seconds.snapshot()),
        ("zeo_fsync_duration_seconds", "Time of the storage's tpc_finish, which writes the transaction and syncs it to disk.", |h| h.stats().finish_seconds.snapshot()),
        ("zeo_pack_duration_seconds", "Time packs took.", |h| h.stats().pack_seconds.snapshot()),
    ];
    for (name, help, read) in histograms {
        e.family(name, "histogram", help);
        for s in &samples {
            e.histogram(name, &[("storage", s.name)], &read(s.hub));
        }
    }

    // The process.
    e.family(
        "zeo_build_info",
        "gauge",
        "Always 1; the labels name the server's version.",
    );
    e.sample(
        "zeo_build_info",
        &[
            ("version", env!("CARGO_PKG_VERSION")),
            ("implementation", "zeo-rs"),
        ],
        1.0,
    );
    e.family(
        "zeo_start_time_seconds",
        "gauge",
        "When the server started (Unix seconds).",
    );
    e.sample(
        "zeo_start_time_seconds",
        &[],
        unix_seconds(metrics.started_at),
    );
    e.family(
        "zeo_uptime_seconds",
        "gauge",
        "Seconds since the server started.",
    );
    e.sample(
        "zeo_uptime_seconds",
        &[],
        metrics.started.elapsed().as_secs_f64(),
    );
    let total = shared.connection_count();
    let registered: usize = shared.hubs.values().map(|h| h.client_count()).sum();
    e.family(
        "zeo_open_connections",
        "gauge",
        "Client connections by state: registered with a storage, or still in the handshake, login or before register.",
    );
    e.sample(
        "zeo_open_connections",
        &[("state", "registered")],
        registered as f64,
    );
    e.sample(
        "zeo_open_connections",
        &[("state", "unregistered")],
        total.saturating_sub(registered) as f64,
    );
    e.family(
        "zeo_queued_reply_bytes",
        "gauge",
        "Bytes of replies and notifications queued to all clients, not yet written.",
    );
    e.sample("zeo_queued_reply_bytes", &[], shared.budget.queued() as f64);
    e.family(
        "zeo_tls_handshake_failures_total",
        "counter",
        "Failed TLS handshakes by reason.",
    );
    for (reason, n) in metrics.tls_handshake_failures() {
        e.sample(
            "zeo_tls_handshake_failures_total",
            &[("reason", &reason)],
            n as f64,
        );
    }
    e.family(
        "zeo_auth_failures_total",
        "counter",
        "Clients that failed to log in.",
    );
    e.sample(
        "zeo_auth_failures_total",
        &[],
        metrics.auth_failures() as f64,
    );
    e.out
}

/// Binds the metrics address (every address a host name resolves to); a
/// bare port means `127.0.0.1`.
pub(crate) fn bind(address: &ListenAddress) -> Result<Vec<(Listener, BoundAddress)>> {
    let address = crate::monitor::loopback_by_default(address);
    let out = crate::server::bind_listeners(&address)?;
    for (_, bound) in &out {
        tracing::info!(address = %bound, "metrics listening");
    }
    Ok(out)
}

/// Answers scrapes until shutdown; removes a Unix socket file on the way
/// out.
pub(crate) async fn serve(listener: Listener, shared: Arc<Shared>) {
    let shutdown = shared.shutdown.clone();
    let permits = Arc::new(tokio::sync::Semaphore::new(MAX_SCRAPES));
    match listener {
        Listener::Tcp(l) => match tokio::net::TcpListener::from_std(l) {
            Ok(l) => {
                accept_until_shutdown(
                    &shutdown,
                    "metrics accept",
                    || l.accept(),
                    |s, a| spawn_answer(s, a.to_string(), &permits, &shared),
                )
                .await
            }
            Err(err) => tracing::error!(%err, "metrics listener unusable"),
        },
        Listener::Unix(l, path) => {
            match tokio::net::UnixListener::from_std(l) {
                Ok(l) => {
                    let peer = path.display().to_string();
                    accept_until_shutdown(
                        &shutdown,
                        "metrics accept",
                        || l.accept(),
                        |s, _| spawn_answer(s, peer.clone(), &permits, &shared),
                    )
                    .await
                }
                Err(err) => tracing::error!(%err, "metrics listener unusable"),
            }
            let _ = std::fs::remove_file(path);
        }
    }
}

/// Answers one scrape in a task of its own, unless [`MAX_SCRAPES`] are
/// being answered already.
fn spawn_answer<S>(
    stream: S,
    peer: String,
    permits: &Arc<tokio::sync::Semaphore>,
    shared: &Arc<Shared>,
) where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let Ok(permit) = permits.clone().try_acquire_owned() else {
        tracing::warn!(%peer, "metrics: {MAX_SCRAPES} scrapes already in progress; closing");
        return;
    };
    let shared = shared.clone();
    tokio::spawn(async move {
        answer(stream, &peer, shared).await;
        drop(permit);
    });
}

/// What a request asked for.
#[derive(Debug, PartialEq, Eq)]
pub enum Request {
    /// `GET /metrics` (or `HEAD`): the exposition.
    Metrics {
        /// Whether only the head is wanted.
        head: bool,
    },
    /// Another path: 404.
    NotFound,
    /// Another method: 405.
    MethodNotAllowed,
    /// Not HTTP/1.x: 400.
    Malformed,
}

/// Reads a request head (up to the blank line) from `head`, which must be
/// complete. Only the request line matters; headers are ignored.
pub fn parse_request(head: &[u8]) -> Request {
    let line_end = head
        .windows(2)
        .position(|w| w == b"\r\n")
        .unwrap_or(head.len());
    let Ok(line) = std::str::from_utf8(&head[..line_end]) else {
        return Request::Malformed;
    };
    let mut parts = line.split(' ');
    let (Some(method), Some(target), Some(version), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Request::Malformed;
    };
    if !version.starts_with("HTTP/1.") {
        return Request::Malformed;
    }
    let path = target.split('?').next().unwrap_or("");
    match (method, path) {
        ("GET", "/metrics") => Request::Metrics { head: false },
        ("HEAD", "/metrics") => Request::Metrics { head: true },
        ("GET" | "HEAD", _) => Request::NotFound,
        _ => Request::MethodNotAllowed,
    }
}

/// Reads until the end of the request head; `None` when the peer closed,
/// sent more than [`MAX_REQUEST`] bytes without ending it.
async fn read_head<S: AsyncRead + Unpin>(stream: &mut S) -> std::io::Result<Option<Vec<u8>>> {
    let mut head = Vec::with_capacity(512);
    let mut chunk = [0u8; 1024];
    loop {
        if head.windows(4).any(|w| w == b"\r\n\r\n") {
            return Ok(Some(head));
        }
        if head.len() >= MAX_REQUEST {
            return Ok(None);
        }
        let want = chunk.len().min(MAX_REQUEST - head.len());
        let n = stream.read(&mut chunk[..want]).await?;
        if n == 0 {
            return Ok(None);
        }
        head.extend_from_slice(&chunk[..n]);
    }
}

async fn answer<S>(mut stream: S, peer: &str, shared: Arc<Shared>)
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let exchange = async {
        let request = match read_head(&mut stream).await? {
            Some(head) => parse_request(&head),
            None => {
                tracing::info!(%peer, "metrics: request head missing or over {MAX_REQUEST} bytes; closing");
                Request::Malformed
            }
        };
        let (status, body, head_only) = match request {
            Request::Metrics { head } => {
                let shared = shared.clone();
                let body = tokio::task::spawn_blocking(move || {
                    render(&shared, &shared.metrics, SystemTime::now())
                })
                .await
                .unwrap_or_default();
                ("200 OK", body, head)
            }
            Request::NotFound => ("404 Not Found", "not found; try /metrics\n".into(), false),
            Request::MethodNotAllowed => (
                "405 Method Not Allowed",
                "only GET and HEAD\n".into(),
                false,
            ),
            Request::Malformed => ("400 Bad Request", "bad request\n".into(), false),
        };
        let mut response = format!(
            "HTTP/1.1 {status}\r\nContent-Type: {CONTENT_TYPE}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
            body.len()
        )
        .into_bytes();
        if !head_only {
            response.extend_from_slice(body.as_bytes());
        }
        stream.write_all(&response).await?;
        stream.shutdown().await
    };
    match tokio::time::timeout(REQUEST_TIMEOUT, exchange).await {
        Ok(Ok(())) => {}
        Ok(Err(err)) => tracing::debug!(%peer, %err, "metrics client went away"),
        Err(_) => {
            tracing::info!(%peer, "metrics: no complete request within {REQUEST_TIMEOUT:?}; closing")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_request_reads_the_request_line() {
        assert_eq!(
            parse_request(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n"),
            Request::Metrics { head: false }
        );
        assert_eq!(
            parse_request(b"GET /metrics?x=1 HTTP/1.0\r\n\r\n"),
            Request::Metrics { head: false }
        );
        assert_eq!(parse_request(b"GET / HTTP/1.1\r\n\r\n"), Request::NotFound);
        assert_eq!(
            parse_request(b"POST /metrics HTTP/1.1\r\n\r\n"),
            Request::MethodNotAllowed
        );
        assert_eq!(parse_request(b"\x16\x03\x01"), Request::Malformed);
    }
}
