//! Writing coffer files (always version 2).
//!
//! [`prepare`] builds the header (fresh file key and salt, file id,
//! encrypted metadata, header MAC, one stanza per recipient). Then either
//!
//! * [`Prepared::writer`] streams the payload through [`Encryptor`], a
//!   [`std::io::Write`] for input of any length (`coffer encrypt` from a
//!   pipe); [`Encryptor::finish`] seals the final chunk and writes the
//!   signature; or
//! * [`Prepared::units`] encodes input of a known length in units, each
//!   read straight into its place in the caller's send buffer, sealed there
//!   and identified by a digest: the resumable upload path.
//!   [`UnitEncoder::resume`] re-encrypts a file written before under its
//!   own key, and **refuses to produce a unit that differs from the
//!   recorded one**, so re-using the key on changed input (the nonce reuse
//!   STREAM forbids) cannot happen through this API.
//!
//! Dropping either without finishing leaves a file that no reader accepts
//! (no final chunk, no signature).

use std::io::{self, Write};

use zeroize::Zeroizing;

use crate::decrypt::OpenedHeader;
use crate::header::{self, CoreHeader, FILE_ID_LEN, Stanza, Version};
use crate::identity::{Identity, PublicIdentity};
use crate::keys::{DerivedKeys, FileKey, random_array, seal_once};
use crate::metadata::Metadata;
use crate::recipient::wrap_file_key;
use crate::stream::{Reserved, StreamSealer, TAG_LEN};
use crate::trailer::Signed;
use crate::tree::{self, HASH_LEN, Hash, TreeBuilder};
use crate::{Error, Result};

/// What to encrypt to, and how.
pub struct EncryptOptions<'a> {
    /// Who can decrypt. At least one, at most `MAX_STANZAS`.
    pub recipients: &'a [PublicIdentity],
    /// Who signs. Its public identity is recorded in the header.
    pub signer: &'a Identity,
    /// Encrypted into the header.
    pub metadata: Metadata,
    /// Plaintext bytes per chunk (`MIN_CHUNK_SIZE..=MAX_CHUNK_SIZE`).
    pub chunk_size: u32,
    /// The file id to record (a server object's id); random if `None`.
    pub file_id: Option<[u8; FILE_ID_LEN]>,
    /// Threads that seal and hash chunks (chunks are independent until the
    /// tree joins their leaves), the caller's included: 1 seals on the
    /// caller's thread only. [`encrypt()`] also reads and writes on the
    /// caller's thread, and gives it chunks to seal when the others are busy.
    pub threads: usize,
}

impl<'a> EncryptOptions<'a> {
    /// Options with the default chunk size, empty metadata and a random id.
    pub fn new(recipients: &'a [PublicIdentity], signer: &'a Identity) -> Self {
        Self {
            recipients,
            signer,
            metadata: Metadata::default(),
            chunk_size: header::DEFAULT_CHUNK_SIZE,
            file_id: None,
            threads: 1,
        }
    }
}

/// Where the recipient stanzas go when the header is written.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stanzas {
    /// In the file (a self-contained file, as `coffer encrypt` writes).
    Embedded,
    /// Not in the file (count 0); the caller stores them elsewhere, e.g. a
    /// server database, and passes them to the reader.
    Detached,
}

/// A header ready to be written, with the keys needed for the payload.
pub struct Prepared<'a> {
    core: CoreHeader,
    stanzas: Vec<Stanza>,
    file_key: FileKey,
    keys: DerivedKeys,
    header_hash: [u8; 32],
    signer: &'a Identity,
    expected_len: Option<u64>,
    threads: usize,
}

