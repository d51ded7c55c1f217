//! The coffer v1 encrypted file format. The normative description is
//! `docs/FORMAT.md`; this crate is its reference implementation.
//!
//! A file is
//!
//! ```text
//! core header || stanza section || payload (STREAM chunks) || sealed trailer
//! ```
//!
//! * the **core header** carries the format version, algorithm suite, chunk
//!   size, salt, the sender's public identity and the encrypted metadata,
//!   and ends in an HMAC keyed from the file key (the key commitment);
//! * each **stanza** wraps the file key for one recipient with HPKE, bound to
//!   the core header's hash; stanzas sit outside the MAC so they can be
//!   stored apart from the file and added later;
//! * the **payload** is the STREAM construction over AES-256-GCM
//!   ([`stream`]);
//! * the **trailer** seals the plaintext length, its SHA-256 and the
//!   sender's Ed25519 signature ([`trailer`]).
//!
//! Module map: [`header`] is the byte codec, [`keys`] the key schedule,
//! [`recipient`] the HPKE wraps, [`identity`] the key pairs and their text
//! forms, [`encrypt`] / [`decrypt`] the streaming writer and reader, [`seek`]
//! range reads. No network, no async runtime: sync `Read`/`Write`, with tokio
//! adapters behind the `tokio` feature.

#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod decrypt;
mod digest;
pub mod encrypt;
mod error;
pub mod header;
pub mod identity;
pub mod keys;
pub mod metadata;
pub mod recipient;
pub mod seek;
pub mod stream;
pub mod trailer;

#[cfg(feature = "tokio")]
pub mod async_io;

pub use decrypt::{Decryptor, Header, OpenedHeader, ResumePoint, Verified, decrypt};
pub use encrypt::{
    EncryptOptions, Encryptor, Prepared, Stanzas, Written, encoded_len, encrypt, prepare,
};
pub use error::{Error, ErrorKind, Result};
pub use header::{CoreHeader, Stanza};
pub use identity::{Identity, KeyId, PublicIdentity};
pub use keys::FileKey;
pub use metadata::Metadata;
pub use seek::RangeReader;
