//! End-to-end tests of the `coffer` binary: the real executable, real files.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use assert_cmd::Command;
use predicates::prelude::*;
use tempfile::TempDir;

const CHUNK: usize = 64 * 1024;

fn coffer(dir: &Path) -> Command {
    let mut cmd = Command::cargo_bin("coffer").unwrap();
    cmd.current_dir(dir)
        .env_remove("COFFER_IDENTITY")
        .env_remove("COFFER_PASSPHRASE")
        .env("HOME", dir)
        .env("XDG_CONFIG_HOME", dir.join("config"));
    cmd
}

fn data(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| {
            (i as u32)
                .wrapping_mul(2_654_435_761)
                .rotate_left(seed as u32) as u8
        })
        .collect()
}

struct Env {
    dir: TempDir,
}

impl Env {
    fn new() -> Self {
        Self {
            dir: TempDir::new().unwrap(),
        }
    }
    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }
    fn cmd(&self) -> Command {
        coffer(self.dir.path())
    }
    /// Creates an identity file `name` and returns its public identity.
    fn keygen(&self, name: &str) -> String {
        let out = self.cmd().args(["keygen", "-o", name]).output().unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap().trim().to_string()
    }
    fn encrypt(&self, signer: &str, recipients: &[&str], input: &str, output: &str) {
        let mut cmd = self.cmd();
        cmd.args(["encrypt", "-i", signer, "-o", output]);
        for r in recipients {
            cmd.args(["-r", r]);
        }
        cmd.arg(input).assert().success();
    }
    /// Names in the directory, to prove no temporary file was left behind.
    fn entries(&self) -> Vec<String> {
        let mut names: Vec<String> = fs::read_dir(self.dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    }
}

