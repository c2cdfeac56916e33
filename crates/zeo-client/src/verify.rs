//! ZEO 5's cache verification (`ClientIO.verify`) as decisions, without
//! I/O: from what the cache holds and the server's last transaction, what
//! to ask the server and what to drop.
//!
//! The connection manager runs the plan: it asks `getInvalidations` when
//! told to, applies the outcome to the cache and tells the application.

use zeo_pickle::Value;
use zeo_storage::{Oid, Tid};

/// What to do with the cache on connecting to a server whose last
/// transaction is `server_tid`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Plan {
    /// The cache is empty or as new as the server: nothing to verify.
    Current,
    /// A non-empty cache without a last tid cannot be verified: clear it.
    Clear,
    /// The cache saw transactions the server does not have (another
    /// server's cache, or a restored server): refuse to go on.
    NewerThanServer { cache: Tid },
    /// Ask the server what changed after `since`.
    AskSince { since: Tid },
}

/// The plan for a cache (`empty`, with last tid `cache_tid`) and a server
/// at `server_tid`.
pub(crate) fn plan(empty: bool, cache_tid: Option<Tid>, server_tid: Tid) -> Plan {
    if empty {
        return Plan::Current;
    }
    match cache_tid {
        None => Plan::Clear,
        Some(cache) if cache > server_tid => Plan::NewerThanServer { cache },
        Some(cache) if cache == server_tid => Plan::Current,
        Some(since) => Plan::AskSince { since },
    }
}

/// What `getInvalidations` told us.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Catchup {
    /// Drop the current revisions of `oids`, changed up to `latest`; the
    /// cache continues from `tid`.
    Invalidate {
        latest: Tid,
        oids: Vec<Oid>,
        tid: Tid,
    },
    /// The server no longer knows that far back: drop the whole cache.
    TooOld,
}

/// The outcome of a `getInvalidations` answer (`None`: too old to verify)
/// for a server at `server_tid`.
pub(crate) fn catch_up(answer: Option<(Tid, Vec<Oid>)>, server_tid: Tid) -> Catchup {
    match answer {
        Some((latest, oids)) => Catchup::Invalidate {
            latest,
            oids,
            tid: latest.max(server_tid),
        },
        None => Catchup::TooOld,
    }
}

/// What the client keeps of `get_info`'s answer.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct ServerInfo {
    /// Objects in the storage.
    pub length: u64,
    /// Bytes of the storage.
    pub size: u64,
    /// Whether the storage undoes.
    pub supports_undo: bool,
}

/// Reads `get_info`'s dict; `None` for anything else.
pub(crate) fn server_info(info: &Value) -> Option<ServerInfo> {
    let Value::Dict(entries) = info else {
        return None;
    };
    let get = |key: &str| {
        entries.iter().find_map(|(k, v)| match (k, v) {
            (Value::Str(k), Value::Int(n)) if k == key => u64::try_from(*n).ok(),
            _ => None,
        })
    };
    let supports_undo = entries
        .iter()
        .any(|(k, v)| matches!((k, v), (Value::Str(k), Value::Bool(true)) if k == "supportsUndo"));
    Some(ServerInfo {
        length: get("length").unwrap_or(0),
        size: get("size").unwrap_or(0),
        supports_undo,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_plan_follows_the_cache_and_the_server() {
        assert_eq!(plan(true, None, Tid(5)), Plan::Current);
        assert_eq!(plan(true, Some(Tid(9)), Tid(5)), Plan::Current);
        assert_eq!(plan(false, None, Tid(5)), Plan::Clear);
        assert_eq!(plan(false, Some(Tid(5)), Tid(5)), Plan::Current);
        assert_eq!(
            plan(false, Some(Tid(6)), Tid(5)),
            Plan::NewerThanServer { cache: Tid(6) }
        );
        assert_eq!(
            plan(false, Some(Tid(3)), Tid(5)),
            Plan::AskSince { since: Tid(3) }
        );
    }

    #[test]
    fn catching_up_continues_from_the_later_tid() {
        assert_eq!(
            catch_up(Some((Tid(4), vec![Oid(1)])), Tid(5)),
            Catchup::Invalidate {
                latest: Tid(4),
                oids: vec![Oid(1)],
                tid: Tid(5)
            }
        );
        // A commit that landed between register and getInvalidations.
        assert_eq!(
            catch_up(Some((Tid(7), Vec::new())), Tid(5)),
            Catchup::Invalidate {
                latest: Tid(7),
                oids: Vec::new(),
                tid: Tid(7)
            }
        );
        assert_eq!(catch_up(None, Tid(5)), Catchup::TooOld);
    }

    #[test]
    fn server_info_reads_what_it_knows_and_defaults_the_rest() {
        let info = Value::Dict(vec![
            (Value::Str("length".into()), Value::Int(12)),
            (Value::Str("size".into()), Value::Int(-1)),
            (Value::Str("supportsUndo".into()), Value::Bool(true)),
            (Value::Int(3), Value::Int(4)),
        ]);
        assert_eq!(
            server_info(&info),
            Some(ServerInfo {
                length: 12,
                size: 0,
                supports_undo: true
            })
        );
        assert_eq!(server_info(&Value::None), None);
    }
}
