//! Enrolment: how a new node turns a one-time token into its certificate, and why it can trust
//! the answer.
//!
//! 1. At the origin, `courseway token create --role station --name village-0123` makes 32
//!    random bytes (the secret) and stores only two values derived from it, the token id
//!    (`blake3(secret)`) and the MAC key ([`mac_key`]), with the role, the name and an
//!    expiry. It prints the token once:
//!
//!    ```text
//!    cwe_<secret, 64 hex digits>_<pin, 32 hex digits>
//!    ```
//!
//!    The pin is [`pin`] of the deployment CA certificate and the root public key: the two
//!    things the node will be told to trust.
//! 2. The node makes its key pair, a CSR for it, and sends an [`EnrolRequest`]: the token id,
//!    the CSR, and `mac = blake3::keyed_hash(mac_key(secret), CSR)`. Neither the secret nor
//!    the MAC key travels, so someone who reads the request cannot reuse the token, and cannot
//!    swap in a CSR of their own (they cannot compute its MAC).
//! 3. The origin finds the token by its id (unused, unexpired), checks the MAC and the CSR's
//!    signature, issues a certificate for the token's role and name (whatever the CSR asks for)
//!    from the deployment CA, marks the token used, and answers with an [`EnrolAnswer`]: the
//!    certificate, the CA certificate and the root public key.
//! 4. The node checks that the CA certificate and root key hash to the pin in its token, that
//!    the certificate chains to that CA and holds its own public key, and writes its
//!    credentials directory. An answer from anyone without the deployment's CA key fails.

use serde::{Deserialize, Serialize};

/// Every enrolment token starts with this.
pub const ENROL_TOKEN_PREFIX: &str = "cwe_";
/// Longest CSR accepted, in bytes of PEM (a P-256 CSR is about 500).
pub const MAX_CSR_PEM: usize = 8 << 10;

const PIN_CONTEXT: &str = "courseway 2026 enrolment pin: CA certificate DER, root public key";
const MAC_CONTEXT: &str = "courseway 2026 enrolment request MAC key";

/// The secret part of a token.
pub type Secret = [u8; 32];
/// The pin: the first 16 bytes of the keyed hash of the CA certificate and the root key.
pub type Pin = [u8; 16];

/// Why an enrolment token or message could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EnrolFormatError {
    #[error("an enrolment token looks like cwe_<64 hex digits>_<32 hex digits>; check that it was copied whole")]
    Token,
    #[error("{field} must be {len} hex digits")]
    Hex { field: &'static str, len: usize },
    #[error("the CSR is {len} bytes; at most {MAX_CSR_PEM}")]
    CsrTooLong { len: usize },
    #[error("the CSR must be one PEM \"CERTIFICATE REQUEST\" block")]
    CsrNotPem,
}

/// A token as the operator hands it to the person enrolling a node.
#[derive(Clone, PartialEq, Eq)]
pub struct EnrolToken {
    pub secret: Secret,
    pub pin: Pin,
}

impl std::fmt::Debug for EnrolToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The secret stays out of logs.
        f.debug_struct("EnrolToken")
            .field("id", &token_id(&self.secret))
            .field("pin", &hex(&self.pin))
            .finish()
    }
}

impl std::fmt::Display for EnrolToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{ENROL_TOKEN_PREFIX}{}_{}", hex(&self.secret), hex(&self.pin))
    }
}

impl std::str::FromStr for EnrolToken {
    type Err = EnrolFormatError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let rest = s
            .trim()
            .strip_prefix(ENROL_TOKEN_PREFIX)
            .ok_or(EnrolFormatError::Token)?;
        let (secret, pin) = rest.split_once('_').ok_or(EnrolFormatError::Token)?;
        Ok(Self {
            secret: unhex(secret).map_err(|_| EnrolFormatError::Token)?,
            pin: unhex(pin).map_err(|_| EnrolFormatError::Token)?,
        })
    }
}

impl EnrolToken {
    /// The id the origin stores and the request names: BLAKE3 of the secret, hex.
    pub fn id(&self) -> String {
        token_id(&self.secret)
    }

    /// The request's MAC over the CSR.
    pub fn mac(&self, csr_pem: &str) -> String {
        mac(&mac_key(&self.secret), csr_pem)
    }
}

/// The token id for `secret`: BLAKE3, 64 hex digits.
pub fn token_id(secret: &Secret) -> String {
    blake3::hash(secret).to_hex().to_string()
}

/// The key the request's MAC is made with, derived from the secret; the origin stores it (not
/// the secret) to check requests.
pub fn mac_key(secret: &Secret) -> [u8; 32] {
    blake3::derive_key(MAC_CONTEXT, secret)
}

/// `blake3::keyed_hash(key, csr_pem)`, hex.
pub fn mac(key: &[u8; 32], csr_pem: &str) -> String {
    blake3::keyed_hash(key, csr_pem.as_bytes()).to_hex().to_string()
}

/// The pin of a deployment: what an enrolling node checks the answer against.
pub fn pin(ca_der: &[u8], root_public: &[u8; 32]) -> Pin {
    let mut h = blake3::Hasher::new_derive_key(PIN_CONTEXT);
    h.update(&(ca_der.len() as u64).to_be_bytes());
    h.update(ca_der);
    h.update(root_public);
    let mut out = [0u8; 16];
    out.copy_from_slice(&h.finalize().as_bytes()[..16]);
    out
}

