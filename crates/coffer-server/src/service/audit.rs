//! The append-only, tamper-evident audit log.
//!
//! Every entry carries the hash of the one before it:
//!
//! ```text
//! hash = SHA-256("coffer/v1/audit\0" || prev_hash || BE64(seq) || BE64(time)
//!                || lp(actor) || lp(ip) || lp(action) || lp(target)
//!                || lp(outcome) || lp(detail))        lp(x) = BE32(len x) || x
//! ```
//!
//! so editing, deleting or reordering an entry breaks the chain at that
//! entry. Someone able to write the database could recompute every later
//! hash, so the server also signs the head of the chain with its identity
//! (a checkpoint, at most once a minute and at shutdown): a rewritten chain
//! no longer matches a signed head, and a cut-off tail leaves a signed head
//! pointing past the end. `coffer server audit verify` checks all of it and
//! names the entry at fault. Export the latest head now and then to keep an
//! anchor outside the database (docs/API.md).
//!
//! Nothing secret is written: names, ids, addresses and outcomes only.

use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;
use std::sync::Mutex;

use coffer_format::{Identity, PublicIdentity};
use serde::Serialize;

use crate::store::{AuditCheckpoint, AuditRow, MetaStore, StoreError};

const ENTRY_LABEL: &[u8] = b"coffer/v1/audit\0";
const CHECKPOINT_LABEL: &[u8] = b"coffer/v1/audit-head\0";
const PAGE: u32 = 1000;
const APPEND_ATTEMPTS: usize = 32;

/// Something worth recording.
#[derive(Clone, Debug, Default)]
pub struct Event {
    /// User name, `-` (anonymous) or `admin` (the CLI).
    pub actor: String,
    /// Client address, if any.
    pub ip: Option<IpAddr>,
    /// What was done.
    pub action: &'static str,
    /// What it was done to.
    pub target: String,
    /// `ok`, `failed` or `refused`.
    pub outcome: &'static str,
    /// Small detail, never secret.
    pub detail: String,
}

impl Event {
    /// An event by `actor` from `ip`.
    pub fn new(actor: &str, ip: Option<IpAddr>, action: &'static str, target: &str) -> Self {
        Self {
            actor: actor.to_string(),
            ip,
            action,
            target: target.to_string(),
            outcome: "ok",
            detail: String::new(),
        }
    }

    /// With another outcome.
    pub fn outcome(mut self, outcome: &'static str) -> Self {
        self.outcome = outcome;
        self
    }

    /// With a detail.
    pub fn detail(mut self, detail: impl Into<String>) -> Self {
        self.detail = detail.into();
        self
    }
}

fn length_prefixed(out: &mut Vec<u8>, field: &str) {
    // Fields are bounded far below 4 GiB by the API; saturate rather than wrap.
    let len = u32::try_from(field.len()).unwrap_or(u32::MAX);
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(field.as_bytes());
}

/// The hash of an entry with these contents.
pub fn entry_hash(row: &AuditRow) -> [u8; 32] {
    let mut data = Vec::with_capacity(128);
    data.extend_from_slice(ENTRY_LABEL);
    data.extend_from_slice(&row.prev_hash);
    data.extend_from_slice(&row.seq.to_be_bytes());
    data.extend_from_slice(&row.time.to_be_bytes());
    for field in [
        &row.actor,
        &row.ip,
        &row.action,
        &row.target,
        &row.outcome,
        &row.detail,
    ] {
        length_prefixed(&mut data, field);
    }
    let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, &data);
    let mut out = [0u8; 32];
    out.copy_from_slice(digest.as_ref());
    out
}

