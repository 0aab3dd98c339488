//! Viewing reports and heartbeats end to end (issue #5 items 5 and 6), with real nodes on
//! loopback: origin ← relay ← station.
//!
//! - A station whose parent is unreachable for a (simulated) week keeps 500 viewing records in
//!   its outbox; once the parent is back the origin holds exactly those 500, none twice.
//! - The same when the station is stopped and started again, over and over, in the middle of
//!   sending, and when the origin acknowledged a report but the acknowledgement was lost (the
//!   resend is acknowledged and not stored again).
//! - A station cannot report as another station, at the relay or at the origin.
//! - A heartbeat reaches the origin, with the at-risk lesson and the reason.

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::Ordering;
use std::time::Duration;

use courseway::admin_client::AdminClient;
use courseway::topology::DeploymentKeys;
use courseway_content::schedule::Place;
use courseway_content::synthetic::{BuiltLesson, SyntheticLesson};
use courseway_content::{AreaName, LessonId, NodeName, RenditionKind, ScheduleEntry, Target, UnixTime};
use courseway_net::{Client, NetError, RateLimit, TransportConfig};
use courseway_node::{clock, Parent, UpstreamConfig};
use courseway_origin::admin::workflow::Role as AdminRole;
use courseway_origin::admin::{tokens, AdminApi, AdminConfig};
use courseway_origin::reports::Month;
use courseway_origin::{Origin, OriginConfig};
use courseway_proto::{ErrorCode, LessonState, Report, ReportId, Request, Response, Role, Viewing};
use courseway_relay::{PrefetchPolicy, Relay, RelayConfig};
use courseway_station::{ReportsConfig, Station, StationConfig};
use courseway_store::StoreConfig;
use courseway_tests::process::free_udp_port;
use courseway_tests::{loopback, wait_until};

const WEEK: u64 = 7 * 86_400;

fn name(s: &str) -> NodeName {
    NodeName::new(s).unwrap()
}

async fn origin(dir: &Path, keys: &DeploymentKeys) -> Origin {
    Origin::start(
        OriginConfig {
            name: name("origin"),
            listen: loopback(),
            store: StoreConfig::new(dir.join("origin"), 1 << 30),
            transport: TransportConfig::default(),
            catalog_validity: Duration::from_secs(86_400),
        },
        keys.enroll(Role::Origin, &name("origin")).unwrap(),
        keys.online_key(clock::now()),
    )
    .await
    .unwrap()
}

async fn relay(dir: &Path, keys: &DeploymentKeys, origin: SocketAddr, listen: SocketAddr) -> Relay {
    let mut upstream = UpstreamConfig::new(vec![Parent {
        name: name("origin"),
        addr: origin,
    }]);
    upstream.retry_after = Duration::from_millis(200);
    let mut config = RelayConfig::new(
        name("district-01"),
        listen,
        StoreConfig::new(dir.join("relay"), 1 << 30),
        upstream,
    );
    config.prefetch = PrefetchPolicy::None;
    Relay::start(
        config,
        keys.enroll(Role::Relay, &name("district-01")).unwrap(),
        keys.root_public(),
    )
    .await
    .unwrap()
}

fn station_config(dir: &Path, station: &str, parent: SocketAddr, batch: usize) -> StationConfig {
    let mut upstream = UpstreamConfig::new(vec![Parent {
        name: name("district-01"),
        addr: parent,
    }]);
    upstream.retry_after = Duration::from_millis(200);
    upstream.connect_timeout = Duration::from_secs(1);
    let mut config = StationConfig::new(
        name(station),
        loopback(),
        StoreConfig::new(dir.join(station), 1 << 30),
        upstream,
    );
    config.retry_after = Duration::from_millis(200);
    config.place = Place {
        district: Some(AreaName::new("huadu").unwrap()),
        town: Some(AreaName::new("shiqiao").unwrap()),
        ..Place::default()
    };
    config.reports = ReportsConfig {
        batch,
        retry_after: Duration::from_millis(200),
        heartbeat: Duration::from_secs(1),
        heartbeat_min_gap: Duration::from_millis(200),
    };
    config
}

async fn start_station(config: StationConfig, keys: &DeploymentKeys) -> Station {
    let enrollment = keys.enroll(Role::Station, &config.name).unwrap();
    Station::start(config, enrollment, keys.root_public()).await.unwrap()
}

