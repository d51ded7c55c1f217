//! Uploads: creation (with quota, open-upload limit and key wraps), one
//! request body at a time staged at the server's offset, and the commit.
//!
//! An upload is invisible until its last byte arrives; then the staged bytes
//! are moved durably to their object name and only after that is the file row
//! written, in one transaction with the upload row's removal. A crash at any
//! point leaves either a resumable upload or a complete file, never a visible
//! partial one.
//!
//! End-to-end encrypted uploads are stored as sent, and checked without a
//! key as their bytes pass ([`coffer_format::ObjectVerifier`]): the commit
//! refuses an object that is not a valid coffer v2 object, whose header does
//! not name this upload's id, or that the uploader's registered key did not
//! sign. Plain uploads are sealed under a staging key and re-encrypted at
//! commit ([`super::at_rest`]).

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use coffer_format::{ObjectVerifier, VerifiedObject};
use futures_util::StreamExt;

use super::lease::UploadLease;
use super::{Caller, Error, Kind, Result, Service, audit, new_id};
use crate::codec::tus;
use crate::objects::ByteStream;
use crate::receipt::{Receipt, SignedReceipt};
use crate::store::{DigestAlg, FileRecord, NewWrap, Upload};

/// The keyless check of each E2EE upload ([`ObjectVerifier`]) as its bytes
/// pass, so the commit needs no second pass: it ends with the content root
/// that becomes the receipt, the ETag and the digest headers. Only a hint:
/// it lives in this process, and an upload whose verifier is missing or at
/// another offset (server restarted, another node took a PATCH) is verified
/// from storage at commit instead.
#[derive(Clone, Default)]
pub struct RunningObjects(Arc<Mutex<HashMap<String, (u64, ObjectVerifier)>>>);

impl RunningObjects {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, (u64, ObjectVerifier)>> {
        self.0
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// The verifier of the first `offset` bytes of an upload of `length`
    /// bytes, if known (taken out: it is put back only once the next bytes
    /// are durably stored).
    fn take(&self, id: &str, offset: u64, length: u64) -> Option<ObjectVerifier> {
        match self.lock().remove(id) {
            Some((at, verifier)) if at == offset => Some(verifier),
            _ if offset == 0 => Some(ObjectVerifier::new(length)),
            _ => None,
        }
    }

    fn put(&self, id: &str, offset: u64, verifier: ObjectVerifier) {
        self.lock().insert(id.to_string(), (offset, verifier));
    }

    pub(crate) fn forget(&self, id: &str) {
        self.lock().remove(id);
    }

