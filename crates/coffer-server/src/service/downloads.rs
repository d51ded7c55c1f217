//! A file's bytes for a download: the stored bytes of an E2EE file as they
//! are, a server-encrypted file's plaintext decrypted on the fly and
//! verified by the format. Integrity failures fail closed and are audited.

use super::{Error, Kind, Result, Service, audit};
use crate::objects::ByteStream;
use crate::store::FileRecord;

/// Bytes `start..end` of what the user uploaded: the stored bytes for E2EE
/// files, decrypted on the fly for files the server encrypted.
pub async fn read(
    service: &Service,
    file: &FileRecord,
    start: u64,
    end: u64,
) -> Result<ByteStream<'static>> {
    let Some(object_key) = service.store.object_key(&file.id).await? else {
        return service
            .objects
            .read(&file.id, start, end)
            .await
            .map_err(|err| match err.kind() {
                std::io::ErrorKind::NotFound => Error::object_missing(&file.id),
                _ => Error::internal(format!("reading the object of file {}: {err}", file.id)),
            });
    };
    let dek = match service.deks.get(&file.id) {
        Some(dek) => dek,
        None => {
            let dek = checked(
                service,
                &file.owner,
                &file.id,
                service
                    .keyring
                    .unwrap(&object_key.key, crate::keyring::KeyUse::File(&file.id)),
            )
            .await?;
            service.deks.put(&file.id, &dek);
            dek
        }
    };
    let plain = super::at_rest::decrypt_range(
        service.objects.clone(),
        &file.id,
        object_key.stored_size,
        &dek,
        start,
        end,
    )
    .await;
    if let Err(err) = &plain
        && is_missing(err)
    {
        return Err(Error::object_missing(&file.id));
    }
    checked(service, &file.owner, &file.id, plain).await
}

/// Whether `err` comes from an object that is not in the store (the local
/// store and object_store both say so with `io::ErrorKind::NotFound`; the
/// format passes I/O errors on transparently, so that one is looked into).
fn is_missing(err: &anyhow::Error) -> bool {
    err.chain().any(|cause| {
        let io = match cause.downcast_ref::<coffer_format::Error>() {
            Some(coffer_format::Error::Io(io)) => Some(io),
            _ => cause.downcast_ref::<std::io::Error>(),
        };
        io.is_some_and(|io| io.kind() == std::io::ErrorKind::NotFound)
    })
}

/// Passes `result` through, turning an error into an audited integrity
/// failure (fail closed).
pub(crate) async fn checked<T, E: std::fmt::Display>(
    service: &Service,
    owner: &str,
    target: &str,
    result: std::result::Result<T, E>,
) -> Result<T> {
    match result {
        Ok(value) => Ok(value),
        Err(err) => Err(integrity_failure(service, owner, target, err).await),
    }
}

/// Logs, counts and audits a key or data integrity failure; the caller
/// fails closed with the returned error.
async fn integrity_failure(
    service: &Service,
    owner: &str,
    target: &str,
    err: impl std::fmt::Display,
) -> Error {
    metrics::counter!("coffer_integrity_failures_total").increment(1);
    tracing::error!(owner, target, "integrity failure: {err:#}");
    let event = audit::Event::new(owner, None, "integrity", target).outcome("failed");
    let _ = audit::record(service, event).await;
    Error::new(
        Kind::Internal,
        "integrity",
        "stored data or keys failed verification",
    )
}
