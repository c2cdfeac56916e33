//! What a client is told: server addresses, storage name, cache, timing and
//! read-only behaviour (ZEO's `ClientStorage` arguments and ZODB's
//! `<zeoclient>` keys).

use std::fmt;
use std::future::Future;
use std::path::PathBuf;
use std::pin::Pin;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite};
use zeo_storage::{Oid, Tid};

use crate::cache::DEFAULT_CACHE_SIZE;
use crate::error::Error;

/// One server address: TCP `host:port` or a Unix-domain socket path.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum ServerAddress {
    /// A TCP address; an empty host means `127.0.0.1`, as in ZEO.
    Tcp {
        /// Host name or IP literal.
        host: String,
        /// Port.
        port: u16,
    },
    /// A Unix-domain socket.
    Unix(PathBuf),
}

impl ServerAddress {
    /// `127.0.0.1:port`.
    pub fn localhost(port: u16) -> Self {
        ServerAddress::Tcp {
            host: "127.0.0.1".into(),
            port,
        }
    }
}

impl From<std::net::SocketAddr> for ServerAddress {
    /// Connects to this IP address and port, e.g. what an embedded
    /// server's `BoundAddress::tcp()` reports.
    fn from(addr: std::net::SocketAddr) -> Self {
        ServerAddress::Tcp {
            host: addr.ip().to_string(),
            port: addr.port(),
        }
    }
}

impl From<PathBuf> for ServerAddress {
    fn from(path: PathBuf) -> Self {
        ServerAddress::Unix(path)
    }
}

impl From<&std::path::Path> for ServerAddress {
    fn from(path: &std::path::Path) -> Self {
        ServerAddress::Unix(path.to_owned())
    }
}

impl fmt::Display for ServerAddress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ServerAddress::Tcp { host, port } if host.contains(':') => write!(f, "[{host}]:{port}"),
            ServerAddress::Tcp { host, port } => write!(f, "{host}:{port}"),
            ServerAddress::Unix(path) => write!(f, "{}", path.display()),
        }
    }
}

impl FromStr for ServerAddress {
    type Err = Error;

    /// Parses ZEO's address forms: `host:port`, `[v6]:port`, a bare port
    /// (meaning `127.0.0.1`), or a path containing `/` (a Unix socket).
    ///
    /// ```
    /// use zeo_client::ServerAddress;
    /// assert_eq!("8100".parse::<ServerAddress>().unwrap(), ServerAddress::localhost(8100));
    /// assert_eq!("/tmp/zeo.sock".parse::<ServerAddress>().unwrap().to_string(), "/tmp/zeo.sock");
    /// assert_eq!("db.example:8090".parse::<ServerAddress>().unwrap().to_string(), "db.example:8090");
    /// assert!("nope".parse::<ServerAddress>().is_err());
    /// ```
    fn from_str(s: &str) -> Result<Self, Error> {
        if s.contains('/') {
            return Ok(ServerAddress::Unix(PathBuf::from(s)));
        }
        let bad = || Error::Config(format!("bad server address {s:?}"));
        let (host, port) = match s.rsplit_once(':') {
            Some((h, p)) => (h.trim_start_matches('[').trim_end_matches(']'), p),
            None => ("", s),
        };
        let port = port.parse::<u16>().map_err(|_| bad())?;
        let host = if host.is_empty() { "127.0.0.1" } else { host };
        Ok(ServerAddress::Tcp {
            host: host.to_owned(),
            port,
        })
    }
}

/// Resolves a conflict the server returned at vote (client-side conflict
/// resolution, ZEO's `tryToResolveConflict`). It is told the oid, both
/// serials, the data this transaction tried to store, and the committed and
/// original states (which ZEO's resolver loads with `loadSerial` itself; the
/// client loads them before calling). It returns the merged data to store
/// instead, or `None` to give up (the vote then fails with a conflict
/// error).
///
/// It runs on the client's I/O runtime while the vote waits: it must not
/// block for long, nor call back into the same client.
pub type ConflictResolver = Arc<dyn Fn(&ConflictInfo) -> Option<Vec<u8>> + Send + Sync>;

