//! Trust checks: one test per refusal, plus property tests over versions and tampering.

use courseway_content::encoding::{Decode, Encode};
use courseway_content::strategies;
use courseway_content::synthetic::SyntheticLesson;
use courseway_content::*;
use proptest::prelude::*;

const NOW: UnixTime = UnixTime(1_800_000_000);
const DAY: u64 = 86_400;

struct Deployment {
    root: RootKey,
    online: OnlineKey,
}

impl Deployment {
    fn new(root_seed: u8) -> Self {
        let root = RootKey::from_seed([root_seed; 32]);
        let seed = [root_seed.wrapping_add(100); 32];
        let delegation = root.delegate(
            OnlineKey::public_for_seed(seed),
            "origin-key",
            UnixTime(NOW.0 - DAY),
            NOW.plus_secs(30 * DAY),
        );
        let online = OnlineKey::new(seed, delegation).unwrap();
        Self { root, online }
    }

    fn trust(&self) -> TrustState {
        TrustState::new(self.root.public())
    }

    fn schedule(&self, version: u64, entries: Vec<ScheduleEntry>) -> Signed<Schedule> {
        self.online.sign(Schedule {
            live: Vec::new(),
            version,
            issued_at: NOW,
            expires_at: NOW.plus_secs(7 * DAY),
            entries,
        })
    }

    fn catalog(&self, version: u64, entries: Vec<CatalogEntry>) -> Signed<Catalog> {
        self.online
            .sign(Catalog::new(version, NOW, NOW.plus_secs(7 * DAY), entries).unwrap())
    }
}

fn lesson(name: &str, seed: u64) -> LessonManifest {
    SyntheticLesson::standard(LessonId::new(name).unwrap(), seed, 2)
        .build()
        .manifest
}

fn entry_for(m: &LessonManifest) -> CatalogEntry {
    CatalogEntry {
        lesson: m.id.clone(),
        manifest: m.hash(),
        manifest_size: m.to_bytes().len() as u32,
        content_size: m.content_size(),
    }
}

#[test]
fn accepts_a_valid_catalog_then_newer_ones() {
    let dep = Deployment::new(1);
    let mut trust = dep.trust();
    assert_eq!(trust.accept_catalog(dep.catalog(1, vec![]), NOW), Ok(Acceptance::New));
    assert_eq!(
        trust.accept_catalog(dep.catalog(1, vec![]), NOW),
        Ok(Acceptance::Unchanged)
    );
    assert_eq!(trust.accept_catalog(dep.catalog(5, vec![]), NOW), Ok(Acceptance::New));
    assert_eq!(trust.catalog().unwrap().body.version, 5);
}

#[test]
fn refuses_a_tampered_catalog() {
    let dep = Deployment::new(1);
    let m = lesson("a", 1);
    let mut signed = dep.catalog(1, vec![entry_for(&m)]);
    // A relay swaps the manifest hash for one of its own.
    let mut entry = signed.body.entries()[0].clone();
    entry.manifest = ChunkId::of(b"altered");
    signed.body = Catalog::new(1, signed.body.issued_at, signed.body.expires_at, vec![entry]).unwrap();
    assert_eq!(
        dep.trust().accept_catalog(signed, NOW),
        Err(TrustError::BadSignature { what: "catalog" })
    );
}

#[test]
fn refuses_a_forged_delegation() {
    let dep = Deployment::new(1);
    let mut signed = dep.catalog(1, vec![]);
    signed.delegation.not_after = UnixTime(u64::MAX); // extend the key's life without the root
    assert_eq!(
        dep.trust().accept_catalog(signed, NOW),
        Err(TrustError::BadSignature { what: "key delegation" })
    );
}

#[test]
fn refuses_a_catalog_from_another_deployment() {
    let ours = Deployment::new(1);
    let theirs = Deployment::new(2);
    let err = ours.trust().accept_catalog(theirs.catalog(9, vec![]), NOW).unwrap_err();
    assert!(matches!(err, TrustError::UnknownKey { .. }), "{err}");
}

#[test]
fn refuses_an_expired_delegation() {
    let dep = Deployment::new(1);
    let later = NOW.plus_secs(31 * DAY);
    let signed = dep
        .online
        .sign(Catalog::new(1, later, later.plus_secs(DAY), vec![]).unwrap());
    let err = dep.trust().accept_catalog(signed, later).unwrap_err();
    assert!(matches!(err, TrustError::DelegationExpired { .. }), "{err}");
}

