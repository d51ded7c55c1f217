//! The PKCS#11 provider: each KEK version is an AES-256 key generated
//! inside a token (an HSM, or SoftHSM2 for tests), marked sensitive and
//! non-extractable, so it never leaves the token. DEKs are wrapped and
//! unwrapped by the token with `CKM_AES_GCM`: a random 96-bit nonce drawn
//! here, the file or upload id and the version as AAD, a 128-bit tag. The
//! wraps have the same form as the master-key provider's, so the rest of
//! the server cannot tell them apart.
//!
//! The `keks` record of a version is
//!
//! ```text
//! "coffer-pkcs11\0" || key label || 0 || check
//! check = nonce || AES-256-GCM(token key, nonce, aad = kek aad(version), "coffer/v1/kek-check")
//! ```
//!
//! The label finds the key; the check proves it is the key the version was
//! made with (a record edited to name another key fails to open). Labels
//! carry a random suffix, so two nodes creating the same version at once,
//! or a creation that crashed before its row was written, never make two
//! keys that one record could mean.
//!
//! The `cryptoki` crate does the calls (`unsafe` FFI lives there, not in
//! this crate). One session serves all wraps behind a mutex; a token that
//! drops the session (a network HSM restarting) is logged into again once
//! per failed call.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};

use anyhow::{Context, Result, anyhow, bail};
use cryptoki::context::{CInitializeArgs, CInitializeFlags, Function, Pkcs11};
use cryptoki::error::{Error as CkError, RvError};
use cryptoki::mechanism::Mechanism;
use cryptoki::mechanism::aead::GcmParams;
use cryptoki::object::{Attribute, AttributeType, KeyType, ObjectClass, ObjectHandle};
use cryptoki::session::{Session, UserType};
use cryptoki::slot::Slot;
use cryptoki::types::AuthPin;
use zeroize::Zeroizing;

use super::{Kek, KekProvider, Key, kek_aad};
use crate::config::KeyringConfig;

/// How a token record starts.
pub const RECORD_PREFIX: &[u8] = b"coffer-pkcs11\0";
/// Environment variable holding the token's user PIN.
pub const PIN_ENV: &str = "COFFER_PKCS11_PIN";
/// The PIN's name among systemd credentials.
pub const PIN_CREDENTIAL: &str = "coffer-pkcs11-pin";

const CHECK_PLAINTEXT: &[u8] = b"coffer/v1/kek-check";
const NONCE_LEN: usize = 12;
const TAG_BITS: u64 = 128;

/// An open, logged-in session on the configured token.
struct Token {
    context: Pkcs11,
    slot: Slot,
    pin: AuthPin,
    label: String,
    session: Mutex<Session>,
}

/// One initialised library per module path in this process: PKCS#11
/// allows `C_Initialize` once per process, and finalising it under another
/// user of the same module would close that user's sessions.
fn context(module: &Path) -> Result<Pkcs11> {
    static CONTEXTS: OnceLock<Mutex<HashMap<PathBuf, Pkcs11>>> = OnceLock::new();
    let mut contexts = CONTEXTS
        .get_or_init(Default::default)
        .lock()
        .unwrap_or_else(|p| p.into_inner());
    if let Some(context) = contexts.get(module) {
        return Ok(context.clone());
    }
    let context = Pkcs11::new(module)
        .with_context(|| format!("cannot load the PKCS#11 module {}", module.display()))?;
    match context.initialize(CInitializeArgs::new(CInitializeFlags::OS_LOCKING_OK)) {
        Ok(())
        | Err(CkError::Pkcs11(RvError::CryptokiAlreadyInitialized, Function::Initialize)) => {}
        Err(err) => return Err(err).context("the PKCS#11 module failed to initialise"),
    }
    contexts.insert(module.to_path_buf(), context.clone());
    Ok(context)
}

impl Token {
    fn connect(module: &Path, label: &str, pin: AuthPin) -> Result<Self> {
        let context = context(module)?;
        let slot = find_slot(&context, label)?;
        let session = login(&context, slot, &pin)?;
        Ok(Self {
            context,
            slot,
            pin,
            label: label.to_string(),
            session: Mutex::new(session),
        })
    }

