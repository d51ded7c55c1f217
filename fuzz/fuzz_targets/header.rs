//! The header parser on arbitrary bytes: never panics, never over-reads, and
//! agrees with the incremental length function.
#![no_main]

use coffer_format::Header;
use coffer_format::header::header_bytes_needed;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let parsed = Header::parse(data);
    if let Ok((header, used)) = &parsed {
        assert_eq!(*used, header.encoded_len());
        assert_eq!(header_bytes_needed(&data[..*used]).ok(), Some(0));
        assert_eq!(Header::parse(&data[..*used]).unwrap().1, *used);
    }
    let mut reader = data;
    let streamed = Header::read_from(&mut reader);
    assert_eq!(streamed.is_ok(), parsed.is_ok());
});
