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
//! What a request may do and where the transaction stands are decided by
//! the connection's [`Session`], which does no I/O; this file reads frames,
//! runs storage calls and queues replies.
//!
//! When the server requires ZEO 3/4 `digest` authentication, a client must
//! log in between the handshake and `register` (`getAuthProtocol`,
//! `auth_get_challenge`, `auth_response`; see `docs/auth.md`). Those names
//! are not ZEO 5 methods, so they are recognised as
//! [`zeo_protocol::LoginRequest`]s before typed parsing. From the `True`
//! answer on, the outbox seals and the frame reader checks every frame.

use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use futures::{Future, StreamExt};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use zeo_auth::MacState;
use zeo_pickle::Value;
use zeo_protocol::frame::READ_AHEAD;
use zeo_protocol::reply::{self as replies, VoteConflict};
use zeo_protocol::{
    login, Call, ClientHello, Encoding, FrameCodec, Incoming, LoginMethod, LoginRequest,
    Marshaller, Message, ServerHandshake, ServerRequest, StorageInfo, TxnId, WireError,
};
use zeo_storage::{require, Error as StorageError, Oid, TransactionMetaData, TxnStatus};

use crate::blob_calls;
use crate::commit::{self, OpenTxn, VoteOutcome};
use crate::commit_lock::{Acquired, CommitGuard, ConnId};
use crate::frame_reader::FrameReader;
use crate::hub::StorageHub;
use crate::iterators::{IterError, Iterators};
use crate::outbox::{Outbox, OutboxLimits};
use crate::server::Shared;
use crate::session::{
    Begin, Ended, Expiry, Finish, Held, Session, SessionConfig, Staged, VoteStep,
};
use crate::stats::StorageStats;
use crate::storage_calls::{self, run_storage};
use crate::txn_log::{TxnLog, TxnOp};

/// Fewest seconds between two log lines about one connection's reads
/// being paused, so a client that keeps hitting the threshold cannot fill
/// the log.
const PAUSE_LOG_INTERVAL: Duration = Duration::from_secs(60);
/// How long queued output may take to drain once a connection ends.
const FLUSH_TIMEOUT: Duration = Duration::from_secs(5);

/// What the error text of blob methods says.
const NO_BLOBS: &str = "blobs are not supported by this storage (it has no blob directory)";

type LockFuture = Pin<Box<dyn Future<Output = CommitGuard> + Send>>;

/// The outcome of one request.
enum Outcome {
    /// Reply with this value (nothing for a one-way call).
    Reply(Value),
    /// The reply was queued already, or will be by a task.
    Sent,
}

type Handled = Result<Outcome, WireError>;

/// The session of a live connection: the real commit lock, and a place in
/// its queue as a future.
type ConnSession = Session<CommitGuard, LockFuture>;

/// The current time on tokio's clock (paused in tests), as the session
/// takes it.
fn now() -> std::time::Instant {
    tokio::time::Instant::now().into_std()
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
    let codec =
        FrameCodec::with_max_frame(shared.settings.max_message_size).with_read_ahead(READ_AHEAD);
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

    let session = Session::new(SessionConfig {
        auth_required: shared.settings.authentication.is_some(),
        read_only: shared.settings.read_only,
        transaction_timeout: shared.settings.transaction_timeout,
        login_deadline: login_deadline.map(tokio::time::Instant::into_std),
        max_transaction_size: shared.settings.max_transaction_size,
    });
    let mut conn = Conn {
        id,
        peer,
        nonce_peer,
        session,
        recv_mac: None,
        label: None,
        marshaller: Marshaller::server(encoding),
        shared: shared.clone(),
        outbox: outbox.clone(),
        hub: None,
        iterators: Iterators::default(),
        upload: None,
        upload_failed: None,
    };

    conn.read_loop(&mut reader).await;
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
    let buf = zeo_protocol::encode_frame(payload)
        .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e))?;
    w.write_all(&buf).await?;
    w.flush().await
}

/// Most requests handled from what one read brought in before the read loop
/// looks at its other events again.
const BURST_FRAMES: usize = 64;

struct Conn {
    id: ConnId,
    peer: String,
    nonce_peer: String,
    session: ConnSession,
    /// The receiving MAC chain, from a successful login until the reader
    /// takes it over.
    recv_mac: Option<MacState>,
    label: Option<String>,
    marshaller: Marshaller,
    shared: Arc<Shared>,
    outbox: Arc<Outbox>,
    hub: Option<Arc<StorageHub>>,
    iterators: Iterators,
    /// The blob upload between `storeBlobStart` and `storeBlobEnd`.
    upload: Option<blob_calls::Upload>,
    /// Why a one-way upload failed (a full disk): nobody could be told at
    /// the chunk, so the transaction its `storeBlobEnd` names fails its
    /// vote with this reason instead.
    upload_failed: Option<String>,
}

