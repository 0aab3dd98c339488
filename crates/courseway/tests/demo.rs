//! The demo command runs a real tree end to end and reports its figures as JSON.

use std::process::Command;

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
        .args(["--exit-when-synced", "--json", "--dir"])
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
        .args(["--lesson-seconds", "8", "--exit-when-synced", "--json", "--dir"])
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
