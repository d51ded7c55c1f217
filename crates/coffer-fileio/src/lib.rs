//! Large sequential file writes and reads that bypass the page cache
//! (`O_DIRECT`) where the file system allows it, and use it where not.
//!
//! Why: on this project's reference machine, copying a large upload into
//! the page cache was most of the server's CPU during it
//! (`copy_folio_from_iter_atomic`, 56%), and most of a client's system time
//! during a download; and writing a file there only to sync it out at the
//! end buys nothing when the transfer counts only once every byte is on
//! disk. A direct write goes from an aligned buffer to the disk; the sync
//! that ends a transfer has only the file's size and the unaligned ends left
//! to do. A direct read neither fills the page cache with a file read once
//! nor pays for allocating it.
//!
//! `O_DIRECT` wants the buffer's address, the file offset and the length
//! aligned to the device's logical block ([`ALIGN`]). Written bytes before
//! the first aligned offset and after the last aligned length go through
//! the page cache (mixing the two on one file is coherent: the kernel
//! flushes and invalidates cached pages in a direct transfer's range);
//! reads start at the aligned offset below the range and drop what they do
//! not need. The direct descriptor is a second open of the same file,
//! through `/proc/self/fd`, so it is the very file the caller opened (and
//! checked), never whatever a path names by then. Where that open fails
//! (tmpfs, some network file systems, no `/proc`) or a direct transfer is
//! refused, everything goes through the page cache, with a background
//! thread syncing written data as it accumulates.

#![forbid(unsafe_code)]

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt as _;
use std::path::Path;

/// Alignment of direct transfers: address, offset and length (4 KiB
/// covers every logical block size in common use, 512 B included).
pub const ALIGN: usize = 4096;
/// Bytes gathered before each write.
pub const WRITE_BATCH: usize = 1024 * 1024;
/// Bytes read at a time.
pub const READ_BLOCK: usize = 1024 * 1024;
/// Bytes written through the page cache between background `fdatasync`s,
/// so the disk writes back while more arrives and the final sync is short.
pub const SYNC_EVERY: u64 = 64 * 1024 * 1024;

/// `file` opened a second time with `O_DIRECT`, or `None` where the file
/// system (or the lack of `/proc`) does not allow it.
#[cfg(target_os = "linux")]
fn reopen_direct(file: &File, write: bool) -> Option<File> {
    use std::os::fd::AsRawFd as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    std::fs::OpenOptions::new()
        .read(!write)
        .write(write)
        .custom_flags(libc::O_DIRECT)
        .open(format!("/proc/self/fd/{}", file.as_raw_fd()))
        .ok()
}

/// Elsewhere, everything goes through the page cache.
#[cfg(not(target_os = "linux"))]
fn reopen_direct(_file: &File, _write: bool) -> Option<File> {
    None
}

/// What a [`DirectWriter`] wrote.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Landed {
    /// Bytes written.
    pub bytes: u64,
    /// Of those, bytes that went to the disk directly.
    pub directly: u64,
}

/// Writes a stream of bytes into a file from an offset on, in large
/// writes, direct where it can; [`DirectWriter::finish`] makes it durable.
pub struct DirectWriter {
    /// Through the page cache: the unaligned ends, the fallback, the sync.
    file: File,
    /// The same file opened with `O_DIRECT`, while direct writes work.
    direct: Option<File>,
    /// Background syncs, started with the first page-cache write that
    /// needs one (most transfers write directly and never do).
    write_back: Option<WriteBack>,
    /// File offset of `batch`'s first byte.
    pos: u64,
    batch: AlignedBuf,
    written: u64,
    /// Of those, bytes that went to the disk directly.
    written_directly: u64,
    unsynced: u64,
}

impl DirectWriter {
    /// Writes into `file` (open for writing) from `offset` on; what is in
    /// the file after `offset` is the caller's to cut first.
    pub fn new(file: File, offset: u64) -> io::Result<Self> {
        Ok(Self {
            write_back: None,
            direct: reopen_direct(&file, true),
            file,
            pos: offset,
            batch: AlignedBuf::new(WRITE_BATCH),
            written: 0,
            written_directly: 0,
            unsynced: 0,
        })
    }

    /// Gathers `data`, writing out each batch as it fills.
    pub fn push(&mut self, mut data: &[u8]) -> io::Result<()> {
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
                if self.write_back.is_none() {
                    self.write_back = Some(WriteBack::start(&self.file)?);
                }
                if let Some(write_back) = &self.write_back {
                    write_back.nudge();
                }
                self.unsynced = 0;
            }
        }
        self.pos += len as u64;
        self.batch.drain_front(len);
        Ok(())
    }

    /// Writes what is left (its aligned part directly, the tail through the
    /// page cache), waits for the background syncs and syncs the file's
    /// data; hands the file back.
    pub fn finish(mut self) -> io::Result<(File, Landed)> {
        let rest = self.write_rest();
        let Self {
            file,
            write_back,
            written,
            written_directly,
            ..
        } = self;
        let background = write_back.map_or(Ok(()), WriteBack::finish);
        rest?;
        background?;
        file.sync_data()?;
        let landed = Landed {
            bytes: written,
            directly: written_directly,
        };
        Ok((file, landed))
    }

    fn write_rest(&mut self) -> io::Result<()> {
        if self.pos.is_multiple_of(ALIGN as u64) {
            let left = self.batch.len();
            self.write_out(left - left % ALIGN)?;
        }
        self.write_out(self.batch.len())
    }
}

