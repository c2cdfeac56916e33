//! `Data.fs.index`: the index snapshot ZODB's `fsIndex.save` writes, so that
//! Python and this crate can each start from the other's index.
//!
//! The file is a sequence of independent protocol-3 pickles written by a
//! pickler in "fast" mode (no memo opcodes): the committed file size as an
//! int, then one `(prefix, bucket)` tuple per 6-byte oid prefix in ascending
//! order, where `bucket` is all 2-byte oid suffixes followed by all 6-byte
//! positions (`fsBucket.toString()`), then `None`. The opcodes are exactly
//! those CPython's pickler picks for these values, written here by hand
//! because the shape is fixed.

use std::fs::{self, File};
use std::io::{BufReader, BufWriter, Read, Write};
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};

use super::fault::Io;
use super::index::OidIndex;

/// Positions are stored in 6 bytes.
const MAX_POS: u64 = (1 << 48) - 1;
/// Longest bucket string: 65536 entries of 8 bytes.
const MAX_BUCKET: usize = 65_536 * 8;

/// `Data.fs` → `Data.fs.index`.
pub(crate) fn index_path(data_path: &Path) -> PathBuf {
    append_suffix(data_path, ".index")
}

/// `path` with `suffix` appended to its file name.
pub(crate) fn append_suffix(path: &Path, suffix: &str) -> PathBuf {
    let mut s = path.as_os_str().to_os_string();
    s.push(suffix);
    PathBuf::from(s)
}

/// Writes the index for a file whose committed size is `pos`: first to
/// `Data.fs.index.index_tmp` (ZODB's name), synced, then renamed over
/// `Data.fs.index`. Returns `false` (and writes nothing) when a position does
/// not fit the format's 48 bits. On failure the temporary file is removed
/// and `Data.fs.index`, if any, is left as it was or removed: never a
/// partial index under either name.
pub(crate) fn save(data_path: &Path, pos: u64, index: &OidIndex, io: &Io) -> Result<bool> {
    save_at(&index_path(data_path), pos, index, io)
}

/// [`save`] to the index file `final_path` itself (a backup's `.index`).
pub(crate) fn save_at(final_path: &Path, pos: u64, index: &OidIndex, io: &Io) -> Result<bool> {
    if pos > MAX_POS || index.iter().any(|(_, p)| p > MAX_POS) {
        return Ok(false);
    }
    let final_path = final_path.to_path_buf();
    let tmp_path = append_suffix(&final_path, ".index_tmp");
    let written = write_tmp(&tmp_path, pos, index, io);
    if let Err(e) = written {
        if let Err(rm) = fs::remove_file(&tmp_path) {
            if rm.kind() != std::io::ErrorKind::NotFound {
                tracing::warn!("removing {}: {rm}", tmp_path.display());
            }
        }
        return Err(e);
    }
    match fs::remove_file(&final_path) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => {
            let _ = fs::remove_file(&tmp_path);
            return Err(Error::io(format!("removing {}", final_path.display()), e));
        }
    }
    fs::rename(&tmp_path, &final_path).map_err(|e| {
        let _ = fs::remove_file(&tmp_path);
        Error::io(
            format!(
                "renaming {} to {}",
                tmp_path.display(),
                final_path.display()
            ),
            e,
        )
    })?;
    Ok(true)
}

/// Writes and syncs the whole index to `tmp_path`.
fn write_tmp(tmp_path: &Path, pos: u64, index: &OidIndex, io: &Io) -> Result<()> {
    let err = |what: &str, e| Error::io(format!("{what} {}", tmp_path.display()), e);
    let file = File::create(tmp_path).map_err(|e| err("creating", e))?;
    let mut out = BufWriter::with_capacity(1 << 16, io.writer(&file));
    let mut buf = Vec::with_capacity(MAX_BUCKET + 32);
    encode_pos(pos, &mut buf);
    out.write_all(&buf).map_err(|e| err("writing", e))?;

    let mut entries = index.iter().peekable();
    while let Some((first_oid, _)) = entries.peek().copied() {
        let prefix = first_oid >> 16;
        let mut suffixes = Vec::new();
        let mut positions = Vec::new();
        while let Some((oid, p)) = entries.peek().copied() {
            if oid >> 16 != prefix {
                break;
            }
            suffixes.extend_from_slice(&((oid & 0xffff) as u16).to_be_bytes());
            positions.extend_from_slice(&p.to_be_bytes()[2..]);
            entries.next();
        }
        buf.clear();
        buf.extend_from_slice(&[0x80, 3]);
        encode_bytes(&prefix.to_be_bytes()[2..], &mut buf);
        suffixes.extend_from_slice(&positions);
        encode_bytes(&suffixes, &mut buf);
        buf.extend_from_slice(&[0x86, b'.']);
        out.write_all(&buf).map_err(|e| err("writing", e))?;
    }
    out.write_all(&[0x80, 3, b'N', b'.'])
        .map_err(|e| err("writing", e))?;
    out.flush().map_err(|e| err("writing", e))?;
    drop(out);
    io.sync_all(&file).map_err(|e| err("syncing", e))
}

