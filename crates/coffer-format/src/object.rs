//! What anyone can check of a version 2 object **without a key**: its
//! header parses, its layout fits its length, every stored tree entry is the
//! hash of the chunks before it, and the sender's signature verifies over
//! the header hash, the plaintext length, the chunk count and the root.
//!
//! A server runs an [`ObjectVerifier`] over an upload as its bytes arrive,
//! one pass, no key: the root it ends with is the file's content identity
//! (the receipt, the ETag, the digest headers), equal to what the sender
//! computed while encrypting, and a commit can refuse an object that is not
//! what its header says, or not signed by the uploader. What it cannot
//! check is the payload's GCM tags (that takes the key): a recipient does.

use crate::header::{self, CoreHeader, TRAILER_LEN, Version};
use crate::identity::Sender;
use crate::stream::TAG_LEN;
use crate::trailer::Signed;
use crate::tree::{self, HASH_LEN, LeafHasher, TreeBuilder};
use crate::{Error, Result};

/// An object that verified: its header and what its sender signed.
#[derive(Clone, Debug)]
pub struct VerifiedObject {
    /// The core header.
    pub core: CoreHeader,
    /// Core header plus stanza section length.
    pub header_len: u64,
    /// What the signature covers (header hash, length, count, root).
    pub signed: Signed,
}

impl VerifiedObject {
    /// The signer the header names (whose signature verified).
    pub fn sender(&self) -> &Sender {
        &self.core.sender
    }
}

/// Verifies a version 2 object of a known total length, fed in pieces.
#[derive(Clone)]
pub struct ObjectVerifier {
    total: u64,
    received: u64,
    phase: Phase,
}

#[derive(Clone)]
enum Phase {
    Header(Vec<u8>),
    Payload(Box<Payload>),
    Trailer {
        payload: Box<Payload>,
        signature: Vec<u8>,
    },
    Failed,
}

#[derive(Clone)]
struct Payload {
    core: CoreHeader,
    header_len: u64,
    header_hash: [u8; 32],
    sealed_chunk: u64,
    chunk_count: u64,
    final_len: u64,
    index: u64,
    /// Bytes of the current chunk absorbed so far.
    in_chunk: u64,
    leaf: LeafHasher,
    tree: TreeBuilder,
    /// The entries the current chunk must be followed by, once known, and
    /// how many of them were compared.
    expected: Vec<u8>,
    compared: usize,
}

impl ObjectVerifier {
    /// A verifier for an object of exactly `total` bytes.
    pub fn new(total: u64) -> Self {
        Self {
            total,
            received: 0,
            phase: Phase::Header(Vec::new()),
        }
    }

    /// Bytes fed so far.
    pub fn received(&self) -> u64 {
        self.received
    }

    /// Feeds the next bytes of the object. Past the declared total, or on
    /// the first byte that breaks the format, it fails (and stays failed).
    pub fn update(&mut self, mut data: &[u8]) -> Result<()> {
        if self.received + data.len() as u64 > self.total {
            self.phase = Phase::Failed;
            return Err(Error::BadLayout);
        }
        self.received += data.len() as u64;
        while !data.is_empty() {
            let used = match self.step(data) {
                Ok(used) => used,
                Err(err) => {
                    self.phase = Phase::Failed;
                    return Err(err);
                }
            };
            data = &data[used..];
        }
        Ok(())
    }

    fn step(&mut self, data: &[u8]) -> Result<usize> {
        match &mut self.phase {
            Phase::Header(bytes) => {
                let need = header::header_bytes_needed(bytes)?;
                let take = need.min(data.len());
                bytes.extend_from_slice(&data[..take]);
                if header::header_bytes_needed(bytes)? == 0 {
                    let payload = Payload::start(bytes, self.total)?;
                    self.phase = Phase::Payload(Box::new(payload));
                }
                Ok(take)
            }
            Phase::Payload(payload) => {
                let (used, done) = payload.absorb(data)?;
                if done {
                    let Phase::Payload(payload) = std::mem::replace(&mut self.phase, Phase::Failed)
                    else {
                        unreachable!("matched above")
                    };
                    self.phase = Phase::Trailer {
                        payload,
                        signature: Vec::with_capacity(TRAILER_LEN),
                    };
                }
                Ok(used)
            }
            Phase::Trailer { signature, .. } => {
                let take = (TRAILER_LEN - signature.len()).min(data.len());
                signature.extend_from_slice(&data[..take]);
                Ok(take)
            }
            Phase::Failed => Err(Error::Crypto("verification already failed")),
        }
    }

