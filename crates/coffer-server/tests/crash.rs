//! kill -9 of the server in the middle of an upload: after a restart no
//! partial file is visible, the upload resumes from the durable offset and
//! completes with the right bytes.
//!
//! The server runs in a separate process: this test binary re-executes
//! itself with `COFFER_TEST_SERVE_DIR` set, which makes `child_server` serve
//! that data directory instead of testing.

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};

use coffer_server::DataDir;
use coffer_server::store::MetaStore;
use common::{Client, Server};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const TUS: (&str, &str) = ("tus-resumable", "1.0.0");
const OCTETS: (&str, &str) = ("content-type", "application/offset+octet-stream");

#[test]
fn child_server() {
    let Ok(dir) = std::env::var("COFFER_TEST_SERVE_DIR") else {
        return;
    };
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime
        .block_on(coffer_server::run(
            DataDir::open(dir.as_ref()).unwrap(),
            std::future::pending(),
            |bound| println!("LISTENING {}", bound.api),
        ))
        .unwrap();
}

fn spawn_server(dir: &std::path::Path) -> (Child, std::net::SocketAddr) {
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "child_server", "--nocapture", "--test-threads=1"])
        .env("COFFER_TEST_SERVE_DIR", dir)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let addr = loop {
        let line = lines.next().expect("child server exited").unwrap();
        // libtest may print "test child_server ... " before it on the line.
        if let Some(addr) = line.split("LISTENING ").nth(1) {
            break addr.trim().parse().unwrap();
        }
    };
    (child, addr)
}

async fn login(
    addr: std::net::SocketAddr,
    cert: &rustls::pki_types::CertificateDer<'static>,
    id: &coffer_format::Identity,
    server: &coffer_format::PublicIdentity,
) -> (Client, String) {
    let mut client = Server::connect_to(addr, cert.clone(), &[&rustls::version::TLS13])
        .await
        .unwrap();
    let token = client.login("alice", id, server).await;
    (client, token)
}

