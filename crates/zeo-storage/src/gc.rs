//! Which object revisions a pack keeps: the reachability walk shared by the
//! pack of [`FileStorage`](crate::FileStorage) and of
//! [`MappingStorage`](crate::MappingStorage).
//!
//! # The rule (ZODB's `FileStorage` pack, `fspack.GC`)
//!
//! Call *pack position* the boundary between the transactions with a tid
//! `<=` the pack time ("before") and the later ones ("after").
//!
//! 1. Scanning the "before" transactions in order, each object's last data
//!    record is its revision *current at the pack time*; a record saying the
//!    object does not exist (a deletion or an undone creation) removes the
//!    object from that map instead.
//! 2. With `gc == false` exactly the revisions current at the pack time are
//!    reachable. Nothing else is consulted.
//! 3. With `gc == true`:
//!    * the walk starts at the root (oid 0). Each reached object contributes
//!      its current-at-pack-time revision, whose record (after following
//!      backpointers; a record without data has no references) is scanned
//!      for persistent references, which are reached in turn. Reaching an oid
//!      that has no current-at-pack-time revision fails the pack with
//!      [`Error::Key`], with one exception: a root that is missing while *no*
//!      object existed at the pack time just means nothing is reachable.
//!      So a root that references a deleted object makes a GC pack fail.
//!    * then every record *after* the pack position whose backpointer names
//!      a revision *before* it (an undo written after the pack time) keeps
//!      that revision alive too, in file order: for an object not reached
//!      yet, that revision becomes its one kept revision (its references are
//!      *not* walked, as ZODB does); for an object already reached, the
//!      revision is kept in addition and its references are walked like the
//!      root's, once all such records have been seen.
//! 4. The pack keeps, before the pack position, only the reachable
//!    revisions; a transaction left without records disappears, the others
//!    get the status `p`. Every transaction after the pack position is kept
//!    whole. Those steps belong to the storages; this module decides
//!    reachability only.
//!
//! Consequences worth knowing: a revision that stopped being current before
//! the pack time goes (unless an undo after the pack time points at it); an
//! object deleted before the pack time goes entirely, while one deleted after
//! it keeps its current-at-pack-time revision and its deletion record; every
//! revision written after the pack time stays.
//!
//! The walk is iterative. Memory is one map entry per reached object plus a
//! work stack holding each object at most once, so proportional to the
//! number of objects, not to the number of references. Objects are marked
//! when first queued rather than when visited, which reaches the same set as
//! ZODB's walk; only which missing oid a failing pack names can differ.

use std::borrow::Cow;
use std::collections::hash_map::Entry;
use std::collections::HashMap;
use std::fmt;

use crate::error::{Error, Result};
use crate::ids::Oid;

/// Extracts the oids an object record (class pickle + state pickle)
/// references.
pub type ReferencesFn<'a> = &'a dyn Fn(&[u8]) -> Result<Vec<Oid>>;

/// The persistent references of one object record, found by the pickle
/// scanner.
pub fn record_references(record: &[u8]) -> Result<Vec<Oid>> {
    zeo_pickle::references(record)
        .map(|oids| oids.into_iter().map(Oid).collect())
        .map_err(|e| Error::Storage(format!("cannot read the references of a record: {e}")))
}

/// What the walk needs to know about a storage as of the pack time.
pub trait PackView {
    /// Identifies one stored revision (a file offset in a Data.fs).
    type Pos: Copy + Eq + fmt::Debug;

    /// The revision of `oid` current at the pack time, `None` when the object
    /// did not exist then (never created, deleted, or creation undone).
    fn current_at_pack(&self, oid: Oid) -> Option<Self::Pos>;

    /// Whether no object at all existed at the pack time.
    fn nothing_at_pack(&self) -> bool;

    /// The data of the revision at `pos` after following backpointers,
    /// `None` when the record says the object does not exist.
    fn record_data(&self, pos: Self::Pos) -> Result<Option<Cow<'_, [u8]>>>;
}

/// The revisions a pack keeps before its pack position.
#[derive(Clone, Debug)]
pub struct Reachable<P> {
    /// One kept revision per reached object.
    primary: HashMap<Oid, P>,
    /// Further kept revisions of the few objects that undo records after the
    /// pack time point into.
    extra: HashMap<Oid, Vec<P>>,
}

impl<P: Copy + Eq> Reachable<P> {
    /// Keeps exactly the given revisions (a pack without garbage collection
    /// passes every revision current at the pack time).
    pub fn from_current(current: impl IntoIterator<Item = (Oid, P)>) -> Self {
        Reachable {
            primary: current.into_iter().collect(),
            extra: HashMap::new(),
        }
    }

    /// Whether the revision of `oid` at `pos` is kept.
    pub fn is_reachable(&self, oid: Oid, pos: P) -> bool {
        match self.primary.get(&oid) {
            None => false,
            Some(p) if *p == pos => true,
            Some(_) => self.extra.get(&oid).is_some_and(|l| l.contains(&pos)),
        }
    }

