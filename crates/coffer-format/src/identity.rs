//! Identities: an Ed25519 signing key, an X25519 decryption key and, for
//! **hybrid** identities (the default for new ones), an X-Wing key
//! (ML-KEM-768 + X25519) that post-quantum stanzas are wrapped to.
//!
//! * Public identity: strict Bech32 (the `text` module) with human-readable
//!   part `coffer` over `ed25519 (32) || x25519 (32)` (classic, 64 bytes,
//!   116 characters) or `ed25519 || x25519 || x-wing (1216)` (hybrid, 1 280
//!   bytes, 2 061 characters). Both are one line.
//! * Every key is checked on parse: the Ed25519 key decodes **canonically**
//!   (RFC 8032: `y < p`, and re-encoding gives the same bytes) and has no
//!   small order; the X25519 key is canonical (`u < 2^255 − 19`) and of
//!   large order; the X-Wing key passes ML-KEM's encapsulation-key check.
//!   Key ids and fingerprints are defined over these canonical bytes, so a
//!   key has exactly one id and one fingerprint.
//! * [`Sender`]: what a file header records about its sender, enough to
//!   verify the signature and show the fingerprint.
//! * Identity file: see [`Identity::to_file_string`] and docs/FORMAT.md §9.

use std::fmt;

use aws_lc_rs::aead::{AES_256_GCM, Aad, LessSafeKey, Nonce, UnboundKey};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD_NO_PAD as B64;
use ed25519_dalek::{Signature, Signer as _, SigningKey, VerifyingKey};
use hpke::{Deserializable, Serializable};
use zeroize::Zeroizing;

use crate::keys::{random_array, sha256_parts};
use crate::text;
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
/// memory or time. Checked before any hashing.
const ARGON2_MIN_M_KIB: u32 = 8;
const ARGON2_MAX_M_KIB: u32 = 1024 * 1024;
const ARGON2_MAX_T: u32 = 16;
const ARGON2_MAX_P: u32 = 16;

/// Length of a recipient key id.
pub const KEY_ID_LEN: usize = 8;
/// Length of an X-Wing public key.
pub const XWING_PUBLIC_LEN: usize = 1216;
const CLASSIC_SECRET_LEN: usize = 64;
const HYBRID_SECRET_LEN: usize = 96;

type XWing = hpke::kem::XWing;

/// A recipient key id: names a recipient key without revealing it.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct KeyId(pub [u8; KEY_ID_LEN]);

impl KeyId {
    /// The key id of an X25519 public key (stanza type 1; the same in
    /// versions 1 and 2).
    pub fn of(x25519_public: &[u8; 32]) -> Self {
        Self::labelled(b"coffer/v1/key-id", x25519_public)
    }

    /// The key id of an X-Wing public key (stanza type 2).
    pub fn of_xwing(xwing_public: &[u8; XWING_PUBLIC_LEN]) -> Self {
        Self::labelled(b"coffer/v2/key-id/x-wing", xwing_public)
    }

