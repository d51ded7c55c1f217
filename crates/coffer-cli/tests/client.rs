//! The client end to end: a real `coffer server run` on 127.0.0.1 and the
//! real `coffer` binary (assert_cmd) for every step, as a user would.
//! Hostile uploads that the CLI would never make are made through the
//! library, as a modified client would.

mod common;

use std::path::Path;
use std::process::{Child, Command as Std};
use std::time::Duration;

use assert_cmd::Command;
use common::*;
use serde_json::Value;

#[test]
fn round_trips_from_empty_to_200_mib() {
    let world = World::new();
    for (i, len) in [0usize, 1, 200 * 1024 + 7, 200 * MIB]
        .into_iter()
        .enumerate()
    {
        let name = format!("f{i}.bin");
        let file = world.write(&name, &data(len, i as u64));
        let put = world.put("alice", &file, &[]);
        assert_eq!(put["size"], len as u64);
        let id = put["id"].as_str().unwrap();
        world.get_same("alice", id, &format!("out{i}/{name}"), &file);
        // No leftovers: the resume record is gone, no partial file remains.
        assert_eq!(recorded_units(&world, "alice"), 0);
        assert_eq!(
            std::fs::read_dir(world.path(&format!("out{i}")))
                .unwrap()
                .count(),
            1
        );
    }
    // The server never saw a name: the stored bytes do not contain it.
    let listing = world
        .coffer("alice")
        .args(["ls", "--json"])
        .output()
        .unwrap();
    let text = String::from_utf8(listing.stdout).unwrap();
    assert_eq!(text.lines().count(), 4);
    assert!(text.contains("\"name\":\"f3.bin\""));
    // Receipts were kept and verify against the server.
    world
        .coffer("alice")
        .args(["receipts", "verify"])
        .assert()
        .success();
}

#[test]
fn uploads_and_downloads_resume_after_the_client_is_killed() {
    let world = World::new();
    let file = world.write("big.bin", &data(200 * MIB, 7));
    world.interrupted_put("alice", &file, &[], 12);
    let put = world.put("alice", &file, &[]);
    assert!(put["resumed_at"].as_u64().unwrap() > 0, "{put}");
    let id = put["id"].as_str().unwrap().to_string();

    std::fs::create_dir_all(world.path("out")).unwrap();
    let mut child = world
        .std_coffer("alice")
        .args(["get", &id, "-o", "out"])
        .spawn()
        .unwrap();
    let partial = world.path(&format!("out/.coffer-{id}.partial"));
    wait_for("the download to get going", || {
        std::fs::metadata(&partial).is_ok_and(|m| m.len() > 20 * MIB as u64)
    });
    child.kill().unwrap();
    child.wait().unwrap();
    assert!(
        !world.path("out/big.bin").exists(),
        "unverified output at the final name"
    );
    let got = world.get_same("alice", &id, "out/big.bin", &file);
    assert!(got["resumed_at"].as_u64().unwrap() > 0, "{got}");
    assert!(!partial.exists());
}

#[test]
fn a_file_changed_before_a_resume_is_uploaded_afresh_under_a_new_key() {
    let world = World::new();
    let mut bytes = data(120 * MIB, 9);
    let file = world.write("changing.bin", &bytes);
    let mtime = std::fs::metadata(&file).unwrap().modified().unwrap();
    world.interrupted_put("alice", &file, &[], 6);
    // Same size, same mtime, one byte different in a unit already sent:
    // only the unit digests can tell.
    bytes[1000] ^= 0xff;
    std::fs::write(&file, &bytes).unwrap();
    std::fs::File::options()
        .write(true)
        .open(&file)
        .unwrap()
        .set_modified(mtime)
        .unwrap();
    let put = world.put("alice", &file, &[]);
    assert_eq!(put["resumed_at"], 0, "resumed over changed input: {put}");
    world.get_same(
        "alice",
        put["id"].as_str().unwrap(),
        "out/changing.bin",
        &file,
    );
}

#[test]
fn an_upload_survives_a_server_restart() {
    let mut world = World::new();
    let file = world.write("big.bin", &data(200 * MIB, 11));
    let child = world.put_under_way("alice", &file, &[], 12);
    world.kill_server();
    std::thread::sleep(Duration::from_millis(700));
    world.start();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success());
    let put: Value = serde_json::from_slice(&out.stdout).unwrap();
    world.get_same("alice", put["id"].as_str().unwrap(), "out/big.bin", &file);
}

#[test]
fn a_changed_certificate_or_server_identity_is_refused() {
    let mut world = World::new();
    world.coffer("alice").arg("ls").assert().success();
    // Another server's certificate and identity at the same address.
    let other = world.path("other");
    assert!(
        Std::new(bin())
            .args(["server", "init", "--data"])
            .arg(&other)
            .status()
            .unwrap()
            .success()
    );
    world.kill_server();
    let srv = world.path("srv");
    let saved_identity = std::fs::read(srv.join("server.identity")).unwrap();
    for name in ["tls/cert.pem", "tls/key.pem"] {
        std::fs::copy(other.join(name), srv.join(name)).unwrap();
    }
    world.start();
    let out = world.coffer("alice").arg("ls").output().unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("certificate changed"), "{err}");
    // Logging in again without a new --fingerprint keeps the old pin.
    let out = world
        .coffer("alice")
        .args(["login", &world.url(), "--user", "alice", "-i", "alice.id"])
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&out.stderr).contains("certificate changed"));

    // Say the new certificate is legitimate and re-pinned, but the server
    // identity changed too: the next login (the saved token is dropped)
    // must refuse it.
    world.kill_server();
    std::fs::write(
        srv.join("server.identity"),
        std::fs::read(other.join("server.identity")).unwrap(),
    )
    .unwrap();
    world.start();
    let mut profile: Value =
        serde_json::from_slice(&std::fs::read(world.profile("alice")).unwrap()).unwrap();
    profile["cert_fingerprint"] = coffer_client::certificate_fingerprint(&srv.join("tls/cert.pem"))
        .unwrap()
        .into();
    profile["token"] = Value::Null;
    std::fs::write(
        world.profile("alice"),
        serde_json::to_vec(&profile).unwrap(),
    )
    .unwrap();
    let out = world.coffer("alice").arg("ls").output().unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("server identity changed"));
    // With its real identity back, the same profile logs in again.
    world.kill_server();
    std::fs::write(srv.join("server.identity"), saved_identity).unwrap();
    world.start();
    world.coffer("alice").arg("ls").assert().success();
}

#[test]
fn share_then_get_then_revoke_and_key_pinning() {
    let world = World::new();
    let file = world.write("report.txt", b"quarterly numbers");
    let put = world.put("alice", &file, &[]);
    let id = put["id"].as_str().unwrap();
    assert!(
        !world.get("bob", id, "bob0").status.success(),
        "not shared yet"
    );
    world
        .coffer("alice")
        .args(["share", id, "--with", "bob"])
        .assert()
        .success();
    world.get_same("bob", id, "bob1/report.txt", &file);
    assert_eq!(
        std::fs::read(world.path("bob1/report.txt")).unwrap(),
        b"quarterly numbers"
    );
    let shared = world
        .coffer("bob")
        .args(["ls", "--shared-with-me", "--json"])
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&shared.stdout).contains("report.txt"));

    world
        .coffer("alice")
        .args(["revoke", id, "--from", "bob"])
        .assert()
        .success();
    assert!(!world.get("bob", id, "bob2").status.success());
    assert!(!world.path("bob2/report.txt").exists());

    // Bob's key as pinned by Alice's client no longer matches what the
    // server says: sharing refuses unless told to accept it.
    let mut profile: Value =
        serde_json::from_slice(&std::fs::read(world.profile("alice")).unwrap()).unwrap();
    let other_key = coffer_format::Identity::generate()
        .unwrap()
        .public()
        .to_string();
    assert_ne!(
        profile["known_users"]["bob"].as_str(),
        Some(other_key.as_str())
    );
    profile["known_users"]["bob"] = other_key.into();
    std::fs::write(
        world.profile("alice"),
        serde_json::to_vec(&profile).unwrap(),
    )
    .unwrap();
    let out = world
        .coffer("alice")
        .args(["share", id, "--with", "bob"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("changed"));
    world
        .coffer("alice")
        .args(["share", id, "--with", "bob", "--accept-new-key"])
        .assert()
        .success();
}

/// A login into a profile that holds another user (a person logging in as
/// bob where alice's nightly job keeps its profile) is refused and leaves
/// the profile as it was; `--replace` replaces it, and logging in again as
/// the same user needs no flag.
#[test]
fn a_login_does_not_silently_take_over_another_accounts_profile() {
    let world = World::new();
    let login = |profile: &str, user: &str, extra: &[&str]| {
        world
            .coffer(profile)
            .args(["login", &world.url(), "--user", user, "-i"])
            .arg(world.path(&format!("{user}.id")))
            .args(["--fingerprint", &world.fingerprint])
            .args(extra)
            .output()
            .unwrap()
    };
    let whose = || -> Value {
        serde_json::from_slice(&std::fs::read(world.profile("alice")).unwrap()).unwrap()
    };
    let refused = login("alice", "bob", &[]);
    let said = String::from_utf8_lossy(&refused.stderr);
    assert_eq!(refused.status.code(), Some(2), "{said}");
    assert!(
        said.contains("alice's") && said.contains("--replace"),
        "{said}"
    );
    assert_eq!(whose()["user"], "alice");
    world.coffer("alice").args(["ls"]).assert().success();

    assert!(
        login("alice", "alice", &[]).status.success(),
        "a second login of the same account"
    );
    assert!(login("alice", "bob", &["--replace"]).status.success());
    assert_eq!(whose()["user"], "bob");
}

/// The nightly job as cron runs it, its report piped into `head -1`: once
/// the reader is gone the rest of the report is dropped, but the run still
/// fetches every file, keeps the sender's key it pinned, and exits with its
/// real code. (It used to end at the second line with success: files left
/// behind, and the pin never saved, so every night was "first contact".)
#[test]
fn a_nightly_fetch_piped_into_head_still_fetches_everything_and_keeps_its_pins() {
    let world = World::new();
    std::fs::create_dir_all(world.path("in")).unwrap();
    for night in 1..=2 {
        for part in ["a", "b", "c"] {
            let file = world.write(
                &format!("{part}.csv"),
                format!("{night}{part}\n").as_bytes(),
            );
            let sent = world
                .coffer("alice")
                .args(["send", "--to", "bob"])
                .arg(&file)
                .output()
                .unwrap();
            assert!(sent.status.success());
        }
        let (job, first) = nightly_job_until_its_first_line(&world, std::process::Stdio::piped());
        // `head -1` has its line and goes away.
        let out = job.wait_with_output().unwrap();
        let said = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(0), "night {night}: {said}");
        assert!(first.contains(" in/"), "night {night}: {first}");
        assert_eq!(
            said.contains("pinned the key of alice"),
            night == 1,
            "night {night}: {said}"
        );
        let left = world.coffer("bob").args(["inbox"]).output().unwrap();
        assert!(left.stdout.is_empty(), "night {night}: {left:?}");
    }
    let mut arrived: Vec<String> = std::fs::read_dir(world.path("in"))
        .unwrap()
        .map(|entry| entry.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    arrived.sort();
    assert_eq!(
        arrived,
        ["a.2.csv", "a.csv", "b.2.csv", "b.csv", "c.2.csv", "c.csv"]
    );
    assert_eq!(
        std::fs::read_to_string(world.path("in/c.2.csv")).unwrap(),
        "2c\n"
    );
}

/// Starts bob's nightly `inbox --get-all -o in` (no terminal, nothing on
/// standard input) and reads the first line it prints, as `head -1` would;
/// returns the job, still running, and that line.
fn nightly_job_until_its_first_line(
    world: &World,
    stderr: std::process::Stdio,
) -> (std::process::Child, String) {
    use std::io::BufRead as _;
    let mut job = world
        .std_coffer("bob")
        .args(["inbox", "--get-all", "-o", "in"])
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(stderr)
        .spawn()
        .unwrap();
    let mut first = String::new();
    std::io::BufReader::new(job.stdout.take().unwrap())
        .read_line(&mut first)
        .unwrap();
    (job, first)
}

