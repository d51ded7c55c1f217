//! The local store's file I/O, on blocking threads: writing a request body
//! into a staged upload file at an offset, and reading a range of an
//! object for a download.
//!
//! Request bodies come in frames of a few KiB (TLS records); they are
//! gathered here into large writes. Where the file system allows it, the
//! writes and reads bypass the page cache (`O_DIRECT`): on this project's
//! reference machine copying a received body into the page cache was most
//! of the server's CPU during a large upload (`copy_folio_from_iter_atomic`,
//! 56%), and writing it there only to sync it out again at the end buys
//! nothing, since an upload is durable only once every byte is on disk. A
//! direct write goes from the gathering buffer to the disk; the sync that
//! ends the request has only the file's size and the unaligned ends left to
//! do. Reads are direct too, so that a download neither fills the page
//! cache with a file read once nor pays for allocating it.
//!
//! `O_DIRECT` wants the buffer's address, the file offset and the length
//! aligned to the device's logical block. Written bytes before the first
//! aligned offset and after the last aligned length go through the page
//! cache (mixing the two on one file is coherent: the kernel flushes and
//! invalidates cached pages in a direct transfer's range); reads start at
//! the aligned offset below the range and drop what they do not need.
//! Where `O_DIRECT` cannot be opened (tmpfs, some network file systems) or
//! a direct transfer is refused, everything goes through the page cache as
//! before, with a [`WriteBack`] thread syncing while a body still arrives.

use std::fs::File;
use std::io;
use std::os::unix::fs::{FileExt as _, OpenOptionsExt as _};
use std::path::Path;

use bytes::Bytes;

/// Bytes gathered before each write to a file.
pub(super) const WRITE_BATCH: usize = 1024 * 1024;
/// Frames queued for the writer thread.
pub(super) const WRITE_DEPTH: usize = 64;
/// Alignment of direct writes: address, offset and length (4 KiB covers
/// every logical block size in common use, 512 B included).
const ALIGN: usize = 4096;
/// Bytes written through the page cache between background `fdatasync`s
/// while a body arrives: the disk writes back while more is received, so
/// the sync that ends the request finds little left to do.
const SYNC_EVERY: u64 = 64 * 1024 * 1024;

/// Writes what arrives on `inbox` into the file at `path` from `offset`
/// on (anything after `offset` is cut first), and makes it durable.
/// Returns the bytes written.
pub(super) fn write_staged(
    path: &Path,
    offset: u64,
    mut inbox: tokio::sync::mpsc::Receiver<Bytes>,
) -> io::Result<u64> {
    let mut writer = StagedWriter::open(path, offset)?;
    let received = (|| -> io::Result<()> {
        while let Some(frame) = inbox.blocking_recv() {
            writer.push(&frame)?;
        }
        Ok(())
    })();
    // The background syncs end (and report) whatever happened, so no
    // thread outlives the request.
    let finished = writer.finish();
    received?;
    let landed = finished?;
    tracing::debug!(
        bytes = landed.bytes,
        directly = landed.directly,
        "upload body written"
    );
    Ok(landed.bytes)
}

/// What a [`StagedWriter`] wrote.
struct Landed {
    bytes: u64,
    /// Of those, bytes that went to the disk directly.
    directly: u64,
}

/// A staged file being written from `pos` on.
struct StagedWriter {
    /// Through the page cache: the unaligned ends, the fallback, the sync.
    file: File,
    /// The same file opened with `O_DIRECT`, while direct writes work.
    direct: Option<File>,
    /// Background syncs, for what goes through the page cache.
    write_back: WriteBack,
    /// File offset of `batch`'s first byte.
    pos: u64,
    batch: AlignedBuf,
    written: u64,
    /// Of those, bytes that went to the disk directly.
    written_directly: u64,
    unsynced: u64,
}

impl StagedWriter {
    fn open(path: &Path, offset: u64) -> io::Result<Self> {
        let file = std::fs::OpenOptions::new()
            .create(true)
            .write(true)
            .truncate(false)
            .open(path)?;
        file.set_len(offset)?;
        let direct = std::fs::OpenOptions::new()
            .write(true)
            .custom_flags(libc::O_DIRECT)
            .open(path)
            .ok();
        Ok(Self {
            write_back: WriteBack::start(&file)?,
            file,
            direct,
            pos: offset,
            batch: AlignedBuf::new(WRITE_BATCH),
            written: 0,
            written_directly: 0,
            unsynced: 0,
        })
    }

