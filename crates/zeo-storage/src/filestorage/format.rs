//! The Data.fs record layout: transaction and data headers, how to parse and
//! serialize them, and a positional reader that turns every short read or
//! out-of-range length into an [`Error::Format`] naming the offset.
//!
//! Everything here is shared by the storage, the walker (`check`, the scan
//! at open, pack), iteration, `dump`, so it only depends on a `&File` and never on
//! the storage's locks.

use std::cell::{Cell, RefCell};
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::Path;

use crate::error::{Error, Result};
use crate::ids::{Oid, Tid};
use crate::interface::TransactionMetaData;

/// The file header of every FS30 Data.fs.
pub(crate) const MAGIC: &[u8; 4] = b"FS30";
/// The Python 2 era magic, refused with a message saying so.
pub(crate) const MAGIC_FS21: &[u8; 4] = b"FS21";
/// Offset of the first transaction.
pub(crate) const FIRST_TXN_POS: u64 = 4;
/// Fixed part of a transaction header (`>8sQcHHH`).
pub(crate) const TXN_HEADER_LEN: u64 = 23;
/// Fixed part of a data record header (`>8s8sQQHQ`).
pub(crate) const DATA_HEADER_LEN: u64 = 42;
/// Length of the redundant transaction length that closes a transaction.
pub(crate) const TXN_TRAILER_LEN: u64 = 8;

/// Status byte of a committed transaction.
pub(crate) const STATUS_COMMITTED: u8 = b' ';
/// Status byte of a transaction written by pack.
pub(crate) const STATUS_PACKED: u8 = b'p';
/// Status byte of a voted, unfinished transaction.
pub(crate) const STATUS_CHECKPOINT: u8 = b'c';
/// Status byte of a legacy undone transaction.
pub(crate) const STATUS_UNDONE: u8 = b'u';

/// A transaction header without its variable-length metadata.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct TxnHeader {
    /// Transaction id.
    pub tid: Tid,
    /// Length of the record without the trailing redundant length.
    pub tlen: u64,
    /// Status byte.
    pub status: u8,
    /// User name length.
    pub ulen: u16,
    /// Description length.
    pub dlen: u16,
    /// Extension length.
    pub elen: u16,
}

impl TxnHeader {
    /// Parses the 23 fixed bytes.
    pub fn parse(b: &[u8; TXN_HEADER_LEN as usize]) -> Self {
        TxnHeader {
            tid: Tid::from_bytes(be8(&b[0..8])),
            tlen: u64::from_be_bytes(be8(&b[8..16])),
            status: b[16],
            ulen: u16::from_be_bytes([b[17], b[18]]),
            dlen: u16::from_be_bytes([b[19], b[20]]),
            elen: u16::from_be_bytes([b[21], b[22]]),
        }
    }

    /// The 23 fixed bytes.
    pub fn to_bytes(self) -> [u8; TXN_HEADER_LEN as usize] {
        let mut b = [0u8; TXN_HEADER_LEN as usize];
        b[0..8].copy_from_slice(&self.tid.to_bytes());
        b[8..16].copy_from_slice(&self.tlen.to_be_bytes());
        b[16] = self.status;
        b[17..19].copy_from_slice(&self.ulen.to_be_bytes());
        b[19..21].copy_from_slice(&self.dlen.to_be_bytes());
        b[21..23].copy_from_slice(&self.elen.to_be_bytes());
        b
    }

    /// Header length including user, description and extension.
    pub fn header_len(&self) -> u64 {
        TXN_HEADER_LEN + u64::from(self.ulen) + u64::from(self.dlen) + u64::from(self.elen)
    }

    /// Builds the header of a transaction with the given metadata; the
    /// lengths must already have been checked against 65535.
    pub fn for_meta(tid: Tid, tlen: u64, status: u8, meta: &TransactionMetaData) -> Self {
        TxnHeader {
            tid,
            tlen,
            status,
            ulen: clamp16(meta.user.len()),
            dlen: clamp16(meta.description.len()),
            elen: clamp16(meta.extension.len()),
        }
    }
}

