//! tus 1.0.0 (core, creation, creation-with-upload, termination, checksum
//! with sha256, expiration): header names, values and `Upload-Metadata`.

use axum::http::HeaderMap;
use base64::Engine as _;

use super::Invalid;

/// The protocol version.
pub const VERSION: &str = "1.0.0";
/// The extensions the server implements.
pub const EXTENSIONS: &str = "creation,creation-with-upload,termination,checksum,expiration";
/// The content type of a body of upload bytes.
pub const OFFSET_CONTENT_TYPE: &str = "application/offset+octet-stream";
/// Longest `Upload-Metadata` header: room for the wraps of about 30
/// post-quantum (X-Wing) recipients sent with the upload; more are added by
/// sharing afterwards. Within the request-head limit (`max_header_bytes`).
pub const MAX_METADATA: usize = 48 * 1024;
/// Upload-Metadata key marking an upload as end-to-end encrypted already.
pub const E2EE_KEY: &str = "coffer-e2ee";
/// Upload-Metadata key of the file id an E2EE client chose and signed.
pub const FILE_ID_KEY: &str = "coffer-file-id";
/// Upload-Metadata key prefix of a key wrap sent with the upload
/// (`coffer-wrap.<user> <base64 stanza>`), so that the file and its wraps
/// are committed in one transaction.
pub const WRAP_KEY_PREFIX: &str = "coffer-wrap.";
/// Upload-Metadata key: seconds the file is kept after its commit
/// (base64 of decimal digits, as every tus value).
pub const EXPIRES_IN_KEY: &str = "coffer-expires-in";
/// Upload-Metadata key (no value): delete the file once every recipient
/// acknowledged it.
pub const DELETE_WHEN_RECEIVED_KEY: &str = "coffer-delete-when-received";

/// Refuses a request without `Tus-Resumable: 1.0.0`.
pub fn check_version(headers: &HeaderMap) -> Result<(), Invalid> {
    match headers.get("tus-resumable").and_then(|v| v.to_str().ok()) {
        Some(VERSION) => Ok(()),
        _ => Err(Invalid::TusVersion),
    }
}

/// An unsigned integer header (`Upload-Length`, `Upload-Offset`), if present.
pub fn header_u64(headers: &HeaderMap, name: &str) -> Result<Option<u64>, Invalid> {
    headers
        .get(name)
        .map(|v| v.to_str().ok().and_then(|s| s.parse::<u64>().ok()))
        .map(|parsed| parsed.ok_or_else(|| Invalid::header(format!("invalid {name}"))))
        .transpose()
}

/// `Upload-Checksum: sha256 <base64>`, if present.
pub fn checksum(headers: &HeaderMap) -> Result<Option<[u8; 32]>, Invalid> {
    let Some(value) = headers.get("upload-checksum") else {
        return Ok(None);
    };
    let invalid = || Invalid::header("invalid Upload-Checksum");
    let text = value.to_str().map_err(|_| invalid())?;
    let (algorithm, digest) = text.split_once(' ').ok_or_else(invalid)?;
    if algorithm != "sha256" {
        return Err(Invalid::header(
            "unsupported checksum algorithm (sha256 only)",
        ));
    }
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(digest.trim())
        .map_err(|_| invalid())?;
    bytes.try_into().map(Some).map_err(|_| invalid())
}

/// An `HTTP-date` (`Upload-Expires`).
pub fn http_date(unix: i64) -> String {
    let time = std::time::UNIX_EPOCH + std::time::Duration::from_secs(unix.max(0) as u64);
    httpdate::fmt_http_date(time)
}

/// A parsed `Upload-Metadata` value: comma-separated `key base64value`
/// pairs (the value may be absent).
#[derive(Clone, Copy, Debug)]
pub struct Metadata<'a>(&'a str);

impl<'a> Metadata<'a> {
    /// The header's value (empty if absent), refused when longer than
    /// [`MAX_METADATA`].
    pub fn of(headers: &'a HeaderMap) -> Result<Self, Invalid> {
        let value = match headers.get("upload-metadata") {
            None => "",
            Some(v) => v
                .to_str()
                .map_err(|_| Invalid::header("Upload-Metadata is not text"))?,
        };
        Self::parse(value)
    }

    /// Wraps a stored value.
    pub fn parse(value: &'a str) -> Result<Self, Invalid> {
        if value.len() > MAX_METADATA {
            return Err(Invalid::header("Upload-Metadata too long"));
        }
        Ok(Self(value))
    }

