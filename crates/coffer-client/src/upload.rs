//! End-to-end encrypted uploads over tus, resumable across dropped
//! connections and restarted clients.
//!
//! The file is encrypted on this machine (coffer format, stanzas detached:
//! the key wraps travel in `Upload-Metadata` and the server stores them per
//! user). Nothing but ciphertext, its length and the wraps leave the machine.
//!
//! **The file id is chosen here.** The client picks the new file's random
//! id, writes it into the signed header and asks the server to use it
//! (`coffer-file-id` in `Upload-Metadata`), so a download can check that
//! the server answered with the file it was asked for (docs/THREATS.md).
//!
//! **One pass per byte.** A producer thread reads the file in units, each
//! straight into its place in the buffer that is sent (one vectored read
//! into the chunks' slots, no copy), encrypts it there in place, and hashes
//! it into the content tree as it goes ([`coffer_format::UnitEncoder`]);
//! the root it ends with is what the server's receipt must name. Nothing
//! hashes the data a second time. Send buffers come back once sent and are
//! reused.
//!
//! **Resuming without a ciphertext spool.** The STREAM payload is a
//! deterministic function of (file key, header, plaintext). So a resumed
//! upload reopens the header it created (through the owner's own wrap, kept
//! in the resume record: the record holds no secret), re-encrypts from the
//! start and sends only the bytes past the server's offset.
//!
//! That is only sound if the plaintext is unchanged: encrypting *different*
//! plaintext under the same key and counters is the nonce reuse the STREAM
//! construction forbids. So the record's unit log holds, for each unit of
//! `UNIT_LEN` plaintext bytes, the unit's digest (the tree root over every
//! chunk up to its end), appended and **synced before** any byte of that
//! unit is sent. On a resume the format's unit encoder compares each
//! re-encrypted unit with its logged digest and refuses to hand out one
//! that differs; the old upload is abandoned and the file is uploaded
//! afresh under a new key. An exclusive lock on the record, held for the
//! whole upload, keeps two runs (an overlapping cron job) from ever
//! encrypting under one key at once.

use std::fs::File;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use coffer_format::{
    EncryptOptions, Header, Identity, Metadata, PublicIdentity, Stanza, UnitDigest, UnitEncoder,
};
use coffer_proto::receipt::SignedReceipt;
use futures_util::StreamExt as _;
use http_body_util::{BodyExt, StreamBody};
use hyper::body::Frame;
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;

use crate::fsutil::{hex, replace_private, sha256};
use crate::progress::Progress;
use crate::session::{Session, decode_b64, error_of};
use crate::{Error, Result};

/// Plaintext bytes per resume unit (a multiple of the chunk size).
const UNIT_LEN: u64 = 4 * 1024 * 1024;
/// Ciphertext bytes per message between the encrypting thread and the
/// network task; with `PIPE_DEPTH` this bounds the memory in flight.
const PIPE_PIECE: usize = 1024 * 1024;
const PIPE_DEPTH: usize = 8;

/// How to upload.
#[derive(Clone, Debug)]
pub struct PutOptions {
    /// Users who get a wrap besides the owner (already verified keys).
    pub recipients: Vec<(String, PublicIdentity)>,
    /// Relative path kept in the encrypted metadata (`put -r`).
    pub relative_path: Option<String>,
    /// The name kept in the encrypted metadata instead of the source's own
    /// (`put - --name`, where the source is a spool of standard input).
    pub name: Option<String>,
    /// Plaintext bytes per chunk.
    pub chunk_size: u32,
    /// Bytes per PATCH request: each ends with the server syncing to disk,
    /// so this is also the most a server crash can lose.
    pub patch_len: u64,
    /// How many times to reconnect and resume before giving up.
    pub retries: u32,
    /// Where resume records live.
    pub state_dir: PathBuf,
    /// Wait for another run uploading the same file (else fail at once).
    pub wait_for_lock: bool,
    /// BLAKE3 of the plaintext ([`content_blake3`]), kept in the encrypted
    /// metadata so that a later `put --skip-existing` recognises the file.
    pub content_blake3: Option<String>,
    /// Seconds the server keeps the file (`None`: the server's default).
    pub expires_in: Option<u64>,
    /// Have the server delete the file once every recipient acknowledged
    /// it (`inbox`): a one-shot transfer.
    pub delete_when_received: bool,
}

impl PutOptions {
    /// Defaults: 64 KiB chunks, 256 MiB per request, 8 retries.
    pub fn new(state_dir: PathBuf) -> Self {
        Self {
            recipients: Vec::new(),
            relative_path: None,
            name: None,
            chunk_size: coffer_format::header::DEFAULT_CHUNK_SIZE,
            patch_len: 256 * 1024 * 1024,
            retries: 8,
            state_dir,
            wait_for_lock: false,
            content_blake3: None,
            expires_in: None,
            delete_when_received: false,
        }
    }
}

