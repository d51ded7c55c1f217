//! `coffer server …`: thin over `coffer-server`.

use anyhow::{Context, Result, bail};
use coffer_format::PublicIdentity;
use coffer_server::keyring;
use coffer_server::service::audit::{self, Event};
use coffer_server::store::{MetaStore, User};
use coffer_server::{CertSource, Config, DataDir};
use serde_json::json;

use crate::cli::{
    AuditCommand, KeysCommand, RotateArgs, ServerCommand, ServerInitArgs, ServerRunArgs,
    UserCommand,
};

pub fn run(command: &ServerCommand) -> Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        match command {
            ServerCommand::Init(args) => init(args).await,
            ServerCommand::Run(args) => serve(args).await,
            ServerCommand::User(command) => user(command).await,
            ServerCommand::Audit(command) => audit_command(command).await,
            ServerCommand::RotateKek(args) => rotate_kek(args).await,
            ServerCommand::RotateMasterKey(args) => rotate_master_key(args).await,
            ServerCommand::Keys(command) => keys_command(command).await,
            ServerCommand::MigrateStore(args) => migrate_store(args).await,
            ServerCommand::Backup(args) => backup(args).await,
            ServerCommand::Restore(args) => restore(args).await,
        }
    })
}

async fn init(args: &ServerInitArgs) -> Result<()> {
    let cert = match (&args.cert, &args.key) {
        (Some(cert), Some(key)) => CertSource::Files {
            cert: cert.clone(),
            key: key.clone(),
        },
        _ => CertSource::SelfSigned(args.names.clone()),
    };
    let mut config = Config {
        listen: args.listen,
        public_url: args
            .public_url
            .as_ref()
            .map(|url| url.trim_end_matches('/').to_string()),
        client_ca: args.client_ca.clone(),
        client_crl: args
            .client_crl
            .as_deref()
            .map(std::path::absolute)
            .transpose()?,
        metrics_listen: args.metrics_listen,
        master_key_file: master_key_file(args)?,
        ..Config::default()
    };
    apply_storage_args(&mut config, &args.storage);
    config.check_public_url()?;
    let report = coffer_server::init(&args.data.dir, cert, config.clone()).await?;
    let url = match &config.public_url {
        Some(public) => public.clone(),
        None => client_url(&report.url, args),
    };
    crate::say!("url:                  {url}");
    crate::say!("certificate:          {}", report.cert_fingerprint);
    crate::say!("server identity:      {}", report.server_identity);
    if let Ok(public) = PublicIdentity::parse(&report.server_identity) {
        // The form `coffer login` shows at first contact.
        crate::say!("server fingerprint:   {}", public.fingerprint());
    }
    if std::env::var_os(coffer_server::keyring::MASTER_KEY_ENV).is_none() {
        eprintln!(
            "The master key is in {} (0600). Back it up apart from the data directory: without it the server-encrypted files are lost.",
            config.master_key_file.display()
        );
    }
    if coffer_server::config::withhold_password(&config.database).is_some() {
        eprintln!(
            "The database password was not written to config.toml: give the server the URL in COFFER_DATABASE (or use PGPASSWORD or ~/.pgpass)."
        );
    }
    eprintln!(
        "Initialized {}. Start it with: coffer server run --data {}",
        args.data.dir.display(),
        args.data.dir.display()
    );
    Ok(())
}

/// The URL clients use: the listen address, unless it is a wildcard
/// (`0.0.0.0`, `::`), which no client can connect to; then the first
/// certificate name.
fn client_url(url: &str, args: &crate::cli::ServerInitArgs) -> String {
    if !args.listen.ip().is_unspecified() {
        return url.to_string();
    }
    let host = args
        .names
        .iter()
        .find(|name| {
            name.parse::<std::net::IpAddr>()
                .map_or(true, |ip| !ip.is_loopback())
        })
        .or(args.names.first())
        .map_or("localhost", String::as_str);
    let host = if host.contains(':') {
        format!("[{host}]")
    } else {
        host.to_string()
    };
    format!("https://{host}:{}", args.listen.port())
}

