//! Reading coffer files (versions 1 and 2), as a sequence of states whose
//! types rule out using anything before it is authenticated:
//!
//! 1. [`Header`]: parsed and bounds-checked, nothing authenticated yet. Shows
//!    what `coffer inspect` may print.
//! 2. [`OpenedHeader`]: a stanza yielded the file key *and* the header MAC
//!    verified under it (key commitment), and the metadata decrypted.
//! 3. [`Decryptor`]: streams verified plaintext. Every chunk is authenticated
//!    (its GCM tag, and in version 2 its stored tree entries) before it is
//!    released; the final chunk is released only after the signature over
//!    the whole file verified. Until `read` returns `Ok(0)` (or
//!    [`Decryptor::copy_to`] returns), the output is not known to be
//!    complete: write it somewhere temporary.
//!
//! The framing (docs/FORMAT.md §7): chunk `i` is non-final exactly when
//! more than `S + E(i) + T` bytes remain from its start, where `S` is a full
//! sealed chunk, `E(i)` the tree entries stored after it (version 2) and `T`
//! the trailer. So the reader keeps a look-ahead window of `S + E(i) + T + 1`
//! bytes, bounded by the chunk size.

use std::io::{self, Read, Write};
use std::ops::Range;

use crate::digest::PlaintextDigest;
use crate::header::{self, CoreHeader, Stanza, Version};
use crate::identity::{Identity, Sender};
use crate::keys::{DerivedKeys, FileKey, open_once};
use crate::metadata::Metadata;
use crate::recipient::unwrap_file_key;
use crate::stream::{StreamOpener, StreamSealer, TAG_LEN};
use crate::trailer::{Signed, TrailerV1};
use crate::tree::{self, HASH_LEN, TreeBuilder};
use crate::{Error, Result};

/// A parsed, not yet authenticated header: core header plus stanza section.
#[derive(Clone, Debug)]
pub struct Header {
    core: CoreHeader,
    stanzas: Vec<Stanza>,
    encoded_len: usize,
}

impl Header {
    /// Reads the core header and the stanza section, leaving `reader` at the
    /// first payload byte (it never reads past the header). Allocates at most
    /// the spec's bounds.
    pub fn read_from(reader: &mut impl Read) -> Result<Self> {
        let mut bytes = Vec::new();
        loop {
            let need = header::header_bytes_needed(&bytes)?;
            if need == 0 {
                return Self::parse(&bytes).map(|(header, _)| header);
            }
            let start = bytes.len();
            bytes.resize(start + need, 0);
            let eof_error = header::eof_error(start);
            header::read_exact_or(reader, &mut bytes[start..], eof_error)?;
        }
    }

    /// Parses from the start of `bytes`; returns the header and its length.
    pub fn parse(bytes: &[u8]) -> Result<(Self, usize)> {
        let mut cursor = bytes;
        let core = CoreHeader::read_from(&mut cursor)?;
        let stanzas = header::read_stanzas(&mut cursor, core.version)?;
        let encoded_len = bytes.len() - cursor.len();
        Ok((
            Self {
                core,
                stanzas,
                encoded_len,
            },
            encoded_len,
        ))
    }

    /// The core header.
    pub fn core(&self) -> &CoreHeader {
        &self.core
    }

    /// The format version.
    pub fn version(&self) -> Version {
        self.core.version
    }

    /// The embedded stanzas (empty for a detached object).
    pub fn stanzas(&self) -> &[Stanza] {
        &self.stanzas
    }

    /// Encoded length of the core header plus stanza section.
    pub fn encoded_len(&self) -> usize {
        self.encoded_len
    }

    /// The sender the header *claims*; authenticated only once the
    /// signature verifies.
    pub fn claimed_sender(&self) -> &Sender {
        &self.core.sender
    }

    /// Finds the stanzas for `identity` among the embedded ones and `extra`
    /// (stanzas kept outside the file, e.g. by a server) and opens with the
    /// first whose file key passes the header MAC.
    pub fn open(self, identity: &Identity, extra: &[Stanza]) -> Result<OpenedHeader> {
        let hash = self.core.hash();
        let version = self.core.version;
        let stanzas: Vec<&Stanza> = self.stanzas.iter().chain(extra).collect();
        let (file_key, keys) = unwrap_file_key(version, stanzas, &hash, identity, |file_key| {
            let keys = verify_mac(&self.core, &file_key)?;
            Ok((file_key, keys))
        })?;
        self.into_opened(file_key, keys, hash)
    }

    /// Opens with a file key obtained some other way (e.g. a share link, or
    /// a server's own key for the files it encrypts). Fails unless the
    /// header MAC verifies under this key.
    pub fn open_with_file_key(self, file_key: FileKey) -> Result<OpenedHeader> {
        let hash = self.core.hash();
        let keys = verify_mac(&self.core, &file_key)?;
        self.into_opened(file_key, keys, hash)
    }

