//! The byte layout of a persistent cache file (see
//! `docs/design/client-cache.md`): a 32-byte header followed by a log of
//! checksummed records.
//!
//! The file is append-only between compactions, so any prefix of it is a
//! state the cache really was in. Reading stops at the first record that is
//! short or fails its checksum; everything after it is ignored. That single
//! rule covers torn writes, writes the disk reordered, and garbage.

use std::fs::File;
use std::io::{self, Read};

use zeo_storage::{Oid, Tid};

/// The first eight bytes of every cache file.
pub const MAGIC: [u8; 8] = *b"ZEORSCC\n";
/// The layout version this code writes and reads.
pub const VERSION: u32 = 1;
/// Bytes of the file header.
pub const HEADER_LEN: u64 = 32;
/// Bytes around a record's payload: the length before it, the checksum after.
pub const FRAME_OVERHEAD: u64 = 8;
/// Bytes of a store record's payload before the data: kind, oid, start, end.
pub const STORE_PREFIX: u64 = 25;
/// The largest payload a reader accepts, so that a damaged length can never
/// make it allocate or skip absurd amounts.
pub const MAX_PAYLOAD: u32 = 1 << 30;
/// The largest payload of any record but a store (the identity record holds
/// a storage name).
pub const MAX_SMALL_PAYLOAD: u32 = 4096;

/// Record kinds (the first payload byte).
pub mod kind {
    /// The storage name the file belongs to; always the first record.
    pub const IDENTITY: u8 = 1;
    /// The last transaction the cache is consistent with.
    pub const LAST_TID: u8 = 2;
    /// A revision: oid, start tid, end tid (zero when current), data.
    pub const STORE: u8 = 3;
    /// The current revision of an oid ends at a tid.
    pub const INVALIDATE: u8 = 4;
    /// The current revision of an oid is dropped.
    pub const DROP_CURRENT: u8 = 5;
    /// One revision (oid, start) is dropped.
    pub const EVICT: u8 = 6;
    /// Every revision is dropped.
    pub const CLEAR: u8 = 7;
}

/// Encodes the file header for a file with this salt.
pub fn encode_header(salt: u64) -> [u8; HEADER_LEN as usize] {
    let mut h = [0u8; HEADER_LEN as usize];
    h[0..8].copy_from_slice(&MAGIC);
    h[8..12].copy_from_slice(&VERSION.to_le_bytes());
    h[12..20].copy_from_slice(&salt.to_le_bytes());
    // 20..28 reserved, zero.
    let crc = crc32fast::hash(&h[0..28]);
    h[28..32].copy_from_slice(&crc.to_le_bytes());
    h
}

/// Why a header was refused.
#[derive(Debug, PartialEq, Eq)]
pub enum HeaderFault {
    /// Fewer than [`HEADER_LEN`] bytes.
    Short,
    /// Not our magic: another program's file, or Python ZEO's `ZEC3`.
    Foreign,
    /// Our magic but a layout version we do not know.
    Version(u32),
    /// The header checksum does not match.
    Checksum,
}

/// Checks a header and returns the file's salt.
pub fn decode_header(h: &[u8]) -> Result<u64, HeaderFault> {
    let Some(h) = h.get(..HEADER_LEN as usize) else {
        return Err(HeaderFault::Short);
    };
    if h[0..8] != MAGIC {
        return Err(HeaderFault::Foreign);
    }
    let version = u32::from_le_bytes([h[8], h[9], h[10], h[11]]);
    if version != VERSION {
        return Err(HeaderFault::Version(version));
    }
    let crc = u32::from_le_bytes([h[28], h[29], h[30], h[31]]);
    if crc != crc32fast::hash(&h[0..28]) {
        return Err(HeaderFault::Checksum);
    }
    let mut salt = [0u8; 8];
    salt.copy_from_slice(&h[12..20]);
    Ok(u64::from_le_bytes(salt))
}

/// Appends one framed record to `out`: length, payload parts, checksum.
///
/// The checksum is seeded with the file's salt so that a record copied from
/// another cache file (or stale bytes of an earlier file in reused disk
/// blocks) does not pass as ours.
pub fn encode_record(out: &mut Vec<u8>, salt: u64, parts: &[&[u8]]) {
    let len: usize = parts.iter().map(|p| p.len()).sum();
    let len = len as u32;
    let mut crc = crc32fast::Hasher::new();
    crc.update(&salt.to_le_bytes());
    crc.update(&len.to_le_bytes());
    out.extend_from_slice(&len.to_le_bytes());
    for p in parts {
        crc.update(p);
        out.extend_from_slice(p);
    }
    out.extend_from_slice(&crc.finalize().to_le_bytes());
}

