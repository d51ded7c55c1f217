//! The coffer server: HTTPS (TLS 1.3 only) with key-based login, tus
//! uploads, end-to-end encrypted sharing and links.
//!
//! The folders are the layers; dependencies point down only:
//!
//! * [`http`]: the TLS accept loop, the router and its OpenAPI document,
//!   the shared state, the error type's JSON form, the bearer-token
//!   extractor, middleware (rate limits, body stalls, metrics), and one thin
//!   module per group of routes;
//! * [`codec`]: protocol codecs with no I/O (tus headers and
//!   `Upload-Metadata`, `Range`, ETag and digest headers);
//! * [`service`]: the file service (sessions, uploads and their commit,
//!   downloads, files, shares, links, audit, leases), plain Rust over the
//!   storage traits, with no HTTP types;
//! * [`store`] (metadata: SQLite or PostgreSQL) and [`objects`] (bytes:
//!   local directory or S3), each behind its trait.
//!
//! Beside them: [`data_dir`] creates and opens the server's directory,
//! [`config`] reads its settings, [`tls`] builds the rustls configuration,
//! [`keyring`] keeps the key-encryption keys, [`migrate`] moves a server to
//! other storage, [`backup`] writes and restores encrypted backups.
//!
//! One upload, from the socket to the object store: [`http::serve`] accepts
//! the connection; [`http::routes::uploads`] parses the tus request with
//! [`codec::tus`] and calls [`service::uploads::append`], which takes the
//! upload's lease ([`service::lease`]), meters and checks the bytes
//! ([`coffer_format::ObjectVerifier`]), hands them to
//! [`objects::ObjectStore::append`], moves the offset in [`store`], and on
//! the last byte commits: [`objects::ObjectStore::commit`], then the file
//! row and its wraps in one transaction, and the signed receipt.

#![forbid(unsafe_code)]

pub mod backup;
pub mod codec;
pub mod config;
pub mod data_dir;
pub mod http;
pub mod keyring;
pub mod migrate;
pub mod objects;
pub use coffer_proto::receipt;
pub mod service;
pub mod store;
#[cfg(feature = "testing")]
pub mod testing;
pub mod tls;

use std::future::Future;
use std::sync::Arc;

use anyhow::{Context, Result};

pub use config::{Config, KeyringConfig, KeyringProvider, Limits};
pub use data_dir::{CertSource, Claim, DataDir, InitReport, KeyringMove, MasterRotation, init};

/// Seconds since the Unix epoch: the one clock for expiries and receipts.
pub fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

/// Lowercase hex, for ids and digests in the API.
pub(crate) fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The addresses a running server listens on.
#[derive(Clone, Copy, Debug)]
pub struct Bound {
    /// The HTTPS API.
    pub api: std::net::SocketAddr,
    /// The Prometheus metrics listener, if configured.
    pub metrics: Option<std::net::SocketAddr>,
}

