//! Challenge-response login (docs/API.md, "Authentication").

use coffer_format::PublicIdentity;

/// Domain separation for login signatures.
pub const LOGIN_LABEL: &[u8] = b"coffer/v1/login\0";

/// Label for the TLS exporter value that login signatures bind to (RFC 8446
/// §7.5 / RFC 5705), so a signature made on one TLS session is useless on
/// another.
pub const LOGIN_EXPORTER_LABEL: &[u8] = b"EXPORTER-coffer-v1-login";

/// The exact bytes a client signs to log in: label, user name, the
/// server's single-use nonce, the server's public identity and the TLS
/// exporter value of the connection the login travels on.
pub fn login_message(
    user: &str,
    nonce: &[u8; 32],
    server: &PublicIdentity,
    exporter: &[u8; 32],
) -> Vec<u8> {
    let user = user.as_bytes();
    let mut out = Vec::with_capacity(LOGIN_LABEL.len() + 2 + user.len() + 32 + 64 + 32);
    out.extend_from_slice(LOGIN_LABEL);
    // Names are limited to 64 bytes (valid_user_name), so the length fits a u16.
    out.extend_from_slice(&(user.len().min(u16::MAX as usize) as u16).to_be_bytes());
    out.extend_from_slice(user);
    out.extend_from_slice(nonce);
    out.extend_from_slice(&server.to_bytes());
    out.extend_from_slice(exporter);
    out
}

/// User names: 1 to 64 of `[a-z0-9._-]`, starting with a letter or digit.
pub fn valid_user_name(name: &str) -> bool {
    (1..=64).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"._-".contains(&b))
        && name.as_bytes()[0].is_ascii_alphanumeric()
}
