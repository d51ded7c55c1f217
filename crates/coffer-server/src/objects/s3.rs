//! Objects in an S3-compatible store (AWS S3, Garage, MinIO, Ceph RGW …)
//! through the `object_store` crate.
//!
//! Layout under the configured prefix:
//!
//! ```text
//! objects/<id>                 committed objects (and, briefly, the sealed
//!                              staging of a server-encrypted upload)
//! staging/<id>/tail-<offset>   the staged bytes past the last whole part
//! ```
//!
//! An upload is staged as an S3 multipart upload whose destination is
//! `objects/<id>`, in parts of a fixed size chosen when it begins (at least
//! 8 MiB, larger for uploads that would otherwise need more than 9 000
//! parts), so memory per upload stays one part whatever the file's size.
//! Bytes past the last whole part wait in a small *tail* object, named by
//! the offset it ends at, and go into the next part when more bytes come.
//! The multipart id and the parts' ETags are the staging record, which the
//! caller stores with the offset in the database; a node that dies after
//! sending a part but before the offset moved leaves a part that the next
//! append overwrites (same part number) or the completion leaves out, and a
//! tail nobody names (removed by the next append).
//!
//! Committing completes the multipart upload; nothing is copied. A retried
//! commit that finds the multipart upload already gone accepts the object
//! if it has the expected length. Whether an object counts as committed is
//! decided by the database alone: this module never relies on conditional
//! writes, which Garage ignores.

use std::io;
use std::sync::Arc;

use bytes::Bytes;
use futures_util::{StreamExt, TryStreamExt};
use object_store::aws::{AmazonS3, AmazonS3Builder};
use object_store::multipart::{MultipartStore, PartId};
use object_store::path::Path;
use object_store::{
    GetOptions, GetRange, ObjectStore as _, ObjectStoreExt as _, PutPayload, WriteMultipart,
};
use serde::{Deserialize, Serialize};

use super::{Appended, ByteStream, ObjectFuture, ObjectStore, checked};

/// Smallest part: S3 refuses parts under 5 MiB (but the last).
const MIN_PART: u64 = 8 * 1024 * 1024;
/// S3 allows 10 000 parts; leave room for the overhead of server-side
/// encryption, which makes the staged bytes a little longer than declared.
const MAX_PARTS: u64 = 9_000;
/// Parts in flight at once when writing a whole object.
const WRITE_CONCURRENCY: usize = 2;

/// How to reach the bucket (the `[objects]` section of `config.toml`).
#[derive(Clone, Debug, Default)]
pub struct S3Settings {
    /// `http(s)://host:port` of the S3 API; AWS when empty.
    pub endpoint: String,
    /// Bucket name.
    pub bucket: String,
    /// Region (Garage's default is `garage`).
    pub region: String,
    /// Key prefix inside the bucket, so several deployments can share one.
    pub prefix: String,
    /// Access key id; from `AWS_ACCESS_KEY_ID` when empty.
    pub access_key_id: String,
    /// Secret key; from `AWS_SECRET_ACCESS_KEY` when empty.
    pub secret_access_key: secrecy::SecretString,
    /// Allow `http://` endpoints (loopback test stores only).
    pub allow_http: bool,
}

/// Objects in an S3 bucket.
pub struct S3Objects {
    store: Arc<AmazonS3>,
    prefix: String,
}

/// The staging record of one upload (JSON in the `uploads.staging` column).
#[derive(Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
struct Staging {
    /// The multipart upload's id.
    multipart: String,
    /// Bytes per part (all but the last).
    part_size: u64,
    /// ETags of the whole parts sent so far, by part index.
    parts: Vec<String>,
}

impl Staging {
    fn decode(bytes: &[u8]) -> io::Result<Self> {
        serde_json::from_slice(bytes).map_err(|err| {
            io::Error::new(
                io::ErrorKind::InvalidData,
                format!("bad staging record: {err}"),
            )
        })
    }

    fn encode(&self) -> Vec<u8> {
        serde_json::to_vec(self).unwrap_or_default()
    }
}

/// The part size for about `length` bytes: at least [`MIN_PART`], whole
/// MiB, and few enough parts.
fn part_size(length: u64) -> u64 {
    let needed = length.div_ceil(MAX_PARTS);
    needed
        .div_ceil(1 << 20)
        .saturating_mul(1 << 20)
        .max(MIN_PART)
}

fn invalid(message: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, message.to_string())
}

