//! Anonymous share links: the server stores a wrap for a key it never sees,
//! and enforces expiry, the download limit and the password verifier.

mod common;

use base64::Engine as _;
use coffer_format::recipient::add_recipient;
use coffer_format::{EncryptOptions, Header, Identity, Stanza, Stanzas, prepare};
use common::{B64, Client, Server};
use serde_json::{Value, json};

const TUS: (&str, &str) = ("tus-resumable", "1.0.0");
const OCTETS: (&str, &str) = ("content-type", "application/offset+octet-stream");
const JSON: (&str, &str) = ("content-type", "application/json");

struct Shared {
    file: String,
    object: Vec<u8>,
    plain: Vec<u8>,
}

/// Alice encrypts and uploads with her own wrap in the creation request.
async fn upload(client: &mut Client, token: &str, alice: &Identity) -> Shared {
    let plain: Vec<u8> = (0..150_000u32).map(|i| (i % 251) as u8).collect();
    let me = [alice.public().clone()];
    let prepared = prepare(EncryptOptions::new(&me, alice)).unwrap();
    let own_wrap = prepared.stanzas()[0].to_bytes();
    let mut w = prepared.writer(Vec::new(), Stanzas::Detached).unwrap();
    std::io::Write::write_all(&mut w, &plain).unwrap();
    let object = w.finish().unwrap().0;
    let metadata = format!(
        "coffer-wrap.alice {},{}",
        base64::engine::general_purpose::STANDARD.encode(own_wrap),
        common::file_id_pair(&object)
    );
    let (status, headers, _) = client
        .raw(
            "POST",
            "/v1/uploads",
            &[
                TUS,
                OCTETS,
                ("upload-length", &object.len().to_string()),
                ("upload-metadata", &metadata),
            ],
            object.clone(),
            Some(token),
        )
        .await;
    assert_eq!(status, 201);
    Shared {
        file: headers["coffer-file-id"].to_str().unwrap().to_string(),
        object,
        plain,
    }
}

/// Alice's client opens the file key with her wrap and wraps it for `link_key`.
async fn link_stanza(
    client: &mut Client,
    token: &str,
    shared: &Shared,
    alice: &Identity,
    link_key: &Identity,
) -> Stanza {
    let (status, wrap) = client
        .call(
            "GET",
            &format!("/v1/files/{}/wrap", shared.file),
            None,
            Some(token),
        )
        .await;
    assert_eq!(status, 200);
    let own = Stanza::from_bytes(&B64.decode(wrap["stanza"].as_str().unwrap()).unwrap()).unwrap();
    let (header, _) = Header::parse(&shared.object).unwrap();
    let opened = header.open(alice, &[own]).unwrap();
    add_recipient(opened.core(), opened.file_key(), link_key.public()).unwrap()
}

/// The access proof the tests' links are made with (a real client derives
/// it from the URL secret; the server only keeps its hash).
const ACCESS: &str = "proof-of-holding-the-url";

/// Creates a link; the body gets [`ACCESS`] unless it says otherwise.
async fn create_link(
    client: &mut Client,
    token: &str,
    file: &str,
    mut body: Value,
) -> (u16, Value) {
    if body.get("access").is_none() {
        body["access"] = json!(ACCESS);
    }
    client
        .call(
            "POST",
            &format!("/v1/files/{file}/links"),
            Some(body),
            Some(token),
        )
        .await
}

async fn open(client: &mut Client, link: &str, password: Option<&str>) -> (u16, Value) {
    open_with(client, link, ACCESS, password).await
}

async fn open_with(
    client: &mut Client,
    link: &str,
    access: &str,
    password: Option<&str>,
) -> (u16, Value) {
    let mut headers = vec![("coffer-link-access", access)];
    let body = match password {
        Some(p) => {
            headers.push(JSON);
            json!({"password": p}).to_string().into_bytes()
        }
        None => vec![],
    };
    let (status, _, answer) = client
        .raw(
            "POST",
            &format!("/v1/links/{link}/open"),
            &headers,
            body,
            None,
        )
        .await;
    (
        status,
        serde_json::from_slice(&answer).unwrap_or(Value::Null),
    )
}

/// What a holder of the URL sees before opening (with `access`).
async fn link_info(client: &mut Client, link: &str, access: &str) -> (u16, Value) {
    let headers = [("coffer-link-access", access)];
    let (status, _, answer) = client
        .raw("GET", &format!("/v1/links/{link}"), &headers, vec![], None)
        .await;
    (
        status,
        serde_json::from_slice(&answer).unwrap_or(Value::Null),
    )
}

async fn content(
    client: &mut Client,
    link: &str,
    ticket: &str,
    range: Option<&str>,
) -> (u16, Vec<u8>) {
    let mut headers = vec![("coffer-link-ticket", ticket)];
    if let Some(range) = range {
        headers.push(("range", range));
    }
    let (status, _, body) = client
        .raw(
            "GET",
            &format!("/v1/links/{link}/content"),
            &headers,
            vec![],
            None,
        )
        .await;
    (status, body)
}