/// A finished upload.
#[derive(Clone, Debug)]
pub struct PutOutcome {
    /// The new file's id (chosen by this client, bound into the header).
    pub file_id: String,
    /// The server's signed receipt, verified against the pinned identity.
    pub receipt: SignedReceipt,
    /// Plaintext bytes.
    pub plaintext_len: u64,
    /// Encrypted bytes stored.
    pub stored_len: u64,
    /// Ciphertext bytes that were already on the server from an earlier
    /// attempt (0 for a fresh upload).
    pub resumed_at: u64,
    /// The signed content root (the receipt names the same).
    pub root: [u8; 32],
    /// SHA-256 of the core header, to recognise this file later.
    pub header_hash: [u8; 32],
}

/// What identifies the version of a local file an upload was made from.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
struct SourceStamp {
    size: u64,
    mtime_ns: i128,
    inode: u64,
}

impl SourceStamp {
    fn of(meta: &std::fs::Metadata) -> Self {
        let mtime_ns = meta
            .modified()
            .ok()
            .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
            .map_or(0, |d| d.as_nanos() as i128);
        #[cfg(unix)]
        let inode = std::os::unix::fs::MetadataExt::ino(meta);
        #[cfg(not(unix))]
        let inode = 0;
        Self {
            size: meta.len(),
            mtime_ns,
            inode,
        }
    }
}

/// The resume record (see the module docs). No secrets: the header is
/// public and the owner's wrap opens only with the owner's identity.
#[derive(Clone, Debug, Serialize, Deserialize)]
struct Record {
    upload_path: String,
    /// The file id in the header (and the upload's id on the server).
    file_id: String,
    header: String,
    owner_stanza: String,
    source: SourceStamp,
    encoded_len: u64,
    unit_len: u64,
}

/// A record on disk (`<key>.json`, written once, synced) and its unit log
/// (`<key>.units`): one line per unit, `<hex digest> <ciphertext bytes
/// produced through this unit>`, appended and synced before the unit is
/// sent, so the log always vouches for everything the server may hold.
/// An append per unit keeps the cost flat however large the file.
struct RecordFile {
    path: PathBuf,
    record: Record,
    /// Digests of the units logged so far.
    units: Vec<UnitDigest>,
    /// Ciphertext bytes produced by the logged units: no byte past this
    /// was ever sent.
    covered: u64,
    /// Created on the server by this process and not sent to yet: at
    /// offset 0 by construction, so the first attempt needs no HEAD.
    created_now: bool,
}

impl RecordFile {
    fn new(path: PathBuf, record: Record) -> Result<Self> {
        let json = serde_json::to_vec(&record).map_err(|e| Error::Usage(e.to_string()))?;
        replace_private(&path, &json, true)?;
        replace_private(&units_path(&path), b"", true)?;
        Ok(Self {
            path,
            record,
            units: Vec::new(),
            covered: 0,
            created_now: true,
        })
    }

    /// Reads a record and its log; `None` if the record is unreadable.
    fn load(path: &Path) -> Option<Self> {
        let record = serde_json::from_slice::<Record>(&std::fs::read(path).ok()?).ok()?;
        let mut file = Self {
            path: path.to_path_buf(),
            record,
            units: Vec::new(),
            covered: 0,
            created_now: false,
        };
        file.reload_units();
        Some(file)
    }

    /// Re-reads the unit log, up to its first incomplete or malformed line
    /// (a crash mid-append leaves at most one).
    fn reload_units(&mut self) {
        let text = std::fs::read_to_string(units_path(&self.path)).unwrap_or_default();
        self.units.clear();
        self.covered = 0;
        for line in text.split_inclusive('\n') {
            let parsed = line
                .strip_suffix('\n')
                .and_then(|l| l.split_once(' '))
                .and_then(|(digest, covered)| {
                    Some((unhex32(digest)?, covered.parse::<u64>().ok()?))
                });
            let Some((digest, covered)) = parsed else {
                break;
            };
            if covered < self.covered {
                break;
            }
            self.units.push(digest);
            self.covered = covered;
        }
    }

    fn remove(&self) {
        let _ = std::fs::remove_file(&self.path);
        let _ = std::fs::remove_file(units_path(&self.path));
    }
}

fn unhex32(text: &str) -> Option<[u8; 32]> {
    if text.len() != 64 || !text.is_ascii() {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, byte) in out.iter_mut().enumerate() {
        *byte = u8::from_str_radix(&text[2 * i..2 * i + 2], 16).ok()?;
    }
    Some(out)
}

fn units_path(record: &Path) -> PathBuf {
    record.with_extension("units")
}

