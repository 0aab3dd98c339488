//! The origin keeps its catalog and schedule from expiring: it signs the same entries again as the next
//! version once half of the validity has passed, and children accept that version.

use std::time::Duration;

use courseway::topology::DeploymentKeys;
use courseway_content::synthetic::SyntheticLesson;
use courseway_content::{LessonId, NodeName};
use courseway_node::clock;
use courseway_origin::{Origin, OriginConfig};
use courseway_proto::Role;
use courseway_store::StoreConfig;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn origin_signs_its_catalog_and_schedule_again_before_they_expire() {
    let dir = tempfile::tempdir().unwrap();
    let keys = DeploymentKeys::generate().unwrap();
    let name = NodeName::new("origin").unwrap();
    let validity = Duration::from_secs(4 * 3600);
    let origin = Origin::start(
        OriginConfig {
            name: name.clone(),
            listen: "127.0.0.1:0".parse().unwrap(),
            store: StoreConfig::new(dir.path().join("origin"), 1 << 30),
            transport: Default::default(),
            catalog_validity: validity,
        },
        keys.enroll(Role::Origin, &name).unwrap(),
        keys.online_key(clock::now()),
    )
    .await
    .unwrap();
    let now = clock::now();
    // Nothing published: nothing to sign.
    assert_eq!(origin.refresh_catalog(now).unwrap(), None);
    let lesson = SyntheticLesson::of_size(LessonId::new("a").unwrap(), 1, 1_000_000).build();
    let v1 = origin.publish(&[(lesson.manifest.clone(), &lesson.chunks)]).unwrap();
    let first = origin.catalog().unwrap();
    // Fresh: left alone.
    assert_eq!(origin.refresh_catalog(now.plus_secs(3600)).unwrap(), None);
    // Less than half of the validity left: the next version, same entries, later expiry.
    let later = now.plus_secs(2 * 3600 + 60);
    let v2 = origin.refresh_catalog(later).unwrap();
    assert_eq!(v2, Some(v1 + 1));
    let second = origin.catalog().unwrap();
    assert_eq!(second.body.entries(), first.body.entries());
    assert_eq!(second.body.issued_at, later);
    assert_eq!(second.body.expires_at, later.plus_secs(validity.as_secs()));
    assert!(second.body_signature_is_valid());

    // The schedule likewise.
    assert_eq!(origin.refresh_schedule(later).unwrap(), None);
    let s1 = origin.publish_schedule(Vec::new()).unwrap();
    assert_eq!(origin.refresh_schedule(clock::now().plus_secs(3600)).unwrap(), None);
    let much_later = clock::now().plus_secs(2 * 3600 + 60);
    assert_eq!(origin.refresh_schedule(much_later).unwrap(), Some(s1 + 1));
    let schedule = origin.schedule().unwrap();
    assert_eq!(schedule.body.expires_at, much_later.plus_secs(validity.as_secs()));
    assert!(schedule.body_signature_is_valid());
    origin.shutdown();
}
