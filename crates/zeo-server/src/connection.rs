//! One client connection: handshake, then a reader loop that decodes and
//! dispatches requests in arrival order, while a writer task drains the
//! connection's [`Outbox`].
//!
//! Requests run one at a time, as ZEO runs them, with two exceptions that
//! keep a connection responsive: a `vote` waiting for the commit lock waits
//! beside the loop (other threads of the client keep loading), and slow
//! read-only work (`pack`, `undoLog`, `undoInfo`, invalidation-age scans)
//! runs in its own task and replies when done.
//!
//! When the server requires ZEO 3/4 `digest` authentication, a client must
//! log in between the handshake and `register` (`getAuthProtocol`,
//! `auth_get_challenge`, `auth_response`; see `docs/auth.md`). Those names
//! are not ZEO 5 methods, so they are answered here from the raw message,
//! before typed parsing. From the `True` answer on, the outbox seals and the
//! frame reader checks every frame.

use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use futures::{Future, StreamExt};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use zeo_auth::{Challenge, MacState};
use zeo_pickle::Value;
use zeo_protocol::reply::{self as replies, VoteConflict};
use zeo_protocol::{
    Call, ClientHello, Encoding, FrameCodec, Incoming, Marshaller, Message, ServerHandshake,
    ServerRequest, StorageInfo, TxnId, WireError,
};
use zeo_storage::{Error as StorageError, Oid, TransactionMetaData, TxnStatus};

use crate::commit::{self, OpenTxn, VoteOutcome};
use crate::commit_lock::{Acquired, CommitGuard, ConnId};
use crate::frame_reader::FrameReader;
use crate::hub::StorageHub;
use crate::iterators::{IterError, Iterators};
use crate::outbox::{Outbox, OutboxLimits};
use crate::server::Shared;
use crate::stats::StorageStats;
use crate::txn_log::{TxnLog, TxnOp};

/// Fewest seconds between two log lines about one connection's reads
/// being paused, so a client that keeps hitting the threshold cannot fill
/// the log.
const PAUSE_LOG_INTERVAL: Duration = Duration::from_secs(60);
/// How long a connection that holds the commit lock may go on after
/// shutdown began, so that a commit between vote and finish can complete.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);
/// How long queued output may take to drain once a connection ends.
const FLUSH_TIMEOUT: Duration = Duration::from_secs(5);

/// The ZEO 3/4 login methods, answered before typed parsing.
const AUTH_METHODS: [&str; 3] = ["getAuthProtocol", "auth_get_challenge", "auth_response"];

/// What the error text of blob methods says.
const NO_BLOBS: &str = "blobs are not supported by this server";

type LockFuture = Pin<Box<dyn Future<Output = CommitGuard> + Send>>;

/// The outcome of one request.
enum Outcome {
    /// Reply with this value (nothing for a one-way call).
    Reply(Value),
    /// The reply was queued already, or will be by a task.
    Sent,
}

type Handled = Result<Outcome, WireError>;

/// Where a connection stands with authentication.
enum Auth {
    /// The server does not require it.
    Off,
    /// Required and not done yet; the challenge issued last, if any.
    Pending(Option<Challenge>),
    /// Done: every frame in both directions carries a MAC.
    Done,
}

/// Serves one accepted stream until the client leaves, misbehaves, or the
/// server shuts down. `nonce_peer` is the peer address as ZEO mixed it into
/// authentication nonces ([`zeo_auth::python_peer_text`], empty for Unix
/// sockets).
pub(crate) async fn serve<S>(shared: Arc<Shared>, stream: S, peer: String, nonce_peer: String)
where
    S: AsyncRead + AsyncWrite + Send + 'static,
{
    let id = shared.next_conn_id.fetch_add(1, Ordering::Relaxed);
    // `label` is filled in when the client sends one, so that every line
    // about this client names it.
    let span = tracing::info_span!("conn", id, peer = %peer, label = tracing::field::Empty);
    tracing::Instrument::instrument(run(shared, stream, id, peer, nonce_peer), span).await;
}

async fn run<S>(shared: Arc<Shared>, stream: S, id: ConnId, peer: String, nonce_peer: String)
where
    S: AsyncRead + AsyncWrite + Send + 'static,
{
    // Handshake, login and register must all happen before this.
    let login_deadline = shared
        .settings
        .login_timeout
        .map(|t| tokio::time::Instant::now() + t);
    let (read_half, mut write_half) = tokio::io::split(stream);
    let codec = FrameCodec::with_max_frame(shared.settings.max_message_size);
    let mut reader = FrameReader::new(read_half, codec);

    let announce = if shared.settings.msgpack {
        Encoding::Msgpack
    } else {
        Encoding::Pickle
    };
    let handshake = ServerHandshake::new(announce);
    if write_frame(&mut write_half, &handshake.greeting())
        .await
        .is_err()
    {
        return;
    }
    // A shutdown must not wait for a peer that connected but never
    // answered the greeting.
    let hello = tokio::select! {
        _ = shared.shutdown.cancelled() => return,
        _ = sleep_until(login_deadline) => {
            tracing::warn!(%peer, "no handshake within login-timeout; closing");
            return;
        }
        hello = reader.next() => hello,
    };
    let hello = match hello {
        None => return,
        Some(Err(err)) => {
            tracing::warn!(%err, "bad handshake frame; closing");
            return;
        }
        Some(Ok(frame)) => frame,
    };
    let encoding = match handshake.receive(&hello) {
        Ok(ClientHello::Ruok) => {
            let reply = shared.ruok();
            let _ = write_frame(&mut write_half, &reply).await;
            let _ = write_half.shutdown().await;
            return;
        }
        Ok(ClientHello::Accepted(encoding)) => encoding,
        Err(err) => {
            tracing::error!(%err, "bad handshake; closing");
            return;
        }
    };
    tracing::info!(?encoding, "connected");

    let limits = OutboxLimits {
        pause: shared.settings.reply_backlog_pause,
        max_backlog: shared.settings.max_outgoing_backlog,
    };
    let (outbox, receiver) = Outbox::new(id, &peer, encoding, limits, shared.budget.clone());
    let mut writer = tokio::spawn(async move {
        if let Err(err) = receiver.write_all(write_half).await {
            tracing::debug!(%err, "write failed");
        }
    });

    let auth = match shared.settings.authentication {
        Some(_) => Auth::Pending(None),
        None => Auth::Off,
    };
    let mut conn = Conn {
        id,
        peer,
        nonce_peer,
        auth,
        recv_mac: None,
        label: None,
        marshaller: Marshaller::server(encoding),
        read_only: shared.settings.read_only,
        shared: shared.clone(),
        outbox: outbox.clone(),
        hub: None,
        txn: None,
        lock: None,
        conflict_lock: None,
        waiting: None,
        iterators: Iterators::default(),
    };

    conn.read_loop(&mut reader, login_deadline).await;
    conn.disconnect().await;
    drop(conn);
    drop(outbox);
    // The writer ends once every handle on the outbox is gone; a client that
    // stopped reading cannot hold the task forever.
    if tokio::time::timeout(FLUSH_TIMEOUT, &mut writer)
        .await
        .is_err()
    {
        writer.abort();
    }
    tracing::info!("disconnected");
}

