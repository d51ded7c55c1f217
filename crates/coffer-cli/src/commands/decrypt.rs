//! `coffer decrypt`.

use std::fs::File;
use std::io::{self, Read};

use anyhow::{Context, Result, bail};
use coffer_format::{Content, Header, PublicIdentity, Sender, Verified};
use serde_json::json;

use crate::cli::DecryptArgs;
use crate::identity_file;
use crate::output::Output;

pub fn run(args: &DecryptArgs) -> Result<()> {
    let identity = identity_file::load(args.identity.path.as_deref())?;
    let mut input: Box<dyn Read> = match &args.input {
        Some(path) if path.as_os_str() != "-" => {
            Box::new(File::open(path).with_context(|| format!("cannot open {}", path.display()))?)
        }
        _ => Box::new(io::stdin().lock()),
    };
    // Everything that can fail before any output exists is checked first,
    // so a wrong key or a damaged header never creates a temporary file.
    let opened = Header::read_from(&mut input)?.open(&identity, &[])?;
    if let Some(expected) = &args.expect_sender {
        check_sender(opened.core().sender.clone(), expected)?;
    }
    let mut output = Output::open(args.output.as_deref(), args.force, false)?;
    let verified = opened
        .decryptor(input)?
        .with_threads(crate::output::crypto_threads())?
        .copy_to(&mut output)?;
    output.commit()?;
    report(&verified, args.json);
    Ok(())
}

fn check_sender(sender: Sender, expected: &str) -> Result<()> {
    let expected = expected.trim();
    let matches = match PublicIdentity::parse(expected) {
        Ok(identity) => sender.is(&identity),
        Err(_) => expected.eq_ignore_ascii_case(&sender.fingerprint()),
    };
    if !matches {
        bail!(
            "sender mismatch: expected {expected}, the file is from {}",
            sender.fingerprint()
        );
    }
    Ok(())
}

fn report(verified: &Verified, json: bool) {
    let content = match &verified.content {
        Content::V1 { plaintext_sha256 } => format!("plaintext-sha256:{}", hex(plaintext_sha256)),
        Content::V2 { root, .. } => format!("coffer2-root:{}", hex(root)),
    };
    if json {
        let value = json!({
            "plaintext_len": verified.plaintext_len,
            "content": content,
            "sender": verified.sender.classic_identity().map(|id| id.to_string()),
            "sender_fingerprint": verified.sender.fingerprint(),
            "name": verified.metadata.name,
        });
        eprintln!("{value}");
    } else {
        eprintln!(
            "verified: {} bytes signed by {}",
            verified.plaintext_len,
            verified.sender.fingerprint(),
        );
    }
}

pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
