//! Revocation end to end (issue #8): the origin revokes a station; the next catalog carries the
//! revocation list down the tree; the station's relay and the origin refuse it at the handshake
//! and close its open connections; it receives no chunk published after the revocation, while
//! a station next to it carries on.

use std::time::Duration;

use courseway::topology::DeploymentKeys;
use courseway_content::synthetic::{BuiltLesson, SyntheticLesson};
use courseway_content::{ChunkId, LessonId, NodeName, RenditionKind};
use courseway_net::{Client, TransportConfig};
use courseway_node::{clock, Parent, UpstreamConfig};
use courseway_origin::{Origin, OriginConfig};
use courseway_proto::{GetChunk, Role};
use courseway_relay::{PrefetchPolicy, Relay, RelayConfig};
use courseway_station::{Station, StationConfig};
use courseway_store::StoreConfig;
use courseway_tests::{loopback, wait_until};

const WAIT: Duration = Duration::from_secs(120);

fn lesson(name: &str, seed: u64) -> BuiltLesson {
    let mut spec = SyntheticLesson::standard(LessonId::new(name).unwrap(), seed, 3);
    spec.renditions = vec![(
        "720p".into(),
        RenditionKind::Video {
            width: 1280,
            height: 720,
        },
        1_000_000,
    )];
    spec.attachment_size = 0;
    spec.build()
}

fn n(s: &str) -> NodeName {
    NodeName::new(s).unwrap()
}

/// Whether a node enrolled as `role`/`name` (a fresh certificate: a stolen box whose owner
/// re-made its key would hold one like it) gets `chunk` from the node `node` at `addr`.
async fn served(keys: &DeploymentKeys, name: &str, addr: std::net::SocketAddr, node: &str, chunk: ChunkId) -> bool {
    let client = Client::bind(
        keys.enroll(Role::Station, &n(name)).unwrap(),
        &TransportConfig::default(),
        loopback(),
    )
    .unwrap();
    let attempt = async {
        let conn = client.connect(addr, &n(node)).await?;
        conn.fetch_chunk(GetChunk { id: chunk, offset: 0 }).await
    };
    let got = tokio::time::timeout(WAIT, attempt)
        .await
        .expect("an answer within the wait");
    client.shutdown().await;
    got.is_ok()
}

