//! Typed calls for the JSON endpoints of docs/API.md.

use coffer_format::{PublicIdentity, Stanza};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::session::{Session, decode_b64};
use crate::{Error, Result};

/// The header carrying a link's access proof.
pub const LINK_ACCESS_HEADER: &str = "coffer-link-access";

/// A file as the server lists it (the server knows no names).
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq, Eq)]
pub struct FileEntry {
    /// File id.
    pub id: String,
    /// Owner's user name.
    pub owner: String,
    /// Stored (encrypted) size in bytes.
    pub size: u64,
    /// The content identity, `<algorithm>:<hex>`.
    pub digest: String,
    /// Unix time of the upload.
    pub created_at: i64,
    /// Unix time at which the server deletes it, if it will.
    #[serde(default)]
    pub expires_at: Option<i64>,
    /// The upload link (of the caller's) it came through, if the server
    /// says so: then its sender is anonymous, signed with a one-time key,
    /// and the file must name that link in its metadata.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub via_request: Option<String>,
    /// What the listing carried to show the file without more requests
    /// (the server's claims, checked like the answers they replace).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub details: Option<ListedDetails>,
}

/// A listing's details of one file (`GET /v1/files?details=true`).
#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq, Eq)]
pub struct ListedDetails {
    /// The caller's wrap (base64url).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stanza: Option<String>,
    /// The core header (base64url); absent for a file the server encrypted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub header: Option<String>,
    /// For the owner: the other users holding a wrap.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shared_with: Option<Vec<String>>,
    /// The server says it has lost the file's stored bytes.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub missing: bool,
}

/// Which files [`Session::list_files`] lists.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Listing {
    /// The caller's own.
    Owned,
    /// Those others shared with the caller.
    SharedWithMe,
    /// Of those, the ones the caller has not acknowledged (the inbox).
    Unreceived,
}

/// What a delete took away.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Removed {
    /// The file itself (the caller owned it).
    File,
    /// The caller's share of someone else's file: gone from their view.
    Share,
}

/// A share link as the owner sees it.
#[derive(Clone, Debug, Deserialize, Serialize)]
pub struct LinkEntry {
    /// Link id.
    pub id: String,
    /// When it expires (Unix time).
    pub expires_at: i64,
    /// Download limit, if any.
    pub max_downloads: Option<u64>,
    /// Downloads spent.
    pub downloads: u64,
    /// Whether opening needs a password.
    pub password_required: bool,
    /// Locked after too many wrong passwords.
    pub locked: bool,
}

/// What anyone may learn about a link before opening it.
#[derive(Clone, Debug, Deserialize)]
pub struct LinkInfo {
    /// Stored size.
    pub size: u64,
    /// Expiry (Unix time).
    pub expires_at: i64,
    /// Downloads left, if limited.
    pub downloads_left: Option<u64>,
    /// Whether a password is needed.
    pub password_required: bool,
    /// The salt the link key was derived with (b64url).
    pub client_salt: Option<String>,
}

/// An opened link: the ticket for the bytes and the wrap for the link key.
#[derive(Debug, Deserialize)]
pub struct LinkTicket {
    /// Sent as `Coffer-Link-Ticket` to fetch the bytes.
    pub ticket: String,
    /// The wrap of the file key for the link key (b64url).
    pub stanza: String,
    /// Stored size.
    pub size: u64,
    /// The content identity, `<algorithm>:<hex>`.
    pub digest: String,
}

fn parse<T: for<'de> Deserialize<'de>>(value: Value, what: &str) -> Result<T> {
    serde_json::from_value(value).map_err(|e| Error::protocol(format!("{what}: {e}")))
}

fn path_segment(text: &str) -> Result<&str> {
    // Ids and user names never need escaping; refuse anything that would.
    if !text.is_empty()
        && text
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
    {
        Ok(text)
    } else {
        Err(Error::Usage(format!(
            "{text:?} is not a valid id or user name"
        )))
    }
}

