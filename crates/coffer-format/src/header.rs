//! Byte codec for the header: the core header and the recipient stanzas, in
//! both versions (docs/FORMAT.md §4 and §5; version 1 in appendix A).
//! Parsing checks every length against the spec's bounds *before*
//! allocating, so a hostile header cannot make a reader allocate without
//! limit. No cryptography here except hashing.

use std::io::Read;

use crate::identity::{KEY_ID_LEN, KeyId, Sender};
use crate::keys::sha256;
use crate::{Error, Result};

/// The eight magic bytes that start every coffer file.
pub const MAGIC: [u8; 8] = [0x89, b'C', b'O', b'F', b'F', b'E', b'R', b'\n'];
/// The format version this crate writes.
pub const VERSION: u16 = 2;
/// The version this crate still reads (and never writes).
pub const VERSION_1: u16 = 1;
/// The only suite of each version (docs/FORMAT.md §3).
pub const SUITE: u16 = 1;

/// Smallest chunk size a file may declare.
pub const MIN_CHUNK_SIZE: u32 = 256;
/// Largest chunk size a file may declare (bounds the reader's buffer).
pub const MAX_CHUNK_SIZE: u32 = 16 * 1024 * 1024;
/// Default chunk size for new files.
pub const DEFAULT_CHUNK_SIZE: u32 = 64 * 1024;
/// Largest metadata plaintext.
pub const MAX_METADATA_LEN: usize = 64 * 1024;
/// Most stanzas (of any type, known or not) one stanza section may carry.
pub const MAX_STANZAS: usize = 256;
/// Largest body of one version 2 stanza.
pub const MAX_STANZA_BODY: usize = 4096;
/// Length of the file id (version 2).
pub const FILE_ID_LEN: usize = 16;

/// Length of the fixed part of a version 2 core header (magic .. metadata length).
pub const FIXED_LEN: usize = 8 + 2 + 2 + 4 + FILE_ID_LEN + 32 + Sender::LEN + 4;
/// Length of the fixed part of a version 1 core header.
pub const FIXED_LEN_V1: usize = 8 + 2 + 2 + 4 + 32 + 64 + 4;
/// Length of the header MAC.
pub const MAC_LEN: usize = 32;
/// Length of one version 1 stanza (always type 1).
pub const STANZA_LEN_V1: usize = 1 + KEY_ID_LEN + 32 + 48;
/// Stanza type 1: HPKE base mode, DHKEM(X25519, HKDF-SHA256), HKDF-SHA256, AES-256-GCM.
pub const STANZA_X25519: u8 = 0x01;
/// Stanza type 2: HPKE base mode, X-Wing (ML-KEM-768 + X25519), HKDF-SHA256, AES-256-GCM.
pub const STANZA_XWING: u8 = 0x02;
/// Length of an X-Wing encapsulation.
pub const XWING_ENC_LEN: usize = 1120;
/// Length of a wrapped file key (32 bytes and the HPKE AEAD tag).
pub const WRAPPED_LEN: usize = 48;
/// Length of the version 2 trailer: the sender's Ed25519 signature.
pub const TRAILER_LEN: usize = 64;
/// Length of the sealed version 1 trailer: `len (8) || sha256 (32) || signature (64) || tag (16)`.
pub const TRAILER_LEN_V1: usize = 8 + 32 + 64 + 16;

/// A format version this crate reads.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Version {
    /// Version 1: SHA-256 of the plaintext in a sealed trailer (read only).
    V1,
    /// Version 2: a signed BLAKE3 tree over the sealed chunks.
    V2,
}

impl Version {
    /// The number in the header.
    pub fn number(self) -> u16 {
        match self {
            Version::V1 => VERSION_1,
            Version::V2 => VERSION,
        }
    }

    fn fixed_len(self) -> usize {
        match self {
            Version::V1 => FIXED_LEN_V1,
            Version::V2 => FIXED_LEN,
        }
    }

