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

/// The remote enters attendance for today's showing: to its button, Enter, digits, Enter.
async fn enter_attendance(browser: &Browser, present: &str) {
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
    // button, so the remote has somewhere to move from.
    let mut setup = lan::start(Duration::from_secs(60), Some(600)).await;
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
    enter_attendance(&browser, "23").await;
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
