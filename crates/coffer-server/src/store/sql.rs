//! The two SQL backends behind [`MetaStore`]: SQLite (the embedded default)
//! and PostgreSQL (for several server nodes). Each has its own migrations
//! (`migrations/sqlite`, `migrations/postgres`), but every statement is
//! written once: in the dialect both accept (`$1` placeholders, `ON CONFLICT`,
//! `RETURNING`) and run through [`on_pool!`], which expands the same body once
//! per backend, so the two cannot drift apart. The conformance suite
//! (`tests/store.rs`) runs every operation against both.
//!
//! Races that matter are settled inside one statement, which both databases
//! make atomic: a challenge is consumed by `DELETE … RETURNING`, a link
//! download by a guarded `UPDATE`, an upload offset by compare-and-set, an
//! upload lease by a guarded `UPDATE`, an audit sequence number by its
//! primary key.

use std::path::Path;
use std::time::Duration;

use sqlx::Row;
use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions, PgRow};
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteRow,
    SqliteSynchronous,
};

use super::*;

/// The connection pool of one backend.
#[derive(Clone, Debug)]
enum Pool {
    Sqlite(SqlitePool),
    Postgres(PgPool),
}

/// Runs `$body` with `$pool` bound to the concrete pool; the body is
/// compiled once for each backend.
macro_rules! on_pool {
    ($self:ident, $pool:ident => $body:expr) => {
        match &$self.pool {
            Pool::Sqlite($pool) => $body,
            Pool::Postgres($pool) => $body,
        }
    };
}

/// The body of a [`MetaStore`] method, written once: boxed, async, and
/// compiled for each backend with `$pool` bound to its concrete pool (see
/// [`on_pool!`]). The SQL stays in the method, next to its signature.
macro_rules! op {
    ($self:ident, $pool:ident => $body:expr) => {
        Box::pin(async move { on_pool!($self, $pool => $body) })
    };
}

/// Runs one statement with its values bound in order; evaluates to the
/// number of rows it changed. `$conn` is a pool or a transaction.
macro_rules! affected {
    ($conn:expr, $sql:expr $(, $value:expr)* $(,)?) => {
        sqlx::query($sql)$(.bind($value))*.execute($conn).await?.rows_affected()
    };
}

/// Metadata in SQLite (one machine) or PostgreSQL (shared by many nodes).
#[derive(Clone, Debug)]
pub struct SqlStore {
    pool: Pool,
}

/// Where the metadata lives: a SQLite file, or a PostgreSQL URL.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Database {
    /// A SQLite file.
    Sqlite(std::path::PathBuf),
    /// A `postgres://` (or `postgresql://`) URL.
    Postgres(String),
}

impl Database {
    /// `postgres://…` and `postgresql://…` are PostgreSQL; anything else is a
    /// SQLite path, relative to `base` unless absolute.
    pub fn parse(value: &str, base: &Path) -> Self {
        if value.starts_with("postgres://") || value.starts_with("postgresql://") {
            Database::Postgres(value.to_string())
        } else {
            Database::Sqlite(base.join(value))
        }
    }
}

impl SqlStore {
    /// Connects to `database` and brings its schema up to date.
    pub async fn open(database: &Database) -> Result<Self, StoreError> {
        match database {
            Database::Sqlite(path) => Self::open_sqlite(path).await,
            Database::Postgres(url) => Self::open_postgres(url).await,
        }
    }

    /// Opens (creating if needed) the SQLite database at `path` and migrates
    /// it.
    pub async fn open_sqlite(path: &Path) -> Result<Self, StoreError> {
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
        Ok(Self {
            pool: Pool::Sqlite(pool),
        })
    }

    /// Connects to PostgreSQL at `url` and migrates it. Several nodes may
    /// do this at once: sqlx takes an advisory lock around migrations.
    pub async fn open_postgres(url: &str) -> Result<Self, StoreError> {
        let options: PgConnectOptions = url.parse()?;
        let pool = PgPoolOptions::new()
            .max_connections(16)
            .acquire_timeout(Duration::from_secs(10))
            .connect_with(options)
            .await?;
        sqlx::migrate!("./migrations/postgres").run(&pool).await?;
        Ok(Self {
            pool: Pool::Postgres(pool),
        })
    }

    /// Frees every upload lease. Only for a server starting on SQLite,
    /// which no other server process shares: leases left by a crash would
    /// otherwise hold their uploads until they ran out.
    pub async fn release_all_leases(&self) -> Result<u64, StoreError> {
        on_pool!(self, pool => {
            Ok(affected!(pool, "UPDATE uploads SET lease_holder = NULL, lease_until = NULL WHERE lease_holder IS NOT NULL"))
        })
    }

    /// Which backend this is (`sqlite` or `postgres`), for logs and reports.
    pub fn backend(&self) -> &'static str {
        match self.pool {
            Pool::Sqlite(_) => "sqlite",
            Pool::Postgres(_) => "postgres",
        }
    }
}

