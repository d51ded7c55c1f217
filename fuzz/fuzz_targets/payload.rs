//! A valid header followed by arbitrary payload bytes. Mutating a whole file
//! rarely gets past the header MAC; this reaches the chunk framing, the tree
//! entries, the final-chunk logic and the signature checks directly, for a
//! version 1 and a version 2 file. The parallel reader (two threads; pieces
//! of 1 KiB under the fuzzer) must give the one-thread reader's verdict and
//! release no more than it.
#![no_main]

use std::sync::LazyLock;

use coffer_format::{Header, Identity, ObjectVerifier};
use libfuzzer_sys::fuzz_target;

static BOB_V1: LazyLock<Identity> = LazyLock::new(|| {
    Identity::from_file_string(include_str!("../../testdata/v1/bob.identity"), None).unwrap()
});
static CAROL_V2: LazyLock<Identity> = LazyLock::new(|| {
    Identity::from_file_string(include_str!("../../testdata/v2/carol.identity"), None).unwrap()
});
const FILE_V1: &[u8] = include_bytes!("../../testdata/v1/multi.coffer");
const FILE_V2: &[u8] = include_bytes!("../../testdata/v2/many.coffer");

fuzz_target!(|input: &[u8]| {
    let Some((&which, payload)) = input.split_first() else {
        return;
    };
    let (file, identity) = if which & 1 == 0 {
        (FILE_V1, &*BOB_V1)
    } else {
        (FILE_V2, &*CAROL_V2)
    };
    let (header, header_len) = Header::parse(file).unwrap();
    let opened = || header.clone().open(identity, &[]).unwrap();
    let mut out = Vec::new();
    let result = opened().decryptor(payload).unwrap().copy_to(&mut out);
    // Only the genuine payload verifies.
    assert_eq!(result.is_ok(), payload == &file[header_len..]);
    let mut out_parallel = Vec::new();
    let parallel = opened()
        .decryptor(payload)
        .and_then(|d| d.with_threads(2))
        .unwrap()
        .copy_to(&mut out_parallel);
    match (&result, &parallel) {
        (Ok(one), Ok(two)) => {
            assert_eq!(one.plaintext_len, two.plaintext_len);
            assert_eq!(out, out_parallel);
        }
        (Err(one), Err(two)) => {
            assert_eq!(one.to_string(), two.to_string());
            assert!(out.starts_with(&out_parallel));
        }
        _ => panic!("the readers disagree: {result:?} vs {parallel:?}"),
    }
    // The keyless verifier agrees for version 2.
    if which & 1 == 1 {
        let whole = [&file[..header_len], payload].concat();
        let mut verifier = ObjectVerifier::new(whole.len() as u64);
        let keyless = verifier.update(&whole).and_then(|()| verifier.finish().map(drop));
        if result.is_ok() {
            assert!(keyless.is_ok());
        }
    }
});