/// The nightly job killed after its first file, while the second (large)
/// one is still coming: the sender's key pinned with the first file is
/// already saved, so the next night checks the files against it instead of
/// taking the server's word again as a first contact. The file cut off
/// arrives whole on the next night.
#[test]
fn a_nightly_job_killed_mid_run_keeps_the_key_it_pinned() {
    let world = World::new();
    std::fs::create_dir_all(world.path("in")).unwrap();
    let large: Vec<u8> = (0..24u32 << 20).map(|i| (i % 251) as u8).collect();
    let files = [
        world.write("first.csv", b"1\n"),
        world.write("large.bin", &large),
    ];
    for file in &files {
        let sent = world
            .coffer("alice")
            .args(["send", "--to", "bob"])
            .arg(file)
            .output()
            .unwrap();
        assert!(sent.status.success(), "{sent:?}");
        // The inbox comes oldest first, by the second each file was sent.
        std::thread::sleep(std::time::Duration::from_millis(1100));
    }
    let (mut job, first) = nightly_job_until_its_first_line(&world, std::process::Stdio::null());
    assert!(first.contains("in/first.csv"), "{first}");
    job.kill().unwrap();
    job.wait().unwrap();
    assert!(
        !world.path("in/large.bin").exists(),
        "killed before the large file was complete"
    );

    let next = world
        .coffer("bob")
        .args(["inbox", "--get-all", "-o", "in"])
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&next.stderr);
    assert!(next.status.success(), "{said}");
    assert!(!said.contains("pinned the key"), "pinned again: {said}");
    assert_eq!(std::fs::read(world.path("in/large.bin")).unwrap(), large);
    assert!(!world.path("in/first.2.csv").exists(), "came twice");
}

/// The nightly job with one bad file in the inbox (tampered on the server,
/// and the oldest, so fetched first): the files after it still arrive, the
/// run exits 4 naming it, and it stays in the inbox, so the next night
/// reports it again instead of fetching it as new or losing it.
#[test]
fn one_tampered_file_does_not_hold_back_the_rest_of_the_inbox() {
    let world = World::new();
    std::fs::create_dir_all(world.path("in")).unwrap();
    let send = |name: &str, text: &str| -> String {
        let file = world.write(name, text.as_bytes());
        let out = world
            .coffer("alice")
            .args(["send", "--json", "--to", "bob"])
            .arg(&file)
            .output()
            .unwrap();
        let sent: Value = serde_json::from_slice(&out.stdout).unwrap();
        sent["id"].as_str().unwrap().to_string()
    };
    let bad = send("first.csv", "first\n");
    let good = [send("second.csv", "second\n"), send("third.csv", "third\n")];
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let objects = runtime.block_on(coffer_server::testing::object_store(
        &world.path("srv"),
        &world.storage,
    ));
    let mut stored = runtime.block_on(coffer_server::testing::read_object(&*objects, &bad));
    let last = stored.len() - 1;
    stored[last] ^= 0x01; // the signature
    runtime.block_on(coffer_server::testing::write_object(
        &*objects, &bad, stored,
    ));

    for night in 1..=2 {
        let out = world
            .coffer("bob")
            .args(["inbox", "--get-all", "-o", "in", "--json"])
            .output()
            .unwrap();
        let said = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(4), "night {night}: {said}");
        assert!(said.contains(&bad), "night {night}: {said}");
        let arrived = String::from_utf8_lossy(&out.stdout).lines().count();
        assert_eq!(arrived, if night == 1 { 2 } else { 0 }, "night {night}");
    }
    assert_eq!(
        std::fs::read_to_string(world.path("in/second.csv")).unwrap(),
        "second\n"
    );
    assert_eq!(
        std::fs::read_to_string(world.path("in/third.csv")).unwrap(),
        "third\n"
    );
    assert!(
        !world.path("in/first.csv").exists(),
        "the tampered file was written"
    );
    let listed = world
        .coffer("bob")
        .args(["inbox", "--json"])
        .output()
        .unwrap();
    let listed = String::from_utf8_lossy(&listed.stdout);
    assert!(
        listed.contains(&bad) && !good.iter().any(|id| listed.contains(id)),
        "{listed}"
    );
}

/// The nightly job: alice sends `nightly.csv` every night, bob's cron runs
/// `inbox --get-all`. Every version arrives (a taken name keeps both), a
/// rerun fetches nothing, and the acknowledgements live on the server, so
/// bob's second machine fetches nothing already received.
#[test]
fn three_nights_of_the_same_name_through_send_and_inbox() {
    let world = World::new();
    std::fs::create_dir_all(world.path("in")).unwrap();
    let inbox = |home: &str| {
        let out = world
            .coffer("bob")
            .env("COFFER_HOME", world.path(home))
            .args(["inbox", "--get-all", "-o", "in", "--json"])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).lines().count()
    };
    for night in 1..=3 {
        let file = world.write("nightly.csv", format!("night {night}\n").as_bytes());
        world
            .coffer("alice")
            .arg("send")
            .arg(&file)
            .args(["--to", "bob"])
            .assert()
            .success();
        assert_eq!(inbox("home"), 1, "night {night}");
    }
    assert_eq!(inbox("home"), 0, "the fourth run fetches nothing");
    for (name, night) in [
        ("nightly.csv", 1),
        ("nightly.2.csv", 2),
        ("nightly.3.csv", 3),
    ] {
        assert_eq!(
            std::fs::read_to_string(world.path(&format!("in/{name}"))).unwrap(),
            format!("night {night}\n")
        );
    }

    // Bob's second machine: its own home, the same key.
    world
        .coffer("bob")
        .env("COFFER_HOME", world.path("home2"))
        .args(["login", &world.url(), "--user", "bob", "-i"])
        .arg(world.path("bob.id"))
        .args(["--fingerprint", &world.fingerprint])
        .assert()
        .success();
    let listed = world
        .coffer("bob")
        .env("COFFER_HOME", world.path("home2"))
        .args(["inbox", "--json"])
        .output()
        .unwrap();
    assert!(listed.status.success());
    assert!(
        listed.stdout.is_empty(),
        "already received on the first machine"
    );

    // A tree keeps its relative paths with -r; --force replaces.
    let tree = world.path("q3/sub");
    std::fs::create_dir_all(&tree).unwrap();
    std::fs::write(tree.join("b.csv"), b"deep\n").unwrap();
    world
        .coffer("alice")
        .args(["put", "-r", "q3", "--to", "bob"])
        .assert()
        .success();
    let listed = world
        .coffer("bob")
        .args(["inbox", "--json"])
        .output()
        .unwrap();
    let entry: Value = serde_json::from_slice(&listed.stdout).unwrap();
    assert_eq!(entry["name"], "q3/sub/b.csv", "{entry}");
    assert_eq!(entry["size"], 5, "{entry}");
    world
        .coffer("bob")
        .args(["inbox", "--get-all", "-r", "-o", "in"])
        .assert()
        .success();
    assert_eq!(
        std::fs::read(world.path("in/q3/sub/b.csv")).unwrap(),
        b"deep\n"
    );

    let file = world.write("nightly.csv", b"night 4, replacing\n");
    world
        .coffer("alice")
        .arg("send")
        .arg(&file)
        .args(["--to", "bob"])
        .assert()
        .success();
    world
        .coffer("bob")
        .args(["inbox", "--get-all", "--force", "-o", "in"])
        .assert()
        .success();
    assert_eq!(
        std::fs::read(world.path("in/nightly.csv")).unwrap(),
        b"night 4, replacing\n"
    );
    assert!(!world.path("in/nightly.4.csv").exists());
}

/// A recipient removes a file from their own view; the owner keeps it.
#[test]
fn a_recipient_removes_a_shared_file_from_their_view_only() {
    let world = World::new();
    let file = world.write("report.pdf", b"quarterly");
    let id = world.put("alice", &file, &["--to", "bob"])["id"]
        .as_str()
        .unwrap()
        .to_string();
    let out = world.coffer("bob").args(["rm", &id]).output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("the owner keeps it"));
    let bob = world
        .coffer("bob")
        .args(["ls", "--shared-with-me", "--json"])
        .output()
        .unwrap();
    assert!(
        bob.stdout.is_empty(),
        "{}",
        String::from_utf8_lossy(&bob.stdout)
    );
    let get = world
        .coffer("bob")
        .args(["get", &id, "-o", "."])
        .output()
        .unwrap();
    assert_eq!(
        get.status.code(),
        Some(8),
        "not found: {}",
        String::from_utf8_lossy(&get.stderr)
    );
    // Mallory, who never held it, cannot remove anything.
    let out = world.coffer("mallory").args(["rm", &id]).output().unwrap();
    assert_eq!(out.status.code(), Some(8));
    let alice = world
        .coffer("alice")
        .args(["ls", "--json"])
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&alice.stdout).contains(&id));
    world.get_same("alice", &id, "alice/report.pdf", &file);
}

/// What a script sees: a closed pipe is no failure, and exit codes tell the
/// classes apart.
#[test]
fn scripts_get_exit_codes_by_class_and_no_panic_on_a_closed_pipe() {
    let mut world = World::new();
    for i in 0..40 {
        let file = world.write(&format!("f{i}.txt"), format!("{i}").as_bytes());
        world.put("alice", &file, &[]);
    }
    // `coffer ls | head -1`, through a real pipe.
    let out = Std::new("bash")
        .arg("-c")
        .arg(format!(
            "set -o pipefail; '{}' ls | head -1",
            bin().display()
        ))
        .current_dir(world.dir.path())
        .env("COFFER_HOME", world.path("home"))
        .env("COFFER_PROFILE", "alice")
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout).lines().count(), 1);
    assert!(
        !String::from_utf8_lossy(&out.stderr).contains("panicked"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // `coffer get ID -o - | head -c 100` of a file larger than the pipe
    // buffers: the reader leaving early is success, not an error.
    let big = world.write("big.bin", &data(8 * MIB, 9));
    let big_id = world.put("alice", &big, &[])["id"]
        .as_str()
        .unwrap()
        .to_string();
    let out = Std::new("bash")
        .arg("-c")
        .arg(format!(
            "set -o pipefail; '{}' get {big_id} -o - | head -c 100 | wc -c",
            bin().display()
        ))
        .current_dir(world.dir.path())
        .env("COFFER_HOME", world.path("home"))
        .env("COFFER_PROFILE", "alice")
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "100");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let code = |world: &World, user: &str, args: &[&str]| {
        world
            .coffer(user)
            .args(args)
            .output()
            .unwrap()
            .status
            .code()
    };
    let not_found = code(&world, "alice", &["get", "no-such-file-id", "-o", "."]);
    assert_eq!(not_found, Some(8));
    assert_eq!(
        code(&world, "alice", &["share", "nope", "--with", "bob"]),
        Some(8)
    );
    assert_eq!(
        code(&world, "alice", &["get", "bad/id", "-o", "."]),
        Some(2),
        "usage"
    );
    assert_eq!(
        code(&world, "alice", &["--no-such-flag"]),
        Some(2),
        "usage (clap)"
    );
    let nobody = world
        .coffer("alice")
        .env("COFFER_HOME", world.path("nobody"))
        .args(["ls"])
        .output()
        .unwrap();
    assert_ne!(nobody.status.code(), Some(0));
    world.kill_server();
    assert_eq!(
        code(&world, "alice", &["ls"]),
        Some(75),
        "temporary: the server is down"
    );
}

