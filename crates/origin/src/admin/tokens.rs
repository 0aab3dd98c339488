//! Bearer tokens: made by an operator on the origin's machine, kept as BLAKE3 hashes.
//!
//! The tokens live in a small JSON file in the admin data directory (`tokens.json`, mode 0600)
//! rather than in the admin RocksDB, because RocksDB allows one process at a time: the operator's
//! `courseway admin token create` must work while the origin runs. The running origin re-reads
//! the file when its modification time or size changes, so a new or revoked token takes effect
//! on the next request. Only the hash of a token is stored; a token is 256 random bits, so a
//! fast hash is enough (nothing to brute-force).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use parking_lot::Mutex;
use rand::RngCore;
use serde::{Deserialize, Serialize};

use super::workflow::{Principal, Role};

/// The token file's name in the admin data directory.
pub const TOKENS_FILE: &str = "tokens.json";
/// Every token starts with this, so a leaked one is easy to recognise (and to grep for).
pub const TOKEN_PREFIX: &str = "cw_";

/// One token as stored: who holds it and the hash of the secret.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TokenEntry {
    pub name: String,
    pub role: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub department: Option<String>,
    /// BLAKE3 of the token, hex.
    pub hash: String,
    /// Unix seconds.
    pub created: u64,
}

/// Why a token could not be made, revoked or read.
#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    #[error("cannot read or write the token file {}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("the token file {} is damaged ({source}); restore it from a backup or remove it and create the tokens again", path.display())]
    Damaged {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
    #[error("a token named {0:?} exists already; revoke it first or choose another name")]
    Exists(String),
    #[error("no token is named {0:?}")]
    Unknown(String),
    #[error("a token name must be 1 to 64 characters without control characters")]
    BadName,
}

/// Why a request is not authenticated (HTTP 401).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    #[error("no token given; send `Authorization: Bearer TOKEN` (or `?token=` on preview URLs)")]
    Missing,
    #[error("the token is not known here (revoked, mistyped, or made for another origin)")]
    Unknown,
    #[error("the token list cannot be read: {0}")]
    Unavailable(String),
}

/// The BLAKE3 hash of a token, hex.
pub fn hash_token(token: &str) -> String {
    blake3::hash(token.as_bytes()).to_hex().to_string()
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> TokenError + '_ {
    move |source| TokenError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Reads the token file; a missing file is an empty list.
pub fn read_entries(path: &Path) -> Result<Vec<TokenEntry>, TokenError> {
    match std::fs::read(path) {
        Ok(bytes) => serde_json::from_slice(&bytes).map_err(|source| TokenError::Damaged {
            path: path.to_path_buf(),
            source,
        }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Vec::new()),
        Err(e) => Err(io(path)(e)),
    }
}

/// Writes the token file atomically, readable by its owner only.
fn write_entries(path: &Path, entries: &[TokenEntry]) -> Result<(), TokenError> {
    let text = serde_json::to_vec_pretty(entries).expect("token entries always serialise");
    super::private_file::replace(path, &text).map_err(|(path, source)| TokenError::Io { path, source })
}

/// Makes a new token for `name` with `role` and returns it; only its hash is written.
pub fn create(
    path: &Path,
    name: &str,
    role: Role,
    department: Option<&str>,
    now_unix: u64,
) -> Result<String, TokenError> {
    if name.is_empty() || name.chars().count() > 64 || name.chars().any(char::is_control) {
        return Err(TokenError::BadName);
    }
    let mut entries = read_entries(path)?;
    if entries.iter().any(|e| e.name == name) {
        return Err(TokenError::Exists(name.to_string()));
    }
    let mut secret = [0u8; 32];
    rand::rngs::OsRng.fill_bytes(&mut secret);
    let token = format!("{TOKEN_PREFIX}{}", blake3::Hash::from(secret).to_hex());
    entries.push(TokenEntry {
        name: name.to_string(),
        role: role.as_str().to_string(),
        department: department.map(str::to_string),
        hash: hash_token(&token),
        created: now_unix,
    });
    write_entries(path, &entries)?;
    Ok(token)
}

/// Removes the token named `name`.
pub fn revoke(path: &Path, name: &str) -> Result<(), TokenError> {
    let mut entries = read_entries(path)?;
    let before = entries.len();
    entries.retain(|e| e.name != name);
    if entries.len() == before {
        return Err(TokenError::Unknown(name.to_string()));
    }
    write_entries(path, &entries)
}

/// The tokens a running origin accepts, re-read when the file changes.
#[derive(Debug)]
pub struct TokenStore {
    path: PathBuf,
    cache: Mutex<Cache>,
}

#[derive(Debug, Default)]
struct Cache {
    stamp: Option<(SystemTime, u64)>,
    by_hash: HashMap<String, Principal>,
}

impl TokenStore {
    pub fn new(path: PathBuf) -> Self {
        Self {
            path,
            cache: Mutex::new(Cache::default()),
        }
    }

    /// Who holds `token`.
    pub fn authenticate(&self, token: Option<&str>) -> Result<Principal, AuthError> {
        let token = token.filter(|t| !t.is_empty()).ok_or(AuthError::Missing)?;
        let mut cache = self.cache.lock();
        let stamp = std::fs::metadata(&self.path)
            .ok()
            .map(|m| (m.modified().unwrap_or(SystemTime::UNIX_EPOCH), m.len()));
        if stamp != cache.stamp {
            let entries = read_entries(&self.path).map_err(|e| AuthError::Unavailable(e.to_string()))?;
            cache.by_hash = entries
                .into_iter()
                .filter_map(|e| {
                    let role = Role::parse(&e.role)?;
                    Some((
                        e.hash,
                        Principal {
                            name: e.name,
                            role,
                            department: e.department,
                        },
                    ))
                })
                .collect();
            cache.stamp = stamp;
        }
        cache.by_hash.get(&hash_token(token)).cloned().ok_or(AuthError::Unknown)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_stored_as_hashes_and_authenticate() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(TOKENS_FILE);
        let store = TokenStore::new(path.clone());
        assert_eq!(store.authenticate(None), Err(AuthError::Missing));
        let token = create(&path, "alice", Role::Reviewer, Some("农业局"), 1).unwrap();
        assert!(token.starts_with(TOKEN_PREFIX));
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(
            !text.contains(&token[TOKEN_PREFIX.len()..]),
            "the secret is never written"
        );
        let who = store.authenticate(Some(&token)).unwrap();
        assert_eq!(who.name, "alice");
        assert_eq!(who.role, Role::Reviewer);
        assert_eq!(who.department.as_deref(), Some("农业局"));
        assert_eq!(store.authenticate(Some("cw_guess")), Err(AuthError::Unknown));
        assert!(matches!(
            create(&path, "alice", Role::Viewer, None, 2),
            Err(TokenError::Exists(_))
        ));
        // A second token, then a revocation, are seen by the running store.
        let bob = create(&path, "bob", Role::Publisher, None, 3).unwrap();
        assert_eq!(store.authenticate(Some(&bob)).unwrap().role, Role::Publisher);
        revoke(&path, "alice").unwrap();
        assert_eq!(store.authenticate(Some(&token)), Err(AuthError::Unknown));
        assert!(matches!(revoke(&path, "alice"), Err(TokenError::Unknown(_))));
    }
}