    /// Gathers `data`, writing out each batch as it fills.
    fn push(&mut self, mut data: &[u8]) -> io::Result<()> {
        self.written += data.len() as u64;
        while !data.is_empty() {
            let room = self.batch_limit() - self.batch.len();
            let take = room.min(data.len());
            self.batch.extend(&data[..take]);
            data = &data[take..];
            if self.batch.len() == self.batch_limit() {
                self.write_out(self.batch.len())?;
            }
        }
        Ok(())
    }

    /// How much the current batch gathers: up to the next aligned offset
    /// while `pos` is unaligned (so every later batch starts aligned), a
    /// whole batch after that.
    fn batch_limit(&self) -> usize {
        match (self.pos % ALIGN as u64) as usize {
            0 => WRITE_BATCH,
            misaligned => ALIGN - misaligned,
        }
    }

    /// Writes the batch's first `len` bytes at `pos` (directly when both
    /// are aligned) and keeps the rest for the next write.
    fn write_out(&mut self, len: usize) -> io::Result<()> {
        if len == 0 {
            return Ok(());
        }
        let bytes = &self.batch.as_slice()[..len];
        let aligned = self.pos.is_multiple_of(ALIGN as u64) && len.is_multiple_of(ALIGN);
        let direct = match &self.direct {
            Some(direct) if aligned => direct.write_all_at(bytes, self.pos).is_ok(),
            _ => false,
        };
        if direct {
            self.written_directly += len as u64;
        } else {
            // Refused (or not aligned): this and everything after it goes
            // through the page cache. A refused direct write may have
            // written part of the range; rewriting all of it is exact.
            if aligned {
                self.direct = None;
            }
            self.file.write_all_at(bytes, self.pos)?;
            self.unsynced += len as u64;
            if self.unsynced >= SYNC_EVERY {
                self.write_back.nudge();
                self.unsynced = 0;
            }
        }
        self.pos += len as u64;
        self.batch.drain_front(len);
        Ok(())
    }

    /// Writes what is left (its aligned part directly, the tail through the
    /// page cache), waits for the background syncs and syncs the file.
    fn finish(mut self) -> io::Result<Landed> {
        let rest = self.write_rest();
        let Self {
            file,
            write_back,
            written,
            written_directly,
            ..
        } = self;
        let background = write_back.finish();
        rest?;
        background?;
        file.sync_data()?;
        Ok(Landed {
            bytes: written,
            directly: written_directly,
        })
    }

    fn write_rest(&mut self) -> io::Result<()> {
        if self.pos.is_multiple_of(ALIGN as u64) {
            let left = self.batch.len();
            self.write_out(left - left % ALIGN)?;
        }
        self.write_out(self.batch.len())
    }
}

/// Bytes read from an object at a time for a download.
const READ_BLOCK: usize = 1024 * 1024;
/// Blocks read ahead of the response.
const READ_AHEAD: usize = 4;

/// Bytes `start..end` of the file at `path` (fewer if it is shorter), read
/// on a blocking thread, directly where the file system allows it. A file
/// that is not there fails here, before the stream starts.
pub(super) fn read_range(
    path: &Path,
    start: u64,
    end: u64,
) -> io::Result<super::ByteStream<'static>> {
    let file = File::open(path)?;
    let direct = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_DIRECT)
        .open(path)
        .ok();
    let (tx, rx) = tokio::sync::mpsc::channel::<io::Result<Bytes>>(READ_AHEAD);
    let mut reader = BlockReader {
        file,
        direct,
        buf: AlignedBuf::new(READ_BLOCK),
    };
    std::thread::Builder::new()
        .name("coffer-read".into())
        .spawn(move || reader.send_range(start, end, &tx))?;
    Ok(Box::pin(futures_util::stream::unfold(
        rx,
        |mut rx| async move { rx.recv().await.map(|item| (item, rx)) },
    )))
}

struct BlockReader {
    file: File,
    /// The same file opened with `O_DIRECT`, while direct reads work.
    direct: Option<File>,
    buf: AlignedBuf,
}

