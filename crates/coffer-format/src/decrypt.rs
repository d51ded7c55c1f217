//! Reading coffer files, as a sequence of states whose types rule out using
//! anything before it is authenticated:
//!
//! 1. [`Header`]: parsed and bounds-checked, nothing authenticated yet. Shows
//!    what `coffer inspect` may print.
//! 2. [`OpenedHeader`]: a stanza yielded the file key *and* the header MAC
//!    verified under it (key commitment), and the metadata decrypted.
//! 3. [`Decryptor`]: streams verified plaintext. Every chunk is authenticated
//!    before it is released; the final chunk is released only after the
//!    trailer, its signature, the plaintext length and SHA-256 all verify.
//!    Until `read` returns `Ok(0)` (or [`Decryptor::copy_to`] returns), the
//!    output is not known to be complete: write it somewhere temporary.

use std::io::{self, Read, Write};
use std::ops::Range;

use aws_lc_rs::digest;

use crate::header::{self, CoreHeader, Stanza, TRAILER_LEN};
use crate::identity::{Identity, PublicIdentity};
use crate::keys::{DerivedKeys, FileKey, open_once};
use crate::metadata::Metadata;
use crate::recipient::unwrap_file_key;
use crate::stream::{StreamOpener, TAG_LEN};
use crate::trailer::Trailer;
use crate::{Error, Result};

/// A parsed, not yet authenticated header: core header plus stanza section.
#[derive(Clone, Debug)]
pub struct Header {
    core: CoreHeader,
    stanzas: Vec<Stanza>,
}

impl Header {
    /// Reads the core header and the stanza section, leaving `reader` at the
    /// first payload byte. Allocates at most the spec's bounds.
    pub fn read_from(reader: &mut impl Read) -> Result<Self> {
        let core = CoreHeader::read_from(reader)?;
        let stanzas = header::read_stanzas(reader)?;
        Ok(Self { core, stanzas })
    }

    /// Parses from the start of `bytes`; returns the header and its length.
    pub fn parse(bytes: &[u8]) -> Result<(Self, usize)> {
        let mut cursor = bytes;
        let header = Self::read_from(&mut cursor)?;
        Ok((header, bytes.len() - cursor.len()))
    }

    /// The core header.
    pub fn core(&self) -> &CoreHeader {
        &self.core
    }

    /// The embedded stanzas (empty for a detached object).
    pub fn stanzas(&self) -> &[Stanza] {
        &self.stanzas
    }

    /// Encoded length of the core header plus stanza section.
    pub fn encoded_len(&self) -> usize {
        self.core.encoded_len() + 2 + self.stanzas.len() * header::STANZA_LEN
    }

    /// The sender the header *claims*; authenticated only once the trailer
    /// signature verifies.
    pub fn claimed_sender(&self) -> &PublicIdentity {
        &self.core.sender
    }

    /// Finds a stanza for `identity` among the embedded ones and `extra`
    /// (stanzas kept outside the file, e.g. by a server), then opens.
    pub fn open(self, identity: &Identity, extra: &[Stanza]) -> Result<OpenedHeader> {
        let hash = self.core.hash();
        let candidates: Vec<Stanza> = self.stanzas.iter().chain(extra).cloned().collect();
        let file_key = unwrap_file_key(&candidates, &hash, identity)?;
        self.open_with_file_key(file_key)
    }

    /// Opens with a file key obtained some other way (e.g. a share link).
    /// Fails unless the header MAC verifies under this key.
    pub fn open_with_file_key(self, file_key: FileKey) -> Result<OpenedHeader> {
        let keys = DerivedKeys::derive(&file_key, &self.core.salt)?;
        let mac_input = self.core.mac_input();
        keys.verify_header_mac(&mac_input, &self.core.mac)?;
        let aad_len = header::FIXED_LEN;
        let mut metadata = self.core.metadata_ct.clone();
        let plain_len = open_once(&keys.metadata, &mac_input[..aad_len], &mut metadata)
            .map_err(|_| Error::HeaderAuth)?;
        let metadata = Metadata::decode(&metadata[..plain_len])?;
        let header_hash = self.core.hash();
        let encoded_len = self.encoded_len();
        Ok(OpenedHeader {
            core: self.core,
            header_hash,
            encoded_len,
            keys,
            file_key,
            metadata,
        })
    }
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

