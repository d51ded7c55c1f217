//! The coffer wire protocol, shared by the server and the client: the exact
//! bytes each side signs, derives or pins. Keeping them in one small crate
//! (no I/O, no HTTP) means the two sides cannot drift apart, and a reviewer
//! finds every protocol constant in one place. docs/API.md is the prose
//! description of the same.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod fingerprint;
pub mod link;
pub mod login;
pub mod receipt;
pub mod request;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;

/// The base64 flavour of the API (nonces, signatures, stanzas, tokens):
/// URL-safe alphabet, no padding.
pub fn b64() -> &'static base64::engine::GeneralPurpose {
    &URL_SAFE_NO_PAD
}
