//! tus uploads, downloads and receipts against the real server over TLS.

mod common;

use base64::Engine as _;
use coffer_server::receipt::SignedReceipt;
use coffer_server::store::MetaStore as _;
use common::{B64, Client, Server};

const TUS: (&str, &str) = ("tus-resumable", "1.0.0");
const OCTETS: (&str, &str) = ("content-type", "application/offset+octet-stream");

fn data(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i * 7 % 251) as u8).collect()
}

fn sha256(data: &[u8]) -> Vec<u8> {
    aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, data)
        .as_ref()
        .to_vec()
}

async fn setup() -> (Server, Client, String) {
    let server = Server::start(60).await;
    let alice = server.add_user("alice").await;
    let mut client = server.connect().await;
    let token = client.login("alice", &alice, &server.identity).await;
    (server, client, token)
}

async fn create(client: &mut Client, token: &str, length: usize) -> String {
    let len = length.to_string();
    let (status, headers, _) = client
        .raw(
            "POST",
            "/v1/uploads",
            &[TUS, ("upload-length", &len)],
            vec![],
            Some(token),
        )
        .await;
    assert_eq!(status, 201);
    headers["location"].to_str().unwrap().to_string()
}

async fn offset(client: &mut Client, token: &str, location: &str) -> u64 {
    let (status, headers, _) = client
        .raw("HEAD", location, &[TUS], vec![], Some(token))
        .await;
    assert_eq!(status, 200);
    assert_eq!(headers["cache-control"], "no-store");
    headers["upload-offset"].to_str().unwrap().parse().unwrap()
}

#[tokio::test]
async fn upload_in_one_request_then_download_with_ranges_and_digests() {
    let (server, mut client, token) = setup().await;
    let body = data(300_000);
    let (status, headers, _) = client
        .raw(
            "POST",
            "/v1/uploads",
            &[TUS, OCTETS, ("upload-length", "300000")],
            body.clone(),
            Some(&token),
        )
        .await;
    assert_eq!(status, 201);
    assert_eq!(headers["upload-offset"], "300000");
    assert!(headers.contains_key("upload-expires"));
    let file_id = headers["coffer-file-id"].to_str().unwrap().to_string();
    let receipt: SignedReceipt =
        serde_json::from_slice(&B64.decode(headers["coffer-receipt"].as_bytes()).unwrap()).unwrap();
    assert!(
        receipt.verify(&server.identity),
        "receipt must verify with the pinned server key"
    );
    assert_eq!(receipt.receipt.size, 300_000);
    assert_eq!(receipt.receipt.uploader, "alice");
    // A plain upload's content identity is the BLAKE3 of what was sent.
    let blake3 = blake3::hash(&body);
    assert_eq!(receipt.receipt.sha256, None);
    assert_eq!(
        receipt.receipt.content.as_deref(),
        Some(format!("blake3:{}", blake3.to_hex()).as_str())
    );

    let path = format!("/v1/files/{file_id}");
    let (status, headers, got) = client.raw("GET", &path, &[], vec![], Some(&token)).await;
    assert_eq!(status, 200);
    assert_eq!(got, body);
    let digest = format!(
        "blake3=:{}:",
        base64::engine::general_purpose::STANDARD.encode(blake3.as_bytes())
    );
    assert_eq!(headers["content-digest"].to_str().unwrap(), digest);
    let etag = headers["etag"].to_str().unwrap().to_string();

    for (range, start, end) in [
        ("bytes=0-9", 0, 10),
        ("bytes=-5", 299_995, 300_000),
        ("bytes=150000-", 150_000, 300_000),
    ] {
        let (status, headers, got) = client
            .raw("GET", &path, &[("range", range)], vec![], Some(&token))
            .await;
        assert_eq!(status, 206, "{range}");
        assert_eq!(got, &body[start..end], "{range}");
        assert_eq!(
            headers["content-range"].to_str().unwrap(),
            format!("bytes {start}-{}/300000", end - 1)
        );
        assert_eq!(headers["repr-digest"].to_str().unwrap(), digest);
    }
    assert_eq!(
        client
            .raw(
                "GET",
                &path,
                &[("range", "bytes=300000-")],
                vec![],
                Some(&token)
            )
            .await
            .0,
        416
    );
    assert_eq!(
        client
            .raw(
                "GET",
                &path,
                &[("if-none-match", &etag)],
                vec![],
                Some(&token)
            )
            .await
            .0,
        304
    );

    let (status, _, listing) = client
        .raw("GET", "/v1/files", &[], vec![], Some(&token))
        .await;
    assert_eq!(status, 200);
    let listing: serde_json::Value = serde_json::from_slice(&listing).unwrap();
    assert_eq!(listing["files"][0]["id"], file_id.as_str());
    let (_, _, stored) = client
        .raw("GET", &format!("{path}/receipt"), &[], vec![], Some(&token))
        .await;
    assert_eq!(
        serde_json::from_slice::<SignedReceipt>(&stored).unwrap(),
        receipt
    );

    let (status, _, body) = client.raw("DELETE", &path, &[], vec![], Some(&token)).await;
    assert_eq!(status, 200);
    assert_eq!(
        serde_json::from_slice::<serde_json::Value>(&body).unwrap()["removed"],
        "file"
    );
    assert_eq!(
        client.raw("GET", &path, &[], vec![], Some(&token)).await.0,
        404
    );
    server.shutdown().await;
}