fn record_path(session: &Session, source: &Path, options: &PutOptions) -> PathBuf {
    let mut recipients: Vec<&str> = options.recipients.iter().map(|(u, _)| u.as_str()).collect();
    recipients.sort_unstable();
    let key = [
        session.endpoint().url.as_str(),
        session.user(),
        &source.to_string_lossy(),
        options.relative_path.as_deref().unwrap_or(""),
        &recipients.join(","),
    ]
    .join("\0");
    options
        .state_dir
        .join(format!("{}.json", hex(&sha256(key.as_bytes())[..16])))
}

/// The exclusive lock on a resume record, held for the whole upload: a
/// second run of the same upload (an overlapping cron job) must never
/// encrypt under the same key at the same time.
struct RecordLock {
    _file: File,
}

impl RecordLock {
    fn take(record: &Path, wait: bool) -> Result<Self> {
        let path = record.with_extension("lock");
        crate::fsutil::private_dir(path.parent().unwrap_or(Path::new(".")))?;
        let file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(Error::io(&path))?;
        if wait {
            file.lock().map_err(Error::io(&path))?;
        } else {
            match file.try_lock() {
                Ok(()) => {}
                Err(std::fs::TryLockError::WouldBlock) => return Err(Error::Busy(path)),
                Err(std::fs::TryLockError::Error(err)) => return Err(Error::io(&path)(err)),
            }
        }
        Ok(Self { _file: file })
    }
}

/// Uploads one file, resuming an earlier attempt at the same upload if its
/// record and server-side upload still exist and the file is unchanged.
pub async fn put(
    session: &mut Session,
    source: &Path,
    options: &PutOptions,
    progress: &dyn Progress,
) -> Result<PutOutcome> {
    let source = std::fs::canonicalize(source).map_err(Error::io(source))?;
    let path = record_path(session, &source, options);
    let lock_path = path.clone();
    let wait = options.wait_for_lock;
    let _lock = tokio::task::spawn_blocking(move || RecordLock::take(&lock_path, wait))
        .await
        .map_err(|e| Error::Usage(e.to_string()))??;
    match put_once(session, &source, &path, options, progress).await {
        Err(Error::SourceChanged(_)) => {
            // The abandoned upload was terminated; start over, new key.
            put_once(session, &source, &path, options, progress).await
        }
        other => other,
    }
}

async fn put_once(
    session: &mut Session,
    source: &Path,
    path: &Path,
    options: &PutOptions,
    progress: &dyn Progress,
) -> Result<PutOutcome> {
    let identity = session.require_identity("upload")?;
    let meta = std::fs::metadata(source).map_err(Error::io(source))?;
    if !meta.is_file() {
        return Err(Error::Usage(format!(
            "{} is not a regular file",
            source.display()
        )));
    }
    let stamp = SourceStamp::of(&meta);
    let mut file = match resumable(session, path, &stamp).await? {
        Some(found) => found,
        None => {
            create(
                session,
                &identity,
                source,
                &meta,
                stamp,
                options,
                path.to_path_buf(),
            )
            .await?
        }
    };
    let outcome = send_all(session, &identity, source, &mut file, options, progress).await;
    match &outcome {
        Ok(_) => file.remove(),
        Err(Error::SourceChanged(_)) => {
            abandon(session, &file.record.upload_path).await;
            file.remove();
        }
        Err(_) => {}
    }
    outcome
}

/// The saved record, if it is for this version of the file and the server
/// still has the upload.
async fn resumable(
    session: &mut Session,
    path: &Path,
    stamp: &SourceStamp,
) -> Result<Option<RecordFile>> {
    if !path.exists() {
        return Ok(None);
    }
    let Some(file) = RecordFile::load(path) else {
        let _ = std::fs::remove_file(path);
        let _ = std::fs::remove_file(units_path(path));
        return Ok(None);
    };
    if file.record.source != *stamp {
        let _ = terminate(session, &file.record.upload_path).await;
        file.remove();
        return Ok(None);
    }
    match offset_of(session, &file.record.upload_path).await {
        Ok(_) => Ok(Some(file)),
        Err(Error::Api {
            status: 404 | 410, ..
        }) => {
            file.remove();
            Ok(None)
        }
        Err(err) => Err(err),
    }
}

fn metadata_for(source: &Path, meta: &std::fs::Metadata, options: &PutOptions) -> Metadata {
    Metadata {
        name: options
            .name
            .clone()
            .or_else(|| source.file_name().map(|n| n.to_string_lossy().into_owned())),
        path: options.relative_path.clone(),
        size: Some(meta.len()),
        mtime: meta
            .modified()
            .ok()
            .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
            .map(|d| d.as_secs() as i64),
        content_type: None,
        content_blake3: options.content_blake3.clone(),
        request: None,
        from: None,
    }
}

