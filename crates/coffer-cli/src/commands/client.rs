//! The client commands: thin over `coffer-client`. Profiles, prompts,
//! progress bars and output formats live here; transfers and cryptography
//! in the library.

use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, UNIX_EPOCH};

use anyhow::{Context, Result, bail};
use coffer_client::api::{FileEntry, Listing, Removed};
use coffer_client::download::{self, GetOptions, OnExists, Target};
use coffer_client::links::{self, LinkOptions, LinkUrl};
use coffer_client::profile::{Home, Profile};
use coffer_client::progress::{Phase, Progress, Silent};
use coffer_client::requests::{self, RequestOptions};
use coffer_client::untrusted::printable;
use coffer_client::upload::{self, PutOptions};
use coffer_client::{Class, Endpoint, Session, Trust};
use coffer_format::PublicIdentity;
use coffer_proto::receipt::SignedReceipt;
use serde_json::json;
use zeroize::Zeroizing;

use crate::cli::*;
use crate::identity_file;

/// Environment variable for link passwords in scripts.
const LINK_PASSWORD_ENV: &str = "COFFER_LINK_PASSWORD";

fn runtime() -> Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("cannot start the async runtime")
}

/// Runs one client command.
pub fn run(command: &Command) -> Result<()> {
    let rt = runtime()?;
    rt.block_on(async {
        match command {
            Command::Login(args) => login(args).await,
            Command::Logout(common) => logout(common).await,
            Command::Put(args) => put(args).await,
            Command::Send(args) => send(args).await,
            Command::Get(args) => get(args).await,
            Command::Ls(args) => ls(args).await,
            Command::Stat(args) => stat(args).await,
            Command::Rm(args) => rm(args).await,
            Command::Receipts(ReceiptsCommand::Verify(common)) => verify_receipts(common).await,
            Command::Inbox(args) => inbox(args).await,
            Command::Share(args) => share(args).await,
            Command::Revoke(args) => revoke(args).await,
            Command::Link(args) => link(args).await,
            Command::Request(args) => request(args).await,
            _ => bail!("not a client command"),
        }
    })
}

/// A loaded profile with a session on it.
struct Ctx {
    home: Home,
    name: String,
    profile: Profile,
    session: Session,
    json: bool,
    quiet: bool,
}

impl Ctx {
    fn open(common: &CommonArgs) -> Result<Self> {
        let home = Home::from_env()?;
        let profile = home.load(&common.profile)?;
        let identity = Arc::new(identity_file::load(Some(&profile.identity))?);
        let mut session = profile.session(Some(identity))?;
        if !common.quiet {
            session = session.with_notices(Arc::new(|text: &str| eprintln!("coffer: {text}")));
        }
        Ok(Self {
            home,
            name: common.profile.clone(),
            profile,
            session,
            json: common.json,
            quiet: common.quiet,
        })
    }

    /// Saves the (possibly refreshed) token and pinned user keys.
    fn save(&mut self) -> Result<()> {
        self.profile.remember_token(&self.session);
        self.home.save(&self.name, &self.profile)?;
        Ok(())
    }

    /// Saves at once after a download pinned a sender's key on first
    /// contact. A run cut off later (cron's timeout, a lost machine) would
    /// otherwise forget the pin, and the next run would take whatever key
    /// the server then presents as a first contact again.
    fn keep_new_pin(&mut self, newly_pinned: bool) -> Result<()> {
        if newly_pinned {
            self.save()?;
        }
        Ok(())
    }

    fn note(&self, text: &str) {
        if !self.quiet {
            eprintln!("{text}");
        }
    }

    fn progress(&self, label: &str) -> Box<dyn Progress> {
        bar(label, self.quiet, self.json)
    }

    /// A user's key, checked against the one pinned before (TOFU).
    async fn user_key(&mut self, user: &str, accept_new: bool) -> Result<PublicIdentity> {
        let key = self
            .session
            .user_identity(user)
            .await
            .with_context(|| format!("cannot get the key of user {}", printable(user)))?;
        if self.profile.check_user_key(user, &key, accept_new)? {
            self.note(&format!(
                "pinned the key of {user}: {} (check it with them)",
                key.fingerprint()
            ));
        }
        Ok(key)
    }
}

struct Bar(indicatif::ProgressBar);

impl Progress for Bar {
    fn set_total(&self, total: u64) {
        self.0.set_length(total);
    }
    fn set_position(&self, position: u64) {
        self.0.set_position(position);
    }
    fn retrying(&self, reason: &str, wait: std::time::Duration) {
        self.0.println(retry_note(reason, wait));
    }
    fn named(&self, name: &str) {
        self.0.set_message(printable(name).to_string());
    }
    fn phase(&self, phase: Phase) {
        self.0.set_prefix(phase.label());
        self.0.reset_eta();
    }
}

/// No bar (stderr is not a terminal: cron, a pipe), but a retry is still
/// worth a line in the job's log.
struct RetryNotes;

impl Progress for RetryNotes {
    fn set_total(&self, _: u64) {}
    fn set_position(&self, _: u64) {}
    fn retrying(&self, reason: &str, wait: std::time::Duration) {
        eprintln!("{}", retry_note(reason, wait));
    }
}

fn retry_note(reason: &str, wait: std::time::Duration) -> String {
    format!(
        "coffer: {reason}; reconnecting and resuming in {:.1} s",
        wait.as_secs_f64()
    )
}

impl Drop for Bar {
    fn drop(&mut self) {
        self.0.finish_and_clear();
    }
}

/// A progress bar on stderr when it is a terminal, else nothing.
fn bar(label: &str, quiet: bool, json: bool) -> Box<dyn Progress> {
    if quiet {
        return Box::new(Silent);
    }
    if json || !std::io::stderr().is_terminal() {
        return Box::new(RetryNotes);
    }
    let bar = indicatif::ProgressBar::new(0);
    if let Ok(style) = indicatif::ProgressStyle::with_template(
        "{msg:20!} {prefix:9} {bar:30} {bytes}/{total_bytes} {bytes_per_sec} ETA {eta}",
    ) {
        bar.set_style(style);
    }
    bar.set_message(label.to_string());
    Box::new(Bar(bar))
}

fn confirm(question: &str) -> Result<bool> {
    if !std::io::stdin().is_terminal() {
        return Ok(false);
    }
    eprint!("{question} [y/N] ");
    std::io::stderr().flush()?;
    let mut answer = String::new();
    std::io::stdin().read_line(&mut answer)?;
    Ok(matches!(answer.trim(), "y" | "Y" | "yes"))
}

