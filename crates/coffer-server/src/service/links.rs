//! Anonymous share links.
//!
//! The owner's client derives a link key from a secret that goes only into
//! the URL fragment (browsers and HTTP clients never send fragments), and,
//! when a password is set, from the password too. It wraps the file key for
//! that link key and stores the wrap here. The server therefore holds a
//! wrap it cannot open, and enforces what it can: expiry, a download limit
//! and, optionally, a password verifier (Argon2id over what the client
//! sends as the password; the client sends a value derived from the
//! password, not the password itself).
//!
//! Every look at a link (its details, opening it) must carry the access
//! proof derived from the URL secret (`coffer_proto::link`), checked
//! against its stored SHA-256 in constant time; without it the answer is
//! "no such link". So the link id alone, which shows in paths and logs,
//! lets nobody guess the password or lock the link.
//!
//! Opening a link checks the password, spends one download atomically and
//! returns the wrap and a ticket. The ticket fetches the bytes, with
//! ranges, until it expires, so an interrupted download resumes without
//! spending another download. Each password attempt is reserved in the
//! database before Argon2 runs (given back when the password is right), so
//! concurrent wrong guesses cannot overshoot `link_max_password_failures`,
//! after which the link is locked for good. A link whose owner is disabled
//! stops working.

use secrecy::{ExposeSecret as _, SecretString};

use super::files::owned_file;
use super::session::{new_token, token_hash};
use super::{Caller, Error, Kind, Result, Service, audit, new_id, password};
use crate::store::{FileRecord, Link};

const MAX_CLIENT_SALT_LEN: usize = 64;

fn gone(code: &'static str, message: &str) -> Error {
    Error::new(Kind::Gone, code, message)
}

/// Whether a link is locked after too many wrong passwords.
pub fn is_locked(service: &Service, link: &Link) -> bool {
    link.failed_attempts >= service.config.link_max_password_failures
}

/// Why a link can no longer be opened, if it cannot.
fn closed(service: &Service, link: &Link, now: i64) -> Option<Error> {
    if is_locked(service, link) {
        Some(gone(
            "link_locked",
            "link locked after too many wrong passwords",
        ))
    } else if link.expires_at <= now {
        Some(gone("link_expired", "link expired"))
    } else if link.max_downloads.is_some_and(|max| link.downloads >= max) {
        Some(gone("link_exhausted", "link download limit reached"))
    } else {
        None
    }
}

/// A link the owner asks for.
pub struct NewLink {
    /// Wrap of the file key for the link key.
    pub stanza: Vec<u8>,
    /// Lifetime in seconds (default and maximum from the configuration).
    pub expires_in: Option<u64>,
    /// How many times the link may be opened.
    pub max_downloads: Option<u64>,
    /// Password verifier input, if the link needs a password.
    pub password: Option<SecretString>,
    /// Opaque salt for the opener's key derivation.
    pub client_salt: Option<Vec<u8>>,
    /// The access proof (`coffer_proto::link::access_proof`), of which
    /// only the SHA-256 is kept.
    pub access: SecretString,
}

/// Creates a link to the caller's file `id`, holding a wrap the server
/// cannot open.
pub async fn create(service: &Service, caller: &Caller, id: &str, new: NewLink) -> Result<Link> {
    let file = owned_file(service, caller, id).await?;
    coffer_format::Stanza::from_detached(&new.stanza)
        .map_err(|_| Error::bad_request("not a coffer stanza"))?;
    let ttl = new
        .expires_in
        .unwrap_or(service.config.default_link_ttl_secs);
    if ttl == 0 || ttl > service.config.max_link_ttl_secs {
        return Err(Error::bad_request(format!(
            "expires_in must be 1..={} seconds",
            service.config.max_link_ttl_secs
        )));
    }
    if new.max_downloads == Some(0) {
        return Err(Error::bad_request("max_downloads must be at least 1"));
    }
    if new
        .client_salt
        .as_ref()
        .is_some_and(|salt| salt.len() > MAX_CLIENT_SALT_LEN)
    {
        return Err(Error::bad_request(
            "client_salt must be base64url of at most 64 bytes",
        ));
    }
    let access = new.access.expose_secret();
    if access.is_empty() || access.len() > password::MAX_LEN {
        return Err(Error::bad_request("access must be 1..=1024 bytes"));
    }
    let access_hash = token_hash(access).to_vec();
    let password_hash = match new.password {
        Some(given) => Some(password::hash(given).await?),
        None => None,
    };
    let now = crate::unix_now();
    let link = Link {
        id: new_id()?,
        file_id: file.id,
        stanza: new.stanza,
        created_at: now,
        expires_at: now.saturating_add(i64::try_from(ttl).unwrap_or(i64::MAX)),
        max_downloads: new.max_downloads,
        downloads: 0,
        password_hash,
        client_salt: new.client_salt,
        failed_attempts: 0,
        access_hash: Some(access_hash),
    };
    service.store.create_link(&link).await?;
    let event = caller
        .event("link_create", &link.id)
        .detail(link.file_id.clone());
    audit::record(service, event).await?;
    Ok(link)
}

/// The links of the caller's file `id`.
pub async fn list(service: &Service, caller: &Caller, id: &str) -> Result<Vec<Link>> {
    let file = owned_file(service, caller, id).await?;
    Ok(service.store.file_links(&file.id).await?)
}

/// Revokes a link and its outstanding tickets (file owner only).
pub async fn remove(service: &Service, caller: &Caller, link_id: &str) -> Result<()> {
    let link = existing(service, link_id).await?;
    owned_file(service, caller, &link.file_id)
        .await
        .map_err(|_| Error::not_found("link"))?;
    service.store.delete_link(&link.id).await?;
    audit::record(service, caller.event("link_delete", &link.id)).await?;
    Ok(())
}

