//! A village link cut for 30 s while a chunk of about 1 MiB is half-way across an emulated
//! 2 Mbit/s link: the station finishes every lesson byte-identical, and no more than one chunk's
//! bytes are sent again. Run once with the default transport settings (keep-alive 10 s, idle
//! timeout 60 s: QUIC may keep the connection through the cut) and once with an idle timeout
//! shorter than the cut (the connection dies, and the transfer resumes from its byte offset on a
//! new one). The two tests run concurrently, about 45 s each.

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use courseway::topology::DeploymentKeys;
use courseway_content::synthetic::{BuiltLesson, SyntheticLesson};
use courseway_content::{LessonId, NodeName, RenditionKind};
use courseway_linkemu::{LinkConfig, ProxyConfig, UdpProxy};
use courseway_net::TransportConfig;
use courseway_node::{clock, Parent, UpstreamConfig};
use courseway_origin::{Origin, OriginConfig};
use courseway_proto::Role;
use courseway_station::{Station, StationConfig};
use courseway_store::StoreConfig;
use courseway_tests::{loopback, wait_until};

const CUT: Duration = Duration::from_secs(30);

/// What one cut run measured.
#[derive(Debug)]
struct CutRun {
    chunk_bytes: u64,
    lesson_bytes: u64,
    /// Bytes of the chunk the station had received when the link was cut.
    into_chunk_at_cut: u64,
    station_received: u64,
    origin_sent: u64,
    resumed: u64,
    after_restore: Duration,
}

/// A station fetching three ~1 MB chunks, one at a time, behind a 2 Mbit/s, 150 ms link, cut
/// for [`CUT`] half-way through the second chunk.
async fn cut_mid_chunk(transport: TransportConfig) -> CutRun {
    let dir = tempfile::tempdir().unwrap();
    let keys = DeploymentKeys::generate().unwrap();
    let origin_name = NodeName::new("origin").unwrap();
    let origin = Origin::start(
        OriginConfig {
            name: origin_name.clone(),
            listen: loopback(),
            store: StoreConfig::new(dir.path().join("origin"), 1 << 30),
            transport: TransportConfig::default(),
            catalog_validity: Duration::from_secs(86_400),
        },
        keys.enroll(Role::Origin, &origin_name).unwrap(),
        keys.online_key(clock::now()),
    )
    .await
    .unwrap();
    // Three 4-second segments at 2 Mbit/s: three chunks of 1,000,000 bytes (just under 1 MiB).
    let mut spec = SyntheticLesson::standard(LessonId::new("cut-30s").unwrap(), 30, 3);
    spec.renditions = vec![(
        "720p".into(),
        RenditionKind::Video {
            width: 1280,
            height: 720,
        },
        2_000_000,
    )];
    spec.attachment_size = 0;
    let lesson: BuiltLesson = spec.build();
    let chunk_bytes = lesson.chunks.values().map(|c| c.len() as u64).max().unwrap();
    let lesson_bytes: u64 = lesson.chunks.values().map(|c| c.len() as u64).sum();
    assert_eq!((lesson.chunks.len(), chunk_bytes), (3, 1_000_000));

    let link = LinkConfig {
        rate_bps: Some(2_000_000),
        delay: Duration::from_millis(150),
        queue_bytes: 128 * 1024,
        ..LinkConfig::default()
    };
    let proxy = UdpProxy::start(origin.local_addr().unwrap(), ProxyConfig::symmetric(link))
        .await
        .unwrap();
    let name = NodeName::new("village-cut-30").unwrap();
    let mut config = StationConfig::new(
        name.clone(),
        loopback(),
        StoreConfig::new(dir.path().join("station"), 1 << 30),
        UpstreamConfig::new(vec![Parent {
            name: origin_name,
            addr: proxy.local_addr(),
        }]),
    );
    config.transport = transport;
    // One chunk at a time, so exactly one is in flight when the link is cut.
    config.concurrency = 1;
    config.retry_after = Duration::from_millis(500);
    let station = Station::start(config, keys.enroll(Role::Station, &name).unwrap(), keys.root_public())
        .await
        .unwrap();
    origin.publish(&[(lesson.manifest.clone(), &lesson.chunks)]).unwrap();

    let stats = station.fetch_stats();
    let received = || stats.bytes_received.load(Ordering::Relaxed);
    // Half-way through the second chunk (the first one has warmed the connection up).
    wait_until("the second chunk to be half-way", Duration::from_secs(60), || {
        received() >= chunk_bytes + chunk_bytes / 2
    })
    .await;
    proxy.cut();
    let at_cut = received();
    tokio::time::sleep(CUT).await;
    proxy.restore();
    let restored = Instant::now();
    let mut status = station.status();
    wait_until("the station to sync after the cut", Duration::from_secs(120), || {
        status.borrow_and_update().synced
    })
    .await;
    let after_restore = restored.elapsed();
    for (id, bytes) in &lesson.chunks {
        let held = station.store().get(id, 0).unwrap().expect("every chunk is held");
        assert_eq!(&held, bytes, "the station holds different bytes for {id}");
    }
    let run = CutRun {
        chunk_bytes,
        lesson_bytes,
        into_chunk_at_cut: at_cut - chunk_bytes,
        station_received: received(),
        origin_sent: origin.stats().chunk_bytes_sent,
        resumed: stats.resumed.load(Ordering::Relaxed),
        after_restore,
    };
    station.shutdown().await;
    run
}