    fn into_opened(
        self,
        file_key: FileKey,
        keys: DerivedKeys,
        header_hash: [u8; 32],
    ) -> Result<OpenedHeader> {
        let mut metadata = self.core.metadata_ct.clone();
        let fixed = self.core.fixed_prefix();
        let plain_len =
            open_once(&keys.metadata, &fixed, &mut metadata).map_err(|_| Error::HeaderAuth)?;
        let metadata = Metadata::decode(&metadata[..plain_len])?;
        Ok(OpenedHeader {
            core: self.core,
            header_hash,
            encoded_len: self.encoded_len,
            keys,
            file_key,
            metadata,
        })
    }
}

/// Derives the keys and checks the header MAC (the key commitment) in
/// constant time; nothing derived from a key is used before this passes.
fn verify_mac(core: &CoreHeader, file_key: &FileKey) -> Result<DerivedKeys> {
    let keys = DerivedKeys::derive(core.version, file_key, &core.salt)?;
    keys.verify_header_mac(&core.mac_input(), &core.mac)?;
    Ok(keys)
}

/// A header whose file key is known and whose MAC verified.
pub struct OpenedHeader {
    core: CoreHeader,
    header_hash: [u8; 32],
    encoded_len: usize,
    keys: DerivedKeys,
    file_key: FileKey,
    metadata: Metadata,
}

impl OpenedHeader {
    /// The decrypted metadata. Its names are untrusted input: sanitize
    /// before using them as paths.
    pub fn metadata(&self) -> &Metadata {
        &self.metadata
    }

    /// The core header.
    pub fn core(&self) -> &CoreHeader {
        &self.core
    }

    /// SHA-256 of the core header.
    pub fn header_hash(&self) -> &[u8; 32] {
        &self.header_hash
    }

    /// The file key, for wrapping to another recipient.
    pub fn file_key(&self) -> &FileKey {
        &self.file_key
    }

    /// Length of core header plus stanza section as read.
    pub fn header_len(&self) -> usize {
        self.encoded_len
    }

    pub(crate) fn keys(&self) -> &DerivedKeys {
        &self.keys
    }

    pub(crate) fn into_parts(self) -> OpenedParts {
        OpenedParts {
            core: self.core,
            header_hash: self.header_hash,
            keys: self.keys,
            file_key: self.file_key,
            metadata: self.metadata,
        }
    }

    /// Where an interrupted download resumes, given the `prefix_len` bytes
    /// of plaintext already written out from an earlier attempt at this
    /// file. Only whole chunks count, less one (the one before the break
    /// may have been the final chunk, which needs the signature), and those
    /// are read back from `prefix` into the running check, so the signature
    /// at the end still covers every byte of the output: version 1 hashes
    /// them (SHA-256), version 2 re-seals them to recompute their leaves.
    /// Truncate the output to [`ResumePoint::plaintext_len`] and fetch the
    /// ciphertext from [`ResumePoint::ciphertext_offset`].
    pub fn resume_point(&self, prefix: &mut impl Read, prefix_len: u64) -> Result<ResumePoint> {
        let chunk = u64::from(self.core.chunk_size);
        let chunks = (prefix_len / chunk).saturating_sub(1);
        let mut check = Check::new(self)?;
        let mut buf = vec![0u8; self.core.chunk_size as usize];
        let mut resealer = StreamSealer::new(&self.keys.payload)?;
        let mut scratch = Vec::new();
        for _ in 0..chunks {
            header::read_exact_or(prefix, &mut buf, Error::Truncated("partial output shrank"))?;
            match &mut check {
                Check::V1(digest) => digest.update(&buf)?,
                Check::V2 { tree, .. } => {
                    // Re-sealing plaintext that was sealed under this key at
                    // this index gives back the same ciphertext. If the
                    // partial file changed on disk the result differs, but it
                    // never leaves this function: only its leaf is used, and
                    // the stored entries and signature then refuse the file.
                    let index = resealer.next_index();
                    let mut sealed = buf.clone();
                    resealer.seal_chunk(&mut sealed)?;
                    scratch.clear();
                    tree.push(tree::leaf(index, &sealed), &mut scratch);
                }
            }
        }
        let sealed_chunk = chunk + TAG_LEN as u64;
        let payload_offset = match self.core.version {
            Version::V1 => chunks * sealed_chunk,
            Version::V2 => tree::chunk_offset(chunks, sealed_chunk),
        };
        Ok(ResumePoint {
            chunks,
            plaintext_len: chunks * chunk,
            ciphertext_offset: self.encoded_len as u64 + payload_offset,
            check,
        })
    }

    /// Streams the payload from a resume point; `reader` must start at
    /// [`ResumePoint::ciphertext_offset`] of the file.
    pub fn decryptor_resumed<R: Read>(self, reader: R, point: ResumePoint) -> Result<Decryptor<R>> {
        Ok(Decryptor {
            inner: reader,
            core: DecoderCore::resumed(self, point)?,
        })
    }

    /// Starts streaming the payload from `reader`, which must be positioned
    /// just after the header (as [`Header::read_from`] leaves it).
    pub fn decryptor<R: Read>(self, reader: R) -> Result<Decryptor<R>> {
        Ok(Decryptor {
            inner: reader,
            core: DecoderCore::new(self)?,
        })
    }

