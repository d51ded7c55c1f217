//! The server's own encryption of plain (non-E2EE) uploads.
//!
//! While an upload is unfinished, each request body is staged as sealed
//! records under the upload's staging key, so the object store never holds
//! its plaintext:
//!
//! ```text
//! record = BE32(n) || nonce (12, random) || AES-256-GCM(staging key, nonce,
//!          aad = "coffer/v1/staged\0" || upload id || 0 || BE64(plaintext offset), n bytes)
//! ```
//!
//! The offset in the AAD pins each record to its place. On commit the
//! records are opened in order and re-encrypted into the coffer format under
//! a fresh DEK (the file key; the server's identity signs), and the DEK is
//! stored wrapped by the current KEK. Downloads decrypt on the fly and are
//! verified by the format (header MAC, STREAM tags, signed trailer).

use aws_lc_rs::aead::{AES_256_GCM, Aad, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};
use bytes::{Bytes, BytesMut};
use coffer_format::async_io::{AsyncDecryptor, AsyncEncryptor, read_header};
use coffer_format::seek::RangeReader;
use coffer_format::{EncryptOptions, FileKey, Metadata, Stanzas, prepare};
use futures_util::StreamExt;
use std::sync::Arc;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_util::io::{ReaderStream, StreamReader};

use crate::keyring::Key;
use crate::objects::{ByteStream, ObjectStore};
use crate::store::Upload;

/// Largest plaintext in one staged record.
const MAX_RECORD: usize = 1 << 20;
const LEN_PREFIX: usize = 4;
const TAG_LEN: usize = 16;

fn record_aad(upload_id: &str, offset: u64) -> Vec<u8> {
    let mut aad = b"coffer/v1/staged\0".to_vec();
    aad.extend_from_slice(upload_id.as_bytes());
    aad.push(0);
    aad.extend_from_slice(&offset.to_be_bytes());
    aad
}

fn aead(key: &Key) -> std::io::Result<LessSafeKey> {
    UnboundKey::new(&AES_256_GCM, key.as_ref())
        .map(LessSafeKey::new)
        .map_err(|_| std::io::Error::other("bad staging key"))
}

struct Sealer {
    key: LessSafeKey,
    upload_id: String,
    offset: u64,
}

impl Sealer {
    /// Seals `plain` as records of at most `MAX_RECORD` bytes, encrypting in
    /// place in the output buffer (one copy of the plaintext).
    fn seal(&mut self, plain: &[u8]) -> std::io::Result<Bytes> {
        let records = plain.len().div_ceil(MAX_RECORD);
        let mut out =
            BytesMut::with_capacity(plain.len() + records * (LEN_PREFIX + NONCE_LEN + TAG_LEN));
        for piece in plain.chunks(MAX_RECORD) {
            let mut nonce = [0u8; NONCE_LEN];
            aws_lc_rs::rand::fill(&mut nonce).map_err(|_| std::io::Error::other("rng"))?;
            // MAX_RECORD fits in u32.
            out.extend_from_slice(&(piece.len() as u32).to_be_bytes());
            out.extend_from_slice(&nonce);
            let start = out.len();
            out.extend_from_slice(piece);
            let tag = self
                .key
                .seal_in_place_separate_tag(
                    Nonce::assume_unique_for_key(nonce),
                    Aad::from(record_aad(&self.upload_id, self.offset)),
                    &mut out[start..],
                )
                .map_err(|_| std::io::Error::other("sealing failed"))?;
            out.extend_from_slice(tag.as_ref());
            self.offset += piece.len() as u64;
        }
        Ok(out.freeze())
    }
}

/// Seals `body` into staged records for `upload_id`, starting at plaintext
/// `offset`.
pub fn seal_body<'a>(
    body: ByteStream<'a>,
    key: &Key,
    upload_id: &str,
    offset: u64,
) -> std::io::Result<ByteStream<'a>> {
    let mut sealer = Sealer {
        key: aead(key)?,
        upload_id: upload_id.to_string(),
        offset,
    };
    Ok(Box::pin(body.map(move |chunk| {
        chunk.and_then(|chunk| sealer.seal(&chunk))
    })))
}

/// The result of turning staged records into a stored object.
pub struct Converted {
    /// The new DEK (the object's coffer file key).
    pub dek: Key,
    /// Size of the stored object.
    pub stored_size: u64,
    /// Plaintext size.
    pub plain_size: u64,
    /// BLAKE3 of the plaintext (the file's content identity).
    pub plain_blake3: [u8; 32],
}

