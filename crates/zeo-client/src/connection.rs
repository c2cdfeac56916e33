//! One connection to one server: socket set-up, the `Z5`/`M5` handshake,
//! `register`, and the reader and writer tasks that carry calls, replies and
//! server notifications.
//!
//! Ordering is the point of this module. The reader task handles every
//! incoming message in arrival order and does everything that touches the
//! cache itself — storing `loadBefore` results, applying invalidations,
//! updating the cache after `tpc_finish` — before any waiting caller wakes
//! up. The server sends an invalidation before any reply that reflects it,
//! so this order is what keeps the cache from ever holding a stale current
//! revision.
//!
//! With a user name and password, and a server that asks for ZEO 3/4
//! `digest` authentication, the client logs in right after the handshake
//! and before any task starts; from then on the writer seals every frame it
//! sends and the reader checks every frame it receives (see `docs/auth.md`).

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::{broadcast, mpsc, oneshot, Notify};
use tokio_util::codec::Decoder;
use tracing::{debug, warn};
use zeo_auth::{ClientProof, MacState, SessionKey};
use zeo_pickle::Value;
use zeo_protocol::frame::READ_AHEAD;
use zeo_protocol::{
    client::replies, ClientEvent, ClientHandshake, ClientIncoming, ClientRequest, FrameCodec,
    Marshaller, Message, WireError,
};
use zeo_storage::{LoadedRevision, Oid, Tid};

use crate::blobs::BlobState;
use crate::cache::ClientCache;
use crate::error::{Error, Result};
use crate::options::{ClientOptions, ServerAddress, Transport};

/// What the client tells the application.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Notice {
    /// Another client committed `tid`, changing `oids` (or, after a
    /// reconnect, these objects changed while we were away).
    Invalidated {
        /// The transaction.
        tid: Tid,
        /// The objects it changed.
        oids: Vec<Oid>,
    },
    /// The cache was too old to verify and was dropped: every object the
    /// application holds may be stale (ZEO's `invalidateCache`).
    CacheDropped,
    /// A verified connection is up.
    Connected {
        /// The server's address.
        address: String,
        /// Whether the connection is read-only.
        read_only: bool,
    },
    /// The connection was lost; the client is reconnecting.
    Disconnected,
    /// A server refused to let the client in: wrong credentials, none
    /// given to a server that requires them, or credentials for a server
    /// that cannot check them. The client keeps trying, as ZEO does, but
    /// the same options will keep failing.
    AuthenticationFailed {
        /// The server's address.
        address: String,
        /// What went wrong ([`crate::Error::Auth`]'s text).
        reason: String,
    },
    /// A TLS handshake with a server failed. The client keeps trying, as
    /// ZEO does; a caller waiting for a connection gets [`crate::Error::Tls`]
    /// at once.
    TlsFailed {
        /// The server's address.
        address: String,
        /// Why.
        reason: zeo_tls::FailureReason,
    },
}

/// State the reader task shares with the client.
#[derive(Debug)]
pub(crate) struct Shared {
    pub cache: ClientCache,
    pub notices: broadcast::Sender<Notice>,
    /// `(length, size)` from `get_info` and `info` messages.
    pub info: Mutex<(u64, u64)>,
    /// `supportsUndo` from the last `get_info`.
    pub supports_undo: AtomicBool,
    /// The blob directory and the downloads in progress.
    pub blobs: Option<Arc<BlobState>>,
}

impl Shared {
    pub fn notify(&self, notice: Notice) {
        // No subscriber is not an error.
        let _ = self.notices.send(notice);
    }

    pub fn apply_invalidations(&self, tid: Tid, oids: Vec<Oid>) {
        if let Err(e) = self.cache.apply_invalidations(tid, &oids) {
            // The server went back in time mid-connection: nothing in the
            // cache can be trusted.
            warn!(error = %e, "invalidation older than the cache; dropping the cache");
            self.cache.clear();
            let _ = self.cache.set_last_tid(tid);
            self.notify(Notice::CacheDropped);
        }
        self.notify(Notice::Invalidated { tid, oids });
    }