fn decrypt(object: &[u8], stanza_b64: &str, key: &Identity) -> Vec<u8> {
    let stanza = Stanza::from_bytes(&B64.decode(stanza_b64).unwrap()).unwrap();
    let (header, len) = Header::parse(object).unwrap();
    let mut out = Vec::new();
    header
        .open(key, &[stanza])
        .unwrap()
        .decryptor(&object[len..])
        .unwrap()
        .copy_to(&mut out)
        .unwrap();
    out
}

#[tokio::test]
async fn download_limit_tickets_and_revocation() {
    let server = Server::start(60).await;
    let alice = server.add_user("alice").await;
    let bob = server.add_user("bob").await;
    let mut client = server.connect().await;
    let alice_token = client.login("alice", &alice, &server.identity).await;
    let bob_token = client.login("bob", &bob, &server.identity).await;
    let shared = upload(&mut client, &alice_token, &alice).await;
    let link_key = Identity::generate().unwrap();
    let stanza = link_stanza(&mut client, &alice_token, &shared, &alice, &link_key).await;
    let stanza_b64 = B64.encode(stanza.to_bytes());

    // Only the owner may make links.
    let (status, _) = create_link(
        &mut client,
        &bob_token,
        &shared.file,
        json!({"stanza": stanza_b64}),
    )
    .await;
    assert_eq!(status, 404);
    let (status, link) = create_link(
        &mut client,
        &alice_token,
        &shared.file,
        json!({"stanza": stanza_b64, "max_downloads": 2}),
    )
    .await;
    assert_eq!(status, 201, "{link}");
    let id = link["id"].as_str().unwrap().to_string();

    // Anyone with the link sees what it is before opening it.
    let (status, info) = link_info(&mut client, &id, ACCESS).await;
    assert_eq!(status, 200);
    assert_eq!(info["downloads_left"], 2);
    assert_eq!(info["password_required"], false);
    assert_eq!(info["size"], shared.object.len() as u64);

    // First open: the wrap plus a ticket for the bytes, which decrypt with
    // the link key alone.
    let (status, opened) = open(&mut client, &id, None).await;
    assert_eq!(status, 200, "{opened}");
    let ticket = opened["ticket"].as_str().unwrap().to_string();
    let (status, object) = content(&mut client, &id, &ticket, None).await;
    assert_eq!(status, 200);
    assert_eq!(object, shared.object);
    let stanza_out = opened["stanza"].as_str().unwrap();
    assert_eq!(decrypt(&object, stanza_out, &link_key), shared.plain);
    // The ticket resumes with ranges without spending a download.
    let (status, tail) = content(&mut client, &id, &ticket, Some("bytes=100000-")).await;
    assert_eq!(status, 206);
    assert_eq!(tail, shared.object[100_000..]);
    let (_, info) = link_info(&mut client, &id, ACCESS).await;
    assert_eq!(info["downloads_left"], 1);

    // A wrong or missing ticket gets nothing.
    assert_eq!(content(&mut client, &id, "bogus", None).await.0, 401);
    let (status, _, _) = client
        .raw("GET", &format!("/v1/links/{id}/content"), &[], vec![], None)
        .await;
    assert_eq!(status, 401);
    // A user token is not a ticket.
    assert_eq!(content(&mut client, &id, &alice_token, None).await.0, 401);

    // Second open works, the third finds the limit.
    assert_eq!(open(&mut client, &id, None).await.0, 200);
    let (status, body) = open(&mut client, &id, None).await;
    assert_eq!(status, 410);
    assert_eq!(body["error"]["code"], "link_exhausted");
    let (status, _) = link_info(&mut client, &id, ACCESS).await;
    assert_eq!(status, 410);

    // The owner sees the count; a ticket of one link does not open another.
    let (_, list) = client
        .call(
            "GET",
            &format!("/v1/files/{}/links", shared.file),
            None,
            Some(&alice_token),
        )
        .await;
    assert_eq!(list["links"].as_array().unwrap().len(), 1);
    assert_eq!(list["links"][0]["downloads"], 2);
    let (_, other) = create_link(
        &mut client,
        &alice_token,
        &shared.file,
        json!({"stanza": stanza_b64}),
    )
    .await;
    let other = other["id"].as_str().unwrap().to_string();
    assert_eq!(content(&mut client, &other, &ticket, None).await.0, 401);

    // Revoking: bob may not, alice may; outstanding tickets die with it.
    let (status, _) = client
        .call("DELETE", &format!("/v1/links/{id}"), None, Some(&bob_token))
        .await;
    assert_eq!(status, 404);
    assert_eq!(content(&mut client, &id, &ticket, None).await.0, 200);
    let (status, _) = client
        .call(
            "DELETE",
            &format!("/v1/links/{id}"),
            None,
            Some(&alice_token),
        )
        .await;
    assert_eq!(status, 204);
    assert_eq!(content(&mut client, &id, &ticket, None).await.0, 401);
    let (status, _) = link_info(&mut client, &id, ACCESS).await;
    assert_eq!(status, 404);

    // Deleting the file takes its links with it.
    let (status, _) = client
        .call(
            "DELETE",
            &format!("/v1/files/{}", shared.file),
            None,
            Some(&alice_token),
        )
        .await;
    assert_eq!(status, 200);
    assert_eq!(open(&mut client, &other, None).await.0, 404);
    server.shutdown().await;
}

