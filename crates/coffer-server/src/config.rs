//! Server configuration: `config.toml` in the data directory, each value
//! overridable by an environment variable (`COFFER_LISTEN`, …).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};

/// Settings read at start-up. Every field may be left out of the file and
/// takes its default then.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Address of the HTTPS listener.
    pub listen: SocketAddr,
    /// The URL people reach the server at (`https://files.example.com`),
    /// when it differs from what `listen` says (a wildcard address, a
    /// proxy, a port mapping): clients put it in the links they make.
    pub public_url: Option<String>,
    /// Address of the Prometheus metrics listener (HTTPS, same certificate);
    /// none by default.
    pub metrics_listen: Option<SocketAddr>,
    /// Certificate chain (PEM, leaf first), relative to the data directory
    /// or absolute (an ACME client's `fullchain.pem`). Read again, with
    /// `tls_key`, on SIGHUP: renewals need no restart.
    pub tls_cert: PathBuf,
    /// Private key (PEM), relative to the data directory.
    pub tls_key: PathBuf,
    /// CA certificates (PEM) for client certificates; when set, every
    /// connection must present a certificate signed by one of them (mTLS).
    pub client_ca: Option<PathBuf>,
    /// Certificate revocation lists (PEM) for `client_ca`, relative to the
    /// data directory or absolute (where the CA publishes them). A revoked
    /// client certificate is refused; so is every one whose issuer has no
    /// CRL here or whose CRL is past its `nextUpdate` (fail closed). Read
    /// again on SIGHUP.
    pub client_crl: Option<PathBuf>,
    /// Seconds a login challenge stays valid.
    pub challenge_ttl_secs: u64,
    /// Seconds a session token stays valid (a refresh issues a new one).
    pub token_ttl_secs: u64,
    /// Seconds a session lasts from its login however often its token is
    /// refreshed; then the client must log in again (prove its key).
    pub session_max_secs: u64,
    /// Seconds an unfinished upload is kept before it is removed.
    pub upload_ttl_secs: u64,
    /// Largest upload accepted, in bytes.
    pub max_upload_bytes: u64,
    /// Most key wraps (owner and shares) one file may hold.
    pub max_wraps_per_file: usize,
    /// Seconds a file is kept after its upload when the uploader does not
    /// say (`put --expires`); 0: until deleted.
    pub default_file_ttl_secs: u64,
    /// Longest a file may be kept (a longer `--expires` is refused, and
    /// with a maximum a file without one gets the maximum); 0: no maximum.
    pub max_file_ttl_secs: u64,
    /// Seconds between sweeps of expired files, uploads and links.
    pub sweep_interval_secs: u64,
    /// Lifetime of a link when its creator does not say.
    pub default_link_ttl_secs: u64,
    /// Longest lifetime a link may be given.
    pub max_link_ttl_secs: u64,
    /// Seconds a link's download ticket stays valid once the link is opened
    /// (long enough to resume a large download).
    pub link_ticket_ttl_secs: u64,
    /// Wrong passwords after which a link is locked for good.
    pub link_max_password_failures: u32,
    /// Lifetime of an upload link (`coffer request`) when its creator does
    /// not say.
    pub default_request_ttl_secs: u64,
    /// Longest lifetime an upload link may be given.
    pub max_request_ttl_secs: u64,
    /// File holding the base64 master key that seals the keyring, relative
    /// to the data directory; `COFFER_MASTER_KEY` takes precedence. Keep it
    /// off the disk that holds the database and objects where you can.
    pub master_key_file: PathBuf,
    /// Where the key-encryption keys live (`[keyring]`): sealed by the
    /// master key (the default) or inside a PKCS#11 token.
    pub keyring: KeyringConfig,
    /// Seconds an unwrapped file key stays cached in memory (0: never).
    pub dek_cache_secs: u64,
    /// Metadata database: a SQLite file relative to the data directory (the
    /// default, `meta.db`), or a `postgres://user@host/db` URL shared by
    /// several nodes (`COFFER_DATABASE` overrides it, so a password need not
    /// be written here).
    pub database: String,
    /// Where file bytes are kept.
    pub objects: Objects,
    /// Abuse limits.
    pub limits: Limits,
}

/// Which keyring provider makes new KEK versions.
#[derive(Clone, Copy, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum KeyringProvider {
    /// KEKs stored in the database, sealed by the master key.
    #[default]
    MasterKey,
    /// KEKs generated inside a PKCS#11 token (an HSM), never leaving it.
    Pkcs11,
}

