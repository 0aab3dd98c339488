//! Enrolment tokens and the enrolment endpoint's checks (`POST /api/enrol`).
//!
//! `courseway token create --role station --name village-0123 --expires 24h` writes a token to
//! `<data>/enrol-tokens.json` (mode 0600): its id (BLAKE3 of the secret), the key that checks
//! the request's MAC (derived from the secret), role, node name, expiry and, once used, when.
//! The secret is printed once and never stored; the MAC key in the file is as sensitive as the
//! token (it lets one enrol that name), which is why the file is the origin's alone, like
//! `ca.key` beside it. The running
//! origin reads the file on each enrolment, checks the request (see
//! [`courseway_admin_proto::enrol`] for the protocol), issues the certificate from the
//! deployment CA and marks the token used in the same locked read-modify-write, so a token
//! enrols one node.

use std::path::{Path, PathBuf};
use std::time::Duration;

use courseway_admin_proto::enrol::{self, EnrolAnswer, EnrolRequest, EnrolToken, Pin};
use courseway_content::{NodeName, PublicKey};
use courseway_net::{parse_role, role_label, CaCertificate, DeploymentCa, NetError, Validity};
use courseway_proto::Role;
use parking_lot::Mutex;
use serde::{Deserialize, Serialize};

/// The enrolment token file's name in the admin data directory.
pub const ENROL_TOKENS_FILE: &str = "enrol-tokens.json";

/// Where enrolment gets what it needs (`[origin.admin]` `enrol_ca_key`; the CA certificate and
/// root key come from the origin's credentials directory).
#[derive(Debug, Clone)]
pub struct EnrolConfig {
    /// The deployment CA certificate (`ca.crt`).
    pub ca_cert: PathBuf,
    /// The deployment CA's private key (`ca.key`): the origin holds it to issue certificates.
    pub ca_key: PathBuf,
    /// The deployment's root public key (`root.pub`).
    pub root_pub: PathBuf,
    /// How long an issued certificate is valid.
    pub certificate_lifetime: Duration,
}

/// One token as stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EnrolTokenEntry {
    /// The node name the token enrols.
    pub name: String,
    pub role: String,
    /// BLAKE3 of the secret, hex.
    pub id: String,
    /// The request MAC key derived from the secret, hex.
    pub mac_key: String,
    /// Unix seconds.
    pub created: u64,
    /// Unix seconds after which the token is refused.
    pub expires: u64,
    /// Unix seconds it was used at; a used token is refused.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub used: Option<u64>,
}

/// Why a token could not be made or listed, or enrolment could not start.
#[derive(Debug, thiserror::Error)]
pub enum EnrolError {
    #[error("cannot read or write {}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{} is damaged ({source}); restore it or remove it (outstanding enrolment tokens are then void)", path.display())]
    Damaged {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
    #[error("{} does not hold a root public key (64 hex digits); copy root.pub from the deployment keys", path.display())]
    RootKey { path: PathBuf },
    #[error("an unused enrolment token for {0} exists already (it expires at {1}); use it, or wait for it to expire")]
    Outstanding(String, u64),
    #[error("an origin is not enrolled with a token; use `courseway keys issue --role origin`")]
    OriginRole,
    #[error("the deployment CA cannot be loaded: {0}")]
    Ca(#[source] NetError),
}

/// Why an enrolment request was refused; each maps to an HTTP status in `api`.
#[derive(Debug, thiserror::Error)]
pub enum Refusal {
    #[error("the enrolment token is not known here (mistyped, or made for another origin)")]
    UnknownToken,
    #[error("the request's MAC does not match the token; the request was altered, or the token is wrong")]
    BadMac,
    #[error(
        "the enrolment token for {name} was used at {at}; a token enrols one node: ask the operator for a new one"
    )]
    Used { name: String, at: u64 },
    #[error("the enrolment token for {name} expired at {expires}; ask the operator for a new one")]
    Expired { name: String, expires: u64 },
    #[error("{name} is revoked; a revoked name cannot be enrolled again: make a token for a new name")]
    Revoked { name: String },
    #[error("the certificate signing request is refused: {0}")]
    BadRequest(String),
    #[error("enrolment failed at the origin: {0}")]
    Internal(String),
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> EnrolError + '_ {
    move |source| EnrolError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Reads the token file; a missing file is an empty list.
pub fn read_entries(path: &Path) -> Result<Vec<EnrolTokenEntry>, EnrolError> {
    match std::fs::read(path) {
        Ok(bytes) => serde_json::from_slice(&bytes).map_err(|source| EnrolError::Damaged {
            path: path.to_path_buf(),
            source,
        }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Vec::new()),
        Err(e) => Err(io(path)(e)),
    }
}

/// Writes the token file atomically, mode 0600.
fn write_entries(path: &Path, entries: &[EnrolTokenEntry]) -> Result<(), EnrolError> {
    let text = serde_json::to_vec_pretty(entries).expect("token entries always serialise");
    super::private_file::replace(path, &text).map_err(|(path, source)| EnrolError::Io { path, source })
}

/// Reads a `root.pub` file (64 hex digits).
pub fn read_root(path: &Path) -> Result<PublicKey, EnrolError> {
    let text = std::fs::read_to_string(path).map_err(io(path))?;
    enrol::unhex::<32>(text.trim())
        .map(PublicKey::from_bytes)
        .map_err(|_| EnrolError::RootKey {
            path: path.to_path_buf(),
        })
}

/// The pin of the deployment whose CA certificate and root key are at these paths.
pub fn deployment_pin(ca_cert: &Path, root_pub: &Path) -> Result<Pin, EnrolError> {
    let ca = CaCertificate::load(ca_cert).map_err(EnrolError::Ca)?;
    let root = read_root(root_pub)?;
    Ok(enrol::pin(ca.der(), root.as_bytes()))
}

/// Makes a one-time token for `role`/`name`, valid for `lifetime` from `now_unix`, and returns
/// it (to be printed once); only its id is written. `secret` comes from the caller (the
/// operating system's randomness).
pub fn create(
    path: &Path,
    role: Role,
    name: &NodeName,
    now_unix: u64,
    lifetime: Duration,
    secret: enrol::Secret,
    pin: Pin,
) -> Result<EnrolToken, EnrolError> {
    if role == Role::Origin {
        return Err(EnrolError::OriginRole);
    }
    let mut entries = read_entries(path)?;
    if let Some(e) = entries
        .iter()
        .find(|e| e.name == name.as_str() && e.used.is_none() && e.expires > now_unix)
    {
        return Err(EnrolError::Outstanding(e.name.clone(), e.expires));
    }
    let token = EnrolToken { secret, pin };
    entries.push(EnrolTokenEntry {
        name: name.to_string(),
        role: role_label(role).to_string(),
        id: token.id(),
        mac_key: enrol::hex(&enrol::mac_key(&token.secret)),
        created: now_unix,
        expires: now_unix.saturating_add(lifetime.as_secs()),
        used: None,
    });
    write_entries(path, &entries)?;
    Ok(token)
}

/// The origin's side of enrolment: the CA, the token file, one enrolment at a time.
pub struct Enroller {
    tokens: PathBuf,
    ca: DeploymentCa,
    root: PublicKey,
    lifetime: Duration,
    one_at_a_time: Mutex<()>,
}

impl std::fmt::Debug for Enroller {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Enroller")
            .field("tokens", &self.tokens)
            .finish_non_exhaustive()
    }
}

