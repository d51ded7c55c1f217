//! Login and transport tests against the real server on 127.0.0.1 over TLS.

use std::sync::Arc;

use base64::Engine as _;
use coffer_format::{Identity, PublicIdentity};
use coffer_server::auth::login_message;
use coffer_server::store::{MetaStore, User};
use coffer_server::tls::LOGIN_EXPORTER_LABEL;
use coffer_server::{CertSource, Config, DataDir};
use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, SignatureScheme};
use serde_json::{Value, json};
use tokio::net::TcpStream;

const B64: base64::engine::GeneralPurpose = base64::engine::general_purpose::URL_SAFE_NO_PAD;

/// Accepts exactly one certificate (by DER equality), like a pinned client.
#[derive(Debug)]
struct Pinned(CertificateDer<'static>, Arc<rustls::crypto::CryptoProvider>);

impl ServerCertVerifier for Pinned {
    fn verify_server_cert(
        &self,
        end: &CertificateDer<'_>,
        _: &[CertificateDer<'_>],
        _: &ServerName<'_>,
        _: &[u8],
        _: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        if end.as_ref() == self.0.as_ref() {
            Ok(ServerCertVerified::assertion())
        } else {
            Err(rustls::Error::General("pin mismatch".into()))
        }
    }
    fn verify_tls12_signature(
        &self,
        m: &[u8],
        c: &CertificateDer<'_>,
        d: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(m, c, d, &self.1.signature_verification_algorithms)
    }
    fn verify_tls13_signature(
        &self,
        m: &[u8],
        c: &CertificateDer<'_>,
        d: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(m, c, d, &self.1.signature_verification_algorithms)
    }
    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.1.signature_verification_algorithms.supported_schemes()
    }
}

struct Server {
    dir: tempfile::TempDir,
    addr: std::net::SocketAddr,
    cert: CertificateDer<'static>,
    identity: PublicIdentity,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<anyhow::Result<()>>,
}

impl Server {
    async fn start(challenge_ttl: u64) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("data");
        let config = Config {
            listen: "127.0.0.1:0".parse().unwrap(),
            challenge_ttl_secs: challenge_ttl,
            ..Config::default()
        };
        coffer_server::init(
            &root,
            CertSource::SelfSigned(vec!["localhost".into()]),
            config,
        )
        .await
        .unwrap();
        let data = DataDir::open(&root).unwrap();
        let identity = data.identity.public().clone();
        let cert = coffer_server::tls::load_chain(&data.path(&data.config.tls_cert))
            .unwrap()
            .remove(0);
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let (ready_tx, ready_rx) = tokio::sync::oneshot::channel();
        let task = tokio::spawn(coffer_server::run(
            data,
            async {
                let _ = stopped.await;
            },
            move |addr| {
                let _ = ready_tx.send(addr);
            },
        ));
        let addr = ready_rx.await.unwrap();
        Server {
            dir,
            addr,
            cert,
            identity,
            stop: Some(stop),
            task,
        }
    }

    async fn store(&self) -> impl MetaStore {
        coffer_server::store::SqliteStore::open(&self.dir.path().join("data/meta.db"))
            .await
            .unwrap()
    }

    async fn add_user(&self, name: &str) -> Identity {
        let id = Identity::generate().unwrap();
        let user = User {
            name: name.into(),
            public_identity: id.public().to_string(),
            is_admin: false,
            quota_bytes: None,
            disabled: false,
        };
        self.store().await.add_user(&user, 0).await.unwrap();
        id
    }

    async fn connect(&self) -> Client {
        self.connect_with(&[&rustls::version::TLS13]).await.unwrap()
    }

    async fn connect_with(
        &self,
        versions: &[&'static rustls::SupportedProtocolVersion],
    ) -> Result<Client, std::io::Error> {
        let provider = coffer_server::tls::provider();
        let config = rustls::ClientConfig::builder_with_provider(provider.clone())
            .with_protocol_versions(versions)
            .unwrap()
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(Pinned(self.cert.clone(), provider)))
            .with_no_client_auth();
        let tcp = TcpStream::connect(self.addr).await?;
        let tls = tokio_rustls::TlsConnector::from(Arc::new(config))
            .connect(ServerName::try_from("localhost").unwrap(), tcp)
            .await?;
        let mut exporter = [0u8; 32];
        tls.get_ref()
            .1
            .export_keying_material(&mut exporter, LOGIN_EXPORTER_LABEL, None)
            .unwrap();
        let (sender, conn) =
            hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(tls))
                .await
                .unwrap();
        tokio::spawn(conn);
        Ok(Client { sender, exporter })
    }

    async fn shutdown(mut self) {
        let _ = self.stop.take().unwrap().send(());
        self.task.await.unwrap().unwrap();
    }
}

