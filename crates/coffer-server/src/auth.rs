//! Challenge-response login over a user's Ed25519 key, and session tokens.
//!
//! 1. `POST /v1/auth/challenge {user}` returns a random 32-byte nonce that
//!    expires after `challenge_ttl_secs` (60 s) and is stored server-side.
//!    Unknown users get a nonce too, so the endpoint does not reveal names.
//! 2. The client signs [`login_message`]: a domain label, the user name, the
//!    nonce, the server's public identity and the TLS exporter value of its
//!    connection. The signature is thus useless to replay (nonce), to relay
//!    to another server (identity) or through a man in the middle who
//!    terminates TLS (exporter differs per session).
//! 3. `POST /v1/auth/login {user, nonce, signature}` consumes the nonce
//!    first (deleted whether or not the rest succeeds), then verifies with
//!    `verify_strict`. Every failure gives the same answer.
//! 4. The token is 256 random bits; only its SHA-256 is stored.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;

pub use coffer_proto::login::{LOGIN_LABEL, login_message, valid_user_name};

/// SHA-256 of a bearer token, the form in which tokens are stored.
pub fn token_hash(token: &str) -> [u8; 32] {
    let mut out = [0u8; 32];
    out.copy_from_slice(
        aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, token.as_bytes()).as_ref(),
    );
    out
}

/// A fresh random token (URL-safe base64 of 32 bytes).
pub fn new_token() -> anyhow::Result<zeroize::Zeroizing<String>> {
    let mut bytes = zeroize::Zeroizing::new([0u8; 32]);
    aws_lc_rs::rand::fill(bytes.as_mut())
        .map_err(|_| anyhow::anyhow!("random number generator failed"))?;
    Ok(zeroize::Zeroizing::new(B64.encode(bytes.as_ref())))
}

pub use coffer_proto::b64;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn user_names() {
        assert!(valid_user_name("alice"));
        assert!(valid_user_name("ops.night-batch_2"));
        assert!(!valid_user_name(""));
        assert!(!valid_user_name("-x"));
        assert!(!valid_user_name("Alice"));
        assert!(!valid_user_name("a/b"));
        assert!(!valid_user_name(&"a".repeat(65)));
    }

    #[test]
    fn tokens_are_random_and_hash_differently() {
        let a = new_token().unwrap();
        let b = new_token().unwrap();
        assert_ne!(*a, *b);
        assert_ne!(token_hash(&a), token_hash(&b));
        assert_eq!(a.len(), 43);
    }
}
