//! Envelope encryption at rest: a versioned keyring of key-encryption keys
//! (KEKs), sealed by a master key that never touches the database.
//!
//! * The **master key** (32 bytes) comes from `COFFER_MASTER_KEY` (base64)
//!   or the file named by `master_key_file`. Without it the server does not
//!   start: the keyring cannot be opened.
//! * Each **KEK version** is 32 random bytes, stored sealed with AES-256-GCM
//!   under the master key (AAD binds the version).
//! * Each server-encrypted file has its own **DEK** (its coffer file key),
//!   and each unfinished upload a **staging key**. Both are stored only
//!   wrapped by a KEK version, in the database, with AAD binding the file or
//!   upload id and the version, so a wrap moved or edited fails closed.
//! * **Rotation** adds a version and re-wraps every key in batches without
//!   touching the data; each batch is one transaction and only replaces a
//!   wrap still under the old version, so an interrupted rotation simply
//!   resumes. **Pruning** drops versions nothing references any more.
//!
//! AES-256-GCM with a random 96-bit nonce per wrap; the number of wraps
//! under one key stays far below the 2^32 bound for random nonces.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::sync::{Mutex, RwLock};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow};
use aws_lc_rs::aead::{AES_256_GCM, Aad, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};
use base64::Engine as _;
use zeroize::Zeroizing;

use crate::store::{MetaStore, WrappedKey};

/// A 32-byte secret key.
pub type Key = Zeroizing<[u8; 32]>;

/// Environment variable holding the base64 master key.
pub const MASTER_KEY_ENV: &str = "COFFER_MASTER_KEY";

/// A fresh random key.
pub fn random_key() -> Result<Key> {
    let mut key = Zeroizing::new([0u8; 32]);
    aws_lc_rs::rand::fill(key.as_mut()).map_err(|_| anyhow!("random number generator failed"))?;
    Ok(key)
}

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

fn seal(key: &[u8; 32], aad: &[u8], plain: &[u8]) -> Result<Vec<u8>> {
    let sealing = LessSafeKey::new(UnboundKey::new(&AES_256_GCM, key).map_err(|_| anyhow!("key"))?);
    let mut nonce = [0u8; NONCE_LEN];
    aws_lc_rs::rand::fill(&mut nonce).map_err(|_| anyhow!("random number generator failed"))?;
    let mut out = plain.to_vec();
    sealing
        .seal_in_place_append_tag(
            Nonce::assume_unique_for_key(nonce),
            Aad::from(aad),
            &mut out,
        )
        .map_err(|_| anyhow!("sealing failed"))?;
    let mut sealed = nonce.to_vec();
    sealed.extend_from_slice(&out);
    Ok(sealed)
}

fn open(key: &[u8; 32], aad: &[u8], sealed: &[u8]) -> Option<Key> {
    let opening = LessSafeKey::new(UnboundKey::new(&AES_256_GCM, key).ok()?);
    let (nonce, body) = sealed.split_at_checked(NONCE_LEN)?;
    let nonce = Nonce::try_assume_unique_for_key(nonce).ok()?;
    let mut body = Zeroizing::new(body.to_vec());
    let plain = opening
        .open_in_place(nonce, Aad::from(aad), &mut body)
        .ok()?;
    let key: [u8; 32] = (&*plain).try_into().ok()?;
    Some(Zeroizing::new(key))
}

fn kek_aad(version: u32) -> Vec<u8> {
    let mut aad = b"coffer/v1/kek\0".to_vec();
    aad.extend_from_slice(&version.to_be_bytes());
    aad
}

/// What a wrapped key belongs to; bound into the wrap's AAD.
#[derive(Clone, Copy, Debug)]
pub enum KeyUse<'a> {
    /// The DEK of a committed file.
    File(&'a str),
    /// The staging key of an upload.
    Staging(&'a str),
}

impl KeyUse<'_> {
    fn aad(&self, version: u32) -> Vec<u8> {
        let (label, id): (&[u8], &str) = match self {
            KeyUse::File(id) => (b"coffer/v1/dek\0", id),
            KeyUse::Staging(id) => (b"coffer/v1/staging\0", id),
        };
        let mut aad = label.to_vec();
        aad.extend_from_slice(id.as_bytes());
        aad.push(0);
        aad.extend_from_slice(&version.to_be_bytes());
        aad
    }
}

/// The unsealed KEKs, by version.
pub struct Keyring {
    master: Key,
    keks: RwLock<BTreeMap<u32, Key>>,
}