pub(crate) fn stanza_from_b64(text: &str) -> Result<Stanza> {
    Ok(Stanza::from_detached(&decode_b64(text)?)?)
}

fn stanza_to_b64(stanza: &Stanza) -> String {
    base64::Engine::encode(coffer_proto::b64(), stanza.to_bytes())
}

impl Session {
    /// `GET /v1/whoami`.
    pub async fn whoami(&mut self) -> Result<Value> {
        self.call("GET", "/v1/whoami", None, true).await
    }

    /// A user's registered public identity.
    pub async fn user_identity(&mut self, user: &str) -> Result<PublicIdentity> {
        let path = format!("/v1/users/{}/identity", path_segment(user)?);
        let answer = self.call("GET", &path, None, true).await?;
        let text = answer["public_identity"]
            .as_str()
            .ok_or_else(|| Error::protocol("identity answer without public_identity"))?;
        Ok(PublicIdentity::parse(text)?)
    }

    /// Own files, those shared with the caller, or those of them not yet
    /// acknowledged; each with its [`ListedDetails`], so that showing or
    /// fetching them takes no request per file for wrap, header or shares
    /// (a page of 200 per request).
    pub async fn list_files(&mut self, listing: Listing) -> Result<Vec<FileEntry>> {
        let mut files: Vec<FileEntry> = Vec::new();
        let mut after: Option<String> = None;
        loop {
            let mut path = match listing {
                Listing::Owned => "/v1/files?details=true&shared_with_me=false".to_string(),
                Listing::SharedWithMe => "/v1/files?details=true&shared_with_me=true".to_string(),
                Listing::Unreceived => {
                    "/v1/files?details=true&shared_with_me=true&unreceived=true".to_string()
                }
            };
            if let Some(cursor) = &after {
                path.push_str("&after=");
                path.push_str(path_segment(cursor)?);
            }
            let answer = self.call("GET", &path, None, true).await?;
            files.extend(parse::<Vec<FileEntry>>(
                answer["files"].clone(),
                "file list",
            )?);
            match answer["next"].as_str() {
                Some(next) if Some(next) != after.as_deref() => after = Some(next.to_string()),
                _ => return Ok(files),
            }
        }
    }

    /// One file's entry.
    pub async fn file_meta(&mut self, id: &str) -> Result<FileEntry> {
        let path = format!("/v1/files/{}/meta", path_segment(id)?);
        let answer = self.call("GET", &path, None, true).await?;
        parse(answer, "file entry")
    }

    /// The signed receipt the server keeps for a file.
    pub async fn file_receipt(&mut self, id: &str) -> Result<coffer_proto::receipt::SignedReceipt> {
        let path = format!("/v1/files/{}/receipt", path_segment(id)?);
        let answer = self.call("GET", &path, None, true).await?;
        parse(answer, "receipt")
    }

    /// Deletes a file (its owner), or removes it from the caller's view (a
    /// recipient: their wrap only).
    pub async fn delete_file(&mut self, id: &str) -> Result<Removed> {
        let path = format!("/v1/files/{}", path_segment(id)?);
        let answer = self.call("DELETE", &path, None, true).await?;
        match answer["removed"].as_str() {
            Some("file") => Ok(Removed::File),
            Some("share") => Ok(Removed::Share),
            _ => Err(Error::protocol("delete answer without what was removed")),
        }
    }

    /// Acknowledges that a file shared with the caller arrived.
    pub async fn mark_received(&mut self, id: &str) -> Result<()> {
        let path = format!("/v1/files/{}/received", path_segment(id)?);
        self.call("PUT", &path, None, true).await.map(drop)
    }

    /// The caller's own wrap of a file's key.
    pub async fn own_wrap(&mut self, id: &str) -> Result<Stanza> {
        let path = format!("/v1/files/{}/wrap", path_segment(id)?);
        let answer = self.call("GET", &path, None, true).await?;
        stanza_from_b64(answer["stanza"].as_str().unwrap_or_default())
    }

