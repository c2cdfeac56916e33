//! Where the server runs a storage's calls: right on the connection's
//! runtime worker, or on a thread that may block.
//!
//! The rule follows [`Storage::may_block`]. A backend that never blocks
//! (FileStorage, MappingStorage) has its reads and its small transactions'
//! vote, finish and abort run inline: they touch memory, the page cache and
//! one fsync, and a round trip through the blocking pool would cost more
//! than the call. Every call of a backend that may block (a network
//! database, a synchronous driver that refuses to run inside an async
//! context) goes to the blocking pool, or, outside any pool, to a thread of
//! its own. The cheap accessors (`name`, `is_read_only`, `size`, `len`,
//! `last_transaction`, the capability accessors) run inline for every
//! backend: the trait requires them to answer from memory.

use std::sync::Arc;

use tokio::runtime::{Handle, RuntimeFlavor};
use zeo_pickle::Value;
use zeo_protocol::WireError;
use zeo_storage::Storage;

use crate::hub::StorageHub;
use crate::outbox::Outbox;

/// Whether a call may run on the current runtime worker: the backend never
/// blocks, the call is `small` (bounded work), and other workers can take
/// over this one's tasks meanwhile (a multi-threaded runtime).
pub(crate) fn may_run_inline(storage: &dyn Storage, small: bool) -> bool {
    small
        && !storage.may_block()
        && Handle::try_current().is_ok_and(|h| h.runtime_flavor() == RuntimeFlavor::MultiThread)
}

/// A storage call that panicked.
#[derive(Debug)]
pub(crate) struct Panicked(String);

impl std::fmt::Display for Panicked {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "storage call panicked: {}", self.0)
    }
}

impl std::error::Error for Panicked {}

fn describe(payload: Box<dyn std::any::Any + Send>) -> Panicked {
    let text = payload
        .downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "unknown cause".to_owned());
    Panicked(text)
}

/// Runs a storage call of a transaction under the commit lock (vote,
/// finish, abort), which may wait for the disk.
///
/// When [`may_run_inline`] allows it the call runs right here: it writes a
/// bounded amount to the page cache at vote and syncs it once at finish,
/// and while it does, the runtime's other workers take over the tasks
/// queued on this one. Commits are latency-bound, and a trip to the
/// blocking pool and back costs two thread wake-ups per call, more than
/// the call itself at vote and a quarter of a small commit in all.
/// Everything else goes to the blocking pool. A panic comes back as an
/// error either way, so the connection still cleans up.
pub(crate) async fn run_storage<F, R>(inline: bool, f: F) -> Result<R, Panicked>
where
    F: FnOnce() -> R + Send + 'static,
    R: Send + 'static,
{
    if inline {
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

/// A read request's storage call, producing its reply.
pub(crate) type Read = Box<dyn FnOnce(&dyn Storage) -> Result<Value, WireError> + Send>;

/// Answers a read request of a backend that may block: runs `read` on the
/// blocking pool and queues its reply (none for a one-way call) from there.
/// With `published`, the read and the queuing of its reply happen under the
/// hub's shared publication lock, so that no commit's invalidations can
/// fall between them (the ordering invariant that `loadBefore` keeps).
pub(crate) fn reply_from_blocking(
    hub: Arc<StorageHub>,
    outbox: Arc<Outbox>,
    msgid: Value,
    oneway: bool,
    published: bool,
    read: Read,
) {
    let pending = outbox.pending_reply();
    tokio::task::spawn_blocking(move || {
        let _pending = pending;
        let guard = published.then(|| hub.read_publication());
        let result =
            std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| read(&**hub.storage())))
                .unwrap_or_else(|payload| {
                    let err = describe(payload);
                    tracing::error!(%err, "storage read failed");
                    Err(WireError::storage_error(&err.to_string()))
                });
        if !oneway {
            match result {
                Ok(value) => outbox.reply(msgid, value),
                Err(err) => outbox.reply_error(msgid, &err),
            }
        }
        drop(guard);
    });
}

/// Runs `f`, a call into `storage` made outside any connection (at start),
/// where a backend that may block is allowed to: on a thread of its own when
/// the caller is inside an async runtime, in place otherwise.
pub(crate) fn off_runtime<R: Send>(storage: &dyn Storage, f: impl FnOnce() -> R + Send) -> R {
    if !storage.may_block() || Handle::try_current().is_err() {
        return f();
    }
    std::thread::scope(|scope| match scope.spawn(f).join() {
        Ok(r) => r,
        Err(payload) => std::panic::resume_unwind(payload),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use zeo_storage::MappingStorage;

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

    #[tokio::test(flavor = "current_thread")]
    async fn storage_calls_on_a_current_thread_runtime() {
        // No other worker could take over: nothing runs inline.
        assert!(!may_run_inline(&MappingStorage::new("m"), true));
        panics_come_back_as_errors(false).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn only_small_calls_of_backends_that_never_block_run_inline() {
        let never_blocks = MappingStorage::new("m");
        assert!(may_run_inline(&never_blocks, true));
        assert!(!may_run_inline(&never_blocks, false));
        // Backends that may block: tests/blocking_backend.rs.
    }
}
