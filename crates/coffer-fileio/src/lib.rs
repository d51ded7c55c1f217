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
//!
//! A writer that knows how much is coming reserves it first ([`reserve`]),
//! so that a disk without room says so before the transfer starts.
//!
//! A [`BlockReader`] hands out the blocks it read into as they are, as
//! `Bytes` for hyper, and reads into them again once they come back
//! ([`Lender`], which the client's upload uses for its send buffers too).

#![forbid(unsafe_code)]

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt as _;
use std::path::Path;

use bytes::Bytes;

mod lend;
pub use lend::Lender;

/// Alignment of direct transfers: address, offset and length (4 KiB
/// covers every logical block size in common use, 512 B included).
pub const ALIGN: usize = 4096;
/// Bytes gathered before each write.
pub const WRITE_BATCH: usize = 1024 * 1024;
/// Batch buffers one writer uses: one filling, the others queued or being
/// written.
pub const IN_FLIGHT: usize = 3;
/// Bytes read at a time.
pub const READ_BLOCK: usize = 1024 * 1024;
/// Read blocks a [`BlockReader`] keeps for reuse once they come back:
/// enough for the blocks a download's consumer holds at once (read ahead,
/// queued in hyper), so a long read allocates none after its first few.
const BLOCKS_KEPT: usize = 8;
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

/// Reserves disk space for bytes `offset..offset + len` of `file` without
/// changing its size (`fallocate` with `FALLOC_FL_KEEP_SIZE`).
///
/// Why: a transfer whose length is known then fails at once on a disk that
/// cannot hold it (ENOSPC here, before a byte is sent), not after filling
/// the disk; and the file is laid out in a few large extents rather than
/// growing one write at a time. The size stays what was written, so a
/// partial file still says how far a transfer got (resume relies on it);
/// cutting the file back (`set_len`) releases what was reserved past it.
/// Where the file system cannot reserve (some network and FUSE file
/// systems), nothing is reserved and the writes allocate as they go.
pub fn reserve(file: &File, offset: u64, len: u64) -> io::Result<()> {
    if len == 0 {
        return Ok(());
    }
    #[cfg(target_os = "linux")]
    {
        use rustix::io::Errno;
        match rustix::fs::fallocate(file, rustix::fs::FallocateFlags::KEEP_SIZE, offset, len) {
            Err(err) if err == Errno::OPNOTSUPP || err == Errno::NOSYS => Ok(()),
            other => other.map_err(io::Error::from),
        }
    }
    #[cfg(not(target_os = "linux"))]
    {
        let _ = (file, offset);
        Ok(())
    }
}

/// What a [`DirectWriter`] wrote.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Landed {
    /// Bytes written.
    pub bytes: u64,
    /// Of those, bytes that went to the disk directly.
    pub directly: u64,
    /// Of those, bytes copied into the writer's own batches (`push`), not
    /// handed over in a batch filled in place (`push_batch`).
    pub copied: u64,
}

/// Writes a stream of bytes into a file from an offset on, in large
/// writes, direct where it can; [`DirectWriter::finish`] makes it durable.
///
/// The writes themselves run on a thread of their own, so the caller goes
/// on producing the next batch while the disk takes the last one: a direct
/// write blocks until the device has the bytes (about 0.7 ms per MiB on
/// the reference machine, twice as long as decrypting them). At most
/// [`IN_FLIGHT`] batches exist at once; when all are queued, `push` waits
/// for the disk. Dropping the writer without `finish` waits for the queued
/// writes too, so no write reaches the file after the writer is gone.
pub struct DirectWriter {
    /// File offset of `batch`'s first byte.
    pos: u64,
    batch: AlignedBuf,
    written: u64,
    /// Of `written`, bytes copied into `batch` by `push`.
    copied: u64,
    /// Full batches for the writing thread, with their offsets.
    queue: Option<std::sync::mpsc::SyncSender<Piece>>,
    /// Batches the thread wrote, back for reuse.
    spare: std::sync::mpsc::Receiver<AlignedBuf>,
    /// Batch buffers made so far (at most [`IN_FLIGHT`]).
    buffers: usize,
    disk: Option<std::thread::JoinHandle<io::Result<Disk>>>,
}

