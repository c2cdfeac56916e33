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
    pub(crate) next_conn_id: AtomicU64,
    pub(crate) budget: Arc<OutputBudget>,
    connections: Mutex<ConnectionCount>,
    refusals: Mutex<RefusalLog>,
    bound: Mutex<Vec<BoundAddress>>,
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

impl Shared {
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
    fn connection_count(&self) -> usize {
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
            .with_pack_gc(pack_gc);
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
                refusals: Mutex::new(RefusalLog::default()),
                settings: self.settings,
                hubs,
                shutdown: CancellationToken::new(),
                next_conn_id: AtomicU64::new(1),
                bound: Mutex::new(Vec::new()),
            }),
            listeners: Mutex::new(Vec::new()),
            monitors: Mutex::new(None),
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
    /// when that is done.
    pub fn shutdown(&self) {
        self.shared.shutdown.cancel();
    }

    /// The addresses the server listens on.
    pub fn local_addrs(&self) -> Vec<BoundAddress> {
        lock(&self.shared.bound).clone()
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
        let Some(address) = &self.shared.settings.monitor_address else {
            return Ok(Vec::new());
        };
        let mut monitors = lock(&self.monitors);
        if monitors.is_some() {
            return Ok(Vec::new());
        }
        let (listeners, bound) = crate::monitor::bind(address)?.into_iter().unzip();
        *monitors = Some(listeners);
        Ok(bound)
    }

    /// The addresses bound so far.
    pub fn local_addrs(&self) -> Vec<BoundAddress> {
        lock(&self.shared.bound).clone()
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
        let listeners = std::mem::take(&mut *lock(&self.listeners));
        self.bind_monitor()?;
        let monitors = lock(&self.monitors).take().unwrap_or_default();
        let shared = self.shared.clone();
        let monitor_tasks: Vec<_> = monitors
            .into_iter()
            .map(|m| tokio::spawn(crate::monitor::serve(m, shared.clone())))
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
        for task in accept_tasks.into_iter().chain(monitor_tasks) {
            let _ = task.await;
        }
        // Every connection watches the token; wait until all are gone.
        let _ = alive_rx.recv().await;
        for path in socket_files {
            let _ = std::fs::remove_file(path);
        }

        let mut result = Ok(());
        for (name, hub) in &shared.hubs {
            let storage = hub.storage().clone();
            let closed = tokio::task::spawn_blocking(move || storage.close())
                .await
                .unwrap_or_else(|e| Err(zeo_storage::Error::Storage(e.to_string())));
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
        let shared = shared.clone();
        let alive = alive.clone();
        tokio::spawn(async move {
            let nonce_peer = zeo_auth::python_peer_text(&peer);
            crate::connection::serve(shared, stream, peer.to_string(), nonce_peer).await;
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
            crate::connection::serve(shared, stream, peer, String::new()).await;
            drop(slot);
            drop(alive);
        });
    };
    accept_until_shutdown(&shared.shutdown, "accept", || listener.accept(), on_accept).await;
}

#[cfg(test)]
mod tests {
    use super::*;

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
}
