//! Uploads (tus 1.0.0: core, creation, creation-with-upload, termination,
//! checksum with sha256, expiration) and file download, list, stat, delete.
//!
//! An upload is invisible until its last byte arrives; then the staged bytes
//! are moved durably to their object name and only after that is the file row
//! written, in one transaction with the upload row's removal. A crash at any
//! point leaves either a resumable upload or a complete file, never a visible
//! partial one.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, UNIX_EPOCH};

use axum::Json;
use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use futures_util::{StreamExt, TryStreamExt};
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::api::{ApiError, AppState, Authenticated, ErrorBody};
use crate::lease::UploadLease;
use crate::objects::ByteStream;
use crate::receipt::{Receipt, SignedReceipt};
use crate::store::{DigestAlg, FileRecord, Upload};
use coffer_format::ObjectVerifier;

const TUS_VERSION: &str = "1.0.0";
const TUS_EXTENSIONS: &str = "creation,creation-with-upload,termination,checksum,expiration";
const OFFSET_CONTENT_TYPE: &str = "application/offset+octet-stream";
/// Longest `Upload-Metadata` header: room for the wraps of about 30
/// post-quantum (X-Wing) recipients sent with the upload; more are added by
/// sharing afterwards. Within the request-head limit (`max_header_bytes`).
const MAX_METADATA_HEADER: usize = 48 * 1024;

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

    fn forget(&self, id: &str) {
        self.lock().remove(id);
    }

    /// The verifier of a complete upload of `length` bytes, if known.
    fn finish(&self, id: &str, length: u64) -> Option<ObjectVerifier> {
        let (at, verifier) = self.lock().remove(id)?;
        (at == length).then_some(verifier)
    }
}

/// Routes for uploads and files.
pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(create, options))
        .routes(routes!(append, status, terminate))
        .routes(routes!(list))
        .routes(routes!(download, remove))
        .routes(routes!(stat))
        .routes(routes!(receipt))
}

pub(crate) fn new_id() -> Result<String, ApiError> {
    let mut bytes = [0u8; 16];
    aws_lc_rs::rand::fill(&mut bytes).map_err(|_| ApiError::internal("rng"))?;
    Ok(crate::hex(&bytes))
}

fn http_date(unix: i64) -> String {
    httpdate::fmt_http_date(UNIX_EPOCH + Duration::from_secs(unix.max(0) as u64))
}

fn check_tus(headers: &HeaderMap) -> Result<(), ApiError> {
    match headers.get("tus-resumable").and_then(|v| v.to_str().ok()) {
        Some(TUS_VERSION) => Ok(()),
        _ => Err(ApiError::new(
            StatusCode::PRECONDITION_FAILED,
            "tus_version",
            "Tus-Resumable: 1.0.0 required",
        )),
    }
}

fn header_u64(headers: &HeaderMap, name: &str) -> Result<Option<u64>, ApiError> {
    headers
        .get(name)
        .map(|v| v.to_str().ok().and_then(|s| s.parse::<u64>().ok()))
        .map(|parsed| parsed.ok_or_else(|| ApiError::bad_request(format!("invalid {name}"))))
        .transpose()
}

fn with_tus(mut response: Response) -> Response {
    response
        .headers_mut()
        .insert("tus-resumable", HeaderValue::from_static(TUS_VERSION));
    response
}

/// tus discovery: version, extensions, checksum algorithm, maximum size.
#[utoipa::path(options, path = "/v1/uploads", tag = "uploads",
    responses((status = 204, description = "Tus-Version, Tus-Extension, Tus-Checksum-Algorithm and Tus-Max-Size headers")))]
async fn options(State(state): State<AppState>) -> Response {
    let mut response = StatusCode::NO_CONTENT.into_response();
    let h = response.headers_mut();
    h.insert("tus-version", HeaderValue::from_static(TUS_VERSION));
    h.insert("tus-extension", HeaderValue::from_static(TUS_EXTENSIONS));
    h.insert("tus-checksum-algorithm", HeaderValue::from_static("sha256"));
    h.insert(
        "tus-max-size",
        HeaderValue::from(state.config.max_upload_bytes),
    );
    with_tus(response)
}

/// tus creation (optionally with the first bytes). Key wraps may be sent
/// as `coffer-wrap.<user> <base64 stanza>` pairs in `Upload-Metadata`; they
/// are checked now and committed with the file.
#[utoipa::path(post, path = "/v1/uploads", tag = "uploads", security(("bearer" = [])),
    params(
        ("Tus-Resumable" = String, Header, description = "1.0.0"),
        ("Upload-Length" = u64, Header, description = "Total size in bytes"),
        ("Upload-Metadata" = Option<String>, Header, description = "tus metadata; `coffer-wrap.<user>` pairs carry key wraps"),
        ("Upload-Checksum" = Option<String>, Header, description = "`sha256 <base64>` of this request's body")),
    request_body(content = Vec<u8>, content_type = "application/offset+octet-stream", description = "Optional first bytes"),
    responses(
        (status = 201, description = "Created; Location, Upload-Offset, Upload-Expires; Coffer-File-Id and Coffer-Receipt once complete"),
        (status = 400, body = ErrorBody), (status = 404, description = "A wrap names an unknown user", body = ErrorBody),
        (status = 412, description = "Tus-Resumable missing", body = ErrorBody),
        (status = 413, body = ErrorBody)))]
