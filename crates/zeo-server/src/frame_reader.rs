//! The incoming side of a connection: sized frames read from the client,
//! without a buffer held while the connection waits.
//!
//! Most connections spend most of their life idle. A framed reader with a
//! standing 8 KiB buffer keeps all of it resident: its read position walks
//! through the whole buffer as requests come in. Here a read that starts
//! with nothing buffered lands in a buffer on the stack, and only the bytes
//! that arrived move to the heap; the heap buffer is let go as soon as its
//! last frame was taken. The rest of a frame that arrives in pieces is read
//! straight into the heap buffer, which grows with what arrives (see
//! `zeo_protocol::frame::reserve_frame`), never to the announced length at
//! once: a client that announces a large frame and stalls holds only what
//! it sent. While a client streams large frames (blob chunks) the reader
//! reads up to `zeo_protocol::frame::READ_AHEAD` past the frame it is
//! completing (`FrameCodec::with_read_ahead`), one read for several
//! chunks; a read that brings little keeps only what it brought, so a
//! client that stalls holds no more than without read-ahead.
//!
//! Frames are cut by `zeo_protocol::FrameCodec`, the one codec client and
//! server share. Once a client has authenticated (ZEO 3/4 `digest`, see
//! `docs/auth.md`) every frame must carry the MAC bit and a MAC that
//! continues the chain; a frame that does not ends the stream with an
//! error.

use std::future::Future;
use std::mem::MaybeUninit;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use bytes::BytesMut;
use futures::Stream;
use tokio::io::{AsyncRead, AsyncReadExt, ReadBuf};
use tokio_util::codec::Decoder;
use zeo_auth::MacState;
use zeo_protocol::FrameCodec;

#[cfg(test)]
use zeo_protocol::frame::READ_AHEAD;

/// Bytes read at once when nothing is buffered: a whole small request, or
/// several pipelined ones. Also the least room made for a read into the
/// heap buffer.
const STACK_READ: usize = 4096;

/// A stream of frame payloads read from `R`.
pub(crate) struct FrameReader<R> {
    inner: R,
    codec: FrameCodec,
    buf: BytesMut,
}

impl<R> FrameReader<R> {
    /// Reads frames of at most the codec's limit from `inner`.
    pub(crate) fn new(inner: R, codec: FrameCodec) -> Self {
        FrameReader {
            inner,
            codec,
            buf: BytesMut::new(),
        }
    }

    /// Requires and checks a MAC on every frame from now on. Bytes already
    /// buffered are not decoded yet, so they are checked too.
    pub(crate) fn install_mac(&mut self, mac: MacState) {
        self.codec.install_mac(mac);
    }
}

fn truncated() -> zeo_protocol::Error {
    std::io::Error::new(
        std::io::ErrorKind::UnexpectedEof,
        "connection closed inside a message",
    )
    .into()
}

impl<R> FrameReader<R> {
    /// The next frame if it is already buffered whole, without reading:
    /// `None` when it is not (then `next` reads as usual).
    pub(crate) fn buffered_frame(&mut self) -> Option<Result<BytesMut, zeo_protocol::Error>> {
        if self.buf.is_empty() {
            return None;
        }
        self.decode_buffered().transpose()
    }

    fn decode_buffered(&mut self) -> Result<Option<BytesMut>, zeo_protocol::Error> {
        let frame = self.codec.decode(&mut self.buf)?;
        if frame.is_some() && self.buf.is_empty() {
            // The frame alone keeps the allocation alive now.
            self.buf = BytesMut::new();
        }
        Ok(frame)
    }
}