    /// Runs `call` on the session; if the token lost it, logs in once more
    /// and tries again.
    fn with_session<T>(&self, call: impl Fn(&Session) -> cryptoki::error::Result<T>) -> Result<T> {
        let mut session = self.session.lock().unwrap_or_else(|p| p.into_inner());
        match call(&session) {
            Ok(value) => Ok(value),
            Err(err) if session_lost(&err) => {
                tracing::warn!(
                    "the PKCS#11 session on token {} was lost ({err}); logging in again",
                    self.label
                );
                *session = login(&self.context, self.slot, &self.pin)?;
                call(&session).map_err(|err| anyhow!("PKCS#11 token {}: {err}", self.label))
            }
            Err(err) => Err(anyhow!("PKCS#11 token {}: {err}", self.label)),
        }
    }

    fn find_key(&self, label: &str) -> Result<ObjectHandle> {
        let template = [
            Attribute::Class(ObjectClass::SECRET_KEY),
            Attribute::KeyType(KeyType::AES),
            Attribute::Label(label.as_bytes().to_vec()),
        ];
        let found = self.with_session(|s| s.find_objects(&template))?;
        match found.as_slice() {
            [key] => Ok(*key),
            [] => bail!("token {} holds no key labelled {label}", self.label),
            _ => bail!("token {} holds several keys labelled {label}", self.label),
        }
    }

    /// A fresh AES-256 key that cannot leave the token.
    fn generate_key(&self, label: &str, id: &[u8]) -> Result<ObjectHandle> {
        let template = [
            Attribute::Token(true),
            Attribute::Private(true),
            Attribute::Sensitive(true),
            Attribute::Extractable(false),
            Attribute::Modifiable(false),
            Attribute::Encrypt(true),
            Attribute::Decrypt(true),
            Attribute::Wrap(false),
            Attribute::Unwrap(false),
            Attribute::Derive(false),
            Attribute::Sign(false),
            Attribute::Verify(false),
            Attribute::ValueLen(32.into()),
            Attribute::Label(label.as_bytes().to_vec()),
            Attribute::Id(id.to_vec()),
        ];
        self.with_session(|s| s.generate_key(&Mechanism::AesKeyGen, &template))
            .context("generating a key in the token failed")
    }

    /// The attributes that keep a key inside the token.
    fn protection(&self, key: ObjectHandle) -> Result<KeyProtection> {
        let attributes = self.with_session(|s| {
            s.get_attributes(
                key,
                &[
                    AttributeType::Sensitive,
                    AttributeType::Extractable,
                    AttributeType::NeverExtractable,
                    AttributeType::ValueLen,
                ],
            )
        })?;
        let mut protection = KeyProtection::default();
        for attribute in attributes {
            match attribute {
                Attribute::Sensitive(v) => protection.sensitive = v,
                Attribute::Extractable(v) => protection.extractable = v,
                Attribute::NeverExtractable(v) => protection.never_extractable = v,
                Attribute::ValueLen(v) => protection.bytes = u64::from(v),
                _ => {}
            }
        }
        Ok(protection)
    }

    fn seal(&self, key: ObjectHandle, aad: &[u8], plain: &[u8]) -> Result<Vec<u8>> {
        let mut nonce = [0u8; NONCE_LEN];
        aws_lc_rs::rand::fill(&mut nonce).map_err(|_| anyhow!("random number generator failed"))?;
        let body = self.with_session(|s| {
            let mut iv = nonce;
            let params = GcmParams::new(&mut iv, aad, TAG_BITS.into())?;
            s.encrypt(&Mechanism::AesGcm(params), key, plain)
        })?;
        let mut sealed = nonce.to_vec();
        sealed.extend_from_slice(&body);
        Ok(sealed)
    }

