//! TLS 1.3 to a coffer server, with the certificate either pinned by
//! fingerprint (self-signed servers, like ssh known_hosts), or verified
//! against the system's CA roots (servers with a CA-signed certificate, so
//! renewals need nothing from clients) or a given CA file, and optionally a
//! client certificate (mTLS).

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use rustls::DigitallySignedStruct;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};

use crate::{Error, Result};

/// How the server's certificate is trusted.
#[derive(Clone, Debug)]
pub enum Trust {
    /// Accept exactly the certificate with this `SHA256:…` fingerprint.
    Pinned(String),
    /// Accept whatever certificate is presented and report its fingerprint,
    /// so the caller can show it for confirmation before sending anything
    /// that matters (first contact only).
    FirstUse,
    /// Verify the chain against the CA certificates in this PEM file, and
    /// the host name.
    Ca(PathBuf),
    /// Verify the chain against the system's CA roots (and the host name),
    /// as a browser does: a server whose certificate a public or company
    /// CA signed, renewed as often as it likes. `SSL_CERT_FILE` and
    /// `SSL_CERT_DIR` override where the roots are read from.
    System,
}

/// A client certificate and key (PEM files), for servers requiring mTLS.
#[derive(Clone, Debug)]
pub struct ClientCert {
    /// Certificate chain.
    pub cert: PathBuf,
    /// Private key.
    pub key: PathBuf,
}

pub(crate) fn provider() -> Arc<CryptoProvider> {
    // The post-quantum hybrid group first (as the server prefers it), so
    // sessions are safe against recording now and decrypting later.
    use rustls::crypto::aws_lc_rs::kx_group;
    let mut provider = rustls::crypto::aws_lc_rs::default_provider();
    provider.kx_groups = vec![
        kx_group::X25519MLKEM768,
        kx_group::X25519,
        kx_group::SECP256R1,
    ];
    Arc::new(provider)
}

/// What the handshake saw: the leaf certificate's fingerprint.
#[derive(Debug, Default)]
pub(crate) struct Seen(Mutex<Option<String>>);

impl Seen {
    pub(crate) fn fingerprint(&self) -> Option<String> {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }
}

/// Accepts the pinned certificate, or any (recording it) on first use.
/// The TLS 1.3 handshake signature is still checked with the provider, so
/// the server must hold the key of the certificate it shows.
#[derive(Debug)]
struct PinVerifier {
    pin: Option<String>,
    seen: Arc<Seen>,
    provider: Arc<CryptoProvider>,
}

impl ServerCertVerifier for PinVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let presented = coffer_proto::fingerprint::certificate(end_entity.as_ref());
        *self.seen.0.lock().unwrap_or_else(|p| p.into_inner()) = Some(presented.clone());
        match &self.pin {
            Some(pin) if !coffer_proto::fingerprint::same(pin, &presented) => {
                Err(rustls::Error::InvalidCertificate(
                    rustls::CertificateError::ApplicationVerificationFailure,
                ))
            }
            _ => Ok(ServerCertVerified::assertion()),
        }
    }

    fn verify_tls12_signature(
        &self,
        _message: &[u8],
        _cert: &CertificateDer<'_>,
        _dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        // Only TLS 1.3 is offered, so this is never reached.
        Err(rustls::Error::PeerIncompatible(
            rustls::PeerIncompatible::Tls12NotOffered,
        ))
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

/// The system roots' verdict, recording the certificate it was given (so a
/// login can say which certificate it trusted).
#[derive(Debug)]
struct SystemVerifier {
    inner: rustls_platform_verifier::Verifier,
    seen: Arc<Seen>,
}

impl ServerCertVerifier for SystemVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let presented = coffer_proto::fingerprint::certificate(end_entity.as_ref());
        *self.seen.0.lock().unwrap_or_else(|p| p.into_inner()) = Some(presented);
        self.inner
            .verify_server_cert(end_entity, intermediates, server_name, ocsp, now)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}

/// A rustls configuration for one server, plus what its handshakes saw.
pub(crate) fn client_config(
    trust: &Trust,
    client_cert: Option<&ClientCert>,
) -> Result<(Arc<rustls::ClientConfig>, Arc<Seen>)> {
    let provider = provider();
    let seen = Arc::new(Seen::default());
    let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(|e| Error::Usage(format!("TLS setup: {e}")))?;
    let builder = match trust {
        Trust::Pinned(pin) => builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(PinVerifier {
                pin: Some(pin.clone()),
                seen: seen.clone(),
                provider,
            })),
        Trust::FirstUse => builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(PinVerifier {
                pin: None,
                seen: seen.clone(),
                provider,
            })),
        Trust::Ca(path) => {
            let mut roots = rustls::RootCertStore::empty();
            for cert in read_certs(path)? {
                roots
                    .add(cert)
                    .map_err(|e| Error::Usage(format!("{}: {e}", path.display())))?;
            }
            builder.with_root_certificates(roots)
        }
        Trust::System => {
            let inner = rustls_platform_verifier::Verifier::new(provider)
                .map_err(|e| Error::Usage(format!("the system's CA roots: {e}")))?;
            builder
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(SystemVerifier {
                    inner,
                    seen: seen.clone(),
                }))
        }
    };
    let mut config = match client_cert {
        None => builder.with_no_client_auth(),
        Some(client) => {
            let chain = read_certs(&client.cert)?;
            let key = PrivateKeyDer::from_pem_file(&client.key)
                .map_err(|e| Error::Usage(format!("{}: {e}", client.key.display())))?;
            builder
                .with_client_auth_cert(chain, key)
                .map_err(|e| Error::Usage(format!("client certificate: {e}")))?
        }
    };
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok((Arc::new(config), seen))
}

fn read_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>> {
    let certs = CertificateDer::pem_file_iter(path)
        .and_then(|iter| iter.collect::<Result<Vec<_>, _>>())
        .map_err(|e| Error::Usage(format!("{}: {e}", path.display())))?;
    if certs.is_empty() {
        return Err(Error::Usage(format!(
            "no certificate in {}",
            path.display()
        )));
    }
    Ok(certs)
}

/// The `SHA256:…` fingerprint of the first certificate in a PEM file, as
/// `coffer server init` prints it.
pub fn certificate_fingerprint(path: &Path) -> Result<String> {
    let certs = read_certs(path)?;
    Ok(coffer_proto::fingerprint::certificate(certs[0].as_ref()))
}