/// The master key's file: as given, or `DATA.master.key` beside the data
/// directory (absolute, so it is found whatever the working directory).
fn master_key_file(args: &crate::cli::ServerInitArgs) -> Result<std::path::PathBuf> {
    if let Some(file) = &args.master_key_file {
        return Ok(std::path::absolute(file)?);
    }
    let data = std::path::absolute(&args.data.dir)?;
    let name = data
        .file_name()
        .context("the data directory needs a name")?
        .to_string_lossy()
        .into_owned();
    Ok(data.with_file_name(format!("{name}.master.key")))
}

/// Writes the storage flags into `config`.
fn apply_storage_args(config: &mut Config, storage: &crate::cli::StorageArgs) {
    if let Some(database) = &storage.database {
        config.database = database.clone();
    }
    if let Some(bucket) = &storage.s3_bucket {
        let objects = &mut config.objects;
        objects.kind = coffer_server::config::ObjectsKind::S3;
        objects.bucket = bucket.clone();
        objects.endpoint = storage.s3_endpoint.clone().unwrap_or_default();
        objects.region = storage.s3_region.clone().unwrap_or_default();
        objects.prefix = storage.s3_prefix.clone().unwrap_or_default();
        objects.allow_http = storage.s3_allow_http;
    }
}

async fn serve(args: &ServerRunArgs) -> Result<()> {
    let filter =
        tracing_subscriber::EnvFilter::try_from_env("COFFER_LOG").unwrap_or_else(|_| "info".into());
    let logs = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        // Colour only on a terminal: a log file or journald gets plain text.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()));
    // `COFFER_LOG_FORMAT=json`: one JSON object per line, for collectors.
    if std::env::var("COFFER_LOG_FORMAT").is_ok_and(|f| f == "json") {
        logs.json().init();
    } else {
        logs.init();
    }
    let mut data = DataDir::open(&args.data.dir)?;
    if let Some(listen) = args.listen {
        data.config.listen = listen;
    }
    if let Some(ca) = &args.client_ca {
        // An absolute path stays as it is when joined to the data directory.
        data.config.client_ca = Some(std::path::absolute(ca)?);
    }
    if let Some(crl) = &args.client_crl {
        data.config.client_crl = Some(std::path::absolute(crl)?);
    }
    if let Some(metrics) = args.metrics_listen {
        data.config.metrics_listen = Some(metrics);
    }
    let shutdown = async {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .expect("SIGTERM handler");
        tokio::select! {
            _ = term.recv() => {}
            _ = tokio::signal::ctrl_c() => {}
        }
        eprintln!("coffer server: shutting down");
    };
    coffer_server::run(data, shutdown, |bound| {
        eprintln!("coffer server: listening on https://{}", bound.api);
        if let Some(metrics) = bound.metrics {
            eprintln!("coffer server: metrics on https://{metrics}/metrics");
        }
    })
    .await
}

