//! Small file helpers: private (0600) files written atomically, so a crash
//! never leaves a half-written profile or resume record.

use std::io::Write;
use std::path::Path;

use crate::{Error, Result};

/// Creates `dir` (and parents) readable by the owner only.
pub fn private_dir(dir: &Path) -> Result<()> {
    let mut builder = std::fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
    builder.create(dir).map_err(Error::io(dir))
}

/// Writes `bytes` to `path` with mode 0600: to a temporary sibling first,
/// synced, then renamed over the old file.
pub fn write_private(path: &Path, bytes: &[u8]) -> Result<()> {
    replace_private(path, bytes, true)
}

/// Like [`write_private`]; without `sync` the new content survives a
/// crash of the process but not necessarily of the machine (the rename
/// still makes it all-or-nothing).
pub fn replace_private(path: &Path, bytes: &[u8], sync: bool) -> Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    private_dir(dir)?;
    let mut tmp = tempfile_in(dir)?;
    tmp.write_all(bytes).map_err(Error::io(path))?;
    if sync {
        tmp.as_file().sync_all().map_err(Error::io(path))?;
    }
    tmp.persist(path).map_err(|e| Error::io(path)(e.error))?;
    Ok(())
}

fn tempfile_in(dir: &Path) -> Result<tempfile::NamedTempFile> {
    // tempfile creates files 0600 on Unix.
    tempfile::Builder::new()
        .prefix(".coffer-")
        .tempfile_in(dir)
        .map_err(Error::io(dir))
}

/// Hex encoding (lower case).
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// SHA-256.
pub fn sha256(data: &[u8]) -> [u8; 32] {
    let mut out = [0u8; 32];
    out.copy_from_slice(aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, data).as_ref());
    out
}

#[cfg(test)]
mod tests {
    #[cfg(unix)]
    #[test]
    fn private_files_are_0600_and_replaced_whole() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub/profile.json");
        super::write_private(&path, b"one").unwrap();
        super::write_private(&path, b"two").unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"two");
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        let dmode = std::fs::metadata(path.parent().unwrap())
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(dmode & 0o777, 0o700);
    }
}