    fn merge_info(&self, entries: &[(Value, Value)]) {
        let mut info = self.info.lock().unwrap_or_else(|e| e.into_inner());
        for (k, v) in entries {
            let (Value::Str(k), Value::Int(n)) = (k, v) else {
                continue;
            };
            let n = u64::try_from(*n).unwrap_or(0);
            match k.as_str() {
                "length" => info.0 = n,
                "size" => info.1 = n,
                _ => {}
            }
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
enum CallKey {
    Id(i64),
    Load(Oid, Tid),
}

impl CallKey {
    fn from_msgid(v: &Value) -> Option<CallKey> {
        match v {
            Value::Int(i) => Some(CallKey::Id(*i)),
            Value::Tuple(p) | Value::List(p) => match p.as_slice() {
                [Value::Bytes(o), Value::Bytes(t)] => {
                    Some(CallKey::Load(Oid::from_slice(o)?, Tid::from_slice(t)?))
                }
                _ => None,
            },
            _ => None,
        }
    }
}

pub(crate) type Reply = std::result::Result<Value, WireError>;
/// Runs in the reader task when a reply arrives, before waiters wake.
pub(crate) type ReplyHook = Box<dyn FnOnce(&Reply) + Send>;

#[derive(Default)]
struct Pending {
    waiters: Vec<oneshot::Sender<Reply>>,
    hook: Option<ReplyHook>,
}

/// An invalidation received before verification finished.
type QueuedInvalidation = (Tid, Vec<Oid>);

/// The bytes waiting in a connection's outgoing queue, so that a long
/// stream of messages (a blob upload) can wait for the writer instead of
/// queueing without bound.
#[derive(Debug, Default)]
struct Queued {
    bytes: AtomicU64,
    drained: Notify,
}

impl Queued {
    fn written(&self, n: usize) {
        self.bytes.fetch_sub(n as u64, Ordering::AcqRel);
        self.drained.notify_waiters();
    }
}

/// A registered connection.
pub(crate) struct Conn {
    pub address: ServerAddress,
    read_only: AtomicBool,
    /// Set once per successful (re)connection by the client.
    pub generation: u64,
    server_tid: AtomicU64,
    marshaller: Marshaller,
    /// Encoded messages for the writer task, which frames them.
    out: mpsc::UnboundedSender<Bytes>,
    /// How many bytes of `out` the writer has not written yet.
    outgoing: Arc<Queued>,
    pending: Mutex<HashMap<CallKey, Pending>>,
    next_id: AtomicI64,
    closed: AtomicBool,
    closed_notify: Notify,
    shared: Arc<Shared>,
    /// Invalidations that arrived before verification finished.
    queued: Mutex<Option<Vec<QueuedInvalidation>>>,
    tasks: Mutex<Vec<tokio::task::JoinHandle<()>>>,
}

impl std::fmt::Debug for Conn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Conn")
            .field("address", &self.address)
            .field("read_only", &self.read_only())
            .field("generation", &self.generation)
            .finish_non_exhaustive()
    }
}

async fn open_stream(
    address: &ServerAddress,
    options: &ClientOptions,
) -> std::io::Result<Box<dyn Transport>> {
    if let Some(connect) = &options.connector {
        return connect(address).await;
    }
    match address {
        ServerAddress::Tcp { host, port } => {
            let host = if host.is_empty() {
                "127.0.0.1"
            } else {
                host.as_str()
            };
            let s = tokio::net::TcpStream::connect((host, *port)).await?;
            s.set_nodelay(true)?;
            Ok(Box::new(s))
        }
        ServerAddress::Unix(path) => Ok(Box::new(tokio::net::UnixStream::connect(path).await?)),
    }
}

/// A failed read: a TLS failure the server reported after the handshake
/// (a TLS 1.3 server refuses our certificate only then) keeps its reason;
/// the caller that knows the address fills it in.
fn read_error(e: std::io::Error) -> Error {
    match zeo_tls::FailureReason::from_io(&e) {
        Some(reason) => Error::Tls {
            address: String::new(),
            reason,
        },
        None => Error::Disconnected(e.to_string()),
    }
}

/// Bytes of room made when a read finds the buffer full: a whole small
/// reply, or several.
const READ_CHUNK: usize = 8192;

/// Frames read from the server, cut by `zeo_protocol::FrameCodec` (the codec
/// the server reads with too): the buffer grows with the bytes that arrive,
/// never to a length the server announced, and a frame over the codec's
/// limit is refused before anything is reserved for it. The buffer is let
/// go whenever its last frame was taken, except that after a large frame
/// the next read waits in a [`READ_AHEAD`] buffer (one per connection;
/// kept only whole if the read filled a good part of it).
struct FrameReader<R> {
    rd: R,
    codec: FrameCodec,
    buf: BytesMut,
}

impl<R: AsyncRead + Unpin> FrameReader<R> {
    fn new(rd: R, max: usize) -> Self {
        FrameReader {
            rd,
            codec: FrameCodec::with_max_frame(max).with_read_ahead(READ_AHEAD),
            buf: BytesMut::new(),
        }
    }