    fn labelled(label: &[u8], key: &[u8]) -> Self {
        let hash = sha256_parts(&[label, key]);
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

/// A validated X-Wing public key.
#[derive(Clone, PartialEq, Eq)]
pub(crate) struct XWingPublic(Box<[u8; XWING_PUBLIC_LEN]>);

impl XWingPublic {
    fn parse(bytes: &[u8]) -> Result<Self> {
        <XWing as hpke::Kem>::PublicKey::from_bytes(bytes)
            .map_err(|_| Error::InvalidPublicIdentity("X-Wing key is not valid"))?;
        let mut key = Box::new([0u8; XWING_PUBLIC_LEN]);
        key.copy_from_slice(bytes);
        Ok(Self(key))
    }

    pub(crate) fn bytes(&self) -> &[u8; XWING_PUBLIC_LEN] {
        &self.0
    }

    /// `SHA-256("coffer/v2/x-wing-key" || key)`: stands for the key in
    /// headers and fingerprints.
    fn digest(&self) -> [u8; 32] {
        sha256_parts(&[b"coffer/v2/x-wing-key", &self.0[..]])
    }
}

/// The public half of an identity: what senders encrypt to and what
/// recipients verify signatures with.
#[derive(Clone, PartialEq, Eq)]
pub struct PublicIdentity {
    signing: VerifyingKey,
    encryption: [u8; 32],
    xwing: Option<XWingPublic>,
}

impl PublicIdentity {
    /// Byte length of a classic identity's raw encoding.
    pub const CLASSIC_LEN: usize = 64;
    /// Byte length of a hybrid identity's raw encoding.
    pub const HYBRID_LEN: usize = 64 + XWING_PUBLIC_LEN;

    /// Parses and validates the raw encoding (64 or 1 280 bytes).
    pub fn from_bytes(bytes: &[u8]) -> Result<Self> {
        let xwing = match bytes.len() {
            Self::CLASSIC_LEN => None,
            Self::HYBRID_LEN => Some(XWingPublic::parse(&bytes[64..])?),
            _ => return Err(Error::InvalidPublicIdentity("wrong length")),
        };
        let mut ed = [0u8; 32];
        ed.copy_from_slice(&bytes[..32]);
        let mut x = [0u8; 32];
        x.copy_from_slice(&bytes[32..64]);
        Ok(Self {
            signing: strict_ed25519(&ed)?,
            encryption: checked_x25519(&x)?,
            xwing,
        })
    }

    /// The raw encoding.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(Self::HYBRID_LEN);
        out.extend_from_slice(self.signing.as_bytes());
        out.extend_from_slice(&self.encryption);
        if let Some(xwing) = &self.xwing {
            out.extend_from_slice(xwing.bytes());
        }
        out
    }

    /// Parses the `coffer1…` string form (surrounding whitespace allowed).
    pub fn parse(text: &str) -> Result<Self> {
        let bytes = text::decode(text.trim(), PUBLIC_HRP).map_err(Error::InvalidPublicIdentity)?;
        Self::from_bytes(&bytes)
    }

    /// The Ed25519 key that verifies this identity's signatures.
    pub fn signing_key(&self) -> &VerifyingKey {
        &self.signing
    }

    /// The X25519 public key (classic stanzas).
    pub fn encryption_key(&self) -> &[u8; 32] {
        &self.encryption
    }

    /// The X-Wing public key of a hybrid identity.
    pub fn xwing_key(&self) -> Option<&[u8; XWING_PUBLIC_LEN]> {
        self.xwing.as_ref().map(XWingPublic::bytes)
    }

    /// Whether files to this identity are wrapped post-quantum (X-Wing).
    pub fn is_hybrid(&self) -> bool {
        self.xwing.is_some()
    }

    /// The id of the key a sender wraps to: the X-Wing key of a hybrid
    /// identity, the X25519 key of a classic one.
    pub fn key_id(&self) -> KeyId {
        match &self.xwing {
            Some(xwing) => KeyId::of_xwing(xwing.bytes()),
            None => KeyId::of(&self.encryption),
        }
    }

    /// What a file header records about this identity as a sender.
    pub fn sender(&self) -> Sender {
        Sender {
            signing: self.signing,
            encryption: self.encryption,
            pq_digest: self.xwing.as_ref().map(XWingPublic::digest),
        }
    }

    /// A short fingerprint to compare out of band (`XXXX-XXXX-XXXX-XXXX`).
    pub fn fingerprint(&self) -> String {
        self.sender().fingerprint()
    }

    /// Strict Ed25519 verification (rejects malleable and small-order forms).
    pub fn verify(&self, message: &[u8], signature: &[u8; 64]) -> Result<()> {
        verify_strict(&self.signing, message, signature)
    }
}

impl fmt::Display for PublicIdentity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let text = text::encode_lower(PUBLIC_HRP, &self.to_bytes()).map_err(|_| fmt::Error)?;
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

/// A sender as a file header records it: the Ed25519 key that signs, the
/// X25519 key, and (hybrid identities) a digest of the X-Wing key. Enough to
/// verify the signature and compute the sender's fingerprint, so a reader
/// can show who signed without a directory of keys.
#[derive(Clone, PartialEq, Eq)]
pub struct Sender {
    signing: VerifyingKey,
    encryption: [u8; 32],
    pq_digest: Option<[u8; 32]>,
}

impl Sender {
    /// Length of the version 2 header field.
    pub const LEN: usize = 96;

