//! TLS 1.3 only, rustls with the aws-lc-rs provider.
//!
//! The provider is passed explicitly to every config (and installed as the
//! process default by [`install_provider`]) so a second provider pulled in
//! by a dependency cannot make rustls pick, or panic over, the wrong one.

use std::path::Path;
use std::sync::Arc;

use anyhow::{Context, Result};
use rustls::ServerConfig;
use rustls::sign::CertifiedKey;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

pub use coffer_proto::login::LOGIN_EXPORTER_LABEL;

/// The crypto provider coffer uses everywhere: aws-lc-rs, with the
/// post-quantum hybrid key exchange X25519MLKEM768 preferred (a session
/// recorded today stays confidential if one of ML-KEM-768 and X25519 holds),
/// and X25519 / P-256 after it for clients without it.
pub fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    use rustls::crypto::aws_lc_rs::kx_group;
    let mut provider = rustls::crypto::aws_lc_rs::default_provider();
    provider.kx_groups = vec![
        kx_group::X25519MLKEM768,
        kx_group::X25519,
        kx_group::SECP256R1,
    ];
    Arc::new(provider)
}

/// Makes [`provider`] the process-wide default; harmless if already done.
pub fn install_provider() {
    let _ = Arc::unwrap_or_clone(provider()).install_default();
}

/// A self-signed certificate for `names` (DNS names or IP addresses), as PEM
/// (certificate, private key).
pub fn self_signed(names: &[String]) -> Result<(String, String)> {
    let certified = rcgen::generate_simple_self_signed(names.to_vec())
        .context("cannot generate a self-signed certificate")?;
    Ok((certified.cert.pem(), certified.signing_key.serialize_pem()))
}

/// Reads a PEM certificate chain.
pub fn load_chain(path: &Path) -> Result<Vec<CertificateDer<'static>>> {
    let chain = CertificateDer::pem_file_iter(path)
        .with_context(|| format!("cannot read {}", path.display()))?
        .collect::<Result<Vec<_>, _>>()
        .with_context(|| format!("bad certificate in {}", path.display()))?;
    anyhow::ensure!(!chain.is_empty(), "no certificate in {}", path.display());
    Ok(chain)
}

/// `SHA256:<base64>` of the leaf certificate's DER, the value clients pin.
pub fn fingerprint(leaf: &CertificateDer<'_>) -> String {
    coffer_proto::fingerprint::certificate(leaf.as_ref())
}

/// The certificate the server presents, read from its two PEM files and
/// read again on [`Certificate::reload`] (the server does so on SIGHUP), so
/// a renewed certificate (a CA-signed one from an ACME client, say) is
/// served without a restart. A handshake takes the certificate current when
/// it starts; connections already open keep theirs, so none is dropped. A
/// reload that fails (a half-written file, a key that does not match) keeps
/// the certificate in use.
#[derive(Debug)]
pub struct Certificate {
    cert: std::path::PathBuf,
    key: std::path::PathBuf,
    current: std::sync::RwLock<Arc<CertifiedKey>>,
}

impl Certificate {
    /// Reads the certificate chain and key.
    pub fn load(cert: &Path, key: &Path) -> Result<Arc<Self>> {
        Ok(Arc::new(Self {
            current: std::sync::RwLock::new(Arc::new(certified(cert, key)?)),
            cert: cert.to_path_buf(),
            key: key.to_path_buf(),
        }))
    }

    /// Reads the files again; on success new handshakes present the new
    /// certificate. Returns its fingerprint.
    pub fn reload(&self) -> Result<String> {
        let fresh = Arc::new(certified(&self.cert, &self.key)?);
        let fingerprint = fingerprint(&fresh.cert[0]);
        *self.current.write().unwrap_or_else(|p| p.into_inner()) = fresh;
        Ok(fingerprint)
    }

    /// The fingerprint of the certificate presented now.
    pub fn fingerprint(&self) -> String {
        fingerprint(&self.now().cert[0])
    }

    fn now(&self) -> Arc<CertifiedKey> {
        self.current
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }
}

impl rustls::server::ResolvesServerCert for Certificate {
    fn resolve(&self, _hello: rustls::server::ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.now())
    }
}

/// A chain and its key, checked to belong together.
fn certified(cert: &Path, key: &Path) -> Result<CertifiedKey> {
    let chain = load_chain(cert)?;
    let der = PrivateKeyDer::from_pem_file(key)
        .with_context(|| format!("cannot read key {}", key.display()))?;
    let signing = provider()
        .key_provider
        .load_private_key(der)
        .with_context(|| format!("unusable key {}", key.display()))?;
    let certified = CertifiedKey::new(chain, signing);
    certified
        .keys_match()
        .with_context(|| format!("{} and {} do not match", cert.display(), key.display()))?;
    Ok(certified)
}

/// The server's rustls configuration: TLS 1.3 only, HTTP/1.1 via ALPN,
/// presenting `certificate`. With `client_ca`, every client must present a
/// certificate chaining to one of the CA certificates in that PEM file
/// (mTLS); this is in addition to, not instead of, the key-based login.
pub fn server_config(
    certificate: Arc<Certificate>,
    client_ca: Option<&Path>,
) -> Result<Arc<ServerConfig>> {
    let builder = ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .context("TLS 1.3 unavailable")?;
    let builder = match client_ca {
        None => builder.with_no_client_auth(),
        Some(path) => builder.with_client_cert_verifier(client_verifier(path)?),
    };
    let mut config = builder.with_cert_resolver(certificate);
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// Verifies client certificates against the CA certificates in `path`.
fn client_verifier(path: &Path) -> Result<Arc<dyn rustls::server::danger::ClientCertVerifier>> {
    let mut roots = rustls::RootCertStore::empty();
    for ca in load_chain(path)? {
        roots
            .add(ca)
            .with_context(|| format!("unusable CA certificate in {}", path.display()))?;
    }
    rustls::server::WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider())
        .build()
        .with_context(|| format!("cannot use {} as client CA", path.display()))
}