async fn create(
    State(state): State<AppState>,
    auth: Authenticated,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    check_tus(&headers)?;
    if headers.contains_key("upload-defer-length") {
        return Err(ApiError::bad_request(
            "Upload-Defer-Length is not supported",
        ));
    }
    let length = header_u64(&headers, "upload-length")?
        .ok_or_else(|| ApiError::bad_request("Upload-Length required"))?;
    if length > state.config.max_upload_bytes {
        return Err(ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "too_large",
            "upload larger than the server accepts",
        ));
    }
    let metadata = headers
        .get("upload-metadata")
        .map(|v| v.to_str().unwrap_or_default().to_string())
        .unwrap_or_default();
    if metadata.len() > MAX_METADATA_HEADER {
        return Err(ApiError::bad_request("Upload-Metadata too long"));
    }
    check_usage(&state, &auth, length).await?;
    let wraps = wraps_in_metadata(&metadata)?;
    crate::shares::check_wrap_count(&state, wraps.len())?;
    for (user, stanza) in &wraps {
        crate::shares::check_wrap(&state, user, stanza).await?;
    }
    // An upload that carries key wraps, or says `coffer-e2ee`, is already
    // ciphertext and is stored as sent; anything else the server encrypts.
    let e2ee = !wraps.is_empty() || metadata_has_key(&metadata, E2EE_KEY);
    let id = upload_id(&state, &metadata, e2ee).await?;
    let staging_key = if e2ee {
        None
    } else {
        let key = crate::keyring::random_key().map_err(ApiError::internal)?;
        Some(
            state
                .keyring
                .wrap(&key, crate::keyring::KeyUse::Staging(&id))
                .map_err(ApiError::internal)?,
        )
    };
    let upload = Upload {
        owner: auth.user.name.clone(),
        length,
        offset: 0,
        metadata,
        expires_at: crate::unix_now() + state.config.upload_ttl_secs as i64,
        staged_len: 0,
        staging_key,
        staging: state
            .objects
            .begin(&id, length)
            .await
            .map_err(ApiError::internal)?,
        id,
    };
    state.store.create_upload(&upload).await?;
    let has_body = headers
        .get(header::CONTENT_TYPE)
        .is_some_and(|v| v == OFFSET_CONTENT_TYPE);
    let mut response = if has_body || length == 0 {
        write_chunk(&state, &upload, auth.ip, &headers, body).await?
    } else {
        StatusCode::CREATED.into_response()
    };
    *response.status_mut() = StatusCode::CREATED;
    let h = response.headers_mut();
    h.insert(
        header::LOCATION,
        HeaderValue::from_str(&format!("/v1/uploads/{}", upload.id)).map_err(ApiError::internal)?,
    );
    h.insert(
        "upload-expires",
        HeaderValue::from_str(&http_date(upload.expires_at)).map_err(ApiError::internal)?,
    );
    Ok(with_tus(response))
}

