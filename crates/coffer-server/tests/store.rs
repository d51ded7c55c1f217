//! The metadata conformance suite: every `MetaStore` operation, run the same
//! way against SQLite and against PostgreSQL (`COFFER_TEST_POSTGRES`; see
//! `scripts/test-services`). Races are run through two separate connection
//! pools on the same database, as two server nodes would hold.

use std::sync::Arc;

use coffer_server::store::{
    AuditCheckpoint, AuditRow, Database, FileRecord, Link, MetaStore, NewToken, ObjectKey, Page,
    Request, SqlStore, Upload, User, WrappedKey,
};
use coffer_server::testing;

/// One backend's database, opened twice (two "nodes").
struct Pair {
    name: &'static str,
    a: Arc<SqlStore>,
    b: Arc<SqlStore>,
    _dir: Option<tempfile::TempDir>,
}

async fn backends() -> Vec<Pair> {
    let dir = tempfile::tempdir().unwrap();
    let sqlite = Database::Sqlite(dir.path().join("meta.db"));
    let mut pairs = vec![Pair {
        name: "sqlite",
        a: Arc::new(SqlStore::open(&sqlite).await.unwrap()),
        b: Arc::new(SqlStore::open(&sqlite).await.unwrap()),
        _dir: Some(dir),
    }];
    if testing::require(
        "PostgreSQL for the metadata conformance suite (COFFER_TEST_POSTGRES)",
        testing::postgres_url().is_some(),
    ) {
        let pg = Database::Postgres(testing::fresh_postgres_database().await);
        // Both nodes migrate at once, as nodes starting together would.
        let (a, b) = tokio::join!(SqlStore::open(&pg), SqlStore::open(&pg));
        pairs.push(Pair {
            name: "postgres",
            a: Arc::new(a.unwrap()),
            b: Arc::new(b.unwrap()),
            _dir: None,
        });
    }
    pairs
}

fn user(name: &str) -> User {
    User {
        name: name.into(),
        public_identity: format!("coffer1{name}"),
        is_admin: false,
        quota_bytes: Some(1000),
        disabled: false,
    }
}

fn upload(id: &str, owner: &str, length: u64) -> Upload {
    Upload {
        id: id.into(),
        owner: owner.into(),
        length,
        offset: 0,
        metadata: "filename aGk=".into(),
        expires_at: 1_000,
        staged_len: 0,
        staging_key: None,
        staging: b"{\"multipart\":\"m\"}".to_vec(),
        via_request: None,
    }
}

fn file(id: &str, owner: &str, created_at: i64) -> FileRecord {
    FileRecord {
        id: id.into(),
        owner: owner.into(),
        size: 10,
        digest: vec![7; 32],
        digest_alg: coffer_server::store::DigestAlg::Coffer2Root,
        created_at,
        receipt: "{}".into(),
        expires_at: None,
        delete_when_received: false,
        via_request: None,
    }
}

/// Adds users and commits file `id` owned by alice (wrap for her and bob).
async fn with_file(store: &dyn MetaStore, id: &str) {
    for name in ["alice", "bob"] {
        let _ = store.add_user(&user(name), 1).await;
    }
    let up = format!("up{id}");
    store
        .create_upload(&upload(&up, "alice", 10))
        .await
        .unwrap();
    let wraps = vec![
        ("alice".to_string(), b"w-alice".to_vec()),
        ("bob".to_string(), b"w-bob".to_vec()),
    ];
    store
        .commit_upload(&up, &file(id, "alice", 5), &wraps, None)
        .await
        .unwrap();
}

