//! S3-FIFO eviction (Yang et al., SOSP 2023): a small probationary FIFO
//! holding about a tenth of the bytes, a main FIFO with CLOCK-style second
//! chances, and a ghost list of keys recently evicted from the small queue.
//!
//! Why this policy: a ZODB client's loads mix a hot working set with long
//! one-touch scans (iterating a BTree, a catalog rebuild). Plain LRU lets a
//! scan flush the working set; here a revision read once dies in the small
//! queue without disturbing the main one. A hit only bumps a two-bit counter,
//! with no list surgery, which keeps hits cheap under the cache's lock.
//!
//! Queues hold keys stamped with the revision's identity; a removal (an
//! invalidation dropping a revision, an explicit eviction) only forgets the
//! revision and leaves its queue slot to be skipped later. Queues are
//! rebuilt when such dead slots outnumber live ones.

use std::collections::{HashSet, VecDeque};

use zeo_storage::{Oid, Tid};

/// A revision's key.
pub type Key = (Oid, Tid);

/// Which queue a live revision sits in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Queue {
    /// Probation: admitted, not yet proven useful.
    Small,
    /// Proven useful at least once.
    Main,
}

/// What the policy keeps per live revision.
#[derive(Clone, Copy, Debug)]
pub struct Slot {
    /// Identity of this admission, to tell live queue slots from dead ones.
    pub stamp: u64,
    /// Accesses since admission or the last second chance, saturating at 3.
    pub freq: u8,
    /// The queue it is in.
    pub queue: Queue,
    /// Bytes it is charged for.
    pub size: u64,
}

/// The policy's queues and byte counts; the cache's index owns the slots.
#[derive(Debug, Default)]
pub struct S3Fifo {
    small: VecDeque<(Key, u64)>,
    main: VecDeque<(Key, u64)>,
    ghost: HashSet<Key>,
    ghost_order: VecDeque<Key>,
    small_bytes: u64,
    main_bytes: u64,
    next_stamp: u64,
}

/// Looks up the slot of a live key (the cache's index implements it).
pub trait Slots {
    /// The slot of `key`, when that revision is live.
    fn slot_mut(&mut self, key: Key) -> Option<&mut Slot>;
    /// How many revisions are live.
    fn live(&self) -> usize;
}

impl S3Fifo {
    /// Bytes charged to live revisions.
    pub fn bytes(&self) -> u64 {
        self.small_bytes + self.main_bytes
    }

    /// Admits a new revision; returns its slot for the index to keep.
    pub fn admit(&mut self, key: Key, size: u64) -> Slot {
        self.next_stamp += 1;
        let stamp = self.next_stamp;
        let queue = if self.ghost.remove(&key) {
            self.main.push_back((key, stamp));
            self.main_bytes += size;
            Queue::Main
        } else {
            self.small.push_back((key, stamp));
            self.small_bytes += size;
            Queue::Small
        };
        Slot {
            stamp,
            freq: 0,
            queue,
            size,
        }
    }

    /// Records a hit.
    pub fn touch(slot: &mut Slot) {
        slot.freq = (slot.freq + 1).min(3);
    }

    /// Forgets a revision the index dropped for another reason.
    pub fn forget(&mut self, slot: &Slot) {
        match slot.queue {
            Queue::Small => self.small_bytes = self.small_bytes.saturating_sub(slot.size),
            Queue::Main => self.main_bytes = self.main_bytes.saturating_sub(slot.size),
        }
    }

    /// Forgets everything.
    pub fn clear(&mut self) {
        *self = S3Fifo {
            next_stamp: self.next_stamp,
            ..S3Fifo::default()
        };
    }

    /// Picks the next victim, updating queues; the caller removes it from
    /// the index (without calling [`S3Fifo::forget`]). `None` when nothing is
    /// left to evict.
    pub fn victim(&mut self, slots: &mut impl Slots, capacity: u64) -> Option<Key> {
        self.compact_queues(slots);
        loop {
            let from_small = !self.small.is_empty()
                && (self.small_bytes >= capacity / 10 || self.main.is_empty());
            if from_small {
                let (key, stamp) = self.small.pop_front()?;
                let Some(slot) = slots.slot_mut(key).filter(|s| s.stamp == stamp) else {
                    continue;
                };
                self.small_bytes = self.small_bytes.saturating_sub(slot.size);
                if slot.freq > 0 {
                    slot.freq = 0;
                    slot.queue = Queue::Main;
                    self.main_bytes += slot.size;
                    self.main.push_back((key, stamp));
                    continue;
                }
                self.remember_ghost(key, slots.live());
                return Some(key);
            }
            let (key, stamp) = self.main.pop_front()?;
            let Some(slot) = slots.slot_mut(key).filter(|s| s.stamp == stamp) else {
                continue;
            };
            if slot.freq > 0 {
                slot.freq -= 1;
                self.main.push_back((key, stamp));
                continue;
            }
            self.main_bytes = self.main_bytes.saturating_sub(slot.size);
            return Some(key);
        }
    }

    fn remember_ghost(&mut self, key: Key, live: usize) {
        if self.ghost.insert(key) {
            self.ghost_order.push_back(key);
        }
        // As many ghosts as live revisions, as the paper suggests.
        while self.ghost_order.len() > live.max(16) {
            if let Some(old) = self.ghost_order.pop_front() {
                self.ghost.remove(&old);
            }
        }
    }

    /// Drops dead queue slots once they outnumber the live ones.
    fn compact_queues(&mut self, slots: &mut impl Slots) {
        let queued = self.small.len() + self.main.len();
        if queued <= 2 * slots.live() + 64 {
            return;
        }
        let mut keep = |q: &mut VecDeque<(Key, u64)>| {
            q.retain(|&(key, stamp)| slots.slot_mut(key).is_some_and(|s| s.stamp == stamp));
        };
        keep(&mut self.small);
        keep(&mut self.main);
    }
}
