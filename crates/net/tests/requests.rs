//! Requests and responses over real QUIC streams on 127.0.0.1.

mod common;

use std::time::Duration;

use common::*;
use courseway_content::ChunkId;
use courseway_net::{read_response, NetError, PeerConnection};
use courseway_proto::{ErrorCode, FrameHeader, FrameKind, GetChunk, GetManifest, Request, Response, Role, HEADER_LEN};

const DEADLINE: Duration = Duration::from_secs(20);

struct Setup {
    conn: PeerConnection,
    chunks: Vec<Vec<u8>>,
    _server: tokio::task::JoinHandle<()>,
}

async fn setup() -> Setup {
    init_tracing();
    let ca = courseway_net::DeploymentCa::generate("test").unwrap();
    let server = server(&ca, Role::Relay, "district-07");
    let addr = server.local_addr().unwrap();
    let chunks = vec![bytes(1 << 20, 1), bytes(1000, 2), bytes(0, 3)];
    let task = ChunkServer::with_chunks(chunks.clone()).spawn(server);
    let client = client(&ca, Role::Station, "village-0123");
    let conn = tokio::time::timeout(DEADLINE, client.connect(addr, &name("district-07")))
        .await
        .unwrap()
        .unwrap();
    Setup {
        conn,
        chunks,
        _server: task,
    }
}

async fn fetch(
    conn: &PeerConnection,
    id: ChunkId,
    offset: u32,
) -> Result<(courseway_proto::ChunkHeader, Vec<u8>), NetError> {
    tokio::time::timeout(DEADLINE, conn.fetch_chunk(GetChunk { id, offset }))
        .await
        .expect("answer within the deadline")
}

#[tokio::test]
async fn get_chunk_round_trip() {
    let s = setup().await;
    for chunk in &s.chunks {
        let id = ChunkId::of(chunk);
        let (header, body) = fetch(&s.conn, id, 0).await.unwrap();
        assert_eq!(header.id, id);
        assert_eq!(header.size as usize, chunk.len());
        id.verify(&body).unwrap();
    }
    // Resume from an offset.
    let big = &s.chunks[0];
    let (header, tail) = fetch(&s.conn, ChunkId::of(big), 700_000).await.unwrap();
    assert_eq!(header.offset, 700_000);
    assert_eq!(&tail[..], &big[700_000..]);
}

#[tokio::test]
async fn concurrent_requests_share_a_connection() {
    let s = setup().await;
    let id = ChunkId::of(&s.chunks[0]);
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..8 {
        let conn = s.conn.clone();
        tasks.spawn(async move { fetch(&conn, id, 0).await });
    }
    while let Some(result) = tasks.join_next().await {
        id.verify(&result.unwrap().unwrap().1).unwrap();
    }
}

#[tokio::test]
async fn error_replies_are_refusals() {
    let s = setup().await;
    let err = fetch(&s.conn, ChunkId::of(b"nobody has this"), 0).await.unwrap_err();
    assert!(
        matches!(&err, NetError::Refused(r) if r.code == ErrorCode::NotFound),
        "{err}"
    );
    let err = fetch(&s.conn, ChunkId::of(&s.chunks[1]), 5000).await.unwrap_err();
    assert!(
        matches!(&err, NetError::Refused(r) if r.code == ErrorCode::BadOffset),
        "{err}"
    );
    let err = tokio::time::timeout(
        DEADLINE,
        s.conn.request(&Request::GetManifest(GetManifest {
            hash: ChunkId::of(b"m"),
        })),
    )
    .await
    .unwrap()
    .unwrap_err();
    assert!(matches!(&err, NetError::Refused(_)), "{err}");
}

