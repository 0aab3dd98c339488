//! Hostile relays (issue #8): an enrolled parent that lies in one way per test. Each test puts
//! two children under it, a station and a relay (with a station of its own below), each with the
//! origin as its second parent. Every child must refuse the lie, count it in
//! `courseway_upstream_rejected_total{object, reason}`, log it, and end up holding the lesson
//! byte for byte from the honest parent; the station below the relay must never see anything
//! bad (the relay passes nothing on that it refused).

use std::sync::Arc;
use std::time::Duration;

use courseway::topology::DeploymentKeys;
use courseway_content::encoding::Encode;
use courseway_content::synthetic::{BuiltLesson, SyntheticLesson};
use courseway_content::{Catalog, LessonId, NodeName, RenditionKind, ScheduleEntry, Target, UnixTime};
use courseway_node::metrics::{self, MetricsCollector, MetricsHandler};
use courseway_node::{clock, Parent, UpstreamConfig};
use courseway_origin::Origin;
use courseway_proto::Role;
use courseway_relay::{PrefetchPolicy, Relay, RelayConfig};
use courseway_station::{Station, StationConfig};
use courseway_store::StoreConfig;
use courseway_tests::hostile::{Honest, HostileParent, Lie};
use courseway_tests::{loopback, wait_until};

fn lesson(name: &str, seed: u64) -> BuiltLesson {
    let mut spec = SyntheticLesson::standard(LessonId::new(name).unwrap(), seed, 3);
    spec.renditions = vec![(
        "720p".into(),
        RenditionKind::Video {
            width: 1280,
            height: 720,
        },
        1_000_000,
    )];
    spec.attachment_size = 0;
    spec.build()
}

async fn origin(dir: &std::path::Path, keys: &DeploymentKeys) -> Origin {
    courseway_tests::start_origin(dir, keys).await
}

/// What the honest parent would serve of `lessons`, with the origin's current catalog.
fn honest(origin: &Origin, lessons: &[&BuiltLesson]) -> Honest {
    Honest {
        chunks: lessons.iter().flat_map(|l| l.chunks.clone()).collect(),
        manifests: lessons
            .iter()
            .map(|l| (l.manifest.hash(), l.manifest.to_bytes()))
            .collect(),
        catalog: origin.catalog().unwrap(),
    }
}

/// The hostile parent, its two children and the station under the relay child.
struct Scene {
    _dir: tempfile::TempDir,
    origin: Origin,
    hostile: Arc<HostileParent>,
    hostile_task: tokio::task::JoinHandle<()>,
    relay: Relay,
    direct: Station,
    under_relay: Station,
}

impl Scene {
    async fn start(dir: tempfile::TempDir, keys: DeploymentKeys, origin: Origin, honest: Honest, lie: Lie) -> Self {
        let hostile_name = NodeName::new("hostile").unwrap();
        let (hostile, hostile_addr, hostile_task) = HostileParent::start(
            hostile_name.clone(),
            keys.enroll(Role::Relay, &hostile_name).unwrap(),
            honest,
            lie,
        );
        let parents = vec![
            Parent {
                name: hostile_name,
                addr: hostile_addr,
            },
            Parent {
                name: NodeName::new("origin").unwrap(),
                addr: origin.local_addr().unwrap(),
            },
        ];
        // Once a parent lied it is skipped for the rest of the test.
        let mut upstream = UpstreamConfig::new(parents);
        upstream.retry_after = Duration::from_secs(600);
        upstream.primary_recheck = Duration::from_secs(600);

        let relay_name = NodeName::new("district-h").unwrap();
        let mut rc = RelayConfig::new(
            relay_name.clone(),
            loopback(),
            StoreConfig::new(dir.path().join("relay"), 1 << 30),
            upstream.clone(),
        );
        rc.prefetch = PrefetchPolicy::None;
        let relay = Relay::start(rc, keys.enroll(Role::Relay, &relay_name).unwrap(), keys.root_public())
            .await
            .unwrap();

        let direct_name = NodeName::new("village-direct").unwrap();
        let mut sc = StationConfig::new(
            direct_name.clone(),
            loopback(),
            StoreConfig::new(dir.path().join("direct"), 1 << 30),
            upstream,
        );
        sc.retry_after = Duration::from_millis(300);
        let direct = Station::start(
            sc,
            keys.enroll(Role::Station, &direct_name).unwrap(),
            keys.root_public(),
        )
        .await
        .unwrap();

        let under_name = NodeName::new("village-under-relay").unwrap();
        let mut uc = StationConfig::new(
            under_name.clone(),
            loopback(),
            StoreConfig::new(dir.path().join("under"), 1 << 30),
            UpstreamConfig::new(vec![Parent {
                name: relay_name,
                addr: relay.local_addr().unwrap(),
            }]),
        );
        uc.retry_after = Duration::from_millis(300);
        let under_relay = Station::start(uc, keys.enroll(Role::Station, &under_name).unwrap(), keys.root_public())
            .await
            .unwrap();
        Self {
            _dir: dir,
            origin,
            hostile,
            hostile_task,
            relay,
            direct,
            under_relay,
        }
    }

