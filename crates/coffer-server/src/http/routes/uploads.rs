//! tus 1.0.0 over `/v1/uploads` (core, creation, creation-with-upload,
//! termination, checksum with sha256, expiration). The upload logic is in
//! [`crate::service::uploads`], the header codecs in [`crate::codec::tus`].

use axum::body::Body;
use axum::extract::State;

use crate::http::extract::Path;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use futures_util::TryStreamExt as _;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::codec::tus;
use crate::http::auth::Uploader;
use crate::http::error::{ApiError, ErrorBody};
use crate::http::state::AppState;
use crate::objects::ByteStream;
use crate::service::uploads::{self, NewUpload};
use crate::service::{Caller, Error, Kind};
use crate::store::Upload;

/// Routes for uploads.
pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(create, options))
        .routes(routes!(append, status, terminate))
}

fn with_tus(mut response: Response) -> Response {
    response
        .headers_mut()
        .insert("tus-resumable", HeaderValue::from_static(tus::VERSION));
    response
}

fn header_value(text: &str) -> Result<HeaderValue, ApiError> {
    HeaderValue::from_str(text).map_err(Error::internal)
}

/// The request body as the service reads it: a stall (see
/// [`crate::http::limits`]) becomes `TimedOut`, any other failure to read it
/// (a cut connection, broken chunked framing) `UnexpectedEof`, so the service
/// can answer 408 or 400 rather than blame itself.
fn body_stream(body: Body) -> ByteStream<'static> {
    Box::pin(body.into_data_stream().map_err(|err| {
        let mut cause: Option<&(dyn std::error::Error + 'static)> = Some(&err);
        let mut stalled = false;
        while let Some(error) = cause {
            stalled |= error.is::<crate::http::limits::BodyStalled>();
            cause = error.source();
        }
        let kind = match stalled {
            true => std::io::ErrorKind::TimedOut,
            false => std::io::ErrorKind::UnexpectedEof,
        };
        std::io::Error::new(kind, err)
    }))
}

/// tus discovery: version, extensions, checksum algorithm, maximum size.
#[utoipa::path(options, path = "/v1/uploads", tag = "uploads",
    responses((status = 204, description = "Tus-Version, Tus-Extension, Tus-Checksum-Algorithm and Tus-Max-Size headers")))]
async fn options(State(state): State<AppState>) -> Response {
    let mut response = StatusCode::NO_CONTENT.into_response();
    let h = response.headers_mut();
    h.insert("tus-version", HeaderValue::from_static(tus::VERSION));
    h.insert("tus-extension", HeaderValue::from_static(tus::EXTENSIONS));
    h.insert("tus-checksum-algorithm", HeaderValue::from_static("sha256"));
    h.insert(
        "tus-max-size",
        HeaderValue::from(state.config.max_upload_bytes),
    );
    with_tus(response)
}

/// tus creation (optionally with the first bytes). Key wraps may be sent
/// as `coffer-wrap.<user> <base64 stanza>` pairs in `Upload-Metadata`; they
/// are checked now and committed with the file. An end-to-end encrypted
/// upload names the file id its header carries in `coffer-file-id`.
#[utoipa::path(post, path = "/v1/uploads", tag = "uploads", security(("bearer" = [])),
    params(
        ("Tus-Resumable" = String, Header, description = "1.0.0"),
        ("Coffer-Request" = Option<String>, Header, description = "Instead of a bearer token: the upload link sent through (with Coffer-Request-Access)"),
        ("Upload-Length" = u64, Header, description = "Total size in bytes"),
        ("Upload-Metadata" = Option<String>, Header, description = "tus metadata; `coffer-wrap.<user>` pairs carry key wraps, `coffer-file-id` the id an E2EE object's header names"),
        ("Upload-Checksum" = Option<String>, Header, description = "`sha256 <base64>` of this request's body")),
    request_body(content = Vec<u8>, content_type = "application/offset+octet-stream", description = "Optional first bytes"),
    responses(
        (status = 201, description = "Created; Location, Upload-Offset, Upload-Expires; Coffer-File-Id and Coffer-Receipt once complete"),
        (status = 400, body = ErrorBody), (status = 404, description = "A wrap names an unknown user", body = ErrorBody),
        (status = 409, description = "The chosen file id is in use", body = ErrorBody),
        (status = 412, description = "Tus-Resumable missing", body = ErrorBody),
        (status = 413, body = ErrorBody),
        (status = 422, description = "An E2EE object that does not verify (removed)", body = ErrorBody)))]
