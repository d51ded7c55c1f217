//! Metadata storage behind a trait, so that PostgreSQL can slot in beside the
//! embedded SQLite without touching the handlers. Each method is one atomic
//! operation; in particular [`MetaStore::take_challenge`] deletes the nonce
//! in the same statement that reads it, so two requests racing to use one
//! nonce cannot both succeed.

use std::future::Future;
use std::pin::Pin;

mod sql;

pub use sql::{Column, Database, SqlStore, Table};

/// Errors from the metadata store.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// A row that must be unique already exists.
    #[error("{0} already exists")]
    Conflict(&'static str),
    /// The database failed.
    #[error("database error: {0}")]
    Database(#[from] sqlx::Error),
    /// Migrations failed.
    #[error("database migration failed: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
}

/// Boxed future returned by [`MetaStore`] methods (object-safe async).
pub type StoreFuture<'a, T> = Pin<Box<dyn Future<Output = Result<T, StoreError>> + Send + 'a>>;

/// A registered user.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct User {
    /// Login name.
    pub name: String,
    /// The user's `coffer1…` public identity.
    pub public_identity: String,
    /// May administer the server.
    pub is_admin: bool,
    /// Storage quota in bytes, if limited.
    pub quota_bytes: Option<u64>,
    /// Disabled users cannot log in; disabling revokes their tokens.
    pub disabled: bool,
}

/// A token to store: only its hash, whose it is, when the session it
/// belongs to began (refreshes keep that) and when this token expires.
#[derive(Clone, Debug)]
pub struct NewToken<'a> {
    pub hash: &'a [u8],
    pub user: &'a str,
    pub session_started: i64,
    pub expires_at: i64,
}

/// An upload in progress.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Upload {
    /// Random id (also the staged object's name).
    pub id: String,
    /// Owning user.
    pub owner: String,
    /// Declared total length.
    pub length: u64,
    /// Bytes durably received.
    pub offset: u64,
    /// The tus `Upload-Metadata` header as sent.
    pub metadata: String,
    /// Unix time after which the upload is abandoned.
    pub expires_at: i64,
    /// Length of the staged file at `offset` (differs from `offset` when the
    /// server encrypts the staged bytes).
    pub staged_len: u64,
    /// For uploads the server encrypts: the staging key wrapped by a KEK.
    pub staging_key: Option<WrappedKey>,
    /// The object store's own record of the staged bytes (for S3: the
    /// multipart upload and its parts), opaque here; empty for local disk.
    /// Kept beside `offset` and moved with it, so any node can go on.
    pub staging: Vec<u8>,
    /// The upload link it comes through; `None`: the owner's own upload.
    pub via_request: Option<String>,
}

/// A key wrapped by a KEK version.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WrappedKey {
    /// KEK version that wraps it.
    pub kek_version: u32,
    /// Nonce, ciphertext and tag.
    pub wrapped: Vec<u8>,
}

/// The DEK of a server-encrypted file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ObjectKey {
    /// The file.
    pub file_id: String,
    /// The DEK, wrapped.
    pub key: WrappedKey,
    /// Size of the stored (encrypted) object.
    pub stored_size: u64,
}

/// How many keys a KEK version wraps.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KekUsage {
    /// Version.
    pub version: u32,
    /// Unix time it was added.
    pub created_at: i64,
    /// File DEKs it wraps.
    pub objects: u64,
    /// Staging keys of unfinished uploads it wraps.
    pub uploads: u64,
}

/// A committed file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FileRecord {
    /// Random id (also the object's name).
    pub id: String,
    /// Owning user.
    pub owner: String,
    /// Size in bytes.
    pub size: u64,
    /// The content identity (32 bytes; which one, see `digest_alg`).
    pub digest: Vec<u8>,
    /// How `digest` was computed.
    pub digest_alg: DigestAlg,
    /// Unix time of the commit.
    pub created_at: i64,
    /// The signed receipt (JSON).
    pub receipt: String,
    /// Unix time from which the file is gone (hidden at once, swept soon
    /// after); `None`: kept until deleted.
    pub expires_at: Option<i64>,
    /// Delete the file once every recipient acknowledged it.
    pub delete_when_received: bool,
    /// The upload link it came through (signed by the anonymous sender's
    /// one-time key, not the owner's); `None`: the owner uploaded it.
    pub via_request: Option<String>,
}