    /// Waits until both stations hold every lesson of catalog `version`.
    async fn wait_synced(&self, version: u64) {
        let (mut a, mut b) = (self.direct.status(), self.under_relay.status());
        wait_until(
            &format!("both stations to sync catalog version {version}"),
            Duration::from_secs(120),
            || {
                let (a, b) = (a.borrow_and_update(), b.borrow_and_update());
                a.synced && b.synced && a.catalog_version == version && b.catalog_version == version
            },
        )
        .await;
    }

    /// The checks every hostile test ends with: the lie was told and refused by both children
    /// (counted under `object`/`reason`), both stations hold `lessons` byte for byte, the station
    /// under the relay never saw anything refused, and every store verifies.
    async fn check(self, object: &str, reason: &str, lessons: &[&BuiltLesson]) {
        assert!(
            self.hostile.lies_told.load(std::sync::atomic::Ordering::Relaxed) > 0,
            "the hostile parent was never asked: the test proved nothing"
        );
        let direct = rejected(self.direct.metrics(), object, reason);
        let relay = rejected(self.relay.metrics(), object, reason);
        assert!(direct >= 1, "the station did not count the lie ({object}/{reason})");
        assert!(relay >= 1, "the relay did not count the lie ({object}/{reason})");
        let below = all_rejected(self.under_relay.metrics());
        assert_eq!(below, 0, "the relay passed on something its station refused");
        assert_eq!(self.under_relay.status().borrow().bad_chunks, 0);
        for station in [&self.direct, &self.under_relay] {
            for l in lessons {
                for (id, bytes) in &l.chunks {
                    let held = station
                        .store()
                        .get(id, 0)
                        .unwrap()
                        .unwrap_or_else(|| panic!("{} lacks chunk {id}", station.name()));
                    assert_eq!(&held, bytes, "{} holds different bytes for {id}", station.name());
                }
            }
            assert!(station.store().verify_all().unwrap().is_clean());
        }
        assert!(self.relay.store().verify_all().unwrap().is_clean());
        println!("{object}/{reason}: refused {direct} times by the station, {relay} times by the relay");
        self.hostile_task.abort();
        self.direct.shutdown().await;
        self.under_relay.shutdown().await;
        drop(self.relay);
        self.origin.shutdown();
    }
}

fn render(collector: Box<dyn MetricsCollector>) -> String {
    let mut registry = metrics::registry("test");
    registry.register_collector(collector);
    MetricsHandler::new(registry).render()
}

/// `courseway_upstream_rejected_total{object, reason}` as a node exposes it.
fn rejected(collector: Box<dyn MetricsCollector>, object: &str, reason: &str) -> u64 {
    let text = render(collector);
    let series = format!("courseway_upstream_rejected_total{{object=\"{object}\",reason=\"{reason}\"}} ");
    text.lines()
        .find_map(|l| l.strip_prefix(&series))
        .unwrap_or_else(|| panic!("no {series} in:\n{text}"))
        .trim()
        .parse()
        .unwrap()
}

/// Every refusal a node counted, whatever the object and reason.
fn all_rejected(collector: Box<dyn MetricsCollector>) -> u64 {
    render(collector)
        .lines()
        .filter(|l| l.starts_with("courseway_upstream_rejected_total{"))
        .map(|l| l.rsplit(' ').next().unwrap().parse::<u64>().unwrap())
        .sum()
}

