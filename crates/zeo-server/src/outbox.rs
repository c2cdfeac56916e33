//! The outgoing side of a connection: one ordered queue of encoded messages
//! and the writer task that drains it.
//!
//! Replies, invalidations and `info` messages all travel through the same
//! queue, so the order in which the server decides to send them is the order
//! the client receives them. Queuing never waits: a commit publishing
//! invalidations must not stall on a slow client. Instead the queue's size
//! is bounded in bytes, and a client that lets it overflow is disconnected.
//!
//! What keeps a queue small is the connection's reader: it stops reading
//! requests while the queue holds more than the pause threshold
//! ([`Outbox::is_paused`], [`Outbox::wait_unpaused`]), or holds anything
//! while the server-wide [`OutputBudget`] is exceeded, so a client that sends
//! requests without reading the replies gets no further than the threshold
//! plus one reply. Streamed replies can wait for room with
//! [`Outbox::reserve`] instead of queueing everything at once.
//!
//! After a client authenticates, every frame carries a MAC chained over all
//! earlier frames, so MACs must be computed in exactly the order frames
//! reach the wire. The writer task computes them as it frames each payload,
//! and the switch to MAC'd frames travels through the same queue
//! ([`Outbox::start_mac`]): whatever was queued before it goes out plain,
//! everything after it sealed.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;

use bytes::{Buf, Bytes};
use tokio::io::{AsyncWrite, AsyncWriteExt};
use tokio::sync::{mpsc, Notify};
use zeo_auth::MacState;
use zeo_pickle::Value;
use zeo_protocol::{Encoding, FrameHeader, Marshaller, Message, Reply, WireError};

use crate::commit_lock::ConnId;

/// Encodes a message for a client speaking `encoding`.
pub fn encode(encoding: Encoding, message: &Message) -> Result<Bytes, zeo_protocol::Error> {
    Marshaller::server(encoding)
        .encode(message)
        .map(Bytes::from)
}

/// The server-wide account of output queued and not yet written, over all
/// connections.
#[derive(Debug)]
pub struct OutputBudget {
    queued: AtomicUsize,
    peak: AtomicUsize,
    max_total: usize,
    /// Set while `queued` is above `max_total`, so the warning is logged
    /// once per episode rather than once per message.
    over: AtomicBool,
    drained: Notify,
}

impl OutputBudget {
    /// A budget pausing every connection's reads above `max_total` queued
    /// bytes (0 = no cap).
    pub fn new(max_total: usize) -> Arc<Self> {
        Arc::new(OutputBudget {
            queued: AtomicUsize::new(0),
            peak: AtomicUsize::new(0),
            max_total,
            over: AtomicBool::new(false),
            drained: Notify::new(),
        })
    }

    /// Bytes queued over all connections right now.
    pub fn queued(&self) -> usize {
        self.queued.load(Ordering::Acquire)
    }

    /// The most bytes ever queued at once over all connections.
    pub fn peak(&self) -> usize {
        self.peak.load(Ordering::Acquire)
    }

    /// Whether reads are paused server-wide.
    pub fn is_exceeded(&self) -> bool {
        self.max_total != 0 && self.queued() > self.max_total
    }

    fn charge(&self, len: usize) {
        let now = self.queued.fetch_add(len, Ordering::AcqRel) + len;
        self.peak.fetch_max(now, Ordering::AcqRel);
        if self.max_total != 0 && now > self.max_total && !self.over.swap(true, Ordering::AcqRel) {
            tracing::warn!(
                queued = now,
                limit = self.max_total,
                "queued output exceeds max-total-backlog; connections with output queued are not read until it drains"
            );
        }
    }

    fn release(&self, len: usize) {
        let old = self.queued.fetch_sub(len, Ordering::AcqRel);
        if self.max_total != 0 && old > self.max_total && old - len <= self.max_total {
            self.over.store(false, Ordering::Release);
            self.drained.notify_waiters();
        }
    }
}