#[tokio::test]
async fn expiry_and_bad_requests() {
    let server = Server::start(60).await;
    let alice = server.add_user("alice").await;
    let mut client = server.connect().await;
    let token = client.login("alice", &alice, &server.identity).await;
    let shared = upload(&mut client, &token, &alice).await;
    let link_key = Identity::generate().unwrap();
    let stanza = B64.encode(
        link_stanza(&mut client, &token, &shared, &alice, &link_key)
            .await
            .to_bytes(),
    );

    for bad in [
        json!({"stanza": stanza, "expires_in": 0}),
        json!({"stanza": stanza, "expires_in": 31 * 24 * 3600}),
        json!({"stanza": stanza, "max_downloads": 0}),
        json!({"stanza": B64.encode([7u8; 89])}),
        json!({"stanza": "not base64!"}),
        json!({"stanza": stanza, "client_salt": B64.encode([0u8; 65])}),
        json!({"stanza": stanza, "password": ""}),
        json!({"stanza": stanza, "access": ""}),
    ] {
        let (status, body) = create_link(&mut client, &token, &shared.file, bad.clone()).await;
        assert_eq!(status, 400, "{bad} → {body}");
    }
    let (status, _, _) = client
        .raw(
            "POST",
            &format!("/v1/files/{}/links", shared.file),
            &[JSON],
            b"{garbage".to_vec(),
            Some(&token),
        )
        .await;
    assert_eq!(status, 400);
    assert_eq!(
        open(&mut client, "0123456789abcdef0123456789abcdef", None)
            .await
            .0,
        404
    );
    assert_eq!(open(&mut client, "../../etc/passwd", None).await.0, 404);

    let (status, link) = create_link(
        &mut client,
        &token,
        &shared.file,
        json!({"stanza": stanza, "expires_in": 1}),
    )
    .await;
    assert_eq!(status, 201);
    let id = link["id"].as_str().unwrap();
    tokio::time::sleep(std::time::Duration::from_millis(2100)).await;
    let (status, body) = open(&mut client, id, None).await;
    assert_eq!(status, 410);
    assert_eq!(body["error"]["code"], "link_expired");
    // Swept, it keeps saying "expired" (not "no such link") to whoever
    // holds the URL, without its wrap.
    use coffer_server::store::MetaStore as _;
    let store = server.store().await;
    store.sweep_links(coffer_server::unix_now()).await.unwrap();
    assert!(store.link(id).await.unwrap().unwrap().stanza.is_empty());
    let (status, body) = open(&mut client, id, None).await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (410, Some("link_expired"))
    );
    server.shutdown().await;
}

#[tokio::test]
async fn password_verifier_and_lockout() {
    let server = Server::start(60).await;
    let alice = server.add_user("alice").await;
    let mut client = server.connect().await;
    let token = client.login("alice", &alice, &server.identity).await;
    let shared = upload(&mut client, &token, &alice).await;
    let link_key = Identity::generate().unwrap();
    let stanza = B64.encode(
        link_stanza(&mut client, &token, &shared, &alice, &link_key)
            .await
            .to_bytes(),
    );
    let salt = B64.encode([9u8; 16]);
    let (status, link) = create_link(
        &mut client,
        &token,
        &shared.file,
        json!({"stanza": stanza, "password": "correct horse", "client_salt": salt, "max_downloads": 1}),
    )
    .await;
    assert_eq!(status, 201);
    let id = link["id"].as_str().unwrap().to_string();

    let (_, info) = link_info(&mut client, &id, ACCESS).await;
    assert_eq!(info["password_required"], true);
    assert_eq!(info["client_salt"], salt.as_str());
    assert!(info.get("stanza").is_none(), "no wrap before the password");

    let (status, body) = open(&mut client, &id, None).await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (401, Some("password_required"))
    );
    let (status, body) = open(&mut client, &id, Some("wrong horse")).await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (401, Some("wrong_password"))
    );
    assert!(body.get("stanza").is_none());
    // An oversized password is refused without hashing it, as a wrong one.
    let (status, body) = open(&mut client, &id, Some(&"x".repeat(5000))).await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (401, Some("wrong_password"))
    );
    // Wrong passwords spend no download: the single one is still there.
    let (status, opened) = open(&mut client, &id, Some("correct horse")).await;
    assert_eq!(status, 200, "{opened}");
    let (status, object) =
        content(&mut client, &id, opened["ticket"].as_str().unwrap(), None).await;
    assert_eq!(status, 200);
    assert_eq!(
        decrypt(&object, opened["stanza"].as_str().unwrap(), &link_key),
        shared.plain
    );

    // Guessing locks a link for good (default: after 10 wrong passwords).
    let (_, link) = create_link(
        &mut client,
        &token,
        &shared.file,
        json!({"stanza": stanza, "password": "correct horse"}),
    )
    .await;
    let id = link["id"].as_str().unwrap().to_string();
    for _ in 0..10 {
        assert_eq!(open(&mut client, &id, Some("guess")).await.0, 401);
    }
    let (status, body) = open(&mut client, &id, Some("correct horse")).await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (410, Some("link_locked"))
    );
    let (_, list) = client
        .call(
            "GET",
            &format!("/v1/files/{}/links", shared.file),
            None,
            Some(&token),
        )
        .await;
    let locked = list["links"]
        .as_array()
        .unwrap()
        .iter()
        .find(|l| l["id"] == id.as_str());
    assert_eq!(locked.unwrap()["locked"], true);
    server.shutdown().await;
}