async fn user(command: &UserCommand) -> Result<()> {
    let dir = match command {
        UserCommand::Add(a) => &a.data.dir,
        UserCommand::List(a) => &a.data.dir,
        UserCommand::Disable(a) | UserCommand::Enable(a) => &a.data.dir,
        UserCommand::SetQuota(a) => &a.data.dir,
        UserCommand::SetKey(a) => &a.data.dir,
        UserCommand::Remove(a) => &a.data.dir,
    };
    let store = DataDir::open(dir)?.store().await?;
    match command {
        UserCommand::Add(args) => {
            if !coffer_server::service::session::valid_user_name(&args.name) {
                bail!(
                    "invalid user name {:?}: use 1-64 of a-z 0-9 . _ -",
                    args.name
                );
            }
            let public = PublicIdentity::parse(&args.key).context("--key")?;
            let user = User {
                name: args.name.clone(),
                public_identity: public.to_string(),
                is_admin: args.admin,
                quota_bytes: args.quota,
                disabled: false,
            };
            let now = coffer_server::unix_now();
            store.add_user(&user, now).await?;
            let event = Event::new("admin", None, "user_add", &user.name).detail(format!(
                "admin={} quota={:?}",
                user.is_admin, user.quota_bytes
            ));
            audit::append(&store, &event).await?;
            crate::say!("added {} (fingerprint {})", user.name, public.fingerprint());
        }
        UserCommand::List(args) => {
            let users = store.list_users().await?;
            if args.json {
                let mut rows = Vec::new();
                for u in &users {
                    let usage = store.usage(&u.name).await?;
                    rows.push(json!({"name": u.name, "public_identity": u.public_identity,
                        "fingerprint": PublicIdentity::parse(&u.public_identity).map(|p| p.fingerprint()).ok(),
                        "admin": u.is_admin, "quota_bytes": u.quota_bytes, "disabled": u.disabled,
                        "stored_bytes": usage.stored_bytes, "reserved_bytes": usage.reserved_bytes,
                        "open_uploads": usage.open_uploads}));
                }
                crate::say!("{}", serde_json::Value::Array(rows));
            } else {
                for u in users {
                    let flags = [(u.is_admin, "admin"), (u.disabled, "disabled")]
                        .iter()
                        .filter(|(on, _)| *on)
                        .map(|(_, name)| *name)
                        .collect::<Vec<_>>()
                        .join(",");
                    crate::say!("{}\t{}\t{}", u.name, u.public_identity, flags);
                }
            }
        }
        UserCommand::SetQuota(args) => {
            let quota = match args.quota.as_str() {
                "none" => None,
                text => Some(crate::cli::parse_bytes(text).map_err(|e| anyhow::anyhow!(e))?),
            };
            if !store.set_quota(&args.name, quota).await? {
                bail!("no such user: {}", args.name);
            }
            let event = Event::new("admin", None, "user_set_quota", &args.name)
                .detail(format!("quota={quota:?}"));
            audit::append(&store, &event).await?;
            match quota {
                Some(bytes) => crate::say!("quota of {}: {bytes} bytes", args.name),
                None => crate::say!("quota of {}: none", args.name),
            }
        }
        UserCommand::SetKey(args) => set_key(&store, args).await?,
        UserCommand::Remove(args) => remove_user(args).await?,
        UserCommand::Disable(args) | UserCommand::Enable(args) => {
            let disable = matches!(command, UserCommand::Disable(_));
            if !store.set_disabled(&args.name, disable).await? {
                bail!("no such user: {}", args.name);
            }
            let action = if disable {
                "user_disable"
            } else {
                "user_enable"
            };
            audit::append(&store, &Event::new("admin", None, action, &args.name)).await?;
            crate::say!(
                "{} {}",
                if disable { "disabled" } else { "enabled" },
                args.name
            );
        }
    }
    Ok(())
}

/// `user set-key`: the new key takes over at once; what was wrapped to the
/// old one is listed (shared files, to be shared again by their owners; the
/// user's own files, readable only with the old identity).
async fn set_key(
    store: &coffer_server::store::SqlStore,
    args: &crate::cli::UserKeyArgs,
) -> Result<()> {
    use coffer_server::store::{MetaStore, Page};
    let public = PublicIdentity::parse(&args.key).context("--key")?;
    if !store
        .set_public_identity(&args.name, &public.to_string())
        .await?
    {
        bail!("no such user: {}", args.name);
    }
    let event = Event::new("admin", None, "user_set_key", &args.name)
        .detail(format!("key={}", public.fingerprint()));
    audit::append(store, &event).await?;
    let mut shared = Vec::new();
    let mut page = Page::first(500);
    loop {
        let batch = store.shared_with(&args.name, &page, false).await?;
        let Some(last) = batch.last() else { break };
        page.after = Some((last.created_at, last.id.clone()));
        shared.extend(batch);
    }
    let mut owned = Vec::new();
    let mut page = Page::first(500);
    loop {
        let batch = store.list_files(&args.name, &page).await?;
        let Some(last) = batch.last() else { break };
        page.after = Some((last.created_at, last.id.clone()));
        owned.extend(batch);
    }
    for file in &shared {
        if args.json {
            crate::say!(
                "{}",
                serde_json::json!({"id": file.id, "owner": file.owner, "reshare": true})
            );
        } else {
            crate::say!("reshare  {}  owner {}", file.id, file.owner);
        }
    }
    for file in &owned {
        if args.json {
            crate::say!(
                "{}",
                serde_json::json!({"id": file.id, "owner": file.owner, "old_key_only": true})
            );
        } else {
            crate::say!("old-key  {}  own file", file.id);
        }
    }
    eprintln!(
        "{} has a new key ({}); their sessions ended. {} file(s) shared with them are wrapped to the old key: their owners run `coffer share ID --with {} --accept-new-key`. {} own file(s) open only with the old identity. Upload links they made pin the old key: make new ones.",
        args.name,
        public.fingerprint(),
        shared.len(),
        args.name,
        owned.len()
    );
    Ok(())
}

