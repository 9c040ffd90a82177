//! rustls configurations (ring provider) for every connection the node makes
//! or accepts: all of them pin the cluster CA.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use anyhow::{anyhow, Context as _};
use globular_cluster::pki;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::{ResolvesClientCert, WebPkiServerVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::server::{ClientHello, ResolvesServerCert, WebPkiClientVerifier};
use rustls::sign::CertifiedKey;
use rustls::{DigitallySignedStruct, RootCertStore, SignatureScheme};

/// ring, with the SHA-256 TLS 1.3 suite first: SHA-256 has CPU support
/// (SHA-NI) where SHA-384 does not, which shows in handshake-heavy loads
/// such as a crowd of joiners.
pub fn provider() -> Arc<CryptoProvider> {
    let mut provider = rustls::crypto::ring::default_provider();
    provider
        .cipher_suites
        .sort_by_key(|s| s.suite() != rustls::CipherSuite::TLS13_AES_128_GCM_SHA256);
    Arc::new(provider)
}

/// Certificates from PEM text.
pub fn certs_of_pem(pem: &str) -> anyhow::Result<Vec<CertificateDer<'static>>> {
    let blocks = pki::pem_blocks(pem, "CERTIFICATE").map_err(|e| anyhow!(e))?;
    if blocks.is_empty() {
        anyhow::bail!("no certificate in PEM text");
    }
    Ok(blocks.into_iter().map(CertificateDer::from).collect())
}

/// A private key from PEM (PKCS#8, as rcgen writes it).
pub fn key_of_pem(pem: &str) -> anyhow::Result<PrivateKeyDer<'static>> {
    let der = pki::pem_block(pem, "PRIVATE KEY").map_err(|e| anyhow!(e))?;
    Ok(PrivateKeyDer::Pkcs8(der.into()))
}

fn roots(ca_pem: &str) -> anyhow::Result<Arc<RootCertStore>> {
    let mut roots = RootCertStore::empty();
    for cert in certs_of_pem(ca_pem)? {
        roots
            .add(cert)
            .context("adding the CA to the trust store")?;
    }
    Ok(Arc::new(roots))
}

/// The substrate API's server side: serves the node certificate (with the CA
/// appended, so joiners can check it against their pin), re-read when the
/// file changes (`globular cert renew`), and accepts, but does not require,
/// client certificates signed by the CA.
pub fn server_config(
    cert_path: &Path,
    key_path: &Path,
    ca_pem: &str,
) -> anyhow::Result<rustls::ServerConfig> {
    let verifier = WebPkiClientVerifier::builder_with_provider(roots(ca_pem)?, provider())
        .allow_unauthenticated()
        .build()
        .context("building the client verifier")?;
    let resolver = ReloadingCert::new(cert_path, key_path, ca_pem)?;
    let mut config = rustls::ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()?
        .with_client_cert_verifier(verifier)
        .with_cert_resolver(Arc::new(resolver));
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(config)
}

/// A certificate that follows its file, served (the substrate API) or
/// presented as a client's (etcd clients): each handshake checks the file's
/// modification time and reloads the certificate and key when it changed
/// (keeping the old pair if the new one does not load), so a renewed
/// certificate is used from the next connection on.
#[derive(Debug)]
struct ReloadingCert {
    cert_path: PathBuf,
    key_path: PathBuf,
    /// Appended to the chain (a server sends its CA for joiners' pins).
    chain_tail: String,
    current: Mutex<(Option<SystemTime>, Arc<CertifiedKey>)>,
}

impl ReloadingCert {
    fn new(cert_path: &Path, key_path: &Path, chain_tail: &str) -> anyhow::Result<ReloadingCert> {
        let mtime = modified(cert_path);
        let certified = load_certified(cert_path, key_path, chain_tail)?;
        Ok(ReloadingCert {
            cert_path: cert_path.to_owned(),
            key_path: key_path.to_owned(),
            chain_tail: chain_tail.to_owned(),
            current: Mutex::new((mtime, certified)),
        })
    }

    fn current(&self) -> Arc<CertifiedKey> {
        let mtime = modified(&self.cert_path);
        let mut current = self.current.lock().unwrap_or_else(|e| e.into_inner());
        if mtime != current.0 {
            match load_certified(&self.cert_path, &self.key_path, &self.chain_tail) {
                Ok(certified) => {
                    tracing::info!("using the renewed certificate {}", self.cert_path.display());
                    *current = (mtime, certified);
                }
                Err(e) => tracing::warn!("keeping the certificate in use: {e:#}"),
            }
        }
        current.1.clone()
    }
}

fn modified(path: &Path) -> Option<SystemTime> {
    std::fs::metadata(path).and_then(|m| m.modified()).ok()
}

fn load_certified(
    cert_path: &Path,
    key_path: &Path,
    chain_tail: &str,
) -> anyhow::Result<Arc<CertifiedKey>> {
    let read =
        |p: &Path| std::fs::read_to_string(p).with_context(|| format!("reading {}", p.display()));
    let mut chain = certs_of_pem(&read(cert_path)?)?;
    if !chain_tail.is_empty() {
        chain.extend(certs_of_pem(chain_tail)?);
    }
    let key = provider()
        .key_provider
        .load_private_key(key_of_pem(&read(key_path)?)?)
        .with_context(|| format!("loading {}", key_path.display()))?;
    let certified = CertifiedKey::new(chain, key);
    certified.keys_match().with_context(|| {
        format!(
            "{} does not match its key {}",
            cert_path.display(),
            key_path.display()
        )
    })?;
    Ok(Arc::new(certified))
}

