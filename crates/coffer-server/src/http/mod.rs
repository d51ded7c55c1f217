//! The HTTP layer: the TLS accept loop ([`serve`]), the router with its
//! OpenAPI document, the shared state ([`state`]), the error type's JSON
//! form ([`error`]), extractors that refuse with it ([`extract`]), the
//! bearer-token extractor ([`auth`]), middleware
//! ([`limits`], [`metrics`], [`access_log`]), the browser pages ([`pages`]), connection timeouts ([`watchdog`]), the PROXY protocol ([`proxy`]), and one module per group of routes
//! ([`routes`]). Every handler is thin: parse the request (with
//! [`crate::codec`]), call one operation of [`crate::service`], answer.
//!
//! Errors are JSON with a stable code and a human message:
//! `{"error": {"code": "unauthorized", "message": "…"}}`.

pub mod access_log;
pub mod auth;
pub mod error;
pub mod extract;
pub mod limits;
pub mod metrics;
pub mod pages;
pub mod proxy;
pub mod routes;
pub mod serve;
pub mod state;
pub mod watchdog;

use std::sync::Arc;

use axum::Router;
use axum::http::header;
use utoipa::OpenApi;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa_axum::router::OpenApiRouter;

pub use error::{ApiError, ErrorBody};
pub use state::AppState;

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
        .merge(routes::session::routes())
        .merge(routes::uploads::routes())
        .merge(routes::files::routes())
        .merge(routes::shares::routes())
        .merge(routes::links::routes())
        .merge(routes::requests::routes())
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
        .merge(pages::routes())
        .fallback(extract::no_route)
        .method_not_allowed_fallback(extract::wrong_method)
        .route_layer(axum::middleware::from_fn(metrics::track))
        .route_layer(axum::middleware::from_fn(access_log::log))
        .layer(axum::extract::DefaultBodyLimit::max(json_limit))
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            limits::body_stall,
        ))
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            limits::rate_limit,
        ))
        .with_state(state)
}