/// `user remove`: says what goes; with --yes removes it.
async fn remove_user(args: &crate::cli::UserRemoveArgs) -> Result<()> {
    use coffer_server::service::users;
    let data = DataDir::open(&args.data.dir)?;
    let store = data.store().await?;
    let removal = if args.yes {
        let objects = data.objects().await?;
        users::remove(&store, objects.as_ref(), &args.name).await?
    } else {
        users::plan(&store, &args.name).await?
    };
    if args.json {
        let mut value = serde_json::to_value(&removal)?;
        value["user"] = json!(args.name);
        value["removed"] = json!(args.yes);
        crate::say!("{value}");
    } else {
        let verb = if args.yes { "removed" } else { "would remove" };
        crate::say!(
            "{verb} {}: {} file(s), {} bytes ({} shared, with {}); {} unfinished upload(s); {} upload link(s); their wraps on {} file(s) of others",
            args.name,
            removal.files,
            removal.bytes,
            removal.shared_files,
            if removal.recipients.is_empty() {
                "nobody".to_string()
            } else {
                removal.recipients.join(", ")
            },
            removal.uploads,
            removal.requests,
            removal.shared_with_them
        );
    }
    if !args.yes {
        bail!("nothing removed: pass --yes to remove {}", args.name);
    }
    Ok(())
}

async fn audit_command(command: &AuditCommand) -> Result<()> {
    match command {
        AuditCommand::Verify(args) => {
            let data = DataDir::open(&args.data.dir)?;
            let store = data.store().await?;
            let report = audit::verify(&store, data.identity.public()).await?;
            if args.json {
                crate::say!("{}", serde_json::to_string_pretty(&report)?);
            } else {
                for problem in &report.problems {
                    crate::say!("TAMPERED: {problem}");
                }
                crate::say!(
                    "{} entries, {} signed heads checked: {}",
                    report.entries,
                    report.checkpoints,
                    if report.is_intact() {
                        "intact"
                    } else {
                        "NOT intact"
                    }
                );
            }
            if !report.is_intact() {
                bail!("the audit log has been tampered with");
            }
        }
        AuditCommand::Export(args) => {
            let store = DataDir::open(&args.data.dir)?.store().await?;
            let stdout = std::io::stdout();
            let mut out = std::io::BufWriter::new(stdout.lock());
            audit::export_json_lines(&store, &mut out).await?;
            std::io::Write::flush(&mut out)?;
        }
    }
    Ok(())
}

/// Opens the data directory's store and keyring (needs the master key).
async fn open_keyring(
    dir: &std::path::Path,
) -> Result<(coffer_server::store::SqlStore, keyring::Keyring)> {
    let data = DataDir::open(dir)?;
    let store = data.store().await?;
    let ring = data.keyring(&store).await?;
    Ok((store, ring))
}

async fn rotate_kek(args: &RotateArgs) -> Result<()> {
    let (store, ring) = open_keyring(&args.data.dir).await?;
    let rotation = keyring::rotate(&store, &ring, args.batch, |done| {
        eprintln!("re-wrapped {done} keys");
    })
    .await?;
    let detail = format!(
        "version {} ({}), {} keys re-wrapped",
        rotation.version,
        if rotation.added { "added" } else { "resumed" },
        rotation.rewrapped
    );
    audit::append(
        &store,
        &Event::new("admin", None, "kek_rotate", "").detail(detail.clone()),
    )
    .await?;
    crate::say!("KEK {detail}");
    Ok(())
}

async fn rotate_master_key(args: &crate::cli::RotateMasterKeyArgs) -> Result<()> {
    let data = DataDir::open(&args.data.dir)?;
    let store = data.store().await?;
    let rotation = data
        .rotate_master_key(&store, args.new_key_file.as_deref())
        .await?;
    let detail = if rotation.finished_earlier {
        "finished an interrupted rotation".to_string()
    } else {
        format!("{} KEK versions re-sealed", rotation.versions)
    };
    audit::append(
        &store,
        &Event::new("admin", None, "master_key_rotate", "").detail(detail.clone()),
    )
    .await?;
    crate::say!("master key replaced: {detail}");
    crate::say!("new key:             {}", rotation.key_file.display());
    eprintln!(
        "Every server must now use the new key: restart this one, and copy the key to every \
         other node (or its {}) and restart it. Database backups taken before now open only \
         with the old key. After a leaked key, run rotate-kek and then keys prune.",
        keyring::MASTER_KEY_ENV
    );
    Ok(())
}