/// Builds the header for a new file.
pub fn prepare<'a>(options: EncryptOptions<'a>) -> Result<Prepared<'a>> {
    let recipients = options.recipients;
    if recipients.is_empty() {
        return Err(Error::NoRecipients);
    }
    if recipients.len() > header::MAX_STANZAS {
        return Err(Error::TooManyRecipients {
            given: recipients.len(),
            max: header::MAX_STANZAS,
        });
    }
    header::check_chunk_size(options.chunk_size)?;
    let metadata_plain = Zeroizing::new(options.metadata.encode()?);

    let file_key = FileKey::generate()?;
    let salt: [u8; 32] = random_array()?;
    let file_id = match options.file_id {
        Some(id) => id,
        None => random_array()?,
    };
    let keys = DerivedKeys::derive(Version::V2, &file_key, &salt)?;
    let mut core = CoreHeader {
        version: Version::V2,
        chunk_size: options.chunk_size,
        file_id,
        salt,
        sender: options.signer.public().sender(),
        // Sized now so the fixed prefix (the metadata's AAD) has its length.
        metadata_ct: vec![0; metadata_plain.len() + TAG_LEN],
        mac: [0; 32],
    };
    let aad = core.fixed_prefix();
    let mut metadata_ct = metadata_plain.to_vec();
    seal_once(&keys.metadata, &aad, &mut metadata_ct)?;
    core.metadata_ct = metadata_ct;
    core.mac = keys.header_mac(&core.mac_input());
    let header_hash = core.hash();
    let stanzas = recipients
        .iter()
        .map(|recipient| wrap_file_key(&file_key, &header_hash, recipient))
        .collect::<Result<Vec<_>>>()?;
    Ok(Prepared {
        core,
        stanzas,
        file_key,
        keys,
        header_hash,
        signer: options.signer,
        expected_len: options.metadata.size,
        threads: options.threads.max(1),
    })
}

/// Total encoded length of a version 2 file: `header_len` header bytes,
/// then the payload of `plaintext_len` bytes in chunks of `chunk_size` (an
/// empty file still has one, empty, final chunk) with their tree entries,
/// then the signature. A server upload must declare this before the first
/// byte is sent.
pub fn encoded_len(header_len: u64, chunk_size: u32, plaintext_len: u64) -> u64 {
    let chunk = u64::from(chunk_size);
    let chunks = plaintext_len.div_ceil(chunk).max(1);
    let final_plain = plaintext_len - (chunks - 1) * chunk;
    let payload = tree::payload_len(chunks, chunk + TAG_LEN as u64, final_plain + TAG_LEN as u64)
        .unwrap_or(u64::MAX);
    header_len
        .saturating_add(payload)
        .saturating_add(header::TRAILER_LEN as u64)
}

impl<'a> Prepared<'a> {
    /// Rebuilds the writer state of a file whose header was written before.
    /// Crate-private: the only way in from outside is [`UnitEncoder::resume`],
    /// which refuses changed input.
    fn reopen(opened: OpenedHeader, signer: &'a Identity) -> Result<Self> {
        if !opened.core().sender.is(signer.public()) {
            return Err(Error::Crypto("the header was written by another sender"));
        }
        if opened.core().version != Version::V2 {
            return Err(Error::Crypto("only version 2 files can be resumed"));
        }
        let parts = opened.into_parts();
        Ok(Prepared {
            core: parts.core,
            stanzas: Vec::new(),
            file_key: parts.file_key,
            keys: parts.keys,
            header_hash: parts.header_hash,
            signer,
            expected_len: parts.metadata.size,
            threads: 1,
        })
    }

    /// Length of the whole encoded file for `plaintext_len` bytes of input.
    pub fn encoded_len(&self, placement: Stanzas, plaintext_len: u64) -> Result<u64> {
        let header_len = self.header_bytes(placement)?.len() as u64;
        Ok(encoded_len(header_len, self.core.chunk_size, plaintext_len))
    }

    /// The core header (authenticated, signed, stored with the object).
    pub fn core(&self) -> &CoreHeader {
        &self.core
    }

    /// Threads that may seal (see [`EncryptOptions::threads`]).
    pub(crate) fn threads(&self) -> usize {
        self.threads
    }

