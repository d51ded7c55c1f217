//! Command-line grammar. Kept apart from the commands so `--help` reads as
//! the user's manual.

use std::path::PathBuf;

use clap::{Parser, Subcommand};

/// The exit codes, by class (also in the README).
const EXIT_CODES: &str = "\
Exit codes:
  0   ok (a reader closing the pipe changes no command's work or code)
  1   other error
  2   usage: bad argument or id, output exists without --force
  3   wrong key or passphrase
  4   integrity: tampered, malformed, not from the named sender, another file,
      or stored bytes the server lost or cannot verify
  5   truncated
  6   not a coffer file, or an unsupported version
  7   authentication: not logged in, session ended, a pinned key changed
  8   not found (deleted, revoked, expired)
  9   refused by a quota or a limit
  75  temporary: connection or server failure; run again later";

/// Secure file transfer and end-to-end encrypted file exchange.
#[derive(Debug, Parser)]
#[command(name = "coffer", version, about, propagate_version = true, after_help = EXIT_CODES)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Create an identity (Ed25519 signing key + X25519 decryption key).
    Keygen(KeygenArgs),
    /// Print the public identity and fingerprint of an identity file.
    Pubkey(PubkeyArgs),
    /// Encrypt a file (or stdin) to one or more recipients, signed by you.
    Encrypt(EncryptArgs),
    /// Decrypt and verify a coffer file (or stdin).
    Decrypt(DecryptArgs),
    /// Show a coffer file's header without any key.
    Inspect(InspectArgs),
    /// Run and administer a coffer server.
    #[command(subcommand)]
    Server(ServerCommand),
    /// Pin a server (certificate and identity), log in, save a profile.
    #[command(
        after_help = "Example:\n  coffer login https://files.example:8443 --user alice -i ~/.config/coffer/identity \\\n      --fingerprint SHA256:…   # as `coffer server init` printed it"
    )]
    Login(LoginArgs),
    /// Revoke this profile's token.
    Logout(CommonArgs),
    /// Encrypt files locally and upload them (resumes interrupted uploads).
    #[command(
        after_help = "Examples:\n  coffer put report.pdf --to bob\n  coffer put -r exports/ --skip-existing --expires 30d   # a nightly batch, safe to re-run\n  pg_dump db | gzip | coffer put - --name db.sql.gz --to bob"
    )]
    Put(PutArgs),
    /// Download, decrypt and verify files by id, or a share link URL.
    #[command(
        after_help = "Examples:\n  coffer get 3f2a…e1 -o incoming/\n  coffer get 3f2a…e1 -o - | gunzip   # verified as it streams; non-zero exit if tampered\n  echo \"$URL\" | coffer get - -o incoming/   # a link, kept off the command line"
    )]
    Get(GetArgs),
    /// List files (names are decrypted locally).
    Ls(LsArgs),
    /// Show one file.
    Stat(IdArgs),
    /// Delete files.
    Rm(RmArgs),
    /// Check the signed receipts kept for uploads against the server.
    #[command(subcommand)]
    Receipts(ReceiptsCommand),
    /// Upload a file and share it with users in one step.
    #[command(after_help = "Example:\n  coffer send nightly.csv --to partner --expires 7d")]
    Send(SendArgs),
    /// List, or fetch, files shared with you that have not arrived yet.
    #[command(
        after_help = "Example (cron):\n  coffer inbox --get-all -o /incoming -r || echo \"inbox failed: exit $?\""
    )]
    Inbox(InboxArgs),
    /// Give users access to a file (wraps the key for them locally).
    Share(ShareArgs),
    /// Take a user's access away.
    Revoke(RevokeArgs),
    /// Create an anonymous share link (the secret lives in the URL fragment).
    Link(LinkArgs),
    /// Create an upload link: anyone with it can send you files from a
    /// browser, encrypted there to your key. They arrive in your inbox.
    #[command(
        after_help = "Examples:\n  coffer request --expires 7d --max-files 10 --max-size 2GiB --note \"Scans for case 1234\"\n  coffer request ls\n  coffer request revoke https://coffer.example:8443/v1/requests/…"
    )]
    Request(RequestArgs),
    /// Print a shell completion script: `coffer completions bash >
    /// /etc/bash_completion.d/coffer`.
    Completions(CompletionsArgs),
    /// Write man pages (coffer.1 and one per subcommand) into a directory.
    Man(ManArgs),
}

