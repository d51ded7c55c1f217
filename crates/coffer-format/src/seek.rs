//! Random access: decrypt any byte range by reading only the chunks that
//! cover it (docs/FORMAT.md §7.3).
//!
//! Positions follow from the file length: the layout (chunk count `n` and
//! final chunk length) is the unique one that fits. Opening a
//! [`RangeReader`] authenticates the end of the file before any range is
//! served:
//!
//! * **version 2**: the final chunk opens (flag set, index `n−1`), and the
//!   signature verifies over the root computed from that chunk and the
//!   stored subtree roots, with the length and count the layout gives. Every
//!   range read then checks **every chunk it returns against that signed
//!   root** (the chunks' leaves, plus the stored roots of the subtrees
//!   around them), before releasing any of its plaintext: a co-recipient who
//!   re-seals, cuts or extends chunks is refused, and so is a file whose
//!   signed length disagrees with its layout;
//! * **version 1**: the final chunk and the sealed trailer's length and
//!   signature. A version 1 range read can check each chunk's tag at its
//!   position, but not the whole-plaintext SHA-256, so it does not protect
//!   against a co-recipient (docs/FORMAT.md appendix A).

use std::io::{Read, Seek, SeekFrom, Write};

use crate::decrypt::{Header, OpenedHeader};
use crate::header::Version;
use crate::identity::Identity;
use crate::stream::{StreamOpener, TAG_LEN};
use crate::tree::{self, HASH_LEN, Hash};
use crate::{Error, Result};

/// Plaintext bytes a version 2 range read verifies and holds at once.
const BATCH_BYTES: u64 = 4 * 1024 * 1024;