impl S3Objects {
    /// Connects to the bucket described by `settings` (nothing is sent
    /// until the first request; [`Self::check`] sends one).
    pub fn new(settings: &S3Settings) -> io::Result<Self> {
        use secrecy::ExposeSecret as _;
        let mut builder = AmazonS3Builder::from_env()
            .with_bucket_name(&settings.bucket)
            .with_allow_http(settings.allow_http);
        if !settings.endpoint.is_empty() {
            builder = builder.with_endpoint(&settings.endpoint);
        }
        if !settings.region.is_empty() {
            builder = builder.with_region(&settings.region);
        }
        if !settings.access_key_id.is_empty() {
            builder = builder.with_access_key_id(&settings.access_key_id);
        }
        let secret = settings.secret_access_key.expose_secret();
        if !secret.is_empty() {
            builder = builder.with_secret_access_key(secret);
        }
        let store = builder.build().map_err(io::Error::other)?;
        let prefix = settings.prefix.trim_matches('/').to_string();
        Ok(Self {
            store: Arc::new(store),
            prefix,
        })
    }

    /// Lists the prefix once, so a wrong endpoint, bucket or key fails at
    /// start-up rather than at the first upload.
    pub async fn check(&self) -> io::Result<()> {
        let prefix = self.path("objects")?;
        self.store
            .list_with_delimiter(Some(&prefix))
            .await
            .map(|_| ())
            .map_err(io::Error::from)
    }

    fn path(&self, key: &str) -> io::Result<Path> {
        let full = if self.prefix.is_empty() {
            key.to_string()
        } else {
            format!("{}/{key}", self.prefix)
        };
        Path::parse(full).map_err(|err| io::Error::new(io::ErrorKind::InvalidInput, err))
    }

    fn object(&self, id: &str) -> io::Result<Path> {
        self.path(&format!("objects/{}", checked(id)?))
    }

    fn staging_dir(&self, id: &str) -> io::Result<Path> {
        self.path(&format!("staging/{}", checked(id)?))
    }

    fn tail(&self, id: &str, end: u64) -> io::Result<Path> {
        self.path(&format!("staging/{}/tail-{end}", checked(id)?))
    }

    /// Removes the staging objects of `id` except the tail ending at
    /// `keep` (the one the recorded offset names).
    async fn sweep_tails(&self, id: &str, keep: Option<u64>) -> io::Result<()> {
        let kept = keep.map(|end| self.tail(id, end)).transpose()?;
        let mut listed = self.store.list(Some(&self.staging_dir(id)?));
        while let Some(meta) = listed.next().await {
            let meta = meta?;
            if Some(&meta.location) != kept.as_ref() {
                self.delete_quietly(&meta.location).await?;
            }
        }
        Ok(())
    }

    async fn delete_quietly(&self, path: &Path) -> io::Result<()> {
        match self.store.delete(path).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(err) => Err(err.into()),
        }
    }

    /// The tail object ending at `end`, which must hold `len` bytes.
    async fn read_tail(&self, id: &str, end: u64, len: u64) -> io::Result<Bytes> {
        if len == 0 {
            return Ok(Bytes::new());
        }
        let bytes = self.store.get(&self.tail(id, end)?).await?.bytes().await?;
        if bytes.len() as u64 != len {
            return Err(invalid("staged tail has the wrong length"));
        }
        Ok(bytes)
    }

    /// Completes the multipart upload of `len` staged bytes into
    /// `objects/<id>` (idempotent).
    async fn finish_staging(&self, id: &str, staging: &[u8], len: u64) -> io::Result<()> {
        let record = Staging::decode(staging)?;
        let path = self.object(id)?;
        let whole = len / record.part_size;
        if record.parts.len() as u64 != whole {
            return self.already_finished(&path, len).await;
        }
        let mut parts: Vec<PartId> = record
            .parts
            .iter()
            .map(|etag| PartId {
                content_id: etag.clone(),
            })
            .collect();
        let tail_len = len - whole * record.part_size;
        let multipart = record.multipart.clone();
        if len == 0 {
            // S3 wants at least one part; an empty object is simply put.
            let _ = self.store.abort_multipart(&path, &multipart).await;
            self.store.put(&path, PutPayload::default()).await?;
            return Ok(());
        }
        let completed: io::Result<()> = async {
            if tail_len > 0 {
                let tail = self.read_tail(id, len, tail_len).await?;
                let index = parts.len();
                parts.push(
                    self.store
                        .put_part(&path, &multipart, index, PutPayload::from(tail))
                        .await?,
                );
            }
            self.store
                .complete_multipart(&path, &multipart, parts)
                .await?;
            Ok(())
        }
        .await;
        if let Err(err) = completed {
            // An interrupted earlier commit may have completed it already
            // (its tail and multipart upload are gone then); otherwise the
            // failure itself is the answer, not a guess about the object.
            return self.already_finished(&path, len).await.map_err(|_| err);
        }
        self.sweep_tails(id, None).await
    }

    /// After a failed completion step: fine only if an earlier, interrupted
    /// commit already put an object of the right length in place.
    async fn already_finished(&self, path: &Path, len: u64) -> io::Result<()> {
        match self.store.head(path).await {
            Ok(meta) if meta.size == len => Ok(()),
            Ok(_) => Err(invalid("staged object has the wrong length")),
            Err(object_store::Error::NotFound { .. }) => {
                Err(invalid("staged upload is missing from the object store"))
            }
            Err(err) => Err(err.into()),
        }
    }
}

