//! The STREAM construction (Hoang, Reyhanitabar, Rogaway, Vizár, "Online
//! Authenticated-Encryption and its Nonce-Reuse Misuse-Resistance", 2015)
//! instantiated with AES-256-GCM.
//!
//! The plaintext is cut into chunks; chunk `i` is sealed under the payload key
//! with the 96-bit nonce
//!
//! ```text
//! nonce_i = BE88(i) || flag        flag = 0x01 for the final chunk, else 0x00
//! ```
//!
//! so reordering chunks changes their nonces, dropping the tail leaves no
//! chunk with the final flag, and appending after the final chunk is refused.
//!
//! **Invariant: a payload key must never be reused across files.** Each file
//! derives its payload key from a fresh random file key *and* a fresh random
//! salt (see [`crate::keys`]), and within a file the counter only ever moves
//! forward, so no (key, nonce) pair can repeat. The counter is checked against
//! its 88-bit bound before use; exhausting it is an error, never a wrap.
//!
//! This module does only the cryptography of one chunk at a time, in place;
//! framing lives in [`mod@crate::encrypt`] and [`mod@crate::decrypt`].

use std::sync::Arc;

use aws_lc_rs::aead::{AES_256_GCM, Aad, LessSafeKey, Nonce, UnboundKey};
use zeroize::Zeroizing;

use crate::{Error, Result};

/// Length of the AES-GCM authentication tag appended to every chunk.
pub const TAG_LEN: usize = 16;

/// Chunk counters occupy 88 bits of the nonce.
const MAX_COUNTER: u64 = u64::MAX; // 2^64-1 < 2^88: the u64 bound is the tighter one.

fn nonce(counter: u64, last: bool) -> Nonce {
    let mut bytes = [0u8; 12];
    // Bytes 0..3 are the high 24 bits of the 88-bit counter; a u64 counter
    // never sets them.
    bytes[3..11].copy_from_slice(&counter.to_be_bytes());
    bytes[11] = u8::from(last);
    Nonce::assume_unique_for_key(bytes)
}

fn aead_key(key: &Zeroizing<[u8; 32]>) -> Result<LessSafeKey> {
    let unbound = UnboundKey::new(&AES_256_GCM, key.as_ref())
        .map_err(|_| Error::Crypto("AES-256-GCM key setup"))?;
    Ok(LessSafeKey::new(unbound))
}

/// Seals successive chunks of one payload. Consumed by sealing the final chunk.
pub struct StreamSealer {
    /// Shared with [`Reserved`] runs of indices being sealed on other threads.
    key: Arc<LessSafeKey>,
    counter: u64,
}

impl StreamSealer {
    /// Starts a stream at chunk 0. `payload_key` must be fresh for this file.
    pub fn new(payload_key: &Zeroizing<[u8; 32]>) -> Result<Self> {
        Ok(Self {
            key: Arc::new(aead_key(payload_key)?),
            counter: 0,
        })
    }

    /// Takes the next `count` indices for non-final chunks to be sealed
    /// later, on any thread, by [`Reserved::seal`]. The counter moves past
    /// them now, so no other chunk of this stream can get one of them.
    pub fn reserve(&mut self, count: u64) -> Result<Reserved> {
        if MAX_COUNTER - self.counter <= count {
            return Err(Error::Crypto("STREAM counter exhausted"));
        }
        let first = self.counter;
        self.counter += count;
        Ok(Reserved {
            key: Arc::clone(&self.key),
            first,
            count,
        })
    }

    /// Index of the next chunk to be sealed.
    pub fn next_index(&self) -> u64 {
        self.counter
    }

    /// Encrypts a non-final chunk in place and appends its tag.
    pub fn seal_chunk(&mut self, chunk: &mut Vec<u8>) -> Result<()> {
        self.seal(chunk, false)?;
        self.counter += 1;
        Ok(())
    }

