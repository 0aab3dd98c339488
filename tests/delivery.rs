//! Delivery through the tree: real nodes on loopback, real QUIC between them.

use std::collections::BTreeMap;
use std::time::Duration;

use courseway::topology::{DeploymentKeys, Topology, TopologyConfig};
use courseway_content::synthetic::SyntheticLesson;
use courseway_content::{ChunkId, LessonId, RenditionKind};
use courseway_relay::PrefetchPolicy;
use courseway_tests::wait_until;

/// A small lesson: one 256 kbit/s rendition of `segments` 4-second segments and an attachment.
fn lesson(name: &str, seed: u64, segments: u32) -> courseway_content::synthetic::BuiltLesson {
    let mut spec = SyntheticLesson::standard(LessonId::new(name).unwrap(), seed, segments);
    spec.renditions = vec![(
        "360p".into(),
        RenditionKind::Video {
            width: 640,
            height: 360,
        },
        256_000,
    )];
    spec.attachment_size = 200_000;
    spec.build()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_hundred_stations_each_chunk_once_per_city_relay() {
    // Warnings (refused chunks, failed fetches, retries) go to the test's output.
    let _ = tracing_subscriber::fmt()
        .with_env_filter("warn")
        .with_test_writer()
        .try_init();
    let dir = tempfile::tempdir().unwrap();
    let keys = DeploymentKeys::generate().unwrap();
    let config = TopologyConfig {
        dir: dir.path().to_path_buf(),
        city_relays: 2,
        district_relays: 4,
        stations: 200,
        // No prefetch: every chunk is first asked for by stations, all at the same moment, so
        // the origin sending each chunk once per city relay is down to coalescing alone.
        prefetch: PrefetchPolicy::None,
        station_rate: None,
        far_stations: 0,
        far_station_rate: None,
        memtable_bytes: 2 << 20,
    };
    let tree = Topology::start(&config, &keys).await.unwrap();
    let lessons = [lesson("agri-001", 1, 6), lesson("health-002", 2, 4)];
    let published: Vec<_> = lessons.iter().map(|l| (l.manifest.clone(), &l.chunks)).collect();
    let version = tree.origin.publish(&published).unwrap();

    wait_until("every station to sync", Duration::from_secs(600), || {
        tree.stations_synced(version) == 200
    })
    .await;

    // Every station holds every lesson byte-identical.
    let all: BTreeMap<ChunkId, &Vec<u8>> = lessons
        .iter()
        .flat_map(|l| l.chunks.iter())
        .map(|(k, v)| (*k, v))
        .collect();
    let lesson_bytes: u64 = all.values().map(|v| v.len() as u64).sum();
    for station in &tree.stations {
        for (id, bytes) in &all {
            let held = station
                .store()
                .get(id, 0)
                .unwrap()
                .unwrap_or_else(|| panic!("{} lacks {id}", station.name()));
            assert_eq!(&held, *bytes, "{} holds different bytes for {id}", station.name());
        }
        assert_eq!(station.status().borrow().bad_chunks, 0);
    }
    // The origin sent each chunk exactly once per city relay.
    let stats = tree.origin.stats();
    assert_eq!(stats.duplicate_chunk_sends, 0, "{stats:?}");
    assert_eq!(stats.chunk_bytes_sent, lesson_bytes * 2, "{stats:?}");
    // And each city relay fetched each chunk once, however many district relays asked.
    for relay in &tree.city {
        let r = relay.stats();
        assert_eq!(r.bytes_fetched, lesson_bytes, "{r:?}");
    }
    println!(
        "200 stations synced; origin sent {} bytes for {} lesson bytes ({:.3}× per city relay)",
        stats.chunk_bytes_sent,
        lesson_bytes,
        stats.chunk_bytes_sent as f64 / (lesson_bytes * 2) as f64
    );
    tree.shutdown().await;
}
