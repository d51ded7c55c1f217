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
//! * a TLS handshake must finish within 15 s, and request heads may not
//!   exceed `max_header_bytes` (hyper answers 431);
//! * a request head must arrive within `header_read_timeout_secs` of its
//!   first byte, a keep-alive connection may wait `idle_timeout_secs` for
//!   its next request, and a response not read for `idle_timeout_secs` ends
//!   the connection ([`super::watchdog`]).
//!
//! **Lingering close.** When hyper ends a connection whose last request
//! body it did not read (a PATCH refused before its body: wrong offset,
//! full disk, locked upload), closing the socket at once with that data
//! unread makes the kernel send a reset, which can reach the client before
//! the answer does: it sees a broken pipe instead of the refusal, and
//! retries blindly. So, as nginx's `lingering_close` does, the write side
//! is closed first (TLS close_notify, then FIN) and what the client still
//! sends is read and dropped until it closes, for at most `LINGER` (5 s).

use std::collections::HashMap;
use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Result;
use axum::Router;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;
use tower::ServiceExt as _;

use super::limits::address_key;
use super::proxy;
use super::watchdog::{Activity, Expired, Watched, expiry};
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
/// How long a finished connection keeps reading (and dropping) what its
/// client still sends before it is closed (see the module docs).
const LINGER: Duration = Duration::from_secs(5);

/// Open connections, in all and per address.
#[derive(Default)]
struct Occupancy {
    total: usize,
    per_ip: HashMap<IpAddr, usize>,
}

/// A claimed connection slot, released on drop. `ip` is the address key
/// it counts against (none yet for a balancer's connection, until its
/// PROXY header names the client).
struct Slot {
    occupancy: Arc<Mutex<Occupancy>>,
    ip: Option<IpAddr>,
}

fn claim_slot(
    occupancy: &Arc<Mutex<Occupancy>>,
    ip: Option<IpAddr>,
    limits: &Limits,
) -> Option<Slot> {
    let mut open = occupancy.lock().unwrap_or_else(|p| p.into_inner());
    if open.total >= limits.max_connections {
        return None;
    }
    let key = match ip {
        Some(ip) => Some(count_ip(&mut open, ip, limits)?),
        None => None,
    };
    open.total += 1;
    Some(Slot {
        occupancy: occupancy.clone(),
        ip: key,
    })
}

/// Counts one more connection against `ip`'s address key, if it has room;
/// returns the key.
fn count_ip(open: &mut Occupancy, ip: IpAddr, limits: &Limits) -> Option<IpAddr> {
    let key = address_key(ip);
    let from_ip = open.per_ip.get(&key).copied().unwrap_or(0);
    if from_ip >= limits.max_connections_per_ip {
        return None;
    }
    open.per_ip.insert(key, from_ip + 1);
    Some(key)
}

impl Slot {
    /// Counts a balancer's connection against the client it carries.
    fn count_client(&mut self, ip: IpAddr, limits: &Limits) -> bool {
        let mut open = self.occupancy.lock().unwrap_or_else(|p| p.into_inner());
        let key = count_ip(&mut open, ip, limits);
        drop(open);
        self.ip = key;
        key.is_some()
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut open = self.occupancy.lock().unwrap_or_else(|p| p.into_inner());
        open.total = open.total.saturating_sub(1);
        if let Some(ip) = self.ip
            && let Some(count) = open.per_ip.get_mut(&ip)
        {
            *count -= 1;
            if *count == 0 {
                open.per_ip.remove(&ip);
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
                let from_balancer = limits.proxy_protocol_from.contains(&peer.ip());
                let counted = (!from_balancer).then_some(peer.ip());
                let Some(slot) = claim_slot(&occupancy, counted, &limits) else {
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
                    let accepted = Accepted { stream, peer, from_balancer, slot };
                    if let Err(err) = connection(acceptor, accepted, router, &limits, stop).await {
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

/// A TCP connection let in by the caps.
struct Accepted {
    stream: tokio::net::TcpStream,
    peer: SocketAddr,
    /// From an address in `limits.proxy_protocol_from`.
    from_balancer: bool,
    slot: Slot,
}

/// The client's address: the peer's, or for a balancer's connection the
/// one its PROXY header names (then counted against that client's cap).
async fn client_of(accepted: &mut Accepted, limits: &Limits) -> Result<SocketAddr> {
    if !accepted.from_balancer {
        return Ok(accepted.peer);
    }
    let client = proxy::client_address(&mut accepted.stream, accepted.peer).await?;
    if !accepted.slot.count_client(client.ip(), limits) {
        metrics::counter!("coffer_connections_refused_total").increment(1);
        anyhow::bail!("connection cap reached for {client} (through the balancer)");
    }
    Ok(client)
}

async fn connection(
    acceptor: TlsAcceptor,
    mut accepted: Accepted,
    router: Router,
    limits: &Limits,
    mut stop: tokio::sync::watch::Receiver<bool>,
) -> Result<()> {
    let peer = client_of(&mut accepted, limits).await?;
    let Accepted {
        stream,
        slot: _slot,
        ..
    } = accepted;
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
    let activity = Activity::new();
    let (on_request, on_response) = (activity.clone(), activity.clone());
    let service = router
        .map_request(move |mut req: axum::http::Request<Incoming>| {
            on_request.request_started();
            req.extensions_mut().insert(info.clone());
            req
        })
        .map_response(move |response: axum::response::Response| {
            response.map(|body| on_response.responding(body))
        });
    let io = Watched {
        inner: tls,
        activity: activity.clone(),
    };
    // No hyper header timeout: it would also cut idle keep-alive connections
    // (see [`super::watchdog`]), which keeps both limits.
    let mut conn = hyper::server::conn::http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(None)
        .max_buf_size(limits.max_header_bytes.max(8192))
        .serve_connection(TokioIo::new(io), TowerToHyperService::new(service));
    let idle_limit = Duration::from_secs(limits.idle_timeout_secs.max(1));
    let header_limit = Duration::from_secs(limits.header_read_timeout_secs.max(1));
    tokio::select! {
        result = std::future::poll_fn(|cx| conn.poll_without_shutdown(cx)) => result?,
        expired = expiry(&activity, idle_limit, header_limit) => {
            let counter = match expired {
                Expired::Idle => "coffer_connections_idle_closed_total",
                Expired::HeaderTimeout => "coffer_connections_header_timeout_total",
            };
            metrics::counter!(counter).increment(1);
            return Ok(());
        }
        _ = stop.changed() => {
            std::pin::Pin::new(&mut conn).graceful_shutdown();
            std::future::poll_fn(|cx| conn.poll_without_shutdown(cx)).await?;
        }
    }
    // hyper is done with the connection but has not closed it.
    linger(conn.into_parts().io.into_inner().inner).await;
    Ok(())
}

/// Closes a finished connection without losing its last answer: the write
/// side first, then reading and dropping until the client closes, for at
/// most [`LINGER`] (see the module docs). Errors only mean it is closed.
async fn linger(mut tls: tokio_rustls::server::TlsStream<tokio::net::TcpStream>) {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let drained = async {
        tls.shutdown().await?;
        // The rest is dropped unread, so there is no need to decrypt it.
        let (mut tcp, _) = tls.into_inner();
        let mut sink = vec![0u8; 64 * 1024];
        while tcp.read(&mut sink).await? > 0 {}
        std::io::Result::Ok(())
    };
    let _ = tokio::time::timeout(LINGER, drained).await;
}
