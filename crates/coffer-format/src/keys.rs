//! The file key and everything derived from it.
//!
//! ```text
//! PRK          = HKDF-Extract(salt, file_key)                 (HKDF-SHA-256)
//! payload_key  = HKDF-Expand(PRK, "coffer/vN/payload", 32)
//! metadata_key = HKDF-Expand(PRK, "coffer/vN/metadata", 32)
//! header_key   = HKDF-Expand(PRK, "coffer/vN/header-mac", 32)
//! trailer_key  = HKDF-Expand(PRK, "coffer/v1/trailer", 32)   (version 1 only)
//! ```
//!
//! `N` is the file's version, so the two versions never share a key. Every
//! derived key has exactly one use, so `metadata_key` (and version 1's
//! `trailer_key`) each seal a single message with the all-zero nonce and
//! `payload_key` is driven by the STREAM counter. Fresh randomness in both
//! `file_key` and `salt` makes every derived key unique to one file.

use aws_lc_rs::{digest, hkdf, hmac};
use zeroize::Zeroizing;

use crate::{Error, Result};

/// Length of a file key in bytes.
pub const FILE_KEY_LEN: usize = 32;

use crate::header::Version;

/// (payload, metadata, header MAC) labels of each version.
fn labels(version: Version) -> [&'static [u8]; 3] {
    match version {
        Version::V1 => [
            b"coffer/v1/payload",
            b"coffer/v1/metadata",
            b"coffer/v1/header-mac",
        ],
        Version::V2 => [
            b"coffer/v2/payload",
            b"coffer/v2/metadata",
            b"coffer/v2/header-mac",
        ],
    }
}
const LABEL_TRAILER_V1: &[u8] = b"coffer/v1/trailer";

/// Fills a fixed-size array from the operating system's CSPRNG.
pub(crate) fn random_array<const N: usize>() -> Result<[u8; N]> {
    let mut bytes = [0u8; N];
    getrandom::fill(&mut bytes).map_err(|_| Error::Rng)?;
    Ok(bytes)
}

/// SHA-256 of `data`.
pub(crate) fn sha256(data: &[u8]) -> [u8; 32] {
    let mut out = [0u8; 32];
    out.copy_from_slice(digest::digest(&digest::SHA256, data).as_ref());
    out
}

/// SHA-256 over the concatenation of `parts`.
pub(crate) fn sha256_parts(parts: &[&[u8]]) -> [u8; 32] {
    let mut ctx = digest::Context::new(&digest::SHA256);
    for part in parts {
        ctx.update(part);
    }
    let mut out = [0u8; 32];
    out.copy_from_slice(ctx.finish().as_ref());
    out
}

/// The random 256-bit key of one file. Never stored in clear: it travels only
/// inside recipient stanzas. Zeroized on drop.
#[derive(Clone)]
pub struct FileKey(Zeroizing<[u8; FILE_KEY_LEN]>);

impl FileKey {
    /// A fresh random file key.
    pub fn generate() -> Result<Self> {
        Ok(Self(Zeroizing::new(random_array()?)))
    }

    /// Wraps raw key bytes (as recovered from a stanza).
    pub fn from_bytes(bytes: [u8; FILE_KEY_LEN]) -> Self {
        Self(Zeroizing::new(bytes))
    }

    /// The raw key bytes; handle with care.
    pub fn expose(&self) -> &[u8; FILE_KEY_LEN] {
        &self.0
    }
}

impl std::fmt::Debug for FileKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("FileKey(<redacted>)")
    }
}

/// The single-purpose keys of one file.
pub(crate) struct DerivedKeys {
    pub payload: Zeroizing<[u8; 32]>,
    pub metadata: Zeroizing<[u8; 32]>,
    /// Version 1 only (version 2's trailer is a signature in clear).
    pub trailer: Option<Zeroizing<[u8; 32]>>,
    header_mac: hmac::Key,
}

