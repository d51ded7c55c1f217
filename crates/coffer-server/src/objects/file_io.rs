//! The local store's file I/O, on blocking threads: writing a request body
//! into a staged upload file at an offset, and reading a range of an
//! object for a download. Both bypass the page cache where the file system
//! allows it (the `coffer-fileio` crate says why and how).

use std::io;
use std::path::Path;

use bytes::Bytes;
use coffer_fileio::{BlockReader, DirectWriter};

pub(super) use coffer_fileio::WRITE_BATCH;

/// Body bytes gathered (as the frames they came in, not copied) before one
/// hand-off to the writer thread. Handing over each frame, a TLS record or
/// a few, woke that thread tens of thousands of times per GiB.
pub(super) const HANDOFF_BYTES: usize = WRITE_BATCH;
/// Hand-offs queued for the writer thread.
pub(super) const WRITE_DEPTH: usize = 2;
/// Blocks read ahead of a download's response.
const READ_AHEAD: usize = 4;

/// Writes what arrives on `inbox` (request bodies come in frames of a few
/// KiB, TLS records, handed over a MiB of them at a time) into the file at
/// `path` from `offset` on, anything after `offset` cut first, and makes it
/// durable. Room for `expected` bytes is reserved first, so a disk that
/// cannot hold the rest of the upload refuses it before its body is read
/// (ENOSPC: 507). Returns the bytes written.
pub(super) fn write_staged(
    path: &Path,
    offset: u64,
    expected: u64,
    mut inbox: tokio::sync::mpsc::Receiver<Vec<Bytes>>,
) -> io::Result<u64> {
    let file = std::fs::OpenOptions::new()
        .create(true)
        .write(true)
        .truncate(false)
        .open(path)?;
    file.set_len(offset)?;
    coffer_fileio::reserve(&file, offset, expected)?;
    let mut writer = DirectWriter::new(file, offset)?;
    let mut frames = 0usize;
    let received = (|| -> io::Result<()> {
        while let Some(handoff) = inbox.blocking_recv() {
            frames += handoff.len();
            for frame in handoff {
                writer.push(&frame)?;
            }
        }
        Ok(())
    })();
    // The writer's background syncs end (and report) whatever happened, so
    // no thread outlives the request.
    let finished = writer.finish();
    received?;
    let (_, landed) = finished?;
    tracing::debug!(
        bytes = landed.bytes,
        directly = landed.directly,
        copied = landed.copied,
        frames,
        "upload body written"
    );
    Ok(landed.bytes)
}

/// Bytes `start..end` of the file at `path` (fewer if it is shorter), read
/// ahead on a thread of their own and handed on in the blocks they were
/// read into (not copied). A file that is not there fails here,
/// before the stream starts.
pub(super) fn read_range(
    path: &Path,
    start: u64,
    end: u64,
) -> io::Result<super::ByteStream<'static>> {
    let mut reader = BlockReader::open(path)?;
    let (tx, rx) = tokio::sync::mpsc::channel::<io::Result<Bytes>>(READ_AHEAD);
    std::thread::Builder::new()
        .name("coffer-read".into())
        .spawn(move || {
            let read = reader.read_range(start, end, |piece| tx.blocking_send(Ok(piece)).is_ok());
            if let Err(err) = read {
                let _ = tx.blocking_send(Err(err));
            }
        })?;
    Ok(Box::pin(futures_util::stream::unfold(
        rx,
        |mut rx| async move { rx.recv().await.map(|item| (item, rx)) },
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A body of frames of odd sizes, past several write batches and sync
    /// intervals, lands whole, in order, at an unaligned offset.
    #[test]
    fn a_body_in_odd_frames_lands_whole_at_its_offset() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("staged");
        std::fs::write(&path, b"keep").unwrap();
        let (tx, inbox) = tokio::sync::mpsc::channel(WRITE_DEPTH);
        let total = 2 * coffer_fileio::SYNC_EVERY as usize + 12_345;
        // More reserved than arrives: the size is still what was written.
        let reserve = total as u64 + 100_000;
        let writer = std::thread::spawn(move || write_staged(&path, 4, reserve, inbox));
        let mut expected = blake3::Hasher::new();
        expected.update(b"keep");
        let mut sent = 0usize;
        while sent < total {
            // Frames of odd sizes, like TLS records, with a running pattern.
            let len = (16_381).min(total - sent);
            let frame: Vec<u8> = (sent..sent + len).map(|i| (i % 251) as u8).collect();
            expected.update(&frame);
            tx.blocking_send(vec![Bytes::from(frame)]).unwrap();
            sent += len;
        }
        drop(tx);
        assert_eq!(writer.join().unwrap().unwrap(), total as u64);
        let written = std::fs::read(dir.path().join("staged")).unwrap();
        assert_eq!(written.len(), total + 4);
        assert_eq!(blake3::hash(&written), expected.finalize());
    }

    /// On a disk that cannot hold the rest of the upload (the small tmpfs
    /// `scripts/test-services` mounts), the write fails with ENOSPC at once:
    /// it does not wait for a body (the sender here never sends) and
    /// writes nothing.
    #[test]
    fn an_upload_too_large_for_the_disk_is_refused_before_its_body() {
        let small_fs = std::env::var_os("COFFER_TEST_SMALL_FS");
        let what = "a small file system (COFFER_TEST_SMALL_FS)";
        if !crate::testing::require(what, small_fs.is_some()) {
            return;
        }
        let dir = tempfile::tempdir_in(small_fs.unwrap()).unwrap();
        let path = dir.path().join("staged");
        let (tx, inbox) = tokio::sync::mpsc::channel(WRITE_DEPTH);
        let (done, result) = std::sync::mpsc::channel();
        let staged = path.clone();
        std::thread::spawn(move || {
            let _ = done.send(write_staged(&staged, 0, 64 << 20, inbox));
        });
        let err = result
            .recv_timeout(std::time::Duration::from_secs(20))
            .expect("waited for a body instead of refusing")
            .unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::StorageFull, "{err}");
        assert_eq!(std::fs::metadata(&path).unwrap().len(), 0);
        drop(tx);
    }

    #[test]
    fn a_missing_object_fails_before_the_stream() {
        let dir = tempfile::tempdir().unwrap();
        let err = read_range(&dir.path().join("gone"), 0, 10).err().unwrap();
        assert_eq!(err.kind(), io::ErrorKind::NotFound);
    }

    /// A range read through the stream comes back exact (the crate's own
    /// tests try every alignment; this is the hand-off in pieces).
    #[tokio::test]
    async fn a_range_streams_back_exactly() {
        use futures_util::TryStreamExt as _;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("object");
        let bytes: Vec<u8> = (0..3_000_000u32).map(|i| (i % 253) as u8).collect();
        std::fs::write(&path, &bytes).unwrap();
        let stream = read_range(&path, 12_345, 2_999_999).unwrap();
        let pieces: Vec<Bytes> = stream.try_collect().await.unwrap();
        assert!(pieces.concat() == bytes[12_345..2_999_999]);
    }
}