#[test]
fn keygen_writes_a_private_file_and_refuses_to_overwrite() {
    let env = Env::new();
    let public = env.keygen("me.key");
    assert!(public.starts_with("coffer1"));
    let mode = fs::metadata(env.path("me.key"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);
    let before = fs::read(env.path("me.key")).unwrap();
    env.cmd()
        .args(["keygen", "-o", "me.key"])
        .assert()
        .failure()
        .stderr(predicate::str::contains("already exists"));
    assert_eq!(fs::read(env.path("me.key")).unwrap(), before);
    env.cmd()
        .args(["keygen", "-o", "me.key", "--force"])
        .assert()
        .success();
    assert_ne!(fs::read(env.path("me.key")).unwrap(), before);
}

#[test]
fn keygen_defaults_to_the_config_directory_and_is_used_by_default() {
    let env = Env::new();
    env.cmd().arg("keygen").assert().success();
    assert!(env.path("config/coffer/identity").exists());
    fs::write(env.path("in.txt"), b"default identity").unwrap();
    env.cmd()
        .args(["encrypt", "--to-self", "-o", "in.cof", "in.txt"])
        .assert()
        .success();
    env.cmd()
        .args(["decrypt", "in.cof"])
        .assert()
        .success()
        .stdout(predicate::eq(&b"default identity"[..]));
}

#[test]
fn round_trips_at_chunk_boundaries_through_files() {
    let env = Env::new();
    let alice = env.keygen("alice.key");
    let bob = env.keygen("bob.key");
    for (i, len) in [0, 1, CHUNK - 1, CHUNK, CHUNK + 1, 3 * 1024 * 1024 + 5]
        .into_iter()
        .enumerate()
    {
        let plain = data(len, i as u8);
        fs::write(env.path("in"), &plain).unwrap();
        let cof = format!("f{i}.cof");
        let out = format!("f{i}.out");
        env.encrypt("alice.key", &[&bob], "in", &cof);
        env.cmd()
            .args([
                "decrypt",
                "-i",
                "bob.key",
                "-o",
                &out,
                "--expect-sender",
                &alice,
                &cof,
            ])
            .assert()
            .success();
        assert_eq!(fs::read(env.path(&out)).unwrap(), plain, "len {len}");
    }
}

#[test]
fn streams_from_stdin_to_stdout() {
    let env = Env::new();
    let alice = env.keygen("alice.key");
    let plain = data(200_000, 3);
    let cipher = env
        .cmd()
        .args(["encrypt", "-i", "alice.key", "-r", &alice])
        .write_stdin(plain.clone())
        .output()
        .unwrap();
    assert!(cipher.status.success());
    env.cmd()
        .args(["decrypt", "-i", "alice.key"])
        .write_stdin(cipher.stdout)
        .assert()
        .success()
        .stdout(predicate::eq(plain));
}

/// `coffer decrypt F | head` and `coffer encrypt … | head`: the reader
/// closes the pipe early, had what it wanted, and the job's exit code is 0
/// with nothing on stderr, as for `coffer get ID -o - | head`.
#[test]
fn output_piped_into_head_ends_quietly() {
    use std::io::Read;
    use std::process::Stdio;
    let env = Env::new();
    let alice = env.keygen("alice.key");
    fs::write(env.path("big.bin"), data(8 << 20, 5)).unwrap();
    env.encrypt("alice.key", &[&alice], "big.bin", "big.cof");
    for args in [
        vec!["decrypt", "-i", "alice.key", "big.cof"],
        vec!["encrypt", "-i", "alice.key", "-r", &alice, "big.bin"],
    ] {
        let mut child = std::process::Command::new(assert_cmd::cargo::cargo_bin("coffer"))
            .current_dir(env.dir.path())
            .env("HOME", env.dir.path())
            .env_remove("COFFER_IDENTITY")
            .args(&args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut head = [0u8; 1000];
        child.stdout.take().unwrap().read_exact(&mut head).unwrap();
        let out = child.wait_with_output().unwrap();
        assert_eq!(
            out.status.code(),
            Some(0),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(
            out.stderr.is_empty(),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

#[test]
fn every_recipient_from_flags_and_files_decrypts() {
    let env = Env::new();
    env.keygen("alice.key");
    let bob = env.keygen("bob.key");
    let carol = env.keygen("carol.key");
    let dave = env.keygen("dave.key");
    fs::write(
        env.path("team.txt"),
        format!("# partners\n{carol}\n\n{dave}  # dave\n"),
    )
    .unwrap();
    fs::write(env.path("in"), b"quarterly numbers").unwrap();
    env.cmd()
        .args([
            "encrypt",
            "-i",
            "alice.key",
            "-r",
            &bob,
            "-R",
            "team.txt",
            "-o",
            "q.cof",
            "in",
        ])
        .assert()
        .success();
    for who in ["bob", "carol", "dave"] {
        env.cmd()
            .args(["decrypt", "-i", &format!("{who}.key"), "q.cof"])
            .assert()
            .success()
            .stdout("quarterly numbers");
    }
    env.cmd()
        .args(["decrypt", "-i", "alice.key", "-o", "alice.out", "q.cof"])
        .assert()
        .code(3)
        .stderr(predicate::str::contains("wrong key"));
    assert!(!env.path("alice.out").exists());
}

/// Runs a failing decryption to `target` and checks that neither the target
/// nor any temporary file exists afterwards.
fn assert_fails_cleanly(env: &Env, input: &str, code: i32, reason: &str) {
    let before = env.entries();
    env.cmd()
        .args(["decrypt", "-i", "bob.key", "-o", "target.out", input])
        .assert()
        .code(code)
        .stderr(predicate::str::contains(reason));
    assert!(!env.path("target.out").exists());
    assert_eq!(env.entries(), before, "a temporary file was left behind");
}

#[test]
fn damaged_files_fail_with_a_reason_and_leave_nothing() {
    let env = Env::new();
    env.keygen("alice.key");
    let bob = env.keygen("bob.key");
    fs::write(env.path("in"), data(5 * CHUNK + 10, 5)).unwrap();
    env.encrypt("alice.key", &[&bob], "in", "good.cof");
    let good = fs::read(env.path("good.cof")).unwrap();

    // One flipped bit in the last chunk: output must not appear even though
    // earlier chunks verified.
    let mut tampered = good.clone();
    let at = good.len() - 200;
    tampered[at] ^= 0x20;
    fs::write(env.path("tampered.cof"), &tampered).unwrap();
    assert_fails_cleanly(&env, "tampered.cof", 4, "tampered");
    // With --json the error is one JSON object, with the same exit code.
    let out = env
        .cmd()
        .args([
            "decrypt",
            "--json",
            "-i",
            "bob.key",
            "-o",
            "target.out",
            "tampered.cof",
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(4));
    let error: serde_json::Value = serde_json::from_slice(&out.stderr).unwrap();
    assert_eq!(error["exit_code"], 4);
    assert!(
        error["error"].as_str().unwrap().contains("tampered"),
        "{error}"
    );

    // Cut right after the third chunk.
    let header_len = good.len() - (5 * (CHUNK + 16) + 10 + 16) - 120;
    fs::write(env.path("cut.cof"), &good[..header_len + 3 * (CHUNK + 16)]).unwrap();
    assert_fails_cleanly(&env, "cut.cof", 5, "truncated");

    fs::write(env.path("junk.cof"), b"not encrypted at all").unwrap();
    assert_fails_cleanly(&env, "junk.cof", 6, "not a coffer file");

    let mut future = good.clone();
    future[9] = 7;
    fs::write(env.path("future.cof"), &future).unwrap();
    assert_fails_cleanly(&env, "future.cof", 6, "unsupported coffer format version 7");
}

#[test]
fn existing_output_is_not_overwritten_without_force() {
    let env = Env::new();
    let alice = env.keygen("alice.key");
    fs::write(env.path("in"), b"new").unwrap();
    fs::write(env.path("out"), b"precious").unwrap();
    env.encrypt("alice.key", &[&alice], "in", "in.cof");
    env.cmd()
        .args(["decrypt", "-i", "alice.key", "-o", "out", "in.cof"])
        .assert()
        .failure()
        .stderr(predicate::str::contains("already exists"));
    assert_eq!(fs::read(env.path("out")).unwrap(), b"precious");
    env.cmd()
        .args([
            "decrypt",
            "-i",
            "alice.key",
            "-o",
            "out",
            "--force",
            "in.cof",
        ])
        .assert()
        .success();
    assert_eq!(fs::read(env.path("out")).unwrap(), b"new");
}

#[test]
fn output_symlink_is_replaced_not_followed() {
    let env = Env::new();
    let alice = env.keygen("alice.key");
    fs::write(env.path("in"), b"secret").unwrap();
    fs::write(env.path("victim"), b"keep me").unwrap();
    std::os::unix::fs::symlink(env.path("victim"), env.path("link")).unwrap();
    env.encrypt("alice.key", &[&alice], "in", "in.cof");
    env.cmd()
        .args([
            "decrypt",
            "-i",
            "alice.key",
            "-o",
            "link",
            "--force",
            "in.cof",
        ])
        .assert()
        .success();
    assert_eq!(fs::read(env.path("victim")).unwrap(), b"keep me");
    assert!(
        !fs::symlink_metadata(env.path("link"))
            .unwrap()
            .file_type()
            .is_symlink()
    );
}

#[test]
fn passphrase_protected_identity() {
    let env = Env::new();
    env.cmd()
        .args(["keygen", "-o", "locked.key", "--passphrase"])
        .env("COFFER_PASSPHRASE", "tr0ub4dor")
        .assert()
        .success();
    let text = fs::read_to_string(env.path("locked.key")).unwrap();
    assert!(text.contains("COFFER-PROTECTED-1"));
    assert!(!text.contains("COFFERSECRET1"));
    fs::write(env.path("in"), b"x").unwrap();
    env.cmd()
        .args([
            "encrypt",
            "-i",
            "locked.key",
            "--to-self",
            "-o",
            "in.cof",
            "in",
        ])
        .env("COFFER_PASSPHRASE", "tr0ub4dor")
        .assert()
        .success();
    env.cmd()
        .args(["decrypt", "-i", "locked.key", "in.cof"])
        .env("COFFER_PASSPHRASE", "wrong")
        .assert()
        .code(3)
        .stderr(predicate::str::contains("wrong passphrase"));
    // No terminal and no variable: a clear refusal, not a hang.
    env.cmd()
        .args(["decrypt", "-i", "locked.key", "in.cof"])
        .assert()
        .failure()
        .stderr(predicate::str::contains("COFFER_PASSPHRASE"));

    // From a file (first line, its newline not part of it) or a command.
    fs::write(env.path("pass"), "tr0ub4dor\nignored\n").unwrap();
    env.cmd()
        .args(["decrypt", "-i", "locked.key", "in.cof"])
        .env("COFFER_PASSPHRASE_FILE", env.path("pass"))
        .assert()
        .success()
        .stdout("x");
    env.cmd()
        .args(["decrypt", "-i", "locked.key", "in.cof"])
        .env("COFFER_PASSPHRASE_COMMAND", "printf 'tr0ub4dor\\n'")
        .assert()
        .success()
        .stdout("x");
    env.cmd()
        .args(["decrypt", "-i", "locked.key", "in.cof"])
        .env("COFFER_PASSPHRASE_COMMAND", "echo wrong")
        .assert()
        .code(3);
    env.cmd()
        .args(["decrypt", "-i", "locked.key", "in.cof"])
        .env("COFFER_PASSPHRASE_COMMAND", "exit 1")
        .assert()
        .failure()
        .stderr(predicate::str::contains("COFFER_PASSPHRASE_COMMAND failed"));
    fs::write(env.path("empty"), "\n").unwrap();
    env.cmd()
        .args(["decrypt", "-i", "locked.key", "in.cof"])
        .env("COFFER_PASSPHRASE_FILE", env.path("empty"))
        .assert()
        .failure()
        .stderr(predicate::str::contains("empty passphrase"));

    // The public key of a protected identity, without any passphrase.
    let public = env
        .cmd()
        .args(["pubkey", "-i", "locked.key"])
        .output()
        .unwrap();
    assert!(
        public.status.success(),
        "{}",
        String::from_utf8_lossy(&public.stderr)
    );
    let announced = text
        .lines()
        .find_map(|l| l.strip_prefix("# public identity: "))
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&public.stdout).trim(), announced);
}

#[test]
fn inspect_shows_header_without_a_key() {
    let env = Env::new();
    let alice = env.keygen("alice.key");
    let bob = env.keygen("bob.key");
    fs::write(env.path("in"), data(100_000, 1)).unwrap();
    env.encrypt("alice.key", &[&bob, &alice], "in", "in.cof");
    let out = env
        .cmd()
        .args(["inspect", "--json", "in.cof"])
        .output()
        .unwrap();
    assert!(out.status.success());
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let bob_info: serde_json::Value = serde_json::from_slice(
        &env.cmd()
            .args(["pubkey", "--json", "-i", "bob.key"])
            .output()
            .unwrap()
            .stdout,
    )
    .unwrap();
    let alice_info: serde_json::Value = serde_json::from_slice(
        &env.cmd()
            .args(["pubkey", "--json", "-i", "alice.key"])
            .output()
            .unwrap()
            .stdout,
    )
    .unwrap();
    assert_eq!(json["version"], 2);
    assert_eq!(json["chunk_size"], 65536);
    assert_eq!(json["plaintext_size"], 100_000);
    assert_eq!(json["sender_fingerprint"], alice_info["fingerprint"]);
    assert_eq!(
        json["stanza_types"][0], 2,
        "new identities are hybrid: X-Wing stanzas"
    );
    assert_eq!(json["recipient_key_ids"][0], bob_info["key_id"]);
    assert_eq!(json["recipient_key_ids"].as_array().unwrap().len(), 2);
    // The file name never appears in clear.
    assert!(!String::from_utf8_lossy(&out.stdout).contains("\"in\""));
}

#[test]
fn expect_sender_refuses_other_senders_before_writing() {
    let env = Env::new();
    env.keygen("alice.key");
    let bob = env.keygen("bob.key");
    let mallory = env.keygen("mallory.key");
    fs::write(env.path("in"), b"invoice").unwrap();
    env.encrypt("mallory.key", &[&bob], "in", "in.cof");
    let alice_fp = {
        let out = env
            .cmd()
            .args(["pubkey", "--json", "-i", "alice.key"])
            .output()
            .unwrap();
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        v["fingerprint"].as_str().unwrap().to_string()
    };
    env.cmd()
        .args([
            "decrypt",
            "-i",
            "bob.key",
            "--expect-sender",
            &alice_fp,
            "-o",
            "x",
            "in.cof",
        ])
        .assert()
        .failure()
        .stderr(predicate::str::contains("sender mismatch"));
    assert!(!env.path("x").exists());
    env.cmd()
        .args([
            "decrypt",
            "-i",
            "bob.key",
            "--expect-sender",
            &mallory,
            "-o",
            "x",
            "in.cof",
        ])
        .assert()
        .success();
}

#[test]
fn bad_recipients_are_refused_clearly() {
    let env = Env::new();
    let alice = env.keygen("alice.key");
    fs::write(env.path("in"), b"x").unwrap();
    let mut typo = alice.clone();
    typo.replace_range(20..21, if &alice[20..21] == "q" { "p" } else { "q" });
    env.cmd()
        .args(["encrypt", "-i", "alice.key", "-r", &typo, "in"])
        .assert()
        .failure()
        .stderr(predicate::str::contains("invalid public identity"));
    env.cmd()
        .args(["encrypt", "-i", "alice.key", "in"])
        .assert()
        .failure()
        .stderr(predicate::str::contains("no recipients"));
}

#[test]
fn duplicate_recipients_get_one_stanza() {
    let env = Env::new();
    let alice = env.keygen("alice.key");
    let bob = env.keygen("bob.key");
    fs::write(env.path("r.txt"), format!("{alice}\n")).unwrap();
    fs::write(env.path("in"), b"x").unwrap();
    env.cmd()
        .args([
            "encrypt",
            "-i",
            "alice.key",
            "-r",
            &alice,
            "-r",
            &bob,
            "-R",
            "r.txt",
            "--to-self",
            "-o",
            "o.cof",
            "in",
        ])
        .assert()
        .success();
    let out = env
        .cmd()
        .args(["inspect", "--json", "o.cof"])
        .output()
        .unwrap();
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(json["recipient_key_ids"].as_array().unwrap().len(), 2);
}

/// kill -9 in the middle of a decryption: the target never appears, only a
/// hidden temporary file may remain.
#[test]
fn killed_decryption_leaves_no_target() {
    use std::io::Write;
    use std::process::{Command as Std, Stdio};
    let env = Env::new();
    let alice = env.keygen("alice.key");
    fs::write(env.path("in"), data(4 * 1024 * 1024, 9)).unwrap();
    env.encrypt("alice.key", &[&alice], "in", "in.cof");
    let cipher = fs::read(env.path("in.cof")).unwrap();
    let mut child = Std::new(assert_cmd::cargo::cargo_bin("coffer"))
        .current_dir(env.dir.path())
        .args(["decrypt", "-i", "alice.key", "-o", "target.out"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    stdin.write_all(&cipher[..cipher.len() / 2]).unwrap();
    stdin.flush().unwrap();
    // Wait until the decryptor has started writing its temporary file.
    let started = std::time::Instant::now();
    while !env.entries().iter().any(|n| n.starts_with(".coffer-tmp-")) {
        assert!(started.elapsed().as_secs() < 20, "decryption never started");
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    child.kill().unwrap();
    child.wait().unwrap();
    drop(stdin);
    assert!(!env.path("target.out").exists());
    assert!(env.entries().iter().all(|n| n != "target.out"));
}

#[test]
fn completions_and_man_pages_cover_every_subcommand() {
    let env = Env::new();
    for shell in ["bash", "zsh", "fish"] {
        let out = env.cmd().args(["completions", shell]).output().unwrap();
        assert!(out.status.success(), "{shell}");
        let script = String::from_utf8(out.stdout).unwrap();
        // Subcommands two levels down are completed too.
        for word in ["inbox", "set-quota", "revoke"] {
            assert!(script.contains(word), "{shell} lacks {word}");
        }
    }
    env.cmd()
        .args(["completions", "powershell-nope"])
        .assert()
        .code(2);

    for (command, example) in [
        ("put", "--skip-existing"),
        ("get", "-o - |"),
        ("inbox", "--get-all"),
        ("send", "--to partner"),
        ("login", "--fingerprint SHA256:"),
    ] {
        env.cmd()
            .args([command, "--help"])
            .assert()
            .success()
            .stdout(predicate::str::contains("Example"))
            .stdout(predicate::str::contains(example));
    }

    env.cmd().args(["man", "--out", "man"]).assert().success();
    for page in ["coffer.1", "coffer-put.1", "coffer-server-user-set-quota.1"] {
        let text = fs::read_to_string(env.path("man").join(page)).unwrap();
        assert!(text.starts_with(".ie") || text.contains(".TH"), "{page}");
    }
    let put = fs::read_to_string(env.path("man/coffer-put.1")).unwrap();
    assert!(put.contains("accept\\-new\\-key") || put.contains("accept-new-key"));
}

/// AWS-LC's CPU-jitter entropy source costs 25-50 ms of CPU in every new
/// process (most of a small `coffer put`); `.cargo/config.toml` builds it
/// out and AWS-LC seeds from getrandom(2). If that setting is lost, its code
/// is back in the binary and this fails.
#[test]
fn the_binary_is_built_without_the_cpu_jitter_entropy_source() {
    let binary = fs::read(assert_cmd::cargo::cargo_bin("coffer")).unwrap();
    let marker = b"jent_entropy_init";
    assert!(
        !binary.windows(marker.len()).any(|w| w == marker),
        "the coffer binary contains AWS-LC's jitter entropy code: is AWS_LC_SYS_NO_JITTER_ENTROPY set in .cargo/config.toml?"
    );
}
