//! Writeback of blob uploads, started ahead of the vote and off the
//! uploading connection's thread.
//!
//! The vote syncs every uploaded file before the records naming it are
//! written. Left to that fsync, a 100 MB upload waits for all of it to
//! reach the disk (about 45 ms here); asking the kernel to start writing
//! each [`WINDOW`] as it completes (`sync_file_range(SYNC_FILE_RANGE_WRITE)`)
//! leaves the fsync the tail only (about 6 ms with 8 MiB windows, under
//! 1 ms per fsync traced with these). Starting the writeback is not free
//! either: the call allocates blocks and submits the I/O, about 1 ms per
//! 8 MiB, and on the connection's thread the client would wait for it
//! between chunks. One thread per process makes the calls instead.
//!
//! The requests are hints. The queue is bounded; a request that finds it
//! full is dropped, and the vote's fsync writes what it would have
//! started. Each request holds its own descriptor (a `dup` of the
//! upload's), so the upload may be closed, renamed or removed meanwhile.

use std::fs::File;

/// How much of an upload is written before the kernel is asked to start
/// writing it to disk.
pub(super) const WINDOW: u64 = 2 << 20;

/// Requests waiting for the thread: 64 windows, 128 MiB of uploads.
#[cfg(target_os = "linux")]
const QUEUE: usize = 64;

/// Starts writing back the window of `file` that the last `written` bytes
/// completed, if they completed one. Returns at once.
pub(super) fn after_append(file: &File, written: u64) {
    #[cfg(target_os = "linux")]
    {
        use std::io::Seek;
        let Ok(end) = (&*file).stream_position() else {
            return;
        };
        let Some(offset) = completed_window(end, written) else {
            return;
        };
        let Ok(dup) = file.try_clone() else {
            return;
        };
        let request = Request { file: dup, offset };
        match thread() {
            // Full or gone: the fsync will do it.
            Some(queue) => drop(queue.try_send(request)),
            None => request.start(),
        }
    }
    #[cfg(not(target_os = "linux"))]
    let _ = (file, written);
}

/// The start of the window that growing a file to `end` by its last
/// `written` bytes completed, if it completed one.
fn completed_window(end: u64, written: u64) -> Option<u64> {
    let start = end.saturating_sub(written);
    if end / WINDOW == start / WINDOW {
        return None;
    }
    Some((end / WINDOW - 1) * WINDOW)
}

#[cfg(target_os = "linux")]
struct Request {
    file: File,
    offset: u64,
}

#[cfg(target_os = "linux")]
impl Request {
    fn start(self) {
        use std::os::fd::AsRawFd;
        // SAFETY: a plain system call on a descriptor `self.file` keeps
        // open for its duration.
        unsafe {
            libc::sync_file_range(
                self.file.as_raw_fd(),
                self.offset as libc::off64_t,
                WINDOW as libc::off64_t,
                libc::SYNC_FILE_RANGE_WRITE,
            );
        }
    }
}

/// The writeback thread's queue, the thread started on first use; `None`
/// when it could not be started (the caller then makes the call itself).
#[cfg(target_os = "linux")]
fn thread() -> Option<&'static std::sync::mpsc::SyncSender<Request>> {
    use std::sync::OnceLock;
    static QUEUE_TX: OnceLock<Option<std::sync::mpsc::SyncSender<Request>>> = OnceLock::new();
    QUEUE_TX
        .get_or_init(|| {
            let (tx, rx) = std::sync::mpsc::sync_channel::<Request>(QUEUE);
            std::thread::Builder::new()
                .name("blob-writeback".into())
                .spawn(move || rx.into_iter().for_each(Request::start))
                .ok()
                .map(|_| tx)
        })
        .as_ref()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_window_is_started_once_when_an_append_completes_it() {
        assert_eq!(completed_window(59_000, 59_000), None);
        assert_eq!(completed_window(WINDOW, 59_000), Some(0));
        assert_eq!(completed_window(WINDOW + 10, 59_000), Some(0));
        assert_eq!(completed_window(WINDOW + 59_000 + 10, 59_000), None);
        assert_eq!(
            completed_window(3 * WINDOW + 1, 2 * WINDOW),
            Some(2 * WINDOW)
        );
    }

    #[test]
    fn appends_with_writeback_keep_the_bytes() {
        use std::io::{Read, Seek, Write};
        let mut file = tempfile::tempfile().unwrap();
        let chunk = vec![5u8; 1 << 20];
        for _ in 0..(WINDOW >> 20) * 2 + 1 {
            file.write_all(&chunk).unwrap();
            after_append(&file, chunk.len() as u64);
        }
        file.sync_all().unwrap();
        file.rewind().unwrap();
        let mut back = Vec::new();
        file.read_to_end(&mut back).unwrap();
        assert_eq!(back.len() as u64, 2 * WINDOW + (1 << 20));
        assert!(back.iter().all(|b| *b == 5));
    }
}
