//! The per-storage commit lock that ZEO takes at `vote`.
//!
//! One transaction at a time may replay its buffered writes into the storage
//! and hold the storage's own commit lock through `tpc_finish`. Votes that
//! find the lock taken wait in arrival order; their replies are deferred, not
//! refused. Ownership is a guard: dropping it (finish, abort, disconnect,
//! timeout or a cancelled task) always hands the lock on, so a vanished client
//! can never wedge the storage.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Instant, SystemTime};

use tokio::sync::oneshot;

/// Identifies one client connection for the lifetime of the server.
pub type ConnId = u64;

/// Waiting queues longer than this are logged as a warning, as ZEO does.
const WARN_WAITING: usize = 3;
/// Waiting queues longer than this are logged as an error.
const ERROR_WAITING: usize = 9;

/// A FIFO commit lock shared by every connection to one storage.
#[derive(Debug, Default)]
pub struct CommitLock {
    state: Mutex<LockState>,
    /// How long queued votes waited for the lock (the metrics endpoint's
    /// commit-lock waits).
    waits: crate::stats::Histogram,
    /// Told how many transactions hold or wait for the lock whenever that
    /// changes.
    observer: Option<Observer>,
}

/// What [`CommitLock::observed`] calls with the number of transactions
/// holding or waiting for the lock.
pub type ObserverFn = Box<dyn Fn(usize) + Send + Sync>;

struct Observer(ObserverFn);

impl std::fmt::Debug for Observer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Observer")
    }
}

#[derive(Debug, Default)]
struct LockState {
    holder: Option<Holder>,
    waiters: VecDeque<Waiter>,
}

#[derive(Debug, Clone, Copy)]
struct Holder {
    conn: ConnId,
    since: SystemTime,
}

#[derive(Debug)]
struct Waiter {
    conn: ConnId,
    grant: oneshot::Sender<()>,
}

/// Holding this means holding the commit lock; dropping it releases the lock
/// to the first waiter still waiting.
#[derive(Debug)]
#[must_use = "dropping the guard releases the commit lock at once"]
pub struct CommitGuard {
    lock: Arc<CommitLock>,
    conn: ConnId,
}

/// A place in the commit lock's queue. Awaiting [`LockWait::granted`] yields
/// the guard once every earlier waiter is done; dropping the wait leaves the
/// queue (and passes the lock on if it had just been granted).
#[derive(Debug)]
pub struct LockWait {
    lock: Arc<CommitLock>,
    conn: ConnId,
    rx: oneshot::Receiver<()>,
    settled: bool,
    queued: Instant,
}

/// What [`CommitLock::acquire`] found.
#[derive(Debug)]
pub enum Acquired {
    /// The lock was free and is now ours.
    Now(CommitGuard),
    /// Another connection holds it; we are queued.
    Queued(LockWait),
}

impl CommitLock {
    /// A free lock.
    pub fn new() -> Arc<Self> {
        Arc::new(Self::default())
    }

    /// A free lock that calls `observer` with the number of transactions
    /// holding or waiting for it each time that number changes, under the
    /// lock's own mutex so that the calls come in order. With group commit
    /// a server tells its storage so ([`zeo_storage::Storage::commits_coming`]):
    /// the lock is released at submit, so each of them will submit soon.
    pub fn observed(observer: ObserverFn) -> Arc<Self> {
        Arc::new(CommitLock {
            observer: Some(Observer(observer)),
            ..Self::default()
        })
    }

    /// Tells the observer the current number of transactions.
    fn observe(&self, state: &LockState) {
        if let Some(Observer(f)) = &self.observer {
            f(usize::from(state.holder.is_some()) + state.waiters.len());
        }
    }

    fn state(&self) -> MutexGuard<'_, LockState> {
        // The state stays consistent at every await-free step, so a panic
        // elsewhere while holding the mutex cannot leave it half-updated.
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Takes the lock for `conn` if it is free, else queues `conn` behind the
    /// current waiters.
    pub fn acquire(self: &Arc<Self>, conn: ConnId) -> Acquired {
        let mut state = self.state();
        if state.holder.is_none() {
            state.holder = Some(Holder {
                conn,
                since: SystemTime::now(),
            });
            log_waiting("lock", conn, state.waiters.len());
            self.observe(&state);
            return Acquired::Now(CommitGuard::new(self.clone(), conn));
        }
        let (grant, rx) = oneshot::channel();
        state.waiters.push_back(Waiter { conn, grant });
        log_waiting("queue lock", conn, state.waiters.len());
        self.observe(&state);
        Acquired::Queued(LockWait {
            lock: self.clone(),
            conn,
            rx,
            settled: false,
            queued: Instant::now(),
        })
    }