#[derive(Debug, clap::Args)]
pub struct CompletionsArgs {
    /// The shell.
    pub shell: clap_complete::Shell,
}

#[derive(Debug, clap::Args)]
pub struct ManArgs {
    /// Directory to write the pages into (created if missing).
    #[arg(long, short, default_value = ".")]
    pub out: PathBuf,
}

/// Options every client command takes.
#[derive(Debug, clap::Args)]
pub struct CommonArgs {
    /// Profile (server and user) to use.
    #[arg(long, env = "COFFER_PROFILE", default_value = "default")]
    pub profile: String,
    /// Print results as JSON (one object per line).
    #[arg(long)]
    pub json: bool,
    /// No progress bars or notes.
    #[arg(long, short)]
    pub quiet: bool,
}

#[derive(Debug, clap::Args)]
pub struct LoginArgs {
    #[command(flatten)]
    pub common: CommonArgs,
    /// Server URL, https://HOST:PORT.
    pub url: String,
    /// User name on the server.
    #[arg(long)]
    pub user: String,
    /// Identity file (default: ~/.config/coffer/identity).
    #[arg(long, short)]
    pub identity: Option<PathBuf>,
    /// Expected certificate fingerprint (SHA256:…, printed by `coffer server
    /// init`); without it the fingerprint is shown for confirmation.
    #[arg(long)]
    pub fingerprint: Option<String>,
    /// Verify the server with these CA certificates (PEM) instead of a pin.
    #[arg(long, conflicts_with = "fingerprint")]
    pub ca: Option<PathBuf>,
    /// Client certificate (PEM) for servers that require mTLS.
    #[arg(long, requires = "client_key")]
    pub client_cert: Option<PathBuf>,
    /// Key for --client-cert.
    #[arg(long, requires = "client_cert")]
    pub client_key: Option<PathBuf>,
    /// Replace the profile even if it is another user's (its pins of the
    /// server and of users' keys go with it). The same user on another
    /// server URL needs no flag: the new server is pinned afresh.
    #[arg(long)]
    pub replace: bool,
}

#[derive(Debug, clap::Args)]
pub struct PutArgs {
    #[command(flatten)]
    pub common: CommonArgs,
    /// Files (with -r, directories) to upload, or `-` for standard input
    /// (with --name).
    #[arg(required = true)]
    pub files: Vec<PathBuf>,
    /// The name to store for `put -` (standard input has none). The input
    /// is staged, 0600, in the profile's uploads directory until the upload
    /// ends: the format declares the length before the first byte.
    #[arg(long, value_name = "NAME")]
    pub name: Option<String>,
    /// Upload directory trees, keeping relative paths in the encrypted metadata.
    #[arg(long, short)]
    pub recursive: bool,
    /// Also wrap the key for these users (their keys are pinned on first use).
    #[arg(long = "to")]
    pub to: Vec<String>,
    /// Accept a recipient key that differs from the one pinned before.
    #[arg(long)]
    pub accept_new_key: bool,
    /// Resume interrupted uploads (always done; accepted for scripts).
    #[arg(long)]
    pub resume: bool,
    /// When another coffer run is uploading the same file, wait for it to
    /// finish (then resume from where it stopped) instead of exiting.
    #[arg(long)]
    pub wait: bool,
    /// Do not upload a file you already uploaded with --skip-existing under
    /// the same name and relative path with the same bytes (BLAKE3, kept in
    /// the encrypted metadata): a batch that failed halfway can be re-run.
    /// Its id is printed as if it had been uploaded.
    #[arg(long)]
    pub skip_existing: bool,
    #[command(flatten)]
    pub retention: RetentionArgs,
}

/// How long the server keeps an uploaded file.
#[derive(Debug, clap::Args)]
pub struct RetentionArgs {
    /// Have the server delete the file after this long (30m, 12h, 30d);
    /// without it, the server's default (often: until deleted). More than
    /// the server's maximum is refused.
    #[arg(long)]
    pub expires: Option<String>,
    /// Have the server delete the file once every recipient has it (their
    /// `inbox --get-all` acknowledged it): a one-shot transfer.
    #[arg(long)]
    pub delete_when_received: bool,
}