/// One published lesson, the hostile parent lying about its chunks.
async fn chunk_lie(lie: Lie, reason: &str) {
    let dir = tempfile::tempdir().unwrap();
    let keys = DeploymentKeys::generate().unwrap();
    let origin = origin(dir.path(), &keys).await;
    let l = lesson("hostile-chunks", 21);
    let version = origin.publish(&[(l.manifest.clone(), &l.chunks)]).unwrap();
    let honest = honest(&origin, &[&l]);
    let scene = Scene::start(dir, keys, origin, honest, lie).await;
    scene.wait_synced(version).await;
    scene.check("chunk", reason, &[&l]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_flipped_bytes_are_refused() {
    chunk_lie(Lie::FlippedBytes, "hash_mismatch").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_truncated_chunk_is_refused() {
    chunk_lie(Lie::TruncatedChunk, "truncated").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_other_chunk_than_asked_is_refused() {
    chunk_lie(Lie::OtherChunk, "wrong_header").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_endless_bytes_past_the_size_are_refused() {
    chunk_lie(Lie::EndlessBytes, "overlong").await;
}

/// One published lesson; the hostile parent offers `bad` instead of the current catalog.
async fn catalog_lie(bad: impl FnOnce(&DeploymentKeys, &Origin) -> courseway_content::Signed<Catalog>, reason: &str) {
    let dir = tempfile::tempdir().unwrap();
    let keys = DeploymentKeys::generate().unwrap();
    let origin = origin(dir.path(), &keys).await;
    let l = lesson("hostile-catalog", 22);
    let version = origin.publish(&[(l.manifest.clone(), &l.chunks)]).unwrap();
    let honest = honest(&origin, &[&l]);
    let bad = bad(&keys, &origin);
    let scene = Scene::start(dir, keys, origin, honest, Lie::Catalog(Box::new(bad))).await;
    scene.wait_synced(version).await;
    scene.check("catalog", reason, &[&l]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_expired_catalog_is_refused() {
    catalog_lie(
        |keys, origin| {
            // Properly signed, newer than anything published, but past its expiry: a freeze.
            let now = clock::now();
            let entries = origin.catalog().unwrap().body.entries().to_vec();
            let body = Catalog::new(100, UnixTime(now.0 - 2 * 86_400), UnixTime(now.0 - 86_400), entries).unwrap();
            keys.online_key(UnixTime(now.0 - 3 * 86_400)).sign(body)
        },
        "expired",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_catalog_signed_by_an_unknown_key_is_refused() {
    catalog_lie(
        |_, origin| {
            let stranger = DeploymentKeys::generate().unwrap();
            let now = clock::now();
            let entries = origin.catalog().unwrap().body.entries().to_vec();
            let body = Catalog::new(100, now, now.plus_secs(86_400), entries).unwrap();
            stranger.online_key(now).sign(body)
        },
        "unknown_key",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_forged_catalog_announcement_is_refused() {
    catalog_lie(
        |_, origin| {
            // The real signature over an altered body.
            let mut forged = (*origin.catalog().unwrap()).clone();
            forged.body.version += 50;
            forged
        },
        "bad_signature",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_rollback_to_an_older_catalog_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let keys = DeploymentKeys::generate().unwrap();
    let origin = origin(dir.path(), &keys).await;
    let a = lesson("hostile-old", 23);
    origin.publish(&[(a.manifest.clone(), &a.chunks)]).unwrap();
    let stale = (*origin.catalog().unwrap()).clone();
    let b = lesson("hostile-current", 24);
    let current = origin.publish(&[(b.manifest.clone(), &b.chunks)]).unwrap();
    let honest = honest(&origin, &[&a, &b]);
    // After the current catalog, the old one is announced again.
    let scene = Scene::start(dir, keys, origin, honest, Lie::Rollback(Box::new(stale))).await;
    scene.wait_synced(current).await;
    // The children left the liar: what the origin publishes next reaches them.
    let c = lesson("hostile-next", 25);
    let next = scene.origin.publish(&[(c.manifest.clone(), &c.chunks)]).unwrap();
    scene.wait_synced(next).await;
    scene.check("catalog", "rollback", &[&a, &b, &c]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_manifest_of_another_version_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let keys = DeploymentKeys::generate().unwrap();
    let origin = origin(dir.path(), &keys).await;
    // The same lesson published twice: the catalog lists the second manifest.
    let old = lesson("hostile-mixed", 26);
    origin.publish(&[(old.manifest.clone(), &old.chunks)]).unwrap();
    let new = lesson("hostile-mixed", 27);
    let version = origin.publish(&[(new.manifest.clone(), &new.chunks)]).unwrap();
    assert_ne!(old.manifest.hash(), new.manifest.hash());
    let honest = honest(&origin, &[&new]);
    let scene = Scene::start(dir, keys, origin, honest, Lie::MixedManifest(old.manifest.to_bytes())).await;
    scene.wait_synced(version).await;
    scene.check("manifest", "hash_mismatch", &[&new]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_forged_schedule_announcement_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let keys = DeploymentKeys::generate().unwrap();
    let origin = origin(dir.path(), &keys).await;
    let l = lesson("hostile-scheduled", 28);
    let version = origin.publish(&[(l.manifest.clone(), &l.chunks)]).unwrap();
    let show_at = clock::now().plus_secs(3_600);
    origin
        .publish_schedule(vec![ScheduleEntry {
            lesson: l.manifest.id.clone(),
            show_at,
            target: Target::All,
        }])
        .unwrap();
    // The real schedule's signature over a moved showing.
    let mut forged = (*origin.schedule().unwrap()).clone();
    forged.body.entries[0].show_at = show_at.plus_secs(86_400);
    let honest = honest(&origin, &[&l]);
    let scene = Scene::start(dir, keys, origin, honest, Lie::Schedule(Box::new(forged))).await;
    scene.wait_synced(version).await;
    // The real schedule came from the origin once the liar was left.
    let mut status = scene.direct.status();
    wait_until(
        "the station to take the origin's schedule",
        Duration::from_secs(60),
        || status.borrow_and_update().schedule_version == 1,
    )
    .await;
    assert_eq!(scene.direct.schedule().unwrap().body.entries[0].show_at, show_at);
    scene.check("schedule", "bad_signature", &[&l]).await;
}