/// Refuses an upload past the user's quota (counting unfinished uploads at
/// their declared length) or past the number of open uploads.
async fn check_usage(state: &AppState, auth: &Authenticated, length: u64) -> Result<(), ApiError> {
    let usage = state.store.usage(&auth.user.name).await?;
    let max_open = state.config.limits.max_open_uploads_per_user;
    let committed = usage.stored_bytes.saturating_add(usage.reserved_bytes);
    let refusal = if usage.open_uploads >= max_open {
        Some((
            "open_uploads",
            ApiError::new(
                StatusCode::TOO_MANY_REQUESTS,
                "too_many_uploads",
                format!("at most {max_open} unfinished uploads; finish or terminate one"),
            ),
        ))
    } else {
        auth.user
            .quota_bytes
            .filter(|quota| committed.saturating_add(length) > *quota)
            .map(|quota| {
                (
                    "quota",
                    ApiError::new(
                        StatusCode::PAYLOAD_TOO_LARGE,
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
    let event = auth.event("limit", "").outcome("refused").detail(kind);
    crate::audit::record(state, event).await?;
    Err(err)
}

/// Upload-Metadata key marking an upload as end-to-end encrypted already.
const E2EE_KEY: &str = "coffer-e2ee";
/// Upload-Metadata key of the file id an E2EE client chose and signed.
const FILE_ID_KEY: &str = "coffer-file-id";

/// The id a new upload gets: the one an E2EE client chose (it is in the
/// object's signed header, so downloads can check they got the file they
/// asked for), else a random one. A chosen id must be 32 lowercase hex
/// digits and not in use.
async fn upload_id(state: &AppState, metadata: &str, e2ee: bool) -> Result<String, ApiError> {
    let Some(value) = metadata_value(metadata, FILE_ID_KEY) else {
        return new_id();
    };
    if !e2ee {
        return Err(ApiError::bad_request(
            "coffer-file-id is only for end-to-end encrypted uploads",
        ));
    }
    let id = base64::engine::general_purpose::STANDARD
        .decode(value)
        .ok()
        .and_then(|bytes| String::from_utf8(bytes).ok())
        .filter(|id| id.len() == 32 && id.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')))
        .ok_or_else(|| ApiError::bad_request("coffer-file-id must be 32 lowercase hex digits"))?;
    if state.store.upload(&id).await?.is_some() || state.store.file(&id).await?.is_some() {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "file_id_taken",
            "an upload or file with this id exists; choose another",
        ));
    }
    Ok(id)
}

/// The value of `wanted` in a tus `Upload-Metadata` header, if present.
fn metadata_value<'m>(metadata: &'m str, wanted: &str) -> Option<&'m str> {
    metadata
        .split(',')
        .map(str::trim)
        .filter_map(|pair| pair.split_once(' ').or(Some((pair, ""))))
        .find(|(key, _)| *key == wanted)
        .map(|(_, value)| value.trim())
}

fn metadata_has_key(metadata: &str, wanted: &str) -> bool {
    metadata
        .split(',')
        .map(|pair| pair.trim().split(' ').next().unwrap_or_default())
        .any(|key| key == wanted)
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
    broken: bool,
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
        digest: checksum.then(|| aws_lc_rs::digest::Context::new(&aws_lc_rs::digest::SHA256)),
        running,
        invalid: None,
    }));
    let shared = meter.clone();
    let stream = body.scan(room, move |room, chunk| {
        let mut meter = shared.lock().unwrap_or_else(|p| p.into_inner());
        if meter.overflow || meter.broken || meter.invalid.is_some() {
            return futures_util::future::ready(None);
        }
        if chunk.is_err() && on_break == OnBreak::KeepWhatArrived {
            meter.broken = true;
            return futures_util::future::ready(None);
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
    state: &AppState,
    upload: &Upload,
    body: Body,
    checksum: bool,
) -> Result<Staged, ApiError> {
    let body: ByteStream<'_> = Box::pin(body.into_data_stream().map_err(std::io::Error::other));
    // Sealed records are whole or not at all, so only E2EE bodies keep a
    // broken-off part.
    let (on_break, running) = match upload.staging_key {
        None => (
            OnBreak::KeepWhatArrived,
            state.digests.take(&upload.id, upload.offset, upload.length),
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
            let key = state.keyring.unwrap(wrapped, usage);
            let key = checked(state, &upload.owner, &upload.id, key).await?;
            crate::at_rest::seal_body(body, &key, &upload.id, upload.offset)
                .map_err(ApiError::internal)?
        }
    };
    let appended = state
        .objects
        .append(&upload.id, upload.staged_len, &upload.staging, body)
        .await
        .map_err(ApiError::internal)?;
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

/// Bytes `start..end` of what the user uploaded: the stored bytes for E2EE
/// files, decrypted on the fly for files the server encrypted.
async fn read_plaintext(
    state: &AppState,
    file: &FileRecord,
    start: u64,
    end: u64,
) -> Result<ByteStream<'static>, ApiError> {
    let Some(object_key) = state.store.object_key(&file.id).await? else {
        return state
            .objects
            .read(&file.id, start, end)
            .await
            .map_err(ApiError::internal);
    };
    let dek = match state.deks.get(&file.id) {
        Some(dek) => dek,
        None => {
            let dek = checked(
                state,
                &file.owner,
                &file.id,
                state
                    .keyring
                    .unwrap(&object_key.key, crate::keyring::KeyUse::File(&file.id)),
            )
            .await?;
            state.deks.put(&file.id, &dek);
            dek
        }
    };
    let stored = state
        .objects
        .read(&file.id, 0, object_key.stored_size)
        .await
        .map_err(ApiError::internal)?;
    let plain = crate::at_rest::decrypt_range(stored, &dek, start, end).await;
    checked(state, &file.owner, &file.id, plain).await
}

/// Passes `result` through, turning an error into an audited integrity
/// failure (fail closed).
async fn checked<T, E: std::fmt::Display>(
    state: &AppState,
    owner: &str,
    target: &str,
    result: Result<T, E>,
) -> Result<T, ApiError> {
    match result {
        Ok(value) => Ok(value),
        Err(err) => Err(integrity_failure(state, owner, target, err).await),
    }
}

/// Logs, counts and audits a key or data integrity failure; the caller
/// fails closed with the returned error.
async fn integrity_failure(
    state: &AppState,
    owner: &str,
    target: &str,
    err: impl std::fmt::Display,
) -> ApiError {
    metrics::counter!("coffer_integrity_failures_total").increment(1);
    tracing::error!(owner, target, "integrity failure: {err:#}");
    let event = crate::audit::Event::new(owner, None, "integrity", target).outcome("failed");
    let _ = crate::audit::record(state, event).await;
    ApiError::new(
        StatusCode::INTERNAL_SERVER_ERROR,
        "integrity",
        "stored data or keys failed verification",
    )
}

/// Upload-Metadata key prefix of a key wrap sent with the upload
/// (`coffer-wrap.<user> <base64 stanza>`), so that the file and its wraps
/// are committed in one transaction.
const WRAP_KEY_PREFIX: &str = "coffer-wrap.";

/// The key wraps in a tus `Upload-Metadata` value; other pairs are ignored.
fn wraps_in_metadata(metadata: &str) -> Result<Vec<crate::store::NewWrap>, ApiError> {
    let mut wraps: Vec<crate::store::NewWrap> = Vec::new();
    for pair in metadata.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let (key, value) = pair.split_once(' ').unwrap_or((pair, ""));
        let Some(user) = key.strip_prefix(WRAP_KEY_PREFIX) else {
            continue;
        };
        if wraps.iter().any(|(seen, _)| seen == user) {
            return Err(ApiError::bad_request(format!("two wraps for {user}")));
        }
        let stanza = base64::engine::general_purpose::STANDARD
            .decode(value.trim())
            .map_err(|_| ApiError::bad_request("a wrap in Upload-Metadata is not base64"))?;
        wraps.push((user.to_string(), stanza));
    }
    Ok(wraps)
}

/// The caller's own upload, or 404 (another user's upload is not revealed).
async fn owned_upload(
    state: &AppState,
    auth: &Authenticated,
    id: &str,
) -> Result<Upload, ApiError> {
    match state.store.upload(id).await? {
        Some(upload)
            if upload.owner == auth.user.name && upload.expires_at >= crate::unix_now() =>
        {
            Ok(upload)
        }
        _ => Err(ApiError::not_found("upload")),
    }
}

/// tus offset of an upload.
#[utoipa::path(head, path = "/v1/uploads/{id}", tag = "uploads", security(("bearer" = [])),
    params(("id" = String, Path, description = "Upload id")),
    responses((status = 200, description = "Upload-Offset, Upload-Length, Upload-Expires"), (status = 404)))]
