//! Mutual TLS between real endpoints on 127.0.0.1.

mod common;

use std::time::Duration;

use common::*;
use courseway_content::ChunkId;
use courseway_net::{Client, DeploymentCa, NetError, PeerConnection, PeerIdentity, Server};
use courseway_proto::{GetChunk, Request, Role};

const DEADLINE: Duration = Duration::from_secs(20);

/// Runs the server's accept and the client's connect side by side.
async fn handshake(
    server: &Server,
    client: &Client,
    node: &str,
) -> (
    Option<Result<PeerConnection, NetError>>,
    Result<PeerConnection, NetError>,
) {
    let node = name(node);
    let addr = server.local_addr().unwrap();
    tokio::time::timeout(DEADLINE, async {
        tokio::join!(server.accept(), client.connect(addr, &node))
    })
    .await
    .expect("handshake within the deadline")
}

#[tokio::test]
async fn mutual_tls_each_side_sees_the_other() {
    init_tracing();
    let ca = DeploymentCa::generate("test deployment").unwrap();
    let server = server(&ca, Role::Relay, "district-07");
    let client = client(&ca, Role::Station, "village-0123");

    let (accepted, connected) = handshake(&server, &client, "district-07").await;
    let accepted = accepted.expect("server open").expect("server handshake");
    let connected = connected.expect("client handshake");

    assert_eq!(accepted.peer, PeerIdentity::new(Role::Station, name("village-0123")));
    assert_eq!(connected.peer, PeerIdentity::new(Role::Relay, name("district-07")));
    assert_eq!(
        courseway_net::peer_identity(&accepted.connection).unwrap(),
        accepted.peer
    );
}

#[tokio::test]
async fn node_names_that_are_not_dns_names_work() {
    init_tracing();
    let ca = DeploymentCa::generate("test").unwrap();
    let server = server(&ca, Role::Origin, "city:centre_1");
    let client = client(&ca, Role::Operator, "ops:alice");
    let (accepted, connected) = handshake(&server, &client, "city:centre_1").await;
    assert_eq!(accepted.unwrap().unwrap().peer.role, Role::Operator);
    assert_eq!(connected.unwrap().peer.name, name("city:centre_1"));
}

/// A client whose certificate comes from another CA does not get a connection: the server's
/// handshake fails, and the client cannot complete a request.
#[tokio::test]
async fn client_from_foreign_ca_is_refused() {
    init_tracing();
    let ca = DeploymentCa::generate("ours").unwrap();
    let foreign = DeploymentCa::generate("theirs").unwrap();
    let server = server(&ca, Role::Relay, "district-07");
    // The intruder trusts our CA (so it would accept the server) but holds a foreign certificate.
    let mut intruder_enrollment = enroll(&foreign, Role::Station, "village-0123");
    intruder_enrollment.ca = ca.certificate().clone();
    let intruder = Client::bind(intruder_enrollment, &Default::default(), LOOPBACK).unwrap();

    let (accepted, connected) = handshake(&server, &intruder, "district-07").await;
    let err = accepted
        .expect("server open")
        .expect_err("server must refuse a foreign client certificate");
    assert!(matches!(err, NetError::Connection { .. }), "{err}");
    // In TLS 1.3 the client may consider its side done before the server rejects its
    // certificate, so the refusal may surface at connect or at the first request.
    if let Ok(conn) = connected {
        let get = Request::GetChunk(GetChunk {
            id: ChunkId::of(b"x"),
            offset: 0,
        });
        let result = tokio::time::timeout(DEADLINE, conn.request(&get)).await.unwrap();
        assert!(result.is_err(), "a refused client must not get an answer");
    }
}

#[tokio::test]
async fn server_from_foreign_ca_is_refused() {
    init_tracing();
    let ca = DeploymentCa::generate("ours").unwrap();
    let foreign = DeploymentCa::generate("theirs").unwrap();
    // An impostor relay with a foreign certificate, that would accept our client.
    let mut impostor_enrollment = enroll(&foreign, Role::Relay, "district-07");
    impostor_enrollment.ca = ca.certificate().clone();
    let impostor = Server::bind(impostor_enrollment, &Default::default(), LOOPBACK).unwrap();
    let client = client(&ca, Role::Station, "village-0123");

    let (accepted, connected) = handshake(&impostor, &client, "district-07").await;
    let err = connected.expect_err("client must refuse a server certificate from another CA");
    eprintln!("client saw: {err}");
    assert!(matches!(err, NetError::Connection { .. }), "{err}");
    assert!(accepted.expect("server open").is_err());
}

#[tokio::test]
async fn server_with_another_name_is_refused() {
    init_tracing();
    let ca = DeploymentCa::generate("ours").unwrap();
    let server = server(&ca, Role::Relay, "district-08");
    let client = client(&ca, Role::Station, "village-0123");
    let (_, connected) = handshake(&server, &client, "district-07").await;
    let err = connected.expect_err("a certificate for district-08 must not pass for district-07");
    assert!(err.to_string().contains("district-07"), "{err}");
}

/// An expired node certificate fails the handshake like a foreign one.
#[tokio::test]
async fn expired_client_certificate_is_refused() {
    init_tracing();
    let ca = DeploymentCa::generate("ours").unwrap();
    let server = server(&ca, Role::Relay, "district-07");
    let now = std::time::SystemTime::now();
    let validity =
        courseway_net::Validity::between(now - Duration::from_secs(7200), now - Duration::from_secs(3600)).unwrap();
    let creds = ca.issue(Role::Station, &name("village-old"), validity).unwrap();
    let old = Client::bind(
        courseway_net::Enrollment::new(ca.certificate().clone(), creds),
        &Default::default(),
        LOOPBACK,
    )
    .unwrap();
    let (accepted, _) = handshake(&server, &old, "district-07").await;
    assert!(accepted.expect("server open").is_err());
}