/// The byte limits of one connection's queue.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct OutboxLimits {
    /// Above this many queued bytes the connection's requests are not read
    /// ([`crate::ServerSettings::reply_backlog_pause`]).
    pub pause: usize,
    /// Above this many queued bytes the client is disconnected
    /// ([`crate::ServerSettings::max_outgoing_backlog`]).
    pub max_backlog: usize,
}

impl OutboxLimits {
    /// No limit at all.
    #[cfg(test)]
    pub const UNLIMITED: OutboxLimits = OutboxLimits {
        pause: usize::MAX,
        max_backlog: usize::MAX,
    };
}

/// Most replies of one connection that may be in preparation by background
/// tasks at once (undo logs, packs, invalidation scans) before its
/// requests stop being read: each task may produce a large reply that
/// nothing else accounts for until it is queued.
pub const MAX_PENDING_REPLIES: usize = 4;

/// The counters a connection's queue and its queued messages share.
#[derive(Debug)]
struct Counters {
    backlog: AtomicUsize,
    /// The part of `backlog` that is replies.
    replies: AtomicUsize,
    pending: AtomicUsize,
    drained: Notify,
    budget: Arc<OutputBudget>,
}

/// A reply a background task is preparing for a connection, counted by
/// [`Outbox::is_paused`] until the guard is dropped.
#[derive(Debug)]
pub struct PendingReply {
    counters: Arc<Counters>,
}

impl Drop for PendingReply {
    fn drop(&mut self) {
        self.counters.pending.fetch_sub(1, Ordering::AcqRel);
        self.counters.drained.notify_waiters();
    }
}

impl Counters {
    /// Counts `len` bytes of a reply (or not); returns the guard and the
    /// queue's size before them.
    fn charge(self: &Arc<Self>, len: usize, reply: bool) -> (Charge, usize) {
        let before = self.backlog.fetch_add(len, Ordering::AcqRel);
        if reply {
            self.replies.fetch_add(len, Ordering::AcqRel);
        }
        self.budget.charge(len);
        let charge = Charge {
            len,
            reply,
            counters: self.clone(),
        };
        (charge, before)
    }
}

/// The bytes one queued message counts for, given back when the message
/// is written or dropped unwritten (a closed connection), so the counts
/// cannot drift whichever way a message leaves the queue.
#[derive(Debug)]
struct Charge {
    len: usize,
    reply: bool,
    counters: Arc<Counters>,
}

impl Drop for Charge {
    fn drop(&mut self) {
        if self.reply {
            self.counters.replies.fetch_sub(self.len, Ordering::AcqRel);
        }
        self.counters.backlog.fetch_sub(self.len, Ordering::AcqRel);
        self.counters.budget.release(self.len);
        self.counters.drained.notify_waiters();
    }
}

/// The queue of messages for one client.
#[derive(Debug)]
pub struct Outbox {
    conn: ConnId,
    peer: String,
    encoding: Encoding,
    tx: mpsc::UnboundedSender<Queued>,
    counters: Arc<Counters>,
    limits: OutboxLimits,
    closed: AtomicBool,
    close_notify: Notify,
}

/// What the writer task needs.
#[derive(Debug)]
pub struct OutboxReceiver {
    rx: mpsc::UnboundedReceiver<Queued>,
}

/// What travels from the outbox to the writer task.
enum Queued {
    /// An encoded message, without its length word.
    Payload(Bytes, Charge),
    /// Seal every later payload with this MAC chain.
    StartMac(Box<MacState>),
}

impl std::fmt::Debug for Queued {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Queued::Payload(p, _) => write!(f, "Payload({} bytes)", p.len()),
            Queued::StartMac(_) => f.write_str("StartMac"),
        }
    }
}

