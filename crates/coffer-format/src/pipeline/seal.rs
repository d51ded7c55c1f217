//! Encrypting a whole input with reading, sealing and writing overlapped:
//! what [`crate::encrypt()`] does.
//!
//! Profiling `coffer encrypt -o` of 1 GiB showed the `read(2)` and
//! `write(2)` copies costing about as much as the cryptography, all on one
//! thread. Here the caller's thread reads pieces of a few chunks and writes
//! them, and the pieces are sealed on it and on helper threads through
//! [`super::ordered`]:
//!
//! ```text
//! caller:  read k | read k+1 | seal k+1 (queue full) | write k | read k+2 | ...
//! helper:         | seal k                | seal k+2 ...
//! ```
//!
//! Each piece buffer is laid out as the file will be (each chunk's
//! plaintext, then room for its tag and tree entries), the input is read
//! straight into place, sealed there and written from there: one copy per
//! byte on each side, and buffers are reused.
//!
//! **Invariants.** A chunk is sealed as non-final only once a byte after it
//! was read: the caller reads the first byte of the next chunk before
//! closing one, and at the end of input the open chunk (possibly a full
//! one, or the empty chunk of an empty input) is the final chunk. Each
//! piece's chunk indices are reserved from the one STREAM counter when the
//! piece is made ([`crate::stream::Reserved`]), so no nonce repeats
//! whichever thread seals it; the leaves join the content tree in index
//! order as the pieces come back in order.
//!
//! Input and output stay on the caller's thread, so neither needs to be
//! `Send` (standard input and output locks are not).

use std::io::{Read, Write};

use super::ordered::{self, Stage};
use super::{PIECE_BYTES, read_full};
use crate::encrypt::{
    EncryptOptions, PayloadEncoder, SealJob, Stanzas, Written, gap_after, prepare,
};
use crate::tree::Hash;
use crate::{Error, Result};

/// A full piece to seal: `buf[..len]` laid out for its chunks.
struct Job {
    seal: SealJob,
    buf: Vec<u8>,
    len: usize,
}

/// A sealed piece: chunks from `first`, their leaves, still without their
/// tree entries.
struct Sealed {
    buf: Vec<u8>,
    len: usize,
    first: u64,
    leaves: Vec<Hash>,
}

fn seal_piece(mut job: Job) -> Result<Sealed> {
    let first = job.seal.first();
    let leaves = job.seal.seal(&mut job.buf[..job.len])?;
    Ok(Sealed {
        buf: job.buf,
        len: job.len,
        first,
        leaves,
    })
}

/// A batch being read: chunks `first..first + closed` closed, then the open
/// chunk's `open` bytes at `at`.
struct Filling {
    buf: Vec<u8>,
    first: u64,
    closed: usize,
    at: usize,
    open: usize,
}

impl Filling {
    /// A batch starting at chunk `first`, in `buf` (grown to the layout of
    /// `batch` full chunks; zeroed only when it grows).
    fn new(mut buf: Vec<u8>, first: u64, batch: usize, chunk: usize) -> Self {
        let need: usize = (0..batch as u64)
            .map(|j| chunk + gap_after(first + j))
            .sum();
        if buf.len() < need {
            buf.resize(need, 0);
        }
        Self {
            buf,
            first,
            closed: 0,
            at: 0,
            open: 0,
        }
    }

    /// Where the chunk after the open one starts.
    fn next_at(&self, chunk: usize) -> usize {
        self.at + chunk + gap_after(self.first + self.closed as u64)
    }
}

/// The caller's side: reads pieces into place, joins and writes the sealed
/// ones in order.
struct Sealing<'p, 'a, R, W> {
    input: &'p mut R,
    output: &'p mut W,
    payload: PayloadEncoder<'a>,
    chunk: usize,
    /// Chunks per piece.
    piece: usize,
    /// The piece being read.
    cur: Filling,
    ended: bool,
    spare: Vec<Vec<u8>>,
}

impl<R: Read, W: Write> Stage for Sealing<'_, '_, R, W> {
    type Job = Job;
    type Done = Sealed;

    fn next(&mut self) -> Result<Option<Job>> {
        let chunk = self.chunk;
        while !self.ended {
            let cur = &mut self.cur;
            if cur.open < chunk {
                let at = cur.at + cur.open;
                let n = read_full(self.input, &mut cur.buf[at..cur.at + chunk])?;
                self.ended = n == 0;
                cur.open += n;
                continue;
            }
            // The open chunk is full: it is closed only if a byte follows.
            if cur.closed + 1 < self.piece {
                let next_at = cur.next_at(chunk);
                let n = read_full(self.input, &mut cur.buf[next_at..next_at + chunk])?;
                if n == 0 {
                    self.ended = true;
                    break;
                }
                cur.closed += 1;
                cur.at = next_at;
                cur.open = n;
                continue;
            }
            let buf = self.spare.pop().unwrap_or_default();
            let mut next = Filling::new(buf, cur.first + self.piece as u64, self.piece, chunk);
            let n = read_full(self.input, &mut next.buf[..chunk])?;
            if n == 0 {
                self.spare.push(next.buf);
                self.ended = true;
                break;
            }
            next.open = n;
            let len = cur.next_at(chunk);
            let full = std::mem::replace(cur, next);
            let seal = self.payload.reserve_laid_out(self.piece)?;
            if seal.first() != full.first {
                return Err(Error::Crypto("a piece reserved out of step"));
            }
            return Ok(Some(Job {
                seal,
                buf: full.buf,
                len,
            }));
        }
        Ok(None)
    }

    fn done(&mut self, mut sealed: Sealed) -> Result<()> {
        let region = &mut sealed.buf[..sealed.len];
        self.payload
            .join_laid_out(region, sealed.first, &sealed.leaves)?;
        self.output.write_all(region)?;
        self.spare.push(sealed.buf);
        Ok(())
    }
}

impl<R: Read, W: Write> Sealing<'_, '_, R, W> {
    /// After the last full piece: seals the chunks read since, the open one
    /// as final, and writes them with the signature.
    fn finish(self) -> Result<Written> {
        let Filling {
            mut buf,
            closed,
            at: last_start,
            open,
            ..
        } = self.cur;
        let mut payload = self.payload;
        payload.seal_laid_out(&mut buf[..last_start], closed)?;
        buf.truncate(last_start + open);
        let summary = payload.seal_last(&mut buf, last_start)?;
        self.output.write_all(&buf)?;
        self.output.flush()?;
        Ok(summary)
    }
}

/// See the module docs.
pub(crate) fn encrypt<R: Read, W: Write>(
    options: EncryptOptions<'_>,
    input: &mut R,
    mut output: W,
) -> Result<(W, Written)> {
    let prepared = prepare(options)?;
    output.write_all(&prepared.header_bytes(Stanzas::Embedded)?)?;
    let chunk = prepared.core().chunk_size as usize;
    let piece = (PIECE_BYTES / chunk).max(1);
    let helpers = prepared.threads() - 1;
    let mut stage = Sealing {
        input,
        output: &mut output,
        payload: PayloadEncoder::new(prepared)?,
        chunk,
        piece,
        cur: Filling::new(Vec::new(), 0, piece, chunk),
        ended: false,
        spare: Vec::new(),
    };
    ordered::run(&mut stage, helpers, seal_piece)?;
    let summary = stage.finish()?;
    Ok((output, summary))
}
