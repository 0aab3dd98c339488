//! Courseway's link emulator, for tests, benchmarks and the demo: put a QUIC station behind
//! "2 Mbit/s, 150 ms, 1 % loss, cut for 30 s" without root rights (no `tc netem`).
//!
//! ```no_run
//! # async fn example(relay_addr: std::net::SocketAddr) -> Result<(), courseway_linkemu::ProxyError> {
//! use std::time::Duration;
//! use courseway_linkemu::{LinkConfig, ProxyConfig, UdpProxy};
//!
//! let link = LinkConfig {
//!     outages: vec![(Duration::from_secs(10), Duration::from_secs(40))],
//!     seed: 7,
//!     ..LinkConfig::village() // 2 Mbit/s, 150 ms + up to 20 ms jitter, 1 % loss
//! };
//! let proxy = UdpProxy::start(relay_addr, ProxyConfig::symmetric(link)).await?;
//! // The station connects to proxy.local_addr() instead of relay_addr.
//! proxy.cut(); // ... and later proxy.restore();
//! println!("{:?}", proxy.stats());
//! proxy.close().await;
//! # Ok(()) }
//! ```
//!
//! # Code map
//!
//! - [`link`]: the pure model. [`LinkConfig`] (one direction: rate, delay, jitter, loss, queue,
//!   outages, seed) and [`DuplexConfig`] (uplink and downlink, [`DuplexConfig::symmetric`]);
//!   [`OutageSchedule`] (scheduled `[start, end)` windows plus a manual cut switch); [`Link`],
//!   which decides for each offered packet [`Decision::Drop`] (loss, outage, full queue) or
//!   [`Decision::Deliver`] at a time, and confirms delivery when it is due.
//! - [`proxy`]: the IO edge. [`UdpProxy`] (tokio) listens on 127.0.0.1, keeps one upstream
//!   socket per client address, runs client → upstream packets through the uplink [`Link`] and
//!   replies through the downlink one, and delivers them in time order. [`LinkHandle`] cuts,
//!   restores and reads [`ProxyStats`] at any time.
//! - [`error`]: [`ProxyError`]; the pure model's validation error is [`ConfigError`].
//!
//! # Invariants
//!
//! - **The model is pure.** [`link`] has no sockets, no clock, no async and no threads: time is
//!   an argument (a duration since the link started), as in quinn-proto vs quinn. The proxy only
//!   moves bytes and sleeps until the times the model decided.
//! - **Deterministic for a seed.** Loss and jitter come from a ChaCha8 generator seeded by
//!   [`LinkConfig::seed`], two draws per offered packet whatever happens to it, so the same
//!   seed and the same packet sequence give the same decisions, and which packets are lost does
//!   not depend on timing.
//! - **The rate is a hard cap.** Over any interval between two arrivals, at most `rate ×
//!   interval` plus one packet arrives (without jitter; jitter without reordering can bunch
//!   packets behind a late one).
//! - **Nothing crosses an outage.** A packet whose time on the link meets a scheduled window, or
//!   that is on the link when it is cut by hand, is lost.
//! - **No reordering unless asked** ([`LinkConfig::reorder`]).
//! - **Bounded everything.** The bottleneck queue ([`LinkConfig::queue_bytes`], tail drop), the
//!   packets held for delivery per direction ([`ProxyConfig::max_pending_bytes`]), the client
//!   mappings ([`ProxyConfig::max_clients`], expired after
//!   [`ProxyConfig::client_idle_timeout`]), the outage windows ([`MAX_OUTAGES`]).
//! - **Loopback only.** The proxy binds 127.0.0.1 (and ::1 towards an IPv6 upstream) and
//!   refuses an upstream that is not a loopback address.
//! - **No leaked tasks.** [`UdpProxy::close`] stops every task and waits for them; dropping the
//!   proxy aborts them.
//!
//! # Deliberately absent
//!
//! - No reordering model beyond jitter with [`LinkConfig::reorder`], no duplication, no
//!   corruption, no bursty (Gilbert-Elliott) loss: loss is independent per packet.
//! - No per-packet overhead in the rate (the rate counts UDP payload bytes, not IP/UDP headers
//!   or link framing).
//! - No per-client links inside one proxy: a proxy is one shared bottleneck; start one proxy per
//!   station for independent links.
//! - No changing rate, delay or loss of a running proxy; only cut and restore.
//! - No TCP.

pub mod error;
pub mod link;
pub mod proxy;

pub use error::ProxyError;
pub use link::{
    ConfigError, Decision, Direction, DropReason, DuplexConfig, Link, LinkConfig, LinkStats, OutageSchedule, Scheduled,
    MAX_OUTAGES,
};
pub use proxy::{DirectionStats, LinkHandle, ProxyConfig, ProxyStats, UdpProxy};