    /// Checks a version 2 signature over values the reader derived.
    pub(crate) fn verify_signature(
        &self,
        plaintext_len: u64,
        chunk_count: u64,
        root: tree::Hash,
        signature: &[u8],
    ) -> Result<Signed> {
        let signature: [u8; 64] = signature
            .try_into()
            .map_err(|_| Error::Truncated("signature"))?;
        let signed = Signed {
            header_hash: self.header_hash,
            plaintext_len,
            chunk_count,
            root,
        };
        signed.verify(&self.core.sender, &signature)?;
        Ok(signed)
    }

    /// Opens and checks a version 1 trailer against a decrypted payload of
    /// `plaintext_len` bytes with digest `sha256` (or, when `sha256` is None,
    /// checks only length and signature: version 1 range reads cannot hash
    /// everything).
    pub(crate) fn verify_trailer_v1(
        &self,
        sealed: &[u8],
        plaintext_len: u64,
        sha256: Option<&[u8; 32]>,
    ) -> Result<[u8; 32]> {
        let key = self
            .keys
            .trailer
            .as_ref()
            .ok_or(Error::Crypto("no trailer key"))?;
        let trailer = TrailerV1::open(key, &self.header_hash, sealed)?;
        if trailer.plaintext_len != plaintext_len {
            return Err(Error::TrailerMismatch("plaintext length"));
        }
        if sha256.is_some_and(|digest| *digest != trailer.plaintext_sha256) {
            return Err(Error::TrailerMismatch("plaintext SHA-256"));
        }
        trailer.verify(&self.core.sender, &self.header_hash)?;
        Ok(trailer.plaintext_sha256)
    }

    /// The last checks before the final chunk is released: the metadata's
    /// `size`, if any, matches the signed length.
    pub(crate) fn check_declared_size(&self, plaintext_len: u64) -> Result<()> {
        if self.metadata.size.is_some_and(|size| size != plaintext_len) {
            return Err(Error::SizeMismatch);
        }
        Ok(())
    }
}

pub(crate) struct OpenedParts {
    pub(crate) core: CoreHeader,
    pub(crate) header_hash: [u8; 32],
    pub(crate) keys: DerivedKeys,
    pub(crate) file_key: FileKey,
    pub(crate) metadata: Metadata,
}

/// What decryption checks as it goes: version 1 the plaintext SHA-256,
/// version 2 the content tree over the sealed chunks.
enum Check {
    V1(PlaintextDigest),
    V2 {
        tree: TreeBuilder,
        /// Entries recomputed for the current chunk, compared with the stored ones.
        scratch: Vec<u8>,
    },
}

impl Check {
    fn new(opened: &OpenedHeader) -> Result<Self> {
        Ok(match opened.core.version {
            Version::V1 => Check::V1(PlaintextDigest::new()),
            Version::V2 => Check::V2 {
                tree: TreeBuilder::new(),
                scratch: Vec::with_capacity(tree::MAX_ENTRIES_PER_CHUNK * HASH_LEN),
            },
        })
    }
}

/// A place to pick up an interrupted download (see
/// [`OpenedHeader::resume_point`]).
pub struct ResumePoint {
    chunks: u64,
    plaintext_len: u64,
    ciphertext_offset: u64,
    check: Check,
}

impl ResumePoint {
    /// Plaintext bytes kept from the earlier attempt.
    pub fn plaintext_len(&self) -> u64 {
        self.plaintext_len
    }

    /// Where in the encoded file the next ciphertext byte is.
    pub fn ciphertext_offset(&self) -> u64 {
        self.ciphertext_offset
    }
}

/// The content identity a completed decryption verified.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Content {
    /// Version 1: the SHA-256 of the plaintext.
    V1 {
        /// SHA-256 of the plaintext, as signed.
        plaintext_sha256: [u8; 32],
    },
    /// Version 2: the root of the tree over the sealed chunks.
    V2 {
        /// The signed root.
        root: [u8; 32],
        /// The signed chunk count.
        chunk_count: u64,
    },
}

/// What a completed decryption proved.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Verified {
    /// Plaintext length, as signed.
    pub plaintext_len: u64,
    /// Who signed it (the header's sender; the signature verified).
    pub sender: Sender,
    /// The decrypted metadata.
    pub metadata: Metadata,
    /// The signed content identity.
    pub content: Content,
    /// The header's file id (all zero in version 1).
    pub file_id: [u8; header::FILE_ID_LEN],
    /// SHA-256 of the core header.
    pub header_hash: [u8; 32],
}

enum State {
    Reading,
    Done(Box<Verified>),
    Failed,
}

/// Plaintext a decoder with several threads gathers and opens at once.
const BATCH_BYTES: usize = 2 * 1024 * 1024;