impl<R: AsyncRead + Unpin> FrameReader<R> {
    /// Reads more bytes into `buf`; 0 means the client closed its side.
    fn poll_fill(&mut self, cx: &mut Context<'_>) -> Poll<std::io::Result<usize>> {
        if self.buf.is_empty() {
            if let Some(mut buf) = self.codec.read_ahead_buffer() {
                // Large frames are streaming in: the next ones are likely
                // on the socket already, so take as many as fit at once.
                // Nothing is held while the socket has nothing (the client
                // may have sent one large frame and gone idle), and a read
                // that brings little keeps only that.
                let room = buf.capacity();
                let read = ready!(std::pin::pin!(self.inner.read_buf(&mut buf)).poll(cx));
                let n = buf.len();
                self.codec.after_read(&mut buf, room, n);
                self.buf = buf;
                return Poll::Ready(read);
            }
            let mut stack = [MaybeUninit::<u8>::uninit(); STACK_READ];
            let mut read = ReadBuf::uninit(&mut stack);
            ready!(Pin::new(&mut self.inner).poll_read(cx, &mut read))?;
            let n = read.filled().len();
            self.buf = BytesMut::from(read.filled());
            self.codec.after_read(&mut self.buf, STACK_READ, n);
            return Poll::Ready(Ok(n));
        }
        // `decode` made room for the rest of a frame it saw the length of;
        // this only covers a partial length word.
        if self.buf.capacity() == self.buf.len() {
            self.buf.reserve(STACK_READ);
        }
        // Reads into the spare capacity; dropping it after `Pending` loses
        // nothing.
        let room = self.buf.capacity() - self.buf.len();
        let read = ready!(std::pin::pin!(self.inner.read_buf(&mut self.buf)).poll(cx));
        if let Ok(n) = read {
            self.codec.after_read(&mut self.buf, room, n);
        }
        Poll::Ready(read)
    }
}

