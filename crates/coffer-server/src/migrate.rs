//! `coffer server migrate-store`: moves a server that outgrew one machine
//! from its embedded storage (or any storage) to other storage, typically
//! PostgreSQL + S3.
//!
//! Objects go first, each read back from the destination and compared with
//! the source's SHA-256 (and, for E2EE files, with the digest recorded at
//! upload), then the metadata rows; so the destination's database never
//! names an object it does not hold. Every step skips what is already
//! there and verified, so an interrupted migration is resumed by running it
//! again. Unfinished uploads are not carried over (their clients start them
//! again); login challenges neither. The server must be stopped meanwhile.

use std::sync::Arc;

use anyhow::{Context, Result, bail};

use crate::config::Config;
use crate::objects::ObjectStore;
use crate::store::{Column, DigestAlg, FileRecord, SqlStore, Table};

/// The tables copied, parents before children (also what a backup's
/// snapshot holds). Unfinished uploads and login challenges are left out on
/// purpose; a test checks that every other table and column is here.
pub(crate) const TABLES: &[Table] = &[
    Table {
        name: "users",
        key: "name",
        columns: &[
            Column::Text("name"),
            Column::Text("public_identity"),
            Column::Int("is_admin"),
            Column::Int("quota_bytes"),
            Column::Int("disabled"),
            Column::Int("created_at"),
        ],
    },
    Table {
        name: "tokens",
        key: "token_hash",
        columns: &[
            Column::Blob("token_hash"),
            Column::Text("user_name"),
            Column::Int("expires_at"),
            Column::Int("session_started"),
        ],
    },
    Table {
        name: "keks",
        key: "version",
        columns: &[
            Column::Int("version"),
            Column::Blob("sealed"),
            Column::Int("created_at"),
        ],
    },
    Table {
        name: "requests",
        key: "id",
        columns: &[
            Column::Text("id"),
            Column::Text("owner"),
            Column::Int("created_at"),
            Column::Int("expires_at"),
            Column::Int("max_files"),
            Column::Int("max_file_bytes"),
            Column::Int("files_started"),
            Column::Int("ask_name"),
            Column::Blob("access_hash"),
            Column::Text("password_hash"),
            Column::Int("failed_attempts"),
        ],
    },
    Table {
        name: "files",
        key: "id",
        columns: &[
            Column::Text("id"),
            Column::Text("owner"),
            Column::Int("size"),
            Column::Blob("digest"),
            Column::Text("digest_alg"),
            Column::Int("created_at"),
            Column::Text("receipt"),
            Column::Int("expires_at"),
            Column::Int("delete_when_received"),
            Column::Text("via_request"),
        ],
    },
    Table {
        name: "object_keys",
        key: "file_id",
        columns: &[
            Column::Text("file_id"),
            Column::Int("kek_version"),
            Column::Blob("wrapped"),
            Column::Int("stored_size"),
        ],
    },
    Table {
        name: "wraps",
        key: "file_id, user_name",
        columns: &[
            Column::Text("file_id"),
            Column::Text("user_name"),
            Column::Blob("stanza"),
            Column::Int("created_at"),
            Column::Int("received_at"),
        ],
    },
    Table {
        name: "links",
        key: "id",
        columns: &[
            Column::Text("id"),
            Column::Text("file_id"),
            Column::Blob("stanza"),
            Column::Int("created_at"),
            Column::Int("expires_at"),
            Column::Int("max_downloads"),
            Column::Int("downloads"),
            Column::Text("password_hash"),
            Column::Blob("client_salt"),
            Column::Int("failed_attempts"),
            Column::Blob("access_hash"),
        ],
    },
    Table {
        name: "link_tickets",
        key: "ticket_hash",
        columns: &[
            Column::Blob("ticket_hash"),
            Column::Text("link_id"),
            Column::Int("expires_at"),
        ],
    },
    Table {
        name: "audit_log",
        key: "seq",
        columns: &[
            Column::Int("seq"),
            Column::Int("time"),
            Column::Text("actor"),
            Column::Text("ip"),
            Column::Text("action"),
            Column::Text("target"),
            Column::Text("outcome"),
            Column::Text("detail"),
            Column::Blob("prev_hash"),
            Column::Blob("hash"),
        ],
    },
    Table {
        name: "audit_checkpoints",
        key: "seq",
        columns: &[
            Column::Int("seq"),
            Column::Blob("hash"),
            Column::Int("time"),
            Column::Blob("signature"),
        ],
    },
];

/// What a migration did.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Report {
    /// Objects copied now.
    pub objects_copied: u64,
    /// Objects found already in place and verified.
    pub objects_present: u64,
    /// Bytes copied.
    pub bytes_copied: u64,
    /// Rows read per table.
    pub rows: Vec<(&'static str, u64)>,
    /// Unfinished uploads left behind.
    pub uploads_left: u64,
}

/// Storage on both sides.
pub struct Sides {
    /// Where from.
    pub source: (SqlStore, Arc<dyn ObjectStore>),
    /// Where to.
    pub dest: (SqlStore, Arc<dyn ObjectStore>),
}

