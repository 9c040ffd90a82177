//! The cluster PKI: the CA, node keys, certificate signing requests and the
//! certificates the CA issues.
//!
//! Every key is ECDSA P-256 (rcgen with ring). A node's identity lives in its
//! certificate subject: the common name is the node name and the organization
//! is `globular:<role>`. The CA decides the subject, the subject alternative
//! names and the validity of everything it signs; a CSR only contributes its
//! public key and the node name it asks for.

use std::net::IpAddr;

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair, KeyUsagePurpose, SanType, SerialNumber,
};
use ring::rand::SecureRandom as _;
use time::{Duration, OffsetDateTime};
use x509_parser::extensions::GeneralName;
use x509_parser::prelude::FromDer as _;

use crate::Role;

/// How long the CA is valid.
pub const CA_VALIDITY: Duration = Duration::days(3650);
/// How long a node or service certificate is valid unless the cluster
/// says otherwise (`builder cluster new --certificate-lifetime`): short, as
/// the health loop renews every certificate when a third of its validity
/// is left.
pub const LEAF_VALIDITY: Duration = Duration::days(30);
/// The shortest certificate lifetime a cluster may configure (tests).
pub const MIN_LEAF_VALIDITY: Duration = Duration::minutes(1);
/// The longest certificate lifetime a cluster may configure.
pub const MAX_LEAF_VALIDITY: Duration = Duration::days(397);

/// [`LEAF_VALIDITY`] in seconds (the default of the cluster record's and the
/// seed's `certificate_lifetime`).
pub fn default_lifetime_seconds() -> u64 {
    LEAF_VALIDITY.whole_seconds().unsigned_abs()
}

pub fn is_default_lifetime(seconds: &u64) -> bool {
    *seconds == default_lifetime_seconds()
}

/// How far before its issue a certificate's validity starts (clocks of the
/// nodes differ a little): five minutes, or a tenth of a short lifetime.
pub fn backdate(validity: Duration) -> Duration {
    std::cmp::min(validity / 10_i32, Duration::minutes(5))
}

/// Checks a configured certificate lifetime against
/// [`MIN_LEAF_VALIDITY`]..=[`MAX_LEAF_VALIDITY`].
pub fn check_lifetime(lifetime: Duration) -> Result<Duration, String> {
    if lifetime < MIN_LEAF_VALIDITY || lifetime > MAX_LEAF_VALIDITY {
        return Err(format!(
            "a certificate lifetime must be between {} s and {} days, not {} s",
            MIN_LEAF_VALIDITY.whole_seconds(),
            MAX_LEAF_VALIDITY.whole_days(),
            lifetime.whole_seconds()
        ));
    }
    Ok(lifetime)
}

/// Why a certificate valid from `not_before` to `not_after` should be
/// renewed at `now` when the cluster's lifetime is `lifetime` (`None`: not
/// yet): a third of its validity or less is left (the health loop renews
/// at two thirds), or it is valid much longer than the cluster's lifetime
/// (the lifetime was shortened, or it was issued before the cluster's
/// setting was known).
pub fn renewal_due(
    not_before: i64,
    not_after: i64,
    lifetime: Duration,
    now: i64,
) -> Option<String> {
    let span = not_after - not_before;
    let left = not_after - now;
    if left <= span / 3 {
        return Some(if left <= 0 {
            "expired".to_owned()
        } else {
            format!("{left} s of its {span} s left")
        });
    }
    let longest = lifetime + backdate(lifetime) + Duration::minutes(1);
    if span > longest.whole_seconds() {
        return Some(format!(
            "valid for {span} s, longer than the cluster's {} s",
            lifetime.whole_seconds()
        ));
    }
    None
}

/// Organization prefix that carries the role in a certificate subject.
const ROLE_PREFIX: &str = "globular:";

/// Errors of the PKI. Callers (the enrollment API) map them to refusals.
#[derive(Debug, thiserror::Error)]
pub enum PkiError {
    #[error("certificate signing request is not valid: {0}")]
    InvalidCsr(String),
    #[error("certificate is not valid: {0}")]
    InvalidCertificate(String),
    #[error("private key is not valid: {0}")]
    InvalidKey(String),
    #[error("the signature does not verify with the CA key")]
    InvalidSignature,
    #[error("signing: {0}")]
    Signing(#[from] rcgen::Error),
}

/// The cluster certificate authority: certificate and private key (PEM).
#[derive(Clone)]
pub struct Ca {
    cert_pem: String,
    key_pem: String,
    /// The CA as rcgen needs it to sign (re-created from the PEM).
    issuer: std::sync::Arc<(rcgen::Certificate, KeyPair)>,
}

impl std::fmt::Debug for Ca {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ca")
            .field("pin", &ca_pin_of_pem(&self.cert_pem).ok())
            .finish_non_exhaustive()
    }
}