/// Record `i` of a week: playbacks spread over seven days of December 2026.
fn viewing(i: u64, of: u64) -> Viewing {
    let week_start = UnixTime::from_utc_date(2026, 12, 1).unwrap();
    Viewing {
        lesson: LessonId::new(format!("lesson-{}", i % 7)).unwrap(),
        rendition: "360p".into(),
        started_at: week_start.plus_secs(i * WEEK / of),
        seconds_watched: 600 + (i % 5) as u32 * 60,
        device: format!("set-top-box 192.168.1.{}", i % 250),
        attendance: i.is_multiple_of(3).then_some(10 + (i % 20) as u32),
    }
}

/// What identifies a record: its time is unique per record here.
fn key(v: &Viewing) -> (UnixTime, String, String) {
    (v.started_at, v.lesson.as_str().to_owned(), v.device.clone())
}

/// The origin holds exactly `expected`, none twice.
fn assert_exactly_once(origin: &Origin, expected: &[Viewing]) {
    let held = origin.viewings().unwrap();
    assert_eq!(held.len(), expected.len(), "records at the origin");
    let held_keys: BTreeSet<_> = held.iter().map(|(_, v)| key(v)).collect();
    assert_eq!(held_keys.len(), expected.len(), "a record is held twice");
    let want: BTreeSet<_> = expected.iter().map(key).collect();
    assert_eq!(held_keys, want, "the origin holds other records than those recorded");
    for (station, v) in &held {
        assert_eq!(station.as_str(), "village-0001");
        assert!(expected.contains(v), "{v:?} differs from what was recorded");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn report_offline_week_of_500_records_reaches_the_origin_exactly_once_through_a_relay() {
    let dir = tempfile::tempdir().unwrap();
    let keys = DeploymentKeys::generate().unwrap();
    let origin = std::sync::Arc::new(origin(dir.path(), &keys).await);
    // The relay's address is known, but the relay is down for the week.
    let relay_addr = SocketAddr::from(([127, 0, 0, 1], free_udp_port()));
    let st = start_station(station_config(dir.path(), "village-0001", relay_addr, 50), &keys).await;
    let records: Vec<Viewing> = (0..500).map(|i| viewing(i, 500)).collect();
    for v in &records {
        st.record_viewing(v.clone()).await.unwrap();
    }
    let outbox = st.outbox();
    assert_eq!(outbox.depth(), 500);
    // The sender has been trying all along; nothing got through.
    wait_until("a failed send", Duration::from_secs(30), || {
        outbox.stats().send_failures.load(Ordering::Relaxed) > 0
    })
    .await;
    assert!(origin.viewings().unwrap().is_empty());
    assert_eq!(outbox.stats().reports_acknowledged.load(Ordering::Relaxed), 0);

    let relay = relay(dir.path(), &keys, origin.local_addr().unwrap(), relay_addr).await;
    let took = wait_until("the outbox to empty", Duration::from_secs(120), || outbox.depth() == 0).await;
    println!("500 records delivered {took:?} after the relay came back");
    assert_exactly_once(&origin, &records);
    // Reports of at most 50 (the first may be smaller: it was cut while records were coming in).
    let reports = origin.reports().unwrap();
    assert!(reports.iter().all(|r| r.viewings.len() <= 50));
    assert!((10..=11).contains(&reports.len()), "{} reports", reports.len());
    assert_eq!(outbox.stats().records_acknowledged.load(Ordering::Relaxed), 500);
    // The week's records are in December's report, in the station's town (from its heartbeat),
    // through the admin API as `courseway report monthly` asks for it.
    wait_until("the station's heartbeat", Duration::from_secs(30), || {
        !origin.station_health().unwrap().is_empty()
    })
    .await;
    let month = origin.monthly_report(Month::parse("2026-12").unwrap()).unwrap();
    let hours: f64 = records.iter().map(|v| f64::from(v.seconds_watched)).sum::<f64>() / 3600.0;
    assert!((month.total.hours_played - hours).abs() < 1e-6, "{month:?}");
    assert_eq!(month.areas.len(), 1);
    assert_eq!(
        (month.areas[0].district.as_str(), month.areas[0].town.as_str()),
        ("huadu", "shiqiao")
    );
    // Playbacks of one lesson on one day at one station are one showing.
    let showings: BTreeSet<_> = records
        .iter()
        .map(|v| (v.lesson.clone(), v.started_at.0 / 86_400))
        .collect();
    assert_eq!(month.total.showings as usize, showings.len());

    let mut config = AdminConfig::new(loopback(), dir.path().join("admin"), dir.path().join("spool"));
    config.jobs = 1;
    let token = tokens::create(&config.tokens_file(), "viewer", AdminRole::Viewer, None, 1).unwrap();
    let admin = AdminApi::start(config, origin.clone()).await.unwrap();
    let client = AdminClient::for_addr(admin.local_addr(), &token);
    let json = client.get("/api/reports/monthly?month=2026-12").await.unwrap();
    assert_eq!(json["month"], "2026-12");
    assert_eq!(json["areas"][0]["town"], "shiqiao");
    assert!((json["total"]["hours_played"].as_f64().unwrap() - hours).abs() < 1e-6);
    let csv = client
        .get_text("/api/reports/monthly?month=2026-12&format=csv")
        .await
        .unwrap();
    assert!(csv.starts_with("month,district,town,"), "{csv}");
    assert!(csv.lines().any(|l| l.starts_with("2026-12,huadu,shiqiao,1,")), "{csv}");
    let bad = client.get("/api/reports/monthly?month=December").await.unwrap_err();
    assert!(bad.to_string().contains("YYYY-MM"), "{bad}");
    // The same as `courseway report monthly` prints it.
    let server = admin.local_addr().to_string();
    let out = tokio::task::spawn_blocking(move || {
        courseway_tests::process::run_ok(&[
            "report", "monthly", "--month", "2026-12", "--format", "csv", "--server", &server, "--token", &token,
        ])
    })
    .await
    .unwrap();
    assert_eq!(String::from_utf8(out.stdout).unwrap(), csv);
    admin.shutdown();
    drop(relay);
    st.shutdown().await;
    origin.shutdown();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn report_station_restarted_in_the_middle_of_sending_delivers_each_record_once() {
    let dir = tempfile::tempdir().unwrap();
    let keys = DeploymentKeys::generate().unwrap();
    let origin = origin(dir.path(), &keys).await;
    let relay_addr = SocketAddr::from(([127, 0, 0, 1], free_udp_port()));
    // Small reports, so that a stop lands between two of them (or between a write at the origin
    // and the acknowledgement reaching the station).
    let config = || station_config(dir.path(), "village-0001", relay_addr, 5);
    let records: Vec<Viewing> = (0..500).map(|i| viewing(i, 500)).collect();
    {
        let st = start_station(config(), &keys).await;
        for v in &records {
            st.record_viewing(v.clone()).await.unwrap();
        }
        st.shutdown().await;
    }
    let _relay = relay(dir.path(), &keys, origin.local_addr().unwrap(), relay_addr).await;
    let held = || origin.viewings().unwrap().len();
    let mut stops_mid_send = 0;
    let mut restarts = 0;
    loop {
        let st = start_station(config(), &keys).await;
        let before = held();
        if restarts == 6 {
            // The last run sends the rest.
            let outbox = st.outbox();
            wait_until("the outbox to empty", Duration::from_secs(120), || outbox.depth() == 0).await;
            st.shutdown().await;
            break;
        }
        // Stop as soon as some progress is made.
        wait_until("progress", Duration::from_secs(60), || held() > before || held() == 500).await;
        st.shutdown().await;
        restarts += 1;
        let now = held();
        if now > 0 && now < 500 {
            stops_mid_send += 1;
        }
        println!("restart {restarts}: the origin holds {now} records");
        if now == 500 {
            break;
        }
    }
    assert!(stops_mid_send > 0, "no stop landed in the middle of the sending");
    assert_exactly_once(&origin, &records);
    // Whatever was resent (a report the origin had written but whose acknowledgement the stop
    // cut off) was acknowledged without being stored again.
    let counters = origin.report_counters();
    println!(
        "{restarts} restarts, {stops_mid_send} mid-send; reports stored {}, resends deduplicated {}",
        counters.stored.load(Ordering::Relaxed),
        counters.duplicates.load(Ordering::Relaxed)
    );
    // Reports of 5 (the first may be smaller: it was cut while the records were coming in).
    let stored = counters.stored.load(Ordering::Relaxed);
    assert_eq!(stored as usize, origin.reports().unwrap().len());
    assert!((100..=101).contains(&stored), "{stored} reports stored");
    origin.shutdown();
}

/// A client with a node certificate of `role` and `node`, connected to `addr` (a node named
/// `server`).
async fn raw_client(
    keys: &DeploymentKeys,
    role: Role,
    node: &str,
    addr: SocketAddr,
    server: &str,
) -> (Client, courseway_net::PeerConnection) {
    let client = Client::bind(
        keys.enroll(role, &name(node)).unwrap(),
        &TransportConfig::default(),
        loopback(),
    )
    .unwrap();
    let conn = client.connect(addr, &name(server)).await.unwrap();
    (client, conn)
}

fn report_of(station: &str, id: u8, records: std::ops::Range<u64>) -> Report {
    Report {
        id: ReportId([id; 16]),
        station: name(station),
        created_at: clock::now(),
        viewings: records.map(|i| viewing(i, 100)).collect(),
        health: None,
    }
}

async fn send(conn: &courseway_net::PeerConnection, report: &Report) -> Result<ReportId, NetError> {
    match conn.request(&Request::Report(Box::new(report.clone()))).await? {
        (Response::ReportAck(ack), _) => Ok(ack.id),
        (other, _) => panic!("a report was answered with {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn report_acknowledged_but_the_acknowledgement_lost_is_stored_once() {
    let dir = tempfile::tempdir().unwrap();
    let keys = DeploymentKeys::generate().unwrap();
    let origin = origin(dir.path(), &keys).await;
    let origin_addr = origin.local_addr().unwrap();
    let relay_addr = SocketAddr::from(([127, 0, 0, 1], free_udp_port()));
    let _relay = relay(dir.path(), &keys, origin_addr, relay_addr).await;
    let (_c, via_relay) = raw_client(&keys, Role::Station, "village-0001", relay_addr, "district-01").await;
    let report = report_of("village-0001", 1, 0..20);
    // The first send is written and acknowledged; the station never saw that acknowledgement,
    // so it sends the same report again, through the relay and (after a failover) to the origin.
    assert_eq!(send(&via_relay, &report).await.unwrap(), report.id);
    assert_eq!(send(&via_relay, &report).await.unwrap(), report.id);
    let (_c2, direct) = raw_client(&keys, Role::Station, "village-0001", origin_addr, "origin").await;
    assert_eq!(send(&direct, &report).await.unwrap(), report.id);
    assert_eq!(origin.viewings().unwrap().len(), 20);
    assert_eq!(origin.reports().unwrap(), vec![report.clone()]);
    let counters = origin.report_counters();
    assert_eq!(counters.stored.load(Ordering::Relaxed), 1);
    assert_eq!(counters.duplicates.load(Ordering::Relaxed), 2);
    // Another report (another id) is another write.
    let second = report_of("village-0001", 2, 20..30);
    send(&via_relay, &second).await.unwrap();
    assert_eq!(origin.viewings().unwrap().len(), 30);
    origin.shutdown();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn report_a_station_cannot_report_as_another_station() {
    let dir = tempfile::tempdir().unwrap();
    let keys = DeploymentKeys::generate().unwrap();
    let origin = origin(dir.path(), &keys).await;
    let origin_addr = origin.local_addr().unwrap();
    let relay_addr = SocketAddr::from(([127, 0, 0, 1], free_udp_port()));
    let _relay = relay(dir.path(), &keys, origin_addr, relay_addr).await;
    let forged = report_of("village-0001", 9, 0..5);
    for (addr, server) in [(relay_addr, "district-01"), (origin_addr, "origin")] {
        let (_c, conn) = raw_client(&keys, Role::Station, "village-0002", addr, server).await;
        match send(&conn, &forged).await {
            Err(NetError::Refused(reply)) => {
                assert_eq!(reply.code, ErrorCode::Unauthorized, "{reply}");
                assert!(reply.message.contains("only for itself"), "{reply}");
            }
            other => panic!("{server} took a report for another station: {other:?}"),
        }
        // An operator's certificate does not make reports either.
        let (_c, conn) = raw_client(&keys, Role::Operator, "ops", addr, server).await;
        assert!(matches!(
            send(&conn, &forged).await,
            Err(NetError::Refused(reply)) if reply.code == ErrorCode::Unauthorized
        ));
    }
    assert!(origin.viewings().unwrap().is_empty());
    // The station itself may.
    let (_c, conn) = raw_client(&keys, Role::Station, "village-0001", relay_addr, "district-01").await;
    send(&conn, &forged).await.unwrap();
    assert_eq!(origin.viewings().unwrap().len(), 5);
    origin.shutdown();
}

/// About `mb` MB in one rendition.
fn lesson(id: &str, seed: u64, mb: u32) -> BuiltLesson {
    let mut spec = SyntheticLesson::standard(LessonId::new(id).unwrap(), seed, mb * 2);
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn report_heartbeat_reaches_the_origin_with_the_at_risk_reason() {
    let dir = tempfile::tempdir().unwrap();
    let keys = DeploymentKeys::generate().unwrap();
    let origin = std::sync::Arc::new(origin(dir.path(), &keys).await);
    let relay_addr = SocketAddr::from(([127, 0, 0, 1], free_udp_port()));
    let _relay = relay(dir.path(), &keys, origin.local_addr().unwrap(), relay_addr).await;
    // 8 MB shown in two minutes in the station's town, on a 200 kB/s line, ready 110 s before
    // the showing: it cannot be.
    let big = lesson("maize-planting", 1, 8);
    let showing = clock::now().plus_secs(120);
    origin
        .publish_schedule(vec![ScheduleEntry {
            lesson: big.manifest.id.clone(),
            show_at: showing,
            target: Target::Town(AreaName::new("shiqiao").unwrap()),
        }])
        .unwrap();
    origin.publish(&[(big.manifest.clone(), &big.chunks)]).unwrap();
    let mut config = station_config(dir.path(), "village-0001", relay_addr, 50);
    config.rate_cap = Some(RateLimit::new(200_000, 50_000).unwrap());
    config.ready_margin = Duration::from_secs(110);
    let st = start_station(config, &keys).await;

    let mut seen = None;
    wait_until("a heartbeat naming the lesson at risk", Duration::from_secs(60), || {
        seen = origin.station_health().unwrap().into_iter().find(|h| {
            h.health
                .lessons
                .iter()
                .any(|l| l.lesson == big.manifest.id && l.state == LessonState::AtRisk)
        });
        seen.is_some()
    })
    .await;
    let seen = seen.unwrap();
    assert_eq!(seen.station.as_str(), "village-0001");
    let h = &seen.health;
    assert_eq!(h.district.as_ref().map(|d| d.as_str()), Some("huadu"));
    assert_eq!(h.town.as_ref().map(|t| t.as_str()), Some("shiqiao"));
    assert!(h.lessons_at_risk >= 1);
    assert!(h.software.starts_with("courseway "));
    assert!(h.disk_total > 0);
    let l = h.lessons.iter().find(|l| l.lesson == big.manifest.id).unwrap();
    assert_eq!(l.showing, Some(showing));
    assert!(l.remaining_bytes > 0);
    assert!(
        l.reason.contains("MB still to download") && l.reason.contains(&showing.utc()),
        "reason: {}",
        l.reason
    );
    println!("at-risk reason at the origin: {}", l.reason);

    // The fleet status shows it: through the API, and as `courseway status` prints it.
    let fleet = origin.fleet_status(Duration::from_secs(900));
    assert_eq!((fleet.stations_online, fleet.stations_offline), (1, 0));
    assert_eq!(fleet.stations[0].station, "village-0001");
    assert!(fleet.stations[0].at_risk.iter().any(|r| r.lesson == "maize-planting"));
    let showing_row = fleet.showings.iter().find(|s| s.lesson == "maize-planting").unwrap();
    assert_eq!((showing_row.district.as_str(), showing_row.at_risk), ("huadu", 1));
    let config = AdminConfig::new(loopback(), dir.path().join("admin"), dir.path().join("spool"));
    let token = tokens::create(&config.tokens_file(), "ops", AdminRole::Operator, None, 1).unwrap();
    let admin = AdminApi::start(config, origin.clone()).await.unwrap();
    let server = admin.local_addr().to_string();
    let out = tokio::task::spawn_blocking(move || {
        courseway_tests::process::run_ok(&["status", "--server", &server, "--token", &token])
    })
    .await
    .unwrap();
    let table = String::from_utf8(out.stdout).unwrap();
    println!("{table}");
    assert!(table.contains("1 stations online, 0 offline"), "{table}");
    let line = table
        .lines()
        .find(|l| l.contains("village-0001"))
        .expect("the station's line");
    assert!(
        line.contains("huadu") && line.contains("shiqiao") && line.contains("yes"),
        "{line}"
    );
    assert!(
        line.contains("maize-planting: ") && line.contains("MB still to download"),
        "{line}"
    );
    assert!(
        table
            .lines()
            .any(|l| l.contains("maize-planting") && l.contains(&showing.utc()[..16])),
        "{table}"
    );
    admin.shutdown();
    st.shutdown().await;
    origin.shutdown();
}
