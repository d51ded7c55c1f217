//! Anonymous share links (the protocol is in [`crate::service::links`]).

use axum::extract::State;

use crate::http::extract::{Json, Path};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use secrecy::SecretString;
use serde::Deserialize;
use serde_json::json;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::files::serve_object;
use crate::http::auth::Authenticated;
use crate::http::error::{ApiError, ErrorBody};
use crate::http::pages;
use crate::http::serve::ConnInfo;
use crate::http::state::AppState;
use crate::service::links::{self, NewLink};
use crate::service::session::b64;
use crate::service::{Error, Service, files};
use crate::store::Link;

/// Header carrying a link's download ticket.
pub const TICKET_HEADER: &str = "coffer-link-ticket";
/// Header carrying the access proof derived from a link's URL secret.
pub const ACCESS_HEADER: &str = "coffer-link-access";

fn access(headers: &HeaderMap) -> Option<&str> {
    headers.get(ACCESS_HEADER).and_then(|v| v.to_str().ok())
}

/// Routes for links.
pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(create, list))
        .routes(routes!(info, remove))
        .routes(routes!(open))
        .routes(routes!(content))
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
    /// The access proof derived from the URL secret (only its SHA-256 is
    /// kept); openers must send it in `Coffer-Link-Access`.
    #[schema(value_type = String)]
    access: SecretString,
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

fn link_info(link: &Link, service: &Service) -> LinkInfo {
    LinkInfo {
        id: link.id.clone(),
        file_id: link.file_id.clone(),
        created_at: link.created_at,
        expires_at: link.expires_at,
        max_downloads: link.max_downloads,
        downloads: link.downloads,
        password_required: link.password_hash.is_some(),
        locked: links::is_locked(service, link),
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
    let stanza = b64()
        .decode(&req.stanza)
        .map_err(|_| Error::bad_request("stanza is not base64url"))?;
    let client_salt = req
        .client_salt
        .as_deref()
        .map(|text| {
            b64().decode(text).map_err(|_| {
                Error::bad_request("client_salt must be base64url of at most 64 bytes")
            })
        })
        .transpose()?;
    let new = NewLink {
        stanza,
        expires_in: req.expires_in,
        max_downloads: req.max_downloads,
        password: req.password,
        client_salt,
        access: req.access,
    };
    let link = links::create(&state, &auth.caller, &id, new).await?;
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
    let list = links::list(&state, &auth.caller, &id).await?;
    Ok(Json(LinkList {
        links: list.iter().map(|l| link_info(l, &state)).collect(),
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
    links::remove(&state, &auth.caller, &link_id).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// What anyone holding the link may learn before opening it (no wrap).
#[utoipa::path(get, path = "/v1/links/{link}", tag = "links",
    params(("link" = String, Path), ("Coffer-Link-Access" = String, Header, description = "The access proof from the URL secret")),
    responses((status = 200, description = "`{id, size, expires_at, downloads_left, password_required, client_salt}`; a browser asking for `text/html` without the proof gets the link page", body = serde_json::Value),
        (status = 404, body = ErrorBody), (status = 410, description = "Expired, exhausted or locked", body = ErrorBody)))]
async fn info(
    State(state): State<AppState>,
    Path(link_id): Path<String>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    // The URL an owner sends is this one: a browser gets the page, which
    // then asks this route for JSON with the access proof.
    if pages::wants_html(&headers) && access(&headers).is_none() {
        return Ok(pages::link_page());
    }
    let (link, file) = links::info(&state, &link_id, access(&headers)).await?;
    Ok(Json(json!({
        "id": link.id,
        "size": file.size,
        "expires_at": link.expires_at,
        "downloads_left": link.max_downloads.map(|max| max.saturating_sub(link.downloads)),
        "password_required": link.password_hash.is_some(),
        "client_salt": link.client_salt.as_ref().map(|salt| b64().encode(salt)),
    }))
    .into_response())
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
    params(("link" = String, Path), ("Coffer-Link-Access" = String, Header, description = "The access proof from the URL secret")),
    request_body(content = Option<OpenRequest>),
    responses((status = 200, description = "`{ticket, expires_in, stanza, size, digest}`", body = serde_json::Value),
        (status = 401, description = "password_required or wrong_password", body = ErrorBody),
        (status = 404, body = ErrorBody), (status = 410, body = ErrorBody)))]
async fn open(
    State(state): State<AppState>,
    conn: Option<axum::Extension<ConnInfo>>,
    Path(link_id): Path<String>,
    headers: HeaderMap,
    body: Option<Json<OpenRequest>>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let password = body.and_then(|Json(req)| req.password);
    let ip = conn.map(|c| c.peer.ip());
    let opened = links::open(&state, &link_id, access(&headers), password, ip).await?;
    Ok(Json(json!({
        "ticket": opened.ticket.as_str(),
        "expires_in": opened.expires_in,
        "stanza": b64().encode(&opened.stanza),
        "size": opened.file.size,
        "digest": files::content_id(&opened.file),
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
    conn: Option<axum::Extension<ConnInfo>>,
    Path(link_id): Path<String>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let ticket = headers
        .get(TICKET_HEADER)
        .and_then(|v| v.to_str().ok())
        .ok_or_else(Error::unauthorized)?;
    let ip = conn.map(|c| c.peer.ip());
    let file = links::ticket_file(&state, &link_id, ticket, ip).await?;
    serve_object(&state, &file, &headers).await
}