#[tokio::test]
async fn users_are_unique_listed_by_name_and_disabled() {
    for pair in backends().await {
        let s = pair.a.as_ref();
        for name in ["zed", "alice", "Bob"] {
            s.add_user(&user(name), 1).await.unwrap();
        }
        assert!(
            s.add_user(&user("alice"), 2).await.is_err(),
            "{}",
            pair.name
        );
        let names: Vec<_> = s
            .list_users()
            .await
            .unwrap()
            .into_iter()
            .map(|u| u.name)
            .collect();
        assert_eq!(names, ["Bob", "alice", "zed"], "{}: byte order", pair.name);
        assert_eq!(s.user("alice").await.unwrap(), Some(user("alice")));
        assert!(s.set_disabled("alice", true).await.unwrap());
        assert!(s.user("alice").await.unwrap().unwrap().disabled);
        assert!(!s.set_disabled("nobody", true).await.unwrap());
        assert_eq!(s.user("nobody").await.unwrap(), None);
        assert!(s.set_quota("alice", Some(1 << 40)).await.unwrap());
        assert_eq!(
            s.user("alice").await.unwrap().unwrap().quota_bytes,
            Some(1 << 40)
        );
        assert!(s.set_quota("alice", None).await.unwrap());
        assert_eq!(s.user("alice").await.unwrap().unwrap().quota_bytes, None);
        assert!(!s.set_quota("nobody", Some(1)).await.unwrap());
    }
}

#[tokio::test]
async fn a_challenge_is_consumed_exactly_once_even_by_racing_nodes() {
    for pair in backends().await {
        let (a, b) = (pair.a.clone(), pair.b.clone());
        a.add_user(&user("alice"), 1).await.unwrap();
        // An expired challenge is dropped when the next one is stored.
        a.put_challenge(b"old", "alice", 5, 1).await.unwrap();
        a.put_challenge(b"n0", "alice", 100, 10).await.unwrap();
        assert_eq!(
            a.take_challenge(b"old").await.unwrap(),
            None,
            "{}",
            pair.name
        );
        assert_eq!(
            a.take_challenge(b"n0").await.unwrap(),
            Some(("alice".to_string(), 100))
        );
        assert_eq!(b.take_challenge(b"n0").await.unwrap(), None, "replayed");

        let nonces: Vec<Vec<u8>> = (0..40u8).map(|i| vec![i; 32]).collect();
        for nonce in &nonces {
            a.put_challenge(nonce, "alice", 100, 10).await.unwrap();
        }
        let mut racers = Vec::new();
        for nonce in &nonces {
            for node in [a.clone(), b.clone()] {
                let nonce = nonce.clone();
                racers.push(tokio::spawn(async move {
                    node.take_challenge(&nonce).await.unwrap().is_some()
                }));
            }
        }
        let mut wins = 0;
        for racer in racers {
            wins += usize::from(racer.await.unwrap());
        }
        assert_eq!(wins, nonces.len(), "{}: one winner per nonce", pair.name);
    }
}

#[tokio::test]
async fn tokens_expire_die_with_their_user_and_revoke() {
    for pair in backends().await {
        let (a, b) = (pair.a.as_ref(), pair.b.as_ref());
        a.add_user(&user("alice"), 1).await.unwrap();
        let token = |hash: &'static [u8], expires_at| NewToken {
            hash,
            user: "alice",
            session_started: 10,
            expires_at,
        };
        a.put_token(&token(b"h1", 100), 10).await.unwrap();
        a.put_token(&token(b"h2", 100), 10).await.unwrap();
        a.put_token(&token(b"h3", 100), 10).await.unwrap();
        // Taking a token is atomic: of two takers, one gets it.
        let (first, second) = tokio::join!(a.take_token(b"h3", 50), b.take_token(b"h3", 50));
        let taken: Vec<_> = [first.unwrap(), second.unwrap()]
            .into_iter()
            .flatten()
            .collect();
        assert_eq!(taken, [("alice".to_string(), 10)], "{}", pair.name);
        assert_eq!(b.token_user(b"h3", 50).await.unwrap(), None);
        a.put_token(&token(b"h4", 20), 10).await.unwrap();
        assert_eq!(a.take_token(b"h4", 20).await.unwrap(), None, "expired");
        // Valid on every node.
        assert_eq!(b.token_user(b"h1", 50).await.unwrap(), Some(user("alice")));
        assert_eq!(b.token_user(b"h1", 100).await.unwrap(), None, "expired");
        assert_eq!(b.token_user(b"nope", 50).await.unwrap(), None);
        assert!(b.revoke_token(b"h1").await.unwrap());
        assert!(!a.revoke_token(b"h1").await.unwrap());
        assert_eq!(
            a.token_user(b"h1", 50).await.unwrap(),
            None,
            "{}",
            pair.name
        );
        a.set_disabled("alice", true).await.unwrap();
        assert_eq!(a.token_user(b"h2", 50).await.unwrap(), None, "disabled");
        // Enabling again does not bring the old token back.
        a.set_disabled("alice", false).await.unwrap();
        assert_eq!(a.token_user(b"h2", 50).await.unwrap(), None, "revoked");
        // Storing a token sweeps the expired ones.
        a.put_token(&token(b"h5", 30), 10).await.unwrap();
        a.put_token(&token(b"h6", 100), 40).await.unwrap();
        assert!(!a.revoke_token(b"h5").await.unwrap(), "swept");
    }
}

