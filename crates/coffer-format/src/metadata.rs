//! The encrypted metadata block: a UTF-8 JSON object, so another
//! implementation needs no custom codec. It travels only encrypted, so names
//! never appear in clear. Unknown fields are ignored on read, so later
//! versions can add fields without a format version bump.

use serde::{Deserialize, Serialize};

use crate::header::MAX_METADATA_LEN;
use crate::{Error, Result};

/// What the sender says about the plaintext. All fields are optional: a
/// stream from stdin has no name, size or modification time.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Metadata {
    /// Original file name (a name only, no directories). Untrusted on read:
    /// callers must sanitize it before using it as a path.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Relative path inside an uploaded tree, `/`-separated. Untrusted on
    /// read, like `name`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    /// Plaintext size in bytes, when known in advance. The trailer's signed
    /// length is authoritative; the decryptor checks the two agree.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub size: Option<u64>,
    /// Modification time, seconds since the Unix epoch.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mtime: Option<i64>,
    /// MIME type, if the sender knows it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub content_type: Option<String>,
}

impl Metadata {
    pub(crate) fn encode(&self) -> Result<Vec<u8>> {
        let bytes =
            serde_json::to_vec(self).map_err(|_| Error::InvalidMetadata("not serializable"))?;
        if bytes.len() > MAX_METADATA_LEN {
            return Err(Error::InvalidMetadata("larger than 64 KiB"));
        }
        Ok(bytes)
    }

    pub(crate) fn decode(bytes: &[u8]) -> Result<Self> {
        serde_json::from_slice(bytes).map_err(|_| Error::InvalidMetadata("not a JSON object"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_unknown_fields() {
        let meta = Metadata {
            name: Some("report.pdf".into()),
            size: Some(42),
            ..Metadata::default()
        };
        assert_eq!(Metadata::decode(&meta.encode().unwrap()).unwrap(), meta);
        let future = br#"{"name":"a","color":"blue"}"#;
        assert_eq!(Metadata::decode(future).unwrap().name.as_deref(), Some("a"));
        assert!(Metadata::decode(b"[1,2]").is_err());
    }

    #[test]
    fn oversized_metadata_is_refused() {
        let meta = Metadata {
            name: Some("x".repeat(MAX_METADATA_LEN)),
            ..Metadata::default()
        };
        assert!(meta.encode().is_err());
    }
}
