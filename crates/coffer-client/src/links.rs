//! Anonymous share links (docs/API.md "Links"; derivation in
//! `coffer_proto::link`). The URL is
//! `https://HOST:PORT/v1/links/<id>#k=<secret>&s=<sender>[&fp=<certificate digest>]`:
//! everything after `#` stays on the client (HTTP never sends fragments),
//! so the server never sees the secret; `s` is the fingerprint of the
//! link creator's key (without dashes), which the downloaded file must be
//! signed with; `fp` lets someone without a profile pin a self-signed
//! server's certificate. A link without `fp` names a server whose
//! certificate the system's CAs sign, and is checked against those: which
//! of the two a link expects follows the trust of the profile that made it.

use coffer_format::Header;
use coffer_proto::link::{PasswordKey, SALT_LEN, SECRET_LEN, access_proof, link_identity};
use serde_json::json;
use zeroize::Zeroizing;

use crate::download::{
    GetOptions, GetOutcome, Opened, Source, Target, fetch, fetch_header, open_own_for_sharing,
};
use crate::progress::Progress;
use crate::session::{Endpoint, Session, decode_b64};
use crate::tls::Trust;
use crate::{Error, Result};

/// What the owner asks for.
#[derive(Default)]
pub struct LinkOptions {
    /// Lifetime in seconds (server default when absent).
    pub expires_in: Option<u64>,
    /// How many downloads.
    pub max_downloads: Option<u64>,
    /// Password the opener must know.
    pub password: Option<Zeroizing<String>>,
}

/// A parsed link URL.
#[derive(Clone)]
pub struct LinkUrl {
    /// `https://host:port`.
    pub base: String,
    /// Link id.
    pub link: String,
    secret: Zeroizing<[u8; SECRET_LEN]>,
    /// The fingerprint of the key the file must be signed with
    /// (`XXXX-XXXX-XXXX-XXXX`), if the link carries one.
    pub sender: Option<String>,
    /// Certificate pin carried in the fragment, as `SHA256:…`.
    pub fingerprint: Option<String>,
}

impl std::fmt::Debug for LinkUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "LinkUrl({}/v1/links/{})", self.base, self.link)
    }
}

fn b64(bytes: &[u8]) -> String {
    base64::Engine::encode(coffer_proto::b64(), bytes)
}

fn random<const N: usize>() -> Result<Zeroizing<[u8; N]>> {
    let mut out = Zeroizing::new([0u8; N]);
    aws_lc_rs::rand::fill(out.as_mut()).map_err(|_| Error::Usage("no randomness".into()))?;
    Ok(out)
}

impl LinkUrl {
    /// Parses a link URL.
    pub fn parse(url: &str) -> Result<Self> {
        let bad =
            || Error::Usage("not a coffer link URL (https://HOST:PORT/v1/links/ID#k=…)".into());
        let (address, fragment) = url.split_once('#').ok_or_else(bad)?;
        let (base, link) = address.split_once("/v1/links/").ok_or_else(bad)?;
        if link.is_empty() || !link.bytes().all(|b| b.is_ascii_alphanumeric()) {
            return Err(bad());
        }
        let mut secret = None;
        let mut fingerprint = None;
        let mut sender = None;
        for pair in fragment.split('&') {
            match pair.split_once('=') {
                Some(("s", value)) => {
                    if value.len() != 16 || !value.bytes().all(|b| b.is_ascii_alphanumeric()) {
                        return Err(bad());
                    }
                    let upper = value.to_ascii_uppercase();
                    sender = Some(format!(
                        "{}-{}-{}-{}",
                        &upper[..4],
                        &upper[4..8],
                        &upper[8..12],
                        &upper[12..]
                    ));
                }
                Some(("k", value)) => {
                    let bytes = Zeroizing::new(decode_b64(value).map_err(|_| bad())?);
                    let array: [u8; SECRET_LEN] = bytes.as_slice().try_into().map_err(|_| bad())?;
                    secret = Some(Zeroizing::new(array));
                }
                Some(("fp", value)) => {
                    let digest = decode_b64(value).map_err(|_| bad())?;
                    if digest.len() != 32 {
                        return Err(bad());
                    }
                    let std = base64::Engine::encode(
                        &base64::engine::general_purpose::STANDARD_NO_PAD,
                        &digest,
                    );
                    fingerprint = Some(format!("SHA256:{std}"));
                }
                _ => {}
            }
        }
        Ok(Self {
            base: base.to_string(),
            link: link.to_string(),
            secret: secret.ok_or_else(bad)?,
            sender,
            fingerprint,
        })
    }