    /// SHA-256 of the core header.
    pub fn header_hash(&self) -> &[u8; 32] {
        &self.header_hash
    }

    /// One stanza per recipient, in the order given.
    pub fn stanzas(&self) -> &[Stanza] {
        &self.stanzas
    }

    /// The file key, for wrapping to further recipients later.
    pub fn file_key(&self) -> &FileKey {
        &self.file_key
    }

    /// Core header followed by the stanza section.
    pub fn header_bytes(&self, placement: Stanzas) -> Result<Vec<u8>> {
        let mut out = self.core.to_bytes();
        let stanzas: &[Stanza] = match placement {
            Stanzas::Embedded => &self.stanzas,
            Stanzas::Detached => &[],
        };
        out.extend_from_slice(&header::encode_stanzas(stanzas)?);
        Ok(out)
    }

    /// Writes the header to `out` and returns the payload writer.
    pub fn writer<W: Write>(self, mut out: W, placement: Stanzas) -> Result<Encryptor<'a, W>> {
        out.write_all(&self.header_bytes(placement)?)?;
        Ok(Encryptor {
            out,
            core: EncoderCore::new(self)?,
        })
    }

    /// A unit encoder for a fresh upload of exactly the size the metadata
    /// declares (required), with stanzas detached.
    pub fn units(self, unit_len: u64) -> Result<UnitEncoder<'a>> {
        UnitEncoder::new(self, unit_len, Vec::new())
    }
}

/// Summary of a finished file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Written {
    /// Plaintext bytes encrypted.
    pub plaintext_len: u64,
    /// Number of payload chunks.
    pub chunks: u64,
    /// Root of the content tree (signed; the server computes the same).
    pub root: Hash,
    /// SHA-256 of the core header.
    pub header_hash: [u8; 32],
}

/// Sealing state shared by every payload writer: the STREAM sealer, the
/// content tree, and what the signature needs. It seals chunks in place
/// in the caller's buffer and puts their tags and tree entries there.
pub(crate) struct PayloadEncoder<'a> {
    sealer: StreamSealer,
    tree: TreeBuilder,
    /// Index of the next chunk whose leaf joins the tree: chunks are
    /// sealed in any order but joined in index order.
    joined: u64,
    plaintext_len: u64,
    prepared: Prepared<'a>,
    /// Entries of one chunk, as the tree emits them.
    scratch: Vec<u8>,
}

/// Full, non-final chunks reserved by [`PayloadEncoder::reserve_laid_out`],
/// to be sealed on any thread (their indices are taken, so nothing else
/// can seal under them) and then handed back, in order, to
/// [`PayloadEncoder::join_laid_out`].
pub(crate) struct SealJob {
    reserved: Reserved,
    chunk: usize,
}

impl SealJob {
    /// The index of the first chunk.
    pub(crate) fn first(&self) -> u64 {
        self.reserved.first()
    }

    /// Seals the chunks laid out in `region` (each chunk's plaintext
    /// followed by room for its [`gap_after`]) in place and returns their
    /// leaves, in order. The tree entries are left for `join_laid_out`.
    pub(crate) fn seal(self, region: &mut [u8]) -> Result<Vec<Hash>> {
        let count = self.reserved.len() as usize;
        let (mut slots, _) = split_laid_out(region, self.chunk, self.first(), count)?;
        self.reserved.seal(&mut slots, tree::leaf)
    }
}

/// Each chunk's slot (plaintext, then room for its tag), and the room for
/// each chunk's tree entries after it.
type LaidOut<'r> = (Vec<&'r mut [u8]>, Vec<&'r mut [u8]>);

