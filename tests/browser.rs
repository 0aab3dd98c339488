//! Playback in a real browser: a station with a ready lesson made by GStreamer serves its TV
//! page; headless Chromium (Debian's package, driven by chromedriver) opens it, the "remote"
//! moves to the lesson with arrow keys and presses Enter, and the video element must play past
//! 5 s. Once with hls.js (Media Source Extensions: what most TVs and phones get) and once with
//! the browser's own HLS player (what Safari and some set-top boxes get), then Back/Escape
//! returns to the page with the focus on the lesson. Then the remote enters the showing's
//! attendance through the page's form.

use std::time::Duration;

use courseway_tests::lan::{self, LESSON};
use courseway_tests::webdriver::{Browser, ARROW_DOWN, ARROW_LEFT, ARROW_RIGHT, ENTER, ESCAPE};
use serde_json::json;

/// What the page shows, for a failure message.
const REPORT: &str = "var v = document.getElementById('video'); return {
    focused: document.activeElement && (document.activeElement.getAttribute('data-key') || document.activeElement.id),
    player: v.getAttribute('data-player'), time: v.currentTime, ready: v.readyState, paused: v.paused,
    error: v.error && (v.error.code + ' ' + v.error.message), msg: document.getElementById('player-msg').textContent,
    lessons: document.querySelectorAll('#lessons [data-lesson]').length };";

async fn play_with_the_remote(browser: &Browser, page: &str, player: &str) {
    browser.goto(&format!("{page}?player={player}")).await;
    browser
        .wait_for(
            "the lesson on the page",
            Duration::from_secs(30),
            "return document.querySelectorAll('#lessons [data-lesson]').length === 1 && document.activeElement !== document.body;",
            REPORT,
        )
        .await;
    // The page focuses its first item (today's showing); the remote moves right to the lesson.
    let focused_lesson = format!("return document.activeElement.getAttribute('data-lesson') === '{LESSON}';");
    let first = browser
        .eval("return document.activeElement.getAttribute('data-key');")
        .await;
    assert!(
        first
            .as_str()
            .is_some_and(|k| k.starts_with(&format!("show-{LESSON}-"))),
        "the page should focus today's showing first, not {first}"
    );
    let mut presses = 0;
    while browser.eval(&focused_lesson).await != json!(true) {
        presses += 1;
        assert!(
            presses <= 5,
            "the arrow keys never reach the lesson: {}",
            browser.eval(REPORT).await
        );
        browser.press(ARROW_RIGHT).await;
    }
    browser.press(ENTER).await;
    browser
        .wait_for(
            "the video to play past 5 s",
            Duration::from_secs(60),
            "var v = document.getElementById('video'); return v.currentTime > 5 && !v.error;",
            REPORT,
        )
        .await;
    let state = browser.eval(REPORT).await;
    assert_eq!(state["player"], player_attr(player), "{state}");
    assert_eq!(state["error"], json!(null), "{state}");
    // Back returns to the page, focus on the lesson that was playing.
    browser.press(ESCAPE).await;
    browser
        .wait_for(
            "the page again",
            Duration::from_secs(10),
            &format!(
                "return document.getElementById('player').hidden && {}",
                focused_lesson.trim_start_matches("return ")
            ),
            REPORT,
        )
        .await;
}

