//! The deployment CA and the node certificates it issues.
//!
//! One deployment (a city's tree, say) has one CA. `courseway enroll` uses it to issue each
//! node a certificate naming the node's role and name (see [`crate::identity`] for the
//! encoding); every QUIC connection in the deployment is mutually authenticated against it.
//! The CA key stays with the operator; a node holds the CA certificate, its own certificate and
//! its own key: an [`Enrollment`].
//!
//! Keys are ECDSA P-256, generated with ring through rcgen. Node certificates are end-entity
//! certificates (no CA bit) valid for both TLS server and client authentication, because a relay
//! is a server to its children and a client of its parent.
//!
//! The types here hold PEM text and DER bytes; [`DeploymentCa::save`]/[`DeploymentCa::load`]
//! and their siblings are thin file helpers. Saving never overwrites a file: replacing a CA key
//! by accident would orphan every node enrolled with it.

use std::fmt;
use std::io::Write;
use std::path::Path;
use std::time::{Duration, SystemTime};

use courseway_content::NodeName;
use courseway_proto::Role;
use rcgen::string::Ia5String;
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, SanType,
};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};

use crate::error::NetError;
use crate::identity::{role_label, PeerIdentity};
use crate::revocation::Revocations;

/// How far back a new certificate's validity starts, so that a node whose clock runs somewhat
/// behind (village PCs often do) still accepts it.
pub const CLOCK_SKEW_ALLOWANCE: Duration = Duration::from_secs(24 * 3600);

/// The default lifetime of a deployment CA certificate: 20 years.
pub const DEFAULT_CA_LIFETIME: Duration = Duration::from_secs(20 * 365 * 24 * 3600);

const CERT_TAG: &str = "CERTIFICATE";
const KEY_TAG: &str = "PRIVATE KEY";

/// A certificate's validity period.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Validity {
    pub not_before: SystemTime,
    pub not_after: SystemTime,
}

impl Validity {
    /// From now (less [`CLOCK_SKEW_ALLOWANCE`]) for `lifetime` (cut at the end of year 9999,
    /// the last instant X.509 can express).
    pub fn starting_now(lifetime: Duration) -> Self {
        let now = SystemTime::now();
        let latest = latest_expressible();
        Self {
            not_before: now.checked_sub(CLOCK_SKEW_ALLOWANCE).unwrap_or(now),
            not_after: now.checked_add(lifetime).map_or(latest, |t| t.min(latest)),
        }
    }

    /// An explicit period; `not_before` must be before `not_after`.
    pub fn between(not_before: SystemTime, not_after: SystemTime) -> Result<Self, NetError> {
        let v = Self { not_before, not_after };
        v.check()?;
        Ok(v)
    }

    fn check(&self) -> Result<(), NetError> {
        if self.not_before < SystemTime::UNIX_EPOCH || self.not_after > latest_expressible() {
            return Err(NetError::BadValidity {
                reason: "it must lie between 1970 and the end of year 9999".into(),
            });
        }
        if self.not_before >= self.not_after {
            return Err(NetError::BadValidity {
                reason: "it ends before it starts; give a positive lifetime".into(),
            });
        }
        Ok(())
    }

    fn apply(&self, params: &mut CertificateParams) -> Result<(), NetError> {
        self.check()?;
        params.not_before = self.not_before.into();
        params.not_after = self.not_after.into();
        Ok(())
    }
}

/// 9999-12-31T23:59:59Z, the latest time an X.509 certificate can carry.
fn latest_expressible() -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_secs(253_402_300_799)
}

/// The deployment CA's certificate: what every node trusts. Public; safe to copy around.
#[derive(Clone, PartialEq, Eq)]
pub struct CaCertificate {
    der: CertificateDer<'static>,
}

impl CaCertificate {
    /// Wraps a DER certificate.
    pub fn from_der(der: CertificateDer<'static>) -> Self {
        Self { der }
    }

