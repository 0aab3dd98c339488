//! The station's retention policy on a real origin and station over loopback: the store budget
//! (the station's disk quota) is never exceeded, a pinned lesson (shown here soon) is never
//! evicted, unscheduled lessons only take free room, and a lesson whose showing is over is let go.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use courseway::topology::DeploymentKeys;
use courseway_content::synthetic::{BuiltLesson, SyntheticLesson};
use courseway_content::MAX_CHUNK_SIZE;
use courseway_content::{LessonId, NodeName, RenditionKind, ScheduleEntry, Target, UnixTime};
use courseway_node::{clock, Parent, UpstreamConfig};
use courseway_origin::Origin;
use courseway_proto::Role;
use courseway_station::{Station, StationConfig, SyncStatus};
use courseway_store::{Store, StoreConfig};
use courseway_tests::{loopback, wait_until};

const DAY: u64 = 86_400;

/// `segments` 4-second segments of one 2 Mbit/s rendition (about 1 MB each).
fn lesson(name: &str, seed: u64, segments: u32) -> BuiltLesson {
    let mut spec = SyntheticLesson::standard(LessonId::new(name).unwrap(), seed, segments);
    spec.renditions = vec![(
        "360p".into(),
        RenditionKind::Video {
            width: 640,
            height: 360,
        },
        2_000_000,
    )];
    spec.attachment_size = 0;
    spec.build()
}

fn size(l: &BuiltLesson) -> u64 {
    l.chunks.values().map(|c| c.len() as u64).sum()
}

fn holds_all(store: &Store, l: &BuiltLesson) -> bool {
    l.chunks.keys().all(|id| store.has(id))
}

fn holds_none(store: &Store, l: &BuiltLesson) -> bool {
    l.chunks.keys().all(|id| !store.has(id))
}

fn showing(l: &BuiltLesson, at: UnixTime) -> ScheduleEntry {
    ScheduleEntry {
        lesson: l.manifest.id.clone(),
        show_at: at,
        target: Target::All,
    }
}