/// The remote enters attendance for today's showing: to its button, Enter, digits, (down to
/// the PIN, its digits,) Enter.
async fn enter_attendance(browser: &Browser, present: &str, pin: Option<&str>) {
    browser.press(ARROW_LEFT).await;
    let on_button = "var k = document.activeElement.getAttribute('data-key'); return !!k && k.indexOf('att-') === 0;";
    let mut presses = 0;
    while browser.eval(on_button).await != json!(true) {
        presses += 1;
        assert!(
            presses <= 5,
            "the arrow keys never reach the attendance button: {}",
            browser.eval(REPORT).await
        );
        browser.press(ARROW_DOWN).await;
    }
    browser.press(ENTER).await;
    browser
        .wait_for(
            "the attendance form",
            Duration::from_secs(10),
            "return !document.getElementById('attendance').hidden && document.activeElement.id === 'present';",
            REPORT,
        )
        .await;
    for digit in present.chars() {
        browser.press(&digit.to_string()).await;
    }
    if let Some(pin) = pin {
        browser.press(ARROW_DOWN).await;
        browser
            .wait_for(
                "the PIN field, one press below the count",
                Duration::from_secs(10),
                "return document.activeElement.id === 'pin';",
                REPORT,
            )
            .await;
        for digit in pin.chars() {
            browser.press(&digit.to_string()).await;
        }
    }
    browser.press(ENTER).await;
    browser
        .wait_for(
            "the form to be taken and the schedule to show it",
            Duration::from_secs(10),
            &format!(
                "return document.getElementById('attendance').hidden && document.getElementById('schedule').textContent.indexOf('已登记 {present} 人') >= 0;"
            ),
            "return document.getElementById('attendance-msg').textContent;",
        )
        .await;
}

fn player_attr(player: &str) -> serde_json::Value {
    json!(if player == "hlsjs" { "hls.js" } else { "native" })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn browser_plays_a_ready_lesson_from_the_tv_page() {
    // A showing in 10 minutes: today's schedule has an item (focused first) and an attendance
    // button, so the remote has somewhere to move from. The admin set an attendance PIN.
    let mut setup = lan::start(Duration::from_secs(60), Some(600)).await;
    setup.stop_lan();
    let records = setup.records.clone();
    let mut config = courseway_station::lan::LanConfig::new(
        courseway_tests::loopback(),
        std::sync::Arc::new(move |v| records.lock().push(v)),
    );
    config.attendance_pin = Some("2468".into());
    setup.lan = Some(setup.station.serve_lan(config).await.unwrap());
    let page = setup.lan.as_ref().unwrap().page_url();
    let browser = Browser::start().await;
    let support = browser
        .eval(
            "var v = document.createElement('video'); return {
                mse_h264: !!window.MediaSource && MediaSource.isTypeSupported('video/mp4; codecs=\"avc1.4d401f,mp4a.40.2\"'),
                native_hls: v.canPlayType('application/vnd.apple.mpegurl') };",
        )
        .await;
    eprintln!("chromium: {support}");
    assert_eq!(
        support["mse_h264"], true,
        "Chromium cannot decode H.264 through MSE: {support}"
    );
    play_with_the_remote(&browser, &page, "hlsjs").await;
    if support["native_hls"] != "" {
        play_with_the_remote(&browser, &page, "native").await;
    }
    enter_attendance(&browser, "23", Some("2468")).await;
    browser.close().await;

    // Each playback became a viewing record when the server stopped.
    setup.stop_lan();
    let mut records = setup.records.lock().clone();
    let forms: Vec<_> = records.iter().filter(|r| r.attendance.is_some()).cloned().collect();
    assert_eq!(forms.len(), 1, "{records:?}");
    assert_eq!(forms[0].attendance, Some(23));
    assert_eq!(forms[0].device, "attendance-form 127.0.0.1");
    records.retain(|r| r.attendance.is_none());
    assert!(!records.is_empty());
    for r in &records {
        assert_eq!(r.lesson.as_str(), LESSON);
        assert!(r.device.starts_with("pc 127.0.0.1"), "{r:?}");
        assert!(r.seconds_watched >= 4, "{r:?}");
    }
    setup.shutdown().await;
}