    /// The verifier of a complete upload of `length` bytes, if known.
    fn finish(&self, id: &str, length: u64) -> Option<ObjectVerifier> {
        let (at, verifier) = self.lock().remove(id)?;
        (at == length).then_some(verifier)
    }
}

/// A new upload, as the protocol described it.
pub struct NewUpload {
    /// Its total length.
    pub length: u64,
    /// The raw `Upload-Metadata` (kept, and given back by `HEAD`).
    pub metadata: String,
    /// Key wraps sent with it, `(user, stanza)`.
    pub wraps: Vec<NewWrap>,
    /// Whether it is already end-to-end encrypted (stored as sent).
    pub e2ee: bool,
    /// The file id an E2EE client chose and signed into the header.
    pub file_id: Option<String>,
}

/// Creates an upload after checking the size, the caller's quota and open
/// uploads, and every wrap it carries.
pub async fn create(service: &Service, caller: &Caller, new: NewUpload) -> Result<Upload> {
    if new.length > service.config.max_upload_bytes {
        return Err(Error::new(
            Kind::TooLarge,
            "too_large",
            "upload larger than the server accepts",
        ));
    }
    check_usage(service, caller, new.length).await?;
    let (_, delete_when_received) = keep_for(service, &new.metadata)?;
    if let Some(request) = &caller.via_request {
        if !new.e2ee || new.file_id.is_none() {
            return Err(Error::bad_request(
                "an upload through an upload link must be end-to-end encrypted under a chosen file id",
            ));
        }
        let users: Vec<&str> = new.wraps.iter().map(|(user, _)| user.as_str()).collect();
        super::requests::begin_upload(
            service,
            caller,
            request,
            new.length,
            &users,
            delete_when_received,
        )
        .await?;
    }
    super::shares::check_wrap_count(service, new.wraps.len())?;
    for (user, stanza) in &new.wraps {
        super::shares::check_wrap(service, user, stanza).await?;
    }
    // An upload that carries key wraps, or says `coffer-e2ee`, is already
    // ciphertext and is stored as sent; anything else the server encrypts.
    let e2ee = new.e2ee || !new.wraps.is_empty();
    let id = upload_id(service, new.file_id, e2ee).await?;
    let staging_key = if e2ee {
        None
    } else {
        let key = crate::keyring::random_key().map_err(Error::internal)?;
        Some(
            service
                .keyring
                .wrap(&key, crate::keyring::KeyUse::Staging(&id))
                .map_err(Error::internal)?,
        )
    };
    let upload = Upload {
        owner: caller.user.name.clone(),
        length: new.length,
        offset: 0,
        metadata: new.metadata,
        expires_at: crate::unix_now() + service.config.upload_ttl_secs as i64,
        staged_len: 0,
        staging_key,
        staging: service
            .objects
            .begin(&id, new.length)
            .await
            .map_err(Error::internal)?,
        id,
        via_request: caller.via_request.clone(),
    };
    service.store.create_upload(&upload).await?;
    Ok(upload)
}

/// How long a new file is kept (`None`: until deleted) and whether it goes
/// once received: what the uploader asked for within the server's
/// maximum, else the server's default. Asking for more than the maximum is
/// refused rather than quietly shortened.
fn keep_for(service: &Service, metadata: &str) -> Result<(Option<u64>, bool)> {
    let (asked, delete_when_received) = tus::Metadata::parse(metadata)
        .and_then(|m| m.retention())
        .map_err(|err| Error::bad_request(err.to_string()))?;
    let max = service.config.max_file_ttl_secs;
    let default = service.config.default_file_ttl_secs;
    let keep = match asked {
        Some(secs) if max > 0 && secs > max => {
            return Err(Error::new(
                Kind::Unprocessable,
                "expiry_too_long",
                format!("files are kept at most {max} s on this server; ask for less"),
            ));
        }
        Some(secs) => Some(secs),
        None if default > 0 => Some(if max > 0 { default.min(max) } else { default }),
        None if max > 0 => Some(max),
        None => None,
    };
    Ok((keep, delete_when_received))
}

/// Refuses an upload past the user's quota (counting unfinished uploads at
/// their declared length) or past the number of open uploads.
async fn check_usage(service: &Service, caller: &Caller, length: u64) -> Result<()> {
    let usage = service.store.usage(&caller.user.name).await?;
    let max_open = service.config.limits.max_open_uploads_per_user;
    let committed = usage.stored_bytes.saturating_add(usage.reserved_bytes);
    let refusal = if usage.open_uploads >= max_open {
        Some((
            "open_uploads",
            Error::new(
                Kind::TooMany,
                "too_many_uploads",
                format!("at most {max_open} unfinished uploads; finish or terminate one"),
            ),
        ))
    } else {
        caller
            .user
            .quota_bytes
            .filter(|quota| committed.saturating_add(length) > *quota)
            .map(|quota| {
                (
                    "quota",
                    Error::new(
                        Kind::TooLarge,
                        "quota_exceeded",
                        format!(
                            "storage quota of {quota} bytes exceeded: {} bytes stored, {} in unfinished uploads, {length} requested",
                            usage.stored_bytes, usage.reserved_bytes
                        ),
                    ),
                )
            })
    };
    let Some((kind, err)) = refusal else {
        return Ok(());
    };
    let event = caller.event("limit", "").outcome("refused").detail(kind);
    audit::record(service, event).await?;
    Err(err)
}

/// The id a new upload gets: the one an E2EE client chose (it is in the
/// object's signed header, so downloads can check they got the file they
/// asked for), else a random one. A chosen id must be 32 lowercase hex
/// digits and not in use.
async fn upload_id(service: &Service, chosen: Option<String>, e2ee: bool) -> Result<String> {
    let Some(id) = chosen else {
        return new_id();
    };
    if !e2ee {
        return Err(Error::bad_request(
            "coffer-file-id is only for end-to-end encrypted uploads",
        ));
    }
    if id.len() != 32 || !id.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
        return Err(Error::bad_request(
            "coffer-file-id must be 32 lowercase hex digits",
        ));
    }
    if service.store.upload(&id).await?.is_some() || service.store.file(&id).await?.is_some() {
        return Err(Error::new(
            Kind::Conflict,
            "file_id_taken",
            "an upload or file with this id exists; choose another",
        ));
    }
    Ok(id)
}