    /// Length of the trailer that ends every file of this version.
    pub fn trailer_len(self) -> usize {
        match self {
            Version::V1 => TRAILER_LEN_V1,
            Version::V2 => TRAILER_LEN,
        }
    }
}

/// The part of the header covered by the header MAC and signed by the
/// sender. Recipient stanzas are *not* part of it, so they can be detached
/// and added later (docs/FORMAT.md §5.4).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CoreHeader {
    /// Which version's layout this is.
    pub version: Version,
    /// Plaintext bytes per chunk.
    pub chunk_size: u32,
    /// The writer's id for this file (version 2; all zero in version 1). A
    /// server object's id, so a reader can check it got the file it asked for.
    pub file_id: [u8; FILE_ID_LEN],
    /// HKDF salt, random per file.
    pub salt: [u8; 32],
    /// The sender (verifies the signature).
    pub sender: Sender,
    /// Encrypted metadata block (ciphertext followed by its tag).
    pub metadata_ct: Vec<u8>,
    /// HMAC-SHA-256 over all preceding core header bytes.
    pub mac: [u8; MAC_LEN],
}

impl CoreHeader {
    /// The fixed-size prefix (magic .. metadata length): the metadata
    /// block's associated data.
    pub fn fixed_prefix(&self) -> Vec<u8> {
        let fixed_len = self.version.fixed_len();
        let mut out = Vec::with_capacity(fixed_len + self.metadata_ct.len() + MAC_LEN);
        out.extend_from_slice(&MAGIC);
        out.extend_from_slice(&self.version.number().to_be_bytes());
        out.extend_from_slice(&SUITE.to_be_bytes());
        out.extend_from_slice(&self.chunk_size.to_be_bytes());
        match self.version {
            Version::V1 => {
                out.extend_from_slice(&self.salt);
                out.extend_from_slice(&self.sender.to_v1_bytes());
            }
            Version::V2 => {
                out.extend_from_slice(&self.file_id);
                out.extend_from_slice(&self.salt);
                out.extend_from_slice(&self.sender.to_v2_bytes());
            }
        }
        // metadata_ct.len() <= MAX_METADATA_LEN + 16 always fits in u32.
        out.extend_from_slice(&(self.metadata_ct.len() as u32).to_be_bytes());
        debug_assert_eq!(out.len(), fixed_len);
        out
    }

    /// The bytes the header MAC covers (everything before the MAC).
    pub fn mac_input(&self) -> Vec<u8> {
        let mut out = self.fixed_prefix();
        out.extend_from_slice(&self.metadata_ct);
        out
    }