    /// The next frame's payload. A closed or failed stream is
    /// [`Error::Disconnected`]; a frame too large or (on a MAC'd connection)
    /// without a valid MAC is [`Error::Protocol`].
    async fn next(&mut self) -> Result<BytesMut> {
        loop {
            let decoded = self.codec.decode(&mut self.buf).map_err(|e| match e {
                zeo_protocol::Error::Io(inner) => Error::Protocol(inner.to_string()),
                other => Error::Protocol(other.to_string()),
            })?;
            if let Some(frame) = decoded {
                if self.buf.is_empty() {
                    // The frame alone keeps the allocation alive now.
                    self.buf = BytesMut::new();
                }
                return Ok(frame);
            }
            // The codec made room for the rest of a frame it saw the length
            // of; this only covers a partial length word. While large
            // frames stream in (a blob download), a read with nothing
            // buffered takes several at once.
            if self.buf.is_empty() {
                if let Some(buf) = self.codec.read_ahead_buffer() {
                    self.buf = buf;
                }
            }
            if self.buf.capacity() == self.buf.len() {
                self.buf.reserve(READ_CHUNK);
            }
            let had = self.buf.len();
            let room = self.buf.capacity() - had;
            let n = self.rd.read_buf(&mut self.buf).await.map_err(read_error)?;
            self.codec.after_read(&mut self.buf, room, n);
            if n == 0 {
                return Err(Error::Disconnected(
                    if had == 0 {
                        "connection closed"
                    } else {
                        "connection closed inside a message"
                    }
                    .into(),
                ));
            }
        }
    }
}

/// Appends `payload` framed with `codec` to `out`.
fn frame_into(codec: &mut FrameCodec, payload: &[u8], out: &mut Vec<u8>) -> Result<()> {
    let header = codec
        .header(payload)
        .map_err(|e| Error::Protocol(e.to_string()))?;
    out.reserve(header.as_bytes().len() + payload.len());
    out.extend_from_slice(header.as_bytes());
    out.extend_from_slice(payload);
    Ok(())
}

/// Frames `payload` with `codec`, sealed when the connection is MAC'd.
fn frame(codec: &mut FrameCodec, payload: &[u8]) -> Result<Vec<u8>> {
    codec
        .encode_vec(payload)
        .map_err(|e| Error::Protocol(e.to_string()))
}

/// The client error for an exception the server raised: `AuthError`
/// becomes [`Error::Auth`], the rest storage errors.
fn server_error(wire: &WireError) -> Error {
    if wire.class.rsplit('.').next() == Some("AuthError") {
        let message = match &wire.fields {
            Value::Tuple(items) | Value::List(items) => match items.as_slice() {
                [Value::Str(m)] => m.clone(),
                _ => format!("{items:?}"),
            },
            other => format!("{other:?}"),
        };
        return Error::Auth(message);
    }
    Error::Storage(wire.to_storage_error())
}

/// A text member of a login reply: a Python 3 `str`, or ZEO 4's Python 2
/// byte strings.
fn login_text(value: &Value) -> Option<String> {
    match value {
        Value::Str(s) => Some(s.clone()),
        Value::Bytes(b) => String::from_utf8(b.clone()).ok(),
        _ => None,
    }
}

/// The handshake-to-register stretch of a connection, before the reader and
/// writer tasks exist: calls answered in order on the bare stream.
struct Setup<'a, R, W> {
    rd: &'a mut FrameReader<R>,
    wr: &'a mut W,
    marshaller: Marshaller,
    address: &'a ServerAddress,
    next_id: i64,
}

impl<R: AsyncRead + Unpin, W: AsyncWrite + Unpin> Setup<'_, R, W> {
    async fn call(&mut self, method: &str, args: Vec<Value>) -> Result<Value> {
        self.next_id += 1;
        let id = self.next_id;
        let payload = self
            .marshaller
            .encode(&Message::call(id, method, args))
            .map_err(|e| Error::Protocol(e.to_string()))?;
        let wire = frame(&mut FrameCodec::new(), &payload)?;
        self.wr
            .write_all(&wire)
            .await
            .map_err(|e| disconnected(format!("{}: {e}", self.address)))?;
        loop {
            let payload = self.rd.next().await.map_err(|e| match e {
                // ZEO 5/6 servers close the connection on a method they do
                // not know, which the first login call is for them.
                Error::Disconnected(_) if method == "getAuthProtocol" => Error::Auth(format!(
                    "{} closed the connection when asked for its authentication \
                     protocol: it does not support authentication (stock ZEO 5/6 \
                     servers do not); connect without a username and password",
                    self.address
                )),
                other => other,
            })?;
            let msg = self
                .marshaller
                .decode(&payload)
                .map_err(|e| Error::Protocol(e.to_string()))?;
            match ClientIncoming::parse(&msg) {
                Ok(ClientIncoming::Reply { msgid, result }) if msgid == Value::Int(id) => {
                    return result.map_err(|wire| server_error(&wire));
                }
                // Nothing else is expected before register; skip it.
                _ => debug!(method = %msg.method, "ignoring a message while logging in"),
            }
        }
    }

    /// Logs in when the options carry credentials and the server asks for
    /// authentication; returns the session key to MAC the connection with.
    async fn authenticate(&mut self, options: &ClientOptions) -> Result<Option<SessionKey>> {
        let (user, password) = match (&options.username, &options.password) {
            (None, None) => return Ok(None),
            (Some(user), Some(password)) => (user, password),
            _ => {
                return Err(Error::Auth(
                    "a username needs a password and a password a username".into(),
                ))
            }
        };
        let protocol = self.call("getAuthProtocol", Vec::new()).await?;
        match login_text(&protocol) {
            // No authentication asked for: register right away, as ZEO does.
            None if protocol == Value::None => return Ok(None),
            Some(p) if p == zeo_auth::PROTOCOL => {}
            _ => {
                return Err(Error::Auth(format!(
                    "{}: unsupported authentication protocol {protocol:?}",
                    self.address
                )))
            }
        }
        let reply = self.call("auth_get_challenge", Vec::new()).await?;
        let challenge = match &reply {
            Value::Tuple(items) | Value::List(items) => match items.as_slice() {
                [realm, challenge, key_nonce] => {
                    match (
                        login_text(realm),
                        login_text(challenge),
                        login_text(key_nonce),
                    ) {
                        (Some(realm), Some(challenge), Some(key_nonce)) => {
                            Some(zeo_auth::Challenge {
                                realm,
                                challenge,
                                key_nonce,
                            })
                        }
                        _ => None,
                    }
                }
                _ => None,
            },
            _ => None,
        }
        .ok_or_else(|| Error::Protocol(format!("auth_get_challenge returned {reply:?}")))?;
        let proof = ClientProof::new(user, password, options.realm.as_deref(), &challenge)
            .map_err(|e| Error::Auth(e.to_string()))?;
        let answer = Value::Tuple(vec![
            Value::Str(user.clone()),
            Value::Str(challenge.challenge.clone()),
            Value::Str(proof.response.clone()),
        ]);
        let verdict = self
            .call("auth_response", vec![answer])
            .await
            .map_err(|e| match e {
                // Unknown user (LookupError), a stale challenge (ValueError).
                Error::Storage(inner) => Error::Auth(inner.to_string()),
                other => other,
            })?;
        match verdict {
            Value::Bool(true) | Value::Int(1) => Ok(Some(proof.session_key)),
            Value::Bool(false) | Value::Int(0) => Err(Error::Auth(
                zeo_auth::Error::AuthenticationFailed.to_string(),
            )),
            other => Err(Error::Protocol(format!("auth_response returned {other:?}"))),
        }
    }
}

