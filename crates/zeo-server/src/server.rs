//! Building a server, binding its listeners and running it on the host's
//! tokio runtime.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::net::{IpAddr, SocketAddr, ToSocketAddrs};
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::Future;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use zeo_storage::Storage;

use crate::error::{Error, Result};
use crate::hub::StorageHub;
use crate::outbox::OutputBudget;
use crate::settings::ServerSettings;

/// Where to listen, as ZEO's `address` option spells it: `PORT` (all
/// interfaces), `HOST:PORT`, `[IPV6]:PORT`, or a Unix socket path (anything
/// containing a `/`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ListenAddress {
    /// A TCP host (name or literal, empty for all interfaces) and port.
    Tcp {
        /// Host name or address; empty means every IPv4 interface.
        host: String,
        /// Port; 0 picks a free one.
        port: u16,
    },
    /// A Unix-domain socket path.
    Unix(PathBuf),
}

impl ListenAddress {
    /// `127.0.0.1:port`.
    pub fn localhost(port: u16) -> Self {
        ListenAddress::Tcp {
            host: "127.0.0.1".into(),
            port,
        }
    }

    /// The TCP port asked for (0 meaning "any free port"), `None` for a
    /// Unix socket.
    pub fn port(&self) -> Option<u16> {
        match self {
            ListenAddress::Tcp { port, .. } => Some(*port),
            ListenAddress::Unix(_) => None,
        }
    }
}

impl From<SocketAddr> for ListenAddress {
    /// Listens on exactly this IP address and port.
    fn from(addr: SocketAddr) -> Self {
        ListenAddress::Tcp {
            host: addr.ip().to_string(),
            port: addr.port(),
        }
    }
}

impl From<PathBuf> for ListenAddress {
    fn from(path: PathBuf) -> Self {
        ListenAddress::Unix(path)
    }
}

impl From<&Path> for ListenAddress {
    fn from(path: &Path) -> Self {
        ListenAddress::Unix(path.to_owned())
    }
}

impl From<&BoundAddress> for ListenAddress {
    /// The same address again, with the port the system picked: what a
    /// restarted server binds to be found where the previous one was.
    fn from(bound: &BoundAddress) -> Self {
        match bound {
            BoundAddress::Tcp(addr) => (*addr).into(),
            BoundAddress::Unix(path) => path.as_path().into(),
        }
    }
}

impl From<BoundAddress> for ListenAddress {
    fn from(bound: BoundAddress) -> Self {
        (&bound).into()
    }
}

impl FromStr for ListenAddress {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        let bad = |reason: &str| Error::BadAddress {
            address: s.into(),
            reason: reason.into(),
        };
        let s_trim = s.trim();
        if s_trim.is_empty() {
            return Err(bad("empty address"));
        }
        if s_trim.contains('/') {
            return Ok(ListenAddress::Unix(PathBuf::from(s_trim)));
        }
        let (host, port) = match s_trim.rsplit_once(':') {
            None => ("", s_trim),
            Some((host, port)) => {
                let host = host
                    .strip_prefix('[')
                    .and_then(|h| h.strip_suffix(']'))
                    .unwrap_or(host);
                (host, port)
            }
        };
        let port = port
            .parse::<u16>()
            .map_err(|_| bad("the port is not a number from 0 to 65535"))?;
        Ok(ListenAddress::Tcp {
            host: host.to_owned(),
            port,
        })
    }
}

impl fmt::Display for ListenAddress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ListenAddress::Tcp { host, port } if host.contains(':') => write!(f, "[{host}]:{port}"),
            ListenAddress::Tcp { host, port } => write!(f, "{host}:{port}"),
            ListenAddress::Unix(path) => write!(f, "{}", path.display()),
        }
    }
}

/// An address the server actually listens on.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum BoundAddress {
    /// A TCP socket, with the port the system picked when asked for 0.
    Tcp(SocketAddr),
    /// A Unix-domain socket.
    Unix(PathBuf),
}

impl BoundAddress {
    /// The TCP port listened on (the one the system picked when asked for
    /// port 0), `None` for a Unix socket.
    pub fn port(&self) -> Option<u16> {
        self.tcp().map(|addr| addr.port())
    }

    /// The TCP socket address, `None` for a Unix socket. A client connects
    /// to it as is (`zeo_client::ServerAddress` converts `From` it), except
    /// that a server listening on every interface reports `0.0.0.0` or
    /// `::`, where a local client connects to the loopback address and
    /// [`BoundAddress::port`].
    pub fn tcp(&self) -> Option<SocketAddr> {
        match self {
            BoundAddress::Tcp(addr) => Some(*addr),
            BoundAddress::Unix(_) => None,
        }
    }

    /// The Unix socket's path, `None` for TCP. `zeo_client::ServerAddress`
    /// converts `From` it.
    pub fn unix(&self) -> Option<&Path> {
        match self {
            BoundAddress::Tcp(_) => None,
            BoundAddress::Unix(path) => Some(path),
        }
    }
}

impl From<SocketAddr> for BoundAddress {
    fn from(addr: SocketAddr) -> Self {
        BoundAddress::Tcp(addr)
    }
}

impl fmt::Display for BoundAddress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BoundAddress::Tcp(addr) => write!(f, "{addr}"),
            BoundAddress::Unix(path) => write!(f, "{}", path.display()),
        }
    }
}

