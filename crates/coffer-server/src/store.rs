//! Metadata storage behind a trait, so that PostgreSQL can slot in beside the
//! embedded SQLite without touching the handlers. Each method is one atomic
//! operation; in particular [`MetaStore::take_challenge`] deletes the nonce
//! in the same statement that reads it, so two requests racing to use one
//! nonce cannot both succeed.

use std::future::Future;
use std::path::Path;
use std::pin::Pin;
use std::time::Duration;

use sqlx::Row;
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous,
};

/// Errors from the metadata store.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// A row that must be unique already exists.
    #[error("{0} already exists")]
    Conflict(&'static str),
    /// The database failed.
    #[error("database error: {0}")]
    Database(#[from] sqlx::Error),
    /// Migrations failed.
    #[error("database migration failed: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
}

/// Boxed future returned by [`MetaStore`] methods (object-safe async).
pub type StoreFuture<'a, T> = Pin<Box<dyn Future<Output = Result<T, StoreError>> + Send + 'a>>;

/// A registered user.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct User {
    /// Login name.
    pub name: String,
    /// The user's `coffer1…` public identity.
    pub public_identity: String,
    /// May administer the server.
    pub is_admin: bool,
    /// Storage quota in bytes, if limited.
    pub quota_bytes: Option<u64>,
    /// Disabled users cannot log in and their tokens stop working.
    pub disabled: bool,
}

/// An upload in progress.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Upload {
    /// Random id (also the staged object's name).
    pub id: String,
    /// Owning user.
    pub owner: String,
    /// Declared total length.
    pub length: u64,
    /// Bytes durably received.
    pub offset: u64,
    /// The tus `Upload-Metadata` header as sent.
    pub metadata: String,
    /// Unix time after which the upload is abandoned.
    pub expires_at: i64,
    /// Length of the staged file at `offset` (differs from `offset` when the
    /// server encrypts the staged bytes).
    pub staged_len: u64,
    /// For uploads the server encrypts: the staging key wrapped by a KEK.
    pub staging_key: Option<WrappedKey>,
}

/// A key wrapped by a KEK version.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WrappedKey {
    /// KEK version that wraps it.
    pub kek_version: u32,
    /// Nonce, ciphertext and tag.
    pub wrapped: Vec<u8>,
}

/// The DEK of a server-encrypted file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ObjectKey {
    /// The file.
    pub file_id: String,
    /// The DEK, wrapped.
    pub key: WrappedKey,
    /// Size of the stored (encrypted) object.
    pub stored_size: u64,
}

/// How many keys a KEK version wraps.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KekUsage {
    /// Version.
    pub version: u32,
    /// Unix time it was added.
    pub created_at: i64,
    /// File DEKs it wraps.
    pub objects: u64,
    /// Staging keys of unfinished uploads it wraps.
    pub uploads: u64,
}

/// A committed file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FileRecord {
    /// Random id (also the object's name).
    pub id: String,
    /// Owning user.
    pub owner: String,
    /// Size in bytes.
    pub size: u64,
    /// SHA-256 of the stored bytes.
    pub sha256: Vec<u8>,
    /// Unix time of the commit.
    pub created_at: i64,
    /// The signed receipt (JSON).
    pub receipt: String,
}

/// An anonymous share link.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Link {
    /// Random id (in the link's URL path).
    pub id: String,
    /// The file it opens.
    pub file_id: String,
    /// Key wrap for the link's key, which the server cannot derive.
    pub stanza: Vec<u8>,
    /// Unix time of creation.
    pub created_at: i64,
    /// Unix time after which it can no longer be opened.
    pub expires_at: i64,
    /// How many times it may be opened, if limited.
    pub max_downloads: Option<u64>,
    /// How many times it has been opened.
    pub downloads: u64,
    /// Argon2id PHC string of the password verifier, if one is required.
    pub password_hash: Option<String>,
    /// Opaque salt for the opener's client-side key derivation.
    pub client_salt: Option<Vec<u8>>,
    /// Wrong passwords so far.
    pub failed_attempts: u32,
}

/// One audit log entry as stored.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AuditRow {
    /// Position in the chain, from 1.
    pub seq: i64,
    /// Unix time.
    pub time: i64,
    /// Who acted: a user name, `-` for anonymous, `admin` for the CLI.
    pub actor: String,
    /// Client address, or empty.
    pub ip: String,
    /// What was done (`login`, `upload`, …).
    pub action: String,
    /// What it was done to (file id, user, link id), or empty.
    pub target: String,
    /// `ok`, `failed` or `refused`.
    pub outcome: String,
    /// Small free-form detail (never secrets).
    pub detail: String,
    /// Hash of the previous entry (zeros for the first).
    pub prev_hash: Vec<u8>,
    /// Hash of this entry.
    pub hash: Vec<u8>,
}

/// A signed head of the audit chain.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AuditCheckpoint {
    /// Sequence number of the entry it covers.
    pub seq: i64,
    /// That entry's hash.
    pub hash: Vec<u8>,
    /// Unix time of signing.
    pub time: i64,
    /// Ed25519 signature by the server identity.
    pub signature: Vec<u8>,
}

/// Bytes stored and uploads open for one user.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Usage {
    /// Sum of committed file sizes.
    pub stored_bytes: u64,
    /// Sum of declared lengths of unfinished uploads.
    pub reserved_bytes: u64,
    /// Unfinished uploads.
    pub open_uploads: u64,
}

/// A key wrap to store with a committed upload: (user, stanza bytes).
pub type NewWrap = (String, Vec<u8>);

