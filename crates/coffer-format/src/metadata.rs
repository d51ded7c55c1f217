//! The encrypted metadata block: a UTF-8 JSON object, so another
//! implementation needs no custom codec. It travels only encrypted, so names
//! never appear in clear.
//!
//! Decoding is strict (docs/FORMAT.md §8): the block must be one JSON
//! object; no member may appear twice; a known member must have exactly
//! its type (`null` is not "absent"; `1.0` is not an integer); integers
//! must fit their range. Unknown members are ignored (whatever their
//! value), so later versions can add members.

use serde::de::{self, Deserializer, MapAccess, Visitor};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::header::MAX_METADATA_LEN;
use crate::{Error, Result};

/// What the sender says about the plaintext. All fields are optional: a
/// stream from stdin has no name, size or modification time.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Metadata {
    /// Original file name (a name only, no directories). Untrusted on read:
    /// callers must sanitize it before using it as a path.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Relative path inside an uploaded tree, `/`-separated. Untrusted on
    /// read, like `name`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    /// Plaintext size in bytes, when known in advance. The signed length is
    /// authoritative; readers check the two agree.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub size: Option<u64>,
    /// Modification time, seconds since the Unix epoch.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mtime: Option<i64>,
    /// MIME type, if the sender knows it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub content_type: Option<String>,
    /// BLAKE3-256 of the plaintext, 64 lowercase hex digits, when the
    /// sender hashed it first (`put --skip-existing` recognises a file it
    /// already uploaded by it). Only key holders ever see it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub content_blake3: Option<String>,
    /// The id of the upload link (file request) the file was sent through,
    /// written by the link's page. Readers compare it with the link the
    /// server says the file came through.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request: Option<String>,
    /// The name an upload link's sender typed in: their own claim, not
    /// authenticated by anything (the sender key of such a file is a
    /// one-time key).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from: Option<String>,
}

/// Largest `size` (the format's lengths are signed 64-bit quantities in
/// some languages; 2^63 − 1 bytes is far beyond any file).
const MAX_SIZE: u64 = i64::MAX as u64;

impl Metadata {
    pub(crate) fn encode(&self) -> Result<Vec<u8>> {
        if self.size.is_some_and(|size| size > MAX_SIZE) {
            return Err(Error::InvalidMetadata("size out of range"));
        }
        if self
            .content_blake3
            .as_deref()
            .is_some_and(|h| !is_digest_hex(h))
        {
            return Err(Error::InvalidMetadata(
                "content_blake3 is not 64 lowercase hex digits",
            ));
        }
        let bytes =
            serde_json::to_vec(self).map_err(|_| Error::InvalidMetadata("not serializable"))?;
        if bytes.len() > MAX_METADATA_LEN {
            return Err(Error::InvalidMetadata("larger than 64 KiB"));
        }
        Ok(bytes)
    }

    pub(crate) fn decode(bytes: &[u8]) -> Result<Self> {
        if bytes.len() > MAX_METADATA_LEN {
            return Err(Error::InvalidMetadata("larger than 64 KiB"));
        }
        let mut de = serde_json::Deserializer::from_slice(bytes);
        let members = de
            .deserialize_map(StrictObject)
            .map_err(|_| Error::InvalidMetadata("not one JSON object with distinct members"))?;
        de.end()
            .map_err(|_| Error::InvalidMetadata("text after the JSON object"))?;
        let mut metadata = Metadata::default();
        for (key, value) in members {
            match key.as_str() {
                "name" => metadata.name = Some(string(value)?),
                "path" => metadata.path = Some(string(value)?),
                "content_type" => metadata.content_type = Some(string(value)?),
                "request" => metadata.request = Some(string(value)?),
                "from" => metadata.from = Some(string(value)?),
                "content_blake3" => {
                    let hex = string(value)?;
                    if !is_digest_hex(&hex) {
                        return Err(Error::InvalidMetadata(
                            "content_blake3 is not 64 lowercase hex digits",
                        ));
                    }
                    metadata.content_blake3 = Some(hex);
                }
                "size" => {
                    metadata.size = Some(
                        value
                            .as_u64()
                            .filter(|size| *size <= MAX_SIZE)
                            .ok_or(Error::InvalidMetadata("size is not an integer 0 to 2^63-1"))?,
                    )
                }
                "mtime" => {
                    metadata.mtime = Some(
                        value
                            .as_i64()
                            .ok_or(Error::InvalidMetadata("mtime is not a 64-bit integer"))?,
                    )
                }
                _ => {}
            }
        }
        Ok(metadata)
    }
}

