//! Test vectors in `testdata/v1/`, shared with other implementations.
//!
//! `manifest.json` lists each file, the identity that opens it, and either
//! the expected plaintext, sender and metadata, or the expected failure.
//! `decode_committed_vectors` checks them on every run; regenerate with
//! `cargo test -p coffer-format --test vectors -- --ignored` (only when the
//! format changes on purpose: other implementations depend on these bytes).

mod common;

use std::fs;
use std::path::PathBuf;

use coffer_format::{EncryptOptions, ErrorKind, Identity, Metadata, Stanzas, prepare};
use serde_json::{Value, json};

fn dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../testdata/v1")
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn kind_name(kind: ErrorKind) -> &'static str {
    match kind {
        ErrorKind::NotCoffer => "not-coffer",
        ErrorKind::Unsupported => "unsupported",
        ErrorKind::WrongKey => "wrong-key",
        ErrorKind::Tampered => "tampered",
        ErrorKind::Truncated => "truncated",
        ErrorKind::Io => "io",
        ErrorKind::Usage => "usage",
    }
}

fn load_identity(name: &str) -> Identity {
    let text = fs::read_to_string(dir().join(name)).unwrap();
    Identity::from_file_string(&text, None).unwrap()
}

#[test]
fn decode_committed_vectors() {
    let manifest: Value =
        serde_json::from_slice(&fs::read(dir().join("manifest.json")).unwrap()).unwrap();
    let vectors = manifest["vectors"].as_array().unwrap();
    assert!(vectors.len() >= 8, "manifest lost vectors");
    for v in vectors {
        let name = v["file"].as_str().unwrap();
        let file = fs::read(dir().join(name)).unwrap();
        let identity = load_identity(v["identity"].as_str().unwrap());
        let mut out = Vec::new();
        let result = coffer_format::decrypt(&identity, &file[..], &mut out);
        match v["expect"].as_str().unwrap() {
            "ok" => {
                let verified = result.unwrap_or_else(|e| panic!("{name}: {e}"));
                assert_eq!(hex(&out), v["plaintext_hex"].as_str().unwrap(), "{name}");
                assert_eq!(
                    hex(&verified.plaintext_sha256),
                    v["plaintext_sha256"],
                    "{name}"
                );
                assert_eq!(
                    verified.sender.to_string(),
                    v["sender"].as_str().unwrap(),
                    "{name}"
                );
                let metadata: Metadata = serde_json::from_value(v["metadata"].clone()).unwrap();
                assert_eq!(verified.metadata, metadata, "{name}");
            }
            "error" => {
                let err = result.err().unwrap_or_else(|| panic!("{name} decrypted"));
                assert_eq!(
                    kind_name(err.kind()),
                    v["error"].as_str().unwrap(),
                    "{name}: {err}"
                );
            }
            other => panic!("unknown expectation {other}"),
        }
    }
}

fn seal(
    sender: &Identity,
    to: &[&Identity],
    plain: &[u8],
    chunk: u32,
    metadata: Metadata,
) -> Vec<u8> {
    let recipients: Vec<_> = to.iter().map(|id| id.public().clone()).collect();
    let mut options = EncryptOptions::new(&recipients, sender);
    options.chunk_size = chunk;
    options.metadata = metadata;
    let mut w = prepare(options)
        .unwrap()
        .writer(Vec::new(), Stanzas::Embedded)
        .unwrap();
    std::io::Write::write_all(&mut w, plain).unwrap();
    w.finish().unwrap().0
}

