//! Sized-message framing: every message in either direction is a 4-byte
//! big-endian length followed by that many payload bytes.
//!
//! ZEO itself enforces no limit; we do, so that a peer cannot make us buffer
//! up to 4 GiB. The limit is checked against the announced length before any
//! buffer space is reserved, and even a length within the limit reserves
//! nothing up front: the buffer grows as the bytes arrive, by at most
//! [`FRAME_GROW_STEP`] or what has arrived, whichever is more
//! ([`frame_growth_target`], [`reserve_frame`]). So a peer that announces
//! 64 MiB and sends four bytes costs four bytes and a step, not 64 MiB.

use bytes::{Buf, BufMut, Bytes, BytesMut};
use tokio_util::codec::{Decoder, Encoder};

use crate::error::{Error, Result};

/// Bytes in the length prefix.
pub const HEADER_LEN: usize = 4;

/// Default largest payload accepted: 64 MiB, far above ZEO's largest
/// routine messages (object records, 59000-byte blob chunks).
pub const DEFAULT_MAX_FRAME: usize = 64 * 1024 * 1024;

/// Least room made in a frame buffer for the bytes still to come: 64 KiB.
pub const FRAME_GROW_STEP: usize = 64 * 1024;

/// The capacity to give a buffer holding `have` bytes of a frame that
/// takes `total` bytes (header included) once it is complete: doubling what
/// arrived, by at least [`FRAME_GROW_STEP`], never past `total`. Doubling
/// keeps the copying linear while capacity stays below twice what arrived
/// plus one step.
///
/// ```
/// use zeo_protocol::frame::{frame_growth_target, FRAME_GROW_STEP};
///
/// assert_eq!(frame_growth_target(4, 64 << 20), 4 + FRAME_GROW_STEP);
/// assert_eq!(frame_growth_target(1 << 20, 64 << 20), 2 << 20);
/// assert_eq!(frame_growth_target(60 << 20, 64 << 20), 64 << 20);
/// ```
pub fn frame_growth_target(have: usize, total: usize) -> usize {
    let needed = total.saturating_sub(have);
    have.saturating_add(needed.min(have.max(FRAME_GROW_STEP)))
}

/// Makes room in `buf`, which holds the first bytes of a frame of `total`
/// bytes (header included), for more of it: nothing while a read's worth
/// of room is left, otherwise a buffer of exactly
/// [`frame_growth_target`] bytes.
///
/// The new buffer is allocated at its exact size and the bytes copied, as
/// `BytesMut::reserve` may round a large request up to twice the current
/// capacity, past the end of the frame.
pub fn reserve_frame(buf: &mut BytesMut, total: usize) {
    let have = buf.len();
    let needed = total.saturating_sub(have);
    if buf.capacity() - have >= needed.min(FRAME_GROW_STEP) {
        return;
    }
    let mut grown = BytesMut::with_capacity(frame_growth_target(have, total));
    grown.extend_from_slice(buf);
    *buf = grown;
}

/// Prefixes `payload` with its length.
///
/// ```
/// assert_eq!(zeo_protocol::encode_frame(b"Z5").unwrap(), b"\0\0\0\x02Z5");
/// ```
///
/// # Errors
///
/// [`Error::FrameTooLarge`] when the payload does not fit a 32-bit length.
pub fn encode_frame(payload: &[u8]) -> Result<Vec<u8>> {
    let len = frame_len(payload.len())?;
    let mut out = Vec::with_capacity(HEADER_LEN + payload.len());
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(payload);
    Ok(out)
}

