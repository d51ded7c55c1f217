//! A valid header followed by arbitrary payload bytes. Mutating a whole file
//! rarely gets past the header MAC; this reaches the chunk framing, the
//! final-chunk logic and the trailer checks directly.
#![no_main]

use std::sync::LazyLock;

use coffer_format::{Header, Identity};
use libfuzzer_sys::fuzz_target;

static BOB: LazyLock<Identity> = LazyLock::new(|| {
    Identity::from_file_string(include_str!("../../testdata/v1/bob.identity"), None).unwrap()
});
const FILE: &[u8] = include_bytes!("../../testdata/v1/multi.coffer");

fuzz_target!(|payload: &[u8]| {
    let (header, header_len) = Header::parse(FILE).unwrap();
    let opened = header.open(&BOB, &[]).unwrap();
    let mut out = Vec::new();
    let result = opened.decryptor(payload).unwrap().copy_to(&mut out);
    // Only the genuine payload verifies.
    assert_eq!(result.is_ok(), payload == &FILE[header_len..]);
});
