//! The per-storage queue of recent invalidations that lets a reconnecting
//! client verify its cache without dropping it (`getInvalidations`).

use std::collections::{BTreeSet, VecDeque};
use std::sync::Arc;

use zeo_storage::{Oid, Tid};

/// The oids one transaction changed, shared between the queue and the
/// messages sent to clients.
pub type OidList = Arc<[Oid]>;

/// The last `bound` transactions' invalidations, newest first.
///
/// Like ZEO, a fresh queue holds one sentinel entry for the storage's last
/// transaction with no oids: a client that was up to date when the server
/// started can then still verify quickly, while an older one is told to drop
/// its cache.
#[derive(Debug)]
pub struct InvalidationQueue {
    entries: VecDeque<(Tid, Option<OidList>)>,
    bound: usize,
}

impl InvalidationQueue {
    /// A queue keeping `bound` transactions (at least one), seeded with the
    /// storage's last transaction.
    pub fn new(bound: usize, last_transaction: Tid) -> Self {
        let bound = bound.max(1);
        let mut entries = VecDeque::with_capacity(bound.min(1024));
        entries.push_back((last_transaction, None));
        InvalidationQueue { entries, bound }
    }

    /// A queue seeded with the storage's most recent transactions (oldest
    /// first, as [`Storage::last_invalidations`] gives them), the way ZEO
    /// fills its queue at start: clients that missed only those transactions
    /// keep their caches across a server restart. With no transactions it is
    /// [`InvalidationQueue::new`].
    ///
    /// [`Storage::last_invalidations`]: zeo_storage::Storage::last_invalidations
    pub fn seeded(bound: usize, last_transaction: Tid, recent: Vec<(Tid, Vec<Oid>)>) -> Self {
        let mut queue = Self::new(bound, last_transaction);
        if !recent.is_empty() {
            queue.entries.clear();
            for (tid, oids) in recent {
                queue.push(tid, oids.into());
            }
        }
        queue
    }

    /// Records a committed transaction; the oldest entry goes when full.
    pub fn push(&mut self, tid: Tid, oids: OidList) {
        if self.entries.len() >= self.bound {
            self.entries.pop_back();
        }
        self.entries.push_front((tid, Some(oids)));
    }

    /// How many transactions the queue keeps.
    pub fn bound(&self) -> usize {
        self.bound
    }

    /// The newest transaction in the queue.
    pub fn newest(&self) -> Option<Tid> {
        self.entries.front().map(|(tid, _)| *tid)
    }

    #[cfg(test)]
    /// How many transactions are kept.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// The answer to `getInvalidations(client_tid)`: the newest tid and every
    /// oid changed after `client_tid`, or `None` when the queue does not
    /// reach back that far (the client must then drop its cache).
    pub fn since(&self, client_tid: Tid) -> Option<(Tid, Vec<Oid>)> {
        let (oldest, _) = self.entries.back()?;
        if *oldest > client_tid {
            return None;
        }
        let newest = self.newest()?;
        let mut oids = BTreeSet::new();
        for (tid, list) in &self.entries {
            if *tid <= client_tid {
                break;
            }
            if let Some(list) = list {
                oids.extend(list.iter().copied());
            }
        }
        Some((newest, oids.into_iter().collect()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn oids(v: &[u64]) -> OidList {
        v.iter().map(|&o| Oid(o)).collect::<Vec<_>>().into()
    }

    #[test]
    fn fresh_queue_answers_only_up_to_date_clients() {
        let q = InvalidationQueue::new(100, Tid(10));
        assert_eq!(q.since(Tid(10)), Some((Tid(10), vec![])));
        assert_eq!(q.since(Tid(9)), None);
        assert_eq!(q.since(Tid::ZERO), None);
    }

    #[test]
    fn union_of_later_transactions() {
        let mut q = InvalidationQueue::new(100, Tid(10));
        q.push(Tid(11), oids(&[1, 2]));
        q.push(Tid(12), oids(&[2, 3]));
        q.push(Tid(13), oids(&[7]));
        assert_eq!(
            q.since(Tid(10)),
            Some((Tid(13), vec![Oid(1), Oid(2), Oid(3), Oid(7)]))
        );
        assert_eq!(
            q.since(Tid(11)),
            Some((Tid(13), vec![Oid(2), Oid(3), Oid(7)]))
        );
        assert_eq!(q.since(Tid(13)), Some((Tid(13), vec![])));
        // A tid between entries still works: entries after it count.
        assert_eq!(q.since(Tid(12)), Some((Tid(13), vec![Oid(7)])));
    }

    #[test]
    fn bounded_and_forgets_the_oldest() {
        let mut q = InvalidationQueue::new(2, Tid(10));
        q.push(Tid(11), oids(&[1]));
        q.push(Tid(12), oids(&[2]));
        assert_eq!(q.len(), 2);
        assert_eq!(q.since(Tid(10)), None, "tid 10 fell out of the queue");
        assert_eq!(q.since(Tid(11)), Some((Tid(12), vec![Oid(2)])));
    }

    #[test]
    fn seeded_queue_verifies_clients_that_missed_only_recent_transactions() {
        let recent = vec![
            (Tid(11), vec![Oid(1)]),
            (Tid(12), vec![Oid(2)]),
            (Tid(13), vec![Oid(3)]),
        ];
        let q = InvalidationQueue::seeded(2, Tid(13), recent);
        assert_eq!(q.len(), 2, "only the newest `bound` transactions are kept");
        assert_eq!(q.since(Tid(12)), Some((Tid(13), vec![Oid(3)])));
        assert_eq!(q.since(Tid(13)), Some((Tid(13), vec![])));
        assert_eq!(
            q.since(Tid(11)),
            None,
            "tid 11 is older than the queue reaches"
        );
        let empty = InvalidationQueue::seeded(5, Tid::ZERO, Vec::new());
        assert_eq!(empty.since(Tid::ZERO), Some((Tid::ZERO, vec![])));
    }

    #[test]
    fn zero_bound_still_keeps_the_newest() {
        let mut q = InvalidationQueue::new(0, Tid(1));
        q.push(Tid(2), oids(&[5]));
        assert_eq!(q.len(), 1);
        assert_eq!(q.since(Tid(2)), Some((Tid(2), vec![])));
        assert_eq!(q.since(Tid(1)), None);
    }
}