/// Collects body bytes into parts of `part_size`, without copying them.
struct PartBuffer {
    part_size: u64,
    chunks: Vec<Bytes>,
    len: u64,
}

impl PartBuffer {
    /// Adds `chunk`; returns a full part when one is complete, and what is
    /// left of `chunk` after it.
    fn push(&mut self, chunk: Bytes) -> (Option<PutPayload>, Bytes) {
        let room = self.part_size - self.len;
        if (chunk.len() as u64) < room {
            self.len += chunk.len() as u64;
            self.chunks.push(chunk);
            return (None, Bytes::new());
        }
        let mut chunk = chunk;
        let rest = chunk.split_off(room as usize);
        self.chunks.push(chunk);
        self.len = 0;
        let part: PutPayload = std::mem::take(&mut self.chunks).into_iter().collect();
        (Some(part), rest)
    }

    fn take(&mut self) -> PutPayload {
        self.len = 0;
        std::mem::take(&mut self.chunks).into_iter().collect()
    }
}

impl ObjectStore for S3Objects {
    fn backend(&self) -> &'static str {
        "s3"
    }

    fn begin<'a>(&'a self, id: &'a str, length: u64) -> ObjectFuture<'a, Vec<u8>> {
        Box::pin(async move {
            let multipart = self.store.create_multipart(&self.object(id)?).await?;
            Ok(Staging {
                multipart,
                part_size: part_size(length),
                parts: Vec::new(),
            }
            .encode())
        })
    }

    fn append<'a>(
        &'a self,
        id: &'a str,
        offset: u64,
        staging: &'a [u8],
        // Parts are sized by the store; nothing to reserve.
        _expected: u64,
        mut body: ByteStream<'a>,
    ) -> ObjectFuture<'a, Appended> {
        Box::pin(async move {
            let mut record = Staging::decode(staging)?;
            let path = self.object(id)?;
            let whole = offset / record.part_size;
            if record.parts.len() as u64 != whole {
                return Err(invalid("staging record does not match the offset"));
            }
            let tail_len = offset - whole * record.part_size;
            let tail = self.read_tail(id, offset, tail_len).await?;
            self.sweep_tails(id, (tail_len > 0).then_some(offset))
                .await?;
            let mut buffer = PartBuffer {
                part_size: record.part_size,
                chunks: Vec::new(),
                len: 0,
            };
            let _ = buffer.push(tail);
            let mut written = 0u64;
            while let Some(chunk) = body.next().await {
                let mut chunk = chunk?;
                written += chunk.len() as u64;
                while !chunk.is_empty() {
                    let (part, rest) = buffer.push(chunk);
                    chunk = rest;
                    if let Some(part) = part {
                        let index = record.parts.len();
                        let sent = self
                            .store
                            .put_part(&path, &record.multipart, index, part)
                            .await?;
                        record.parts.push(sent.content_id);
                    }
                }
            }
            let end = offset + written;
            tracing::debug!(
                upload = id,
                offset,
                written,
                parts = record.parts.len(),
                tail = buffer.len,
                "staged in S3"
            );
            if buffer.len > 0 {
                self.store.put(&self.tail(id, end)?, buffer.take()).await?;
            }
            Ok(Appended {
                written,
                staging: record.encode(),
            })
        })
    }

    fn discard_after<'a>(&'a self, _id: &'a str, _len: u64) -> ObjectFuture<'a, ()> {
        // Parts past the recorded offset are overwritten by the next append
        // or left out of the completion; stray tails go with the next sweep.
        Box::pin(async { Ok(()) })
    }

    fn commit<'a>(&'a self, id: &'a str, staging: &'a [u8], len: u64) -> ObjectFuture<'a, u64> {
        Box::pin(async move {
            self.finish_staging(id, staging, len).await?;
            Ok(self.store.head(&self.object(id)?).await?.size)
        })
    }

    fn read<'a>(
        &'a self,
        object: &'a str,
        start: u64,
        end: u64,
    ) -> ObjectFuture<'a, ByteStream<'static>> {
        Box::pin(async move {
            if start >= end {
                // S3 refuses an empty range; there is nothing to fetch.
                let empty: ByteStream<'static> = Box::pin(futures_util::stream::empty());
                return Ok(empty);
            }
            let options = GetOptions {
                range: Some(GetRange::Bounded(start..end)),
                ..GetOptions::default()
            };
            let result = self.store.get_opts(&self.object(object)?, options).await?;
            let stream: ByteStream<'static> =
                Box::pin(result.into_stream().map_err(io::Error::from));
            Ok(stream)
        })
    }

    fn read_staged<'a>(
        &'a self,
        id: &'a str,
        staging: &'a [u8],
        len: u64,
    ) -> ObjectFuture<'a, ByteStream<'static>> {
        Box::pin(async move {
            // Parts of an unfinished multipart upload cannot be read back:
            // complete it under the upload's id (removed by delete_staged).
            self.finish_staging(id, staging, len).await?;
            self.read(id, 0, len).await
        })
    }

    fn write_object<'a>(
        &'a self,
        id: &'a str,
        mut body: ByteStream<'a>,
    ) -> ObjectFuture<'a, (u64, [u8; 32])> {
        Box::pin(async move {
            let upload = self.store.put_multipart(&self.object(id)?).await?;
            let mut writer = WriteMultipart::new_with_chunk_size(upload, MIN_PART as usize);
            let mut ctx = aws_lc_rs::digest::Context::new(&aws_lc_rs::digest::SHA256);
            let mut size = 0u64;
            let written: io::Result<()> = async {
                while let Some(chunk) = body.next().await {
                    let chunk = chunk?;
                    ctx.update(&chunk);
                    size += chunk.len() as u64;
                    writer.wait_for_capacity(WRITE_CONCURRENCY).await?;
                    writer.put(chunk);
                }
                Ok(())
            }
            .await;
            if let Err(err) = written {
                let _ = writer.abort().await;
                return Err(err);
            }
            writer.finish().await?;
            let mut sha256 = [0u8; 32];
            sha256.copy_from_slice(ctx.finish().as_ref());
            Ok((size, sha256))
        })
    }

    fn delete_staged<'a>(&'a self, id: &'a str, staging: &'a [u8]) -> ObjectFuture<'a, ()> {
        Box::pin(async move {
            let path = self.object(id)?;
            if let Ok(record) = Staging::decode(staging) {
                // Already completed or aborted is fine.
                let _ = self.store.abort_multipart(&path, &record.multipart).await;
            }
            self.sweep_tails(id, None).await?;
            self.delete_quietly(&path).await
        })
    }

    fn delete_object<'a>(&'a self, id: &'a str) -> ObjectFuture<'a, ()> {
        Box::pin(async move { self.delete_quietly(&self.object(id)?).await })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parts_are_big_enough_and_few_enough() {
        assert_eq!(part_size(0), MIN_PART);
        assert_eq!(part_size(1 << 30), MIN_PART);
        let huge = 5u64 << 40;
        let size = part_size(huge);
        assert!(huge.div_ceil(size) <= MAX_PARTS);
        assert_eq!(size % (1 << 20), 0);
    }

    #[test]
    fn the_part_buffer_cuts_exact_parts_without_losing_bytes() {
        let mut buffer = PartBuffer {
            part_size: 10,
            chunks: Vec::new(),
            len: 0,
        };
        let mut parts = Vec::new();
        for chunk in [&b"abcd"[..], b"efghijklmnop", b"qrstuvwxyz0123"] {
            let mut chunk = Bytes::copy_from_slice(chunk);
            while !chunk.is_empty() {
                let (part, rest) = buffer.push(chunk);
                chunk = rest;
                if let Some(part) = part {
                    parts.push(part.iter().flat_map(|b| b.to_vec()).collect::<Vec<u8>>());
                }
            }
        }
        assert_eq!(
            parts,
            vec![
                b"abcdefghij".to_vec(),
                b"klmnopqrst".to_vec(),
                b"uvwxyz0123".to_vec()
            ]
        );
        assert_eq!(buffer.len, 0);
        let (part, rest) = buffer.push(Bytes::from_static(b"tail"));
        assert!(part.is_none() && rest.is_empty());
        let rest: Vec<u8> = buffer.take().iter().flat_map(|b| b.to_vec()).collect();
        assert_eq!(rest, b"tail");
    }

    #[test]
    fn a_garbled_staging_record_is_an_error_not_a_panic() {
        assert!(Staging::decode(b"{not json").is_err());
        let record = Staging {
            multipart: "m".into(),
            part_size: MIN_PART,
            parts: vec!["e1".into()],
        };
        assert_eq!(Staging::decode(&record.encode()).unwrap(), record);
    }
}
