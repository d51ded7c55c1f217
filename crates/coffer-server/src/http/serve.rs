//! The TLS accept loop. axum's `serve` has no TLS, so connections are
//! accepted here, the TLS handshake done with tokio-rustls, the session's
//! exporter value (for login binding) attached to every request, and HTTP/1.1
//! served by hyper. Shutdown stops accepting and lets in-flight requests
//! finish for a grace period.
//!
//! Connection-level limits live here too:
//! * at most `max_connections` at once, and `max_connections_per_ip` from
//!   one address; a connection over either cap is closed at once, before
//!   any TLS work (it costs the server nothing; clients retry);
//! * a TLS handshake must finish within 15 s and request headers within
//!   `header_read_timeout_secs`, and may not exceed `max_header_bytes`
//!   (hyper answers 431);
//! * a connection with no traffic for `idle_timeout_secs` while no request is
//!   being handled is closed, which also cuts off a client that stops
//!   reading a response.

use std::collections::HashMap;
use std::future::Future;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use anyhow::Result;
use axum::Router;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;
use tower::ServiceExt as _;

use crate::config::Limits;
use crate::tls::LOGIN_EXPORTER_LABEL;

/// Per-connection facts handed to handlers.
#[derive(Clone, Debug)]
pub struct ConnInfo {
    /// TLS exporter value (RFC 8446 §7.5) under [`LOGIN_EXPORTER_LABEL`].
    pub exporter: [u8; 32],
    /// The client's address.
    pub peer: SocketAddr,
}

/// How long the TLS handshake may take.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(15);
/// How long in-flight connections get after shutdown begins.
const GRACE: Duration = Duration::from_secs(10);

/// Open connections, in all and per address.
#[derive(Default)]
struct Occupancy {
    total: usize,
    per_ip: HashMap<IpAddr, usize>,
}

/// A claimed connection slot, released on drop.
struct Slot {
    occupancy: Arc<Mutex<Occupancy>>,
    ip: IpAddr,
}

fn claim_slot(occupancy: &Arc<Mutex<Occupancy>>, ip: IpAddr, limits: &Limits) -> Option<Slot> {
    let mut open = occupancy.lock().unwrap_or_else(|p| p.into_inner());
    let from_ip = open.per_ip.get(&ip).copied().unwrap_or(0);
    if open.total >= limits.max_connections || from_ip >= limits.max_connections_per_ip {
        return None;
    }
    open.total += 1;
    open.per_ip.insert(ip, from_ip + 1);
    Some(Slot {
        occupancy: occupancy.clone(),
        ip,
    })
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut open = self.occupancy.lock().unwrap_or_else(|p| p.into_inner());
        open.total = open.total.saturating_sub(1);
        if let Some(count) = open.per_ip.get_mut(&self.ip) {
            *count -= 1;
            if *count == 0 {
                open.per_ip.remove(&self.ip);
            }
        }
    }
}

/// Serves `router` over TLS on `listener` until `shutdown` resolves. The
/// address of each connection refused by a cap goes to `refused` (if it
/// has room: a flood must not queue work), for the audit log.
pub async fn serve(
    listener: TcpListener,
    tls: Arc<rustls::ServerConfig>,
    router: Router,
    limits: Limits,
    refused: Option<tokio::sync::mpsc::Sender<IpAddr>>,
    shutdown: impl Future<Output = ()>,
) -> Result<()> {
    let acceptor = TlsAcceptor::from(tls);
    let limits = Arc::new(limits);
    let occupancy = Arc::new(Mutex::new(Occupancy::default()));
    let mut connections = tokio::task::JoinSet::new();
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            _ = &mut shutdown => break,
            accepted = listener.accept() => {
                let Ok((stream, peer)) = accepted else { continue };
                let Some(slot) = claim_slot(&occupancy, peer.ip(), &limits) else {
                    metrics::counter!("coffer_connections_refused_total").increment(1);
                    tracing::debug!(%peer, "connection refused: cap reached");
                    drop(stream);
                    if let Some(refused) = &refused {
                        let _ = refused.try_send(peer.ip());
                    }
                    continue;
                };
                let acceptor = acceptor.clone();
                let router = router.clone();
                let stop = stop_rx.clone();
                let limits = limits.clone();
                connections.spawn(async move {
                    let _slot = slot;
                    if let Err(err) = connection(acceptor, stream, peer, router, &limits, stop).await {
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

/// When a connection last moved bytes, and whether a handler is running.
struct Activity {
    started: Instant,
    last_ms: AtomicU64,
    handling: AtomicBool,
}

impl Activity {
    fn touch(&self) {
        let now = u64::try_from(self.started.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.last_ms.store(now, Ordering::Relaxed);
    }

    fn idle_for(&self) -> Duration {
        let last = Duration::from_millis(self.last_ms.load(Ordering::Relaxed));
        self.started.elapsed().saturating_sub(last)
    }
}

/// Wraps a stream to record when it last moved bytes.
struct Watched<S> {
    inner: S,
    activity: Arc<Activity>,
}

impl<S: AsyncRead + Unpin> AsyncRead for Watched<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.inner).poll_read(cx, buf);
        if matches!(polled, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            self.activity.touch();
        }
        polled
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Watched<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        let polled = Pin::new(&mut self.inner).poll_write(cx, data);
        if matches!(polled, Poll::Ready(Ok(n)) if n > 0) {
            self.activity.touch();
        }
        polled
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// Resolves once the connection has been idle past `limit` with no handler
/// running.
async fn idle_past(activity: &Activity, limit: Duration) {
    let tick = (limit / 4).clamp(Duration::from_millis(100), Duration::from_secs(5));
    loop {
        tokio::time::sleep(tick).await;
        if !activity.handling.load(Ordering::Relaxed) && activity.idle_for() >= limit {
            return;
        }
    }
}

async fn connection(
    acceptor: TlsAcceptor,
    stream: tokio::net::TcpStream,
    peer: SocketAddr,
    router: Router,
    limits: &Limits,
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
    let activity = Arc::new(Activity {
        started: Instant::now(),
        last_ms: AtomicU64::new(0),
        handling: AtomicBool::new(false),
    });
    let (on_request, on_response) = (activity.clone(), activity.clone());
    let service = router
        .map_request(move |mut req: axum::http::Request<Incoming>| {
            on_request.handling.store(true, Ordering::Relaxed);
            req.extensions_mut().insert(info.clone());
            req
        })
        .map_response(move |response| {
            on_response.handling.store(false, Ordering::Relaxed);
            on_response.touch();
            response
        });
    let io = Watched {
        inner: tls,
        activity: activity.clone(),
    };
    let conn = hyper::server::conn::http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(Duration::from_secs(limits.header_read_timeout_secs.max(1)))
        .max_buf_size(limits.max_header_bytes.max(8192))
        .serve_connection(TokioIo::new(io), TowerToHyperService::new(service));
    tokio::pin!(conn);
    let idle_limit = Duration::from_secs(limits.idle_timeout_secs.max(1));
    tokio::select! {
        result = conn.as_mut() => result?,
        () = idle_past(&activity, idle_limit) => {
            metrics::counter!("coffer_connections_idle_closed_total").increment(1);
        }
        _ = stop.changed() => {
            conn.as_mut().graceful_shutdown();
            conn.await?;
        }
    }
    Ok(())
}
