//! Downloads: stream, decrypt, verify, and only then put the file in place.
//!
//! The output is written to a hidden partial file beside its destination
//! (`.coffer-<id>.partial`, mode 0600). The format releases a chunk only
//! after its tag verified, and the last chunk only after the signed trailer
//! did, so the partial file never holds unauthenticated bytes. An
//! interrupted download resumes from the partial file: its whole chunks are
//! re-hashed into the digest the trailer is checked against, and the rest is
//! fetched with a `Range` request. Only when everything verified is the file
//! synced and linked to its final name, which is never overwritten without
//! `force`. A verification failure deletes the partial file: a tampered
//! object leaves nothing behind.

use std::path::{Path, PathBuf};
use std::time::Duration;

use bytes::Bytes;
use coffer_fileio::{Batch, WRITE_BATCH};
use coffer_format::{
    Content, FileKey, Header, Metadata, PublicIdentity, ResumePoint, Sender, Version,
};
use futures_util::TryStreamExt as _;
use http_body_util::BodyExt as _;
use tokio::io::AsyncReadExt as _;

use crate::names::{check_component, create_parents, fallback_name, safe_relative};
use crate::progress::Progress;
use crate::session::{Session, error_of};
use crate::{Error, Result};

/// Largest possible header: fixed part, 64 KiB metadata, tag, MAC, and 256
/// embedded stanzas (server objects have none, but a hostile one might).
const MAX_HEADER: u64 = 96 * 1024;

/// Where a download goes.
#[derive(Clone, Debug)]
pub enum Target {
    /// Exactly this path.
    File(PathBuf),
    /// This directory, under the file's stored name (checked; a hostile
    /// name is replaced by `coffer-<id>`).
    Dir(PathBuf),
    /// This directory, under the stored relative path (`get -r`); a hostile
    /// path is refused.
    Tree(PathBuf),
}

/// What a download does when its final path is taken.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum OnExists {
    /// Fail with [`Error::Exists`]; nothing is replaced.
    #[default]
    Refuse,
    /// Replace the existing file (`--force`).
    Replace,
    /// Keep both: the new file takes the first free name of
    /// `stem.2.ext`, `stem.3.ext`, … (the inbox default, so a file sent
    /// again under the same name never stops a nightly run).
    KeepBoth,
}

/// How to download.
#[derive(Clone, Debug)]
pub struct GetOptions {
    /// When the final path exists.
    pub on_exists: OnExists,
    /// Reconnect-and-resume attempts before giving up.
    pub retries: u32,
}

impl Default for GetOptions {
    fn default() -> Self {
        Self {
            on_exists: OnExists::Refuse,
            retries: 8,
        }
    }
}

/// Keys pinned for other users on first use, as a profile keeps them. A
/// download checks the file's signer against the key pinned for the user
/// the server names as owner.
pub trait Pins {
    /// The key pinned for `user`, if any.
    fn pinned(&self, user: &str) -> Option<PublicIdentity>;
    /// Pins `key` for `user` (first contact).
    fn pin(&mut self, user: &str, key: &PublicIdentity);
}

impl Pins for std::collections::BTreeMap<String, PublicIdentity> {
    fn pinned(&self, user: &str) -> Option<PublicIdentity> {
        self.get(user).cloned()
    }
    fn pin(&mut self, user: &str, key: &PublicIdentity) {
        self.insert(user.to_string(), key.clone());
    }
}

/// Who a file must be signed by.
#[derive(Clone, Debug)]
pub struct ExpectedSender {
    /// The user the server names (owner, or the link's creator).
    pub user: String,
    /// Their pinned key.
    pub key: PublicIdentity,
    /// Whether it was pinned just now, on first contact.
    pub newly_pinned: bool,
}

/// The key `owner`'s files must be signed with: the caller's own, the one
/// pinned, or (first contact) the server's answer, pinned from now on.
pub async fn expected_sender(
    session: &mut Session,
    pins: &mut dyn Pins,
    owner: &str,
) -> Result<ExpectedSender> {
    if owner == session.user()
        && let Some(identity) = session.identity()
    {
        return Ok(ExpectedSender {
            user: owner.to_string(),
            key: identity.public().clone(),
            newly_pinned: false,
        });
    }
    if let Some(key) = pins.pinned(owner) {
        return Ok(ExpectedSender {
            user: owner.to_string(),
            key,
            newly_pinned: false,
        });
    }
    let key = session.user_identity(owner).await?;
    pins.pin(owner, &key);
    Ok(ExpectedSender {
        user: owner.to_string(),
        key,
        newly_pinned: true,
    })
}

/// Who a file must be signed by, as this client can tell.
#[derive(Clone, Debug)]
pub enum Signer {
    /// A user's key (the caller's own, pinned, or pinned now).
    User(Box<ExpectedSender>),
    /// Anyone holding the caller's upload link with this id: the sender's
    /// page signs with a one-time key, so the file proves only that it was
    /// made for that link, not who made it.
    UploadLink(String),
}

impl Signer {
    /// The user the file is from, if a user's key is what signs it.
    pub fn user(&self) -> Option<&str> {
        match self {
            Signer::User(expected) => Some(&expected.user),
            Signer::UploadLink(_) => None,
        }
    }