/// What a [`ConflictResolver`] is told about one conflict.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct ConflictInfo {
    /// The object.
    pub oid: Oid,
    /// The revision committed meanwhile by someone else.
    pub committed: Tid,
    /// The revision this transaction's data was based on ([`Tid::ZERO`]
    /// when both transactions created the object).
    pub old: Tid,
    /// The data this transaction tried to store.
    pub data: Vec<u8>,
    /// The committed revision's data.
    pub committed_data: Vec<u8>,
    /// The data of the revision this transaction started from; `None` when
    /// `old` is [`Tid::ZERO`] or that revision is gone (packed away).
    pub old_data: Option<Vec<u8>>,
}

/// A byte stream to a server: what a [`Connector`] opens.
pub trait Transport: AsyncRead + AsyncWrite + Unpin + Send {}

impl<T: AsyncRead + AsyncWrite + Unpin + Send> Transport for T {}

/// What a [`Connector`] returns: the stream, once open.
pub type Connecting = Pin<Box<dyn Future<Output = std::io::Result<Box<dyn Transport>>> + Send>>;

/// Opens the stream to a server address in place of a TCP or Unix socket:
/// for a transport the client does not know itself (a tunnel, an
/// in-process pipe). Everything above the bytes stays the same:
/// handshake, login, verification and reconnection. A connection error of
/// kind `ConnectionRefused` or `NotFound` counts as a refusal for
/// [`fail_fast`](ClientOptions::fail_fast).
///
/// ```
/// use std::sync::Arc;
/// use zeo_client::{ClientOptions, Connector, ServerAddress, Transport};
///
/// // Every address goes to one in-process pipe; `peer` is the server's end.
/// let (pipe, peer) = tokio::io::duplex(64 * 1024);
/// let pipe = std::sync::Mutex::new(Some(pipe));
/// let connector: Connector = Arc::new(move |_address: &ServerAddress| {
///     let pipe = pipe.lock().unwrap().take();
///     Box::pin(async move {
///         pipe.map(|p| Box::new(p) as Box<dyn Transport>)
///             .ok_or_else(|| std::io::ErrorKind::ConnectionRefused.into())
///     })
/// });
/// let mut options = ClientOptions::new(vec![ServerAddress::localhost(8100)]);
/// options.connector = Some(connector);
/// # drop(peer);
/// ```
pub type Connector = Arc<dyn Fn(&ServerAddress) -> Connecting + Send + Sync>;

