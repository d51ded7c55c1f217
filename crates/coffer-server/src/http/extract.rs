//! axum's extractors with coffer's error body.
//!
//! axum answers a body it cannot parse (or a path or query it cannot
//! decode) with a plain-text message; every coffer error is documented as
//! `{"error": {"code", "message"}}`. These wrappers keep axum's parsing and
//! status and only change the body. Handlers use them instead of axum's.

use axum::extract::rejection::{JsonRejection, PathRejection, QueryRejection};
use axum::extract::{FromRequest, FromRequestParts, OptionalFromRequest, Request};
use axum::http::StatusCode;
use axum::http::request::Parts;
use serde::de::DeserializeOwned;

use super::error::ApiError;
use crate::service::{Error, Kind};

/// A JSON request body (`axum::Json`), refused with a JSON error.
pub struct Json<T>(pub T);

/// A path parameter (`axum::extract::Path`), refused with a JSON error.
pub struct Path<T>(pub T);

/// Query parameters (`axum::extract::Query`), refused with a JSON error.
pub struct Query<T>(pub T);

/// Maps axum's status for a rejection to an error with a stable code.
fn refused(status: StatusCode, code: &'static str, detail: String) -> ApiError {
    let kind = match status {
        StatusCode::PAYLOAD_TOO_LARGE => Kind::TooLarge,
        StatusCode::UNSUPPORTED_MEDIA_TYPE => Kind::UnsupportedMediaType,
        StatusCode::UNPROCESSABLE_ENTITY => Kind::Unprocessable,
        _ => Kind::BadRequest,
    };
    let code = match kind {
        Kind::TooLarge => "too_large",
        _ => code,
    };
    Error::new(kind, code, detail)
}

fn json_refused(rejection: JsonRejection) -> ApiError {
    refused(rejection.status(), "invalid_json", rejection.body_text())
}

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for Json<T> {
    type Rejection = ApiError;

    async fn from_request(request: Request, state: &S) -> Result<Self, Self::Rejection> {
        match <axum::Json<T> as FromRequest<S>>::from_request(request, state).await {
            Ok(axum::Json(value)) => Ok(Self(value)),
            Err(rejection) => Err(json_refused(rejection)),
        }
    }
}

/// No body (no JSON content type) is `None`; a body that does not parse is
/// refused, as with axum's `Option<Json<T>>`.
impl<S: Send + Sync, T: DeserializeOwned> OptionalFromRequest<S> for Json<T> {
    type Rejection = ApiError;

    async fn from_request(request: Request, state: &S) -> Result<Option<Self>, Self::Rejection> {
        match <axum::Json<T> as OptionalFromRequest<S>>::from_request(request, state).await {
            Ok(value) => Ok(value.map(|axum::Json(value)| Self(value))),
            Err(rejection) => Err(json_refused(rejection)),
        }
    }
}

impl<S: Send + Sync, T: DeserializeOwned + Send> FromRequestParts<S> for Path<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        match axum::extract::Path::<T>::from_request_parts(parts, state).await {
            Ok(axum::extract::Path(value)) => Ok(Self(value)),
            Err(rejection) => Err(path_refused(rejection)),
        }
    }
}

fn path_refused(rejection: PathRejection) -> ApiError {
    refused(rejection.status(), "invalid_path", rejection.body_text())
}

impl<S: Send + Sync, T: DeserializeOwned> FromRequestParts<S> for Query<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        match axum::extract::Query::<T>::from_request_parts(parts, state).await {
            Ok(axum::extract::Query(value)) => Ok(Self(value)),
            Err(rejection) => Err(query_refused(rejection)),
        }
    }
}

fn query_refused(rejection: QueryRejection) -> ApiError {
    refused(rejection.status(), "invalid_query", rejection.body_text())
}

/// The answer for a path no route serves.
pub async fn no_route() -> ApiError {
    Error::not_found("route")
}

/// So handlers import one `Json` for bodies in and out.
impl<T: serde::Serialize> axum::response::IntoResponse for Json<T> {
    fn into_response(self) -> axum::response::Response {
        axum::Json(self.0).into_response()
    }
}

/// The answer for a method a route does not serve.
pub async fn wrong_method() -> ApiError {
    Error::new(
        Kind::MethodNotAllowed,
        "method_not_allowed",
        "this path does not take that method",
    )
}