/// Copies `input` (standard input, for `put -`) into a private temporary
/// file (0600, in a 0700 `state_dir`) to upload from: the header declares
/// the exact length before the first byte is sent, and a dropped
/// connection is resumed from the same bytes. The file is removed when the
/// returned handle is dropped. Blocking.
pub fn stage(mut input: impl Read, state_dir: &Path) -> Result<tempfile::NamedTempFile> {
    crate::fsutil::private_dir(state_dir)?;
    let mut staged = tempfile::Builder::new()
        .prefix(".stdin-")
        .tempfile_in(state_dir)
        .map_err(Error::io(state_dir))?;
    std::io::copy(&mut input, staged.as_file_mut()).map_err(Error::io(Path::new("-")))?;
    Ok(staged)
}

/// BLAKE3-256 of a file's bytes, lowercase hex (the `content_blake3`
/// metadata member). Blocking: it reads the whole file, adding what it has
/// read to `done` as it goes (for a progress display on another thread).
pub fn content_blake3(path: &Path, done: &std::sync::atomic::AtomicU64) -> Result<String> {
    use std::io::Read as _;
    let io_error = |source| Error::Io {
        path: path.to_path_buf(),
        source,
    };
    let mut file = std::fs::File::open(path).map_err(io_error)?;
    let mut hasher = blake3::Hasher::new();
    let mut buf = vec![0u8; HASH_READ];
    loop {
        let n = match file.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(err) if err.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(err) => return Err(io_error(err)),
        };
        hasher.update(&buf[..n]);
        done.fetch_add(n as u64, std::sync::atomic::Ordering::Relaxed);
    }
    Ok(hasher.finalize().to_hex().to_string())
}

/// Read size for [`content_blake3`]: large enough for BLAKE3's SIMD paths
/// and few system calls, small enough for a smooth progress display.
const HASH_READ: usize = 1 << 20;

/// A fresh random file id (16 bytes) and its hex form.
fn new_file_id() -> Result<([u8; 16], String)> {
    let mut id = [0u8; 16];
    aws_lc_rs::rand::fill(&mut id).map_err(|_| Error::Usage("no randomness".into()))?;
    Ok((id, hex(&id)))
}

/// Prepares the header and wraps, and creates the upload on the server
/// under the file id the header names.
async fn create(
    session: &mut Session,
    identity: &Arc<Identity>,
    source: &Path,
    meta: &std::fs::Metadata,
    stamp: SourceStamp,
    options: &PutOptions,
    path: PathBuf,
) -> Result<RecordFile> {
    let mut recipients = vec![identity.public().clone()];
    recipients.extend(options.recipients.iter().map(|(_, key)| key.clone()));
    let (file_id, file_id_hex) = new_file_id()?;
    let mut encrypt = EncryptOptions::new(&recipients, identity);
    encrypt.chunk_size = options.chunk_size;
    encrypt.metadata = metadata_for(source, meta, options);
    encrypt.file_id = Some(file_id);
    let prepared = coffer_format::prepare(encrypt)?;
    let header = prepared.header_bytes(coffer_format::Stanzas::Detached)?;
    let encoded_len = prepared.encoded_len(coffer_format::Stanzas::Detached, meta.len())?;
    let stanzas = prepared.stanzas();
    let mut pairs = vec![
        "coffer-e2ee".to_string(),
        format!("coffer-file-id {}", std_b64(file_id_hex.as_bytes())),
    ];
    let users = std::iter::once(session.user().to_string())
        .chain(options.recipients.iter().map(|(u, _)| u.clone()));
    for (user, stanza) in users.zip(stanzas) {
        pairs.push(format!(
            "coffer-wrap.{user} {}",
            std_b64(&stanza.to_bytes())
        ));
    }
    if let Some(secs) = options.expires_in {
        pairs.push(format!(
            "coffer-expires-in {}",
            std_b64(secs.to_string().as_bytes())
        ));
    }
    if options.delete_when_received {
        pairs.push("coffer-delete-when-received".to_string());
    }
    let length = encoded_len.to_string();
    let metadata = pairs.join(",");
    let headers = [
        ("tus-resumable", "1.0.0"),
        ("upload-length", length.as_str()),
        ("upload-metadata", metadata.as_str()),
    ];
    let response = session
        .send_buffered("POST", "/v1/uploads", true, &headers, Bytes::new())
        .await?;
    if response.status() != hyper::StatusCode::CREATED {
        return Err(error_of(response).await);
    }
    let location = response
        .headers()
        .get("location")
        .and_then(|v| v.to_str().ok())
        .ok_or_else(|| Error::protocol("upload created without Location"))?;
    let upload_path = upload_path_of(location)?;
    let _ = response.into_body().collect().await;
    if upload_path != format!("/v1/uploads/{file_id_hex}") {
        return Err(Error::protocol(
            "the server created the upload under another id than the header's",
        ));
    }
    RecordFile::new(
        path,
        Record {
            upload_path,
            file_id: file_id_hex,
            header: b64(&header),
            owner_stanza: b64(&stanzas[0].to_bytes()),
            source: stamp,
            encoded_len,
            unit_len: UNIT_LEN,
        },
    )
}