/// Whether a saved profile is for the server `args` names.
fn same_server(profile: &Profile, args: &LoginArgs) -> bool {
    profile.url.trim_end_matches('/') == args.url.trim_end_matches('/')
}

async fn login(args: &LoginArgs) -> Result<()> {
    let home = Home::from_env()?;
    let identity = Arc::new(identity_file::load(args.identity.as_deref())?);
    let previous = home.load(&args.common.profile).ok();
    if let Some(other) = previous.as_ref().filter(|p| p.user != args.user)
        && !args.replace
    {
        // A nightly job's profile must not turn into someone else's
        // because a person logged in on the same account.
        return Err(coffer_client::Error::Usage(format!(
            "profile {:?} is {}'s on {}; log in with --profile NAME to keep both, or --replace to replace it",
            args.common.profile,
            printable(&other.user),
            printable(&other.url)
        ))
        .into());
    }
    let previous = previous.filter(|p| same_server(p, args));
    let client_cert = match (&args.client_cert, &args.client_key) {
        (Some(cert), Some(key)) => Some(coffer_client::ClientCert {
            cert: cert.clone(),
            key: key.clone(),
        }),
        _ => None,
    };
    // An explicit pin or CA wins; otherwise keep the trust from before (so a
    // changed pinned certificate is refused); on first contact, the
    // system's CAs if they vouch for the certificate, else ask.
    let trust = match (&args.fingerprint, &args.ca, &previous) {
        (Some(fp), _, _) => Trust::Pinned(fp.trim().to_string()),
        (None, Some(ca), _) => Trust::Ca(ca.clone()),
        (None, None, Some(previous)) => previous.endpoint()?.trust,
        (None, None, None) => match system_trusted(&args.url, &args.user, &client_cert).await {
            Some(trust) => trust,
            None => first_contact(&args.url, &args.user, client_cert.clone()).await?,
        },
    };
    let pinned_identity = match (&previous, &args.fingerprint) {
        (Some(p), None) => Some(PublicIdentity::parse(&p.server_identity)?),
        _ => None,
    };
    let endpoint = Endpoint::parse(&args.url, trust.clone(), client_cert)?;
    let mut session = Session::new(endpoint, &args.user, pinned_identity)?.with_identity(identity);
    match session.login().await {
        Err(coffer_client::Error::CertificateChanged { pinned, presented })
            if args.fingerprint.is_some() =>
        {
            bail!(
                "the server's certificate is not the one given with --fingerprint: expected {pinned}, got {presented}"
            );
        }
        other => other?,
    }
    let server_identity = session
        .server_identity()
        .context("the server did not identify itself")?
        .clone();
    let (cert_fingerprint, ca_file) = match &trust {
        Trust::Pinned(fp) => (Some(fp.clone()), None),
        Trust::Ca(ca) => (None, Some(std::fs::canonicalize(ca)?)),
        Trust::System => (None, None),
        Trust::FirstUse => bail!("internal: login without a pin"),
    };
    let identity_path = match &args.identity {
        Some(path) => std::fs::canonicalize(path)?,
        None => identity_file::default_path()?,
    };
    let mut profile = Profile {
        url: session.endpoint().url.clone(),
        user: args.user.clone(),
        identity: identity_path,
        cert_fingerprint,
        ca_file,
        client_cert: args
            .client_cert
            .as_ref()
            .map(std::fs::canonicalize)
            .transpose()?,
        client_key: args
            .client_key
            .as_ref()
            .map(std::fs::canonicalize)
            .transpose()?,
        server_identity: server_identity.to_string(),
        token: None,
        token_expires_at: None,
        known_users: previous.map(|p| p.known_users).unwrap_or_default(),
        public_url: session.advertised_public_url().map(str::to_string),
    };
    profile.remember_token(&session);
    home.save(&args.common.profile, &profile)?;
    if args.common.json {
        crate::say!(
            "{}",
            json!({"profile": args.common.profile, "url": profile.url, "user": profile.user,
                   "certificate": profile.cert_fingerprint, "trust": trust_name(&trust),
                   "server_identity": profile.server_identity,
                   "key_exchange": session.key_exchange()})
        );
    } else if !args.common.quiet {
        eprintln!(
            "logged in to {} as {} (profile {}; server identity {}; key exchange {})",
            profile.url,
            profile.user,
            args.common.profile,
            server_identity.fingerprint(),
            session.key_exchange().as_deref().unwrap_or("unknown")
        );
    }
    Ok(())
}

/// How the profile checks the server's certificate, as `login --json` says.
fn trust_name(trust: &Trust) -> &'static str {
    match trust {
        Trust::Pinned(_) | Trust::FirstUse => "pinned",
        Trust::Ca(_) => "ca-file",
        Trust::System => "system",
    }
}

/// `Trust::System` if the system's CA roots accept the server's certificate
/// (then renewals need nothing from this client); `None` to fall back to
/// pinning it.
async fn system_trusted(
    url: &str,
    user: &str,
    client_cert: &Option<coffer_client::ClientCert>,
) -> Option<Trust> {
    let endpoint = Endpoint::parse(url, Trust::System, client_cert.clone()).ok()?;
    let probe = Session::new(endpoint, user, None)
        .ok()?
        .probe()
        .await
        .ok()?;
    eprintln!(
        "The system's certificate authorities vouch for {url} (certificate {}); server identity {}.",
        probe.fingerprint.as_deref().unwrap_or("?"),
        probe.server_identity.fingerprint()
    );
    Some(Trust::System)
}

/// Shows a new server's certificate and identity and asks to trust them.
async fn first_contact(
    url: &str,
    user: &str,
    client_cert: Option<coffer_client::ClientCert>,
) -> Result<Trust> {
    let endpoint = Endpoint::parse(url, Trust::FirstUse, client_cert)?;
    let probe = Session::new(endpoint, user, None)?.probe().await?;
    let fingerprint = probe.fingerprint.context("no certificate seen")?;
    eprintln!("First contact with {url}:");
    eprintln!("  certificate fingerprint: {fingerprint}");
    if let Some(group) = &probe.key_exchange {
        eprintln!("  key exchange:            {group}");
    }
    eprintln!(
        "  server identity:         {}",
        probe.server_identity.fingerprint()
    );
    eprintln!("Compare them with what `coffer server init` printed on the server.");
    if !confirm("Trust this server?")? {
        bail!(
            "not trusted; to log in without a prompt pass --fingerprint {fingerprint} (after checking it)"
        );
    }
    Ok(Trust::Pinned(fingerprint))
}

