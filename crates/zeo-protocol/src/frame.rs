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
//!
//! After a ZEO 3/4 `digest` login (`docs/auth.md`) every frame in either
//! direction carries the MAC bit in its length word and a 20-byte MAC
//! before its payload. [`FrameCodec`] is the one decoder and encoder of
//! both forms: server and client readers feed it the bytes that arrived,
//! writers take their headers from it ([`FrameCodec::header`]), and
//! [`FrameCodec::install_mac`] switches one direction to sealed frames.

use bytes::{Buf, BufMut, Bytes, BytesMut};
use tokio_util::codec::{Decoder, Encoder};
use zeo_auth::{MacState, MAC_LEN};

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
    reserve_frame_ahead(buf, total, 0);
}

/// [`reserve_frame`], with room for up to `ahead` bytes past the end of
/// the frame as well, so that one read can take the rest of this frame and
/// the start of the next ones. A reader streaming large frames (a blob
/// upload's chunks) then makes one read per `ahead` bytes rather than one
/// or two per frame. The room is made when less than a quarter of `ahead`
/// is left past the frame's end. [`FrameCodec`] asks for it only while the
/// peer has more bytes waiting ([`FrameCodec::after_read`]), so a
/// peer that sends a few bytes and stalls is given no such room.
///
/// ```
/// use bytes::BytesMut;
/// use zeo_protocol::frame::reserve_frame_ahead;
///
/// let mut buf = BytesMut::from(&[0u8; 10][..]);
/// reserve_frame_ahead(&mut buf, 59_004, 256 * 1024);
/// assert_eq!(buf.capacity(), 59_004 + 256 * 1024);
/// ```
pub fn reserve_frame_ahead(buf: &mut BytesMut, total: usize, ahead: usize) {
    let have = buf.len();
    let needed = total.saturating_sub(have);
    let target = frame_growth_target(have, total);
    // Past the frame's end only once the frame fits: a frame still
    // growing gets its step, as without read-ahead.
    let beyond = if target == total.max(have) { ahead } else { 0 };
    if buf.capacity() - have >= needed.min(FRAME_GROW_STEP) + beyond / 4 {
        return;
    }
    let mut grown = BytesMut::with_capacity(target.saturating_add(beyond));
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
    FrameCodec::new().encode_vec(payload)
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

/// Bytes of the longest frame header: the length word and a MAC.
pub const MAX_HEADER_LEN: usize = HEADER_LEN + MAC_LEN;

/// The header that goes before a payload on the wire: the length word,
/// followed by the MAC on a sealed connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FrameHeader {
    bytes: [u8; MAX_HEADER_LEN],
    len: usize,
}

impl FrameHeader {
    /// The header bytes.
    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes[..self.len]
    }
}

/// The header to write before `payload`, sealed with `mac` when given (which
/// advances that MAC chain): for writers that keep the MAC chain themselves
/// rather than a [`FrameCodec`].
///
/// ```
/// let header = zeo_protocol::frame::frame_header(b"Z5", None).unwrap();
/// assert_eq!(header.as_bytes(), b"\0\0\0\x02");
/// ```
///
/// # Errors
///
/// As [`FrameCodec::header`].
pub fn frame_header(payload: &[u8], mac: Option<&mut MacState>) -> Result<FrameHeader> {
    let mut header = FrameHeader {
        bytes: [0; MAX_HEADER_LEN],
        len: HEADER_LEN,
    };
    match mac {
        Some(mac) => {
            header.bytes = mac.seal_header(payload).map_err(refused)?;
            header.len = MAX_HEADER_LEN;
        }
        None => {
            let len = frame_len(payload.len())?;
            header.bytes[..HEADER_LEN].copy_from_slice(&len.to_be_bytes());
        }
    }
    Ok(header)
}

/// A MAC that is missing or does not verify: the stream is not what the
/// authenticated peer sent, so the connection cannot go on. Reported as
/// invalid data on the stream, which is what it is.
fn refused(err: zeo_auth::Error) -> Error {
    std::io::Error::new(std::io::ErrorKind::InvalidData, err).into()
}