impl FileRecord {
    /// Whether the file has expired at `now`.
    pub fn expired(&self, now: i64) -> bool {
        self.expires_at.is_some_and(|at| at <= now)
    }
}

/// What a file's content digest is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DigestAlg {
    /// The signed root of a coffer v2 object's content tree (end-to-end
    /// encrypted uploads: the uploader computed the same, no key needed).
    Coffer2Root,
    /// BLAKE3 of the bytes a plain upload sent (the plaintext the server
    /// encrypted at rest).
    Blake3,
    /// SHA-256 of the stored bytes: files committed before format v2.
    Sha256,
}

impl DigestAlg {
    /// The name stored in the database and used in receipts and headers.
    pub fn name(self) -> &'static str {
        match self {
            DigestAlg::Coffer2Root => "coffer2-root",
            DigestAlg::Blake3 => "blake3",
            DigestAlg::Sha256 => "sha256",
        }
    }

    /// Parses a stored name.
    pub fn parse(name: &str) -> Option<Self> {
        [DigestAlg::Coffer2Root, DigestAlg::Blake3, DigestAlg::Sha256]
            .into_iter()
            .find(|alg| alg.name() == name)
    }
}

/// An upload link (file request).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Request {
    /// Random id (in the URL path).
    pub id: String,
    /// The user the uploads are for (and whose quota they use).
    pub owner: String,
    /// Unix time of creation.
    pub created_at: i64,
    /// Unix time from which no upload can begin.
    pub expires_at: i64,
    /// How many uploads may begin through it, if limited.
    pub max_files: Option<u64>,
    /// Largest upload (stored bytes) it accepts, if limited.
    pub max_file_bytes: Option<u64>,
    /// Uploads begun so far.
    pub files_started: u64,
    /// Whether the page asks senders for their name (which travels
    /// encrypted, in the file's metadata).
    pub ask_name: bool,
    /// SHA-256 of the access proof derived from the URL secret.
    pub access_hash: Vec<u8>,
    /// Argon2id verifier (PHC string) of the link's password, if it has one.
    pub password_hash: Option<String>,
    /// Wrong passwords so far (reserved attempts included).
    pub failed_attempts: u32,
}

/// How long an expired link's row stays, without its wrap, so that its URL
/// answers "expired" rather than "no such link" (see
/// [`MetaStore::sweep_links`]).
pub const EXPIRED_LINK_KEPT_SECS: i64 = 30 * 24 * 3600;

/// An anonymous share link.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Link {
    /// Random id (in the link's URL path).
    pub id: String,
    /// The file it opens.
    pub file_id: String,
    /// Key wrap for the link's key, which the server cannot derive.
    pub stanza: Vec<u8>,
    /// Unix time of creation.
    pub created_at: i64,
    /// Unix time after which it can no longer be opened.
    pub expires_at: i64,
    /// How many times it may be opened, if limited.
    pub max_downloads: Option<u64>,
    /// How many times it has been opened.
    pub downloads: u64,
    /// Argon2id PHC string of the password verifier, if one is required.
    pub password_hash: Option<String>,
    /// Opaque salt for the opener's client-side key derivation.
    pub client_salt: Option<Vec<u8>>,
    /// Wrong passwords so far (and attempts being checked).
    pub failed_attempts: u32,
    /// SHA-256 of the access proof derived from the URL secret; without
    /// the proof a link cannot be looked at or opened, so knowing its id
    /// (from a log line, say) is not enough to guess passwords or lock it.
    /// None only for links made before proofs existed.
    pub access_hash: Option<Vec<u8>>,
}

