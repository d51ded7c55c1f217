//! Upload links (the protocol is in [`crate::service::requests`]; the
//! uploads themselves go through the tus routes of [`super::uploads`]).

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use secrecy::SecretString;
use serde::Deserialize;
use serde_json::json;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::http::auth::{Authenticated, REQUEST_ACCESS_HEADER, request_password};
use crate::http::error::{ApiError, ErrorBody};
use crate::http::extract::{Json, Path};
use crate::http::pages;
use crate::http::state::AppState;
use crate::service::Error;
use crate::service::requests::{self, NewRequest};
use crate::service::session::b64;
use crate::store::Request;

/// Routes for upload links.
pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(create, list))
        .routes(routes!(info, remove))
}

#[derive(Deserialize, ToSchema)]
struct CreateBody {
    /// Lifetime in seconds (default and maximum from the configuration).
    expires_in: Option<u64>,
    /// How many uploads may begin through it.
    max_files: Option<u64>,
    /// Largest upload it takes, in stored (encrypted) bytes.
    max_file_bytes: Option<u64>,
    /// Whether the page asks senders for their name.
    #[serde(default)]
    ask_name: bool,
    /// The access proof derived from the URL secret (only its SHA-256 is
    /// kept); senders must send it in `Coffer-Request-Access`.
    #[schema(value_type = String)]
    access: SecretString,
    /// A password senders must give (in `Coffer-Request-Password`) to see
    /// the link and to begin each upload; only an Argon2id verifier is kept.
    #[schema(value_type = Option<String>)]
    password: Option<SecretString>,
}

/// An upload link as its owner sees it.
#[derive(serde::Serialize, ToSchema)]
struct RequestInfo {
    id: String,
    created_at: i64,
    expires_at: i64,
    max_files: Option<u64>,
    max_file_bytes: Option<u64>,
    files_started: u64,
    ask_name: bool,
    /// Whether senders need a password.
    password: bool,
    /// Wrong passwords so far.
    failed_attempts: u32,
}

impl From<&Request> for RequestInfo {
    fn from(request: &Request) -> Self {
        Self {
            id: request.id.clone(),
            created_at: request.created_at,
            expires_at: request.expires_at,
            max_files: request.max_files,
            max_file_bytes: request.max_file_bytes,
            files_started: request.files_started,
            ask_name: request.ask_name,
            password: request.password_hash.is_some(),
            failed_attempts: request.failed_attempts,
        }
    }
}

#[derive(serde::Serialize, ToSchema)]
struct RequestList {
    requests: Vec<RequestInfo>,
}

/// Creates an upload link for the caller.
#[utoipa::path(post, path = "/v1/requests", tag = "requests", security(("bearer" = [])),
    request_body = CreateBody,
    responses((status = 201, body = RequestInfo), (status = 400, body = ErrorBody)))]
async fn create(
    State(state): State<AppState>,
    auth: Authenticated,
    Json(body): Json<CreateBody>,
) -> Result<Response, ApiError> {
    let new = NewRequest {
        expires_in: body.expires_in,
        max_files: body.max_files,
        max_file_bytes: body.max_file_bytes,
        ask_name: body.ask_name,
        access: body.access,
        password: body.password,
    };
    let request = requests::create(&state, &auth.caller, new).await?;
    Ok((StatusCode::CREATED, Json(RequestInfo::from(&request))).into_response())
}

/// The caller's upload links.
#[utoipa::path(get, path = "/v1/requests", tag = "requests", security(("bearer" = [])),
    responses((status = 200, body = RequestList)))]
async fn list(
    State(state): State<AppState>,
    auth: Authenticated,
) -> Result<Json<RequestList>, ApiError> {
    let list = requests::list(&state, &auth.caller).await?;
    Ok(Json(RequestList {
        requests: list.iter().map(RequestInfo::from).collect(),
    }))
}

/// Revokes one of the caller's upload links.
#[utoipa::path(delete, path = "/v1/requests/{id}", tag = "requests", security(("bearer" = [])),
    params(("id" = String, Path)),
    responses((status = 204), (status = 404, body = ErrorBody)))]
async fn remove(
    State(state): State<AppState>,
    auth: Authenticated,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    requests::remove(&state, &auth.caller, &id).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// What a sender needs: the owner's public identity (which the page checks
/// against the URL's pin) and the link's limits. A browser asking for
/// `text/html` without the proof gets the upload page.
#[utoipa::path(get, path = "/v1/requests/{id}", tag = "requests",
    params(("id" = String, Path), ("Coffer-Request-Access" = String, Header, description = "The access proof from the URL secret"),
        ("Coffer-Request-Password" = Option<String>, Header, description = "The link's password, when it has one")),
    responses((status = 200, description = "`{id, owner, recipient, expires_at, files_left, max_file_bytes, ask_name}`; `recipient` is the owner's public identity, base64url of its bytes", body = serde_json::Value),
        (status = 401, description = "`password_required` or `wrong_password`", body = ErrorBody),
        (status = 404, body = ErrorBody), (status = 410, description = "Expired, taken all its files, locked after wrong passwords, or its owner disabled", body = ErrorBody)))]
async fn info(
    State(state): State<AppState>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let access = headers
        .get(REQUEST_ACCESS_HEADER)
        .and_then(|v| v.to_str().ok());
    if pages::wants_html(&headers) && access.is_none() {
        return Ok(pages::request_page());
    }
    let password = request_password(&headers);
    let (request, owner) = requests::info(&state, &id, access, password).await?;
    let recipient =
        coffer_format::PublicIdentity::parse(&owner.public_identity).map_err(Error::internal)?;
    Ok(Json(json!({
        "id": request.id,
        "owner": owner.name,
        "recipient": b64().encode(recipient.to_bytes()),
        "expires_at": request.expires_at,
        "files_left": request.max_files.map(|max| max.saturating_sub(request.files_started)),
        "max_file_bytes": request.max_file_bytes,
        "ask_name": request.ask_name,
    }))
    .into_response())
}