/// Bytes to write at a file offset.
struct Piece {
    buf: AlignedBuf,
    pos: u64,
}

impl DirectWriter {
    /// Writes into `file` (open for writing) from `offset` on; what is in
    /// the file after `offset` is the caller's to cut first.
    pub fn new(file: File, offset: u64) -> io::Result<Self> {
        let direct = reopen_direct(&file, true);
        Self::start(Disk::new(file, direct), offset)
    }

    /// A writer that never writes directly, as where `O_DIRECT` is refused.
    #[cfg(test)]
    fn through_page_cache(file: File, offset: u64) -> io::Result<Self> {
        Self::start(Disk::new(file, None), offset)
    }

    fn start(mut disk: Disk, offset: u64) -> io::Result<Self> {
        let (queue, inbox) = std::sync::mpsc::sync_channel::<Piece>(IN_FLIGHT);
        let (give_back, spare) = std::sync::mpsc::channel();
        let thread = std::thread::Builder::new()
            .name("coffer-write".into())
            .spawn(move || {
                for piece in inbox {
                    disk.write(piece.buf.as_slice(), piece.pos)?;
                    let _ = give_back.send(piece.buf);
                }
                Ok(disk)
            })?;
        Ok(Self {
            pos: offset,
            batch: AlignedBuf::new(WRITE_BATCH),
            written: 0,
            copied: 0,
            queue: Some(queue),
            spare,
            buffers: 1,
            disk: Some(thread),
        })
    }

    /// Gathers `data`, handing each batch to the writing thread as it fills.
    pub fn push(&mut self, mut data: &[u8]) -> io::Result<()> {
        self.written += data.len() as u64;
        self.copied += data.len() as u64;
        while !data.is_empty() {
            let room = self.batch_limit() - self.batch.len();
            let take = room.min(data.len());
            self.batch.extend(&data[..take]);
            data = &data[take..];
            if self.batch.len() == self.batch_limit() {
                self.send_batch()?;
            }
        }
        Ok(())
    }