#[derive(Debug, clap::Args)]
pub struct GetArgs {
    #[command(flatten)]
    pub common: CommonArgs,
    /// File ids, or one link URL (https://…/v1/links/ID#k=…), or `-` to
    /// read a link URL from standard input. With none, the link URL in
    /// $COFFER_LINK_URL. (A URL on the command line shows in `ps` and shell
    /// history; stdin and the environment keep its secret out of both.)
    pub ids: Vec<String>,
    /// Output file (one id) or directory.
    #[arg(long, short)]
    pub output: Option<PathBuf>,
    /// Recreate the stored relative paths under the output directory.
    #[arg(long, short)]
    pub recursive: bool,
    /// Overwrite existing files.
    #[arg(long)]
    pub force: bool,
    /// For links: the server's certificate fingerprint, if the URL has none.
    #[arg(long)]
    pub fingerprint: Option<String>,
    /// For links: verify the server with these CA certificates instead.
    #[arg(long)]
    pub ca: Option<PathBuf>,
}

#[derive(Debug, clap::Args)]
pub struct LsArgs {
    #[command(flatten)]
    pub common: CommonArgs,
    /// Files others shared with you instead of your own.
    #[arg(long)]
    pub shared_with_me: bool,
    /// Skip decrypting names and listing recipients (two requests per
    /// file): one request in all, for scripts and very long listings.
    #[arg(long)]
    pub no_names: bool,
}

#[derive(Debug, clap::Args)]
pub struct IdArgs {
    #[command(flatten)]
    pub common: CommonArgs,
    /// File id.
    pub id: String,
}

#[derive(Debug, clap::Args)]
pub struct RmArgs {
    #[command(flatten)]
    pub common: CommonArgs,
    /// File ids.
    #[arg(required = true)]
    pub ids: Vec<String>,
}

#[derive(Debug, Subcommand)]
pub enum ReceiptsCommand {
    /// Verify every kept receipt's signature and compare it with the server.
    Verify(CommonArgs),
}

#[derive(Debug, clap::Args)]
pub struct SendArgs {
    #[command(flatten)]
    pub common: CommonArgs,
    /// File to send.
    pub file: PathBuf,
    /// Recipients.
    #[arg(long = "to", required = true)]
    pub to: Vec<String>,
    /// Accept a recipient key that differs from the one pinned before.
    #[arg(long)]
    pub accept_new_key: bool,
    /// Wait for another run uploading the same file instead of exiting.
    #[arg(long)]
    pub wait: bool,
    #[command(flatten)]
    pub retention: RetentionArgs,
}

#[derive(Debug, clap::Args)]
pub struct InboxArgs {
    #[command(flatten)]
    pub common: CommonArgs,
    /// Download every new file, then acknowledge it on the server: a rerun,
    /// on this or any other machine of this user, fetches only what has not
    /// arrived. A name that exists keeps both: the new file becomes
    /// `name.2.ext` (then `.3`, …). A file that fails its checks is
    /// reported and left in the inbox; the rest still arrive, and the exit
    /// code is that file's.
    #[arg(long)]
    pub get_all: bool,
    /// Directory for --get-all.
    #[arg(long, short, default_value = ".")]
    pub output: PathBuf,
    /// Replace an existing file of the same name instead of keeping both.
    #[arg(long)]
    pub force: bool,
    /// Keep each file's stored relative path (as `put -r` stored it) under
    /// the directory, instead of its bare name.
    #[arg(long, short)]
    pub recursive: bool,
}

#[derive(Debug, clap::Args)]
pub struct ShareArgs {
    #[command(flatten)]
    pub common: CommonArgs,
    /// File id.
    pub id: String,
    /// Users to share with.
    #[arg(long = "with", required = true)]
    pub with: Vec<String>,
    /// Accept a key that differs from the one pinned before.
    #[arg(long)]
    pub accept_new_key: bool,
}

#[derive(Debug, clap::Args)]
pub struct RevokeArgs {
    #[command(flatten)]
    pub common: CommonArgs,
    /// File id.
    pub id: String,
    /// Users to revoke.
    #[arg(long = "from", required = true)]
    pub from: Vec<String>,
}

#[derive(Debug, clap::Args)]
#[command(args_conflicts_with_subcommands = true, subcommand_negates_reqs = true)]
pub struct LinkArgs {
    #[command(subcommand)]
    pub action: Option<LinkAction>,
    #[command(flatten)]
    pub common: CommonArgs,
    /// File id to create a link for.
    #[arg(required = true)]
    pub id: Option<String>,
    /// Lifetime, e.g. 30m, 24h, 7d.
    #[arg(long, default_value = "24h")]
    pub expires: String,
    /// How many downloads the link allows.
    #[arg(long)]
    pub max_downloads: Option<u64>,
    /// Require a password (read from $COFFER_LINK_PASSWORD or the terminal;
    /// a password set in $COFFER_LINK_PASSWORD implies this flag).
    #[arg(long)]
    pub password: bool,
}

