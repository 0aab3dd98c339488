//! Live broadcast at the station's page and in the workflow (issue #6): a live showing put on
//! the schedule through the origin's admin API reaches a station's `/api/schedule` and
//! `/api/status` (and nothing is downloaded or at risk for it); a live channel recorded into a
//! lesson goes through review and publication to a station.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use courseway::admin_client::AdminClient;
use courseway::topology::DeploymentKeys;
use courseway_content::{ChannelId, NodeName};
use courseway_media::live::{CutSegment, LiveIngest, LiveIngestConfig, LiveInput};
use courseway_node::{clock, Parent, UpstreamConfig};
use courseway_origin::admin::workflow::Role;
use courseway_origin::admin::{tokens, AdminApi, AdminConfig};
use courseway_origin::Origin;
use courseway_proto::Role as NodeRole;
use courseway_station::lan::LanConfig;
use courseway_station::{Station, StationConfig};
use courseway_store::StoreConfig;
use courseway_tests::http::Device;
use courseway_tests::{loopback, start_origin, wait_until};
use serde_json::{json, Value};

const RENDITION: &str = "source";

fn channel() -> ChannelId {
    ChannelId::new("city-live").unwrap()
}

struct Setup {
    dir: tempfile::TempDir,
    keys: DeploymentKeys,
    origin: Arc<Origin>,
    admin: AdminApi,
    tokens: Vec<(Role, String)>,
}

impl Setup {
    async fn start() -> Setup {
        let dir = tempfile::tempdir().unwrap();
        let keys = DeploymentKeys::generate().unwrap();
        let origin = Arc::new(start_origin(dir.path(), &keys).await);
        let mut config = AdminConfig::new(loopback(), dir.path().join("admin"), dir.path().join("spool"));
        config.ladder = courseway_tests::lan::ladder();
        let tokens = Role::ALL
            .iter()
            .map(|&role| {
                let token = tokens::create(&config.tokens_file(), role.as_str(), role, None, 1).unwrap();
                (role, token)
            })
            .collect();
        let admin = AdminApi::start(config, origin.clone()).await.unwrap();
        Setup {
            dir,
            keys,
            origin,
            admin,
            tokens,
        }
    }

    fn client(&self, role: Role) -> AdminClient {
        let token = &self.tokens.iter().find(|(r, _)| *r == role).unwrap().1;
        AdminClient::for_addr(self.admin.local_addr(), token)
    }

    async fn station(&self, name: &str) -> Station {
        let name = NodeName::new(name).unwrap();
        let mut sc = StationConfig::new(
            name.clone(),
            loopback(),
            StoreConfig::new(self.dir.path().join(name.as_str()), 1 << 30),
            UpstreamConfig::new(vec![Parent {
                name: NodeName::new("origin").unwrap(),
                addr: self.origin.local_addr().unwrap(),
            }]),
        );
        sc.live_channels = vec![channel()];
        Station::start(
            sc,
            self.keys.enroll(NodeRole::Station, &name).unwrap(),
            self.keys.root_public(),
        )
        .await
        .unwrap()
    }
}

/// The test pattern at the origin in 1 s segments, each published as it is cut.
fn start_feed(origin: &Arc<Origin>, spool: &Path) -> LiveIngest {
    let mut config = LiveIngestConfig::new(
        LiveInput::TestPattern {
            width: 320,
            height: 240,
            fps: 25,
        },
        spool,
    );
    config.segment = Duration::from_secs(1);
    config.test_video_kbps = 300;
    let origin = origin.clone();
    let ingest = config.clone();
    LiveIngest::start(&config, move |cut: CutSegment| {
        courseway::live::publish_cut(&origin, &channel(), &ingest, &cut).expect("the origin publishes a live segment");
    })
    .expect("the live ingest starts (GStreamer with x264enc, voaacenc, mpegtsmux)")
}