async fn logout(common: &CommonArgs) -> Result<()> {
    let mut ctx = Ctx::open(common)?;
    ctx.session.logout().await?;
    ctx.save()
}

/// The files to upload, with relative paths for trees.
fn expand(files: &[PathBuf], recursive: bool) -> Result<Vec<(PathBuf, Option<String>)>> {
    let mut out = Vec::new();
    for path in files {
        let meta =
            std::fs::metadata(path).with_context(|| format!("cannot read {}", path.display()))?;
        if meta.is_dir() {
            if !recursive {
                bail!("{} is a directory (use -r)", path.display());
            }
            let root_name = std::fs::canonicalize(path)?
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            walk(path, &root_name, &mut out)?;
        } else {
            out.push((path.clone(), None));
        }
    }
    Ok(out)
}

fn walk(dir: &Path, prefix: &str, out: &mut Vec<(PathBuf, Option<String>)>) -> Result<()> {
    let mut entries: Vec<_> = std::fs::read_dir(dir)?.collect::<std::io::Result<_>>()?;
    entries.sort_by_key(|e| e.file_name());
    for entry in entries {
        let name = entry.file_name().to_string_lossy().into_owned();
        let rel = if prefix.is_empty() {
            name.clone()
        } else {
            format!("{prefix}/{name}")
        };
        // Symbolic links are not followed: they could lead anywhere.
        let kind = entry.file_type()?;
        if kind.is_dir() {
            walk(&entry.path(), &rel, out)?;
        } else if kind.is_file() {
            out.push((entry.path(), Some(rel)));
        }
    }
    Ok(())
}

async fn put(args: &PutArgs) -> Result<()> {
    let how = PutHow {
        to: &args.to,
        accept_new_key: args.accept_new_key,
        wait: args.wait,
        skip_existing: args.skip_existing,
        retention: &args.retention,
        name: args.name.as_deref(),
    };
    if args.files.iter().any(|f| f == Path::new("-")) {
        return put_stdin(args, &how).await;
    }
    if args.name.is_some() {
        return Err(usage("--name is for `put -` (a file keeps its own name)"));
    }
    let files = expand(&args.files, args.recursive)?;
    put_files(&args.common, &files, &how).await
}

/// A usage error (exit code 2).
fn usage(message: &str) -> anyhow::Error {
    coffer_client::Error::Usage(message.into()).into()
}

/// `put - --name NAME`: standard input, staged in a private file first
/// because the header declares the exact length before the first byte is
/// sent (and so that a dropped connection can still be resumed within this
/// run). The stage is removed when the upload ends, however it ends.
async fn put_stdin(args: &PutArgs, how: &PutHow<'_>) -> Result<()> {
    if args.files.len() != 1 || args.recursive {
        return Err(usage(
            "`put -` takes standard input alone (no other files, no -r)",
        ));
    }
    let name = args
        .name
        .as_deref()
        .ok_or_else(|| usage("`put -` needs --name NAME: standard input has no name to store"))?;
    // The check a recipient applies to a stored name, as a usage error here.
    coffer_client::names::check_component(name)
        .map_err(|err| usage(&format!("--name {name:?}: {err}")))?;
    let uploads = Home::from_env()?.uploads_dir(&args.common.profile)?;
    let stage =
        tokio::task::spawn_blocking(move || upload::stage(std::io::stdin().lock(), &uploads))
            .await?
            .context("cannot stage standard input")?;
    put_files(&args.common, &[(stage.path().to_path_buf(), None)], how).await
}

/// What `put` and `send` were asked for besides the files.
struct PutHow<'a> {
    to: &'a [String],
    accept_new_key: bool,
    wait: bool,
    skip_existing: bool,
    retention: &'a RetentionArgs,
    /// The name to store instead of the file's (`put -`).
    name: Option<&'a str>,
}

/// One of the caller's stored files as its encrypted metadata describes it
/// (for `put --skip-existing`).
struct Uploaded {
    id: String,
    name: Option<String>,
    path: Option<String>,
    size: Option<u64>,
    content_blake3: String,
}

/// The caller's own files that carry a content hash. A file whose header
/// does not open (not end-to-end encrypted, or not ours) is left out: it
/// can only cause an upload, never a wrong skip.
async fn uploaded_files(ctx: &mut Ctx) -> Result<Vec<Uploaded>> {
    let entries = ctx.session.list_files(Listing::Owned).await?;
    let mut uploaded = Vec::new();
    for entry in &entries {
        let Ok((meta, _)) = download::describe(&mut ctx.session, entry, &mut ctx.profile).await
        else {
            continue;
        };
        if let Some(content_blake3) = meta.content_blake3 {
            uploaded.push(Uploaded {
                id: entry.id.clone(),
                name: meta.name,
                path: meta.path,
                size: meta.size,
                content_blake3,
            });
        }
    }
    Ok(uploaded)
}

/// The id of an upload named `name` with these bytes, if there is one.
fn already_uploaded<'a>(
    uploaded: &'a [Uploaded],
    name: &str,
    relative: Option<&str>,
    size: u64,
    content_blake3: &str,
) -> Option<&'a str> {
    uploaded
        .iter()
        .find(|u| {
            u.content_blake3 == content_blake3
                && u.size == Some(size)
                && u.path.as_deref() == relative
                && u.name.as_deref() == Some(name)
        })
        .map(|u| u.id.as_str())
}

async fn send(args: &SendArgs) -> Result<()> {
    let how = PutHow {
        to: &args.to,
        accept_new_key: args.accept_new_key,
        wait: args.wait,
        skip_existing: false,
        retention: &args.retention,
        name: None,
    };
    put_files(&args.common, &[(args.file.clone(), None)], &how).await
}