/// One audit log entry as stored.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AuditRow {
    /// Position in the chain, from 1.
    pub seq: i64,
    /// Unix time.
    pub time: i64,
    /// Who acted: a user name, `-` for anonymous, `admin` for the CLI.
    pub actor: String,
    /// Client address, or empty.
    pub ip: String,
    /// What was done (`login`, `upload`, …).
    pub action: String,
    /// What it was done to (file id, user, link id), or empty.
    pub target: String,
    /// `ok`, `failed` or `refused`.
    pub outcome: String,
    /// Small free-form detail (never secrets).
    pub detail: String,
    /// Hash of the previous entry (zeros for the first).
    pub prev_hash: Vec<u8>,
    /// Hash of this entry.
    pub hash: Vec<u8>,
}

/// A signed head of the audit chain.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AuditCheckpoint {
    /// Sequence number of the entry it covers.
    pub seq: i64,
    /// That entry's hash.
    pub hash: Vec<u8>,
    /// Unix time of signing.
    pub time: i64,
    /// Ed25519 signature by the server identity.
    pub signature: Vec<u8>,
}

/// Bytes stored and uploads open for one user.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Usage {
    /// Sum of committed file sizes.
    pub stored_bytes: u64,
    /// Sum of declared lengths of unfinished uploads.
    pub reserved_bytes: u64,
    /// Unfinished uploads.
    pub open_uploads: u64,
}

/// Where a listing page starts and how long it is. Pages are keyed by the
/// last entry seen (`created_at`, `id`), so a listing of any length costs
/// the same per page and files added meanwhile neither repeat nor vanish.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Page {
    /// The last entry of the previous page, if any.
    pub after: Option<(i64, String)>,
    /// Entries at most.
    pub limit: u32,
}

impl Page {
    /// The first `limit` entries.
    pub fn first(limit: u32) -> Self {
        Self { after: None, limit }
    }

    /// The page after `file`.
    pub fn after(file: &FileRecord, limit: u32) -> Self {
        Self {
            after: Some((file.created_at, file.id.clone())),
            limit,
        }
    }

    /// `(created_at, id)` of the previous page's last entry (unused on the
    /// first page).
    fn bound(&self) -> (i64, &str) {
        match &self.after {
            Some((time, id)) => (*time, id),
            None => (0, ""),
        }
    }
}

/// A key wrap to store with a committed upload: (user, stanza bytes).
pub type NewWrap = (String, Vec<u8>);

