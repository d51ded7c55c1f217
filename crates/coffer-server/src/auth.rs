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
use coffer_format::PublicIdentity;

/// Domain separation for login signatures.
pub const LOGIN_LABEL: &[u8] = b"coffer/v1/login\0";

/// The exact bytes a client signs to log in.
pub fn login_message(
    user: &str,
    nonce: &[u8; 32],
    server: &PublicIdentity,
    exporter: &[u8; 32],
) -> Vec<u8> {
    let user = user.as_bytes();
    let mut out = Vec::with_capacity(LOGIN_LABEL.len() + 2 + user.len() + 32 + 64 + 32);
    out.extend_from_slice(LOGIN_LABEL);
    // Names are limited to 64 bytes by the API, so the length fits a u16.
    out.extend_from_slice(&(user.len() as u16).to_be_bytes());
    out.extend_from_slice(user);
    out.extend_from_slice(nonce);
    out.extend_from_slice(&server.to_bytes());
    out.extend_from_slice(exporter);
    out
}

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

/// Base64 codec used for nonces and signatures in the API.
pub fn b64() -> &'static base64::engine::GeneralPurpose {
    &B64
}

/// User names: 1 to 64 of `[a-z0-9._-]`, starting with a letter or digit.
pub fn valid_user_name(name: &str) -> bool {
    (1..=64).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"._-".contains(&b))
        && name.as_bytes()[0].is_ascii_alphanumeric()
}

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