/// A certificate the CA issued, with the facts the registry records.
#[derive(Debug, Clone)]
pub struct Issued {
    pub cert_pem: String,
    /// Serial number as lowercase hex.
    pub serial: String,
    pub not_after: OffsetDateTime,
}

/// What a certificate should say about its holder.
#[derive(Debug, Clone, Default)]
pub struct LeafSpec {
    /// Left out of the subject when empty (etcd's gateway refuses client
    /// certificates with a common name once etcd's auth is on).
    pub common_name: String,
    /// Put into the subject organization as `globular:<role>`, if any.
    pub role: Option<Role>,
    /// The subject organization when there is no role (Kubernetes reads it
    /// as the holder's group). A subject has one organization at most.
    pub group: Option<String>,
    pub dns_names: Vec<String>,
    pub ips: Vec<IpAddr>,
    pub server: bool,
    pub client: bool,
    /// How long the certificate is valid ([`LEAF_VALIDITY`] if `None`).
    pub validity: Option<Duration>,
}

impl LeafSpec {
    /// A node identity certificate: client and server use, the node name and
    /// its addresses as subject alternative names.
    pub fn node(name: &str, role: Role, ips: &[IpAddr]) -> LeafSpec {
        LeafSpec {
            common_name: name.to_owned(),
            role: Some(role),
            group: None,
            dns_names: vec![name.to_owned()],
            ips: ips.to_vec(),
            server: true,
            client: true,
            validity: None,
        }
    }

    /// A renewal of the node certificate `id`: the CA signs again what it
    /// signed before (name, role, SANs), never what a record says.
    pub fn renewal_of(id: &CertIdentity, validity: Duration) -> LeafSpec {
        LeafSpec {
            common_name: id.common_name.clone(),
            role: id.role,
            group: None,
            dns_names: id.dns_names.clone(),
            ips: id.ips.clone(),
            server: true,
            client: true,
            validity: Some(validity),
        }
    }

    /// The subject organization: `globular:<role>`, or the group.
    pub fn organization(&self) -> Option<String> {
        match self.role {
            Some(role) => Some(format!("{ROLE_PREFIX}{role}")),
            None => self.group.clone(),
        }
    }
}

impl Ca {
    /// Creates a new self-signed cluster CA for `cluster_name`.
    pub fn generate(cluster_name: &str) -> Result<Ca, PkiError> {
        Ca::generate_named(&format!("globular-ca {cluster_name}"))
    }

    /// Creates the etcd CA of `cluster_name`: a CA of its own, trusted by
    /// etcd's client and peer ports and held only by control-plane nodes,
    /// so that no certificate of the cluster CA (every node has one) opens
    /// etcd.
    pub fn generate_etcd(cluster_name: &str) -> Result<Ca, PkiError> {
        Ca::generate_named(&format!("globular-etcd-ca {cluster_name}"))
    }

    fn generate_named(common_name: &str) -> Result<Ca, PkiError> {
        let key = KeyPair::generate()?;
        let params = ca_params(common_name, BasicConstraints::Unconstrained);
        let cert = params.self_signed(&key)?;
        Ca::from_pem(&cert.pem(), &key.serialize_pem())
    }

    /// Creates an intermediate CA signed by this one (no further CAs below
    /// it): Kubernetes' client CA and front-proxy CA are the cluster CA's.
    pub fn generate_intermediate(&self, common_name: &str) -> Result<Ca, PkiError> {
        let key = KeyPair::generate()?;
        let mut params = ca_params(common_name, BasicConstraints::Constrained(0));
        params.use_authority_key_identifier_extension = true;
        let (issuer, issuer_key) = &*self.issuer;
        let cert = params.signed_by(&key, issuer, issuer_key)?;
        Ca::from_pem(&cert.pem(), &key.serialize_pem())
    }

