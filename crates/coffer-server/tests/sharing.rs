//! End-to-end encrypted sharing through the server: the object is stored
//! without stanzas, each user's key wrap is stored separately, sharing adds a
//! wrap without touching the object, and revoking removes access.

mod common;

use base64::Engine as _;
use coffer_format::recipient::add_recipient;
use coffer_format::{EncryptOptions, Header, Identity, Stanza, Stanzas, prepare};
use common::{B64, Client, Server};
use serde_json::{Value, json};

const TUS: (&str, &str) = ("tus-resumable", "1.0.0");
const OCTETS: (&str, &str) = ("content-type", "application/offset+octet-stream");

async fn put_share(
    client: &mut Client,
    token: &str,
    file: &str,
    user: &str,
    stanza: &Stanza,
) -> u16 {
    let body = json!({"stanza": B64.encode(stanza.to_bytes())})
        .to_string()
        .into_bytes();
    client
        .raw(
            "PUT",
            &format!("/v1/files/{file}/shares/{user}"),
            &[("content-type", "application/json")],
            body,
            Some(token),
        )
        .await
        .0
}

async fn fetch_and_decrypt(
    client: &mut Client,
    token: &str,
    file: &str,
    me: &Identity,
) -> Result<Vec<u8>, u16> {
    let (status, _, wrap) = client
        .raw(
            "GET",
            &format!("/v1/files/{file}/wrap"),
            &[],
            vec![],
            Some(token),
        )
        .await;
    if status != 200 {
        return Err(status);
    }
    let wrap: Value = serde_json::from_slice(&wrap).unwrap();
    let stanza =
        Stanza::from_bytes(&B64.decode(wrap["stanza"].as_str().unwrap()).unwrap()).unwrap();
    let (status, _, object) = client
        .raw(
            "GET",
            &format!("/v1/files/{file}"),
            &[],
            vec![],
            Some(token),
        )
        .await;
    if status != 200 {
        return Err(status);
    }
    let (header, len) = Header::parse(&object).unwrap();
    let mut out = Vec::new();
    header
        .open(me, &[stanza])
        .unwrap()
        .decryptor(&object[len..])
        .unwrap()
        .copy_to(&mut out)
        .unwrap();
    Ok(out)
}