#[derive(Debug, clap::Args)]
#[command(args_conflicts_with_subcommands = true)]
pub struct RequestArgs {
    #[command(subcommand)]
    pub action: Option<RequestAction>,
    #[command(flatten)]
    pub common: CommonArgs,
    /// How long it takes files, e.g. 24h, 7d, 30d.
    #[arg(long, default_value = "7d")]
    pub expires: String,
    /// How many files it takes.
    #[arg(long)]
    pub max_files: Option<u64>,
    /// Largest file it takes (e.g. 500MiB, 2GiB).
    #[arg(long, value_parser = parse_bytes)]
    pub max_size: Option<u64>,
    /// A note the page shows senders (it travels in the URL fragment; the
    /// server never sees it).
    #[arg(long)]
    pub note: Option<String>,
    /// Ask senders for their name (their own claim, sent encrypted with
    /// each file; nothing authenticates it).
    #[arg(long)]
    pub ask_name: bool,
    /// Senders must type a password (read from $COFFER_LINK_PASSWORD or the
    /// terminal; a password set in $COFFER_LINK_PASSWORD implies this flag).
    /// The link locks after too many wrong ones.
    #[arg(long)]
    pub password: bool,
}

#[derive(Debug, Subcommand)]
pub enum RequestAction {
    /// List your upload links.
    Ls(CommonOnly),
    /// Revoke upload links (their URLs or ids): no new file can come.
    Revoke(RequestRevokeArgs),
}

#[derive(Debug, clap::Args)]
pub struct CommonOnly {
    #[command(flatten)]
    pub common: CommonArgs,
}

#[derive(Debug, clap::Args)]
pub struct RequestRevokeArgs {
    #[command(flatten)]
    pub common: CommonArgs,
    /// Upload link URLs or ids.
    #[arg(required = true)]
    pub requests: Vec<String>,
}

#[derive(Debug, Subcommand)]
pub enum LinkAction {
    /// List the links of one file, or of all your files.
    Ls(LinkLsArgs),
    /// Revoke a link (its URL or id): it stops working at once.
    Revoke(LinkRevokeArgs),
}

#[derive(Debug, clap::Args)]
pub struct LinkLsArgs {
    #[command(flatten)]
    pub common: CommonArgs,
    /// File id (default: every file you own).
    pub id: Option<String>,
}

#[derive(Debug, clap::Args)]
pub struct LinkRevokeArgs {
    #[command(flatten)]
    pub common: CommonArgs,
    /// Link URLs or link ids.
    #[arg(required = true)]
    pub links: Vec<String>,
}

#[derive(Debug, Subcommand)]
pub enum ServerCommand {
    /// Create a data directory: server identity, TLS certificate, database.
    Init(Box<ServerInitArgs>),
    /// Serve HTTPS until SIGTERM or Ctrl-C.
    Run(ServerRunArgs),
    /// Manage users.
    #[command(subcommand)]
    User(UserCommand),
    /// Check or export the tamper-evident audit log.
    #[command(subcommand)]
    Audit(AuditCommand),
    /// Add a key-encryption key version and re-wrap every file key under it
    /// (data is not re-encrypted). Resumes an interrupted rotation.
    RotateKek(RotateArgs),
    /// Replace the master key and re-seal the keyring under it (file keys
    /// and KEKs stay). After a leaked master key, follow it with
    /// `rotate-kek` and `keys prune`. Run again to finish an interrupted run.
    RotateMasterKey(RotateMasterKeyArgs),
    /// Inspect or prune the KEK versions.
    #[command(subcommand)]
    Keys(KeysCommand),
    /// Copy every object and its metadata to other storage (PostgreSQL,
    /// S3), verifying each object, then point config.toml at it. Stop the
    /// server first; run again to resume an interrupted copy.
    MigrateStore(MigrateStoreArgs),
    /// Write one encrypted file holding the whole server: a consistent
    /// snapshot of the metadata, the configuration, identity, TLS files,
    /// master key and (unless --without-objects) every stored object,
    /// encrypted to backup identities kept offline and signed by the server.
    /// Safe while the server runs.
    #[command(
        after_help = "Example:\n  coffer keygen -o backup.identity            # once; keep it offline\n  coffer server backup --data /var/lib/coffer --to /mnt/nas/coffer-$(date +%F).coffer -r coffer1…"
    )]
    Backup(BackupArgs),
    /// Bring a backup back into a new, empty data directory (and, when its
    /// config.toml names them, an empty PostgreSQL database and a bucket).
    /// Nothing is written where the server lives until the whole backup
    /// has been decrypted and its signature checked.
    #[command(
        after_help = "Example:\n  coffer server restore --from coffer-2026-12-03.coffer -i backup.identity --data /var/lib/coffer"
    )]
    Restore(RestoreArgs),
}

