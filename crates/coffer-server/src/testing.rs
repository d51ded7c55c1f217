//! Test support (feature `testing`): which storage backends the test suites
//! run on, and a fresh, isolated database and bucket prefix for each test
//! server.
//!
//! `COFFER_TEST_BACKEND` picks the backend the end-to-end suites use:
//! `embedded` (SQLite + local disk, the default), `postgres` (PostgreSQL +
//! local disk) or `postgres-s3` (PostgreSQL + an S3 store). The servers come
//! from `COFFER_TEST_POSTGRES` (an admin URL whose role may create
//! databases) and `COFFER_TEST_S3_{ENDPOINT,BUCKET,REGION}` with the usual
//! `AWS_ACCESS_KEY_ID`/`AWS_SECRET_ACCESS_KEY`; `scripts/test-services`
//! starts both and prints these variables. A backend asked for but not
//! reachable fails the test; a suite that needs a server nobody configured
//! says so loudly and fails under `CI=true` ([`require`]).

use sqlx::Connection as _;

use crate::config::{Config, ObjectsKind};

/// A storage combination under test.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backend {
    /// SQLite + the local directory.
    Embedded,
    /// PostgreSQL + the local directory.
    Postgres,
    /// PostgreSQL + S3.
    PostgresS3,
}

impl Backend {
    /// The backend `COFFER_TEST_BACKEND` names (default: embedded).
    pub fn from_env() -> Self {
        match std::env::var("COFFER_TEST_BACKEND").as_deref() {
            Err(_) | Ok("") | Ok("embedded") => Backend::Embedded,
            Ok("postgres") => Backend::Postgres,
            Ok("postgres-s3") => Backend::PostgresS3,
            Ok(other) => {
                panic!("COFFER_TEST_BACKEND={other:?}: expected embedded, postgres or postgres-s3")
            }
        }
    }

    /// Whether objects live on the local disk (tests that tamper with
    /// object files directly need that).
    pub fn local_objects(self) -> bool {
        self != Backend::PostgresS3
    }
}

/// The admin URL of the test PostgreSQL, if configured.
pub fn postgres_url() -> Option<String> {
    std::env::var("COFFER_TEST_POSTGRES")
        .ok()
        .filter(|v| !v.is_empty())
}

/// Whether the test S3 store is configured.
pub fn s3_configured() -> bool {
    std::env::var("COFFER_TEST_S3_ENDPOINT").is_ok_and(|v| !v.is_empty())
}

/// For a suite that needs a server: true if it is configured; otherwise
/// prints a loud notice and returns false, or panics under `CI=true`, where
/// a skipped suite must never pass silently.
pub fn require(what: &str, configured: bool) -> bool {
    if configured {
        return true;
    }
    let message = format!(
        "SKIPPED: {what} is not configured. Run `eval \"$(scripts/test-services)\"` first."
    );
    if std::env::var("CI").is_ok_and(|v| v == "true") {
        panic!("{message} (CI=true: a skipped suite fails)");
    }
    // Straight to stderr: the test harness captures `eprintln!`, and a
    // skip must be seen.
    use std::io::Write as _;
    let _ = writeln!(std::io::stderr(), "\n!!!!!!!! {message}\n");
    false
}

/// Debian's SoftHSM2 module.
pub const SOFTHSM_MODULE: &str = "/usr/lib/softhsm/libsofthsm2.so";

/// A fresh SoftHSM2 token in its own directory: processes given
/// [`SoftHsm::env`] see it and no other.
pub struct SoftHsm {
    /// The `softhsm2.conf` that points at the token directory.
    pub conf: std::path::PathBuf,
    /// The token's label.
    pub token: String,
    /// A file holding the user PIN.
    pub pin_file: std::path::PathBuf,
    /// The user PIN.
    pub pin: String,
}

