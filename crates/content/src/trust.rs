//! End-to-end trust checks: what a node accepts from upstream, whoever relayed it.
//!
//! A node is enrolled with one root public key. It accepts a signed object only when
//! 1. the object's delegation was signed by that root key ([`TrustError::UnknownKey`] if
//!    another root signed it, [`TrustError::BadSignature`] if the signature is wrong),
//! 2. the delegation is valid now ([`TrustError::DelegationExpired`],
//!    [`TrustError::DelegationNotYetValid`]),
//! 3. the online key's signature over the object is valid ([`TrustError::BadSignature`]).
//!
//! Catalogs and schedules must also be newer than what was last accepted
//! ([`TrustError::Rollback`], [`TrustError::Conflict`]) and not past their expiry
//! ([`TrustError::CatalogExpired`], [`TrustError::ScheduleExpired`]: the freeze attack). Manifests are checked against the hash the
//! accepted catalog lists ([`TrustError::ManifestMismatch`]).

use thiserror::Error;

use crate::catalog::Catalog;
use crate::chunk::ChunkId;
use crate::encoding::{Decode, DecodeError};
use crate::lesson::LessonManifest;
use crate::live::LiveSegment;
use crate::name::LessonId;
use crate::schedule::Schedule;
use crate::signing::{PublicKey, Signable, Signed};
use crate::time::UnixTime;

/// Why a signed object or a manifest was refused.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum TrustError {
    #[error(
        "{what} is signed under root key {offered}, but this node was enrolled with root key {enrolled}; \
         it comes from another deployment (check the parent address and the node's enrolment)"
    )]
    UnknownKey {
        what: &'static str,
        offered: PublicKey,
        enrolled: PublicKey,
    },
    #[error("the signature on the {what} does not verify; the data was altered or forged and is refused")]
    BadSignature { what: &'static str },
    #[error(
        "the signing key {label:?} expired at {not_after} (now {now}); the origin must sign with a key the \
         root has delegated to again"
    )]
    DelegationExpired {
        label: String,
        not_after: UnixTime,
        now: UnixTime,
    },
    #[error("the signing key {label:?} is valid only from {not_before} (now {now}); check this node's clock")]
    DelegationNotYetValid {
        label: String,
        not_before: UnixTime,
        now: UnixTime,
    },
    #[error("{what} version {offered} is not newer than the accepted version {accepted} (rollback refused)")]
    Rollback {
        what: &'static str,
        offered: u64,
        accepted: u64,
    },
    #[error("a different {what} with the same version {version} was offered; the one accepted first is kept")]
    Conflict { what: &'static str, version: u64 },
    #[error(
        "the catalog expired at {expires_at} (now {now}); refusing stale data (the origin re-signs the catalog \
         before expiry; check this node's clock and its path to the origin)"
    )]
    CatalogExpired { expires_at: UnixTime, now: UnixTime },
    #[error(
        "the schedule expired at {expires_at} (now {now}); refusing stale data (the origin must publish the \
         schedule again before it expires; check this node's clock and its path to the origin)"
    )]
    ScheduleExpired { expires_at: UnixTime, now: UnixTime },
    #[error("no catalog has been accepted yet, so manifests cannot be checked")]
    NoCatalog,
    #[error("lesson {lesson} is not in the accepted catalog")]
    NotInCatalog { lesson: LessonId },
    #[error("the manifest offered for lesson {lesson} hashes to {actual}, but the catalog lists {expected}; refused")]
    ManifestMismatch {
        lesson: LessonId,
        expected: ChunkId,
        actual: ChunkId,
    },
    #[error("the manifest for lesson {lesson} matches the catalog but cannot be decoded: {source}")]
    ManifestUndecodable { lesson: LessonId, source: DecodeError },
    #[error("the manifest listed for lesson {lesson} describes lesson {found}")]
    ManifestForOtherLesson { lesson: LessonId, found: LessonId },
}

/// Whether accepting an object changed anything.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Acceptance {
    /// A newer version was accepted.
    New,
    /// The same version was offered again; nothing changed.
    Unchanged,
}

/// What a node has accepted so far, and the checks for what it is offered next.
#[derive(Debug, Clone)]
pub struct TrustState {
    root: PublicKey,
    catalog: Option<Signed<Catalog>>,
    schedule: Option<Signed<Schedule>>,
}

impl TrustState {
    /// A node enrolled with `root` that has accepted nothing yet.
    pub fn new(root: PublicKey) -> Self {
        Self {
            root,
            catalog: None,
            schedule: None,
        }
    }

    /// The root key this node trusts.
    pub fn root(&self) -> PublicKey {
        self.root
    }

    /// The last accepted catalog.
    pub fn catalog(&self) -> Option<&Signed<Catalog>> {
        self.catalog.as_ref()
    }

    /// The last accepted schedule.
    pub fn schedule(&self) -> Option<&Signed<Schedule>> {
        self.schedule.as_ref()
    }

    /// Restores the state a node persisted, after a restart.
    ///
    /// Signatures are checked again (the disk may have been tampered with) but expiry is not: a
    /// catalog that expired while the node was down is still the floor for rollback checks.
    pub fn restore(
        root: PublicKey,
        catalog: Option<Signed<Catalog>>,
        schedule: Option<Signed<Schedule>>,
    ) -> Result<Self, TrustError> {
        let state = Self {
            root,
            catalog: None,
            schedule: None,
        };
        if let Some(c) = &catalog {
            state.check_chain(c)?;
        }
        if let Some(s) = &schedule {
            state.check_chain(s)?;
        }
        Ok(Self {
            root,
            catalog,
            schedule,
        })
    }