#[tokio::test]
async fn uploads_advance_by_compare_and_set_and_count_against_quota() {
    for pair in backends().await {
        let (a, b) = (pair.a.as_ref(), pair.b.as_ref());
        a.add_user(&user("alice"), 1).await.unwrap();
        let up = upload("u1", "alice", 300);
        a.create_upload(&up).await.unwrap();
        assert_eq!(b.upload("u1").await.unwrap(), Some(up.clone()));
        assert!(a.advance_upload("u1", 0, 100, 110, b"s1").await.unwrap());
        // A node holding the old offset loses.
        assert!(!b.advance_upload("u1", 0, 50, 55, b"s2").await.unwrap());
        let now = b.upload("u1").await.unwrap().unwrap();
        assert_eq!(
            (now.offset, now.staged_len, now.staging.as_slice()),
            (100, 110, &b"s1"[..]),
            "{}",
            pair.name
        );
        let usage = a.usage("alice").await.unwrap();
        assert_eq!((usage.reserved_bytes, usage.open_uploads), (300, 1));
        assert_eq!(a.expired_uploads(999).await.unwrap(), Vec::<String>::new());
        assert_eq!(a.expired_uploads(1001).await.unwrap(), vec!["u1"]);
        assert!(a.delete_upload("u1").await.unwrap());
        assert!(!a.delete_upload("u1").await.unwrap());
    }
}

#[tokio::test]
async fn one_node_at_a_time_holds_an_upload_lease() {
    for pair in backends().await {
        let (a, b) = (pair.a.clone(), pair.b.clone());
        a.add_user(&user("alice"), 1).await.unwrap();
        a.create_upload(&upload("u1", "alice", 10)).await.unwrap();
        assert!(a.lease_upload("u1", "A", 130, 100).await.unwrap());
        assert!(
            !b.lease_upload("u1", "B", 130, 110).await.unwrap(),
            "{}",
            pair.name
        );
        assert!(
            a.lease_upload("u1", "A", 160, 120).await.unwrap(),
            "renewal"
        );
        assert!(!b.lease_upload("u1", "B", 170, 150).await.unwrap());
        // Run out: the next node may take it.
        assert!(b.lease_upload("u1", "B", 200, 161).await.unwrap());
        a.release_upload("u1", "A").await.unwrap(); // not A's any more
        assert!(!a.lease_upload("u1", "A", 200, 170).await.unwrap());
        b.release_upload("u1", "B").await.unwrap();
        assert!(!a.lease_upload("nope", "A", 200, 170).await.unwrap());

        // Racing for a free lease: one winner.
        let mut racers = Vec::new();
        for i in 0..20 {
            let node = if i % 2 == 0 { a.clone() } else { b.clone() };
            racers.push(tokio::spawn(async move {
                node.lease_upload("u1", &format!("h{i}"), 500, 300)
                    .await
                    .unwrap()
            }));
        }
        let mut wins = 0;
        for racer in racers {
            wins += usize::from(racer.await.unwrap());
        }
        assert_eq!(wins, 1, "{}", pair.name);
        assert_eq!(a.release_all_leases().await.unwrap(), 1);
    }
}

