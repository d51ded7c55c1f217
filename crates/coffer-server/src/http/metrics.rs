//! Prometheus metrics, served on their own listener (`metrics_listen`) so
//! that the scrape endpoint is never exposed where the API is, over the same
//! TLS 1.3 configuration as the API.
//!
//! Names: `coffer_http_requests_total{method,route,status}`,
//! `coffer_http_request_duration_seconds{method,route}`,
//! `coffer_connections_open`, `coffer_connections_total`,
//! `coffer_tls_handshake_failures_total`, `coffer_upload_bytes_total`,
//! `coffer_uploads_committed_total`, `coffer_download_bytes_total`,
//! `coffer_logins_total{result}`, `coffer_link_opens_total{result}`.
//! Labels carry route templates (`/v1/files/{id}`), never ids or names.

use std::sync::OnceLock;
use std::time::Instant;

use axum::extract::{MatchedPath, Request};
use axum::middleware::Next;
use axum::response::Response;
use axum::routing::get;
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};

static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();

/// Installs the process-wide recorder (once) and returns its handle.
pub fn install() -> &'static PrometheusHandle {
    HANDLE.get_or_init(|| {
        let recorder = PrometheusBuilder::new().build_recorder();
        let handle = recorder.handle();
        if metrics::set_global_recorder(recorder).is_err() {
            tracing::warn!("a metrics recorder was already installed; /metrics stays empty");
        }
        handle
    })
}

/// The router of the metrics listener.
pub fn router() -> axum::Router {
    let handle = install();
    axum::Router::new().route("/metrics", get(move || async move { handle.render() }))
}

/// Middleware counting and timing every routed request.
pub async fn track(request: Request, next: Next) -> Response {
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "unmatched".to_string(), |p| p.as_str().to_string());
    let method = request.method().as_str().to_string();
    let started = Instant::now();
    let response = next.run(request).await;
    let status = response.status().as_u16().to_string();
    metrics::histogram!(
        "coffer_http_request_duration_seconds",
        "method" => method.clone(),
        "route" => route.clone()
    )
    .record(started.elapsed().as_secs_f64());
    metrics::counter!(
        "coffer_http_requests_total",
        "method" => method,
        "route" => route,
        "status" => status
    )
    .increment(1);
    response
}
