//! Text encodings of keys: strict Bech32 (docs/FORMAT.md §9.1) and the
//! Crockford base32 of fingerprints.
//!
//! The `bech32` crate does the BIP-173 arithmetic; this module only fixes the
//! rules it leaves open, and refuses everything else:
//!
//! * the checksum is BIP-173 Bech32 (constant 1). **Bech32m is refused**:
//!   `bech32::decode` accepts either, which would give one key two valid
//!   strings;
//! * the length limit is lifted from 90 to [`MAX_STRING_LEN`] characters, so
//!   a hybrid post-quantum identity stays one string (BIP-173's error
//!   detection guarantees shrink beyond 89 characters; the fingerprint, not
//!   the checksum, is what authenticates a key);
//! * one case throughout (mixed case is refused), the human-readable part
//!   compared case-insensitively;
//! * the 8→5-bit packing pads with at most 4 zero bits: **non-zero padding
//!   bits are refused**, so every byte string has exactly one encoding.

use bech32::primitives::checksum::Checksum;
use bech32::primitives::decode::CheckedHrpstring;
use bech32::{Fe32, Fe1024, Hrp};

/// Longest Bech32 string accepted (a hybrid public identity is 2 061).
pub const MAX_STRING_LEN: usize = 4096;

/// BIP-173 Bech32 with the code length lifted (same generator and constant).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(crate) enum LongBech32 {}

impl Checksum for LongBech32 {
    type MidstateRepr = u32;
    type CorrectionField = Fe1024;
    const ROOT_GENERATOR: Self::CorrectionField = Fe1024::new([Fe32::P, Fe32::X]);
    const ROOT_EXPONENTS: core::ops::RangeInclusive<usize> = 24..=26;
    const CODE_LENGTH: usize = MAX_STRING_LEN;
    const CHECKSUM_LENGTH: usize = 6;
    // BIP-173's generator and its shifts, as in `bech32::Bech32`.
    const GENERATOR_SH: [u32; 5] = [
        0x3b6a_57b2,
        0x2650_8e6d,
        0x1ea1_19fa,
        0x3d42_33dd,
        0x2a14_62b3,
    ];
    const TARGET_RESIDUE: u32 = 1;
}

/// Encodes `data` under `hrp`, lower case.
pub(crate) fn encode_lower(hrp: &str, data: &[u8]) -> Result<String, &'static str> {
    let hrp = Hrp::parse(hrp).map_err(|_| "bad human-readable part")?;
    bech32::encode_lower::<LongBech32>(hrp, data).map_err(|_| "too long for Bech32")
}

/// Encodes `data` under `hrp`, upper case.
pub(crate) fn encode_upper(hrp: &str, data: &[u8]) -> Result<String, &'static str> {
    let hrp = Hrp::parse(hrp).map_err(|_| "bad human-readable part")?;
    bech32::encode_upper::<LongBech32>(hrp, data).map_err(|_| "too long for Bech32")
}

/// Decodes a Bech32 string with human-readable part `hrp`, strictly (see
/// the module docs). Errors say which rule failed.
pub(crate) fn decode(text: &str, hrp: &str) -> Result<Vec<u8>, &'static str> {
    if text.len() > MAX_STRING_LEN {
        return Err("longer than any coffer key");
    }
    let checked = CheckedHrpstring::new::<LongBech32>(text).map_err(|err| {
        use bech32::primitives::decode::CheckedHrpstringError as E;
        match err {
            E::Checksum(_) => "checksum does not verify (a typo, or Bech32m)",
            _ => "not a Bech32 string (bad characters or mixed case)",
        }
    })?;
    if !checked.hrp().as_str().eq_ignore_ascii_case(hrp) {
        return Err("wrong prefix");
    }
    let symbols: Vec<u8> = checked.fe32_iter().map(Fe32::to_u8).collect();
    unpack_strict(&symbols)
}