impl Outbox {
    /// A queue for connection `conn` with `peer` (named in log lines),
    /// accounted in `budget`, and its receiving end for the writer.
    pub fn new(
        conn: ConnId,
        peer: impl Into<String>,
        encoding: Encoding,
        limits: OutboxLimits,
        budget: Arc<OutputBudget>,
    ) -> (Arc<Self>, OutboxReceiver) {
        let (tx, rx) = mpsc::unbounded_channel();
        let outbox = Arc::new(Outbox {
            conn,
            peer: peer.into(),
            encoding,
            tx,
            counters: Arc::new(Counters {
                backlog: AtomicUsize::new(0),
                replies: AtomicUsize::new(0),
                pending: AtomicUsize::new(0),
                drained: Notify::new(),
                budget,
            }),
            limits,
            closed: AtomicBool::new(false),
            close_notify: Notify::new(),
        });
        (outbox, OutboxReceiver { rx })
    }

    /// The connection this queue belongs to.
    pub fn conn(&self) -> ConnId {
        self.conn
    }

    /// The encoding the client chose.
    pub fn encoding(&self) -> Encoding {
        self.encoding
    }

    /// Bytes queued and not yet written.
    pub fn backlog(&self) -> usize {
        self.counters.backlog.load(Ordering::Acquire)
    }

    /// Whether the connection's requests should wait: its own queue is over
    /// the pause threshold, or the server-wide budget is exceeded and this
    /// queue is not empty.
    ///
    /// A connection whose queue is empty is not held back by the budget:
    /// it is not what fills it, and holding it back would let clients that
    /// never read stall every other client for good. It gets one request
    /// read, and waits again until that reply has been written.
    ///
    /// Also paused: a connection with [`MAX_PENDING_REPLIES`] replies in
    /// preparation ([`Outbox::pending_reply`]).
    pub fn is_paused(&self) -> bool {
        let backlog = self.backlog();
        backlog > self.limits.pause
            || (backlog > 0 && self.counters.budget.is_exceeded())
            || self.counters.pending.load(Ordering::Acquire) >= MAX_PENDING_REPLIES
    }

    /// Counts a reply that a background task will queue later; hold the
    /// guard until it is queued.
    pub fn pending_reply(&self) -> PendingReply {
        self.counters.pending.fetch_add(1, Ordering::AcqRel);
        PendingReply {
            counters: self.counters.clone(),
        }
    }

    /// Resolves once [`Outbox::is_paused`] is false or the connection was
    /// asked to close.
    pub async fn wait_unpaused(&self) {
        self.wait_for(|| !self.is_paused()).await;
    }

    /// Waits until the queue is empty, or `bytes` more can be queued
    /// without going over `cap` or the pause threshold, whichever is less,
    /// while the server-wide budget is not exceeded (so a piece larger
    /// than the threshold still goes out, one at a time). For output
    /// produced piecemeal, such as a blob sent in chunks: reserve before
    /// producing each piece, then send it; a `cap` below the threshold
    /// keeps what waits small enough to still be in the CPU's caches when
    /// it is written. Returns false if the connection was asked to close
    /// meanwhile.
    pub async fn reserve(&self, bytes: usize, cap: usize) -> bool {
        let cap = cap.min(self.limits.pause);
        self.wait_for(|| {
            let backlog = self.backlog();
            backlog == 0
                || (backlog.saturating_add(bytes) <= cap && !self.counters.budget.is_exceeded())
        })
        .await;
        !self.is_closed()
    }

    /// Waits until `ready()` holds or the connection is closing. Both
    /// notifications are armed before `ready` is checked, so a write that
    /// drains the queue in between cannot be missed.
    async fn wait_for(&self, ready: impl Fn() -> bool) {
        loop {
            let own = self.counters.drained.notified();
            let global = self.counters.budget.drained.notified();
            let closed = self.close_notify.notified();
            tokio::pin!(own, global, closed);
            own.as_mut().enable();
            global.as_mut().enable();
            closed.as_mut().enable();
            if self.is_closed() || ready() {
                return;
            }
            tokio::select! {
                _ = own => {}
                _ = global => {}
                _ = closed => {}
            }
        }
    }

