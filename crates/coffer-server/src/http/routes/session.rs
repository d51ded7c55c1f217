//! Login (challenge, signed login, refresh, logout), who am I, users' keys,
//! and the liveness check. The protocol is in [`crate::service::session`].

use axum::Extension;
use axum::extract::State;
use axum::http::StatusCode;

use crate::http::extract::{Json, Path};
use serde::{Deserialize, Serialize};
use serde_json::json;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::http::auth::Authenticated;
use crate::http::error::{ApiError, ErrorBody};
use crate::http::serve::ConnInfo;
use crate::http::state::AppState;
use crate::service::session::{self, LoginAttempt};

/// Routes for sessions and users.
pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(healthz))
        .routes(routes!(challenge))
        .routes(routes!(login))
        .routes(routes!(refresh))
        .routes(routes!(logout))
        .routes(routes!(whoami))
        .routes(routes!(user_identity))
}

/// Liveness check.
#[utoipa::path(get, path = "/healthz", tag = "server",
    responses((status = 200, description = "The server is up", body = String)))]
async fn healthz() -> &'static str {
    "ok\n"
}

#[derive(Deserialize, ToSchema)]
struct ChallengeRequest {
    user: String,
}

#[derive(Serialize, ToSchema)]
struct ChallengeResponse {
    nonce: String,
    expires_in: u64,
    server_identity: String,
    /// The URL clients should put in links they make (`public_url`).
    #[serde(skip_serializing_if = "Option::is_none")]
    public_url: Option<String>,
}

/// Step 1 of login: a single-use nonce (also for unknown users).
#[utoipa::path(post, path = "/v1/auth/challenge", tag = "auth",
    request_body = ChallengeRequest,
    responses(
        (status = 200, body = ChallengeResponse),
        (status = 400, description = "Invalid user name", body = ErrorBody)))]
async fn challenge(
    State(state): State<AppState>,
    Json(req): Json<ChallengeRequest>,
) -> Result<Json<ChallengeResponse>, ApiError> {
    let challenge = session::challenge(&state, &req.user).await?;
    Ok(Json(ChallengeResponse {
        nonce: challenge.nonce,
        expires_in: challenge.expires_in,
        server_identity: state.identity.public().to_string(),
        public_url: state.config.public_url.clone(),
    }))
}

#[derive(Deserialize, ToSchema)]
struct LoginRequest {
    user: String,
    nonce: String,
    signature: String,
}

#[derive(Serialize, ToSchema)]
struct TokenResponse {
    token: String,
    expires_in: u64,
}

impl From<session::Issued> for TokenResponse {
    fn from(issued: session::Issued) -> Self {
        Self {
            token: issued.token.to_string(),
            expires_in: issued.expires_in,
        }
    }
}

/// Step 2 of login: the signed challenge, bound to this TLS session.
#[utoipa::path(post, path = "/v1/auth/login", tag = "auth",
    request_body = LoginRequest,
    responses(
        (status = 200, body = TokenResponse),
        (status = 401, description = "Authentication failed (which part is not said)", body = ErrorBody)))]
async fn login(
    State(state): State<AppState>,
    Extension(conn): Extension<ConnInfo>,
    Json(req): Json<LoginRequest>,
) -> Result<Json<TokenResponse>, ApiError> {
    let attempt = LoginAttempt {
        user: &req.user,
        nonce: &req.nonce,
        signature: &req.signature,
        exporter: &conn.exporter,
        ip: Some(conn.peer.ip()),
    };
    Ok(Json(session::login(&state, &attempt).await?.into()))
}

/// A fresh token for a valid one, which is revoked.
#[utoipa::path(post, path = "/v1/auth/refresh", tag = "auth", security(("bearer" = [])),
    responses((status = 200, body = TokenResponse), (status = 401, body = ErrorBody)))]
async fn refresh(
    State(state): State<AppState>,
    auth: Authenticated,
) -> Result<Json<TokenResponse>, ApiError> {
    let issued = session::refresh(&state, &auth.caller.user.name, &auth.token_hash).await?;
    Ok(Json(issued.into()))
}

/// Revokes the token.
#[utoipa::path(post, path = "/v1/auth/logout", tag = "auth", security(("bearer" = [])),
    responses((status = 204, description = "Revoked"), (status = 401, body = ErrorBody)))]
async fn logout(
    State(state): State<AppState>,
    auth: Authenticated,
) -> Result<StatusCode, ApiError> {
    session::logout(&state, &auth.token_hash).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// The authenticated user.
#[utoipa::path(get, path = "/v1/whoami", tag = "auth", security(("bearer" = [])),
    responses((status = 200, description = "`{user, admin}`", body = serde_json::Value),
        (status = 401, body = ErrorBody)))]
async fn whoami(auth: Authenticated) -> Json<serde_json::Value> {
    let user = &auth.caller.user;
    Json(json!({"user": user.name, "admin": user.is_admin}))
}

/// A user's public identity and fingerprint, for wrapping keys to them.
#[utoipa::path(get, path = "/v1/users/{name}/identity", tag = "users", security(("bearer" = [])),
    params(("name" = String, Path, description = "User name")),
    responses((status = 200, description = "`{name, public_identity, fingerprint}`", body = serde_json::Value),
        (status = 404, body = ErrorBody)))]
async fn user_identity(
    State(state): State<AppState>,
    _auth: Authenticated,
    Path(name): Path<String>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let (user, public) = session::user_identity(&state, &name).await?;
    Ok(Json(json!({
        "name": user.name,
        "public_identity": user.public_identity,
        "fingerprint": public.fingerprint(),
    })))
}