fn clamp16(n: usize) -> u16 {
    u16::try_from(n).unwrap_or(u16::MAX)
}

/// A data record header; `back` is filled in when `plen == 0`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct DataHeader {
    /// The object.
    pub oid: Oid,
    /// The revision's tid.
    pub tid: Tid,
    /// Position of the object's previous record, 0 for none.
    pub prev: u64,
    /// Position of the enclosing transaction.
    pub tloc: u64,
    /// Length of the pickle, 0 for a backpointer / no-data record.
    pub plen: u64,
    /// The backpointer of a `plen == 0` record, 0 meaning "no data".
    pub back: u64,
}

impl DataHeader {
    /// Parses the 42 fixed bytes; `Err` carries the non-zero version length.
    pub fn parse(b: &[u8; DATA_HEADER_LEN as usize]) -> std::result::Result<Self, u16> {
        let vlen = u16::from_be_bytes([b[32], b[33]]);
        if vlen != 0 {
            return Err(vlen);
        }
        Ok(DataHeader {
            oid: Oid::from_bytes(be8(&b[0..8])),
            tid: Tid::from_bytes(be8(&b[8..16])),
            prev: u64::from_be_bytes(be8(&b[16..24])),
            tloc: u64::from_be_bytes(be8(&b[24..32])),
            plen: u64::from_be_bytes(be8(&b[34..42])),
            back: 0,
        })
    }

    /// The 42 fixed bytes (version length always 0).
    pub fn to_bytes(self) -> [u8; DATA_HEADER_LEN as usize] {
        let mut b = [0u8; DATA_HEADER_LEN as usize];
        b[0..8].copy_from_slice(&self.oid.to_bytes());
        b[8..16].copy_from_slice(&self.tid.to_bytes());
        b[16..24].copy_from_slice(&self.prev.to_be_bytes());
        b[24..32].copy_from_slice(&self.tloc.to_be_bytes());
        b[34..42].copy_from_slice(&self.plen.to_be_bytes());
        b
    }

    /// Length of the whole record, `None` on overflow (a corrupt `plen`).
    pub fn record_len(&self) -> Option<u64> {
        DATA_HEADER_LEN.checked_add(if self.plen == 0 { 8 } else { self.plen })
    }

    /// Appends the serialized record (header, then data or backpointer).
    pub fn write_record(&self, data: Option<&[u8]>, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.to_bytes());
        match data {
            Some(d) if self.plen > 0 => out.extend_from_slice(d),
            _ => out.extend_from_slice(&self.back.to_be_bytes()),
        }
    }
}

fn be8(s: &[u8]) -> [u8; 8] {
    let mut b = [0u8; 8];
    b.copy_from_slice(&s[..8]);
    b
}

/// Data found by following backpointers (`_loadBack_impl`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct BackData {
    /// The pickle.
    pub data: Vec<u8>,
    /// Tid of the record that holds it.
    pub tid: Tid,
    /// Position of that record.
    pub pos: u64,
    /// Its transaction's position.
    pub tloc: u64,
}

/// The most of a data record [`Reader::with_data_record`] reads at once:
/// most records fit. Each thread reads less while the records it loads are
/// smaller ([`next_first_read`]): copying 4 KiB from the page cache for a
/// 1 KiB record was a third of a server's work per load.
pub(crate) const FIRST_READ: usize = 4096;

/// The least a first read takes, and the step its size moves by.
const FIRST_READ_STEP: usize = 512;

thread_local! {
    /// Each thread's buffer for first reads, kept so loads do not zero-fill
    /// a fresh one every time.
    static FIRST_READ_BUF: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
    /// How much this thread's next first read takes: enough for the records
    /// it loaded lately (see [`next_first_read`]).
    static FIRST_READ_LEN: Cell<usize> = const { Cell::new(FIRST_READ) };
}