/// Sleeps until `deadline`, or forever without one.
async fn sleep_until(deadline: Option<tokio::time::Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d).await,
        None => std::future::pending().await,
    }
}

async fn write_frame<W: AsyncWrite + Unpin>(w: &mut W, payload: &[u8]) -> std::io::Result<()> {
    let len = u32::try_from(payload.len())
        .map_err(|_| std::io::Error::new(std::io::ErrorKind::InvalidData, "frame over 4 GiB"))?;
    let mut buf = Vec::with_capacity(4 + payload.len());
    buf.extend_from_slice(&len.to_be_bytes());
    buf.extend_from_slice(payload);
    w.write_all(&buf).await?;
    w.flush().await
}

struct Conn {
    id: ConnId,
    peer: String,
    nonce_peer: String,
    auth: Auth,
    /// The receiving MAC chain, from a successful login until the reader
    /// takes it over.
    recv_mac: Option<MacState>,
    label: Option<String>,
    marshaller: Marshaller,
    read_only: bool,
    shared: Arc<Shared>,
    outbox: Arc<Outbox>,
    hub: Option<Arc<StorageHub>>,
    txn: Option<Box<OpenTxn>>,
    lock: Option<CommitGuard>,
    /// The commit lock kept after a vote answered with conflicts, until
    /// the client votes again or aborts. The client's resolutions are then
    /// checked against a state no other commit can move meanwhile; letting
    /// go here lets busy writers starve a resolving client, and ZEO's client
    /// calls `tpc_finish` anyway after nine conflicting votes.
    conflict_lock: Option<CommitGuard>,
    waiting: Option<(LockFuture, Value)>,
    iterators: Iterators,
}

enum Event {
    Frame(Option<Result<bytes::BytesMut, zeo_protocol::Error>>),
    Granted(CommitGuard),
    Timeout,
    LoginTimeout,
    Resumed,
    Shutdown,
    Closed,
}

impl Conn {
    /// Reads and handles requests until the connection ends. Until it has
    /// registered, the connection ends at `login_deadline`. While its
    /// output is backed up (see [`Outbox::is_paused`]) no request is read;
    /// everything else (lock grants, timeouts, shutdown) still happens.
    async fn read_loop<R>(
        &mut self,
        reader: &mut FrameReader<R>,
        login_deadline: Option<tokio::time::Instant>,
    ) where
        R: AsyncRead + Unpin,
    {
        let shutdown = self.shared.shutdown.clone();
        let outbox = self.outbox.clone();
        let mut drain_until: Option<Instant> = None;
        let mut pause = PauseLog::default();
        loop {
            if drain_until.is_some() && self.lock.is_none() {
                return;
            }
            let deadline = self.deadline(drain_until);
            let login = login_deadline.filter(|_| self.hub.is_none());
            let paused = outbox.is_paused();
            if paused {
                if pause.started(&self.peer, &outbox, &self.shared.settings) {
                    self.count_backpressure();
                }
            } else {
                pause.ended();
            }
            let waiting = self.waiting.as_mut().map(|(f, _)| f);
            let event = tokio::select! {
                biased;
                _ = outbox.closed() => Event::Closed,
                _ = shutdown.cancelled(), if drain_until.is_none() => Event::Shutdown,
                guard = async { match waiting { Some(f) => f.await, None => std::future::pending().await } } => Event::Granted(guard),
                _ = async { match deadline { Some(d) => tokio::time::sleep_until(d.into()).await, None => std::future::pending().await } } => Event::Timeout,
                _ = sleep_until(login), if login.is_some() => Event::LoginTimeout,
                _ = outbox.wait_unpaused(), if paused => Event::Resumed,
                frame = reader.next(), if !paused => Event::Frame(frame),
            };
            match event {
                Event::Closed => return,
                Event::Resumed => {}
                Event::LoginTimeout => {
                    let what = match self.auth {
                        Auth::Pending(_) => "log in and register",
                        _ => "register",
                    };
                    tracing::warn!(peer = %self.peer, "did not {what} within login-timeout; closing");
                    return;
                }
                Event::Shutdown => {
                    if self.lock.is_none() {
                        return;
                    }
                    drain_until = Some(Instant::now() + SHUTDOWN_GRACE);
                }
                Event::Timeout => {
                    if drain_until.is_some_and(|d| d <= Instant::now()) {
                        tracing::warn!("shutting down: aborting a transaction that did not finish");
                    } else if let Some(timeout) = self.shared.settings.transaction_timeout {
                        tracing::error!(
                            "Transaction timeout after {} seconds",
                            timeout.as_secs_f64()
                        );
                    }
                    return;
                }
                Event::Granted(guard) => {
                    let Some((_, msgid)) = self.waiting.take() else {
                        continue;
                    };
                    self.run_vote(guard, msgid).await;
                }
                Event::Frame(None) => return,
                Event::Frame(Some(Err(err))) => {
                    tracing::error!(%err, "cannot read message; closing");
                    return;
                }
                Event::Frame(Some(Ok(payload))) => {
                    if !self.handle_frame(&payload).await {
                        return;
                    }
                    // Frames from here on must carry MACs: the reader has
                    // not decoded the next one yet.
                    if let Some(mac) = self.recv_mac.take() {
                        reader.install_mac(mac);
                    }
                }
            }
        }
    }