#[tokio::test]
async fn racing_openers_share_the_last_download() {
    let server = Server::start(60).await;
    let alice = server.add_user("alice").await;
    let mut client = server.connect().await;
    let token = client.login("alice", &alice, &server.identity).await;
    let shared = upload(&mut client, &token, &alice).await;
    let link_key = Identity::generate().unwrap();
    let stanza = B64.encode(
        link_stanza(&mut client, &token, &shared, &alice, &link_key)
            .await
            .to_bytes(),
    );
    let (_, link) = create_link(
        &mut client,
        &token,
        &shared.file,
        json!({"stanza": stanza, "max_downloads": 1}),
    )
    .await;
    let id = link["id"].as_str().unwrap().to_string();
    let mut openers = Vec::new();
    for _ in 0..8 {
        let mut c = server.connect().await;
        let id = id.clone();
        openers.push(tokio::spawn(async move { open(&mut c, &id, None).await.0 }));
    }
    let mut statuses = Vec::new();
    for opener in openers {
        statuses.push(opener.await.unwrap());
    }
    statuses.sort();
    assert_eq!(statuses, [200, 410, 410, 410, 410, 410, 410, 410]);
    server.shutdown().await;
}

/// The link id alone (from a log line, a proxy) opens nothing and locks
/// nothing: without the access proof a link does not exist. With it,
/// concurrent wrong guesses cannot overshoot the lockout.
#[tokio::test]
async fn only_url_holders_may_look_guess_or_lock() {
    let server = Server::start(60).await;
    let alice = server.add_user("alice").await;
    let mut client = server.connect().await;
    let token = client.login("alice", &alice, &server.identity).await;
    let shared = upload(&mut client, &token, &alice).await;
    let link_key = Identity::generate().unwrap();
    let stanza = B64.encode(
        link_stanza(&mut client, &token, &shared, &alice, &link_key)
            .await
            .to_bytes(),
    );
    let (_, link) = create_link(
        &mut client,
        &token,
        &shared.file,
        json!({"stanza": stanza, "password": "correct horse"}),
    )
    .await;
    let id = link["id"].as_str().unwrap().to_string();
    for access in ["", "wrong-proof", &ACCESS[1..]] {
        assert_eq!(
            link_info(&mut client, &id, access).await.0,
            404,
            "{access:?}"
        );
        for _ in 0..12 {
            let (status, body) = open_with(&mut client, &id, access, Some("guess")).await;
            assert_eq!(status, 404, "{body}");
        }
    }
    // Nothing was counted: the owner's link is not locked.
    let (status, opened) = open(&mut client, &id, Some("correct horse")).await;
    assert_eq!(status, 200, "{opened}");

    // 14 wrong guesses at once with 10 allowed: exactly 10 are checked.
    // (14 connections: the per-address cap is 16.)
    let mut guessers = Vec::new();
    for _ in 0..14 {
        let mut c = server.connect().await;
        let id = id.clone();
        guessers.push(tokio::spawn(async move {
            open(&mut c, &id, Some("guess")).await.0
        }));
    }
    let mut wrong = 0;
    for guesser in guessers {
        match guesser.await.unwrap() {
            401 => wrong += 1,
            410 => {}
            other => panic!("unexpected {other}"),
        }
    }
    assert_eq!(wrong, 10, "checked passwords past the lockout");
    let (status, body) = open(&mut client, &id, Some("correct horse")).await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (410, Some("link_locked"))
    );
    server.shutdown().await;
}

