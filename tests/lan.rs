//! The station's LAN server over real HTTP on loopback, with a lesson made by GStreamer and
//! synced from an origin over QUIC: HLS playlists and segments byte for byte, ffprobe on the
//! station's URL, attachments, HEAD and ranges, refusals with reasons, the JSON API, viewing
//! records from real segment requests by two devices, and the attendance form.

use std::process::Command;
use std::time::Duration;

use courseway_content::synthetic::SyntheticLesson;
use courseway_content::{LessonId, NodeName, RenditionKind};
use courseway_net::RateLimit;
use courseway_node::{clock, Parent, UpstreamConfig};
use courseway_proto::Role;
use courseway_station::lan::LanConfig;
use courseway_station::{Station, StationConfig};
use courseway_store::StoreConfig;
use courseway_tests::http::Device;
use courseway_tests::lan::{self, handout, HANDOUT_NAME, LESSON, SOURCE_SECONDS};
use courseway_tests::{loopback, start_origin, wait_until};
use hyper::body::Bytes;
use hyper::{Method, StatusCode};
use m3u8_rs::{parse_master_playlist_res, parse_media_playlist_res};
use serde_json::json;

fn tv() -> Device {
    Device::new(
        [127, 0, 0, 1],
        "Mozilla/5.0 (SMART-TV; Linux; Tizen 6.0) AppleWebKit/537.36",
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lan_serves_hls_of_a_ready_lesson_byte_for_byte() {
    let setup = lan::start(Duration::from_secs(60), None).await;
    let addr = setup.addr();
    let m = &setup.manifest;
    let device = tv();

    // The master playlist lists every rendition, with the station's relative URIs.
    let master = device.get(addr, &format!("/hls/{LESSON}/master.m3u8")).await;
    assert_eq!(master.status, StatusCode::OK, "{}", master.text());
    assert_eq!(master.header("content-type"), "application/vnd.apple.mpegurl");
    assert_eq!(master.header("content-length"), master.body.len().to_string());
    let parsed = parse_master_playlist_res(&master.body).expect("a master playlist");
    let names: Vec<_> = m.renditions.iter().map(|r| r.name.as_str()).collect();
    assert_eq!(names, ["360p", "240p", "audio"], "the ladder of the test");
    assert_eq!(
        parsed.variants.iter().map(|v| v.uri.as_str()).collect::<Vec<_>>(),
        ["360p/index.m3u8", "240p/index.m3u8", "audio/index.m3u8"]
    );
    // The same text `courseway media transcode` writes, from the same crate.
    assert_eq!(
        master.text(),
        courseway_hls::master_playlist(m, |r| format!("{}/index.m3u8", r.name))
    );

    // Every segment of every rendition is the transcoder's file, byte for byte.
    for (r, produced) in m.renditions.iter().zip(&setup.output.renditions) {
        let media = device.get(addr, &format!("/hls/{LESSON}/{}/index.m3u8", r.name)).await;
        assert_eq!(media.status, StatusCode::OK);
        let playlist = parse_media_playlist_res(&media.body).expect("a media playlist");
        assert_eq!(playlist.segments.len(), produced.segments.len());
        assert!(playlist.end_list);
        for (i, seg) in playlist.segments.iter().enumerate() {
            assert_eq!(seg.uri, format!("{i}.ts"));
            let got = device.get(addr, &format!("/hls/{LESSON}/{}/{}", r.name, seg.uri)).await;
            assert_eq!(got.status, StatusCode::OK);
            assert_eq!(got.header("content-type"), "video/mp2t");
            assert_eq!(got.header("accept-ranges"), "bytes");
            let original = std::fs::read(&produced.segments[i].path).unwrap();
            assert_eq!(got.header("content-length"), original.len().to_string());
            assert!(
                got.body == original,
                "{} segment {i} differs from the transcoder's file",
                r.name
            );
            assert_eq!(got.body[0], 0x47, "an MPEG-TS sync byte");
        }
    }

    // HEAD: the same headers, no body.
    let seg0 = std::fs::read(&setup.output.renditions[0].segments[0].path).unwrap();
    let head = device
        .send(
            addr,
            Method::HEAD,
            &format!("/hls/{LESSON}/360p/0.ts"),
            &[],
            Bytes::new(),
        )
        .await;
    assert_eq!(head.status, StatusCode::OK);
    assert_eq!(head.header("content-length"), seg0.len().to_string());
    assert!(head.body.is_empty());

    // Byte ranges.
    let part = device
        .send(
            addr,
            Method::GET,
            &format!("/hls/{LESSON}/360p/0.ts"),
            &[("range", "bytes=100-1099")],
            Bytes::new(),
        )
        .await;
    assert_eq!(part.status, StatusCode::PARTIAL_CONTENT);
    assert_eq!(part.header("content-range"), format!("bytes 100-1099/{}", seg0.len()));
    assert!(part.body == seg0[100..1100]);
    let tail = device
        .send(
            addr,
            Method::GET,
            &format!("/hls/{LESSON}/360p/0.ts"),
            &[("range", "bytes=-188")],
            Bytes::new(),
        )
        .await;
    assert!(tail.body == seg0[seg0.len() - 188..]);
    let past = device
        .send(
            addr,
            Method::GET,
            &format!("/hls/{LESSON}/360p/0.ts"),
            &[("range", "bytes=99999999-")],
            Bytes::new(),
        )
        .await;
    assert_eq!(past.status, StatusCode::RANGE_NOT_SATISFIABLE);
    assert_eq!(past.header("content-range"), format!("bytes */{}", seg0.len()));

    // The attachment downloads, whole and in ranges, under its Chinese name.
    let file = device.get(addr, &format!("/files/{LESSON}/0")).await;
    assert_eq!(file.status, StatusCode::OK);
    assert_eq!(file.header("content-type"), "application/pdf");
    assert!(file
        .header("content-disposition")
        .contains("filename*=UTF-8''%E8%AE%B2%E4%B9%89"));
    assert!(file.body == handout(), "the handout comes back byte for byte");
    assert!(m.attachments[0].chunks.len() > 1, "the handout spans several chunks");
    let span = device
        .send(
            addr,
            Method::GET,
            &format!("/files/{LESSON}/0"),
            &[("range", "bytes=200000-450000")],
            Bytes::new(),
        )
        .await;
    assert!(
        span.body == handout()[200_000..450_001],
        "a range across chunk boundaries"
    );

    // Refusals say why; nothing reaches the filesystem.
    for (path, reason) in [
        (format!("/hls/{LESSON}/1080p/index.m3u8"), "no rendition"),
        (format!("/hls/{LESSON}/360p/999.ts"), "segments"),
        (format!("/hls/{LESSON}/360p/-1.ts"), "no \"-1.ts\""),
        ("/hls/no-such-lesson/master.m3u8".to_string(), "no lesson"),
        ("/hls/..%2F..%2Fetc/master.m3u8".to_string(), "not a lesson"),
        ("/hls/../../etc/passwd".to_string(), "no "),
        (format!("/files/{LESSON}/7"), "attachments"),
        ("/etc/passwd".to_string(), "no /etc/passwd"),
    ] {
        let a = device.get(addr, &path).await;
        assert_eq!(a.status, StatusCode::NOT_FOUND, "{path}");
        assert!(a.text().contains(reason), "{path}: {}", a.text());
    }
    let post = device.send(addr, Method::POST, "/api/status", &[], Bytes::new()).await;
    assert_eq!(post.status, StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(post.header("allow"), "GET, HEAD");

    // The page and its assets come from the station.
    let page = device.get(addr, "/").await;
    assert_eq!(page.header("content-type"), "text/html; charset=utf-8");
    assert!(page.text().contains("村级学习站"));
    let hls_js = device.get(addr, "/assets/hls.min.js").await;
    assert_eq!(hls_js.status, StatusCode::OK);
    assert!(hls_js.body.len() > 100_000);

    // The JSON API.
    let lessons = device.get(addr, "/api/lessons").await.json();
    let l = &lessons["lessons"][0];
    assert_eq!(l["id"], LESSON);
    assert_eq!(l["title"], "党史学习 第一课");
    assert_eq!(l["ready"], true);
    assert_eq!(l["hls"], format!("/hls/{LESSON}/master.m3u8"));
    assert_eq!(l["renditions"].as_array().unwrap().len(), 3);
    assert_eq!(l["attachments"][0]["name"], HANDOUT_NAME);
    assert_eq!(l["attachments"][0]["url"], format!("/files/{LESSON}/0"));
    let status = device.get(addr, "/api/status").await.json();
    assert_eq!(status["station"], "village-0001");
    assert_eq!(status["sync"]["synced"], true);
    assert_eq!(status["sync"]["lessons_ready"], 1);
    // This station follows no live channel.
    assert_eq!(status["live"], json!({ "on_air": 0, "channels": [] }));
    assert!(status["disk"]["used_bytes"].as_u64().unwrap() >= m.content_size());
    let schedule = device.get(addr, "/api/schedule").await.json();
    assert_eq!(schedule["showings"], json!([]));

    // ffprobe plays the station's URL: H.264, and the lesson's duration.
    let url = format!("http://{addr}/hls/{LESSON}/360p/index.m3u8");
    let out = Command::new("ffprobe")
        .args([
            "-v",
            "error",
            "-show_entries",
            "stream=codec_name,codec_type:format=duration",
            "-of",
            "json",
            &url,
        ])
        .output()
        .expect("ffprobe (Debian's ffmpeg package; scripts/ensure-deps.sh installs it)");
    assert!(
        out.status.success(),
        "ffprobe {url}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let probe: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let codecs: Vec<_> = probe["streams"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["codec_name"].as_str().unwrap_or(""))
        .collect();
    assert!(codecs.contains(&"h264"), "{probe}");
    assert!(codecs.contains(&"aac"), "{probe}");
    let duration: f64 = probe["format"]["duration"].as_str().unwrap().parse().unwrap();
    assert!(
        (duration - f64::from(SOURCE_SECONDS)).abs() < 0.5,
        "ffprobe reads {duration} s of a {SOURCE_SECONDS} s lesson"
    );
    // And the master playlist: every variant.
    let master_url = format!("http://{addr}/hls/{LESSON}/master.m3u8");
    let out = Command::new("ffprobe")
        .args([
            "-v",
            "error",
            "-show_entries",
            "program=program_id:stream=codec_name",
            "-of",
            "json",
            &master_url,
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "ffprobe {master_url}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let probe: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(probe["programs"].as_array().unwrap().len(), 3, "{probe}");
    setup.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lan_viewing_records_from_two_devices_and_attendance() {
    // A showing 10 minutes from now, so attendance can be entered.
    let mut setup = lan::start(Duration::from_secs(60), Some(600)).await;
    let addr = setup.addr();
    let m = setup.manifest.clone();
    let vlc = Device::new([127, 0, 0, 2], "VLC/3.0.18 LibVLC/3.0.18");
    let phone = Device::new(
        [127, 0, 0, 3],
        "Mozilla/5.0 (Linux; Android 13; M2101K6C) AppleWebKit/537.36 Chrome/120.0 Mobile Safari/537.36",
    );
    let before = clock::now();
    // VLC plays 360p: every segment, the second one twice and once in a range.
    let r360 = &m.renditions[0];
    for i in (0..r360.segments.len()).chain([1]) {
        assert_eq!(
            vlc.get(addr, &format!("/hls/{LESSON}/360p/{i}.ts")).await.status,
            StatusCode::OK
        );
    }
    vlc.send(
        addr,
        Method::GET,
        &format!("/hls/{LESSON}/360p/1.ts"),
        &[("range", "bytes=0-99")],
        Bytes::new(),
    )
    .await;
    // The phone plays the first segment of the audio rendition; HEAD and playlists do not count.
    assert_eq!(
        phone.get(addr, &format!("/hls/{LESSON}/audio/0.ts")).await.status,
        StatusCode::OK
    );
    phone
        .send(
            addr,
            Method::HEAD,
            &format!("/hls/{LESSON}/240p/0.ts"),
            &[],
            Bytes::new(),
        )
        .await;
    phone.get(addr, &format!("/hls/{LESSON}/240p/index.m3u8")).await;
    assert_eq!(setup.lan.as_ref().unwrap().sessions(), 2);
    let status = vlc.get(addr, "/api/status").await.json();
    assert_eq!(status["playing"], 2);
    assert!(
        setup.records.lock().is_empty(),
        "sessions in progress are not records yet"
    );

    // Attendance for the scheduled showing: checked, then taken once.
    let showings = vlc.get(addr, "/api/schedule").await.json();
    let showing = &showings["showings"][0];
    assert_eq!(showing["lesson"], LESSON);
    assert_eq!(showing["state"], "ready");
    assert_eq!(showing["attendance_open"], true);
    let show_at = showing["show_at"].as_u64().unwrap();
    let post = |body: serde_json::Value| {
        let vlc = vlc.clone();
        async move { vlc.post_json(addr, "/api/attendance", &body).await }
    };
    for (body, status, field) in [
        (
            json!({"lesson": LESSON, "show_at": show_at}),
            StatusCode::BAD_REQUEST,
            "present",
        ),
        (
            json!({"lesson": LESSON, "show_at": show_at, "present": "many"}),
            StatusCode::BAD_REQUEST,
            "present",
        ),
        (
            json!({"lesson": LESSON, "show_at": show_at, "present": 1, "names": ["甲", "乙"]}),
            StatusCode::BAD_REQUEST,
            "names",
        ),
        (
            json!({"lesson": LESSON, "show_at": show_at + 1, "present": 3}),
            StatusCode::NOT_FOUND,
            "show_at",
        ),
        (
            json!({"lesson": "other-lesson", "show_at": show_at, "present": 3}),
            StatusCode::NOT_FOUND,
            "show_at",
        ),
    ] {
        let a = post(body.clone()).await;
        assert_eq!(a.status, status, "{body}: {}", a.text());
        let v = a.json();
        assert_eq!(v["field"], field, "{body}: {v}");
        assert!(!v["error"].as_str().unwrap().is_empty());
    }
    let not_json = vlc
        .send(
            addr,
            Method::POST,
            "/api/attendance",
            &[],
            Bytes::from_static(b"present=3"),
        )
        .await;
    assert_eq!(not_json.status, StatusCode::BAD_REQUEST);
    assert_eq!(not_json.json()["field"], "body");
    let ok = post(json!({"lesson": LESSON, "show_at": show_at, "present": 23, "names": ["张三", "李四"]})).await;
    assert_eq!(ok.status, StatusCode::CREATED, "{}", ok.text());
    let again = post(json!({"lesson": LESSON, "show_at": show_at, "present": 24})).await;
    assert_eq!(again.status, StatusCode::CONFLICT, "{}", again.text());
    assert!(again.json()["error"].as_str().unwrap().contains("23 present"));
    let showings = vlc.get(addr, "/api/schedule").await.json();
    assert_eq!(showings["showings"][0]["attendance"]["present"], 23);
    assert_eq!(showings["showings"][0]["attendance"]["names"], json!(["张三", "李四"]));
    assert_eq!(showings["showings"][0]["attendance_open"], false);
    {
        let records = setup.records.lock();
        assert_eq!(records.len(), 1, "the form is one record at once");
        let a = &records[0];
        assert_eq!(a.lesson.as_str(), LESSON);
        assert_eq!(a.attendance, Some(23));
        assert_eq!(a.started_at.0, show_at);
        assert_eq!(a.device, "attendance-form 127.0.0.2");
    }

    // The server stops: both sessions end and are recorded.
    setup.stop_lan();
    let after = clock::now();
    let mut records = setup.records.lock().clone();
    records.retain(|v| v.attendance.is_none());
    // "phone 127.0.0.3" sorts before "player 127.0.0.2".
    records.sort_by(|a, b| a.device.cmp(&b.device));
    assert_eq!(records.len(), 2, "{records:?}");
    let seconds = |r: &courseway_content::Rendition, n: usize| {
        let ms: u64 = r.segments[..n].iter().map(|s| u64::from(s.duration_ms)).sum();
        ((ms + 500) / 1000) as u32
    };
    let (p, v) = (&records[0], &records[1]);
    assert_eq!(v.device, "player 127.0.0.2");
    assert_eq!((v.lesson.as_str(), v.rendition.as_str()), (LESSON, "360p"));
    assert_eq!(
        v.seconds_watched,
        seconds(r360, r360.segments.len()),
        "each segment counted once"
    );
    assert_eq!(v.seconds_watched, SOURCE_SECONDS, "the whole lesson");
    assert_eq!(p.device, "phone 127.0.0.3");
    assert_eq!(p.rendition, "audio");
    assert_eq!(p.seconds_watched, seconds(&m.renditions[2], 1));
    for r in [v, p] {
        assert!(r.started_at >= before && r.started_at <= after);
        assert_eq!(r.attendance, None);
    }
    setup.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lan_a_playback_idle_for_the_configured_time_is_recorded() {
    let setup = lan::start(Duration::from_secs(1), None).await;
    let addr = setup.addr();
    let vlc = Device::new([127, 0, 0, 4], "Lavf/59.27.100");
    for i in 0..2 {
        vlc.get(addr, &format!("/hls/{LESSON}/240p/{i}.ts")).await;
    }
    let records = setup.records.clone();
    wait_until("the idle session's record", Duration::from_secs(30), || {
        records.lock().len() == 1
    })
    .await;
    let r = records.lock()[0].clone();
    assert_eq!((r.rendition.as_str(), r.device.as_str()), ("240p", "player 127.0.0.4"));
    assert_eq!(r.seconds_watched, 8);
    assert_eq!(setup.lan.as_ref().unwrap().sessions(), 0);
    setup.shutdown().await;
}

/// A station whose admin set an attendance PIN: a phone on the LAN without it, or guessing, cannot
/// enter (or pre-empt) a showing's count; the admin's form with it is taken; guessing locks the
/// form.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lan_attendance_with_a_pin_takes_only_the_admins_form() {
    let mut setup = lan::start(Duration::from_secs(60), Some(600)).await;
    setup.stop_lan();
    let records = setup.records.clone();
    let mut config = LanConfig::new(loopback(), std::sync::Arc::new(move |v| records.lock().push(v)));
    config.attendance_pin = Some("2468".into());
    let lan = setup.station.serve_lan(config).await.unwrap();
    let addr = lan.local_addr();
    let phone = Device::new(
        [127, 0, 0, 3],
        "Mozilla/5.0 (Linux; Android 13; M2101K6C) AppleWebKit/537.36 Chrome/120.0 Mobile Safari/537.36",
    );
    assert_eq!(phone.get(addr, "/api/status").await.json()["attendance_pin"], true);
    let show_at = phone.get(addr, "/api/schedule").await.json()["showings"][0]["show_at"]
        .as_u64()
        .unwrap();
    let post = |present: u32, pin: Option<&str>| {
        let mut body = json!({"lesson": LESSON, "show_at": show_at, "present": present});
        if let Some(pin) = pin {
            body["pin"] = json!(pin);
        }
        let phone = phone.clone();
        async move { phone.post_json(addr, "/api/attendance", &body).await }
    };
    for pin in [None, Some("1234")] {
        let refused = post(99, pin).await;
        assert_eq!(refused.status, StatusCode::FORBIDDEN, "{pin:?}: {}", refused.text());
        assert_eq!(refused.json()["field"], "pin");
    }
    let taken = post(31, Some("2468")).await;
    assert_eq!(taken.status, StatusCode::CREATED, "{}", taken.text());
    let again = post(32, Some("2468")).await;
    assert_eq!(
        again.status,
        StatusCode::CONFLICT,
        "still once per showing: {}",
        again.text()
    );
    // Guessing: five wrong PINs in a row lock the form, even for the right one.
    for _ in 0..courseway_station::lan::attendance::PIN_TRIES {
        assert_eq!(post(99, Some("0000")).await.status, StatusCode::FORBIDDEN);
    }
    let locked = post(31, Some("2468")).await;
    assert_eq!(locked.status, StatusCode::TOO_MANY_REQUESTS, "{}", locked.text());
    assert_eq!(locked.json()["field"], "pin");
    let attendance: Vec<_> = setup.records.lock().iter().filter_map(|v| v.attendance).collect();
    assert_eq!(attendance, [31], "only the admin's form became a record");
    drop(lan);
    setup.shutdown().await;
}

/// The whole path of a viewing: segments played from the station's LAN server, the idle session
/// recorded into the station's outbox (`Station::viewing_sink`, as `courseway station` and the
/// demo run it), sent up as a report and stored at the origin.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn report_a_playback_on_the_lan_reaches_the_origin_through_the_outbox() {
    let mut setup = lan::start(Duration::from_secs(1), None).await;
    setup.stop_lan();
    let mut config = LanConfig::new(loopback(), setup.station.viewing_sink());
    config.idle_after = Duration::from_secs(1);
    let lan = setup.station.serve_lan(config).await.unwrap();
    let stb = Device::new([127, 0, 0, 5], "Lavf/59.27.100");
    for i in 0..3 {
        let segment = stb.get(lan.local_addr(), &format!("/hls/{LESSON}/240p/{i}.ts")).await;
        assert_eq!(segment.status, 200);
    }
    let origin = &setup.origin;
    wait_until("the viewing stored at the origin", Duration::from_secs(60), || {
        origin.viewings().unwrap().len() == 1
    })
    .await;
    let (station, v) = origin.viewings().unwrap().remove(0);
    assert_eq!(station.as_str(), "village-0001");
    assert_eq!(v.lesson.as_str(), LESSON);
    assert_eq!((v.rendition.as_str(), v.device.as_str()), ("240p", "player 127.0.0.5"));
    assert_eq!(v.seconds_watched, 12);
    // Acknowledged end to end: nothing left in the station's outbox.
    let outbox = setup.station.outbox();
    wait_until(
        "the outbox emptied by the acknowledgement",
        Duration::from_secs(30),
        || outbox.depth() == 0,
    )
    .await;
    drop(lan);
    setup.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lan_a_lesson_not_yet_held_whole_is_404_with_its_progress() {
    // A station behind a slow line (200 kbit/s) fetching a 3 MB synthetic lesson: while it downloads, the
    // lesson is listed, not ready, and its URLs say why they are not served.
    let dir = tempfile::tempdir().unwrap();
    let keys = courseway::topology::DeploymentKeys::generate().unwrap();
    let origin_name = NodeName::new("origin").unwrap();
    let origin = start_origin(dir.path(), &keys).await;
    let mut spec = SyntheticLesson::standard(LessonId::new("slow-lesson").unwrap(), 3, 4);
    spec.renditions = vec![(
        "r0".into(),
        RenditionKind::Video {
            width: 640,
            height: 360,
        },
        1_500_000,
    )];
    let lesson = spec.build();
    origin.publish(&[(lesson.manifest.clone(), &lesson.chunks)]).unwrap();
    let name = NodeName::new("village-slow").unwrap();
    let mut config = StationConfig::new(
        name.clone(),
        loopback(),
        StoreConfig::new(dir.path().join("station"), 1 << 30),
        UpstreamConfig::new(vec![Parent {
            name: origin_name,
            addr: origin.local_addr().unwrap(),
        }]),
    );
    config.rate_cap = Some(RateLimit::from_bits_per_sec(200_000, 100).unwrap());
    let station = Station::start(config, keys.enroll(Role::Station, &name).unwrap(), keys.root_public())
        .await
        .unwrap();
    let lan = station
        .serve_lan(LanConfig::new(loopback(), std::sync::Arc::new(|_| {})))
        .await
        .unwrap();
    wait_until("the manifest at the station", Duration::from_secs(30), || {
        !station.lessons().is_empty()
    })
    .await;
    let device = tv();
    let listed = device.get(lan.local_addr(), "/api/lessons").await.json();
    assert_eq!(listed["lessons"][0]["id"], "slow-lesson");
    assert_eq!(listed["lessons"][0]["ready"], false);
    assert_eq!(listed["lessons"][0]["hls"], json!(null));
    for path in [
        "/hls/slow-lesson/master.m3u8",
        "/hls/slow-lesson/r0/0.ts",
        "/files/slow-lesson/0",
    ] {
        let a = device.get(lan.local_addr(), path).await;
        assert_eq!(a.status, StatusCode::NOT_FOUND, "{path}");
        assert!(
            a.text().contains("not ready at this station yet"),
            "{path}: {}",
            a.text()
        );
    }
    drop(lan);
    station.shutdown().await;
    origin.shutdown();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lan_a_station_restarted_with_no_parent_reachable_still_serves_what_it_holds() {
    // The village line is down and the station PC was restarted: the page must still play
    // what the store holds. The manifests were kept in the store when they were first fetched.
    let dir = tempfile::tempdir().unwrap();
    let keys = courseway::topology::DeploymentKeys::generate().unwrap();
    let origin_name = NodeName::new("origin").unwrap();
    let origin = start_origin(dir.path(), &keys).await;
    let lesson = SyntheticLesson::standard(LessonId::new("kept-lesson").unwrap(), 5, 3).build();
    let gone = SyntheticLesson::standard(LessonId::new("withdrawn-lesson").unwrap(), 6, 1).build();
    origin
        .publish(&[
            (lesson.manifest.clone(), &lesson.chunks),
            (gone.manifest.clone(), &gone.chunks),
        ])
        .unwrap();
    let name = NodeName::new("village-offline").unwrap();
    let parent = Parent {
        name: origin_name,
        addr: origin.local_addr().unwrap(),
    };
    let config = || {
        let mut c = StationConfig::new(
            name.clone(),
            loopback(),
            StoreConfig::new(dir.path().join("station"), 1 << 30),
            UpstreamConfig::new(vec![parent.clone()]),
        );
        c.retry_after = Duration::from_millis(200);
        c
    };
    let station = Station::start(config(), keys.enroll(Role::Station, &name).unwrap(), keys.root_public())
        .await
        .unwrap();
    let mut status = station.status();
    wait_until("both lessons at the station", Duration::from_secs(30), || {
        status.borrow_and_update().lessons_ready == 2
    })
    .await;
    let kept = |store: &courseway_store::Store, id: &str| {
        store
            .get_meta(format!("station/manifest/{id}").as_bytes())
            .unwrap()
            .is_some()
    };
    assert!(kept(station.store(), "kept-lesson") && kept(station.store(), "withdrawn-lesson"));
    // A withdrawn lesson's kept manifest goes with it.
    origin.withdraw(std::slice::from_ref(&gone.manifest.id)).unwrap();
    wait_until("the withdrawal at the station", Duration::from_secs(30), || {
        station.lessons().len() == 1
    })
    .await;
    wait_until("the withdrawn manifest dropped", Duration::from_secs(30), || {
        !kept(station.store(), "withdrawn-lesson")
    })
    .await;
    assert!(kept(station.store(), "kept-lesson"));
    station.shutdown().await;
    origin.shutdown();
    drop(origin);

    let station = Station::start(config(), keys.enroll(Role::Station, &name).unwrap(), keys.root_public())
        .await
        .unwrap();
    let lan = station
        .serve_lan(LanConfig::new(loopback(), std::sync::Arc::new(|_| {})))
        .await
        .unwrap();
    wait_until("the kept manifest read back", Duration::from_secs(30), || {
        !station.lessons().is_empty()
    })
    .await;
    assert_eq!(station.lessons().len(), 1, "only the lesson still published");
    let gone_url = device_get_status(lan.local_addr(), "/hls/withdrawn-lesson/master.m3u8").await;
    assert_eq!(gone_url, StatusCode::NOT_FOUND);
    let device = tv();
    let master = device.get(lan.local_addr(), "/hls/kept-lesson/master.m3u8").await;
    assert_eq!(master.status, StatusCode::OK, "{}", master.text());
    let r = &lesson.manifest.renditions[1];
    let got = device
        .get(lan.local_addr(), &format!("/hls/kept-lesson/{}/2.ts", r.name))
        .await;
    let want: Vec<u8> = r.segments[2]
        .chunks
        .iter()
        .flat_map(|c| lesson.chunks[&c.id].iter().copied())
        .collect();
    assert!(got.body == want, "segment 2 of {} byte for byte from the store", r.name);
    let attachment = device.get(lan.local_addr(), "/files/kept-lesson/0").await;
    assert_eq!(attachment.body.len() as u64, lesson.manifest.attachments[0].size());
    drop(lan);
    station.shutdown().await;
}

async fn device_get_status(addr: std::net::SocketAddr, path: &str) -> StatusCode {
    tv().get(addr, path).await.status
}