    /// When the connection must stop waiting: the transaction timeout while
    /// holding the lock, or the end of the shutdown grace.
    fn deadline(&self, drain_until: Option<Instant>) -> Option<Instant> {
        let held = self.lock.as_ref().or(self.conflict_lock.as_ref());
        let timeout = match (held, self.shared.settings.transaction_timeout) {
            (Some(guard), Some(t)) => Some(guard.acquired() + t),
            _ => None,
        };
        match (timeout, drain_until) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// Decodes and dispatches one message; false closes the connection.
    async fn handle_frame(&mut self, payload: &[u8]) -> bool {
        let message = match self.marshaller.decode(payload) {
            Ok(m) => m,
            Err(err) => {
                tracing::error!(%err, "Can't deserialize message; closing");
                return false;
            }
        };
        if !message.is_heartbeat() && AUTH_METHODS.contains(&message.method.as_str()) {
            return self.handle_auth(message);
        }
        let call = match ServerRequest::parse(&message) {
            Ok(Incoming::Heartbeat) => return true,
            Ok(Incoming::Call(call)) => call,
            Err(zeo_protocol::Error::BadArguments { method, reason }) => {
                let oneway = message.flags != zeo_protocol::Flags::None;
                tracing::error!(%method, %reason, oneway, "bad arguments");
                if oneway || (self.hub.is_none() && method != "register") {
                    return false;
                }
                self.outbox.reply_error(
                    message.msgid,
                    &WireError::type_error(&format!("{method}() {reason}")),
                );
                return true;
            }
            Err(err) => {
                tracing::error!(%err, method = %message.method, "Invalid method; closing");
                return false;
            }
        };
        let Call {
            msgid,
            oneway,
            request,
        } = call;
        let method = request.method();
        let allowed = match request {
            ServerRequest::Register { .. } => self.hub.is_none(),
            _ => self.hub.is_some(),
        };
        if !allowed {
            tracing::error!(method, "Invalid method; closing");
            return false;
        }
        let result = self.dispatch(request, msgid.clone(), oneway).await;
        match result {
            Ok(Outcome::Reply(value)) => {
                if !oneway {
                    self.outbox.reply(msgid, value);
                }
                true
            }
            Ok(Outcome::Sent) => true,
            Err(error) => {
                log_wire_error(method, oneway, &error);
                if oneway {
                    // ZEO: "No way to recover/cry for help".
                    return false;
                }
                self.outbox.reply_error(msgid, &error);
                true
            }
        }
    }

    /// Answers one of [`AUTH_METHODS`]; false closes the connection.
    fn handle_auth(&mut self, message: Message) -> bool {
        let method = message.method.as_str();
        let oneway = message.flags != zeo_protocol::Flags::None;
        let authenticator = self.shared.settings.authentication.clone();
        // Logging in happens once, before register, with calls that expect
        // answers. A server without authentication knows only
        // getAuthProtocol (answering None), as ZEO 4 did.
        let in_order = match (&self.auth, method) {
            (_, "getAuthProtocol") => true,
            (Auth::Pending(_), _) => self.hub.is_none(),
            _ => false,
        };
        if oneway || !in_order {
            tracing::error!(method, oneway, "Invalid method; closing");
            return false;
        }
        let args: &[Value] = match &message.args {
            Value::Tuple(items) | Value::List(items) => items,
            _ => &[],
        };
        let wanted = usize::from(method == "auth_response");
        if args.len() != wanted {
            tracing::error!(method, given = args.len(), "bad arguments");
            self.outbox.reply_error(
                message.msgid,
                &WireError::type_error(&format!(
                    "{method}() takes {wanted} argument(s) but {} were given",
                    args.len()
                )),
            );
            return true;
        }
        let result = match (method, authenticator) {
            ("getAuthProtocol", auth) => Ok(match auth {
                Some(_) => Value::Str(zeo_auth::PROTOCOL.into()),
                None => Value::None,
            }),
            ("auth_get_challenge", Some(auth)) => {
                let challenge = auth.challenge(&self.nonce_peer, SystemTime::now());
                let reply = Value::Tuple(vec![
                    Value::Str(challenge.realm.clone()),
                    Value::Str(challenge.challenge.clone()),
                    Value::Str(challenge.key_nonce.clone()),
                ]);
                self.auth = Auth::Pending(Some(challenge));
                Ok(reply)
            }
            ("auth_response", Some(auth)) => return self.auth_response(&auth, message.msgid, args),
            _ => {
                tracing::error!(method, "Invalid method; closing");
                return false;
            }
        };
        match result {
            Ok(value) => self.outbox.reply(message.msgid, value),
            Err(error) => self.outbox.reply_error(message.msgid, &error),
        }
        true
    }

    /// `auth_response((user, challenge, response))`: answers True and
    /// switches MACs on, or False, or an error.
    fn auth_response(
        &mut self,
        auth: &zeo_auth::ServerAuthenticator,
        msgid: Value,
        args: &[Value],
    ) -> bool {
        let text = |v: &Value| match v {
            Value::Str(s) => Some(s.clone()),
            Value::Bytes(b) => String::from_utf8(b.clone()).ok(),
            _ => None,
        };
        let parts = match args.first() {
            Some(Value::Tuple(items) | Value::List(items)) if items.len() == 3 => {
                items.iter().map(text).collect::<Option<Vec<String>>>()
            }
            _ => None,
        };
        let Some([user, challenge, response]) = parts.and_then(|p| <[String; 3]>::try_from(p).ok())
        else {
            tracing::error!("auth_response: not a (user, challenge, response) tuple");
            self.outbox.reply_error(
                msgid,
                &WireError::type_error(
                    "auth_response() takes a (user, challenge, response) tuple of strings",
                ),
            );
            return true;
        };
        // A challenge answers one response: another try needs a new one.
        let issued = match std::mem::replace(&mut self.auth, Auth::Pending(None)) {
            Auth::Pending(issued) => issued,
            other => {
                self.auth = other;
                None
            }
        };
        match auth.verify(issued.as_ref(), &user, &challenge, &response) {
            Ok(Some(key)) => {
                tracing::info!(%user, "authenticated");
                // The answer itself goes out plain: the client switches its
                // receiving chain on only after reading it.
                self.outbox.reply(msgid, Value::Bool(true));
                self.outbox.start_mac(MacState::new(&key));
                self.recv_mac = Some(MacState::new(&key));
                self.auth = Auth::Done;
            }
            Ok(None) => {
                tracing::warn!(%user, "authentication failed: wrong password");
                self.shared.metrics.auth_failed();
                self.outbox.reply(msgid, Value::Bool(false));
            }
            Err(err) => {
                tracing::warn!(%user, %err, "authentication failed");
                self.shared.metrics.auth_failed();
                let class = match err {
                    zeo_auth::Error::NoSuchUser(_) => "builtins.LookupError",
                    _ => "builtins.ValueError",
                };
                self.outbox.reply_error(
                    msgid,
                    &WireError::with_args(class, vec![Value::Str(err.to_string())]),
                );
            }
        }
        true
    }

    fn hub(&self) -> Result<&Arc<StorageHub>, WireError> {
        self.hub
            .as_ref()
            .ok_or_else(|| WireError::value_error("not registered"))
    }

    fn stats(&self) -> Option<&StorageStats> {
        self.hub.as_ref().map(|h| h.stats())
    }

    async fn dispatch(&mut self, request: ServerRequest, msgid: Value, oneway: bool) -> Handled {
        use ServerRequest as R;
        match request {
            R::Register { storage, read_only } => self.register(&storage, read_only, msgid, oneway),
            R::GetInfo => self.get_info(),
            R::LastTransaction => {
                let hub = self.hub()?.clone();
                let _g = hub.read_publication();
                let tid = hub.storage().last_transaction();
                self.send_now(msgid, oneway, replies::tid(tid))
            }
            R::GetInvalidations { tid } => self.get_invalidations(tid, msgid, oneway),
            R::LoadBefore { oid, before } => {
                let hub = self.hub()?.clone();
                StorageStats::bump(&hub.stats().loads);
                // The read and the queuing of its reply form one step that a
                // commit's publication cannot split.
                let _g = hub.read_publication();
                let found = load_before(&**hub.storage(), oid, before).map_err(wire)?;
                self.send_now(msgid, oneway, replies::load_before(found.as_ref()))
            }
            R::LoadSerial { oid, serial } => {
                let data = self
                    .hub()?
                    .storage()
                    .load_serial(oid, serial)
                    .map_err(wire)?;
                Ok(Outcome::Reply(Value::Bytes(data)))
            }
            R::GetTid { oid } => {
                let tid = self.hub()?.storage().get_tid(oid).map_err(wire)?;
                Ok(Outcome::Reply(replies::tid(tid)))
            }
            R::History { oid, size } => {
                let entries = self.hub()?.storage().history(oid, size).map_err(wire)?;
                replies::history(&entries)
                    .map(Outcome::Reply)
                    .map_err(protocol_error)
            }
            R::RecordIternext { next } => {
                let found = self.hub()?.storage().record_iternext(next).map_err(wire)?;
                Ok(Outcome::Reply(
                    found.as_ref().map_or(Value::None, replies::record_iternext),
                ))
            }
            R::NewOids { n } => {
                if self.read_only {
                    return Err(read_only_error());
                }
                let storage = self.hub()?.storage();
                let n = n.clamp(1, zeo_protocol::MAX_NEW_OIDS);
                let oids = (0..n)
                    .map(|_| storage.new_oid())
                    .collect::<Result<Vec<Oid>, _>>();
                Ok(Outcome::Reply(replies::oid_list(&oids.map_err(wire)?)))
            }
            R::NewOid => Err(WireError::no_attribute("new_oid")),
            R::Pack { time, wait } => self.pack(time, wait, msgid, oneway),
            R::UndoLog { first, last } => self.undo_log(first, last, None, msgid, oneway),
            R::UndoInfo {
                first,
                last,
                specification,
            } => self.undo_log(first, last, Some(specification), msgid, oneway),
            R::TpcBegin {
                txn,
                user,
                description,
                extension,
                tid,
                status,
            } => self.tpc_begin(txn, user, description, extension, tid, status),
            R::Storea {
                oid,
                serial,
                data,
                txn,
            } => self.log_op(txn, TxnOp::Store { oid, serial, data }, true, oneway),
            R::CheckCurrentSerial { oid, serial, txn } => {
                self.log_op(txn, TxnOp::CheckCurrent { oid, serial }, false, oneway)
            }
            R::DeleteObject { oid, serial, txn } => {
                self.log_op(txn, TxnOp::Delete { oid, serial }, true, oneway)
            }
            R::Restorea {
                oid,
                serial,
                data,
                prev_txn,
                txn,
            } => self.log_op(
                txn,
                TxnOp::Restore {
                    oid,
                    serial,
                    data,
                    prev_txn,
                },
                true,
                oneway,
            ),
            R::Undoa { undo_id, txn } => {
                self.log_op(txn, TxnOp::Undo { id: undo_id }, false, oneway)
            }
            R::StoreBlobStart
            | R::StoreBlobChunk { .. }
            | R::StoreBlobEnd { .. }
            | R::StoreBlobShared { .. }
            | R::SendBlob { .. } => Err(no_blobs()),
            R::Vote { txn } => self.vote(txn, msgid).await,
            R::TpcFinish { txn } => self.tpc_finish(txn, msgid, oneway).await,
            R::TpcAbort { txn } => self
                .tpc_abort(txn)
                .await
                .map(|()| Outcome::Reply(Value::None)),
            R::IteratorStart { start, stop } => {
                let storage = self.hub()?.storage().clone();
                let id = self
                    .iterators
                    .start(storage, start, stop)
                    .map_err(iter_error)?;
                Ok(Outcome::Reply(Value::Int(id)))
            }
            R::IteratorNext { iid } => {
                let txn = self
                    .iterators
                    .next_transaction(iid.0)
                    .await
                    .map_err(iter_error)?;
                replies::iterator_next(txn.as_deref())
                    .map(Outcome::Reply)
                    .map_err(protocol_error)
            }
            R::IteratorRecordStart { txn_iid, tid } => {
                let id = self
                    .iterators
                    .start_records(txn_iid.0, tid)
                    .map_err(iter_error)?;
                Ok(Outcome::Reply(Value::Int(id)))
            }
            R::IteratorRecordNext { iid } => {
                let record = self.iterators.next_record(iid.0).map_err(iter_error)?;
                Ok(Outcome::Reply(replies::iterator_record_next(
                    record.as_ref(),
                )))
            }
            R::IteratorGc { iids } => {
                self.iterators.gc(iids.into_iter().map(|i| i.0));
                Ok(Outcome::Reply(Value::None))
            }
            R::ServerStatus => Ok(Outcome::Reply(replies::server_status(
                &self.hub()?.status(),
            ))),
            R::SetClientLabel { label } => {
                tracing::info!(%label, peer = %self.peer, "client label");
                tracing::Span::current().record("label", tracing::field::display(&label));
                self.label = Some(label);
                Ok(Outcome::Reply(Value::None))
            }
            R::Ping => Ok(Outcome::Reply(Value::None)),
        }
    }

    /// Queues a reply right away (while the caller still holds whatever
    /// guard makes it consistent).
    fn send_now(&self, msgid: Value, oneway: bool, value: Value) -> Handled {
        if !oneway {
            self.outbox.reply(msgid, value);
        }
        Ok(Outcome::Sent)
    }

    fn register(&mut self, name: &str, read_only: bool, msgid: Value, oneway: bool) -> Handled {
        if matches!(self.auth, Auth::Pending(_)) {
            tracing::warn!(storage = name, "register before authentication");
            return Err(WireError::with_args(
                "ZEO.Exceptions.AuthError",
                vec![Value::Str(
                    "Client was never authenticated with server!".into(),
                )],
            ));
        }
        let Some(hub) = self.shared.hubs.get(name).cloned() else {
            tracing::warn!(storage = name, "unknown storage");
            return Err(WireError::value_error(&format!("unknown storage: {name}")));
        };
        if !read_only && (self.read_only || hub.storage().is_read_only()) {
            return Err(read_only_error());
        }
        self.read_only |= read_only;
        tracing::info!(storage = name, read_only = self.read_only, "registered");
        // Joining the client set and reading the last transaction form one
        // step: every commit after it reaches this client as an invalidation.
        let guard = hub.read_publication();
        hub.add_client(&guard, self.outbox.clone());
        let last = hub.storage().last_transaction();
        let out = self.send_now(msgid, oneway, replies::tid(last));
        drop(guard);
        self.hub = Some(hub);
        out
    }

    fn get_info(&self) -> Handled {
        let hub = self.hub()?;
        let storage = hub.storage();
        let undo = storage.supports_undo();
        // Blob interfaces are left out: advertising them would make clients
        // send blobs this server cannot store.
        let interfaces = StorageInfo::file_storage_interfaces()
            .into_iter()
            .filter(|(_, name)| !name.starts_with("IBlob"))
            .filter(|(_, name)| undo || name != "IStorageUndoable")
            .collect();
        let info = StorageInfo {
            length: storage.len(),
            size: storage.size(),
            name: storage.name().to_owned(),
            supports_undo: undo,
            supports_record_iternext: true,
            interfaces,
        };
        Ok(Outcome::Reply(replies::get_info(&info)))
    }

    fn get_invalidations(&self, tid: zeo_storage::Tid, msgid: Value, oneway: bool) -> Handled {
        let hub = self.hub()?.clone();
        {
            let guard = hub.read_publication();
            if let Some((latest, oids)) = hub.invalidations_since(&guard, tid) {
                tracing::info!(count = oids.len(), "returning invalidations");
                return self.send_now(msgid, oneway, replies::invalidations(Some((latest, &oids))));
            }
        }
        let young = self.shared.settings.invalidation_age.is_some_and(|age| {
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_secs_f64())
                .unwrap_or(0.0);
            age.as_secs_f64() > now - tid.unix_time()
        });
        if !young {
            tracing::info!(%tid, "tid too old for the invalidation queue");
            return self.send_now(msgid, oneway, Value::None);
        }
        // Walk the storage on a blocking thread, holding the publication lock
        // shared so no commit slips between the walk and the reply.
        let outbox = self.outbox.clone();
        let pending = outbox.pending_reply();
        tokio::task::spawn_blocking(move || {
            let _pending = pending;
            let guard = hub.read_publication();
            let walked = (|| -> Result<Option<(zeo_storage::Tid, Vec<Oid>)>, StorageError> {
                let mut oids = std::collections::BTreeSet::new();
                let mut latest = None;
                for txn in hub.storage().iterator(Some(tid.next()), None)? {
                    let txn = txn?;
                    oids.extend(txn.records.iter().map(|r| r.oid));
                    latest = Some(txn.tid);
                }
                Ok(latest.map(|l| (l, oids.into_iter().collect())))
            })();
            if !oneway {
                match walked {
                    Ok(found) => outbox.reply(
                        msgid,
                        replies::invalidations(found.as_ref().map(|(t, o)| (*t, &o[..]))),
                    ),
                    Err(err) => outbox.reply_error(msgid, &wire(err)),
                }
            }
            drop(guard);
        });
        Ok(Outcome::Sent)
    }

