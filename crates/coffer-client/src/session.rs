//! One authenticated conversation with a coffer server: a pinned TLS 1.3
//! connection (re-opened when it drops), the challenge-response login bound
//! to that connection's TLS exporter, and the bearer token, refreshed or
//! renewed before it runs out.

use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use coffer_format::{Identity, PublicIdentity};
use coffer_proto::login::{LOGIN_EXPORTER_LABEL, login_message};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::{Request, Response, StatusCode};
use serde::Deserialize;
use serde_json::Value;
use tokio::net::TcpStream;
use zeroize::Zeroizing;

use crate::tls::{ClientCert, Seen, Trust, client_config};
use crate::{Error, Result};

/// A request body: a whole buffer or a stream of chunks.
pub type Body = BoxBody<Bytes, std::io::Error>;

/// JSON answers larger than this are refused (a hostile server cannot make
/// the client buffer without bound).
const MAX_JSON: usize = 16 * 1024 * 1024;
/// A token with less life left than this is refreshed before use.
const REFRESH_MARGIN_SECS: i64 = 60;

/// Where a server is and how it is trusted.
#[derive(Clone, Debug)]
pub struct Endpoint {
    /// `https://host:port` as the user wrote it.
    pub url: String,
    host: String,
    port: u16,
    /// How the certificate is checked.
    pub trust: Trust,
    /// Client certificate for mTLS, if the server asks for one.
    pub client_cert: Option<ClientCert>,
}

impl Endpoint {
    /// Parses `https://HOST[:PORT][/]` (the port defaults to 443).
    pub fn parse(url: &str, trust: Trust, client_cert: Option<ClientCert>) -> Result<Self> {
        let rest = url
            .strip_prefix("https://")
            .ok_or_else(|| Error::Usage(format!("{url}: only https:// URLs are supported")))?;
        let authority = rest.split(['/', '#', '?']).next().unwrap_or_default();
        let (host, port) = split_host_port(authority)
            .ok_or_else(|| Error::Usage(format!("{url}: expected https://HOST:PORT")))?;
        Ok(Self {
            url: format!("https://{authority}"),
            host,
            port,
            trust,
            client_cert,
        })
    }

    fn authority(&self) -> String {
        if self.host.contains(':') {
            format!("[{}]:{}", self.host, self.port)
        } else {
            format!("{}:{}", self.host, self.port)
        }
    }
}

fn split_host_port(authority: &str) -> Option<(String, u16)> {
    if let Some(rest) = authority.strip_prefix('[') {
        let (host, after) = rest.split_once(']')?;
        let port = match after.strip_prefix(':') {
            Some(p) => p.parse().ok()?,
            None if after.is_empty() => 443,
            None => return None,
        };
        return Some((host.to_string(), port));
    }
    match authority.rsplit_once(':') {
        Some((host, port)) if !host.is_empty() => Some((host.to_string(), port.parse().ok()?)),
        Some(_) => None,
        None if !authority.is_empty() => Some((authority.to_string(), 443)),
        None => None,
    }
}

/// Receives a line for the user about a wait ([`Session::with_notices`]).
pub type Notices = Arc<dyn Fn(&str) + Send + Sync>;

/// One open HTTP/1.1 connection and its TLS exporter value.
struct Conn {
    sender: hyper::client::conn::http1::SendRequest<Body>,
    exporter: Zeroizing<[u8; 32]>,
}

/// A bearer token and when it expires (Unix seconds).
#[derive(Clone)]
pub struct Token {
    /// The secret.
    pub value: Zeroizing<String>,
    /// Unix time of expiry.
    pub expires_at: i64,
}

impl std::fmt::Debug for Token {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Token(expires_at: {})", self.expires_at)
    }
}

/// What first contact with a server showed, for the user to confirm.
#[derive(Clone, Debug)]
pub struct Probe {
    /// Fingerprint of the certificate presented.
    pub fingerprint: Option<String>,
    /// The TLS key exchange group negotiated (`X25519MLKEM768` with a
    /// current server: post-quantum hybrid).
    pub key_exchange: Option<String>,
    /// The server's coffer identity, as it reported it.
    pub server_identity: PublicIdentity,
}

