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
        if let Err(refused) = state.rate_limits.check_user(&user.name) {
            metrics::counter!("coffer_rate_limited_total").increment(1);
            let path = parts.uri.path().to_string();
            let ip = parts.extensions.get::<ConnInfo>().map(|c| c.peer.ip());
            if let Some(ip) = ip {
                crate::service::audit::refused(state, ip, "rate_limit", &path).await;
            }
            return Err(refused);
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
/// Header carrying an upload link's password (to begin an upload).
pub const REQUEST_PASSWORD_HEADER: &str = "coffer-request-password";

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
        // Only creating an upload needs the link's password.
        let step = if parts.method == axum::http::Method::POST {
            requests::UploadStep::Begin(request_password(&parts.headers))
        } else {
            requests::UploadStep::Continue
        };
        let caller = requests::sender(state, &request, access.as_deref(), step, ip).await?;
        Ok(Self { caller })
    }
}

/// The `Coffer-Request-Password` header, as a secret.
pub fn request_password(headers: &axum::http::HeaderMap) -> Option<secrecy::SecretString> {
    headers
        .get(REQUEST_PASSWORD_HEADER)
        .and_then(|v| v.to_str().ok())
        .map(|v| secrecy::SecretString::from(v.to_string()))
}
