//! The coffer server: HTTPS (TLS 1.3 only) with key-based login.
//!
//! Module map: [`data_dir`] creates and opens the server's directory,
//! [`config`] reads its settings, [`tls`] builds the rustls configuration,
//! [`serve`] is the TLS accept loop, [`api`] the HTTP routes, [`auth`] the
//! login protocol, [`store`] the metadata storage trait and its SQLite
//! implementation.

#![forbid(unsafe_code)]

pub mod api;
pub mod auth;
pub mod config;
pub mod data_dir;
pub mod files;
pub mod links;
pub mod objects;
pub mod receipt;
pub mod serve;
pub mod shares;
pub mod store;
pub mod tls;

use std::future::Future;
use std::sync::Arc;

use anyhow::{Context, Result};

pub use config::Config;
pub use data_dir::{CertSource, DataDir, InitReport, init};

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

/// Opens `data_dir`, binds its listener and serves until `shutdown`.
/// `on_ready` receives the bound address (useful with port 0).
pub async fn run(
    data_dir: DataDir,
    shutdown: impl Future<Output = ()>,
    on_ready: impl FnOnce(std::net::SocketAddr),
) -> Result<()> {
    tls::install_provider();
    let tls_config = tls::server_config(
        &data_dir.path(&data_dir.config.tls_cert),
        &data_dir.path(&data_dir.config.tls_key),
    )?;
    let store = data_dir.store().await?;
    let listener = tokio::net::TcpListener::bind(data_dir.config.listen)
        .await
        .with_context(|| format!("cannot listen on {}", data_dir.config.listen))?;
    on_ready(listener.local_addr()?);
    let objects = objects::LocalObjects::new(&data_dir.root)?;
    let state = api::AppState {
        store: Arc::new(store),
        identity: Arc::new(data_dir.identity),
        config: Arc::new(data_dir.config),
        objects: Arc::new(objects),
        busy: files::BusyUploads::default(),
    };
    let sweeper = tokio::spawn(sweep_forever(state.clone()));
    let served = serve::serve(listener, tls_config, api::router(state), shutdown).await;
    sweeper.abort();
    served
}

/// Removes abandoned uploads and expired links once a minute.
async fn sweep_forever(state: api::AppState) {
    let mut tick = tokio::time::interval(std::time::Duration::from_secs(60));
    loop {
        tick.tick().await;
        if let Err(err) = files::sweep_expired(&state).await {
            tracing::warn!("sweeping expired uploads failed: {err:?}");
        }
        if let Err(err) = links::sweep_expired(&state).await {
            tracing::warn!("sweeping expired links failed: {err:?}");
        }
    }
}