fn disconnected(what: impl std::fmt::Display) -> Error {
    Error::Disconnected(what.to_string())
}

/// Runs the TLS handshake over a connected stream. The name checked is
/// `server-hostname`, else the address's host (`localhost` for a Unix
/// socket, which has none).
async fn secure(
    tls: &zeo_tls::ClientTls,
    stream: Box<dyn Transport>,
    address: &ServerAddress,
) -> Result<Box<dyn Transport>> {
    let host = match address {
        ServerAddress::Tcp { host, .. } if !host.is_empty() => host.as_str(),
        ServerAddress::Tcp { .. } => "127.0.0.1",
        ServerAddress::Unix(_) => "localhost",
    };
    match tls.connect(stream, host).await {
        Ok(stream) => Ok(Box::new(stream)),
        Err(zeo_tls::Error::Handshake(reason)) => Err(Error::Tls {
            address: address.to_string(),
            reason,
        }),
        Err(other) => Err(Error::Config(other.to_string())),
    }
}

/// The error of a greeting that did not come: a TLS failure names the
/// server; a plain client whose server closed without a word is told that
/// a TLS server does just that.
fn greeting_error(e: Error, address: &ServerAddress, options: &ClientOptions) -> Error {
    match e {
        Error::Tls { reason, .. } => Error::Tls {
            address: address.to_string(),
            reason,
        },
        Error::Disconnected(m) if options.tls.is_none() => disconnected(format!(
            "{address}: closed before its ZEO greeting ({m}); a server with TLS (<ssl>) \
             waits for a TLS handshake and closes: configure TLS if it has it"
        )),
        other => other,
    }
}

/// How long connecting, handshaking and registering may take.
const SETUP_TIMEOUT: Duration = Duration::from_secs(10);

impl Conn {
    /// Connects, handshakes and registers. With `fallback`, a
    /// `ReadOnlyError` to a writable registration is answered by registering
    /// read-only on the same connection, as ZEO does.
    pub async fn open(
        address: &ServerAddress,
        options: &ClientOptions,
        shared: Arc<Shared>,
        generation: u64,
    ) -> Result<Arc<Conn>, (Error, bool)> {
        let stream = match tokio::time::timeout(SETUP_TIMEOUT, open_stream(address, options)).await
        {
            Ok(Ok(stream)) => stream,
            Ok(Err(e)) => {
                // Nothing listens there: the one failure `fail_fast` acts on.
                let refused = matches!(
                    e.kind(),
                    std::io::ErrorKind::ConnectionRefused | std::io::ErrorKind::NotFound
                );
                return Err((disconnected(format!("{address}: {e}")), refused));
            }
            Err(_) => {
                return Err((
                    disconnected(format!("{address}: timed out connecting")),
                    false,
                ))
            }
        };
        let opened = tokio::time::timeout(SETUP_TIMEOUT, async {
            let stream = match &options.tls {
                Some(tls) => secure(tls, stream, address).await?,
                None => stream,
            };
            Self::open_inner(stream, address, options, shared.clone(), generation).await
        })
        .await
        .map_err(|_| disconnected(format!("{address}: timed out connecting")))
        .and_then(|r| r);
        match &opened {
            Err(Error::Auth(reason)) => shared.notify(Notice::AuthenticationFailed {
                address: address.to_string(),
                reason: reason.clone(),
            }),
            Err(Error::Tls { address, reason }) => shared.notify(Notice::TlsFailed {
                address: address.clone(),
                reason: reason.clone(),
            }),
            _ => {}
        }
        opened.map_err(|e| (e, false))
    }