    /// Checks the signature once all `total` bytes were fed.
    pub fn finish(self) -> Result<VerifiedObject> {
        if self.received != self.total {
            return Err(Error::Truncated("the object is incomplete"));
        }
        let Phase::Trailer { payload, signature } = self.phase else {
            return Err(Error::Truncated("the object ends before its signature"));
        };
        let signature: [u8; 64] = signature
            .as_slice()
            .try_into()
            .map_err(|_| Error::Truncated("signature"))?;
        let root = payload.tree.root().ok_or(Error::Crypto("empty tree"))?;
        let chunk = u64::from(payload.core.chunk_size);
        let signed = Signed {
            header_hash: payload.header_hash,
            plaintext_len: (payload.chunk_count - 1) * chunk + payload.final_len - TAG_LEN as u64,
            chunk_count: payload.chunk_count,
            root,
        };
        signed.verify(&payload.core.sender, &signature)?;
        Ok(VerifiedObject {
            core: payload.core,
            header_len: payload.header_len,
            signed,
        })
    }
}

impl Payload {
    fn start(header_bytes: &[u8], total: u64) -> Result<Self> {
        let (core, _) = CoreHeader::parse(header_bytes)?;
        if core.version != Version::V2 {
            return Err(Error::UnsupportedVersion(core.version.number()));
        }
        let header_len = header_bytes.len() as u64;
        let sealed_chunk = u64::from(core.chunk_size) + TAG_LEN as u64;
        let payload_len = total
            .checked_sub(header_len + TRAILER_LEN as u64)
            .ok_or(Error::Truncated("payload or trailer missing"))?;
        let (chunk_count, final_len) =
            tree::layout_of(payload_len, sealed_chunk).ok_or(Error::BadLayout)?;
        Ok(Self {
            header_hash: core.hash(),
            core,
            header_len,
            sealed_chunk,
            chunk_count,
            final_len,
            index: 0,
            in_chunk: 0,
            leaf: LeafHasher::new(0),
            tree: TreeBuilder::new(),
            expected: Vec::with_capacity(tree::MAX_ENTRIES_PER_CHUNK * HASH_LEN),
            compared: 0,
        })
    }

    fn chunk_len(&self) -> u64 {
        if self.index + 1 == self.chunk_count {
            self.final_len
        } else {
            self.sealed_chunk
        }
    }

    /// Takes bytes of the current chunk or its entries. Returns how many it
    /// used and whether the payload is complete.
    fn absorb(&mut self, data: &[u8]) -> Result<(usize, bool)> {
        let chunk_len = self.chunk_len();
        if self.in_chunk < chunk_len {
            let take = ((chunk_len - self.in_chunk) as usize).min(data.len());
            self.leaf.update(&data[..take]);
            self.in_chunk += take as u64;
            if self.in_chunk == chunk_len {
                self.expected.clear();
                self.compared = 0;
                self.tree.push(self.leaf.finish(), &mut self.expected);
            }
            return Ok((take, false));
        }
        let take = (self.expected.len() - self.compared).min(data.len());
        if data[..take] != self.expected[self.compared..self.compared + take] {
            return Err(Error::TreeMismatch { index: self.index });
        }
        self.compared += take;
        if self.compared < self.expected.len() {
            return Ok((take, false));
        }
        self.index += 1;
        self.in_chunk = 0;
        self.leaf.restart(self.index);
        Ok((take, self.index == self.chunk_count))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{EncryptOptions, Identity, Stanzas, prepare};

    fn object(len: usize) -> (Identity, Vec<u8>) {
        let alice = Identity::generate().unwrap();
        let me = [alice.public().clone()];
        let mut options = EncryptOptions::new(&me, &alice);
        options.chunk_size = 256;
        let mut w = prepare(options)
            .unwrap()
            .writer(Vec::new(), Stanzas::Detached)
            .unwrap();
        std::io::Write::write_all(&mut w, &vec![7u8; len]).unwrap();
        let (file, _) = w.finish().unwrap();
        (alice, file)
    }

    #[test]
    fn verifies_in_any_pieces_and_finds_the_signed_root() {
        for len in [0usize, 1, 255, 256, 257, 2000] {
            let (alice, file) = object(len);
            for piece in [1usize, 7, 300, file.len()] {
                let mut v = ObjectVerifier::new(file.len() as u64);
                for part in file.chunks(piece) {
                    v.update(part).unwrap();
                }
                let verified = v.finish().unwrap();
                assert!(verified.sender().is(alice.public()));
                assert_eq!(verified.signed.plaintext_len, len as u64);
            }
        }
    }

    #[test]
    fn refuses_damage_without_a_key() {
        let (_, file) = object(2000);
        let check = |bytes: &[u8]| {
            let mut v = ObjectVerifier::new(bytes.len() as u64);
            v.update(bytes).and_then(|()| v.finish().map(drop))
        };
        assert!(check(&file).is_ok());
        for at in (0..file.len()).step_by(37) {
            let mut bad = file.clone();
            bad[at] ^= 1;
            // A flipped bit inside a chunk's ciphertext changes its leaf; in
            // the header, the hash or a bound; in an entry or signature, the
            // comparison. A tag bit is only visible with the key: it changes
            // the leaf too, because the leaf covers the sealed bytes.
            assert!(check(&bad).is_err(), "byte {at}");
        }
        assert!(check(&file[..file.len() - 1]).is_err());
        let mut v = ObjectVerifier::new(file.len() as u64 - 1);
        assert!(v.update(&file).is_err(), "more than declared");
    }
}
