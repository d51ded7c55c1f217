//! Identities: an Ed25519 signing key plus an X25519 decryption key.
//!
//! * Public identity string: Bech32 (BIP-173 checksum) with human-readable
//!   part `coffer` over `ed25519_public (32) || x25519_public (32)`.
//! * Fingerprint, for comparing by voice: the first 80 bits of
//!   `SHA-256("coffer/v1/fingerprint" || ed25519_public || x25519_public)` in
//!   Crockford base32, four groups of four.
//! * Key id (names a recipient in a stanza): the first 8 bytes of
//!   `SHA-256("coffer/v1/key-id" || x25519_public)`, shown as hex.
//! * Identity file: see [`Identity::to_file_string`] and docs/FORMAT.md.

use std::fmt;

use aws_lc_rs::aead::{AES_256_GCM, Aad, LessSafeKey, Nonce, UnboundKey};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD_NO_PAD as B64;
use bech32::{Bech32, Hrp};
use ed25519_dalek::{Signature, Signer as _, SigningKey, VerifyingKey};
use zeroize::{Zeroize, Zeroizing};

use crate::keys::{random_array, sha256_parts};
use crate::{Error, Result};

const PUBLIC_HRP: &str = "coffer";
const SECRET_HRP: &str = "coffersecret";
const PROTECTED_PREFIX: &str = "COFFER-PROTECTED-1 ";
const PROTECTED_AAD: &[u8] = b"coffer/v1/identity";

/// Argon2id cost for protecting identity files, tuned for a 2-core machine
/// (about half a second). Stored in the file so it can be raised later.
const ARGON2_M_KIB: u32 = 64 * 1024;
const ARGON2_T: u32 = 3;
const ARGON2_P: u32 = 1;
/// Bounds accepted when reading, so a hostile file cannot demand unbounded
/// memory or time.
const ARGON2_MAX_M_KIB: u32 = 1024 * 1024;
const ARGON2_MAX_T: u32 = 16;
const ARGON2_MAX_P: u32 = 16;

/// Length of a recipient key id.
pub const KEY_ID_LEN: usize = 8;

/// A recipient key id: names an X25519 key without revealing it.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct KeyId(pub [u8; KEY_ID_LEN]);

impl KeyId {
    /// The key id of an X25519 public key.
    pub fn of(x25519_public: &[u8; 32]) -> Self {
        let hash = sha256_parts(&[b"coffer/v1/key-id", x25519_public]);
        let mut id = [0u8; KEY_ID_LEN];
        id.copy_from_slice(&hash[..KEY_ID_LEN]);
        Self(id)
    }
}

impl fmt::Display for KeyId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.iter().try_for_each(|b| write!(f, "{b:02x}"))
    }
}

impl fmt::Debug for KeyId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "KeyId({self})")
    }
}

/// The public half of an identity: what senders encrypt to and what
/// recipients verify signatures with.
#[derive(Clone, PartialEq, Eq)]
pub struct PublicIdentity {
    signing: VerifyingKey,
    encryption: [u8; 32],
}

impl PublicIdentity {
    /// Byte length of the raw encoding.
    pub const LEN: usize = 64;

    /// Parses and validates the raw 64-byte encoding. Refuses weak Ed25519
    /// keys and X25519 points of small order (all-zero shared secrets).
    pub fn from_bytes(bytes: &[u8; Self::LEN]) -> Result<Self> {
        let mut ed = [0u8; 32];
        ed.copy_from_slice(&bytes[..32]);
        let signing = VerifyingKey::from_bytes(&ed)
            .map_err(|_| Error::InvalidPublicIdentity("signing key is not a valid point"))?;
        if signing.is_weak() {
            return Err(Error::InvalidPublicIdentity("signing key has small order"));
        }
        let mut encryption = [0u8; 32];
        encryption.copy_from_slice(&bytes[32..]);
        if !is_contributory(&encryption)? {
            return Err(Error::InvalidPublicIdentity(
                "encryption key has small order",
            ));
        }
        Ok(Self {
            signing,
            encryption,
        })
    }