    /// Encrypts the final chunk in place and appends its tag. Taking `self`
    /// makes a second final chunk (and any chunk after it) impossible.
    pub fn seal_last(mut self, chunk: &mut Vec<u8>) -> Result<()> {
        self.seal(chunk, true)
    }

    /// Encrypts the non-final chunk that makes up `buf[start..]` in place
    /// and appends its tag: lets a writer seal straight into the buffer it
    /// sends, after what it holds already.
    pub fn seal_chunk_at(&mut self, buf: &mut Vec<u8>, start: usize) -> Result<()> {
        self.seal_at(buf, start, false)?;
        self.counter += 1;
        Ok(())
    }

    /// Like [`StreamSealer::seal_chunk_at`] for the final chunk.
    pub fn seal_last_at(mut self, buf: &mut Vec<u8>, start: usize) -> Result<()> {
        self.seal_at(buf, start, true)
    }

    /// Seals `slots.len()` consecutive non-final chunks, on up to `threads`
    /// threads. Each slot is one chunk's plaintext followed by `TAG_LEN`
    /// spare bytes that receive its tag. `then(index, sealed)` runs on the
    /// thread that sealed the slot (to hash it while it is in cache); the
    /// results come back in slot order. Every index is used once: the
    /// counter moves past all the slots before any is sealed.
    pub fn seal_many<T: Send>(
        &mut self,
        slots: &mut [&mut [u8]],
        threads: usize,
        then: impl Fn(u64, &[u8]) -> T + Sync,
    ) -> Result<Vec<T>> {
        let reserved = self.reserve(slots.len() as u64)?;
        let threads = threads.clamp(1, slots.len().max(1));
        if threads == 1 {
            return reserved.seal(slots, then);
        }
        let per = slots.len().div_ceil(threads);
        let groups = reserved.split(per as u64);
        let count = slots.len();
        std::thread::scope(|scope| {
            let then = &then;
            let workers: Vec<_> = slots
                .chunks_mut(per)
                .zip(groups)
                .map(|(group, run)| scope.spawn(move || run.seal(group, then)))
                .collect();
            let mut results = Vec::with_capacity(count);
            for worker in workers {
                let group = worker
                    .join()
                    .map_err(|_| Error::Crypto("a sealing thread panicked"))??;
                results.extend(group);
            }
            Ok(results)
        })
    }

    fn seal(&mut self, chunk: &mut Vec<u8>, last: bool) -> Result<()> {
        self.seal_at(chunk, 0, last)
    }

    fn seal_at(&mut self, buf: &mut Vec<u8>, start: usize, last: bool) -> Result<()> {
        // The invariant: each (key, counter) seals at most one chunk. The
        // counter is checked before use and only ever incremented.
        if self.counter == MAX_COUNTER {
            return Err(Error::Crypto("STREAM counter exhausted"));
        }
        let chunk = buf
            .get_mut(start..)
            .ok_or(Error::Crypto("chunk start past the buffer"))?;
        let tag = self
            .key
            .seal_in_place_separate_tag(nonce(self.counter, last), Aad::empty(), chunk)
            .map_err(|_| Error::Crypto("AES-256-GCM seal"))?;
        buf.extend_from_slice(tag.as_ref());
        Ok(())
    }
}

/// A run of consecutive chunk indices taken from a [`StreamSealer`] by
/// [`StreamSealer::reserve`], for sealing non-final chunks on any thread.
///
/// Each index is used at most once: the sealer's counter already moved past
/// the run, [`Reserved::seal`] consumes it, and [`Reserved::split`] cuts it
/// into disjoint runs. Nothing else can seal under these nonces.
pub struct Reserved {
    key: Arc<LessSafeKey>,
    first: u64,
    count: u64,
}

impl Reserved {
    /// The index of the run's first chunk.
    pub fn first(&self) -> u64 {
        self.first
    }

    /// The number of indices in the run.
    pub fn len(&self) -> u64 {
        self.count
    }

