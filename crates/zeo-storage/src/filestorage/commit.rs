//! Two-phase commit: the commit lock, staging data records in a temporary
//! file, writing the transaction at vote, and finish in two halves: the
//! status flip and the lock's release at submit, then the covering fsync
//! (shared by every transaction submitted meanwhile, see `sync_group.rs`)
//! and the index publication, in commit order.
//!
//! The commit lock is "a transaction is active" in [`CommitState`], waited on
//! with a condition variable; the mutex around the state is only held for
//! the duration of one call, so a blocked `tpc_begin` does not hold up the
//! active transaction's calls.

use std::collections::HashMap;
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::atomic::Ordering;
use std::sync::{Arc, MutexGuard};
use std::time::Instant;

use super::check_metadata_lengths;
use crate::error::{Error, Result};
use crate::ids::{Oid, Tid};
use crate::interface::{BeginOptions, TransactionMetaData, TxnHandle, TxnStatus};
use crate::timestamp::TimeStamp;

use super::fault::Io;
use super::format::{
    DataHeader, Reader, TxnHeader, DATA_HEADER_LEN, STATUS_CHECKPOINT, TXN_HEADER_LEN,
};
use super::sync_group::{Queue, MAX_GATHER};
use super::{lock, FileStorage};

/// Records staged in memory before they spill to the temporary file.
const STAGE_BUFFER: usize = 256 * 1024;
/// Copy chunk when moving staged records into the data file.
const COPY_CHUNK: usize = 1 << 20;
/// A temporary file larger than this is shrunk when a transaction begins.
const TMP_KEEP: u64 = 64 << 20;

/// The data records of the active transaction, in the order they will be
/// written: the first part in a temporary file, the tail in a buffer.
pub(crate) struct Staged {
    io: Io,
    file: Option<File>,
    flushed: u64,
    buf: Vec<u8>,
}

impl Staged {
    fn new(file: Option<File>, io: Io) -> Self {
        Staged {
            io,
            file,
            flushed: 0,
            buf: Vec::new(),
        }
    }

    /// Total staged bytes.
    pub(crate) fn len(&self) -> u64 {
        self.flushed + self.buf.len() as u64
    }

    fn tmp(&self) -> Result<&File> {
        self.file.as_ref().ok_or(Error::ReadOnly)
    }

    /// Appends bytes.
    pub(crate) fn append(&mut self, bytes: &[u8]) -> Result<()> {
        if self.buf.len() + bytes.len() > STAGE_BUFFER {
            self.spill()?;
        }
        if bytes.len() > STAGE_BUFFER {
            self.io
                .write_all_at(self.tmp()?, bytes, self.flushed)
                .map_err(|e| Error::io("writing the commit temporary file", e))?;
            self.flushed += bytes.len() as u64;
        } else {
            self.buf.extend_from_slice(bytes);
        }
        Ok(())
    }

    fn spill(&mut self) -> Result<()> {
        if !self.buf.is_empty() {
            self.io
                .write_all_at(self.tmp()?, &self.buf, self.flushed)
                .map_err(|e| Error::io("writing the commit temporary file", e))?;
            self.flushed += self.buf.len() as u64;
            self.buf.clear();
        }
        Ok(())
    }

    /// Reads staged bytes at `offset`.
    pub(crate) fn read_at(&self, offset: u64, out: &mut [u8]) -> Result<()> {
        let end = offset
            .checked_add(out.len() as u64)
            .filter(|&e| e <= self.len());
        if end.is_none() {
            return Err(Error::Storage(format!(
                "staged record at {offset} out of range"
            )));
        }
        let mut done = 0usize;
        if offset < self.flushed {
            let n = ((self.flushed - offset) as usize).min(out.len());
            self.tmp()?
                .read_exact_at(&mut out[..n], offset)
                .map_err(|e| Error::io("reading the commit temporary file", e))?;
            done = n;
        }
        if done < out.len() {
            let from = (offset + done as u64 - self.flushed) as usize;
            let n = out.len() - done;
            out[done..].copy_from_slice(&self.buf[from..from + n]);
        }
        Ok(())
    }