/// The framing and verification state machine shared by the sync and async
/// readers; it never does I/O. The caller fills [`DecoderCore::spare`] from
/// its input, then calls [`DecoderCore::decode`].
///
/// With more than one thread it reads a batch of chunks ahead and opens the
/// ones that are certainly not final (§7.1) in parallel; each chunk's leaf is
/// hashed before it is opened, and the leaves join the tree in order, so
/// every check and the order of release are those of one thread.
pub(crate) struct DecoderCore {
    opened: OpenedHeader,
    opener: StreamOpener,
    check: Check,
    plaintext_len: u64,
    index: u64,
    /// Sealed chunk length `S`.
    sealed_chunk: usize,
    trailer_len: usize,
    threads: usize,
    /// Ciphertext read ahead: a batch of chunks with their entries, then a
    /// window of `S + E + T + 1` bytes, which is how a chunk is known not to
    /// be final.
    buf: Vec<u8>,
    filled: usize,
    /// Verified plaintext in `buf` not yet handed out, in order.
    released: std::collections::VecDeque<Range<usize>>,
    /// Bytes at the front of `buf` to discard before reading more.
    consumed: usize,
    state: State,
}

impl DecoderCore {
    pub(crate) fn new(opened: OpenedHeader) -> Result<Self> {
        let check = Check::new(&opened)?;
        Self::with_check(opened, check, 0, 0, 1)
    }

    fn with_check(
        opened: OpenedHeader,
        check: Check,
        index: u64,
        plaintext_len: u64,
        threads: usize,
    ) -> Result<Self> {
        let sealed_chunk = opened.core.chunk_size as usize + TAG_LEN;
        let version = opened.core.version;
        let max_entries = match version {
            Version::V1 => 0,
            Version::V2 => tree::MAX_ENTRIES_PER_CHUNK * HASH_LEN,
        };
        let trailer_len = version.trailer_len();
        let threads = threads.max(1);
        let batch = if threads == 1 {
            0
        } else {
            (BATCH_BYTES / opened.core.chunk_size as usize).max(1)
        };
        let per_chunk = sealed_chunk + if max_entries > 0 { 2 * HASH_LEN } else { 0 };
        Ok(Self {
            opener: StreamOpener::new(&opened.keys.payload)?,
            opened,
            check,
            plaintext_len,
            index,
            sealed_chunk,
            trailer_len,
            threads,
            buf: vec![0u8; batch * per_chunk + sealed_chunk + max_entries + trailer_len + 1],
            filled: 0,
            released: std::collections::VecDeque::new(),
            consumed: 0,
            state: State::Reading,
        })
    }

    pub(crate) fn resumed(opened: OpenedHeader, point: ResumePoint) -> Result<Self> {
        Self::with_check(opened, point.check, point.chunks, point.plaintext_len, 1)
    }

    /// Opens chunks on up to `threads` threads (see the type's docs).
    /// Only before the first byte was read.
    pub(crate) fn with_threads(self, threads: usize) -> Result<Self> {
        Self::with_check(
            self.opened,
            self.check,
            self.index,
            self.plaintext_len,
            threads,
        )
    }

    /// Bytes of tree entries stored after chunk `index`.
    pub(crate) fn entries_len(&self, index: u64) -> usize {
        match self.check {
            Check::V1(_) => 0,
            Check::V2 { .. } => tree::entries_after(index) as usize * HASH_LEN,
        }
    }

    /// Verified plaintext not yet handed out.
    pub(crate) fn plaintext(&self) -> &[u8] {
        match self.released.front() {
            Some(range) => &self.buf[range.clone()],
            None => &[],
        }
    }

    /// Queues verified plaintext for handing out (nothing for an empty range).
    fn release(&mut self, range: Range<usize>) {
        if range.start < range.end {
            self.released.push_back(range);
        }
    }

    /// Marks `n` bytes of [`DecoderCore::plaintext`] as handed out.
    pub(crate) fn consume_plaintext(&mut self, n: usize) {
        if let Some(range) = self.released.front_mut() {
            range.start += n;
            if range.start >= range.end {
                self.released.pop_front();
            }
        }
    }

    /// `Some(Ok)` when everything verified and was handed out, `Some(Err)`
    /// after a failure, `None` while more input is needed.
    pub(crate) fn outcome(&self) -> Option<Result<&Verified>> {
        match &self.state {
            State::Done(verified) if self.released.is_empty() => Some(Ok(verified)),
            State::Failed => Some(Err(Error::Crypto("decryption already failed"))),
            _ => None,
        }
    }

    /// Where the next input bytes go; empty once a decision can be made.
    /// Call only once all released plaintext was handed out.
    pub(crate) fn spare(&mut self) -> &mut [u8] {
        debug_assert!(self.released.is_empty(), "input read over unread plaintext");
        if self.consumed > 0 {
            self.buf.copy_within(self.consumed..self.filled, 0);
            self.filled -= self.consumed;
            self.consumed = 0;
        }
        // One thread: exactly the window the current chunk needs.
        let window = self.sealed_chunk + self.entries_len(self.index) + self.trailer_len + 1;
        let end = if self.threads == 1 {
            window
        } else {
            self.buf.len()
        };
        &mut self.buf[self.filled..end]
    }

    /// Records that `n` bytes were read into [`DecoderCore::spare`].
    pub(crate) fn filled(&mut self, n: usize) {
        self.filled += n;
    }