#[tokio::test]
async fn interrupted_upload_resumes_from_the_server_offset() {
    let (server, mut client, token) = setup().await;
    let body = data(100_000);
    let location = create(&mut client, &token, body.len()).await;
    let checksum = format!(
        "sha256 {}",
        base64::engine::general_purpose::STANDARD.encode(sha256(&body[..40_000]))
    );
    let (status, headers, _) = client
        .raw(
            "PATCH",
            &location,
            &[
                TUS,
                OCTETS,
                ("upload-offset", "0"),
                ("upload-checksum", &checksum),
            ],
            body[..40_000].to_vec(),
            Some(&token),
        )
        .await;
    assert_eq!(
        (status, headers["upload-offset"].to_str().unwrap()),
        (204, "40000")
    );
    // Nothing is visible before the upload completes.
    let (_, _, listing) = client
        .raw("GET", "/v1/files", &[], vec![], Some(&token))
        .await;
    assert_eq!(
        serde_json::from_slice::<serde_json::Value>(&listing).unwrap()["files"],
        serde_json::json!([])
    );

    // A client that lost track asks, and a wrong offset is refused.
    assert_eq!(offset(&mut client, &token, &location).await, 40_000);
    let (status, _, _) = client
        .raw(
            "PATCH",
            &location,
            &[TUS, OCTETS, ("upload-offset", "0")],
            body.clone(),
            Some(&token),
        )
        .await;
    assert_eq!(status, 409);

    let (status, headers, _) = client
        .raw(
            "PATCH",
            &location,
            &[TUS, OCTETS, ("upload-offset", "40000")],
            body[40_000..].to_vec(),
            Some(&token),
        )
        .await;
    assert_eq!(status, 204);
    let file_id = headers["coffer-file-id"].to_str().unwrap().to_string();
    let (_, _, got) = client
        .raw(
            "GET",
            &format!("/v1/files/{file_id}"),
            &[],
            vec![],
            Some(&token),
        )
        .await;
    assert_eq!(got, body);
    // The finished upload is gone.
    assert_eq!(
        client
            .raw("HEAD", &location, &[TUS], vec![], Some(&token))
            .await
            .0,
        404
    );
    server.shutdown().await;
}