/// Everything the server keeps about users and sessions.
pub trait MetaStore: Send + Sync + 'static {
    /// Registers a user; fails with `Conflict` if the name is taken.
    fn add_user<'a>(&'a self, user: &'a User, now: i64) -> StoreFuture<'a, ()>;
    /// All users, by name.
    fn list_users(&self) -> StoreFuture<'_, Vec<User>>;
    /// One user by name.
    fn user<'a>(&'a self, name: &'a str) -> StoreFuture<'a, Option<User>>;
    /// Disables or enables a user; returns false if there is no such user.
    fn set_disabled<'a>(&'a self, name: &'a str, disabled: bool) -> StoreFuture<'a, bool>;
    /// Sets (or, with `None`, lifts) a user's storage quota; whether the
    /// user exists. Files already stored stay, also above a lower quota.
    fn set_quota<'a>(&'a self, name: &'a str, quota_bytes: Option<u64>) -> StoreFuture<'a, bool>;
    /// Replaces a user's public identity and ends their sessions (signed in
    /// with the old key); whether the user exists. Wraps to the old key stay:
    /// whoever still holds the old identity can open them.
    fn set_public_identity<'a>(
        &'a self,
        name: &'a str,
        public_identity: &'a str,
    ) -> StoreFuture<'a, bool>;
    /// Removes a user who owns nothing any more, in one transaction: their
    /// sessions, challenges, the wraps shared with them, their upload links
    /// and the user. False (and nothing changed) if there is no such user or
    /// they still own a file or an upload.
    fn remove_user<'a>(&'a self, name: &'a str) -> StoreFuture<'a, bool>;
    /// Stores a login challenge (and drops expired ones).
    fn put_challenge<'a>(
        &'a self,
        nonce: &'a [u8],
        user: &'a str,
        expires_at: i64,
        now: i64,
    ) -> StoreFuture<'a, ()>;
    /// Atomically removes a challenge and returns its user and expiry.
    fn take_challenge<'a>(&'a self, nonce: &'a [u8]) -> StoreFuture<'a, Option<(String, i64)>>;
    /// Stores a token hash (of a session that began at `token.session_started`)
    /// and drops tokens expired by `now`.
    fn put_token<'a>(&'a self, token: &'a NewToken<'a>, now: i64) -> StoreFuture<'a, ()>;
    /// Atomically removes an unexpired token and returns its user and when
    /// its session began: of two refreshes of one token, one wins.
    fn take_token<'a>(&'a self, hash: &'a [u8], now: i64)
    -> StoreFuture<'a, Option<(String, i64)>>;
    /// The enabled user owning an unexpired token hash.
    fn token_user<'a>(&'a self, hash: &'a [u8], now: i64) -> StoreFuture<'a, Option<User>>;
    /// Revokes a token; returns whether it existed.
    fn revoke_token<'a>(&'a self, hash: &'a [u8]) -> StoreFuture<'a, bool>;
    /// Records a new upload.
    fn create_upload<'a>(&'a self, upload: &'a Upload) -> StoreFuture<'a, ()>;
    /// One upload by id.
    fn upload<'a>(&'a self, id: &'a str) -> StoreFuture<'a, Option<Upload>>;
    /// Moves an upload's offset from `from` to `to`, its staged length to
    /// `staged_len` and its staging record to `staging`; false if it was
    /// not at `from` any more (another writer got there first).
    fn advance_upload<'a>(
        &'a self,
        id: &'a str,
        from: u64,
        to: u64,
        staged_len: u64,
        staging: &'a [u8],
    ) -> StoreFuture<'a, bool>;
    /// Takes (or, for the same `holder`, extends) the right to write an
    /// upload until `until`; false if another holder's lease is still
    /// running at `now`. Nodes sharing a database exclude each other with
    /// this, not with anything in their own memory.
    fn lease_upload<'a>(
        &'a self,
        id: &'a str,
        holder: &'a str,
        until: i64,
        now: i64,
    ) -> StoreFuture<'a, bool>;
    /// Gives a lease back (if `holder` still has it).
    fn release_upload<'a>(&'a self, id: &'a str, holder: &'a str) -> StoreFuture<'a, ()>;
    /// Every file `owner` owns, expired or received through an upload link
    /// included (for removing the user).
    fn owned_files<'a>(&'a self, owner: &'a str) -> StoreFuture<'a, Vec<FileRecord>>;
    /// The unfinished uploads of `owner`.
    fn owner_uploads<'a>(&'a self, owner: &'a str) -> StoreFuture<'a, Vec<Upload>>;
    /// Forgets an upload; returns whether it existed.
    fn delete_upload<'a>(&'a self, id: &'a str) -> StoreFuture<'a, bool>;
    /// Uploads abandoned before `now`.
    fn expired_uploads(&self, now: i64) -> StoreFuture<'_, Vec<String>>;
    /// In one transaction: records the file with its key wraps and forgets
    /// the upload.
    fn commit_upload<'a>(
        &'a self,
        upload_id: &'a str,
        file: &'a FileRecord,
        wraps: &'a [NewWrap],
        object_key: Option<&'a ObjectKey>,
    ) -> StoreFuture<'a, ()>;
    /// One file by id; `None` also once it has expired.
    fn file<'a>(&'a self, id: &'a str) -> StoreFuture<'a, Option<FileRecord>>;
    /// Ids of files expired at `now` (at most 1000, oldest expiry first):
    /// hidden from every read already, for the sweep to delete.
    fn expired_files(&self, now: i64) -> StoreFuture<'_, Vec<String>>;
    /// Recipients (not the owner) of a file who have not acknowledged it.
    fn unreceived_wraps<'a>(&'a self, file_id: &'a str) -> StoreFuture<'a, u64>;
    /// Files owned by `owner`, newest first, one page at a time.
    fn list_files<'a>(&'a self, owner: &'a str, page: &'a Page)
    -> StoreFuture<'a, Vec<FileRecord>>;
    /// Deletes a file row (and its wraps); returns whether it existed.
    fn delete_file<'a>(&'a self, id: &'a str) -> StoreFuture<'a, bool>;
    /// Stores (or replaces) `user`'s key wrap for a file: the share.
    fn put_wrap<'a>(
        &'a self,
        file_id: &'a str,
        user: &'a str,
        stanza: &'a [u8],
        now: i64,
    ) -> StoreFuture<'a, ()>;
    /// `user`'s key wrap for a file, if shared with them.
    fn wrap<'a>(&'a self, file_id: &'a str, user: &'a str) -> StoreFuture<'a, Option<Vec<u8>>>;
    /// Removes a share; returns whether it existed.
    fn delete_wrap<'a>(&'a self, file_id: &'a str, user: &'a str) -> StoreFuture<'a, bool>;
    /// Users holding a wrap for a file.
    fn wrap_users<'a>(&'a self, file_id: &'a str) -> StoreFuture<'a, Vec<String>>;
    /// Files others shared with `user`, newest first, one page at a time;
    /// with `unreceived`, only those `user` has not acknowledged.
    fn shared_with<'a>(
        &'a self,
        user: &'a str,
        page: &'a Page,
        unreceived: bool,
    ) -> StoreFuture<'a, Vec<FileRecord>>;
    /// Records that `user` received the file shared with them (`at`, unix
    /// time; an earlier acknowledgement is kept); whether they hold a wrap.
    fn mark_received<'a>(
        &'a self,
        file_id: &'a str,
        user: &'a str,
        at: i64,
    ) -> StoreFuture<'a, bool>;
    /// Records a new upload link.
    fn create_request<'a>(&'a self, request: &'a Request) -> StoreFuture<'a, ()>;
    /// An upload link by id.
    fn request<'a>(&'a self, id: &'a str) -> StoreFuture<'a, Option<Request>>;
    /// The upload links of `owner`, newest first.
    fn owner_requests<'a>(&'a self, owner: &'a str) -> StoreFuture<'a, Vec<Request>>;
    /// Removes an upload link (its files stay; uploads under way through it
    /// can no longer go on, as no one can authenticate for them).
    /// Counts one password attempt on upload link `id` before it is
    /// checked, unless `max_failures` are spent; whether it was counted.
    fn reserve_request_attempt<'a>(
        &'a self,
        id: &'a str,
        max_failures: u32,
    ) -> StoreFuture<'a, bool>;
    /// Gives back an attempt reserved by [`Self::reserve_request_attempt`]
    /// (the password was right).
    fn release_request_attempt<'a>(&'a self, id: &'a str) -> StoreFuture<'a, ()>;
    fn delete_request<'a>(&'a self, id: &'a str) -> StoreFuture<'a, bool>;
    /// Counts one more upload begun through the link, atomically, unless
    /// it expired at `now` or has taken its `max_files`.
    fn spend_request_file<'a>(&'a self, id: &'a str, now: i64) -> StoreFuture<'a, bool>;
    /// Removes links expired at `now` (their files stay).
    fn sweep_requests(&self, now: i64) -> StoreFuture<'_, u64>;
    /// Records a new link.
    fn create_link<'a>(&'a self, link: &'a Link) -> StoreFuture<'a, ()>;
    /// One link by id.
    fn link<'a>(&'a self, id: &'a str) -> StoreFuture<'a, Option<Link>>;
    /// The links of a file, newest first.
    fn file_links<'a>(&'a self, file_id: &'a str) -> StoreFuture<'a, Vec<Link>>;
    /// Deletes a link and its tickets; returns whether it existed.
    fn delete_link<'a>(&'a self, id: &'a str) -> StoreFuture<'a, bool>;
    /// Reserves one password attempt before it is checked, atomically:
    /// false when `max_failures` are already counted (so concurrent wrong
    /// guesses cannot overshoot the limit). A right password gives the
    /// reservation back with [`MetaStore::release_link_attempt`].
    fn reserve_link_attempt<'a>(&'a self, id: &'a str, max_failures: u32) -> StoreFuture<'a, bool>;
    /// Gives back a reserved attempt (the password was right).
    fn release_link_attempt<'a>(&'a self, id: &'a str) -> StoreFuture<'a, ()>;
    /// Spends one download of a link, atomically: false if it is expired,
    /// exhausted or locked by `max_failures` wrong passwords (so two openers
    /// racing for the last download cannot both win).
    fn spend_link_download<'a>(
        &'a self,
        id: &'a str,
        now: i64,
        max_failures: u32,
    ) -> StoreFuture<'a, bool>;
    /// Stores a download ticket (hash) for a link.
    fn put_link_ticket<'a>(
        &'a self,
        hash: &'a [u8],
        link_id: &'a str,
        expires_at: i64,
    ) -> StoreFuture<'a, ()>;
    /// The link an unexpired ticket hash belongs to.
    fn ticket_link<'a>(&'a self, hash: &'a [u8], now: i64) -> StoreFuture<'a, Option<Link>>;
    /// Removes expired tickets. An expired link no ticket still uses loses
    /// its wrap and password verifier at once, but its row (id, expiry,
    /// access hash) stays for [`EXPIRED_LINK_KEPT_SECS`], so whoever holds
    /// the URL hears "expired" rather than "no such link"; then it goes.
    /// Returns the number of links removed.
    fn sweep_links(&self, now: i64) -> StoreFuture<'_, u64>;
    /// Storage used by `user`.
    fn usage<'a>(&'a self, user: &'a str) -> StoreFuture<'a, Usage>;
    /// The last audit entry's sequence number and hash.
    fn audit_head(&self) -> StoreFuture<'_, Option<(i64, Vec<u8>)>>;
    /// Appends an audit entry; `Conflict` if its `seq` is taken (another
    /// writer appended first: re-read the head and retry).
    fn insert_audit<'a>(&'a self, row: &'a AuditRow) -> StoreFuture<'a, ()>;
    /// Up to `limit` audit entries with `seq > after`, in order.
    fn audit_entries(&self, after: i64, limit: u32) -> StoreFuture<'_, Vec<AuditRow>>;
    /// Stores a signed head.
    fn insert_audit_checkpoint<'a>(&'a self, cp: &'a AuditCheckpoint) -> StoreFuture<'a, ()>;
    /// All signed heads, by sequence number.
    fn audit_checkpoints(&self) -> StoreFuture<'_, Vec<AuditCheckpoint>>;
    /// Every KEK version with its sealed key, by version.
    fn keks(&self) -> StoreFuture<'_, Vec<(u32, Vec<u8>)>>;
    /// Adds a KEK version; `Conflict` if it exists.
    fn insert_kek<'a>(&'a self, version: u32, sealed: &'a [u8], now: i64) -> StoreFuture<'a, ()>;
    /// In one transaction, replaces the sealed form of every KEK version
    /// (version, old sealed, new sealed), each only if it is still the old
    /// one; returns false, changing nothing, if any was not or if the
    /// keyring holds a version not listed.
    fn reseal_keks<'a>(&'a self, resealed: &'a [(u32, Vec<u8>, Vec<u8>)]) -> StoreFuture<'a, bool>;
    /// The DEK of a server-encrypted file.
    fn object_key<'a>(&'a self, file_id: &'a str) -> StoreFuture<'a, Option<ObjectKey>>;
    /// Up to `limit` file DEKs wrapped under a version below `version`.
    fn stale_object_keys(&self, version: u32, limit: u32) -> StoreFuture<'_, Vec<ObjectKey>>;
    /// Up to `limit` (upload id, staging key) under a version below `version`.
    fn stale_upload_keys(
        &self,
        version: u32,
        limit: u32,
    ) -> StoreFuture<'_, Vec<(String, WrappedKey)>>;
    /// In one transaction, replaces wraps (files and uploads) whose stored
    /// version still equals the old one; returns how many were replaced.
    fn rewrap<'a>(
        &'a self,
        objects: &'a [(String, WrappedKey, WrappedKey)],
        uploads: &'a [(String, WrappedKey, WrappedKey)],
    ) -> StoreFuture<'a, u64>;
    /// Each KEK version with the number of keys it wraps.
    fn kek_usage(&self) -> StoreFuture<'_, Vec<KekUsage>>;
    /// Deletes a KEK version if nothing references it; returns whether it did.
    fn delete_unused_kek(&self, version: u32) -> StoreFuture<'_, bool>;
}
