//! Envelope encryption at rest: a versioned keyring of key-encryption keys
//! (KEKs) that never sit in the database in a usable form.
//!
//! * Each server-encrypted file has its own **DEK** (its coffer file key),
//!   and each unfinished upload a **staging key**. Both are stored only
//!   wrapped by a KEK version, in the database, with AAD binding the file or
//!   upload id and the version, so a wrap moved or edited fails closed.
//! * A **KEK version** lives with a [`KekProvider`]: the [`master`]
//!   provider stores 32 random bytes sealed by a master key kept off the
//!   database; the [`pkcs11`] provider generates a non-extractable AES-256
//!   key inside an HSM, and wraps and unwraps there. The `keks` table holds
//!   one record per version, and the record's form says which provider
//!   owns it ([`RecordKind`]), so one keyring can hold versions of both
//!   while it moves from one to the other.
//! * **Rotation** adds a version with the configured provider and re-wraps
//!   every key in batches without touching the data; each batch is one
//!   transaction and only replaces a wrap still under the old version, so
//!   an interrupted rotation simply resumes. **Pruning** drops versions
//!   nothing references any more (and destroys their token keys). Moving
//!   from the master key to an HSM is a rotation followed by a prune.
//!
//! Every wrap is AES-256-GCM with a random 96-bit nonce; the number of
//! wraps under one key stays far below the 2^32 bound for random nonces.

pub mod master;
pub mod pkcs11;

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use anyhow::{Result, anyhow};
use aws_lc_rs::aead::{AES_256_GCM, Aad, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};
use zeroize::Zeroizing;

use crate::store::{MetaStore, WrappedKey};

pub use master::{
    MASTER_KEY_CREDENTIAL, MASTER_KEY_ENV, MasterKeyProvider, MasterKeySource, encode_key,
    load_master_key, master_key_placement, master_key_source, opens_keyring, read_key_file, reseal,
};

/// A 32-byte secret key.
pub type Key = Zeroizing<[u8; 32]>;

/// A fresh random key.
pub fn random_key() -> Result<Key> {
    let mut key = Zeroizing::new([0u8; 32]);
    aws_lc_rs::rand::fill(key.as_mut()).map_err(|_| anyhow!("random number generator failed"))?;
    Ok(key)
}

/// Where KEK versions live: what the keyring needs from a key store. A
/// cloud KMS fits the same shape: `create` makes (or names) a key and
/// returns its identifier as the record, and a [`Kek`]'s `seal`/`open` are
/// the KMS's Encrypt/Decrypt with the AAD as encryption context.
pub trait KekProvider: Send + Sync {
    /// What `keys status` calls it.
    fn name(&self) -> String;
    /// Whether a stored record is one this provider made.
    fn owns(&self, record: &[u8]) -> bool;
    /// Makes the KEK of `version`; returns the record the database keeps.
    fn create(&self, version: u32) -> Result<Vec<u8>>;
    /// Opens the record of `version`; fails if the key is missing or is
    /// not the one the record names.
    fn open(&self, version: u32, record: &[u8]) -> Result<Arc<dyn Kek>>;
    /// Destroys what `version` keeps outside the database, once it is
    /// pruned.
    fn destroy(&self, version: u32, record: &[u8]) -> Result<()>;
}

/// One opened KEK version.
pub trait Kek: Send + Sync {
    /// `nonce || AES-256-GCM(key, aad)`.
    fn seal(&self, aad: &[u8], key: &Key) -> Result<Vec<u8>>;
    /// The key inside `sealed`; None on any mismatch.
    fn open(&self, aad: &[u8], sealed: &[u8]) -> Option<Key>;
    /// Where the key is, for `keys status`.
    fn location(&self) -> String;
}

/// Which provider a `keks` record belongs to. A token record starts with
/// [`pkcs11::RECORD_PREFIX`]; anything else is a master-key seal (the only
/// form before providers existed: 12 + 32 + 16 bytes of ciphertext).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RecordKind {
    /// Sealed by the master key.
    MasterSealed,
    /// A key inside a PKCS#11 token.
    Token,
}

impl RecordKind {
    /// The kind of `record`.
    pub fn of(record: &[u8]) -> Self {
        if record.starts_with(pkcs11::RECORD_PREFIX) {
            Self::Token
        } else {
            Self::MasterSealed
        }
    }
}

/// A KEK held in this process's memory (opened from a master-key seal).
struct MemoryKek(Key);

impl Kek for MemoryKek {
    fn seal(&self, aad: &[u8], key: &Key) -> Result<Vec<u8>> {
        seal(&self.0, aad, key.as_ref())
    }

    fn open(&self, aad: &[u8], sealed: &[u8]) -> Option<Key> {
        open(&self.0, aad, sealed)
    }

    fn location(&self) -> String {
        "database, sealed by the master key".into()
    }
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

/// The opened KEK versions, and the providers that make and open them.
pub struct Keyring {
    /// Makes new versions (the configured provider).
    active: Arc<dyn KekProvider>,
    /// Opens versions the active provider does not own: the master key
    /// while a keyring moves into a token.
    fallback: Option<Arc<dyn KekProvider>>,
    keks: RwLock<BTreeMap<u32, Arc<dyn Kek>>>,
}

impl Keyring {
    /// Opens the keyring in `store`, creating version 1 with `active` if
    /// there is none. Fails if any version does not open.
    pub async fn open(
        store: &dyn MetaStore,
        active: Arc<dyn KekProvider>,
        fallback: Option<Arc<dyn KekProvider>>,
    ) -> Result<Self> {
        let keyring = Self {
            active,
            fallback,
            keks: RwLock::new(BTreeMap::new()),
        };
        if store.keks().await?.is_empty() {
            keyring.add_version(store, 1).await?;
        }
        keyring.reload(store).await?;
        Ok(keyring)
    }