    /// Writes a batch the caller filled in place ([`Batch::room`]), and
    /// hands back an empty one to fill next. Where the writer stands at an
    /// aligned offset with nothing gathered and the batch is whole blocks,
    /// the batch itself goes to the disk, not a copy of it: a producer that
    /// can write its output straight into a batch (a decryptor) saves the
    /// copy [`DirectWriter::push`] makes. Otherwise its bytes are pushed.
    pub fn push_batch(&mut self, mut batch: Batch) -> io::Result<Batch> {
        let len = batch.0.len();
        let whole_blocks = len > 0 && len.is_multiple_of(ALIGN);
        if !(whole_blocks && self.batch.len() == 0 && self.pos.is_multiple_of(ALIGN as u64)) {
            self.push(batch.0.as_slice())?;
            batch.0.clear();
            return Ok(batch);
        }
        let spare = self.next_buffer()?;
        let piece = Piece {
            buf: batch.0,
            pos: self.pos,
        };
        let sent = self.queue.as_ref().map(|queue| queue.send(piece));
        if !matches!(sent, Some(Ok(()))) {
            return Err(self.disk_failure());
        }
        self.pos += len as u64;
        self.written += len as u64;
        Ok(Batch(spare))
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

    /// Queues the batch for writing at `pos` and starts a new one.
    fn send_batch(&mut self) -> io::Result<()> {
        let next = self.next_buffer()?;
        let full = std::mem::replace(&mut self.batch, next);
        let len = full.len() as u64;
        let piece = Piece {
            buf: full,
            pos: self.pos,
        };
        let sent = self.queue.as_ref().map(|queue| queue.send(piece));
        if !matches!(sent, Some(Ok(()))) {
            return Err(self.disk_failure());
        }
        self.pos += len;
        Ok(())
    }

    /// An empty batch buffer: one the thread gave back, a new one while
    /// fewer than [`IN_FLIGHT`] exist, or else the next one given back
    /// (waiting for the disk).
    fn next_buffer(&mut self) -> io::Result<AlignedBuf> {
        let reused = match self.spare.try_recv() {
            Ok(buf) => Some(buf),
            Err(_) if self.buffers < IN_FLIGHT => {
                self.buffers += 1;
                return Ok(AlignedBuf::new(WRITE_BATCH));
            }
            Err(_) => self.spare.recv().ok(),
        };
        let mut buf = reused.ok_or_else(|| self.disk_failure())?;
        buf.clear();
        Ok(buf)
    }

    /// Closes the queue and waits for the writing thread: its file state
    /// once everything queued was written, or its error.
    fn join_disk(&mut self) -> io::Result<Disk> {
        self.queue = None;
        match self.disk.take().map(std::thread::JoinHandle::join) {
            Some(Ok(disk)) => disk,
            Some(Err(_)) => Err(io::Error::other("the writing thread panicked")),
            None => Err(io::Error::other("the writing thread stopped")),
        }
    }

    /// Why the writing thread stopped early: its error.
    fn disk_failure(&mut self) -> io::Error {
        match self.join_disk() {
            Err(err) => err,
            Ok(_) => io::Error::other("the writing thread stopped"),
        }
    }

    /// Writes what is left (its aligned part directly, the tail through the
    /// page cache), waits for the background syncs and syncs the file's
    /// data; hands the file back.
    pub fn finish(self) -> io::Result<(File, Landed)> {
        let copied = self.copied;
        let (disk, bytes) = self.drain()?;
        let Disk {
            file,
            write_back,
            written_directly,
            ..
        } = disk;
        write_back.map_or(Ok(()), WriteBack::finish)?;
        file.sync_data()?;
        let landed = Landed {
            bytes,
            directly: written_directly,
            copied,
        };
        Ok((file, landed))
    }

    /// Queues the last batch and waits until everything was written; the
    /// thread's file state and the bytes pushed.
    fn drain(mut self) -> io::Result<(Disk, u64)> {
        if self.batch.len() > 0 {
            self.send_batch()?;
        }
        Ok((self.join_disk()?, self.written))
    }
}

impl Drop for DirectWriter {
    fn drop(&mut self) {
        let _ = self.join_disk();
    }
}

/// The writing thread's side: the file and how its bytes went out.
struct Disk {
    /// Through the page cache: the unaligned ends, the fallback, the sync.
    file: File,
    /// The same file opened with `O_DIRECT`, while direct writes work.
    direct: Option<File>,
    /// Background syncs, started with the first page-cache write that
    /// needs one (most transfers write directly and never do).
    write_back: Option<WriteBack>,
    /// Bytes that went to the disk directly.
    written_directly: u64,
    unsynced: u64,
}

impl Disk {
    fn new(file: File, direct: Option<File>) -> Self {
        Self {
            file,
            direct,
            write_back: None,
            written_directly: 0,
            unsynced: 0,
        }
    }

    /// Writes `bytes` at `pos`: the aligned part directly (when `pos` is
    /// aligned), the unaligned rest through the page cache.
    fn write(&mut self, bytes: &[u8], pos: u64) -> io::Result<()> {
        let aligned = if pos.is_multiple_of(ALIGN as u64) {
            bytes.len() - bytes.len() % ALIGN
        } else {
            0
        };
        let (head, tail) = bytes.split_at(aligned);
        self.write_piece(head, pos)?;
        self.write_piece(tail, pos + aligned as u64)
    }

