//! Live broadcast (issue #6): a GStreamer test feed cut into segments at the origin, fanned out
//! through city and district relays to every station, played from a station's live HLS
//! playlist; a forged live announcement is refused and counted.
//!
//! The tree's size is set by `COURSEWAY_LIVE_DISTRICTS_PER_CITY` (default 3) and
//! `COURSEWAY_LIVE_STATIONS_PER_DISTRICT` (default 5): 1 origin → 2 cities → 6 districts → 30
//! stations by default; 3 and 50 make the 300 stations. `COURSEWAY_LIVE_SEGMENTS`
//! (default 8) segments are measured after the tree has joined.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use courseway::topology::DeploymentKeys;
use courseway_content::{ChannelId, ChunkId, LiveSegment, NodeName, Signed};
use courseway_media::live::{CutSegment, LiveIngest, LiveIngestConfig, LiveInput};
use courseway_net::{send_chunk, IncomingRequest, NetError, Server, TransportConfig};
use courseway_node::live::SegmentKey;
use courseway_node::{reply_error, serve_connection, NodeService, Parent, UpstreamConfig};
use courseway_origin::{LiveCut, Origin};
use courseway_proto::{Announcement, ChunkHeader, ErrorCode, ErrorReply, GetChunk, Role, Welcome};
use courseway_relay::{PrefetchPolicy, Relay, RelayConfig};
use courseway_station::lan::LanConfig;
use courseway_station::{Station, StationConfig};
use courseway_store::StoreConfig;
use courseway_tests::{loopback, wait_until};
use tokio::sync::broadcast;

const CITIES: usize = 2;
const RENDITION: &str = "source";