#[tokio::test]
async fn kill_9_mid_upload_then_restart_and_resume() {
    if std::env::var("COFFER_TEST_SERVE_DIR").is_ok() {
        return;
    }
    // Prepare a data directory (in-process server only to create it).
    let template = Server::start(60).await;
    let alice = template.add_user("alice").await;
    let data = template.dir.path().join("data");
    let (cert, server_identity) = (template.cert.clone(), template.identity.clone());
    // Stop the in-process server; from here on only child processes serve.
    let dir = template.dir;
    let _ = template.stop.map(|s| s.send(()));
    template.task.await.unwrap().unwrap();

    let body: Vec<u8> = (0..8_000_000u32).map(|i| (i % 253) as u8).collect();
    let (mut child, addr) = spawn_server(&data);
    let (mut client, token) = login(addr, &cert, &alice, &server_identity).await;
    let len = body.len().to_string();
    let (status, headers, _) = client
        .raw(
            "POST",
            "/v1/uploads",
            &[TUS, ("upload-length", &len)],
            vec![],
            Some(&token),
        )
        .await;
    assert_eq!(status, 201);
    let location = headers["location"].to_str().unwrap().to_string();
    let (status, _, _) = client
        .raw(
            "PATCH",
            &location,
            &[TUS, OCTETS, ("upload-offset", "0")],
            body[..3_000_000].to_vec(),
            Some(&token),
        )
        .await;
    assert_eq!(status, 204);

    let staged = data
        .join("uploads")
        .join(format!("{}.part", location.rsplit('/').next().unwrap()));
    // (Staged records are larger than the plaintext they seal.)
    let staged_before = std::fs::metadata(&staged).unwrap().len();

    // Send the rest by hand: announce all of it, deliver 3 MB (more than
    // the server's 1 MiB write buffer), then kill -9 the server while it
    // waits for the remainder.
    drop(client);
    let mut tls = Server::tls_connect(addr, cert.clone(), &[&rustls::version::TLS13])
        .await
        .unwrap();
    let head = format!(
        "PATCH {location} HTTP/1.1\r\nhost: localhost\r\nauthorization: Bearer {token}\r\ntus-resumable: 1.0.0\r\ncontent-type: application/offset+octet-stream\r\nupload-offset: 3000000\r\ncontent-length: {}\r\n\r\n",
        body.len() - 3_000_000
    );
    tls.write_all(head.as_bytes()).await.unwrap();
    tls.write_all(&body[3_000_000..6_000_000]).await.unwrap();
    tls.flush().await.unwrap();
    // Wait until the server has staged some of those bytes.
    let started = std::time::Instant::now();
    while std::fs::metadata(&staged).map(|m| m.len()).unwrap_or(0) <= staged_before {
        assert!(
            started.elapsed().as_secs() < 20,
            "server never staged the partial body"
        );
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
    child.kill().unwrap();
    child.wait().unwrap();
    drop(tls);

    // Nothing partial is visible in the metadata.
    let store = coffer_server::store::SqlStore::open_sqlite(&data.join("meta.db"))
        .await
        .unwrap();
    assert!(
        store
            .list_files("alice", &coffer_server::store::Page::first(10))
            .await
            .unwrap()
            .is_empty(),
        "a partial upload became a file"
    );

    let (mut child, addr) = spawn_server(&data);
    let (mut client, token) = login(addr, &cert, &alice, &server_identity).await;
    let listing = client
        .raw("GET", "/v1/files", &[], vec![], Some(&token))
        .await
        .2;
    assert_eq!(
        serde_json::from_slice::<serde_json::Value>(&listing).unwrap()["files"],
        serde_json::json!([])
    );
    let location = {
        let uploads = store_upload_location(&store).await;
        format!("/v1/uploads/{uploads}")
    };
    let (status, headers, _) = client
        .raw("HEAD", &location, &[TUS], vec![], Some(&token))
        .await;
    assert_eq!(status, 200);
    let offset: usize = headers["upload-offset"].to_str().unwrap().parse().unwrap();
    // The interrupted request never completed, so the durable offset is
    // where the last completed request left it; the staged excess is dropped.
    assert_eq!(offset, 3_000_000);
    let resume_offset = offset.to_string();
    let (status, headers, _) = client
        .raw(
            "PATCH",
            &location,
            &[TUS, OCTETS, ("upload-offset", &resume_offset)],
            body[offset..].to_vec(),
            Some(&token),
        )
        .await;
    assert_eq!(status, 204);
    let file_id = headers["coffer-file-id"].to_str().unwrap().to_string();
    let (status, _, got) = client
        .raw(
            "GET",
            &format!("/v1/files/{file_id}"),
            &[],
            vec![],
            Some(&token),
        )
        .await;
    assert_eq!(status, 200);
    assert!(got == body, "resumed upload differs from what was sent");
    child.kill().unwrap();
    child.wait().unwrap();
    // Two kill -9s later the audit chain still verifies, and the staged
    // records of the (server-encrypted) upload are gone.
    let root = dir.path().join("data");
    let store = coffer_server::store::SqlStore::open_sqlite(&root.join("meta.db"))
        .await
        .unwrap();
    let identity = DataDir::open(&root).unwrap().identity;
    let report = coffer_server::service::audit::verify(&store, identity.public())
        .await
        .unwrap();
    assert!(report.is_intact(), "{:?}", report.problems);
    assert!(
        std::fs::read_dir(root.join("uploads"))
            .unwrap()
            .next()
            .is_none()
    );
    drop(dir);
}

async fn store_upload_location(store: &coffer_server::store::SqlStore) -> String {
    // The only upload in progress (expiry far in the future).
    store
        .expired_uploads(i64::MAX)
        .await
        .unwrap()
        .pop()
        .expect("upload row survived the crash")
}

#[tokio::test]
async fn kill_9_mid_download_and_a_crash_inside_a_delete() {
    if std::env::var("COFFER_TEST_SERVE_DIR").is_ok() {
        return;
    }
    let template = Server::start(60).await;
    let alice = template.add_user("alice").await;
    let data = template.dir.path().join("data");
    let (cert, server_identity) = (template.cert.clone(), template.identity.clone());
    let dir = template.dir;
    let _ = template.stop.map(|s| s.send(()));
    template.task.await.unwrap().unwrap();

    let body: Vec<u8> = (0..6_000_000u32).map(|i| (i % 251) as u8).collect();
    let (mut child, addr) = spawn_server(&data);
    let (mut client, token) = login(addr, &cert, &alice, &server_identity).await;
    let len = body.len().to_string();
    let mut files = Vec::new();
    for _ in 0..2 {
        let (status, headers, _) = client
            .raw(
                "POST",
                "/v1/uploads",
                &[TUS, OCTETS, ("upload-length", &len)],
                body.clone(),
                Some(&token),
            )
            .await;
        assert_eq!(status, 201);
        files.push(headers["coffer-file-id"].to_str().unwrap().to_string());
    }
    drop(client);

    // kill -9 while a download is streaming.
    let mut tls = Server::tls_connect(addr, cert.clone(), &[&rustls::version::TLS13])
        .await
        .unwrap();
    let head = format!(
        "GET /v1/files/{} HTTP/1.1\r\nhost: localhost\r\nauthorization: Bearer {token}\r\n\r\n",
        files[0]
    );
    tls.write_all(head.as_bytes()).await.unwrap();
    let mut got = vec![0u8; 1 << 20];
    tls.read_exact(&mut got).await.unwrap();
    child.kill().unwrap();
    child.wait().unwrap();
    drop(tls);

    // A crash inside a delete, after the row went and before the object did.
    let store = coffer_server::store::SqlStore::open_sqlite(&data.join("meta.db"))
        .await
        .unwrap();
    assert!(store.delete_file(&files[1]).await.unwrap());
    drop(store);

    let (mut child, addr) = spawn_server(&data);
    let (mut client, token) = login(addr, &cert, &alice, &server_identity).await;
    let (status, _, whole) = client
        .raw(
            "GET",
            &format!("/v1/files/{}", files[0]),
            &[],
            vec![],
            Some(&token),
        )
        .await;
    assert_eq!(status, 200);
    assert!(
        whole == body,
        "the file changed after a kill -9 mid-download"
    );
    let (status, _, _) = client
        .raw(
            "GET",
            &format!("/v1/files/{}", files[1]),
            &[],
            vec![],
            Some(&token),
        )
        .await;
    assert_eq!(status, 404, "a half-deleted file is still reachable");
    let (_, listed) = client.call("GET", "/v1/files", None, Some(&token)).await;
    assert_eq!(listed["files"].as_array().unwrap().len(), 1);
    child.kill().unwrap();
    child.wait().unwrap();

    let store = coffer_server::store::SqlStore::open_sqlite(&data.join("meta.db"))
        .await
        .unwrap();
    let identity = DataDir::open(&data).unwrap().identity;
    let report = coffer_server::service::audit::verify(&store, identity.public())
        .await
        .unwrap();
    assert!(report.is_intact(), "{:?}", report.problems);
    drop(dir);
}
