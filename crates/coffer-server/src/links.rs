//! Anonymous share links.
//!
//! The owner's client derives a link key from a secret that goes only into
//! the URL fragment (browsers and HTTP clients never send fragments), and,
//! when a password is set, from the password too. It wraps the file key for
//! that link key and stores the wrap here. The server therefore holds a
//! wrap it cannot open, and enforces what it can: expiry, a download limit
//! and, optionally, a password verifier (Argon2id over what the client
//! sends as the password; the client sends a value derived from the
//! password, not the password itself).
//!
//! Opening a link (`POST /v1/links/{id}/open`) checks the password, spends
//! one download atomically and returns the wrap and a ticket. The ticket
//! fetches the bytes, with ranges, until it expires, so an interrupted
//! download resumes without spending another download. Wrong passwords are
//! counted and lock the link after `link_max_password_failures`.

use argon2::{Argon2, PasswordHasher as _, PasswordVerifier as _};
use axum::Json;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use secrecy::{ExposeSecret as _, SecretString};
use serde::Deserialize;
use serde_json::json;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::api::{ApiError, AppState, Authenticated, ErrorBody};
use crate::auth::{b64, new_token, token_hash};
use crate::files::{owned_file, serve_object};
use crate::store::Link;

/// Header carrying a link's download ticket.
pub const TICKET_HEADER: &str = "coffer-link-ticket";
const MAX_PASSWORD_LEN: usize = 1024;
const MAX_CLIENT_SALT_LEN: usize = 64;

/// Routes for links.
pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(create, list))
        .routes(routes!(info, remove))
        .routes(routes!(open))
        .routes(routes!(content))
}

/// Argon2id at the OWASP minimum (19 MiB, 2 passes): the verifier only
/// guards the bytes of a file already encrypted under a key the password
/// is mixed into, and every check costs the server this much.
fn argon2() -> Result<Argon2<'static>, ApiError> {
    let params = argon2::Params::new(19 * 1024, 2, 1, Some(32)).map_err(ApiError::internal)?;
    Ok(Argon2::new(
        argon2::Algorithm::Argon2id,
        argon2::Version::V0x13,
        params,
    ))
}

async fn hash_password(password: SecretString) -> Result<String, ApiError> {
    let mut salt = [0u8; 16];
    aws_lc_rs::rand::fill(&mut salt).map_err(|_| ApiError::internal("rng"))?;
    tokio::task::spawn_blocking(move || {
        argon2()?
            .hash_password_with_salt(password.expose_secret().as_bytes(), &salt)
            .map(|hash| hash.to_string())
            .map_err(ApiError::internal)
    })
    .await
    .map_err(ApiError::internal)?
}

async fn password_matches(password: SecretString, phc: String) -> Result<bool, ApiError> {
    tokio::task::spawn_blocking(move || {
        Ok(argon2()?
            .verify_password(password.expose_secret().as_bytes(), phc.as_str())
            .is_ok())
    })
    .await
    .map_err(ApiError::internal)?
}

fn gone(code: &'static str, message: &str) -> ApiError {
    ApiError::new(StatusCode::GONE, code, message)
}

/// Why a link can no longer be opened, if it cannot.
fn closed(state: &AppState, link: &Link, now: i64) -> Option<ApiError> {
    if link.failed_attempts >= state.config.link_max_password_failures {
        Some(gone(
            "link_locked",
            "link locked after too many wrong passwords",
        ))
    } else if link.expires_at <= now {
        Some(gone("link_expired", "link expired"))
    } else if link.max_downloads.is_some_and(|max| link.downloads >= max) {
        Some(gone("link_exhausted", "link download limit reached"))
    } else {
        None
    }
}

