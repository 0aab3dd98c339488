//! Faults on the way down: a cut link, a relay that dies, a parent that lies.

use std::collections::BTreeMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use courseway::topology::{DeploymentKeys, Topology, TopologyConfig};
use courseway_content::synthetic::{BuiltLesson, SyntheticLesson};
use courseway_content::{Catalog, ChunkId, LessonId, NodeName, RenditionKind, Signed};
use courseway_linkemu::{LinkConfig, ProxyConfig, UdpProxy};
use courseway_net::{send_chunk, IncomingRequest, NetError, RateLimit, Server, TransportConfig};
use courseway_node::{reply_error, serve_connection, NodeService, Parent, UpstreamConfig};
use courseway_origin::{Origin, OriginConfig};
use courseway_proto::{Announcement, ChunkHeader, ErrorCode, ErrorReply, GetChunk, Role, Welcome};
use courseway_relay::{PrefetchPolicy, Relay, RelayConfig};
use courseway_station::{Station, StationConfig};
use courseway_store::StoreConfig;
use courseway_tests::{loopback, wait_until};
use tokio::sync::broadcast;

fn lesson(name: &str, seed: u64, segments: u32, bitrate: u32) -> BuiltLesson {
    let mut spec = SyntheticLesson::standard(LessonId::new(name).unwrap(), seed, segments);
    spec.renditions = vec![(
        "720p".into(),
        RenditionKind::Video {
            width: 1280,
            height: 720,
        },
        bitrate,
    )];
    spec.attachment_size = 0;
    spec.build()
}

fn assert_holds(station: &Station, lesson: &BuiltLesson) {
    for (id, bytes) in &lesson.chunks {
        let held = station
            .store()
            .get(id, 0)
            .unwrap()
            .unwrap_or_else(|| panic!("{} lacks {id}", station.name()));
        assert_eq!(&held, bytes, "{} holds different bytes for {id}", station.name());
    }
}