#[tokio::test]
async fn commits_files_wraps_and_shares() {
    for pair in backends().await {
        let (a, b) = (pair.a.as_ref(), pair.b.as_ref());
        with_file(a, "f1").await;
        assert_eq!(b.upload("upf1").await.unwrap(), None, "upload gone");
        assert_eq!(b.file("f1").await.unwrap(), Some(file("f1", "alice", 5)));
        let up = upload("upf2", "alice", 10);
        a.create_upload(&up).await.unwrap();
        a.commit_upload("upf2", &file("f2", "alice", 9), &[], None)
            .await
            .unwrap();
        let ids: Vec<_> = b
            .list_files("alice", &Page::first(100))
            .await
            .unwrap()
            .into_iter()
            .map(|f| f.id)
            .collect();
        assert_eq!(ids, ["f2", "f1"], "{}: newest first", pair.name);
        assert_eq!(a.usage("alice").await.unwrap().stored_bytes, 20);

        assert_eq!(a.wrap("f1", "bob").await.unwrap(), Some(b"w-bob".to_vec()));
        assert_eq!(a.wrap_users("f1").await.unwrap(), vec!["alice", "bob"]);
        let shared: Vec<_> = a
            .shared_with("bob", &Page::first(100), false)
            .await
            .unwrap()
            .into_iter()
            .map(|f| f.id)
            .collect();
        assert_eq!(shared, ["f1"]);
        // An acknowledgement, seen by the other node too; only a holder of
        // a wrap can give one, and the first time is kept.
        assert!(!a.mark_received("f1", "carol", 5).await.unwrap());
        assert!(!a.mark_received("nope", "bob", 5).await.unwrap());
        assert_eq!(
            b.shared_with("bob", &Page::first(100), true)
                .await
                .unwrap()
                .len(),
            1
        );
        assert_eq!(
            b.unreceived_wraps("f1").await.unwrap(),
            1,
            "bob's, not the owner's"
        );
        assert!(a.mark_received("f1", "bob", 5).await.unwrap());
        assert!(a.mark_received("f1", "bob", 6).await.unwrap());
        assert_eq!(b.unreceived_wraps("f1").await.unwrap(), 0);
        assert!(
            b.shared_with("bob", &Page::first(100), true)
                .await
                .unwrap()
                .is_empty(),
            "{}: acknowledged",
            pair.name
        );
        assert_eq!(
            b.shared_with("bob", &Page::first(100), false)
                .await
                .unwrap()
                .len(),
            1,
            "still listed in full"
        );
        assert!(
            a.shared_with("alice", &Page::first(100), false)
                .await
                .unwrap()
                .is_empty(),
            "own files"
        );
        a.put_wrap("f1", "bob", b"w-bob-2", 7).await.unwrap();
        assert_eq!(
            b.wrap("f1", "bob").await.unwrap(),
            Some(b"w-bob-2".to_vec())
        );
        assert!(b.delete_wrap("f1", "bob").await.unwrap());
        assert!(!b.delete_wrap("f1", "bob").await.unwrap());
        assert_eq!(a.wrap("f1", "bob").await.unwrap(), None);

        // A commit that fails leaves the upload in place (one transaction).
        let again = upload("upf3", "alice", 10);
        a.create_upload(&again).await.unwrap();
        let clash = a
            .commit_upload("upf3", &file("f2", "alice", 9), &[], None)
            .await;
        assert!(clash.is_err(), "{}: duplicate file id", pair.name);
        assert_eq!(a.upload("upf3").await.unwrap(), Some(again));

        assert!(a.delete_file("f1").await.unwrap());
        assert_eq!(a.wrap("f1", "alice").await.unwrap(), None, "wraps cascade");
        assert!(!a.delete_file("f1").await.unwrap());
    }
}

fn link(id: &str, max_downloads: Option<u64>) -> Link {
    Link {
        id: id.into(),
        file_id: "f1".into(),
        stanza: b"stanza".to_vec(),
        created_at: 1,
        expires_at: 100,
        max_downloads,
        downloads: 0,
        password_hash: Some("$argon2id$...".into()),
        client_salt: Some(vec![1; 16]),
        failed_attempts: 0,
        access_hash: Some(vec![7; 32]),
    }
}

