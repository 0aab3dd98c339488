//! What the tree carries besides chunks: signed schedules down to stations, the relay's
//! "scheduled only" prefetch, and stations letting go of withdrawn lessons.

use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, Instant};

use courseway::topology::DeploymentKeys;
use courseway_content::synthetic::{BuiltLesson, SyntheticLesson};
use courseway_content::{LessonId, NodeName, RenditionKind, ScheduleEntry, Target, UnixTime};
use courseway_node::{clock, Parent, UpstreamConfig};
use courseway_origin::Origin;
use courseway_proto::Role;
use courseway_relay::{PrefetchPolicy, Relay, RelayConfig};
use courseway_station::{Station, StationConfig};
use courseway_store::{Store, StoreConfig};
use courseway_tests::{loopback, wait_until};

const HOUR: u64 = 3600;
const DAY: u64 = 86_400;

/// A lesson of `segments` 4-second segments per rendition, one rendition per bit rate (no
/// attachment). Lessons with the same seed share the chunks of the renditions they share.
fn lesson(name: &str, seed: u64, segments: u32, bitrates: &[u32]) -> BuiltLesson {
    let mut spec = SyntheticLesson::standard(LessonId::new(name).unwrap(), seed, segments);
    spec.renditions = bitrates
        .iter()
        .enumerate()
        .map(|(i, rate)| {
            (
                format!("r{i}"),
                RenditionKind::Video {
                    width: 640,
                    height: 360,
                },
                *rate,
            )
        })
        .collect();
    spec.attachment_size = 0;
    spec.build()
}

fn size(lesson: &BuiltLesson) -> u64 {
    lesson.chunks.values().map(|c| c.len() as u64).sum()
}

fn holds_all(store: &Store, lesson: &BuiltLesson) -> bool {
    lesson.chunks.keys().all(|id| store.has(id))
}

fn holds_none(store: &Store, lesson: &BuiltLesson) -> bool {
    lesson.chunks.keys().all(|id| !store.has(id))
}

fn assert_holds(who: &str, store: &Store, lesson: &BuiltLesson) {
    for (id, bytes) in &lesson.chunks {
        let held = store
            .get(id, 0)
            .unwrap()
            .unwrap_or_else(|| panic!("{who} lacks {id} of {}", lesson.manifest.id));
        assert_eq!(&held, bytes, "{who} holds different bytes for {id}");
    }
}

fn showing(lesson: &BuiltLesson, at: UnixTime) -> ScheduleEntry {
    ScheduleEntry {
        lesson: lesson.manifest.id.clone(),
        show_at: at,
        target: Target::All,
    }
}

async fn origin(dir: &std::path::Path, keys: &DeploymentKeys) -> Origin {
    courseway_tests::start_origin(dir, keys).await
}

