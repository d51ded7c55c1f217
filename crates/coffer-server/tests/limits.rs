//! Abuse limits, in bounded loops on 127.0.0.x: rate limits per address,
//! connection caps, slow and idle clients, oversized requests, quotas.

mod common;

use std::time::{Duration, Instant};

use coffer_server::store::MetaStore;
use coffer_server::{Config, Limits};
use common::{Client, Server};
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const TUS: (&str, &str) = ("tus-resumable", "1.0.0");
const OCTETS: (&str, &str) = ("content-type", "application/offset+octet-stream");

fn with_limits(limits: Limits) -> Config {
    Config {
        limits,
        ..Config::default()
    }
}

/// A TLS connection from a chosen loopback address (127.0.0.0/8 is all
/// local on Linux, which gives tests a "second client address").
async fn tls_from(
    server: &Server,
    from: &str,
) -> std::io::Result<tokio_rustls::client::TlsStream<tokio::net::TcpStream>> {
    let socket = tokio::net::TcpSocket::new_v4()?;
    socket.bind(format!("{from}:0").parse().unwrap())?;
    let tcp = socket.connect(server.addr).await?;
    common::tls_over(tcp, server.cert.clone()).await
}

async fn client_from(server: &Server, from: &str) -> Client {
    Client::over(tls_from(server, from).await.unwrap(), server).await
}

/// True if the server closed the connection (EOF or error) within `within`.
async fn closed_within<S: tokio::io::AsyncRead + Unpin>(stream: &mut S, within: Duration) -> bool {
    let mut buf = [0u8; 256];
    let deadline = Instant::now() + within;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, stream.read(&mut buf)).await {
            Err(_) => return false,
            Ok(Ok(0)) | Ok(Err(_)) => return true,
            Ok(Ok(_)) => continue,
        }
    }
}

#[tokio::test]
async fn login_flood_is_limited_per_address() {
    let server = Server::start_with(with_limits(Limits::default())).await;
    let alice = server.add_user("alice").await;
    let mut flooder = client_from(&server, "127.0.0.1").await;
    // The budget is 100 at once, refilled at one per 0.6 s (GCRA), so the
    // first refusal comes after 100 requests plus whatever refilled.
    let started = Instant::now();
    let mut first_refused = None;
    for i in 0..130 {
        let (status, body) = flooder
            .call(
                "POST",
                "/v1/auth/challenge",
                Some(json!({"user": "alice"})),
                None,
            )
            .await;
        if status == 429 {
            assert_eq!(body["error"]["code"], "rate_limited");
            first_refused = Some(i);
            break;
        }
        assert_eq!(status, 200, "request {i}: {body}");
    }
    let refilled = (started.elapsed().as_secs_f64() / 0.6).ceil() as usize;
    let first_refused = first_refused.expect("a login flood was never refused");
    assert!(
        (100..=100 + refilled).contains(&first_refused),
        "refused at request {first_refused} (refill {refilled})"
    );
    let (status, headers, _) = flooder
        .raw(
            "POST",
            "/v1/auth/login",
            &[("content-type", "application/json")],
            b"{}".to_vec(),
            None,
        )
        .await;
    assert_eq!(status, 429);
    let retry: u64 = headers["retry-after"].to_str().unwrap().parse().unwrap();
    assert!((1..=60).contains(&retry), "Retry-After {retry}");

    // Another address logs in normally meanwhile.
    let mut other = client_from(&server, "127.0.0.2").await;
    let token = other.login("alice", &alice, &server.identity).await;
    assert_eq!(
        other.call("GET", "/v1/whoami", None, Some(&token)).await.0,
        200
    );
    // The flooder's login budget is separate from its API budget.
    assert_eq!(
        flooder
            .call("GET", "/v1/whoami", None, Some(&token))
            .await
            .0,
        200
    );

    // The refusal was audited (once for the window, not once per request).
    let store = server.store().await;
    let report = coffer_server::service::audit::verify(&store, &server.identity)
        .await
        .unwrap();
    assert!(report.is_intact(), "{:?}", report.problems);
    let mut out = Vec::new();
    coffer_server::service::audit::export_json_lines(&store, &mut out)
        .await
        .unwrap();
    let text = String::from_utf8(out).unwrap();
    let refusals = text
        .lines()
        .filter(|l| l.contains("\"rate_limit\""))
        .count();
    assert_eq!(refusals, 1, "{text}");
    server.shutdown().await;
}

