//! Upload links (file requests): how the URL a requester hands out pins the
//! key the uploads are encrypted to, and proves to the server that an
//! uploader holds the URL.
//!
//! ```text
//! URL      https://HOST/v1/requests/<id>#k=<secret>&r=<pin>[&fp=<cert>][&n=<note>]
//! secret   32 random bytes, only ever in the fragment
//! access   b64url(HKDF-SHA256(salt = empty, ikm = secret,
//!              info = "coffer/v1/request-access", 32 bytes))
//! pin      b64url(SHA-256("coffer/v1/request-pin" || requester's public identity bytes))
//! password b64url(HKDF-SHA256(salt = secret, ikm = UTF-8 password,
//!              info = "coffer/v1/request-password", 32 bytes))
//! ```
//!
//! Why a pin: the page that encrypts the uploads gets the requester's public
//! key from the server. A server that answered with its own key could read
//! every upload; the page therefore refuses a key whose pin differs from the
//! one in the fragment, which the server never sees. The pin is a full
//! SHA-256 (not the 80-bit fingerprint people compare by voice), so finding
//! another key with the same pin is a second preimage of SHA-256.
//!
//! The access proof, like a share link's, keeps the id alone (which appears
//! in paths and logs) from letting anyone upload: the server stores its
//! SHA-256 and answers "no such link" without it. Its label differs from a
//! share link's, so the two kinds of URL secret never yield the same proof.
//! The note (`n`, UTF-8, URL-encoded) also stays in the fragment: the
//! server never learns what the requester asked for.
//!
//! A link with a password (`coffer request --password`) gates who may see
//! it and begin an upload: the sender's page sends the password value above
//! (header `Coffer-Request-Password`), of which the server keeps an Argon2id
//! verifier and counts wrong attempts. It is bound to the URL secret, so the
//! server never learns the password itself (people reuse them), nor could it
//! test guesses offline without the secret.

use aws_lc_rs::{digest, hkdf};
use base64::Engine as _;
use zeroize::Zeroizing;

/// Bytes of the URL secret.
pub const SECRET_LEN: usize = 32;

/// The proof of holding the URL that the server checks (b64url).
pub fn access_proof(secret: &[u8; SECRET_LEN]) -> Zeroizing<String> {
    let mut out = Zeroizing::new([0u8; 32]);
    let filled = hkdf::Salt::new(hkdf::HKDF_SHA256, &[])
        .extract(secret)
        .expand(&[b"coffer/v1/request-access"], Len32)
        .and_then(|okm| okm.fill(out.as_mut()));
    // Expanding 32 bytes from SHA-256 cannot fail (the limit is 255 * 32).
    debug_assert!(filled.is_ok());
    Zeroizing::new(crate::b64().encode(out.as_ref()))
}

/// What the sender's page sends for the link's password (b64url).
pub fn password_proof(secret: &[u8; SECRET_LEN], password: &str) -> Zeroizing<String> {
    let mut out = Zeroizing::new([0u8; 32]);
    let filled = hkdf::Salt::new(hkdf::HKDF_SHA256, secret)
        .extract(password.as_bytes())
        .expand(&[b"coffer/v1/request-password"], Len32)
        .and_then(|okm| okm.fill(out.as_mut()));
    // Expanding 32 bytes from SHA-256 cannot fail (the limit is 255 * 32).
    debug_assert!(filled.is_ok());
    Zeroizing::new(crate::b64().encode(out.as_ref()))
}

/// HKDF output length: 32 bytes.
struct Len32;

impl hkdf::KeyType for Len32 {
    fn len(&self) -> usize {
        32
    }
}

/// The pin of a public identity (its bytes, FORMAT.md §9.1), b64url.
pub fn pin(public_identity: &[u8]) -> String {
    let mut context = digest::Context::new(&digest::SHA256);
    context.update(b"coffer/v1/request-pin");
    context.update(public_identity);
    crate::b64().encode(context.finish().as_ref())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Known answers, so the page's JavaScript can check its derivation
    /// (web/test/request-keys.test.mjs holds the same values).
    #[test]
    fn known_answers() {
        assert_eq!(
            access_proof(&[1u8; SECRET_LEN]).as_str(),
            "Qy4FXBsb1iuQ0TEAIB70eXnrd9SvmGOZHBS1LoLa84w"
        );
        assert_eq!(
            pin(&[7u8; 64]),
            "j5DvvDqAPwBtx8Lor9gxhm_uBcaURFBD1TDBnv1l7kU"
        );
    }

    #[test]
    fn password_proofs_depend_on_secret_and_password() {
        let secret = [1u8; SECRET_LEN];
        let proof = password_proof(&secret, "correct horse");
        assert_ne!(*proof, *password_proof(&[2u8; SECRET_LEN], "correct horse"));
        assert_ne!(*proof, *password_proof(&secret, "correct horsf"));
        assert_ne!(*proof, *access_proof(&secret));
        // Checked with Python's hmac (RFC 5869 by hand) when it was written.
        assert_eq!(
            proof.as_str(),
            "N0MGpDCB2rfPzqRSkCT6gA6s21vQSm0mta4OGM9ED9w"
        );
    }

    #[test]
    fn request_and_link_proofs_differ() {
        let secret = [1u8; SECRET_LEN];
        assert_ne!(
            *access_proof(&secret),
            *crate::link::access_proof(&secret).unwrap()
        );
    }
}
