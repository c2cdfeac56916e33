//! One-way calls whose arguments are all byte strings, read and written in
//! place: `storeBlobChunk(chunk)`, which a blob upload sends once per
//! 59,000 bytes, and `receiveBlobChunk(oid, serial, chunk)`, which a
//! download receives as often.
//!
//! Decoding such a frame the general way copies each chunk into a new
//! value, which the receiver then copies again into its write buffer; the
//! general encoder likewise wants the chunk copied into a value first.
//! Here the arguments are found in the payload and borrowed, or written
//! straight from the caller's slices. Only the exact forms ZEO's
//! marshallers (and ours) write are recognized: a pickle of protocol 3
//! without memo opcodes, or a msgpack array, holding
//! `(msgid, True, method, (bytes, ...))`. Anything else is `None`, and the
//! caller decodes the general way; for everything recognized the general
//! decoder yields the same call (tested against it, `tests/bytes_call.rs`),
//! and the encoder writes the general encoder's bytes.

use bytes::Bytes;

use crate::buffer_pool::BufferPool;
use crate::error::{Error, Result};
use crate::handshake::Encoding;

/// The `N` arguments of a one-way call of `method` taking `N` byte
/// strings, if `payload` is one in a form this reads; `None` otherwise
/// (decode it the general way then).
///
/// ```
/// use zeo_protocol::{ClientRequest, Encoding, Marshaller};
///
/// for encoding in [Encoding::Pickle, Encoding::Msgpack] {
///     let m = Marshaller::client(encoding);
///     let payload = m.encode(&ClientRequest::store_blob_chunk(b"bytes")).unwrap();
///     assert_eq!(
///         zeo_protocol::oneway_bytes_call(encoding, &payload, "storeBlobChunk"),
///         Some([&b"bytes"[..]])
///     );
///     assert_eq!(zeo_protocol::oneway_bytes_call::<1>(encoding, &payload, "other"), None);
///     assert_eq!(zeo_protocol::oneway_bytes_call::<2>(encoding, &payload, "storeBlobChunk"), None);
/// }
/// ```
pub fn oneway_bytes_call<'a, const N: usize>(
    encoding: Encoding,
    payload: &'a [u8],
    method: &str,
) -> Option<[&'a [u8]; N]> {
    let mut r = Reader(payload);
    let args = match encoding {
        Encoding::Pickle => pickle(&mut r, method)?,
        Encoding::Msgpack => msgpack(&mut r, method)?,
    };
    r.0.is_empty().then_some(args)
}

