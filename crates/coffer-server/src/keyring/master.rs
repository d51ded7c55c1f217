//! The master-key provider: KEKs are random keys stored in the database,
//! each sealed with AES-256-GCM under a master key that never touches the
//! database (AAD binds the version).
//!
//! The master key (32 bytes, base64) comes from `COFFER_MASTER_KEY`, a
//! systemd credential, or the file named by `master_key_file`. A copy of
//! the database alone opens nothing; the database and the master key
//! together open everything, which is why the key belongs on another
//! device, or in an HSM instead ([`super::pkcs11`]).

use std::path::Path;
use std::sync::Arc;

use anyhow::{Context, Result, anyhow};
use base64::Engine as _;
use zeroize::Zeroizing;

use super::{Kek, KekProvider, Key, MemoryKek, RecordKind, kek_aad, open, random_key, seal};
use crate::store::MetaStore;

/// Environment variable holding the base64 master key.
pub const MASTER_KEY_ENV: &str = "COFFER_MASTER_KEY";

/// The name of the master key among systemd credentials
/// (`LoadCredential=coffer-master-key:/path` in the unit).
pub const MASTER_KEY_CREDENTIAL: &str = "coffer-master-key";

/// Where the master key comes from, in this order: `COFFER_MASTER_KEY`, a
/// systemd credential (`$CREDENTIALS_DIRECTORY/coffer-master-key`), or the
/// configured file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum MasterKeySource {
    /// The environment variable.
    Env,
    /// A file: a systemd credential or `master_key_file`.
    File(std::path::PathBuf),
}

/// Where the master key for a configured `file` will be read from.
pub fn master_key_source(file: &Path) -> MasterKeySource {
    if std::env::var_os(MASTER_KEY_ENV).is_some() {
        return MasterKeySource::Env;
    }
    if let Some(dir) = std::env::var_os("CREDENTIALS_DIRECTORY") {
        let credential = Path::new(&dir).join(MASTER_KEY_CREDENTIAL);
        if credential.exists() {
            return MasterKeySource::File(credential);
        }
    }
    MasterKeySource::File(file.to_path_buf())
}

/// Reads the master key from where [`master_key_source`] says.
pub fn load_master_key(file: &Path) -> Result<Key> {
    let text = match master_key_source(file) {
        MasterKeySource::Env => {
            Zeroizing::new(std::env::var(MASTER_KEY_ENV).context("COFFER_MASTER_KEY")?)
        }
        MasterKeySource::File(path) => {
            Zeroizing::new(std::fs::read_to_string(&path).with_context(|| {
                format!(
                    "refusing to start: no master key. Set {MASTER_KEY_ENV}, pass the systemd credential \
                     {MASTER_KEY_CREDENTIAL}, or put the key in {} \
                     (the keyring that encrypts stored files cannot be opened without it)",
                    path.display()
                )
            })?)
        }
    };
    parse_key(&text)
}

/// Why a master key file is badly placed relative to the data directory:
/// inside it (every copy of the directory opens every server-encrypted
/// file) or on its filesystem (one stolen disk or image does). None when
/// it is apart, or cannot be looked at.
pub fn master_key_placement(data_dir: &Path, key_file: &Path) -> Option<String> {
    use std::os::unix::fs::MetadataExt as _;
    let data = std::fs::canonicalize(data_dir).ok()?;
    let key = std::fs::canonicalize(key_file).ok()?;
    if key.starts_with(&data) {
        return Some(format!(
            "the master key {} is inside the data directory {}: any copy or backup of the directory opens every server-encrypted file. \
             Move it elsewhere and set master_key_file, or use {MASTER_KEY_ENV} or the systemd credential {MASTER_KEY_CREDENTIAL}",
            key.display(),
            data.display()
        ));
    }
    let (data_dev, key_dev) = (
        std::fs::metadata(&data).ok()?.dev(),
        std::fs::metadata(&key).ok()?.dev(),
    );
    (data_dev == key_dev).then(|| {
        format!(
            "the master key {} is on the same filesystem as the data directory {}: one stolen disk or image holds both. \
             Keep it on another device, or use {MASTER_KEY_ENV} or the systemd credential {MASTER_KEY_CREDENTIAL}",
            key.display(),
            data.display()
        )
    })
}