/// Keyring settings (`[keyring]`). With `pkcs11`, versions made before
/// (sealed by the master key) still open while the master key is there;
/// `coffer server keys migrate` moves every key into the token, after
/// which the master key is no longer needed.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct KeyringConfig {
    /// `master-key` or `pkcs11`.
    pub provider: KeyringProvider,
    /// The PKCS#11 module (`/usr/lib/softhsm/libsofthsm2.so`, a vendor's
    /// library).
    pub module: PathBuf,
    /// Label of the token holding the KEKs.
    pub token: String,
    /// Prefix of the KEK labels; version N is `<key_label>-vN`.
    pub key_label: String,
    /// File holding the token's user PIN, relative to the data directory
    /// or absolute; `COFFER_PKCS11_PIN` or the systemd credential
    /// `coffer-pkcs11-pin` take precedence.
    pub pin_file: Option<PathBuf>,
}

impl Default for KeyringConfig {
    fn default() -> Self {
        Self {
            provider: KeyringProvider::MasterKey,
            module: PathBuf::new(),
            token: String::new(),
            key_label: "coffer-kek".into(),
            pin_file: None,
        }
    }
}

/// Which object store (`[objects]` in `config.toml`).
#[derive(Clone, Copy, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum ObjectsKind {
    /// `uploads/` and `objects/` in the data directory.
    #[default]
    Local,
    /// An S3-compatible bucket.
    S3,
}

/// Object storage settings (`[objects]`). For S3 the secret key comes from
/// `AWS_SECRET_ACCESS_KEY` or from `secret_access_key_file`, never from this
/// file itself.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct Objects {
    /// `local` or `s3`.
    pub kind: ObjectsKind,
    /// S3 API endpoint, e.g. `https://s3.example.net` (AWS when empty).
    pub endpoint: String,
    /// Bucket.
    pub bucket: String,
    /// Region (`garage` for a default Garage).
    pub region: String,
    /// Key prefix inside the bucket.
    pub prefix: String,
    /// Access key id (else `AWS_ACCESS_KEY_ID`).
    pub access_key_id: String,
    /// File holding the secret key, relative to the data directory (else
    /// `AWS_SECRET_ACCESS_KEY`).
    pub secret_access_key_file: Option<PathBuf>,
    /// Allow a plain-HTTP endpoint. Only for a store on the same host.
    pub allow_http: bool,
}

/// Abuse limits (`[limits]` in `config.toml`). Defaults follow the seeds:
/// 100 requests per 60 s per address, 50 connections, 60 s idle.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct Limits {
    /// API requests one client address may make per window.
    pub api_requests_per_window: u32,
    /// Login requests (`/v1/auth/challenge` and `/v1/auth/login`) one client
    /// address may make per window, counted apart from other requests.
    pub login_requests_per_window: u32,
    /// Requests one signed-in user may make per window, from wherever
    /// (their requests do not count against their address).
    pub user_requests_per_window: u32,
    /// Requests carrying a bearer token one address may make per window
    /// before the token is checked (bounds floods of made-up tokens).
    pub bearer_requests_per_window: u32,
    /// The rate-limit window in seconds.
    pub window_secs: u64,
    /// Connections open at once, in all; more are closed at once.
    pub max_connections: usize,
    /// Connections open at once from one address, so one address cannot
    /// take the whole `max_connections`.
    pub max_connections_per_ip: usize,
    /// Seconds a client may take to send a request's headers.
    pub header_read_timeout_secs: u64,
    /// Seconds a connection may sit with no traffic and no request being
    /// handled before it is closed.
    pub idle_timeout_secs: u64,
    /// Seconds a request body may stall (no bytes) before the request fails.
    pub body_stall_secs: u64,
    /// Largest request head (request line and headers), in bytes.
    pub max_header_bytes: usize,
    /// Largest JSON request body, in bytes.
    pub max_json_bytes: usize,
    /// Unfinished uploads one user may have at once.
    pub max_open_uploads_per_user: u64,
    /// Uploads one client address may begin through upload links per
    /// window (anonymous senders; counted apart from the API budget).
    pub request_uploads_per_window: u32,
    /// Addresses of TCP load balancers that prefix each connection with a
    /// PROXY protocol v2 header. From these (and only these) the header is
    /// required and its client address is the one limits and the audit log
    /// see; empty by default.
    pub proxy_protocol_from: Vec<std::net::IpAddr>,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            api_requests_per_window: 100,
            login_requests_per_window: 100,
            user_requests_per_window: 3000,
            bearer_requests_per_window: 6000,
            window_secs: 60,
            max_connections: 50,
            max_connections_per_ip: 16,
            header_read_timeout_secs: 10,
            idle_timeout_secs: 60,
            body_stall_secs: 30,
            max_header_bytes: 64 * 1024,
            max_json_bytes: 64 * 1024,
            max_open_uploads_per_user: 16,
            request_uploads_per_window: 20,
            proxy_protocol_from: Vec::new(),
        }
    }
}

