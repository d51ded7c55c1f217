//! `coffer server …` through the real binary: init, users, run, healthz
//! over TLS 1.3 (checked with curl), graceful stop on SIGTERM.

use std::io::{BufRead, BufReader};
use std::os::unix::fs::PermissionsExt;
use std::process::{Command as Std, Stdio};

use assert_cmd::Command;
use predicates::prelude::*;

fn coffer() -> Command {
    let mut cmd = Command::cargo_bin("coffer").unwrap();
    cmd.env_remove("COFFER_DATA")
        .env_remove("COFFER_LISTEN")
        .env_remove("COFFER_MASTER_KEY");
    cmd
}

fn public_identity(dir: &std::path::Path, name: &str) -> String {
    let out = coffer()
        .current_dir(dir)
        .args(["keygen", "-o", name])
        .output()
        .unwrap();
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

/// A temporary directory with an initialized data directory `srv` in it.
fn initialized() -> (tempfile::TempDir, std::path::PathBuf) {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("srv");
    coffer()
        .args(["server", "init", "--data"])
        .arg(&data)
        .assert()
        .success();
    (tmp, data)
}

#[test]
fn init_creates_a_private_data_directory_once() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("srv");
    coffer()
        .args(["server", "init", "--data"])
        .arg(&data)
        .assert()
        .success()
        .stdout(predicate::str::contains("https://127.0.0.1:8443"))
        .stdout(predicate::str::contains("certificate:          SHA256:"))
        .stdout(predicate::str::contains("server identity:      coffer1"));
    let mode = |p: &str| {
        std::fs::metadata(data.join(p))
            .unwrap()
            .permissions()
            .mode()
            & 0o777
    };
    assert_eq!(mode(""), 0o700);
    assert_eq!(mode("server.identity"), 0o600);
    assert_eq!(mode("tls/key.pem"), 0o600);
    // The master key is not in the data directory: a copy of it does not
    // open the server-encrypted files.
    assert!(!data.join("master.key").exists());
    assert_eq!(mode("../srv.master.key"), 0o600);
    let before = std::fs::read(data.join("server.identity")).unwrap();
    coffer()
        .args(["server", "init", "--data"])
        .arg(&data)
        .assert()
        .failure()
        .stderr(predicate::str::contains("already a coffer data directory"));
    assert_eq!(std::fs::read(data.join("server.identity")).unwrap(), before);
}

#[test]
fn users_are_added_listed_and_disabled() {
    let (tmp, data) = initialized();
    let alice = public_identity(tmp.path(), "alice.key");
    let add = |name: &str, key: &str| {
        let mut cmd = coffer();
        cmd.args([
            "server", "user", "add", name, "--key", key, "--quota", "10GiB", "--data",
        ])
        .arg(&data);
        cmd
    };
    add("alice", &alice)
        .assert()
        .success()
        .stdout(predicate::str::contains("added alice"));
    add("alice", &alice)
        .assert()
        .failure()
        .stderr(predicate::str::contains("already exists"));
    add("Bad/Name", &alice)
        .assert()
        .failure()
        .stderr(predicate::str::contains("invalid user name"));
    add("bob", "coffer1notakey")
        .assert()
        .failure()
        .stderr(predicate::str::contains("invalid public identity"));

    coffer()
        .args(["server", "user", "disable", "alice", "--data"])
        .arg(&data)
        .assert()
        .success();
    coffer()
        .args(["server", "user", "disable", "nobody", "--data"])
        .arg(&data)
        .assert()
        .failure();
    let out = coffer()
        .args(["server", "user", "list", "--json", "--data"])
        .arg(&data)
        .output()
        .unwrap();
    let users: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(users.as_array().unwrap().len(), 1);
    assert_eq!(users[0]["name"], "alice");
    assert_eq!(users[0]["disabled"], true);
    assert_eq!(users[0]["quota_bytes"], 10u64 << 30);
    assert_eq!(users[0]["public_identity"], alice);
    assert_eq!(users[0]["stored_bytes"], 0);
    assert_eq!(users[0]["open_uploads"], 0);
    assert!(
        users[0]["fingerprint"]
            .as_str()
            .is_some_and(|f| !f.is_empty())
    );

    let quota = |value: &str| {
        let mut cmd = coffer();
        cmd.args(["server", "user", "set-quota", "alice", value, "--data"])
            .arg(&data);
        cmd
    };
    let listed_quota = || {
        let out = coffer()
            .args(["server", "user", "list", "--json", "--data"])
            .arg(&data)
            .output()
            .unwrap();
        serde_json::from_slice::<serde_json::Value>(&out.stdout).unwrap()[0]["quota_bytes"].clone()
    };
    quota("1MiB").assert().success();
    assert_eq!(listed_quota(), 1u64 << 20);
    quota("lots").assert().failure();
    assert_eq!(listed_quota(), 1u64 << 20, "a bad value changes nothing");
    quota("none").assert().success();
    assert_eq!(listed_quota(), serde_json::Value::Null);
    coffer()
        .args(["server", "user", "set-quota", "nobody", "1GiB", "--data"])
        .arg(&data)
        .assert()
        .failure()
        .stderr(predicate::str::contains("nobody"));
}