#[tokio::test]
async fn connection_caps_refuse_the_51st_and_a_hog() {
    let server = Server::start_with(with_limits(Limits {
        max_connections: 50,
        max_connections_per_ip: 50,
        ..Limits::default()
    }))
    .await;
    // 50 connections from five addresses, each proven alive.
    let mut held = Vec::new();
    for i in 0..50 {
        let mut client = client_from(&server, &format!("127.0.0.{}", 1 + i % 5)).await;
        assert_eq!(client.call("GET", "/healthz", None, None).await.0, 200);
        held.push(client);
    }
    // The 51st is closed without a handshake.
    assert!(tls_from(&server, "127.0.0.9").await.is_err());
    // One closes; a new one gets in.
    drop(held.pop());
    tokio::time::sleep(Duration::from_millis(200)).await;
    let mut late = client_from(&server, "127.0.0.9").await;
    assert_eq!(late.call("GET", "/healthz", None, None).await.0, 200);
    drop(held);
    drop(late);
    server.shutdown().await;

    // Per address: one address cannot take every slot.
    let server = Server::start_with(with_limits(Limits {
        max_connections_per_ip: 4,
        ..Limits::default()
    }))
    .await;
    let mut hog = Vec::new();
    for _ in 0..4 {
        hog.push(client_from(&server, "127.0.0.1").await);
    }
    assert!(tls_from(&server, "127.0.0.1").await.is_err());
    let mut other = client_from(&server, "127.0.0.2").await;
    assert_eq!(other.call("GET", "/healthz", None, None).await.0, 200);
    drop(hog);
    drop(other);
    // The refusal was audited.
    let dir = server.stop().await;
    let text = common::audit_text(dir.path()).await;
    assert!(text.contains("\"connection_cap\""), "{text}");
}

