//! Group commit's queue: transactions whose finish was submitted (written,
//! status flipped, commit lock released) wait here for the fsync that
//! covers them, then are published to readers one at a time in commit
//! order.
//!
//! Whoever waits first while no fsync runs syncs for everyone submitted so
//! far, after gathering: waiting, bounded, for the transactions that are
//! being committed meanwhile (those the caller said are coming, or one
//! holding the commit lock); the others wait for it. Sequence numbers are
//! the commit order: `synced` and `published` are watermarks over them.
//!
//! Finishing threads are woken one at a time, each when it is its turn
//! (parked, and unparked by the thread whose step makes it next): the
//! gathering leader by a submit or a change of what is coming, the first
//! unpublished transaction's thread by the fsync that covered it or by the
//! publication before it, the first uncovered one's by the end of an fsync,
//! to lead the next. Waking every finishing thread at each step, as one
//! condition variable would, costs a context switch per thread per step:
//! with eight committers, most of the server's time per commit. The rarer
//! waits (a store on a pending object, work that needs everything
//! published) use the condition variable.

use std::collections::{HashMap, VecDeque};
use std::sync::{Condvar, Mutex, MutexGuard, PoisonError};
use std::thread::{self, Thread};
use std::time::Duration;

use crate::ids::Tid;
use crate::interface::TxnHandle;

/// A submitted transaction that is not yet visible to readers.
#[derive(Debug)]
pub(crate) struct Pending {
    pub(crate) handle: TxnHandle,
    pub(crate) seq: u64,
    pub(crate) tid: Tid,
    /// Where its header starts.
    pub(crate) base: u64,
    /// The committed size once it is published.
    pub(crate) next_pos: u64,
    /// (oid, record position) in index update order.
    pub(crate) updates: Vec<(u64, u64)>,
    /// The thread waiting for it to be durable, once one is.
    pub(crate) waiter: Option<Thread>,
}

/// The queue's state, under [`SyncGroup::lock`].
#[derive(Debug, Default)]
pub(crate) struct Queue {
    /// Submitted, unpublished transactions, in commit order.
    pub(crate) pending: VecDeque<Pending>,
    /// oid → how many pending transactions write it.
    oids: HashMap<u64, usize>,
    next_seq: u64,
    /// Every transaction numbered below this is durable.
    pub(crate) synced: u64,
    /// Every transaction numbered below this is published.
    pub(crate) published: u64,
    /// An fsync is running.
    pub(crate) syncing: bool,
    /// Set when a covering fsync failed: where the file was cut back to.
    /// Nothing is synced or published after that.
    pub(crate) failed_at: Option<u64>,
    /// Successful data-file fsyncs of the commit path.
    pub(crate) fsyncs: u64,
    /// How long the last of them took: how long a leader waits, at most,
    /// to gather a transaction that is being committed when nobody said
    /// how many are coming.
    pub(crate) last_sync: Duration,
    /// How many transactions the caller said will be submitted soon
    /// (`Storage::commits_coming`): a leader gathers while it is above
    /// zero.
    pub(crate) coming: usize,
    /// A leader is gathering: the others wait for its fsync.
    pub(crate) gathering: bool,
    /// Threads waiting for a pending transaction to be published before
    /// they can go on (`wait_for_oid`): a commit that is coming may be one
    /// of them, so a leader stops gathering.
    pub(crate) oid_waiters: usize,
    /// Replaces [`MAX_GATHER`] (tests).
    pub(crate) max_gather: Option<Duration>,
    /// The gathering leader's thread.
    pub(crate) gatherer: Option<Thread>,
    /// Threads waiting on the condition variable.
    cv_waiters: usize,
}

/// The longest a leader waits to gather, however slow the disk.
pub(crate) const MAX_GATHER: Duration = Duration::from_millis(1);

impl Queue {
    /// Queues a transaction; returns its sequence number.
    pub(crate) fn submit(
        &mut self,
        handle: TxnHandle,
        tid: Tid,
        base: u64,
        next_pos: u64,
        updates: Vec<(u64, u64)>,
    ) -> u64 {
        let seq = self.next_seq;
        self.next_seq += 1;
        for (oid, _) in &updates {
            *self.oids.entry(*oid).or_default() += 1;
        }
        self.pending.push_back(Pending {
            handle,
            seq,
            tid,
            base,
            next_pos,
            updates,
            waiter: None,
        });
        seq
    }

    /// Wakes the gathering leader: something it waits for changed.
    pub(crate) fn wake_gatherer(&self) {
        if let Some(t) = &self.gatherer {
            t.unpark();
        }
    }

    /// Wakes the first unpublished transaction's thread: its turn to
    /// publish, once it is durable.
    pub(crate) fn wake_front(&self) {
        if let Some(t) = self.pending.front().and_then(|p| p.waiter.as_ref()) {
            t.unpark();
        }
    }