fn upload_path_of(location: &str) -> Result<String> {
    let path = match location.find("/v1/uploads/") {
        Some(at) => &location[at..],
        None => return Err(Error::protocol("unexpected upload Location")),
    };
    let id = &path["/v1/uploads/".len()..];
    if id.is_empty() || !id.bytes().all(|b| b.is_ascii_alphanumeric()) {
        return Err(Error::protocol("unexpected upload Location"));
    }
    Ok(path.to_string())
}

fn b64(bytes: &[u8]) -> String {
    base64::Engine::encode(coffer_proto::b64(), bytes)
}

fn std_b64(bytes: &[u8]) -> String {
    base64::Engine::encode(&base64::engine::general_purpose::STANDARD, bytes)
}

/// A bodiless tus request on an upload (`HEAD` for the offset, `DELETE` to
/// abandon it); error statuses become errors.
async fn tus_call(
    session: &mut Session,
    method: &str,
    upload_path: &str,
) -> Result<hyper::HeaderMap> {
    let headers = [("tus-resumable", "1.0.0")];
    let response = session
        .send_buffered(method, upload_path, true, &headers, Bytes::new())
        .await?;
    if !response.status().is_success() {
        return Err(error_of(response).await);
    }
    let headers = response.headers().clone();
    let _ = response.into_body().collect().await;
    Ok(headers)
}

/// `HEAD` on the upload: the server's offset.
async fn offset_of(session: &mut Session, upload_path: &str) -> Result<u64> {
    header_u64(
        &tus_call(session, "HEAD", upload_path).await?,
        "upload-offset",
    )
}

async fn terminate(session: &mut Session, upload_path: &str) -> Result<()> {
    tus_call(session, "DELETE", upload_path).await.map(drop)
}

/// Terminates an upload that must not be continued (its source changed),
/// on a fresh connection (the one that carried the broken request is
/// gone) and through the server's hold on it: the request that broke off
/// may hold the upload's lease a moment longer (423). Best effort: an
/// upload left behind is only swept at its expiry, and is never resumed
/// (its record is removed).
async fn abandon(session: &mut Session, upload_path: &str) {
    session.disconnect();
    for attempt in 0..8u32 {
        match terminate(session, upload_path).await {
            Ok(())
            | Err(Error::Api {
                status: 404 | 410, ..
            }) => return,
            Err(err)
                if attempt < 7
                    && (err.is_transient() || matches!(err, Error::Api { status: 423, .. })) =>
            {
                session.disconnect();
                tokio::time::sleep(Duration::from_millis(250 << attempt.min(3))).await;
            }
            Err(_) => return,
        }
    }
}

fn header_u64(headers: &hyper::HeaderMap, name: &str) -> Result<u64> {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
        .ok_or_else(|| Error::protocol(format!("missing or bad {name}")))
}

/// Sends everything past the server's offset, reconnecting and resuming
/// after transient failures, until the server commits the file.
async fn send_all(
    session: &mut Session,
    identity: &Arc<Identity>,
    source: &Path,
    file: &mut RecordFile,
    options: &PutOptions,
    progress: &dyn Progress,
) -> Result<PutOutcome> {
    let total = file.record.encoded_len;
    progress.phase(crate::progress::Phase::Sending);
    progress.set_total(total);
    let mut failures = 0u32;
    let mut resumed_at = None;
    loop {
        let attempt = async {
            // Every attempt compares against all that earlier ones logged
            // (and so sent), in this process or before it.
            file.reload_units();
            // A batch of small files is one POST and one PATCH each, not
            // three requests (a third of them a HEAD asking for a known 0).
            let offset = if std::mem::take(&mut file.created_now) {
                0
            } else {
                offset_of(session, &file.record.upload_path).await?
            };
            if offset > file.covered {
                // The server has bytes the record does not vouch for: they
                // cannot be checked, so they are not built on.
                return Err(Error::SourceChanged(source.to_path_buf()));
            }
            // What the successful attempt found already on the server.
            resumed_at = Some(offset);
            progress.set_position(offset);
            send_from(session, identity, source, file, offset, options, progress).await
        };
        match attempt.await {
            Ok(sent) => {
                let plaintext_len = file.record.source.size;
                check_receipt(
                    session,
                    &sent.receipt,
                    &file.record.file_id,
                    total,
                    &sent.written.root,
                )?;
                return Ok(PutOutcome {
                    file_id: sent.file_id,
                    receipt: sent.receipt,
                    plaintext_len,
                    stored_len: total,
                    resumed_at: resumed_at.unwrap_or(0),
                    root: sent.written.root,
                    header_hash: sent.written.header_hash,
                });
            }
            Err(err) if is_retryable(&err) && failures < options.retries => {
                failures += 1;
                session.disconnect();
                let wait = Duration::from_millis((250u64 << failures.min(5)).min(5_000));
                progress.retrying(&err.to_string(), wait);
                tokio::time::sleep(wait).await;
            }
            Err(err) => return Err(err),
        }
    }
}

