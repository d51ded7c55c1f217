//! The signed trailer that closes every file.
//!
//! ```text
//! trailer_plain = BE64(plaintext_len) || SHA-256(plaintext) || signature (64)
//! signature     = Ed25519(sender, "coffer/v1/signature" || header_hash
//!                                 || BE64(plaintext_len) || SHA-256(plaintext))
//! trailer       = AES-256-GCM(trailer_key, nonce = 0^96, aad = header_hash, trailer_plain)
//! ```
//!
//! The signature is sealed rather than in clear: a signature over the
//! plaintext digest in clear would let anyone holding the file confirm a
//! guess of its contents. A recipient can still show a third party who sent
//! the bytes by revealing the plaintext, the core header and the signature.

use zeroize::Zeroizing;

use crate::header::TRAILER_LEN;
use crate::identity::{Identity, PublicIdentity};
use crate::keys::{open_once, seal_once};
use crate::{Error, Result};

const SIGNATURE_LABEL: &[u8] = b"coffer/v1/signature";
const PLAIN_LEN: usize = 8 + 32 + 64;

/// The decoded trailer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Trailer {
    /// Plaintext length in bytes.
    pub plaintext_len: u64,
    /// SHA-256 of the plaintext.
    pub plaintext_sha256: [u8; 32],
    /// The sender's Ed25519 signature (see the module docs).
    pub signature: [u8; 64],
}

/// The exact message the sender signs.
pub fn signed_message(header_hash: &[u8; 32], plaintext_len: u64, sha256: &[u8; 32]) -> Vec<u8> {
    [
        SIGNATURE_LABEL,
        header_hash,
        &plaintext_len.to_be_bytes(),
        sha256,
    ]
    .concat()
}

impl Trailer {
    pub(crate) fn sign(
        signer: &Identity,
        header_hash: &[u8; 32],
        plaintext_len: u64,
        plaintext_sha256: [u8; 32],
    ) -> Self {
        let message = signed_message(header_hash, plaintext_len, &plaintext_sha256);
        Self {
            plaintext_len,
            plaintext_sha256,
            signature: signer.sign(&message),
        }
    }

    pub(crate) fn seal(
        &self,
        trailer_key: &Zeroizing<[u8; 32]>,
        header_hash: &[u8; 32],
    ) -> Result<Vec<u8>> {
        let mut buf = Vec::with_capacity(TRAILER_LEN);
        buf.extend_from_slice(&self.plaintext_len.to_be_bytes());
        buf.extend_from_slice(&self.plaintext_sha256);
        buf.extend_from_slice(&self.signature);
        seal_once(trailer_key, header_hash, &mut buf)?;
        debug_assert_eq!(buf.len(), TRAILER_LEN);
        Ok(buf)
    }

    pub(crate) fn open(
        trailer_key: &Zeroizing<[u8; 32]>,
        header_hash: &[u8; 32],
        sealed: &[u8],
    ) -> Result<Self> {
        if sealed.len() != TRAILER_LEN {
            return Err(Error::Truncated("trailer"));
        }
        let mut buf = sealed.to_vec();
        let len = open_once(trailer_key, header_hash, &mut buf).map_err(|_| Error::TrailerAuth)?;
        if len != PLAIN_LEN {
            return Err(Error::TrailerAuth);
        }
        let mut len_bytes = [0u8; 8];
        len_bytes.copy_from_slice(&buf[..8]);
        let mut plaintext_sha256 = [0u8; 32];
        plaintext_sha256.copy_from_slice(&buf[8..40]);
        let mut signature = [0u8; 64];
        signature.copy_from_slice(&buf[40..PLAIN_LEN]);
        Ok(Self {
            plaintext_len: u64::from_be_bytes(len_bytes),
            plaintext_sha256,
            signature,
        })
    }

    /// Verifies the signature against the sender and header.
    pub fn verify(&self, sender: &PublicIdentity, header_hash: &[u8; 32]) -> Result<()> {
        let message = signed_message(header_hash, self.plaintext_len, &self.plaintext_sha256);
        sender.verify(&message, &self.signature)
    }
}