/// Opens `data_dir`, binds its listeners and serves until `shutdown`;
/// in-flight requests get a grace period. `on_ready` receives the bound
/// addresses (useful with port 0).
pub async fn run(
    data_dir: DataDir,
    shutdown: impl Future<Output = ()>,
    on_ready: impl FnOnce(Bound),
) -> Result<()> {
    let _claim = data_dir.claim(data_dir.server_claim())?;
    tls::install_provider();
    let client_ca = data_dir.config.client_ca.as_ref().map(|p| data_dir.path(p));
    let client_crl = data_dir
        .config
        .client_crl
        .as_ref()
        .map(|p| data_dir.path(p));
    let clients = tls::client_trust(client_ca.as_deref(), client_crl.as_deref())?;
    let certificate = tls::Certificate::load(
        &data_dir.path(&data_dir.config.tls_cert),
        &data_dir.path(&data_dir.config.tls_key),
    )?;
    let tls_config = tls::server_config(certificate.clone(), clients.clone())?;
    let store = data_dir.store().await?;
    if store.backend() == "sqlite" {
        // This process alone uses the file: leases are from before a crash.
        store.release_all_leases().await?;
    }
    let objects = data_dir.objects().await?;
    let key_file = data_dir.path(&data_dir.config.master_key_file);
    if let keyring::MasterKeySource::File(path) = keyring::master_key_source(&key_file)
        && path.exists()
        && let Some(warning) = keyring::master_key_placement(&data_dir.root, &path)
    {
        tracing::warn!("INSECURE: {warning}");
    }
    let keyring = data_dir.keyring(&store).await?;
    tracing::info!(
        "keyring: new KEK versions from the {}; current version {}",
        keyring.active_provider(),
        keyring.current_version()
    );
    let listener = tokio::net::TcpListener::bind(data_dir.config.listen)
        .await
        .with_context(|| format!("cannot listen on {}", data_dir.config.listen))?;
    let metrics_listener = match data_dir.config.metrics_listen {
        Some(addr) => Some(
            tokio::net::TcpListener::bind(addr)
                .await
                .with_context(|| format!("cannot listen on {addr} for metrics"))?,
        ),
        None => None,
    };
    http::metrics::install();
    on_ready(Bound {
        api: listener.local_addr()?,
        metrics: metrics_listener
            .as_ref()
            .map(|l| l.local_addr())
            .transpose()?,
    });
    let limits = data_dir.config.limits.clone();
    let state = http::AppState::new(service::Service::new(
        Arc::new(store),
        objects,
        data_dir.identity,
        data_dir.config,
        keyring,
    ));
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let stopped = move || {
        let mut rx = stop_rx.clone();
        async move {
            let _ = rx.wait_for(|stop| *stop).await;
        }
    };
    let metrics_server = metrics_listener.map(|listener| {
        tokio::spawn(http::serve::serve(
            listener,
            tls_config.clone(),
            http::metrics::router(),
            limits.clone(),
            None,
            stopped(),
        ))
    });
    let sweeper = tokio::spawn(sweep_forever(state.clone()));
    let reloader = tokio::spawn(reload_on_sighup(certificate, clients));
    let (refused_tx, refused_rx) = tokio::sync::mpsc::channel(64);
    let refusal_auditor = tokio::spawn(audit_refused_connections(state.clone(), refused_rx));
    let api = http::serve::serve(
        listener,
        tls_config,
        http::router(state.clone()),
        limits,
        Some(refused_tx),
        stopped(),
    );
    tokio::pin!(api);
    let served = tokio::select! {
        served = &mut api => served,
        () = shutdown => {
            let _ = stop_tx.send(true);
            api.await
        }
    };
    sweeper.abort();
    reloader.abort();
    // The listener is gone, and with it the sender: let the auditor write
    // what is queued (a remote database may be slower than the shutdown).
    let _ = tokio::time::timeout(std::time::Duration::from_secs(5), refusal_auditor).await;
    if let Err(err) = service::audit::checkpoint(state.store.as_ref(), &state.identity).await {
        tracing::warn!("signing the audit head at shutdown failed: {err}");
    }
    if let Some(task) = metrics_server {
        task.await??;
    }
    served
}

/// Reads the TLS certificate and key, and the client CRLs, again on every
/// SIGHUP (a renewal hook runs `systemctl reload coffer` or `kill -HUP`); a
/// failure is logged and what is in use kept.
async fn reload_on_sighup(
    certificate: Arc<tls::Certificate>,
    clients: Option<Arc<tls::ClientTrust>>,
) {
    use tokio::signal::unix::{SignalKind, signal};
    let mut hangups = match signal(SignalKind::hangup()) {
        Ok(hangups) => hangups,
        Err(err) => {
            tracing::warn!("no SIGHUP handler, the certificate cannot be reloaded: {err}");
            return;
        }
    };
    while hangups.recv().await.is_some() {
        match certificate.reload() {
            Ok(fingerprint) => {
                tracing::info!(certificate = %fingerprint, "reloaded the TLS certificate")
            }
            Err(err) => tracing::error!(
                certificate = %certificate.fingerprint(),
                "reloading the TLS certificate failed, keeping the one in use: {err:#}"
            ),
        }
        if let Some(clients) = clients.as_ref().filter(|c| c.has_crl()) {
            match clients.reload() {
                Ok(()) => tracing::info!("reloaded the client certificate revocation lists"),
                Err(err) => tracing::error!(
                    "reloading the client CRLs failed, keeping the ones in use: {err:#}"
                ),
            }
        }
    }
}