async fn status(
    State(state): State<AppState>,
    auth: Authenticated,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let upload = owned_upload(&state, &auth, &id).await?;
    let mut response = StatusCode::OK.into_response();
    let h = response.headers_mut();
    h.insert("upload-offset", HeaderValue::from(upload.offset));
    h.insert("upload-length", HeaderValue::from(upload.length));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert(
        "upload-expires",
        HeaderValue::from_str(&http_date(upload.expires_at)).map_err(ApiError::internal)?,
    );
    if !upload.metadata.is_empty() {
        h.insert(
            "upload-metadata",
            HeaderValue::from_str(&upload.metadata).map_err(ApiError::internal)?,
        );
    }
    Ok(with_tus(response))
}

/// tus append at the server's offset; the last byte commits the file.
#[utoipa::path(patch, path = "/v1/uploads/{id}", tag = "uploads", security(("bearer" = [])),
    params(("id" = String, Path, description = "Upload id"),
        ("Upload-Offset" = u64, Header, description = "Must equal the server's offset"),
        ("Upload-Checksum" = Option<String>, Header, description = "`sha256 <base64>` of this body")),
    request_body(content = Vec<u8>, content_type = "application/offset+octet-stream"),
    responses(
        (status = 204, description = "Appended; Upload-Offset; Coffer-File-Id and Coffer-Receipt when complete"),
        (status = 404, body = ErrorBody), (status = 409, description = "Offset mismatch", body = ErrorBody),
        (status = 413, body = ErrorBody), (status = 415, body = ErrorBody),
        (status = 423, description = "Another request is writing this upload", body = ErrorBody),
        (status = 460, description = "Checksum mismatch", body = ErrorBody)))]
async fn append(
    State(state): State<AppState>,
    auth: Authenticated,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    check_tus(&headers)?;
    if headers
        .get(header::CONTENT_TYPE)
        .is_none_or(|v| v != OFFSET_CONTENT_TYPE)
    {
        return Err(ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "content_type",
            "Content-Type: application/offset+octet-stream required",
        ));
    }
    let upload = owned_upload(&state, &auth, &id).await?;
    Ok(with_tus(
        write_chunk(&state, &upload, auth.ip, &headers, body).await?,
    ))
}

/// Parses `Upload-Checksum: sha256 <base64>`.
fn expected_checksum(headers: &HeaderMap) -> Result<Option<[u8; 32]>, ApiError> {
    let Some(value) = headers.get("upload-checksum") else {
        return Ok(None);
    };
    let text = value
        .to_str()
        .map_err(|_| ApiError::bad_request("invalid Upload-Checksum"))?;
    let (algorithm, digest) = text
        .split_once(' ')
        .ok_or_else(|| ApiError::bad_request("invalid Upload-Checksum"))?;
    if algorithm != "sha256" {
        return Err(ApiError::bad_request(
            "unsupported checksum algorithm (sha256 only)",
        ));
    }
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(digest.trim())
        .map_err(|_| ApiError::bad_request("invalid Upload-Checksum"))?;
    bytes
        .try_into()
        .map(Some)
        .map_err(|_| ApiError::bad_request("invalid Upload-Checksum"))
}