#[derive(Debug, clap::Args)]
pub struct BackupArgs {
    #[command(flatten)]
    pub data: DataArg,
    /// The backup file to write (must not exist).
    #[arg(long)]
    pub to: PathBuf,
    /// A backup identity's public key (coffer1…); repeat for several.
    #[arg(short = 'r', long = "recipient")]
    pub recipients: Vec<String>,
    /// A file of recipients, one per line.
    #[arg(short = 'R', long = "recipients-file")]
    pub recipients_files: Vec<PathBuf>,
    /// Leave the stored objects out (an S3 bucket with its own versioning
    /// and replication, say): metadata and keys only.
    #[arg(long)]
    pub without_objects: bool,
    /// Print the summary as JSON.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, clap::Args)]
pub struct RestoreArgs {
    /// The new data directory (must not exist, or be empty).
    #[command(flatten)]
    pub data: DataArg,
    /// The backup file.
    #[arg(long)]
    pub from: PathBuf,
    #[command(flatten)]
    pub identity: IdentityArg,
    /// Refuse a backup not signed by this server identity (coffer1…).
    #[arg(long)]
    pub server_identity: Option<String>,
}

#[derive(Debug, clap::Args)]
pub struct DataArg {
    /// Server data directory.
    #[arg(long = "data", env = "COFFER_DATA")]
    pub dir: PathBuf,
}

#[derive(Debug, clap::Args)]
pub struct ServerInitArgs {
    #[command(flatten)]
    pub data: DataArg,
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:8443")]
    pub listen: std::net::SocketAddr,
    /// The URL people reach the server at, when it is not the listen
    /// address (a proxy, a port mapping, a DNS name): `public_url` in
    /// config.toml, printed here, and the base of the links clients make.
    #[arg(long)]
    pub public_url: Option<String>,
    /// Use this certificate chain (PEM) instead of a self-signed one.
    #[arg(long, requires = "key")]
    pub cert: Option<PathBuf>,
    /// Private key (PEM) for --cert.
    #[arg(long, requires = "cert")]
    pub key: Option<PathBuf>,
    /// Host names and addresses for the self-signed certificate.
    #[arg(long = "name", default_values = ["localhost", "127.0.0.1"])]
    pub names: Vec<String>,
    /// Require client certificates signed by a CA in this PEM file (mTLS);
    /// the file is copied into the data directory.
    #[arg(long)]
    pub client_ca: Option<PathBuf>,
    /// Refuse client certificates revoked by the CRLs (PEM) in this file,
    /// and any whose issuer's CRL is missing or out of date. The path is
    /// kept (the CA updates the file); it is read again on SIGHUP.
    #[arg(long, requires = "client_ca")]
    pub client_crl: Option<PathBuf>,
    /// Serve Prometheus metrics (over HTTPS, same certificate) here.
    #[arg(long)]
    pub metrics_listen: Option<std::net::SocketAddr>,
    /// Where to write the master key that seals the keyring: outside the
    /// data directory, so a copy of it does not open server-encrypted
    /// files (default: DATA.master.key, next to it; better on another
    /// device). Not written when COFFER_MASTER_KEY is set.
    #[arg(long)]
    pub master_key_file: Option<PathBuf>,
    #[command(flatten)]
    pub storage: StorageArgs,
}

/// Where a server keeps metadata and bytes (default: SQLite and the data
/// directory). Each may also come from the environment (`COFFER_DATABASE`,
/// `COFFER_OBJECTS`, `COFFER_S3_*`), which is how to keep a database
/// password out of `config.toml`.
#[derive(Debug, Default, clap::Args)]
pub struct StorageArgs {
    /// Metadata database: a SQLite file in the data directory, or a
    /// `postgres://user@host/db` URL (written to config.toml).
    #[arg(long)]
    pub database: Option<String>,
    /// Keep file bytes in this S3 bucket instead of the data directory.
    #[arg(long)]
    pub s3_bucket: Option<String>,
    /// S3 endpoint, e.g. https://s3.example.net (AWS when left out).
    // The URL is for `--help`, where angle brackets would be printed.
    #[allow(rustdoc::bare_urls)]
    #[arg(long, requires = "s3_bucket")]
    pub s3_endpoint: Option<String>,
    /// S3 region.
    #[arg(long, requires = "s3_bucket")]
    pub s3_region: Option<String>,
    /// Key prefix inside the bucket.
    #[arg(long, requires = "s3_bucket")]
    pub s3_prefix: Option<String>,
    /// Allow a plain-HTTP S3 endpoint (a store on the same host only).
    #[arg(long, requires = "s3_bucket")]
    pub s3_allow_http: bool,
}

#[derive(Debug, clap::Args)]
pub struct MigrateStoreArgs {
    #[command(flatten)]
    pub data: DataArg,
    /// The destination (at least one of --database and --s3-bucket; what
    /// is not given stays where it is).
    #[command(flatten)]
    pub to: StorageArgs,
    /// Copy and verify, but leave config.toml pointing at the old storage.
    #[arg(long)]
    pub keep_config: bool,
}

#[derive(Debug, clap::Args)]
pub struct ServerRunArgs {
    #[command(flatten)]
    pub data: DataArg,
    /// Override the configured listen address.
    #[arg(long)]
    pub listen: Option<std::net::SocketAddr>,
    /// Override the configured client CA (PEM) and require client
    /// certificates (mTLS).
    #[arg(long)]
    pub client_ca: Option<PathBuf>,
    /// Override the configured client CRL file (PEM; read again on SIGHUP).
    #[arg(long)]
    pub client_crl: Option<PathBuf>,
    /// Override the configured Prometheus metrics address.
    #[arg(long)]
    pub metrics_listen: Option<std::net::SocketAddr>,
}

#[derive(Debug, clap::Args)]
pub struct RotateArgs {
    #[command(flatten)]
    pub data: DataArg,
    /// Keys re-wrapped per transaction.
    #[arg(long, default_value_t = 500)]
    pub batch: u32,
}

#[derive(Debug, clap::Args)]
pub struct RotateMasterKeyArgs {
    #[command(flatten)]
    pub data: DataArg,
    /// Where to write the new key when the current one comes from
    /// COFFER_MASTER_KEY (a key file is replaced in place).
    #[arg(long)]
    pub new_key_file: Option<std::path::PathBuf>,
}

#[derive(Debug, Subcommand)]
pub enum KeysCommand {
    /// Each KEK version and how many keys it wraps.
    Status(KeysStatusArgs),
    /// Remove KEK versions nothing references any more (and their keys in
    /// a token).
    Prune(DataOnly),
    /// Move every key-encryption key into a PKCS#11 token (an HSM): writes
    /// `[keyring]` to config.toml, makes a KEK version inside the token,
    /// re-wraps every file and upload key under it, and removes the
    /// versions sealed by the master key. Stop the server first; run again
    /// to finish an interrupted run.
    #[command(
        after_help = "Example:\n  coffer server keys migrate --data /var/lib/coffer \\\n    --module /usr/lib/softhsm/libsofthsm2.so --token coffer --pin-file /etc/coffer/hsm.pin"
    )]
    Migrate(KeysMigrateArgs),
}

