//! The way up, end to end: what a child sees when it asks relays for something that does not
//! exist, how it returns to a preferred parent, and how many requests reach the origin.

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use courseway::topology::DeploymentKeys;
use courseway_content::synthetic::{BuiltLesson, SyntheticLesson};
use courseway_content::{ChunkId, ChunkRef, LessonId, NodeName, RenditionKind};
use courseway_net::{Client, TransportConfig};
use courseway_node::{Parent, Upstream, UpstreamConfig, UpstreamError};
use courseway_origin::{Origin, OriginConfig};
use courseway_proto::{ErrorCode, Role};
use courseway_relay::{PrefetchPolicy, Relay, RelayConfig};
use courseway_store::StoreConfig;

fn loopback() -> SocketAddr {
    SocketAddr::from((Ipv4Addr::LOCALHOST, 0))
}

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

#[allow(dead_code)] // until the tests below use it
async fn wait_until(what: &str, timeout: Duration, mut done: impl FnMut() -> bool) {
    let start = Instant::now();
    while !done() {
        assert!(
            start.elapsed() < timeout,
            "timed out after {timeout:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
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

fn origin_parent(origin: &Origin) -> Parent {
    Parent {
        name: NodeName::new("origin").unwrap(),
        addr: origin.local_addr().unwrap(),
    }
}

/// A relay under `parents` that fetches only what its children ask for.
async fn relay(dir: &std::path::Path, keys: &DeploymentKeys, name: &str, parents: Vec<Parent>) -> Relay {
    let name = NodeName::new(name).unwrap();
    let mut config = RelayConfig::new(
        name.clone(),
        loopback(),
        StoreConfig::new(dir.join(name.as_str()), 1 << 30),
        UpstreamConfig::new(parents),
    );
    config.prefetch = PrefetchPolicy::None;
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
    let name = NodeName::new(name).unwrap();
    let client = Client::bind(
        keys.enroll(Role::Station, &name).unwrap(),
        &TransportConfig::default(),
        loopback(),
    )
    .unwrap();
    Upstream::new(client, config)
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
