//! Upload links (file requests): a user hands out a URL through which anyone
//! may send them files, end-to-end encrypted to their key in the sender's
//! browser (`coffer_proto::request` has the URL and its derivations).
//!
//! The server never holds a key for these files: the page encrypts to the
//! owner's public key, which it checks against the pin in the URL fragment,
//! and signs with a one-time key of its own. What the server enforces is
//! who may upload and how much: the access proof from the URL (checked in
//! constant time against its stored SHA-256; without it the answer is "no
//! such link"), the link's expiry, its number of files, its largest file,
//! the owner's quota and open-upload limit, and (in the HTTP layer) a
//! per-address budget of uploads begun. The files are the owner's, marked
//! as come through the link, listed in their inbox, and audited.
//!
//! An upload that began before the link expired may finish afterwards (it
//! has its own expiry, `upload_ttl_secs`); no new one begins. The link's
//! row is kept that much longer than its expiry for that reason, so that
//! the page can still say "expired" and a resumed upload still finds it.

use secrecy::{ExposeSecret as _, SecretString};

use super::session::token_hash;
use super::{Caller, Error, Kind, Result, Service, audit, new_id, password};
use crate::store::{Request, User};

/// What the owner asks for.
pub struct NewRequest {
    /// Lifetime in seconds (default and maximum from the configuration).
    pub expires_in: Option<u64>,
    /// How many uploads may begin through it.
    pub max_files: Option<u64>,
    /// Largest upload, in stored (encrypted) bytes.
    pub max_file_bytes: Option<u64>,
    /// Whether the page asks senders for their name.
    pub ask_name: bool,
    /// The access proof (`coffer_proto::request::access_proof`), of which
    /// only the SHA-256 is kept.
    pub access: SecretString,
    /// A password senders must give, of which only an Argon2id verifier
    /// is kept.
    pub password: Option<SecretString>,
}

fn gone(code: &'static str, message: &str) -> Error {
    Error::new(Kind::Gone, code, message)
}

/// Creates an upload link for the caller.
pub async fn create(service: &Service, caller: &Caller, new: NewRequest) -> Result<Request> {
    let ttl = new
        .expires_in
        .unwrap_or(service.config.default_request_ttl_secs);
    if ttl == 0 || ttl > service.config.max_request_ttl_secs {
        return Err(Error::bad_request(format!(
            "expires_in must be 1..={} seconds",
            service.config.max_request_ttl_secs
        )));
    }
    if new.max_files == Some(0) || new.max_file_bytes == Some(0) {
        return Err(Error::bad_request(
            "max_files and max_file_bytes must be at least 1",
        ));
    }
    let access = new.access.expose_secret();
    if access.is_empty() || access.len() > password::MAX_LEN {
        return Err(Error::bad_request("access must be 1..=1024 bytes"));
    }
    let password_hash = match new.password {
        Some(given) => Some(password::hash(given).await?),
        None => None,
    };
    let now = crate::unix_now();
    let request = Request {
        id: new_id()?,
        owner: caller.user.name.clone(),
        created_at: now,
        expires_at: now.saturating_add(i64::try_from(ttl).unwrap_or(i64::MAX)),
        max_files: new.max_files,
        max_file_bytes: new.max_file_bytes,
        files_started: 0,
        ask_name: new.ask_name,
        access_hash: token_hash(access).to_vec(),
        password_hash,
        failed_attempts: 0,
    };
    service.store.create_request(&request).await?;
    audit::record(service, caller.event("request_create", &request.id)).await?;
    Ok(request)
}

/// The caller's upload links.
pub async fn list(service: &Service, caller: &Caller) -> Result<Vec<Request>> {
    Ok(service.store.owner_requests(&caller.user.name).await?)
}

/// Revokes one of the caller's upload links: no upload can begin or go on
/// through it; files already received stay.
pub async fn remove(service: &Service, caller: &Caller, id: &str) -> Result<()> {
    match service.store.request(id).await? {
        Some(request) if request.owner == caller.user.name => {
            service.store.delete_request(&request.id).await?;
            audit::record(service, caller.event("request_delete", &request.id)).await?;
            Ok(())
        }
        _ => Err(Error::not_found("upload link")),
    }
}

/// The link, if `access` proves its holder has the URL, and its owner
/// while their account is enabled; "no such link" otherwise, exactly as
/// for a link that does not exist.
async fn accessible(service: &Service, id: &str, access: Option<&str>) -> Result<(Request, User)> {
    let not_found = || Error::not_found("upload link");
    let request = service.store.request(id).await?.ok_or_else(not_found)?;
    let given = token_hash(access.unwrap_or_default().trim());
    aws_lc_rs::constant_time::verify_slices_are_equal(&given, &request.access_hash)
        .map_err(|_| not_found())?;
    let owner = service.store.user(&request.owner).await?;
    match owner {
        Some(owner) if !owner.disabled => Ok((request, owner)),
        _ => Err(gone(
            "request_revoked",
            "this upload link is no longer available",
        )),
    }
}