/// Everything the server keeps about users and sessions.
pub trait MetaStore: Send + Sync + 'static {
    /// Registers a user; fails with `Conflict` if the name is taken.
    fn add_user<'a>(&'a self, user: &'a User, now: i64) -> StoreFuture<'a, ()>;
    /// All users, by name.
    fn list_users(&self) -> StoreFuture<'_, Vec<User>>;
    /// One user by name.
    fn user<'a>(&'a self, name: &'a str) -> StoreFuture<'a, Option<User>>;
    /// Disables or enables a user; returns false if there is no such user.
    fn set_disabled<'a>(&'a self, name: &'a str, disabled: bool) -> StoreFuture<'a, bool>;
    /// Stores a login challenge (and drops expired ones).
    fn put_challenge<'a>(
        &'a self,
        nonce: &'a [u8],
        user: &'a str,
        expires_at: i64,
        now: i64,
    ) -> StoreFuture<'a, ()>;
    /// Atomically removes a challenge and returns its user and expiry.
    fn take_challenge<'a>(&'a self, nonce: &'a [u8]) -> StoreFuture<'a, Option<(String, i64)>>;
    /// Stores a token hash.
    fn put_token<'a>(
        &'a self,
        hash: &'a [u8],
        user: &'a str,
        expires_at: i64,
    ) -> StoreFuture<'a, ()>;
    /// The enabled user owning an unexpired token hash.
    fn token_user<'a>(&'a self, hash: &'a [u8], now: i64) -> StoreFuture<'a, Option<User>>;
    /// Revokes a token; returns whether it existed.
    fn revoke_token<'a>(&'a self, hash: &'a [u8]) -> StoreFuture<'a, bool>;
    /// Records a new upload.
    fn create_upload<'a>(&'a self, upload: &'a Upload) -> StoreFuture<'a, ()>;
    /// One upload by id.
    fn upload<'a>(&'a self, id: &'a str) -> StoreFuture<'a, Option<Upload>>;
    /// Moves an upload's offset from `from` to `to` and its staged length to
    /// `staged_len`; false if it was not at `from` any more (another writer
    /// got there first).
    fn advance_upload<'a>(
        &'a self,
        id: &'a str,
        from: u64,
        to: u64,
        staged_len: u64,
    ) -> StoreFuture<'a, bool>;
    /// Forgets an upload; returns whether it existed.
    fn delete_upload<'a>(&'a self, id: &'a str) -> StoreFuture<'a, bool>;
    /// Uploads abandoned before `now`.
    fn expired_uploads(&self, now: i64) -> StoreFuture<'_, Vec<String>>;
    /// In one transaction: records the file with its key wraps and forgets
    /// the upload.
    fn commit_upload<'a>(
        &'a self,
        upload_id: &'a str,
        file: &'a FileRecord,
        wraps: &'a [NewWrap],
        object_key: Option<&'a ObjectKey>,
    ) -> StoreFuture<'a, ()>;
    /// One file by id.
    fn file<'a>(&'a self, id: &'a str) -> StoreFuture<'a, Option<FileRecord>>;
    /// Files owned by `owner`, newest first.
    fn list_files<'a>(&'a self, owner: &'a str) -> StoreFuture<'a, Vec<FileRecord>>;
    /// Deletes a file row (and its wraps); returns whether it existed.
    fn delete_file<'a>(&'a self, id: &'a str) -> StoreFuture<'a, bool>;
    /// Stores (or replaces) `user`'s key wrap for a file: the share.
    fn put_wrap<'a>(
        &'a self,
        file_id: &'a str,
        user: &'a str,
        stanza: &'a [u8],
        now: i64,
    ) -> StoreFuture<'a, ()>;
    /// `user`'s key wrap for a file, if shared with them.
    fn wrap<'a>(&'a self, file_id: &'a str, user: &'a str) -> StoreFuture<'a, Option<Vec<u8>>>;
    /// Removes a share; returns whether it existed.
    fn delete_wrap<'a>(&'a self, file_id: &'a str, user: &'a str) -> StoreFuture<'a, bool>;
    /// Users holding a wrap for a file.
    fn wrap_users<'a>(&'a self, file_id: &'a str) -> StoreFuture<'a, Vec<String>>;
    /// Files others shared with `user`.
    fn shared_with<'a>(&'a self, user: &'a str) -> StoreFuture<'a, Vec<FileRecord>>;
    /// Records a new link.
    fn create_link<'a>(&'a self, link: &'a Link) -> StoreFuture<'a, ()>;
    /// One link by id.
    fn link<'a>(&'a self, id: &'a str) -> StoreFuture<'a, Option<Link>>;
    /// The links of a file, newest first.
    fn file_links<'a>(&'a self, file_id: &'a str) -> StoreFuture<'a, Vec<Link>>;
    /// Deletes a link and its tickets; returns whether it existed.
    fn delete_link<'a>(&'a self, id: &'a str) -> StoreFuture<'a, bool>;
    /// Counts a wrong password; returns the new count.
    fn link_failed_attempt<'a>(&'a self, id: &'a str) -> StoreFuture<'a, u32>;
    /// Spends one download of a link, atomically: false if it is expired,
    /// exhausted or locked by `max_failures` wrong passwords (so two openers
    /// racing for the last download cannot both win).
    fn spend_link_download<'a>(
        &'a self,
        id: &'a str,
        now: i64,
        max_failures: u32,
    ) -> StoreFuture<'a, bool>;
    /// Stores a download ticket (hash) for a link.
    fn put_link_ticket<'a>(
        &'a self,
        hash: &'a [u8],
        link_id: &'a str,
        expires_at: i64,
    ) -> StoreFuture<'a, ()>;
    /// The link an unexpired ticket hash belongs to.
    fn ticket_link<'a>(&'a self, hash: &'a [u8], now: i64) -> StoreFuture<'a, Option<Link>>;
    /// Removes expired tickets, and expired links no ticket still uses;
    /// returns the number of links removed.
    fn sweep_links(&self, now: i64) -> StoreFuture<'_, u64>;
    /// Storage used by `user`.
    fn usage<'a>(&'a self, user: &'a str) -> StoreFuture<'a, Usage>;
    /// The last audit entry's sequence number and hash.
    fn audit_head(&self) -> StoreFuture<'_, Option<(i64, Vec<u8>)>>;
    /// Appends an audit entry; `Conflict` if its `seq` is taken (another
    /// writer appended first: re-read the head and retry).
    fn insert_audit<'a>(&'a self, row: &'a AuditRow) -> StoreFuture<'a, ()>;
    /// Up to `limit` audit entries with `seq > after`, in order.
    fn audit_entries(&self, after: i64, limit: u32) -> StoreFuture<'_, Vec<AuditRow>>;
    /// Stores a signed head.
    fn insert_audit_checkpoint<'a>(&'a self, cp: &'a AuditCheckpoint) -> StoreFuture<'a, ()>;
    /// All signed heads, by sequence number.
    fn audit_checkpoints(&self) -> StoreFuture<'_, Vec<AuditCheckpoint>>;
    /// Every KEK version with its sealed key, by version.
    fn keks(&self) -> StoreFuture<'_, Vec<(u32, Vec<u8>)>>;
    /// Adds a KEK version; `Conflict` if it exists.
    fn insert_kek<'a>(&'a self, version: u32, sealed: &'a [u8], now: i64) -> StoreFuture<'a, ()>;
    /// The DEK of a server-encrypted file.
    fn object_key<'a>(&'a self, file_id: &'a str) -> StoreFuture<'a, Option<ObjectKey>>;
    /// Up to `limit` file DEKs wrapped under a version below `version`.
    fn stale_object_keys(&self, version: u32, limit: u32) -> StoreFuture<'_, Vec<ObjectKey>>;
    /// Up to `limit` (upload id, staging key) under a version below `version`.
    fn stale_upload_keys(
        &self,
        version: u32,
        limit: u32,
    ) -> StoreFuture<'_, Vec<(String, WrappedKey)>>;
    /// In one transaction, replaces wraps (files and uploads) whose stored
    /// version still equals the old one; returns how many were replaced.
    fn rewrap<'a>(
        &'a self,
        objects: &'a [(String, WrappedKey, WrappedKey)],
        uploads: &'a [(String, WrappedKey, WrappedKey)],
    ) -> StoreFuture<'a, u64>;
    /// Each KEK version with the number of keys it wraps.
    fn kek_usage(&self) -> StoreFuture<'_, Vec<KekUsage>>;
    /// Deletes a KEK version if nothing references it; returns whether it did.
    fn delete_unused_kek(&self, version: u32) -> StoreFuture<'_, bool>;
}