/// Appends the payload of the one-way call `method(*args)` (msgid 0) to
/// `out`, written straight from `args`: the same bytes as
/// [`crate::Marshaller::encode`] gives for that [`crate::Message`],
/// without first copying the arguments into values.
///
/// ```
/// use zeo_protocol::{ClientRequest, Encoding, Marshaller};
///
/// for encoding in [Encoding::Pickle, Encoding::Msgpack] {
///     let general = Marshaller::client(encoding).encode(&ClientRequest::store_blob_chunk(b"xy")).unwrap();
///     let mut direct = Vec::new();
///     zeo_protocol::encode_oneway_bytes_call(encoding, "storeBlobChunk", &[b"xy"], &mut direct).unwrap();
///     assert_eq!(direct, general);
/// }
/// ```
///
/// # Errors
///
/// [`Error::Unencodable`] when `method` or an argument is longer than a
/// 32-bit length (in msgpack, a method name longer than 255 bytes, or more
/// than 15 arguments); `out` is left as it was.
pub fn encode_oneway_bytes_call(
    encoding: Encoding,
    method: &str,
    args: &[&[u8]],
    out: &mut Vec<u8>,
) -> Result<()> {
    let too_long = || Error::Unencodable("a one-way call's arguments or name are too long".into());
    let name_len = u32::try_from(method.len()).map_err(|_| too_long())?;
    let mut arg_lens = Vec::with_capacity(args.len());
    for arg in args {
        arg_lens.push(u32::try_from(arg.len()).map_err(|_| too_long())?);
    }
    let bytes: usize = args.iter().map(|a| a.len() + 5).sum();
    match encoding {
        Encoding::Pickle => {
            out.reserve(bytes + method.len() + 16);
            out.extend_from_slice(b"\x80\x03(K\x00\x88X");
            out.extend_from_slice(&name_len.to_le_bytes());
            out.extend_from_slice(method.as_bytes());
            if args.len() > 3 {
                out.push(MARK);
            }
            for (arg, len) in args.iter().zip(arg_lens) {
                match u8::try_from(len) {
                    Ok(short) => out.extend_from_slice(&[SHORT_BINBYTES, short]),
                    Err(_) => {
                        out.push(BINBYTES);
                        out.extend_from_slice(&len.to_le_bytes());
                    }
                }
                out.extend_from_slice(arg);
            }
            out.push(match args.len() {
                0 => EMPTY_TUPLE,
                n @ 1..=3 => TUPLE1 + (n as u8 - 1),
                _ => TUPLE,
            });
            out.extend_from_slice(b"t.");
        }
        Encoding::Msgpack => {
            let name_len = u8::try_from(name_len).map_err(|_| too_long())?;
            let count = u8::try_from(args.len())
                .ok()
                .filter(|n| *n < 16)
                .ok_or_else(too_long)?;
            out.reserve(bytes + method.len() + 8);
            out.extend_from_slice(b"\x94\x00\xc3");
            match name_len {
                0..=31 => out.push(0xa0 | name_len),
                _ => out.extend_from_slice(&[0xd9, name_len]),
            }
            out.extend_from_slice(method.as_bytes());
            out.push(0x90 | count);
            for (arg, len) in args.iter().zip(arg_lens) {
                if let Ok(short) = u8::try_from(len) {
                    out.extend_from_slice(&[0xc4, short]);
                } else if let Ok(mid) = u16::try_from(len) {
                    out.push(0xc5);
                    out.extend_from_slice(&mid.to_be_bytes());
                } else {
                    out.push(0xc6);
                    out.extend_from_slice(&len.to_be_bytes());
                }
                out.extend_from_slice(arg);
            }
        }
    }
    Ok(())
}

/// One one-way call of `method` per `chunk_size`-byte piece of `data`
/// (the last piece may be shorter), each taking the `leading` arguments
/// and then its piece, encoded as [`encode_oneway_bytes_call`] encodes
/// them into one buffer taken from `pool`; the messages, in order, as
/// slices of that buffer, which goes back to the pool once the last of
/// them is dropped (sent). A blob transfer's chunks, both ways: one copy
/// of the bytes per block, into a buffer an earlier block used.
///
/// ```
/// use zeo_protocol::buffer_pool::BufferPool;
/// use zeo_protocol::{encode_chunked_calls, oneway_bytes_call, Encoding};
///
/// let pool = BufferPool::default();
/// let data = vec![7u8; 150_000];
/// let calls = encode_chunked_calls(&pool, Encoding::Pickle, "storeBlobChunk", &[], &data, 59_000).unwrap();
/// let sizes: Vec<usize> = calls
///     .iter()
///     .map(|c| oneway_bytes_call::<1>(Encoding::Pickle, c, "storeBlobChunk").unwrap()[0].len())
///     .collect();
/// assert_eq!(sizes, [59_000, 59_000, 32_000]);
/// ```
///
/// # Errors
///
/// What [`encode_oneway_bytes_call`] fails with.
///
/// # Panics
///
/// If `chunk_size` is 0, as [`slice::chunks`] does.
pub fn encode_chunked_calls(
    pool: &BufferPool,
    encoding: Encoding,
    method: &str,
    leading: &[&[u8]],
    data: &[u8],
    chunk_size: usize,
) -> Result<Vec<Bytes>> {
    let count = data.len().div_ceil(chunk_size.max(1));
    // A message is its arguments, up to 5 bytes of header for each, and
    // under 16 bytes plus the method's name around them.
    let each = method.len()
        + 16
        + 5 * (leading.len() + 1)
        + leading.iter().map(|a| a.len()).sum::<usize>();
    let mut encoded = pool.take(data.len() + count * each);
    let mut ends = Vec::with_capacity(count);
    let mut args = leading.to_vec();
    args.push(&[]);
    for piece in data.chunks(chunk_size) {
        *args.last_mut().expect("pushed above") = piece;
        encode_oneway_bytes_call(encoding, method, &args, &mut encoded)?;
        ends.push(encoded.len());
    }
    let encoded = pool.shared(encoded);
    let mut start = 0;
    Ok(ends
        .into_iter()
        .map(|end| {
            let message = encoded.slice(start..end);
            start = end;
            message
        })
        .collect())
}