/// Audits connections refused by the caps (once per address and window).
async fn audit_refused_connections(
    state: http::AppState,
    mut refused: tokio::sync::mpsc::Receiver<std::net::IpAddr>,
) {
    while let Some(ip) = refused.recv().await {
        service::audit::refused(&state, ip, "connection_cap", "").await;
    }
}

/// Every `sweep_interval_secs` (a minute): removes expired files,
/// abandoned uploads and expired links, forgets idle rate-limit entries and
/// signs the audit head.
async fn sweep_forever(state: http::AppState) {
    let every = std::time::Duration::from_secs(state.config.sweep_interval_secs.max(1));
    let mut tick = tokio::time::interval(every);
    loop {
        tick.tick().await;
        if let Err(err) = service::files::sweep_expired(&state).await {
            tracing::warn!("sweeping expired files failed: {err:?}");
        }
        if let Err(err) = service::uploads::sweep_expired(&state).await {
            tracing::warn!("sweeping expired uploads failed: {err:?}");
        }
        if let Err(err) = service::links::sweep_expired(&state).await {
            tracing::warn!("sweeping expired links failed: {err:?}");
        }
        if let Err(err) = service::requests::sweep_expired(&state).await {
            tracing::warn!("sweeping expired upload links failed: {err:?}");
        }
        state.rate_limits.forget_idle();
        state.deks.evict_expired();
        if let Err(err) = state.keyring.reload(state.store.as_ref()).await {
            tracing::error!("reloading the keyring failed: {err:#}");
        }
        if let Err(err) = service::audit::checkpoint(state.store.as_ref(), &state.identity).await {
            tracing::warn!("signing the audit head failed: {err}");
        }
    }
}

#[cfg(test)]
mod layering {
    /// The folders are layers and their dependencies point down: the file
    /// service knows no HTTP, the codecs know neither HTTP nor the service,
    /// storage knows nothing above it. Checked on the sources, so a stray
    /// import fails the build's tests.
    #[test]
    fn dependencies_point_down_only() {
        let src = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
        let rules: [(&str, &[&str]); 4] = [
            (
                "service",
                &["use crate::http", "crate::http::", "use axum", "axum::"],
            ),
            ("codec", &["crate::http", "crate::service"]),
            ("store", &["crate::http", "crate::service", "crate::codec"]),
            (
                "objects",
                &["crate::http", "crate::service", "crate::codec"],
            ),
        ];
        for (dir, forbidden) in rules {
            for entry in std::fs::read_dir(src.join(dir)).unwrap() {
                let path = entry.unwrap().path();
                let text = std::fs::read_to_string(&path).unwrap();
                for line in text.lines().filter(|l| !l.trim_start().starts_with("//")) {
                    for word in forbidden {
                        assert!(
                            !line.contains(word),
                            "{} reaches up ({word}): {line}",
                            path.display()
                        );
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod alert_rules {
    /// Every metric docs/alerts/coffer.rules.yml names is one the server
    /// emits (a renamed metric would leave an alert that never fires).
    /// promtool tests what the rules do with them (in CI).
    #[test]
    fn the_alert_rules_name_only_metrics_the_server_emits() {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
        let rules = std::fs::read_to_string(root.join("../../docs/alerts/coffer.rules.yml"))
            .expect("docs/alerts/coffer.rules.yml");
        let mut sources = String::new();
        let mut dirs = vec![root.join("src")];
        while let Some(dir) = dirs.pop() {
            for entry in std::fs::read_dir(dir).unwrap() {
                let path = entry.unwrap().path();
                if path.is_dir() {
                    dirs.push(path);
                } else if path.extension().is_some_and(|e| e == "rs") {
                    sources.push_str(&std::fs::read_to_string(&path).unwrap());
                }
            }
        }
        let names: std::collections::BTreeSet<&str> = rules
            .split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .filter(|word| word.starts_with("coffer_"))
            .collect();
        assert!(names.len() >= 6, "{names:?}");
        for name in names {
            assert!(
                sources.contains(&format!("\"{name}\"")),
                "the alert rules name {name}, which the server does not emit"
            );
        }
    }
}
