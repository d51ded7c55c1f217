//! The JSON form of the service's errors, and their HTTP statuses.

use axum::Json;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use utoipa::ToSchema;

use crate::codec::Invalid;
use crate::service::{Error, Kind};

/// What handlers return on failure: the service's error.
pub type ApiError = Error;

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

/// The status of each kind of error.
pub fn status(kind: Kind) -> StatusCode {
    match kind {
        Kind::BadRequest => StatusCode::BAD_REQUEST,
        Kind::Unauthorized => StatusCode::UNAUTHORIZED,
        Kind::NotFound => StatusCode::NOT_FOUND,
        Kind::Conflict => StatusCode::CONFLICT,
        Kind::Gone => StatusCode::GONE,
        Kind::Locked => StatusCode::LOCKED,
        Kind::TooLarge => StatusCode::PAYLOAD_TOO_LARGE,
        Kind::TooMany => StatusCode::TOO_MANY_REQUESTS,
        Kind::Unprocessable => StatusCode::UNPROCESSABLE_ENTITY,
        // tus: 460 Checksum Mismatch.
        Kind::ChecksumMismatch => StatusCode::from_u16(460).unwrap_or(StatusCode::BAD_REQUEST),
        Kind::RangeNotSatisfiable => StatusCode::RANGE_NOT_SATISFIABLE,
        Kind::PreconditionFailed => StatusCode::PRECONDITION_FAILED,
        Kind::UnsupportedMediaType => StatusCode::UNSUPPORTED_MEDIA_TYPE,
        Kind::Timeout => StatusCode::REQUEST_TIMEOUT,
        Kind::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
        Kind::StorageFull => StatusCode::INSUFFICIENT_STORAGE,
        Kind::Internal => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

impl IntoResponse for Error {
    fn into_response(self) -> Response {
        let status = status(self.kind());
        let body = Json(ErrorBody {
            error: ErrorDetail {
                code: self.code().to_string(),
                message: self.message().to_string(),
            },
        });
        let mut response = (status, body).into_response();
        if let Some(secs) = self.retry_after_secs() {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, axum::http::HeaderValue::from(secs));
        }
        if status == StatusCode::UNAUTHORIZED {
            response.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                "Bearer".parse().expect("static header"),
            );
        }
        response
    }
}

impl From<Invalid> for Error {
    fn from(invalid: Invalid) -> Self {
        match invalid {
            Invalid::TusVersion => Error::new(
                Kind::PreconditionFailed,
                "tus_version",
                Invalid::TusVersion.to_string(),
            ),
            Invalid::Header(message) => Error::bad_request(message),
        }
    }
}