enum Event {
    Frame(Option<Result<bytes::BytesMut, zeo_protocol::Error>>),
    Granted(CommitGuard),
    Expired(Expiry),
    Resumed,
    Shutdown,
    Closed,
}

impl Conn {
    /// Reads and handles requests until the connection ends (at the
    /// session's deadlines among others). While its output is backed up
    /// (see [`Outbox::is_paused`]) no request is read; everything else
    /// (lock grants, timeouts, shutdown) still happens.
    async fn read_loop<R>(&mut self, reader: &mut FrameReader<R>)
    where
        R: AsyncRead + Unpin,
    {
        let shutdown = self.shared.shutdown.clone();
        let outbox = self.outbox.clone();
        let mut pause = PauseLog::default();
        loop {
            if self.session.drained() {
                return;
            }
            let deadline = self.session.deadline();
            let paused = outbox.is_paused();
            if paused {
                if pause.started(&self.peer, &outbox, &self.shared.settings) {
                    self.count_backpressure();
                }
            } else {
                pause.ended();
            }
            let draining = self.session.is_draining();
            let waiting = self.session.waiting();
            let event = tokio::select! {
                biased;
                _ = outbox.closed() => Event::Closed,
                _ = shutdown.cancelled(), if !draining => Event::Shutdown,
                guard = async { match waiting { Some(f) => f.await, None => std::future::pending().await } } => Event::Granted(guard),
                _ = sleep_until(deadline.map(|(d, _)| d.into())) => Event::Expired(deadline.map_or(Expiry::Drain, |(_, why)| why)),
                _ = outbox.wait_unpaused(), if paused => Event::Resumed,
                frame = reader.next(), if !paused => Event::Frame(frame),
            };
            match event {
                Event::Closed => return,
                Event::Resumed => {}
                Event::Expired(Expiry::Login) => {
                    let what = self.session.awaited();
                    tracing::warn!(peer = %self.peer, "did not {what} within login-timeout; closing");
                    return;
                }
                Event::Shutdown => {
                    if !self.session.shutdown(now()) {
                        return;
                    }
                }
                Event::Expired(Expiry::Drain) => {
                    tracing::warn!("shutting down: aborting a transaction that did not finish");
                    return;
                }
                Event::Expired(Expiry::Transaction) => {
                    if let Some(timeout) = self.session.transaction_timeout() {
                        tracing::error!(
                            "Transaction timeout after {} seconds",
                            timeout.as_secs_f64()
                        );
                    }
                    return;
                }
                Event::Granted(guard) => {
                    if let Some((txn, lock, msgid)) = self.session.lock_granted(guard, now()) {
                        self.run_vote(txn, lock, msgid).await;
                    }
                }
                Event::Frame(None) => return,
                Event::Frame(Some(Err(err))) => {
                    tracing::error!(%err, "cannot read message; closing");
                    return;
                }
                Event::Frame(Some(Ok(payload))) => {
                    if !self.take_frame(reader, &payload).await {
                        return;
                    }
                    // Requests that came in the same read (a client
                    // pipelining loads sends many per segment) are handled
                    // without going back through the select, as long as
                    // nothing else it watches can be due: no deadline, no
                    // lock awaited, output flowing, no close or shutdown.
                    for _ in 0..BURST_FRAMES {
                        if self.session.deadline().is_some()
                            || self.session.waiting().is_some()
                            || outbox.is_paused()
                            || outbox.is_closed()
                            || shutdown.is_cancelled()
                        {
                            break;
                        }
                        match reader.buffered_frame() {
                            None => break,
                            Some(Err(err)) => {
                                tracing::error!(%err, "cannot read message; closing");
                                return;
                            }
                            Some(Ok(payload)) => {
                                if !self.take_frame(reader, &payload).await {
                                    return;
                                }
                            }
                        }
                    }
                }
            }
        }
    }

    /// Handles one frame read; false closes the connection.
    async fn take_frame<R>(&mut self, reader: &mut FrameReader<R>, payload: &[u8]) -> bool
    where
        R: AsyncRead + Unpin,
    {
        if !self.handle_frame(payload).await {
            return false;
        }
        // Frames from here on must carry MACs: the reader has not decoded
        // the next one yet.
        if let Some(mac) = self.recv_mac.take() {
            reader.install_mac(mac);
        }
        true
    }