/// The embedded default: SQLite in WAL mode.
pub struct SqliteStore {
    pool: SqlitePool,
}

impl SqliteStore {
    /// Opens (creating if needed) the database at `path` and migrates it.
    pub async fn open(path: &Path) -> Result<Self, StoreError> {
        let options = SqliteConnectOptions::new()
            .filename(path)
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Full)
            .foreign_keys(true)
            .busy_timeout(Duration::from_secs(5));
        let pool = SqlitePoolOptions::new()
            .max_connections(8)
            .connect_with(options)
            .await?;
        sqlx::migrate!("./migrations/sqlite").run(&pool).await?;
        Ok(Self { pool })
    }
}

/// Maps one row to a record.
type RowMap<T> = fn(&sqlx::sqlite::SqliteRow) -> Result<T, sqlx::Error>;

/// The shapes most lookups share: one statement with a single text key.
impl SqliteStore {
    /// The row `sql` finds for `key`, if any.
    async fn row_by<T>(
        &self,
        sql: &'static str,
        key: &str,
        map: RowMap<T>,
    ) -> Result<Option<T>, StoreError> {
        let row = sqlx::query(sql)
            .bind(key)
            .fetch_optional(&self.pool)
            .await?;
        Ok(row.as_ref().map(map).transpose()?)
    }

    /// Every row `sql` finds for `key`, in the statement's order.
    async fn rows_by<T>(
        &self,
        sql: &'static str,
        key: &str,
        map: RowMap<T>,
    ) -> Result<Vec<T>, StoreError> {
        let rows = sqlx::query(sql).bind(key).fetch_all(&self.pool).await?;
        Ok(rows.iter().map(map).collect::<Result<_, _>>()?)
    }

    /// Runs a keyed `DELETE`; whether it removed a row.
    async fn delete_by(&self, sql: &'static str, key: &str) -> Result<bool, StoreError> {
        let done = sqlx::query(sql).bind(key).execute(&self.pool).await?;
        Ok(done.rows_affected() == 1)
    }
}

fn user_from_row(row: &sqlx::sqlite::SqliteRow) -> Result<User, sqlx::Error> {
    Ok(User {
        name: row.try_get("name")?,
        public_identity: row.try_get("public_identity")?,
        is_admin: row.try_get::<i64, _>("is_admin")? != 0,
        quota_bytes: row
            .try_get::<Option<i64>, _>("quota_bytes")?
            .map(|q| q.max(0) as u64),
        disabled: row.try_get::<i64, _>("disabled")? != 0,
    })
}