/// Appends one request body at the upload's offset; commits when complete.
async fn write_chunk(
    state: &AppState,
    upload: &Upload,
    ip: Option<std::net::IpAddr>,
    headers: &HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let claimed_offset = header_u64(headers, "upload-offset")?.unwrap_or(0);
    let offset_mismatch = || {
        ApiError::new(
            StatusCode::CONFLICT,
            "offset_mismatch",
            "Upload-Offset does not match the server's offset",
        )
    };
    if claimed_offset != upload.offset {
        return Err(offset_mismatch());
    }
    let checksum = expected_checksum(headers)?;
    let lease = lease_upload(state, &upload.id).await?;
    // The row read before the lease may be stale: another request (on any
    // node) may have moved the upload on and let go in between. Staging at
    // a stale offset would cut away what that request stored.
    let upload = &state
        .store
        .upload(&upload.id)
        .await?
        .ok_or_else(|| ApiError::new(StatusCode::NOT_FOUND, "not_found", "no such upload"))?;
    if claimed_offset != upload.offset {
        return Err(offset_mismatch());
    }
    let mut appended = stage(state, upload, body, checksum.is_some()).await?;
    let rollback = || state.objects.discard_after(&upload.id, upload.staged_len);
    if lease.lost() {
        rollback().await.map_err(ApiError::internal)?;
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "lease_lost",
            "this request lost its hold on the upload; resume from the server's offset",
        ));
    }
    if let Some(why) = appended.invalid.take() {
        rollback().await.map_err(ApiError::internal)?;
        return Err(invalid_object(why));
    }
    if appended.overflow {
        rollback().await.map_err(ApiError::internal)?;
        return Err(ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "too_large",
            "body goes past Upload-Length",
        ));
    }
    if appended.broken && checksum.is_some() {
        // A checksum covers the whole body; a part of it cannot be checked.
        rollback().await.map_err(ApiError::internal)?;
        return Err(ApiError::bad_request("the body broke off"));
    }
    if checksum.is_some() && checksum != appended.sha256 {
        rollback().await.map_err(ApiError::internal)?;
        return Err(ApiError::new(
            StatusCode::from_u16(460).map_err(ApiError::internal)?,
            "checksum_mismatch",
            "Upload-Checksum does not match the body",
        ));
    }
    tracing::debug!(
        upload = upload.id,
        from = upload.offset,
        plain = appended.plain,
        staged = appended.staged,
        broken = appended.broken,
        "appended"
    );
    metrics::counter!("coffer_upload_bytes_total").increment(appended.plain);
    let new_offset = upload.offset + appended.plain;
    let staged_len = upload.staged_len + appended.staged;
    if !state
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
        rollback().await.map_err(ApiError::internal)?;
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "offset_mismatch",
            "the upload moved on concurrently",
        ));
    }
    if let Some(running) = appended.running.take() {
        state.digests.put(&upload.id, new_offset, running);
    }
    let mut response = StatusCode::NO_CONTENT.into_response();
    response
        .headers_mut()
        .insert("upload-offset", HeaderValue::from(new_offset));
    if new_offset == upload.length {
        let upload = Upload {
            offset: new_offset,
            staged_len,
            staging: std::mem::take(&mut appended.staging),
            ..upload.clone()
        };
        let signed = commit(state, &upload).await?;
        let event = crate::audit::Event::new(&upload.owner, ip, "upload", &signed.receipt.file_id)
            .detail(format!("{} bytes", signed.receipt.size));
        crate::audit::record(state, event).await?;
        let h = response.headers_mut();
        h.insert(
            "coffer-file-id",
            HeaderValue::from_str(&signed.receipt.file_id).map_err(ApiError::internal)?,
        );
        let encoded =
            crate::auth::b64().encode(serde_json::to_vec(&signed).map_err(ApiError::internal)?);
        h.insert(
            "coffer-receipt",
            HeaderValue::from_str(&encoded).map_err(ApiError::internal)?,
        );
    }
    lease.release().await?;
    Ok(response)
}

/// Takes the upload's lease, or answers 423.
async fn lease_upload(state: &AppState, id: &str) -> Result<UploadLease, ApiError> {
    UploadLease::take(&state.store, id).await?.ok_or_else(|| {
        ApiError::new(
            StatusCode::LOCKED,
            "busy",
            "another request is writing this upload",
        )
    })
}

