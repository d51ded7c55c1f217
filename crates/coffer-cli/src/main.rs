//! The `coffer` command. Thin over the library crates: argument parsing,
//! files and terminals here, cryptography in `coffer-format`.

#![forbid(unsafe_code)]

mod cli;
mod commands;
mod identity_file;
mod output;

use std::process::ExitCode;

use clap::Parser;
use coffer_format::ErrorKind;

use cli::{Cli, Command};

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match &cli.command {
        Command::Keygen(args) => commands::keygen::keygen(args),
        Command::Pubkey(args) => commands::keygen::pubkey(args),
        Command::Encrypt(args) => commands::encrypt::run(args),
        Command::Decrypt(args) => commands::decrypt::run(args),
        Command::Inspect(args) => commands::inspect::run(args),
        Command::Server(command) => commands::server::run(command),
        client => commands::client::run(client),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("coffer: {}", one_line(&err));
            ExitCode::from(exit_code(&err))
        }
    }
}

/// The error chain on one line, outermost context first.
fn one_line(err: &anyhow::Error) -> String {
    err.chain()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(": ")
}

/// Exit codes, documented in the README: 1 other, 2 usage (clap), 3 wrong
/// key, 4 tampered, 5 truncated, 6 not a coffer file or unsupported version.
fn exit_code(err: &anyhow::Error) -> u8 {
    let kind = err.chain().find_map(|cause| {
        cause
            .downcast_ref::<coffer_format::Error>()
            .map(coffer_format::Error::kind)
            .or_else(|| match cause.downcast_ref::<coffer_client::Error>() {
                Some(coffer_client::Error::Format(format)) => Some(format.kind()),
                // A file signed by someone else than its named sender, or
                // another file than the one asked for: an integrity failure.
                Some(
                    coffer_client::Error::WrongSender { .. }
                    | coffer_client::Error::WrongFile { .. },
                ) => Some(ErrorKind::Tampered),
                _ => None,
            })
            .or_else(|| {
                cause
                    .downcast_ref::<std::io::Error>()
                    .and_then(|io| io.get_ref())
                    .and_then(|inner| inner.downcast_ref::<coffer_format::Error>())
                    .map(coffer_format::Error::kind)
            })
    });
    match kind {
        Some(ErrorKind::WrongKey) => 3,
        Some(ErrorKind::Tampered | ErrorKind::Malformed) => 4,
        Some(ErrorKind::Truncated) => 5,
        Some(ErrorKind::NotCoffer | ErrorKind::Unsupported) => 6,
        _ => 1,
    }
}
