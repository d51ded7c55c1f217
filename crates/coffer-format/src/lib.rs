//! The coffer encrypted file format. The normative description is
//! `docs/FORMAT.md`; this crate is its reference implementation. It writes
//! version 2 and reads versions 1 and 2.
//!
//! A version 2 file is
//!
//! ```text
//! core header || stanza section || payload (STREAM chunks, each followed by
//!                                  its content-tree entries) || signature
//! ```
//!
//! * the **core header** carries the format version, algorithm suite, chunk
//!   size, file id, salt, the sender and the encrypted metadata, and ends in
//!   an HMAC keyed from the file key (the key commitment);
//! * each **stanza** wraps the file key for one recipient with HPKE (X25519,
//!   or X-Wing for post-quantum hybrid identities), bound to the core
//!   header's hash; stanzas sit outside the MAC so they can be stored apart
//!   from the file and added later;
//! * the **payload** is the STREAM construction over AES-256-GCM
//!   ([`stream`]), with a BLAKE3 Merkle tree over the sealed chunks
//!   ([`tree`]) stored in post-order between them;
//! * the **signature** (Ed25519, in clear) covers the header hash, the
//!   plaintext length, the chunk count and the tree root ([`trailer`]).
//!
//! Module map: [`header`] is the byte codec, [`keys`] the key schedule,
//! [`recipient`] the HPKE wraps, [`identity`] the key pairs and their text
//! forms, [`tree`] the content tree and the layout arithmetic, [`mod@encrypt`] /
//! [`mod@decrypt`] the streaming writer and reader (`pipeline`: a whole input
//! encrypted with reading, sealing and writing overlapped), [`seek`] range reads. No
//! network, no async runtime: sync `Read`/`Write`, with tokio adapters
//! behind the `tokio` feature.

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
pub mod object;
mod pipeline;
pub mod recipient;
pub mod seek;
pub mod stream;
mod text;
pub mod trailer;
pub mod tree;

#[cfg(feature = "tokio")]
pub mod async_io;

pub use decrypt::{Content, Decryptor, Header, OpenedHeader, ResumePoint, Verified, decrypt};
pub use encrypt::{
    EncryptOptions, Encryptor, Prepared, Stanzas, UnitDigest, UnitEncoder, Written, encoded_len,
    encrypt, prepare,
};
pub use error::{Error, ErrorKind, Result};
pub use header::{CoreHeader, Stanza, Version};
pub use identity::{Identity, KeyId, PublicIdentity, Sender};
pub use keys::FileKey;
pub use metadata::Metadata;
pub use object::{ObjectVerifier, VerifiedObject};
pub use seek::RangeReader;
