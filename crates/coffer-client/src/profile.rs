//! Profiles: what `coffer login` pins and keeps, one file per profile
//! (mode 0600) under the coffer home directory, plus resume records,
//! receipts and inbox state beside it.
//!
//! Home: `$COFFER_HOME`, else `$XDG_CONFIG_HOME/coffer`, else
//! `~/.config/coffer`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use coffer_format::{Identity, PublicIdentity};
use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

use crate::fsutil::{private_dir, write_private};
use crate::session::{Endpoint, Session, Token};
use crate::tls::{ClientCert, Trust};
use crate::{Error, Result};

/// One server and user, with everything pinned for them.
#[derive(Clone, Serialize, Deserialize)]
pub struct Profile {
    /// `https://host:port`.
    pub url: String,
    /// User name on that server.
    pub user: String,
    /// The identity file used to log in and decrypt.
    pub identity: PathBuf,
    /// Pinned certificate fingerprint (absent when a CA file is used).
    pub cert_fingerprint: Option<String>,
    /// CA certificates that verify the server instead of a pin.
    pub ca_file: Option<PathBuf>,
    /// Client certificate for mTLS.
    pub client_cert: Option<PathBuf>,
    /// Its key.
    pub client_key: Option<PathBuf>,
    /// Pinned server identity (`coffer1…`).
    pub server_identity: String,
    /// The current token.
    #[serde(default)]
    pub token: Option<String>,
    /// Its expiry (Unix time).
    #[serde(default)]
    pub token_expires_at: Option<i64>,
    /// Public identities of other users as first seen (trust on first use).
    #[serde(default)]
    pub known_users: BTreeMap<String, String>,
    /// The server's `public_url` as the last login saw it: the base of the
    /// link URLs made with this profile.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub public_url: Option<String>,
}

impl std::fmt::Debug for Profile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Profile")
            .field("url", &self.url)
            .field("user", &self.user)
            .finish_non_exhaustive()
    }
}

impl Profile {
    /// The endpoint with its trust settings.
    pub fn endpoint(&self) -> Result<Endpoint> {
        let trust = match (&self.cert_fingerprint, &self.ca_file) {
            (Some(fp), _) => Trust::Pinned(fp.clone()),
            (None, Some(ca)) => Trust::Ca(ca.clone()),
            // Logged in to a server whose certificate the system's CAs sign.
            (None, None) => Trust::System,
        };
        let client_cert = match (&self.client_cert, &self.client_key) {
            (Some(cert), Some(key)) => Some(ClientCert {
                cert: cert.clone(),
                key: key.clone(),
            }),
            _ => None,
        };
        Endpoint::parse(&self.url, trust, client_cert)
    }

    /// A session with the pins and the saved token.
    pub fn session(&self, identity: Option<Arc<Identity>>) -> Result<Session> {
        let server = PublicIdentity::parse(&self.server_identity)?;
        let token = match (&self.token, self.token_expires_at) {
            (Some(value), Some(expires_at)) => Some(Token {
                value: Zeroizing::new(value.clone()),
                expires_at,
            }),
            _ => None,
        };
        let session = Session::new(self.endpoint()?, &self.user, Some(server))?
            .with_token(token)
            .with_public_url(self.public_url.clone());
        Ok(match identity {
            Some(identity) => session.with_identity(identity),
            None => session,
        })
    }

    /// Keeps the session's current token for the next run.
    pub fn remember_token(&mut self, session: &Session) {
        if let Some(url) = session.advertised_public_url() {
            self.public_url = Some(url.to_string());
        }
        match session.token() {
            Some(token) => {
                self.token = Some(token.value.as_str().to_string());
                self.token_expires_at = Some(token.expires_at);
            }
            None => {
                self.token = None;
                self.token_expires_at = None;
            }
        }
    }