#[tokio::test]
async fn link_downloads_are_counted_exactly_under_races() {
    for pair in backends().await {
        let (a, b) = (pair.a.clone(), pair.b.clone());
        with_file(a.as_ref(), "f1").await;
        a.create_link(&link("l1", Some(5))).await.unwrap();
        assert_eq!(b.link("l1").await.unwrap(), Some(link("l1", Some(5))));
        let mut racers = Vec::new();
        for i in 0..24 {
            let node = if i % 2 == 0 { a.clone() } else { b.clone() };
            racers.push(tokio::spawn(async move {
                node.spend_link_download("l1", 50, 10).await.unwrap()
            }));
        }
        let mut spent = 0;
        for racer in racers {
            spent += usize::from(racer.await.unwrap());
        }
        assert_eq!(spent, 5, "{}: exactly max_downloads", pair.name);
        assert_eq!(a.link("l1").await.unwrap().unwrap().downloads, 5);

        a.create_link(&link("l2", None)).await.unwrap();
        assert!(
            !a.spend_link_download("l2", 100, 10).await.unwrap(),
            "expired"
        );
        // Attempts are reserved atomically: of 12 racing guessers with 3
        // attempts left, exactly 3 get to check a password.
        let mut guessers = Vec::new();
        for i in 0..12 {
            let node = if i % 2 == 0 { a.clone() } else { b.clone() };
            guessers.push(tokio::spawn(async move {
                node.reserve_link_attempt("l2", 3).await.unwrap()
            }));
        }
        let mut reserved = 0;
        for guesser in guessers {
            reserved += usize::from(guesser.await.unwrap());
        }
        assert_eq!(reserved, 3, "{}", pair.name);
        assert_eq!(a.link("l2").await.unwrap().unwrap().failed_attempts, 3);
        assert!(!a.spend_link_download("l2", 50, 3).await.unwrap(), "locked");
        // A right password gives its reservation back.
        a.release_link_attempt("l2").await.unwrap();
        assert!(a.spend_link_download("l2", 50, 3).await.unwrap());
        assert!(!a.reserve_link_attempt("nope", 3).await.unwrap());

        let ids: Vec<_> = a
            .file_links("f1")
            .await
            .unwrap()
            .into_iter()
            .map(|l| l.id)
            .collect();
        assert_eq!(ids.len(), 2);
        a.put_link_ticket(b"t1", "l1", 200).await.unwrap();
        assert_eq!(b.ticket_link(b"t1", 150).await.unwrap().unwrap().id, "l1");
        assert_eq!(b.ticket_link(b"t1", 200).await.unwrap(), None, "expired");
        // At 150 both links are expired, but l1 still has a live ticket:
        // l2 loses its wrap and verifier, and stays as a tombstone.
        assert_eq!(a.sweep_links(150).await.unwrap(), 0);
        let tombstone = a.link("l2").await.unwrap().unwrap();
        assert!(tombstone.stanza.is_empty() && tombstone.password_hash.is_none());
        assert!(!a.link("l1").await.unwrap().unwrap().stanza.is_empty());
        assert!(a.link("l1").await.unwrap().is_some());
        assert!(a.delete_link("l1").await.unwrap());
        assert_eq!(
            a.ticket_link(b"t1", 150).await.unwrap(),
            None,
            "{}",
            pair.name
        );
        let later = 150 + coffer_server::store::EXPIRED_LINK_KEPT_SECS;
        assert_eq!(a.sweep_links(later).await.unwrap(), 1);
        assert!(a.link("l2").await.unwrap().is_none());
    }
}

fn request(id: &str, max_files: Option<u64>) -> Request {
    Request {
        id: id.into(),
        owner: "alice".into(),
        created_at: 1,
        expires_at: 100,
        max_files,
        max_file_bytes: Some(1 << 20),
        files_started: 0,
        ask_name: true,
        access_hash: vec![9; 32],
        password_hash: Some("$argon2id$stand-in".into()),
        failed_attempts: 0,
    }
}