    /// The raw 64-byte encoding.
    pub fn to_bytes(&self) -> [u8; Self::LEN] {
        let mut out = [0u8; Self::LEN];
        out[..32].copy_from_slice(self.signing.as_bytes());
        out[32..].copy_from_slice(&self.encryption);
        out
    }

    /// Parses the `coffer1…` string form.
    pub fn parse(text: &str) -> Result<Self> {
        let (hrp, data) = bech32::decode(text.trim())
            .map_err(|_| Error::InvalidPublicIdentity("not a valid coffer1… string"))?;
        if !hrp.as_str().eq_ignore_ascii_case(PUBLIC_HRP) {
            return Err(Error::InvalidPublicIdentity(
                "wrong prefix (expected coffer1…)",
            ));
        }
        let bytes: [u8; Self::LEN] = data
            .try_into()
            .map_err(|_| Error::InvalidPublicIdentity("wrong length"))?;
        Self::from_bytes(&bytes)
    }

    /// The Ed25519 key that verifies this identity's signatures.
    pub fn signing_key(&self) -> &VerifyingKey {
        &self.signing
    }

    /// The X25519 public key that files are wrapped to.
    pub fn encryption_key(&self) -> &[u8; 32] {
        &self.encryption
    }

    /// The id that names this identity in recipient stanzas.
    pub fn key_id(&self) -> KeyId {
        KeyId::of(&self.encryption)
    }

    /// A short fingerprint to compare out of band (`XXXX-XXXX-XXXX-XXXX`).
    pub fn fingerprint(&self) -> String {
        let hash = sha256_parts(&[
            b"coffer/v1/fingerprint",
            self.signing.as_bytes(),
            &self.encryption,
        ]);
        let text = crockford_base32(&hash[..10]);
        let groups: Vec<&str> = (0..4).map(|i| &text[i * 4..i * 4 + 4]).collect();
        groups.join("-")
    }

    /// Strict Ed25519 verification (rejects malleable and small-order forms).
    pub fn verify(&self, message: &[u8], signature: &[u8; 64]) -> Result<()> {
        self.signing
            .verify_strict(message, &Signature::from_bytes(signature))
            .map_err(|_| Error::BadSignature)
    }
}

impl fmt::Display for PublicIdentity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let hrp = Hrp::parse_unchecked(PUBLIC_HRP);
        let text = bech32::encode_lower::<Bech32>(hrp, &self.to_bytes()).map_err(|_| fmt::Error)?;
        f.write_str(&text)
    }
}

impl fmt::Debug for PublicIdentity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PublicIdentity({})", self.fingerprint())
    }
}

impl std::str::FromStr for PublicIdentity {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        Self::parse(s)
    }
}

/// A full identity: both secret keys. Zeroized on drop (dalek's and hpke's key
/// types zeroize themselves; the raw X25519 scalar is held in `Zeroizing`).
pub struct Identity {
    signing: SigningKey,
    decryption: Zeroizing<[u8; 32]>,
    public: PublicIdentity,
}

impl Identity {
    /// Generates a fresh identity from the OS CSPRNG.
    pub fn generate() -> Result<Self> {
        let seed = Zeroizing::new(random_array::<32>()?);
        let x_secret = Zeroizing::new(random_array::<32>()?);
        Self::from_secret_parts(&seed, &x_secret)
    }

    fn from_secret_parts(ed_seed: &[u8; 32], x_secret: &[u8; 32]) -> Result<Self> {
        let signing = SigningKey::from_bytes(ed_seed);
        let secret = x25519_dalek::StaticSecret::from(*x_secret);
        let x_public = x25519_dalek::PublicKey::from(&secret).to_bytes();
        let public = PublicIdentity {
            signing: signing.verifying_key(),
            encryption: x_public,
        };
        Ok(Self {
            signing,
            decryption: Zeroizing::new(*x_secret),
            public,
        })
    }

    /// The public half.
    pub fn public(&self) -> &PublicIdentity {
        &self.public
    }

    /// Signs `message` with the Ed25519 key.
    pub fn sign(&self, message: &[u8]) -> [u8; 64] {
        self.signing.sign(message).to_bytes()
    }

