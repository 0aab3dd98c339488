//! The accepted catalog and schedule, kept in the node's store (synced: they are the rollback
//! floor, and what the node serves while its parents are down).

use courseway_content::encoding::{Decode, Encode};
use courseway_content::{Catalog, PublicKey, Schedule, Signed, TrustError, TrustState};
use courseway_store::{Durability, Store, StoreError};

const CATALOG_KEY: &[u8] = b"trust/catalog";
const SCHEDULE_KEY: &[u8] = b"trust/schedule";

/// Why the persisted trust state could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum PersistError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("the catalog or schedule saved in this node's store no longer verifies ({0}); the store was tampered with or belongs to another deployment: move it aside and let the node sync again")]
    Untrusted(#[from] TrustError),
    #[error("the catalog or schedule saved in this node's store cannot be decoded: {0}; move the store aside and let the node sync again")]
    Undecodable(#[from] courseway_content::DecodeError),
}

/// Loads the trust state: the root key plus the last accepted catalog and schedule, if any.
pub fn load_trust(store: &Store, root: PublicKey) -> Result<TrustState, PersistError> {
    load_trust_at(store, root, CATALOG_KEY, SCHEDULE_KEY)
}

/// The meta key under which an origin keeps the last catalog it accepted from the upstream origin
/// it mirrors (`mirror` names the mirror), apart from its own.
pub fn mirror_catalog_key(mirror: &str) -> Vec<u8> {
    format!("trust/mirror/{mirror}/catalog").into_bytes()
}

/// Loads the trust state of a mirrored upstream: its root key plus the last catalog accepted from
/// it (the rollback floor for that upstream).
pub fn load_mirror_trust(store: &Store, root: PublicKey, mirror: &str) -> Result<TrustState, PersistError> {
    load_trust_at(
        store,
        root,
        &mirror_catalog_key(mirror),
        format!("trust/mirror/{mirror}/schedule").as_bytes(),
    )
}

/// Saves a catalog newly accepted from a mirrored upstream (synced).
pub fn save_mirror_catalog(store: &Store, mirror: &str, catalog: &Signed<Catalog>) -> Result<(), StoreError> {
    store.put_meta(&mirror_catalog_key(mirror), &catalog.to_bytes(), Durability::Synced)
}

fn load_trust_at(
    store: &Store,
    root: PublicKey,
    catalog_key: &[u8],
    schedule_key: &[u8],
) -> Result<TrustState, PersistError> {
    let catalog = match store.get_meta(catalog_key)? {
        Some(bytes) => Some(Signed::<Catalog>::from_bytes(&bytes)?),
        None => None,
    };
    let schedule = match store.get_meta(schedule_key)? {
        Some(bytes) => Some(Signed::<Schedule>::from_bytes(&bytes)?),
        None => None,
    };
    Ok(TrustState::restore(root, catalog, schedule)?)
}

/// Saves a newly accepted catalog (synced).
pub fn save_catalog(store: &Store, catalog: &Signed<Catalog>) -> Result<(), StoreError> {
    store.put_meta(CATALOG_KEY, &catalog.to_bytes(), Durability::Synced)
}

/// Saves a newly accepted schedule (synced).
pub fn save_schedule(store: &Store, schedule: &Signed<Schedule>) -> Result<(), StoreError> {
    store.put_meta(SCHEDULE_KEY, &schedule.to_bytes(), Durability::Synced)
}
