//! Committed files: listing, metadata, receipts, deletion, and the stored
//! bytes with `Range`, `If-None-Match`, the ETag and digest headers.

use axum::body::Body;
use axum::extract::State;

use crate::http::extract::{Json, Path, Query};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::codec::{digest, range};
use crate::http::auth::Authenticated;
use crate::http::error::{ApiError, ErrorBody};
use crate::http::state::AppState;
use crate::service::{Error, Kind, audit, downloads, files};
use crate::store::FileRecord;

/// Routes for files.
pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list))
        .routes(routes!(download, remove))
        .routes(routes!(stat))
        .routes(routes!(receipt))
        .routes(routes!(received))
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
    /// Unix time at which the file is deleted; absent: kept until deleted.
    #[serde(skip_serializing_if = "Option::is_none")]
    expires_at: Option<i64>,
    /// Deleted once every recipient acknowledged it.
    delete_when_received: bool,
    /// The upload link it came through: then it is signed by the anonymous
    /// sender's one-time key, not by `owner`'s.
    #[serde(skip_serializing_if = "Option::is_none")]
    via_request: Option<String>,
    /// With `details=true`: what a client needs to show the file.
    #[serde(skip_serializing_if = "Option::is_none")]
    details: Option<FileDetailsInfo>,
}

/// A file's wrap, header and recipients in a listing with details.
#[derive(serde::Serialize, ToSchema)]
pub struct FileDetailsInfo {
    /// The caller's wrap of the file key (base64url, as `GET .../wrap`).
    #[serde(skip_serializing_if = "Option::is_none")]
    stanza: Option<String>,
    /// The core header, the bytes `GET /v1/files/{id}` starts with
    /// (base64url); absent when they do not start with one.
    #[serde(skip_serializing_if = "Option::is_none")]
    header: Option<String>,
    /// For the owner: the other users holding a wrap.
    #[serde(skip_serializing_if = "Option::is_none")]
    shared_with: Option<Vec<String>>,
    /// Present (true) when the file's stored bytes are lost on the server:
    /// a download would fail with 500 `object_missing`.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    missing: bool,
}

impl From<files::FileDetails> for FileDetailsInfo {
    fn from(details: files::FileDetails) -> Self {
        use base64::Engine as _;
        let b64 = crate::service::session::b64();
        Self {
            stanza: details.stanza.map(|s| b64.encode(s)),
            header: details.header.map(|h| b64.encode(h)),
            shared_with: details.shared_with,
            missing: details.missing,
        }
    }
}

impl From<&FileRecord> for FileInfo {
    fn from(file: &FileRecord) -> Self {
        Self {
            id: file.id.clone(),
            owner: file.owner.clone(),
            size: file.size,
            digest: files::content_id(file),
            created_at: file.created_at,
            expires_at: file.expires_at,
            delete_when_received: file.delete_when_received,
            via_request: file.via_request.clone(),
            details: None,
        }
    }
}

/// A list of files.
#[derive(serde::Serialize, ToSchema)]
pub struct FileList {
    files: Vec<FileInfo>,
    /// Pass as `after` for the next page; absent on the last page.
    #[serde(skip_serializing_if = "Option::is_none")]
    next: Option<String>,
}

#[derive(serde::Deserialize)]
struct ListQuery {
    #[serde(default)]
    shared_with_me: bool,
    /// With `shared_with_me`: only files not yet acknowledged.
    #[serde(default)]
    unreceived: bool,
    /// The `next` of the previous page.
    after: Option<String>,
    /// Entries per page (1 to 1000; with `details`, 1 to 200).
    limit: Option<u32>,
    /// Each entry with the caller's wrap, the header and (for the owner)
    /// the recipients: one request per page instead of three per file.
    #[serde(default)]
    details: bool,
}

/// Files the caller owns, or (`shared_with_me=true`) that others shared,
/// newest first, in pages.
#[utoipa::path(get, path = "/v1/files", tag = "files", security(("bearer" = [])),
    params(("shared_with_me" = Option<bool>, Query),
        ("unreceived" = Option<bool>, Query, description = "With `shared_with_me`: only files the caller has not acknowledged"),
        ("after" = Option<String>, Query, description = "`next` of the previous page"),
        ("limit" = Option<u32>, Query, description = "Entries per page, 1 to 1000 (default 1000); with `details`, 1 to 200 (default 200)"),
        ("details" = Option<bool>, Query, description = "Each entry with `details`: the caller's wrap, the header, and for the owner the recipients")),
    responses((status = 200, body = FileList), (status = 400, body = ErrorBody)))]
