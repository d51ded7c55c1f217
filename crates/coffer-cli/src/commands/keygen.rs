//! `coffer keygen` and `coffer pubkey`.

use anyhow::Result;
use coffer_format::{Identity, PublicIdentity};
use serde_json::json;

use crate::cli::{KeygenArgs, PubkeyArgs};
use crate::identity_file;

pub fn keygen(args: &KeygenArgs) -> Result<()> {
    let path = match &args.output {
        Some(path) => path.clone(),
        None => identity_file::default_path()?,
    };
    let identity = Identity::generate()?;
    let passphrase = if args.passphrase {
        Some(identity_file::passphrase("New passphrase: ", true)?)
    } else {
        None
    };
    let created = humantime_now();
    let text = identity.to_file_string(passphrase.as_ref().map(|p| p.as_bytes()), &created)?;
    identity_file::write(&path, &text, args.force)?;
    print_public(
        identity.public(),
        args.json,
        Some(&path.display().to_string()),
    );
    if !args.json {
        eprintln!("Wrote identity to {}", path.display());
    }
    Ok(())
}

pub fn pubkey(args: &PubkeyArgs) -> Result<()> {
    let public = identity_file::load_public(args.identity.path.as_deref())?;
    print_public(&public, args.json, None);
    Ok(())
}

fn print_public(public: &PublicIdentity, json: bool, path: Option<&str>) {
    if json {
        let value = json!({
            "public_identity": public.to_string(),
            "fingerprint": public.fingerprint(),
            "key_id": public.key_id().to_string(),
            "path": path,
        });
        crate::say!("{value}");
    } else {
        crate::say!("{public}");
        eprintln!("fingerprint: {}", public.fingerprint());
        eprintln!("key id:      {}", public.key_id());
    }
}

/// Seconds since the epoch, as an RFC 3339-like UTC string, without pulling
/// in a date crate for one comment line.
fn humantime_now() -> String {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let (days, rem) = (secs / 86_400, secs % 86_400);
    let (y, m, d) = civil_from_days(days as i64);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// Howard Hinnant's days-to-civil algorithm.
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (yoe + era * 400 + i64::from(m <= 2), m, d)
}

#[cfg(test)]
mod tests {
    #[test]
    fn civil_dates() {
        assert_eq!(super::civil_from_days(0), (1970, 1, 1));
        assert_eq!(super::civil_from_days(20_416), (2025, 11, 24));
    }
}