    async fn open_inner(
        stream: Box<dyn Transport>,
        address: &ServerAddress,
        options: &ClientOptions,
        shared: Arc<Shared>,
        generation: u64,
    ) -> Result<Arc<Conn>> {
        let (rd, mut wr) = tokio::io::split(stream);
        // A greeting is two bytes; anything longer is not a ZEO server.
        let mut rd = FrameReader::new(rd, 64);
        let greeting = rd
            .next()
            .await
            .map_err(|e| greeting_error(e, address, options))?;
        rd.codec = FrameCodec::with_max_frame(options.max_frame).with_read_ahead(READ_AHEAD);
        let (encoding, answer) = ClientHandshake::new()
            .receive(&greeting)
            .map_err(|e| Error::Protocol(format!("{address}: {e}")))?;
        let frame = frame(&mut FrameCodec::new(), &answer)?;
        wr.write_all(&frame)
            .await
            .map_err(|e| disconnected(format!("{address}: {e}")))?;
        debug!(%address, ?encoding, "handshake done");

        let key = Setup {
            rd: &mut rd,
            wr: &mut wr,
            marshaller: Marshaller::client(encoding),
            address,
            next_id: 0,
        }
        .authenticate(options)
        .await?;
        if key.is_some() {
            debug!(%address, "authenticated; messages are MAC'd from now on");
        }
        let mut send = FrameCodec::new();
        if let Some(key) = &key {
            // Bytes the reader holds already are checked with the MAC too.
            rd.codec.install_mac(MacState::new(key));
            send.install_mac(MacState::new(key));
        }

        let (out, out_rx) = mpsc::unbounded_channel();
        let outgoing = Arc::new(Queued::default());
        let conn = Arc::new(Conn {
            outgoing: outgoing.clone(),
            address: address.clone(),
            read_only: AtomicBool::new(options.read_only),
            generation,
            server_tid: AtomicU64::new(0),
            marshaller: Marshaller::client(encoding),
            out,
            pending: Mutex::new(HashMap::new()),
            next_id: AtomicI64::new(0),
            closed: AtomicBool::new(false),
            closed_notify: Notify::new(),
            shared,
            queued: Mutex::new(Some(Vec::new())),
            tasks: Mutex::new(Vec::new()),
        });
        let writer = tokio::spawn(write_loop(
            wr,
            out_rx,
            options.heartbeat_interval,
            conn.marshaller,
            send,
            outgoing,
        ));
        let reader = tokio::spawn(read_loop(Arc::downgrade(&conn), rd));
        conn.tasks
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .extend([writer, reader]);

        // register; with fallback, retry read-only on the same connection.
        let mut read_only = options.read_only;
        let reply = conn
            .call(|id| ClientRequest::register(id, &options.storage, read_only))
            .await;
        let reply = match reply {
            Err(Error::Storage(zeo_storage::Error::ReadOnly))
                if options.read_only_fallback && !read_only =>
            {
                read_only = true;
                conn.call(|id| ClientRequest::register(id, &options.storage, true))
                    .await
            }
            other => other,
        };
        let reply = reply.inspect_err(|_| conn.close())?;
        let server_tid = replies::tid("register", &reply)
            .map_err(|e| Error::Protocol(e.to_string()))
            .inspect_err(|_| conn.close())?;
        conn.read_only.store(read_only, Ordering::Release);
        conn.server_tid.store(server_tid.0, Ordering::Release);
        Ok(conn)
    }

    /// Whether the server registered us read-only.
    pub fn read_only(&self) -> bool {
        self.read_only.load(Ordering::Acquire)
    }

    /// The server's last tid when we registered.
    pub fn server_tid(&self) -> Tid {
        Tid(self.server_tid.load(Ordering::Acquire))
    }

    /// Whether the connection is gone.
    pub fn is_closed(&self) -> bool {
        self.closed.load(Ordering::Acquire)
    }

    /// Waits until the connection is gone.
    pub async fn closed(&self) {
        loop {
            let notified = self.closed_notify.notified();
            if self.is_closed() {
                return;
            }
            notified.await;
        }
    }

    /// Closes the connection: pending calls fail with `ClientDisconnected`.
    pub fn close(&self) {
        if self.closed.swap(true, Ordering::AcqRel) {
            return;
        }
        let pending = std::mem::take(&mut *self.pending.lock().unwrap_or_else(|e| e.into_inner()));
        drop(pending); // dropping the senders wakes the waiters with an error
        for t in self
            .tasks
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .drain(..)
        {
            t.abort();
        }
        self.closed_notify.notify_waiters();
        debug!(address = %self.address, "connection closed");
    }

    fn send(&self, msg: &Message) -> Result<()> {
        if self.is_closed() {
            return Err(disconnected("connection closed"));
        }
        let payload = self
            .marshaller
            .encode(msg)
            .map_err(|e| Error::Protocol(e.to_string()))?;
        self.send_payload(payload.into())
    }

