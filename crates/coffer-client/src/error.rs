//! The library's error type: one variant per thing a caller may want to
//! handle differently. Messages never contain tokens, keys or passwords.

use std::path::PathBuf;

use crate::untrusted::printable;

/// Everything a client operation can fail with.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The server's certificate does not match the pinned fingerprint.
    #[error(
        "the server certificate changed: pinned {pinned}, presented {presented}. \
         This may be an attack; if the server really got a new certificate, log in again with --fingerprint"
    )]
    CertificateChanged {
        /// The pin in the profile.
        pinned: String,
        /// What the server presented.
        presented: String,
    },
    /// The server's coffer identity differs from the pinned one.
    #[error(
        "the server identity changed: pinned {pinned}, presented {presented}. Refusing to continue"
    )]
    ServerIdentityChanged {
        /// The pinned identity.
        pinned: String,
        /// What the server presented.
        presented: String,
    },
    /// A user's public key differs from the one seen before.
    #[error(
        "the public key of user {} changed: known {known}, now {presented}. \
         Check with them, then pass --accept-new-key",
        printable(.user)
    )]
    UserKeyChanged {
        /// The user.
        user: String,
        /// Known fingerprint.
        known: String,
        /// Presented fingerprint.
        presented: String,
    },
    /// TLS or TCP failed.
    #[error("cannot connect to {addr}: {source}")]
    Connect {
        /// Where.
        addr: String,
        /// Why.
        source: std::io::Error,
    },
    /// An HTTP exchange failed midway (connection lost).
    #[error("connection lost: {}", printable(.0))]
    Transport(String),
    /// The connection closed before the request went out, so the server
    /// cannot have acted on it.
    #[error("connection closed before the request was sent: {0}")]
    NotSent(String),
    /// The server answered with an error.
    #[error("server refused ({status} {}): {}", printable(.code), printable(.message))]
    Api {
        /// HTTP status.
        status: u16,
        /// Stable error code from the body.
        code: String,
        /// Human message from the body.
        message: String,
    },
    /// The server answered something that does not follow the protocol.
    #[error("unexpected answer from the server: {}", printable(.0))]
    Protocol(String),
    /// The file format refused (tampering, wrong key, truncation).
    #[error(transparent)]
    Format(#[from] coffer_format::Error),
    /// A signed receipt did not verify or does not match the upload.
    #[error("the upload receipt does not verify: {0}")]
    Receipt(String),
    /// The local file changed while an upload of it was being resumed.
    #[error("{0} changed since the upload started; it will be uploaded afresh")]
    SourceChanged(PathBuf),
    /// Another run holds the lock of this upload's resume record.
    #[error(
        "another coffer run is uploading this file (lock {0}); it resumes from where that run stops, run again later or pass --wait"
    )]
    Busy(PathBuf),
    /// The file's signer is not the key pinned for the user the server
    /// names as its owner (or sender).
    #[error(
        "refusing file {}: the server says it is from {} ({expected}), but it is signed by {got}",
        printable(.id),
        printable(.owner)
    )]
    WrongSender {
        /// The file.
        id: String,
        /// Who the server says sent it.
        owner: String,
        /// The fingerprint pinned for them.
        expected: String,
        /// The fingerprint of the key that signed it.
        got: String,
    },
    /// The server says a file came through an upload link that the file
    /// itself does not name (or names for another user).
    #[error(
        "refusing file {}: the server says it came through upload link {}, but the file names {}",
        printable(.id),
        printable(.claimed),
        printable(.named)
    )]
    WrongUploadLink {
        /// The file.
        id: String,
        /// The link the server named.
        claimed: String,
        /// The link the file's metadata names.
        named: String,
    },
    /// The server answered with another file than the one asked for.
    #[error("refusing file {requested}: the server answered with the file {got} instead")]
    WrongFile {
        /// The id asked for.
        requested: String,
        /// The id in the header that came back.
        got: String,
    },
    /// A name from a file's metadata cannot be used safely.
    #[error("refusing the stored name {name:?}: {why}")]
    HostileName {
        /// The name as stored (escaped by Debug).
        name: String,
        /// Why it was refused.
        why: &'static str,
    },
    /// The output exists and overwriting was not asked for.
    #[error("{0} exists; pass --force to overwrite")]
    Exists(PathBuf),
    /// Local file system error.
    #[error("{path}: {source}")]
    Io {
        /// Which path.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// Bad input from the caller.
    #[error("{0}")]
    Usage(String),
}