fn upload_from_row(row: &sqlx::sqlite::SqliteRow) -> Result<Upload, sqlx::Error> {
    Ok(Upload {
        id: row.try_get("id")?,
        owner: row.try_get("owner")?,
        length: row.try_get::<i64, _>("length")?.max(0) as u64,
        offset: row.try_get::<i64, _>("offset")?.max(0) as u64,
        metadata: row.try_get("metadata")?,
        expires_at: row.try_get("expires_at")?,
        staged_len: row.try_get::<i64, _>("staged_len")?.max(0) as u64,
        staging_key: wrapped_from(row.try_get("kek_version")?, row.try_get("staging_key")?),
    })
}

fn wrapped_from(version: Option<i64>, wrapped: Option<Vec<u8>>) -> Option<WrappedKey> {
    Some(WrappedKey {
        kek_version: u32::try_from(version?).ok()?,
        wrapped: wrapped?,
    })
}

fn file_from_row(row: &sqlx::sqlite::SqliteRow) -> Result<FileRecord, sqlx::Error> {
    Ok(FileRecord {
        id: row.try_get("id")?,
        owner: row.try_get("owner")?,
        size: row.try_get::<i64, _>("size")?.max(0) as u64,
        sha256: row.try_get("sha256")?,
        created_at: row.try_get("created_at")?,
        receipt: row.try_get("receipt")?,
    })
}

fn link_from_row(row: &sqlx::sqlite::SqliteRow) -> Result<Link, sqlx::Error> {
    Ok(Link {
        id: row.try_get("id")?,
        file_id: row.try_get("file_id")?,
        stanza: row.try_get("stanza")?,
        created_at: row.try_get("created_at")?,
        expires_at: row.try_get("expires_at")?,
        max_downloads: row
            .try_get::<Option<i64>, _>("max_downloads")?
            .map(|n| n.max(0) as u64),
        downloads: row.try_get::<i64, _>("downloads")?.max(0) as u64,
        password_hash: row.try_get("password_hash")?,
        client_salt: row.try_get("client_salt")?,
        failed_attempts: row
            .try_get::<i64, _>("failed_attempts")?
            .clamp(0, i64::from(u32::MAX)) as u32,
    })
}

fn audit_from_row(row: &sqlx::sqlite::SqliteRow) -> Result<AuditRow, sqlx::Error> {
    Ok(AuditRow {
        seq: row.try_get("seq")?,
        time: row.try_get("time")?,
        actor: row.try_get("actor")?,
        ip: row.try_get("ip")?,
        action: row.try_get("action")?,
        target: row.try_get("target")?,
        outcome: row.try_get("outcome")?,
        detail: row.try_get("detail")?,
        prev_hash: row.try_get("prev_hash")?,
        hash: row.try_get("hash")?,
    })
}

fn object_key_from_row(row: &sqlx::sqlite::SqliteRow) -> Result<ObjectKey, sqlx::Error> {
    Ok(ObjectKey {
        file_id: row.try_get("file_id")?,
        key: WrappedKey {
            kek_version: u32::try_from(row.try_get::<i64, _>("kek_version")?).unwrap_or(0),
            wrapped: row.try_get("wrapped")?,
        },
        stored_size: row.try_get::<i64, _>("stored_size")?.max(0) as u64,
    })
}

fn sql_u64(value: u64) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}

impl MetaStore for SqliteStore {
    fn add_user<'a>(&'a self, user: &'a User, now: i64) -> StoreFuture<'a, ()> {
        Box::pin(async move {
            let result = sqlx::query(
                "INSERT INTO users (name, public_identity, is_admin, quota_bytes, disabled, created_at) VALUES (?, ?, ?, ?, ?, ?)",
            )
            .bind(&user.name)
            .bind(&user.public_identity)
            .bind(i64::from(user.is_admin))
            .bind(user.quota_bytes.map(|q| i64::try_from(q).unwrap_or(i64::MAX)))
            .bind(i64::from(user.disabled))
            .bind(now)
            .execute(&self.pool)
            .await;
            match result {
                Err(sqlx::Error::Database(err)) if err.is_unique_violation() => {
                    Err(StoreError::Conflict("user"))
                }
                other => other.map(|_| ()).map_err(StoreError::from),
            }
        })
    }

