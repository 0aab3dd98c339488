//! Answering children's requests, for any role.

use std::future::Future;
use std::sync::Arc;

use courseway_content::{Catalog, ChannelId, ChunkId, LiveSegment, Schedule, Signed};
use courseway_net::{
    send_chunk, send_response, serve_requests, IncomingRequest, NetError, PeerConnection, PeerIdentity, ServeConfig,
    SharedLimiter,
};
use courseway_proto::{
    Announcement, CatalogReply, ChunkHeader, ErrorCode, ErrorReply, GetChunk, ManifestReply, Report, ReportAck,
    Request, Response, Topic, Welcome,
};
use courseway_store::{Store, StoreError};

use crate::blocking::store_io;
use tokio::sync::broadcast;

/// What a role provides so that [`serve_connection`] can answer its children.
pub trait NodeService: Send + Sync + 'static {
    /// Who this node is, for `Hello`.
    fn welcome(&self) -> Welcome;

    /// Whether `peer` may make `request` (e.g. only stations send reports, only enrolled
    /// children fetch). Default: every authenticated peer may ask anything.
    fn authorize(&self, _peer: &PeerIdentity, _request: &Request) -> Result<(), ErrorReply> {
        Ok(())
    }

    /// Answers a `GetChunk` on `req.send`: a chunk header then the body, or an error frame.
    fn serve_chunk(
        &self,
        req: &mut IncomingRequest,
        get: GetChunk,
    ) -> impl Future<Output = Result<(), NetError>> + Send;

    /// The canonical bytes of the manifest named `hash`.
    fn manifest(&self, hash: ChunkId) -> impl Future<Output = Result<Vec<u8>, ErrorReply>> + Send;

    /// The last verified catalog.
    fn catalog(&self) -> Option<Arc<Signed<Catalog>>>;

    /// The last verified schedule. Default: none (a node that does not follow schedules).
    fn schedule(&self) -> Option<Arc<Signed<Schedule>>> {
        None
    }

    /// Announcements to push down subscriptions.
    fn announcements(&self) -> broadcast::Receiver<Announcement>;

    /// A child subscribed to live `channel`: the segments of its window (oldest first), sent
    /// before new ones so a late joiner starts at the live edge. A relay starts following the
    /// channel upstream here (once per channel). Default: no live channels.
    fn live_join(&self, _channel: &ChannelId) -> Vec<Arc<Signed<LiveSegment>>> {
        Vec::new()
    }

    /// Takes a station report; returns once it is durably written.
    fn report(&self, _peer: &PeerIdentity, _report: Report) -> impl Future<Output = Result<(), ErrorReply>> + Send {
        async {
            Err(ErrorReply::new(
                ErrorCode::Unauthorized,
                "this node does not take reports",
            ))
        }
    }
}

/// Serves one child connection until it closes.
/// Serves one child's connection like [`serve_connection`], counting it in `connected` while it
/// lasts (the count goes down however the connection ends, panics included).
pub async fn serve_counted_connection<S: NodeService>(
    service: Arc<S>,
    conn: PeerConnection,
    connected: Arc<std::sync::atomic::AtomicU64>,
) {
    struct Connected(Arc<std::sync::atomic::AtomicU64>);
    impl Drop for Connected {
        fn drop(&mut self) {
            self.0.fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
        }
    }
    connected.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let _connected = Connected(connected);
    serve_connection(service, conn).await;
}

pub async fn serve_connection<S: NodeService>(service: Arc<S>, conn: PeerConnection) {
    let (connection, peer) = (conn.connection.clone(), conn.peer.clone());
    serve_requests(conn, ServeConfig::default(), move |req| {
        let service = service.clone();
        async move { handle(service, req).await }
    })
    .await;
    // What the connection cost on the wire, for diagnosing a child's line (datagrams, loss,
    // congestion events, retransmitted bytes, flow-control frames).
    let stats = connection.stats();
    tracing::debug!(
        %peer,
        datagrams_sent = stats.udp_tx.datagrams,
        bytes_sent = stats.udp_tx.bytes,
        packets_lost = stats.path.lost_packets,
        bytes_lost = stats.path.lost_bytes,
        congestion_events = stats.path.congestion_events,
        stream_frames_sent = stats.frame_tx.stream,
        acks_sent = stats.frame_tx.acks,
        max_data_received = stats.frame_rx.max_data,
        max_stream_data_received = stats.frame_rx.max_stream_data,
        data_blocked_sent = stats.frame_tx.data_blocked,
        stream_data_blocked_sent = stats.frame_tx.stream_data_blocked,
        pings_sent = stats.frame_tx.ping,
        rtt_ms = stats.path.rtt.as_millis() as u64,
        "child connection closed"
    );
}

async fn reply(req: &mut IncomingRequest, response: Response) -> Result<(), NetError> {
    send_response(&mut req.send, &response).await?;
    req.send.finish().map_err(|_| NetError::StreamClosed {
        action: "finish the reply",
    })
}

