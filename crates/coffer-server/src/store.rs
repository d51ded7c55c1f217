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
    /// Moves an upload's offset from `from` to `to`; false if it was not at
    /// `from` any more (another writer got there first).
    fn advance_upload<'a>(&'a self, id: &'a str, from: u64, to: u64) -> StoreFuture<'a, bool>;
    /// Forgets an upload; returns whether it existed.
    fn delete_upload<'a>(&'a self, id: &'a str) -> StoreFuture<'a, bool>;
    /// Uploads abandoned before `now`.
    fn expired_uploads(&self, now: i64) -> StoreFuture<'_, Vec<String>>;
    /// In one transaction: records the file and forgets the upload.
    fn commit_upload<'a>(&'a self, upload_id: &'a str, file: &'a FileRecord)
    -> StoreFuture<'a, ()>;
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
        Box::pin(async move {
            let row = sqlx::query("SELECT * FROM users WHERE name = ?")
                .bind(name)
                .fetch_optional(&self.pool)
                .await?;
            Ok(row.as_ref().map(user_from_row).transpose()?)
        })
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
            sqlx::query("INSERT INTO uploads (id, owner, length, offset, metadata, expires_at) VALUES (?, ?, ?, ?, ?, ?)")
                .bind(&upload.id)
                .bind(&upload.owner)
                .bind(sql_u64(upload.length))
                .bind(sql_u64(upload.offset))
                .bind(&upload.metadata)
                .bind(upload.expires_at)
                .execute(&self.pool)
                .await?;
            Ok(())
        })
    }

    fn upload<'a>(&'a self, id: &'a str) -> StoreFuture<'a, Option<Upload>> {
        Box::pin(async move {
            let row = sqlx::query("SELECT * FROM uploads WHERE id = ?")
                .bind(id)
                .fetch_optional(&self.pool)
                .await?;
            Ok(row.as_ref().map(upload_from_row).transpose()?)
        })
    }

    fn advance_upload<'a>(&'a self, id: &'a str, from: u64, to: u64) -> StoreFuture<'a, bool> {
        Box::pin(async move {
            let done = sqlx::query("UPDATE uploads SET offset = ? WHERE id = ? AND offset = ?")
                .bind(sql_u64(to))
                .bind(id)
                .bind(sql_u64(from))
                .execute(&self.pool)
                .await?;
            Ok(done.rows_affected() == 1)
        })
    }

    fn delete_upload<'a>(&'a self, id: &'a str) -> StoreFuture<'a, bool> {
        Box::pin(async move {
            let done = sqlx::query("DELETE FROM uploads WHERE id = ?")
                .bind(id)
                .execute(&self.pool)
                .await?;
            Ok(done.rows_affected() == 1)
        })
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
            sqlx::query("DELETE FROM uploads WHERE id = ?")
                .bind(upload_id)
                .execute(&mut *tx)
                .await?;
            tx.commit().await?;
            Ok(())
        })
    }

    fn file<'a>(&'a self, id: &'a str) -> StoreFuture<'a, Option<FileRecord>> {
        Box::pin(async move {
            let row = sqlx::query("SELECT * FROM files WHERE id = ?")
                .bind(id)
                .fetch_optional(&self.pool)
                .await?;
            Ok(row.as_ref().map(file_from_row).transpose()?)
        })
    }

    fn list_files<'a>(&'a self, owner: &'a str) -> StoreFuture<'a, Vec<FileRecord>> {
        Box::pin(async move {
            let rows =
                sqlx::query("SELECT * FROM files WHERE owner = ? ORDER BY created_at DESC, id")
                    .bind(owner)
                    .fetch_all(&self.pool)
                    .await?;
            Ok(rows.iter().map(file_from_row).collect::<Result<_, _>>()?)
        })
    }

    fn delete_file<'a>(&'a self, id: &'a str) -> StoreFuture<'a, bool> {
        Box::pin(async move {
            let done = sqlx::query("DELETE FROM files WHERE id = ?")
                .bind(id)
                .execute(&self.pool)
                .await?;
            Ok(done.rows_affected() == 1)
        })
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
}
