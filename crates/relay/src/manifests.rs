//! Manifest fetches shared by every child that asks for the same missing manifest.
//!
//! The first child to miss a manifest starts one upstream fetch; later children wait for its
//! result. The fetch runs in a task of its own, so a child that goes away does not cancel it
//! for the others. Bytes are checked against the manifest's hash before they are stored or
//! given to anyone.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use courseway_content::ChunkId;
use courseway_node::{store_io, Upstream, UpstreamError};
use courseway_proto::{ErrorCode, ErrorReply};
use courseway_store::{Durability, Store};
use parking_lot::Mutex;
use tokio::sync::watch;

use crate::service::Counters;

/// The result every waiter of one fetch gets.
type Outcome = Option<Result<Arc<Vec<u8>>, ErrorReply>>;

/// The key of a cached manifest in the store's `meta` column family.
pub fn manifest_key(hash: &ChunkId) -> Vec<u8> {
    format!("manifest/{hash}").into_bytes()
}

#[derive(Debug, Default)]
struct Table {
    in_flight: HashMap<ChunkId, watch::Receiver<Outcome>>,
    /// Manifests a fetch has stored since the relay started (32 bytes each). A child that
    /// missed the store just before such a write reads the store again instead of fetching.
    landed: HashSet<ChunkId>,
}

/// The relay's table of in-flight manifest fetches.
#[derive(Debug, Default)]
pub struct Manifests {
    table: Mutex<Table>,
}

/// What [`Manifests::join_or_start`] found.
enum Joined {
    /// A fetch stored the manifest since the caller looked: read the store again.
    Landed,
    /// Wait for this fetch; start it if the caller is the first.
    Flight(watch::Receiver<Outcome>, Option<watch::Sender<Outcome>>),
}

/// Where a manifest fetch goes and what it may use.
#[derive(Debug, Clone)]
pub struct ManifestSource {
    pub upstream: Arc<Upstream>,
    pub store: Arc<Store>,
    pub counters: Arc<Counters>,
    /// How long the parents may take to answer.
    pub wait: Duration,
}

impl Manifests {
    fn join_or_start(&self, hash: ChunkId, trust_landed: bool) -> Joined {
        let mut table = self.table.lock();
        if let Some(rx) = table.in_flight.get(&hash) {
            return Joined::Flight(rx.clone(), None);
        }
        if trust_landed && table.landed.contains(&hash) {
            return Joined::Landed;
        }
        let (tx, rx) = watch::channel(None);
        table.in_flight.insert(hash, rx.clone());
        Joined::Flight(rx, Some(tx))
    }

    fn finish(&self, hash: ChunkId, stored: bool) {
        let mut table = self.table.lock();
        table.in_flight.remove(&hash);
        if stored {
            table.landed.insert(hash);
        }
    }

    /// The manifest named `hash`: from the store, or fetched (once, however many ask) from the
    /// parents, checked against its hash and stored.
    pub async fn get(self: &Arc<Self>, hash: ChunkId, source: &ManifestSource) -> Result<Vec<u8>, ErrorReply> {
        let mut trust_landed = true;
        loop {
            let cached = store_io(&source.store, move |s| s.get_meta(&manifest_key(&hash))).await;
            match cached {
                Ok(Some(bytes)) => return Ok(bytes),
                Ok(None) => {}
                Err(e) => tracing::warn!(error = %e, "cannot read a cached manifest; fetching it"),
            }
            match self.join_or_start(hash, trust_landed) {
                // Stored since the read above; a second miss means the write did not stick.
                Joined::Landed => trust_landed = false,
                Joined::Flight(rx, start) => {
                    if let Some(tx) = start {
                        tokio::spawn(fetch(self.clone(), hash, source.clone(), tx));
                    }
                    return outcome(rx).await;
                }
            }
        }
    }
}

async fn outcome(mut rx: watch::Receiver<Outcome>) -> Result<Vec<u8>, ErrorReply> {
    loop {
        if let Some(result) = rx.borrow_and_update().clone() {
            return result.map(|bytes| bytes.to_vec());
        }
        if rx.changed().await.is_err() {
            return Err(ErrorReply::new(
                ErrorCode::UpstreamUnavailable,
                "the manifest fetch was abandoned; retry",
            ));
        }
    }
}

async fn fetch(manifests: Arc<Manifests>, hash: ChunkId, source: ManifestSource, tx: watch::Sender<Outcome>) {
    let unavailable = |message: String| ErrorReply::new(ErrorCode::UpstreamUnavailable, message);
    let fetched = tokio::time::timeout(source.wait, source.upstream.fetch_manifest(hash)).await;
    let mut stored = false;
    let result = match fetched {
        Err(_) => Err(unavailable(format!(
            "no parent sent manifest {hash} within {:?}",
            source.wait
        ))),
        Ok(Err(e @ UpstreamError::ManifestMismatch { .. })) => {
            // The upstream refused it (and counted it by reason); the relay counts it as a
            // verification failure of its own.
            source.counters.bad_chunks.fetch_add(1, Ordering::Relaxed);
            Err(e.to_reply())
        }
        Ok(Err(e)) => Err(e.to_reply()),
        Ok(Ok(bytes)) if ChunkId::of(&bytes) != hash => {
            source.counters.bad_chunks.fetch_add(1, Ordering::Relaxed);
            Err(unavailable(format!(
                "the parent sent bytes that do not match manifest {hash}; refused"
            )))
        }
        Ok(Ok(bytes)) => {
            let bytes = Arc::new(bytes);
            let cached = bytes.clone();
            let put = move |s: &Store| s.put_meta(&manifest_key(&hash), &cached, Durability::Buffered);
            match store_io(&source.store, put).await {
                Ok(()) => stored = true,
                Err(e) => tracing::warn!(error = %e, "could not cache a manifest; children were still served"),
            }
            Ok(bytes)
        }
    };
    // Out of the table before the waiters wake, so a failure is not handed to later askers.
    manifests.finish(hash, stored);
    tx.send_replace(Some(result));
}