/// A logged-in (or logging-in) user on one server.
pub struct Session {
    endpoint: Endpoint,
    tls: tokio_rustls::TlsConnector,
    seen: Arc<Seen>,
    key_exchange: std::sync::Mutex<Option<String>>,
    conn: Option<Conn>,
    /// No byte moving either way for this long fails the connection
    /// ([`crate::watchdog`]); also bounds connecting.
    stall_limit: std::time::Duration,
    /// Where to say that the session is waiting (a rate limit), if anywhere.
    notices: Option<Notices>,
    user: String,
    identity: Option<Arc<Identity>>,
    server_identity: Option<PublicIdentity>,
    token: Option<Token>,
    /// The URL the server says links should use (its `public_url`).
    public_url: Option<String>,
}

pub(crate) fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

#[derive(Deserialize)]
struct ChallengeAnswer {
    nonce: String,
    server_identity: String,
    #[serde(default)]
    public_url: Option<String>,
}

#[derive(Deserialize)]
struct TokenAnswer {
    token: String,
    expires_in: i64,
}

impl Session {
    /// A session for `user`; nothing is sent until the first call.
    /// `server_identity` is the pinned identity, if known.
    pub fn new(
        endpoint: Endpoint,
        user: &str,
        server_identity: Option<PublicIdentity>,
    ) -> Result<Self> {
        let (config, seen) = client_config(&endpoint.trust, endpoint.client_cert.as_ref())?;
        Ok(Self {
            endpoint,
            tls: tokio_rustls::TlsConnector::from(config),
            seen,
            key_exchange: std::sync::Mutex::new(None),
            conn: None,
            stall_limit: crate::watchdog::stall_limit(),
            notices: None,
            user: user.to_string(),
            identity: None,
            server_identity,
            token: None,
            public_url: None,
        })
    }

    /// Uses `url` as the base of the link URLs this session makes (the
    /// server's `public_url`, as a login saw it).
    pub fn with_public_url(mut self, url: Option<String>) -> Self {
        self.public_url = url;
        self
    }

    /// The base of link URLs: the server's `public_url` when it has one
    /// (a URL clients can parse), else the URL this session connects to.
    pub fn public_url(&self) -> &str {
        self.public_url
            .as_deref()
            .filter(|url| Endpoint::parse(url, Trust::FirstUse, None).is_ok())
            .unwrap_or(&self.endpoint.url)
    }

    /// What the server said its `public_url` is, if anything.
    pub fn advertised_public_url(&self) -> Option<&str> {
        self.public_url.as_deref()
    }

    /// Uses `identity` to log in whenever a token is needed.
    pub fn with_identity(mut self, identity: Arc<Identity>) -> Self {
        self.identity = Some(identity);
        self
    }

    /// Says through `notices` when the session waits for the server (a
    /// rate limit), so a long pause is explained.
    pub fn with_notices(mut self, notices: Notices) -> Self {
        self.notices = Some(notices);
        self
    }

    /// Starts from a token saved earlier.
    pub fn with_token(mut self, token: Option<Token>) -> Self {
        self.token = token;
        self
    }

    /// The user name.
    pub fn user(&self) -> &str {
        &self.user
    }

    /// The endpoint.
    pub fn endpoint(&self) -> &Endpoint {
        &self.endpoint
    }

    /// The identity used for login and encryption, if any.
    pub fn identity(&self) -> Option<&Arc<Identity>> {
        self.identity.as_ref()
    }

    /// The identity, or a clear error saying `what` needs one.
    pub fn require_identity(&self, what: &str) -> Result<Arc<Identity>> {
        self.identity
            .clone()
            .ok_or_else(|| Error::Usage(format!("an identity is needed to {what}")))
    }

    /// The pinned server identity (set by the first login).
    pub fn server_identity(&self) -> Option<&PublicIdentity> {
        self.server_identity.as_ref()
    }

    /// The current token, to save for the next run.
    pub fn token(&self) -> Option<&Token> {
        self.token.as_ref()
    }

