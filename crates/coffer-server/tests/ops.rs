//! Operator features: client certificates (mTLS) and the Prometheus
//! metrics listener.

mod common;

use coffer_server::Config;
use common::Server;
use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, ExtendedKeyUsagePurpose, IsCa, KeyPair,
};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};

type ClientAuth = (Vec<CertificateDer<'static>>, PrivateKeyDer<'static>);

fn ca() -> CertifiedIssuer<'static, KeyPair> {
    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    CertifiedIssuer::self_signed(params, KeyPair::generate().unwrap()).unwrap()
}

fn client_cert(issuer: &CertifiedIssuer<'static, KeyPair>) -> ClientAuth {
    let mut params = CertificateParams::new(vec!["batch-job".to_string()]).unwrap();
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    let key = KeyPair::generate().unwrap();
    let cert = params.signed_by(&key, issuer).unwrap();
    (
        vec![cert.der().clone()],
        PrivatePkcs8KeyDer::from(key.serialize_der()).into(),
    )
}

/// GET `path` over a fresh pinned TLS 1.3 connection; Err if the TLS
/// handshake or the exchange fails (a refused client certificate surfaces
/// at the first read in TLS 1.3).
async fn get(
    server: &Server,
    addr: std::net::SocketAddr,
    path: &str,
    auth: Option<ClientAuth>,
) -> Result<(u16, String), String> {
    let tls = Server::tls_connect_as(addr, server.cert.clone(), &[&rustls::version::TLS13], auth)
        .await
        .map_err(|e| e.to_string())?;
    let (mut sender, conn) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(tls))
            .await
            .map_err(|e| e.to_string())?;
    tokio::spawn(conn);
    let req = hyper::Request::builder()
        .uri(path)
        .header("host", "localhost")
        .body(Full::new(Bytes::new()))
        .unwrap();
    let resp = sender.send_request(req).await.map_err(|e| e.to_string())?;
    let status = resp.status().as_u16();
    let body = resp
        .into_body()
        .collect()
        .await
        .map_err(|e| e.to_string())?;
    Ok((
        status,
        String::from_utf8_lossy(&body.to_bytes()).into_owned(),
    ))
}

#[tokio::test]
async fn mtls_requires_a_certificate_from_the_configured_ca() {
    let issuer = ca();
    let dir = tempfile::tempdir().unwrap();
    let ca_path = dir.path().join("ca.pem");
    std::fs::write(&ca_path, issuer.pem()).unwrap();
    let server = Server::start_with(Config {
        client_ca: Some(ca_path),
        ..Config::default()
    })
    .await;
    // The CA was copied into the data directory.
    assert!(server.dir.path().join("data/tls/client-ca.pem").exists());

    let ok = get(&server, server.addr, "/healthz", Some(client_cert(&issuer))).await;
    assert_eq!(ok, Ok((200, "ok\n".to_string())));
    assert!(get(&server, server.addr, "/healthz", None).await.is_err());
    let stranger = client_cert(&ca());
    assert!(
        get(&server, server.addr, "/healthz", Some(stranger))
            .await
            .is_err()
    );
    server.shutdown().await;
}

