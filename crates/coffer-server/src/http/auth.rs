//! The bearer-token extractor: a handler that takes [`Authenticated`] runs
//! only for a valid token of an enabled user.

use axum::extract::FromRequestParts;
use axum::http::header;
use axum::http::request::Parts;

use super::access_log::LoggedUser;
use super::serve::ConnInfo;
use super::state::AppState;
use crate::service::{Caller, Error, session};

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
            caller: Caller { user, ip },
            token_hash,
        })
    }
}
