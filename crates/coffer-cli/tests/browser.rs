//! The customer with only a browser: share links opened in Debian's Chromium
//! (driven by playwright-core, `crates/coffer-server/web/test/browser.mjs`),
//! which decrypts and verifies the file in the page.
//!
//! Needs `node`, `/usr/lib/chromium/chromium` and `npm ci` in
//! crates/coffer-server/web (`.ci/run` installs all three). Without them the
//! test says so and passes, except under `CI=true`, where it fails.
//!
//! One browser run covers every case, to keep the suite lean:
//! - a 300 MiB file through the streaming service worker (a browser that
//!   trusts the certificate), bytes identical, page memory bounded;
//! - a 1 MiB file behind the self-signed certificate (in-page, then saved);
//! - a wrong password, then the right one;
//! - exhausted and expired links: their messages, no download;
//! - a stored object with one flipped byte near its end, and one cut short
//!   (object and database row edited, as the server's owner could): the page
//!   says so and no completed download appears;
//! - an upload link (`coffer request`): a 50 MiB file encrypted in the page,
//!   the page reloaded mid-way and the file chosen again, the upload resumed;
//!   a 1 MiB file behind the self-signed certificate; a URL whose pin names
//!   another key refuses to send. The requester's `coffer inbox` gets
//!   identical bytes marked "via upload link", the server's data directory
//!   holds neither the plaintext nor the file names, and a server that
//!   relabels such a file as alice's own (or her own as an anonymous one)
//!   is refused.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command as Std;
use std::time::Duration;

use common::*;
use serde_json::{Value, json};

const CHROMIUM: &str = "/usr/lib/chromium/chromium";

fn web_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../coffer-server/web")
}

/// Whether the browser tooling is here; under CI it must be.
fn browser_available() -> bool {
    let ready = Path::new(CHROMIUM).exists()
        && web_dir().join("node_modules/playwright-core").exists()
        && Std::new("node").arg("--version").output().is_ok();
    if !ready {
        assert!(
            std::env::var("CI").is_err(),
            "CI=true but Chromium, node or web/node_modules is missing (run .ci/run)"
        );
        eprintln!("skipped: needs node, {CHROMIUM} and `npm ci` in crates/coffer-server/web");
    }
    ready
}

