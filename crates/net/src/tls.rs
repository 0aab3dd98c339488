//! rustls configurations for mutual TLS against the deployment CA.
//!
//! - Server side: rustls's [`WebPkiClientVerifier`] with the CA as the only root. A client
//!   without a certificate, or with one that does not chain to the CA, fails the handshake.
//! - Client side: [`DeploymentServerVerifier`] checks that the server's certificate chains to the
//!   CA (webpki, with the server-auth key purpose) and that the identity it carries names the
//!   node the client meant to reach.
//! - Both verifiers refuse a peer whose name is in the node's [`Revocations`] (from the newest
//!   verified catalog), with rustls's `CertificateError::Revoked`. Node names are not DNS names, so rustls's DNS name check
//!   is replaced by this identity check; the TLS server name (SNI) is only a hint.
//!
//! TLS 1.3 only (QUIC requires it), ring as the crypto provider, ALPN [`ALPN`]. Session
//! resumption is off: each connection does a full handshake, so every connection checks the
//! peer's certificate (connections are long-lived, so the cost is negligible).

use std::sync::Arc;

use courseway_content::NodeName;
use courseway_proto::ALPN;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::{verify_server_cert_signed_by_trust_anchor, Resumption};
use rustls::crypto::{CryptoProvider, WebPkiSupportedAlgorithms};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::server::{ParsedCertificate, WebPkiClientVerifier};
use rustls::{CertificateError, DigitallySignedStruct, DistinguishedName, OtherError, RootCertStore, SignatureScheme};

use crate::ca::Enrollment;
use crate::error::NetError;
use crate::identity::PeerIdentity;
use crate::revocation::Revocations;

/// The TLS server name sent when the node name is not a valid DNS name or IP address.
const FALLBACK_SNI: &str = "node.courseway.invalid";

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn roots(enrollment: &Enrollment) -> Result<Arc<RootCertStore>, NetError> {
    let mut roots = RootCertStore::empty();
    roots.add(enrollment.ca.der().clone()).map_err(NetError::tls)?;
    Ok(Arc::new(roots))
}

/// The rustls server configuration: present our certificate, require a client certificate
/// chaining to the deployment CA.
pub(crate) fn server_config(enrollment: &Enrollment) -> Result<rustls::ServerConfig, NetError> {
    let provider = provider();
    let webpki = WebPkiClientVerifier::builder_with_provider(roots(enrollment)?, provider.clone())
        .build()
        .map_err(NetError::tls)?;
    let verifier = Arc::new(RevocationCheckingClientVerifier {
        webpki,
        revocations: enrollment.revocations().clone(),
    });
    let creds = &enrollment.credentials;
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(NetError::tls)?
        .with_client_cert_verifier(verifier)
        .with_single_cert(vec![creds.cert_der().clone()], creds.key_der())
        .map_err(NetError::tls)?;
    config.alpn_protocols = vec![ALPN.to_vec()];
    Ok(config)
}

/// The rustls client configuration for reaching the node `expected`: present our certificate,
/// accept only a server certificate from the deployment CA that names `expected`.
pub(crate) fn client_config(enrollment: &Enrollment, expected: &NodeName) -> Result<rustls::ClientConfig, NetError> {
    let provider = provider();
    let verifier = DeploymentServerVerifier {
        roots: roots(enrollment)?,
        algorithms: provider.signature_verification_algorithms,
        expected: expected.clone(),
        revocations: enrollment.revocations().clone(),
    };
    let creds = &enrollment.credentials;
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(NetError::tls)?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(verifier))
        .with_client_auth_cert(vec![creds.cert_der().clone()], creds.key_der())
        .map_err(NetError::tls)?;
    config.alpn_protocols = vec![ALPN.to_vec()];
    // A resumed session would skip the certificate check for the expected name; see module doc.
    config.resumption = Resumption::disabled();
    config.enable_early_data = false;
    Ok(config)
}

/// The TLS server name to send for a node: its name if that is a valid DNS name or IP address,
/// otherwise a fixed placeholder (the verifier checks the real name in the certificate).
pub(crate) fn server_name_for(node: &NodeName) -> &str {
    match ServerName::try_from(node.as_str()) {
        Ok(_) => node.as_str(),
        Err(_) => FALLBACK_SNI,
    }
}

/// Verifies a server certificate: chains to the deployment CA, is valid now, is meant for server
/// authentication, and names the node we meant to reach.
#[derive(Debug)]
pub(crate) struct DeploymentServerVerifier {
    roots: Arc<RootCertStore>,
    algorithms: WebPkiSupportedAlgorithms,
    expected: NodeName,
    revocations: Revocations,
}

impl ServerCertVerifier for DeploymentServerVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let cert = ParsedCertificate::try_from(end_entity)?;
        verify_server_cert_signed_by_trust_anchor(&cert, &self.roots, intermediates, now, self.algorithms.all)?;
        let identity = PeerIdentity::from_certificate_der(end_entity)
            .map_err(|e| rustls::Error::InvalidCertificate(CertificateError::Other(OtherError(Arc::new(e)))))?;
        if identity.name != self.expected {
            tracing::warn!(expected = %self.expected, presented = %identity, "server certificate names another node");
            return Err(rustls::Error::InvalidCertificate(CertificateError::NotValidForName));
        }
        if self.revocations.is_revoked(&identity.name) {
            tracing::warn!(server = %identity, "refusing a revoked server at the handshake");
            return Err(rustls::Error::InvalidCertificate(CertificateError::Revoked));
        }
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        // Never called: the configuration allows TLS 1.3 only. Verified properly regardless.
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}

/// The server's client verifier: rustls's webpki verifier (chains to the deployment CA, valid
/// now, client-auth purpose), then the peer's identity must not be revoked.
#[derive(Debug)]
struct RevocationCheckingClientVerifier {
    webpki: Arc<dyn ClientCertVerifier>,
    revocations: Revocations,
}

impl ClientCertVerifier for RevocationCheckingClientVerifier {
    fn offer_client_auth(&self) -> bool {
        self.webpki.offer_client_auth()
    }

    fn client_auth_mandatory(&self) -> bool {
        self.webpki.client_auth_mandatory()
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        self.webpki.root_hint_subjects()
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        let verified = self.webpki.verify_client_cert(end_entity, intermediates, now)?;
        // A certificate without an identity is refused after the handshake (see `endpoint`);
        // here only a readable, revoked identity matters.
        if let Ok(identity) = PeerIdentity::from_certificate_der(end_entity) {
            if self.revocations.is_revoked(&identity.name) {
                tracing::warn!(client = %identity, "refusing a revoked client at the handshake");
                return Err(rustls::Error::InvalidCertificate(CertificateError::Revoked));
            }
        }
        Ok(verified)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.webpki.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.webpki.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.webpki.supported_verify_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_names() {
        let n = |s: &str| NodeName::new(s).unwrap();
        assert_eq!(server_name_for(&n("district-07")), "district-07");
        assert_eq!(server_name_for(&n("district:07")), FALLBACK_SNI);
    }
}