/// Checks a whole framed record read back from the file and returns its
/// payload.
pub fn verify_record(salt: u64, framed: &[u8]) -> Option<&[u8]> {
    let (len_bytes, rest) = framed.split_first_chunk::<4>()?;
    let len = u32::from_le_bytes(*len_bytes) as usize;
    let payload = rest.get(..len)?;
    let crc_bytes: [u8; 4] = rest.get(len..len + 4)?.try_into().ok()?;
    let mut crc = crc32fast::Hasher::new();
    crc.update(&salt.to_le_bytes());
    crc.update(len_bytes);
    crc.update(payload);
    (crc.finalize() == u32::from_le_bytes(crc_bytes)).then_some(payload)
}

/// A record as the scanner decodes it. Store records do not carry their data
/// (it stays on disk); the scanner returns where it is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Record {
    /// See [`kind::IDENTITY`].
    Identity(Vec<u8>),
    /// See [`kind::LAST_TID`].
    LastTid(Tid),
    /// See [`kind::STORE`].
    Store {
        /// The object.
        oid: Oid,
        /// The tid that wrote the revision.
        start: Tid,
        /// The tid that superseded it, `None` when current.
        end: Option<Tid>,
        /// Bytes of data.
        data_len: u32,
    },
    /// See [`kind::INVALIDATE`].
    Invalidate {
        /// The object.
        oid: Oid,
        /// The tid at which its current revision ended.
        tid: Tid,
    },
    /// See [`kind::DROP_CURRENT`].
    DropCurrent(Oid),
    /// See [`kind::EVICT`].
    Evict {
        /// The object.
        oid: Oid,
        /// The revision's start tid.
        start: Tid,
    },
    /// See [`kind::CLEAR`].
    Clear,
}

fn id_at(p: &[u8], at: usize) -> Option<u64> {
    p.get(at..at + 8)
        .and_then(|b| b.try_into().ok())
        .map(u64::from_be_bytes)
}

/// Decodes a payload (without a store record's data). `None` when the
/// payload is malformed for its kind or the kind is unknown.
fn decode_payload(p: &[u8], total_len: u32) -> Option<Record> {
    let (&k, body) = p.split_first()?;
    let exact = |n: usize| (body.len() == n && total_len as usize == n + 1).then_some(());
    Some(match k {
        kind::IDENTITY => Record::Identity(body.to_vec()),
        kind::LAST_TID => {
            exact(8)?;
            Record::LastTid(Tid(id_at(body, 0)?))
        }
        kind::STORE => {
            let start = Tid(id_at(body, 8)?);
            let end = Tid(id_at(body, 16)?);
            let end = (end != Tid::ZERO).then_some(end);
            if end.is_some_and(|e| e <= start) {
                return None;
            }
            Record::Store {
                oid: Oid(id_at(body, 0)?),
                start,
                end,
                data_len: total_len.checked_sub(STORE_PREFIX as u32)?,
            }
        }
        kind::INVALIDATE => {
            exact(16)?;
            Record::Invalidate {
                oid: Oid(id_at(body, 0)?),
                tid: Tid(id_at(body, 8)?),
            }
        }
        kind::DROP_CURRENT => {
            exact(8)?;
            Record::DropCurrent(Oid(id_at(body, 0)?))
        }
        kind::EVICT => {
            exact(16)?;
            Record::Evict {
                oid: Oid(id_at(body, 0)?),
                start: Tid(id_at(body, 8)?),
            }
        }
        kind::CLEAR => {
            exact(0)?;
            Record::Clear
        }
        _ => return None,
    })
}

/// Where the scan stopped before the end of the file, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tail {
    /// Offset of the first byte not accepted.
    pub offset: u64,
    /// What was wrong there.
    pub reason: &'static str,
}