    /// The certificate's DER bytes.
    pub fn der(&self) -> &CertificateDer<'static> {
        &self.der
    }

    /// The certificate as PEM.
    pub fn to_pem(&self) -> String {
        encode_pem(CERT_TAG, &self.der)
    }

    /// Reads the first certificate of a PEM document.
    pub fn from_pem(pem: &str) -> Result<Self, NetError> {
        Ok(Self {
            der: CertificateDer::from(decode_pem(pem, CERT_TAG, "the CA certificate PEM")?),
        })
    }

    /// Writes the PEM to `path`, which must not exist yet.
    pub fn save(&self, path: &Path) -> Result<(), NetError> {
        write_new_file(path, self.to_pem().as_bytes(), false)
    }

    /// Checks that `cert` was issued by this CA and is valid now for client (and so node)
    /// authentication, as a handshake would.
    pub fn verify_issued(&self, cert: &CertificateDer<'_>) -> Result<(), NetError> {
        let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
        let mut roots = rustls::RootCertStore::empty();
        roots.add(self.der.clone()).map_err(NetError::tls)?;
        let verifier =
            rustls::server::WebPkiClientVerifier::builder_with_provider(std::sync::Arc::new(roots), provider)
                .build()
                .map_err(NetError::tls)?;
        verifier
            .verify_client_cert(cert, &[], rustls::pki_types::UnixTime::now())
            .map(|_| ())
            .map_err(|e| NetError::BadCertificate {
                what: "the issued certificate",
                reason: format!("it does not verify against the deployment CA ({e})"),
            })
    }

    /// Reads a PEM file written by [`CaCertificate::save`].
    pub fn load(path: &Path) -> Result<Self, NetError> {
        Self::from_pem(&read_file(path)?)
    }
}

impl fmt::Debug for CaCertificate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "CaCertificate({} bytes)", self.der.len())
    }
}

/// The deployment CA: its certificate and its signing key. Lives with the operator, never on a
/// node.
pub struct DeploymentCa {
    certificate: CaCertificate,
    issuer: Issuer<'static, KeyPair>,
}

impl fmt::Debug for DeploymentCa {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The key stays out of logs.
        f.debug_struct("DeploymentCa")
            .field("certificate", &self.certificate)
            .finish_non_exhaustive()
    }
}

impl DeploymentCa {
    /// A new CA for the deployment `name` (free text, e.g. "Jinhua city"), valid for
    /// [`DEFAULT_CA_LIFETIME`].
    pub fn generate(name: &str) -> Result<Self, NetError> {
        Self::generate_with(name, Validity::starting_now(DEFAULT_CA_LIFETIME))
    }

    /// A new CA with an explicit validity.
    pub fn generate_with(name: &str, validity: Validity) -> Result<Self, NetError> {
        let name = name.trim();
        if name.is_empty() {
            return Err(NetError::config(
                "deployment name",
                "it is empty; name the deployment, e.g. \"jinhua-city\"",
            ));
        }
        let key = KeyPair::generate().map_err(|source| NetError::CertGeneration {
            action: "generate the CA key",
            source,
        })?;
        let mut params = CertificateParams::default();
        validity.apply(&mut params)?;
        let mut dn = DistinguishedName::new();
        dn.push(DnType::OrganizationName, "Courseway");
        dn.push(DnType::CommonName, format!("Courseway deployment CA: {name}"));
        params.distinguished_name = dn;
        // Path length 0: the CA signs node certificates only, never another CA.
        params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let cert = params.self_signed(&key).map_err(|source| NetError::CertGeneration {
            action: "self-sign the CA certificate",
            source,
        })?;
        Ok(Self {
            certificate: CaCertificate::from_der(cert.der().clone()),
            issuer: Issuer::new(params, key),
        })
    }

    /// The CA's public certificate, for nodes to trust.
    pub fn certificate(&self) -> &CaCertificate {
        &self.certificate
    }

    /// Issues a node certificate and a fresh key for `role` and `name`.
    pub fn issue(&self, role: Role, name: &NodeName, validity: Validity) -> Result<NodeCredentials, NetError> {
        let identity = PeerIdentity::new(role, name.clone());
        let key = KeyPair::generate().map_err(|source| NetError::CertGeneration {
            action: "generate a node key",
            source,
        })?;
        let params = node_params(&identity, validity)?;
        let cert = params
            .signed_by(&key, &self.issuer)
            .map_err(|source| NetError::CertGeneration {
                action: "sign the node certificate",
                source,
            })?;
        tracing::info!(node = %identity, "issued node certificate");
        Ok(NodeCredentials {
            identity,
            cert: cert.der().clone(),
            key: PrivatePkcs8KeyDer::from(key.serialize_der()),
        })
    }

