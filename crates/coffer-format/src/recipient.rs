//! Wrapping the file key for recipients with HPKE (RFC 9180), base mode,
//! from the `hpke` crate:
//!
//! * type 1: DHKEM(X25519, HKDF-SHA256), HKDF-SHA256, AES-256-GCM;
//! * type 2: X-Wing (ML-KEM-768 + X25519, KEM id 0x647a), HKDF-SHA256,
//!   AES-256-GCM: post-quantum hybrid, for hybrid identities.
//!
//! `info = "coffer/vN/file-key" || header_hash || key_id` binds each wrap to
//! one file and to its label: a stanza copied into another file's header
//! fails to open there. The HPKE `aad` is empty, so implementations on HPKE
//! APIs without associated data (e.g. Python's `cryptography`) can read the
//! format.
//!
//! **Opening tries every candidate.** A stanza proves nothing until the file
//! key it yields passes the header MAC, so [`unwrap_file_key`] hands each key
//! that a stanza addressed to us yields to the caller's check, in order,
//! until one passes: a bogus stanza in front (anyone who can edit a stored
//! stanza list can add one) cannot deny access. Stanzas of unknown types are
//! skipped.

use hpke::aead::AesGcm256;
use hpke::kdf::HkdfSha256;
use hpke::kem::{X25519HkdfSha256, XWing};
use hpke::{Deserializable, OpModeR, OpModeS, Serializable};
use zeroize::Zeroizing;

use crate::header::{CoreHeader, Stanza, Version, WRAPPED_LEN, XWING_ENC_LEN};
use crate::identity::{Identity, KeyId, PublicIdentity};
use crate::keys::{FILE_KEY_LEN, FileKey};
use crate::{Error, Result};

fn info(version: Version, header_hash: &[u8; 32], key_id: &KeyId) -> Vec<u8> {
    let label: &[u8] = match version {
        Version::V1 => b"coffer/v1/file-key",
        Version::V2 => b"coffer/v2/file-key",
    };
    [label, header_hash, &key_id.0].concat()
}

fn seal<Kem: hpke::Kem>(
    public: &Kem::PublicKey,
    info: &[u8],
    file_key: &FileKey,
) -> Result<(Vec<u8>, [u8; WRAPPED_LEN])> {
    let (enc, ciphertext) = hpke::single_shot_seal::<AesGcm256, HkdfSha256, Kem>(
        &OpModeS::Base,
        public,
        info,
        file_key.expose(),
        &[],
    )
    .map_err(|_| Error::InvalidPublicIdentity("HPKE encapsulation refused the key"))?;
    let wrapped = ciphertext
        .as_slice()
        .try_into()
        .map_err(|_| Error::Crypto("HPKE ciphertext length"))?;
    Ok((enc.to_bytes().to_vec(), wrapped))
}

/// Wraps `file_key` for `recipient` in a version 2 file whose core header
/// hashes to `header_hash`: an X-Wing stanza for a hybrid identity, an
/// X25519 stanza for a classic one.
pub fn wrap_file_key(
    file_key: &FileKey,
    header_hash: &[u8; 32],
    recipient: &PublicIdentity,
) -> Result<Stanza> {
    wrap_for_version(Version::V2, file_key, header_hash, recipient)
}

