//! The outgoing side of a connection: one ordered queue of encoded messages
//! and the writer task that drains it.
//!
//! Replies, invalidations and `info` messages all travel through the same
//! queue, so the order in which the server decides to send them is the order
//! the client receives them. Queuing never waits: a commit publishing
//! invalidations must not stall on a slow client. Instead the queue's size
//! is bounded in bytes, and a client that lets it overflow is disconnected.
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
use zeo_auth::{MacState, MAC_LEN};
use zeo_pickle::Value;
use zeo_protocol::{Encoding, Marshaller, Message, Reply, WireError};

use crate::commit_lock::ConnId;

/// Encodes a message for a client speaking `encoding`.
pub fn encode(encoding: Encoding, message: &Message) -> Result<Bytes, zeo_protocol::Error> {
    Marshaller::server(encoding)
        .encode(message)
        .map(Bytes::from)
}

/// The queue of messages for one client.
#[derive(Debug)]
pub struct Outbox {
    conn: ConnId,
    encoding: Encoding,
    tx: mpsc::UnboundedSender<Queued>,
    backlog: Arc<AtomicUsize>,
    max_backlog: usize,
    closed: AtomicBool,
    close_notify: Notify,
}

/// What the writer task needs.
#[derive(Debug)]
pub struct OutboxReceiver {
    rx: mpsc::UnboundedReceiver<Queued>,
    backlog: Arc<AtomicUsize>,
}

/// What travels from the outbox to the writer task.
enum Queued {
    /// An encoded message, without its length word.
    Payload(Bytes),
    /// Seal every later payload with this MAC chain.
    StartMac(Box<MacState>),
}

impl std::fmt::Debug for Queued {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Queued::Payload(p) => write!(f, "Payload({} bytes)", p.len()),
            Queued::StartMac(_) => f.write_str("StartMac"),
        }
    }
}

impl Outbox {
    /// A queue for connection `conn`, and its receiving end for the writer.
    pub fn new(
        conn: ConnId,
        encoding: Encoding,
        max_backlog: usize,
    ) -> (Arc<Self>, OutboxReceiver) {
        let (tx, rx) = mpsc::unbounded_channel();
        let backlog = Arc::new(AtomicUsize::new(0));
        let outbox = Arc::new(Outbox {
            conn,
            encoding,
            tx,
            backlog: backlog.clone(),
            max_backlog,
            closed: AtomicBool::new(false),
            close_notify: Notify::new(),
        });
        (outbox, OutboxReceiver { rx, backlog })
    }

    /// The connection this queue belongs to.
    pub fn conn(&self) -> ConnId {
        self.conn
    }

    /// The encoding the client chose.
    pub fn encoding(&self) -> Encoding {
        self.encoding
    }

    /// Queues an already encoded message (payload without length prefix).
    pub fn send_encoded(&self, payload: Bytes) {
        if self.is_closed() {
            return;
        }
        let len = payload.len();
        let queued = self.backlog.fetch_add(len, Ordering::AcqRel) + len;
        if queued > self.max_backlog {
            tracing::warn!(
                conn = self.conn,
                queued,
                "client does not read its messages; disconnecting"
            );
            self.close();
            return;
        }
        if self.tx.send(Queued::Payload(payload)).is_err() {
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
            Ok(frame) => self.send_encoded(frame),
            Err(err) => {
                tracing::error!(conn = self.conn, %err, method = %message.method, "unencodable message");
                if message.is_reply() {
                    let fallback =
                        Reply::error(message.msgid.clone(), &WireError::unencodable_reply());
                    if let Ok(frame) = encode(self.encoding, &fallback) {
                        self.send_encoded(frame);
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
            let drained = batch.payload_bytes;
            sink.write_all_buf(&mut batch).await?;
            sink.flush().await?;
            batch.clear();
            self.backlog.fetch_sub(drained, Ordering::AcqRel);
        }
        sink.shutdown().await
    }
}

/// Most messages written with one system call: each takes two of the 64
/// slices tokio hands to a vectored write.
const BATCH_FRAMES: usize = 32;
/// Most bytes gathered for one write.
const BATCH_BYTES: usize = 256 * 1024;

/// The bytes before a payload: its length word, then its MAC on an
/// authenticated connection.
struct Header {
    bytes: [u8; 4 + MAC_LEN],
    len: usize,
}

impl Header {
    fn as_slice(&self) -> &[u8] {
        &self.bytes[..self.len]
    }
}

/// Frames on their way out: a header and a queued payload each, read as one
/// [`Buf`] from `frames[at]`, `offset` bytes in.
#[derive(Default)]
struct Batch {
    frames: Vec<(Header, Bytes)>,
    at: usize,
    offset: usize,
    remaining: usize,
    payload_bytes: usize,
}

impl Batch {
    /// Adds a queued payload, sealed when `mac` is set, or switches `mac`
    /// on.
    fn accept(&mut self, queued: Queued, mac: &mut Option<MacState>) -> std::io::Result<()> {
        match queued {
            Queued::Payload(payload) => self.push(payload, mac.as_mut()),
            Queued::StartMac(state) => {
                *mac = Some(*state);
                Ok(())
            }
        }
    }

    fn push(&mut self, payload: Bytes, mac: Option<&mut MacState>) -> std::io::Result<()> {
        let mut header = Header {
            bytes: [0; 4 + MAC_LEN],
            len: 4,
        };
        match mac {
            Some(mac) => {
                header.bytes = mac
                    .seal_header(&payload)
                    .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e))?;
                header.len = header.bytes.len();
            }
            None => {
                let len = u32::try_from(payload.len()).map_err(|_| {
                    std::io::Error::new(std::io::ErrorKind::InvalidData, "message over 4 GiB")
                })?;
                header.bytes[..4].copy_from_slice(&len.to_be_bytes());
            }
        }
        self.remaining += header.len + payload.len();
        self.payload_bytes += payload.len();
        self.frames.push((header, payload));
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
        self.payload_bytes = 0;
    }

    /// The unwritten part of frame `i`, whose first `skip` bytes are gone:
    /// header and payload as two slices.
    fn parts(&self, i: usize, skip: usize) -> [&[u8]; 2] {
        let (header, payload) = &self.frames[i];
        let header = header.as_slice();
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
            let (header, payload) = &self.frames[self.at];
            let left = header.len + payload.len() - self.offset;
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

    async fn written(step: usize, vectored: bool, payloads: &[Vec<u8>]) -> (Vec<u8>, usize) {
        let (outbox, receiver) = Outbox::new(1, Encoding::Pickle, usize::MAX);
        for p in payloads {
            outbox.send_encoded(Bytes::from(p.clone()));
        }
        let backlog = receiver.backlog.clone();
        drop(outbox);
        let mut sink = Trickle {
            out: Vec::new(),
            step,
            vectored,
            writes: 0,
        };
        receiver.write_all(&mut sink).await.unwrap();
        assert_eq!(backlog.load(Ordering::Acquire), 0);
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
            let (outbox, receiver) = Outbox::new(1, Encoding::Pickle, usize::MAX);
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
}