/// Sends raw bytes on a new stream, finishes it, and reads the response frame.
async fn raw_exchange(conn: &PeerConnection, raw: &[u8]) -> Response {
    tokio::time::timeout(DEADLINE, async {
        let (mut send, mut recv) = conn.connection.open_bi().await.unwrap();
        // The server may stop our send side as soon as it has refused the header.
        let _ = send.write_all(raw).await;
        let _ = send.finish();
        read_response(&mut recv).await.unwrap()
    })
    .await
    .expect("error reply within the deadline")
}

fn error_code(response: Response) -> ErrorCode {
    match response {
        Response::Error(reply) => reply.code,
        other => panic!("expected an error reply, got {other:?}"),
    }
}

#[tokio::test]
async fn oversized_frame_gets_an_error_reply_and_the_server_keeps_serving() {
    let s = setup().await;
    // A 1 MiB fetch in flight on another stream while the bad frame arrives.
    let big = ChunkId::of(&s.chunks[0]);
    let in_flight = {
        let conn = s.conn.clone();
        tokio::spawn(async move { fetch(&conn, big, 0).await })
    };
    // A chunk request header that claims 4 GiB of payload, followed by a little of it. The
    // server must refuse it from the header alone.
    let mut raw = vec![
        courseway_proto::PROTOCOL_VERSION,
        FrameKind::GetChunk.to_u8(),
        0xff,
        0xff,
        0xff,
        0xff,
    ];
    assert!(FrameHeader::parse(raw[..HEADER_LEN].try_into().unwrap()).is_err());
    raw.extend_from_slice(&[0u8; 1000]);
    assert_eq!(error_code(raw_exchange(&s.conn, &raw).await), ErrorCode::TooLarge);

    // The same connection still serves requests, including on streams opened meanwhile.
    let id = ChunkId::of(&s.chunks[1]);
    let (_, body) = fetch(&s.conn, id, 0).await.unwrap();
    id.verify(&body).unwrap();
    big.verify(&in_flight.await.unwrap().unwrap().1).unwrap();
    assert!(s.conn.connection.close_reason().is_none());
}

#[tokio::test]
async fn malformed_frames_get_their_error_codes() {
    let s = setup().await;
    // Unknown protocol version.
    let raw = [9u8, FrameKind::GetChunk.to_u8(), 0, 0, 0, 0];
    assert_eq!(
        error_code(raw_exchange(&s.conn, &raw).await),
        ErrorCode::UnsupportedVersion
    );
    // Unknown kind.
    let raw = [courseway_proto::PROTOCOL_VERSION, 0x7e, 0, 0, 0, 0];
    assert_eq!(error_code(raw_exchange(&s.conn, &raw).await), ErrorCode::Malformed);
    // A response kind where a request belongs (refused before its payload is read).
    let raw = [
        courseway_proto::PROTOCOL_VERSION,
        FrameKind::Catalog.to_u8(),
        0,
        1,
        0,
        0,
    ];
    assert_eq!(error_code(raw_exchange(&s.conn, &raw).await), ErrorCode::Malformed);
    // A payload that does not decode.
    let raw = [
        courseway_proto::PROTOCOL_VERSION,
        FrameKind::GetChunk.to_u8(),
        0,
        0,
        0,
        3,
        1,
        2,
        3,
    ];
    assert_eq!(error_code(raw_exchange(&s.conn, &raw).await), ErrorCode::Malformed);
    // A frame cut short: the header promises 36 bytes, the stream ends after 10.
    let mut raw = vec![
        courseway_proto::PROTOCOL_VERSION,
        FrameKind::GetChunk.to_u8(),
        0,
        0,
        0,
        36,
    ];
    raw.extend_from_slice(&[0u8; 10]);
    assert_eq!(error_code(raw_exchange(&s.conn, &raw).await), ErrorCode::Malformed);
    // A stream closed before a whole header.
    assert_eq!(error_code(raw_exchange(&s.conn, &[1, 2]).await), ErrorCode::Malformed);

    // And the connection is still good.
    let id = ChunkId::of(&s.chunks[0]);
    id.verify(&fetch(&s.conn, id, 0).await.unwrap().1).unwrap();
}
