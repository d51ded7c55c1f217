//! Committed files: who may see one, listings in pages, deletion.

use super::{Caller, Error, Result, Service, audit};
use crate::store::{DigestAlg, FileRecord, Page};

/// Entries per listing page, at most and by default.
pub const MAX_PAGE: u32 = 1000;

/// Entries per page of a listing with details, at most and by default:
/// each entry carries a header (a few KiB, at most about 64 KiB), so a
/// page stays quick to read from the object store and to send.
pub const MAX_DETAILED_PAGE: u32 = 200;

/// A file the caller owns, or 404 (another user's file is not revealed).
pub async fn owned_file(service: &Service, caller: &Caller, id: &str) -> Result<FileRecord> {
    match service.store.file(id).await? {
        Some(file) if file.owner == caller.user.name => Ok(file),
        _ => Err(Error::not_found("file")),
    }
}

/// A file the caller owns or that was shared with them (holds a wrap).
pub async fn readable_file(service: &Service, caller: &Caller, id: &str) -> Result<FileRecord> {
    let Some(file) = service.store.file(id).await? else {
        return Err(Error::not_found("file"));
    };
    if file.owner == caller.user.name || service.store.wrap(id, &caller.user.name).await?.is_some()
    {
        Ok(file)
    } else {
        Err(Error::not_found("file"))
    }
}

/// Parses a page cursor: `<created_at>.<id>`.
pub fn parse_cursor(cursor: &str) -> Result<(i64, String)> {
    let bad = || Error::bad_request("invalid page cursor");
    let (time, id) = cursor.split_once('.').ok_or_else(bad)?;
    crate::objects::checked(id).map_err(|_| bad())?;
    Ok((time.parse().map_err(|_| bad())?, id.to_string()))
}

/// The cursor that continues after `file`.
pub fn cursor_after(file: &FileRecord) -> String {
    format!("{}.{}", file.created_at, file.id)
}

/// Which files a listing shows.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Listing {
    /// The caller's own.
    Owned,
    /// Those others shared with the caller.
    SharedWithMe,
    /// Of those, the ones the caller has not acknowledged (the inbox).
    Unreceived,
}

/// One page of a listing, newest first; with the cursor of the next page.
pub async fn list(
    service: &Service,
    caller: &Caller,
    listing: Listing,
    after: Option<&str>,
    limit: Option<u32>,
    detailed: bool,
) -> Result<(Vec<FileRecord>, Option<String>)> {
    let most = if detailed {
        MAX_DETAILED_PAGE
    } else {
        MAX_PAGE
    };
    let limit = limit.unwrap_or(most);
    if !(1..=most).contains(&limit) {
        return Err(Error::bad_request(format!(
            "limit must be 1 to {most}{}",
            if detailed { " with details" } else { "" }
        )));
    }
    let page = Page {
        after: after.map(parse_cursor).transpose()?,
        limit,
    };
    let user = &caller.user.name;
    let files = match listing {
        Listing::Owned => service.store.list_files(user, &page).await?,
        Listing::SharedWithMe => service.store.shared_with(user, &page, false).await?,
        Listing::Unreceived => service.store.shared_with(user, &page, true).await?,
    };
    let next = (files.len() == limit as usize)
        .then(|| files.last().map(cursor_after))
        .flatten();
    Ok((files, next))
}

/// What a listing with details adds to a file: everything a client needs
/// to show it (name, size, sender, recipients) without three more requests
/// per file, which made a listing of thousands of files hit the rate limit.
/// The client checks all of it as if it had asked for each part.
pub struct FileDetails {
    /// The caller's wrap of the file key.
    pub stanza: Option<Vec<u8>>,
    /// The core header the file's bytes start with; `None` when they do not
    /// start with one (a plain file) or cannot be read.
    pub header: Option<Vec<u8>>,
    /// For the owner: who else holds a wrap.
    pub shared_with: Option<Vec<String>>,
    /// The file's object is gone from the object store (data lost on the
    /// server): the client says so rather than "cannot decrypt".
    pub missing: bool,
}

/// How many files' details are read at once (object-store reads overlap).
const DETAILS_AT_ONCE: usize = 8;

/// The details of each of `files`, in order.
pub async fn details(
    service: &Service,
    caller: &Caller,
    files: &[FileRecord],
) -> Result<Vec<FileDetails>> {
    // In groups rather than a buffered stream: the stream's closure would
    // make the handler's future not `Send` for every lifetime (axum needs it).
    let mut details = Vec::with_capacity(files.len());
    for group in files.chunks(DETAILS_AT_ONCE) {
        let reads = group.iter().map(|file| file_details(service, caller, file));
        details.extend(futures_util::future::try_join_all(reads).await?);
    }
    Ok(details)
}