#[tokio::test]
async fn slow_headers_and_idle_connections_are_cut_off() {
    let server = Server::start_with(with_limits(Limits {
        header_read_timeout_secs: 2,
        idle_timeout_secs: 5,
        ..Limits::default()
    }))
    .await;
    // Slowloris: one header byte per second.
    let mut slow = tls_from(&server, "127.0.0.1").await.unwrap();
    let started = Instant::now();
    let request =
        b"GET /healthz HTTP/1.1\r\nHost: localhost\r\nX-Slow: aaaaaaaaaaaaaaaaaaaa\r\n\r\n";
    let mut cut = false;
    for byte in request {
        if slow.write_all(&[*byte]).await.is_err() || slow.flush().await.is_err() {
            cut = true;
            break;
        }
        if closed_within(&mut slow, Duration::from_secs(1)).await {
            cut = true;
            break;
        }
    }
    let took = started.elapsed();
    assert!(cut, "a one-byte-per-second client was never disconnected");
    assert!(
        took < Duration::from_secs(6),
        "disconnected only after {took:?}"
    );

    // Idle keep-alive connection: closed after the idle timeout.
    let mut idle = tls_from(&server, "127.0.0.1").await.unwrap();
    idle.write_all(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\n\r\n")
        .await
        .unwrap();
    let mut buf = [0u8; 512];
    let n = idle.read(&mut buf).await.unwrap();
    assert!(String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 200"));
    // Waiting for its next request is not a slow request head: the idle
    // timeout applies, not the header timeout.
    let started = Instant::now();
    assert!(closed_within(&mut idle, Duration::from_secs(9)).await);
    let waited = started.elapsed();
    assert!(
        waited >= Duration::from_millis(4500),
        "closed after {waited:?}"
    );

    // A second request sent slowly on a kept-alive connection: cut at the
    // header timeout from its first byte.
    let mut slow = tls_from(&server, "127.0.0.1").await.unwrap();
    slow.write_all(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\n\r\n")
        .await
        .unwrap();
    let n = slow.read(&mut buf).await.unwrap();
    assert!(String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 200"));
    let started = Instant::now();
    let mut cut = false;
    for byte in request {
        if slow.write_all(&[*byte]).await.is_err() || slow.flush().await.is_err() {
            cut = true;
            break;
        }
        if closed_within(&mut slow, Duration::from_millis(500)).await {
            cut = true;
            break;
        }
    }
    let took = started.elapsed();
    assert!(cut, "a slow second request was never cut off");
    assert!(took < Duration::from_secs(4), "cut only after {took:?}");
    server.shutdown().await;
}

/// The server side of a stalled download: a client that stops reading
/// (its receive window full, nothing closed, like a network partition) is
/// cut off after `idle_timeout_secs` without a byte moved, so the response,
/// its object reader and its buffers are not held forever.
#[tokio::test]
async fn a_download_the_client_stopped_reading_is_cut_off() {
    const SIZE: usize = 32 << 20;
    let server = Server::start_with(with_limits(Limits {
        idle_timeout_secs: 3,
        ..Limits::default()
    }))
    .await;
    let alice = server.add_user("alice").await;
    let mut client = server.connect().await;
    let token = client.login("alice", &alice, &server.identity).await;
    let (status, headers, _) = client.tus_create(&token, vec![7u8; SIZE], None).await;
    assert_eq!(status, 201);
    let id = headers["coffer-file-id"].to_str().unwrap().to_string();

    let mut stalled = tls_from(&server, "127.0.0.1").await.unwrap();
    let request = format!(
        "GET /v1/files/{id} HTTP/1.1\r\nHost: localhost\r\nAuthorization: Bearer {token}\r\n\r\n"
    );
    stalled.write_all(request.as_bytes()).await.unwrap();
    stalled.flush().await.unwrap();
    tokio::time::sleep(Duration::from_secs(7)).await;
    // What was in flight still arrives; then the connection ends, short.
    let mut got = 0usize;
    let mut buf = vec![0u8; 1 << 16];
    let drained = tokio::time::timeout(Duration::from_secs(20), async {
        loop {
            match stalled.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => got += n,
            }
        }
    })
    .await;
    assert!(drained.is_ok(), "the stalled download was never cut off");
    assert!(got < SIZE, "the whole file arrived after the stall: {got}");
    // The server goes on serving others (on a new connection: the first
    // one idled past the timeout too).
    let mut fresh = server.connect().await;
    assert_eq!(fresh.call("GET", "/healthz", None, None).await.0, 200);
    server.shutdown().await;
}

#[tokio::test]
async fn oversized_headers_bodies_and_stalled_bodies() {
    let server = Server::start_with(with_limits(Limits {
        body_stall_secs: 2,
        ..Limits::default()
    }))
    .await;
    let alice = server.add_user("alice").await;
    let mut client = server.connect().await;
    let token = client.login("alice", &alice, &server.identity).await;

    let huge = "a".repeat(200 * 1024);
    let (status, _, _) = client
        .raw("GET", "/healthz", &[("x-huge", &huge)], vec![], None)
        .await;
    assert_eq!(status, 431);
    let big_json = format!("{{\"user\": \"{}\"}}", "a".repeat(100 * 1024)).into_bytes();
    let (status, _, body) = client
        .raw(
            "POST",
            "/v1/auth/challenge",
            &[("content-type", "application/json")],
            big_json,
            None,
        )
        .await;
    assert_eq!(status, 413, "{}", String::from_utf8_lossy(&body));

    // A PATCH whose body stalls fails; the offset stays where it was.
    let (status, headers, _) = client
        .raw(
            "POST",
            "/v1/uploads",
            &[TUS, ("upload-length", "1000")],
            vec![],
            Some(&token),
        )
        .await;
    assert_eq!(status, 201);
    let location = headers["location"].to_str().unwrap().to_string();
    let mut raw = tls_from(&server, "127.0.0.1").await.unwrap();
    let head = format!(
        "PATCH {location} HTTP/1.1\r\nHost: localhost\r\nAuthorization: Bearer {token}\r\nTus-Resumable: 1.0.0\r\nContent-Type: application/offset+octet-stream\r\nUpload-Offset: 0\r\nContent-Length: 1000\r\n\r\n"
    );
    raw.write_all(head.as_bytes()).await.unwrap();
    raw.write_all(&[7u8; 100]).await.unwrap();
    raw.flush().await.unwrap();
    let started = Instant::now();
    let mut answer = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(8), raw.read_to_end(&mut answer)).await;
    assert!(
        started.elapsed() < Duration::from_secs(8),
        "a stalled body held the request"
    );
    // The client's fault, said as such (not a 500 in the server's log).
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(answer.contains("body_stalled"), "{answer}");
    let (status, headers, _) = client
        .raw("HEAD", &location, &[TUS], vec![], Some(&token))
        .await;
    assert_eq!(status, 200);
    assert_eq!(headers["upload-offset"], "0");

    // Broken chunked framing: 400, and nothing of it counts.
    let mut raw = tls_from(&server, "127.0.0.1").await.unwrap();
    let head = format!(
        "PATCH {location} HTTP/1.1\r\nHost: localhost\r\nAuthorization: Bearer {token}\r\nTus-Resumable: 1.0.0\r\nContent-Type: application/offset+octet-stream\r\nUpload-Offset: 0\r\nTransfer-Encoding: chunked\r\n\r\n64\r\n"
    );
    raw.write_all(head.as_bytes()).await.unwrap();
    raw.write_all(&[7u8; 100]).await.unwrap();
    raw.write_all(b"\r\nZZ-not-a-size\r\n").await.unwrap();
    raw.flush().await.unwrap();
    let mut answer = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(8), raw.read_to_end(&mut answer)).await;
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 400"), "{answer}");
    assert!(answer.contains("body_broken"), "{answer}");
    let (status, headers, _) = client
        .raw("HEAD", &location, &[TUS], vec![], Some(&token))
        .await;
    assert_eq!(status, 200);
    assert_eq!(headers["upload-offset"], "0");
    // And the upload still takes the whole body afterwards.
    let (status, headers, _) = client
        .raw(
            "PATCH",
            &location,
            &[
                TUS,
                ("content-type", "application/offset+octet-stream"),
                ("upload-offset", "0"),
            ],
            vec![7u8; 1000],
            Some(&token),
        )
        .await;
    assert_eq!(status, 204);
    assert_eq!(headers["upload-offset"], "1000");
    server.shutdown().await;
}

/// A request refused before its body is read (wrong offset, full disk,
/// locked upload) still reaches a client that is busy sending that body:
/// the server reads and drops the rest for a while before it closes, as
/// nginx's lingering close does. Closing with unread data makes the kernel
/// answer with a reset, which can reach the client before the answer does,
/// so that it sees only a broken connection and retries blindly.
#[tokio::test]
async fn a_refusal_reaches_a_client_still_sending_its_body() {
    let server = Server::start_with(with_limits(Limits::default())).await;
    let alice = server.add_user("alice").await;
    let mut client = server.connect().await;
    let token = client.login("alice", &alice, &server.identity).await;
    let length = 32 * 1024 * 1024;
    let (status, headers, _) = client
        .raw(
            "POST",
            "/v1/uploads",
            &[TUS, ("upload-length", &length.to_string())],
            vec![],
            Some(&token),
        )
        .await;
    assert_eq!(status, 201);
    let location = headers["location"].to_str().unwrap().to_string();
    for round in 0..3 {
        let mut raw = tls_from(&server, "127.0.0.1").await.unwrap();
        // Offset 5 on an empty upload: 409 before a byte of the body is read.
        let head = format!(
            "PATCH {location} HTTP/1.1\r\nHost: localhost\r\nAuthorization: Bearer {token}\r\nTus-Resumable: 1.0.0\r\nContent-Type: application/offset+octet-stream\r\nUpload-Offset: 5\r\nContent-Length: {}\r\n\r\n",
            length - 5
        );
        raw.write_all(head.as_bytes()).await.unwrap();
        // Like a client that sends its whole body before it reads.
        let piece = vec![7u8; 1024 * 1024];
        let mut sent = 0;
        while sent < length - 5 {
            let n = piece.len().min(length - 5 - sent);
            if let Err(err) = raw.write_all(&piece[..n]).await {
                panic!("round {round}: sending failed after {sent} bytes: {err}");
            }
            sent += n;
        }
        raw.flush().await.unwrap();
        let mut answer = Vec::new();
        let read =
            tokio::time::timeout(Duration::from_secs(10), raw.read_to_end(&mut answer)).await;
        let answer = String::from_utf8_lossy(&answer);
        assert!(
            answer.starts_with("HTTP/1.1 409"),
            "round {round}: {read:?}, answer {answer:?}"
        );
    }
    // A client that never stops sending does not keep the connection:
    // the server stops reading it after its lingering time (5 s).
    let raw = tls_from(&server, "127.0.0.1").await.unwrap();
    let (mut reader, mut writer) = tokio::io::split(raw);
    let head = format!(
        "PATCH {location} HTTP/1.1\r\nHost: localhost\r\nAuthorization: Bearer {token}\r\nTus-Resumable: 1.0.0\r\nContent-Type: application/offset+octet-stream\r\nUpload-Offset: 5\r\nContent-Length: {}\r\n\r\n",
        1u64 << 40
    );
    writer.write_all(head.as_bytes()).await.unwrap();
    let started = Instant::now();
    let flood = tokio::spawn(async move {
        let piece = vec![7u8; 64 * 1024];
        while started.elapsed() < Duration::from_secs(30) {
            if writer.write_all(&piece).await.is_err() {
                return started.elapsed();
            }
        }
        started.elapsed()
    });
    let mut answer = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(30), reader.read_to_end(&mut answer)).await;
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 409"), "{answer:?}");
    let cut_after = flood.await.unwrap();
    assert!(
        cut_after < Duration::from_secs(12),
        "a flooding client was read for {cut_after:?}"
    );

    // Nothing of the refused bodies counted.
    let (status, headers, _) = client
        .raw("HEAD", &location, &[TUS], vec![], Some(&token))
        .await;
    assert_eq!(status, 200);
    assert_eq!(headers["upload-offset"], "0");
    server.shutdown().await;
}

