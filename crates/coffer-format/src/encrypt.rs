//! Writing coffer files.
//!
//! [`prepare`] builds the header (fresh file key and salt, encrypted
//! metadata, header MAC, one stanza per recipient). [`Prepared::writer`] then
//! streams the payload through [`Encryptor`], which implements
//! [`std::io::Write`]; [`Encryptor::finish`] seals the final chunk and writes
//! the signed trailer. Dropping an `Encryptor` without `finish` leaves a file
//! that no reader accepts (no final chunk, no trailer).

use std::io::{self, Write};

use zeroize::Zeroizing;

use crate::decrypt::OpenedHeader;
use crate::digest::PlaintextDigest;
use crate::header::{self, CoreHeader, Stanza};
use crate::identity::{Identity, PublicIdentity};
use crate::keys::{DerivedKeys, FileKey, random_array, seal_once};
use crate::metadata::Metadata;
use crate::recipient::wrap_file_key;
use crate::stream::{StreamSealer, TAG_LEN};
use crate::trailer::Trailer;
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
}

impl<'a> EncryptOptions<'a> {
    /// Options with the default chunk size and empty metadata.
    pub fn new(recipients: &'a [PublicIdentity], signer: &'a Identity) -> Self {
        Self {
            recipients,
            signer,
            metadata: Metadata::default(),
            chunk_size: header::DEFAULT_CHUNK_SIZE,
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
    let keys = DerivedKeys::derive(&file_key, &salt)?;
    let sender = options.signer.public().clone();

    let metadata_ct_len = metadata_plain.len() + TAG_LEN;
    let aad = CoreHeader::fixed_prefix(options.chunk_size, &salt, &sender, metadata_ct_len);
    let mut metadata_ct = metadata_plain.to_vec();
    seal_once(&keys.metadata, &aad, &mut metadata_ct)?;
    let mut mac_input = aad;
    mac_input.extend_from_slice(&metadata_ct);
    let mac = keys.header_mac(&mac_input);

    let core = CoreHeader {
        chunk_size: options.chunk_size,
        salt,
        sender,
        metadata_ct,
        mac,
    };
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
    })
}

/// Total encoded length of a file: `header_len` header bytes, then the
/// payload of `plaintext_len` bytes in chunks of `chunk_size` (an empty file
/// still has one, empty, final chunk), then the trailer. A server upload must
/// declare this before the first byte is sent.
pub fn encoded_len(header_len: u64, chunk_size: u32, plaintext_len: u64) -> u64 {
    let chunks = plaintext_len.div_ceil(u64::from(chunk_size)).max(1);
    header_len + plaintext_len + chunks * TAG_LEN as u64 + header::TRAILER_LEN as u64
}

impl<'a> Prepared<'a> {
    /// Rebuilds the writer state of a file whose header was written before,
    /// so that encrypting the *same* plaintext again yields the same bytes:
    /// this is how an interrupted upload resumes without storing ciphertext.
    ///
    /// The payload key is that file's key, so the caller must make sure the
    /// plaintext is unchanged before any re-encrypted byte leaves the
    /// machine (the STREAM invariant: a key and counter must never seal two
    /// different chunks). The stanza list is empty (they were sent already).
    pub fn reopen(opened: OpenedHeader, signer: &'a Identity) -> Result<Self> {
        if opened.core().sender != *signer.public() {
            return Err(Error::Crypto("the header was written by another sender"));
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
}

/// Summary of a finished file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Written {
    /// Plaintext bytes encrypted.
    pub plaintext_len: u64,
    /// SHA-256 of the plaintext (also sealed in the trailer).
    pub plaintext_sha256: [u8; 32],
    /// Number of payload chunks.
    pub chunks: u64,
}

/// Sealing state shared by every payload writer: the STREAM sealer, the
/// running plaintext digest, and what the trailer needs.
pub(crate) struct PayloadEncoder<'a> {
    sealer: StreamSealer,
    digest: PlaintextDigest,
    plaintext_len: u64,
    prepared: Prepared<'a>,
}

impl<'a> PayloadEncoder<'a> {
    fn new(prepared: Prepared<'a>) -> Result<Self> {
        Ok(Self {
            sealer: StreamSealer::new(&prepared.keys.payload)?,
            digest: PlaintextDigest::new(),
            plaintext_len: 0,
            prepared,
        })
    }

    /// Seals a full, non-final chunk in place.
    fn seal_chunk(&mut self, chunk: &mut Vec<u8>) -> Result<()> {
        self.absorb(chunk)?;
        self.sealer.seal_chunk(chunk)
    }

    fn absorb(&mut self, plaintext: &[u8]) -> Result<()> {
        self.plaintext_len += plaintext.len() as u64;
        self.digest.update(plaintext)
    }