/// Moves a complete upload into place and records it, with a receipt.
pub async fn commit(state: &AppState, upload: &Upload) -> Result<SignedReceipt, ApiError> {
    // An E2EE upload becomes its object where it lies (S3 cannot rename), so
    // the file keeps the upload's id; a server-encrypted one is rewritten
    // into a new object.
    let file_id = match upload.staging_key {
        None => upload.id.clone(),
        Some(_) => new_id()?,
    };
    let (size, digest, digest_alg, object_key) = match &upload.staging_key {
        None => {
            let verified = verify_e2ee(state, upload).await?;
            let size = state
                .objects
                .commit(&upload.id, &upload.staging, upload.staged_len)
                .await
                .map_err(ApiError::internal)?;
            (size, verified.signed.root, DigestAlg::Coffer2Root, None)
        }
        Some(wrapped) => {
            let staging = checked(
                state,
                &upload.owner,
                &upload.id,
                state
                    .keyring
                    .unwrap(wrapped, crate::keyring::KeyUse::Staging(&upload.id)),
            )
            .await?;
            let converted = checked(
                state,
                &upload.owner,
                &upload.id,
                crate::at_rest::convert(
                    state.objects.as_ref(),
                    &staging,
                    upload,
                    &file_id,
                    &state.identity,
                )
                .await,
            )
            .await?;
            let key = state
                .keyring
                .wrap(&converted.dek, crate::keyring::KeyUse::File(&file_id))
                .map_err(ApiError::internal)?;
            let object_key = crate::store::ObjectKey {
                file_id: file_id.clone(),
                key,
                stored_size: converted.stored_size,
            };
            (
                converted.plain_size,
                converted.plain_blake3,
                DigestAlg::Blake3,
                Some(object_key),
            )
        }
    };
    if size != upload.length {
        let event = crate::audit::Event::new(&upload.owner, None, "integrity", &upload.id)
            .outcome("failed")
            .detail(format!("staged {size} bytes, declared {}", upload.length));
        crate::audit::record(state, event).await?;
        return Err(ApiError::internal(format!(
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
            server: state.identity.public().to_string(),
        },
        &state.identity,
    );
    let record = FileRecord {
        id: file_id,
        owner: upload.owner.clone(),
        size,
        digest: digest.to_vec(),
        digest_alg,
        created_at: time,
        receipt: serde_json::to_string(&signed).map_err(ApiError::internal)?,
    };
    let wraps = wraps_in_metadata(&upload.metadata)?;
    state
        .store
        .commit_upload(&upload.id, &record, &wraps, object_key.as_ref())
        .await?;
    if object_key.is_some() {
        // The sealed records are no longer needed once the object is in.
        state
            .objects
            .delete_staged(&upload.id, &upload.staging)
            .await
            .map_err(ApiError::internal)?;
    }
    Ok(signed)
}

/// The error for bytes that do not make a coffer v2 object.
fn invalid_object(why: impl std::fmt::Display) -> ApiError {
    ApiError::new(
        StatusCode::UNPROCESSABLE_ENTITY,
        "invalid_object",
        format!("the upload is not a valid coffer v2 object: {why}"),
    )
}

/// The keyless check of a complete E2EE upload, from the verifier that
/// watched its bytes arrive or (after a restart, or a PATCH another node
/// took) from storage: a valid v2 object whose header names this upload's
/// id and whose signature is by the uploader's registered key. A refused
/// upload is removed whole, and the refusal audited.
async fn verify_e2ee(
    state: &AppState,
    upload: &Upload,
) -> Result<coffer_format::VerifiedObject, ApiError> {
    let verified = match state.digests.finish(&upload.id, upload.length) {
        Some(verifier) => verifier.finish(),
        None => verify_stored(state, upload).await?,
    };
    let refusal = match verified {
        Err(err) => invalid_object(err),
        Ok(v) if v.core.file_id_hex() != upload.id => invalid_object(
            "its header names another file id than this upload's (the client must create the upload under the id it signs)",
        ),
        Ok(v) => {
            let uploader = state
                .store
                .user(&upload.owner)
                .await?
                .and_then(|user| coffer_format::PublicIdentity::parse(&user.public_identity).ok())
                .ok_or_else(|| ApiError::internal("the uploader has no valid key"))?;
            if v.sender().is(&uploader) {
                return Ok(v);
            }
            ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
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
    reject_upload(state, upload, &refusal).await?;
    Err(refusal)
}

/// Verifies a staged E2EE upload by reading it back (one pass, no key).
async fn verify_stored(
    state: &AppState,
    upload: &Upload,
) -> Result<coffer_format::Result<coffer_format::VerifiedObject>, ApiError> {
    let mut stream = state
        .objects
        .read_staged(&upload.id, &upload.staging, upload.staged_len)
        .await
        .map_err(ApiError::internal)?;
    let mut verifier = ObjectVerifier::new(upload.length);
    while let Some(piece) = stream.next().await {
        let piece = piece.map_err(ApiError::internal)?;
        if let Err(err) = verifier.update(&piece) {
            return Ok(Err(err));
        }
    }
    Ok(verifier.finish())
}

/// Removes a complete upload that was refused at commit: it can never
/// become a file, so it must not hold a slot or quota.
async fn reject_upload(state: &AppState, upload: &Upload, why: &ApiError) -> Result<(), ApiError> {
    state.digests.forget(&upload.id);
    state.store.delete_upload(&upload.id).await?;
    state
        .objects
        .delete_staged(&upload.id, &upload.staging)
        .await
        .map_err(ApiError::internal)?;
    let event = crate::audit::Event::new(&upload.owner, None, "upload_rejected", &upload.id)
        .outcome("refused")
        .detail(why.code());
    crate::audit::record(state, event).await?;
    Ok(())
}

/// tus termination: abandons an upload.
#[utoipa::path(delete, path = "/v1/uploads/{id}", tag = "uploads", security(("bearer" = [])),
    params(("id" = String, Path, description = "Upload id")),
    responses((status = 204), (status = 404, body = ErrorBody)))]
async fn terminate(
    State(state): State<AppState>,
    auth: Authenticated,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    check_tus(&headers)?;
    let upload = owned_upload(&state, &auth, &id).await?;
    let lease = lease_upload(&state, &upload.id).await?;
    state.digests.forget(&upload.id);
    state.store.delete_upload(&upload.id).await?;
    drop(lease);
    state
        .objects
        .delete_staged(&upload.id, &upload.staging)
        .await
        .map_err(ApiError::internal)?;
    crate::audit::record(&state, auth.event("upload_terminate", &upload.id)).await?;
    Ok(with_tus(StatusCode::NO_CONTENT.into_response()))
}

/// Removes uploads past their expiry, rows first so nothing points at
/// deleted bytes.
pub async fn sweep_expired(state: &AppState) -> Result<usize, ApiError> {
    let expired = state.store.expired_uploads(crate::unix_now()).await?;
    let mut removed = 0;
    for id in &expired {
        // A PATCH that began before the expiry may still be writing; leave
        // that upload to the next sweep.
        let Some(_lease) = UploadLease::take(&state.store, id).await? else {
            continue;
        };
        let Some(upload) = state.store.upload(id).await? else {
            continue;
        };
        removed += 1;
        state.digests.forget(id);
        state.store.delete_upload(id).await?;
        state
            .objects
            .delete_staged(id, &upload.staging)
            .await
            .map_err(ApiError::internal)?;
    }
    Ok(removed)
}

pub(crate) async fn owned_file(
    state: &AppState,
    auth: &Authenticated,
    id: &str,
) -> Result<FileRecord, ApiError> {
    match state.store.file(id).await? {
        Some(file) if file.owner == auth.user.name => Ok(file),
        _ => Err(ApiError::not_found("file")),
    }
}

/// A file the caller owns or that was shared with them (holds a wrap).
async fn readable_file(
    state: &AppState,
    auth: &Authenticated,
    id: &str,
) -> Result<FileRecord, ApiError> {
    let Some(file) = state.store.file(id).await? else {
        return Err(ApiError::not_found("file"));
    };
    if file.owner == auth.user.name || state.store.wrap(id, &auth.user.name).await?.is_some() {
        Ok(file)
    } else {
        Err(ApiError::not_found("file"))
    }
}

/// A committed file as the API shows it.
#[derive(serde::Serialize, ToSchema)]
pub struct FileInfo {
    /// Random id.
    id: String,
    /// Owning user.
    owner: String,
    /// Size of the stored (encrypted) bytes.
    size: u64,
    /// The content identity, `<algorithm>:<hex>` (docs/API.md "Content
    /// identity"): `coffer2-root:` for end-to-end encrypted files.
    digest: String,
    /// Unix time of the commit.
    created_at: i64,
}

impl From<&FileRecord> for FileInfo {
    fn from(file: &FileRecord) -> Self {
        Self {
            id: file.id.clone(),
            owner: file.owner.clone(),
            size: file.size,
            digest: content_id(file),
            created_at: file.created_at,
        }
    }
}

/// `<algorithm>:<hex>` of a file's content digest.
pub(crate) fn content_id(file: &FileRecord) -> String {
    format!("{}:{}", file.digest_alg.name(), crate::hex(&file.digest))
}

/// A list of files.
#[derive(serde::Serialize, ToSchema)]
pub struct FileList {
    files: Vec<FileInfo>,
    /// Pass as `after` for the next page; absent on the last page.
    #[serde(skip_serializing_if = "Option::is_none")]
    next: Option<String>,
}

/// Entries per listing page, at most and by default.
const MAX_PAGE: u32 = 1000;

#[derive(serde::Deserialize)]
struct ListQuery {
    #[serde(default)]
    shared_with_me: bool,
    /// The `next` of the previous page.
    after: Option<String>,
    /// Entries per page (1 to 1000).
    limit: Option<u32>,
}

/// Parses a page cursor: `<created_at>.<id>`.
fn parse_cursor(cursor: &str) -> Result<(i64, String), ApiError> {
    let bad = || ApiError::bad_request("invalid page cursor");
    let (time, id) = cursor.split_once('.').ok_or_else(bad)?;
    crate::objects::checked(id).map_err(|_| bad())?;
    Ok((time.parse().map_err(|_| bad())?, id.to_string()))
}

/// Files the caller owns, or (`shared_with_me=true`) that others shared,
/// newest first, in pages.
#[utoipa::path(get, path = "/v1/files", tag = "files", security(("bearer" = [])),
    params(("shared_with_me" = Option<bool>, Query),
        ("after" = Option<String>, Query, description = "`next` of the previous page"),
        ("limit" = Option<u32>, Query, description = "Entries per page, 1 to 1000 (default 1000)")),
    responses((status = 200, body = FileList), (status = 400, body = ErrorBody)))]
