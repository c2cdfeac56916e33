//! The per-connection commit log: what a client sent between `tpc_begin` and
//! `vote`, kept until the commit lock lets it be replayed into the storage.
//!
//! ZEO 5 buffers writes so that a client streaming a large transaction never
//! holds the commit lock while the data crosses the network. The log lives in
//! memory up to a threshold and then moves to an anonymous temporary file, so
//! a gigabyte transaction costs disk, not RAM.

use std::collections::HashSet;
use std::fs::File;
use std::io::{self, BufReader, BufWriter, Read, Seek, SeekFrom, Write};
use std::path::PathBuf;

use zeo_storage::{Oid, Tid};

/// Default size above which a commit log moves to a temporary file.
pub const DEFAULT_SPILL_THRESHOLD: usize = 16 * 1024 * 1024;

/// One buffered write.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TxnOp {
    /// `storea(oid, serial, data)`.
    Store {
        /// The object.
        oid: Oid,
        /// The revision the data was based on.
        serial: Tid,
        /// The new record.
        data: Vec<u8>,
    },
    /// `deleteObject(oid, serial)`.
    Delete {
        /// The object.
        oid: Oid,
        /// The revision being deleted.
        serial: Tid,
    },
    /// `checkCurrentSerialInTransaction(oid, serial)`.
    CheckCurrent {
        /// The object.
        oid: Oid,
        /// The revision that must still be current.
        serial: Tid,
    },
    /// `restorea(oid, serial, data, prev_txn)`.
    Restore {
        /// The object.
        oid: Oid,
        /// The revision's tid.
        serial: Tid,
        /// The record, `None` for a "no data" record.
        data: Option<Vec<u8>>,
        /// A transaction holding identical data.
        prev_txn: Option<Tid>,
    },
    /// `undoa(undo_id)`.
    Undo {
        /// The undo id from `undoLog`.
        id: Vec<u8>,
    },
    /// `storeBlobEnd` or `storeBlobShared`: a store whose blob is the file
    /// at `path`, which the log owns (and removes when it is dropped).
    StoreBlob {
        /// The object.
        oid: Oid,
        /// The revision the data was based on.
        serial: Tid,
        /// The new record.
        data: Vec<u8>,
        /// The uploaded blob file, in the storage's blob directory.
        path: PathBuf,
    },
}

impl TxnOp {
    /// How many bytes the operation adds to a commit log.
    pub fn logged_len(&self) -> u64 {
        const KEY: u64 = 1 + 8 + 8;
        let len = |b: &[u8]| 4 + b.len() as u64;
        match self {
            TxnOp::Store { data, .. } => KEY + len(data),
            TxnOp::Delete { .. } | TxnOp::CheckCurrent { .. } => KEY,
            TxnOp::Restore { data, prev_txn, .. } => {
                KEY + 1 + data.as_deref().map_or(0, len) + prev_txn.map_or(0, |_| 8)
            }
            TxnOp::Undo { id } => 1 + len(id),
            TxnOp::StoreBlob { data, path, .. } => {
                KEY + len(data) + len(path.as_os_str().as_encoded_bytes())
            }
        }
    }
}

const TAG_STORE: u8 = 1;
const TAG_DELETE: u8 = 2;
const TAG_CHECK: u8 = 3;
const TAG_RESTORE: u8 = 4;
const TAG_UNDO: u8 = 5;
const TAG_STORE_BLOB: u8 = 6;

/// The buffered writes of one open transaction.
#[derive(Debug)]
pub struct TxnLog {
    mem: Vec<u8>,
    file: Option<BufWriter<File>>,
    spill_threshold: usize,
    spill_dir: Option<PathBuf>,
    ops: u64,
    stores: u64,
    undos: u64,
    bytes: u64,
    superseded: HashSet<u64>,
    /// Uploaded blob files the logged stores name; removed with the log,
    /// since a replay hands the storage links to them, not the files.
    blob_files: Vec<PathBuf>,
}