    /// The connection holding the lock.
    #[cfg(test)]
    pub fn holder(&self) -> Option<ConnId> {
        self.state().holder.map(|h| h.conn)
    }

    /// When the current holder took the lock.
    pub fn locked_since(&self) -> Option<SystemTime> {
        self.state().holder.map(|h| h.since)
    }

    /// How long votes that found the lock taken waited for it.
    pub fn waits(&self) -> &crate::stats::Histogram {
        &self.waits
    }

    /// How many votes are queued.
    pub fn waiting(&self) -> usize {
        self.state().waiters.len()
    }

    /// Whether `conn` is queued.
    #[cfg(test)]
    pub fn is_waiting(&self, conn: ConnId) -> bool {
        self.state().waiters.iter().any(|w| w.conn == conn)
    }

    fn release(&self, conn: ConnId) {
        let mut state = self.state();
        match state.holder {
            Some(h) if h.conn == conn => {}
            other => {
                // Only a guard releases, and a guard exists once per grant.
                tracing::error!(conn, holder = ?other.map(|h| h.conn), "commit lock released by a non-holder");
                return;
            }
        }
        state.holder = None;
        // Hand over under the mutex so a waiter that gives up concurrently
        // either is still queued (and removes itself) or sees its grant.
        while let Some(next) = state.waiters.pop_front() {
            state.holder = Some(Holder {
                conn: next.conn,
                since: SystemTime::now(),
            });
            if next.grant.send(()).is_ok() {
                log_waiting("unlock: lock handed over", next.conn, state.waiters.len());
                self.observe(&state);
                return;
            }
            state.holder = None;
        }
        self.observe(&state);
    }
}

impl CommitGuard {
    fn new(lock: Arc<CommitLock>, conn: ConnId) -> Self {
        CommitGuard { lock, conn }
    }
}

impl Drop for CommitGuard {
    fn drop(&mut self) {
        self.lock.release(self.conn);
    }
}

impl LockWait {
    /// Waits for the lock.
    pub async fn granted(mut self) -> CommitGuard {
        loop {
            if (&mut self.rx).await.is_ok() {
                self.settled = true;
                self.lock.waits.observe(self.queued.elapsed());
                return CommitGuard::new(self.lock.clone(), self.conn);
            }
            // The sender vanished without a grant; the lock only drops
            // senders after removing their waiter, so queue again rather
            // than trust that.
            let mut state = self.lock.state();
            if state.holder.is_none() {
                state.holder = Some(Holder {
                    conn: self.conn,
                    since: SystemTime::now(),
                });
                self.settled = true;
                self.lock.waits.observe(self.queued.elapsed());
                self.lock.observe(&state);
                return CommitGuard::new(self.lock.clone(), self.conn);
            }
            let (grant, rx) = oneshot::channel();
            state.waiters.push_back(Waiter {
                conn: self.conn,
                grant,
            });
            self.lock.observe(&state);
            drop(state);
            self.rx = rx;
        }
    }
}

impl Drop for LockWait {
    fn drop(&mut self) {
        if self.settled {
            return;
        }
        let mut state = self.lock.state();
        let before = state.waiters.len();
        state.waiters.retain(|w| w.conn != self.conn);
        let removed = before != state.waiters.len();
        if removed {
            self.lock.observe(&state);
        }
        drop(state);
        if !removed && self.rx.try_recv().is_ok() {
            // Granted between our last poll and now: pass it on.
            self.lock.release(self.conn);
        } else if removed {
            tracing::debug!(conn = self.conn, "dequeue lock");
        }
    }
}