    /// The keyring of a master key alone.
    pub async fn with_master_key(store: &dyn MetaStore, master: Key) -> Result<Self> {
        Self::open(store, Arc::new(MasterKeyProvider::new(master)), None).await
    }

    /// Re-reads the versions (another process may have rotated or pruned).
    /// A version already open stays as it is: a KEK never changes.
    pub async fn reload(&self, store: &dyn MetaStore) -> Result<()> {
        let records = store.keks().await?;
        let known = self.keks.read().unwrap_or_else(|p| p.into_inner()).clone();
        let mut opened = BTreeMap::new();
        for (version, record) in records {
            let kek = match known.get(&version) {
                Some(kek) => kek.clone(),
                None => self.provider_of(version, &record)?.open(version, &record)?,
            };
            opened.insert(version, kek);
        }
        *self.keks.write().unwrap_or_else(|p| p.into_inner()) = opened;
        Ok(())
    }

    fn provider_of(&self, version: u32, record: &[u8]) -> Result<&Arc<dyn KekProvider>> {
        std::iter::once(&self.active)
            .chain(self.fallback.as_ref())
            .find(|provider| provider.owns(record))
            .ok_or_else(|| {
                let place = match RecordKind::of(record) {
                    RecordKind::MasterSealed => "is sealed by the master key, which is not available: set COFFER_MASTER_KEY or master_key_file",
                    RecordKind::Token => "is in a PKCS#11 token, which is not configured: set [keyring] provider = \"pkcs11\"",
                };
                anyhow!("KEK version {version} {place}")
            })
    }

    async fn add_version(&self, store: &dyn MetaStore, version: u32) -> Result<()> {
        let record = self.active.create(version)?;
        store
            .insert_kek(version, &record, crate::unix_now())
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

    /// What makes new versions.
    pub fn active_provider(&self) -> String {
        self.active.name()
    }

    /// Where each version's key is.
    pub fn locations(&self) -> BTreeMap<u32, String> {
        let keks = self.keks.read().unwrap_or_else(|p| p.into_inner());
        keks.iter().map(|(v, kek)| (*v, kek.location())).collect()
    }

    fn kek(&self, version: u32) -> Option<Arc<dyn Kek>> {
        let keks = self.keks.read().unwrap_or_else(|p| p.into_inner());
        keks.get(&version).cloned()
    }

    /// Wraps `key` for `usage` under the newest KEK.
    pub fn wrap(&self, key: &Key, usage: KeyUse<'_>) -> Result<WrappedKey> {
        self.wrap_with(self.current_version(), key, usage)
    }

    fn wrap_with(&self, version: u32, key: &Key, usage: KeyUse<'_>) -> Result<WrappedKey> {
        let kek = self
            .kek(version)
            .ok_or_else(|| anyhow!("no KEK version {version}"))?;
        Ok(WrappedKey {
            kek_version: version,
            wrapped: kek.seal(&usage.aad(version), key)?,
        })
    }

    /// Unwraps a key; fails closed on any mismatch (edited, moved, unknown
    /// version).
    pub fn unwrap(&self, wrapped: &WrappedKey, usage: KeyUse<'_>) -> Result<Key> {
        let kek = self
            .kek(wrapped.kek_version)
            .ok_or_else(|| anyhow!("unknown KEK version {}", wrapped.kek_version))?;
        kek.open(&usage.aad(wrapped.kek_version), &wrapped.wrapped)
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
    after_batch: impl FnMut(u64),
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
    rotation.rewrapped = rewrap_to_current(store, keyring, batch, after_batch).await?;
    Ok(rotation)
}

/// Re-wraps every key still under an older version under the newest one,
/// in batches of `batch`; returns how many it re-wrapped.
pub async fn rewrap_to_current(
    store: &dyn MetaStore,
    keyring: &Keyring,
    batch: u32,
    mut after_batch: impl FnMut(u64),
) -> Result<u64> {
    let version = keyring.current_version();
    let mut rewrapped = 0;
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
        rewrapped += store.rewrap(&object_wraps, &upload_wraps).await?;
        after_batch(rewrapped);
    }
    Ok(rewrapped)
}

/// Removes KEK versions below the newest that nothing references, and
/// what their providers keep (a token key); returns the versions removed.
pub async fn prune(store: &dyn MetaStore, keyring: &Keyring) -> Result<Vec<u32>> {
    let usage = store.kek_usage().await?;
    let Some(newest) = usage.last().map(|u| u.version) else {
        return Ok(Vec::new());
    };
    let records: BTreeMap<u32, Vec<u8>> = store.keks().await?.into_iter().collect();
    let mut removed = Vec::new();
    for version in usage.iter().map(|u| u.version).filter(|v| *v < newest) {
        if !store.delete_unused_kek(version).await? {
            continue;
        }
        removed.push(version);
        if let Some(record) = records.get(&version) {
            // The row is gone, so nothing can use the key any more; a key
            // left behind by a failure here is unreachable, not unsafe.
            keyring
                .provider_of(version, record)?
                .destroy(version, record)?;
        }
    }
    keyring.reload(store).await?;
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
