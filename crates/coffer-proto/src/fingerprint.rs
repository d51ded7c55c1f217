//! Certificate fingerprints, the value clients pin (like ssh known_hosts).

use base64::Engine as _;

/// `SHA256:<base64>` (standard alphabet, no padding) of a certificate's DER.
pub fn certificate(der: &[u8]) -> String {
    let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, der);
    format!(
        "SHA256:{}",
        base64::engine::general_purpose::STANDARD_NO_PAD.encode(digest.as_ref())
    )
}

/// Whether two fingerprints are the same, compared in constant time (a
/// fingerprint is not secret, but comparing it so costs nothing).
pub fn same(a: &str, b: &str) -> bool {
    a.len() == b.len()
        && aws_lc_rs::constant_time::verify_slices_are_equal(a.as_bytes(), b.as_bytes()).is_ok()
}
