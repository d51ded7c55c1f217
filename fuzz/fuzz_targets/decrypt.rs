//! Whole-file decryption of arbitrary bytes with a fixed identity: never
//! panics, and anything accepted really is a valid signed file.
#![no_main]

use std::sync::LazyLock;

use coffer_format::{Identity, decrypt};
use libfuzzer_sys::fuzz_target;

static BOB: LazyLock<Identity> = LazyLock::new(|| {
    Identity::from_file_string(include_str!("../../testdata/v1/bob.identity"), None).unwrap()
});

fuzz_target!(|data: &[u8]| {
    let mut out = Vec::new();
    if let Ok(verified) = decrypt(&BOB, data, &mut out) {
        assert_eq!(verified.plaintext_len, out.len() as u64);
    }
});
