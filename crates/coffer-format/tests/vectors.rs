//! Test vectors shared with other implementations: `testdata/v1/` (read
//! forever, never written again) and `testdata/v2/`.
//!
//! Each directory's `manifest.json` lists files with the identity that opens
//! them and either the expected plaintext, sender and metadata, or the
//! expected error class; version 2's also lists range reads, identity files,
//! public identity strings, and known answers for the key schedule, the
//! content tree and the layout. `decode_*` check them on every run;
//! regenerate version 2 with
//! `cargo test -p coffer-format --test vectors -- --ignored` (only when the
//! format changes on purpose: other implementations depend on these bytes).

mod common;

use std::fs;
use std::io::Cursor;
use std::path::PathBuf;

use coffer_format::tree;
use coffer_format::{
    Content, Error, ErrorKind, Header, Identity, Metadata, PublicIdentity, RangeReader, Stanza,
};
use common::craft::{Craft, key_schedule, random, sender_field, sha256};
use serde_json::{Value, json};

fn dir(version: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../testdata")
        .join(version)
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex(text: &str) -> Vec<u8> {
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&text[i..i + 2], 16).unwrap())
        .collect()
}

fn kind_name(kind: ErrorKind) -> &'static str {
    match kind {
        ErrorKind::NotCoffer => "not-coffer",
        ErrorKind::Unsupported => "unsupported",
        ErrorKind::Malformed => "malformed",
        ErrorKind::WrongKey => "wrong-key",
        ErrorKind::Tampered => "tampered",
        ErrorKind::Truncated => "truncated",
        ErrorKind::Io => "io",
        ErrorKind::Usage => "usage",
    }
}

fn load_identity(version: &str, name: &str, passphrase: Option<&str>) -> Identity {
    let text = fs::read_to_string(dir(version).join(name)).unwrap();
    Identity::from_file_string(&text, passphrase.map(str::as_bytes)).unwrap()
}

fn manifest(version: &str) -> Value {
    serde_json::from_slice(&fs::read(dir(version).join("manifest.json")).unwrap()).unwrap()
}

/// The identity a vector names, with the passphrase the manifest gives it.
fn identity_of(manifest: &Value, version: &str, name: &str) -> Identity {
    let passphrase = manifest["identities"]
        .as_array()
        .unwrap()
        .iter()
        .find(|id| id["file"] == name || *id == name)
        .and_then(|id| id["passphrase"].as_str());
    load_identity(version, name, passphrase)
}