impl BlockReader {
    /// Sends `start..end` in blocks until the end, the file's end, an error
    /// (sent too) or a response that is gone.
    fn send_range(
        &mut self,
        start: u64,
        end: u64,
        tx: &tokio::sync::mpsc::Sender<io::Result<Bytes>>,
    ) {
        let mut pos = start - start % ALIGN as u64;
        while pos < end {
            let want = READ_BLOCK.min((end - pos).next_multiple_of(ALIGN as u64) as usize);
            let read = match self.read_block(pos, want) {
                Ok(0) => return,
                Ok(n) => n,
                Err(err) => {
                    let _ = tx.blocking_send(Err(err));
                    return;
                }
            };
            let block = self.buf.as_slice();
            let from = start.saturating_sub(pos) as usize;
            let to = read.min((end - pos) as usize);
            if from < to
                && tx
                    .blocking_send(Ok(Bytes::copy_from_slice(&block[from..to])))
                    .is_err()
            {
                return;
            }
            if read < want {
                return; // the file ends here
            }
            pos += read as u64;
        }
    }

    /// Reads up to `want` bytes at `pos` (both aligned) into the buffer;
    /// the count read, short only at the file's end.
    fn read_block(&mut self, pos: u64, want: usize) -> io::Result<usize> {
        self.buf.clear();
        let space = self.buf.space(want);
        if let Some(direct) = &self.direct {
            match read_full(direct, space, pos) {
                Ok(n) => {
                    self.buf.set_len(n);
                    return Ok(n);
                }
                // Refused: this and every later block through the cache.
                Err(_) => self.direct = None,
            }
        }
        let n = read_full(&self.file, space, pos)?;
        self.buf.set_len(n);
        Ok(n)
    }
}

/// Reads into `buf` at `pos` until it is full or the file ends.
fn read_full(file: &File, buf: &mut [u8], pos: u64) -> io::Result<usize> {
    let mut filled = 0;
    while filled < buf.len() {
        match file.read_at(&mut buf[filled..], pos + filled as u64) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(err) if err.kind() == io::ErrorKind::Interrupted => {}
            Err(err) => return Err(err),
        }
    }
    Ok(filled)
}

/// A byte buffer whose start is aligned to [`ALIGN`], as `O_DIRECT` needs.
/// Made by over-allocating a `Vec` and starting at its first aligned byte
/// (`align_offset` is safe; the `Vec` never grows, so it never moves).
struct AlignedBuf {
    storage: Vec<u8>,
    start: usize,
    len: usize,
}

impl AlignedBuf {
    fn new(capacity: usize) -> Self {
        let storage = vec![0u8; capacity + ALIGN];
        let start = storage.as_ptr().align_offset(ALIGN);
        assert!(start < ALIGN, "a byte pointer can always be aligned");
        Self {
            storage,
            start,
            len: 0,
        }
    }

    fn len(&self) -> usize {
        self.len
    }

    fn as_slice(&self) -> &[u8] {
        &self.storage[self.start..self.start + self.len]
    }

    /// Appends `data`; the caller keeps within the capacity.
    fn extend(&mut self, data: &[u8]) {
        let at = self.start + self.len;
        self.storage[at..at + data.len()].copy_from_slice(data);
        self.len += data.len();
    }

    fn clear(&mut self) {
        self.len = 0;
    }

    /// The first `n` bytes of the buffer's room, to read into (then
    /// [`AlignedBuf::set_len`]).
    fn space(&mut self, n: usize) -> &mut [u8] {
        &mut self.storage[self.start..self.start + n]
    }

    fn set_len(&mut self, n: usize) {
        assert!(self.start + n <= self.storage.len(), "within the buffer");
        self.len = n;
    }

    /// Drops the first `n` bytes, moving the rest (less than one aligned
    /// block after a direct write) to the front.
    fn drain_front(&mut self, n: usize) {
        let from = self.start + n;
        self.storage
            .copy_within(from..self.start + self.len, self.start);
        self.len -= n;
    }
}

