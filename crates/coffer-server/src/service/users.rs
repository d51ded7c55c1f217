//! Removing a user (`coffer server user remove`), run by the administrator
//! beside a running server or a stopped one, so it works on the stores
//! directly rather than on a [`super::Service`].
//!
//! What goes, and what the others see:
//!
//! * **Their files**, with every share and link of them: recipients no
//!   longer see them in `ls --shared` or `inbox`, and link pages answer
//!   "no such link". The bytes are deleted from the object store.
//! * **Files shared with them** stay their owners'; only the removed user's
//!   wrap goes (owners see one recipient fewer).
//! * **Unfinished uploads** (their staged bytes too), **upload links** (their
//!   pages answer "no such link"), **sessions** and **login challenges**.
//! * **The audit log** keeps every entry about them, and one more:
//!   `user_remove`, with what was removed.
//!
//! The user is disabled first, which ends their sessions and refuses new
//! ones, so nothing new is written while the rest goes. Rows go before
//! bytes, file by file: a crash leaves at most an object without a row,
//! which nothing reaches; running the command again finishes the job.

use crate::objects::ObjectStore;
use crate::store::{MetaStore, Page};

use super::audit;

/// What [`remove`] removed, or would remove.
#[derive(Debug, Default, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Removal {
    /// Files they owned.
    pub files: u64,
    /// Bytes of those files.
    pub bytes: u64,
    /// Of those files, how many had been shared with someone.
    pub shared_files: u64,
    /// Other users who lose access to at least one of them.
    pub recipients: Vec<String>,
    /// Files of others shared with them (only their wrap goes).
    pub shared_with_them: u64,
    /// Unfinished uploads.
    pub uploads: u64,
    /// Upload links.
    pub requests: u64,
}

/// Why a removal did not happen.
#[derive(Debug, thiserror::Error)]
pub enum RemoveError {
    /// No user of that name.
    #[error("no such user: {0}")]
    NoSuchUser(String),
    /// Something they own appeared while the removal ran.
    #[error(
        "{0} still owns files or uploads (one committed while removing?): run the command again"
    )]
    StillOwns(String),
    /// The metadata store failed.
    #[error(transparent)]
    Store(#[from] crate::store::StoreError),
    /// The object store failed.
    #[error("deleting stored bytes failed: {0}")]
    Objects(#[from] std::io::Error),
}

/// What removing `name` would remove; changes nothing.
pub async fn plan(store: &dyn MetaStore, name: &str) -> Result<Removal, RemoveError> {
    if store.user(name).await?.is_none() {
        return Err(RemoveError::NoSuchUser(name.to_string()));
    }
    let mut removal = Removal::default();
    let mut recipients = std::collections::BTreeSet::new();
    for file in store.owned_files(name).await? {
        removal.files += 1;
        removal.bytes += file.size;
        let others: Vec<String> = store
            .wrap_users(&file.id)
            .await?
            .into_iter()
            .filter(|user| user != name)
            .collect();
        removal.shared_files += u64::from(!others.is_empty());
        recipients.extend(others);
    }
    removal.recipients = recipients.into_iter().collect();
    removal.shared_with_them = count_shared_with(store, name).await?;
    removal.uploads = store.owner_uploads(name).await?.len() as u64;
    removal.requests = store.owner_requests(name).await?.len() as u64;
    Ok(removal)
}

async fn count_shared_with(store: &dyn MetaStore, name: &str) -> Result<u64, RemoveError> {
    let mut count = 0;
    let mut page = Page::first(500);
    loop {
        let batch = store.shared_with(name, &page, false).await?;
        let Some(last) = batch.last() else {
            return Ok(count);
        };
        count += batch.len() as u64;
        page.after = Some((last.created_at, last.id.clone()));
    }
}

/// Removes `name` and everything they own (see the module docs); audited
/// as `user_remove` by `admin`.
pub async fn remove(
    store: &dyn MetaStore,
    objects: &dyn ObjectStore,
    name: &str,
) -> Result<Removal, RemoveError> {
    let removal = plan(store, name).await?;
    store.set_disabled(name, true).await?;
    for file in store.owned_files(name).await? {
        if store.delete_file(&file.id).await? {
            objects.delete_object(&file.id).await?;
        }
    }
    for upload in store.owner_uploads(name).await? {
        if store.delete_upload(&upload.id).await? {
            objects.delete_staged(&upload.id, &upload.staging).await?;
        }
    }
    if !store.remove_user(name).await? {
        return Err(RemoveError::StillOwns(name.to_string()));
    }
    let detail = format!(
        "files={} bytes={} shared_files={} recipients={} shared_with_them={} uploads={} upload_links={}",
        removal.files,
        removal.bytes,
        removal.shared_files,
        removal.recipients.len(),
        removal.shared_with_them,
        removal.uploads,
        removal.requests
    );
    audit::append(
        store,
        &audit::Event::new("admin", None, "user_remove", name).detail(detail),
    )
    .await?;
    Ok(removal)
}
