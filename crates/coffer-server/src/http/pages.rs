//! The browser pages: the link page that decrypts a shared file in the
//! browser, the upload-link page that encrypts files in the browser for the
//! link's owner, and their scripts, service worker and style.
//!
//! They are built from `crates/coffer-server/web` (npm, esbuild, a committed
//! lockfile) into `web/dist/`, which is committed and embedded here; CI
//! rebuilds it and fails if it differs (`npm run check`). The page is served
//! at the link's own URL when a browser asks for HTML, so the URL an owner
//! sends works for `coffer get` and for a browser alike.
//!
//! Every answer from this module carries a strict Content-Security-Policy:
//! scripts only from this origin, no inline script or style, no eval, no
//! other origin at all, and no framing. The page's secrets live in the URL
//! fragment, which a browser never sends; `Referrer-Policy: no-referrer`
//! keeps the rest of the URL out of other sites' logs.

use axum::Router;
use axum::extract::Path;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};

use super::state::AppState;

/// The policy of every page and asset (see the module doc).
pub const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; script-src 'self'; \
    style-src 'self'; img-src 'self'; connect-src 'self'; worker-src 'self'; \
    frame-src 'self'; form-action 'none'; base-uri 'none'; frame-ancestors 'none'";

struct Asset {
    name: &'static str,
    content_type: &'static str,
    bytes: &'static [u8],
}

const ASSETS: &[Asset] = &[
    Asset {
        name: "link.js",
        content_type: "text/javascript; charset=utf-8",
        bytes: include_bytes!("../../web/dist/link.js"),
    },
    Asset {
        name: "request.js",
        content_type: "text/javascript; charset=utf-8",
        bytes: include_bytes!("../../web/dist/request.js"),
    },
    Asset {
        name: "sw.js",
        content_type: "text/javascript; charset=utf-8",
        bytes: include_bytes!("../../web/dist/sw.js"),
    },
    Asset {
        name: "page.css",
        content_type: "text/css; charset=utf-8",
        bytes: include_bytes!("../../web/dist/page.css"),
    },
];

const LINK_PAGE: &[u8] = include_bytes!("../../web/dist/link.html");
const REQUEST_PAGE: &[u8] = include_bytes!("../../web/dist/request.html");

/// The routes of the embedded assets.
pub fn routes() -> Router<AppState> {
    Router::new().route("/assets/{name}", axum::routing::get(asset))
}

async fn asset(Path(name): Path<String>) -> Response {
    match ASSETS.iter().find(|asset| asset.name == name) {
        Some(asset) => page_response(asset.content_type, asset.bytes),
        None => (StatusCode::NOT_FOUND, "no such asset").into_response(),
    }
}

/// Whether a request is a browser navigation asking for a page (it
/// prefers `text/html`) rather than an API client asking for JSON.
pub fn wants_html(headers: &HeaderMap) -> bool {
    let accept = headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    accept
        .split(',')
        .next()
        .is_some_and(|first| first.trim().starts_with("text/html"))
}

/// The link page. It is the same for every link: everything specific to a
/// link is in the URL fragment or comes from the API, so the server cannot
/// tell from this answer which link was opened by whom beyond the path.
pub fn link_page() -> Response {
    page_response("text/html; charset=utf-8", LINK_PAGE)
}

/// The upload-link page, the same for every upload link (see [`link_page`]).
pub fn request_page() -> Response {
    page_response("text/html; charset=utf-8", REQUEST_PAGE)
}

fn page_response(content_type: &'static str, bytes: &'static [u8]) -> Response {
    let mut response = bytes.into_response();
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    secure(headers);
    response
}

/// The security headers of every page and asset.
pub fn secure(headers: &mut HeaderMap) {
    let fixed = [
        (header::CONTENT_SECURITY_POLICY, CONTENT_SECURITY_POLICY),
        (header::REFERRER_POLICY, "no-referrer"),
        (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        (header::X_FRAME_OPTIONS, "DENY"),
        (header::CACHE_CONTROL, "no-cache"),
        (
            header::HeaderName::from_static("cross-origin-opener-policy"),
            "same-origin",
        ),
        (
            header::HeaderName::from_static("cross-origin-resource-policy"),
            "same-origin",
        ),
        (
            header::HeaderName::from_static("permissions-policy"),
            "camera=(), microphone=(), geolocation=(), interest-cohort=()",
        ),
    ];
    for (name, value) in fixed {
        headers.insert(name, HeaderValue::from_static(value));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn browsers_get_the_page_and_api_clients_json() {
        let ask = |accept: &str| {
            let mut headers = HeaderMap::new();
            headers.insert(header::ACCEPT, HeaderValue::from_str(accept).unwrap());
            wants_html(&headers)
        };
        assert!(ask(
            "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8"
        ));
        assert!(!ask("application/json"));
        assert!(!ask("*/*"));
        assert!(!wants_html(&HeaderMap::new()));
    }

    #[test]
    fn the_pages_load_only_their_own_assets() {
        for (page, script) in [(LINK_PAGE, "link.js"), (REQUEST_PAGE, "request.js")] {
            let page = std::str::from_utf8(page).unwrap();
            assert!(!page.contains("<script>"), "no inline script");
            assert!(!page.contains("style="), "no inline style");
            for reference in [format!("/assets/{script}"), "/assets/page.css".into()] {
                assert!(page.contains(&reference));
                let name = reference.trim_start_matches("/assets/");
                assert!(ASSETS.iter().any(|a| a.name == name), "{name} is embedded");
            }
            assert!(!page.contains("http://") && !page.contains("https://"));
        }
    }
}