    /// Opens and checks a sealed trailer against a decrypted payload of
    /// `plaintext_len` bytes with digest `sha256` (or, when `sha256` is None,
    /// checks only length and signature: range reads cannot hash everything).
    pub(crate) fn verify_trailer(
        &self,
        sealed: &[u8],
        plaintext_len: u64,
        sha256: Option<&[u8; 32]>,
    ) -> Result<Trailer> {
        let trailer = Trailer::open(&self.keys.trailer, &self.header_hash, sealed)?;
        if trailer.plaintext_len != plaintext_len {
            return Err(Error::TrailerMismatch("plaintext length"));
        }
        if sha256.is_some_and(|digest| *digest != trailer.plaintext_sha256) {
            return Err(Error::TrailerMismatch("plaintext SHA-256"));
        }
        trailer.verify(&self.core.sender, &self.header_hash)?;
        if self
            .metadata
            .size
            .is_some_and(|size| size != plaintext_len)
        {
            return Err(Error::TrailerMismatch("metadata size"));
        }
        Ok(trailer)
    }

    /// Starts streaming the payload from `reader`, which must be positioned
    /// just after the header (as [`Header::read_from`] leaves it).
    pub fn decryptor<R: Read>(self, reader: R) -> Result<Decryptor<R>> {
        let chunk_size = self.core.chunk_size as usize;
        Ok(Decryptor {
            inner: reader,
            opener: StreamOpener::new(&self.keys.payload)?,
            opened: self,
            digest: digest::Context::new(&digest::SHA256),
            plaintext_len: 0,
            index: 0,
            buf: Vec::with_capacity(chunk_size + TAG_LEN + TRAILER_LEN + 1),
            plaintext: 0..0,
            consumed: 0,
            state: State::Reading,
        })
    }
}

/// What a completed decryption proved.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Verified {
    /// Plaintext length.
    pub plaintext_len: u64,
    /// SHA-256 of the plaintext, as signed.
    pub plaintext_sha256: [u8; 32],
    /// Who signed it (the header's sender; the signature verified).
    pub sender: PublicIdentity,
    /// The decrypted metadata.
    pub metadata: Metadata,
}

enum State {
    Reading,
    Done(Verified),
    Failed,
}

/// Streams and verifies a payload. See the module docs.
pub struct Decryptor<R> {
    inner: R,
    opened: OpenedHeader,
    opener: StreamOpener,
    digest: digest::Context,
    plaintext_len: u64,
    index: u64,
    /// Ciphertext read ahead; holds at most one chunk plus the trailer plus
    /// one byte, which is how a chunk is known to be final or not.
    buf: Vec<u8>,
    /// Verified plaintext in `buf` not yet handed out.
    plaintext: Range<usize>,
    /// Bytes at the front of `buf` to discard before the next chunk.
    consumed: usize,
    state: State,
}

impl<R: Read> Decryptor<R> {
    /// The opened header (metadata, file key).
    pub fn header(&self) -> &OpenedHeader {
        &self.opened
    }

    /// Set once the whole file verified (after `read` returned `Ok(0)`).
    pub fn verified(&self) -> Option<&Verified> {
        match &self.state {
            State::Done(verified) => Some(verified),
            _ => None,
        }
    }

    /// Decrypts everything into `out`, a chunk at a time with no extra copy,
    /// and returns what was verified. On error, what was written to `out` must
    /// be discarded.
    pub fn copy_to(mut self, out: &mut impl Write) -> Result<Verified> {
        loop {
            if !self.plaintext.is_empty() {
                out.write_all(&self.buf[self.plaintext.clone()])?;
                self.plaintext = 0..0;
            }
            match std::mem::replace(&mut self.state, State::Failed) {
                State::Done(verified) => return Ok(verified),
                State::Failed => return Err(Error::Crypto("decryptor already failed")),
                State::Reading => {
                    self.state = State::Reading;
                    self.advance()?;
                }
            }
        }
    }

    /// Decrypts the next chunk into `self.plaintext`, or fails for good.
    fn advance(&mut self) -> Result<()> {
        let result = self.advance_inner();
        if result.is_err() {
            self.state = State::Failed;
            self.plaintext = 0..0;
        }
        result
    }

