//! Identity files and public identity strings from arbitrary text.
#![no_main]

use coffer_format::{Identity, PublicIdentity};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    if let Ok(public) = PublicIdentity::parse(text) {
        assert_eq!(PublicIdentity::parse(&public.to_string()).unwrap(), public);
    }
    // No passphrase: protected files are refused before any Argon2 work.
    let _ = Identity::from_file_string(text, None);
});
