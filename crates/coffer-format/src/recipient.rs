//! Wrapping the file key for recipients with HPKE (RFC 9180), base mode,
//! DHKEM(X25519, HKDF-SHA256), HKDF-SHA256, AES-256-GCM, from the `hpke`
//! crate.
//!
//! `info = "coffer/v1/file-key" || SHA-256(core header) || key id` binds each
//! wrap to one file and to its label: a stanza copied into another file's
//! header fails to open there. The HPKE `aad` is empty, so implementations on
//! HPKE APIs without associated data (e.g. Python's `cryptography`) can read
//! the format.

use hpke::aead::AesGcm256;
use hpke::kdf::HkdfSha256;
use hpke::kem::X25519HkdfSha256;
use hpke::{Deserializable, OpModeR, OpModeS, Serializable};
use zeroize::Zeroizing;

use crate::header::{CoreHeader, Stanza};
use crate::identity::{Identity, KeyId, PublicIdentity};
use crate::keys::{FILE_KEY_LEN, FileKey};
use crate::{Error, Result};

type Kem = X25519HkdfSha256;
const INFO_LABEL: &[u8] = b"coffer/v1/file-key";

fn info(header_hash: &[u8; 32], key_id: &KeyId) -> Vec<u8> {
    [INFO_LABEL, header_hash, &key_id.0].concat()
}

/// Wraps `file_key` for `recipient`, bound to the header with `header_hash`.
pub fn wrap_file_key(
    file_key: &FileKey,
    header_hash: &[u8; 32],
    recipient: &PublicIdentity,
) -> Result<Stanza> {
    let key_id = recipient.key_id();
    let public = <Kem as hpke::Kem>::PublicKey::from_bytes(recipient.encryption_key())
        .map_err(|_| Error::InvalidPublicIdentity("encryption key"))?;
    let (enc, ciphertext) = hpke::single_shot_seal::<AesGcm256, HkdfSha256, Kem>(
        &OpModeS::Base,
        &public,
        &info(header_hash, &key_id),
        file_key.expose(),
        &[],
    )
    .map_err(|_| Error::InvalidPublicIdentity("HPKE encapsulation refused the key"))?;
    let wrapped_key: [u8; 48] = ciphertext
        .as_slice()
        .try_into()
        .map_err(|_| Error::Crypto("HPKE ciphertext length"))?;
    let mut enc_bytes = [0u8; 32];
    enc_bytes.copy_from_slice(&enc.to_bytes());
    Ok(Stanza {
        key_id,
        enc: enc_bytes,
        wrapped_key,
    })
}

/// Finds the stanza addressed to `identity` and unwraps the file key. The
/// caller must still verify the header MAC with it (see
/// [`crate::decrypt::Header::open`]); this function alone proves nothing about
/// the header.
pub fn unwrap_file_key<'s>(
    stanzas: impl IntoIterator<Item = &'s Stanza>,
    header_hash: &[u8; 32],
    identity: &Identity,
) -> Result<FileKey> {
    let key_id = identity.public().key_id();
    let secret = <Kem as hpke::Kem>::PrivateKey::from_bytes(identity.decryption_secret().as_ref())
        .map_err(|_| Error::Crypto("X25519 secret"))?;
    let info = info(header_hash, &key_id);
    let mut addressed_to_us = false;
    for stanza in stanzas.into_iter().filter(|s| s.key_id == key_id) {
        addressed_to_us = true;
        let Ok(enc) = <Kem as hpke::Kem>::EncappedKey::from_bytes(&stanza.enc) else {
            continue;
        };
        let opened = hpke::single_shot_open::<AesGcm256, HkdfSha256, Kem>(
            &OpModeR::Base,
            &secret,
            &enc,
            &info,
            &stanza.wrapped_key,
            &[],
        );
        if let Ok(plain) = opened {
            let plain = Zeroizing::new(plain);
            if let Ok(bytes) = <[u8; FILE_KEY_LEN]>::try_from(plain.as_slice()) {
                return Ok(FileKey::from_bytes(bytes));
            }
        }
    }
    // A stanza labelled with our key id that does not open means the stanza
    // or the header it is bound to was modified: say "tampered", not "wrong
    // key", so users are not sent looking for another key.
    if addressed_to_us {
        Err(Error::HeaderAuth)
    } else {
        Err(Error::NoMatchingRecipient)
    }
}

/// Wraps the file key of an already-written file for one more recipient.
/// This is how sharing adds a recipient without rewriting the stored object.
pub fn add_recipient(
    header: &CoreHeader,
    file_key: &FileKey,
    recipient: &PublicIdentity,
) -> Result<Stanza> {
    wrap_file_key(file_key, &header.hash(), recipient)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wrap_opens_for_recipient_only_and_only_for_its_header() {
        let alice = Identity::generate().unwrap();
        let bob = Identity::generate().unwrap();
        let key = FileKey::generate().unwrap();
        let stanza = wrap_file_key(&key, &[1; 32], alice.public()).unwrap();

        let got = unwrap_file_key(std::slice::from_ref(&stanza), &[1; 32], &alice).unwrap();
        assert_eq!(got.expose(), key.expose());
        assert!(matches!(
            unwrap_file_key(std::slice::from_ref(&stanza), &[1; 32], &bob),
            Err(Error::NoMatchingRecipient)
        ));
        // Same stanza presented in another file's header.
        assert!(matches!(
            unwrap_file_key(std::slice::from_ref(&stanza), &[2; 32], &alice),
            Err(Error::HeaderAuth)
        ));
        // A flipped bit anywhere in the stanza.
        for bit in 0..(8 * 80) {
            let mut bad = stanza.to_bytes();
            bad[1 + bit / 8] ^= 1 << (bit % 8);
            let bad = Stanza::from_bytes(&bad).unwrap();
            assert!(
                unwrap_file_key(&[bad], &[1; 32], &alice).is_err(),
                "bit {bit}"
            );
        }
    }
}
