//! Object storage behind a trait: a local directory (the embedded default)
//! or any S3-compatible store ([`s3`]). Objects are named only by random
//! ids, never by anything a client sent.
//!
//! Durability contract: `append` returns only after the bytes are durably
//! stored, and `commit` only after the object is durably at its final name.
//! Callers record state in the metadata store *after* these return, so a
//! crash at any point leaves metadata that never points at missing bytes.
//! The metadata store, not the object store, says what exists: an object
//! without a file row is garbage, and nothing here relies on conditional
//! writes (which some S3 implementations ignore).
//!
//! Staging is where an upload's bytes wait until the last one arrives.
//! Each backend keeps what it needs to go on with a staged upload (for S3:
//! the multipart upload and its parts) in an opaque *staging record* that
//! the caller stores with the upload's offset, so any node can continue an
//! upload another node began.

use std::io;
use std::path::{Path, PathBuf};
use std::pin::Pin;

use aws_lc_rs::digest::{Context, SHA256};
use bytes::Bytes;
use futures_util::{Stream, StreamExt};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

mod file_io;
pub mod s3;

use file_io::{HANDOFF_BYTES, WRITE_BATCH, WRITE_DEPTH, read_range, write_staged};

/// A stream of body bytes.
pub type ByteStream<'a> = Pin<Box<dyn Stream<Item = io::Result<Bytes>> + Send + 'a>>;
/// Boxed future returned by [`ObjectStore`] methods.
pub type ObjectFuture<'a, T> =
    Pin<Box<dyn std::future::Future<Output = io::Result<T>> + Send + 'a>>;

/// What an append stored.
#[derive(Debug)]
pub struct Appended {
    /// Bytes of the body written.
    pub written: u64,
    /// The staging record to keep with the new offset.
    pub staging: Vec<u8>,
}

/// Storage for staged uploads and committed objects.
pub trait ObjectStore: Send + Sync + 'static {
    /// Which backend this is (`local` or `s3`), for logs and reports.
    fn backend(&self) -> &'static str;
    /// Prepares to stage upload `id` of about `length` bytes; returns its
    /// first staging record.
    fn begin<'a>(&'a self, id: &'a str, length: u64) -> ObjectFuture<'a, Vec<u8>>;
    /// Appends `body` to staged upload `id` at `offset` (anything staged
    /// past `offset` is disregarded); `staging` is the record kept at
    /// `offset`. `expected` is about what the body brings at most (the rest
    /// of the declared length), which a store may reserve up front. Limits
    /// and checksums are the caller's (it sees the body before any
    /// encryption).
    fn append<'a>(
        &'a self,
        id: &'a str,
        offset: u64,
        staging: &'a [u8],
        expected: u64,
        body: ByteStream<'a>,
    ) -> ObjectFuture<'a, Appended>;
    /// Undoes an append whose offset will not be recorded: cuts staged
    /// upload `id` back to `len` bytes where that matters.
    fn discard_after<'a>(&'a self, id: &'a str, len: u64) -> ObjectFuture<'a, ()>;
    /// Makes the `len` staged bytes of upload `id` the object `id`; returns
    /// the object's size. Idempotent: if an interrupted commit already did
    /// it, it only checks the object. It reads nothing back: the content
    /// digest is the caller's, computed once as the bytes arrived.
    fn commit<'a>(&'a self, id: &'a str, staging: &'a [u8], len: u64) -> ObjectFuture<'a, u64>;
    /// Bytes `start..end` of an object.
    fn read<'a>(
        &'a self,
        object: &'a str,
        start: u64,
        end: u64,
    ) -> ObjectFuture<'a, ByteStream<'static>>;
    /// The first `len` staged bytes of upload `id`.
    fn read_staged<'a>(
        &'a self,
        id: &'a str,
        staging: &'a [u8],
        len: u64,
    ) -> ObjectFuture<'a, ByteStream<'static>>;
    /// Writes object `id` from `body`, durably, replacing any earlier
    /// attempt; returns its size and SHA-256.
    fn write_object<'a>(
        &'a self,
        id: &'a str,
        body: ByteStream<'a>,
    ) -> ObjectFuture<'a, (u64, [u8; 32])>;
    /// Removes a staged upload and anything its commit left under its id
    /// (absent is fine).
    fn delete_staged<'a>(&'a self, id: &'a str, staging: &'a [u8]) -> ObjectFuture<'a, ()>;
    /// Removes an object (absent is fine).
    fn delete_object<'a>(&'a self, id: &'a str) -> ObjectFuture<'a, ()>;
}