/// The caller's own upload, or 404 (another user's upload is not revealed).
pub async fn owned_upload(service: &Service, caller: &Caller, id: &str) -> Result<Upload> {
    match service.store.upload(id).await? {
        Some(upload)
            if upload.owner == caller.user.name
                && upload.via_request == caller.via_request
                && upload.expires_at >= crate::unix_now() =>
        {
            Ok(upload)
        }
        _ => Err(Error::not_found("upload")),
    }
}

/// What one request body added to an upload.
struct Staged {
    /// Upload bytes taken (before any encryption).
    plain: u64,
    /// Bytes added to the staged file.
    staged: u64,
    /// The object store's staging record after them.
    staging: Vec<u8>,
    /// SHA-256 of the upload bytes taken, when a tus checksum was sent.
    sha256: Option<[u8; 32]>,
    /// The body went past the declared length.
    overflow: bool,
    /// The body broke off (client gone); what came before it was kept.
    broken: bool,
    /// The keyless check of the whole upload so far, for E2EE uploads.
    running: Option<ObjectVerifier>,
    /// Why the body is not a valid coffer v2 object, if it is not.
    invalid: Option<String>,
}

/// Counts and hashes upload bytes as they pass and stops at the declared
/// length: the one place for the tus limit and checksum, whichever way the
/// bytes are then stored.
struct Meter {
    taken: u64,
    overflow: bool,
    /// The body failed to arrive whole ...
    broken: bool,
    /// ... because it stopped arriving (not because it was cut or garbled).
    stalled: bool,
    /// Only when the client sent `Upload-Checksum`: SHA-256 is the slowest
    /// step on the upload path, and the format authenticates E2EE bodies.
    digest: Option<aws_lc_rs::digest::Context>,
    /// The E2EE upload's verifier (see [`RunningObjects`]).
    running: Option<ObjectVerifier>,
    /// Set when the verifier refused the bytes; the stream ends there.
    invalid: Option<String>,
}

/// How a body that breaks off is treated by [`metered`].
#[derive(Clone, Copy, PartialEq, Eq)]
enum OnBreak {
    /// End the stream cleanly, so the bytes that arrived are stored and
    /// count (tus: a client that lost its connection resumes from there).
    KeepWhatArrived,
    /// Pass the error on; the whole request is rolled back.
    Fail,
}