/// State every connection shares.
pub(crate) struct Shared {
    pub(crate) settings: ServerSettings,
    pub(crate) hubs: BTreeMap<String, Arc<StorageHub>>,
    pub(crate) shutdown: CancellationToken,
    /// Cancelled when [`Server::serve`] returns (the storages are closed
    /// by then) or is dropped.
    stopped: CancellationToken,
    pub(crate) next_conn_id: AtomicU64,
    pub(crate) budget: Arc<OutputBudget>,
    connections: Mutex<ConnectionCount>,
    /// Woken whenever a connection ends, so shutdown can wait for the
    /// last one, however it was accepted.
    connection_ended: tokio::sync::Notify,
    refusals: Mutex<RefusalLog>,
    bound: Mutex<Vec<BoundAddress>>,
    pub(crate) metrics: Arc<crate::metrics::ProcessMetrics>,
}

/// Fewest seconds between two log lines about refused connections: a peer
/// connecting in a loop past a cap must not fill the log.
const REFUSAL_LOG_INTERVAL: Duration = Duration::from_secs(1);

/// When a refused connection was last logged, and how many were not since.
#[derive(Default)]
struct RefusalLog {
    last: Option<std::time::Instant>,
    unlogged: u64,
}

/// The connections being served, in all and per peer IP address.
#[derive(Default)]
struct ConnectionCount {
    total: usize,
    per_address: HashMap<IpAddr, usize>,
}

/// A served connection's place in [`ConnectionCount`], given back on drop.
pub(crate) struct ConnectionSlot {
    shared: Arc<Shared>,
    ip: Option<IpAddr>,
}

impl Drop for ConnectionSlot {
    fn drop(&mut self) {
        let _wake = WakeOnDrop(&self.shared.connection_ended);
        let mut count = lock(&self.shared.connections);
        count.total = count.total.saturating_sub(1);
        if let Some(ip) = self.ip {
            if let Some(n) = count.per_address.get_mut(&ip) {
                *n -= 1;
                if *n == 0 {
                    count.per_address.remove(&ip);
                }
            }
        }
    }
}

/// Wakes every waiter of a `Notify` when dropped: after the lock it was
/// created before has been released.
struct WakeOnDrop<'a>(&'a tokio::sync::Notify);

impl Drop for WakeOnDrop<'_> {
    fn drop(&mut self) {
        self.0.notify_waiters();
    }
}

impl Shared {
    /// Waits until no connection is served: those of the listeners and
    /// those given to [`ServerHandle::serve_stream`].
    async fn no_connections(&self) {
        loop {
            let ended = self.connection_ended.notified();
            tokio::pin!(ended);
            // Registered before the count is read, so no wake-up is lost.
            ended.as_mut().enable();
            if self.connection_count() == 0 {
                return;
            }
            ended.await;
        }
    }

    /// Takes a place for a new connection from `ip` (`None` for a Unix
    /// socket), or says which limit refuses it.
    pub(crate) fn admit(self: &Arc<Self>, ip: Option<IpAddr>) -> Result<ConnectionSlot, String> {
        let max_total = self.settings.max_connections;
        let max_per = self.settings.max_connections_per_address;
        let mut count = lock(&self.connections);
        if max_total != 0 && count.total >= max_total {
            return Err(format!(
                "{} connections already served (max-connections {max_total})",
                count.total
            ));
        }
        if let Some(ip) = ip {
            let n = count.per_address.get(&ip).copied().unwrap_or(0);
            if max_per != 0 && n >= max_per {
                return Err(format!(
                    "{n} connections already served from {ip} (max-connections-per-address {max_per})"
                ));
            }
            *count.per_address.entry(ip).or_insert(0) += 1;
        }
        count.total += 1;
        Ok(ConnectionSlot {
            shared: self.clone(),
            ip,
        })
    }

    /// Logs a connection refused by [`Shared::admit`], at most once per
    /// [`REFUSAL_LOG_INTERVAL`], with a count of those not logged.
    fn log_refusal(&self, peer: &dyn fmt::Display, reason: &str) {
        let mut log = lock(&self.refusals);
        let now = std::time::Instant::now();
        if log
            .last
            .is_some_and(|t| now.duration_since(t) < REFUSAL_LOG_INTERVAL)
        {
            log.unlogged += 1;
            return;
        }
        log.last = Some(now);
        let unlogged = std::mem::take(&mut log.unlogged);
        drop(log);
        // Dropping the stream closes it before anything is read.
        tracing::warn!(%peer, unlogged, "refusing a connection: {reason}");
    }

    /// How many connections are served.
    pub(crate) fn connection_count(&self) -> usize {
        lock(&self.connections).total
    }

    /// The JSON document `ruok` answers with: the status of every storage,
    /// or, when clients must authenticate and `public-status` is off, `{}`,
    /// which tells a health checker the server is alive and nothing else.
    pub(crate) fn ruok(&self) -> Vec<u8> {
        if self.settings.authentication.is_some() && !self.settings.public_status {
            return b"{}".to_vec();
        }
        let statuses: Vec<_> = self
            .hubs
            .iter()
            .map(|(n, h)| (n.as_str(), h.status()))
            .collect();
        let refs: Vec<_> = statuses.iter().map(|(n, s)| (*n, s)).collect();
        zeo_protocol::reply::ruok_reply(&refs)
    }
}

/// Collects the storages and settings of a server.
pub struct ServerBuilder {
    settings: ServerSettings,
    storages: Vec<(String, Arc<dyn Storage>, bool)>,
}

