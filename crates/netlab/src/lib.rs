//! Network labs for benchmarks and tests that need the kernel's own network stacks: network
//! namespaces joined by a veth pair (for `tc` shaping) or by the linkemu model applied to every
//! frame ([`TapLink`]), and Courseway nodes run inside them ([`node`]).
//!
//! Everything here needs root (namespaces, veth, macvtap) and iproute2; a caller without root
//! gets [`LabError::NotRoot`] and should skip. Only the namespaces a lab creates carry
//! addresses (a private /30 chosen by the caller); nothing is routed to or from the root
//! namespace.
//!
//! # Code map
//!
//! - [`netns`]: [`Namespace`] (deleted on drop), [`NamespacePair`] (two namespaces and a /30;
//!   [`NamespacePair::veth`] joins them directly), [`unique_tag`].
//! - [`tap`]: [`TapLink`], the linkemu model between two namespaces through macvtap devices.
//! - [`node`]: an origin and a station as processes inside namespaces, the keys they share and
//!   the synthetic lesson they agree on.
//! - [`cmd`]: running `ip` and `tc`. [`error`]: [`LabError`].

pub mod cmd;
pub mod error;
pub mod netns;
pub mod node;
pub mod tap;

pub use error::LabError;
pub use netns::{unique_tag, Namespace, NamespacePair};
pub use tap::{TapLink, TapLinkConfig, TapStats};