/// Reads the records of a file whose header was accepted, calling `each`
/// with every valid record and its offset, in file order. Returns the offset
/// after the last valid record and, when the scan stopped early, why.
///
/// Memory stays bounded: store data is checksummed in 64 KiB pieces and
/// never held.
pub fn scan(
    file: &File,
    salt: u64,
    file_len: u64,
    mut each: impl FnMut(u64, Record),
) -> io::Result<(u64, Option<Tail>)> {
    let mut reader = io::BufReader::with_capacity(1 << 16, file);
    // The caller read the header through its own handle position; seek
    // explicitly so the scan does not depend on it.
    io::Seek::seek(&mut reader, io::SeekFrom::Start(HEADER_LEN))?;
    let mut pos = HEADER_LEN;
    let mut chunk = vec![0u8; 1 << 16];
    loop {
        if pos == file_len {
            return Ok((pos, None));
        }
        let stop = |reason| {
            Ok((
                pos,
                Some(Tail {
                    offset: pos,
                    reason,
                }),
            ))
        };
        if file_len - pos < FRAME_OVERHEAD + 1 {
            return stop("truncated record");
        }
        let mut len_bytes = [0u8; 4];
        reader.read_exact(&mut len_bytes)?;
        let len = u32::from_le_bytes(len_bytes);
        if len == 0 || len > MAX_PAYLOAD {
            return stop("impossible record length");
        }
        if u64::from(len) + FRAME_OVERHEAD > file_len - pos {
            return stop("truncated record");
        }
        let mut crc = crc32fast::Hasher::new();
        crc.update(&salt.to_le_bytes());
        crc.update(&len_bytes);
        // The fixed part of any record fits in STORE_PREFIX bytes; read that
        // much (or the whole payload when shorter) into memory.
        let head_len = if len_bytes_kind_is_store(&mut reader)? {
            (STORE_PREFIX as u32).min(len)
        } else if len <= MAX_SMALL_PAYLOAD {
            len
        } else {
            return stop("impossible record length");
        };
        let mut head = vec![0u8; head_len as usize];
        reader.read_exact(&mut head)?;
        crc.update(&head);
        let mut left = (len - head_len) as usize;
        while left > 0 {
            let n = left.min(chunk.len());
            reader.read_exact(&mut chunk[..n])?;
            crc.update(&chunk[..n]);
            left -= n;
        }
        let mut crc_bytes = [0u8; 4];
        reader.read_exact(&mut crc_bytes)?;
        if crc.finalize() != u32::from_le_bytes(crc_bytes) {
            return stop("checksum mismatch");
        }
        let Some(record) = decode_payload(&head, len) else {
            return stop("malformed record");
        };
        each(pos, record);
        pos += u64::from(len) + FRAME_OVERHEAD;
    }
}

/// Peeks at the kind byte without consuming it.
fn len_bytes_kind_is_store(reader: &mut io::BufReader<&File>) -> io::Result<bool> {
    let buf = io::BufRead::fill_buf(reader)?;
    Ok(buf.first() == Some(&kind::STORE))
}

/// Encodes a store record's fixed prefix.
pub fn store_prefix(oid: Oid, start: Tid, end: Option<Tid>) -> [u8; STORE_PREFIX as usize] {
    let mut p = [0u8; STORE_PREFIX as usize];
    p[0] = kind::STORE;
    p[1..9].copy_from_slice(&oid.to_bytes());
    p[9..17].copy_from_slice(&start.to_bytes());
    p[17..25].copy_from_slice(&end.unwrap_or(Tid::ZERO).to_bytes());
    p
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_round_trip() {
        let h = encode_header(0x1234);
        assert_eq!(decode_header(&h), Ok(0x1234));
        let mut bad = h;
        bad[21] ^= 1;
        assert_eq!(decode_header(&bad), Err(HeaderFault::Checksum));
        assert_eq!(
            decode_header(b"ZEC3\0\0\0\0\0\0\0\0"),
            Err(HeaderFault::Short)
        );
        let mut zec = [0u8; 32];
        zec[..4].copy_from_slice(b"ZEC3");
        assert_eq!(decode_header(&zec), Err(HeaderFault::Foreign));
        let mut v2 = h;
        v2[8] = 2;
        assert_eq!(decode_header(&v2), Err(HeaderFault::Version(2)));
    }

    #[test]
    fn record_round_trip_and_salt() {
        let mut out = Vec::new();
        encode_record(&mut out, 7, &[&[kind::LAST_TID], &Tid(5).to_bytes()]);
        assert_eq!(out.len(), 4 + 9 + 4);
        assert_eq!(verify_record(7, &out), Some(&out[4..13]));
        assert_eq!(verify_record(8, &out), None, "another file's salt");
        assert_eq!(
            decode_payload(&out[4..13], 9),
            Some(Record::LastTid(Tid(5)))
        );
    }

    #[test]
    fn store_end_must_follow_start() {
        let p = store_prefix(Oid(1), Tid(5), Some(Tid(5)));
        assert_eq!(decode_payload(&p, STORE_PREFIX as u32 + 3), None);
        let p = store_prefix(Oid(1), Tid(5), Some(Tid(6)));
        assert!(decode_payload(&p, STORE_PREFIX as u32 + 3).is_some());
    }
}