/// base64 SHA-256 of the certificate's public key, for Chromium's
/// `--ignore-certificate-errors-spki-list` (a browser that trusts it).
fn spki_hash(cert: &Path) -> String {
    let script = "openssl x509 -in \"$1\" -pubkey -noout | openssl pkey -pubin -outform der \
                  | openssl dgst -sha256 -binary | base64";
    let out = Std::new("sh")
        .args(["-c", script, "sh"])
        .arg(cert)
        .output()
        .unwrap();
    assert!(out.status.success());
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

fn link(world: &World, id: &str, extra: &[&str], password: Option<&str>) -> String {
    let mut cmd = world.coffer("alice");
    cmd.args(["link", id]).args(extra);
    if let Some(p) = password {
        cmd.arg("--password").env("COFFER_LINK_PASSWORD", p);
    }
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

fn put_id(world: &World, name: &str, bytes: &[u8]) -> (String, PathBuf) {
    let file = world.write(name, bytes);
    let put = world.put("alice", &file, &[]);
    (put["id"].as_str().unwrap().to_string(), file)
}

/// A second server whose certificate a CA signed, with a browser profile
/// whose own trust store (NSS, where a desktop keeps a company CA) holds
/// that CA: no pin anywhere. alice logged in through the CA (as the
/// system's roots), so her link names no pin.
struct CaSigned {
    /// Held, never read: its server runs while the browser does.
    _world: World,
    /// The `HOME` whose `.pki/nssdb` trusts the CA.
    browser_home: PathBuf,
    link: String,
    source: PathBuf,
}

fn ca_signed_server() -> CaSigned {
    use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair, SanType};
    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "coffer browser test CA");
    let ca = CertifiedIssuer::self_signed(params, KeyPair::generate().unwrap()).unwrap();
    let key = KeyPair::generate().unwrap();
    let mut leaf = CertificateParams::new(Vec::<String>::new()).unwrap();
    leaf.subject_alt_names = vec![SanType::IpAddress("127.0.0.1".parse().unwrap())];
    let leaf = leaf.signed_by(&key, &ca).unwrap();
    let pki = tempfile::tempdir().unwrap();
    let file = |name: &str, text: String| {
        let path = pki.path().join(name);
        std::fs::write(&path, text).unwrap();
        path
    };
    let (cert, key, ca_pem) = (
        file("server.pem", format!("{}{}", leaf.pem(), ca.pem())),
        file("server.key", key.serialize_pem()),
        file("ca.pem", ca.pem()),
    );
    let world = World::with_init_on(
        &[Path::new("--cert"), &cert, Path::new("--key"), &key],
        coffer_server::testing::Backend::Embedded,
    );
    let with_roots = |args: &[&str]| {
        let out = world
            .coffer("alice")
            .env("SSL_CERT_FILE", &ca_pem)
            .env_remove("SSL_CERT_DIR")
            .args(args)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    };
    let identity = world.path("alice.id");
    let url = world.url();
    with_roots(&[
        "login",
        &url,
        "--user",
        "alice",
        "-i",
        identity.to_str().unwrap(),
    ]);
    let source = world.write("statement 2026-11.pdf", &data(2 << 20, 9));
    let put: Value =
        serde_json::from_str(&with_roots(&["put", "--json", source.to_str().unwrap()])).unwrap();
    let link = with_roots(&["link", put["id"].as_str().unwrap()])
        .trim()
        .to_string();
    assert!(
        !link.contains("fp="),
        "a CA-verified link carries a pin: {link}"
    );

    let browser_home = world.path("browser-home");
    let nssdb = browser_home.join(".pki/nssdb");
    std::fs::create_dir_all(&nssdb).unwrap();
    let db = format!("sql:{}", nssdb.display());
    let certutil = |args: &[&str]| {
        let ok = Std::new("certutil").args(["-d", &db]).args(args).status();
        assert!(
            ok.is_ok_and(|s| s.success()),
            "certutil (Debian's libnss3-tools) failed or is missing: {args:?}"
        );
    };
    certutil(&["-N", "--empty-password"]);
    certutil(&[
        "-A",
        "-t",
        "C,,",
        "-n",
        "coffer-test-ca",
        "-i",
        ca_pem.to_str().unwrap(),
    ]);
    CaSigned {
        _world: world,
        browser_home,
        link,
        source,
    }
}