    /// Whether any revision of `oid` is kept.
    pub fn contains(&self, oid: Oid) -> bool {
        self.primary.contains_key(&oid)
    }

    /// The number of objects with a kept revision.
    pub fn len(&self) -> usize {
        self.primary.len()
    }

    /// Whether nothing is kept.
    pub fn is_empty(&self) -> bool {
        self.primary.is_empty()
    }
}

/// Computes what a garbage-collecting pack keeps (rule 3 of the module
/// documentation).
///
/// `future_backpointers` lists, in file order, `(oid, target)` for every
/// record after the pack position whose backpointer names the revision
/// `target` before it. `references` scans a record for the oids it names.
pub fn find_reachable<V: PackView>(
    view: &V,
    future_backpointers: impl IntoIterator<Item = (Oid, V::Pos)>,
    references: ReferencesFn<'_>,
) -> Result<Reachable<V::Pos>> {
    let mut reachable = Reachable {
        primary: HashMap::new(),
        extra: HashMap::new(),
    };
    mark_from(view, &mut reachable, std::iter::once(Oid::ROOT), references)?;

    let mut extra_roots = Vec::new();
    for (oid, target) in future_backpointers {
        match reachable.primary.entry(oid) {
            Entry::Vacant(slot) => {
                slot.insert(target);
            }
            Entry::Occupied(_) => {
                let list = reachable.extra.entry(oid).or_default();
                if !list.contains(&target) {
                    list.push(target);
                    extra_roots.push((oid, target));
                }
            }
        }
    }
    for (oid, pos) in extra_roots {
        let refs = match view.record_data(pos)? {
            Some(data) => references(&data).map_err(|e| unscannable(oid, e))?,
            None => Vec::new(),
        };
        mark_from(view, &mut reachable, refs, references)?;
    }
    Ok(reachable)
}

/// Marks everything reachable from `roots` through current-at-pack-time
/// revisions.
fn mark_from<V: PackView>(
    view: &V,
    reachable: &mut Reachable<V::Pos>,
    roots: impl IntoIterator<Item = Oid>,
    references: ReferencesFn<'_>,
) -> Result<()> {
    let mut todo: Vec<(Oid, V::Pos)> = Vec::new();
    let enqueue = |oid: Oid, reachable: &mut Reachable<V::Pos>, todo: &mut Vec<(Oid, V::Pos)>| {
        if reachable.primary.contains_key(&oid) {
            return Ok(());
        }
        match view.current_at_pack(oid) {
            Some(pos) => {
                reachable.primary.insert(oid, pos);
                todo.push((oid, pos));
                Ok(())
            }
            // Packing to a time before anything was committed.
            None if oid == Oid::ROOT && view.nothing_at_pack() => Ok(()),
            None => Err(Error::Key(oid.to_string())),
        }
    };
    for oid in roots {
        enqueue(oid, reachable, &mut todo)?;
    }
    while let Some((from, pos)) = todo.pop() {
        let Some(data) = view.record_data(pos)? else {
            continue;
        };
        for oid in references(&data).map_err(|e| unscannable(from, e))? {
            enqueue(oid, reachable, &mut todo)?;
        }
    }
    Ok(())
}