    /// Counts a pause in reading for the storage's metrics.
    fn count_backpressure(&self) {
        if let Ok(hub) = self.hub() {
            StorageStats::bump(&hub.stats().backpressure_events);
        }
    }

    fn pack(&self, time: f64, wait: bool, msgid: Value, oneway: bool) -> Handled {
        // Packing is allowed on read-only connections, as in ZEO.
        let hub = self.hub()?.clone();
        let outbox = self.outbox.clone();
        let pending = outbox.pending_reply();
        // The pack's log lines name the client that asked for it.
        let span = tracing::Span::current();
        tokio::task::spawn_blocking(move || {
            let _pending = pending;
            let _in_connection = span.enter();
            tracing::info!(time, "pack started");
            let started = Instant::now();
            let result = hub.storage().pack(time, hub.pack_gc());
            hub.stats().record_pack(started.elapsed());
            match &result {
                Ok(()) => {
                    tracing::info!(time, "pack complete");
                    hub.broadcast_size_info();
                }
                Err(err) => tracing::error!(%err, "pack failed"),
            }
            if wait && !oneway {
                match result {
                    Ok(()) => outbox.reply(msgid, Value::None),
                    Err(err) => outbox.reply_error(msgid, &wire(err)),
                }
            }
        });
        if wait {
            Ok(Outcome::Sent)
        } else {
            Ok(Outcome::Reply(Value::None))
        }
    }