/// Opens the staged records of `upload_id` (`staged` yields exactly its
/// staged bytes) and re-encrypts them into the coffer format, written by
/// `write`. Fails if any record is missing, moved or altered.
pub async fn convert(
    objects: &dyn ObjectStore,
    staging_key: &Key,
    upload: &Upload,
    file_id: &str,
    signer: &coffer_format::Identity,
) -> anyhow::Result<Converted> {
    let staged = objects
        .read_staged(&upload.id, &upload.staging, upload.staged_len)
        .await?;
    let (upload_id, expected_len, staged_len) =
        (upload.id.as_str(), upload.length, upload.staged_len);
    let me = [signer.public().clone()];
    let mut options = EncryptOptions::new(&me, signer);
    options.metadata = Metadata {
        size: Some(expected_len),
        ..Metadata::default()
    };
    let prepared = prepare(options)?;
    let dek: Key = zeroize::Zeroizing::new(*prepared.file_key().expose());
    let (writer, reader) = tokio::io::duplex(1 << 20);
    let key = aead(staging_key)?;
    let produce = async move {
        let mut out = AsyncEncryptor::new(prepared, writer, Stanzas::Detached).await?;
        let mut input = StreamReader::new(staged);
        let mut digest = blake3::Hasher::new();
        let mut offset = 0u64;
        let mut consumed = 0u64;
        let mut prefix = [0u8; LEN_PREFIX];
        // Exactly `staged_len` bytes of whole records: a short or partial
        // record is an error, never a silent end.
        while consumed < staged_len {
            input.read_exact(&mut prefix).await?;
            let len = u32::from_be_bytes(prefix) as usize;
            anyhow::ensure!(len <= MAX_RECORD, "staged record too long");
            let mut nonce = [0u8; NONCE_LEN];
            input.read_exact(&mut nonce).await?;
            let mut body = zeroize::Zeroizing::new(vec![0u8; len + TAG_LEN]);
            input.read_exact(&mut body).await?;
            let plain = key
                .open_in_place(
                    Nonce::assume_unique_for_key(nonce),
                    Aad::from(record_aad(upload_id, offset)),
                    &mut body,
                )
                .map_err(|_| anyhow::anyhow!("staged record at offset {offset} fails to open"))?;
            digest.update(plain);
            out.write_all(plain).await?;
            offset += len as u64;
            consumed += (LEN_PREFIX + NONCE_LEN + len + TAG_LEN) as u64;
        }
        anyhow::ensure!(
            offset == expected_len,
            "staged {offset} bytes, expected {expected_len}"
        );
        out.shutdown().await?;
        Ok::<_, anyhow::Error>((offset, *digest.finalize().as_bytes()))
    };
    let consume = objects.write_object(
        file_id,
        Box::pin(ReaderStream::with_capacity(reader, 256 * 1024)),
    );
    let ((plain_size, plain_blake3), (stored_size, _)) = tokio::try_join!(produce, async {
        consume.await.map_err(anyhow::Error::from)
    })?;
    Ok(Converted {
        dek,
        stored_size,
        plain_size,
        plain_blake3,
    })
}

/// The plaintext bytes `start..end` of a stored object, as a stream.
/// Header and key are checked before this returns; chunks and the
/// signature as the stream runs (a failure there ends the stream with an
/// error). A range from the start streams the object through the
/// decryptor; any other reads only the chunks it needs (`seek_range`),
/// so its cost does not grow with the offset.
pub async fn decrypt_range(
    objects: Arc<dyn ObjectStore>,
    object_id: &str,
    stored_size: u64,
    dek: &Key,
    start: u64,
    end: u64,
) -> anyhow::Result<ByteStream<'static>> {
    if start > 0 {
        return seek_range(objects, object_id, stored_size, dek, start, end).await;
    }
    let stored = objects.read(object_id, 0, stored_size).await?;
    let mut reader = StreamReader::new(stored);
    let header = read_header(&mut reader).await?;
    let opened = header.open_with_file_key(FileKey::from_bytes(**dek))?;
    let plain = AsyncDecryptor::new(opened, reader)?;
    Ok(Box::pin(ReaderStream::with_capacity(
        plain.take(end.saturating_sub(start)),
        256 * 1024,
    )))
}

/// Plaintext handed from the range reader's thread at a time.
const RANGE_PIECE: usize = 256 * 1024;