    /// Whether a user's key was pinned just now (first contact).
    pub fn newly_pinned(&self) -> bool {
        matches!(self, Signer::User(expected) if expected.newly_pinned)
    }

    /// The upload link the file came through, if it did.
    pub fn upload_link(&self) -> Option<&str> {
        match self {
            Signer::UploadLink(request) => Some(request),
            Signer::User(_) => None,
        }
    }
}

/// Checks who may have signed one of the caller's files before a byte of
/// its body is fetched. The server names either an owner, whose pinned key
/// must have signed it, or one of the caller's upload links; the latter
/// only counts when the file's own (encrypted, MAC'd) metadata names the
/// same link, so a server cannot pass off another file, or one of the
/// caller's own, as an anonymous upload, nor an anonymous upload as a
/// user's (that fails the owner's key).
pub(crate) async fn check_signer(
    session: &mut Session,
    pins: &mut dyn Pins,
    own: &OwnFile,
) -> Result<Signer> {
    let id = &own.entry.id;
    let Some(request) = &own.entry.via_request else {
        let expected = expected_sender(session, pins, &own.entry.owner).await?;
        check_sender(id, &own.claimed_sender, &expected)?;
        return Ok(Signer::User(Box::new(expected)));
    };
    let named = own.opened.metadata().request.as_deref();
    if named != Some(request.as_str()) || own.entry.owner != session.user() {
        return Err(Error::WrongUploadLink {
            id: id.clone(),
            claimed: request.clone(),
            named: named.unwrap_or("no upload link").to_string(),
        });
    }
    Ok(Signer::UploadLink(request.clone()))
}

/// Refuses a header whose (claimed, later verified) sender is not
/// `expected`: before a byte of the body is fetched.
pub(crate) fn check_sender(id: &str, claimed: &Sender, expected: &ExpectedSender) -> Result<()> {
    if claimed.is(&expected.key) {
        Ok(())
    } else {
        Err(Error::WrongSender {
            id: id.to_string(),
            owner: expected.user.clone(),
            expected: expected.key.fingerprint(),
            got: claimed.fingerprint(),
        })
    }
}

/// Refuses a version 2 header whose file id is not the one requested: the
/// server answered with another file. (Version 1 headers have no id; their
/// files stay readable, unbound, as they always were.)
pub(crate) fn check_file_id(requested: &str, header: &Header) -> Result<()> {
    let core = header.core();
    if core.version == Version::V2 && core.file_id_hex() != requested {
        return Err(Error::WrongFile {
            requested: requested.to_string(),
            got: core.file_id_hex(),
        });
    }
    Ok(())
}

/// A verified download.
#[derive(Clone, Debug)]
pub struct GetOutcome {
    /// Where the file now is.
    pub path: PathBuf,
    /// Plaintext bytes.
    pub plaintext_len: u64,
    /// The signed content identity.
    pub content: Content,
    /// Who signed the file (verified).
    pub sender: Sender,
    /// The user it is from, when the server named one whose pinned key
    /// signed it (links carry no user).
    pub sender_user: Option<String>,
    /// Whether that user's key was pinned by this download (first contact).
    pub newly_pinned: bool,
    /// The upload link it came through (then `sender_user` is `None` and
    /// the sender is anonymous).
    pub via_request: Option<String>,
    /// The decrypted metadata.
    pub metadata: Metadata,
    /// Set when the stored name was unusable and another was chosen.
    pub renamed_from: Option<String>,
    /// Plaintext bytes kept from an earlier, interrupted attempt.
    pub resumed_at: u64,
}

/// Where the stored bytes come from.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Source<'a> {
    /// A file the user may read: bearer token.
    File(&'a str),
    /// A link, with the ticket from opening it.
    Link { link: &'a str, ticket: &'a str },
}

impl Source<'_> {
    fn key(&self) -> &str {
        match self {
            Source::File(id) => id,
            Source::Link { link, .. } => link,
        }
    }

    async fn get(
        &self,
        session: &mut Session,
        range: &str,
    ) -> Result<hyper::Response<hyper::body::Incoming>> {
        let response = match self {
            Source::File(id) => {
                let path = format!("/v1/files/{id}");
                let headers = [("range", range)];
                session
                    .send_buffered("GET", &path, true, &headers, Bytes::new())
                    .await?
            }
            Source::Link { link, ticket } => {
                let path = format!("/v1/links/{link}/content");
                let headers = [("range", range), ("coffer-link-ticket", *ticket)];
                session
                    .send_buffered("GET", &path, false, &headers, Bytes::new())
                    .await?
            }
        };
        if response.status() != hyper::StatusCode::PARTIAL_CONTENT {
            return Err(error_of(response).await);
        }
        Ok(response)
    }
}

