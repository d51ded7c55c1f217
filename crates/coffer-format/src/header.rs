//! Byte codec for the header: the core header, recipient stanzas and the
//! trailer. Parsing checks every length against the spec's bounds *before*
//! allocating, so a hostile header cannot make a reader allocate without limit.
//! No cryptography here except hashing; see docs/FORMAT.md for the layout.

use std::io::Read;

use crate::identity::{KEY_ID_LEN, KeyId, PublicIdentity};
use crate::keys::sha256;
use crate::{Error, Result};

/// The eight magic bytes that start every coffer file.
pub const MAGIC: [u8; 8] = [0x89, b'C', b'O', b'F', b'F', b'E', b'R', b'\n'];
/// The only format version this crate writes and reads.
pub const VERSION: u16 = 1;
/// Suite 1: STREAM/AES-256-GCM, HKDF-SHA-256, HPKE(X25519, HKDF-SHA256,
/// AES-256-GCM), Ed25519, SHA-256.
pub const SUITE: u16 = 1;

/// Smallest chunk size a file may declare.
pub const MIN_CHUNK_SIZE: u32 = 256;
/// Largest chunk size a file may declare (bounds the reader's buffer).
pub const MAX_CHUNK_SIZE: u32 = 16 * 1024 * 1024;
/// Default chunk size for new files.
pub const DEFAULT_CHUNK_SIZE: u32 = 64 * 1024;
/// Largest metadata plaintext.
pub const MAX_METADATA_LEN: usize = 64 * 1024;
/// Most recipient stanzas one file may carry.
pub const MAX_STANZAS: usize = 256;

/// Length of the fixed part of the core header (magic .. metadata length).
pub const FIXED_LEN: usize = 8 + 2 + 2 + 4 + 32 + PublicIdentity::LEN + 4;
/// Length of the header MAC.
pub const MAC_LEN: usize = 32;
/// Length of one encoded stanza.
pub const STANZA_LEN: usize = 1 + KEY_ID_LEN + 32 + 48;
/// Stanza type: HPKE base mode, DHKEM(X25519, HKDF-SHA256), HKDF-SHA256, AES-256-GCM.
pub const STANZA_TYPE_HPKE_X25519: u8 = 0x01;
/// Length of the sealed trailer: `len (8) || sha256 (32) || signature (64) || tag (16)`.
pub const TRAILER_LEN: usize = 8 + 32 + 64 + 16;

/// The part of the header covered by the header MAC and signed by the
/// sender. Recipient stanzas are *not* part of it, so they can be detached
/// and added later (see docs/FORMAT.md, "Why stanzas are outside the MAC").
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CoreHeader {
    /// Plaintext bytes per chunk.
    pub chunk_size: u32,
    /// HKDF salt, random per file.
    pub salt: [u8; 32],
    /// The sender's public identity (verifies the trailer signature).
    pub sender: PublicIdentity,
    /// Encrypted metadata block (ciphertext followed by its tag).
    pub metadata_ct: Vec<u8>,
    /// HMAC-SHA-256 over all preceding core header bytes.
    pub mac: [u8; MAC_LEN],
}

impl CoreHeader {
    /// The fixed-size prefix: magic, version, suite, chunk size, salt,
    /// sender, metadata length. It is the metadata block's associated data.
    pub fn fixed_prefix(
        chunk_size: u32,
        salt: &[u8; 32],
        sender: &PublicIdentity,
        metadata_ct_len: usize,
    ) -> Vec<u8> {
        let mut out = Vec::with_capacity(FIXED_LEN + metadata_ct_len + MAC_LEN);
        out.extend_from_slice(&MAGIC);
        out.extend_from_slice(&VERSION.to_be_bytes());
        out.extend_from_slice(&SUITE.to_be_bytes());
        out.extend_from_slice(&chunk_size.to_be_bytes());
        out.extend_from_slice(salt);
        out.extend_from_slice(&sender.to_bytes());
        // metadata_ct_len <= MAX_METADATA_LEN + 16 always fits in u32.
        out.extend_from_slice(&(metadata_ct_len as u32).to_be_bytes());
        out
    }