    /// Trust on first use for other users' keys: records a key never seen,
    /// accepts the one seen before, and refuses a different one unless
    /// `accept_new`. Returns whether the key was new to this profile.
    pub fn check_user_key(
        &mut self,
        user: &str,
        key: &PublicIdentity,
        accept_new: bool,
    ) -> Result<bool> {
        let presented = key.to_string();
        match self.known_users.get(user) {
            Some(known) if *known == presented => Ok(false),
            Some(known) if !accept_new => {
                let known_fp = PublicIdentity::parse(known)
                    .map(|k| k.fingerprint())
                    .unwrap_or_else(|_| known.clone());
                Err(Error::UserKeyChanged {
                    user: user.to_string(),
                    known: known_fp,
                    presented: key.fingerprint(),
                })
            }
            _ => {
                self.known_users.insert(user.to_string(), presented);
                Ok(true)
            }
        }
    }
}

/// The keys a profile pinned are what downloads check signers against.
impl crate::download::Pins for Profile {
    fn pinned(&self, user: &str) -> Option<PublicIdentity> {
        self.known_users
            .get(user)
            .and_then(|key| PublicIdentity::parse(key).ok())
    }

    fn pin(&mut self, user: &str, key: &PublicIdentity) {
        self.known_users.insert(user.to_string(), key.to_string());
    }
}

/// The coffer home directory and the files in it.
#[derive(Clone, Debug)]
pub struct Home(PathBuf);

impl Home {
    /// The directory from the environment (see the module docs).
    pub fn from_env() -> Result<Self> {
        if let Some(dir) = std::env::var_os("COFFER_HOME") {
            return Ok(Self(PathBuf::from(dir)));
        }
        if let Some(dir) = std::env::var_os("XDG_CONFIG_HOME") {
            return Ok(Self(PathBuf::from(dir).join("coffer")));
        }
        match std::env::var_os("HOME") {
            Some(home) => Ok(Self(PathBuf::from(home).join(".config/coffer"))),
            None => Err(Error::Usage("set COFFER_HOME or HOME".into())),
        }
    }

    /// A home at `dir`.
    pub fn at(dir: &Path) -> Self {
        Self(dir.to_path_buf())
    }

    fn checked(name: &str) -> Result<&str> {
        if !name.is_empty()
            && name.len() <= 64
            && name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
            && !name.starts_with('.')
        {
            Ok(name)
        } else {
            Err(Error::Usage(format!("bad profile name {name:?}")))
        }
    }

    fn profile_path(&self, name: &str) -> Result<PathBuf> {
        Ok(self
            .0
            .join("profiles")
            .join(format!("{}.json", Self::checked(name)?)))
    }

    /// Loads a profile.
    pub fn load(&self, name: &str) -> Result<Profile> {
        let path = self.profile_path(name)?;
        let bytes = std::fs::read(&path)
            .map_err(|_| Error::Usage(format!("no profile {name:?}: run `coffer login` first")))?;
        serde_json::from_slice(&bytes).map_err(|e| Error::Usage(format!("{}: {e}", path.display())))
    }

    /// Whether a profile exists.
    pub fn exists(&self, name: &str) -> bool {
        self.profile_path(name).is_ok_and(|p| p.exists())
    }

    /// Saves a profile (0600, atomically).
    pub fn save(&self, name: &str, profile: &Profile) -> Result<()> {
        private_dir(&self.0)?;
        let json = serde_json::to_vec_pretty(profile).map_err(|e| Error::Usage(e.to_string()))?;
        write_private(&self.profile_path(name)?, &json)
    }

    /// Names of all profiles.
    pub fn profiles(&self) -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(self.0.join("profiles"))
            .into_iter()
            .flatten()
            .flatten()
            .filter_map(|e| {
                e.file_name()
                    .to_str()?
                    .strip_suffix(".json")
                    .map(str::to_string)
            })
            .collect();
        names.sort();
        names
    }

    /// Upload resume records of a profile.
    pub fn uploads_dir(&self, name: &str) -> Result<PathBuf> {
        Ok(self
            .0
            .join("state")
            .join(Self::checked(name)?)
            .join("uploads"))
    }

    /// Receipts kept for a profile, one file per upload.
    pub fn receipts_dir(&self, name: &str) -> Result<PathBuf> {
        Ok(self
            .0
            .join("state")
            .join(Self::checked(name)?)
            .join("receipts"))
    }
}
