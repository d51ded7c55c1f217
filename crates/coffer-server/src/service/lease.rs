//! Who may write an upload right now. Nodes that share a database exclude
//! each other through a lease row in it (not through anything in their own
//! memory), so a second PATCH to the same upload, through this node or any
//! other, gets 423 instead of interleaving bytes.
//!
//! A lease runs for [`LEASE_SECS`] and is renewed every third of that while
//! its request is still writing, so a node that dies mid-request frees its
//! uploads within [`LEASE_SECS`] (short enough for a client's retries to
//! outlast it). A server on SQLite, which no other process shares, frees
//! all leases when it starts. A holder that could not renew (the
//! database was unreachable, or it stalled past its lease) is told so by
//! [`UploadLease::lost`] and must not record what it wrote; the offset's
//! compare-and-set in the database is the last line behind that.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use crate::store::{MetaStore, StoreError};

/// Seconds a lease lasts without renewal.
pub const LEASE_SECS: i64 = 15;

/// The right to write one upload, held until dropped.
pub struct UploadLease {
    store: Arc<dyn MetaStore>,
    upload: String,
    holder: String,
    lost: Arc<AtomicBool>,
    renewer: tokio::task::JoinHandle<()>,
}

impl UploadLease {
    /// Takes the lease on `upload`, or `None` if another request holds it.
    pub async fn take(store: &Arc<dyn MetaStore>, upload: &str) -> super::Result<Option<Self>> {
        let holder = super::new_id()?;
        let now = crate::unix_now();
        if !store
            .lease_upload(upload, &holder, now + LEASE_SECS, now)
            .await?
        {
            return Ok(None);
        }
        let lost = Arc::new(AtomicBool::new(false));
        let renewer = tokio::spawn(renew(
            store.clone(),
            upload.to_string(),
            holder.clone(),
            lost.clone(),
        ));
        Ok(Some(Self {
            store: store.clone(),
            upload: upload.to_string(),
            holder,
            lost,
            renewer,
        }))
    }

    /// Gives the lease back now, so the client's next request (which may
    /// follow at once) finds the upload free.
    pub async fn release(mut self) -> Result<(), StoreError> {
        self.renewer.abort();
        let holder = std::mem::take(&mut self.holder);
        self.store.release_upload(&self.upload, &holder).await
    }

    /// Whether the lease lapsed while held (what was written must then be
    /// thrown away).
    pub fn lost(&self) -> bool {
        self.lost.load(Ordering::SeqCst)
    }
}

/// Extends the lease every third of its life until aborted.
async fn renew(store: Arc<dyn MetaStore>, upload: String, holder: String, lost: Arc<AtomicBool>) {
    let period = Duration::from_secs((LEASE_SECS / 3) as u64);
    loop {
        tokio::time::sleep(period).await;
        let now = crate::unix_now();
        let renewed = store
            .lease_upload(&upload, &holder, now + LEASE_SECS, now)
            .await;
        if !matches!(renewed, Ok(true)) {
            lost.store(true, Ordering::SeqCst);
            return;
        }
    }
}

impl Drop for UploadLease {
    fn drop(&mut self) {
        self.renewer.abort();
        if self.holder.is_empty() {
            return; // released already
        }
        let (store, upload, holder) = (
            self.store.clone(),
            std::mem::take(&mut self.upload),
            std::mem::take(&mut self.holder),
        );
        // Giving the lease back early is a courtesy; if it fails, the
        // lease simply runs out.
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(async move {
                let _ = store.release_upload(&upload, &holder).await;
            });
        }
    }
}
