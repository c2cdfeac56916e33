//! The rules of a client transaction's vote, without I/O: what the client
//! remembers of its writes, how a `vote` reply is read, when a conflict
//! stands, and what the cache learns at `tpc_finish`.
//!
//! `AsyncClientStorage::tpc_vote` sends the votes, loads the states a
//! resolver needs and re-stores resolved data; every decision in between is
//! made here, so each rule is tested without a server.

use std::collections::{HashMap, HashSet};

use zeo_pickle::Value;
use zeo_protocol::client::replies::{self, VoteItem};
use zeo_protocol::reply::VoteConflict;
use zeo_storage::{Oid, Tid};

use crate::error::{Error, Result};

/// How many rounds of client-side conflict resolution a vote tries (ZEO's
/// limit).
pub(crate) const MAX_VOTE_ROUNDS: usize = 9;

/// What a transaction wrote, as the client must remember it to answer the
/// vote and to update its cache when the transaction finishes.
#[derive(Debug, Default)]
pub(crate) struct TxnWrites {
    /// The last data stored per object (`None`: deleted, or data the cache
    /// must not take as current).
    stored: HashMap<Oid, Option<Vec<u8>>>,
    /// Objects whose data the server changed (resolved or undone).
    server_resolved: HashSet<Oid>,
    /// Objects this client resolved and re-stored, in resolution order.
    client_resolved: Vec<Oid>,
}

/// What the cache does with one object once the transaction committed:
/// its current revision is invalidated, and `data` (when known to be what
/// was committed) becomes the new current revision.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct CacheUpdate {
    pub oid: Oid,
    pub data: Option<Vec<u8>>,
}

impl TxnWrites {
    /// `data` was stored for `oid`.
    pub fn stored(&mut self, oid: Oid, data: Vec<u8>) {
        self.stored.insert(oid, Some(data));
    }

    /// `oid` was deleted.
    pub fn deleted(&mut self, oid: Oid) {
        self.stored.insert(oid, None);
    }

    /// A revision was restored for `oid`: not the one to cache as current
    /// unless it is, so invalidation sorts it out.
    pub fn restored(&mut self, oid: Oid) {
        self.server_resolved.insert(oid);
        self.stored.insert(oid, None);
    }

    /// Data this client resolved for `oid` was re-stored.
    fn resolved(&mut self, oid: Oid, data: Vec<u8>) {
        self.stored.insert(oid, Some(data));
        self.client_resolved.push(oid);
    }

    /// What the vote returns: the objects whose committed data differs
    /// from what was stored, the server's (sorted) before the client's.
    fn voted(&self) -> Vec<Oid> {
        let mut oids: Vec<Oid> = self.server_resolved.iter().copied().collect();
        oids.sort();
        oids.extend(self.client_resolved.iter().copied());
        oids
    }

    /// What the cache learns at finish. Undone objects come back from vote
    /// without having been stored: they are invalidated all the same.
    pub fn cache_updates(self) -> Vec<CacheUpdate> {
        let undone: Vec<Oid> = self
            .server_resolved
            .iter()
            .filter(|oid| !self.stored.contains_key(oid))
            .copied()
            .collect();
        let server_resolved = self.server_resolved;
        self.stored
            .into_iter()
            .map(|(oid, data)| CacheUpdate {
                oid,
                data: data.filter(|_| !server_resolved.contains(&oid)),
            })
            .chain(
                undone
                    .into_iter()
                    .map(|oid| CacheUpdate { oid, data: None }),
            )
            .collect()
    }
}

/// What the client does after a vote round.
#[derive(Debug)]
pub(crate) enum VoteStep {
    /// Voted: the objects whose committed data differs from what was
    /// stored.
    Done(Vec<Oid>),
    /// Resolve these conflicts, in order ([`Vote::resolution`]), then vote
    /// again.
    Resolve(Vec<VoteConflict>),
}

/// A conflict that stands: the cached current revision of `oid` is dropped
/// (ZEO does so) and the vote fails with `error`.
#[derive(Debug)]
pub(crate) struct Unresolved {
    pub oid: Oid,
    pub error: Error,
}

