//! Writing coffer files.
//!
//! [`prepare`] builds the header (fresh file key and salt, encrypted
//! metadata, header MAC, one stanza per recipient). [`Prepared::writer`] then
//! streams the payload through [`Encryptor`], which implements
//! [`std::io::Write`]; [`Encryptor::finish`] seals the final chunk and writes
//! the signed trailer. Dropping an `Encryptor` without `finish` leaves a file
//! that no reader accepts (no final chunk, no trailer).

use std::io::{self, Write};

use aws_lc_rs::digest;
use zeroize::Zeroizing;

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

impl<'a> Prepared<'a> {
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
        let chunk_size = self.core.chunk_size as usize;
        Ok(Encryptor {
            out,
            chunk: Vec::with_capacity(chunk_size + TAG_LEN),
            chunk_size,
            payload: PayloadEncoder::new(self)?,
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
    digest: digest::Context,
    plaintext_len: u64,
    prepared: Prepared<'a>,
}

impl<'a> PayloadEncoder<'a> {
    fn new(prepared: Prepared<'a>) -> Result<Self> {
        Ok(Self {
            sealer: StreamSealer::new(&prepared.keys.payload)?,
            digest: digest::Context::new(&digest::SHA256),
            plaintext_len: 0,
            prepared,
        })
    }

    /// Seals a full, non-final chunk in place.
    fn seal_chunk(&mut self, chunk: &mut Vec<u8>) -> Result<()> {
        self.absorb(chunk);
        self.sealer.seal_chunk(chunk)
    }

    fn absorb(&mut self, plaintext: &[u8]) {
        self.digest.update(plaintext);
        self.plaintext_len += plaintext.len() as u64;
    }

    /// Seals the final chunk in place and returns the sealed trailer.
    fn seal_last(mut self, chunk: &mut Vec<u8>) -> Result<(Vec<u8>, Written)> {
        self.absorb(chunk);
        let chunks = self.sealer.next_index() + 1;
        self.sealer.seal_last(chunk)?;
        if self
            .prepared
            .expected_len
            .is_some_and(|expected| expected != self.plaintext_len)
        {
            return Err(Error::InputChanged("length differs from the metadata size"));
        }
        let mut plaintext_sha256 = [0u8; 32];
        plaintext_sha256.copy_from_slice(self.digest.finish().as_ref());
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

/// Streams plaintext into a coffer payload. See the module docs.
pub struct Encryptor<'a, W: Write> {
    out: W,
    /// The chunk being filled. A full chunk is sealed only once more input
    /// arrives, because until then it may be the final one.
    chunk: Vec<u8>,
    chunk_size: usize,
    payload: PayloadEncoder<'a>,
}

impl<W: Write> Encryptor<'_, W> {
    /// Seals the final chunk, writes the signed trailer, flushes, and returns
    /// the inner writer with a summary.
    pub fn finish(mut self) -> Result<(W, Written)> {
        let (trailer, written) = self.payload.seal_last(&mut self.chunk)?;
        self.out.write_all(&self.chunk)?;
        self.out.write_all(&trailer)?;
        self.out.flush()?;
        Ok((self.out, written))
    }
}

impl<W: Write> Write for Encryptor<'_, W> {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        if data.is_empty() {
            return Ok(0);
        }
        if self.chunk.len() == self.chunk_size {
            self.payload.seal_chunk(&mut self.chunk)?;
            self.out.write_all(&self.chunk)?;
            self.chunk.clear();
        }
        let take = data.len().min(self.chunk_size - self.chunk.len());
        self.chunk.extend_from_slice(&data[..take]);
        Ok(take)
    }

    /// Flushes the inner writer. A partially filled chunk stays buffered:
    /// sealing it early would fix its length and change the format.
    fn flush(&mut self) -> io::Result<()> {
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
