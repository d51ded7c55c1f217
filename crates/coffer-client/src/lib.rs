//! The coffer client library: everything `coffer login/put/get/ls/share/
//! link/...` does, as an async API other Rust programs can embed.
//!
//! ```no_run
//! # async fn demo() -> coffer_client::Result<()> {
//! use std::sync::Arc;
//! use coffer_client::{Endpoint, Session, Trust, upload, download, progress::Silent};
//! let identity = Arc::new(coffer_format::Identity::generate()?);
//! let endpoint = Endpoint::parse("https://127.0.0.1:8443", Trust::Pinned("SHA256:…".into()), None)?;
//! let mut session = Session::new(endpoint, "alice", None)?.with_identity(identity);
//! session.login().await?;
//! let options = upload::PutOptions::new("/tmp/coffer-state".into());
//! let put = upload::put(&mut session, "report.pdf".as_ref(), &options, &Silent).await?;
//! let target = download::Target::Dir("/tmp/out".into());
//! let mut pins = std::collections::BTreeMap::new(); // keys of other users, pinned on first use
//! download::get(&mut session, &put.file_id, &target, &Default::default(), &mut pins, &Silent).await?;
//! # Ok(()) }
//! ```
//!
//! * [`session`]: pinned TLS 1.3 (or CA-verified), login bound to the TLS
//!   exporter, token refresh, typed JSON calls ([`api`]).
//! * [`upload`]: encrypt locally, tus upload, resume without a ciphertext
//!   spool and without ever re-using a key on changed input, receipt check.
//! * [`download`]: stream, decrypt, verify, resume with `Range`, atomic
//!   no-clobber placement, hostile names refused ([`names`]).
//! * [`share`] and [`links`]: wraps computed locally; link secrets only in
//!   URL fragments.
//! * [`profile`]: pins, tokens and known user keys on disk (0600).
//! * [`untrusted`]: server-chosen text made safe to print.
//! * [`watchdog`]: a connection that moves nothing for the stall limit
//!   (`COFFER_STALL_TIMEOUT`, default 30 s) fails, and the transfer
//!   reconnects and resumes.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod api;
pub mod download;
mod error;
mod fsutil;
pub mod links;
pub mod names;
pub mod profile;
pub mod progress;
pub mod requests;
pub mod session;
pub mod share;
mod tls;
pub mod untrusted;
pub mod upload;
pub mod watchdog;

pub use error::{Class, Error, Result};
pub use session::{Endpoint, Probe, Session, Token};
pub use tls::{ClientCert, Trust, certificate_fingerprint};