    fn undo_log(
        &self,
        first: i64,
        last: i64,
        spec: Option<Option<zeo_protocol::UndoSpec>>,
        msgid: Value,
        oneway: bool,
    ) -> Handled {
        let hub = self.hub()?.clone();
        if !hub.storage().supports_undo() {
            return Ok(Outcome::Reply(Value::Tuple(Vec::new())));
        }
        let outbox = self.outbox.clone();
        let pending = outbox.pending_reply();
        tokio::task::spawn_blocking(move || {
            let _pending = pending;
            let spec = spec.flatten();
            let filter = |entry: &zeo_storage::UndoEntry| match &spec {
                None => true,
                Some(spec) => replies::undo_entry(entry).is_ok_and(|d| spec.matches(&d)),
            };
            let result = hub
                .storage()
                .undo_log(first, last, Some(&filter))
                .map_err(wire)
                .and_then(|entries| replies::undo_log(&entries).map_err(protocol_error));
            if !oneway {
                match result {
                    Ok(value) => outbox.reply(msgid, value),
                    Err(err) => outbox.reply_error(msgid, &err),
                }
            }
        });
        Ok(Outcome::Sent)
    }

    fn tpc_begin(
        &mut self,
        id: TxnId,
        user: Vec<u8>,
        description: Vec<u8>,
        extension: Value,
        tid: Option<zeo_storage::Tid>,
        status: TxnStatus,
    ) -> Handled {
        if self.read_only {
            return Err(read_only_error());
        }
        if let Some(txn) = &self.txn {
            if txn.id == id {
                tracing::info!(txn = %id, "duplicate tpc_begin");
                return Ok(Outcome::Reply(Value::None));
            }
            return Err(WireError::storage_transaction(
                "Multiple simultaneous tpc_begin requests from one client.",
            ));
        }
        let extension = pickle_extension(&extension)?;
        let meta = TransactionMetaData {
            user,
            description,
            extension,
        };
        let settings = &self.shared.settings;
        let log = TxnLog::new(
            settings.commit_log_spill_threshold,
            settings.temporary_directory.clone(),
        );
        self.txn = Some(Box::new(OpenTxn::new(id, meta, tid, status, log)));
        if let Some(stats) = self.stats() {
            stats.active_txns.fetch_add(1, Ordering::Relaxed);
        }
        Ok(Outcome::Reply(Value::None))
    }