#[tokio::test]
async fn quota_and_open_upload_limits() {
    let server = Server::start_with(with_limits(Limits {
        max_open_uploads_per_user: 2,
        ..Limits::default()
    }))
    .await;
    let bob = {
        let id = coffer_format::Identity::generate().unwrap();
        let store = server.store().await;
        store
            .add_user(
                &coffer_server::store::User {
                    name: "bob".into(),
                    public_identity: id.public().to_string(),
                    is_admin: false,
                    quota_bytes: Some(1000),
                    disabled: false,
                },
                0,
            )
            .await
            .unwrap();
        id
    };
    let mut client = server.connect().await;
    let token = client.login("bob", &bob, &server.identity).await;

    // Over quota at once: refused, nothing stored.
    let (status, _, body) = client
        .raw(
            "POST",
            "/v1/uploads",
            &[TUS, OCTETS, ("upload-length", "1500")],
            vec![1u8; 1500],
            Some(&token),
        )
        .await;
    assert_eq!(status, 413);
    let body: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(body["error"]["code"], "quota_exceeded");
    assert!(body["error"]["message"].as_str().unwrap().contains("1000"));
    assert_eq!(
        client.call("GET", "/v1/files", None, Some(&token)).await.1["files"],
        json!([])
    );

    // 600 fits; another 600 does not.
    let (status, _, _) = client
        .raw(
            "POST",
            "/v1/uploads",
            &[TUS, OCTETS, ("upload-length", "600")],
            vec![1u8; 600],
            Some(&token),
        )
        .await;
    assert_eq!(status, 201);
    let (status, _, _) = client
        .raw(
            "POST",
            "/v1/uploads",
            &[TUS, ("upload-length", "600")],
            vec![],
            Some(&token),
        )
        .await;
    assert_eq!(status, 413);
    // Unfinished uploads count against the quota at their declared length,
    // and against the open-upload limit.
    for _ in 0..2 {
        let (status, _, _) = client
            .raw(
                "POST",
                "/v1/uploads",
                &[TUS, ("upload-length", "100")],
                vec![],
                Some(&token),
            )
            .await;
        assert_eq!(status, 201);
    }
    let (status, _, body) = client
        .raw(
            "POST",
            "/v1/uploads",
            &[TUS, ("upload-length", "1")],
            vec![],
            Some(&token),
        )
        .await;
    assert_eq!(status, 429, "{}", String::from_utf8_lossy(&body));
    server.shutdown().await;
}