/// Why no new upload can begin through `request` at `now`, if none can.
fn closed(service: &Service, request: &Request, now: i64) -> Option<Error> {
    if request.failed_attempts >= service.config.link_max_password_failures
        && request.password_hash.is_some()
    {
        Some(locked())
    } else if request.expires_at <= now {
        Some(gone("request_expired", "this upload link has expired"))
    } else if request
        .max_files
        .is_some_and(|max| request.files_started >= max)
    {
        Some(gone(
            "request_exhausted",
            "this upload link has taken all the files it allows",
        ))
    } else {
        None
    }
}

/// What a sender's page needs: the limits, and the owner's name and public
/// identity (which the page checks against the URL's pin). A link with a
/// password answers only with the right one.
pub async fn info(
    service: &Service,
    id: &str,
    access: Option<&str>,
    given: Option<SecretString>,
) -> Result<(Request, User)> {
    let (request, owner) = accessible(service, id, access).await?;
    if let Some(refusal) = closed(service, &request, crate::unix_now()) {
        return Err(refusal);
    }
    check_password(service, &request, given).await?;
    Ok((request, owner))
}

/// Checks the link's password, if it has one, holding one reserved attempt
/// while Argon2 runs; wrong and missing ones are audited.
async fn check_password(
    service: &Service,
    request: &Request,
    given: Option<SecretString>,
) -> Result<()> {
    let Some(phc) = &request.password_hash else {
        return Ok(());
    };
    let max_failures = service.config.link_max_password_failures;
    let result = password::check(
        phc,
        given,
        async {
            Ok(service
                .store
                .reserve_request_attempt(&request.id, max_failures)
                .await?)
        },
        async { Ok(service.store.release_request_attempt(&request.id).await?) },
        locked(),
    )
    .await;
    if let Err(err) = &result
        && err.code() != "password_required"
    {
        let event = audit::Event::new("-", None, "request_password", &request.id)
            .outcome("refused")
            .detail(err.code());
        audit::record(service, event).await?;
    }
    result
}

fn locked() -> Error {
    gone(
        "request_locked",
        "this upload link is locked after too many wrong passwords",
    )
}

/// The caller an anonymous sender's upload requests act as: the link's
/// owner (quota, open uploads), marked as coming through the link, so they
/// reach only uploads begun through it.
/// Where a sender's request is in an upload.
pub enum UploadStep {
    /// Creating one: with the password given, if any.
    Begin(Option<SecretString>),
    /// Carrying one on (or asking about it).
    Continue,
}

/// An upload begins only with the link's password, when it has one; the
/// requests that carry on an upload already begun need none (its id is
/// known only to the page that began it).
pub async fn sender(
    service: &Service,
    id: &str,
    access: Option<&str>,
    step: UploadStep,
    ip: Option<std::net::IpAddr>,
) -> Result<Caller> {
    let (request, owner) = accessible(service, id, access).await?;
    if let UploadStep::Begin(given) = step {
        check_password(service, &request, given).await?;
    }
    Ok(Caller {
        user: owner,
        ip,
        via_request: Some(request.id),
    })
}

/// Checks a new upload through link `id` (its size, that it is wrapped to
/// the owner only, no retention wishes) and counts it against the link's
/// files; audited when refused.
pub async fn begin_upload(
    service: &Service,
    caller: &Caller,
    id: &str,
    length: u64,
    wrap_users: &[&str],
    delete_when_received: bool,
) -> Result<()> {
    let result = check_upload(
        service,
        caller,
        id,
        length,
        wrap_users,
        delete_when_received,
    )
    .await;
    if let Err(err) = &result {
        let event = audit::Event::new("-", caller.ip, "request_upload", id)
            .outcome("refused")
            .detail(err.code());
        audit::record(service, event).await?;
    }
    result
}

async fn check_upload(
    service: &Service,
    caller: &Caller,
    id: &str,
    length: u64,
    wrap_users: &[&str],
    delete_when_received: bool,
) -> Result<()> {
    let request = service
        .store
        .request(id)
        .await?
        .ok_or_else(|| Error::not_found("upload link"))?;
    let now = crate::unix_now();
    if let Some(refusal) = closed(service, &request, now) {
        return Err(refusal);
    }
    if let Some(max) = request.max_file_bytes
        && length > max
    {
        return Err(Error::new(
            Kind::TooLarge,
            "too_large",
            format!("this upload link takes files of at most {max} bytes (encrypted)"),
        ));
    }
    if wrap_users != [caller.user.name.as_str()] {
        return Err(Error::bad_request(
            "an upload through an upload link carries exactly one key wrap, for the link's owner",
        ));
    }
    if delete_when_received {
        return Err(Error::bad_request(
            "an upload through an upload link cannot ask to be deleted once received",
        ));
    }
    if !service.store.spend_request_file(&request.id, now).await? {
        // Lost a race for the last file, or expired meanwhile.
        return Err(gone(
            "request_exhausted",
            "this upload link takes no more files",
        ));
    }
    Ok(())
}

/// Removes upload links expired for longer than an upload may run.
pub async fn sweep_expired(service: &Service) -> Result<u64> {
    let grace = i64::try_from(service.config.upload_ttl_secs).unwrap_or(i64::MAX);
    Ok(service
        .store
        .sweep_requests(crate::unix_now().saturating_sub(grace))
        .await?)
}