/// The client's settings. [`ClientOptions::new`] gives ZEO's defaults.
///
/// ```
/// use std::time::Duration;
/// use zeo_client::{ClientOptions, ServerAddress};
///
/// let mut options = ClientOptions::new(vec![ServerAddress::localhost(8100)]);
/// options.read_only_fallback = true;
/// options.wait_timeout = Duration::from_secs(5);
/// assert_eq!(options.storage, "1");
/// assert_eq!(options.cache_size, 20 * 1024 * 1024);
/// ```
#[derive(Clone)]
pub struct ClientOptions {
    /// Servers that hold the same data; the first to register wins.
    pub servers: Vec<ServerAddress>,
    /// The storage name on the server (`'1'` by default).
    pub storage: String,
    /// Cache capacity in bytes.
    pub cache_size: u64,
    /// A persistent cache file; `None` for a transient in-memory cache
    /// (unless [`cache_client`](ClientOptions::cache_client) is set).
    pub cache_path: Option<PathBuf>,
    /// ZEO's `client` name for a persistent cache: when set and
    /// [`cache_path`](ClientOptions::cache_path) is not, the cache file is
    /// `<cache_var>/<cache_client>-<storage>.zec`, derived when the client
    /// opens (so `storage` may be set before or after). Set by
    /// [`ClientOptions::persistent_cache`].
    pub cache_client: Option<String>,
    /// ZEO's `var`: the directory of the cache file named after
    /// [`cache_client`](ClientOptions::cache_client); `None` is the current
    /// directory.
    pub cache_var: Option<PathBuf>,
    /// The name [`zeo_storage::Storage::name`] reports; empty means the
    /// server addresses.
    pub name: String,
    /// First delay between reconnection attempts.
    pub min_disconnect_poll: Duration,
    /// Longest delay between reconnection attempts (the delay doubles up
    /// to it after each failed round).
    pub max_disconnect_poll: Duration,
    /// Whether starting waits for a verified connection.
    pub wait: bool,
    /// Give up at once, rather than after `wait_timeout`, when a whole
    /// round of connection attempts fails because every address refused
    /// the connection (nothing listens there, or the Unix socket does not
    /// exist). Applies to opening and to calls waiting for a connection.
    /// Off by default: a server that is restarting refuses for a moment.
    pub fail_fast: bool,
    /// How long a call that needs the server waits for a connection; also
    /// how long a new connection waits for a server that is behind the
    /// cache (one over a lagging database replica) to catch up, before it
    /// is refused with [`crate::Error::CacheNewerThanServer`].
    pub wait_timeout: Duration,
    /// Register read-only; writes fail with a read-only error.
    pub read_only: bool,
    /// Accept a read-only server when no writable one answers, and keep
    /// looking for a writable one.
    pub read_only_fallback: bool,
    /// Sent to the server with `set_client_label` for its logs.
    pub client_label: Option<String>,
    /// Called with conflicts the server returns at vote; without one (or
    /// when it gives up) such conflicts fail the vote, unless native
    /// resolution merges them.
    pub conflict_resolver: Option<ConflictResolver>,
    /// Resolve conflicts on `BTrees` buckets, sets, one-bucket BTrees and
    /// TreeSets and `BTrees.Length.Length` with `zeo-conflict` when the
    /// server returns them (a server in client-side resolution mode, such
    /// as runzeo with `client-conflict-resolution true`, or zeo-server with
    /// `native-conflict-resolution false`): byte for byte the record
    /// Python's client would store. Tried after `conflict_resolver`, when
    /// that is unset or returns `None`. On by default.
    pub native_conflict_resolution: bool,
    /// Largest frame accepted from a server.
    pub max_frame: usize,
    /// Interval of keep-alive messages.
    pub heartbeat_interval: Duration,
    /// User name for ZEO 3/4 `digest` authentication. With a
    /// [`password`](ClientOptions::password) too, the client logs in before
    /// `register` whenever the server asks for it (only zeo-rs servers
    /// still do; see `docs/auth.md`).
    pub username: Option<String>,
    /// Password for [`username`](ClientOptions::username).
    pub password: Option<String>,
    /// The realm the server must announce; `None` accepts the server's.
    pub realm: Option<String>,
    /// Opens streams to servers instead of sockets; `None` connects over
    /// TCP or Unix sockets as the address says.
    pub connector: Option<Connector>,
    /// TLS to the servers (ZEO's `<ssl>`): the handshake runs before the
    /// ZEO greeting, checking the server's certificate (and its host name,
    /// the address's host unless `server_hostname` says otherwise; for a
    /// Unix socket, `localhost`). A TLS failure ends a wait for a
    /// connection at once with [`Error::Tls`] naming the reason; the
    /// client keeps retrying in the background. See `docs/tls.md`.
    ///
    /// ```no_run
    /// use zeo_client::{ClientOptions, ServerAddress};
    /// let mut options = ClientOptions::new(vec!["db.example:8100".parse()?]);
    /// options.tls = Some(zeo_tls::ClientTls::load(zeo_tls::ClientTlsFiles {
    ///     certificate: Some("client.pem".into()),
    ///     key: Some("client_key.pem".into()),
    ///     authenticate: Some("ca.pem".into()),
    ///     ..Default::default()
    /// })?);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub tls: Option<zeo_tls::ClientTls>,
    /// ZEO's `blob_dir`: where blobs are kept. Without
    /// [`shared_blob_dir`](ClientOptions::shared_blob_dir) it is a local
    /// cache of downloaded blobs in ZEO's `zeocache` layout, which a
    /// Python client on the same host may share (see `docs/client.md`);
    /// `None` means the client refuses blob calls (`Unsupported`).
    pub blob_dir: Option<PathBuf>,
    /// ZEO's `shared_blob_dir`: `blob_dir` is the server's own blob
    /// directory (a shared file system), read in place and written without
    /// sending blob bytes over the connection.
    pub shared_blob_dir: bool,
    /// ZEO's `blob_cache_size`: the bytes the blob cache is kept under
    /// (files least recently accessed are removed first); `None` leaves it
    /// unbounded. Ignored with `shared_blob_dir`.
    pub blob_cache_size: Option<u64>,
    /// ZEO's `blob_cache_size_check`: the percentage of `blob_cache_size`
    /// that may be downloaded between two size checks; a check brings the
    /// cache down to `blob_cache_size` minus that much. Must be below 100;
    /// ZEO's default is 10.
    pub blob_cache_size_check: u8,
}

