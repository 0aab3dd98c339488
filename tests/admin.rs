//! The origin's admin API over real HTTP on loopback: resumable streamed uploads, ingest jobs
//! with a real GStreamer transcode, the review workflow with every role's refusals, publication
//! reaching a station byte for byte, withdrawal, schedules, preview and the audit log; and the
//! `courseway` CLI against a running origin process.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use courseway::admin_client::{AdminClient, ChannelBody, ClientError};
use courseway::topology::DeploymentKeys;
use courseway_content::chunking::{attachment_ranges, refs_for, segment_ranges};
use courseway_content::{LessonId, NodeName};
use courseway_media::testsrc::{make_test_source, TestSource};
use courseway_node::{clock, Parent, UpstreamConfig};
use courseway_origin::admin::workflow::Role;
use courseway_origin::admin::{tokens, AdminApi, AdminConfig};
use courseway_origin::{Origin, OriginConfig};
use courseway_proto::Role as NodeRole;
use courseway_station::{Station, StationConfig};
use courseway_store::StoreConfig;
use hyper::body::Bytes;
use hyper::{Method, StatusCode};
use serde_json::{json, Value};

struct Setup {
    dir: tempfile::TempDir,
    keys: DeploymentKeys,
    origin: Arc<Origin>,
    admin: AdminApi,
    /// A token per role.
    tokens: Vec<(Role, String)>,
    spool: PathBuf,
}

impl Setup {
    async fn start(max_upload: u64) -> Setup {
        Self::start_with(max_upload, |_, _| {}).await
    }

    /// Starts with the config changed by `adjust` (which also gets the deployment's keys and
    /// the test directory).
    async fn start_with(max_upload: u64, adjust: impl FnOnce(&mut AdminConfig, (&DeploymentKeys, &Path))) -> Setup {
        let dir = tempfile::tempdir().unwrap();
        let keys = DeploymentKeys::generate().unwrap();
        let name = NodeName::new("origin").unwrap();
        let origin = Arc::new(
            Origin::start(
                OriginConfig {
                    name: name.clone(),
                    listen: "127.0.0.1:0".parse().unwrap(),
                    store: StoreConfig::new(dir.path().join("origin"), 1 << 30),
                    transport: Default::default(),
                    catalog_validity: Duration::from_secs(7 * 86_400),
                },
                keys.enroll(NodeRole::Origin, &name).unwrap(),
                keys.online_key(clock::now()),
            )
            .await
            .unwrap(),
        );
        let spool = dir.path().join("spool");
        let mut config = AdminConfig::new("127.0.0.1:0".parse().unwrap(), dir.path().join("admin"), spool.clone());
        config.max_upload = max_upload;
        config.max_attachment = 8 << 20;
        adjust(&mut config, (&keys, dir.path()));
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
            spool,
        }
    }

    fn client(&self, role: Role) -> AdminClient {
        let token = &self.tokens.iter().find(|(r, _)| *r == role).unwrap().1;
        AdminClient::for_addr(self.admin.local_addr(), token)
    }

    fn anonymous(&self) -> AdminClient {
        AdminClient::for_addr(self.admin.local_addr(), "")
    }

    fn token(&self, role: Role) -> &str {
        &self.tokens.iter().find(|(r, _)| *r == role).unwrap().1
    }
}

fn status(result: Result<Value, ClientError>) -> StatusCode {
    match result {
        Ok(_) => StatusCode::OK,
        Err(e) => e.status().unwrap_or_else(|| panic!("not an HTTP answer: {e}")),
    }
}

fn refused(result: Result<Value, ClientError>, want: StatusCode) -> Value {
    match result {
        Err(ClientError::Server { status, body, .. }) => {
            assert_eq!(status, want, "{body}");
            assert!(
                body["error"].as_str().is_some_and(|e| !e.is_empty()),
                "a reason: {body}"
            );
            body
        }
        other => panic!("expected {want}, got {other:?}"),
    }
}

/// The admin API's ingest metrics as the origin's `/metrics` shows them.
fn ingest_metrics(s: &Setup) -> String {
    let mut registry = courseway_node::metrics::registry("origin");
    registry.register_collector(s.admin.metrics());
    courseway_node::metrics::MetricsHandler::new(registry).render()
}

async fn make_source(path: &Path, seconds: u32) {
    let path = path.to_path_buf();
    tokio::task::spawn_blocking(move || make_test_source(&path, &TestSource::video_audio(320, 240, seconds)).unwrap())
        .await
        .unwrap();
}

/// Every action that is not `allowed` for a role gets 403 from it, and 401 without a token;
/// the lesson's state is unchanged afterwards.
async fn only(s: &Setup, allowed: &[Role], method: Method, path: &str, body: Value) {
    let b = Some(&body);
    refused(
        s.anonymous().json(method.clone(), path, b).await,
        StatusCode::UNAUTHORIZED,
    );
    let bogus = AdminClient::for_addr(s.admin.local_addr(), "cw_not-a-token");
    refused(bogus.json(method.clone(), path, b).await, StatusCode::UNAUTHORIZED);
    for role in Role::ALL {
        if !allowed.contains(&role) {
            let body = refused(
                s.client(role).json(method.clone(), path, b).await,
                StatusCode::FORBIDDEN,
            );
            assert!(body["error"].as_str().unwrap().contains(role.as_str()), "{body}");
        }
    }
}

fn refused_client(result: Result<u64, ClientError>, want: StatusCode) -> Value {
    refused(result.map(Value::from), want)
}

/// Sends the rest of `path` from the offset the server holds, once the cut `PUT` has ended
/// at the server (until then it answers 409); returns that offset and the final one.
async fn resume(c: &AdminClient, id: &str, path: &Path) -> (u64, u64) {
    loop {
        let held = c.upload_offset(id).await.unwrap();
        match c.send_file_from(id, path, held, |_| {}).await {
            Ok(done) => return (held, done),
            Err(e) if e.status() == Some(StatusCode::CONFLICT) => tokio::time::sleep(Duration::from_millis(20)).await,
            Err(e) => panic!("resuming at {held}: {e}"),
        }
    }
}

