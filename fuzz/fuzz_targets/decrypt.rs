//! Whole-file decryption of arbitrary bytes with fixed identities, as a
//! stream and with random access: never panics, anything accepted really
//! is a valid signed file, and both readers agree on what they accept.
#![no_main]

use std::io::Cursor;
use std::sync::LazyLock;

use coffer_format::{Identity, RangeReader, decrypt};
use libfuzzer_sys::fuzz_target;

static BOB_V1: LazyLock<Identity> = LazyLock::new(|| {
    Identity::from_file_string(include_str!("../../testdata/v1/bob.identity"), None).unwrap()
});
static CAROL_V2: LazyLock<Identity> = LazyLock::new(|| {
    Identity::from_file_string(include_str!("../../testdata/v2/carol.identity"), None).unwrap()
});

fuzz_target!(|data: &[u8]| {
    for identity in [&*BOB_V1, &*CAROL_V2] {
        let mut out = Vec::new();
        let streamed = decrypt(identity, data, &mut out);
        if let Ok(verified) = &streamed {
            assert_eq!(verified.plaintext_len, out.len() as u64);
        }
        // A file the stream accepts, random access accepts too, with the
        // same plaintext.
        if streamed.is_ok() {
            let mut reader = RangeReader::open(Cursor::new(data), identity, &[]).unwrap();
            let len = reader.plaintext_len();
            assert_eq!(reader.read_range(0, len).unwrap(), out);
        }
    }
});
