//! Committed files: who may see one, listings in pages, deletion.

use super::{Caller, Error, Result, Service, audit};
use crate::store::{FileRecord, Page};

/// Entries per listing page, at most and by default.
pub const MAX_PAGE: u32 = 1000;

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
) -> Result<(Vec<FileRecord>, Option<String>)> {
    let limit = limit.unwrap_or(MAX_PAGE);
    if !(1..=MAX_PAGE).contains(&limit) {
        return Err(Error::bad_request("limit must be 1 to 1000"));
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