    /// Wakes the first waiting thread of a transaction numbered `seq` or
    /// later: not covered by the fsync that just ended, it leads the next.
    pub(crate) fn wake_first_from(&self, seq: u64) {
        let next = self
            .pending
            .iter()
            .filter(|p| p.seq >= seq)
            .find_map(|p| p.waiter.as_ref());
        if let Some(t) = next {
            t.unpark();
        }
    }

    /// Wakes every finishing thread (a failure ends all their waits).
    pub(crate) fn wake_all(&self) {
        self.wake_gatherer();
        for t in self.pending.iter().filter_map(|p| p.waiter.as_ref()) {
            t.unpark();
        }
    }

    /// The number the next submitted transaction gets.
    pub(crate) fn next_seq(&self) -> u64 {
        self.next_seq
    }

    /// The end and tid of the last submitted transaction still pending.
    pub(crate) fn tail(&self) -> Option<(u64, Tid)> {
        self.pending.back().map(|p| (p.next_pos, p.tid))
    }

    /// Whether a pending transaction writes `oid`.
    pub(crate) fn touches(&self, oid: u64) -> bool {
        self.oids.contains_key(&oid)
    }

    pub(crate) fn find_mut(&mut self, handle: TxnHandle) -> Option<&mut Pending> {
        self.pending.iter_mut().find(|p| p.handle == handle)
    }

    /// Takes `handle`'s transaction out of the queue.
    pub(crate) fn remove(&mut self, handle: TxnHandle) -> Option<Pending> {
        let at = self.pending.iter().position(|p| p.handle == handle)?;
        let p = self.pending.remove(at)?;
        for (oid, _) in &p.updates {
            if let Some(n) = self.oids.get_mut(oid) {
                *n -= 1;
                if *n == 0 {
                    self.oids.remove(oid);
                }
            }
        }
        Some(p)
    }

    /// Where the file is cut back to when the fsync that was to cover
    /// every transaction from `synced` on fails: the first of them.
    pub(crate) fn first_unsynced_base(&self) -> Option<u64> {
        self.pending
            .iter()
            .find(|p| p.seq >= self.synced)
            .map(|p| p.base)
    }
}

/// The queue and the condition its waiters wait on.
#[derive(Debug, Default)]
pub(crate) struct SyncGroup {
    queue: Mutex<Queue>,
    changed: Condvar,
}

impl SyncGroup {
    pub(crate) fn lock(&self) -> MutexGuard<'_, Queue> {
        self.queue.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Waits on the condition variable until [`SyncGroup::notify`].
    pub(crate) fn wait<'a>(&self, mut q: MutexGuard<'a, Queue>) -> MutexGuard<'a, Queue> {
        q.cv_waiters += 1;
        let mut q = self.changed.wait(q).unwrap_or_else(PoisonError::into_inner);
        q.cv_waiters -= 1;
        q
    }

    /// Wakes the threads waiting on the condition variable, if any: for
    /// every change of the pending transactions or a failure.
    pub(crate) fn notify(&self, q: &Queue) {
        if q.cv_waiters > 0 {
            self.changed.notify_all();
        }
    }

    /// Lets go of the queue until this thread is unparked (or, rarely, for
    /// no reason: callers check again).
    pub(crate) fn park<'a>(&'a self, q: MutexGuard<'a, Queue>) -> MutexGuard<'a, Queue> {
        drop(q);
        thread::park();
        self.lock()
    }

    /// [`SyncGroup::park`] for at most `limit`.
    pub(crate) fn park_timeout<'a>(
        &'a self,
        q: MutexGuard<'a, Queue>,
        limit: Duration,
    ) -> MutexGuard<'a, Queue> {
        drop(q);
        thread::park_timeout(limit);
        self.lock()
    }

    /// Waits until `done` holds or the group failed; `false` on failure.
    pub(crate) fn wait_until(&self, mut done: impl FnMut(&Queue) -> bool) -> bool {
        let mut q = self.lock();
        loop {
            if done(&q) {
                return true;
            }
            if q.failed_at.is_some() {
                return false;
            }
            q = self.wait(q);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_queue_tracks_oids_tail_and_the_first_unsynced_transaction() {
        let mut q = Queue::default();
        assert_eq!(q.tail(), None);
        let a = q.submit(TxnHandle(1), Tid(5), 100, 200, vec![(1, 123), (2, 150)]);
        let b = q.submit(TxnHandle(2), Tid(6), 200, 300, vec![(2, 250)]);
        assert_eq!((a, b, q.next_seq()), (0, 1, 2));
        assert_eq!(q.tail(), Some((300, Tid(6))));
        assert!(q.touches(1) && q.touches(2) && !q.touches(3));
        q.synced = 1;
        assert_eq!(q.first_unsynced_base(), Some(200));
        assert_eq!(q.remove(TxnHandle(1)).map(|p| p.seq), Some(0));
        assert!(!q.touches(1) && q.touches(2));
        assert!(q.find_mut(TxnHandle(1)).is_none() && q.find_mut(TxnHandle(2)).is_some());
        q.remove(TxnHandle(2));
        assert!(!q.touches(2));
        assert_eq!(q.tail(), None);
    }
}
