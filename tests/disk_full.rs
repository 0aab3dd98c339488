//! Disk full (issue #8): a station whose store sits on a small tmpfs is given more lessons than
//! fit. It must say so (`courseway_station_disk_full`, the disk-full write counter, an error
//! log), stop downloading, keep serving what it holds, and finish by itself once the disk is
//! made larger, with nothing corrupt.
//!
//! Needs root (to mount the tmpfs): without it the test prints why and returns.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::Ordering;
use std::time::Duration;

use courseway::topology::DeploymentKeys;
use courseway_content::synthetic::{BuiltLesson, SyntheticLesson};
use courseway_content::{LessonId, NodeName};
use courseway_node::metrics::{self, MetricsHandler};
use courseway_node::{clock, Parent, UpstreamConfig};
use courseway_origin::{Origin, OriginConfig};
use courseway_proto::Role;
use courseway_station::{Station, StationConfig, DISK_PROBE};
use courseway_store::StoreConfig;
use courseway_tests::{loopback, wait_until};

/// A tmpfs mounted for the test; unmounted when dropped, even on panic.
struct Tmpfs {
    dir: PathBuf,
}

impl Tmpfs {
    /// Mounts a tmpfs of `size` (e.g. "64m") on `dir`; `None` (with the reason printed) when
    /// this process may not mount.
    fn mount(dir: &Path, size: &str) -> Option<Self> {
        let uid = Command::new("id").arg("-u").output().ok()?;
        if String::from_utf8_lossy(&uid.stdout).trim() != "0" {
            eprintln!("skipped: mounting a tmpfs needs root");
            return None;
        }
        std::fs::create_dir_all(dir).unwrap();
        let out = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir)
            .output()
            .unwrap();
        if !out.status.success() {
            eprintln!(
                "skipped: cannot mount a tmpfs: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            return None;
        }
        Some(Self { dir: dir.to_path_buf() })
    }

    fn resize(&self, size: &str) {
        let out = Command::new("mount")
            .args(["-o", &format!("remount,size={size}")])
            .arg(&self.dir)
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        // Lazy: a store still open after a panic does not keep the mount alive.
        let _ = Command::new("umount").arg("-l").arg(&self.dir).status();
    }
}

fn lesson(i: u64) -> BuiltLesson {
    SyntheticLesson::of_size(LessonId::new(format!("disk-{i}")).unwrap(), i, 20_000_000).build()
}

fn metric(station: &Station, series: &str) -> f64 {
    let mut registry = metrics::registry("station");
    registry.register_collector(station.metrics());
    let text = MetricsHandler::new(registry).render();
    text.lines()
        .find_map(|l| l.strip_prefix(series).and_then(|r| r.strip_prefix(' ')))
        .unwrap_or_else(|| panic!("no {series} in:\n{text}"))
        .trim()
        .parse()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn disk_full_station_stops_keeps_serving_and_resumes_when_space_is_freed() {
    let dir = tempfile::tempdir().unwrap();
    let Some(disk) = Tmpfs::mount(&dir.path().join("station-disk"), "64m") else {
        return;
    };
    let keys = DeploymentKeys::generate().unwrap();
    let origin_name = NodeName::new("origin").unwrap();
    let origin = Origin::start(
        OriginConfig {
            name: origin_name.clone(),
            listen: loopback(),
            store: StoreConfig::new(dir.path().join("origin"), 1 << 30),
            transport: Default::default(),
            catalog_validity: Duration::from_secs(86_400),
        },
        keys.enroll(Role::Origin, &origin_name).unwrap(),
        keys.online_key(clock::now()),
    )
    .await
    .unwrap();
    // 100 MB of lessons for a 64 MB disk.
    let lessons: Vec<BuiltLesson> = (1..=5).map(lesson).collect();
    let publish: Vec<_> = lessons.iter().map(|l| (l.manifest.clone(), &l.chunks)).collect();
    let version = origin.publish(&publish).unwrap();

    let name = NodeName::new("village-full").unwrap();
    // The budget is larger than the disk: the operator's mistake this test is about.
    let mut config = StationConfig::new(
        name.clone(),
        loopback(),
        StoreConfig::new(disk.dir.join("store"), 1 << 30),
        UpstreamConfig::new(vec![Parent {
            name: origin_name,
            addr: origin.local_addr().unwrap(),
        }]),
    );
    config.retry_after = Duration::from_millis(300);
    let station = Station::start(config, keys.enroll(Role::Station, &name).unwrap(), keys.root_public())
        .await
        .unwrap();

    let mut status = station.status();
    wait_until("the station to find its disk full", Duration::from_secs(120), || {
        status.borrow_and_update().disk_full
    })
    .await;
    assert_eq!(metric(&station, "courseway_station_disk_full"), 1.0);
    assert!(metric(&station, "courseway_station_disk_full_writes_total") >= 1.0);

    // Downloads stop: once the chunks in flight when the disk filled have landed (or failed),
    // no byte more comes down while the disk stays full.
    tokio::time::sleep(DISK_PROBE * 3).await;
    let received = station.fetch_stats().bytes_received.load(Ordering::Relaxed);
    tokio::time::sleep(DISK_PROBE * 5).await;
    assert_eq!(
        station.fetch_stats().bytes_received.load(Ordering::Relaxed),
        received,
        "the station kept downloading into a full disk"
    );
    assert!(station.status().borrow().disk_full);

    // What it holds is still served, verified.
    let held = station.store().chunk_ids();
    assert!(!held.is_empty(), "the disk filled before any chunk was stored");
    for id in &held {
        let bytes = station.store().get(id, 0).unwrap().expect("a held chunk is readable");
        id.verify(&bytes).unwrap();
    }
    let held_bytes: u64 = held
        .iter()
        .filter_map(|id| station.store().size_of(id))
        .map(u64::from)
        .sum();
    println!(
        "disk full after {} chunks ({:.1} MB) of {:.1} MB; {} bytes received before downloads stopped",
        held.len(),
        held_bytes as f64 / 1e6,
        lessons
            .iter()
            .flat_map(|l| l.chunks.values())
            .map(|c| c.len() as f64)
            .sum::<f64>()
            / 1e6,
        received
    );

    // Space is freed: the station resumes by itself and finishes.
    disk.resize("256m");
    let resumed = wait_until(
        "the station to finish after space was freed",
        Duration::from_secs(180),
        || {
            let s = status.borrow_and_update();
            s.synced && s.catalog_version == version
        },
    )
    .await;
    println!("synced {:.1} s after the disk was enlarged", resumed.as_secs_f64());
    assert!(!station.status().borrow().disk_full);
    assert_eq!(metric(&station, "courseway_station_disk_full"), 0.0);
    for l in &lessons {
        for (id, bytes) in &l.chunks {
            let held = station.store().get(id, 0).unwrap().expect("every chunk is held");
            assert_eq!(&held, bytes, "chunk {id}");
        }
    }
    assert!(station.store().verify_all().unwrap().is_clean());
    station.shutdown().await;
    origin.shutdown();
}
