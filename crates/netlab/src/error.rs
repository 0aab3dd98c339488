//! What can go wrong building a lab.

use thiserror::Error;

/// A lab could not be built or run.
#[derive(Debug, Error)]
pub enum LabError {
    /// A command (`ip`, `tc`, a node process) could not be started.
    #[error("could not run `{command}`: {source}; is it installed (iproute2) and on PATH?")]
    Spawn {
        command: String,
        #[source]
        source: std::io::Error,
    },
    /// A command ran and failed.
    #[error("`{command}` failed ({status}): {stderr}")]
    Command {
        command: String,
        status: String,
        stderr: String,
    },
    /// Network namespaces need root (CAP_NET_ADMIN and CAP_SYS_ADMIN).
    #[error("network namespaces need root: `ip netns add` said: {0}")]
    NotRoot(String),
    /// Reading or writing a file or device.
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },
    /// The emulated link's configuration was refused.
    #[error(transparent)]
    Link(#[from] courseway_linkemu::ConfigError),
    /// A node process misbehaved (no readiness line, a bad report).
    #[error("{0}")]
    Node(String),
}

impl LabError {
    pub(crate) fn io(context: impl Into<String>, source: std::io::Error) -> Self {
        Self::Io {
            context: context.into(),
            source,
        }
    }
}