#[derive(Debug, clap::Args)]
pub struct KeysMigrateArgs {
    #[command(flatten)]
    pub data: DataArg,
    /// The PKCS#11 module (the vendor's library).
    #[arg(long)]
    pub module: std::path::PathBuf,
    /// Label of the token to keep the keys in.
    #[arg(long)]
    pub token: String,
    /// Prefix of the key labels in the token (version N is PREFIX-vN-…).
    #[arg(long, default_value = "coffer-kek")]
    pub key_label: String,
    /// File holding the token's user PIN (absolute, or relative to the
    /// data directory); else COFFER_PKCS11_PIN or the systemd credential
    /// coffer-pkcs11-pin when the server starts.
    #[arg(long)]
    pub pin_file: Option<std::path::PathBuf>,
    /// Re-wrap this many keys per transaction.
    #[arg(long, default_value_t = 500)]
    pub batch: u32,
}

#[derive(Debug, clap::Args)]
pub struct KeysStatusArgs {
    #[command(flatten)]
    pub data: DataArg,
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, clap::Args)]
pub struct DataOnly {
    #[command(flatten)]
    pub data: DataArg,
}

#[derive(Debug, Subcommand)]
pub enum AuditCommand {
    /// Recompute the hash chain and check the signed heads; exits non-zero
    /// and names the entry if anything was edited, deleted or reordered.
    Verify(AuditVerifyArgs),
    /// Print every entry as JSON Lines (one object per line).
    Export(AuditExportArgs),
}

