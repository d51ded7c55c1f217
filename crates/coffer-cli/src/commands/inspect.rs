//! `coffer inspect`: what anyone holding the file can see, no key needed.

use std::fs::File;
use std::io::BufReader;

use anyhow::{Context, Result};
use coffer_format::Header;
use coffer_format::header::{SUITE, TRAILER_LEN, VERSION};
use coffer_format::stream::TAG_LEN;
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
    // Derived from the length alone; authenticated only on decryption.
    let payload = total.saturating_sub(header_len + TRAILER_LEN as u64);
    let chunks = payload.div_ceil(sealed_chunk);
    let plaintext_size = payload.saturating_sub(chunks * TAG_LEN as u64);
    let key_ids: Vec<String> = header
        .stanzas()
        .iter()
        .map(|s| s.key_id.to_string())
        .collect();
    let sender = header.claimed_sender();

    if args.json {
        let value = json!({
            "version": VERSION,
            "suite": SUITE,
            "chunk_size": core.chunk_size,
            "salt": hex(&core.salt),
            "sender": sender.to_string(),
            "sender_fingerprint": sender.fingerprint(),
            "recipient_key_ids": key_ids,
            "header_len": header_len,
            "file_size": total,
            "chunks": chunks,
            "plaintext_size": plaintext_size,
            "metadata_encrypted_len": core.metadata_ct.len(),
        });
        println!("{value}");
        return Ok(());
    }
    println!(
        "coffer file, format version {VERSION}, suite {SUITE} (AES-256-GCM STREAM, HPKE X25519, Ed25519)"
    );
    println!("chunk size:        {} bytes", core.chunk_size);
    println!("sender (claimed):  {} ({})", sender.fingerprint(), sender);
    println!(
        "recipients:        {}",
        if key_ids.is_empty() {
            "none embedded (detached)".to_string()
        } else {
            key_ids.join(", ")
        }
    );
    println!("file size:         {total} bytes ({chunks} chunks)");
    println!("plaintext size:    {plaintext_size} bytes (from length; verified on decrypt)");
    println!(
        "metadata:          {} bytes, encrypted",
        core.metadata_ct.len()
    );
    Ok(())
}