    /// Issues a node certificate for `role` and `name` to the key of a certificate signing
    /// request (PEM, made by [`NodeKeyRequest::generate`] on the node), so that the node's
    /// private key never leaves it. The CSR's signature must verify (the requester holds the
    /// key); everything it asks for besides its public key is ignored: the role, the name and
    /// the validity are the CA's to decide.
    pub fn issue_for_request(
        &self,
        role: Role,
        name: &NodeName,
        csr_pem: &str,
        validity: Validity,
    ) -> Result<CertificateDer<'static>, NetError> {
        let csr = rcgen::CertificateSigningRequestParams::from_pem(csr_pem).map_err(|e| NetError::BadCertificate {
            what: "the certificate signing request",
            reason: format!("it cannot be parsed or its signature does not verify ({e})"),
        })?;
        let params = node_params(&PeerIdentity::new(role, name.clone()), validity)?;
        let cert = params
            .signed_by(&csr.public_key, &self.issuer)
            .map_err(|source| NetError::CertGeneration {
                action: "sign the node certificate",
                source,
            })?;
        tracing::info!(node = %PeerIdentity::new(role, name.clone()), "issued a node certificate to a requested key");
        Ok(cert.der().clone())
    }

    /// The CA certificate as PEM.
    pub fn cert_pem(&self) -> String {
        self.certificate.to_pem()
    }

    /// The CA key as PKCS#8 PEM. Secret.
    pub fn key_pem(&self) -> String {
        self.issuer.key().serialize_pem()
    }

    /// Rebuilds the CA from its certificate and key PEM; refuses a key that is not the
    /// certificate's.
    pub fn from_pem(cert_pem: &str, key_pem: &str) -> Result<Self, NetError> {
        let certificate = CaCertificate::from_pem(cert_pem)?;
        let key = KeyPair::from_pem(key_pem).map_err(|e| NetError::Pem {
            what: "the CA key PEM",
            reason: format!("{e}; expected a PKCS#8 \"PRIVATE KEY\" block"),
        })?;
        let (_, parsed) = x509_parser::parse_x509_certificate(certificate.der()).map_err(|e| NetError::Pem {
            what: "the CA certificate",
            reason: format!("it is not valid X.509 ({e})"),
        })?;
        if !parsed.is_ca() {
            return Err(NetError::Pem {
                what: "the CA certificate",
                reason: "it is not a CA certificate (no CA basic constraint); did you pass a node certificate?".into(),
            });
        }
        if parsed.public_key().subject_public_key.data.as_ref() != key.public_key_raw() {
            return Err(NetError::CaKeyMismatch);
        }
        let issuer = Issuer::from_ca_cert_der(certificate.der(), key).map_err(|source| NetError::CertGeneration {
            action: "use the CA certificate as an issuer",
            source,
        })?;
        Ok(Self { certificate, issuer })
    }

    /// Writes the certificate and key PEM files (the key readable by its owner only). Neither
    /// file may exist yet.
    pub fn save(&self, cert_path: &Path, key_path: &Path) -> Result<(), NetError> {
        write_new_file(key_path, self.key_pem().as_bytes(), true)?;
        write_new_file(cert_path, self.cert_pem().as_bytes(), false)
    }

    /// Reads files written by [`DeploymentCa::save`].
    pub fn load(cert_path: &Path, key_path: &Path) -> Result<Self, NetError> {
        Self::from_pem(&read_file(cert_path)?, &read_file(key_path)?)
    }
}

/// The parameters of a node certificate for `identity`.
fn node_params(identity: &PeerIdentity, validity: Validity) -> Result<CertificateParams, NetError> {
    let mut params = CertificateParams::default();
    validity.apply(&mut params)?;
    let mut dn = DistinguishedName::new();
    dn.push(DnType::OrganizationName, "Courseway");
    dn.push(DnType::OrganizationalUnitName, role_label(identity.role));
    dn.push(DnType::CommonName, identity.name.as_str());
    params.distinguished_name = dn;
    let uri = Ia5String::try_from(identity.to_uri()).map_err(|e| NetError::BadCertificate {
        what: "the node identity",
        reason: format!("it cannot be put in a URI ({e})"),
    })?;
    params.subject_alt_names = vec![SanType::URI(uri)];
    params.is_ca = IsCa::ExplicitNoCa;
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth, ExtendedKeyUsagePurpose::ClientAuth];
    params.use_authority_key_identifier_extension = true;
    Ok(params)
}