/// Copies everything from `sides.source` to `sides.dest`, reporting each
/// object to `progress`.
pub async fn migrate(sides: &Sides, progress: impl Fn(&str, u64)) -> Result<Report> {
    let (from_db, from_objects) = &sides.source;
    let (to_db, to_objects) = &sides.dest;
    let mut report = Report::default();
    for (file, stored_size, e2ee) in from_db.stored_objects().await? {
        let copied = copy_object(
            from_objects.as_ref(),
            to_objects.as_ref(),
            &file,
            stored_size,
            e2ee,
        )
        .await
        .with_context(|| format!("object {}", file.id))?;
        if copied {
            report.objects_copied += 1;
            report.bytes_copied += stored_size;
        } else {
            report.objects_present += 1;
        }
        progress(&file.id, stored_size);
    }
    for table in TABLES {
        let rows = from_db
            .copy_table_to(to_db, table)
            .await
            .with_context(|| format!("copying table {}", table.name))?;
        report.rows.push((table.name, rows));
    }
    report.uploads_left = from_db.open_upload_count().await?;
    Ok(report)
}

/// Length, SHA-256 (to compare source and copy byte for byte) and, for an
/// E2EE object, the digest its record holds (the tree root, or SHA-256 for
/// objects from before format v2), in one pass.
struct Measured {
    len: u64,
    sha256: [u8; 32],
    record_digest: Option<[u8; 32]>,
}

async fn measure_object(
    mut stream: crate::objects::ByteStream<'_>,
    file: &FileRecord,
    e2ee: bool,
) -> std::io::Result<Measured> {
    use futures_util::StreamExt as _;
    let mut sha = aws_lc_rs::digest::Context::new(&aws_lc_rs::digest::SHA256);
    let mut tree = (e2ee && file.digest_alg == DigestAlg::Coffer2Root)
        .then(|| coffer_format::ObjectVerifier::new(file.size));
    let mut len = 0u64;
    while let Some(piece) = stream.next().await {
        let piece = piece?;
        sha.update(&piece);
        len += piece.len() as u64;
        if let Some(verifier) = tree.as_mut()
            && verifier.update(&piece).is_err()
        {
            tree = None;
        }
    }
    let sha256: [u8; 32] = sha.finish().as_ref().try_into().unwrap_or([0; 32]);
    let record_digest = match (e2ee, file.digest_alg) {
        (true, DigestAlg::Sha256) => Some(sha256),
        (true, DigestAlg::Coffer2Root) => tree.and_then(|v| v.finish().ok()).map(|v| v.signed.root),
        _ => None,
    };
    Ok(Measured {
        len,
        sha256,
        record_digest,
    })
}

/// Copies one object unless the destination already holds it intact;
/// returns whether it copied. Fails if the source does not match its record
/// or the copy does not read back equal to the source.
async fn copy_object(
    from: &dyn ObjectStore,
    to: &dyn ObjectStore,
    file: &FileRecord,
    size: u64,
    e2ee: bool,
) -> Result<bool> {
    // What the source must be: its recorded length, and for E2EE files
    // the digest recorded at upload (server-encrypted objects have none
    // that can be checked without the key).
    let matches_record = |m: &Measured| {
        m.len == size
            && (!e2ee || m.record_digest.as_ref().map(|d| &d[..]) == Some(&file.digest[..]))
    };
    let damaged = "the source object is damaged (its size or digest differs from the record)";
    let present = match to.read(&file.id, 0, size).await {
        Ok(stream) => measure_object(stream, file, e2ee).await.ok(),
        Err(_) => None,
    };
    if let Some(present) = present {
        let source = measure_object(from.read(&file.id, 0, size).await?, file, e2ee).await?;
        if !matches_record(&source) {
            bail!(damaged);
        }
        if present.sha256 == source.sha256 && present.len == source.len {
            return Ok(false);
        }
    }
    let (written_len, written_sha) = to
        .write_object(&file.id, from.read(&file.id, 0, size).await?)
        .await?;
    let read_back = measure_object(to.read(&file.id, 0, size).await?, file, e2ee).await?;
    if !matches_record(&read_back) {
        // No row names the copy; remove it anyway rather than leave it.
        let _ = to.delete_object(&file.id).await;
        bail!(damaged);
    }
    if (read_back.len, read_back.sha256) != (written_len, written_sha) {
        bail!("the copy does not read back equal to the source");
    }
    Ok(true)
}

/// `config` with its storage replaced by `target`'s.
pub fn retarget(config: &Config, target: &Config) -> Config {
    Config {
        database: target.database.clone(),
        objects: target.objects.clone(),
        ..config.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::TABLES;
    use crate::store::{Database, SqlStore};

    /// A column added by a migration but not to [`TABLES`] would be lost
    /// by every `migrate-store` and every backup.
    #[tokio::test]
    async fn every_table_and_column_of_the_schema_is_copied() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("meta.db");
        SqlStore::open(&Database::Sqlite(path.clone()))
            .await
            .unwrap();
        let db = sqlx::SqlitePool::connect(&format!("sqlite://{}", path.display()))
            .await
            .unwrap();
        let schema: Vec<(String, String)> = sqlx::query_as(
            "SELECT m.name, p.name FROM sqlite_master m, pragma_table_info(m.name) p \
             WHERE m.type = 'table' AND m.name NOT LIKE 'sqlite_%' AND m.name NOT LIKE '_sqlx_%' \
             AND m.name NOT IN ('uploads', 'challenges') ORDER BY m.name, p.cid",
        )
        .fetch_all(&db)
        .await
        .unwrap();
        let mut copied: Vec<(String, String)> = TABLES
            .iter()
            .flat_map(|t| {
                t.columns
                    .iter()
                    .map(|c| (t.name.to_string(), c.name().to_string()))
            })
            .collect();
        let mut schema = schema;
        schema.sort();
        copied.sort();
        assert_eq!(copied, schema);
    }
}
