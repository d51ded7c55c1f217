//! Helpers shared by the integration tests.
#![allow(dead_code)]

pub mod craft;

use coffer_format::{EncryptOptions, Identity, Metadata, PublicIdentity, Stanzas, prepare};

/// Deterministic pseudo-random test data (xorshift), so failures reproduce.
pub fn data(len: usize, seed: u64) -> Vec<u8> {
    let mut state = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state >> 24) as u8
        })
        .collect()
}

pub struct Party {
    pub id: Identity,
}

impl Party {
    pub fn new() -> Self {
        Self {
            id: Identity::generate().unwrap(),
        }
    }
    pub fn public(&self) -> PublicIdentity {
        self.id.public().clone()
    }
}

/// Encrypts `plain` from `sender` to `recipients` as a self-contained file.
pub fn seal(sender: &Identity, recipients: &[PublicIdentity], plain: &[u8], chunk: u32) -> Vec<u8> {
    seal_with(
        sender,
        recipients,
        plain,
        chunk,
        Metadata::default(),
        Stanzas::Embedded,
    )
}

pub fn seal_with(
    sender: &Identity,
    recipients: &[PublicIdentity],
    plain: &[u8],
    chunk: u32,
    metadata: Metadata,
    placement: Stanzas,
) -> Vec<u8> {
    let mut options = EncryptOptions::new(recipients, sender);
    options.chunk_size = chunk;
    options.metadata = metadata;
    let mut w = prepare(options)
        .unwrap()
        .writer(Vec::new(), placement)
        .unwrap();
    std::io::Write::write_all(&mut w, plain).unwrap();
    w.finish().unwrap().0
}

/// Decrypts into a vector; on failure returns the error together with
/// whatever plaintext the reader had released before failing.
pub fn open(id: &Identity, file: &[u8]) -> Result<Vec<u8>, (coffer_format::Error, Vec<u8>)> {
    open_with_threads(id, file, 1)
}

/// [`open`] with a reader that opens chunks on `threads` threads.
pub fn open_with_threads(
    id: &Identity,
    file: &[u8],
    threads: usize,
) -> Result<Vec<u8>, (coffer_format::Error, Vec<u8>)> {
    let mut out = Vec::new();
    let mut input = file;
    let result = coffer_format::Header::read_from(&mut input)
        .and_then(|header| header.open(id, &[]))
        .and_then(|opened| opened.decryptor(input)?.with_threads(threads))
        .and_then(|decryptor| decryptor.copy_to(&mut out));
    match result {
        Ok(_) => Ok(out),
        Err(err) => Err((err, out)),
    }
}

/// Offsets of the parts of a version 2 file: each sealed chunk, the tree
/// entries stored after it, and the signature.
pub struct Layout {
    pub header_len: usize,
    pub chunks: Vec<std::ops::Range<usize>>,
    pub entries: Vec<std::ops::Range<usize>>,
    pub trailer: std::ops::Range<usize>,
}

pub fn layout(file: &[u8], chunk: u32) -> Layout {
    use coffer_format::tree;
    let (_, header_len) = coffer_format::Header::parse(file).unwrap();
    let sealed = chunk as u64 + 16;
    let trailer_start = file.len() - coffer_format::header::TRAILER_LEN;
    let (n, final_len) = tree::layout_of((trailer_start - header_len) as u64, sealed).unwrap();
    let mut chunks = Vec::new();
    let mut entries = Vec::new();
    for i in 0..n {
        let start = header_len + tree::chunk_offset(i, sealed) as usize;
        let len = if i + 1 == n { final_len } else { sealed } as usize;
        chunks.push(start..start + len);
        let count = tree::entries_after(i) as usize * 32;
        entries.push(start + len..start + len + count);
    }
    assert_eq!(entries.last().unwrap().end, trailer_start);
    Layout {
        header_len,
        chunks,
        entries,
        trailer: trailer_start..file.len(),
    }
}