fn metered<'a>(
    body: ByteStream<'a>,
    room: u64,
    checksum: bool,
    on_break: OnBreak,
    running: Option<ObjectVerifier>,
) -> (ByteStream<'a>, Arc<Mutex<Meter>>) {
    let meter = Arc::new(Mutex::new(Meter {
        taken: 0,
        overflow: false,
        broken: false,
        stalled: false,
        digest: checksum.then(|| aws_lc_rs::digest::Context::new(&aws_lc_rs::digest::SHA256)),
        running,
        invalid: None,
    }));
    let shared = meter.clone();
    let stream = body.scan(room, move |room, chunk: std::io::Result<Bytes>| {
        let mut meter = shared.lock().unwrap_or_else(|p| p.into_inner());
        if meter.overflow || meter.broken || meter.invalid.is_some() {
            return futures_util::future::ready(None);
        }
        if let Err(err) = &chunk {
            meter.broken = true;
            meter.stalled = err.kind() == std::io::ErrorKind::TimedOut;
            if on_break == OnBreak::KeepWhatArrived {
                return futures_util::future::ready(None);
            }
        }
        let chunk = chunk.map(|chunk| {
            let take = (chunk.len() as u64).min(*room) as usize;
            // Past the declared length: stop reading the body here.
            meter.overflow = take < chunk.len();
            *room -= take as u64;
            meter.taken += take as u64;
            if let Some(digest) = meter.digest.as_mut() {
                digest.update(&chunk[..take]);
            }
            if let Some(running) = meter.running.as_mut()
                && let Err(err) = running.update(&chunk[..take])
            {
                meter.invalid = Some(err.to_string());
                meter.running = None;
            }
            chunk.slice(..take)
        });
        if meter.invalid.is_some() {
            // Stop here; the caller rolls back what this request staged.
            return futures_util::future::ready(None);
        }
        futures_util::future::ready(Some(chunk))
    });
    (Box::pin(stream), meter)
}

/// Stages `body` at the upload's offset: as sent for E2EE uploads, sealed
/// under the upload's staging key otherwise.
async fn stage(
    service: &Service,
    upload: &Upload,
    body: ByteStream<'_>,
    checksum: bool,
) -> Result<Staged> {
    // Sealed records are whole or not at all, so only E2EE bodies keep a
    // broken-off part.
    let (on_break, running) = match upload.staging_key {
        None => (
            OnBreak::KeepWhatArrived,
            service
                .running
                .take(&upload.id, upload.offset, upload.length),
        ),
        Some(_) => (OnBreak::Fail, None),
    };
    let (body, meter) = metered(
        body,
        upload.length - upload.offset,
        checksum,
        on_break,
        running,
    );
    let body = match &upload.staging_key {
        None => body,
        Some(wrapped) => {
            let usage = crate::keyring::KeyUse::Staging(&upload.id);
            let key = service.keyring.unwrap(wrapped, usage);
            let key = super::downloads::checked(service, &upload.owner, &upload.id, key).await?;
            super::at_rest::seal_body(body, &key, &upload.id, upload.offset)
                .map_err(Error::internal)?
        }
    };
    let appended = service
        .objects
        .append(
            &upload.id,
            upload.staged_len,
            &upload.staging,
            upload.length - upload.offset,
            body,
        )
        .await;
    let appended = match appended {
        Ok(appended) => appended,
        Err(err) => {
            let failure = {
                let meter = meter.lock().unwrap_or_else(|p| p.into_inner());
                body_failure(&meter, err)
            };
            // Nothing of a failed request counts: its bytes are cut away.
            service
                .objects
                .discard_after(&upload.id, upload.staged_len)
                .await
                .map_err(Error::internal)?;
            return Err(failure);
        }
    };
    let mut meter = meter.lock().unwrap_or_else(|p| p.into_inner());
    let sha256 = meter.digest.take().map(|digest| {
        let mut out = [0u8; 32];
        out.copy_from_slice(digest.finish().as_ref());
        out
    });
    Ok(Staged {
        plain: meter.taken,
        staged: appended.written,
        staging: appended.staging,
        sha256,
        overflow: meter.overflow,
        broken: meter.broken,
        running: meter.running.take(),
        invalid: meter.invalid.take(),
    })
}

