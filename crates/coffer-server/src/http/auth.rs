//! The bearer-token extractor: a handler that takes [`Authenticated`] runs
//! only for a valid token of an enabled user.

use axum::extract::FromRequestParts;
use axum::http::header;
use axum::http::request::Parts;

use super::access_log::LoggedUser;
use super::serve::ConnInfo;
use super::state::AppState;
use crate::service::{Caller, Error, requests, session};

/// A request authenticated by a bearer token.
pub struct Authenticated {
    /// Who is asking.
    pub caller: Caller,
    /// The token's hash (to refresh or revoke it).
    pub token_hash: [u8; 32],
}

impl FromRequestParts<AppState> for Authenticated {
    type Rejection = Error;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Error> {
        let token = parts
            .headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .ok_or_else(Error::unauthorized)?;
        let (user, token_hash) = session::token_user(state, token).await?;
        if let Some(logged) = parts.extensions.get::<LoggedUser>() {
            logged.set(&user.name);
        }
        let ip = parts.extensions.get::<ConnInfo>().map(|c| c.peer.ip());
        Ok(Self {
            caller: Caller {
                user,
                ip,
                via_request: None,
            },
            token_hash,
        })
    }
}

/// Header naming the upload link an anonymous sender uploads through.
pub const REQUEST_HEADER: &str = "coffer-request";
/// Header carrying the access proof derived from an upload link's URL.
pub const REQUEST_ACCESS_HEADER: &str = "coffer-request-access";

/// Who may use the tus routes: a user with a bearer token, or an anonymous
/// sender holding an upload link (`Coffer-Request` and
/// `Coffer-Request-Access`), who then acts for the link's owner on uploads
/// begun through that link only.
pub struct Uploader {
    /// Who is asking.
    pub caller: Caller,
}

impl FromRequestParts<AppState> for Uploader {
    type Rejection = Error;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Error> {
        if parts.headers.contains_key(header::AUTHORIZATION) {
            let auth = Authenticated::from_request_parts(parts, state).await?;
            return Ok(Self {
                caller: auth.caller,
            });
        }
        let text = |name: &str| {
            parts
                .headers
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::to_string)
        };
        let request = text(REQUEST_HEADER).ok_or_else(Error::unauthorized)?;
        let access = text(REQUEST_ACCESS_HEADER);
        let ip = parts.extensions.get::<ConnInfo>().map(|c| c.peer.ip());
        let caller = requests::sender(state, &request, access.as_deref(), ip).await?;
        Ok(Self { caller })
    }
}
