//! The relay node: serves children from a bounded cache and fetches each miss from its parent
//! once, however many children wait for it.
//!
//! - [`fetch`]: in-flight fetches. The first child to miss a chunk starts one; later children
//!   join it (coalescing). Bytes go down to every waiting child as they arrive from the parent
//!   (read-while-write), except the chunk's last byte, which is released only once the whole
//!   chunk has been checked against its hash: a child can never receive a complete chunk that
//!   failed verification here. A chunk is stored only after its hash checks.
//! - [`manifests`]: the same for manifests: one upstream fetch per missing manifest however many
//!   children ask, checked against its hash before it is stored or served.
//! - [`service`]: the relay's answers to its children (catalog, manifests, chunks,
//!   subscriptions), and its sync loop towards its parents: one subscription upstream, new
//!   catalogs and schedules verified, saved and pushed down, lessons prefetched by policy
//!   (all published, only those scheduled inside the horizon, or none).

mod fetch;
mod manifests;
mod service;

pub use service::{PrefetchPolicy, Relay, RelayConfig, RelayError, RelayStats};
