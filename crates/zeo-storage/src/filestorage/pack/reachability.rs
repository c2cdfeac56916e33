//! Pack's first pass: the records current at the pack time
//! (`GC.buildPackIndex`), the records after it that point back before it
//! (`GC.findReachableFromFuture`), and from them what the new file keeps.

use std::collections::HashMap;

use crate::error::{Error, Result};
use crate::gc::{self, PackView, Reachable};
use crate::ids::{Oid, Tid};

use crate::filestorage::format::{Reader, FIRST_TXN_POS, STATUS_PACKED};
use crate::filestorage::walker::{Dialect, Next, Walker};

/// What the scan up to the pack time found (`GC.buildPackIndex`).
pub(super) struct PackScan {
    /// oid → its record current at the pack time, for objects that existed.
    pub current: HashMap<u64, u64>,
    /// Position of the first transaction after the pack time (or the end).
    pub packpos: u64,
    /// Tid of the last transaction scanned, for the time-stamp check of the
    /// transactions after it.
    pub ltid: Tid,
}

/// Scans the transactions up to the pack time, checking them as ZODB does;
/// `None` when the pack would be redundant (everything before the pack
/// position was packed already, and so is what follows it).
pub(super) fn scan_to_pack_time(r: &Reader<'_>, stop: Tid) -> Result<Option<PackScan>> {
    let mut current: HashMap<u64, u64> = HashMap::new();
    let mut walk = Walker::over(r, FIRST_TXN_POS, Tid::ZERO, Dialect::Pack).stop_after(stop);
    let mut unpacked = false;
    let mut last_status = None;
    while let Next::Txn(txn) = walk.next_txn()? {
        if txn.header.status != STATUS_PACKED {
            unpacked = true;
        }
        last_status = Some(txn.header.status);
        while let Some(rec) = walk.next_record()? {
            let dh = rec.header;
            if dh.plen > 0 || dh.back != 0 {
                current.insert(dh.oid.0, rec.pos);
            } else {
                current.remove(&dh.oid.0);
            }
        }
        walk.finish_txn()?;
    }
    let pos = walk.pos();
    if !unpacked {
        let next_status = if pos < r.end() {
            Some(r.txn_header(pos)?.status)
        } else {
            last_status
        };
        if next_status == Some(STATUS_PACKED) {
            return Ok(None);
        }
    }
    Ok(Some(PackScan {
        current,
        packpos: pos,
        ltid: walk.ltid(),
    }))
}

/// The records after the pack position that point back before it, in file
/// order (`GC.findReachableFromFuture`'s scan).
fn future_backpointers(r: &Reader<'_>, packpos: u64, ltid: Tid) -> Result<Vec<(Oid, u64)>> {
    let mut out = Vec::new();
    let mut walk = Walker::over(r, packpos, ltid, Dialect::Pack);
    while let Next::Txn(_) = walk.next_txn()? {
        while let Some(rec) = walk.next_record()? {
            let dh = rec.header;
            if dh.back != 0 && dh.back < packpos {
                out.push((dh.oid, dh.back));
            }
        }
        walk.finish_txn()?;
    }
    Ok(out)
}

/// The file as of the pack time, for the reachability walk.
struct View<'a> {
    r: Reader<'a>,
    current: &'a HashMap<u64, u64>,
}

impl PackView for View<'_> {
    type Pos = u64;

    fn current_at_pack(&self, oid: Oid) -> Option<u64> {
        self.current.get(&oid.0).copied()
    }

    fn nothing_at_pack(&self) -> bool {
        self.current.is_empty()
    }

    fn record_data(&self, pos: u64) -> Result<Option<std::borrow::Cow<'_, [u8]>>> {
        let h = self.r.data_header(pos)?;
        let data = if h.plen > 0 {
            Some(self.r.record_data(pos, &h)?)
        } else {
            self.r.load_back(h.oid, h.back, pos)?.map(|b| b.data)
        };
        Ok(data.map(std::borrow::Cow::Owned))
    }
}

/// The records the new file keeps before the pack position: with `gc`,
/// those reachable from the root at the pack time or from a later
/// transaction; without, every record current at the pack time.
pub(super) fn reachable(r: &Reader<'_>, scan: &PackScan, gc: bool) -> Result<Reachable<u64>> {
    if !gc {
        return Ok(Reachable::from_current(
            scan.current.iter().map(|(&oid, &pos)| (Oid(oid), pos)),
        ));
    }
    let future = future_backpointers(r, scan.packpos, scan.ltid)?;
    let view = View {
        r: *r,
        current: &scan.current,
    };
    let references = |data: &[u8]| -> Result<Vec<Oid>> {
        zeo_pickle::references(data)
            .map(|oids| oids.into_iter().map(Oid).collect())
            .map_err(|e| Error::Storage(format!("pack: finding the references of a record: {e}")))
    };
    gc::find_reachable(&view, future, &references)
}
