//! End-to-end encrypted sharing: a share is a key wrap (a coffer format
//! stanza) for another user's key, computed by the owner's client. The
//! server stores it and lets that user read the file; it never sees a file
//! key. Revoking deletes the wrap, and with it the access.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use base64::Engine as _;
use serde_json::json;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::api::{ApiError, AppState, Authenticated, ErrorBody};
use crate::files::owned_file;

/// Routes for shares and wraps.
pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(own_wrap))
        .routes(routes!(list_shares))
        .routes(routes!(share, revoke))
}

/// Checks that `stanza` is a well-formed coffer stanza addressed to the
/// current key of `user`, an enabled user; returns the user's name.
pub(crate) async fn check_wrap(
    state: &AppState,
    user: &str,
    stanza: &[u8],
) -> Result<String, ApiError> {
    let recipient = state
        .store
        .user(user)
        .await?
        .filter(|u| !u.disabled)
        .ok_or_else(|| ApiError::not_found("user"))?;
    let stanza = coffer_format::Stanza::from_detached(stanza)
        .map_err(|_| ApiError::bad_request("not a coffer stanza"))?;
    let public = coffer_format::PublicIdentity::parse(&recipient.public_identity)
        .map_err(ApiError::internal)?;
    if !stanza.is_for(&public) {
        return Err(ApiError::bad_request(format!(
            "the wrap is not addressed to {}'s key",
            recipient.name
        )));
    }
    Ok(recipient.name)
}

/// Refuses a wrap that would take a file past the configured number.
pub(crate) fn check_wrap_count(state: &AppState, count: usize) -> Result<(), ApiError> {
    if count > state.config.max_wraps_per_file {
        return Err(ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "too_many_wraps",
            format!(
                "a file may be shared with at most {} users",
                state.config.max_wraps_per_file
            ),
        ));
    }
    Ok(())
}

#[derive(serde::Deserialize, ToSchema)]
struct ShareRequest {
    /// The recipient's stanza (coffer format §4.2), base64url.
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
    let file = owned_file(&state, &auth, &id).await?;
    let bytes = crate::auth::b64()
        .decode(&req.stanza)
        .map_err(|_| ApiError::bad_request("stanza is not base64url"))?;
    let recipient = check_wrap(&state, &user, &bytes).await?;
    let holders = state.store.wrap_users(&file.id).await?;
    if !holders.contains(&recipient) {
        check_wrap_count(&state, holders.len() + 1)?;
    }
    state
        .store
        .put_wrap(&file.id, &recipient, &bytes, crate::unix_now())
        .await?;
    crate::audit::record(&state, auth.event("share", &file.id).detail(recipient)).await?;
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
    let file = owned_file(&state, &auth, &id).await?;
    if state.store.delete_wrap(&file.id, &user).await? {
        crate::audit::record(&state, auth.event("revoke", &file.id).detail(user)).await?;
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(ApiError::not_found("share"))
    }
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
    let file = owned_file(&state, &auth, &id).await?;
    Ok(Json(
        json!({"users": state.store.wrap_users(&file.id).await?}),
    ))
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
    let stanza = state
        .store
        .wrap(&id, &auth.user.name)
        .await?
        .ok_or_else(|| ApiError::not_found("wrap"))?;
    Ok(Json(json!({"stanza": crate::auth::b64().encode(stanza)})))
}
