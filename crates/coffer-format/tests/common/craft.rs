//! A second, deliberately plain version 2 encoder for the test vectors:
//! every field is explicit, so a vector can break exactly one rule while
//! everything else (MACs, tags, tree, signature) stays valid. It follows
//! docs/FORMAT.md, not the reference writer's code, and
//! `the_crafter_agrees_with_the_reference` checks that the two produce files
//! the reference reads identically.
#![allow(dead_code)]

use aws_lc_rs::aead::{AES_256_GCM, Aad, LessSafeKey, Nonce, UnboundKey};
use aws_lc_rs::{digest, hkdf, hmac};
use coffer_format::recipient::wrap_file_key;
use coffer_format::stream::StreamSealer;
use coffer_format::trailer::Signed;
use coffer_format::tree::{self, TreeBuilder};
use coffer_format::{FileKey, Identity, PublicIdentity};
use zeroize::Zeroizing;

pub fn sha256(parts: &[&[u8]]) -> [u8; 32] {
    let mut ctx = digest::Context::new(&digest::SHA256);
    for part in parts {
        ctx.update(part);
    }
    ctx.finish().as_ref().try_into().unwrap()
}

/// `payload_key`, `metadata_key`, `header_key` of a version 2 file.
pub fn key_schedule(file_key: &[u8; 32], salt: &[u8; 32]) -> [[u8; 32]; 3] {
    let prk = hkdf::Salt::new(hkdf::HKDF_SHA256, salt).extract(file_key);
    let expand = |label: &[u8]| {
        let mut out = [0u8; 32];
        prk.expand(&[label], hkdf::HKDF_SHA256)
            .unwrap()
            .fill(&mut out)
            .unwrap();
        out
    };
    [
        expand(b"coffer/v2/payload"),
        expand(b"coffer/v2/metadata"),
        expand(b"coffer/v2/header-mac"),
    ]
}

/// The 96-byte sender field of a public identity (§4.1).
pub fn sender_field(id: &PublicIdentity) -> [u8; 96] {
    let mut out = [0u8; 96];
    out[..32].copy_from_slice(id.signing_key().as_bytes());
    out[32..64].copy_from_slice(id.encryption_key());
    if let Some(xwing) = id.xwing_key() {
        out[64..].copy_from_slice(&sha256(&[b"coffer/v2/x-wing-key", xwing]));
    }
    out
}

pub struct Craft<'a> {
    pub version: u16,
    pub suite: u16,
    pub chunk_size: u32,
    pub file_id: [u8; 16],
    pub salt: [u8; 32],
    pub file_key: [u8; 32],
    pub sender: [u8; 96],
    pub signer: &'a Identity,
    pub metadata: Vec<u8>,
    /// Raw stanzas (TLV) put before the recipients' real ones.
    pub extra_stanzas: Vec<Vec<u8>>,
    pub recipients: Vec<PublicIdentity>,
    /// Embed the stanzas (else count 0: a detached object).
    pub embedded: bool,
    /// The plaintext, already cut into chunks (so any split can be made).
    pub chunks: Vec<Vec<u8>>,
    /// Overrides of what is signed.
    pub signed_len: Option<u64>,
    pub signed_count: Option<u64>,
}

pub struct Crafted {
    pub file: Vec<u8>,
    pub stanzas: Vec<Vec<u8>>,
    pub header_hash: [u8; 32],
    pub root: [u8; 32],
    pub header_len: usize,
}

impl<'a> Craft<'a> {
    pub fn new(
        signer: &'a Identity,
        recipients: Vec<PublicIdentity>,
        plain: &[u8],
        chunk_size: u32,
    ) -> Self {
        let mut chunks: Vec<Vec<u8>> = plain
            .chunks(chunk_size as usize)
            .map(<[u8]>::to_vec)
            .collect();
        if chunks.is_empty() {
            chunks.push(Vec::new());
        }
        Self {
            version: 2,
            suite: 1,
            chunk_size,
            file_id: random(),
            salt: random(),
            file_key: random(),
            sender: sender_field(signer.public()),
            signer,
            metadata: b"{}".to_vec(),
            extra_stanzas: Vec::new(),
            recipients,
            embedded: true,
            chunks,
            signed_len: None,
            signed_count: None,
        }
    }

    pub fn build(&self) -> Crafted {
        let [payload_key, metadata_key, header_key] = key_schedule(&self.file_key, &self.salt);
        let mut fixed = vec![0x89, b'C', b'O', b'F', b'F', b'E', b'R', b'\n'];
        fixed.extend_from_slice(&self.version.to_be_bytes());
        fixed.extend_from_slice(&self.suite.to_be_bytes());
        fixed.extend_from_slice(&self.chunk_size.to_be_bytes());
        fixed.extend_from_slice(&self.file_id);
        fixed.extend_from_slice(&self.salt);
        fixed.extend_from_slice(&self.sender);
        fixed.extend_from_slice(&((self.metadata.len() + 16) as u32).to_be_bytes());
        let mut metadata_ct = self.metadata.clone();
        LessSafeKey::new(UnboundKey::new(&AES_256_GCM, &metadata_key).unwrap())
            .seal_in_place_append_tag(
                Nonce::assume_unique_for_key([0; 12]),
                Aad::from(&fixed[..]),
                &mut metadata_ct,
            )
            .unwrap();
        let mut core = fixed;
        core.extend_from_slice(&metadata_ct);
        let mac = hmac::sign(&hmac::Key::new(hmac::HMAC_SHA256, &header_key), &core);
        core.extend_from_slice(mac.as_ref());
        let header_hash = sha256(&[&core]);
        let file_key = FileKey::from_bytes(self.file_key);
        let mut stanzas = self.extra_stanzas.clone();
        for recipient in &self.recipients {
            stanzas.push(
                wrap_file_key(&file_key, &header_hash, recipient)
                    .unwrap()
                    .to_bytes(),
            );
        }
        let mut file = core;
        let embedded: &[Vec<u8>] = if self.embedded { &stanzas } else { &[] };
        file.extend_from_slice(&(embedded.len() as u16).to_be_bytes());
        for stanza in embedded {
            file.extend_from_slice(stanza);
        }
        let header_len = file.len();
        let key = Zeroizing::new(payload_key);
        let mut sealer = Some(StreamSealer::new(&key).unwrap());
        let mut tree = TreeBuilder::new();
        let mut plaintext_len = 0u64;
        for (i, chunk) in self.chunks.iter().enumerate() {
            let start = file.len();
            file.extend_from_slice(chunk);
            plaintext_len += chunk.len() as u64;
            if i + 1 == self.chunks.len() {
                sealer
                    .take()
                    .unwrap()
                    .seal_last_at(&mut file, start)
                    .unwrap();
            } else {
                sealer
                    .as_mut()
                    .unwrap()
                    .seal_chunk_at(&mut file, start)
                    .unwrap();
            }
            let leaf = tree::leaf(i as u64, &file[start..]);
            tree.push(leaf, &mut file);
        }
        let root = tree.root().unwrap();
        let signed = Signed {
            header_hash,
            plaintext_len: self.signed_len.unwrap_or(plaintext_len),
            chunk_count: self.signed_count.unwrap_or(self.chunks.len() as u64),
            root,
        };
        file.extend_from_slice(&self.signer.sign(&signed.message()));
        Crafted {
            file,
            stanzas,
            header_hash,
            root,
            header_len,
        }
    }
}

pub fn random<const N: usize>() -> [u8; N] {
    let mut out = [0u8; N];
    aws_lc_rs::rand::fill(&mut out).unwrap();
    out
}