    /// The proof of holding this URL that the server asks for.
    fn access(&self) -> Result<Zeroizing<String>> {
        access_proof(&self.secret).map_err(|e| Error::Usage(e.to_string()))
    }

    fn render(&self) -> String {
        let mut url = format!(
            "{}/v1/links/{}#k={}",
            self.base,
            self.link,
            b64(self.secret.as_ref())
        );
        if let Some(sender) = &self.sender {
            url.push_str("&s=");
            url.push_str(&sender.replace('-', ""));
        }
        if let Some(fp) = self
            .fingerprint
            .as_deref()
            .and_then(|f| f.strip_prefix("SHA256:"))
            && let Ok(digest) =
                base64::Engine::decode(&base64::engine::general_purpose::STANDARD_NO_PAD, fp)
        {
            url.push_str("&fp=");
            url.push_str(&b64(&digest));
        }
        url
    }
}

/// Stretches a password on a blocking thread (Argon2id, 64 MiB).
async fn password_key(password: Zeroizing<String>, salt: Vec<u8>) -> Result<PasswordKey> {
    tokio::task::spawn_blocking(move || PasswordKey::derive(password.as_bytes(), &salt))
        .await
        .map_err(|e| Error::Usage(e.to_string()))?
        .map_err(|e| Error::Usage(e.to_string()))
}

/// A link just made.
#[derive(Debug)]
pub struct CreatedLink {
    /// Its id.
    pub link: String,
    /// The URL to hand out (with the secret in its fragment).
    pub url: String,
    /// The decrypted name of the file it gives out.
    pub name: Option<String>,
}

/// Creates a link to file `id`: checks that it is the caller's own file
/// (as sharing does), wraps its key for a key derived from a fresh URL
/// secret (and the password), and returns the URL to hand out.
pub async fn create(session: &mut Session, id: &str, options: LinkOptions) -> Result<CreatedLink> {
    let own = open_own_for_sharing(session, id, "create a link").await?;
    let (core, file_key) = (own.opened.core(), own.opened.file_key());
    let secret = random::<SECRET_LEN>()?;
    let salt = random::<SALT_LEN>()?;
    let password = match options.password {
        Some(p) => Some(password_key(p, salt.to_vec()).await?),
        None => None,
    };
    let link_key = link_identity(&secret, salt.as_ref(), password.as_ref())
        .map_err(|e| Error::Usage(e.to_string()))?;
    let stanza = coffer_format::recipient::add_recipient(core, file_key, link_key.public())?;
    let access = access_proof(&secret).map_err(|e| Error::Usage(e.to_string()))?;
    let mut body = json!({
        "stanza": b64(&stanza.to_bytes()),
        "client_salt": b64(salt.as_ref()),
        "access": access.as_str(),
    });
    if let Some(secs) = options.expires_in {
        body["expires_in"] = json!(secs);
    }
    if let Some(max) = options.max_downloads {
        body["max_downloads"] = json!(max);
    }
    if let Some(password) = &password {
        let value = password
            .server_value(salt.as_ref())
            .map_err(|e| Error::Usage(e.to_string()))?;
        body["password"] = json!(value.as_str());
    }
    let link = session.create_link(id, &body).await?;
    let fingerprint = match &session.endpoint().trust {
        Trust::Pinned(fp) => Some(fp.clone()),
        _ => None,
    };
    let url = LinkUrl {
        base: session.public_url().to_string(),
        link: link.clone(),
        secret,
        sender: Some(own.claimed_sender.fingerprint()),
        fingerprint,
    };
    Ok(CreatedLink {
        link,
        url: url.render(),
        name: own.opened.metadata().name.clone(),
    })
}