    fn open(&self, key: ObjectHandle, aad: &[u8], sealed: &[u8]) -> Option<Zeroizing<Vec<u8>>> {
        let (nonce, body) = sealed.split_at_checked(NONCE_LEN)?;
        let nonce: [u8; NONCE_LEN] = nonce.try_into().ok()?;
        self.with_session(|s| {
            let mut iv = nonce;
            let params = GcmParams::new(&mut iv, aad, TAG_BITS.into())?;
            s.decrypt(&Mechanism::AesGcm(params), key, body)
        })
        .ok()
        .map(Zeroizing::new)
    }
}

fn find_slot(context: &Pkcs11, label: &str) -> Result<Slot> {
    for slot in context.get_slots_with_token()? {
        if context.get_token_info(slot)?.label().trim_end() == label {
            return Ok(slot);
        }
    }
    bail!("no PKCS#11 token labelled {label:?} (is it initialised, and is this the right module?)")
}

fn login(context: &Pkcs11, slot: Slot, pin: &AuthPin) -> Result<Session> {
    let session = context.open_rw_session(slot)?;
    match session.login(UserType::User, Some(pin)) {
        Ok(()) | Err(CkError::Pkcs11(RvError::UserAlreadyLoggedIn, _)) => Ok(session),
        Err(CkError::Pkcs11(RvError::PinIncorrect, _)) => bail!("the PKCS#11 PIN is wrong"),
        Err(err) => Err(err).context("logging in to the PKCS#11 token failed"),
    }
}

fn session_lost(err: &CkError) -> bool {
    matches!(
        err,
        CkError::Pkcs11(
            RvError::SessionHandleInvalid
                | RvError::SessionClosed
                | RvError::UserNotLoggedIn
                | RvError::DeviceRemoved
                | RvError::TokenNotPresent,
            _
        )
    )
}

/// What the token says about a key.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct KeyProtection {
    /// CKA_SENSITIVE.
    pub sensitive: bool,
    /// CKA_EXTRACTABLE.
    pub extractable: bool,
    /// CKA_NEVER_EXTRACTABLE.
    pub never_extractable: bool,
    /// CKA_VALUE_LEN.
    pub bytes: u64,
}

/// KEKs inside a PKCS#11 token.
pub struct Pkcs11Provider {
    token: Arc<Token>,
    key_label: String,
}

impl Pkcs11Provider {
    /// Loads the module, finds the token and logs in with the PIN from
    /// [`PIN_ENV`], the systemd credential [`PIN_CREDENTIAL`], or
    /// `pin_file` (relative to `data_root`).
    pub fn open(config: &KeyringConfig, data_root: &Path) -> Result<Self> {
        if config.module.as_os_str().is_empty() || config.token.is_empty() {
            bail!("[keyring] provider = \"pkcs11\" needs module and token");
        }
        let pin = read_pin(config, data_root)?;
        let token = Token::connect(&config.module, &config.token, pin)?;
        Ok(Self {
            token: Arc::new(token),
            key_label: config.key_label.clone(),
        })
    }

    /// What protects the key of a token record.
    pub fn protection(&self, record: &[u8]) -> Result<KeyProtection> {
        let (label, _) = parse_record(record)?;
        self.token.protection(self.token.find_key(label)?)
    }
}

fn read_pin(config: &KeyringConfig, data_root: &Path) -> Result<AuthPin> {
    if let Ok(pin) = std::env::var(PIN_ENV) {
        return Ok(AuthPin::from(pin));
    }
    let credential = std::env::var_os("CREDENTIALS_DIRECTORY")
        .map(|dir| Path::new(&dir).join(PIN_CREDENTIAL))
        .filter(|path| path.exists());
    let Some(path) = credential.or_else(|| config.pin_file.as_ref().map(|p| data_root.join(p)))
    else {
        bail!(
            "no PKCS#11 PIN: set {PIN_ENV}, pass the systemd credential {PIN_CREDENTIAL}, or set [keyring] pin_file"
        );
    };
    let text = Zeroizing::new(
        std::fs::read_to_string(&path)
            .with_context(|| format!("cannot read the PKCS#11 PIN from {}", path.display()))?,
    );
    Ok(AuthPin::from(
        text.trim_end_matches(['\n', '\r']).to_string(),
    ))
}