/// The kind of a column, for copying rows between backends.
#[derive(Clone, Copy, Debug)]
pub enum Column {
    /// An integer (possibly NULL).
    Int(&'static str),
    /// Text (possibly NULL).
    Text(&'static str),
    /// Bytes (possibly NULL).
    Blob(&'static str),
}

impl Column {
    pub(crate) fn name(self) -> &'static str {
        match self {
            Column::Int(name) | Column::Text(name) | Column::Blob(name) => name,
        }
    }
}

/// One value read for a copy.
enum Value {
    Int(Option<i64>),
    Text(Option<String>),
    Blob(Option<Vec<u8>>),
}

/// A table to copy: its name, key (for a stable order) and columns.
pub struct Table {
    /// Table name.
    pub name: &'static str,
    /// Column(s) to order by, e.g. `"file_id, user_name"`.
    pub key: &'static str,
    /// Every column.
    pub columns: &'static [Column],
}

/// The paged SELECT and the INSERT that copy `table`.
fn copy_statements(table: &Table) -> (String, String) {
    let names: Vec<&str> = table.columns.iter().map(|c| c.name()).collect();
    let select = format!(
        "SELECT {} FROM {} ORDER BY {} LIMIT $1 OFFSET $2",
        names.join(", "),
        table.name,
        table.key
    );
    let placeholders: Vec<String> = (1..=names.len()).map(|i| format!("${i}")).collect();
    let insert = format!(
        "INSERT INTO {} ({}) VALUES ({}) ON CONFLICT DO NOTHING",
        table.name,
        names.join(", "),
        placeholders.join(", ")
    );
    (select, insert)
}

/// The values of `columns` in a row read for a copy.
fn row_values(row: &dyn Get, columns: &[Column]) -> Result<Vec<Value>, sqlx::Error> {
    columns
        .iter()
        .map(|column| {
            Ok(match *column {
                Column::Int(name) => Value::Int(row.opt_int(name)?),
                Column::Text(name) => Value::Text(row.opt_text(name)?),
                Column::Blob(name) => Value::Blob(row.opt_bytes(name)?),
            })
        })
        .collect()
}

/// Rows read per round trip when copying.
const COPY_PAGE: i64 = 1000;

impl SqlStore {
    /// Copies every row of `table` into `dest`, skipping rows whose key is
    /// already there (so an interrupted copy can simply be run again);
    /// returns the rows read.
    pub async fn copy_table_to(&self, dest: &SqlStore, table: &Table) -> Result<u64, StoreError> {
        let (select, insert) = copy_statements(table);
        let mut copied = 0u64;
        loop {
            let rows = self
                .read_page(&select, table.columns, copied as i64)
                .await?;
            if rows.is_empty() {
                return Ok(copied);
            }
            copied += rows.len() as u64;
            dest.write_rows(&insert, rows).await?;
        }
    }

    async fn read_page(
        &self,
        select: &str,
        columns: &[Column],
        offset: i64,
    ) -> Result<Vec<Vec<Value>>, StoreError> {
        on_pool!(self, pool => {
            let rows = sqlx::query(sqlx::AssertSqlSafe(select.to_string()))
                .bind(COPY_PAGE)
                .bind(offset)
                .fetch_all(pool)
                .await?;
            Ok(rows.iter().map(|r| row_values(r, columns)).collect::<Result<_, _>>()?)
        })
    }

    /// A consistent copy of the metadata as a new SQLite file at `dest`
    /// (which must not exist), taken while servers keep running: SQLite's
    /// `VACUUM INTO`, or for PostgreSQL every table in `tables` read in one
    /// repeatable-read transaction (one snapshot of the whole database).
    pub async fn snapshot_into(&self, dest: &Path, tables: &[Table]) -> Result<(), StoreError> {
        match &self.pool {
            Pool::Sqlite(pool) => {
                sqlx::query("VACUUM INTO $1")
                    .bind(dest.to_string_lossy().into_owned())
                    .execute(pool)
                    .await?;
            }
            Pool::Postgres(pool) => {
                let copy = SqlStore::open_sqlite(dest).await?;
                let mut tx = pool.begin().await?;
                sqlx::query("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
                    .execute(&mut *tx)
                    .await?;
                for table in tables {
                    let (select, insert) = copy_statements(table);
                    let mut offset = 0i64;
                    loop {
                        let rows = sqlx::query(sqlx::AssertSqlSafe(select.clone()))
                            .bind(COPY_PAGE)
                            .bind(offset)
                            .fetch_all(&mut *tx)
                            .await?;
                        if rows.is_empty() {
                            break;
                        }
                        offset += rows.len() as i64;
                        let values = rows
                            .iter()
                            .map(|r| row_values(r, table.columns))
                            .collect::<Result<_, _>>()?;
                        copy.write_rows(&insert, values).await?;
                    }
                }
                tx.commit().await?;
                copy.close().await;
            }
        }
        Ok(())
    }

    /// Forgets every unfinished upload and login challenge (a restored
    /// snapshot has none of their staged bytes).
    pub async fn drop_unfinished_uploads(&self) -> Result<(), StoreError> {
        on_pool!(self, pool => {
            affected!(pool, "DELETE FROM uploads");
            affected!(pool, "DELETE FROM challenges");
            Ok(())
        })
    }

    /// Closes the connections (a SQLite file is complete on disk after).
    pub async fn close(&self) {
        on_pool!(self, pool => pool.close().await)
    }

    async fn write_rows(&self, insert: &str, rows: Vec<Vec<Value>>) -> Result<(), StoreError> {
        on_pool!(self, pool => {
            let mut tx = pool.begin().await?;
            for row in rows {
                let mut query = sqlx::query(sqlx::AssertSqlSafe(insert.to_string()));
                for value in row {
                    query = match value {
                        Value::Int(v) => query.bind(v),
                        Value::Text(v) => query.bind(v),
                        Value::Blob(v) => query.bind(v),
                    };
                }
                query.execute(&mut *tx).await?;
            }
            tx.commit().await?;
            Ok(())
        })
    }

    /// Unfinished uploads.
    pub async fn open_upload_count(&self) -> Result<u64, StoreError> {
        on_pool!(self, pool => {
            let row = sqlx::query("SELECT COUNT(*) AS n FROM uploads")
                .fetch_one(pool)
                .await?;
            Ok(row.try_get::<i64, _>("n")?.max(0) as u64)
        })
    }

    /// Every committed file with the size of its stored object (which
    /// differs from the file's size for files the server encrypts), by id.
    pub async fn stored_objects(&self) -> Result<Vec<(FileRecord, u64, bool)>, StoreError> {
        on_pool!(self, pool => {
            let rows = sqlx::query(
                "SELECT f.*, o.stored_size FROM files f LEFT JOIN object_keys o ON o.file_id = f.id ORDER BY f.id",
            )
            .fetch_all(pool)
            .await?;
            let mut out = Vec::with_capacity(rows.len());
            for row in &rows {
                let record = file_from_row(row)?;
                let stored: Option<i64> = row.try_get("stored_size")?;
                let e2ee = stored.is_none();
                let size = stored.map_or(record.size, |s| s.max(0) as u64);
                out.push((record, size, e2ee));
            }
            Ok(out)
        })
    }
}

/// Typed column access shared by both backends' rows, so that each record
/// is decoded by one function.
trait Get {
    fn int(&self, column: &str) -> Result<i64, sqlx::Error>;
    fn opt_int(&self, column: &str) -> Result<Option<i64>, sqlx::Error>;
    fn text(&self, column: &str) -> Result<String, sqlx::Error>;
    fn opt_text(&self, column: &str) -> Result<Option<String>, sqlx::Error>;
    fn bytes(&self, column: &str) -> Result<Vec<u8>, sqlx::Error>;
    fn opt_bytes(&self, column: &str) -> Result<Option<Vec<u8>>, sqlx::Error>;
}

macro_rules! impl_get {
    ($row:ty) => {
        impl Get for $row {
            fn int(&self, column: &str) -> Result<i64, sqlx::Error> {
                self.try_get(column)
            }
            fn opt_int(&self, column: &str) -> Result<Option<i64>, sqlx::Error> {
                self.try_get(column)
            }
            fn text(&self, column: &str) -> Result<String, sqlx::Error> {
                self.try_get(column)
            }
            fn opt_text(&self, column: &str) -> Result<Option<String>, sqlx::Error> {
                self.try_get(column)
            }
            fn bytes(&self, column: &str) -> Result<Vec<u8>, sqlx::Error> {
                self.try_get(column)
            }
            fn opt_bytes(&self, column: &str) -> Result<Option<Vec<u8>>, sqlx::Error> {
                self.try_get(column)
            }
        }
    };
}
impl_get!(SqliteRow);
impl_get!(PgRow);

/// Maps one row to a record.
type RowMap<T> = fn(&dyn Get) -> Result<T, sqlx::Error>;

/// The shapes most lookups share: one statement with a single text key.
impl SqlStore {
    /// The row `sql` finds for `key`, if any.
    async fn row_by<T>(
        &self,
        sql: &'static str,
        key: &str,
        map: RowMap<T>,
    ) -> Result<Option<T>, StoreError> {
        on_pool!(self, pool => {
            let row = sqlx::query(sql).bind(key).fetch_optional(pool).await?;
            Ok(row.as_ref().map(|r| map(r)).transpose()?)
        })
    }

    /// Every row `sql` finds for `key`, in the statement's order.
    async fn rows_by<T>(
        &self,
        sql: &'static str,
        key: &str,
        map: RowMap<T>,
    ) -> Result<Vec<T>, StoreError> {
        on_pool!(self, pool => {
            let rows = sqlx::query(sql).bind(key).fetch_all(pool).await?;
            Ok(rows.iter().map(|r| map(r)).collect::<Result<_, _>>()?)
        })
    }

    /// One page of a file listing: `sql` takes the key ($1), a first-page
    /// flag ($2), the previous page's last `created_at` and `id` ($3, $4)
    /// and the page length ($5).
    async fn files_page(
        &self,
        sql: &'static str,
        key: &str,
        page: &Page,
    ) -> Result<Vec<FileRecord>, StoreError> {
        let (time, id) = page.bound();
        on_pool!(self, pool => {
            let rows = sqlx::query(sql)
                .bind(key)
                .bind(i64::from(page.after.is_none()))
                .bind(time)
                .bind(id)
                .bind(i64::from(page.limit))
                .bind(crate::unix_now())
                .fetch_all(pool)
                .await?;
            Ok(rows.iter().map(|r| file_from_row(r)).collect::<Result<_, _>>()?)
        })
    }

    /// Runs a keyed `DELETE`; whether it removed a row.
    async fn delete_by(&self, sql: &'static str, key: &str) -> Result<bool, StoreError> {
        on_pool!(self, pool => {
            Ok(affected!(pool, sql, key) == 1)
        })
    }
}

fn user_from_row(row: &dyn Get) -> Result<User, sqlx::Error> {
    Ok(User {
        name: row.text("name")?,
        public_identity: row.text("public_identity")?,
        is_admin: row.int("is_admin")? != 0,
        quota_bytes: row.opt_int("quota_bytes")?.map(|q| q.max(0) as u64),
        disabled: row.int("disabled")? != 0,
    })
}

fn upload_from_row(row: &dyn Get) -> Result<Upload, sqlx::Error> {
    Ok(Upload {
        id: row.text("id")?,
        owner: row.text("owner")?,
        length: row.int("length")?.max(0) as u64,
        offset: row.int("upload_offset")?.max(0) as u64,
        metadata: row.text("metadata")?,
        expires_at: row.int("expires_at")?,
        staged_len: row.int("staged_len")?.max(0) as u64,
        staging_key: wrapped_from(row.opt_int("kek_version")?, row.opt_bytes("staging_key")?),
        staging: row.bytes("staging")?,
        via_request: row.opt_text("via_request")?,
    })
}

fn wrapped_from(version: Option<i64>, wrapped: Option<Vec<u8>>) -> Option<WrappedKey> {
    Some(WrappedKey {
        kek_version: u32::try_from(version?).ok()?,
        wrapped: wrapped?,
    })
}

fn file_from_row(row: &dyn Get) -> Result<FileRecord, sqlx::Error> {
    Ok(FileRecord {
        id: row.text("id")?,
        owner: row.text("owner")?,
        size: row.int("size")?.max(0) as u64,
        digest: row.bytes("digest")?,
        digest_alg: DigestAlg::parse(&row.text("digest_alg")?)
            .ok_or_else(|| sqlx::Error::Decode("unknown digest algorithm".into()))?,
        created_at: row.int("created_at")?,
        receipt: row.text("receipt")?,
        expires_at: row.opt_int("expires_at")?,
        delete_when_received: row.int("delete_when_received")? != 0,
        via_request: row.opt_text("via_request")?,
    })
}

fn request_from_row(row: &dyn Get) -> Result<Request, sqlx::Error> {
    Ok(Request {
        id: row.text("id")?,
        owner: row.text("owner")?,
        created_at: row.int("created_at")?,
        expires_at: row.int("expires_at")?,
        max_files: row.opt_int("max_files")?.map(|n| n.max(0) as u64),
        max_file_bytes: row.opt_int("max_file_bytes")?.map(|n| n.max(0) as u64),
        files_started: row.int("files_started")?.max(0) as u64,
        ask_name: row.int("ask_name")? != 0,
        access_hash: row.bytes("access_hash")?,
        password_hash: row.opt_text("password_hash")?,
        failed_attempts: row.int("failed_attempts")?.clamp(0, i64::from(u32::MAX)) as u32,
    })
}

fn link_from_row(row: &dyn Get) -> Result<Link, sqlx::Error> {
    Ok(Link {
        id: row.text("id")?,
        file_id: row.text("file_id")?,
        stanza: row.bytes("stanza")?,
        created_at: row.int("created_at")?,
        expires_at: row.int("expires_at")?,
        max_downloads: row.opt_int("max_downloads")?.map(|n| n.max(0) as u64),
        downloads: row.int("downloads")?.max(0) as u64,
        password_hash: row.opt_text("password_hash")?,
        client_salt: row.opt_bytes("client_salt")?,
        failed_attempts: row.int("failed_attempts")?.clamp(0, i64::from(u32::MAX)) as u32,
        access_hash: row.opt_bytes("access_hash")?,
    })
}

fn audit_from_row(row: &dyn Get) -> Result<AuditRow, sqlx::Error> {
    Ok(AuditRow {
        seq: row.int("seq")?,
        time: row.int("time")?,
        actor: row.text("actor")?,
        ip: row.text("ip")?,
        action: row.text("action")?,
        target: row.text("target")?,
        outcome: row.text("outcome")?,
        detail: row.text("detail")?,
        prev_hash: row.bytes("prev_hash")?,
        hash: row.bytes("hash")?,
    })
}

fn object_key_from_row(row: &dyn Get) -> Result<ObjectKey, sqlx::Error> {
    Ok(ObjectKey {
        file_id: row.text("file_id")?,
        key: WrappedKey {
            kek_version: u32::try_from(row.int("kek_version")?).unwrap_or(0),
            wrapped: row.bytes("wrapped")?,
        },
        stored_size: row.int("stored_size")?.max(0) as u64,
    })
}

fn sql_u64(value: u64) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}

impl MetaStore for SqlStore {
    fn add_user<'a>(&'a self, user: &'a User, now: i64) -> StoreFuture<'a, ()> {
        op!(self, pool => {
            let result = sqlx::query(
                "INSERT INTO users (name, public_identity, is_admin, quota_bytes, disabled, created_at) VALUES ($1, $2, $3, $4, $5, $6)",
            )
            .bind(&user.name)
            .bind(&user.public_identity)
            .bind(i64::from(user.is_admin))
            .bind(user.quota_bytes.map(|q| i64::try_from(q).unwrap_or(i64::MAX)))
            .bind(i64::from(user.disabled))
            .bind(now)
            .execute(pool)
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
        op!(self, pool => {
            let rows = sqlx::query("SELECT * FROM users ORDER BY name")
                .fetch_all(pool)
                .await?;
            Ok(rows.iter().map(|r| user_from_row(r)).collect::<Result<_, _>>()?)
        })
    }

    fn user<'a>(&'a self, name: &'a str) -> StoreFuture<'a, Option<User>> {
        Box::pin(self.row_by("SELECT * FROM users WHERE name = $1", name, user_from_row))
    }

    fn set_quota<'a>(&'a self, name: &'a str, quota_bytes: Option<u64>) -> StoreFuture<'a, bool> {
        op!(self, pool => {
            Ok(affected!(pool, "UPDATE users SET quota_bytes = $1 WHERE name = $2", quota_bytes.map(sql_u64), name) == 1)
        })
    }

    fn set_public_identity<'a>(
        &'a self,
        name: &'a str,
        public_identity: &'a str,
    ) -> StoreFuture<'a, bool> {
        op!(self, pool => {
            let found = affected!(pool, "UPDATE users SET public_identity = $1 WHERE name = $2", public_identity, name) == 1;
            affected!(pool, "DELETE FROM tokens WHERE user_name = $1", name);
            Ok(found)
        })
    }

    fn remove_user<'a>(&'a self, name: &'a str) -> StoreFuture<'a, bool> {
        op!(self, pool => {
            let mut tx = pool.begin().await?;
            let owned: i64 = sqlx::query_scalar(
                "SELECT (SELECT COUNT(*) FROM files WHERE owner = $1) + (SELECT COUNT(*) FROM uploads WHERE owner = $1)",
            )
            .bind(name)
            .fetch_one(&mut *tx)
            .await?;
            if owned > 0 {
                return Ok(false);
            }
            affected!(&mut *tx, "DELETE FROM tokens WHERE user_name = $1", name);
            affected!(&mut *tx, "DELETE FROM challenges WHERE user_name = $1", name);
            affected!(&mut *tx, "DELETE FROM wraps WHERE user_name = $1", name);
            affected!(&mut *tx, "DELETE FROM requests WHERE owner = $1", name);
            let found = affected!(&mut *tx, "DELETE FROM users WHERE name = $1", name) == 1;
            if found {
                tx.commit().await?;
            }
            Ok(found)
        })
    }

    fn set_disabled<'a>(&'a self, name: &'a str, disabled: bool) -> StoreFuture<'a, bool> {
        op!(self, pool => {
            let found = affected!(pool, "UPDATE users SET disabled = $1 WHERE name = $2", i64::from(disabled), name) == 1;
            if disabled {
                // Not only refused while disabled: gone, so enabling the
                // user again does not bring old sessions back.
                affected!(pool, "DELETE FROM tokens WHERE user_name = $1", name);
            }
            Ok(found)
        })
    }

    fn put_challenge<'a>(
        &'a self,
        nonce: &'a [u8],
        user: &'a str,
        expires_at: i64,
        now: i64,
    ) -> StoreFuture<'a, ()> {
        op!(self, pool => {
            affected!(pool, "DELETE FROM challenges WHERE expires_at < $1", now);
            affected!(pool, "INSERT INTO challenges (nonce, user_name, expires_at) VALUES ($1, $2, $3)", nonce, user, expires_at);
            Ok(())
        })
    }