impl ServerBuilder {
    /// A server with these settings and no storage yet.
    pub fn new(settings: ServerSettings) -> Self {
        ServerBuilder {
            settings,
            storages: Vec::new(),
        }
    }

    /// Serves `storage` under `name` (clients register with it; `"1"` is
    /// the usual name). Packs collect garbage.
    pub fn storage(self, name: impl Into<String>, storage: Arc<dyn Storage>) -> Self {
        self.storage_with_pack_gc(name, storage, true)
    }

    /// Like [`ServerBuilder::storage`], choosing whether packs remove
    /// unreachable objects (`pack-gc`).
    pub fn storage_with_pack_gc(
        mut self,
        name: impl Into<String>,
        storage: Arc<dyn Storage>,
        pack_gc: bool,
    ) -> Self {
        self.storages.push((name.into(), storage, pack_gc));
        self
    }

    /// Checks the configuration and creates the server (nothing is bound
    /// yet).
    pub fn build(self) -> Result<Server> {
        if self.storages.is_empty() {
            return Err(Error::NoStorages);
        }
        let s = &self.settings;
        if s.reply_backlog_pause >= s.max_outgoing_backlog {
            // Replies would then reach the cap before reading pauses: a
            // client pipelining loads could be disconnected for it.
            tracing::warn!(
                reply_backlog_pause = s.reply_backlog_pause,
                max_client_backlog = s.max_outgoing_backlog,
                "reply-backlog-pause is not below max-client-backlog: clients that pipeline requests may be disconnected"
            );
        }
        let timeout = self.settings.transaction_timeout.is_some();
        let mut hubs = BTreeMap::new();
        for (name, storage, pack_gc) in self.storages {
            let hub = StorageHub::new(
                name.clone(),
                storage,
                self.settings.invalidation_queue_size,
                timeout,
            )
            .with_pack_gc(pack_gc)
            .with_group_commit(self.settings.group_commit);
            tracing::info!(
                storage = %name,
                path = %hub.storage().name(),
                mode = if hub.storage().is_read_only() || self.settings.read_only { "RO" } else { "RW" },
                "serving storage"
            );
            if hubs.insert(name.clone(), Arc::new(hub)).is_some() {
                return Err(Error::DuplicateStorage(name));
            }
        }
        let budget = OutputBudget::new(self.settings.max_total_backlog);
        Ok(Server {
            shared: Arc::new(Shared {
                budget,
                connections: Mutex::new(ConnectionCount::default()),
                connection_ended: tokio::sync::Notify::new(),
                refusals: Mutex::new(RefusalLog::default()),
                settings: self.settings,
                hubs,
                shutdown: CancellationToken::new(),
                stopped: CancellationToken::new(),
                next_conn_id: AtomicU64::new(1),
                bound: Mutex::new(Vec::new()),
                metrics: Arc::new(crate::metrics::ProcessMetrics::new()),
            }),
            listeners: Mutex::new(Vec::new()),
            monitors: Mutex::new(None),
            metrics_listeners: Mutex::new(None),
        })
    }
}

pub(crate) enum Listener {
    Tcp(std::net::TcpListener),
    Unix(std::os::unix::net::UnixListener, PathBuf),
}

/// Binds `address` (every address a host name resolves to) as non-blocking
/// standard listeners, for the ZEO port and the monitor alike; a stale Unix
/// socket file is replaced, a live one refused.
pub(crate) fn bind_listeners(address: &ListenAddress) -> Result<Vec<(Listener, BoundAddress)>> {
    let mut out = Vec::new();
    match address {
        ListenAddress::Tcp { host, port } => {
            let host = if host.is_empty() {
                "0.0.0.0"
            } else {
                host.as_str()
            };
            let addrs: Vec<SocketAddr> = (host, *port)
                .to_socket_addrs()
                .map_err(|e| Error::BadAddress {
                    address: address.to_string(),
                    reason: e.to_string(),
                })?
                .collect();
            if addrs.is_empty() {
                return Err(Error::BadAddress {
                    address: address.to_string(),
                    reason: "resolves to no address".into(),
                });
            }
            for addr in addrs {
                let listener = std::net::TcpListener::bind(addr).map_err(|source| {
                    if source.kind() == std::io::ErrorKind::AddrInUse {
                        Error::AddressInUse(addr.to_string())
                    } else {
                        Error::Bind {
                            address: addr.to_string(),
                            source,
                        }
                    }
                })?;
                listener.set_nonblocking(true)?;
                let local = listener.local_addr()?;
                out.push((Listener::Tcp(listener), BoundAddress::Tcp(local)));
            }
        }
        ListenAddress::Unix(path) => {
            remove_stale_socket(path)?;
            let listener =
                std::os::unix::net::UnixListener::bind(path).map_err(|source| Error::Bind {
                    address: path.display().to_string(),
                    source,
                })?;
            listener.set_nonblocking(true)?;
            out.push((
                Listener::Unix(listener, path.clone()),
                BoundAddress::Unix(path.clone()),
            ));
        }
    }
    Ok(out)
}

/// A configured server: bind it, then [`Server::serve`] it.
pub struct Server {
    shared: Arc<Shared>,
    listeners: Mutex<Vec<Listener>>,
    /// `None` until the monitor address is bound.
    monitors: Mutex<Option<Vec<Listener>>>,
    /// `None` until the metrics address is bound.
    metrics_listeners: Mutex<Option<Vec<Listener>>>,
}