#[test]
fn refuses_a_delegation_not_yet_valid() {
    let dep = Deployment::new(1);
    let earlier = UnixTime(NOW.0 - 2 * DAY);
    let err = dep.trust().accept_catalog(dep.catalog(1, vec![]), earlier).unwrap_err();
    assert!(matches!(err, TrustError::DelegationNotYetValid { .. }), "{err}");
}

#[test]
fn refuses_rollback_and_conflict() {
    let dep = Deployment::new(1);
    let mut trust = dep.trust();
    trust.accept_catalog(dep.catalog(7, vec![]), NOW).unwrap();
    assert_eq!(
        trust.accept_catalog(dep.catalog(6, vec![]), NOW),
        Err(TrustError::Rollback {
            what: "catalog",
            offered: 6,
            accepted: 7
        })
    );
    let m = lesson("x", 3);
    assert_eq!(
        trust.accept_catalog(dep.catalog(7, vec![entry_for(&m)]), NOW),
        Err(TrustError::Conflict {
            what: "catalog",
            version: 7
        })
    );
    assert_eq!(trust.catalog().unwrap().body.version, 7);
}

#[test]
fn refuses_an_expired_catalog() {
    let dep = Deployment::new(1);
    let err = dep
        .trust()
        .accept_catalog(dep.catalog(1, vec![]), NOW.plus_secs(8 * DAY))
        .unwrap_err();
    assert!(matches!(err, TrustError::CatalogExpired { .. }), "{err}");
}

#[test]
fn checks_manifests_against_the_catalog() {
    let dep = Deployment::new(1);
    let a = lesson("lesson-a", 1);
    let b = lesson("lesson-b", 2);
    let mut trust = dep.trust();
    assert_eq!(trust.verify_manifest(&a.id, &a.to_bytes()), Err(TrustError::NoCatalog));
    trust.accept_catalog(dep.catalog(1, vec![entry_for(&a)]), NOW).unwrap();

    assert_eq!(trust.verify_manifest(&a.id, &a.to_bytes()).unwrap(), a);
    // b's bytes offered as a: hash mismatch.
    let err = trust.verify_manifest(&a.id, &b.to_bytes()).unwrap_err();
    assert!(matches!(err, TrustError::ManifestMismatch { .. }), "{err}");
    // One flipped bit.
    let mut bytes = a.to_bytes();
    let last = bytes.len() - 1;
    bytes[last] ^= 1;
    assert!(matches!(
        trust.verify_manifest(&a.id, &bytes),
        Err(TrustError::ManifestMismatch { .. })
    ));
    assert_eq!(
        trust.verify_manifest(&b.id, &b.to_bytes()),
        Err(TrustError::NotInCatalog { lesson: b.id.clone() })
    );
}

#[test]
fn schedules_and_live_segments_are_checked_too() {
    let dep = Deployment::new(1);
    let other = Deployment::new(2);
    let mut trust = dep.trust();
    assert_eq!(trust.accept_schedule(dep.schedule(2, vec![]), NOW), Ok(Acceptance::New));
    assert!(matches!(
        trust.accept_schedule(dep.schedule(1, vec![]), NOW),
        Err(TrustError::Rollback { what: "schedule", .. })
    ));
    let seg = LiveSegment {
        channel: ChannelId::new("city-live").unwrap(),
        rendition: "360p".into(),
        info: Default::default(),
        sequence: 1,
        discontinuity: 0,
        duration_ms: 2000,
        cut_at_ms: 0,
        chunks: vec![],
    };
    assert!(trust.verify_live_segment(&dep.online.sign(seg.clone()), NOW).is_ok());
    let mut forged = dep.online.sign(seg.clone());
    forged.body.sequence = 2;
    assert_eq!(
        trust.verify_live_segment(&forged, NOW),
        Err(TrustError::BadSignature { what: "live segment" })
    );
    assert!(matches!(
        trust.verify_live_segment(&other.online.sign(seg), NOW),
        Err(TrustError::UnknownKey { .. })
    ));
}