#[test]
fn run_serves_tls_and_stops_on_sigterm() {
    let (_tmp, data) = initialized();
    let mut child = Std::new(assert_cmd::cargo::cargo_bin("coffer"))
        .args(["server", "run", "--listen", "127.0.0.1:0", "--data"])
        .arg(&data)
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    let mut before = String::new();
    let port = loop {
        let line = lines.next().expect("server exited").unwrap();
        if let Some(rest) = line.split("listening on https://127.0.0.1:").nth(1) {
            break rest.trim().to_string();
        }
        before.push_str(&line);
    };
    // The key beside the data directory is on its filesystem: said loudly.
    assert!(
        before.contains("INSECURE") && before.contains("same filesystem"),
        "{before}"
    );
    let curl = |extra: &[&str]| {
        Std::new("curl")
            .args(["-sS", "--max-time", "10", "--cacert"])
            .arg(data.join("tls/cert.pem"))
            .args(extra)
            .arg(format!("https://localhost:{port}/healthz"))
            .output()
            .unwrap()
    };
    let ok = curl(&["--tlsv1.3"]);
    assert!(
        ok.status.success(),
        "{}",
        String::from_utf8_lossy(&ok.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&ok.stdout), "ok\n");
    // TLS 1.2 at most: refused.
    assert!(!curl(&["--tls-max", "1.2"]).status.success());

    Std::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    let status = child.wait().unwrap();
    assert!(status.success(), "server did not stop cleanly: {status}");
}

#[test]
fn audit_verify_and_export_through_the_cli() {
    let (tmp, data) = initialized();
    for name in ["alice", "bob"] {
        let key = public_identity(tmp.path(), name);
        coffer()
            .args(["server", "user", "add", name, "--key", &key, "--data"])
            .arg(&data)
            .assert()
            .success();
    }
    coffer()
        .args(["server", "user", "disable", "bob", "--data"])
        .arg(&data)
        .assert()
        .success();
    coffer()
        .args(["server", "audit", "verify", "--data"])
        .arg(&data)
        .assert()
        .success()
        .stdout(predicate::str::contains("3 entries"))
        .stdout(predicate::str::contains("intact"));
    let out = coffer()
        .args(["server", "audit", "export", "--json", "--data"])
        .arg(&data)
        .output()
        .unwrap();
    assert!(out.status.success());
    let lines: Vec<serde_json::Value> = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let actions: Vec<&str> = lines
        .iter()
        .map(|l| l["action"].as_str().unwrap())
        .collect();
    assert_eq!(actions, ["user_add", "user_add", "user_disable"]);
    assert_eq!(lines[2]["target"], "bob");

    // Edit entry 2 behind the server's back (python's sqlite3 module).
    let edited = Std::new("python3")
        .args([
            "-c",
            "import sqlite3,sys; c=sqlite3.connect(sys.argv[1]); c.execute(\"UPDATE audit_log SET target='mallory' WHERE seq=2\"); c.commit()",
        ])
        .arg(data.join("meta.db"))
        .status()
        .unwrap();
    assert!(edited.success());
    coffer()
        .args(["server", "audit", "verify", "--data"])
        .arg(&data)
        .assert()
        .failure()
        .stdout(predicate::str::contains("TAMPERED: entry 2:"))
        .stderr(predicate::str::contains("tampered"));
}