    fn send_payload(&self, payload: Bytes) -> Result<()> {
        let len = payload.len();
        self.outgoing.bytes.fetch_add(len as u64, Ordering::AcqRel);
        self.out.send(payload).map_err(|_| {
            self.outgoing.written(len);
            disconnected("connection closed")
        })
    }

    /// A one-way call sent once fewer than `limit` bytes wait to be
    /// written: a stream of such calls holds at most `limit` plus one
    /// message in memory.
    pub async fn send_when_room(&self, msg: &Message, limit: usize) -> Result<()> {
        self.room_for(limit).await?;
        self.send(msg)
    }

    /// An encoded message (a payload, unframed) sent once fewer than
    /// `limit` bytes wait to be written: an upload's chunks, encoded in
    /// place (`zeo_protocol::encode_oneway_bytes_call`) into a pooled
    /// buffer (`zeo_protocol::buffer_pool`).
    pub async fn send_encoded_when_room(&self, payload: Bytes, limit: usize) -> Result<()> {
        self.room_for(limit).await?;
        self.send_payload(payload)
    }

    /// The encoding the server and this connection speak.
    pub fn encoding(&self) -> zeo_protocol::Encoding {
        self.marshaller.encoding()
    }

    /// Waits until fewer than `limit` bytes wait to be written.
    async fn room_for(&self, limit: usize) -> Result<()> {
        loop {
            let drained = self.outgoing.drained.notified();
            if self.is_closed() {
                return Err(disconnected("connection closed"));
            }
            if self.outgoing.bytes.load(Ordering::Acquire) < limit as u64 {
                return Ok(());
            }
            tokio::select! {
                () = drained => {}
                () = self.closed() => {}
            }
        }
    }

    /// A one-way call.
    pub fn call_async(&self, msg: &Message) -> Result<()> {
        self.send(msg)
    }

    async fn wait(&self, rx: oneshot::Receiver<Reply>) -> Result<Value> {
        match rx.await {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(wire)) => Err(server_error(&wire)),
            Err(_) => Err(disconnected(format!("connection to {} lost", self.address))),
        }
    }

    fn register_waiter(
        &self,
        key: CallKey,
        hook: Option<ReplyHook>,
    ) -> (oneshot::Receiver<Reply>, bool) {
        let (tx, rx) = oneshot::channel();
        let mut pending = self.pending.lock().unwrap_or_else(|e| e.into_inner());
        let entry = pending.entry(key).or_default();
        let first = entry.waiters.is_empty();
        entry.waiters.push(tx);
        if hook.is_some() {
            entry.hook = hook;
        }
        (rx, first)
    }

    /// A synchronous call: `build` gets the msgid.
    pub async fn call(&self, build: impl FnOnce(i64) -> Message) -> Result<Value> {
        self.call_with_hook(build, None).await
    }

    /// A synchronous call whose reply is first handed to `hook` in the
    /// reader task.
    pub async fn call_with_hook(
        &self,
        build: impl FnOnce(i64) -> Message,
        hook: Option<ReplyHook>,
    ) -> Result<Value> {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed) + 1;
        let (rx, _) = self.register_waiter(CallKey::Id(id), hook);
        if let Err(e) = self.send(&build(id)) {
            self.pending
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .remove(&CallKey::Id(id));
            return Err(e);
        }
        self.wait(rx).await
    }

    /// `loadBefore`; identical concurrent loads share one request, and the
    /// result is cached by the reader task before anyone sees it.
    pub async fn load_before(&self, oid: Oid, before: Tid) -> Result<Option<LoadedRevision>> {
        let (rx, _) = self.start_load(oid, before)?;
        self.finish_load(rx).await
    }

    /// Joins the in-flight `loadBefore(oid, before)`, or sends it when
    /// there is none; `true` when this call sent the request. The reader
    /// task caches the result before the receiver wakes.
    pub fn start_load(&self, oid: Oid, before: Tid) -> Result<(oneshot::Receiver<Reply>, bool)> {
        let key = CallKey::Load(oid, before);
        let (rx, first) = self.register_waiter(key.clone(), None);
        if first {
            if let Err(e) = self.send(&ClientRequest::load_before(oid, before)) {
                self.pending
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .remove(&key);
                return Err(e);
            }
        }
        Ok((rx, first))
    }

    /// The result of a load [`Conn::start_load`] joined.
    pub async fn finish_load(
        &self,
        rx: oneshot::Receiver<Reply>,
    ) -> Result<Option<LoadedRevision>> {
        let value = self.wait(rx).await?;
        replies::into_load_before(value).map_err(|e| Error::Protocol(e.to_string()))
    }

    /// Applies queued invalidations newer than `server_tid` and lets later
    /// ones through directly.
    pub fn mark_ready(&self, server_tid: Tid) {
        let mut queued = self.queued.lock().unwrap_or_else(|e| e.into_inner());
        for (tid, oids) in queued.take().unwrap_or_default() {
            if tid > server_tid {
                self.shared.apply_invalidations(tid, oids);
            }
        }
    }

    fn on_message(&self, msg: Message) {
        match ClientIncoming::from_message(msg) {
            Ok(ClientIncoming::Reply { msgid, result }) => {
                let Some(key) = CallKey::from_msgid(&msgid) else {
                    warn!(?msgid, "reply with an unknown msgid");
                    return;
                };
                let entry = self
                    .pending
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .remove(&key);
                let Some(entry) = entry else {
                    warn!(?msgid, "reply to no pending call");
                    return;
                };
                if let CallKey::Load(oid, _) = key {
                    if let Ok(value) = &result {
                        match replies::load_before_ref(value) {
                            Ok(Some(r)) => self.shared.cache.store(oid, r.start, r.end, r.data),
                            Ok(None) => {}
                            Err(e) => warn!(error = %e, "malformed loadBefore reply"),
                        }
                    }
                }
                if let Some(hook) = entry.hook {
                    hook(&result);
                }
                // Identical loads share one request: the last waiter takes
                // the reply itself, the others a copy.
                let mut waiters = entry.waiters.into_iter().peekable();
                while let Some(w) = waiters.next() {
                    if waiters.peek().is_some() {
                        let _ = w.send(result.clone());
                    } else {
                        let _ = w.send(result);
                        break;
                    }
                }
            }
            Ok(ClientIncoming::Event(ClientEvent::InvalidateTransaction { tid, oids })) => {
                let mut queued = self.queued.lock().unwrap_or_else(|e| e.into_inner());
                match queued.as_mut() {
                    Some(q) => q.push((tid, oids)),
                    None => self.shared.apply_invalidations(tid, oids),
                }
            }
            Ok(ClientIncoming::Event(ClientEvent::Info { entries })) => {
                self.shared.merge_info(&entries)
            }
            Ok(ClientIncoming::Event(blob)) => match &self.shared.blobs {
                Some(blobs) => blobs.on_event(blob, &self.address.to_string()),
                None => warn!(address = %self.address, "ignoring blob data: no blob_dir"),
            },
            Err(e) => {
                warn!(error = %e, address = %self.address, "ignoring a message from the server")
            }
        }
    }
}

