//! SHA-256 of the plaintext, off the encrypting thread for large files.
//!
//! SHA-256 (about 1.75 GB/s with SHA-NI) is several times slower than
//! AES-256-GCM (about 10 GB/s), so on one thread the digest the trailer needs
//! would set the speed of the whole format. Once a file has passed
//! [`THREAD_AFTER`] bytes, the hashing moves to a helper thread fed through a
//! bounded channel (each chunk is copied once), so AES, I/O and hashing
//! overlap on separate cores. Small files never start a thread. The result is
//! the same digest either way; only where it is computed changes.

use std::sync::mpsc::{Receiver, SyncSender, TrySendError, sync_channel};
use std::thread::JoinHandle;

use aws_lc_rs::digest::{Context, SHA256};

use crate::{Error, Result};

/// Bytes hashed inline before a helper thread is worth starting.
const THREAD_AFTER: u64 = 4 * 1024 * 1024;
/// Chunks in flight to the helper; bounds memory to this many chunk buffers.
const DEPTH: usize = 4;

/// A running SHA-256 that may hand its work to a helper thread.
pub(crate) struct PlaintextDigest {
    state: State,
    absorbed: u64,
}

enum State {
    Inline(Context),
    Threaded(Worker),
    Taken,
}

struct Worker {
    chunks: SyncSender<Vec<u8>>,
    spare: Receiver<Vec<u8>>,
    handle: JoinHandle<Context>,
}

impl PlaintextDigest {
    pub(crate) fn new() -> Self {
        Self {
            state: State::Inline(Context::new(&SHA256)),
            absorbed: 0,
        }
    }

    pub(crate) fn update(&mut self, data: &[u8]) -> Result<()> {
        self.absorbed += data.len() as u64;
        match &mut self.state {
            State::Inline(ctx) => {
                ctx.update(data);
                if self.absorbed >= THREAD_AFTER {
                    self.go_threaded();
                }
                Ok(())
            }
            State::Threaded(worker) => worker.send(data),
            State::Taken => Err(Error::Crypto("digest used after finish")),
        }
    }

    fn go_threaded(&mut self) {
        if let State::Inline(ctx) = std::mem::replace(&mut self.state, State::Taken) {
            let (chunks, inbox) = sync_channel::<Vec<u8>>(DEPTH);
            let (give_back, spare) = sync_channel::<Vec<u8>>(DEPTH + 1);
            let spawned = std::thread::Builder::new()
                .name("coffer-sha256".into())
                .spawn(move || {
                    let mut ctx = ctx;
                    for chunk in inbox {
                        ctx.update(&chunk);
                        // Recycle the buffer; if the pool is full, drop it.
                        let _ = give_back.try_send(chunk);
                    }
                    ctx
                });
            self.state = match spawned {
                Ok(handle) => State::Threaded(Worker {
                    chunks,
                    spare,
                    handle,
                }),
                // No thread to be had: the context went into the closure that
                // failed to spawn, so the digest cannot continue. Fail closed.
                Err(_) => State::Taken,
            };
        }
    }

    /// The final digest; joins the helper thread if there is one.
    pub(crate) fn finish(self) -> Result<[u8; 32]> {
        let ctx = match self.state {
            State::Inline(ctx) => ctx,
            State::Threaded(worker) => {
                drop(worker.chunks);
                worker
                    .handle
                    .join()
                    .map_err(|_| Error::Crypto("digest thread failed"))?
            }
            State::Taken => return Err(Error::Crypto("digest thread could not start")),
        };
        let mut out = [0u8; 32];
        out.copy_from_slice(ctx.finish().as_ref());
        Ok(out)
    }
}

impl Worker {
    fn send(&mut self, data: &[u8]) -> Result<()> {
        let mut buf = self.spare.try_recv().unwrap_or_default();
        buf.clear();
        buf.extend_from_slice(data);
        match self.chunks.try_send(buf) {
            Ok(()) => Ok(()),
            // The helper is behind: wait for it (this is the backpressure).
            Err(TrySendError::Full(buf)) => self
                .chunks
                .send(buf)
                .map_err(|_| Error::Crypto("digest thread stopped")),
            Err(TrySendError::Disconnected(_)) => Err(Error::Crypto("digest thread stopped")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reference(data: &[u8]) -> [u8; 32] {
        crate::keys::sha256(data)
    }

    #[test]
    fn inline_and_threaded_digests_equal_one_shot_sha256() {
        let data: Vec<u8> = (0..(THREAD_AFTER as usize * 3 + 12345))
            .map(|i| (i * 31 % 251) as u8)
            .collect();
        for piece in [1000, 65536, 1 << 20] {
            let mut digest = PlaintextDigest::new();
            for chunk in data.chunks(piece) {
                digest.update(chunk).unwrap();
            }
            assert_eq!(digest.finish().unwrap(), reference(&data), "piece {piece}");
        }
        let mut small = PlaintextDigest::new();
        small.update(b"abc").unwrap();
        assert_eq!(small.finish().unwrap(), reference(b"abc"));
    }
}