    /// The raw value.
    pub fn as_str(&self) -> &'a str {
        self.0
    }

    fn pairs(&self) -> impl Iterator<Item = (&'a str, &'a str)> {
        self.0
            .split(',')
            .map(str::trim)
            .filter(|pair| !pair.is_empty())
            .map(|pair| {
                let (key, value) = pair.split_once(' ').unwrap_or((pair, ""));
                (key, value.trim())
            })
    }

    /// Whether `key` is present.
    pub fn has(&self, key: &str) -> bool {
        self.pairs().any(|(k, _)| k == key)
    }

    /// The (still base64) value of `key`, if present.
    pub fn value(&self, key: &str) -> Option<&'a str> {
        self.pairs().find(|(k, _)| *k == key).map(|(_, v)| v)
    }

    /// The value of `key` base64-decoded, as text.
    pub fn text(&self, key: &str) -> Result<Option<String>, Invalid> {
        let Some(value) = self.value(key) else {
            return Ok(None);
        };
        base64::engine::general_purpose::STANDARD
            .decode(value)
            .ok()
            .and_then(|bytes| String::from_utf8(bytes).ok())
            .map(Some)
            .ok_or_else(|| Invalid::header(format!("{key} is not base64 text")))
    }

    /// The retention the uploader asked for: seconds to keep the file
    /// (`None`: not said) and whether to delete it once received.
    pub fn retention(&self) -> Result<(Option<u64>, bool), Invalid> {
        let keep = match self.text(EXPIRES_IN_KEY)? {
            None => None,
            Some(text) => Some(
                text.parse::<u64>()
                    .ok()
                    .filter(|secs| (1..=i64::MAX as u64 / 2).contains(secs))
                    .ok_or_else(|| {
                        Invalid::header(format!("{EXPIRES_IN_KEY} must be a number of seconds"))
                    })?,
            ),
        };
        Ok((keep, self.has(DELETE_WHEN_RECEIVED_KEY)))
    }

    /// The key wraps it carries, `(user, stanza)`; other pairs are ignored.
    pub fn wraps(&self) -> Result<Vec<(String, Vec<u8>)>, Invalid> {
        let mut wraps: Vec<(String, Vec<u8>)> = Vec::new();
        for (key, value) in self.pairs() {
            let Some(user) = key.strip_prefix(WRAP_KEY_PREFIX) else {
                continue;
            };
            if wraps.iter().any(|(seen, _)| seen == user) {
                return Err(Invalid::header(format!("two wraps for {user}")));
            }
            let stanza = base64::engine::general_purpose::STANDARD
                .decode(value)
                .map_err(|_| Invalid::header("a wrap in Upload-Metadata is not base64"))?;
            wraps.push((user.to_string(), stanza));
        }
        Ok(wraps)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.insert(*name, HeaderValue::from_str(value).unwrap());
        }
        map
    }

    #[test]
    fn version_integers_and_checksums() {
        assert_eq!(
            check_version(&headers(&[("tus-resumable", "1.0.0")])),
            Ok(())
        );
        assert_eq!(
            check_version(&headers(&[("tus-resumable", "0.2.2")])),
            Err(Invalid::TusVersion)
        );
        assert_eq!(check_version(&headers(&[])), Err(Invalid::TusVersion));
        assert_eq!(
            header_u64(&headers(&[("upload-length", "42")]), "upload-length"),
            Ok(Some(42))
        );
        assert_eq!(header_u64(&headers(&[]), "upload-length"), Ok(None));
        for bad in ["-1", "1e3", "18446744073709551616", " "] {
            assert!(
                header_u64(&headers(&[("upload-length", bad)]), "upload-length").is_err(),
                "{bad}"
            );
        }
        let sum = base64::engine::general_purpose::STANDARD.encode([7u8; 32]);
        assert_eq!(
            checksum(&headers(&[("upload-checksum", &format!("sha256 {sum}"))])),
            Ok(Some([7; 32]))
        );
        for bad in ["sha256", "md5 AAAA", "sha256 !!!", "sha256 AAAA"] {
            assert!(
                checksum(&headers(&[("upload-checksum", bad)])).is_err(),
                "{bad}"
            );
        }
    }

    #[test]
    fn retention_pairs() {
        let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
        let parsed = |value: String| Metadata::parse(&value).unwrap().retention().map_err(|_| ());
        assert_eq!(parsed(String::new()), Ok((None, false)));
        assert_eq!(
            parsed(format!(
                "coffer-expires-in {},coffer-delete-when-received",
                b64("86400")
            )),
            Ok((Some(86_400), true))
        );
        for bad in ["0", "-5", "1.5", "ten", "99999999999999999999"] {
            assert_eq!(
                parsed(format!("coffer-expires-in {}", b64(bad))),
                Err(()),
                "{bad}"
            );
        }
        assert_eq!(
            parsed("coffer-expires-in 86400".into()),
            Err(()),
            "not base64 text"
        );
    }

    #[test]
    fn metadata_pairs_wraps_and_bounds() {
        let b64 = |s: &[u8]| base64::engine::general_purpose::STANDARD.encode(s);
        let value = format!(
            "filename {}, coffer-e2ee,coffer-file-id {},coffer-wrap.bob {}",
            b64(b"a.txt"),
            b64(b"00ff"),
            b64(&[1, 2, 3])
        );
        let meta = Metadata::parse(&value).unwrap();
        assert!(meta.has(E2EE_KEY));
        assert!(!meta.has("coffer"));
        assert_eq!(meta.text(FILE_ID_KEY).unwrap().as_deref(), Some("00ff"));
        assert_eq!(meta.text("absent").unwrap(), None);
        assert_eq!(
            meta.wraps().unwrap(),
            vec![("bob".to_string(), vec![1, 2, 3])]
        );
        let twice = format!("coffer-wrap.bob {0},coffer-wrap.bob {0}", b64(b"x"));
        assert!(Metadata::parse(&twice).unwrap().wraps().is_err());
        assert!(
            Metadata::parse("coffer-wrap.bob !!!")
                .unwrap()
                .wraps()
                .is_err()
        );
        assert!(
            Metadata::parse("coffer-file-id ***")
                .unwrap()
                .text(FILE_ID_KEY)
                .is_err()
        );
        assert!(Metadata::parse(&"a".repeat(MAX_METADATA + 1)).is_err());
    }
}
