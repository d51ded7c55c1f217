//! Whole-file encryption and decryption with I/O and cryptography
//! overlapped, on every core: what [`crate::encrypt()`] and
//! [`crate::decrypt::Decryptor::copy_to`] (on more than one thread) run.
//!
//! * [`ordered`]: the caller's thread makes pieces of a few chunks (reading
//!   them into place) and takes them back in order (writing them); the
//!   cryptography runs on helper threads and, when they are busy, on the
//!   caller's thread too.
//! * [`seal`]: the encrypting side, [`open`]: the decrypting side.

pub(crate) mod open;
pub(crate) mod ordered;
pub(crate) mod seal;

use std::io::{self, Read};

use crate::{Error, Result};

/// Bytes per piece: small enough that the caller and the helpers share
/// the work evenly, large enough that handing a piece over costs little.
/// Under the fuzzer (`cfg(fuzzing)`) a few KiB, so small inputs reach the
/// piece edges.
const PIECE_BYTES: usize = if cfg!(fuzzing) { 1024 } else { 512 * 1024 };

/// Reads into `buf` until it is full or the input ends; the bytes read.
fn read_full<R: Read>(input: &mut R, buf: &mut [u8]) -> Result<usize> {
    let mut filled = 0;
    while filled < buf.len() {
        match input.read(&mut buf[filled..]) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(err) if err.kind() == io::ErrorKind::Interrupted => {}
            Err(err) => return Err(Error::from_io(err)),
        }
    }
    Ok(filled)
}
