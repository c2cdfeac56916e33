//! `Data.fs.pack` as it is written: appends go through a buffer, and what
//! is written can be patched and read back.

use std::fs::{File, OpenOptions};
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};

use crate::filestorage::fault::Io;
use crate::filestorage::format::{Reader, MAGIC};

/// Output bytes buffered before a write.
const OUT_BUFFER: usize = 1 << 20;

/// `Data.fs.pack` being written: appends go through a buffer.
pub(super) struct Output {
    pub io: Io,
    pub file: File,
    pub path: PathBuf,
    /// Bytes already in the file.
    flushed: u64,
    buf: Vec<u8>,
}

impl Output {
    pub(super) fn create(path: &Path, io: Io) -> Result<Self> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(path)
            .map_err(|e| Error::io(format!("creating {}", path.display()), e))?;
        let mut out = Output {
            io,
            file,
            path: path.to_path_buf(),
            flushed: 0,
            buf: Vec::with_capacity(OUT_BUFFER),
        };
        out.write(MAGIC)?;
        Ok(out)
    }

    pub(super) fn pos(&self) -> u64 {
        self.flushed + self.buf.len() as u64
    }

    fn io_error(&self, e: std::io::Error) -> Error {
        Error::io(format!("writing {}", self.path.display()), e)
    }

    pub(super) fn write(&mut self, bytes: &[u8]) -> Result<()> {
        if self.buf.len() + bytes.len() > OUT_BUFFER {
            self.flush()?;
        }
        if bytes.len() > OUT_BUFFER {
            self.io
                .write_all_at(&self.file, bytes, self.flushed)
                .map_err(|e| self.io_error(e))?;
            self.flushed += bytes.len() as u64;
        } else {
            self.buf.extend_from_slice(bytes);
        }
        Ok(())
    }

    pub(super) fn flush(&mut self) -> Result<()> {
        if !self.buf.is_empty() {
            self.io
                .write_all_at(&self.file, &self.buf, self.flushed)
                .map_err(|e| self.io_error(e))?;
            self.flushed += self.buf.len() as u64;
            self.buf.clear();
        }
        Ok(())
    }

    /// Overwrites the 8 bytes at `at` (already written) with `value`.
    pub(super) fn patch_u64(&mut self, at: u64, value: u64) -> Result<()> {
        let bytes = value.to_be_bytes();
        if at >= self.flushed {
            let off = (at - self.flushed) as usize;
            match self.buf.get_mut(off..off + 8) {
                Some(slot) => slot.copy_from_slice(&bytes),
                None => {
                    return Err(Error::Storage(format!(
                        "pack: patching {} beyond its end",
                        self.path.display()
                    )))
                }
            }
            Ok(())
        } else if at + 8 <= self.flushed {
            self.io
                .write_all_at(&self.file, &bytes, at)
                .map_err(|e| self.io_error(e))
        } else {
            self.flush()?;
            self.io
                .write_all_at(&self.file, &bytes, at)
                .map_err(|e| self.io_error(e))
        }
    }

    /// A reader of everything written so far (flushes first).
    pub(super) fn reader(&mut self) -> Result<Reader<'_>> {
        self.flush()?;
        Ok(Reader::new(&self.file, &self.path, self.flushed))
    }
}