async fn put_files(
    common: &CommonArgs,
    files: &[(PathBuf, Option<String>)],
    how: &PutHow<'_>,
) -> Result<()> {
    let mut ctx = Ctx::open(common)?;
    let mut options = PutOptions::new(ctx.home.uploads_dir(&ctx.name)?);
    options.wait_for_lock = how.wait;
    options.expires_in = how
        .retention
        .expires
        .as_deref()
        .map(parse_duration)
        .transpose()?;
    options.delete_when_received = how.retention.delete_when_received;
    for user in how.to {
        let key = ctx.user_key(user, how.accept_new_key).await?;
        options.recipients.push((user.clone(), key));
    }
    let receipts = ctx.home.receipts_dir(&ctx.name)?;
    let uploaded = if how.skip_existing {
        uploaded_files(&mut ctx).await?
    } else {
        Vec::new()
    };
    options.name = how.name.map(str::to_string);
    let mut result = Ok(());
    for (source, relative) in files {
        options.relative_path = relative.clone();
        // What the user named: a file, or `-` for a stage of standard input.
        let path = match how.name {
            Some(_) => Path::new("-"),
            None => source.as_path(),
        };
        let label = match how.name {
            Some(name) => name.to_string(),
            None => source
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default(),
        };
        // One bar from hashing through sending.
        let progress = ctx.progress(&label);
        if how.skip_existing {
            let (size, hash) = hash_source(source, progress.as_ref()).await?;
            if let Some(id) = already_uploaded(&uploaded, &label, relative.as_deref(), size, &hash)
            {
                drop(progress);
                if ctx.json {
                    crate::say!(
                        "{}",
                        json!({"id": id, "path": path, "size": size, "skipped": true})
                    );
                } else {
                    ctx.note(&format!("{} is already uploaded; skipped", path.display()));
                    crate::say!("{id}  {}", path.display());
                }
                continue;
            }
            options.content_blake3 = Some(hash);
        }
        let outcome = upload::put(&mut ctx.session, source, &options, progress.as_ref()).await;
        drop(progress);
        let outcome = match outcome {
            Ok(outcome) => outcome,
            Err(err) => {
                result =
                    Err(anyhow::Error::new(err)
                        .context(format!("upload of {} failed", path.display())));
                break;
            }
        };
        keep_receipt(&receipts, &outcome.receipt)?;
        if ctx.json {
            crate::say!(
                "{}",
                json!({"id": outcome.file_id, "path": path, "size": outcome.plaintext_len,
                       "stored": outcome.stored_len, "resumed_at": outcome.resumed_at, "to": how.to})
            );
        } else {
            if outcome.resumed_at > 0 {
                ctx.note(&format!(
                    "resumed {} at byte {}",
                    path.display(),
                    outcome.resumed_at
                ));
            }
            crate::say!("{}  {}", outcome.file_id, path.display());
        }
    }
    ctx.save()?;
    result
}

/// The size and BLAKE3 of a file to upload, read on a blocking thread
/// while the bar shows the hashing phase (a large file takes seconds).
async fn hash_source(path: &Path, progress: &dyn Progress) -> Result<(u64, String)> {
    use std::sync::atomic::{AtomicU64, Ordering};
    let size = std::fs::metadata(path)
        .map_err(|source| coffer_client::Error::Io {
            path: path.to_path_buf(),
            source,
        })?
        .len();
    progress.phase(Phase::Hashing);
    progress.set_total(size);
    let done = Arc::new(AtomicU64::new(0));
    let (owned, counter) = (path.to_path_buf(), done.clone());
    let mut hashing = tokio::task::spawn_blocking(move || upload::content_blake3(&owned, &counter));
    let hash = loop {
        tokio::select! {
            hashed = &mut hashing => break hashed??,
            () = tokio::time::sleep(Duration::from_millis(100)) => {
                progress.set_position(done.load(Ordering::Relaxed));
            }
        }
    };
    Ok((size, hash))
}

fn keep_receipt(dir: &Path, receipt: &SignedReceipt) -> Result<()> {
    std::fs::create_dir_all(dir)?;
    let path = dir.join(format!("{}.json", receipt.receipt.file_id));
    std::fs::write(&path, serde_json::to_vec_pretty(receipt)?)
        .with_context(|| format!("cannot keep the receipt in {}", path.display()))
}

/// Where a link URL may come from besides the command line.
const LINK_URL_ENV: &str = "COFFER_LINK_URL";

/// The link URL from standard input (its first line).
fn link_url_from_stdin() -> Result<Zeroizing<String>> {
    let mut line = Zeroizing::new(String::new());
    std::io::stdin()
        .read_line(&mut line)
        .context("cannot read a link URL from standard input")?;
    let url = Zeroizing::new(line.trim().to_string());
    if url.is_empty() {
        bail!("no link URL on standard input");
    }
    Ok(url)
}

async fn get(args: &GetArgs) -> Result<()> {
    match args.ids.as_slice() {
        [] => {
            let url = std::env::var(LINK_URL_ENV).map(Zeroizing::new).map_err(|_| {
                anyhow::anyhow!(
                    "nothing to get: give file ids, a link URL, `-` to read a link URL from standard input, or set ${LINK_URL_ENV}"
                )
            })?;
            return get_link(args, url.trim()).await;
        }
        [dash] if dash == "-" => return get_link(args, &link_url_from_stdin()?).await,
        [url] if url.starts_with("https://") => return get_link(args, url).await,
        _ => {}
    }
    let mut ctx = Ctx::open(&args.common)?;
    let options = GetOptions {
        on_exists: if args.force {
            OnExists::Replace
        } else {
            OnExists::Refuse
        },
        ..GetOptions::default()
    };
    if args.output.as_deref() == Some(Path::new("-")) {
        return get_to_stdout(&mut ctx, args, &options).await;
    }
    let target = target_for(args)?;
    let mut result = Ok(());
    for id in &args.ids {
        let progress = ctx.progress(id);
        let outcome = download::get(
            &mut ctx.session,
            id,
            &target,
            &options,
            &mut ctx.profile,
            progress.as_ref(),
        )
        .await;
        drop(progress);
        match outcome {
            Ok(outcome) => {
                ctx.keep_new_pin(outcome.newly_pinned)?;
                report_download(&ctx, id, &outcome);
            }
            Err(err) => {
                result = Err(anyhow::Error::new(err).context(format!("download of {id} failed")));
                break;
            }
        }
    }
    ctx.save()?;
    result
}