/// A key pair made on a node and the certificate signing request for it: what `courseway
/// enroll` sends (the request) and keeps (the key).
pub struct NodeKeyRequest {
    key: KeyPair,
    csr_pem: String,
}

impl fmt::Debug for NodeKeyRequest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The key stays out of logs.
        f.debug_struct("NodeKeyRequest").finish_non_exhaustive()
    }
}

impl NodeKeyRequest {
    /// A fresh P-256 key and a CSR for it (its subject says nothing: the CA decides the
    /// identity from the enrolment token).
    pub fn generate() -> Result<Self, NetError> {
        let key = KeyPair::generate().map_err(|source| NetError::CertGeneration {
            action: "generate a node key",
            source,
        })?;
        let mut params = CertificateParams::default();
        params.distinguished_name = DistinguishedName::new();
        let csr = params
            .serialize_request(&key)
            .and_then(|csr| csr.pem())
            .map_err(|source| NetError::CertGeneration {
                action: "make the certificate signing request",
                source,
            })?;
        Ok(Self { key, csr_pem: csr })
    }

    /// The CSR, PEM.
    pub fn csr_pem(&self) -> &str {
        &self.csr_pem
    }

    /// The credentials once the CA answered with `cert_pem`: the certificate must chain to
    /// `ca`, be valid now, carry a Courseway identity, and hold this request's key.
    pub fn complete(self, ca: &CaCertificate, cert_pem: &str) -> Result<NodeCredentials, NetError> {
        let credentials = NodeCredentials::from_pem(cert_pem, &self.key.serialize_pem())?;
        ca.verify_issued(credentials.cert_der())?;
        Ok(credentials)
    }
}

/// A node's certificate and private key, with the identity the certificate carries.
#[derive(PartialEq, Eq)]
pub struct NodeCredentials {
    identity: PeerIdentity,
    cert: CertificateDer<'static>,
    key: PrivatePkcs8KeyDer<'static>,
}

impl Clone for NodeCredentials {
    fn clone(&self) -> Self {
        Self {
            identity: self.identity.clone(),
            cert: self.cert.clone(),
            key: self.key.clone_key(),
        }
    }
}

impl fmt::Debug for NodeCredentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The key stays out of logs.
        f.debug_struct("NodeCredentials")
            .field("identity", &self.identity)
            .finish_non_exhaustive()
    }
}

impl NodeCredentials {
    /// The role and name the certificate carries.
    pub fn identity(&self) -> &PeerIdentity {
        &self.identity
    }

    /// The certificate's DER bytes.
    pub fn cert_der(&self) -> &CertificateDer<'static> {
        &self.cert
    }

    /// The private key (PKCS#8 DER). Secret.
    pub fn key_der(&self) -> PrivateKeyDer<'static> {
        PrivateKeyDer::Pkcs8(self.key.clone_key())
    }

    /// The certificate as PEM.
    pub fn cert_pem(&self) -> String {
        encode_pem(CERT_TAG, &self.cert)
    }

    /// The key as PKCS#8 PEM. Secret.
    pub fn key_pem(&self) -> String {
        encode_pem(KEY_TAG, self.key.secret_pkcs8_der())
    }

    /// Reads a certificate and its PKCS#8 key; refuses a certificate without a Courseway
    /// identity or a key that is not the certificate's.
    pub fn from_pem(cert_pem: &str, key_pem: &str) -> Result<Self, NetError> {
        let cert = CertificateDer::from(decode_pem(cert_pem, CERT_TAG, "the node certificate PEM")?);
        let key = PrivatePkcs8KeyDer::from(decode_pem(key_pem, KEY_TAG, "the node key PEM")?);
        let identity = PeerIdentity::from_certificate_der(&cert)?;
        let key_pair = KeyPair::try_from(key.secret_pkcs8_der()).map_err(|e| NetError::Pem {
            what: "the node key",
            reason: format!("it is not a usable PKCS#8 key ({e})"),
        })?;
        let (_, parsed) = x509_parser::parse_x509_certificate(&cert).map_err(|e| NetError::Pem {
            what: "the node certificate",
            reason: format!("it is not valid X.509 ({e})"),
        })?;
        if parsed.public_key().subject_public_key.data.as_ref() != key_pair.public_key_raw() {
            return Err(NetError::Pem {
                what: "the node key",
                reason: "it does not belong to the node certificate; load the key issued with it".into(),
            });
        }
        Ok(Self { identity, cert, key })
    }

    /// Writes the certificate and key PEM files (the key readable by its owner only). Neither
    /// file may exist yet.
    pub fn save(&self, cert_path: &Path, key_path: &Path) -> Result<(), NetError> {
        write_new_file(key_path, self.key_pem().as_bytes(), true)?;
        write_new_file(cert_path, self.cert_pem().as_bytes(), false)
    }

    /// Reads files written by [`NodeCredentials::save`].
    pub fn load(cert_path: &Path, key_path: &Path) -> Result<Self, NetError> {
        Self::from_pem(&read_file(cert_path)?, &read_file(key_path)?)
    }
}