#[tokio::test]
async fn bad_chunks_are_refused_and_leave_the_offset_alone() {
    let (server, mut client, token) = setup().await;
    let location = create(&mut client, &token, 1000).await;
    let wrong = format!(
        "sha256 {}",
        base64::engine::general_purpose::STANDARD.encode(sha256(b"something else"))
    );
    let (status, _, _) = client
        .raw(
            "PATCH",
            &location,
            &[
                TUS,
                OCTETS,
                ("upload-offset", "0"),
                ("upload-checksum", &wrong),
            ],
            data(500),
            Some(&token),
        )
        .await;
    assert_eq!(status, 460);
    assert_eq!(offset(&mut client, &token, &location).await, 0);
    // More bytes than Upload-Length.
    let (status, _, _) = client
        .raw(
            "PATCH",
            &location,
            &[TUS, OCTETS, ("upload-offset", "0")],
            data(1001),
            Some(&token),
        )
        .await;
    assert_eq!(status, 413);
    assert_eq!(offset(&mut client, &token, &location).await, 0);
    // Protocol errors.
    assert_eq!(
        client
            .raw(
                "PATCH",
                &location,
                &[OCTETS, ("upload-offset", "0")],
                data(1),
                Some(&token)
            )
            .await
            .0,
        412
    );
    assert_eq!(
        client
            .raw(
                "PATCH",
                &location,
                &[TUS, ("content-type", "text/plain"), ("upload-offset", "0")],
                data(1),
                Some(&token)
            )
            .await
            .0,
        415
    );
    let (status, _, _) = client
        .raw(
            "PATCH",
            &location,
            &[
                TUS,
                OCTETS,
                ("upload-offset", "0"),
                ("upload-checksum", "md5 xyz"),
            ],
            data(1),
            Some(&token),
        )
        .await;
    assert_eq!(status, 400);
    assert_eq!(
        client
            .raw("POST", "/v1/uploads", &[TUS], vec![], Some(&token))
            .await
            .0,
        400,
        "Upload-Length is required"
    );
    // Still resumable and correct after all that.
    let body = data(1000);
    let (status, headers, _) = client
        .raw(
            "PATCH",
            &location,
            &[TUS, OCTETS, ("upload-offset", "0")],
            body.clone(),
            Some(&token),
        )
        .await;
    assert_eq!(status, 204);
    let file_id = headers["coffer-file-id"].to_str().unwrap();
    assert_eq!(
        client
            .raw(
                "GET",
                &format!("/v1/files/{file_id}"),
                &[],
                vec![],
                Some(&token)
            )
            .await
            .2,
        body
    );
    server.shutdown().await;
}

/// A creation-with-upload whose body is refused leaves no upload behind:
/// the client never got its Location, so it could only hold a slot.
#[tokio::test]
async fn a_refused_creation_with_upload_leaves_no_upload() {
    let (server, mut client, token) = setup().await;
    let wrong = format!(
        "sha256 {}",
        base64::engine::general_purpose::STANDARD.encode(sha256(b"something else"))
    );
    // (checksum header, bytes sent for 10 declared, status)
    let refusals = [(Some(wrong.as_str()), 10, 460), (None, 11, 413)];
    for (checksum, sent, expected) in refusals {
        let mut headers = vec![TUS, OCTETS, ("upload-length", "10")];
        if let Some(checksum) = checksum {
            headers.push(("upload-checksum", checksum));
        }
        let (status, answer, _) = client
            .raw("POST", "/v1/uploads", &headers, data(sent), Some(&token))
            .await;
        assert_eq!(status, expected);
        assert!(answer.get("location").is_none());
        let usage = server.store().await.usage("alice").await.unwrap();
        assert_eq!((usage.open_uploads, usage.reserved_bytes), (0, 0));
    }
    server.shutdown().await;
}

#[tokio::test]
async fn other_users_see_nothing_and_termination_removes_the_upload() {
    let (server, mut client, token) = setup().await;
    let bob = server.add_user("bob").await;
    let bob_token = client.login("bob", &bob, &server.identity).await;
    let (_, headers, _) = client
        .raw(
            "POST",
            "/v1/uploads",
            &[TUS, OCTETS, ("upload-length", "10")],
            data(10),
            Some(&token),
        )
        .await;
    let file = format!("/v1/files/{}", headers["coffer-file-id"].to_str().unwrap());
    let location = create(&mut client, &token, 50).await;

    assert_eq!(
        client
            .raw("GET", &file, &[], vec![], Some(&bob_token))
            .await
            .0,
        404
    );
    assert_eq!(
        client
            .raw("DELETE", &file, &[], vec![], Some(&bob_token))
            .await
            .0,
        404
    );
    assert_eq!(
        client
            .raw("HEAD", &location, &[TUS], vec![], Some(&bob_token))
            .await
            .0,
        404
    );
    assert_eq!(
        client
            .raw(
                "PATCH",
                &location,
                &[TUS, OCTETS, ("upload-offset", "0")],
                data(5),
                Some(&bob_token)
            )
            .await
            .0,
        404
    );
    assert_eq!(client.raw("GET", &file, &[], vec![], None).await.0, 401);

    assert_eq!(
        client
            .raw("DELETE", &location, &[TUS], vec![], Some(&token))
            .await
            .0,
        204
    );
    assert_eq!(
        client
            .raw("HEAD", &location, &[TUS], vec![], Some(&token))
            .await
            .0,
        404
    );
    let (status, headers, _) = client
        .raw("OPTIONS", "/v1/uploads", &[], vec![], None)
        .await;
    assert_eq!(status, 204);
    assert!(
        headers["tus-extension"]
            .to_str()
            .unwrap()
            .contains("checksum")
    );
    server.shutdown().await;
}

