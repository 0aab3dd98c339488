//! In-flight chunk fetches shared by every child that waits for the same chunk.

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use courseway_content::ChunkId;
use courseway_net::{send_response, stream_error_code, IncomingRequest, NetError};
use courseway_node::upstream::sent_past_the_end;
use courseway_node::{reply_error, store_io, ChunkRejection, Upstream, UpstreamError};
use courseway_proto::{ChunkHeader, ErrorCode, ErrorReply, GetChunk, Response};
use courseway_store::Store;
use parking_lot::{Mutex, RwLock};
use tokio::sync::watch;

use crate::service::Counters;

/// A transfer that delivers no byte for this long is treated as cut (keep-alives stop QUIC's
/// idle timeout from ever ending a stalled stream on a live connection).
pub const STALL_TIMEOUT: Duration = Duration::from_secs(30);

/// How an in-flight fetch is going.
#[derive(Debug, Clone, Default)]
pub struct Progress {
    /// The chunk's size, once the parent's header arrived.
    pub size: Option<u32>,
    /// Bytes received so far (the buffer only grows while the fetch lives).
    pub received: usize,
    /// Set when the fetch ends: verified, or failed with the answer to give the children
    /// (`NotFound` when the top of the tree said so, `UpstreamUnavailable` otherwise).
    pub outcome: Option<Result<(), ErrorReply>>,
}

/// One chunk being fetched from upstream.
#[derive(Debug)]
pub struct InFlight {
    id: ChunkId,
    /// Written only by the fetch; children copy out of it under short read locks.
    data: RwLock<Vec<u8>>,
    progress: watch::Sender<Progress>,
}

/// What [`Fetches::join_or_start`] found.
#[derive(Debug)]
pub enum Joined {
    /// The chunk is in the store now.
    Cached,
    /// A fetch to follow, and whether this call started it.
    Flight(Arc<InFlight>, bool),
}

/// The relay's table of in-flight fetches.
#[derive(Debug, Default)]
pub struct Fetches {
    table: Mutex<HashMap<ChunkId, Arc<InFlight>>>,
}

impl Fetches {
    /// Joins the fetch of `id`, starting it if none runs. Returns the fetch and whether this
    /// call started it.
    pub fn join_or_start(
        &self,
        id: ChunkId,
        cached: impl FnOnce() -> bool,
        start: impl FnOnce(Arc<InFlight>),
    ) -> Joined {
        let mut table = self.table.lock();
        if let Some(f) = table.get(&id) {
            return Joined::Flight(f.clone(), false);
        }
        // A fetch stores its chunk before leaving the table, so under the table lock the store
        // is conclusive: no second upstream fetch of a chunk that just landed.
        if cached() {
            return Joined::Cached;
        }
        let f = Arc::new(InFlight {
            id,
            data: RwLock::new(Vec::new()),
            progress: watch::Sender::new(Progress::default()),
        });
        table.insert(id, f.clone());
        drop(table);
        start(f.clone());
        Joined::Flight(f, true)
    }

    fn finish(&self, id: &ChunkId) {
        self.table.lock().remove(id);
    }
}

impl InFlight {
    /// Waits for the fetch to end and returns its outcome.
    pub async fn outcome(&self) -> Result<(), ErrorReply> {
        let mut rx = self.progress.subscribe();
        loop {
            if let Some(outcome) = rx.borrow_and_update().outcome.clone() {
                return outcome;
            }
            if rx.changed().await.is_err() {
                return Err(unavailable("the fetch was abandoned"));
            }
        }
    }
}

fn unavailable(message: impl Into<String>) -> ErrorReply {
    ErrorReply::new(ErrorCode::UpstreamUnavailable, message)
}