#[derive(Deserialize, ToSchema)]
struct CreateRequest {
    /// Wrap of the file key for the link key, base64url.
    stanza: String,
    /// Lifetime in seconds (default and maximum from the configuration).
    expires_in: Option<u64>,
    /// How many times the link may be opened.
    max_downloads: Option<u64>,
    /// Password verifier input, if the link needs a password.
    #[schema(value_type = Option<String>)]
    password: Option<SecretString>,
    /// Opaque salt for the opener's key derivation, base64url.
    client_salt: Option<String>,
}

/// A link as its owner sees it.
#[derive(serde::Serialize, ToSchema)]
struct LinkInfo {
    id: String,
    file_id: String,
    created_at: i64,
    expires_at: i64,
    max_downloads: Option<u64>,
    downloads: u64,
    password_required: bool,
    /// Locked for good after too many wrong passwords.
    locked: bool,
}

#[derive(serde::Serialize, ToSchema)]
struct LinkList {
    links: Vec<LinkInfo>,
}

fn link_info(link: &Link, state: &AppState) -> LinkInfo {
    LinkInfo {
        id: link.id.clone(),
        file_id: link.file_id.clone(),
        created_at: link.created_at,
        expires_at: link.expires_at,
        max_downloads: link.max_downloads,
        downloads: link.downloads,
        password_required: link.password_hash.is_some(),
        locked: link.failed_attempts >= state.config.link_max_password_failures,
    }
}

/// Creates a link holding a wrap the server cannot open.
#[utoipa::path(post, path = "/v1/files/{id}/links", tag = "links", security(("bearer" = [])),
    params(("id" = String, Path)),
    request_body = CreateRequest,
    responses((status = 201, body = LinkInfo), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody)))]
async fn create(
    State(state): State<AppState>,
    auth: Authenticated,
    Path(id): Path<String>,
    Json(req): Json<CreateRequest>,
) -> Result<Response, ApiError> {
    let file = owned_file(&state, &auth, &id).await?;
    let stanza = b64()
        .decode(&req.stanza)
        .map_err(|_| ApiError::bad_request("stanza is not base64url"))?;
    coffer_format::Stanza::from_bytes(&stanza)
        .map_err(|_| ApiError::bad_request("not a coffer stanza"))?;
    let ttl = req.expires_in.unwrap_or(state.config.default_link_ttl_secs);
    if ttl == 0 || ttl > state.config.max_link_ttl_secs {
        return Err(ApiError::bad_request(format!(
            "expires_in must be 1..={} seconds",
            state.config.max_link_ttl_secs
        )));
    }
    if req.max_downloads == Some(0) {
        return Err(ApiError::bad_request("max_downloads must be at least 1"));
    }
    let client_salt = match &req.client_salt {
        None => None,
        Some(text) => Some(
            b64()
                .decode(text)
                .ok()
                .filter(|salt| salt.len() <= MAX_CLIENT_SALT_LEN)
                .ok_or_else(|| {
                    ApiError::bad_request("client_salt must be base64url of at most 64 bytes")
                })?,
        ),
    };
    let password_hash = match req.password {
        Some(password) => {
            let len = password.expose_secret().len();
            if len == 0 || len > MAX_PASSWORD_LEN {
                return Err(ApiError::bad_request("password must be 1..=1024 bytes"));
            }
            Some(hash_password(password).await?)
        }
        None => None,
    };
    let now = crate::unix_now();
    let link = Link {
        id: crate::files::new_id()?,
        file_id: file.id,
        stanza,
        created_at: now,
        expires_at: now.saturating_add(i64::try_from(ttl).unwrap_or(i64::MAX)),
        max_downloads: req.max_downloads,
        downloads: 0,
        password_hash,
        client_salt,
        failed_attempts: 0,
    };
    state.store.create_link(&link).await?;
    let event = auth
        .event("link_create", &link.id)
        .detail(link.file_id.clone());
    crate::audit::record(&state, event).await?;
    Ok((StatusCode::CREATED, Json(link_info(&link, &state))).into_response())
}