fn log_waiting(what: &str, conn: ConnId, waiting: usize) {
    if waiting > ERROR_WAITING {
        tracing::error!(conn, waiting, "{what}: transactions waiting");
    } else if waiting > WARN_WAITING {
        tracing::warn!(conn, waiting, "{what}: transactions waiting");
    } else {
        tracing::debug!(conn, waiting, "{what}: transactions waiting");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn now(a: Acquired) -> CommitGuard {
        match a {
            Acquired::Now(g) => g,
            Acquired::Queued(_) => panic!("expected the lock to be free"),
        }
    }

    fn queued(a: Acquired) -> LockWait {
        match a {
            Acquired::Queued(w) => w,
            Acquired::Now(_) => panic!("expected to queue"),
        }
    }

    #[tokio::test]
    async fn free_lock_is_taken_and_released() {
        let lock = CommitLock::new();
        let g = now(lock.acquire(1));
        assert_eq!(lock.holder(), Some(1));
        assert!(lock.locked_since().is_some());
        drop(g);
        assert_eq!(lock.holder(), None);
        assert!(lock.locked_since().is_none());
    }

    // On a paused clock a sleep returns only once every other task is idle:
    // the waiters have run as far as they can before the holder lets go.
    #[tokio::test(start_paused = true)]
    async fn waiters_are_served_in_arrival_order() {
        let lock = CommitLock::new();
        let g1 = now(lock.acquire(1));
        let w2 = queued(lock.acquire(2));
        let w3 = queued(lock.acquire(3));
        assert_eq!(lock.waiting(), 2);
        assert!(lock.is_waiting(2) && lock.is_waiting(3) && !lock.is_waiting(1));
        let order = Arc::new(Mutex::new(Vec::new()));
        let (o3, o2) = (order.clone(), order.clone());
        let t3 = tokio::spawn(async move {
            let g = w3.granted().await;
            o3.lock().unwrap().push(3);
            drop(g);
        });
        let t2 = tokio::spawn(async move {
            let g = w2.granted().await;
            o2.lock().unwrap().push(2);
            tokio::time::sleep(Duration::from_millis(20)).await;
            drop(g);
        });
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert!(
            order.lock().unwrap().is_empty(),
            "nobody may pass the holder"
        );
        drop(g1);
        t2.await.unwrap();
        t3.await.unwrap();
        assert_eq!(*order.lock().unwrap(), vec![2, 3]);
        assert_eq!(lock.holder(), None);
    }

    #[tokio::test]
    async fn the_observer_hears_every_change_of_the_count() {
        let heard = Arc::new(Mutex::new(Vec::new()));
        let log = heard.clone();
        let lock = CommitLock::observed(Box::new(move |n| log.lock().unwrap().push(n)));
        let g1 = now(lock.acquire(1));
        let w2 = queued(lock.acquire(2));
        let w3 = queued(lock.acquire(3));
        drop(w3);
        drop(g1);
        let g2 = tokio::time::timeout(Duration::from_secs(10), w2.granted())
            .await
            .unwrap();
        drop(g2);
        // Taken, two queued, one leaves, handed over, released.
        assert_eq!(*heard.lock().unwrap(), vec![1, 2, 3, 2, 1, 0]);
    }

    #[tokio::test]
    async fn abandoned_wait_leaves_the_queue() {
        let lock = CommitLock::new();
        let g1 = now(lock.acquire(1));
        let w2 = queued(lock.acquire(2));
        let w3 = queued(lock.acquire(3));
        drop(w2);
        assert!(!lock.is_waiting(2));
        drop(g1);
        let g3 = tokio::time::timeout(Duration::from_secs(1), w3.granted())
            .await
            .unwrap();
        assert_eq!(lock.holder(), Some(3));
        drop(g3);
        assert_eq!(lock.holder(), None);
    }

    #[tokio::test]
    async fn wait_dropped_after_grant_passes_the_lock_on() {
        let lock = CommitLock::new();
        let g1 = now(lock.acquire(1));
        let w2 = queued(lock.acquire(2));
        let w3 = queued(lock.acquire(3));
        drop(g1); // granted to 2, who never looks
        assert_eq!(lock.holder(), Some(2));
        drop(w2);
        assert_eq!(lock.holder(), Some(3));
        let g3 = w3.granted().await;
        drop(g3);
        assert_eq!(lock.holder(), None);
    }

    #[tokio::test]
    async fn cancelled_waiting_future_does_not_wedge_the_lock() {
        let lock = CommitLock::new();
        let g1 = now(lock.acquire(1));
        let w2 = queued(lock.acquire(2));
        let fut = w2.granted();
        let r = tokio::time::timeout(Duration::from_millis(10), fut).await;
        assert!(r.is_err());
        drop(g1);
        assert_eq!(lock.holder(), None);
        let _g4 = now(lock.acquire(4));
    }
}