async fn origin(dir: &std::path::Path, keys: &DeploymentKeys) -> Origin {
    let name = NodeName::new("origin").unwrap();
    Origin::start(
        OriginConfig {
            name: name.clone(),
            listen: loopback(),
            store: StoreConfig::new(dir.join("origin"), 1 << 30),
            transport: TransportConfig::default(),
            catalog_validity: Duration::from_secs(86_400),
        },
        keys.enroll(Role::Origin, &name).unwrap(),
        keys.online_key(courseway_node::clock::now()),
    )
    .await
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cut_longer_than_the_idle_timeout_resumes_from_the_offset() {
    let dir = tempfile::tempdir().unwrap();
    let keys = DeploymentKeys::generate().unwrap();
    let origin = origin(dir.path(), &keys).await;
    // One segment of 1.5 Mbit/s × 4 s: a single 750 kB chunk, ~6 s over the link.
    let l = lesson("cut-1", 7, 1, 1_500_000);
    // The link itself is slow (1 Mbit/s), so the chunk's bytes really are in flight when it is
    // cut (a receive-side cap would let them sit in QUIC's buffers instead).
    let link = LinkConfig {
        rate_bps: Some(1_000_000),
        queue_bytes: 256 * 1024,
        ..LinkConfig::default()
    };
    let proxy = UdpProxy::start(origin.local_addr().unwrap(), ProxyConfig::symmetric(link))
        .await
        .unwrap();
    let name = NodeName::new("village-cut").unwrap();
    let origin_name = NodeName::new("origin").unwrap();
    let mut config = StationConfig::new(
        name.clone(),
        loopback(),
        StoreConfig::new(dir.path().join("station"), 1 << 30),
        UpstreamConfig::new(vec![Parent {
            name: origin_name,
            addr: proxy.local_addr(),
        }]),
    );
    // A short idle timeout so the cut kills the connection and the fetch must resume by offset.
    config.transport = TransportConfig {
        idle_timeout: Duration::from_secs(2),
        keep_alive_interval: Duration::from_millis(500),
        ..TransportConfig::default()
    };
    config.upstream.retry_after = Duration::from_millis(200);
    config.retry_after = Duration::from_millis(200);
    let station = Station::start(config, keys.enroll(Role::Station, &name).unwrap(), keys.root_public())
        .await
        .unwrap();
    origin.publish(&[(l.manifest.clone(), &l.chunks)]).unwrap();

    let stats = station.fetch_stats();
    wait_until("the transfer to start", Duration::from_secs(30), || {
        stats.bytes_received.load(Ordering::Relaxed) > 100_000
    })
    .await;
    proxy.cut();
    tokio::time::sleep(Duration::from_secs(4)).await;
    let before_restore = stats.bytes_received.load(Ordering::Relaxed);
    proxy.restore();
    let mut status = station.status();
    wait_until("the station to sync", Duration::from_secs(120), || {
        status.borrow_and_update().synced
    })
    .await;
    assert_holds(&station, &l);

    let chunk_bytes: u64 = l.chunks.values().map(|c| c.len() as u64).sum();
    let received = stats.bytes_received.load(Ordering::Relaxed);
    assert!(
        before_restore < chunk_bytes,
        "the cut happened before the chunk was complete"
    );
    assert!(
        stats.resumed.load(Ordering::Relaxed) >= 1,
        "the fetch resumed from an offset"
    );
    assert!(
        received - chunk_bytes <= 1 << 20,
        "re-sent {} bytes, more than one chunk",
        received - chunk_bytes
    );
    println!(
        "cut mid-chunk at {before_restore} of {chunk_bytes} bytes; {} bytes re-sent",
        received - chunk_bytes
    );
    station.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stations_fail_over_when_their_district_relay_dies() {
    let dir = tempfile::tempdir().unwrap();
    let keys = DeploymentKeys::generate().unwrap();
    let config = TopologyConfig {
        dir: dir.path().to_path_buf(),
        city_relays: 1,
        district_relays: 2,
        stations: 10,
        prefetch: PrefetchPolicy::None,
        // Capped so the sync is still running when the relay dies.
        station_rate: Some(RateLimit::from_bits_per_sec(4_000_000, 50).unwrap()),
        far_stations: 0,
        far_station_rate: None,
        memtable_bytes: 2 << 20,
    };
    let mut tree = Topology::start(&config, &keys).await.unwrap();
    let l = lesson("failover-1", 9, 6, 1_500_000);
    let version = tree.origin.publish(&[(l.manifest.clone(), &l.chunks)]).unwrap();
    let total: u64 = l.chunks.values().map(|c| c.len() as u64).sum();
    wait_until("the sync to be under way", Duration::from_secs(60), || {
        tree.station_status().iter().map(|s| s.bytes_ready).sum::<u64>() > total
    })
    .await;
    // Stations 1, 3, 5, 7, 9 (indices 0, 2, 4, ...) have district-01 as their preferred parent.
    let statuses = tree.station_status();
    let orphaned: Vec<usize> = (0..10).step_by(2).filter(|i| !statuses[*i].synced).collect();
    assert!(
        !orphaned.is_empty(),
        "the dead relay's stations finished before it could be killed"
    );
    let killed = tree.district.remove(0);
    drop(killed);
    // Failover time: until every cut-off station has switched to its backup parent.
    let switch_time = wait_until("the cut-off stations to switch parent", Duration::from_secs(60), || {
        orphaned
            .iter()
            .all(|i| tree.stations[*i].fetch_stats().failovers.load(Ordering::Relaxed) >= 1)
    })
    .await;
    let failover = wait_until("every station to finish", Duration::from_secs(180), || {
        tree.stations_synced(version) == 10
    })
    .await;
    // The orphaned stations could only finish through the other district relay.
    for s in &tree.stations {
        assert_holds(s, &l);
    }
    let switched: u64 = tree
        .stations
        .iter()
        .map(|s| s.fetch_stats().failovers.load(Ordering::Relaxed))
        .sum();
    assert!(
        switched as usize >= orphaned.len(),
        "{switched} parent switches for {} orphaned stations",
        orphaned.len()
    );
    println!(
        "{} stations were cut off from their relay mid-sync; {switched} parent switches",
        orphaned.len()
    );
    println!(
        "failover: every cut-off station switched parent within {:.3} s",
        switch_time.as_secs_f64()
    );
    println!(
        "district relay killed; all stations finished {:.2} s later",
        failover.as_secs_f64()
    );
    tree.shutdown().await;
}

/// A parent that serves the right catalog and manifests but flips a bit in every chunk.
struct LyingParent {
    chunks: BTreeMap<ChunkId, Vec<u8>>,
    manifests: BTreeMap<ChunkId, Vec<u8>>,
    catalog: Arc<Signed<Catalog>>,
    announce: broadcast::Sender<Announcement>,
}

impl NodeService for LyingParent {
    fn welcome(&self) -> Welcome {
        Welcome {
            node: NodeName::new("liar").unwrap(),
            role: Role::Relay,
            software: "liar".into(),
        }
    }

    async fn serve_chunk(&self, req: &mut IncomingRequest, get: GetChunk) -> Result<(), NetError> {
        let Some(bytes) = self.chunks.get(&get.id) else {
            return reply_error(req, ErrorCode::NotFound, "no such chunk").await;
        };
        let mut flipped = bytes.clone();
        let mid = flipped.len() / 2;
        flipped[mid] ^= 0x10;
        let header = ChunkHeader {
            id: get.id,
            size: bytes.len() as u32,
            offset: get.offset,
        };
        send_chunk(
            &mut req.send,
            &header,
            flipped[get.offset as usize..].to_vec().into(),
            &[],
        )
        .await
    }

    async fn manifest(&self, hash: ChunkId) -> Result<Vec<u8>, ErrorReply> {
        self.manifests
            .get(&hash)
            .cloned()
            .ok_or_else(|| ErrorReply::new(ErrorCode::NotFound, "no such manifest"))
    }

    fn catalog(&self) -> Option<Arc<Signed<Catalog>>> {
        Some(self.catalog.clone())
    }

    fn announcements(&self) -> broadcast::Receiver<Announcement> {
        self.announce.subscribe()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flipped_bytes_are_refused_counted_and_never_passed_on() {
    use courseway_content::encoding::Encode;
    let dir = tempfile::tempdir().unwrap();
    let keys = DeploymentKeys::generate().unwrap();
    let origin = origin(dir.path(), &keys).await;
    let l = lesson("liar-1", 11, 3, 1_000_000);
    origin.publish(&[(l.manifest.clone(), &l.chunks)]).unwrap();

    let liar_name = NodeName::new("liar").unwrap();
    let service = Arc::new(LyingParent {
        chunks: l.chunks.clone(),
        manifests: [(l.manifest.hash(), l.manifest.to_bytes())].into_iter().collect(),
        catalog: origin.catalog().unwrap(),
        announce: broadcast::channel(4).0,
    });
    let liar = Server::bind(
        keys.enroll(Role::Relay, &liar_name).unwrap(),
        &TransportConfig::default(),
        loopback(),
    )
    .unwrap();
    let liar_addr = liar.local_addr().unwrap();
    let liar_task = tokio::spawn(async move { liar.serve(move |c| serve_connection(service.clone(), c)).await });
    let origin_parent = Parent {
        name: NodeName::new("origin").unwrap(),
        addr: origin.local_addr().unwrap(),
    };
    let liar_parent = Parent {
        name: liar_name,
        addr: liar_addr,
    };

    // A relay whose preferred parent lies, with a station under it.
    let relay_name = NodeName::new("district-x").unwrap();
    let mut rc = RelayConfig::new(
        relay_name.clone(),
        loopback(),
        StoreConfig::new(dir.path().join("relay"), 1 << 30),
        UpstreamConfig::new(vec![liar_parent.clone(), origin_parent.clone()]),
    );
    rc.prefetch = PrefetchPolicy::None;
    rc.upstream.retry_after = Duration::from_secs(60);
    let relay = Relay::start(rc, keys.enroll(Role::Relay, &relay_name).unwrap(), keys.root_public())
        .await
        .unwrap();
    let under_relay = NodeName::new("village-under-relay").unwrap();
    let station_a = Station::start(
        StationConfig::new(
            under_relay.clone(),
            loopback(),
            StoreConfig::new(dir.path().join("a"), 1 << 30),
            UpstreamConfig::new(vec![Parent {
                name: relay_name,
                addr: relay.local_addr().unwrap(),
            }]),
        ),
        keys.enroll(Role::Station, &under_relay).unwrap(),
        keys.root_public(),
    )
    .await
    .unwrap();
    // A station whose own preferred parent lies.
    let direct = NodeName::new("village-direct").unwrap();
    let mut sc = StationConfig::new(
        direct.clone(),
        loopback(),
        StoreConfig::new(dir.path().join("b"), 1 << 30),
        UpstreamConfig::new(vec![liar_parent, origin_parent]),
    );
    sc.upstream.retry_after = Duration::from_secs(60);
    let station_b = Station::start(sc, keys.enroll(Role::Station, &direct).unwrap(), keys.root_public())
        .await
        .unwrap();

    let (mut a, mut b) = (station_a.status(), station_b.status());
    wait_until("both stations to sync", Duration::from_secs(120), || {
        a.borrow_and_update().synced && b.borrow_and_update().synced
    })
    .await;
    assert_holds(&station_a, &l);
    assert_holds(&station_b, &l);
    // The station under the liar refused and counted its bad chunks.
    assert!(station_b.status().borrow().bad_chunks >= 1);
    // The relay refused them too, and never passed a bad chunk on: its station saw none.
    assert!(relay.stats().bad_chunks >= 1, "{:?}", relay.stats());
    assert_eq!(
        station_a.status().borrow().bad_chunks,
        0,
        "the relay passed a bad chunk on"
    );
    assert!(relay.store().verify_all().unwrap().is_clean());
    liar_task.abort();
    station_a.shutdown().await;
    station_b.shutdown().await;
}