/// A thread that `fdatasync`s a file whenever it is nudged, so that the
/// disk writes back while the writer goes on receiving (the same effect as
/// `sync_file_range`, without `unsafe`: std has no wrapper for it). Nudges
/// while a sync runs coalesce into one more.
struct WriteBack {
    nudges: std::sync::mpsc::SyncSender<()>,
    thread: std::thread::JoinHandle<io::Result<()>>,
}

impl WriteBack {
    fn start(file: &File) -> io::Result<Self> {
        let file = file.try_clone()?;
        let (nudges, pending) = std::sync::mpsc::sync_channel::<()>(1);
        let thread = std::thread::Builder::new()
            .name("coffer-writeback".into())
            .spawn(move || {
                while pending.recv().is_ok() {
                    file.sync_data()?;
                }
                Ok(())
            })?;
        Ok(Self { nudges, thread })
    }

    /// Asks for a sync; returns at once (a full queue means one is due).
    fn nudge(&self) {
        let _ = self.nudges.try_send(());
    }

    /// Waits for the syncs asked for; the first error, if any.
    fn finish(self) -> io::Result<()> {
        drop(self.nudges);
        self.thread
            .join()
            .map_err(|_| io::Error::other("the write-back thread panicked"))?
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The byte at file position `i` in these tests.
    fn pattern(i: usize) -> u8 {
        (i % 251) as u8
    }

    /// Writes `total` pattern bytes in frames of `frame` bytes after
    /// `offset` bytes already in the file; checks the file is exactly the
    /// old prefix then the new bytes; returns the bytes written directly.
    fn lands_exactly(offset: usize, total: usize, frame: usize, direct: bool) -> u64 {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("staged");
        // Junk past `offset` (an earlier, interrupted append) must go.
        let old: Vec<u8> = (0..offset + 10_000).map(pattern).collect();
        std::fs::write(&path, &old).unwrap();
        let mut writer = StagedWriter::open(&path, offset as u64).unwrap();
        if !direct {
            writer.direct = None;
        }
        let mut sent = offset;
        while sent < offset + total {
            let len = frame.min(offset + total - sent);
            let bytes: Vec<u8> = (sent..sent + len).map(|i| pattern(i) ^ 0x5a).collect();
            writer.push(&bytes).unwrap();
            sent += len;
        }
        let landed = writer.finish().unwrap();
        assert_eq!(landed.bytes, total as u64);
        let got = std::fs::read(&path).unwrap();
        assert_eq!(got.len(), offset + total, "offset {offset} total {total}");
        let expected: Vec<u8> = (0..offset + total)
            .map(|i| {
                if i < offset {
                    pattern(i)
                } else {
                    pattern(i) ^ 0x5a
                }
            })
            .collect();
        assert!(
            got == expected,
            "offset {offset} total {total} frame {frame}"
        );
        landed.directly
    }

    /// Every offset class (zero, unaligned, aligned, unaligned past a
    /// block) and length class (empty, under a block, exactly blocks, one
    /// batch and a bit, several batches) lands byte for byte, with direct
    /// writes and through the page cache alone.
    #[test]
    fn bodies_land_exactly_at_any_offset_and_length() {
        for direct in [true, false] {
            for offset in [0, 4, ALIGN, ALIGN + 5000] {
                for total in [
                    0,
                    1,
                    ALIGN - 1,
                    2 * ALIGN,
                    WRITE_BATCH + 3,
                    3 * WRITE_BATCH + 777,
                ] {
                    for frame in [16_381, WRITE_BATCH + 1] {
                        lands_exactly(offset, total, frame, direct);
                    }
                }
            }
        }
    }

    /// On a file system with `O_DIRECT` (the test's temporary directory,
    /// as on the machines this runs on), a large body is written directly
    /// but for its unaligned ends: no write was refused and fell back.
    #[test]
    fn large_bodies_are_written_directly_where_the_file_system_can() {
        let dir = tempfile::tempdir().unwrap();
        let probe = dir.path().join("probe");
        std::fs::write(&probe, b"").unwrap();
        let can = std::fs::OpenOptions::new()
            .write(true)
            .custom_flags(libc::O_DIRECT)
            .open(&probe)
            .is_ok();
        if !can {
            eprintln!("skipped: {} has no O_DIRECT", dir.path().display());
            return;
        }
        let total = 4 * WRITE_BATCH + 99;
        let direct = lands_exactly(5, total, 16_381, true);
        assert_eq!(
            direct,
            (total - (ALIGN - 5) - (total - (ALIGN - 5)) % ALIGN) as u64
        );
        assert_eq!(lands_exactly(5, total, 16_381, false), 0);
    }

    /// `read_range` of a file of `len` pattern bytes over `start..end`,
    /// with direct reads or through the page cache only.
    fn read_back(len: usize, start: u64, end: u64, direct: bool) -> Vec<u8> {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("object");
        std::fs::write(&path, (0..len).map(pattern).collect::<Vec<u8>>()).unwrap();
        let (tx, mut rx) = tokio::sync::mpsc::channel(READ_AHEAD);
        let mut reader = BlockReader {
            file: File::open(&path).unwrap(),
            direct: direct.then(|| {
                std::fs::OpenOptions::new()
                    .read(true)
                    .custom_flags(libc::O_DIRECT)
                    .open(&path)
                    .unwrap()
            }),
            buf: AlignedBuf::new(READ_BLOCK),
        };
        let sender = std::thread::spawn(move || reader.send_range(start, end, &tx));
        let mut got = Vec::new();
        while let Some(block) = rx.blocking_recv() {
            got.extend_from_slice(&block.unwrap());
        }
        sender.join().unwrap();
        got
    }

    /// Any range, aligned or not, inside the file or past its end, comes
    /// back exact, read directly and through the page cache.
    #[test]
    fn ranges_read_back_exactly() {
        let len = 3 * READ_BLOCK + 12_345;
        let file: Vec<u8> = (0..len).map(pattern).collect();
        for direct in [true, false] {
            for (start, end) in [
                (0, len),
                (0, 1),
                (5, 4096),
                (4096, 8192),
                (4095, READ_BLOCK + 1),
                (READ_BLOCK - 3, 3 * READ_BLOCK + 5),
                (len - 10, len),
                (len - 10, len + 5000),
                (len, len + 1),
                (7, 7),
            ] {
                let got = read_back(len, start as u64, end as u64, direct);
                let want = &file[start.min(len)..end.min(len)];
                assert!(
                    got == want,
                    "{start}..{end} direct {direct}: {} bytes",
                    got.len()
                );
            }
        }
    }

    #[test]
    fn a_missing_file_fails_before_the_stream() {
        let dir = tempfile::tempdir().unwrap();
        let err = read_range(&dir.path().join("gone"), 0, 10).err().unwrap();
        assert_eq!(err.kind(), io::ErrorKind::NotFound);
    }

    #[test]
    fn the_buffer_starts_aligned() {
        let mut buf = AlignedBuf::new(3 * ALIGN);
        assert_eq!(buf.as_slice().as_ptr().align_offset(ALIGN), 0);
        buf.extend(&[7; 5000]);
        buf.drain_front(ALIGN);
        assert_eq!(buf.as_slice(), &[7; 5000 - ALIGN][..]);
        assert_eq!(buf.as_slice().as_ptr().align_offset(ALIGN), 0);
    }

    /// A body past two background syncs lands whole, in order, at its
    /// offset, and the write-back thread is gone when the write returns.
    #[test]
    fn a_body_written_with_background_syncs_lands_whole() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("staged");
        std::fs::write(&path, b"keep").unwrap();
        let (tx, inbox) = tokio::sync::mpsc::channel(WRITE_DEPTH);
        let total = 2 * SYNC_EVERY as usize + 12_345;
        let writer = std::thread::spawn(move || write_staged(&path, 4, inbox));
        let mut expected = blake3::Hasher::new();
        expected.update(b"keep");
        let mut sent = 0usize;
        while sent < total {
            // Frames of odd sizes, like TLS records, with a running pattern.
            let len = (16_381).min(total - sent);
            let frame: Vec<u8> = (sent..sent + len).map(|i| (i % 251) as u8).collect();
            expected.update(&frame);
            tx.blocking_send(Bytes::from(frame)).unwrap();
            sent += len;
        }
        drop(tx);
        assert_eq!(writer.join().unwrap().unwrap(), total as u64);
        let written = std::fs::read(dir.path().join("staged")).unwrap();
        assert_eq!(written.len(), total + 4);
        assert_eq!(blake3::hash(&written), expected.finalize());
    }
}