impl Keyring {
    /// Opens the keyring in `store` with `master`, creating version 1 if
    /// there is none. Fails if the master key does not open every version.
    pub async fn open(store: &dyn MetaStore, master: Key) -> Result<Self> {
        let keyring = Self {
            master,
            keks: RwLock::new(BTreeMap::new()),
        };
        if store.keks().await?.is_empty() {
            keyring.add_version(store, 1).await?;
        }
        keyring.reload(store).await?;
        Ok(keyring)
    }

    /// Re-reads the versions (another process may have rotated).
    pub async fn reload(&self, store: &dyn MetaStore) -> Result<()> {
        let opened = unseal_all(&self.master, &store.keks().await?)?
            .into_iter()
            .collect();
        *self.keks.write().unwrap_or_else(|p| p.into_inner()) = opened;
        Ok(())
    }

    async fn add_version(&self, store: &dyn MetaStore, version: u32) -> Result<()> {
        let kek = random_key()?;
        let sealed = seal(&self.master, &kek_aad(version), kek.as_ref())?;
        store
            .insert_kek(version, &sealed, crate::unix_now())
            .await?;
        Ok(())
    }

    /// The newest version.
    pub fn current_version(&self) -> u32 {
        self.keks
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .keys()
            .next_back()
            .copied()
            .unwrap_or(0)
    }

    /// Wraps `key` for `usage` under the newest KEK.
    pub fn wrap(&self, key: &Key, usage: KeyUse<'_>) -> Result<WrappedKey> {
        self.wrap_with(self.current_version(), key, usage)
    }

    fn wrap_with(&self, version: u32, key: &Key, usage: KeyUse<'_>) -> Result<WrappedKey> {
        let keks = self.keks.read().unwrap_or_else(|p| p.into_inner());
        let kek = keks
            .get(&version)
            .ok_or_else(|| anyhow!("no KEK version {version}"))?;
        Ok(WrappedKey {
            kek_version: version,
            wrapped: seal(kek, &usage.aad(version), key.as_ref())?,
        })
    }

    /// Unwraps a key; fails closed on any mismatch (edited, moved, unknown
    /// version).
    pub fn unwrap(&self, wrapped: &WrappedKey, usage: KeyUse<'_>) -> Result<Key> {
        let keks = self.keks.read().unwrap_or_else(|p| p.into_inner());
        let kek = keks
            .get(&wrapped.kek_version)
            .ok_or_else(|| anyhow!("unknown KEK version {}", wrapped.kek_version))?;
        open(kek, &usage.aad(wrapped.kek_version), &wrapped.wrapped)
            .ok_or_else(|| anyhow!("a key wrap failed to open (edited or moved)"))
    }
}

/// What a rotation did.
#[derive(Debug, Default)]
pub struct Rotation {
    /// The version everything is now wrapped under.
    pub version: u32,
    /// True if this call added the version (false: resumed an earlier one).
    pub added: bool,
    /// Keys re-wrapped by this call.
    pub rewrapped: u64,
}

/// Adds a KEK version (unless an interrupted rotation is still re-wrapping,
/// which this then finishes) and re-wraps every older key in batches of
/// `batch`. `after_batch` runs after each committed batch.
pub async fn rotate(
    store: &dyn MetaStore,
    keyring: &Keyring,
    batch: u32,
    mut after_batch: impl FnMut(u64),
) -> Result<Rotation> {
    let current = keyring.current_version();
    let pending = !store.stale_object_keys(current, 1).await?.is_empty()
        || !store.stale_upload_keys(current, 1).await?.is_empty();
    let mut rotation = Rotation {
        version: current,
        added: false,
        rewrapped: 0,
    };
    if !pending {
        keyring.add_version(store, current + 1).await?;
        keyring.reload(store).await?;
        rotation.version = current + 1;
        rotation.added = true;
    }
    let version = rotation.version;
    let batch = batch.max(1);
    loop {
        let objects = store.stale_object_keys(version, batch).await?;
        let uploads = store.stale_upload_keys(version, batch).await?;
        if objects.is_empty() && uploads.is_empty() {
            break;
        }
        let mut object_wraps = Vec::new();
        for object in objects {
            let usage = KeyUse::File(&object.file_id);
            let dek = keyring.unwrap(&object.key, usage)?;
            let new = keyring.wrap_with(version, &dek, usage)?;
            object_wraps.push((object.file_id.clone(), object.key, new));
        }
        let mut upload_wraps = Vec::new();
        for (id, old) in uploads {
            let usage = KeyUse::Staging(&id);
            let key = keyring.unwrap(&old, usage)?;
            let new = keyring.wrap_with(version, &key, usage)?;
            upload_wraps.push((id, old, new));
        }
        rotation.rewrapped += store.rewrap(&object_wraps, &upload_wraps).await?;
        after_batch(rotation.rewrapped);
    }
    Ok(rotation)
}