/// Controls a running server from elsewhere (signal handlers, tests).
#[derive(Clone)]
pub struct ServerHandle {
    shared: Arc<Shared>,
}

impl ServerHandle {
    /// Starts a graceful shutdown: stop accepting, let a commit between vote
    /// and finish complete for a few seconds, abort the other transactions,
    /// close every connection, close the storages. [`Server::serve`] returns
    /// when that is done, and [`ServerHandle::stopped`] waits for it.
    pub fn shutdown(&self) {
        self.shared.shutdown.cancel();
    }

    /// The addresses the server listens on.
    pub fn local_addrs(&self) -> Vec<BoundAddress> {
        lock(&self.shared.bound).clone()
    }

    /// The process-wide counters of the metrics endpoint, for the layers
    /// that count TLS handshake and login failures.
    pub fn metrics(&self) -> &Arc<crate::metrics::ProcessMetrics> {
        &self.shared.metrics
    }

    /// The first TCP port the server listens on (the one the system picked
    /// for port 0), `None` if it listens on Unix sockets only.
    pub fn port(&self) -> Option<u16> {
        first_port(&self.shared)
    }

    /// Waits until [`Server::serve`] has finished: listeners closed, every
    /// connection gone, every storage closed (or `serve` failed or was
    /// dropped). Never resolves if the server is never served.
    pub async fn stopped(&self) {
        self.shared.stopped.cancelled().await;
    }

    /// Whether [`Server::serve`] has finished (see
    /// [`ServerHandle::stopped`]).
    pub fn is_stopped(&self) -> bool {
        self.shared.stopped.is_cancelled()
    }

    /// Bytes of output queued for clients and not yet written, over all
    /// connections.
    pub fn queued_output(&self) -> usize {
        self.shared.budget.queued()
    }

    /// The most bytes of output ever queued at once over all connections.
    pub fn peak_queued_output(&self) -> usize {
        self.shared.budget.peak()
    }

    /// How many client connections are being served (accepted and not yet
    /// closed; monitor connections are not counted).
    pub fn connections(&self) -> usize {
        self.shared.connection_count()
    }

    /// The `server_status` numbers of a storage, as `ruok` reports them.
    pub fn status(&self, storage: &str) -> Option<zeo_protocol::ServerStatus> {
        self.shared.hubs.get(storage).map(|h| h.status())
    }

    /// Serves one stream that is already connected: a socket accepted
    /// elsewhere (inherited, or behind a TLS acceptor) or an in-memory
    /// pipe. The connection is counted against `max-connections` and
    /// follows every rule a listener's connection does; `peer` names it in
    /// the log. Run the returned future (usually with `tokio::spawn`); it
    /// ends when the connection does. A server that is shutting down
    /// closes the stream at once; [`Server::serve`] waits for the
    /// connection, as for the listeners' ones, before closing the storages.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), zeo_server::Error> {
    /// use std::sync::Arc;
    /// use tokio::io::AsyncReadExt;
    /// use zeo_server::{ServerBuilder, ServerSettings};
    /// use zeo_storage::MappingStorage;
    ///
    /// let server = ServerBuilder::new(ServerSettings::default())
    ///     .storage("1", Arc::new(MappingStorage::new("1")))
    ///     .build()?;
    /// let (ours, theirs) = tokio::io::duplex(64 * 1024);
    /// let connection = tokio::spawn(server.handle().serve_stream(ours, "pipe"));
    /// // The server greets first: a 4-byte length, then "M5" or "Z5".
    /// let mut theirs = theirs;
    /// let mut greeting = [0u8; 6];
    /// theirs.read_exact(&mut greeting).await?;
    /// assert_eq!(&greeting[4..], b"Z5");
    /// drop(theirs);
    /// connection.await.unwrap();
    /// # Ok(())
    /// # }
    /// ```
    pub fn serve_stream<S>(
        &self,
        stream: S,
        peer: impl Into<String>,
    ) -> impl Future<Output = ()> + Send + 'static
    where
        S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + 'static,
    {
        let shared = self.shared.clone();
        let peer = peer.into();
        async move {
            let slot = match shared.admit(None) {
                Ok(slot) => slot,
                Err(reason) => {
                    shared.log_refusal(&peer, &reason);
                    return;
                }
            };
            crate::connection::serve(shared, stream, peer, String::new()).await;
            drop(slot);
        }
    }
}

fn first_port(shared: &Shared) -> Option<u16> {
    lock(&shared.bound).iter().find_map(BoundAddress::port)
}

/// How the monitor and the metrics endpoint bind their addresses.
type BindFn = fn(&ListenAddress) -> Result<Vec<(Listener, BoundAddress)>>;

