//! Reading an archive while the daemon downloads it: an install unpacks and hashes the bytes
//! the daemon has verified so far instead of waiting for the whole archive.
//!
//! The daemon reports, as chunks arrive, the partial file it writes and how far from its
//! start every chunk is verified and written; a [`Reader`] reads up to there and waits for
//! more. Nothing read here is trusted for that: the install hashes the whole archive itself
//! and throws the unpacked files away unless it matches the release.

use std::fs::File;
use std::io::{self, Read};
use std::os::unix::fs::FileExt;
use std::sync::{Condvar, Mutex, MutexGuard};

/// How the download ended.
enum End {
    /// The archive, whole, at this path (the partial file renamed into the store).
    Done {
        path: String,
        size: u64,
    },
    Failed,
}

#[derive(Default)]
struct State {
    /// The partial file, once the daemon has said where it is.
    partial: Option<String>,
    /// Bytes from the start that may be read.
    readable: u64,
    end: Option<End>,
}

/// One download, shared by its readers and the thread that hears the daemon's progress.
#[derive(Default)]
pub struct Download {
    state: Mutex<State>,
    changed: Condvar,
}

impl Download {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn update(&self, f: impl FnOnce(&mut State)) {
        f(&mut self.lock());
        self.changed.notify_all();
    }

    /// The daemon has verified and written the first `readable` bytes to `partial`.
    pub fn progressed(&self, readable: u64, partial: &str) {
        self.update(|s| {
            s.readable = s.readable.max(readable);
            if s.partial.is_none() {
                s.partial = Some(partial.to_owned());
            }
        });
    }

    /// The whole archive, `size` bytes, is at `path`.
    pub fn finished(&self, path: &str, size: u64) {
        self.update(|s| {
            s.end = Some(End::Done {
                path: path.to_owned(),
                size,
            })
        });
    }

    /// The download failed: readers stop with an error.
    pub fn failed(&self) {
        self.update(|s| s.end = Some(End::Failed));
    }

    /// A reader from the archive's first byte.
    pub fn reader(&self) -> Reader<'_> {
        Reader {
            download: self,
            file: None,
            pos: 0,
        }
    }
}

/// The archive's bytes in order, each returned once the daemon has verified it.
pub struct Reader<'a> {
    download: &'a Download,
    file: Option<File>,
    pos: u64,
}

fn failed() -> io::Error {
    io::Error::other("the download failed")
}

impl Reader<'_> {
    /// Waits until bytes past the position may be read, or the archive has ended; returns
    /// how far reading may go. Opens the file on the way: the partial one while the download
    /// goes on, the finished one if the partial is gone (renamed into the store) or there
    /// never was one (the archive was in the store already).
    fn wait(&mut self) -> io::Result<u64> {
        let mut state = self.download.lock();
        loop {
            let limit = match &state.end {
                Some(End::Failed) => return Err(failed()),
                Some(End::Done { size, .. }) => Some(*size),
                None => (state.readable > self.pos).then_some(state.readable),
            };
            if self.file.is_none() {
                let path = match (&state.end, &state.partial) {
                    (Some(End::Done { path, .. }), None) => Some(path),
                    (_, partial) => partial.as_ref(),
                };
                if let Some(path) = path {
                    match File::open(path) {
                        Ok(f) => self.file = Some(f),
                        // Renamed into the store since; until the daemon says where, wait.
                        Err(e) if e.kind() == io::ErrorKind::NotFound => {
                            if let Some(End::Done { path, .. }) = &state.end {
                                self.file = Some(File::open(path)?);
                            }
                        }
                        Err(e) => return Err(e),
                    }
                }
            }
            if let (Some(limit), Some(_)) = (limit, &self.file) {
                return Ok(limit);
            }
            state = self
                .download
                .changed
                .wait(state)
                .unwrap_or_else(|e| e.into_inner());
        }
    }
}

impl Read for Reader<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
        let limit = self.wait()?;
        if self.pos >= limit {
            return Ok(0);
        }
        let want = buf.len().min((limit - self.pos) as usize);
        let file = self.file.as_ref().expect("opened by wait");
        let n = file.read_at(&mut buf[..want], self.pos)?;
        if n == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                format!("the archive ends at {} bytes of {limit}", self.pos),
            ));
        }
        self.pos += n as u64;
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_reader_follows_the_download_through_its_rename_into_the_store() {
        let dir = tempfile::tempdir().unwrap();
        let partial = dir.path().join("partial");
        let done = dir.path().join("done");
        std::fs::write(&partial, b"0123456789").unwrap();
        let partial = partial.to_str().unwrap().to_owned();
        let download = Download::default();
        std::thread::scope(|s| {
            let reading = s.spawn(|| {
                let mut all = Vec::new();
                download.reader().read_to_end(&mut all).map(|_| all)
            });
            download.progressed(4, &partial);
            download.progressed(7, &partial);
            std::fs::rename(&partial, &done).unwrap();
            download.finished(done.to_str().unwrap(), 10);
            assert_eq!(reading.join().unwrap().unwrap(), b"0123456789");
        });
    }

    #[test]
    fn a_reader_waits_for_readable_bytes_and_never_reads_past_them() {
        let dir = tempfile::tempdir().unwrap();
        let partial = dir.path().join("partial");
        // Bytes past the readable point are in the file but not verified yet.
        std::fs::write(&partial, b"abcdefgh").unwrap();
        let partial = partial.to_str().unwrap().to_owned();
        let download = Download::default();
        download.progressed(3, &partial);
        let mut r = download.reader();
        let mut buf = [0u8; 8];
        assert_eq!(r.read(&mut buf).unwrap(), 3);
        assert_eq!(&buf[..3], b"abc");
        download.failed();
        assert_eq!(
            r.read(&mut buf).unwrap_err().to_string(),
            "the download failed"
        );
    }

    #[test]
    fn an_archive_already_in_the_store_is_read_from_its_place() {
        let dir = tempfile::tempdir().unwrap();
        let done = dir.path().join("done");
        std::fs::write(&done, b"whole").unwrap();
        let download = Download::default();
        download.finished(done.to_str().unwrap(), 5);
        let mut all = Vec::new();
        download.reader().read_to_end(&mut all).unwrap();
        assert_eq!(all, b"whole");
    }

    #[test]
    fn a_file_shorter_than_the_daemon_said_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let done = dir.path().join("done");
        std::fs::write(&done, b"abc").unwrap();
        let download = Download::default();
        download.finished(done.to_str().unwrap(), 5);
        let mut all = Vec::new();
        let e = download.reader().read_to_end(&mut all).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::UnexpectedEof);
        assert_eq!(e.to_string(), "the archive ends at 3 bytes of 5");
    }
}