    /// Loads a CA from its certificate and key (PEM).
    pub fn from_pem(cert_pem: &str, key_pem: &str) -> Result<Ca, PkiError> {
        let key = KeyPair::from_pem(key_pem).map_err(|e| PkiError::InvalidKey(e.to_string()))?;
        let params = CertificateParams::from_ca_cert_pem(cert_pem)
            .map_err(|e| PkiError::InvalidCertificate(e.to_string()))?;
        let spki = spki_of_pem(cert_pem)?;
        if spki != key.public_key_der() {
            return Err(PkiError::InvalidKey(
                "the CA key does not match the CA certificate".into(),
            ));
        }
        // rcgen signs with an issuer `Certificate`; re-signing the parsed
        // parameters gives one with the same subject and key identifier.
        let issuer = params.self_signed(&key)?;
        Ok(Ca {
            cert_pem: cert_pem.to_owned(),
            key_pem: key_pem.to_owned(),
            issuer: std::sync::Arc::new((issuer, key)),
        })
    }

    pub fn cert_pem(&self) -> &str {
        &self.cert_pem
    }

    pub fn key_pem(&self) -> &str {
        &self.key_pem
    }

    /// The pin of this CA (`sha256:<hex>`).
    pub fn pin(&self) -> String {
        ca_pin_of_pem(&self.cert_pem).expect("a loaded CA certificate parses")
    }

    /// Signs `public_key_der` (a DER SubjectPublicKeyInfo) with the subject
    /// described by `spec`.
    pub fn issue(&self, public_key_der: &[u8], spec: &LeafSpec) -> Result<Issued, PkiError> {
        let public_key = rcgen::SubjectPublicKeyInfo::from_der(public_key_der)
            .map_err(|e| PkiError::InvalidCsr(format!("public key: {e}")))?;
        let mut params = CertificateParams::default();
        let mut dn = DistinguishedName::new();
        if !spec.common_name.is_empty() {
            dn.push(DnType::CommonName, spec.common_name.clone());
        }
        if spec.role.is_some() && spec.group.is_some() {
            return Err(PkiError::InvalidCsr(
                "a certificate carries a role or a group, not both".into(),
            ));
        }
        if let Some(organization) = spec.organization() {
            dn.push(DnType::OrganizationName, organization);
        }
        params.distinguished_name = dn;
        for name in &spec.dns_names {
            let name = name
                .clone()
                .try_into()
                .map_err(|_| PkiError::InvalidCsr(format!("bad DNS name {name:?}")))?;
            params.subject_alt_names.push(SanType::DnsName(name));
        }
        for ip in &spec.ips {
            params.subject_alt_names.push(SanType::IpAddress(*ip));
        }
        params.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyEncipherment,
        ];
        if spec.server {
            params
                .extended_key_usages
                .push(ExtendedKeyUsagePurpose::ServerAuth);
        }
        if spec.client {
            params
                .extended_key_usages
                .push(ExtendedKeyUsagePurpose::ClientAuth);
        }
        params.use_authority_key_identifier_extension = true;
        let now = OffsetDateTime::now_utc();
        let validity = spec.validity.unwrap_or(LEAF_VALIDITY);
        params.not_before = now - backdate(validity);
        let not_after = now + validity;
        params.not_after = not_after;
        let serial = random_serial();
        let serial_hex = hex::encode(serial.as_ref());
        params.serial_number = Some(serial);
        let (issuer, issuer_key) = &*self.issuer;
        let cert = params.signed_by(&public_key, issuer, issuer_key)?;
        Ok(Issued {
            cert_pem: cert.pem(),
            serial: serial_hex,
            not_after,
        })
    }

    /// Signs `message` with the CA key (ECDSA P-256, SHA-256, ASN.1 DER
    /// signature): enrollment tickets.
    pub fn sign(&self, message: &[u8]) -> Result<Vec<u8>, PkiError> {
        let der = pem_block(&self.key_pem, "PRIVATE KEY").map_err(PkiError::InvalidKey)?;
        let rng = ring::rand::SystemRandom::new();
        let key = ring::signature::EcdsaKeyPair::from_pkcs8(
            &ring::signature::ECDSA_P256_SHA256_ASN1_SIGNING,
            &der,
            &rng,
        )
        .map_err(|e| PkiError::InvalidKey(format!("CA key: {e}")))?;
        let sig = key
            .sign(&rng, message)
            .map_err(|_| PkiError::InvalidKey("signing with the CA key failed".into()))?;
        Ok(sig.as_ref().to_vec())
    }

    /// Generates a key here and issues a certificate for it (for the services
    /// of a control-plane node, which holds the CA key anyway).
    pub fn issue_with_new_key(&self, spec: &LeafSpec) -> Result<(Issued, String), PkiError> {
        let key = KeyPair::generate()?;
        let issued = self.issue(&key.public_key_der(), spec)?;
        Ok((issued, key.serialize_pem()))
    }
}