    /// The X25519 secret scalar, for unwrapping stanzas.
    pub(crate) fn decryption_secret(&self) -> &Zeroizing<[u8; 32]> {
        &self.decryption
    }

    fn secret_bytes(&self) -> Zeroizing<[u8; 64]> {
        let mut out = Zeroizing::new([0u8; 64]);
        out[..32].copy_from_slice(self.signing.as_bytes());
        out[32..].copy_from_slice(self.decryption.as_ref());
        out
    }

    /// An identity from 64 bytes of secret key material (Ed25519 seed, then
    /// X25519 scalar), for keys that are derived rather than generated, such
    /// as a share link's key. The material must be uniformly random.
    pub fn from_key_material(material: &Zeroizing<[u8; 64]>) -> Result<Self> {
        Self::from_secret_bytes(material.as_ref())
    }

    fn from_secret_bytes(bytes: &[u8]) -> Result<Self> {
        if bytes.len() != 64 {
            return Err(Error::InvalidIdentity("secret key has the wrong length"));
        }
        let mut seed = Zeroizing::new([0u8; 32]);
        let mut x = Zeroizing::new([0u8; 32]);
        seed.copy_from_slice(&bytes[..32]);
        x.copy_from_slice(&bytes[32..]);
        Self::from_secret_parts(&seed, &x)
    }

    /// The identity file text. With a passphrase the secret line is sealed
    /// with AES-256-GCM under an Argon2id-derived key; comment lines carry the
    /// public identity and fingerprint so they can be read without it.
    pub fn to_file_string(
        &self,
        passphrase: Option<&[u8]>,
        created: &str,
    ) -> Result<Zeroizing<String>> {
        let secret_line = Zeroizing::new(match passphrase {
            None => {
                let hrp = Hrp::parse_unchecked(SECRET_HRP);
                bech32::encode_upper::<Bech32>(hrp, self.secret_bytes().as_ref())
                    .map_err(|_| Error::Crypto("bech32 encode"))?
            }
            Some(pass) => format!("{PROTECTED_PREFIX}{}", self.seal_with_passphrase(pass)?),
        });
        Ok(Zeroizing::new(format!(
            "# coffer identity: keep this file secret\n# created: {created}\n# public identity: {}\n# fingerprint: {}\n{}\n",
            self.public,
            self.public.fingerprint(),
            secret_line.as_str()
        )))
    }

    /// Whether identity file text needs a passphrase.
    pub fn file_is_protected(text: &str) -> bool {
        secret_line(text).is_some_and(|line| line.starts_with(PROTECTED_PREFIX))
    }

    /// Parses identity file text (see [`Identity::to_file_string`]).
    pub fn from_file_string(text: &str, passphrase: Option<&[u8]>) -> Result<Self> {
        let line = secret_line(text).ok_or(Error::InvalidIdentity("no secret key line"))?;
        if let Some(sealed) = line.strip_prefix(PROTECTED_PREFIX) {
            let pass = passphrase.ok_or(Error::InvalidIdentity(
                "identity file is passphrase-protected",
            ))?;
            return Self::open_with_passphrase(sealed.trim(), pass);
        }
        let (hrp, mut data) =
            bech32::decode(line).map_err(|_| Error::InvalidIdentity("bad secret key encoding"))?;
        let result = if hrp.as_str().eq_ignore_ascii_case(SECRET_HRP) {
            Self::from_secret_bytes(&data)
        } else {
            Err(Error::InvalidIdentity("not a coffer secret key"))
        };
        data.zeroize();
        result
    }

    fn seal_with_passphrase(&self, passphrase: &[u8]) -> Result<String> {
        let salt: [u8; 16] = random_array()?;
        let nonce: [u8; 12] = random_array()?;
        let params = encode_argon2_params(ARGON2_M_KIB, ARGON2_T, ARGON2_P);
        let key = argon2_key(passphrase, &salt, ARGON2_M_KIB, ARGON2_T, ARGON2_P)?;
        let mut sealed = self.secret_bytes().to_vec();
        let aad = [PROTECTED_AAD, &params].concat();
        aes_key(&key)?
            .seal_in_place_append_tag(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(&aad),
                &mut sealed,
            )
            .map_err(|_| Error::Crypto("AES-256-GCM seal"))?;
        Ok(B64.encode([&params[..], &salt, &nonce, &sealed].concat()))
    }