async fn existing(service: &Service, link_id: &str) -> Result<Link> {
    service
        .store
        .link(link_id)
        .await?
        .ok_or_else(|| Error::not_found("link"))
}

/// The link, if `access` proves its holder has the URL; "no such link"
/// otherwise, exactly as for a link that does not exist.
async fn accessible(service: &Service, link_id: &str, access: Option<&str>) -> Result<Link> {
    let link = existing(service, link_id).await?;
    let Some(expected) = &link.access_hash else {
        return Ok(link);
    };
    let given = token_hash(access.unwrap_or_default().trim());
    match aws_lc_rs::constant_time::verify_slices_are_equal(&given, expected) {
        Ok(()) => Ok(link),
        Err(_) => Err(Error::not_found("link")),
    }
}

/// The link's file, while its owner's account is enabled.
async fn file_of(service: &Service, link: &Link) -> Result<FileRecord> {
    let file = service
        .store
        .file(&link.file_id)
        .await?
        .ok_or_else(|| Error::not_found("link"))?;
    let owner = service.store.user(&file.owner).await?;
    if owner.is_none_or(|owner| owner.disabled) {
        return Err(gone("link_revoked", "this link is no longer available"));
    }
    Ok(file)
}

/// What anyone holding the link may learn before opening it (no wrap).
pub async fn info(
    service: &Service,
    link_id: &str,
    access: Option<&str>,
) -> Result<(Link, FileRecord)> {
    let link = accessible(service, link_id, access).await?;
    if let Some(refusal) = closed(service, &link, crate::unix_now()) {
        return Err(refusal);
    }
    let file = file_of(service, &link).await?;
    Ok((link, file))
}

/// An opened link: the wrap, a ticket for the bytes, the file.
pub struct Opened {
    /// The ticket (shown once; only its hash is stored).
    pub ticket: zeroize::Zeroizing<String>,
    /// Seconds the ticket is valid.
    pub expires_in: u64,
    /// The wrap of the file key for the link key.
    pub stanza: Vec<u8>,
    /// The file.
    pub file: FileRecord,
}

/// Opens a link: checks the password, spends one download, returns the
/// wrap and a ticket. Every attempt is audited.
pub async fn open(
    service: &Service,
    link_id: &str,
    access: Option<&str>,
    password: Option<SecretString>,
    ip: Option<std::net::IpAddr>,
) -> Result<Opened> {
    let result = open_link(service, link_id, access, password).await;
    let (outcome, code) = match &result {
        Ok(_) => ("ok", "ok"),
        Err(err) => ("failed", err.code()),
    };
    metrics::counter!("coffer_link_opens_total", "result" => code).increment(1);
    if !matches!(code, "not_found" | "bad_request") {
        let event = audit::Event::new("-", ip, "link_open", link_id)
            .outcome(outcome)
            .detail(code);
        audit::record(service, event).await?;
    }
    result
}

async fn open_link(
    service: &Service,
    link_id: &str,
    access: Option<&str>,
    password: Option<SecretString>,
) -> Result<Opened> {
    let link = accessible(service, link_id, access).await?;
    let now = crate::unix_now();
    if let Some(refusal) = closed(service, &link, now) {
        return Err(refusal);
    }
    let max_failures = service.config.link_max_password_failures;
    if let Some(phc) = &link.password_hash {
        check_password(service, &link, phc, password).await?;
    }
    if !service
        .store
        .spend_link_download(&link.id, now, max_failures)
        .await?
    {
        // Lost a race for the last download, or expired meanwhile.
        return Err(gone("link_exhausted", "link can no longer be opened"));
    }
    let file = file_of(service, &link).await?;
    let ticket = new_token().map_err(Error::internal)?;
    let ttl = service.config.link_ticket_ttl_secs;
    service
        .store
        .put_link_ticket(
            &token_hash(&ticket),
            &link.id,
            now.saturating_add(i64::try_from(ttl).unwrap_or(i64::MAX)),
        )
        .await?;
    Ok(Opened {
        ticket,
        expires_in: ttl,
        stanza: link.stanza,
        file,
    })
}

/// Checks a link password, holding one reserved attempt while Argon2 runs.
async fn check_password(
    service: &Service,
    link: &Link,
    phc: &str,
    given: Option<SecretString>,
) -> Result<()> {
    let max_failures = service.config.link_max_password_failures;
    password::check(
        phc,
        given,
        async {
            Ok(service
                .store
                .reserve_link_attempt(&link.id, max_failures)
                .await?)
        },
        async { Ok(service.store.release_link_attempt(&link.id).await?) },
        gone("link_locked", "link locked after too many wrong passwords"),
    )
    .await
}

/// The file a ticket of link `link_id` may fetch; the download is audited.
pub async fn ticket_file(
    service: &Service,
    link_id: &str,
    ticket: &str,
    ip: Option<std::net::IpAddr>,
) -> Result<FileRecord> {
    let link = service
        .store
        .ticket_link(&token_hash(ticket.trim()), crate::unix_now())
        .await?
        .filter(|link| link.id == link_id)
        .ok_or_else(Error::unauthorized)?;
    let file = file_of(service, &link).await?;
    let event = audit::Event::new("-", ip, "link_download", &link.id).detail(file.id.clone());
    audit::record(service, event).await?;
    Ok(file)
}

/// Removes expired tickets and links.
pub async fn sweep_expired(service: &Service) -> Result<u64> {
    Ok(service.store.sweep_links(crate::unix_now()).await?)
}