/// The parameters of a CA certificate valid for [`CA_VALIDITY`] from now.
fn ca_params(common_name: &str, constraints: BasicConstraints) -> CertificateParams {
    let mut params = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, common_name);
    dn.push(DnType::OrganizationName, "globular");
    params.distinguished_name = dn;
    params.is_ca = IsCa::Ca(constraints);
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    let now = OffsetDateTime::now_utc();
    params.not_before = now - Duration::hours(1);
    params.not_after = now + CA_VALIDITY;
    params.serial_number = Some(random_serial());
    params
}

/// A random, positive 128-bit serial number.
fn random_serial() -> SerialNumber {
    let mut bytes = [0u8; 16];
    ring::rand::SystemRandom::new()
        .fill(&mut bytes)
        .expect("the system random generator works");
    bytes[0] &= 0x7f;
    bytes[0] |= 0x01;
    SerialNumber::from_slice(&bytes)
}

/// Generates a node private key (PEM, PKCS#8).
pub fn generate_key_pem() -> Result<String, PkiError> {
    Ok(KeyPair::generate()?.serialize_pem())
}

/// The DER SubjectPublicKeyInfo of a private key (PEM).
pub fn public_key_of_key_pem(key_pem: &str) -> Result<Vec<u8>, PkiError> {
    let key = KeyPair::from_pem(key_pem).map_err(|e| PkiError::InvalidKey(e.to_string()))?;
    Ok(key.public_key_der())
}

/// Creates a CSR (PEM) for `node_name` with the key `key_pem`.
pub fn create_csr(key_pem: &str, node_name: &str) -> Result<String, PkiError> {
    let key = KeyPair::from_pem(key_pem).map_err(|e| PkiError::InvalidKey(e.to_string()))?;
    let mut params = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, node_name);
    params.distinguished_name = dn;
    Ok(params.serialize_request(&key)?.pem()?)
}

/// A certificate signing request whose signature was checked.
#[derive(Debug, Clone)]
pub struct VerifiedCsr {
    /// The common name asked for.
    pub common_name: String,
    /// DER SubjectPublicKeyInfo of the key that signed the request.
    pub public_key_der: Vec<u8>,
}

impl VerifiedCsr {
    /// `sha256:<hex>` of the requested public key.
    pub fn key_id(&self) -> String {
        spki_pin(&self.public_key_der)
    }
}

/// Parses a CSR (PEM) and verifies its self-signature.
pub fn verify_csr(csr_pem: &str) -> Result<VerifiedCsr, PkiError> {
    let der = pem_block(csr_pem, "CERTIFICATE REQUEST")
        .map_err(|e| PkiError::InvalidCsr(e.to_string()))?;
    let (rest, csr) = x509_parser::certification_request::X509CertificationRequest::from_der(&der)
        .map_err(|e| PkiError::InvalidCsr(format!("parsing: {e}")))?;
    if !rest.is_empty() {
        return Err(PkiError::InvalidCsr(
            "trailing bytes after the request".into(),
        ));
    }
    csr.verify_signature()
        .map_err(|e| PkiError::InvalidCsr(format!("signature does not verify: {e}")))?;
    let info = &csr.certification_request_info;
    let mut names = info.subject.iter_common_name();
    let common_name = names
        .next()
        .and_then(|cn| cn.as_str().ok())
        .ok_or_else(|| PkiError::InvalidCsr("no common name in the subject".into()))?
        .to_owned();
    if names.next().is_some() {
        return Err(PkiError::InvalidCsr("more than one common name".into()));
    }
    Ok(VerifiedCsr {
        common_name,
        public_key_der: info.subject_pki.raw.to_vec(),
    })
}

/// What a certificate says about its holder.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertIdentity {
    pub common_name: String,
    pub role: Option<Role>,
    /// Subject alternative names: DNS names and IP addresses.
    pub dns_names: Vec<String>,
    pub ips: Vec<IpAddr>,
    pub serial: String,
    pub public_key_der: Vec<u8>,
    /// Unix seconds.
    pub not_before: i64,
    /// Unix seconds.
    pub not_after: i64,
}

