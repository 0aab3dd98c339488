//! A deployment's key files, and the `courseway keys` commands that make them.
//!
//! `keys init` makes a deployment directory:
//!
//! | file         | what                                                    | where it lives      |
//! |--------------|---------------------------------------------------------|---------------------|
//! | `root.key`   | the root signing key (seed)                             | offline, after init |
//! | `root.pub`   | the root public key every node trusts                   | every node          |
//! | `online.key` | the origin's signing key and the root's delegation to it | the origin          |
//! | `ca.crt`     | the deployment CA certificate                           | every node          |
//! | `ca.key`     | the CA's private key                                    | where nodes are issued |
//!
//! `keys issue --role R --name N` makes a node directory: `node.crt`, `node.key` (the node's TLS
//! identity, `courseway://R/N`), plus copies of `ca.crt` and `root.pub`. A node's config names
//! that directory as its `credentials`.
//!
//! Secret files are written with mode 0600 and never overwritten: an existing file is an error,
//! so a second `init` cannot silently replace a deployment's keys.

use std::fs::{self, OpenOptions};
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::time::Duration;

use anyhow::{bail, ensure, Context};
use courseway_content::encoding::{Decode, Encode};
use courseway_content::{Delegation, NodeName, OnlineKey, PublicKey, RootKey};
use courseway_net::{CaCertificate, DeploymentCa, Enrollment, NodeCredentials, Validity};
use courseway_proto::Role;
use serde::{Deserialize, Serialize};

pub const ROOT_KEY: &str = "root.key";
pub const ROOT_PUB: &str = "root.pub";
pub const ONLINE_KEY: &str = "online.key";
pub const CA_CERT: &str = "ca.crt";
pub const CA_KEY: &str = "ca.key";
pub const NODE_CERT: &str = "node.crt";
pub const NODE_KEY: &str = "node.key";

/// How long `keys init` and `keys online` delegate signing to the online key by default.
pub const DEFAULT_ONLINE_DAYS: u64 = 90;
/// How long `keys issue` makes a node certificate valid by default.
pub const DEFAULT_NODE_DAYS: u64 = 365;

/// `online.key`: the online signing key's seed and the root's delegation to it.
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct OnlineKeyFile {
    /// The 32-byte ed25519 seed, in hex.
    seed: String,
    /// The root's signed delegation, canonically encoded, in hex.
    delegation: String,
}

/// `root.key`: the root key's seed.
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct RootKeyFile {
    /// The 32-byte ed25519 seed, in hex.
    seed: String,
}

/// Makes a new deployment: root key, online key delegated for `online_days`, CA.
pub fn init(dir: &Path, deployment: &str, online_days: u64) -> anyhow::Result<PublicKey> {
    fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    for name in [ROOT_KEY, ROOT_PUB, ONLINE_KEY, CA_CERT, CA_KEY] {
        ensure!(
            !dir.join(name).exists(),
            "{} already exists: {} already holds a deployment's keys; choose an empty directory",
            dir.join(name).display(),
            dir.display()
        );
    }
    let root = RootKey::from_seed(rand::random());
    let ca = DeploymentCa::generate(deployment).context("making the deployment CA")?;
    write_secret(
        &dir.join(ROOT_KEY),
        &toml::to_string(&RootKeyFile {
            seed: hex(&root.seed()),
        })?,
    )?;
    write_public(&dir.join(ROOT_PUB), &format!("{}\n", hex(root.public().as_bytes())))?;
    write_online_key(&dir.join(ONLINE_KEY), &root, online_days)?;
    write_public(&dir.join(CA_CERT), &ca.cert_pem())?;
    write_secret(&dir.join(CA_KEY), &ca.key_pem())?;
    Ok(root.public())
}

/// Delegates signing to a fresh online key for `days` (run where `root.key` is, then copy
/// `online.key` to the origin and restart it).
pub fn renew_online(dir: &Path, days: u64) -> anyhow::Result<()> {
    let root = load_root_key(&dir.join(ROOT_KEY))?;
    let path = dir.join(ONLINE_KEY);
    if path.exists() {
        fs::remove_file(&path).with_context(|| format!("replacing {}", path.display()))?;
    }
    write_online_key(&path, &root, days)
}

fn write_online_key(path: &Path, root: &RootKey, days: u64) -> anyhow::Result<()> {
    ensure!(days > 0, "the online key must be valid for at least one day");
    let seed: [u8; 32] = rand::random();
    let now = courseway_node::clock::now();
    let delegation = root.delegate(
        OnlineKey::public_for_seed(seed),
        "origin-online",
        now,
        now.plus_secs(days * 86_400),
    );
    let file = OnlineKeyFile {
        seed: hex(&seed),
        delegation: hex(&delegation.to_bytes()),
    };
    write_secret(path, &toml::to_string(&file)?)
}

