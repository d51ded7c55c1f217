//! The TLS accept loop. axum's `serve` has no TLS, so connections are
//! accepted here, the TLS handshake done with tokio-rustls, the session's
//! exporter value (for login binding) attached to every request, and HTTP/1.1
//! served by hyper. Shutdown stops accepting and lets in-flight requests
//! finish for a grace period.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Result;
use axum::Router;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;
use tower::ServiceExt as _;

use crate::tls::LOGIN_EXPORTER_LABEL;

/// Per-connection facts handed to handlers.
#[derive(Clone, Debug)]
pub struct ConnInfo {
    /// TLS exporter value (RFC 8446 §7.5) under [`LOGIN_EXPORTER_LABEL`].
    pub exporter: [u8; 32],
    /// The client's address.
    pub peer: SocketAddr,
}

/// How long a client may take to send a request's headers.
const HEADER_TIMEOUT: Duration = Duration::from_secs(30);
/// How long the TLS handshake may take.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(15);
/// How long in-flight connections get after shutdown begins.
const GRACE: Duration = Duration::from_secs(10);

/// Serves `router` over TLS on `listener` until `shutdown` resolves.
pub async fn serve(
    listener: TcpListener,
    tls: Arc<rustls::ServerConfig>,
    router: Router,
    shutdown: impl Future<Output = ()>,
) -> Result<()> {
    let acceptor = TlsAcceptor::from(tls);
    let mut connections = tokio::task::JoinSet::new();
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            _ = &mut shutdown => break,
            accepted = listener.accept() => {
                let Ok((stream, peer)) = accepted else { continue };
                let acceptor = acceptor.clone();
                let router = router.clone();
                let stop = stop_rx.clone();
                connections.spawn(async move {
                    if let Err(err) = connection(acceptor, stream, peer, router, stop).await {
                        tracing::debug!(%peer, "connection ended: {err}");
                    }
                });
            }
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
        }
    }
    let _ = stop_tx.send(true);
    let drain = async { while connections.join_next().await.is_some() {} };
    if tokio::time::timeout(GRACE, drain).await.is_err() {
        connections.abort_all();
    }
    Ok(())
}

fn handshake_failed(err: anyhow::Error) -> anyhow::Error {
    metrics::counter!("coffer_tls_handshake_failures_total").increment(1);
    err
}

/// Counts an established connection in `coffer_connections_open` while alive.
struct OpenConnection(metrics::Gauge);

impl OpenConnection {
    fn new() -> Self {
        let gauge = metrics::gauge!("coffer_connections_open");
        gauge.increment(1.0);
        Self(gauge)
    }
}

impl Drop for OpenConnection {
    fn drop(&mut self) {
        self.0.decrement(1.0);
    }
}

async fn connection(
    acceptor: TlsAcceptor,
    stream: tokio::net::TcpStream,
    peer: SocketAddr,
    router: Router,
    mut stop: tokio::sync::watch::Receiver<bool>,
) -> Result<()> {
    let handshake = tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await;
    let tls = match handshake {
        Ok(Ok(tls)) => tls,
        Ok(Err(err)) => return Err(handshake_failed(err.into())),
        Err(elapsed) => return Err(handshake_failed(elapsed.into())),
    };
    metrics::counter!("coffer_connections_total").increment(1);
    let _open = OpenConnection::new();
    let mut exporter = [0u8; 32];
    tls.get_ref()
        .1
        .export_keying_material(&mut exporter, LOGIN_EXPORTER_LABEL, None)?;
    let info = ConnInfo { exporter, peer };
    let service = router.map_request(move |mut req: axum::http::Request<Incoming>| {
        req.extensions_mut().insert(info.clone());
        req
    });
    let conn = hyper::server::conn::http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_TIMEOUT)
        .serve_connection(TokioIo::new(tls), TowerToHyperService::new(service));
    tokio::pin!(conn);
    tokio::select! {
        result = conn.as_mut() => result?,
        _ = stop.changed() => {
            conn.as_mut().graceful_shutdown();
            conn.await?;
        }
    }
    Ok(())
}