/// Whether a failure came from storage with no room left.
fn full_storage_in(err: &anyhow::Error) -> bool {
    err.chain()
        .filter_map(|cause| cause.downcast_ref::<std::io::Error>())
        .any(super::is_storage_full)
}

/// Why staging a body failed: the client's body (408, 400) or the server.
fn body_failure(meter: &Meter, err: std::io::Error) -> Error {
    match (meter.broken, meter.stalled) {
        (true, true) => Error::new(
            Kind::Timeout,
            "body_stalled",
            "the request body stopped arriving; resume from the server's offset",
        ),
        (true, false) => Error::new(
            Kind::BadRequest,
            "body_broken",
            "the request body broke off; resume from the server's offset",
        ),
        (false, _) => Error::storage(err),
    }
}

/// The result of one request body.
pub struct Appended {
    /// The upload's offset after it.
    pub offset: u64,
    /// When it completed the upload: the file's id and signed receipt.
    pub committed: Option<SignedReceipt>,
}

/// Appends one request body at the upload's offset (`claimed_offset` must be
/// the server's); commits when the upload is complete.
pub async fn append(
    service: &Service,
    upload: &Upload,
    ip: Option<IpAddr>,
    claimed_offset: u64,
    checksum: Option<[u8; 32]>,
    body: ByteStream<'_>,
) -> Result<Appended> {
    let offset_mismatch = || {
        Error::new(
            Kind::Conflict,
            "offset_mismatch",
            "Upload-Offset does not match the server's offset",
        )
    };
    if claimed_offset != upload.offset {
        return Err(offset_mismatch());
    }
    let lease = lease_upload(service, &upload.id).await?;
    let result = append_leased(service, upload, ip, claimed_offset, checksum, body, &lease).await;
    // Given back before the answer leaves, also after a refusal, so that
    // whatever the client does next (resume, terminate) finds it free.
    let released = lease.release().await;
    let appended = result?;
    released?;
    Ok(appended)
}

/// [`append`] while holding the upload's lease.
async fn append_leased(
    service: &Service,
    upload: &Upload,
    ip: Option<IpAddr>,
    claimed_offset: u64,
    checksum: Option<[u8; 32]>,
    body: ByteStream<'_>,
    lease: &UploadLease,
) -> Result<Appended> {
    let offset_mismatch = || {
        Error::new(
            Kind::Conflict,
            "offset_mismatch",
            "Upload-Offset does not match the server's offset",
        )
    };
    // The row read before the lease may be stale: another request (on any
    // node) may have moved the upload on and let go in between. Staging at
    // a stale offset would cut away what that request stored.
    let upload = &service
        .store
        .upload(&upload.id)
        .await?
        .ok_or_else(|| Error::not_found("upload"))?;
    if claimed_offset != upload.offset {
        return Err(offset_mismatch());
    }
    let mut appended = stage(service, upload, body, checksum.is_some()).await?;
    let rollback = || service.objects.discard_after(&upload.id, upload.staged_len);
    if lease.lost() {
        rollback().await.map_err(Error::internal)?;
        return Err(Error::new(
            Kind::Conflict,
            "lease_lost",
            "this request lost its hold on the upload; resume from the server's offset",
        ));
    }
    if let Some(why) = appended.invalid.take() {
        rollback().await.map_err(Error::internal)?;
        return Err(invalid_object(why));
    }
    if appended.overflow {
        rollback().await.map_err(Error::internal)?;
        return Err(Error::new(
            Kind::TooLarge,
            "too_large",
            "body goes past Upload-Length",
        ));
    }
    if appended.broken && checksum.is_some() {
        // A checksum covers the whole body; a part of it cannot be checked.
        rollback().await.map_err(Error::internal)?;
        return Err(Error::bad_request("the body broke off"));
    }
    if checksum.is_some() && checksum != appended.sha256 {
        rollback().await.map_err(Error::internal)?;
        return Err(Error::new(
            Kind::ChecksumMismatch,
            "checksum_mismatch",
            "Upload-Checksum does not match the body",
        ));
    }
    metrics::counter!("coffer_upload_bytes_total").increment(appended.plain);
    let new_offset = upload.offset + appended.plain;
    let staged_len = upload.staged_len + appended.staged;
    if !service
        .store
        .advance_upload(
            &upload.id,
            upload.offset,
            new_offset,
            staged_len,
            &appended.staging,
        )
        .await?
    {
        rollback().await.map_err(Error::internal)?;
        return Err(Error::new(
            Kind::Conflict,
            "offset_mismatch",
            "the upload moved on concurrently",
        ));
    }
    if let Some(running) = appended.running.take() {
        service.running.put(&upload.id, new_offset, running);
    }
    let mut committed = None;
    if new_offset == upload.length {
        let upload = Upload {
            offset: new_offset,
            staged_len,
            staging: std::mem::take(&mut appended.staging),
            ..upload.clone()
        };
        let signed = commit(service, &upload).await?;
        let event = match &upload.via_request {
            Some(request) => audit::Event::new("-", ip, "request_upload", &signed.receipt.file_id)
                .detail(format!(
                    "{} bytes for {} via upload link {request}",
                    signed.receipt.size, upload.owner
                )),
            None => audit::Event::new(&upload.owner, ip, "upload", &signed.receipt.file_id)
                .detail(format!("{} bytes", signed.receipt.size)),
        };
        audit::record(service, event).await?;
        committed = Some(signed);
    }
    Ok(Appended {
        offset: new_offset,
        committed,
    })
}