/// The live channel: a station following a GStreamer test feed at its origin shows it on air
/// in `/api/status`; ffprobe reads its live playlist (H.264 and AAC); the remote moves to the
/// page's "watch live" button, Enter plays it in the page's hls.js player, and the video's
/// currentTime advances while the feed runs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn browser_plays_the_live_channel_from_the_tv_page() {
    use std::sync::Arc;

    use courseway::topology::DeploymentKeys;
    use courseway_content::{ChannelId, NodeName};
    use courseway_media::live::{CutSegment, LiveIngest, LiveIngestConfig, LiveInput};
    use courseway_node::{Parent, UpstreamConfig};
    use courseway_proto::Role;
    use courseway_station::lan::LanConfig;
    use courseway_station::{Station, StationConfig};
    use courseway_store::StoreConfig;
    use courseway_tests::http::Device;
    use courseway_tests::{loopback, start_origin, wait_until};

    let channel = ChannelId::new("city-live").unwrap();
    let dir = tempfile::tempdir().unwrap();
    let keys = DeploymentKeys::generate().unwrap();
    let origin = Arc::new(start_origin(dir.path(), &keys).await);
    let name = NodeName::new("village-0001").unwrap();
    let mut sc = StationConfig::new(
        name.clone(),
        loopback(),
        StoreConfig::new(dir.path().join("station"), 1 << 30),
        UpstreamConfig::new(vec![Parent {
            name: NodeName::new("origin").unwrap(),
            addr: origin.local_addr().unwrap(),
        }]),
    );
    sc.live_channels = vec![channel.clone()];
    let station = Station::start(sc, keys.enroll(Role::Station, &name).unwrap(), keys.root_public())
        .await
        .unwrap();
    let lan = station
        .serve_lan(LanConfig::new(loopback(), Arc::new(|_| {})))
        .await
        .unwrap();

    let mut config = LiveIngestConfig::new(
        LiveInput::TestPattern {
            width: 320,
            height: 240,
            fps: 25,
        },
        dir.path().join("feed"),
    );
    config.segment = std::time::Duration::from_secs(1);
    config.test_video_kbps = 300;
    // The feed as the origin runs it: `epoch` counts its restarts, its indices carry on.
    let next_index = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let start_feed = |epoch: u32| {
        let (publisher, published, ingest) = (origin.clone(), channel.clone(), config.clone());
        let next_index = next_index.clone();
        let base = next_index.load(std::sync::atomic::Ordering::SeqCst);
        LiveIngest::start(&config, move |mut cut: CutSegment| {
            cut.index += base;
            cut.epoch = epoch;
            next_index.fetch_max(cut.index + 1, std::sync::atomic::Ordering::SeqCst);
            courseway::live::publish_cut(&publisher, &published, &ingest, &cut)
                .expect("the origin publishes a live segment");
        })
        .expect("the live ingest starts")
    };
    let feed = start_feed(0);
    wait_until(
        "the station to hold three live segments",
        Duration::from_secs(60),
        || station.live_completions(&channel).len() >= 3,
    )
    .await;

    // The page's data: on air, its newest segment, its rendition and playlist.
    let status = Device::new([127, 0, 0, 1], "test")
        .get(lan.local_addr(), "/api/status")
        .await
        .json();
    let live = &status["live"]["channels"][0];
    assert_eq!(live["channel"], "city-live", "{status}");
    assert_eq!(live["on_air"], true, "{status}");
    assert!(live["newest_sequence"].as_u64().is_some(), "{status}");
    assert!(live["seconds_since_last_segment"].as_f64().is_some(), "{status}");
    assert_eq!(live["renditions"], json!(["source"]));
    assert_eq!(live["playlist"], "/live/city-live/source.m3u8");
    assert_eq!(status["live"]["on_air"], 1);

    // ffprobe reads the station's live playlist: H.264 video and AAC audio.
    let url = format!("http://{}/live/city-live/source.m3u8", lan.local_addr());
    let probe_url = url.clone();
    let probe = tokio::task::spawn_blocking(move || {
        std::process::Command::new("timeout")
            .args([
                "60",
                "ffprobe",
                "-v",
                "error",
                "-show_entries",
                "stream=codec_name,codec_type",
                "-of",
                "csv=p=0",
            ])
            .arg(&probe_url)
            .output()
    })
    .await
    .unwrap()
    .expect("ffprobe runs (Debian package ffmpeg)");
    let streams = String::from_utf8_lossy(&probe.stdout).to_string();
    eprintln!("ffprobe {url}: {}", streams.trim().replace('\n', "; "));
    assert!(
        probe.status.success(),
        "ffprobe refused {url}: {}",
        String::from_utf8_lossy(&probe.stderr)
    );
    assert!(
        streams.contains("h264,video") && streams.contains("aac,audio"),
        "ffprobe saw {streams:?}"
    );

    // The remote: to the "watch live" button, Enter, and the live channel plays.
    let browser = Browser::start().await;
    browser.goto(&format!("{}?player=hlsjs", lan.page_url())).await;
    browser
        .wait_for(
            "the watch-live button on the page",
            Duration::from_secs(30),
            "return !!document.querySelector('[data-live=\"city-live\"]') && document.activeElement !== document.body;",
            REPORT,
        )
        .await;
    let on_live = "return document.activeElement.getAttribute('data-live') === 'city-live';";
    let mut presses = 0;
    while browser.eval(on_live).await != json!(true) {
        presses += 1;
        assert!(
            presses <= 6,
            "the arrow keys never reach the live button: {}",
            browser.eval(REPORT).await
        );
        browser.press(ARROW_DOWN).await;
    }
    browser.press(ENTER).await;
    browser
        .wait_for(
            "the live video to start",
            Duration::from_secs(60),
            "var v = document.getElementById('video'); return v.currentTime > 0 && !v.error;",
            REPORT,
        )
        .await;
    let started = browser.eval(REPORT).await;
    let t0 = started["time"].as_f64().unwrap();
    let wall = std::time::Instant::now();
    browser
        .wait_for(
            "the live video's currentTime to advance by 3 s",
            Duration::from_secs(60),
            &format!("var v = document.getElementById('video'); return v.currentTime > {t0} + 3 && !v.error;"),
            REPORT,
        )
        .await;
    let state = browser.eval(REPORT).await;
    eprintln!(
        "live in Chromium: currentTime {t0:.1} -> {:.1} s over {:.1} s of wall time",
        state["time"].as_f64().unwrap(),
        wall.elapsed().as_secs_f64()
    );
    assert_eq!(state["player"], "hls.js", "{state}");
    assert_eq!(state["error"], json!(null), "{state}");

    // The feed restarts (its timestamps start over): the playlist marks the discontinuity and
    // the player plays on through it.
    feed.stop().expect("the live ingest ran without error");
    let feed = start_feed(1);
    let device = Device::new([127, 0, 0, 1], "test");
    let marked_with_three_after = |text: &str| {
        let parts: Vec<&str> = text.split("#EXT-X-DISCONTINUITY\n").collect();
        parts.len() == 2 && parts[1].matches(".ts\n").count() >= 3
    };
    let mut playlist = String::new();
    for _ in 0..600 {
        playlist = device.get(lan.local_addr(), "/live/city-live/source.m3u8").await.text();
        if marked_with_three_after(&playlist) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        marked_with_three_after(&playlist),
        "the playlist marks where the feed restarted, once, with segments after it:\n{playlist}"
    );
    let t1 = browser.eval(REPORT).await["time"].as_f64().unwrap();
    browser
        .wait_for(
            "the live video to play on through the feed's restart",
            Duration::from_secs(60),
            &format!("var v = document.getElementById('video'); return v.currentTime > {t1} + 3 && !v.error;"),
            REPORT,
        )
        .await;
    assert!(
        browser
            .eval("return document.getElementById('player-title').textContent;")
            .await
            .as_str()
            .is_some_and(|t| t.contains("直播")),
        "the player names the live channel"
    );
    browser.close().await;
    feed.stop().expect("the live ingest ran without error");
    drop(lan);
    station.shutdown().await;
    origin.shutdown();
}
