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
    key: LessSafeKey,
    counter: u64,
}

impl StreamSealer {
    /// Starts a stream at chunk 0. `payload_key` must be fresh for this file.
    pub fn new(payload_key: &Zeroizing<[u8; 32]>) -> Result<Self> {
        Ok(Self {
            key: aead_key(payload_key)?,
            counter: 0,
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
        let count = slots.len() as u64;
        let first = self.counter;
        if MAX_COUNTER - first <= count {
            return Err(Error::Crypto("STREAM counter exhausted"));
        }
        if slots.iter().any(|slot| slot.len() < TAG_LEN) {
            return Err(Error::Crypto("a chunk slot has no room for its tag"));
        }
        self.counter += count;
        let key = &self.key;
        let seal_group = |start: usize, group: &mut [&mut [u8]]| -> Result<Vec<T>> {
            let mut out = Vec::with_capacity(group.len());
            for (j, slot) in group.iter_mut().enumerate() {
                let index = first + (start + j) as u64;
                let split = slot.len() - TAG_LEN;
                let (plain, tag_room) = slot.split_at_mut(split);
                let tag = key
                    .seal_in_place_separate_tag(nonce(index, false), Aad::empty(), plain)
                    .map_err(|_| Error::Crypto("AES-256-GCM seal"))?;
                tag_room.copy_from_slice(tag.as_ref());
                out.push(then(index, slot));
            }
            Ok(out)
        };
        let threads = threads.clamp(1, slots.len().max(1));
        if threads == 1 {
            return seal_group(0, slots);
        }
        let per = slots.len().div_ceil(threads);
        std::thread::scope(|scope| {
            let workers: Vec<_> = slots
                .chunks_mut(per)
                .enumerate()
                .map(|(g, group)| scope.spawn(move || seal_group(g * per, group)))
                .collect();
            let mut results = Vec::with_capacity(count as usize);
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

    #[test]
    fn short_chunk_is_refused_without_panic() {
        let opener = StreamOpener::new(&key(1)).unwrap();
        assert!(matches!(
            opener.open_chunk(3, true, &mut [0u8; 15]),
            Err(Error::ChunkAuth { index: 3 })
        ));
    }
}
