//! Share-link keys: how a link URL's secret (and optional password) become
//! the key a link's wrap is made for, and the value the server checks.
//!
//! ```text
//! secret       32 random bytes, only ever in the URL fragment (#…)
//! client_salt  16 random bytes, stored by the server, handed to openers
//! pw_key       Argon2id(password, client_salt, m = 64 MiB, t = 3, p = 1), 32 bytes
//! link key     Identity::from_key_material(HKDF-SHA256(salt = client_salt,
//!                  ikm = secret || pw_key, info = "coffer/v1/link-key", 64 bytes))
//! password     b64url(HKDF-SHA256(salt = client_salt, ikm = pw_key,
//!                  info = "coffer/v1/link-password", 32 bytes))
//! access       b64url(HKDF-SHA256(salt = empty, ikm = secret,
//!                  info = "coffer/v1/link-access", 32 bytes))
//! ```
//! (`pw_key` is empty for a link without a password.)
//!
//! Why: the server holds the wrap and sees the `password` value, but never
//! the fragment, so it cannot derive the key. With a password, the key also
//! needs `pw_key`: someone holding only the URL must still guess the
//! password, against the server (which counts failures and locks the link)
//! and, offline, through Argon2id. The server-side value is a one-way
//! function of `pw_key` alone, so it reveals nothing about the key beyond
//! what a password guess tests.
//!
//! The `access` proof shows the server that a request comes from someone
//! holding the URL, not only its id (which appears in paths, logs and
//! proxies): the server keeps its SHA-256 and answers "no such link"
//! without it, so only URL holders can read a link's details, guess its
//! password or lock it with wrong ones. It is one-way from the secret and
//! independent of the link key, so it does not help derive the key. It
//! cannot depend on `client_salt`, which is handed out only to holders of
//! the proof.

use aws_lc_rs::hkdf;
use coffer_format::Identity;
use zeroize::Zeroizing;

/// Bytes of the URL secret.
pub const SECRET_LEN: usize = 32;
/// Bytes of the per-link salt.
pub const SALT_LEN: usize = 16;
/// Argon2id memory for link passwords, in KiB.
pub const ARGON2_M_KIB: u32 = 64 * 1024;
/// Argon2id passes for link passwords.
pub const ARGON2_T: u32 = 3;

/// Why link keys could not be derived.
#[derive(Debug, thiserror::Error)]
pub enum LinkError {
    /// The salt is not [`SALT_LEN`] bytes.
    #[error("the link salt has the wrong length")]
    Salt,
    /// The key derivation failed (out of memory, bad parameters).
    #[error("link key derivation failed")]
    Derivation,
}

/// What a password contributes, stretched once by Argon2id.
pub struct PasswordKey(Zeroizing<[u8; 32]>);

impl PasswordKey {
    /// Stretches `password` under the link's salt (slow on purpose).
    pub fn derive(password: &[u8], client_salt: &[u8]) -> Result<Self, LinkError> {
        check_salt(client_salt)?;
        let params = argon2::Params::new(ARGON2_M_KIB, ARGON2_T, 1, Some(32))
            .map_err(|_| LinkError::Derivation)?;
        let argon =
            argon2::Argon2::new(argon2::Algorithm::Argon2id, argon2::Version::V0x13, params);
        let mut key = Zeroizing::new([0u8; 32]);
        argon
            .hash_password_into(password, client_salt, key.as_mut())
            .map_err(|_| LinkError::Derivation)?;
        Ok(Self(key))
    }

    /// The value sent to the server as the link `password` (b64url).
    pub fn server_value(&self, client_salt: &[u8]) -> Result<Zeroizing<String>, LinkError> {
        use base64::Engine as _;
        let mut out = Zeroizing::new([0u8; 32]);
        expand(
            client_salt,
            &[self.0.as_ref()],
            b"coffer/v1/link-password",
            out.as_mut(),
        )?;
        Ok(Zeroizing::new(crate::b64().encode(out.as_ref())))
    }
}