    /// Whether the run has no index.
    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// Cuts the run into consecutive runs of `per` indices (the last may be
    /// shorter).
    pub fn split(self, per: u64) -> Vec<Reserved> {
        let per = per.max(1);
        (0..self.count.div_ceil(per))
            .map(|g| Reserved {
                key: Arc::clone(&self.key),
                first: self.first + g * per,
                count: per.min(self.count - g * per),
            })
            .collect()
    }

    /// Seals one non-final chunk per index of the run, in place. Each slot
    /// is one chunk's plaintext followed by `TAG_LEN` spare bytes that
    /// receive its tag; there must be exactly one slot per index.
    /// `then(index, sealed)` runs on each sealed slot while it is in cache
    /// (to hash it); its results come back in slot order.
    pub fn seal<T>(
        self,
        slots: &mut [&mut [u8]],
        mut then: impl FnMut(u64, &[u8]) -> T,
    ) -> Result<Vec<T>> {
        if slots.len() as u64 != self.count {
            return Err(Error::Crypto(
                "a reserved run sealed with the wrong slot count",
            ));
        }
        if slots.iter().any(|slot| slot.len() < TAG_LEN) {
            return Err(Error::Crypto("a chunk slot has no room for its tag"));
        }
        let mut out = Vec::with_capacity(slots.len());
        for (index, slot) in (self.first..).zip(slots.iter_mut()) {
            let split = slot.len() - TAG_LEN;
            let (plain, tag_room) = slot.split_at_mut(split);
            let tag = self
                .key
                .seal_in_place_separate_tag(nonce(index, false), Aad::empty(), plain)
                .map_err(|_| Error::Crypto("AES-256-GCM seal"))?;
            tag_room.copy_from_slice(tag.as_ref());
            out.push(then(index, slot));
        }
        Ok(out)
    }
}

/// Opens chunks of one payload, sequentially or at any index.
pub struct StreamOpener {
    key: LessSafeKey,
}

impl StreamOpener {
    /// Prepares to open chunks sealed under `payload_key`.
    pub fn new(payload_key: &Zeroizing<[u8; 32]>) -> Result<Self> {
        Ok(Self {
            key: aead_key(payload_key)?,
        })
    }