async fn list(
    State(state): State<AppState>,
    auth: Authenticated,
    axum::extract::Query(query): axum::extract::Query<ListQuery>,
) -> Result<Json<FileList>, ApiError> {
    let limit = query.limit.unwrap_or(MAX_PAGE);
    if !(1..=MAX_PAGE).contains(&limit) {
        return Err(ApiError::bad_request("limit must be 1 to 1000"));
    }
    let page = crate::store::Page {
        after: query.after.as_deref().map(parse_cursor).transpose()?,
        limit,
    };
    let files = if query.shared_with_me {
        state.store.shared_with(&auth.user.name, &page).await?
    } else {
        state.store.list_files(&auth.user.name, &page).await?
    };
    let next = (files.len() == limit as usize)
        .then(|| files.last().map(|f| format!("{}.{}", f.created_at, f.id)))
        .flatten();
    Ok(Json(FileList {
        files: files.iter().map(FileInfo::from).collect(),
        next,
    }))
}

/// One file's record.
#[utoipa::path(get, path = "/v1/files/{id}/meta", tag = "files", security(("bearer" = [])),
    params(("id" = String, Path)),
    responses((status = 200, body = FileInfo), (status = 404, body = ErrorBody)))]
async fn stat(
    State(state): State<AppState>,
    auth: Authenticated,
    Path(id): Path<String>,
) -> Result<Json<FileInfo>, ApiError> {
    Ok(Json(FileInfo::from(
        &readable_file(&state, &auth, &id).await?,
    )))
}

/// The signed receipt of a committed upload (owner only).
#[utoipa::path(get, path = "/v1/files/{id}/receipt", tag = "files", security(("bearer" = [])),
    params(("id" = String, Path)),
    responses((status = 200, description = "`{receipt, signature}` (see docs/API.md)", body = serde_json::Value),
        (status = 404, body = ErrorBody)))]
async fn receipt(
    State(state): State<AppState>,
    auth: Authenticated,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let file = owned_file(&state, &auth, &id).await?;
    Ok(([(header::CONTENT_TYPE, "application/json")], file.receipt).into_response())
}

/// Deletes a file with its wraps and links (owner only).
#[utoipa::path(delete, path = "/v1/files/{id}", tag = "files", security(("bearer" = [])),
    params(("id" = String, Path)),
    responses((status = 204), (status = 404, body = ErrorBody)))]
async fn remove(
    State(state): State<AppState>,
    auth: Authenticated,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    let file = owned_file(&state, &auth, &id).await?;
    // Row first: once it is gone nothing can reach the object, so a crash
    // between the two leaves at worst an unreachable object, never a
    // listed file without bytes.
    state.store.delete_file(&file.id).await?;
    state.deks.forget(&file.id);
    crate::audit::record(&state, auth.event("delete", &file.id)).await?;
    state
        .objects
        .delete_object(&file.id)
        .await
        .map_err(ApiError::internal)?;
    Ok(StatusCode::NO_CONTENT)
}