    /// ZEO's `_check_tid(id, exc=StorageTransactionError)`.
    fn check_txn(&mut self, id: TxnId) -> Result<&mut OpenTxn, WireError> {
        if self.read_only {
            return Err(read_only_error());
        }
        match self.txn.as_deref_mut() {
            None => {
                tracing::warn!(txn = %id, "no current transaction");
                Err(WireError::transaction_mismatch(None, id))
            }
            Some(txn) if txn.id != id => {
                tracing::warn!(txn = %id, current = %txn.id, "not the current transaction");
                Err(WireError::transaction_mismatch(Some(txn.id), id))
            }
            Some(txn) => Ok(txn),
        }
    }

    fn log_op(&mut self, id: TxnId, op: TxnOp, counts_as_store: bool, oneway: bool) -> Handled {
        let voted = self.lock.is_some() || self.waiting.is_some();
        let shared = self.shared.clone();
        let settings = &shared.settings;
        let limit = settings.max_transaction_size;
        let peer = self.peer.clone();
        let txn = self.check_txn(id)?;
        if voted {
            return Err(WireError::storage_transaction(
                "transaction is already voting",
            ));
        }
        if txn.rejected.is_some() {
            // Already failed: the vote reports it; nothing more is kept.
            return Ok(Outcome::Reply(Value::None));
        }
        let staged = txn.log.size().saturating_add(op.logged_len());
        if let Some(limit) = limit.filter(|l| staged > *l) {
            let message = format!(
                "transaction too large: {staged} bytes staged, over max-transaction-size ({limit} bytes)"
            );
            tracing::warn!(%peer, staged, limit, "transaction exceeds max-transaction-size; dropping its data");
            // Drops what was staged, in memory or in a spill file.
            txn.log = TxnLog::new(
                settings.commit_log_spill_threshold,
                settings.temporary_directory.clone(),
            );
            txn.conflicts.clear();
            let error = too_large(&message);
            txn.rejected = Some(message);
            // A one-way store has nobody to answer, and an error would
            // close the connection: the vote carries the error instead.
            return if oneway {
                Ok(Outcome::Sent)
            } else {
                Err(error)
            };
        }
        txn.push_store(op)
            .map_err(|e| wire(StorageError::io("writing the commit log", e)))?;
        if counts_as_store {
            if let Some(stats) = self.stats() {
                StorageStats::bump(&stats.stores);
            }
        }
        Ok(Outcome::Reply(Value::None))
    }

    async fn vote(&mut self, id: TxnId, msgid: Value) -> Handled {
        if let Some(message) = &self.check_txn(id)?.rejected {
            // The client aborts after a failed vote, as after any other.
            return Err(too_large(message));
        }
        if self.lock.is_some() {
            return Err(WireError::storage_transaction("Already voting (locked)"));
        }
        if self.waiting.is_some() {
            return Err(WireError::storage_transaction("Already voting (waiting)"));
        }
        if let Some(guard) = self.conflict_lock.take() {
            self.run_vote(guard, msgid).await;
            return Ok(Outcome::Sent);
        }
        let hub = self.hub()?.clone();
        match hub.commit_lock().acquire(self.id) {
            Acquired::Now(guard) => {
                self.run_vote(guard, msgid).await;
            }
            Acquired::Queued(wait) => {
                self.waiting = Some((Box::pin(wait.granted()), msgid));
            }
        }
        Ok(Outcome::Sent)
    }

    /// Replays the transaction into the storage under the commit lock and
    /// replies to the vote.
    async fn run_vote(&mut self, guard: CommitGuard, msgid: Value) {
        let (Some(hub), Some(mut txn)) = (self.hub.clone(), self.txn.take()) else {
            return;
        };
        tracing::debug!(
            stores = txn.log.stores(),
            bytes = txn.log.size(),
            "preparing to commit"
        );
        let storage = hub.storage().clone();
        let small = txn.is_small();
        let started = Instant::now();
        let joined = run_storage(small, move || {
            let outcome = txn.vote(&*storage);
            (txn, outcome)
        })
        .await;
        tracing::debug!(
            elapsed_us = started.elapsed().as_micros() as u64,
            small,
            "storage vote done"
        );
        let (txn, outcome) = match joined {
            Ok(pair) => pair,
            Err(err) => {
                tracing::error!(%err, "vote task failed");
                self.finish_txn(&hub);
                self.outbox.reply_error(
                    msgid,
                    &WireError::with_args(
                        "ZODB.POSException.StorageError",
                        vec![Value::Str("vote failed".into())],
                    ),
                );
                self.outbox.close();
                return;
            }
        };
        match outcome {
            Ok(VoteOutcome::Voted(serials)) => {
                self.txn = Some(txn);
                self.lock = Some(guard);
                self.outbox.reply(msgid, replies::oid_list(&serials));
            }
            Ok(VoteOutcome::Conflicts(conflicts)) => {
                // The storage transaction was aborted; the client resolves
                // and votes again within the same ZEO transaction, still
                // holding the lock.
                self.txn = Some(txn);
                self.conflict_lock = Some(guard);
                self.outbox
                    .reply(msgid, replies::vote_conflicts(&conflicts));
                log_conflicts(&conflicts);
            }
            Err(err) => {
                if matches!(
                    err,
                    StorageError::Conflict { .. } | StorageError::ReadConflict { .. }
                ) {
                    StorageStats::bump(&hub.stats().conflicts);
                    tracing::debug!(%err, "conflict at vote");
                } else {
                    tracing::warn!(%err, "vote failed");
                }
                drop(txn);
                drop(guard);
                self.end_txn(&hub);
                self.outbox.reply_error(msgid, &wire(err));
            }
        }
    }