/// `get ID -o -`: one file, decrypted and verified as it streams to
/// standard output (see [`download::stream`]: on a non-zero exit, discard
/// what came).
async fn get_to_stdout(ctx: &mut Ctx, args: &GetArgs, options: &GetOptions) -> Result<()> {
    let [id] = args.ids.as_slice() else {
        bail!("-o - takes exactly one file id");
    };
    if args.recursive {
        bail!("-o - cannot be combined with -r");
    }
    let progress = ctx.progress(id);
    let mut stdout = std::io::stdout();
    let streamed = download::stream(
        &mut ctx.session,
        id,
        &mut stdout,
        options,
        &mut ctx.profile,
        progress.as_ref(),
    )
    .await;
    drop(progress);
    let streamed = streamed.with_context(|| format!("download of {id} failed"))?;
    let from = match (streamed.signer.user(), streamed.signer.upload_link()) {
        (Some(user), _) => user.to_string(),
        (None, Some(request)) => format!("an anonymous sender via upload link {request}"),
        (None, None) => String::new(),
    };
    if streamed.signer.newly_pinned() {
        ctx.note(&format!(
            "pinned the key of {from}: {} (first file from them; check it with them)",
            streamed.sender.fingerprint()
        ));
    }
    ctx.note(&format!(
        "{id}: {} bytes to standard output, from {} ({})",
        streamed.plaintext_len,
        printable(&from),
        streamed.sender.fingerprint()
    ));
    ctx.save()
}

fn target_for(args: &GetArgs) -> Result<Target> {
    let output = args.output.clone().unwrap_or_else(|| PathBuf::from("."));
    Ok(if args.recursive {
        Target::Tree(output)
    } else if args.ids.len() == 1 && args.output.is_some() && !output.is_dir() {
        Target::File(output)
    } else {
        if !output.is_dir() {
            bail!("{} is not a directory", output.display());
        }
        Target::Dir(output)
    })
}

/// Who an inbox entry is from, as this client can vouch: a user, or "via
/// upload link ID" for an anonymous sender (with the name they typed, in
/// quotes, as their own claim).
fn from_label(entry: &coffer_client::api::FileEntry, claimed_name: Option<&str>) -> String {
    match &entry.via_request {
        None => entry.owner.clone(),
        Some(request) => match claimed_name {
            Some(name) => format!("via upload link {request} (says \"{name}\")"),
            None => format!("via upload link {request}"),
        },
    }
}

fn report_download(ctx: &Ctx, id: &str, outcome: &download::GetOutcome) {
    if let Some(stored) = &outcome.renamed_from {
        ctx.note(&format!(
            "warning: {id}: the stored name {stored:?} is unsafe; saved as {}",
            outcome.path.display()
        ));
    }
    let from = match (&outcome.via_request, &outcome.sender_user) {
        (Some(request), _) => format!("an anonymous sender via upload link {request}"),
        (None, Some(user)) => user.clone(),
        (None, None) => String::new(),
    };
    let fingerprint = outcome.sender.fingerprint();
    if outcome.newly_pinned {
        ctx.note(&format!(
            "pinned the key of {from}: {fingerprint} (first file from them; check it with them)"
        ));
    }
    if ctx.json {
        crate::say!(
            "{}",
            json!({"id": id, "path": outcome.path, "size": outcome.plaintext_len,
                   "content": content_id(&outcome.content), "from": outcome.sender_user,
                   "via_request": outcome.via_request, "says_from": outcome.metadata.from,
                   "sender": fingerprint, "resumed_at": outcome.resumed_at})
        );
    } else {
        crate::say!(
            "{}  {}  from {} ({fingerprint}, verified)",
            id,
            outcome.path.display(),
            printable(&from)
        );
    }
}