    /// The version 1 header field (`ed25519 || x25519`).
    pub(crate) fn from_v1_bytes(bytes: &[u8; 64]) -> Result<Self> {
        let identity = PublicIdentity::from_bytes(bytes)?;
        Ok(identity.sender())
    }

    /// The version 2 header field (`ed25519 || x25519 || pq`, `pq` all
    /// zero for a classic identity).
    pub(crate) fn from_v2_bytes(bytes: &[u8; Self::LEN]) -> Result<Self> {
        let mut ed = [0u8; 32];
        ed.copy_from_slice(&bytes[..32]);
        let mut x = [0u8; 32];
        x.copy_from_slice(&bytes[32..64]);
        let mut pq = [0u8; 32];
        pq.copy_from_slice(&bytes[64..]);
        Ok(Self {
            signing: strict_ed25519(&ed)?,
            encryption: checked_x25519(&x)?,
            pq_digest: (pq != [0u8; 32]).then_some(pq),
        })
    }

    pub(crate) fn to_v1_bytes(&self) -> [u8; 64] {
        let mut out = [0u8; 64];
        out[..32].copy_from_slice(self.signing.as_bytes());
        out[32..].copy_from_slice(&self.encryption);
        out
    }

    pub(crate) fn to_v2_bytes(&self) -> [u8; Self::LEN] {
        let mut out = [0u8; Self::LEN];
        out[..64].copy_from_slice(&self.to_v1_bytes());
        if let Some(pq) = &self.pq_digest {
            out[64..].copy_from_slice(pq);
        }
        out
    }

    /// The Ed25519 key that verifies the file's signature.
    pub fn signing_key(&self) -> &VerifyingKey {
        &self.signing
    }

    /// Whether the sender's identity is hybrid.
    pub fn is_hybrid(&self) -> bool {
        self.pq_digest.is_some()
    }

    /// The sender's fingerprint: the first 80 bits of
    /// `SHA-256("coffer/v1/fingerprint" || ed25519 || x25519)` (classic) or
    /// `SHA-256("coffer/v2/fingerprint" || ed25519 || x25519 || pq)` (hybrid),
    /// in Crockford base32, four groups of four.
    pub fn fingerprint(&self) -> String {
        let hash = match &self.pq_digest {
            None => sha256_parts(&[
                b"coffer/v1/fingerprint",
                self.signing.as_bytes(),
                &self.encryption,
            ]),
            Some(pq) => sha256_parts(&[
                b"coffer/v2/fingerprint",
                self.signing.as_bytes(),
                &self.encryption,
                pq,
            ]),
        };
        let text = text::crockford_base32(&hash[..10]);
        let groups: Vec<&str> = (0..4).map(|i| &text[i * 4..i * 4 + 4]).collect();
        groups.join("-")
    }

    /// Whether `identity` is this sender (the same three keys).
    pub fn is(&self, identity: &PublicIdentity) -> bool {
        *self == identity.sender()
    }

    /// The full public identity, for a classic sender (a hybrid sender's
    /// X-Wing key is not in the header).
    pub fn classic_identity(&self) -> Option<PublicIdentity> {
        if self.pq_digest.is_some() {
            return None;
        }
        PublicIdentity::from_bytes(&self.to_v1_bytes()).ok()
    }

    /// Strict Ed25519 verification.
    pub fn verify(&self, message: &[u8], signature: &[u8; 64]) -> Result<()> {
        verify_strict(&self.signing, message, signature)
    }
}

impl fmt::Debug for Sender {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Sender({})", self.fingerprint())
    }
}