#[derive(Debug, clap::Args)]
pub struct AuditVerifyArgs {
    #[command(flatten)]
    pub data: DataArg,
    /// Print the report as JSON.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, clap::Args)]
pub struct AuditExportArgs {
    #[command(flatten)]
    pub data: DataArg,
    /// JSON Lines output (the only format; accepted for clarity in scripts).
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Subcommand)]
pub enum UserCommand {
    /// Register a user by public identity.
    Add(UserAddArgs),
    /// List users.
    List(UserListArgs),
    /// Disable a user: its tokens stop working at once.
    Disable(UserNameArgs),
    /// Re-enable a disabled user.
    Enable(UserNameArgs),
    /// Set or lift a user's storage quota (files stored stay, also above a
    /// lower quota; new uploads are refused past it).
    SetQuota(UserQuotaArgs),
    /// Replace a user's key (a lost or compromised identity): their
    /// sessions end, and the files wrapped to the old key are listed, to be
    /// shared again by their owners (`coffer share ID --with NAME
    /// --accept-new-key`).
    SetKey(UserKeyArgs),
    /// Remove a user and everything they own: their files (with every share
    /// and link of them, so recipients lose them), unfinished uploads,
    /// upload links and sessions; their wraps on others' files. The audit
    /// log keeps their history. Without --yes, only says what would go.
    #[command(
        after_help = "Example:\n  coffer server user remove bob --data /var/lib/coffer          # what would go\n  coffer server user remove bob --yes --data /var/lib/coffer    # remove"
    )]
    Remove(UserRemoveArgs),
}

#[derive(Debug, clap::Args)]
pub struct UserRemoveArgs {
    /// User name.
    pub name: String,
    /// Remove; without it, print what would be removed and exit 1.
    #[arg(long)]
    pub yes: bool,
    /// Print the summary as JSON.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub data: DataArg,
}

#[derive(Debug, clap::Args)]
pub struct UserKeyArgs {
    /// User name.
    pub name: String,
    /// The user's new public identity (coffer1…).
    #[arg(long)]
    pub key: String,
    /// Print the files to re-share as JSON lines.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub data: DataArg,
}

#[derive(Debug, clap::Args)]
pub struct UserQuotaArgs {
    /// User name.
    pub name: String,
    /// The quota, e.g. 10GiB, or `none` for no limit.
    pub quota: String,
    #[command(flatten)]
    pub data: DataArg,
}

#[derive(Debug, clap::Args)]
pub struct UserAddArgs {
    /// User name (lowercase letters, digits, '.', '_', '-').
    pub name: String,
    /// The user's public identity (coffer1…).
    #[arg(long)]
    pub key: String,
    /// Grant administration rights.
    #[arg(long)]
    pub admin: bool,
    /// Storage quota, e.g. 10GiB.
    #[arg(long, value_parser = parse_bytes)]
    pub quota: Option<u64>,
    #[command(flatten)]
    pub data: DataArg,
}

