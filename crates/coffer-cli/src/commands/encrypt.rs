//! `coffer encrypt`.

use std::fs::File;
use std::io::{self, Read};
use std::time::UNIX_EPOCH;

use anyhow::{Context, Result, bail};
use coffer_format::{EncryptOptions, Metadata, encrypt};

use crate::cli::EncryptArgs;
use crate::identity_file;
use crate::output::Output;

pub fn run(args: &EncryptArgs) -> Result<()> {
    let signer = identity_file::load(args.identity.path.as_deref())?;
    let mut recipients = identity_file::recipients(&args.recipients, &args.recipients_files)?;
    if args.to_self && !recipients.contains(signer.public()) {
        recipients.push(signer.public().clone());
    }
    if recipients.is_empty() {
        bail!("no recipients: give -r RECIPIENT, -R FILE or --to-self");
    }

    let (mut input, metadata): (Box<dyn Read>, Metadata) = match &args.input {
        Some(path) if path.as_os_str() != "-" => {
            let file =
                File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
            let metadata = file_metadata(&file, path)?;
            (Box::new(file), metadata)
        }
        _ => (Box::new(io::stdin().lock()), Metadata::default()),
    };
    let mut options = EncryptOptions::new(&recipients, &signer);
    options.chunk_size = args.chunk_size;
    options.metadata = metadata;
    options.threads = crate::output::crypto_threads();

    let output = Output::open(args.output.as_deref(), args.force, true)?;
    let (output, _written) = encrypt(options, &mut input, output)?;
    output.commit()
}

fn file_metadata(file: &File, path: &std::path::Path) -> Result<Metadata> {
    let stat = file.metadata()?;
    if !stat.is_file() {
        return Ok(Metadata::default());
    }
    let mtime = stat
        .modified()
        .ok()
        .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
        .and_then(|d| i64::try_from(d.as_secs()).ok());
    Ok(Metadata {
        name: path.file_name().map(|n| n.to_string_lossy().into_owned()),
        size: Some(stat.len()),
        mtime,
        ..Metadata::default()
    })
}
