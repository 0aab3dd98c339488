//! Shared test helpers: a deployment CA, enrolled nodes, loopback endpoints, a chunk server.

#![allow(dead_code)]

use std::collections::HashMap;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use courseway_content::{ChunkId, NodeName};
use courseway_net::{
    reply_error, send_chunk, serve_requests, Client, DeploymentCa, Enrollment, IncomingRequest, NetError, ServeConfig,
    Server, SharedLimiter, TransportConfig, Validity,
};
use courseway_proto::{ChunkHeader, ErrorCode, Request, Role};

pub const LOOPBACK: SocketAddr = SocketAddr::new(std::net::IpAddr::V4(Ipv4Addr::LOCALHOST), 0);

pub fn init_tracing() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_test_writer()
        .try_init();
}

pub fn name(s: &str) -> NodeName {
    NodeName::new(s).unwrap()
}

pub fn enroll(ca: &DeploymentCa, role: Role, node: &str) -> Enrollment {
    let creds = ca
        .issue(role, &name(node), Validity::starting_now(Duration::from_secs(3600)))
        .unwrap();
    Enrollment::new(ca.certificate().clone(), creds)
}

pub fn server(ca: &DeploymentCa, role: Role, node: &str) -> Server {
    Server::bind(enroll(ca, role, node), &TransportConfig::default(), LOOPBACK).unwrap()
}

pub fn client(ca: &DeploymentCa, role: Role, node: &str) -> Client {
    Client::bind(enroll(ca, role, node), &TransportConfig::default(), LOOPBACK).unwrap()
}

/// Chunks a test server holds, and the limiters it paces each reply with.
#[derive(Clone, Default)]
pub struct ChunkServer {
    pub chunks: Arc<HashMap<ChunkId, Vec<u8>>>,
    /// Shared by every connection: a per-node cap.
    pub node_limiter: Option<SharedLimiter>,
    /// A new limiter with this limit for each connection: a per-connection cap.
    pub per_connection: Option<courseway_net::RateLimit>,
}

impl ChunkServer {
    pub fn with_chunks(chunks: Vec<Vec<u8>>) -> Self {
        Self {
            chunks: Arc::new(chunks.into_iter().map(|c| (ChunkId::of(&c), c)).collect()),
            ..Default::default()
        }
    }

    /// Runs `server`'s accept loop in a task, answering GetChunk requests.
    pub fn spawn(self, server: Server) -> tokio::task::JoinHandle<()> {
        tokio::spawn(async move {
            let this = self;
            server
                .serve(move |conn| {
                    let this = this.clone();
                    async move {
                        let conn_limiter = this.per_connection.map(SharedLimiter::new);
                        serve_requests(conn, ServeConfig::default(), move |req| {
                            let this = this.clone();
                            let conn_limiter = conn_limiter.clone();
                            async move { this.handle(req, conn_limiter).await }
                        })
                        .await
                    }
                })
                .await
        })
    }

    async fn handle(&self, mut req: IncomingRequest, conn_limiter: Option<SharedLimiter>) -> Result<(), NetError> {
        match req.request {
            Request::GetChunk(get) => {
                let Some(bytes) = self.chunks.get(&get.id) else {
                    return reply_error(&mut req.send, &mut req.recv, ErrorCode::NotFound, "no such chunk here").await;
                };
                if get.offset as usize > bytes.len() {
                    return reply_error(
                        &mut req.send,
                        &mut req.recv,
                        ErrorCode::BadOffset,
                        "offset beyond the end",
                    )
                    .await;
                }
                let header = ChunkHeader {
                    id: get.id,
                    size: bytes.len() as u32,
                    offset: get.offset,
                };
                let limiters: Vec<&SharedLimiter> = conn_limiter.iter().chain(self.node_limiter.iter()).collect();
                let body = bytes::Bytes::copy_from_slice(&bytes[get.offset as usize..]);
                send_chunk(&mut req.send, &header, body, &limiters).await
            }
            _ => {
                reply_error(
                    &mut req.send,
                    &mut req.recv,
                    ErrorCode::NotFound,
                    "this test server only serves chunks",
                )
                .await
            }
        }
    }
}

/// Deterministic pseudo-random bytes.
pub fn bytes(len: usize, seed: u8) -> Vec<u8> {
    let mut x = u32::from(seed).wrapping_mul(2_654_435_761).wrapping_add(1);
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            x as u8
        })
        .collect()
}