impl<R: AsyncRead + Unpin> Stream for FrameReader<R> {
    type Item = Result<BytesMut, zeo_protocol::Error>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.get_mut();
        loop {
            match this.decode_buffered() {
                Ok(Some(frame)) => return Poll::Ready(Some(Ok(frame))),
                Ok(None) => {}
                Err(err) => return Poll::Ready(Some(Err(err))),
            }
            let had = this.buf.len();
            match ready!(this.poll_fill(cx)) {
                Ok(0) if had == 0 => return Poll::Ready(None),
                Ok(0) => {
                    this.buf = BytesMut::new();
                    return Poll::Ready(Some(Err(truncated())));
                }
                Ok(_) => {}
                Err(err) => return Poll::Ready(Some(Err(err.into()))),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::StreamExt;
    use tokio::io::AsyncWriteExt;

    fn frame(payload: &[u8]) -> Vec<u8> {
        zeo_protocol::encode_frame(payload).unwrap()
    }

    #[tokio::test]
    async fn frames_split_anywhere_come_out_whole() {
        let big = vec![7u8; 200_000];
        let mut wire = Vec::new();
        for payload in [&b"a"[..], b"", &big, b"tail"] {
            wire.extend(frame(payload));
        }
        let (mut client, server) = tokio::io::duplex(1 << 20);
        let mut reader = FrameReader::new(server, FrameCodec::new());
        let writer = tokio::spawn(async move {
            // Odd piece sizes put boundaries inside headers and payloads.
            for piece in wire.chunks(3001) {
                client.write_all(piece).await.unwrap();
                tokio::task::yield_now().await;
            }
        });
        let mut got = Vec::new();
        while let Some(frame) = reader.next().await {
            got.push(frame.unwrap().to_vec());
        }
        writer.await.unwrap();
        assert_eq!(got, vec![b"a".to_vec(), Vec::new(), big, b"tail".to_vec()]);
        assert_eq!(reader.buf.capacity(), 0);
    }

    #[tokio::test]
    async fn buffered_frames_come_without_a_read_and_a_partial_one_waits() {
        let mut wire = Vec::new();
        for payload in [&b"one"[..], b"two", b"three"] {
            wire.extend(frame(payload));
        }
        let partial = frame(b"four");
        wire.extend_from_slice(&partial[..5]);
        let (mut client, server) = tokio::io::duplex(1 << 16);
        let mut reader = FrameReader::new(server, FrameCodec::new());
        assert!(reader.buffered_frame().is_none());
        client.write_all(&wire).await.unwrap();
        assert_eq!(&reader.next().await.unwrap().unwrap()[..], b"one");
        assert_eq!(&reader.buffered_frame().unwrap().unwrap()[..], b"two");
        assert_eq!(&reader.buffered_frame().unwrap().unwrap()[..], b"three");
        assert!(reader.buffered_frame().is_none());
        client.write_all(&partial[5..]).await.unwrap();
        assert_eq!(&reader.next().await.unwrap().unwrap()[..], b"four");
        assert!(reader.buffered_frame().is_none());
        assert_eq!(reader.buf.capacity(), 0);
    }

    #[tokio::test]
    async fn after_install_mac_frames_are_checked_wherever_they_split() {
        let key = zeo_auth::SessionKey::derive(&"b".repeat(40), "n").unwrap();
        let mut sealer = MacState::new(&key);
        let big = vec![3u8; 70_000];
        let mut wire = frame(b"plain");
        for payload in [&b"one"[..], &big, b"two"] {
            wire.extend(sealer.seal(payload).unwrap());
        }
        // Sent at once, so the sealed frames are buffered before the switch.
        let (mut client, server) = tokio::io::duplex(1 << 20);
        let mut reader = FrameReader::new(server, FrameCodec::new());
        for piece in wire.chunks(1001) {
            client.write_all(piece).await.unwrap();
        }
        assert_eq!(&reader.next().await.unwrap().unwrap()[..], b"plain");
        reader.install_mac(MacState::new(&key));
        assert_eq!(&reader.next().await.unwrap().unwrap()[..], b"one");
        assert_eq!(&reader.next().await.unwrap().unwrap()[..], &big[..]);
        assert_eq!(&reader.next().await.unwrap().unwrap()[..], b"two");
        // A plain frame now is refused, and so is a sealed one after it.
        client.write_all(&frame(b"unsealed")).await.unwrap();
        assert!(reader.next().await.unwrap().is_err());
    }

    #[tokio::test]
    async fn a_flipped_bit_fails_the_mac() {
        let key = zeo_auth::SessionKey::derive(&"c".repeat(40), "n").unwrap();
        let mut wire = MacState::new(&key).seal(b"payload").unwrap();
        let last = wire.len() - 1;
        wire[last] ^= 1;
        let (mut client, server) = tokio::io::duplex(1024);
        let mut reader = FrameReader::new(server, FrameCodec::new());
        reader.install_mac(MacState::new(&key));
        client.write_all(&wire).await.unwrap();
        let err = reader.next().await.unwrap().unwrap_err();
        assert!(err.to_string().contains("MAC failed"), "{err}");
    }

    #[tokio::test]
    async fn an_idle_reader_holds_no_buffer() {
        let (mut client, server) = tokio::io::duplex(1024);
        let mut reader = FrameReader::new(server, FrameCodec::new());
        client.write_all(&frame(b"one")).await.unwrap();
        assert_eq!(&reader.next().await.unwrap().unwrap()[..], b"one");
        assert_eq!(reader.buf.capacity(), 0);
        let pending = futures::poll!(reader.next());
        assert!(pending.is_pending());
        assert_eq!(reader.buf.capacity(), 0);
    }

    /// Counts the reads that returned bytes.
    struct CountingReads<R> {
        inner: R,
        reads: usize,
    }

    impl<R: AsyncRead + Unpin> AsyncRead for CountingReads<R> {
        fn poll_read(
            mut self: Pin<&mut Self>,
            cx: &mut Context<'_>,
            buf: &mut ReadBuf<'_>,
        ) -> Poll<std::io::Result<()>> {
            let before = buf.filled().len();
            let polled = Pin::new(&mut self.inner).poll_read(cx, buf);
            if matches!(polled, Poll::Ready(Ok(()))) && buf.filled().len() > before {
                self.reads += 1;
            }
            polled
        }
    }

    #[tokio::test]
    async fn streamed_large_frames_are_read_several_at_once() {
        let chunk = vec![9u8; 59_000];
        let mut wire = frame(b"start");
        for _ in 0..20 {
            wire.extend(frame(&chunk));
        }
        wire.extend(frame(b"end"));
        let (mut client, server) = tokio::io::duplex(4 << 20);
        client.write_all(&wire).await.unwrap();
        let counted = CountingReads {
            inner: server,
            reads: 0,
        };
        let codec = FrameCodec::new().with_read_ahead(READ_AHEAD);
        let mut reader = FrameReader::new(counted, codec);
        assert_eq!(&reader.next().await.unwrap().unwrap()[..], b"start");
        for _ in 0..20 {
            assert_eq!(reader.next().await.unwrap().unwrap()[..], chunk[..]);
        }
        assert_eq!(&reader.next().await.unwrap().unwrap()[..], b"end");
        // 1.2 MB: about five read-ahead windows, where frame by frame
        // took two reads per chunk.
        let reads = reader.inner.reads;
        assert!(reads <= 8, "{reads} reads for 20 chunks");
        // Idle after the stream: nothing held.
        assert!(futures::poll!(reader.next()).is_pending());
        assert_eq!(reader.buf.capacity(), 0);
    }

    /// A reader with read-ahead that took a large frame, then `first` of
    /// the next frame `next`, and now waits: the bytes it holds, and the
    /// reader and client to go on with.
    async fn stalled_after_a_large_frame(
        next: &[u8],
        first: usize,
    ) -> (
        usize,
        FrameReader<tokio::io::DuplexStream>,
        tokio::io::DuplexStream,
    ) {
        let (mut client, server) = tokio::io::duplex(1 << 20);
        let codec = FrameCodec::with_max_frame(256 << 20).with_read_ahead(READ_AHEAD);
        let mut reader = FrameReader::new(server, codec);
        client.write_all(&frame(&[1u8; 40_000])).await.unwrap();
        assert_eq!(reader.next().await.unwrap().unwrap().len(), 40_000);
        client.write_all(&next[..first]).await.unwrap();
        assert!(futures::poll!(reader.next()).is_pending());
        (reader.buf.capacity(), reader, client)
    }

    /// Read-ahead adds nothing to what a client that stalls holds: after
    /// a large frame, the first bytes of a huge one cost what they are
    /// plus one growth step, as they do without it.
    #[tokio::test]
    async fn a_stall_after_a_large_frame_holds_only_what_arrived() {
        use zeo_protocol::frame::FRAME_GROW_STEP;
        let huge = frame(&vec![0u8; 64 << 20]);
        let (cap, _, _) = stalled_after_a_large_frame(&huge, 10).await;
        assert!(
            cap <= 10 + FRAME_GROW_STEP,
            "{cap} bytes held for 10 arrived"
        );
    }

    /// Nor does a stall inside a frame that read-ahead would make room
    /// past: only the frame itself is reserved for.
    #[tokio::test]
    async fn a_stall_inside_a_chunk_sized_frame_gets_no_read_ahead_room() {
        use zeo_protocol::frame::FRAME_GROW_STEP;
        let chunk = frame(&[2u8; 59_000]);
        let (cap, mut reader, mut client) = stalled_after_a_large_frame(&chunk, 10).await;
        assert!(
            cap <= 10 + FRAME_GROW_STEP,
            "{cap} bytes held for 10 arrived"
        );
        client.write_all(&chunk[10..]).await.unwrap();
        assert_eq!(reader.next().await.unwrap().unwrap().len(), 59_000);
    }

    #[tokio::test]
    async fn a_reader_idle_after_a_large_frame_holds_nothing() {
        let (mut client, server) = tokio::io::duplex(1 << 20);
        let mut reader = FrameReader::new(server, FrameCodec::new().with_read_ahead(READ_AHEAD));
        client.write_all(&frame(&[1u8; 40_000])).await.unwrap();
        assert_eq!(reader.next().await.unwrap().unwrap().len(), 40_000);
        // Reading ahead now, but the client sends nothing more.
        assert!(futures::poll!(reader.next()).is_pending());
        assert_eq!(reader.buf.capacity(), 0);
        client.write_all(&frame(b"later")).await.unwrap();
        assert_eq!(&reader.next().await.unwrap().unwrap()[..], b"later");
    }

    #[tokio::test]
    async fn a_close_inside_a_frame_is_an_error() {
        let (mut client, server) = tokio::io::duplex(1024);
        let mut reader = FrameReader::new(server, FrameCodec::new());
        client.write_all(&frame(b"whole")).await.unwrap();
        client.write_all(&frame(b"cut short")[..6]).await.unwrap();
        drop(client);
        assert_eq!(&reader.next().await.unwrap().unwrap()[..], b"whole");
        assert!(reader.next().await.unwrap().is_err());
    }

    #[tokio::test]
    async fn an_oversized_frame_is_refused_before_buffering() {
        let (mut client, server) = tokio::io::duplex(1024);
        let mut reader = FrameReader::new(server, FrameCodec::with_max_frame(10));
        client.write_all(&frame(&[0u8; 11])).await.unwrap();
        let err = reader.next().await.unwrap().unwrap_err();
        assert!(
            matches!(err, zeo_protocol::Error::FrameTooLarge { .. }),
            "{err}"
        );
        assert!(reader.buf.capacity() < 1024);
    }

    /// A client announcing a frame far larger than what it sends holds
    /// only what arrived plus one growth step, sealed or not.
    #[tokio::test]
    async fn an_announced_length_reserves_only_what_arrives() {
        use zeo_protocol::frame::FRAME_GROW_STEP;
        let key = zeo_auth::SessionKey::derive(&"d".repeat(40), "n").unwrap();
        for sealed in [false, true] {
            let claimed = 64usize << 20;
            let payload: Vec<u8> = (0..claimed).map(|i| i as u8).collect();
            let wire = if sealed {
                MacState::new(&key).seal(&payload).unwrap()
            } else {
                frame(&payload)
            };
            let (mut client, server) = tokio::io::duplex(1 << 20);
            let mut reader = FrameReader::new(server, FrameCodec::with_max_frame(256 << 20));
            if sealed {
                reader.install_mac(MacState::new(&key));
            }
            client.write_all(&wire[..10]).await.unwrap();
            assert!(futures::poll!(reader.next()).is_pending());
            let cap = reader.buf.capacity();
            assert!(cap <= 10 + FRAME_GROW_STEP, "{cap} bytes for 10 arrived");
            // Growth follows what arrives: never more than twice that plus
            // a step.
            let mut sent = 10;
            for upto in [100_000, 1 << 20, 5 << 20, 20 << 20] {
                let mut piece = &wire[sent..upto];
                while !piece.is_empty() {
                    let n = piece.len().min(1 << 19);
                    client.write_all(&piece[..n]).await.unwrap();
                    piece = &piece[n..];
                    assert!(futures::poll!(reader.next()).is_pending());
                }
                sent = upto;
                let cap = reader.buf.capacity();
                assert!(
                    cap <= 2 * sent + FRAME_GROW_STEP,
                    "{cap} bytes for {sent} arrived"
                );
            }
            let writer = tokio::spawn(async move {
                client.write_all(&wire[sent..]).await.unwrap();
                client
            });
            let got = reader.next().await.unwrap().unwrap();
            assert_eq!(got.len(), claimed);
            assert!(got[..] == payload[..]);
            drop(writer.await.unwrap());
        }
    }
}