/// Splits the first frame off `input`: returns its payload and the bytes
/// after it.
///
/// ```
/// let (payload, rest) = zeo_protocol::decode_frame(b"\0\0\0\x02M5\0\0").unwrap();
/// assert_eq!((payload, rest), (&b"M5"[..], &b"\0\0"[..]));
/// ```
///
/// # Errors
///
/// [`Error::Truncated`] when `input` ends inside the frame.
pub fn decode_frame(input: &[u8]) -> Result<(&[u8], &[u8])> {
    let Some((header, body)) = input.split_first_chunk::<HEADER_LEN>() else {
        return Err(Error::Truncated {
            needed: HEADER_LEN as u64,
            available: input.len() as u64,
        });
    };
    let len = u32::from_be_bytes(*header) as usize;
    if body.len() < len {
        return Err(Error::Truncated {
            needed: (HEADER_LEN + len) as u64,
            available: input.len() as u64,
        });
    }
    Ok(body.split_at(len))
}

fn frame_len(len: usize) -> Result<u32> {
    u32::try_from(len).map_err(|_| Error::FrameTooLarge {
        len: len as u64,
        max: u32::MAX.into(),
    })
}

/// A [`Decoder`]/[`Encoder`] for ZEO's sized messages, for use with
/// `tokio_util::codec::Framed` or directly on a [`BytesMut`].
///
/// While a frame is incomplete the decoder grows the buffer with
/// [`reserve_frame`], never to the announced length at once.
///
/// ```
/// use bytes::BytesMut;
/// use tokio_util::codec::Decoder;
/// use zeo_protocol::FrameCodec;
///
/// let mut codec = FrameCodec::new();
/// let mut buf = BytesMut::from(&b"\0\0\0\x02Z5\0\0"[..]);
/// assert_eq!(&codec.decode(&mut buf).unwrap().unwrap()[..], b"Z5");
/// assert!(codec.decode(&mut buf).unwrap().is_none()); // waits for more
/// ```
#[derive(Clone, Copy, Debug)]
pub struct FrameCodec {
    max_frame: usize,
}

impl Default for FrameCodec {
    fn default() -> Self {
        FrameCodec {
            max_frame: DEFAULT_MAX_FRAME,
        }
    }
}

impl FrameCodec {
    /// A codec accepting payloads up to [`DEFAULT_MAX_FRAME`] bytes.
    pub fn new() -> Self {
        Self::default()
    }

    /// A codec accepting payloads up to `max_frame` bytes.
    pub fn with_max_frame(max_frame: usize) -> Self {
        FrameCodec { max_frame }
    }

    /// The largest payload this codec accepts.
    pub fn max_frame(&self) -> usize {
        self.max_frame
    }
}

impl Decoder for FrameCodec {
    type Item = BytesMut;
    type Error = Error;

    fn decode(&mut self, src: &mut BytesMut) -> Result<Option<BytesMut>> {
        let Some(header) = src.first_chunk::<HEADER_LEN>() else {
            return Ok(None);
        };
        let len = u32::from_be_bytes(*header) as usize;
        if len > self.max_frame {
            return Err(Error::FrameTooLarge {
                len: len as u64,
                max: self.max_frame as u64,
            });
        }
        let total = HEADER_LEN + len;
        if src.len() < total {
            reserve_frame(src, total);
            return Ok(None);
        }
        src.advance(HEADER_LEN);
        Ok(Some(src.split_to(len)))
    }
}

impl Encoder<&[u8]> for FrameCodec {
    type Error = Error;

    fn encode(&mut self, payload: &[u8], dst: &mut BytesMut) -> Result<()> {
        let len = frame_len(payload.len())?;
        dst.reserve(HEADER_LEN + payload.len());
        dst.put_u32(len);
        dst.extend_from_slice(payload);
        Ok(())
    }
}

impl Encoder<Vec<u8>> for FrameCodec {
    type Error = Error;

    fn encode(&mut self, payload: Vec<u8>, dst: &mut BytesMut) -> Result<()> {
        self.encode(payload.as_slice(), dst)
    }
}

impl Encoder<Bytes> for FrameCodec {
    type Error = Error;

    fn encode(&mut self, payload: Bytes, dst: &mut BytesMut) -> Result<()> {
        self.encode(&payload[..], dst)
    }
}