/// What a node needs to take part in a deployment: the CA it trusts, its own credentials, and
/// the nodes it refuses (revoked by the catalog; shared by clones).
#[derive(Debug, Clone)]
pub struct Enrollment {
    pub ca: CaCertificate,
    pub credentials: NodeCredentials,
    revocations: Revocations,
}

impl Enrollment {
    /// Bundles the CA certificate and the node's credentials, with nothing revoked yet.
    pub fn new(ca: CaCertificate, credentials: NodeCredentials) -> Self {
        Self {
            ca,
            credentials,
            revocations: Revocations::new(),
        }
    }

    /// The revoked nodes this node refuses; every server and client made from this enrollment
    /// (or a clone of it) consults the same set. Replace it from each verified catalog.
    pub fn revocations(&self) -> &Revocations {
        &self.revocations
    }

    /// This node's role and name.
    pub fn identity(&self) -> &PeerIdentity {
        self.credentials.identity()
    }
}

fn encode_pem(tag: &str, der: &[u8]) -> String {
    pem::encode_config(
        &pem::Pem::new(tag, der.to_vec()),
        pem::EncodeConfig::new().set_line_ending(pem::LineEnding::LF),
    )
}

fn decode_pem(text: &str, tag: &str, what: &'static str) -> Result<Vec<u8>, NetError> {
    let blocks = pem::parse_many(text).map_err(|e| NetError::Pem {
        what,
        reason: format!("it is not PEM ({e})"),
    })?;
    blocks
        .into_iter()
        .find(|b| b.tag() == tag)
        .map(|b| b.into_contents())
        .ok_or_else(|| NetError::Pem {
            what,
            reason: format!("it has no \"{tag}\" block"),
        })
}

fn read_file(path: &Path) -> Result<String, NetError> {
    std::fs::read_to_string(path).map_err(|source| NetError::File {
        action: "read",
        path: path.to_owned(),
        source,
    })
}

