//! The one error type of this crate.

use std::path::PathBuf;
use std::time::Duration;

use courseway_proto::{ErrorReply, FrameError, FrameKind};
use thiserror::Error;

/// What went wrong at the network edge. Every message says what was wrong and, where there is
/// something to do about it, what to do.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum NetError {
    /// A file could not be read or written.
    #[error("cannot {action} {}: {source}; check the path and its permissions", path.display())]
    File {
        action: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    /// A PEM document did not hold what it should.
    #[error("{what} is not usable: {reason}")]
    Pem { what: &'static str, reason: String },

    /// A certificate does not carry a Courseway identity, or carries a malformed one.
    #[error("{what} is not a Courseway node certificate: {reason}; issue a new one with `courseway enroll`")]
    BadCertificate { what: &'static str, reason: String },

    /// The CA key does not belong to the CA certificate (files mixed up).
    #[error("the CA key does not match the CA certificate; load the key that was generated with this certificate")]
    CaKeyMismatch,

    /// rcgen refused to make a key or a certificate.
    #[error("cannot {action}: {source}")]
    CertGeneration {
        action: &'static str,
        #[source]
        source: rcgen::Error,
    },

    /// A certificate's validity period is empty or reversed.
    #[error("certificate validity is invalid: {reason}")]
    BadValidity { reason: String },

    /// rustls refused the TLS configuration (bad key, certificate not matching the key, ...).
    #[error("cannot set up TLS: {reason}; check that the node certificate and key belong together and were issued by the deployment CA")]
    TlsConfig { reason: String },

    /// A configuration value is out of range.
    #[error("invalid {what}: {reason}")]
    Config { what: &'static str, reason: String },

    /// The UDP socket could not be bound.
    #[error("cannot bind the QUIC endpoint to {addr}: {source}; is the port in use or the address not local?")]
    Bind {
        addr: std::net::SocketAddr,
        #[source]
        source: std::io::Error,
    },

    /// The endpoint's socket could not be queried.
    #[error("cannot read the QUIC endpoint's local address: {0}")]
    LocalAddr(#[source] std::io::Error),

    /// A connection could not be started (bad address, endpoint closed, ...).
    #[error("cannot connect to {node} at {addr}: {source}")]
    Connect {
        node: String,
        addr: std::net::SocketAddr,
        #[source]
        source: quinn::ConnectError,
    },

    /// The connection failed or was closed, including a handshake refused because a certificate
    /// does not chain to the deployment CA.
    #[error("connection {context}: {source}; if this is a TLS/certificate error, check that both nodes were enrolled by the same deployment CA and that their certificates are current")]
    Connection {
        context: String,
        #[source]
        source: quinn::ConnectionError,
    },

    /// The peer presented no certificate we can read an identity from.
    #[error("peer identity unavailable: {reason}")]
    PeerIdentity { reason: String },

    /// Writing to a stream failed.
    #[error("cannot write {what}: {source}")]
    Write {
        what: &'static str,
        #[source]
        source: quinn::WriteError,
    },

    /// Reading from a stream failed.
    #[error("cannot read {what}: {source}")]
    Read {
        what: &'static str,
        #[source]
        source: quinn::ReadError,
    },

    /// The stream ended before a whole frame or body arrived.
    #[error("stream ended after {got} of {expected} bytes of {what}; the peer closed it early, retry the request")]
    EndedEarly {
        what: &'static str,
        expected: usize,
        got: usize,
    },

    /// The stream was already finished or reset locally.
    #[error("cannot {action}: the stream is already closed")]
    StreamClosed { action: &'static str },

    /// The peer sent a frame that the codec refused.
    #[error("peer sent a bad frame: {0}")]
    Frame(#[source] FrameError),

    /// A message we were about to send does not fit its frame limit.
    #[error("cannot encode the message: {0}; split it into smaller ones")]
    Encode(#[source] FrameError),

    /// The server answered with an error reply.
    #[error("peer refused the request: {} ({})", .0.message, .0.code)]
    Refused(ErrorReply),

    /// The peer answered with a response of the wrong kind.
    #[error("peer answered a {request} with a {got} frame; the peer may run incompatible software")]
    UnexpectedResponse { request: FrameKind, got: FrameKind },

    /// Something took longer than allowed.
    #[error("{what} did not complete within {after:?}; the link may be down or the peer overloaded")]
    Timeout { what: &'static str, after: Duration },

    /// A rate limit can never allow the request (e.g. a zero rate).
    #[error("invalid rate limit: {reason}")]
    RateLimit { reason: String },
}

impl NetError {
    pub(crate) fn config(what: &'static str, reason: impl Into<String>) -> Self {
        Self::Config {
            what,
            reason: reason.into(),
        }
    }

    pub(crate) fn tls(e: impl std::fmt::Display) -> Self {
        Self::TlsConfig { reason: e.to_string() }
    }

    pub(crate) fn read_exact(what: &'static str, expected: usize, e: quinn::ReadExactError) -> Self {
        match e {
            quinn::ReadExactError::FinishedEarly(got) => Self::EndedEarly { what, expected, got },
            quinn::ReadExactError::ReadError(source) => Self::Read { what, source },
        }
    }
}