    async fn tpc_finish(&mut self, id: TxnId, msgid: Value, oneway: bool) -> Handled {
        match &self.txn {
            Some(txn) if txn.id == id && !self.read_only => {}
            // ZEO answers None when the id is not the open transaction.
            _ => return Ok(Outcome::Reply(Value::None)),
        }
        let hub = self.hub()?.clone();
        let handle = match self.txn.as_ref().and_then(|t| t.storage_txn) {
            Some(h) if self.lock.is_some() => h,
            _ => return Err(WireError::assertion_error("finished called wo lock")),
        };
        let oids = self
            .txn
            .as_mut()
            .map(|t| std::mem::take(&mut t.invalidated))
            .unwrap_or_default();
        let small = self.txn.as_ref().is_some_and(|t| t.is_small());
        let conn = self.id;
        let hub2 = hub.clone();
        let started = Instant::now();
        let joined = run_storage(small, move || commit::finish(&hub2, conn, handle, oids)).await;
        tracing::debug!(
            elapsed_us = started.elapsed().as_micros() as u64,
            small,
            "storage finish done"
        );
        let result = match joined {
            Ok(r) => r,
            Err(err) => Err(StorageError::Storage(format!(
                "tpc_finish task failed: {err}"
            ))),
        };
        match result {
            Ok(tid) => {
                StorageStats::bump(&hub.stats().commits);
                hub.stats().commit_seconds.observe(
                    self.lock
                        .as_ref()
                        .map_or(Duration::ZERO, |l| l.acquired().elapsed()),
                );
                self.outbox
                    .send(&Message::call_async("info", vec![hub.size_info()]));
                if !oneway {
                    self.outbox.reply(msgid, replies::tid(tid));
                }
                self.txn = None;
                self.end_txn(&hub);
                // Released only after the reply is queued, as ZEO does.
                self.lock = None;
                Ok(Outcome::Sent)
            }
            Err(err) => {
                tracing::error!(%err, "tpc_finish failed");
                let storage = hub.storage().clone();
                if let Err(err) = run_storage(small, move || storage.tpc_abort(handle)).await {
                    tracing::error!(%err, "tpc_abort task failed");
                }
                self.txn = None;
                self.end_txn(&hub);
                self.lock = None;
                Err(wire(err))
            }
        }
    }

    async fn tpc_abort(&mut self, id: TxnId) -> Result<(), WireError> {
        match &self.txn {
            Some(txn) if txn.id == id && !self.read_only => {}
            _ => return Ok(()),
        }
        let hub = self.hub()?.clone();
        StorageStats::bump(&hub.stats().aborts);
        self.abort_current(&hub).await;
        Ok(())
    }

    /// Aborts the open transaction (storage side too) and lets go of the
    /// commit lock or the place in its queue.
    async fn abort_current(&mut self, hub: &Arc<StorageHub>) {
        self.waiting = None;
        if let Some(txn) = self.txn.as_ref() {
            if let Some(handle) = txn.storage_txn {
                let storage = hub.storage().clone();
                let small = txn.is_small();
                if let Err(err) = run_storage(small, move || storage.tpc_abort(handle)).await {
                    tracing::error!(%err, "tpc_abort task failed");
                }
            }
        }
        self.finish_txn(hub);
    }

    fn finish_txn(&mut self, hub: &Arc<StorageHub>) {
        self.waiting = None;
        let had = self.txn.take().is_some();
        self.lock = None;
        self.conflict_lock = None;
        if had {
            self.end_txn(hub);
        }
    }

    fn end_txn(&self, hub: &Arc<StorageHub>) {
        hub.stats().active_txns.fetch_sub(1, Ordering::Relaxed);
    }

    async fn disconnect(&mut self) {
        if let Some(hub) = self.hub.clone() {
            if self.txn.is_some() {
                tracing::info!(
                    "disconnected during {} transaction",
                    if self.lock.is_some() {
                        "locked"
                    } else {
                        "unlocked"
                    }
                );
                StorageStats::bump(&hub.stats().aborts);
                self.abort_current(&hub).await;
            }
            hub.remove_client(self.id);
        }
        self.iterators = Iterators::default();
    }
}

/// `loadBefore`, asking for the current revision first.
///
/// Nearly every load a client sends is for an object's current revision
/// (`before` is just past the client's last transaction), and a storage can
/// usually fetch that with less work than a search back through the
/// revisions: FileStorage reads the record in one go instead of its header
/// and then its data. When the current revision is not before `before`,
/// or cannot be loaded (a deletion, say), the storage's own search answers.
fn load_before(
    storage: &dyn zeo_storage::Storage,
    oid: Oid,
    before: zeo_storage::Tid,
) -> Result<Option<zeo_storage::LoadedRevision>, StorageError> {
    match storage.load(oid) {
        Ok((data, start)) if start < before => Ok(Some(zeo_storage::LoadedRevision {
            data,
            start,
            end: None,
        })),
        _ => storage.load_before(oid, before),
    }
}

/// A storage call that panicked.
#[derive(Debug)]
struct Panicked(String);

impl std::fmt::Display for Panicked {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "panicked: {}", self.0)
    }
}

/// Runs a storage call of a transaction under the commit lock (vote,
/// finish, abort), which may wait for the disk.
///
/// A small transaction's call runs right here on a multi-threaded runtime:
/// it writes a bounded amount to the page cache at vote and syncs it once
/// at finish, and while it does, the runtime's other workers take over the
/// tasks queued on this one. Commits are latency-bound, and a trip to the
/// blocking pool and back costs two thread wake-ups per call, more than
/// the call itself at vote and a quarter of a small commit in all.
/// Large transactions, and every call on a current-thread runtime (where no
/// other worker could take over), go to the blocking pool. A panic comes
/// back as an error either way, so the connection still cleans up.
async fn run_storage<F, R>(small: bool, f: F) -> Result<R, Panicked>
where
    F: FnOnce() -> R + Send + 'static,
    R: Send + 'static,
{
    use tokio::runtime::{Handle, RuntimeFlavor};
    let describe = |payload: Box<dyn std::any::Any + Send>| {
        let text = payload
            .downcast_ref::<&str>()
            .map(|s| (*s).to_owned())
            .or_else(|| payload.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "unknown cause".to_owned());
        Panicked(text)
    };
    if small && Handle::current().runtime_flavor() == RuntimeFlavor::MultiThread {
        return std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)).map_err(describe);
    }
    tokio::task::spawn_blocking(f).await.map_err(|err| {
        if err.is_panic() {
            describe(err.into_panic())
        } else {
            Panicked(err.to_string())
        }
    })
}