fn is_digest_hex(text: &str) -> bool {
    text.len() == 64 && text.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

fn string(value: Value) -> Result<String> {
    match value {
        Value::String(text) => Ok(text),
        _ => Err(Error::InvalidMetadata("a text member is not a string")),
    }
}

/// Deserializes a JSON object into its members in order, refusing a
/// member name that repeats (serde_json's own maps keep the last).
struct StrictObject;

impl<'de> Visitor<'de> for StrictObject {
    type Value = Vec<(String, Value)>;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a JSON object")
    }

    fn visit_map<A: MapAccess<'de>>(
        self,
        mut map: A,
    ) -> std::result::Result<Self::Value, A::Error> {
        let mut members: Vec<(String, Value)> = Vec::new();
        while let Some(key) = map.next_key::<String>()? {
            if members.iter().any(|(seen, _)| *seen == key) {
                return Err(de::Error::custom("duplicate member"));
            }
            let value = map.next_value::<Value>()?;
            members.push((key, value));
        }
        Ok(members)
    }
}

impl<'de> Deserialize<'de> for Metadata {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> std::result::Result<Self, D::Error> {
        let value = Value::deserialize(deserializer)?;
        let bytes = serde_json::to_vec(&value).map_err(de::Error::custom)?;
        Metadata::decode(&bytes).map_err(de::Error::custom)
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
        let future = br#"{"name":"a","color":"blue","nested":{"x":[1,null]}}"#;
        assert_eq!(Metadata::decode(future).unwrap().name.as_deref(), Some("a"));
        assert_eq!(Metadata::decode(b" {} ").unwrap(), Metadata::default());
    }

    #[test]
    fn strict_json_rules() {
        for bad in [
            &b"[1,2]"[..],
            br#"["report.pdf", null, 42]"#,
            br#"{"name":"a","name":"b"}"#,
            br#"{"x":1,"x":2}"#,
            br#"{"name":null}"#,
            br#"{"name":5}"#,
            br#"{"size":-1}"#,
            br#"{"size":1.0}"#,
            br#"{"size":1e3}"#,
            br#"{"size":9223372036854775808}"#,
            br#"{"mtime":9223372036854775808}"#,
            br#"{"mtime":"1"}"#,
            br#"{"content_type":true}"#,
            br#"{"request":5}"#,
            br#"{"from":null}"#,
            br#"{"content_blake3":5}"#,
            br#"{"content_blake3":"abc"}"#,
            br#"{"content_blake3":"AF1349B9F5F9A1A6A0404DEA36DCC9499BCB25C9ADC112B7CC9A93CAE41F3262"}"#,
            br#"{"content_blake3":"zf1349b9f5f9a1a6a0404dea36dcc9499bcb25c9adc112b7cc9a93cae41f3262"}"#,
            br#"{} {}"#,
            br#"{"name":"\ud800"}"#,
            b"{\"name\":\"\xff\"}",
            b"null",
            b"",
        ] {
            assert!(
                Metadata::decode(bad).is_err(),
                "{}",
                String::from_utf8_lossy(bad)
            );
        }
        let hashed = br#"{"content_blake3":"af1349b9f5f9a1a6a0404dea36dcc9499bcb25c9adc112b7cc9a93cae41f3262"}"#;
        let meta = Metadata::decode(hashed).unwrap();
        assert_eq!(Metadata::decode(&meta.encode().unwrap()).unwrap(), meta);
        let bad = Metadata {
            content_blake3: Some("XYZ".into()),
            ..Metadata::default()
        };
        assert!(
            bad.encode().is_err(),
            "a writer cannot produce what readers refuse"
        );
        let ok = Metadata::decode(br#"{"size":9223372036854775807,"mtime":-5}"#).unwrap();
        assert_eq!((ok.size, ok.mtime), (Some(i64::MAX as u64), Some(-5)));
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