async fn origin(dir: &std::path::Path, keys: &DeploymentKeys) -> Origin {
    courseway_tests::start_origin(dir, keys).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retention_never_evicts_a_pinned_lesson_nor_exceeds_the_disk_quota() {
    let dir = tempfile::tempdir().unwrap();
    let keys = DeploymentKeys::generate().unwrap();
    let origin = origin(dir.path(), &keys).await;
    let now = clock::now();
    // Two lessons shown here tomorrow (pinned), one shown last week (expired), three with no
    // showing here (kept while they fit).
    let p1 = lesson("pinned-1", 1, 3);
    let p2 = lesson("pinned-2", 2, 3);
    let old = lesson("shown-last-week", 3, 3);
    let k1 = lesson("library-1", 4, 3);
    let k2 = lesson("library-2", 5, 3);
    let k3 = lesson("library-3", 6, 3);
    // Room for the pinned pair and one library lesson, not two.
    let budget = size(&p1) + size(&p2) + size(&k1) + size(&k2) / 2;
    origin
        .publish_schedule(vec![
            showing(&p1, now.plus_secs(DAY)),
            showing(&p2, now.plus_secs(DAY)),
            showing(&old, UnixTime(now.0 - 7 * DAY)),
        ])
        .unwrap();

    let name = NodeName::new("village-r").unwrap();
    let mut config = StationConfig::new(
        name.clone(),
        loopback(),
        StoreConfig::new(dir.path().join("station"), budget),
        UpstreamConfig::new(vec![Parent {
            name: NodeName::new("origin").unwrap(),
            addr: origin.local_addr().unwrap(),
        }]),
    );
    config.retry_after = Duration::from_millis(200);
    let station = Station::start(config, keys.enroll(Role::Station, &name).unwrap(), keys.root_public())
        .await
        .unwrap();

    // A watcher samples the store the whole time: the most it ever used, and whether pinned-2
    // (pinned from start to end), once complete, ever lost a chunk.
    let store = station.store().clone();
    let (stop, max_used, pinned_lost) = (
        Arc::new(AtomicBool::new(false)),
        Arc::new(AtomicU64::new(0)),
        Arc::new(AtomicBool::new(false)),
    );
    let pinned_ids: Vec<_> = p2.chunks.keys().copied().collect();
    let watcher = {
        let (stop, max_used, pinned_lost) = (stop.clone(), max_used.clone(), pinned_lost.clone());
        std::thread::spawn(move || {
            let mut complete = false;
            while !stop.load(Ordering::Relaxed) {
                max_used.fetch_max(store.stats().used_bytes, Ordering::Relaxed);
                let all = pinned_ids.iter().all(|id| store.has(id));
                if complete && !all {
                    pinned_lost.store(true, Ordering::Relaxed);
                }
                complete |= all;
                std::thread::sleep(Duration::from_millis(2));
            }
        })
    };

    let mut status = station.status();
    let synced = |status: &mut tokio::sync::watch::Receiver<SyncStatus>, version: u64| {
        let s = status.borrow_and_update();
        s.catalog_version == version && s.synced
    };
    let v1 = origin
        .publish(&[
            (k1.manifest.clone(), &k1.chunks),
            (p1.manifest.clone(), &p1.chunks),
            (old.manifest.clone(), &old.chunks),
            (k2.manifest.clone(), &k2.chunks),
            (p2.manifest.clone(), &p2.chunks),
            (k3.manifest.clone(), &k3.chunks),
        ])
        .unwrap();
    wait_until("the first sync", Duration::from_secs(60), || synced(&mut status, v1)).await;
    let s = station.store();
    assert!(holds_all(s, &p1) && holds_all(s, &p2), "the pinned lessons are held");
    assert!(holds_none(s, &old), "a lesson shown last week was downloaded");
    let library = [&k1, &k2, &k3].iter().filter(|l| holds_all(s, l)).count();
    assert_eq!(library, 1, "exactly one library lesson fits beside the pinned ones");
    let st = station.status().borrow().clone();
    assert_eq!(
        (st.lessons_pinned, st.lessons_expired, st.lessons_without_room),
        (2, 1, 2)
    );
    assert!(p1.chunks.keys().chain(p2.chunks.keys()).all(|id| s.is_pinned(id)));

    // library-3 is now shown here tomorrow: it is pinned and takes the library lesson's room,
    // never the other pinned lessons'.
    origin
        .publish_schedule(vec![
            showing(&p1, now.plus_secs(DAY)),
            showing(&p2, now.plus_secs(DAY)),
            showing(&k3, now.plus_secs(DAY)),
        ])
        .unwrap();
    wait_until("library-3 pinned and held", Duration::from_secs(60), || {
        holds_all(s, &k3) && k3.chunks.keys().all(|id| s.is_pinned(id))
    })
    .await;
    assert!(holds_all(s, &p1) && holds_all(s, &p2));

    // pinned-1's showing moves to last week: it is let go, and its room goes to a library lesson.
    origin
        .publish_schedule(vec![
            showing(&p1, UnixTime(now.0 - 7 * DAY)),
            showing(&p2, now.plus_secs(DAY)),
            showing(&k3, now.plus_secs(DAY)),
        ])
        .unwrap();
    wait_until("pinned-1 let go", Duration::from_secs(60), || holds_none(s, &p1)).await;
    wait_until("a library lesson in its room", Duration::from_secs(60), || {
        holds_all(s, &k1) || holds_all(s, &k2)
    })
    .await;
    assert!(holds_all(s, &p2) && holds_all(s, &k3));

    stop.store(true, Ordering::Relaxed);
    watcher.join().unwrap();
    let max = max_used.load(Ordering::Relaxed);
    assert!(
        max <= budget + MAX_CHUNK_SIZE as u64,
        "the store used {max} bytes, over its budget {budget} by more than one chunk"
    );
    assert!(!pinned_lost.load(Ordering::Relaxed), "a pinned lesson lost a chunk");
    station.shutdown().await;
}