    /// The bytes the header MAC covers (everything before the MAC).
    pub fn mac_input(&self) -> Vec<u8> {
        let mut out = Self::fixed_prefix(
            self.chunk_size,
            &self.salt,
            &self.sender,
            self.metadata_ct.len(),
        );
        out.extend_from_slice(&self.metadata_ct);
        out
    }

    /// The complete encoding.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = self.mac_input();
        out.extend_from_slice(&self.mac);
        out
    }

    /// SHA-256 of the complete encoding. Binds stanzas (HPKE `info`), the
    /// trailer and the signature to this header.
    pub fn hash(&self) -> [u8; 32] {
        sha256(&self.to_bytes())
    }

    /// Encoded length in bytes.
    pub fn encoded_len(&self) -> usize {
        FIXED_LEN + self.metadata_ct.len() + MAC_LEN
    }

    /// Reads and validates a core header. Never allocates more than
    /// `MAX_METADATA_LEN + 16` bytes for the metadata block.
    pub fn read_from(reader: &mut impl Read) -> Result<Self> {
        let mut fixed = [0u8; FIXED_LEN];
        read_exact_or(reader, &mut fixed[..8], Error::NotCoffer)?;
        if fixed[..8] != MAGIC {
            return Err(Error::NotCoffer);
        }
        read_exact_or(reader, &mut fixed[8..], Error::Truncated("header"))?;
        let fields = FixedFields::parse(&fixed)?;
        let mut metadata_ct = vec![0u8; fields.metadata_ct_len];
        read_exact_or(reader, &mut metadata_ct, Error::Truncated("header"))?;
        let mut mac = [0u8; MAC_LEN];
        read_exact_or(reader, &mut mac, Error::Truncated("header"))?;
        Ok(Self {
            chunk_size: fields.chunk_size,
            salt: fields.salt,
            sender: fields.sender,
            metadata_ct,
            mac,
        })
    }

    /// Parses a core header from the start of `bytes`, returning it and the
    /// number of bytes it occupies.
    pub fn parse(bytes: &[u8]) -> Result<(Self, usize)> {
        let mut cursor = bytes;
        let header = Self::read_from(&mut cursor)?;
        Ok((header, bytes.len() - cursor.len()))
    }
}

struct FixedFields {
    chunk_size: u32,
    salt: [u8; 32],
    sender: PublicIdentity,
    metadata_ct_len: usize,
}

impl FixedFields {
    fn parse(fixed: &[u8; FIXED_LEN]) -> Result<Self> {
        let version = u16::from_be_bytes([fixed[8], fixed[9]]);
        if version != VERSION {
            return Err(Error::UnsupportedVersion(version));
        }
        let suite = u16::from_be_bytes([fixed[10], fixed[11]]);
        if suite != SUITE {
            return Err(Error::UnsupportedSuite(suite));
        }
        let chunk_size = u32::from_be_bytes([fixed[12], fixed[13], fixed[14], fixed[15]]);
        check_chunk_size(chunk_size)?;
        let mut salt = [0u8; 32];
        salt.copy_from_slice(&fixed[16..48]);
        let mut sender = [0u8; PublicIdentity::LEN];
        sender.copy_from_slice(&fixed[48..112]);
        let sender = PublicIdentity::from_bytes(&sender)
            .map_err(|_| Error::MalformedHeader("sender identity is invalid"))?;
        let metadata_ct_len =
            u32::from_be_bytes([fixed[112], fixed[113], fixed[114], fixed[115]]) as usize;
        if !(16..=MAX_METADATA_LEN + 16).contains(&metadata_ct_len) {
            return Err(Error::MalformedHeader("metadata length out of bounds"));
        }
        Ok(Self {
            chunk_size,
            salt,
            sender,
            metadata_ct_len,
        })
    }
}

/// Refuses chunk sizes outside `MIN_CHUNK_SIZE..=MAX_CHUNK_SIZE`.
pub fn check_chunk_size(chunk_size: u32) -> Result<()> {
    if (MIN_CHUNK_SIZE..=MAX_CHUNK_SIZE).contains(&chunk_size) {
        Ok(())
    } else {
        Err(Error::MalformedHeader("chunk size out of bounds"))
    }
}