    async fn connection(&mut self) -> Result<&mut Conn> {
        let stale = self
            .conn
            .as_mut()
            .is_none_or(|conn| conn.sender.is_closed() || !conn.sender.is_ready());
        if stale {
            self.conn = Some(self.open().await?);
        }
        self.conn
            .as_mut()
            .ok_or_else(|| Error::Transport("no connection".into()))
    }

    async fn open(&self) -> Result<Conn> {
        let addr = self.endpoint.authority();
        let connect_err = |source| Error::Connect {
            addr: addr.clone(),
            source,
        };
        let connecting = TcpStream::connect((self.endpoint.host.as_str(), self.endpoint.port));
        let tcp = match tokio::time::timeout(self.stall_limit, connecting).await {
            Ok(connected) => connected.map_err(connect_err)?,
            Err(_) => {
                return Err(connect_err(std::io::Error::new(
                    std::io::ErrorKind::TimedOut,
                    format!("no answer within {} s", self.stall_limit.as_secs()),
                )));
            }
        };
        let _ = tcp.set_nodelay(true);
        // A handshake, a response header or a body that stops moving fails
        // after the stall limit, like the transfer that follows.
        let tcp = crate::watchdog::Watchdog::new(tcp, self.stall_limit);
        let name = rustls_pki_types::ServerName::try_from(self.endpoint.host.clone())
            .map_err(|_| Error::Usage(format!("bad host name {}", self.endpoint.host)))?;
        let tls = match self.tls.connect(name, tcp).await {
            Ok(tls) => tls,
            Err(source) => return Err(self.explain_tls_failure(connect_err(source))),
        };
        if let Some(group) = tls.get_ref().1.negotiated_key_exchange_group() {
            *self.key_exchange.lock().unwrap_or_else(|p| p.into_inner()) =
                Some(format!("{:?}", group.name()));
        }
        let mut exporter = Zeroizing::new([0u8; 32]);
        tls.get_ref()
            .1
            .export_keying_material(exporter.as_mut(), LOGIN_EXPORTER_LABEL, None)
            .map_err(|e| Error::Transport(format!("TLS exporter: {e}")))?;
        let (sender, driver) =
            hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(tls))
                .await
                .map_err(|e| Error::transport(&e))?;
        tokio::spawn(driver);
        Ok(Conn { sender, exporter })
    }

    /// A refused pin becomes a clear "certificate changed" error.
    fn explain_tls_failure(&self, err: Error) -> Error {
        match (&self.endpoint.trust, self.seen.fingerprint()) {
            (Trust::Pinned(pinned), Some(presented))
                if !coffer_proto::fingerprint::same(pinned, &presented) =>
            {
                Error::CertificateChanged {
                    pinned: pinned.clone(),
                    presented,
                }
            }
            _ => err,
        }
    }

    /// Sends one request on the current connection (opening one if needed).
    pub async fn send(&mut self, request: Request<Body>) -> Result<Response<Incoming>> {
        let conn = self.connection().await?;
        conn.sender.send_request(request).await.map_err(|e| {
            if e.is_canceled() {
                Error::NotSent(e.to_string())
            } else {
                Error::transport(&e)
            }
        })
    }

    /// A request builder with the host header and, if `auth`, the token
    /// (logging in or refreshing first if needed).
    pub async fn request(
        &mut self,
        method: &str,
        path: &str,
        auth: bool,
    ) -> Result<hyper::http::request::Builder> {
        let token = if auth {
            Some(self.fresh_token().await?)
        } else {
            None
        };
        Ok(self.builder(method, path, token.as_ref()))
    }

    fn builder(
        &self,
        method: &str,
        path: &str,
        token: Option<&Zeroizing<String>>,
    ) -> hyper::http::request::Builder {
        let builder = Request::builder()
            .method(method)
            .uri(path)
            .header("host", self.endpoint.authority());
        match token {
            Some(token) => builder.header("authorization", format!("Bearer {}", token.as_str())),
            None => builder,
        }
    }

    async fn fresh_token(&mut self) -> Result<Zeroizing<String>> {
        self.ensure_token().await?;
        self.token
            .as_ref()
            .map(|t| t.value.clone())
            .ok_or_else(|| Error::Usage("not logged in".into()))
    }

    /// Sends a JSON request (or none) and returns the JSON answer. A `GET`,
    /// `PUT` or `DELETE` is retried once on a fresh connection if the old
    /// one had dropped; a `POST` only if it never went out, since the server
    /// may have acted on it (opening a link spends a download).
    pub async fn call(
        &mut self,
        method: &str,
        path: &str,
        body: Option<&Value>,
        auth: bool,
    ) -> Result<Value> {
        let token = if auth {
            Some(self.fresh_token().await?)
        } else {
            None
        };
        self.call_with(method, path, body, token.as_ref(), &[])
            .await
    }

    /// [`Self::call`] without a token, with `extra` headers.
    pub async fn call_anonymous(
        &mut self,
        method: &str,
        path: &str,
        body: Option<&Value>,
        extra: &[(&str, &str)],
    ) -> Result<Value> {
        self.call_with(method, path, body, None, extra).await
    }

    async fn call_with(
        &mut self,
        method: &str,
        path: &str,
        body: Option<&Value>,
        token: Option<&Zeroizing<String>>,
        extra: &[(&str, &str)],
    ) -> Result<Value> {
        let mut headers: Vec<(&str, &str)> = extra.to_vec();
        let bytes = match body {
            Some(json) => {
                headers.push(("content-type", "application/json"));
                serde_json::to_vec(json).map_err(|e| Error::Usage(e.to_string()))?
            }
            None => Vec::new(),
        };
        let headers = headers.as_slice();
        let bytes = Bytes::from(bytes);
        let mut attempt = 0;
        loop {
            attempt += 1;
            match self
                .send_buffered_with(method, path, token, headers, bytes.clone())
                .await
            {
                Ok(response) => return json_answer(response).await,
                Err(err)
                    if attempt < 2
                        && (matches!(err, Error::NotSent(_))
                            || method != "POST" && err.is_transient()) =>
                {
                    self.conn = None;
                }
                Err(err) => return Err(err),
            }
        }
    }

    /// Sends a request whose body is a buffer, and so can be sent again:
    /// a refusal by a rate limit (429) is waited out as its `Retry-After`
    /// says, a few times. It was refused before the server acted on it, so
    /// this is safe for any method. Other answers are returned as they are.
    pub async fn send_buffered(
        &mut self,
        method: &str,
        path: &str,
        auth: bool,
        headers: &[(&str, &str)],
        body: Bytes,
    ) -> Result<Response<Incoming>> {
        let token = if auth {
            Some(self.fresh_token().await?)
        } else {
            None
        };
        self.send_buffered_with(method, path, token.as_ref(), headers, body)
            .await
    }

    async fn send_buffered_with(
        &mut self,
        method: &str,
        path: &str,
        token: Option<&Zeroizing<String>>,
        headers: &[(&str, &str)],
        body: Bytes,
    ) -> Result<Response<Incoming>> {
        let mut waited = 0;
        loop {
            let mut builder = self.builder(method, path, token);
            for (name, value) in headers {
                builder = builder.header(*name, *value);
            }
            let request = builder
                .body(full(body.clone()))
                .map_err(|e| Error::Usage(e.to_string()))?;
            let response = self.send(request).await?;
            if response.status() != StatusCode::TOO_MANY_REQUESTS || waited >= MAX_RATE_WAITS {
                return Ok(response);
            }
            waited += 1;
            let wait = retry_after(&response);
            let _ = error_of(response).await;
            if let Some(notices) = &self.notices {
                notices(&format!(
                    "rate limited by the server; retrying in {} s",
                    wait.as_secs_f64().ceil()
                ));
            }
            tokio::time::sleep(wait).await;
        }
    }

    /// First contact: asks for a login challenge without answering it, to
    /// learn the certificate and server identity for the user to confirm.
    pub async fn probe(&mut self) -> Result<Probe> {
        let answer = self.challenge().await?;
        let server_identity = PublicIdentity::parse(&answer.server_identity)?;
        Ok(Probe {
            fingerprint: self.seen.fingerprint(),
            key_exchange: self.key_exchange(),
            server_identity,
        })
    }

    async fn challenge(&mut self) -> Result<ChallengeAnswer> {
        let user = self.user.clone();
        let answer = self
            .call_with(
                "POST",
                "/v1/auth/challenge",
                Some(&serde_json::json!({ "user": user })),
                None,
                &[],
            )
            .await?;
        serde_json::from_value(answer).map_err(|e| Error::protocol(format!("challenge: {e}")))
    }

    /// The TLS key exchange group of the last connection.
    pub fn key_exchange(&self) -> Option<String> {
        self.key_exchange
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Logs in with the identity: challenge, then a signature over the nonce,
    /// the pinned server identity and this connection's TLS exporter. The
    /// first login pins the server identity; later ones refuse a change.
    pub async fn login(&mut self) -> Result<()> {
        let identity = self
            .identity
            .clone()
            .ok_or_else(|| Error::Usage("an identity is needed to log in".into()))?;
        let answer = self.challenge().await?;
        let presented = PublicIdentity::parse(&answer.server_identity)?;
        self.public_url = answer
            .public_url
            .map(|url| url.trim_end_matches('/').to_string());
        match &self.server_identity {
            Some(pinned) if *pinned != presented => {
                return Err(Error::ServerIdentityChanged {
                    pinned: pinned.to_string(),
                    presented: presented.to_string(),
                });
            }
            Some(_) => {}
            None => self.server_identity = Some(presented.clone()),
        }
        let nonce: [u8; 32] = decode_b64(&answer.nonce)?
            .try_into()
            .map_err(|_| Error::protocol("nonce is not 32 bytes"))?;
        // The signature is bound to the exporter of the connection it goes
        // out on, so take the exporter and send on the same connection.
        let user = self.user.clone();
        let authority = self.endpoint.authority();
        let conn = self.connection().await?;
        let message = login_message(&user, &nonce, &presented, &conn.exporter);
        let signature = identity.sign(&message);
        let body = serde_json::json!({
            "user": user,
            "nonce": answer.nonce,
            "signature": coffer_proto::b64().encode_to(&signature),
        });
        let request = Request::builder()
            .method("POST")
            .uri("/v1/auth/login")
            .header("host", authority)
            .header("content-type", "application/json")
            .body(full(
                serde_json::to_vec(&body).map_err(|e| Error::Usage(e.to_string()))?,
            ))
            .map_err(|e| Error::Usage(e.to_string()))?;
        let response = conn
            .sender
            .send_request(request)
            .await
            .map_err(|e| Error::transport(&e))?;
        self.token = Some(token_from(json_answer(response).await?)?);
        Ok(())
    }

    /// Makes sure a token with some life left is at hand: refreshes one
    /// that is about to expire, or logs in again.
    pub async fn ensure_token(&mut self) -> Result<()> {
        let left = self.token.as_ref().map(|t| t.expires_at - now());
        match left {
            Some(left) if left > REFRESH_MARGIN_SECS => Ok(()),
            Some(left) if left > 5 => match self.refresh().await {
                Ok(()) => Ok(()),
                Err(_) => self.login().await,
            },
            _ => self.login().await,
        }
    }

    async fn refresh(&mut self) -> Result<()> {
        let token = self
            .token
            .take()
            .ok_or_else(|| Error::Usage("no token".into()))?;
        let request = Request::builder()
            .method("POST")
            .uri("/v1/auth/refresh")
            .header("host", self.endpoint.authority())
            .header("authorization", format!("Bearer {}", token.value.as_str()))
            .body(full(Vec::new()))
            .map_err(|e| Error::Usage(e.to_string()))?;
        let response = self.send(request).await?;
        self.token = Some(token_from(json_answer(response).await?)?);
        Ok(())
    }

    /// Revokes the token on the server.
    pub async fn logout(&mut self) -> Result<()> {
        if self.token.is_some() {
            self.call("POST", "/v1/auth/logout", None, true).await?;
            self.token = None;
        }
        Ok(())
    }

    /// Drops the connection (the next call opens a new one).
    pub fn disconnect(&mut self) {
        self.conn = None;
    }
}

