//! `coffer server backup` and `coffer server restore`: a whole server in
//! one file that is itself a coffer file, encrypted to backup identities
//! kept offline and signed by the server's identity.
//!
//! The plaintext inside is a tar archive, written and read as a stream:
//!
//! ```text
//! manifest.json     what this is: format, time, server identity, counts
//! config.toml       as on disk (no environment overrides)
//! server.identity   the server's signing identity
//! tls/…             the certificate, key, client CA and CRLs kept inside the data directory
//! master.key        the master key, when any KEK version is sealed by it
//! meta.db           a consistent snapshot of the metadata (SQLite file)
//! objects/<id>      every committed object, unless left out (--without-objects)
//! ```
//!
//! Why one encrypted stream: a backup usually ends up somewhere less
//! guarded than the server (a NAS, a bucket, a tape). Whoever holds it
//! without a backup identity learns nothing but its size; with the master
//! key inside, the backup alone restores the server-encrypted files. KEKs
//! inside a PKCS#11 token are not in it (they cannot leave the token): such
//! a backup needs the token, or the vendor's backup of it.
//!
//! A restore writes nothing where the server will live until the whole
//! stream has been decrypted and its signature checked: it unpacks into a
//! staging directory beside the target, refuses any entry it does not
//! expect (no paths of its own choosing, no links), and only then moves
//! the metadata and objects to the storage the restored configuration
//! names and renames the staging directory into place.

use std::fs;
use std::io::{self, Read, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Component, Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context, Result, anyhow, ensure};
use coffer_format::{EncryptOptions, Header, Identity, Metadata, PublicIdentity, Stanzas};
use serde::{Deserialize, Serialize};
use tokio_util::io::{ReaderStream, StreamReader, SyncIoBridge};

use crate::config::{self, Config};
use crate::data_dir::DataDir;
use crate::keyring::{self, RecordKind};
use crate::objects::ObjectStore;
use crate::store::{Database, MetaStore, SqlStore};

/// What `manifest.json` says.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct Manifest {
    /// `coffer-backup/1`.
    pub format: String,
    /// Unix time of the snapshot.
    pub created_at: i64,
    /// The server's public identity (the backup's signer).
    pub server_identity: String,
    /// Committed files in the snapshot.
    pub files: u64,
    /// Objects in the archive (0 with `--without-objects`).
    pub objects: u64,
    /// Whether the master key is inside.
    pub master_key: bool,
    /// KEK versions kept in a PKCS#11 token, so not inside.
    pub token_versions: Vec<u32>,
}

const FORMAT: &str = "coffer-backup/1";
const MANIFEST: &str = "manifest.json";
const MAX_SMALL_ENTRY: u64 = 1 << 20;

/// What [`backup`] wrote.
#[derive(Debug)]
pub struct BackupReport {
    /// The manifest inside.
    pub manifest: Manifest,
    /// Objects the snapshot names that the object store no longer held
    /// (deleted between the snapshot and their copy).
    pub missing_objects: u64,
    /// Size of the backup file.
    pub bytes: u64,
}

/// Writes a backup of `data` to `to` (which must not exist), encrypted to
/// `recipients`; objects too unless `with_objects` is false.
pub async fn backup(
    data: &DataDir,
    to: &Path,
    recipients: &[PublicIdentity],
    with_objects: bool,
) -> Result<BackupReport> {
    ensure!(!recipients.is_empty(), "no backup recipients: give -r");
    ensure!(!to.exists(), "{} exists; choose another name", to.display());
    let work = Staging::create(&sibling(to, ".snapshot"))?;
    let snapshot = work.path.join("meta.db");
    let store = data.store().await?;
    store
        .snapshot_into(&snapshot, crate::migrate::TABLES)
        .await
        .context("taking a snapshot of the metadata failed")?;
    let copy = SqlStore::open_sqlite(&snapshot).await?;
    let records = copy.keks().await?;
    let token_versions: Vec<u32> = records
        .iter()
        .filter(|(_, r)| RecordKind::of(r) == RecordKind::Token)
        .map(|(v, _)| *v)
        .collect();
    let master = if records.len() > token_versions.len() {
        Some(keyring::load_master_key(
            &data.path(&data.config.master_key_file),
        )?)
    } else {
        None
    };
    let objects: Vec<(String, u64)> = copy
        .stored_objects()
        .await?
        .into_iter()
        .map(|(file, size, _)| (file.id, size))
        .collect();
    copy.close().await;
    let manifest = Manifest {
        format: FORMAT.into(),
        created_at: crate::unix_now(),
        server_identity: data.identity.public().to_string(),
        files: objects.len() as u64,
        objects: if with_objects {
            objects.len() as u64
        } else {
            0
        },
        master_key: master.is_some(),
        token_versions,
    };
    let plan = ArchivePlan {
        root: data.root.clone(),
        config: data.config.clone(),
        manifest: manifest.clone(),
        snapshot,
        master: master.map(|key| keyring::encode_key(&key)),
        objects: if with_objects { objects } else { Vec::new() },
        store: data.objects().await?,
        recipients: recipients.to_vec(),
        to: to.to_path_buf(),
    };
    let handle = tokio::runtime::Handle::current();
    let (bytes, missing_objects) = tokio::task::spawn_blocking(move || plan.write(&handle))
        .await
        .map_err(|e| anyhow!("the backup writer stopped: {e}"))??;
    drop(work);
    Ok(BackupReport {
        manifest,
        missing_objects,
        bytes,
    })
}