impl ResolvesServerCert for ReloadingCert {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current())
    }
}

impl ResolvesClientCert for ReloadingCert {
    fn resolve(
        &self,
        _root_hint_subjects: &[&[u8]],
        _sigschemes: &[SignatureScheme],
    ) -> Option<Arc<CertifiedKey>> {
        Some(self.current())
    }

    fn has_certs(&self) -> bool {
        true
    }
}

/// A client of the substrate API: trusts the CA, accepts only a server
/// whose certificate says `globular:control-plane`, and presents the node's
/// certificate if given.
pub fn api_client_config(
    ca_pem: &str,
    identity: Option<(&str, &str)>,
) -> anyhow::Result<rustls::ClientConfig> {
    let inner = WebPkiServerVerifier::builder_with_provider(roots(ca_pem)?, provider())
        .build()
        .context("building the server verifier")?;
    let builder = rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(ControlPlaneServer { inner }));
    let mut config = match identity {
        Some((cert, key)) => builder
            .with_client_auth_cert(certs_of_pem(cert)?, key_of_pem(key)?)
            .context("loading the client certificate")?,
        None => builder.with_no_client_auth(),
    };
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(config)
}

/// A client that trusts the CA and presents the certificate in `cert_path`
/// (with its key in `key_path`), re-read when the file changes: the
/// long-lived etcd clients of the substrate's services.
pub fn client_config_from_files(
    ca_pem: &str,
    cert_path: &Path,
    key_path: &Path,
) -> anyhow::Result<rustls::ClientConfig> {
    let resolver = ReloadingCert::new(cert_path, key_path, "")?;
    let mut config = rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots(ca_pem)?)
        .with_client_cert_resolver(Arc::new(resolver));
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(config)
}

/// A client that trusts the CA and presents a certificate (etcd).
pub fn client_config(
    ca_pem: &str,
    identity: Option<(&str, &str)>,
) -> anyhow::Result<rustls::ClientConfig> {
    let builder = rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots(ca_pem)?);
    let mut config = match identity {
        Some((cert, key)) => builder
            .with_client_auth_cert(certs_of_pem(cert)?, key_of_pem(key)?)
            .context("loading the client certificate")?,
        None => builder.with_no_client_auth(),
    };
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(config)
}

/// A client for a node that knows only the CA pin: it accepts a server whose
/// presented chain contains a CA certificate with that pin and whose leaf that
/// CA signed (for the address dialled). Anything else fails the handshake,
/// before a byte of the request is sent.
pub fn pinned_client_config(pin: &str) -> anyhow::Result<rustls::ClientConfig> {
    let mut config = rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(ControlPlaneServer {
            inner: Arc::new(PinnedCa {
                pin: pin.to_owned(),
                provider: provider(),
            }),
        }))
        .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(config)
}

#[derive(Debug)]
struct PinnedCa {
    pin: String,
    provider: Arc<CryptoProvider>,
}

impl ServerCertVerifier for PinnedCa {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let ca = intermediates
            .iter()
            .find(|c| pki::spki_of_der(c).is_ok_and(|spki| pki::spki_pin(&spki) == self.pin))
            .ok_or_else(|| {
                rustls::Error::General(format!(
                    "the server's CA does not match the pinned hash {}",
                    self.pin
                ))
            })?;
        let mut roots = RootCertStore::empty();
        roots
            .add(ca.clone().into_owned())
            .map_err(|e| rustls::Error::General(format!("pinned CA: {e}")))?;
        let inner =
            WebPkiServerVerifier::builder_with_provider(Arc::new(roots), self.provider.clone())
                .build()
                .map_err(|e| rustls::Error::General(format!("pinned CA: {e}")))?;
        inner.verify_server_cert(end_entity, &[], server_name, ocsp_response, now)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
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

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

/// A server verifier that also requires the server's certificate to carry
/// the control-plane role: a worker's certificate (signed by the same CA)
/// cannot pose as the substrate API.
#[derive(Debug)]
struct ControlPlaneServer {
    inner: Arc<dyn ServerCertVerifier>,
}

impl ServerCertVerifier for ControlPlaneServer {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let verified = self.inner.verify_server_cert(
            end_entity,
            intermediates,
            server_name,
            ocsp_response,
            now,
        )?;
        let id = pki::identity_of_der(end_entity)
            .map_err(|e| rustls::Error::General(format!("server certificate: {e}")))?;
        if id.role != Some(globular_cluster::Role::ControlPlane) {
            return Err(rustls::Error::General(format!(
                "the server's certificate ({}) is not a control-plane node's",
                id.common_name
            )));
        }
        Ok(verified)
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

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}

/// How long a request of an [`http_client`] may take unless it says otherwise.
pub const REQUEST_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);

/// An HTTPS client (HTTP/1.1) built on one of the configurations above.
pub fn http_client(config: rustls::ClientConfig) -> anyhow::Result<reqwest::Client> {
    http_client_from(config, None)
}

/// [`http_client`] whose connections come from `source` (one of the host's
/// addresses), if given.
pub fn http_client_from(
    config: rustls::ClientConfig,
    source: Option<std::net::IpAddr>,
) -> anyhow::Result<reqwest::Client> {
    reqwest::Client::builder()
        .use_preconfigured_tls(config)
        .local_address(source)
        .timeout(REQUEST_TIMEOUT)
        .connect_timeout(std::time::Duration::from_secs(5))
        .build()
        .context("building the HTTPS client")
}
