//! The outgoing side of a connection: one ordered queue of encoded messages
//! and the writer task that drains it.
//!
//! Replies, invalidations and `info` messages all travel through the same
//! queue, so the order in which the server decides to send them is the order
//! the client receives them. Queuing never waits: a commit publishing
//! invalidations must not stall on a slow client. Instead the queue's size
//! is bounded in bytes, and a client that lets it overflow is disconnected.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;

use bytes::{BufMut, Bytes, BytesMut};
use tokio::io::{AsyncWrite, AsyncWriteExt};
use tokio::sync::{mpsc, Notify};
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
    tx: mpsc::UnboundedSender<Bytes>,
    backlog: Arc<AtomicUsize>,
    max_backlog: usize,
    closed: AtomicBool,
    close_notify: Notify,
}

/// What the writer task needs.
#[derive(Debug)]
pub struct OutboxReceiver {
    rx: mpsc::UnboundedReceiver<Bytes>,
    backlog: Arc<AtomicUsize>,
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
        if self.tx.send(payload).is_err() {
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
    /// with one system call.
    pub async fn write_all<W: AsyncWrite + Unpin>(mut self, mut sink: W) -> std::io::Result<()> {
        const BATCH: usize = 256 * 1024;
        let mut buf = BytesMut::with_capacity(64 * 1024);
        while let Some(first) = self.rx.recv().await {
            let mut drained = 0;
            let mut next = Some(first);
            while let Some(payload) = next.take() {
                drained += payload.len();
                let len = u32::try_from(payload.len()).map_err(|_| {
                    std::io::Error::new(std::io::ErrorKind::InvalidData, "message over 4 GiB")
                })?;
                buf.put_u32(len);
                if payload.len() >= BATCH {
                    sink.write_all(&buf).await?;
                    buf.clear();
                    sink.write_all(&payload).await?;
                } else {
                    buf.extend_from_slice(&payload);
                }
                if buf.len() < BATCH {
                    next = self.rx.try_recv().ok();
                }
            }
            if !buf.is_empty() {
                sink.write_all(&buf).await?;
                buf.clear();
            }
            sink.flush().await?;
            self.backlog.fetch_sub(drained, Ordering::AcqRel);
        }
        sink.shutdown().await
    }
}