    fn open_with_passphrase(sealed_b64: &str, passphrase: &[u8]) -> Result<Self> {
        let blob = B64
            .decode(sealed_b64)
            .map_err(|_| Error::InvalidIdentity("protected key is not base64"))?;
        // params (12) || salt (16) || nonce (12) || ciphertext (64) || tag (16)
        if blob.len() != 12 + 16 + 12 + 64 + 16 {
            return Err(Error::InvalidIdentity("protected key has the wrong length"));
        }
        let (params, rest) = blob.split_at(12);
        let (salt, rest) = rest.split_at(16);
        let (nonce, ciphertext) = rest.split_at(12);
        let (m, t, p) = decode_argon2_params(params)?;
        let key = argon2_key(passphrase, salt, m, t, p)?;
        let mut buf = Zeroizing::new(ciphertext.to_vec());
        let nonce: [u8; 12] = nonce.try_into().map_err(|_| Error::Crypto("nonce"))?;
        let aad = [PROTECTED_AAD, params].concat();
        let plain = aes_key(&key)?
            .open_in_place(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(&aad),
                &mut buf,
            )
            .map_err(|_| Error::WrongPassphrase)?;
        Self::from_secret_bytes(plain)
    }
}

impl fmt::Debug for Identity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Identity({}, <secret>)", self.public.fingerprint())
    }
}

fn secret_line(text: &str) -> Option<&str> {
    text.lines()
        .map(str::trim)
        .find(|line| !line.is_empty() && !line.starts_with('#'))
}

fn encode_argon2_params(m: u32, t: u32, p: u32) -> [u8; 12] {
    let mut out = [0u8; 12];
    out[..4].copy_from_slice(&m.to_be_bytes());
    out[4..8].copy_from_slice(&t.to_be_bytes());
    out[8..].copy_from_slice(&p.to_be_bytes());
    out
}

fn decode_argon2_params(bytes: &[u8]) -> Result<(u32, u32, u32)> {
    let word = |i: usize| u32::from_be_bytes([bytes[i], bytes[i + 1], bytes[i + 2], bytes[i + 3]]);
    let (m, t, p) = (word(0), word(4), word(8));
    if m > ARGON2_MAX_M_KIB || t > ARGON2_MAX_T || p > ARGON2_MAX_P || t == 0 || p == 0 {
        return Err(Error::InvalidIdentity("Argon2id parameters out of bounds"));
    }
    Ok((m, t, p))
}

/// Argon2id from the `argon2` crate (RustCrypto); we only pick parameters.
pub(crate) fn argon2_key(
    passphrase: &[u8],
    salt: &[u8],
    m_kib: u32,
    t: u32,
    p: u32,
) -> Result<Zeroizing<[u8; 32]>> {
    let params = argon2::Params::new(m_kib, t, p, Some(32))
        .map_err(|_| Error::InvalidIdentity("Argon2id parameters out of bounds"))?;
    let argon = argon2::Argon2::new(argon2::Algorithm::Argon2id, argon2::Version::V0x13, params);
    let mut key = Zeroizing::new([0u8; 32]);
    argon
        .hash_password_into(passphrase, salt, key.as_mut())
        .map_err(|_| Error::Crypto("Argon2id"))?;
    Ok(key)
}

fn aes_key(key: &Zeroizing<[u8; 32]>) -> Result<LessSafeKey> {
    UnboundKey::new(&AES_256_GCM, key.as_ref())
        .map(LessSafeKey::new)
        .map_err(|_| Error::Crypto("AES key"))
}

/// True unless `point` is of small order: a clamped scalar (a multiple of the
/// cofactor) times a small-order point is the all-zero point.
fn is_contributory(point: &[u8; 32]) -> Result<bool> {
    let probe = x25519_dalek::StaticSecret::from(random_array::<32>()?);
    Ok(probe
        .diffie_hellman(&x25519_dalek::PublicKey::from(*point))
        .was_contributory())
}

