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

/// jemalloc instead of the system allocator. A transfer's buffers are
/// megabytes, allocated on one thread and freed on another (the TLS and
/// HTTP layers hand them on); glibc's allocator returns such memory to the
/// kernel and faults it in again, page by page, for the next buffer. On the
/// reference machine a page fault costs several microseconds, and a 1 GiB
/// `coffer put` took 19,000-27,000 of them; with jemalloc, which keeps freed
/// memory for reuse, 6,200. In an A/B of the two builds the server spent
/// 1.52-1.67 s of CPU receiving 1 GiB instead of 1.71-2.00 s (the client
/// about the same); the commit that made this change has the figures. Only
/// Rust allocations use it: C libraries loaded by the server (a PKCS#11
/// module) keep the system allocator.
#[cfg(not(target_env = "msvc"))]
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match &cli.command {
        Command::Keygen(args) => commands::keygen::keygen(args),
        Command::Pubkey(args) => commands::keygen::pubkey(args),
        Command::Encrypt(args) => commands::encrypt::run(args),
        Command::Decrypt(args) => commands::decrypt::run(args),
        Command::Inspect(args) => commands::inspect::run(args),
        Command::Server(command) => commands::server::run(command),
        Command::Completions(args) => commands::docs::completions(args),
        Command::Man(args) => commands::docs::man(args),
        client => commands::client::run(client),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        // A reader that closed the pipe of a file streamed to it (`coffer
        // get ID -o - | head`, `coffer decrypt F | head`) had what it
        // wanted. (`say` drops the lines of a closed pipe and lets the
        // command finish.)
        Err(err) if reader_closed_stdout(&err) => ExitCode::SUCCESS,
        Err(err) => ExitCode::from(report_error(&err)),
    }
}

/// Prints `err` on stderr (one line, or one JSON object with `--json`) and
/// returns the exit code its class calls for.
pub(crate) fn report_error(err: &anyhow::Error) -> u8 {
    let code = exit_code(err);
    if wants_json() {
        let line = serde_json::json!({"error": one_line(err), "exit_code": code});
        eprintln!("{line}");
    } else {
        eprintln!("coffer: {}", one_line(err));
    }
    code
}

/// Whether the command line asked for `--json`: then the error, too, is
/// one JSON object (on stderr, like the text form). Read from the words
/// themselves because each command has its own `--json` flag.
fn wants_json() -> bool {
    std::env::args_os()
        .skip(1)
        .take_while(|word| word != "--")
        .any(|word| word == "--json")
}

/// The error chain on one line, outermost context first.
fn one_line(err: &anyhow::Error) -> String {
    let mut line = String::new();
    for cause in err.chain().map(|c| c.to_string()) {
        // An error whose message already ends with its source's (thiserror's
        // "{path}: {source}") would otherwise repeat the OS error.
        if line.ends_with(&cause) {
            continue;
        }
        if !line.is_empty() {
            line.push_str(": ");
        }
        line.push_str(&cause);
    }
    line
}

/// Whether the failure is standard output closed by its reader: a download
/// streamed to it, or the output of `encrypt`/`decrypt`
/// ([`output::StdoutClosed`]).
fn reader_closed_stdout(err: &anyhow::Error) -> bool {
    err.chain().any(|cause| {
        let download = matches!(
            cause.downcast_ref::<coffer_client::Error>(),
            Some(coffer_client::Error::Io { path, source })
                if path.as_os_str() == coffer_client::download::STANDARD_OUTPUT
                    && source.kind() == std::io::ErrorKind::BrokenPipe
        );
        // The format crate's `Io` is transparent: the `io::Error` is not
        // in the chain by itself.
        let io = match cause.downcast_ref::<coffer_format::Error>() {
            Some(coffer_format::Error::Io(io)) => Some(io),
            _ => cause.downcast_ref::<std::io::Error>(),
        };
        let file_command = io
            .and_then(std::io::Error::get_ref)
            .is_some_and(|inner| inner.is::<output::StdoutClosed>());
        download || file_command
    })
}

/// Exit codes by class, documented in the README and `coffer --help`:
/// 1 other, 2 usage, 3 wrong key, 4 integrity (tampered, malformed, not
/// from the named sender, another file), 5 truncated, 6 not a coffer file
/// or unsupported version, 7 authentication or a changed pinned key, 8 not
/// found, 9 refused by a quota or limit, 75 temporary (retry later).
fn exit_code(err: &anyhow::Error) -> u8 {
    for cause in err.chain() {
        if let Some(format) = cause.downcast_ref::<coffer_format::Error>() {
            return format_code(format.kind());
        }
        if let Some(client) = cause.downcast_ref::<coffer_client::Error>() {
            if let coffer_client::Error::Format(format) = client {
                return format_code(format.kind());
            }
            return client_code(client.class());
        }
        if let Some(format) = cause
            .downcast_ref::<std::io::Error>()
            .and_then(|io| io.get_ref())
            .and_then(|inner| inner.downcast_ref::<coffer_format::Error>())
        {
            return format_code(format.kind());
        }
    }
    1
}

fn format_code(kind: ErrorKind) -> u8 {
    match kind {
        ErrorKind::WrongKey => 3,
        ErrorKind::Tampered | ErrorKind::Malformed => 4,
        ErrorKind::Truncated => 5,
        ErrorKind::NotCoffer | ErrorKind::Unsupported => 6,
        ErrorKind::Usage => 2,
        _ => 1,
    }
}

fn client_code(class: coffer_client::Class) -> u8 {
    use coffer_client::Class;
    match class {
        Class::Usage => 2,
        Class::Integrity => 4,
        Class::Auth => 7,
        Class::NotFound => 8,
        Class::Refused => 9,
        Class::Temporary => 75,
        Class::Other => 1,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_os_error_is_said_once_and_a_closed_stdout_is_success() {
        let io = |path: &str, kind| coffer_client::Error::Io {
            path: path.into(),
            source: std::io::Error::from(kind),
        };
        let err = anyhow::Error::new(io("in/a.csv", std::io::ErrorKind::PermissionDenied))
            .context("download of abc failed");
        let line = one_line(&err);
        assert_eq!(line.matches("ermission denied").count(), 1, "{line}");
        assert!(
            line.starts_with("download of abc failed: in/a.csv: "),
            "{line}"
        );
        let closed = anyhow::Error::new(io(
            coffer_client::download::STANDARD_OUTPUT,
            std::io::ErrorKind::BrokenPipe,
        ));
        assert!(reader_closed_stdout(&closed));
        // A broken pipe anywhere else (a file, the network) is a failure.
        let elsewhere = anyhow::Error::new(io("out.bin", std::io::ErrorKind::BrokenPipe));
        assert!(!reader_closed_stdout(&elsewhere));
    }
}
