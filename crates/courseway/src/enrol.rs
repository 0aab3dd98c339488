//! `courseway token create` (at the origin) and `courseway enroll` (on the new node).
//!
//! Enrolment goes over the origin's admin HTTP API (`POST /api/enrol`), not over QUIC: a new
//! node has no certificate yet, and every QUIC connection in a deployment is mutual TLS from the
//! deployment CA (a peer without a certificate never gets a stream; relays therefore do not
//! forward enrolment). The request carries no secret (the token's id, the CSR and a MAC over
//! it) and the answer is checked against the pin in the token, so a path that can read or
//! alter the HTTP exchange can neither enrol in the node's place nor make it trust a foreign
//! CA; see `courseway_admin_proto::enrol` and docs/security.md.

use std::path::Path;
use std::time::Duration;

use anyhow::{bail, ensure, Context};
use courseway_admin_proto::enrol::{self, EnrolAnswer, EnrolToken};
use courseway_content::{NodeName, PublicKey};
use courseway_net::{CaCertificate, NodeKeyRequest, PeerIdentity};
use courseway_origin::admin::enrol as origin_enrol;
use courseway_proto::Role;
use serde_json::json;

use crate::admin_client::AdminClient;
use crate::keys;

/// Makes a one-time enrolment token at the origin (its config names the admin data directory,
/// the credentials with `ca.crt` and `root.pub`, and the CA key). Returns the token to print.
pub fn create_token(config: &Path, role: Role, name: &NodeName, lifetime: Duration) -> anyhow::Result<EnrolToken> {
    let settings = crate::config::origin(config)?;
    let admin = settings.admin.with_context(|| {
        format!(
            "{} has no [origin.admin] section; enrolment goes through the admin API",
            config.display()
        )
    })?;
    let enrol_config = admin.enrol.as_ref().with_context(|| {
        format!(
            "{} has no [origin.admin] enrol_ca_key: this origin cannot issue certificates, so a token would be useless; add it (see config/origin.toml)",
            config.display()
        )
    })?;
    let pin = origin_enrol::deployment_pin(&enrol_config.ca_cert, &enrol_config.root_pub)?;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    Ok(origin_enrol::create(
        &admin.enrol_tokens_file(),
        role,
        name,
        now,
        lifetime,
        rand::random(),
        pin,
    )?)
}

/// Parses a lifetime such as `24h`, `7d`, `90m` or `3600s`.
pub fn parse_lifetime(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (number, unit) = s.split_at(split);
    let n: u64 = number
        .parse()
        .map_err(|_| format!("{s:?} is not a lifetime; write e.g. 24h, 7d, 90m"))?;
    let unit_secs = match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        _ => return Err(format!("{s:?}: the unit must be s, m, h or d (e.g. 24h)")),
    };
    ensure_positive(n.checked_mul(unit_secs).map(Duration::from_secs), s)
}

fn ensure_positive(d: Option<Duration>, s: &str) -> Result<Duration, String> {
    match d {
        Some(d) if !d.is_zero() => Ok(d),
        _ => Err(format!("{s:?}: a token must live between one second and a few years")),
    }
}

/// Enrols this node: makes its key, sends the request with `token` to the origin's admin API
/// at `parent`, checks the answer against the token's pin and writes the credentials directory
/// `out` (`node.crt`, `node.key`, `ca.crt`, `root.pub`, as `keys issue` does).
pub async fn enroll(parent: &str, token: &EnrolToken, out: &Path) -> anyhow::Result<PeerIdentity> {
    for file in [keys::NODE_CERT, keys::NODE_KEY, keys::CA_CERT, keys::ROOT_PUB] {
        ensure!(
            !out.join(file).exists(),
            "{} already exists; enrol into an empty directory (this node may be enrolled already)",
            out.join(file).display()
        );
    }
    let request = NodeKeyRequest::generate().context("making this node's key")?;
    let client = AdminClient::new(parent, "")?;
    let body = json!({
        "token": token.id(),
        "csr": request.csr_pem(),
        "mac": token.mac(request.csr_pem()),
    });
    let answer = client
        .post("/api/enrol", &body)
        .await
        .with_context(|| format!("enrolling with the origin's admin API at {parent}"))?;
    let answer: EnrolAnswer =
        serde_json::from_value(answer).context("the origin's answer is not an enrolment answer")?;
    let ca = CaCertificate::from_pem(&answer.ca).context("the CA certificate in the answer")?;
    let root = enrol::unhex::<32>(&answer.root).context("the root key in the answer")?;
    if enrol::pin(ca.der(), &root) != token.pin {
        bail!(
            "the answer names a CA and root key that are not the ones this token was made for; \
             {parent} is not the origin that made the token (or the answer was altered). Nothing was written"
        );
    }
    let credentials = request
        .complete(&ca, &answer.certificate)
        .context("the certificate in the answer")?;
    keys::write_node_dir(out, &credentials, &ca, &PublicKey::from_bytes(root))?;
    Ok(credentials.identity().clone())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lifetimes() {
        assert_eq!(parse_lifetime("24h"), Ok(Duration::from_secs(86_400)));
        assert_eq!(parse_lifetime("7d"), Ok(Duration::from_secs(7 * 86_400)));
        assert_eq!(parse_lifetime("90m"), Ok(Duration::from_secs(5400)));
        for bad in ["", "h", "0h", "24", "24x", "-1h", "99999999999999999999d"] {
            assert!(parse_lifetime(bad).is_err(), "{bad:?}");
        }
    }
}
