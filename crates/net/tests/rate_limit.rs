//! The rate limiter caps real transfers. These tests check behaviour, not speed: at every point
//! of a transfer, the body bytes received so far are at most rate × elapsed + burst, where
//! elapsed runs from before the request was sent.

mod common;

use std::time::{Duration, Instant};

use common::*;
use courseway_content::ChunkId;
use courseway_net::{read_response, send_request, PeerConnection, RateLimit, SharedLimiter};
use courseway_proto::{GetChunk, Request, Response, Role};

const DEADLINE: Duration = Duration::from_secs(30);

/// Fetches `id` over a raw stream, recording (time, body bytes so far) after every read.
async fn fetch_sampled(conn: &PeerConnection, id: ChunkId) -> (Vec<u8>, Vec<(Instant, u64)>) {
    let (mut send, mut recv) = conn.connection.open_bi().await.unwrap();
    send_request(&mut send, &Request::GetChunk(GetChunk { id, offset: 0 }))
        .await
        .unwrap();
    send.finish().unwrap();
    let Response::Chunk(header) = read_response(&mut recv).await.unwrap() else {
        panic!("expected a chunk header");
    };
    let mut body = Vec::new();
    let mut samples = Vec::new();
    let mut buf = vec![0u8; 4096];
    while let Some(n) = recv.read(&mut buf).await.unwrap() {
        body.extend_from_slice(&buf[..n]);
        samples.push((Instant::now(), body.len() as u64));
    }
    assert_eq!(body.len() as u32, header.body_len());
    (body, samples)
}

fn assert_within_limit(start: Instant, samples: &[(Instant, u64)], limit: RateLimit) {
    for &(at, received) in samples {
        let elapsed = at.duration_since(start).as_nanos();
        let allowed = u128::from(limit.bytes_per_sec()) * elapsed / 1_000_000_000 + u128::from(limit.burst());
        assert!(
            u128::from(received) <= allowed,
            "{received} bytes after {elapsed} ns exceeds {} B/s × elapsed + {} B burst",
            limit.bytes_per_sec(),
            limit.burst()
        );
    }
}

#[tokio::test]
async fn per_connection_limit_caps_a_transfer() {
    init_tracing();
    let limit = RateLimit::new(400_000, 32 * 1024).unwrap();
    let ca = courseway_net::DeploymentCa::generate("test").unwrap();
    let server = server(&ca, Role::Relay, "district-07");
    let addr = server.local_addr().unwrap();
    let chunk = bytes(300_000, 7);
    let id = ChunkId::of(&chunk);
    let mut chunk_server = ChunkServer::with_chunks(vec![chunk]);
    chunk_server.per_connection = Some(limit);
    let _task = chunk_server.spawn(server);

    let client = client(&ca, Role::Station, "village-0123");
    let conn = client.connect(addr, &name("district-07")).await.unwrap();
    let start = Instant::now();
    let (body, samples) = tokio::time::timeout(DEADLINE, fetch_sampled(&conn, id)).await.unwrap();
    id.verify(&body).unwrap();
    assert_within_limit(start, &samples, limit);
}

/// A per-node limiter is shared by all connections: two stations fetching at once get no more
/// together than the node's cap.
#[tokio::test]
async fn per_node_limit_caps_all_connections_together() {
    init_tracing();
    let limit = RateLimit::new(400_000, 32 * 1024).unwrap();
    let ca = courseway_net::DeploymentCa::generate("test").unwrap();
    let server = server(&ca, Role::Relay, "district-07");
    let addr = server.local_addr().unwrap();
    let chunk = bytes(150_000, 9);
    let id = ChunkId::of(&chunk);
    let mut chunk_server = ChunkServer::with_chunks(vec![chunk]);
    chunk_server.node_limiter = Some(SharedLimiter::new(limit));
    let _task = chunk_server.spawn(server);

    let a = client(&ca, Role::Station, "village-a");
    let b = client(&ca, Role::Station, "village-b");
    let conn_a = a.connect(addr, &name("district-07")).await.unwrap();
    let conn_b = b.connect(addr, &name("district-07")).await.unwrap();
    let start = Instant::now();
    let ((body_a, samples_a), (body_b, samples_b)) = tokio::time::timeout(DEADLINE, async {
        tokio::join!(fetch_sampled(&conn_a, id), fetch_sampled(&conn_b, id))
    })
    .await
    .unwrap();
    id.verify(&body_a).unwrap();
    id.verify(&body_b).unwrap();

    // Merge both timelines into one running total of bytes received by either station.
    let mut events: Vec<(Instant, u64)> = Vec::new();
    for samples in [&samples_a, &samples_b] {
        let mut prev = 0;
        for &(at, total) in samples.iter() {
            events.push((at, total - prev));
            prev = total;
        }
    }
    events.sort_by_key(|e| e.0);
    let mut running = 0;
    let combined: Vec<(Instant, u64)> = events
        .into_iter()
        .map(|(at, n)| {
            running += n;
            (at, running)
        })
        .collect();
    assert_eq!(running, 300_000);
    assert_within_limit(start, &combined, limit);
}