    /// Stores `user`'s wrap of a file's key (sharing).
    pub async fn put_share(&mut self, id: &str, user: &str, stanza: &Stanza) -> Result<()> {
        let path = format!(
            "/v1/files/{}/shares/{}",
            path_segment(id)?,
            path_segment(user)?
        );
        let body = json!({ "stanza": stanza_to_b64(stanza) });
        self.call("PUT", &path, Some(&body), true).await.map(drop)
    }

    /// Removes `user`'s wrap (revoking access).
    pub async fn delete_share(&mut self, id: &str, user: &str) -> Result<()> {
        let path = format!(
            "/v1/files/{}/shares/{}",
            path_segment(id)?,
            path_segment(user)?
        );
        self.call("DELETE", &path, None, true).await.map(drop)
    }

    /// Who holds a wrap of a file besides the owner.
    pub async fn list_shares(&mut self, id: &str) -> Result<Vec<String>> {
        let path = format!("/v1/files/{}/shares", path_segment(id)?);
        let answer = self.call("GET", &path, None, true).await?;
        parse(answer["users"].clone(), "share list")
    }

    /// Creates a link; `body` as in docs/API.md. Returns the link id.
    pub(crate) async fn create_link(&mut self, id: &str, body: &Value) -> Result<String> {
        let path = format!("/v1/files/{}/links", path_segment(id)?);
        let answer = self.call("POST", &path, Some(body), true).await?;
        answer["id"]
            .as_str()
            .map(str::to_string)
            .ok_or_else(|| Error::protocol("link answer without id"))
    }

    /// Creates an upload link; `body` as in docs/API.md.
    pub(crate) async fn create_request(
        &mut self,
        body: &Value,
    ) -> Result<crate::requests::RequestEntry> {
        let answer = self.call("POST", "/v1/requests", Some(body), true).await?;
        parse(answer, "upload link")
    }

    /// The caller's upload links.
    pub async fn list_requests(&mut self) -> Result<Vec<crate::requests::RequestEntry>> {
        let answer = self.call("GET", "/v1/requests", None, true).await?;
        parse(answer["requests"].clone(), "upload link list")
    }

    /// Revokes one of the caller's upload links.
    pub async fn delete_request(&mut self, id: &str) -> Result<()> {
        let path = format!("/v1/requests/{}", path_segment(id)?);
        self.call("DELETE", &path, None, true).await.map(drop)
    }

    /// A file's links.
    pub async fn list_links(&mut self, id: &str) -> Result<Vec<LinkEntry>> {
        let path = format!("/v1/files/{}/links", path_segment(id)?);
        let answer = self.call("GET", &path, None, true).await?;
        parse(answer["links"].clone(), "link list")
    }

    /// Revokes a link.
    pub async fn delete_link(&mut self, link: &str) -> Result<()> {
        let path = format!("/v1/links/{}", path_segment(link)?);
        self.call("DELETE", &path, None, true).await.map(drop)
    }

    /// Public facts about a link (no account needed).
    /// `access` is the proof derived from the URL secret
    /// (`coffer_proto::link::access_proof`).
    pub async fn link_info(&mut self, link: &str, access: &str) -> Result<LinkInfo> {
        let path = format!("/v1/links/{}", path_segment(link)?);
        let headers = [(LINK_ACCESS_HEADER, access)];
        let answer = self.call_anonymous("GET", &path, None, &headers).await?;
        parse(answer, "link info")
    }

    /// Opens a link (spends one download).
    pub async fn open_link(
        &mut self,
        link: &str,
        access: &str,
        password: Option<&str>,
    ) -> Result<LinkTicket> {
        let path = format!("/v1/links/{}/open", path_segment(link)?);
        let body = match password {
            Some(p) => json!({ "password": p }),
            None => json!({}),
        };
        let headers = [(LINK_ACCESS_HEADER, access)];
        let answer = self
            .call_anonymous("POST", &path, Some(&body), &headers)
            .await?;
        parse(answer, "link ticket")
    }
}