    /// Writes `bytes` at `pos`, directly when both are aligned.
    fn write_piece(&mut self, bytes: &[u8], pos: u64) -> io::Result<()> {
        if bytes.is_empty() {
            return Ok(());
        }
        let aligned = pos.is_multiple_of(ALIGN as u64) && bytes.len().is_multiple_of(ALIGN);
        let direct = match &self.direct {
            Some(direct) if aligned => direct.write_all_at(bytes, pos).is_ok(),
            _ => false,
        };
        if direct {
            self.written_directly += bytes.len() as u64;
            return Ok(());
        }
        // Refused (or not aligned): this and everything after it goes
        // through the page cache. A refused direct write may have written
        // part of the range; rewriting all of it is exact.
        if aligned {
            self.direct = None;
        }
        self.file.write_all_at(bytes, pos)?;
        self.unsynced += bytes.len() as u64;
        if self.unsynced >= SYNC_EVERY {
            if self.write_back.is_none() {
                self.write_back = Some(WriteBack::start(&self.file)?);
            }
            if let Some(write_back) = &self.write_back {
                write_back.nudge();
            }
            self.unsynced = 0;
        }
        Ok(())
    }
}

/// Reads ranges of a file in blocks, direct where it can, and hands each
/// block out as it was read, as [`Bytes`] lent from a [`Lender`]: no copy
/// after the read itself.
pub struct BlockReader {
    file: File,
    /// The same file opened with `O_DIRECT`, while direct reads work.
    direct: Option<File>,
    blocks: Lender<AlignedBuf>,
}

impl BlockReader {
    /// Opens the file at `path` (failing here if it is not there).
    pub fn open(path: &Path) -> io::Result<Self> {
        let file = File::open(path)?;
        Ok(Self {
            direct: reopen_direct(&file, false),
            file,
            blocks: Lender::new(BLOCKS_KEPT),
        })
    }

    /// Hands `each` the bytes `start..end` (fewer if the file is shorter)
    /// in pieces of up to [`READ_BLOCK`], in order, until `each` returns
    /// false. A piece's buffer is read into again only once `each`'s
    /// receiver has dropped it.
    pub fn read_range(
        &mut self,
        start: u64,
        end: u64,
        mut each: impl FnMut(Bytes) -> bool,
    ) -> io::Result<()> {
        let mut pos = start - start % ALIGN as u64;
        while pos < end {
            let want = READ_BLOCK.min((end - pos).next_multiple_of(ALIGN as u64) as usize);
            let mut block = self
                .blocks
                .take()
                .unwrap_or_else(|| AlignedBuf::new(READ_BLOCK));
            let read = self.read_block(&mut block, pos, want)?;
            let from = start.saturating_sub(pos) as usize;
            let to = read.min((end - pos) as usize);
            if from < to && !each(self.blocks.lend(block).slice(from..to)) {
                return Ok(());
            }
            if read < want {
                return Ok(()); // the file ends here
            }
            pos += read as u64;
        }
        Ok(())
    }

