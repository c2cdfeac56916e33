//! Recognizing a one-way call with one byte-string argument in a frame
//! payload, without decoding it: `storeBlobChunk(chunk)`, which a blob
//! upload sends once per 59,000 bytes.
//!
//! Decoding such a frame the general way copies the chunk into a new
//! value, which the server then copies again into its write buffer. Here
//! the chunk is found in place and borrowed. Only the exact forms that
//! ZEO's marshallers (and ours) write are recognized: a pickle of protocol
//! 3 without memo opcodes, or a msgpack array, holding
//! `(msgid, True, method, (bytes,))`. Anything else is `None`, and the
//! caller decodes the general way; for everything recognized, the general
//! decoder yields the same call (tested against it, `tests/bytes_call.rs`).

use crate::handshake::Encoding;

/// The argument of a one-way call of `method` taking one byte string, if
/// `payload` is one in a form this reads; `None` otherwise (decode it the
/// general way then).
///
/// ```
/// use zeo_protocol::{ClientRequest, Encoding, Marshaller};
///
/// for encoding in [Encoding::Pickle, Encoding::Msgpack] {
///     let m = Marshaller::client(encoding);
///     let payload = m.encode(&ClientRequest::store_blob_chunk(b"bytes")).unwrap();
///     assert_eq!(
///         zeo_protocol::oneway_bytes_arg(encoding, &payload, "storeBlobChunk"),
///         Some(&b"bytes"[..])
///     );
///     assert_eq!(zeo_protocol::oneway_bytes_arg(encoding, &payload, "other"), None);
/// }
/// ```
pub fn oneway_bytes_arg<'a>(
    encoding: Encoding,
    payload: &'a [u8],
    method: &str,
) -> Option<&'a [u8]> {
    let mut r = Reader(payload);
    let arg = match encoding {
        Encoding::Pickle => pickle(&mut r, method)?,
        Encoding::Msgpack => msgpack(&mut r, method)?,
    };
    r.0.is_empty().then_some(arg)
}

/// `PROTO 3, MARK, msgid (a non-negative int), NEWTRUE, BINUNICODE method, BINBYTES or
/// SHORT_BINBYTES arg, TUPLE1, TUPLE, STOP`.
fn pickle<'a>(r: &mut Reader<'a>, method: &str) -> Option<&'a [u8]> {
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
    let len = match r.byte()? {
        b'B' => usize::try_from(u32::from_le_bytes(r.array()?)).ok()?,
        b'C' => usize::from(r.byte()?),
        _ => return None,
    };
    let arg = r.take(len)?;
    r.expect(b"\x85t.")?;
    Some(arg)
}

/// `[msgid (a non-negative int), true, method (str), [arg (bin)]]`.
fn msgpack<'a>(r: &mut Reader<'a>, method: &str) -> Option<&'a [u8]> {
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
    r.expect(b"\x91")?;
    let len = match r.byte()? {
        0xc4 => usize::from(r.byte()?),
        0xc5 => usize::from(u16::from_be_bytes(r.array()?)),
        0xc6 => usize::try_from(u32::from_be_bytes(r.array()?)).ok()?,
        _ => return None,
    };
    r.take(len)
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

    fn array<const N: usize>(&mut self) -> Option<[u8; N]> {
        self.take(N)?.try_into().ok()
    }

    fn expect(&mut self, bytes: &[u8]) -> Option<()> {
        (self.take(bytes.len())? == bytes).then_some(())
    }
}
