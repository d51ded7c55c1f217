//! One structured line per request (`coffer::access`, at `info`): method,
//! route template, status, bytes in (as declared by `Content-Length`) and
//! out (the body's known size, else its `Content-Length`), duration, the
//! authenticated user, the peer and a request id (also sent back as `X-Request-Id`). Never a token, key, file
//! name, link secret or id: the route is the template (`/v1/files/{id}`),
//! and nothing of the query string is kept. Refusals (4xx but 404) log at
//! `warn`, server errors at `error`.

use std::sync::{Arc, OnceLock};
use std::time::Instant;

use axum::extract::{MatchedPath, Request};
use axum::http::{HeaderMap, HeaderValue, header};
use axum::middleware::Next;
use axum::response::Response;

use super::serve::ConnInfo;

/// Where the token extractor leaves the authenticated user's name for the
/// access log (the log line is written after the handler, outside it).
#[derive(Clone, Default)]
pub struct LoggedUser(Arc<OnceLock<String>>);

impl LoggedUser {
    /// Records the user the request authenticated as.
    pub fn set(&self, name: &str) {
        let _ = self.0.set(name.to_string());
    }
}

/// Middleware writing the access line.
pub async fn log(mut request: Request, next: Next) -> Response {
    let started = Instant::now();
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "unmatched".to_string(), |p| p.as_str().to_string());
    let method = request.method().clone();
    let peer = request.extensions().get::<ConnInfo>().map(|c| c.peer.ip());
    let bytes_in = content_length(request.headers());
    let user = LoggedUser::default();
    request.extensions_mut().insert(user.clone());
    let id = request_id();
    let mut response = next.run(request).await;
    if let Ok(value) = HeaderValue::from_str(&id) {
        response.headers_mut().insert("x-request-id", value);
    }
    let status = response.status().as_u16();
    // Hyper adds Content-Length after this layer; a whole body knows its
    // size already, a streamed download says so in its own header.
    let bytes_out = axum::body::HttpBody::size_hint(response.body())
        .exact()
        .unwrap_or_else(|| content_length(response.headers()));
    let user = user.0.get().map_or("-", String::as_str);
    let peer = peer.map_or_else(|| "-".to_string(), |ip| ip.to_string());
    let ms = started.elapsed().as_secs_f64() * 1000.0;
    macro_rules! line {
        ($level:ident) => {
            tracing::$level!(target: "coffer::access", request_id = %id, %method, %route, status,
                bytes_in, bytes_out, duration_ms = format_args!("{ms:.1}"), %user, %peer, "request")
        };
    }
    match status {
        500.. => line!(error),
        400..=499 if status != 404 => line!(warn),
        _ => line!(info),
    }
    response
}

fn content_length(headers: &HeaderMap) -> u64 {
    headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

/// 64 random bits, hex: unique enough to find one request in the logs.
fn request_id() -> String {
    let mut bytes = [0u8; 8];
    // A failed generator leaves zeros: an unhelpful id, nothing worse.
    let _ = aws_lc_rs::rand::fill(&mut bytes);
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
