//! Signed upload receipts: the server's Ed25519 statement that it committed
//! exactly these bytes for this uploader at this time. Verifiable later by
//! anyone holding the pinned server identity.
//!
//! `signature = Ed25519(server, "coffer/v1/receipt\0" || JSON(receipt))`
//! where JSON is the receipt object with its fields in the order below,
//! as serde_json writes them (no whitespace).

use base64::Engine as _;
use coffer_format::{Identity, PublicIdentity};
use serde::{Deserialize, Serialize};

const LABEL: &[u8] = b"coffer/v1/receipt\0";

/// What the server attests.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Receipt {
    /// The committed file's id.
    pub file_id: String,
    /// Size in bytes.
    pub size: u64,
    /// SHA-256 of the stored bytes, hex: receipts of coffer v1 objects.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sha256: Option<String>,
    /// The content identity, `<algorithm>:<hex>`: `coffer2-root:` for an
    /// end-to-end encrypted coffer v2 object (the signed tree root the
    /// uploader computed too), `blake3:` of the bytes a plain upload sent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub content: Option<String>,
    /// Who uploaded it.
    pub uploader: String,
    /// Unix time of the commit.
    pub time: i64,
    /// The signing server's public identity.
    pub server: String,
}

/// A receipt with the server's signature (base64url, no padding).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SignedReceipt {
    /// The statement.
    pub receipt: Receipt,
    /// Signature over it.
    pub signature: String,
}

fn message(receipt: &Receipt) -> Vec<u8> {
    let json = serde_json::to_vec(receipt).expect("receipt serializes");
    [LABEL, &json].concat()
}

impl SignedReceipt {
    /// Signs `receipt` with the server identity.
    pub fn sign(receipt: Receipt, server: &Identity) -> Self {
        let signature = server.sign(&message(&receipt));
        Self {
            receipt,
            signature: crate::b64().encode(signature),
        }
    }

    /// Checks the signature against the pinned server identity.
    pub fn verify(&self, server: &PublicIdentity) -> bool {
        let Ok(bytes) = crate::b64().decode(&self.signature) else {
            return false;
        };
        let Ok(signature) = <[u8; 64]>::try_from(bytes.as_slice()) else {
            return false;
        };
        self.receipt.server == server.to_string()
            && server.verify(&message(&self.receipt), &signature).is_ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn receipts_verify_only_unchanged_and_only_for_their_server() {
        let server = Identity::generate().unwrap();
        let receipt = Receipt {
            file_id: "ab".repeat(16),
            size: 42,
            sha256: None,
            content: Some(format!("coffer2-root:{}", "00".repeat(32))),
            uploader: "alice".into(),
            time: 1_795_000_000,
            server: server.public().to_string(),
        };
        let signed = SignedReceipt::sign(receipt, &server);
        assert!(signed.verify(server.public()));
        let mut bigger = signed.clone();
        bigger.receipt.size = 43;
        assert!(!bigger.verify(server.public()));
        assert!(!signed.verify(Identity::generate().unwrap().public()));
        let mut garbled = signed.clone();
        garbled.signature = "!!".into();
        assert!(!garbled.verify(server.public()));
    }

    /// A receipt signed before `content` existed still verifies: the
    /// absent field is not serialized, so the signed JSON is unchanged.
    #[test]
    fn version_1_receipts_keep_verifying() {
        let server = Identity::generate_classic().unwrap();
        let old = format!(
            r#"{{"file_id":"{}","size":1,"sha256":"{}","uploader":"a","time":2,"server":"{}"}}"#,
            "ab".repeat(16),
            "00".repeat(32),
            server.public()
        );
        let signature = server.sign(&[LABEL, old.as_bytes()].concat());
        let receipt: Receipt = serde_json::from_str(&old).unwrap();
        let signed = SignedReceipt {
            receipt,
            signature: crate::b64().encode(signature),
        };
        assert!(signed.verify(server.public()));
    }
}