fn crockford_base32(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 32] = b"0123456789ABCDEFGHJKMNPQRSTVWXYZ";
    let mut out = String::new();
    let (mut acc, mut bits) = (0u32, 0u32);
    for &byte in bytes {
        acc = (acc << 8) | u32::from(byte);
        bits += 8;
        while bits >= 5 {
            bits -= 5;
            out.push(char::from(ALPHABET[((acc >> bits) & 31) as usize]));
        }
    }
    if bits > 0 {
        out.push(char::from(ALPHABET[((acc << (5 - bits)) & 31) as usize]));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn public_identity_round_trips_through_its_string() {
        let id = Identity::generate().unwrap();
        let text = id.public().to_string();
        assert!(text.starts_with("coffer1"));
        assert_eq!(PublicIdentity::parse(&text).unwrap(), *id.public());
    }

    #[test]
    fn typo_in_public_identity_is_caught_by_checksum() {
        let text = Identity::generate().unwrap().public().to_string();
        let mut chars: Vec<char> = text.chars().collect();
        let i = chars.len() - 10;
        chars[i] = if chars[i] == 'q' { 'p' } else { 'q' };
        let typo: String = chars.into_iter().collect();
        assert!(PublicIdentity::parse(&typo).is_err());
    }

    #[test]
    fn small_order_and_zero_encryption_keys_are_refused() {
        let id = Identity::generate().unwrap();
        let mut bytes = id.public().to_bytes();
        bytes[32..].copy_from_slice(&[0u8; 32]);
        assert!(PublicIdentity::from_bytes(&bytes).is_err());
        // The point of order 8 with u = 1 is also small order.
        let mut one = [0u8; 32];
        one[0] = 1;
        bytes[32..].copy_from_slice(&one);
        assert!(PublicIdentity::from_bytes(&bytes).is_err());
    }

    #[test]
    fn identity_file_round_trips_plain_and_protected() {
        let id = Identity::generate().unwrap();
        let plain = id.to_file_string(None, "now").unwrap();
        assert!(!Identity::file_is_protected(&plain));
        let back = Identity::from_file_string(&plain, None).unwrap();
        assert_eq!(back.public(), id.public());

        let sealed = id.to_file_string(Some(b"correct horse"), "now").unwrap();
        assert!(Identity::file_is_protected(&sealed));
        assert!(!sealed.contains(&plain.lines().nth(4).unwrap()[..20]));
        let back = Identity::from_file_string(&sealed, Some(b"correct horse")).unwrap();
        assert_eq!(back.public(), id.public());
        assert!(matches!(
            Identity::from_file_string(&sealed, Some(b"wrong")),
            Err(Error::WrongPassphrase)
        ));
        assert!(Identity::from_file_string(&sealed, None).is_err());
    }

    #[test]
    fn hostile_argon2_parameters_are_refused_before_hashing() {
        let huge = encode_argon2_params(u32::MAX, 1, 1);
        assert!(decode_argon2_params(&huge).is_err());
        let zero_t = encode_argon2_params(1024, 0, 1);
        assert!(decode_argon2_params(&zero_t).is_err());
    }

    #[test]
    fn fingerprint_shape_and_sensitivity_to_both_keys() {
        let id = Identity::generate().unwrap();
        let fp = id.public().fingerprint();
        assert_eq!(fp.len(), 19);
        assert_eq!(fp.matches('-').count(), 3);
        let other = Identity::generate().unwrap();
        let mut mixed = id.public().to_bytes();
        mixed[32..].copy_from_slice(other.public().encryption_key());
        let mixed = PublicIdentity::from_bytes(&mixed).unwrap();
        assert_ne!(mixed.fingerprint(), fp);
    }

    #[test]
    fn signatures_verify_strictly() {
        let id = Identity::generate().unwrap();
        let sig = id.sign(b"message");
        assert!(id.public().verify(b"message", &sig).is_ok());
        assert!(id.public().verify(b"messagE", &sig).is_err());
    }
}
