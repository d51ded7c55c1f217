//! Sharing: the owner's client opens its own wrap, wraps the same file key
//! for the recipient's public identity, and sends only that wrap. The
//! server never sees a key and the stored object is never rewritten.

use coffer_format::PublicIdentity;

use crate::Result;
use crate::download::open_own_for_sharing;
use crate::session::Session;

/// Gives `user` (whose key the caller has checked) access to file `id`.
/// Before wrapping, the header is checked to be the caller's own file `id`
/// (see [`crate::download`]): a lying server cannot have the client hand
/// another file's key to `user`. Returns the decrypted name of what was
/// shared, for the caller to show.
pub async fn share(
    session: &mut Session,
    id: &str,
    user: &str,
    key: &PublicIdentity,
) -> Result<Option<String>> {
    let own = open_own_for_sharing(session, id, "share").await?;
    let stanza =
        coffer_format::recipient::add_recipient(own.opened.core(), own.opened.file_key(), key)?;
    session.put_share(id, user, &stanza).await?;
    Ok(own.opened.metadata().name.clone())
}
