//! The client side towards parents: priority-ordered parents with failover, and chunk fetches
//! that resume after a cut and verify every chunk.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use courseway_content::{Catalog, ChunkId, ChunkRef, NodeName, Signed};
use courseway_net::{Client, NetError, PeerConnection, SharedLimiter};
use courseway_proto::{
    CatalogReply, ChunkHeader, ErrorCode, ErrorReply, GetCatalog, GetChunk, GetManifest, Request, Response,
};
use parking_lot::Mutex;
use prometheus_client::metrics::histogram::Histogram;
use quinn::RecvStream;

use crate::rejections::{ChunkRejection, Rejections};
use crate::task::AbortOnDrop;

/// One parent: where it listens and the node name its certificate must carry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Parent {
    pub name: NodeName,
    pub addr: SocketAddr,
}

/// How a node talks to its parents.
#[derive(Debug, Clone)]
pub struct UpstreamConfig {
    /// Parents in priority order: the first healthy one is used.
    pub parents: Vec<Parent>,
    /// How long a parent that failed is skipped.
    pub retry_after: Duration,
    /// How long a first connection attempt may take. Each attempt to the same parent that runs
    /// out of time doubles the next one's allowance, up to 8 × (see [`connect_allowance`]).
    pub connect_timeout: Duration,
    /// While on a backup parent, how often to probe the preferred ones again (in the
    /// background: requests keep going to the backup meanwhile).
    pub primary_recheck: Duration,
    /// A fetch gives up after this many failed attempts in a row (the caller retries later).
    pub max_attempts: u32,
    /// A transfer that delivers no byte for this long is treated as cut. Keep-alives stop
    /// QUIC's idle timeout from ending a stalled stream on a live connection.
    pub stall_timeout: Duration,
}

impl UpstreamConfig {
    /// Defaults sized for rural links: parents skipped for 5 s after a failure, 10 s to
    /// connect, preferred parents retried every 30 s.
    pub fn new(parents: Vec<Parent>) -> Self {
        Self {
            parents,
            retry_after: Duration::from_secs(5),
            connect_timeout: Duration::from_secs(10),
            primary_recheck: Duration::from_secs(30),
            max_attempts: 12,
            stall_timeout: Duration::from_secs(30),
        }
    }
}

