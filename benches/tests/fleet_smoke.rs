//! The fleet harness's core, small, so it cannot rot: 10 stations under 2 towns under 1 city
//! relay, every station behind its emulated line; every station must hold the lesson byte for
//! byte and the origin must send it once. No timing is checked.

use std::time::Duration;

use courseway_benches::fleet::{self, FleetConfig};

fn config() -> FleetConfig {
    FleetConfig {
        cities: 1,
        towns: 2,
        stations: 10,
        rate_bps: 8_000_000,
        delay: Duration::from_millis(5),
        loss: 0.01,
        queue: Duration::from_millis(200),
        memtable_bytes: 512 * 1024,
        stations_know_their_line: true,
        timeout: Duration::from_secs(300),
        lesson_seed: 3,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_station_of_a_small_fleet_gets_the_lesson_byte_for_byte() {
    let dir = tempfile::tempdir().unwrap();
    let lesson = fleet::lesson(600_000, config().lesson_seed);
    let out = fleet::courseway::run(&config(), &lesson, dir.path(), 0).await.unwrap();
    assert_eq!(out.times.complete(), 10, "{out:?}");
    assert_eq!(out.times.slow.len(), 2, "stations 5 and 10 are on the slow line");
    assert!(out.identical, "{} chunks differ", out.mismatches);
    assert_eq!(out.origin_chunk_bytes_sent, fleet::lesson_bytes(&lesson));
    assert_eq!(out.origin_duplicate_sends, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_nginx_tier_delivers_the_same_bytes() {
    assert!(
        std::process::Command::new("nginx").arg("-v").output().is_ok(),
        "nginx is not runnable: install Debian's nginx-light (scripts/ensure-deps.sh does)"
    );
    let dir = tempfile::tempdir().unwrap();
    let lesson = fleet::lesson(600_000, 4);
    let out = fleet::nginx::run(&config(), &lesson, dir.path()).await.unwrap();
    assert_eq!(out.failed_stations, 0);
    assert_eq!(out.times.complete(), 10);
    assert!(out.identical, "{} chunks differ", out.mismatches);
    // proxy_cache_lock: the single city cache asks the origin once per file.
    assert_eq!(out.origin_bytes_sent, fleet::lesson_bytes(&lesson));
}
