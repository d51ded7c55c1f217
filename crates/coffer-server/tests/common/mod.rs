//! Test harness: the real server on 127.0.0.1 (random port) and a pinned
//! TLS 1.3 client that can read its session's exporter value.
#![allow(dead_code)]

use std::sync::Arc;

use base64::Engine as _;
use coffer_format::{Identity, PublicIdentity};
use coffer_server::service::session::login_message;
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

pub const B64: base64::engine::GeneralPurpose = base64::engine::general_purpose::URL_SAFE_NO_PAD;

/// Accepts exactly one certificate (by DER equality), like a pinned client.
#[derive(Debug)]
pub struct Pinned(
    pub CertificateDer<'static>,
    pub Arc<rustls::crypto::CryptoProvider>,
);

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

/// The storage backend these tests run on (`COFFER_TEST_BACKEND`).
pub fn backend() -> coffer_server::testing::Backend {
    coffer_server::testing::Backend::from_env()
}

/// The configuration for functional tests: they make many requests from
/// one address, and the limits have their own tests (limits.rs).
pub fn functional_config() -> Config {
    Config {
        limits: coffer_server::Limits {
            api_requests_per_window: 1_000_000,
            login_requests_per_window: 1_000_000,
            ..Default::default()
        },
        ..Config::default()
    }
}

pub struct Server {
    pub dir: tempfile::TempDir,
    pub addr: std::net::SocketAddr,
    pub metrics: Option<std::net::SocketAddr>,
    pub cert: CertificateDer<'static>,
    pub identity: PublicIdentity,
    pub stop: Option<tokio::sync::oneshot::Sender<()>>,
    pub task: tokio::task::JoinHandle<anyhow::Result<()>>,
}

impl Server {
    pub async fn start(challenge_ttl: u64) -> Self {
        Self::start_with(Config {
            challenge_ttl_secs: challenge_ttl,
            ..functional_config()
        })
        .await
    }

    /// Starts a server with `config`, on a random 127.0.0.1 port, on the
    /// backend the suite runs on.
    pub async fn start_with(config: Config) -> Self {
        Self::start_on(config, backend()).await
    }