fn is_retryable(err: &Error) -> bool {
    match err {
        // A full server disk: waiting a few seconds will not free any.
        Error::Api { status, .. } if *status == crate::error::STORAGE_FULL_STATUS => false,
        Error::Api {
            status: 409 | 500..,
            ..
        } => true,
        _ => err.is_transient(),
    }
}

/// The receipt must be signed by the pinned server and name this file, this
/// uploader, the length sent and the content root this client computed.
fn check_receipt(
    session: &Session,
    receipt: &SignedReceipt,
    file_id: &str,
    stored_len: u64,
    root: &[u8; 32],
) -> Result<()> {
    let server = session
        .server_identity()
        .ok_or_else(|| Error::Receipt("no pinned server identity".into()))?;
    if !receipt.verify(server) {
        return Err(Error::Receipt("bad signature".into()));
    }
    let r = &receipt.receipt;
    if r.file_id != file_id || r.uploader != session.user() {
        return Err(Error::Receipt("it names another file or uploader".into()));
    }
    if r.size != stored_len || r.content.as_deref() != Some(&format!("coffer2-root:{}", hex(root)))
    {
        return Err(Error::Receipt(
            "the server stored other bytes than were sent".into(),
        ));
    }
    Ok(())
}

type Piece = std::result::Result<Bytes, std::io::Error>;

/// What a successful attempt ends with.
struct Sent {
    file_id: String,
    receipt: SignedReceipt,
    written: coffer_format::Written,
}

/// One attempt: a producer thread re-encrypts the file and pipes the bytes
/// past `offset` here, where they go out in PATCH requests.
async fn send_from(
    session: &mut Session,
    identity: &Arc<Identity>,
    source: &Path,
    file: &mut RecordFile,
    mut offset: u64,
    options: &PutOptions,
    progress: &dyn Progress,
) -> Result<Sent> {
    let (tx, rx) = mpsc::channel::<Piece>(PIPE_DEPTH);
    let producer = Producer {
        identity: identity.clone(),
        source: source.to_path_buf(),
        record: file.record.clone(),
        units: file.units.clone(),
        log: units_path(&file.path),
        skip: offset,
        tx,
    };
    let handle = std::thread::Builder::new()
        .name("coffer-encrypt".into())
        .spawn(move || producer.run())
        .map_err(|e| Error::Io {
            path: source.to_path_buf(),
            source: e,
        })?;
    let mut pipe = Pipe { rx, leftover: None };
    let total = file.record.encoded_len;
    let mut committed = None;
    let mut failure = None;
    while offset < total {
        let len = options.patch_len.min(total - offset);
        let sending = patch(
            session,
            &file.record.upload_path,
            offset,
            len,
            &mut pipe,
            progress,
        );
        match sending.await {
            Ok((new_offset, commit)) => {
                offset = new_offset;
                progress.set_position(offset);
                committed = commit;
            }
            Err(err) => {
                failure = Some(err);
                break;
            }
        }
    }
    drop(pipe);
    let produced = tokio::task::spawn_blocking(move || handle.join())
        .await
        .map_err(|e| Error::Transport(e.to_string()))?
        .map_err(|_| Error::Usage("the encrypting thread panicked".into()))?;
    // The producer's own failure (file changed, unreadable) explains a
    // broken request better than the request error does.
    let written = produced?;
    if let Some(err) = failure {
        return Err(err);
    }
    let (file_id, receipt) =
        committed.ok_or_else(|| Error::protocol("the server did not commit the upload"))?;
    let written =
        written.ok_or_else(|| Error::protocol("the upload ended before the file was encrypted"))?;
    Ok(Sent {
        file_id,
        receipt,
        written,
    })
}

/// Ciphertext arriving from the producer, cut into request bodies.
struct Pipe {
    rx: mpsc::Receiver<Piece>,
    leftover: Option<Bytes>,
}

impl Pipe {
    async fn next_up_to(&mut self, max: u64) -> Option<Piece> {
        let piece = match self.leftover.take() {
            Some(bytes) => bytes,
            None => match self.rx.recv().await? {
                Ok(bytes) => bytes,
                Err(err) => return Some(Err(err)),
            },
        };
        if piece.len() as u64 > max {
            let mut head = piece;
            let tail = head.split_off(max as usize);
            self.leftover = Some(tail);
            Some(Ok(head))
        } else {
            Some(Ok(piece))
        }
    }
}

type Committed = Option<(String, SignedReceipt)>;

