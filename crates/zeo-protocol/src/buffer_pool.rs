//! Buffers for encoded messages, used again once the messages are sent.
//!
//! A blob transfer encodes about a megabyte of messages at a time (16
//! chunks of 59,000 bytes) and queues them for the connection's writer. A
//! fresh buffer per megabyte is faulted in page by page and, once freed,
//! handed back to the kernel by the allocator: measured on a 100 MB
//! transfer, about a third of the sender's work. A [`BufferPool`] gives
//! each buffer back when the last message sliced from it is dropped (sent),
//! so a transfer cycles through as many buffers as its queue lets wait.
//! The pool goes with its owner (one transfer); buffers still queued then
//! are freed when sent.

use std::sync::{Arc, Mutex, MutexGuard, Weak};

use bytes::Bytes;

type Free = Mutex<Vec<Vec<u8>>>;

/// Buffers given back by sent messages.
///
/// ```
/// use zeo_protocol::buffer_pool::BufferPool;
///
/// let pool = BufferPool::default();
/// let mut buf = pool.take(1 << 20);
/// buf.extend_from_slice(b"two messages");
/// let first = buf.as_ptr();
/// let shared = pool.shared(buf);
/// let (a, b) = (shared.slice(..3), shared.slice(4..));
/// drop((shared, a, b)); // sent
/// assert_eq!(pool.take(1 << 20).as_ptr(), first);
/// ```
#[derive(Debug, Default)]
pub struct BufferPool(Arc<Free>);

impl BufferPool {
    /// An empty buffer with room for `capacity` bytes: one given back, or
    /// a new one.
    pub fn take(&self, capacity: usize) -> Vec<u8> {
        let mut buf = lock(&self.0).pop().unwrap_or_default();
        buf.reserve(capacity);
        buf
    }

    /// `buf` as shared bytes to slice messages from; it comes back to the
    /// pool when the last of them is dropped, if the pool is still there.
    pub fn shared(&self, buf: Vec<u8>) -> Bytes {
        Bytes::from_owner(Pooled {
            buf,
            pool: Arc::downgrade(&self.0),
        })
    }

    /// How many buffers wait to be taken.
    pub fn idle(&self) -> usize {
        lock(&self.0).len()
    }
}

fn lock(free: &Free) -> MutexGuard<'_, Vec<Vec<u8>>> {
    free.lock().unwrap_or_else(|e| e.into_inner())
}

/// A pooled buffer on its way out.
struct Pooled {
    buf: Vec<u8>,
    pool: Weak<Free>,
}

impl AsRef<[u8]> for Pooled {
    fn as_ref(&self) -> &[u8] {
        &self.buf
    }
}

impl Drop for Pooled {
    fn drop(&mut self) {
        if let Some(pool) = self.pool.upgrade() {
            let mut buf = std::mem::take(&mut self.buf);
            buf.clear();
            lock(&pool).push(buf);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_buffer_comes_back_only_when_its_last_message_is_dropped() {
        let pool = BufferPool::default();
        let mut buf = pool.take(1000);
        buf.extend_from_slice(&[1; 1000]);
        let shared = pool.shared(buf);
        let (a, b) = (shared.slice(..500), shared.slice(500..));
        drop(shared);
        drop(a);
        assert_eq!(pool.idle(), 0, "a message of the buffer is still queued");
        drop(b);
        assert_eq!(pool.idle(), 1);
        let again = pool.take(1000);
        assert!(again.is_empty() && again.capacity() >= 1000);
        // Once the pool is gone, buffers still queued are just freed.
        let late = pool.shared(again);
        drop(pool);
        drop(late);
    }
}