#[test]
fn links_run_out_expire_and_need_their_password() {
    let world = World::new();
    let file = world.write("handout.pdf", &data(300_000, 3));
    let put = world.put("alice", &file, &[]);
    let id = put["id"].as_str().unwrap();
    let link = |extra: &[&str]| {
        let out = world
            .coffer("alice")
            .args(["link", id])
            .args(extra)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap().trim().to_string()
    };
    let fetch = |url: &str, out: &str, password: Option<&str>| {
        std::fs::create_dir_all(world.path(out)).unwrap();
        let mut cmd = Command::new(bin());
        cmd.current_dir(world.dir.path())
            .env("COFFER_HOME", world.path("nobody-home"))
            .args(["get", url, "-o", out]);
        if let Some(p) = password {
            cmd.env("COFFER_LINK_PASSWORD", p);
        }
        cmd.output().unwrap()
    };
    let once = link(&["--max-downloads", "1"]);
    assert!(
        once.contains("#k="),
        "the secret belongs in the fragment: {once}"
    );
    assert!(fetch(&once, "l1", None).status.success());
    assert_eq!(sha(&world.path("l1/handout.pdf")), sha(&file));
    let second = fetch(&once, "l2", None);
    assert!(String::from_utf8_lossy(&second.stderr).contains("link_exhausted"));
    assert!(!world.path("l2/handout.pdf").exists());

    let short = link(&["--expires", "1s"]);
    std::thread::sleep(Duration::from_millis(2100));
    assert!(String::from_utf8_lossy(&fetch(&short, "l3", None).stderr).contains("link_expired"));

    let out = world
        .coffer("alice")
        .args(["link", id, "--password"])
        .env("COFFER_LINK_PASSWORD", "correct horse")
        .output()
        .unwrap();
    let guarded = String::from_utf8(out.stdout).unwrap().trim().to_string();
    assert!(!fetch(&guarded, "l4", None).status.success());
    let wrong = fetch(&guarded, "l4", Some("wrong horse"));
    assert!(String::from_utf8_lossy(&wrong.stderr).contains("wrong_password"));
    assert!(
        fetch(&guarded, "l4", Some("correct horse"))
            .status
            .success()
    );
    assert_eq!(sha(&world.path("l4/handout.pdf")), sha(&file));

    // The URL from standard input or the environment, off the command line.
    let open = link(&[]);
    let through = |how: &str, out: &str| {
        std::fs::create_dir_all(world.path(out)).unwrap();
        let mut cmd = Command::new(bin());
        cmd.current_dir(world.dir.path())
            .env("COFFER_HOME", world.path("nobody-home"))
            .args(["get", "-o", out]);
        match how {
            "stdin" => cmd.arg("-").write_stdin(format!("{open}\n")),
            _ => cmd.env("COFFER_LINK_URL", &open),
        };
        cmd.output().unwrap()
    };
    for (how, out) in [("stdin", "l6"), ("env", "l7")] {
        let got = through(how, out);
        assert!(
            got.status.success(),
            "{how}: {}",
            String::from_utf8_lossy(&got.stderr)
        );
        assert_eq!(sha(&world.path(&format!("{out}/handout.pdf"))), sha(&file));
    }
    let none = Command::new(bin())
        .current_dir(world.dir.path())
        .env("COFFER_HOME", world.path("nobody-home"))
        .env_remove("COFFER_LINK_URL")
        .args(["get", "-o", "l7"])
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&none.stderr).contains("nothing to get"));

    // A URL whose secret was altered names no link the server will show
    // (its access proof is wrong), and nothing is saved.
    let (base, secret) = open.split_once("#k=").unwrap();
    let mut chars: Vec<char> = secret.chars().collect();
    chars[0] = if chars[0] == 'A' { 'B' } else { 'A' };
    let forged = format!("{base}#k={}", chars.into_iter().collect::<String>());
    let out = fetch(&forged, "l5", None);
    assert!(!out.status.success());
    assert!(
        std::fs::read_dir(world.path("l5"))
            .unwrap()
            .next()
            .is_none()
    );

    // A password in the environment protects the link even without
    // --password.
    let env_only = world
        .coffer("alice")
        .args(["link", id])
        .env("COFFER_LINK_PASSWORD", "from the environment")
        .output()
        .unwrap();
    assert!(env_only.status.success());
    assert!(String::from_utf8_lossy(&env_only.stderr).contains("needs that password"));
    let protected = String::from_utf8(env_only.stdout)
        .unwrap()
        .trim()
        .to_string();
    assert!(!fetch(&protected, "l8", None).status.success());
    assert!(
        fetch(&protected, "l8", Some("from the environment"))
            .status
            .success()
    );

    // Listed and revoked from the CLI, by URL or by id.
    let listed = world
        .coffer("alice")
        .args(["link", "ls", id, "--json"])
        .output()
        .unwrap();
    assert!(
        listed.status.success(),
        "{}",
        String::from_utf8_lossy(&listed.stderr)
    );
    let listed = String::from_utf8_lossy(&listed.stdout).to_string();
    let link_id = |url: &str| {
        url.split("/v1/links/")
            .nth(1)
            .unwrap()
            .split('#')
            .next()
            .unwrap()
            .to_string()
    };
    assert!(listed.contains(&link_id(&protected)), "{listed}");
    let all = world.coffer("alice").args(["link", "ls"]).output().unwrap();
    assert!(String::from_utf8_lossy(&all.stdout).contains(&link_id(&open)));
    world
        .coffer("alice")
        .args(["link", "revoke", &protected, &link_id(&open)])
        .assert()
        .success();
    let gone = fetch(&protected, "l9", Some("from the environment"));
    assert_eq!(
        gone.status.code(),
        Some(8),
        "{}",
        String::from_utf8_lossy(&gone.stderr)
    );
    assert_eq!(fetch(&open, "l9", None).status.code(), Some(8));
    let listed = world
        .coffer("alice")
        .args(["link", "ls", id])
        .output()
        .unwrap();
    assert!(!String::from_utf8_lossy(&listed.stdout).contains(&link_id(&open)));
}

/// Uploads through the library with a chosen stored path, as a malicious
/// (modified) client could.
fn hostile_upload(world: &World, user: &str, source: &Path, stored_path: &str) -> String {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let mut session = world.library_session(user);
        let bob = session.user_identity("bob").await.unwrap();
        let mut options = coffer_client::upload::PutOptions::new(world.path("hostile-state"));
        options.relative_path = Some(stored_path.to_string());
        options.recipients.push(("bob".into(), bob));
        let put = coffer_client::upload::put(
            &mut session,
            source,
            &options,
            &coffer_client::progress::Silent,
        )
        .await
        .unwrap();
        put.file_id
    })
}

/// What a [`coffer_client::progress::Progress`] is told, in order.
#[derive(Default)]
struct Recorded(std::sync::Mutex<Vec<String>>);

impl coffer_client::progress::Progress for Recorded {
    fn set_total(&self, total: u64) {
        self.0.lock().unwrap().push(format!("total {total}"));
    }
    fn set_position(&self, position: u64) {
        self.0.lock().unwrap().push(format!("at {position}"));
    }
    fn named(&self, name: &str) {
        self.0.lock().unwrap().push(format!("named {name}"));
    }
    fn phase(&self, phase: coffer_client::progress::Phase) {
        self.0
            .lock()
            .unwrap()
            .push(format!("phase {}", phase.label()));
    }
}

impl Recorded {
    fn take(&self) -> Vec<String> {
        std::mem::take(&mut *self.0.lock().unwrap())
    }
}

/// Positions reported, in order.
fn positions(events: &[String]) -> Vec<u64> {
    events
        .iter()
        .filter_map(|e| e.strip_prefix("at ")?.parse().ok())
        .collect()
}

/// Progress is smooth: an upload of 24 MiB in one request reports its
/// position many times (per piece handed to the request, not per request),
/// in the sending phase; a download started by id is named after the file
/// once its header opens, and moves as bytes arrive.
#[test]
fn progress_moves_per_piece_and_a_download_is_named_after_its_file() {
    let world = World::new();
    let source = world.write("quarterly.bin", &data(24 * MIB, 12));
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let mut session = world.library_session("alice");
        let options = coffer_client::upload::PutOptions::new(world.path("progress-state"));
        let seen = Recorded::default();
        let put = coffer_client::upload::put(&mut session, &source, &options, &seen)
            .await
            .unwrap();
        let events = seen.take();
        assert_eq!(events[0], "phase sending", "{events:?}");
        assert_eq!(events[1], format!("total {}", put.stored_len));
        let at = positions(&events);
        assert!(at.windows(2).all(|w| w[0] <= w[1]), "{at:?}");
        assert_eq!(at.last(), Some(&put.stored_len));
        assert!(at.len() >= 20, "{} positions for 24 MiB: {at:?}", at.len());

        let out = world.path("quarterly.out");
        let mut pins = std::collections::BTreeMap::new();
        coffer_client::download::get(
            &mut session,
            &put.file_id,
            &coffer_client::download::Target::File(out.clone()),
            &coffer_client::download::GetOptions::default(),
            &mut pins,
            &seen,
        )
        .await
        .unwrap();
        let events = seen.take();
        assert_eq!(events[0], "named quarterly.bin", "{events:?}");
        assert_eq!(events[1], "phase receiving");
        let at = positions(&events);
        assert_eq!(at.last(), Some(&put.stored_len));
        assert!(at.len() >= 20, "{} positions for 24 MiB", at.len());
        assert_eq!(sha(&out), sha(&source));
    });
}

#[test]
fn hostile_stored_names_never_escape_the_target_directory() {
    let world = World::new();
    let evil_names = [
        "evil\x1b[2J.txt",
        "CON",
        "a:b",
        "dots.",
        "invoice\u{202E}fdp.exe",
    ];
    let evil_paths = [
        "../../escape.txt",
        "/tmp/coffer-abs-escape.txt",
        "a/../../b.txt",
        "C:\\x.txt",
        "ok/../../../c.txt",
    ];
    let mut ids = Vec::new();
    for (i, stored) in evil_paths.iter().enumerate() {
        let source = world.write(&format!("plain{i}.txt"), b"payload");
        ids.push(hostile_upload(&world, "mallory", &source, stored));
    }
    for (i, name) in evil_names.iter().enumerate() {
        let source = world.write(name, format!("named {i}").as_bytes());
        ids.push(hostile_upload(&world, "mallory", &source, name));
    }
    let target = world.path("deep/inside/target");
    std::fs::create_dir_all(&target).unwrap();
    for id in &ids {
        // -r keeps stored paths: hostile ones are refused outright.
        let out = world
            .coffer("bob")
            .args(["get", "-r", id, "-o", "deep/inside/target"])
            .output()
            .unwrap();
        assert!(!out.status.success(), "{id}: -r accepted a hostile path");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains("refusing the stored name"), "{err}");
        // Into a directory: saved under a safe name inside it.
        let out = world
            .coffer("bob")
            .args(["get", id, "-o", "deep/inside/target"])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(
            target.join(format!("coffer-{id}")).exists() || {
                let stored = String::from_utf8_lossy(&out.stdout).to_string();
                stored.contains("deep/inside/target/")
            }
        );
    }
    // Nothing landed outside the target directory.
    for escaped in [
        "deep/inside/escape.txt",
        "deep/escape.txt",
        "escape.txt",
        "deep/inside/b.txt",
        "deep/b.txt",
        "c.txt",
        "deep/c.txt",
    ] {
        assert!(!world.path(escaped).exists(), "{escaped} was written");
    }
    assert!(!Path::new("/tmp/coffer-abs-escape.txt").exists());
    for entry in std::fs::read_dir(&target).unwrap() {
        let name = entry.unwrap().file_name().into_string().unwrap();
        assert!(
            !name.chars().any(coffer_client::names::unprintable),
            "{name:?}"
        );
        assert_ne!(name.to_ascii_uppercase(), "CON");
    }
}