/// One PATCH of `len` bytes at `offset`. Returns the new offset, and the
/// file id and receipt when this request completed the upload.
async fn patch(
    session: &mut Session,
    upload_path: &str,
    offset: u64,
    len: u64,
    pipe: &mut Pipe,
    progress: &dyn Progress,
) -> Result<(u64, Committed)> {
    let builder = session
        .request("PATCH", upload_path, true)
        .await?
        .header("tus-resumable", "1.0.0")
        .header("upload-offset", offset)
        .header("content-type", "application/offset+octet-stream")
        .header("content-length", len);
    // The body borrows the pipe for exactly `len` bytes.
    let (body_tx, body_rx) = mpsc::channel::<Piece>(2);
    let feed = async {
        let mut left = len;
        while left > 0 {
            let Some(piece) = pipe.next_up_to(left).await else {
                let _ = body_tx
                    .send(Err(std::io::Error::other("encryption stopped")))
                    .await;
                return;
            };
            let failed = piece.is_err();
            if let Ok(bytes) = &piece {
                left -= bytes.len() as u64;
            }
            if body_tx.send(piece).await.is_err() || failed {
                return;
            }
            // Handed to the request body (a channel of two pieces): the
            // display moves per piece, not per request.
            progress.set_position(offset + len - left);
        }
    };
    let stream = tokio_stream_of(body_rx).map(|piece| piece.map(Frame::data));
    let request = builder
        .body(BodyExt::boxed(StreamBody::new(stream)))
        .map_err(|e| Error::Usage(e.to_string()))?;
    let (_, response) = tokio::join!(feed, session.send(request));
    let response = response?;
    if response.status() != hyper::StatusCode::NO_CONTENT {
        return Err(error_of(response).await);
    }
    let headers = response.headers().clone();
    let _ = response.into_body().collect().await;
    let new_offset = header_u64(&headers, "upload-offset")?;
    if new_offset != offset + len {
        return Err(Error::Transport(
            "the server kept only part of the request".into(),
        ));
    }
    let committed = match headers.get("coffer-file-id") {
        None => None,
        Some(id) => {
            let id = id
                .to_str()
                .map_err(|_| Error::protocol("bad Coffer-File-Id"))?
                .to_string();
            let encoded = headers
                .get("coffer-receipt")
                .and_then(|v| v.to_str().ok())
                .ok_or_else(|| Error::Receipt("the commit came without a receipt".into()))?;
            let receipt: SignedReceipt = serde_json::from_slice(&decode_b64(encoded)?)
                .map_err(|e| Error::Receipt(e.to_string()))?;
            Some((id, receipt))
        }
    };
    Ok((new_offset, committed))
}

fn tokio_stream_of(mut rx: mpsc::Receiver<Piece>) -> impl futures_util::Stream<Item = Piece> {
    futures_util::stream::poll_fn(move |cx| rx.poll_recv(cx))
}

/// The encrypting side of one attempt (runs on its own thread).
struct Producer {
    identity: Arc<Identity>,
    source: PathBuf,
    record: Record,
    /// Digests logged by earlier attempts; the unit encoder refuses to
    /// produce a unit that differs from one of them.
    units: Vec<UnitDigest>,
    /// The unit log to append new digests to.
    log: PathBuf,
    /// Ciphertext bytes the server holds already.
    skip: u64,
    tx: mpsc::Sender<Piece>,
}

impl Producer {
    /// Returns the summary of the whole file (None if stopped early).
    fn run(mut self) -> Result<Option<coffer_format::Written>> {
        let result = self.encrypt();
        if let Err(err) = &result {
            let _ = self
                .tx
                .blocking_send(Err(std::io::Error::other(err.to_string())));
        }
        result
    }

    fn encrypt(&mut self) -> Result<Option<coffer_format::Written>> {
        let identity = self.identity.clone();
        let record = self.record.clone();
        let known = self.units.clone();
        let header = decode_b64(&record.header)?;
        let stanza = Stanza::from_detached(&decode_b64(&record.owner_stanza)?)?;
        let (parsed, _) = Header::parse(&header)?;
        let opened = parsed.open(&identity, &[stanza])?;
        let mut encoder = UnitEncoder::resume(opened, &identity, record.unit_len, known)?;
        if encoder.encoded_len() != record.encoded_len {
            return Err(Error::Usage(
                "the resume record disagrees with its header".into(),
            ));
        }
        let mut input = File::open(&self.source).map_err(Error::io(&self.source))?;
        let pool = coffer_fileio::Lender::new(SEND_BUFFERS_KEPT);
        let mut produced = 0u64;
        for unit in 0.. {
            if encoder.is_finished() {
                break;
            }
            // A new one is sized by the unit encoder.
            let mut out: Vec<u8> = pool.take().unwrap_or_default();
            // The encoder reads the unit straight into `out`; input that
            // ends early, or grows past the size the header declares, is
            // refused there.
            let (digest, summary) = match encoder.encode_unit(&mut input, &mut out) {
                Ok(done) => done,
                Err(coffer_format::Error::InputChanged(_)) => {
                    return Err(Error::SourceChanged(self.source.clone()));
                }
                Err(coffer_format::Error::Io(err)) => return Err(Error::io(&self.source)(err)),
                Err(err) => return Err(err.into()),
            };
            // A file rewritten while being read (its stamp moved) must not
            // be committed as if it were one version of it: check before
            // the last unit (the one that completes the object) leaves. The
            // caller then starts afresh, under a new key.
            if summary.is_some() && self.stamp_moved(&input) {
                return Err(Error::SourceChanged(self.source.clone()));
            }
            produced += out.len() as u64;
            self.log_unit(unit, &digest, produced)?;
            if !self.emit(pool.lend(out)) {
                return Ok(None);
            }
            if summary.is_some() {
                return Ok(summary);
            }
        }
        Ok(None)
    }