impl DerivedKeys {
    pub fn derive(version: Version, file_key: &FileKey, salt: &[u8; 32]) -> Result<Self> {
        let prk = hkdf::Salt::new(hkdf::HKDF_SHA256, salt).extract(file_key.expose());
        let expand = |label: &[u8]| -> Result<Zeroizing<[u8; 32]>> {
            let mut out = Zeroizing::new([0u8; 32]);
            prk.expand(&[label], hkdf::HKDF_SHA256)
                .and_then(|okm| okm.fill(out.as_mut()))
                .map_err(|_| Error::Crypto("HKDF expand"))?;
            Ok(out)
        };
        let [payload, metadata, header] = labels(version);
        let header_mac_key = expand(header)?;
        Ok(Self {
            payload: expand(payload)?,
            metadata: expand(metadata)?,
            trailer: match version {
                Version::V1 => Some(expand(LABEL_TRAILER_V1)?),
                Version::V2 => None,
            },
            header_mac: hmac::Key::new(hmac::HMAC_SHA256, header_mac_key.as_ref()),
        })
    }

    /// HMAC-SHA-256 of the authenticated part of the core header.
    pub fn header_mac(&self, data: &[u8]) -> [u8; 32] {
        let mut out = [0u8; 32];
        out.copy_from_slice(hmac::sign(&self.header_mac, data).as_ref());
        out
    }

    /// Constant-time check of a header MAC. This is the key commitment: HMAC
    /// is collision resistant, so only one file key passes for a header.
    pub fn verify_header_mac(&self, data: &[u8], mac: &[u8; 32]) -> Result<()> {
        hmac::verify(&self.header_mac, data, mac).map_err(|_| Error::HeaderAuth)
    }
}

/// Seals a single message under a single-use key (nonce fixed at zero; the
/// key is never used for a second message, see the module docs).
pub(crate) fn seal_once(key: &Zeroizing<[u8; 32]>, aad: &[u8], data: &mut Vec<u8>) -> Result<()> {
    use aws_lc_rs::aead::{AES_256_GCM, Aad, LessSafeKey, Nonce, UnboundKey};
    let key = LessSafeKey::new(
        UnboundKey::new(&AES_256_GCM, key.as_ref()).map_err(|_| Error::Crypto("AES key"))?,
    );
    key.seal_in_place_append_tag(Nonce::assume_unique_for_key([0; 12]), Aad::from(aad), data)
        .map_err(|_| Error::Crypto("AES-256-GCM seal"))
}

/// Opens a message sealed by [`seal_once`]; returns the plaintext length.
pub(crate) fn open_once(
    key: &Zeroizing<[u8; 32]>,
    aad: &[u8],
    data: &mut [u8],
) -> std::result::Result<usize, ()> {
    use aws_lc_rs::aead::{AES_256_GCM, Aad, LessSafeKey, Nonce, UnboundKey};
    let key = LessSafeKey::new(UnboundKey::new(&AES_256_GCM, key.as_ref()).map_err(|_| ())?);
    key.open_in_place(Nonce::assume_unique_for_key([0; 12]), Aad::from(aad), data)
        .map(|plain| plain.len())
        .map_err(|_| ())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn derived_keys_are_distinct_and_depend_on_salt_and_key() {
        let key = FileKey::from_bytes([7; 32]);
        let a = DerivedKeys::derive(Version::V1, &key, &[1; 32]).unwrap();
        let b = DerivedKeys::derive(Version::V1, &key, &[2; 32]).unwrap();
        let c = DerivedKeys::derive(Version::V1, &FileKey::from_bytes([8; 32]), &[1; 32]).unwrap();
        let v2 = DerivedKeys::derive(Version::V2, &key, &[1; 32]).unwrap();
        let trailer = a.trailer.as_ref().unwrap();
        assert_ne!(*a.payload, *a.metadata);
        assert_ne!(*a.payload, **trailer);
        assert_ne!(*a.metadata, **trailer);
        assert_ne!(*a.payload, *b.payload);
        assert_ne!(*a.payload, *c.payload);
        assert_ne!(*a.payload, *v2.payload);
        assert_ne!(*a.metadata, *v2.metadata);
        assert!(v2.trailer.is_none());
        assert_ne!(a.header_mac(b"x"), b.header_mac(b"x"));
    }

    #[test]
    fn header_mac_rejects_other_data() {
        let keys =
            DerivedKeys::derive(Version::V2, &FileKey::from_bytes([7; 32]), &[1; 32]).unwrap();
        let mac = keys.header_mac(b"header");
        assert!(keys.verify_header_mac(b"header", &mac).is_ok());
        assert!(keys.verify_header_mac(b"headeR", &mac).is_err());
    }

    #[test]
    fn debug_does_not_print_key() {
        let shown = format!("{:?}", FileKey::from_bytes([0xAB; 32]));
        assert!(!shown.contains("171") && !shown.to_lowercase().contains("ab"));
    }
}