/// The links of a file (owner only).
#[utoipa::path(get, path = "/v1/files/{id}/links", tag = "links", security(("bearer" = [])),
    params(("id" = String, Path)),
    responses((status = 200, body = LinkList), (status = 404, body = ErrorBody)))]
async fn list(
    State(state): State<AppState>,
    auth: Authenticated,
    Path(id): Path<String>,
) -> Result<Json<LinkList>, ApiError> {
    let file = owned_file(&state, &auth, &id).await?;
    let links = state.store.file_links(&file.id).await?;
    Ok(Json(LinkList {
        links: links.iter().map(|l| link_info(l, &state)).collect(),
    }))
}

/// Revokes a link and its outstanding tickets (file owner only).
#[utoipa::path(delete, path = "/v1/links/{link}", tag = "links", security(("bearer" = [])),
    params(("link" = String, Path)),
    responses((status = 204), (status = 404, body = ErrorBody)))]
async fn remove(
    State(state): State<AppState>,
    auth: Authenticated,
    Path(link_id): Path<String>,
) -> Result<StatusCode, ApiError> {
    let link = state
        .store
        .link(&link_id)
        .await?
        .ok_or_else(|| ApiError::not_found("link"))?;
    owned_file(&state, &auth, &link.file_id)
        .await
        .map_err(|_| ApiError::not_found("link"))?;
    state.store.delete_link(&link.id).await?;
    crate::audit::record(&state, auth.event("link_delete", &link.id)).await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn existing_link(state: &AppState, link_id: &str) -> Result<Link, ApiError> {
    state
        .store
        .link(link_id)
        .await?
        .ok_or_else(|| ApiError::not_found("link"))
}

/// What anyone holding the link may learn before opening it (no wrap).
#[utoipa::path(get, path = "/v1/links/{link}", tag = "links",
    params(("link" = String, Path)),
    responses((status = 200, description = "`{id, size, expires_at, downloads_left, password_required, client_salt}`", body = serde_json::Value),
        (status = 404, body = ErrorBody), (status = 410, description = "Expired, exhausted or locked", body = ErrorBody)))]
async fn info(
    State(state): State<AppState>,
    Path(link_id): Path<String>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let link = existing_link(&state, &link_id).await?;
    if let Some(refusal) = closed(&state, &link, crate::unix_now()) {
        return Err(refusal);
    }
    let file = state
        .store
        .file(&link.file_id)
        .await?
        .ok_or_else(|| ApiError::not_found("link"))?;
    Ok(Json(json!({
        "id": link.id,
        "size": file.size,
        "expires_at": link.expires_at,
        "downloads_left": link.max_downloads.map(|max| max.saturating_sub(link.downloads)),
        "password_required": link.password_hash.is_some(),
        "client_salt": link.client_salt.as_ref().map(|salt| b64().encode(salt)),
    })))
}

#[derive(Deserialize, Default, ToSchema)]
struct OpenRequest {
    /// Required when the link has a password.
    #[schema(value_type = Option<String>)]
    password: Option<SecretString>,
}

/// Opens a link: checks the password, spends one download, returns the
/// wrap and a ticket for `/content`.
#[utoipa::path(post, path = "/v1/links/{link}/open", tag = "links",
    params(("link" = String, Path)),
    request_body(content = Option<OpenRequest>),
    responses((status = 200, description = "`{ticket, expires_in, stanza, size, digest}`", body = serde_json::Value),
        (status = 401, description = "password_required or wrong_password", body = ErrorBody),
        (status = 404, body = ErrorBody), (status = 410, body = ErrorBody)))]
