//! A real third-party tus client (tuspy, from PyPI) uploads to the server
//! in several PATCH requests; the committed bytes must match.
//!
//! Without python3 + tuspy the test says so loudly and passes, except under
//! CI (`CI=true`), where it fails: `.ci/run` installs tuspy.

mod common;

use std::process::Command;

use common::Server;

fn tuspy_available() -> bool {
    Command::new("python3")
        .args(["-c", "import tusclient"])
        .status()
        .is_ok_and(|s| s.success())
}

#[tokio::test]
async fn tuspy_uploads_in_chunks() {
    if !tuspy_available() {
        assert!(
            std::env::var("CI").is_err(),
            "tuspy is missing under CI: .ci/run must install it"
        );
        eprintln!(
            "SKIPPED tuspy_uploads_in_chunks: python3 with tuspy is not installed (pip install tuspy)"
        );
        return;
    }
    let server = Server::start(60).await;
    let alice = server.add_user("alice").await;
    let mut client = server.connect().await;
    let token = client.login("alice", &alice, &server.identity).await;

    let body: Vec<u8> = (0..1_234_567u32).map(|i| (i * 13 % 256) as u8).collect();
    let path = server.dir.path().join("upload.bin");
    std::fs::write(&path, &body).unwrap();
    let url = format!("https://localhost:{}/v1/uploads", server.addr.port());
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/tus/tuspy_upload.py");
    let cert = server.dir.path().join("data/tls/cert.pem");
    let out = tokio::task::spawn_blocking(move || {
        Command::new("python3")
            .args([
                script,
                &url,
                &token.clone(),
                path.to_str().unwrap(),
                "300000",
            ])
            .env("REQUESTS_CA_BUNDLE", cert)
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    assert!(
        out.status.success(),
        "tuspy failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );

    let token = client.login("alice", &alice, &server.identity).await;
    let (_, _, listing) = client
        .raw("GET", "/v1/files", &[], vec![], Some(&token))
        .await;
    let listing: serde_json::Value = serde_json::from_slice(&listing).unwrap();
    let files = listing["files"].as_array().unwrap();
    assert_eq!(files.len(), 1);
    let id = files[0]["id"].as_str().unwrap();
    let (status, _, got) = client
        .raw("GET", &format!("/v1/files/{id}"), &[], vec![], Some(&token))
        .await;
    assert_eq!(status, 200);
    assert!(got == body, "bytes uploaded by tuspy differ");
    server.shutdown().await;
}
