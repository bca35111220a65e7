//! The received archive on disk, readable while it is still arriving.
//!
//! A request spools its archive to a file in its `WorkDir` (memory stays bounded whatever the
//! archive's size). Extraction used to start only once the whole stream had arrived and
//! verified; on a monorepo that is a second wait as long as the first. A [`SpoolReader`] reads
//! the file as it grows instead, so the tree can be extracted *while* the stream arrives, into
//! a directory nobody else sees. The tree is used, or shared, only after the stream has
//! verified (see `trees::Staged`); a stream that is cut, too large or fails its checksum ends
//! the reader with an error, and the half-made tree is removed.
//!
//! The writer is async (the request's task), the reader blocking (the extraction's thread): a
//! `Mutex` + `Condvar` pair says how many bytes are in the file and whether more will come.

use std::fs::File;
use std::io::{self, Read};
use std::path::Path;
use std::sync::{Arc, Condvar, Mutex};

use tokio::io::AsyncWriteExt;

/// Bytes gathered before a write: each write of a `tokio::fs::File` is a trip to a blocking
/// thread, and each one also wakes the reader.
const SPOOL_BUFFER: usize = 256 << 10;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum End {
    /// More bytes may come.
    Open,
    /// Every byte of the stream is in the file.
    Complete,
    /// The writer stopped early (a cut stream, the size cap, a write error).
    Abandoned,
    /// The reader's result is no longer wanted.
    Cancelled,
}

#[derive(Debug)]
struct State {
    written: u64,
    end: End,
}

/// What the writer has put in the file so far, shared with the reader.
#[derive(Debug)]
pub(crate) struct Progress {
    state: Mutex<State>,
    changed: Condvar,
}

impl Progress {
    fn new() -> Arc<Self> {
        Arc::new(Self {
            state: Mutex::new(State {
                written: 0,
                end: End::Open,
            }),
            changed: Condvar::new(),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn update(&self, f: impl FnOnce(&mut State)) {
        f(&mut self.lock());
        self.changed.notify_all();
    }

    fn end(&self, end: End) {
        self.update(|s| {
            if s.end == End::Open {
                s.end = end;
            }
        });
    }

    /// Makes the reader fail at its next read (its result is not wanted any more).
    pub(crate) fn cancel(&self) {
        self.update(|s| {
            if s.end != End::Abandoned {
                s.end = End::Cancelled;
            }
        });
    }

    /// Blocks until bytes beyond `pos` are in the file (how many), or the file has ended at
    /// `pos` (0), or it never will be complete (an error).
    fn wait_beyond(&self, pos: u64) -> io::Result<u64> {
        let mut state = self.lock();
        loop {
            match state.end {
                End::Cancelled => return Err(io::Error::other("extraction no longer wanted")),
                End::Abandoned => {
                    return Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        "the stream ended before the archive did",
                    ));
                }
                End::Open | End::Complete if state.written > pos => {
                    return Ok(state.written - pos);
                }
                End::Complete => return Ok(0),
                End::Open => {
                    state = self.changed.wait(state).unwrap_or_else(|p| p.into_inner());
                }
            }
        }
    }
}

/// Writes the archive as it arrives; each buffered block becomes visible to the reader once it
/// is in the file. Dropped before [`SpoolWriter::finish`], the spool is abandoned.
#[derive(Debug)]
pub(crate) struct SpoolWriter {
    file: tokio::fs::File,
    buf: Vec<u8>,
    progress: Arc<Progress>,
}

impl SpoolWriter {
    /// Creates the spool file at `path`.
    pub(crate) async fn create(path: &Path) -> io::Result<Self> {
        Ok(Self {
            file: tokio::fs::File::create(path).await?,
            buf: Vec::with_capacity(SPOOL_BUFFER),
            progress: Progress::new(),
        })
    }

    /// A reader of the file as it grows (`path` is the writer's). Blocking.
    pub(crate) fn reader(&self, path: &Path) -> io::Result<SpoolReader> {
        Ok(SpoolReader {
            file: File::open(path)?,
            pos: 0,
            progress: self.progress.clone(),
        })
    }