/// How often one call waits out a rate limit before giving up.
const MAX_RATE_WAITS: u32 = 5;

/// The server's `Retry-After` (seconds), capped at a minute; 1 s if absent.
pub(crate) fn retry_after(response: &Response<Incoming>) -> std::time::Duration {
    let secs = response
        .headers()
        .get("retry-after")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok())
        .unwrap_or(1);
    std::time::Duration::from_secs(secs.clamp(1, 60))
}

fn token_from(answer: Value) -> Result<Token> {
    let answer: TokenAnswer =
        serde_json::from_value(answer).map_err(|e| Error::protocol(format!("login: {e}")))?;
    Ok(Token {
        value: Zeroizing::new(answer.token),
        expires_at: now() + answer.expires_in,
    })
}

/// A whole-buffer request body.
pub fn full(bytes: impl Into<Bytes>) -> Body {
    Full::new(bytes.into())
        .map_err(|never| match never {})
        .boxed()
}

pub(crate) fn decode_b64(text: &str) -> Result<Vec<u8>> {
    use base64::Engine as _;
    coffer_proto::b64()
        .decode(text)
        .map_err(|_| Error::protocol("bad base64 from the server"))
}

/// Reads a bounded body; turns an error status into [`Error::Api`].
pub async fn json_answer(response: Response<Incoming>) -> Result<Value> {
    let status = response.status();
    let bytes = Limited::new(response.into_body(), MAX_JSON)
        .collect()
        .await
        .map_err(|e| Error::transport(&*e))?
        .to_bytes();
    if !status.is_success() {
        return Err(api_error(status, &bytes));
    }
    if bytes.is_empty() || status == StatusCode::NO_CONTENT {
        return Ok(Value::Null);
    }
    serde_json::from_slice(&bytes).map_err(|e| Error::protocol(format!("not JSON: {e}")))
}