/// A verified content identity as `<algorithm>:<hex>`.
fn content_id(content: &coffer_format::Content) -> String {
    match content {
        coffer_format::Content::V1 { plaintext_sha256 } => {
            format!("plaintext-sha256:{}", hex(plaintext_sha256))
        }
        coffer_format::Content::V2 { root, .. } => format!("coffer2-root:{}", hex(root)),
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

async fn get_link(args: &GetArgs, url: &str) -> Result<()> {
    let link = LinkUrl::parse(url)?;
    let trust = match (&args.fingerprint, &args.ca) {
        (Some(fp), _) => Some(Trust::Pinned(fp.clone())),
        (None, Some(ca)) => Some(Trust::Ca(ca.clone())),
        _ => None,
    };
    let password = if links::needs_password(&link, trust.clone()).await? {
        Some(link_password(false)?)
    } else {
        None
    };
    let target = target_for(args)?;
    let options = GetOptions {
        on_exists: if args.force {
            OnExists::Replace
        } else {
            OnExists::Refuse
        },
        ..GetOptions::default()
    };
    let progress = bar(&link.link, args.common.quiet, args.common.json);
    let outcome =
        links::fetch_link(&link, trust, password, &target, &options, progress.as_ref()).await?;
    drop(progress);
    if let Some(stored) = &outcome.renamed_from {
        eprintln!(
            "warning: the stored name {stored:?} is unsafe; saved as {}",
            outcome.path.display()
        );
    }
    let checked = if link.sender.is_some() {
        "the key the link names"
    } else {
        "no sender in the link to check against"
    };
    if args.common.json {
        crate::say!(
            "{}",
            json!({"link": link.link, "path": outcome.path, "size": outcome.plaintext_len,
                   "content": content_id(&outcome.content), "sender": outcome.sender.fingerprint(),
                   "sender_checked": link.sender.is_some()})
        );
    } else {
        crate::say!(
            "{}  signed by {} ({checked})",
            outcome.path.display(),
            outcome.sender.fingerprint()
        );
    }
    Ok(())
}

fn link_password(confirm_twice: bool) -> Result<Zeroizing<String>> {
    if let Ok(value) = std::env::var(LINK_PASSWORD_ENV) {
        return Ok(Zeroizing::new(value));
    }
    if !std::io::stdin().is_terminal() {
        bail!("a link password is needed: set ${LINK_PASSWORD_ENV} or run on a terminal");
    }
    let first = Zeroizing::new(rpassword::prompt_password("Link password: ")?);
    if first.is_empty() {
        bail!("empty password");
    }
    if confirm_twice {
        let again = Zeroizing::new(rpassword::prompt_password("Repeat password: ")?);
        if *again != *first {
            bail!("passwords do not match");
        }
    }
    Ok(first)
}

fn date(unix: i64) -> String {
    let time = UNIX_EPOCH + Duration::from_secs(unix.max(0) as u64);
    httpdate::fmt_http_date(time)
}

async fn ls(args: &LsArgs) -> Result<()> {
    let mut ctx = Ctx::open(&args.common)?;
    let listing = if args.shared_with_me {
        Listing::SharedWithMe
    } else {
        Listing::Owned
    };
    let entries = ctx.session.list_files(listing).await?;
    if args.no_names {
        for entry in &entries {
            if ctx.json {
                crate::say!(
                    "{}",
                    json!({"id": entry.id, "stored": entry.size,
                           "created_at": entry.created_at, "owner": entry.owner})
                );
            } else {
                crate::say!(
                    "{}  {:>12}  {}  {}",
                    printable(&entry.id),
                    entry.size,
                    date(entry.created_at),
                    printable(&entry.owner)
                );
            }
        }
        return Ok(());
    }
    for entry in &entries {
        if crate::output::stdout_closed() {
            break;
        }
        let described = download::describe(&mut ctx.session, entry, &mut ctx.profile).await;
        let (name, size) = match &described {
            Ok((meta, _)) => (
                meta.path.clone().or(meta.name.clone()).unwrap_or_default(),
                meta.size,
            ),
            Err(err) => (unreadable(entry, err), None),
        };
        let recipients = if entry.owner == ctx.profile.user {
            listed_recipients(&mut ctx, entry).await
        } else {
            Vec::new()
        };
        if ctx.json {
            crate::say!(
                "{}",
                json!({"id": entry.id, "name": name, "size": size, "stored": entry.size,
                       "created_at": entry.created_at, "expires_at": entry.expires_at,
                       "owner": entry.owner, "sender_key_checked": described.is_ok(),
                       "shared_with": recipients})
            );
        } else {
            let size = size.map_or("?".to_string(), |s| s.to_string());
            let mut shared = if recipients.is_empty() {
                String::new()
            } else {
                format!("  -> {}", recipients.join(","))
            };
            if let Some(at) = entry.expires_at {
                shared.push_str(&format!("  (expires {})", date(at)));
            }
            let owner = checked_label(entry.owner.clone(), described.is_ok());
            crate::say!(
                "{}  {:>12}  {}  {:<10}  {}{}",
                printable(&entry.id),
                size,
                date(entry.created_at),
                printable(&owner),
                printable(&name),
                printable(&shared)
            );
        }
    }
    ctx.save()
}

/// The other users holding a wrap of one of the caller's files: from the
/// listing, or (a server that sent none) asked for.
async fn listed_recipients(ctx: &mut Ctx, entry: &FileEntry) -> Vec<String> {
    let mut users = match entry.details.as_ref().and_then(|d| d.shared_with.clone()) {
        Some(users) => users,
        None => ctx.session.list_shares(&entry.id).await.unwrap_or_default(),
    };
    users.retain(|u| *u != entry.owner);
    users
}

async fn stat(args: &IdArgs) -> Result<()> {
    let mut ctx = Ctx::open(&args.common)?;
    let entry = ctx.session.file_meta(&args.id).await?;
    let (meta, sender) = download::describe(&mut ctx.session, &entry, &mut ctx.profile).await?;
    let owner = entry.owner == ctx.profile.user;
    let shares = if owner {
        ctx.session.list_shares(&args.id).await?
    } else {
        Vec::new()
    };
    let links = if owner {
        ctx.session.list_links(&args.id).await?
    } else {
        Vec::new()
    };
    let value = json!({
        "id": entry.id, "owner": entry.owner, "name": meta.name, "path": meta.path,
        "size": meta.size, "mtime": meta.mtime, "stored": entry.size, "digest": entry.digest,
        "created_at": entry.created_at, "sender": sender.fingerprint(), "shared_with": shares,
        "links": links,
    });
    if ctx.json {
        crate::say!("{value}");
    } else {
        crate::say!("{}", serde_json::to_string_pretty(&value)?);
    }
    ctx.save()
}

async fn rm(args: &RmArgs) -> Result<()> {
    let mut ctx = Ctx::open(&args.common)?;
    for id in &args.ids {
        let removed = ctx
            .session
            .delete_file(id)
            .await
            .with_context(|| format!("cannot delete {id}"))?;
        match removed {
            Removed::File => {
                let receipt = ctx.home.receipts_dir(&ctx.name)?.join(format!("{id}.json"));
                let _ = std::fs::remove_file(receipt);
                ctx.note(&format!("deleted {id}"));
            }
            Removed::Share => ctx.note(&format!(
                "removed {id} from your files (shared with you; the owner keeps it)"
            )),
        }
    }
    ctx.save()
}

async fn verify_receipts(common: &CommonArgs) -> Result<()> {
    let mut ctx = Ctx::open(common)?;
    let server = PublicIdentity::parse(&ctx.profile.server_identity)?;
    let dir = ctx.home.receipts_dir(&ctx.name)?;
    let mut paths: Vec<PathBuf> = std::fs::read_dir(&dir)
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "json"))
        .collect();
    paths.sort();
    let mut bad = 0;
    for path in &paths {
        let verdict = check_receipt(&mut ctx, &server, path).await;
        let (id, status) = match &verdict {
            Ok((id, status)) => (id.clone(), *status),
            Err(err) => {
                eprintln!("{}: {err:#}", path.display());
                (path.display().to_string(), "error")
            }
        };
        if matches!(status, "bad" | "mismatch" | "error") {
            bad += 1;
        }
        if ctx.json {
            crate::say!("{}", json!({"id": id, "status": status}));
        } else {
            crate::say!("{id}  {status}");
        }
    }
    ctx.save()?;
    if bad > 0 {
        bail!("{bad} of {} receipts failed", paths.len());
    }
    ctx.note(&format!("{} receipts verified", paths.len()));
    Ok(())
}

/// `ok`, `deleted` (valid receipt, file gone from the server), `mismatch`
/// (the server now describes other bytes) or an error (bad signature).
async fn check_receipt(
    ctx: &mut Ctx,
    server: &PublicIdentity,
    path: &Path,
) -> Result<(String, &'static str)> {
    let receipt: SignedReceipt = serde_json::from_slice(&std::fs::read(path)?)?;
    let id = receipt.receipt.file_id.clone();
    if !receipt.verify(server) || receipt.receipt.uploader != ctx.profile.user {
        return Ok((id, "bad"));
    }
    // Receipts name the content as `<algorithm>:<hex>`; those of version 1
    // objects carry the SHA-256 alone.
    let named = receipt.receipt.content.clone().or_else(|| {
        receipt
            .receipt
            .sha256
            .as_ref()
            .map(|sha| format!("sha256:{sha}"))
    });
    match ctx.session.file_meta(&id).await {
        Ok(entry)
            if entry.size == receipt.receipt.size && Some(&entry.digest) == named.as_ref() =>
        {
            Ok((id, "ok"))
        }
        Ok(_) => Ok((id, "mismatch")),
        Err(coffer_client::Error::Api { status: 404, .. }) => Ok((id, "deleted")),
        Err(err) => Err(err.into()),
    }
}