/// A TCP connection from `from` that first sends a PROXY v2 header naming
/// `client`.
async fn through_balancer(
    server: &Server,
    from: &str,
    client: std::net::SocketAddrV4,
) -> std::io::Result<tokio_rustls::client::TlsStream<tokio::net::TcpStream>> {
    use ppp::v2::{Builder, Command, IPv4, Protocol, Version};
    let socket = tokio::net::TcpSocket::new_v4()?;
    socket.bind(format!("{from}:0").parse().unwrap())?;
    let mut tcp = socket.connect(server.addr).await?;
    let addresses = IPv4::new(client.ip().octets(), [127, 0, 0, 1], client.port(), 8443);
    let header =
        Builder::with_addresses(Version::Two | Command::Proxy, Protocol::Stream, addresses)
            .build()
            .unwrap();
    tcp.write_all(&header).await?;
    common::tls_over(tcp, server.cert.clone()).await
}

#[tokio::test]
async fn a_configured_balancer_names_the_client_and_nobody_else_may() {
    let server = Server::start_with(with_limits(Limits {
        proxy_protocol_from: vec!["127.0.0.5".parse().unwrap()],
        max_connections_per_ip: 2,
        ..Limits::default()
    }))
    .await;
    let alice = server.add_user("alice").await;
    let far: std::net::SocketAddrV4 = "203.0.113.7:4444".parse().unwrap();
    let tls = through_balancer(&server, "127.0.0.5", far).await.unwrap();
    let mut client = Client::over(tls, &server).await;
    client.login("alice", &alice, &server.identity).await;

    // The per-address cap counts the client behind the balancer, not the
    // balancer: two from 203.0.113.7 fill it, another client still gets in.
    let _second = through_balancer(&server, "127.0.0.5", far).await.unwrap();
    assert!(through_balancer(&server, "127.0.0.5", far).await.is_err());
    let other = "198.51.100.9:5555".parse().unwrap();
    let mut other = Client::over(
        through_balancer(&server, "127.0.0.5", other).await.unwrap(),
        &server,
    )
    .await;
    assert_eq!(other.call("GET", "/healthz", None, None).await.0, 200);

    // From the balancer's address, no header: dropped (fail closed).
    assert!(tls_from(&server, "127.0.0.5").await.is_err());
    // From anyone else, a header is not believed (it is not TLS).
    let spoofed = through_balancer(&server, "127.0.0.1", "192.0.2.1:1".parse().unwrap()).await;
    assert!(spoofed.is_err());
    let mut direct = client_from(&server, "127.0.0.1").await;
    assert_eq!(direct.call("GET", "/healthz", None, None).await.0, 200);

    drop((client, other, direct));
    let dir = server.stop().await;
    let text = common::audit_text(dir.path()).await;
    let login = text
        .lines()
        .find(|line| line.contains("\"login\""))
        .expect("a login event");
    assert!(login.contains("203.0.113.7"), "{login}");
    assert!(!text.contains("192.0.2.1"), "{text}");
}