/// Turns an error answer into [`Error::Api`] with the server's code.
pub(crate) fn api_error(status: StatusCode, body: &[u8]) -> Error {
    let parsed: Option<Value> = serde_json::from_slice(body).ok();
    let field = |name: &str| {
        parsed
            .as_ref()
            .and_then(|v| v["error"][name].as_str())
            .map(|s| s.chars().take(200).collect::<String>())
    };
    Error::Api {
        status: status.as_u16(),
        code: field("code").unwrap_or_else(|| "unknown".into()),
        message: field("message").unwrap_or_else(|| status.canonical_reason().unwrap_or("").into()),
    }
}

/// Reads and discards an error body (bounded) and returns the error.
pub(crate) async fn error_of(response: Response<Incoming>) -> Error {
    let status = response.status();
    let body = Limited::new(response.into_body(), 64 * 1024)
        .collect()
        .await
        .map(|c| c.to_bytes())
        .unwrap_or_default();
    api_error(status, &body)
}

trait EncodeTo {
    fn encode_to(&self, bytes: &[u8]) -> String;
}

impl EncodeTo for base64::engine::GeneralPurpose {
    fn encode_to(&self, bytes: &[u8]) -> String {
        base64::Engine::encode(self, bytes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_parse_to_host_and_port() {
        let e = Endpoint::parse("https://127.0.0.1:8443/", Trust::FirstUse, None).unwrap();
        assert_eq!((e.host.as_str(), e.port), ("127.0.0.1", 8443));
        assert_eq!(e.url, "https://127.0.0.1:8443");
        let e = Endpoint::parse("https://example.org", Trust::FirstUse, None).unwrap();
        assert_eq!(e.port, 443);
        let e =
            Endpoint::parse("https://[::1]:9000/v1/links/x#k=y", Trust::FirstUse, None).unwrap();
        assert_eq!((e.host.as_str(), e.port), ("::1", 9000));
        for bad in [
            "http://h:1",
            "https://",
            "https://:80",
            "https://h:notaport",
            "ftp://x",
        ] {
            assert!(
                Endpoint::parse(bad, Trust::FirstUse, None).is_err(),
                "{bad}"
            );
        }
    }
}