fn check(run: &CutRun, label: &str) {
    println!(
        "{label}: cut {} s at byte {} of chunk 2 ({} bytes); station re-received {} bytes, origin re-sent {} bytes; \
         {} resumed transfer(s); synced {:.1} s after the link came back",
        CUT.as_secs(),
        run.into_chunk_at_cut,
        run.chunk_bytes,
        run.station_received - run.lesson_bytes,
        run.origin_sent.saturating_sub(run.lesson_bytes),
        run.resumed,
        run.after_restore.as_secs_f64(),
    );
    assert!(
        run.into_chunk_at_cut > 0 && run.into_chunk_at_cut < run.chunk_bytes,
        "the link was not cut mid-chunk: {run:?}"
    );
    assert!(
        run.station_received - run.lesson_bytes <= run.chunk_bytes,
        "the station received more than one chunk again: {run:?}"
    );
    assert!(
        run.origin_sent >= run.lesson_bytes && run.origin_sent - run.lesson_bytes <= run.chunk_bytes,
        "the origin sent more than one chunk again: {run:?}"
    );
    // Resumed, not restarted: the bytes the station held at the cut were neither received nor
    // asked for again (the origin counts a request from offset o as the chunk's size minus o).
    assert!(
        run.station_received - run.lesson_bytes < run.into_chunk_at_cut,
        "the station received the chunk's first bytes again: {run:?}"
    );
    assert!(
        run.origin_sent - run.lesson_bytes <= run.chunk_bytes - run.into_chunk_at_cut,
        "the chunk was asked for again from before the cut: {run:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_30_s_cut_mid_chunk_with_default_transport_costs_at_most_one_chunk() {
    let run = cut_mid_chunk(TransportConfig::default()).await;
    check(&run, "default transport");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_30_s_cut_mid_chunk_that_kills_the_connection_resumes_from_the_offset() {
    let transport = TransportConfig {
        idle_timeout: Duration::from_secs(5),
        keep_alive_interval: Duration::from_secs(1),
        ..TransportConfig::default()
    };
    let run = cut_mid_chunk(transport).await;
    check(&run, "idle timeout 5 s");
    // The connection died during the cut: the chunk was asked for again from an offset, on a
    // new connection, and only the bytes the station lacked were sent.
    assert!(run.resumed >= 1, "the transfer was not resumed from an offset: {run:?}");
}
