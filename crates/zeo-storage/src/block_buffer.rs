//! Streamed bytes gathered into aligned blocks before they are written to
//! a file: blob uploads on the server and blob downloads in the client
//! arrive in 59,000-byte chunks.
//!
//! Written as they come, such chunks cost the page cache about twice as
//! much per byte as aligned 256 KiB writes (measured on Linux 6.18/ext4:
//! 43 ms against 23 ms per 100 MB): an unaligned write cannot take large
//! folios, and every write pays its extent lookups. A [`BlockBuffer`]
//! holds less than one block and writes whole blocks at block-aligned
//! offsets (the file is written from its start), the rest at
//! [`BlockBuffer::flush`].

use std::io;

/// The size of the blocks written: 256 KiB.
pub const BLOCK: usize = 256 * 1024;

/// Bytes waiting to make up a block; the buffer is allocated with the
/// first bytes and let go by [`BlockBuffer::flush`].
///
/// ```
/// use zeo_storage::block_buffer::{BlockBuffer, BLOCK};
///
/// let mut file = Vec::new();
/// let mut buffer = BlockBuffer::default();
/// for _ in 0..5 {
///     buffer.push(&[7; 59_000], |block| Ok(file.extend_from_slice(block))).unwrap();
/// }
/// assert_eq!(file.len(), BLOCK);
/// buffer.flush(|rest| Ok(file.extend_from_slice(rest))).unwrap();
/// assert_eq!(file.len(), 5 * 59_000);
/// ```
#[derive(Debug, Default)]
pub struct BlockBuffer {
    pending: Vec<u8>,
}

impl BlockBuffer {
    /// Takes `bytes`, handing each block they complete to `write`. On an
    /// error the bytes of the failed block are gone; the caller abandons
    /// the file.
    pub fn push(
        &mut self,
        mut bytes: &[u8],
        mut write: impl FnMut(&[u8]) -> io::Result<()>,
    ) -> io::Result<()> {
        while !bytes.is_empty() {
            if self.pending.capacity() == 0 {
                self.pending.reserve_exact(BLOCK);
            }
            let take = bytes.len().min(BLOCK - self.pending.len());
            self.pending.extend_from_slice(&bytes[..take]);
            bytes = &bytes[take..];
            if self.pending.len() == BLOCK {
                let written = write(&self.pending);
                self.pending.clear();
                written?;
            }
        }
        Ok(())
    }

    /// Hands what is pending (less than a block) to `write`, and lets the
    /// buffer go.
    pub fn flush(&mut self, write: impl FnOnce(&[u8]) -> io::Result<()>) -> io::Result<()> {
        let pending = std::mem::take(&mut self.pending);
        if pending.is_empty() {
            return Ok(());
        }
        write(&pending)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blocks_are_whole_and_aligned_whatever_the_chunk_sizes() {
        let data: Vec<u8> = (0..3 * BLOCK + 12_345).map(|i| (i % 251) as u8).collect();
        for size in [1, 4096, 59_000, BLOCK - 1, BLOCK, BLOCK + 1, 5 * BLOCK] {
            let mut writes = Vec::new();
            let mut buffer = BlockBuffer::default();
            for chunk in data.chunks(size) {
                buffer
                    .push(chunk, |b| {
                        writes.push(b.to_vec());
                        Ok(())
                    })
                    .unwrap();
            }
            assert!(writes.iter().all(|w| w.len() == BLOCK), "size {size}");
            buffer
                .flush(|b| {
                    writes.push(b.to_vec());
                    Ok(())
                })
                .unwrap();
            assert!(writes.concat() == data, "size {size}");
            assert_eq!(buffer.pending.capacity(), 0);
        }
    }

    #[test]
    fn a_failed_write_is_reported() {
        let mut buffer = BlockBuffer::default();
        let err = buffer
            .push(&vec![0; BLOCK + 1], |_| Err(io::Error::other("disk full")))
            .unwrap_err();
        assert_eq!(err.to_string(), "disk full");
    }
}