#[test]
fn a_tampered_object_is_detected_and_leaves_no_file() {
    let world = World::new();
    let file = world.write("ledger.db", &data(3 * MIB, 5));
    let put = world.put("alice", &file, &[]);
    let id = put["id"].as_str().unwrap().to_string();
    // Edited through whichever store holds the objects (disk or S3).
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let objects = runtime.block_on(coffer_server::testing::object_store(
        &world.path("srv"),
        &world.storage,
    ));
    let read = |id: &str| runtime.block_on(coffer_server::testing::read_object(&*objects, id));
    let write = |id: &str, bytes: Vec<u8>| {
        runtime.block_on(coffer_server::testing::write_object(&*objects, id, bytes))
    };
    let original = read(&id);
    let mut stored = original.clone();
    let middle = stored.len() / 2;
    stored[middle] ^= 0x01;
    write(&id, stored);
    let out = world.get("alice", &id, "out");
    assert_eq!(
        out.status.code(),
        Some(4),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        std::fs::read_dir(world.path("out"))
            .unwrap()
            .next()
            .is_none(),
        "output left behind"
    );

    // Another of Alice's objects, of the same length, put in its place: its
    // signed header names another file id, so the client refuses it before
    // fetching the body (exit 4, "the server answered with the file …"),
    // and nothing is written.
    write(&id, original);
    let twin = world.write("twin.db", &data(3 * MIB, 6));
    let twin_id = world.put("alice", &twin, &[])["id"]
        .as_str()
        .unwrap()
        .to_string();
    write(&id, read(&twin_id));
    let out = world.get("alice", &id, "out");
    assert_eq!(
        out.status.code(),
        Some(4),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        std::fs::read_dir(world.path("out"))
            .unwrap()
            .next()
            .is_none()
    );

    // A receipt edited on disk no longer verifies.
    let kept = world.path(&format!("home/state/alice/receipts/{id}.json"));
    let mut receipt: Value = serde_json::from_slice(&std::fs::read(&kept).unwrap()).unwrap();
    receipt["receipt"]["size"] = (receipt["receipt"]["size"].as_u64().unwrap() + 1).into();
    std::fs::write(&kept, serde_json::to_vec(&receipt).unwrap()).unwrap();
    let out = world
        .coffer("alice")
        .args(["receipts", "verify"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).contains("bad"));
}

#[test]
fn existing_files_are_not_overwritten_without_force() {
    let world = World::new();
    let file = world.write("keep.txt", b"new");
    let put = world.put("alice", &file, &[]);
    let id = put["id"].as_str().unwrap();
    std::fs::create_dir_all(world.path("out")).unwrap();
    std::fs::write(world.path("out/keep.txt"), b"old").unwrap();
    let out = world.get("alice", id, "out");
    assert!(!out.status.success());
    assert_eq!(std::fs::read(world.path("out/keep.txt")).unwrap(), b"old");
    world
        .coffer("alice")
        .args(["get", id, "-o", "out", "--force"])
        .assert()
        .success();
    assert_eq!(std::fs::read(world.path("out/keep.txt")).unwrap(), b"new");
    // Deleted files are gone for good.
    world.coffer("alice").args(["rm", id]).assert().success();
    assert!(!world.get("alice", id, "out2").status.success());
}