struct Client {
    sender: hyper::client::conn::http1::SendRequest<Full<Bytes>>,
    exporter: [u8; 32],
}

impl Client {
    async fn call(
        &mut self,
        method: &str,
        path: &str,
        body: Option<Value>,
        token: Option<&str>,
    ) -> (u16, Value) {
        let mut req = hyper::Request::builder()
            .method(method)
            .uri(path)
            .header("host", "localhost");
        if let Some(token) = token {
            req = req.header("authorization", format!("Bearer {token}"));
        }
        let body = match body {
            Some(v) => {
                req = req.header("content-type", "application/json");
                Full::new(Bytes::from(v.to_string()))
            }
            None => Full::new(Bytes::new()),
        };
        let resp = self
            .sender
            .send_request(req.body(body).unwrap())
            .await
            .unwrap();
        let status = resp.status().as_u16();
        let bytes = resp.into_body().collect().await.unwrap().to_bytes();
        (
            status,
            serde_json::from_slice(&bytes).unwrap_or(Value::Null),
        )
    }

    async fn challenge(&mut self, user: &str) -> (Vec<u8>, String) {
        let (status, body) = self
            .call(
                "POST",
                "/v1/auth/challenge",
                Some(json!({"user": user})),
                None,
            )
            .await;
        assert_eq!(status, 200, "{body}");
        (
            B64.decode(body["nonce"].as_str().unwrap()).unwrap(),
            body["server_identity"].as_str().unwrap().to_string(),
        )
    }

    /// Signs a login for `user` with `id`, bound to `server` and `exporter`.
    async fn login_with(
        &mut self,
        user: &str,
        id: &Identity,
        nonce: &[u8],
        server: &PublicIdentity,
        exporter: [u8; 32],
    ) -> (u16, Value) {
        let nonce_arr: [u8; 32] = nonce.try_into().unwrap();
        let sig = id.sign(&login_message(user, &nonce_arr, server, &exporter));
        self.call(
            "POST",
            "/v1/auth/login",
            Some(json!({"user": user, "nonce": B64.encode(nonce), "signature": B64.encode(sig)})),
            None,
        )
        .await
    }

    async fn login(&mut self, user: &str, id: &Identity, server: &PublicIdentity) -> String {
        let (nonce, _) = self.challenge(user).await;
        let exporter = self.exporter;
        let (status, body) = self.login_with(user, id, &nonce, server, exporter).await;
        assert_eq!(status, 200, "{body}");
        body["token"].as_str().unwrap().to_string()
    }
}

#[tokio::test]
async fn login_then_whoami_refresh_and_logout() {
    let server = Server::start(60).await;
    let alice = server.add_user("alice").await;
    let mut client = server.connect().await;
    assert_eq!(client.call("GET", "/healthz", None, None).await.0, 200);
    let (_, advertised) = client.challenge("alice").await;
    assert_eq!(advertised, server.identity.to_string());
    let token = client.login("alice", &alice, &server.identity).await;
    let (status, me) = client.call("GET", "/v1/whoami", None, Some(&token)).await;
    assert_eq!((status, me["user"].as_str()), (200, Some("alice")));

    let (status, fresh) = client
        .call("POST", "/v1/auth/refresh", None, Some(&token))
        .await;
    assert_eq!(status, 200);
    let fresh = fresh["token"].as_str().unwrap().to_string();
    assert_eq!(
        client.call("GET", "/v1/whoami", None, Some(&token)).await.0,
        401,
        "old token still valid after refresh"
    );
    assert_eq!(
        client.call("GET", "/v1/whoami", None, Some(&fresh)).await.0,
        200
    );
    assert_eq!(
        client
            .call("POST", "/v1/auth/logout", None, Some(&fresh))
            .await
            .0,
        204
    );
    assert_eq!(
        client.call("GET", "/v1/whoami", None, Some(&fresh)).await.0,
        401
    );
    server.shutdown().await;
}

#[tokio::test]
async fn replayed_nonce_is_refused_even_after_a_failure() {
    let server = Server::start(60).await;
    let alice = server.add_user("alice").await;
    let mallory = Identity::generate().unwrap();
    let mut client = server.connect().await;
    let (nonce, _) = client.challenge("alice").await;
    let exporter = client.exporter;
    let (status, body) = client
        .login_with("alice", &alice, &nonce, &server.identity, exporter)
        .await;
    assert_eq!(status, 200, "{body}");
    // Same nonce, same valid signature: replay.
    let (status, body) = client
        .login_with("alice", &alice, &nonce, &server.identity, exporter)
        .await;
    assert_eq!(status, 401);
    assert_eq!(body["error"]["code"], "unauthorized");
    // A failed attempt also burns the nonce.
    let (nonce, _) = client.challenge("alice").await;
    assert_eq!(
        client
            .login_with("alice", &mallory, &nonce, &server.identity, exporter)
            .await
            .0,
        401
    );
    assert_eq!(
        client
            .login_with("alice", &alice, &nonce, &server.identity, exporter)
            .await
            .0,
        401
    );
    server.shutdown().await;
}