impl fmt::Display for Sender {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.fingerprint())
    }
}

fn verify_strict(key: &VerifyingKey, message: &[u8], signature: &[u8; 64]) -> Result<()> {
    key.verify_strict(message, &Signature::from_bytes(signature))
        .map_err(|_| Error::BadSignature)
}

/// RFC 8032 decoding with the strict rules of docs/FORMAT.md §2: the
/// encoding must be canonical (it re-encodes to the same bytes, which
/// refuses `y >= p` and a negative zero `x`) and the point of large order.
fn strict_ed25519(bytes: &[u8; 32]) -> Result<VerifyingKey> {
    let key = VerifyingKey::from_bytes(bytes)
        .map_err(|_| Error::InvalidPublicIdentity("signing key is not a valid point"))?;
    if key.to_edwards().compress().to_bytes() != *bytes {
        return Err(Error::InvalidPublicIdentity(
            "signing key is not canonically encoded",
        ));
    }
    if key.is_weak() {
        return Err(Error::InvalidPublicIdentity("signing key has small order"));
    }
    Ok(key)
}

/// `2^255 − 19`, little-endian.
const FIELD_PRIME_LE: [u8; 32] = {
    let mut p = [0xff; 32];
    p[0] = 0xed;
    p[31] = 0x7f;
    p
};

/// Refuses X25519 public keys that are not canonical (`u >= 2^255 − 19`,
/// which includes a set top bit: such a key is the same point as a smaller
/// one, so its key id would not be its owner's) or of small order.
fn checked_x25519(point: &[u8; 32]) -> Result<[u8; 32]> {
    let below_p = point
        .iter()
        .rev()
        .zip(FIELD_PRIME_LE.iter().rev())
        .find(|(a, b)| a != b)
        .is_some_and(|(a, b)| a < b);
    if !below_p {
        return Err(Error::InvalidPublicIdentity(
            "encryption key is not canonically encoded",
        ));
    }
    if !is_contributory(point)? {
        return Err(Error::InvalidPublicIdentity(
            "encryption key has small order",
        ));
    }
    Ok(*point)
}

/// True unless `point` is of small order: a clamped scalar (a multiple of the
/// cofactor) times a small-order point is the all-zero point.
fn is_contributory(point: &[u8; 32]) -> Result<bool> {
    let probe = x25519_dalek::StaticSecret::from(random_array::<32>()?);
    Ok(probe
        .diffie_hellman(&x25519_dalek::PublicKey::from(*point))
        .was_contributory())
}

/// A full identity: the secret keys. Zeroized on drop (dalek's key types
/// zeroize themselves; raw scalars and seeds are held in `Zeroizing`).
pub struct Identity {
    signing: SigningKey,
    decryption: Zeroizing<[u8; 32]>,
    xwing_seed: Option<Zeroizing<[u8; 32]>>,
    public: PublicIdentity,
}

impl Identity {
    /// Generates a fresh **hybrid** identity from the OS CSPRNG.
    pub fn generate() -> Result<Self> {
        let mut secret = Zeroizing::new([0u8; HYBRID_SECRET_LEN]);
        getrandom::fill(secret.as_mut()).map_err(|_| Error::Rng)?;
        Self::from_secret_bytes(secret.as_ref())
    }

    /// Generates a fresh classic identity (X25519 only, no post-quantum key).
    pub fn generate_classic() -> Result<Self> {
        let material = Zeroizing::new(random_array::<CLASSIC_SECRET_LEN>()?);
        Self::from_key_material(&material)
    }

    /// The public half.
    pub fn public(&self) -> &PublicIdentity {
        &self.public
    }

    /// Signs `message` with the Ed25519 key.
    pub fn sign(&self, message: &[u8]) -> [u8; 64] {
        self.signing.sign(message).to_bytes()
    }

    /// The X25519 secret scalar, for unwrapping classic stanzas.
    pub(crate) fn decryption_secret(&self) -> &Zeroizing<[u8; 32]> {
        &self.decryption
    }