/// Binds `address` with `bind` into `slot` unless it is unset or bound
/// already (then nothing is bound and no address returned).
fn bind_once(
    slot: &Mutex<Option<Vec<Listener>>>,
    address: Option<&ListenAddress>,
    bind: BindFn,
) -> Result<Vec<BoundAddress>> {
    let Some(address) = address else {
        return Ok(Vec::new());
    };
    let mut slot = lock(slot);
    if slot.is_some() {
        return Ok(Vec::new());
    }
    let (listeners, bound) = bind(address)?.into_iter().unzip();
    *slot = Some(listeners);
    Ok(bound)
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Server {
    /// Binds `address` now (so a port conflict shows before serving) and
    /// returns the addresses bound: a host name may resolve to several.
    pub fn bind(&self, address: &ListenAddress) -> Result<Vec<BoundAddress>> {
        let (listeners, bound): (Vec<_>, Vec<_>) = bind_listeners(address)?.into_iter().unzip();
        lock(&self.listeners).extend(listeners);
        for b in &bound {
            tracing::info!(address = %b, "listening");
        }
        lock(&self.shared.bound).extend(bound.iter().cloned());
        Ok(bound)
    }

    /// Binds [`ServerSettings::monitor_address`] now, when set, and returns
    /// the addresses bound (none when no monitor is configured or it is
    /// bound already). [`Server::serve`] binds it itself otherwise.
    pub fn bind_monitor(&self) -> Result<Vec<BoundAddress>> {
        let address = self.shared.settings.monitor_address.as_ref();
        bind_once(&self.monitors, address, crate::monitor::bind)
    }

    /// Binds [`ServerSettings::metrics_address`] now, when set, and returns
    /// the addresses bound (none when no metrics endpoint is configured or
    /// it is bound already). [`Server::serve`] binds it itself otherwise.
    pub fn bind_metrics(&self) -> Result<Vec<BoundAddress>> {
        let address = self.shared.settings.metrics_address.as_ref();
        bind_once(&self.metrics_listeners, address, crate::metrics::bind)
    }

    /// The addresses bound so far.
    pub fn local_addrs(&self) -> Vec<BoundAddress> {
        lock(&self.shared.bound).clone()
    }

    /// The first TCP port bound so far (the one the system picked for port
    /// 0), `None` if only Unix sockets are bound.
    pub fn port(&self) -> Option<u16> {
        first_port(&self.shared)
    }

    /// Serves in a task of the current tokio runtime until
    /// [`RunningServer::shutdown`] (or [`ServerHandle::shutdown`], or
    /// dropping the [`RunningServer`]). Bind first: what is bound is
    /// listened on as soon as this returns.
    ///
    /// # Panics
    ///
    /// Outside a tokio runtime, as `tokio::spawn` does; use
    /// [`Server::spawn_on`] or [`Server::start_background`] there.
    pub fn spawn(self) -> RunningServer {
        self.spawn_on(&tokio::runtime::Handle::current())
    }

    /// Like [`Server::spawn`], on the given runtime.
    pub fn spawn_on(self, runtime: &tokio::runtime::Handle) -> RunningServer {
        let handle = self.handle();
        let task = runtime.spawn(self.serve(std::future::pending()));
        RunningServer {
            handle,
            task: Some(task),
        }
    }

    /// Serves on a runtime of its own (a multi-threaded tokio runtime,
    /// threads named `zeo-server`), for programs that are not async:
    /// [`BackgroundServer::shutdown`] stops it and closes the storages.
    pub fn start_background(self) -> Result<BackgroundServer> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .thread_name("zeo-server")
            .build()?;
        let running = self.spawn_on(runtime.handle());
        Ok(BackgroundServer {
            runtime: Some(runtime),
            running: Some(running),
        })
    }

    /// A handle to shut the server down from elsewhere.
    pub fn handle(&self) -> ServerHandle {
        ServerHandle {
            shared: self.shared.clone(),
        }
    }

    /// Accepts and serves clients until `shutdown` resolves or
    /// [`ServerHandle::shutdown`] is called, then shuts down gracefully and
    /// closes the storages. Runs on the caller's tokio runtime.
    pub async fn serve(self, shutdown: impl Future<Output = ()>) -> Result<()> {
        // Whichever way this returns, or if it is dropped, waiters on
        // `ServerHandle::stopped` must not wait forever.
        let _stopped = self.shared.stopped.clone().drop_guard();
        let listeners = std::mem::take(&mut *lock(&self.listeners));
        self.bind_monitor()?;
        let monitors = lock(&self.monitors).take().unwrap_or_default();
        let shared = self.shared.clone();
        self.bind_metrics()?;
        let metrics = lock(&self.metrics_listeners).take().unwrap_or_default();
        let monitor_tasks: Vec<_> = monitors
            .into_iter()
            .map(|m| tokio::spawn(crate::monitor::serve(m, shared.clone())))
            .chain(
                metrics
                    .into_iter()
                    .map(|m| tokio::spawn(crate::metrics::serve(m, shared.clone()))),
            )
            .collect();
        let watchers: Vec<_> = shared
            .hubs
            .values()
            .filter(|hub| hub.is_shared())
            .map(|hub| {
                tokio::spawn(crate::foreign::watch(
                    hub.clone(),
                    shared.shutdown.child_token(),
                ))
            })
            .collect();
        let (alive_tx, mut alive_rx) = mpsc::channel::<()>(1);
        let mut accept_tasks = Vec::new();
        let mut socket_files = Vec::new();
        for listener in listeners {
            match listener {
                Listener::Tcp(l) => {
                    let l = tokio::net::TcpListener::from_std(l)?;
                    accept_tasks.push(tokio::spawn(accept_tcp(
                        l,
                        shared.clone(),
                        alive_tx.clone(),
                    )));
                }
                Listener::Unix(l, path) => {
                    let l = tokio::net::UnixListener::from_std(l)?;
                    socket_files.push(path.clone());
                    accept_tasks.push(tokio::spawn(accept_unix(
                        l,
                        path,
                        shared.clone(),
                        alive_tx.clone(),
                    )));
                }
            }
        }
        drop(alive_tx);

        tokio::select! {
            _ = shutdown => {}
            _ = shared.shutdown.cancelled() => {}
        }
        tracing::info!("shutting down");
        shared.shutdown.cancel();
        for task in accept_tasks
            .into_iter()
            .chain(monitor_tasks)
            .chain(watchers)
        {
            let _ = task.await;
        }
        // Every connection watches the token; wait until all are gone.
        let _ = alive_rx.recv().await;
        self.shared.no_connections().await;
        for path in socket_files {
            let _ = std::fs::remove_file(path);
        }

        let mut result = Ok(());
        for (name, hub) in &shared.hubs {
            let storage = hub.storage().clone();
            let closed = tokio::task::spawn_blocking(move || storage.close())
                .await
                .unwrap_or_else(|e| Err(zeo_storage::Error::other(e)));
            match closed {
                Ok(()) => tracing::info!(storage = %name, "closed storage"),
                Err(source) => {
                    tracing::error!(storage = %name, %source, "closing storage failed");
                    if result.is_ok() {
                        result = Err(Error::Close {
                            name: name.clone(),
                            source,
                        });
                    }
                }
            }
        }
        result
    }
}