/// Everything the blocking archive writer needs, owned.
struct ArchivePlan {
    root: PathBuf,
    config: Config,
    manifest: Manifest,
    snapshot: PathBuf,
    master: Option<zeroize::Zeroizing<String>>,
    objects: Vec<(String, u64)>,
    store: Arc<dyn ObjectStore>,
    recipients: Vec<PublicIdentity>,
    to: PathBuf,
}

impl ArchivePlan {
    /// Writes `to` through a temporary file, synced before it is renamed
    /// into place; returns its size and how many objects were gone.
    fn write(self, handle: &tokio::runtime::Handle) -> Result<(u64, u64)> {
        let temp = sibling(&self.to, ".partial");
        let file = fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&temp)
            .with_context(|| format!("cannot create {}", temp.display()))?;
        let result = self.write_into(file, handle);
        match result {
            Ok((file, missing)) => {
                file.sync_all()?;
                let bytes = file.metadata()?.len();
                fs::rename(&temp, &self.to)?;
                Ok((bytes, missing))
            }
            Err(err) => {
                let _ = fs::remove_file(&temp);
                Err(err)
            }
        }
    }

    fn write_into(
        &self,
        file: fs::File,
        handle: &tokio::runtime::Handle,
    ) -> Result<(fs::File, u64)> {
        let text = zeroize::Zeroizing::new(fs::read_to_string(self.root.join("server.identity"))?);
        let signer = Identity::from_file_string(&text, None).context("server.identity")?;
        let mut options = EncryptOptions::new(&self.recipients, &signer);
        options.metadata = Metadata {
            name: Some("coffer-backup.tar".into()),
            ..Metadata::default()
        };
        let writer =
            coffer_format::prepare(options)?.writer(io::BufWriter::new(file), Stanzas::Embedded)?;
        let mut tar = tar::Builder::new(writer);
        append_bytes(
            &mut tar,
            MANIFEST,
            &serde_json::to_vec_pretty(&self.manifest)?,
        )?;
        append_file(&mut tar, "config.toml", &self.root.join(config::FILE_NAME))?;
        append_file(
            &mut tar,
            "server.identity",
            &self.root.join("server.identity"),
        )?;
        for path in self.tls_files() {
            let name = format!(
                "tls/{}",
                path.file_name().unwrap_or_default().to_string_lossy()
            );
            append_file(&mut tar, &name, &self.root.join(&path))?;
        }
        if let Some(master) = &self.master {
            append_bytes(&mut tar, "master.key", master.as_bytes())?;
        }
        append_file(&mut tar, "meta.db", &self.snapshot)?;
        let mut missing = 0;
        for (id, size) in &self.objects {
            let stream = match handle.block_on(self.store.read(id, 0, *size)) {
                Ok(stream) => stream,
                Err(err) if err.kind() == io::ErrorKind::NotFound => {
                    missing += 1;
                    continue;
                }
                Err(err) => return Err(err).with_context(|| format!("reading object {id}")),
            };
            let reader = SyncIoBridge::new_with_handle(StreamReader::new(stream), handle.clone());
            let mut header = entry_header(*size);
            tar.append_data(&mut header, format!("objects/{id}"), reader)
                .with_context(|| format!("object {id} (changed while it was copied?)"))?;
        }
        let (writer, _) = tar.into_inner()?.finish()?;
        let file = writer.into_inner().map_err(|e| e.into_error())?;
        Ok((file, missing))
    }

    /// The TLS files `config.toml` names inside the data directory, as one
    /// level under `tls/` (absolute paths, say an ACME client's, are the
    /// certificate tool's to back up).
    fn tls_files(&self) -> Vec<PathBuf> {
        [
            Some(&self.config.tls_cert),
            Some(&self.config.tls_key),
            self.config.client_ca.as_ref(),
            self.config.client_crl.as_ref(),
        ]
        .into_iter()
        .flatten()
        .filter(|p| tls_entry(p).is_some())
        .cloned()
        .collect()
    }
}