async fn open(
    State(state): State<AppState>,
    conn: Option<axum::Extension<crate::serve::ConnInfo>>,
    Path(link_id): Path<String>,
    body: Option<Json<OpenRequest>>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let result = open_link(&state, &link_id, body).await;
    let (outcome, code) = match &result {
        Ok(_) => ("ok", "ok"),
        Err(err) => ("failed", err.code()),
    };
    metrics::counter!("coffer_link_opens_total", "result" => code).increment(1);
    if !matches!(code, "not_found" | "bad_request") {
        let ip = conn.map(|c| c.peer.ip());
        let event = crate::audit::Event::new("-", ip, "link_open", &link_id)
            .outcome(outcome)
            .detail(code);
        crate::audit::record(&state, event).await?;
    }
    result
}

async fn open_link(
    state: &AppState,
    link_id: &str,
    body: Option<Json<OpenRequest>>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let req = body.map(|Json(req)| req).unwrap_or_default();
    let link = existing_link(state, link_id).await?;
    let now = crate::unix_now();
    if let Some(refusal) = closed(state, &link, now) {
        return Err(refusal);
    }
    if let Some(phc) = &link.password_hash {
        let password = req.password.ok_or_else(|| {
            ApiError::new(
                StatusCode::UNAUTHORIZED,
                "password_required",
                "this link needs a password",
            )
        })?;
        if password.expose_secret().len() > MAX_PASSWORD_LEN
            || !password_matches(password, phc.clone()).await?
        {
            state.store.link_failed_attempt(&link.id).await?;
            return Err(ApiError::new(
                StatusCode::UNAUTHORIZED,
                "wrong_password",
                "wrong password",
            ));
        }
    }
    let max_failures = state.config.link_max_password_failures;
    if !state
        .store
        .spend_link_download(&link.id, now, max_failures)
        .await?
    {
        // Lost a race for the last download, or expired meanwhile.
        return Err(gone("link_exhausted", "link can no longer be opened"));
    }
    let file = state
        .store
        .file(&link.file_id)
        .await?
        .ok_or_else(|| ApiError::not_found("link"))?;
    let ticket = new_token().map_err(ApiError::internal)?;
    let ttl = state.config.link_ticket_ttl_secs;
    state
        .store
        .put_link_ticket(
            &token_hash(&ticket),
            &link.id,
            now.saturating_add(i64::try_from(ttl).unwrap_or(i64::MAX)),
        )
        .await?;
    Ok(Json(json!({
        "ticket": ticket.as_str(),
        "expires_in": ttl,
        "stanza": b64().encode(&link.stanza),
        "size": file.size,
        "digest": crate::files::content_id(&file),
    })))
}

/// The file's stored bytes for a ticket holder, with ranges.
#[utoipa::path(get, path = "/v1/links/{link}/content", tag = "links",
    params(("link" = String, Path), ("Coffer-Link-Ticket" = String, Header), ("Range" = Option<String>, Header)),
    responses((status = 200, content_type = "application/octet-stream", body = Vec<u8>),
        (status = 206, content_type = "application/octet-stream", body = Vec<u8>),
        (status = 401, body = ErrorBody)))]
async fn content(
    State(state): State<AppState>,
    conn: Option<axum::Extension<crate::serve::ConnInfo>>,
    Path(link_id): Path<String>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let ticket = headers
        .get(TICKET_HEADER)
        .and_then(|v| v.to_str().ok())
        .ok_or_else(ApiError::unauthorized)?;
    let link = state
        .store
        .ticket_link(&token_hash(ticket.trim()), crate::unix_now())
        .await?
        .filter(|link| link.id == link_id)
        .ok_or_else(ApiError::unauthorized)?;
    let file = state
        .store
        .file(&link.file_id)
        .await?
        .ok_or_else(|| ApiError::not_found("link"))?;
    let ip = conn.map(|c| c.peer.ip());
    let event =
        crate::audit::Event::new("-", ip, "link_download", &link.id).detail(file.id.clone());
    crate::audit::record(&state, event).await?;
    serve_object(&state, &file, &headers).await
}

/// Removes expired tickets and links.
pub async fn sweep_expired(state: &AppState) -> Result<u64, ApiError> {
    Ok(state.store.sweep_links(crate::unix_now()).await?)
}