/// The first read's size after a record of `len` bytes was loaded with one
/// of `current` bytes. It grows at once to cover a larger record (up to
/// [`FIRST_READ`]) and shrinks by an eighth of the difference per smaller
/// one, so a thread loading small records copies little more than them
/// from the page cache, while one that meets larger records now and then
/// keeps reading them whole.
fn next_first_read(current: usize, len: u64) -> usize {
    let wanted = usize::try_from(len)
        .unwrap_or(usize::MAX)
        .min(FIRST_READ)
        .next_multiple_of(FIRST_READ_STEP)
        .clamp(FIRST_READ_STEP, FIRST_READ);
    if wanted >= current {
        wanted
    } else {
        current - (current - wanted).div_ceil(8)
    }
}

/// Reads records of one Data.fs at absolute offsets, never past `end`.
///
/// `end` is the committed size for a live storage, so a reader can never see
/// the bytes of a transaction that is being voted.
#[derive(Clone, Copy)]
pub(crate) struct Reader<'a> {
    file: &'a File,
    path: &'a Path,
    end: u64,
}

impl<'a> Reader<'a> {
    /// A reader of `file` (named `path` in errors) limited to `end`.
    pub fn new(file: &'a File, path: &'a Path, end: u64) -> Self {
        Reader { file, path, end }
    }

    /// The limit reads stay below.
    pub fn end(&self) -> u64 {
        self.end
    }