    /// The complete encoding.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = self.mac_input();
        out.extend_from_slice(&self.mac);
        out
    }

    /// `header_hash`: SHA-256 of the complete encoding. Binds stanzas (HPKE
    /// `info`), the trailer and the signature to this header.
    pub fn hash(&self) -> [u8; 32] {
        sha256(&self.to_bytes())
    }

    /// Encoded length in bytes.
    pub fn encoded_len(&self) -> usize {
        self.version.fixed_len() + self.metadata_ct.len() + MAC_LEN
    }

    /// The file id as lowercase hex (how servers name objects).
    pub fn file_id_hex(&self) -> String {
        self.file_id.iter().map(|b| format!("{b:02x}")).collect()
    }

    /// Reads and validates a core header. Never allocates more than
    /// `MAX_METADATA_LEN + 16` bytes for the metadata block.
    pub fn read_from(reader: &mut impl Read) -> Result<Self> {
        let mut start = [0u8; 10];
        read_exact_or(reader, &mut start[..8], Error::NotCoffer)?;
        if start[..8] != MAGIC {
            return Err(Error::NotCoffer);
        }
        read_exact_or(reader, &mut start[8..], Error::Truncated("header"))?;
        let version = version_of(u16::from_be_bytes([start[8], start[9]]))?;
        let mut fixed = vec![0u8; version.fixed_len()];
        fixed[..10].copy_from_slice(&start);
        read_exact_or(reader, &mut fixed[10..], Error::Truncated("header"))?;
        let fields = FixedFields::parse(&fixed)?;
        let mut metadata_ct = vec![0u8; fields.metadata_ct_len];
        read_exact_or(reader, &mut metadata_ct, Error::Truncated("header"))?;
        let mut mac = [0u8; MAC_LEN];
        read_exact_or(reader, &mut mac, Error::Truncated("header"))?;
        Ok(Self {
            version,
            chunk_size: fields.chunk_size,
            file_id: fields.file_id,
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

fn version_of(number: u16) -> Result<Version> {
    match number {
        VERSION_1 => Ok(Version::V1),
        VERSION => Ok(Version::V2),
        other => Err(Error::UnsupportedVersion(other)),
    }
}

struct FixedFields {
    chunk_size: u32,
    file_id: [u8; FILE_ID_LEN],
    salt: [u8; 32],
    sender: Sender,
    metadata_ct_len: usize,
}

impl FixedFields {
    /// Checks, in the spec's order: suite, chunk size, sender keys,
    /// metadata length (the version was checked to pick the layout).
    fn parse(fixed: &[u8]) -> Result<Self> {
        let be32 = |at: usize| {
            u32::from_be_bytes([fixed[at], fixed[at + 1], fixed[at + 2], fixed[at + 3]])
        };
        let suite = u16::from_be_bytes([fixed[10], fixed[11]]);
        if suite != SUITE {
            return Err(Error::UnsupportedSuite(suite));
        }
        let chunk_size = be32(12);
        check_chunk_size(chunk_size)?;
        let mut file_id = [0u8; FILE_ID_LEN];
        let mut salt = [0u8; 32];
        let sender = if fixed.len() == FIXED_LEN_V1 {
            salt.copy_from_slice(&fixed[16..48]);
            let mut raw = [0u8; 64];
            raw.copy_from_slice(&fixed[48..112]);
            Sender::from_v1_bytes(&raw)
        } else {
            file_id.copy_from_slice(&fixed[16..32]);
            salt.copy_from_slice(&fixed[32..64]);
            let mut raw = [0u8; Sender::LEN];
            raw.copy_from_slice(&fixed[64..160]);
            Sender::from_v2_bytes(&raw)
        }
        .map_err(|_| Error::MalformedHeader("sender identity is invalid"))?;
        let metadata_ct_len = be32(fixed.len() - 4) as usize;
        if !(16..=MAX_METADATA_LEN + 16).contains(&metadata_ct_len) {
            return Err(Error::MalformedHeader("metadata length out of bounds"));
        }
        Ok(Self {
            chunk_size,
            file_id,
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

/// One wrap of the file key, or a stanza of a type this build does not
/// know (kept so it survives a rewrite, skipped when opening).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Stanza {
    /// Type 1: HPKE with X25519.
    X25519 {
        /// Which X25519 key this wrap is for.
        key_id: KeyId,
        /// HPKE encapsulated key (ephemeral X25519 public key).
        enc: [u8; 32],
        /// HPKE ciphertext of the 32-byte file key, with its tag.
        wrapped: [u8; WRAPPED_LEN],
    },
    /// Type 2: HPKE with X-Wing (ML-KEM-768 + X25519).
    XWing {
        /// Which X-Wing key this wrap is for.
        key_id: KeyId,
        /// The X-Wing ciphertext.
        enc: Box<[u8; XWING_ENC_LEN]>,
        /// HPKE ciphertext of the 32-byte file key, with its tag.
        wrapped: [u8; WRAPPED_LEN],
    },
    /// Another type (version 2 only): skipped by readers.
    Unknown {
        /// Its type byte.
        kind: u8,
        /// Its body, at most `MAX_STANZA_BODY` bytes.
        body: Vec<u8>,
    },
}

impl Stanza {
    /// The type byte.
    pub fn kind(&self) -> u8 {
        match self {
            Stanza::X25519 { .. } => STANZA_X25519,
            Stanza::XWing { .. } => STANZA_XWING,
            Stanza::Unknown { kind, .. } => *kind,
        }
    }

    /// Whether this stanza is addressed to one of `identity`'s keys: an
    /// X25519 stanza to its X25519 key, or an X-Wing stanza to its X-Wing key.
    pub fn is_for(&self, identity: &crate::PublicIdentity) -> bool {
        match self {
            Stanza::X25519 { key_id, .. } => *key_id == KeyId::of(identity.encryption_key()),
            Stanza::XWing { key_id, .. } => {
                identity.xwing_key().map(KeyId::of_xwing) == Some(*key_id)
            }
            Stanza::Unknown { .. } => false,
        }
    }

    /// The recipient key id, for the types that have one.
    pub fn key_id(&self) -> Option<KeyId> {
        match self {
            Stanza::X25519 { key_id, .. } | Stanza::XWing { key_id, .. } => Some(*key_id),
            Stanza::Unknown { .. } => None,
        }
    }

    fn body(&self) -> Vec<u8> {
        match self {
            Stanza::X25519 {
                key_id,
                enc,
                wrapped,
            } => [&key_id.0[..], enc, wrapped].concat(),
            Stanza::XWing {
                key_id,
                enc,
                wrapped,
            } => [&key_id.0[..], &enc[..], wrapped].concat(),
            Stanza::Unknown { body, .. } => body.clone(),
        }
    }

    /// The version 2 encoding: `type (1) || BE16(body length) || body`.
    /// This is also the detached wire form of a stanza.
    pub fn to_bytes(&self) -> Vec<u8> {
        let body = self.body();
        let mut out = Vec::with_capacity(3 + body.len());
        out.push(self.kind());
        // Bodies are at most MAX_STANZA_BODY bytes (checked on parse; ours are smaller).
        out.extend_from_slice(&(body.len() as u16).to_be_bytes());
        out.extend_from_slice(&body);
        out
    }

    /// Parses one whole version 2 stanza (as [`Stanza::to_bytes`] writes it).
    pub fn from_bytes(bytes: &[u8]) -> Result<Self> {
        if bytes.len() < 3 {
            return Err(Error::MalformedHeader("stanza is too short"));
        }
        let len = usize::from(u16::from_be_bytes([bytes[1], bytes[2]]));
        if bytes.len() != 3 + len {
            return Err(Error::MalformedHeader("stanza length does not match"));
        }
        Self::from_body(bytes[0], &bytes[3..])
    }

    /// Parses a detached stanza in either wire form: version 2's, or the 89
    /// bytes of a version 1 stanza (how version 1 files' wraps are stored).
    pub fn from_detached(bytes: &[u8]) -> Result<Self> {
        if bytes.len() == STANZA_LEN_V1 && bytes[0] == STANZA_X25519 {
            return Self::from_v1_bytes(bytes);
        }
        Self::from_bytes(bytes)
    }

    /// The detached wire form for a file of `version`.
    pub fn to_detached(&self, version: Version) -> Result<Vec<u8>> {
        match version {
            Version::V1 => self.to_v1_bytes(),
            Version::V2 => Ok(self.to_bytes()),
        }
    }

    fn from_body(kind: u8, body: &[u8]) -> Result<Self> {
        if body.len() > MAX_STANZA_BODY {
            return Err(Error::MalformedHeader("stanza body too long"));
        }
        let key_id = |body: &[u8]| KeyId(body[..KEY_ID_LEN].try_into().unwrap_or_default());
        let wrapped =
            |tail: &[u8]| -> [u8; WRAPPED_LEN] { tail.try_into().unwrap_or([0; WRAPPED_LEN]) };
        match kind {
            STANZA_X25519 => {
                if body.len() != KEY_ID_LEN + 32 + WRAPPED_LEN {
                    return Err(Error::MalformedHeader("X25519 stanza has the wrong length"));
                }
                let mut enc = [0u8; 32];
                enc.copy_from_slice(&body[KEY_ID_LEN..KEY_ID_LEN + 32]);
                Ok(Stanza::X25519 {
                    key_id: key_id(body),
                    enc,
                    wrapped: wrapped(&body[KEY_ID_LEN + 32..]),
                })
            }
            STANZA_XWING => {
                if body.len() != KEY_ID_LEN + XWING_ENC_LEN + WRAPPED_LEN {
                    return Err(Error::MalformedHeader("X-Wing stanza has the wrong length"));
                }
                let mut enc = Box::new([0u8; XWING_ENC_LEN]);
                enc.copy_from_slice(&body[KEY_ID_LEN..KEY_ID_LEN + XWING_ENC_LEN]);
                Ok(Stanza::XWing {
                    key_id: key_id(body),
                    enc,
                    wrapped: wrapped(&body[KEY_ID_LEN + XWING_ENC_LEN..]),
                })
            }
            other => Ok(Stanza::Unknown {
                kind: other,
                body: body.to_vec(),
            }),
        }
    }

    /// The version 1 encoding (89 bytes; type 1 only).
    pub fn to_v1_bytes(&self) -> Result<Vec<u8>> {
        match self {
            Stanza::X25519 { .. } => {
                let mut out = vec![STANZA_X25519];
                out.extend_from_slice(&self.body());
                Ok(out)
            }
            _ => Err(Error::MalformedHeader("version 1 has only X25519 stanzas")),
        }
    }

    /// Parses a version 1 stanza (exactly 89 bytes, type 1).
    pub fn from_v1_bytes(bytes: &[u8]) -> Result<Self> {
        if bytes.len() != STANZA_LEN_V1 {
            return Err(Error::MalformedHeader("stanza has the wrong length"));
        }
        if bytes[0] != STANZA_X25519 {
            return Err(Error::MalformedHeader("unknown stanza type in version 1"));
        }
        Self::from_body(STANZA_X25519, &bytes[1..])
    }
}

/// Encodes the stanza section of a version 2 file: a big-endian u16
/// count, then the stanzas.
pub fn encode_stanzas(stanzas: &[Stanza]) -> Result<Vec<u8>> {
    if stanzas.len() > MAX_STANZAS {
        return Err(Error::TooManyRecipients {
            given: stanzas.len(),
            max: MAX_STANZAS,
        });
    }
    let mut out = Vec::with_capacity(2 + stanzas.len() * 91);
    out.extend_from_slice(&(stanzas.len() as u16).to_be_bytes());
    for stanza in stanzas {
        out.extend_from_slice(&stanza.to_bytes());
    }
    Ok(out)
}

/// Reads the stanza section, refusing counts above `MAX_STANZAS` before
/// reading any stanza, and any body above `MAX_STANZA_BODY` before reading it.
pub fn read_stanzas(reader: &mut impl Read, version: Version) -> Result<Vec<Stanza>> {
    let mut count = [0u8; 2];
    read_exact_or(reader, &mut count, Error::Truncated("stanza section"))?;
    let count = usize::from(u16::from_be_bytes(count));
    if count > MAX_STANZAS {
        return Err(Error::MalformedHeader("too many recipient stanzas"));
    }
    let mut stanzas = Vec::with_capacity(count);
    for _ in 0..count {
        stanzas.push(read_stanza(reader, version)?);
    }
    Ok(stanzas)
}

fn read_stanza(reader: &mut impl Read, version: Version) -> Result<Stanza> {
    let truncated = || Error::Truncated("stanza section");
    match version {
        Version::V1 => {
            let mut buf = [0u8; STANZA_LEN_V1];
            read_exact_or(reader, &mut buf, truncated())?;
            Stanza::from_v1_bytes(&buf)
        }
        Version::V2 => {
            let mut head = [0u8; 3];
            read_exact_or(reader, &mut head, truncated())?;
            let len = usize::from(u16::from_be_bytes([head[1], head[2]]));
            if len > MAX_STANZA_BODY {
                return Err(Error::MalformedHeader("stanza body too long"));
            }
            let mut body = vec![0u8; len];
            read_exact_or(reader, &mut body, truncated())?;
            Stanza::from_body(head[0], &body)
        }
    }
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
    if have < 10 {
        return Ok(10 - have);
    }
    let version = version_of(u16::from_be_bytes([prefix[8], prefix[9]]))?;
    let fixed_len = version.fixed_len();
    if have < fixed_len {
        return Ok(fixed_len - have);
    }
    let core_len = fixed_len + FixedFields::parse(&prefix[..fixed_len])?.metadata_ct_len + MAC_LEN;
    if have < core_len + 2 {
        return Ok(core_len + 2 - have);
    }
    let count = usize::from(u16::from_be_bytes([prefix[core_len], prefix[core_len + 1]]));
    if count > MAX_STANZAS {
        return Err(Error::MalformedHeader("too many recipient stanzas"));
    }
    let mut at = core_len + 2;
    for _ in 0..count {
        let len = match version {
            Version::V1 => STANZA_LEN_V1,
            Version::V2 => {
                if have < at + 3 {
                    return Ok(at + 3 - have);
                }
                let body = usize::from(u16::from_be_bytes([prefix[at + 1], prefix[at + 2]]));
                if body > MAX_STANZA_BODY {
                    return Err(Error::MalformedHeader("stanza body too long"));
                }
                3 + body
            }
        };
        at += len;
        if have < at {
            return Ok(at - have);
        }
    }
    Ok(0)
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
            version: Version::V2,
            chunk_size: DEFAULT_CHUNK_SIZE,
            file_id: [5; FILE_ID_LEN],
            salt: [3; 32],
            sender: Identity::generate().unwrap().public().sender(),
            metadata_ct: vec![9; 40],
            mac: [4; 32],
        }
    }

    #[test]
    fn core_header_round_trips() {
        let header = sample();
        let bytes = header.to_bytes();
        assert_eq!(bytes.len(), header.encoded_len());
        assert_eq!(bytes.len(), FIXED_LEN + 40 + MAC_LEN);
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
            patch(8, &3u16.to_be_bytes()),
            Error::UnsupportedVersion(3)
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
            patch(160, &u32::MAX.to_be_bytes()),
            Error::MalformedHeader(_)
        ));
        assert!(matches!(patch(64, &[0u8; 64]), Error::MalformedHeader(_)));
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
            assert!(header_bytes_needed(&good[..cut]).unwrap() > 0);
        }
    }

    #[test]
    fn stanza_section_bounds_and_unknown_types() {
        let stanza = Stanza::X25519 {
            key_id: KeyId([1; 8]),
            enc: [2; 32],
            wrapped: [3; 48],
        };
        let unknown = Stanza::Unknown {
            kind: 0x7f,
            body: vec![9; 10],
        };
        let bytes = encode_stanzas(&[unknown.clone(), stanza.clone()]).unwrap();
        assert_eq!(
            read_stanzas(&mut &bytes[..], Version::V2).unwrap(),
            vec![unknown, stanza.clone()]
        );
        let bomb = (u16::MAX).to_be_bytes();
        assert!(matches!(
            read_stanzas(&mut &bomb[..], Version::V2),
            Err(Error::MalformedHeader(_))
        ));
        // A body length past the bound is refused before it is read.
        let long = [0, 1, 0x7f, 0xff, 0xff];
        assert!(matches!(
            read_stanzas(&mut &long[..], Version::V2),
            Err(Error::MalformedHeader(_))
        ));
        // A known type with the wrong length is malformed.
        let mut short = stanza.to_bytes();
        short.truncate(short.len() - 1);
        short[2] -= 1;
        assert!(Stanza::from_bytes(&short).is_err());
        assert!(matches!(
            read_stanzas(&mut &bytes[..bytes.len() - 1], Version::V2),
            Err(Error::Truncated(_))
        ));
        // Detached forms: version 1 (89 bytes) and version 2 both parse.
        let v1 = stanza.to_v1_bytes().unwrap();
        assert_eq!(v1.len(), STANZA_LEN_V1);
        assert_eq!(Stanza::from_detached(&v1).unwrap(), stanza);
        assert_eq!(Stanza::from_detached(&stanza.to_bytes()).unwrap(), stanza);
    }
}