impl fmt::Debug for ClientOptions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClientOptions")
            .field("servers", &self.servers)
            .field("storage", &self.storage)
            .field("cache_size", &self.cache_size)
            .field("cache_path", &self.cache_path)
            .field("read_only", &self.read_only)
            .field("read_only_fallback", &self.read_only_fallback)
            .field("wait", &self.wait)
            .field("fail_fast", &self.fail_fast)
            .field("wait_timeout", &self.wait_timeout)
            .field("username", &self.username)
            .field("realm", &self.realm)
            .field("tls", &self.tls.as_ref().map(|t| t.files()))
            .field("blob_dir", &self.blob_dir)
            .field("shared_blob_dir", &self.shared_blob_dir)
            .field("blob_cache_size", &self.blob_cache_size)
            .finish_non_exhaustive()
    }
}

impl ClientOptions {
    /// ZEO's defaults for these servers.
    pub fn new(servers: Vec<ServerAddress>) -> Self {
        ClientOptions {
            servers,
            storage: "1".into(),
            cache_size: DEFAULT_CACHE_SIZE,
            cache_path: None,
            cache_client: None,
            cache_var: None,
            name: String::new(),
            min_disconnect_poll: Duration::from_secs(1),
            max_disconnect_poll: Duration::from_secs(30),
            wait: true,
            fail_fast: false,
            wait_timeout: Duration::from_secs(30),
            read_only: false,
            read_only_fallback: false,
            client_label: None,
            conflict_resolver: None,
            native_conflict_resolution: true,
            max_frame: 64 * 1024 * 1024,
            heartbeat_interval: Duration::from_secs(60),
            username: None,
            password: None,
            realm: None,
            connector: None,
            tls: None,
            blob_dir: None,
            shared_blob_dir: false,
            blob_cache_size: None,
            blob_cache_size_check: 10,
        }
    }

    /// Whether a conflict on a record holding `data` may be resolved here,
    /// so its committed and original states are worth loading.
    pub(crate) fn may_resolve(&self, data: &[u8]) -> bool {
        self.conflict_resolver.is_some()
            || (self.native_conflict_resolution
                && zeo_conflict::record_class(data)
                    .is_some_and(|(module, name)| zeo_conflict::resolves(&module, &name)))
    }

    /// The merged data for a conflict: `conflict_resolver`'s, else the
    /// native merge's; `None` when neither resolves it.
    pub(crate) fn resolve_conflict(&self, c: &ConflictInfo) -> Option<Vec<u8>> {
        if let Some(merged) = self.conflict_resolver.as_ref().and_then(|r| r(c)) {
            return Some(merged);
        }
        if !self.native_conflict_resolution {
            return None;
        }
        zeo_conflict::resolve(c.old_data.as_deref()?, &c.committed_data, &c.data).ok()
    }

    /// Uses the persistent cache ZEO would: `<var>/<client>-<storage>.zec`
    /// (`var` defaults to the current directory). The path is derived when
    /// the client opens, from the `storage` set by then.
    ///
    /// ```
    /// use zeo_client::{ClientOptions, ServerAddress};
    /// let mut options = ClientOptions::new(vec![ServerAddress::localhost(8100)]);
    /// options.persistent_cache("app", Some("/var/cache/app".into()));
    /// options.storage = "main".into();
    /// assert_eq!(options.effective_cache_path().unwrap(), std::path::Path::new("/var/cache/app/app-main.zec"));
    /// ```
    pub fn persistent_cache(&mut self, client: &str, var: Option<PathBuf>) -> &mut Self {
        self.cache_path = None;
        self.cache_client = Some(client.to_owned());
        self.cache_var = var;
        self
    }

    /// The cache file the client opens: [`cache_path`](ClientOptions::cache_path),
    /// else the one named by [`cache_client`](ClientOptions::cache_client)
    /// and the current `storage`, else `None` (an in-memory cache).
    pub fn effective_cache_path(&self) -> Option<PathBuf> {
        if let Some(path) = &self.cache_path {
            return Some(path.clone());
        }
        let client = self.cache_client.as_deref()?;
        let var = self.cache_var.clone().unwrap_or_else(|| PathBuf::from("."));
        Some(crate::ClientCache::persistent_path(
            &var,
            client,
            &self.storage,
        ))
    }