    /// The file read.
    pub fn file(&self) -> &'a File {
        self.file
    }

    /// The file's name in errors.
    pub fn path(&self) -> &'a Path {
        self.path
    }

    /// A format error at `pos`.
    pub fn error(&self, pos: u64, reason: impl Into<String>) -> Error {
        format_error(self.path, pos, reason)
    }

    /// `what` (`len` bytes at `pos`) does not fit before the end.
    fn past_end(&self, pos: u64, len: u64, what: &str) -> Error {
        self.error(
            pos,
            format!(
                "{what} ({len} bytes) runs past the end of the data at {}",
                self.end
            ),
        )
    }

    /// Fills `buf` from `pos`; `what` names the field for the error message.
    pub fn read_exact(&self, pos: u64, buf: &mut [u8], what: &str) -> Result<()> {
        let len = buf.len() as u64;
        match pos.checked_add(len) {
            Some(stop) if stop <= self.end => {}
            _ => return Err(self.past_end(pos, len, what)),
        }
        self.file.read_exact_at(buf, pos).map_err(|e| {
            if e.kind() == std::io::ErrorKind::UnexpectedEof {
                self.error(pos, format!("{what}: file ends early"))
            } else {
                Error::io(format!("reading {} at {pos}", self.path.display()), e)
            }
        })
    }

    /// Reads a big-endian u64.
    pub fn read_u64(&self, pos: u64, what: &str) -> Result<u64> {
        let mut b = [0u8; 8];
        self.read_exact(pos, &mut b, what)?;
        Ok(u64::from_be_bytes(b))
    }

    /// Reads `len` bytes, checking the length against the limit before
    /// allocating.
    pub fn read_vec(&self, pos: u64, len: u64, what: &str) -> Result<Vec<u8>> {
        match pos.checked_add(len) {
            Some(stop) if stop <= self.end => {}
            _ => {
                return Err(self.error(
                    pos,
                    format!(
                        "{what} ({len} bytes) runs past the end of the data at {}",
                        self.end
                    ),
                ))
            }
        }
        let n = usize::try_from(len).map_err(|_| self.error(pos, format!("{what} too large")))?;
        let mut buf = vec![0u8; n];
        self.read_exact(pos, &mut buf, what)?;
        Ok(buf)
    }

    /// The transaction header at `pos`.
    pub fn txn_header(&self, pos: u64) -> Result<TxnHeader> {
        let mut b = [0u8; TXN_HEADER_LEN as usize];
        self.read_exact(pos, &mut b, "transaction header")?;
        Ok(TxnHeader::parse(&b))
    }

    /// The user, description and extension following the header at `pos`.
    pub fn txn_meta(&self, pos: u64, h: &TxnHeader) -> Result<TransactionMetaData> {
        let total = h.header_len() - TXN_HEADER_LEN;
        let bytes = self.read_vec(pos + TXN_HEADER_LEN, total, "transaction metadata")?;
        let (u, rest) = bytes.split_at(usize::from(h.ulen));
        let (d, e) = rest.split_at(usize::from(h.dlen));
        Ok(TransactionMetaData {
            user: u.to_vec(),
            description: d.to_vec(),
            extension: e.to_vec(),
        })
    }

    /// The data record header at `pos`, with its backpointer when `plen == 0`.
    pub fn data_header(&self, pos: u64) -> Result<DataHeader> {
        self.data_header_with(pos, |at, buf, what| self.read_exact(at, buf, what))
    }

    /// [`Reader::data_header`] read through `win` (a window over this
    /// reader's file and end), which reads ahead: a walk over many small
    /// records then costs a system call per window, not per record. Same
    /// checks, same errors.
    pub fn data_header_in(&self, win: &mut Window<'_>, pos: u64) -> Result<DataHeader> {
        self.data_header_with(pos, |at, buf, what| match win.get(at, buf.len())? {
            Some(bytes) => {
                buf.copy_from_slice(bytes);
                Ok(())
            }
            None => Err(self.past_end(at, buf.len() as u64, what)),
        })
    }

    fn data_header_with(
        &self,
        pos: u64,
        mut read: impl FnMut(u64, &mut [u8], &str) -> Result<()>,
    ) -> Result<DataHeader> {
        let mut b = [0u8; DATA_HEADER_LEN as usize];
        read(pos, &mut b, "data record header")?;
        let mut h = DataHeader::parse(&b).map_err(|vlen| {
            self.error(
                pos,
                format!("data record has version length {vlen}; versions are not supported"),
            )
        })?;
        if h.plen == 0 {
            let mut back = [0u8; 8];
            read(pos + DATA_HEADER_LEN, &mut back, "backpointer")?;
            h.back = u64::from_be_bytes(back);
        } else if h.plen > self.end.saturating_sub(pos + DATA_HEADER_LEN) {
            return Err(self.error(
                pos,
                format!(
                    "data length {} runs past the end of the data at {}",
                    h.plen, self.end
                ),
            ));
        }
        Ok(h)
    }

    /// The data record header at `pos`, which must belong to `oid`.
    pub fn data_header_for(&self, pos: u64, oid: Oid) -> Result<DataHeader> {
        let h = self.data_header(pos)?;
        if h.oid != oid {
            return Err(self.error(
                pos,
                format!("data record is for oid {} where {oid} was expected", h.oid),
            ));
        }
        Ok(h)
    }

    /// The record of `oid` at `pos` with its own data (`None` for a
    /// backpointer or no-data record), read with a single system call when
    /// the record is small, since this is every load's path.
    pub fn data_record_for(&self, pos: u64, oid: Oid) -> Result<(DataHeader, Option<Vec<u8>>)> {
        let (h, data) = self.with_data_record(pos, oid, |h, data| (h, data.map(<[u8]>::to_vec)))?;
        match data {
            None if h.plen > 0 => Ok((h, Some(self.record_data(pos, &h)?))),
            data => Ok((h, data)),
        }
    }

    /// Reads the record of `oid` at `pos` and gives `f` its header and, when
    /// the first read (of up to [`FIRST_READ`] bytes, as [`next_first_read`]
    /// sizes it) held all of it, its data
    /// (`None` otherwise, and for `plen == 0`, whose backpointer is in the
    /// header). The read goes into a buffer the thread keeps, so a load
    /// neither zero-fills a fresh buffer nor needs a second read for the data.
    pub fn with_data_record<T>(
        &self,
        pos: u64,
        oid: Oid,
        f: impl FnOnce(DataHeader, Option<&[u8]>) -> T,
    ) -> Result<T> {
        let first_read = FIRST_READ_LEN.with(Cell::get);
        let avail = self.end.saturating_sub(pos).min(first_read as u64) as usize;
        if avail < (DATA_HEADER_LEN + 8) as usize {
            return Ok(f(self.data_header_for(pos, oid)?, None));
        }
        // Taken out of the cell while in use, so a nested read (there is
        // none today) would get a fresh buffer rather than a panic.
        let mut owned = FIRST_READ_BUF.with(RefCell::take);
        if owned.len() < FIRST_READ {
            owned.resize(FIRST_READ, 0);
        }
        let mut len = None;
        let result = self.parse_first_read(pos, oid, &mut owned[..avail], |h, data| {
            len = h.record_len();
            f(h, data)
        });
        FIRST_READ_BUF.with(|cell| cell.replace(owned));
        if let Some(len) = len {
            FIRST_READ_LEN.with(|c| c.set(next_first_read(first_read, len)));
        }
        result
    }

    /// [`Reader::with_data_record`] on `buf`, which it fills from `pos`.
    fn parse_first_read<T>(
        &self,
        pos: u64,
        oid: Oid,
        buf: &mut [u8],
        f: impl FnOnce(DataHeader, Option<&[u8]>) -> T,
    ) -> Result<T> {
        self.read_exact(pos, buf, "data record")?;
        let (head, rest) = buf.split_at(DATA_HEADER_LEN as usize);
        let mut header = [0u8; DATA_HEADER_LEN as usize];
        header.copy_from_slice(head);
        let mut h = DataHeader::parse(&header).map_err(|vlen| {
            self.error(
                pos,
                format!("data record has version length {vlen}; versions are not supported"),
            )
        })?;
        if h.oid != oid {
            return Err(self.error(
                pos,
                format!("data record is for oid {} where {oid} was expected", h.oid),
            ));
        }
        if h.plen == 0 {
            h.back = u64::from_be_bytes(be8(rest));
            return Ok(f(h, None));
        }
        if h.plen > self.end.saturating_sub(pos + DATA_HEADER_LEN) {
            return Err(self.error(
                pos,
                format!(
                    "data length {} runs past the end of the data at {}",
                    h.plen, self.end
                ),
            ));
        }
        let data = usize::try_from(h.plen).ok().and_then(|n| rest.get(..n));
        Ok(f(h, data))
    }

    /// The pickle of the record at `pos` whose header is `h` (`plen > 0`).
    pub fn record_data(&self, pos: u64, h: &DataHeader) -> Result<Vec<u8>> {
        self.read_vec(pos + DATA_HEADER_LEN, h.plen, "object data")
    }

    /// Follows backpointers from `back` to the record holding data, as
    /// `_loadBack_impl` does; `None` when the chain ends in a "no data"
    /// record (or `back` is 0). Every hop must point strictly backwards from
    /// `from`, which keeps a corrupt file from looping.
    pub fn load_back(&self, oid: Oid, back: u64, from: u64) -> Result<Option<BackData>> {
        let Some((pos, h)) = self.back_target(oid, back, from)? else {
            return Ok(None);
        };
        let data = self.record_data(pos, &h)?;
        Ok(Some(BackData {
            data,
            tid: h.tid,
            pos,
            tloc: h.tloc,
        }))
    }

    /// [`Reader::load_back`] without reading the data: the position and
    /// header of the record holding it, its length checked against the end.
    pub fn back_target(
        &self,
        oid: Oid,
        mut back: u64,
        mut from: u64,
    ) -> Result<Option<(u64, DataHeader)>> {
        loop {
            if back == 0 {
                return Ok(None);
            }
            if back >= from {
                return Err(
                    self.error(from, format!("backpointer {back} does not point backwards"))
                );
            }
            let h = self.data_header_for(back, oid)?;
            if h.plen > 0 {
                return Ok(Some((back, h)));
            }
            from = back;
            back = h.back;
        }
    }

    /// The data of the record at `pos` itself or through its backpointers
    /// (`_loadBack_impl(oid, pos)`).
    pub fn resolve(&self, oid: Oid, pos: u64) -> Result<Option<BackData>> {
        self.load_back(oid, pos, pos.saturating_add(1))
    }

    /// Finds the transaction with `tid` by walking backwards from the end
    /// (`_txn_find`); `None` when no transaction has it.
    pub fn find_txn(&self, tid: Tid) -> Result<Option<u64>> {
        let mut pos = self.end;
        while pos > 39 {
            let (tpos, h) = self.prev_txn(pos)?;
            if h.tid == tid {
                return Ok(Some(tpos));
            }
            pos = tpos;
        }
        Ok(None)
    }

    /// The transaction that ends at `pos` (found through its redundant
    /// length), checked against its header's length.
    pub fn prev_txn(&self, pos: u64) -> Result<(u64, TxnHeader)> {
        let trailer = pos
            .checked_sub(TXN_TRAILER_LEN)
            .filter(|&p| p >= FIRST_TXN_POS)
            .ok_or_else(|| self.error(pos, "no transaction ends here"))?;
        let tl = self.read_u64(trailer, "redundant transaction length")?;
        let tpos = trailer
            .checked_sub(tl)
            .filter(|&p| p >= FIRST_TXN_POS)
            .ok_or_else(|| {
                self.error(
                    trailer,
                    format!(
                        "redundant transaction length {tl} points before the start of the file"
                    ),
                )
            })?;
        let h = self.txn_header(tpos)?;
        if h.tlen != tl {
            return Err(self.error(
                tpos,
                format!(
                    "transaction length {} does not match the redundant length {tl} at {}",
                    h.tlen, trailer
                ),
            ));
        }
        Ok((tpos, h))
    }
}

