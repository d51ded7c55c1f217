//! TLS 1.3 only, rustls with the aws-lc-rs provider.
//!
//! The provider is passed explicitly to every config (and installed as the
//! process default by [`install_provider`]) so a second provider pulled in
//! by a dependency cannot make rustls pick, or panic over, the wrong one.

use std::path::Path;
use std::sync::Arc;

use anyhow::{Context, Result};
use rustls::ServerConfig;
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

/// The server's rustls configuration: TLS 1.3 only, HTTP/1.1 via ALPN.
/// With `client_ca`, every client must present a certificate chaining to
/// one of the CA certificates in that PEM file (mTLS); this is in addition
/// to, not instead of, the key-based login.
pub fn server_config(
    cert: &Path,
    key: &Path,
    client_ca: Option<&Path>,
) -> Result<Arc<ServerConfig>> {
    let chain = load_chain(cert)?;
    let key = PrivateKeyDer::from_pem_file(key)
        .with_context(|| format!("cannot read key {}", key.display()))?;
    let builder = ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .context("TLS 1.3 unavailable")?;
    let builder = match client_ca {
        None => builder.with_no_client_auth(),
        Some(path) => builder.with_client_cert_verifier(client_verifier(path)?),
    };
    let mut config = builder
        .with_single_cert(chain, key)
        .context("certificate and key do not match")?;
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