#[tokio::test]
async fn expired_nonce_is_refused() {
    let server = Server::start(1).await;
    let alice = server.add_user("alice").await;
    let mut client = server.connect().await;
    let (nonce, _) = client.challenge("alice").await;
    tokio::time::sleep(std::time::Duration::from_millis(2100)).await;
    let exporter = client.exporter;
    assert_eq!(
        client
            .login_with("alice", &alice, &nonce, &server.identity, exporter)
            .await
            .0,
        401
    );
    server.shutdown().await;
}

#[tokio::test]
async fn signature_for_another_server_or_session_is_refused() {
    let server = Server::start(60).await;
    let alice = server.add_user("alice").await;
    let other_server = Identity::generate().unwrap();
    let mut client = server.connect().await;
    let exporter = client.exporter;
    // Signed for another server's identity (a relay).
    let (nonce, _) = client.challenge("alice").await;
    assert_eq!(
        client
            .login_with("alice", &alice, &nonce, other_server.public(), exporter)
            .await
            .0,
        401
    );
    // Signed over another TLS session's exporter (a man in the middle).
    let other_session = server.connect().await.exporter;
    assert_ne!(other_session, exporter);
    let (nonce, _) = client.challenge("alice").await;
    assert_eq!(
        client
            .login_with("alice", &alice, &nonce, &server.identity, other_session)
            .await
            .0,
        401
    );
    // A nonce issued for bob cannot log in alice.
    server.add_user("bob").await;
    let (nonce, _) = client.challenge("bob").await;
    assert_eq!(
        client
            .login_with("alice", &alice, &nonce, &server.identity, exporter)
            .await
            .0,
        401
    );
    server.shutdown().await;
}

#[tokio::test]
async fn unknown_users_and_bad_input_get_the_same_answer() {
    let server = Server::start(60).await;
    let ghost = Identity::generate().unwrap();
    let mut client = server.connect().await;
    let (nonce, _) = client.challenge("ghost").await;
    let exporter = client.exporter;
    let (status, body) = client
        .login_with("ghost", &ghost, &nonce, &server.identity, exporter)
        .await;
    assert_eq!(
        (status, body["error"]["message"].as_str()),
        (401, Some("authentication failed"))
    );
    let (status, _) = client
        .call(
            "POST",
            "/v1/auth/login",
            Some(json!({"user": "ghost", "nonce": "%%%", "signature": "x"})),
            None,
        )
        .await;
    assert_eq!(status, 401);
    assert_eq!(
        client
            .call("GET", "/v1/whoami", None, Some("not-a-token"))
            .await
            .0,
        401
    );
    assert_eq!(client.call("GET", "/v1/whoami", None, None).await.0, 401);
    assert_eq!(
        client
            .call(
                "POST",
                "/v1/auth/challenge",
                Some(json!({"user": "../etc"})),
                None
            )
            .await
            .0,
        400
    );
    server.shutdown().await;
}

#[tokio::test]
async fn disabling_a_user_stops_its_tokens_at_once() {
    let server = Server::start(60).await;
    let alice = server.add_user("alice").await;
    let bob = server.add_user("bob").await;
    let mut client = server.connect().await;
    let alice_token = client.login("alice", &alice, &server.identity).await;
    let bob_token = client.login("bob", &bob, &server.identity).await;
    assert!(
        server
            .store()
            .await
            .set_disabled("alice", true)
            .await
            .unwrap()
    );
    assert_eq!(
        client
            .call("GET", "/v1/whoami", None, Some(&alice_token))
            .await
            .0,
        401
    );
    let (status, me) = client
        .call("GET", "/v1/whoami", None, Some(&bob_token))
        .await;
    assert_eq!(
        (status, me["user"].as_str()),
        (200, Some("bob")),
        "another user's token is unaffected"
    );
    // And the disabled user cannot log in again.
    let (nonce, _) = client.challenge("alice").await;
    let exporter = client.exporter;
    assert_eq!(
        client
            .login_with("alice", &alice, &nonce, &server.identity, exporter)
            .await
            .0,
        401
    );
    // Public identities can be looked up by name.
    let (status, found) = client
        .call("GET", "/v1/users/alice/identity", None, Some(&bob_token))
        .await;
    assert_eq!(
        (status, found["public_identity"].as_str()),
        (200, Some(alice.public().to_string().as_str()))
    );
    server.shutdown().await;
}

#[tokio::test]
async fn tls_1_2_is_refused() {
    let server = Server::start(60).await;
    assert!(
        server
            .connect_with(&[&rustls::version::TLS12])
            .await
            .is_err()
    );
    server.shutdown().await;
}