/// The header bytes of a stored file (one ranged request).
pub(crate) async fn fetch_header(
    session: &mut Session,
    source: Source<'_>,
    size: u64,
) -> Result<Vec<u8>> {
    let end = size.min(MAX_HEADER).saturating_sub(1);
    let response = source.get(session, &format!("bytes=0-{end}")).await?;
    let bytes = http_body_util::Limited::new(response.into_body(), MAX_HEADER as usize)
        .collect()
        .await
        .map_err(|e| Error::transport(&*e))?
        .to_bytes();
    let (_, len) = Header::parse(&bytes)?;
    Ok(bytes[..len].to_vec())
}

/// A stored file opened with the caller's own wrap: where `get`, `describe`,
/// sharing and links all start.
pub(crate) struct OwnFile {
    /// The server's entry.
    pub(crate) entry: crate::api::FileEntry,
    /// The header bytes as stored.
    pub(crate) header: Vec<u8>,
    /// The header, opened: metadata and file key.
    pub(crate) opened: coffer_format::OpenedHeader,
    /// The sender the header names (authenticated by a full download).
    pub(crate) claimed_sender: Sender,
}

/// Fetches a file's entry, the caller's wrap and the header, checks that the
/// header is the file asked for, and opens it.
pub(crate) async fn open_own(session: &mut Session, id: &str, what: &str) -> Result<OwnFile> {
    let identity = session.require_identity(what)?;
    let entry = session.file_meta(id).await?;
    let stanza = session.own_wrap(id).await?;
    let header = fetch_header(session, Source::File(id), entry.size).await?;
    open_parts(&identity, entry, &stanza, header)
}

/// Opens a file from its listing entry: with the wrap and header the
/// listing carried (no request), else as [`open_own`] does. The same
/// checks either way: the header must parse, name this file and open with
/// the caller's key.
pub(crate) async fn open_listed(
    session: &mut Session,
    entry: &crate::api::FileEntry,
    what: &str,
) -> Result<OwnFile> {
    let Some(details) = &entry.details else {
        return open_own(session, &entry.id, what).await;
    };
    if details.missing {
        return Err(Error::object_missing());
    }
    let identity = session.require_identity(what)?;
    let stanza = crate::api::stanza_from_b64(details.stanza.as_deref().unwrap_or_default())?;
    let Some(header) = &details.header else {
        return Err(Error::protocol(
            "the listing has no header for this file (not end-to-end encrypted)",
        ));
    };
    let header = crate::session::decode_b64(header)?;
    if header.len() as u64 > MAX_HEADER {
        return Err(Error::protocol("the listing's header is too long"));
    }
    let mut entry = entry.clone();
    entry.details = None;
    open_parts(&identity, entry, &stanza, header)
}

/// Tells `progress` the file's name, from its decrypted metadata.
fn name_progress(progress: &dyn Progress, own: &OwnFile) {
    let metadata = own.opened.metadata();
    if let Some(name) = metadata.path.as_ref().or(metadata.name.as_ref()) {
        progress.named(name);
    }
}

fn open_parts(
    identity: &coffer_format::Identity,
    entry: crate::api::FileEntry,
    stanza: &coffer_format::Stanza,
    header: Vec<u8>,
) -> Result<OwnFile> {
    let (parsed, len) = Header::parse(&header)?;
    // `fetch_header` cuts at the header's end; a listing must send exactly it.
    if len != header.len() {
        return Err(Error::protocol("the header has bytes after it"));
    }
    check_file_id(&entry.id, &parsed)?;
    let claimed_sender = parsed.claimed_sender().clone();
    let opened = parsed.open(identity, std::slice::from_ref(stanza))?;
    Ok(OwnFile {
        entry,
        header,
        opened,
        claimed_sender,
    })
}

/// One of the caller's own files, checked before its key is handed to
/// anyone (a share or a link): the server names the caller as owner, the
/// header is signed by the caller's identity and names the file asked for
/// (so a lying server cannot have the client wrap another file's key).
pub(crate) async fn open_own_for_sharing(
    session: &mut Session,
    id: &str,
    what: &str,
) -> Result<OwnFile> {
    let own = open_own(session, id, what).await?;
    let me = session.require_identity(what)?;
    if own.entry.owner != session.user() || !own.claimed_sender.is(me.public()) {
        return Err(Error::WrongSender {
            id: id.to_string(),
            owner: session.user().to_string(),
            expected: me.public().fingerprint(),
            got: own.claimed_sender.fingerprint(),
        });
    }
    Ok(own)
}

/// Downloads file `id` (owned or shared with the user) to `target`. The
/// file must be signed by the key pinned (or, first contact, now pinned) in
/// `pins` for the user the server names as its owner; otherwise nothing is
/// written.
pub async fn get(
    session: &mut Session,
    id: &str,
    target: &Target,
    options: &GetOptions,
    pins: &mut dyn Pins,
    progress: &dyn Progress,
) -> Result<GetOutcome> {
    let own = open_own(session, id, "decrypt").await?;
    fetch_own(session, own, target, options, pins, progress).await
}

/// [`get`] of a file from its listing entry (`inbox --get-all`): its wrap
/// and header come from the listing, checked the same way.
pub async fn get_listed(
    session: &mut Session,
    entry: &crate::api::FileEntry,
    target: &Target,
    options: &GetOptions,
    pins: &mut dyn Pins,
    progress: &dyn Progress,
) -> Result<GetOutcome> {
    let own = open_listed(session, entry, "decrypt").await?;
    fetch_own(session, own, target, options, pins, progress).await
}