impl Default for Config {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 8443)),
            public_url: None,
            metrics_listen: None,
            tls_cert: PathBuf::from("tls/cert.pem"),
            tls_key: PathBuf::from("tls/key.pem"),
            client_ca: None,
            client_crl: None,
            challenge_ttl_secs: 60,
            token_ttl_secs: 15 * 60,
            session_max_secs: 24 * 3600,
            upload_ttl_secs: 24 * 3600,
            max_upload_bytes: 1 << 40,
            max_wraps_per_file: 64,
            default_file_ttl_secs: 0,
            max_file_ttl_secs: 0,
            sweep_interval_secs: 60,
            default_link_ttl_secs: 24 * 3600,
            max_link_ttl_secs: 30 * 24 * 3600,
            link_ticket_ttl_secs: 3600,
            link_max_password_failures: 10,
            default_request_ttl_secs: 7 * 24 * 3600,
            max_request_ttl_secs: 90 * 24 * 3600,
            master_key_file: PathBuf::from("master.key"),
            keyring: KeyringConfig::default(),
            dek_cache_secs: 60,
            database: "meta.db".to_string(),
            objects: Objects::default(),
            limits: Limits::default(),
        }
    }
}

/// Name of the configuration file inside the data directory.
pub const FILE_NAME: &str = "config.toml";

impl Config {
    /// Reads `config.toml` from `data_dir` and applies environment overrides.
    pub fn load(data_dir: &Path) -> Result<Self> {
        let mut config = Self::load_file(data_dir)?;
        config.apply_env(|name| std::env::var(name).ok())?;
        config.check_public_url()?;
        Ok(config)
    }

    /// What `config.toml` itself says, without the environment's
    /// overrides (for rewriting it without writing those down).
    pub fn load_file(data_dir: &Path) -> Result<Self> {
        let path = data_dir.join(FILE_NAME);
        let text = std::fs::read_to_string(&path)
            .with_context(|| format!("cannot read {}", path.display()))?;
        toml::from_str(&text).with_context(|| format!("invalid {}", path.display()))
    }

    /// Refuses a `public_url` clients could not use: it must be
    /// `https://host[:port]`, with no path, query or fragment.
    pub fn check_public_url(&self) -> Result<()> {
        let Some(url) = &self.public_url else {
            return Ok(());
        };
        let rest = url.strip_prefix("https://").unwrap_or_default();
        let host = rest.trim_end_matches('/');
        anyhow::ensure!(
            !host.is_empty() && !host.contains(['/', '?', '#', '@', ' ']),
            "public_url must be https://HOST[:PORT] (no path), not {url:?}"
        );
        Ok(())
    }

    /// Applies `COFFER_*` overrides from `lookup`.
    pub fn apply_env(&mut self, lookup: impl Fn(&str) -> Option<String>) -> Result<()> {
        if let Some(value) = lookup("COFFER_LISTEN") {
            self.listen = value
                .parse()
                .context("COFFER_LISTEN is not an address:port")?;
        }
        if let Some(value) = lookup("COFFER_METRICS_LISTEN") {
            self.metrics_listen = Some(
                value
                    .parse()
                    .context("COFFER_METRICS_LISTEN is not an address:port")?,
            );
        }
        if let Some(value) = lookup("COFFER_PUBLIC_URL") {
            self.public_url = Some(value);
        }
        if let Some(value) = lookup("COFFER_CLIENT_CA") {
            self.client_ca = Some(PathBuf::from(value));
        }
        if let Some(value) = lookup("COFFER_CLIENT_CRL") {
            self.client_crl = Some(PathBuf::from(value));
        }
        if let Some(value) = lookup("COFFER_CHALLENGE_TTL_SECS") {
            self.challenge_ttl_secs = value.parse().context("COFFER_CHALLENGE_TTL_SECS")?;
        }
        if let Some(value) = lookup("COFFER_UPLOAD_TTL_SECS") {
            self.upload_ttl_secs = value.parse().context("COFFER_UPLOAD_TTL_SECS")?;
        }
        if let Some(value) = lookup("COFFER_TOKEN_TTL_SECS") {
            self.token_ttl_secs = value.parse().context("COFFER_TOKEN_TTL_SECS")?;
        }
        if let Some(value) = lookup("COFFER_SESSION_MAX_SECS") {
            self.session_max_secs = value.parse().context("COFFER_SESSION_MAX_SECS")?;
        }
        self.apply_storage_env(lookup)
    }

