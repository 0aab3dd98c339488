//! Courseway's chunk store: RocksDB with an S3-FIFO cache policy and pins.
//!
//! - Chunk bodies live in the `chunks` column family, whose values go to RocksDB's integrated
//!   blob files (large values are kept out of the LSM tree, so compaction does not rewrite
//!   media).
//! - Each chunk's policy entry (size, queue, position, hits) lives in `entries`, the ids
//!   recently evicted in `ghosts`, pins in `pins`, and other node state in `meta`.
//! - A chunk, its entry and the evictions that made room for it land in **one write batch**:
//!   after a crash the store holds a chunk exactly when it holds its entry.
//! - [`Store::put`] checks the hash before writing anything; [`Store::get`] checks it again on
//!   read (configurable), so a chunk damaged on disk is dropped and reported, never served.
//!
//! Durability is described in docs/storage.md.

mod keys;
pub mod policy;
mod store;

pub use policy::{PolicyConfig, PolicyError, Queue};
pub use store::{Durability, PinReason, PutOutcome, Store, StoreConfig, StoreError, StoreStats, Verification};
