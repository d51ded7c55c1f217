//! The server's data directory: what `coffer server init` creates and
//! `coffer server run` opens.
//!
//! ```text
//! DIR/                (0700)
//!   config.toml
//!   server.identity   (0600) the server's coffer identity: signs receipts,
//!                     named in every login signature
//!   tls/cert.pem, tls/key.pem (0600)
//!   meta.db           SQLite (WAL) metadata
//! ```

use std::fs;
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use coffer_format::Identity;

use crate::config::{self, Config};
use crate::store::SqliteStore;
use crate::tls;

/// What `init` tells the operator.
#[derive(Debug)]
pub struct InitReport {
    /// `https://host:port` clients connect to.
    pub url: String,
    /// `SHA256:…` of the certificate, for clients to pin.
    pub cert_fingerprint: String,
    /// The server's public identity (`coffer1…`).
    pub server_identity: String,
}

/// Where to get the TLS certificate from.
pub enum CertSource {
    /// Generate a self-signed certificate for these names.
    SelfSigned(Vec<String>),
    /// Copy an operator-supplied certificate chain and key.
    Files { cert: PathBuf, key: PathBuf },
}

fn write_private(path: &Path, contents: &[u8]) -> Result<()> {
    let mut file = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("cannot create {}", path.display()))?;
    file.write_all(contents)?;
    file.sync_all()?;
    Ok(())
}

/// Creates a new data directory. Refuses to touch an existing one.
/// A `client_ca` in `config` names a PEM file outside the directory; it is
/// copied in as `tls/client-ca.pem`.
pub async fn init(root: &Path, cert: CertSource, mut config: Config) -> Result<InitReport> {
    if root.join(config::FILE_NAME).exists() {
        bail!("{} is already a coffer data directory", root.display());
    }
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(root)
        .with_context(|| format!("cannot create {}", root.display()))?;
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(root.join("tls"))?;

    let identity = Identity::generate()?;
    let text = identity.to_file_string(None, "coffer server init")?;
    write_private(&root.join("server.identity"), text.as_bytes())?;

    let (cert_pem, key_pem) = match cert {
        CertSource::SelfSigned(names) => tls::self_signed(&names)?,
        CertSource::Files { cert, key } => (
            fs::read_to_string(&cert).with_context(|| format!("cannot read {}", cert.display()))?,
            fs::read_to_string(&key).with_context(|| format!("cannot read {}", key.display()))?,
        ),
    };
    write_private(&root.join(&config.tls_cert), cert_pem.as_bytes())?;
    write_private(&root.join(&config.tls_key), key_pem.as_bytes())?;
    if let Some(ca) = config.client_ca.take() {
        let pem =
            fs::read_to_string(&ca).with_context(|| format!("cannot read {}", ca.display()))?;
        let inside = PathBuf::from("tls/client-ca.pem");
        write_private(&root.join(&inside), pem.as_bytes())?;
        config.client_ca = Some(inside);
    }
    // Fail now, not at first start, if the pair or the CA is unusable.
    let client_ca = config.client_ca.as_ref().map(|p| root.join(p));
    tls::server_config(
        &root.join(&config.tls_cert),
        &root.join(&config.tls_key),
        client_ca.as_deref(),
    )?;

    let store = SqliteStore::open(&root.join("meta.db")).await?;
    // The master key: taken from COFFER_MASTER_KEY if set (and then not
    // written), else generated into `master_key_file`.
    let master = match std::env::var(crate::keyring::MASTER_KEY_ENV) {
        Ok(_) => crate::keyring::load_master_key(&root.join(&config.master_key_file))?,
        Err(_) => {
            let key = crate::keyring::random_key()?;
            let text = crate::keyring::encode_key(&key);
            write_private(&root.join(&config.master_key_file), text.as_bytes())?;
            key
        }
    };
    crate::keyring::Keyring::open(&store, master).await?;
    write_private(&root.join(config::FILE_NAME), config.to_toml()?.as_bytes())?;

    let leaf = tls::load_chain(&root.join(&config.tls_cert))?;
    Ok(InitReport {
        url: format!("https://{}", config.listen),
        cert_fingerprint: tls::fingerprint(&leaf[0]),
        server_identity: identity.public().to_string(),
    })
}

/// An opened data directory.
pub struct DataDir {
    /// The directory.
    pub root: PathBuf,
    /// Its configuration, with environment overrides applied.
    pub config: Config,
    /// The server's identity.
    pub identity: Identity,
}

impl DataDir {
    /// Opens an initialized data directory.
    pub fn open(root: &Path) -> Result<Self> {
        let config = Config::load(root).with_context(|| {
            format!(
                "{} is not a coffer data directory (run `coffer server init`)",
                root.display()
            )
        })?;
        let text = zeroize::Zeroizing::new(fs::read_to_string(root.join("server.identity"))?);
        let identity = Identity::from_file_string(&text, None).context("server.identity")?;
        Ok(Self {
            root: root.to_path_buf(),
            config,
            identity,
        })
    }

    /// Opens the metadata store.
    pub async fn store(&self) -> Result<SqliteStore> {
        Ok(SqliteStore::open(&self.root.join("meta.db")).await?)
    }

    /// Absolute path of a file named in the config.
    pub fn path(&self, relative: &Path) -> PathBuf {
        self.root.join(relative)
    }
}