    /// Decrypts the chunks the buffer shows to be non-final, and at the end
    /// of input (`eof == true`) the final chunk. On failure the state is
    /// final.
    pub(crate) fn decode(&mut self, eof: bool) -> Result<()> {
        let result = self
            .decode_middle(eof)
            .and_then(|()| if eof { self.decode_last() } else { Ok(()) });
        if result.is_err() {
            self.state = State::Failed;
            self.released.clear();
        }
        result
    }

    /// The chunks (index, offset in `buf`) that are certainly not final:
    /// more than `S + E(i) + T` bytes follow their start (§7.1).
    fn non_final_chunks(&self) -> Vec<(u64, usize)> {
        let mut chunks = Vec::new();
        let (mut index, mut at) = (self.index, self.consumed);
        loop {
            let entries = self.entries_len(index);
            if self.filled - at <= self.sealed_chunk + entries + self.trailer_len {
                return chunks;
            }
            chunks.push((index, at));
            at += self.sealed_chunk + entries;
            index += 1;
        }
    }

    fn decode_middle(&mut self, eof: bool) -> Result<()> {
        let chunks = self.non_final_chunks();
        if chunks.is_empty() && !eof {
            return Err(Error::Crypto("decode called before the window was full"));
        }
        let sealed_chunk = self.sealed_chunk;
        let v2 = matches!(self.check, Check::V2 { .. });
        // Disjoint slices of the buffer, one per chunk: sealed bytes, entries.
        let mut slots = Vec::with_capacity(chunks.len());
        let mut rest = &mut self.buf[self.consumed..];
        let mut position = self.consumed;
        for &(index, at) in &chunks {
            let entries = if v2 {
                tree::entries_after(index) as usize * HASH_LEN
            } else {
                0
            };
            let (_, from) = rest.split_at_mut(at - position);
            let (sealed, after) = from.split_at_mut(sealed_chunk);
            let (stored, after) = after.split_at_mut(entries);
            slots.push((index, sealed, &*stored));
            rest = after;
            position = at + sealed_chunk + entries;
        }
        // Each chunk: hash its sealed bytes (version 2), then open it in
        // place; on up to `threads` threads, in order within each.
        let opener = &self.opener;
        let work = |group: &mut [(u64, &mut [u8], &[u8])]| -> Vec<Opened> {
            group
                .iter_mut()
                .map(|(index, sealed, _)| open_middle(opener, v2, *index, sealed))
                .collect()
        };
        let outcomes: Vec<Opened> = if self.threads == 1 || slots.len() < 2 {
            work(&mut slots)
        } else {
            let per = slots.len().div_ceil(self.threads);
            std::thread::scope(|scope| {
                let workers: Vec<_> = slots
                    .chunks_mut(per)
                    .map(|g| scope.spawn(move || work(g)))
                    .collect();
                workers
                    .into_iter()
                    .flat_map(|w| {
                        w.join().unwrap_or_else(|_| {
                            vec![(
                                [0; HASH_LEN],
                                Err(Error::Crypto("a decrypting thread panicked")),
                            )]
                        })
                    })
                    .collect()
            })
        };
        drop(slots);
        // In order, as one thread would: the leaf joins the tree and the
        // stored entries must match (checked before the tag, §11.1), then
        // the tag; then the chunk is released.
        for (&(index, at), opened) in chunks.iter().zip(outcomes) {
            let end = at + sealed_chunk + self.entries_len(index);
            let plain_len = admit(
                &mut self.check,
                sealed_chunk,
                index,
                &self.buf[at..end],
                opened,
            )?;
            self.release(at..at + plain_len);
            self.plaintext_len += plain_len as u64;
            self.index = index + 1;
            self.consumed = end;
        }
        Ok(())
    }

    /// Takes the verdicts on non-final chunk `index`, opened elsewhere (see
    /// [`open_middle`]), in order: `chunk` is its sealed bytes, opened in
    /// place, then its stored entries. Returns the length of the plaintext
    /// at the front of `chunk`, which may now be released.
    pub(crate) fn admit(&mut self, index: u64, chunk: &[u8], opened: Opened) -> Result<usize> {
        if index != self.index || !matches!(self.state, State::Reading) {
            return Err(Error::Crypto("chunks admitted out of order"));
        }
        let result = admit(&mut self.check, self.sealed_chunk, index, chunk, opened);
        match result {
            Ok(plain_len) => {
                self.plaintext_len += plain_len as u64;
                self.index = index + 1;
            }
            Err(_) => self.state = State::Failed,
        }
        result
    }

    /// Whether nothing was read yet.
    pub(crate) fn is_fresh(&self) -> bool {
        self.filled == 0 && self.released.is_empty() && matches!(self.state, State::Reading)
    }

    /// What a pipeline needs to cut the payload into chunks and open them.
    pub(crate) fn framing(&self) -> Result<Framing> {
        Ok(Framing {
            opener: StreamOpener::new(&self.opened.keys.payload)?,
            v2: matches!(self.check, Check::V2 { .. }),
            sealed_chunk: self.sealed_chunk,
            trailer_len: self.trailer_len,
            threads: self.threads,
        })
    }

    /// The index of the next chunk to admit.
    pub(crate) fn next_index(&self) -> u64 {
        self.index
    }

