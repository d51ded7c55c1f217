//! The PKCS#11 keyring against a SoftHSM2 token: a server with files and
//! an unfinished upload moves its keyring into the token, runs without the
//! master key, rotates inside the token, restarts, and serves every file;
//! the key is non-extractable and an edited keyring record fails closed.
//!
//! SoftHSM2 finds its tokens through `SOFTHSM2_CONF`, read once per
//! process, so the scenario runs in a child process of this test binary
//! that is given the token's configuration.

mod common;

use std::path::Path;
use std::process::Command;

use coffer_server::keyring::{self, RecordKind};
use coffer_server::store::MetaStore;
use coffer_server::testing::{SOFTHSM_MODULE, SoftHsm};
use coffer_server::{Config, DataDir, KeyringConfig, KeyringProvider};
use common::{Client, Node, Server};

const TOKEN: &str = "coffer-test";
const TUS: (&str, &str) = ("tus-resumable", "1.0.0");
const OCTETS: (&str, &str) = ("content-type", "application/offset+octet-stream");

#[test]
fn keyring_moves_into_a_softhsm_token_and_survives_rotation_and_restarts() {
    let tmp = tempfile::tempdir().unwrap();
    let Some(hsm) = SoftHsm::init(tmp.path(), TOKEN) else {
        return;
    };
    let out = Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "child_scenario",
            "--nocapture",
            "--test-threads=1",
        ])
        .envs(hsm.env())
        .env("COFFER_TEST_HSM_DIR", tmp.path())
        .output()
        .unwrap();
    let said = format!(
        "{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{said}");
    assert!(said.contains("scenario complete"), "{said}");

    // Seen by another PKCS#11 client: one key left (the pruned versions'
    // keys are destroyed), sensitive and never extractable; reading its
    // value is refused by the token.
    let tool = |args: &[&str]| {
        Command::new("pkcs11-tool")
            .envs(hsm.env())
            .args(["--module", SOFTHSM_MODULE, "--token-label", TOKEN])
            .args(["--login", "--pin", &hsm.pin])
            .args(args)
            .output()
            .expect("pkcs11-tool (Debian package opensc)")
    };
    let listed = tool(&["--list-objects", "--type", "secrkey"]);
    let listed = String::from_utf8_lossy(&listed.stdout).to_string();
    assert_eq!(listed.matches("Secret Key Object").count(), 1, "{listed}");
    assert!(listed.contains("AES length 32"), "{listed}");
    assert!(listed.contains("never extractable"), "{listed}");
    let label = listed
        .lines()
        .find_map(|l| l.trim().strip_prefix("label:"))
        .unwrap()
        .trim()
        .to_string();
    assert!(label.starts_with("coffer-kek-v3-"), "{label}");
    let read = tool(&["--read-object", "--type", "secrkey", "--label", &label]);
    assert!(
        !read.status.success(),
        "the token gave the key's value away"
    );
}

fn settings(dir: &Path) -> KeyringConfig {
    KeyringConfig {
        provider: KeyringProvider::Pkcs11,
        module: SOFTHSM_MODULE.into(),
        token: TOKEN.into(),
        key_label: "coffer-kek".into(),
        pin_file: Some(dir.join("pin")),
    }
}

