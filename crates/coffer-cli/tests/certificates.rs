//! Certificates a browser trusts, from the outside: a real `coffer server
//! run` given a CA-signed certificate and a `public_url`, renewed on SIGHUP
//! without a restart, and the real `coffer` binary trusting it through the
//! system's roots (`SSL_CERT_FILE` stands in for a CA the machine trusts).

mod common;

use std::path::Path;
use std::process::Command as Std;

use assert_cmd::Command;
use coffer_client::{Endpoint, Error, Session, Trust};
use common::*;
use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair};
use serde_json::Value;

/// A certificate authority the test makes up (a company CA, or what a
/// public one is to the client).
fn test_ca() -> CertifiedIssuer<'static, KeyPair> {
    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "coffer test CA");
    CertifiedIssuer::self_signed(params, KeyPair::generate().unwrap()).unwrap()
}

/// Writes a fresh certificate for `localhost`, signed by `ca`, where the
/// server reads its certificate (chain first leaf, then CA) and key; returns
/// its fingerprint.
fn install_leaf(world: &World, ca: &CertifiedIssuer<'static, KeyPair>) -> String {
    let key = KeyPair::generate().unwrap();
    let leaf = CertificateParams::new(vec!["localhost".to_string()])
        .unwrap()
        .signed_by(&key, ca)
        .unwrap();
    std::fs::write(
        world.path("srv/tls/cert.pem"),
        format!("{}{}", leaf.pem(), ca.pem()),
    )
    .unwrap();
    std::fs::write(world.path("srv/tls/key.pem"), key.serialize_pem()).unwrap();
    coffer_client::certificate_fingerprint(&world.path("srv/tls/cert.pem")).unwrap()
}

/// `coffer` as `user`, with `roots` as the system's CA roots when given.
fn coffer_with_roots(world: &World, user: &str, roots: Option<&Path>) -> Command {
    let mut cmd = world.coffer(user);
    if let Some(roots) = roots {
        cmd.env("SSL_CERT_FILE", roots).env_remove("SSL_CERT_DIR");
    }
    cmd
}

/// Sends SIGHUP to the server and waits until its log reports the `nth`
/// line containing `outcome`.
fn hang_up(world: &World, outcome: &str, nth: usize) {
    let pid = world.server.as_ref().unwrap().id().to_string();
    assert!(
        Std::new("kill")
            .args(["-HUP", &pid])
            .status()
            .unwrap()
            .success()
    );
    let log = std::env::var("COFFER_TEST_LOGS")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|_| world.dir.path().to_path_buf())
        .join(format!("server-{}.log", world.port));
    wait_for(outcome, || {
        std::fs::read_to_string(&log)
            .map(|text| text.matches(outcome).count() >= nth)
            .unwrap_or(false)
    });
}

/// A session that accepts only the certificate `pinned`: a request it makes
/// on a new connection fails, so one that succeeds went over a connection
/// opened before.
fn pinned_session(world: &World, pinned: &str) -> Session {
    let endpoint = Endpoint::parse(&world.url(), Trust::Pinned(pinned.to_string()), None).unwrap();
    Session::new(endpoint, "alice", None).unwrap()
}