/// A signed-in user's requests count against that user, not their
/// address: a batch job is not held to the anonymous budget, and another
/// user behind the same address keeps theirs. Anonymous requests and
/// made-up tokens are still counted by address.
#[tokio::test]
async fn signed_in_users_are_limited_per_user_not_per_address() {
    let server = Server::start_with(with_limits(Limits {
        api_requests_per_window: 5,
        user_requests_per_window: 20,
        bearer_requests_per_window: 60,
        ..Limits::default()
    }))
    .await;
    let alice = server.add_user("alice").await;
    let bob = server.add_user("bob").await;
    let mut client = client_from(&server, "127.0.0.1").await;
    let alice_token = client.login("alice", &alice, &server.identity).await;
    let bob_token = client.login("bob", &bob, &server.identity).await;
    let whoami = |token: String| ("GET", "/v1/whoami", token);
    let mut first_refused = None;
    for i in 0..40 {
        let (method, path, token) = whoami(alice_token.clone());
        let (status, headers, body) = client.raw(method, path, &[], vec![], Some(&token)).await;
        if status == 429 {
            let body: serde_json::Value = serde_json::from_slice(&body).unwrap();
            assert_eq!(body["error"]["code"], "rate_limited");
            let retry: u64 = headers["retry-after"].to_str().unwrap().parse().unwrap();
            assert!((1..=60).contains(&retry), "Retry-After {retry}");
            first_refused = Some(i);
            break;
        }
        assert_eq!(status, 200, "request {i}");
    }
    let first_refused = first_refused.expect("alice was never limited");
    assert!(
        (20..=22).contains(&first_refused),
        "alice limited at {first_refused}, not at her own budget of 20 (the address budget is 5)"
    );
    // Bob, from the same address, has his own budget.
    assert_eq!(
        client
            .call("GET", "/v1/whoami", None, Some(&bob_token))
            .await
            .0,
        200
    );

    // Anonymous requests from the address: its budget of 5.
    let statuses: Vec<u16> = {
        let mut out = Vec::new();
        for _ in 0..7 {
            let (status, _, _) = client
                .raw(
                    "GET",
                    "/v1/links/0123456789abcdef0123456789abcdef",
                    &[],
                    vec![],
                    None,
                )
                .await;
            out.push(status);
        }
        out
    };
    assert_eq!(statuses[..5], [404; 5], "{statuses:?}");
    assert_eq!(statuses[6], 429, "{statuses:?}");
    // Made-up tokens are counted by address too (before any look-up).
    let mut refused_at = None;
    for i in 0..80 {
        let (status, _) = client
            .call("GET", "/v1/whoami", None, Some("made-up"))
            .await;
        if status == 429 {
            refused_at = Some(i);
            break;
        }
        assert_eq!(status, 401);
    }
    let refused_at = refused_at.expect("made-up tokens were never limited");
    // 60 at once, less what bob and alice spent from the same address.
    assert!(refused_at <= 60, "refused at {refused_at}");
    server.shutdown().await;
}
