//! Courseway's content model: what is delivered and how it is trusted.
//!
//! - [`chunk`]: chunk ids (BLAKE3-256) and chunk references.
//! - [`chunking`]: splitting media segments and attachments into chunks.
//! - [`lesson`]: lesson manifests, renditions, segments, attachments.
//! - [`catalog`], [`schedule`], [`live`]: the signed objects that flow down the tree.
//! - [`signing`]: the root key, delegated online keys, signed values.
//! - [`trust`]: what a node accepts (signature chain, expiry, rollback, manifest hashes).
//! - [`encoding`]: the canonical binary encoding all of the above share with the wire codec.
//! - [`synthetic`]: deterministic synthetic courseware for demos, tests and benchmarks.
//!
//! This crate does no IO: no files, no sockets, no clock, no randomness of its own. Time and
//! key material are passed in by the caller.

pub mod catalog;
pub mod chunk;
pub mod chunking;
pub mod encoding;
pub mod lesson;
pub mod live;
pub mod name;
pub mod schedule;
pub mod signing;
#[cfg(any(test, feature = "strategies"))]
pub mod strategies;
pub mod synthetic;
pub mod time;
pub mod trust;

pub use catalog::{Catalog, CatalogEntry};
pub use chunk::{ChunkId, ChunkRef, HashMismatch, MAX_CHUNK_SIZE};
pub use encoding::{Decode, DecodeError, Encode};
pub use lesson::{Attachment, Category, LessonManifest, Rendition, RenditionKind, Segment};
pub use live::{LiveRendition, LiveSegment};
pub use name::{AreaName, ChannelId, LessonId, NameError, NodeName};
pub use schedule::{LiveShowing, Schedule, ScheduleEntry, Target};
pub use signing::{Delegation, OnlineKey, PublicKey, RootKey, Signable, Signed};
pub use time::UnixTime;
pub use trust::{Acceptance, TrustError, TrustState};