    /// Appends `chunk`, writing a block when the buffer is full.
    pub(crate) async fn write(&mut self, chunk: &[u8]) -> io::Result<()> {
        self.buf.extend_from_slice(chunk);
        if self.buf.len() >= SPOOL_BUFFER {
            self.write_block().await?;
        }
        Ok(())
    }

    async fn write_block(&mut self) -> io::Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        self.file.write_all(&self.buf).await?;
        // Only a flushed tokio file has handed its bytes to the kernel.
        self.file.flush().await?;
        let n = self.buf.len() as u64;
        self.buf.clear();
        self.progress.update(|s| s.written += n);
        Ok(())
    }

    /// Writes what is buffered and tells the reader the file is complete.
    pub(crate) async fn finish(mut self) -> io::Result<()> {
        self.write_block().await?;
        self.progress.end(End::Complete);
        Ok(())
    }
}

impl Drop for SpoolWriter {
    fn drop(&mut self) {
        // A no-op after `finish`.
        self.progress.end(End::Abandoned);
    }
}

/// Reads the spool file as the writer fills it: blocks for more, ends where the complete
/// archive ends, and fails when the writer abandoned it or the result was cancelled.
#[derive(Debug)]
pub(crate) struct SpoolReader {
    file: File,
    pos: u64,
    progress: Arc<Progress>,
}

impl SpoolReader {
    /// What cancels this reader ([`Progress::cancel`]).
    pub(crate) fn progress(&self) -> Arc<Progress> {
        self.progress.clone()
    }
}

impl Read for SpoolReader {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        if out.is_empty() {
            return Ok(0);
        }
        let available = self.progress.wait_beyond(self.pos)?;
        if available == 0 {
            return Ok(0);
        }
        let want = usize::try_from(available).map_or(out.len(), |a| a.min(out.len()));
        let n = self.file.read(&mut out[..want])?;
        if n == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "the spool file is shorter than written",
            ));
        }
        self.pos += n as u64;
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A spool at `path` and a blocking task reading all of it as it grows.
    async fn spool_and_reader(
        path: &Path,
    ) -> (
        SpoolWriter,
        Arc<Progress>,
        tokio::task::JoinHandle<io::Result<Vec<u8>>>,
    ) {
        let w = SpoolWriter::create(path).await.expect("create");
        let mut reader = w.reader(path).expect("reader");
        let progress = reader.progress();
        let task = tokio::task::spawn_blocking(move || {
            let mut out = Vec::new();
            reader.read_to_end(&mut out)?;
            Ok(out)
        });
        (w, progress, task)
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_reader_follows_the_writer_to_the_end() {
        let dir = tempfile::tempdir().expect("tmp");
        let (mut w, _, task) = spool_and_reader(&dir.path().join("a")).await;
        let mut want = Vec::new();
        for i in 0..700u32 {
            let chunk = vec![(i % 251) as u8; 1024 + (i as usize % 7)];
            want.extend_from_slice(&chunk);
            w.write(&chunk).await.expect("write");
            if i % 97 == 0 {
                tokio::task::yield_now().await;
            }
        }
        w.finish().await.expect("finish");
        let got = task.await.expect("join").expect("read");
        assert_eq!(got.len(), want.len());
        assert!(got == want);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn an_abandoned_or_cancelled_spool_is_an_error_never_a_short_read() {
        let dir = tempfile::tempdir().expect("tmp");
        let (mut w, _, task) = spool_and_reader(&dir.path().join("a")).await;
        w.write(&vec![1u8; SPOOL_BUFFER + 10]).await.expect("write");
        drop(w);
        let err = task.await.expect("join").expect_err("abandoned");
        assert_eq!(err.kind(), io::ErrorKind::UnexpectedEof);

        let path = dir.path().join("b");
        let (w, progress, task) = spool_and_reader(&path).await;
        progress.cancel();
        assert!(task.await.expect("join").is_err());
        // A cancelled reader stays cancelled when the writer finishes after all.
        w.finish().await.expect("finish");
        let mut r = SpoolReader {
            file: File::open(&path).expect("open"),
            pos: 0,
            progress,
        };
        assert!(r.read(&mut [0u8; 8]).is_err());
    }
}