/// Cuts a region laid out for `count` chunks from index `first` into
/// [`LaidOut`] parts.
fn split_laid_out(
    region: &mut [u8],
    chunk: usize,
    first: u64,
    count: usize,
) -> Result<LaidOut<'_>> {
    let need: usize = (first..first + count as u64)
        .map(|index| chunk + gap_after(index))
        .sum();
    if region.len() != need {
        return Err(Error::Crypto("a region not laid out for its chunks"));
    }
    let (mut slots, mut entry_slots) = (Vec::with_capacity(count), Vec::with_capacity(count));
    let mut rest = region;
    for index in first..first + count as u64 {
        let entries = gap_after(index) - TAG_LEN;
        let (slot, after) = rest.split_at_mut(chunk + TAG_LEN);
        let (entry_slot, after) = after.split_at_mut(entries);
        slots.push(slot);
        entry_slots.push(entry_slot);
        rest = after;
    }
    Ok((slots, entry_slots))
}

impl<'a> PayloadEncoder<'a> {
    pub(crate) fn new(prepared: Prepared<'a>) -> Result<Self> {
        Ok(Self {
            sealer: StreamSealer::new(&prepared.keys.payload)?,
            tree: TreeBuilder::new(),
            joined: 0,
            plaintext_len: 0,
            prepared,
            scratch: Vec::with_capacity(tree::MAX_ENTRIES_PER_CHUNK * HASH_LEN),
        })
    }

    fn chunk_size(&self) -> usize {
        self.prepared.core.chunk_size as usize
    }

    /// Seals `count` full, non-final chunks laid out in `region` (each
    /// chunk's plaintext followed by room for its [`gap_after`]) in
    /// place, on up to `threads` threads, then joins their leaves to the
    /// tree in order and writes their entries.
    pub(crate) fn seal_laid_out(&mut self, region: &mut [u8], count: usize) -> Result<()> {
        let first = self.sealer.next_index();
        let (mut slots, _) = split_laid_out(region, self.chunk_size(), first, count)?;
        let leaves = self
            .sealer
            .seal_many(&mut slots, self.prepared.threads, tree::leaf)?;
        self.join_laid_out(region, first, &leaves)
    }

    /// Takes the next `count` chunk indices for a [`SealJob`].
    pub(crate) fn reserve_laid_out(&mut self, count: usize) -> Result<SealJob> {
        Ok(SealJob {
            reserved: self.sealer.reserve(count as u64)?,
            chunk: self.chunk_size(),
        })
    }

    /// Joins the leaves of the sealed chunks from index `first` laid out
    /// in `region` to the tree and writes their entries there. Chunks must
    /// be joined in index order, each once.
    pub(crate) fn join_laid_out(
        &mut self,
        region: &mut [u8],
        first: u64,
        leaves: &[Hash],
    ) -> Result<()> {
        if first != self.joined {
            return Err(Error::Crypto("sealed chunks joined out of order"));
        }
        let count = leaves.len();
        let (_, entry_slots) = split_laid_out(region, self.chunk_size(), first, count)?;
        for (leaf, entry_slot) in leaves.iter().zip(entry_slots) {
            self.scratch.clear();
            self.tree.push(*leaf, &mut self.scratch);
            entry_slot.copy_from_slice(&self.scratch);
        }
        self.joined += count as u64;
        self.plaintext_len += (count * self.chunk_size()) as u64;
        Ok(())
    }

    /// Seals the final plaintext chunk `buf[start..]` in place, appends its
    /// tag, its entries and the signature.
    pub(crate) fn seal_last(mut self, buf: &mut Vec<u8>, start: usize) -> Result<Written> {
        let plain = (buf.len() - start) as u64;
        self.plaintext_len += plain;
        let index = self.sealer.next_index();
        if self.joined != index {
            return Err(Error::Crypto(
                "the final chunk sealed before the others joined",
            ));
        }
        if plain == 0 && index > 0 {
            return Err(Error::Crypto("an empty final chunk after other chunks"));
        }
        if self
            .prepared
            .expected_len
            .is_some_and(|expected| expected != self.plaintext_len)
        {
            return Err(Error::InputChanged("length differs from the metadata size"));
        }
        self.sealer.seal_last_at(buf, start)?;
        let leaf = tree::leaf(index, &buf[start..]);
        self.tree.push(leaf, buf);
        let root = self.tree.root().ok_or(Error::Crypto("empty tree"))?;
        let signed = Signed {
            header_hash: self.prepared.header_hash,
            plaintext_len: self.plaintext_len,
            chunk_count: index + 1,
            root,
        };
        buf.extend_from_slice(&signed.sign(self.prepared.signer));
        Ok(Written {
            plaintext_len: self.plaintext_len,
            chunks: index + 1,
            root,
            header_hash: self.prepared.header_hash,
        })
    }
}