#[tokio::test]
async fn upload_links_count_files_exactly_and_their_files_go_to_the_inbox() {
    for pair in backends().await {
        let (a, b) = (pair.a.clone(), pair.b.clone());
        with_file(a.as_ref(), "own").await;
        a.create_request(&request("r1", Some(4))).await.unwrap();
        assert_eq!(b.request("r1").await.unwrap(), Some(request("r1", Some(4))));
        let mut racers = Vec::new();
        for i in 0..16 {
            let node = if i % 2 == 0 { a.clone() } else { b.clone() };
            racers.push(tokio::spawn(async move {
                node.spend_request_file("r1", 50).await.unwrap()
            }));
        }
        let mut started = 0;
        for racer in racers {
            started += usize::from(racer.await.unwrap());
        }
        assert_eq!(started, 4, "{}: exactly max_files", pair.name);
        a.create_request(&request("r2", None)).await.unwrap();
        assert!(a.spend_request_file("r2", 99).await.unwrap());
        assert!(!a.spend_request_file("r2", 100).await.unwrap(), "expired");
        assert!(!a.spend_request_file("nope", 1).await.unwrap());
        // Password attempts: reserved up to the limit across nodes, given
        // back when right.
        assert!(a.reserve_request_attempt("r2", 2).await.unwrap());
        assert!(b.reserve_request_attempt("r2", 2).await.unwrap());
        assert!(!a.reserve_request_attempt("r2", 2).await.unwrap(), "locked");
        b.release_request_attempt("r2").await.unwrap();
        assert_eq!(a.request("r2").await.unwrap().unwrap().failed_attempts, 1);
        assert!(!a.reserve_request_attempt("nope", 2).await.unwrap());
        let ids: Vec<_> = a
            .owner_requests("alice")
            .await
            .unwrap()
            .into_iter()
            .map(|r| r.id)
            .collect();
        assert_eq!(ids.len(), 2, "{}", pair.name);
        assert!(a.owner_requests("bob").await.unwrap().is_empty());

        // A file that came through the link is alice's, and in her inbox,
        // not among the files she uploaded herself.
        let mut up = upload("upr", "alice", 10);
        up.via_request = Some("r1".into());
        a.create_upload(&up).await.unwrap();
        assert_eq!(b.upload("upr").await.unwrap(), Some(up.clone()));
        let mut received = file("viar", "alice", 6);
        received.via_request = Some("r1".into());
        let wraps = vec![("alice".to_string(), b"w".to_vec())];
        a.commit_upload("upr", &received, &wraps, None)
            .await
            .unwrap();
        assert_eq!(b.file("viar").await.unwrap(), Some(received));
        let page = Page::first(10);
        let own: Vec<_> = a
            .list_files("alice", &page)
            .await
            .unwrap()
            .into_iter()
            .map(|f| f.id)
            .collect();
        assert_eq!(own, ["own"], "{}", pair.name);
        for unreceived in [false, true] {
            let inbox: Vec<_> = a
                .shared_with("alice", &page, unreceived)
                .await
                .unwrap()
                .into_iter()
                .map(|f| f.id)
                .collect();
            assert_eq!(inbox, ["viar"], "{}", pair.name);
        }
        assert!(a.mark_received("viar", "alice", 7).await.unwrap());
        assert!(
            a.shared_with("alice", &page, true)
                .await
                .unwrap()
                .is_empty()
        );

        // The sweep takes expired links; their files stay.
        assert_eq!(a.sweep_requests(100).await.unwrap(), 2);
        assert!(a.request("r1").await.unwrap().is_none());
        assert!(a.file("viar").await.unwrap().is_some());
        a.create_request(&request("r3", None)).await.unwrap();
        assert!(a.delete_request("r3").await.unwrap());
        assert!(!a.delete_request("r3").await.unwrap(), "{}", pair.name);
    }
}

fn audit_row(seq: i64) -> AuditRow {
    AuditRow {
        seq,
        time: seq * 10,
        actor: "alice".into(),
        ip: "127.0.0.1".into(),
        action: "login".into(),
        target: String::new(),
        outcome: "ok".into(),
        detail: "d".into(),
        prev_hash: vec![seq as u8; 32],
        hash: vec![seq as u8 + 1; 32],
    }
}

#[tokio::test]
async fn the_audit_chain_cannot_fork() {
    for pair in backends().await {
        let (a, b) = (pair.a.clone(), pair.b.clone());
        assert_eq!(a.audit_head().await.unwrap(), None);
        // Two nodes appending the same sequence number: one wins.
        let first = audit_row(1);
        let (x, y) = tokio::join!(a.insert_audit(&first), b.insert_audit(&first));
        assert!(x.is_ok() != y.is_ok(), "{}", pair.name);
        for seq in 2..=4 {
            b.insert_audit(&audit_row(seq)).await.unwrap();
        }
        assert_eq!(a.audit_head().await.unwrap(), Some((4, vec![5; 32])));
        let rows = a.audit_entries(1, 2).await.unwrap();
        assert_eq!(rows, vec![audit_row(2), audit_row(3)]);
        let cp = AuditCheckpoint {
            seq: 3,
            hash: vec![4; 32],
            time: 30,
            signature: vec![9; 64],
        };
        a.insert_audit_checkpoint(&cp).await.unwrap();
        b.insert_audit_checkpoint(&cp).await.unwrap(); // idempotent
        assert_eq!(b.audit_checkpoints().await.unwrap(), vec![cp]);
    }
}

