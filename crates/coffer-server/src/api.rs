//! The versioned HTTP API (`/v1/…`). Errors are JSON with a stable code and
//! a human message: `{"error": {"code": "unauthorized", "message": "…"}}`.

use std::sync::Arc;

use axum::extract::{FromRequestParts, Path, State};
use axum::http::request::Parts;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json, Router};
use base64::Engine as _;
use coffer_format::{Identity, PublicIdentity};
use serde::{Deserialize, Serialize};
use serde_json::json;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{OpenApi, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::auth::{self, b64, login_message, token_hash, valid_user_name};
use crate::config::Config;
use crate::serve::ConnInfo;
use crate::store::{MetaStore, User};

/// Shared state of all handlers.
#[derive(Clone)]
pub struct AppState {
    /// Metadata store.
    pub store: Arc<dyn MetaStore>,
    /// The server's identity.
    pub identity: Arc<Identity>,
    /// Configuration.
    pub config: Arc<Config>,
    /// Object storage.
    pub objects: Arc<dyn crate::objects::ObjectStore>,
    /// Running digests of E2EE uploads on this node.
    pub digests: crate::files::RunningObjects,
    /// Per-address rate limiters.
    pub rate_limits: Arc<crate::limits::RateLimits>,
    /// Refusals already audited in the current window.
    pub refusals: Arc<crate::audit::RefusalMemo>,
    /// KEKs for files the server encrypts.
    pub keyring: Arc<crate::keyring::Keyring>,
    /// Recently unwrapped file keys.
    pub deks: Arc<crate::keyring::DekCache>,
}

impl AppState {
    /// State for a server over `store` and `objects`.
    pub fn new(
        store: Arc<dyn MetaStore>,
        objects: Arc<dyn crate::objects::ObjectStore>,
        identity: Identity,
        config: Config,
        keyring: crate::keyring::Keyring,
    ) -> Self {
        Self {
            keyring: Arc::new(keyring),
            deks: Arc::new(crate::keyring::DekCache::new(
                std::time::Duration::from_secs(config.dek_cache_secs),
            )),
            store,
            identity: Arc::new(identity),
            rate_limits: crate::limits::RateLimits::new(&config.limits),
            config: Arc::new(config),
            objects,
            digests: crate::files::RunningObjects::default(),
            refusals: Arc::default(),
        }
    }
}

#[derive(OpenApi)]
#[openapi(
    info(
        title = "coffer",
        description = "End-to-end encrypted file exchange. See docs/API.md for the protocol around these endpoints."
    ),
    modifiers(&BearerAuth),
    components(schemas(ErrorBody))
)]
struct ApiDoc;

/// Declares the bearer-token scheme that authenticated paths refer to.
struct BearerAuth;

impl utoipa::Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        openapi
            .components
            .get_or_insert_default()
            .add_security_scheme(
                "bearer",
                SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
            );
    }
}

/// Every route together with its OpenAPI description: a handler cannot be
/// routed without being documented, because both come from one macro.
pub fn documented_routes() -> (Router<AppState>, utoipa::openapi::OpenApi) {
    OpenApiRouter::with_openapi(ApiDoc::openapi())
        .routes(routes!(healthz))
        .routes(routes!(challenge))
        .routes(routes!(login))
        .routes(routes!(refresh))
        .routes(routes!(logout))
        .routes(routes!(whoami))
        .routes(routes!(user_identity))
        .merge(crate::files::routes())
        .merge(crate::shares::routes())
        .merge(crate::links::routes())
        .split_for_parts()
}

/// The router for all endpoints, including `/v1/openapi.json`.
pub fn router(state: AppState) -> Router {
    let (routes, openapi) = documented_routes();
    let document = Arc::new(openapi.to_json().unwrap_or_default());
    let json_limit = state.config.limits.max_json_bytes;
    routes
        .route(
            "/v1/openapi.json",
            axum::routing::get(move || async move {
                (
                    [(header::CONTENT_TYPE, "application/json")],
                    (*document).clone(),
                )
            }),
        )
        .route_layer(axum::middleware::from_fn(crate::metrics::track))
        .layer(axum::extract::DefaultBodyLimit::max(json_limit))
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            crate::limits::body_stall,
        ))
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            crate::limits::rate_limit,
        ))
        .with_state(state)
}