    /// Queues an already encoded message (payload without length prefix)
    /// that is not a reply: an invalidation or an `info` message.
    pub fn send_encoded(&self, payload: Bytes) {
        self.queue(payload, false);
    }

    /// Queues an encoded message, or closes the connection when its queue
    /// is stuck past `max_backlog`.
    ///
    /// A reply is refused only if the queue was over the cap before it,
    /// so one reply larger than the cap (a big object) still goes to a
    /// client that reads. Other messages are refused once the queue minus
    /// its replies is over the cap: they are what keeps growing while a
    /// client does not read (its replies stop at the pause threshold),
    /// and a large reply on its way out must not cost a reading client
    /// its connection when an invalidation follows it.
    fn queue(&self, payload: Bytes, reply: bool) {
        if self.is_closed() {
            return;
        }
        let len = payload.len();
        let (charge, before) = self.counters.charge(len, reply);
        let counted = if reply {
            before
        } else {
            (before + len).saturating_sub(self.counters.replies.load(Ordering::Acquire))
        };
        if counted > self.limits.max_backlog {
            tracing::warn!(
                conn = self.conn,
                peer = %self.peer,
                queued = before + len,
                limit = self.limits.max_backlog,
                "client does not read its messages: queued output exceeds max-client-backlog; disconnecting"
            );
            self.close();
            return;
        }
        if self.tx.send(Queued::Payload(payload, charge)).is_err() {
            self.close();
        }
    }

    /// Seals every message queued after this call with `mac`, the sending
    /// chain of an authenticated connection; messages queued before it go
    /// out as they were.
    pub fn start_mac(&self, mac: MacState) {
        if self.tx.send(Queued::StartMac(Box::new(mac))).is_err() {
            self.close();
        }
    }

    /// Encodes and queues a message. A reply that cannot be encoded is
    /// replaced by ZEO's `ValueError("Couldn't pickle response")`.
    pub fn send(&self, message: &Message) {
        match encode(self.encoding, message) {
            Ok(frame) => self.queue(frame, message.is_reply()),
            Err(err) => {
                tracing::error!(conn = self.conn, %err, method = %message.method, "unencodable message");
                if message.is_reply() {
                    let fallback =
                        Reply::error(message.msgid.clone(), &WireError::unencodable_reply());
                    if let Ok(frame) = encode(self.encoding, &fallback) {
                        self.queue(frame, true);
                    }
                }
            }
        }
    }

    /// Queues a successful reply.
    pub fn reply(&self, msgid: Value, value: Value) {
        self.send(&Reply::value(msgid, value));
    }

    /// Queues an error reply.
    pub fn reply_error(&self, msgid: Value, error: &WireError) {
        self.send(&Reply::error(msgid, error));
    }

    /// Asks the connection to close (timeout, overflow, shutdown).
    pub fn close(&self) {
        if !self.closed.swap(true, Ordering::AcqRel) {
            self.close_notify.notify_waiters();
            self.close_notify.notify_one();
        }
    }

    /// Whether the connection was asked to close.
    pub fn is_closed(&self) -> bool {
        self.closed.load(Ordering::Acquire)
    }

    /// Resolves once [`Outbox::close`] was called.
    pub async fn closed(&self) {
        loop {
            let notified = self.close_notify.notified();
            if self.is_closed() {
                return;
            }
            notified.await;
        }
    }
}

impl OutboxReceiver {
    /// Writes queued messages to `sink` until every sender is gone, then
    /// flushes and shuts the sink down. Messages queued together are written
    /// with one vectored system call where the sink supports it, straight
    /// from the queued payloads: no copy, and no buffer kept while the
    /// connection is idle.
    pub async fn write_all<W: AsyncWrite + Unpin>(mut self, mut sink: W) -> std::io::Result<()> {
        let mut batch = Batch::default();
        let mut mac: Option<MacState> = None;
        while let Some(first) = self.rx.recv().await {
            batch.accept(first, &mut mac)?;
            while batch.frames.len() < BATCH_FRAMES && batch.remaining() < BATCH_BYTES {
                match self.rx.try_recv() {
                    Ok(queued) => batch.accept(queued, &mut mac)?,
                    Err(_) => break,
                }
            }
            if batch.frames.is_empty() {
                continue;
            }
            sink.write_all_buf(&mut batch).await?;
            sink.flush().await?;
            // Dropping the written frames gives their bytes back.
            batch.clear();
        }
        sink.shutdown().await
    }
}