fn wrapped(version: u32, byte: u8) -> WrappedKey {
    WrappedKey {
        kek_version: version,
        wrapped: vec![byte; 60],
    }
}

#[tokio::test]
async fn keyring_references_rotate_and_prune() {
    for pair in backends().await {
        let (a, b) = (pair.a.as_ref(), pair.b.as_ref());
        a.insert_kek(1, b"sealed1", 1).await.unwrap();
        assert!(b.insert_kek(1, b"again", 2).await.is_err(), "{}", pair.name);
        a.insert_kek(2, b"sealed2", 3).await.unwrap();
        assert_eq!(
            b.keks().await.unwrap(),
            vec![(1, b"sealed1".to_vec()), (2, b"sealed2".to_vec())]
        );
        a.add_user(&user("alice"), 1).await.unwrap();
        let mut up = upload("u1", "alice", 10);
        up.staging_key = Some(wrapped(1, 3));
        a.create_upload(&up).await.unwrap();
        let up2 = upload("u2", "alice", 10);
        a.create_upload(&up2).await.unwrap();
        let key = ObjectKey {
            file_id: "f1".into(),
            key: wrapped(1, 4),
            stored_size: 99,
        };
        a.commit_upload("u2", &file("f1", "alice", 1), &[], Some(&key))
            .await
            .unwrap();
        assert_eq!(b.object_key("f1").await.unwrap(), Some(key.clone()));
        assert_eq!(b.stale_object_keys(2, 10).await.unwrap(), vec![key.clone()]);
        assert_eq!(
            b.stale_upload_keys(2, 10).await.unwrap(),
            vec![("u1".to_string(), wrapped(1, 3))]
        );
        let usage = a.kek_usage().await.unwrap();
        assert_eq!((usage[0].objects, usage[0].uploads), (1, 1));
        assert!(!a.delete_unused_kek(1).await.unwrap(), "still in use");
        // A rewrap against a stale old version changes nothing.
        assert_eq!(
            a.rewrap(&[("f1".into(), wrapped(2, 0), wrapped(2, 5))], &[])
                .await
                .unwrap(),
            0
        );
        let done = a
            .rewrap(
                &[("f1".into(), wrapped(1, 4), wrapped(2, 5))],
                &[("u1".into(), wrapped(1, 3), wrapped(2, 6))],
            )
            .await
            .unwrap();
        assert_eq!(done, 2, "{}", pair.name);
        assert!(b.stale_object_keys(2, 10).await.unwrap().is_empty());
        assert!(a.delete_unused_kek(1).await.unwrap());
        assert_eq!(a.keks().await.unwrap().len(), 1);
    }
}

#[tokio::test]
async fn the_keyring_is_resealed_whole_or_not_at_all() {
    for pair in backends().await {
        let (a, b) = (pair.a.as_ref(), pair.b.as_ref());
        a.insert_kek(1, b"old1", 1).await.unwrap();
        a.insert_kek(2, b"old2", 2).await.unwrap();
        let both = |one: &[u8], two: &[u8]| {
            vec![
                (1, b"old1".to_vec(), one.to_vec()),
                (2, b"old2".to_vec(), two.to_vec()),
            ]
        };
        // One version changed meanwhile: nothing is replaced.
        let stale = vec![
            (1, b"old1".to_vec(), b"new1".to_vec()),
            (2, b"other".to_vec(), b"new2".to_vec()),
        ];
        assert!(!a.reseal_keks(&stale).await.unwrap(), "{}", pair.name);
        // A version missing from the list (added meanwhile): nothing either.
        let partial = vec![(1, b"old1".to_vec(), b"new1".to_vec())];
        assert!(!a.reseal_keks(&partial).await.unwrap(), "{}", pair.name);
        assert_eq!(
            b.keks().await.unwrap(),
            vec![(1, b"old1".to_vec()), (2, b"old2".to_vec())],
            "{}",
            pair.name
        );
        // Two nodes race with the same old values: exactly one wins.
        let (from_a, from_b) = (both(b"a1", b"a2"), both(b"b1", b"b2"));
        let (first, second) = tokio::join!(a.reseal_keks(&from_a), b.reseal_keks(&from_b));
        let (first, second) = (first.unwrap(), second.unwrap());
        assert!(first ^ second, "{}: {first} {second}", pair.name);
        let won = if first { b"a" } else { b"b" };
        let expect: Vec<(u32, Vec<u8>)> = (1..=2)
            .map(|v| (v, [won.as_slice(), v.to_string().as_bytes()].concat()))
            .collect();
        assert_eq!(a.keks().await.unwrap(), expect, "{}", pair.name);
    }
}