async fn fetch_own(
    session: &mut Session,
    own: OwnFile,
    target: &Target,
    options: &GetOptions,
    pins: &mut dyn Pins,
    progress: &dyn Progress,
) -> Result<GetOutcome> {
    let signer = check_signer(session, pins, &own).await?;
    name_progress(progress, &own);
    let opened = Opened {
        file_key: own.opened.file_key().clone(),
        header: own.header,
    };
    let mut outcome = fetch(
        session,
        Source::File(&own.entry.id),
        &opened,
        own.entry.size,
        target,
        options,
        progress,
    )
    .await?;
    outcome.sender_user = signer.user().map(str::to_string);
    outcome.newly_pinned = signer.newly_pinned();
    outcome.via_request = signer.upload_link().map(str::to_string);
    Ok(outcome)
}

/// What [`stream`] delivered.
#[derive(Debug)]
pub struct Streamed {
    /// Plaintext bytes written.
    pub plaintext_len: u64,
    /// Who signed the file (verified).
    pub sender: Sender,
    /// Who may have signed it: a user's pinned key, or anyone holding one
    /// of the caller's upload links.
    pub signer: Signer,
    /// The decrypted metadata.
    pub metadata: Metadata,
}

/// The path named in an [`Error::Io`] about writing the stream's output.
pub const STANDARD_OUTPUT: &str = "standard output";

/// Streams file `id`, decrypted, to `out` (standard output, a pipe) as it
/// arrives. Every byte written comes from a chunk checked against the
/// signed root, and the final chunk is held back until the signature
/// checks, so a failure (an error here, a non-zero exit) means: discard
/// what came. A lost connection is retried from the start of the file, the
/// bytes already written verified again and skipped, never written twice.
pub async fn stream(
    session: &mut Session,
    id: &str,
    out: &mut (dyn std::io::Write + Send),
    options: &GetOptions,
    pins: &mut dyn Pins,
    progress: &dyn Progress,
) -> Result<Streamed> {
    let own = open_own(session, id, "decrypt").await?;
    let signer = check_signer(session, pins, &own).await?;
    name_progress(progress, &own);
    let opened = Opened {
        file_key: own.opened.file_key().clone(),
        header: own.header,
    };
    progress.phase(crate::progress::Phase::Receiving);
    progress.set_total(own.entry.size);
    let mut written = 0u64;
    let mut failures = 0u32;
    loop {
        match stream_attempt(
            session,
            Source::File(id),
            &opened,
            out,
            &mut written,
            progress,
        )
        .await
        {
            Ok(verified) => {
                return Ok(Streamed {
                    plaintext_len: verified.plaintext_len,
                    sender: verified.sender,
                    signer,
                    metadata: verified.metadata,
                });
            }
            Err(Failure::Retry(err)) if failures < options.retries => {
                failures += 1;
                session.disconnect();
                progress.retrying(&err.to_string(), retry_delay(failures));
                tokio::time::sleep(retry_delay(failures)).await;
            }
            Err(Failure::Retry(err) | Failure::NotOurs(err) | Failure::Final(err)) => {
                return Err(err);
            }
        }
    }
}

/// One pass of [`stream`]: writes only what lies past `written`.
async fn stream_attempt(
    session: &mut Session,
    source: Source<'_>,
    opened: &Opened,
    out: &mut (dyn std::io::Write + Send),
    written: &mut u64,
    progress: &dyn Progress,
) -> Result<coffer_format::Verified, Failure> {
    let header = opened.open()?;
    let point = header
        .resume_point(&mut std::io::empty(), 0)
        .map_err(Error::from)?;
    let start = point.ciphertext_offset();
    let response = source.get(session, &format!("bytes={start}-")).await?;
    check_content_range(&response, start)?;
    let mut done = start;
    let body = response
        .into_body()
        .into_data_stream()
        .inspect_ok(|bytes| {
            done += bytes.len() as u64;
            progress.set_position(done);
        })
        .map_err(std::io::Error::other);
    let mut decryptor =
        coffer_format::async_io::AsyncDecryptor::resumed(header, tokio_util_reader(body), point)
            .map_err(Error::from)?;
    let mut buf = vec![0u8; WRITE_BATCH];
    let mut position = 0u64;
    loop {
        let n = decryptor.read(&mut buf).await.map_err(read_failure)?;
        if n == 0 {
            break;
        }
        let end = position + n as u64;
        if end > *written {
            let skip = usize::try_from(written.saturating_sub(position)).unwrap_or(n);
            out.write_all(&buf[skip..n])
                .map_err(|e| Failure::Final(Error::io(STANDARD_OUTPUT)(e)))?;
            *written = end;
        }
        position = end;
    }
    out.flush()
        .map_err(|e| Failure::Final(Error::io(STANDARD_OUTPUT)(e)))?;
    decryptor
        .verified()
        .cloned()
        .ok_or_else(|| Failure::Final(Error::protocol("the download ended unverified")))
}

