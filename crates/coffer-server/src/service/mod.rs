//! The file service: what the server does, as plain Rust over the storage
//! traits, with no HTTP types. The HTTP layer ([`crate::http`]) parses a
//! request, calls one function here, and turns the result into a response;
//! the same operations can serve the browser pages and the command-line
//! tools.
//!
//! * [`session`]: login challenges, signed logins, tokens;
//! * [`uploads`]: tus uploads, the keyless check of E2EE objects, the commit
//!   with its receipt, the sweep of abandoned uploads;
//! * [`files`]: who may see a file, listings, deletion, receipts;
//! * [`downloads`]: the stored bytes of a file, decrypted on the fly for files
//!   the server encrypted ([`at_rest`]);
//! * [`shares`] and [`links`]: key wraps for other users and for links;
//! * [`requests`]: upload links, through which anyone may send a user files;
//! * [`audit`]: the hash-chained log; [`lease`]: who may write an upload;
//! * [`users`]: removing a user and what they own (an administrator's task).
//!
//! Below it: [`crate::store`] (metadata) and [`crate::objects`] (bytes).

pub mod at_rest;
pub mod audit;
pub mod downloads;
pub mod files;
pub mod lease;
pub mod links;
pub mod password;
pub mod requests;
pub mod session;
pub mod shares;
pub mod uploads;
pub mod users;

use std::net::IpAddr;
use std::sync::Arc;

use coffer_format::Identity;

use crate::config::Config;
use crate::keyring::{DekCache, Keyring};
use crate::objects::ObjectStore;
use crate::store::{MetaStore, StoreError, User};

/// Everything the operations work on. Cheap to clone (all shared).
#[derive(Clone)]
pub struct Service {
    /// Metadata store.
    pub store: Arc<dyn MetaStore>,
    /// The server's identity.
    pub identity: Arc<Identity>,
    /// Configuration.
    pub config: Arc<Config>,
    /// Object storage.
    pub objects: Arc<dyn ObjectStore>,
    /// The keyless checks of E2EE uploads running on this node.
    pub running: uploads::RunningObjects,
    /// Refusals already audited in the current window.
    pub refusals: Arc<audit::RefusalMemo>,
    /// KEKs for files the server encrypts.
    pub keyring: Arc<Keyring>,
    /// Recently unwrapped file keys.
    pub deks: Arc<DekCache>,
}

impl Service {
    /// A service over `store` and `objects`.
    pub fn new(
        store: Arc<dyn MetaStore>,
        objects: Arc<dyn ObjectStore>,
        identity: Identity,
        config: Config,
        keyring: Keyring,
    ) -> Self {
        Self {
            keyring: Arc::new(keyring),
            deks: Arc::new(DekCache::new(std::time::Duration::from_secs(
                config.dek_cache_secs,
            ))),
            store,
            identity: Arc::new(identity),
            config: Arc::new(config),
            objects,
            running: uploads::RunningObjects::default(),
            refusals: Arc::default(),
        }
    }
}

/// Who is asking: an authenticated user, from an address.
#[derive(Clone, Debug)]
pub struct Caller {
    /// The user.
    pub user: User,
    /// The client's address.
    pub ip: Option<IpAddr>,
    /// Set when an anonymous sender acts for `user` through this upload
    /// link (then only uploads begun through it are theirs to touch).
    pub via_request: Option<String>,
}

impl Caller {
    /// An audit event by this user.
    pub fn event(&self, action: &'static str, target: &str) -> audit::Event {
        match &self.via_request {
            // Anonymous: the log names the link, not a person.
            Some(request) => audit::Event::new("-", self.ip, action, target)
                .detail(format!("via upload link {request}")),
            None => audit::Event::new(&self.user.name, self.ip, action, target),
        }
    }
}

/// What kind of refusal or failure an [`Error`] is; the HTTP layer maps
/// each to its status.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// The request is malformed.
    BadRequest,
    /// Authentication failed (which part is never said).
    Unauthorized,
    /// No such thing, or not the caller's (not revealed which).
    NotFound,
    /// A conflicting state (offsets, ids, races).
    Conflict,
    /// It existed, but can no longer be used (expired, exhausted, locked).
    Gone,
    /// Another request holds it.
    Locked,
    /// Too large (a body, an upload, a quota).
    TooLarge,
    /// A rate or count limit.
    TooMany,
    /// Well-formed but not acceptable (an E2EE object that does not verify).
    Unprocessable,
    /// A tus checksum that does not match.
    ChecksumMismatch,
    /// A range outside the file.
    RangeNotSatisfiable,
    /// A protocol precondition (tus version).
    PreconditionFailed,
    /// The wrong content type.
    UnsupportedMediaType,
    /// The client stopped sending the request body.
    Timeout,
    /// The path exists, the method does not.
    MethodNotAllowed,
    /// The storage has no room left (a full disk or an exhausted quota):
    /// the operator must act; the client's retries would not help.
    StorageFull,
    /// The server failed (logged; details never sent).
    Internal,
}