    /// The X-Wing secret key (its 32-byte seed), for hybrid stanzas.
    pub(crate) fn xwing_secret(&self) -> Option<&Zeroizing<[u8; 32]>> {
        self.xwing_seed.as_ref()
    }

    fn secret_bytes(&self) -> Zeroizing<Vec<u8>> {
        let mut out = Zeroizing::new(Vec::with_capacity(HYBRID_SECRET_LEN));
        out.extend_from_slice(self.signing.as_bytes());
        out.extend_from_slice(self.decryption.as_ref());
        if let Some(seed) = &self.xwing_seed {
            out.extend_from_slice(seed.as_ref());
        }
        out
    }

    /// A classic identity from 64 bytes of secret key material (Ed25519
    /// seed, then X25519 scalar), for keys that are derived rather than
    /// generated, such as a share link's key. The material must be
    /// uniformly random.
    pub fn from_key_material(material: &Zeroizing<[u8; 64]>) -> Result<Self> {
        Self::from_secret_bytes(material.as_ref())
    }

    /// `ed25519_seed (32) || x25519_secret (32) [|| x-wing seed (32)]`.
    fn from_secret_bytes(bytes: &[u8]) -> Result<Self> {
        if bytes.len() != CLASSIC_SECRET_LEN && bytes.len() != HYBRID_SECRET_LEN {
            return Err(Error::InvalidIdentity("secret key has the wrong length"));
        }
        let mut seed = Zeroizing::new([0u8; 32]);
        seed.copy_from_slice(&bytes[..32]);
        let mut x_secret = Zeroizing::new([0u8; 32]);
        x_secret.copy_from_slice(&bytes[32..64]);
        let signing = SigningKey::from_bytes(&seed);
        let x_public =
            x25519_dalek::PublicKey::from(&x25519_dalek::StaticSecret::from(*x_secret)).to_bytes();
        let (xwing_seed, xwing) = if bytes.len() == HYBRID_SECRET_LEN {
            let mut xseed = Zeroizing::new([0u8; 32]);
            xseed.copy_from_slice(&bytes[64..]);
            let secret = <XWing as hpke::Kem>::PrivateKey::from_bytes(xseed.as_ref())
                .map_err(|_| Error::InvalidIdentity("X-Wing secret key"))?;
            let public = <XWing as hpke::Kem>::sk_to_pk(&secret).to_bytes();
            (Some(xseed), Some(XWingPublic::parse(&public)?))
        } else {
            (None, None)
        };
        let public = PublicIdentity {
            signing: signing.verifying_key(),
            encryption: x_public,
            xwing,
        };
        Ok(Self {
            signing,
            decryption: x_secret,
            xwing_seed,
            public,
        })
    }