/// Most messages written with one system call: each takes two of the 64
/// slices tokio hands to a vectored write.
const BATCH_FRAMES: usize = 32;
/// Most bytes gathered for one write.
const BATCH_BYTES: usize = 256 * 1024;

/// Frames on their way out: a header and a queued payload each, read as one
/// [`Buf`] from `frames[at]`, `offset` bytes in.
#[derive(Default)]
struct Batch {
    /// Each payload after its header (`zeo_protocol::frame::frame_header`:
    /// the length word, then the MAC on an authenticated connection).
    frames: Vec<(FrameHeader, Bytes, Charge)>,
    at: usize,
    offset: usize,
    remaining: usize,
}

impl Batch {
    /// Adds a queued payload, sealed when `mac` is set, or switches `mac`
    /// on.
    fn accept(&mut self, queued: Queued, mac: &mut Option<MacState>) -> std::io::Result<()> {
        match queued {
            Queued::Payload(payload, charge) => self.push(payload, charge, mac.as_mut()),
            Queued::StartMac(state) => {
                *mac = Some(*state);
                Ok(())
            }
        }
    }

    fn push(
        &mut self,
        payload: Bytes,
        charge: Charge,
        mac: Option<&mut MacState>,
    ) -> std::io::Result<()> {
        let header = zeo_protocol::frame::frame_header(&payload, mac)
            .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e))?;
        self.remaining += header.as_bytes().len() + payload.len();
        self.frames.push((header, payload, charge));
        Ok(())
    }

    fn clear(&mut self) {
        self.frames.clear();
        if self.frames.capacity() > BATCH_FRAMES {
            self.frames.shrink_to(BATCH_FRAMES);
        }
        self.at = 0;
        self.offset = 0;
        self.remaining = 0;
    }

    /// The unwritten part of frame `i`, whose first `skip` bytes are gone:
    /// header and payload as two slices.
    fn parts(&self, i: usize, skip: usize) -> [&[u8]; 2] {
        let (header, payload, _) = &self.frames[i];
        let header = header.as_bytes();
        if skip < header.len() {
            [&header[skip..], payload]
        } else {
            [&[], &payload[skip - header.len()..]]
        }
    }
}

impl Buf for Batch {
    fn remaining(&self) -> usize {
        self.remaining
    }

    fn chunk(&self) -> &[u8] {
        if self.at >= self.frames.len() {
            return &[];
        }
        let [header, payload] = self.parts(self.at, self.offset);
        if header.is_empty() {
            payload
        } else {
            header
        }
    }

    fn chunks_vectored<'a>(&'a self, dst: &mut [std::io::IoSlice<'a>]) -> usize {
        let mut n = 0;
        let mut skip = self.offset;
        for i in self.at..self.frames.len() {
            for part in self.parts(i, skip) {
                if part.is_empty() {
                    continue;
                }
                let Some(slot) = dst.get_mut(n) else {
                    return n;
                };
                *slot = std::io::IoSlice::new(part);
                n += 1;
            }
            skip = 0;
        }
        n
    }