/// A failed read of a download: the connection (worth a retry) or the
/// format's verdict (final).
fn read_failure(io: std::io::Error) -> Failure {
    match coffer_format::Error::from_io(io) {
        coffer_format::Error::Io(io) => Failure::Retry(Error::transport(&io)),
        format => Failure::Final(Error::Format(format)),
    }
}

/// The wait before retry number `failures`.
fn retry_delay(failures: u32) -> Duration {
    Duration::from_millis((250u64 << failures.min(5)).min(5_000))
}

/// A header and the key that opens it (re-opened for every attempt, since
/// a decryptor consumes its opened header).
pub(crate) struct Opened {
    pub(crate) header: Vec<u8>,
    pub(crate) file_key: FileKey,
}

impl Opened {
    fn open(&self) -> Result<coffer_format::OpenedHeader> {
        let (parsed, _) = Header::parse(&self.header)?;
        Ok(parsed.open_with_file_key(self.file_key.clone())?)
    }
}

/// Streams, decrypts and verifies into `target`, resuming after transient
/// failures from the verified part already written.
pub(crate) async fn fetch(
    session: &mut Session,
    source: Source<'_>,
    opened: &Opened,
    size: u64,
    target: &Target,
    options: &GetOptions,
    progress: &dyn Progress,
) -> Result<GetOutcome> {
    let metadata = opened.open()?.metadata().clone();
    let (path, renamed_from) = destination(target, &metadata, source.key())?;
    if options.on_exists == OnExists::Refuse && std::fs::symlink_metadata(&path).is_ok() {
        return Err(Error::Exists(path));
    }
    let dir = path
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("."));
    let partial = dir.join(format!(".coffer-{}.partial", source.key()));
    progress.phase(crate::progress::Phase::Receiving);
    progress.set_total(size);
    let mut failures = 0u32;
    let mut resumed_at = None;
    loop {
        match attempt(session, source, opened, size, &partial, progress).await {
            Ok((verified, kept, out)) => {
                resumed_at.get_or_insert(kept);
                let path = place(&partial, &out, &path, options.on_exists)?;
                return Ok(GetOutcome {
                    path,
                    plaintext_len: verified.plaintext_len,
                    content: verified.content,
                    sender: verified.sender,
                    sender_user: None,
                    newly_pinned: false,
                    via_request: None,
                    metadata: verified.metadata,
                    renamed_from,
                    resumed_at: resumed_at.unwrap_or(0),
                });
            }
            Err(Failure::Retry(err)) if failures < options.retries => {
                failures += 1;
                session.disconnect();
                progress.retrying(&err.to_string(), retry_delay(failures));
                tokio::time::sleep(retry_delay(failures)).await;
            }
            Err(Failure::Retry(err) | Failure::NotOurs(err)) => return Err(err),
            Err(Failure::Final(err)) => {
                let _ = std::fs::remove_file(&partial);
                return Err(err);
            }
        }
    }
}

/// How an attempt failed: worth retrying (transport), for good (the bytes
/// do not verify; the partial output is deleted), or because the partial
/// file is not one this user made (left alone: it is not ours to delete).
enum Failure {
    Retry(Error),
    Final(Error),
    NotOurs(Error),
}

impl From<Error> for Failure {
    fn from(err: Error) -> Self {
        if err.is_transient() {
            Failure::Retry(err)
        } else {
            Failure::Final(err)
        }
    }
}

/// One pass of a download of an object of `object_size` bytes into
/// `partial`, resuming from what it already holds.
async fn attempt(
    session: &mut Session,
    source: Source<'_>,
    opened: &Opened,
    object_size: u64,
    partial: &Path,
    progress: &dyn Progress,
) -> Result<(coffer_format::Verified, u64, std::fs::File), Failure> {
    let header = opened.open()?;
    // Re-hashing a large partial file is blocking work: off the runtime.
    let path = partial.to_path_buf();
    let (header, out, point) = tokio::task::spawn_blocking(move || {
        open_partial(&path, &header, object_size).map(|(out, point)| (header, out, point))
    })
    .await
    .map_err(|e| Failure::Final(Error::Usage(e.to_string())))??;
    let kept = point.plaintext_len();
    progress.set_position(point.ciphertext_offset());
    let response = source
        .get(session, &format!("bytes={}-", point.ciphertext_offset()))
        .await?;
    check_content_range(&response, point.ciphertext_offset())?;
    let mut done = point.ciphertext_offset();
    let body = response
        .into_body()
        .into_data_stream()
        .inspect_ok(|bytes| {
            done += bytes.len() as u64;
            progress.set_position(done);
        })
        .map_err(std::io::Error::other);
    let reader = tokio_util_reader(body);
    let mut decryptor = coffer_format::async_io::AsyncDecryptor::resumed(header, reader, point)
        .map_err(Error::from)?;
    let out = copy_out(&mut decryptor, out)
        .await
        .map_err(|err| match err {
            Copy::Write(io) => Failure::Final(Error::io(partial)(io)),
            Copy::Lost => Failure::Final(Error::Usage("the writing thread stopped".into())),
            Copy::Read(io) => read_failure(io),
        })?;
    let verified = decryptor
        .verified()
        .cloned()
        .ok_or_else(|| Failure::Final(Error::protocol("the download ended unverified")))?;
    out.sync_all()
        .map_err(|e| Failure::Final(Error::io(partial)(e)))?;
    Ok((verified, kept, out))
}