    /// The storage overrides: `COFFER_DATABASE`, `COFFER_OBJECTS`
    /// (`local`/`s3`) and `COFFER_S3_{ENDPOINT,BUCKET,REGION,PREFIX,ALLOW_HTTP}`.
    fn apply_storage_env(&mut self, lookup: impl Fn(&str) -> Option<String>) -> Result<()> {
        if let Some(value) = lookup("COFFER_DATABASE") {
            self.database = value;
        }
        match lookup("COFFER_OBJECTS").as_deref() {
            None => {}
            Some("local") => self.objects.kind = ObjectsKind::Local,
            Some("s3") => self.objects.kind = ObjectsKind::S3,
            Some(_) => anyhow::bail!("COFFER_OBJECTS must be local or s3"),
        }
        let objects = &mut self.objects;
        for (name, field) in [
            ("COFFER_S3_ENDPOINT", &mut objects.endpoint),
            ("COFFER_S3_BUCKET", &mut objects.bucket),
            ("COFFER_S3_REGION", &mut objects.region),
            ("COFFER_S3_PREFIX", &mut objects.prefix),
        ] {
            if let Some(value) = lookup(name) {
                *field = value;
            }
        }
        if let Some(value) = lookup("COFFER_S3_ALLOW_HTTP") {
            objects.allow_http = value.parse().context("COFFER_S3_ALLOW_HTTP (true/false)")?;
        }
        Ok(())
    }

    /// The TOML text, never with a database password in it: a URL's
    /// password is left out (see [`withhold_password`]).
    pub fn to_toml(&self) -> Result<String> {
        let mut written = self.clone();
        if let Some(stripped) = withhold_password(&self.database) {
            written.database = stripped;
        }
        Ok(toml::to_string_pretty(&written)?)
    }
}

/// `database` without the password of its `postgres://user:password@…`
/// URL, if it has one. config.toml is read by backups, support bundles and
/// anyone who may read the data directory; the password belongs in
/// `COFFER_DATABASE` (the whole URL), `PGPASSWORD` or a `.pgpass` file,
/// which the PostgreSQL driver reads.
pub fn withhold_password(database: &str) -> Option<String> {
    let (scheme, rest) = database.split_once("://")?;
    if !scheme.starts_with("postgres") {
        return None;
    }
    let authority_end = rest.find(['/', '?']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(authority_end);
    let (userinfo, host) = authority.rsplit_once('@')?;
    let (user, _password) = userinfo.split_once(':')?;
    Some(format!("{scheme}://{user}@{host}{tail}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn database_passwords_are_never_written() {
        let url = "postgres://coffer:s3cr%40t@db.example:5432/coffer?sslmode=require";
        assert_eq!(
            withhold_password(url).unwrap(),
            "postgres://coffer@db.example:5432/coffer?sslmode=require"
        );
        assert_eq!(
            withhold_password("postgresql://u:p@h").unwrap(),
            "postgresql://u@h"
        );
        assert_eq!(withhold_password("postgres://u@h/db"), None);
        assert_eq!(withhold_password("meta.db"), None);
        let config = Config {
            database: url.into(),
            ..Config::default()
        };
        let text = config.to_toml().unwrap();
        assert!(!text.contains("s3cr"), "{text}");
        assert!(
            text.contains("postgres://coffer@db.example:5432/coffer"),
            "{text}"
        );
    }

    #[test]
    fn round_trips_and_env_overrides() {
        let config = Config::default();
        let back: Config = toml::from_str(&config.to_toml().unwrap()).unwrap();
        assert_eq!(back, config);
        let mut over = config.clone();
        over.apply_env(|name| (name == "COFFER_LISTEN").then(|| "127.0.0.1:9000".to_string()))
            .unwrap();
        assert_eq!(over.listen.port(), 9000);
        assert!(over.apply_env(|_| Some("nonsense".into())).is_err());
        assert!(toml::from_str::<Config>("listen = \"127.0.0.1:1\"\nbogus = 1").is_err());
        let mut scaled = config.clone();
        scaled
            .apply_env(|name| match name {
                "COFFER_DATABASE" => Some("postgres://coffer@db/coffer".into()),
                "COFFER_OBJECTS" => Some("s3".into()),
                "COFFER_S3_BUCKET" => Some("files".into()),
                _ => None,
            })
            .unwrap();
        assert_eq!(scaled.objects.kind, ObjectsKind::S3);
        assert_eq!(scaled.objects.bucket, "files");
        let back: Config = toml::from_str(&scaled.to_toml().unwrap()).unwrap();
        assert_eq!(back, scaled);
        assert!(
            config
                .clone()
                .apply_env(|name| (name == "COFFER_OBJECTS").then(|| "ftp".into()))
                .is_err()
        );
    }
}