/// A record whose references cannot all be read (a malformed pickle, or
/// one past a decoding limit) stops the pack: collecting without its
/// references would delete objects it keeps alive.
fn unscannable(oid: Oid, err: Error) -> Error {
    Error::Storage(format!(
        "pack aborted: the references of object {oid} cannot be read: {err}"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::interface::Pack;
    use std::collections::BTreeMap;

    /// Records are `oid -> (pos, data)`; data is a list of referenced oids,
    /// one byte each.
    struct View(BTreeMap<Oid, u32>, HashMap<u32, Option<Vec<u8>>>);

    impl PackView for View {
        type Pos = u32;
        fn current_at_pack(&self, oid: Oid) -> Option<u32> {
            self.0.get(&oid).copied()
        }
        fn nothing_at_pack(&self) -> bool {
            self.0.is_empty()
        }
        fn record_data(&self, pos: u32) -> Result<Option<Cow<'_, [u8]>>> {
            Ok(self.1.get(&pos).cloned().flatten().map(Cow::Owned))
        }
    }

    fn refs(data: &[u8]) -> Result<Vec<Oid>> {
        Ok(data.iter().map(|b| Oid(u64::from(*b))).collect())
    }

    fn view(objects: &[(u64, u32, Option<&[u8]>)]) -> View {
        View(
            objects.iter().map(|(o, p, _)| (Oid(*o), *p)).collect(),
            objects
                .iter()
                .map(|(_, p, d)| (*p, d.map(<[u8]>::to_vec)))
                .collect(),
        )
    }

    #[test]
    fn walks_from_the_root_only() {
        let v = view(&[
            (0, 10, Some(&[1, 2])),
            (1, 11, Some(&[3])),
            (2, 12, None),
            (3, 13, Some(&[0])),
            (4, 14, Some(&[])),
        ]);
        let r = find_reachable(&v, [], &refs).unwrap();
        assert_eq!(r.len(), 4);
        assert!(r.is_reachable(Oid(3), 13));
        assert!(!r.is_reachable(Oid(3), 12));
        assert!(!r.contains(Oid(4)));
    }

    #[test]
    fn dangling_reference_is_a_key_error() {
        let v = view(&[(0, 10, Some(&[1, 7]))]);
        assert!(matches!(find_reachable(&v, [], &refs), Err(Error::Key(_))));
    }

    #[test]
    fn missing_root_is_a_key_error_unless_nothing_existed() {
        let v = view(&[(1, 10, Some(&[]))]);
        assert!(matches!(find_reachable(&v, [], &refs), Err(Error::Key(_))));
        let empty = view(&[]);
        assert!(find_reachable(&empty, [], &refs).unwrap().is_empty());
    }

    #[test]
    fn future_backpointers_keep_old_revisions() {
        // Object 1 is reachable with revision 11; an undo after the pack time
        // points at its older revision 5, which references object 2, which is
        // otherwise garbage. Object 3 is garbage but an undo points at its
        // revision 6 (whose references are not walked).
        let mut v = view(&[
            (0, 10, Some(&[1])),
            (1, 11, Some(&[])),
            (2, 12, Some(&[])),
            (3, 13, Some(&[4])),
            (4, 14, Some(&[])),
        ]);
        v.1.insert(5, Some(vec![2]));
        v.1.insert(6, Some(vec![4]));
        let r = find_reachable(&v, [(Oid(1), 5), (Oid(3), 6), (Oid(1), 5)], &refs).unwrap();
        assert!(r.is_reachable(Oid(1), 11));
        assert!(r.is_reachable(Oid(1), 5));
        assert!(r.is_reachable(Oid(2), 12));
        assert!(r.is_reachable(Oid(3), 6));
        assert!(!r.is_reachable(Oid(3), 13));
        assert!(!r.contains(Oid(4)));
    }

    #[test]
    fn deep_chains_do_not_recurse() {
        let n: u64 = 200_000;
        let mut current = BTreeMap::new();
        let mut data = HashMap::new();
        for i in 0..n {
            current.insert(Oid(i), i as u32);
            data.insert(i as u32, Some((i + 1).to_be_bytes().to_vec()));
        }
        data.insert((n - 1) as u32, Some(Vec::new()));
        let v = View(current, data);
        let be = |d: &[u8]| -> Result<Vec<Oid>> { Ok(Oid::from_slice(d).into_iter().collect()) };
        assert_eq!(find_reachable(&v, [], &be).unwrap().len(), n as usize);
    }

    /// A record whose pickle the scanner refuses (here a decimal integer
    /// past the digit limit, ahead of the record's one reference) makes
    /// the pack fail and collect nothing: had it been skipped, the object
    /// it refers to would have been deleted.
    #[test]
    fn a_record_past_a_scanner_limit_aborts_the_pack() {
        use crate::interface::BeginOptions;
        use crate::{MappingStorage, Storage, TransactionMetaData};

        let class = b"\x80\x03cpersistent.mapping\nPersistentMapping\nq\x00.".to_vec();
        let record = |state: &[u8]| [class.as_slice(), state].concat();
        let pid = |oid: u64| [&b"C\x08"[..], &oid.to_be_bytes(), b"Q"].concat();
        let root = record(&[&b"\x80\x03]("[..], &pid(1), b"e."].concat());
        let mut hostile = b"\x80\x03](L".to_vec();
        hostile.extend(std::iter::repeat_n(b'9', 100_000));
        hostile.extend_from_slice(b"L\n");
        hostile.extend(pid(2));
        hostile.extend_from_slice(b"e.");
        let hostile = record(&hostile);
        let leaf = record(b"\x80\x03}.");

        let st = MappingStorage::new("t");
        let meta = TransactionMetaData::default();
        let txn = st.tpc_begin(&meta, BeginOptions::default()).unwrap();
        for (oid, data) in [(0, &root), (1, &hostile), (2, &leaf)] {
            st.store(txn, Oid(oid), crate::Tid::ZERO, data).unwrap();
        }
        st.tpc_vote(txn).unwrap();
        st.tpc_finish(txn, &mut |_| {}).unwrap();

        let err = st.pack(f64::MAX, true).unwrap_err();
        let text = err.to_string();
        assert!(text.contains("pack aborted"), "{text}");
        assert!(text.contains("decimal digits"), "{text}");
        for (oid, data) in [(0, &root), (1, &hostile), (2, &leaf)] {
            assert_eq!(&st.load(Oid(oid)).unwrap().0, data);
        }
    }
}
