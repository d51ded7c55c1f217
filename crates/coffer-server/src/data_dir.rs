//! The server's data directory: what `coffer server init` creates and
//! `coffer server run` opens.
//!
//! ```text
//! DIR/                (0700)
//!   config.toml
//!   server.identity   (0600) the server's coffer identity: signs receipts,
//!                     named in every login signature
//!   tls/cert.pem, tls/key.pem (0600)
//!   meta.db           SQLite (WAL) metadata, unless `database` names
//!                     PostgreSQL
//!   uploads/, objects/  file bytes, unless `[objects]` names S3
//! ```

use std::fs;
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context, Result, bail};
use coffer_format::Identity;

use crate::config::{self, Config, KeyringProvider, ObjectsKind};
use crate::keyring::{self, KekProvider, Keyring};
use crate::objects::ObjectStore;
use crate::objects::s3::{S3Objects, S3Settings};
use crate::store::{Database, MetaStore, SqlStore};
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

/// Writes a new file (refusing an existing one) readable by its owner only,
/// synced before it returns.
pub(crate) fn write_private(path: &Path, contents: &[u8]) -> Result<()> {
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
    let key_file = root.join(&config.master_key_file);
    if std::env::var_os(crate::keyring::MASTER_KEY_ENV).is_none() && key_file.exists() {
        bail!(
            "{} already exists (a master key of another data directory?); remove it or choose another --master-key-file",
            key_file.display()
        );
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
    let client_crl = config.client_crl.as_ref().map(|p| root.join(p));
    let clients = tls::client_trust(client_ca.as_deref(), client_crl.as_deref())?;
    let certificate =
        tls::Certificate::load(&root.join(&config.tls_cert), &root.join(&config.tls_key))?;
    tls::server_config(certificate, clients)?;

    // The file keeps what was given; the environment may add to it (a
    // database password, say) without being written down.
    let mut effective = config.clone();
    effective.apply_env(|name| std::env::var(name).ok())?;
    let store = SqlStore::open(&Database::parse(&effective.database, root))
        .await
        .context("cannot open the metadata database")?;
    open_objects(root, &effective).await?;
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
    Keyring::with_master_key(&store, master).await?;
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

/// What [`DataDir::rotate_master_key`] did.
#[derive(Debug)]
pub struct MasterRotation {
    /// KEK versions re-sealed now.
    pub versions: usize,
    /// Where the new master key is.
    pub key_file: PathBuf,
    /// Whether an earlier, interrupted run had re-sealed the keyring and
    /// this one only moved the key file into place.
    pub finished_earlier: bool,
}

/// What [`DataDir::move_keyring_into_token`] did.
#[derive(Debug)]
pub struct KeyringMove {
    /// The token version everything is wrapped under.
    pub version: u32,
    /// Whether this run made that version.
    pub added: bool,
    /// Keys re-wrapped by this run.
    pub rewrapped: u64,
    /// Master-key versions removed.
    pub removed: Vec<u32>,
}

/// The lock file [`DataDir::claim`] locks.
const LOCK_FILE: &str = "server.lock";

/// How a process claims a data directory.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Claim {
    /// No other claim may be held.
    Alone,
    /// Other shared claims may be held, but no sole one.
    Shared,
}

/// A held claim on a data directory, released when dropped.
#[derive(Debug)]
pub struct DirLock(#[allow(dead_code)] fs::File);

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

    /// Where the metadata lives.
    pub fn database(&self) -> Database {
        Database::parse(&self.config.database, &self.root)
    }

    /// Opens the metadata store.
    pub async fn store(&self) -> Result<SqlStore> {
        let database = self.database();
        SqlStore::open(&database)
            .await
            .with_context(|| match database {
                Database::Sqlite(path) => format!("cannot open {}", path.display()),
                // The URL may hold a password: name only the kind.
                Database::Postgres(_) => "cannot open the PostgreSQL database".to_string(),
            })
    }

    /// Opens the object store.
    pub async fn objects(&self) -> Result<Arc<dyn ObjectStore>> {
        self.objects_for(&self.config).await
    }

    /// Opens the object store `config` names (relative to this directory).
    pub async fn objects_for(&self, config: &Config) -> Result<Arc<dyn ObjectStore>> {
        open_objects(&self.root, config).await
    }

    /// Opens the keyring with the configured provider. With `pkcs11`, the
    /// master key is used too when it is there, for versions made before
    /// the move into the token.
    pub async fn keyring(&self, store: &dyn MetaStore) -> Result<Keyring> {
        let master = || keyring::load_master_key(&self.path(&self.config.master_key_file));
        match self.config.keyring.provider {
            KeyringProvider::MasterKey => Keyring::with_master_key(store, master()?).await,
            KeyringProvider::Pkcs11 => {
                let token =
                    keyring::pkcs11::Pkcs11Provider::open(&self.config.keyring, &self.root)?;
                let fallback = master().ok().map(|key| {
                    Arc::new(keyring::MasterKeyProvider::new(key)) as Arc<dyn KekProvider>
                });
                Keyring::open(store, Arc::new(token), fallback).await
            }
        }
    }

    /// Moves the keyring into the PKCS#11 token `settings` names: checks
    /// the token can be reached, writes `settings` to `config.toml`, makes
    /// a version inside the token unless the newest already is one,
    /// re-wraps every key under it and prunes the versions sealed by the
    /// master key. Run with the server stopped (the caller claims the
    /// directory); running it again finishes an interrupted run, and does
    /// nothing once everything is in the token.
    pub async fn move_keyring_into_token(
        &mut self,
        store: &dyn MetaStore,
        settings: config::KeyringConfig,
        batch: u32,
        after_batch: impl FnMut(u64),
    ) -> Result<KeyringMove> {
        anyhow::ensure!(
            settings.provider == KeyringProvider::Pkcs11,
            "the keyring can only be moved into a pkcs11 token"
        );
        // Reach the token (module, token, PIN) before changing anything.
        keyring::pkcs11::Pkcs11Provider::open(&settings, &self.root)?;
        if self.config.keyring != settings {
            let mut file = Config::load_file(&self.root)?;
            file.keyring = settings.clone();
            self.rewrite_config(&file)?;
            self.config.keyring = settings;
        }
        let ring = self.keyring(store).await?;
        let newest_in_token = store.keks().await?.last().is_some_and(|(_, record)| {
            keyring::RecordKind::of(record) == keyring::RecordKind::Token
        });
        let (added, rewrapped) = if newest_in_token {
            (
                false,
                keyring::rewrap_to_current(store, &ring, batch, after_batch).await?,
            )
        } else {
            let rotation = keyring::rotate(store, &ring, batch, after_batch).await?;
            (rotation.added, rotation.rewrapped)
        };
        let removed = keyring::prune(store, &ring).await?;
        let left = store
            .keks()
            .await?
            .iter()
            .filter(|(_, record)| {
                keyring::RecordKind::of(record) == keyring::RecordKind::MasterSealed
            })
            .count();
        anyhow::ensure!(
            left == 0,
            "{left} KEK versions sealed by the master key are still in use: run the command again"
        );
        Ok(KeyringMove {
            version: ring.current_version(),
            added,
            rewrapped,
            removed,
        })
    }

    /// Replaces `config.toml`, keeping the old one as `config.toml.old`.
    pub fn rewrite_config(&self, config: &Config) -> Result<()> {
        let path = self.root.join(config::FILE_NAME);
        let old = self.root.join(format!("{}.old", config::FILE_NAME));
        fs::copy(&path, &old).with_context(|| format!("cannot back up {}", path.display()))?;
        let temp = self.root.join(format!("{}.new", config::FILE_NAME));
        let _ = fs::remove_file(&temp);
        write_private(&temp, config.to_toml()?.as_bytes())?;
        fs::rename(&temp, &path)?;
        Ok(())
    }

    /// Claims this directory for a server, or for a command that needs the
    /// server stopped, until the returned lock is dropped.
    ///
    /// A server on SQLite claims it alone: it frees every upload lease at
    /// start, which is only sound if no other process serves the same
    /// database. Servers on PostgreSQL may share a directory (as nodes on
    /// one machine may) and so share the claim. `migrate-store` claims it
    /// alone, so that nothing is written behind its copy. The lock is the
    /// operating system's (`flock`), so it goes with the process, even
    /// when that is killed.
    pub fn claim(&self, claim: Claim) -> Result<DirLock> {
        let path = self.root.join(LOCK_FILE);
        let file = fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .mode(0o600)
            .open(&path)
            .with_context(|| format!("cannot open {}", path.display()))?;
        let taken = match claim {
            Claim::Alone => file.try_lock(),
            Claim::Shared => file.try_lock_shared(),
        };
        match taken {
            Ok(()) => Ok(DirLock(file)),
            Err(fs::TryLockError::WouldBlock) => bail!(
                "{} is in use by a running coffer server (or migrate-store): stop it first",
                self.root.display()
            ),
            Err(fs::TryLockError::Error(e)) => {
                Err(e).with_context(|| format!("cannot lock {}", path.display()))
            }
        }
    }

    /// The claim a server on this directory's database makes.
    pub fn server_claim(&self) -> Claim {
        match self.database() {
            Database::Sqlite(_) => Claim::Alone,
            Database::Postgres(_) => Claim::Shared,
        }
    }

    /// Replaces the master key with a new random one and re-seals every KEK
    /// version under it ([`keyring::reseal`]).
    ///
    /// The order makes a crash at any point recoverable by running this
    /// again: the new key is written (and synced) to `<master key>.new`
    /// before the database changes; the database changes in one
    /// transaction; only then is the new file moved over the old one. A
    /// rerun that finds the `.new` file finishes the move if the database
    /// already opens with it, and otherwise starts over.
    ///
    /// A master key from `COFFER_MASTER_KEY` cannot be replaced in place:
    /// the new one goes to `new_key_file` (which must not exist), for the
    /// operator to put where the old one came from.
    pub async fn rotate_master_key(
        &self,
        store: &dyn MetaStore,
        new_key_file: Option<&Path>,
    ) -> Result<MasterRotation> {
        use crate::keyring::{self, MASTER_KEY_ENV};
        let current = self.path(&self.config.master_key_file);
        let from_env = std::env::var(MASTER_KEY_ENV).is_ok();
        let pending = match (from_env, new_key_file) {
            (true, Some(path)) => path.to_path_buf(),
            (true, None) => bail!(
                "the master key comes from {MASTER_KEY_ENV}: name a file for the new one with --new-key-file"
            ),
            (false, Some(_)) => bail!(
                "--new-key-file is for a master key kept in {MASTER_KEY_ENV}; the key in {} is replaced in place",
                current.display()
            ),
            (false, None) => PathBuf::from(format!("{}.new", current.display())),
        };
        if pending.exists() {
            // The database changes only after the new key is whole on disk,
            // so a file that does not parse (a crash while writing it) is
            // not the key the keyring is sealed with.
            let opens = match keyring::read_key_file(&pending) {
                Ok(new) => keyring::opens_keyring(store, &new).await?,
                Err(_) => false,
            };
            if opens {
                // An earlier run re-sealed the keyring and stopped before
                // moving the file.
                return Ok(MasterRotation {
                    versions: 0,
                    key_file: self.install_master_key(&pending, &current, from_env)?,
                    finished_earlier: true,
                });
            }
            if from_env {
                bail!(
                    "{} exists and does not open the keyring: remove it or name another file",
                    pending.display()
                );
            }
            // An earlier run stopped before the database changed.
            fs::remove_file(&pending)?;
        }
        let old = keyring::load_master_key(&current)?;
        let new = keyring::random_key()?;
        write_private(&pending, keyring::encode_key(&new).as_bytes())?;
        let versions = match keyring::reseal(store, &old, &new).await {
            Ok(versions) => versions,
            Err(err) => {
                let _ = fs::remove_file(&pending);
                return Err(err);
            }
        };
        Ok(MasterRotation {
            versions,
            key_file: self.install_master_key(&pending, &current, from_env)?,
            finished_earlier: false,
        })
    }

    /// Moves a new master key file into place (unless the key lives in the
    /// environment); returns where the new key is.
    fn install_master_key(
        &self,
        pending: &Path,
        current: &Path,
        from_env: bool,
    ) -> Result<PathBuf> {
        if from_env {
            return Ok(pending.to_path_buf());
        }
        fs::rename(pending, current)
            .with_context(|| format!("cannot move {} into place", pending.display()))?;
        // The rename is only durable once the directory is.
        if let Some(dir) = current.parent() {
            fs::File::open(dir)?.sync_all()?;
        }
        Ok(current.to_path_buf())
    }

    /// Absolute path of a file named in the config.
    pub fn path(&self, relative: &Path) -> PathBuf {
        self.root.join(relative)
    }
}

/// The object store `config` names, checked to be reachable.
async fn open_objects(root: &Path, config: &Config) -> Result<Arc<dyn ObjectStore>> {
    let settings = &config.objects;
    match settings.kind {
        ObjectsKind::Local => Ok(Arc::new(crate::objects::LocalObjects::new(root)?)),
        ObjectsKind::S3 => {
            let secret = match &settings.secret_access_key_file {
                Some(file) => {
                    let path = root.join(file);
                    let text = zeroize::Zeroizing::new(
                        fs::read_to_string(&path)
                            .with_context(|| format!("cannot read {}", path.display()))?,
                    );
                    secrecy::SecretString::from(text.trim().to_string())
                }
                None => secrecy::SecretString::from(String::new()),
            };
            let s3 = S3Objects::new(&S3Settings {
                endpoint: settings.endpoint.clone(),
                bucket: settings.bucket.clone(),
                region: settings.region.clone(),
                prefix: settings.prefix.clone(),
                access_key_id: settings.access_key_id.clone(),
                secret_access_key: secret,
                allow_http: settings.allow_http,
            })
            .context("invalid [objects] settings")?;
            s3.check().await.with_context(|| {
                format!(
                    "cannot reach bucket {:?} at {:?}",
                    settings.bucket, settings.endpoint
                )
            })?;
            Ok(Arc::new(s3))
        }
    }
}