#[test]
fn links_open_decrypt_and_verify_in_chromium() {
    if !browser_available() {
        return;
    }
    let world = World::with_init_on(&[], coffer_server::testing::Backend::Embedded);
    world.login_everyone();
    let (big_id, big) = put_id(&world, "scan archive.tar", &data(300 << 20, 1));
    let (small_id, small) = put_id(&world, "letter.pdf", &data(1 << 20, 2));
    let (tampered_id, _) = put_id(&world, "tampered.bin", &data(3 << 20, 3));
    let (cut_id, _) = put_id(&world, "cut.bin", &data(3 << 20, 4));
    let (dropped_id, dropped) = put_id(&world, "minutes.odt", &data(24 << 20, 8));
    // The page reaches the server through a proxy that drops the first
    // connection to carry 8 MiB down: the download resumes with a Range.
    let dropping = faulty_proxy(world.port, false, 8 << 20, Fault::Cut);
    let dropped_url = link(&world, &dropped_id, &[], None).replace(
        &format!("127.0.0.1:{}/", world.port),
        &format!("127.0.0.1:{dropping}/"),
    );

    let request = upload_link(&world);
    let wrong_pin = {
        let (head, tail) = request.split_once("&r=").unwrap();
        let pin = &tail[..43];
        let flipped = if pin.starts_with('A') { "B" } else { "A" };
        format!("{head}&r={flipped}{}", &tail[1..])
    };
    // A marker that must never reach the server in clear.
    let mut records = data(50 << 20, 5);
    for at in (0..records.len() - MARKER.len()).step_by(1 << 20) {
        records[at..at + MARKER.len()].copy_from_slice(MARKER);
    }
    let records = world.write("patient records 2026.pdf", &records);
    let mut letter = data(1 << 20, 6);
    letter[..MARKER.len()].copy_from_slice(MARKER);
    let letter = world.write("referral letter.txt", &letter);
    let mut consent = data(300_000, 7);
    consent[..MARKER.len()].copy_from_slice(MARKER);
    let consent = world.write("consent form.txt", &consent);
    let protected = {
        let out = world
            .coffer("alice")
            .env("COFFER_LINK_PASSWORD", "blue heron 42")
            .args(["request", "--password", "--max-files", "1"])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap().trim().to_string()
    };

    let ca_signed = ca_signed_server();
    let exhausted = link(&world, &small_id, &["--max-downloads", "1"], None);
    let expired = link(&world, &small_id, &["--expires", "1s"], None);
    let cases = json!([
        {"label": "big-streamed", "url": link(&world, &big_id, &[], None), "trusted": true},
        {"label": "small-self-signed", "url": link(&world, &small_id, &[], None), "trusted": false},
        {"label": "password", "url": link(&world, &small_id, &[], Some("correct horse")),
         "passwords": ["wrong horse", "correct horse"], "trusted": true},
        {"label": "exhausted", "url": exhausted, "trusted": false},
        {"label": "expired", "url": expired, "trusted": false},
        {"label": "tampered", "url": link(&world, &tampered_id, &[], None), "trusted": true},
        {"label": "truncated", "url": link(&world, &cut_id, &[], None), "trusted": true},
        {"label": "resumed-download", "url": dropped_url, "trusted": true},
        {"label": "ca-signed", "url": ca_signed.link, "trusted": "ca"},
        {"label": "request-resumed", "kind": "request", "url": request, "trusted": true,
         "files": [records], "senderName": "Dr. Ana Ruiz", "reloadAfterBytes": 12 << 20,
         "uploadBytesPerSecond": 8 << 20},
        {"label": "request-self-signed", "kind": "request", "url": request, "trusted": false,
         "files": [letter]},
        {"label": "request-wrong-pin", "kind": "request", "url": wrong_pin, "trusted": true,
         "files": [letter]},
        {"label": "request-password", "kind": "request", "url": protected, "trusted": true,
         "files": [consent], "passwords": ["blue heron 41", "blue heron 42"]},
    ]);
    spend_with_cli(&world, &exhausted);
    std::thread::sleep(Duration::from_millis(1100));
    // The server's owner edits what it stores: one flipped byte near the end
    // of one object; another cut short by 100 bytes, its row to match.
    let path = object(&world, &tampered_id);
    let mut stored = std::fs::read(&path).unwrap();
    let at = stored.len() - 200;
    stored[at] ^= 0x40;
    std::fs::write(&path, &stored).unwrap();
    let path = object(&world, &cut_id);
    let stored = std::fs::read(&path).unwrap();
    let cut = stored.len() - 100;
    std::fs::write(&path, &stored[..cut]).unwrap();
    sql(
        &world,
        &format!("UPDATE files SET size = {cut} WHERE id = '{cut_id}'"),
    );

    let results = run_browser(&world, &ca_signed.browser_home, cases);
    let case = |label: &str| -> &Value {
        results
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["label"] == label)
            .unwrap_or_else(|| panic!("no result for {label}: {results}"))
    };
    let delivered = |label: &str, source: &Path| {
        let r = case(label);
        assert_eq!(r["state"], "done", "{r}");
        assert_eq!(
            r["download"]["sha256"],
            sha(source),
            "{label}: bytes differ: {r}"
        );
    };
    delivered("big-streamed", &big);
    let big_case = case("big-streamed");
    assert!(
        big_case["mode"].as_str().unwrap().contains("straight to"),
        "{big_case}"
    );
    assert_eq!(big_case["download"]["suggested"], "scan archive.tar");
    let heap = big_case["heapPeakBytes"].as_f64().unwrap();
    assert!(
        heap < 64.0 * 1024.0 * 1024.0,
        "page heap {heap} for a 300 MiB file"
    );
    delivered("small-self-signed", &small);
    assert!(
        case("small-self-signed")["mode"]
            .as_str()
            .unwrap()
            .contains("in the page")
    );
    delivered("password", &small);
    delivered("resumed-download", &dropped);
    // Trusted through the browser's own CA store, not a pin: the page may
    // register its service worker and stream to disk.
    delivered("ca-signed", &ca_signed.source);
    assert!(
        case("ca-signed")["mode"]
            .as_str()
            .unwrap()
            .contains("straight to"),
        "{}",
        case("ca-signed")
    );
    let resumed = case("resumed-download")["resumedFrom"]
        .as_str()
        .and_then(|at| at.parse::<u64>().ok());
    assert!(
        resumed.is_some_and(|at| at > 0),
        "the download never resumed: {}",
        case("resumed-download")
    );
    // An expired link's details answer 404 (the server hides it), so the
    // page can only say "no such link" there.
    let closed: [(&str, &[&str]); 2] = [
        ("exhausted", &["link_exhausted"]),
        ("expired", &["link_expired", "not_found"]),
    ];
    for (label, codes) in closed {
        let r = case(label);
        assert_eq!(r["state"], "error", "{r}");
        assert!(
            codes.contains(&r["error"].as_str().unwrap_or_default()),
            "{r}"
        );
        assert_eq!(r["downloads"], 0, "{r}");
    }
    check_upload_link(
        &world,
        &|label| case(label).clone(),
        &[&records, &letter, &consent],
    );
    for (label, kind) in [("tampered", "tampered"), ("truncated", "truncated")] {
        let r = case(label);
        assert_eq!(
            (r["state"].as_str(), r["error"].as_str()),
            (Some("error"), Some(kind)),
            "{r}"
        );
        assert!(
            r["download"].is_null() || r["download"]["failure"].is_string(),
            "{label}: a download completed: {r}"
        );
    }
}