/// `tls/<name>` as a relative path of exactly that form.
fn tls_entry(path: &Path) -> Option<&str> {
    let mut parts = path.components();
    match (parts.next(), parts.next(), parts.next()) {
        (Some(Component::Normal(dir)), Some(Component::Normal(name)), None) if dir == "tls" => {
            name.to_str()
        }
        _ => None,
    }
}

fn entry_header(size: u64) -> tar::Header {
    let mut header = tar::Header::new_gnu();
    header.set_size(size);
    header.set_mode(0o600);
    header.set_entry_type(tar::EntryType::Regular);
    header
}

fn append_bytes<W: Write>(tar: &mut tar::Builder<W>, name: &str, bytes: &[u8]) -> Result<()> {
    tar.append_data(&mut entry_header(bytes.len() as u64), name, bytes)?;
    Ok(())
}

fn append_file<W: Write>(tar: &mut tar::Builder<W>, name: &str, path: &Path) -> Result<()> {
    let file = fs::File::open(path).with_context(|| format!("cannot read {}", path.display()))?;
    let len = file.metadata()?.len();
    tar.append_data(&mut entry_header(len), name, file.take(len))
        .with_context(|| format!("{} changed while it was copied", path.display()))?;
    Ok(())
}

/// `path` with `suffix` added to its file name.
fn sibling(path: &Path, suffix: &str) -> PathBuf {
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(suffix);
    path.with_file_name(name)
}

/// A private directory removed when dropped (unless kept).
struct Staging {
    path: PathBuf,
    keep: bool,
}

impl Staging {
    fn create(path: &Path) -> Result<Self> {
        fs::DirBuilder::new()
            .mode(0o700)
            .create(path)
            .with_context(|| {
                format!(
                    "cannot create {} (left by an earlier run? remove it)",
                    path.display()
                )
            })?;
        Ok(Self {
            path: path.to_path_buf(),
            keep: false,
        })
    }
}

impl Drop for Staging {
    fn drop(&mut self) {
        if !self.keep {
            let _ = fs::remove_dir_all(&self.path);
        }
    }
}

/// What [`restore`] brought back.
#[derive(Debug)]
pub struct RestoreReport {
    /// The manifest of the backup.
    pub manifest: Manifest,
    /// Objects written to the object store.
    pub objects: u64,
    /// Where the master key was written, if the backup held one.
    pub master_key_file: Option<PathBuf>,
}

/// Restores the backup `from` into the new data directory `into`, opening
/// it with `identity`. The signer must be the server identity inside (and
/// `expect_server`, when given). The metadata and objects go to the
/// storage the restored `config.toml` names (with the environment's
/// overrides, e.g. `COFFER_DATABASE`): a PostgreSQL database must be empty.
/// The master key is written where the configuration says (relative to
/// `into`), which must be free.
pub async fn restore(
    from: &Path,
    identity: Identity,
    into: &Path,
    expect_server: Option<PublicIdentity>,
) -> Result<RestoreReport> {
    ensure!(
        !into.exists() || fs::read_dir(into)?.next().is_none(),
        "{} exists and is not empty: restore into a new directory",
        into.display()
    );
    let mut staging = Staging::create(&sibling(into, ".restoring"))?;
    let source = from.to_path_buf();
    let dir = staging.path.clone();
    let manifest =
        tokio::task::spawn_blocking(move || unpack(&source, &identity, &dir, expect_server))
            .await
            .map_err(|e| anyhow!("the restore reader stopped: {e}"))??;
    let data = DataDir::open(&staging.path).context("the backup's configuration")?;
    let master_key_file = place_master_key(&staging.path, into, &data)?;
    let objects = restore_objects(&data, &staging.path.join(OBJECTS_DIR)).await?;
    restore_metadata(&data, &staging.path).await?;
    staging.keep = true;
    if into.exists() {
        fs::remove_dir(into)?;
    }
    fs::rename(&staging.path, into)?;
    Ok(RestoreReport {
        manifest,
        objects,
        master_key_file,
    })
}

/// Where the objects wait in the staging directory until they are written
/// to the object store.
const OBJECTS_DIR: &str = "restore-objects";