/// ZEO's framing for one direction of a connection: a [`Decoder`] and
/// [`Encoder`] for `tokio_util::codec::Framed`, or used directly on a
/// [`BytesMut`] that a reader fills.
///
/// It holds the largest payload accepted and, once
/// [`install_mac`](FrameCodec::install_mac) was called, that direction's
/// MAC chain: from then on every frame decoded must carry a MAC that
/// continues the chain and every frame encoded is sealed. A connection
/// therefore uses two codecs, one per direction.
///
/// While a frame is incomplete the decoder grows the buffer with
/// [`reserve_frame`], never to the announced length at once; the limit is
/// checked against the announced length before anything is reserved.
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
///
/// Sealed frames, after a digest login:
///
/// ```
/// use bytes::BytesMut;
/// use tokio_util::codec::Decoder;
/// use zeo_auth::{MacState, SessionKey};
/// use zeo_protocol::FrameCodec;
///
/// let key = SessionKey::derive(&"a".repeat(40), "nonce").unwrap();
/// let (mut sender, mut receiver) = (FrameCodec::new(), FrameCodec::new());
/// sender.install_mac(MacState::new(&key));
/// receiver.install_mac(MacState::new(&key));
/// let mut wire = BytesMut::from(&sender.encode_vec(b"hello").unwrap()[..]);
/// assert_eq!(wire.len(), 4 + 20 + 5);
/// assert_eq!(&receiver.decode(&mut wire).unwrap().unwrap()[..], b"hello");
/// // An unsealed frame is refused now.
/// let mut plain = BytesMut::from(&b"\0\0\0\x02Z5"[..]);
/// assert!(receiver.decode(&mut plain).is_err());
/// ```
#[derive(Clone, Debug)]
pub struct FrameCodec {
    max_frame: usize,
    mac: Option<MacState>,
    /// Bytes to read past the end of a frame while large frames stream
    /// in ([`FrameCodec::with_read_ahead`]); 0 reads frame by frame.
    read_ahead: usize,
    /// Whether the last frame decoded was at least [`STREAMING_FRAME`].
    streaming: bool,
    /// Whether the reader's last read filled the room it had
    /// ([`FrameCodec::after_read`]).
    more_waiting: bool,
}

/// The payload size from which a peer is taken to be streaming (a blob
/// chunk is 59,000 bytes), and reads go [`FrameCodec::with_read_ahead`].
pub const STREAMING_FRAME: usize = 16 * 1024;

/// The read-ahead both ends use while large frames stream in
/// ([`FrameCodec::with_read_ahead`]): 256 KiB, as much as Python's asyncio
/// reads at once.
pub const READ_AHEAD: usize = 256 * 1024;

impl Default for FrameCodec {
    fn default() -> Self {
        Self::with_max_frame(DEFAULT_MAX_FRAME)
    }
}

impl FrameCodec {
    /// A codec accepting payloads up to [`DEFAULT_MAX_FRAME`] bytes.
    pub fn new() -> Self {
        Self::default()
    }

    /// A codec accepting payloads up to `max_frame` bytes.
    pub fn with_max_frame(max_frame: usize) -> Self {
        FrameCodec {
            max_frame,
            mac: None,
            read_ahead: 0,
            streaming: false,
            more_waiting: false,
        }
    }

    /// Reads up to `bytes` past the end of a frame once a frame of at
    /// least [`STREAMING_FRAME`] bytes came in, until a smaller one does
    /// ([`reserve_frame_ahead`]): a stream of blob chunks then costs one
    /// read per `bytes` instead of one or two per chunk. A connection
    /// holds at most `bytes` more than without it, and only while it
    /// sends large frames and has more waiting.
    ///
    /// ```
    /// use bytes::BytesMut;
    /// use tokio_util::codec::Decoder;
    /// use zeo_protocol::FrameCodec;
    ///
    /// let mut codec = FrameCodec::new().with_read_ahead(256 * 1024);
    /// assert_eq!(codec.read_ahead_now(), 0);
    /// let mut wire = BytesMut::from(&zeo_protocol::encode_frame(&[1; 20_000]).unwrap()[..]);
    /// codec.decode(&mut wire).unwrap().unwrap();
    /// assert_eq!(codec.read_ahead_now(), 256 * 1024);
    /// ```
    pub fn with_read_ahead(mut self, bytes: usize) -> Self {
        self.read_ahead = bytes;
        self
    }