fn write_new_file(path: &Path, contents: &[u8], secret: bool) -> Result<(), NetError> {
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(if secret { 0o600 } else { 0o644 });
    }
    #[cfg(not(unix))]
    let _ = secret;
    let err = |action, source| NetError::File {
        action,
        path: path.to_owned(),
        source,
    };
    let mut file = options.open(path).map_err(|source| {
        if source.kind() == std::io::ErrorKind::AlreadyExists {
            err(
                "create (it already exists; move it away first if you mean to replace it)",
                source,
            )
        } else {
            err("create", source)
        }
    })?;
    file.write_all(contents).map_err(|e| err("write", e))?;
    file.sync_all().map_err(|e| err("sync", e))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn name(s: &str) -> NodeName {
        NodeName::new(s).unwrap()
    }

    #[test]
    fn issued_certificate_carries_role_and_name() {
        let ca = DeploymentCa::generate("test").unwrap();
        let creds = ca
            .issue(
                Role::Relay,
                &name("district:07_a"),
                Validity::starting_now(Duration::from_secs(3600)),
            )
            .unwrap();
        let id = PeerIdentity::from_certificate_der(creds.cert_der()).unwrap();
        assert_eq!(id, PeerIdentity::new(Role::Relay, name("district:07_a")));
    }

    #[test]
    fn a_requested_key_is_certified_without_leaving_the_node() {
        let ca = DeploymentCa::generate("test").unwrap();
        let request = NodeKeyRequest::generate().unwrap();
        let v = Validity::starting_now(Duration::from_secs(3600));
        let cert = ca
            .issue_for_request(Role::Station, &name("village-9"), request.csr_pem(), v)
            .unwrap();
        let pem = encode_pem(CERT_TAG, &cert);
        let creds = request.complete(ca.certificate(), &pem).unwrap();
        assert_eq!(creds.identity(), &PeerIdentity::new(Role::Station, name("village-9")));
        // Another CA's answer, or a certificate for another key, is refused.
        let other = DeploymentCa::generate("other").unwrap();
        let request = NodeKeyRequest::generate().unwrap();
        let forged = other
            .issue_for_request(Role::Station, &name("village-9"), request.csr_pem(), v)
            .unwrap();
        let err = request
            .complete(ca.certificate(), &encode_pem(CERT_TAG, &forged))
            .unwrap_err();
        assert!(err.to_string().contains("deployment CA"), "{err}");
        let request = NodeKeyRequest::generate().unwrap();
        assert!(request.complete(ca.certificate(), &pem).is_err());
        // A damaged CSR (its signature no longer verifies) is refused.
        let csr = NodeKeyRequest::generate().unwrap().csr_pem().to_string();
        let mut lines: Vec<String> = csr.lines().map(str::to_string).collect();
        let mid = lines.len() / 2;
        lines[mid] = "A".repeat(lines[mid].len());
        assert!(ca
            .issue_for_request(Role::Station, &name("x"), &lines.join("\n"), v)
            .is_err());
    }

    #[test]
    fn pem_round_trips() {
        let ca = DeploymentCa::generate("test").unwrap();
        let ca2 = DeploymentCa::from_pem(&ca.cert_pem(), &ca.key_pem()).unwrap();
        assert_eq!(ca2.certificate(), ca.certificate());
        // The reloaded CA can still issue.
        let creds = ca2
            .issue(
                Role::Station,
                &name("village-1"),
                Validity::starting_now(Duration::from_secs(60)),
            )
            .unwrap();
        let creds2 = NodeCredentials::from_pem(&creds.cert_pem(), &creds.key_pem()).unwrap();
        assert_eq!(creds2, creds);
        assert_eq!(
            CaCertificate::from_pem(&ca.certificate().to_pem()).unwrap(),
            *ca.certificate()
        );
    }

    #[test]
    fn mismatched_keys_are_refused() {
        let ca = DeploymentCa::generate("a").unwrap();
        let other = DeploymentCa::generate("b").unwrap();
        assert!(matches!(
            DeploymentCa::from_pem(&ca.cert_pem(), &other.key_pem()),
            Err(NetError::CaKeyMismatch)
        ));
        let v = Validity::starting_now(Duration::from_secs(60));
        let n1 = ca.issue(Role::Station, &name("s1"), v).unwrap();
        let n2 = ca.issue(Role::Station, &name("s2"), v).unwrap();
        assert!(NodeCredentials::from_pem(&n1.cert_pem(), &n2.key_pem()).is_err());
        // A node certificate is not a CA certificate.
        assert!(DeploymentCa::from_pem(&n1.cert_pem(), &n1.key_pem()).is_err());
    }

    #[test]
    fn bad_inputs_are_errors() {
        assert!(DeploymentCa::generate("  ").is_err());
        let now = SystemTime::now();
        assert!(Validity::between(now, now).is_err());
        let far = Validity::starting_now(Duration::MAX);
        assert!(Validity::between(far.not_before, far.not_after).is_ok());
        assert!(Validity::between(now, far.not_after + Duration::from_secs(1)).is_err());
        // The longest validity still makes a certificate.
        let ca = DeploymentCa::generate_with("far", far).unwrap();
        ca.issue(Role::Station, &name("s"), far).unwrap();
        assert!(CaCertificate::from_pem("hello").is_err());
        assert!(NodeCredentials::from_pem("", "").is_err());
    }

    #[test]
    fn save_and_load_and_no_overwrite() {
        let dir = tempfile::tempdir().unwrap();
        let (c, k) = (dir.path().join("ca.pem"), dir.path().join("ca.key"));
        let ca = DeploymentCa::generate("files").unwrap();
        ca.save(&c, &k).unwrap();
        let loaded = DeploymentCa::load(&c, &k).unwrap();
        assert_eq!(loaded.certificate(), ca.certificate());
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            assert_eq!(std::fs::metadata(&k).unwrap().permissions().mode() & 0o777, 0o600);
        }
        let err = ca.save(&c, &k).unwrap_err().to_string();
        assert!(err.contains("already exists"), "{err}");
        let missing = DeploymentCa::load(&dir.path().join("nope.pem"), &k)
            .unwrap_err()
            .to_string();
        assert!(missing.contains("nope.pem"), "{missing}");
    }
}
