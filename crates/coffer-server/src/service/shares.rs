//! End-to-end encrypted sharing: a share is a key wrap (a coffer format
//! stanza) for another user's key, computed by the owner's client. The
//! server stores it and lets that user read the file; it never sees a file
//! key. Revoking deletes the wrap, and with it the access.

use super::files::owned_file;
use super::{Caller, Error, Kind, Result, Service, audit};

/// Checks that `stanza` is a well-formed coffer stanza addressed to the
/// current key of `user`, an enabled user; returns the user's name.
pub async fn check_wrap(service: &Service, user: &str, stanza: &[u8]) -> Result<String> {
    let recipient = service
        .store
        .user(user)
        .await?
        .filter(|u| !u.disabled)
        .ok_or_else(|| Error::not_found("user"))?;
    let stanza = coffer_format::Stanza::from_detached(stanza)
        .map_err(|_| Error::bad_request("not a coffer stanza"))?;
    let public = coffer_format::PublicIdentity::parse(&recipient.public_identity)
        .map_err(Error::internal)?;
    if !stanza.is_for(&public) {
        return Err(Error::bad_request(format!(
            "the wrap is not addressed to {}'s key",
            recipient.name
        )));
    }
    Ok(recipient.name)
}

/// Refuses a wrap that would take a file past the configured number.
pub fn check_wrap_count(service: &Service, count: usize) -> Result<()> {
    if count > service.config.max_wraps_per_file {
        return Err(Error::new(
            Kind::TooLarge,
            "too_many_wraps",
            format!(
                "a file may be shared with at most {} users",
                service.config.max_wraps_per_file
            ),
        ));
    }
    Ok(())
}

/// Shares file `id`: stores `user`'s key wrap (computed by the owner's
/// client, addressed to the recipient's current key).
pub async fn share(
    service: &Service,
    caller: &Caller,
    id: &str,
    user: &str,
    stanza: &[u8],
) -> Result<()> {
    let file = owned_file(service, caller, id).await?;
    let recipient = check_wrap(service, user, stanza).await?;
    let holders = service.store.wrap_users(&file.id).await?;
    if !holders.contains(&recipient) {
        check_wrap_count(service, holders.len() + 1)?;
    }
    service
        .store
        .put_wrap(&file.id, &recipient, stanza, crate::unix_now())
        .await?;
    audit::record(service, caller.event("share", &file.id).detail(recipient)).await?;
    Ok(())
}

/// Revokes a share: deletes the wrap and with it the access.
pub async fn revoke(service: &Service, caller: &Caller, id: &str, user: &str) -> Result<()> {
    let file = owned_file(service, caller, id).await?;
    if service.store.delete_wrap(&file.id, user).await? {
        audit::record(service, caller.event("revoke", &file.id).detail(user)).await?;
        Ok(())
    } else {
        Err(Error::not_found("share"))
    }
}

/// Users holding a wrap for a file (owner only).
pub async fn holders(service: &Service, caller: &Caller, id: &str) -> Result<Vec<String>> {
    let file = owned_file(service, caller, id).await?;
    Ok(service.store.wrap_users(&file.id).await?)
}

/// The caller's own key wrap for a file.
pub async fn own_wrap(service: &Service, caller: &Caller, id: &str) -> Result<Vec<u8>> {
    service
        .store
        .wrap(id, &caller.user.name)
        .await?
        .ok_or_else(|| Error::not_found("wrap"))
}