    /// The buffer for a read when nothing is buffered: while large frames
    /// stream in, an empty one with room for the read-ahead; otherwise
    /// `None` (the reader reads a small piece its own way).
    pub fn read_ahead_buffer(&self) -> Option<BytesMut> {
        let ahead = self.read_ahead_now();
        (ahead > 0).then(|| BytesMut::with_capacity(ahead))
    }

    /// Records a read of `n` bytes into `buf`, which had `room` bytes of
    /// room for it. A read that filled all its room leaves the peer with
    /// more bytes waiting: only then does an unfinished frame get room to
    /// read ahead into ([`reserve_frame_ahead`]), so a peer that stalls
    /// inside a frame is given only what the frame itself needs. A
    /// [`FrameCodec::read_ahead_buffer`] that brought little keeps only
    /// what it brought, as a small read would.
    pub fn after_read(&mut self, buf: &mut BytesMut, room: usize, n: usize) {
        self.more_waiting = n == room;
        let fresh = self.read_ahead > 0 && room >= self.read_ahead && n == buf.len();
        if fresh && n < self.read_ahead / 4 {
            *buf = BytesMut::from(&buf[..]);
        }
    }

    /// The read-ahead in effect now: the configured one while large frames
    /// stream in, otherwise 0 ([`FrameCodec::read_ahead_buffer`]).
    pub fn read_ahead_now(&self) -> usize {
        if self.streaming {
            self.read_ahead
        } else {
            0
        }
    }

    /// The largest payload this codec accepts.
    pub fn max_frame(&self) -> usize {
        self.max_frame
    }

    /// Seals every frame encoded, or requires and checks a MAC on every
    /// frame decoded, from now on. Bytes already buffered but not decoded
    /// yet are checked too.
    pub fn install_mac(&mut self, mac: MacState) {
        self.mac = Some(mac);
    }

    /// Whether frames are sealed (a MAC was installed).
    pub fn is_sealed(&self) -> bool {
        self.mac.is_some()
    }

    /// The header to write before `payload`; on a sealed codec this
    /// advances the MAC chain, so headers must reach the wire in the order
    /// they were made.
    ///
    /// ```
    /// let header = zeo_protocol::FrameCodec::new().header(b"Z5").unwrap();
    /// assert_eq!(header.as_bytes(), b"\0\0\0\x02");
    /// ```
    ///
    /// # Errors
    ///
    /// [`Error::FrameTooLarge`] when the payload does not fit a length
    /// word; on a sealed codec an invalid-data [`Error::Io`] instead, and
    /// also for an empty payload (which cannot be authenticated) or after
    /// a failure.
    pub fn header(&mut self, payload: &[u8]) -> Result<FrameHeader> {
        frame_header(payload, self.mac.as_mut())
    }

    /// The whole frame for `payload`, header and payload in one buffer.
    ///
    /// # Errors
    ///
    /// As [`FrameCodec::header`].
    pub fn encode_vec(&mut self, payload: &[u8]) -> Result<Vec<u8>> {
        let header = self.header(payload)?;
        let mut out = Vec::with_capacity(header.len + payload.len());
        out.extend_from_slice(header.as_bytes());
        out.extend_from_slice(payload);
        Ok(out)
    }
}

impl Decoder for FrameCodec {
    type Item = BytesMut;
    type Error = Error;

    fn decode(&mut self, src: &mut BytesMut) -> Result<Option<BytesMut>> {
        let Some(header) = src.first_chunk::<HEADER_LEN>() else {
            return Ok(None);
        };
        let word = u32::from_be_bytes(*header);
        let (len, mac_len) = if self.mac.is_some() {
            match zeo_auth::split_length_word(word) {
                (true, len) => (len as usize, MAC_LEN),
                (false, _) => return Err(refused(zeo_auth::Error::MissingMac)),
            }
        } else {
            (word as usize, 0)
        };
        if len > self.max_frame {
            return Err(Error::FrameTooLarge {
                len: len as u64,
                max: self.max_frame as u64,
            });
        }
        let total = HEADER_LEN + mac_len + len;
        if src.len() < total {
            let ahead = if self.more_waiting {
                self.read_ahead_now()
            } else {
                0
            };
            reserve_frame_ahead(src, total, ahead);
            return Ok(None);
        }
        self.streaming = len >= STREAMING_FRAME;
        src.advance(HEADER_LEN);
        let mut body = src.split_to(mac_len + len);
        if let Some(mac) = self.mac.as_mut() {
            mac.open_body(word, &body).map_err(refused)?;
            body.advance(MAC_LEN);
        }
        Ok(Some(body))
    }
}