/// Compares two MACs in constant time (BLAKE3's `Hash` equality is constant-time).
pub fn mac_matches(expected: &str, offered: &str) -> bool {
    match (unhex::<32>(expected), unhex::<32>(offered)) {
        (Ok(a), Ok(b)) => blake3::Hash::from(a) == blake3::Hash::from(b),
        _ => false,
    }
}

/// `POST /api/enrol`: unauthenticated by bearer token (the enrolment token is the credential).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EnrolRequest {
    /// [`token_id`] of the token's secret.
    pub token: String,
    /// The node's certificate signing request, PEM.
    pub csr: String,
    /// [`mac`] of the CSR PEM under the token's [`mac_key`].
    pub mac: String,
}

impl EnrolRequest {
    /// Parses and checks the shape of a request body (lengths, hex); the CSR's contents and
    /// signature are checked by the origin with the deployment CA's code.
    pub fn parse(bytes: &[u8]) -> Result<Self, EnrolParseError> {
        let request: Self = crate::body::parse(bytes)?;
        unhex::<32>(&request.token).map_err(|_| EnrolFormatError::Hex {
            field: "token",
            len: 64,
        })?;
        unhex::<32>(&request.mac).map_err(|_| EnrolFormatError::Hex { field: "mac", len: 64 })?;
        if request.csr.len() > MAX_CSR_PEM {
            return Err(EnrolFormatError::CsrTooLong { len: request.csr.len() }.into());
        }
        let trimmed = request.csr.trim();
        if !trimmed.starts_with("-----BEGIN CERTIFICATE REQUEST-----")
            || !trimmed.ends_with("-----END CERTIFICATE REQUEST-----")
        {
            return Err(EnrolFormatError::CsrNotPem.into());
        }
        Ok(request)
    }
}

/// Why an enrolment request body was refused (HTTP 400).
#[derive(Debug, thiserror::Error)]
pub enum EnrolParseError {
    #[error(transparent)]
    Body(#[from] crate::body::BodyError),
    #[error(transparent)]
    Format(#[from] EnrolFormatError),
}

/// The origin's answer to an accepted enrolment.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EnrolAnswer {
    /// `station`, `relay`, …: the role the token was made for.
    pub role: String,
    /// The node's name, from the token.
    pub name: String,
    /// The node's certificate, PEM.
    pub certificate: String,
    /// The deployment CA certificate, PEM.
    pub ca: String,
    /// The deployment's root public key, 64 hex digits.
    pub root: String,
}

/// Lowercase hex.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Exactly `N` bytes from `2N` hex digits.
pub fn unhex<const N: usize>(text: &str) -> Result<[u8; N], EnrolFormatError> {
    let bad = EnrolFormatError::Hex {
        field: "value",
        len: 2 * N,
    };
    let bytes = text.as_bytes();
    if bytes.len() != 2 * N {
        return Err(bad);
    }
    let mut out = [0u8; N];
    for (i, pair) in bytes.chunks_exact(2).enumerate() {
        let digit = |c: u8| (c as char).to_digit(16);
        match (digit(pair[0]), digit(pair[1])) {
            (Some(h), Some(l)) => out[i] = (h * 16 + l) as u8,
            _ => return Err(bad),
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_print_and_parse() {
        let t = EnrolToken {
            secret: [7; 32],
            pin: [9; 16],
        };
        let text = t.to_string();
        assert!(text.starts_with("cwe_") && text.len() == 4 + 64 + 1 + 32, "{text}");
        assert_eq!(text.parse::<EnrolToken>().unwrap(), t);
        assert!(!format!("{t:?}").contains(&hex(&t.secret)), "the secret is not logged");
        for bad in ["", "cwe_", "cw_x", &text[..text.len() - 1], &text.replace('_', "-")] {
            assert!(bad.parse::<EnrolToken>().is_err(), "{bad:?}");
        }
    }

    #[test]
    fn requests_are_checked_for_shape() {
        let t = EnrolToken {
            secret: [1; 32],
            pin: [2; 16],
        };
        let csr = "-----BEGIN CERTIFICATE REQUEST-----\nAAAA\n-----END CERTIFICATE REQUEST-----\n";
        let body = serde_json::json!({ "token": t.id(), "csr": csr, "mac": t.mac(csr) }).to_string();
        let r = EnrolRequest::parse(body.as_bytes()).unwrap();
        assert!(mac_matches(&r.mac, &mac(&mac_key(&t.secret), &r.csr)));
        assert!(!mac_matches(&r.mac, &mac(&mac_key(&[3; 32]), &r.csr)));
        assert!(!mac_matches(&r.mac, &mac(&mac_key(&t.secret), "another csr")));
        let bad = serde_json::json!({ "token": "zz", "csr": csr, "mac": t.mac(csr) }).to_string();
        assert!(EnrolRequest::parse(bad.as_bytes()).is_err());
        let bad = serde_json::json!({ "token": t.id(), "csr": "hello", "mac": t.mac(csr) }).to_string();
        assert!(EnrolRequest::parse(bad.as_bytes()).is_err());
    }

    #[test]
    fn the_pin_depends_on_both_the_ca_and_the_root() {
        let p = pin(b"ca", &[1; 32]);
        assert_ne!(p, pin(b"cb", &[1; 32]));
        assert_ne!(p, pin(b"ca", &[2; 32]));
        // Lengths are framed: moving a byte between the two inputs changes the pin.
        assert_ne!(pin(b"c", &[1; 32]), pin(b"ca", &[1; 32]));
    }
}