#[derive(Debug, clap::Args)]
pub struct UserListArgs {
    #[command(flatten)]
    pub data: DataArg,
    /// Print machine-readable JSON.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, clap::Args)]
pub struct UserNameArgs {
    /// User name.
    pub name: String,
    #[command(flatten)]
    pub data: DataArg,
}

#[derive(Debug, clap::Args)]
pub struct IdentityArg {
    /// Identity file [default: $COFFER_IDENTITY, else ~/.config/coffer/identity].
    #[arg(short = 'i', long = "identity", env = "COFFER_IDENTITY")]
    pub path: Option<PathBuf>,
}

#[derive(Debug, clap::Args)]
pub struct KeygenArgs {
    /// Where to write the identity [default: ~/.config/coffer/identity].
    #[arg(short, long)]
    pub output: Option<PathBuf>,
    /// Protect the identity with a passphrase (prompted without echo, or
    /// taken from $COFFER_PASSPHRASE for automation).
    #[arg(long)]
    pub passphrase: bool,
    /// Replace an existing identity file.
    #[arg(long)]
    pub force: bool,
    /// Print machine-readable JSON.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, clap::Args)]
pub struct PubkeyArgs {
    #[command(flatten)]
    pub identity: IdentityArg,
    /// Print machine-readable JSON.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, clap::Args)]
pub struct EncryptArgs {
    /// Recipient public identity (coffer1…). Repeatable.
    #[arg(short = 'r', long = "recipient")]
    pub recipients: Vec<String>,
    /// File of recipient identities, one per line ('#' starts a comment).
    #[arg(short = 'R', long = "recipients-file")]
    pub recipients_files: Vec<PathBuf>,
    /// Also encrypt to the signer's own identity.
    #[arg(long)]
    pub to_self: bool,
    /// Signing identity.
    #[command(flatten)]
    pub identity: IdentityArg,
    /// Output file [default: stdout]. Written to a temporary file and
    /// renamed into place when complete.
    #[arg(short, long)]
    pub output: Option<PathBuf>,
    /// Plaintext bytes per chunk (256 B to 16 MiB; suffixes K and M).
    #[arg(long, default_value = "64K", value_parser = parse_size)]
    pub chunk_size: u32,
    /// Overwrite the output file if it exists.
    #[arg(long)]
    pub force: bool,
    /// Input file [default: stdin].
    pub input: Option<PathBuf>,
}

#[derive(Debug, clap::Args)]
pub struct DecryptArgs {
    #[command(flatten)]
    pub identity: IdentityArg,
    /// Output file [default: stdout]. Written to a temporary file beside it
    /// and renamed only after every chunk, the signature and the digest
    /// verified.
    #[arg(short, long)]
    pub output: Option<PathBuf>,
    /// Overwrite the output file if it exists.
    #[arg(long)]
    pub force: bool,
    /// Require this sender (public identity or fingerprint).
    #[arg(long)]
    pub expect_sender: Option<String>,
    /// Print what was verified as JSON on stderr.
    #[arg(long)]
    pub json: bool,
    /// Input file [default: stdin].
    pub input: Option<PathBuf>,
}

#[derive(Debug, clap::Args)]
pub struct InspectArgs {
    /// Coffer file.
    pub input: PathBuf,
    /// Print machine-readable JSON.
    #[arg(long)]
    pub json: bool,
}

fn parse_size(text: &str) -> Result<u32, String> {
    let text = text.trim();
    let (digits, multiplier) = match text.char_indices().last() {
        Some((i, 'K' | 'k')) => (&text[..i], 1024),
        Some((i, 'M' | 'm')) => (&text[..i], 1024 * 1024),
        _ => (text, 1),
    };
    digits
        .parse::<u32>()
        .ok()
        .and_then(|n| n.checked_mul(multiplier))
        .ok_or_else(|| format!("not a size: {text}"))
}

/// Byte counts with binary or decimal suffixes: 500MiB, 10GiB, 1TB, 4096.
pub fn parse_bytes(text: &str) -> Result<u64, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (digits, unit) = text.split_at(split);
    let multiplier: u64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kib" => 1 << 10,
        "m" | "mib" => 1 << 20,
        "g" | "gib" => 1 << 30,
        "t" | "tib" => 1 << 40,
        "kb" => 1_000,
        "mb" => 1_000_000,
        "gb" => 1_000_000_000,
        "tb" => 1_000_000_000_000,
        _ => return Err(format!("unknown unit in {text:?}")),
    };
    digits
        .parse::<u64>()
        .ok()
        .and_then(|n| n.checked_mul(multiplier))
        .ok_or_else(|| format!("not a byte count: {text:?}"))
}

#[cfg(test)]
mod tests {
    use super::{parse_bytes, parse_size};

    #[test]
    fn byte_counts_parse_with_units() {
        assert_eq!(parse_bytes("10GiB"), Ok(10 << 30));
        assert_eq!(parse_bytes("1TB"), Ok(1_000_000_000_000));
        assert_eq!(parse_bytes("4096"), Ok(4096));
        assert!(parse_bytes("10 parsecs").is_err());
        assert!(parse_bytes("99999999999TiB").is_err());
    }

    #[test]
    fn sizes_parse_with_suffixes() {
        assert_eq!(parse_size("64K"), Ok(65536));
        assert_eq!(parse_size("1M"), Ok(1 << 20));
        assert_eq!(parse_size("300"), Ok(300));
        assert!(parse_size("9999999M").is_err());
        assert!(parse_size("x").is_err());
    }
}