/// Disabling the owner stops their links, tickets included.
#[tokio::test]
async fn a_disabled_owners_links_stop() {
    let server = Server::start(60).await;
    let alice = server.add_user("alice").await;
    let mut client = server.connect().await;
    let token = client.login("alice", &alice, &server.identity).await;
    let shared = upload(&mut client, &token, &alice).await;
    let link_key = Identity::generate().unwrap();
    let stanza = B64.encode(
        link_stanza(&mut client, &token, &shared, &alice, &link_key)
            .await
            .to_bytes(),
    );
    let (_, link) = create_link(&mut client, &token, &shared.file, json!({"stanza": stanza})).await;
    let id = link["id"].as_str().unwrap().to_string();
    let (status, opened) = open(&mut client, &id, None).await;
    assert_eq!(status, 200);
    let ticket = opened["ticket"].as_str().unwrap().to_string();
    assert_eq!(content(&mut client, &id, &ticket, None).await.0, 200);

    use coffer_server::store::MetaStore as _;
    server
        .store()
        .await
        .set_disabled("alice", true)
        .await
        .unwrap();
    assert_eq!(link_info(&mut client, &id, ACCESS).await.0, 410);
    assert_eq!(open(&mut client, &id, None).await.0, 410);
    assert_eq!(content(&mut client, &id, &ticket, None).await.0, 410);
    server.shutdown().await;
}

// --- Upload links (file requests) ----------------------------------------------

/// The access proof the tests' upload links are made with.
const REQUEST_ACCESS: &str = "proof-of-holding-the-upload-url";

/// An anonymous sender's object for `owner`: encrypted to their key, signed
/// by a one-time key, naming the upload link `request` in its metadata.
fn anonymous_object(owner: &Identity, request: &str, size: usize) -> (Vec<u8>, Vec<u8>) {
    let sender = Identity::generate_classic().unwrap();
    let to = [owner.public().clone()];
    let mut options = EncryptOptions::new(&to, &sender);
    options.metadata.name = Some("scan.pdf".into());
    options.metadata.request = Some(request.into());
    let mut id = [0u8; 16];
    aws_lc_rs::rand::fill(&mut id).unwrap();
    options.file_id = Some(id);
    let prepared = prepare(options).unwrap();
    let wrap = prepared.stanzas()[0].to_bytes();
    let mut w = prepared.writer(Vec::new(), Stanzas::Detached).unwrap();
    std::io::Write::write_all(&mut w, &vec![7u8; size]).unwrap();
    (w.finish().unwrap().0, wrap)
}

/// A key wrap sent with an upload: the user and the stanza.
type Wrap<'a> = (&'a str, &'a [u8]);