    /// Forgets everything staged after `len` bytes.
    pub(crate) fn truncate(&mut self, len: u64) {
        if len >= self.flushed {
            self.buf.truncate((len - self.flushed) as usize);
        } else {
            self.buf.clear();
            self.flushed = len;
        }
    }

    fn reset(&mut self) {
        if self.flushed > TMP_KEEP {
            if let Some(f) = &self.file {
                let _ = f.set_len(0);
            }
        }
        self.flushed = 0;
        self.buf.clear();
    }
}

/// The transaction between `tpc_begin` and `tpc_finish`/`tpc_abort`.
pub(crate) struct ActiveTxn {
    pub(crate) handle: TxnHandle,
    pub(crate) tid: Tid,
    pub(crate) status: u8,
    pub(crate) meta: TransactionMetaData,
    /// Header length (23 + user + description + extension).
    pub(crate) thl: u64,
    /// Committed size when the transaction began: where it will be written.
    pub(crate) base: u64,
    /// oid → position its staged record will have in the data file.
    pub(crate) tindex: HashMap<u64, u64>,
    /// oids in the order they were first staged (the index update order).
    pub(crate) order: Vec<u64>,
    /// Set by vote: the committed size after finish.
    pub(crate) next_pos: Option<u64>,
}

impl ActiveTxn {
    /// The data-file position the next staged record will get.
    pub(crate) fn here(&self, staged: &Staged) -> u64 {
        self.base + self.thl + staged.len()
    }

    pub(crate) fn record(&mut self, oid: Oid, pos: u64) {
        if self.tindex.insert(oid.0, pos).is_none() {
            self.order.push(oid.0);
        }
    }
}

/// Commit-side state, under `FileStorage::commit`.
pub(crate) struct CommitState {
    pub(crate) active: Option<ActiveTxn>,
    pub(crate) staged: Staged,
    next_handle: u64,
    /// The last tid handed out (`_ts`), so tids keep increasing even when
    /// the clock does not.
    last_ts: Tid,
    /// A failed abort may have left bytes past the committed end.
    dirty_tail: bool,
}

impl CommitState {
    pub(crate) fn new(ltid: Tid, read_only: bool, data_path: &Path, io: Io) -> Result<Self> {
        let file = if read_only {
            None
        } else {
            let dir = data_path
                .parent()
                .filter(|d| !d.as_os_str().is_empty())
                .unwrap_or(Path::new("."));
            let f = tempfile::tempfile_in(dir)
                .or_else(|_| tempfile::tempfile())
                .map_err(|e| Error::io("creating the commit temporary file", e))?;
            Some(f)
        };
        Ok(CommitState {
            active: None,
            staged: Staged::new(file, io),
            next_handle: 1,
            last_ts: ltid,
            dirty_tail: false,
        })
    }
}

