//! The way up, end to end: what a child sees when it asks relays for something that does not
//! exist, how it returns to a preferred parent, and how many requests reach the origin.

use std::sync::atomic::Ordering;
use std::time::Duration;

use courseway::topology::DeploymentKeys;
use courseway_content::synthetic::{BuiltLesson, SyntheticLesson};
use courseway_content::{ChunkId, ChunkRef, LessonId, NodeName, RenditionKind};
use courseway_linkemu::{LinkConfig, ProxyConfig, UdpProxy};
use courseway_net::{Client, TransportConfig};
use courseway_node::{Parent, Upstream, UpstreamConfig, UpstreamError};
use courseway_origin::Origin;
use courseway_proto::{ErrorCode, Role};
use courseway_relay::{PrefetchPolicy, Relay, RelayConfig};
use courseway_store::StoreConfig;
use courseway_tests::{loopback, wait_until};

fn lesson(name: &str, seed: u64, segments: u32) -> BuiltLesson {
    let mut spec = SyntheticLesson::standard(LessonId::new(name).unwrap(), seed, segments);
    spec.renditions = vec![(
        "360p".into(),
        RenditionKind::Video {
            width: 640,
            height: 360,
        },
        400_000,
    )];
    spec.attachment_size = 0;
    spec.build()
}

async fn origin(dir: &std::path::Path, keys: &DeploymentKeys) -> Origin {
    courseway_tests::start_origin(dir, keys).await
}

fn origin_parent(origin: &Origin) -> Parent {
    Parent {
        name: NodeName::new("origin").unwrap(),
        addr: origin.local_addr().unwrap(),
    }
}

/// A relay under `parents` that fetches only what its children ask for.
async fn relay(dir: &std::path::Path, keys: &DeploymentKeys, name: &str, parents: Vec<Parent>) -> Relay {
    relay_with(dir, keys, name, parents, TransportConfig::default()).await
}

async fn relay_with(
    dir: &std::path::Path,
    keys: &DeploymentKeys,
    name: &str,
    parents: Vec<Parent>,
    transport: TransportConfig,
) -> Relay {
    let name = NodeName::new(name).unwrap();
    let mut config = RelayConfig::new(
        name.clone(),
        loopback(),
        StoreConfig::new(dir.join(name.as_str()), 1 << 30),
        UpstreamConfig::new(parents),
    );
    config.prefetch = PrefetchPolicy::None;
    config.transport = transport;
    Relay::start(config, keys.enroll(Role::Relay, &name).unwrap(), keys.root_public())
        .await
        .unwrap()
}

fn relay_parent(relay: &Relay, name: &str) -> Parent {
    Parent {
        name: NodeName::new(name).unwrap(),
        addr: relay.local_addr().unwrap(),
    }
}

/// The upstream client of a station called `name` (what a station's fetcher uses).
fn station_upstream(keys: &DeploymentKeys, name: &str, config: UpstreamConfig) -> Upstream {
    station_upstream_with(keys, name, config, &TransportConfig::default())
}

fn station_upstream_with(
    keys: &DeploymentKeys,
    name: &str,
    config: UpstreamConfig,
    transport: &TransportConfig,
) -> Upstream {
    let name = NodeName::new(name).unwrap();
    let client = Client::bind(keys.enroll(Role::Station, &name).unwrap(), transport, loopback()).unwrap();
    Upstream::new(client, config)
}