/// The pickle of the int `pos` with its PROTO header and STOP.
fn encode_pos(pos: u64, out: &mut Vec<u8>) {
    out.extend_from_slice(&[0x80, 3]);
    if pos <= 0xff {
        out.extend_from_slice(&[b'K', pos as u8]);
    } else if pos <= 0xffff {
        out.push(b'M');
        out.extend_from_slice(&(pos as u16).to_le_bytes());
    } else if pos <= 0x7fff_ffff {
        out.push(b'J');
        out.extend_from_slice(&(pos as u32).to_le_bytes());
    } else {
        // LONG1: minimal little-endian two's complement, which for a
        // positive number is bit_length / 8 + 1 bytes.
        let n = (64 - pos.leading_zeros() as usize) / 8 + 1;
        let bytes = (u128::from(pos)).to_le_bytes();
        out.extend_from_slice(&[0x8a, n as u8]);
        out.extend_from_slice(&bytes[..n]);
    }
    out.push(b'.');
}

/// `bytes` as SHORT_BINBYTES or BINBYTES.
fn encode_bytes(b: &[u8], out: &mut Vec<u8>) {
    if b.len() <= 0xff {
        out.extend_from_slice(&[b'C', b.len() as u8]);
    } else {
        out.push(b'B');
        out.extend_from_slice(&(b.len() as u32).to_le_bytes());
    }
    out.extend_from_slice(b);
}

/// Why an index file was not used.
#[derive(Debug)]
pub(crate) struct Unusable(pub String);

/// Reads `Data.fs.index`: `Ok(None)` when it does not exist, `Err` when it
/// exists but is not an index this code (or fsIndex.save) writes.
pub(crate) fn load(data_path: &Path) -> std::result::Result<Option<(u64, OidIndex)>, Unusable> {
    let path = index_path(data_path);
    let file = match File::open(&path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(Unusable(format!("cannot open {}: {e}", path.display()))),
    };
    decode(BufReader::with_capacity(1 << 16, file))
        .map(Some)
        .map_err(|why| Unusable(format!("{}: {why}", path.display())))
}

/// Decodes an index file's content: the position it is valid for and the
/// entries. Every length is checked against [`MAX_BUCKET`] before anything
/// is reserved, and the entries only grow with the bytes read.
pub(crate) fn decode(r: impl Read) -> std::result::Result<(u64, OidIndex), String> {
    PickleReader {
        inner: r,
        offset: 0,
    }
    .decode()
}

struct PickleReader<R: Read> {
    inner: R,
    offset: u64,
}

impl<R: Read> PickleReader<R> {
    fn byte(&mut self) -> std::result::Result<u8, String> {
        let mut b = [0u8; 1];
        self.fill(&mut b)?;
        Ok(b[0])
    }

    fn fill(&mut self, buf: &mut [u8]) -> std::result::Result<(), String> {
        self.inner
            .read_exact(buf)
            .map_err(|e| format!("at byte {}: {e}", self.offset))?;
        self.offset += buf.len() as u64;
        Ok(())
    }

    fn expect(&mut self, want: u8, what: &str) -> std::result::Result<(), String> {
        let at = self.offset;
        let got = self.byte()?;
        if got == want {
            Ok(())
        } else {
            Err(format!(
                "at byte {at}: expected {what}, found opcode 0x{got:02x}"
            ))
        }
    }

    fn proto(&mut self) -> std::result::Result<(), String> {
        self.expect(0x80, "PROTO")?;
        let at = self.offset;
        match self.byte()? {
            2..=5 => Ok(()),
            p => Err(format!("at byte {at}: unsupported pickle protocol {p}")),
        }
    }

    fn bytes(&mut self) -> std::result::Result<Vec<u8>, String> {
        let at = self.offset;
        let len = match self.byte()? {
            b'C' => usize::from(self.byte()?),
            b'B' => {
                let mut l = [0u8; 4];
                self.fill(&mut l)?;
                u32::from_le_bytes(l) as usize
            }
            op => {
                return Err(format!(
                    "at byte {at}: expected bytes, found opcode 0x{op:02x}"
                ))
            }
        };
        if len > MAX_BUCKET {
            return Err(format!(
                "at byte {at}: bytes of length {len} are too long for an index bucket"
            ));
        }
        let mut v = vec![0u8; len];
        self.fill(&mut v)?;
        Ok(v)
    }