/// Issues a node's certificate from the deployment CA into `out`.
pub fn issue(deployment: &Path, role: Role, name: &NodeName, days: u64, out: &Path) -> anyhow::Result<()> {
    ensure!(days > 0, "a node certificate must be valid for at least one day");
    let ca = DeploymentCa::load(&deployment.join(CA_CERT), &deployment.join(CA_KEY)).with_context(|| {
        format!(
            "reading the deployment CA from {} (run `courseway keys init --dir {}` first, or give the directory that holds ca.crt and ca.key)",
            deployment.display(),
            deployment.display()
        )
    })?;
    let root_pub = read_root_public(&deployment.join(ROOT_PUB))?;
    let credentials = ca
        .issue(role, name, Validity::starting_now(Duration::from_secs(days * 86_400)))
        .context("issuing the node certificate")?;
    write_node_dir(out, &credentials, ca.certificate(), &root_pub)
}

/// Writes a node's credentials directory: `node.crt`, `node.key` (0600), `ca.crt`, `root.pub`.
/// None of them may exist yet.
pub fn write_node_dir(
    out: &Path,
    credentials: &NodeCredentials,
    ca: &CaCertificate,
    root_pub: &PublicKey,
) -> anyhow::Result<()> {
    fs::create_dir_all(out).with_context(|| format!("creating {}", out.display()))?;
    for file in [NODE_CERT, NODE_KEY, CA_CERT, ROOT_PUB] {
        ensure!(
            !out.join(file).exists(),
            "{} already exists; give an empty --out directory for each node",
            out.join(file).display()
        );
    }
    write_public(&out.join(NODE_CERT), &credentials.cert_pem())?;
    write_secret(&out.join(NODE_KEY), &credentials.key_pem())?;
    write_public(&out.join(CA_CERT), &ca.to_pem())?;
    write_public(&out.join(ROOT_PUB), &format!("{}\n", hex(root_pub.as_bytes())))?;
    Ok(())
}

/// A node's credentials directory, as `keys issue` writes it.
#[derive(Debug)]
pub struct NodeKeys {
    pub enrollment: Enrollment,
    pub root: PublicKey,
}

impl NodeKeys {
    /// Loads `node.crt`, `node.key`, `ca.crt` and `root.pub` from `dir`, and checks that the
    /// certificate is for `role`.
    pub fn load(dir: &Path, role: Role) -> anyhow::Result<Self> {
        let hint = || {
            format!(
                "reading the node credentials in {} (make them with `courseway keys issue --role {} --name NAME --out {}`)",
                dir.display(),
                role_arg(role),
                dir.display()
            )
        };
        let credentials = NodeCredentials::load(&dir.join(NODE_CERT), &dir.join(NODE_KEY)).with_context(hint)?;
        let ca = CaCertificate::load(&dir.join(CA_CERT)).with_context(hint)?;
        let root = read_root_public(&dir.join(ROOT_PUB))?;
        let identity = credentials.identity();
        ensure!(
            identity.role == role,
            "the certificate in {} is for a {:?} ({}), not a {:?}; issue one with --role {}",
            dir.display(),
            identity.role,
            identity.name,
            role,
            role_arg(role)
        );
        Ok(Self {
            enrollment: Enrollment::new(ca, credentials),
            root,
        })
    }

    /// The node's name, from its certificate.
    pub fn name(&self) -> &NodeName {
        &self.enrollment.identity().name
    }
}

/// Loads `online.key` and checks its delegation.
pub fn load_online_key(path: &Path) -> anyhow::Result<OnlineKey> {
    let text = read_text(path)?;
    let file: OnlineKeyFile =
        toml::from_str(&text).with_context(|| format!("{} is not an online key file", path.display()))?;
    let seed = parse_seed(&file.seed).with_context(|| format!("the seed in {}", path.display()))?;
    let delegation = Delegation::from_bytes(&unhex(&file.delegation)?)
        .with_context(|| format!("the delegation in {} cannot be decoded", path.display()))?;
    ensure!(
        delegation.signature_is_valid(),
        "the delegation in {} is not signed by its root key; make a new one with `courseway keys online`",
        path.display()
    );
    let now = courseway_node::clock::now();
    if delegation.not_after <= now {
        bail!(
            "the online key in {} expired at {}; renew it with `courseway keys online --dir DEPLOYMENT` where root.key is kept",
            path.display(),
            delegation.not_after
        );
    }
    OnlineKey::new(seed, delegation).with_context(|| {
        format!(
            "the delegation in {} is for another key than its seed; the file is damaged",
            path.display()
        )
    })
}

fn load_root_key(path: &Path) -> anyhow::Result<RootKey> {
    let text = read_text(path)?;
    let file: RootKeyFile =
        toml::from_str(&text).with_context(|| format!("{} is not a root key file", path.display()))?;
    Ok(RootKey::from_seed(
        parse_seed(&file.seed).with_context(|| format!("the seed in {}", path.display()))?,
    ))
}