/// 5-bit groups to bytes, refusing more than 4 padding bits or any padding
/// bit that is set (BIP-173's `convertbits(..., 5, 8, False)`).
fn unpack_strict(symbols: &[u8]) -> Result<Vec<u8>, &'static str> {
    let mut out = Vec::with_capacity(symbols.len() * 5 / 8);
    let (mut acc, mut bits) = (0u32, 0u32);
    for &symbol in symbols {
        acc = ((acc << 5) | u32::from(symbol)) & 0xfff;
        bits += 5;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
        }
    }
    if bits >= 5 {
        return Err("more than 4 padding bits");
    }
    if acc & ((1 << bits) - 1) != 0 {
        return Err("non-zero padding bits");
    }
    Ok(out)
}

/// Crockford base32 (`0123456789ABCDEFGHJKMNPQRSTVWXYZ`), most significant
/// bit first, the last group zero-padded on the right.
pub(crate) fn crockford_base32(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 32] = b"0123456789ABCDEFGHJKMNPQRSTVWXYZ";
    let mut out = String::new();
    let (mut acc, mut bits) = (0u32, 0u32);
    for &byte in bytes {
        acc = (acc << 8) | u32::from(byte);
        bits += 8;
        while bits >= 5 {
            bits -= 5;
            out.push(char::from(ALPHABET[((acc >> bits) & 31) as usize]));
        }
    }
    if bits > 0 {
        out.push(char::from(ALPHABET[((acc << (5 - bits)) & 31) as usize]));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn checksum_constants_are_consistent() {
        LongBech32::sanity_check();
    }

    #[test]
    fn round_trip_and_case_rules() {
        let data: Vec<u8> = (0..=255u8).cycle().take(1280).collect();
        let text = encode_lower("coffer", &data).unwrap();
        assert_eq!(text.len(), 2061);
        assert_eq!(decode(&text, "coffer").unwrap(), data);
        assert_eq!(decode(&text.to_uppercase(), "coffer").unwrap(), data);
        let mut mixed = text.clone();
        mixed.replace_range(0..1, "C");
        assert!(decode(&mixed, "coffer").is_err());
        assert!(decode(&text, "other").is_err());
    }

    #[test]
    fn bech32m_and_non_zero_padding_are_refused() {
        let data = [7u8; 64];
        let hrp = Hrp::parse("coffer").unwrap();
        let m = bech32::encode_lower::<bech32::Bech32m>(hrp, &data).unwrap();
        assert!(
            bech32::decode(&m).is_ok(),
            "the crate's decode takes Bech32m"
        );
        assert!(decode(&m, "coffer").is_err());
        // 64 bytes = 512 bits = 103 symbols with 3 padding bits. Set one.
        let good = encode_lower("coffer", &data).unwrap();
        let checked = CheckedHrpstring::new::<LongBech32>(&good).unwrap();
        let mut symbols: Vec<Fe32> = checked.fe32_iter().collect();
        let last = symbols.len() - 1;
        symbols[last] = Fe32::try_from(symbols[last].to_u8() | 1).unwrap();
        use bech32::primitives::iter::Fe32IterExt;
        let with_checksum: String = symbols
            .into_iter()
            .with_checksum::<LongBech32>(&hrp)
            .chars()
            .collect();
        assert!(CheckedHrpstring::new::<LongBech32>(&with_checksum).is_ok());
        assert_eq!(
            decode(&with_checksum, "coffer"),
            Err("non-zero padding bits")
        );
        // One symbol more than the bytes need: 5 or more padding bits.
        let checked = CheckedHrpstring::new::<LongBech32>(&good).unwrap();
        let mut longer: Vec<Fe32> = checked.fe32_iter().collect();
        longer.extend([Fe32::Q; 2]);
        let text: String = longer
            .into_iter()
            .with_checksum::<LongBech32>(&hrp)
            .chars()
            .collect();
        assert_eq!(decode(&text, "coffer"), Err("more than 4 padding bits"));
    }

    #[test]
    fn fingerprint_alphabet() {
        assert_eq!(crockford_base32(&[0; 5]), "00000000");
        assert_eq!(crockford_base32(&[0xff; 5]), "ZZZZZZZZ");
    }
}