impl Error {
    /// A failed exchange, with the whole chain of causes: hyper's own
    /// message ("connection error") hides the one that matters ("the
    /// connection stalled: …").
    pub fn transport(err: &(dyn std::error::Error + 'static)) -> Self {
        let mut text = err.to_string();
        let mut cause = err.source();
        while let Some(inner) = cause {
            let said = inner.to_string();
            if !text.contains(&said) {
                text = format!("{text}: {said}");
            }
            cause = inner.source();
        }
        Error::Transport(text)
    }

    pub(crate) fn io(path: impl Into<PathBuf>) -> impl FnOnce(std::io::Error) -> Self {
        let path = path.into();
        move |source| Error::Io { path, source }
    }

    pub(crate) fn protocol(what: impl Into<String>) -> Self {
        Error::Protocol(what.into())
    }

    /// Whether retrying on a new connection may help (lost connection,
    /// server restarting, rate limit).
    pub fn is_transient(&self) -> bool {
        match self {
            Error::Transport(_) | Error::NotSent(_) | Error::Busy(_) => true,
            Error::Connect { .. } => true,
            Error::Api { status, code, .. } => {
                *status == 429 && code == "rate_limited"
                    || *status == 423
                    || *status >= 502 && *status != STORAGE_FULL_STATUS
            }
            _ => false,
        }
    }
}

/// The status of a server whose storage has no room left (507): not worth
/// retrying within one run.
pub(crate) const STORAGE_FULL_STATUS: u16 = 507;

/// The server's code for a file whose stored bytes it has lost.
pub(crate) const OBJECT_MISSING: &str = "object_missing";

impl Error {
    /// What a download of a file the listing marks as missing would
    /// answer, without asking again.
    pub(crate) fn object_missing() -> Self {
        Error::Api {
            status: 500,
            code: OBJECT_MISSING.into(),
            message: "the server has lost this file's stored bytes (its listing says so)".into(),
        }
    }

    /// Whether the server said it has lost the file's stored bytes.
    pub fn is_object_missing(&self) -> bool {
        matches!(self, Error::Api { code, .. } if code == OBJECT_MISSING)
    }
}

/// What kind of failure an [`Error`] is, for callers that act on the kind
/// rather than the details (the CLI's exit codes, a script's retry loop).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Class {
    /// The request itself is wrong (bad id, bad argument, output exists).
    Usage,
    /// Not logged in, the session ended, or the server's or a user's key
    /// is not the pinned one.
    Auth,
    /// No such file, user, share or link (or no longer).
    NotFound,
    /// Refused by a quota or a limit (too large, too many, rate limit after
    /// the retries).
    Refused,
    /// Worth retrying later: the connection, or the server, failed.
    Temporary,
    /// The bytes are not what was signed or asked for: tampered, truncated,
    /// from someone else, another file.
    Integrity,
    /// Anything else (a local file system error, a protocol violation).
    Other,
}

impl Error {
    /// The kind of this failure.
    pub fn class(&self) -> Class {
        match self {
            Error::CertificateChanged { .. }
            | Error::ServerIdentityChanged { .. }
            | Error::UserKeyChanged { .. } => Class::Auth,
            Error::Connect { .. } | Error::Transport(_) | Error::NotSent(_) | Error::Busy(_) => {
                Class::Temporary
            }
            // The server's stored copy is lost or failed its checks:
            // permanent, and about the data, so not worth a retry.
            Error::Api { code, .. } if code == OBJECT_MISSING || code == "integrity" => {
                Class::Integrity
            }
            Error::Api { status, .. } => match status {
                401 | 403 => Class::Auth,
                404 | 410 => Class::NotFound,
                413 | 429 => Class::Refused,
                // A full server disk (507) included: the next run may find
                // room, this one would only wait for it.
                408 | 423 | 500..=599 => Class::Temporary,
                _ => Class::Usage,
            },
            Error::Format(_) | Error::Receipt(_) => Class::Integrity,
            Error::WrongSender { .. } | Error::WrongFile { .. } | Error::WrongUploadLink { .. } => {
                Class::Integrity
            }
            Error::SourceChanged(_) => Class::Temporary,
            Error::HostileName { .. } => Class::Integrity,
            Error::Exists(_) | Error::Usage(_) => Class::Usage,
            Error::Protocol(_) | Error::Io { .. } => Class::Other,
        }
    }
}

/// Result with [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