#[tokio::test]
async fn share_decrypt_revoke() {
    let server = Server::start(60).await;
    let alice = server.add_user("alice").await;
    let bob = server.add_user("bob").await;
    let carol = server.add_user("carol").await;
    let mut client = server.connect().await;
    let alice_token = client.login("alice", &alice, &server.identity).await;
    let bob_token = client.login("bob", &bob, &server.identity).await;
    let carol_token = client.login("carol", &carol, &server.identity).await;

    // Alice encrypts locally; the object carries no stanzas.
    let plain: Vec<u8> = (0..200_000u32).map(|i| (i % 241) as u8).collect();
    let me = [alice.public().clone()];
    let prepared = prepare(EncryptOptions::new(&me, &alice)).unwrap();
    let own_wrap = prepared.stanzas()[0].clone();
    let mut w = prepared.writer(Vec::new(), Stanzas::Detached).unwrap();
    std::io::Write::write_all(&mut w, &plain).unwrap();
    let object = w.finish().unwrap().0;

    let len = object.len().to_string();
    let (status, headers, _) = client
        .raw(
            "POST",
            "/v1/uploads",
            &[TUS, OCTETS, ("upload-length", &len)],
            object.clone(),
            Some(&alice_token),
        )
        .await;
    assert_eq!(status, 201);
    let file = headers["coffer-file-id"].to_str().unwrap().to_string();
    assert_eq!(
        put_share(&mut client, &alice_token, &file, "alice", &own_wrap).await,
        204
    );
    assert_eq!(
        fetch_and_decrypt(&mut client, &alice_token, &file, &alice)
            .await
            .unwrap(),
        plain
    );

    // Bob has nothing yet.
    assert_eq!(
        fetch_and_decrypt(&mut client, &bob_token, &file, &bob).await,
        Err(404)
    );

    // Alice's client computes Bob's wrap from the file key; the object is untouched.
    let (header, _) = Header::parse(&object).unwrap();
    let opened = header
        .open(&alice, std::slice::from_ref(&own_wrap))
        .unwrap();
    let for_bob = add_recipient(opened.core(), opened.file_key(), bob.public()).unwrap();
    // A wrap addressed to Carol's key is refused for Bob.
    let for_carol = add_recipient(opened.core(), opened.file_key(), carol.public()).unwrap();
    assert_eq!(
        put_share(&mut client, &alice_token, &file, "bob", &for_carol).await,
        400
    );
    assert_eq!(
        put_share(&mut client, &alice_token, &file, "bob", &for_bob).await,
        204
    );
    // Only the owner may share.
    assert_eq!(
        put_share(&mut client, &carol_token, &file, "carol", &for_carol).await,
        404
    );
    assert_eq!(
        put_share(&mut client, &alice_token, &file, "nobody", &for_bob).await,
        404
    );

    assert_eq!(
        fetch_and_decrypt(&mut client, &bob_token, &file, &bob)
            .await
            .unwrap(),
        plain
    );
    let (_, _, shared) = client
        .raw(
            "GET",
            "/v1/files?shared_with_me=true",
            &[],
            vec![],
            Some(&bob_token),
        )
        .await;
    let shared: Value = serde_json::from_slice(&shared).unwrap();
    assert_eq!(shared["files"][0]["id"], file.as_str());
    assert_eq!(shared["files"][0]["owner"], "alice");
    assert!(shared["files"][0].get("details").is_none());
    // With details, one listing carries what three calls per file return:
    // the caller's wrap, the header the object starts with, the recipients.
    let (_, wrap) = client
        .call(
            "GET",
            &format!("/v1/files/{file}/wrap"),
            None,
            Some(&bob_token),
        )
        .await;
    let (status, listed) = client
        .call(
            "GET",
            "/v1/files?shared_with_me=true&details=true",
            None,
            Some(&bob_token),
        )
        .await;
    assert_eq!(status, 200, "{listed}");
    let details = &listed["files"][0]["details"];
    assert_eq!(details["stanza"], wrap["stanza"]);
    assert!(details.get("shared_with").is_none(), "{details}");
    let header = B64.decode(details["header"].as_str().unwrap()).unwrap();
    let (_, header_len) = Header::parse(&object).unwrap();
    assert_eq!(header, object[..header_len]);
    let (_, owned) = client
        .call("GET", "/v1/files?details=true", None, Some(&alice_token))
        .await;
    assert_eq!(owned["files"][0]["details"]["shared_with"], json!(["bob"]));
    for limit in ["0", "201"] {
        let path = format!("/v1/files?details=true&limit={limit}");
        let (status, _) = client.call("GET", &path, None, Some(&alice_token)).await;
        assert_eq!(status, 400, "{path}");
    }
    let (_, _, shares) = client
        .raw(
            "GET",
            &format!("/v1/files/{file}/shares"),
            &[],
            vec![],
            Some(&alice_token),
        )
        .await;
    assert_eq!(
        serde_json::from_slice::<Value>(&shares).unwrap()["users"],
        json!(["alice", "bob"])
    );
    // Bob cannot manage shares or delete the file.
    assert_eq!(
        client
            .raw(
                "GET",
                &format!("/v1/files/{file}/shares"),
                &[],
                vec![],
                Some(&bob_token)
            )
            .await
            .0,
        404
    );
    // Someone the file was not shared with cannot delete it (a recipient
    // deleting drops only their own wrap: the CLI suite tests that).
    assert_eq!(
        client
            .raw(
                "DELETE",
                &format!("/v1/files/{file}"),
                &[],
                vec![],
                Some(&carol_token)
            )
            .await
            .0,
        404
    );
    // Carol still has nothing.
    assert_eq!(
        fetch_and_decrypt(&mut client, &carol_token, &file, &carol).await,
        Err(404)
    );

    // Revoke: Bob loses the wrap and the bytes.
    assert_eq!(
        client
            .raw(
                "DELETE",
                &format!("/v1/files/{file}/shares/bob"),
                &[],
                vec![],
                Some(&alice_token)
            )
            .await
            .0,
        204
    );
    assert_eq!(
        fetch_and_decrypt(&mut client, &bob_token, &file, &bob).await,
        Err(404)
    );
    assert_eq!(
        client
            .raw(
                "GET",
                &format!("/v1/files/{file}"),
                &[],
                vec![],
                Some(&bob_token)
            )
            .await
            .0,
        404
    );
    assert_eq!(
        client
            .raw(
                "DELETE",
                &format!("/v1/files/{file}/shares/bob"),
                &[],
                vec![],
                Some(&alice_token)
            )
            .await
            .0,
        404
    );

    // Garbage stanzas are refused.
    let body = json!({"stanza": B64.encode([7u8; 89])})
        .to_string()
        .into_bytes();
    let status = client
        .raw(
            "PUT",
            &format!("/v1/files/{file}/shares/bob"),
            &[("content-type", "application/json")],
            body,
            Some(&alice_token),
        )
        .await
        .0;
    assert_eq!(status, 400);

    // Deleting the file removes its wraps with it.
    assert_eq!(
        client
            .raw(
                "DELETE",
                &format!("/v1/files/{file}"),
                &[],
                vec![],
                Some(&alice_token)
            )
            .await
            .0,
        200
    );
    assert_eq!(
        client
            .raw(
                "GET",
                &format!("/v1/files/{file}/wrap"),
                &[],
                vec![],
                Some(&alice_token)
            )
            .await
            .0,
        404
    );
    server.shutdown().await;
}