/// The identity a link's wrap is made for.
pub fn link_identity(
    secret: &[u8; SECRET_LEN],
    client_salt: &[u8],
    password: Option<&PasswordKey>,
) -> Result<Identity, LinkError> {
    check_salt(client_salt)?;
    let mut material = Zeroizing::new([0u8; 64]);
    let pw: &[u8] = password.map_or(&[], |key| key.0.as_ref());
    expand(
        client_salt,
        &[secret, pw],
        b"coffer/v1/link-key",
        material.as_mut(),
    )?;
    Identity::from_key_material(&material).map_err(|_| LinkError::Derivation)
}

/// The proof of holding the URL that the server checks (b64url).
pub fn access_proof(secret: &[u8; SECRET_LEN]) -> Result<Zeroizing<String>, LinkError> {
    use base64::Engine as _;
    let mut out = Zeroizing::new([0u8; 32]);
    expand(&[], &[secret], b"coffer/v1/link-access", out.as_mut())?;
    Ok(Zeroizing::new(crate::b64().encode(out.as_ref())))
}

fn check_salt(client_salt: &[u8]) -> Result<(), LinkError> {
    if client_salt.len() == SALT_LEN {
        Ok(())
    } else {
        Err(LinkError::Salt)
    }
}

struct Len(usize);

impl hkdf::KeyType for Len {
    fn len(&self) -> usize {
        self.0
    }
}

fn expand(salt: &[u8], ikm: &[&[u8]], info: &[u8], out: &mut [u8]) -> Result<(), LinkError> {
    let ikm: Zeroizing<Vec<u8>> = Zeroizing::new(ikm.concat());
    hkdf::Salt::new(hkdf::HKDF_SHA256, salt)
        .extract(&ikm)
        .expand(&[info], Len(out.len()))
        .and_then(|okm| okm.fill(out))
        .map_err(|_| LinkError::Derivation)
}

#[cfg(test)]
mod tests {
    use super::*;

    const SALT: [u8; SALT_LEN] = [7; SALT_LEN];

    #[test]
    fn the_key_depends_on_secret_salt_and_password() {
        let secret = [1u8; SECRET_LEN];
        let base = link_identity(&secret, &SALT, None).unwrap();
        let again = link_identity(&secret, &SALT, None).unwrap();
        assert_eq!(base.public(), again.public());
        let other_secret = link_identity(&[2u8; SECRET_LEN], &SALT, None).unwrap();
        assert_ne!(base.public(), other_secret.public());
        let other_salt = link_identity(&secret, &[8u8; SALT_LEN], None).unwrap();
        assert_ne!(base.public(), other_salt.public());
        let pw = PasswordKey::derive(b"hunter2", &SALT).unwrap();
        let with_pw = link_identity(&secret, &SALT, Some(&pw)).unwrap();
        assert_ne!(base.public(), with_pw.public());
        let wrong = PasswordKey::derive(b"hunter3", &SALT).unwrap();
        let with_wrong = link_identity(&secret, &SALT, Some(&wrong)).unwrap();
        assert_ne!(with_pw.public(), with_wrong.public());
        assert_ne!(
            *pw.server_value(&SALT).unwrap(),
            *wrong.server_value(&SALT).unwrap()
        );
    }

    /// Known answer (computed with Python's hmac, RFC 5869 by hand), so
    /// other implementations (the browser page) can check theirs.
    #[test]
    fn the_access_proof_is_hkdf_of_the_secret() {
        let proof = access_proof(&[1u8; SECRET_LEN]).unwrap();
        assert_eq!(
            proof.as_str(),
            "-cpfocg1V4lGD1VmnUHkEBvCWYeXbHoYzbNbYJjZY-M"
        );
        assert_ne!(*access_proof(&[2u8; SECRET_LEN]).unwrap(), *proof);
    }

    #[test]
    fn bad_salts_are_refused() {
        assert!(link_identity(&[1u8; SECRET_LEN], &[0u8; 3], None).is_err());
        assert!(PasswordKey::derive(b"x", &[]).is_err());
    }
}
