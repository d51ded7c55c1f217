//! Decrypting a whole payload with reading, opening and writing overlapped:
//! what [`crate::decrypt::Decryptor::copy_to`] does on more than one
//! thread.
//!
//! The caller's thread reads pieces of a few sealed chunks (with their tree
//! entries) into place and writes their plaintext; the pieces are hashed
//! and opened in place on it and on helper threads ([`super::ordered`]),
//! and their verdicts are taken in order by the one
//! [`DecoderCore`], exactly as the one-buffer reader takes them.
//!
//! **Invariant: a piece's chunks are opened as non-final only once `T + 1`
//! bytes after the piece were read** (the framing rule of docs/FORMAT.md
//! §7: chunk `i` is non-final when more than `S + E(i) + T` bytes follow
//! its start). Those look-ahead bytes start the next piece. At the end of
//! input, everything from the first chunk not yet taken (the final chunk,
//! entries and trailer, or whatever a cut or damaged file has there) goes
//! to [`DecoderCore::decode_rest`], so a damaged file gets the verdict the
//! one-buffer reader gives, and the final chunk is released only after the
//! signature checked.

use std::io::{Read, Write};

use super::ordered::{self, Stage};
use super::{PIECE_BYTES, read_full};
use crate::decrypt::{DecoderCore, Framing, Opened, Verified, open_middle};
use crate::stream::StreamOpener;
use crate::{Error, Result};

/// Sealed chunks `first..first + count` with their entries in `buf[..len]`.
struct Job {
    buf: Vec<u8>,
    len: usize,
    first: u64,
    count: usize,
    /// The offset of each chunk in `buf`.
    starts: Vec<usize>,
}

/// A piece opened in place, with each chunk's verdicts.
struct Done {
    job: Job,
    verdicts: Vec<Opened>,
}

/// The caller's side: reads pieces, admits and writes the opened ones.
struct Opening<'o, R, W> {
    core: DecoderCore,
    input: R,
    output: &'o mut W,
    sealed_chunk: usize,
    trailer_len: usize,
    /// Chunks per piece.
    piece: usize,
    /// The first chunk of the next piece.
    next_first: u64,
    /// Bytes read past the last piece: the start of the next.
    ahead: Vec<u8>,
    /// Set at the end of input: everything after the last piece.
    rest: Option<Vec<u8>>,
    spare: Vec<Vec<u8>>,
}

impl<R: Read, W: Write> Stage for Opening<'_, R, W> {
    type Job = Job;
    type Done = Done;

    fn next(&mut self) -> Result<Option<Job>> {
        if self.rest.is_some() {
            return Ok(None);
        }
        let first = self.next_first;
        let mut starts = Vec::with_capacity(self.piece);
        let mut len = 0;
        for index in first..first + self.piece as u64 {
            starts.push(len);
            len += self.sealed_chunk + self.core.entries_len(index);
        }
        let need = len + self.trailer_len + 1;
        let mut buf = self.spare.pop().unwrap_or_default();
        if buf.len() < need {
            buf.resize(need, 0);
        }
        let ahead = self.ahead.len();
        buf[..ahead].copy_from_slice(&self.ahead);
        let got = ahead + read_full(&mut self.input, &mut buf[ahead..need])?;
        if got < need {
            buf.truncate(got);
            self.rest = Some(buf);
            return Ok(None);
        }
        self.ahead.clear();
        self.ahead.extend_from_slice(&buf[len..need]);
        self.next_first += self.piece as u64;
        Ok(Some(Job {
            buf,
            len,
            first,
            count: self.piece,
            starts,
        }))
    }

    fn done(&mut self, done: Done) -> Result<()> {
        let Done { job, verdicts } = done;
        let ends = job.starts.iter().skip(1).copied().chain([job.len]);
        let chunks = job.starts.iter().copied().zip(ends);
        for ((index, (start, end)), opened) in (job.first..).zip(chunks).zip(verdicts) {
            let chunk = &job.buf[start..end];
            let plain_len = self.core.admit(index, chunk, opened)?;
            self.output.write_all(&chunk[..plain_len])?;
        }
        self.spare.push(job.buf);
        Ok(())
    }
}

/// Opens every chunk of a piece in place (on any thread).
fn open_piece(opener: &StreamOpener, v2: bool, sealed_chunk: usize, mut job: Job) -> Done {
    let verdicts = (job.first..)
        .zip(&job.starts)
        .take(job.count)
        .map(|(index, &start)| {
            let sealed = &mut job.buf[start..start + sealed_chunk];
            open_middle(opener, v2, index, sealed)
        })
        .collect();
    Done { job, verdicts }
}

/// See the module docs. `core` must not have read anything yet.
pub(crate) fn decrypt<R: Read, W: Write>(
    core: DecoderCore,
    input: R,
    output: &mut W,
) -> Result<Verified> {
    let Framing {
        opener,
        v2,
        sealed_chunk,
        trailer_len,
        threads,
    } = core.framing()?;
    let mut stage = Opening {
        next_first: core.next_index(),
        core,
        input,
        output,
        sealed_chunk,
        trailer_len,
        piece: (PIECE_BYTES / sealed_chunk).max(1),
        ahead: Vec::new(),
        rest: None,
        spare: Vec::new(),
    };
    let work = |job: Job| Ok(open_piece(&opener, v2, sealed_chunk, job));
    ordered::run(&mut stage, threads.saturating_sub(1), work)?;
    let rest = stage.rest.take().unwrap_or_default();
    let mut core = stage.core;
    core.decode_rest(rest)?;
    loop {
        let plain = core.plaintext();
        if plain.is_empty() {
            break;
        }
        stage.output.write_all(plain)?;
        let n = plain.len();
        core.consume_plaintext(n);
    }
    match core.outcome() {
        Some(outcome) => outcome.cloned(),
        None => Err(Error::Crypto("the reader stopped before the end")),
    }
}