impl Unresolved {
    fn new(oid: Oid, committed: Tid, old: Tid) -> Self {
        Unresolved {
            oid,
            error: zeo_storage::Error::Conflict {
                oid,
                committed,
                old,
            }
            .into(),
        }
    }
}

/// Why a vote failed.
#[derive(Debug)]
pub(crate) enum VoteFailure {
    /// A conflict stands; see [`Unresolved`].
    Conflict(Unresolved),
    /// Any other error, returned as it is.
    Other(Error),
}

impl From<Error> for VoteFailure {
    fn from(e: Error) -> Self {
        VoteFailure::Other(e)
    }
}

/// One transaction's vote: up to [`MAX_VOTE_ROUNDS`] rounds.
#[derive(Debug, Default)]
pub(crate) struct Vote {
    rounds: usize,
}

impl Vote {
    /// Starts a round.
    ///
    /// # Errors
    ///
    /// A storage error once [`MAX_VOTE_ROUNDS`] rounds left conflicts.
    pub fn start_round(&mut self) -> Result<()> {
        if self.rounds == MAX_VOTE_ROUNDS {
            return Err(zeo_storage::Error::Storage(format!(
                "conflicts still unresolved after {MAX_VOTE_ROUNDS} vote rounds"
            ))
            .into());
        }
        self.rounds += 1;
        Ok(())
    }

    /// Reads the server's answer to a vote, noting the objects it changed.
    ///
    /// # Errors
    ///
    /// A `ConflictError` the server raised stands
    /// ([`VoteFailure::Conflict`]); other errors and malformed replies are
    /// [`VoteFailure::Other`].
    pub fn on_reply(
        &mut self,
        writes: &mut TxnWrites,
        reply: Result<Value>,
    ) -> Result<VoteStep, VoteFailure> {
        let value = match reply {
            Ok(v) => v,
            Err(Error::Storage(zeo_storage::Error::Conflict {
                oid,
                committed,
                old,
            })) => return Err(VoteFailure::Conflict(Unresolved::new(oid, committed, old))),
            Err(e) => return Err(e.into()),
        };
        let items = replies::vote(&value).map_err(|e| Error::Protocol(e.to_string()))?;
        let mut conflicts = Vec::new();
        for item in items {
            match item {
                VoteItem::Changed(oid) => {
                    writes.server_resolved.insert(oid);
                }
                VoteItem::Conflict(c) => conflicts.push(c),
            }
        }
        if conflicts.is_empty() {
            Ok(VoteStep::Done(writes.voted()))
        } else {
            Ok(VoteStep::Resolve(conflicts))
        }
    }

    /// What to re-store for `conflict` given the resolver's answer
    /// (`None`: no resolver, or it could not resolve).
    ///
    /// # Errors
    ///
    /// [`Unresolved`] without resolved data.
    pub fn resolution(
        &self,
        conflict: &VoteConflict,
        resolved: Option<Vec<u8>>,
    ) -> Result<Vec<u8>, Unresolved> {
        resolved.ok_or_else(|| Unresolved::new(conflict.oid, conflict.committed, conflict.old))
    }