/// Which side of a copy failed.
enum Copy {
    Read(std::io::Error),
    Write(std::io::Error),
    /// The writer thread died (it cannot panic short of a bug).
    Lost,
}

/// Batches queued for the writer thread.
const WRITE_DEPTH: usize = 4;

/// Moves verified plaintext to the output on a thread of its own, which
/// writes it from the file's current position in large writes that bypass
/// the page cache where the file system allows it (`coffer_fileio`: the
/// kernel's page-cache copy was half the time of a download on some
/// machines), so receiving and decrypting go on meanwhile. Writes through
/// tokio's file type would instead cost a thread hand-off per small write.
/// Returns the file once every byte read was written and its data synced
/// (or the write failed), so the partial file is settled before anyone
/// resumes from it.
async fn copy_out(
    decryptor: &mut (impl tokio::io::AsyncRead + Unpin),
    mut out: std::fs::File,
) -> Result<std::fs::File, Copy> {
    // The decryptor writes straight into the writer's aligned batches,
    // which go to the disk as they are (no copy into a batch of its own);
    // batches come back for reuse and are never zeroed again.
    let (to_writer, mut inbox) = tokio::sync::mpsc::channel::<Batch>(WRITE_DEPTH);
    let (give_back, spare) = std::sync::mpsc::channel::<Batch>();
    let at = std::io::Seek::stream_position(&mut out).map_err(Copy::Write)?;
    let mut direct = coffer_fileio::DirectWriter::new(out, at).map_err(Copy::Write)?;
    let writer = std::thread::spawn(move || {
        let mut pushed = Ok(());
        while let Some(batch) = inbox.blocking_recv() {
            match direct.push_batch(batch) {
                Ok(empty) => {
                    let _ = give_back.send(empty);
                }
                Err(err) => {
                    pushed = Err(err);
                    break;
                }
            }
        }
        drop(inbox);
        let finished = direct.finish();
        pushed.and(finished.map(|(out, _)| out))
    });
    let read = async {
        loop {
            let mut batch = spare.try_recv().unwrap_or_default();
            // Whole batches, so that each goes to the disk as it is.
            let mut filled = 0;
            while filled < WRITE_BATCH {
                let n = decryptor
                    .read(&mut batch.room()[filled..])
                    .await
                    .map_err(Copy::Read)?;
                if n == 0 {
                    break;
                }
                filled += n;
            }
            if filled == 0 {
                return Ok(());
            }
            batch.set_filled(filled);
            if to_writer.send(batch).await.is_err() {
                // The writer stopped on an error; it reports it below.
                return Ok(());
            }
        }
    };
    let read_result = read.await;
    drop(to_writer);
    let written = tokio::task::spawn_blocking(move || writer.join())
        .await
        .map_err(|_| Copy::Lost)?
        .map_err(|_| Copy::Lost)?;
    read_result?;
    written.map_err(Copy::Write)
}

/// Opens the partial output and finds where to resume. A new one is
/// created exclusively (`O_EXCL`, 0600, no symlink followed); one that
/// exists is resumed only if, checked on the open descriptor, it is a
/// regular file owned by this user, private (no group or other bits) and
/// has no other names: a file someone else planted in a shared download
/// directory is refused, never written through.
fn open_partial(
    partial: &Path,
    header: &coffer_format::OpenedHeader,
    object_size: u64,
) -> Result<(std::fs::File, ResumePoint), Failure> {
    let io = |e| Failure::Final(Error::io(partial)(e));
    let mut file = match create_exclusive(partial) {
        Ok(file) => file,
        Err(err) if err.kind() == std::io::ErrorKind::AlreadyExists => {
            let file =
                open_existing(partial).map_err(|e| Failure::NotOurs(Error::io(partial)(e)))?;
            check_ours(partial, &file)?;
            file
        }
        Err(err) => return Err(io(err)),
    };
    let len = file.metadata().map_err(io)?.len();
    let point = header
        .resume_point(&mut std::io::BufReader::new(&mut file), len)
        .map_err(|e| Failure::Final(e.into()))?;
    file.set_len(point.plaintext_len()).map_err(io)?;
    // A disk that cannot hold the rest fails now, not once it is full.
    let rest = room_to_reserve(header.metadata().size, object_size, point.plaintext_len());
    coffer_fileio::reserve(&file, point.plaintext_len(), rest).map_err(io)?;
    std::io::Seek::seek(&mut file, std::io::SeekFrom::Start(point.plaintext_len())).map_err(io)?;
    Ok((file, point))
}

