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
    let catalog = match store.get_meta(CATALOG_KEY)? {
        Some(bytes) => Some(Signed::<Catalog>::from_bytes(&bytes)?),
        None => None,
    };
    let schedule = match store.get_meta(SCHEDULE_KEY)? {
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
