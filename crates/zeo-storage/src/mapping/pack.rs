//! Pack in the model: the state a pack leaves, computed from the records
//! as FileStorage's packer copies them.

use super::*;

/// Looks up the revision current at the pack time for the reachability walk.
struct PackIndexView<'a> {
    committed: &'a Committed,
    current: &'a BTreeMap<Oid, RecId>,
}

impl PackView for PackIndexView<'_> {
    type Pos = RecId;

    fn current_at_pack(&self, oid: Oid) -> Option<RecId> {
        self.current.get(&oid).copied()
    }

    fn nothing_at_pack(&self) -> bool {
        self.current.is_empty()
    }

    fn record_data(&self, pos: RecId) -> Result<Option<Cow<'_, [u8]>>> {
        Ok(self.committed.resolve(pos)?.map(|d| Cow::Owned(d.to_vec())))
    }
}

/// Computes the packed state, `Ok(None)` when the pack changes nothing
/// (redundant, or nothing to free). See [`crate::gc`] for the rule.
fn pack_state(
    committed: &Committed,
    stop: Tid,
    gc_enabled: bool,
    references: gc::ReferencesFn<'_>,
) -> Result<Option<Committed>> {
    let before: Vec<&Arc<Txn>> = committed.txns.range(..=stop).map(|(_, t)| t).collect();
    let after: Vec<&Arc<Txn>> = committed
        .txns
        .range(stop.next()..)
        .map(|(_, t)| t)
        .collect();

    let mut current: BTreeMap<Oid, RecId> = BTreeMap::new();
    let mut unpacked = false;
    for txn in &before {
        if txn.status != TxnStatus::Packed {
            unpacked = true;
        }
        for (idx, rec) in txn.records.iter().enumerate() {
            match rec.payload {
                Payload::Nothing => {
                    current.remove(&rec.oid);
                }
                _ => {
                    current.insert(rec.oid, RecId { txn: txn.tid, idx });
                }
            }
        }
    }
    if !unpacked {
        // ZODB's redundant-pack check looks at the first transaction after
        // the pack time, or at the last one scanned when there is none.
        if let Some(next) = after.first().or(before.last()) {
            if next.status == TxnStatus::Packed {
                return Ok(None);
            }
        }
    }

    let reachable = if gc_enabled {
        let view = PackIndexView {
            committed,
            current: &current,
        };
        let future = after.iter().flat_map(|txn| {
            txn.records.iter().filter_map(|rec| match rec.payload {
                Payload::Back(b) if b.txn <= stop => Some((rec.oid, b)),
                _ => None,
            })
        });
        gc::find_reachable(&view, future, references)?
    } else {
        Reachable::from_current(current.iter().map(|(o, p)| (*o, *p)))
    };

    let mut out = Committed {
        last_tid: committed.last_tid,
        ..Committed::default()
    };
    let mut input_pos = FILE_HEADER_LEN;
    let mut output_pos = FILE_HEADER_LEN;
    for txn in &before {
        input_pos += txn.tlen() + TXN_TRAILER_LEN;
        let mut records = Vec::new();
        for (idx, rec) in txn.records.iter().enumerate() {
            if !reachable.is_reachable(rec.oid, RecId { txn: txn.tid, idx }) {
                continue;
            }
            let payload = match committed.resolve(RecId { txn: txn.tid, idx })? {
                Some(d) if !d.is_empty() => Payload::Data(d),
                _ => Payload::Nothing,
            };
            out.index.insert(
                rec.oid,
                RecId {
                    txn: txn.tid,
                    idx: records.len(),
                },
            );
            records.push(Record {
                oid: rec.oid,
                tid: rec.tid,
                prev: None,
                payload,
            });
        }
        if records.is_empty() {
            continue;
        }
        let packed = Txn {
            tid: txn.tid,
            status: TxnStatus::Packed,
            meta: txn.meta.clone(),
            records,
        };
        output_pos += packed.tlen() + TXN_TRAILER_LEN;
        out.txns.insert(packed.tid, Arc::new(packed));
    }
    if input_pos == output_pos {
        // Nothing would be freed: ZODB abandons the pack, statuses included.
        return Ok(None);
    }

    for txn in &after {
        let mut records = Vec::with_capacity(txn.records.len());
        let mut tindex = HashMap::new();
        for rec in &txn.records {
            let (data, prev_txn) = match &rec.payload {
                Payload::Data(d) => (Some(d.clone()), None),
                Payload::Back(b) => (committed.resolve(*b)?, Some(committed.record(*b)?.tid)),
                Payload::Nothing => (None, None),
            };
            // A target transaction that did not survive (possible without
            // GC) makes ZODB's packer fail; the data goes inline instead.
            let back = prev_txn
                .and_then(|t| out.txns.get(&t))
                .and_then(|target| first_matching_record(target, rec.oid, data.as_deref()));
            let payload = match (back, data) {
                (Some(b), _) => Payload::Back(b),
                (None, None) => Payload::Nothing,
                (None, Some(d)) => Payload::Data(d),
            };
            tindex.insert(
                rec.oid,
                RecId {
                    txn: txn.tid,
                    idx: records.len(),
                },
            );
            records.push(Record {
                oid: rec.oid,
                tid: rec.tid,
                prev: out.index.get(&rec.oid).copied(),
                payload,
            });
        }
        let copied = Txn {
            tid: txn.tid,
            status: txn.status,
            meta: txn.meta.clone(),
            records,
        };
        // Inlined data can change the transaction's length, which ZODB's
        // packer asserts against; the copy simply has its new length.
        output_pos += copied.tlen() + TXN_TRAILER_LEN;
        out.index.extend(tindex);
        out.txns.insert(copied.tid, Arc::new(copied));
    }
    out.size = output_pos;
    Ok(Some(out))
}

