//! The keyless object verifier (what a server runs over every upload) on
//! arbitrary bytes fed in arbitrary pieces: never panics, and its verdict
//! does not depend on how the bytes were cut.
#![no_main]

use coffer_format::ObjectVerifier;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|input: &[u8]| {
    let Some((&cut, data)) = input.split_first() else {
        return;
    };
    let verdict = |pieces: usize| {
        let mut verifier = ObjectVerifier::new(data.len() as u64);
        for piece in data.chunks(pieces.max(1)) {
            if verifier.update(piece).is_err() {
                return false;
            }
        }
        verifier.finish().is_ok()
    };
    assert_eq!(verdict(data.len()), verdict(usize::from(cut)));
});
