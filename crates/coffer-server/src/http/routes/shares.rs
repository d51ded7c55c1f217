//! Shares: key wraps for other users (the logic is in
//! [`crate::service::shares`]).

use axum::extract::State;

use crate::http::extract::{Json, Path};
use axum::http::StatusCode;
use base64::Engine as _;
use serde_json::json;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::http::auth::Authenticated;
use crate::http::error::{ApiError, ErrorBody};
use crate::http::state::AppState;
use crate::service::session::b64;
use crate::service::{Error, shares};

/// Routes for shares and wraps.
pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(own_wrap))
        .routes(routes!(list_shares))
        .routes(routes!(share, revoke))
}

#[derive(serde::Deserialize, ToSchema)]
struct ShareRequest {
    /// The recipient's stanza (coffer format §5.3), base64url.
    stanza: String,
}

/// Shares a file: stores the recipient's key wrap (computed by the owner's
/// client, addressed to the recipient's current key).
#[utoipa::path(put, path = "/v1/files/{id}/shares/{user}", tag = "sharing", security(("bearer" = [])),
    params(("id" = String, Path), ("user" = String, Path)),
    request_body = ShareRequest,
    responses((status = 204), (status = 400, description = "Not a stanza, or not for that user's key", body = ErrorBody),
        (status = 404, body = ErrorBody), (status = 413, description = "Too many wraps", body = ErrorBody)))]
async fn share(
    State(state): State<AppState>,
    auth: Authenticated,
    Path((id, user)): Path<(String, String)>,
    Json(req): Json<ShareRequest>,
) -> Result<StatusCode, ApiError> {
    let stanza = b64()
        .decode(&req.stanza)
        .map_err(|_| Error::bad_request("stanza is not base64url"))?;
    shares::share(&state, &auth.caller, &id, &user, &stanza).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Revokes a share: deletes the wrap and with it the access.
#[utoipa::path(delete, path = "/v1/files/{id}/shares/{user}", tag = "sharing", security(("bearer" = [])),
    params(("id" = String, Path), ("user" = String, Path)),
    responses((status = 204), (status = 404, body = ErrorBody)))]
async fn revoke(
    State(state): State<AppState>,
    auth: Authenticated,
    Path((id, user)): Path<(String, String)>,
) -> Result<StatusCode, ApiError> {
    shares::revoke(&state, &auth.caller, &id, &user).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Users holding a wrap for a file (owner only).
#[utoipa::path(get, path = "/v1/files/{id}/shares", tag = "sharing", security(("bearer" = [])),
    params(("id" = String, Path)),
    responses((status = 200, description = "`{users: [name…]}`", body = serde_json::Value), (status = 404, body = ErrorBody)))]
async fn list_shares(
    State(state): State<AppState>,
    auth: Authenticated,
    Path(id): Path<String>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let users = shares::holders(&state, &auth.caller, &id).await?;
    Ok(Json(json!({ "users": users })))
}

/// The caller's own key wrap for a file.
#[utoipa::path(get, path = "/v1/files/{id}/wrap", tag = "sharing", security(("bearer" = [])),
    params(("id" = String, Path)),
    responses((status = 200, description = "`{stanza: base64url}`", body = serde_json::Value), (status = 404, body = ErrorBody)))]
async fn own_wrap(
    State(state): State<AppState>,
    auth: Authenticated,
    Path(id): Path<String>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let stanza = shares::own_wrap(&state, &auth.caller, &id).await?;
    Ok(Json(json!({ "stanza": b64().encode(stanza) })))
}