#[test]
fn kek_rotation_status_and_prune_through_the_cli() {
    let (_tmp, data) = initialized();
    let key_file = data.with_file_name("srv.master.key");
    let mode = std::fs::metadata(&key_file).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    let status = |json: bool| {
        let mut cmd = coffer();
        cmd.args(["server", "keys", "status", "--data"]).arg(&data);
        if json {
            cmd.arg("--json");
        }
        let out = cmd.output().unwrap();
        assert!(out.status.success());
        String::from_utf8(out.stdout).unwrap()
    };
    let versions = |text: &str| -> Vec<u64> {
        serde_json::from_str::<serde_json::Value>(text)
            .unwrap()
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v["version"].as_u64().unwrap())
            .collect()
    };
    assert_eq!(versions(&status(true)), [1]);
    coffer()
        .args(["server", "rotate-kek", "--data"])
        .arg(&data)
        .assert()
        .success()
        .stdout(predicate::str::contains("KEK version 2 (added)"));
    assert_eq!(versions(&status(true)), [1, 2]);
    coffer()
        .args(["server", "keys", "prune", "--data"])
        .arg(&data)
        .assert()
        .success()
        .stdout(predicate::str::contains("removed versions [1]"));
    assert_eq!(versions(&status(true)), [2]);
    assert!(status(false).contains("file keys"));

    // Without the master key nothing opens, and the message says why.
    let key = std::fs::read_to_string(&key_file).unwrap();
    std::fs::remove_file(&key_file).unwrap();
    coffer()
        .args(["server", "keys", "status", "--data"])
        .arg(&data)
        .assert()
        .failure()
        .stderr(predicate::str::contains("no master key"));
    // The environment variable works instead of the file.
    coffer()
        .env("COFFER_MASTER_KEY", key.trim())
        .args(["server", "keys", "status", "--data"])
        .arg(&data)
        .assert()
        .success();
    coffer()
        .args(["server", "audit", "verify", "--data"])
        .arg(&data)
        .assert()
        .success();
}

#[test]
fn master_key_rotation_through_the_cli() {
    let (tmp, data) = initialized();
    let key_file = data.with_file_name("srv.master.key");
    let old = std::fs::read_to_string(&key_file).unwrap();
    coffer()
        .args(["server", "rotate-master-key", "--data"])
        .arg(&data)
        .assert()
        .success()
        .stdout(predicate::str::contains("1 KEK versions re-sealed"))
        .stderr(predicate::str::contains("rotate-kek"));
    let new = std::fs::read_to_string(&key_file).unwrap();
    assert_ne!(old, new);
    let status = |key: Option<&str>| {
        let mut cmd = coffer();
        if let Some(key) = key {
            cmd.env("COFFER_MASTER_KEY", key.trim());
        }
        cmd.args(["server", "keys", "status", "--data"])
            .arg(&data)
            .output()
            .unwrap()
    };
    assert!(status(None).status.success());
    let refused = status(Some(&old));
    assert!(!refused.status.success(), "the old key must no longer open");
    assert!(String::from_utf8_lossy(&refused.stderr).contains("does not open"));

    // A key file is replaced in place; --new-key-file is for the variable.
    coffer()
        .args([
            "server",
            "rotate-master-key",
            "--new-key-file",
            "x",
            "--data",
        ])
        .arg(&data)
        .assert()
        .failure()
        .stderr(predicate::str::contains("replaced in place"));

    // A key from COFFER_MASTER_KEY: the new one goes to the file named.
    std::fs::remove_file(&key_file).unwrap();
    coffer()
        .env("COFFER_MASTER_KEY", new.trim())
        .args(["server", "rotate-master-key", "--data"])
        .arg(&data)
        .assert()
        .failure()
        .stderr(predicate::str::contains("--new-key-file"));
    let out_file = tmp.path().join("next.key");
    coffer()
        .env("COFFER_MASTER_KEY", new.trim())
        .args(["server", "rotate-master-key", "--new-key-file"])
        .arg(&out_file)
        .arg("--data")
        .arg(&data)
        .assert()
        .success()
        .stdout(predicate::str::contains(out_file.to_str().unwrap()));
    let mode = std::fs::metadata(&out_file).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    let next = std::fs::read_to_string(&out_file).unwrap();
    assert!(!status(Some(&new)).status.success());
    assert!(status(Some(&next)).status.success());

    // Both rotations are in the (intact) audit log.
    let export = coffer()
        .env("COFFER_MASTER_KEY", next.trim())
        .args(["server", "audit", "export", "--json", "--data"])
        .arg(&data)
        .output()
        .unwrap();
    let text = String::from_utf8(export.stdout).unwrap();
    assert_eq!(text.matches("master_key_rotate").count(), 2, "{text}");
    coffer()
        .env("COFFER_MASTER_KEY", next.trim())
        .args(["server", "audit", "verify", "--data"])
        .arg(&data)
        .assert()
        .success();
}

#[test]
fn run_warns_when_the_master_key_is_inside_the_data_directory() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("srv");
    coffer()
        .args(["server", "init", "--data"])
        .arg(&data)
        .arg("--master-key-file")
        .arg(data.join("master.key"))
        .assert()
        .success();
    let mut child = Std::new(assert_cmd::cargo::cargo_bin("coffer"))
        .args(["server", "run", "--listen", "127.0.0.1:0", "--data"])
        .arg(&data)
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    let mut seen = String::new();
    while !seen.contains("listening on") {
        seen.push_str(&lines.next().expect("server exited").unwrap());
    }
    let _ = child.kill();
    let _ = child.wait();
    assert!(
        seen.contains("INSECURE") && seen.contains("inside the data directory"),
        "{seen}"
    );
}