    fn list_users(&self) -> StoreFuture<'_, Vec<User>> {
        Box::pin(async move {
            let rows = sqlx::query("SELECT * FROM users ORDER BY name")
                .fetch_all(&self.pool)
                .await?;
            Ok(rows.iter().map(user_from_row).collect::<Result<_, _>>()?)
        })
    }

    fn user<'a>(&'a self, name: &'a str) -> StoreFuture<'a, Option<User>> {
        Box::pin(self.row_by("SELECT * FROM users WHERE name = ?", name, user_from_row))
    }

    fn set_disabled<'a>(&'a self, name: &'a str, disabled: bool) -> StoreFuture<'a, bool> {
        Box::pin(async move {
            let done = sqlx::query("UPDATE users SET disabled = ? WHERE name = ?")
                .bind(i64::from(disabled))
                .bind(name)
                .execute(&self.pool)
                .await?;
            Ok(done.rows_affected() == 1)
        })
    }

    fn put_challenge<'a>(
        &'a self,
        nonce: &'a [u8],
        user: &'a str,
        expires_at: i64,
        now: i64,
    ) -> StoreFuture<'a, ()> {
        Box::pin(async move {
            sqlx::query("DELETE FROM challenges WHERE expires_at < ?")
                .bind(now)
                .execute(&self.pool)
                .await?;
            sqlx::query("INSERT INTO challenges (nonce, user_name, expires_at) VALUES (?, ?, ?)")
                .bind(nonce)
                .bind(user)
                .bind(expires_at)
                .execute(&self.pool)
                .await?;
            Ok(())
        })
    }

    fn take_challenge<'a>(&'a self, nonce: &'a [u8]) -> StoreFuture<'a, Option<(String, i64)>> {
        Box::pin(async move {
            let row = sqlx::query(
                "DELETE FROM challenges WHERE nonce = ? RETURNING user_name, expires_at",
            )
            .bind(nonce)
            .fetch_optional(&self.pool)
            .await?;
            Ok(row.map(|r| (r.get("user_name"), r.get("expires_at"))))
        })
    }

    fn put_token<'a>(
        &'a self,
        hash: &'a [u8],
        user: &'a str,
        expires_at: i64,
    ) -> StoreFuture<'a, ()> {
        Box::pin(async move {
            sqlx::query("INSERT INTO tokens (token_hash, user_name, expires_at) VALUES (?, ?, ?)")
                .bind(hash)
                .bind(user)
                .bind(expires_at)
                .execute(&self.pool)
                .await?;
            Ok(())
        })
    }

    fn token_user<'a>(&'a self, hash: &'a [u8], now: i64) -> StoreFuture<'a, Option<User>> {
        Box::pin(async move {
            let row = sqlx::query(
                "SELECT u.* FROM tokens t JOIN users u ON u.name = t.user_name WHERE t.token_hash = ? AND t.expires_at > ? AND u.disabled = 0",
            )
            .bind(hash)
            .bind(now)
            .fetch_optional(&self.pool)
            .await?;
            Ok(row.as_ref().map(user_from_row).transpose()?)
        })
    }

    fn revoke_token<'a>(&'a self, hash: &'a [u8]) -> StoreFuture<'a, bool> {
        Box::pin(async move {
            let done = sqlx::query("DELETE FROM tokens WHERE token_hash = ?")
                .bind(hash)
                .execute(&self.pool)
                .await?;
            Ok(done.rows_affected() == 1)
        })
    }

    fn create_upload<'a>(&'a self, upload: &'a Upload) -> StoreFuture<'a, ()> {
        Box::pin(async move {
            let key = upload.staging_key.as_ref();
            sqlx::query("INSERT INTO uploads (id, owner, length, offset, metadata, expires_at, staged_len, kek_version, staging_key) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)")
                .bind(&upload.id)
                .bind(&upload.owner)
                .bind(sql_u64(upload.length))
                .bind(sql_u64(upload.offset))
                .bind(&upload.metadata)
                .bind(upload.expires_at)
                .bind(sql_u64(upload.staged_len))
                .bind(key.map(|k| i64::from(k.kek_version)))
                .bind(key.map(|k| k.wrapped.clone()))
                .execute(&self.pool)
                .await?;
            Ok(())
        })
    }

    fn upload<'a>(&'a self, id: &'a str) -> StoreFuture<'a, Option<Upload>> {
        Box::pin(self.row_by("SELECT * FROM uploads WHERE id = ?", id, upload_from_row))
    }

    fn advance_upload<'a>(
        &'a self,
        id: &'a str,
        from: u64,
        to: u64,
        staged_len: u64,
    ) -> StoreFuture<'a, bool> {
        Box::pin(async move {
            let done = sqlx::query(
                "UPDATE uploads SET offset = ?, staged_len = ? WHERE id = ? AND offset = ?",
            )
            .bind(sql_u64(to))
            .bind(sql_u64(staged_len))
            .bind(id)
            .bind(sql_u64(from))
            .execute(&self.pool)
            .await?;
            Ok(done.rows_affected() == 1)
        })
    }

    fn delete_upload<'a>(&'a self, id: &'a str) -> StoreFuture<'a, bool> {
        Box::pin(self.delete_by("DELETE FROM uploads WHERE id = ?", id))
    }

    fn expired_uploads(&self, now: i64) -> StoreFuture<'_, Vec<String>> {
        Box::pin(async move {
            let rows = sqlx::query("SELECT id FROM uploads WHERE expires_at < ?")
                .bind(now)
                .fetch_all(&self.pool)
                .await?;
            Ok(rows.iter().map(|r| r.get("id")).collect())
        })
    }

    fn commit_upload<'a>(
        &'a self,
        upload_id: &'a str,
        file: &'a FileRecord,
        wraps: &'a [NewWrap],
        object_key: Option<&'a ObjectKey>,
    ) -> StoreFuture<'a, ()> {
        Box::pin(async move {
            let mut tx = self.pool.begin().await?;
            sqlx::query("INSERT INTO files (id, owner, size, sha256, created_at, receipt) VALUES (?, ?, ?, ?, ?, ?)")
                .bind(&file.id)
                .bind(&file.owner)
                .bind(sql_u64(file.size))
                .bind(&file.sha256)
                .bind(file.created_at)
                .bind(&file.receipt)
                .execute(&mut *tx)
                .await?;
            if let Some(key) = object_key {
                sqlx::query(
                    "INSERT INTO object_keys (file_id, kek_version, wrapped, stored_size) VALUES (?, ?, ?, ?)",
                )
                .bind(&key.file_id)
                .bind(i64::from(key.key.kek_version))
                .bind(&key.key.wrapped)
                .bind(sql_u64(key.stored_size))
                .execute(&mut *tx)
                .await?;
            }
            for (user, stanza) in wraps {
                sqlx::query(
                    "INSERT INTO wraps (file_id, user_name, stanza, created_at) VALUES (?, ?, ?, ?)",
                )
                .bind(&file.id)
                .bind(user)
                .bind(stanza)
                .bind(file.created_at)
                .execute(&mut *tx)
                .await?;
            }
            sqlx::query("DELETE FROM uploads WHERE id = ?")
                .bind(upload_id)
                .execute(&mut *tx)
                .await?;
            tx.commit().await?;
            Ok(())
        })
    }

    fn file<'a>(&'a self, id: &'a str) -> StoreFuture<'a, Option<FileRecord>> {
        Box::pin(self.row_by("SELECT * FROM files WHERE id = ?", id, file_from_row))
    }

    fn list_files<'a>(&'a self, owner: &'a str) -> StoreFuture<'a, Vec<FileRecord>> {
        Box::pin(self.rows_by(
            "SELECT * FROM files WHERE owner = ? ORDER BY created_at DESC, id",
            owner,
            file_from_row,
        ))
    }

    fn delete_file<'a>(&'a self, id: &'a str) -> StoreFuture<'a, bool> {
        Box::pin(self.delete_by("DELETE FROM files WHERE id = ?", id))
    }

    fn put_wrap<'a>(
        &'a self,
        file_id: &'a str,
        user: &'a str,
        stanza: &'a [u8],
        now: i64,
    ) -> StoreFuture<'a, ()> {
        Box::pin(async move {
            sqlx::query(
                "INSERT INTO wraps (file_id, user_name, stanza, created_at) VALUES (?, ?, ?, ?) ON CONFLICT (file_id, user_name) DO UPDATE SET stanza = excluded.stanza",
            )
            .bind(file_id)
            .bind(user)
            .bind(stanza)
            .bind(now)
            .execute(&self.pool)
            .await?;
            Ok(())
        })
    }

    fn wrap<'a>(&'a self, file_id: &'a str, user: &'a str) -> StoreFuture<'a, Option<Vec<u8>>> {
        Box::pin(async move {
            let row = sqlx::query("SELECT stanza FROM wraps WHERE file_id = ? AND user_name = ?")
                .bind(file_id)
                .bind(user)
                .fetch_optional(&self.pool)
                .await?;
            Ok(row.map(|r| r.get("stanza")))
        })
    }

    fn delete_wrap<'a>(&'a self, file_id: &'a str, user: &'a str) -> StoreFuture<'a, bool> {
        Box::pin(async move {
            let done = sqlx::query("DELETE FROM wraps WHERE file_id = ? AND user_name = ?")
                .bind(file_id)
                .bind(user)
                .execute(&self.pool)
                .await?;
            Ok(done.rows_affected() == 1)
        })
    }

    fn wrap_users<'a>(&'a self, file_id: &'a str) -> StoreFuture<'a, Vec<String>> {
        Box::pin(async move {
            let rows =
                sqlx::query("SELECT user_name FROM wraps WHERE file_id = ? ORDER BY user_name")
                    .bind(file_id)
                    .fetch_all(&self.pool)
                    .await?;
            Ok(rows.iter().map(|r| r.get("user_name")).collect())
        })
    }

    fn shared_with<'a>(&'a self, user: &'a str) -> StoreFuture<'a, Vec<FileRecord>> {
        Box::pin(async move {
            let rows = sqlx::query(
                "SELECT f.* FROM files f JOIN wraps w ON w.file_id = f.id WHERE w.user_name = ? AND f.owner <> ? ORDER BY f.created_at DESC, f.id",
            )
            .bind(user)
            .bind(user)
            .fetch_all(&self.pool)
            .await?;
            Ok(rows.iter().map(file_from_row).collect::<Result<_, _>>()?)
        })
    }

    fn create_link<'a>(&'a self, link: &'a Link) -> StoreFuture<'a, ()> {
        Box::pin(async move {
            sqlx::query(
                "INSERT INTO links (id, file_id, stanza, created_at, expires_at, max_downloads, downloads, password_hash, client_salt, failed_attempts) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            )
            .bind(&link.id)
            .bind(&link.file_id)
            .bind(&link.stanza)
            .bind(link.created_at)
            .bind(link.expires_at)
            .bind(link.max_downloads.map(sql_u64))
            .bind(sql_u64(link.downloads))
            .bind(&link.password_hash)
            .bind(&link.client_salt)
            .bind(i64::from(link.failed_attempts))
            .execute(&self.pool)
            .await?;
            Ok(())
        })
    }

    fn link<'a>(&'a self, id: &'a str) -> StoreFuture<'a, Option<Link>> {
        Box::pin(self.row_by("SELECT * FROM links WHERE id = ?", id, link_from_row))
    }

    fn file_links<'a>(&'a self, file_id: &'a str) -> StoreFuture<'a, Vec<Link>> {
        Box::pin(self.rows_by(
            "SELECT * FROM links WHERE file_id = ? ORDER BY created_at DESC, id",
            file_id,
            link_from_row,
        ))
    }

    fn delete_link<'a>(&'a self, id: &'a str) -> StoreFuture<'a, bool> {
        Box::pin(self.delete_by("DELETE FROM links WHERE id = ?", id))
    }

    fn link_failed_attempt<'a>(&'a self, id: &'a str) -> StoreFuture<'a, u32> {
        Box::pin(async move {
            let row = sqlx::query(
                "UPDATE links SET failed_attempts = failed_attempts + 1 WHERE id = ? RETURNING failed_attempts",
            )
            .bind(id)
            .fetch_optional(&self.pool)
            .await?;
            Ok(row.map_or(0, |r| {
                r.get::<i64, _>("failed_attempts")
                    .clamp(0, i64::from(u32::MAX)) as u32
            }))
        })
    }

    fn spend_link_download<'a>(
        &'a self,
        id: &'a str,
        now: i64,
        max_failures: u32,
    ) -> StoreFuture<'a, bool> {
        Box::pin(async move {
            let done = sqlx::query(
                "UPDATE links SET downloads = downloads + 1 WHERE id = ? AND expires_at > ? AND (max_downloads IS NULL OR downloads < max_downloads) AND failed_attempts < ?",
            )
            .bind(id)
            .bind(now)
            .bind(i64::from(max_failures))
            .execute(&self.pool)
            .await?;
            Ok(done.rows_affected() == 1)
        })
    }

    fn put_link_ticket<'a>(
        &'a self,
        hash: &'a [u8],
        link_id: &'a str,
        expires_at: i64,
    ) -> StoreFuture<'a, ()> {
        Box::pin(async move {
            sqlx::query(
                "INSERT INTO link_tickets (ticket_hash, link_id, expires_at) VALUES (?, ?, ?)",
            )
            .bind(hash)
            .bind(link_id)
            .bind(expires_at)
            .execute(&self.pool)
            .await?;
            Ok(())
        })
    }

    fn ticket_link<'a>(&'a self, hash: &'a [u8], now: i64) -> StoreFuture<'a, Option<Link>> {
        Box::pin(async move {
            let row = sqlx::query(
                "SELECT l.* FROM link_tickets t JOIN links l ON l.id = t.link_id WHERE t.ticket_hash = ? AND t.expires_at > ?",
            )
            .bind(hash)
            .bind(now)
            .fetch_optional(&self.pool)
            .await?;
            Ok(row.as_ref().map(link_from_row).transpose()?)
        })
    }

    fn sweep_links(&self, now: i64) -> StoreFuture<'_, u64> {
        Box::pin(async move {
            let mut tx = self.pool.begin().await?;
            sqlx::query("DELETE FROM link_tickets WHERE expires_at <= ?")
                .bind(now)
                .execute(&mut *tx)
                .await?;
            let done = sqlx::query(
                "DELETE FROM links WHERE expires_at <= ? AND NOT EXISTS (SELECT 1 FROM link_tickets t WHERE t.link_id = links.id)",
            )
            .bind(now)
            .execute(&mut *tx)
            .await?;
            tx.commit().await?;
            Ok(done.rows_affected())
        })
    }

    fn usage<'a>(&'a self, user: &'a str) -> StoreFuture<'a, Usage> {
        Box::pin(async move {
            let row = sqlx::query(
                "SELECT (SELECT COALESCE(SUM(size), 0) FROM files WHERE owner = ?1) AS stored, (SELECT COALESCE(SUM(length), 0) FROM uploads WHERE owner = ?1) AS reserved, (SELECT COUNT(*) FROM uploads WHERE owner = ?1) AS open",
            )
            .bind(user)
            .fetch_one(&self.pool)
            .await?;
            let get = |name: &str| row.try_get::<i64, _>(name).map(|v| v.max(0) as u64);
            Ok(Usage {
                stored_bytes: get("stored")?,
                reserved_bytes: get("reserved")?,
                open_uploads: get("open")?,
            })
        })
    }

    fn audit_head(&self) -> StoreFuture<'_, Option<(i64, Vec<u8>)>> {
        Box::pin(async move {
            let row = sqlx::query("SELECT seq, hash FROM audit_log ORDER BY seq DESC LIMIT 1")
                .fetch_optional(&self.pool)
                .await?;
            Ok(row.map(|r| (r.get("seq"), r.get("hash"))))
        })
    }

    fn insert_audit<'a>(&'a self, row: &'a AuditRow) -> StoreFuture<'a, ()> {
        Box::pin(async move {
            let result = sqlx::query(
                "INSERT INTO audit_log (seq, time, actor, ip, action, target, outcome, detail, prev_hash, hash) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            )
            .bind(row.seq)
            .bind(row.time)
            .bind(&row.actor)
            .bind(&row.ip)
            .bind(&row.action)
            .bind(&row.target)
            .bind(&row.outcome)
            .bind(&row.detail)
            .bind(&row.prev_hash)
            .bind(&row.hash)
            .execute(&self.pool)
            .await;
            match result {
                Err(sqlx::Error::Database(err)) if err.is_unique_violation() => {
                    Err(StoreError::Conflict("audit entry"))
                }
                other => other.map(|_| ()).map_err(StoreError::from),
            }
        })
    }

    fn audit_entries(&self, after: i64, limit: u32) -> StoreFuture<'_, Vec<AuditRow>> {
        Box::pin(async move {
            let rows = sqlx::query("SELECT * FROM audit_log WHERE seq > ? ORDER BY seq LIMIT ?")
                .bind(after)
                .bind(i64::from(limit))
                .fetch_all(&self.pool)
                .await?;
            Ok(rows.iter().map(audit_from_row).collect::<Result<_, _>>()?)
        })
    }

    fn insert_audit_checkpoint<'a>(&'a self, cp: &'a AuditCheckpoint) -> StoreFuture<'a, ()> {
        Box::pin(async move {
            sqlx::query(
                "INSERT OR IGNORE INTO audit_checkpoints (seq, hash, time, signature) VALUES (?, ?, ?, ?)",
            )
            .bind(cp.seq)
            .bind(&cp.hash)
            .bind(cp.time)
            .bind(&cp.signature)
            .execute(&self.pool)
            .await?;
            Ok(())
        })
    }

    fn audit_checkpoints(&self) -> StoreFuture<'_, Vec<AuditCheckpoint>> {
        Box::pin(async move {
            let rows = sqlx::query("SELECT * FROM audit_checkpoints ORDER BY seq")
                .fetch_all(&self.pool)
                .await?;
            rows.iter()
                .map(|r| {
                    Ok(AuditCheckpoint {
                        seq: r.try_get("seq")?,
                        hash: r.try_get("hash")?,
                        time: r.try_get("time")?,
                        signature: r.try_get("signature")?,
                    })
                })
                .collect::<Result<_, sqlx::Error>>()
                .map_err(StoreError::from)
        })
    }

    fn keks(&self) -> StoreFuture<'_, Vec<(u32, Vec<u8>)>> {
        Box::pin(async move {
            let rows = sqlx::query("SELECT version, sealed FROM keks ORDER BY version")
                .fetch_all(&self.pool)
                .await?;
            rows.iter()
                .map(|r| {
                    let version: i64 = r.try_get("version")?;
                    Ok((
                        u32::try_from(version).unwrap_or(0),
                        r.try_get::<Vec<u8>, _>("sealed")?,
                    ))
                })
                .collect::<Result<_, sqlx::Error>>()
                .map_err(StoreError::from)
        })
    }

    fn insert_kek<'a>(&'a self, version: u32, sealed: &'a [u8], now: i64) -> StoreFuture<'a, ()> {
        Box::pin(async move {
            let result =
                sqlx::query("INSERT INTO keks (version, sealed, created_at) VALUES (?, ?, ?)")
                    .bind(i64::from(version))
                    .bind(sealed)
                    .bind(now)
                    .execute(&self.pool)
                    .await;
            match result {
                Err(sqlx::Error::Database(err)) if err.is_unique_violation() => {
                    Err(StoreError::Conflict("KEK version"))
                }
                other => other.map(|_| ()).map_err(StoreError::from),
            }
        })
    }

    fn object_key<'a>(&'a self, file_id: &'a str) -> StoreFuture<'a, Option<ObjectKey>> {
        Box::pin(self.row_by(
            "SELECT * FROM object_keys WHERE file_id = ?",
            file_id,
            object_key_from_row,
        ))
    }

    fn stale_object_keys(&self, version: u32, limit: u32) -> StoreFuture<'_, Vec<ObjectKey>> {
        Box::pin(async move {
            let rows = sqlx::query(
                "SELECT * FROM object_keys WHERE kek_version < ? ORDER BY file_id LIMIT ?",
            )
            .bind(i64::from(version))
            .bind(i64::from(limit))
            .fetch_all(&self.pool)
            .await?;
            Ok(rows
                .iter()
                .map(object_key_from_row)
                .collect::<Result<_, _>>()?)
        })
    }

    fn stale_upload_keys(
        &self,
        version: u32,
        limit: u32,
    ) -> StoreFuture<'_, Vec<(String, WrappedKey)>> {
        Box::pin(async move {
            let rows = sqlx::query(
                "SELECT id, kek_version, staging_key FROM uploads WHERE kek_version < ? ORDER BY id LIMIT ?",
            )
            .bind(i64::from(version))
            .bind(i64::from(limit))
            .fetch_all(&self.pool)
            .await?;
            let mut out = Vec::new();
            for row in &rows {
                if let Some(key) =
                    wrapped_from(row.try_get("kek_version")?, row.try_get("staging_key")?)
                {
                    out.push((row.try_get("id")?, key));
                }
            }
            Ok(out)
        })
    }

    fn rewrap<'a>(
        &'a self,
        objects: &'a [(String, WrappedKey, WrappedKey)],
        uploads: &'a [(String, WrappedKey, WrappedKey)],
    ) -> StoreFuture<'a, u64> {
        Box::pin(async move {
            let mut tx = self.pool.begin().await?;
            let mut done = 0;
            for (id, old, new) in objects {
                done += sqlx::query(
                    "UPDATE object_keys SET kek_version = ?, wrapped = ? WHERE file_id = ? AND kek_version = ?",
                )
                .bind(i64::from(new.kek_version))
                .bind(&new.wrapped)
                .bind(id)
                .bind(i64::from(old.kek_version))
                .execute(&mut *tx)
                .await?
                .rows_affected();
            }
            for (id, old, new) in uploads {
                done += sqlx::query(
                    "UPDATE uploads SET kek_version = ?, staging_key = ? WHERE id = ? AND kek_version = ?",
                )
                .bind(i64::from(new.kek_version))
                .bind(&new.wrapped)
                .bind(id)
                .bind(i64::from(old.kek_version))
                .execute(&mut *tx)
                .await?
                .rows_affected();
            }
            tx.commit().await?;
            Ok(done)
        })
    }

    fn kek_usage(&self) -> StoreFuture<'_, Vec<KekUsage>> {
        Box::pin(async move {
            let rows = sqlx::query(
                "SELECT k.version, k.created_at, (SELECT COUNT(*) FROM object_keys o WHERE o.kek_version = k.version) AS objects, (SELECT COUNT(*) FROM uploads u WHERE u.kek_version = k.version) AS uploads FROM keks k ORDER BY k.version",
            )
            .fetch_all(&self.pool)
            .await?;
            rows.iter()
                .map(|r| {
                    Ok(KekUsage {
                        version: u32::try_from(r.try_get::<i64, _>("version")?).unwrap_or(0),
                        created_at: r.try_get("created_at")?,
                        objects: r.try_get::<i64, _>("objects")?.max(0) as u64,
                        uploads: r.try_get::<i64, _>("uploads")?.max(0) as u64,
                    })
                })
                .collect::<Result<_, sqlx::Error>>()
                .map_err(StoreError::from)
        })
    }

    fn delete_unused_kek(&self, version: u32) -> StoreFuture<'_, bool> {
        Box::pin(async move {
            let done = sqlx::query(
                "DELETE FROM keks WHERE version = ?1 AND NOT EXISTS (SELECT 1 FROM object_keys WHERE kek_version = ?1) AND NOT EXISTS (SELECT 1 FROM uploads WHERE kek_version = ?1)",
            )
            .bind(i64::from(version))
            .execute(&self.pool)
            .await?;
            Ok(done.rows_affected() == 1)
        })
    }
}
