//! TLS 1.3 only, rustls with the aws-lc-rs provider.
//!
//! The provider is passed explicitly to every config (and installed as the
//! process default by [`install_provider`]) so a second provider pulled in
//! by a dependency cannot make rustls pick, or panic over, the wrong one.

use std::path::Path;
use std::sync::Arc;

use anyhow::{Context, Result};
use rustls::ServerConfig;
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
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
/// presenting `certificate`. With `clients`, every client must present a
/// certificate it accepts (mTLS); this is in addition to, not instead of,
/// the key-based login.
pub fn server_config(
    certificate: Arc<Certificate>,
    clients: Option<Arc<ClientTrust>>,
) -> Result<Arc<ServerConfig>> {
    let builder = ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .context("TLS 1.3 unavailable")?;
    let builder = match clients {
        None => builder.with_no_client_auth(),
        Some(clients) => builder.with_client_cert_verifier(clients),
    };
    let mut config = builder.with_cert_resolver(certificate);
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// Which client certificates the server accepts (mTLS): those chaining to
/// a CA certificate in the `client_ca` file and, with `client_crl`, not
/// revoked by a CRL in that file. The CRL file is read again on
/// [`ClientTrust::reload`] (the server does so on SIGHUP), so a revocation
/// takes effect without a restart; a reload that fails keeps the lists in
/// use.
///
/// Fail closed: with CRLs, a certificate whose issuer has no CRL in the
/// file, or a CRL past its `nextUpdate`, is refused (rustls' defaults for
/// unknown status, plus `enforce_revocation_expiration`), so a CRL refresh
/// job that stops working is noticed rather than silently trusted.
#[derive(Debug)]
pub struct ClientTrust {
    roots: Arc<rustls::RootCertStore>,
    ca: std::path::PathBuf,
    crl: Option<std::path::PathBuf>,
    /// The CA names offered to clients: the CA file is not reloaded, so
    /// these stay true.
    hints: Vec<rustls::DistinguishedName>,
    current: std::sync::RwLock<Arc<dyn ClientCertVerifier>>,
}

/// The client trust `client_ca` and `client_crl` (full paths) describe:
/// none without a CA; CRLs without a CA are a configuration error.
pub fn client_trust(ca: Option<&Path>, crl: Option<&Path>) -> Result<Option<Arc<ClientTrust>>> {
    match (ca, crl) {
        (None, None) => Ok(None),
        (None, Some(_)) => anyhow::bail!(
            "client_crl is set without client_ca: revocation lists need the CA they belong to"
        ),
        (Some(ca), crl) => ClientTrust::load(ca, crl).map(Some),
    }
}

impl ClientTrust {
    /// Reads the CA certificates and, if given, the CRLs.
    pub fn load(ca: &Path, crl: Option<&Path>) -> Result<Arc<Self>> {
        let mut roots = rustls::RootCertStore::empty();
        for cert in load_chain(ca)? {
            roots
                .add(cert)
                .with_context(|| format!("unusable CA certificate in {}", ca.display()))?;
        }
        let roots = Arc::new(roots);
        let verifier = verifier(&roots, ca, crl)?;
        Ok(Arc::new(Self {
            hints: verifier.root_hint_subjects().to_vec(),
            current: std::sync::RwLock::new(verifier),
            roots,
            ca: ca.to_path_buf(),
            crl: crl.map(Path::to_path_buf),
        }))
    }

    /// Whether there is a CRL file to reload.
    pub fn has_crl(&self) -> bool {
        self.crl.is_some()
    }

    /// Reads the CRL file again; new handshakes are checked against it.
    pub fn reload(&self) -> Result<()> {
        let fresh = verifier(&self.roots, &self.ca, self.crl.as_deref())?;
        *self.current.write().unwrap_or_else(|p| p.into_inner()) = fresh;
        Ok(())
    }

    fn now(&self) -> Arc<dyn ClientCertVerifier> {
        self.current
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }
}

fn verifier(
    roots: &Arc<rustls::RootCertStore>,
    ca: &Path,
    crl: Option<&Path>,
) -> Result<Arc<dyn ClientCertVerifier>> {
    let mut builder =
        rustls::server::WebPkiClientVerifier::builder_with_provider(roots.clone(), provider());
    if let Some(crl) = crl {
        let lists = rustls_pki_types::CertificateRevocationListDer::pem_file_iter(crl)
            .with_context(|| format!("cannot read CRLs {}", crl.display()))?
            .collect::<Result<Vec<_>, _>>()
            .with_context(|| format!("cannot read CRLs {}", crl.display()))?;
        if lists.is_empty() {
            anyhow::bail!("no CRL in {}", crl.display());
        }
        builder = builder.with_crls(lists).enforce_revocation_expiration();
    }
    builder
        .build()
        .with_context(|| format!("cannot use {} as client CA", ca.display()))
}

impl ClientCertVerifier for ClientTrust {
    fn root_hint_subjects(&self) -> &[rustls::DistinguishedName] {
        &self.hints
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: rustls_pki_types::UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        self.now()
            .verify_client_cert(end_entity, intermediates, now)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        self.now().verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        self.now().verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.now().supported_verify_schemes()
    }
}
