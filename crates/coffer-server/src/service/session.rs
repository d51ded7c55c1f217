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
//! 4. The token is 256 random bits; only its SHA-256 is stored. It lives
//!    `token_ttl_secs` (15 min); a refresh swaps it (atomically: one of two
//!    refreshes of a token wins) for one of the same session, and no session
//!    outlives `session_max_secs` (24 h) from its login. Disabling a user
//!    deletes their tokens.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use coffer_format::PublicIdentity;

pub use coffer_proto::b64;
pub use coffer_proto::login::{LOGIN_LABEL, login_message, valid_user_name};

use super::{Error, Kind, Result, Service};
use crate::store::{NewToken, User};

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

/// A login challenge: the nonce (base64url) and how long it is valid.
pub struct Challenge {
    /// The single-use nonce, base64url.
    pub nonce: String,
    /// Seconds until it expires.
    pub expires_in: u64,
}

/// Step 1 of login: a single-use nonce, for unknown users too.
pub async fn challenge(service: &Service, user: &str) -> Result<Challenge> {
    if !valid_user_name(user) {
        return Err(Error::bad_request("invalid user name"));
    }
    let mut nonce = [0u8; 32];
    aws_lc_rs::rand::fill(&mut nonce).map_err(|_| Error::internal("rng"))?;
    let ttl = service.config.challenge_ttl_secs;
    let now = crate::unix_now();
    service
        .store
        .put_challenge(&nonce, user, now + ttl as i64, now)
        .await?;
    Ok(Challenge {
        nonce: b64().encode(nonce),
        expires_in: ttl,
    })
}

/// A signed login attempt, as it arrived.
pub struct LoginAttempt<'a> {
    /// The claimed user.
    pub user: &'a str,
    /// The nonce of the challenge, base64url.
    pub nonce: &'a str,
    /// The Ed25519 signature, base64url.
    pub signature: &'a str,
    /// The TLS exporter value of the connection it came over.
    pub exporter: &'a [u8; 32],
    /// The client's address.
    pub ip: Option<std::net::IpAddr>,
}

/// A token just issued.
pub struct Issued {
    /// The bearer token (shown once; only its hash is stored).
    pub token: zeroize::Zeroizing<String>,
    /// Seconds until it expires.
    pub expires_in: u64,
}

/// Step 2 of login: checks the signed challenge, audits the attempt, and
/// issues a token.
pub async fn login(service: &Service, attempt: &LoginAttempt<'_>) -> Result<Issued> {
    let result = verify_login(service, attempt).await;
    let outcome = if result.is_ok() { "ok" } else { "failed" };
    metrics::counter!("coffer_logins_total", "result" => outcome).increment(1);
    let actor = if valid_user_name(attempt.user) {
        attempt.user
    } else {
        "-"
    };
    let event = super::audit::Event::new(actor, attempt.ip, "login", "").outcome(outcome);
    super::audit::record(service, event).await?;
    issue_token(service, &result?).await
}

/// Checks a login; returns the user's name.
async fn verify_login(service: &Service, attempt: &LoginAttempt<'_>) -> Result<String> {
    let nonce: [u8; 32] = b64()
        .decode(attempt.nonce)
        .ok()
        .and_then(|n| n.try_into().ok())
        .ok_or_else(Error::unauthorized)?;
    // Consume first: a nonce is single-use whatever happens next.
    let Some((challenged_user, expires_at)) = service.store.take_challenge(&nonce).await? else {
        return Err(Error::unauthorized());
    };
    if challenged_user != attempt.user || expires_at < crate::unix_now() {
        return Err(Error::unauthorized());
    }
    let user = service
        .store
        .user(attempt.user)
        .await?
        .filter(|u| !u.disabled);
    // An unknown or disabled user costs the same work as a known one (parse
    // a hybrid identity, verify a signature), so timing does not tell names.
    let public_text = match &user {
        Some(user) => user.public_identity.as_str(),
        None => stand_in_identity(),
    };
    let public = PublicIdentity::parse(public_text).map_err(Error::internal)?;
    let signature: [u8; 64] = b64()
        .decode(attempt.signature)
        .ok()
        .and_then(|s| s.try_into().ok())
        .unwrap_or([0; 64]);
    let message = login_message(
        attempt.user,
        &nonce,
        service.identity.public(),
        attempt.exporter,
    );
    let verified = public.verify(&message, &signature).is_ok();
    match user {
        Some(user) if verified => Ok(user.name),
        _ => Err(Error::unauthorized()),
    }
}

/// The public identity checked against when the user does not exist: a
/// hybrid one made once per process, whose secret nobody keeps.
fn stand_in_identity() -> &'static str {
    static STAND_IN: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    STAND_IN.get_or_init(|| match coffer_format::Identity::generate() {
        Ok(identity) => identity.public().to_string(),
        // Without randomness no login succeeds anyway; parse then fails
        // and the attempt is refused as internal.
        Err(_) => String::new(),
    })
}

/// A fresh token for `user`, beginning a session.
pub async fn issue_token(service: &Service, user: &str) -> Result<Issued> {
    let now = crate::unix_now();
    put_token(service, user, now, now).await
}

/// Stores a new token of a session that began at `session_started`; it
/// expires after the token lifetime or at the session's end, whichever is
/// first.
async fn put_token(
    service: &Service,
    user: &str,
    session_started: i64,
    now: i64,
) -> Result<Issued> {
    let config = &service.config;
    let session_end = session_started.saturating_add(config.session_max_secs as i64);
    let expires_at = now
        .saturating_add(config.token_ttl_secs as i64)
        .min(session_end);
    if expires_at <= now {
        return Err(Error::new(
            Kind::Unauthorized,
            "session_expired",
            "the session reached its maximum lifetime; log in again",
        ));
    }
    let token = new_token().map_err(Error::internal)?;
    let hash = token_hash(&token);
    let new = NewToken {
        hash: &hash,
        user,
        session_started,
        expires_at,
    };
    service.store.put_token(&new, now).await?;
    Ok(Issued {
        token,
        expires_in: (expires_at - now) as u64,
    })
}

/// The user a bearer token belongs to, if it is valid.
pub async fn token_user(service: &Service, token: &str) -> Result<(User, [u8; 32])> {
    let hash = token_hash(token.trim());
    let user = service
        .store
        .token_user(&hash, crate::unix_now())
        .await?
        .ok_or_else(Error::unauthorized)?;
    Ok((user, hash))
}

/// A fresh token of the same session for a valid one, which is revoked in
/// the same step: two refreshes of one token cannot both succeed (a stolen
/// token refreshed by the thief and by its owner ends one of them).
pub async fn refresh(service: &Service, user: &str, old_hash: &[u8; 32]) -> Result<Issued> {
    let now = crate::unix_now();
    let Some((owner, session_started)) = service.store.take_token(old_hash, now).await? else {
        return Err(Error::unauthorized());
    };
    if owner != user {
        return Err(Error::unauthorized());
    }
    put_token(service, user, session_started, now).await
}

/// Revokes a token.
pub async fn logout(service: &Service, hash: &[u8; 32]) -> Result<()> {
    service.store.revoke_token(hash).await?;
    Ok(())
}

/// A user's registered public identity.
pub async fn user_identity(service: &Service, name: &str) -> Result<(User, PublicIdentity)> {
    let user = service
        .store
        .user(name)
        .await?
        .ok_or_else(|| Error::not_found("user"))?;
    let public = PublicIdentity::parse(&user.public_identity).map_err(Error::internal)?;
    Ok((user, public))
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