#[tokio::test]
async fn hostile_headers_ids_and_bodies_are_refused() {
    let (server, mut client, token) = setup().await;
    let huge = (1u64 << 41).to_string();
    assert_eq!(
        client
            .raw(
                "POST",
                "/v1/uploads",
                &[TUS, ("upload-length", &huge)],
                vec![],
                Some(&token)
            )
            .await
            .0,
        413
    );
    assert_eq!(
        client
            .raw(
                "POST",
                "/v1/uploads",
                &[TUS, ("upload-length", "-1")],
                vec![],
                Some(&token)
            )
            .await
            .0,
        400
    );
    assert_eq!(
        client
            .raw(
                "POST",
                "/v1/uploads",
                &[TUS, ("upload-length", "10abc")],
                vec![],
                Some(&token)
            )
            .await
            .0,
        400
    );
    let long_metadata = format!("filename {}", "A".repeat(49 * 1024));
    let (status, _, _) = client
        .raw(
            "POST",
            "/v1/uploads",
            &[
                TUS,
                ("upload-length", "10"),
                ("upload-metadata", &long_metadata),
            ],
            vec![],
            Some(&token),
        )
        .await;
    assert_eq!(status, 400);
    assert_eq!(
        client
            .raw(
                "POST",
                "/v1/uploads",
                &[TUS, ("upload-defer-length", "1")],
                vec![],
                Some(&token)
            )
            .await
            .0,
        400
    );
    let location = create(&mut client, &token, 10).await;
    let (status, _, _) = client
        .raw(
            "PATCH",
            &location,
            &[TUS, OCTETS, ("upload-offset", "zero")],
            data(10),
            Some(&token),
        )
        .await;
    assert_eq!(status, 400);
    // Ids never reach the filesystem unless they name a row the caller owns.
    for id in [
        "..%2F..%2Fserver.identity",
        "%2e%2e",
        "00112233445566778899aabbccddeeff",
        "ZZZZ",
    ] {
        assert_eq!(
            client
                .raw("GET", &format!("/v1/files/{id}"), &[], vec![], Some(&token))
                .await
                .0,
            404,
            "{id}"
        );
        assert_eq!(
            client
                .raw(
                    "HEAD",
                    &format!("/v1/uploads/{id}"),
                    &[TUS],
                    vec![],
                    Some(&token)
                )
                .await
                .0,
            404,
            "{id}"
        );
    }
    // JSON bodies are bounded (axum's 2 MB default) before they are parsed.
    let big = format!("{{\"user\": \"{}\"}}", "a".repeat(3 << 20)).into_bytes();
    let (status, _, _) = client
        .raw(
            "POST",
            "/v1/auth/challenge",
            &[("content-type", "application/json")],
            big,
            None,
        )
        .await;
    assert_eq!(status, 413);
    server.shutdown().await;
}