    /// The identity file text. With a passphrase the secret line is sealed
    /// with AES-256-GCM under an Argon2id-derived key; comment lines carry
    /// the public identity and fingerprint so they can be read without it.
    pub fn to_file_string(
        &self,
        passphrase: Option<&[u8]>,
        created: &str,
    ) -> Result<Zeroizing<String>> {
        let secret_line = Zeroizing::new(match passphrase {
            None => text::encode_upper(SECRET_HRP, &self.secret_bytes()).map_err(Error::Crypto)?,
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
        secret_line(text).is_ok_and(|line| line.starts_with(PROTECTED_PREFIX))
    }

    /// The public identity that an identity file's comment announces
    /// (`# public identity: coffer1…`), read without the passphrase. It is
    /// the writer's claim; [`Identity::from_file_string`] is the proof.
    pub fn announced_public(text: &str) -> Option<PublicIdentity> {
        lines(text)
            .filter_map(|line| line.strip_prefix('#'))
            .filter_map(|comment| comment.trim().strip_prefix("public identity:"))
            .find_map(|key| PublicIdentity::parse(key).ok())
    }

    /// Parses identity file text (docs/FORMAT.md §9.3). The passphrase is
    /// used as the exact bytes given (no normalisation, no trimming).
    pub fn from_file_string(text: &str, passphrase: Option<&[u8]>) -> Result<Self> {
        let line = secret_line(text)?;
        if let Some(sealed) = line.strip_prefix(PROTECTED_PREFIX) {
            let pass = passphrase.ok_or(Error::InvalidIdentity(
                "identity file is passphrase-protected",
            ))?;
            return Self::open_with_passphrase(sealed, pass);
        }
        let data = Zeroizing::new(
            text::decode(line, SECRET_HRP)
                .map_err(|_| Error::InvalidIdentity("bad secret key encoding"))?,
        );
        Self::from_secret_bytes(&data)
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
        // params (12) || salt (16) || nonce (12) || ciphertext (64 or 96) || tag (16)
        let fixed = 12 + 16 + 12 + 16;
        if blob.len() != fixed + CLASSIC_SECRET_LEN && blob.len() != fixed + HYBRID_SECRET_LEN {
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

/// The lines of an identity file: a leading byte-order mark dropped, split
/// at LF, a CR before the LF dropped, spaces and tabs trimmed at both ends.
fn lines(text: &str) -> impl Iterator<Item = &str> {
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    text.split('\n').map(|line| {
        line.strip_suffix('\r')
            .unwrap_or(line)
            .trim_matches([' ', '\t'])
    })
}

/// The one secret line: the only line that is neither blank nor a comment.
fn secret_line(text: &str) -> Result<&str> {
    let mut secrets = lines(text).filter(|line| !line.is_empty() && !line.starts_with('#'));
    let line = secrets
        .next()
        .ok_or(Error::InvalidIdentity("no secret key line"))?;
    if secrets.next().is_some() {
        return Err(Error::InvalidIdentity(
            "more than one line that is not a comment",
        ));
    }
    Ok(line)
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
    let in_bounds = (1..=ARGON2_MAX_T).contains(&t)
        && (1..=ARGON2_MAX_P).contains(&p)
        && (ARGON2_MIN_M_KIB.max(8 * p)..=ARGON2_MAX_M_KIB).contains(&m);
    if !in_bounds {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn public_identities_round_trip_through_their_strings() {
        for id in [
            Identity::generate().unwrap(),
            Identity::generate_classic().unwrap(),
        ] {
            let text = id.public().to_string();
            assert!(text.starts_with("coffer1"));
            assert_eq!(text.len(), if id.public().is_hybrid() { 2061 } else { 116 });
            assert_eq!(PublicIdentity::parse(&text).unwrap(), *id.public());
            assert!(id.public().sender().is(id.public()));
        }
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
    fn small_order_non_canonical_and_zero_encryption_keys_are_refused() {
        let id = Identity::generate_classic().unwrap();
        let good = id.public().to_bytes();
        let with_x = |x: [u8; 32]| {
            let mut bytes = good.clone();
            bytes[32..64].copy_from_slice(&x);
            PublicIdentity::from_bytes(&bytes)
        };
        assert!(with_x([0u8; 32]).is_err());
        let mut one = [0u8; 32];
        one[0] = 1;
        assert!(with_x(one).is_err());
        // The same point as the real key, with the (ignored) top bit set:
        // a different key id for the same key, so refused.
        let mut high = *id.public().encryption_key();
        high[31] |= 0x80;
        assert!(with_x(high).is_err());
        // u = p + 9 (non-canonical 9).
        let mut p_plus_9 = FIELD_PRIME_LE;
        p_plus_9[0] += 9;
        assert!(with_x(p_plus_9).is_err());
        assert!(with_x(*id.public().encryption_key()).is_ok());
    }

    #[test]
    fn an_x_wing_key_outside_the_ml_kem_modulus_is_refused() {
        let id = Identity::generate().unwrap();
        let mut bytes = id.public().to_bytes();
        bytes[64..64 + 3].copy_from_slice(&[0xff, 0xff, 0xff]);
        assert!(PublicIdentity::from_bytes(&bytes).is_err());
    }

    #[test]
    fn non_canonical_ed25519_encodings_are_refused() {
        let id = Identity::generate_classic().unwrap();
        let mut bytes = id.public().to_bytes();
        // y = p + 3 (>= p): decompresses (dalek reduces) but is not canonical.
        let mut y = FIELD_PRIME_LE;
        y[0] = 0xf0;
        bytes[..32].copy_from_slice(&y);
        assert!(PublicIdentity::from_bytes(&bytes).is_err());
        // The sign bit flipped on a point with x = 0 (y = 1, "negative zero").
        let mut neg_zero = [0u8; 32];
        neg_zero[0] = 1;
        neg_zero[31] = 0x80;
        bytes[..32].copy_from_slice(&neg_zero);
        assert!(PublicIdentity::from_bytes(&bytes).is_err());
    }

    #[test]
    fn identity_file_round_trips_plain_and_protected_classic_and_hybrid() {
        for id in [
            Identity::generate().unwrap(),
            Identity::generate_classic().unwrap(),
        ] {
            let plain = id.to_file_string(None, "now").unwrap();
            assert!(!Identity::file_is_protected(&plain));
            let back = Identity::from_file_string(&plain, None).unwrap();
            assert_eq!(back.public(), id.public());
            assert_eq!(
                Identity::announced_public(&plain).as_ref(),
                Some(id.public())
            );

            let sealed = id.to_file_string(Some(b"correct horse"), "now").unwrap();
            assert!(Identity::file_is_protected(&sealed));
            let back = Identity::from_file_string(&sealed, Some(b"correct horse")).unwrap();
            assert_eq!(back.public(), id.public());
            assert!(matches!(
                Identity::from_file_string(&sealed, Some(b"wrong")),
                Err(Error::WrongPassphrase)
            ));
            assert!(Identity::from_file_string(&sealed, None).is_err());
        }
    }

    #[test]
    fn identity_file_whitespace_rules() {
        let id = Identity::generate_classic().unwrap();
        let text = id.to_file_string(None, "now").unwrap();
        let crlf = format!("\u{feff}{}", text.replace('\n', "\r\n"));
        assert_eq!(
            Identity::from_file_string(&crlf, None).unwrap().public(),
            id.public()
        );
        let indented = text
            .replace("COFFERSECRET1", "\t  COFFERSECRET1")
            .replace('\n', "  \n\n");
        assert_eq!(
            Identity::from_file_string(&indented, None)
                .unwrap()
                .public(),
            id.public()
        );
        let two = format!("{}{}", text.as_str(), text.lines().last().unwrap());
        assert!(Identity::from_file_string(&two, None).is_err());
        // Bech32m or a lower-case secret with the wrong prefix is refused.
        assert!(Identity::from_file_string("coffer1qqqq\n", None).is_err());
    }

    #[test]
    fn hostile_argon2_parameters_are_refused_before_hashing() {
        for (m, t, p) in [
            (u32::MAX, 1, 1),
            (1024, 0, 1),
            (1024, 1, 0),
            (1024, 17, 1),
            (4, 1, 1),
            (16, 1, 4),
        ] {
            assert!(
                decode_argon2_params(&encode_argon2_params(m, t, p)).is_err(),
                "{m} {t} {p}"
            );
        }
        assert!(decode_argon2_params(&encode_argon2_params(65536, 3, 1)).is_ok());
    }

    #[test]
    fn fingerprints_differ_between_classic_and_hybrid_and_cover_every_key() {
        let id = Identity::generate().unwrap();
        let fp = id.public().fingerprint();
        assert_eq!(fp.len(), 19);
        assert_eq!(fp.matches('-').count(), 3);
        let classic = PublicIdentity::from_bytes(&id.public().to_bytes()[..64]).unwrap();
        assert_ne!(classic.fingerprint(), fp);
        let other = Identity::generate().unwrap();
        let mut mixed = id.public().to_bytes();
        mixed[64..].copy_from_slice(other.public().xwing_key().unwrap());
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