/// Takes the upload's lease, or answers 423.
async fn lease_upload(service: &Service, id: &str) -> Result<UploadLease> {
    UploadLease::take(&service.store, id).await?.ok_or_else(|| {
        Error::new(
            Kind::Locked,
            "busy",
            "another request is writing this upload",
        )
    })
}

/// Moves a complete upload into place and records it, with a receipt.
pub async fn commit(service: &Service, upload: &Upload) -> Result<SignedReceipt> {
    // An E2EE upload becomes its object where it lies (S3 cannot rename), so
    // the file keeps the upload's id; a server-encrypted one is rewritten
    // into a new object.
    let file_id = match upload.staging_key {
        None => upload.id.clone(),
        Some(_) => new_id()?,
    };
    let (size, digest, digest_alg, object_key) = match &upload.staging_key {
        None => {
            let verified = verify_e2ee(service, upload).await?;
            let size = service
                .objects
                .commit(&upload.id, &upload.staging, upload.staged_len)
                .await
                .map_err(Error::storage)?;
            (size, verified.signed.root, DigestAlg::Coffer2Root, None)
        }
        Some(wrapped) => {
            let (converted, object_key) = convert(service, upload, wrapped, &file_id).await?;
            (
                converted.plain_size,
                converted.plain_blake3,
                DigestAlg::Blake3,
                Some(object_key),
            )
        }
    };
    if size != upload.length {
        let event = audit::Event::new(&upload.owner, None, "integrity", &upload.id)
            .outcome("failed")
            .detail(format!("staged {size} bytes, declared {}", upload.length));
        audit::record(service, event).await?;
        return Err(Error::internal(format!(
            "staged size {size} differs from declared {}",
            upload.length
        )));
    }
    let time = crate::unix_now();
    let signed = SignedReceipt::sign(
        Receipt {
            file_id: file_id.clone(),
            size,
            sha256: None,
            content: Some(format!("{}:{}", digest_alg.name(), crate::hex(&digest))),
            uploader: upload.owner.clone(),
            time,
            server: service.identity.public().to_string(),
        },
        &service.identity,
    );
    let (keep, delete_when_received) = keep_for(service, &upload.metadata)?;
    let record = FileRecord {
        id: file_id,
        owner: upload.owner.clone(),
        size,
        digest: digest.to_vec(),
        digest_alg,
        created_at: time,
        receipt: serde_json::to_string(&signed).map_err(Error::internal)?,
        expires_at: keep.map(|secs| time.saturating_add(secs as i64)),
        delete_when_received,
        via_request: upload.via_request.clone(),
    };
    let wraps = tus::Metadata::parse(&upload.metadata)
        .and_then(|metadata| metadata.wraps())
        .map_err(|err| Error::bad_request(err.to_string()))?;
    service
        .store
        .commit_upload(&upload.id, &record, &wraps, object_key.as_ref())
        .await?;
    if object_key.is_some() {
        // The sealed records are no longer needed once the object is in.
        service
            .objects
            .delete_staged(&upload.id, &upload.staging)
            .await
            .map_err(Error::internal)?;
    }
    Ok(signed)
}