#[tokio::test]
async fn listings_come_in_pages_that_cover_every_file_once() {
    let (server, mut client, token) = setup().await;
    let mut ids = Vec::new();
    for i in 0..5u8 {
        let (status, headers, _) = client.tus_create(&token, vec![i; 10], None).await;
        assert_eq!(status, 201);
        ids.push(headers["coffer-file-id"].to_str().unwrap().to_string());
    }
    let mut seen = Vec::new();
    let mut path = "/v1/files?limit=2".to_string();
    loop {
        let (status, body) = client.call("GET", &path, None, Some(&token)).await;
        assert_eq!(status, 200, "{body}");
        let page = body["files"].as_array().unwrap();
        assert!(page.len() <= 2);
        seen.extend(page.iter().map(|f| f["id"].as_str().unwrap().to_string()));
        match body["next"].as_str() {
            Some(next) => path = format!("/v1/files?limit=2&after={next}"),
            None => break,
        }
    }
    seen.sort();
    ids.sort();
    assert_eq!(seen, ids);
    for bad in [
        "/v1/files?limit=0",
        "/v1/files?limit=1001",
        "/v1/files?after=nonsense",
        "/v1/files?after=1.../etc",
        "/v1/files?after=x.0123456789abcdef",
    ] {
        assert_eq!(
            client.call("GET", bad, None, Some(&token)).await.0,
            400,
            "{bad}"
        );
    }
    server.shutdown().await;
}

/// While one request writes an upload, a second PATCH or a termination of
/// the same upload is refused with 423 (the lease lives in the database, so
/// this holds across nodes too: the suite also runs on PostgreSQL), and the
/// first request completes untouched.
/// A PATCH of all of `body` to `location` at offset 0 through `addr`, of
/// which only the head and the first `sent` bytes are sent: the request
/// holds the upload until [`finish_patch`] sends the rest.
async fn start_patch(
    addr: std::net::SocketAddr,
    cert: rustls::pki_types::CertificateDer<'static>,
    token: &str,
    location: &str,
    body: &[u8],
    sent: usize,
) -> tokio_rustls::client::TlsStream<tokio::net::TcpStream> {
    use tokio::io::AsyncWriteExt;
    let mut stream = Server::tls_connect(addr, cert, &[&rustls::version::TLS13])
        .await
        .unwrap();
    let head = format!(
        "PATCH {location} HTTP/1.1\r\nhost: localhost\r\nauthorization: Bearer {token}\r\ntus-resumable: 1.0.0\r\ncontent-type: application/offset+octet-stream\r\nupload-offset: 0\r\ncontent-length: {}\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes()).await.unwrap();
    stream.write_all(&body[..sent]).await.unwrap();
    stream.flush().await.unwrap();
    // The request holds the upload once its head is read.
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    stream
}

/// Sends the `rest` of a [`start_patch`] request; expects a 204 that
/// commits the upload and returns the file id.
async fn finish_patch(
    mut stream: tokio_rustls::client::TlsStream<tokio::net::TcpStream>,
    rest: &[u8],
) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    stream.write_all(rest).await.unwrap();
    stream.flush().await.unwrap();
    let mut response = Vec::new();
    let mut buf = [0u8; 4096];
    while !response.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = stream.read(&mut buf).await.unwrap();
        assert!(n > 0, "connection closed before a response");
        response.extend_from_slice(&buf[..n]);
    }
    let text = String::from_utf8_lossy(&response).to_lowercase();
    assert!(text.starts_with("http/1.1 204"), "{text}");
    text.lines()
        .find_map(|l| l.strip_prefix("coffer-file-id: "))
        .unwrap()
        .trim()
        .to_string()
}

async fn download(client: &mut Client, token: &str, file_id: &str) -> Vec<u8> {
    let path = format!("/v1/files/{file_id}");
    let (status, _, got) = client.raw("GET", &path, &[], vec![], Some(token)).await;
    assert_eq!(status, 200);
    got
}

/// A second PATCH to `location`, and a termination, while another request
/// writes it: both must be refused with 423.
async fn assert_busy(client: &mut Client, token: &str, location: &str, body: &[u8]) {
    // Refused before its body is read, the PATCH's connection is closed:
    // the reset can overtake the 423 (a real client then asks for the
    // offset again). Either is a refusal; a 204 is not.
    let answer = client
        .try_raw(
            "PATCH",
            location,
            &[TUS, OCTETS, ("upload-offset", "0")],
            body.to_vec(),
            Some(token),
        )
        .await;
    assert!(
        matches!(answer, Ok((423, _, _)) | Err(_)),
        "a concurrent PATCH must wait its turn: {:?}",
        answer.map(|a| a.0)
    );
    let (status, _, _) = client
        .raw("DELETE", location, &[TUS], vec![], Some(token))
        .await;
    assert_eq!(status, 423, "nor may the upload be terminated under it");
}