impl Drop for TxnLog {
    fn drop(&mut self) {
        for path in self.blob_files.drain(..) {
            match std::fs::remove_file(&path) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => tracing::warn!("removing blob upload {}: {e}", path.display()),
            }
        }
    }
}

impl TxnLog {
    /// An empty log that spills to `spill_dir` (the system temporary
    /// directory when `None`) once it holds more than `spill_threshold`
    /// bytes.
    pub fn new(spill_threshold: usize, spill_dir: Option<PathBuf>) -> Self {
        TxnLog {
            mem: Vec::new(),
            file: None,
            spill_threshold,
            spill_dir,
            ops: 0,
            stores: 0,
            undos: 0,
            bytes: 0,
            superseded: HashSet::new(),
            blob_files: Vec::new(),
        }
    }

    /// Drops everything logged, in memory or in a spill file, keeping
    /// where a new spill would go.
    pub fn discard(&mut self) {
        *self = TxnLog::new(self.spill_threshold, self.spill_dir.take());
    }

    /// Appends an operation and returns its index. The log owns the file
    /// of a [`TxnOp::StoreBlob`] from this call on, whatever it returns.
    pub fn push(&mut self, op: &TxnOp) -> io::Result<u64> {
        if let TxnOp::StoreBlob { path, .. } = op {
            self.blob_files.push(path.clone());
        }
        let len = match &mut self.file {
            Some(file) => {
                let mut rec = Vec::with_capacity(32);
                encode(op, &mut rec)?;
                file.write_all(&rec)?;
                rec.len()
            }
            None => {
                // Encoded in place: a store's data is copied once, not twice.
                let start = self.mem.len();
                if let Err(err) = encode(op, &mut self.mem) {
                    self.mem.truncate(start);
                    return Err(err);
                }
                let len = self.mem.len() - start;
                if self.mem.len() > self.spill_threshold {
                    if let Err(err) = self.spill() {
                        self.mem.truncate(start);
                        return Err(err);
                    }
                }
                len
            }
        };
        match op {
            TxnOp::Store { .. }
            | TxnOp::StoreBlob { .. }
            | TxnOp::Delete { .. }
            | TxnOp::Restore { .. } => self.stores += 1,
            TxnOp::Undo { .. } => self.undos += 1,
            TxnOp::CheckCurrent { .. } => {}
        }
        self.bytes += len as u64;
        let index = self.ops;
        self.ops += 1;
        Ok(index)
    }

    fn spill(&mut self) -> io::Result<()> {
        let file = match &self.spill_dir {
            Some(dir) => tempfile::tempfile_in(dir)?,
            None => tempfile::tempfile()?,
        };
        let mut file = BufWriter::with_capacity(256 * 1024, file);
        file.write_all(&self.mem)?;
        self.mem = Vec::new();
        self.file = Some(file);
        tracing::debug!(bytes = self.bytes, "commit log spilled to a temporary file");
        Ok(())
    }

    /// Marks the operation at `index` as replaced by a later one, so replay
    /// skips it (a conflicting store the client re-sent resolved).
    pub fn supersede(&mut self, index: u64) {
        self.superseded.insert(index);
    }

    #[cfg(test)]
    /// How many operations were logged.
    pub fn len(&self) -> u64 {
        self.ops
    }

    /// How many stores, deletions and restores were logged.
    pub fn stores(&self) -> u64 {
        self.stores
    }

    /// How many undos were logged.
    pub fn undos(&self) -> u64 {
        self.undos
    }

    /// The log's size in bytes.
    pub fn size(&self) -> u64 {
        self.bytes
    }

    /// Whether the log moved to a temporary file.
    pub fn spilled(&self) -> bool {
        self.file.is_some()
    }