/// Appends from this process one at a time. An append reads the chain's
/// head and inserts the entry after it; appenders racing for one head all
/// but one conflict and retry, and on a busy node (50 logins at once) one
/// lost every attempt and failed its request with a 500. Serialised here,
/// only appenders on other nodes sharing the database can race, which the
/// retries cover.
static APPENDING: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Appends `event` at the head of the chain; returns its sequence number.
pub async fn append(store: &dyn MetaStore, event: &Event) -> Result<i64, StoreError> {
    let _turn = APPENDING.lock().await;
    let mut last_err = StoreError::Conflict("audit entry");
    for _ in 0..APPEND_ATTEMPTS {
        let (prev_seq, prev_hash) = store.audit_head().await?.unwrap_or((0, vec![0u8; 32]));
        let mut row = AuditRow {
            seq: prev_seq + 1,
            time: crate::unix_now(),
            actor: event.actor.clone(),
            ip: event.ip.map(|ip| ip.to_string()).unwrap_or_default(),
            action: event.action.to_string(),
            target: event.target.clone(),
            outcome: event.outcome.to_string(),
            detail: event.detail.clone(),
            prev_hash,
            hash: Vec::new(),
        };
        row.hash = entry_hash(&row).to_vec();
        match store.insert_audit(&row).await {
            Ok(()) => return Ok(row.seq),
            Err(err @ StoreError::Conflict(_)) => last_err = err,
            Err(err) => return Err(err),
        }
    }
    Err(last_err)
}

fn checkpoint_message(seq: i64, hash: &[u8]) -> Vec<u8> {
    let mut message = CHECKPOINT_LABEL.to_vec();
    message.extend_from_slice(&seq.to_be_bytes());
    message.extend_from_slice(hash);
    message
}

/// Signs the current head unless it is already signed; returns its seq.
pub async fn checkpoint(
    store: &dyn MetaStore,
    identity: &Identity,
) -> Result<Option<i64>, StoreError> {
    let Some((seq, hash)) = store.audit_head().await? else {
        return Ok(None);
    };
    let signature = identity.sign(&checkpoint_message(seq, &hash));
    store
        .insert_audit_checkpoint(&AuditCheckpoint {
            seq,
            hash,
            time: crate::unix_now(),
            signature: signature.to_vec(),
        })
        .await?;
    // For the "stale signed head" alert (docs/alerts.yml).
    metrics::gauge!("coffer_audit_head_signed_timestamp_seconds").set(crate::unix_now() as f64);
    Ok(Some(seq))
}

/// What `audit verify` found.
#[derive(Debug, Default, Serialize)]
pub struct Report {
    /// Entries read.
    pub entries: u64,
    /// Sequence number of the last entry.
    pub last_seq: i64,
    /// Signed heads checked.
    pub checkpoints: u64,
    /// Each problem, naming the entry.
    pub problems: Vec<String>,
}

impl Report {
    /// True if nothing was wrong.
    pub fn is_intact(&self) -> bool {
        self.problems.is_empty()
    }
}

/// Walks the whole chain and the signed heads.
pub async fn verify(store: &dyn MetaStore, server: &PublicIdentity) -> Result<Report, StoreError> {
    let checkpoints = store.audit_checkpoints().await?;
    let wanted: BTreeMap<i64, ()> = checkpoints.iter().map(|c| (c.seq, ())).collect();
    let mut hashes_at_checkpoints = HashMap::new();
    let mut report = Report::default();
    let mut expected_seq = 1;
    let mut prev_hash = vec![0u8; 32];
    loop {
        let page = store.audit_entries(report.last_seq, PAGE).await?;
        let Some(last) = page.last() else { break };
        report.last_seq = last.seq;
        for row in &page {
            check_entry(row, expected_seq, &prev_hash, &mut report.problems);
            if wanted.contains_key(&row.seq) {
                hashes_at_checkpoints.insert(row.seq, row.hash.clone());
            }
            report.entries += 1;
            expected_seq = row.seq + 1;
            prev_hash.clone_from(&row.hash);
        }
    }
    for cp in &checkpoints {
        report.checkpoints += 1;
        let signature: Option<[u8; 64]> = cp.signature.as_slice().try_into().ok();
        let signed = signature.is_some_and(|sig| {
            server
                .verify(&checkpoint_message(cp.seq, &cp.hash), &sig)
                .is_ok()
        });
        if !signed {
            report
                .problems
                .push(format!("checkpoint at entry {}: bad signature", cp.seq));
        } else if cp.seq > report.last_seq {
            report.problems.push(format!(
                "entries {}..={} are missing: the server signed a head at entry {} (tail deleted)",
                report.last_seq + 1,
                cp.seq,
                cp.seq
            ));
        } else if hashes_at_checkpoints.get(&cp.seq) != Some(&cp.hash) {
            report.problems.push(format!(
                "entry {}: differs from the head the server signed (chain rewritten up to here)",
                cp.seq
            ));
        }
    }
    Ok(report)
}