/// Bytes that follow chunk `index`'s plaintext in the file: its tag and its
/// tree entries.
pub(crate) fn gap_after(index: u64) -> usize {
    TAG_LEN + tree::entries_after(index) as usize * HASH_LEN
}

/// Plaintext a streaming writer gathers before sealing it as one batch (so
/// chunks can be sealed on several threads).
pub(crate) const BATCH_BYTES: usize = 2 * 1024 * 1024;

/// The chunking state machine shared by the sync and async writers. It
/// copies plaintext straight into its output buffer, laid out as the file
/// will be (room for each chunk's tag and tree entries after it), seals a
/// batch of chunks there in place, and hands the buffer out as `pending`; it
/// never does I/O. One copy per byte on the way in.
pub(crate) struct EncoderCore<'a> {
    payload: Option<PayloadEncoder<'a>>,
    /// `closed` chunks (plaintext, then room for tag and entries), then the
    /// open chunk's `open` plaintext bytes; once sealed, the bytes to write
    /// (with the signature at the end).
    out: Vec<u8>,
    /// Chunks of this batch known not to be final: more data came after.
    closed: usize,
    /// Plaintext bytes of the open chunk, at the end of `out`.
    open: usize,
    /// Bytes of `out` sealed and ready to write (0 while staging).
    sealed: usize,
    /// Bytes of `out` already handed to the output.
    written: usize,
    chunk_size: usize,
    batch: usize,
    summary: Option<Written>,
}

impl<'a> EncoderCore<'a> {
    pub(crate) fn new(prepared: Prepared<'a>) -> Result<Self> {
        let chunk_size = prepared.core.chunk_size as usize;
        let batch = (BATCH_BYTES / chunk_size).max(1);
        Ok(Self {
            payload: Some(PayloadEncoder::new(prepared)?),
            out: Vec::with_capacity(batch * (chunk_size + TAG_LEN + 2 * HASH_LEN) + 4096),
            closed: 0,
            open: 0,
            sealed: 0,
            written: 0,
            chunk_size,
            batch,
            summary: None,
        })
    }

    /// Sealed bytes waiting to be written.
    pub(crate) fn pending(&self) -> &[u8] {
        &self.out[self.written..self.sealed]
    }

    /// Records that `n` pending bytes were written.
    pub(crate) fn consume(&mut self, n: usize) {
        self.written += n;
        if self.written == self.sealed && self.summary.is_none() {
            self.out.clear();
            self.written = 0;
            self.sealed = 0;
        }
    }

    /// Takes plaintext into the open chunk. A full open chunk is closed (as
    /// non-final) only when more data arrives, since until then it may be
    /// the final one; a batch of closed chunks is then sealed, 0 is
    /// returned and `pending` must be drained.
    pub(crate) fn accept(&mut self, data: &[u8]) -> Result<usize> {
        if !self.pending().is_empty() || data.is_empty() {
            return Ok(0);
        }
        let payload = self
            .payload
            .as_mut()
            .ok_or(Error::Crypto("write after finish"))?;
        if self.open == self.chunk_size {
            let index = payload.sealer.next_index() + self.closed as u64;
            self.out.resize(self.out.len() + gap_after(index), 0);
            self.closed += 1;
            self.open = 0;
            if self.closed == self.batch {
                payload.seal_laid_out(&mut self.out, self.closed)?;
                self.closed = 0;
                self.sealed = self.out.len();
                return Ok(0);
            }
        }
        let take = data.len().min(self.chunk_size - self.open);
        self.out.extend_from_slice(&data[..take]);
        self.open += take;
        Ok(take)
    }