/// The JSON body of every error response.
#[derive(Serialize, ToSchema)]
pub struct ErrorBody {
    error: ErrorDetail,
}

#[derive(Serialize, ToSchema)]
struct ErrorDetail {
    /// Stable, machine-readable code (`unauthorized`, `not_found`, …).
    code: String,
    /// Human-readable explanation.
    message: String,
}

/// Liveness check.
#[utoipa::path(get, path = "/healthz", tag = "server",
    responses((status = 200, description = "The server is up", body = String)))]
async fn healthz() -> &'static str {
    "ok\n"
}

/// An API error with a stable code.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    code: &'static str,
    message: String,
}

impl ApiError {
    pub(crate) fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
        }
    }
    /// The one answer to every failed login or bad token: which part failed
    /// is not revealed.
    pub fn unauthorized() -> Self {
        Self::new(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "authentication failed",
        )
    }
    /// The stable error code.
    pub fn code(&self) -> &'static str {
        self.code
    }
    pub(crate) fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "bad_request", message)
    }
    pub(crate) fn not_found(what: &str) -> Self {
        Self::new(
            StatusCode::NOT_FOUND,
            "not_found",
            format!("no such {what}"),
        )
    }
    pub(crate) fn internal(err: impl std::fmt::Display) -> Self {
        tracing::error!("internal error: {err}");
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            "internal server error",
        )
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = Json(ErrorBody {
            error: ErrorDetail {
                code: self.code.to_string(),
                message: self.message,
            },
        });
        let mut response = (self.status, body).into_response();
        if self.status == StatusCode::UNAUTHORIZED {
            response.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                "Bearer".parse().expect("static header"),
            );
        }
        response
    }
}