/// A format error naming the file, the offset and the problem.
pub(crate) fn format_error(path: &Path, pos: u64, reason: impl Into<String>) -> Error {
    Error::Format {
        path: path.to_path_buf(),
        pos,
        reason: reason.into(),
    }
}

/// Checks the 4-byte file header.
pub(crate) fn check_magic(path: &Path, magic: &[u8]) -> Result<()> {
    if magic == MAGIC {
        Ok(())
    } else if magic == MAGIC_FS21 {
        Err(format_error(
            path,
            0,
            "FS21 file written by Python 2 ZODB; convert it to FS30 with zodbupdate first",
        ))
    } else {
        Err(format_error(
            path,
            0,
            format!("not a FileStorage file: bad magic {magic:02x?}, expected \"FS30\""),
        ))
    }
}

/// A forward-reading window over a file for sequential scans: small reads
/// are served from a large buffer instead of one system call each.
///
/// The buffer is refilled with a large read while the reads asked for are
/// close together (small records), and with a small one once they jump
/// far apart (large records whose data the walk skips): reading ahead
/// then would only copy data nobody looks at.
pub(crate) struct Window<'a> {
    file: &'a File,
    path: &'a Path,
    size: u64,
    buf: Vec<u8>,
    start: u64,
    /// Position of the previous request, to tell a dense walk from a
    /// sparse one.
    last: u64,
    /// Where reading ahead stops (a request itself may go past it).
    ahead_until: u64,
}