const MARK: u8 = b'(';
const BINBYTES: u8 = b'B';
const SHORT_BINBYTES: u8 = b'C';
const EMPTY_TUPLE: u8 = b')';
const TUPLE: u8 = b't';
const TUPLE1: u8 = 0x85;

/// `PROTO 3, MARK, msgid (a non-negative int), NEWTRUE, BINUNICODE
/// method, the arguments' tuple (each BINBYTES or SHORT_BINBYTES), TUPLE,
/// STOP`.
fn pickle<'a, const N: usize>(r: &mut Reader<'a>, method: &str) -> Option<[&'a [u8]; N]> {
    r.expect(b"\x80\x03(")?;
    match r.byte()? {
        b'K' => r.skip(1)?,
        b'M' => r.skip(2)?,
        // Signed: a negative msgid may be a heartbeat (-1).
        b'J' if i32::from_le_bytes(r.array()?) >= 0 => {}
        _ => return None,
    }
    r.expect(b"\x88X")?;
    let name_len = u32::from_le_bytes(r.array()?);
    if usize::try_from(name_len).ok()? != method.len() {
        return None;
    }
    r.expect(method.as_bytes())?;
    if N > 3 {
        r.expect(&[MARK])?;
    }
    let mut args = [&[][..]; N];
    for arg in &mut args {
        let len = match r.byte()? {
            BINBYTES => usize::try_from(u32::from_le_bytes(r.array()?)).ok()?,
            SHORT_BINBYTES => usize::from(r.byte()?),
            _ => return None,
        };
        *arg = r.take(len)?;
    }
    let close = match N {
        0 => EMPTY_TUPLE,
        1..=3 => TUPLE1 + (N as u8 - 1),
        _ => TUPLE,
    };
    r.expect(&[close])?;
    r.expect(b"t.")?;
    Some(args)
}

/// `[msgid (a non-negative int), true, method (str), [arg (bin), ...]]`.
fn msgpack<'a, const N: usize>(r: &mut Reader<'a>, method: &str) -> Option<[&'a [u8]; N]> {
    r.expect(b"\x94")?;
    match r.byte()? {
        0x00..=0x7f => {}
        0xcc => r.skip(1)?,
        0xcd => r.skip(2)?,
        0xce => r.skip(4)?,
        0xcf => r.skip(8)?,
        _ => return None,
    }
    r.expect(b"\xc3")?;
    let name_len = match r.byte()? {
        b @ 0xa0..=0xbf => usize::from(b & 0x1f),
        0xd9 => usize::from(r.byte()?),
        _ => return None,
    };
    if name_len != method.len() {
        return None;
    }
    r.expect(method.as_bytes())?;
    if N >= 16 || r.byte()? != 0x90 | N as u8 {
        return None;
    }
    let mut args = [&[][..]; N];
    for arg in &mut args {
        let len = match r.byte()? {
            0xc4 => usize::from(r.byte()?),
            0xc5 => usize::from(u16::from_be_bytes(r.array()?)),
            0xc6 => usize::try_from(u32::from_be_bytes(r.array()?)).ok()?,
            _ => return None,
        };
        *arg = r.take(len)?;
    }
    Some(args)
}

/// The unread rest of a payload; every read is bounded by it.
struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        if n > self.0.len() {
            return None;
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Some(head)
    }

    fn byte(&mut self) -> Option<u8> {
        self.take(1).map(|b| b[0])
    }

    fn skip(&mut self, n: usize) -> Option<()> {
        self.take(n).map(|_| ())
    }

    fn array<const M: usize>(&mut self) -> Option<[u8; M]> {
        self.take(M)?.try_into().ok()
    }

    fn expect(&mut self, bytes: &[u8]) -> Option<()> {
        (self.take(bytes.len())? == bytes).then_some(())
    }
}