impl CertIdentity {
    /// [`renewal_due`] for this certificate.
    pub fn renewal_due(&self, lifetime: Duration, now: i64) -> Option<String> {
        renewal_due(self.not_before, self.not_after, lifetime, now)
    }
}

/// Reads the identity out of a DER certificate (already verified by TLS).
pub fn identity_of_der(der: &[u8]) -> Result<CertIdentity, PkiError> {
    let (_, cert) = x509_parser::parse_x509_certificate(der)
        .map_err(|e| PkiError::InvalidCertificate(e.to_string()))?;
    let subject = cert.subject();
    // No common name reads as an empty one (the substrate's etcd client
    // certificate has none); what a name authorizes also needs the role.
    let common_name = match subject.iter_common_name().next() {
        None => String::new(),
        Some(cn) => cn
            .as_str()
            .map_err(|e| PkiError::InvalidCertificate(format!("common name: {e}")))?
            .to_owned(),
    };
    let role = subject
        .iter_organization()
        .filter_map(|o| o.as_str().ok())
        .find_map(|o| o.strip_prefix(ROLE_PREFIX))
        .and_then(|r| r.parse().ok());
    let (dns_names, ips) = identity_of_sans(&cert);
    Ok(CertIdentity {
        common_name,
        role,
        dns_names,
        ips,
        serial: hex::encode(cert.raw_serial()),
        public_key_der: cert.public_key().raw.to_vec(),
        not_before: cert.validity().not_before.timestamp(),
        not_after: cert.validity().not_after.timestamp(),
    })
}

/// Why the certificate and key on disk are not what `spec` asks of the CA
/// `ca_pem` (`Ok` when they are): signed by that CA, valid now, for this
/// key, with the spec's subject and subject alternative names, and not
/// yet due for renewal ([`renewal_due`] with the spec's validity). Agents and
/// the package installer reissue a certificate that fails this.
pub fn check_issued(
    cert_pem: &str,
    key_pem: &str,
    ca_pem: &str,
    spec: &LeafSpec,
) -> Result<(), String> {
    let der = pem_block(cert_pem, "CERTIFICATE")?;
    let ca_der = pem_block(ca_pem, "CERTIFICATE")?;
    let (_, cert) = x509_parser::parse_x509_certificate(&der).map_err(|e| e.to_string())?;
    let (_, ca) = x509_parser::parse_x509_certificate(&ca_der).map_err(|e| e.to_string())?;
    if cert.issuer() != ca.subject() || cert.verify_signature(Some(ca.public_key())).is_err() {
        return Err("not signed by its CA".into());
    }
    if !cert.validity().is_valid() {
        return Err("not valid now".into());
    }
    let validity = cert.validity();
    if let Some(why) = renewal_due(
        validity.not_before.timestamp(),
        validity.not_after.timestamp(),
        spec.validity.unwrap_or(LEAF_VALIDITY),
        OffsetDateTime::now_utc().unix_timestamp(),
    ) {
        return Err(format!("due for renewal: {why}"));
    }
    let public = public_key_of_key_pem(key_pem).map_err(|e| e.to_string())?;
    if cert.public_key().raw != public.as_slice() {
        return Err("not for the key beside it".into());
    }
    let subject = cert.subject();
    let text = |a: &x509_parser::x509::AttributeTypeAndValue| a.as_str().ok().map(str::to_owned);
    let common_names: Vec<String> = subject.iter_common_name().filter_map(text).collect();
    let want_cn: Vec<String> = Some(spec.common_name.clone())
        .filter(|cn| !cn.is_empty())
        .into_iter()
        .collect();
    if common_names != want_cn {
        return Err(format!("common name {common_names:?}, not {want_cn:?}"));
    }
    let organizations: Vec<String> = subject.iter_organization().filter_map(text).collect();
    let want_o: Vec<String> = spec.organization().into_iter().collect();
    if organizations != want_o {
        return Err(format!("organization {organizations:?}, not {want_o:?}"));
    }
    let id = identity_of_sans(&cert);
    let (mut dns, mut want_dns) = (id.0, spec.dns_names.clone());
    let (mut ips, mut want_ips) = (id.1, spec.ips.clone());
    for list in [&mut dns, &mut want_dns] {
        list.sort();
        list.dedup();
    }
    for list in [&mut ips, &mut want_ips] {
        list.sort();
        list.dedup();
    }
    if dns != want_dns || ips != want_ips {
        return Err(format!(
            "names {dns:?} {ips:?}, not {want_dns:?} {want_ips:?}"
        ));
    }
    Ok(())
}

