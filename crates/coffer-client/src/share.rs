//! Sharing: the owner's client opens its own wrap, wraps the same file key
//! for the recipient's public identity, and sends only that wrap. The
//! server never sees a key and the stored object is never rewritten.

use coffer_format::{Header, PublicIdentity};

use crate::download::{Source, fetch_header};
use crate::session::Session;
use crate::{Error, Result};

/// Gives `user` (whose key the caller has checked) access to file `id`.
pub async fn share(
    session: &mut Session,
    id: &str,
    user: &str,
    key: &PublicIdentity,
) -> Result<()> {
    let identity = session
        .identity()
        .cloned()
        .ok_or_else(|| Error::Usage("an identity is needed to share".into()))?;
    let meta = session.file_meta(id).await?;
    let own = session.own_wrap(id).await?;
    let header = fetch_header(session, Source::File(id), meta.size).await?;
    let (parsed, _) = Header::parse(&header)?;
    let core = parsed.core().clone();
    let opened = parsed.open(&identity, &[own])?;
    let stanza = coffer_format::recipient::add_recipient(&core, opened.file_key(), key)?;
    session.put_share(id, user, &stanza).await
}