/// A range through the format's [`RangeReader`], on a blocking thread: it
/// reads the header, verifies the file's end and signature, then only the
/// chunks (and tree entries) covering `start..end`, each checked against
/// the signed root before its plaintext is released.
async fn seek_range(
    objects: Arc<dyn ObjectStore>,
    object_id: &str,
    stored_size: u64,
    dek: &Key,
    start: u64,
    end: u64,
) -> anyhow::Result<ByteStream<'static>> {
    let source = ObjectSource::new(objects, object_id, stored_size);
    let file_key = FileKey::from_bytes(**dek);
    let (tx, rx) = tokio::sync::mpsc::channel::<std::io::Result<Bytes>>(4);
    let (ready_tx, ready_rx) = tokio::sync::oneshot::channel::<anyhow::Result<()>>();
    tokio::task::spawn_blocking(move || {
        let opened = coffer_format::Header::read_from(&mut std::io::BufReader::new(source.clone()))
            .and_then(|header| header.open_with_file_key(file_key));
        let reader = opened.and_then(|opened| RangeReader::from_opened(source, opened));
        let mut reader = match reader {
            Ok(reader) => {
                let _ = ready_tx.send(Ok(()));
                reader
            }
            Err(err) => {
                let _ = ready_tx.send(Err(err.into()));
                return;
            }
        };
        let mut out = PieceWriter {
            tx: &tx,
            piece: Vec::with_capacity(RANGE_PIECE),
        };
        let copied = reader
            .copy_range(start, end, &mut out)
            .map_err(std::io::Error::other)
            .and_then(|()| out.flush_piece());
        if let Err(err) = copied {
            let _ = tx.blocking_send(Err(err));
        }
    });
    ready_rx.await??;
    Ok(Box::pin(futures_util::stream::unfold(
        rx,
        |mut rx| async move { rx.recv().await.map(|item| (item, rx)) },
    )))
}

/// Hands written plaintext to the response in pieces.
struct PieceWriter<'a> {
    tx: &'a tokio::sync::mpsc::Sender<std::io::Result<Bytes>>,
    piece: Vec<u8>,
}

impl PieceWriter<'_> {
    fn flush_piece(&mut self) -> std::io::Result<()> {
        if self.piece.is_empty() {
            return Ok(());
        }
        let piece = std::mem::replace(&mut self.piece, Vec::with_capacity(RANGE_PIECE));
        self.tx
            .blocking_send(Ok(Bytes::from(piece)))
            .map_err(|_| std::io::Error::other("the download was dropped"))
    }
}

impl std::io::Write for PieceWriter<'_> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let room = RANGE_PIECE - self.piece.len();
        let n = buf.len().min(room);
        self.piece.extend_from_slice(&buf[..n]);
        if self.piece.len() == RANGE_PIECE {
            self.flush_piece()?;
        }
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// An object in the store as a blocking `Read + Seek`, for the range
/// reader's thread: each read fetches (at least) a block at the position
/// with a ranged read of the object store.
#[derive(Clone)]
struct ObjectSource {
    objects: Arc<dyn ObjectStore>,
    id: String,
    len: u64,
    pos: u64,
    runtime: tokio::runtime::Handle,
    /// The last block fetched and where it starts.
    block: (u64, Bytes),
}

/// Bytes fetched per object-store read.
const SOURCE_BLOCK: u64 = 1024 * 1024;

impl ObjectSource {
    fn new(objects: Arc<dyn ObjectStore>, id: &str, len: u64) -> Self {
        Self {
            objects,
            id: id.to_string(),
            len,
            pos: 0,
            runtime: tokio::runtime::Handle::current(),
            block: (0, Bytes::new()),
        }
    }

    fn fetch(&mut self, at: u64, want: u64) -> std::io::Result<()> {
        let end = (at + want.max(SOURCE_BLOCK)).min(self.len);
        let objects = self.objects.clone();
        let id = self.id.clone();
        let bytes = self.runtime.block_on(async move {
            let mut stream = objects.read(&id, at, end).await?;
            let mut out = BytesMut::with_capacity((end - at) as usize);
            while let Some(piece) = stream.next().await {
                out.extend_from_slice(&piece?);
            }
            Ok::<_, std::io::Error>(out.freeze())
        })?;
        self.block = (at, bytes);
        Ok(())
    }
}

impl std::io::Read for ObjectSource {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        if self.pos >= self.len || buf.is_empty() {
            return Ok(0);
        }
        let (start, block) = &self.block;
        let inside = self.pos >= *start && self.pos < start + block.len() as u64;
        if !inside {
            self.fetch(self.pos, buf.len() as u64)?;
        }
        let (start, block) = &self.block;
        let from = (self.pos - start) as usize;
        let n = buf.len().min(block.len() - from);
        if n == 0 {
            return Err(std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                "the object store returned less than asked",
            ));
        }
        buf[..n].copy_from_slice(&block[from..from + n]);
        self.pos += n as u64;
        Ok(n)
    }
}

impl std::io::Seek for ObjectSource {
    fn seek(&mut self, to: std::io::SeekFrom) -> std::io::Result<u64> {
        let pos = match to {
            std::io::SeekFrom::Start(n) => Some(n),
            std::io::SeekFrom::End(d) => self.len.checked_add_signed(d),
            std::io::SeekFrom::Current(d) => self.pos.checked_add_signed(d),
        };
        self.pos = pos.ok_or_else(|| {
            std::io::Error::new(std::io::ErrorKind::InvalidInput, "seek before the start")
        })?;
        Ok(self.pos)
    }
}