/// Bytes to reserve after `written` for a file whose sender declared
/// `declared` bytes, in an object of `object_size` bytes. The declared size
/// is the sender's word (a different signed length fails the file at its
/// end), and a hostile sender, say through an upload link, could declare
/// petabytes: a reservation that then fails would count as a local disk
/// error, which stops a whole `inbox --get-all` run, every night. The
/// plaintext is never longer than its object, whose length the server
/// measured, so that bounds it.
fn room_to_reserve(declared: Option<u64>, object_size: u64, written: u64) -> u64 {
    declared
        .unwrap_or(0)
        .min(object_size)
        .saturating_sub(written)
}

fn private_options() -> std::fs::OpenOptions {
    let mut options = std::fs::OpenOptions::new();
    options.read(true).write(true);
    #[cfg(unix)]
    {
        // A symlink planted at the partial file's name is refused, not followed.
        std::os::unix::fs::OpenOptionsExt::custom_flags(&mut options, libc::O_NOFOLLOW);
        std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    }
    options
}

fn create_exclusive(partial: &Path) -> std::io::Result<std::fs::File> {
    private_options().create_new(true).open(partial)
}

fn open_existing(partial: &Path) -> std::io::Result<std::fs::File> {
    private_options().open(partial)
}

/// The ownership check of [`open_partial`], on the descriptor.
fn check_ours(partial: &Path, file: &std::fs::File) -> Result<(), Failure> {
    let meta = file
        .metadata()
        .map_err(|e| Failure::NotOurs(Error::io(partial)(e)))?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::MetadataExt;
        let why = if !meta.is_file() {
            Some("not a regular file")
        } else if meta.uid() != rustix::process::geteuid().as_raw() {
            Some("owned by another user")
        } else if meta.mode() & 0o077 != 0 {
            Some("readable or writable by others")
        } else if meta.nlink() != 1 {
            Some("it has other names (hard links)")
        } else {
            None
        };
        if let Some(why) = why {
            return Err(Failure::NotOurs(Error::Usage(format!(
                "refusing the partial download {}: {why}; it was not made by this download, remove it",
                partial.display()
            ))));
        }
    }
    #[cfg(not(unix))]
    let _ = meta;
    Ok(())
}

/// Whether `path` names the very file open as `file` (same device and inode).
fn names_file(path: &Path, file: &std::fs::File) -> bool {
    #[cfg(unix)]
    {
        use std::os::unix::fs::MetadataExt;
        match (std::fs::symlink_metadata(path), file.metadata()) {
            (Ok(a), Ok(b)) => a.dev() == b.dev() && a.ino() == b.ino(),
            _ => false,
        }
    }
    #[cfg(not(unix))]
    {
        let _ = (path, file);
        true
    }
}

fn check_content_range(
    response: &hyper::Response<hyper::body::Incoming>,
    start: u64,
) -> Result<()> {
    let ok = response
        .headers()
        .get("content-range")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("bytes "))
        .and_then(|v| v.split('-').next())
        .and_then(|v| v.parse::<u64>().ok())
        == Some(start);
    if ok {
        Ok(())
    } else {
        Err(Error::protocol("the server answered another range"))
    }
}

fn tokio_util_reader(
    stream: impl futures_util::Stream<Item = std::io::Result<bytes::Bytes>> + Unpin,
) -> impl tokio::io::AsyncRead + Unpin {
    tokio_util::io::StreamReader::new(stream)
}

/// The final path for a download and, if the stored name was replaced,
/// the stored name.
fn destination(
    target: &Target,
    metadata: &Metadata,
    key: &str,
) -> Result<(PathBuf, Option<String>)> {
    match target {
        Target::File(path) => Ok((path.clone(), None)),
        Target::Dir(dir) => match metadata.name.as_deref() {
            Some(name) if check_component(name).is_ok() => Ok((dir.join(name), None)),
            stored => Ok((
                dir.join(fallback_name(key)),
                Some(stored.unwrap_or("").to_string()),
            )),
        },
        Target::Tree(dir) => {
            let stored = metadata
                .path
                .as_deref()
                .or(metadata.name.as_deref())
                .ok_or_else(|| Error::HostileName {
                    name: String::new(),
                    why: "no stored name",
                })?;
            let relative = safe_relative(stored)?;
            Ok((create_parents(dir, &relative)?, None))
        }
    }
}

/// Gives the verified partial file its final name and returns it: with
/// [`OnExists::Replace`] by rename, otherwise by hard link, which fails
/// rather than replace an existing file (no window between a check and the
/// rename); [`OnExists::KeepBoth`] then tries the next free name. The name
/// is placed from the path, so it is checked to name the verified
/// descriptor's inode before, and the result after: a partial file swapped
/// in between is detected and the new name taken back.
fn place(
    partial: &Path,
    verified: &std::fs::File,
    path: &Path,
    on_exists: OnExists,
) -> Result<PathBuf> {
    let swapped = || {
        Error::Usage(format!(
            "{} was replaced while the download was being verified; refusing it",
            partial.display()
        ))
    };
    if !names_file(partial, verified) {
        return Err(swapped());
    }
    let path = match on_exists {
        OnExists::Replace => {
            std::fs::rename(partial, path).map_err(Error::io(path))?;
            path.to_path_buf()
        }
        OnExists::Refuse => link_new(partial, path)?,
        OnExists::KeepBoth => keep_both(partial, path)?,
    };
    if !names_file(&path, verified) {
        let _ = std::fs::remove_file(&path);
        return Err(swapped());
    }
    if let Some(dir) = path.parent()
        && let Ok(handle) = std::fs::File::open(if dir.as_os_str().is_empty() {
            Path::new(".")
        } else {
            dir
        })
    {
        let _ = handle.sync_all();
    }
    Ok(path)
}