/// Re-encrypts a plain upload's staged records into a coffer object under a
/// fresh DEK, wrapped by the current KEK.
async fn convert(
    service: &Service,
    upload: &Upload,
    wrapped: &crate::store::WrappedKey,
    file_id: &str,
) -> Result<(super::at_rest::Converted, crate::store::ObjectKey)> {
    use super::downloads::checked;
    let staging = checked(
        service,
        &upload.owner,
        &upload.id,
        service
            .keyring
            .unwrap(wrapped, crate::keyring::KeyUse::Staging(&upload.id)),
    )
    .await?;
    let converted = super::at_rest::convert(
        service.objects.as_ref(),
        &staging,
        upload,
        file_id,
        &service.identity,
    )
    .await;
    // A full disk is the operator's to fix, not a sign of tampering.
    let converted = match converted {
        Err(err) if full_storage_in(&err) => return Err(Error::storage_full(err)),
        result => checked(service, &upload.owner, &upload.id, result).await?,
    };
    let key = service
        .keyring
        .wrap(&converted.dek, crate::keyring::KeyUse::File(file_id))
        .map_err(Error::internal)?;
    let object_key = crate::store::ObjectKey {
        file_id: file_id.to_string(),
        key,
        stored_size: converted.stored_size,
    };
    Ok((converted, object_key))
}

/// The error for bytes that do not make a coffer v2 object.
fn invalid_object(why: impl std::fmt::Display) -> Error {
    Error::new(
        Kind::Unprocessable,
        "invalid_object",
        format!("the upload is not a valid coffer v2 object: {why}"),
    )
}

/// The keyless check of a complete E2EE upload, from the verifier that
/// watched its bytes arrive or (after a restart, or a PATCH another node
/// took) from storage: a valid v2 object whose header names this upload's
/// id and whose signature is by the uploader's registered key. A refused
/// upload is removed whole, and the refusal audited.
async fn verify_e2ee(service: &Service, upload: &Upload) -> Result<VerifiedObject> {
    let verified = match service.running.finish(&upload.id, upload.length) {
        Some(verifier) => verifier.finish(),
        None => verify_stored(service, upload).await?,
    };
    let refusal = match verified {
        Err(err) => invalid_object(err),
        Ok(v) if v.core.file_id_hex() != upload.id => invalid_object(
            "its header names another file id than this upload's (the client must create the upload under the id it signs)",
        ),
        // Through an upload link, the sender is anonymous: their page signs
        // with a one-time key, which the owner's client shows as such.
        Ok(v) if upload.via_request.is_some() => return Ok(v),
        Ok(v) => {
            let uploader = service
                .store
                .user(&upload.owner)
                .await?
                .and_then(|user| coffer_format::PublicIdentity::parse(&user.public_identity).ok())
                .ok_or_else(|| Error::internal("the uploader has no valid key"))?;
            if v.sender().is(&uploader) {
                return Ok(v);
            }
            Error::new(
                Kind::Unprocessable,
                "wrong_signer",
                format!(
                    "the file is signed by {}, not by {}'s registered key {}",
                    v.sender().fingerprint(),
                    upload.owner,
                    uploader.fingerprint()
                ),
            )
        }
    };
    reject_upload(service, upload, &refusal).await?;
    Err(refusal)
}