/// Runs one fetch to its end: from the parent, resuming after cuts, verifying, storing.
pub async fn run_fetch(
    fetches: Arc<Fetches>,
    f: Arc<InFlight>,
    upstream: Arc<Upstream>,
    store: Arc<Store>,
    counters: Arc<Counters>,
    max_attempts: u32,
) {
    let started = std::time::Instant::now();
    let outcome = fetch_into(&f, &upstream, &counters, max_attempts).await;
    if outcome.is_ok() {
        upstream.stats().fetch_seconds.observe(started.elapsed().as_secs_f64());
        // Kept only after its hash checked (fetch_into verified it; put checks again). The write
        // runs on a blocking thread; the read lock it holds does not stop children copying out.
        let flight = f.clone();
        let stored = store_io(&store, move |s| s.put(flight.id, &flight.data.read())).await;
        if let Err(e) = stored {
            tracing::warn!(chunk = %f.id, error = %e, "verified chunk not cached; children were still served");
        }
    }
    fetches.finish(&f.id);
    f.progress.send_modify(|p| p.outcome = Some(outcome));
}

async fn fetch_into(
    f: &InFlight,
    upstream: &Upstream,
    counters: &Counters,
    max_attempts: u32,
) -> Result<(), ErrorReply> {
    let mut exclude = Vec::new();
    let mut last = String::new();
    let mut piece = vec![0u8; 64 * 1024];
    for attempt in 1..=max_attempts {
        if exclude.len() >= upstream.parents().len() {
            exclude.clear();
        }
        let offset = f.data.read().len() as u32;
        let (index, header, mut recv) = match upstream.open_chunk(GetChunk { id: f.id, offset }, &exclude).await {
            Ok(opened) => opened,
            // Every parent was asked and the chunk does not exist up the tree: say so, do not retry.
            Err(e @ UpstreamError::NotFound(_)) => return Err(e.to_reply()),
            Err(e) => {
                last = e.to_string();
                tokio::time::sleep(Duration::from_millis(100 << attempt.min(5))).await;
                continue;
            }
        };
        let known = f.progress.borrow().size;
        if header.id != f.id || header.offset != offset || known.is_some_and(|s| s != header.size) {
            last = "a parent sent a header for another chunk, offset or size".into();
            refuse(upstream, counters, f.id, index, ChunkRejection::WrongHeader);
            exclude.push(index);
            continue;
        }
        f.progress.send_modify(|p| p.size = Some(header.size));
        let size = header.size as usize;
        loop {
            let have = f.data.read().len();
            if have >= size {
                break;
            }
            let want = piece.len().min(size - have);
            let read = match tokio::time::timeout(STALL_TIMEOUT, recv.read(&mut piece[..want])).await {
                Ok(read) => read,
                Err(_) => {
                    last = format!("no bytes from the parent for {STALL_TIMEOUT:?}");
                    upstream.mark_failed(index);
                    break;
                }
            };
            match read {
                Ok(Some(n)) => {
                    counters.bytes_fetched.fetch_add(n as u64, Ordering::Relaxed);
                    upstream.stats().bytes_received.fetch_add(n as u64, Ordering::Relaxed);
                    let received = {
                        let mut data = f.data.write();
                        data.extend_from_slice(&piece[..n]);
                        data.len()
                    };
                    f.progress.send_modify(|p| p.received = received);
                }
                Ok(None) => {
                    // A parent that cannot finish resets the stream: ending it early is a lie about
                    // the size. What it sent stays (the hash decides at the end), the rest comes
                    // from another parent.
                    last = "the parent ended the transfer before the declared size".into();
                    refuse(upstream, counters, f.id, index, ChunkRejection::Truncated);
                    exclude.push(index);
                    break;
                }
                Err(quinn::ReadError::Reset(code)) => {
                    // The parent abandoned the transfer. Bytes already streamed to children
                    // cannot be taken back: fail this fetch so they start over too.
                    let parent = &upstream.parents()[index].name;
                    return Err(unavailable(format!(
                        "parent {parent} abandoned the transfer (code {code})"
                    )));
                }
                Err(e) => {
                    last = format!("transfer cut: {e}");
                    upstream.mark_failed(index);
                    break;
                }
            }
        }
        if f.data.read().len() < size {
            if f.data.read().len() as u32 == offset {
                tokio::time::sleep(Duration::from_millis(100 << attempt.min(5))).await;
            }
            continue; // resume from where the bytes stopped
        }
        if sent_past_the_end(&mut recv, STALL_TIMEOUT).await {
            refuse(upstream, counters, f.id, index, ChunkRejection::Overlong);
            return Err(unavailable(format!(
                "parent {} sent bytes past the chunk's declared size; refused",
                upstream.parents()[index].name
            )));
        }
        if f.id.verify(&f.data.read()).is_ok() {
            return Ok(());
        }
        refuse(upstream, counters, f.id, index, ChunkRejection::HashMismatch);
        // Children already streaming this fetch cannot be given different bytes: fail it, they
        // ask again and get a fresh fetch from another parent.
        return Err(unavailable(format!(
            "the bytes from parent {} did not match the chunk's hash",
            upstream.parents()[index].name
        )));
    }
    Err(unavailable(format!("gave up after {max_attempts} attempts: {last}")))
}