/// Reads a key file written by [`encode_key`].
pub fn read_key_file(path: &Path) -> Result<Key> {
    let text = Zeroizing::new(
        std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?,
    );
    parse_key(&text)
}

fn parse_key(text: &str) -> Result<Key> {
    let bytes = Zeroizing::new(
        base64::engine::general_purpose::STANDARD
            .decode(text.trim())
            .map_err(|_| anyhow!("the master key is not base64"))?,
    );
    let key: [u8; 32] = bytes
        .as_slice()
        .try_into()
        .map_err(|_| anyhow!("the master key must be 32 bytes"))?;
    Ok(Zeroizing::new(key))
}

/// The base64 text form of a key, as written to the master key file.
pub fn encode_key(key: &Key) -> Zeroizing<String> {
    Zeroizing::new(base64::engine::general_purpose::STANDARD.encode(key.as_ref()))
}

/// KEKs sealed by the master key, stored in the database.
pub struct MasterKeyProvider {
    master: Key,
}

impl MasterKeyProvider {
    /// A provider sealing with `master`.
    pub fn new(master: Key) -> Self {
        Self { master }
    }
}

impl KekProvider for MasterKeyProvider {
    fn name(&self) -> String {
        "master key".into()
    }

    fn owns(&self, record: &[u8]) -> bool {
        RecordKind::of(record) == RecordKind::MasterSealed
    }

    fn create(&self, version: u32) -> Result<Vec<u8>> {
        let kek = random_key()?;
        seal(&self.master, &kek_aad(version), kek.as_ref())
    }

    fn open(&self, version: u32, record: &[u8]) -> Result<Arc<dyn Kek>> {
        let kek = open(&self.master, &kek_aad(version), record).ok_or_else(|| {
            anyhow!(
                "the master key does not open KEK version {version}: wrong master key, or the keyring was altered"
            )
        })?;
        Ok(Arc::new(MemoryKek(kek)))
    }

    fn destroy(&self, _version: u32, _record: &[u8]) -> Result<()> {
        // Nothing outside the database: dropping the row destroys it.
        Ok(())
    }
}

/// Unseals the master-sealed versions among `records`; fails naming the
/// first one `master` does not open. Versions kept elsewhere (a token) are
/// left out.
fn unseal_all(master: &Key, records: &[(u32, Vec<u8>)]) -> Result<Vec<(u32, Key)>> {
    records
        .iter()
        .filter(|(_, record)| RecordKind::of(record) == RecordKind::MasterSealed)
        .map(|(version, sealed)| {
            let kek = open(master, &kek_aad(*version), sealed).ok_or_else(|| {
                anyhow!(
                    "the master key does not open KEK version {version}: wrong master key, or the keyring was altered"
                )
            })?;
            Ok((*version, kek))
        })
        .collect()
}

/// Whether `master` opens every master-sealed KEK version in `store`.
pub async fn opens_keyring(store: &dyn MetaStore, master: &Key) -> Result<bool> {
    Ok(unseal_all(master, &store.keks().await?).is_ok())
}

/// Re-seals every KEK version sealed under `old` under `new` instead, in
/// one transaction; returns how many versions were re-sealed. Versions in
/// a token are left as they are.
///
/// The KEKs themselves stay the same, so no file key is re-wrapped and
/// running servers keep working with the KEKs they hold. That also means a
/// leaked master key together with any copy of the database from before
/// gives the KEKs away: after a leak, follow this with
/// [`super::rotate`] and [`super::prune`], which replace them.
pub async fn reseal(store: &dyn MetaStore, old: &Key, new: &Key) -> Result<usize> {
    let current = store.keks().await?;
    let keks = unseal_all(old, &current)?;
    if keks.is_empty() {
        anyhow::bail!(
            "no KEK version is sealed by the master key (they are all in the PKCS#11 token)"
        );
    }
    let mut replaced = Vec::with_capacity(current.len());
    for (version, record) in current {
        let new_record = match keks.iter().find(|(v, _)| *v == version) {
            Some((_, kek)) => seal(new, &kek_aad(version), kek.as_ref())?,
            None => record.clone(),
        };
        replaced.push((version, record, new_record));
    }
    if !store.reseal_keks(&replaced).await? {
        anyhow::bail!(
            "the keyring changed while it was being re-sealed (a KEK rotation at the same time?): run the command again"
        );
    }
    Ok(keks.len())
}
