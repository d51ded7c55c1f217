//! A file's bytes for a download: the stored bytes of an E2EE file as they
//! are, a server-encrypted file's plaintext decrypted on the fly and
//! verified by the format. Integrity failures fail closed and are audited,
//! those found before the response and those found while it streams.

use bytes::Bytes;
use futures_util::StreamExt as _;

use super::{Error, Kind, Result, Service, audit};
use crate::objects::ByteStream;
use crate::store::FileRecord;

/// Bytes `start..end` of what the user uploaded: the stored bytes for E2EE
/// files, decrypted on the fly for files the server encrypted; the stream
/// ends in an error unless it delivers exactly `end - start` bytes.
pub async fn read(
    service: &Service,
    file: &FileRecord,
    start: u64,
    end: u64,
) -> Result<ByteStream<'static>> {
    let stream = open(service, file, start, end).await?;
    Ok(watched(
        stream,
        service.clone(),
        file,
        end.saturating_sub(start),
    ))
}

/// The stream of `start..end` as the store (and, for a server-encrypted
/// file, the format) gives it.
async fn open(
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

/// `stream`, held to deliver exactly `expected` bytes. The status and
/// length of the response are sent before its body, so a stored object
/// found cut short, damaged or unreadable only mid-body can no longer be
/// refused with an error status: the body is cut instead (the client sees
/// a broken transfer, never a short file passed as whole), and the failure
/// is logged, counted and audited like one found before the response
/// (a failing read is logged only). Without this an operator saw only a
/// successful download in the log, and a batch job retried it every night.
fn watched(
    stream: ByteStream<'static>,
    service: Service,
    file: &FileRecord,
    expected: u64,
) -> ByteStream<'static> {
    struct Watch {
        stream: ByteStream<'static>,
        tally: Tally,
        service: Service,
        owner: String,
        target: String,
        ended: bool,
    }
    let watch = Watch {
        stream,
        tally: Tally::new(expected),
        service,
        owner: file.owner.clone(),
        target: file.id.clone(),
        ended: false,
    };
    Box::pin(futures_util::stream::unfold(
        watch,
        |mut watch| async move {
            if watch.ended {
                return None;
            }
            let failure = match watch.tally.next(watch.stream.next().await) {
                Ok(Some(bytes)) => return Some((Ok(bytes), watch)),
                Ok(None) => return None,
                Err(failure) => failure,
            };
            watch.ended = true;
            let (owner, target) = (watch.owner.as_str(), watch.target.as_str());
            if is_about_the_data(&failure) {
                let cause = format!("while streaming a download: {failure}");
                integrity_failure(&watch.service, owner, target, cause).await;
            } else {
                tracing::error!(
                    owner,
                    target,
                    "download cut: reading the stored bytes failed: {failure}"
                );
            }
            Some((Err(failure), watch))
        },
    ))
}

/// Counts a download's bytes against the length its response promised.
struct Tally {
    delivered: u64,
    expected: u64,
}

impl Tally {
    fn new(expected: u64) -> Self {
        Self {
            delivered: 0,
            expected,
        }
    }

    /// The stream's next item as the client may have it: bytes within the
    /// promised length, the end once all of it came, or the failure that
    /// cuts the body (the stream's own, or a length other than promised).
    fn next(&mut self, item: Option<std::io::Result<Bytes>>) -> std::io::Result<Option<Bytes>> {
        use std::io::{Error, ErrorKind};
        match item {
            Some(Ok(bytes)) => {
                self.delivered += bytes.len() as u64;
                if self.delivered > self.expected {
                    let why = format!("the stored bytes run past the {} expected", self.expected);
                    return Err(Error::new(ErrorKind::InvalidData, why));
                }
                Ok(Some(bytes))
            }
            Some(Err(err)) => Err(err),
            None if self.delivered == self.expected => Ok(None),
            None => Err(Error::new(
                ErrorKind::UnexpectedEof,
                format!(
                    "the stored bytes end after {} of the {} expected",
                    self.delivered, self.expected
                ),
            )),
        }
    }
}

/// Whether a failure mid-body is the stored data's: the format reports a
/// failed check as InvalidData, and a wrong length is the object's. A store
/// that fails to read (a dropped S3 connection, EIO) is not, and the
/// client's retry may well succeed.
fn is_about_the_data(failure: &std::io::Error) -> bool {
    matches!(
        failure.kind(),
        std::io::ErrorKind::InvalidData | std::io::ErrorKind::UnexpectedEof
    )
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

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(n: usize) -> Option<std::io::Result<Bytes>> {
        Some(Ok(Bytes::from(vec![7; n])))
    }

    /// Exactly the promised length ends the body; one byte fewer or more,
    /// or a failed read, cuts it; and only the wrong length or a failed
    /// check counts against the stored data.
    #[test]
    fn a_download_is_held_to_its_promised_length() {
        let mut exact = Tally::new(10);
        assert_eq!(exact.next(ok(4)).unwrap().unwrap().len(), 4);
        assert_eq!(exact.next(ok(6)).unwrap().unwrap().len(), 6);
        assert!(exact.next(None).unwrap().is_none());

        let mut short = Tally::new(10);
        short.next(ok(9)).unwrap();
        let cut = short.next(None).unwrap_err();
        assert!(is_about_the_data(&cut), "{cut}");
        assert!(cut.to_string().contains("after 9 of the 10"), "{cut}");

        let mut long = Tally::new(10);
        long.next(ok(10)).unwrap();
        let past = long.next(ok(1)).unwrap_err();
        assert!(is_about_the_data(&past), "{past}");

        let mut empty = Tally::new(0);
        assert!(empty.next(None).unwrap().is_none());

        let tampered = std::io::Error::new(std::io::ErrorKind::InvalidData, "tag mismatch");
        let failed = Tally::new(10).next(Some(Err(tampered))).unwrap_err();
        assert!(is_about_the_data(&failed));
        let dropped = std::io::Error::from(std::io::ErrorKind::ConnectionReset);
        let failed = Tally::new(10).next(Some(Err(dropped))).unwrap_err();
        assert!(
            !is_about_the_data(&failed),
            "a failed read is not the data's"
        );
    }
}