async fn wait_job(s: &Setup, job: &str) -> Value {
    let viewer = s.client(Role::Viewer);
    let mut seen = Vec::new();
    loop {
        let j = viewer.get(&format!("/api/jobs/{job}")).await.unwrap();
        let state = j["state"].as_str().unwrap().to_string();
        if !seen.contains(&state) {
            seen.push(state.clone());
        }
        if ["done", "failed", "cancelled"].contains(&state.as_str()) {
            return json!({ "job": j, "seen": seen });
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn step(s: &Setup, role: Role, lesson: &str, step: &str, body: Value) -> Value {
    s.client(role)
        .post(&format!("/api/lessons/{lesson}/{step}"), &body)
        .await
        .unwrap_or_else(|e| panic!("{role} {step}: {e}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn admin_workflow_from_cut_upload_to_station_and_withdrawal() {
    let s = Setup::start(1 << 30).await;
    let source = s.dir.path().join("lesson.mp4");
    make_source(&source, 3).await;
    let bytes = std::fs::read(&source).unwrap();
    let size = bytes.len() as u64;
    let submitter = s.client(Role::Submitter);

    // Upload, cut in the middle; the rest is sent from the offset the server reports.
    let id = submitter.create_upload("media", "lesson.mp4", size).await.unwrap();
    let half = bytes.len() / 2;
    let (tx, body) = ChannelBody::new(4);
    let put = {
        let c = submitter.clone();
        let id = id.clone();
        tokio::spawn(async move { c.put_upload(&id, 0, body).await })
    };
    tx.send(Ok(Bytes::copy_from_slice(&bytes[..half]))).await.unwrap();
    tx.send(Err(std::io::Error::other("line cut"))).await.unwrap();
    assert!(put.await.unwrap().is_err(), "a cut body is not a complete upload");
    let (resumed_at, done) = resume(&submitter, &id, &source).await;
    assert!(resumed_at <= half as u64, "resumed at {resumed_at} of {size}");
    assert_eq!(done, size);
    assert_eq!(std::fs::read(s.spool.join("uploads").join(&id)).unwrap(), bytes);
    // A PUT at another offset than the server holds is refused with the offset to use.
    let wrong = refused_client(
        submitter
            .put_upload(&id, 0, http_body_util::Full::new(Bytes::from_static(b"x")))
            .await,
        StatusCode::CONFLICT,
    );
    assert_eq!(wrong["offset"], size);

    // Metadata is checked before anything is made.
    let bad = refused(
        submitter
            .post(
                "/api/lessons",
                &json!({ "upload": id, "title": " ", "department": "农业局", "category": "optional" }),
            )
            .await,
        StatusCode::UNPROCESSABLE_ENTITY,
    );
    assert_eq!(bad["problems"].as_array().unwrap().len(), 2, "{bad}");
    only(
        &s,
        &[Role::Submitter],
        Method::POST,
        "/api/lessons",
        json!({ "upload": id, "title": "t", "department": "d", "category": "required" }),
    )
    .await;
    // An attachment (any file) goes with the lesson, cut into chunks by FastCDC.
    let handout = s.dir.path().join("讲义.pdf");
    let handout_bytes = courseway_content::synthetic::pseudo_random(11, &[], 700_000);
    std::fs::write(&handout, &handout_bytes).unwrap();
    let attachment = submitter.upload_file(&handout, "attachment", |_| {}).await.unwrap();
    let created = submitter
        .post(
            "/api/lessons",
            &json!({
                "upload": id, "title": "冬小麦病虫害防治", "department": "农业局", "category": "必修",
                "tags": ["农业", "小麦"], "language": "zh-CN", "description": "第一讲",
                "attachments": [attachment],
            }),
        )
        .await
        .unwrap();
    let lesson = created["lesson"].as_str().unwrap().to_string();
    let job = created["job"].as_str().unwrap().to_string();
    let ended = wait_job(&s, &job).await;
    assert_eq!(ended["job"]["state"], "done", "{ended}");
    assert_eq!(ended["job"]["percent"], 100.0);
    let l = s
        .client(Role::Viewer)
        .get(&format!("/api/lessons/{lesson}"))
        .await
        .unwrap();
    assert_eq!(l["state"], "draft");
    assert_eq!(l["metadata"]["category"], "required");
    assert!(!l["renditions"].as_array().unwrap().is_empty());
    // The upload went into the lesson and cannot be used again.
    refused(
        submitter
            .post(
                "/api/lessons",
                &json!({ "upload": id, "title": "t", "department": "d", "category": "required" }),
            )
            .await,
        StatusCode::CONFLICT,
    );

    // Preview: a reviewer follows the playlists with the token in the URL only.
    let reviewer_token = s.token(Role::Reviewer).to_string();
    let anon = s.anonymous();
    let get_raw = |path: String| {
        let anon = anon.clone();
        async move {
            anon.send(Method::GET, &path, http_body_util::Empty::<Bytes>::new())
                .await
                .unwrap()
        }
    };
    let (st, _, master) = get_raw(format!("/preview/{lesson}/master.m3u8?token={reviewer_token}")).await;
    assert_eq!(st, StatusCode::OK);
    let master = String::from_utf8(master.to_vec()).unwrap();
    let first = master
        .lines()
        .find(|l| l.ends_with(&format!("index.m3u8?token={reviewer_token}")))
        .unwrap();
    let rendition = first.split('/').next().unwrap().to_string();
    let (st, _, media) = get_raw(format!("/preview/{lesson}/{first}")).await;
    assert_eq!(st, StatusCode::OK);
    assert!(String::from_utf8_lossy(&media).contains("#EXT-X-ENDLIST"));
    let (st, _, segment) = get_raw(format!("/preview/{lesson}/{rendition}/0.ts?token={reviewer_token}")).await;
    assert_eq!(st, StatusCode::OK);
    assert_eq!(segment[0], 0x47, "an MPEG-TS segment");
    let (st, _, _) = get_raw(format!("/preview/{lesson}/master.m3u8")).await;
    assert_eq!(st, StatusCode::UNAUTHORIZED);
    let viewer_preview = format!("/preview/{lesson}/master.m3u8?token={}", s.token(Role::Viewer));
    assert_eq!(get_raw(viewer_preview).await.0, StatusCode::FORBIDDEN);

    // Submit; a submitter cannot approve or publish, and nothing skips a step (409 with the state).
    only(
        &s,
        &[Role::Submitter],
        Method::POST,
        &format!("/api/lessons/{lesson}/submit"),
        json!({}),
    )
    .await;
    step(&s, Role::Submitter, &lesson, "submit", json!({})).await;
    only(
        &s,
        &[Role::Reviewer],
        Method::POST,
        &format!("/api/lessons/{lesson}/review"),
        json!({}),
    )
    .await;
    only(
        &s,
        &[Role::Publisher],
        Method::POST,
        &format!("/api/lessons/{lesson}/approve"),
        json!({}),
    )
    .await;
    only(
        &s,
        &[Role::Publisher],
        Method::POST,
        &format!("/api/lessons/{lesson}/publish"),
        json!({}),
    )
    .await;
    let skip = refused(
        s.client(Role::Publisher)
            .post(&format!("/api/lessons/{lesson}/approve"), &json!({}))
            .await,
        StatusCode::CONFLICT,
    );
    assert_eq!(skip["state"], "submitted", "{skip}");
    // A reviewer rejects with a comment (a rejection without one is refused).
    refused(
        s.client(Role::Reviewer)
            .post(&format!("/api/lessons/{lesson}/reject"), &json!({}))
            .await,
        StatusCode::BAD_REQUEST,
    );
    only(
        &s,
        &[Role::Reviewer],
        Method::POST,
        &format!("/api/lessons/{lesson}/reject"),
        json!({ "comment": "x" }),
    )
    .await;
    let rejected = step(
        &s,
        Role::Reviewer,
        &lesson,
        "reject",
        json!({ "comment": "标题请写明第几讲" }),
    )
    .await;
    assert_eq!(rejected["state"], "rejected");
    assert_eq!(rejected["comments"][0]["text"], "标题请写明第几讲");
    assert_eq!(rejected["comments"][0]["by"], "reviewer");
    // The submitter fixes the title and submits again.
    let edited = submitter
        .json(
            Method::PUT,
            &format!("/api/lessons/{lesson}/metadata"),
            Some(&json!({ "title": "冬小麦病虫害防治（第一讲）", "department": "农业局", "category": "required", "tags": ["农业"] })),
        )
        .await
        .unwrap();
    assert_eq!(edited["metadata"]["title"], "冬小麦病虫害防治（第一讲）");
    step(&s, Role::Submitter, &lesson, "submit", json!({})).await;
    step(&s, Role::Reviewer, &lesson, "review", json!({ "comment": "可以" })).await;
    // The publisher rejects at the platform step too, then the lesson goes round again.
    only(
        &s,
        &[Role::Publisher],
        Method::POST,
        &format!("/api/lessons/{lesson}/reject"),
        json!({ "comment": "x" }),
    )
    .await;
    step(
        &s,
        Role::Publisher,
        &lesson,
        "reject",
        json!({ "comment": "请补充简介" }),
    )
    .await;
    step(&s, Role::Submitter, &lesson, "submit", json!({})).await;
    step(&s, Role::Reviewer, &lesson, "review", json!({})).await;
    step(&s, Role::Publisher, &lesson, "approve", json!({})).await;
    assert!(
        s.origin.catalog().is_none(),
        "nothing is in the catalog before the last approval"
    );

    // A station follows the origin.
    let station_name = NodeName::new("village-0001").unwrap();
    let mut sc = StationConfig::new(
        station_name.clone(),
        "127.0.0.1:0".parse().unwrap(),
        StoreConfig::new(s.dir.path().join("station"), 1 << 30),
        UpstreamConfig::new(vec![Parent {
            name: NodeName::new("origin").unwrap(),
            addr: s.origin.local_addr().unwrap(),
        }]),
    );
    sc.retry_after = Duration::from_secs(1);
    let station = Station::start(
        sc,
        s.keys.enroll(NodeRole::Station, &station_name).unwrap(),
        s.keys.root_public(),
    )
    .await
    .unwrap();

    let published = step(&s, Role::Publisher, &lesson, "publish", json!({})).await;
    assert_eq!(published["state"], "published");
    let version = published["catalog_version"].as_u64().unwrap();
    let catalog = s.origin.catalog().unwrap();
    assert_eq!(catalog.body.version, version);
    let lesson_id = LessonId::new(lesson.clone()).unwrap();
    assert!(catalog.body.entries().iter().any(|e| e.lesson == lesson_id));

    let mut status = station.status();
    status
        .wait_for(|st| st.synced && st.catalog_version >= version && st.lessons_ready == 1)
        .await
        .unwrap();
    // Every segment the origin transcoded is at the station, byte for byte.
    let media = s.spool.join("lessons").join(&lesson).join("media");
    let mut segments = 0;
    for rendition in std::fs::read_dir(&media)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.is_dir())
    {
        for file in std::fs::read_dir(&rendition).unwrap().map(|e| e.unwrap().path()) {
            let data = std::fs::read(&file).unwrap();
            let ranges = segment_ranges(&data);
            for (r, range) in refs_for(&data, &ranges).iter().zip(ranges) {
                let held = station
                    .store()
                    .get(&r.id, 0)
                    .unwrap()
                    .expect("the station holds every chunk");
                assert_eq!(held, data[range], "{}", file.display());
            }
            segments += 1;
        }
    }
    assert!(segments >= 2, "{segments} segments");
    let ranges = attachment_ranges(&handout_bytes);
    assert!(ranges.len() > 1, "the attachment is cut at content-defined boundaries");
    for (r, range) in refs_for(&handout_bytes, &ranges).iter().zip(ranges) {
        let held = station
            .store()
            .get(&r.id, 0)
            .unwrap()
            .expect("the station holds the attachment");
        assert_eq!(held, handout_bytes[range]);
    }

    // Withdraw: the next catalog has no such lesson; publishing again needs the workflow again.
    only(
        &s,
        &[Role::Publisher],
        Method::POST,
        &format!("/api/lessons/{lesson}/withdraw"),
        json!({}),
    )
    .await;
    let withdrawn = step(&s, Role::Publisher, &lesson, "withdraw", json!({})).await;
    assert_eq!(withdrawn["state"], "withdrawn");
    let after = s.origin.catalog().unwrap();
    assert_eq!(after.body.version, version + 1);
    assert!(!after.body.entries().iter().any(|e| e.lesson == lesson_id));
    let again = refused(
        s.client(Role::Publisher)
            .post(&format!("/api/lessons/{lesson}/publish"), &json!({}))
            .await,
        StatusCode::CONFLICT,
    );
    assert_eq!(again["state"], "withdrawn");
    status.wait_for(|st| st.catalog_version > version).await.unwrap();

    // Schedules: publisher only; the origin signs the next schedule version.
    only(
        &s,
        &[Role::Publisher],
        Method::POST,
        "/api/schedule",
        json!({ "lesson": lesson, "at": 1, "target": "all" }),
    )
    .await;
    refused(
        s.client(Role::Publisher)
            .post(
                "/api/schedule",
                &json!({ "lesson": lesson, "at": 1_796_153_400u64, "target": "town:town-1" }),
            )
            .await,
        StatusCode::CONFLICT,
    );
    step(&s, Role::Submitter, &lesson, "submit", json!({})).await;
    let scheduled = s
        .client(Role::Publisher)
        .post(
            "/api/schedule",
            &json!({ "lesson": lesson, "at": 1_796_153_400u64, "target": "town:town-1" }),
        )
        .await
        .unwrap();
    assert_eq!(scheduled["version"], 1);
    let schedule = s.origin.schedule().unwrap();
    assert_eq!(schedule.body.entries.len(), 1);
    assert_eq!(schedule.body.entries[0].show_at.0, 1_796_153_400);

    // Search and filters.
    let viewer = s.client(Role::Viewer);
    let found = viewer.get("/api/lessons?q=%E5%B0%8F%E9%BA%A6").await.unwrap(); // 小麦
    assert_eq!(found.as_array().unwrap().len(), 1);
    assert_eq!(
        viewer
            .get("/api/lessons?category=elective")
            .await
            .unwrap()
            .as_array()
            .unwrap()
            .len(),
        0
    );
    assert_eq!(
        viewer
            .get("/api/lessons?state=submitted")
            .await
            .unwrap()
            .as_array()
            .unwrap()
            .len(),
        1
    );

    // The audit log: operator only; every step, who did it and the refusals.
    only(&s, &[Role::Operator], Method::GET, "/api/audit", json!(null)).await;
    let audit = s
        .client(Role::Operator)
        .get(&format!("/api/audit?target={lesson}"))
        .await
        .unwrap();
    let entries = audit.as_array().unwrap();
    let did = |who: &str, action: &str| {
        entries
            .iter()
            .any(|e| e["who"] == who && e["action"] == action && e["result"] == "ok")
    };
    for (who, action) in [
        ("submitter", "submit"),
        ("reviewer", "reject"),
        ("submitter", "edit-metadata"),
        ("reviewer", "review"),
        ("publisher", "reject"),
        ("publisher", "approve"),
        ("publisher", "publish"),
        ("publisher", "withdraw"),
        ("publisher", "schedule"),
        ("reviewer", "preview"),
    ] {
        assert!(did(who, action), "no audit entry of {who} {action}: {audit:#}");
    }
    assert!(entries.iter().any(|e| e["who"] == "submitter"
        && e["action"] == "approve"
        && e["result"].as_str().unwrap().starts_with("403")));
    assert!(entries
        .iter()
        .any(|e| e["action"] == "publish" && e["result"].as_str().unwrap().starts_with("409")));
    // Refused before anyone is known: the request itself is recorded.
    let all = s.client(Role::Operator).get("/api/audit").await.unwrap();
    let unauthenticated = format!("http POST /api/lessons/{lesson}/publish");
    assert!(all.as_array().unwrap().iter().any(|e| e["who"] == "-"
        && e["action"] == unauthenticated.as_str()
        && e["result"].as_str().unwrap().starts_with("401")));
    station.shutdown().await;
    s.origin.shutdown();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn admin_refuses_oversized_non_media_and_misnamed_uploads() {
    let s = Setup::start(2 << 30).await;
    let submitter = s.client(Role::Submitter);
    only(
        &s,
        &[Role::Submitter],
        Method::POST,
        "/api/uploads",
        json!({ "name": "a.mp4", "size": 10 }),
    )
    .await;
    // The limit is checked on the declared size, before any body: a 1 GiB sparse file is
    // accepted as an upload under a 2 GiB limit, a 3 GiB one is refused.
    let big = s.dir.path().join("big.mp4");
    let f = std::fs::File::create(&big).unwrap();
    f.set_len(3 << 30).unwrap();
    let e = submitter.upload_file(&big, "media", |_| {}).await.unwrap_err();
    assert_eq!(e.status(), Some(StatusCode::PAYLOAD_TOO_LARGE), "{e}");
    assert!(e.to_string().contains("max_upload"), "{e}");
    f.set_len(1 << 30).unwrap();
    let id = submitter.create_upload("media", "big.mp4", 1 << 30).await.unwrap();
    assert_eq!(submitter.upload_offset(&id).await.unwrap(), 0);
    // A body declared longer than the upload is refused before it is read.
    let long = vec![0u8; 1024];
    let small = submitter.create_upload("media", "s.mp4", 100).await.unwrap();
    let e = submitter
        .put_upload(&small, 0, http_body_util::Full::new(Bytes::from(long)))
        .await
        .unwrap_err();
    assert_eq!(e.status(), Some(StatusCode::PAYLOAD_TOO_LARGE), "{e}");
    assert_eq!(submitter.upload_offset(&small).await.unwrap(), 0);
    // Attachments have their own, smaller limit.
    refused(
        submitter
            .post(
                "/api/uploads",
                &json!({ "kind": "attachment", "name": "a.pdf", "size": 9 << 20 }),
            )
            .await,
        StatusCode::PAYLOAD_TOO_LARGE,
    );
    // A path in the file name is refused.
    refused(
        submitter
            .post("/api/uploads", &json!({ "name": "../../etc/passwd", "size": 10 }))
            .await,
        StatusCode::BAD_REQUEST,
    );
    // Upload ids are the server's: anything else is not found.
    refused(submitter.get("/api/uploads/..%2F..%2Fetc").await, StatusCode::NOT_FOUND);

    // Random bytes named .mp4: refused with the probe's reason, and no lesson is made.
    let junk = s.dir.path().join("junk.mp4");
    std::fs::write(&junk, courseway_content::synthetic::pseudo_random(7, &[], 200_000)).unwrap();
    let id = submitter.upload_file(&junk, "media", |_| {}).await.unwrap();
    let body = refused(
        submitter
            .post(
                "/api/lessons",
                &json!({ "upload": id, "title": "t", "department": "d", "category": "elective" }),
            )
            .await,
        StatusCode::UNPROCESSABLE_ENTITY,
    );
    assert_eq!(body["code"], "not_media", "{body}");
    assert!(body["error"].as_str().unwrap().contains("junk.mp4"), "{body}");
    // An incomplete upload cannot become a lesson.
    let part = submitter.create_upload("media", "p.mp4", 1000).await.unwrap();
    let body = refused(
        submitter
            .post(
                "/api/lessons",
                &json!({ "upload": part, "title": "t", "department": "d", "category": "elective" }),
            )
            .await,
        StatusCode::CONFLICT,
    );
    assert_eq!(body["offset"], 0);
    assert_eq!(s.client(Role::Viewer).get("/api/lessons").await.unwrap(), json!([]));
    assert_eq!(
        status(s.client(Role::Viewer).get("/api/nothing").await),
        StatusCode::NOT_FOUND
    );
    s.origin.shutdown();
}

/// An empty file, a truncated MP4 and an audio file declared as video: each refused with a 4xx
/// and a reason before any job starts; no lesson is made, nothing is published, and the origin
/// keeps taking good uploads afterwards.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn admin_refuses_empty_truncated_and_misdeclared_media() {
    let s = Setup::start(1 << 30).await;
    let submitter = s.client(Role::Submitter);
    let lesson = |upload: &str, media: Option<&str>| json!({ "upload": upload, "title": "t", "department": "d", "category": "elective", "media": media });

    // Empty: refused when the upload is declared, before any body.
    let empty = s.dir.path().join("empty.mp4");
    std::fs::write(&empty, b"").unwrap();
    let e = submitter.upload_file(&empty, "media", |_| {}).await.unwrap_err();
    assert_eq!(e.status(), Some(StatusCode::BAD_REQUEST), "{e}");
    assert!(e.to_string().contains("empty"), "{e}");

    // Truncated: a real MP4 cut in half.
    let whole = s.dir.path().join("whole.mp4");
    make_source(&whole, 4).await;
    let bytes = std::fs::read(&whole).unwrap();
    let cut = s.dir.path().join("cut.mp4");
    std::fs::write(&cut, &bytes[..bytes.len() / 2]).unwrap();
    let id = submitter.upload_file(&cut, "media", |_| {}).await.unwrap();
    let body = refused(
        submitter.post("/api/lessons", &lesson(&id, None)).await,
        StatusCode::UNPROCESSABLE_ENTITY,
    );
    assert_eq!(body["code"], "not_media", "{body}");
    assert!(body["error"].as_str().unwrap().contains("truncated"), "{body}");

    // Audio only, declared as video (and a video declared as audio).
    let audio = s.dir.path().join("talk.mp4");
    let path = audio.clone();
    tokio::task::spawn_blocking(move || {
        let source = TestSource {
            video: false,
            ..TestSource::video_audio(0, 0, 4)
        };
        make_test_source(&path, &source).unwrap()
    })
    .await
    .unwrap();
    let id = submitter.upload_file(&audio, "media", |_| {}).await.unwrap();
    let body = refused(
        submitter.post("/api/lessons", &lesson(&id, Some("video"))).await,
        StatusCode::UNPROCESSABLE_ENTITY,
    );
    assert_eq!(body["code"], "media_mismatch", "{body}");
    assert!(body["error"].as_str().unwrap().contains("no video stream"), "{body}");
    let video = submitter.upload_file(&whole, "media", |_| {}).await.unwrap();
    let body = refused(
        submitter.post("/api/lessons", &lesson(&video, Some("audio"))).await,
        StatusCode::UNPROCESSABLE_ENTITY,
    );
    assert_eq!(body["code"], "media_mismatch", "{body}");
    // A declaration that is neither is refused as a bad request.
    refused(
        submitter.post("/api/lessons", &lesson(&video, Some("slides"))).await,
        StatusCode::BAD_REQUEST,
    );

    // Nothing was made or published, and no job was started.
    assert_eq!(s.client(Role::Viewer).get("/api/lessons").await.unwrap(), json!([]));
    assert!(s.origin.catalog().is_none_or(|c| c.body.entries().is_empty()));
    assert!(!s.spool.join("lessons").exists() || std::fs::read_dir(s.spool.join("lessons")).unwrap().next().is_none());

    // The origin still takes a good upload declared for what it is: the same audio as audio.
    let created = submitter
        .post("/api/lessons", &lesson(&id, Some("audio")))
        .await
        .unwrap();
    let done = wait_job(&s, created["job"].as_str().unwrap()).await;
    assert_eq!(done["job"]["state"], "done", "{done}");
    let m = ingest_metrics(&s);
    assert!(
        m.contains("courseway_origin_ingest_jobs_ended_total{state=\"done\"} 1"),
        "{m}"
    );
    assert!(
        m.contains("courseway_origin_ingest_jobs_ended_total{state=\"failed\"} 0"),
        "{m}"
    );
    s.origin.shutdown();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn admin_upload_of_64_mb_streams_to_disk_and_resumes_after_a_cut() {
    let s = Setup::start(1 << 30).await;
    let submitter = s.client(Role::Submitter);
    const SIZE: usize = 64 << 20;
    const BLOCK: usize = 1 << 20;
    let path = s.dir.path().join("big.bin");
    std::fs::write(&path, courseway_content::synthetic::pseudo_random(3, &[], SIZE)).unwrap();
    let id = submitter.create_upload("media", "big.bin", SIZE as u64).await.unwrap();
    // A chunked body fed block by block (never in memory whole on either side).
    let (tx, body) = ChannelBody::new(2);
    let put = {
        let (c, id) = (submitter.clone(), id.clone());
        tokio::spawn(async move { c.put_upload(&id, 0, body).await })
    };
    let source = std::fs::File::open(&path).unwrap();
    let half = SIZE / 2;
    let mut sent = 0;
    while sent < half {
        let mut block = vec![0u8; BLOCK];
        std::os::unix::fs::FileExt::read_exact_at(&source, &mut block, sent as u64).unwrap();
        tx.send(Ok(Bytes::from(block))).await.unwrap();
        sent += BLOCK;
    }
    // The server has most of the first half on disk while the body is still open: it streams.
    loop {
        let held = submitter.upload_offset(&id).await.unwrap();
        if held >= (half - BLOCK) as u64 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(!put.is_finished(), "the body is still open");
    tx.send(Err(std::io::Error::other("line cut"))).await.unwrap();
    assert!(put.await.unwrap().is_err());
    let (resumed_at, done) = resume(&submitter, &id, &path).await;
    assert!(
        (half - BLOCK) as u64 <= resumed_at && resumed_at <= half as u64,
        "what arrived before the cut is kept: resumed at {resumed_at}"
    );
    assert_eq!(done, SIZE as u64);
    let stored = std::fs::read(s.spool.join("uploads").join(&id)).unwrap();
    assert_eq!(blake3::hash(&stored), blake3::hash(&std::fs::read(&path).unwrap()));
    // Complete: more bytes are refused.
    let e = submitter
        .put_upload(&id, SIZE as u64, http_body_util::Full::new(Bytes::from_static(b"x")))
        .await
        .unwrap_err();
    assert_eq!(e.status(), Some(StatusCode::PAYLOAD_TOO_LARGE), "{e}");
    s.origin.shutdown();
}

/// A client that stops sending but keeps its connection open does not hold the upload: after
/// `upload_idle` the server ends that PUT as cut (keeping what arrived), so a resume is taken
/// rather than refused as busy for ever. A file that shrinks under the client is an error, not
/// an endless resend.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn admin_upload_stalled_with_its_connection_open_is_cut_and_resumed() {
    let s = Setup::start_with(1 << 30, |c, _| c.upload_idle = Duration::from_secs(1)).await;
    let submitter = s.client(Role::Submitter);
    const SIZE: usize = 4 << 20;
    let path = s.dir.path().join("stall.bin");
    std::fs::write(&path, courseway_content::synthetic::pseudo_random(5, &[], SIZE)).unwrap();
    let id = submitter
        .create_upload("media", "stall.bin", SIZE as u64)
        .await
        .unwrap();
    let (tx, body) = ChannelBody::new(2);
    let put = {
        let (c, id) = (submitter.clone(), id.clone());
        tokio::spawn(async move { c.put_upload(&id, 0, body).await })
    };
    let first = std::fs::read(&path).unwrap()[..SIZE / 4].to_vec();
    tx.send(Ok(Bytes::from(first))).await.unwrap();
    // While the body is open the upload is busy…
    tokio::time::sleep(Duration::from_millis(200)).await;
    let e = submitter
        .put_upload(&id, 0, http_body_util::Full::new(Bytes::from_static(b"x")))
        .await
        .unwrap_err();
    assert_eq!(
        (e.status(), e.code()),
        (Some(StatusCode::CONFLICT), Some("busy")),
        "{e}"
    );
    // …and a second after the last byte the server ends the stalled PUT itself, the sender
    // still connected and silent.
    let ended = tokio::time::timeout(Duration::from_secs(30), put)
        .await
        .expect("the stalled PUT ended");
    assert!(ended.unwrap().is_err(), "a stalled body is a cut");
    drop(tx);
    let (resumed_at, done) = resume(&submitter, &id, &path).await;
    assert_eq!(resumed_at, (SIZE / 4) as u64, "what arrived before the stall is kept");
    assert_eq!(done, SIZE as u64);
    let stored = std::fs::read(s.spool.join("uploads").join(&id)).unwrap();
    assert_eq!(blake3::hash(&stored), blake3::hash(&std::fs::read(&path).unwrap()));

    // A file cut shorter after its upload was declared: the client stops with the reason.
    let shrinking = s.dir.path().join("shrinking.bin");
    std::fs::write(&shrinking, vec![7u8; 1 << 20]).unwrap();
    let truncate = {
        let shrinking = shrinking.clone();
        move |sent: u64| {
            if sent > 0 {
                let f = std::fs::OpenOptions::new().write(true).open(&shrinking).unwrap();
                f.set_len(1 << 19).unwrap();
            }
        }
    };
    let outcome = tokio::time::timeout(
        Duration::from_secs(60),
        submitter.upload_file(&shrinking, "media", truncate),
    )
    .await
    .expect("the client does not loop on a file that shrank");
    match outcome {
        Ok(id) => panic!("a shrunk file uploaded as {id}"),
        Err(e) => assert!(
            matches!(e, ClientError::File { .. }) || e.status() == Some(StatusCode::BAD_REQUEST),
            "{e}"
        ),
    }
    s.origin.shutdown();
}

/// Two lessons asked at once from one upload (a double click, a retried request): one is made,
/// the other refused with 409 and the lesson it went into.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn admin_one_upload_makes_one_lesson_even_when_asked_twice_at_once() {
    let s = Setup::start(1 << 30).await;
    let source = s.dir.path().join("twice.mp4");
    make_source(&source, 2).await;
    let submitter = s.client(Role::Submitter);
    let id = submitter.upload_file(&source, "media", |_| {}).await.unwrap();
    let body = json!({ "upload": id, "title": "t", "department": "d", "category": "elective" });
    let (a, b) = tokio::join!(
        submitter.post("/api/lessons", &body),
        submitter.post("/api/lessons", &body)
    );
    let (made, refused) = match (a, b) {
        (Ok(made), Err(refused)) | (Err(refused), Ok(made)) => (made, refused),
        (a, b) => panic!("one lesson and one refusal expected, got {a:?} and {b:?}"),
    };
    assert_eq!(refused.status(), Some(StatusCode::CONFLICT), "{refused}");
    let lesson = made["lesson"].as_str().unwrap();
    assert!(refused.to_string().contains(lesson), "{refused}");
    wait_job(&s, made["job"].as_str().unwrap()).await;
    let listed = s.client(Role::Viewer).get("/api/lessons").await.unwrap();
    assert_eq!(listed.as_array().unwrap().len(), 1, "{listed}");
    s.origin.shutdown();
}

/// An upload the spool's disk cannot hold (with the renditions made from it) is refused at
/// creation with 507 and the room there is, before any byte is sent.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn admin_refuses_an_upload_the_spool_disk_cannot_hold() {
    let s = Setup::start(u64::MAX / 4).await;
    let submitter = s.client(Role::Submitter);
    // A petabyte: within the (raised) size limit, beyond any test machine's disk.
    let e = submitter
        .create_upload("media", "archive.mp4", 1 << 50)
        .await
        .unwrap_err();
    assert_eq!(e.status(), Some(StatusCode::INSUFFICIENT_STORAGE), "{e}");
    assert_eq!(e.code(), Some("no_room"), "{e}");
    assert!(e.to_string().contains("bytes free"), "{e}");
    // Nothing was made: the spool's uploads directory is empty.
    assert_eq!(std::fs::read_dir(s.spool.join("uploads")).unwrap().count(), 0);
    s.origin.shutdown();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn admin_ingest_job_cancelled_leaves_no_output() {
    let s = Setup::start(1 << 30).await;
    let source = s.dir.path().join("long.mp4");
    make_source(&source, 20).await;
    let submitter = s.client(Role::Submitter);
    let id = submitter.upload_file(&source, "media", |_| {}).await.unwrap();
    let created = submitter
        .post(
            "/api/lessons",
            &json!({ "upload": id, "title": "t", "department": "d", "category": "elective" }),
        )
        .await
        .unwrap();
    let (lesson, job) = (created["lesson"].as_str().unwrap(), created["job"].as_str().unwrap());
    let cancel = format!("/api/jobs/{job}/cancel");
    only(&s, &[Role::Submitter, Role::Operator], Method::POST, &cancel, json!({})).await;
    s.client(Role::Operator).post(&cancel, &json!({})).await.unwrap();
    let ended = wait_job(&s, job).await;
    assert_eq!(ended["job"]["state"], "cancelled", "{ended}");
    let m = ingest_metrics(&s);
    assert!(
        m.contains("courseway_origin_ingest_jobs_ended_total{state=\"cancelled\"} 1"),
        "{m}"
    );
    assert!(
        m.contains("courseway_origin_ingest_jobs_ended_total{state=\"done\"} 0"),
        "{m}"
    );
    assert!(
        m.contains("courseway_origin_ingest_jobs{state=\"transcoding\"} 0"),
        "{m}"
    );
    let l = s
        .client(Role::Viewer)
        .get(&format!("/api/lessons/{lesson}"))
        .await
        .unwrap();
    assert_eq!(l["state"], "failed");
    assert!(
        !s.spool.join("lessons").join(lesson).exists(),
        "the transcode's output is removed"
    );
    assert!(!s.spool.join("uploads").join(&id).exists(), "the upload is removed");
    let e = refused(
        submitter
            .post(&format!("/api/lessons/{lesson}/submit"), &json!({}))
            .await,
        StatusCode::CONFLICT,
    );
    assert_eq!(e["state"], "failed");
    assert!(s.origin.catalog().is_none());
    s.origin.shutdown();
}

/// One raw HTTP/1.1 request; the status and the headers (lowercased names) and body.
fn raw(addr: std::net::SocketAddr, method: &str, path: &str, token: &str) -> (u16, Vec<(String, String)>, String) {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(addr).unwrap();
    let auth = if token.is_empty() {
        String::new()
    } else {
        format!("Authorization: Bearer {token}\r\n")
    };
    write!(
        stream,
        "{method} {path} HTTP/1.1\r\nHost: x\r\n{auth}Content-Length: 0\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut text = String::new();
    stream.read_to_string(&mut text).unwrap();
    let (head, body) = text.split_once("\r\n\r\n").unwrap();
    let mut lines = head.lines();
    let status = lines.next().unwrap().split(' ').nth(1).unwrap().parse().unwrap();
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_lowercase(), v.trim().to_string()))
        .collect();
    (status, headers, body.to_string())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn admin_refuses_every_endpoint_without_a_token_and_paths_that_escape() {
    let s = Setup::start(1 << 30).await;
    let addr = s.admin.local_addr();
    // Every route, unauthenticated and with an unknown token: 401 with a JSON reason, before
    // any work (ids below do not exist: a 404 would mean the lookup ran first).
    let routes = [
        ("GET", "/api/whoami"),
        ("POST", "/api/uploads"),
        ("GET", "/api/uploads/u-0"),
        ("HEAD", "/api/uploads/u-0"),
        ("PUT", "/api/uploads/u-0?offset=0"),
        ("POST", "/api/lessons"),
        ("GET", "/api/lessons"),
        ("GET", "/api/lessons/x"),
        ("PUT", "/api/lessons/x/metadata"),
        ("POST", "/api/lessons/x/submit"),
        ("POST", "/api/lessons/x/review"),
        ("POST", "/api/lessons/x/approve"),
        ("POST", "/api/lessons/x/reject"),
        ("POST", "/api/lessons/x/publish"),
        ("POST", "/api/lessons/x/withdraw"),
        ("GET", "/api/jobs/j-0"),
        ("POST", "/api/jobs/j-0/cancel"),
        ("GET", "/api/audit"),
        ("GET", "/api/schedule"),
        ("POST", "/api/schedule"),
        ("GET", "/api/revocations"),
        ("POST", "/api/revocations"),
        ("GET", "/preview/x/master.m3u8"),
        ("GET", "/preview/x/720p/index.m3u8"),
        ("GET", "/preview/x/720p/0.ts"),
        ("GET", "/preview/x/poster.jpg"),
    ];
    let routes: Vec<(String, String)> = routes.iter().map(|(m, p)| (m.to_string(), p.to_string())).collect();
    let refusals = tokio::task::spawn_blocking(move || {
        let mut out = Vec::new();
        for (method, path) in &routes {
            for token in ["", "cw_not-a-token"] {
                out.push((method.clone(), path.clone(), raw(addr, method, path, token)));
            }
        }
        out
    })
    .await
    .unwrap();
    for (method, path, (status, _, body)) in refusals {
        assert_eq!(status, 401, "{method} {path}: {body}");
        if method != "HEAD" {
            let v: Value = serde_json::from_str(&body).unwrap();
            assert_eq!(v["code"], "unauthorized", "{method} {path}: {body}");
        }
    }

    // Names that try to leave their directory reach no file: every one is simply not found.
    let viewer = s.client(Role::Viewer);
    let submitter = s.client(Role::Submitter);
    let operator = s.client(Role::Operator);
    for path in [
        "/api/lessons/..%2F..%2Fetc%2Fpasswd",
        "/api/lessons/../../etc/passwd",
        "/api/jobs/..%2F..%2Fetc%2Fpasswd",
        "/api/uploads/u-..%2F..%2Fdb",
        "/preview/..%2F..%2Fetc/master.m3u8",
        "/preview/../../etc/passwd",
    ] {
        // A viewer may not read uploads at all (403); otherwise the name is simply not found.
        let v = status(viewer.get(path).await);
        assert!(
            matches!(v, StatusCode::NOT_FOUND | StatusCode::FORBIDDEN),
            "{path}: {v}"
        );
        assert_eq!(status(submitter.get(path).await), StatusCode::NOT_FOUND, "{path}");
    }
    refused(
        submitter
            .json(Method::PUT, "/api/uploads/..%2F..%2Fdb?offset=0", None)
            .await,
        StatusCode::NOT_FOUND,
    );
    refused(
        operator.post("/api/jobs/..%2F..%2Fdb/cancel", &json!({})).await,
        StatusCode::CONFLICT,
    );
    for name in ["..", "a/b.mp4", "..\\..\\x", "x\u{0}y"] {
        refused(
            submitter
                .post("/api/uploads", &json!({ "name": name, "size": 10 }))
                .await,
            StatusCode::BAD_REQUEST,
        );
    }
    // Nothing was written outside the spool and data directories.
    let mut entries: Vec<String> = std::fs::read_dir(s.dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    entries.sort();
    assert_eq!(entries, ["admin", "origin", "spool"]);
    s.origin.shutdown();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn admin_rate_limits_answer_429_with_retry_after() {
    use courseway_origin::admin::ratelimit::{RateLimits, RequestLimit};
    // Per token: 60 a minute, bursts of 3; per address: off.
    let s = Setup::start_with(1 << 30, |c, _| {
        c.rate_limits = RateLimits {
            per_ip: RequestLimit {
                per_minute: 0,
                burst: 1,
            },
            per_token: RequestLimit {
                per_minute: 60,
                burst: 3,
            },
        };
    })
    .await;
    let addr = s.admin.local_addr();
    let viewer = s.token(Role::Viewer).to_string();
    let publisher = s.token(Role::Publisher).to_string();
    let answers = tokio::task::spawn_blocking(move || {
        let v: Vec<_> = (0..4).map(|_| raw(addr, "GET", "/api/whoami", &viewer)).collect();
        let other = raw(addr, "GET", "/api/whoami", &publisher);
        (v, other)
    })
    .await
    .unwrap();
    let (viewer_answers, other) = answers;
    for (status, _, body) in &viewer_answers[..3] {
        assert_eq!(*status, 200, "{body}");
    }
    let (status, headers, body) = &viewer_answers[3];
    assert_eq!(*status, 429, "{body}");
    let retry = headers.iter().find(|(k, _)| k == "retry-after").map(|(_, v)| v.clone());
    assert_eq!(retry.as_deref(), Some("1"), "{headers:?}");
    let v: Value = serde_json::from_str(body).unwrap();
    assert_eq!(v["code"], "rate_limited");
    assert_eq!(v["retry_after"], 1);
    assert!(v["error"].as_str().unwrap().contains("token"), "{v}");
    // Another token has its own budget.
    assert_eq!(other.0, 200, "{}", other.2);
    // A refused flood writes nothing to the audit log (a POST over the limit included).
    let publisher = s.client(Role::Publisher);
    for _ in 0..2 {
        let _ = publisher
            .post("/api/schedule", &json!({ "lesson": "x", "at": 1 }))
            .await;
    }
    let e = publisher
        .post("/api/schedule", &json!({ "lesson": "x", "at": 1 }))
        .await;
    assert_eq!(status_of(&e), StatusCode::TOO_MANY_REQUESTS);
    let audit = s.client(Role::Operator).get("/api/audit").await.unwrap();
    let records = audit.as_array().unwrap();
    assert!(records.iter().any(|r| r["action"] == "schedule"), "{audit}");
    assert!(
        !records
            .iter()
            .any(|r| r["result"].as_str().unwrap_or("").starts_with("429")),
        "{audit}"
    );
    s.origin.shutdown();

    // Per address: 60 a minute, bursts of 5, whatever the token; checked before the token, so
    // a stream of guesses is cut off too.
    let s = Setup::start_with(1 << 30, |c, _| {
        c.rate_limits = RateLimits {
            per_ip: RequestLimit {
                per_minute: 60,
                burst: 5,
            },
            per_token: RequestLimit {
                per_minute: 0,
                burst: 1,
            },
        };
    })
    .await;
    let addr = s.admin.local_addr();
    let tokens: Vec<String> = s.tokens.iter().map(|(_, t)| t.clone()).collect();
    let answers = tokio::task::spawn_blocking(move || {
        let mut out: Vec<_> = tokens.iter().map(|t| raw(addr, "GET", "/api/whoami", t)).collect();
        out.push(raw(addr, "GET", "/api/whoami", "cw_guess"));
        out
    })
    .await
    .unwrap();
    assert_eq!(answers.len(), 6);
    for (status, _, body) in &answers[..5] {
        assert_eq!(*status, 200, "{body}");
    }
    let (status, headers, body) = &answers[5];
    assert_eq!(
        *status, 429,
        "a guess over the address limit is not even checked: {body}"
    );
    assert!(headers.iter().any(|(k, _)| k == "retry-after"), "{headers:?}");
    assert!(body.contains("address"), "{body}");
    s.origin.shutdown();
}

fn status_of(result: &Result<Value, ClientError>) -> StatusCode {
    match result {
        Ok(_) => StatusCode::OK,
        Err(e) => e.status().unwrap_or_else(|| panic!("not an HTTP answer: {e}")),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn admin_revocation_is_for_operators_and_signs_the_next_catalog() {
    let s = Setup::start(1 << 30).await;
    only(
        &s,
        &[Role::Operator],
        Method::POST,
        "/api/revocations",
        json!({ "name": "village-1" }),
    )
    .await;
    let operator = s.client(Role::Operator);
    let before = s.origin.catalog().map_or(0, |c| c.body.version);
    let v = operator
        .post("/api/revocations", &json!({ "name": "village-1" }))
        .await
        .unwrap();
    assert_eq!(v["catalog_version"], before + 1);
    assert!(s
        .origin
        .catalog()
        .unwrap()
        .body
        .is_revoked(&NodeName::new("village-1").unwrap()));
    let listed = s.client(Role::Viewer).get("/api/revocations").await.unwrap();
    assert_eq!(listed["revoked"], json!(["village-1"]));
    refused(
        operator.post("/api/revocations", &json!({ "name": "origin" })).await,
        StatusCode::CONFLICT,
    );
    refused(
        operator.post("/api/revocations", &json!({ "name": "../x" })).await,
        StatusCode::BAD_REQUEST,
    );
    refused(
        operator.post("/api/revocations", &json!({ "node": "village-2" })).await,
        StatusCode::BAD_REQUEST,
    );
    let audit = operator.get("/api/audit").await.unwrap();
    assert!(
        audit
            .as_array()
            .unwrap()
            .iter()
            .any(|r| r["action"] == "revoke" && r["target"] == "village-1" && r["result"] == "ok"),
        "{audit}"
    );
    s.origin.shutdown();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn admin_enrols_a_station_with_a_one_time_token() {
    use courseway_admin_proto::enrol::{pin, EnrolToken};
    use courseway_origin::admin::enrol::{self as origin_enrol, EnrolConfig};
    let s = Setup::start_with(1 << 30, |c, (keys, dir)| {
        let creds = dir.join("deployment");
        std::fs::create_dir_all(&creds).unwrap();
        keys.ca.save(&creds.join("ca.crt"), &creds.join("ca.key")).unwrap();
        let root: String = keys
            .root_public()
            .as_bytes()
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        std::fs::write(creds.join("root.pub"), format!("{root}\n")).unwrap();
        c.enrol = Some(EnrolConfig {
            ca_cert: creds.join("ca.crt"),
            ca_key: creds.join("ca.key"),
            root_pub: creds.join("root.pub"),
            certificate_lifetime: Duration::from_secs(30 * 86_400),
        });
    })
    .await;
    let tokens_file = s.dir.path().join("admin").join(origin_enrol::ENROL_TOKENS_FILE);
    let deployment_pin = pin(s.keys.ca.certificate().der(), s.keys.root_public().as_bytes());
    let now = clock::now().0;
    let make = |name: &str, secret: [u8; 32], lifetime: u64, at: u64| {
        origin_enrol::create(
            &tokens_file,
            NodeRole::Station,
            &NodeName::new(name).unwrap(),
            at,
            Duration::from_secs(lifetime),
            secret,
            deployment_pin,
        )
        .unwrap()
    };
    let server = s.admin.local_addr().to_string();
    let out = |n: &str| s.dir.path().join(n);

    let token = make("village-0123", [1; 32], 86_400, now);
    let identity = courseway::enrol::enroll(&server, &token, &out("creds")).await.unwrap();
    assert_eq!(identity.to_string(), "station village-0123");
    let node = courseway::keys::NodeKeys::load(&out("creds"), NodeRole::Station).unwrap();
    assert_eq!(node.root, s.keys.root_public());
    // The key was made here: the origin's files hold no private key of the node.
    let key = std::fs::read_to_string(out("creds").join("node.key")).unwrap();
    for entry in walk(s.dir.path().join("admin").as_path()) {
        let text = String::from_utf8_lossy(&std::fs::read(&entry).unwrap()).into_owned();
        assert!(!text.contains(key.lines().nth(1).unwrap()), "{}", entry.display());
    }

    // Used once: a second use is refused, and writes nothing.
    let e = courseway::enrol::enroll(&server, &token, &out("again"))
        .await
        .unwrap_err();
    assert!(format!("{e:#}").contains("409"), "{e:#}");
    assert!(!out("again").join("node.key").exists());
    // Expired, unknown, and a MAC that does not match the secret (someone who saw a request
    // and made their own): refused.
    let expired = make("village-0124", [2; 32], 60, now - 3600);
    let e = courseway::enrol::enroll(&server, &expired, &out("expired"))
        .await
        .unwrap_err();
    assert!(format!("{e:#}").contains("expired"), "{e:#}");
    let unknown = EnrolToken {
        secret: [3; 32],
        pin: deployment_pin,
    };
    let e = courseway::enrol::enroll(&server, &unknown, &out("unknown"))
        .await
        .unwrap_err();
    assert!(format!("{e:#}").contains("401"), "{e:#}");
    let _ = make("village-0125", [4; 32], 86_400, now);
    let csr = courseway_net::NodeKeyRequest::generate().unwrap();
    let forged = json!({
        "token": EnrolToken { secret: [4; 32], pin: deployment_pin }.id(),
        "csr": csr.csr_pem(),
        "mac": EnrolToken { secret: [5; 32], pin: deployment_pin }.mac(csr.csr_pem()),
    });
    let body = refused(
        s.anonymous().post("/api/enrol", &forged).await,
        StatusCode::UNAUTHORIZED,
    );
    assert!(body["error"].as_str().unwrap().contains("MAC"), "{body}");
    // Garbage instead of a CSR: 400, and the token stays unused.
    let bad_csr = "-----BEGIN CERTIFICATE REQUEST-----\nAAAA\n-----END CERTIFICATE REQUEST-----\n";
    let t = EnrolToken {
        secret: [4; 32],
        pin: deployment_pin,
    };
    refused(
        s.anonymous()
            .post(
                "/api/enrol",
                &json!({ "token": t.id(), "csr": bad_csr, "mac": t.mac(bad_csr) }),
            )
            .await,
        StatusCode::BAD_REQUEST,
    );
    courseway::enrol::enroll(&server, &t, &out("village-0125"))
        .await
        .unwrap();

    // A token whose pin is not this deployment's (the answer would come from elsewhere): the
    // node refuses the answer and writes nothing.
    let wrong_pin = make("village-0126", [6; 32], 86_400, now);
    let wrong_pin = EnrolToken {
        pin: [0; 16],
        ..wrong_pin
    };
    let e = courseway::enrol::enroll(&server, &wrong_pin, &out("pinned"))
        .await
        .unwrap_err();
    assert!(
        format!("{e:#}").contains("not the ones this token was made for"),
        "{e:#}"
    );
    assert!(!out("pinned").join("node.key").exists());

    // The enrolled station syncs from the origin with the credentials it wrote.
    let lesson =
        courseway_content::synthetic::SyntheticLesson::standard(LessonId::new("enrolled").unwrap(), 9, 2).build();
    let version = s.origin.publish(&[(lesson.manifest.clone(), &lesson.chunks)]).unwrap();
    let station = Station::start(
        StationConfig::new(
            node.name().clone(),
            "127.0.0.1:0".parse().unwrap(),
            StoreConfig::new(out("station-store"), 1 << 30),
            UpstreamConfig::new(vec![Parent {
                name: NodeName::new("origin").unwrap(),
                addr: s.origin.local_addr().unwrap(),
            }]),
        ),
        node.enrollment,
        node.root,
    )
    .await
    .unwrap();
    let mut st = station.status();
    tokio::time::timeout(Duration::from_secs(120), async {
        while !(st.borrow().synced && st.borrow().catalog_version == version) {
            st.changed().await.unwrap();
        }
    })
    .await
    .expect("the enrolled station syncs");
    for (id, bytes) in &lesson.chunks {
        assert_eq!(&station.store().get(id, 0).unwrap().unwrap(), bytes);
    }
    station.shutdown().await;
    s.origin.shutdown();
}

/// Every file under `dir`.
fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            out.extend(walk(&path));
        } else {
            out.push(path);
        }
    }
    out
}