const MARKER: &[u8] = b"PLAINTEXT-MARKER-7f3a9c-never-on-the-server";

fn upload_link(world: &World) -> String {
    let out = world
        .coffer("alice")
        .args([
            "request",
            "--max-files",
            "3",
            "--ask-name",
            "--note",
            "Scans for case 1234 & co",
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

/// What the requester's side sees of the upload-link cases: the page's
/// verdicts, the inbox, the bytes, and what the server holds.
fn check_upload_link(world: &World, case: &dyn Fn(&str) -> Value, sent: &[&Path]) {
    let resumed = case("request-resumed");
    assert_eq!(resumed["state"], "done", "{resumed}");
    assert!(
        resumed["resumed"].as_u64().unwrap() > 0,
        "the reload did not resume: {resumed}"
    );
    assert!(
        resumed["receipts"]
            .as_str()
            .unwrap()
            .contains("received, receipt "),
        "{resumed}"
    );
    assert_eq!(case("request-self-signed")["state"], "done");
    let protected = case("request-password");
    assert_eq!(protected["state"], "done", "{protected}");
    assert_eq!(protected["wrongPasswordSeen"], true, "{protected}");
    let refused = case("request-wrong-pin");
    assert_eq!(
        (refused["state"].as_str(), refused["error"].as_str()),
        (Some("error"), Some("wrong-key")),
        "{refused}"
    );

    let out = world
        .coffer("alice")
        .args(["inbox", "--json"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let listed = json_lines(&out.stdout);
    assert_eq!(listed.len(), sent.len(), "{listed:?}");
    for entry in &listed {
        assert!(
            entry["from"]
                .as_str()
                .unwrap()
                .starts_with("via upload link "),
            "{entry}"
        );
        assert!(entry["via_request"].is_string(), "{entry}");
    }
    assert!(
        listed.iter().any(|e| e["says_from"] == "Dr. Ana Ruiz"),
        "{listed:?}"
    );
    std::fs::create_dir_all(world.path("received")).unwrap();
    let out = world
        .coffer("alice")
        .args(["inbox", "--get-all", "-o", "received"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(
        said.contains("an anonymous sender via upload link"),
        "{said}"
    );
    for source in sent {
        let name = source.file_name().unwrap();
        assert_eq!(
            sha(&world.path("received").join(name)),
            sha(source),
            "{name:?}"
        );
    }

    // Only ciphertext reached the server: neither the marker nor the names.
    let mut stored = Vec::new();
    collect_files(&world.path("srv"), &mut stored);
    for path in &stored {
        let bytes = std::fs::read(path).unwrap();
        for needle in [
            MARKER,
            b"patient records 2026",
            b"consent form",
            b"blue heron",
            b"Dr. Ana Ruiz",
            b"case 1234",
        ] {
            assert!(
                !bytes.windows(needle.len()).any(|w| w == needle),
                "{} holds {:?} in clear",
                path.display(),
                String::from_utf8_lossy(needle)
            );
        }
    }

    // The server's owner relabels: the anonymous file as alice's own upload,
    // and one of her own as come through the link. Her client refuses both.
    let anonymous = listed[0]["id"].as_str().unwrap();
    let request = listed[0]["via_request"].as_str().unwrap();
    sql(
        world,
        &format!("UPDATE files SET via_request = NULL WHERE id = '{anonymous}'"),
    );
    let out = world
        .coffer("alice")
        .args(["get", anonymous, "-o", "received"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("signed by"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let own = world.put("alice", &world.write("own.txt", b"alice's own"), &[]);
    let own = own["id"].as_str().unwrap();
    sql(
        world,
        &format!("UPDATE files SET via_request = '{request}' WHERE id = '{own}'"),
    );
    let out = world
        .coffer("alice")
        .args(["get", own, "-o", "received"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("upload link"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn collect_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            collect_files(&path, out);
        } else {
            out.push(path);
        }
    }
}

fn spend_with_cli(world: &World, url: &str) {
    std::fs::create_dir_all(world.path("spent")).unwrap();
    let out = Std::new(bin())
        .current_dir(world.dir.path())
        .env("COFFER_HOME", world.path("nobody-home"))
        .args(["get", url, "-o", "spent"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Runs the cases in Chromium: `"trusted": true` cases in a browser that
/// trusts `world`'s self-signed certificate by its key (a pin), `false` in
/// one that does not, `"ca"` in one whose NSS store under `ca_home` trusts
/// a CA.
fn run_browser(world: &World, ca_home: &Path, cases: Value) -> Value {
    let artifacts = std::env::var_os("COFFER_BROWSER_ARTIFACTS")
        .map(PathBuf::from)
        .unwrap_or_else(|| world.path("screenshots"));
    let spec = json!({
        "chromium": CHROMIUM,
        "spki": spki_hash(&world.path("srv/tls/cert.pem")),
        "caHome": ca_home,
        "artifacts": artifacts,
        "cases": cases,
    });
    let spec_path = world.write("browser-spec.json", spec.to_string().as_bytes());
    let out = Std::new("node")
        .current_dir(web_dir())
        .arg("test/browser.mjs")
        .arg(&spec_path)
        .output()
        .unwrap();
    let log = String::from_utf8_lossy(&out.stderr);
    let log: Vec<&str> = log
        .lines()
        .filter(|l| l.starts_with('[') && !l.contains("dbus"))
        .collect();
    assert!(
        out.status.success(),
        "browser driver failed:\n{}",
        log.join("\n")
    );
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "{e}: {}\n{}",
            String::from_utf8_lossy(&out.stdout),
            log.join("\n")
        )
    })
}
