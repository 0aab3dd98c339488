//! The revoked nodes a node refuses, shared by its server and its client and updated from the
//! newest verified catalog.
//!
//! The list itself travels in the signed catalog (`Catalog::revoked`); each role replaces this
//! set with it whenever it accepts a catalog (and when it restores one at start). The TLS
//! verifiers consult the set during every handshake, so a revoked peer never completes one,
//! and every established connection watches the set and is closed as soon as its peer appears
//! in it.
//!
//! Revocation is by node name, the name in the certificate's `courseway://<role>/<name>`
//! identity: every certificate ever issued for that name is refused, whatever its role and
//! expiry. A replacement box gets a new name.

use std::collections::BTreeSet;
use std::sync::Arc;

use courseway_content::NodeName;
use quinn::{Connection, VarInt};
use tokio::sync::watch;

use crate::identity::PeerIdentity;

/// The QUIC application close code for a connection closed because its peer was revoked (the
/// number of `ErrorCode::Unauthorized`).
pub const CLOSE_REVOKED: VarInt = VarInt::from_u32(5);

/// A shared, updatable set of revoked node names. Cloning shares the set.
#[derive(Debug, Clone)]
pub struct Revocations {
    names: Arc<watch::Sender<Arc<BTreeSet<NodeName>>>>,
}

impl Default for Revocations {
    fn default() -> Self {
        Self::new()
    }
}

impl Revocations {
    /// An empty set.
    pub fn new() -> Self {
        Self {
            names: Arc::new(watch::Sender::new(Arc::new(BTreeSet::new()))),
        }
    }

    /// Whether `name` is revoked.
    pub fn is_revoked(&self, name: &NodeName) -> bool {
        self.names.borrow().contains(name)
    }

    /// The revoked names now.
    pub fn names(&self) -> Arc<BTreeSet<NodeName>> {
        self.names.borrow().clone()
    }

    /// Replaces the set (with the list of a newly accepted catalog). Connections of peers that
    /// are now revoked are closed by their watchers. Returns the names newly revoked.
    pub fn replace<'a>(&self, names: impl IntoIterator<Item = &'a NodeName>) -> Vec<NodeName> {
        let new: BTreeSet<NodeName> = names.into_iter().cloned().collect();
        let mut added = Vec::new();
        self.names.send_if_modified(|current| {
            if **current == new {
                return false;
            }
            added = new.difference(current).cloned().collect();
            *current = Arc::new(new);
            true
        });
        for name in &added {
            tracing::warn!(node = %name, "node revoked: refusing it at the handshake and closing its connections");
        }
        added
    }

    /// Closes `connection` as soon as `peer` is revoked; returns when the connection ends. Run it
    /// in a task next to each connection.
    pub async fn watch_connection(&self, peer: PeerIdentity, connection: Connection) {
        let mut changes = self.names.subscribe();
        loop {
            if changes.borrow_and_update().contains(&peer.name) {
                tracing::warn!(%peer, "closing the connection of a revoked node");
                connection.close(CLOSE_REVOKED, b"this node is revoked");
                return;
            }
            tokio::select! {
                changed = changes.changed() => if changed.is_err() { return },
                _ = connection.closed() => return,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn n(s: &str) -> NodeName {
        NodeName::new(s).unwrap()
    }

    #[test]
    fn replace_reports_newly_revoked_names() {
        let r = Revocations::new();
        let shared = r.clone();
        assert!(!r.is_revoked(&n("a")));
        assert_eq!(r.replace([&n("a"), &n("b")]), vec![n("a"), n("b")]);
        assert!(shared.is_revoked(&n("a")), "clones share the set");
        assert_eq!(r.replace([&n("b"), &n("c")]), vec![n("c")]);
        assert!(
            !shared.is_revoked(&n("a")),
            "a name left off the list is no longer revoked"
        );
        assert!(r.replace([&n("b"), &n("c")]).is_empty());
    }
}
