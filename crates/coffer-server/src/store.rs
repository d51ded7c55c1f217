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
}