    fn decode(&mut self) -> std::result::Result<(u64, OidIndex), String> {
        self.proto()?;
        let at = self.offset;
        let pos = match self.byte()? {
            b'K' => u64::from(self.byte()?),
            b'M' => {
                let mut b = [0u8; 2];
                self.fill(&mut b)?;
                u64::from(u16::from_le_bytes(b))
            }
            b'J' => {
                let mut b = [0u8; 4];
                self.fill(&mut b)?;
                let v = i32::from_le_bytes(b);
                u64::try_from(v).map_err(|_| format!("at byte {at}: negative position"))?
            }
            0x8a => {
                let n = usize::from(self.byte()?);
                if n == 0 || n > 9 {
                    return Err(format!("at byte {at}: position of {n} bytes"));
                }
                let mut b = [0u8; 9];
                self.fill(&mut b[..n])?;
                if n == 9 && b[8] != 0 || b[n - 1] & 0x80 != 0 {
                    return Err(format!("at byte {at}: position out of range"));
                }
                let mut le = [0u8; 8];
                le.copy_from_slice(&b[..8]);
                u64::from_le_bytes(le)
            }
            op => {
                return Err(format!(
                    "at byte {at}: not a new-format index (first pickle opcode 0x{op:02x})"
                ))
            }
        };
        self.expect(b'.', "STOP")?;

        let mut entries: Vec<(u64, u64)> = Vec::new();
        let mut last_prefix: Option<u64> = None;
        loop {
            self.proto()?;
            let at = self.offset;
            let mut peek = [0u8; 1];
            self.fill(&mut peek)?;
            if peek[0] == b'N' {
                self.expect(b'.', "STOP")?;
                break;
            }
            // Put the opcode back by decoding from it directly.
            let prefix = self.bytes_after(peek[0], at)?;
            let bucket = self.bytes()?;
            self.expect(0x86, "TUPLE2")?;
            self.expect(b'.', "STOP")?;
            let prefix: [u8; 6] = prefix
                .as_slice()
                .try_into()
                .map_err(|_| format!("at byte {at}: oid prefix of {} bytes", prefix.len()))?;
            let mut p8 = [0u8; 8];
            p8[2..].copy_from_slice(&prefix);
            let prefix = u64::from_be_bytes(p8);
            if last_prefix.is_some_and(|l| l >= prefix) {
                return Err(format!("at byte {at}: oid prefixes out of order"));
            }
            last_prefix = Some(prefix);
            if bucket.is_empty() || bucket.len() % 8 != 0 {
                return Err(format!("at byte {at}: bucket of {} bytes", bucket.len()));
            }
            let n = bucket.len() / 8;
            let (keys, values) = bucket.split_at(n * 2);
            let mut last_suffix: Option<u16> = None;
            for i in 0..n {
                let suffix = u16::from_be_bytes([keys[2 * i], keys[2 * i + 1]]);
                if last_suffix.is_some_and(|l| l >= suffix) {
                    return Err(format!("at byte {at}: bucket keys out of order"));
                }
                last_suffix = Some(suffix);
                let mut v = [0u8; 8];
                v[2..].copy_from_slice(&values[6 * i..6 * i + 6]);
                let p = u64::from_be_bytes(v);
                if p < 4 || p >= pos {
                    return Err(format!(
                        "at byte {at}: position {p} outside the file (size {pos})"
                    ));
                }
                entries.push(((prefix << 16) | u64::from(suffix), p));
            }
        }
        Ok((pos, OidIndex::from_sorted(entries)))
    }