    /// Seals what is left, the open chunk as final, and appends the
    /// signature to `pending`. Call once `pending` is empty.
    pub(crate) fn finish(&mut self) -> Result<()> {
        if let Some(mut payload) = self.payload.take() {
            debug_assert!(self.pending().is_empty(), "finish with output pending");
            let last_start = self.out.len() - self.open;
            payload.seal_laid_out(&mut self.out[..last_start], self.closed)?;
            self.summary = Some(payload.seal_last(&mut self.out, last_start)?);
            self.closed = 0;
            self.open = 0;
            self.sealed = self.out.len();
        }
        Ok(())
    }

    /// The summary, once `finish` ran and everything was written.
    pub(crate) fn summary(&self) -> Option<&Written> {
        self.summary.as_ref().filter(|_| self.pending().is_empty())
    }
}

/// Streams plaintext into a coffer payload. See the module docs.
pub struct Encryptor<'a, W: Write> {
    out: W,
    core: EncoderCore<'a>,
}

impl<W: Write> Encryptor<'_, W> {
    /// Seals the final chunk, writes the signature, flushes, and returns the
    /// inner writer with a summary.
    pub fn finish(mut self) -> Result<(W, Written)> {
        self.drain()?;
        self.core.finish()?;
        self.drain()?;
        self.out.flush()?;
        let summary = self
            .core
            .summary()
            .cloned()
            .ok_or(Error::Crypto("unfinished"))?;
        Ok((self.out, summary))
    }

    fn drain(&mut self) -> io::Result<()> {
        let pending = self.core.pending();
        if !pending.is_empty() {
            let n = pending.len();
            self.out.write_all(pending)?;
            self.core.consume(n);
        }
        Ok(())
    }
}

impl<W: Write> Write for Encryptor<'_, W> {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        loop {
            self.drain()?;
            let taken = self.core.accept(data)?;
            if taken > 0 || data.is_empty() {
                return Ok(taken);
            }
        }
    }

    /// Flushes the inner writer. A partially filled chunk stays buffered:
    /// sealing it early would fix its length and change the format.
    fn flush(&mut self) -> io::Result<()> {
        self.drain()?;
        self.out.flush()
    }
}

/// Identifies the output of one unit: the root of the tree over every
/// chunk up to the unit's end (so it also vouches for all units before it).
pub type UnitDigest = Hash;

/// Encodes plaintext of a known length in units of `unit_len` bytes (a
/// multiple of the chunk size), for resumable uploads. See the module docs.
pub struct UnitEncoder<'a> {
    payload: Option<PayloadEncoder<'a>>,
    header: Vec<u8>,
    unit_len: u64,
    total: u64,
    next_unit: usize,
    /// Digests of the units produced when this file was first encrypted.
    recorded: Vec<UnitDigest>,
}

impl<'a> UnitEncoder<'a> {
    fn new(prepared: Prepared<'a>, unit_len: u64, recorded: Vec<UnitDigest>) -> Result<Self> {
        let chunk = u64::from(prepared.core.chunk_size);
        if unit_len == 0 || !unit_len.is_multiple_of(chunk) {
            return Err(Error::Crypto(
                "the unit length must be a multiple of the chunk size",
            ));
        }
        let total = prepared.expected_len.ok_or(Error::Crypto(
            "unit encoding needs the size in the metadata",
        ))?;
        let header = prepared.header_bytes(Stanzas::Detached)?;
        Ok(Self {
            payload: Some(PayloadEncoder::new(prepared)?),
            header,
            unit_len,
            total,
            next_unit: 0,
            recorded,
        })
    }