    /// At the end of input: decodes `rest`, everything from the next
    /// chunk's start to the end, as the one-buffer reader would, leaving
    /// its plaintext to hand out.
    pub(crate) fn decode_rest(&mut self, rest: Vec<u8>) -> Result<()> {
        if !self.released.is_empty() || !matches!(self.state, State::Reading) {
            return Err(Error::Crypto("decode_rest on a busy reader"));
        }
        self.filled = rest.len();
        self.consumed = 0;
        self.buf = rest;
        self.decode(true)
    }

    /// Checks chunk `index`'s stored tree entries (version 2) against the
    /// ones recomputed from its sealed bytes `buf[from..from + chunk_len]`;
    /// must be called before the chunk is opened in place.
    fn check_entries(&mut self, from: usize, chunk_len: usize) -> Result<()> {
        let index = self.index;
        let entries = self.entries_len(index);
        let Check::V2 { tree, scratch } = &mut self.check else {
            return Ok(());
        };
        scratch.clear();
        tree.push(
            tree::leaf(index, &self.buf[from..from + chunk_len]),
            scratch,
        );
        let stored = &self.buf[from + chunk_len..from + chunk_len + entries];
        if scratch[..] != *stored {
            return Err(Error::TreeMismatch { index });
        }
        Ok(())
    }

    /// At end of input: the last `T` bytes are the trailer, the `E(i)`
    /// before them the final chunk's entries, and the rest the final chunk.
    fn decode_last(&mut self) -> Result<()> {
        let from = self.consumed;
        let len = self.filled - from;
        let entries = self.entries_len(self.index);
        let tail = entries + self.trailer_len;
        if len < TAG_LEN + tail {
            return Err(Error::Truncated("payload or trailer missing"));
        }
        let chunk_end = len - tail;
        let saved = self.buf[from..from + len].to_vec();
        let index = self.index;
        let mut leaf_check = Ok(());
        if let Check::V2 { .. } = self.check {
            leaf_check = self.check_entries(from, chunk_end);
        }
        let plain_len =
            match self
                .opener
                .open_chunk(index, true, &mut self.buf[from..from + chunk_end])
            {
                Ok(plain) => plain.len(),
                Err(_) => return Err(self.diagnose_last(&saved)),
            };
        leaf_check?;
        if plain_len == 0 && index != 0 {
            return Err(Error::EmptyFinalChunk);
        }
        self.plaintext_len += plain_len as u64;
        let trailer = &saved[chunk_end + entries..len];
        let content = match &mut self.check {
            Check::V1(digest) => {
                let mut digest = std::mem::replace(digest, PlaintextDigest::new());
                digest.update(&self.buf[from..from + plain_len])?;
                let sha = digest.finish()?;
                let sha = self
                    .opened
                    .verify_trailer_v1(trailer, self.plaintext_len, Some(&sha))?;
                Content::V1 {
                    plaintext_sha256: sha,
                }
            }
            Check::V2 { tree, .. } => {
                let root = tree.root().ok_or(Error::Crypto("empty tree"))?;
                let chunk_count = index + 1;
                self.opened
                    .verify_signature(self.plaintext_len, chunk_count, root, trailer)?;
                Content::V2 { root, chunk_count }
            }
        };
        self.opened.check_declared_size(self.plaintext_len)?;
        // Only now, with the signature checked, is the final chunk released.
        self.release(from..from + plain_len);
        self.consumed = self.filled;
        self.state = State::Done(Box::new(Verified {
            plaintext_len: self.plaintext_len,
            sender: self.opened.core.sender.clone(),
            metadata: self.opened.metadata.clone(),
            content,
            file_id: self.opened.core.file_id,
            header_hash: self.opened.header_hash,
        }));
        Ok(())
    }

    /// Tells a cut file from a modified one (docs/FORMAT.md §7.2, the
    /// truncation rule): if the first bytes left open as a chunk at this
    /// index, the file lost its tail after a chunk boundary. Anything else
    /// is reported as damage to the final chunk, which a cut inside it (or
    /// inside what follows it) also looks like.
    fn diagnose_last(&self, rest: &[u8]) -> Error {
        // The chunk may be all there is (cut before its entries), or be
        // followed by its entries with the trailer missing.
        let whole = rest.len().min(self.sealed_chunk);
        let before_entries = rest.len().saturating_sub(self.entries_len(self.index));
        for len in [whole, before_entries] {
            for last in [false, true] {
                let mut probe = rest[..len].to_vec();
                if self.opener.open_chunk(self.index, last, &mut probe).is_ok() {
                    return Error::Truncated("the file ends early, after a complete chunk");
                }
            }
        }
        Error::FinalChunkAuth { index: self.index }
    }
}

/// A non-final chunk's leaf (version 2; zero in version 1) and the
/// verdict of its tag (the plaintext length).
pub(crate) type Opened = (tree::Hash, Result<usize>);