async fn handle<S: NodeService>(service: Arc<S>, mut req: IncomingRequest) -> Result<(), NetError> {
    if let Err(refusal) = service.authorize(&req.peer, &req.request) {
        return reply(&mut req, Response::Error(refusal)).await;
    }
    match req.request.clone() {
        Request::Hello(_) => reply(&mut req, Response::Welcome(service.welcome())).await,
        Request::GetChunk(get) => service.serve_chunk(&mut req, get).await,
        Request::GetManifest(get) => match service.manifest(get.hash).await {
            Ok(bytes) => reply(&mut req, Response::Manifest(ManifestReply { bytes })).await,
            Err(e) => reply(&mut req, Response::Error(e)).await,
        },
        Request::GetCatalog(get) => {
            let response = match service.catalog() {
                None => Response::Error(ErrorReply::new(
                    ErrorCode::NotFound,
                    "this node has no verified catalog yet",
                )),
                Some(c) if c.body.version <= get.since => Response::Catalog(CatalogReply::NotModified {
                    version: c.body.version,
                }),
                Some(c) => Response::Catalog(CatalogReply::Current(Box::new((*c).clone()))),
            };
            reply(&mut req, response).await
        }
        Request::Subscribe(sub) => subscription(service, req, sub.topics).await,
        Request::Report(report) => {
            let id = report.id;
            let peer = req.peer.clone();
            match service.report(&peer, *report).await {
                Ok(()) => reply(&mut req, Response::ReportAck(ReportAck { id })).await,
                Err(e) => reply(&mut req, Response::Error(e)).await,
            }
        }
    }
}

fn wanted(topics: &[Topic], a: &Announcement) -> bool {
    match a {
        Announcement::Catalog(_) => topics.contains(&Topic::Catalog),
        Announcement::Schedule(_) => topics.contains(&Topic::Schedule),
        Announcement::Live(seg) => topics.contains(&Topic::Live(seg.body.channel.clone())),
    }
}

/// The current catalog and schedule as announcements, for the topics wanted.
fn current<S: NodeService>(service: &S, topics: &[Topic]) -> Vec<Announcement> {
    let catalog = service
        .catalog()
        .filter(|_| topics.contains(&Topic::Catalog))
        .map(|c| Announcement::Catalog(Box::new((*c).clone())));
    let schedule = service
        .schedule()
        .filter(|_| topics.contains(&Topic::Schedule))
        .map(|s| Announcement::Schedule(Box::new((*s).clone())));
    catalog.into_iter().chain(schedule).collect()
}

/// A long-lived stream: the current catalog and schedule first (if wanted), then every
/// announcement, until the child closes its side or the connection drops.
async fn subscription<S: NodeService>(
    service: Arc<S>,
    mut req: IncomingRequest,
    topics: Vec<Topic>,
) -> Result<(), NetError> {
    let mut rx = service.announcements();
    for a in current(&*service, &topics) {
        send_response(&mut req.send, &Response::Announce(a)).await?;
    }
    for topic in &topics {
        if let Topic::Live(channel) = topic {
            for segment in service.live_join(channel) {
                let a = Announcement::Live(Box::new((*segment).clone()));
                send_response(&mut req.send, &Response::Announce(a)).await?;
            }
        }
    }
    let mut probe = [0u8; 1];
    // The child finishes its send side right after the request; only a reset (or a failed
    // send below, once the connection is gone) ends the subscription.
    let mut watch_recv = true;
    loop {
        tokio::select! {
            r = req.recv.read(&mut probe), if watch_recv => match r {
                Ok(Some(_)) => {}
                Ok(None) => watch_recv = false,
                Err(_) => return Ok(()),
            },
            a = rx.recv() => match a {
                Ok(a) if wanted(&topics, &a) => send_response(&mut req.send, &Response::Announce(a)).await?,
                Ok(_) => {}
                Err(broadcast::error::RecvError::Lagged(missed)) => {
                    // Catalogs and schedules are cumulative: the newest ones replace whatever was missed.
                    tracing::warn!(missed, peer = %req.peer, "subscriber lagged; resending the current catalog and schedule");
                    for a in current(&*service, &topics) {
                        send_response(&mut req.send, &Response::Announce(a)).await?;
                    }
                }
                Err(broadcast::error::RecvError::Closed) => return Ok(()),
            }
        }
    }
}

/// Answers a `GetChunk` from `store`: `Ok(false)` if the chunk is not stored (nothing was sent).
/// The read runs on a blocking thread.
pub async fn send_stored_chunk(
    store: &Arc<Store>,
    req: &mut IncomingRequest,
    get: GetChunk,
    limiters: &[&SharedLimiter],
) -> Result<bool, NetError> {
    let size = match store.size_of(&get.id) {
        Some(size) => size,
        None => return Ok(false),
    };
    let (id, offset) = (get.id, get.offset);
    match store_io(store, move |s| s.get(&id, offset)).await {
        Ok(Some(body)) => {
            let header = ChunkHeader {
                id: get.id,
                size,
                offset: get.offset,
            };
            // The store's buffer becomes quinn's without another copy.
            send_chunk(&mut req.send, &header, body.into(), limiters).await?;
            Ok(true)
        }
        Ok(None) => Ok(false),
        Err(StoreError::OffsetBeyondEnd { offset, size, .. }) => {
            let message = format!("offset {offset} is beyond the end of the chunk ({size} bytes)");
            reply(req, Response::Error(ErrorReply::new(ErrorCode::BadOffset, message))).await?;
            Ok(true)
        }
        // Damaged on disk: the store dropped it; answer as a miss so the caller fetches it again.
        Err(StoreError::Corrupt { .. }) => Ok(false),
        Err(e) => {
            reply(
                req,
                Response::Error(ErrorReply::new(ErrorCode::Internal, e.to_string())),
            )
            .await?;
            Ok(true)
        }
    }
}

/// Sends an error frame as the whole answer.
pub async fn reply_error(
    req: &mut IncomingRequest,
    code: ErrorCode,
    message: impl Into<String>,
) -> Result<(), NetError> {
    reply(req, Response::Error(ErrorReply::new(code, message))).await
}