impl Enroller {
    /// Loads the CA (certificate and key) and the root key.
    pub fn open(config: &EnrolConfig, tokens: PathBuf) -> Result<Self, EnrolError> {
        Ok(Self {
            tokens,
            ca: DeploymentCa::load(&config.ca_cert, &config.ca_key).map_err(EnrolError::Ca)?,
            root: read_root(&config.root_pub)?,
            lifetime: config.certificate_lifetime,
            one_at_a_time: Mutex::new(()),
        })
    }

    /// Checks `request` and issues the certificate; `revoked` says whether a name is revoked.
    /// Blocking (file IO and signing): call it on the blocking pool.
    pub fn enrol(
        &self,
        request: &EnrolRequest,
        now_unix: u64,
        revoked: impl Fn(&NodeName) -> bool,
    ) -> Result<EnrolAnswer, Refusal> {
        let _one_at_a_time = self.one_at_a_time.lock();
        let mut entries = read_entries(&self.tokens).map_err(|e| Refusal::Internal(e.to_string()))?;
        let entry = entries
            .iter_mut()
            .find(|e| e.id == request.token)
            .ok_or(Refusal::UnknownToken)?;
        // The MAC first: only the token's holder learns whether it is used or expired.
        let key = enrol::unhex::<32>(&entry.mac_key).map_err(|e| Refusal::Internal(e.to_string()))?;
        if !enrol::mac_matches(&enrol::mac(&key, &request.csr), &request.mac) {
            return Err(Refusal::BadMac);
        }
        if let Some(at) = entry.used {
            return Err(Refusal::Used {
                name: entry.name.clone(),
                at,
            });
        }
        if now_unix >= entry.expires {
            return Err(Refusal::Expired {
                name: entry.name.clone(),
                expires: entry.expires,
            });
        }
        let name = NodeName::new(entry.name.clone()).map_err(|e| Refusal::Internal(e.to_string()))?;
        let role =
            parse_role(&entry.role).ok_or_else(|| Refusal::Internal(format!("unknown role {:?}", entry.role)))?;
        if revoked(&name) {
            return Err(Refusal::Revoked { name: name.to_string() });
        }
        let cert = self
            .ca
            .issue_for_request(role, &name, &request.csr, Validity::starting_now(self.lifetime))
            .map_err(|e| Refusal::BadRequest(e.to_string()))?;
        entry.used = Some(now_unix);
        write_entries(&self.tokens, &entries).map_err(|e| Refusal::Internal(e.to_string()))?;
        Ok(EnrolAnswer {
            role: role_label(role).to_string(),
            name: name.to_string(),
            // A certificate's PEM, whatever it certifies.
            certificate: CaCertificate::from_der(cert).to_pem(),
            ca: self.ca.cert_pem(),
            root: enrol::hex(self.root.as_bytes()),
        })
    }
}
