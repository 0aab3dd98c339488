//! The station's planner with real nodes: downloads follow the schedule (the lesson shown here
//! soonest first), a lesson that cannot be ready before its showing is flagged at risk, a
//! daytime window's share of an emulated 2 Mbit/s village line holds, and a bandwidth window
//! with no share keeps the station off the line.

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use courseway::topology::DeploymentKeys;
use courseway_content::schedule::Place;
use courseway_content::synthetic::{BuiltLesson, SyntheticLesson};
use courseway_content::{AreaName, LessonId, NodeName, RenditionKind, ScheduleEntry, Target, UnixTime};
use courseway_linkemu::{LinkConfig, ProxyConfig, UdpProxy};
use courseway_net::RateLimit;
use courseway_node::{clock, Parent, UpstreamConfig};
use courseway_origin::Origin;
use courseway_proto::Role;
use courseway_station::planner::{BandwidthPolicy, BandwidthWindow, TimeOfDay};
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

/// Behind an emulated 2 Mbit/s line (50 ms each way) in a daytime window that gives the station
/// half of it: three lessons due at different times arrive in deadline order, the one that
/// cannot be ready in time is flagged at risk well before its showing, and the bytes that cross
/// in a 20 s stretch of the window are within 5 % of the window's cap.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn planner_deadline_order_and_daytime_cap_behind_an_emulated_2_mbit_link() {
    const LINE_BPS: u64 = 2_000_000;
    const SHARE: u8 = 50;
    let dir = tempfile::tempdir().unwrap();
    let keys = DeploymentKeys::generate().unwrap();
    let origin = origin(dir.path(), &keys).await;
    let (tight, soon, later) = (lesson("x-tight", 5, 4), lesson("c-soon", 6, 1), lesson("b-later", 7, 1));
    let now = clock::now();
    let town = Target::Town(AreaName::new("shiqiao").unwrap());
    origin
        .publish_schedule(vec![
            // Shown in 2 minutes, ready 110 s before: 4 MB at 1 Mbit/s takes ~32 s, too long.
            entry(&tight, now.plus_secs(120), town.clone()),
            entry(&soon, now.plus_secs(2 * 3600), town.clone()),
            entry(&later, now.plus_secs(4 * 3600), town),
        ])
        .unwrap();
    origin
        .publish(&[
            (later.manifest.clone(), &later.chunks),
            (soon.manifest.clone(), &soon.chunks),
            (tight.manifest.clone(), &tight.chunks),
        ])
        .unwrap();
    let link = LinkConfig {
        rate_bps: Some(LINE_BPS),
        delay: Duration::from_millis(50),
        queue_bytes: 64 * 1024,
        ..LinkConfig::default()
    };
    let proxy = UdpProxy::start(origin.local_addr().unwrap(), ProxyConfig::symmetric(link))
        .await
        .unwrap();
    // "Daytime": a window around the current local time with half of the line.
    let policy = BandwidthPolicy::default();
    let local = (now.0 as i64 + i64::from(policy.utc_offset_secs)).rem_euclid(86_400) as u32;
    let at = |secs: u32| {
        let s = secs % 86_400;
        TimeOfDay::new(s / 3600, s % 3600 / 60).unwrap()
    };
    let daytime = BandwidthPolicy {
        windows: vec![BandwidthWindow {
            start: at(local + 86_400 - 600),
            end: at(local + 3600),
            share_percent: SHARE,
        }],
        ..policy
    };
    let st = station(
        dir.path(),
        &keys,
        proxy.local_addr(),
        RateLimit::from_bits_per_sec(LINE_BPS, 100).unwrap(),
        daytime,
    )
    .await;

    // Flagged at risk long before its showing.
    wait_until("x-tight flagged at risk", Duration::from_secs(30), || {
        st.status().borrow().lessons_at_risk == 1
    })
    .await;
    assert!(clock::now().0 < now.0 + 120, "flagged only after its showing");

    // The cap, measured over 20 s once the first half megabyte has crossed (the token bucket's
    // initial burst and the connection's start are behind us).
    let received = || {
        st.fetch_stats()
            .bytes_received
            .load(std::sync::atomic::Ordering::Relaxed)
    };
    wait_until("the first half megabyte", Duration::from_secs(60), || {
        received() >= 500_000
    })
    .await;
    let (b0, t0) = (received(), std::time::Instant::now());
    tokio::time::sleep(Duration::from_secs(20)).await;
    let (bytes, secs) = ((received() - b0) as f64, t0.elapsed().as_secs_f64());
    let cap = LINE_BPS as f64 / 8.0 * f64::from(SHARE) / 100.0 * secs;
    eprintln!(
        "daytime window: {bytes} bytes in {secs:.1} s, {:.3} of the cap",
        bytes / cap
    );
    assert!(
        (bytes - cap).abs() <= 0.05 * cap,
        "{bytes} bytes crossed in {secs:.1} s; the window's cap allows {cap:.0} (ratio {:.3})",
        bytes / cap
    );

    // Deadline order, whatever the catalog's order.
    let mut order = Vec::new();
    wait_until("the three lessons", Duration::from_secs(120), || {
        for l in [&tight, &soon, &later] {
            if !order.contains(&l.manifest.id) && held(&st, l) {
                order.push(l.manifest.id.clone());
            }
        }
        order.len() == 3
    })
    .await;
    let names: Vec<_> = order.iter().map(|l| l.as_str()).collect();
    assert_eq!(names, ["x-tight", "c-soon", "b-later"]);
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