async fn keys_command(command: &KeysCommand) -> Result<()> {
    match command {
        KeysCommand::Status(args) => {
            let (store, ring) = open_keyring(&args.data.dir).await?;
            let usage = store.kek_usage().await?;
            let locations = ring.locations();
            let location = |v: u32| locations.get(&v).cloned().unwrap_or_default();
            if args.json {
                let rows: Vec<_> = usage
                    .iter()
                    .map(|u| json!({"version": u.version, "created_at": u.created_at, "objects": u.objects, "uploads": u.uploads, "location": location(u.version)}))
                    .collect();
                crate::say!("{}", serde_json::Value::Array(rows));
            } else {
                crate::say!("new versions: {}", ring.active_provider());
                crate::say!("version\tcreated_at\tfile keys\tupload keys\tlocation");
                for u in usage {
                    crate::say!(
                        "{}\t{}\t{}\t{}\t{}",
                        u.version,
                        u.created_at,
                        u.objects,
                        u.uploads,
                        location(u.version)
                    );
                }
            }
        }
        KeysCommand::Prune(args) => {
            let (store, ring) = open_keyring(&args.data.dir).await?;
            let removed = keyring::prune(&store, &ring).await?;
            let detail = format!("removed versions {removed:?}");
            audit::append(
                &store,
                &Event::new("admin", None, "kek_prune", "").detail(detail.clone()),
            )
            .await?;
            crate::say!("{detail}");
        }
        KeysCommand::Migrate(args) => keys_migrate(args).await?,
    }
    Ok(())
}

async fn keys_migrate(args: &crate::cli::KeysMigrateArgs) -> Result<()> {
    let mut data = DataDir::open(&args.data.dir)?;
    // A running server would keep wrapping under the old version, and
    // could not open the new one until restarted with the new config.
    let _claim = data.claim(coffer_server::Claim::Alone)?;
    let store = data.store().await?;
    let settings = coffer_server::KeyringConfig {
        provider: coffer_server::KeyringProvider::Pkcs11,
        module: args.module.clone(),
        token: args.token.clone(),
        key_label: args.key_label.clone(),
        pin_file: args.pin_file.clone(),
    };
    let moved = data
        .move_keyring_into_token(&store, settings, args.batch, |done| {
            eprintln!("re-wrapped {done} keys");
        })
        .await?;
    let detail = format!(
        "token {}: version {} ({}), {} keys re-wrapped, master-key versions {:?} removed",
        args.token,
        moved.version,
        if moved.added {
            "added"
        } else {
            "already there"
        },
        moved.rewrapped,
        moved.removed
    );
    audit::append(
        &store,
        &Event::new("admin", None, "keyring_migrate", "").detail(detail.clone()),
    )
    .await?;
    crate::say!("keyring moved into the PKCS#11 {detail}");
    let key_file = data.path(&data.config.master_key_file);
    eprintln!(
        "config.toml now names the token. The master key is no longer used: remove {} from the server \
         (keep it offline only to open database backups taken before now), then start the server.",
        key_file.display()
    );
    Ok(())
}

async fn backup(args: &crate::cli::BackupArgs) -> Result<()> {
    let data = DataDir::open(&args.data.dir)?;
    let recipients = crate::identity_file::recipients(&args.recipients, &args.recipients_files)?;
    if recipients.is_empty() {
        bail!("no backup recipients: give -r coffer1… or -R FILE (a backup identity kept offline)");
    }
    let report =
        coffer_server::backup::backup(&data, &args.to, &recipients, !args.without_objects).await?;
    let manifest = &report.manifest;
    let store = data.store().await?;
    let detail = format!(
        "files={} objects={} bytes={} recipients={}",
        manifest.files,
        manifest.objects,
        report.bytes,
        recipients.len()
    );
    audit::append(
        &store,
        &Event::new("admin", None, "backup", &args.to.display().to_string()).detail(detail),
    )
    .await?;
    if args.json {
        crate::say!(
            "{}",
            json!({"file": args.to, "bytes": report.bytes, "files": manifest.files,
                "objects": manifest.objects, "missing_objects": report.missing_objects,
                "master_key": manifest.master_key, "token_versions": manifest.token_versions})
        );
    } else {
        crate::say!(
            "backup written: {} ({} bytes): {} files, {} objects, master key {}",
            args.to.display(),
            report.bytes,
            manifest.files,
            manifest.objects,
            if manifest.master_key {
                "inside"
            } else {
                "not needed"
            }
        );
    }
    if report.missing_objects > 0 {
        eprintln!(
            "{} object(s) were deleted between the snapshot and their copy (files removed meanwhile)",
            report.missing_objects
        );
    }
    if !manifest.token_versions.is_empty() {
        eprintln!(
            "KEK versions {:?} are in the PKCS#11 token, not in the backup: a restore needs the token (or the vendor's backup of it).",
            manifest.token_versions
        );
    }
    Ok(())
}

