//! The one error type of this crate.
//!
//! Every failure belongs to exactly one class of docs/FORMAT.md §10
//! ([`ErrorKind`]): the input is not a coffer file at all, it is a coffer
//! file we cannot read (unsupported), it breaks the format's rules
//! (malformed), it is not for this key (wrong key), or it was damaged
//! (tampered or truncated). Messages never contain key material or
//! plaintext.

use std::io;

/// Errors from parsing, encrypting or decrypting coffer files and keys.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The input does not start with the coffer magic bytes.
    #[error("not a coffer file")]
    NotCoffer,

    /// The header names a format version this build does not implement.
    #[error("unsupported coffer format version {0}")]
    UnsupportedVersion(u16),

    /// The header names an algorithm suite this build does not implement.
    #[error("unsupported coffer algorithm suite {0}")]
    UnsupportedSuite(u16),

    /// A header field is outside the bounds the spec allows (chunk size,
    /// metadata length, stanza count or length, sender keys). Checked before
    /// anything is allocated from it.
    #[error("malformed header: {0}")]
    MalformedHeader(&'static str),

    /// A chunk's stored tree entries (its leaf and the subtree roots after
    /// it) are not the hashes of the chunks (version 2).
    #[error("tampered: the content tree stored after chunk {index} does not match the chunks")]
    TreeMismatch {
        /// Zero-based index of the chunk whose entries differ.
        index: u64,
    },

    /// An authenticated final chunk is empty although it is not the only
    /// chunk (only an empty file has an empty final chunk).
    #[error("malformed: an empty final chunk after other chunks")]
    EmptyFinalChunk,

    /// The metadata's `size` differs from the signed length.
    #[error("malformed: the metadata size differs from the signed length")]
    SizeMismatch,

    /// The file's length fits no layout (version 2 random access).
    #[error("malformed: no payload layout has this length")]
    BadLayout,

    /// No recipient stanza opened with the given identity.
    #[error("wrong key: this file is not encrypted to the given identity")]
    NoMatchingRecipient,

    /// The header or a stanza addressed to this identity was modified: the
    /// stanza did not open, the header MAC did not verify under the file key
    /// it yielded, or the metadata block did not decrypt.
    #[error("tampered: header authentication failed")]
    HeaderAuth,

    /// A payload chunk failed authentication (modified, reordered, spliced,
    /// or a chunk marked final where it is not).
    #[error("tampered: payload chunk {index} failed authentication")]
    ChunkAuth {
        /// Zero-based index of the first chunk that failed.
        index: u64,
    },

    /// The final chunk failed authentication: it was modified, or the file
    /// was cut inside it (the two look the same).
    #[error("tampered or truncated: the final chunk (index {index}) failed authentication")]
    FinalChunkAuth {
        /// Zero-based index of the chunk in final position.
        index: u64,
    },

    /// The input ended before the end of the header, payload or trailer.
    #[error("truncated: the file ends early ({0})")]
    Truncated(&'static str),

    /// The trailer failed authentication.
    #[error("tampered: trailer authentication failed")]
    TrailerAuth,

    /// The sender's signature did not verify.
    #[error("tampered: sender signature does not verify")]
    BadSignature,

    /// The plaintext digest or length in the trailer disagrees with the
    /// decrypted payload.
    #[error("tampered: {0} does not match the signed trailer")]
    TrailerMismatch(&'static str),

    /// The plaintext given to the encryptor did not match what the metadata
    /// announced (the input changed while it was being read).
    #[error("input changed while encrypting: {0}")]
    InputChanged(&'static str),

    /// More recipients than one file may carry.
    #[error("too many recipients: {given} (at most {max})")]
    TooManyRecipients {
        /// How many were requested.
        given: usize,
        /// The format's bound.
        max: usize,
    },

    /// A file must have at least one recipient.
    #[error("no recipients given")]
    NoRecipients,

    /// A public identity string or key could not be parsed or is unsafe to
    /// use (e.g. a low-order X25519 point).
    #[error("invalid public identity: {0}")]
    InvalidPublicIdentity(&'static str),

    /// A secret identity file could not be parsed.
    #[error("invalid identity file: {0}")]
    InvalidIdentity(&'static str),

    /// The passphrase did not open the protected identity.
    #[error("wrong passphrase for this identity file")]
    WrongPassphrase,

    /// The metadata block is too large or not valid.
    #[error("invalid metadata: {0}")]
    InvalidMetadata(&'static str),

    /// A range request outside the plaintext.
    #[error("range {start}..{end} is outside the plaintext of {len} bytes")]
    RangeOutOfBounds {
        /// Requested start.
        start: u64,
        /// Requested end (exclusive).
        end: u64,
        /// Plaintext length.
        len: u64,
    },

    /// The operating system's random number generator failed.
    #[error("system random number generator failed")]
    Rng,

    /// A cryptographic library reported an internal failure.
    #[error("cryptographic operation failed: {0}")]
    Crypto(&'static str),

    /// An I/O error from the underlying reader or writer.
    #[error(transparent)]
    Io(#[from] io::Error),
}

impl Error {
    /// A short, stable classification for command-line exit messages and
    /// machine-readable output.
    pub fn kind(&self) -> ErrorKind {
        match self {
            Error::NotCoffer => ErrorKind::NotCoffer,
            Error::UnsupportedVersion(_) | Error::UnsupportedSuite(_) => ErrorKind::Unsupported,
            Error::NoMatchingRecipient | Error::WrongPassphrase => ErrorKind::WrongKey,
            Error::Truncated(_) => ErrorKind::Truncated,
            Error::MalformedHeader(_)
            | Error::InvalidMetadata(_)
            | Error::EmptyFinalChunk
            | Error::SizeMismatch
            | Error::BadLayout => ErrorKind::Malformed,
            Error::HeaderAuth
            | Error::ChunkAuth { .. }
            | Error::FinalChunkAuth { .. }
            | Error::TreeMismatch { .. }
            | Error::TrailerAuth
            | Error::BadSignature
            | Error::TrailerMismatch(_) => ErrorKind::Tampered,
            Error::Io(_) => ErrorKind::Io,
            _ => ErrorKind::Usage,
        }
    }
}

/// Coarse classification of [`Error`]s.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// Not a coffer file.
    NotCoffer,
    /// A coffer file of a version or suite this build cannot read.
    Unsupported,
    /// A coffer file that breaks the format's rules: a field out of bounds,
    /// invalid metadata, an impossible layout.
    Malformed,
    /// Not encrypted to this identity, or a wrong passphrase.
    WrongKey,
    /// Modified bytes: authentication failed.
    Tampered,
    /// The file ends early.
    Truncated,
    /// Reading or writing failed.
    Io,
    /// Bad arguments or keys.
    Usage,
}

/// Converts an I/O error that wraps one of ours back into it, so that errors
/// surfaced through `std::io::Read` keep their classification.
impl From<Error> for io::Error {
    fn from(err: Error) -> io::Error {
        match err {
            Error::Io(io) => io,
            other => io::Error::new(io::ErrorKind::InvalidData, other),
        }
    }
}

impl Error {
    /// Recovers a coffer error carried inside an `io::Error` (see the
    /// `From<Error> for io::Error` impl), or wraps a genuine I/O error.
    pub fn from_io(err: io::Error) -> Error {
        if err.get_ref().is_some_and(|inner| inner.is::<Error>()) {
            match err.into_inner().map(|inner| inner.downcast::<Error>()) {
                Some(Ok(ours)) => *ours,
                Some(Err(other)) => Error::Io(io::Error::other(other)),
                None => Error::Crypto("lost error"),
            }
        } else {
            Error::Io(err)
        }
    }
}

/// Result alias for this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;