async fn relay(dir: &Path, keys: &DeploymentKeys, parent: SocketAddr, prefetch: PrefetchPolicy) -> Relay {
    let name = NodeName::new("city-01").unwrap();
    let mut config = RelayConfig::new(
        name.clone(),
        loopback(),
        StoreConfig::new(dir.join("relay"), 1 << 30),
        UpstreamConfig::new(vec![Parent {
            name: NodeName::new("origin").unwrap(),
            addr: parent,
        }]),
    );
    config.prefetch = prefetch;
    config.upstream.retry_after = Duration::from_millis(200);
    config.upstream.connect_timeout = Duration::from_secs(2);
    // A relay that was just dropped may still be releasing its store: try again briefly.
    let start = Instant::now();
    loop {
        match Relay::start(
            config.clone(),
            keys.enroll(Role::Relay, &name).unwrap(),
            keys.root_public(),
        )
        .await
        {
            Ok(relay) => return relay,
            Err(_) if start.elapsed() < Duration::from_secs(10) => {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(e) => panic!("relay did not start: {e}"),
        }
    }
}

async fn station(dir: &Path, keys: &DeploymentKeys, name: &str, parent: (&str, SocketAddr), budget: u64) -> Station {
    let name = NodeName::new(name).unwrap();
    let mut config = StationConfig::new(
        name.clone(),
        loopback(),
        StoreConfig::new(dir.join(name.as_str()), budget),
        UpstreamConfig::new(vec![Parent {
            name: NodeName::new(parent.0).unwrap(),
            addr: parent.1,
        }]),
    );
    config.retry_after = Duration::from_millis(200);
    Station::start(config, keys.enroll(Role::Station, &name).unwrap(), keys.root_public())
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn signed_schedules_reach_stations_through_a_relay_that_keeps_them_when_the_origin_is_gone() {
    let dir = tempfile::tempdir().unwrap();
    let keys = DeploymentKeys::generate().unwrap();
    let origin = origin(dir.path(), &keys).await;
    let l = lesson("sched-1", 1, 2, &[256_000]);
    origin.publish(&[(l.manifest.clone(), &l.chunks)]).unwrap();
    let now = clock::now();
    assert_eq!(
        origin.publish_schedule(vec![showing(&l, now.plus_secs(HOUR))]).unwrap(),
        1
    );

    let relay_under_origin = relay(dir.path(), &keys, origin.local_addr().unwrap(), PrefetchPolicy::None).await;
    let relay_addr = relay_under_origin.local_addr().unwrap();
    let first = station(dir.path(), &keys, "village-1", ("city-01", relay_addr), 1 << 30).await;
    // A station subscribing after the schedule was published gets it replayed.
    let mut status = first.status();
    wait_until("schedule 1 at the station", Duration::from_secs(30), || {
        status.borrow_and_update().schedule_version == 1
    })
    .await;
    assert_eq!(first.schedule().as_ref(), origin.schedule().as_deref());
    assert_eq!(relay_under_origin.stats().schedule_version, 1);

    // A new version replaces the whole set and is pushed down the subscriptions.
    let entries = vec![
        showing(&l, now.plus_secs(2 * HOUR)),
        ScheduleEntry {
            lesson: l.manifest.id.clone(),
            show_at: now.plus_secs(3 * HOUR),
            target: Target::Station(NodeName::new("village-1").unwrap()),
        },
    ];
    assert_eq!(origin.publish_schedule(entries.clone()).unwrap(), 2);
    wait_until("schedule 2 at the station", Duration::from_secs(30), || {
        status.borrow_and_update().schedule_version == 2
    })
    .await;
    let held = first.schedule().unwrap();
    assert_eq!(held.body.entries, entries);
    assert_eq!(Some(&held), origin.schedule().as_deref());
    first.shutdown().await;

    // The origin goes away, and the relay restarts from its store: it still serves the last
    // verified schedule (and catalog) to a station that has never seen either.
    drop(origin);
    drop(relay_under_origin);
    let orphan_relay = relay(dir.path(), &keys, loopback(), PrefetchPolicy::None).await;
    assert_eq!(orphan_relay.stats().schedule_version, 2);
    let late = station(
        dir.path(),
        &keys,
        "village-2",
        ("city-01", orphan_relay.local_addr().unwrap()),
        1 << 30,
    )
    .await;
    let mut status = late.status();
    wait_until(
        "the late station to get the schedule and the lesson",
        Duration::from_secs(30),
        || {
            let s = status.borrow_and_update();
            s.schedule_version == 2 && s.synced
        },
    )
    .await;
    assert_eq!(late.schedule().unwrap(), held);
    assert_holds("the late station", late.store(), &l);
    late.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_scheduled_only_relay_prefetches_exactly_the_lessons_shown_inside_its_horizon() {
    let dir = tempfile::tempdir().unwrap();
    let keys = DeploymentKeys::generate().unwrap();
    let origin = origin(dir.path(), &keys).await;
    let lessons: Vec<BuiltLesson> = (1..=4)
        .map(|n| lesson(&format!("lesson-{n}"), n, 3, &[400_000]))
        .collect();
    let [l1, l2, l3, l4] = &lessons[..] else { unreachable!() };
    let relay = relay(
        dir.path(),
        &keys,
        origin.local_addr().unwrap(),
        PrefetchPolicy::ScheduledOnly,
    )
    .await;
    let store = relay.store();
    origin
        .publish(&[
            (l1.manifest.clone(), &l1.chunks),
            (l2.manifest.clone(), &l2.chunks),
            (l3.manifest.clone(), &l3.chunks),
        ])
        .unwrap();
    wait_until("the catalog at the relay", Duration::from_secs(30), || {
        relay.stats().catalog_version == 1
    })
    .await;

    // l2 shows in an hour; l1 showed an hour ago; l3 shows beyond the 7-day horizon.
    let now = clock::now();
    origin
        .publish_schedule(vec![
            showing(l1, UnixTime(now.0 - HOUR)),
            showing(l2, now.plus_secs(HOUR)),
            showing(l3, now.plus_secs(30 * DAY)),
        ])
        .unwrap();
    wait_until("l2 at the relay", Duration::from_secs(30), || holds_all(store, l2)).await;
    assert_eq!(origin.stats().chunk_bytes_sent, size(l2));
    assert_eq!(relay.stats().bytes_fetched, size(l2));
    assert!(holds_none(store, l1) && holds_none(store, l3));

    // The next schedule adds l3 tomorrow and l4, which is not published yet.
    origin
        .publish_schedule(vec![
            showing(l2, now.plus_secs(HOUR)),
            showing(l3, now.plus_secs(DAY)),
            showing(l4, now.plus_secs(2 * DAY)),
        ])
        .unwrap();
    wait_until("l3 at the relay", Duration::from_secs(30), || holds_all(store, l3)).await;
    assert_eq!(origin.stats().chunk_bytes_sent, size(l2) + size(l3));
    assert!(holds_none(store, l1) && holds_none(store, l4));

    // The catalog listing l4 arrives after the schedule that names it.
    origin.publish(&[(l4.manifest.clone(), &l4.chunks)]).unwrap();
    wait_until("l4 at the relay", Duration::from_secs(30), || holds_all(store, l4)).await;
    assert_eq!(origin.stats().chunk_bytes_sent, size(l2) + size(l3) + size(l4));
    assert_eq!(relay.stats().bytes_fetched, size(l2) + size(l3) + size(l4));
    assert!(holds_none(store, l1), "a lesson whose showing is over was prefetched");
    assert_eq!(origin.stats().duplicate_chunk_sends, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_withdrawn_lesson_is_unpinned_at_the_station_and_its_chunks_make_room() {
    let dir = tempfile::tempdir().unwrap();
    let keys = DeploymentKeys::generate().unwrap();
    let origin = origin(dir.path(), &keys).await;
    // b's three chunks are a's first rendition (same seed); a has three more of its own.
    let a = lesson("lesson-a", 5, 3, &[1_000_000, 1_000_000]);
    let b = lesson("lesson-b", 5, 3, &[1_000_000]);
    let c = lesson("lesson-c", 9, 3, &[1_000_000]);
    let shared: Vec<_> = b.chunks.keys().copied().collect();
    let a_only: Vec<_> = a
        .chunks
        .keys()
        .filter(|id| !b.chunks.contains_key(id))
        .copied()
        .collect();
    assert_eq!((shared.len(), a_only.len()), (3, 3));
    assert!(shared.iter().all(|id| a.chunks.contains_key(id)));
    // Room for a and b together, or b and c, but not all three.
    let budget = size(&b) + size(&c) + 500_000;
    assert!(size(&a) + size(&c) > budget);

    let station = station(
        dir.path(),
        &keys,
        "village-w",
        ("origin", origin.local_addr().unwrap()),
        budget,
    )
    .await;
    let mut status = station.status();
    let synced = |status: &mut tokio::sync::watch::Receiver<courseway_station::SyncStatus>, version: u64| {
        let s = status.borrow_and_update();
        s.catalog_version == version && s.synced
    };
    // All three are shown here tomorrow, so the station pins them (retention).
    let tomorrow = clock::now().plus_secs(DAY);
    origin
        .publish_schedule(vec![
            showing(&a, tomorrow),
            showing(&b, tomorrow),
            showing(&c, tomorrow),
        ])
        .unwrap();
    let v1 = origin
        .publish(&[(a.manifest.clone(), &a.chunks), (b.manifest.clone(), &b.chunks)])
        .unwrap();
    wait_until("a and b at the station", Duration::from_secs(60), || {
        synced(&mut status, v1)
    })
    .await;
    let store = station.store();
    assert!(a.chunks.keys().all(|id| store.is_pinned(id)));

    let v2 = origin.withdraw(std::slice::from_ref(&a.manifest.id)).unwrap();
    wait_until("the withdrawal at the station", Duration::from_secs(60), || {
        synced(&mut status, v2)
    })
    .await;
    assert!(
        a_only.iter().all(|id| !store.is_pinned(id)),
        "a's own chunks are still pinned"
    );
    // No held lesson uses them: they are removed, their room is free.
    assert!(a_only.iter().all(|id| !store.has(id)), "a's own chunks are still held");
    assert!(
        shared.iter().all(|id| store.is_pinned(id)),
        "b's chunks lost their pins"
    );
    assert_eq!(
        store.pin_holders(courseway_store::PinReason::Scheduled).unwrap(),
        ["lesson-b"]
    );

    // c takes the room a's chunks took; b's stay.
    let v3 = origin.publish(&[(c.manifest.clone(), &c.chunks)]).unwrap();
    wait_until("b and c at the station", Duration::from_secs(60), || {
        synced(&mut status, v3)
    })
    .await;
    assert_holds("the station", store, &b);
    assert_holds("the station", store, &c);
    assert!(store.stats().used_bytes <= budget);
    assert!(matches!(
        origin.withdraw(std::slice::from_ref(&a.manifest.id)),
        Err(courseway_origin::OriginError::NotPublished { .. })
    ));
    station.shutdown().await;
}