fn parse_record(record: &[u8]) -> Result<(&str, &[u8])> {
    let rest = record
        .strip_prefix(RECORD_PREFIX)
        .ok_or_else(|| anyhow!("not a PKCS#11 keyring record"))?;
    let end = rest
        .iter()
        .position(|b| *b == 0)
        .ok_or_else(|| anyhow!("a PKCS#11 keyring record has no label"))?;
    let label = std::str::from_utf8(&rest[..end])
        .map_err(|_| anyhow!("a PKCS#11 keyring record's label is not UTF-8"))?;
    Ok((label, &rest[end + 1..]))
}

impl KekProvider for Pkcs11Provider {
    fn name(&self) -> String {
        format!("PKCS#11 token {}", self.token.label)
    }

    fn owns(&self, record: &[u8]) -> bool {
        record.starts_with(RECORD_PREFIX)
    }

    fn create(&self, version: u32) -> Result<Vec<u8>> {
        let mut suffix = [0u8; 4];
        aws_lc_rs::rand::fill(&mut suffix)
            .map_err(|_| anyhow!("random number generator failed"))?;
        let label = format!("{}-v{version}-{}", self.key_label, hex(&suffix));
        let key = self.token.generate_key(&label, &version.to_be_bytes())?;
        let check = self.token.seal(key, &kek_aad(version), CHECK_PLAINTEXT)?;
        let mut record = RECORD_PREFIX.to_vec();
        record.extend_from_slice(label.as_bytes());
        record.push(0);
        record.extend_from_slice(&check);
        Ok(record)
    }

    fn open(&self, version: u32, record: &[u8]) -> Result<Arc<dyn Kek>> {
        let (label, check) = parse_record(record)?;
        let key = self.token.find_key(label)?;
        let opened = self.token.open(key, &kek_aad(version), check);
        if opened.as_deref().map(Vec::as_slice) != Some(CHECK_PLAINTEXT) {
            bail!(
                "the key {label} in token {} is not KEK version {version} (the keyring record was altered)",
                self.token.label
            );
        }
        let protection = self.token.protection(key)?;
        if protection.extractable || !protection.sensitive || protection.bytes != 32 {
            bail!(
                "the key {label} in token {} can leave the token or is not AES-256 ({protection:?}): refusing to use it",
                self.token.label
            );
        }
        Ok(Arc::new(TokenKek {
            token: self.token.clone(),
            key,
            label: label.to_string(),
        }))
    }

    fn destroy(&self, _version: u32, record: &[u8]) -> Result<()> {
        let (label, _) = parse_record(record)?;
        let key = self.token.find_key(label)?;
        self.token.with_session(|s| s.destroy_object(key))
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// One KEK version inside the token.
struct TokenKek {
    token: Arc<Token>,
    key: ObjectHandle,
    label: String,
}

impl Kek for TokenKek {
    fn seal(&self, aad: &[u8], key: &Key) -> Result<Vec<u8>> {
        self.token.seal(self.key, aad, key.as_ref())
    }

    fn open(&self, aad: &[u8], sealed: &[u8]) -> Option<Key> {
        let plain = self.token.open(self.key, aad, sealed)?;
        let key: [u8; 32] = plain.as_slice().try_into().ok()?;
        Some(Zeroizing::new(key))
    }

    fn location(&self) -> String {
        format!(
            "PKCS#11 token {}, key {} (non-extractable)",
            self.token.label, self.label
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_parse_and_refuse_malformed_ones() {
        let mut record = RECORD_PREFIX.to_vec();
        record.extend_from_slice(b"coffer-kek-v3-00112233\0check");
        assert_eq!(
            parse_record(&record).unwrap(),
            ("coffer-kek-v3-00112233", &b"check"[..])
        );
        assert!(parse_record(b"coffer-pkcs11\0no-end").is_err());
        assert!(parse_record(b"something else").is_err());
        assert!(parse_record(b"coffer-pkcs11\0\xff\xfe\0x").is_err());
    }
}