/// Why an upstream request failed.
#[derive(Debug, thiserror::Error)]
pub enum UpstreamError {
    #[error("no parent is configured; give at least one parent address in the node's config")]
    NoParents,
    #[error("no parent could be reached (last error: {last}); check the parent addresses and the network")]
    Unreachable { last: String },
    #[error("every parent refused: {0}")]
    Refused(ErrorReply),
    #[error(
        "no parent has it ({}); it was never published or has been withdrawn: check the catalog the request \
         came from",
        .0.message
    )]
    NotFound(ErrorReply),
    #[error("chunk {id} could not be fetched after {attempts} attempts (last problem: {last})")]
    GaveUp { id: ChunkId, attempts: u32, last: String },
    #[error("a parent answered {request} with an unexpected {got} frame")]
    Unexpected { request: &'static str, got: String },
    #[error("a parent sent a catalog that cannot be decoded: {0}")]
    Undecodable(#[from] courseway_content::DecodeError),
    #[error("every parent that answered sent a manifest not matching {hash}; refused (counted in courseway_upstream_rejected_total)")]
    ManifestMismatch { hash: ChunkId },
}

impl UpstreamError {
    /// How a relay passes this failure down to its children: a `NotFound` stays `NotFound` (the
    /// answer came from the top of the tree), anything else means the relay's way up failed.
    pub fn to_reply(&self) -> ErrorReply {
        match self {
            UpstreamError::NotFound(reply) => reply.clone(),
            other => ErrorReply::new(ErrorCode::UpstreamUnavailable, other.to_string()),
        }
    }
}

/// Counters of what fetching cost.
#[derive(Debug)]
pub struct FetchStats {
    /// Chunk body bytes received, including bytes later thrown away.
    pub bytes_received: AtomicU64,
    /// Chunk transfers refused (bytes not matching the id, wrong header, cut short or sent past
    /// the declared size), fetched again elsewhere.
    pub bad_chunks: AtomicU64,
    /// Chunk requests that resumed from a non-zero offset.
    pub resumed: AtomicU64,
    /// Times the node switched to another parent.
    pub failovers: AtomicU64,
    /// Chunk requests sent to parents (first requests, resumptions and retries).
    pub chunk_requests: AtomicU64,
    /// Seconds from asking for a chunk to holding it verified (retries and resumptions
    /// included), per chunk fetched.
    pub fetch_seconds: Histogram,
    /// What was refused from parents, by object and reason.
    pub rejections: Rejections,
}

/// Upper bounds of the fetch-time histogram, in seconds: from a hit on the same LAN to a 1 MiB
/// chunk over a few hundred kbit/s with retries.
pub const FETCH_SECONDS_BUCKETS: [f64; 12] = [0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0];

impl Default for FetchStats {
    fn default() -> Self {
        Self {
            bytes_received: AtomicU64::new(0),
            bad_chunks: AtomicU64::new(0),
            resumed: AtomicU64::new(0),
            failovers: AtomicU64::new(0),
            chunk_requests: AtomicU64::new(0),
            fetch_seconds: Histogram::new(FETCH_SECONDS_BUCKETS),
            rejections: Rejections::default(),
        }
    }
}

/// The parent used last, kept across failures so a switch can be counted.
#[derive(Debug, Default)]
struct LastUsed(Option<usize>);

struct Current {
    index: usize,
    conn: PeerConnection,
}

impl Current {
    fn is_open(&self) -> bool {
        self.conn.connection.close_reason().is_none()
    }
}

/// What the requests and the background probe of preferred parents share.
struct Shared {
    client: Client,
    config: UpstreamConfig,
    current: Mutex<Option<Current>>,
    last_used: Mutex<LastUsed>,
    down_until: Mutex<Vec<Option<Instant>>>,
    /// Per parent: connection attempts in a row that ran out of time.
    connect_timeouts: Mutex<Vec<u32>>,
    stats: FetchStats,
}

/// How long an attempt to connect may take after `timeouts_in_a_row` attempts to the same parent
/// ran out of time: `base`, doubled each time, at most 8 × `base`. On a thin line (16 kbit/s
/// carries a 1,200-byte packet in 0.6 s, and the handshake's certificates take several) a
/// handshake can take longer than `base`; a fixed allowance would then fail forever.
pub fn connect_allowance(base: Duration, timeouts_in_a_row: u32) -> Duration {
    base * (1u32 << timeouts_in_a_row.min(3))
}

impl Shared {
    fn mark_failed(&self, index: usize) {
        if let Some(slot) = self.down_until.lock().get_mut(index) {
            *slot = Some(Instant::now() + self.config.retry_after);
        }
        let mut current = self.current.lock();
        if current.as_ref().is_some_and(|c| c.index == index) {
            *current = None;
        }
    }

    fn is_down(&self, index: usize) -> bool {
        self.down_until
            .lock()
            .get(index)
            .copied()
            .flatten()
            .is_some_and(|t| t > Instant::now())
    }

    /// Records that requests now go to `index`, counting a switch of parent.
    fn used(&self, index: usize) {
        if let Some(slot) = self.down_until.lock().get_mut(index) {
            *slot = None;
        }
        let previous = self.last_used.lock().0.replace(index);
        if previous.is_some_and(|p| p != index) {
            self.stats.failovers.fetch_add(1, Ordering::Relaxed);
            tracing::info!(parent = %self.config.parents[index].name, "switched parent");
        }
    }

    async fn connect(&self, index: usize) -> Result<PeerConnection, String> {
        let parent = &self.config.parents[index];
        let in_a_row = self.connect_timeouts.lock().get(index).copied().unwrap_or(0);
        let allowance = connect_allowance(self.config.connect_timeout, in_a_row);
        let attempt = tokio::time::timeout(allowance, self.client.connect(parent.addr, &parent.name)).await;
        let timed_out = attempt.is_err();
        if let Some(count) = self.connect_timeouts.lock().get_mut(index) {
            *count = if timed_out { count.saturating_add(1) } else { 0 };
        }
        match attempt {
            Ok(Ok(conn)) => Ok(conn),
            Ok(Err(e)) => Err(format!("{}: {e}", parent.name)),
            Err(_) => Err(format!("{}: no answer within {allowance:?}", parent.name)),
        }
    }
}

/// While the node is on a backup parent, tries the preferred ones every `primary_recheck` and
/// moves requests to the best one that answers. Runs beside the requests, never in their way:
/// a preferred parent that silently drops packets costs the probe a connect timeout, not them.
/// Ends when the node is on its first parent or has no connection (then the next request picks
/// the best parent itself).
async fn probe_preferred(shared: Arc<Shared>) {
    loop {
        tokio::time::sleep(shared.config.primary_recheck).await;
        let on = match shared.current.lock().as_ref().filter(|c| c.is_open()) {
            Some(c) if c.index > 0 => c.index,
            _ => return,
        };
        for index in 0..on {
            match shared.connect(index).await {
                Ok(conn) => {
                    let mut current = shared.current.lock();
                    // Only if nothing better happened meanwhile.
                    if current.as_ref().is_some_and(|c| c.is_open() && c.index > index) {
                        *current = Some(Current { index, conn });
                        drop(current);
                        shared.used(index);
                        tracing::info!(parent = %shared.config.parents[index].name, "back on a preferred parent");
                    }
                    break;
                }
                Err(e) => {
                    tracing::debug!(error = %e, "preferred parent still unreachable");
                    shared.mark_failed(index);
                }
            }
        }
    }
}

/// A node's link to its parents.
pub struct Upstream {
    shared: Arc<Shared>,
    connecting: tokio::sync::Mutex<()>,
    /// The background probe of preferred parents, aborted with the upstream.
    probe: Mutex<AbortOnDrop>,
}

impl std::fmt::Debug for Upstream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Upstream")
            .field("parents", &self.shared.config.parents)
            .finish_non_exhaustive()
    }
}