/// A tus creation through upload link `request` carrying `object` whole,
/// with the given wraps and any `extra` metadata pair.
async fn send_through(
    client: &mut Client,
    request: &str,
    access: &str,
    object: &[u8],
    wraps: &[Wrap<'_>],
    extra: &str,
) -> (u16, hyper::HeaderMap, Value) {
    let mut pairs = vec!["coffer-e2ee".to_string(), common::file_id_pair(object)];
    for (user, wrap) in wraps {
        pairs.push(format!(
            "coffer-wrap.{user} {}",
            base64::engine::general_purpose::STANDARD.encode(wrap)
        ));
    }
    if !extra.is_empty() {
        pairs.push(extra.to_string());
    }
    let metadata = pairs.join(",");
    let len = object.len().to_string();
    let headers = [
        TUS,
        OCTETS,
        ("upload-length", len.as_str()),
        ("upload-metadata", metadata.as_str()),
        ("coffer-request", request),
        ("coffer-request-access", access),
    ];
    let (status, headers, body) = client
        .raw("POST", "/v1/uploads", &headers, object.to_vec(), None)
        .await;
    let body = serde_json::from_slice(&body).unwrap_or(Value::Null);
    (status, headers, body)
}

async fn request_info(client: &mut Client, request: &str, access: &str) -> (u16, Value) {
    let (status, _, body) = client
        .raw(
            "GET",
            &format!("/v1/requests/{request}"),
            &[
                ("coffer-request-access", access),
                ("accept", "application/json"),
            ],
            vec![],
            None,
        )
        .await;
    (status, serde_json::from_slice(&body).unwrap_or(Value::Null))
}

async fn new_request(client: &mut Client, token: &str, body: Value) -> String {
    let (status, made) = client
        .call("POST", "/v1/requests", Some(body), Some(token))
        .await;
    assert_eq!(status, 201, "{made}");
    made["id"].as_str().unwrap().to_string()
}

#[tokio::test]
async fn upload_links_take_anonymous_encrypted_files_within_their_limits() {
    let server = Server::start_with(coffer_server::Config {
        limits: coffer_server::Limits {
            request_uploads_per_window: 11,
            ..common::functional_config().limits
        },
        ..common::functional_config()
    })
    .await;
    let alice = server.add_user("alice").await;
    let bob = server.add_user("bob").await;
    let mut client = server.connect().await;
    let token = client.login("alice", &alice, &server.identity).await;
    let bob_token = client.login("bob", &bob, &server.identity).await;
    let body = json!({"access": REQUEST_ACCESS, "max_files": 2, "max_file_bytes": 100_000, "ask_name": true});
    let id = new_request(&mut client, &token, body).await;
    for bad in [
        json!({"access": REQUEST_ACCESS, "expires_in": 0}),
        json!({"access": REQUEST_ACCESS, "max_files": 0}),
        json!({"access": ""}),
    ] {
        let (status, _) = client
            .call("POST", "/v1/requests", Some(bad.clone()), Some(&token))
            .await;
        assert_eq!(status, 400, "{bad}");
    }

    // Without the proof the link does not exist; with it, the page learns
    // alice's key (which it checks against the URL's pin) and the limits.
    assert_eq!(request_info(&mut client, &id, "wrong").await.0, 404);
    assert_eq!(
        request_info(&mut client, "nope", REQUEST_ACCESS).await.0,
        404
    );
    let (status, info) = request_info(&mut client, &id, REQUEST_ACCESS).await;
    assert_eq!(status, 200, "{info}");
    assert_eq!(info["owner"], "alice");
    assert_eq!(
        B64.decode(info["recipient"].as_str().unwrap()).unwrap(),
        alice.public().to_bytes()
    );
    assert_eq!(
        (info["files_left"].as_u64(), info["ask_name"].as_bool()),
        (Some(2), Some(true))
    );

    // What is refused before the upload begins costs no file of the link.
    let (object, wrap) = anonymous_object(&alice, &id, 20_000);
    let refusals: [(&[Wrap], &str, &str, u16); 5] = [
        (&[], "", REQUEST_ACCESS, 400),               // no wrap for alice
        (&[("bob", &wrap)], "", REQUEST_ACCESS, 400), // a wrap for someone else
        (&[("alice", &wrap), ("bob", &wrap)], "", REQUEST_ACCESS, 400),
        (
            &[("alice", &wrap)],
            "coffer-delete-when-received",
            REQUEST_ACCESS,
            400,
        ),
        (&[("alice", &wrap)], "", "wrong", 404), // no proof, no link
    ];
    for (wraps, extra, access, expected) in refusals {
        let (status, _, answer) =
            send_through(&mut client, &id, access, &object, wraps, extra).await;
        assert_eq!(status, expected, "{answer}");
    }
    let (big, big_wrap) = anonymous_object(&alice, &id, 150_000);
    let (status, _, answer) = send_through(
        &mut client,
        &id,
        REQUEST_ACCESS,
        &big,
        &[("alice", &big_wrap)],
        "",
    )
    .await;
    assert_eq!(
        (status, answer["error"]["code"].as_str()),
        (413, Some("too_large"))
    );
    // Bytes that are not a valid coffer object are refused at the commit
    // (and spend a file: the link cannot know before the last byte).
    let mut forged = object.clone();
    let at = forged.len() - 100;
    forged[at] ^= 1;
    let (status, _, answer) = send_through(
        &mut client,
        &id,
        REQUEST_ACCESS,
        &forged,
        &[("alice", &wrap)],
        "",
    )
    .await;
    assert_eq!(
        (status, answer["error"]["code"].as_str()),
        (422, Some("invalid_object"))
    );

    // A valid one arrives: alice's, not among her own uploads, in her inbox
    // marked as come through the link.
    let (status, headers, answer) = send_through(
        &mut client,
        &id,
        REQUEST_ACCESS,
        &object,
        &[("alice", &wrap)],
        "",
    )
    .await;
    assert_eq!(status, 201, "{answer}");
    let file = headers["coffer-file-id"].to_str().unwrap().to_string();
    let (_, own) = client.call("GET", "/v1/files", None, Some(&token)).await;
    assert!(own["files"].as_array().unwrap().is_empty(), "{own}");
    let (_, inbox) = client
        .call(
            "GET",
            "/v1/files?shared_with_me=true&unreceived=true",
            None,
            Some(&token),
        )
        .await;
    assert_eq!(inbox["files"][0]["id"], file.as_str(), "{inbox}");
    assert_eq!(inbox["files"][0]["owner"], "alice");
    assert_eq!(inbox["files"][0]["via_request"], id.as_str());
    let (status, _) = client
        .call("GET", &format!("/v1/files/{file}"), None, Some(&bob_token))
        .await;
    assert_eq!(status, 404, "bob has no access");

    // The link has now taken its two files.
    let (other, other_wrap) = anonymous_object(&alice, &id, 10);
    let (status, _, answer) = send_through(
        &mut client,
        &id,
        REQUEST_ACCESS,
        &other,
        &[("alice", &other_wrap)],
        "",
    )
    .await;
    assert_eq!(
        (status, answer["error"]["code"].as_str()),
        (410, Some("request_exhausted"))
    );
    assert_eq!(request_info(&mut client, &id, REQUEST_ACCESS).await.0, 410);
    let (_, listed) = client.call("GET", "/v1/requests", None, Some(&token)).await;
    assert_eq!(listed["requests"][0]["files_started"], 2, "{listed}");
    let (_, none) = client
        .call("GET", "/v1/requests", None, Some(&bob_token))
        .await;
    assert!(none["requests"].as_array().unwrap().is_empty());

    // An anonymous sender reaches only uploads begun through their link,
    // and alice's token does not reach those.
    let open = new_request(&mut client, &token, json!({"access": REQUEST_ACCESS})).await;
    let (partial, partial_wrap) = anonymous_object(&alice, &open, 20_000);
    let pairs = format!(
        "coffer-e2ee,{},coffer-wrap.alice {}",
        common::file_id_pair(&partial),
        base64::engine::general_purpose::STANDARD.encode(&partial_wrap)
    );
    let len = partial.len().to_string();
    let creation = [
        TUS,
        ("upload-length", len.as_str()),
        ("upload-metadata", pairs.as_str()),
        ("coffer-request", open.as_str()),
        ("coffer-request-access", REQUEST_ACCESS),
    ];
    let (status, headers, _) = client
        .raw("POST", "/v1/uploads", &creation, vec![], None)
        .await;
    assert_eq!(status, 201);
    let location = headers["location"].to_str().unwrap().to_string();
    let as_sender = [
        TUS,
        ("coffer-request", open.as_str()),
        ("coffer-request-access", REQUEST_ACCESS),
    ];
    assert_eq!(
        client
            .raw("HEAD", &location, &as_sender, vec![], None)
            .await
            .0,
        200
    );
    assert_eq!(
        client
            .raw("HEAD", &location, &[TUS], vec![], Some(&token))
            .await
            .0,
        404
    );
    let wrong_link = [
        TUS,
        ("coffer-request", id.as_str()),
        ("coffer-request-access", REQUEST_ACCESS),
    ];
    assert_eq!(
        client
            .raw("HEAD", &location, &wrong_link, vec![], None)
            .await
            .0,
        404
    );
    let alices = [
        TUS,
        ("upload-length", "100"),
        ("upload-metadata", "coffer-e2ee"),
    ];
    let (status, headers, _) = client
        .raw("POST", "/v1/uploads", &alices, vec![], Some(&token))
        .await;
    assert_eq!(status, 201);
    let alices = headers["location"].to_str().unwrap();
    assert_eq!(
        client
            .raw("HEAD", alices, &[TUS], vec![], Some(&token))
            .await
            .0,
        200
    );
    assert_eq!(
        client.raw("HEAD", alices, &as_sender, vec![], None).await.0,
        404
    );
    let as_sender_patch = [
        TUS,
        OCTETS,
        ("upload-offset", "0"),
        ("coffer-request", open.as_str()),
        ("coffer-request-access", REQUEST_ACCESS),
    ];
    assert_eq!(
        client
            .raw("PATCH", alices, &as_sender_patch, vec![1; 10], None)
            .await
            .0,
        404
    );

    // Revoked, the link takes nothing more, not even its upload under way.
    let (status, _) = client
        .call(
            "DELETE",
            &format!("/v1/requests/{open}"),
            None,
            Some(&bob_token),
        )
        .await;
    assert_eq!(status, 404, "only the owner revokes");
    let (status, _) = client
        .call(
            "DELETE",
            &format!("/v1/requests/{open}"),
            None,
            Some(&token),
        )
        .await;
    assert_eq!(status, 204);
    assert_eq!(
        client
            .raw("HEAD", &location, &as_sender, vec![], None)
            .await
            .0,
        404
    );
    assert_eq!(
        request_info(&mut client, &open, REQUEST_ACCESS).await.0,
        404
    );

    // Senders begin at most `request_uploads_per_window` uploads per address
    // (11 here; 9 reached that check above, refused ones included: a flood
    // is a flood).
    let third = new_request(&mut client, &token, json!({"access": "third"})).await;
    let mut statuses = Vec::new();
    for _ in 0..4 {
        let (object, wrap) = anonymous_object(&alice, &third, 10);
        statuses.push(
            send_through(
                &mut client,
                &third,
                "third",
                &object,
                &[("alice", &wrap)],
                "",
            )
            .await
            .0,
        );
    }
    // (The budget refills slowly, so a slow run may get one more in.)
    assert_eq!((statuses[0], statuses[3]), (201, 429), "{statuses:?}");

    let dir = server.stop().await;
    let audit = common::audit_text(dir.path()).await;
    for action in [
        "request_create",
        "request_upload",
        "request_delete",
        "rate_limit",
    ] {
        assert!(audit.contains(action), "{action} audited:\n{audit}");
    }
    assert!(
        audit.contains("request_exhausted") && audit.contains("too_large"),
        "{audit}"
    );
}

#[tokio::test]
async fn an_expired_upload_link_takes_no_new_upload() {
    let server = Server::start(60).await;
    let alice = server.add_user("alice").await;
    let mut client = server.connect().await;
    let token = client.login("alice", &alice, &server.identity).await;
    let body = json!({"access": REQUEST_ACCESS, "expires_in": 1});
    let id = new_request(&mut client, &token, body).await;
    tokio::time::sleep(std::time::Duration::from_millis(2100)).await;
    let (status, info) = request_info(&mut client, &id, REQUEST_ACCESS).await;
    assert_eq!(
        (status, info["error"]["code"].as_str()),
        (410, Some("request_expired"))
    );
    let (object, wrap) = anonymous_object(&alice, &id, 10);
    let (status, _, answer) = send_through(
        &mut client,
        &id,
        REQUEST_ACCESS,
        &object,
        &[("alice", &wrap)],
        "",
    )
    .await;
    assert_eq!(
        (status, answer["error"]["code"].as_str()),
        (410, Some("request_expired"))
    );
}

/// A tus creation through upload link `request` with `first` bytes of an
/// object of `total`, giving `password` in `Coffer-Request-Password`.
async fn begin_with_password(
    client: &mut Client,
    request: &str,
    password: Option<&str>,
    object: &[u8],
    wrap: &[u8],
    first: usize,
) -> (u16, hyper::HeaderMap) {
    let metadata = format!(
        "coffer-e2ee,{},coffer-wrap.alice {}",
        common::file_id_pair(object),
        base64::engine::general_purpose::STANDARD.encode(wrap)
    );
    let len = object.len().to_string();
    let mut headers = vec![
        TUS,
        OCTETS,
        ("upload-length", len.as_str()),
        ("upload-metadata", metadata.as_str()),
        ("coffer-request", request),
        ("coffer-request-access", REQUEST_ACCESS),
    ];
    if let Some(password) = password {
        headers.push(("coffer-request-password", password));
    }
    let (status, headers, _) = client
        .raw(
            "POST",
            "/v1/uploads",
            &headers,
            object[..first].to_vec(),
            None,
        )
        .await;
    (status, headers)
}

/// `coffer request --password`: without the password nobody sees the link
/// or begins an upload; an upload begun with it goes on without it; wrong
/// ones are counted and audited, and lock the link for good.
#[tokio::test]
async fn a_password_upload_link_needs_it_to_look_and_to_begin() {
    let server = Server::start_with(coffer_server::Config {
        link_max_password_failures: 3,
        ..common::functional_config()
    })
    .await;
    let alice = server.add_user("alice").await;
    let mut client = server.connect().await;
    let token = client.login("alice", &alice, &server.identity).await;
    const RIGHT: &str = "derived-from-the-password-and-secret";
    let request = new_request(
        &mut client,
        &token,
        json!({"access": REQUEST_ACCESS, "password": RIGHT}),
    )
    .await;
    let info = |password: Option<&'static str>| {
        let mut headers = vec![
            ("coffer-request-access", REQUEST_ACCESS),
            ("accept", "application/json"),
        ];
        headers.extend(password.map(|p| ("coffer-request-password", p)));
        let path = format!("/v1/requests/{request}");
        (path, headers)
    };
    let (path, headers) = info(None);
    let (status, _, body) = client.raw("GET", &path, &headers, vec![], None).await;
    let body: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (401, Some("password_required"))
    );
    assert!(
        body.get("recipient").is_none(),
        "the key is shown without the password"
    );
    let (path, headers) = info(Some("wrong"));
    let (status, _, body) = client.raw("GET", &path, &headers, vec![], None).await;
    let body: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (401, Some("wrong_password"))
    );
    let (path, headers) = info(Some(RIGHT));
    let (status, _, body) = client.raw("GET", &path, &headers, vec![], None).await;
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));

    // Beginning an upload needs it; carrying one on does not.
    let (object, wrap) = anonymous_object(&alice, &request, 300_000);
    let (status, _) =
        begin_with_password(&mut client, &request, None, &object, &wrap, 100_000).await;
    assert_eq!(status, 401);
    let (status, headers) =
        begin_with_password(&mut client, &request, Some(RIGHT), &object, &wrap, 100_000).await;
    assert_eq!(status, 201);
    let location = headers["location"].to_str().unwrap().to_string();
    let (status, _, body) = client
        .raw(
            "PATCH",
            &location,
            &[
                TUS,
                OCTETS,
                ("upload-offset", "100000"),
                ("coffer-request", request.as_str()),
                ("coffer-request-access", REQUEST_ACCESS),
            ],
            object[100_000..].to_vec(),
            None,
        )
        .await;
    assert_eq!(status, 204, "{}", String::from_utf8_lossy(&body));

    // The owner sees it has a password and one wrong try (the info above;
    // the missing one is not counted).
    let (_, listed) = client.call("GET", "/v1/requests", None, Some(&token)).await;
    assert_eq!(listed["requests"][0]["password"], true, "{listed}");
    assert_eq!(listed["requests"][0]["failed_attempts"], 1, "{listed}");
    // Two more wrong ones lock it, even against the right one after.
    for _ in 0..2 {
        let (status, _) =
            begin_with_password(&mut client, &request, Some("nope"), &object, &wrap, 0).await;
        assert_eq!(status, 401);
    }
    let (path, headers) = info(Some(RIGHT));
    let (status, _, body) = client.raw("GET", &path, &headers, vec![], None).await;
    let body: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (410, Some("request_locked"))
    );
    let dir = server.stop().await;
    let audit = common::audit_text(dir.path()).await;
    assert_eq!(audit.matches("request_password").count(), 3, "{audit}");
}