async fn restore(args: &crate::cli::RestoreArgs) -> Result<()> {
    let identity = crate::identity_file::load(args.identity.path.as_deref())?;
    let expected = args
        .server_identity
        .as_deref()
        .map(PublicIdentity::parse)
        .transpose()
        .context("--server-identity")?;
    let report =
        coffer_server::backup::restore(&args.from, identity, &args.data.dir, expected).await?;
    let data = DataDir::open(&args.data.dir)?;
    let store = data.store().await?;
    // The keyring must open, or the restore is not usable.
    data.keyring(&store)
        .await
        .context("the restored keyring does not open")?;
    audit::append(
        &store,
        &Event::new("admin", None, "restore", &args.from.display().to_string())
            .detail(format!("objects={}", report.objects)),
    )
    .await?;
    crate::say!(
        "restored {} into {}: {} files, {} objects written",
        args.from.display(),
        args.data.dir.display(),
        report.manifest.files,
        report.objects
    );
    if let Some(key) = &report.master_key_file {
        eprintln!(
            "The master key is in {} (0600): keep it apart from the data directory.",
            key.display()
        );
    }
    Ok(())
}

async fn migrate_store(args: &crate::cli::MigrateStoreArgs) -> Result<()> {
    use coffer_server::migrate;
    use coffer_server::store::{Database, SqlStore};
    if args.to.database.is_none() && args.to.s3_bucket.is_none() {
        bail!("say where to: --database and/or --s3-bucket");
    }
    let data = DataDir::open(&args.data.dir)?;
    // Anything a server wrote behind the copy would be lost with the move.
    let _claim = data.claim(coffer_server::Claim::Alone)?;
    let mut target = data.config.clone();
    apply_storage_args(&mut target, &args.to);
    if target.database == data.config.database && target.objects == data.config.objects {
        bail!("the destination is the storage already in use");
    }
    let sides = migrate::Sides {
        source: (data.store().await?, data.objects().await?),
        dest: (
            SqlStore::open(&Database::parse(&target.database, &data.root))
                .await
                .context("cannot open the destination database")?,
            data.objects_for(&target)
                .await
                .context("cannot open the destination object store")?,
        ),
    };
    let report = migrate::migrate(&sides, |id, size| {
        eprintln!("object {id}: {size} bytes verified");
    })
    .await?;
    audit::append(
        &sides.dest.0,
        &Event::new("admin", None, "store_migrate", "").detail(format!(
            "{} objects copied, {} already present",
            report.objects_copied, report.objects_present
        )),
    )
    .await?;
    crate::say!(
        "objects: {} copied ({} bytes), {} already in place; all verified",
        report.objects_copied,
        report.bytes_copied,
        report.objects_present
    );
    for (table, rows) in &report.rows {
        crate::say!("{table}: {rows} rows");
    }
    if report.uploads_left > 0 {
        crate::say!(
            "{} unfinished uploads were not moved; their clients start them again",
            report.uploads_left
        );
    }
    if args.keep_config {
        crate::say!("config.toml unchanged (--keep-config)");
    } else {
        data.rewrite_config(&migrate::retarget(&data.config, &target))?;
        crate::say!("config.toml now points at the new storage (the old one is config.toml.old)");
        if coffer_server::config::withhold_password(&target.database).is_some() {
            crate::say!(
                "the database password was not written to config.toml: give the server the URL in COFFER_DATABASE (or use PGPASSWORD or ~/.pgpass)"
            );
        }
    }
    Ok(())
}