impl Upstream {
    /// An upstream that connects through `client`.
    pub fn new(client: Client, config: UpstreamConfig) -> Self {
        let n = config.parents.len();
        Self {
            shared: Arc::new(Shared {
                client,
                config,
                current: Mutex::new(None),
                last_used: Mutex::new(LastUsed::default()),
                down_until: Mutex::new(vec![None; n]),
                connect_timeouts: Mutex::new(vec![0; n]),
                stats: FetchStats::default(),
            }),
            connecting: tokio::sync::Mutex::new(()),
            probe: Mutex::new(AbortOnDrop::default()),
        }
    }

    /// What fetching has cost so far.
    pub fn stats(&self) -> &FetchStats {
        &self.shared.stats
    }

    /// The parents, in priority order.
    pub fn parents(&self) -> &[Parent] {
        &self.shared.config.parents
    }

    /// The parent in use, if connected.
    pub fn current_parent(&self) -> Option<&Parent> {
        let index = self.shared.current.lock().as_ref().filter(|c| c.is_open())?.index;
        self.shared.config.parents.get(index)
    }

    /// Marks a parent as failed: it is skipped for `retry_after`, and its connection dropped.
    pub fn mark_failed(&self, index: usize) {
        self.shared.mark_failed(index);
    }

    /// A connection to the best reachable parent not in `exclude`. On a backup parent, the
    /// preferred ones are probed in the background (see `primary_recheck`).
    pub async fn connection(&self, exclude: &[usize]) -> Result<(usize, PeerConnection), UpstreamError> {
        let shared = &self.shared;
        if shared.config.parents.is_empty() {
            return Err(UpstreamError::NoParents);
        }
        let keep = |c: &Current| c.is_open() && !exclude.contains(&c.index);
        if let Some(c) = shared.current.lock().as_ref().filter(|c| keep(c)) {
            return Ok((c.index, c.conn.clone()));
        }
        // A parent that closed our connection is skipped for `retry_after` (it is likely gone,
        // and dialling a dead address costs a whole connect timeout).
        let closed = shared.current.lock().as_ref().filter(|c| !c.is_open()).map(|c| c.index);
        if let Some(index) = closed {
            shared.mark_failed(index);
        }
        let _one_at_a_time = self.connecting.lock().await;
        if let Some(c) = shared.current.lock().as_ref().filter(|c| keep(c)) {
            return Ok((c.index, c.conn.clone()));
        }
        let mut last = String::from("every parent is marked down");
        // Healthy parents first in priority order, then those marked down (better a parent that
        // failed recently than none at all).
        let n = shared.config.parents.len();
        let candidates: Vec<usize> = (0..n)
            .filter(|i| !exclude.contains(i) && !shared.is_down(*i))
            .chain((0..n).filter(|i| !exclude.contains(i) && shared.is_down(*i)))
            .collect();
        for index in candidates {
            match shared.connect(index).await {
                Ok(conn) => {
                    shared.used(index);
                    if exclude.is_empty() {
                        *shared.current.lock() = Some(Current {
                            index,
                            conn: conn.clone(),
                        });
                        if index > 0 {
                            let mut probe = self.probe.lock();
                            if !probe.is_running() {
                                probe.replace(tokio::spawn(probe_preferred(shared.clone())));
                            }
                        }
                    }
                    return Ok((index, conn));
                }
                Err(e) => {
                    last = e;
                    shared.mark_failed(index);
                }
            }
        }
        Err(UpstreamError::Unreachable { last })
    }