#[test]
#[ignore = "rewrites testdata/v1; run only when the format changes on purpose"]
fn regenerate_vectors() {
    let d = dir();
    fs::create_dir_all(&d).unwrap();
    let alice = Identity::generate().unwrap();
    let bob = Identity::generate().unwrap();
    let carol = Identity::generate().unwrap();
    for (name, id) in [("alice", &alice), ("bob", &bob), ("carol", &carol)] {
        let text = id
            .to_file_string(None, "test vector: not a secret")
            .unwrap();
        fs::write(d.join(format!("{name}.identity")), text.as_bytes()).unwrap();
    }
    let mut vectors = Vec::new();
    let mut ok = |file: &str,
                  identity: &str,
                  plain: &[u8],
                  bytes: &[u8],
                  metadata: &Metadata,
                  note: &str| {
        fs::write(d.join(file), bytes).unwrap();
        let sha = aws_lc_sha256(plain);
        vectors.push(json!({
            "file": file, "identity": identity, "expect": "ok", "note": note,
            "plaintext_hex": hex(plain), "plaintext_sha256": hex(&sha),
            "sender": alice.public().to_string(), "metadata": metadata,
        }));
    };
    let meta = Metadata {
        name: Some("hello.txt".into()),
        size: Some(14),
        mtime: Some(1_795_000_000),
        content_type: Some("text/plain".into()),
        path: None,
    };
    let hello = seal(&alice, &[&bob], b"hello, coffer\n", 256, meta.clone());
    ok(
        "hello.coffer",
        "bob.identity",
        b"hello, coffer\n",
        &hello,
        &meta,
        "one recipient, one chunk, full metadata",
    );
    let empty = seal(&alice, &[&bob], b"", 256, Metadata::default());
    ok(
        "empty.coffer",
        "bob.identity",
        b"",
        &empty,
        &Metadata::default(),
        "empty plaintext: one empty final chunk",
    );
    let multi_plain = common::data(1000, 42);
    let multi = seal(
        &alice,
        &[&bob, &carol],
        &multi_plain,
        256,
        Metadata::default(),
    );
    ok(
        "multi.coffer",
        "bob.identity",
        &multi_plain,
        &multi,
        &Metadata::default(),
        "two recipients, 4 chunks (256, 256, 256, 232)",
    );
    ok(
        "multi.coffer",
        "carol.identity",
        &multi_plain,
        &multi,
        &Metadata::default(),
        "same file, second recipient",
    );
    let exact_plain = common::data(512, 7);
    let exact = seal(&alice, &[&bob], &exact_plain, 256, Metadata::default());
    ok(
        "exact.coffer",
        "bob.identity",
        &exact_plain,
        &exact,
        &Metadata::default(),
        "plaintext a multiple of the chunk size: the final chunk is full",
    );

    let mut bad = |file: &str, identity: &str, bytes: Vec<u8>, error: &str, note: &str| {
        fs::write(d.join(file), &bytes).unwrap();
        vectors.push(json!({"file": file, "identity": identity, "expect": "error", "error": error, "note": note}));
    };
    bad(
        "wrong-key.coffer",
        "alice.identity",
        hello.clone(),
        "wrong-key",
        "alice is not a recipient",
    );
    let mut flipped = hello.clone();
    flipped[120] ^= 0x01;
    bad(
        "header-bitflip.coffer",
        "bob.identity",
        flipped,
        "tampered",
        "bit flipped in the encrypted metadata",
    );
    let header_len = multi.len() - 120 - (3 * 272 + 248);
    let mut swapped = multi[..header_len].to_vec();
    swapped.extend_from_slice(&multi[header_len + 272..header_len + 544]);
    swapped.extend_from_slice(&multi[header_len..header_len + 272]);
    swapped.extend_from_slice(&multi[header_len + 544..]);
    bad(
        "swapped.coffer",
        "bob.identity",
        swapped,
        "tampered",
        "chunks 0 and 1 swapped",
    );
    bad(
        "truncated.coffer",
        "bob.identity",
        multi[..header_len + 2 * 272].to_vec(),
        "truncated",
        "cut after chunk 1",
    );
    let mut no_final = multi[..header_len + 3 * 272].to_vec();
    no_final.extend_from_slice(&multi[multi.len() - 120..]);
    bad(
        "dropped-final.coffer",
        "bob.identity",
        no_final,
        "truncated",
        "final chunk removed, trailer kept",
    );
    let mut trailer = exact.clone();
    let at = trailer.len() - 60;
    trailer[at] ^= 0x80;
    bad(
        "trailer-bitflip.coffer",
        "bob.identity",
        trailer,
        "tampered",
        "bit flipped in the sealed trailer",
    );
    let mut version = hello.clone();
    version[9] = 2;
    bad(
        "version2.coffer",
        "bob.identity",
        version,
        "unsupported",
        "format version 2",
    );
    bad(
        "not-coffer.coffer",
        "bob.identity",
        b"age-encryption.org/v1\n".to_vec(),
        "not-coffer",
        "another format",
    );

    let manifest = json!({
        "format": "coffer v1 (docs/FORMAT.md)",
        "identities": ["alice.identity", "bob.identity", "carol.identity"],
        "vectors": vectors,
    });
    fs::write(
        d.join("manifest.json"),
        serde_json::to_vec_pretty(&manifest).unwrap(),
    )
    .unwrap();
}

fn aws_lc_sha256(data: &[u8]) -> [u8; 32] {
    let mut out = [0u8; 32];
    out.copy_from_slice(aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, data).as_ref());
    out
}