fn check_entry(row: &AuditRow, expected_seq: i64, prev_hash: &[u8], problems: &mut Vec<String>) {
    if row.seq != expected_seq {
        problems.push(format!(
            "entries {expected_seq}..={} are missing (deleted)",
            row.seq - 1
        ));
    }
    if row.prev_hash != prev_hash {
        problems.push(format!(
            "entry {}: does not follow the entry before it (an entry was deleted, inserted or reordered)",
            row.seq
        ));
    }
    if entry_hash(row).as_slice() != row.hash {
        problems.push(format!(
            "entry {}: its contents do not match its hash (edited or moved)",
            row.seq
        ));
    }
}

/// One entry as exported.
#[derive(Serialize)]
pub struct ExportedEntry<'a> {
    seq: i64,
    time: i64,
    actor: &'a str,
    ip: &'a str,
    action: &'a str,
    target: &'a str,
    outcome: &'a str,
    detail: &'a str,
    prev_hash: String,
    hash: String,
}

/// Writes every entry as one JSON object per line (JSON Lines), in order.
pub async fn export_json_lines(
    store: &dyn MetaStore,
    out: &mut dyn std::io::Write,
) -> anyhow::Result<u64> {
    let mut after = 0;
    let mut count = 0;
    loop {
        let page = store.audit_entries(after, PAGE).await?;
        let Some(last) = page.last() else { break };
        after = last.seq;
        for row in &page {
            let entry = ExportedEntry {
                seq: row.seq,
                time: row.time,
                actor: &row.actor,
                ip: &row.ip,
                action: &row.action,
                target: &row.target,
                outcome: &row.outcome,
                detail: &row.detail,
                prev_hash: crate::hex(&row.prev_hash),
                hash: crate::hex(&row.hash),
            };
            serde_json::to_writer(&mut *out, &entry)?;
            out.write_all(b"\n")?;
            count += 1;
        }
    }
    Ok(count)
}

/// Remembers which (address, kind) refusals were recorded in the current
/// window, so a flood writes one audit entry per address and window rather
/// than one per refused request.
#[derive(Default)]
pub struct RefusalMemo(Mutex<HashMap<(IpAddr, &'static str), i64>>);

impl RefusalMemo {
    fn first_in_window(&self, ip: IpAddr, kind: &'static str, window_secs: i64) -> bool {
        let now = crate::unix_now();
        let mut seen = self.0.lock().unwrap_or_else(|p| p.into_inner());
        seen.retain(|_, at| now - *at < window_secs);
        match seen.get(&(ip, kind)) {
            Some(_) => false,
            None => {
                seen.insert((ip, kind), now);
                true
            }
        }
    }
}

/// Records an event; a failure to record is logged and counted, and
/// reported to the caller so that it can fail closed.
pub async fn record(service: &super::Service, event: Event) -> Result<(), StoreError> {
    append(service.store.as_ref(), &event)
        .await
        .map(|_| ())
        .inspect_err(|err| {
            metrics::counter!("coffer_audit_failures_total").increment(1);
            tracing::error!("cannot write the audit log: {err}");
        })
}

/// Records a refusal by a limit (once per address, kind and window).
pub async fn refused(service: &super::Service, ip: IpAddr, kind: &'static str, what: &str) {
    let window = i64::try_from(service.config.limits.window_secs).unwrap_or(60);
    if service.refusals.first_in_window(ip, kind, window) {
        let event = Event::new("-", Some(ip), "limit", what)
            .outcome("refused")
            .detail(kind);
        let _ = record(service, event).await;
    }
}
