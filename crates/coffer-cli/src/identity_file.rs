//! Finding, reading and writing identity files on disk.

use std::fs;
use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use coffer_format::{Identity, PublicIdentity};
use zeroize::Zeroizing;

/// Environment variable holding the passphrase for automation.
pub const PASSPHRASE_ENV: &str = "COFFER_PASSPHRASE";
/// A file whose first line is the passphrase (a systemd credential, a file
/// only the job's user can read).
pub const PASSPHRASE_FILE_ENV: &str = "COFFER_PASSPHRASE_FILE";
/// A command that prints the passphrase.
pub const PASSPHRASE_COMMAND_ENV: &str = "COFFER_PASSPHRASE_COMMAND";

/// `~/.config/coffer/identity` (or under `$XDG_CONFIG_HOME`).
pub fn default_path() -> Result<PathBuf> {
    let base = match std::env::var_os("XDG_CONFIG_HOME") {
        Some(dir) if !dir.is_empty() => PathBuf::from(dir),
        _ => {
            let home =
                std::env::var_os("HOME").context("neither $XDG_CONFIG_HOME nor $HOME is set")?;
            PathBuf::from(home).join(".config")
        }
    };
    Ok(base.join("coffer").join("identity"))
}

/// The public identity of the identity at `path` (or the default). For a
/// protected file, its `# public identity:` line, so that a job can print
/// its key without the passphrase (the line is as trustworthy as the file
/// that holds it; the secret key is not opened). A protected file without
/// that line is opened with the passphrase.
pub fn load_public(path: Option<&Path>) -> Result<PublicIdentity> {
    let path = resolve(path)?;
    let text = Zeroizing::new(
        fs::read_to_string(&path)
            .with_context(|| format!("cannot read identity {}", path.display()))?,
    );
    if Identity::file_is_protected(&text)
        && let Some(public) = Identity::announced_public(&text)
    {
        return Ok(public);
    }
    Ok(load(Some(&path))?.public().clone())
}

fn resolve(path: Option<&Path>) -> Result<PathBuf> {
    match path {
        Some(path) => Ok(path.to_path_buf()),
        None => default_path(),
    }
}

/// Loads the identity at `path` (or the default), asking for the
/// passphrase if the file is protected.
pub fn load(path: Option<&Path>) -> Result<Identity> {
    let path = resolve(path)?;
    let text = Zeroizing::new(fs::read_to_string(&path).with_context(|| {
        format!(
            "cannot read identity {} (create one with `coffer keygen`)",
            path.display()
        )
    })?);
    let passphrase = if Identity::file_is_protected(&text) {
        Some(passphrase(
            &format!("Passphrase for {}: ", path.display()),
            false,
        )?)
    } else {
        None
    };
    Identity::from_file_string(&text, passphrase.as_ref().map(|p| p.as_bytes()))
        .with_context(|| format!("cannot load identity {}", path.display()))
}

/// Reads a passphrase from `$COFFER_PASSPHRASE`, the file named by
/// `$COFFER_PASSPHRASE_FILE`, the output of `$COFFER_PASSPHRASE_COMMAND`
/// (first line; e.g. `pass show coffer`, `systemd-creds cat …`), or the
/// terminal, in that order.
pub fn passphrase(prompt: &str, confirm: bool) -> Result<Zeroizing<String>> {
    if let Ok(value) = std::env::var(PASSPHRASE_ENV) {
        return Ok(Zeroizing::new(value));
    }
    if let Some(path) = std::env::var_os(PASSPHRASE_FILE_ENV) {
        let text = Zeroizing::new(std::fs::read_to_string(&path).with_context(|| {
            format!(
                "cannot read the passphrase file {} (${PASSPHRASE_FILE_ENV})",
                Path::new(&path).display()
            )
        })?);
        return first_line(&text, PASSPHRASE_FILE_ENV);
    }
    if let Some(command) = std::env::var_os(PASSPHRASE_COMMAND_ENV) {
        let output = std::process::Command::new("sh")
            .arg("-c")
            .arg(&command)
            .stdin(std::process::Stdio::null())
            .stderr(std::process::Stdio::inherit())
            .output()
            .with_context(|| format!("cannot run ${PASSPHRASE_COMMAND_ENV}"))?;
        let text = Zeroizing::new(String::from_utf8(output.stdout).map_err(|_| {
            anyhow::anyhow!("${PASSPHRASE_COMMAND_ENV} printed a passphrase that is not UTF-8")
        })?);
        if !output.status.success() {
            bail!("${PASSPHRASE_COMMAND_ENV} failed ({})", output.status);
        }
        return first_line(&text, PASSPHRASE_COMMAND_ENV);
    }
    if !std::io::stdin().is_terminal() {
        bail!(
            "a passphrase is needed: set ${PASSPHRASE_FILE_ENV}, ${PASSPHRASE_COMMAND_ENV} or ${PASSPHRASE_ENV}, or run on a terminal"
        );
    }
    let first = Zeroizing::new(rpassword::prompt_password(prompt)?);
    if first.is_empty() {
        bail!("empty passphrase");
    }
    if confirm {
        let second = Zeroizing::new(rpassword::prompt_password("Repeat passphrase: ")?);
        if *first != *second {
            bail!("passphrases do not match");
        }
    }
    Ok(first)
}

/// The first line of a passphrase source, without its line ending; an
/// empty one is refused rather than tried.
fn first_line(text: &str, source: &str) -> Result<Zeroizing<String>> {
    let line = text.lines().next().unwrap_or("");
    if line.is_empty() {
        bail!("${source} gave an empty passphrase");
    }
    Ok(Zeroizing::new(line.to_string()))
}

/// Writes an identity file with mode 0600, refusing to replace one unless
/// `force`. Created under a temporary name and renamed, so a crash never
/// leaves a half-written key.
pub fn write(path: &Path, text: &str, force: bool) -> Result<()> {
    if !force && fs::symlink_metadata(path).is_ok() {
        bail!(
            "{} already exists (use --force to replace it)",
            path.display()
        );
    }
    let dir = parent_dir(path);
    fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    // tempfile creates files with mode 0600 on Unix.
    let mut tmp = tempfile::Builder::new()
        .prefix(".coffer-identity-")
        .tempfile_in(dir)?;
    tmp.write_all(text.as_bytes())?;
    tmp.as_file().sync_all()?;
    if force {
        tmp.persist(path)?;
    } else {
        tmp.persist_noclobber(path)?;
    }
    Ok(())
}

/// Parses `-r` values and `-R` files into public identities.
pub fn recipients(inline: &[String], files: &[PathBuf]) -> Result<Vec<PublicIdentity>> {
    let mut out = Vec::new();
    for text in inline {
        out.push(PublicIdentity::parse(text).with_context(|| format!("recipient {text:?}"))?);
    }
    for file in files {
        let text =
            fs::read_to_string(file).with_context(|| format!("cannot read {}", file.display()))?;
        for (number, line) in text.lines().enumerate() {
            let line = line.split('#').next().unwrap_or("").trim();
            if line.is_empty() {
                continue;
            }
            out.push(
                PublicIdentity::parse(line)
                    .with_context(|| format!("{}:{}", file.display(), number + 1))?,
            );
        }
    }
    // The same recipient twice would only add a redundant stanza.
    let mut unique: Vec<PublicIdentity> = Vec::with_capacity(out.len());
    for identity in out {
        if !unique.contains(&identity) {
            unique.push(identity);
        }
    }
    Ok(unique)
}

pub fn parent_dir(path: &Path) -> &Path {
    match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir,
        _ => Path::new("."),
    }
}
