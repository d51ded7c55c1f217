//! `coffer inspect`: what anyone holding the file can see, no key needed.

use std::fs::File;
use std::io::BufReader;

use anyhow::{Context, Result};
use coffer_format::header::SUITE;
use coffer_format::stream::TAG_LEN;
use coffer_format::{Header, Version, tree};
use serde_json::json;

use crate::cli::InspectArgs;
use crate::commands::decrypt::hex;

pub fn run(args: &InspectArgs) -> Result<()> {
    let file =
        File::open(&args.input).with_context(|| format!("cannot open {}", args.input.display()))?;
    let total = file.metadata()?.len();
    let header = Header::read_from(&mut BufReader::new(file))?;
    let core = header.core();
    let header_len = header.encoded_len() as u64;
    let sealed_chunk = u64::from(core.chunk_size) + TAG_LEN as u64;
    let version = core.version;
    // Derived from the length alone; authenticated only on decryption.
    let payload = total.saturating_sub(header_len + version.trailer_len() as u64);
    let (chunks, plaintext_size) = match version {
        Version::V1 => {
            let chunks = payload.div_ceil(sealed_chunk);
            (chunks, payload.saturating_sub(chunks * TAG_LEN as u64))
        }
        Version::V2 => tree::layout_of(payload, sealed_chunk).map_or((0, 0), |(n, last)| {
            (
                n,
                (n - 1) * u64::from(core.chunk_size) + last - TAG_LEN as u64,
            )
        }),
    };
    let key_ids: Vec<String> = header
        .stanzas()
        .iter()
        .filter_map(|s| s.key_id().map(|id| id.to_string()))
        .collect();
    let stanzas: Vec<String> = header
        .stanzas()
        .iter()
        .map(|s| match (s.kind(), s.key_id()) {
            (1, Some(id)) => format!("{id} (X25519)"),
            (2, Some(id)) => format!("{id} (X-Wing, post-quantum hybrid)"),
            (kind, _) => format!("unknown stanza type {kind}"),
        })
        .collect();
    let sender = header.claimed_sender();

    if args.json {
        let value = json!({
            "version": version.number(),
            "suite": SUITE,
            "chunk_size": core.chunk_size,
            "file_id": hex(&core.file_id),
            "salt": hex(&core.salt),
            "sender_fingerprint": sender.fingerprint(),
            "sender_hybrid": sender.is_hybrid(),
            "recipient_key_ids": key_ids,
            "stanza_types": header.stanzas().iter().map(|s| s.kind()).collect::<Vec<_>>(),
            "header_len": header_len,
            "file_size": total,
            "chunks": chunks,
            "plaintext_size": plaintext_size,
            "metadata_encrypted_len": core.metadata_ct.len(),
        });
        crate::say!("{value}");
        return Ok(());
    }
    let algorithms = match version {
        Version::V1 => "AES-256-GCM STREAM, HPKE X25519, Ed25519, SHA-256",
        Version::V2 => "AES-256-GCM STREAM, HPKE X25519 or X-Wing, Ed25519, BLAKE3 tree",
    };
    crate::say!(
        "coffer file, format version {}, suite {SUITE} ({algorithms})",
        version.number()
    );
    crate::say!("chunk size:        {} bytes", core.chunk_size);
    if version == Version::V2 {
        crate::say!("file id:           {}", hex(&core.file_id));
    }
    crate::say!("sender (claimed):  {}", sender.fingerprint());
    crate::say!(
        "recipients:        {}",
        if stanzas.is_empty() {
            "none embedded (detached)".to_string()
        } else {
            stanzas.join(", ")
        }
    );
    crate::say!("file size:         {total} bytes ({chunks} chunks)");
    crate::say!("plaintext size:    {plaintext_size} bytes (from length; verified on decrypt)");
    crate::say!(
        "metadata:          {} bytes, encrypted",
        core.metadata_ct.len()
    );
    Ok(())
}