    /// Decrypts chunk `index` (ciphertext followed by its tag) in place and
    /// returns the plaintext prefix of `chunk`. Nothing is returned unless the
    /// tag verifies; on failure the buffer's contents are unspecified and
    /// must not be used.
    pub fn open_chunk<'a>(
        &self,
        index: u64,
        last: bool,
        chunk: &'a mut [u8],
    ) -> Result<&'a mut [u8]> {
        if chunk.len() < TAG_LEN || index == MAX_COUNTER {
            return Err(Error::ChunkAuth { index });
        }
        self.key
            .open_in_place(nonce(index, last), Aad::empty(), chunk)
            .map_err(|_| Error::ChunkAuth { index })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(byte: u8) -> Zeroizing<[u8; 32]> {
        Zeroizing::new([byte; 32])
    }

    #[test]
    fn nonce_layout_is_counter_then_flag() {
        let mut expect = [0u8; 12];
        expect[10] = 5;
        expect[11] = 1;
        assert_eq!(nonce(5, true).as_ref(), &expect);
        expect[11] = 0;
        assert_eq!(nonce(5, false).as_ref(), &expect);
    }

    #[test]
    fn chunk_opens_only_at_its_index_and_flag() {
        let mut sealer = StreamSealer::new(&key(1)).unwrap();
        let mut first = b"first".to_vec();
        sealer.seal_chunk(&mut first).unwrap();
        let mut last = b"last".to_vec();
        sealer.seal_last(&mut last).unwrap();

        let opener = StreamOpener::new(&key(1)).unwrap();
        assert_eq!(
            opener.open_chunk(0, false, &mut first.clone()).unwrap(),
            b"first"
        );
        assert_eq!(
            opener.open_chunk(1, true, &mut last.clone()).unwrap(),
            b"last"
        );
        // Wrong index, wrong flag, wrong key: all refused.
        assert!(opener.open_chunk(1, false, &mut first.clone()).is_err());
        assert!(opener.open_chunk(0, true, &mut first.clone()).is_err());
        assert!(opener.open_chunk(1, false, &mut last.clone()).is_err());
        let other = StreamOpener::new(&key(2)).unwrap();
        assert!(other.open_chunk(0, false, &mut first.clone()).is_err());
    }

    #[test]
    fn seal_many_equals_sealing_one_by_one_on_any_number_of_threads() {
        let chunks: Vec<Vec<u8>> = (0..9u8).map(|i| vec![i; 300]).collect();
        let mut one_by_one = StreamSealer::new(&key(3)).unwrap();
        let expected: Vec<Vec<u8>> = chunks
            .iter()
            .map(|c| {
                let mut c = c.clone();
                one_by_one.seal_chunk(&mut c).unwrap();
                c
            })
            .collect();
        for threads in [1, 2, 4, 16] {
            let mut sealer = StreamSealer::new(&key(3)).unwrap();
            let mut bufs: Vec<Vec<u8>> = chunks
                .iter()
                .map(|c| [&c[..], &[0u8; TAG_LEN]].concat())
                .collect();
            let mut slots: Vec<&mut [u8]> = bufs.iter_mut().map(|b| &mut b[..]).collect();
            let indices = sealer.seal_many(&mut slots, threads, |i, _| i).unwrap();
            assert_eq!(indices, (0..9).collect::<Vec<u64>>());
            assert_eq!(bufs, expected, "threads {threads}");
            assert_eq!(sealer.next_index(), 9);
        }
    }

    /// Runs reserved one after the other and sealed in the other order, on
    /// another thread, give the chunks the sealer gives one by one; a run
    /// with the wrong number of slots is refused.
    #[test]
    fn reserved_runs_seal_like_the_sealer_in_any_order() {
        let mut one_by_one = StreamSealer::new(&key(4)).unwrap();
        let expected: Vec<Vec<u8>> = (0..5u8)
            .map(|i| {
                let mut c = vec![i; 100];
                one_by_one.seal_chunk(&mut c).unwrap();
                c
            })
            .collect();
        let mut sealer = StreamSealer::new(&key(4)).unwrap();
        let early = sealer.reserve(3).unwrap();
        let late = sealer.reserve(2).unwrap();
        assert_eq!(
            (early.first(), late.first(), sealer.next_index()),
            (0, 3, 5)
        );
        let mut bufs: Vec<Vec<u8>> = (0..5u8)
            .map(|i| [vec![i; 100], vec![0; TAG_LEN]].concat())
            .collect();
        let (front, back) = bufs.split_at_mut(3);
        std::thread::scope(|scope| {
            scope.spawn(|| {
                let mut slots: Vec<&mut [u8]> = back.iter_mut().map(|b| &mut b[..]).collect();
                assert_eq!(late.seal(&mut slots, |i, _| i).unwrap(), [3, 4]);
            });
        });
        let mut slots: Vec<&mut [u8]> = front.iter_mut().map(|b| &mut b[..]).collect();
        assert_eq!(early.seal(&mut slots, |i, _| i).unwrap(), [0, 1, 2]);
        assert_eq!(bufs, expected);

        let short = sealer.reserve(2).unwrap();
        let mut one = [0u8; 40];
        assert!(short.seal(&mut [&mut one[..]], |_, _| ()).is_err());
        let halves = sealer.reserve(5).unwrap().split(2);
        let firsts: Vec<u64> = halves.iter().map(Reserved::first).collect();
        assert_eq!(firsts, [7, 9, 11]);
        assert_eq!(sealer.next_index(), 12);
    }

    #[test]
    fn short_chunk_is_refused_without_panic() {
        let opener = StreamOpener::new(&key(1)).unwrap();
        assert!(matches!(
            opener.open_chunk(3, true, &mut [0u8; 15]),
            Err(Error::ChunkAuth { index: 3 })
        ));
    }
}