    /// Seals the final chunk in place and returns the sealed trailer.
    fn seal_last(mut self, chunk: &mut Vec<u8>) -> Result<(Vec<u8>, Written)> {
        self.absorb(chunk)?;
        let chunks = self.sealer.next_index() + 1;
        self.sealer.seal_last(chunk)?;
        if self
            .prepared
            .expected_len
            .is_some_and(|expected| expected != self.plaintext_len)
        {
            return Err(Error::InputChanged("length differs from the metadata size"));
        }
        let plaintext_sha256 = self.digest.finish()?;
        let trailer = Trailer::sign(
            self.prepared.signer,
            &self.prepared.header_hash,
            self.plaintext_len,
            plaintext_sha256,
        );
        let sealed = trailer.seal(&self.prepared.keys.trailer, &self.prepared.header_hash)?;
        let written = Written {
            plaintext_len: self.plaintext_len,
            plaintext_sha256,
            chunks,
        };
        Ok((sealed, written))
    }
}

/// The chunking state machine shared by the sync and async writers. It
/// owns one chunk buffer that holds plaintext while filling and ciphertext
/// while waiting to be written out; it never does I/O itself.
pub(crate) struct EncoderCore<'a> {
    payload: Option<PayloadEncoder<'a>>,
    /// Plaintext being filled, or sealed bytes awaiting output.
    chunk: Vec<u8>,
    chunk_size: usize,
    /// Sealed bytes of `chunk` already handed to the output.
    written: usize,
    sealed: bool,
    summary: Option<Written>,
}

impl<'a> EncoderCore<'a> {
    pub(crate) fn new(prepared: Prepared<'a>) -> Result<Self> {
        let chunk_size = prepared.core.chunk_size as usize;
        Ok(Self {
            payload: Some(PayloadEncoder::new(prepared)?),
            chunk: Vec::with_capacity(chunk_size + TAG_LEN + crate::header::TRAILER_LEN),
            chunk_size,
            written: 0,
            sealed: false,
            summary: None,
        })
    }

    /// Sealed bytes waiting to be written; empty while filling.
    pub(crate) fn pending(&self) -> &[u8] {
        if self.sealed {
            &self.chunk[self.written..]
        } else {
            &[]
        }
    }

    /// Records that `n` pending bytes were written.
    pub(crate) fn consume(&mut self, n: usize) {
        self.written += n;
        if self.sealed && self.written == self.chunk.len() && self.summary.is_none() {
            self.chunk.clear();
            self.written = 0;
            self.sealed = false;
        }
    }

    /// Takes plaintext into the current chunk. A full chunk is sealed (as
    /// non-final) only when more data arrives, since until then it may be
    /// the final one; then 0 is returned and `pending` must be drained.
    pub(crate) fn accept(&mut self, data: &[u8]) -> Result<usize> {
        if self.sealed || data.is_empty() {
            return Ok(0);
        }
        let payload = self
            .payload
            .as_mut()
            .ok_or(Error::Crypto("write after finish"))?;
        if self.chunk.len() == self.chunk_size {
            payload.seal_chunk(&mut self.chunk)?;
            self.sealed = true;
            return Ok(0);
        }
        let take = data.len().min(self.chunk_size - self.chunk.len());
        self.chunk.extend_from_slice(&data[..take]);
        Ok(take)
    }

    /// Seals the final chunk and appends the trailer to `pending`. Call once
    /// `pending` is empty.
    pub(crate) fn finish(&mut self) -> Result<()> {
        if let Some(payload) = self.payload.take() {
            debug_assert!(!self.sealed, "finish with output pending");
            let (trailer, summary) = payload.seal_last(&mut self.chunk)?;
            self.chunk.extend_from_slice(&trailer);
            self.sealed = true;
            self.summary = Some(summary);
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
    /// Seals the final chunk, writes the signed trailer, flushes, and returns
    /// the inner writer with a summary.
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

/// Encrypts everything from `input` to `output` as a self-contained file.
pub fn encrypt<R: io::Read, W: Write>(
    options: EncryptOptions<'_>,
    input: &mut R,
    output: W,
) -> Result<(W, Written)> {
    let chunk_size = options.chunk_size as usize;
    let mut enc = prepare(options)?.writer(output, Stanzas::Embedded)?;
    // Read a chunk at a time straight into the encryptor's buffer size, so
    // large inputs cost one copy per byte.
    let mut buf = vec![0u8; chunk_size];
    loop {
        let n = match input.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(err) if err.kind() == io::ErrorKind::Interrupted => continue,
            Err(err) => return Err(Error::Io(err)),
        };
        enc.write_all(&buf[..n]).map_err(Error::from_io)?;
    }
    enc.finish()
}