    /// The resolved `data` for `oid` was re-stored (as a revision of the
    /// committed serial).
    pub fn restored_resolution(&self, writes: &mut TxnWrites, oid: Oid, data: Vec<u8>) {
        writes.resolved(oid, data);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn conflict(oid: u64) -> VoteConflict {
        VoteConflict {
            oid: Oid(oid),
            committed: Tid(20),
            old: Tid(10),
            data: b"mine".to_vec(),
        }
    }

    fn reply(items: Vec<Value>) -> Result<Value> {
        Ok(Value::List(items))
    }

    fn changed(oid: u64) -> Value {
        Value::Bytes(Oid(oid).to_bytes().to_vec())
    }

    #[test]
    fn a_clean_vote_returns_the_server_changed_oids_sorted() {
        let mut writes = TxnWrites::default();
        writes.stored(Oid(1), b"a".to_vec());
        let mut vote = Vote::default();
        vote.start_round().unwrap();
        let step = vote
            .on_reply(&mut writes, reply(vec![changed(9), changed(3)]))
            .unwrap();
        assert!(matches!(step, VoteStep::Done(oids) if oids == vec![Oid(3), Oid(9)]));
        // None too.
        let step = vote.on_reply(&mut writes, Ok(Value::None)).unwrap();
        assert!(matches!(step, VoteStep::Done(oids) if oids.len() == 2));
    }

    #[test]
    fn conflicts_are_resolved_in_order_and_listed_after_the_servers() {
        let mut writes = TxnWrites::default();
        let mut vote = Vote::default();
        vote.start_round().unwrap();
        let wire = zeo_protocol::reply::vote_conflicts(&[conflict(5), conflict(2)]);
        let Value::List(mut items) = wire else {
            panic!("vote_conflicts builds a list")
        };
        items.push(changed(7));
        let VoteStep::Resolve(conflicts) = vote.on_reply(&mut writes, reply(items)).unwrap() else {
            panic!("conflicts to resolve")
        };
        assert_eq!(conflicts, vec![conflict(5), conflict(2)]);
        for c in &conflicts {
            let data = vote.resolution(c, Some(b"merged".to_vec())).unwrap();
            vote.restored_resolution(&mut writes, c.oid, data);
        }
        vote.start_round().unwrap();
        let step = vote.on_reply(&mut writes, reply(Vec::new())).unwrap();
        assert!(matches!(step, VoteStep::Done(oids) if oids == vec![Oid(7), Oid(5), Oid(2)]));
    }

    #[test]
    fn an_unresolved_conflict_stands_and_names_its_object() {
        let vote = Vote::default();
        let err = vote.resolution(&conflict(4), None).unwrap_err();
        assert_eq!(err.oid, Oid(4));
        assert!(err.error.is_conflict(), "{}", err.error);
        // A ConflictError raised by the server stands the same way.
        let mut vote = Vote::default();
        let raised = Err(Error::Storage(zeo_storage::Error::Conflict {
            oid: Oid(8),
            committed: Tid(2),
            old: Tid(1),
        }));
        match vote.on_reply(&mut TxnWrites::default(), raised) {
            Err(VoteFailure::Conflict(u)) => assert_eq!(u.oid, Oid(8)),
            other => panic!("{other:?}"),
        }
        let lost = Err(Error::Disconnected("gone".into()));
        assert!(matches!(
            vote.on_reply(&mut TxnWrites::default(), lost),
            Err(VoteFailure::Other(Error::Disconnected(_)))
        ));
    }

    #[test]
    fn the_vote_gives_up_after_nine_rounds() {
        let mut vote = Vote::default();
        for _ in 0..MAX_VOTE_ROUNDS {
            vote.start_round().unwrap();
        }
        let err = vote.start_round().unwrap_err();
        assert!(err.to_string().contains("after 9 vote rounds"), "{err}");
    }

    #[test]
    fn a_malformed_vote_reply_is_a_protocol_error() {
        let mut vote = Vote::default();
        let bad = vote.on_reply(&mut TxnWrites::default(), Ok(Value::Int(3)));
        assert!(matches!(bad, Err(VoteFailure::Other(Error::Protocol(_)))));
    }

    #[test]
    fn finish_caches_only_what_the_server_did_not_change() {
        let mut writes = TxnWrites::default();
        writes.stored(Oid(1), b"kept".to_vec());
        writes.stored(Oid(2), b"changed by the server".to_vec());
        writes.deleted(Oid(3));
        writes.restored(Oid(4));
        let mut vote = Vote::default();
        // 2 resolved by the server, 6 undone (never stored here).
        vote.on_reply(&mut writes, reply(vec![changed(2), changed(6)]))
            .unwrap();
        let mut updates = writes.cache_updates();
        updates.sort_by_key(|u| u.oid);
        let update = |oid, data: Option<&[u8]>| CacheUpdate {
            oid: Oid(oid),
            data: data.map(<[u8]>::to_vec),
        };
        assert_eq!(
            updates,
            vec![
                update(1, Some(b"kept")),
                update(2, None),
                update(3, None),
                update(4, None),
                update(6, None),
            ]
        );
    }
}