fn refs(l: &BuiltLesson) -> Vec<(ChunkRef, Vec<u8>)> {
    l.chunks
        .iter()
        .map(|(id, bytes)| {
            (
                ChunkRef {
                    id: *id,
                    size: bytes.len() as u32,
                },
                bytes.clone(),
            )
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn what_the_origin_never_published_is_not_found_through_relays_without_retries() {
    let dir = tempfile::tempdir().unwrap();
    let keys = DeploymentKeys::generate().unwrap();
    let origin = origin(dir.path(), &keys).await;
    let l = lesson("published-1", 1, 1);
    origin.publish(&[(l.manifest.clone(), &l.chunks)]).unwrap();
    let relay_a = relay(dir.path(), &keys, "district-a", vec![origin_parent(&origin)]).await;
    let relay_b = relay(dir.path(), &keys, "district-b", vec![origin_parent(&origin)]).await;
    let station = station_upstream(
        &keys,
        "village-1",
        UpstreamConfig::new(vec![
            relay_parent(&relay_a, "district-a"),
            relay_parent(&relay_b, "district-b"),
        ]),
    );

    let never_published = ChunkRef::of(b"a chunk nobody published");
    let err = station.fetch_chunk(never_published, None).await.unwrap_err();
    assert!(
        matches!(&err, UpstreamError::NotFound(reply) if reply.code == ErrorCode::NotFound),
        "expected NotFound, got: {err}"
    );
    // Each parent was asked once, and each relay asked the origin once.
    assert_eq!(station.stats().chunk_requests.load(Ordering::Relaxed), 2);
    for relay in [&relay_a, &relay_b] {
        let stats = relay.stats();
        assert_eq!(stats.misses, 1, "{stats:?}");
        assert_eq!(stats.bytes_fetched, 0, "{stats:?}");
    }

    let err = station
        .fetch_manifest(ChunkId::of(b"a manifest nobody published"))
        .await
        .unwrap_err();
    assert!(
        matches!(&err, UpstreamError::NotFound(reply) if reply.code == ErrorCode::NotFound),
        "expected NotFound, got: {err}"
    );

    // What was published still comes through the same relays.
    let (id, bytes) = l.chunks.iter().next().unwrap();
    let fetched = station
        .fetch_chunk(
            ChunkRef {
                id: *id,
                size: bytes.len() as u32,
            },
            None,
        )
        .await
        .unwrap();
    assert_eq!(&fetched, bytes);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_primary_is_probed_in_the_background_and_taken_back_when_it_returns() {
    let dir = tempfile::tempdir().unwrap();
    let keys = DeploymentKeys::generate().unwrap();
    let origin = origin(dir.path(), &keys).await;
    let l = lesson("probe-1", 3, 8);
    origin.publish(&[(l.manifest.clone(), &l.chunks)]).unwrap();
    let chunks = refs(&l);
    assert!(chunks.len() >= 6, "{} chunks", chunks.len());
    // The primary's idle timeout is short, so an established connection through the cut link
    // soon ends (QUIC takes the smaller of both sides' idle timeouts once connected)...
    let short_idle = TransportConfig {
        idle_timeout: Duration::from_secs(1),
        keep_alive_interval: Duration::from_millis(250),
        ..TransportConfig::default()
    };
    let primary = relay_with(
        dir.path(),
        &keys,
        "district-p",
        vec![origin_parent(&origin)],
        short_idle,
    )
    .await;
    let backup = relay(dir.path(), &keys, "district-b", vec![origin_parent(&origin)]).await;
    // The primary is reached through a link that can be cut: a cut link drops every packet
    // silently, the worst case for a connect.
    let link = UdpProxy::start(
        primary.local_addr().unwrap(),
        ProxyConfig::symmetric(LinkConfig::default()),
    )
    .await
    .unwrap();
    let mut config = UpstreamConfig::new(vec![
        Parent {
            name: NodeName::new("district-p").unwrap(),
            addr: link.local_addr(),
        },
        relay_parent(&backup, "district-b"),
    ]);
    // ...but the station's own is long, so a handshake into the cut link (which knows only the
    // station's) and the connect timeout never end by themselves: any request that waited on
    // one would hang the test. The primary is due for a re-check at every request.
    config.connect_timeout = Duration::from_secs(3600);
    config.primary_recheck = Duration::from_millis(50);
    config.retry_after = Duration::from_millis(50);
    let transport = TransportConfig {
        idle_timeout: Duration::from_secs(3600),
        keep_alive_interval: Duration::from_millis(250),
        ..TransportConfig::default()
    };
    let station = station_upstream_with(&keys, "village-p", config, &transport);
    let served = |r: &Relay| r.stats().bytes_served;
    let fetch = |i: usize| {
        let (chunk, bytes) = chunks[i].clone();
        let station = &station;
        async move {
            let got = station.fetch_chunk(chunk, None).await.unwrap();
            assert_eq!(got, bytes, "chunk {i} differs");
            u64::from(chunk.size)
        }
    };

    // On the primary.
    let size = fetch(0).await;
    assert_eq!((served(&primary), served(&backup)), (size, 0));

    // Cut: once the connection has timed out, the station moves to the backup and keeps
    // fetching from it, however long the primary stays silent.
    link.cut();
    wait_until("the cut connection to end", Duration::from_secs(30), || {
        station.current_parent().is_none()
    })
    .await;
    let (primary_before, backup_before) = (served(&primary), served(&backup));
    let on_backup = async {
        let mut bytes = 0;
        for i in 1..4 {
            bytes += fetch(i).await;
            // Give the re-check time to come due (and the primary's down mark to expire).
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        bytes
    };
    let bytes = tokio::time::timeout(Duration::from_secs(60), on_backup)
        .await
        .expect("fetches on the backup waited on the silent primary");
    assert_eq!(served(&primary), primary_before);
    assert_eq!(served(&backup), backup_before + bytes);
    assert_eq!(station.current_parent().unwrap().name.as_str(), "district-b");
    assert_eq!(station.stats().failovers.load(Ordering::Relaxed), 1);

    // Restored: the background probe finds the primary and requests go back to it.
    link.restore();
    wait_until("the station to return to its primary", Duration::from_secs(60), || {
        station
            .current_parent()
            .is_some_and(|p| p.name.as_str() == "district-p")
    })
    .await;
    assert_eq!(station.stats().failovers.load(Ordering::Relaxed), 2);
    let (primary_before, backup_before) = (served(&primary), served(&backup));
    let size = fetch(4).await + fetch(5).await;
    assert_eq!(served(&primary), primary_before + size);
    assert_eq!(served(&backup), backup_before);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn children_asking_a_relay_for_the_same_manifest_cost_the_origin_one_send() {
    use courseway_content::encoding::Encode;
    const CHILDREN: usize = 16;
    let dir = tempfile::tempdir().unwrap();
    let keys = DeploymentKeys::generate().unwrap();
    let origin = origin(dir.path(), &keys).await;
    let l = lesson("manifest-1", 5, 2);
    origin.publish(&[(l.manifest.clone(), &l.chunks)]).unwrap();
    let relay = relay(dir.path(), &keys, "district-m", vec![origin_parent(&origin)]).await;
    let parent = relay_parent(&relay, "district-m");
    let children: Vec<_> = (0..CHILDREN)
        .map(|i| {
            let config = UpstreamConfig::new(vec![parent.clone()]);
            std::sync::Arc::new(station_upstream(&keys, &format!("village-m{i}"), config))
        })
        .collect();
    // Connected first, so the requests themselves leave together.
    for child in &children {
        child.connection(&[]).await.unwrap();
    }
    let hash = l.manifest.hash();
    let barrier = std::sync::Arc::new(tokio::sync::Barrier::new(CHILDREN));
    let mut asking = tokio::task::JoinSet::new();
    for child in &children {
        let (child, barrier) = (child.clone(), barrier.clone());
        asking.spawn(async move {
            barrier.wait().await;
            child.fetch_manifest(hash).await
        });
    }
    let expected = l.manifest.to_bytes();
    while let Some(got) = asking.join_next().await {
        assert_eq!(got.unwrap().unwrap(), expected);
    }
    assert_eq!(origin.stats().manifests_sent, 1, "{:?}", origin.stats());
    // Later askers are served from the relay's cache.
    assert_eq!(children[0].fetch_manifest(hash).await.unwrap(), expected);
    assert_eq!(origin.stats().manifests_sent, 1);
}

/// A parent whose manifests never match their hashes.
struct ManifestLiar {
    announce: tokio::sync::broadcast::Sender<courseway_proto::Announcement>,
}

impl courseway_node::NodeService for ManifestLiar {
    fn welcome(&self) -> courseway_proto::Welcome {
        courseway_proto::Welcome {
            node: NodeName::new("liar").unwrap(),
            role: Role::Relay,
            software: "liar".into(),
        }
    }

    async fn serve_chunk(
        &self,
        req: &mut courseway_net::IncomingRequest,
        _get: courseway_proto::GetChunk,
    ) -> Result<(), courseway_net::NetError> {
        courseway_node::reply_error(req, ErrorCode::NotFound, "no chunks here").await
    }

    async fn manifest(&self, _hash: ChunkId) -> Result<Vec<u8>, courseway_proto::ErrorReply> {
        Ok(b"not the manifest you asked for".to_vec())
    }

    fn catalog(&self) -> Option<std::sync::Arc<courseway_content::Signed<courseway_content::Catalog>>> {
        None
    }

    fn announcements(&self) -> tokio::sync::broadcast::Receiver<courseway_proto::Announcement> {
        self.announce.subscribe()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_manifest_that_does_not_match_its_hash_is_refused_to_every_waiter_and_never_kept() {
    const CHILDREN: usize = 8;
    let dir = tempfile::tempdir().unwrap();
    let keys = DeploymentKeys::generate().unwrap();
    let liar_name = NodeName::new("liar").unwrap();
    let liar = courseway_net::Server::bind(
        keys.enroll(Role::Relay, &liar_name).unwrap(),
        &TransportConfig::default(),
        loopback(),
    )
    .unwrap();
    let liar_addr = liar.local_addr().unwrap();
    let service = std::sync::Arc::new(ManifestLiar {
        announce: tokio::sync::broadcast::channel(4).0,
    });
    let liar_task = tokio::spawn(async move {
        liar.serve(move |c| courseway_node::serve_connection(service.clone(), c))
            .await
    });
    let relay = relay(
        dir.path(),
        &keys,
        "district-l",
        vec![Parent {
            name: liar_name,
            addr: liar_addr,
        }],
    )
    .await;
    let parent = relay_parent(&relay, "district-l");
    let children: Vec<_> = (0..CHILDREN)
        .map(|i| {
            let config = UpstreamConfig::new(vec![parent.clone()]);
            std::sync::Arc::new(station_upstream(&keys, &format!("village-l{i}"), config))
        })
        .collect();
    for child in &children {
        child.connection(&[]).await.unwrap();
    }
    let hash = ChunkId::of(b"the real manifest");
    let barrier = std::sync::Arc::new(tokio::sync::Barrier::new(CHILDREN));
    let mut asking = tokio::task::JoinSet::new();
    for child in &children {
        let (child, barrier) = (child.clone(), barrier.clone());
        asking.spawn(async move {
            barrier.wait().await;
            child.fetch_manifest(hash).await
        });
    }
    while let Some(got) = asking.join_next().await {
        let err = got.unwrap().unwrap_err();
        assert!(
            matches!(&err, UpstreamError::Refused(r) if r.code == ErrorCode::UpstreamUnavailable),
            "{err}"
        );
    }
    // Refused at the relay (a failed fetch is not handed to later askers, so children that
    // arrive after it ended start another one)...
    let refused = relay.stats().bad_chunks;
    assert!((1..=CHILDREN as u64).contains(&refused), "{:?}", relay.stats());
    // ...and nothing kept: the next request fetches (and refuses) again.
    assert!(children[0].fetch_manifest(hash).await.is_err());
    assert_eq!(relay.stats().bad_chunks, refused + 1, "{:?}", relay.stats());
    liar_task.abort();
}