async fn lan_json(addr: std::net::SocketAddr, path: &str) -> Value {
    let answer = Device::new([127, 0, 0, 1], "test").get(addr, path).await;
    answer.json()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn live_showing_on_the_schedule_reaches_a_station_page() {
    let s = Setup::start().await;
    let station = s.station("village-0001").await;
    let lan = station
        .serve_lan(LanConfig::new(loopback(), Arc::new(|_| {})))
        .await
        .unwrap();
    // In ten minutes, for an hour, for every station.
    let at = clock::now().0 + 600;
    // Exactly one of lesson and live.
    let both = s
        .client(Role::Publisher)
        .post(
            "/api/schedule",
            &json!({ "lesson": "x", "live": "city-live", "at": at }),
        )
        .await;
    assert_eq!(both.unwrap_err().status(), Some(hyper::StatusCode::BAD_REQUEST));
    // Only a publisher schedules.
    let submitter = s
        .client(Role::Submitter)
        .post("/api/schedule", &json!({ "live": "city-live", "at": at }))
        .await;
    assert_eq!(submitter.unwrap_err().status(), Some(hyper::StatusCode::FORBIDDEN));
    let added = s
        .client(Role::Publisher)
        .post(
            "/api/schedule",
            &json!({ "live": "city-live", "at": at, "title": "春耕技术直播课", "minutes": 60 }),
        )
        .await
        .unwrap();
    assert_eq!(added["live"]["live"], "city-live");
    let version = added["version"].as_u64().unwrap();
    let listed = s.client(Role::Viewer).get("/api/schedule").await.unwrap();
    assert_eq!(listed["live"][0]["title"], "春耕技术直播课", "{listed}");
    assert_eq!(listed["live"][0]["duration_seconds"], 3600);

    let mut status = station.status();
    wait_until("the station to hold the schedule", Duration::from_secs(60), || {
        status.borrow_and_update().schedule_version >= version
    })
    .await;
    let schedule = lan_json(lan.local_addr(), "/api/schedule").await;
    let showings = schedule["showings"].as_array().unwrap();
    let live: Vec<&Value> = showings.iter().filter(|v| v["kind"] == "live").collect();
    assert_eq!(live.len(), 1, "{schedule}");
    let l = live[0];
    assert_eq!(l["channel"], "city-live");
    assert_eq!(l["title"], "春耕技术直播课");
    assert_eq!(l["show_at"], at);
    assert_eq!(l["ends_at"], at + 3600);
    assert_eq!(l["state"], "upcoming", "{l}");
    assert_eq!(l["followed"], true);
    assert!(l["local_time"].as_str().is_some_and(|t| t.len() == 5), "{l}");
    assert_eq!(l["at_risk"], false);
    let st = lan_json(lan.local_addr(), "/api/status").await;
    let ch = &st["live"]["channels"][0];
    assert_eq!(ch["channel"], "city-live", "{st}");
    assert_eq!(ch["on_air"], false, "no feed runs: {st}");
    assert_eq!(ch["newest_sequence"], Value::Null);
    assert_eq!(ch["showing"]["title"], "春耕技术直播课", "{st}");
    assert_eq!(ch["showing"]["show_at"], at);
    // Nothing to download for a live showing, so nothing due or at risk.
    let sync = &st["sync"];
    assert_eq!(
        (&sync["lessons_wanted"], &sync["lessons_due"], &sync["lessons_at_risk"]),
        (&json!(0), &json!(0), &json!(0)),
        "{st}"
    );
    // A lesson showing added after keeps the live showing.
    let schedule = s.origin.schedule().unwrap();
    assert_eq!(schedule.body.live.len(), 1);
    s.origin.publish_schedule(schedule.body.entries.clone()).unwrap();
    assert_eq!(s.origin.schedule().unwrap().body.live.len(), 1);
    drop(lan);
    station.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn live_recording_becomes_a_lesson_through_review_to_a_station() {
    let s = Setup::start().await;
    let station = s.station("village-0001").await;
    let feed = start_feed(&s.origin, &s.dir.path().join("feed"));
    wait_until("the feed to cut a segment", Duration::from_secs(60), || {
        !s.origin.live_window(&channel()).is_empty()
    })
    .await;
    let submitter = s.client(Role::Submitter);
    // Nothing to stop yet.
    let stop = submitter.post("/api/live/city-live/stop", &json!({})).await;
    assert_eq!(stop.unwrap_err().status(), Some(hyper::StatusCode::CONFLICT));
    let started = submitter
        .post(
            "/api/live/city-live/record",
            &json!({ "title": "春耕技术直播课（回看）", "department": "农业局", "category": "elective", "tags": ["直播"] }),
        )
        .await
        .unwrap();
    assert_eq!(started["recording"]["rendition"], RENDITION, "{started}");
    let twice = submitter
        .post(
            "/api/live/city-live/record",
            &json!({ "title": "t", "department": "农业局", "category": "elective" }),
        )
        .await;
    assert_eq!(twice.unwrap_err().status(), Some(hyper::StatusCode::CONFLICT));
    // Record some segments.
    let viewer = s.client(Role::Viewer);
    loop {
        let r = viewer.get("/api/live/recordings").await.unwrap();
        if r["recordings"][0]["recording"]["segments"].as_u64().unwrap_or(0) >= 5 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let stopped = submitter.post("/api/live/city-live/stop", &json!({})).await.unwrap();
    feed.stop().expect("the live ingest ran without error");
    let rec = &stopped["recording"];
    let segments = rec["segments"].as_u64().unwrap();
    let recorded_ms = rec["duration_ms"].as_u64().unwrap();
    assert!(segments >= 5, "{stopped}");
    assert_eq!(
        rec["last_sequence"].as_u64().unwrap() - rec["first_sequence"].as_u64().unwrap() + 1,
        segments
            + rec["gaps"]
                .as_array()
                .unwrap()
                .iter()
                .map(|g| g[1].as_u64().unwrap() - g[0].as_u64().unwrap() + 1)
                .sum::<u64>(),
        "every sequence is recorded or a gap: {stopped}"
    );
    let lesson = stopped["lesson"].as_str().unwrap().to_string();
    let job = stopped["job"].as_str().unwrap().to_string();
    let ended = loop {
        let j = viewer.get(&format!("/api/jobs/{job}")).await.unwrap();
        if ["done", "failed", "cancelled"].contains(&j["state"].as_str().unwrap()) {
            break j;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!(ended["state"], "done", "{ended}");
    assert_eq!(
        ended["recording"]["segments"], segments,
        "the job keeps the recording: {ended}"
    );
    let record = viewer.get(&format!("/api/lessons/{lesson}")).await.unwrap();
    assert_eq!(record["state"], "submitted", "{record}");
    assert_eq!(record["submitter"], "submitter");
    assert!(
        record["comments"][0]["text"].as_str().unwrap().contains("city-live"),
        "{record}"
    );
    // Review like any other lesson.
    let step = |role: Role, step: &'static str| {
        let c = s.client(role);
        let lesson = lesson.clone();
        async move {
            c.post(&format!("/api/lessons/{lesson}/{step}"), &json!({}))
                .await
                .unwrap_or_else(|e| panic!("{role} {step}: {e}"))
        }
    };
    step(Role::Reviewer, "review").await;
    step(Role::Publisher, "approve").await;
    let published = step(Role::Publisher, "publish").await;
    assert_eq!(published["state"], "published", "{published}");

    let mut status = station.status();
    wait_until(
        "the station to hold the recorded lesson",
        Duration::from_secs(120),
        || {
            let st = status.borrow_and_update();
            st.synced && st.lessons_ready == 1
        },
    )
    .await;
    let lan = station
        .serve_lan(LanConfig::new(loopback(), Arc::new(|_| {})))
        .await
        .unwrap();
    let lessons = lan_json(lan.local_addr(), "/api/lessons").await;
    let held = &lessons["lessons"][0];
    assert_eq!(held["id"], lesson.as_str(), "{lessons}");
    assert_eq!(held["title"], "春耕技术直播课（回看）");
    assert_eq!(held["ready"], true, "{lessons}");
    // The lesson's length (the manifest made at ingest) is the recorded segments'.
    let duration_ms = record["duration_ms"].as_u64().unwrap();
    assert_eq!(held["duration_seconds"], duration_ms / 1000);
    let diff = duration_ms as i64 - recorded_ms as i64;
    eprintln!("recorded {segments} segments, {recorded_ms} ms; the lesson lasts {duration_ms} ms ({diff:+} ms)");
    assert!(
        diff.abs() <= 1000,
        "lesson {duration_ms} ms, recorded {recorded_ms} ms: more than one 1 s segment apart"
    );
    drop(lan);
    station.shutdown().await;
}