async fn list(
    State(state): State<AppState>,
    auth: Authenticated,
    Query(query): Query<ListQuery>,
) -> Result<Json<FileList>, ApiError> {
    let listing = match (query.shared_with_me, query.unreceived) {
        (false, false) => files::Listing::Owned,
        (true, false) => files::Listing::SharedWithMe,
        (true, true) => files::Listing::Unreceived,
        (false, true) => return Err(Error::bad_request("unreceived needs shared_with_me")),
    };
    let (records, next) = files::list(
        &state,
        &auth.caller,
        listing,
        query.after.as_deref(),
        query.limit,
        query.details,
    )
    .await?;
    let mut infos: Vec<FileInfo> = records.iter().map(FileInfo::from).collect();
    if query.details {
        let details = files::details(&state, &auth.caller, &records).await?;
        for (info, details) in infos.iter_mut().zip(details) {
            info.details = Some(details.into());
        }
    }
    Ok(Json(FileList { files: infos, next }))
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
    let file = files::readable_file(&state, &auth.caller, &id).await?;
    Ok(Json(FileInfo::from(&file)))
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
    let file = files::owned_file(&state, &auth.caller, &id).await?;
    Ok(([(header::CONTENT_TYPE, "application/json")], file.receipt).into_response())
}

/// The owner deletes a file with its wraps and links; a recipient removes
/// it from their own view only (their wrap), the owner's file stays.
#[utoipa::path(delete, path = "/v1/files/{id}", tag = "files", security(("bearer" = [])),
    params(("id" = String, Path)),
    responses((status = 200, description = "`{removed: \"file\" | \"share\"}`", body = serde_json::Value), (status = 404, body = ErrorBody)))]
async fn remove(
    State(state): State<AppState>,
    auth: Authenticated,
    Path(id): Path<String>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let removed = match files::remove(&state, &auth.caller, &id).await? {
        files::Removed::File => "file",
        files::Removed::Share => "share",
    };
    Ok(Json(serde_json::json!({ "removed": removed })))
}

/// A recipient acknowledges that a file shared with them arrived (`coffer
/// inbox`): their listings with `unreceived=true` leave it out from then
/// on, on every machine.
#[utoipa::path(put, path = "/v1/files/{id}/received", tag = "files", security(("bearer" = [])),
    params(("id" = String, Path)),
    responses((status = 204), (status = 404, description = "No such file shared with the caller", body = ErrorBody)))]
async fn received(
    State(state): State<AppState>,
    auth: Authenticated,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    files::mark_received(&state, &auth.caller, &id).await?;
    Ok(StatusCode::NO_CONTENT)
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
    let file = files::readable_file(&state, &auth.caller, &id).await?;
    let range = headers
        .get(header::RANGE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("all");
    audit::record(
        &state,
        auth.caller.event("download", &file.id).detail(range),
    )
    .await?;
    serve_object(&state, &file, &headers).await
}

fn header_value(text: &str) -> Result<HeaderValue, ApiError> {
    HeaderValue::from_str(text).map_err(Error::internal)
}

/// Streams a file's stored bytes, honouring `Range` and `If-None-Match`.
pub(crate) async fn serve_object(
    state: &AppState,
    file: &FileRecord,
    headers: &HeaderMap,
) -> Result<Response, ApiError> {
    let etag = digest::etag(file.digest_alg, &file.digest);
    let dictionary = digest::dictionary(file.digest_alg, &file.digest);
    if headers
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| digest::none_match(v, &etag))
    {
        let mut response = StatusCode::NOT_MODIFIED.into_response();
        response
            .headers_mut()
            .insert(header::ETAG, header_value(&etag)?);
        return Ok(response);
    }
    let Ok(range) = range::parse(headers.get(header::RANGE), file.size) else {
        let mut response = Error::new(
            Kind::RangeNotSatisfiable,
            "bad_range",
            "range not satisfiable",
        )
        .into_response();
        response.headers_mut().insert(
            header::CONTENT_RANGE,
            header_value(&range::unsatisfied(file.size))?,
        );
        return Ok(response);
    };
    let (start, end) = range.unwrap_or((0, file.size));
    let stream = downloads::read(state, file, start, end).await?;
    metrics::counter!("coffer_download_bytes_total").increment(end - start);
    let mut response = Response::new(Body::from_stream(stream));
    let h = response.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/octet-stream"),
    );
    h.insert(header::CONTENT_LENGTH, HeaderValue::from(end - start));
    h.insert(header::ACCEPT_RANGES, HeaderValue::from_static("bytes"));
    h.insert(header::ETAG, header_value(&etag)?);
    // RFC 9530: Content-Digest covers the bytes in this message; for a
    // part, the whole representation's digest is Repr-Digest.
    h.insert("repr-digest", header_value(&dictionary)?);
    if range.is_some() {
        *response.status_mut() = StatusCode::PARTIAL_CONTENT;
        response.headers_mut().insert(
            header::CONTENT_RANGE,
            header_value(&range::content_range(start, end, file.size))?,
        );
    } else {
        response
            .headers_mut()
            .insert("content-digest", header_value(&dictionary)?);
    }
    Ok(response)
}