/// `keys migrate` through the real binary against a SoftHSM2 token: a wrong
/// PIN changes nothing; the move, `keys status`, a server started without
/// the master key, `rotate-kek` and `keys prune` in the token, audited.
#[test]
fn keyring_migrates_into_a_pkcs11_token_through_the_cli() {
    let (tmp, data) = initialized();
    let Some(hsm) = coffer_server::testing::SoftHsm::init(&tmp.path().join("hsm"), "coffer") else {
        return;
    };
    let migrate = |pin_file: &std::path::Path| {
        let mut cmd = coffer();
        cmd.envs(hsm.env())
            .args(["server", "keys", "migrate", "--data"])
            .arg(&data)
            .args(["--module", coffer_server::testing::SOFTHSM_MODULE])
            .args(["--token", "coffer", "--pin-file"])
            .arg(pin_file);
        cmd
    };
    let wrong = tmp.path().join("wrong.pin");
    std::fs::write(&wrong, "000000\n").unwrap();
    let config_before = std::fs::read_to_string(data.join("config.toml")).unwrap();
    migrate(&wrong)
        .assert()
        .failure()
        .stderr(predicate::str::contains("PIN is wrong"));
    assert_eq!(
        std::fs::read_to_string(data.join("config.toml")).unwrap(),
        config_before,
        "a failed move changed the configuration"
    );
    migrate(&hsm.pin_file)
        .assert()
        .success()
        .stdout(predicate::str::contains("version 2 (added)"))
        .stdout(predicate::str::contains("versions [1] removed"))
        .stderr(predicate::str::contains("no longer used"));

    // The master key goes; everything still opens from the token.
    std::fs::remove_file(data.with_file_name("srv.master.key")).unwrap();
    let status = |cmd: &mut Command| {
        let out = cmd
            .envs(hsm.env())
            .args(["server", "keys", "status", "--json", "--data"])
            .arg(&data)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice::<serde_json::Value>(&out.stdout).unwrap()
    };
    let rows = status(&mut coffer());
    assert_eq!(rows.as_array().unwrap().len(), 1, "{rows}");
    assert_eq!(rows[0]["version"], 2);
    let location = rows[0]["location"].as_str().unwrap();
    assert!(
        location.contains("PKCS#11 token coffer") && location.contains("non-extractable"),
        "{location}"
    );
    // Without the token's configuration (SOFTHSM2_CONF) nothing opens.
    coffer()
        .env("SOFTHSM2_CONF", tmp.path().join("nothing.conf"))
        .args(["server", "keys", "status", "--data"])
        .arg(&data)
        .assert()
        .failure();

    let mut server = Std::new(assert_cmd::cargo::cargo_bin("coffer"))
        .envs(hsm.env())
        .args(["server", "run", "--listen", "127.0.0.1:0", "--data"])
        .arg(&data)
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(server.stderr.take().unwrap()).lines();
    let mut seen = String::new();
    while !seen.contains("listening on") {
        let Some(Ok(line)) = lines.next() else {
            panic!("the server exited: {seen}");
        };
        seen.push_str(&line);
    }
    let _ = server.kill();
    let _ = server.wait();
    assert!(seen.contains("from the PKCS#11 token coffer"), "{seen}");
    assert!(
        !seen.contains("INSECURE"),
        "no master key, no warning about it: {seen}"
    );

    let mut rotate = coffer();
    rotate
        .envs(hsm.env())
        .args(["server", "rotate-kek", "--data"])
        .arg(&data)
        .assert()
        .success()
        .stdout(predicate::str::contains("KEK version 3 (added)"));
    let mut prune = coffer();
    prune
        .envs(hsm.env())
        .args(["server", "keys", "prune", "--data"])
        .arg(&data)
        .assert()
        .success()
        .stdout(predicate::str::contains("removed versions [2]"));
    assert_eq!(status(&mut coffer())[0]["version"], 3);
    let out = coffer()
        .args(["server", "audit", "export", "--json", "--data"])
        .arg(&data)
        .output()
        .unwrap();
    let audit = String::from_utf8_lossy(&out.stdout);
    for action in ["keyring_migrate", "kek_rotate", "kek_prune"] {
        assert!(audit.contains(action), "{action} not audited: {audit}");
    }
}