/// A server serving in a task, from [`Server::spawn`]: shut it down with
/// [`RunningServer::shutdown`], which returns once the storages are closed.
/// Dropping it starts the shutdown without waiting for it.
#[must_use = "dropping a RunningServer shuts the server down"]
pub struct RunningServer {
    handle: ServerHandle,
    /// `None` once awaited.
    task: Option<tokio::task::JoinHandle<Result<()>>>,
}

impl RunningServer {
    /// A handle for signal handlers and status queries; it outlives this.
    pub fn handle(&self) -> &ServerHandle {
        &self.handle
    }

    /// The addresses the server listens on.
    pub fn local_addrs(&self) -> Vec<BoundAddress> {
        self.handle.local_addrs()
    }

    /// The first TCP port the server listens on, `None` if it listens on
    /// Unix sockets only.
    pub fn port(&self) -> Option<u16> {
        self.handle.port()
    }

    /// Shuts the server down gracefully (see [`ServerHandle::shutdown`])
    /// and waits until every connection and storage is closed; a storage
    /// that fails to close is the error returned.
    pub async fn shutdown(self) -> Result<()> {
        self.handle.shutdown();
        self.wait().await
    }

    /// Waits until the server stops for another reason (a
    /// [`ServerHandle::shutdown`] elsewhere), with the storages closed.
    pub async fn wait(mut self) -> Result<()> {
        let task = self.task.take().expect("awaited only once");
        match task.await {
            Ok(result) => result,
            Err(err) if err.is_panic() => std::panic::resume_unwind(err.into_panic()),
            Err(err) => Err(Error::Stopped(err.to_string())),
        }
    }
}

impl Drop for RunningServer {
    fn drop(&mut self) {
        if self.task.is_some() {
            self.handle.shutdown();
        }
    }
}

/// A server serving on a runtime of its own, from
/// [`Server::start_background`], for programs that are not async.
/// [`BackgroundServer::shutdown`] (or dropping it outside async code) stops
/// it and waits until the storages are closed; dropped inside async code,
/// it starts the shutdown, which finishes on a thread of its own
/// ([`ServerHandle::stopped`] tells when).
#[must_use = "dropping a BackgroundServer shuts the server down"]
pub struct BackgroundServer {
    /// Both `None` once shut down.
    runtime: Option<tokio::runtime::Runtime>,
    running: Option<RunningServer>,
}

impl BackgroundServer {
    /// A handle for status queries and shutdown from elsewhere.
    pub fn handle(&self) -> &ServerHandle {
        self.running().handle()
    }

    /// The addresses the server listens on.
    pub fn local_addrs(&self) -> Vec<BoundAddress> {
        self.running().local_addrs()
    }

    /// The first TCP port the server listens on, `None` if it listens on
    /// Unix sockets only.
    pub fn port(&self) -> Option<u16> {
        self.running().port()
    }

    /// Shuts the server down gracefully and blocks until every connection
    /// and storage is closed, then stops the runtime.
    ///
    /// # Panics
    ///
    /// When called from async code (blocking there would stall its
    /// runtime); async programs use [`Server::spawn`].
    pub fn shutdown(mut self) -> Result<()> {
        self.stop()
    }

    fn running(&self) -> &RunningServer {
        self.running.as_ref().expect("present until shut down")
    }

    fn stop(&mut self) -> Result<()> {
        let (Some(runtime), Some(running)) = (self.runtime.take(), self.running.take()) else {
            return Ok(());
        };
        runtime.block_on(running.shutdown())
    }
}

impl Drop for BackgroundServer {
    fn drop(&mut self) {
        if tokio::runtime::Handle::try_current().is_err() {
            if let Err(err) = self.stop() {
                tracing::error!(%err, "shutting down the server");
            }
            return;
        }
        // Blocking inside async code would panic: the shutdown finishes on
        // a thread of its own, and `ServerHandle::stopped` tells when.
        let (Some(runtime), Some(running)) = (self.runtime.take(), self.running.take()) else {
            return;
        };
        running.handle.shutdown();
        // Shared rather than moved in: a thread that fails to start drops
        // its closure here, and a runtime dropped in async code panics.
        let cell = Arc::new(Mutex::new(Some((runtime, running))));
        let on_thread = cell.clone();
        let spawned = std::thread::Builder::new()
            .name("zeo-server-shutdown".into())
            .spawn(move || {
                let Some((runtime, running)) = lock(&on_thread).take() else {
                    return;
                };
                if let Err(err) = runtime.block_on(running.shutdown()) {
                    tracing::error!(%err, "shutting down the server");
                }
            });
        if spawned.is_err() {
            if let Some((runtime, running)) = lock(&cell).take() {
                drop(running);
                runtime.shutdown_background();
            }
        }
    }
}

