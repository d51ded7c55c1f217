//! Output that appears at its final path only when complete.
//!
//! Data goes to a temporary file created beside the target (same
//! filesystem, so the rename is atomic) in large writes that bypass the
//! page cache where the file system allows it (`coffer_fileio`), is fsync'd, and is renamed over the
//! target only on [`AtomicOutput::commit`]. Dropping without commit deletes
//! the temporary file, so a failed decryption leaves nothing at the target;
//! a crash leaves at most a hidden `.coffer-tmp-*` file, never a partial
//! target. The rename replaces a symlink at the target rather than
//! following it.

use std::fs::File;
use std::io::{self, IsTerminal, Write};
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use tempfile::NamedTempFile;

use crate::identity_file::parent_dir;

/// Where a command's output goes.
pub enum Output {
    /// Standard output, unbuffered beyond one chunk.
    Stdout(io::StdoutLock<'static>),
    /// A file, committed atomically.
    File(AtomicOutput),
}

impl Output {
    /// Opens the output; refuses an existing target unless `force`, and
    /// refuses binary ciphertext to a terminal when `binary`.
    pub fn open(path: Option<&Path>, force: bool, binary: bool) -> Result<Self> {
        match path {
            None => {
                let stdout = io::stdout();
                if binary && stdout.is_terminal() {
                    bail!(
                        "refusing to write binary ciphertext to a terminal (use -o FILE or redirect)"
                    );
                }
                Ok(Self::Stdout(stdout.lock()))
            }
            Some(path) if path.as_os_str() == "-" => Self::open(None, force, binary),
            Some(path) => Ok(Self::File(AtomicOutput::create(path, force)?)),
        }
    }

    /// Makes the output final: renames the temporary file into place.
    pub fn commit(self) -> Result<()> {
        match self {
            Self::Stdout(mut out) => Ok(on_stdout(out.flush())?),
            Self::File(file) => file.commit(),
        }
    }
}

/// Standard output closed by its reader (`coffer decrypt F | head`): the
/// reader had what it wanted, so `main` exits 0 without a message, as for
/// `coffer get ID -o - | head`. Carried inside the `io::Error`, so a broken
/// pipe anywhere else still fails.
#[derive(Debug)]
pub struct StdoutClosed;

impl std::fmt::Display for StdoutClosed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("standard output was closed by its reader")
    }
}

impl std::error::Error for StdoutClosed {}

/// Marks a broken pipe on standard output as [`StdoutClosed`].
fn on_stdout<T>(result: io::Result<T>) -> io::Result<T> {
    result.map_err(|err| match err.kind() {
        io::ErrorKind::BrokenPipe => io::Error::new(io::ErrorKind::BrokenPipe, StdoutClosed),
        _ => err,
    })
}

impl Write for Output {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Self::Stdout(out) => on_stdout(out.write(buf)),
            Self::File(file) => file.writer.push(buf).map(|()| buf.len()),
        }
    }
    fn write_all(&mut self, buf: &[u8]) -> io::Result<()> {
        match self {
            Self::Stdout(out) => on_stdout(out.write_all(buf)),
            Self::File(file) => file.writer.push(buf),
        }
    }
    /// For a file, a no-op: what the writer gathered is written by
    /// `commit`, which alone makes the output appear.
    fn flush(&mut self) -> io::Result<()> {
        match self {
            Self::Stdout(out) => on_stdout(out.flush()),
            Self::File(_) => Ok(()),
        }
    }
}

/// A temporary file that becomes `target` on commit.
pub struct AtomicOutput {
    /// Writes into `tmp` (a second handle on the same file).
    writer: coffer_fileio::DirectWriter,
    tmp: NamedTempFile,
    target: PathBuf,
    force: bool,
}

impl AtomicOutput {
    fn create(target: &Path, force: bool) -> Result<Self> {
        if !force && std::fs::symlink_metadata(target).is_ok() {
            bail!(
                "{} already exists (use --force to replace it)",
                target.display()
            );
        }
        let tmp = tempfile::Builder::new()
            .prefix(".coffer-tmp-")
            .tempfile_in(parent_dir(target))
            .with_context(|| {
                format!("cannot create a temporary file beside {}", target.display())
            })?;
        let handle = tmp.as_file().try_clone()?;
        Ok(Self {
            writer: coffer_fileio::DirectWriter::new(handle, 0)?,
            tmp,
            target: target.to_path_buf(),
            force,
        })
    }

    fn commit(self) -> Result<()> {
        self.writer.finish()?;
        let tmp = self.tmp;
        tmp.as_file().sync_all()?;
        let persisted = if self.force {
            tmp.persist(&self.target)
        } else {
            tmp.persist_noclobber(&self.target)
        };
        persisted.with_context(|| format!("cannot move output into {}", self.target.display()))?;
        // Make the rename itself durable.
        File::open(parent_dir(&self.target))
            .and_then(|dir| dir.sync_all())
            .ok();
        Ok(())
    }
}

/// Set once standard output's reader has closed the pipe.
static STDOUT_CLOSED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Whether standard output's reader has gone (`coffer ls | head -1`): a
/// listing may stop there, as nothing will read the rest.
pub fn stdout_closed() -> bool {
    STDOUT_CLOSED.load(std::sync::atomic::Ordering::Relaxed)
}

/// Prints one line of a command's output on standard output. A reader that
/// closed the pipe (`coffer inbox --get-all | head -1`) has what it wanted:
/// the rest of the output is dropped, and the command still finishes its
/// work (the files it fetches, the keys it pins, its exit code), rather
/// than ending there with success and its state unsaved. Any other write
/// error ends it with a message and exit code 1.
pub fn say(line: std::fmt::Arguments<'_>) {
    if stdout_closed() {
        return;
    }
    let mut out = io::stdout().lock();
    let written = out
        .write_fmt(line)
        .and_then(|()| out.write_all(b"\n"))
        .and_then(|()| out.flush());
    match written {
        Ok(()) => {}
        Err(err) if err.kind() == io::ErrorKind::BrokenPipe => {
            STDOUT_CLOSED.store(true, std::sync::atomic::Ordering::Relaxed);
        }
        Err(err) => {
            let _ = writeln!(
                io::stderr(),
                "coffer: cannot write to standard output: {err}"
            );
            std::process::exit(1);
        }
    }
}

/// `println!` for command output: see [`say`].
#[macro_export]
macro_rules! say {
    ($($arg:tt)*) => {
        $crate::output::say(format_args!($($arg)*))
    };
}

/// Threads that seal or open chunks for a local `encrypt`/`decrypt`: every
/// core (chunks are independent until the content tree joins them).
pub fn crypto_threads() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}
