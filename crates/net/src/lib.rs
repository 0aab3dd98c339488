//! Courseway's network edge: QUIC endpoints (quinn), TLS identities from the deployment CA,
//! framed requests over streams, and rate limits.
//!
//! # Code map
//!
//! - [`ca`]: the deployment CA ([`DeploymentCa`]) and what it issues ([`NodeCredentials`]); a
//!   node's [`Enrollment`] is the CA certificate plus its own credentials. PEM in and out, with
//!   small load/save file helpers.
//! - [`identity`]: [`PeerIdentity`] (role and name) and how it is carried in a certificate: one
//!   URI SAN `courseway://<role>/<node-name>`, e.g. `courseway://relay/district-07`.
//! - `tls` (private): rustls configurations for mutual TLS against the CA.
//! - [`transport`]: [`TransportConfig`] (congestion controller, keep-alive, idle timeout,
//!   windows) with defaults sized for rural links.
//! - [`endpoint`]: [`Client`] (connect to a named node), [`Server`] (accept loop handing each
//!   authenticated [`PeerConnection`] to a handler), [`serve_requests`] (one request per
//!   bidirectional stream, bad frames answered with an error reply).
//! - [`framing`]: read and write `courseway-proto` frames on quinn streams.
//! - [`limiter`]: [`TokenBucket`], a pure token bucket; [`pacing`]: [`SharedLimiter`] and
//!   [`write_limited`], the async wrappers that sleep until bytes may be sent.
//! - [`revocation`]: [`Revocations`], the shared set of revoked node names, and the watcher that
//!   closes a connection once its peer is revoked.
//! - [`error`]: [`NetError`], the one error type of the crate.
//!
//! # Invariants
//!
//! - **Mutual TLS on every connection.** The server requires a client certificate chaining to
//!   the deployment CA; the client requires the server's to chain to it and to name the node it
//!   dialled. A peer from another CA fails the handshake. After the handshake the peer's role
//!   and name are read from its (verified) certificate, never from what it says in `Hello`.
//! - **A frame's length is checked before its payload is buffered.** Readers read the 6-byte
//!   header, call `FrameHeader::parse` (which enforces the per-kind limit) and check the frame's
//!   direction, and only then read `payload_len` bytes, into a buffer that grows as they arrive.
//! - **A bad frame closes its stream, not the connection or the process.** The server answers
//!   with an error frame carrying the frame error's code and stops reading that stream.
//! - **The limiter is pure.** [`TokenBucket`] takes `now` as an argument and never reads a
//!   clock; over any interval `t` it lets at most `rate × t + burst` bytes through.
//! - TLS 1.3 only, ring as the crypto provider, ALPN `courseway/1`, no session resumption.
//!
//! - **A revoked peer is refused.** [`Revocations`] (in the [`Enrollment`], shared by the node's
//!   server and client) is replaced from each verified catalog's revocation list; both TLS
//!   verifiers consult it at every handshake, and every connection is closed as soon as its
//!   peer is revoked.

pub mod ca;
pub mod endpoint;
pub mod error;
pub mod framing;
pub mod identity;
pub mod limiter;
pub mod pacing;
pub mod revocation;
mod tls;
pub mod transport;

pub use ca::{CaCertificate, DeploymentCa, Enrollment, NodeCredentials, NodeKeyRequest, Validity};
pub use endpoint::{peer_identity, serve_requests, Client, IncomingRequest, PeerConnection, ServeConfig, Server};
pub use error::NetError;
pub use framing::{
    read_chunk_body, read_request, read_response, reply_error, send_chunk, send_request, send_response,
    stream_error_code,
};
pub use identity::{parse_role, role_label, PeerIdentity};
pub use limiter::{RateLimit, TokenBucket};
pub use pacing::{write_limited, SharedLimiter};
pub use revocation::Revocations;
pub use transport::{CongestionControl, TransportConfig, LINE_WINDOW, MIN_LINE_WINDOW};
