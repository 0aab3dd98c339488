//! Upstream mirroring: a city origin follows a provincial origin of another deployment, takes
//! the lessons of the chosen publishers and categories through the normal chunk path, and
//! republishes them to its own stations under its own signature.

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use courseway::topology::DeploymentKeys;
use courseway_content::synthetic::{BuiltLesson, SyntheticLesson};
use courseway_content::{Category, LessonId, NodeName, RenditionKind};
use courseway_net::TransportConfig;
use courseway_node::{Parent, UpstreamConfig};
use courseway_origin::mirror::{Mirror, MirrorConfig, MirrorSelection};
use courseway_origin::{Origin, OriginConfig};
use courseway_proto::Role;
use courseway_station::{Station, StationConfig};
use courseway_store::StoreConfig;
use courseway_tests::{loopback, wait_until};

fn lesson(name: &str, seed: u64, publisher: &str, category: Category) -> BuiltLesson {
    let mut spec = SyntheticLesson::standard(LessonId::new(name).unwrap(), seed, 3);
    spec.renditions = vec![(
        "360p".into(),
        RenditionKind::Video {
            width: 640,
            height: 360,
        },
        400_000,
    )];
    spec.attachment_size = 20_000;
    let mut built = spec.build();
    built.manifest.publisher = publisher.into();
    built.manifest.category = category;
    built
}

async fn origin(dir: &Path, keys: &DeploymentKeys, name: &str) -> Origin {
    let name = NodeName::new(name).unwrap();
    Origin::start(
        OriginConfig {
            name: name.clone(),
            listen: loopback(),
            store: StoreConfig::new(dir.join(name.as_str()), 1 << 30),
            transport: TransportConfig::default(),
            catalog_validity: Duration::from_secs(86_400),
        },
        keys.enroll(Role::Origin, &name).unwrap(),
        keys.online_key(courseway_node::clock::now()),
    )
    .await
    .unwrap()
}

async fn station(dir: &Path, keys: &DeploymentKeys, name: &str, parent: (&str, SocketAddr)) -> Station {
    let name = NodeName::new(name).unwrap();
    let mut config = StationConfig::new(
        name.clone(),
        loopback(),
        StoreConfig::new(dir.join(name.as_str()), 1 << 30),
        UpstreamConfig::new(vec![Parent {
            name: NodeName::new(parent.0).unwrap(),
            addr: parent.1,
        }]),
    );
    config.retry_after = Duration::from_millis(200);
    Station::start(config, keys.enroll(Role::Station, &name).unwrap(), keys.root_public())
        .await
        .unwrap()
}

/// The city origin's mirror of `province`, enrolled in the provincial deployment as `city-gz`.
fn mirror(
    city: &Origin,
    province: &Origin,
    province_keys: &DeploymentKeys,
    root: courseway_content::PublicKey,
    selection: MirrorSelection,
) -> Mirror {
    let mut config = MirrorConfig::new(
        "province",
        UpstreamConfig::new(vec![Parent {
            name: NodeName::new("province").unwrap(),
            addr: province.local_addr().unwrap(),
        }]),
        root,
    );
    config.bind = loopback();
    config.selection = selection;
    config.retry_after = Duration::from_millis(200);
    let enrollment = province_keys
        .enroll(Role::Origin, &NodeName::new("city-gz").unwrap())
        .unwrap();
    city.mirror(config, enrollment).unwrap()
}

fn catalog_lessons(origin: &Origin) -> Vec<(String, courseway_content::ChunkId)> {
    origin
        .catalog()
        .map(|c| {
            c.body
                .entries()
                .iter()
                .map(|e| (e.lesson.as_str().to_owned(), e.manifest))
                .collect()
        })
        .unwrap_or_default()
}