/// Reads ranges of a file in blocks, direct where it can.
pub struct BlockReader {
    file: File,
    /// The same file opened with `O_DIRECT`, while direct reads work.
    direct: Option<File>,
    buf: AlignedBuf,
}

impl BlockReader {
    /// Opens the file at `path` (failing here if it is not there).
    pub fn open(path: &Path) -> io::Result<Self> {
        let file = File::open(path)?;
        Ok(Self {
            direct: reopen_direct(&file, false),
            file,
            buf: AlignedBuf::new(READ_BLOCK),
        })
    }

    /// Hands `each` the bytes `start..end` (fewer if the file is shorter)
    /// in pieces of up to [`READ_BLOCK`], in order, until `each` returns
    /// false.
    pub fn read_range(
        &mut self,
        start: u64,
        end: u64,
        mut each: impl FnMut(&[u8]) -> bool,
    ) -> io::Result<()> {
        let mut pos = start - start % ALIGN as u64;
        while pos < end {
            let want = READ_BLOCK.min((end - pos).next_multiple_of(ALIGN as u64) as usize);
            let read = self.read_block(pos, want)?;
            let from = start.saturating_sub(pos) as usize;
            let to = read.min((end - pos) as usize);
            if from < to && !each(&self.buf.as_slice()[from..to]) {
                return Ok(());
            }
            if read < want {
                return Ok(()); // the file ends here
            }
            pos += read as u64;
        }
        Ok(())
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
    use std::os::unix::fs::OpenOptionsExt as _;

    /// Whether files in `dir` open with `O_DIRECT` by their path.
    fn can_go_direct(dir: &Path) -> bool {
        let probe = dir.join("probe");
        std::fs::write(&probe, b"").unwrap();
        std::fs::OpenOptions::new()
            .write(true)
            .custom_flags(libc::O_DIRECT)
            .open(&probe)
            .is_ok()
    }

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
        let file = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
        file.set_len(offset as u64).unwrap();
        let mut writer = DirectWriter::new(file, offset as u64).unwrap();
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
        let (_, landed) = writer.finish().unwrap();
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
        if !can_go_direct(dir.path()) {
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
        let mut reader = BlockReader::open(&path).unwrap();
        assert_eq!(reader.direct.is_some(), can_go_direct(dir.path()));
        if !direct {
            reader.direct = None;
        }
        let mut got = Vec::new();
        reader
            .read_range(start, end, |piece| {
                assert!(piece.len() <= READ_BLOCK);
                got.extend_from_slice(piece);
                true
            })
            .unwrap();
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

    /// Through the page cache, a body past two sync intervals starts the
    /// background syncs (a direct one never needs them) and still lands
    /// byte for byte.
    #[test]
    fn page_cache_writes_are_synced_in_the_background() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("staged");
        let file = std::fs::File::create(&path).unwrap();
        let mut writer = DirectWriter::new(file, 0).unwrap();
        writer.direct = None;
        let mut sent = Vec::new();
        let frame: Vec<u8> = (0..WRITE_BATCH + 7).map(pattern).collect();
        while sent.len() < 2 * SYNC_EVERY as usize + 12_345 {
            writer.push(&frame).unwrap();
            sent.extend_from_slice(&frame);
        }
        assert!(writer.write_back.is_some(), "no background sync started");
        let (_, landed) = writer.finish().unwrap();
        assert_eq!(landed.directly, 0);
        assert!(std::fs::read(&path).unwrap() == sent);

        let file = std::fs::File::create(dir.path().join("direct")).unwrap();
        let mut writer = DirectWriter::new(file, 0).unwrap();
        if writer.direct.is_some() {
            writer.push(&sent).unwrap();
            assert!(writer.write_back.is_none(), "direct writes need no syncs");
        }
    }

    /// The direct handle is the caller's file, not whatever its path names
    /// by then: a file swapped in at the path after the open (a planted
    /// file, a symlink elsewhere) receives nothing.
    #[test]
    fn writes_follow_the_descriptor_not_the_path() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("partial");
        let file = std::fs::File::create(&path).unwrap();
        std::fs::rename(&path, dir.path().join("moved")).unwrap();
        std::fs::write(&path, b"planted").unwrap();
        let mut writer = DirectWriter::new(file, 0).unwrap();
        let body: Vec<u8> = (0..3 * WRITE_BATCH + 5).map(pattern).collect();
        writer.push(&body).unwrap();
        let (_, landed) = writer.finish().unwrap();
        if can_go_direct(dir.path()) {
            assert!(landed.directly > 0, "the direct handle was used");
        }
        assert_eq!(std::fs::read(&path).unwrap(), b"planted");
        assert!(std::fs::read(dir.path().join("moved")).unwrap() == body);
    }

    #[test]
    fn a_missing_file_fails_to_open() {
        let dir = tempfile::tempdir().unwrap();
        let err = BlockReader::open(&dir.path().join("gone")).err().unwrap();
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
}