    /// Re-encrypts a file first written by [`Prepared::units`], under its
    /// own key and header, to resume an upload. `recorded` are the digests
    /// that run reported, in order; each unit this encoder produces must
    /// match the recorded one at its position, or it fails with
    /// [`Error::InputChanged`] and hands out nothing of that unit.
    pub fn resume(
        opened: OpenedHeader,
        signer: &'a Identity,
        unit_len: u64,
        recorded: Vec<UnitDigest>,
    ) -> Result<Self> {
        Self::new(Prepared::reopen(opened, signer)?, unit_len, recorded)
    }

    /// Seals on up to `threads` threads (see [`EncryptOptions::threads`]).
    pub fn with_threads(mut self, threads: usize) -> Self {
        if let Some(payload) = self.payload.as_mut() {
            payload.prepared.threads = threads.max(1);
        }
        self
    }

    /// Total encoded length (detached stanzas).
    pub fn encoded_len(&self) -> u64 {
        let chunk = self
            .payload
            .as_ref()
            .map_or(header::DEFAULT_CHUNK_SIZE, |p| p.prepared.core.chunk_size);
        encoded_len(self.header.len() as u64, chunk, self.total)
    }

    /// Plaintext bytes the next unit must have: `unit_len`, less for the last.
    pub fn next_unit_len(&self) -> u64 {
        let done = self.next_unit as u64 * self.unit_len;
        self.unit_len.min(self.total.saturating_sub(done))
    }

    /// Whether the final unit was encoded.
    pub fn is_finished(&self) -> bool {
        self.payload.is_none()
    }

    /// Encodes the next unit, reading its plaintext
    /// ([`UnitEncoder::next_unit_len`] bytes) from `input` straight into its
    /// place in `out`: vectored reads into the slots of the chunks, laid out
    /// as the file will be, then sealed there in place. `out` then holds
    /// exactly the unit's bytes (the header in front of the first unit, the
    /// signature after the last), ready to be sent; whatever it held before
    /// is overwritten, its length reused without being zeroed again (a
    /// recycled send buffer). Returns the unit's digest, and the summary
    /// after the last unit.
    ///
    /// Input that ends early, or that goes on after the last unit, is
    /// [`Error::InputChanged`]. On any error `out` is left empty: nothing of
    /// a failed unit is handed out, and the encoder is spent.
    pub fn encode_unit<R: io::Read>(
        &mut self,
        input: &mut R,
        out: &mut Vec<u8>,
    ) -> Result<(UnitDigest, Option<Written>)> {
        // Taken for good: an encoder that failed is spent (fail closed).
        let Some(mut payload) = self.payload.take() else {
            out.clear();
            return Err(Error::Crypto("encode after the last unit"));
        };
        let want = self.next_unit_len() as usize;
        let last_unit = (self.next_unit as u64 + 1) * self.unit_len >= self.total;
        let header = (self.next_unit == 0).then_some(&self.header[..]);
        let sealed = (|| -> Result<(UnitDigest, Option<Written>, Option<PayloadEncoder<'a>>)> {
            let chunk = payload.chunk_size();
            // Every chunk of a unit is full and not final, except in the
            // last unit, whose final chunk is its last 1..=chunk bytes (0
            // for an empty file).
            let full = if last_unit {
                want.saturating_sub(1) / chunk
            } else {
                want / chunk
            };
            let first = payload.sealer.next_index();
            let header_len = header.map_or(0, <[u8]>::len);
            let region_len: usize = (0..full).map(|j| chunk + gap_after(first + j as u64)).sum();
            let final_len = want - full * chunk;
            let laid_out = header_len + region_len + final_len;
            // The final chunk's tag and entries and the trailer follow it.
            let unit_len = laid_out
                + if last_unit {
                    gap_after(first + full as u64) + header::TRAILER_LEN
                } else {
                    0
                };
            // Room for the whole unit at once: never regrown (and copied)
            // while it is sealed.
            out.reserve(unit_len.saturating_sub(out.len()));
            out.resize(laid_out, 0);
            let (head, body) = out.split_at_mut(header_len);
            if let Some(header) = header {
                head.copy_from_slice(header);
            }
            let (region, final_slot) = body.split_at_mut(region_len);
            let mut slots = plaintext_slots(region, chunk, first, full);
            if final_len > 0 {
                slots.push(final_slot);
            }
            if read_into(input, &mut slots)? < want {
                return Err(Error::InputChanged(
                    "the input is shorter than the size the header declares",
                ));
            }
            if last_unit && has_more(input)? {
                return Err(Error::InputChanged(
                    "the input grew past the size the header declares",
                ));
            }
            payload.seal_laid_out(&mut out[header_len..header_len + region_len], full)?;
            if last_unit {
                let written = payload.seal_last(out, header_len + region_len)?;
                debug_assert_eq!(out.len(), unit_len, "the unit is as long as laid out");
                Ok((written.root, Some(written), None))
            } else {
                let root = payload.tree.root().ok_or(Error::Crypto("empty tree"))?;
                Ok((root, None, Some(payload)))
            }
        })();
        let (digest, summary, kept) = match sealed {
            Ok(done) => done,
            Err(err) => {
                out.clear();
                return Err(err);
            }
        };
        if let Some(known) = self.recorded.get(self.next_unit)
            && *known != digest
        {
            out.clear();
            return Err(Error::InputChanged(
                "the input differs from the recorded upload",
            ));
        }
        self.payload = kept;
        self.next_unit += 1;
        Ok((digest, summary))
    }
}