/// How many bytes of queued messages the writer gathers into one write.
const WRITE_BATCH: usize = 64 * 1024;

/// The largest batch buffer the writer keeps between writes.
const KEPT_BATCH: usize = 256 * 1024;

/// Frames and writes queued payloads, and a heartbeat when idle. On a MAC'd
/// connection each frame is sealed here, so the chain follows exactly the
/// order frames reach the wire.
async fn write_loop<W: AsyncWrite + Unpin>(
    mut wr: W,
    mut rx: mpsc::UnboundedReceiver<Bytes>,
    heartbeat: Duration,
    marshaller: Marshaller,
    mut codec: FrameCodec,
    outgoing: Arc<Queued>,
) {
    let beat = marshaller
        .encode(&Message::heartbeat())
        .ok()
        .map(Bytes::from);
    let mut ticker = tokio::time::interval(heartbeat);
    ticker.tick().await;
    let mut batch = Vec::new();
    loop {
        let (payload, queued) = tokio::select! {
            payload = rx.recv() => match payload {
                Some(p) => {
                    let len = p.len();
                    (p, len)
                }
                None => break,
            },
            _ = ticker.tick() => match &beat {
                Some(b) => (b.clone(), 0),
                None => continue,
            },
        };
        // Messages queued meanwhile (pipelined loads, a prefetch's burst,
        // an upload's chunks) go out in the same write: one syscall, and
        // often one segment, for many requests. The batch buffer is kept
        // from write to write (a fresh one per write costs page faults on
        // every large message), unless one message grew it past
        // `KEPT_BATCH`.
        batch.clear();
        let mut queued = queued;
        let mut framed = frame_into(&mut codec, &payload, &mut batch);
        drop(payload);
        while framed.is_ok() && batch.len() < WRITE_BATCH {
            let Ok(next) = rx.try_recv() else { break };
            queued += next.len();
            framed = frame_into(&mut codec, &next, &mut batch);
        }
        let written = match framed {
            Ok(()) => wr.write_all(&batch).await.is_ok(),
            Err(e) => {
                warn!(error = %e, "cannot frame a message; closing");
                false
            }
        };
        outgoing.written(queued);
        if batch.capacity() > KEPT_BATCH {
            batch = Vec::new();
        }
        if !written {
            break;
        }
    }
    let _ = wr.shutdown().await;
}