/// The DNS names and IP addresses of a certificate's subject alternative
/// names.
fn identity_of_sans(
    cert: &x509_parser::certificate::X509Certificate<'_>,
) -> (Vec<String>, Vec<IpAddr>) {
    let (mut dns_names, mut ips) = (Vec::new(), Vec::new());
    if let Ok(Some(san)) = cert.subject_alternative_name() {
        for name in &san.value.general_names {
            match name {
                GeneralName::DNSName(n) => dns_names.push((*n).to_owned()),
                GeneralName::IPAddress(b) => match b.len() {
                    4 => ips.push(IpAddr::from(<[u8; 4]>::try_from(*b).unwrap_or_default())),
                    16 => ips.push(IpAddr::from(<[u8; 16]>::try_from(*b).unwrap_or_default())),
                    _ => {}
                },
                _ => {}
            }
        }
    }
    (dns_names, ips)
}

/// Checks that `cert_pem` (one certificate) was signed by the CA
/// `ca_pem` and is valid now; returns what it says. A joiner checks the
/// certificate it was issued with this before it keeps it.
pub fn verify_issued(cert_pem: &str, ca_pem: &str) -> Result<CertIdentity, PkiError> {
    let bad = |m: String| PkiError::InvalidCertificate(m);
    let der = pem_block(cert_pem, "CERTIFICATE").map_err(bad)?;
    let ca_der = pem_block(ca_pem, "CERTIFICATE").map_err(bad)?;
    let (_, cert) = x509_parser::parse_x509_certificate(&der).map_err(|e| bad(e.to_string()))?;
    let (_, ca) = x509_parser::parse_x509_certificate(&ca_der).map_err(|e| bad(e.to_string()))?;
    cert.verify_signature(Some(ca.public_key()))
        .map_err(|e| bad(format!("not signed by the cluster CA: {e}")))?;
    if cert.issuer() != ca.subject() {
        return Err(bad("its issuer is not the cluster CA".into()));
    }
    if !cert.validity().is_valid() {
        return Err(bad("not valid now".into()));
    }
    identity_of_der(&der)
}

/// Verifies an ECDSA P-256 SHA-256 signature made by [`Ca::sign`] against
/// the public key of the CA certificate `ca_pem`.
pub fn verify_signature(ca_pem: &str, message: &[u8], signature: &[u8]) -> Result<(), PkiError> {
    let bad = |m: String| PkiError::InvalidCertificate(m);
    let der = pem_block(ca_pem, "CERTIFICATE").map_err(bad)?;
    let (_, ca) = x509_parser::parse_x509_certificate(&der).map_err(|e| bad(e.to_string()))?;
    let point = ca.public_key().subject_public_key.data.as_ref();
    ring::signature::UnparsedPublicKey::new(&ring::signature::ECDSA_P256_SHA256_ASN1, point)
        .verify(message, signature)
        .map_err(|_| PkiError::InvalidSignature)
}

/// Reads the identity out of a PEM certificate.
pub fn identity_of_pem(pem: &str) -> Result<CertIdentity, PkiError> {
    let der =
        pem_block(pem, "CERTIFICATE").map_err(|e| PkiError::InvalidCertificate(e.to_string()))?;
    identity_of_der(&der)
}

/// `sha256:<hex>` over a DER SubjectPublicKeyInfo: the kubeadm CA pin.
pub fn spki_pin(spki_der: &[u8]) -> String {
    let digest = ring::digest::digest(&ring::digest::SHA256, spki_der);
    format!("sha256:{}", hex::encode(digest.as_ref()))
}

/// The DER SubjectPublicKeyInfo of a DER certificate.
pub fn spki_of_der(cert_der: &[u8]) -> Result<Vec<u8>, PkiError> {
    let (_, cert) = x509_parser::parse_x509_certificate(cert_der)
        .map_err(|e| PkiError::InvalidCertificate(e.to_string()))?;
    Ok(cert.public_key().raw.to_vec())
}

fn spki_of_pem(pem: &str) -> Result<Vec<u8>, PkiError> {
    let der =
        pem_block(pem, "CERTIFICATE").map_err(|e| PkiError::InvalidCertificate(e.to_string()))?;
    spki_of_der(&der)
}

/// The CA pin of a PEM certificate.
pub fn ca_pin_of_pem(pem: &str) -> Result<String, PkiError> {
    Ok(spki_pin(&spki_of_pem(pem)?))
}

