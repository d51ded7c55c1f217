//! Random access: decrypt any byte range by reading only the chunks that
//! cover it.
//!
//! Chunk `i` of a payload starting at byte `p` occupies
//! `p + i·(chunk_size+16) .. +chunk_size+16`, and only the last chunk may be
//! shorter, so positions follow from the total length. Opening a
//! [`RangeReader`] authenticates the final chunk (flag set, right index) and
//! the trailer's length and signature, so a file cut at a chunk boundary is
//! refused up front. What a range read cannot check is the whole-plaintext
//! SHA-256; every chunk it returns is still authenticated at its position.

use std::io::{Read, Seek, SeekFrom, Write};

use crate::decrypt::{Header, OpenedHeader};
use crate::header::TRAILER_LEN;
use crate::identity::Identity;
use crate::stream::{StreamOpener, TAG_LEN};
use crate::{Error, Result};

/// Decrypts byte ranges of a file held in a seekable source.
pub struct RangeReader<R> {
    inner: R,
    opened: OpenedHeader,
    opener: StreamOpener,
    payload_start: u64,
    chunk_count: u64,
    plaintext_len: u64,
}

impl<R: Read + Seek> RangeReader<R> {
    /// Reads the header from the start of `inner`, opens it with `identity`
    /// (plus any detached stanzas in `extra`), and checks the file's end.
    pub fn open(mut inner: R, identity: &Identity, extra: &[crate::Stanza]) -> Result<Self> {
        inner.seek(SeekFrom::Start(0))?;
        let opened = Header::read_from(&mut inner)?.open(identity, extra)?;
        Self::from_opened(inner, opened)
    }

    /// Like [`RangeReader::open`] for a header already opened.
    pub fn from_opened(mut inner: R, opened: OpenedHeader) -> Result<Self> {
        let total = inner.seek(SeekFrom::End(0))?;
        let payload_start = opened.header_len() as u64;
        let sealed_chunk = u64::from(opened.core().chunk_size) + TAG_LEN as u64;
        let payload_len = total
            .checked_sub(payload_start + TRAILER_LEN as u64)
            .filter(|len| *len >= TAG_LEN as u64)
            .ok_or(Error::Truncated("payload or trailer missing"))?;
        let chunk_count = payload_len.div_ceil(sealed_chunk);
        let last_sealed = payload_len - (chunk_count - 1) * sealed_chunk;
        if last_sealed < TAG_LEN as u64 {
            return Err(Error::Truncated("final chunk is incomplete"));
        }
        let plaintext_len = (chunk_count - 1) * u64::from(opened.core().chunk_size)
            + (last_sealed - TAG_LEN as u64);
        let opener = StreamOpener::new(&opened.keys().payload)?;
        let mut reader = Self {
            inner,
            opened,
            opener,
            payload_start,
            chunk_count,
            plaintext_len,
        };
        reader.check_end(payload_len)?;
        Ok(reader)
    }

    fn check_end(&mut self, payload_len: u64) -> Result<()> {
        let last = self.chunk_count - 1;
        let plain = self.read_chunk(last)?;
        if plain.is_empty() && last != 0 {
            return Err(Error::ChunkAuth { index: last });
        }
        let mut trailer = [0u8; TRAILER_LEN];
        self.inner
            .seek(SeekFrom::Start(self.payload_start + payload_len))?;
        self.inner.read_exact(&mut trailer)?;
        self.opened
            .verify_trailer(&trailer, self.plaintext_len, None)?;
        Ok(())
    }

    /// The authenticated plaintext length.
    pub fn plaintext_len(&self) -> u64 {
        self.plaintext_len
    }

    /// The opened header (metadata, sender).
    pub fn header(&self) -> &OpenedHeader {
        &self.opened
    }

    fn read_chunk(&mut self, index: u64) -> Result<Vec<u8>> {
        let chunk_size = u64::from(self.opened.core().chunk_size);
        let sealed_chunk = chunk_size + TAG_LEN as u64;
        let last = index + 1 == self.chunk_count;
        let len = if last {
            self.plaintext_len - index * chunk_size + TAG_LEN as u64
        } else {
            sealed_chunk
        };
        self.inner
            .seek(SeekFrom::Start(self.payload_start + index * sealed_chunk))?;
        // `len` is at most chunk_size + 16, bounded by the header's checks.
        let mut buf = vec![0u8; len as usize];
        self.inner.read_exact(&mut buf).map_err(|err| {
            if err.kind() == std::io::ErrorKind::UnexpectedEof {
                Error::Truncated("chunk")
            } else {
                Error::Io(err)
            }
        })?;
        let plain_len = self.opener.open_chunk(index, last, &mut buf)?.len();
        buf.truncate(plain_len);
        Ok(buf)
    }

    /// Writes plaintext bytes `start..end` to `out`, reading only the chunks
    /// that cover them.
    pub fn copy_range(&mut self, start: u64, end: u64, out: &mut impl Write) -> Result<()> {
        if start > end || end > self.plaintext_len {
            return Err(Error::RangeOutOfBounds {
                start,
                end,
                len: self.plaintext_len,
            });
        }
        let chunk_size = u64::from(self.opened.core().chunk_size);
        let mut position = start;
        while position < end {
            let index = position / chunk_size;
            let chunk = self.read_chunk(index)?;
            let from = (position - index * chunk_size) as usize;
            let to = ((end - index * chunk_size).min(chunk.len() as u64)) as usize;
            out.write_all(&chunk[from..to])?;
            position = index * chunk_size + to as u64;
        }
        Ok(())
    }

    /// Plaintext bytes `start..end` as a vector.
    pub fn read_range(&mut self, start: u64, end: u64) -> Result<Vec<u8>> {
        let mut out = Vec::new();
        self.copy_range(start, end, &mut out)?;
        Ok(out)
    }
}