/// The code of [`Error::storage`] for a full disk or quota.
const STORAGE_FULL: &str = "storage_full";

/// Whether an I/O error says the storage has no room left.
pub(crate) fn is_storage_full(err: &std::io::Error) -> bool {
    matches!(
        err.kind(),
        std::io::ErrorKind::StorageFull | std::io::ErrorKind::QuotaExceeded
    )
}

/// The code of [`Error::object_missing`].
const OBJECT_MISSING: &str = "object_missing";

/// A refusal or failure with a stable code and a human message. Messages
/// never carry secrets.
#[derive(Debug)]
pub struct Error {
    kind: Kind,
    code: &'static str,
    message: String,
    /// For a refusal by a limit: seconds after which to try again.
    retry_after_secs: Option<u64>,
}

impl Error {
    /// An error of `kind` with a stable `code`.
    pub fn new(kind: Kind, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            kind,
            code,
            message: message.into(),
            retry_after_secs: None,
        }
    }

    /// A refusal by a rate limit, to be tried again after `wait`.
    pub fn rate_limited(message: impl Into<String>, wait: std::time::Duration) -> Self {
        let secs = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
        Self {
            retry_after_secs: Some(secs.max(1)),
            ..Self::new(Kind::TooMany, "rate_limited", message)
        }
    }

    /// Seconds after which a refused request may be tried again.
    pub fn retry_after_secs(&self) -> Option<u64> {
        self.retry_after_secs
    }

    /// The one answer to every failed login or bad token.
    pub fn unauthorized() -> Self {
        Self::new(Kind::Unauthorized, "unauthorized", "authentication failed")
    }

    /// A malformed request.
    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(Kind::BadRequest, "bad_request", message)
    }

    /// No such `what` (or not the caller's).
    pub fn not_found(what: &str) -> Self {
        Self::new(Kind::NotFound, "not_found", format!("no such {what}"))
    }

    /// A server failure: logged, and answered without details.
    pub fn internal(err: impl std::fmt::Display) -> Self {
        tracing::error!("internal error: {err}");
        Self::new(Kind::Internal, "internal", "internal server error")
    }

    /// A failure of the object store: "storage full" when its disk or
    /// quota has no room left (which the operator must fix and the client
    /// can say plainly), any other as [`Error::internal`].
    pub fn storage(err: std::io::Error) -> Self {
        match is_storage_full(&err) {
            true => Self::storage_full(err),
            false => Self::internal(err),
        }
    }

    /// The storage has no room left: logged with its cause and counted,
    /// answered with 507 and no detail.
    pub fn storage_full(cause: impl std::fmt::Display) -> Self {
        metrics::counter!("coffer_storage_full_total").increment(1);
        tracing::error!("storage full: {cause:#}; uploads fail until space is freed");
        Self::new(
            Kind::StorageFull,
            STORAGE_FULL,
            "the server's storage is full; try again once its operator has freed space (what earlier requests stored is kept)",
        )
    }

    /// The stored bytes of file `id` are gone from the object store while
    /// its row remains: data lost on the server, which no retry heals.
    /// Logged with the id, for the operator to restore from a backup.
    pub fn object_missing(id: &str) -> Self {
        metrics::counter!("coffer_missing_objects_total").increment(1);
        tracing::error!(file = %id, "the object of this file is missing from the object store; restore it from a backup");
        Self::new(
            Kind::Internal,
            OBJECT_MISSING,
            "the server has lost this file's stored bytes; its operator must restore them from a backup",
        )
    }

    /// Whether this is [`Error::object_missing`].
    pub fn is_object_missing(&self) -> bool {
        self.code == OBJECT_MISSING
    }

    /// The kind.
    pub fn kind(&self) -> Kind {
        self.kind
    }

    /// The stable error code.
    pub fn code(&self) -> &'static str {
        self.code
    }

    /// The human message.
    pub fn message(&self) -> &str {
        &self.message
    }
}

impl std::fmt::Display for Error {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} ({})", self.message, self.code)
    }
}

impl From<StoreError> for Error {
    fn from(err: StoreError) -> Self {
        Error::internal(err)
    }
}

/// Result with [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// A fresh random id (32 lowercase hex digits).
pub fn new_id() -> Result<String> {
    let mut bytes = [0u8; 16];
    aws_lc_rs::rand::fill(&mut bytes).map_err(|_| Error::internal("rng"))?;
    Ok(crate::hex(&bytes))
}
