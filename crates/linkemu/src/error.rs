//! The error type of the IO edge.

use std::net::SocketAddr;

use thiserror::Error;

use crate::link::{ConfigError, Direction};

/// What went wrong starting a proxy. Every message names what was wrong and what to do.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum ProxyError {
    /// One direction's link config is out of range.
    #[error("invalid {direction} config: {source}")]
    Link {
        direction: Direction,
        #[source]
        source: ConfigError,
    },

    /// A proxy setting is out of range.
    #[error("invalid proxy config: `{field}` is {value}; {allowed}")]
    Config {
        field: &'static str,
        value: String,
        allowed: &'static str,
    },

    /// The upstream is not on this machine.
    #[error("the upstream {addr} is not a loopback address; the link emulator only forwards on this machine (use 127.0.0.1 or ::1)")]
    NotLoopback { addr: SocketAddr },

    /// A UDP socket could not be bound.
    #[error("cannot bind a UDP socket to {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },

    /// A socket's local address could not be read.
    #[error("cannot read the proxy socket's local address: {0}")]
    LocalAddr(#[source] std::io::Error),
}