    /// Calls `f` with every operation not superseded, in order, with its
    /// index. The log stays usable for more appends and replays.
    pub fn replay<E>(
        &mut self,
        mut f: impl FnMut(u64, TxnOp) -> Result<(), E>,
    ) -> Result<(), ReplayError<E>> {
        let superseded = &self.superseded;
        let mut index = 0u64;
        let mut visit = |op: TxnOp| -> Result<(), E> {
            let i = index;
            index += 1;
            if superseded.contains(&i) {
                return Ok(());
            }
            f(i, op)
        };
        match &mut self.file {
            None => {
                let mut reader = &self.mem[..];
                while !reader.is_empty() {
                    let op = decode(&mut reader).map_err(ReplayError::Io)?;
                    visit(op).map_err(ReplayError::Op)?;
                }
            }
            Some(writer) => {
                writer.flush().map_err(ReplayError::Io)?;
                let file = writer.get_mut();
                let end = file.seek(SeekFrom::End(0)).map_err(ReplayError::Io)?;
                file.seek(SeekFrom::Start(0)).map_err(ReplayError::Io)?;
                let result = (|| {
                    let mut reader = BufReader::with_capacity(256 * 1024, (&*file).take(end));
                    for _ in 0..self.ops {
                        let op = decode(&mut reader).map_err(ReplayError::Io)?;
                        visit(op).map_err(ReplayError::Op)?;
                    }
                    Ok(())
                })();
                // Appends continue at the end whatever happened.
                file.seek(SeekFrom::End(0)).map_err(ReplayError::Io)?;
                result?;
            }
        }
        Ok(())
    }
}

/// Why a replay stopped.
#[derive(Debug)]
pub enum ReplayError<E> {
    /// Reading the log back failed.
    Io(io::Error),
    /// The callback failed.
    Op(E),
}

fn put_bytes(out: &mut Vec<u8>, bytes: &[u8]) -> io::Result<()> {
    let len = u32::try_from(bytes.len())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "record over 4 GiB"))?;
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(bytes);
    Ok(())
}

fn encode(op: &TxnOp, out: &mut Vec<u8>) -> io::Result<()> {
    match op {
        TxnOp::Store { oid, serial, data } => {
            out.push(TAG_STORE);
            out.extend_from_slice(&oid.to_bytes());
            out.extend_from_slice(&serial.to_bytes());
            put_bytes(out, data)?;
        }
        TxnOp::Delete { oid, serial } => {
            out.push(TAG_DELETE);
            out.extend_from_slice(&oid.to_bytes());
            out.extend_from_slice(&serial.to_bytes());
        }
        TxnOp::CheckCurrent { oid, serial } => {
            out.push(TAG_CHECK);
            out.extend_from_slice(&oid.to_bytes());
            out.extend_from_slice(&serial.to_bytes());
        }
        TxnOp::Restore {
            oid,
            serial,
            data,
            prev_txn,
        } => {
            out.push(TAG_RESTORE);
            out.extend_from_slice(&oid.to_bytes());
            out.extend_from_slice(&serial.to_bytes());
            out.push(u8::from(data.is_some()) | (u8::from(prev_txn.is_some()) << 1));
            if let Some(data) = data {
                put_bytes(out, data)?;
            }
            if let Some(prev) = prev_txn {
                out.extend_from_slice(&prev.to_bytes());
            }
        }
        TxnOp::Undo { id } => {
            out.push(TAG_UNDO);
            put_bytes(out, id)?;
        }
        TxnOp::StoreBlob {
            oid,
            serial,
            data,
            path,
        } => {
            out.push(TAG_STORE_BLOB);
            out.extend_from_slice(&oid.to_bytes());
            out.extend_from_slice(&serial.to_bytes());
            put_bytes(out, data)?;
            put_bytes(out, path.as_os_str().as_encoded_bytes())?;
        }
    }
    Ok(())
}

fn corrupt(what: &str) -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidData,
        format!("commit log damaged: {what}"),
    )
}

fn get_u64(r: &mut impl Read) -> io::Result<u64> {
    let mut b = [0u8; 8];
    r.read_exact(&mut b)?;
    Ok(u64::from_be_bytes(b))
}