    /// Sends `request` to the best parent, failing over to the others when one is unreachable
    /// or cannot answer (not found, overloaded, its own upstream down). Each parent is asked at
    /// most once; if one of them answered `NotFound` and none had it, the result is
    /// [`UpstreamError::NotFound`], which callers do not retry.
    pub async fn request(&self, request: &Request) -> Result<(usize, Response, RecvStream), UpstreamError> {
        self.request_excluding(request, &[]).await
    }

    /// [`Upstream::request`] to the parents not in `exclude`.
    pub async fn request_excluding(
        &self,
        request: &Request,
        exclude: &[usize],
    ) -> Result<(usize, Response, RecvStream), UpstreamError> {
        let mut exclude = exclude.to_vec();
        let mut refusals = Refusals::default();
        loop {
            let (index, conn) = match self.connection(&exclude).await {
                Ok(c) => c,
                Err(e) => return Err(refusals.into_error(e)),
            };
            match conn.request(request).await {
                Ok((response, recv)) => return Ok((index, response, recv)),
                Err(NetError::Refused(reply)) if retry_elsewhere(&reply) => {
                    exclude.push(index);
                    refusals.add(reply);
                }
                Err(NetError::Refused(reply)) => return Err(UpstreamError::Refused(reply)),
                Err(e) => {
                    tracing::debug!(parent = %self.shared.config.parents[index].name, error = %e, "request failed");
                    self.mark_failed(index);
                    exclude.push(index);
                }
            }
        }
    }

    /// The parent's catalog if newer than `since`.
    pub async fn fetch_catalog(&self, since: u64) -> Result<Option<Signed<Catalog>>, UpstreamError> {
        match self.request(&Request::GetCatalog(GetCatalog { since })).await? {
            (_, Response::Catalog(CatalogReply::Current(c)), _) => Ok(Some(*c)),
            (_, Response::Catalog(CatalogReply::NotModified { .. }), _) => Ok(None),
            (_, other, _) => Err(unexpected("catalog request", &other)),
        }
    }

    /// A manifest's bytes, checked against `hash` (still to be checked against the catalog).
    /// Bytes that do not match are refused, counted, and asked of another parent.
    pub async fn fetch_manifest(&self, hash: ChunkId) -> Result<Vec<u8>, UpstreamError> {
        let request = Request::GetManifest(GetManifest { hash });
        let mut liars = Vec::new();
        loop {
            let (index, response) = match self.request_excluding(&request, &liars).await {
                Ok((index, response, _)) => (index, response),
                Err(UpstreamError::Unreachable { .. }) if !liars.is_empty() => {
                    return Err(UpstreamError::ManifestMismatch { hash })
                }
                Err(e) => return Err(e),
            };
            match response {
                Response::Manifest(m) if ChunkId::of(&m.bytes) == hash => return Ok(m.bytes),
                Response::Manifest(_) => {
                    self.shared.stats.rejections.manifest();
                    let parent = &self.shared.config.parents[index].name;
                    tracing::warn!(%parent, manifest = %hash, "a parent sent a manifest that does not match its hash; refused, asking another parent");
                    self.mark_failed(index);
                    liars.push(index);
                }
                other => return Err(unexpected("manifest request", &other)),
            }
        }
    }