    fn bytes_after(&mut self, op: u8, at: u64) -> std::result::Result<Vec<u8>, String> {
        let len = match op {
            b'C' => usize::from(self.byte()?),
            b'B' => {
                let mut l = [0u8; 4];
                self.fill(&mut l)?;
                u32::from_le_bytes(l) as usize
            }
            op => {
                return Err(format!(
                    "at byte {at}: expected bytes or None, found opcode 0x{op:02x}"
                ))
            }
        };
        if len > MAX_BUCKET {
            return Err(format!("at byte {at}: bytes of length {len} are too long"));
        }
        let mut v = vec![0u8; len];
        self.fill(&mut v)?;
        Ok(v)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[test]
    fn matches_the_python_sample() {
        // samples/filestorage/out/prepack.fs.index from the format spec.
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("prepack.fs");
        let index = OidIndex::from_sorted(vec![(0, 1520), (1, 672), (2, 1132), (3, 1378)]);
        assert!(save(&data, 1661, &index, &Io::default()).unwrap());
        let bytes = fs::read(index_path(&data)).unwrap();
        let mut want = vec![
            0x80, 3, 0x4d, 0x7d, 0x06, 0x2e, 0x80, 3, 0x43, 6, 0, 0, 0, 0, 0, 0, 0x43, 0x20,
        ];
        want.extend_from_slice(&[0, 0, 0, 1, 0, 2, 0, 3]);
        for p in [1520u64, 672, 1132, 1378] {
            want.extend_from_slice(&p.to_be_bytes()[2..]);
        }
        want.extend_from_slice(&[0x86, 0x2e, 0x80, 3, 0x4e, 0x2e]);
        assert_eq!(bytes, want);
        let (pos, back) = load(&data).unwrap().unwrap();
        assert_eq!(pos, 1661);
        assert_eq!(
            back.iter().collect::<Vec<_>>(),
            index.iter().collect::<Vec<_>>()
        );
        assert!(!append_suffix(&index_path(&data), ".index_tmp").exists());
    }

    #[test]
    fn empty_index_is_nine_bytes() {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("e.fs");
        assert!(save(&data, 4, &OidIndex::new(), &Io::default()).unwrap());
        assert_eq!(
            fs::read(index_path(&data)).unwrap(),
            [0x80, 3, 0x4b, 4, 0x2e, 0x80, 3, 0x4e, 0x2e]
        );
    }

    #[test]
    fn int_encodings_round_trip() {
        for pos in [
            5u64,
            255,
            256,
            65_535,
            65_536,
            0x7fff_ffff,
            0x8000_0000,
            0xffff_ffff,
            1 << 40,
            (1 << 48) - 1,
        ] {
            let mut buf = Vec::new();
            encode_pos(pos, &mut buf);
            buf.extend_from_slice(&[0x80, 3, b'N', b'.']);
            let mut r = PickleReader {
                inner: &buf[..],
                offset: 0,
            };
            let (p, ix) = r.decode().unwrap();
            assert_eq!(p, pos);
            assert!(ix.is_empty());
        }
        let mut buf = Vec::new();
        encode_pos(0x8000_0000, &mut buf);
        assert_eq!(buf, [0x80, 3, 0x8a, 5, 0, 0, 0, 0x80, 0, b'.']);
    }

    #[test]
    fn large_buckets_use_binbytes_and_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("big.fs");
        let entries: Vec<(u64, u64)> = (0..70_000u64).map(|o| (o, 100 + o * 50)).collect();
        let index = OidIndex::from_sorted(entries.clone());
        assert!(save(&data, 100 + 70_000 * 50, &index, &Io::default()).unwrap());
        let (_, back) = load(&data).unwrap().unwrap();
        assert_eq!(back.iter().collect::<Vec<_>>(), entries);
    }

    #[test]
    fn garbage_is_unusable_not_a_panic() {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("g.fs");
        for junk in [
            &b""[..],
            b"\x80\x03}q\x00.",
            b"\x80\x03K\x04.",
            b"\x80\x03M\xff\xff.\x80\x03C\x06\0\0\0\0\0\0C\x07abcdefg\x86.",
        ] {
            fs::write(index_path(&data), junk).unwrap();
            assert!(load(&data).is_err(), "{junk:?}");
        }
    }

    #[test]
    fn a_failed_write_leaves_no_temporary_file_and_the_old_index_alone() {
        use super::super::fault::FaultInjector;
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("Data.fs");
        let old = OidIndex::from_sorted(vec![(1, 4)]);
        assert!(save(&data, 100, &old, &Io::default()).unwrap());
        let before = fs::read(index_path(&data)).unwrap();
        let tmp = append_suffix(&index_path(&data), ".index_tmp");
        let big = OidIndex::from_sorted((0..200_000u64).map(|o| (o, 4 + o)).collect());
        let faults = FaultInjector::new();
        let io = Io::with(Some(Arc::clone(&faults)));
        // Out of space in the middle of the writes, then at the sync.
        for fail in [0u8, 1] {
            if fail == 0 {
                faults.fail_writes_after(100_000);
            } else {
                faults.heal();
                faults.fail_next_syncs(1);
            }
            let err = save(&data, 1 << 30, &big, &io).unwrap_err();
            assert!(err.to_string().contains("No space left on device"), "{err}");
            assert!(!tmp.exists(), "index_tmp left behind");
            assert_eq!(fs::read(index_path(&data)).unwrap(), before);
        }
        assert_eq!(faults.injected(), 2);
        faults.heal();
        assert!(save(&data, 1 << 30, &big, &io).unwrap());
        assert!(!tmp.exists());
        assert_eq!(load(&data).unwrap().unwrap().1.len(), 200_000);
    }
}