fn wrap_for_version(
    version: Version,
    file_key: &FileKey,
    header_hash: &[u8; 32],
    recipient: &PublicIdentity,
) -> Result<Stanza> {
    let key_id = recipient.key_id();
    let info = info(version, header_hash, &key_id);
    match recipient.xwing_key() {
        Some(xwing) if version == Version::V2 => {
            let public = <XWing as hpke::Kem>::PublicKey::from_bytes(xwing)
                .map_err(|_| Error::InvalidPublicIdentity("X-Wing key"))?;
            let (enc, wrapped) = seal::<XWing>(&public, &info, file_key)?;
            let enc: Box<[u8; XWING_ENC_LEN]> = enc
                .into_boxed_slice()
                .try_into()
                .map_err(|_| Error::Crypto("X-Wing ciphertext length"))?;
            Ok(Stanza::XWing {
                key_id,
                enc,
                wrapped,
            })
        }
        _ => {
            let key_id = KeyId::of(recipient.encryption_key());
            let info = crate::recipient::info(version, header_hash, &key_id);
            let public =
                <X25519HkdfSha256 as hpke::Kem>::PublicKey::from_bytes(recipient.encryption_key())
                    .map_err(|_| Error::InvalidPublicIdentity("encryption key"))?;
            let (enc, wrapped) = seal::<X25519HkdfSha256>(&public, &info, file_key)?;
            let enc: [u8; 32] = enc
                .try_into()
                .map_err(|_| Error::Crypto("X25519 encapsulation length"))?;
            Ok(Stanza::X25519 {
                key_id,
                enc,
                wrapped,
            })
        }
    }
}

/// Opens one stanza with `identity`, if it is addressed to one of its keys.
/// `None`: not for us (or of an unknown type); `Some(Err)`: for us, but it
/// does not open.
fn open_stanza(
    version: Version,
    stanza: &Stanza,
    header_hash: &[u8; 32],
    identity: &Identity,
) -> Option<Result<FileKey, ()>> {
    let public = identity.public();
    let plain = match stanza {
        Stanza::X25519 {
            key_id,
            enc,
            wrapped,
        } if *key_id == KeyId::of(public.encryption_key()) => {
            let secret = <X25519HkdfSha256 as hpke::Kem>::PrivateKey::from_bytes(
                identity.decryption_secret().as_ref(),
            )
            .ok()?;
            open::<X25519HkdfSha256>(&secret, enc, &info(version, header_hash, key_id), wrapped)
        }
        Stanza::XWing {
            key_id,
            enc,
            wrapped,
        } if version == Version::V2 && Some(*key_id) == public.xwing_key().map(KeyId::of_xwing) => {
            let seed = identity.xwing_secret()?;
            let secret = <XWing as hpke::Kem>::PrivateKey::from_bytes(seed.as_ref()).ok()?;
            open::<XWing>(
                &secret,
                &enc[..],
                &info(version, header_hash, key_id),
                wrapped,
            )
        }
        _ => return None,
    };
    Some(plain.and_then(|plain| {
        <[u8; FILE_KEY_LEN]>::try_from(plain.as_slice())
            .map(FileKey::from_bytes)
            .map_err(|_| ())
    }))
}

fn open<Kem: hpke::Kem>(
    secret: &Kem::PrivateKey,
    enc: &[u8],
    info: &[u8],
    wrapped: &[u8],
) -> Result<Zeroizing<Vec<u8>>, ()> {
    let enc = Kem::EncappedKey::from_bytes(enc).map_err(|_| ())?;
    hpke::single_shot_open::<AesGcm256, HkdfSha256, Kem>(
        &OpModeR::Base,
        secret,
        &enc,
        info,
        wrapped,
        &[],
    )
    .map(Zeroizing::new)
    .map_err(|_| ())
}

/// Tries every stanza addressed to `identity`, in order, handing each file
/// key one yields to `accept` (which checks the header MAC with it) until
/// one is accepted. A stanza labelled with one of our key ids that never
/// yields an accepted key means the stanza or the header it is bound to was
/// modified: *tampered*, not *wrong key*, so users are not sent looking for
/// another key.
pub fn unwrap_file_key<'s, T>(
    version: Version,
    stanzas: impl IntoIterator<Item = &'s Stanza>,
    header_hash: &[u8; 32],
    identity: &Identity,
    mut accept: impl FnMut(FileKey) -> Result<T>,
) -> Result<T> {
    let mut addressed_to_us = false;
    for stanza in stanzas {
        let Some(opened) = open_stanza(version, stanza, header_hash, identity) else {
            continue;
        };
        addressed_to_us = true;
        if let Ok(file_key) = opened
            && let Ok(value) = accept(file_key)
        {
            return Ok(value);
        }
    }
    if addressed_to_us {
        Err(Error::HeaderAuth)
    } else {
        Err(Error::NoMatchingRecipient)
    }
}