async fn file_details(
    service: &Service,
    caller: &Caller,
    file: &FileRecord,
) -> Result<FileDetails> {
    let user = &caller.user.name;
    let stanza = service.store.wrap(&file.id, user).await?;
    let shared_with = if file.owner == *user {
        let mut users = service.store.wrap_users(&file.id).await?;
        users.retain(|u| *u != file.owner);
        Some(users)
    } else {
        None
    };
    // Tried for every file: a coffer object can also arrive as a plain
    // upload (the server then keeps it encrypted at rest, and serves it
    // back as it came), and then it has a header all the same.
    let (header, missing) = match stored_header(service, file).await {
        Ok(header) => (header, false),
        Err(err) if err.is_object_missing() => (None, true),
        Err(_) => (None, false),
    };
    Ok(FileDetails {
        stanza,
        header,
        shared_with,
        missing,
    })
}

/// Read first for a header: enough for nearly all of them.
const HEADER_PREFIX: u64 = 8 * 1024;
/// The most a header can take (metadata is at most 64 KiB).
const MAX_HEADER: u64 = 96 * 1024;

/// The core header a file's bytes start with, or `None` (with a warning
/// for an E2EE file) when there is none or it is not valid, or the error
/// reading it (already logged): the client then shows the file as one it
/// cannot open, the rest of the listing is unaffected.
async fn stored_header(service: &Service, file: &FileRecord) -> Result<Option<Vec<u8>>> {
    let mut read = 0;
    for want in [HEADER_PREFIX, MAX_HEADER] {
        let end = want.min(file.size);
        if end <= read {
            break;
        }
        match read_prefix(service, file, end).await {
            // Not a coffer object at all (a plain file): no second read.
            Ok(bytes) if !bytes.starts_with(&coffer_format::header::MAGIC) => break,
            Ok(bytes) => match coffer_format::Header::parse(&bytes) {
                Ok((_, len)) => return Ok(Some(bytes[..len].to_vec())),
                Err(_) => read = end,
            },
            Err(err) => return Err(err),
        }
    }
    if file.digest_alg == DigestAlg::Coffer2Root {
        tracing::warn!(file = %file.id, "a listed file's object has no valid header");
    }
    Ok(None)
}

async fn read_prefix(service: &Service, file: &FileRecord, end: u64) -> Result<Vec<u8>> {
    use futures_util::TryStreamExt as _;
    let stream = super::downloads::read(service, file, 0, end).await?;
    let chunks: Vec<bytes::Bytes> = stream
        .try_collect()
        .await
        .map_err(|err| Error::internal(format!("reading the header of file {}: {err}", file.id)))?;
    Ok(chunks.concat())
}

/// What a removal took away.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Removed {
    /// The owner's file, with its wraps and links.
    File,
    /// Only the caller's own wrap of a file shared with them: it leaves
    /// their view; the owner and other recipients keep it.
    Share,
}

/// The owner deletes a file with its wraps and links; a recipient removes
/// it from their own view (their wrap).
pub async fn remove(service: &Service, caller: &Caller, id: &str) -> Result<Removed> {
    let Some(file) = service.store.file(id).await? else {
        return Err(Error::not_found("file"));
    };
    if file.owner != caller.user.name {
        return if service
            .store
            .delete_wrap(&file.id, &caller.user.name)
            .await?
        {
            audit::record(service, caller.event("dismiss", &file.id)).await?;
            Ok(Removed::Share)
        } else {
            Err(Error::not_found("file"))
        };
    }
    drop_file(service, &file.id, caller.event("delete", &file.id)).await?;
    Ok(Removed::File)
}

/// Deletes a file, recording `event` if this call removed it (another node
/// may have got there first).
async fn drop_file(service: &Service, id: &str, event: audit::Event) -> Result<()> {
    // Row first: once it is gone nothing can reach the object, so a crash
    // between the two leaves at worst an unreachable object, never a
    // listed file without bytes.
    if !service.store.delete_file(id).await? {
        return Ok(());
    }
    service.deks.forget(id);
    audit::record(service, event).await?;
    service
        .objects
        .delete_object(id)
        .await
        .map_err(Error::internal)
}

/// Deletes the files whose time is up (already hidden from every read);
/// each deletion is audited as `expire` by `server`.
pub async fn sweep_expired(service: &Service) -> Result<usize> {
    let expired = service.store.expired_files(crate::unix_now()).await?;
    for id in &expired {
        drop_file(service, id, audit::Event::new("server", None, "expire", id)).await?;
    }
    Ok(expired.len())
}

/// A recipient acknowledges that a file shared with them arrived, so
/// their next inbox, on any machine, leaves it out.
pub async fn mark_received(service: &Service, caller: &Caller, id: &str) -> Result<()> {
    let file = readable_file(service, caller, id).await?;
    if !service
        .store
        .mark_received(&file.id, &caller.user.name, crate::unix_now())
        .await?
    {
        return Err(Error::not_found("share"));
    }
    // A one-shot transfer goes once the last recipient has it.
    if file.delete_when_received && service.store.unreceived_wraps(&file.id).await? == 0 {
        let event = caller.event("delete_received", &file.id);
        drop_file(service, &file.id, event).await?;
    }
    Ok(())
}

/// `<algorithm>:<hex>` of a file's content digest.
pub fn content_id(file: &FileRecord) -> String {
    format!("{}:{}", file.digest_alg.name(), crate::hex(&file.digest))
}