/// Decrypts and unpacks `from` into `dir`; checks the signer at the end.
fn unpack(
    from: &Path,
    identity: &Identity,
    dir: &Path,
    expect_server: Option<PublicIdentity>,
) -> Result<Manifest> {
    let mut input = io::BufReader::new(
        fs::File::open(from).with_context(|| format!("cannot open {}", from.display()))?,
    );
    let opened = Header::read_from(&mut input)
        .context("not a coffer backup")?
        .open(identity, &[])
        .context("this identity cannot open the backup")?;
    let sender = opened.core().sender.clone();
    let mut archive = tar::Archive::new(opened.decryptor(input)?);
    let mut manifest = None;
    fs::DirBuilder::new().mode(0o700).create(dir.join("tls"))?;
    fs::DirBuilder::new()
        .mode(0o700)
        .create(dir.join(OBJECTS_DIR))?;
    for entry in archive.entries()? {
        let mut entry = entry.context("the backup is damaged")?;
        let name = entry.path()?.to_string_lossy().into_owned();
        let place = entry_place(&name, entry.header().entry_type())?;
        if place == Place::Manifest {
            ensure!(
                entry.size() <= MAX_SMALL_ENTRY,
                "manifest.json is too large"
            );
            let mut text = Vec::new();
            entry.read_to_end(&mut text)?;
            manifest = Some(serde_json::from_slice::<Manifest>(&text).context("manifest.json")?);
            continue;
        }
        let target = dir.join(place.relative(&name));
        let mut out = fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&target)
            .with_context(|| format!("the backup holds {name} twice"))?;
        io::copy(&mut entry, &mut out)?;
        out.sync_all()?;
    }
    // The end of the archive may come before the end of the stream: read
    // to the end so the signature is checked, whatever the archive says.
    let mut decryptor = archive.into_inner();
    io::copy(&mut decryptor, &mut io::sink()).context("the backup is damaged")?;
    ensure!(
        decryptor.verified().is_some(),
        "the backup's signature did not verify"
    );
    let manifest = manifest.ok_or_else(|| anyhow!("the backup has no manifest.json"))?;
    ensure!(
        manifest.format == FORMAT,
        "unknown backup format {:?}",
        manifest.format
    );
    let server =
        PublicIdentity::parse(&manifest.server_identity).context("manifest server identity")?;
    ensure!(
        sender.is(&server),
        "the backup is signed by {}, not by the server it names ({})",
        sender.fingerprint(),
        server.fingerprint()
    );
    if let Some(expected) = expect_server {
        ensure!(
            sender.is(&expected),
            "the backup is signed by {}, not by the expected server {}",
            sender.fingerprint(),
            expected.fingerprint()
        );
    }
    let restored = fs::read_to_string(dir.join("server.identity"))
        .context("the backup has no server.identity")?;
    let restored = Identity::from_file_string(&restored, None).context("server.identity")?;
    ensure!(
        restored.public() == &server,
        "server.identity in the backup is not the server the manifest names"
    );
    Ok(manifest)
}

/// Where an archive entry may go.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Place {
    Manifest,
    Root,
    Tls,
    Object,
}

impl Place {
    fn relative(self, name: &str) -> PathBuf {
        match self {
            Place::Object => Path::new(OBJECTS_DIR).join(name.trim_start_matches("objects/")),
            _ => PathBuf::from(name),
        }
    }
}

/// Accepts exactly the names a backup holds, as regular files; anything
/// else (another path, `..`, a link, a device) fails the restore.
fn entry_place(name: &str, kind: tar::EntryType) -> Result<Place> {
    ensure!(
        kind == tar::EntryType::Regular,
        "unexpected entry {name:?} in the backup (not a file)"
    );
    let place = match name {
        MANIFEST => Some(Place::Manifest),
        "config.toml" | "server.identity" | "master.key" | "meta.db" => Some(Place::Root),
        _ => {
            if let Some(id) = name.strip_prefix("objects/") {
                crate::objects::checked(id).ok().map(|_| Place::Object)
            } else {
                tls_entry(Path::new(name))
                    .filter(|n| !n.starts_with('.'))
                    .map(|_| Place::Tls)
            }
        }
    };
    place.ok_or_else(|| anyhow!("unexpected entry {name:?} in the backup"))
}

fn place_master_key(staging: &Path, into: &Path, data: &DataDir) -> Result<Option<PathBuf>> {
    let unpacked = staging.join("master.key");
    if !unpacked.exists() {
        return Ok(None);
    }
    let target = into.join(&data.config.master_key_file);
    ensure!(
        !target.exists(),
        "{} exists (config.toml's master_key_file): move it away, or restore where it is free",
        target.display()
    );
    let key = keyring::read_key_file(&unpacked)?;
    crate::data_dir::write_private(&target, keyring::encode_key(&key).as_bytes())?;
    fs::remove_file(&unpacked)?;
    Ok(Some(target))
}

