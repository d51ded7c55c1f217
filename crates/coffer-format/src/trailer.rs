//! What the sender signs, and the trailer that closes every file.
//!
//! **Version 2** ends in the bare Ed25519 signature (64 bytes, in clear):
//!
//! ```text
//! signature = Ed25519(sender, "coffer/v2/signature" || header_hash
//!                     || BE64(plaintext_len) || BE64(chunk_count) || root)
//! ```
//!
//! Every signed value is derived by the reader, never read from the file:
//! the length and count from the layout, the root by hashing, so a file
//! whose layout disagrees with what was signed fails the signature. The root
//! is over ciphertext, and the header commits to the file key, so the
//! ciphertext determines the plaintext: the signature binds the content
//! without revealing a digest of it (version 1 had to seal its trailer
//! because it signed a plaintext SHA-256, which would let anyone holding
//! the file confirm a guess of its contents).
//!
//! **Version 1** (read only) seals `BE64(len) || SHA-256(plaintext) ||
//! signature` under the trailer key, the signature over
//! `"coffer/v1/signature" || header_hash || BE64(len) || SHA-256(plaintext)`.

use zeroize::Zeroizing;

use crate::header::TRAILER_LEN_V1;
use crate::identity::{Identity, Sender};
use crate::keys::open_once;
#[cfg(test)]
use crate::keys::seal_once;
use crate::tree::Hash;
use crate::{Error, Result};

const SIGNATURE_LABEL_V1: &[u8] = b"coffer/v1/signature";
const SIGNATURE_LABEL_V2: &[u8] = b"coffer/v2/signature";
const PLAIN_LEN_V1: usize = 8 + 32 + 64;

/// The values a version 2 signature covers.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Signed {
    /// SHA-256 of the core header.
    pub header_hash: [u8; 32],
    /// Exact plaintext length.
    pub plaintext_len: u64,
    /// Number of payload chunks.
    pub chunk_count: u64,
    /// Root of the content tree.
    pub root: Hash,
}

impl Signed {
    /// The exact message the sender signs.
    pub fn message(&self) -> Vec<u8> {
        [
            SIGNATURE_LABEL_V2,
            &self.header_hash,
            &self.plaintext_len.to_be_bytes(),
            &self.chunk_count.to_be_bytes(),
            &self.root,
        ]
        .concat()
    }

    pub(crate) fn sign(&self, signer: &Identity) -> [u8; 64] {
        signer.sign(&self.message())
    }

    /// Verifies `signature` by `sender` over these values.
    pub fn verify(&self, sender: &Sender, signature: &[u8; 64]) -> Result<()> {
        sender.verify(&self.message(), signature)
    }
}

/// The decoded version 1 trailer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct TrailerV1 {
    pub plaintext_len: u64,
    pub plaintext_sha256: [u8; 32],
    pub signature: [u8; 64],
}

/// The exact message a version 1 sender signs.
fn signed_message_v1(header_hash: &[u8; 32], plaintext_len: u64, sha256: &[u8; 32]) -> Vec<u8> {
    [
        SIGNATURE_LABEL_V1,
        header_hash,
        &plaintext_len.to_be_bytes(),
        sha256,
    ]
    .concat()
}

impl TrailerV1 {
    /// Signs and seals a version 1 trailer (tests only: nothing writes v1).
    #[cfg(test)]
    pub(crate) fn sign_and_seal(
        signer: &Identity,
        trailer_key: &Zeroizing<[u8; 32]>,
        header_hash: &[u8; 32],
        plaintext_len: u64,
        plaintext_sha256: [u8; 32],
    ) -> Result<Vec<u8>> {
        let message = signed_message_v1(header_hash, plaintext_len, &plaintext_sha256);
        let mut buf = Vec::with_capacity(TRAILER_LEN_V1);
        buf.extend_from_slice(&plaintext_len.to_be_bytes());
        buf.extend_from_slice(&plaintext_sha256);
        buf.extend_from_slice(&signer.sign(&message));
        seal_once(trailer_key, header_hash, &mut buf)?;
        Ok(buf)
    }

    pub(crate) fn open(
        trailer_key: &Zeroizing<[u8; 32]>,
        header_hash: &[u8; 32],
        sealed: &[u8],
    ) -> Result<Self> {
        if sealed.len() != TRAILER_LEN_V1 {
            return Err(Error::Truncated("trailer"));
        }
        let mut buf = sealed.to_vec();
        let len = open_once(trailer_key, header_hash, &mut buf).map_err(|_| Error::TrailerAuth)?;
        if len != PLAIN_LEN_V1 {
            return Err(Error::TrailerAuth);
        }
        let mut len_bytes = [0u8; 8];
        len_bytes.copy_from_slice(&buf[..8]);
        let mut plaintext_sha256 = [0u8; 32];
        plaintext_sha256.copy_from_slice(&buf[8..40]);
        let mut signature = [0u8; 64];
        signature.copy_from_slice(&buf[40..PLAIN_LEN_V1]);
        Ok(Self {
            plaintext_len: u64::from_be_bytes(len_bytes),
            plaintext_sha256,
            signature,
        })
    }

    /// Verifies the signature against the sender and header.
    pub(crate) fn verify(&self, sender: &Sender, header_hash: &[u8; 32]) -> Result<()> {
        let message = signed_message_v1(header_hash, self.plaintext_len, &self.plaintext_sha256);
        sender.verify(&message, &self.signature)
    }
}
