//! Revocation at the handshake and of established connections, between real endpoints on
//! 127.0.0.1.

mod common;

use std::time::Duration;

use common::*;
use courseway_net::{Client, DeploymentCa, PeerConnection, Server, TransportConfig};
use courseway_proto::{GetChunk, Request, Role};

const DEADLINE: Duration = Duration::from_secs(20);

/// Whether `client` gets a chunk from the server at `addr` named `node` (a full handshake and
/// one request: a client's handshake can complete before the server has checked its
/// certificate, so the refusal may only show on the first request).
async fn gets_chunk(client: &Client, addr: std::net::SocketAddr, node: &str, chunk: &[u8]) -> bool {
    let attempt = async {
        let conn = client.connect(addr, &name(node)).await?;
        let get = GetChunk {
            id: courseway_content::ChunkId::of(chunk),
            offset: 0,
        };
        conn.fetch_chunk(get).await
    };
    match tokio::time::timeout(DEADLINE, attempt)
        .await
        .expect("within the deadline")
    {
        Ok((_, body)) => body == chunk,
        Err(_) => false,
    }
}

#[tokio::test]
async fn a_revoked_client_is_refused_at_the_handshake() {
    init_tracing();
    let ca = DeploymentCa::generate("test").unwrap();
    let chunk = bytes(10_000, 1);
    let server_enrollment = enroll(&ca, Role::Relay, "district-07");
    let revocations = server_enrollment.revocations().clone();
    let server = Server::bind(server_enrollment, &TransportConfig::default(), LOOPBACK).unwrap();
    let addr = server.local_addr().unwrap();
    let _task = ChunkServer::with_chunks(vec![chunk.clone()]).spawn(server);

    let village = client(&ca, Role::Station, "village-0123");
    let other = client(&ca, Role::Station, "village-0124");
    assert!(gets_chunk(&village, addr, "district-07", &chunk).await);

    revocations.replace([&name("village-0123")]);
    assert!(
        !gets_chunk(&village, addr, "district-07", &chunk).await,
        "the revoked station got a chunk"
    );
    // A new certificate for the same name (a stolen box re-enrolled by hand) is refused too.
    let again = client(&ca, Role::Station, "village-0123");
    assert!(!gets_chunk(&again, addr, "district-07", &chunk).await);
    // Everyone else is served.
    assert!(gets_chunk(&other, addr, "district-07", &chunk).await);
    // Taken off the list, it is served again.
    revocations.replace(std::iter::empty());
    assert!(gets_chunk(&village, addr, "district-07", &chunk).await);
}

#[tokio::test]
async fn a_client_refuses_a_revoked_server() {
    init_tracing();
    let ca = DeploymentCa::generate("test").unwrap();
    let chunk = bytes(1000, 2);
    let server = server(&ca, Role::Relay, "district-07");
    let addr = server.local_addr().unwrap();
    let _task = ChunkServer::with_chunks(vec![chunk.clone()]).spawn(server);
    let enrollment = enroll(&ca, Role::Station, "village-1");
    let revocations = enrollment.revocations().clone();
    let village = Client::bind(enrollment, &TransportConfig::default(), LOOPBACK).unwrap();
    assert!(gets_chunk(&village, addr, "district-07", &chunk).await);
    revocations.replace([&name("district-07")]);
    let refused = tokio::time::timeout(DEADLINE, village.connect(addr, &name("district-07")))
        .await
        .unwrap();
    let err = refused.expect_err("a revoked server must fail the client's certificate check");
    assert!(err.to_string().to_lowercase().contains("revoked"), "{err}");
}

#[tokio::test]
async fn revoking_a_peer_closes_its_open_connections() {
    init_tracing();
    let ca = DeploymentCa::generate("test").unwrap();
    let server_enrollment = enroll(&ca, Role::Relay, "district-07");
    let server_revocations = server_enrollment.revocations().clone();
    let server = Server::bind(server_enrollment, &TransportConfig::default(), LOOPBACK).unwrap();
    let addr = server.local_addr().unwrap();
    let chunk = bytes(1000, 3);
    let _task = ChunkServer::with_chunks(vec![chunk.clone()]).spawn(server);

    // Server side: the station's open connection is closed when the relay revokes it.
    let village = client(&ca, Role::Station, "village-1");
    let conn: PeerConnection = village.connect(addr, &name("district-07")).await.unwrap();
    conn.fetch_chunk(GetChunk {
        id: courseway_content::ChunkId::of(&chunk),
        offset: 0,
    })
    .await
    .unwrap();
    server_revocations.replace([&name("village-1")]);
    let closed = tokio::time::timeout(DEADLINE, conn.connection.closed()).await.unwrap();
    assert!(closed.to_string().contains("revoked"), "{closed}");

    // Client side: a station closes its connection to a parent once the parent is revoked.
    server_revocations.replace(std::iter::empty());
    let enrollment = enroll(&ca, Role::Station, "village-2");
    let revocations = enrollment.revocations().clone();
    let village = Client::bind(enrollment, &TransportConfig::default(), LOOPBACK).unwrap();
    let conn = village.connect(addr, &name("district-07")).await.unwrap();
    revocations.replace([&name("district-07")]);
    tokio::time::timeout(DEADLINE, conn.connection.closed()).await.unwrap();
    assert!(conn
        .request(&Request::GetChunk(GetChunk {
            id: courseway_content::ChunkId::of(&chunk),
            offset: 0
        }))
        .await
        .is_err());
}