fn get_u8(r: &mut impl Read) -> io::Result<u8> {
    let mut b = [0u8; 1];
    r.read_exact(&mut b)?;
    Ok(b[0])
}

fn get_bytes(r: &mut impl Read) -> io::Result<Vec<u8>> {
    let mut b = [0u8; 4];
    r.read_exact(&mut b)?;
    let len = u32::from_be_bytes(b) as usize;
    // We wrote this length ourselves, but read it through `take` anyway so a
    // damaged file cannot make us reserve memory it does not hold.
    let mut data = Vec::new();
    r.take(len as u64).read_to_end(&mut data)?;
    if data.len() != len {
        return Err(corrupt("record cut short"));
    }
    Ok(data)
}

fn decode(r: &mut impl Read) -> io::Result<TxnOp> {
    let tag = get_u8(r)?;
    Ok(match tag {
        TAG_STORE => {
            let oid = Oid(get_u64(r)?);
            let serial = Tid(get_u64(r)?);
            TxnOp::Store {
                oid,
                serial,
                data: get_bytes(r)?,
            }
        }
        TAG_DELETE => TxnOp::Delete {
            oid: Oid(get_u64(r)?),
            serial: Tid(get_u64(r)?),
        },
        TAG_CHECK => TxnOp::CheckCurrent {
            oid: Oid(get_u64(r)?),
            serial: Tid(get_u64(r)?),
        },
        TAG_RESTORE => {
            let oid = Oid(get_u64(r)?);
            let serial = Tid(get_u64(r)?);
            let flags = get_u8(r)?;
            let data = if flags & 1 != 0 {
                Some(get_bytes(r)?)
            } else {
                None
            };
            let prev_txn = if flags & 2 != 0 {
                Some(Tid(get_u64(r)?))
            } else {
                None
            };
            TxnOp::Restore {
                oid,
                serial,
                data,
                prev_txn,
            }
        }
        TAG_UNDO => TxnOp::Undo { id: get_bytes(r)? },
        TAG_STORE_BLOB => {
            let oid = Oid(get_u64(r)?);
            let serial = Tid(get_u64(r)?);
            let data = get_bytes(r)?;
            let path = {
                use std::os::unix::ffi::OsStringExt;
                PathBuf::from(std::ffi::OsString::from_vec(get_bytes(r)?))
            };
            TxnOp::StoreBlob {
                oid,
                serial,
                data,
                path,
            }
        }
        _ => return Err(corrupt("unknown record tag")),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn logged_len_is_what_a_push_adds() {
        let mut log = TxnLog::new(usize::MAX, None);
        for op in sample() {
            let before = log.size();
            log.push(&op).unwrap();
            assert_eq!(log.size() - before, op.logged_len(), "{op:?}");
        }
    }

    fn sample() -> Vec<TxnOp> {
        vec![
            TxnOp::Store {
                oid: Oid(1),
                serial: Tid::ZERO,
                data: b"abc".to_vec(),
            },
            TxnOp::Delete {
                oid: Oid(2),
                serial: Tid(5),
            },
            TxnOp::CheckCurrent {
                oid: Oid(3),
                serial: Tid(6),
            },
            TxnOp::Restore {
                oid: Oid(4),
                serial: Tid(7),
                data: None,
                prev_txn: Some(Tid(3)),
            },
            TxnOp::Restore {
                oid: Oid(5),
                serial: Tid(7),
                data: Some(vec![9; 10]),
                prev_txn: None,
            },
            TxnOp::Undo {
                id: b"BA1Aac2xMSI=".to_vec(),
            },
            TxnOp::Store {
                oid: Oid(6),
                serial: Tid(1),
                data: vec![],
            },
        ]
    }

    #[test]
    fn dropping_the_log_removes_its_blob_uploads() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("upload.tmp");
        std::fs::write(&path, b"x").unwrap();
        let mut log = TxnLog::new(usize::MAX, None);
        let op = TxnOp::StoreBlob {
            oid: Oid(1),
            serial: Tid::ZERO,
            data: b"r".to_vec(),
            path: path.clone(),
        };
        log.push(&op).unwrap();
        assert_eq!(log.size(), op.logged_len());
        assert_eq!(collect(&mut log), [(0, op)]);
        assert!(path.exists(), "a replay must not consume the upload");
        log.discard();
        assert!(!path.exists());
    }

    fn collect(log: &mut TxnLog) -> Vec<(u64, TxnOp)> {
        let mut out = Vec::new();
        log.replay(|i, op| {
            out.push((i, op));
            Ok::<_, ()>(())
        })
        .unwrap();
        out
    }

    #[test]
    fn replays_in_memory() {
        let mut log = TxnLog::new(DEFAULT_SPILL_THRESHOLD, None);
        for op in sample() {
            log.push(&op).unwrap();
        }
        assert!(!log.spilled());
        assert_eq!(log.len(), 7);
        assert_eq!(log.stores(), 5);
        let got: Vec<_> = collect(&mut log).into_iter().map(|(_, op)| op).collect();
        assert_eq!(got, sample());
    }

    #[test]
    fn spills_to_a_file_and_replays_the_same_twice() {
        let mut log = TxnLog::new(40, None);
        for op in sample() {
            log.push(&op).unwrap();
        }
        assert!(log.spilled());
        let first = collect(&mut log);
        // More appends after a replay land at the end, and a second replay
        // sees everything.
        log.push(&TxnOp::Delete {
            oid: Oid(99),
            serial: Tid(1),
        })
        .unwrap();
        let second = collect(&mut log);
        assert_eq!(first.len(), 7);
        assert_eq!(second.len(), 8);
        assert_eq!(&second[..7], &first[..]);
        assert_eq!(
            second[7].1,
            TxnOp::Delete {
                oid: Oid(99),
                serial: Tid(1)
            }
        );
        let ops: Vec<_> = first.into_iter().map(|(_, op)| op).collect();
        assert_eq!(ops, sample());
    }

    #[test]
    fn large_transaction_stays_out_of_memory() {
        let mut log = TxnLog::new(1024 * 1024, None);
        let chunk = vec![7u8; 64 * 1024];
        for i in 0..64 {
            log.push(&TxnOp::Store {
                oid: Oid(i),
                serial: Tid::ZERO,
                data: chunk.clone(),
            })
            .unwrap();
        }
        assert!(log.spilled());
        assert!(log.mem.capacity() < 1024 * 1024 + 128 * 1024);
        let mut n = 0;
        log.replay(|i, op| {
            match op {
                TxnOp::Store { oid, data, .. } => {
                    assert_eq!(oid, Oid(i));
                    assert_eq!(data.len(), chunk.len());
                }
                other => panic!("unexpected {other:?}"),
            }
            n += 1;
            Ok::<_, ()>(())
        })
        .unwrap();
        assert_eq!(n, 64);
    }

    #[test]
    fn superseded_operations_are_skipped() {
        for threshold in [DEFAULT_SPILL_THRESHOLD, 1] {
            let mut log = TxnLog::new(threshold, None);
            for op in sample() {
                log.push(&op).unwrap();
            }
            log.supersede(0);
            let got = collect(&mut log);
            assert_eq!(got.len(), 6);
            assert_eq!(got[0].0, 1, "indices keep counting skipped operations");
        }
    }

    #[test]
    fn replay_stops_at_the_first_failure() {
        let mut log = TxnLog::new(DEFAULT_SPILL_THRESHOLD, None);
        for op in sample() {
            log.push(&op).unwrap();
        }
        let mut seen = 0;
        let r = log.replay(|i, _| {
            seen += 1;
            if i == 2 {
                Err("boom")
            } else {
                Ok(())
            }
        });
        assert!(matches!(r, Err(ReplayError::Op("boom"))));
        assert_eq!(seen, 3);
    }
}
