//! Playing the compromised server: the tests below edit the server's SQLite
//! rows and object files directly, behind its back, and check that the real
//! `coffer` client believes none of it. The server (and whoever owns it)
//! can deny service, but cannot make a client accept a file as coming from
//! someone who did not send it, pass one file off as another, or make an
//! owner's client hand a key to the wrong file. (docs/THREATS.md, "What a
//! compromised server can and cannot do", lists each guarantee with these
//! tests.)
//!
//! Always on the embedded backend: the defences are the client's, and the
//! SQLite file and object directory are what a test can edit.

mod common;

use std::process::{Command as Std, Output};

use common::*;
use serde_json::Value;

/// A world whose server keeps its rows in SQLite and its objects on disk.
fn world() -> World {
    let world = World::with_init_on(&[], coffer_server::testing::Backend::Embedded);
    world.login_everyone();
    world
}

/// `coffer send FILE --to bob --json` as `from`; the file id.
fn send(world: &World, from: &str, name: &str, bytes: &[u8]) -> String {
    let file = world.write(name, bytes);
    let out = world
        .coffer(from)
        .args(["send"])
        .arg(&file)
        .args(["--to", "bob", "--json"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let answer: Value = serde_json::from_slice(&out.stdout).unwrap();
    answer["id"].as_str().unwrap().to_string()
}

/// Swaps everything the server holds of files `a` and `b`: object bytes,
/// sizes, digests and every user's wraps. Each id now serves the other.
fn swap_files(world: &World, a: &str, b: &str) {
    let (pa, pb, tmp) = (object(world, a), object(world, b), world.path("swap.tmp"));
    std::fs::rename(&pa, &tmp).unwrap();
    std::fs::rename(&pb, &pa).unwrap();
    std::fs::rename(&tmp, &pb).unwrap();
    sql(
        world,
        &format!(
            "UPDATE files SET id = 'tmp' WHERE id = '{a}';
             UPDATE wraps SET file_id = 'tmp' WHERE file_id = '{a}'"
        )
        .replace('\n', ""),
    );
    // Rows keep their ids; swap their contents by way of a scratch row.
    sql(
        world,
        &format!(
            "UPDATE files SET id = '{a}' WHERE id = '{b}';
             UPDATE wraps SET file_id = '{a}' WHERE file_id = '{b}';
             UPDATE files SET id = '{b}' WHERE id = 'tmp';
             UPDATE wraps SET file_id = '{b}' WHERE file_id = 'tmp'"
        ),
    );
}

fn signal(child: &std::process::Child, which: &str) {
    let sent = Std::new("kill")
        .args([which, &child.id().to_string()])
        .status()
        .unwrap();
    assert!(sent.success());
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// bob's `inbox --get-all` fails as an integrity failure (exit 4), writes
/// nothing and acknowledges nothing: all `pending` files stay in his inbox.
fn inbox_get_all_fails_and_keeps(world: &World, pending: usize) {
    std::fs::create_dir_all(world.path("inbox")).unwrap();
    let out = world
        .coffer("bob")
        .args(["inbox", "--get-all", "-o", "inbox"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(4), "{}", stderr(&out));
    assert!(empty(world, "inbox"));
    let listed = world
        .coffer("bob")
        .args(["inbox", "--json"])
        .output()
        .unwrap();
    assert_eq!(
        json_lines(&listed.stdout).len(),
        pending,
        "nothing acknowledged"
    );
}

fn empty(world: &World, dir: &str) -> bool {
    std::fs::read_dir(world.path(dir))
        .map(|mut entries| entries.next().is_none())
        .unwrap_or(true)
}

/// Mallory's file, relabelled in the database as alice's: bob's client
/// pins alice's key and refuses the file, naming both fingerprints; no
/// output appears; `ls` flags it.
#[test]
fn a_file_re_owned_in_the_database_is_refused() {
    let world = world();
    let genuine = send(&world, "alice", "genuine.csv", b"from alice\n");
    let forged = send(&world, "mallory", "invoice.csv", b"pay mallory\n");
    // Bob knows alice: her genuine file pins her key.
    assert!(world.get("bob", &genuine, "in").status.success());
    sql(
        &world,
        &format!("UPDATE files SET owner = 'alice' WHERE id = '{forged}'"),
    );

    let out = world.get("bob", &forged, "forged");
    assert_eq!(out.status.code(), Some(4), "{}", stderr(&out));
    let text = stderr(&out);
    let alice = sql(
        &world,
        "SELECT public_identity FROM users WHERE name = 'alice'",
    );
    let alice_fp = coffer_format::PublicIdentity::parse(&alice)
        .unwrap()
        .fingerprint();
    let mallory = sql(
        &world,
        "SELECT public_identity FROM users WHERE name = 'mallory'",
    );
    let mallory_fp = coffer_format::PublicIdentity::parse(&mallory)
        .unwrap()
        .fingerprint();
    assert!(
        text.contains(&alice_fp) && text.contains(&mallory_fp),
        "{text}"
    );
    assert!(empty(&world, "forged"), "a refused file left output");

    let listing = world
        .coffer("bob")
        .args(["ls", "--shared-with-me"])
        .output()
        .unwrap();
    let listing = String::from_utf8_lossy(&listing.stdout).into_owned();
    let line = listing.lines().find(|l| l.starts_with(&forged)).unwrap();
    assert!(line.contains("<not from alice: signed by"), "{listing}");
    assert!(line.contains("alice (unverified)"), "{listing}");
    assert!(!line.contains("invoice.csv"), "{listing}");
    // The inbox says the same, and that the owner is only the server's
    // word, where the genuine file's owner was checked against her key.
    let inbox = world.coffer("bob").args(["inbox"]).output().unwrap();
    let inbox = String::from_utf8_lossy(&inbox.stdout).into_owned();
    let line = inbox.lines().find(|l| l.starts_with(&forged)).unwrap();
    assert!(line.contains("alice (unverified)"), "{inbox}");
    assert!(line.contains("<not from alice: signed by"), "{inbox}");
    let inbox = world
        .coffer("bob")
        .args(["inbox", "--json"])
        .output()
        .unwrap();
    let checked: Vec<(String, bool)> = String::from_utf8_lossy(&inbox.stdout)
        .lines()
        .map(|line| serde_json::from_str::<Value>(line).unwrap())
        .map(|entry| {
            let id = entry["id"].as_str().unwrap().to_string();
            (id, entry["sender_key_checked"].as_bool().unwrap())
        })
        .collect();
    assert!(checked.contains(&(forged.clone(), false)), "{checked:?}");
    assert!(checked.contains(&(genuine.clone(), true)), "{checked:?}");
}

/// Two files swapped (objects, sizes, digests, wraps), and an old upload
/// served under a newer id: the header names another file id than the one
/// asked for, so nothing is accepted.
#[test]
fn swapped_files_and_an_old_upload_under_a_new_id_are_refused() {
    let world = world();
    let a = send(&world, "alice", "a.csv", b"file a\n");
    let b = send(&world, "alice", "b.csv", b"file b\n");
    swap_files(&world, &a, &b);
    for id in [&a, &b] {
        let out = world.get("bob", id, &format!("swapped-{id}"));
        assert_eq!(out.status.code(), Some(4), "{}", stderr(&out));
        assert!(
            stderr(&out).contains("answered with the file"),
            "{}",
            stderr(&out)
        );
        assert!(empty(&world, &format!("swapped-{id}")));
    }
    // The listing carries the swapped headers and wraps too: `ls` shows
    // neither name, and `inbox --get-all`, which opens files from the
    // listing, fetches neither and acknowledges nothing.
    let out = world
        .coffer("bob")
        .args(["ls", "--shared-with-me", "--json"])
        .output()
        .unwrap();
    for entry in json_lines(&out.stdout) {
        assert_eq!(entry["name"], "<cannot decrypt>", "{entry}");
    }
    inbox_get_all_fails_and_keeps(&world, 2);

    // Monday's report under Tuesday's id: a rollback.
    let monday = send(&world, "alice", "report-mon.csv", b"monday\n");
    let tuesday = send(&world, "alice", "report-tue.csv", b"tuesday, corrected\n");
    std::fs::copy(object(&world, &monday), object(&world, &tuesday)).unwrap();
    sql(
        &world,
        &format!(
            "UPDATE files SET size = (SELECT size FROM files WHERE id = '{monday}'),
                              digest = (SELECT digest FROM files WHERE id = '{monday}')
             WHERE id = '{tuesday}';
             UPDATE wraps SET stanza = (SELECT stanza FROM wraps WHERE file_id = '{monday}' AND user_name = 'bob')
             WHERE file_id = '{tuesday}' AND user_name = 'bob'"
        ),
    );
    let out = world.get("bob", &tuesday, "rollback");
    assert_eq!(out.status.code(), Some(4), "{}", stderr(&out));
    assert!(empty(&world, "rollback"));
}

/// Asked to share or link file A, a lying server hands the owner's client
/// file B's header and wrap, or someone else's file relabelled as hers:
/// her client refuses before wrapping any key, and nothing is granted.
#[test]
fn share_and_link_refuse_a_header_that_is_not_the_owners_file() {
    let world = world();
    let a = world.put("alice", &world.write("a.txt", b"harmless\n"), &[])["id"]
        .as_str()
        .unwrap()
        .to_string();
    let b = world.put("alice", &world.write("b.txt", b"the secret one\n"), &[])["id"]
        .as_str()
        .unwrap()
        .to_string();
    swap_files(&world, &a, &b);
    let grants = || {
        sql(
            &world,
            "SELECT (SELECT count(*) FROM wraps WHERE user_name = 'bob') + (SELECT count(*) FROM links)",
        )
    };
    let share = world
        .coffer("alice")
        .args(["share", &a, "--with", "bob"])
        .output()
        .unwrap();
    assert_eq!(share.status.code(), Some(4), "{}", stderr(&share));
    let link = world.coffer("alice").args(["link", &a]).output().unwrap();
    assert_eq!(link.status.code(), Some(4), "{}", stderr(&link));
    assert!(link.stdout.is_empty(), "a link was printed");
    assert_eq!(grants(), "0");

    // Mallory's file (sent to alice) relabelled as alice's own: signed by
    // mallory, so not hers to share.
    let out = world
        .coffer("mallory")
        .arg("send")
        .arg(world.write("m.txt", b"mallory's\n"))
        .args(["--to", "alice", "--json"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let m: Value = serde_json::from_slice(&out.stdout).unwrap();
    let m = m["id"].as_str().unwrap();
    sql(
        &world,
        &format!("UPDATE files SET owner = 'alice' WHERE id = '{m}'"),
    );
    let share = world
        .coffer("alice")
        .args(["share", m, "--with", "bob"])
        .output()
        .unwrap();
    assert_eq!(share.status.code(), Some(4), "{}", stderr(&share));
    assert_eq!(grants(), "0");
}

/// Two overlapping runs of `put` of one file (a cron job that overran)
/// while the file is being rewritten: the second run says another run
/// holds the upload and exits without sending anything; with `--wait` it
/// waits, then uploads under a key of its own. The first notices the
/// rewrite before its last unit leaves and starts afresh, so no object
/// mixes two versions, and no two runs ever encrypt under one key.
#[test]
fn overlapping_puts_of_a_changing_file_never_share_a_key() {
    let world = world();
    let file = world.write("big.bin", &data(96 * MIB, 1));
    let first = world.put_under_way("alice", &file, &[], 2);
    // Held there (it keeps its lock), so the runs overlap for sure.
    signal(&first, "-STOP");
    // Rewritten in place (no truncation), as a job regenerating it would.
    let mut rewrite = std::fs::OpenOptions::new().write(true).open(&file).unwrap();
    std::io::Write::write_all(&mut rewrite, &data(96 * MIB, 2)).unwrap();
    drop(rewrite);

    let second = world
        .coffer("alice")
        .arg("put")
        .arg(&file)
        .output()
        .unwrap();
    assert!(
        !second.status.success(),
        "{} {}",
        String::from_utf8_lossy(&second.stdout),
        stderr(&second)
    );
    assert!(
        stderr(&second).contains("another coffer run"),
        "{}",
        stderr(&second)
    );
    assert_eq!(
        sql(&world, "SELECT count(*) FROM uploads"),
        "1",
        "the refused run created an upload"
    );

    let waiting = world
        .std_coffer("alice")
        .arg("put")
        .arg(&file)
        .args(["--wait", "--json"])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    signal(&first, "-CONT");
    let first = first.wait_with_output().unwrap();
    assert!(first.status.success());
    let first: Value = serde_json::from_slice(&first.stdout).unwrap();
    let waited = waiting.wait_with_output().unwrap();
    assert!(waited.status.success());
    let waited: Value = serde_json::from_slice(&waited.stdout).unwrap();
    let (one, two) = (
        first["id"].as_str().unwrap(),
        waited["id"].as_str().unwrap(),
    );
    assert_ne!(one, two);
    // Different uploads, different file keys: their headers (salt, file
    // id, wraps) differ and each decrypts to the whole file.
    let header = |id: &str| std::fs::read(object(&world, id)).unwrap()[..200].to_vec();
    assert_ne!(header(one), header(two));
    // Both are the file as it now is; the mixed upload was abandoned.
    world.get_same("alice", one, "one/big.bin", &file);
    world.get_same("alice", two, "two/big.bin", &file);
    assert_eq!(sql(&world, "SELECT count(*) FROM files"), "2");
    assert_eq!(sql(&world, "SELECT count(*) FROM uploads"), "0");
}

/// A partial download file planted in the download directory, world
/// readable or hard-linked to another name, is refused, not written
/// through; the real file does not appear and the plant is untouched.
#[test]
fn a_planted_partial_download_is_refused() {
    let world = world();
    let id = send(&world, "alice", "records.csv", b"patient,result\n");
    let dir = world.path("in");
    std::fs::create_dir_all(&dir).unwrap();
    let partial = dir.join(format!(".coffer-{id}.partial"));

    std::fs::write(&partial, b"planted").unwrap();
    std::fs::set_permissions(
        &partial,
        std::os::unix::fs::PermissionsExt::from_mode(0o644),
    )
    .unwrap();
    let out = world.get("bob", &id, "in");
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("readable or writable by others"),
        "{}",
        stderr(&out)
    );
    assert_eq!(std::fs::read(&partial).unwrap(), b"planted");

    std::fs::remove_file(&partial).unwrap();
    let elsewhere = world.write("watched.txt", b"");
    std::fs::set_permissions(
        &elsewhere,
        std::os::unix::fs::PermissionsExt::from_mode(0o600),
    )
    .unwrap();
    std::fs::hard_link(&elsewhere, &partial).unwrap();
    let out = world.get("bob", &id, "in");
    assert!(!out.status.success());
    assert!(stderr(&out).contains("other names"), "{}", stderr(&out));
    assert!(std::fs::read(&elsewhere).unwrap().is_empty());
    assert!(!dir.join("records.csv").exists());

    // Once the plant is gone the download goes through.
    std::fs::remove_file(&partial).unwrap();
    assert!(world.get("bob", &id, "in").status.success());
    assert_eq!(
        std::fs::read(dir.join("records.csv")).unwrap(),
        b"patient,result\n"
    );
}

/// `get ID -o -` streams the verified plaintext into a pipe; a tampered
/// object fails non-zero (integrity, 4) and its final chunk never comes out.
#[test]
fn streaming_to_stdout_verifies_and_fails_on_a_tampered_object() {
    let world = world();
    let bytes: Vec<u8> = (0..3_000_000u32).map(|i| (i % 251) as u8).collect();
    let id = send(&world, "alice", "stream.bin", &bytes);
    let get = || {
        world
            .coffer("bob")
            .args(["get", &id, "-o", "-"])
            .output()
            .unwrap()
    };
    let good = get();
    assert!(good.status.success(), "{}", stderr(&good));
    assert!(good.stdout == bytes, "the stream differs from the file");
    assert!(!world.path("-").exists(), "no file named -");

    // The server flips a byte near the end of the stored object.
    let path = object(&world, &id);
    let mut stored = std::fs::read(&path).unwrap();
    let at = stored.len() - 200;
    stored[at] ^= 0x40;
    std::fs::write(&path, &stored).unwrap();
    let bad = get();
    assert_eq!(bad.status.code(), Some(4), "{}", stderr(&bad));
    assert!(
        bad.stdout.len() < bytes.len(),
        "the last chunk was withheld"
    );
    assert!(
        bytes.starts_with(&bad.stdout),
        "what came out is the true prefix"
    );
}

/// A file's object deleted behind the server's back (its row kept): data
/// the server has lost. The listing says "missing on the server", not
/// "cannot decrypt"; `get` fails as an integrity failure (exit 4) that says
/// retrying will not help, instead of the "run again later" of exit 75, and
/// writes nothing; `inbox --get-all` stops the same way and acknowledges
/// nothing; the server's log names the file for its operator.
#[test]
fn a_lost_object_is_reported_as_lost_and_not_as_temporary() {
    let world = world();
    let lost = send(&world, "alice", "lost.csv", b"gone\n");
    std::fs::remove_file(object(&world, &lost)).unwrap();

    let out = world
        .coffer("bob")
        .args(["ls", "--shared-with-me", "--json"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let listed = json_lines(&out.stdout);
    assert_eq!(listed.len(), 1);
    assert_eq!(
        listed[0]["name"], "<missing on the server>",
        "{}",
        listed[0]
    );
    let out = world.coffer("bob").args(["inbox"]).output().unwrap();
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("<missing on the server>"),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );

    let out = world.get("bob", &lost, "lost");
    assert_eq!(out.status.code(), Some(4), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("object_missing") && stderr(&out).contains("lost"),
        "{}",
        stderr(&out)
    );
    assert!(empty(&world, "lost"));
    inbox_get_all_fails_and_keeps(&world, 1);

    let log = std::fs::read_to_string(world.path(&format!("server-{}.log", world.port))).unwrap();
    assert!(
        log.lines()
            .any(|line| line.contains(&lost) && line.contains("missing")),
        "{log}"
    );
}