#[tokio::test]
async fn a_second_writer_is_refused_while_the_first_is_writing() {
    let (server, mut client, token) = setup().await;
    let body = data(400_000);
    let location = create(&mut client, &token, body.len()).await;
    let first = start_patch(
        server.addr,
        server.cert.clone(),
        &token,
        &location,
        &body,
        100_000,
    )
    .await;
    assert_busy(&mut client, &token, &location, &body).await;
    let file_id = finish_patch(first, &body[100_000..]).await;
    let got = download(&mut client, &token, &file_id).await;
    assert!(got == body, "the first writer's upload was disturbed");
    server.shutdown().await;
}

/// Two server nodes over one PostgreSQL database and one object store (the
/// suite's backend, or PostgreSQL + local disk when the suite runs
/// embedded).
async fn two_nodes() -> Option<(Server, common::Node)> {
    use coffer_server::testing::{Backend, postgres_url, require};
    let backend = match common::backend() {
        Backend::Embedded => {
            if !require("PostgreSQL (two nodes)", postgres_url().is_some()) {
                return None;
            }
            Backend::Postgres
        }
        other => other,
    };
    let a = Server::start_on(common::functional_config(), backend).await;
    let b = a.start_node().await;
    Some((a, b))
}

#[tokio::test]
async fn two_nodes_writing_one_upload_at_once_cannot_corrupt_it() {
    let Some((a, b)) = two_nodes().await else {
        return;
    };
    let alice = a.add_user("alice").await;
    let token = a.connect().await.login("alice", &alice, &a.identity).await;
    let tls13: &[&'static rustls::SupportedProtocolVersion] = &[&rustls::version::TLS13];
    let mut via_a = Server::connect_to(a.addr, a.cert.clone(), tls13)
        .await
        .unwrap();
    let mut via_b = Server::connect_to(b.addr, a.cert.clone(), tls13)
        .await
        .unwrap();

    // Created through B, written through A, refused through B meanwhile.
    let body = data(400_000);
    let location = create(&mut via_b, &token, body.len()).await;
    let first = start_patch(a.addr, a.cert.clone(), &token, &location, &body, 100_000).await;
    assert_busy(&mut via_b, &token, &location, &body).await;
    let file_id = finish_patch(first, &body[100_000..]).await;
    let got = download(&mut via_b, &token, &file_id).await;
    assert!(got == body, "the first writer's upload was disturbed");

    // Both nodes race to write the same upload whole: exactly one wins,
    // the other is refused (busy, or the upload is already committed; a
    // refusal before its body was read may arrive as a reset connection),
    // and the file is the body.
    for round in 0..5 {
        let body = data(300_000 + round * 1000);
        let location = create(&mut via_a, &token, body.len()).await;
        let patch = [TUS, OCTETS, ("upload-offset", "0")];
        let (answer_a, answer_b) = tokio::join!(
            via_a.try_raw("PATCH", &location, &patch, body.clone(), Some(&token)),
            via_b.try_raw("PATCH", &location, &patch, body.clone(), Some(&token)),
        );
        let refused = |answer: &Result<(u16, _, _), _>| {
            matches!(answer, Err(_) | Ok((404 | 409 | 423, _, _)))
        };
        let winner = match (&answer_a, &answer_b) {
            (Ok((204, headers, _)), other) | (other, Ok((204, headers, _))) if refused(other) => {
                headers.clone()
            }
            _ => panic!(
                "round {round}: expected one 204 and one refusal, got {:?} and {:?}",
                answer_a.as_ref().map(|a| a.0),
                answer_b.as_ref().map(|b| b.0)
            ),
        };
        let file_id = winner["coffer-file-id"].to_str().unwrap();
        assert!(download(&mut via_a, &token, file_id).await == body);
        assert!(download(&mut via_b, &token, file_id).await == body);
    }
    b.shutdown().await;
    a.shutdown().await;
}