async fn create(
    State(state): State<AppState>,
    auth: Uploader,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    tus::check_version(&headers)?;
    if headers.contains_key("upload-defer-length") {
        return Err(Error::bad_request("Upload-Defer-Length is not supported"));
    }
    let length = tus::header_u64(&headers, "upload-length")?
        .ok_or_else(|| Error::bad_request("Upload-Length required"))?;
    let metadata = tus::Metadata::of(&headers)?;
    if auth.caller.via_request.is_some()
        && let Some(ip) = auth.caller.ip
        && !state.rate_limits.allow_request_upload(ip)
    {
        crate::service::audit::refused(&state, ip, "rate_limit", "request_upload").await;
        return Err(Error::new(
            Kind::TooMany,
            "rate_limited",
            "too many uploads through upload links from this address; try again later",
        ));
    }
    let new = NewUpload {
        length,
        metadata: metadata.as_str().to_string(),
        wraps: metadata.wraps()?,
        e2ee: metadata.has(tus::E2EE_KEY),
        file_id: metadata.text(tus::FILE_ID_KEY)?,
    };
    let upload = uploads::create(&state, &auth.caller, new).await?;
    let has_body = headers
        .get(header::CONTENT_TYPE)
        .is_some_and(|v| v == tus::OFFSET_CONTENT_TYPE);
    let mut response = if has_body || length == 0 {
        match write(&state, &auth.caller, &upload, &headers, body).await {
            Ok(response) => response,
            Err(refused) => {
                // The client never learnt the upload's Location, so nothing
                // could resume it: it would only hold a slot until expiry.
                if let Err(err) = uploads::terminate(&state, &auth.caller, &upload.id).await
                    && err.kind() != Kind::NotFound
                {
                    tracing::warn!(upload = %upload.id, "removing a refused upload: {err:?}");
                }
                return Err(refused);
            }
        }
    } else {
        StatusCode::CREATED.into_response()
    };
    *response.status_mut() = StatusCode::CREATED;
    let h = response.headers_mut();
    h.insert(
        header::LOCATION,
        header_value(&format!("/v1/uploads/{}", upload.id))?,
    );
    h.insert(
        "upload-expires",
        header_value(&tus::http_date(upload.expires_at))?,
    );
    Ok(with_tus(response))
}

/// tus offset of an upload.
#[utoipa::path(head, path = "/v1/uploads/{id}", tag = "uploads", security(("bearer" = [])),
    params(("id" = String, Path, description = "Upload id")),
    responses((status = 200, description = "Upload-Offset, Upload-Length, Upload-Expires"), (status = 404)))]
async fn status(
    State(state): State<AppState>,
    auth: Uploader,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let upload = uploads::owned_upload(&state, &auth.caller, &id).await?;
    let mut response = StatusCode::OK.into_response();
    let h = response.headers_mut();
    h.insert("upload-offset", HeaderValue::from(upload.offset));
    h.insert("upload-length", HeaderValue::from(upload.length));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert(
        "upload-expires",
        header_value(&tus::http_date(upload.expires_at))?,
    );
    if !upload.metadata.is_empty() {
        h.insert("upload-metadata", header_value(&upload.metadata)?);
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
        (status = 422, description = "Not a valid coffer v2 object (E2EE uploads)", body = ErrorBody),
        (status = 423, description = "Another request is writing this upload", body = ErrorBody),
        (status = 460, description = "Checksum mismatch", body = ErrorBody)))]
async fn append(
    State(state): State<AppState>,
    auth: Uploader,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    tus::check_version(&headers)?;
    if headers
        .get(header::CONTENT_TYPE)
        .is_none_or(|v| v != tus::OFFSET_CONTENT_TYPE)
    {
        return Err(Error::new(
            Kind::UnsupportedMediaType,
            "content_type",
            "Content-Type: application/offset+octet-stream required",
        ));
    }
    let upload = uploads::owned_upload(&state, &auth.caller, &id).await?;
    Ok(with_tus(
        write(&state, &auth.caller, &upload, &headers, body).await?,
    ))
}

/// One request body into the upload; the response carries the new offset,
/// and the file id and receipt when it completed the upload.
async fn write(
    state: &AppState,
    caller: &Caller,
    upload: &Upload,
    headers: &HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let claimed = tus::header_u64(headers, "upload-offset")?.unwrap_or(0);
    let checksum = tus::checksum(headers)?;
    let appended = uploads::append(
        state,
        upload,
        caller.ip,
        claimed,
        checksum,
        body_stream(body),
    )
    .await?;
    let mut response = StatusCode::NO_CONTENT.into_response();
    let h = response.headers_mut();
    h.insert("upload-offset", HeaderValue::from(appended.offset));
    if let Some(signed) = &appended.committed {
        h.insert("coffer-file-id", header_value(&signed.receipt.file_id)?);
        let encoded = crate::service::session::b64()
            .encode(serde_json::to_vec(signed).map_err(Error::internal)?);
        h.insert("coffer-receipt", header_value(&encoded)?);
    }
    Ok(response)
}

/// tus termination: abandons an upload.
#[utoipa::path(delete, path = "/v1/uploads/{id}", tag = "uploads", security(("bearer" = [])),
    params(("id" = String, Path, description = "Upload id")),
    responses((status = 204), (status = 404, body = ErrorBody)))]
async fn terminate(
    State(state): State<AppState>,
    auth: Uploader,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    tus::check_version(&headers)?;
    uploads::terminate(&state, &auth.caller, &id).await?;
    Ok(with_tus(StatusCode::NO_CONTENT.into_response()))
}