#[test]
fn a_signature_for_one_kind_does_not_verify_as_another() {
    // Domain separation: the same online key signing a schedule cannot be replayed as a catalog.
    let dep = Deployment::new(1);
    let catalog = Catalog::new(1, NOW, NOW.plus_secs(DAY), vec![]).unwrap();
    let signed = dep.online.sign(catalog.clone());
    let schedule_sig = dep
        .online
        .sign(Schedule {
            live: Vec::new(),
            version: 1,
            issued_at: NOW,
            expires_at: NOW.plus_secs(DAY),
            entries: vec![],
        })
        .signature;
    let replayed = Signed {
        body: catalog,
        delegation: signed.delegation,
        signature: schedule_sig,
    };
    assert!(!replayed.body_signature_is_valid());
}

#[test]
fn restore_rechecks_signatures_but_not_expiry() {
    let dep = Deployment::new(1);
    let signed = dep.catalog(4, vec![]);
    let restored = TrustState::restore(dep.root.public(), Some(signed.clone()), None).unwrap();
    // Long after expiry the restored catalog is still the rollback floor.
    let mut trust = restored;
    assert!(matches!(
        trust.accept_catalog(dep.catalog(3, vec![]), NOW),
        Err(TrustError::Rollback { .. })
    ));
    let mut tampered = signed;
    tampered.body.version = 99;
    assert_eq!(
        TrustState::restore(dep.root.public(), Some(tampered), None).unwrap_err(),
        TrustError::BadSignature { what: "catalog" }
    );
}

fn showing(lesson: &str, at: UnixTime) -> ScheduleEntry {
    ScheduleEntry {
        lesson: LessonId::new(lesson).unwrap(),
        show_at: at,
        target: Target::All,
    }
}

#[test]
fn accepts_a_valid_schedule_then_newer_ones() {
    let dep = Deployment::new(1);
    let mut trust = dep.trust();
    let first = dep.schedule(1, vec![showing("a", NOW.plus_secs(3600))]);
    assert_eq!(trust.check_schedule(&first, NOW), Ok(Acceptance::New));
    assert!(trust.schedule().is_none(), "check_schedule accepts nothing");
    assert_eq!(trust.accept_schedule(first.clone(), NOW), Ok(Acceptance::New));
    assert_eq!(trust.accept_schedule(first, NOW), Ok(Acceptance::Unchanged));
    let second = dep.schedule(2, vec![showing("b", NOW.plus_secs(7200))]);
    assert_eq!(trust.accept_schedule(second.clone(), NOW), Ok(Acceptance::New));
    assert_eq!(trust.schedule(), Some(&second));
}

#[test]
fn refuses_a_tampered_schedule() {
    let dep = Deployment::new(1);
    let mut signed = dep.schedule(1, vec![showing("a", NOW.plus_secs(3600))]);
    // A relay moves the showing to another lesson.
    signed.body.entries[0].lesson = LessonId::new("b").unwrap();
    assert_eq!(
        dep.trust().accept_schedule(signed, NOW),
        Err(TrustError::BadSignature { what: "schedule" })
    );
}

#[test]
fn refuses_a_schedule_from_another_deployment_or_an_undelegated_key() {
    let ours = Deployment::new(1);
    let theirs = Deployment::new(2);
    let err = ours
        .trust()
        .accept_schedule(theirs.schedule(3, vec![]), NOW)
        .unwrap_err();
    assert!(matches!(err, TrustError::UnknownKey { what: "schedule", .. }), "{err}");
    // Our root, but a delegation the root never signed.
    let mut forged = ours.schedule(3, vec![]);
    forged.delegation.label = "not-delegated".into();
    assert_eq!(
        ours.trust().accept_schedule(forged, NOW),
        Err(TrustError::BadSignature { what: "key delegation" })
    );
    let late = NOW.plus_secs(31 * DAY);
    let err = ours
        .trust()
        .accept_schedule(
            ours.online.sign(Schedule {
                live: Vec::new(),
                version: 1,
                issued_at: late,
                expires_at: late.plus_secs(DAY),
                entries: vec![],
            }),
            late,
        )
        .unwrap_err();
    assert!(matches!(err, TrustError::DelegationExpired { .. }), "{err}");
}