/// Only does anything when started by the test above.
#[tokio::test]
async fn child_scenario() {
    let Ok(hsm_dir) = std::env::var("COFFER_TEST_HSM_DIR") else {
        return;
    };
    let plain_a = pattern(300_000, 1);
    let plain_b = pattern(200_000, 2);
    let server = Server::start_with(Config {
        // Every download unwraps through the token.
        dek_cache_secs: 0,
        ..common::functional_config()
    })
    .await;
    let alice = server.add_user("alice").await;
    let mut client = server.connect().await;
    let token = client.login("alice", &alice, &server.identity).await;
    let file_a = upload(&mut client, &token, &plain_a).await;
    let location_b = start_upload(&mut client, &token, &plain_b[..100_000], plain_b.len()).await;
    let (identity, cert) = (server.identity.clone(), server.cert.clone());
    let dir = server.stop().await;
    let root = dir.path().join("data");

    // One call moves the keyring: the file key and the staging key are
    // re-wrapped inside the token and the master-key version is gone.
    let mut data = DataDir::open(&root).unwrap();
    let store = data.store().await.unwrap();
    let moved = data
        .move_keyring_into_token(&store, settings(Path::new(&hsm_dir)), 1, |_| {})
        .await
        .unwrap();
    assert_eq!((moved.version, moved.added, moved.rewrapped), (2, true, 2));
    assert_eq!(moved.removed, [1]);
    let again = data
        .move_keyring_into_token(&store, settings(Path::new(&hsm_dir)), 1, |_| {})
        .await
        .unwrap();
    assert_eq!(
        (again.added, again.rewrapped),
        (false, 0),
        "a re-run does nothing"
    );
    assert!(
        store
            .keks()
            .await
            .unwrap()
            .iter()
            .all(|(_, r)| RecordKind::of(r) == RecordKind::Token)
    );
    // config.toml names the token; the master key is no longer needed.
    assert_eq!(
        Config::load_file(&root).unwrap().keyring,
        settings(Path::new(&hsm_dir))
    );
    std::fs::remove_file(root.join(&data.config.master_key_file)).unwrap();

    // Restarted without the master key: the old file is served, and the
    // upload begun before the move finishes.
    let node = Node::run(DataDir::open(&root).unwrap()).await;
    let mut client = Server::connect_to(node.addr, cert.clone(), &[&rustls::version::TLS13])
        .await
        .unwrap();
    let token = client.login("alice", &alice, &identity).await;
    assert_eq!(download(&mut client, &token, &file_a).await, plain_a);
    let file_b = finish_upload(&mut client, &token, &location_b, &plain_b, 100_000).await;
    assert_eq!(download(&mut client, &token, &file_b).await, plain_b);
    node.shutdown().await;

    // A rotation makes version 3 in the token; pruning destroys version 2.
    let data = DataDir::open(&root).unwrap();
    let ring = data.keyring(&store).await.unwrap();
    let rotation = keyring::rotate(&store, &ring, 1, |_| {}).await.unwrap();
    assert_eq!((rotation.version, rotation.rewrapped), (3, 2));
    assert_eq!(keyring::prune(&store, &ring).await.unwrap(), [2]);
    assert!(ring.locations()[&3].contains("non-extractable"));
    drop(ring);

    let node = Node::run(DataDir::open(&root).unwrap()).await;
    let mut client = Server::connect_to(node.addr, cert, &[&rustls::version::TLS13])
        .await
        .unwrap();
    let token = client.login("alice", &alice, &identity).await;
    assert_eq!(download(&mut client, &token, &file_a).await, plain_a);
    assert_eq!(download(&mut client, &token, &file_b).await, plain_b);
    node.shutdown().await;

    edited_records_fail_closed(&data, &root).await;
    println!("scenario complete");
}

/// Whoever owns the database edits the token record: naming another key,
/// or altering its check, stops the keyring from opening.
async fn edited_records_fail_closed(data: &DataDir, root: &Path) {
    let db = sqlx::SqlitePool::connect(&format!("sqlite://{}", root.join("meta.db").display()))
        .await
        .unwrap();
    let (original,): (Vec<u8>,) = sqlx::query_as("SELECT sealed FROM keks WHERE version = 3")
        .fetch_one(&db)
        .await
        .unwrap();
    let set = |record: Vec<u8>| {
        let db = db.clone();
        async move {
            sqlx::query("UPDATE keks SET sealed = ? WHERE version = 3")
                .bind(record)
                .execute(&db)
                .await
                .unwrap();
        }
    };
    let refusal = || async {
        let store = data.store().await.unwrap();
        match data.keyring(&store).await {
            Ok(_) => panic!("an edited keyring record opened"),
            Err(err) => format!("{err:#}"),
        }
    };
    let relabelled = String::from_utf8_lossy(&original).replace("-v3-", "-v9-");
    set(relabelled.into_bytes()).await;
    assert!(refusal().await.contains("holds no key labelled"));
    let mut bad_check = original.clone();
    *bad_check.last_mut().unwrap() ^= 1;
    set(bad_check).await;
    assert!(refusal().await.contains("is not KEK version 3"));
    set(original).await;
    let store = data.store().await.unwrap();
    assert!(data.keyring(&store).await.is_ok());
}

fn pattern(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(31) ^ seed)
        .collect()
}

async fn upload(client: &mut Client, token: &str, bytes: &[u8]) -> String {
    let (status, headers, _) = client.tus_create(token, bytes.to_vec(), None).await;
    assert_eq!(status, 201);
    headers["coffer-file-id"].to_str().unwrap().to_string()
}

async fn start_upload(client: &mut Client, token: &str, first: &[u8], total: usize) -> String {
    let (status, headers, _) = client
        .raw(
            "POST",
            "/v1/uploads",
            &[TUS, OCTETS, ("upload-length", &total.to_string())],
            first.to_vec(),
            Some(token),
        )
        .await;
    assert_eq!(status, 201);
    headers["location"].to_str().unwrap().to_string()
}

async fn finish_upload(
    client: &mut Client,
    token: &str,
    location: &str,
    whole: &[u8],
    offset: usize,
) -> String {
    let (status, headers, body) = client
        .raw(
            "PATCH",
            location,
            &[TUS, OCTETS, ("upload-offset", &offset.to_string())],
            whole[offset..].to_vec(),
            Some(token),
        )
        .await;
    assert_eq!(status, 204, "{}", String::from_utf8_lossy(&body));
    headers["coffer-file-id"].to_str().unwrap().to_string()
}

async fn download(client: &mut Client, token: &str, file: &str) -> Vec<u8> {
    let path = format!("/v1/files/{file}");
    let (status, _, body) = client.raw("GET", &path, &[], vec![], Some(token)).await;
    assert_eq!(status, 200);
    body
}