fn check_file_vector(version: &str, manifest: &Value, v: &Value) {
    let name = v["file"].as_str().unwrap();
    let file = fs::read(dir(version).join(name)).unwrap();
    let identity = identity_of(manifest, version, v["identity"].as_str().unwrap());
    let extra: Vec<Stanza> = v["stanzas"]
        .as_array()
        .map(|list| {
            list.iter()
                .map(|s| Stanza::from_detached(&unhex(s.as_str().unwrap())).unwrap())
                .collect()
        })
        .unwrap_or_default();
    let mut out = Vec::new();
    let mut input = &file[..];
    let result = Header::read_from(&mut input)
        .and_then(|h| h.open(&identity, &extra))
        .and_then(|opened| opened.decryptor(input)?.copy_to(&mut out));
    match v["expect"].as_str().unwrap() {
        "ok" => {
            let verified = result.unwrap_or_else(|e| panic!("{name}: {e}"));
            assert_eq!(hex(&out), v["plaintext_hex"].as_str().unwrap(), "{name}");
            if let Some(sender) = v["sender"].as_str() {
                let sender = PublicIdentity::parse(sender).unwrap();
                assert!(verified.sender.is(&sender), "{name}");
            }
            if let Some(fp) = v["sender_fingerprint"].as_str() {
                assert_eq!(verified.sender.fingerprint(), fp, "{name}");
            }
            let metadata: Metadata = serde_json::from_value(v["metadata"].clone()).unwrap();
            assert_eq!(verified.metadata, metadata, "{name}");
            match &verified.content {
                Content::V1 { plaintext_sha256 } => {
                    assert_eq!(hex(plaintext_sha256), v["plaintext_sha256"], "{name}")
                }
                Content::V2 { root, chunk_count } => {
                    assert_eq!(hex(root), v["root"], "{name}");
                    assert_eq!(*chunk_count, v["chunk_count"].as_u64().unwrap(), "{name}");
                    assert_eq!(hex(&verified.file_id), v["file_id"], "{name}");
                }
            }
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

#[test]
fn decode_committed_v1_vectors() {
    let m = manifest("v1");
    let vectors = m["vectors"].as_array().unwrap();
    assert!(vectors.len() >= 8, "manifest lost vectors");
    for v in vectors {
        check_file_vector("v1", &m, v);
    }
    // Version 1 is read forever, range reads included.
    let bob = load_identity("v1", "bob.identity", None);
    let file = fs::read(dir("v1").join("multi.coffer")).unwrap();
    let plain = unhex(
        vectors
            .iter()
            .find(|v| v["file"] == "multi.coffer")
            .unwrap()["plaintext_hex"]
            .as_str()
            .unwrap(),
    );
    let mut reader = RangeReader::open(Cursor::new(&file), &bob, &[]).unwrap();
    assert_eq!(reader.read_range(200, 900).unwrap(), &plain[200..900]);
}

#[test]
fn decode_committed_v2_vectors() {
    let m = manifest("v2");
    let files = m["files"].as_array().unwrap();
    assert!(files.len() >= 40, "manifest lost vectors");
    for class in [
        "not-coffer",
        "unsupported",
        "malformed",
        "wrong-key",
        "tampered",
        "truncated",
    ] {
        assert!(
            files.iter().any(|v| v["error"] == class),
            "no vector for {class}"
        );
    }
    for v in files {
        check_file_vector("v2", &m, v);
    }
}

#[test]
fn decode_committed_v2_range_vectors() {
    let m = manifest("v2");
    for v in m["ranges"].as_array().unwrap() {
        let name = v["file"].as_str().unwrap();
        let file = fs::read(dir("v2").join(name)).unwrap();
        let identity = identity_of(&m, "v2", v["identity"].as_str().unwrap());
        let (start, end) = (v["start"].as_u64().unwrap(), v["end"].as_u64().unwrap());
        let result = RangeReader::open(Cursor::new(&file), &identity, &[])
            .and_then(|mut r| r.read_range(start, end));
        match v["expect"].as_str().unwrap() {
            "ok" => assert_eq!(
                hex(&result.unwrap()),
                v["plaintext_hex"],
                "{name} {start}..{end}"
            ),
            _ => assert_eq!(
                kind_name(result.unwrap_err().kind()),
                v["error"].as_str().unwrap(),
                "{name} {start}..{end}"
            ),
        }
    }
}

#[test]
fn decode_committed_v2_key_vectors() {
    let m = manifest("v2");
    for v in m["identity_files"].as_array().unwrap() {
        let name = v["file"].as_str().unwrap();
        let text = fs::read_to_string(dir("v2").join(name)).unwrap();
        let result = Identity::from_file_string(&text, v["passphrase"].as_str().map(str::as_bytes));
        match v["expect"].as_str().unwrap() {
            "ok" => assert_eq!(result.unwrap().public().to_string(), v["public"], "{name}"),
            "error" => {
                let err = result.unwrap_err();
                let class = if matches!(err, Error::WrongPassphrase) {
                    "wrong-key"
                } else {
                    "invalid"
                };
                assert_eq!(class, v["error"], "{name}: {err}");
            }
            other => panic!("{other}"),
        }
    }
    for v in m["public_identities"].as_array().unwrap() {
        let text = v["text"].as_str().unwrap();
        let result = PublicIdentity::parse(text);
        match v["expect"].as_str().unwrap() {
            "ok" => {
                let id = result.unwrap();
                assert_eq!(id.fingerprint(), v["fingerprint"], "{}", v["note"]);
                assert_eq!(id.key_id().to_string(), v["key_id"], "{}", v["note"]);
                assert_eq!(hex(&sender_field(&id)), v["sender_field"], "{}", v["note"]);
            }
            _ => assert!(result.is_err(), "accepted: {}", v["note"]),
        }
    }
}

#[test]
fn known_answers_for_the_key_schedule_tree_and_layout() {
    let m = manifest("v2");
    for v in m["key_schedule"].as_array().unwrap() {
        let file_key: [u8; 32] = unhex(v["file_key"].as_str().unwrap()).try_into().unwrap();
        let salt: [u8; 32] = unhex(v["salt"].as_str().unwrap()).try_into().unwrap();
        let [payload, metadata, header] = key_schedule(&file_key, &salt);
        assert_eq!(hex(&payload), v["payload_key"]);
        assert_eq!(hex(&metadata), v["metadata_key"]);
        assert_eq!(hex(&header), v["header_key"]);
        // The committed file made with these keys opens with the reference.
        check_file_vector("v2", &m, &v["file_vector"]);
    }
    for v in m["tree"].as_array().unwrap() {
        let chunks: Vec<Vec<u8>> = v["sealed_chunks_hex"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| unhex(c.as_str().unwrap()))
            .collect();
        let mut builder = tree::TreeBuilder::new();
        let mut entries = Vec::new();
        for (i, chunk) in chunks.iter().enumerate() {
            let leaf = tree::leaf(i as u64, chunk);
            assert_eq!(hex(&leaf), v["leaves"][i], "leaf {i}");
            builder.push(leaf, &mut entries);
        }
        assert_eq!(hex(&entries), v["entries_hex"]);
        assert_eq!(hex(&builder.root().unwrap()), v["root"]);
    }
    for v in m["layouts"].as_array().unwrap() {
        let got = tree::layout_of(
            v["payload_len"].as_u64().unwrap(),
            v["sealed_chunk"].as_u64().unwrap(),
        );
        let want = v["chunk_count"]
            .as_u64()
            .map(|n| (n, v["final_len"].as_u64().unwrap()));
        assert_eq!(got, want, "{v}");
    }
}

#[test]
fn the_crafter_agrees_with_the_reference() {
    let alice = Identity::generate().unwrap();
    let bob = Identity::generate_classic().unwrap();
    let plain = common::data(3000, 1);
    let crafted = Craft::new(&alice, vec![bob.public().clone()], &plain, 256).build();
    let mut out = Vec::new();
    let verified = coffer_format::decrypt(&bob, &crafted.file[..], &mut out).unwrap();
    assert_eq!(out, plain);
    assert_eq!(
        verified.content,
        Content::V2 {
            root: crafted.root,
            chunk_count: 12
        }
    );
    assert!(verified.sender.is(alice.public()));
}

// ---------------------------------------------------------------------------
// Regeneration of testdata/v2.

struct Writer {
    dir: PathBuf,
    files: Vec<Value>,
}

impl Writer {
    fn put(&mut self, file: &str, bytes: &[u8]) {
        fs::write(self.dir.join(file), bytes).unwrap();
    }

    /// An "ok" vector: `made` is the crafted file and who signed it.
    fn ok(
        &mut self,
        file: &str,
        identity: &str,
        made: (&common::craft::Crafted, &Identity),
        plain: &[u8],
        meta: &Value,
        note: &str,
    ) -> Value {
        let (crafted, sender) = made;
        let bytes = &crafted.file;
        self.put(file, bytes);
        let (header, _) = Header::parse(bytes).unwrap();
        let root = &crafted.root;
        let chunks = common::layout(bytes, header.core().chunk_size).chunks.len();
        let v = json!({
            "file": file, "identity": identity, "expect": "ok", "note": note,
            "plaintext_hex": hex(plain), "metadata": meta, "root": hex(root),
            "chunk_count": chunks, "file_id": hex(&header.core().file_id),
            "sender": sender.public().to_string(), "sender_fingerprint": sender.public().fingerprint(),
        });
        self.files.push(v.clone());
        v
    }

    fn bad(&mut self, file: &str, identity: &str, bytes: &[u8], error: &str, note: &str) {
        self.put(file, bytes);
        self.files.push(json!({"file": file, "identity": identity, "expect": "error", "error": error, "note": note}));
    }
}

fn chunked(plain: &[u8], sizes: &[usize]) -> Vec<Vec<u8>> {
    let mut at = 0;
    sizes
        .iter()
        .map(|&size| {
            let chunk = plain[at..at + size].to_vec();
            at += size;
            chunk
        })
        .collect()
}

fn set(bytes: &[u8], at: usize, value: &[u8]) -> Vec<u8> {
    let mut out = bytes.to_vec();
    out[at..at + value.len()].copy_from_slice(value);
    out
}

#[test]
#[ignore = "rewrites testdata/v2; run only when the format changes on purpose"]
fn regenerate_v2_vectors() {
    let d = dir("v2");
    let _ = fs::remove_dir_all(&d);
    fs::create_dir_all(&d).unwrap();
    let mut w = Writer {
        dir: d.clone(),
        files: Vec::new(),
    };

    // Identities: alice (hybrid sender), bob (classic), carol (hybrid),
    // dave (hybrid, passphrase-protected).
    let alice = Identity::generate().unwrap();
    let bob = Identity::generate_classic().unwrap();
    let carol = Identity::generate().unwrap();
    let dave = Identity::generate().unwrap();
    let dave_pass = "gänse füßchen";
    let mut identities = Vec::new();
    for (name, id, pass) in [
        ("alice", &alice, None),
        ("bob", &bob, None),
        ("carol", &carol, None),
        ("dave", &dave, Some(dave_pass)),
    ] {
        let file = format!("{name}.identity");
        let text = id
            .to_file_string(pass.map(str::as_bytes), "test vector: not a secret")
            .unwrap();
        w.put(&file, text.as_bytes());
        identities.push(json!({"file": file, "passphrase": pass, "public": id.public().to_string(), "fingerprint": id.public().fingerprint()}));
    }

    let chunk = 256u32;
    let meta_full = json!({"name": "hello.txt", "size": 14, "mtime": 1_795_000_000, "content_type": "text/plain"});
    let hello_plain = b"hello, coffer\n";
    let mut hello = Craft::new(&alice, vec![bob.public().clone()], hello_plain, chunk);
    hello.metadata = serde_json::to_vec(&meta_full).unwrap();
    let hello = hello.build();
    w.ok(
        "hello.coffer",
        "bob.identity",
        (&hello, &alice),
        hello_plain,
        &meta_full,
        "one classic recipient, one chunk, full metadata, hybrid sender",
    );

    let empty = Craft::new(&alice, vec![bob.public().clone()], b"", chunk).build();
    w.ok(
        "empty.coffer",
        "bob.identity",
        (&empty, &alice),
        b"",
        &json!({}),
        "empty plaintext: one empty final chunk",
    );

    let multi_plain = common::data(1000, 42);
    let multi = Craft::new(
        &alice,
        vec![bob.public().clone(), carol.public().clone()],
        &multi_plain,
        chunk,
    )
    .build();
    w.ok(
        "multi.coffer",
        "bob.identity",
        (&multi, &alice),
        &multi_plain,
        &json!({}),
        "a classic and a hybrid recipient, 4 chunks (256, 256, 256, 232)",
    );
    w.ok(
        "multi.coffer",
        "carol.identity",
        (&multi, &alice),
        &multi_plain,
        &json!({}),
        "same file, the hybrid recipient (X-Wing stanza)",
    );

    let exact_plain = common::data(768, 7);
    let exact = Craft::new(&bob, vec![bob.public().clone()], &exact_plain, chunk).build();
    w.ok(
        "exact.coffer",
        "bob.identity",
        (&exact, &bob),
        &exact_plain,
        &json!({}),
        "plaintext a multiple of the chunk size: the final chunk is full; classic sender",
    );

    let many_plain = common::data(9 * 256 + 10, 8);
    let many = Craft::new(&alice, vec![carol.public().clone()], &many_plain, chunk).build();
    w.ok(
        "many.coffer",
        "carol.identity",
        (&many, &alice),
        &many_plain,
        &json!({}),
        "10 chunks: subtree roots of 2, 4 and 8 leaves stored between them",
    );

    let mut detached = Craft::new(
        &alice,
        vec![carol.public().clone(), bob.public().clone()],
        &multi_plain,
        chunk,
    );
    detached.embedded = false;
    let detached = detached.build();
    let mut v = w.ok(
        "detached.coffer",
        "carol.identity",
        (&detached, &alice),
        &multi_plain,
        &json!({}),
        "a detached object (stanza count 0) and its stanzas in their wire form",
    );
    v["stanzas"] = json!(detached.stanzas.iter().map(|s| hex(s)).collect::<Vec<_>>());
    *w.files.last_mut().unwrap() = v;
    w.bad(
        "detached-alone.coffer",
        "carol.identity",
        &detached.file,
        "wrong-key",
        "the detached object without its stanzas",
    );

    let mut bogus = Craft::new(&alice, vec![bob.public().clone()], hello_plain, chunk);
    let decoy =
        coffer_format::recipient::wrap_file_key(&FileKeyOf::random(), &[0; 32], bob.public())
            .unwrap();
    bogus.extra_stanzas = vec![decoy.to_bytes(), vec![0x7e, 0, 3, 1, 2, 3]];
    let bogus = bogus.build();
    w.ok("bogus-stanza-first.coffer", "bob.identity", (&bogus, &alice), hello_plain, &json!({}),
        "a stanza for bob's key id that opens to another key, then an unknown type (0x7e), then the real one");

    let mut unknown_only = Craft::new(&alice, vec![], hello_plain, chunk);
    unknown_only.extra_stanzas = vec![vec![0x7e, 0, 3, 1, 2, 3]];
    w.bad(
        "unknown-stanza-only.coffer",
        "bob.identity",
        &unknown_only.build().file,
        "wrong-key",
        "only a stanza of an unknown type: skipped, so nothing for bob",
    );

    let protected_plain = b"for dave only";
    let to_dave = Craft::new(&alice, vec![dave.public().clone()], protected_plain, chunk).build();
    w.ok(
        "to-dave.coffer",
        "dave.identity",
        (&to_dave, &alice),
        protected_plain,
        &json!({}),
        "to a passphrase-protected hybrid identity",
    );

    let future_meta = json!({"name": "a.csv", "future_member": {"nested": [1, null, "x"]}});
    let mut future = Craft::new(&alice, vec![bob.public().clone()], hello_plain, chunk);
    future.metadata = serde_json::to_vec(&future_meta).unwrap();
    let future = future.build();
    w.ok(
        "unknown-metadata-member.coffer",
        "bob.identity",
        (&future, &alice),
        hello_plain,
        &json!({"name": "a.csv"}),
        "metadata with a member this version does not know: ignored",
    );

    // Known answers for the key schedule, with the file they made.
    let file_key = [0x11u8; 32];
    let salt = [0x22u8; 32];
    let mut kat = Craft::new(&alice, vec![bob.public().clone()], hello_plain, chunk);
    kat.file_key = file_key;
    kat.salt = salt;
    kat.file_id = [0x33; 16];
    let kat = kat.build();
    let kat_vector = w.ok(
        "kat.coffer",
        "bob.identity",
        (&kat, &alice),
        hello_plain,
        &json!({}),
        "made with the key-schedule known answer's file key and salt",
    );
    let [pk, mk, hk] = key_schedule(&file_key, &salt);
    let key_schedule = json!([{"file_key": hex(&file_key), "salt": hex(&salt), "payload_key": hex(&pk),
        "metadata_key": hex(&mk), "header_key": hex(&hk), "file_vector": kat_vector}]);

    // --- errors: one class at a time -------------------------------------
    w.bad(
        "not-coffer.coffer",
        "bob.identity",
        b"age-encryption.org/v1\n",
        "not-coffer",
        "another format",
    );
    w.bad(
        "short.coffer",
        "bob.identity",
        &hello.file[..7],
        "not-coffer",
        "seven bytes: not even the magic",
    );
    w.bad(
        "version3.coffer",
        "bob.identity",
        &set(&hello.file, 8, &3u16.to_be_bytes()),
        "unsupported",
        "format version 3",
    );
    w.bad(
        "suite2.coffer",
        "bob.identity",
        &set(&hello.file, 10, &2u16.to_be_bytes()),
        "unsupported",
        "suite 2",
    );
    w.bad(
        "chunk-size-small.coffer",
        "bob.identity",
        &set(&hello.file, 12, &255u32.to_be_bytes()),
        "malformed",
        "chunk size 255",
    );
    w.bad(
        "chunk-size-large.coffer",
        "bob.identity",
        &set(&hello.file, 12, &(16 * 1024 * 1024 + 1u32).to_be_bytes()),
        "malformed",
        "chunk size 16 MiB + 1",
    );
    w.bad(
        "metadata-len-15.coffer",
        "bob.identity",
        &set(&hello.file, 160, &15u32.to_be_bytes()),
        "malformed",
        "metadata length 15 (< the tag)",
    );
    w.bad(
        "metadata-len-huge.coffer",
        "bob.identity",
        &set(&hello.file, 160, &(65_553u32).to_be_bytes()),
        "malformed",
        "metadata length 65 553",
    );
    let mut low = [0u8; 32];
    low[0] = 1;
    w.bad(
        "sender-small-order.coffer",
        "bob.identity",
        &set(&hello.file, 96, &low),
        "malformed",
        "the sender's X25519 key has small order",
    );
    let mut high = [0xffu8; 32];
    high[31] = 0x7f;
    high[0] = 0xee;
    w.bad(
        "sender-noncanonical-ed25519.coffer",
        "bob.identity",
        &set(&hello.file, 64, &high),
        "malformed",
        "the sender's Ed25519 key is not canonical (y >= p)",
    );
    let count_at = hello.header_len - 2 - hello.stanzas.iter().map(Vec::len).sum::<usize>();
    w.bad(
        "stanza-count-257.coffer",
        "bob.identity",
        &set(&hello.file, count_at, &257u16.to_be_bytes()),
        "malformed",
        "257 stanzas declared",
    );
    w.bad(
        "stanza-body-4097.coffer",
        "bob.identity",
        &set(&hello.file, count_at + 3, &4097u16.to_be_bytes()),
        "malformed",
        "a stanza body of 4 097 bytes",
    );
    let mut short_stanza = Craft::new(&alice, vec![bob.public().clone()], hello_plain, chunk);
    short_stanza.extra_stanzas = vec![vec![0x01, 0, 3, 1, 2, 3]];
    w.bad(
        "stanza-x25519-short.coffer",
        "bob.identity",
        &short_stanza.build().file,
        "malformed",
        "an X25519 stanza with a 3-byte body",
    );
    for (name, meta, note) in [
        (
            "metadata-array.coffer",
            &b"[\"hello.txt\", null, 14]"[..],
            "metadata is a JSON array",
        ),
        (
            "metadata-duplicate.coffer",
            br#"{"name":"a","name":"b"}"#,
            "a member twice",
        ),
        (
            "metadata-null.coffer",
            br#"{"name":null}"#,
            "a known member that is null",
        ),
        (
            "metadata-float.coffer",
            br#"{"size":14.0}"#,
            "size is not an integer",
        ),
        (
            "metadata-not-utf8.coffer",
            b"{\"name\":\"\xff\"}",
            "not UTF-8",
        ),
    ] {
        let mut c = Craft::new(&alice, vec![bob.public().clone()], hello_plain, chunk);
        c.metadata = meta.to_vec();
        w.bad(name, "bob.identity", &c.build().file, "malformed", note);
    }
    let mut size = Craft::new(&alice, vec![bob.public().clone()], hello_plain, chunk);
    size.metadata = br#"{"size":15}"#.to_vec();
    w.bad(
        "metadata-size-mismatch.coffer",
        "bob.identity",
        &size.build().file,
        "malformed",
        "metadata size 15, 14 bytes signed",
    );
    let mut empty_final = Craft::new(
        &alice,
        vec![bob.public().clone()],
        &multi_plain[..512],
        chunk,
    );
    empty_final.chunks = chunked(&multi_plain[..512], &[256, 256, 0]);
    w.bad(
        "empty-final-chunk.coffer",
        "bob.identity",
        &empty_final.build().file,
        "malformed",
        "an empty final chunk after two full ones, signed",
    );
    let mut short_middle = Craft::new(
        &alice,
        vec![bob.public().clone()],
        &multi_plain[..500],
        chunk,
    );
    short_middle.chunks = chunked(&multi_plain[..500], &[256, 100, 144]);
    w.bad(
        "short-middle-chunk.coffer",
        "bob.identity",
        &short_middle.build().file,
        "tampered",
        "a non-final chunk shorter than the chunk size",
    );

    w.bad(
        "wrong-key.coffer",
        "alice.identity",
        &hello.file,
        "wrong-key",
        "alice is not a recipient",
    );
    w.bad(
        "header-bitflip.coffer",
        "bob.identity",
        &set(&hello.file, 170, &[hello.file[170] ^ 1]),
        "tampered",
        "a bit flipped in the encrypted metadata",
    );
    w.bad(
        "file-id-changed.coffer",
        "bob.identity",
        &set(&hello.file, 16, &[hello.file[16] ^ 0x80]),
        "tampered",
        "the file id changed",
    );
    let stanza_at = count_at + 2;
    let last_stanza_byte = stanza_at + hello.stanzas[0].len() - 1;
    w.bad(
        "stanza-bitflip.coffer",
        "bob.identity",
        &set(
            &hello.file,
            last_stanza_byte,
            &[hello.file[last_stanza_byte] ^ 1],
        ),
        "tampered",
        "bob's stanza (key id intact) modified",
    );
    let lay = |f: &common::craft::Crafted| common::layout(&f.file, chunk);
    let ml = lay(&multi);
    let b = ml.chunks[1].start + 10;
    w.bad(
        "chunk-bitflip.coffer",
        "bob.identity",
        &set(&multi.file, b, &[multi.file[b] ^ 4]),
        "tampered",
        "a bit flipped in chunk 1",
    );
    let e = ml.entries[2].start + 3;
    w.bad(
        "entry-bitflip.coffer",
        "bob.identity",
        &set(&multi.file, e, &[multi.file[e] ^ 4]),
        "tampered",
        "a bit flipped in the stored leaf of chunk 2",
    );
    let mut swapped = multi.file[..ml.header_len].to_vec();
    for i in [1usize, 0, 2, 3] {
        swapped.extend_from_slice(&multi.file[ml.chunks[i].start..ml.entries[i].end]);
    }
    swapped.extend_from_slice(&multi.file[ml.trailer.clone()]);
    w.bad(
        "swapped.coffer",
        "bob.identity",
        &swapped,
        "tampered",
        "chunks 0 and 1 swapped (with their entries)",
    );
    let s = ml.trailer.start + 5;
    w.bad(
        "signature-bitflip.coffer",
        "bob.identity",
        &set(&multi.file, s, &[multi.file[s] ^ 1]),
        "tampered",
        "a bit flipped in the signature",
    );
    let mut by_bob = Craft::new(&alice, vec![bob.public().clone()], hello_plain, chunk);
    by_bob.signer = &bob;
    w.bad(
        "bad-signature.coffer",
        "bob.identity",
        &by_bob.build().file,
        "tampered",
        "the header names alice, bob signed",
    );
    let mut wrong_len = Craft::new(&alice, vec![bob.public().clone()], hello_plain, chunk);
    wrong_len.signed_len = Some(15);
    w.bad(
        "signed-length-differs.coffer",
        "bob.identity",
        &wrong_len.build().file,
        "tampered",
        "the signature covers another length",
    );
    // A co-recipient (bob) re-seals chunk 2 with other bytes and consistent
    // entries, keeping alice's signature.
    let mut forged_plain = multi_plain.clone();
    forged_plain[600] ^= 0xff;
    let mut forged = Craft::new(
        &alice,
        vec![bob.public().clone(), carol.public().clone()],
        &forged_plain,
        chunk,
    );
    forged.file_key = FileKeyOf::of(&multi.file, &bob);
    forged.salt = Header::parse(&multi.file).unwrap().0.core().salt;
    forged.file_id = Header::parse(&multi.file).unwrap().0.core().file_id;
    let forged = forged.build();
    let mut resealed = multi.file[..ml.header_len].to_vec();
    resealed.extend_from_slice(&forged.file[forged.header_len..forged.file.len() - 64]);
    resealed.extend_from_slice(&multi.file[ml.trailer.clone()]);
    w.bad(
        "co-recipient-reseal.coffer",
        "carol.identity",
        &resealed,
        "tampered",
        "bob (a recipient) re-sealed chunk 2 with valid tags and entries, alice's signature kept",
    );
    // Spliced variant, in a file of 10 chunks: only chunk 2 and its leaf
    // replaced, the honest subtree roots kept.
    let many_lay = lay(&many);
    let mut forged_many = many_plain.clone();
    forged_many[2 * 256 + 9] ^= 0xff;
    let (many_header, _) = Header::parse(&many.file).unwrap();
    let mut f = Craft::new(&alice, vec![carol.public().clone()], &forged_many, chunk);
    f.file_key = FileKeyOf::of(&many.file, &carol);
    f.salt = many_header.core().salt;
    f.file_id = many_header.core().file_id;
    let f = f.build();
    let fl = common::layout(&f.file, chunk);
    let mut spliced = many.file.clone();
    spliced[many_lay.chunks[2].start..many_lay.entries[2].end]
        .copy_from_slice(&f.file[fl.chunks[2].start..fl.entries[2].end]);
    w.bad("co-recipient-splice.coffer", "carol.identity", &spliced, "tampered",
        "a co-recipient's chunk 2 and its leaf in a file of 10 chunks: the next subtree root exposes it");

    w.bad(
        "truncated-header.coffer",
        "bob.identity",
        &hello.file[..100],
        "truncated",
        "cut inside the header",
    );
    w.bad(
        "truncated.coffer",
        "bob.identity",
        &multi.file[..ml.chunks[2].start],
        "truncated",
        "cut after chunk 1 and its entries",
    );
    w.bad(
        "truncated-before-entries.coffer",
        "bob.identity",
        &multi.file[..ml.chunks[1].end],
        "truncated",
        "cut after chunk 1, before its entries",
    );
    let mut dropped = multi.file[..ml.chunks[3].start].to_vec();
    dropped.extend_from_slice(&multi.file[ml.trailer.clone()]);
    w.bad(
        "dropped-final.coffer",
        "bob.identity",
        &dropped,
        "truncated",
        "final chunk and its entries removed, signature kept",
    );
    w.bad(
        "missing-trailer.coffer",
        "bob.identity",
        &multi.file[..ml.trailer.start],
        "truncated",
        "the signature is missing",
    );
    w.bad(
        "cut-in-trailer.coffer",
        "bob.identity",
        &multi.file[..ml.trailer.start + 30],
        "tampered",
        "cut inside the signature",
    );

    // Range reads.
    let mut ranges = Vec::new();
    for (start, end) in [
        (0u64, 10u64),
        (250, 260),
        (0, 2314),
        (2300, 2314),
        (1024, 1536),
        (5, 5),
    ] {
        ranges.push(
            json!({"file": "many.coffer", "identity": "carol.identity", "start": start, "end": end,
            "expect": "ok", "plaintext_hex": hex(&many_plain[start as usize..end as usize])}),
        );
    }
    ranges.push(json!({"file": "co-recipient-splice.coffer", "identity": "carol.identity", "start": 0, "end": 300, "expect": "ok", "plaintext_hex": hex(&many_plain[..300])}));
    ranges.push(json!({"file": "co-recipient-splice.coffer", "identity": "carol.identity", "start": 2100, "end": 2314, "expect": "ok", "plaintext_hex": hex(&many_plain[2100..])}));
    ranges.push(json!({"file": "co-recipient-splice.coffer", "identity": "carol.identity", "start": 520, "end": 530, "expect": "error", "error": "tampered"}));
    ranges.push(json!({"file": "co-recipient-splice.coffer", "identity": "carol.identity", "start": 800, "end": 810, "expect": "error", "error": "tampered", "note": "chunk 3 is honest, but its sibling entry is the forged leaf"}));
    ranges.push(json!({"file": "co-recipient-reseal.coffer", "identity": "carol.identity", "start": 0, "end": 10, "expect": "error", "error": "tampered"}));
    ranges.push(json!({"file": "dropped-final.coffer", "identity": "bob.identity", "start": 0, "end": 10, "expect": "error", "error": "tampered"}));

    // Identity files.
    let bob_text = fs::read_to_string(d.join("bob.identity")).unwrap();
    let dave_text = fs::read_to_string(d.join("dave.identity")).unwrap();
    let secret_line = |t: &str| t.lines().find(|l| !l.starts_with('#')).unwrap().to_string();
    let bob_secret = secret_line(&bob_text);
    let mut id_files = vec![
        json!({"file": "bob.identity", "passphrase": null, "expect": "ok", "public": bob.public().to_string()}),
        json!({"file": "alice.identity", "passphrase": null, "expect": "ok", "public": alice.public().to_string()}),
        json!({"file": "dave.identity", "passphrase": dave_pass, "expect": "ok", "public": dave.public().to_string()}),
        json!({"file": "dave.identity", "passphrase": "gänse füßchen ", "expect": "error", "error": "wrong-key", "note": "a trailing space: the passphrase is exact bytes"}),
    ];
    let nfd = "ga\u{308}nse fu\u{308}ßchen";
    id_files.push(json!({"file": "dave.identity", "passphrase": nfd, "expect": "error", "error": "wrong-key", "note": "the same passphrase in NFD: no normalisation"}));
    let mut variant = |name: &str, text: String, expect: &str, note: &str| {
        fs::write(d.join(name), text).unwrap();
        let mut v = json!({"file": name, "passphrase": null, "expect": expect, "note": note});
        if expect == "ok" {
            v["public"] = json!(bob.public().to_string());
        } else {
            v["error"] = json!("invalid");
        }
        id_files.push(v);
    };
    variant(
        "bob-crlf-bom.identity",
        format!("\u{feff}{}", bob_text.replace('\n', "\r\n")),
        "ok",
        "BOM and CRLF line ends",
    );
    variant(
        "bob-indented.identity",
        format!("\n\n  # comment\n\t{bob_secret}  \n\n"),
        "ok",
        "blank lines, indentation, trailing spaces",
    );
    variant(
        "bob-two-secrets.identity",
        format!("{bob_secret}\n{bob_secret}\n"),
        "error",
        "two secret lines",
    );
    variant(
        "bob-lowercase.identity",
        format!("{}\n", bob_secret.to_lowercase()),
        "ok",
        "the secret in lower case (one case throughout)",
    );
    let mut mixed = bob_secret.clone();
    mixed.replace_range(
        bob_secret.len() - 1..,
        &bob_secret[bob_secret.len() - 1..].to_lowercase(),
    );
    if mixed != bob_secret {
        variant(
            "bob-mixed-case.identity",
            format!("{mixed}\n"),
            "error",
            "mixed case",
        );
    }
    let secret_bytes = coffer_bech32_data(&bob_secret);
    variant(
        "bob-bech32m.identity",
        format!("{}\n", bech32m_upper("coffersecret", &secret_bytes)),
        "error",
        "a Bech32m checksum",
    );
    variant(
        "bob-padding.identity",
        format!("{}\n", nonzero_padding_upper("coffersecret", &secret_bytes)),
        "error",
        "non-zero padding bits",
    );
    let mut dave_line = secret_line(&dave_text);
    // Argon2 m = 2^31 KiB: refused before any hashing.
    use base64::Engine as _;
    let b64 = base64::engine::general_purpose::STANDARD_NO_PAD;
    let blob_at = dave_line.find(' ').unwrap() + 1;
    let mut blob = b64.decode(&dave_line[blob_at..]).unwrap();
    blob[..4].copy_from_slice(&(1u32 << 31).to_be_bytes());
    dave_line.replace_range(blob_at.., &b64.encode(&blob));
    fs::write(
        d.join("dave-argon2-huge.identity"),
        format!("{dave_line}\n"),
    )
    .unwrap();
    id_files.push(json!({"file": "dave-argon2-huge.identity", "passphrase": dave_pass, "expect": "error", "error": "invalid", "note": "Argon2 memory of 2^31 KiB: refused before hashing"}));

    // Public identity strings.
    let mut publics = Vec::new();
    for (id, note) in [(&bob, "classic"), (&alice, "hybrid")] {
        publics.push(
            json!({"text": id.public().to_string(), "expect": "ok", "note": note,
            "fingerprint": id.public().fingerprint(), "key_id": id.public().key_id().to_string(),
            "sender_field": hex(&sender_field(id.public()))}),
        );
    }
    let bob_raw = bob.public().to_bytes();
    let bad_public = |bytes: &[u8]| coffer_format_text_lower(bytes);
    let mut high_x = bob_raw.clone();
    high_x[63] |= 0x80;
    let mut p_plus = bob_raw.clone();
    p_plus[32..64].copy_from_slice(&{
        let mut p = [0xffu8; 32];
        p[0] = 0xed + 9;
        p[31] = 0x7f;
        p
    });
    let mut small = bob_raw.clone();
    small[32..64].copy_from_slice(&low);
    let mut ed_high = bob_raw.clone();
    ed_high[..32].copy_from_slice(&high);
    let mut bad_mlkem = alice.public().to_bytes();
    bad_mlkem[64..67].copy_from_slice(&[0xff, 0xff, 0xff]);
    for (text, note) in [
        (bech32m_lower("coffer", &bob_raw), "a Bech32m checksum"),
        (
            nonzero_padding_lower("coffer", &bob_raw),
            "non-zero padding bits",
        ),
        (
            bad_public(&high_x),
            "X25519 key with the top bit set (not canonical)",
        ),
        (bad_public(&p_plus), "X25519 key u = p + 9 (not canonical)"),
        (bad_public(&small), "X25519 key of small order"),
        (bad_public(&ed_high), "Ed25519 key not canonical"),
        (
            bad_public(&bad_mlkem),
            "X-Wing key with an ML-KEM coefficient >= 3329",
        ),
        (bad_public(&bob_raw[..63]), "63 bytes"),
        (
            bob.public().to_string().replace("coffer1", "cofer1"),
            "wrong prefix",
        ),
        (
            {
                let mut t = bob.public().to_string();
                t.replace_range(10..11, &t[10..11].to_uppercase());
                t
            },
            "mixed case",
        ),
    ] {
        publics.push(json!({"text": text, "expect": "error", "note": note}));
    }

    // The content tree.
    let tree_chunks: Vec<Vec<u8>> = (0..7u8).map(|i| vec![i; 16 + i as usize]).collect();
    let mut builder = tree::TreeBuilder::new();
    let mut entries = Vec::new();
    let mut leaves = Vec::new();
    for (i, c) in tree_chunks.iter().enumerate() {
        let leaf = tree::leaf(i as u64, c);
        leaves.push(hex(&leaf));
        builder.push(leaf, &mut entries);
    }
    let tree_kat = json!([{"sealed_chunks_hex": tree_chunks.iter().map(|c| hex(c)).collect::<Vec<_>>(),
        "leaves": leaves, "entries_hex": hex(&entries), "root": hex(&builder.root().unwrap()),
        "note": "seven chunks: entries are leaf 0; leaf 1, node(0..2); leaf 2; leaf 3, node(2..4), node(0..4); leaf 4; leaf 5, node(4..6); leaf 6"}]);
    let mut layouts = Vec::new();
    for (len, sealed) in [
        (16u64, 272u64),
        (272 + 32, 272),
        (272 + 32 + 16 + 64, 272),
        (272 + 32 + 16 + 64 + 1, 272),
        (15, 272),
        (0, 272),
        (272 + 32 + 15, 272),
        (10 * 272 + 32 * 20 - 8, 272),
    ] {
        let got = tree::layout_of(len, sealed);
        layouts.push(json!({"payload_len": len, "sealed_chunk": sealed, "chunk_count": got.map(|g| g.0), "final_len": got.map(|g| g.1)}));
    }

    let manifest = json!({
        "format": "coffer v2 (docs/FORMAT.md)",
        "identities": identities,
        "files": w.files,
        "ranges": ranges,
        "identity_files": id_files,
        "public_identities": publics,
        "key_schedule": key_schedule,
        "tree": tree_kat,
        "layouts": layouts,
    });
    fs::write(
        d.join("manifest.json"),
        serde_json::to_vec_pretty(&manifest).unwrap(),
    )
    .unwrap();
    let _ = (random::<1>, sha256);
}

/// Helpers that produce deliberately wrong encodings (through the
/// `bech32` crate, so only the rule under test is broken).
fn coffer_bech32_data(text: &str) -> Vec<u8> {
    let checked =
        bech32::primitives::decode::CheckedHrpstring::new::<bech32::Bech32>(text).unwrap();
    checked.byte_iter().collect()
}

fn bech32m_lower(hrp: &str, data: &[u8]) -> String {
    bech32::encode_lower::<LongBech32m>(bech32::Hrp::parse(hrp).unwrap(), data).unwrap()
}

fn bech32m_upper(hrp: &str, data: &[u8]) -> String {
    bech32m_lower(hrp, data).to_uppercase()
}

fn coffer_format_text_lower(data: &[u8]) -> String {
    bech32::encode_lower::<LongBech32>(bech32::Hrp::parse("coffer").unwrap(), data).unwrap()
}

fn nonzero_padding_lower(hrp: &str, data: &[u8]) -> String {
    use bech32::primitives::iter::{ByteIterExt, Fe32IterExt};
    let mut symbols: Vec<bech32::Fe32> = data.iter().copied().bytes_to_fes().collect();
    let last = symbols.len() - 1;
    symbols[last] = bech32::Fe32::try_from(symbols[last].to_u8() | 1).unwrap();
    symbols
        .into_iter()
        .with_checksum::<LongBech32>(&bech32::Hrp::parse(hrp).unwrap())
        .chars()
        .collect()
}

fn nonzero_padding_upper(hrp: &str, data: &[u8]) -> String {
    nonzero_padding_lower(hrp, data).to_uppercase()
}

macro_rules! long_checksum {
    ($name:ident, $residue:expr) => {
        #[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
        enum $name {}
        impl bech32::primitives::checksum::Checksum for $name {
            type MidstateRepr = u32;
            type CorrectionField = bech32::Fe1024;
            const ROOT_GENERATOR: Self::CorrectionField =
                bech32::Fe1024::new([bech32::Fe32::P, bech32::Fe32::X]);
            const ROOT_EXPONENTS: core::ops::RangeInclusive<usize> = 24..=26;
            const CODE_LENGTH: usize = 4096;
            const CHECKSUM_LENGTH: usize = 6;
            const GENERATOR_SH: [u32; 5] = [
                0x3b6a_57b2,
                0x2650_8e6d,
                0x1ea1_19fa,
                0x3d42_33dd,
                0x2a14_62b3,
            ];
            const TARGET_RESIDUE: u32 = $residue;
        }
    };
}
long_checksum!(LongBech32, 1);
long_checksum!(LongBech32m, 0x2bc8_30a3);

/// File keys for crafting: random, or recovered the way a recipient does.
struct FileKeyOf;

impl FileKeyOf {
    fn random() -> coffer_format::FileKey {
        coffer_format::FileKey::from_bytes(random())
    }

    fn of(file: &[u8], who: &Identity) -> [u8; 32] {
        let (header, _) = Header::parse(file).unwrap();
        *header.open(who, &[]).unwrap().file_key().expose()
    }
}
