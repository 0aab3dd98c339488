//! What every node role shares.
//!
//! - [`service`]: answering the requests of children (`Hello`, `GetChunk`, `GetManifest`,
//!   `GetCatalog`, `Subscribe`, `Report`) for any role that implements [`NodeService`].
//! - [`upstream`]: the client side towards parents: several parents in priority order with
//!   failover, and chunk fetches that resume from the last byte received and verify every chunk.
//! - [`persist`]: the accepted catalog and schedule kept in the node's store, so rollback
//!   protection and the last verified catalog and schedule survive a restart.
//! - [`rejections`]: what was refused from parents (chunks, manifests, catalogs, schedules), by
//!   reason, for the metrics.
//! - [`reports`]: who may send a station report, report ids, sending one up and waiting for
//!   the end-to-end acknowledgement.
//! - [`blocking`]: store IO run on tokio's blocking pool, never on an async worker.
//! - [`clock`]: the one place a node reads the wall clock.
//! - [`task`]: background tasks that never outlive their owner.
//! - [`http`]: a small HTTP/1.1 server (hyper) for what nodes serve over HTTP.
//! - [`metrics`]: the Prometheus registry of a node, `/metrics`, collector helpers.
//!
//! This crate is IO: it sits between the pure core (content, proto) and the role crates
//! (origin, relay, station), which keep only what is particular to their role.

pub mod blocking;
pub mod clock;
pub mod http;
pub mod live;
pub mod metrics;
pub mod persist;
pub mod rejections;
pub mod reports;
pub mod service;
pub mod task;
pub mod upstream;

pub use blocking::store_io;
pub use rejections::{ChunkRejection, Rejections, SignedKind};
pub use service::{reply_error, send_stored_chunk, serve_connection, serve_counted_connection, NodeService};
pub use upstream::{FetchStats, Parent, Upstream, UpstreamConfig, UpstreamError};