/// Unseals every (version, sealed KEK) with `master`, in order; fails
/// naming the first version it does not open.
fn unseal_all(master: &Key, sealed: &[(u32, Vec<u8>)]) -> Result<Vec<(u32, Key)>> {
    sealed
        .iter()
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

/// Whether `master` opens every KEK version in `store`.
pub async fn opens_keyring(store: &dyn MetaStore, master: &Key) -> Result<bool> {
    Ok(unseal_all(master, &store.keks().await?).is_ok())
}

/// Re-seals every KEK version, sealed under `old`, under `new` instead, in
/// one transaction; returns how many versions there are.
///
/// The KEKs themselves stay the same, so no file key is re-wrapped and
/// running servers keep working with the KEKs they hold. That also means a
/// leaked master key together with any copy of the database from before
/// gives the KEKs away: after a leak, follow this with [`rotate`] and
/// [`prune`], which replace them.
pub async fn reseal(store: &dyn MetaStore, old: &Key, new: &Key) -> Result<usize> {
    let current = store.keks().await?;
    let keks = unseal_all(old, &current)?;
    let mut resealed = Vec::with_capacity(keks.len());
    for ((version, kek), (_, sealed)) in keks.iter().zip(current) {
        resealed.push((
            *version,
            sealed,
            seal(new, &kek_aad(*version), kek.as_ref())?,
        ));
    }
    if !store.reseal_keks(&resealed).await? {
        anyhow::bail!(
            "the keyring changed while it was being re-sealed (a KEK rotation at the same time?): run the command again"
        );
    }
    Ok(resealed.len())
}

/// Removes KEK versions below the newest that nothing references; returns
/// the versions removed.
pub async fn prune(store: &dyn MetaStore) -> Result<Vec<u32>> {
    let usage = store.kek_usage().await?;
    let Some(newest) = usage.last().map(|u| u.version) else {
        return Ok(Vec::new());
    };
    let mut removed = Vec::new();
    for version in usage.iter().map(|u| u.version).filter(|v| *v < newest) {
        if store.delete_unused_kek(version).await? {
            removed.push(version);
        }
    }
    Ok(removed)
}

/// Unwrapped DEKs kept for a short time, zeroized when evicted.
pub struct DekCache {
    ttl: Duration,
    entries: Mutex<HashMap<String, (Key, Instant)>>,
}

impl DekCache {
    /// A cache keeping keys for `ttl` (zero disables it).
    pub fn new(ttl: Duration) -> Self {
        Self {
            ttl,
            entries: Mutex::new(HashMap::new()),
        }
    }

    /// The cached key for `id`, if still fresh.
    pub fn get(&self, id: &str) -> Option<Key> {
        let entries = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        entries
            .get(id)
            .filter(|(_, at)| at.elapsed() < self.ttl)
            .map(|(key, _)| key.clone())
    }

    /// Remembers `key` for `id`.
    pub fn put(&self, id: &str, key: &Key) {
        if self.ttl.is_zero() {
            return;
        }
        let mut entries = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        entries.insert(id.to_string(), (key.clone(), Instant::now()));
    }

    /// Drops expired keys (their memory is zeroized on drop).
    pub fn evict_expired(&self) {
        let mut entries = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        entries.retain(|_, (_, at)| at.elapsed() < self.ttl);
    }

    /// Forgets one key (the file was deleted).
    pub fn forget(&self, id: &str) {
        let mut entries = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        entries.remove(id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wraps_are_bound_to_their_use_and_version() {
        let kek = random_key().unwrap();
        let dek = random_key().unwrap();
        let usage = KeyUse::File("aa");
        let sealed = seal(&kek, &usage.aad(1), dek.as_ref()).unwrap();
        assert_eq!(*open(&kek, &usage.aad(1), &sealed).unwrap(), *dek);
        assert!(open(&kek, &KeyUse::File("ab").aad(1), &sealed).is_none());
        assert!(open(&kek, &KeyUse::Staging("aa").aad(1), &sealed).is_none());
        assert!(open(&kek, &usage.aad(2), &sealed).is_none());
        let mut edited = sealed.clone();
        edited[20] ^= 1;
        assert!(open(&kek, &usage.aad(1), &edited).is_none());
        assert!(open(&kek, &usage.aad(1), &sealed[..10]).is_none());
    }
}
