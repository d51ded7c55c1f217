//! Turning names from a file's metadata into local paths.
//!
//! The metadata is signed by the sender, which proves who chose the name,
//! not that the name is harmless: a hostile (or careless) sender can store
//! `../../.bashrc`, `/etc/passwd`, `C:\Windows\x`, `CON`, names with
//! control characters or 10 000 bytes long. Nothing here ever joins such a
//! name to a directory as it is: every component is checked on its own, and
//! anything that could leave the target directory, name a device, or
//! confuse a terminal is refused.

use std::path::{Component, Path, PathBuf};

use crate::{Error, Result};

/// Longest component accepted, in bytes (the common file system limit).
pub const MAX_COMPONENT: usize = 255;
/// Most components in a relative path.
pub const MAX_DEPTH: usize = 32;

/// Device names that Windows resolves anywhere in the file system.
const RESERVED: &[&str] = &[
    "CON", "PRN", "AUX", "NUL", "COM1", "COM2", "COM3", "COM4", "COM5", "COM6", "COM7", "COM8",
    "COM9", "LPT1", "LPT2", "LPT3", "LPT4", "LPT5", "LPT6", "LPT7", "LPT8", "LPT9", "CONIN$",
    "CONOUT$",
];

fn refuse(name: &str, why: &'static str) -> Error {
    Error::HostileName {
        name: name.chars().take(300).collect(),
        why,
    }
}

/// Characters a name must not contain because a terminal or file manager
/// would show the name as something it is not: controls (including NUL and
/// escape sequences), bidirectional overrides and isolates (`report\u{202E}
/// fdp.exe` shows as `reportexe.pdf`), and zero-width characters.
pub fn unprintable(c: char) -> bool {
    c.is_control()
        || matches!(
            c,
            '\u{200B}'..='\u{200F}' | '\u{202A}'..='\u{202E}' | '\u{2060}'..='\u{2069}' | '\u{FEFF}'
        )
}

/// Checks one path component (a file or directory name).
pub fn check_component(part: &str) -> Result<()> {
    if part.is_empty() || part == "." || part == ".." {
        return Err(refuse(part, "empty, `.` or `..`"));
    }
    if part.len() > MAX_COMPONENT {
        return Err(refuse(part, "longer than 255 bytes"));
    }
    if part.chars().any(unprintable) {
        return Err(refuse(
            part,
            "contains NUL, control, bidirectional or invisible characters",
        ));
    }
    if part.contains(['/', '\\']) {
        return Err(refuse(part, "contains a path separator"));
    }
    if part.contains(':') {
        return Err(refuse(part, "contains `:` (drive letter or stream)"));
    }
    if part.ends_with(['.', ' ']) {
        return Err(refuse(part, "ends with a dot or space"));
    }
    let stem = part.split('.').next().unwrap_or(part).trim_end();
    if RESERVED.iter().any(|r| r.eq_ignore_ascii_case(stem)) {
        return Err(refuse(part, "a reserved device name"));
    }
    Ok(())
}

/// Checks a relative path from metadata (`/`-separated) and returns it as
/// a relative [`PathBuf`] of checked components.
pub fn safe_relative(path: &str) -> Result<PathBuf> {
    if path.starts_with(['/', '\\']) {
        return Err(refuse(path, "absolute path"));
    }
    let parts: Vec<&str> = path.split('/').collect();
    if parts.len() > MAX_DEPTH {
        return Err(refuse(path, "too many directory levels"));
    }
    let mut out = PathBuf::new();
    for part in parts {
        check_component(part)?;
        out.push(part);
    }
    // Belt and braces: whatever the platform parses, only plain names.
    if !out.components().all(|c| matches!(c, Component::Normal(_))) {
        return Err(refuse(path, "not a plain relative path"));
    }
    Ok(out)
}

/// The name to save a file under when its stored name is unusable: the id.
pub fn fallback_name(file_id: &str) -> String {
    format!("coffer-{file_id}")
}

/// Creates `relative`'s parent directories under `root`, refusing to pass
/// through a symbolic link (which could point outside `root`).
pub fn create_parents(root: &Path, relative: &Path) -> Result<PathBuf> {
    let mut dir = root.to_path_buf();
    if let Some(parent) = relative.parent() {
        for part in parent.components() {
            dir.push(part);
            match std::fs::symlink_metadata(&dir) {
                Ok(meta) if meta.file_type().is_dir() => {}
                Ok(_) => {
                    return Err(refuse(
                        &relative.to_string_lossy(),
                        "a parent is a symbolic link or not a directory",
                    ));
                }
                Err(err) if err.kind() == std::io::ErrorKind::NotFound => {
                    std::fs::create_dir(&dir).map_err(Error::io(&dir))?;
                }
                Err(err) => return Err(Error::io(&dir)(err)),
            }
        }
    }
    Ok(root.join(relative))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hostile_names_are_refused() {
        for bad in [
            "",
            ".",
            "..",
            "../x",
            "a/../../b",
            "/etc/passwd",
            "\\\\server\\share",
            "C:\\Windows",
            "C:x",
            "a\0b",
            "bell\x07",
            "esc\x1b[2J",
            "invoice\u{202E}fdp.exe",
            "zero\u{200B}width",
            "\u{2066}isolate",
            "CON",
            "con.txt",
            "Lpt1.log",
            "trailing.",
            "trailing ",
            "a//b",
            &"x".repeat(256),
            &"d/".repeat(40),
        ] {
            assert!(safe_relative(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn ordinary_names_pass() {
        for good in [
            "report.pdf",
            "a/b/c.txt",
            "..hidden",
            "x..y",
            "école.txt",
            "CONTRACT.doc",
        ] {
            assert_eq!(safe_relative(good).unwrap(), PathBuf::from(good));
        }
    }

    #[cfg(unix)]
    #[test]
    fn parents_never_pass_through_a_symlink() {
        let root = tempfile::tempdir().unwrap();
        let outside = tempfile::tempdir().unwrap();
        std::os::unix::fs::symlink(outside.path(), root.path().join("link")).unwrap();
        assert!(create_parents(root.path(), Path::new("link/x.txt")).is_err());
        let made = create_parents(root.path(), Path::new("a/b/x.txt")).unwrap();
        assert!(root.path().join("a/b").is_dir());
        assert_eq!(made, root.path().join("a/b/x.txt"));
    }
}