impl Encoder<&[u8]> for FrameCodec {
    type Error = Error;

    fn encode(&mut self, payload: &[u8], dst: &mut BytesMut) -> Result<()> {
        let header = self.header(payload)?;
        dst.reserve(header.len + payload.len());
        dst.put_slice(header.as_bytes());
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

#[cfg(test)]
mod tests {
    use super::*;
    use zeo_auth::{MacState, SessionKey};

    fn key() -> SessionKey {
        SessionKey::derive(&"f".repeat(40), "nonce").unwrap()
    }

    fn sealed_pair() -> (FrameCodec, FrameCodec) {
        let (mut sender, mut receiver) = (FrameCodec::new(), FrameCodec::with_max_frame(1024));
        sender.install_mac(MacState::new(&key()));
        receiver.install_mac(MacState::new(&key()));
        (sender, receiver)
    }

    #[test]
    fn sealed_headers_are_what_the_mac_chain_seals() {
        let mut codec = FrameCodec::new();
        codec.install_mac(MacState::new(&key()));
        let mut chain = MacState::new(&key());
        for payload in [&b"one"[..], b"two", &[7; 300]] {
            let header = codec.header(payload).unwrap();
            assert_eq!(header.as_bytes(), chain.seal_header(payload).unwrap());
        }
        // Unsealed, the header is the length word alone.
        let plain = FrameCodec::new().header(&[0; 300]).unwrap();
        assert_eq!(plain.as_bytes(), 300u32.to_be_bytes());
        // An empty payload cannot be sealed.
        assert!(codec.header(b"").is_err());
    }

    #[test]
    fn sealed_frames_split_anywhere_decode_in_order() {
        let (mut sender, mut receiver) = sealed_pair();
        let mut wire = Vec::new();
        for payload in [&b"a"[..], b"bc", &[5; 900]] {
            wire.extend(sender.encode_vec(payload).unwrap());
        }
        let mut buf = BytesMut::new();
        let mut got = Vec::new();
        for piece in wire.chunks(7) {
            buf.extend_from_slice(piece);
            while let Some(frame) = receiver.decode(&mut buf).unwrap() {
                got.push(frame.to_vec());
            }
        }
        assert_eq!(got, vec![b"a".to_vec(), b"bc".to_vec(), vec![5; 900]]);
    }

    #[test]
    fn a_sealed_frame_over_the_limit_is_refused_before_buffering() {
        let (_, mut receiver) = sealed_pair();
        let word = 1025u32 | zeo_auth::MAC_BIT;
        let mut buf = BytesMut::from(&word.to_be_bytes()[..]);
        let err = receiver.decode(&mut buf).unwrap_err();
        assert!(
            matches!(
                err,
                Error::FrameTooLarge {
                    len: 1025,
                    max: 1024
                }
            ),
            "{err}"
        );
        assert!(buf.capacity() < 64, "{}", buf.capacity());
    }

    #[test]
    fn a_replayed_or_unsealed_frame_fails_and_so_does_everything_after() {
        let (mut sender, mut receiver) = sealed_pair();
        let first = sender.encode_vec(b"first").unwrap();
        let second = sender.encode_vec(b"second").unwrap();
        let mut buf = BytesMut::from(&first[..]);
        assert_eq!(&receiver.decode(&mut buf).unwrap().unwrap()[..], b"first");
        // The same frame again does not continue the chain.
        buf.extend_from_slice(&first);
        let err = receiver.decode(&mut buf).unwrap_err();
        assert!(err.to_string().contains("MAC failed"), "{err}");
        // The failure is final, even for the frame that was due.
        let mut buf = BytesMut::from(&second[..]);
        assert!(receiver.decode(&mut buf).is_err());
        // A frame without the MAC bit is refused as such.
        let (_, mut fresh) = sealed_pair();
        let mut plain = BytesMut::from(&encode_frame(b"plain").unwrap()[..]);
        let err = fresh.decode(&mut plain).unwrap_err();
        assert!(err.to_string().contains("without MAC"), "{err}");
    }
}
