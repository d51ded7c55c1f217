//! The tamper-evident audit log: what the server records, and that
//! `audit::verify` names an edited, deleted, reordered or rewritten entry.

mod common;

use coffer_format::Identity;
use coffer_server::service::audit::{self, Event};
use coffer_server::store::{MetaStore, SqlStore};
use common::Server;
use sqlx::Row;

const TUS: (&str, &str) = ("tus-resumable", "1.0.0");
const OCTETS: (&str, &str) = ("content-type", "application/offset+octet-stream");

/// A store with eight entries and a signed head at the last one.
async fn chain() -> (tempfile::TempDir, SqlStore, sqlx::SqlitePool, Identity) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("meta.db");
    let store = SqlStore::open_sqlite(&path).await.unwrap();
    for i in 0..8 {
        let event = Event::new("alice", None, "download", &format!("file{i}"));
        assert_eq!(audit::append(&store, &event).await.unwrap(), i + 1);
    }
    let server = Identity::generate().unwrap();
    assert_eq!(audit::checkpoint(&store, &server).await.unwrap(), Some(8));
    let raw = sqlx::SqlitePool::connect(&format!("sqlite://{}", path.display()))
        .await
        .unwrap();
    (dir, store, raw, server)
}

async fn problems(store: &SqlStore, server: &Identity) -> Vec<String> {
    audit::verify(store, server.public())
        .await
        .unwrap()
        .problems
}

async fn exec(raw: &sqlx::SqlitePool, sql: &str) {
    sqlx::query(sqlx::AssertSqlSafe(sql.to_string()))
        .execute(raw)
        .await
        .unwrap();
}

#[tokio::test]
async fn an_untouched_chain_verifies() {
    let (_dir, store, _raw, server) = chain().await;
    let report = audit::verify(&store, server.public()).await.unwrap();
    assert!(report.is_intact(), "{:?}", report.problems);
    assert_eq!((report.entries, report.checkpoints), (8, 1));
    // Another server's key does not vouch for this chain.
    let other = Identity::generate().unwrap();
    assert!(!problems(&store, &other).await.is_empty());
}

#[tokio::test]
async fn an_edited_entry_is_named() {
    let (_dir, store, raw, server) = chain().await;
    exec(
        &raw,
        "UPDATE audit_log SET target = 'elsewhere' WHERE seq = 3",
    )
    .await;
    let found = problems(&store, &server).await;
    assert!(
        found
            .iter()
            .any(|p| p.starts_with("entry 3:") && p.contains("edited")),
        "{found:?}"
    );
    assert!(
        found.iter().all(|p| p.contains(" 3") || p.contains("3:")),
        "{found:?}"
    );
}

#[tokio::test]
async fn a_deleted_entry_is_named() {
    let (_dir, store, raw, server) = chain().await;
    exec(&raw, "DELETE FROM audit_log WHERE seq = 4").await;
    let found = problems(&store, &server).await;
    assert!(
        found
            .iter()
            .any(|p| p.contains("entries 4..=4 are missing")),
        "{found:?}"
    );
    assert!(found.iter().any(|p| p.starts_with("entry 5:")), "{found:?}");
}

#[tokio::test]
async fn reordered_entries_are_named() {
    let (_dir, store, raw, server) = chain().await;
    // Swap everything but the position between entries 5 and 6.
    exec(&raw, "UPDATE audit_log SET seq = -5 WHERE seq = 5").await;
    exec(&raw, "UPDATE audit_log SET seq = 5 WHERE seq = 6").await;
    exec(&raw, "UPDATE audit_log SET seq = 6 WHERE seq = -5").await;
    let found = problems(&store, &server).await;
    assert!(found.iter().any(|p| p.starts_with("entry 5:")), "{found:?}");
    assert!(found.iter().any(|p| p.starts_with("entry 6:")), "{found:?}");
}