/// The packer's `_data_find`: the first record of `oid` in `txn`, accepted
/// when it is itself a backpointer or holds exactly `data`.
fn first_matching_record(txn: &Txn, oid: Oid, data: Option<&[u8]>) -> Option<RecId> {
    let (idx, rec) = txn.records.iter().enumerate().find(|(_, r)| r.oid == oid)?;
    let id = RecId { txn: txn.tid, idx };
    match (&rec.payload, data) {
        (Payload::Back(_) | Payload::Nothing, _) => Some(id),
        (Payload::Data(d), Some(want)) if **d == *want => Some(id),
        _ => None,
    }
}

impl Pack for MappingStorage {
    fn pack(&self, pack_time: f64, gc: bool) -> Result<()> {
        self.check_open()?;
        let stop = TimeStamp::from_unix(pack_time).tid();
        if stop == Tid::ZERO {
            return Err(Error::FileStorage("Invalid pack time".into()));
        }
        if self.read_committed().index.is_empty() {
            return Ok(());
        }
        // Like ZODB's packer, hold the commit lock while rewriting, so no
        // transaction commits meanwhile; readers go on.
        let guard = self.lock_idle()?;
        let committed = self.read_committed().clone();
        if let Some(packed) = pack_state(&committed, stop, gc, &*self.references)? {
            self.install(packed);
            // Still under the commit lock: no file of a transaction in
            // progress can be taken for a packed one.
            self.remove_packed_blobs()?;
        }
        drop(guard);
        self.commit_free.notify_one();
        Ok(())
    }
}

impl MappingStorage {
    /// Removes the blob files whose revision no longer loads after a pack,
    /// as ZODB's `BlobStorage` wrapper does around a storage without blob
    /// support of its own.
    fn remove_packed_blobs(&self) -> Result<()> {
        let Some(blobs) = &self.blobs else {
            return Ok(());
        };
        for (oid, tid, _) in blobs.dir.list_blobs()? {
            match self.load_serial(oid, tid) {
                Ok(_) => {}
                Err(e) if e.is_pos_key() => blobs.dir.remove_revision(oid, tid)?,
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }
}
