//! Password verifiers for links and upload links: Argon2id, checked with
//! one attempt reserved in the database while Argon2 runs, so concurrent
//! wrong guesses cannot overshoot the limit after which a link locks.

use argon2::{Argon2, PasswordHasher as _, PasswordVerifier as _};
use secrecy::{ExposeSecret as _, SecretString};

use super::{Error, Kind, Result};

/// Longest password (or password-derived value) accepted.
pub const MAX_LEN: usize = 1024;

/// Argon2id at the OWASP minimum (19 MiB, 2 passes): a verifier only
/// guards access that the URL secret already gates, and every check costs
/// the server this much.
fn argon2() -> Result<Argon2<'static>> {
    let params = argon2::Params::new(19 * 1024, 2, 1, Some(32)).map_err(Error::internal)?;
    Ok(Argon2::new(
        argon2::Algorithm::Argon2id,
        argon2::Version::V0x13,
        params,
    ))
}

/// The PHC string of a new verifier for `password` (1..=[`MAX_LEN`] bytes).
pub async fn hash(password: SecretString) -> Result<String> {
    let len = password.expose_secret().len();
    if len == 0 || len > MAX_LEN {
        return Err(Error::bad_request("password must be 1..=1024 bytes"));
    }
    let mut salt = [0u8; 16];
    aws_lc_rs::rand::fill(&mut salt).map_err(|_| Error::internal("rng"))?;
    tokio::task::spawn_blocking(move || {
        argon2()?
            .hash_password_with_salt(password.expose_secret().as_bytes(), &salt)
            .map(|hash| hash.to_string())
            .map_err(Error::internal)
    })
    .await
    .map_err(Error::internal)?
}

async fn matches(password: SecretString, phc: String) -> Result<bool> {
    tokio::task::spawn_blocking(move || {
        Ok(argon2()?
            .verify_password(password.expose_secret().as_bytes(), phc.as_str())
            .is_ok())
    })
    .await
    .map_err(Error::internal)?
}

/// Checks `password` against `phc`. `reserved` says whether an attempt
/// could be counted (false: the link is locked, refused with `locked`);
/// `release` gives it back when the password is right.
pub async fn check(
    phc: &str,
    password: Option<SecretString>,
    reserved: impl Future<Output = Result<bool>>,
    release: impl Future<Output = Result<()>>,
    locked: Error,
) -> Result<()> {
    let password = password.ok_or_else(|| {
        Error::new(
            Kind::Unauthorized,
            "password_required",
            "this link needs a password",
        )
    })?;
    if !reserved.await? {
        return Err(locked);
    }
    let right =
        password.expose_secret().len() <= MAX_LEN && matches(password, phc.to_string()).await?;
    if !right {
        return Err(Error::new(
            Kind::Unauthorized,
            "wrong_password",
            "wrong password",
        ));
    }
    release.await
}