    /// Decodes and dispatches one message; false closes the connection.
    async fn handle_frame(&mut self, payload: &[u8]) -> bool {
        // A blob upload's chunks, read in place rather than decoded into
        // a copy (`zeo_protocol::oneway_bytes_call`); what it does not
        // recognize is decoded below, with the same outcome.
        if self.session.request_allowed(false) {
            const CHUNK: &str = "storeBlobChunk";
            let encoding = self.marshaller.encoding();
            if let Some([chunk]) = zeo_protocol::oneway_bytes_call(encoding, payload, CHUNK) {
                return match self.store_blob_chunk(chunk, true) {
                    Ok(_) => true,
                    Err(error) => {
                        // One-way: ZEO closes, with nobody to answer.
                        log_wire_error(CHUNK, true, &error);
                        false
                    }
                };
            }
        }
        let message = match self.marshaller.decode(payload) {
            Ok(m) => m,
            Err(err) => {
                tracing::error!(%err, "Can't deserialize message; closing");
                return false;
            }
        };
        if let Some(method) = LoginMethod::of(&message) {
            return self.handle_login(method, message);
        }
        let call = match ServerRequest::parse(&message) {
            Ok(Incoming::Heartbeat) => return true,
            Ok(Incoming::Call(call)) => call,
            Err(zeo_protocol::Error::BadArguments { method, reason }) => {
                let oneway = message.flags != zeo_protocol::Flags::None;
                tracing::error!(%method, %reason, oneway, "bad arguments");
                if self.session.bad_arguments_close(&method, oneway) {
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
        let is_register = matches!(request, ServerRequest::Register { .. });
        if !self.session.request_allowed(is_register) {
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

    /// Answers a login call; false closes the connection.
    fn handle_login(&mut self, method: LoginMethod, message: Message) -> bool {
        let oneway = message.flags != zeo_protocol::Flags::None;
        if !self.session.login_allowed(method, oneway) {
            tracing::error!(method = method.name(), oneway, "Invalid method; closing");
            return false;
        }
        let request = match LoginRequest::parse(method, &message) {
            Ok(request) => request,
            Err(error) => {
                tracing::error!(method = method.name(), ?error.fields, "bad arguments");
                self.outbox.reply_error(message.msgid, &error);
                return true;
            }
        };
        let authenticator = self.shared.settings.authentication.clone();
        let msgid = message.msgid;
        match (request, authenticator) {
            (LoginRequest::GetAuthProtocol, auth) => {
                let protocol = auth.as_ref().map(|_| zeo_auth::PROTOCOL);
                self.outbox.reply(msgid, login::protocol_reply(protocol));
            }
            (LoginRequest::GetChallenge, Some(auth)) => {
                let challenge = auth.challenge(&self.nonce_peer, SystemTime::now());
                let reply = login::challenge_reply(
                    &challenge.realm,
                    &challenge.challenge,
                    &challenge.key_nonce,
                );
                self.session.challenge_issued(challenge);
                self.outbox.reply(msgid, reply);
            }
            (
                LoginRequest::Response {
                    user,
                    challenge,
                    response,
                },
                Some(auth),
            ) => {
                let issued = self.session.take_challenge();
                self.auth_response(&auth, msgid, issued, &user, &challenge, &response);
            }
            _ => {
                tracing::error!(method = method.name(), "Invalid method; closing");
                return false;
            }
        }
        true
    }

    /// `auth_response((user, challenge, response))`: answers True and
    /// switches MACs on, or False, or an error.
    fn auth_response(
        &mut self,
        auth: &zeo_auth::ServerAuthenticator,
        msgid: Value,
        issued: Option<zeo_auth::Challenge>,
        user: &str,
        challenge: &str,
        response: &str,
    ) {
        match auth.verify(issued.as_ref(), user, challenge, response) {
            Ok(Some(key)) => {
                tracing::info!(%user, "authenticated");
                // The answer itself goes out plain: the client switches its
                // receiving chain on only after reading it.
                self.outbox.reply(msgid, Value::Bool(true));
                self.outbox.start_mac(MacState::new(&key));
                self.recv_mac = Some(MacState::new(&key));
                self.session.logged_in();
            }
            Ok(None) => {
                tracing::warn!(%user, "authentication failed: wrong password");
                self.shared.metrics.auth_failed();
                self.outbox.reply(msgid, Value::Bool(false));
            }
            Err(err) => {
                tracing::warn!(%user, %err, "authentication failed");
                self.shared.metrics.auth_failed();
                let unknown = matches!(err, zeo_auth::Error::NoSuchUser(_));
                self.outbox
                    .reply_error(msgid, &WireError::login_failed(unknown, &err.to_string()));
            }
        }
    }

    fn hub(&self) -> Result<&Arc<StorageHub>, WireError> {
        self.hub
            .as_ref()
            .ok_or_else(|| WireError::value_error("not registered"))
    }

    fn stats(&self) -> Option<&StorageStats> {
        self.hub.as_ref().map(|h| h.stats())
    }

    /// `storeBlobChunk(chunk)`: the next bytes of the upload in progress.
    fn store_blob_chunk(&mut self, chunk: &[u8], oneway: bool) -> Handled {
        if self.upload.is_none() && self.upload_failed.is_some() && oneway {
            // The rest of an upload that failed already.
            return Ok(Outcome::Sent);
        }
        let hub = self.hub()?.clone();
        let blobs = hub.storage().as_blobs().ok_or_else(no_blobs)?;
        let upload = self
            .upload
            .as_mut()
            .ok_or_else(|| WireError::value_error("storeBlobChunk without storeBlobStart"))?;
        if let Err(reason) = upload.write(blobs, chunk) {
            self.upload = None;
            if oneway {
                tracing::error!(peer = %self.peer, %reason, "blob upload failed; its transaction will fail at vote");
                self.upload_failed = Some(reason);
                return Ok(Outcome::Sent);
            }
            return Err(WireError::storage_error(&reason));
        }
        Ok(Outcome::Reply(Value::None))
    }

    async fn dispatch(&mut self, request: ServerRequest, msgid: Value, oneway: bool) -> Handled {
        use ServerRequest as R;
        if let Some(handled) = self.read_off_runtime(&request, &msgid, oneway) {
            return handled;
        }
        match request {
            R::Register { storage, read_only } => self.register(&storage, read_only, msgid, oneway),
            R::GetInfo => self.get_info(),
            R::LastTransaction => {
                let hub = self.hub()?.clone();
                let _g = hub.read_publication();
                let tid = hub.served_tid();
                self.send_now(msgid, oneway, replies::tid(tid))
            }
            R::GetInvalidations { tid } => self.get_invalidations(tid, msgid, oneway),
            R::LoadBefore { oid, before } => {
                let hub = self.hub()?.clone();
                StorageStats::bump(&hub.stats().loads);
                // The read and the queuing of its reply form one step that a
                // commit's publication cannot split.
                let _g = hub.read_publication();
                let found =
                    load_before(&**hub.storage(), oid, before, horizon(&hub)).map_err(wire)?;
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
                let storage = self.hub()?.storage();
                let found = require(storage.as_record_iteration(), "record_iternext")
                    .and_then(|r| r.record_iternext(next))
                    .map_err(wire)?;
                Ok(Outcome::Reply(
                    found.as_ref().map_or(Value::None, replies::record_iternext),
                ))
            }
            R::NewOids { n } => {
                if self.session.is_read_only() {
                    return Err(WireError::read_only());
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
            R::StoreNotBytes {
                method,
                oid,
                txn,
                type_name,
            } => {
                if method == "storeBlobEnd" {
                    // The upload this store names goes with the transaction.
                    self.upload = None;
                    self.upload_failed = None;
                }
                tracing::warn!(peer = %self.peer, oid = ?oid, record = type_name, "{method} of a record that is not bytes; the transaction fails at vote");
                self.session
                    .reject(txn, WireError::type_error(&record_type_error(type_name)))?;
                Ok(Outcome::Reply(Value::None))
            }
            R::StoreBlobStart => {
                if self.session.is_read_only() {
                    return Err(WireError::read_only());
                }
                let hub = self.hub()?.clone();
                let blobs = hub.storage().as_blobs().ok_or_else(no_blobs)?;
                // A new start abandons an unfinished upload (its file goes).
                self.upload = None;
                self.upload_failed = None;
                self.upload = Some(blob_calls::Upload::start(
                    blobs,
                    self.shared.settings.max_transaction_size,
                )?);
                Ok(Outcome::Reply(Value::None))
            }
            R::StoreBlobChunk { chunk } => self.store_blob_chunk(&chunk, oneway),
            R::StoreBlobEnd {
                oid,
                serial,
                data,
                txn,
            } => {
                let finished = match (self.upload.take(), self.upload_failed.take()) {
                    (Some(upload), _) => {
                        let hub = self.hub()?.clone();
                        let blobs = hub.storage().as_blobs().ok_or_else(no_blobs)?;
                        upload.finish(blobs).inspect_err(|reason| {
                            tracing::error!(peer = %self.peer, %reason, "blob upload failed; its transaction will fail at vote");
                        })
                    }
                    (None, Some(reason)) => Err(reason),
                    (None, None) => {
                        return Err(WireError::value_error(
                            "storeBlobEnd without storeBlobStart",
                        ))
                    }
                };
                let path = match finished {
                    Ok(path) => path,
                    Err(reason) => {
                        self.session
                            .reject(txn, WireError::storage_error(&reason))?;
                        return if oneway {
                            Ok(Outcome::Sent)
                        } else {
                            Err(WireError::storage_error(&reason))
                        };
                    }
                };
                let op = TxnOp::StoreBlob {
                    oid,
                    serial,
                    data,
                    path,
                };
                self.log_op(txn, op, true, oneway)
            }
            R::StoreBlobShared {
                oid,
                serial,
                data,
                filename,
                txn,
            } => {
                let hub = self.hub()?.clone();
                let blobs = hub.storage().as_blobs().ok_or_else(no_blobs)?;
                let path = blob_calls::shared_path(blobs, oid, &filename)?;
                let op = TxnOp::StoreBlob {
                    oid,
                    serial,
                    data,
                    path,
                };
                self.log_op(txn, op, true, oneway)
            }
            R::SendBlob { oid, serial } => {
                let hub = self.hub()?.clone();
                hub.storage().as_blobs().ok_or_else(no_blobs)?;
                let sent = blob_calls::send_blob(&self.outbox, hub.storage(), oid, serial).await?;
                if !sent {
                    return Ok(Outcome::Sent);
                }
                Ok(Outcome::Reply(Value::None))
            }
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
    /// Serves the read requests of a backend that may block on the blocking
    /// pool (see `storage_calls`); `None` for every other request.
    fn read_off_runtime(
        &self,
        request: &ServerRequest,
        msgid: &Value,
        oneway: bool,
    ) -> Option<Handled> {
        use ServerRequest as R;
        // Checked before cloning: this runs for every request.
        let hub = self
            .hub
            .as_ref()
            .filter(|h| h.storage().may_block())?
            .clone();
        let published = matches!(request, R::LoadBefore { .. });
        let read: storage_calls::Read = match *request {
            R::LoadBefore { oid, before } => {
                StorageStats::bump(&hub.stats().loads);
                let hub = hub.clone();
                // Runs under the publication lock: the horizon read there
                // is the one the reply is queued at.
                Box::new(move |s| {
                    let found = load_before(s, oid, before, horizon(&hub)).map_err(wire)?;
                    Ok(replies::load_before(found.as_ref()))
                })
            }
            R::LoadSerial { oid, serial } => {
                Box::new(move |s| s.load_serial(oid, serial).map(Value::Bytes).map_err(wire))
            }
            R::GetTid { oid } => Box::new(move |s| s.get_tid(oid).map(replies::tid).map_err(wire)),
            R::History { oid, size } => Box::new(move |s| {
                let entries = s.history(oid, size).map_err(wire)?;
                replies::history(&entries).map_err(protocol_error)
            }),
            R::RecordIternext { next } => Box::new(move |s| {
                let found = require(s.as_record_iteration(), "record_iternext")
                    .and_then(|r| r.record_iternext(next))
                    .map_err(wire)?;
                Ok(found.as_ref().map_or(Value::None, replies::record_iternext))
            }),
            R::NewOids { n } if !self.session.is_read_only() => Box::new(move |s| {
                let n = n.clamp(1, zeo_protocol::MAX_NEW_OIDS);
                let oids = (0..n).map(|_| s.new_oid()).collect::<Result<Vec<Oid>, _>>();
                Ok(replies::oid_list(&oids.map_err(wire)?))
            }),
            _ => return None,
        };
        storage_calls::reply_from_blocking(
            hub,
            self.outbox.clone(),
            msgid.clone(),
            oneway,
            published,
            read,
        );
        Some(Ok(Outcome::Sent))
    }

    fn send_now(&self, msgid: Value, oneway: bool, value: Value) -> Handled {
        if !oneway {
            self.outbox.reply(msgid, value);
        }
        Ok(Outcome::Sent)
    }

    fn register(&mut self, name: &str, read_only: bool, msgid: Value, oneway: bool) -> Handled {
        if let Err(error) = self.session.may_register() {
            tracing::warn!(storage = name, "register before authentication");
            return Err(error);
        }
        let Some(hub) = self.shared.hubs.get(name).cloned() else {
            tracing::warn!(storage = name, "unknown storage");
            return Err(WireError::value_error(&format!("unknown storage: {name}")));
        };
        self.session
            .register(read_only, hub.storage().is_read_only())?;
        tracing::info!(
            storage = name,
            read_only = self.session.is_read_only(),
            "registered"
        );
        // Joining the client set and reading the last transaction form one
        // step: every commit after it reaches this client as an invalidation.
        let guard = hub.read_publication();
        hub.add_client(&guard, self.outbox.clone());
        let last = hub.served_tid();
        let out = self.send_now(msgid, oneway, replies::tid(last));
        drop(guard);
        self.hub = Some(hub);
        out
    }

    fn get_info(&self) -> Handled {
        let hub = self.hub()?;
        let storage = hub.storage();
        let capabilities = storage.capabilities();
        let interfaces = capabilities
            .zodb_interfaces()
            .into_iter()
            .map(|(module, name)| (module.to_owned(), name.to_owned()))
            .collect();
        let info = StorageInfo {
            length: storage.len(),
            size: storage.size(),
            name: storage.name().to_owned(),
            supports_undo: capabilities.undo,
            supports_record_iternext: capabilities.record_iteration,
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
                let iteration = require(hub.storage().as_iteration(), "iterator")?;
                let stop = horizon(&hub);
                for txn in iteration.changed_oids(Some(tid.next()), stop)? {
                    let (tid, changed) = txn?;
                    oids.extend(changed);
                    latest = Some(tid);
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
            let started = std::time::Instant::now();
            let result =
                require(hub.storage().as_pack(), "pack").and_then(|p| p.pack(time, hub.pack_gc()));
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
        if hub.storage().as_undo().is_none() {
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
            let result = require(hub.storage().as_undo(), "undoLog")
                .and_then(|u| u.undo_log(first, last, Some(&filter)))
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
        let settings = &self.shared.settings;
        let begun = self.session.begin(id, || {
            let extension = pickle_extension(&extension)?;
            let meta = TransactionMetaData {
                user,
                description,
                extension,
            };
            let log = TxnLog::new(
                settings.commit_log_spill_threshold,
                settings.temporary_directory.clone(),
            );
            Ok(OpenTxn::new(id, meta, tid, status, log))
        })?;
        if begun == Begin::Started {
            if let Some(stats) = self.stats() {
                stats.active_txns.fetch_add(1, Ordering::Relaxed);
            }
        }
        Ok(Outcome::Reply(Value::None))
    }

    fn log_op(&mut self, id: TxnId, op: TxnOp, counts_as_store: bool, oneway: bool) -> Handled {
        // An uploaded blob file goes unless the log takes it.
        let unlogged = blob_calls::Unlogged::of(&op);
        let txn = match self.session.stage_write(id, op.logged_len())? {
            Staged::Log(txn) => txn,
            // Already failed: the vote reports it; nothing more is kept.
            Staged::Dropped => return Ok(Outcome::Reply(Value::None)),
            Staged::Rejected {
                staged,
                limit,
                error,
            } => {
                tracing::warn!(peer = %self.peer, staged, limit, "transaction exceeds max-transaction-size; dropping its data");
                // A one-way store has nobody to answer, and an error would
                // close the connection: the vote carries the error instead.
                return if oneway {
                    Ok(Outcome::Sent)
                } else {
                    Err(error)
                };
            }
        };
        unlogged.logged();
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
        match self.session.vote(id)? {
            VoteStep::Run(txn, lock) => self.run_vote(txn, lock, msgid).await,
            VoteStep::Acquire => {
                let hub = self.hub()?.clone();
                match hub.commit_lock().acquire(self.id) {
                    Acquired::Now(guard) => {
                        if let Some((txn, lock)) = self.session.start_vote(guard, now()) {
                            self.run_vote(txn, lock, msgid).await;
                        }
                    }
                    Acquired::Queued(wait) => {
                        self.session.queue_for_lock(Box::pin(wait.granted()), msgid);
                    }
                }
            }
        }
        Ok(Outcome::Sent)
    }

    /// Replays the transaction into the storage under the commit lock and
    /// replies to the vote.
    async fn run_vote(&mut self, mut txn: Box<OpenTxn>, lock: Held<CommitGuard>, msgid: Value) {
        let Some(hub) = self.hub.clone() else {
            return;
        };
        tracing::debug!(
            stores = txn.log.stores(),
            bytes = txn.log.size(),
            "preparing to commit"
        );
        let storage = hub.storage().clone();
        let small = storage_calls::may_run_inline(&*storage, txn.is_small());
        let started = std::time::Instant::now();
        let native = self.shared.settings.conflict_resolution;
        let counters = hub.clone();
        let joined = run_storage(small, move || {
            let policy = if native {
                commit::ConflictPolicy::Native {
                    resolved: &counters.stats().conflicts_resolved,
                }
            } else {
                commit::ConflictPolicy::ClientSide
            };
            let outcome = txn.vote(&*storage, policy);
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
                drop(lock);
                self.end_txn(&hub).await;
                self.outbox
                    .reply_error(msgid, &WireError::storage_error("vote failed"));
                self.outbox.close();
                return;
            }
        };
        match outcome {
            Ok(VoteOutcome::Voted(serials)) => {
                self.session.voted(txn, lock);
                self.outbox.reply(msgid, replies::oid_list(&serials));
            }
            Ok(VoteOutcome::Conflicts(conflicts)) => {
                // The storage transaction was aborted; the client resolves
                // and votes again within the same ZEO transaction, still
                // holding the lock.
                self.session.conflicted(txn, lock);
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
                drop(lock);
                self.end_txn(&hub).await;
                self.outbox.reply_error(msgid, &wire(err));
            }
        }
    }

    async fn tpc_finish(&mut self, id: TxnId, msgid: Value, oneway: bool) -> Handled {
        let hub = self.hub()?.clone();
        let lock_since = self.session.lock_held_since();
        let (handle, oids, small) = match self.session.finish(id)? {
            Finish::NotOpen => return Ok(Outcome::Reply(Value::None)),
            Finish::Run {
                handle,
                oids,
                small,
            } => (handle, oids, small),
        };
        let group = self.shared.settings.group_commit;
        // Group commit: the lock goes with the finish, to be released as
        // soon as the storage has the transaction written. The fsync is
        // then waited for on a blocking thread, so that many finishes can
        // wait for one fsync without holding the runtime's workers; but a
        // transaction alone (no other one begun) has nobody to share its
        // fsync with and runs inline, as without group commit: the trip
        // to the blocking pool would cost it a quarter of its commit.
        let (lock, small) = if group {
            let ended = self.session.end();
            let alone = hub.stats().active_txns.load(Ordering::Relaxed) <= 1
                && hub.commit_lock().waiting() == 0;
            (
                ended.and_then(|e| e.lock),
                alone && storage_calls::may_run_inline(&**hub.storage(), small),
            )
        } else {
            (None, storage_calls::may_run_inline(&**hub.storage(), small))
        };
        let conn = self.id;
        let hub2 = hub.clone();
        let outbox = self.outbox.clone();
        let started = std::time::Instant::now();
        // Not alone, on a storage that never blocks and has no other
        // writers: the submit (the status byte) runs here and the lock is
        // released at once, not after a trip to the blocking pool; the
        // next transaction votes while this one goes there to wait for
        // its fsync.
        let mut lock = lock;
        let submitted = if group
            && !small
            && !hub.is_shared()
            && storage_calls::may_run_inline(&**hub.storage(), true)
        {
            let storage = hub.storage().clone();
            let submitted = run_storage(true, move || storage.tpc_finish_submit(handle))
                .await
                .unwrap_or_else(|err| Err(StorageError::other(err)));
            drop(lock.take());
            Some(submitted)
        } else {
            None
        };
        let joined = run_storage(small, move || {
            // The reply is queued under the publication lock taken for
            // the invalidations, in commit order: no client hears of a
            // later transaction before this one's reply.
            let mut announce = |tid| {
                outbox.send(&Message::call_async("info", vec![hub2.size_info()]));
                if !oneway {
                    outbox.reply(msgid.clone(), replies::tid(tid));
                }
            };
            match submitted {
                Some(submitted) => {
                    commit::finish_submitted(&hub2, conn, submitted, oids, started, &mut announce)
                }
                None => commit::finish(&hub2, conn, handle, oids, lock, &mut announce),
            }
        })
        .await;
        tracing::debug!(
            elapsed_us = started.elapsed().as_micros() as u64,
            small,
            group,
            "storage finish done"
        );
        let result = match joined {
            Ok(r) => r,
            // The panic stays the error's source.
            Err(err) => Err(StorageError::other(err)),
        };
        if group {
            hub.stats().active_txns.fetch_sub(1, Ordering::Relaxed);
        }
        match result {
            Ok(_) => {
                StorageStats::bump(&hub.stats().commits);
                hub.stats()
                    .commit_seconds
                    .observe(lock_since.map_or(Duration::ZERO, |since| since.elapsed()));
                // Without group commit the lock is released only after the
                // reply is queued, as ZEO does.
                self.end_txn(&hub).await;
                Ok(Outcome::Sent)
            }
            Err(err) => {
                tracing::error!(%err, "tpc_finish failed");
                let storage = hub.storage().clone();
                if let Err(err) = run_storage(small, move || storage.tpc_abort(handle)).await {
                    tracing::error!(%err, "tpc_abort task failed");
                }
                self.end_txn(&hub).await;
                Err(wire(err))
            }
        }
    }

    async fn tpc_abort(&mut self, id: TxnId) -> Result<(), WireError> {
        if !self.session.aborts(id) {
            return Ok(());
        }
        let hub = self.hub()?.clone();
        StorageStats::bump(&hub.stats().aborts);
        self.end_txn(&hub).await;
        Ok(())
    }

    /// Ends the session's transaction in whatever phase: leaves the lock's
    /// queue, aborts the storage transaction if one is begun, then lets go
    /// of the commit lock. Every way a transaction ends comes here.
    async fn end_txn(&mut self, hub: &Arc<StorageHub>) {
        let Some(Ended {
            storage_txn,
            small,
            lock,
        }) = self.session.end()
        else {
            return;
        };
        if let Some(handle) = storage_txn {
            let storage = hub.storage().clone();
            let small = storage_calls::may_run_inline(&*storage, small);
            if let Err(err) = run_storage(small, move || storage.tpc_abort(handle)).await {
                tracing::error!(%err, "tpc_abort task failed");
            }
        }
        drop(lock);
        hub.stats().active_txns.fetch_sub(1, Ordering::Relaxed);
    }

    async fn disconnect(&mut self) {
        if let Some(hub) = self.hub.clone() {
            if self.session.has_txn() {
                tracing::info!(
                    "disconnected during {} transaction",
                    if self.session.is_voted() {
                        "locked"
                    } else {
                        "unlocked"
                    }
                );
                StorageStats::bump(&hub.stats().aborts);
                self.end_txn(&hub).await;
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
///
/// With a `horizon` (a storage other writers share, served as of the last
/// tid announced to the client) the answer is the one a storage whose last
/// transaction is `horizon` would give: no revision after it, and a
/// revision replaced only after it is reported current, so that the client
/// caches nothing it has not been sent the invalidations for.
fn load_before(
    storage: &dyn zeo_storage::Storage,
    oid: Oid,
    before: zeo_storage::Tid,
    horizon: Option<zeo_storage::Tid>,
) -> Result<Option<zeo_storage::LoadedRevision>, StorageError> {
    let before = horizon.map_or(before, |h| before.min(h.next()));
    let found = match storage.load(oid) {
        Ok((data, start)) if start < before => Some(zeo_storage::LoadedRevision {
            data,
            start,
            end: None,
        }),
        _ => storage.load_before(oid, before)?,
    };
    Ok(found.map(|mut revision| {
        if horizon.is_some_and(|h| revision.end.is_some_and(|end| end > h)) {
            revision.end = None;
        }
        revision
    }))
}

/// The tid a shared storage is served as of (see [`load_before`]); `None`
/// for a storage no one else writes, served as of its last transaction.
/// Read under the publication lock.
fn horizon(hub: &StorageHub) -> Option<zeo_storage::Tid> {
    hub.is_shared().then(|| hub.served_tid())
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

/// What Python's FileStorage raises at the vote for a record of type
/// `type_name` that is not bytes: `len()` of it fails first, unless it is
/// text, which fails at the write.
fn record_type_error(type_name: &str) -> String {
    if type_name == "str" {
        "a bytes-like object is required, not 'str'".to_owned()
    } else {
        format!("object of type '{type_name}' has no len()")
    }
}

fn no_blobs() -> WireError {
    WireError::unsupported(NO_BLOBS)
}

fn wire(err: StorageError) -> WireError {
    WireError::from(&err)
}

fn protocol_error(err: zeo_protocol::Error) -> WireError {
    WireError::storage_error(&err.to_string())
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

fn iter_error(err: IterError) -> WireError {
    match err {
        IterError::Unknown(id) => WireError::key_error(Value::Int(id)),
        IterError::OutOfOrder(tid) => WireError::exception(&format!(
            "Out-of-order request for record iterator for transaction {tid}"
        )),
        IterError::TooMany => WireError::storage_error("too many open iterators"),
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

    #[test]
    fn loads_answer_as_the_storage_search_does() {
        use zeo_storage::{ExternalGc, MappingStorage, Storage, Tid};
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
                let ours = load_before(&storage, oid, before, None).map_err(|e| e.to_string());
                let theirs = storage.load_before(oid, before).map_err(|e| e.to_string());
                assert_eq!(ours, theirs, "{oid} before {before}");
            }
        }
        let current = load_before(&storage, a, Tid::MAX, None).unwrap().unwrap();
        assert_eq!(
            (current.data, current.start, current.end),
            (b"a2".to_vec(), t2, None)
        );
    }
}