/// A listing's owner column: a file that cannot be opened has only the
/// server's word for its owner (one that opens had its header's sender key
/// matched against the key pinned for that owner).
fn checked_label(owner: String, sender_key_checked: bool) -> String {
    if sender_key_checked {
        owner
    } else {
        format!("{owner} (unverified)")
    }
}

/// What a listing shows in place of the name of a file it cannot open.
fn unreadable(entry: &coffer_client::api::FileEntry, err: &coffer_client::Error) -> String {
    match err {
        coffer_client::Error::WrongSender { got, .. } => {
            format!("<not from {}: signed by {got}>", entry.owner)
        }
        err if err.is_object_missing() => "<missing on the server>".into(),
        _ => "<cannot decrypt>".into(),
    }
}

/// Files shared with the caller that no machine of theirs has acknowledged
/// yet: listed, or (`--get-all`) downloaded and then acknowledged on the
/// server, one by one, so a rerun after a failure fetches only what did not
/// arrive. A name already taken keeps both (`name.2.ext`) unless `--force`.
async fn inbox(args: &InboxArgs) -> Result<()> {
    let mut ctx = Ctx::open(&args.common)?;
    let entries = ctx.session.list_files(Listing::Unreceived).await?;
    if !args.get_all {
        for entry in &entries {
            if crate::output::stdout_closed() {
                break;
            }
            let described = download::describe(&mut ctx.session, entry, &mut ctx.profile).await;
            let (name, size, claimed_name) = match &described {
                Ok((meta, _)) => (
                    meta.path.clone().or(meta.name.clone()),
                    meta.size,
                    meta.from.clone(),
                ),
                Err(_) => (None, None, None),
            };
            let from = from_label(entry, claimed_name.as_deref());
            let sender_key_checked = described.is_ok();
            if ctx.json {
                crate::say!(
                    "{}",
                    json!({"id": entry.id, "owner": entry.owner, "from": from,
                           "sender_key_checked": sender_key_checked,
                           "via_request": entry.via_request, "says_from": claimed_name,
                           "name": name, "size": size,
                           "stored": entry.size, "created_at": entry.created_at})
                );
            } else {
                let from = checked_label(from, sender_key_checked);
                let name = match (&described, name) {
                    (_, Some(name)) => name,
                    (Err(err), None) => unreadable(entry, err),
                    (Ok(_), None) => "<no name>".into(),
                };
                crate::say!(
                    "{}  {}  {:>12}  {}  {}",
                    printable(&entry.id),
                    printable(&from),
                    size.map_or("?".to_string(), |s| s.to_string()),
                    date(entry.created_at),
                    printable(&name)
                );
            }
        }
        return ctx.save();
    }
    if !args.output.is_dir() {
        bail!("{} is not a directory", args.output.display());
    }
    let target = if args.recursive {
        Target::Tree(args.output.clone())
    } else {
        Target::Dir(args.output.clone())
    };
    let options = GetOptions {
        on_exists: if args.force {
            OnExists::Replace
        } else {
            OnExists::KeepBoth
        },
        ..GetOptions::default()
    };
    // A file that fails its checks or is gone must not hold back the ones
    // after it night after night: it is reported, stays in the inbox, and
    // the run fails at the end with its exit code. Anything else (the
    // server, the session, the local disk) would fail every file: stop.
    let mut skipped: Option<(usize, anyhow::Error)> = None;
    // Oldest first, so that of several versions of one name the newest
    // ends up with the highest number.
    for entry in entries.iter().rev() {
        let progress = ctx.progress(&entry.id);
        let outcome = download::get_listed(
            &mut ctx.session,
            entry,
            &target,
            &options,
            &mut ctx.profile,
            progress.as_ref(),
        )
        .await;
        drop(progress);
        let outcome = match outcome {
            Ok(outcome) => outcome,
            Err(err) if matches!(err.class(), Class::Integrity | Class::NotFound) => {
                let err = anyhow::Error::new(err).context(format!(
                    "download of {} failed; it stays in the inbox",
                    entry.id
                ));
                crate::report_error(&err);
                let (count, _) = skipped.get_or_insert((0, err));
                *count += 1;
                continue;
            }
            Err(err) => {
                ctx.save()?;
                return Err(err).with_context(|| format!("download of {} failed", entry.id));
            }
        };
        // Acknowledged as soon as the file is in place (and its sender's
        // key, if new, saved), before its line is printed: the run may
        // still be cut off after the file is in place (killed), and the
        // file must not come again on the next night.
        ctx.keep_new_pin(outcome.newly_pinned)?;
        ctx.session
            .mark_received(&entry.id)
            .await
            .with_context(|| format!("{} arrived but cannot be acknowledged", entry.id))?;
        report_download(&ctx, &entry.id, &outcome);
    }
    ctx.save()?;
    match skipped {
        None => {
            ctx.note(&format!("{} new file(s)", entries.len()));
            Ok(())
        }
        Some((count, first)) => Err(first.context(format!(
            "{count} of {} new file(s) did not arrive (each is reported above); the first",
            entries.len()
        ))),
    }
}

async fn link_ls(args: &LinkLsArgs) -> Result<()> {
    let mut ctx = Ctx::open(&args.common)?;
    let ids = match &args.id {
        Some(id) => vec![id.clone()],
        None => (ctx.session.list_files(Listing::Owned).await?)
            .into_iter()
            .map(|entry| entry.id)
            .collect(),
    };
    for id in &ids {
        for link in ctx.session.list_links(id).await? {
            if ctx.json {
                crate::say!("{}", json!({"file": id, "link": link}));
            } else {
                let downloads = match link.max_downloads {
                    Some(max) => format!("{}/{max}", link.downloads),
                    None => link.downloads.to_string(),
                };
                crate::say!(
                    "{}  {}  expires {}  downloads {}{}{}",
                    printable(&link.id),
                    printable(id),
                    date(link.expires_at),
                    downloads,
                    if link.password_required {
                        "  password"
                    } else {
                        ""
                    },
                    if link.locked { "  LOCKED" } else { "" }
                );
            }
        }
    }
    ctx.save()
}