fn holds(station: &Station, lesson: &BuiltLesson) -> usize {
    lesson.chunks.keys().filter(|id| station.store().has(id)).count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revoked_station_is_refused_by_its_relay_and_its_origin() {
    let dir = tempfile::tempdir().unwrap();
    let keys = DeploymentKeys::generate().unwrap();
    let origin = Origin::start(
        OriginConfig {
            name: n("origin"),
            listen: loopback(),
            store: StoreConfig::new(dir.path().join("origin"), 1 << 30),
            transport: Default::default(),
            catalog_validity: Duration::from_secs(86_400),
        },
        keys.enroll(Role::Origin, &n("origin")).unwrap(),
        keys.online_key(clock::now()),
    )
    .await
    .unwrap();
    let origin_parent = Parent {
        name: n("origin"),
        addr: origin.local_addr().unwrap(),
    };
    let mut rc = RelayConfig::new(
        n("district-1"),
        loopback(),
        StoreConfig::new(dir.path().join("relay"), 1 << 30),
        UpstreamConfig::new(vec![origin_parent.clone()]),
    );
    rc.prefetch = PrefetchPolicy::None;
    let relay = Relay::start(
        rc,
        keys.enroll(Role::Relay, &n("district-1")).unwrap(),
        keys.root_public(),
    )
    .await
    .unwrap();
    let relay_parent = Parent {
        name: n("district-1"),
        addr: relay.local_addr().unwrap(),
    };
    // Both stations have the relay first and the origin as a second parent, so the revoked one
    // would turn to the origin once its relay refuses it.
    let station = |name: &'static str| {
        let mut upstream = UpstreamConfig::new(vec![relay_parent.clone(), origin_parent.clone()]);
        upstream.retry_after = Duration::from_millis(200);
        let mut sc = StationConfig::new(
            n(name),
            loopback(),
            StoreConfig::new(dir.path().join(name), 1 << 30),
            upstream,
        );
        sc.retry_after = Duration::from_millis(200);
        Station::start(sc, keys.enroll(Role::Station, &n(name)).unwrap(), keys.root_public())
    };
    let stolen = station("village-stolen").await.unwrap();
    let kept = station("village-kept").await.unwrap();

    // Before: both stations get the first lesson.
    let first = lesson("before-revocation", 1);
    let v1 = origin.publish(&[(first.manifest.clone(), &first.chunks)]).unwrap();
    for s in [&stolen, &kept] {
        let mut status = s.status();
        wait_until("both stations to hold the first lesson", WAIT, || {
            let st = status.borrow_and_update();
            st.synced && st.catalog_version == v1
        })
        .await;
        assert_eq!(holds(s, &first), first.chunks.len());
    }
    let probe = *first.chunks.keys().next().unwrap();
    assert!(
        served(
            &keys,
            "village-stolen",
            relay.local_addr().unwrap(),
            "district-1",
            probe
        )
        .await
    );

    // The revocation: the next catalog lists the station.
    let v2 = origin.revoke(&[n("village-stolen")]).unwrap();
    assert_eq!(v2, v1 + 1);
    assert_eq!(origin.revoked(), vec![n("village-stolen")]);
    assert!(origin.catalog().unwrap().body.is_revoked(&n("village-stolen")));
    wait_until("the relay to accept the revoking catalog", WAIT, || {
        relay.stats().catalog_version >= v2
    })
    .await;

    // After: a lesson published now reaches the kept station, never the revoked one.
    let second = lesson("after-revocation", 2);
    let v3 = origin.publish(&[(second.manifest.clone(), &second.chunks)]).unwrap();
    let mut status = kept.status();
    wait_until("the kept station to hold the second lesson", WAIT, || {
        let st = status.borrow_and_update();
        st.synced && st.catalog_version == v3
    })
    .await;
    assert_eq!(holds(&kept, &second), second.chunks.len());
    assert_eq!(
        holds(&stolen, &second),
        0,
        "the revoked station received chunks after its revocation"
    );
    assert!(
        stolen.status().borrow().catalog_version < v3,
        "the revoked station still follows the catalog"
    );

    // At the handshake: the relay and the origin refuse the name, with any certificate for it;
    // they serve the kept station's name.
    let relay_addr = relay.local_addr().unwrap();
    let origin_addr = origin.local_addr().unwrap();
    let chunk = *second.chunks.keys().next().unwrap();
    assert!(!served(&keys, "village-stolen", relay_addr, "district-1", chunk).await);
    assert!(!served(&keys, "village-stolen", origin_addr, "origin", chunk).await);
    assert!(served(&keys, "village-kept", relay_addr, "district-1", chunk).await);
    assert!(served(&keys, "village-kept", origin_addr, "origin", chunk).await);
    assert_eq!(holds(&stolen, &second), 0);

    stolen.shutdown().await;
    kept.shutdown().await;
    drop(relay);
    origin.shutdown();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revoked_list_survives_an_origin_restart_and_further_publications() {
    let dir = tempfile::tempdir().unwrap();
    let keys = DeploymentKeys::generate().unwrap();
    let config = || OriginConfig {
        name: n("origin"),
        listen: loopback(),
        store: StoreConfig::new(dir.path().join("origin"), 1 << 30),
        transport: Default::default(),
        catalog_validity: Duration::from_secs(86_400),
    };
    let start = || async {
        // The previous origin's tasks let go of its store (RocksDB's lock) as the runtime
        // finishes aborting them: a restart in the same process waits for that.
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        loop {
            match Origin::start(
                config(),
                keys.enroll(Role::Origin, &n("origin")).unwrap(),
                keys.online_key(clock::now()),
            )
            .await
            {
                Ok(origin) => break origin,
                // The store is still held by the previous origin's ending tasks.
                Err(_) if std::time::Instant::now() < deadline => {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                Err(e) => panic!("the origin does not restart: {e}"),
            }
        }
    };
    let origin = start().await;
    assert!(matches!(
        origin.revoke(&[n("origin")]),
        Err(courseway_origin::OriginError::RevokeSelf { .. })
    ));
    origin.revoke(&[n("village-9"), n("village-3")]).unwrap();
    let l = lesson("kept-after-restart", 3);
    origin.publish(&[(l.manifest.clone(), &l.chunks)]).unwrap();
    assert_eq!(origin.revoked(), vec![n("village-3"), n("village-9")]);
    origin.shutdown();
    drop(origin);

    let origin = start().await;
    assert_eq!(origin.revoked(), vec![n("village-3"), n("village-9")]);
    // The restored list is enforced at once, before any new catalog.
    let chunk = *l.chunks.keys().next().unwrap();
    assert!(!served(&keys, "village-3", origin.local_addr().unwrap(), "origin", chunk).await);
    assert!(served(&keys, "village-4", origin.local_addr().unwrap(), "origin", chunk).await);
    origin.shutdown();
}
