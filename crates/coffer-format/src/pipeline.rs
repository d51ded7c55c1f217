//! Encrypting a whole input with reading, sealing and writing overlapped:
//! what [`crate::encrypt()`] does.
//!
//! Profiling `coffer encrypt -o` of 1 GiB showed the `read(2)` and
//! `write(2)` copies costing about as much as the cryptography, all on one
//! thread. Here the caller's thread does only I/O and a sealing thread seals
//! the batch read before it:
//!
//! ```text
//! caller:  read k+1 into place | write k-1 | read k+2 | write k | ...
//! sealer:        seal k (in place, tree entries, on `threads` threads) | seal k+1 | ...
//! ```
//!
//! Each batch buffer is laid out as the file will be (each chunk's
//! plaintext, then room for its tag and tree entries), the input is read
//! straight into place, sealed there and written from there: one copy per
//! byte on each side, and buffers are reused (three in turn).
//!
//! **Invariant: a chunk is sealed as non-final only once a byte after it
//! was read.** The caller reads the first byte of the next chunk before
//! closing one; at the end of input the open chunk (possibly a full one, or
//! the empty chunk of an empty input) is the final chunk. The sealing thread
//! owns the one [`PayloadEncoder`], so STREAM counters advance in order and
//! are never reused.
//!
//! Input and output stay on the caller's thread, so neither needs to be
//! `Send` (standard input and output locks are not).

use std::io::{self, Read, Write};
use std::sync::mpsc;

use crate::encrypt::{
    BATCH_BYTES, EncryptOptions, PayloadEncoder, Stanzas, Written, gap_after, prepare,
};
use crate::{Error, Result};

/// Work for the sealing thread.
enum Job {
    /// `count` closed chunks laid out in `buf[..len]`.
    Middle {
        buf: Vec<u8>,
        len: usize,
        count: usize,
    },
    /// `closed` chunks, then the final chunk's plaintext at
    /// `buf[last_start..end]`.
    Last {
        buf: Vec<u8>,
        closed: usize,
        last_start: usize,
        end: usize,
    },
}

/// Sealed bytes to write: `buf[..len]`, and after the last job its summary.
struct Sealed {
    buf: Vec<u8>,
    len: usize,
    summary: Option<Written>,
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

/// Reads into `buf` until it is full or the input ends; the bytes read.
fn read_some<R: Read>(input: &mut R, buf: &mut [u8]) -> Result<usize> {
    let mut filled = 0;
    while filled < buf.len() {
        match input.read(&mut buf[filled..]) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(err) if err.kind() == io::ErrorKind::Interrupted => {}
            Err(err) => return Err(Error::Io(err)),
        }
    }
    Ok(filled)
}

/// Runs the sealing side: seals each job in order and sends it back.
fn seal_jobs(
    mut payload: PayloadEncoder<'_>,
    jobs: mpsc::Receiver<Job>,
    sealed: mpsc::SyncSender<Sealed>,
) -> Result<()> {
    for job in jobs {
        let done = match job {
            Job::Middle {
                mut buf,
                len,
                count,
            } => {
                payload.seal_laid_out(&mut buf[..len], count)?;
                Sealed {
                    buf,
                    len,
                    summary: None,
                }
            }
            Job::Last {
                mut buf,
                closed,
                last_start,
                end,
            } => {
                payload.seal_laid_out(&mut buf[..last_start], closed)?;
                buf.truncate(end);
                let summary = payload.seal_last(&mut buf, last_start)?;
                let len = buf.len();
                let _ = sealed.send(Sealed {
                    buf,
                    len,
                    summary: Some(summary),
                });
                return Ok(());
            }
        };
        if sealed.send(done).is_err() {
            break;
        }
    }
    Ok(())
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
    let batch = (BATCH_BYTES / chunk).max(1);
    let payload = PayloadEncoder::new(prepared)?;
    std::thread::scope(|scope| {
        let (to_sealer, jobs) = mpsc::sync_channel::<Job>(1);
        let (to_writer, sealed) = mpsc::sync_channel::<Sealed>(1);
        let sealer = scope.spawn(move || seal_jobs(payload, jobs, to_writer));
        let outcome = drive(input, &mut output, chunk, batch, &to_sealer, &sealed);
        drop(to_sealer);
        drop(sealed);
        let sealing = sealer
            .join()
            .map_err(|_| Error::Crypto("the sealing thread panicked"))?;
        // A sealing error ends the channels, so `drive` fails too: report
        // the cause.
        sealing?;
        outcome
    })
    .map(|summary| (output, summary))
}

/// The caller's side: reads batches into place, hands them to the sealer,
/// writes what comes back, in order.
fn drive<R: Read, W: Write>(
    input: &mut R,
    output: &mut W,
    chunk: usize,
    batch: usize,
    to_sealer: &mpsc::SyncSender<Job>,
    sealed: &mpsc::Receiver<Sealed>,
) -> Result<Written> {
    let stopped = || Error::Crypto("the sealing thread stopped");
    let mut spare: Vec<Vec<u8>> = Vec::new();
    let mut in_flight = 0usize;
    let write_one = |output: &mut W, spare: &mut Vec<Vec<u8>>| -> Result<Option<Written>> {
        let done = sealed.recv().map_err(|_| stopped())?;
        output.write_all(&done.buf[..done.len])?;
        spare.push(done.buf);
        Ok(done.summary)
    };
    let mut cur = Filling::new(Vec::new(), 0, batch, chunk);
    loop {
        if cur.open < chunk {
            let at = cur.at + cur.open;
            let n = read_some(input, &mut cur.buf[at..cur.at + chunk])?;
            if n == 0 {
                break;
            }
            cur.open += n;
            continue;
        }
        // The open chunk is full: it is closed only if a byte follows.
        if cur.closed + 1 < batch {
            let next_at = cur.next_at(chunk);
            let n = read_some(input, &mut cur.buf[next_at..next_at + chunk])?;
            if n == 0 {
                break;
            }
            cur.closed += 1;
            cur.at = next_at;
            cur.open = n;
            continue;
        }
        let mut next = Filling::new(
            spare.pop().unwrap_or_default(),
            cur.first + batch as u64,
            batch,
            chunk,
        );
        let n = read_some(input, &mut next.buf[..chunk])?;
        if n == 0 {
            spare.push(next.buf);
            break;
        }
        next.open = n;
        let len = cur.next_at(chunk);
        let full = std::mem::replace(&mut cur, next);
        to_sealer
            .send(Job::Middle {
                buf: full.buf,
                len,
                count: batch,
            })
            .map_err(|_| stopped())?;
        in_flight += 1;
        // Write the batch before this one while the sealer works on it.
        if in_flight > 1 {
            write_one(output, &mut spare)?;
            in_flight -= 1;
        }
    }
    to_sealer
        .send(Job::Last {
            closed: cur.closed,
            last_start: cur.at,
            end: cur.at + cur.open,
            buf: cur.buf,
        })
        .map_err(|_| stopped())?;
    for _ in 0..in_flight {
        write_one(output, &mut spare)?;
    }
    let summary = write_one(output, &mut spare)?.ok_or(Error::Crypto("unfinished"))?;
    output.flush()?;
    Ok(summary)
}