    fn advance(&mut self, mut cnt: usize) {
        assert!(cnt <= self.remaining, "advanced past the end of a batch");
        self.remaining -= cnt;
        while cnt > 0 {
            let (header, payload, _) = &self.frames[self.at];
            let left = header.as_bytes().len() + payload.len() - self.offset;
            if cnt < left {
                self.offset += cnt;
                return;
            }
            cnt -= left;
            self.at += 1;
            self.offset = 0;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::pin::Pin;
    use std::task::{Context, Poll};

    /// A sink taking at most `step` bytes per write, vectored or not.
    struct Trickle {
        out: Vec<u8>,
        step: usize,
        vectored: bool,
        writes: usize,
    }

    impl AsyncWrite for Trickle {
        fn poll_write(
            mut self: Pin<&mut Self>,
            _: &mut Context<'_>,
            buf: &[u8],
        ) -> Poll<std::io::Result<usize>> {
            let n = buf.len().min(self.step);
            self.out.extend_from_slice(&buf[..n]);
            self.writes += 1;
            Poll::Ready(Ok(n))
        }

        fn poll_write_vectored(
            mut self: Pin<&mut Self>,
            _: &mut Context<'_>,
            bufs: &[std::io::IoSlice<'_>],
        ) -> Poll<std::io::Result<usize>> {
            let mut n = 0;
            for b in bufs {
                let take = b.len().min(self.step - n);
                self.out.extend_from_slice(&b[..take]);
                n += take;
                if n == self.step {
                    break;
                }
            }
            self.writes += 1;
            Poll::Ready(Ok(n))
        }

        fn is_write_vectored(&self) -> bool {
            self.vectored
        }

        fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
            Poll::Ready(Ok(()))
        }

        fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
            Poll::Ready(Ok(()))
        }
    }

    fn unlimited(budget: Arc<OutputBudget>) -> (Arc<Outbox>, OutboxReceiver) {
        Outbox::new(1, "test", Encoding::Pickle, OutboxLimits::UNLIMITED, budget)
    }

    async fn written(step: usize, vectored: bool, payloads: &[Vec<u8>]) -> (Vec<u8>, usize) {
        let budget = OutputBudget::new(0);
        let (outbox, receiver) = unlimited(budget.clone());
        for p in payloads {
            outbox.send_encoded(Bytes::from(p.clone()));
        }
        drop(outbox);
        let mut sink = Trickle {
            out: Vec::new(),
            step,
            vectored,
            writes: 0,
        };
        receiver.write_all(&mut sink).await.unwrap();
        assert_eq!(budget.queued(), 0);
        (sink.out, sink.writes)
    }

    #[tokio::test]
    async fn frames_go_out_whole_and_in_order_however_the_sink_splits_them() {
        let payloads: Vec<Vec<u8>> = (0..80u8)
            .map(|i| vec![i; (i as usize * 37) % 300])
            .chain([vec![9; 70_000], Vec::new()])
            .collect();
        let expected: Vec<u8> = payloads
            .iter()
            .flat_map(|p| zeo_protocol::encode_frame(p).unwrap())
            .collect();
        for step in [1, 3, 4, 5, 1000, usize::MAX] {
            for vectored in [false, true] {
                let (out, _) = written(step, vectored, &payloads).await;
                assert!(out == expected, "step {step}, vectored {vectored}");
            }
        }
    }

    #[tokio::test]
    async fn frames_after_start_mac_are_sealed_in_queue_order() {
        let key = zeo_auth::SessionKey::derive(&"a".repeat(40), "nonce").unwrap();
        let payloads: Vec<Vec<u8>> = (1..40u8).map(|i| vec![i; i as usize * 11]).collect();
        for (step, vectored) in [(usize::MAX, true), (7, true), (5, false)] {
            let (outbox, receiver) = unlimited(OutputBudget::new(0));
            outbox.send_encoded(Bytes::from_static(b"plain"));
            outbox.start_mac(MacState::new(&key));
            for p in &payloads {
                outbox.send_encoded(Bytes::from(p.clone()));
            }
            drop(outbox);
            let mut sink = Trickle {
                out: Vec::new(),
                step,
                vectored,
                writes: 0,
            };
            receiver.write_all(&mut sink).await.unwrap();
            let (first, mut rest) = zeo_protocol::decode_frame(&sink.out).unwrap();
            assert_eq!(first, b"plain");
            let mut opener = MacState::new(&key);
            for p in &payloads {
                let word = u32::from_be_bytes(rest[..4].try_into().unwrap());
                let body_len = zeo_auth::body_len(word);
                let body = &rest[4..4 + body_len];
                assert_eq!(opener.open_body(word, body).unwrap(), &p[..]);
                rest = &rest[4 + body_len..];
            }
            assert!(rest.is_empty());
        }
    }

    #[tokio::test]
    async fn queued_messages_share_a_vectored_write() {
        let payloads = vec![b"one".to_vec(), b"two".to_vec(), b"three".to_vec()];
        let (_, writes) = written(usize::MAX, true, &payloads).await;
        assert_eq!(writes, 1);
    }

    fn limited(pause: usize, budget: Arc<OutputBudget>) -> (Arc<Outbox>, OutboxReceiver) {
        let limits = OutboxLimits {
            pause,
            max_backlog: usize::MAX,
        };
        Outbox::new(1, "test", Encoding::Pickle, limits, budget)
    }

    #[tokio::test]
    async fn reserve_waits_until_the_writer_makes_room() {
        let budget = OutputBudget::new(0);
        let (outbox, receiver) = limited(100, budget.clone());
        outbox.send_encoded(Bytes::from(vec![1; 80]));
        assert!(!outbox.is_paused());
        // 80 queued + 30 would pass the 100-byte threshold.
        let mut reserve = Box::pin(outbox.reserve(30, usize::MAX));
        assert!(futures::poll!(reserve.as_mut()).is_pending());
        // A chunk that fits goes through at once.
        assert!(outbox.reserve(20, usize::MAX).await);
        let (sink, mut peer) = tokio::io::duplex(1024);
        let writer = tokio::spawn(receiver.write_all(sink));
        assert!(reserve.await);
        outbox.send_encoded(Bytes::from(vec![2; 30]));
        drop(outbox);
        writer.await.unwrap().unwrap();
        let mut out = Vec::new();
        tokio::io::AsyncReadExt::read_to_end(&mut peer, &mut out)
            .await
            .unwrap();
        assert_eq!(out.len(), 4 + 80 + 4 + 30);
        assert_eq!(budget.queued(), 0);
        // Reserving kept the queue within its threshold throughout.
        assert!(budget.peak() <= 100, "{}", budget.peak());
    }

    #[tokio::test]
    async fn a_message_larger_than_the_threshold_can_be_reserved_on_an_empty_queue() {
        let (outbox, _receiver) = limited(100, OutputBudget::new(0));
        assert!(outbox.reserve(1000, usize::MAX).await);
    }

    #[tokio::test]
    async fn reserve_and_pauses_end_when_the_connection_closes() {
        let (outbox, _receiver) = limited(10, OutputBudget::new(0));
        outbox.send_encoded(Bytes::from(vec![1; 50]));
        assert!(outbox.is_paused());
        let waiter = {
            let outbox = outbox.clone();
            tokio::spawn(async move { outbox.reserve(5, usize::MAX).await })
        };
        outbox.close();
        assert!(!waiter.await.unwrap());
        outbox.wait_unpaused().await;
    }

    #[tokio::test]
    async fn the_server_wide_budget_pauses_every_queue_until_it_drains() {
        let budget = OutputBudget::new(100);
        let (a, a_rx) = limited(usize::MAX, budget.clone());
        let (b, _b_rx) = limited(usize::MAX, budget.clone());
        let (idle, _idle_rx) = limited(usize::MAX, budget.clone());
        a.send_encoded(Bytes::from(vec![1; 150]));
        b.send_encoded(Bytes::from(vec![1; 10]));
        assert!(budget.is_exceeded());
        assert!(a.is_paused() && b.is_paused(), "both wait for the total");
        assert!(!idle.is_paused(), "an empty queue is not held back");
        assert!(idle.reserve(1000, usize::MAX).await);
        assert!(futures::poll!(Box::pin(b.reserve(1, usize::MAX))).is_pending());
        let resumed = {
            let b = b.clone();
            tokio::spawn(async move { b.wait_unpaused().await })
        };
        let (sink, mut peer) = tokio::io::duplex(1024);
        drop(a);
        a_rx.write_all(sink).await.unwrap();
        resumed.await.unwrap();
        assert!(!b.is_paused());
        assert_eq!(budget.queued(), 10);
        let mut out = Vec::new();
        tokio::io::AsyncReadExt::read_to_end(&mut peer, &mut out)
            .await
            .unwrap();
        assert_eq!(out.len(), 154);
    }

    #[tokio::test]
    async fn unwritten_messages_give_their_bytes_back() {
        let budget = OutputBudget::new(0);
        let (outbox, receiver) = limited(usize::MAX, budget.clone());
        outbox.send_encoded(Bytes::from(vec![1; 70]));
        drop(receiver);
        assert_eq!(budget.queued(), 0, "dropped with the writer");
        // Queued after the writer is gone: refused, and given back.
        outbox.send_encoded(Bytes::from(vec![1; 30]));
        assert_eq!(budget.queued(), 0);
        assert_eq!(outbox.backlog(), 0);
        assert!(outbox.is_closed());
    }

    #[test]
    fn a_queue_past_max_backlog_is_closed() {
        let budget = OutputBudget::new(0);
        let limits = OutboxLimits {
            pause: 10,
            max_backlog: 100,
        };
        let (outbox, _receiver) = Outbox::new(1, "test", Encoding::Pickle, limits, budget.clone());
        outbox.send_encoded(Bytes::from(vec![1; 60]));
        assert!(!outbox.is_closed());
        outbox.send_encoded(Bytes::from(vec![1; 60]));
        assert!(outbox.is_closed());
        assert_eq!(budget.queued(), 60, "the refused message is not counted");
    }

    #[tokio::test]
    async fn replies_in_preparation_pause_reading_until_they_are_queued() {
        let (outbox, _receiver) = limited(usize::MAX, OutputBudget::new(0));
        let guards: Vec<_> = (0..MAX_PENDING_REPLIES)
            .map(|_| outbox.pending_reply())
            .collect();
        assert!(outbox.is_paused());
        let resumed = {
            let outbox = outbox.clone();
            tokio::spawn(async move { outbox.wait_unpaused().await })
        };
        drop(guards);
        resumed.await.unwrap();
        assert!(!outbox.is_paused());
    }

    fn reply_of(len: usize) -> Message {
        Reply::value(Value::Int(1), Value::Bytes(vec![0; len]))
    }

    #[test]
    fn one_reply_larger_than_max_backlog_goes_out_but_a_stuck_queue_is_closed() {
        let budget = OutputBudget::new(0);
        let limits = OutboxLimits {
            pause: 10,
            max_backlog: 100,
        };
        let (outbox, _receiver) = Outbox::new(1, "test", Encoding::Pickle, limits, budget);
        // A big object's reply on an empty queue is what the client asked for.
        outbox.send(&reply_of(1000));
        assert!(!outbox.is_closed());
        // An invalidation behind it is not held against the client ...
        outbox.send_encoded(Bytes::from(vec![1; 60]));
        assert!(!outbox.is_closed());
        // ... but once such messages alone pass the cap, it is stuck.
        outbox.send_encoded(Bytes::from(vec![1; 60]));
        assert!(outbox.is_closed());
    }

    #[test]
    fn a_reply_behind_a_queue_over_max_backlog_closes_it() {
        let limits = OutboxLimits {
            pause: usize::MAX,
            max_backlog: 100,
        };
        let (outbox, _receiver) =
            Outbox::new(1, "test", Encoding::Pickle, limits, OutputBudget::new(0));
        outbox.send(&reply_of(150));
        assert!(!outbox.is_closed());
        outbox.send(&reply_of(10));
        assert!(outbox.is_closed());
    }
}