impl FileStorage {
    fn commit_state(&self) -> MutexGuard<'_, CommitState> {
        lock(&self.commit)
    }

    fn writable(&self) -> Result<()> {
        self.check_open()?;
        if self.read_only {
            return Err(Error::ReadOnly);
        }
        if let Some(why) = lock(&self.write_failure).as_ref() {
            return Err(Error::Storage(format!(
                "{}: writes refused until the storage is reopened: {why}",
                self.path.display()
            )));
        }
        Ok(())
    }

    /// Runs `f` on the active transaction named `txn`.
    pub(crate) fn with_txn<R>(
        &self,
        txn: TxnHandle,
        f: impl FnOnce(&mut ActiveTxn, &mut Staged) -> Result<R>,
    ) -> Result<R> {
        self.writable()?;
        let mut st = self.commit_state();
        let st = &mut *st;
        match st.active.as_mut() {
            Some(a) if a.handle == txn => f(a, &mut st.staged),
            _ => Err(Error::Transaction(format!(
                "transaction {} is not the current transaction",
                txn.0
            ))),
        }
    }

    fn with_unvoted<R>(
        &self,
        txn: TxnHandle,
        what: &str,
        f: impl FnOnce(&mut ActiveTxn, &mut Staged) -> Result<R>,
    ) -> Result<R> {
        self.with_txn(txn, |a, s| {
            if a.next_pos.is_some() {
                return Err(Error::Transaction(format!("{what} after tpc_vote")));
            }
            f(a, s)
        })
    }

    pub(crate) fn begin(
        &self,
        meta: &TransactionMetaData,
        options: BeginOptions,
    ) -> Result<TxnHandle> {
        self.writable()?;
        check_metadata_lengths(meta)?;
        if matches!(options.status, TxnStatus::Checkpoint | TxnStatus::Undone) {
            return Err(Error::InvalidArgument(format!(
                "a transaction cannot be committed with status {:?}",
                options.status.as_byte() as char
            )));
        }
        let mut st = self.commit_state();
        if st.active.is_some() {
            let _waiting = CountedWait::new(&self.commit_waiters);
            while st.active.is_some() {
                st = self
                    .commit_done
                    .wait(st)
                    .unwrap_or_else(std::sync::PoisonError::into_inner);
                self.check_open()?;
            }
        }
        // Transactions submitted but not yet durable are part of the file:
        // this one goes after them, with a later tid.
        let tail = self.group.lock().tail();
        let (base, ltid) = match tail {
            Some(tail) => tail,
            None => {
                let p = self.read_published();
                (p.pos, p.ltid)
            }
        };
        let tid = match options.tid {
            Some(tid) => {
                if tid <= ltid {
                    return Err(Error::InvalidArgument(format!(
                        "tid {tid} is not later than the last transaction {ltid}"
                    )));
                }
                tid
            }
            None => TimeStamp::now()
                .later_than(TimeStamp::from_tid(st.last_ts.max(ltid)))
                .tid(),
        };
        st.last_ts = tid;
        let handle = TxnHandle(st.next_handle);
        st.next_handle += 1;
        st.staged.reset();
        let thl = TXN_HEADER_LEN
            + (meta.user.len() + meta.description.len() + meta.extension.len()) as u64;
        self.txn_open.store(true, Ordering::Release);
        st.active = Some(ActiveTxn {
            handle,
            tid,
            status: options.status.as_byte(),
            meta: meta.clone(),
            thl,
            base,
            tindex: HashMap::new(),
            order: Vec::new(),
            next_pos: None,
        });
        Ok(handle)
    }

    pub(crate) fn txn_tid(&self, txn: TxnHandle) -> Result<Tid> {
        self.with_txn(txn, |a, _| Ok(a.tid))
    }

    /// The committed position and header of `oid`'s current record.
    fn committed_header(&self, oid: Oid) -> Result<Option<(u64, DataHeader)>> {
        let (file, end, pos) = {
            let p = self.read_published();
            match p.index.get(oid.0) {
                Some(pos) => (Arc::clone(&p.file), p.pos, pos),
                None => return Ok(None),
            }
        };
        let h = self.reader(&file, end).data_header_for(pos, oid)?;
        Ok(Some((pos, h)))
    }

    /// Stages one record: header, then data or backpointer.
    fn stage(
        a: &mut ActiveTxn,
        staged: &mut Staged,
        h: &DataHeader,
        data: Option<&[u8]>,
    ) -> Result<()> {
        let here = a.here(staged);
        let mut head = Vec::with_capacity(DATA_HEADER_LEN as usize + 8);
        head.extend_from_slice(&h.to_bytes());
        let mark = staged.len();
        let res = match data {
            Some(d) if h.plen > 0 => staged.append(&head).and_then(|_| staged.append(d)),
            _ => {
                head.extend_from_slice(&h.back.to_be_bytes());
                staged.append(&head)
            }
        };
        if let Err(e) = res {
            staged.truncate(mark);
            return Err(e);
        }
        a.record(h.oid, here);
        Ok(())
    }

    pub(crate) fn store_record(
        &self,
        txn: TxnHandle,
        oid: Oid,
        serial: Tid,
        data: &[u8],
    ) -> Result<()> {
        if data.is_empty() {
            return Err(Error::InvalidArgument(
                "cannot store an empty data record".into(),
            ));
        }
        self.wait_for_oid(oid)?;
        self.with_unvoted(txn, "store", |a, staged| {
            self.raise_max_oid(oid);
            let old = self.committed_header(oid)?;
            let prev = match old {
                Some((pos, h)) => {
                    if h.tid != serial {
                        return Err(Error::Conflict {
                            oid,
                            committed: h.tid,
                            old: serial,
                        });
                    }
                    pos
                }
                None => 0,
            };
            let h = DataHeader {
                oid,
                tid: a.tid,
                prev,
                tloc: a.base,
                plen: data.len() as u64,
                back: 0,
            };
            Self::stage(a, staged, &h, Some(data))
        })
    }

    pub(crate) fn delete_record(&self, txn: TxnHandle, oid: Oid, serial: Tid) -> Result<()> {
        self.wait_for_oid(oid)?;
        self.with_unvoted(txn, "delete_object", |a, staged| {
            let Some((pos, h)) = self.committed_header(oid)? else {
                return Err(Error::pos_key(oid));
            };
            if h.tid != serial {
                return Err(Error::Conflict {
                    oid,
                    committed: h.tid,
                    old: serial,
                });
            }
            let h = DataHeader {
                oid,
                tid: a.tid,
                prev: pos,
                tloc: a.base,
                plen: 0,
                back: 0,
            };
            Self::stage(a, staged, &h, None)
        })
    }

    pub(crate) fn restore_record(
        &self,
        txn: TxnHandle,
        oid: Oid,
        serial: Tid,
        data: Option<&[u8]>,
        prev_txn: Option<Tid>,
    ) -> Result<()> {
        if data.is_some_and(<[u8]>::is_empty) {
            return Err(Error::InvalidArgument(
                "cannot restore an empty data record".into(),
            ));
        }
        self.wait_for_oid(oid)?;
        self.with_unvoted(txn, "restore", |a, staged| {
            self.raise_max_oid(oid);
            let (file, end) = self.snapshot()?;
            let r = self.reader(&file, end);
            let back = match (prev_txn, data) {
                (Some(prev), Some(d)) => match r.find_txn(prev)? {
                    Some(tpos) => find_data(&r, tpos, oid, d)?,
                    // The transaction may have been packed away: the tid
                    // is only a hint.
                    None => 0,
                },
                _ => 0,
            };
            let prev = self.committed_header(oid)?.map_or(0, |(pos, _)| pos);
            let h = match data {
                Some(d) if back == 0 => DataHeader {
                    oid,
                    tid: serial,
                    prev,
                    tloc: a.base,
                    plen: d.len() as u64,
                    back: 0,
                },
                _ => DataHeader {
                    oid,
                    tid: serial,
                    prev,
                    tloc: a.base,
                    plen: 0,
                    back,
                },
            };
            Self::stage(a, staged, &h, data)
        })
    }

    pub(crate) fn vote(&self, txn: TxnHandle) -> Result<Vec<crate::ids::Oid>> {
        self.writable()?;
        let mut guard = self.commit_state();
        let st = &mut *guard;
        let a = match st.active.as_mut() {
            Some(a) if a.handle == txn => a,
            _ => {
                return Err(Error::Transaction(
                    "tpc_vote called with wrong transaction".into(),
                ))
            }
        };
        if a.next_pos.is_some() {
            return Err(Error::Transaction("tpc_vote called twice".into()));
        }
        let file = Arc::clone(&self.read_published().file);
        let base = a.base;
        let tlen = a.thl + st.staged.len();
        let header = TxnHeader::for_meta(a.tid, tlen, STATUS_CHECKPOINT, &a.meta);
        let io = |e| Error::io(format!("writing transaction to {}", self.path.display()), e);
        let write = |staged: &Staged| -> Result<()> {
            let mut head = Vec::with_capacity(a.thl as usize + staged.buf.len() + 8);
            head.extend_from_slice(&header.to_bytes());
            head.extend_from_slice(&a.meta.user);
            head.extend_from_slice(&a.meta.description);
            head.extend_from_slice(&a.meta.extension);
            let mut at = base;
            if staged.flushed > 0 {
                self.io.write_all_at(&file, &head, at).map_err(io)?;
                at += head.len() as u64;
                head.clear();
                let mut chunk = vec![0u8; COPY_CHUNK];
                let mut off = 0u64;
                while off < staged.flushed {
                    let n = ((staged.flushed - off) as usize).min(COPY_CHUNK);
                    staged
                        .tmp()?
                        .read_exact_at(&mut chunk[..n], off)
                        .map_err(|e| Error::io("reading the commit temporary file", e))?;
                    self.io.write_all_at(&file, &chunk[..n], at).map_err(io)?;
                    at += n as u64;
                    off += n as u64;
                }
            }
            head.extend_from_slice(&staged.buf);
            head.extend_from_slice(&tlen.to_be_bytes());
            self.io.write_all_at(&file, &head, at).map_err(io)?;
            Ok(())
        };
        let mut res = Ok(());
        if st.dirty_tail {
            res = file.set_len(base).map_err(io);
            if res.is_ok() {
                st.dirty_tail = false;
            }
        }
        let res = res
            .and_then(|_| write(&st.staged))
            .and_then(|_| self.not_failed());
        if let Err(e) = res {
            if let Some(cut) = self.group.lock().failed_at {
                // A covering fsync failed while this was written: the file
                // ends where that failure cut it.
                let _ = file.set_len(cut);
                return Err(e);
            }
            if file.set_len(base).is_err() {
                st.dirty_tail = true;
            }
            return Err(e);
        }
        a.next_pos = Some(base + tlen + 8);
        Ok(Vec::new())
    }

    /// The first half of finish: flips the status byte (not yet synced),
    /// queues the transaction for the next fsync and releases the commit
    /// lock, so the next transaction can be written behind this one.
    pub(crate) fn submit(&self, txn: TxnHandle) -> Result<Tid> {
        self.writable()?;
        let mut guard = self.commit_state();
        let st = &mut *guard;
        let (next_pos, base, tid, status) = match st.active.as_ref() {
            Some(a) if a.handle == txn => match a.next_pos {
                Some(n) => (n, a.base, a.tid, a.status),
                None => {
                    return Err(Error::Transaction(
                        "tpc_finish called before tpc_vote".into(),
                    ))
                }
            },
            _ => {
                return Err(Error::Transaction(
                    "tpc_finish called with wrong transaction".into(),
                ))
            }
        };
        let file = Arc::clone(&self.read_published().file);
        if let Err(e) = self.io.write_all_at(&file, &[status], base + 16) {
            let mut q = self.group.lock();
            let cut = q.first_unsynced_base().unwrap_or(base);
            self.fail_writes(&mut q, &file, cut, &e);
            q.wake_all();
            self.group.notify(&q);
            drop(q);
            st.active = None;
            self.txn_open.store(false, Ordering::Release);
            self.commit_done.notify_all();
            return Err(Error::io(
                format!("committing transaction to {}", self.path.display()),
                e,
            ));
        }
        let Some(a) = st.active.take() else {
            return Err(Error::Transaction("no transaction".into()));
        };
        self.txn_open.store(false, Ordering::Release);
        let updates: Vec<(u64, u64)> = a.order.iter().map(|oid| (*oid, a.tindex[oid])).collect();
        let mut q = self.group.lock();
        q.submit(txn, tid, base, next_pos, updates);
        // A leader may be gathering for its fsync (see `gather`).
        q.wake_gatherer();
        drop(q);
        self.commit_done.notify_one();
        Ok(tid)
    }

    /// The second half: waits for an fsync that covers the transaction
    /// (running it when no other thread is), then, in commit order, runs
    /// `on_commit` and publishes the transaction to readers.
    pub(crate) fn durable(&self, txn: TxnHandle, on_commit: &mut dyn FnMut(Tid)) -> Result<Tid> {
        let mut q = self.group.lock();
        let Some(seq) = q.find_mut(txn).map(|p| {
            p.waiter = Some(std::thread::current());
            p.seq
        }) else {
            return Err(Error::Transaction(
                "tpc_finish called with a transaction that was not submitted".into(),
            ));
        };
        let mut gathered = false;
        while q.synced <= seq {
            if q.failed_at.is_some() {
                q.remove(txn);
                q.wake_all();
                self.group.notify(&q);
                drop(q);
                return Err(self
                    .not_failed()
                    .err()
                    .unwrap_or_else(|| Error::Storage("a commit's fsync failed".into())));
            }
            if q.syncing || q.gathering {
                // Woken when the fsync ends if this is the first
                // transaction it did not cover, else by the publication
                // before this one.
                q = self.group.park(q);
                continue;
            }
            if !gathered {
                gathered = true;
                q = self.gather(q);
                continue;
            }
            // Lead: one fsync for everything submitted so far.
            q.syncing = true;
            let upto = q.next_seq();
            drop(q);
            let file = Arc::clone(&self.read_published().file);
            let started = Instant::now();
            let synced = self.io.sync_all(&file);
            let took = started.elapsed();
            q = self.group.lock();
            q.syncing = false;
            match synced {
                Ok(()) => {
                    q.synced = upto;
                    q.fsyncs += 1;
                    q.last_sync = took;
                    // The first covered publishes (the others follow it
                    // one by one); the first not covered leads the next.
                    q.wake_front();
                    q.wake_first_from(upto);
                }
                Err(e) => {
                    let cut = q.first_unsynced_base().unwrap_or(file_len(&file));
                    self.fail_writes(&mut q, &file, cut, &e);
                    q.wake_all();
                    self.group.notify(&q);
                }
            }
        }
        // Durable; publication goes in commit order.
        while q.published != seq {
            q = self.group.park(q);
        }
        let (tid, next_pos, updates) = match q.pending.front() {
            Some(p) if p.handle == txn => (p.tid, p.next_pos, p.updates.clone()),
            _ => return Err(Error::Storage("group commit queue out of order".into())),
        };
        drop(q);
        on_commit(tid);
        let prepared = self.read_published().index.prepare(&updates);
        {
            let mut p = self.write_published();
            p.index.apply(&updates, prepared);
            p.pos = next_pos;
            p.ltid = tid;
        }
        let mut q = self.group.lock();
        q.remove(txn);
        q.published += 1;
        q.wake_front();
        self.group.notify(&q);
        drop(q);
        Ok(tid)
    }

    /// Finish in one call: submit, then wait until durable.
    pub(crate) fn finish(&self, txn: TxnHandle, on_commit: &mut dyn FnMut(Tid)) -> Result<Tid> {
        self.submit(txn)?;
        self.durable(txn, on_commit)
    }

    /// A write or fsync of the commit path failed. It is never retried: the
    /// kernel may have dropped the dirty pages and would report the next
    /// sync as a success. Every transaction from `cut` on fails, their
    /// bytes are cut off (or, failing that, the first is flagged 'c' again
    /// so that an open cuts them off), and the storage serves reads but
    /// refuses writes until reopened.
    fn fail_writes(&self, q: &mut Queue, file: &File, cut: u64, e: &std::io::Error) {
        tracing::error!(
            "{}: failure committing the transactions from offset {cut}: {e}; refusing writes until reopened",
            self.path.display()
        );
        q.failed_at = Some(cut);
        *lock(&self.write_failure) = Some(format!("a commit's fsync failed: {e}"));
        if file.set_len(cut).is_err() {
            let _ = file.write_all_at(&[STATUS_CHECKPOINT], cut + 16);
        }
    }

    /// `Err` once a commit's write or fsync failed.
    pub(crate) fn not_failed(&self) -> Result<()> {
        match lock(&self.write_failure).as_ref() {
            Some(why) => Err(Error::Storage(format!(
                "{}: writes refused until the storage is reopened: {why}",
                self.path.display()
            ))),
            None => Ok(()),
        }
    }

    /// Waits until no submitted transaction that writes `oid` is still
    /// unpublished, so that a check against its current revision sees it.
    /// A client can only have read a published revision, so a store on a
    /// pending object is a conflict; it is reported against the pending
    /// transaction once that one is durable and announced.
    pub(crate) fn wait_for_oid(&self, oid: Oid) -> Result<()> {
        let mut q = self.group.lock();
        if !q.touches(oid.0) {
            return Ok(());
        }
        // Counted while waiting: a gathering leader stops waiting for
        // this transaction's submit, which now waits for that leader.
        q.oid_waiters += 1;
        q.wake_gatherer();
        while q.touches(oid.0) && q.failed_at.is_none() {
            q = self.group.wait(q);
        }
        q.oid_waiters -= 1;
        let ok = !q.touches(oid.0);
        drop(q);
        if ok {
            Ok(())
        } else {
            self.not_failed()
        }
    }

    /// Waits until every submitted transaction is published (or failed):
    /// for work that reads the whole committed state (undo, pack, close).
    pub(crate) fn wait_for_all_published(&self) {
        self.group.wait_until(|q| q.pending.is_empty());
    }

    /// Before leading an fsync, waits for the transactions that are being
    /// committed meanwhile, so that the fsync covers them too: where
    /// syncing now would make each of them wait for this fsync and then pay
    /// its own. Nothing is acknowledged meanwhile, and the others wait for
    /// this leader.
    ///
    /// When the caller said how many are coming (`commits_coming`, a
    /// server's commit lock queue), it waits until none is, at most
    /// [`MAX_GATHER`]: each comes within a client round trip. Otherwise it
    /// waits for one transaction that holds or waits for the storage's own
    /// commit lock, at most as long as the last fsync took. Either way it
    /// stops when a committing thread waits for a pending transaction to be
    /// published (`wait_for_oid`): that one cannot come before the fsync.
    fn gather<'a>(&'a self, mut q: MutexGuard<'a, Queue>) -> MutexGuard<'a, Queue> {
        let max = q.max_gather.unwrap_or(MAX_GATHER);
        let limit = if q.coming > 0 {
            max
        } else {
            q.last_sync.min(max)
        };
        let told = q.coming > 0;
        let before = q.next_seq();
        let coming = |q: &Queue| {
            q.failed_at.is_none()
                && q.oid_waiters == 0
                && if told {
                    q.coming > 0
                } else {
                    q.next_seq() == before && self.commit_in_progress()
                }
        };
        if limit.is_zero() || !coming(&q) {
            return q;
        }
        q.gathering = true;
        q.gatherer = Some(std::thread::current());
        let started = Instant::now();
        let deadline = started + limit;
        while coming(&q) {
            let Some(left) = deadline.checked_duration_since(Instant::now()) else {
                break;
            };
            q = self.group.park_timeout(q, left);
        }
        q.gathering = false;
        q.gatherer = None;
        tracing::trace!(
            gathered = q.next_seq() - before,
            waited_us = started.elapsed().as_micros() as u64,
            "group commit gathered"
        );
        q
    }

    /// How many transactions will be submitted soon; see
    /// [`Storage::commits_coming`](crate::Storage::commits_coming).
    pub(crate) fn set_commits_coming(&self, count: usize) {
        let mut q = self.group.lock();
        q.coming = count;
        if count == 0 {
            // A gathering leader stops waiting.
            q.wake_gatherer();
        }
    }

    /// Sets the longest a leader gathers, instead of [`MAX_GATHER`]. For
    /// tests, which make it long so that what is gathered does not depend
    /// on timing.
    pub(crate) fn set_max_gather(&self, limit: std::time::Duration) {
        self.group.lock().max_gather = Some(limit);
    }

    /// Whether a transaction holds the storage's commit lock or waits for
    /// it.
    fn commit_in_progress(&self) -> bool {
        self.txn_open.load(Ordering::Acquire) || self.commit_waiters.load(Ordering::Acquire) > 0
    }

    /// Data-file fsyncs the commit path made.
    pub(crate) fn fsyncs(&self) -> u64 {
        self.group.lock().fsyncs
    }

    pub(crate) fn abort(&self, txn: TxnHandle) {
        let mut guard = self.commit_state();
        let st = &mut *guard;
        match st.active.as_ref() {
            Some(a) if a.handle == txn => {}
            _ => return,
        }
        Self::drop_active(self, st);
    }

    fn drop_active(&self, st: &mut CommitState) {
        if let Some(a) = st.active.take() {
            self.txn_open.store(false, Ordering::Release);
            if a.next_pos.is_some() {
                let file = Arc::clone(&self.read_published().file);
                // After a failed fsync the file ends at that failure's cut.
                let cut = self.group.lock().failed_at.unwrap_or(a.base).min(a.base);
                if let Err(e) = file.set_len(cut) {
                    tracing::error!(
                        "{}: truncating an aborted transaction: {e}",
                        self.path.display()
                    );
                    st.dirty_tail = true;
                }
            }
            st.staged.reset();
        }
        self.commit_done.notify_all();
    }

    pub(crate) fn abort_for_close(&self) {
        let mut guard = self.commit_state();
        Self::drop_active(self, &mut guard);
    }
}