#[tokio::test]
async fn listings_page_by_time_and_id_without_repeats_or_gaps() {
    for pair in backends().await {
        let s = pair.a.as_ref();
        for name in ["alice", "bob"] {
            s.add_user(&user(name), 1).await.unwrap();
        }
        // 25 files, several sharing a timestamp, all shared with bob.
        let mut expected = Vec::new();
        for i in 0..25 {
            let (id, up) = (format!("f{i:02}"), format!("u{i:02}"));
            s.create_upload(&upload(&up, "alice", 10)).await.unwrap();
            let wraps = vec![("bob".to_string(), b"w".to_vec())];
            s.commit_upload(&up, &file(&id, "alice", i / 4), &wraps, None)
                .await
                .unwrap();
            expected.push((i / 4, id));
        }
        expected.sort_by(|a, b| b.cmp(a));
        for shared in [false, true] {
            let mut seen = Vec::new();
            let mut page = Page::first(7);
            loop {
                let got = if shared {
                    s.shared_with("bob", &page, false).await.unwrap()
                } else {
                    s.list_files("alice", &page).await.unwrap()
                };
                seen.extend(got.iter().map(|f| (f.created_at, f.id.clone())));
                match got.last() {
                    Some(last) if got.len() == 7 => page = Page::after(last, 7),
                    _ => break,
                }
            }
            assert_eq!(seen, expected, "{} shared={shared}", pair.name);
        }
    }
}

#[tokio::test]
async fn expired_files_vanish_from_every_read_and_are_listed_for_the_sweep() {
    for pair in backends().await {
        let (a, b) = (pair.a.as_ref(), pair.b.as_ref());
        with_file(a, "keep").await;
        let now = coffer_server::unix_now();
        for (id, expires_at) in [("gone", now - 5), ("later", now + 3600)] {
            let up = format!("up{id}");
            a.create_upload(&upload(&up, "alice", 10)).await.unwrap();
            let mut record = file(id, "alice", 7);
            record.expires_at = Some(expires_at);
            record.delete_when_received = id == "later";
            let wraps = vec![("bob".to_string(), b"w".to_vec())];
            a.commit_upload(&up, &record, &wraps, None).await.unwrap();
        }
        assert_eq!(b.file("gone").await.unwrap(), None, "{}", pair.name);
        let later = b.file("later").await.unwrap().unwrap();
        assert_eq!(later.expires_at, Some(now + 3600));
        assert!(later.delete_when_received);
        let ids = |files: Vec<FileRecord>| files.into_iter().map(|f| f.id).collect::<Vec<_>>();
        let owned = ids(b.list_files("alice", &Page::first(100)).await.unwrap());
        assert!(!owned.contains(&"gone".to_string()), "{owned:?}");
        assert!(owned.contains(&"later".to_string()) && owned.contains(&"keep".to_string()));
        let shared = ids(b.shared_with("bob", &Page::first(100), true).await.unwrap());
        assert!(!shared.contains(&"gone".to_string()), "{shared:?}");
        assert_eq!(
            b.expired_files(now).await.unwrap(),
            vec!["gone".to_string()]
        );
        assert_eq!(
            b.expired_files(now + 7200).await.unwrap(),
            vec!["gone".to_string(), "later".to_string()],
            "oldest expiry first"
        );
        assert!(a.delete_file("gone").await.unwrap());
        assert!(b.expired_files(now).await.unwrap().is_empty());
    }
}
