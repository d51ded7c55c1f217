//! Upload links (file requests, docs/API.md "Upload links"; derivations in
//! `coffer_proto::request`). The URL is
//! `https://HOST:PORT/v1/requests/<id>#k=<secret>&r=<pin>[&n=<note>]`:
//! a browser opening it gets a page that encrypts the files its user
//! chooses to the key `r` pins (the caller's) and uploads them. They arrive
//! in the caller's inbox, marked as come through the link.

use serde::{Deserialize, Serialize};
use serde_json::json;
use zeroize::Zeroizing;

use crate::session::Session;
use crate::{Error, Result};

/// What the owner asks for.
#[derive(Default)]
pub struct RequestOptions {
    /// Lifetime in seconds (server default when absent).
    pub expires_in: Option<u64>,
    /// How many files may be sent through it.
    pub max_files: Option<u64>,
    /// Largest file it takes, in bytes (as stored: encrypted, slightly
    /// more than the file).
    pub max_file_bytes: Option<u64>,
    /// Whether the page asks senders for their name.
    pub ask_name: bool,
    /// A note the page shows senders; it stays in the URL fragment.
    pub note: Option<String>,
    /// A password senders must type; the server gets only a value derived
    /// from it and the URL secret (`coffer_proto::request::password_proof`).
    pub password: Option<Zeroizing<String>>,
}

/// An upload link as its owner sees it.
#[derive(Clone, Debug, Deserialize, Serialize)]
pub struct RequestEntry {
    /// Its id.
    pub id: String,
    /// When it was made (Unix time).
    pub created_at: i64,
    /// When it stops taking files (Unix time).
    pub expires_at: i64,
    /// File limit, if any.
    pub max_files: Option<u64>,
    /// Largest file it takes, if limited.
    pub max_file_bytes: Option<u64>,
    /// Uploads begun through it.
    pub files_started: u64,
    /// Whether the page asks senders for their name.
    pub ask_name: bool,
    /// Whether senders need a password.
    #[serde(default)]
    pub password: bool,
    /// Wrong passwords so far.
    #[serde(default)]
    pub failed_attempts: u32,
}

/// An upload link just made.
#[derive(Debug)]
pub struct CreatedRequest {
    /// Its id.
    pub id: String,
    /// The URL to hand out (with the secret in its fragment).
    pub url: String,
}

/// The characters of a note left as they are in the fragment
/// (RFC 3986 unreserved); everything else is percent-encoded UTF-8, which
/// the page's `URLSearchParams` decodes.
fn percent_encode(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for byte in text.bytes() {
        if byte.is_ascii_alphanumeric() || b"-._~".contains(&byte) {
            out.push(byte as char);
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

/// Longest note, in bytes (it travels in the URL).
pub const MAX_NOTE_LEN: usize = 500;

/// Creates an upload link for the caller's own key and returns its URL.
pub async fn create(session: &mut Session, options: RequestOptions) -> Result<CreatedRequest> {
    let identity = session.require_identity("create an upload link")?;
    if options
        .note
        .as_ref()
        .is_some_and(|n| n.len() > MAX_NOTE_LEN)
    {
        return Err(Error::Usage(format!(
            "the note must be at most {MAX_NOTE_LEN} bytes (it travels in the URL)"
        )));
    }
    let mut secret = Zeroizing::new([0u8; coffer_proto::request::SECRET_LEN]);
    aws_lc_rs::rand::fill(secret.as_mut()).map_err(|_| Error::Usage("no randomness".into()))?;
    let access = coffer_proto::request::access_proof(&secret);
    let mut body = json!({ "access": access.as_str(), "ask_name": options.ask_name });
    if let Some(password) = options.password.as_deref() {
        if password.is_empty() {
            return Err(Error::Usage("the password is empty".into()));
        }
        let proof = coffer_proto::request::password_proof(&secret, password);
        body["password"] = json!(proof.as_str());
    }
    for (key, value) in [
        ("expires_in", options.expires_in),
        ("max_files", options.max_files),
        ("max_file_bytes", options.max_file_bytes),
    ] {
        if let Some(value) = value {
            body[key] = json!(value);
        }
    }
    let entry = session.create_request(&body).await?;
    let b64 = |bytes: &[u8]| base64::Engine::encode(coffer_proto::b64(), bytes);
    let mut url = format!(
        "{}/v1/requests/{}#k={}&r={}",
        session.public_url(),
        entry.id,
        b64(secret.as_ref()),
        coffer_proto::request::pin(&identity.public().to_bytes())
    );
    if let Some(note) = options.note.as_deref().filter(|n| !n.is_empty()) {
        url.push_str("&n=");
        url.push_str(&percent_encode(note));
    }
    Ok(CreatedRequest { id: entry.id, url })
}

/// The id in an upload link URL, or the text itself if it is an id.
pub fn id_of(given: &str) -> Result<String> {
    let id = match given.split_once("/v1/requests/") {
        Some((_, rest)) => rest.split(['#', '?']).next().unwrap_or_default(),
        None => given,
    };
    if id.is_empty() || !id.bytes().all(|b| b.is_ascii_alphanumeric()) {
        return Err(Error::Usage(format!(
            "not an upload link or its id: {}",
            crate::untrusted::printable(given)
        )));
    }
    Ok(id.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn notes_are_percent_encoded() {
        assert_eq!(percent_encode("a b&c=d#é"), "a%20b%26c%3Dd%23%C3%A9");
    }

    #[test]
    fn ids_come_from_urls_or_as_given() {
        assert_eq!(
            id_of("https://h:1/v1/requests/abc123#k=x").unwrap(),
            "abc123"
        );
        assert_eq!(id_of("abc123").unwrap(), "abc123");
        assert!(id_of("../etc").is_err());
        assert!(id_of("https://h/v1/requests/#k").is_err());
    }
}