#[tokio::test]
async fn metrics_listener_serves_prometheus_text_apart_from_the_api() {
    let server = Server::start_with(Config {
        metrics_listen: Some("127.0.0.1:0".parse().unwrap()),
        ..Config::default()
    })
    .await;
    let metrics = server.metrics.expect("metrics listener bound");
    assert_ne!(metrics, server.addr);

    // Some traffic: a health check, a failed login, an unknown route.
    let mut client = server.connect().await;
    assert_eq!(client.call("GET", "/healthz", None, None).await.0, 200);
    let bogus = serde_json::json!({"user": "nobody", "nonce": "AAAA", "signature": "AAAA"});
    assert_eq!(
        client
            .call("POST", "/v1/auth/login", Some(bogus), None)
            .await
            .0,
        401
    );

    let (status, text) = get(&server, metrics, "/metrics", None).await.unwrap();
    assert_eq!(status, 200);
    assert!(
        text.contains(r#"coffer_http_requests_total{method="GET",route="/healthz",status="200"}"#),
        "{text}"
    );
    assert!(
        text.contains(r#"coffer_logins_total{result="failed"}"#),
        "{text}"
    );
    assert!(text.contains("coffer_connections_open"), "{text}");
    assert!(
        text.contains("coffer_http_request_duration_seconds"),
        "{text}"
    );
    // Metrics are not on the API listener, and the API is not on the metrics one.
    assert_eq!(client.call("GET", "/metrics", None, None).await.0, 404);
    assert_eq!(
        get(&server, metrics, "/healthz", None).await.unwrap().0,
        404
    );
    server.shutdown().await;
}

/// The OpenAPI document is served, names every endpoint, and every path
/// and method in it is really routed (a routing miss is an empty 404 or a
/// 405; handlers answer unknown ids with a JSON error instead).
#[tokio::test]
async fn openapi_document_matches_the_routes() {
    let server = Server::start(60).await;
    let mut client = server.connect().await;
    let (status, doc) = client.call("GET", "/v1/openapi.json", None, None).await;
    assert_eq!(status, 200);
    assert!(doc["openapi"].as_str().unwrap().starts_with("3."));
    let paths = doc["paths"].as_object().unwrap();
    for expected in [
        "/v1/auth/login",
        "/v1/uploads",
        "/v1/uploads/{id}",
        "/v1/files/{id}",
        "/v1/files/{id}/shares/{user}",
        "/v1/links/{link}/open",
    ] {
        assert!(paths.contains_key(expected), "{expected} missing");
    }
    assert!(doc["components"]["securitySchemes"]["bearer"].is_object());
    let mut checked = 0;
    for (path, item) in paths {
        let concrete = path
            .replace("{id}", "0123456789abcdef0123456789abcdef")
            .replace("{link}", "0123456789abcdef0123456789abcdef")
            .replace("{user}", "nobody")
            .replace("{name}", "nobody");
        for method in item.as_object().unwrap().keys() {
            let method = method.to_uppercase();
            let (status, _, body) = client
                .raw(
                    &method,
                    &concrete,
                    &[("tus-resumable", "1.0.0")],
                    vec![],
                    None,
                )
                .await;
            assert_ne!(status, 405, "{method} {path} not routed");
            assert!(
                status != 404 || !body.is_empty() || method == "HEAD",
                "{method} {path} not routed"
            );
            checked += 1;
        }
    }
    assert!(checked >= 25, "only {checked} operations documented");
    server.shutdown().await;
}

#[tokio::test]
async fn a_second_server_on_one_sqlite_directory_is_refused() {
    use coffer_server::testing::Backend;
    use coffer_server::{Claim, DataDir};
    let server = Server::start_on(Config::default(), Backend::Embedded).await;
    let root = server.dir.path().join("data");
    // It would free the first one's upload leases at start.
    let second = coffer_server::run(DataDir::open(&root).unwrap(), async {}, |_| {
        panic!("a second server started on the same SQLite directory")
    })
    .await;
    let message = format!("{:#}", second.unwrap_err());
    assert!(message.contains("stop it first"), "{message}");
    // migrate-store's claim is refused too.
    let data = DataDir::open(&root).unwrap();
    assert!(data.claim(Claim::Alone).is_err());
    // The first server is undisturbed, and frees the directory when it stops.
    let mut client = server.connect().await;
    let (status, _) = client.call("GET", "/healthz", None, None).await;
    assert_eq!(status, 200);
    let dir = server.stop().await;
    let data = DataDir::open(&dir.path().join("data")).unwrap();
    assert!(data.claim(Claim::Alone).is_ok());
}

/// A client certificate with a known serial number.
fn client_cert_numbered(issuer: &CertifiedIssuer<'static, KeyPair>, serial: u64) -> ClientAuth {
    let mut params = CertificateParams::new(vec![format!("client-{serial}")]).unwrap();
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    params.serial_number = Some(rcgen::SerialNumber::from(serial));
    let key = KeyPair::generate().unwrap();
    let cert = params.signed_by(&key, issuer).unwrap();
    (
        vec![cert.der().clone()],
        PrivatePkcs8KeyDer::from(key.serialize_der()).into(),
    )
}

/// A CRL of `issuer` revoking `serials`, valid until `next_update_year`.
fn crl(
    issuer: &CertifiedIssuer<'static, KeyPair>,
    serials: &[u64],
    next_update_year: i32,
) -> String {
    let params = rcgen::CertificateRevocationListParams {
        this_update: rcgen::date_time_ymd(next_update_year - 2, 1, 1),
        next_update: rcgen::date_time_ymd(next_update_year, 1, 1),
        crl_number: rcgen::SerialNumber::from(u64::from(next_update_year.unsigned_abs())),
        issuing_distribution_point: None,
        revoked_certs: serials
            .iter()
            .map(|&serial| rcgen::RevokedCertParams {
                serial_number: rcgen::SerialNumber::from(serial),
                revocation_time: rcgen::date_time_ymd(2025, 6, 1),
                reason_code: Some(rcgen::RevocationReason::KeyCompromise),
                invalidity_date: None,
            })
            .collect(),
        key_identifier_method: rcgen::KeyIdMethod::Sha256,
    };
    params.signed_by(issuer).unwrap().pem().unwrap()
}

/// Sends this process SIGHUP (the in-process server reloads on it) and
/// waits until `settled` says new connections see the change.
async fn hang_up_until(mut settled: impl AsyncFnMut() -> bool) {
    let me = std::process::id().to_string();
    assert!(
        std::process::Command::new("kill")
            .args(["-HUP", &me])
            .status()
            .unwrap()
            .success()
    );
    for _ in 0..250 {
        if settled().await {
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    panic!("the reload did not take effect");
}

#[tokio::test]
async fn revoked_client_certificates_are_refused_and_crls_reload_on_sighup() {
    let issuer = ca();
    let dir = tempfile::tempdir().unwrap();
    let ca_path = dir.path().join("ca.pem");
    let crl_path = dir.path().join("ca.crl.pem");
    std::fs::write(&ca_path, issuer.pem()).unwrap();
    std::fs::write(&crl_path, crl(&issuer, &[2], 2030)).unwrap();
    let server = Server::start_with(Config {
        client_ca: Some(ca_path),
        client_crl: Some(crl_path.clone()),
        ..Config::default()
    })
    .await;
    let health = |serial: u64| {
        let auth = client_cert_numbered(&issuer, serial);
        let server = &server;
        async move {
            get(server, server.addr, "/healthz", Some(auth))
                .await
                .is_ok()
        }
    };
    assert!(health(1).await, "a certificate the CRL does not list");
    assert!(!health(2).await, "a revoked certificate");

    // The CA revokes certificate 1 as well: no restart, SIGHUP.
    std::fs::write(&crl_path, crl(&issuer, &[1, 2], 2030)).unwrap();
    hang_up_until(async || !health(1).await).await;
    assert!(health(3).await, "others still pass");

    // A CRL file that does not parse is logged and the lists in use kept.
    std::fs::write(&crl_path, "-----BEGIN X509 CRL-----\ngarbage\n").unwrap();
    hang_up_until(async || true).await;
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    assert!(!health(1).await, "the revocation stays in force");
    assert!(health(3).await);

    // A CRL past its nextUpdate refuses everyone (fail closed): a refresh
    // job that stopped is noticed, not silently trusted.
    std::fs::write(&crl_path, crl(&issuer, &[], 2026)).unwrap();
    hang_up_until(async || !health(3).await).await;
    assert!(!health(4).await);
    server.shutdown().await;
}

#[tokio::test]
async fn crls_without_a_client_ca_are_refused_at_init() {
    let dir = tempfile::tempdir().unwrap();
    let crl_path = dir.path().join("ca.crl.pem");
    std::fs::write(&crl_path, crl(&ca(), &[], 2030)).unwrap();
    let err = coffer_server::init(
        &dir.path().join("data"),
        coffer_server::CertSource::SelfSigned(vec!["localhost".into()]),
        Config {
            client_crl: Some(crl_path),
            ..Config::default()
        },
    )
    .await
    .unwrap_err();
    assert!(
        format!("{err:#}").contains("client_crl is set without client_ca"),
        "{err:#}"
    );
}