impl SoftHsm {
    /// Initialises a token labelled `token` under `dir` with
    /// `softhsm2-util`, or returns None (after [`require`]) when SoftHSM2
    /// is not installed.
    pub fn init(dir: &std::path::Path, token: &str) -> Option<Self> {
        let installed = std::path::Path::new(SOFTHSM_MODULE).exists();
        if !require("SoftHSM2 (Debian package softhsm2)", installed) {
            return None;
        }
        let tokens = dir.join("tokens");
        std::fs::create_dir_all(&tokens).expect("token directory");
        let conf = dir.join("softhsm2.conf");
        std::fs::write(
            &conf,
            format!(
                "directories.tokendir = {}\nobjectstore.backend = file\nlog.level = ERROR\n",
                tokens.display()
            ),
        )
        .expect("softhsm2.conf");
        let pin = random_suffix();
        let out = std::process::Command::new("softhsm2-util")
            .env("SOFTHSM2_CONF", &conf)
            .args(["--init-token", "--free", "--label", token, "--so-pin"])
            .arg(random_suffix())
            .args(["--pin", &pin])
            .output()
            .expect("softhsm2-util runs");
        assert!(
            out.status.success(),
            "softhsm2-util: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let pin_file = dir.join("pin");
        std::fs::write(&pin_file, format!("{pin}\n")).expect("pin file");
        Some(Self {
            conf,
            token: token.to_string(),
            pin_file,
            pin,
        })
    }

    /// The environment that selects this token's directory.
    pub fn env(&self) -> [(&'static str, std::path::PathBuf); 1] {
        [("SOFTHSM2_CONF", self.conf.clone())]
    }
}

/// A random lowercase hex name part.
fn random_suffix() -> String {
    let mut bytes = [0u8; 8];
    aws_lc_rs::rand::fill(&mut bytes).expect("system randomness");
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Creates an empty database on the test PostgreSQL; returns its URL. Its
/// name, `coffer_test_<unix seconds>_<random>`, tells `scripts/test-services`
/// which databases are left from runs long over (they are never dropped by
/// the tests themselves, and each takes about 8 MB).
pub async fn fresh_postgres_database() -> String {
    let admin = postgres_url().expect("COFFER_TEST_POSTGRES is not set");
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |since| since.as_secs());
    let name = format!("coffer_test_{now}_{}", random_suffix());
    let mut conn = sqlx::PgConnection::connect(&admin)
        .await
        .expect("cannot reach the test PostgreSQL (COFFER_TEST_POSTGRES)");
    sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
        .execute(&mut conn)
        .await
        .expect("cannot create a test database");
    let _ = conn.close().await;
    match admin.rsplit_once('/') {
        Some((base, _)) => format!("{base}/{name}"),
        None => panic!("COFFER_TEST_POSTGRES must end in /DATABASE"),
    }
}

/// Points `config` at an S3 prefix of its own in the test bucket.
pub fn use_fresh_s3_prefix(config: &mut Config) {
    let var = |name: &str| std::env::var(name).unwrap_or_default();
    assert!(s3_configured(), "COFFER_TEST_S3_ENDPOINT is not set");
    config.objects.kind = ObjectsKind::S3;
    config.objects.endpoint = var("COFFER_TEST_S3_ENDPOINT");
    config.objects.bucket = var("COFFER_TEST_S3_BUCKET");
    config.objects.region = var("COFFER_TEST_S3_REGION");
    config.objects.prefix = format!("test-{}", random_suffix());
    config.objects.allow_http = config.objects.endpoint.starts_with("http://127.0.0.1");
}

/// Points `config` at fresh storage of `backend`.
pub async fn configure(config: &mut Config, backend: Backend) {
    if backend != Backend::Embedded {
        config.database = fresh_postgres_database().await;
    }
    if backend == Backend::PostgresS3 {
        use_fresh_s3_prefix(config);
    }
}

/// The same as [`configure`], as environment variables for a server
/// process and its admin commands (`COFFER_DATABASE`, `COFFER_OBJECTS`,
/// `COFFER_S3_*`).
pub async fn storage_env(backend: Backend) -> Vec<(String, String)> {
    let mut config = Config::default();
    configure(&mut config, backend).await;
    let mut env = Vec::new();
    if backend != Backend::Embedded {
        env.push(("COFFER_DATABASE".to_string(), config.database));
    }
    if backend == Backend::PostgresS3 {
        let objects = config.objects;
        env.extend([
            ("COFFER_OBJECTS".to_string(), "s3".to_string()),
            ("COFFER_S3_ENDPOINT".to_string(), objects.endpoint),
            ("COFFER_S3_BUCKET".to_string(), objects.bucket),
            ("COFFER_S3_REGION".to_string(), objects.region),
            ("COFFER_S3_PREFIX".to_string(), objects.prefix),
            (
                "COFFER_S3_ALLOW_HTTP".to_string(),
                objects.allow_http.to_string(),
            ),
        ]);
    }
    env
}

/// The object store of the data directory at `root`, with the storage
/// environment `env` (from [`storage_env`]) applied: for tests that play a
/// hostile operator and edit stored objects, whichever backend holds them.
pub async fn object_store(
    root: &std::path::Path,
    env: &[(String, String)],
) -> std::sync::Arc<dyn crate::objects::ObjectStore> {
    let mut data = crate::DataDir::open(root).expect("data directory");
    data.config
        .apply_env(|name| env.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone()))
        .expect("storage environment");
    data.objects().await.expect("object store")
}

/// The whole of object `id`.
pub async fn read_object(objects: &dyn crate::objects::ObjectStore, id: &str) -> Vec<u8> {
    use futures_util::StreamExt as _;
    // Past the end is fine: both backends return what there is.
    let mut stream = objects.read(id, 0, u64::MAX >> 1).await.expect("object");
    let mut out = Vec::new();
    while let Some(chunk) = stream.next().await {
        out.extend_from_slice(&chunk.expect("object bytes"));
    }
    out
}

/// Replaces object `id` with `bytes`.
pub async fn write_object(objects: &dyn crate::objects::ObjectStore, id: &str, bytes: Vec<u8>) {
    let body: crate::objects::ByteStream<'static> = Box::pin(futures_util::stream::once(
        futures_util::future::ready(Ok(bytes::Bytes::from(bytes))),
    ));
    objects
        .write_object(id, body)
        .await
        .expect("object written");
}
