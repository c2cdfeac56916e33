//! The in-memory index: oid → position of the object's current record.
//!
//! A sorted `Vec<(oid, pos)>` costs 16 bytes per object and answers lookups
//! by binary search. Changes to objects already in it are made in place; new
//! oids go to a small `BTreeMap` delta that is merged into the vector once it
//! grows past a fraction of it, so that the steady state stays well under 24
//! bytes per object. The merge can be computed while readers still use the
//! old vector ([`OidIndex::prepare`]) and installed with a swap.

use std::collections::BTreeMap;

/// The delta is merged when it holds more than this many entries…
const MIN_DELTA: usize = 4096;
/// …or more than `1 / DELTA_FRACTION` of the base, whichever is larger.
const DELTA_FRACTION: usize = 16;
/// Upper estimate of one `BTreeMap<u64, u64>` entry's heap cost (a leaf node
/// of 11 slots is 192 bytes and is at least half full, plus inner nodes).
#[cfg(test)]
const DELTA_ENTRY_BYTES: usize = 48;

/// oid → position of the current data record.
#[derive(Debug, Default, Clone)]
pub(crate) struct OidIndex {
    base: Vec<(u64, u64)>,
    delta: BTreeMap<u64, u64>,
}

/// A merged base computed off the write lock, see [`OidIndex::prepare`].
pub(crate) struct Prepared {
    merged: Option<Vec<(u64, u64)>>,
}

impl OidIndex {
    /// An empty index.
    pub fn new() -> Self {
        Self::default()
    }

    /// Builds an index from entries sorted by oid with no duplicates.
    pub fn from_sorted(entries: Vec<(u64, u64)>) -> Self {
        debug_assert!(entries.windows(2).all(|w| w[0].0 < w[1].0));
        OidIndex {
            base: entries,
            delta: BTreeMap::new(),
        }
    }

    /// Number of objects.
    pub fn len(&self) -> usize {
        self.base.len() + self.delta.len()
    }

    /// Whether no object is indexed.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Position of an object's current record.
    pub fn get(&self, oid: u64) -> Option<u64> {
        match self.base.binary_search_by_key(&oid, |e| e.0) {
            Ok(i) => Some(self.base[i].1),
            Err(_) => self.delta.get(&oid).copied(),
        }
    }

    /// Sets an object's position, merging the delta when it has grown.
    pub fn insert(&mut self, oid: u64, pos: u64) {
        match self.base.binary_search_by_key(&oid, |e| e.0) {
            Ok(i) => self.base[i].1 = pos,
            Err(_) => {
                self.delta.insert(oid, pos);
                if self.delta_too_big(0) {
                    let merged = self.merged_with(&[]);
                    self.base = merged;
                    self.delta.clear();
                }
            }
        }
    }

    fn delta_too_big(&self, extra: usize) -> bool {
        self.delta.len() + extra > MIN_DELTA.max(self.base.len() / DELTA_FRACTION)
    }

    /// Computes, without modifying the index, what applying `updates` needs:
    /// a freshly merged base when the delta would grow too big. Run it under
    /// a read lock, then [`OidIndex::apply`] the result under the write lock.
    pub fn prepare(&self, updates: &[(u64, u64)]) -> Prepared {
        let new_keys = updates
            .iter()
            .filter(|(oid, _)| self.base.binary_search_by_key(oid, |e| e.0).is_err())
            .count();
        if self.delta_too_big(new_keys) {
            Prepared {
                merged: Some(self.merged_with(updates)),
            }
        } else {
            Prepared { merged: None }
        }
    }

    /// Applies `updates` (later entries win) with what [`OidIndex::prepare`]
    /// computed for exactly these updates on this unchanged index.
    pub fn apply(&mut self, updates: &[(u64, u64)], prepared: Prepared) {
        match prepared.merged {
            Some(merged) => {
                self.base = merged;
                self.delta.clear();
            }
            None => {
                for &(oid, pos) in updates {
                    match self.base.binary_search_by_key(&oid, |e| e.0) {
                        Ok(i) => self.base[i].1 = pos,
                        Err(_) => {
                            self.delta.insert(oid, pos);
                        }
                    }
                }
            }
        }
    }

    /// Base, delta and `updates` merged into one sorted vector of exact
    /// capacity.
    fn merged_with(&self, updates: &[(u64, u64)]) -> Vec<(u64, u64)> {
        let mut extra: BTreeMap<u64, u64> = self.delta.clone();
        for &(oid, pos) in updates {
            extra.insert(oid, pos);
        }
        let size = self.base.len() + extra.len();
        let mut out = merge_sorted(self.base.iter().copied(), extra, size);
        out.shrink_to_fit();
        out
    }

    /// Sets the positions in `updates` (sorted by oid, no oid twice): one
    /// merge into a new base when they are many, inserts when they are few
    /// next to the index.
    pub fn update_sorted(&mut self, updates: Vec<(u64, u64)>) {
        debug_assert!(updates.windows(2).all(|w| w[0].0 < w[1].0));
        if self.is_empty() {
            self.base = updates;
        } else if updates.len().saturating_mul(8) < self.len() {
            for (oid, pos) in updates {
                self.insert(oid, pos);
            }
        } else {
            let size = self.len() + updates.len();
            self.base = merge_sorted(self.iter(), updates, size);
            self.delta.clear();
        }
    }

    /// The smallest oid `>= oid`.
    pub fn min_key_from(&self, oid: u64) -> Option<u64> {
        let i = self.base.partition_point(|e| e.0 < oid);
        let a = self.base.get(i).map(|e| e.0);
        let b = self.delta.range(oid..).next().map(|(k, _)| *k);
        match (a, b) {
            (Some(x), Some(y)) => Some(x.min(y)),
            (x, y) => x.or(y),
        }
    }