fn openssl(dir: &Path, args: &[&str]) {
    let out = Std::new("openssl")
        .current_dir(dir)
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A CA, a server certificate for 127.0.0.1 and a client certificate, all
/// signed by the CA (openssl, as an operator would make them).
fn make_pki(dir: &Path) {
    let ec = [
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:P-256",
        "-nodes",
    ];
    let mut ca = vec![
        "req",
        "-x509",
        "-days",
        "2",
        "-subj",
        "/CN=coffer test CA",
        "-keyout",
        "ca.key",
        "-out",
        "ca.pem",
    ];
    ca.extend_from_slice(&ec);
    openssl(dir, &ca);
    for (name, ext) in [
        (
            "server",
            "subjectAltName=IP:127.0.0.1\nextendedKeyUsage=serverAuth",
        ),
        ("client", "extendedKeyUsage=clientAuth"),
    ] {
        let (key, csr, pem) = (
            format!("{name}.key"),
            format!("{name}.csr"),
            format!("{name}.pem"),
        );
        let mut req = vec![
            "req",
            "-new",
            "-subj",
            "/CN=coffer test",
            "-keyout",
            &key,
            "-out",
            &csr,
        ];
        req.extend_from_slice(&ec);
        openssl(dir, &req);
        std::fs::write(dir.join(format!("{name}.ext")), ext.replace("\\n", "\n")).unwrap();
        let extfile = format!("{name}.ext");
        openssl(
            dir,
            &[
                "x509",
                "-req",
                "-in",
                &csr,
                "-CA",
                "ca.pem",
                "-CAkey",
                "ca.key",
                "-CAcreateserial",
                "-days",
                "2",
                "-extfile",
                &extfile,
                "-out",
                &pem,
            ],
        );
    }
}

#[test]
fn a_ca_signed_server_with_client_certificates() {
    let pki = tempfile::tempdir().unwrap();
    make_pki(pki.path());
    let p = |name: &str| pki.path().join(name);
    let world = World::with_init(&[
        Path::new("--cert"),
        &p("server.pem"),
        Path::new("--key"),
        &p("server.key"),
        Path::new("--client-ca"),
        &p("ca.pem"),
    ]);
    let login = |extra: &[&Path]| {
        world
            .coffer("alice")
            .args([
                "login",
                &world.url(),
                "--user",
                "alice",
                "-i",
                "alice.id",
                "--ca",
            ])
            .arg(p("ca.pem"))
            .args(extra)
            .output()
            .unwrap()
    };
    // Without a client certificate the server refuses the connection.
    assert!(!login(&[]).status.success());
    let ok = login(&[
        Path::new("--client-cert"),
        &p("client.pem"),
        Path::new("--client-key"),
        &p("client.key"),
    ]);
    assert!(
        ok.status.success(),
        "{}",
        String::from_utf8_lossy(&ok.stderr)
    );
    // The profile verifies through the CA, not a pin, and keeps working.
    let profile: Value =
        serde_json::from_slice(&std::fs::read(world.profile("alice")).unwrap()).unwrap();
    assert!(profile["cert_fingerprint"].is_null());
    let file = world.write("via-ca.txt", b"signed by a CA");
    let put = world.put("alice", &file, &[]);
    world.get_same(
        "alice",
        put["id"].as_str().unwrap(),
        "out/via-ca.txt",
        &file,
    );
    assert_eq!(
        std::fs::read(world.path("out/via-ca.txt")).unwrap(),
        b"signed by a CA"
    );
    // A CA that did not sign the server's certificate is refused.
    let other = tempfile::tempdir().unwrap();
    make_pki(other.path());
    let out = world
        .coffer("alice")
        .args([
            "login",
            &world.url(),
            "--user",
            "alice",
            "-i",
            "alice.id",
            "--ca",
        ])
        .arg(other.path().join("ca.pem"))
        .args(["--client-cert"])
        .arg(p("client.pem"))
        .args(["--client-key"])
        .arg(p("client.key"))
        .output()
        .unwrap();
    assert!(!out.status.success());
}

#[test]
fn a_tree_goes_up_with_put_r_and_comes_back_with_get_r() {
    let world = World::new();
    let root = world.path("project");
    std::fs::create_dir_all(root.join("docs/deep")).unwrap();
    std::fs::write(root.join("top.txt"), b"top").unwrap();
    std::fs::write(root.join("docs/a.md"), b"a").unwrap();
    std::fs::write(root.join("docs/deep/b.bin"), data(70_000, 1)).unwrap();
    std::os::unix::fs::symlink("/etc/passwd", root.join("docs/link")).unwrap();
    let out = world
        .coffer("alice")
        .args(["put", "-r", "project", "--json"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let ids: Vec<String> = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| {
            serde_json::from_str::<Value>(l).unwrap()["id"]
                .as_str()
                .unwrap()
                .to_string()
        })
        .collect();
    assert_eq!(ids.len(), 3, "symbolic links are not followed");
    std::fs::create_dir_all(world.path("restore")).unwrap();
    let out = world
        .coffer("alice")
        .args(["get", "-r", "-o", "restore"])
        .args(&ids)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for rel in ["top.txt", "docs/a.md", "docs/deep/b.bin"] {
        assert_eq!(
            std::fs::read(world.path("restore/project").join(rel)).unwrap(),
            std::fs::read(root.join(rel)).unwrap(),
            "{rel}"
        );
    }
    // Without -r, a directory is refused rather than silently skipped.
    assert!(
        !world
            .coffer("alice")
            .args(["put", "project"])
            .output()
            .unwrap()
            .status
            .success()
    );
}

#[test]
fn a_symlink_planted_at_the_partial_file_is_not_followed() {
    let world = World::new();
    let file = world.write("payroll.csv", b"name,salary\n");
    let id = world.put("alice", &file, &[])["id"]
        .as_str()
        .unwrap()
        .to_string();
    std::fs::create_dir_all(world.path("out")).unwrap();
    let victim = world.write("victim.txt", b"keep me");
    std::os::unix::fs::symlink(&victim, world.path(&format!("out/.coffer-{id}.partial"))).unwrap();
    let out = world.get("alice", &id, "out");
    assert!(!out.status.success(), "wrote through a planted symlink");
    assert_eq!(std::fs::read(&victim).unwrap(), b"keep me");
    assert!(!world.path("out/payroll.csv").exists());
    // A symlink at the final name is not replaced either (no --force).
    std::fs::remove_file(world.path(&format!("out/.coffer-{id}.partial"))).ok();
    std::os::unix::fs::symlink(&victim, world.path("out/payroll.csv")).unwrap();
    assert!(!world.get("alice", &id, "out").status.success());
    assert_eq!(std::fs::read(&victim).unwrap(), b"keep me");
}

/// Whether PostgreSQL and an S3 store are configured for `what` (loudly
/// skipped otherwise, and failed under CI).
fn scale_out_configured(what: &str) -> bool {
    use coffer_server::testing::{postgres_url, require, s3_configured};
    require(
        &format!(
            "PostgreSQL and an S3 store for {what} (COFFER_TEST_POSTGRES, COFFER_TEST_S3_ENDPOINT)"
        ),
        postgres_url().is_some() && s3_configured(),
    )
}

/// A TCP load balancer on 127.0.0.1, as in front of several nodes: each
/// new connection goes to the node port `target` holds at that moment.
struct Balancer {
    target: std::sync::Arc<std::sync::atomic::AtomicU16>,
}

impl Balancer {
    fn listen(port: u16, first: u16) -> Self {
        use std::sync::atomic::Ordering;
        let target = std::sync::Arc::new(std::sync::atomic::AtomicU16::new(first));
        let listener = std::net::TcpListener::bind(("127.0.0.1", port)).unwrap();
        let routes = target.clone();
        std::thread::spawn(move || {
            for client in listener.incoming().flatten() {
                let node = routes.load(Ordering::SeqCst);
                let Ok(server) = std::net::TcpStream::connect(("127.0.0.1", node)) else {
                    continue; // dropped: the client sees a refused connection
                };
                for (mut from, mut to) in [
                    (client.try_clone().unwrap(), server.try_clone().unwrap()),
                    (server, client),
                ] {
                    std::thread::spawn(move || {
                        let _ = std::io::copy(&mut from, &mut to);
                        let _ = to.shutdown(std::net::Shutdown::Both);
                        let _ = from.shutdown(std::net::Shutdown::Both);
                    });
                }
            }
        });
        Self { target }
    }

    fn route_to(&self, port: u16) {
        self.target.store(port, std::sync::atomic::Ordering::SeqCst);
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Three `coffer server run` processes sharing PostgreSQL and an S3 store
/// behind a TCP balancer: an upload begun through one node resumes through
/// another and is downloaded through the third; a node killed mid-upload
/// is survived by moving to another.
#[test]
fn three_nodes_share_uploads_and_survive_one_dying() {
    use coffer_server::testing::Backend;
    if !scale_out_configured("the multi-node test") {
        return;
    }
    let mut world = World::with_init_on(&[], Backend::PostgresS3);
    // The balancer takes the world's address; the nodes listen elsewhere.
    world.kill_server();
    let ports = [free_port(), free_port(), free_port()];
    let mut nodes = Nodes(ports.iter().map(|p| Some(world.spawn_node(*p))).collect());
    let balancer = Balancer::listen(world.port, ports[0]);
    world.login_everyone();

    // Begun through node 0, interrupted, resumed through node 1.
    let file = world.write("ledger.bin", &data(120 * MIB, 21));
    world.interrupted_put("alice", &file, &["--to", "bob"], 6);
    balancer.route_to(ports[1]);
    let put = world.put("alice", &file, &["--to", "bob"]);
    assert!(put["resumed_at"].as_u64().unwrap() > 0, "{put}");
    let id = put["id"].as_str().unwrap().to_string();

    // The recipient downloads through node 2.
    balancer.route_to(ports[2]);
    world.get_same("bob", &id, "bob/ledger.bin", &file);

    // Node 0 dies (kill -9) in the middle of an upload through it; the
    // balancer sends the client's retries to node 1, which takes over once
    // the dead node's lease on the upload has run out.
    balancer.route_to(ports[0]);
    let second = world.write("second.bin", &data(120 * MIB, 22));
    let child = world.put_under_way("alice", &second, &[], 6);
    let mut dead = nodes.0[0].take().unwrap();
    dead.kill().unwrap();
    dead.wait().unwrap();
    balancer.route_to(ports[1]);
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "the upload did not survive node 0: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    // (The request in flight on node 0 is lost with it, as tus has it: the
    // offset moves only when a request completes, so this upload, sent in
    // one request, starts again from 0 on node 1.)
    let put: Value = serde_json::from_slice(&out.stdout).unwrap();
    let second_id = put["id"].as_str().unwrap().to_string();
    balancer.route_to(ports[2]);
    world.get_same("alice", &second_id, "alice/second.bin", &second);
}

/// Server processes killed when the test ends, however it ends.
struct Nodes(Vec<Option<Child>>);

impl Drop for Nodes {
    fn drop(&mut self) {
        for node in self.0.iter_mut().flatten() {
            let _ = node.kill();
            let _ = node.wait();
        }
    }
}

/// `coffer server migrate-store` moves an embedded server to PostgreSQL +
/// S3: a damaged object stops it, a second run finds everything in place,
/// and the moved server serves the same files, shares and receipts.
#[test]
fn migrate_store_moves_an_embedded_server_to_postgres_and_s3() {
    use coffer_server::testing::{Backend, storage_env};
    if !scale_out_configured("the migration test") {
        return;
    }
    let mut world = World::with_init_on(&[], Backend::Embedded);
    world.login_everyone();
    let big = world.write("big.bin", &data(20 * MIB, 31));
    let small = world.write("small.txt", b"hello");
    let big_id = world.put("alice", &big, &["--to", "bob"])["id"]
        .as_str()
        .unwrap()
        .to_string();
    let small_id = world.put("alice", &small, &[])["id"]
        .as_str()
        .unwrap()
        .to_string();

    let dest = tokio::runtime::Runtime::new()
        .unwrap()
        .block_on(storage_env(Backend::PostgresS3));
    let var = |name: &str| {
        dest.iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.clone())
            .unwrap()
    };
    let srv = world.path("srv");
    let migrate = |extra: &[&str]| {
        Std::new(bin())
            .args(["server", "migrate-store", "--data"])
            .arg(&srv)
            .args(["--database", &var("COFFER_DATABASE")])
            .args(["--s3-bucket", &var("COFFER_S3_BUCKET")])
            .args(["--s3-endpoint", &var("COFFER_S3_ENDPOINT")])
            .args(["--s3-region", &var("COFFER_S3_REGION")])
            .args(["--s3-prefix", &var("COFFER_S3_PREFIX")])
            .arg("--s3-allow-http")
            .args(extra)
            .output()
            .unwrap()
    };
    // Not while the server runs: what it wrote behind the copy would be
    // lost.
    let out = migrate(&["--keep-config"]);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("stop it first"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    world.kill_server();

    // A damaged source object stops the migration, and nothing moves.
    let object = world.path(&format!(
        "srv/objects/{}/{}/{small_id}",
        &small_id[..2],
        &small_id[2..4]
    ));
    let original = std::fs::read(&object).unwrap();
    let mut damaged = original.clone();
    damaged[10] ^= 1;
    std::fs::write(&object, &damaged).unwrap();
    let out = migrate(&["--keep-config"]);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("damaged"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    std::fs::write(&object, &original).unwrap();

    let first = migrate(&["--keep-config"]);
    assert!(
        first.status.success(),
        "{}",
        String::from_utf8_lossy(&first.stderr)
    );
    let text = String::from_utf8_lossy(&first.stdout).to_string();
    // (Whatever the failed run copied before the damaged object counts as
    // already in place now.)
    assert!(
        text.contains("objects: 1 copied") || text.contains("objects: 2 copied"),
        "{text}"
    );
    assert!(text.contains("files: 2 rows"), "{text}");
    // Run again (as after an interruption): everything is found in place.
    let second = migrate(&[]);
    assert!(
        second.status.success(),
        "{}",
        String::from_utf8_lossy(&second.stderr)
    );
    let text = String::from_utf8_lossy(&second.stdout).to_string();
    assert!(
        text.contains("objects: 0 copied (0 bytes), 2 already in place"),
        "{text}"
    );
    let config = std::fs::read_to_string(world.path("srv/config.toml")).unwrap();
    assert!(
        config.contains("postgres://") && config.contains("kind = \"s3\""),
        "{config}"
    );

    // config.toml holds no database password (it says so): the server is
    // given the whole URL in COFFER_DATABASE, as the operator is told.
    assert!(
        !config.contains(&var("COFFER_DATABASE")),
        "the password was written: {config}"
    );
    assert!(
        text.contains("COFFER_DATABASE"),
        "the operator is not told where the password goes: {text}"
    );
    world.storage = vec![("COFFER_DATABASE".into(), var("COFFER_DATABASE"))];

    // The old objects are gone from view: the server now reads PostgreSQL
    // and S3 only.
    std::fs::remove_dir_all(world.path("srv/objects")).unwrap();
    world.start();
    world.get_same("bob", &big_id, "bob/big.bin", &big);
    world.get_same("alice", &small_id, "alice/small.txt", &small);
    world
        .coffer("alice")
        .args(["receipts", "verify"])
        .assert()
        .success();
}

/// The operator's view: one JSON access line per request, with the route
/// template, status, sizes and user, and none of the secrets that passed
/// through (token, link secret, link password, file name, file id).
#[test]
fn the_server_logs_one_json_access_line_per_request_and_no_secret() {
    let mut world = World::new();
    world.kill_server();
    // The text log of the logins so far: plain text in a file, no colour.
    let log_path = world.path(&format!("server-{}.log", world.port));
    let text = std::fs::read_to_string(&log_path).unwrap();
    assert!(text.contains("coffer::access"), "{text}");
    assert!(
        !text.contains('\u{1b}'),
        "terminal escapes in a log file: {text:?}"
    );
    world
        .storage
        .push(("COFFER_LOG_FORMAT".into(), "json".into()));
    world.start();
    let file = world.write("quarterly-secret-report.pdf", &data(70_000, 9));
    let put = world.put("alice", &file, &[]);
    let id = put["id"].as_str().unwrap().to_string();
    let out = world
        .coffer("alice")
        .args(["link", &id, "--password"])
        .env("COFFER_LINK_PASSWORD", "correct horse battery")
        .output()
        .unwrap();
    let url = String::from_utf8(out.stdout).unwrap().trim().to_string();
    let secret = url.split("#k=").nth(1).unwrap().to_string();
    std::fs::create_dir_all(world.path("got")).unwrap();
    assert!(
        Command::new(bin())
            .current_dir(world.dir.path())
            .env("COFFER_HOME", world.path("nobody-home"))
            .env("COFFER_LINK_PASSWORD", "correct horse battery")
            .args(["get", &url, "-o", "got"])
            .output()
            .unwrap()
            .status
            .success()
    );
    world.coffer("mallory").args(["get", &id]).assert().code(8);
    world.kill_server();

    let log = std::fs::read_to_string(world.path(&format!("server-{}.log", world.port))).unwrap();
    let lines: Vec<Value> = log
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect();
    let access: Vec<&Value> = lines
        .iter()
        .filter(|l| l["target"] == "coffer::access")
        .collect();
    let by = |method: &str, route: &str| {
        access
            .iter()
            .filter(|l| l["fields"]["method"] == method && l["fields"]["route"] == route)
            .collect::<Vec<_>>()
    };
    let uploads = by("POST", "/v1/uploads");
    assert!(!uploads.is_empty(), "{access:#?}");
    assert_eq!(uploads[0]["fields"]["user"], "alice");
    assert!(uploads[0]["fields"]["status"].as_u64().unwrap() < 300);
    let patches = by("PATCH", "/v1/uploads/{id}");
    let sent: u64 = patches
        .iter()
        .map(|l| l["fields"]["bytes_in"].as_u64().unwrap())
        .sum();
    assert!(sent >= 70_000, "bytes in of the upload: {sent}");
    let listed = by("POST", "/v1/links/{link}/open");
    assert!(
        listed
            .iter()
            .any(|l| l["fields"]["bytes_out"].as_u64().unwrap() > 0),
        "a JSON answer's size: {listed:#?}"
    );
    assert!(
        access.iter().any(|l| l["fields"]["user"] == "mallory"
            && l["fields"]["status"] == 404
            && l["fields"]["route"]
                .as_str()
                .is_some_and(|r| r.starts_with("/v1/files/{id}"))),
        "{access:#?}"
    );
    assert!(access.iter().all(|l| {
        l["fields"]["request_id"]
            .as_str()
            .is_some_and(|id| id.len() == 16)
    }));

    let profile = std::fs::read_to_string(world.path("home/profiles/alice.json")).unwrap();
    let token: Value = serde_json::from_str(&profile).unwrap();
    let token = token["token"].as_str().unwrap();
    for secret in [
        token,
        &secret,
        "correct horse battery",
        "quarterly-secret-report",
        &id,
    ] {
        assert!(!log.contains(secret), "the log holds {secret:?}");
    }
}

/// A network partition mid-transfer (no bytes, no FIN, no RST) is a
/// failure after the stall limit, and the transfer resumes by itself on a
/// new connection: byte-identical, with a line saying so.
#[test]
fn a_frozen_connection_mid_put_or_get_is_abandoned_and_resumed() {
    let mut world = World::new();
    world.reconfigure(&[("body_stall_secs = 30", "body_stall_secs = 2")]);
    let file = world.write("big.bin", &data(24 << 20, 4));
    let through = |up: bool, profile: &str| {
        let port = faulty_proxy(world.port, up, 6 << 20, Fault::Freeze);
        let out = world
            .coffer(profile)
            .args([
                "login",
                &format!("https://127.0.0.1:{port}"),
                "--user",
                "alice",
                "-i",
            ])
            .arg(world.path("alice.id"))
            .args(["--fingerprint", &world.fingerprint])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    };

    through(true, "alice-up");
    let started = std::time::Instant::now();
    let out = world
        .coffer("alice-up")
        .env("COFFER_STALL_TIMEOUT", "2s")
        .args(["put", "--json"])
        .arg(&file)
        .timeout(Duration::from_secs(60))
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{said}");
    assert!(
        said.contains("stalled") && said.contains("resuming"),
        "{said}"
    );
    assert!(started.elapsed() < Duration::from_secs(40));
    let put: Value = serde_json::from_slice(&out.stdout).unwrap();
    let id = put["id"].as_str().unwrap().to_string();
    world.get_same("alice", &id, "plain/big.bin", &file);

    through(false, "alice-down");
    std::fs::create_dir_all(world.path("down")).unwrap();
    let out = world
        .coffer("alice-down")
        .env("COFFER_STALL_TIMEOUT", "2s")
        .args(["get", &id, "-o", "down"])
        .timeout(Duration::from_secs(60))
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{said}");
    assert!(
        said.contains("stalled") && said.contains("resuming"),
        "{said}"
    );
    assert_eq!(sha(&world.path("down/big.bin")), sha(&file));
}

/// A batch of 50 killed after 20 uploads, re-run with --skip-existing:
/// 30 more uploads, the 20 recognised by name, path, size and BLAKE3 (a
/// changed file with the same name is uploaded again), and no duplicate.
#[test]
fn an_interrupted_batch_rerun_with_skip_existing_uploads_only_the_rest() {
    use std::io::BufRead;
    // On the default limits: a signed-in batch is limited per user, far
    // above what 50 files need.
    let world = World::new();
    std::fs::create_dir_all(world.path("batch")).unwrap();
    let files: Vec<_> = (0..50)
        .map(|i| {
            world.write(
                &format!("batch/f{i:02}.csv"),
                &data(1000 + i * 37, i as u64),
            )
        })
        .collect();
    let put = |extra: &[&str]| {
        let mut cmd = Std::new(bin());
        cmd.current_dir(world.dir.path())
            .env("COFFER_HOME", world.path("home"))
            .env("COFFER_PROFILE", "alice")
            .args(["put", "--json"])
            .args(extra)
            .args(&files);
        cmd
    };
    // Night 1 dies after its 20th upload.
    let mut first = put(&["--skip-existing"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let lines = std::io::BufReader::new(first.stdout.take().unwrap()).lines();
    let done: Vec<Value> = lines
        .take(20)
        .map(|l| serde_json::from_str(&l.unwrap()).unwrap())
        .collect();
    first.kill().unwrap();
    let _ = first.wait();
    assert_eq!(done.len(), 20);
    // The kill may land just after a 21st finished: count what is stored.
    let ls_count = || {
        let listed = world
            .coffer("alice")
            .args(["ls", "--json"])
            .output()
            .unwrap();
        String::from_utf8(listed.stdout).unwrap().lines().count()
    };
    let stored_before = ls_count();
    assert!((20..=21).contains(&stored_before), "{stored_before}");

    // One of the 20 changed since: same name, other bytes.
    std::fs::write(&files[3], data(1111, 99)).unwrap();
    let out = put(&["--skip-existing"]).output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let rerun = json_lines(&out.stdout);
    assert_eq!(rerun.len(), 50);
    let skipped: Vec<&Value> = rerun.iter().filter(|r| r["skipped"] == true).collect();
    assert_eq!(skipped.len(), stored_before - 1, "{rerun:#?}");
    for s in &skipped {
        if let Some(before) = done.iter().find(|d| d["path"] == s["path"]) {
            assert_eq!(before["id"], s["id"], "the id of the earlier upload");
        }
    }
    assert!(
        rerun
            .iter()
            .any(|r| r["path"].as_str().unwrap().ends_with("f03.csv") && r["skipped"].is_null())
    );

    // A third run uploads nothing; a plain put (no flag) still uploads.
    let third = put(&["--skip-existing"]).output().unwrap();
    let third = String::from_utf8(third.stdout).unwrap();
    assert_eq!(
        third
            .lines()
            .filter(|l| l.contains("\"skipped\":true"))
            .count(),
        50
    );
    // 50 and the old version of the changed one: no duplicates (a file the
    // kill cut short was resumed, not uploaded twice).
    assert_eq!(ls_count(), 51, "no duplicates");
    // The recognised file really is the one with those bytes.
    let id = skipped[0]["id"].as_str().unwrap();
    let name = Path::new(skipped[0]["path"].as_str().unwrap())
        .file_name()
        .unwrap()
        .to_str()
        .unwrap()
        .to_string();
    world.get_same(
        "alice",
        id,
        &format!("check/{name}"),
        Path::new(skipped[0]["path"].as_str().unwrap()),
    );
}

/// Retention: `--expires` hides a file at its time and the sweep deletes
/// it (audited); more than the server's maximum is refused; a one-shot
/// transfer (`--delete-when-received`) is gone once its recipient has it.
#[test]
fn files_expire_are_swept_and_one_shot_transfers_go_when_received() {
    let mut world = World::new();
    world.reconfigure(&[
        ("sweep_interval_secs = 60", "sweep_interval_secs = 1"),
        ("max_file_ttl_secs = 0", "max_file_ttl_secs = 86400"),
    ]);
    let short = world.write("short.csv", b"kept two seconds\n");
    let long = world.write("long.csv", b"kept two hours\n");
    let a = world.put("alice", &short, &["--expires", "2s", "--to", "bob"]);
    let b = world.put("alice", &long, &["--expires", "2h"]);
    let (a, b) = (a["id"].as_str().unwrap(), b["id"].as_str().unwrap());
    let refused = world
        .coffer("alice")
        .args(["put", "--expires", "30d"])
        .arg(&long)
        .output()
        .unwrap();
    assert!(!refused.status.success());
    assert!(
        String::from_utf8_lossy(&refused.stderr).contains("at most 86400 s"),
        "{}",
        String::from_utf8_lossy(&refused.stderr)
    );
    let listed = world
        .coffer("alice")
        .args(["ls", "--json"])
        .output()
        .unwrap();
    let listed = String::from_utf8(listed.stdout).unwrap();
    assert_eq!(listed.lines().count(), 2, "{listed}");
    assert!(
        listed.lines().all(|l| l.contains("\"expires_at\":1")),
        "{listed}"
    );

    std::thread::sleep(Duration::from_millis(3500));
    world.coffer("alice").args(["get", a]).assert().code(8);
    world.coffer("bob").args(["get", a]).assert().code(8);
    let inbox = world
        .coffer("bob")
        .args(["inbox", "--json"])
        .output()
        .unwrap();
    assert_eq!(String::from_utf8(inbox.stdout).unwrap().lines().count(), 0);
    world.get_same("alice", b, "kept/long.csv", &long);

    // One shot: bob fetches it; then it is gone for alice too.
    let once = world.write("once.pdf", &data(5000, 8));
    let sent = world
        .coffer("alice")
        .args(["send", "--to", "bob", "--delete-when-received", "--json"])
        .arg(&once)
        .output()
        .unwrap();
    assert!(
        sent.status.success(),
        "{}",
        String::from_utf8_lossy(&sent.stderr)
    );
    let sent: Value = serde_json::from_slice(&sent.stdout).unwrap();
    let c = sent["id"].as_str().unwrap();
    std::fs::create_dir_all(world.path("in")).unwrap();
    world
        .coffer("bob")
        .args(["inbox", "--get-all", "-o", "in"])
        .assert()
        .success();
    assert_eq!(sha(&world.path("in/once.pdf")), sha(&once));
    world.coffer("alice").args(["get", c]).assert().code(8);

    // Both deletions are in the audit log, after a sweep.
    std::thread::sleep(Duration::from_millis(1500));
    let out = Std::new(bin())
        .args(["server", "audit", "export", "--json", "--data"])
        .arg(world.path("srv"))
        .envs(world.storage.iter().map(|(k, v)| (k, v)))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let events = json_lines(&out.stdout);
    let did = |action: &str, id: &str| {
        events
            .iter()
            .any(|e| e["action"] == action && e["target"] == id)
    };
    assert!(did("expire", a), "{events:#?}");
    assert!(did("delete_received", c));
    assert!(!did("expire", b));
    if world.path("srv/objects").exists() {
        let names: Vec<String> = walk(&world.path("srv/objects"));
        assert!(
            !names.iter().any(|n| n.contains(a)),
            "swept bytes: {names:?}"
        );
        assert!(!names.iter().any(|n| n.contains(c)));
        assert!(names.iter().any(|n| n.contains(b)));
    }
}

fn walk(dir: &Path) -> Vec<String> {
    let mut names = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap().map_while(Result::ok) {
        let path = entry.path();
        if path.is_dir() {
            names.extend(walk(&path));
        } else {
            names.push(path.display().to_string());
        }
    }
    names
}

/// A client over the server's rate limit waits as `Retry-After` says and
/// says so, instead of failing or pausing in silence.
#[test]
fn a_rate_limited_client_says_it_waits_and_finishes() {
    let mut world = World::new();
    let files: Vec<_> = (0..6)
        .map(|i| world.write(&format!("r{i}.txt"), &data(100, i)))
        .collect();
    for file in &files {
        world.put("alice", file, &[]);
    }
    world.reconfigure(&[
        (
            "user_requests_per_window = 3000\n",
            "user_requests_per_window = 2\n",
        ),
        ("\nwindow_secs = 60", "\nwindow_secs = 2"),
    ]);
    // A listing is one request a page; a download takes several.
    std::fs::create_dir_all(world.path("got")).unwrap();
    let id = world.put("alice", &files[0], &[])["id"]
        .as_str()
        .unwrap()
        .to_string();
    let out = world
        .coffer("alice")
        .args(["get", &id, "-o", "got/r0.txt"])
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{said}");
    assert_eq!(sha(&world.path("got/r0.txt")), sha(&files[0]));
    assert!(
        said.contains("rate limited by the server; retrying in"),
        "{said}"
    );
}

/// `ls` of 1000 files on the default limits takes a handful of requests:
/// each page of the listing (200 files) carries every file's wrap, header
/// and recipients, so nothing is asked per file. And a batch `put` of the
/// 1000 is two requests a file and stays under the per-user limit.
#[test]
fn ls_of_a_thousand_files_takes_a_few_requests() {
    let mut world = World::new();
    std::fs::create_dir_all(world.path("many")).unwrap();
    for i in 0..1000 {
        world.write(
            &format!("many/n{i:04}.txt"),
            format!("line {i}\n").as_bytes(),
        );
    }
    let started = std::time::Instant::now();
    let out = world
        .coffer("alice")
        .args(["put", "-r", "--json", "many"])
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{said}");
    assert!(!said.contains("rate limited"), "{said}");
    let put = json_lines(&out.stdout);
    assert_eq!(put.len(), 1000);
    eprintln!("put -r of 1000 files: {:?}", started.elapsed());
    let shared = put[7]["id"].as_str().unwrap().to_string();
    world
        .coffer("alice")
        .args(["share", &shared, "--with", "bob"])
        .assert()
        .success();

    world.kill_server();
    // Each new upload is one POST and one PATCH: no HEAD for an offset the
    // client knows is 0.
    let text_log = world.path(&format!("server-{}.log", world.port));
    let count = |route: &str| {
        std::fs::read_to_string(&text_log)
            .unwrap_or_default()
            .lines()
            .filter(|l| l.contains("coffer::access") && l.contains(route))
            .count()
    };
    wait_for("the access lines of the puts", || {
        count("method=POST route=/v1/uploads ") == 1000
    });
    assert_eq!(count("method=PATCH route=/v1/uploads/{id} "), 1000);
    assert_eq!(count("method=HEAD route=/v1/uploads/{id} "), 0);
    world
        .storage
        .push(("COFFER_LOG_FORMAT".into(), "json".into()));
    world.start();
    let out = world
        .coffer("alice")
        .args(["ls", "--json"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    world.kill_server();
    let listed = json_lines(&out.stdout);
    assert_eq!(listed.len(), 1000);
    let mut names: Vec<&str> = listed.iter().map(|f| f["name"].as_str().unwrap()).collect();
    names.sort_unstable();
    assert_eq!(names[0], "many/n0000.txt");
    assert_eq!(names[999], "many/n0999.txt");
    assert!(listed.iter().all(|f| f["size"].as_u64().is_some()));
    let with_bob: Vec<&Value> = listed
        .iter()
        .filter(|f| f["shared_with"] == serde_json::json!(["bob"]))
        .collect();
    assert_eq!(with_bob.len(), 1);
    assert_eq!(with_bob[0]["id"], shared.as_str());

    let log = std::fs::read_to_string(world.path(&format!("server-{}.log", world.port))).unwrap();
    let requests: Vec<Value> = log
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|l| l["target"] == "coffer::access")
        .collect();
    // Five pages, and whatever the session needs around them.
    assert!(
        (5..=8).contains(&requests.len()),
        "{} requests: {requests:#?}",
        requests.len()
    );
}

/// `inbox --get-all | head -1`: the reader goes away after the first line,
/// which ends the run; every file already in place was acknowledged before
/// its line, so the next run fetches exactly the rest and nothing twice.
#[test]
fn an_inbox_piped_into_head_fetches_nothing_twice() {
    let world = World::new();
    for i in 0..4 {
        let file = world.write(&format!("p{i}.csv"), format!("part {i}\n").as_bytes());
        world.put("alice", &file, &["--to", "bob"]);
    }
    std::fs::create_dir_all(world.path("in")).unwrap();
    let piped = Std::new("bash")
        .current_dir(world.dir.path())
        .env("COFFER_HOME", world.path("home"))
        .env("COFFER_PROFILE", "bob")
        .args([
            "-c",
            "set -o pipefail; \"$0\" inbox --get-all -o in | head -1",
        ])
        .arg(bin())
        .output()
        .unwrap();
    assert!(
        piped.status.success(),
        "{}",
        String::from_utf8_lossy(&piped.stderr)
    );
    world
        .coffer("bob")
        .args(["inbox", "--get-all", "-o", "in"])
        .assert()
        .success();
    let mut names: Vec<String> = std::fs::read_dir(world.path("in"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert_eq!(names, ["p0.csv", "p1.csv", "p2.csv", "p3.csv"]);
}

/// `put - --name` reads standard input (a pipe in a batch job), stores the
/// given name, and leaves no staged copy behind, whether it succeeds or
/// fails; bad combinations are usage errors (2) that upload nothing.
#[test]
fn put_from_standard_input_round_trips_and_leaves_no_stage() {
    let world = World::new();
    let bytes = data(5 * MIB + 3, 41);
    let put_stdin = |extra: &[&str], input: &[u8]| {
        world
            .coffer("alice")
            .args(["put", "-"])
            .args(extra)
            .arg("--json")
            .write_stdin(input.to_vec())
            .output()
            .unwrap()
    };
    let staged = || {
        let dir = world.path("home/state/alice/uploads");
        std::fs::read_dir(&dir)
            .map(|entries| {
                entries
                    .filter_map(Result::ok)
                    .filter(|e| e.file_name().to_string_lossy().starts_with(".stdin-"))
                    .count()
            })
            .unwrap_or(0)
    };
    let out = put_stdin(
        &["--name", "db.sql.gz", "--to", "bob", "--skip-existing"],
        &bytes,
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let put = &json_lines(&out.stdout)[0];
    assert_eq!(put["path"], "-", "{put}");
    assert_eq!(put["size"], bytes.len() as u64, "{put}");
    let id = put["id"].as_str().unwrap().to_string();
    assert_eq!(staged(), 0, "the stage of standard input is removed");

    // Bob gets it under the given name, byte for byte, and can stream it.
    let got = world.get("bob", &id, "in");
    assert!(
        got.status.success(),
        "{}",
        String::from_utf8_lossy(&got.stderr)
    );
    assert!(std::fs::read(world.path("in/db.sql.gz")).unwrap() == bytes);
    let streamed = world
        .coffer("bob")
        .args(["get", &id, "-o", "-"])
        .output()
        .unwrap();
    assert!(streamed.status.success());
    assert!(streamed.stdout == bytes);

    // The same input again with --skip-existing is recognised: no upload.
    let again = put_stdin(
        &["--name", "db.sql.gz", "--to", "bob", "--skip-existing"],
        &bytes,
    );
    assert!(
        again.status.success(),
        "{}",
        String::from_utf8_lossy(&again.stderr)
    );
    let again = &json_lines(&again.stdout)[0];
    assert_eq!(again["skipped"], true, "{again}");
    assert_eq!(again["id"], id.as_str());

    // Empty input is a file too.
    let empty = put_stdin(&["--name", "empty.txt"], b"");
    assert!(
        empty.status.success(),
        "{}",
        String::from_utf8_lossy(&empty.stderr)
    );

    // Usage errors: no name, a name with a path in it, stdin with files or
    // --name on a file. Each exits 2 and stores nothing.
    let listed = || {
        let ls = world
            .coffer("alice")
            .args(["ls", "--json"])
            .output()
            .unwrap();
        json_lines(&ls.stdout).len()
    };
    let before = listed();
    let file = world.write("plain.txt", b"x");
    let file = file.to_str().unwrap();
    for extra in [
        &[][..],
        &["--name", "../etc/passwd"][..],
        &["--name", ""][..],
        &["--name", "a.txt", file][..],
    ] {
        let out = put_stdin(extra, b"secret");
        assert_eq!(
            out.status.code(),
            Some(2),
            "{extra:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let named_file = world
        .coffer("alice")
        .args(["put", file, "--name", "other.txt"])
        .output()
        .unwrap();
    assert_eq!(named_file.status.code(), Some(2));
    // A recipient that does not exist fails after staging: the stage goes.
    let nobody = put_stdin(&["--name", "x.bin", "--to", "nosuchuser"], &bytes);
    assert!(!nobody.status.success());
    assert!(
        String::from_utf8_lossy(&nobody.stderr).contains("nosuchuser"),
        "{}",
        String::from_utf8_lossy(&nobody.stderr)
    );
    assert_eq!(listed(), before);
    assert_eq!(staged(), 0, "no stage left after a failure");
}

/// `server user set-key`: bob lost his identity. His sessions end, the files
/// wrapped to the old key are listed, the old identity no longer logs in,
/// and once alice shares again (accepting the new key on purpose) bob reads
/// the file with the new one.
#[test]
fn a_replaced_user_key_ends_sessions_and_lists_what_to_share_again() {
    let world = World::new();
    let file = world.write("results.csv", &data(70_000, 77));
    let put = world.put("alice", &file, &["--to", "bob"]);
    let id = put["id"].as_str().unwrap().to_string();
    let mine = world.put("bob", &world.write("own.txt", b"bob's own"), &[]);
    let keygen = Std::new(bin())
        .current_dir(world.dir.path())
        .args(["keygen", "-o", "bob2.id"])
        .output()
        .unwrap();
    let new_key = String::from_utf8(keygen.stdout).unwrap().trim().to_string();
    let server_cmd = |args: &[&str]| {
        Command::new(bin())
            .args(["server", "user"])
            .args(args)
            .arg("--data")
            .arg(world.path("srv"))
            .envs(world.storage.iter().map(|(k, v)| (k, v)))
            .output()
            .unwrap()
    };
    let set = server_cmd(&["set-key", "bob", "--key", &new_key, "--json"]);
    assert!(
        set.status.success(),
        "{}",
        String::from_utf8_lossy(&set.stderr)
    );
    let listed = json_lines(&set.stdout);
    assert!(
        listed
            .iter()
            .any(|l| l["id"] == id.as_str() && l["owner"] == "alice" && l["reshare"] == true),
        "{listed:?}"
    );
    assert!(
        listed
            .iter()
            .any(|l| l["id"] == mine["id"] && l["old_key_only"] == true),
        "{listed:?}"
    );
    let unknown = server_cmd(&["set-key", "nobody", "--key", &new_key]);
    assert!(!unknown.status.success());
    assert!(String::from_utf8_lossy(&unknown.stderr).contains("nobody"));

    // The old identity's session is gone and it cannot log in again.
    let old = world.coffer("bob").args(["ls"]).output().unwrap();
    assert_eq!(
        old.status.code(),
        Some(7),
        "{}",
        String::from_utf8_lossy(&old.stderr)
    );
    let login = world
        .coffer("bob")
        .args(["login", &world.url(), "--user", "bob", "-i"])
        .arg(world.path("bob2.id"))
        .args(["--fingerprint", &world.fingerprint])
        .output()
        .unwrap();
    assert!(
        login.status.success(),
        "{}",
        String::from_utf8_lossy(&login.stderr)
    );
    // The file is still wrapped to the old key: the new one cannot open it.
    assert!(!world.get("bob", &id, "before").status.success());

    // Alice's client pinned bob's old key: sharing again needs her consent.
    let refused = world
        .coffer("alice")
        .args(["share", &id, "--with", "bob"])
        .output()
        .unwrap();
    assert!(!refused.status.success());
    let shared = world
        .coffer("alice")
        .args(["share", &id, "--with", "bob", "--accept-new-key"])
        .output()
        .unwrap();
    assert!(
        shared.status.success(),
        "{}",
        String::from_utf8_lossy(&shared.stderr)
    );
    let got = world.get("bob", &id, "after");
    assert!(
        got.status.success(),
        "{}",
        String::from_utf8_lossy(&got.stderr)
    );
    assert_eq!(sha(&world.path("after/results.csv")), sha(&file));

    // Audited, and the chain still verifies.
    let verify = Command::new(bin())
        .args(["server", "audit", "verify", "--data"])
        .arg(world.path("srv"))
        .envs(world.storage.iter().map(|(k, v)| (k, v)))
        .output()
        .unwrap();
    assert!(
        verify.status.success(),
        "{}",
        String::from_utf8_lossy(&verify.stderr)
    );
    let export = Command::new(bin())
        .args(["server", "audit", "export", "--data"])
        .arg(world.path("srv"))
        .envs(world.storage.iter().map(|(k, v)| (k, v)))
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&export.stdout).contains("user_set_key"));
}

/// `server user remove`: bob leaves. A dry run changes nothing; then his
/// file goes for alice too (listing, download, link), alice's file shared
/// with him stays hers, his upload, upload link and session go, the audit
/// log says so, and a new "bob" is not trusted with alice's pinned key.
#[test]
fn a_removed_user_takes_their_files_links_and_uploads_with_them() {
    let world = World::new();
    let alices = world.put(
        "alice",
        &world.write("a.csv", &data(50_000, 1)),
        &["--to", "bob"],
    );
    let bobs = world.put(
        "bob",
        &world.write("b.csv", &data(60_000, 2)),
        &["--to", "alice"],
    );
    let bobs_id = bobs["id"].as_str().unwrap().to_string();
    let link = world
        .coffer("bob")
        .args(["link", &bobs_id])
        .output()
        .unwrap();
    assert!(
        link.status.success(),
        "{}",
        String::from_utf8_lossy(&link.stderr)
    );
    let link = String::from_utf8(link.stdout).unwrap().trim().to_string();
    let request = world.coffer("bob").args(["request"]).output().unwrap();
    assert!(
        request.status.success(),
        "{}",
        String::from_utf8_lossy(&request.stderr)
    );
    world.interrupted_put("bob", &world.write("big.bin", &data(64 * MIB, 3)), &[], 2);
    let remove = |extra: &[&str]| {
        Command::new(bin())
            .args(["server", "user", "remove"])
            .args(extra)
            .arg("--data")
            .arg(world.path("srv"))
            .envs(world.storage.iter().map(|(k, v)| (k, v)))
            .output()
            .unwrap()
    };
    let inbox = || {
        let out = world
            .coffer("alice")
            .args(["ls", "--shared-with-me", "--json"])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    };

    let dry = remove(&["bob"]);
    assert!(
        !dry.status.success(),
        "a dry run must not look like a removal"
    );
    assert!(String::from_utf8_lossy(&dry.stdout).contains("would remove bob: 1 file(s)"));
    assert!(String::from_utf8_lossy(&dry.stderr).contains("--yes"));
    assert!(inbox().contains(&bobs_id), "the dry run removed something");

    let done = remove(&["bob", "--yes", "--json"]);
    assert!(
        done.status.success(),
        "{}",
        String::from_utf8_lossy(&done.stderr)
    );
    let summary: Value = serde_json::from_slice(&done.stdout).unwrap();
    assert_eq!(summary["files"], 1, "{summary}");
    assert_eq!(
        summary["recipients"],
        serde_json::json!(["alice"]),
        "{summary}"
    );
    assert_eq!(summary["shared_with_them"], 1, "{summary}");
    assert_eq!(summary["uploads"], 1, "{summary}");
    assert_eq!(summary["requests"], 1, "{summary}");

    // Alice: bob's file is gone everywhere, her own file is untouched.
    assert!(!inbox().contains(&bobs_id));
    assert!(!world.get("alice", &bobs_id, "gone").status.success());
    let fetched = Command::new(bin())
        .current_dir(world.dir.path())
        .env("COFFER_HOME", world.path("nobody-home"))
        .args(["get", &link, "-o", "via-link"])
        .output()
        .unwrap();
    assert!(!fetched.status.success());
    assert!(!world.path("via-link/b.csv").exists());
    let mine = world
        .coffer("alice")
        .args(["ls", "--json"])
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&mine.stdout).contains(alices["id"].as_str().unwrap()));
    if backend().local_objects() {
        assert!(!object(&world, &bobs_id).exists(), "the bytes stayed");
        let staged = std::fs::read_dir(world.path("srv/uploads"))
            .unwrap()
            .count();
        assert_eq!(staged, 0, "staged bytes stayed");
    }
    // Bob's session is gone with him.
    let bob = world.coffer("bob").args(["ls"]).output().unwrap();
    assert!(!bob.status.success());
    let users = remove(&["nobody", "--yes"]);
    assert!(String::from_utf8_lossy(&users.stderr).contains("no such user: nobody"));

    // The audit log records it and still verifies.
    let export = Command::new(bin())
        .args(["server", "audit", "export", "--json", "--data"])
        .arg(world.path("srv"))
        .envs(world.storage.iter().map(|(k, v)| (k, v)))
        .output()
        .unwrap();
    let entries = json_lines(&export.stdout);
    let removal = entries
        .iter()
        .find(|e| e["action"] == "user_remove")
        .unwrap();
    assert_eq!(removal["target"], "bob");

    // Someone new registered as "bob" is not bob to alice's client.
    let keygen = Std::new(bin())
        .current_dir(world.dir.path())
        .args(["keygen", "-o", "newbob.id"])
        .output()
        .unwrap();
    let new_key = String::from_utf8(keygen.stdout).unwrap().trim().to_string();
    let added = Command::new(bin())
        .args(["server", "user", "add", "bob", "--key", &new_key, "--data"])
        .arg(world.path("srv"))
        .envs(world.storage.iter().map(|(k, v)| (k, v)))
        .output()
        .unwrap();
    assert!(
        added.status.success(),
        "{}",
        String::from_utf8_lossy(&added.stderr)
    );
    let resend = world
        .coffer("alice")
        .args(["put"])
        .arg(world.path("a.csv"))
        .args(["--to", "bob"])
        .output()
        .unwrap();
    assert!(
        !resend.status.success(),
        "alice's client sent to a new key without asking"
    );
    assert!(
        String::from_utf8_lossy(&resend.stderr).contains("--accept-new-key"),
        "{}",
        String::from_utf8_lossy(&resend.stderr)
    );
}

/// `server backup` while the server runs, then the machine is lost (data
/// directory, master key, database and bucket prefix gone) and `server
/// restore` brings every file back from the one encrypted file. A wrong
/// identity, a truncated backup and a flipped byte restore nothing.
#[test]
fn a_backup_restores_every_file_after_the_server_is_wiped() {
    let mut world = World::new();
    let first = world.write("ledger-2026.csv", &data(3 * MIB, 11));
    let second = world.write("scan.pdf", &data(200_000, 12));
    let shared = world.put("alice", &first, &["--to", "bob"]);
    let own = world.put("bob", &second, &[]);
    let keygen = Std::new(bin())
        .current_dir(world.dir.path())
        .args(["keygen", "-o", "backup.id"])
        .output()
        .unwrap();
    let backup_key = String::from_utf8(keygen.stdout).unwrap().trim().to_string();
    let home = world.dir.path().to_path_buf();
    let admin = |args: &[&str], storage: &[(String, String)]| {
        Command::new(bin())
            .current_dir(&home)
            .arg("server")
            .args(args)
            .envs(storage.iter().map(|(k, v)| (k, v)))
            .output()
            .unwrap()
    };
    let srv = world.path("srv").display().to_string();
    let made = admin(
        &[
            "backup",
            "--data",
            &srv,
            "--to",
            "nightly.coffer",
            "-r",
            &backup_key,
            "--json",
        ],
        &world.storage,
    );
    assert!(
        made.status.success(),
        "{}",
        String::from_utf8_lossy(&made.stderr)
    );
    let summary: Value = serde_json::from_slice(&made.stdout).unwrap();
    assert_eq!(
        (summary["files"].as_u64(), summary["objects"].as_u64()),
        (Some(2), Some(2))
    );
    assert_eq!(summary["master_key"], true);
    let backup = std::fs::read(world.path("nightly.coffer")).unwrap();
    let master = std::fs::read_to_string(world.path("srv.master.key")).unwrap();
    for secret in [
        b"ledger-2026".as_slice(),
        master.trim().as_bytes(),
        b"BEGIN PRIVATE",
    ] {
        assert!(
            !backup.windows(secret.len()).any(|w| w == secret),
            "the backup holds a secret in clear"
        );
    }

    // The machine is lost.
    world.kill_server();
    std::fs::remove_dir_all(world.path("srv")).unwrap();
    std::fs::remove_file(world.path("srv.master.key")).unwrap();
    world.storage = tokio::runtime::Runtime::new()
        .unwrap()
        .block_on(coffer_server::testing::storage_env(backend()));

    let storage = world.storage.clone();
    let restore = |from: &str, identity: &str| {
        admin(
            &["restore", "--from", from, "-i", identity, "--data", &srv],
            &storage,
        )
    };
    let root = world.dir.path().to_path_buf();
    let nothing_left = || {
        ["srv", "srv.restoring", "srv.master.key"]
            .iter()
            .all(|name| !root.join(name).exists())
    };
    let wrong = restore("nightly.coffer", "alice.id");
    assert!(!wrong.status.success());
    assert!(String::from_utf8_lossy(&wrong.stderr).contains("cannot open the backup"));
    assert!(nothing_left());
    std::fs::write(world.path("cut.coffer"), &backup[..backup.len() - 100]).unwrap();
    assert!(!restore("cut.coffer", "backup.id").status.success());
    assert!(nothing_left(), "a truncated backup left something behind");
    let mut flipped = backup.clone();
    let middle = flipped.len() / 2;
    flipped[middle] ^= 0x20;
    std::fs::write(world.path("flipped.coffer"), &flipped).unwrap();
    assert!(!restore("flipped.coffer", "backup.id").status.success());
    assert!(nothing_left(), "a damaged backup left something behind");

    let restored = restore("nightly.coffer", "backup.id");
    assert!(
        restored.status.success(),
        "{}",
        String::from_utf8_lossy(&restored.stderr)
    );
    world.start();
    world.login_everyone();
    let shared = shared["id"].as_str().unwrap();
    world.get_same("bob", shared, "back1/ledger-2026.csv", &first);
    world.get_same("alice", shared, "back2/ledger-2026.csv", &first);
    world.get_same(
        "bob",
        own["id"].as_str().unwrap(),
        "back3/scan.pdf",
        &second,
    );
    let verify = admin(&["audit", "verify", "--data", &srv], &world.storage);
    assert!(
        verify.status.success(),
        "{}",
        String::from_utf8_lossy(&verify.stdout)
    );
    // A second restore over the restored directory is refused.
    let again = restore("nightly.coffer", "backup.id");
    assert!(String::from_utf8_lossy(&again.stderr).contains("not empty"));
}

/// A server whose disk fills up mid-upload (a real ENOSPC, on the small
/// tmpfs `scripts/test-services` mounts) answers 507 `storage_full`: the
/// client says so at once instead of retrying, exits 75, and nothing of the
/// failed request is kept. Once space is freed, the same put goes through
/// and the file comes back whole.
#[test]
fn a_full_server_disk_is_said_plainly_and_loses_nothing() {
    let small_fs = std::env::var_os("COFFER_TEST_SMALL_FS");
    let what = "a small file system for the full-disk test (COFFER_TEST_SMALL_FS)";
    if !coffer_server::testing::require(what, small_fs.is_some()) {
        return;
    }
    let _alone = SMALL_FS.lock().unwrap_or_else(|p| p.into_inner());
    let mut world = World::with_init_on(&[], coffer_server::testing::Backend::Embedded);
    // Staged uploads and objects both on the small file system (one file
    // system, so the commit's rename works), nearly filled by ballast.
    let disk = tempfile::tempdir_in(small_fs.unwrap()).unwrap();
    world.kill_server();
    for store in ["uploads", "objects"] {
        let moved = disk.path().join(store);
        std::fs::create_dir(&moved).unwrap();
        std::fs::remove_dir_all(world.path(&format!("srv/{store}"))).unwrap();
        std::os::unix::fs::symlink(&moved, world.path(&format!("srv/{store}"))).unwrap();
    }
    let ballast = fill_leaving(disk.path(), 6);
    world.start();
    world.login_everyone();

    let file = world.write("records.bin", &data(16 * MIB, 31));
    let out = world
        .std_coffer("alice")
        .args(["put", "--json"])
        .arg(&file)
        .stderr(std::process::Stdio::piped())
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(75), "{said}");
    assert!(
        said.contains("507") && said.contains("storage is full"),
        "{said}"
    );
    // Not retried, not even once as a broken pipe: the server reads and
    // drops the rest of the refused body before it closes (lingering
    // close), so its answer is never overtaken by a reset.
    assert!(!said.contains("resuming in"), "retried a full disk: {said}");
    // The failed request left nothing staged and no file.
    let staged: u64 = std::fs::read_dir(disk.path().join("uploads"))
        .unwrap()
        .map(|entry| entry.unwrap().metadata().unwrap().len())
        .sum();
    assert_eq!(staged, 0, "bytes of the failed request were kept");
    let listing = world
        .coffer("alice")
        .args(["ls", "--json"])
        .output()
        .unwrap();
    assert!(
        listing.stdout.is_empty(),
        "{}",
        String::from_utf8_lossy(&listing.stdout)
    );

    // The operator frees space; the next run goes through.
    for piece in ballast {
        std::fs::remove_file(piece).unwrap();
    }
    let put = world.put("alice", &file, &[]);
    world.get_same(
        "alice",
        put["id"].as_str().unwrap(),
        "out/records.bin",
        &file,
    );
}

/// The small file system is one for every test here: one at a time.
static SMALL_FS: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// A download that cannot fit on the local disk (the small tmpfs) fails at
/// once with the disk's own error, before a byte is written: it does not
/// fill the disk first (which would hurt whatever else lives there), and
/// nothing appears at the final path.
#[test]
fn a_download_too_large_for_the_disk_fails_before_filling_it() {
    let small_fs = std::env::var_os("COFFER_TEST_SMALL_FS");
    let what = "a small file system (COFFER_TEST_SMALL_FS)";
    if !coffer_server::testing::require(what, small_fs.is_some()) {
        return;
    }
    let _alone = SMALL_FS.lock().unwrap_or_else(|p| p.into_inner());
    let world = World::new();
    let file = world.write("scan.bin", &data(48 * MIB, 7));
    let put = world.put("alice", &file, &[]);
    let disk = tempfile::tempdir_in(small_fs.unwrap()).unwrap();
    let out = world
        .coffer("alice")
        .args(["get", put["id"].as_str().unwrap(), "-o"])
        .arg(disk.path())
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{said}");
    assert!(said.contains("No space left on device"), "{said}");
    assert!(!disk.path().join("scan.bin").exists());
    // The failed partial file is deleted either way; what shows that the
    // disk was never filled is that the content was never sent.
    let sent = largest_response(&world);
    assert!(
        sent < MIB as u64,
        "{sent} bytes sent before the disk was found full"
    );
}

/// The most bytes the world's servers sent in one response (access log).
fn largest_response(world: &World) -> u64 {
    let mut largest = 0;
    for (_, text) in world.server_logs() {
        for field in text.split_whitespace() {
            if let Some(n) = field.strip_prefix("bytes_out=") {
                largest = largest.max(n.parse().unwrap_or(0));
            }
        }
    }
    largest
}

/// Fills the file system of `dir` with 1 MiB files until it is full, then
/// frees `leave_mib` of them; returns the rest.
fn fill_leaving(dir: &Path, leave_mib: usize) -> Vec<std::path::PathBuf> {
    let piece = vec![0x5a; MIB];
    let mut pieces = Vec::new();
    loop {
        let path = dir.join(format!("ballast-{}", pieces.len()));
        match std::fs::write(&path, &piece) {
            Ok(()) => pieces.push(path),
            Err(err) if err.kind() == std::io::ErrorKind::StorageFull => {
                let _ = std::fs::remove_file(&path);
                break;
            }
            Err(err) => panic!("filling {}: {err}", dir.display()),
        }
    }
    assert!(
        pieces.len() > leave_mib,
        "the small file system is too small"
    );
    for freed in pieces.drain(..=leave_mib) {
        std::fs::remove_file(freed).unwrap();
    }
    pieces
}
