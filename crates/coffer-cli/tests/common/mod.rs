//! What the CLI end-to-end suites share: a real `coffer server run` on
//! 127.0.0.1 with users alice, bob and mallory logged in through the real
//! `coffer` binary, and helpers to drive it. (Each suite uses some of it.)
#![allow(dead_code)]
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command as Std, Stdio};
use std::time::{Duration, Instant};

use assert_cmd::Command;
use serde_json::Value;

pub const MIB: usize = 1024 * 1024;

pub fn bin() -> PathBuf {
    assert_cmd::cargo::cargo_bin("coffer")
}

/// Deterministic test data.
pub fn data(len: usize, seed: u64) -> Vec<u8> {
    let mut state = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut out = Vec::with_capacity(len);
    while out.len() < len {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        out.extend_from_slice(&state.to_le_bytes());
    }
    out.truncate(len);
    out
}

pub fn sha(path: &Path) -> String {
    let bytes = std::fs::read(path).unwrap();
    let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, &bytes);
    digest.as_ref().iter().map(|b| format!("{b:02x}")).collect()
}

/// A server with users alice, bob and mallory, each with a logged-in profile.
pub struct World {
    pub dir: tempfile::TempDir,
    pub port: u16,
    pub server: Option<Child>,
    pub fingerprint: String,
    /// Environment that puts the server on the backend under test
    /// (`COFFER_TEST_BACKEND`): its own PostgreSQL database and bucket
    /// prefix, or nothing for the embedded default.
    pub storage: Vec<(String, String)>,
}

/// The storage backend under test.
pub fn backend() -> coffer_server::testing::Backend {
    coffer_server::testing::Backend::from_env()
}

impl World {
    pub fn new() -> Self {
        let world = Self::with_init(&[]);
        world.login_everyone();
        world
    }

    /// Logs alice, bob and mallory in (through the world's URL).
    pub fn login_everyone(&self) {
        let world = self;
        for user in ["alice", "bob", "mallory"] {
            let out = world
                .coffer(user)
                .args(["login", &world.url(), "--user", user, "--json", "-i"])
                .arg(world.path(&format!("{user}.id")))
                .args(["--fingerprint", &world.fingerprint.clone()])
                .output()
                .unwrap();
            assert!(
                out.status.success(),
                "{}",
                String::from_utf8_lossy(&out.stderr)
            );
            // The session's key exchange is the post-quantum hybrid.
            let answer: Value = serde_json::from_slice(&out.stdout).unwrap();
            assert_eq!(answer["key_exchange"], "X25519MLKEM768", "{answer}");
        }
    }

    /// A running server initialised with `init_args`; nobody logged in.
    pub fn with_init(init_args: &[&Path]) -> Self {
        Self::with_init_on(init_args, backend())
    }