/// Parses a single `bytes=` range against `size`: Ok(None) for no header,
/// Err for an unsatisfiable or malformed one.
fn parse_range(value: Option<&HeaderValue>, size: u64) -> Result<Option<(u64, u64)>, ()> {
    let Some(value) = value else { return Ok(None) };
    let spec = value
        .to_str()
        .map_err(|_| ())?
        .strip_prefix("bytes=")
        .ok_or(())?;
    if spec.contains(',') {
        return Err(());
    }
    let (first, last) = spec.split_once('-').ok_or(())?;
    let (start, end) = match (first.trim(), last.trim()) {
        ("", suffix) => {
            let n: u64 = suffix.parse().map_err(|_| ())?;
            (size.saturating_sub(n), size)
        }
        (a, "") => (a.parse().map_err(|_| ())?, size),
        (a, b) => {
            let (a, b): (u64, u64) = (a.parse().map_err(|_| ())?, b.parse().map_err(|_| ())?);
            (a, b.saturating_add(1).min(size))
        }
    };
    if start >= end || start >= size {
        return Err(());
    }
    Ok(Some((start, end)))
}

/// The stored (encrypted) bytes, with Range, ETag and Content-Digest.
#[utoipa::path(get, path = "/v1/files/{id}", tag = "files", security(("bearer" = [])),
    params(("id" = String, Path), ("Range" = Option<String>, Header), ("If-None-Match" = Option<String>, Header)),
    responses(
        (status = 200, content_type = "application/octet-stream", body = Vec<u8>),
        (status = 206, content_type = "application/octet-stream", body = Vec<u8>),
        (status = 304), (status = 404, body = ErrorBody),
        (status = 416, body = ErrorBody)))]
async fn download(
    State(state): State<AppState>,
    auth: Authenticated,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let file = readable_file(&state, &auth, &id).await?;
    let range = headers
        .get(header::RANGE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("all");
    crate::audit::record(&state, auth.event("download", &file.id).detail(range)).await?;
    serve_object(&state, &file, &headers).await
}

/// Streams a file's stored bytes, honouring `Range` and `If-None-Match`.
pub(crate) async fn serve_object(
    state: &AppState,
    file: &FileRecord,
    headers: &HeaderMap,
) -> Result<Response, ApiError> {
    let hex = crate::hex(&file.digest);
    let etag = format!("\"{}-{hex}\"", file.digest_alg.name());
    // RFC 9530 dictionary key: the registered `sha-256` for old files, the
    // algorithm's own name otherwise.
    let key = match file.digest_alg {
        DigestAlg::Sha256 => "sha-256",
        other => other.name(),
    };
    let digest = format!(
        "{key}=:{}:",
        base64::engine::general_purpose::STANDARD.encode(&file.digest)
    );
    if headers
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.split(',').any(|t| t.trim() == etag))
    {
        let mut response = StatusCode::NOT_MODIFIED.into_response();
        response.headers_mut().insert(
            header::ETAG,
            HeaderValue::from_str(&etag).map_err(ApiError::internal)?,
        );
        return Ok(response);
    }
    let range = match parse_range(headers.get(header::RANGE), file.size) {
        Ok(range) => range,
        Err(()) => {
            let mut response = ApiError::new(
                StatusCode::RANGE_NOT_SATISFIABLE,
                "bad_range",
                "range not satisfiable",
            )
            .into_response();
            response.headers_mut().insert(
                header::CONTENT_RANGE,
                HeaderValue::from_str(&format!("bytes */{}", file.size))
                    .map_err(ApiError::internal)?,
            );
            return Ok(response);
        }
    };
    let (start, end) = range.unwrap_or((0, file.size));
    let stream = read_plaintext(state, file, start, end).await?;
    metrics::counter!("coffer_download_bytes_total").increment(end - start);
    let mut response = Response::new(Body::from_stream(stream));
    let h = response.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/octet-stream"),
    );
    h.insert(header::CONTENT_LENGTH, HeaderValue::from(end - start));
    h.insert(header::ACCEPT_RANGES, HeaderValue::from_static("bytes"));
    h.insert(
        header::ETAG,
        HeaderValue::from_str(&etag).map_err(ApiError::internal)?,
    );
    if range.is_some() {
        *response.status_mut() = StatusCode::PARTIAL_CONTENT;
        let h = response.headers_mut();
        h.insert(
            header::CONTENT_RANGE,
            HeaderValue::from_str(&format!("bytes {start}-{}/{}", end - 1, file.size))
                .map_err(ApiError::internal)?,
        );
        // RFC 9530: Content-Digest covers the bytes in this message; for a
        // part, give the whole representation's digest as Repr-Digest.
        h.insert(
            "repr-digest",
            HeaderValue::from_str(&digest).map_err(ApiError::internal)?,
        );
    } else {
        h.insert(
            "content-digest",
            HeaderValue::from_str(&digest).map_err(ApiError::internal)?,
        );
        h.insert(
            "repr-digest",
            HeaderValue::from_str(&digest).map_err(ApiError::internal)?,
        );
    }
    Ok(response)
}

#[cfg(test)]
mod tests {
    use super::parse_range;
    use axum::http::HeaderValue;

    #[test]
    fn ranges() {
        let r = |s: &str| parse_range(Some(&HeaderValue::from_str(s).unwrap()), 100);
        assert_eq!(parse_range(None, 100), Ok(None));
        assert_eq!(r("bytes=0-9"), Ok(Some((0, 10))));
        assert_eq!(r("bytes=90-"), Ok(Some((90, 100))));
        assert_eq!(r("bytes=-5"), Ok(Some((95, 100))));
        assert_eq!(r("bytes=95-1000"), Ok(Some((95, 100))));
        assert!(r("bytes=100-").is_err());
        assert!(r("bytes=5-4").is_err());
        assert!(r("bytes=0-1,5-6").is_err());
        assert!(r("items=0-1").is_err());
        assert!(r("bytes=x-1").is_err());
    }
}