/// Checks a pin's syntax: `sha256:` and 64 lowercase hex digits.
pub fn valid_pin(pin: &str) -> bool {
    pin.strip_prefix("sha256:").is_some_and(|hex| {
        hex.len() == 64
            && hex
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    })
}

/// Decodes the first PEM block with the given label.
pub fn pem_block(pem: &str, label: &str) -> Result<Vec<u8>, String> {
    pem_blocks(pem, label)?
        .into_iter()
        .next()
        .ok_or_else(|| format!("no PEM block labelled {label:?}"))
}

/// Encodes `der` as one PEM block labelled `label`.
pub fn pem(label: &str, der: &[u8]) -> String {
    use base64::Engine as _;
    let body = base64::engine::general_purpose::STANDARD.encode(der);
    let mut out = format!("-----BEGIN {label}-----\n");
    for line in body.as_bytes().chunks(64) {
        out.push_str(std::str::from_utf8(line).unwrap_or_default());
        out.push('\n');
    }
    out.push_str(&format!("-----END {label}-----\n"));
    out
}

/// Decodes every PEM block with the given label, in order.
pub fn pem_blocks(pem: &str, label: &str) -> Result<Vec<Vec<u8>>, String> {
    use base64::Engine as _;
    let begin = format!("-----BEGIN {label}-----");
    let end = format!("-----END {label}-----");
    let mut blocks = Vec::new();
    let mut rest = pem;
    while let Some(start) = rest.find(&begin) {
        let after = &rest[start + begin.len()..];
        let stop = after
            .find(&end)
            .ok_or_else(|| format!("unterminated PEM block {label:?}"))?;
        let body: String = after[..stop].split_whitespace().collect();
        let der = base64::engine::general_purpose::STANDARD
            .decode(body)
            .map_err(|e| format!("PEM block {label:?}: {e}"))?;
        blocks.push(der);
        rest = &after[stop + end.len()..];
    }
    Ok(blocks)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn issues_node_certificate_from_csr() {
        let ca = Ca::generate("test").unwrap();
        let key = generate_key_pem().unwrap();
        let csr = create_csr(&key, "w1").unwrap();
        let verified = verify_csr(&csr).unwrap();
        assert_eq!(verified.common_name, "w1");
        assert_eq!(
            verified.public_key_der,
            public_key_of_key_pem(&key).unwrap()
        );
        let issued = ca
            .issue(
                &verified.public_key_der,
                &LeafSpec::node("w1", Role::Worker, &["127.0.0.1".parse().unwrap()]),
            )
            .unwrap();
        let id = identity_of_pem(&issued.cert_pem).unwrap();
        assert_eq!(id.common_name, "w1");
        assert_eq!(id.role, Some(Role::Worker));
        assert_eq!(id.serial, issued.serial);
        assert_eq!(id.public_key_der, verified.public_key_der);
    }

    #[test]
    fn pin_is_over_spki() {
        let ca = Ca::generate("test").unwrap();
        let key = KeyPair::from_pem(ca.key_pem()).unwrap();
        assert_eq!(ca.pin(), spki_pin(&key.public_key_der()));
        assert!(valid_pin(&ca.pin()));
        assert!(!valid_pin("sha256:abc"));
    }

    #[test]
    fn reloaded_ca_signs_verifiable_certificates() {
        let ca = Ca::generate("test").unwrap();
        let again = Ca::from_pem(ca.cert_pem(), ca.key_pem()).unwrap();
        assert_eq!(ca.pin(), again.pin());
        let other = Ca::generate("other").unwrap();
        let err = Ca::from_pem(ca.cert_pem(), other.key_pem()).unwrap_err();
        assert!(err.to_string().contains("does not match"), "{err}");
    }

    #[test]
    fn rejects_garbage_and_tampered_csr() {
        assert!(matches!(
            verify_csr("not a csr"),
            Err(PkiError::InvalidCsr(_))
        ));
        let key = generate_key_pem().unwrap();
        let csr = create_csr(&key, "w1").unwrap();
        let mut der = pem_block(&csr, "CERTIFICATE REQUEST").unwrap();
        // Flip a bit inside the subject: the signature no longer verifies.
        let pos = der.windows(2).position(|w| w == b"w1").unwrap();
        der[pos] = b'x';
        let tampered = pem_encode("CERTIFICATE REQUEST", &der);
        let err = verify_csr(&tampered).unwrap_err();
        assert!(err.to_string().contains("signature"), "{err}");
    }

    fn pem_encode(label: &str, der: &[u8]) -> String {
        use base64::Engine as _;
        let b64 = base64::engine::general_purpose::STANDARD.encode(der);
        format!("-----BEGIN {label}-----\n{b64}\n-----END {label}-----\n")
    }
}