/// One recipient's wrap of the file key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Stanza {
    /// Which X25519 key this wrap is for.
    pub key_id: KeyId,
    /// HPKE encapsulated key (ephemeral X25519 public key).
    pub enc: [u8; 32],
    /// HPKE ciphertext of the 32-byte file key, with its 16-byte tag.
    pub wrapped_key: [u8; 48],
}

impl Stanza {
    /// The fixed-size encoding (`STANZA_LEN` bytes).
    pub fn to_bytes(&self) -> [u8; STANZA_LEN] {
        let mut out = [0u8; STANZA_LEN];
        out[0] = STANZA_TYPE_HPKE_X25519;
        out[1..9].copy_from_slice(&self.key_id.0);
        out[9..41].copy_from_slice(&self.enc);
        out[41..].copy_from_slice(&self.wrapped_key);
        out
    }

    /// Parses one stanza from exactly `STANZA_LEN` bytes.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self> {
        if bytes.len() != STANZA_LEN {
            return Err(Error::MalformedHeader("stanza has the wrong length"));
        }
        if bytes[0] != STANZA_TYPE_HPKE_X25519 {
            return Err(Error::MalformedHeader("unknown stanza type"));
        }
        let mut key_id = [0u8; KEY_ID_LEN];
        key_id.copy_from_slice(&bytes[1..9]);
        let mut enc = [0u8; 32];
        enc.copy_from_slice(&bytes[9..41]);
        let mut wrapped_key = [0u8; 48];
        wrapped_key.copy_from_slice(&bytes[41..]);
        Ok(Self {
            key_id: KeyId(key_id),
            enc,
            wrapped_key,
        })
    }
}

/// Encodes the stanza section: a big-endian u16 count, then the stanzas.
pub fn encode_stanzas(stanzas: &[Stanza]) -> Result<Vec<u8>> {
    if stanzas.len() > MAX_STANZAS {
        return Err(Error::TooManyRecipients {
            given: stanzas.len(),
            max: MAX_STANZAS,
        });
    }
    let mut out = Vec::with_capacity(2 + stanzas.len() * STANZA_LEN);
    out.extend_from_slice(&(stanzas.len() as u16).to_be_bytes());
    for stanza in stanzas {
        out.extend_from_slice(&stanza.to_bytes());
    }
    Ok(out)
}

/// Reads the stanza section, refusing counts above `MAX_STANZAS` before
/// reading any of them.
pub fn read_stanzas(reader: &mut impl Read) -> Result<Vec<Stanza>> {
    let mut count = [0u8; 2];
    read_exact_or(reader, &mut count, Error::Truncated("stanza section"))?;
    let count = usize::from(u16::from_be_bytes(count));
    if count > MAX_STANZAS {
        return Err(Error::MalformedHeader("too many recipient stanzas"));
    }
    let mut stanzas = Vec::with_capacity(count);
    let mut buf = [0u8; STANZA_LEN];
    for _ in 0..count {
        read_exact_or(reader, &mut buf, Error::Truncated("stanza section"))?;
        stanzas.push(Stanza::from_bytes(&buf)?);
    }
    Ok(stanzas)
}

/// How many more bytes a header needs, given its first `prefix.len()` bytes
/// (0 once complete). Lets a reader pull exactly the header from a stream,
/// sync or async, validating each length field before trusting it.
pub fn header_bytes_needed(prefix: &[u8]) -> Result<usize> {
    let have = prefix.len();
    if have < MAGIC.len() {
        return Ok(MAGIC.len() - have);
    }
    if prefix[..MAGIC.len()] != MAGIC {
        return Err(Error::NotCoffer);
    }
    if have < FIXED_LEN {
        return Ok(FIXED_LEN - have);
    }
    let fixed: &[u8; FIXED_LEN] = prefix[..FIXED_LEN]
        .try_into()
        .map_err(|_| Error::MalformedHeader("fixed part"))?;
    let core_len = FIXED_LEN + FixedFields::parse(fixed)?.metadata_ct_len + MAC_LEN;
    if have < core_len + 2 {
        return Ok(core_len + 2 - have);
    }
    let count = usize::from(u16::from_be_bytes([prefix[core_len], prefix[core_len + 1]]));
    if count > MAX_STANZAS {
        return Err(Error::MalformedHeader("too many recipient stanzas"));
    }
    Ok((core_len + 2 + count * STANZA_LEN).saturating_sub(have))
}