#[test]
fn a_ca_signed_certificate_is_trusted_through_the_system_roots_and_renewed_on_sighup() {
    let mut world = World::with_init(&[]);
    let ca = test_ca();
    let roots = world.path("company-ca.pem");
    std::fs::write(&roots, ca.pem()).unwrap();
    let first = install_leaf(&world, &ca);
    let base = format!("https://localhost:{}", world.port);
    world
        .storage
        .push(("COFFER_PUBLIC_URL".into(), base.clone()));
    world.kill_server();
    world.start();

    // First contact without --fingerprint: the system's CAs vouch for the
    // server, so the profile trusts them rather than pinning this
    // certificate (renewals then need nothing from the client).
    let login = coffer_with_roots(&world, "alice", Some(&roots))
        .args(["login", &base, "--user", "alice", "--json", "-i"])
        .arg(world.path("alice.id"))
        .output()
        .unwrap();
    assert!(
        login.status.success(),
        "{}",
        String::from_utf8_lossy(&login.stderr)
    );
    let answer: Value = serde_json::from_slice(&login.stdout).unwrap();
    assert_eq!(answer["trust"], "system", "{answer}");
    assert_eq!(answer["certificate"], Value::Null, "{answer}");
    // Where the CA is not among the roots, a first login without a
    // terminal to ask on is refused, not silently pinned.
    let stranger = coffer_with_roots(&world, "bob", None)
        .args(["login", &base, "--user", "bob", "-i"])
        .arg(world.path("bob.id"))
        .output()
        .unwrap();
    assert!(!stranger.status.success());
    assert!(
        String::from_utf8_lossy(&stranger.stderr).contains("--fingerprint"),
        "{}",
        String::from_utf8_lossy(&stranger.stderr)
    );

    // A link names the server by its public_url and carries no pin: the
    // recipient trusts the system roots too.
    let file = world.write("statement.pdf", &data(200_000, 18));
    let put = coffer_with_roots(&world, "alice", Some(&roots))
        .arg("put")
        .arg(&file)
        .arg("--json")
        .output()
        .unwrap();
    assert!(
        put.status.success(),
        "{}",
        String::from_utf8_lossy(&put.stderr)
    );
    let put: Value = serde_json::from_slice(&put.stdout).unwrap();
    let id = put["id"].as_str().unwrap();
    let link = coffer_with_roots(&world, "alice", Some(&roots))
        .args(["link", id])
        .output()
        .unwrap();
    assert!(link.status.success());
    let url = String::from_utf8(link.stdout).unwrap().trim().to_string();
    assert!(url.starts_with(&format!("{base}/")), "{url}");
    assert!(
        !url.contains("fp="),
        "a CA-signed server is not pinned: {url}"
    );

    // Renewal: new files and SIGHUP, no restart. A connection opened before
    // keeps working; new handshakes present the new certificate.
    let rt = tokio::runtime::Runtime::new().unwrap();
    let mut before = pinned_session(&world, &first);
    rt.block_on(before.probe()).unwrap();
    let second = install_leaf(&world, &ca);
    assert_ne!(first, second);
    hang_up(&world, "reloaded the TLS certificate", 1);
    let still = rt.block_on(before.probe()).unwrap();
    assert_eq!(still.fingerprint.as_deref(), Some(first.as_str()));
    match rt.block_on(pinned_session(&world, &first).probe()) {
        Err(Error::CertificateChanged { presented, .. }) => assert_eq!(presented, second),
        other => panic!("a new connection should present the renewed certificate: {other:?}"),
    }
    // Nothing to do for the clients: alice's profile and the link go on.
    let ls = coffer_with_roots(&world, "alice", Some(&roots))
        .args(["ls", "--json"])
        .output()
        .unwrap();
    assert!(
        ls.status.success(),
        "{}",
        String::from_utf8_lossy(&ls.stderr)
    );
    let fetch = |out: &str, roots: Option<&Path>| {
        let mut cmd = Command::new(bin());
        cmd.current_dir(world.dir.path())
            .env("COFFER_HOME", world.path("nobody-home"))
            .args(["get", &url, "-o", out]);
        if let Some(roots) = roots {
            cmd.env("SSL_CERT_FILE", roots);
        }
        std::fs::create_dir_all(world.path(out)).unwrap();
        cmd.output().unwrap()
    };
    let got = fetch("fetched", Some(&roots));
    assert!(
        got.status.success(),
        "{}",
        String::from_utf8_lossy(&got.stderr)
    );
    assert_eq!(sha(&world.path("fetched/statement.pdf")), sha(&file));
    // A recipient whose roots do not vouch for the server is refused (the
    // link says "system roots", so it does not fall back to trusting
    // whatever certificate it is shown).
    let untrusted = fetch("untrusted", None);
    assert!(!untrusted.status.success());
    assert!(!world.path("untrusted/statement.pdf").exists());

    // A renewal that fails (a half-written file, a key from another
    // certificate) is logged and the certificate in use kept.
    let chain = std::fs::read_to_string(world.path("srv/tls/cert.pem")).unwrap();
    std::fs::write(world.path("srv/tls/cert.pem"), &chain[..chain.len() / 3]).unwrap();
    hang_up(&world, "reloading the TLS certificate failed", 1);
    let key = std::fs::read(world.path("srv/tls/key.pem")).unwrap();
    install_leaf(&world, &ca);
    std::fs::write(world.path("srv/tls/key.pem"), key).unwrap();
    hang_up(&world, "reloading the TLS certificate failed", 2);
    let kept = rt
        .block_on(pinned_session(&world, &second).probe())
        .unwrap();
    assert_eq!(kept.fingerprint.as_deref(), Some(second.as_str()));
}
