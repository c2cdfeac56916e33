//! Which transactions committed after a tid, and which objects each
//! changed: what seeds a server's invalidation queue, and what a poll for
//! commits made by other processes (RelStorage applications) reads.

use postgres::GenericClient;
use zeo_storage::{Oid, Tid};

use crate::error::Result;
use crate::options::HistoryMode;

/// A transaction and the objects it changed, in oid order.
pub type Change = (Tid, Vec<Oid>);

fn rows_to_changes(rows: Vec<postgres::Row>) -> Vec<Change> {
    rows.iter()
        .map(|r| {
            let tid: i64 = r.get(0);
            let oids: Vec<i64> = r.get(1);
            (
                Tid(tid as u64),
                oids.into_iter().map(|o| Oid(o as u64)).collect(),
            )
        })
        .collect()
}

/// The changes `filter` (a SQL condition on `tid`, with `$1`) selects,
/// the first `limit` in `order`, as `(tid, oids)` rows.
fn select(
    client: &mut impl GenericClient,
    mode: HistoryMode,
    filter: &str,
    order: &str,
    bound: i64,
    limit: usize,
) -> Result<Vec<Change>> {
    let limit = limit.min(i64::MAX as usize) as i64;
    let sql = match mode {
        HistoryMode::Preserving => format!(
            "SELECT t.tid, COALESCE(array_agg(s.zoid ORDER BY s.zoid) \
                 FILTER (WHERE s.zoid IS NOT NULL), '{{}}') \
             FROM \"transaction\" t LEFT JOIN object_state s USING (tid) \
             WHERE t.{filter} GROUP BY t.tid ORDER BY t.tid {order} LIMIT $2"
        ),
        HistoryMode::Free => format!(
            "SELECT tid, array_agg(zoid ORDER BY zoid) FROM object_state \
             WHERE {filter} GROUP BY tid ORDER BY tid {order} LIMIT $2"
        ),
    };
    let rows = client.query(&sql, &[&bound, &limit])?;
    Ok(rows_to_changes(rows))
}

/// Up to `limit` transactions with a tid after `after`, oldest first.
///
/// The history-free schema keeps only current revisions, so there a
/// transaction appears only with the objects whose current revision it
/// still wrote; transactions entirely superseded since do not appear.
pub fn changes_after(
    client: &mut impl GenericClient,
    mode: HistoryMode,
    after: Tid,
    limit: usize,
) -> Result<Vec<Change>> {
    select(client, mode, "tid > $1", "ASC", after.0 as i64, limit)
}

/// The newest `count` transactions, oldest first.
pub fn newest_changes(
    client: &mut impl GenericClient,
    mode: HistoryMode,
    count: usize,
) -> Result<Vec<Change>> {
    // Tid 0 is the history-preserving schema's "before creation" row.
    let mut changes = select(client, mode, "tid > $1", "DESC", 0, count)?;
    changes.reverse();
    Ok(changes)
}