/// Reads a root public key file (64 hex digits).
pub fn read_root_public(path: &Path) -> anyhow::Result<PublicKey> {
    let text = read_text(path)?;
    let bytes = parse_seed(text.trim()).with_context(|| {
        format!(
            "{} must hold the deployment's root public key as 64 hex digits",
            path.display()
        )
    })?;
    Ok(PublicKey::from_bytes(bytes))
}

/// The `--role` spelling of a role.
pub fn role_arg(role: Role) -> &'static str {
    match role {
        Role::Origin => "origin",
        Role::Relay => "relay",
        Role::Station => "station",
        Role::Operator => "operator",
    }
}

fn read_text(path: &Path) -> anyhow::Result<String> {
    fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))
}

fn write_secret(path: &Path, contents: &str) -> anyhow::Result<()> {
    write_new(path, contents, 0o600)
}

fn write_public(path: &Path, contents: &str) -> anyhow::Result<()> {
    write_new(path, contents, 0o644)
}

/// Writes a file that must not exist yet, with `mode`, and syncs it.
fn write_new(path: &Path, contents: &str, mode: u32) -> anyhow::Result<()> {
    let mut file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(path)
        .with_context(|| format!("creating {}", path.display()))?;
    file.write_all(contents.as_bytes())
        .and_then(|()| file.sync_all())
        .with_context(|| format!("writing {}", path.display()))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex(text: &str) -> anyhow::Result<Vec<u8>> {
    ensure!(
        text.len().is_multiple_of(2) && text.bytes().all(|b| b.is_ascii_hexdigit()),
        "expected hex digits, found {:?}",
        text.chars().take(16).collect::<String>()
    );
    Ok((0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&text[i..i + 2], 16).expect("checked hex digits"))
        .collect())
}

fn parse_seed(text: &str) -> anyhow::Result<[u8; 32]> {
    let bytes = unhex(text)?;
    bytes
        .try_into()
        .map_err(|b: Vec<u8>| anyhow::anyhow!("expected 32 bytes (64 hex digits), found {}", b.len()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn init_issue_and_load_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let deployment = dir.path().join("deployment");
        let root = init(&deployment, "Test deployment", 30).unwrap();
        let online = load_online_key(&deployment.join(ONLINE_KEY)).unwrap();
        assert_eq!(online.delegation().root, root);
        let node_dir = dir.path().join("relay");
        let name: NodeName = "district-07".parse().unwrap();
        issue(&deployment, Role::Relay, &name, 10, &node_dir).unwrap();
        let keys = NodeKeys::load(&node_dir, Role::Relay).unwrap();
        assert_eq!(keys.name(), &name);
        assert_eq!(keys.root, root);
        // The wrong role is refused with a message that says which role the certificate has.
        let err = NodeKeys::load(&node_dir, Role::Station).unwrap_err().to_string();
        assert!(err.contains("Relay") && err.contains("--role station"), "{err}");
    }

    #[test]
    fn init_refuses_to_overwrite_a_deployment() {
        let dir = tempfile::tempdir().unwrap();
        init(dir.path(), "one", 30).unwrap();
        let before = fs::read(dir.path().join(ROOT_KEY)).unwrap();
        let err = init(dir.path(), "two", 30).unwrap_err().to_string();
        assert!(err.contains("already exists"), "{err}");
        assert_eq!(fs::read(dir.path().join(ROOT_KEY)).unwrap(), before);
    }

    #[test]
    fn secrets_are_private() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        init(dir.path(), "one", 30).unwrap();
        for f in [ROOT_KEY, ONLINE_KEY, CA_KEY] {
            let mode = fs::metadata(dir.path().join(f)).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode, 0o600, "{f}");
        }
    }

    #[test]
    fn renewed_online_key_is_a_new_key_from_the_same_root() {
        let dir = tempfile::tempdir().unwrap();
        let root = init(dir.path(), "one", 1).unwrap();
        let first = load_online_key(&dir.path().join(ONLINE_KEY)).unwrap();
        renew_online(dir.path(), 60).unwrap();
        let second = load_online_key(&dir.path().join(ONLINE_KEY)).unwrap();
        assert_eq!(second.delegation().root, root);
        assert_ne!(first.seed(), second.seed());
        assert!(second.delegation().not_after > first.delegation().not_after);
    }

    #[test]
    fn damaged_key_files_are_refused_with_the_path() {
        let dir = tempfile::tempdir().unwrap();
        init(dir.path(), "one", 30).unwrap();
        let path = dir.path().join(ONLINE_KEY);
        let text = fs::read_to_string(&path).unwrap();
        // Flip one hex digit of the delegation's signature (near the end of the line).
        let pos = text.rfind('"').unwrap() - 3;
        let mut bytes = text.into_bytes();
        bytes[pos] = if bytes[pos] == b'0' { b'1' } else { b'0' };
        fs::write(&path, bytes).unwrap();
        let err = format!("{:#}", load_online_key(&path).unwrap_err());
        assert!(err.contains(&path.display().to_string()), "{err}");
    }
}
