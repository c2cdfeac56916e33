//! Sized-message framing: every message in either direction is a 4-byte
//! big-endian length followed by that many payload bytes.
//!
//! ZEO itself enforces no limit; we do, so that a peer cannot make us buffer
//! up to 4 GiB. The limit is checked against the announced length before any
//! buffer space is reserved.

use bytes::{Buf, BufMut, Bytes, BytesMut};
use tokio_util::codec::{Decoder, Encoder};

use crate::error::{Error, Result};

/// Bytes in the length prefix.
pub const HEADER_LEN: usize = 4;

/// Default largest payload accepted: 64 MiB, far above ZEO's largest
/// routine messages (object records, 59000-byte blob chunks).
pub const DEFAULT_MAX_FRAME: usize = 64 * 1024 * 1024;

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
            // Safe to reserve: `len` is within the configured limit.
            src.reserve(total - src.len());
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