/// Counts and logs a chunk transfer refused from parent `index`, and skips that parent for its
/// `retry_after`.
fn refuse(upstream: &Upstream, counters: &Counters, id: ChunkId, index: usize, why: ChunkRejection) {
    counters.bad_chunks.fetch_add(1, Ordering::Relaxed);
    upstream.stats().bad_chunks.fetch_add(1, Ordering::Relaxed);
    upstream.stats().rejections.chunk(why);
    tracing::warn!(chunk = %id, parent = %upstream.parents()[index].name, reason = ?why, "chunk transfer from parent refused");
    upstream.mark_failed(index);
}

/// Streams an in-flight chunk to one child from `get.offset`, as bytes arrive.
pub async fn serve_from_flight(
    f: Arc<InFlight>,
    req: &mut IncomingRequest,
    get: GetChunk,
    wait: Duration,
    counters: &Counters,
) -> Result<(), NetError> {
    let mut rx = f.progress.subscribe();
    let size = loop {
        let p = rx.borrow_and_update().clone();
        if let Some(Err(reply)) = p.outcome {
            return reply_error(req, reply.code, reply.message).await;
        }
        if let Some(size) = p.size {
            break size;
        }
        match tokio::time::timeout(wait, rx.changed()).await {
            Ok(Ok(())) => {}
            _ => {
                let message = format!("the parent did not start sending chunk {} within {wait:?}", get.id);
                return reply_error(req, ErrorCode::UpstreamUnavailable, message).await;
            }
        }
    };
    if get.offset > size {
        let message = format!("offset {} is beyond the end of the chunk ({size} bytes)", get.offset);
        return reply_error(req, ErrorCode::BadOffset, message).await;
    }
    send_response(
        &mut req.send,
        &Response::Chunk(ChunkHeader {
            id: get.id,
            size,
            offset: get.offset,
        }),
    )
    .await?;
    let mut sent = get.offset as usize;
    let size = size as usize;
    loop {
        let p = rx.borrow_and_update().clone();
        let available = match &p.outcome {
            Some(Ok(())) => size,
            Some(Err(_)) => {
                let _ = req.send.reset(stream_error_code(ErrorCode::UpstreamUnavailable));
                return Ok(());
            }
            // Hold the last byte back until the chunk has been verified.
            None => p.received.min(size.saturating_sub(1)),
        };
        if available > sent {
            let bytes = f.data.read()[sent..available].to_vec();
            req.send.write_all(&bytes).await.map_err(|_| NetError::StreamClosed {
                action: "stream a chunk",
            })?;
            counters.bytes_served.fetch_add(bytes.len() as u64, Ordering::Relaxed);
            sent = available;
        }
        if sent == size {
            return req.send.finish().map_err(|_| NetError::StreamClosed {
                action: "finish a chunk",
            });
        }
        match tokio::time::timeout(wait, rx.changed()).await {
            Ok(Ok(())) => {}
            _ => {
                let _ = req.send.reset(stream_error_code(ErrorCode::UpstreamUnavailable));
                return Ok(());
            }
        }
    }
}