    /// Reads up to `want` bytes at `pos` (both aligned) into `block`; the
    /// count read, short only at the file's end.
    fn read_block(&mut self, block: &mut AlignedBuf, pos: u64, want: usize) -> io::Result<usize> {
        block.clear();
        let space = block.space(want);
        if let Some(direct) = &self.direct {
            match read_full(direct, space, pos) {
                Ok(n) => {
                    block.set_len(n);
                    return Ok(n);
                }
                // Refused: this and every later block through the cache.
                Err(_) => self.direct = None,
            }
        }
        let n = read_full(&self.file, space, pos)?;
        block.set_len(n);
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

/// A buffer of [`WRITE_BATCH`] bytes to fill in place and hand to
/// [`DirectWriter::push_batch`] (aligned as direct writes need).
pub struct Batch(AlignedBuf);

impl Batch {
    /// An empty batch.
    pub fn new() -> Self {
        Self(AlignedBuf::new(WRITE_BATCH))
    }

    /// The whole buffer, to fill from its start.
    pub fn room(&mut self) -> &mut [u8] {
        self.0.space(WRITE_BATCH)
    }

    /// Marks the first `n` bytes of [`Batch::room`] as filled.
    pub fn set_filled(&mut self, n: usize) {
        assert!(n <= WRITE_BATCH, "within the batch");
        self.0.set_len(n);
    }

    /// Bytes filled.
    pub fn filled(&self) -> usize {
        self.0.len()
    }
}

impl Default for Batch {
    fn default() -> Self {
        Self::new()
    }
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
}

/// What was read or filled: what a lent block hands out.
impl AsRef<[u8]> for AlignedBuf {
    fn as_ref(&self) -> &[u8] {
        self.as_slice()
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

    /// How the bytes are handed to the writer.
    #[derive(Clone, Copy)]
    enum Feed {
        /// `push` of frames of this many bytes.
        Frames(usize),
        /// Batches filled in place (full but the last), `push_batch`.
        Batches,
    }

    /// Writes `total` pattern bytes fed as `feed` after `offset` bytes
    /// already in the file; checks the file is exactly the old prefix then
    /// the new bytes; returns what landed.
    fn lands_exactly(offset: usize, total: usize, feed: Feed, direct: bool) -> Landed {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("staged");
        // Junk past `offset` (an earlier, interrupted append) must go.
        let old: Vec<u8> = (0..offset + 10_000).map(pattern).collect();
        std::fs::write(&path, &old).unwrap();
        let file = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
        file.set_len(offset as u64).unwrap();
        let mut writer = if direct {
            DirectWriter::new(file, offset as u64).unwrap()
        } else {
            DirectWriter::through_page_cache(file, offset as u64).unwrap()
        };
        let mut sent = offset;
        let mut batch = Batch::new();
        while sent < offset + total {
            let bytes = |len: usize| (sent..sent + len).map(|i| pattern(i) ^ 0x5a);
            let len = match feed {
                Feed::Frames(frame) => {
                    let len = frame.min(offset + total - sent);
                    writer.push(&bytes(len).collect::<Vec<u8>>()).unwrap();
                    len
                }
                Feed::Batches => {
                    // The batch handed back may hold older bytes: only
                    // what is marked filled may land.
                    let len = WRITE_BATCH.min(offset + total - sent);
                    for (slot, byte) in batch.room().iter_mut().zip(bytes(len)) {
                        *slot = byte;
                    }
                    batch.set_filled(len);
                    batch = writer.push_batch(batch).unwrap();
                    assert_eq!(batch.filled(), 0);
                    len
                }
            };
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
        assert!(got == expected, "offset {offset} total {total}");
        landed
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
                    for feed in [
                        Feed::Frames(16_381),
                        Feed::Frames(WRITE_BATCH + 1),
                        Feed::Batches,
                    ] {
                        lands_exactly(offset, total, feed, direct);
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
        let direct = lands_exactly(5, total, Feed::Frames(16_381), true).directly;
        assert_eq!(
            direct,
            (total - (ALIGN - 5) - (total - (ALIGN - 5)) % ALIGN) as u64
        );
        let cached = lands_exactly(5, total, Feed::Frames(16_381), false);
        assert_eq!(cached.directly, 0);
        // Whole batches filled in place from an aligned offset all go
        // directly, and only the short last one is copied.
        let batches = lands_exactly(0, total, Feed::Batches, true);
        assert_eq!(batches.directly, (total - total % ALIGN) as u64);
        assert_eq!(batches.copied, (total % WRITE_BATCH) as u64);
        // From an unaligned offset they are copied, to keep later writes
        // aligned.
        let unaligned = lands_exactly(5, total, Feed::Batches, true);
        assert_eq!(unaligned.copied, total as u64);
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
                got.extend_from_slice(&piece);
                true
            })
            .unwrap();
        got
    }

    /// Pieces held while later blocks are read keep their bytes (a block
    /// is read into again only once every piece of it is gone), and blocks
    /// that came back are read into again, not allocated anew; a block
    /// reused for the file's short end hands out only what was read there.
    #[test]
    fn held_pieces_keep_their_bytes_and_returned_blocks_are_reused() {
        let len = 5 * READ_BLOCK + 77;
        let file: Vec<u8> = (0..len).map(pattern).collect();
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("object");
        std::fs::write(&path, &file).unwrap();
        let mut reader = BlockReader::open(&path).unwrap();
        let mut held = Vec::new();
        reader
            .read_range(3, len as u64, |piece| {
                held.push(piece);
                true
            })
            .unwrap();
        assert_eq!(reader.blocks.waiting(), 0, "every block is still out");
        assert!(held.concat() == file[3..]);
        drop(held);
        assert_eq!(reader.blocks.waiting(), 6);
        let mut blocks = std::collections::HashSet::new();
        let mut got = Vec::new();
        reader
            .read_range(0, len as u64, |piece| {
                blocks.insert(piece.as_ptr() as usize);
                got.extend_from_slice(&piece);
                true
            })
            .unwrap();
        assert_eq!(blocks.len(), 1, "each block came back before the next read");
        assert!(got == file);
        assert_eq!(reader.blocks.waiting(), 6);
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
        let mut writer = DirectWriter::through_page_cache(file, 0).unwrap();
        let mut sent = Vec::new();
        let frame: Vec<u8> = (0..WRITE_BATCH + 7).map(pattern).collect();
        while sent.len() < 2 * SYNC_EVERY as usize + 12_345 {
            writer.push(&frame).unwrap();
            sent.extend_from_slice(&frame);
        }
        let (disk, _) = writer.drain().unwrap();
        assert_eq!(disk.written_directly, 0);
        let write_back = disk.write_back.expect("no background sync started");
        write_back.finish().unwrap();
        assert!(std::fs::read(&path).unwrap() == sent);

        let file = std::fs::File::create(dir.path().join("direct")).unwrap();
        let mut writer = DirectWriter::new(file, 0).unwrap();
        writer.push(&sent).unwrap();
        let (disk, _) = writer.drain().unwrap();
        if disk.written_directly > 0 {
            assert!(disk.write_back.is_none(), "direct writes need no syncs");
        }
    }

    /// A write the disk refuses (here: a file open only for reading) is an
    /// error from `push` or `finish`, never a hang or a panic, however many
    /// batches were queued behind it.
    #[test]
    fn a_failing_disk_is_an_error_not_a_hang() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("read-only");
        std::fs::write(&path, b"").unwrap();
        let file = std::fs::File::open(&path).unwrap();
        let mut writer = DirectWriter::through_page_cache(file, 0).unwrap();
        let frame = vec![1u8; WRITE_BATCH / 2 + 1];
        let mut failed = None;
        for _ in 0..4 * IN_FLIGHT {
            if let Err(err) = writer.push(&frame) {
                failed = Some(err);
                break;
            }
        }
        let err = match failed {
            Some(err) => err,
            None => writer.finish().expect_err("writes to a read-only file"),
        };
        assert_eq!(err.raw_os_error(), Some(libc::EBADF), "{err}");
        assert_eq!(std::fs::metadata(&path).unwrap().len(), 0);
    }

    /// Descriptors of this process open on `path` (Linux).
    fn descriptors_on(path: &Path) -> usize {
        std::fs::read_dir("/proc/self/fd")
            .map(|fds| {
                fds.filter_map(|fd| std::fs::read_link(fd.ok()?.path()).ok())
                    .filter(|target| target == path)
                    .count()
            })
            .unwrap_or(0)
    }

    /// Dropped without `finish` (a failed transfer), the writer first
    /// lets the queued batches land and closes the file: nothing writes to
    /// it later.
    #[test]
    fn a_dropped_writer_has_finished_writing() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("partial");
        let file = std::fs::File::create(&path).unwrap();
        let mut writer = DirectWriter::new(file, 0).unwrap();
        let body: Vec<u8> = (0..(IN_FLIGHT + 1) * WRITE_BATCH + 5)
            .map(pattern)
            .collect();
        writer.push(&body).unwrap();
        drop(writer);
        if cfg!(target_os = "linux") {
            assert_eq!(descriptors_on(&path), 0, "the writing thread still runs");
        }
        let landed = std::fs::read(&path).unwrap();
        assert_eq!(landed.len(), (IN_FLIGHT + 1) * WRITE_BATCH);
        assert!(landed[..] == body[..landed.len()]);
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
        assert_eq!(buf.as_slice(), &[7; 5000][..]);
        buf.clear();
        assert_eq!(buf.space(ALIGN).as_ptr().align_offset(ALIGN), 0);
    }
}