    /// Checks the signature chain of `signed` (root → delegation → object) and that the
    /// delegation is valid at `now`.
    pub fn verify_signed<T: Signable>(&self, signed: &Signed<T>, now: UnixTime) -> Result<(), TrustError> {
        self.check_chain(signed)?;
        let d = &signed.delegation;
        if now < d.not_before {
            return Err(TrustError::DelegationNotYetValid {
                label: d.label.clone(),
                not_before: d.not_before,
                now,
            });
        }
        if now > d.not_after {
            return Err(TrustError::DelegationExpired {
                label: d.label.clone(),
                not_after: d.not_after,
                now,
            });
        }
        Ok(())
    }

    fn check_chain<T: Signable>(&self, signed: &Signed<T>) -> Result<(), TrustError> {
        let d = &signed.delegation;
        if d.root != self.root {
            return Err(TrustError::UnknownKey {
                what: T::WHAT,
                offered: d.root,
                enrolled: self.root,
            });
        }
        if !d.signature_is_valid() {
            return Err(TrustError::BadSignature { what: "key delegation" });
        }
        if !signed.body_signature_is_valid() {
            return Err(TrustError::BadSignature { what: T::WHAT });
        }
        Ok(())
    }

    /// Checks `candidate` against everything a catalog must satisfy, without accepting it.
    pub fn check_catalog(&self, candidate: &Signed<Catalog>, now: UnixTime) -> Result<Acceptance, TrustError> {
        self.verify_signed(candidate, now)?;
        let catalog = &candidate.body;
        if now > catalog.expires_at {
            return Err(TrustError::CatalogExpired {
                expires_at: catalog.expires_at,
                now,
            });
        }
        newer_than(self.catalog.as_ref(), candidate, "catalog", |c| c.version)
    }

    /// Checks and, if it is newer, accepts `candidate` as the node's catalog.
    pub fn accept_catalog(&mut self, candidate: Signed<Catalog>, now: UnixTime) -> Result<Acceptance, TrustError> {
        let acceptance = self.check_catalog(&candidate, now)?;
        if acceptance == Acceptance::New {
            self.catalog = Some(candidate);
        }
        Ok(acceptance)
    }

    /// Checks `candidate` against everything a schedule must satisfy, without accepting it.
    pub fn check_schedule(&self, candidate: &Signed<Schedule>, now: UnixTime) -> Result<Acceptance, TrustError> {
        self.verify_signed(candidate, now)?;
        let schedule = &candidate.body;
        if now > schedule.expires_at {
            return Err(TrustError::ScheduleExpired {
                expires_at: schedule.expires_at,
                now,
            });
        }
        newer_than(self.schedule.as_ref(), candidate, "schedule", |s| s.version)
    }

    /// Checks and, if it is newer, accepts `candidate` as the node's schedule.
    pub fn accept_schedule(&mut self, candidate: Signed<Schedule>, now: UnixTime) -> Result<Acceptance, TrustError> {
        let acceptance = self.check_schedule(&candidate, now)?;
        if acceptance == Acceptance::New {
            self.schedule = Some(candidate);
        }
        Ok(acceptance)
    }

    /// Checks a live segment announcement's signature chain.
    pub fn verify_live_segment(&self, segment: &Signed<LiveSegment>, now: UnixTime) -> Result<(), TrustError> {
        self.verify_signed(segment, now)
    }

    /// Checks manifest bytes against the hash the accepted catalog lists for `lesson`, then
    /// decodes them.
    pub fn verify_manifest(&self, lesson: &LessonId, bytes: &[u8]) -> Result<LessonManifest, TrustError> {
        let catalog = self.catalog.as_ref().ok_or(TrustError::NoCatalog)?;
        let entry = catalog
            .body
            .entry(lesson)
            .ok_or_else(|| TrustError::NotInCatalog { lesson: lesson.clone() })?;
        let actual = ChunkId::of(bytes);
        if actual != entry.manifest {
            return Err(TrustError::ManifestMismatch {
                lesson: lesson.clone(),
                expected: entry.manifest,
                actual,
            });
        }
        let manifest = LessonManifest::from_bytes(bytes).map_err(|source| TrustError::ManifestUndecodable {
            lesson: lesson.clone(),
            source,
        })?;
        if &manifest.id != lesson {
            return Err(TrustError::ManifestForOtherLesson {
                lesson: lesson.clone(),
                found: manifest.id,
            });
        }
        Ok(manifest)
    }
}

fn newer_than<T: Signable>(
    accepted: Option<&Signed<T>>,
    candidate: &Signed<T>,
    what: &'static str,
    version: impl Fn(&T) -> u64,
) -> Result<Acceptance, TrustError> {
    let Some(accepted) = accepted else {
        return Ok(Acceptance::New);
    };
    let (offered, current) = (version(&candidate.body), version(&accepted.body));
    if offered > current {
        Ok(Acceptance::New)
    } else if offered == current && candidate.body.to_bytes() == accepted.body.to_bytes() {
        Ok(Acceptance::Unchanged)
    } else if offered == current {
        Err(TrustError::Conflict { what, version: offered })
    } else {
        Err(TrustError::Rollback {
            what,
            offered,
            accepted: current,
        })
    }
}
