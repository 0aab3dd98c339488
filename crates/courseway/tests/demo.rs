//! The demo command runs a real tree end to end and reports its figures as JSON.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

#[test]
fn demo_syncs_every_station_and_reports_json() {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_courseway"))
        .args([
            "demo",
            "--stations",
            "6",
            "--city-relays",
            "1",
            "--district-relays",
            "2",
            "--courseware",
            "synthetic",
            "--lesson-mb",
            "2",
        ])
        .args(["--far-villages", "0", "--exit-when-synced", "--json", "--dir"])
        .arg(dir.path())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "demo failed:\n{stdout}\n{stderr}");
    let last = stdout.lines().last().expect("a JSON line");
    let figures: serde_json::Value = serde_json::from_str(last).unwrap();
    assert_eq!(figures["stations"], 6);
    assert_eq!(figures["stations_complete"], 6);
    assert_eq!(figures["bad_chunks_served"], 0);
    assert_eq!(figures["first_tier_relays"], 1);
    let ratio = figures["egress_ratio"].as_f64().unwrap();
    assert!((0.999..=1.01).contains(&ratio), "egress ratio {ratio}");

    // The store check command agrees, from a separate process, on one station's store.
    let check = Command::new(env!("CARGO_BIN_EXE_courseway"))
        .args(["store", "check"])
        .arg(dir.path().join("village-0001"))
        .output()
        .unwrap();
    let report = String::from_utf8_lossy(&check.stdout);
    assert!(check.status.success(), "{report}");
    assert!(report.contains("0 corrupt"), "{report}");
}

#[test]
fn demo_publishes_a_gstreamer_made_video_lesson_to_every_station() {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_courseway"))
        .args([
            "demo",
            "--stations",
            "3",
            "--city-relays",
            "1",
            "--district-relays",
            "1",
        ])
        .args([
            "--lesson-seconds",
            "8",
            "--far-villages",
            "0",
            "--exit-when-synced",
            "--json",
            "--dir",
        ])
        .arg(dir.path())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "demo failed:\n{stdout}\n{stderr}");
    let figures: serde_json::Value = serde_json::from_str(stdout.lines().last().expect("a JSON line")).unwrap();
    assert_eq!(figures["courseware"], "video");
    // 720p, 360p and audio-only from a 720p source.
    assert_eq!(figures["renditions"], 3, "{figures}");
    assert_eq!(figures["stations_complete"], 3);
    assert_eq!(figures["bad_chunks_served"], 0);
    // Eight seconds of 720p at ~1.5 Mbit/s and the smaller rungs: well over half a megabyte.
    assert!(figures["lesson_bytes"].as_u64().unwrap() > 500_000, "{figures}");
}

#[test]
fn demo_refuses_bad_arguments_with_a_reason() {
    let out = Command::new(env!("CARGO_BIN_EXE_courseway"))
        .args(["demo", "--lesson-mb", "0"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--lesson-mb must be at least 1"));
}

#[test]
fn store_check_refuses_a_directory_that_is_not_a_store() {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_courseway"))
        .args(["store", "check"])
        .arg(dir.path())
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("is not a Courseway store"));
}

/// A demo process killed if the test fails before it ends (a failed test leaves no demo behind).
struct RunningDemo(Child);

impl Drop for RunningDemo {
    fn drop(&mut self) {
        if let Ok(None) = self.0.try_wait() {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}

/// `courseway status` against a running demo: every village listed under its district and town,
/// the far village (a 16 kbit/s line, its showing 35 minutes away, a 30-minute ready margin)
/// at risk with its reason; Ctrl-C (SIGINT) then stops the demo cleanly.
#[test]
fn demo_status_lists_every_station_and_the_far_village_at_risk_with_its_reason() {
    let dir = tempfile::tempdir().unwrap();
    let mut demo = RunningDemo(
        Command::new(env!("CARGO_BIN_EXE_courseway"))
            .args([
                "demo",
                "--stations",
                "4",
                "--city-relays",
                "1",
                "--district-relays",
                "2",
            ])
            .args(["--courseware", "synthetic", "--lesson-mb", "2"])
            .args([
                "--far-villages",
                "1",
                "--far-link-kbit",
                "16",
                "--showing-in-minutes",
                "35",
            ])
            .arg("--dir")
            .arg(dir.path())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap(),
    );
    let (lines_tx, lines) = std::sync::mpsc::channel::<String>();
    let stderr = demo.0.stderr.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if lines_tx.send(line).is_err() {
                break;
            }
        }
    });
    let mut seen = Vec::new();
    let mut wait_for = |what: &str| -> String {
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match lines.recv_timeout(left) {
                Ok(line) => {
                    seen.push(line.clone());
                    if line.contains(what) {
                        return line;
                    }
                }
                Err(_) => panic!("the demo never printed {what:?}; it printed:\n{}", seen.join("\n")),
            }
        }
    };
    let fleet = wait_for("fleet status:");
    let env = |key: &str| {
        fleet
            .split_whitespace()
            .find_map(|w| w.strip_prefix(key))
            .unwrap_or_else(|| panic!("no {key} in {fleet:?}"))
            .to_string()
    };
    let (server, token) = (env("COURSEWAY_SERVER="), env("COURSEWAY_TOKEN="));
    // The demo says so once the near villages hold the lesson and the far one's heartbeat
    // reached the origin.
    let at_risk = wait_for("at risk at");
    assert!(at_risk.contains("village-0004"), "{at_risk}");

    let status = Command::new(env!("CARGO_BIN_EXE_courseway"))
        .args(["status", "--server", &server, "--token", &token])
        .output()
        .unwrap();
    let table = String::from_utf8_lossy(&status.stdout);
    assert!(
        status.status.success(),
        "{table}{}",
        String::from_utf8_lossy(&status.stderr)
    );
    assert!(table.starts_with("4 stations online, 0 offline"), "{table}");
    for village in ["village-0001", "village-0002", "village-0003", "village-0004"] {
        let row = table
            .lines()
            .find(|l| l.contains(village))
            .unwrap_or_else(|| panic!("{village} missing from:\n{table}"));
        if village == "village-0004" {
            // Its reason names the lesson, how much is missing, the measured or capped rate and
            // the showing.
            assert!(row.contains("demo-lesson-001: "), "{row}");
            assert!(row.contains("UTC"), "{row}");
        } else {
            assert!(row.trim_end().ends_with('-'), "a near village at risk:\n{row}");
        }
    }
    // The showing's line: three villages ready, one at risk.
    let showing: Vec<&str> = table
        .lines()
        .filter(|l| l.contains("demo-lesson-001") && !l.contains("village"))
        .collect();
    let at_risk_total: u64 = showing
        .iter()
        .map(|l| l.split_whitespace().rev().nth(1).unwrap().parse::<u64>().unwrap())
        .sum();
    assert_eq!(at_risk_total, 1, "{table}");

    // Ctrl-C stops every node and the demo exits cleanly, whatever it is doing when the signal
    // comes (here: possibly still verifying stores after printing the at-risk line).
    let pid = demo.0.id().to_string();
    assert!(Command::new("kill").args(["-INT", &pid]).status().unwrap().success());
    let deadline = Instant::now() + Duration::from_secs(60);
    let code = loop {
        if let Some(code) = demo.0.try_wait().unwrap() {
            break code;
        }
        assert!(Instant::now() < deadline, "the demo did not stop on Ctrl-C");
        std::thread::sleep(Duration::from_millis(100));
    };
    assert!(code.success(), "the demo exited with {code} on Ctrl-C");
}
