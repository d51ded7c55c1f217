//! A file's content identity as HTTP sees it: the ETag, and the RFC 9530
//! `Content-Digest` / `Repr-Digest` dictionaries. One value names a file
//! everywhere (docs/API.md "Content identity"): the signed root of a coffer
//! v2 object, the BLAKE3 of a plain upload, or the SHA-256 of a file from
//! before format v2.

use base64::Engine as _;

use crate::store::DigestAlg;

/// `"<algorithm>-<hex>"`.
pub fn etag(alg: DigestAlg, digest: &[u8]) -> String {
    format!("\"{}-{}\"", alg.name(), crate::hex(digest))
}

/// `<key>=:<base64>:`, with the registered key `sha-256` for SHA-256 and
/// the algorithm's own name otherwise.
pub fn dictionary(alg: DigestAlg, digest: &[u8]) -> String {
    let key = match alg {
        DigestAlg::Sha256 => "sha-256",
        other => other.name(),
    };
    format!(
        "{key}=:{}:",
        base64::engine::general_purpose::STANDARD.encode(digest)
    )
}

/// Whether an `If-None-Match` value names `etag` (a list, or `*`).
pub fn none_match(value: &str, etag: &str) -> bool {
    value
        .split(',')
        .map(str::trim)
        .any(|tag| tag == etag || tag == "*")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forms() {
        let d = [0xabu8; 32];
        assert_eq!(
            etag(DigestAlg::Coffer2Root, &d),
            format!("\"coffer2-root-{}\"", "ab".repeat(32))
        );
        assert!(dictionary(DigestAlg::Sha256, &d).starts_with("sha-256=:"));
        assert!(dictionary(DigestAlg::Blake3, &d).starts_with("blake3=:"));
        let tag = etag(DigestAlg::Blake3, &d);
        assert!(none_match(&format!("\"x\", {tag}"), &tag));
        assert!(none_match("*", &tag));
        assert!(!none_match("\"other\"", &tag));
    }
}