    /// Starts a server with `config` on `backend`.
    pub async fn start_on(config: Config, backend: coffer_server::testing::Backend) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("data");
        let mut config = Config {
            listen: "127.0.0.1:0".parse().unwrap(),
            ..config
        };
        coffer_server::testing::configure(&mut config, backend).await;
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
        let node = Node::run(data).await;
        Server {
            dir,
            addr: node.addr,
            metrics: node.metrics,
            cert,
            identity,
            stop: node.stop,
            task: node.task,
        }
    }

    /// Another node over this server's data directory, so over the same
    /// database, object store, identity and certificate, as in a scale-out
    /// deployment (docs/OPERATIONS.md). Only meaningful on PostgreSQL,
    /// which several processes may share.
    pub async fn start_node(&self) -> Node {
        Node::run(DataDir::open(&self.dir.path().join("data")).unwrap()).await
    }

    pub async fn store(&self) -> impl MetaStore {
        DataDir::open(&self.dir.path().join("data"))
            .unwrap()
            .store()
            .await
            .unwrap()
    }

    pub async fn add_user(&self, name: &str) -> Identity {
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

    pub async fn connect(&self) -> Client {
        self.connect_with(&[&rustls::version::TLS13]).await.unwrap()
    }

    pub async fn connect_with(
        &self,
        versions: &[&'static rustls::SupportedProtocolVersion],
    ) -> Result<Client, std::io::Error> {
        Self::connect_to(self.addr, self.cert.clone(), versions).await
    }

    pub async fn connect_to(
        addr: std::net::SocketAddr,
        cert: CertificateDer<'static>,
        versions: &[&'static rustls::SupportedProtocolVersion],
    ) -> Result<Client, std::io::Error> {
        let tls = Self::tls_connect(addr, cert.clone(), versions).await?;
        Ok(Client::from_tls(tls, addr, cert).await)
    }

    /// A pinned TLS connection, for tests that speak HTTP by hand.
    pub async fn tls_connect(
        addr: std::net::SocketAddr,
        cert: CertificateDer<'static>,
        versions: &[&'static rustls::SupportedProtocolVersion],
    ) -> Result<tokio_rustls::client::TlsStream<TcpStream>, std::io::Error> {
        Self::tls_connect_as(addr, cert, versions, None).await
    }

    /// Like [`Self::tls_connect`], presenting a client certificate if given.
    pub async fn tls_connect_as(
        addr: std::net::SocketAddr,
        cert: CertificateDer<'static>,
        versions: &[&'static rustls::SupportedProtocolVersion],
        client_auth: Option<(
            Vec<CertificateDer<'static>>,
            rustls::pki_types::PrivateKeyDer<'static>,
        )>,
    ) -> Result<tokio_rustls::client::TlsStream<TcpStream>, std::io::Error> {
        let provider = coffer_server::tls::provider();
        let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
            .with_protocol_versions(versions)
            .unwrap()
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(Pinned(cert, provider)));
        let config = match client_auth {
            None => builder.with_no_client_auth(),
            Some((chain, key)) => builder.with_client_auth_cert(chain, key).unwrap(),
        };
        let tcp = TcpStream::connect(addr).await?;
        tokio_rustls::TlsConnector::from(Arc::new(config))
            .connect(ServerName::try_from("localhost").unwrap(), tcp)
            .await
    }

    pub async fn shutdown(self) {
        drop(self.stop().await);
    }

    /// Shuts down and hands back the data directory for inspection.
    pub async fn stop(mut self) -> tempfile::TempDir {
        let _ = self.stop.take().unwrap().send(());
        (&mut self.task).await.unwrap().unwrap();
        self.dir
    }
}

/// A running server process (in a task) without a data directory of its own.
pub struct Node {
    pub addr: std::net::SocketAddr,
    pub metrics: Option<std::net::SocketAddr>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<anyhow::Result<()>>,
}

impl Node {
    /// Serves `data` on the address its config names.
    pub async fn run(data: DataDir) -> Self {
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let (ready_tx, ready_rx) = tokio::sync::oneshot::channel();
        let task = tokio::spawn(coffer_server::run(
            data,
            async {
                let _ = stopped.await;
            },
            move |bound| {
                let _ = ready_tx.send(bound);
            },
        ));
        let bound: coffer_server::Bound = match ready_rx.await {
            Ok(bound) => bound,
            Err(_) => panic!("the server did not start: {:?}", task.await),
        };
        Node {
            addr: bound.api,
            metrics: bound.metrics,
            stop: Some(stop),
            task,
        }
    }

    pub async fn shutdown(mut self) {
        let _ = self.stop.take().unwrap().send(());
        (&mut self.task).await.unwrap().unwrap();
    }
}

pub struct Client {
    pub sender: hyper::client::conn::http1::SendRequest<Full<Bytes>>,
    pub exporter: [u8; 32],
    addr: std::net::SocketAddr,
    cert: CertificateDer<'static>,
}

/// A pinned TLS 1.3 client handshake over an existing TCP stream.
pub async fn tls_over(
    tcp: TcpStream,
    cert: CertificateDer<'static>,
) -> Result<tokio_rustls::client::TlsStream<TcpStream>, std::io::Error> {
    let provider = coffer_server::tls::provider();
    let config = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .unwrap()
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(Pinned(cert, provider)))
        .with_no_client_auth();
    tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect(ServerName::try_from("localhost").unwrap(), tcp)
        .await
}

impl Client {
    /// An HTTP/1.1 client over an established TLS stream to `server`.
    pub async fn over(tls: tokio_rustls::client::TlsStream<TcpStream>, server: &Server) -> Self {
        Self::from_tls(tls, server.addr, server.cert.clone()).await
    }

    async fn from_tls(
        tls: tokio_rustls::client::TlsStream<TcpStream>,
        addr: std::net::SocketAddr,
        cert: CertificateDer<'static>,
    ) -> Self {
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
        Client {
            sender,
            exporter,
            addr,
            cert,
        }
    }

    pub async fn call(
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

    pub async fn challenge(&mut self, user: &str) -> (Vec<u8>, String) {
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
    pub async fn login_with(
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

    pub async fn login(&mut self, user: &str, id: &Identity, server: &PublicIdentity) -> String {
        let (nonce, _) = self.challenge(user).await;
        let exporter = self.exporter;
        let (status, body) = self.login_with(user, id, &nonce, server, exporter).await;
        assert_eq!(status, 200, "{body}");
        body["token"].as_str().unwrap().to_string()
    }
}

impl Client {
    /// tus creation carrying the whole `body` (so it commits at once), with
    /// optional `Upload-Metadata`: returns status, headers and body.
    pub async fn tus_create(
        &mut self,
        token: &str,
        body: Vec<u8>,
        metadata: Option<&str>,
    ) -> (u16, hyper::HeaderMap, Vec<u8>) {
        let len = body.len().to_string();
        let mut headers = vec![
            ("tus-resumable", "1.0.0"),
            ("content-type", "application/offset+octet-stream"),
            ("upload-length", len.as_str()),
        ];
        if let Some(metadata) = metadata {
            headers.push(("upload-metadata", metadata));
        }
        self.raw("POST", "/v1/uploads", &headers, body, Some(token))
            .await
    }

    /// A raw request: returns status, headers and body bytes.
    pub async fn raw(
        &mut self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: Vec<u8>,
        token: Option<&str>,
    ) -> (u16, hyper::HeaderMap, Vec<u8>) {
        self.try_raw(method, path, headers, body, token)
            .await
            .unwrap()
    }

    /// [`Self::raw`], with a transport failure returned: a server that
    /// refuses a request before reading all of its body closes the
    /// connection, and the reset can reach the client before the answer.
    pub async fn try_raw(
        &mut self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: Vec<u8>,
        token: Option<&str>,
    ) -> Result<(u16, hyper::HeaderMap, Vec<u8>), hyper::Error> {
        // The server closes a connection after refusing a request whose body
        // it did not read; reconnect as a real client would.
        if self.sender.ready().await.is_err() {
            let fresh =
                Server::connect_to(self.addr, self.cert.clone(), &[&rustls::version::TLS13])
                    .await
                    .unwrap();
            self.sender = fresh.sender;
        }
        let mut req = hyper::Request::builder()
            .method(method)
            .uri(path)
            .header("host", "localhost");
        for (name, value) in headers {
            req = req.header(*name, *value);
        }
        if let Some(token) = token {
            req = req.header("authorization", format!("Bearer {token}"));
        }
        let resp = self
            .sender
            .send_request(req.body(Full::new(Bytes::from(body))).unwrap())
            .await?;
        let status = resp.status().as_u16();
        let headers = resp.headers().clone();
        let bytes = resp.into_body().collect().await?.to_bytes().to_vec();
        Ok((status, headers, bytes))
    }
}

/// The audit log of the data directory under `dir` (as `Server::stop`
/// returns it), exported as JSON Lines.
pub async fn audit_text(dir: &std::path::Path) -> String {
    let store = DataDir::open(&dir.join("data"))
        .unwrap()
        .store()
        .await
        .unwrap();
    let mut out = Vec::new();
    coffer_server::service::audit::export_json_lines(&store, &mut out)
        .await
        .unwrap();
    String::from_utf8(out).unwrap()
}

/// The `coffer-file-id` pair an E2EE upload of `object` must carry: the id
/// its header names (the server refuses to commit an object whose header
/// names another).
pub fn file_id_pair(object: &[u8]) -> String {
    use base64::Engine as _;
    let (header, _) = coffer_format::Header::parse(object).unwrap();
    format!(
        "coffer-file-id {}",
        base64::engine::general_purpose::STANDARD.encode(header.core().file_id_hex())
    )
}