    fn take_challenge<'a>(&'a self, nonce: &'a [u8]) -> StoreFuture<'a, Option<(String, i64)>> {
        op!(self, pool => {
            let row = sqlx::query(
                "DELETE FROM challenges WHERE nonce = $1 RETURNING user_name, expires_at",
            )
            .bind(nonce)
            .fetch_optional(pool)
            .await?;
            Ok(row.map(|r| (r.get("user_name"), r.get("expires_at"))))
        })
    }

    fn put_token<'a>(&'a self, token: &'a NewToken<'a>, now: i64) -> StoreFuture<'a, ()> {
        op!(self, pool => {
            affected!(pool, "DELETE FROM tokens WHERE expires_at <= $1", now);
            affected!(pool, "INSERT INTO tokens (token_hash, user_name, session_started, expires_at) VALUES ($1, $2, $3, $4)",
                token.hash, token.user, token.session_started, token.expires_at);
            Ok(())
        })
    }

    fn take_token<'a>(
        &'a self,
        hash: &'a [u8],
        now: i64,
    ) -> StoreFuture<'a, Option<(String, i64)>> {
        op!(self, pool => {
            let row = sqlx::query(
                "DELETE FROM tokens WHERE token_hash = $1 AND expires_at > $2 RETURNING user_name, session_started",
            )
            .bind(hash)
            .bind(now)
            .fetch_optional(pool)
            .await?;
            Ok(match row {
                Some(row) => Some((row.try_get("user_name")?, row.try_get("session_started")?)),
                None => None,
            })
        })
    }

    fn token_user<'a>(&'a self, hash: &'a [u8], now: i64) -> StoreFuture<'a, Option<User>> {
        op!(self, pool => {
            let row = sqlx::query(
                "SELECT u.* FROM tokens t JOIN users u ON u.name = t.user_name WHERE t.token_hash = $1 AND t.expires_at > $2 AND u.disabled = 0",
            )
            .bind(hash)
            .bind(now)
            .fetch_optional(pool)
            .await?;
            Ok(row.as_ref().map(|r| user_from_row(r)).transpose()?)
        })
    }

    fn revoke_token<'a>(&'a self, hash: &'a [u8]) -> StoreFuture<'a, bool> {
        op!(self, pool => {
            Ok(affected!(pool, "DELETE FROM tokens WHERE token_hash = $1", hash) == 1)
        })
    }

    fn create_upload<'a>(&'a self, upload: &'a Upload) -> StoreFuture<'a, ()> {
        op!(self, pool => {
            let key = upload.staging_key.as_ref();
            affected!(pool, "INSERT INTO uploads (id, owner, length, upload_offset, metadata, expires_at, staged_len, kek_version, staging_key, staging, via_request) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)", &upload.id, &upload.owner, sql_u64(upload.length), sql_u64(upload.offset), &upload.metadata, upload.expires_at, sql_u64(upload.staged_len), key.map(|k| i64::from(k.kek_version)), key.map(|k| k.wrapped.clone()), &upload.staging, &upload.via_request);
            Ok(())
        })
    }

    fn owned_files<'a>(&'a self, owner: &'a str) -> StoreFuture<'a, Vec<FileRecord>> {
        Box::pin(self.rows_by(
            "SELECT * FROM files WHERE owner = $1 ORDER BY id",
            owner,
            file_from_row,
        ))
    }

    fn owner_uploads<'a>(&'a self, owner: &'a str) -> StoreFuture<'a, Vec<Upload>> {
        Box::pin(self.rows_by(
            "SELECT * FROM uploads WHERE owner = $1 ORDER BY id",
            owner,
            upload_from_row,
        ))
    }

    fn upload<'a>(&'a self, id: &'a str) -> StoreFuture<'a, Option<Upload>> {
        Box::pin(self.row_by("SELECT * FROM uploads WHERE id = $1", id, upload_from_row))
    }

    fn advance_upload<'a>(
        &'a self,
        id: &'a str,
        from: u64,
        to: u64,
        staged_len: u64,
        staging: &'a [u8],
    ) -> StoreFuture<'a, bool> {
        op!(self, pool => {
            Ok(affected!(pool, "UPDATE uploads SET upload_offset = $1, staged_len = $2, staging = $3 WHERE id = $4 AND upload_offset = $5", sql_u64(to), sql_u64(staged_len), staging, id, sql_u64(from)) == 1)
        })
    }

    fn lease_upload<'a>(
        &'a self,
        id: &'a str,
        holder: &'a str,
        until: i64,
        now: i64,
    ) -> StoreFuture<'a, bool> {
        op!(self, pool => {
            Ok(affected!(pool, "UPDATE uploads SET lease_holder = $1, lease_until = $2 WHERE id = $3 AND (lease_holder IS NULL OR lease_holder = $1 OR lease_until < $4)", holder, until, id, now) == 1)
        })
    }

    fn release_upload<'a>(&'a self, id: &'a str, holder: &'a str) -> StoreFuture<'a, ()> {
        op!(self, pool => {
            affected!(pool, "UPDATE uploads SET lease_holder = NULL, lease_until = NULL WHERE id = $1 AND lease_holder = $2", id, holder);
            Ok(())
        })
    }

    fn delete_upload<'a>(&'a self, id: &'a str) -> StoreFuture<'a, bool> {
        Box::pin(self.delete_by("DELETE FROM uploads WHERE id = $1", id))
    }

    fn expired_uploads(&self, now: i64) -> StoreFuture<'_, Vec<String>> {
        op!(self, pool => {
            let rows = sqlx::query("SELECT id FROM uploads WHERE expires_at < $1")
                .bind(now)
                .fetch_all(pool)
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
        op!(self, pool => {
            let mut tx = pool.begin().await?;
            affected!(&mut *tx, "INSERT INTO files (id, owner, size, digest, digest_alg, created_at, receipt, expires_at, delete_when_received, via_request) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)", &file.id, &file.owner, sql_u64(file.size), &file.digest, file.digest_alg.name(), file.created_at, &file.receipt, file.expires_at, i64::from(file.delete_when_received), &file.via_request);
            if let Some(key) = object_key {
                affected!(&mut *tx, "INSERT INTO object_keys (file_id, kek_version, wrapped, stored_size) VALUES ($1, $2, $3, $4)", &key.file_id, i64::from(key.key.kek_version), &key.key.wrapped, sql_u64(key.stored_size));
            }
            for (user, stanza) in wraps {
                affected!(&mut *tx, "INSERT INTO wraps (file_id, user_name, stanza, created_at) VALUES ($1, $2, $3, $4)", &file.id, user, stanza, file.created_at);
            }
            affected!(&mut *tx, "DELETE FROM uploads WHERE id = $1", upload_id);
            tx.commit().await?;
            Ok(())
        })
    }

    fn file<'a>(&'a self, id: &'a str) -> StoreFuture<'a, Option<FileRecord>> {
        Box::pin(async move {
            // An expired file is gone for every reader at once, whenever
            // the sweep gets to its bytes.
            let file = self
                .row_by("SELECT * FROM files WHERE id = $1", id, file_from_row)
                .await?;
            Ok(file.filter(|f| !f.expired(crate::unix_now())))
        })
    }

    fn expired_files(&self, now: i64) -> StoreFuture<'_, Vec<String>> {
        op!(self, pool => {
            let rows = sqlx::query("SELECT id FROM files WHERE expires_at IS NOT NULL AND expires_at <= $1 ORDER BY expires_at LIMIT 1000")
                .bind(now)
                .fetch_all(pool)
                .await?;
            Ok(rows.iter().map(|r| r.get("id")).collect())
        })
    }

    fn unreceived_wraps<'a>(&'a self, file_id: &'a str) -> StoreFuture<'a, u64> {
        op!(self, pool => {
            let row = sqlx::query("SELECT COUNT(*) AS n FROM wraps w JOIN files f ON f.id = w.file_id WHERE w.file_id = $1 AND w.user_name <> f.owner AND w.received_at IS NULL")
                .bind(file_id)
                .fetch_one(pool)
                .await?;
            Ok(row.get::<i64, _>("n").max(0) as u64)
        })
    }

    fn list_files<'a>(
        &'a self,
        owner: &'a str,
        page: &'a Page,
    ) -> StoreFuture<'a, Vec<FileRecord>> {
        Box::pin(self.files_page(
            "SELECT f.* FROM files f WHERE f.owner = $1 AND f.via_request IS NULL AND ($2 = 1 OR f.created_at < $3 OR (f.created_at = $3 AND f.id < $4)) AND (f.expires_at IS NULL OR f.expires_at > $6) ORDER BY f.created_at DESC, f.id DESC LIMIT $5",
            owner,
            page,
        ))
    }

    fn delete_file<'a>(&'a self, id: &'a str) -> StoreFuture<'a, bool> {
        Box::pin(self.delete_by("DELETE FROM files WHERE id = $1", id))
    }

    fn put_wrap<'a>(
        &'a self,
        file_id: &'a str,
        user: &'a str,
        stanza: &'a [u8],
        now: i64,
    ) -> StoreFuture<'a, ()> {
        op!(self, pool => {
            affected!(pool, "INSERT INTO wraps (file_id, user_name, stanza, created_at) VALUES ($1, $2, $3, $4) ON CONFLICT (file_id, user_name) DO UPDATE SET stanza = excluded.stanza", file_id, user, stanza, now);
            Ok(())
        })
    }

    fn wrap<'a>(&'a self, file_id: &'a str, user: &'a str) -> StoreFuture<'a, Option<Vec<u8>>> {
        op!(self, pool => {
            let row = sqlx::query("SELECT stanza FROM wraps WHERE file_id = $1 AND user_name = $2")
                .bind(file_id)
                .bind(user)
                .fetch_optional(pool)
                .await?;
            Ok(row.map(|r| r.get("stanza")))
        })
    }

    fn delete_wrap<'a>(&'a self, file_id: &'a str, user: &'a str) -> StoreFuture<'a, bool> {
        op!(self, pool => {
            Ok(affected!(pool, "DELETE FROM wraps WHERE file_id = $1 AND user_name = $2", file_id, user) == 1)
        })
    }

    fn wrap_users<'a>(&'a self, file_id: &'a str) -> StoreFuture<'a, Vec<String>> {
        op!(self, pool => {
            let rows =
                sqlx::query("SELECT user_name FROM wraps WHERE file_id = $1 ORDER BY user_name")
                    .bind(file_id)
                    .fetch_all(pool)
                    .await?;
            Ok(rows.iter().map(|r| r.get("user_name")).collect())
        })
    }

    fn shared_with<'a>(
        &'a self,
        user: &'a str,
        page: &'a Page,
        unreceived: bool,
    ) -> StoreFuture<'a, Vec<FileRecord>> {
        let sql = if unreceived {
            "SELECT f.* FROM files f JOIN wraps w ON w.file_id = f.id WHERE w.user_name = $1 AND (f.owner <> $1 OR f.via_request IS NOT NULL) AND w.received_at IS NULL AND ($2 = 1 OR f.created_at < $3 OR (f.created_at = $3 AND f.id < $4)) AND (f.expires_at IS NULL OR f.expires_at > $6) ORDER BY f.created_at DESC, f.id DESC LIMIT $5"
        } else {
            "SELECT f.* FROM files f JOIN wraps w ON w.file_id = f.id WHERE w.user_name = $1 AND (f.owner <> $1 OR f.via_request IS NOT NULL) AND ($2 = 1 OR f.created_at < $3 OR (f.created_at = $3 AND f.id < $4)) AND (f.expires_at IS NULL OR f.expires_at > $6) ORDER BY f.created_at DESC, f.id DESC LIMIT $5"
        };
        Box::pin(self.files_page(sql, user, page))
    }

    fn mark_received<'a>(
        &'a self,
        file_id: &'a str,
        user: &'a str,
        at: i64,
    ) -> StoreFuture<'a, bool> {
        op!(self, pool => {
            Ok(affected!(pool, "UPDATE wraps SET received_at = COALESCE(received_at, $3) WHERE file_id = $1 AND user_name = $2", file_id, user, at) == 1)
        })
    }

    fn create_request<'a>(&'a self, request: &'a Request) -> StoreFuture<'a, ()> {
        op!(self, pool => {
            affected!(pool, "INSERT INTO requests (id, owner, created_at, expires_at, max_files, max_file_bytes, files_started, ask_name, access_hash, password_hash) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)", &request.id, &request.owner, request.created_at, request.expires_at, request.max_files.map(sql_u64), request.max_file_bytes.map(sql_u64), sql_u64(request.files_started), i64::from(request.ask_name), &request.access_hash, &request.password_hash);
            Ok(())
        })
    }

    fn request<'a>(&'a self, id: &'a str) -> StoreFuture<'a, Option<Request>> {
        Box::pin(self.row_by("SELECT * FROM requests WHERE id = $1", id, request_from_row))
    }

    fn owner_requests<'a>(&'a self, owner: &'a str) -> StoreFuture<'a, Vec<Request>> {
        Box::pin(self.rows_by(
            "SELECT * FROM requests WHERE owner = $1 ORDER BY created_at DESC, id",
            owner,
            request_from_row,
        ))
    }

    fn reserve_request_attempt<'a>(
        &'a self,
        id: &'a str,
        max_failures: u32,
    ) -> StoreFuture<'a, bool> {
        op!(self, pool => {
            Ok(affected!(pool, "UPDATE requests SET failed_attempts = failed_attempts + 1 WHERE id = $1 AND failed_attempts < $2", id, i64::from(max_failures)) == 1)
        })
    }

    fn release_request_attempt<'a>(&'a self, id: &'a str) -> StoreFuture<'a, ()> {
        op!(self, pool => {
            affected!(pool, "UPDATE requests SET failed_attempts = failed_attempts - 1 WHERE id = $1 AND failed_attempts > 0", id);
            Ok(())
        })
    }

    fn delete_request<'a>(&'a self, id: &'a str) -> StoreFuture<'a, bool> {
        Box::pin(self.delete_by("DELETE FROM requests WHERE id = $1", id))
    }

    fn spend_request_file<'a>(&'a self, id: &'a str, now: i64) -> StoreFuture<'a, bool> {
        op!(self, pool => {
            Ok(affected!(pool, "UPDATE requests SET files_started = files_started + 1 WHERE id = $1 AND expires_at > $2 AND (max_files IS NULL OR files_started < max_files)", id, now) == 1)
        })
    }

    fn sweep_requests(&self, now: i64) -> StoreFuture<'_, u64> {
        op!(self, pool => {
            Ok(affected!(pool, "DELETE FROM requests WHERE expires_at <= $1", now))
        })
    }

    fn create_link<'a>(&'a self, link: &'a Link) -> StoreFuture<'a, ()> {
        op!(self, pool => {
            affected!(pool, "INSERT INTO links (id, file_id, stanza, created_at, expires_at, max_downloads, downloads, password_hash, client_salt, failed_attempts, access_hash) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)", &link.id, &link.file_id, &link.stanza, link.created_at, link.expires_at, link.max_downloads.map(sql_u64), sql_u64(link.downloads), &link.password_hash, &link.client_salt, i64::from(link.failed_attempts), &link.access_hash);
            Ok(())
        })
    }

    fn link<'a>(&'a self, id: &'a str) -> StoreFuture<'a, Option<Link>> {
        Box::pin(self.row_by("SELECT * FROM links WHERE id = $1", id, link_from_row))
    }

    fn file_links<'a>(&'a self, file_id: &'a str) -> StoreFuture<'a, Vec<Link>> {
        Box::pin(self.rows_by(
            "SELECT * FROM links WHERE file_id = $1 ORDER BY created_at DESC, id",
            file_id,
            link_from_row,
        ))
    }

    fn delete_link<'a>(&'a self, id: &'a str) -> StoreFuture<'a, bool> {
        Box::pin(self.delete_by("DELETE FROM links WHERE id = $1", id))
    }

    fn reserve_link_attempt<'a>(&'a self, id: &'a str, max_failures: u32) -> StoreFuture<'a, bool> {
        op!(self, pool => {
            Ok(affected!(pool, "UPDATE links SET failed_attempts = failed_attempts + 1 WHERE id = $1 AND failed_attempts < $2", id, i64::from(max_failures)) == 1)
        })
    }

    fn release_link_attempt<'a>(&'a self, id: &'a str) -> StoreFuture<'a, ()> {
        op!(self, pool => {
            affected!(pool, "UPDATE links SET failed_attempts = failed_attempts - 1 WHERE id = $1 AND failed_attempts > 0", id);
            Ok(())
        })
    }

    fn spend_link_download<'a>(
        &'a self,
        id: &'a str,
        now: i64,
        max_failures: u32,
    ) -> StoreFuture<'a, bool> {
        op!(self, pool => {
            Ok(affected!(pool, "UPDATE links SET downloads = downloads + 1 WHERE id = $1 AND expires_at > $2 AND (max_downloads IS NULL OR downloads < max_downloads) AND failed_attempts < $3", id, now, i64::from(max_failures)) == 1)
        })
    }

    fn put_link_ticket<'a>(
        &'a self,
        hash: &'a [u8],
        link_id: &'a str,
        expires_at: i64,
    ) -> StoreFuture<'a, ()> {
        op!(self, pool => {
            affected!(pool, "INSERT INTO link_tickets (ticket_hash, link_id, expires_at) VALUES ($1, $2, $3)", hash, link_id, expires_at);
            Ok(())
        })
    }

    fn ticket_link<'a>(&'a self, hash: &'a [u8], now: i64) -> StoreFuture<'a, Option<Link>> {
        op!(self, pool => {
            let row = sqlx::query(
                "SELECT l.* FROM link_tickets t JOIN links l ON l.id = t.link_id WHERE t.ticket_hash = $1 AND t.expires_at > $2",
            )
            .bind(hash)
            .bind(now)
            .fetch_optional(pool)
            .await?;
            Ok(row.as_ref().map(|r| link_from_row(r)).transpose()?)
        })
    }

    fn sweep_links(&self, now: i64) -> StoreFuture<'_, u64> {
        op!(self, pool => {
            let mut tx = pool.begin().await?;
            affected!(&mut *tx, "DELETE FROM link_tickets WHERE expires_at <= $1", now);
            let unused = "NOT EXISTS (SELECT 1 FROM link_tickets t WHERE t.link_id = links.id)";
            let empty: &[u8] = &[];
            // The key goes at expiry; the tombstone later.
            affected!(&mut *tx, sqlx::AssertSqlSafe(format!("UPDATE links SET stanza = $2, password_hash = NULL, client_salt = NULL WHERE expires_at <= $1 AND stanza <> $2 AND {unused}")), now, empty);
            let done = affected!(&mut *tx, sqlx::AssertSqlSafe(format!("DELETE FROM links WHERE expires_at <= $1 AND {unused}")), now.saturating_sub(super::EXPIRED_LINK_KEPT_SECS));
            tx.commit().await?;
            Ok(done)
        })
    }

    fn usage<'a>(&'a self, user: &'a str) -> StoreFuture<'a, Usage> {
        op!(self, pool => {
            let row = sqlx::query(
                "SELECT (SELECT CAST(COALESCE(SUM(size), 0) AS BIGINT) FROM files WHERE owner = $1) AS stored, (SELECT CAST(COALESCE(SUM(length), 0) AS BIGINT) FROM uploads WHERE owner = $1) AS reserved, (SELECT COUNT(*) FROM uploads WHERE owner = $1) AS open",
            )
            .bind(user)
            .fetch_one(pool)
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
        op!(self, pool => {
            let row = sqlx::query("SELECT seq, hash FROM audit_log ORDER BY seq DESC LIMIT 1")
                .fetch_optional(pool)
                .await?;
            Ok(row.map(|r| (r.get("seq"), r.get("hash"))))
        })
    }

    fn insert_audit<'a>(&'a self, row: &'a AuditRow) -> StoreFuture<'a, ()> {
        op!(self, pool => {
            let result = sqlx::query(
                "INSERT INTO audit_log (seq, time, actor, ip, action, target, outcome, detail, prev_hash, hash) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
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
            .execute(pool)
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
        op!(self, pool => {
            let rows = sqlx::query("SELECT * FROM audit_log WHERE seq > $1 ORDER BY seq LIMIT $2")
                .bind(after)
                .bind(i64::from(limit))
                .fetch_all(pool)
                .await?;
            Ok(rows.iter().map(|r| audit_from_row(r)).collect::<Result<_, _>>()?)
        })
    }

    fn insert_audit_checkpoint<'a>(&'a self, cp: &'a AuditCheckpoint) -> StoreFuture<'a, ()> {
        op!(self, pool => {
            affected!(pool, "INSERT INTO audit_checkpoints (seq, hash, time, signature) VALUES ($1, $2, $3, $4) ON CONFLICT DO NOTHING", cp.seq, &cp.hash, cp.time, &cp.signature);
            Ok(())
        })
    }

    fn audit_checkpoints(&self) -> StoreFuture<'_, Vec<AuditCheckpoint>> {
        op!(self, pool => {
            let rows = sqlx::query("SELECT * FROM audit_checkpoints ORDER BY seq")
                .fetch_all(pool)
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
        op!(self, pool => {
            let rows = sqlx::query("SELECT version, sealed FROM keks ORDER BY version")
                .fetch_all(pool)
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
        op!(self, pool => {
            let result =
                sqlx::query("INSERT INTO keks (version, sealed, created_at) VALUES ($1, $2, $3)")
                    .bind(i64::from(version))
                    .bind(sealed)
                    .bind(now)
                    .execute(pool)
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
            "SELECT * FROM object_keys WHERE file_id = $1",
            file_id,
            object_key_from_row,
        ))
    }

    fn stale_object_keys(&self, version: u32, limit: u32) -> StoreFuture<'_, Vec<ObjectKey>> {
        op!(self, pool => {
            let rows = sqlx::query(
                "SELECT * FROM object_keys WHERE kek_version < $1 ORDER BY file_id LIMIT $2",
            )
            .bind(i64::from(version))
            .bind(i64::from(limit))
            .fetch_all(pool)
            .await?;
            Ok(rows
                .iter()
                .map(|r| object_key_from_row(r))
                .collect::<Result<_, _>>()?)
        })
    }

    fn stale_upload_keys(
        &self,
        version: u32,
        limit: u32,
    ) -> StoreFuture<'_, Vec<(String, WrappedKey)>> {
        op!(self, pool => {
            let rows = sqlx::query(
                "SELECT id, kek_version, staging_key FROM uploads WHERE kek_version < $1 ORDER BY id LIMIT $2",
            )
            .bind(i64::from(version))
            .bind(i64::from(limit))
            .fetch_all(pool)
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

    fn reseal_keks<'a>(&'a self, resealed: &'a [(u32, Vec<u8>, Vec<u8>)]) -> StoreFuture<'a, bool> {
        op!(self, pool => {
            let mut tx = pool.begin().await?;
            let mut replaced = 0;
            for (version, old, new) in resealed {
                replaced += affected!(&mut *tx, "UPDATE keks SET sealed = $1 WHERE version = $2 AND sealed = $3", new, i64::from(*version), old);
            }
            let total: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM keks")
                .fetch_one(&mut *tx)
                .await?;
            if replaced != resealed.len() as u64 || total != resealed.len() as i64 {
                // Dropping the transaction rolls it back.
                return Ok(false);
            }
            tx.commit().await?;
            Ok(true)
        })
    }

    fn rewrap<'a>(
        &'a self,
        objects: &'a [(String, WrappedKey, WrappedKey)],
        uploads: &'a [(String, WrappedKey, WrappedKey)],
    ) -> StoreFuture<'a, u64> {
        op!(self, pool => {
            let mut tx = pool.begin().await?;
            let mut done = 0;
            for (id, old, new) in objects {
                done += affected!(&mut *tx, "UPDATE object_keys SET kek_version = $1, wrapped = $2 WHERE file_id = $3 AND kek_version = $4", i64::from(new.kek_version), &new.wrapped, id, i64::from(old.kek_version));
            }
            for (id, old, new) in uploads {
                done += affected!(&mut *tx, "UPDATE uploads SET kek_version = $1, staging_key = $2 WHERE id = $3 AND kek_version = $4", i64::from(new.kek_version), &new.wrapped, id, i64::from(old.kek_version));
            }
            tx.commit().await?;
            Ok(done)
        })
    }

    fn kek_usage(&self) -> StoreFuture<'_, Vec<KekUsage>> {
        op!(self, pool => {
            let rows = sqlx::query(
                "SELECT k.version, k.created_at, (SELECT COUNT(*) FROM object_keys o WHERE o.kek_version = k.version) AS objects, (SELECT COUNT(*) FROM uploads u WHERE u.kek_version = k.version) AS uploads FROM keks k ORDER BY k.version",
            )
            .fetch_all(pool)
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
        op!(self, pool => {
            Ok(affected!(pool, "DELETE FROM keks WHERE version = $1 AND NOT EXISTS (SELECT 1 FROM object_keys WHERE kek_version = $1) AND NOT EXISTS (SELECT 1 FROM uploads WHERE kek_version = $1)", i64::from(version)) == 1)
        })
    }
}