/// Reads a whole stream, returning its length and SHA-256.
pub async fn measure(mut body: ByteStream<'_>) -> io::Result<(u64, [u8; 32])> {
    let mut ctx = Context::new(&SHA256);
    let mut size = 0u64;
    while let Some(chunk) = body.next().await {
        let chunk = chunk?;
        ctx.update(&chunk);
        size += chunk.len() as u64;
    }
    let mut out = [0u8; 32];
    out.copy_from_slice(ctx.finish().as_ref());
    Ok((size, out))
}

/// Objects in a local directory, sharded two levels deep (`ab/cd/abcd…`)
/// so no directory grows without bound.
pub struct LocalObjects {
    root: PathBuf,
}

/// Ids are lowercase hex; anything else never reaches storage.
pub(crate) fn checked(id: &str) -> io::Result<&str> {
    if id.len() >= 8
        && id.len() <= 64
        && id
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    {
        Ok(id)
    } else {
        Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "invalid object id",
        ))
    }
}

impl LocalObjects {
    /// Uses `root/uploads` and `root/objects`.
    pub fn new(root: &Path) -> io::Result<Self> {
        std::fs::create_dir_all(root.join("uploads"))?;
        std::fs::create_dir_all(root.join("objects"))?;
        Ok(Self {
            root: root.to_path_buf(),
        })
    }

    fn staged(&self, id: &str) -> io::Result<PathBuf> {
        Ok(self
            .root
            .join("uploads")
            .join(format!("{}.part", checked(id)?)))
    }

    fn object(&self, id: &str) -> io::Result<PathBuf> {
        let id = checked(id)?;
        Ok(self
            .root
            .join("objects")
            .join(&id[..2])
            .join(&id[2..4])
            .join(id))
    }
}

async fn sync_dir(dir: &Path) -> io::Result<()> {
    tokio::fs::File::open(dir).await?.sync_all().await
}

impl ObjectStore for LocalObjects {
    fn backend(&self) -> &'static str {
        "local"
    }

    fn begin<'a>(&'a self, _id: &'a str, _length: u64) -> ObjectFuture<'a, Vec<u8>> {
        // The staged file is created by the first append; it needs no record.
        Box::pin(async { Ok(Vec::new()) })
    }

    fn append<'a>(
        &'a self,
        id: &'a str,
        offset: u64,
        _staging: &'a [u8],
        expected: u64,
        mut body: ByteStream<'a>,
    ) -> ObjectFuture<'a, Appended> {
        Box::pin(async move {
            let path = self.staged(id)?;
            let (to_writer, inbox) = tokio::sync::mpsc::channel(WRITE_DEPTH);
            let writer =
                tokio::task::spawn_blocking(move || write_staged(&path, offset, expected, inbox));
            // The body's own failure is reported only once the writer has
            // stopped, so a rollback never races a write still in flight.
            let mut received = Ok(());
            let (mut gathered, mut gathered_len) = (Vec::new(), 0);
            while let Some(chunk) = body.next().await {
                match chunk {
                    Ok(chunk) => {
                        gathered_len += chunk.len();
                        gathered.push(chunk);
                        if gathered_len < HANDOFF_BYTES {
                            continue;
                        }
                        gathered_len = 0;
                        if to_writer.send(std::mem::take(&mut gathered)).await.is_err() {
                            break; // the writer failed; it says why
                        }
                    }
                    Err(err) => {
                        received = Err(err);
                        break;
                    }
                }
            }
            if !gathered.is_empty() {
                let _ = to_writer.send(gathered).await; // a failed writer says why
            }
            drop(to_writer);
            let written = writer.await.map_err(io::Error::other)?;
            received?;
            Ok(Appended {
                written: written?,
                staging: Vec::new(),
            })
        })
    }

    fn discard_after<'a>(&'a self, id: &'a str, len: u64) -> ObjectFuture<'a, ()> {
        Box::pin(async move {
            let file = tokio::fs::OpenOptions::new()
                .write(true)
                .open(self.staged(id)?)
                .await?;
            file.set_len(len).await?;
            file.sync_data().await
        })
    }

    fn commit<'a>(&'a self, id: &'a str, _staging: &'a [u8], _len: u64) -> ObjectFuture<'a, u64> {
        Box::pin(async move {
            let staged = self.staged(id)?;
            let target = self.object(id)?;
            let dir = target.parent().map(Path::to_path_buf).unwrap_or_default();
            match tokio::fs::File::open(&staged).await {
                Ok(file) => {
                    file.sync_all().await?;
                    tokio::fs::create_dir_all(&dir).await?;
                    tokio::fs::rename(&staged, &target).await?;
                    sync_dir(&dir).await?;
                }
                // Already moved by an earlier, interrupted commit.
                Err(err)
                    if err.kind() == io::ErrorKind::NotFound
                        && tokio::fs::try_exists(&target).await? => {}
                Err(err) => return Err(err),
            }
            Ok(tokio::fs::metadata(&target).await?.len())
        })
    }

    fn read<'a>(
        &'a self,
        object: &'a str,
        start: u64,
        end: u64,
    ) -> ObjectFuture<'a, ByteStream<'static>> {
        Box::pin(async move {
            let path = self.object(object)?;
            tokio::task::spawn_blocking(move || read_range(&path, start, end))
                .await
                .map_err(io::Error::other)?
        })
    }

    fn read_staged<'a>(
        &'a self,
        id: &'a str,
        _staging: &'a [u8],
        len: u64,
    ) -> ObjectFuture<'a, ByteStream<'static>> {
        Box::pin(async move {
            let file = tokio::fs::File::open(self.staged(id)?).await?;
            let stream: ByteStream<'static> = Box::pin(
                tokio_util::io::ReaderStream::with_capacity(file.take(len), 256 * 1024),
            );
            Ok(stream)
        })
    }

    fn write_object<'a>(
        &'a self,
        id: &'a str,
        mut body: ByteStream<'a>,
    ) -> ObjectFuture<'a, (u64, [u8; 32])> {
        Box::pin(async move {
            let target = self.object(id)?;
            let dir = target.parent().map(Path::to_path_buf).unwrap_or_default();
            tokio::fs::create_dir_all(&dir).await?;
            let temp = dir.join(format!("{id}.tmp"));
            let mut file = tokio::io::BufWriter::with_capacity(
                WRITE_BATCH,
                tokio::fs::File::create(&temp).await?,
            );
            let mut ctx = Context::new(&SHA256);
            let mut size = 0u64;
            while let Some(chunk) = body.next().await {
                let chunk = chunk?;
                file.write_all(&chunk).await?;
                ctx.update(&chunk);
                size += chunk.len() as u64;
            }
            file.flush().await?;
            file.get_ref().sync_all().await?;
            drop(file);
            tokio::fs::rename(&temp, &target).await?;
            sync_dir(&dir).await?;
            let mut sha256 = [0u8; 32];
            sha256.copy_from_slice(ctx.finish().as_ref());
            Ok((size, sha256))
        })
    }

    fn delete_staged<'a>(&'a self, id: &'a str, _staging: &'a [u8]) -> ObjectFuture<'a, ()> {
        Box::pin(async move { remove_if_present(&self.staged(id)?).await })
    }

    fn delete_object<'a>(&'a self, id: &'a str) -> ObjectFuture<'a, ()> {
        Box::pin(async move { remove_if_present(&self.object(id)?).await })
    }
}

