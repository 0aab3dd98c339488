//! A hostile parent for the `hostile` tests: an enrolled relay (its certificate is from the
//! deployment's CA, so the handshake lets it in) that serves children honestly except for one
//! lie. Test code only: no production crate knows about it.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use courseway_content::{Catalog, ChunkId, NodeName, Schedule, Signed};
use courseway_net::{send_chunk, send_response, Enrollment, IncomingRequest, NetError, Server, TransportConfig};
use courseway_node::{reply_error, serve_connection, NodeService};
use courseway_proto::{Announcement, ChunkHeader, ErrorCode, ErrorReply, GetChunk, Response, Role, Welcome};
use tokio::sync::broadcast;

/// The one way a [`HostileParent`] lies.
#[derive(Debug, Clone)]
pub enum Lie {
    /// One byte of every chunk flipped.
    FlippedBytes,
    /// Half of every chunk, then the stream finished as if that were all.
    TruncatedChunk,
    /// Another chunk (its own header and bytes) than the one asked for.
    OtherChunk,
    /// The right header and bytes, then bytes past the declared size for as long as the child
    /// reads them.
    EndlessBytes,
    /// After the current catalog, this older one announced again (a replayed announcement).
    Rollback(Box<Signed<Catalog>>),
    /// This catalog instead of the current one (expired, signed by an unknown key, forged...).
    Catalog(Box<Signed<Catalog>>),
    /// This schedule (e.g. a forged one) on the schedule topic.
    Schedule(Box<Signed<Schedule>>),
    /// The current catalog, but for every manifest the bytes of this other one (an older
    /// version of the lesson: not the hash the catalog lists).
    MixedManifest(Vec<u8>),
}

/// What an honest parent would serve.
#[derive(Debug, Clone)]
pub struct Honest {
    pub chunks: BTreeMap<ChunkId, Vec<u8>>,
    pub manifests: BTreeMap<ChunkId, Vec<u8>>,
    pub catalog: Arc<Signed<Catalog>>,
}

/// A parent that lies in one way.
#[derive(Debug)]
pub struct HostileParent {
    name: NodeName,
    honest: Honest,
    lie: Lie,
    announce: broadcast::Sender<Announcement>,
    /// Times it told its lie.
    pub lies_told: AtomicU64,
}

impl HostileParent {
    /// Starts serving on loopback; returns the service (for its counters), its address and the
    /// serving task (abort it to stop).
    pub fn start(
        name: NodeName,
        enrollment: Enrollment,
        honest: Honest,
        lie: Lie,
    ) -> (Arc<Self>, SocketAddr, tokio::task::JoinHandle<()>) {
        let service = Arc::new(Self {
            name,
            honest,
            lie,
            announce: broadcast::channel(16).0,
            lies_told: AtomicU64::new(0),
        });
        let server = Server::bind(enrollment, &TransportConfig::default(), crate::loopback()).expect("bind");
        let addr = server.local_addr().expect("local address");
        let serving = service.clone();
        let task = tokio::spawn(async move { server.serve(move |conn| serve_connection(serving.clone(), conn)).await });
        (service, addr, task)
    }

    fn lied(&self) {
        self.lies_told.fetch_add(1, Ordering::Relaxed);
    }
}

impl NodeService for HostileParent {
    fn welcome(&self) -> Welcome {
        Welcome {
            node: self.name.clone(),
            role: Role::Relay,
            software: "hostile test relay".into(),
        }
    }

    async fn serve_chunk(&self, req: &mut IncomingRequest, get: GetChunk) -> Result<(), NetError> {
        let Some(bytes) = self.honest.chunks.get(&get.id) else {
            return reply_error(req, ErrorCode::NotFound, "no such chunk").await;
        };
        let from = (get.offset as usize).min(bytes.len());
        let header = ChunkHeader {
            id: get.id,
            size: bytes.len() as u32,
            offset: get.offset,
        };
        match &self.lie {
            Lie::FlippedBytes => {
                self.lied();
                let mut flipped = bytes.clone();
                let mid = flipped.len() / 2;
                flipped[mid] ^= 0x10;
                send_chunk(&mut req.send, &header, flipped[from..].to_vec().into(), &[]).await
            }
            Lie::TruncatedChunk => {
                self.lied();
                send_response(&mut req.send, &Response::Chunk(header)).await?;
                let body = &bytes[from..];
                let half = &body[..body.len() / 2];
                req.send.write_all(half).await.map_err(|_| NetError::StreamClosed {
                    action: "send half a chunk",
                })?;
                req.send.finish().map_err(|_| NetError::StreamClosed {
                    action: "finish half a chunk",
                })
            }
            Lie::OtherChunk => {
                self.lied();
                let (other, other_bytes) = self
                    .honest
                    .chunks
                    .iter()
                    .find(|(id, _)| **id != get.id)
                    .expect("the lesson has more than one chunk");
                let header = ChunkHeader {
                    id: *other,
                    size: other_bytes.len() as u32,
                    offset: 0,
                };
                send_chunk(&mut req.send, &header, other_bytes.clone().into(), &[]).await
            }
            Lie::EndlessBytes => {
                self.lied();
                send_response(&mut req.send, &Response::Chunk(header)).await?;
                let _ = req.send.write_all(&bytes[from..]).await;
                let junk = vec![0xA5u8; 16 * 1024];
                // Until the child stops reading (a STOP_SENDING ends the writes).
                while req.send.write_all(&junk).await.is_ok() {}
                Ok(())
            }
            _ => send_chunk(&mut req.send, &header, bytes[from..].to_vec().into(), &[]).await,
        }
    }

    async fn manifest(&self, hash: ChunkId) -> Result<Vec<u8>, ErrorReply> {
        if let Lie::MixedManifest(other) = &self.lie {
            self.lied();
            return Ok(other.clone());
        }
        self.honest
            .manifests
            .get(&hash)
            .cloned()
            .ok_or_else(|| ErrorReply::new(ErrorCode::NotFound, "no such manifest"))
    }

    fn catalog(&self) -> Option<Arc<Signed<Catalog>>> {
        match &self.lie {
            Lie::Catalog(c) => {
                self.lied();
                Some(Arc::new((**c).clone()))
            }
            _ => Some(self.honest.catalog.clone()),
        }
    }

    fn schedule(&self) -> Option<Arc<Signed<Schedule>>> {
        match &self.lie {
            Lie::Schedule(s) => {
                self.lied();
                Some(Arc::new((**s).clone()))
            }
            _ => None,
        }
    }

    fn announcements(&self) -> broadcast::Receiver<Announcement> {
        let rx = self.announce.subscribe();
        if let Lie::Rollback(stale) = &self.lie {
            // Sent on the stream after the current catalog (a subscription sends that first).
            self.lied();
            let _ = self.announce.send(Announcement::Catalog(stale.clone()));
        }
        rx
    }
}
