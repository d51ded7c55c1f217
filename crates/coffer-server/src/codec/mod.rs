//! Protocol codecs with no I/O and no state: the tus headers and
//! `Upload-Metadata` ([`tus`]), `Range` and `Content-Range` ([`range`]), the
//! content identity as ETag and digest headers ([`digest`]). Each is a pure
//! function over header values, tested on its own (in the spirit of
//! rustls' `msgs`); the HTTP layer calls them, the file service never sees
//! a header.

pub mod digest;
pub mod range;
pub mod tus;

/// A header value that does not follow its protocol.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum Invalid {
    /// `Tus-Resumable` is missing or not `1.0.0`.
    #[error("Tus-Resumable: 1.0.0 required")]
    TusVersion,
    /// Any other malformed value; the message says which.
    #[error("{0}")]
    Header(String),
}

impl Invalid {
    fn header(message: impl Into<String>) -> Self {
        Invalid::Header(message.into())
    }
}