async fn remove_if_present(path: &Path) -> io::Result<()> {
    match tokio::fs::remove_file(path).await {
        Err(err) if err.kind() == io::ErrorKind::NotFound => Ok(()),
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_that_are_not_hex_never_become_paths() {
        for bad in [
            "../../etc/passwd",
            "abc",
            "ABCDEF0123",
            "abcd/efgh12",
            "",
            "0123456789abcdef\0",
        ] {
            assert!(checked(bad).is_err(), "{bad:?}");
        }
        assert!(checked("0123456789abcdef").is_ok());
    }

    #[tokio::test]
    async fn append_truncate_commit_read() {
        let dir = tempfile::tempdir().unwrap();
        let store = LocalObjects::new(dir.path()).unwrap();
        let body = |parts: Vec<&'static [u8]>| -> ByteStream<'static> {
            Box::pin(futures_util::stream::iter(
                parts.into_iter().map(|p| Ok(Bytes::from_static(p))),
            ))
        };
        let id = "00112233445566778899aabbccddeeff";
        let first = store
            .append(id, 0, &[], 11, body(vec![b"hello ", b"world"]))
            .await
            .unwrap();
        assert_eq!(first.written, 11);
        // A crash left junk past offset 6: the next append discards it.
        let second = store
            .append(id, 6, &[], 5, body(vec![b"there"]))
            .await
            .unwrap();
        assert_eq!(second.written, 5);
        let size = store.commit(id, &[], 11).await.unwrap();
        assert_eq!(size, 11);
        assert!(dir.path().join("objects/00/11").join(id).exists());
        // Committing again (an interrupted commit being retried) is harmless.
        assert_eq!(store.commit(id, &[], 11).await.unwrap(), 11);
        let mut stream = store.read(id, 6, 11).await.unwrap();
        let mut got = Vec::new();
        while let Some(chunk) = stream.next().await {
            got.extend_from_slice(&chunk.unwrap());
        }
        assert_eq!(got, b"there");
    }
}