    /// The largest oid.
    pub fn max_key(&self) -> Option<u64> {
        let a = self.base.last().map(|e| e.0);
        let b = self.delta.keys().next_back().copied();
        a.max(b)
    }

    /// All entries in oid order.
    pub fn iter(&self) -> impl Iterator<Item = (u64, u64)> + '_ {
        MergeIter {
            a: self.base.iter().copied().peekable(),
            b: self.delta.iter().map(|(k, v)| (*k, *v)).peekable(),
        }
    }

    /// Approximate heap bytes held, from capacities.
    #[cfg(test)]
    pub fn heap_bytes(&self) -> usize {
        self.base.capacity() * std::mem::size_of::<(u64, u64)>()
            + self.delta.len() * DELTA_ENTRY_BYTES
    }

    /// Merges the delta into the base and drops spare capacity.
    pub fn compact(&mut self) {
        if !self.delta.is_empty() || self.base.capacity() != self.base.len() {
            self.base = self.merged_with(&[]);
            self.delta.clear();
        }
    }
}

/// Merges two streams of entries sorted by oid into one vector (reserved
/// for `capacity` entries); on an oid in both, `b`'s entry wins.
fn merge_sorted(
    a: impl Iterator<Item = (u64, u64)>,
    b: impl IntoIterator<Item = (u64, u64)>,
    capacity: usize,
) -> Vec<(u64, u64)> {
    let mut out = Vec::with_capacity(capacity);
    let mut a = a.peekable();
    let mut b = b.into_iter().peekable();
    loop {
        match (a.peek().copied(), b.peek().copied()) {
            (Some(x), Some(y)) => {
                if x.0 < y.0 {
                    out.push(x);
                    a.next();
                } else {
                    if x.0 == y.0 {
                        a.next();
                    }
                    out.push(y);
                    b.next();
                }
            }
            (Some(x), None) => {
                out.push(x);
                a.next();
            }
            (None, Some(y)) => {
                out.push(y);
                b.next();
            }
            (None, None) => break,
        }
    }
    out
}

/// Merges two disjoint sorted entry streams.
struct MergeIter<A: Iterator<Item = (u64, u64)>, B: Iterator<Item = (u64, u64)>> {
    a: std::iter::Peekable<A>,
    b: std::iter::Peekable<B>,
}

impl<A: Iterator<Item = (u64, u64)>, B: Iterator<Item = (u64, u64)>> Iterator for MergeIter<A, B> {
    type Item = (u64, u64);

    fn next(&mut self) -> Option<(u64, u64)> {
        match (self.a.peek(), self.b.peek()) {
            (Some(x), Some(y)) => {
                if x.0 <= y.0 {
                    self.a.next()
                } else {
                    self.b.next()
                }
            }
            (Some(_), None) => self.a.next(),
            _ => self.b.next(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn get_insert_update() {
        let mut ix = OidIndex::new();
        for oid in (0..10_000u64).rev() {
            ix.insert(oid * 3, oid + 100);
        }
        assert_eq!(ix.len(), 10_000);
        for oid in 0..10_000u64 {
            assert_eq!(ix.get(oid * 3), Some(oid + 100));
            assert_eq!(ix.get(oid * 3 + 1), None);
        }
        ix.insert(30, 7);
        assert_eq!(ix.get(30), Some(7));
        assert_eq!(ix.len(), 10_000);
        assert_eq!(ix.min_key_from(31), Some(33));
        assert_eq!(ix.min_key_from(0), Some(0));
        assert_eq!(ix.min_key_from(29_998), None);
        assert_eq!(ix.max_key(), Some(29_997));
        let all: Vec<_> = ix.iter().collect();
        assert_eq!(all.len(), 10_000);
        assert!(all.windows(2).all(|w| w[0].0 < w[1].0));
    }

    #[test]
    fn prepare_and_apply_agree_with_insert() {
        let mut a = OidIndex::new();
        let mut b = OidIndex::new();
        let mut next = 0u64;
        for round in 0..200u64 {
            let updates: Vec<(u64, u64)> = (0..50)
                .map(|i| ((next + i) % 7919, round * 100 + i))
                .collect();
            next += 37;
            for &(o, p) in &updates {
                a.insert(o, p);
            }
            let prep = b.prepare(&updates);
            b.apply(&updates, prep);
        }
        assert_eq!(a.iter().collect::<Vec<_>>(), b.iter().collect::<Vec<_>>());
        assert_eq!(a.len(), b.len());
    }

    #[test]
    fn memory_per_object_stays_under_24_bytes() {
        let mut ix = OidIndex::new();
        // Commits of 100 new objects at a time, as a server would see them.
        let mut pos = 4u64;
        for chunk in 0..1000u64 {
            let updates: Vec<(u64, u64)> =
                (0..100).map(|i| (chunk * 100 + i, pos + i * 60)).collect();
            pos += 6000;
            let prep = ix.prepare(&updates);
            ix.apply(&updates, prep);
            let per_object = ix.heap_bytes() as f64 / ix.len() as f64;
            if ix.len() >= 20_000 {
                assert!(
                    per_object <= 24.0,
                    "{per_object} bytes/object at {}",
                    ix.len()
                );
            }
        }
        assert_eq!(ix.len(), 100_000);
        let per_object = ix.heap_bytes() as f64 / ix.len() as f64;
        assert!(per_object <= 24.0, "{per_object} bytes/object");
        ix.compact();
        assert_eq!(ix.heap_bytes(), 16 * 100_000);
    }
}