    fn advance_inner(&mut self) -> Result<()> {
        self.buf.drain(..self.consumed);
        self.consumed = 0;
        let chunk_size = self.opened.core.chunk_size as usize;
        let sealed_chunk = chunk_size + TAG_LEN;
        let want = sealed_chunk + TRAILER_LEN + 1;
        let eof = self.fill(want)?;
        if !eof {
            let plain = self.opener.open_chunk(self.index, false, &mut self.buf[..sealed_chunk])?;
            self.digest.update(plain);
            self.plaintext = 0..plain.len();
            self.plaintext_len += plain.len() as u64;
            self.consumed = sealed_chunk;
            self.index += 1;
            return Ok(());
        }
        self.finish_last()
    }

    /// Reads until `buf` holds `want` bytes; returns true if the input ended
    /// first.
    fn fill(&mut self, want: usize) -> Result<bool> {
        while self.buf.len() < want {
            let start = self.buf.len();
            self.buf.resize(want, 0);
            let read = loop {
                match self.inner.read(&mut self.buf[start..]) {
                    Err(err) if err.kind() == io::ErrorKind::Interrupted => continue,
                    other => break other,
                }
            };
            match read {
                Ok(n) => {
                    self.buf.truncate(start + n);
                    if n == 0 {
                        return Ok(true);
                    }
                }
                Err(err) => {
                    self.buf.truncate(start);
                    return Err(Error::from_io(err));
                }
            }
        }
        Ok(false)
    }

    /// At end of input: the last `TRAILER_LEN` bytes are the trailer and
    /// what precedes them is the final chunk.
    fn finish_last(&mut self) -> Result<()> {
        let len = self.buf.len();
        if len < TAG_LEN + TRAILER_LEN {
            return Err(Error::Truncated("payload or trailer missing"));
        }
        let chunk_end = len - TRAILER_LEN;
        let saved = self.buf.clone();
        let index = self.index;
        let plain_len = match self.opener.open_chunk(index, true, &mut self.buf[..chunk_end]) {
            Ok(plain) => plain.len(),
            Err(_) => return Err(self.diagnose_last(&saved)),
        };
        if plain_len == 0 && index != 0 {
            return Err(Error::ChunkAuth { index });
        }
        self.digest.update(&self.buf[..plain_len]);
        self.plaintext_len += plain_len as u64;
        let digest = std::mem::replace(&mut self.digest, digest::Context::new(&digest::SHA256));
        let mut sha = [0u8; 32];
        sha.copy_from_slice(digest.finish().as_ref());
        let trailer = self
            .opened
            .verify_trailer(&self.buf[chunk_end..], self.plaintext_len, Some(&sha))?;
        // Only now, with the signature checked, is the final chunk released.
        self.plaintext = 0..plain_len;
        self.consumed = len;
        self.state = State::Done(Verified {
            plaintext_len: trailer.plaintext_len,
            plaintext_sha256: trailer.plaintext_sha256,
            sender: self.opened.core.sender.clone(),
            metadata: self.opened.metadata.clone(),
        });
        Ok(())
    }

    /// Tells a cut file from a modified one: if the bytes left (or the first
    /// whole chunk of them) open as a chunk at this index, the file lost its
    /// tail after a chunk boundary. Anything else is reported as damage to the
    /// final chunk, which a cut inside it also looks like.
    fn diagnose_last(&self, rest: &[u8]) -> Error {
        let sealed_chunk = self.opened.core.chunk_size as usize + TAG_LEN;
        let candidate = &rest[..rest.len().min(sealed_chunk)];
        for last in [false, true] {
            let mut probe = candidate.to_vec();
            if self.opener.open_chunk(self.index, last, &mut probe).is_ok() {
                return Error::Truncated("the file ends early, after a complete chunk");
            }
        }
        Error::FinalChunkAuth { index: self.index }
    }
}

impl<R: Read> Read for Decryptor<R> {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        loop {
            if !self.plaintext.is_empty() {
                let n = out.len().min(self.plaintext.len());
                let start = self.plaintext.start;
                out[..n].copy_from_slice(&self.buf[start..start + n]);
                self.plaintext.start += n;
                return Ok(n);
            }
            match self.state {
                State::Done(_) => return Ok(0),
                State::Failed => {
                    return Err(Error::Crypto("decryptor already failed").into());
                }
                State::Reading => self.advance()?,
            }
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
