//! Sharing: the owner's client opens its own wrap, wraps the same file key
//! for the recipient's public identity, and sends only that wrap. The
//! server never sees a key and the stored object is never rewritten.

use coffer_format::PublicIdentity;

use crate::Result;
use crate::download::open_own;
use crate::session::Session;

/// Gives `user` (whose key the caller has checked) access to file `id`.
pub async fn share(
    session: &mut Session,
    id: &str,
    user: &str,
    key: &PublicIdentity,
) -> Result<()> {
    let own = open_own(session, id, "share").await?;
    let stanza =
        coffer_format::recipient::add_recipient(own.opened.core(), own.opened.file_key(), key)?;
    session.put_share(id, user, &stanza).await
}