#[cfg(test)]
mod robustness {
    use super::*;

    /// Untrusted CSRs and certificates never panic the parser: every
    /// truncation and every single-byte corruption of a valid one is either
    /// accepted or refused with an error.
    #[test]
    fn mangled_der_never_panics() {
        use base64::Engine as _;
        let ca = Ca::generate("test").unwrap();
        let key = generate_key_pem().unwrap();
        let csr = create_csr(&key, "w1").unwrap();
        let csr_der = pem_block(&csr, "CERTIFICATE REQUEST").unwrap();
        let cert = ca
            .issue(
                &public_key_of_key_pem(&key).unwrap(),
                &LeafSpec::node("w1", Role::Worker, &[]),
            )
            .unwrap();
        let cert_der = pem_block(&cert.cert_pem, "CERTIFICATE").unwrap();
        let wrap = |der: &[u8]| {
            format!(
                "-----BEGIN CERTIFICATE REQUEST-----\n{}\n-----END CERTIFICATE REQUEST-----\n",
                base64::engine::general_purpose::STANDARD.encode(der)
            )
        };
        let mut accepted = 0;
        for len in 0..csr_der.len() {
            accepted += usize::from(verify_csr(&wrap(&csr_der[..len])).is_ok());
        }
        for i in 0..csr_der.len() {
            let mut der = csr_der.clone();
            der[i] ^= 0xa5;
            accepted += usize::from(verify_csr(&wrap(&der)).is_ok());
        }
        assert_eq!(accepted, 0, "a mangled CSR verified");
        for len in 0..cert_der.len() {
            let _ = identity_of_der(&cert_der[..len]);
        }
        for i in 0..cert_der.len() {
            let mut der = cert_der.clone();
            der[i] ^= 0xa5;
            let _ = identity_of_der(&der);
        }
    }
}

#[cfg(test)]
mod renewal_tests {
    use super::*;

    #[test]
    fn a_certificate_is_due_with_a_third_left_or_when_longer_than_the_cluster_lifetime() {
        let lifetime = Duration::minutes(3);
        let ca = Ca::generate("c").unwrap();
        let spec = LeafSpec {
            validity: Some(lifetime),
            ..LeafSpec::node("n1", Role::Worker, &[])
        };
        let (issued, _) = ca.issue_with_new_key(&spec).unwrap();
        let id = identity_of_pem(&issued.cert_pem).unwrap();
        // Backdated by a tenth of a short lifetime (18 s), five minutes at most.
        assert_eq!(id.not_after - id.not_before, 180 + 18);
        assert_eq!(backdate(Duration::days(30)), Duration::minutes(5));
        let issued_at = id.not_before + 18;
        assert_eq!(id.renewal_due(lifetime, issued_at), None);
        assert_eq!(id.renewal_due(lifetime, issued_at + 110), None);
        // A third of 198 s is 66 s: due from 114 s after issue.
        let why = id.renewal_due(lifetime, issued_at + 114).unwrap();
        assert!(why.contains("66 s of its 198 s left"), "{why}");
        assert_eq!(id.renewal_due(lifetime, id.not_after).unwrap(), "expired");
        // The cluster shortened its lifetime: a fresh 30-day certificate is due.
        let why = id.renewal_due(Duration::minutes(1), issued_at).unwrap();
        assert!(why.contains("longer than the cluster's 60 s"), "{why}");
        // check_issued says the same to agents and the package installer.
        let (issued, key) = ca.issue_with_new_key(&spec).unwrap();
        check_issued(&issued.cert_pem, &key, ca.cert_pem(), &spec).unwrap();
        let shorter = LeafSpec {
            validity: Some(Duration::minutes(1)),
            ..spec.clone()
        };
        let err = check_issued(&issued.cert_pem, &key, ca.cert_pem(), &shorter).unwrap_err();
        assert!(err.starts_with("due for renewal"), "{err}");
        assert!(check_lifetime(Duration::seconds(59)).is_err());
        assert!(check_lifetime(Duration::days(398)).is_err());
        check_lifetime(Duration::minutes(3)).unwrap();
    }
}