fn env_or(name: &str, default: usize) -> usize {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

fn channel() -> ChannelId {
    ChannelId::new("city-live").unwrap()
}

fn store(dir: &Path, name: &str) -> StoreConfig {
    let mut s = StoreConfig::new(dir.join(name), 256 << 20);
    // Hundreds of stores in one process: small write buffers.
    s.memtable_bytes = 2 << 20;
    s
}

fn parent(name: &NodeName, addr: std::net::SocketAddr) -> UpstreamConfig {
    UpstreamConfig::new(vec![Parent {
        name: name.clone(),
        addr,
    }])
}

/// The test pattern at the origin, 1 s segments, each stored, signed and announced as it is cut.
fn start_feed(origin: &Arc<Origin>, spool: &Path) -> LiveIngest {
    let mut config = LiveIngestConfig::new(
        LiveInput::TestPattern {
            width: 320,
            height: 240,
            fps: 25,
        },
        spool,
    );
    config.segment = Duration::from_secs(1);
    config.test_video_kbps = 300;
    let origin = origin.clone();
    let ingest = config.clone();
    LiveIngest::start(&config, move |cut: CutSegment| {
        // The ingest's own thread: blocking store IO is fine here.
        courseway::live::publish_cut(&origin, &channel(), &ingest, &cut).expect("the origin publishes a live segment");
    })
    .expect("the live ingest starts (GStreamer with x264enc, voaacenc, mpegtsmux)")
}

/// p50 and p99 (nearest rank) of `values`, in ms.
fn percentiles(mut values: Vec<i64>) -> (i64, i64, usize) {
    values.sort_unstable();
    let at = |p: f64| values[((p * values.len() as f64).ceil() as usize).clamp(1, values.len()) - 1];
    (at(0.50), at(0.99), values.len())
}

/// Per-tier added latency: for every measured segment and every node of the tier, when the
/// node held it whole minus when its parent did.
fn tier_latency(
    measured: &[SegmentKey],
    nodes: &[(BTreeMap<SegmentKey, u64>, usize)],
    parents: &[BTreeMap<SegmentKey, u64>],
) -> Vec<i64> {
    let mut out = Vec::new();
    for (done, parent) in nodes {
        for key in measured {
            let (Some(&at), Some(&parent_at)) = (done.get(key), parents[*parent].get(key)) else {
                continue;
            };
            out.push(at as i64 - parent_at as i64);
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn live_feed_reaches_every_station_through_the_relay_tiers() {
    let districts_per_city = env_or("COURSEWAY_LIVE_DISTRICTS_PER_CITY", 3);
    let stations_per_district = env_or("COURSEWAY_LIVE_STATIONS_PER_DISTRICT", 5);
    let measured_segments = env_or("COURSEWAY_LIVE_SEGMENTS", 8) as u64;
    // Every segment of the run stays in every window, so a node that joins late still gets all.
    let window = (measured_segments as usize) + 32;

    let dir = tempfile::tempdir().unwrap();
    let keys = DeploymentKeys::generate().unwrap();
    let origin = Arc::new(courseway_tests::start_origin(dir.path(), &keys).await);
    let origin_name = NodeName::new("origin").unwrap();

    let mut cities = Vec::new();
    for c in 0..CITIES {
        let name = NodeName::new(format!("city-{c}")).unwrap();
        let mut rc = RelayConfig::new(
            name.clone(),
            loopback(),
            store(dir.path(), name.as_str()),
            parent(&origin_name, origin.local_addr().unwrap()),
        );
        rc.prefetch = PrefetchPolicy::None;
        rc.live_window = window;
        let relay = Relay::start(rc, keys.enroll(Role::Relay, &name).unwrap(), keys.root_public())
            .await
            .unwrap();
        cities.push((name, relay));
    }
    let mut districts = Vec::new();
    for d in 0..CITIES * districts_per_city {
        let city = d % CITIES;
        let name = NodeName::new(format!("district-{d:02}")).unwrap();
        let mut rc = RelayConfig::new(
            name.clone(),
            loopback(),
            store(dir.path(), name.as_str()),
            parent(&cities[city].0, cities[city].1.local_addr().unwrap()),
        );
        rc.prefetch = PrefetchPolicy::None;
        rc.live_window = window;
        let relay = Relay::start(rc, keys.enroll(Role::Relay, &name).unwrap(), keys.root_public())
            .await
            .unwrap();
        districts.push((name, relay, city));
    }
    let mut stations = Vec::new();
    for s in 0..districts.len() * stations_per_district {
        let district = s % districts.len();
        let name = NodeName::new(format!("village-{s:04}")).unwrap();
        let mut sc = StationConfig::new(
            name.clone(),
            loopback(),
            store(dir.path(), name.as_str()),
            parent(&districts[district].0, districts[district].1.local_addr().unwrap()),
        );
        sc.live_channels = vec![channel()];
        sc.live_window = window;
        let station = Station::start(sc, keys.enroll(Role::Station, &name).unwrap(), keys.root_public())
            .await
            .unwrap();
        stations.push((station, district));
    }
    println!(
        "live tree: 1 origin -> {CITIES} cities -> {} districts -> {} stations",
        districts.len(),
        stations.len()
    );

    let feed = start_feed(&origin, &dir.path().join("spool"));
    // The tree has joined once every station holds a segment; the segments after that are
    // measured (the earlier ones reached late joiners through the windows).
    wait_until("every station to hold a live segment", Duration::from_secs(120), || {
        stations.iter().all(|(s, _)| !s.live_completions(&channel()).is_empty())
    })
    .await;
    let joined = origin.stats().live_segments;
    wait_until("the measured segments to be cut", Duration::from_secs(120), || {
        origin.stats().live_segments > joined + measured_segments
    })
    .await;

    // The live playlist as a player sees it, while the broadcast is on.
    let lan = stations[0]
        .0
        .serve_lan(LanConfig::new(loopback(), Arc::new(|_| {})))
        .await
        .unwrap();
    let url = format!("http://{}/live/{}/{RENDITION}.m3u8", lan.local_addr(), channel());
    let probe = {
        let url = url.clone();
        tokio::task::spawn_blocking(move || {
            std::process::Command::new("timeout")
                .args([
                    "60",
                    "ffprobe",
                    "-v",
                    "error",
                    "-show_entries",
                    "stream=codec_name",
                    "-of",
                    "csv=p=0",
                ])
                .arg(&url)
                .output()
        })
        .await
        .unwrap()
        .expect("ffprobe runs (Debian package ffmpeg)")
    };
    let codecs = String::from_utf8_lossy(&probe.stdout).to_string();
    assert!(
        probe.status.success(),
        "ffprobe refused {url}: {}",
        String::from_utf8_lossy(&probe.stderr)
    );
    assert!(
        codecs.contains("h264") && codecs.contains("aac"),
        "ffprobe saw {codecs:?}"
    );

    feed.stop().expect("the live ingest ran without error");
    let origin_done = origin.live_completions(&channel());
    let all: Vec<SegmentKey> = origin_done.keys().cloned().collect();
    let total_chunks: usize = origin_done.len(); // checked below: one chunk per segment
    wait_until("every station to hold every segment", Duration::from_secs(120), || {
        stations.iter().all(|(s, _)| {
            let done = s.live_completions(&channel());
            all.iter().all(|k| done.contains_key(k))
        })
    })
    .await;

    // Every segment in full at every station, byte for byte what the origin cut.
    let origin_window: BTreeMap<u64, Arc<Signed<LiveSegment>>> = origin
        .live_window(&channel())
        .into_iter()
        .map(|s| (s.body.sequence, s))
        .collect();
    for (station, _) in &stations {
        let held: BTreeMap<u64, Arc<Signed<LiveSegment>>> = station
            .live_window(&channel())
            .into_iter()
            .map(|s| (s.body.sequence, s))
            .collect();
        for (seq, seg) in &origin_window {
            assert_eq!(held.get(seq).map(|s| &s.body), Some(&seg.body), "segment {seq}");
            for c in &seg.body.chunks {
                assert_eq!(station.store().get(&c.id, 0).unwrap(), origin.chunk(&c.id).unwrap());
            }
        }
    }

    // The origin sent each segment's chunks once per city relay, never twice to one.
    let chunks_per_segment: Vec<usize> = origin_window.values().map(|s| s.body.chunks.len()).collect();
    assert!(chunks_per_segment.iter().all(|n| *n == 1), "{chunks_per_segment:?}");
    let stats = origin.stats();
    assert_eq!(stats.live_chunk_sends, (CITIES * total_chunks) as u64, "{stats:?}");
    assert_eq!(stats.duplicate_chunk_sends, 0);

    // Added latency per tier, for the segments cut after the tree had joined.
    let measured: Vec<SegmentKey> = all.iter().skip(joined as usize + 1).cloned().collect();
    let city_done: Vec<_> = cities.iter().map(|(_, r)| r.live_completions(&channel())).collect();
    let district_done: Vec<_> = districts
        .iter()
        .map(|(_, r, _)| r.live_completions(&channel()))
        .collect();
    let tiers = [
        (
            "origin -> city",
            tier_latency(
                &measured,
                &city_done.iter().map(|d| (d.clone(), 0)).collect::<Vec<_>>(),
                std::slice::from_ref(&origin_done),
            ),
        ),
        (
            "city -> district",
            tier_latency(
                &measured,
                &districts
                    .iter()
                    .zip(&district_done)
                    .map(|((_, _, city), d)| (d.clone(), *city))
                    .collect::<Vec<_>>(),
                &city_done,
            ),
        ),
        (
            "district -> station",
            tier_latency(
                &measured,
                &stations
                    .iter()
                    .map(|(s, district)| (s.live_completions(&channel()), *district))
                    .collect::<Vec<_>>(),
                &district_done,
            ),
        ),
    ];
    println!(
        "live latency added per tier ({} segments measured, {} stations):",
        measured.len(),
        stations.len()
    );
    for (tier, values) in tiers {
        assert!(!values.is_empty(), "no latency figures for {tier}");
        let (p50, p99, n) = percentiles(values);
        println!("  {tier:<20} p50 {p50:>4} ms  p99 {p99:>4} ms  ({n} samples)");
    }
    drop(lan);
}

/// A parent that announces one honest live segment and one forged (the real signature over an
/// altered body), and serves the honest segment's chunk.
struct ForgingParent {
    honest: Arc<Signed<LiveSegment>>,
    forged: Arc<Signed<LiveSegment>>,
    chunk: (ChunkId, Vec<u8>),
    announce: broadcast::Sender<Announcement>,
}

impl NodeService for ForgingParent {
    fn welcome(&self) -> Welcome {
        Welcome {
            node: NodeName::new("forger").unwrap(),
            role: Role::Relay,
            software: "forging test relay".into(),
        }
    }

    async fn serve_chunk(&self, req: &mut IncomingRequest, get: GetChunk) -> Result<(), NetError> {
        if get.id != self.chunk.0 {
            return reply_error(req, ErrorCode::NotFound, "no such chunk").await;
        }
        let bytes = &self.chunk.1;
        let header = ChunkHeader {
            id: get.id,
            size: bytes.len() as u32,
            offset: get.offset,
        };
        send_chunk(
            &mut req.send,
            &header,
            bytes[get.offset as usize..].to_vec().into(),
            &[],
        )
        .await
    }

    async fn manifest(&self, _hash: ChunkId) -> Result<Vec<u8>, ErrorReply> {
        Err(ErrorReply::new(ErrorCode::NotFound, "no manifests here"))
    }

    fn catalog(&self) -> Option<Arc<Signed<courseway_content::Catalog>>> {
        None
    }

    fn announcements(&self) -> broadcast::Receiver<Announcement> {
        self.announce.subscribe()
    }

    fn live_join(&self, _channel: &ChannelId) -> Vec<Arc<Signed<LiveSegment>>> {
        vec![self.forged.clone(), self.honest.clone()]
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_forged_live_announcement_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let keys = DeploymentKeys::generate().unwrap();
    let origin = courseway_tests::start_origin(dir.path(), &keys).await;
    let bytes = b"a live segment's MPEG-TS bytes".to_vec();
    origin
        .publish_live_segment(
            &channel(),
            RENDITION,
            &Default::default(),
            LiveCut {
                index: 0,
                epoch: 0,
                duration_ms: 2000,
                bytes: &bytes,
            },
        )
        .unwrap();
    let honest = origin.live_window(&channel())[0].clone();
    let mut forged = (*honest).clone();
    forged.body.sequence += 1;
    forged.body.chunks[0].id = ChunkId::of(b"something else");
    let forger = Arc::new(ForgingParent {
        honest: honest.clone(),
        forged: Arc::new(forged.clone()),
        chunk: (honest.body.chunks[0].id, bytes.clone()),
        announce: broadcast::channel(4).0,
    });
    let forger_name = NodeName::new("forger").unwrap();
    let server = Server::bind(
        keys.enroll(Role::Relay, &forger_name).unwrap(),
        &TransportConfig::default(),
        loopback(),
    )
    .unwrap();
    let forger_addr = server.local_addr().unwrap();
    let serving = forger.clone();
    let serve = tokio::spawn(async move { server.serve(move |conn| serve_connection(serving.clone(), conn)).await });

    // A station straight under the forger, and a relay with a station of its own.
    let relay_name = NodeName::new("district-f").unwrap();
    let relay = Relay::start(
        RelayConfig::new(
            relay_name.clone(),
            loopback(),
            store(dir.path(), "relay"),
            parent(&forger_name, forger_addr),
        ),
        keys.enroll(Role::Relay, &relay_name).unwrap(),
        keys.root_public(),
    )
    .await
    .unwrap();
    let mut stations = Vec::new();
    for (name, parent_name, addr) in [
        ("village-direct", &forger_name, forger_addr),
        ("village-under", &relay_name, relay.local_addr().unwrap()),
    ] {
        let name = NodeName::new(name).unwrap();
        let mut sc = StationConfig::new(
            name.clone(),
            loopback(),
            store(dir.path(), name.as_str()),
            parent(parent_name, addr),
        );
        sc.live_channels = vec![channel()];
        stations.push(
            Station::start(sc, keys.enroll(Role::Station, &name).unwrap(), keys.root_public())
                .await
                .unwrap(),
        );
    }
    wait_until(
        "both stations to hold the honest segment",
        Duration::from_secs(60),
        || {
            stations.iter().all(|s| {
                s.live_completions(&channel())
                    .contains_key(&(RENDITION.to_string(), honest.body.sequence))
            })
        },
    )
    .await;
    wait_until("the forged segment to be refused", Duration::from_secs(60), || {
        stations[0].fetch_stats().rejections.get("live", "bad_signature") == 1
            && relay.rejections().get("live", "bad_signature") == 1
    })
    .await;
    for s in &stations {
        let held: Vec<u64> = s.live_window(&channel()).iter().map(|s| s.body.sequence).collect();
        assert_eq!(held, vec![honest.body.sequence], "only the honest segment is kept");
    }
    // The relay passed nothing on that it refused: the station below it refused nothing.
    assert_eq!(stations[1].fetch_stats().rejections.get("live", "bad_signature"), 0);
    // The count is what Prometheus scrapes.
    let mut registry = courseway_node::metrics::registry("test");
    registry.register_collector(relay.metrics());
    let text = courseway_node::metrics::MetricsHandler::new(registry).render();
    assert!(
        text.contains("courseway_upstream_rejected_total{object=\"live\",reason=\"bad_signature\"} 1"),
        "{text}"
    );
    serve.abort();
}

/// A free UDP port on loopback (bound, read, released).
fn free_udp_port() -> u16 {
    std::net::UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// The codec names ffprobe reads in `bytes` (an MPEG-TS segment).
fn probe_codecs(dir: &Path, bytes: &[u8]) -> String {
    let path = dir.join("segment.ts");
    std::fs::write(&path, bytes).unwrap();
    let out = std::process::Command::new("timeout")
        .args([
            "60",
            "ffprobe",
            "-v",
            "error",
            "-show_entries",
            "stream=codec_name",
            "-of",
            "csv=p=0",
        ])
        .arg(&path)
        .output()
        .expect("ffprobe runs (Debian package ffmpeg)");
    assert!(
        out.status.success(),
        "ffprobe: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).to_string()
}

/// Runs an ingest of `input` while a test encoder sends `codecs` to `target`, until three
/// segments are cut; returns them.
async fn ingest_feed(
    input: LiveInput,
    transcode: Option<u32>,
    target: courseway_media::testsrc::FeedTarget,
    codecs: courseway_media::testsrc::FeedCodecs,
) -> Vec<CutSegment> {
    let dir = tempfile::tempdir().unwrap();
    let mut config = LiveIngestConfig::new(input, dir.path().join("spool"));
    config.segment = Duration::from_secs(1);
    if let Some(kbps) = transcode {
        config.codecs = courseway_media::live::LiveCodecs::Transcode { video_kbps: kbps };
    }
    let cut = Arc::new(parking_lot::Mutex::new(Vec::new()));
    let ingest = {
        let cut = cut.clone();
        LiveIngest::start(&config, move |s| cut.lock().push(s)).expect("the ingest starts")
    };
    let feed = courseway_media::testsrc::LiveTestFeed::start(&target, codecs).expect("the test encoder starts");
    wait_until("three segments to be cut", Duration::from_secs(120), || {
        assert!(!ingest.is_finished(), "the ingest stopped early");
        cut.lock().len() >= 3
    })
    .await;
    drop(feed);
    ingest.stop().expect("the ingest ran without error");
    let segments = cut.lock().clone();
    for s in &segments {
        assert!(
            s.bytes.len() % 188 == 0 && s.bytes.chunks(188).all(|p| p[0] == 0x47),
            "a segment is whole MPEG-TS packets"
        );
        assert!(s.duration_ms > 0);
    }
    segments
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn live_udp_mpegts_h264_aac_feed_is_passed_through_in_segments() {
    let port = free_udp_port();
    let segments = ingest_feed(
        LiveInput::UdpMpegTs {
            address: [127, 0, 0, 1].into(),
            port,
        },
        None,
        courseway_media::testsrc::FeedTarget::Udp(([127, 0, 0, 1], port).into()),
        courseway_media::testsrc::FeedCodecs::H264Aac,
    )
    .await;
    let dir = tempfile::tempdir().unwrap();
    let codecs = probe_codecs(dir.path(), &segments[1].bytes);
    assert!(codecs.contains("h264") && codecs.contains("aac"), "{codecs:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn live_udp_mpeg2_feed_is_transcoded_to_h264_aac() {
    let port = free_udp_port();
    let segments = ingest_feed(
        LiveInput::UdpMpegTs {
            address: [127, 0, 0, 1].into(),
            port,
        },
        None,
        courseway_media::testsrc::FeedTarget::Udp(([127, 0, 0, 1], port).into()),
        courseway_media::testsrc::FeedCodecs::Mpeg2Mp2,
    )
    .await;
    let dir = tempfile::tempdir().unwrap();
    let codecs = probe_codecs(dir.path(), &segments[1].bytes);
    assert!(codecs.contains("h264") && codecs.contains("aac"), "{codecs:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn live_srt_listener_takes_a_feed() {
    let port = free_udp_port();
    let segments = ingest_feed(
        LiveInput::Srt { port, latency_ms: 120 },
        None,
        courseway_media::testsrc::FeedTarget::Srt(([127, 0, 0, 1], port).into()),
        courseway_media::testsrc::FeedCodecs::H264Aac,
    )
    .await;
    let dir = tempfile::tempdir().unwrap();
    let codecs = probe_codecs(dir.path(), &segments[1].bytes);
    assert!(codecs.contains("h264") && codecs.contains("aac"), "{codecs:?}");
}

/// An RTSP server on loopback standing in for an IP camera: an H.264 + AAC test feed at
/// `/feed` (RTP, H.264 and MPEG4-GENERIC AAC payloads, as cameras send them), served on its own
/// GLib main loop. Dropping it closes every client and stops serving.
struct RtspCamera {
    server: gstreamer_rtsp_server::RTSPServer,
    source: Option<gstreamer::glib::SourceId>,
    context: gstreamer::glib::MainContext,
    main_loop: gstreamer::glib::MainLoop,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl RtspCamera {
    fn start(port: u16) -> Self {
        use gstreamer::glib;
        use gstreamer_rtsp_server::prelude::*;
        gstreamer::init().unwrap();
        let server = gstreamer_rtsp_server::RTSPServer::new();
        server.set_address("127.0.0.1");
        server.set_service(&port.to_string());
        let factory = gstreamer_rtsp_server::RTSPMediaFactory::new();
        factory.set_launch(
            "( videotestsrc is-live=true pattern=ball ! video/x-raw,width=320,height=240,framerate=25/1,format=I420 \
             ! x264enc tune=zerolatency speed-preset=ultrafast bitrate=300 key-int-max=25 ! video/x-h264,profile=main \
             ! rtph264pay name=pay0 pt=96 config-interval=-1 \
             audiotestsrc is-live=true ! audioconvert ! audioresample ! voaacenc bitrate=48000 \
             ! rtpmp4gpay name=pay1 pt=97 )",
        );
        factory.set_shared(true);
        server.mount_points().unwrap().add_factory("/feed", factory);
        let context = glib::MainContext::new();
        let source = server.attach(Some(&context)).expect("the RTSP server listens");
        let main_loop = glib::MainLoop::new(Some(&context), false);
        let thread = {
            let (main_loop, context) = (main_loop.clone(), context.clone());
            std::thread::spawn(move || {
                context
                    .with_thread_default(|| main_loop.run())
                    .expect("the RTSP server's main context is free")
            })
        };
        Self {
            server,
            source: Some(source),
            context,
            main_loop,
            thread: Some(thread),
        }
    }
}

impl Drop for RtspCamera {
    fn drop(&mut self) {
        use gstreamer_rtsp_server::prelude::*;
        if let Some(source) = self.source.take().and_then(|id| self.context.find_source_by_id(&id)) {
            source.destroy();
        }
        self.server
            .client_filter(Some(&mut |_, _| gstreamer_rtsp_server::RTSPFilterResult::Remove));
        self.main_loop.quit();
        if let Some(t) = self.thread.take() {
            t.join().unwrap();
        }
    }
}

fn free_tcp_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// An RTSP pull from a camera is cut into H.264 + AAC segments (passed through), and when the
/// camera goes away and comes back the feed reconnects by itself with its segment numbers
/// carrying on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn live_rtsp_pull_takes_a_camera_feed_and_reconnects_after_the_camera_restarts() {
    let port = free_tcp_port();
    let camera = RtspCamera::start(port);
    let dir = tempfile::tempdir().unwrap();
    let mut config = LiveIngestConfig::new(
        LiveInput::Rtsp {
            url: format!("rtsp://127.0.0.1:{port}/feed"),
            latency_ms: 200,
        },
        dir.path().join("spool"),
    );
    config.segment = Duration::from_secs(1);
    let cut = Arc::new(parking_lot::Mutex::new(Vec::<CutSegment>::new()));
    let feed = {
        let cut = cut.clone();
        courseway_media::live_feed::LiveFeed::start(config, move |s| cut.lock().push(s)).expect("the feed starts")
    };
    wait_until("three segments from the camera", Duration::from_secs(60), || {
        cut.lock().len() >= 3
    })
    .await;
    let first = cut.lock().clone();
    for s in &first {
        assert!(
            s.bytes.len() % 188 == 0 && s.bytes.chunks(188).all(|p| p[0] == 0x47),
            "a segment is whole MPEG-TS packets"
        );
        assert!(s.duration_ms > 0);
        assert_eq!((s.width, s.height), (320, 240), "the camera's picture, passed through");
    }
    let codecs = probe_codecs(dir.path(), &first[1].bytes);
    assert!(codecs.contains("h264") && codecs.contains("aac"), "{codecs:?}");

    // The camera goes away, and comes back on the same address.
    drop(camera);
    let before = cut.lock().len();
    tokio::time::sleep(Duration::from_secs(3)).await;
    let _camera = RtspCamera::start(port);
    wait_until(
        "segments again after the camera came back",
        Duration::from_secs(120),
        || cut.lock().len() >= before + 3,
    )
    .await;
    assert!(feed.restarts() >= 1, "the feed was restarted");
    let indices: Vec<u64> = cut.lock().iter().map(|s| s.index).collect();
    assert!(
        indices.windows(2).all(|w| w[0] < w[1]),
        "segment numbers only grow across the reconnection: {indices:?}"
    );
    // The camera's timestamps start over: the segments after the reconnection are of a later
    // epoch, which the origin turns into a discontinuity in the stations' playlists.
    let epochs: Vec<u32> = cut.lock().iter().map(|s| s.epoch).collect();
    assert!(
        epochs[..before].iter().all(|&e| e == 0)
            && epochs.windows(2).all(|w| w[0] <= w[1])
            && epochs[epochs.len() - 1] >= 1,
        "a new epoch after the reconnection: {epochs:?}"
    );
    drop(feed);
}

/// nginx with its RTMP module on loopback: the media server an encoder that only pushes RTMP
/// pushes to (GStreamer has no RTMP server element). Dropping it kills nginx.
struct RtmpServer {
    nginx: std::process::Child,
    _dir: tempfile::TempDir,
}

impl RtmpServer {
    fn start(port: u16) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path().display();
        let conf = dir.path().join("nginx.conf");
        std::fs::write(
            &conf,
            format!(
                "load_module /usr/lib/nginx/modules/ngx_rtmp_module.so;\n\
                 daemon off;\nmaster_process off;\nerror_log {d}/error.log warn;\npid {d}/nginx.pid;\n\
                 events {{ worker_connections 64; }}\n\
                 rtmp {{ server {{ listen 127.0.0.1:{port}; application live {{ live on; }} }} }}\n"
            ),
        )
        .unwrap();
        let nginx = std::process::Command::new("nginx")
            .arg("-p")
            .arg(dir.path())
            .arg("-e")
            .arg(dir.path().join("error.log"))
            .arg("-c")
            .arg(&conf)
            .spawn()
            .expect("nginx runs (Debian nginx-light and libnginx-mod-rtmp; scripts/test installs them)");
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(std::time::Instant::now() < deadline, "nginx-rtmp did not listen");
            std::thread::sleep(Duration::from_millis(50));
        }
        Self { nginx, _dir: dir }
    }
}

impl Drop for RtmpServer {
    fn drop(&mut self) {
        let _ = self.nginx.kill();
        let _ = self.nginx.wait();
    }
}

/// An encoder pushing H.264 + AAC in FLV to `url` with `rtmp2sink`; stops when dropped.
struct RtmpPusher(gstreamer::Pipeline);

impl RtmpPusher {
    fn start(url: &str) -> Self {
        use gstreamer::prelude::*;
        gstreamer::init().unwrap();
        let pipeline = gstreamer::parse::launch(&format!(
            "videotestsrc is-live=true pattern=ball ! video/x-raw,width=320,height=240,framerate=25/1,format=I420 \
             ! x264enc tune=zerolatency speed-preset=ultrafast bitrate=300 key-int-max=25 ! video/x-h264,profile=main \
             ! h264parse ! flvmux streamable=true name=mux ! rtmp2sink location=\"{url}\" \
             audiotestsrc is-live=true ! audioconvert ! audioresample ! voaacenc bitrate=48000 ! aacparse ! mux."
        ))
        .unwrap()
        .downcast::<gstreamer::Pipeline>()
        .unwrap();
        pipeline.set_state(gstreamer::State::Playing).unwrap();
        Self(pipeline)
    }
}

impl Drop for RtmpPusher {
    fn drop(&mut self) {
        use gstreamer::prelude::*;
        let _ = self.0.set_state(gstreamer::State::Null);
    }
}

/// An RTMP stream pushed to a media server is pulled and cut into H.264 + AAC segments.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn live_rtmp_pull_takes_a_feed_pushed_to_an_rtmp_server() {
    let port = free_tcp_port();
    let _server = RtmpServer::start(port);
    let url = format!("rtmp://127.0.0.1:{port}/live/feed");
    let _encoder = RtmpPusher::start(&url);
    let dir = tempfile::tempdir().unwrap();
    let mut config = LiveIngestConfig::new(LiveInput::Rtmp { url }, dir.path().join("spool"));
    config.segment = Duration::from_secs(1);
    let cut = Arc::new(parking_lot::Mutex::new(Vec::<CutSegment>::new()));
    let feed = {
        let cut = cut.clone();
        courseway_media::live_feed::LiveFeed::start(config, move |s| cut.lock().push(s)).expect("the feed starts")
    };
    wait_until("three segments from the RTMP server", Duration::from_secs(90), || {
        cut.lock().len() >= 3
    })
    .await;
    let segments = cut.lock().clone();
    for s in &segments {
        assert!(
            s.bytes.len() % 188 == 0 && s.bytes.chunks(188).all(|p| p[0] == 0x47),
            "a segment is whole MPEG-TS packets"
        );
        assert_eq!((s.width, s.height), (320, 240), "the pushed picture, passed through");
    }
    let codecs = probe_codecs(dir.path(), &segments[1].bytes);
    assert!(codecs.contains("h264") && codecs.contains("aac"), "{codecs:?}");
    drop(feed);
}

/// The ABR run's ladder: (name, bits per second) best first, like the (1.5 Mbit/s top).
const ABR_LADDER: [(&str, u64); 3] = [("source", 1_500_000), ("low", 360_000), ("audio", 64_000)];
const ABR_SEGMENT_MS: u64 = 1000;

/// Segment `seq` of rendition `r`: bytes of its bit rate, distinct per rendition and sequence.
fn abr_segment(r: usize, seq: u64) -> Vec<u8> {
    let len = (ABR_LADDER[r].1 * ABR_SEGMENT_MS / 8000) as usize;
    let mut out = Vec::with_capacity(len);
    let mut x = seq.wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ (r as u64 + 1);
    while out.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        out.extend_from_slice(&x.to_le_bytes());
    }
    out.truncate(len);
    out
}

/// The newest sequence number of `channel` in a window.
fn newest(window: &[Arc<Signed<LiveSegment>>]) -> u64 {
    window.iter().map(|s| s.body.sequence).max().unwrap_or(0)
}

/// The media sequence and segment URIs (gaps left out) of a live media playlist.
fn listed(text: &str) -> (u64, Vec<String>) {
    let p = m3u8_rs::parse_media_playlist_res(text.as_bytes()).expect("a media playlist");
    let uris = p
        .segments
        .iter()
        .filter(|s| !s.unknown_tags.iter().any(|t| t.tag == "X-GAP"))
        .map(|s| s.uri.clone())
        .collect();
    (p.media_sequence, uris)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn live_station_on_a_1_mbit_line_settles_on_a_lower_rung_and_resumes_at_the_live_edge_after_an_outage() {
    use courseway_linkemu::{LinkConfig, ProxyConfig, UdpProxy};
    use std::time::Instant;

    let dir = tempfile::tempdir().unwrap();
    let keys = DeploymentKeys::generate().unwrap();
    let origin = Arc::new(courseway_tests::start_origin(dir.path(), &keys).await);
    let link = LinkConfig {
        rate_bps: Some(1_000_000),
        delay: Duration::from_millis(20),
        queue_bytes: 64 * 1024,
        ..LinkConfig::default()
    };
    let proxy = UdpProxy::start(origin.local_addr().unwrap(), ProxyConfig::symmetric(link))
        .await
        .unwrap();
    let name = NodeName::new("village-abr").unwrap();
    let mut config = StationConfig::new(
        name.clone(),
        loopback(),
        store(dir.path(), "village-abr"),
        parent(&NodeName::new("origin").unwrap(), proxy.local_addr()),
    );
    config.live_channels = vec![channel()];
    config.live_window = 8;
    let station = Station::start(config, keys.enroll(Role::Station, &name).unwrap(), keys.root_public())
        .await
        .unwrap();
    let lan = station
        .serve_lan(LanConfig::new(loopback(), Arc::new(|_| {})))
        .await
        .unwrap();
    let device = courseway_tests::http::Device::new([127, 0, 0, 1], "abr-test");

    // The origin cuts one segment of each rendition every second, all with the same number.
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let publisher = {
        let (origin, stop) = (origin.clone(), stop.clone());
        std::thread::spawn(move || {
            let start = Instant::now();
            let mut index = 0u64;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                for (r, (rendition, bps)) in ABR_LADDER.iter().enumerate() {
                    let info = courseway_content::LiveRendition {
                        rung: r as u8,
                        bandwidth: *bps as u32,
                        width: if r < 2 { 640 } else { 0 },
                        height: if r < 2 { 360 } else { 0 },
                        codecs: String::new(),
                    };
                    let bytes = abr_segment(r, index);
                    origin
                        .publish_live_segment(
                            &channel(),
                            rendition,
                            &info,
                            LiveCut {
                                index,
                                epoch: 0,
                                duration_ms: ABR_SEGMENT_MS as u32,
                                bytes: &bytes,
                            },
                        )
                        .unwrap();
                }
                index += 1;
                let next = start + Duration::from_millis(index * ABR_SEGMENT_MS);
                std::thread::sleep(next.saturating_duration_since(Instant::now()));
            }
        })
    };
    let base = {
        wait_until("the origin's first segment", Duration::from_secs(10), || {
            !origin.live_window(&channel()).is_empty()
        })
        .await;
        origin.live_window(&channel())[0].body.sequence
    };

    // Settling: the station starts at the top rung, which the line cannot carry.
    let started = Instant::now();
    let choice = || station.live_choice(&channel());
    wait_until("the station to step down", Duration::from_secs(60), || {
        choice().is_some_and(|c| c.rung > 0)
    })
    .await;
    let stepped_down = started.elapsed();
    // Settled: ten segments in a row on the same lower rung.
    let mut settled_on = choice().unwrap();
    let mut since = Instant::now();
    let settle_start = Instant::now();
    while since.elapsed() < Duration::from_millis(10 * ABR_SEGMENT_MS) {
        assert!(
            settle_start.elapsed() < Duration::from_secs(120),
            "the station never settled: {:?}",
            choice()
        );
        let now = choice().unwrap();
        if now.rung != settled_on.rung {
            settled_on = now;
            since = Instant::now();
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let settled = started.elapsed() - Duration::from_millis(10 * ABR_SEGMENT_MS);
    assert!(settled_on.rung > 0, "settled on the top rung over a 1 Mbit/s line");
    let rendition = settled_on.rendition.clone();
    let rung = ABR_LADDER.iter().position(|(n, _)| *n == rendition).unwrap();

    // The playlist of the rung chosen advances, and every segment it lists is the origin's.
    let playlist = format!("/live/{}/{rendition}.m3u8", channel());
    let fetch_playlist = || async {
        let a = device.get(lan.local_addr(), &playlist).await;
        assert_eq!(a.status, 200, "{}", a.text());
        listed(&a.text())
    };
    let (first_sequence, _) = fetch_playlist().await;
    let mut last = (first_sequence, Vec::new());
    let advance_deadline = Instant::now() + Duration::from_secs(60);
    while last.0 < first_sequence + 4 {
        assert!(
            Instant::now() < advance_deadline,
            "the live playlist stalled at {}",
            last.0
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
        last = fetch_playlist().await;
    }
    assert!(!last.1.is_empty());
    for uri in &last.1 {
        let seq: u64 = uri.rsplit('/').next().unwrap().trim_end_matches(".ts").parse().unwrap();
        let a = device
            .get(lan.local_addr(), &format!("/live/{}/{uri}", channel()))
            .await;
        assert_eq!(a.status, 200, "{uri}: {}", a.text());
        assert!(
            a.body[..] == abr_segment(rung, seq - base)[..],
            "{uri} differs from what the origin announced"
        );
    }
    let master = device.get(lan.local_addr(), &format!("/live/{}.m3u8", channel())).await;
    assert_eq!(master.status, 200);
    let parsed = m3u8_rs::parse_master_playlist_res(&master.body).unwrap();
    assert!(
        parsed
            .variants
            .iter()
            .any(|v| v.uri.ends_with(&format!("/{rendition}.m3u8"))),
        "{}",
        master.text()
    );
    let metrics = {
        let mut registry = courseway_node::metrics::registry("station");
        registry.register_collector(station.metrics());
        courseway_node::metrics::MetricsHandler::new(registry).render()
    };
    let current = choice().unwrap();
    assert!(
        metrics.lines().any(|l| l.contains("station_live_rendition{")
            && l.contains(&format!("rendition=\"{}\"", current.rendition))
            && l.ends_with(&format!(" {}", current.rung))),
        "{metrics}"
    );

    // A 20 s outage: the station resumes at the live edge without filling the outage.
    const OUTAGE: Duration = Duration::from_secs(20);
    proxy.cut();
    let cut_edge = newest(&origin.live_window(&channel()));
    tokio::time::sleep(OUTAGE).await;
    proxy.restore();
    let restored = Instant::now();
    let restore_edge = newest(&origin.live_window(&channel()));
    let station_newest = || {
        station
            .live_completions(&channel())
            .keys()
            .map(|(_, seq)| *seq)
            .max()
            .unwrap_or(0)
    };
    wait_until(
        "the station to resume at the live edge",
        Duration::from_secs(90),
        || station_newest() + 2 >= newest(&origin.live_window(&channel())),
    )
    .await;
    let resumed = restored.elapsed();
    let at_edge = (station_newest(), newest(&origin.live_window(&channel())));
    let filled = station
        .live_completions(&channel())
        .keys()
        .filter(|(_, seq)| *seq > cut_edge + 1 && *seq + 3 < restore_edge)
        .count();
    let outage_segments = restore_edge - cut_edge;
    assert!(
        (filled as u64) * 2 < outage_segments,
        "the station filled {filled} of the outage's {outage_segments} segments"
    );
    // And the playlist goes on after the outage.
    let (after, uris) = fetch_playlist_any(&device, lan.local_addr(), &station, &channel()).await;
    assert!(
        after > last.0 && !uris.is_empty(),
        "the playlist did not move on after the outage"
    );
    let choice_after = choice().unwrap();
    eprintln!(
        "live ABR over a 1 Mbit/s line (ladder 1.5 Mbit/s / 360 kbit/s / 64 kbit/s, 1 s segments): \
         stepped down after {:.1} s, settled on {rendition:?} (rung {}) after {:.1} s; \
         after a {} s outage ({outage_segments} segments) resumed at the live edge in {:.1} s \
         (station {} vs origin {}), {filled} outage segments fetched, {} skipped, {} lost, {} switches, now on {:?}",
        stepped_down.as_secs_f64(),
        settled_on.rung,
        settled.as_secs_f64(),
        OUTAGE.as_secs(),
        resumed.as_secs_f64(),
        at_edge.0,
        at_edge.1,
        choice_after.skipped,
        choice_after.lost,
        choice_after.switches,
        choice_after.rendition,
    );
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    publisher.join().unwrap();
    drop(lan);
    station.shutdown().await;
}

/// The playlist of the rendition the station fetches now: its media sequence and segments.
async fn fetch_playlist_any(
    device: &courseway_tests::http::Device,
    lan: std::net::SocketAddr,
    station: &Station,
    channel: &ChannelId,
) -> (u64, Vec<String>) {
    let mut out = (0, Vec::new());
    wait_until("a live playlist after the outage", Duration::from_secs(60), || {
        station.live_choice(channel).is_some()
    })
    .await;
    for _ in 0..240 {
        let rendition = station.live_choice(channel).unwrap().rendition;
        let a = device.get(lan, &format!("/live/{channel}/{rendition}.m3u8")).await;
        if a.status == 200 {
            out = listed(&a.text());
            if !out.1.is_empty() {
                return out;
            }
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    out
}

/// ffprobe's streams of `bytes` (an MPEG-TS segment): `codec_name,width,height` per stream.
fn probe_streams(dir: &Path, bytes: &[u8]) -> Vec<String> {
    let path = dir.join("rung.ts");
    std::fs::write(&path, bytes).unwrap();
    let out = std::process::Command::new("timeout")
        .args([
            "60",
            "ffprobe",
            "-v",
            "error",
            "-show_entries",
            "stream=codec_name,width,height",
            "-of",
            "csv=p=0",
        ])
        .arg(&path)
        .output()
        .expect("ffprobe runs (Debian package ffmpeg)");
    assert!(
        out.status.success(),
        "ffprobe: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut streams: Vec<String> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| l.trim_end_matches(',').to_string())
        .filter(|l| !l.is_empty())
        .collect();
    // MPEG-TS streams are listed under their program too.
    streams.sort();
    streams.dedup();
    streams
}

/// A ladder cut from one feed whose codecs are read at run time: every rendition's segments,
/// `wanted` of each.
async fn ingest_ladder(
    codecs: courseway_media::testsrc::FeedCodecs,
    wanted: usize,
) -> (LiveIngestConfig, Vec<Vec<CutSegment>>) {
    use courseway_media::live::{LiveRenditionConfig, RenditionKind};
    let port = free_udp_port();
    let dir = tempfile::tempdir().unwrap();
    let mut config = LiveIngestConfig::new(
        LiveInput::UdpMpegTs {
            address: [127, 0, 0, 1].into(),
            port,
        },
        dir.path().join("spool"),
    );
    config.segment = Duration::from_secs(1);
    config.codecs = courseway_media::live::LiveCodecs::Auto { video_kbps: 900 };
    config.audio_kbps = 48;
    config.renditions = vec![
        LiveRenditionConfig::new("source", RenditionKind::Source),
        LiveRenditionConfig::new(
            "low",
            RenditionKind::Video {
                width: 256,
                height: 144,
                video_kbps: 200,
            },
        ),
        LiveRenditionConfig::new("audio", RenditionKind::AudioOnly),
    ];
    let cut = Arc::new(parking_lot::Mutex::new(vec![Vec::new(); 3]));
    let ingest = {
        let cut = cut.clone();
        LiveIngest::start(&config, move |s| cut.lock()[s.rendition].push(s)).expect("the ingest starts")
    };
    let feed = courseway_media::testsrc::LiveTestFeed::start(
        &courseway_media::testsrc::FeedTarget::Udp(([127, 0, 0, 1], port).into()),
        codecs,
    )
    .expect("the test encoder starts");
    wait_until("every rendition to be cut", Duration::from_secs(180), || {
        assert!(!ingest.is_finished(), "the ingest stopped early");
        cut.lock().iter().all(|r| r.len() >= wanted)
    })
    .await;
    drop(feed);
    ingest.stop().expect("the ingest ran without error");
    let segments = cut.lock().clone();
    (config, segments)
}

/// Checks a ladder's renditions with ffprobe and their bit rates; returns a line of figures.
fn check_ladder(config: &LiveIngestConfig, segments: &[Vec<CutSegment>], source_streams: &[&str]) -> String {
    let dir = tempfile::tempdir().unwrap();
    let mut figures = Vec::new();
    for (r, cut) in segments.iter().enumerate() {
        // The first segment may be short (it starts where the feed was joined): measure the rest.
        let measured = &cut[1..];
        for (i, s) in measured.iter().enumerate() {
            assert_eq!(s.rendition, r);
            assert_eq!(s.index, i as u64 + 1, "segments of a rendition are counted in order");
            assert!(s.bytes.len() % 188 == 0 && s.bytes.chunks(188).all(|p| p[0] == 0x47));
        }
        let bytes: u64 = measured.iter().map(|s| s.bytes.len() as u64).sum();
        let ms: u64 = measured.iter().map(|s| u64::from(s.duration_ms)).sum();
        let kbps = bytes * 8 / ms.max(1);
        let streams = probe_streams(dir.path(), &measured[0].bytes);
        let info = courseway_media::live::rendition_info(config, &measured[0]);
        let name = &config.renditions[r].name;
        match r {
            0 => assert_eq!(streams, source_streams, "source"),
            1 => {
                assert_eq!(streams, ["aac", "h264,256,144"], "low");
                assert!(kbps <= 400, "the low rung is {kbps} kbit/s, over 400");
                assert_eq!((info.width, info.height), (256, 144));
                assert!(
                    info.codecs.starts_with("avc1.") && info.codecs.ends_with(",mp4a.40.2"),
                    "{info:?}"
                );
            }
            _ => {
                assert_eq!(streams, ["aac"], "audio only");
                assert!(
                    kbps <= 128,
                    "the audio rung is {kbps} kbit/s (48 kbit/s AAC, MPEG-TS packets around every frame)"
                );
                assert_eq!((info.width, info.codecs.as_str()), (0, "mp4a.40.2"));
            }
        }
        let durations: Vec<u32> = measured.iter().map(|s| s.duration_ms).collect();
        figures.push(format!("{name} {kbps} kbit/s {streams:?} segments {durations:?} ms"));
    }
    figures.join("; ")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn live_ladder_passes_an_h264_aac_feed_through_and_adds_a_low_rung_and_audio_only() {
    let (config, segments) = ingest_ladder(courseway_media::testsrc::FeedCodecs::H264Aac, 4).await;
    // The feed is 320x240 H.264 + AAC: the source is passed through as sent.
    let figures = check_ladder(&config, &segments, &["aac", "h264,320,240"]);
    eprintln!("live ladder, H.264/AAC feed passed through: {figures}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn live_ladder_transcodes_an_mpeg2_feed_for_every_rendition() {
    let (config, segments) = ingest_ladder(courseway_media::testsrc::FeedCodecs::Mpeg2Mp2, 4).await;
    // The feed is MPEG-2 + MP2: detected, and the source is encoded to H.264 + AAC.
    let figures = check_ladder(&config, &segments, &["aac", "h264,320,240"]);
    eprintln!("live ladder, MPEG-2/MP2 feed transcoded: {figures}");
}