/// The error for input ending after `have` header bytes.
pub(crate) fn eof_error(have: usize) -> Error {
    if have < MAGIC.len() {
        Error::NotCoffer
    } else {
        Error::Truncated("header")
    }
}

/// `read_exact`, mapping a premature end to `on_eof`.
pub(crate) fn read_exact_or(reader: &mut impl Read, buf: &mut [u8], on_eof: Error) -> Result<()> {
    match reader.read_exact(buf) {
        Ok(()) => Ok(()),
        Err(err) if err.kind() == std::io::ErrorKind::UnexpectedEof => Err(on_eof),
        Err(err) => Err(Error::from_io(err)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Identity;

    fn sample() -> CoreHeader {
        CoreHeader {
            chunk_size: DEFAULT_CHUNK_SIZE,
            salt: [3; 32],
            sender: Identity::generate().unwrap().public().clone(),
            metadata_ct: vec![9; 40],
            mac: [4; 32],
        }
    }

    #[test]
    fn core_header_round_trips() {
        let header = sample();
        let bytes = header.to_bytes();
        assert_eq!(bytes.len(), header.encoded_len());
        let (back, used) = CoreHeader::parse(&bytes).unwrap();
        assert_eq!(back, header);
        assert_eq!(used, bytes.len());
    }

    #[test]
    fn hostile_fixed_fields_are_refused() {
        let good = sample().to_bytes();
        let patch = |offset: usize, value: &[u8]| {
            let mut bytes = good.clone();
            bytes[offset..offset + value.len()].copy_from_slice(value);
            CoreHeader::parse(&bytes).unwrap_err()
        };
        assert!(matches!(patch(0, b"X"), Error::NotCoffer));
        assert!(matches!(
            patch(8, &2u16.to_be_bytes()),
            Error::UnsupportedVersion(2)
        ));
        assert!(matches!(
            patch(10, &9u16.to_be_bytes()),
            Error::UnsupportedSuite(9)
        ));
        assert!(matches!(
            patch(12, &u32::MAX.to_be_bytes()),
            Error::MalformedHeader(_)
        ));
        assert!(matches!(
            patch(12, &1u32.to_be_bytes()),
            Error::MalformedHeader(_)
        ));
        assert!(matches!(
            patch(112, &u32::MAX.to_be_bytes()),
            Error::MalformedHeader(_)
        ));
        assert!(matches!(patch(48, &[0u8; 64]), Error::MalformedHeader(_)));
    }

    #[test]
    fn short_inputs_are_truncated_or_not_coffer() {
        let good = sample().to_bytes();
        for cut in 0..good.len() {
            let err = CoreHeader::parse(&good[..cut]).unwrap_err();
            if cut < 8 {
                assert!(matches!(err, Error::NotCoffer), "cut {cut}: {err}");
            } else {
                assert!(matches!(err, Error::Truncated(_)), "cut {cut}: {err}");
            }
        }
    }

    #[test]
    fn stanza_section_bounds() {
        let stanza = Stanza {
            key_id: KeyId([1; 8]),
            enc: [2; 32],
            wrapped_key: [3; 48],
        };
        let bytes = encode_stanzas(&[stanza.clone(), stanza.clone()]).unwrap();
        assert_eq!(
            read_stanzas(&mut &bytes[..]).unwrap(),
            vec![stanza.clone(), stanza]
        );
        let bomb = (u16::MAX).to_be_bytes();
        assert!(matches!(
            read_stanzas(&mut &bomb[..]),
            Err(Error::MalformedHeader(_))
        ));
        let mut unknown = bytes.clone();
        unknown[2] = 0x7f;
        assert!(read_stanzas(&mut &unknown[..]).is_err());
        assert!(matches!(
            read_stanzas(&mut &bytes[..bytes.len() - 1]),
            Err(Error::Truncated(_))
        ));
    }
}
