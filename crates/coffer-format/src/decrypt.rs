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

use crate::digest::PlaintextDigest;
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
        let stanzas = header::read_stanzas(&mut cursor)?;
        Ok((Self { core, stanzas }, bytes.len() - cursor.len()))
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
        let file_key = unwrap_file_key(self.stanzas.iter().chain(extra), &hash, identity)?;
        self.open_verified(file_key, hash)
    }

    /// Opens with a file key obtained some other way (e.g. a share link).
    /// Fails unless the header MAC verifies under this key.
    pub fn open_with_file_key(self, file_key: FileKey) -> Result<OpenedHeader> {
        let hash = self.core.hash();
        self.open_verified(file_key, hash)
    }

    fn open_verified(self, file_key: FileKey, header_hash: [u8; 32]) -> Result<OpenedHeader> {
        let keys = DerivedKeys::derive(&file_key, &self.core.salt)?;
        let mac_input = self.core.mac_input();
        keys.verify_header_mac(&mac_input, &self.core.mac)?;
        let aad_len = header::FIXED_LEN;
        let mut metadata = self.core.metadata_ct.clone();
        let plain_len = open_once(&keys.metadata, &mac_input[..aad_len], &mut metadata)
            .map_err(|_| Error::HeaderAuth)?;
        let metadata = Metadata::decode(&metadata[..plain_len])?;
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
    /// may have been the final chunk, which needs the trailer), and those
    /// are read back from `prefix` into the running digest, so the trailer
    /// check at the end still covers every byte of the output. Truncate the
    /// output to [`ResumePoint::plaintext_len`] and fetch the ciphertext from
    /// [`ResumePoint::ciphertext_offset`].
    pub fn resume_point(&self, prefix: &mut impl Read, prefix_len: u64) -> Result<ResumePoint> {
        let chunk = u64::from(self.core.chunk_size);
        let chunks = (prefix_len / chunk).saturating_sub(1);
        let mut digest = PlaintextDigest::new();
        let mut buf = vec![0u8; self.core.chunk_size as usize];
        for _ in 0..chunks {
            header::read_exact_or(prefix, &mut buf, Error::Truncated("partial output shrank"))?;
            digest.update(&buf)?;
        }
        Ok(ResumePoint {
            chunks,
            plaintext_len: chunks * chunk,
            ciphertext_offset: self.encoded_len as u64 + chunks * (chunk + TAG_LEN as u64),
            digest,
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
}

pub(crate) struct OpenedParts {
    pub(crate) core: CoreHeader,
    pub(crate) header_hash: [u8; 32],
    pub(crate) keys: DerivedKeys,
    pub(crate) file_key: FileKey,
    pub(crate) metadata: Metadata,
}

/// A place to pick up an interrupted download (see
/// [`OpenedHeader::resume_point`]): chunk index, and the digest of the
/// plaintext before it.
pub struct ResumePoint {
    chunks: u64,
    plaintext_len: u64,
    ciphertext_offset: u64,
    digest: PlaintextDigest,
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

impl OpenedHeader {
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
        if self.metadata.size.is_some_and(|size| size != plaintext_len) {
            return Err(Error::TrailerMismatch("metadata size"));
        }
        Ok(trailer)
    }

    /// Starts streaming the payload from `reader`, which must be positioned
    /// just after the header (as [`Header::read_from`] leaves it).
    pub fn decryptor<R: Read>(self, reader: R) -> Result<Decryptor<R>> {
        Ok(Decryptor {
            inner: reader,
            core: DecoderCore::new(self)?,
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
    Done(Box<Verified>),
    Failed,
}

/// The framing and verification state machine shared by the sync and async
/// readers; it never does I/O. The caller fills [`DecoderCore::spare`] from
/// its input, then calls [`DecoderCore::decode`].
pub(crate) struct DecoderCore {
    opened: OpenedHeader,
    opener: StreamOpener,
    digest: Option<PlaintextDigest>,
    plaintext_len: u64,
    index: u64,
    /// Ciphertext read ahead: at most one sealed chunk plus the trailer plus
    /// one byte, which is how a chunk is known to be final or not.
    buf: Vec<u8>,
    filled: usize,
    /// Verified plaintext in `buf` not yet handed out.
    plaintext: Range<usize>,
    /// Bytes at the front of `buf` to discard before reading more.
    consumed: usize,
    state: State,
}

impl DecoderCore {
    pub(crate) fn new(opened: OpenedHeader) -> Result<Self> {
        let window = opened.core.chunk_size as usize + TAG_LEN + TRAILER_LEN + 1;
        Ok(Self {
            opener: StreamOpener::new(&opened.keys.payload)?,
            opened,
            digest: Some(PlaintextDigest::new()),
            plaintext_len: 0,
            index: 0,
            buf: vec![0u8; window],
            filled: 0,
            plaintext: 0..0,
            consumed: 0,
            state: State::Reading,
        })
    }

    pub(crate) fn resumed(opened: OpenedHeader, point: ResumePoint) -> Result<Self> {
        let mut core = Self::new(opened)?;
        core.digest = Some(point.digest);
        core.plaintext_len = point.plaintext_len;
        core.index = point.chunks;
        Ok(core)
    }

    /// Verified plaintext not yet handed out.
    pub(crate) fn plaintext(&self) -> &[u8] {
        &self.buf[self.plaintext.clone()]
    }

    /// Marks `n` bytes of [`DecoderCore::plaintext`] as handed out.
    pub(crate) fn consume_plaintext(&mut self, n: usize) {
        self.plaintext.start += n;
    }

    /// `Some(Ok)` when everything verified and was handed out, `Some(Err)`
    /// after a failure, `None` while more input is needed.
    pub(crate) fn outcome(&self) -> Option<Result<&Verified>> {
        match &self.state {
            State::Done(verified) if self.plaintext.is_empty() => Some(Ok(verified)),
            State::Failed => Some(Err(Error::Crypto("decryption already failed"))),
            _ => None,
        }
    }

    /// Where the next input bytes go; empty once a decision can be made.
    pub(crate) fn spare(&mut self) -> &mut [u8] {
        if self.consumed > 0 {
            self.buf.copy_within(self.consumed..self.filled, 0);
            self.filled -= self.consumed;
            self.consumed = 0;
        }
        &mut self.buf[self.filled..]
    }

    /// Records that `n` bytes were read into [`DecoderCore::spare`].
    pub(crate) fn filled(&mut self, n: usize) {
        self.filled += n;
    }

    /// Decrypts the next chunk once the window is full (`eof == false`) or
    /// the input ended (`eof == true`). On failure the state is final.
    pub(crate) fn decode(&mut self, eof: bool) -> Result<()> {
        let result = if eof {
            self.decode_last()
        } else {
            self.decode_middle()
        };
        if result.is_err() {
            self.state = State::Failed;
            self.plaintext = 0..0;
        }
        result
    }

    fn decode_middle(&mut self) -> Result<()> {
        debug_assert_eq!(self.filled, self.buf.len());
        let sealed_chunk = self.opened.core.chunk_size as usize + TAG_LEN;
        let plain = self
            .opener
            .open_chunk(self.index, false, &mut self.buf[..sealed_chunk])?;
        self.digest
            .as_mut()
            .ok_or(Error::Crypto("digest already finished"))?
            .update(plain)?;
        self.plaintext = 0..plain.len();
        self.plaintext_len += plain.len() as u64;
        self.consumed = sealed_chunk;
        self.index += 1;
        Ok(())
    }

    /// At end of input: the last `TRAILER_LEN` bytes are the trailer and
    /// what precedes them is the final chunk.
    fn decode_last(&mut self) -> Result<()> {
        let len = self.filled;
        if len < TAG_LEN + TRAILER_LEN {
            return Err(Error::Truncated("payload or trailer missing"));
        }
        let chunk_end = len - TRAILER_LEN;
        let saved = self.buf[..len].to_vec();
        let index = self.index;
        let plain_len = match self
            .opener
            .open_chunk(index, true, &mut self.buf[..chunk_end])
        {
            Ok(plain) => plain.len(),
            Err(_) => return Err(self.diagnose_last(&saved)),
        };
        if plain_len == 0 && index != 0 {
            return Err(Error::ChunkAuth { index });
        }
        let mut digest = self
            .digest
            .take()
            .ok_or(Error::Crypto("digest already finished"))?;
        digest.update(&self.buf[..plain_len])?;
        self.plaintext_len += plain_len as u64;
        let sha = digest.finish()?;
        let trailer = self.opened.verify_trailer(
            &self.buf[chunk_end..len],
            self.plaintext_len,
            Some(&sha),
        )?;
        // Only now, with the signature checked, is the final chunk released.
        self.plaintext = 0..plain_len;
        self.consumed = len;
        self.state = State::Done(Box::new(Verified {
            plaintext_len: trailer.plaintext_len,
            plaintext_sha256: trailer.plaintext_sha256,
            sender: self.opened.core.sender.clone(),
            metadata: self.opened.metadata.clone(),
        }));
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

/// Streams and verifies a payload from a [`Read`]. See the module docs.
pub struct Decryptor<R> {
    inner: R,
    core: DecoderCore,
}

impl<R: Read> Decryptor<R> {
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
    /// be discarded.
    pub fn copy_to(mut self, out: &mut impl Write) -> Result<Verified> {
        loop {
            let plain = self.core.plaintext();
            if !plain.is_empty() {
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
    use crate::encrypt::{EncryptOptions, Stanzas, prepare};

    /// Bob, a recipient, knows the file key and so can re-seal the trailer.
    /// A trailer signed by anyone but the header's sender must be refused.
    #[test]
    fn trailer_signed_by_someone_other_than_the_sender_is_refused() {
        let alice = Identity::generate().unwrap();
        let bob = Identity::generate().unwrap();
        let recipients = [bob.public().clone()];
        let mut w = prepare(EncryptOptions::new(&recipients, &alice))
            .unwrap()
            .writer(Vec::new(), Stanzas::Embedded)
            .unwrap();
        w.write_all(b"pay 100 to carol").unwrap();
        let mut file = w.finish().unwrap().0;

        let (header, _) = Header::parse(&file).unwrap();
        let opened = header.open(&bob, &[]).unwrap();
        let honest = Trailer::open(
            &opened.keys.trailer,
            &opened.header_hash,
            &file[file.len() - TRAILER_LEN..],
        )
        .unwrap();
        let forged = Trailer::sign(
            &bob,
            &opened.header_hash,
            honest.plaintext_len,
            honest.plaintext_sha256,
        )
        .seal(&opened.keys.trailer, &opened.header_hash)
        .unwrap();
        let at = file.len() - TRAILER_LEN;
        file[at..].copy_from_slice(&forged);

        let mut out = Vec::new();
        let err = decrypt(&bob, &file[..], &mut out).unwrap_err();
        assert!(matches!(err, Error::BadSignature), "{err}");
        // The final (here: only) chunk is withheld until the signature verifies.
        assert!(out.is_empty());
    }
}