/// Makes room for a Unix socket at `path`: a socket file nobody answers
/// at is left over from a server that died, and is removed. Anything else
/// at the path (a regular file such as the database, a directory, a
/// symlink) is refused, never removed.
fn remove_stale_socket(path: &Path) -> Result<()> {
    use std::os::unix::fs::FileTypeExt;
    let meta = match std::fs::symlink_metadata(path) {
        Ok(meta) => meta,
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(source) => {
            return Err(Error::Bind {
                address: path.display().to_string(),
                source,
            })
        }
    };
    if !meta.file_type().is_socket() {
        return Err(Error::NotASocket(path.display().to_string()));
    }
    if std::os::unix::net::UnixStream::connect(path).is_ok() {
        return Err(Error::AddressInUse(path.display().to_string()));
    }
    tracing::info!(path = %path.display(), "removing a stale socket");
    std::fs::remove_file(path)?;
    Ok(())
}

/// Pause after an accept error (e.g. out of file descriptors) so a
/// persistent failure does not spin.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);

/// Accepts connections until shutdown and hands each to `on_accept`; an
/// accept error is logged under `what` and followed by [`ACCEPT_BACKOFF`].
/// Shared by the ZEO listeners and the monitor's.
pub(crate) async fn accept_until_shutdown<S, A, F, Fut>(
    shutdown: &CancellationToken,
    what: &str,
    mut accept: F,
    mut on_accept: impl FnMut(S, A),
) where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = std::io::Result<(S, A)>>,
{
    loop {
        let accepted = tokio::select! {
            _ = shutdown.cancelled() => return,
            a = accept() => a,
        };
        match accepted {
            Ok((stream, peer)) => on_accept(stream, peer),
            Err(err) => {
                tracing::error!(%err, "{what} failed");
                tokio::time::sleep(ACCEPT_BACKOFF).await;
            }
        }
    }
}

/// Serves an accepted stream, after a TLS handshake when the server has
/// TLS; a failed handshake is logged with its reason and ends only this
/// connection.
async fn serve_stream<S>(shared: Arc<Shared>, stream: S, peer: String, nonce_peer: String)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    match shared.settings.tls.clone() {
        None => crate::connection::serve(shared, stream, peer, nonce_peer).await,
        // Boxed: a TLS session is several KiB, and without the box every
        // plaintext connection's task would be as large as a TLS one.
        Some(tls) => Box::pin(serve_tls(shared, tls, stream, peer, nonce_peer)).await,
    }
}

/// [`serve_stream`] behind a TLS handshake.
async fn serve_tls<S>(
    shared: Arc<Shared>,
    tls: Arc<zeo_tls::ServerTls>,
    stream: S,
    peer: String,
    nonce_peer: String,
) where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let handshake = tokio::select! {
        _ = shared.shutdown.cancelled() => return,
        h = tls.accept(stream) => h,
    };
    match handshake {
        Ok(stream) => crate::connection::serve(shared, stream, peer, nonce_peer).await,
        Err(reason) => {
            shared.metrics.tls_handshake_failed(reason.label());
            tracing::warn!(%peer, "TLS handshake failed: {reason}");
        }
    }
}

/// Bytes a client connection's socket may hold that TCP has not yet sent
/// (`TCP_NOTSENT_LOWAT`): beyond them a write waits for the peer to take
/// what is in flight.
///
/// Without a limit the kernel takes a whole block of a blob download
/// (about 944 KB) at once, and what the receive window cannot take yet is
/// sent later from the ACK handler, which runs on the receiving client's
/// CPU: on loopback the client then spends its own time pushing the
/// server's data. With the limit the server's writes are sent as they are
/// made, on the server's CPU. Measured on 100 MB downloads over loopback
/// (two cores, alternating order): 16 to 64 KiB made Python ZEO 6 and
/// Rust clients 4 to 25% faster, the clients' system time fell, and the
/// server's CPU did not grow; 256 KiB was no better than no limit. Replies
/// smaller than the limit, which is nearly all of them, are not affected.
const NOTSENT_LOWAT: u32 = 32 * 1024;

/// Applies [`NOTSENT_LOWAT`] to an accepted TCP connection (Linux; a no-op
/// elsewhere). A failure leaves the kernel's default, which is only slower.
fn limit_unsent(stream: &tokio::net::TcpStream) -> std::io::Result<()> {
    #[cfg(any(target_os = "linux", target_os = "android"))]
    {
        use std::os::fd::AsRawFd;
        let value = NOTSENT_LOWAT as libc::c_int;
        // SAFETY: the descriptor is the stream's own, open for this call;
        // the option value points at a live c_int of the length given.
        let rc = unsafe {
            libc::setsockopt(
                stream.as_raw_fd(),
                libc::IPPROTO_TCP,
                libc::TCP_NOTSENT_LOWAT,
                (&value as *const libc::c_int).cast(),
                std::mem::size_of::<libc::c_int>() as libc::socklen_t,
            )
        };
        if rc != 0 {
            return Err(std::io::Error::last_os_error());
        }
    }
    #[cfg(not(any(target_os = "linux", target_os = "android")))]
    let _ = stream;
    Ok(())
}

