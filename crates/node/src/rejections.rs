//! What a node refused from its parents, by object and reason: the counts behind
//! `courseway_upstream_rejected_total{object, reason}`.
//!
//! The label values are a fixed table (no value comes from the network), so the metric has a
//! bounded number of series whatever a hostile parent sends.

use std::sync::atomic::{AtomicU64, Ordering};

use courseway_content::TrustError;

/// Why a chunk transfer from a parent was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChunkRejection {
    /// The bytes did not hash to the chunk's id.
    HashMismatch,
    /// The header named another chunk, size or offset than the one asked for.
    WrongHeader,
    /// The parent ended the stream before the declared size.
    Truncated,
    /// The parent kept sending past the declared size.
    Overlong,
}

impl ChunkRejection {
    fn label(self) -> &'static str {
        match self {
            ChunkRejection::HashMismatch => "hash_mismatch",
            ChunkRejection::WrongHeader => "wrong_header",
            ChunkRejection::Truncated => "truncated",
            ChunkRejection::Overlong => "overlong",
        }
    }
}

/// Which signed object was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SignedKind {
    Catalog,
    Schedule,
    /// A live segment announcement.
    Live,
}

impl SignedKind {
    fn label(self) -> &'static str {
        match self {
            SignedKind::Catalog => "catalog",
            SignedKind::Schedule => "schedule",
            SignedKind::Live => "live",
        }
    }
}

/// The reason label of a refused signed object.
pub fn trust_reason(e: &TrustError) -> &'static str {
    match e {
        TrustError::UnknownKey { .. } => "unknown_key",
        TrustError::BadSignature { .. } => "bad_signature",
        TrustError::DelegationExpired { .. } => "delegation_expired",
        TrustError::DelegationNotYetValid { .. } => "delegation_not_yet_valid",
        TrustError::Rollback { .. } => "rollback",
        TrustError::Conflict { .. } => "conflict",
        TrustError::CatalogExpired { .. } | TrustError::ScheduleExpired { .. } => "expired",
        TrustError::NoCatalog
        | TrustError::NotInCatalog { .. }
        | TrustError::ManifestMismatch { .. }
        | TrustError::ManifestUndecodable { .. }
        | TrustError::ManifestForOtherLesson { .. } => "manifest",
    }
}

const SIGNED_REASONS: [&str; 7] = [
    "unknown_key",
    "bad_signature",
    "delegation_expired",
    "delegation_not_yet_valid",
    "rollback",
    "conflict",
    "expired",
];

/// Every (object, reason) series, in exposition order.
fn series() -> impl Iterator<Item = (&'static str, &'static str)> {
    let chunks = [
        ChunkRejection::HashMismatch,
        ChunkRejection::WrongHeader,
        ChunkRejection::Truncated,
        ChunkRejection::Overlong,
    ]
    .into_iter()
    .map(|r| ("chunk", r.label()));
    let manifests = std::iter::once(("manifest", "hash_mismatch"));
    let signed = [SignedKind::Catalog, SignedKind::Schedule, SignedKind::Live]
        .into_iter()
        .flat_map(|k| SIGNED_REASONS.iter().map(move |r| (k.label(), *r)));
    chunks.chain(manifests).chain(signed)
}

const SERIES: usize = 4 + 1 + 3 * SIGNED_REASONS.len();

/// Counts of refusals, one per (object, reason).
#[derive(Debug)]
pub struct Rejections {
    counts: [AtomicU64; SERIES],
}

impl Default for Rejections {
    fn default() -> Self {
        Self {
            counts: std::array::from_fn(|_| AtomicU64::new(0)),
        }
    }
}

impl Rejections {
    fn add(&self, object: &str, reason: &str) {
        if let Some(i) = series().position(|(o, r)| o == object && r == reason) {
            self.counts[i].fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Counts a refused chunk transfer.
    pub fn chunk(&self, why: ChunkRejection) {
        self.add("chunk", why.label());
    }

    /// Counts manifest bytes that did not hash to the name asked for.
    pub fn manifest(&self) {
        self.add("manifest", "hash_mismatch");
    }

    /// Counts a refused catalog, schedule or live segment.
    pub fn signed(&self, kind: SignedKind, e: &TrustError) {
        self.add(kind.label(), trust_reason(e));
    }

    /// How many `object`s were refused for `reason` (0 for a series that does not exist).
    pub fn get(&self, object: &str, reason: &str) -> u64 {
        series()
            .position(|(o, r)| o == object && r == reason)
            .map_or(0, |i| self.counts[i].load(Ordering::Relaxed))
    }

    /// Every series with its count: `(object, reason, count)`.
    pub fn snapshot(&self) -> Vec<(&'static str, &'static str, u64)> {
        series()
            .zip(&self.counts)
            .map(|((o, r), c)| (o, r, c.load(Ordering::Relaxed)))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_series_is_counted_separately_and_unknown_ones_are_ignored() {
        let r = Rejections::default();
        assert_eq!(series().count(), SERIES);
        r.chunk(ChunkRejection::Truncated);
        r.chunk(ChunkRejection::Truncated);
        r.manifest();
        r.signed(
            SignedKind::Schedule,
            &TrustError::Conflict {
                what: "schedule",
                version: 3,
            },
        );
        r.add("chunk", "made-up");
        assert_eq!(r.get("chunk", "truncated"), 2);
        assert_eq!(r.get("manifest", "hash_mismatch"), 1);
        assert_eq!(r.get("schedule", "conflict"), 1);
        assert_eq!(r.get("catalog", "conflict"), 0);
        assert_eq!(r.snapshot().iter().map(|(_, _, c)| c).sum::<u64>(), 4);
    }
}
