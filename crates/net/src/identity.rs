//! Who a node is, as carried in its certificate.
//!
//! A node certificate names its node in one URI subject alternative name:
//!
//! ```text
//! courseway://<role>/<node-name>        e.g. courseway://relay/district-07
//! ```
//!
//! where `<role>` is one of `origin`, `relay`, `station`, `operator` and `<node-name>` a
//! [`NodeName`] (its characters, `A-Z a-z 0-9 . _ - :`, are all valid in a URI path, so the name
//! appears verbatim). The URI SAN is the only source of truth: the subject's CN (the node name)
//! and OU (the role) repeat it for people reading the certificate with `openssl x509 -text`,
//! but are not read back. Node names are not DNS names (they may hold `_` and `:`), which is why
//! the name is not a DNS SAN and why the client checks the server's name itself
//! (see the private `tls` module) instead of through rustls's DNS name matching.

use std::fmt;

use courseway_content::NodeName;
use courseway_proto::Role;
use x509_parser::extensions::GeneralName;

use crate::error::NetError;

/// The URI scheme of the identity SAN.
pub const IDENTITY_URI_SCHEME: &str = "courseway";

/// A peer's role and name, read from its certificate after the handshake verified it.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct PeerIdentity {
    pub role: Role,
    pub name: NodeName,
}

impl PeerIdentity {
    /// An identity.
    pub fn new(role: Role, name: NodeName) -> Self {
        Self { role, name }
    }

    /// The identity's URI, as put in the certificate: `courseway://relay/district-07`.
    pub fn to_uri(&self) -> String {
        format!("{IDENTITY_URI_SCHEME}://{}/{}", role_label(self.role), self.name)
    }

    /// Parses an identity URI. `None` if it is not a `courseway://` URI at all (another SAN),
    /// an error if it is one but malformed.
    pub fn from_uri(uri: &str) -> Option<Result<Self, String>> {
        let rest = uri.strip_prefix(IDENTITY_URI_SCHEME)?.strip_prefix("://")?;
        Some(parse_role_and_name(rest))
    }

    /// Reads the identity from a DER certificate (one that a TLS verifier already accepted, or
    /// one being loaded from disk). Exactly one `courseway://` URI SAN is required.
    pub fn from_certificate_der(der: &[u8]) -> Result<Self, NetError> {
        let bad = |reason: String| NetError::BadCertificate {
            what: "the certificate",
            reason,
        };
        let (_, cert) =
            x509_parser::parse_x509_certificate(der).map_err(|e| bad(format!("it is not valid X.509 DER ({e})")))?;
        let san = cert
            .subject_alternative_name()
            .map_err(|e| bad(format!("its subject alternative names are malformed ({e})")))?
            .ok_or_else(|| bad("it has no subject alternative names".into()))?;
        let mut found: Option<Self> = None;
        for name in &san.value.general_names {
            let GeneralName::URI(uri) = name else { continue };
            let Some(parsed) = Self::from_uri(uri) else { continue };
            let identity = parsed.map_err(|reason| bad(format!("its identity URI {uri:?} is malformed: {reason}")))?;
            if found.is_some() {
                return Err(bad("it carries more than one courseway:// identity".into()));
            }
            found = Some(identity);
        }
        found.ok_or_else(|| bad(format!("it has no {IDENTITY_URI_SCHEME}://<role>/<name> URI SAN")))
    }
}

impl fmt::Display for PeerIdentity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", role_label(self.role), self.name)
    }
}

fn parse_role_and_name(rest: &str) -> Result<PeerIdentity, String> {
    let (role, name) = rest
        .split_once('/')
        .ok_or_else(|| "expected <role>/<name> after the scheme".to_string())?;
    let role = parse_role(role).ok_or_else(|| format!("unknown role {role:?}"))?;
    let name = NodeName::new(name).map_err(|e| e.to_string())?;
    Ok(PeerIdentity { role, name })
}

/// The role's lowercase label, as used in identity URIs, certificate OUs and logs.
pub fn role_label(role: Role) -> &'static str {
    match role {
        Role::Origin => "origin",
        Role::Relay => "relay",
        Role::Station => "station",
        Role::Operator => "operator",
    }
}

/// The role for a label from [`role_label`].
pub fn parse_role(label: &str) -> Option<Role> {
    [Role::Origin, Role::Relay, Role::Station, Role::Operator]
        .into_iter()
        .find(|r| role_label(*r) == label)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uri_round_trip() {
        for role in [Role::Origin, Role::Relay, Role::Station, Role::Operator] {
            let id = PeerIdentity::new(role, NodeName::new("district:07_town.3").unwrap());
            assert_eq!(PeerIdentity::from_uri(&id.to_uri()), Some(Ok(id)));
        }
    }

    #[test]
    fn foreign_and_malformed_uris() {
        assert_eq!(PeerIdentity::from_uri("https://relay/x"), None);
        assert!(matches!(PeerIdentity::from_uri("courseway://king/x"), Some(Err(_))));
        assert!(matches!(PeerIdentity::from_uri("courseway://relay"), Some(Err(_))));
        assert!(matches!(PeerIdentity::from_uri("courseway://relay/a/b"), Some(Err(_))));
        assert!(matches!(PeerIdentity::from_uri("courseway://relay/"), Some(Err(_))));
    }

    #[test]
    fn garbage_certificate_is_an_error_not_a_panic() {
        assert!(PeerIdentity::from_certificate_der(b"not a certificate").is_err());
        assert!(PeerIdentity::from_certificate_der(&[]).is_err());
    }
}