/// Hashes (version 2) and opens non-final chunk `index` in place: the part
/// of reading a chunk that may run on any thread. Its verdicts must then
/// be taken in order by [`admit`].
pub(crate) fn open_middle(
    opener: &StreamOpener,
    v2: bool,
    index: u64,
    sealed: &mut [u8],
) -> Opened {
    let leaf = if v2 {
        tree::leaf(index, sealed)
    } else {
        [0; HASH_LEN]
    };
    let opened = opener
        .open_chunk(index, false, sealed)
        .map(|plain| plain.len());
    (leaf, opened)
}

/// The in-order step for non-final chunk `index`, as one thread would take
/// it: the leaf joins the tree and the stored entries must match (checked
/// before the tag, §11.1), then the tag; version 1 digests the plaintext.
/// `chunk` is the sealed chunk (opened in place) and its stored entries.
fn admit(
    check: &mut Check,
    sealed_chunk: usize,
    index: u64,
    chunk: &[u8],
    (leaf, opened): Opened,
) -> Result<usize> {
    if let Check::V2 { tree, scratch } = check {
        scratch.clear();
        tree.push(leaf, scratch);
        if chunk.get(sealed_chunk..) != Some(&scratch[..]) {
            return Err(Error::TreeMismatch { index });
        }
    }
    let plain_len = opened?;
    if let Check::V1(digest) = check {
        digest.update(&chunk[..plain_len])?;
    }
    Ok(plain_len)
}

/// The payload's framing, for [`crate::pipeline::open`].
pub(crate) struct Framing {
    /// Opens chunks on any thread (a second key schedule of the payload key).
    pub(crate) opener: StreamOpener,
    pub(crate) v2: bool,
    /// A full chunk with its tag.
    pub(crate) sealed_chunk: usize,
    pub(crate) trailer_len: usize,
    pub(crate) threads: usize,
}

/// Streams and verifies a payload from a [`Read`]. See the module docs.
pub struct Decryptor<R> {
    inner: R,
    core: DecoderCore,
}

impl<R: Read> Decryptor<R> {
    /// Opens chunks on up to `threads` threads (reading a batch of chunks
    /// ahead). Call before the first read.
    pub fn with_threads(self, threads: usize) -> Result<Self> {
        Ok(Self {
            inner: self.inner,
            core: self.core.with_threads(threads)?,
        })
    }

    /// The opened header (metadata, file key).
    pub fn header(&self) -> &OpenedHeader {
        &self.core.opened
    }

    /// Set once the whole file verified and was read (`read` returned `Ok(0)`).
    pub fn verified(&self) -> Option<&Verified> {
        self.core.outcome().and_then(Result::ok)
    }

    /// Decrypts everything into `out`, a chunk at a time with no extra copy,
    /// and returns what was verified. On error, what was written to `out` must
    /// be discarded. On more than one thread (and before any `read`), the
    /// reading and writing overlap with the opening, which the caller's
    /// thread shares; the verdicts and what is released are the one-thread
    /// reader's.
    pub fn copy_to(mut self, out: &mut impl Write) -> Result<Verified> {
        if self.core.threads > 1 && self.core.is_fresh() {
            return crate::pipeline::open::decrypt(self.core, self.inner, out);
        }
        loop {
            loop {
                let plain = self.core.plaintext();
                if plain.is_empty() {
                    break;
                }
                out.write_all(plain)?;
                let n = plain.len();
                self.core.consume_plaintext(n);
            }
            if let Some(outcome) = self.core.outcome() {
                return outcome.cloned();
            }
            self.advance()?;
        }
    }

    /// Reads until the window is full or the input ends, then decodes.
    fn advance(&mut self) -> Result<()> {
        loop {
            let spare = self.core.spare();
            if spare.is_empty() {
                return self.core.decode(false);
            }
            match self.inner.read(spare) {
                Ok(0) => return self.core.decode(true),
                Ok(n) => self.core.filled(n),
                Err(err) if err.kind() == io::ErrorKind::Interrupted => {}
                Err(err) => return Err(Error::from_io(err)),
            }
        }
    }
}

impl<R: Read> Read for Decryptor<R> {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        loop {
            let plain = self.core.plaintext();
            if !plain.is_empty() {
                let n = out.len().min(plain.len());
                out[..n].copy_from_slice(&plain[..n]);
                self.core.consume_plaintext(n);
                return Ok(n);
            }
            if let Some(outcome) = self.core.outcome() {
                return outcome.map(|_| 0).map_err(io::Error::from);
            }
            self.advance()?;
        }
    }
}