/// Verifies a staged E2EE upload by reading it back (one pass, no key).
async fn verify_stored(
    service: &Service,
    upload: &Upload,
) -> Result<coffer_format::Result<VerifiedObject>> {
    let mut stream = service
        .objects
        .read_staged(&upload.id, &upload.staging, upload.staged_len)
        .await
        .map_err(Error::internal)?;
    let mut verifier = ObjectVerifier::new(upload.length);
    while let Some(piece) = stream.next().await {
        let piece = piece.map_err(Error::internal)?;
        if let Err(err) = verifier.update(&piece) {
            return Ok(Err(err));
        }
    }
    Ok(verifier.finish())
}

/// Removes a complete upload that was refused at commit: it can never
/// become a file, so it must not hold a slot or quota.
async fn reject_upload(service: &Service, upload: &Upload, why: &Error) -> Result<()> {
    service.running.forget(&upload.id);
    service.store.delete_upload(&upload.id).await?;
    service
        .objects
        .delete_staged(&upload.id, &upload.staging)
        .await
        .map_err(Error::internal)?;
    let event = audit::Event::new(&upload.owner, None, "upload_rejected", &upload.id)
        .outcome("refused")
        .detail(why.code());
    audit::record(service, event).await?;
    Ok(())
}

/// tus termination: abandons an upload.
pub async fn terminate(service: &Service, caller: &Caller, id: &str) -> Result<()> {
    let upload = owned_upload(service, caller, id).await?;
    let lease = lease_upload(service, &upload.id).await?;
    service.running.forget(&upload.id);
    service.store.delete_upload(&upload.id).await?;
    drop(lease);
    service
        .objects
        .delete_staged(&upload.id, &upload.staging)
        .await
        .map_err(Error::internal)?;
    audit::record(service, caller.event("upload_terminate", &upload.id)).await?;
    Ok(())
}

/// Removes uploads past their expiry, rows first so nothing points at
/// deleted bytes.
pub async fn sweep_expired(service: &Service) -> Result<usize> {
    let expired = service.store.expired_uploads(crate::unix_now()).await?;
    let mut removed = 0;
    for id in &expired {
        // A PATCH that began before the expiry may still be writing; leave
        // that upload to the next sweep.
        let Some(_lease) = UploadLease::take(&service.store, id).await? else {
            continue;
        };
        let Some(upload) = service.store.upload(id).await? else {
            continue;
        };
        removed += 1;
        service.running.forget(id);
        service.store.delete_upload(id).await?;
        service
            .objects
            .delete_staged(id, &upload.staging)
            .await
            .map_err(Error::internal)?;
    }
    Ok(removed)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A full disk found under layers of context is still a full disk (the
    /// conversion of a server-encrypted upload wraps its I/O errors), and
    /// only that: other failures stay what they are.
    #[test]
    fn a_full_disk_is_told_apart_from_other_failures() {
        let full = anyhow::Error::from(std::io::Error::from(std::io::ErrorKind::StorageFull))
            .context("writing the object")
            .context("converting upload x");
        assert!(full_storage_in(&full));
        let other = anyhow::Error::from(std::io::Error::other("bad block")).context("converting");
        assert!(!full_storage_in(&other));
        assert!(!full_storage_in(&anyhow::anyhow!("tag mismatch")));

        let quota = Error::storage(std::io::ErrorKind::QuotaExceeded.into());
        assert_eq!(
            (quota.kind(), quota.code()),
            (Kind::StorageFull, "storage_full")
        );
        let broken = Error::storage(std::io::ErrorKind::PermissionDenied.into());
        assert_eq!((broken.kind(), broken.code()), (Kind::Internal, "internal"));
    }
}