    /// Whether the open file is no longer the version the upload began with.
    fn stamp_moved(&self, input: &File) -> bool {
        input
            .metadata()
            .map_or(true, |meta| SourceStamp::of(&meta) != self.record.source)
    }

    /// Appends a new unit's digest to the log and syncs it before the unit
    /// is sent (units already logged were compared by the encoder).
    fn log_unit(&mut self, unit: usize, digest: &UnitDigest, produced: u64) -> Result<()> {
        if unit < self.units.len() {
            return Ok(());
        }
        let line = format!("{} {produced}\n", hex(digest));
        let mut log = std::fs::OpenOptions::new()
            .append(true)
            .open(&self.log)
            .map_err(Error::io(&self.log))?;
        log.write_all(line.as_bytes())
            .and_then(|()| log.sync_data())
            .map_err(Error::io(&self.log))?;
        self.units.push(*digest);
        Ok(())
    }

    /// Sends the part of a unit past `skip`; false once the receiver is gone.
    fn emit(&mut self, bytes: Bytes) -> bool {
        let start = self.skip.min(bytes.len() as u64) as usize;
        self.skip -= start as u64;
        let mut rest = bytes.slice(start..);
        while !rest.is_empty() {
            let piece = rest.split_to(rest.len().min(PIPE_PIECE));
            if self.tx.blocking_send(Ok(piece)).is_err() {
                return false;
            }
        }
        true
    }
}

/// Send buffers kept for reuse once the network side has dropped every
/// piece of them, so that a long upload does not allocate, fault in and
/// zero a fresh buffer per unit (the unit encoder overwrites a recycled
/// buffer without zeroing it again): the units the pipe holds at once, and
/// one being encoded.
const SEND_BUFFERS_KEPT: usize = PIPE_DEPTH * PIPE_PIECE / UNIT_LEN as usize + 1;

#[cfg(test)]
mod tests {
    use super::*;

    fn record() -> Record {
        Record {
            upload_path: "/v1/uploads/ab".into(),
            file_id: "ab".into(),
            header: String::new(),
            owner_stanza: String::new(),
            source: SourceStamp {
                size: 1,
                mtime_ns: 2,
                inode: 3,
            },
            encoded_len: 4,
            unit_len: UNIT_LEN,
        }
    }

    /// A full server disk ends the run at once, as temporary (exit 75):
    /// retrying within seconds would only wait. Other server failures and
    /// offset races are retried.
    #[test]
    fn a_full_server_disk_is_not_retried_but_other_failures_are() {
        let api = |status| Error::Api {
            status,
            code: "x".into(),
            message: String::new(),
        };
        assert!(!is_retryable(&api(507)));
        assert!(!api(507).is_transient());
        assert_eq!(api(507).class(), crate::error::Class::Temporary);
        for status in [409, 423, 500, 502, 503] {
            assert!(is_retryable(&api(status)), "{status}");
        }
        assert!(!is_retryable(&api(413)));
    }

    #[test]
    fn the_unit_log_stops_at_a_torn_or_inconsistent_line() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("r.json");
        let file = RecordFile::new(path.clone(), record()).unwrap();
        assert!(file.units.is_empty());
        let a = "a".repeat(64);
        let b = "b".repeat(64);
        let log = units_path(&path);
        // Two whole lines, then a crash in the middle of the third.
        std::fs::write(&log, format!("{a} 100\n{b} 200\n{a} 3")).unwrap();
        let loaded = RecordFile::load(&path).unwrap();
        assert_eq!(loaded.units, vec![[0xaa; 32], [0xbb; 32]]);
        assert_eq!(loaded.covered, 200);
        // A line that claims less than the one before is not believed.
        std::fs::write(&log, format!("{a} 100\n{b} 50\n")).unwrap();
        let loaded = RecordFile::load(&path).unwrap();
        assert_eq!((loaded.units.len(), loaded.covered), (1, 100));
        // Garbage in the record itself: no record.
        std::fs::write(&path, b"{not json").unwrap();
        assert!(RecordFile::load(&path).is_none());
        loaded.remove();
        assert!(!log.exists());
    }
}