/// Decrypts a self-contained file from `input` into `output`.
pub fn decrypt<R: Read, W: Write>(
    identity: &Identity,
    mut input: R,
    output: &mut W,
) -> Result<Verified> {
    let opened = Header::read_from(&mut input)?.open(identity, &[])?;
    opened.decryptor(input)?.copy_to(output)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::trailer::TrailerV1;

    const ALICE_V1: &str = include_str!("../../../testdata/v1/alice.identity");
    const BOB_V1: &str = include_str!("../../../testdata/v1/bob.identity");
    const MULTI_V1: &[u8] = include_bytes!("../../../testdata/v1/multi.coffer");

    /// Decrypts `file` as bob on `threads`: the verdict and what was released.
    fn read_v1(file: &[u8], threads: usize) -> (Result<Verified>, Vec<u8>) {
        let bob = Identity::from_file_string(BOB_V1, None).unwrap();
        let mut input = file;
        let mut out = Vec::new();
        let verdict = Header::read_from(&mut input)
            .and_then(|header| header.open(&bob, &[]))
            .and_then(|opened| opened.decryptor(input)?.with_threads(threads))
            .and_then(|decryptor| decryptor.copy_to(&mut out));
        (verdict, out)
    }

    /// A version 1 file long enough for several pieces of the parallel
    /// reader (5000 chunks under multi.coffer's header, signed by its
    /// sender alice): whole, with a bit flipped just after each piece edge,
    /// and cut there, two threads give the one-thread verdict (with the
    /// plaintext digest taken in order) and release no more. Fails with the
    /// parallel reader's look-ahead one byte short.
    #[test]
    fn a_v1_file_of_several_pieces_reads_the_same_on_two_threads() {
        let alice = Identity::from_file_string(ALICE_V1, None).unwrap();
        let bob = Identity::from_file_string(BOB_V1, None).unwrap();
        let (header, header_len) = Header::parse(MULTI_V1).unwrap();
        let opened = header.open(&bob, &[]).unwrap();
        let chunk = opened.core.chunk_size as usize;
        let plain: Vec<u8> = (0..5000 * chunk - 17)
            .map(|i| (i * 31 % 251) as u8)
            .collect();
        let mut file = MULTI_V1[..header_len].to_vec();
        let mut sealer = StreamSealer::new(&opened.keys.payload).unwrap();
        let (last, middle) = plain
            .chunks(chunk)
            .collect::<Vec<_>>()
            .split_last()
            .map(|(l, m)| (l.to_vec(), m.to_vec()))
            .unwrap();
        for piece in middle {
            let mut sealed = piece.to_vec();
            sealer.seal_chunk(&mut sealed).unwrap();
            file.extend_from_slice(&sealed);
        }
        let mut sealed = last;
        sealer.seal_last(&mut sealed).unwrap();
        file.extend_from_slice(&sealed);
        let mut digest = PlaintextDigest::new();
        digest.update(&plain).unwrap();
        let key = opened.keys.trailer.as_ref().unwrap();
        let trailer = TrailerV1::sign_and_seal(
            &alice,
            key,
            &opened.header_hash,
            plain.len() as u64,
            digest.finish().unwrap(),
        )
        .unwrap();
        file.extend_from_slice(&trailer);

        let sealed_chunk = chunk + TAG_LEN;
        let per_piece = (512 << 10) / sealed_chunk;
        let mut files = vec![file.clone()];
        for edge in [per_piece, 2 * per_piece] {
            let at = header_len + edge * sealed_chunk;
            for d in [0, 1, 200] {
                let mut flipped = file.clone();
                flipped[at + d] ^= 4;
                files.push(flipped);
            }
            // Cut where the trailer's length after the piece makes its
            // last chunk final, and around that.
            let t = header::TRAILER_LEN_V1;
            for d in [0, 1, t - 1, t, t + 1, 200] {
                files.push(file[..at + d].to_vec());
            }
        }
        assert_eq!(read_v1(&file, 2).1, plain);
        for (i, file) in files.iter().enumerate() {
            let (one, released_one) = read_v1(file, 1);
            let (two, released_two) = read_v1(file, 2);
            match (one, two) {
                (Ok(a), Ok(b)) => assert_eq!((a, &released_one), (b, &released_two), "case {i}"),
                (Err(a), Err(b)) => {
                    assert_eq!(a.to_string(), b.to_string(), "case {i}");
                    assert!(
                        released_one.starts_with(&released_two),
                        "case {i}: released more"
                    );
                }
                (a, b) => panic!("case {i}: {:?} vs {:?}", a.is_ok(), b.is_ok()),
            }
        }
    }

    /// Bob, a recipient of a version 1 file, knows the file key and so can
    /// re-seal the trailer. A trailer signed by anyone but the header's
    /// sender must be refused, and the final chunk withheld.
    #[test]
    fn a_v1_trailer_signed_by_someone_other_than_the_sender_is_refused() {
        let bob = Identity::from_file_string(BOB_V1, None).unwrap();
        let mut file = MULTI_V1.to_vec();
        let (header, _) = Header::parse(&file).unwrap();
        let opened = header.open(&bob, &[]).unwrap();
        let key = opened.keys.trailer.as_ref().unwrap();
        let at = file.len() - header::TRAILER_LEN_V1;
        let honest = TrailerV1::open(key, &opened.header_hash, &file[at..]).unwrap();
        let forged = TrailerV1::sign_and_seal(
            &bob,
            key,
            &opened.header_hash,
            honest.plaintext_len,
            honest.plaintext_sha256,
        )
        .unwrap();
        file[at..].copy_from_slice(&forged);
        let mut out = Vec::new();
        let err = decrypt(&bob, &file[..], &mut out).unwrap_err();
        assert!(matches!(err, Error::BadSignature), "{err}");
        assert_eq!(out.len(), 3 * 256, "the final chunk is withheld");
    }
}