async fn read_loop<R: AsyncRead + Unpin>(conn: std::sync::Weak<Conn>, mut rd: FrameReader<R>) {
    let encoding = match conn.upgrade() {
        Some(c) => c.marshaller.encoding(),
        None => return,
    };
    let marshaller = Marshaller::client(encoding);
    loop {
        let frame = rd.next().await;
        let Some(c) = conn.upgrade() else { return };
        match frame {
            Ok(payload) => {
                // A download's chunks are written from the frame, not
                // decoded into a copy; anything else (ids not 8 bytes
                // long included) goes the general way.
                if let Some([oid, serial, chunk]) =
                    zeo_protocol::oneway_bytes_call(encoding, &payload, "receiveBlobChunk")
                {
                    if let (Ok(oid), Ok(serial)) =
                        (<[u8; 8]>::try_from(oid), <[u8; 8]>::try_from(serial))
                    {
                        match &c.shared.blobs {
                            Some(blobs) => blobs.on_chunk(
                                Oid::from_bytes(oid),
                                Tid::from_bytes(serial),
                                chunk,
                                &c.address.to_string(),
                            ),
                            None => warn!(address = %c.address, "ignoring blob data: no blob_dir"),
                        }
                        continue;
                    }
                }
                match marshaller.decode(&payload) {
                    Ok(msg) => c.on_message(msg),
                    Err(e) => {
                        warn!(error = %e, address = %c.address, "undecodable message from the server")
                    }
                }
            }
            Err(e) => {
                debug!(address = %c.address, error = %e, "connection lost");
                c.close();
                return;
            }
        }
    }
}

#[cfg(test)]
mod frame_tests {
    use std::future::Future;
    use std::pin::Pin;
    use std::task::{Context, Poll};

    use tokio::io::{AsyncWriteExt, ReadBuf};

    use super::*;

    /// Records the most room any read offered: what the reader had reserved.
    struct Probe<R> {
        inner: R,
        most_room: Arc<AtomicU64>,
    }

    impl<R: AsyncRead + Unpin> AsyncRead for Probe<R> {
        fn poll_read(
            mut self: Pin<&mut Self>,
            cx: &mut Context<'_>,
            buf: &mut ReadBuf<'_>,
        ) -> Poll<std::io::Result<()>> {
            self.most_room
                .fetch_max(buf.remaining() as u64, Ordering::Relaxed);
            Pin::new(&mut self.inner).poll_read(cx, buf)
        }
    }

    #[tokio::test]
    async fn a_length_word_reserves_only_what_arrives() {
        let claimed = 64usize << 20;
        let payload: Vec<u8> = (0..claimed).map(|i| (i % 251) as u8).collect();
        let wire = zeo_protocol::encode_frame(&payload).unwrap();
        let (mut server, client) = tokio::io::duplex(1 << 16);
        let most_room = Arc::new(AtomicU64::new(0));
        let probe = Probe {
            inner: client,
            most_room: most_room.clone(),
        };
        let mut reader = FrameReader::new(probe, 256 << 20);
        server.write_all(&wire[..14]).await.unwrap();
        let mut read = Box::pin(reader.next());
        let once = std::future::poll_fn(|cx| Poll::Ready(read.as_mut().poll(cx))).await;
        assert!(once.is_pending());
        let room = most_room.load(Ordering::Relaxed);
        assert!(
            room <= zeo_protocol::frame::FRAME_GROW_STEP as u64,
            "{room} bytes reserved for 10 arrived"
        );
        let writer = tokio::spawn(async move {
            server.write_all(&wire[14..]).await.unwrap();
            server
        });
        let got = read.await.unwrap();
        assert!(got == payload);
        // Growth doubled with what arrived, never to the claimed length.
        assert!(most_room.load(Ordering::Relaxed) <= (claimed / 2) as u64);
        drop(writer.await.unwrap());
    }

    #[tokio::test]
    async fn a_frame_over_the_limit_names_it() {
        let (mut server, client) = tokio::io::duplex(64);
        server.write_all(&(1025u32).to_be_bytes()).await.unwrap();
        let err = FrameReader::new(client, 1024).next().await.unwrap_err();
        assert!(
            err.to_string()
                .contains("frame of 1025 bytes exceeds max-message-size 1024"),
            "{err}"
        );
    }

    /// After a login both directions are sealed by the shared codec, and
    /// a frame that is not is refused.
    #[tokio::test]
    async fn a_maced_reader_checks_what_was_buffered_before_the_switch() {
        let key = SessionKey::derive(&"e".repeat(40), "n").unwrap();
        let mut sender = FrameCodec::new();
        sender.install_mac(MacState::new(&key));
        let mut wire = zeo_protocol::encode_frame(b"plain").unwrap();
        wire.extend(sender.encode_vec(b"sealed").unwrap());
        wire.extend(zeo_protocol::encode_frame(b"unsealed").unwrap());
        let (mut server, client) = tokio::io::duplex(1024);
        server.write_all(&wire).await.unwrap();
        let mut reader = FrameReader::new(client, 1024);
        assert_eq!(&reader.next().await.unwrap()[..], b"plain");
        reader.codec.install_mac(MacState::new(&key));
        assert_eq!(&reader.next().await.unwrap()[..], b"sealed");
        let err = reader.next().await.unwrap_err();
        assert!(err.to_string().contains("without MAC"), "{err}");
    }

    #[tokio::test]
    async fn a_close_inside_a_frame_is_a_disconnect() {
        let (mut server, client) = tokio::io::duplex(64);
        server.write_all(b"\0\0\0\x05ab").await.unwrap();
        drop(server);
        let err = FrameReader::new(client, 1024).next().await.unwrap_err();
        assert!(matches!(err, Error::Disconnected(_)), "{err}");
    }
}