async fn accept_tcp(
    listener: tokio::net::TcpListener,
    shared: Arc<Shared>,
    alive: mpsc::Sender<()>,
) {
    let on_accept = |stream: tokio::net::TcpStream, peer: SocketAddr| {
        let slot = match shared.admit(Some(peer.ip())) {
            Ok(slot) => slot,
            Err(reason) => {
                shared.log_refusal(&peer, &reason);
                return;
            }
        };
        let _ = stream.set_nodelay(true);
        let _ = limit_unsent(&stream);
        let shared = shared.clone();
        let alive = alive.clone();
        tokio::spawn(async move {
            let nonce_peer = zeo_auth::python_peer_text(&peer);
            serve_stream(shared, stream, peer.to_string(), nonce_peer).await;
            drop(slot);
            drop(alive);
        });
    };
    accept_until_shutdown(&shared.shutdown, "accept", || listener.accept(), on_accept).await;
}

async fn accept_unix(
    listener: tokio::net::UnixListener,
    path: PathBuf,
    shared: Arc<Shared>,
    alive: mpsc::Sender<()>,
) {
    let on_accept = |stream: tokio::net::UnixStream, _| {
        let peer = path.display().to_string();
        let slot = match shared.admit(None) {
            Ok(slot) => slot,
            Err(reason) => {
                shared.log_refusal(&peer, &reason);
                return;
            }
        };
        let shared = shared.clone();
        let alive = alive.clone();
        tokio::spawn(async move {
            // ZEO saw an empty peer address for Unix sockets.
            serve_stream(shared, stream, peer, String::new()).await;
            drop(slot);
            drop(alive);
        });
    };
    accept_until_shutdown(&shared.shutdown, "accept", || listener.accept(), on_accept).await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[cfg(target_os = "linux")]
    #[tokio::test]
    async fn accepted_connections_limit_unsent_bytes() {
        use std::os::fd::AsRawFd;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        let (_client, accepted) = tokio::join!(tokio::net::TcpStream::connect(address), async {
            listener.accept().await.unwrap().0
        });
        let read_back = |stream: &tokio::net::TcpStream| {
            let mut value: libc::c_int = 0;
            let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
            // SAFETY: a live descriptor and a c_int-sized out value.
            let rc = unsafe {
                libc::getsockopt(
                    stream.as_raw_fd(),
                    libc::IPPROTO_TCP,
                    libc::TCP_NOTSENT_LOWAT,
                    (&mut value as *mut libc::c_int).cast(),
                    &mut len,
                )
            };
            assert_eq!(rc, 0, "{}", std::io::Error::last_os_error());
            value as u32
        };
        assert_ne!(
            read_back(&accepted),
            NOTSENT_LOWAT,
            "the kernel default differs"
        );
        limit_unsent(&accepted).unwrap();
        assert_eq!(read_back(&accepted), NOTSENT_LOWAT);
    }

    #[test]
    fn parses_zeo_addresses() {
        assert_eq!(
            "8100".parse::<ListenAddress>().unwrap(),
            ListenAddress::Tcp {
                host: String::new(),
                port: 8100
            }
        );
        assert_eq!(
            "127.0.0.1:0".parse::<ListenAddress>().unwrap(),
            ListenAddress::localhost(0)
        );
        assert_eq!(
            "[::1]:8100".parse::<ListenAddress>().unwrap(),
            ListenAddress::Tcp {
                host: "::1".into(),
                port: 8100
            }
        );
        assert_eq!(
            "./var/zeo.sock".parse::<ListenAddress>().unwrap(),
            ListenAddress::Unix("./var/zeo.sock".into())
        );
        assert!("host:http".parse::<ListenAddress>().is_err());
        assert!("".parse::<ListenAddress>().is_err());
        assert!("99999".parse::<ListenAddress>().is_err());
    }

    #[test]
    fn bound_addresses_tell_their_port_and_convert() {
        let v4: SocketAddr = "127.0.0.1:8100".parse().unwrap();
        let v6: SocketAddr = "[::1]:8101".parse().unwrap();
        let tcp = BoundAddress::from(v4);
        assert_eq!(tcp.port(), Some(8100));
        assert_eq!(tcp.tcp(), Some(v4));
        assert_eq!(tcp.unix(), None);
        assert_eq!(tcp.to_string(), "127.0.0.1:8100");
        assert_eq!(ListenAddress::from(&tcp), ListenAddress::localhost(8100));

        let unix = BoundAddress::Unix("/run/zeo.sock".into());
        assert_eq!(unix.port(), None);
        assert_eq!(unix.tcp(), None);
        assert_eq!(unix.unix(), Some(Path::new("/run/zeo.sock")));
        assert_eq!(
            ListenAddress::from(unix.clone()),
            ListenAddress::Unix("/run/zeo.sock".into())
        );
        assert_eq!(ListenAddress::from(unix).port(), None);

        // Displayed, an IPv6 address parses back to the same listen address.
        let listen = ListenAddress::from(BoundAddress::Tcp(v6));
        assert_eq!(listen.port(), Some(8101));
        assert_eq!(listen.to_string(), "[::1]:8101");
        assert_eq!(listen.to_string().parse::<ListenAddress>().unwrap(), listen);
        assert_eq!(
            ListenAddress::from(PathBuf::from("var/zeo.sock")).to_string(),
            "var/zeo.sock"
        );
    }
}