/// Wraps the file key of an already-written file for one more recipient,
/// in the stanza form of that file's version. This is how sharing adds a
/// recipient without rewriting the stored object.
pub fn add_recipient(
    header: &CoreHeader,
    file_key: &FileKey,
    recipient: &PublicIdentity,
) -> Result<Stanza> {
    wrap_for_version(header.version, file_key, &header.hash(), recipient)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn first_key(stanzas: &[Stanza], hash: &[u8; 32], id: &Identity) -> Result<FileKey> {
        unwrap_file_key(Version::V2, stanzas, hash, id, Ok)
    }

    #[test]
    fn wrap_opens_for_recipient_only_and_only_for_its_header() {
        for (alice, bob) in [
            (Identity::generate().unwrap(), Identity::generate().unwrap()),
            (
                Identity::generate_classic().unwrap(),
                Identity::generate_classic().unwrap(),
            ),
        ] {
            let key = FileKey::generate().unwrap();
            let stanza = wrap_file_key(&key, &[1; 32], alice.public()).unwrap();
            assert_eq!(
                stanza.kind(),
                if alice.public().is_hybrid() { 2 } else { 1 }
            );
            let got = first_key(std::slice::from_ref(&stanza), &[1; 32], &alice).unwrap();
            assert_eq!(got.expose(), key.expose());
            assert!(matches!(
                first_key(std::slice::from_ref(&stanza), &[1; 32], &bob),
                Err(Error::NoMatchingRecipient)
            ));
            // Same stanza presented in another file's header.
            assert!(matches!(
                first_key(std::slice::from_ref(&stanza), &[2; 32], &alice),
                Err(Error::HeaderAuth)
            ));
            // A flipped bit anywhere in the stanza body.
            let bytes = stanza.to_bytes();
            for bit in (3 * 8..bytes.len() * 8).step_by(7) {
                let mut bad = bytes.clone();
                bad[bit / 8] ^= 1 << (bit % 8);
                let bad = Stanza::from_bytes(&bad).unwrap();
                assert!(first_key(&[bad], &[1; 32], &alice).is_err(), "bit {bit}");
            }
        }
    }

    #[test]
    fn a_bogus_stanza_in_front_does_not_deny_access_and_unknown_types_are_skipped() {
        let alice = Identity::generate().unwrap();
        let key = FileKey::generate().unwrap();
        let good = wrap_file_key(&key, &[1; 32], alice.public()).unwrap();
        // Another key, wrapped to Alice with her key id: opens, but fails the
        // caller's (MAC) check; then an unknown type; then the real one.
        let bogus = wrap_file_key(&FileKey::generate().unwrap(), &[1; 32], alice.public()).unwrap();
        let unknown = Stanza::Unknown {
            kind: 0x42,
            body: vec![0; 100],
        };
        let stanzas = [bogus, unknown, good];
        let accepted = unwrap_file_key(Version::V2, &stanzas, &[1; 32], &alice, |candidate| {
            if candidate.expose() == key.expose() {
                Ok(candidate)
            } else {
                Err(Error::HeaderAuth)
            }
        })
        .unwrap();
        assert_eq!(accepted.expose(), key.expose());
    }

    #[test]
    fn a_hybrid_identity_still_opens_classic_stanzas() {
        let alice = Identity::generate().unwrap();
        let classic = PublicIdentity::from_bytes(&alice.public().to_bytes()[..64]).unwrap();
        let key = FileKey::generate().unwrap();
        let stanza = wrap_file_key(&key, &[1; 32], &classic).unwrap();
        assert_eq!(stanza.kind(), 1);
        assert_eq!(
            first_key(&[stanza], &[1; 32], &alice).unwrap().expose(),
            key.expose()
        );
    }
}