/// Writes every unpacked object to the configured object store.
async fn restore_objects(data: &DataDir, unpacked: &Path) -> Result<u64> {
    let store = data.objects().await?;
    let mut written = 0;
    for entry in fs::read_dir(unpacked)? {
        let entry = entry?;
        let id = entry.file_name().to_string_lossy().into_owned();
        let file = tokio::fs::File::open(entry.path()).await?;
        store
            .write_object(&id, Box::pin(ReaderStream::with_capacity(file, 1 << 20)))
            .await
            .with_context(|| format!("writing object {id}"))?;
        fs::remove_file(entry.path())?;
        written += 1;
    }
    fs::remove_dir(unpacked)?;
    Ok(written)
}

/// Puts the snapshot where the configuration's database is: the SQLite
/// file itself, or its rows into an empty PostgreSQL database.
async fn restore_metadata(data: &DataDir, staging: &Path) -> Result<()> {
    let snapshot = staging.join("meta.db");
    let copy = SqlStore::open_sqlite(&snapshot).await?;
    // Unfinished uploads' staged bytes are not in a backup.
    copy.drop_unfinished_uploads().await?;
    match data.database() {
        Database::Sqlite(path) if path == snapshot => {
            copy.close().await;
        }
        Database::Sqlite(path) => {
            copy.close().await;
            ensure!(
                !path.exists(),
                "{} exists: the database must be new",
                path.display()
            );
            fs::rename(&snapshot, &path)
                .or_else(|_| fs::copy(&snapshot, &path).map(|_| ()))
                .with_context(|| format!("cannot move the database to {}", path.display()))?;
            let _ = fs::remove_file(&snapshot);
        }
        Database::Postgres(_) => {
            let dest = data.store().await?;
            ensure!(
                dest.list_users().await?.is_empty() && dest.keks().await?.is_empty(),
                "the PostgreSQL database is not empty: restore into a new one"
            );
            for table in crate::migrate::TABLES {
                copy.copy_table_to(&dest, table)
                    .await
                    .with_context(|| format!("copying table {}", table.name))?;
            }
            copy.close().await;
            fs::remove_file(&snapshot)?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_names_a_backup_holds_are_accepted() {
        let file = tar::EntryType::Regular;
        for good in [
            "manifest.json",
            "config.toml",
            "server.identity",
            "master.key",
            "meta.db",
            "tls/cert.pem",
            "objects/0123456789abcdef",
        ] {
            assert!(entry_place(good, file).is_ok(), "{good}");
        }
        for bad in [
            "../evil",
            "/etc/passwd",
            "objects/../../evil",
            "objects/NOTHEX00",
            "objects/",
            "tls/../config.toml",
            "tls/a/b",
            "tls/.hidden",
            "meta.db/x",
            "./meta.db",
            "uploads/abc",
        ] {
            assert!(entry_place(bad, file).is_err(), "{bad} accepted");
        }
        for kind in [
            tar::EntryType::Symlink,
            tar::EntryType::Link,
            tar::EntryType::Directory,
        ] {
            assert!(entry_place("meta.db", kind).is_err(), "{kind:?} accepted");
        }
    }

    /// A correctly encrypted and signed archive whose entry climbs out of
    /// the staging directory is refused before anything is written there.
    #[test]
    fn a_signed_backup_with_a_traversal_name_writes_nothing_outside() {
        let dir = tempfile::tempdir().unwrap();
        let identity = Identity::generate().unwrap();
        let mut tar = tar::Builder::new(Vec::new());
        let mut header = entry_header(4);
        let name = b"../evil";
        header.as_old_mut().name[..name.len()].copy_from_slice(name);
        header.set_cksum();
        tar.append(&header, &b"evil"[..]).unwrap();
        let plain = tar.into_inner().unwrap();
        let me = [identity.public().clone()];
        let (backup, _) = coffer_format::encrypt(
            EncryptOptions::new(&me, &identity),
            &mut plain.as_slice(),
            Vec::new(),
        )
        .unwrap();
        let file = dir.path().join("backup.coffer");
        fs::write(&file, backup).unwrap();
        let staging = dir.path().join("stage");
        fs::create_dir(&staging).unwrap();
        let err = unpack(&file, &identity, &staging, None).unwrap_err();
        assert!(format!("{err:#}").contains("unexpected entry"), "{err:#}");
        assert!(!dir.path().join("evil").exists());
    }
}