    /// The same on a given storage backend.
    pub fn with_init_on(init_args: &[&Path], backend: coffer_server::testing::Backend) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("srv");
        let storage = tokio::runtime::Runtime::new()
            .unwrap()
            .block_on(coffer_server::testing::storage_env(backend));
        let ok = Std::new(bin())
            .args(["server", "init", "--data"])
            .arg(&data)
            .args(init_args)
            .envs(storage.iter().map(|(k, v)| (k, v)))
            .output()
            .unwrap();
        assert!(
            ok.status.success(),
            "{}",
            String::from_utf8_lossy(&ok.stderr)
        );
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let fingerprint =
            coffer_client::certificate_fingerprint(&data.join("tls/cert.pem")).unwrap();
        let mut world = World {
            dir,
            port,
            server: None,
            fingerprint,
            storage,
        };
        for user in ["alice", "bob", "mallory"] {
            let out = Std::new(bin())
                .current_dir(world.dir.path())
                .args(["keygen", "-o", &format!("{user}.id")])
                .output()
                .unwrap();
            let key = String::from_utf8(out.stdout).unwrap().trim().to_string();
            let ok = Std::new(bin())
                .args(["server", "user", "add", user, "--key", &key, "--data"])
                .arg(&data)
                .envs(world.storage.iter().map(|(k, v)| (k, v)))
                .output()
                .unwrap();
            assert!(ok.status.success());
        }
        world.start();
        world
    }

    pub fn url(&self) -> String {
        format!("https://127.0.0.1:{}", self.port)
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    pub fn start(&mut self) {
        self.server = Some(self.spawn_node(self.port));
    }

    /// `coffer server run` on the world's data directory and storage,
    /// listening on `port`; returns once it listens.
    pub fn spawn_node(&self, port: u16) -> Child {
        let mut child = Std::new(bin())
            .args([
                "server",
                "run",
                "--listen",
                &format!("127.0.0.1:{port}"),
                "--data",
            ])
            .arg(self.path("srv"))
            .envs(self.storage.iter().map(|(k, v)| (k, v)))
            .env(
                "COFFER_LOG",
                std::env::var("COFFER_TEST_SERVER_LOG").unwrap_or_else(|_| "info".into()),
            )
            .env_remove("COFFER_MASTER_KEY")
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
        let mut said = Vec::new();
        loop {
            let Some(Ok(line)) = lines.next() else {
                panic!("the server exited before listening:\n{}", said.join("\n"));
            };
            if line.contains("listening on https://") {
                break;
            }
            said.push(line);
        }
        // Keep draining the log (into a file, for when a test fails) so the
        // server never blocks on a full pipe.
        let log_dir = std::env::var("COFFER_TEST_LOGS")
            .map(PathBuf::from)
            .unwrap_or_else(|_| self.dir.path().to_path_buf());
        let mut log = std::fs::File::create(log_dir.join(format!("server-{port}.log"))).unwrap();
        std::thread::spawn(move || {
            for line in lines.map_while(Result::ok) {
                let _ = std::io::Write::write_all(&mut log, format!("{line}\n").as_bytes());
            }
        });
        child
    }

    /// Restarts the server with `config.toml` edited: each `(from, to)`
    /// replaces a line `init` wrote (which must be there, so a test cannot
    /// silently run on the defaults).
    pub fn reconfigure(&mut self, edits: &[(&str, &str)]) {
        self.kill_server();
        let path = self.path("srv/config.toml");
        let mut text = std::fs::read_to_string(&path).unwrap();
        for (from, to) in edits {
            assert!(text.contains(from), "config.toml has no {from:?}");
            text = text.replace(from, to);
        }
        std::fs::write(&path, text).unwrap();
        self.start();
    }

    pub fn kill_server(&mut self) {
        if let Some(mut child) = self.server.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// A `coffer_client` session as `user`, from their profile: what a
    /// program built on the library (or a modified client) would open.
    pub fn library_session(&self, user: &str) -> coffer_client::Session {
        let home = coffer_client::profile::Home::at(&self.path("home"));
        let profile = home.load(user).unwrap();
        let text = std::fs::read_to_string(&profile.identity).unwrap();
        let identity = coffer_format::Identity::from_file_string(&text, None).unwrap();
        profile
            .session(Some(std::sync::Arc::new(identity)))
            .unwrap()
    }

    /// `coffer` as `user` (their profile, in the world's home).
    pub fn coffer(&self, user: &str) -> Command {
        let mut cmd = Command::new(bin());
        cmd.current_dir(self.dir.path())
            .env("COFFER_HOME", self.path("home"))
            .env("COFFER_PROFILE", user)
            .env_remove("COFFER_PASSPHRASE")
            .env_remove("COFFER_LINK_PASSWORD")
            .timeout(Duration::from_secs(300));
        cmd
    }

    pub fn std_coffer(&self, user: &str) -> Std {
        let mut cmd = Std::new(bin());
        cmd.current_dir(self.dir.path())
            .env("COFFER_HOME", self.path("home"))
            .env("COFFER_PROFILE", user)
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        cmd
    }

    pub fn write(&self, name: &str, bytes: &[u8]) -> PathBuf {
        let path = self.path(name);
        std::fs::write(&path, bytes).unwrap();
        path
    }

    /// `put --json` of one file; returns the JSON line.
    pub fn put(&self, user: &str, file: &Path, extra: &[&str]) -> Value {
        let out = self
            .coffer(user)
            .arg("put")
            .arg(file)
            .args(extra)
            .arg("--json")
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice(&out.stdout).unwrap()
    }

    pub fn get(&self, user: &str, id: &str, out_dir: &str) -> std::process::Output {
        std::fs::create_dir_all(self.path(out_dir)).unwrap();
        self.coffer(user)
            .args(["get", id, "-o", out_dir, "--json"])
            .output()
            .unwrap()
    }

    /// `get` of `id` into directory `out`, which must succeed and produce
    /// `out_file` (relative to the world) with the same bytes as `source`.
    pub fn get_same(&self, user: &str, id: &str, out_file: &str, source: &Path) -> Value {
        let out_dir = Path::new(out_file).parent().unwrap().to_str().unwrap();
        let out = self.get(user, id, out_dir);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(sha(&self.path(out_file)), sha(source), "{out_file}");
        serde_json::from_slice(&out.stdout).unwrap()
    }

    /// `coffer put FILE EXTRA --json` as `user` in the background, returned
    /// once `units` 4 MiB units are logged (so it is well under way).
    pub fn put_under_way(&self, user: &str, file: &Path, extra: &[&str], units: usize) -> Child {
        let child = self
            .std_coffer(user)
            .arg("put")
            .arg(file)
            .args(extra)
            .arg("--json")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        wait_for("the upload to get going", || {
            recorded_units(self, user) >= units
        });
        child
    }

    /// The same, killed there (a client that died mid-upload).
    pub fn interrupted_put(&self, user: &str, file: &Path, extra: &[&str], units: usize) {
        let mut child = self.put_under_way(user, file, extra, units);
        child.kill().unwrap();
        child.wait().unwrap();
    }

    pub fn uploads_dir(&self, user: &str) -> PathBuf {
        self.path(&format!("home/state/{user}/uploads"))
    }

    pub fn profile(&self, user: &str) -> PathBuf {
        self.path(&format!("home/profiles/{user}.json"))
    }
}

impl Drop for World {
    fn drop(&mut self) {
        self.kill_server();
        if std::thread::panicking() {
            self.show_server_logs();
        }
    }
}

impl World {
    /// This world's server logs so far: (file name, text).
    pub fn server_logs(&self) -> Vec<(String, String)> {
        let Ok(entries) = std::fs::read_dir(self.dir.path()) else {
            return Vec::new();
        };
        entries
            .flatten()
            .filter_map(|entry| {
                let name = entry.file_name().to_string_lossy().into_owned();
                (name.starts_with("server-") && name.ends_with(".log")).then(|| {
                    let text = std::fs::read_to_string(entry.path()).unwrap_or_default();
                    (name, text)
                })
            })
            .collect()
    }

    /// The warnings, errors and last lines of this world's server logs, for
    /// a failed test's output (a CI run keeps nothing else).
    fn show_server_logs(&self) {
        for (name, text) in self.server_logs() {
            let lines: Vec<&str> = text.lines().collect();
            let tail = lines.len().saturating_sub(15);
            eprintln!("--- {name}: warnings, errors and the last lines ---");
            for (n, line) in lines.iter().enumerate() {
                if n >= tail || line.contains(" WARN ") || line.contains(" ERROR ") {
                    eprintln!("{line}");
                }
            }
        }
    }
}

pub fn wait_for(what: &str, mut done: impl FnMut() -> bool) {
    let start = Instant::now();
    while !done() {
        assert!(
            start.elapsed() < Duration::from_secs(120),
            "timed out waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Units logged in the (single) resume record of `user`.
pub fn recorded_units(world: &World, user: &str) -> usize {
    std::fs::read_dir(world.uploads_dir(user))
        .into_iter()
        .flatten()
        .flatten()
        .filter(|e| e.path().extension().is_some_and(|x| x == "units"))
        .filter_map(|e| std::fs::read_to_string(e.path()).ok())
        .map(|text| text.lines().count())
        .max()
        .unwrap_or(0)
}

/// Each line of a command's `--json` output, parsed.
pub fn json_lines(bytes: &[u8]) -> Vec<Value> {
    String::from_utf8_lossy(bytes)
        .lines()
        .map(|line| serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}")))
        .collect()
}

/// Runs SQL against the server's database, as its owner could. The value
/// of the last statement's first column (if any) comes back as text.
pub fn sql(world: &World, statements: &str) -> String {
    let script = "import sqlite3,sys\n\
                  c=sqlite3.connect(sys.argv[1])\n\
                  r=None\n\
                  for s in sys.argv[2].split(';'):\n\
                  \x20   s=s.strip()\n\
                  \x20   if s: r=c.execute(s).fetchone()\n\
                  c.commit()\n\
                  print('' if r is None else (r[0].hex() if isinstance(r[0], bytes) else r[0]))";
    let out = Std::new("python3")
        .args(["-c", script])
        .arg(world.path("srv/meta.db"))
        .arg(statements)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

/// Where the local object store keeps a committed object.
pub fn object(world: &World, id: &str) -> PathBuf {
    world.path(&format!("srv/objects/{}/{}/{id}", &id[..2], &id[2..4]))
}

/// What [`faulty_proxy`] does to the connection it picks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fault {
    /// Forwards nothing more either way and closes nothing, like a network
    /// partition (no FIN, no RST).
    Freeze,
    /// Closes both sides at once, mid-transfer, like a dropped connection.
    Cut,
}

/// A TCP proxy to `target` that applies `fault` to the first connection to
/// carry more than `after` bytes in direction `up` (client to server) or
/// down. Later connections pass untouched.
pub fn faulty_proxy(target: u16, up: bool, after: u64, fault: Fault) -> u16 {
    use std::io::{Read, Write};
    use std::net::{Shutdown, TcpListener, TcpStream};
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let fired = Arc::new(AtomicBool::new(false));
    std::thread::spawn(move || {
        for client in listener.incoming().map_while(Result::ok) {
            let server = TcpStream::connect(("127.0.0.1", target)).unwrap();
            let faulted = Arc::new(AtomicBool::new(false));
            let pump = |mut from: TcpStream, mut to: TcpStream, watched: bool| {
                let (fired, faulted) = (fired.clone(), faulted.clone());
                move || {
                    let mut moved = 0u64;
                    let mut buf = vec![0u8; 16 * 1024];
                    while let Ok(n @ 1..) = from.read(&mut buf) {
                        moved += n as u64;
                        if watched && moved > after && !fired.swap(true, Ordering::SeqCst) {
                            faulted.store(true, Ordering::SeqCst);
                        }
                        if faulted.load(Ordering::SeqCst) {
                            match fault {
                                // Hold both sockets open, silent, for
                                // longer than any test runs.
                                Fault::Freeze => std::thread::sleep(Duration::from_secs(600)),
                                Fault::Cut => {
                                    let _ = from.shutdown(Shutdown::Both);
                                    let _ = to.shutdown(Shutdown::Both);
                                }
                            }
                            return;
                        }
                        if to.write_all(&buf[..n]).is_err() {
                            return;
                        }
                    }
                    let _ = to.shutdown(Shutdown::Write);
                }
            };
            let (c2, s2) = (client.try_clone().unwrap(), server.try_clone().unwrap());
            std::thread::spawn(pump(client, server, up));
            std::thread::spawn(pump(s2, c2, !up));
        }
    });
    port
}