fn holds_byte_identical(station: &Station, lesson: &BuiltLesson) -> bool {
    lesson
        .chunks
        .iter()
        .all(|(id, bytes)| station.store().get(id, 0).ok().flatten().as_deref() == Some(bytes.as_slice()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_city_origin_mirrors_the_chosen_lessons_of_a_provincial_origin_to_its_stations() {
    let dir = tempfile::tempdir().unwrap();
    let (province_keys, city_keys) = (DeploymentKeys::generate().unwrap(), DeploymentKeys::generate().unwrap());
    let province = origin(dir.path(), &province_keys, "province").await;
    let health = lesson("health-101", 1, "health", Category::Required);
    let farming = lesson("farming-101", 2, "agriculture", Category::Required);
    let optional = lesson("health-201", 3, "health", Category::Elective);
    province
        .publish(&[
            (health.manifest.clone(), &health.chunks),
            (farming.manifest.clone(), &farming.chunks),
            (optional.manifest.clone(), &optional.chunks),
        ])
        .unwrap();

    let city = origin(dir.path(), &city_keys, "city").await;
    let selection = MirrorSelection {
        publishers: vec!["health".into()],
        categories: vec![Category::Required],
    };
    let m = mirror(
        &city,
        &province,
        &province_keys,
        province_keys.root_public(),
        selection.clone(),
    );
    let village = station(
        dir.path(),
        &city_keys,
        "village-0001",
        ("city", city.local_addr().unwrap()),
    )
    .await;

    // Only the health, required lesson crosses, unchanged (same manifest hash), signed by the city.
    wait_until(
        "the village to hold the mirrored lesson",
        Duration::from_secs(60),
        || holds_byte_identical(&village, &health),
    )
    .await;
    assert_eq!(
        catalog_lessons(&city),
        vec![("health-101".to_owned(), health.manifest.hash())]
    );
    assert_eq!(m.stats().lessons_mirrored, 1);
    assert!(m.stats().bytes_fetched >= health.manifest.content_size());
    assert!(!village.store().has(farming.chunks.keys().next().unwrap()));

    // A new version upstream is mirrored again; a withdrawal upstream is a withdrawal here.
    let health_v2 = {
        let mut l = lesson("health-101", 4, "health", Category::Required);
        l.manifest.version = 2;
        l
    };
    province
        .publish(&[(health_v2.manifest.clone(), &health_v2.chunks)])
        .unwrap();
    let v2 = health_v2.manifest.hash();
    wait_until("the city to republish the new version", Duration::from_secs(60), || {
        catalog_lessons(&city) == vec![("health-101".to_owned(), v2)]
    })
    .await;
    wait_until("the village to hold the new version", Duration::from_secs(60), || {
        holds_byte_identical(&village, &health_v2)
    })
    .await;
    province.withdraw(&[LessonId::new("health-101").unwrap()]).unwrap();
    wait_until(
        "the city to withdraw what upstream withdrew",
        Duration::from_secs(30),
        || catalog_lessons(&city).is_empty(),
    )
    .await;
    // The counters move just after the catalog changes.
    wait_until("the mirror to count the withdrawal", Duration::from_secs(30), || {
        let s = m.stats();
        (s.lessons_withdrawn, s.lessons_mirrored) == (1, 0)
    })
    .await;

    // A restarted mirror picks up where it was: nothing republished, nothing lost.
    province
        .publish(&[(optional.manifest.clone(), &optional.chunks)])
        .unwrap();
    let mut relaxed = selection;
    relaxed.categories.clear();
    drop(m);
    let m = mirror(
        &city,
        &province,
        &province_keys,
        province_keys.root_public(),
        relaxed.clone(),
    );
    let upstream_version = province.catalog().unwrap().body.version;
    let caught_up = |m: &Mirror| m.stats().reconciled && m.stats().upstream_version == upstream_version;
    wait_until("the restarted mirror to catch up", Duration::from_secs(60), || {
        caught_up(&m)
    })
    .await;
    assert_eq!(
        catalog_lessons(&city),
        vec![("health-201".to_owned(), optional.manifest.hash())]
    );
    let version = city.catalog().unwrap().body.version;
    drop(m);
    let m = mirror(&city, &province, &province_keys, province_keys.root_public(), relaxed);
    wait_until("the mirror to catch up again", Duration::from_secs(60), || {
        caught_up(&m)
    })
    .await;
    assert_eq!(
        city.catalog().unwrap().body.version,
        version,
        "a restarted mirror signed a new catalog though nothing changed upstream"
    );
    wait_until(
        "the village to hold the elective lesson",
        Duration::from_secs(60),
        || holds_byte_identical(&village, &optional),
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_mirror_refuses_an_upstream_catalog_that_does_not_chain_to_the_configured_root() {
    let dir = tempfile::tempdir().unwrap();
    let (province_keys, city_keys) = (DeploymentKeys::generate().unwrap(), DeploymentKeys::generate().unwrap());
    let impostor_keys = DeploymentKeys::generate().unwrap();
    let province = origin(dir.path(), &province_keys, "province").await;
    let health = lesson("health-101", 1, "health", Category::Required);
    province.publish(&[(health.manifest.clone(), &health.chunks)]).unwrap();
    let city = origin(dir.path(), &city_keys, "city").await;
    // The operator gave the mirror another deployment's root key: the upstream's catalogs do not
    // chain to it, so nothing may be republished.
    let m = mirror(
        &city,
        &province,
        &province_keys,
        impostor_keys.root_public(),
        MirrorSelection::default(),
    );
    wait_until(
        "the mirror to refuse the foreign catalog",
        Duration::from_secs(30),
        || m.stats().catalogs_refused > 0,
    )
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(
        city.catalog().is_none(),
        "a catalog from an unknown key was republished"
    );
    assert_eq!(m.stats().lessons_mirrored, 0);
    assert_eq!(m.stats().bytes_fetched, 0);
}

/// `review = "local"`: the city's own reviewers decide. The mirrored lesson waits in the city's
/// review workflow as submitted (absent from the city's catalog), plays in preview from the
/// city's store, cannot be edited or submitted by hand, is published once a city reviewer and
/// publisher approve it, reaches the village byte for byte, and is closed when upstream
/// withdraws it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_mirror_in_local_review_mode_hands_lessons_to_the_city_review_workflow() {
    use courseway::admin_client::{AdminClient, ClientError};
    use courseway_origin::admin::workflow::Role as AdminRole;
    use courseway_origin::admin::{tokens, AdminApi, AdminConfig};
    use courseway_origin::mirror::MirrorReview;
    use hyper::body::Bytes;
    use hyper::{Method, StatusCode};
    use serde_json::{json, Value};

    let dir = tempfile::tempdir().unwrap();
    let (province_keys, city_keys) = (DeploymentKeys::generate().unwrap(), DeploymentKeys::generate().unwrap());
    let province = origin(dir.path(), &province_keys, "province").await;
    let health = lesson("health-101", 1, "health", Category::Required);
    province.publish(&[(health.manifest.clone(), &health.chunks)]).unwrap();

    let city = std::sync::Arc::new(origin(dir.path(), &city_keys, "city").await);
    let config = AdminConfig::new(loopback(), dir.path().join("admin"), dir.path().join("spool"));
    let token = |role: AdminRole| tokens::create(&config.tokens_file(), role.as_str(), role, None, 1).unwrap();
    let (reviewer, publisher, submitter) = (
        token(AdminRole::Reviewer),
        token(AdminRole::Publisher),
        token(AdminRole::Submitter),
    );
    let admin = AdminApi::start(config, city.clone()).await.unwrap();
    let client = |t: &str| AdminClient::for_addr(admin.local_addr(), t);

    let mut config = MirrorConfig::new(
        "province",
        UpstreamConfig::new(vec![Parent {
            name: NodeName::new("province").unwrap(),
            addr: province.local_addr().unwrap(),
        }]),
        province_keys.root_public(),
    );
    config.bind = loopback();
    config.retry_after = Duration::from_millis(200);
    config.review = MirrorReview::Local(admin.review_queue());
    let enrollment = province_keys
        .enroll(Role::Origin, &NodeName::new("city-gz").unwrap())
        .unwrap();
    let m = city.mirror(config, enrollment).unwrap();
    let village = station(
        dir.path(),
        &city_keys,
        "village-0001",
        ("city", city.local_addr().unwrap()),
    )
    .await;

    // Offered for review, not published.
    let record = |client: AdminClient| async move { client.get("/api/lessons/health-101").await };
    let mut offered: Option<Value> = None;
    for _ in 0..600 {
        if let Ok(v) = record(client(&reviewer)).await {
            offered = Some(v);
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let offered = offered.expect("the mirror offers the lesson for review within a minute");
    assert_eq!(offered["state"], "submitted", "{offered}");
    assert_eq!(offered["source"], "province", "{offered}");
    assert_eq!(offered["metadata"]["department"], "health", "{offered}");
    // The counter moves just after the record is written (the mirror saves its set between).
    wait_until("the mirror to count the offer", Duration::from_secs(30), || {
        m.stats().lessons_offered == 1
    })
    .await;
    assert!(catalog_lessons(&city).is_empty(), "published before review");

    // Not editable or submittable here.
    let refused = |r: Result<Value, ClientError>| match r {
        Err(ClientError::Server { status, body, .. }) => (status, body),
        other => panic!("expected a refusal, got {other:?}"),
    };
    let (status, body) = refused(
        client(&submitter)
            .post("/api/lessons/health-101/submit", &json!({}))
            .await,
    );
    assert_eq!(status, StatusCode::CONFLICT, "{body}");
    assert_eq!(body["code"], "mirrored", "{body}");

    // Preview plays the upstream's bytes from the city's store.
    let rendition = &health.manifest.renditions[0];
    let (status, _, segment) = client(&reviewer)
        .send(
            Method::GET,
            &format!("/preview/health-101/{}/0.ts", rendition.name),
            http_body_util::Empty::<Bytes>::new(),
        )
        .await
        .unwrap();
    assert_eq!(status, StatusCode::OK);
    let expected: Vec<u8> = rendition.segments[0]
        .chunks
        .iter()
        .flat_map(|c| health.chunks[&c.id].clone())
        .collect();
    assert_eq!(segment.to_vec(), expected);

    // Reviewed, approved, published: the same manifest, now in the city's catalog.
    for (who, step) in [(&reviewer, "review"), (&publisher, "approve"), (&publisher, "publish")] {
        client(who)
            .post(&format!("/api/lessons/health-101/{step}"), &json!({}))
            .await
            .unwrap_or_else(|e| panic!("{step}: {e}"));
    }
    assert_eq!(
        catalog_lessons(&city),
        vec![("health-101".to_owned(), health.manifest.hash())]
    );
    wait_until(
        "the village to hold the reviewed lesson",
        Duration::from_secs(60),
        || holds_byte_identical(&village, &health),
    )
    .await;

    // Upstream withdraws it: withdrawn here, and the record says why.
    province.withdraw(&[LessonId::new("health-101").unwrap()]).unwrap();
    wait_until("the city to withdraw it", Duration::from_secs(30), || {
        catalog_lessons(&city).is_empty()
    })
    .await;
    let mut closed = Value::Null;
    for _ in 0..100 {
        closed = record(client(&reviewer)).await.unwrap();
        if closed["state"] == "withdrawn" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(closed["state"], "withdrawn", "{closed}");
    assert_eq!(
        closed["comments"].as_array().unwrap().last().unwrap()["action"],
        "retract"
    );
    city.shutdown();
}