/// The plaintext slot of each of `count` full chunks laid out in `region`
/// (each chunk's plaintext followed by room for its [`gap_after`]).
fn plaintext_slots(region: &mut [u8], chunk: usize, first: u64, count: usize) -> Vec<&mut [u8]> {
    let mut slots = Vec::with_capacity(count + 1);
    let mut rest = region;
    for j in 0..count {
        let (slot, after) = rest.split_at_mut(chunk);
        let (_room, after) = after.split_at_mut(gap_after(first + j as u64));
        slots.push(slot);
        rest = after;
    }
    debug_assert!(rest.is_empty(), "the region holds exactly `count` chunks");
    slots
}

/// Fills `slots` in order from `input` with vectored reads (a file: one
/// system call for a whole unit, not one per chunk); returns the bytes
/// read, fewer than the slots hold only where the input ended.
fn read_into<R: io::Read>(input: &mut R, slots: &mut [&mut [u8]]) -> io::Result<usize> {
    let mut buffers: Vec<io::IoSliceMut<'_>> = slots
        .iter_mut()
        .map(|slot| io::IoSliceMut::new(slot))
        .collect();
    let mut left = &mut buffers[..];
    let mut filled = 0;
    while !left.is_empty() {
        match input.read_vectored(left) {
            Ok(0) => break,
            Ok(n) => {
                filled += n;
                io::IoSliceMut::advance_slices(&mut left, n);
            }
            Err(err) if err.kind() == io::ErrorKind::Interrupted => {}
            Err(err) => return Err(err),
        }
    }
    Ok(filled)
}

/// Whether `input` has a byte more to give.
fn has_more<R: io::Read>(input: &mut R) -> io::Result<bool> {
    let mut probe = [0u8; 1];
    loop {
        match input.read(&mut probe) {
            Ok(n) => return Ok(n > 0),
            Err(err) if err.kind() == io::ErrorKind::Interrupted => {}
            Err(err) => return Err(err),
        }
    }
}

/// Encrypts everything from `input` to `output` as a self-contained file,
/// reading, sealing and writing at once (the crate's private `pipeline` module).
pub fn encrypt<R: io::Read, W: Write>(
    options: EncryptOptions<'_>,
    input: &mut R,
    output: W,
) -> Result<(W, Written)> {
    crate::pipeline::seal::encrypt(options, input, output)
}