    /// The name the storage reports.
    pub fn display_name(&self) -> String {
        if !self.name.is_empty() {
            return self.name.clone();
        }
        let addrs: Vec<String> = self.servers.iter().map(ToString::to_string).collect();
        addrs.join(",")
    }
}

impl TryFrom<&zeo_config::ClientConfig> for ClientOptions {
    type Error = Error;

    /// Builds options from a `<zeoclient>` / `<clientstorage>` section,
    /// loading the files its `<ssl>` names (and its blob settings).
    /// `password-function` (a Python function) is refused rather than
    /// silently ignored.
    ///
    /// ```
    /// let config = zeo_config::ClientConfig::from_str(
    ///     "<zeoclient>\n  server 127.0.0.1:8100\n  client app\n  var /tmp\n  read-only-fallback true\n</zeoclient>\n",
    ///     "example",
    /// ).unwrap();
    /// let options = zeo_client::ClientOptions::try_from(&config).unwrap();
    /// assert_eq!(options.servers, vec![zeo_client::ServerAddress::localhost(8100)]);
    /// assert_eq!(options.cache_path.unwrap(), std::path::Path::new("/tmp/app-1.zec"));
    /// assert!(options.read_only_fallback);
    /// assert_eq!(options.min_disconnect_poll, std::time::Duration::from_secs(5));
    /// ```
    fn try_from(config: &zeo_config::ClientConfig) -> Result<Self, Error> {
        let blob_cache_size_check = match config.blob_cache_size_check {
            None => 10,
            Some(n @ 0..=99) => n as u8,
            Some(n) => {
                return Err(Error::Config(format!(
                    "blob-cache-size-check must be a percentage below 100, not {n}"
                )))
            }
        };
        let servers = config
            .servers
            .iter()
            .map(|a| match a {
                zeo_config::SocketAddress::Tcp { host, port } => ServerAddress::Tcp {
                    host: host.clone(),
                    port: *port,
                },
                zeo_config::SocketAddress::Unix(path) => ServerAddress::Unix(path.clone()),
            })
            .collect();
        let secs = |n: i64| Duration::from_secs(u64::try_from(n).unwrap_or(0));
        let mut options = ClientOptions::new(servers);
        options.storage = config.storage.clone();
        options.cache_size = config.cache_size.bytes();
        options.cache_path = config.persistent_cache_path();
        options.name = config.name.clone();
        options.min_disconnect_poll = secs(config.min_disconnect_poll);
        options.max_disconnect_poll =
            secs(config.max_disconnect_poll).max(options.min_disconnect_poll);
        options.wait = config.wait;
        options.wait_timeout = config.wait_timeout.as_duration();
        options.read_only = config.read_only;
        options.read_only_fallback = config.read_only_fallback;
        options.client_label = config.client_label.clone();
        options.max_frame = usize::try_from(config.max_message_size.bytes()).unwrap_or(usize::MAX);
        options.username = config.username.clone();
        options.password = config.password.clone();
        options.realm = config.realm.clone();
        options.tls = config.ssl.as_ref().map(client_tls).transpose()?;
        options.blob_dir = config.blob_dir.clone();
        options.shared_blob_dir = config.shared_blob_dir;
        options.blob_cache_size = config.blob_cache_size.map(|s| s.bytes());
        options.blob_cache_size_check = blob_cache_size_check;
        Ok(options)
    }
}

/// The TLS configuration of a client `<ssl>` section.
fn client_tls(ssl: &zeo_config::ClientSsl) -> Result<zeo_tls::ClientTls, Error> {
    if let Some(function) = &ssl.password_function {
        return Err(Error::Config(format!(
            "<ssl>: {}",
            zeo_tls::Error::PasswordFunction(function.clone())
        )));
    }
    zeo_tls::ClientTls::load(zeo_tls::ClientTlsFiles {
        certificate: Some(ssl.certificate.clone()),
        key: ssl.key.clone(),
        password_file: ssl.password_file.clone(),
        authenticate: ssl.authenticate.clone(),
        check_hostname: ssl.check_hostname,
        server_hostname: ssl.server_hostname.clone(),
    })
    .map_err(|e| Error::Config(format!("<ssl>: {e}")))
}