#[test]
fn refuses_schedule_rollback_conflict_and_expiry() {
    let dep = Deployment::new(1);
    let mut trust = dep.trust();
    trust.accept_schedule(dep.schedule(7, vec![]), NOW).unwrap();
    assert_eq!(
        trust.accept_schedule(dep.schedule(6, vec![]), NOW),
        Err(TrustError::Rollback {
            what: "schedule",
            offered: 6,
            accepted: 7
        })
    );
    assert_eq!(
        trust.accept_schedule(dep.schedule(7, vec![showing("x", NOW)]), NOW),
        Err(TrustError::Conflict {
            what: "schedule",
            version: 7
        })
    );
    let later = NOW.plus_secs(8 * DAY);
    assert_eq!(
        trust.accept_schedule(dep.schedule(8, vec![]), later),
        Err(TrustError::ScheduleExpired {
            expires_at: NOW.plus_secs(7 * DAY),
            now: later
        })
    );
    assert_eq!(trust.schedule().unwrap().body.version, 7);
}

#[test]
fn a_restored_schedule_is_the_rollback_floor_even_after_expiry() {
    let dep = Deployment::new(1);
    let signed = dep.schedule(4, vec![]);
    let mut trust = TrustState::restore(dep.root.public(), None, Some(signed.clone())).unwrap();
    assert!(matches!(
        trust.accept_schedule(dep.schedule(3, vec![]), NOW),
        Err(TrustError::Rollback { what: "schedule", .. })
    ));
    let mut tampered = signed;
    tampered.body.version = 99;
    assert_eq!(
        TrustState::restore(dep.root.public(), None, Some(tampered)).unwrap_err(),
        TrustError::BadSignature { what: "schedule" }
    );
}

#[test]
fn upcoming_showings_are_those_not_past_and_inside_the_horizon() {
    let schedule = Schedule {
        live: Vec::new(),
        version: 1,
        issued_at: NOW,
        expires_at: NOW.plus_secs(DAY),
        entries: vec![
            showing("past", UnixTime(NOW.0 - 1)),
            showing("now", NOW),
            showing("soon", NOW.plus_secs(3600)),
            showing("edge", NOW.plus_secs(7 * DAY)),
            showing("far", NOW.plus_secs(30 * DAY)),
            showing("farther", NOW.plus_secs(40 * DAY)),
        ],
    };
    let upcoming: Vec<&str> = schedule.upcoming(NOW, 7 * DAY).map(|e| e.lesson.as_str()).collect();
    assert_eq!(upcoming, ["now", "soon", "edge"]);
    // "far" is the next to enter a 7-day horizon, 23 days from now.
    assert_eq!(schedule.next_entering(NOW, 7 * DAY), Some(NOW.plus_secs(23 * DAY)));
    assert_eq!(schedule.next_entering(NOW, 50 * DAY), None);
}

proptest! {
    #[test]
    fn only_strictly_newer_versions_are_accepted(first in 0u64..1000, second in 0u64..1000) {
        let dep = Deployment::new(1);
        let mut trust = dep.trust();
        trust.accept_catalog(dep.catalog(first, vec![]), NOW).unwrap();
        let result = trust.accept_catalog(dep.catalog(second, vec![]), NOW);
        match second.cmp(&first) {
            std::cmp::Ordering::Greater => prop_assert_eq!(result, Ok(Acceptance::New)),
            std::cmp::Ordering::Equal => prop_assert_eq!(result, Ok(Acceptance::Unchanged)),
            std::cmp::Ordering::Less => prop_assert!(
                matches!(result, Err(TrustError::Rollback { .. })),
                "expected a rollback refusal"
            ),
        }
        prop_assert_eq!(trust.catalog().unwrap().body.version, first.max(second));
    }

    #[test]
    fn any_flipped_bit_in_a_signed_catalog_is_refused(
        catalog in strategies::catalog(),
        bit in any::<prop::sample::Index>(),
    ) {
        let signer = strategies::test_signer();
        let root = RootKey::from_seed([1; 32]).public();
        let mut bytes = signer.sign(catalog).to_bytes();
        let i = bit.index(bytes.len() * 8);
        bytes[i / 8] ^= 1 << (i % 8);
        // Either the bytes no longer decode, or the decoded value fails the trust check.
        if let Ok(tampered) = Signed::<Catalog>::from_bytes(&bytes) {
            prop_assert!(TrustState::new(root).verify_signed(&tampered, UnixTime(1)).is_err());
        }
    }
}