/// Moves `partial` to `path` only if nothing is there.
fn link_new(partial: &Path, path: &Path) -> Result<PathBuf> {
    match std::fs::hard_link(partial, path) {
        Ok(()) => std::fs::remove_file(partial).map_err(Error::io(partial))?,
        Err(err) if err.kind() == std::io::ErrorKind::AlreadyExists => {
            return Err(Error::Exists(path.to_path_buf()));
        }
        // File systems without hard links: check, then rename.
        Err(_) if std::fs::symlink_metadata(path).is_err() => {
            std::fs::rename(partial, path).map_err(Error::io(path))?;
        }
        Err(_) => return Err(Error::Exists(path.to_path_buf())),
    }
    Ok(path.to_path_buf())
}

/// Moves `partial` to `path`, or to the first free `stem.N.ext` (N from 2)
/// when it is taken.
fn keep_both(partial: &Path, path: &Path) -> Result<PathBuf> {
    const MAX_VERSIONS: u32 = 100_000;
    for n in 1..=MAX_VERSIONS {
        let candidate = if n == 1 {
            path.to_path_buf()
        } else {
            numbered(path, n)
        };
        match link_new(partial, &candidate) {
            Err(Error::Exists(_)) => continue,
            other => return other,
        }
    }
    Err(Error::Exists(path.to_path_buf()))
}

/// `dir/stem.N.ext` (or `dir/name.N` without an extension; a leading dot
/// is part of the stem).
fn numbered(path: &Path, n: u32) -> PathBuf {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let split = name.rfind('.').filter(|&i| i > 0);
    let numbered = match split {
        Some(i) => format!("{}.{n}{}", &name[..i], &name[i..]),
        None => format!("{name}.{n}"),
    };
    path.with_file_name(numbered)
}

/// Decrypts a stored file's metadata (name, path, size, mtime) with the
/// caller's wrap, fetching only the header; also returns the claimed
/// sender (authenticated only by a full download's trailer signature).
///
/// The header's sender must be the key pinned for the owner the server
/// names (pinning it on first contact), or this is [`Error::WrongSender`].
/// That catches a server that lists its own file under someone's name; the
/// signature itself is only checked by a download, which reads every byte.
pub async fn describe(
    session: &mut Session,
    entry: &crate::api::FileEntry,
    pins: &mut dyn Pins,
) -> Result<(Metadata, Sender)> {
    let own = open_listed(session, entry, "decrypt").await?;
    check_signer(session, pins, &own).await?;
    Ok((own.opened.metadata().clone(), own.claimed_sender))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A declared size past the object (a hostile sender's petabytes)
    /// reserves no more than the object could hold; what was written
    /// already is not reserved again; no declared size reserves nothing.
    #[test]
    fn the_reservation_is_bounded_by_the_object() {
        let object = 10 << 20;
        assert_eq!(room_to_reserve(Some(8 << 20), object, 0), 8 << 20);
        assert_eq!(room_to_reserve(Some(8 << 20), object, 3 << 20), 5 << 20);
        assert_eq!(room_to_reserve(Some(1 << 50), object, 0), object);
        assert_eq!(room_to_reserve(Some(u64::MAX), object, object + 1), 0);
        assert_eq!(room_to_reserve(None, object, 0), 0);
    }

    #[test]
    fn numbered_names_keep_the_extension() {
        let n = |p: &str| numbered(Path::new(p), 2).display().to_string();
        assert_eq!(n("in/nightly.csv"), "in/nightly.2.csv");
        assert_eq!(n("in/archive.tar.gz"), "in/archive.tar.2.gz");
        assert_eq!(n("in/README"), "in/README.2");
        assert_eq!(n("in/.profile"), "in/.profile.2");
    }

    #[test]
    fn keeping_both_never_replaces_and_takes_the_next_free_name() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("nightly.csv");
        std::fs::write(&target, b"night 1").unwrap();
        std::fs::write(dir.path().join("nightly.2.csv"), b"night 2").unwrap();
        let partial = dir.path().join(".partial");
        std::fs::write(&partial, b"night 3").unwrap();
        let placed = keep_both(&partial, &target).unwrap();
        assert_eq!(placed, dir.path().join("nightly.3.csv"));
        assert_eq!(std::fs::read(&placed).unwrap(), b"night 3");
        assert_eq!(std::fs::read(&target).unwrap(), b"night 1");
        assert!(!partial.exists());
        // Refusing leaves the partial file and the existing one alone.
        std::fs::write(&partial, b"night 4").unwrap();
        assert!(matches!(link_new(&partial, &target), Err(Error::Exists(_))));
        assert_eq!(std::fs::read(&target).unwrap(), b"night 1");
        assert!(partial.exists());
    }
}
