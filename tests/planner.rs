//! The station's planner with real nodes: downloads follow the schedule (the lesson shown here
//! soonest first), a lesson that cannot be ready before its showing is flagged at risk, and a
//! bandwidth window with no share keeps the station off the line.

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use courseway::topology::DeploymentKeys;
use courseway_content::schedule::Place;
use courseway_content::synthetic::{BuiltLesson, SyntheticLesson};
use courseway_content::{AreaName, LessonId, NodeName, RenditionKind, ScheduleEntry, Target, UnixTime};
use courseway_net::RateLimit;
use courseway_node::{clock, Parent, UpstreamConfig};
use courseway_origin::Origin;
use courseway_proto::Role;
use courseway_station::planner::BandwidthPolicy;
use courseway_station::{Station, StationConfig};
use courseway_store::StoreConfig;
use courseway_tests::{loopback, wait_until};

/// About `mb` MB in one rendition of 500 kB segments.
fn lesson(name: &str, seed: u64, mb: u32) -> BuiltLesson {
    let mut spec = SyntheticLesson::standard(LessonId::new(name).unwrap(), seed, mb * 2);
    spec.renditions = vec![(
        "360p".into(),
        RenditionKind::Video {
            width: 640,
            height: 360,
        },
        1_000_000,
    )];
    spec.attachment_size = 0;
    spec.build()
}

fn held(station: &Station, lesson: &BuiltLesson) -> bool {
    lesson.chunks.keys().all(|id| station.store().has(id))
}

async fn origin(dir: &std::path::Path, keys: &DeploymentKeys) -> Origin {
    courseway_tests::start_origin(dir, keys).await
}

async fn station(
    dir: &Path,
    keys: &DeploymentKeys,
    origin: SocketAddr,
    rate: RateLimit,
    bandwidth: BandwidthPolicy,
) -> Station {
    let name = NodeName::new("village-0001").unwrap();
    let mut config = StationConfig::new(
        name.clone(),
        loopback(),
        StoreConfig::new(dir.join("station"), 1 << 30),
        UpstreamConfig::new(vec![Parent {
            name: NodeName::new("origin").unwrap(),
            addr: origin,
        }]),
    );
    config.retry_after = Duration::from_millis(200);
    // One chunk at a time, so the order of lessons is the order of the plan.
    config.concurrency = 1;
    config.rate_cap = Some(rate);
    config.bandwidth = bandwidth;
    config.place = Place {
        town: Some(AreaName::new("shiqiao").unwrap()),
        ..Place::default()
    };
    config.ready_margin = Duration::from_secs(110);
    Station::start(config, keys.enroll(Role::Station, &name).unwrap(), keys.root_public())
        .await
        .unwrap()
}

fn entry(lesson: &BuiltLesson, at: UnixTime, target: Target) -> ScheduleEntry {
    ScheduleEntry {
        lesson: lesson.manifest.id.clone(),
        show_at: at,
        target,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn planner_downloads_in_showing_order_and_flags_what_cannot_be_ready() {
    let dir = tempfile::tempdir().unwrap();
    let keys = DeploymentKeys::generate().unwrap();
    let origin = origin(dir.path(), &keys).await;
    // Catalog order is alphabetical: a, b, c, d.
    let (a, b, c, d) = (
        lesson("a-free", 1, 1),
        lesson("b-later", 2, 1),
        lesson("c-soon", 3, 1),
        lesson("d-huge", 4, 40),
    );
    let now = clock::now();
    let town = Target::Town(AreaName::new("shiqiao").unwrap());
    origin
        .publish_schedule(vec![
            // c is shown here first, then b; a is not shown here (another town); d is shown in
            // two minutes but is 40 MB on a 2 MB/s line, and must be ready 110 s before: it cannot be.
            entry(&c, now.plus_secs(3 * 3600), town.clone()),
            entry(&b, now.plus_secs(5 * 3600), Target::All),
            entry(&a, now.plus_secs(3600), Target::Town(AreaName::new("huadu").unwrap())),
            entry(&d, now.plus_secs(120), town),
        ])
        .unwrap();
    origin
        .publish(&[
            (a.manifest.clone(), &a.chunks),
            (b.manifest.clone(), &b.chunks),
            (c.manifest.clone(), &c.chunks),
        ])
        .unwrap();
    let st = station(
        dir.path(),
        &keys,
        origin.local_addr().unwrap(),
        RateLimit::new(2_000_000, 200_000).unwrap(),
        BandwidthPolicy::default(),
    )
    .await;

    // The order lessons complete in: the schedule's, not the catalog's.
    let mut order = Vec::new();
    wait_until("the three lessons", Duration::from_secs(60), || {
        for l in [&a, &b, &c] {
            if !order.contains(&l.manifest.id) && held(&st, l) {
                order.push(l.manifest.id.clone());
            }
        }
        order.len() == 3
    })
    .await;
    let names: Vec<_> = order.iter().map(|l| l.as_str()).collect();
    assert_eq!(names, ["c-soon", "b-later", "a-free"]);
    let status = st.status().borrow().clone();
    assert_eq!((status.lessons_due, status.lessons_at_risk), (2, 0));

    // The huge lesson arrives in the catalog: planned first (its showing is soonest) and at risk.
    origin.publish(&[(d.manifest.clone(), &d.chunks)]).unwrap();
    wait_until("the plan to include d", Duration::from_secs(30), || {
        st.plan()
            .is_some_and(|p| p.lessons.iter().any(|l| l.lesson == d.manifest.id))
    })
    .await;
    let plan = st.plan().unwrap();
    let first = &plan.lessons[0];
    assert_eq!(first.lesson, d.manifest.id);
    assert!(first.at_risk, "{first:?}");
    assert!(first.estimated_ready.unwrap() > first.deadline.unwrap());
    assert_eq!(st.status().borrow().lessons_at_risk, 1);
    st.shutdown().await;
    origin.shutdown();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn planner_no_share_of_the_line_means_no_download_until_the_window_opens() {
    let dir = tempfile::tempdir().unwrap();
    let keys = DeploymentKeys::generate().unwrap();
    let origin = origin(dir.path(), &keys).await;
    let a = lesson("a", 1, 1);
    origin.publish(&[(a.manifest.clone(), &a.chunks)]).unwrap();
    // No share at any time of day: the station follows the catalog but fetches nothing.
    let closed = BandwidthPolicy {
        default_share_percent: 0,
        ..BandwidthPolicy::default()
    };
    let st = station(
        dir.path(),
        &keys,
        origin.local_addr().unwrap(),
        RateLimit::new(2_000_000, 200_000).unwrap(),
        closed,
    )
    .await;
    wait_until("the plan", Duration::from_secs(30), || {
        st.plan().is_some_and(|p| !p.lessons.is_empty())
    })
    .await;
    // Two pacer ticks after the plan exists, still nothing fetched.
    tokio::time::sleep(courseway_station::PACER_TICK * 2).await;
    assert_eq!(st.plan().unwrap().rate_now, 0);
    assert_eq!(
        st.fetch_stats()
            .bytes_received
            .load(std::sync::atomic::Ordering::Relaxed),
        0
    );
    assert!(!held(&st, &a));
    st.shutdown().await;
    origin.shutdown();
}