    /// Opens a chunk transfer from `offset` on a parent not in `exclude`; the body follows on
    /// the returned stream. Parents are tried as in [`Upstream::request`].
    pub async fn open_chunk(
        &self,
        get: GetChunk,
        exclude: &[usize],
    ) -> Result<(usize, ChunkHeader, RecvStream), UpstreamError> {
        let mut exclude = exclude.to_vec();
        let mut refusals = Refusals::default();
        loop {
            let (index, conn) = match self.connection(&exclude).await {
                Ok(c) => c,
                Err(e) => return Err(refusals.into_error(e)),
            };
            self.shared.stats.chunk_requests.fetch_add(1, Ordering::Relaxed);
            match conn.request(&Request::GetChunk(get)).await {
                Ok((Response::Chunk(header), recv)) => return Ok((index, header, recv)),
                Ok((other, _)) => return Err(unexpected("chunk request", &other)),
                Err(NetError::Refused(reply)) if retry_elsewhere(&reply) => {
                    exclude.push(index);
                    refusals.add(reply);
                }
                Err(NetError::Refused(reply)) => return Err(UpstreamError::Refused(reply)),
                Err(e) => {
                    tracing::debug!(parent = %self.shared.config.parents[index].name, error = %e, "chunk request failed");
                    self.mark_failed(index);
                    exclude.push(index);
                }
            }
        }
    }

    /// Fetches a whole chunk and verifies it. A transfer cut part-way resumes from the last byte
    /// received; bytes that do not match the id are thrown away, counted, and fetched from
    /// another parent. Reading is paced by `limiter` (QUIC flow control then slows the sender).
    pub async fn fetch_chunk(
        &self,
        chunk: ChunkRef,
        limiter: Option<&SharedLimiter>,
    ) -> Result<Vec<u8>, UpstreamError> {
        let size = chunk.size as usize;
        let mut buf: Vec<u8> = Vec::with_capacity(size);
        let mut exclude: Vec<usize> = Vec::new();
        let mut last = String::new();
        let mut piece = vec![0u8; 64 * 1024];
        let started = Instant::now();
        for attempt in 1..=self.shared.config.max_attempts {
            if exclude.len() >= self.shared.config.parents.len() {
                exclude.clear();
            }
            let offset = buf.len() as u32;
            let (index, header, mut recv) = match self.open_chunk(GetChunk { id: chunk.id, offset }, &exclude).await {
                Ok(opened) => opened,
                // Every parent was asked and the chunk does not exist up the tree: asking the same
                // parents again cannot help.
                Err(e @ UpstreamError::NotFound(_)) => return Err(e),
                Err(e) => {
                    last = e.to_string();
                    tokio::time::sleep(backoff(attempt)).await;
                    continue;
                }
            };
            if offset > 0 {
                self.shared.stats.resumed.fetch_add(1, Ordering::Relaxed);
            }
            if header.id != chunk.id || header.size != chunk.size || header.offset != offset {
                last = format!(
                    "parent {} sent a header for another chunk or offset",
                    self.shared.config.parents[index].name
                );
                self.refuse(chunk.id, index, ChunkRejection::WrongHeader);
                buf.clear();
                exclude.push(index);
                continue;
            }
            while buf.len() < size {
                let want = piece.len().min(size - buf.len());
                let read =
                    match tokio::time::timeout(self.shared.config.stall_timeout, recv.read(&mut piece[..want])).await {
                        Ok(read) => read,
                        Err(_) => {
                            last = format!(
                                "no bytes from {} for {:?}",
                                self.shared.config.parents[index].name, self.shared.config.stall_timeout
                            );
                            self.mark_failed(index);
                            break;
                        }
                    };
                match read {
                    Ok(Some(n)) => {
                        if let Some(l) = limiter {
                            l.acquire(n as u64).await;
                        }
                        self.shared.stats.bytes_received.fetch_add(n as u64, Ordering::Relaxed);
                        buf.extend_from_slice(&piece[..n]);
                    }
                    Ok(None) => {
                        // A parent that cannot finish resets the stream; ending it early is a lie
                        // about the size. Nothing it sent is kept.
                        last = format!(
                            "{} ended the transfer before the declared size",
                            self.shared.config.parents[index].name
                        );
                        self.refuse(chunk.id, index, ChunkRejection::Truncated);
                        buf.clear();
                        exclude.push(index);
                        break;
                    }
                    Err(quinn::ReadError::Reset(code)) => {
                        // The parent abandoned this transfer (its own fetch failed): what it sent
                        // may not continue correctly elsewhere, so start the chunk over.
                        last = format!(
                            "{} abandoned the transfer (code {code})",
                            self.shared.config.parents[index].name
                        );
                        buf.clear();
                        break;
                    }
                    Err(e) => {
                        last = format!("transfer from {} cut: {e}", self.shared.config.parents[index].name);
                        self.mark_failed(index);
                        break;
                    }
                }
            }
            if buf.len() < size {
                if buf.len() as u32 <= offset {
                    tokio::time::sleep(backoff(attempt)).await; // no progress: do not spin
                }
                continue; // resume from buf.len() on the next attempt
            }
            if sent_past_the_end(&mut recv, self.shared.config.stall_timeout).await {
                last = format!(
                    "{} sent bytes past the declared size",
                    self.shared.config.parents[index].name
                );
                self.refuse(chunk.id, index, ChunkRejection::Overlong);
                buf.clear();
                exclude.push(index);
                continue;
            }
            if chunk.id.verify(&buf).is_ok() {
                self.shared.stats.fetch_seconds.observe(started.elapsed().as_secs_f64());
                return Ok(buf);
            }
            self.refuse(chunk.id, index, ChunkRejection::HashMismatch);
            last = format!(
                "bytes from {} did not match the chunk's hash",
                self.shared.config.parents[index].name
            );
            buf.clear();
            exclude.push(index);
        }
        Err(UpstreamError::GaveUp {
            id: chunk.id,
            attempts: self.shared.config.max_attempts,
            last,
        })
    }
}