#[tokio::test]
async fn a_rewritten_chain_fails_against_the_signed_head() {
    let (_dir, store, raw, server) = chain().await;
    // An attacker with database access edits entry 2 and recomputes every
    // later hash: the chain is self-consistent, the signed head is not.
    exec(&raw, "UPDATE audit_log SET actor = 'mallory' WHERE seq = 2").await;
    let mut prev = sqlx::query("SELECT hash FROM audit_log WHERE seq = 1")
        .fetch_one(&raw)
        .await
        .unwrap()
        .get::<Vec<u8>, _>("hash");
    for seq in 2..=8 {
        exec(
            &raw,
            &format!(
                "UPDATE audit_log SET prev_hash = x'{}' WHERE seq = {seq}",
                hex(&prev)
            ),
        )
        .await;
        let row = store.audit_entries(seq - 1, 1).await.unwrap().remove(0);
        let hash = audit::entry_hash(&row);
        exec(
            &raw,
            &format!(
                "UPDATE audit_log SET hash = x'{}' WHERE seq = {seq}",
                hex(&hash)
            ),
        )
        .await;
        prev = hash.to_vec();
    }
    let found = problems(&store, &server).await;
    assert_eq!(found.len(), 1, "{found:?}");
    assert!(
        found[0].contains("entry 8") && found[0].contains("signed"),
        "{found:?}"
    );

    // Cutting off the tail leaves the signed head pointing past the end.
    let (_dir, store, raw, server) = chain().await;
    exec(&raw, "DELETE FROM audit_log WHERE seq >= 7").await;
    let found = problems(&store, &server).await;
    assert!(
        found
            .iter()
            .any(|p| p.contains("entries 7..=8 are missing")),
        "{found:?}"
    );
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Appenders racing on every core, as a node's requests do (50 logins at
/// once once failed one with a 500: it lost the race for the head 32
/// times), all land, in one unbroken chain.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn racing_appenders_never_fork_the_chain() {
    let (_dir, store, _raw, server) = chain().await;
    let store = std::sync::Arc::new(store);
    let mut tasks = Vec::new();
    for i in 0..200 {
        let store = store.clone();
        tasks.push(tokio::spawn(async move {
            audit::append(
                store.as_ref(),
                &Event::new("bob", None, "download", &i.to_string()),
            )
            .await
            .unwrap()
        }));
    }
    let mut seqs = Vec::new();
    for task in tasks {
        seqs.push(task.await.unwrap());
    }
    seqs.sort();
    assert_eq!(seqs, (9..=208).collect::<Vec<_>>());
    let report = audit::verify(store.as_ref(), server.public())
        .await
        .unwrap();
    assert!(report.is_intact(), "{:?}", report.problems);
}

#[tokio::test]
async fn the_server_records_actions_and_no_secrets() {
    let server = Server::start(60).await;
    let alice = server.add_user("alice").await;
    let mut client = server.connect().await;
    let token = client.login("alice", &alice, &server.identity).await;
    let (status, _) = client
        .call(
            "POST",
            "/v1/auth/login",
            Some(serde_json::json!({"user": "alice", "nonce": "AAAA", "signature": "AAAA"})),
            None,
        )
        .await;
    assert_eq!(status, 401);
    let (status, headers, _) = client
        .raw(
            "POST",
            "/v1/uploads",
            &[TUS, OCTETS, ("upload-length", "5")],
            b"hello".to_vec(),
            Some(&token),
        )
        .await;
    assert_eq!(status, 201);
    let file = headers["coffer-file-id"].to_str().unwrap().to_string();
    assert_eq!(
        client
            .raw(
                "GET",
                &format!("/v1/files/{file}"),
                &[],
                vec![],
                Some(&token)
            )
            .await
            .0,
        200
    );
    assert_eq!(
        client
            .raw(
                "DELETE",
                &format!("/v1/files/{file}"),
                &[],
                vec![],
                Some(&token)
            )
            .await
            .0,
        200
    );
    let dir = server.stop().await; // signs the head
    let text = common::audit_text(dir.path()).await;
    let store = coffer_server::DataDir::open(&dir.path().join("data"))
        .unwrap()
        .store()
        .await
        .unwrap();
    let entries: Vec<serde_json::Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let actions: Vec<(&str, &str)> = entries
        .iter()
        .map(|e| {
            (
                e["action"].as_str().unwrap(),
                e["outcome"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        actions,
        [
            ("login", "ok"),
            ("login", "failed"),
            ("upload", "ok"),
            ("download", "ok"),
            ("delete", "ok")
        ]
    );
    assert_eq!(entries[2]["target"], file.as_str());
    assert_eq!(entries[0]["ip"], "127.0.0.1");
    assert!(!text.contains(&token), "a token reached the audit log");
    let identity = coffer_server::DataDir::open(&dir.path().join("data"))
        .unwrap()
        .identity;
    let report = audit::verify(&store, identity.public()).await.unwrap();
    assert!(report.is_intact(), "{:?}", report.problems);
    assert!(report.checkpoints >= 1, "no signed head after shutdown");
}