/// Downloads a link: no account needed. `trust` overrides the pin in the
/// URL (for example a CA file); `password` is asked for by the caller when
/// [`needs_password`] says so.
pub async fn fetch_link(
    url: &LinkUrl,
    trust: Option<Trust>,
    password: Option<Zeroizing<String>>,
    target: &Target,
    options: &GetOptions,
    progress: &dyn Progress,
) -> Result<GetOutcome> {
    let mut session = anonymous(url, trust)?;
    let access = url.access()?;
    let info = session.link_info(&url.link, &access).await?;
    let salt = decode_b64(info.client_salt.as_deref().unwrap_or_default())?;
    let password = match (info.password_required, password) {
        (true, None) => return Err(Error::Usage("this link needs a password".into())),
        (true, Some(p)) => Some(password_key(p, salt.clone()).await?),
        (false, _) => None,
    };
    let link_key = link_identity(&url.secret, &salt, password.as_ref())
        .map_err(|e| Error::Usage(e.to_string()))?;
    let server_value = match &password {
        Some(p) => Some(
            p.server_value(&salt)
                .map_err(|e| Error::Usage(e.to_string()))?,
        ),
        None => None,
    };
    let ticket = session
        .open_link(
            &url.link,
            &access,
            server_value.as_ref().map(|v| v.as_str()),
        )
        .await?;
    let stanza = crate::api::stanza_from_b64(&ticket.stanza)?;
    let source = Source::Link {
        link: &url.link,
        ticket: &ticket.ticket,
    };
    let header = fetch_header(&mut session, source, ticket.size).await?;
    let (parsed, _) = Header::parse(&header)?;
    if let Some(expected) = &url.sender
        && parsed.claimed_sender().fingerprint() != *expected
    {
        return Err(Error::WrongSender {
            id: url.link.clone(),
            owner: "the link's creator".into(),
            expected: expected.clone(),
            got: parsed.claimed_sender().fingerprint(),
        });
    }
    let file_key = parsed.open(&link_key, &[stanza])?.file_key().clone();
    let opened = Opened { header, file_key };
    fetch(
        &mut session,
        source,
        &opened,
        ticket.size,
        target,
        options,
        progress,
    )
    .await
}

/// Whether opening the link will need a password.
pub async fn needs_password(url: &LinkUrl, trust: Option<Trust>) -> Result<bool> {
    Ok(anonymous(url, trust)?
        .link_info(&url.link, &url.access()?)
        .await?
        .password_required)
}

fn anonymous(url: &LinkUrl, trust: Option<Trust>) -> Result<Session> {
    let trust = match (trust, &url.fingerprint) {
        (Some(trust), _) => trust,
        (None, Some(fp)) => Trust::Pinned(fp.clone()),
        // No pin in the link: its server has a certificate the system's CAs
        // sign (see the module doc).
        (None, None) => Trust::System,
    };
    Session::new(Endpoint::parse(&url.base, trust, None)?, "", None)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn link_urls_round_trip_and_garbage_is_refused() {
        let url = LinkUrl {
            base: "https://127.0.0.1:8443".into(),
            link: "abc123".into(),
            secret: Zeroizing::new([9u8; SECRET_LEN]),
            sender: Some("81BB-4SKG-KG3B-11QP".into()),
            fingerprint: Some(coffer_proto::fingerprint::certificate(b"cert")),
        };
        let text = url.render();
        let back = LinkUrl::parse(&text).unwrap();
        assert_eq!(back.base, url.base);
        assert_eq!(back.link, url.link);
        assert_eq!(*back.secret, *url.secret);
        assert_eq!(back.fingerprint, url.fingerprint);
        assert_eq!(back.sender, url.sender);
        for bad in [
            "https://h:1/v1/links/abc",
            "https://h:1/v1/links/abc#fp=AAAA",
            "https://h:1/v1/links/a/../b#k=AAAA",
            "https://h:1/v1/links/abc#k=short",
            "https://h:1/other#k=AAAA",
        ] {
            assert!(LinkUrl::parse(bad).is_err(), "{bad}");
        }
    }
}