async fn link_revoke(args: &LinkRevokeArgs) -> Result<()> {
    let mut ctx = Ctx::open(&args.common)?;
    for given in &args.links {
        let id = if given.starts_with("https://") {
            LinkUrl::parse(given)?.link
        } else {
            given.clone()
        };
        ctx.session
            .delete_link(&id)
            .await
            .with_context(|| format!("cannot revoke link {}", printable(&id)))?;
        ctx.note(&format!("revoked link {id}"));
    }
    ctx.save()
}

async fn share(args: &ShareArgs) -> Result<()> {
    let mut ctx = Ctx::open(&args.common)?;
    for user in &args.with {
        let key = ctx.user_key(user, args.accept_new_key).await?;
        let name = coffer_client::share::share(&mut ctx.session, &args.id, user, &key)
            .await
            .with_context(|| format!("cannot share {} with {user}", args.id))?;
        ctx.note(&format!(
            "shared {} ({}) with {user}",
            printable(name.as_deref().unwrap_or("<no name>")),
            args.id
        ));
    }
    ctx.save()
}

async fn revoke(args: &RevokeArgs) -> Result<()> {
    let mut ctx = Ctx::open(&args.common)?;
    for user in &args.from {
        ctx.session
            .delete_share(&args.id, user)
            .await
            .with_context(|| format!("cannot revoke {user}'s access to {}", args.id))?;
        ctx.note(&format!("revoked {user}'s access to {}", args.id));
    }
    ctx.save()
}

/// `30s`, `15m`, `24h`, `7d` (or plain seconds).
fn parse_duration(text: &str) -> Result<u64> {
    let (number, unit) = text.split_at(
        text.find(|c: char| !c.is_ascii_digit())
            .unwrap_or(text.len()),
    );
    let n: u64 = number
        .parse()
        .with_context(|| format!("bad duration {text:?}"))?;
    let factor = match unit {
        "" | "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86400,
        _ => bail!("bad duration {text:?} (use s, m, h or d)"),
    };
    n.checked_mul(factor).context("duration too long")
}

async fn link(args: &LinkArgs) -> Result<()> {
    let mut ctx = Ctx::open(&args.common)?;
    match &args.action {
        Some(LinkAction::Ls(ls)) => return link_ls(ls).await,
        Some(LinkAction::Revoke(revoke)) => return link_revoke(revoke).await,
        None => {}
    }
    let id = args.id.as_deref().context("a file id is needed")?;
    // A password in the environment is meant to protect the link: never
    // create an unprotected one because the flag was forgotten.
    let wants_password = args.password || std::env::var_os(LINK_PASSWORD_ENV).is_some();
    if wants_password && !args.password {
        ctx.note(&format!(
            "${LINK_PASSWORD_ENV} is set: the link needs that password"
        ));
    }
    let options = LinkOptions {
        expires_in: Some(parse_duration(&args.expires)?),
        max_downloads: args.max_downloads,
        password: if wants_password {
            Some(link_password(true)?)
        } else {
            None
        },
    };
    let created = links::create(&mut ctx.session, id, options).await?;
    if ctx.json {
        crate::say!(
            "{}",
            json!({"link": created.link, "url": created.url, "name": created.name})
        );
    } else {
        ctx.note(&format!(
            "link to {} ({})",
            printable(created.name.as_deref().unwrap_or("<no name>")),
            id
        ));
        crate::say!("{}", created.url);
    }
    ctx.save()
}

/// Creates an upload link, or lists or revokes them.
async fn request(args: &RequestArgs) -> Result<()> {
    match &args.action {
        Some(RequestAction::Ls(ls)) => return request_ls(&ls.common).await,
        Some(RequestAction::Revoke(revoke)) => return request_revoke(revoke).await,
        None => {}
    }
    let mut ctx = Ctx::open(&args.common)?;
    let wants_password = args.password || std::env::var_os(LINK_PASSWORD_ENV).is_some();
    if wants_password && !args.password {
        ctx.note(&format!(
            "${LINK_PASSWORD_ENV} is set: the upload link needs that password"
        ));
    }
    let options = RequestOptions {
        expires_in: Some(parse_duration(&args.expires)?),
        max_files: args.max_files,
        max_file_bytes: args.max_size,
        ask_name: args.ask_name,
        note: args.note.clone(),
        password: if wants_password {
            Some(link_password(true)?)
        } else {
            None
        },
    };
    let created = requests::create(&mut ctx.session, options).await?;
    if ctx.json {
        crate::say!("{}", json!({"request": created.id, "url": created.url}));
    } else {
        ctx.note(&format!(
            "upload link {}: files sent through it arrive in `coffer inbox`",
            created.id
        ));
        crate::say!("{}", created.url);
    }
    ctx.save()
}

async fn request_ls(common: &CommonArgs) -> Result<()> {
    let mut ctx = Ctx::open(common)?;
    for entry in ctx.session.list_requests().await? {
        if ctx.json {
            crate::say!("{}", json!(entry));
            continue;
        }
        let files = match entry.max_files {
            Some(max) => format!("{}/{max}", entry.files_started),
            None => entry.files_started.to_string(),
        };
        crate::say!(
            "{}  expires {}  files {}{}{}",
            printable(&entry.id),
            date(entry.expires_at),
            files,
            entry
                .max_file_bytes
                .map_or(String::new(), |max| format!("  max {max} bytes")),
            if entry.password {
                format!("  password ({} wrong)", entry.failed_attempts)
            } else {
                String::new()
            }
        );
    }
    ctx.save()
}

async fn request_revoke(args: &RequestRevokeArgs) -> Result<()> {
    let mut ctx = Ctx::open(&args.common)?;
    for given in &args.requests {
        let id = requests::id_of(given)?;
        ctx.session
            .delete_request(&id)
            .await
            .with_context(|| format!("cannot revoke upload link {id}"))?;
        ctx.note(&format!("revoked upload link {id}"));
    }
    ctx.save()
}

#[cfg(test)]
mod tests {
    #[test]
    fn durations_parse() {
        assert_eq!(super::parse_duration("90").unwrap(), 90);
        assert_eq!(super::parse_duration("15m").unwrap(), 900);
        assert_eq!(super::parse_duration("24h").unwrap(), 86400);
        assert_eq!(super::parse_duration("7d").unwrap(), 604800);
        for bad in ["", "h", "1w", "-1h", "99999999999999999999d"] {
            assert!(super::parse_duration(bad).is_err(), "{bad}");
        }
    }
}