fn pickle_extension(extension: &Value) -> Result<Vec<u8>, WireError> {
    match extension {
        Value::None => Ok(Vec::new()),
        Value::Dict(pairs) if pairs.is_empty() => Ok(Vec::new()),
        Value::Dict(_) => {
            // ZODB pickles the extension with protocol 3 and a memo.
            let mut encoder = zeo_pickle::Encoder::new(zeo_pickle::Protocol::V3).with_memo(true);
            encoder.dump(extension).map_err(|e| {
                WireError::value_error(&format!("cannot pickle the extension: {e}"))
            })?;
            Ok(encoder.into_bytes())
        }
        _ => Err(WireError::type_error(
            "tpc_begin() extension must be a dict",
        )),
    }
}

fn wire(err: StorageError) -> WireError {
    WireError::from(&err)
}

fn protocol_error(err: zeo_protocol::Error) -> WireError {
    WireError::with_args(
        "ZODB.POSException.StorageError",
        vec![Value::Str(err.to_string())],
    )
}

/// The error of a transaction past `max-transaction-size`.
fn too_large(message: &str) -> WireError {
    WireError::with_args(
        "ZODB.POSException.StorageError",
        vec![Value::Str(message.to_owned())],
    )
}

/// Logs the start of a pause in reading a connection's requests, at most
/// once per [`PAUSE_LOG_INTERVAL`].
#[derive(Default)]
struct PauseLog {
    active: bool,
    last_logged: Option<tokio::time::Instant>,
    unlogged: u64,
}

impl PauseLog {
    /// Notes a pause; true when it just began (not already paused).
    fn started(&mut self, peer: &str, outbox: &Outbox, settings: &crate::ServerSettings) -> bool {
        if self.active {
            return false;
        }
        self.active = true;
        let now = tokio::time::Instant::now();
        if self
            .last_logged
            .is_some_and(|t| now.duration_since(t) < PAUSE_LOG_INTERVAL)
        {
            self.unlogged += 1;
            return true;
        }
        self.last_logged = Some(now);
        let backlog = outbox.backlog();
        let reason = if backlog > settings.reply_backlog_pause {
            "its queued output is over reply-backlog-pause"
        } else if backlog > 0 && outbox.is_paused() && settings.max_total_backlog != 0 {
            "the server's queued output is over max-total-backlog"
        } else {
            "too many of its replies are in preparation"
        };
        tracing::info!(
            %peer,
            backlog,
            earlier_pauses = std::mem::take(&mut self.unlogged),
            "not reading the client's requests for now: {reason}"
        );
        true
    }

    fn ended(&mut self) {
        self.active = false;
    }
}

fn read_only_error() -> WireError {
    WireError::from(&StorageError::ReadOnly)
}

fn no_blobs() -> WireError {
    WireError::with_args(
        "ZODB.POSException.Unsupported",
        vec![Value::Str(NO_BLOBS.into())],
    )
}

fn iter_error(err: IterError) -> WireError {
    match err {
        IterError::Unknown(id) => WireError::key_error(Value::Int(id)),
        IterError::OutOfOrder(tid) => WireError::exception(&format!(
            "Out-of-order request for record iterator for transaction {tid}"
        )),
        IterError::TooMany => WireError::with_args(
            "ZODB.POSException.StorageError",
            vec![Value::Str("too many open iterators".into())],
        ),
        IterError::Storage(err) => wire(err),
    }
}

fn log_wire_error(method: &str, oneway: bool, error: &WireError) {
    let quiet = ["POSKeyError", "ConflictError", "ReadConflictError"];
    if quiet.iter().any(|q| error.class.ends_with(q)) {
        tracing::debug!(method, class = %error.class, "request failed");
    } else {
        tracing::warn!(
            method,
            oneway,
            class = %error.class,
            fields = ?error.fields,
            "Bad {}request",
            if oneway { "async " } else { "" }
        );
    }
}

fn log_conflicts(conflicts: &[VoteConflict]) {
    for c in conflicts {
        tracing::debug!(oid = %c.oid, committed = %c.committed, old = %c.old, "conflict returned to the client");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn panics_come_back_as_errors(small: bool) {
        assert_eq!(run_storage(small, || 7).await.unwrap(), 7);
        let err = run_storage(small, || -> u8 { panic!("storage exploded") })
            .await
            .unwrap_err();
        assert!(err.to_string().contains("storage exploded"), "{err}");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn storage_calls_on_a_multi_threaded_runtime() {
        panics_come_back_as_errors(true).await;
        panics_come_back_as_errors(false).await;
    }

    #[test]
    fn loads_answer_as_the_storage_search_does() {
        use zeo_storage::{MappingStorage, Storage, Tid};
        let storage = MappingStorage::new("1");
        let commit = |oid: Oid, serial: Tid, data: Option<&[u8]>| {
            let h = storage
                .tpc_begin(&TransactionMetaData::default(), Default::default())
                .unwrap();
            match data {
                Some(d) => storage.store(h, oid, serial, d).unwrap(),
                None => storage.delete_object(h, oid, serial).unwrap(),
            }
            storage.tpc_vote(h).unwrap();
            storage.tpc_finish(h, &mut |_| {}).unwrap()
        };
        let (a, b) = (Oid(1), Oid(2));
        let t1 = commit(a, Tid::ZERO, Some(b"a1"));
        let t2 = commit(a, t1, Some(b"a2"));
        let t3 = commit(b, Tid::ZERO, Some(b"b1"));
        let t4 = commit(b, t3, None);
        for oid in [a, b, Oid(3)] {
            for before in [Tid::ZERO, t1, t2, t3, t4, t4.next(), Tid::MAX] {
                let ours = load_before(&storage, oid, before).map_err(|e| e.to_string());
                let theirs = storage.load_before(oid, before).map_err(|e| e.to_string());
                assert_eq!(ours, theirs, "{oid} before {before}");
            }
        }
        let current = load_before(&storage, a, Tid::MAX).unwrap().unwrap();
        assert_eq!(
            (current.data, current.start, current.end),
            (b"a2".to_vec(), t2, None)
        );
    }

    #[tokio::test(flavor = "current_thread")]
    async fn storage_calls_on_a_current_thread_runtime() {
        panics_come_back_as_errors(true).await;
        panics_come_back_as_errors(false).await;
    }
}