impl<'a> Window<'a> {
    const CAPACITY: usize = 1 << 20;
    /// Refill size when requests are far apart: a transaction header with
    /// its metadata, or a record header, and whatever small records follow.
    const SPARSE_READ: usize = 4 << 10;
    /// Distance between two requests beyond which the walk counts as sparse.
    const SPARSE_STRIDE: u64 = 32 << 10;

    /// A window over the first `size` bytes of `file`.
    pub fn new(file: &'a File, path: &'a Path, size: u64) -> Self {
        Window {
            file,
            path,
            size,
            buf: Vec::new(),
            start: 0,
            // The first read counts as sparse: it reads little until the
            // walk shows its records are small.
            last: u64::MAX,
            ahead_until: size,
        }
    }

    /// Reads no further ahead than `stop` (the end of what the walk will
    /// ask for, such as its transaction's end): bytes past it are not read
    /// unless asked for.
    pub fn read_ahead_until(mut self, stop: u64) -> Self {
        self.ahead_until = stop;
        self
    }

    /// The bytes `[pos, pos + n)`, or `None` when they run past `size` (the
    /// caller decides what a short read means). `n` must be small.
    pub fn get(&mut self, pos: u64, n: usize) -> Result<Option<&[u8]>> {
        let stop = match pos.checked_add(n as u64) {
            Some(s) if s <= self.size => s,
            _ => return Ok(None),
        };
        let have = self.start + self.buf.len() as u64;
        let sparse = pos.abs_diff(self.last) > Self::SPARSE_STRIDE;
        self.last = pos;
        if pos < self.start || stop > have {
            let read_ahead = if sparse {
                Self::SPARSE_READ
            } else {
                Self::CAPACITY
            };
            let ahead = (read_ahead as u64).min(self.ahead_until.saturating_sub(pos));
            let want = ahead.max(n as u64).min(self.size - pos);
            self.buf.resize(want as usize, 0);
            self.file
                .read_exact_at(&mut self.buf, pos)
                .map_err(|e| Error::io(format!("reading {} at {pos}", self.path.display()), e))?;
            self.start = pos;
        }
        let off = (pos - self.start) as usize;
        Ok(Some(&self.buf[off..off + n]))
    }

