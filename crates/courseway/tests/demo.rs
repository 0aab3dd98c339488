//! The demo command runs end to end and leaves a station store that checks clean.

use std::process::Command;

#[test]
fn demo_runs_and_its_station_store_checks_clean() {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_courseway"))
        .args(["demo", "--lessons", "2", "--segments", "3", "--dir"])
        .arg(dir.path())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "demo failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("2 lessons ready"), "{stdout}");

    // The store check command agrees, from a separate process.
    let check = Command::new(env!("CARGO_BIN_EXE_courseway"))
        .args(["store", "check"])
        .arg(dir.path().join("station"))
        .output()
        .unwrap();
    let report = String::from_utf8_lossy(&check.stdout);
    assert!(check.status.success(), "{report}");
    assert!(report.contains("0 corrupt"), "{report}");
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