/// Decrypts byte ranges of a file held in a seekable source.
pub struct RangeReader<R> {
    inner: R,
    opened: OpenedHeader,
    opener: StreamOpener,
    payload_start: u64,
    chunk_count: u64,
    /// Sealed length of the final chunk.
    final_len: u64,
    plaintext_len: u64,
    /// The authenticated root (version 2).
    root: Option<Hash>,
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
        let version = opened.core().version;
        let payload_start = opened.header_len() as u64;
        let sealed_chunk = u64::from(opened.core().chunk_size) + TAG_LEN as u64;
        let payload_len = total
            .checked_sub(payload_start + version.trailer_len() as u64)
            .filter(|len| *len >= TAG_LEN as u64)
            .ok_or(Error::Truncated("payload or trailer missing"))?;
        let (chunk_count, final_len) = match version {
            Version::V1 => {
                let n = payload_len.div_ceil(sealed_chunk);
                (n, payload_len - (n - 1) * sealed_chunk)
            }
            Version::V2 => tree::layout_of(payload_len, sealed_chunk).ok_or(Error::BadLayout)?,
        };
        if final_len < TAG_LEN as u64 {
            return Err(Error::Truncated("final chunk is incomplete"));
        }
        let plaintext_len =
            (chunk_count - 1) * u64::from(opened.core().chunk_size) + (final_len - TAG_LEN as u64);
        let opener = StreamOpener::new(&opened.keys().payload)?;
        let mut reader = Self {
            inner,
            opened,
            opener,
            payload_start,
            chunk_count,
            final_len,
            plaintext_len,
            root: None,
        };
        reader.check_end(payload_len)?;
        Ok(reader)
    }

    fn sealed_chunk(&self) -> u64 {
        u64::from(self.opened.core().chunk_size) + TAG_LEN as u64
    }

    fn version(&self) -> Version {
        self.opened.core().version
    }

    fn check_end(&mut self, payload_len: u64) -> Result<()> {
        let last = self.chunk_count - 1;
        let trailer_len = self.version().trailer_len();
        let mut trailer = vec![0u8; trailer_len];
        self.read_at(self.payload_start + payload_len, &mut trailer)?;
        let (leaf, plain) = self.read_chunk(last)?;
        if plain.is_empty() && last != 0 {
            return Err(Error::EmptyFinalChunk);
        }
        match self.version() {
            Version::V1 => {
                self.opened
                    .verify_trailer_v1(&trailer, self.plaintext_len, None)?;
            }
            Version::V2 => {
                let root = self.root_with_leaves(last, &[leaf])?;
                self.opened.verify_signature(
                    self.plaintext_len,
                    self.chunk_count,
                    root,
                    &trailer,
                )?;
                self.root = Some(root);
            }
        }
        self.opened.check_declared_size(self.plaintext_len)
    }

    /// The authenticated plaintext length.
    pub fn plaintext_len(&self) -> u64 {
        self.plaintext_len
    }

    /// The opened header (metadata, sender).
    pub fn header(&self) -> &OpenedHeader {
        &self.opened
    }

    fn read_at(&mut self, offset: u64, buf: &mut [u8]) -> Result<()> {
        self.inner.seek(SeekFrom::Start(offset))?;
        self.inner.read_exact(buf).map_err(|err| {
            if err.kind() == std::io::ErrorKind::UnexpectedEof {
                Error::Truncated("the file ends early")
            } else {
                Error::Io(err)
            }
        })
    }

    fn chunk_len(&self, index: u64) -> u64 {
        if index + 1 == self.chunk_count {
            self.final_len
        } else {
            self.sealed_chunk()
        }
    }

    /// Reads chunk `index`, hashes it (version 2) and opens it. The
    /// plaintext is authenticated by its tag only; version 2 callers must
    /// check the leaf against the root before releasing it.
    fn read_chunk(&mut self, index: u64) -> Result<(Hash, Vec<u8>)> {
        let sealed_chunk = self.sealed_chunk();
        let offset = match self.version() {
            Version::V1 => index * sealed_chunk,
            Version::V2 => tree::chunk_offset(index, sealed_chunk),
        };
        // At most chunk_size + 16 bytes, bounded by the header's checks.
        let mut buf = vec![0u8; self.chunk_len(index) as usize];
        self.read_at(self.payload_start + offset, &mut buf)?;
        let leaf = match self.version() {
            Version::V1 => [0; HASH_LEN],
            Version::V2 => tree::leaf(index, &buf),
        };
        let last = index + 1 == self.chunk_count;
        let plain_len = self.opener.open_chunk(index, last, &mut buf)?.len();
        buf.truncate(plain_len);
        Ok((leaf, buf))
    }

    /// The stored root of the complete subtree of `2^level` leaves starting
    /// at `lo` (unauthenticated until the root it leads to is compared).
    fn stored_entry(&mut self, lo: u64, level: u32) -> Result<Hash> {
        let last = lo + (1u64 << level) - 1;
        let offset = tree::entry_offset(last, level, self.sealed_chunk(), self.chunk_len(last));
        let mut hash = [0u8; HASH_LEN];
        self.read_at(self.payload_start + offset, &mut hash)?;
        Ok(hash)
    }

    /// The tree root computed from `leaves` (of chunks `first..`) and the
    /// stored roots of every complete subtree that contains none of them.
    fn root_with_leaves(&mut self, first: u64, leaves: &[Hash]) -> Result<Hash> {
        let end = first + leaves.len() as u64;
        let n = self.chunk_count;
        let mut known = |lo: u64, level: u32| -> Result<Option<Hash>> {
            let hi = lo + (1u64 << level);
            if hi <= first || lo >= end {
                self.stored_entry(lo, level).map(Some)
            } else if level == 0 {
                Ok(Some(leaves[(lo - first) as usize]))
            } else {
                Ok(None)
            }
        };
        tree::root_with(0, n, &mut known, || Error::Crypto("tree leaf unavailable"))
    }

    /// Writes plaintext bytes `start..end` to `out`, reading only the chunks
    /// that cover them (and, version 2, the stored subtree roots around
    /// them). Nothing of a chunk is written before it verified.
    pub fn copy_range(&mut self, start: u64, end: u64, out: &mut impl Write) -> Result<()> {
        if start > end || end > self.plaintext_len {
            return Err(Error::RangeOutOfBounds {
                start,
                end,
                len: self.plaintext_len,
            });
        }
        let chunk_size = u64::from(self.opened.core().chunk_size);
        let batch = (BATCH_BYTES / chunk_size).max(1);
        let mut position = start;
        while position < end {
            let first = position / chunk_size;
            let last = ((end - 1) / chunk_size).min(first + batch - 1);
            let mut leaves = Vec::new();
            let mut plain = Vec::new();
            for index in first..=last {
                let (leaf, chunk) = self.read_chunk(index)?;
                leaves.push(leaf);
                plain.push(chunk);
            }
            if let Some(root) = self.root
                && self.root_with_leaves(first, &leaves)? != root
            {
                return Err(Error::TreeMismatch { index: first });
            }
            for (index, chunk) in (first..=last).zip(&plain) {
                let from = position.saturating_sub(index * chunk_size) as usize;
                let to = ((end - index * chunk_size).min(chunk.len() as u64)) as usize;
                out.write_all(&chunk[from..to])?;
                position = index * chunk_size + to as u64;
            }
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