/// ZODB's `_data_find`: the position to point a restored record at, when
/// the transaction at `tpos` holds a record for `oid` (its last one) with
/// the same data, or is a backpointer (trusted as ZODB trusts it); 0 when
/// the data must be copied.
fn find_data(r: &Reader<'_>, tpos: u64, oid: Oid, data: &[u8]) -> Result<u64> {
    let th = r.txn_header(tpos)?;
    let tend = tpos + th.tlen;
    let mut pos = tpos + th.header_len();
    let mut found: Option<(u64, DataHeader)> = None;
    while pos < tend {
        let h = r.data_header(pos)?;
        if h.oid == oid {
            found = Some((pos, h));
        }
        pos = pos
            .checked_add(h.record_len().unwrap_or(u64::MAX))
            .ok_or_else(|| r.error(pos, "record length overflows"))?;
    }
    let Some((dpos, h)) = found else { return Ok(0) };
    if h.plen == 0 {
        // A "no data" record cannot stand for the data being restored.
        return Ok(if h.back != 0 { dpos } else { 0 });
    }
    if h.plen != data.len() as u64 {
        tracing::error!("mismatch between data and backpointer at {dpos}");
        return Ok(0);
    }
    Ok(if r.record_data(dpos, &h)? == data {
        dpos
    } else {
        0
    })
}

fn file_len(file: &File) -> u64 {
    file.metadata().map_or(0, |m| m.len())
}

/// Counts a `tpc_begin` waiting for the commit lock while it waits, so a
/// test can see it wait instead of guessing from elapsed time.
struct CountedWait<'a>(&'a std::sync::atomic::AtomicUsize);

impl<'a> CountedWait<'a> {
    fn new(count: &'a std::sync::atomic::AtomicUsize) -> Self {
        count.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        CountedWait(count)
    }
}

impl Drop for CountedWait<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, std::sync::atomic::Ordering::SeqCst);
    }
}