impl From<crate::store::StoreError> for ApiError {
    fn from(err: crate::store::StoreError) -> Self {
        ApiError::internal(err)
    }
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
    if !valid_user_name(&req.user) {
        return Err(ApiError::bad_request("invalid user name"));
    }
    let mut nonce = [0u8; 32];
    aws_lc_rs::rand::fill(&mut nonce).map_err(|_| ApiError::internal("rng"))?;
    let ttl = state.config.challenge_ttl_secs;
    let now = crate::unix_now();
    state
        .store
        .put_challenge(&nonce, &req.user, now + ttl as i64, now)
        .await?;
    Ok(Json(ChallengeResponse {
        nonce: b64().encode(nonce),
        expires_in: ttl,
        server_identity: state.identity.public().to_string(),
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
    let result = verify_login(&state, &conn, &req).await;
    let outcome = if result.is_ok() { "ok" } else { "failed" };
    metrics::counter!("coffer_logins_total", "result" => outcome).increment(1);
    let actor = if valid_user_name(&req.user) {
        req.user.as_str()
    } else {
        "-"
    };
    let event = crate::audit::Event::new(actor, Some(conn.peer.ip()), "login", "").outcome(outcome);
    crate::audit::record(&state, event).await?;
    issue_token(&state, &result?).await.map(Json)
}

/// Checks a login request; returns the user's name.
async fn verify_login(
    state: &AppState,
    conn: &ConnInfo,
    req: &LoginRequest,
) -> Result<String, ApiError> {
    let nonce: [u8; 32] = b64()
        .decode(&req.nonce)
        .ok()
        .and_then(|n| n.try_into().ok())
        .ok_or_else(ApiError::unauthorized)?;
    // Consume first: a nonce is single-use whatever happens next.
    let Some((challenged_user, expires_at)) = state.store.take_challenge(&nonce).await? else {
        return Err(ApiError::unauthorized());
    };
    if challenged_user != req.user || expires_at < crate::unix_now() {
        return Err(ApiError::unauthorized());
    }
    let user = state
        .store
        .user(&req.user)
        .await?
        .filter(|u| !u.disabled)
        .ok_or_else(ApiError::unauthorized)?;
    let signature: [u8; 64] = b64()
        .decode(&req.signature)
        .ok()
        .and_then(|s| s.try_into().ok())
        .ok_or_else(ApiError::unauthorized)?;
    let public = PublicIdentity::parse(&user.public_identity).map_err(ApiError::internal)?;
    let message = login_message(&user.name, &nonce, state.identity.public(), &conn.exporter);
    public
        .verify(&message, &signature)
        .map_err(|_| ApiError::unauthorized())?;
    Ok(user.name)
}

async fn issue_token(state: &AppState, user: &str) -> Result<TokenResponse, ApiError> {
    let token = auth::new_token().map_err(ApiError::internal)?;
    let ttl = state.config.token_ttl_secs;
    state
        .store
        .put_token(&token_hash(&token), user, crate::unix_now() + ttl as i64)
        .await?;
    Ok(TokenResponse {
        token: token.to_string(),
        expires_in: ttl,
    })
}

/// A request authenticated by a bearer token.
pub struct Authenticated {
    /// The user.
    pub user: User,
    /// The client's address.
    pub ip: Option<std::net::IpAddr>,
    token_hash: [u8; 32],
}

impl Authenticated {
    /// An audit event by this user.
    pub fn event(&self, action: &'static str, target: &str) -> crate::audit::Event {
        crate::audit::Event::new(&self.user.name, self.ip, action, target)
    }
}

impl FromRequestParts<AppState> for Authenticated {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        let token = parts
            .headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .ok_or_else(ApiError::unauthorized)?;
        let hash = token_hash(token.trim());
        let user = state
            .store
            .token_user(&hash, crate::unix_now())
            .await?
            .ok_or_else(ApiError::unauthorized)?;
        let ip = parts.extensions.get::<ConnInfo>().map(|c| c.peer.ip());
        Ok(Self {
            user,
            ip,
            token_hash: hash,
        })
    }
}

/// A fresh token for a valid one, which is revoked.
#[utoipa::path(post, path = "/v1/auth/refresh", tag = "auth", security(("bearer" = [])),
    responses((status = 200, body = TokenResponse), (status = 401, body = ErrorBody)))]
async fn refresh(
    State(state): State<AppState>,
    auth: Authenticated,
) -> Result<Json<TokenResponse>, ApiError> {
    let fresh = issue_token(&state, &auth.user.name).await?;
    state.store.revoke_token(&auth.token_hash).await?;
    Ok(Json(fresh))
}

/// Revokes the token.
#[utoipa::path(post, path = "/v1/auth/logout", tag = "auth", security(("bearer" = [])),
    responses((status = 204, description = "Revoked"), (status = 401, body = ErrorBody)))]
async fn logout(
    State(state): State<AppState>,
    auth: Authenticated,
) -> Result<StatusCode, ApiError> {
    state.store.revoke_token(&auth.token_hash).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// The authenticated user.
#[utoipa::path(get, path = "/v1/whoami", tag = "auth", security(("bearer" = [])),
    responses((status = 200, description = "`{user, admin}`", body = serde_json::Value),
        (status = 401, body = ErrorBody)))]
async fn whoami(auth: Authenticated) -> Json<serde_json::Value> {
    Json(json!({"user": auth.user.name, "admin": auth.user.is_admin}))
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
    let user = state
        .store
        .user(&name)
        .await?
        .ok_or_else(|| ApiError::not_found("user"))?;
    let public = PublicIdentity::parse(&user.public_identity).map_err(ApiError::internal)?;
    Ok(Json(json!({
        "name": user.name,
        "public_identity": user.public_identity,
        "fingerprint": public.fingerprint(),
    })))
}