/// Wraps sent with the tus creation request are checked before anything is
/// stored and committed in the same transaction as the file.
#[tokio::test]
async fn wraps_sent_with_the_upload() {
    let server = Server::start(60).await;
    let alice = server.add_user("alice").await;
    let bob = server.add_user("bob").await;
    let carol = server.add_user("carol").await;
    let mut client = server.connect().await;
    let alice_token = client.login("alice", &alice, &server.identity).await;
    let bob_token = client.login("bob", &bob, &server.identity).await;

    let plain = b"quarterly figures".repeat(1000);
    let to = [alice.public().clone(), bob.public().clone()];
    let prepared = prepare(EncryptOptions::new(&to, &alice)).unwrap();
    let wraps: Vec<String> = prepared
        .stanzas()
        .iter()
        .map(|s| base64::engine::general_purpose::STANDARD.encode(s.to_bytes()))
        .collect();
    let mut w = prepared.writer(Vec::new(), Stanzas::Detached).unwrap();
    std::io::Write::write_all(&mut w, &plain).unwrap();
    let object = w.finish().unwrap().0;

    let refused = [
        // Bob's wrap filed under Carol's name.
        (format!("coffer-wrap.carol {}", wraps[1]), 400),
        // No such user.
        (format!("coffer-wrap.nobody {}", wraps[1]), 404),
        // Not a stanza, not base64, twice the same user.
        ("coffer-wrap.bob AAAA".to_string(), 400),
        ("coffer-wrap.bob !!!".to_string(), 400),
        (
            format!("coffer-wrap.bob {},coffer-wrap.bob {}", wraps[1], wraps[1]),
            400,
        ),
    ];
    for (metadata, expected) in refused {
        let (status, _, _) = client
            .tus_create(&alice_token, object.clone(), Some(&metadata))
            .await;
        assert_eq!(status, expected, "{metadata}");
    }
    let (_, listed) = client
        .call("GET", "/v1/files", None, Some(&alice_token))
        .await;
    assert_eq!(
        listed["files"],
        json!([]),
        "a refused upload stores nothing"
    );

    let metadata = format!(
        "filename aWdub3JlZA==,coffer-wrap.alice {},coffer-wrap.bob {},{}",
        wraps[0],
        wraps[1],
        common::file_id_pair(&object)
    );
    let (status, headers, _) = client
        .tus_create(&alice_token, object.clone(), Some(&metadata))
        .await;
    assert_eq!(status, 201);
    let file = headers["coffer-file-id"].to_str().unwrap().to_string();
    for (token, me) in [(&alice_token, &alice), (&bob_token, &bob)] {
        assert_eq!(
            fetch_and_decrypt(&mut client, token, &file, me)
                .await
                .unwrap(),
            plain
        );
    }
    let carol_token = client.login("carol", &carol, &server.identity).await;
    assert_eq!(
        fetch_and_decrypt(&mut client, &carol_token, &file, &carol).await,
        Err(404)
    );
    server.shutdown().await;
}

#[tokio::test]
async fn wraps_per_file_are_capped() {
    let server = Server::start_with(coffer_server::Config {
        max_wraps_per_file: 2,
        ..coffer_server::Config::default()
    })
    .await;
    let ids = [
        server.add_user("alice").await,
        server.add_user("bob").await,
        server.add_user("carol").await,
    ];
    let mut client = server.connect().await;
    let token = client.login("alice", &ids[0], &server.identity).await;
    let everyone: Vec<_> = ids.iter().map(|i| i.public().clone()).collect();
    let prepared = prepare(EncryptOptions::new(&everyone, &ids[0])).unwrap();
    let wraps: Vec<String> = prepared
        .stanzas()
        .iter()
        .map(|s| base64::engine::general_purpose::STANDARD.encode(s.to_bytes()))
        .collect();
    let stanza_for_carol = prepared.stanzas()[2].clone();
    let mut w = prepared.writer(Vec::new(), Stanzas::Detached).unwrap();
    std::io::Write::write_all(&mut w, b"x").unwrap();
    let object = w.finish().unwrap().0;
    let names = ["alice", "bob", "carol"];
    let all_three = (0..3)
        .map(|i| format!("coffer-wrap.{} {}", names[i], wraps[i]))
        .collect::<Vec<_>>()
        .join(",");
    let (status, _, _) = client
        .tus_create(&token, object.clone(), Some(&all_three))
        .await;
    assert_eq!(status, 413);
    let metadata = format!(
        "coffer-wrap.alice {},coffer-wrap.bob {},{}",
        wraps[0],
        wraps[1],
        common::file_id_pair(&object)
    );
    let body = object.clone();
    let (status, headers, _) = client.tus_create(&token, body, Some(&metadata)).await;
    assert_eq!(status, 201);
    let file = headers["coffer-file-id"].to_str().unwrap().to_string();
    assert_eq!(
        put_share(&mut client, &token, &file, "carol", &stanza_for_carol).await,
        413
    );
    // Replacing an existing wrap is not a new one.
    let own = Stanza::from_bytes(
        &base64::engine::general_purpose::STANDARD
            .decode(&wraps[1])
            .unwrap(),
    )
    .unwrap();
    assert_eq!(
        put_share(&mut client, &token, &file, "bob", &own).await,
        204
    );
    server.shutdown().await;
}