impl Upstream {
    /// Counts and logs a chunk transfer refused from parent `index`, and skips that parent for
    /// `retry_after` (other requests go to the next parent meanwhile).
    fn refuse(&self, id: ChunkId, index: usize, why: ChunkRejection) {
        self.shared.stats.bad_chunks.fetch_add(1, Ordering::Relaxed);
        self.shared.stats.rejections.chunk(why);
        tracing::warn!(chunk = %id, parent = %self.shared.config.parents[index].name, reason = ?why, "chunk transfer refused; fetching it elsewhere");
        self.mark_failed(index);
    }
}

/// After a chunk's declared bytes: whether the parent sent more (a protocol violation). An
/// honest parent finishes the stream with its last byte; a stream that stalls or is cut there
/// counts as ended (the bytes are complete, and their hash decides).
pub async fn sent_past_the_end(recv: &mut RecvStream, stall_timeout: Duration) -> bool {
    let mut probe = [0u8; 1];
    matches!(
        tokio::time::timeout(stall_timeout, recv.read(&mut probe)).await,
        Ok(Ok(Some(n))) if n > 0
    )
}

/// The refusals collected while trying every parent once.
#[derive(Default)]
struct Refusals {
    not_found: Option<ErrorReply>,
    last: Option<ErrorReply>,
}

impl Refusals {
    fn add(&mut self, reply: ErrorReply) {
        if reply.code == ErrorCode::NotFound {
            self.not_found = Some(reply);
        } else {
            self.last = Some(reply);
        }
    }

    /// What to report once no parent is left to ask. A `NotFound` wins: with every parent
    /// asked, one that is down or overloaded does not make the item exist.
    fn into_error(self, unreachable: UpstreamError) -> UpstreamError {
        match (self.not_found, self.last) {
            (Some(reply), _) => UpstreamError::NotFound(reply),
            (None, Some(reply)) => UpstreamError::Refused(reply),
            (None, None) => unreachable,
        }
    }
}

fn retry_elsewhere(reply: &ErrorReply) -> bool {
    matches!(
        reply.code,
        ErrorCode::NotFound | ErrorCode::Overloaded | ErrorCode::UpstreamUnavailable | ErrorCode::Internal
    )
}

fn backoff(attempt: u32) -> Duration {
    Duration::from_millis((100u64 << attempt.min(6)).min(5_000))
}

fn unexpected(request: &'static str, got: &Response) -> UpstreamError {
    UpstreamError::Unexpected {
        request,
        got: format!("{got:?}").chars().take(60).collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_connect_allowance_doubles_with_each_timeout_in_a_row_up_to_eight_times() {
        let base = Duration::from_secs(10);
        let got: Vec<u64> = (0..6).map(|n| connect_allowance(base, n).as_secs()).collect();
        assert_eq!(got, vec![10, 20, 40, 80, 80, 80]);
        assert_eq!(connect_allowance(base, u32::MAX), Duration::from_secs(80));
    }
}