    /// Like [`Window::get`] for a fixed-size array.
    pub fn array<const N: usize>(&mut self, pos: u64) -> Result<Option<[u8; N]>> {
        Ok(self.get(pos, N)?.map(|s| {
            let mut a = [0u8; N];
            a.copy_from_slice(s);
            a
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::interface::Undo;

    #[test]
    fn txn_header_round_trip() {
        let h = TxnHeader {
            tid: Tid(0x040d_4066_5761_16cc),
            tlen: 154,
            status: b' ',
            ulen: 0,
            dlen: 25,
            elen: 0,
        };
        let b = h.to_bytes();
        assert_eq!(&b[..8], &[0x04, 0x0d, 0x40, 0x66, 0x57, 0x61, 0x16, 0xcc]);
        assert_eq!(&b[8..16], &154u64.to_be_bytes());
        assert_eq!(TxnHeader::parse(&b), h);
        assert_eq!(h.header_len(), 48);
    }

    #[test]
    fn data_header_round_trip_and_version_refused() {
        let h = DataHeader {
            oid: Oid(1),
            tid: Tid(2),
            prev: 355,
            tloc: 480,
            plen: 75,
            back: 0,
        };
        let mut b = h.to_bytes();
        assert_eq!(DataHeader::parse(&b), Ok(h));
        assert_eq!(h.record_len(), Some(117));
        b[33] = 1;
        assert_eq!(DataHeader::parse(&b), Err(1));
        let bp = DataHeader {
            plen: 0,
            back: 222,
            ..h
        };
        assert_eq!(bp.record_len(), Some(50));
        let mut out = Vec::new();
        bp.write_record(None, &mut out);
        assert_eq!(&out[42..], &222u64.to_be_bytes());
    }

    #[test]
    fn magic_errors_name_the_problem() {
        let p = Path::new("x.fs");
        assert!(check_magic(p, b"FS30").is_ok());
        let e = check_magic(p, b"FS21").unwrap_err().to_string();
        assert!(e.contains("FS21"), "{e}");
        let e = check_magic(p, b"ABCD").unwrap_err().to_string();
        assert!(e.contains("bad magic"), "{e}");
    }

    #[test]
    fn the_first_read_grows_at_once_and_shrinks_slowly() {
        assert_eq!(next_first_read(FIRST_READ, 1066), FIRST_READ - 320);
        assert_eq!(next_first_read(512, 1066), 1536);
        assert_eq!(next_first_read(512, 100_000), FIRST_READ);
        assert_eq!(next_first_read(512, 0), 512);
        assert_eq!(next_first_read(512, u64::MAX), FIRST_READ);
        let mut n = FIRST_READ;
        for _ in 0..100 {
            n = next_first_read(n, 1066);
        }
        assert_eq!(n, 1536);
    }

    /// After many small loads the first read is small; larger records
    /// still load whole, through a second read.
    /// A new FileStorage in `dir`.
    fn new_storage(dir: &Path) -> crate::filestorage::FileStorage {
        use crate::filestorage::{FileStorage, FileStorageOptions};
        FileStorage::open(
            dir.join("Data.fs"),
            FileStorageOptions {
                create: true,
                ..Default::default()
            },
        )
        .unwrap()
    }

    #[test]
    fn records_larger_than_a_shrunk_first_read_load_whole() {
        use crate::interface::{BeginOptions, Storage, TransactionMetaData};

        let dir = tempfile::tempdir().unwrap();
        let fs = new_storage(dir.path());
        let sizes = [10usize, 600, 1500, 3000, FIRST_READ, 10_000];
        let txn = fs
            .tpc_begin(&TransactionMetaData::default(), BeginOptions::default())
            .unwrap();
        for (i, size) in sizes.iter().enumerate() {
            let data: Vec<u8> = (0..*size).map(|b| (b * 3 + i) as u8).collect();
            fs.store(txn, Oid(1 + i as u64), Tid::ZERO, &data).unwrap();
        }
        fs.tpc_vote(txn).unwrap();
        fs.tpc_finish(txn, &mut |_| {}).unwrap();
        for (i, size) in sizes.iter().enumerate() {
            for _ in 0..100 {
                assert_eq!(fs.load(Oid(1)).unwrap().0.len(), 10);
            }
            assert_eq!(FIRST_READ_LEN.with(Cell::get), FIRST_READ_STEP, "{size}");
            let data: Vec<u8> = (0..*size).map(|b| (b * 3 + i) as u8).collect();
            assert_eq!(fs.load(Oid(1 + i as u64)).unwrap().0, data, "{size}");
        }
    }

    /// Record sizes around the first read's size, revisions walked by
    /// `load_before`, and backpointers (from undo) all load what was stored.
    #[test]
    fn loads_read_records_of_every_size_around_the_first_read() {
        use crate::interface::{BeginOptions, Storage, TransactionMetaData};

        let dir = tempfile::tempdir().unwrap();
        let fs = new_storage(dir.path());
        let head = DATA_HEADER_LEN as usize;
        let sizes = [
            1,
            7,
            8,
            100,
            FIRST_READ - head - 1,
            FIRST_READ - head,
            FIRST_READ - head + 1,
            FIRST_READ,
            3 * FIRST_READ + 5,
        ];
        let oid = Oid(1);
        let mut revisions = Vec::new();
        let mut serial = Tid::ZERO;
        for (i, size) in sizes.iter().enumerate() {
            let data: Vec<u8> = (0..*size).map(|b| (b * 7 + i) as u8).collect();
            let txn = fs
                .tpc_begin(&TransactionMetaData::default(), BeginOptions::default())
                .unwrap();
            fs.store(txn, oid, serial, &data).unwrap();
            // A neighbour after each record, so a small record's first
            // read also takes in bytes of the next one.
            fs.store(txn, Oid(2 + i as u64), Tid::ZERO, b"next")
                .unwrap();
            fs.tpc_vote(txn).unwrap();
            serial = fs.tpc_finish(txn, &mut |_| {}).unwrap();
            assert_eq!(fs.load(oid).unwrap(), (data.clone(), serial), "{size}");
            revisions.push((serial, data));
        }
        for (i, (tid, data)) in revisions.iter().enumerate() {
            let next = revisions.get(i + 1).map(|(t, _)| *t);
            let found = fs
                .load_before(oid, next.unwrap_or(Tid::MAX))
                .unwrap()
                .unwrap();
            assert_eq!((&found.data, found.start, found.end), (data, *tid, next));
            assert_eq!(&fs.load_serial(oid, *tid).unwrap(), data);
        }
        assert_eq!(fs.load_before(oid, revisions[0].0).unwrap(), None);

        // Undoing the last transaction writes a backpointer to the one before.
        let (last, _) = revisions[revisions.len() - 1];
        let txn = fs
            .tpc_begin(&TransactionMetaData::default(), BeginOptions::default())
            .unwrap();
        fs.undo(txn, &crate::undo_id(last)).unwrap();
        fs.tpc_vote(txn).unwrap();
        let undone = fs.tpc_finish(txn, &mut |_| {}).unwrap();
        let (_, prev_data) = &revisions[revisions.len() - 2];
        assert_eq!(fs.load(oid).unwrap(), (prev_data.clone(), undone));
        let found = fs.load_before(oid, Tid::MAX).unwrap().unwrap();
        assert_eq!(
            (&found.data, found.start, found.end),
            (prev_data, undone, None)
        );
        let found = fs.load_before(oid, undone).unwrap().unwrap();
        assert_eq!((found.start, found.end), (last, Some(undone)));
    }
}
