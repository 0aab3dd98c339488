//! The relay: its answers to children and its sync loop towards its parents.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use std::collections::{BTreeMap, HashSet};

use courseway_content::{
    Catalog, ChannelId, ChunkId, LessonId, LiveSegment, NodeName, PublicKey, Schedule, Signed, TrustError, TrustState,
};
use courseway_net::{
    read_response, Client, Enrollment, IncomingRequest, NetError, PeerIdentity, Revocations, Server, TransportConfig,
};
use courseway_node::live::{self, Inserted, LiveWindow, SegmentKey, DEFAULT_LIVE_WINDOW};
use courseway_node::metrics::{self, FnCollector, MetricsCollector};
use courseway_node::reports::{check_reporter, send_report};
use courseway_node::{
    clock, persist, send_stored_chunk, serve_counted_connection, store_io, task::AbortOnDrop, NodeService, SignedKind,
    Upstream, UpstreamConfig,
};
use courseway_proto::{
    Announcement, ErrorCode, ErrorReply, GetChunk, Report, Request, Response, Role, Subscribe, Topic, Welcome,
};
use courseway_store::{PinReason, Store, StoreConfig, StoreError};
use parking_lot::{Mutex, RwLock};
use tokio::sync::{broadcast, mpsc};
use tokio::task::JoinSet;

use crate::fetch::{run_fetch, serve_from_flight, Fetches, Joined};
use crate::manifests::{ManifestSource, Manifests};

/// Which published lessons a relay fetches before any child asks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PrefetchPolicy {
    /// Every lesson in the catalog.
    All,
    /// The lessons the current schedule shows from now to the end of the relay's
    /// `schedule_horizon` (whatever the target: a relay does not know which stations are below).
    ScheduledOnly,
    /// Nothing: chunks are fetched when a child first asks.
    None,
}

/// How a relay runs.
#[derive(Debug, Clone)]
pub struct RelayConfig {
    pub name: NodeName,
    /// Where children connect.
    pub listen: SocketAddr,
    pub store: StoreConfig,
    pub transport: TransportConfig,
    pub upstream: UpstreamConfig,
    pub prefetch: PrefetchPolicy,
    /// How long a child waits on an in-flight fetch that makes no progress.
    pub wait_timeout: Duration,
    /// Chunks prefetched at once.
    pub prefetch_concurrency: usize,
    /// With [`PrefetchPolicy::ScheduledOnly`]: how far ahead of a showing its lesson is
    /// prefetched.
    pub schedule_horizon: Duration,
    /// Live segments kept (pinned) per channel and rendition for children that join late.
    pub live_window: usize,
}

impl RelayConfig {
    /// A relay with default timeouts and prefetch of everything.
    pub fn new(name: NodeName, listen: SocketAddr, store: StoreConfig, upstream: UpstreamConfig) -> Self {
        Self {
            name,
            listen,
            store,
            transport: TransportConfig::default(),
            upstream,
            prefetch: PrefetchPolicy::All,
            wait_timeout: Duration::from_secs(30),
            prefetch_concurrency: 4,
            schedule_horizon: Duration::from_secs(7 * 86_400),
            live_window: DEFAULT_LIVE_WINDOW,
        }
    }
}

/// What went wrong starting a relay.
#[derive(Debug, thiserror::Error)]
pub enum RelayError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Net(#[from] NetError),
    #[error(transparent)]
    Persist(#[from] persist::PersistError),
}

/// Counters shared by the relay's tasks.
#[derive(Debug, Default)]
pub struct Counters {
    pub hits: AtomicU64,
    pub misses: AtomicU64,
    pub coalesced: AtomicU64,
    pub errors: AtomicU64,
    pub bytes_served: AtomicU64,
    pub bytes_fetched: AtomicU64,
    pub bad_chunks: AtomicU64,
    /// Children connected now.
    pub children: Arc<AtomicU64>,
    /// Reports from children passed up, acknowledged by the parent, or not delivered.
    pub reports_forwarded: AtomicU64,
    pub reports_acknowledged: AtomicU64,
    pub report_failures: AtomicU64,
}

/// A snapshot of a relay's counters.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RelayStats {
    /// Chunk requests answered from the cache.
    pub hits: u64,
    /// Chunk requests that started an upstream fetch.
    pub misses: u64,
    /// Chunk requests that joined a fetch already running.
    pub coalesced: u64,
    /// Chunk requests that failed.
    pub errors: u64,
    pub bytes_served: u64,
    pub bytes_fetched: u64,
    /// Chunks from a parent that failed verification.
    pub bad_chunks: u64,
    pub catalog_version: u64,
    pub schedule_version: u64,
}

pub(crate) struct RelayService {
    name: NodeName,
    store: Arc<Store>,
    upstream: Arc<Upstream>,
    trust: Mutex<TrustState>,
    /// The revocation list of the newest verified catalog, consulted by this relay's handshakes
    /// (as a server to its children and as a client of its parents).
    revocations: Revocations,
    catalog: RwLock<Option<Arc<Signed<Catalog>>>>,
    schedule: RwLock<Option<Arc<Signed<Schedule>>>>,
    announce: broadcast::Sender<Announcement>,
    fetches: Arc<Fetches>,
    manifests: Arc<Manifests>,
    counters: Arc<Counters>,
    wait_timeout: Duration,
    max_attempts: u32,
    live: Arc<LiveWindow>,
    /// Channels followed upstream (one subscription each, for the relay's lifetime).
    live_followed: Mutex<HashSet<ChannelId>>,
    live_follow: mpsc::UnboundedSender<ChannelId>,
    /// Live segments verified and passed down.
    live_segments: AtomicU64,
}

/// A running relay.
pub struct Relay {
    service: Arc<RelayService>,
    server: Arc<Server>,
    tasks: JoinSet<()>,
}

impl std::fmt::Debug for Relay {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Relay")
            .field("name", &self.service.name)
            .finish_non_exhaustive()
    }
}

impl Relay {
    /// Opens the store, restores the last verified catalog and schedule, starts serving children
    /// and syncing from the parents.
    pub async fn start(config: RelayConfig, enrollment: Enrollment, root: PublicKey) -> Result<Self, RelayError> {
        let store = Arc::new(Store::open(config.store)?);
        let trust = persist::load_trust(&store, root)?;
        let catalog = trust.catalog().cloned().map(Arc::new);
        let schedule = trust.schedule().cloned().map(Arc::new);
        let revocations = enrollment.revocations().clone();
        if let Some(c) = &catalog {
            revocations.replace(c.body.revoked());
        }
        let server = Arc::new(Server::bind(enrollment, &config.transport, config.listen)?);
        let client: Client = server.client();
        let max_attempts = config.upstream.max_attempts;
        let upstream = Arc::new(Upstream::new(client, config.upstream));
        let (announce, _) = broadcast::channel(64);
        let (live_follow, live_requests) = mpsc::unbounded_channel();
        let service = Arc::new(RelayService {
            name: config.name,
            store,
            upstream,
            trust: Mutex::new(trust),
            revocations,
            catalog: RwLock::new(catalog),
            schedule: RwLock::new(schedule),
            announce,
            fetches: Arc::new(Fetches::default()),
            manifests: Arc::new(Manifests::default()),
            counters: Arc::new(Counters::default()),
            wait_timeout: config.wait_timeout,
            max_attempts,
            live: Arc::new(LiveWindow::new(config.live_window)),
            live_followed: Mutex::new(HashSet::new()),
            live_follow,
            live_segments: AtomicU64::new(0),
        });
        let mut tasks = JoinSet::new();
        {
            let (server, service) = (server.clone(), service.clone());
            let connected = service.counters.children.clone();
            tasks.spawn(async move {
                server
                    .serve(move |conn| serve_counted_connection(service.clone(), conn, connected.clone()))
                    .await
            });
        }
        tasks.spawn(follow_live_channels(service.clone(), live_requests));
        tasks.spawn(sync_loop(
            service.clone(),
            Prefetch {
                policy: config.prefetch,
                concurrency: config.prefetch_concurrency.max(1),
                horizon: config.schedule_horizon,
            },
        ));
        Ok(Self { service, server, tasks })
    }

    /// The relay's name.
    pub fn name(&self) -> &NodeName {
        &self.service.name
    }

    /// Where children connect.
    pub fn local_addr(&self) -> Result<SocketAddr, NetError> {
        self.server.local_addr()
    }

    /// The relay's counters.
    pub fn stats(&self) -> RelayStats {
        let c = &self.service.counters;
        RelayStats {
            hits: c.hits.load(Ordering::Relaxed),
            misses: c.misses.load(Ordering::Relaxed),
            coalesced: c.coalesced.load(Ordering::Relaxed),
            errors: c.errors.load(Ordering::Relaxed),
            bytes_served: c.bytes_served.load(Ordering::Relaxed),
            bytes_fetched: c.bytes_fetched.load(Ordering::Relaxed),
            bad_chunks: c.bad_chunks.load(Ordering::Relaxed),
            catalog_version: self
                .service
                .catalog
                .read()
                .as_ref()
                .map(|c| c.body.version)
                .unwrap_or(0),
            schedule_version: self
                .service
                .schedule
                .read()
                .as_ref()
                .map(|s| s.body.version)
                .unwrap_or(0),
        }
    }

    /// The relay's Prometheus metrics, read from its counters at scrape time. Totals only: no
    /// per-child label, so a relay with a thousand stations below it stays a few dozen series.
    pub fn metrics(&self) -> Box<dyn MetricsCollector> {
        Box::new(FnCollector::new(self.service.clone(), |r, s| {
            let c = &r.counters;
            let load = |a: &AtomicU64| a.load(Ordering::Relaxed);
            s.counters(
                "relay_chunk_requests",
                "Chunk requests from children by result: hit (cache), miss (started a fetch), coalesced (joined one), error",
                &[
                    ([("result", "hit")], load(&c.hits)),
                    ([("result", "miss")], load(&c.misses)),
                    ([("result", "coalesced")], load(&c.coalesced)),
                    ([("result", "error")], load(&c.errors)),
                ],
            )?;
            s.counter(
                "relay_served_bytes",
                "Chunk bytes sent to children",
                load(&c.bytes_served),
            )?;
            s.gauge(
                "relay_connected_children",
                "Children (relays and stations) connected now",
                i64::try_from(load(&c.children)).unwrap_or(i64::MAX),
            )?;
            s.counter(
                "relay_fetched_bytes",
                "Chunk bytes fetched from parents and kept",
                load(&c.bytes_fetched),
            )?;
            s.counters(
                "relay_reports",
                "Station reports from children by result: forwarded (passed up), acknowledged (by the parent, after the origin's write), failed (the child sends it again)",
                &[
                    ([("result", "forwarded")], load(&c.reports_forwarded)),
                    ([("result", "acknowledged")], load(&c.reports_acknowledged)),
                    ([("result", "failed")], load(&c.report_failures)),
                ],
            )?;
            s.counter(
                "relay_verification_failures",
                "Chunks or manifests from a parent that failed verification (refused, never served)",
                load(&c.bad_chunks),
            )?;
            s.counter(
                "relay_live_segments",
                "Live segment announcements verified and passed down to children",
                load(&r.live_segments),
            )?;
            metrics::scrape_catalog(s, r.catalog.read().as_deref(), clock::now())?;
            metrics::scrape_store(s, &r.store.stats())?;
            metrics::scrape_upstream(s, r.upstream.stats())
        }))
    }

    /// When each segment of live `channel` was held whole here (ms since the epoch).
    pub fn live_completions(&self, channel: &ChannelId) -> BTreeMap<SegmentKey, u64> {
        self.service.live.completions(channel)
    }

    /// The segments of live `channel` in this relay's window, oldest first.
    pub fn live_window(&self, channel: &ChannelId) -> Vec<Arc<Signed<LiveSegment>>> {
        self.service.live.window(channel)
    }

    /// What this relay refused from its parents (`courseway_upstream_rejected_total`).
    pub fn rejections(&self) -> &courseway_node::Rejections {
        &self.service.upstream.stats().rejections
    }

    /// The relay's store (for inspection).
    pub fn store(&self) -> &Store {
        &self.service.store
    }

    /// Stops serving and syncing.
    pub fn shutdown(&mut self) {
        self.server.close();
        self.tasks.abort_all();
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.shutdown();
    }
}

impl RelayService {
    /// Whether `catalog` was new; an error when it was refused (counted and logged).
    async fn accept_catalog(self: &Arc<Self>, catalog: Signed<Catalog>) -> Result<bool, TrustError> {
        // Only the sync loop accepts catalogs, so saves cannot overtake each other; the trust
        // lock is not held across the (synced) write.
        let accepted = self.trust.lock().accept_catalog(catalog.clone(), clock::now());
        match accepted {
            Ok(courseway_content::Acceptance::New) => {
                let saved = catalog.clone();
                if let Err(e) = store_io(&self.store, move |s| persist::save_catalog(s, &saved)).await {
                    tracing::error!(error = %e, "could not save the accepted catalog");
                }
                let version = catalog.body.version;
                self.revocations.replace(catalog.body.revoked());
                *self.catalog.write() = Some(Arc::new(catalog.clone()));
                let _ = self.announce.send(Announcement::Catalog(Box::new(catalog)));
                tracing::info!(version, "accepted a new catalog");
                Ok(true)
            }
            Ok(courseway_content::Acceptance::Unchanged) => Ok(false),
            Err(e) => {
                self.upstream.stats().rejections.signed(SignedKind::Catalog, &e);
                tracing::warn!(error = %e, "refused a catalog from upstream");
                Err(e)
            }
        }
    }

    /// Whether `schedule` was new; an error when it was refused (counted and logged).
    async fn accept_schedule(self: &Arc<Self>, schedule: Signed<Schedule>) -> Result<bool, TrustError> {
        // As for catalogs: the trust lock is not held across the (synced) write.
        let accepted = self.trust.lock().accept_schedule(schedule.clone(), clock::now());
        match accepted {
            Ok(courseway_content::Acceptance::New) => {
                let saved = schedule.clone();
                if let Err(e) = store_io(&self.store, move |s| persist::save_schedule(s, &saved)).await {
                    tracing::error!(error = %e, "could not save the accepted schedule");
                }
                let version = schedule.body.version;
                *self.schedule.write() = Some(Arc::new(schedule.clone()));
                let _ = self.announce.send(Announcement::Schedule(Box::new(schedule)));
                tracing::info!(version, "accepted a new schedule");
                Ok(true)
            }
            Ok(courseway_content::Acceptance::Unchanged) => Ok(false),
            Err(e) => {
                self.upstream.stats().rejections.signed(SignedKind::Schedule, &e);
                tracing::warn!(error = %e, "refused a schedule from upstream");
                Err(e)
            }
        }
    }

    /// Ensures the chunk is cached, fetching it (once) if needed.
    async fn ensure_chunk(self: &Arc<Self>, id: ChunkId) -> Result<(), ErrorReply> {
        if self.store.has(&id) {
            return Ok(());
        }
        match self
            .fetches
            .join_or_start(id, || self.store.has(&id), |f| self.spawn_fetch(f))
        {
            Joined::Cached => Ok(()),
            Joined::Flight(flight, _) => flight.outcome().await,
        }
    }

    fn spawn_fetch(&self, f: Arc<crate::fetch::InFlight>) {
        tokio::spawn(run_fetch(
            self.fetches.clone(),
            f,
            self.upstream.clone(),
            self.store.clone(),
            self.counters.clone(),
            self.max_attempts,
        ));
    }

    /// A manifest from the cache, or fetched once from the parents however many children ask.
    async fn fetch_manifest(&self, hash: ChunkId) -> Result<Vec<u8>, ErrorReply> {
        let source = ManifestSource {
            upstream: self.upstream.clone(),
            store: self.store.clone(),
            counters: self.counters.clone(),
            wait: self.wait_timeout,
        };
        self.manifests.get(hash, &source).await
    }
}

impl NodeService for RelayService {
    fn welcome(&self) -> Welcome {
        Welcome {
            node: self.name.clone(),
            role: Role::Relay,
            software: concat!("courseway ", env!("CARGO_PKG_VERSION")).into(),
        }
    }

    fn authorize(&self, peer: &PeerIdentity, _request: &Request) -> Result<(), ErrorReply> {
        match peer.role {
            Role::Relay | Role::Station | Role::Operator => Ok(()),
            Role::Origin => Err(ErrorReply::new(
                ErrorCode::Unauthorized,
                "an origin is not a child of a relay",
            )),
        }
    }

    async fn serve_chunk(&self, req: &mut IncomingRequest, get: GetChunk) -> Result<(), NetError> {
        let c = &self.counters;
        if send_stored_chunk(&self.store, req, get, &[]).await? {
            c.hits.fetch_add(1, Ordering::Relaxed);
            if let Some(size) = self.store.size_of(&get.id) {
                c.bytes_served
                    .fetch_add(u64::from(size.saturating_sub(get.offset)), Ordering::Relaxed);
            }
            return Ok(());
        }
        // A miss: join the fetch in flight or start one.
        let (flight, started) =
            match self
                .fetches
                .join_or_start(get.id, || self.store.has(&get.id), |f| self.spawn_fetch(f))
            {
                Joined::Flight(flight, started) => (flight, started),
                // Landed between the store check above and the table lock: serve it from the store.
                Joined::Cached => {
                    if send_stored_chunk(&self.store, req, get, &[]).await? {
                        c.hits.fetch_add(1, Ordering::Relaxed);
                        return Ok(());
                    }
                    return courseway_node::reply_error(
                        req,
                        ErrorCode::UpstreamUnavailable,
                        "chunk evicted while serving; retry",
                    )
                    .await;
                }
            };
        if started {
            c.misses.fetch_add(1, Ordering::Relaxed);
        } else {
            c.coalesced.fetch_add(1, Ordering::Relaxed);
        }
        let result = serve_from_flight(flight, req, get, self.wait_timeout, c).await;
        if result.is_err() {
            c.errors.fetch_add(1, Ordering::Relaxed);
        }
        result
    }

    async fn manifest(&self, hash: ChunkId) -> Result<Vec<u8>, ErrorReply> {
        self.fetch_manifest(hash).await
    }

    fn catalog(&self) -> Option<Arc<Signed<Catalog>>> {
        self.catalog.read().clone()
    }

    fn schedule(&self) -> Option<Arc<Signed<Schedule>>> {
        self.schedule.read().clone()
    }

    fn announcements(&self) -> broadcast::Receiver<Announcement> {
        self.announce.subscribe()
    }

    fn live_join(&self, channel: &ChannelId) -> Vec<Arc<Signed<LiveSegment>>> {
        if self.live_followed.lock().insert(channel.clone()) {
            // The receiver lives as long as the relay's tasks; after shutdown nothing follows.
            let _ = self.live_follow.send(channel.clone());
        }
        self.live.window(channel)
    }

    /// Passes a report up and acknowledges it only once the parent did (so only once the origin
    /// wrote it). The relay keeps no copy: the station's outbox holds the report until this
    /// acknowledgement, which makes the station's store the one durable queue below the origin.
    async fn report(&self, peer: &PeerIdentity, report: Report) -> Result<(), ErrorReply> {
        check_reporter(peer, &report)?;
        let (station, records) = (report.station.clone(), report.viewings.len());
        self.counters.reports_forwarded.fetch_add(1, Ordering::Relaxed);
        match send_report(&self.upstream, report).await {
            Ok(()) => {
                self.counters.reports_acknowledged.fetch_add(1, Ordering::Relaxed);
                Ok(())
            }
            Err(e) => {
                self.counters.report_failures.fetch_add(1, Ordering::Relaxed);
                tracing::debug!(%station, records, error = %e, "could not pass a report up; the child keeps it");
                Err(e.to_reply())
            }
        }
    }
}

impl RelayService {
    /// Takes a live segment from upstream: verified end to end (a refusal is counted and the
    /// segment dropped), kept in the window, announced to the children at once, then its chunks
    /// fetched (once, however many children ask: their requests join this fetch and get the
    /// bytes as they arrive) and pinned while it stays in the window.
    async fn take_live(self: &Arc<Self>, channel: &ChannelId, segment: Signed<LiveSegment>) {
        if segment.body.channel != *channel {
            tracing::warn!(channel = %channel, got = %segment.body.channel, "a parent sent a segment of a channel not asked for; dropped");
            return;
        }
        let verified = self.trust.lock().verify_live_segment(&segment, clock::now());
        if let Err(e) = verified {
            self.upstream.stats().rejections.signed(SignedKind::Live, &e);
            tracing::warn!(channel = %channel, sequence = segment.body.sequence, error = %e, "refused a live segment from upstream");
            return;
        }
        let segment = Arc::new(segment);
        let evicted = match self.live.insert(segment.clone()) {
            Inserted::New { evicted } => evicted,
            Inserted::Known | Inserted::TooOld => return,
        };
        self.live_segments.fetch_add(1, Ordering::Relaxed);
        let _ = self.announce.send(Announcement::Live(Box::new((*segment).clone())));
        let pin: Vec<ChunkId> = segment.body.chunks.iter().map(|c| c.id).collect();
        let holder = live::pin_holder(&segment.body);
        let unpin: Vec<String> = evicted.iter().map(|s| live::pin_holder(&s.body)).collect();
        let pinned = store_io(&self.store, move |s| {
            s.pin(&pin, PinReason::LiveWindow, &holder)?;
            for h in &unpin {
                s.unpin_holder(PinReason::LiveWindow, h)?;
            }
            Ok::<(), StoreError>(())
        });
        let (fetched, pinned) = tokio::join!(self.ensure_segment(&segment.body), pinned);
        if let Err(e) = pinned {
            tracing::error!(error = %e, "could not pin a live segment; it may be evicted early");
        }
        match fetched {
            Ok(()) => self.live.mark_complete(&segment.body, live::now_ms()),
            Err(e) => {
                tracing::warn!(channel = %channel, sequence = segment.body.sequence, error = %e.message, "could not fetch a live segment; children skip it")
            }
        }
    }

    async fn ensure_segment(self: &Arc<Self>, segment: &LiveSegment) -> Result<(), ErrorReply> {
        for c in &segment.chunks {
            self.ensure_chunk(c.id).await?;
        }
        Ok(())
    }
}

/// Starts one upstream subscription per live channel a child asked for.
async fn follow_live_channels(service: Arc<RelayService>, mut requests: mpsc::UnboundedReceiver<ChannelId>) {
    // Dropped (and so aborted) with this task when the relay shuts down.
    let mut following = JoinSet::new();
    while let Some(channel) = requests.recv().await {
        tracing::info!(%channel, "following a live channel upstream");
        following.spawn(follow_live(service.clone(), channel));
    }
}

/// One subscription upstream for `channel` (made again, on another parent if need be, when it
/// ends); each segment is taken in its own task so a slow fetch never holds up the next
/// announcement.
async fn follow_live(service: Arc<RelayService>, channel: ChannelId) {
    let mut attempt = 0u32;
    let mut taking = JoinSet::new();
    loop {
        let subscribe = Request::Subscribe(Subscribe {
            topics: vec![Topic::Live(channel.clone())],
        });
        let (_, first, mut recv) = match service.upstream.request(&subscribe).await {
            Ok(opened) => opened,
            Err(e) => {
                attempt += 1;
                tracing::warn!(%channel, error = %e, "no upstream live subscription; will retry");
                tokio::time::sleep(Duration::from_millis(200 << attempt.min(5))).await;
                continue;
            }
        };
        attempt = 0;
        let mut next = Some(first);
        while let Some(response) = next.take() {
            if let Response::Announce(Announcement::Live(segment)) = response {
                let (service, channel) = (service.clone(), channel.clone());
                taking.spawn(async move { service.take_live(&channel, *segment).await });
            }
            while taking.try_join_next().is_some() {}
            match read_response(&mut recv).await {
                Ok(r) => next = Some(r),
                Err(e) => tracing::info!(%channel, error = %e, "upstream live subscription ended; subscribing again"),
            }
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// What the sync loop prefetches, and how.
#[derive(Debug, Clone, Copy)]
struct Prefetch {
    policy: PrefetchPolicy,
    concurrency: usize,
    horizon: Duration,
}

/// One subscription upstream for the relay's lifetime (re-made on another parent when one
/// fails); every new verified catalog and schedule is pushed down and, by policy, prefetched.
async fn sync_loop(service: Arc<RelayService>, prefetch: Prefetch) {
    // Dropped (and so aborted) with the sync loop when the relay shuts down.
    let mut prefetching = AbortOnDrop::default();
    let mut attempt = 0u32;
    loop {
        let subscribe = Request::Subscribe(Subscribe {
            topics: vec![Topic::Catalog, Topic::Schedule],
        });
        let (index, first, mut recv) = match service.upstream.request(&subscribe).await {
            Ok(opened) => opened,
            Err(e) => {
                attempt += 1;
                tracing::warn!(error = %e, "no upstream subscription; serving the last verified catalog meanwhile");
                tokio::time::sleep(Duration::from_millis(200 << attempt.min(5))).await;
                continue;
            }
        };
        let mut next = Some(first);
        // The first catalog (and schedule) of a subscription starts a prefetch even if it is not
        // new: after a restart or a lost parent, an earlier prefetch may not have finished.
        let (mut first_catalog, mut first_schedule) = (true, true);
        let mut refused = false;
        while let Some(response) = next.take() {
            let restart = match response {
                Response::Announce(Announcement::Catalog(c)) => match service.accept_catalog(*c).await {
                    Ok(new) => (new || std::mem::take(&mut first_catalog)) && prefetch.policy != PrefetchPolicy::None,
                    Err(_) => {
                        refused = true;
                        false
                    }
                },
                Response::Announce(Announcement::Schedule(s)) => match service.accept_schedule(*s).await {
                    Ok(new) => {
                        (new || std::mem::take(&mut first_schedule)) && prefetch.policy == PrefetchPolicy::ScheduledOnly
                    }
                    Err(_) => {
                        refused = true;
                        false
                    }
                },
                _ => false,
            };
            if refused {
                // A parent that sends what the trust rules refuse (stale, expired, forged, from
                // another deployment) is left for the next one: the relay must not stay frozen
                // on it. Skipped for its retry_after; the subscription is made again elsewhere.
                service.upstream.mark_failed(index);
                break;
            }
            if restart {
                prefetching.replace(tokio::spawn(run_prefetch(service.clone(), prefetch)));
            }
            match read_response(&mut recv).await {
                Ok(r) => next = Some(r),
                Err(e) => tracing::info!(error = %e, "upstream subscription ended; subscribing again"),
            }
        }
        // Do not hammer a parent whose subscriptions end at once (nor cycle fast through parents
        // that all send what is refused).
        attempt = if refused { attempt + 1 } else { 0 };
        tokio::time::sleep(Duration::from_millis(200 << attempt.min(5))).await;
    }
}

/// Prefetches what the policy selects from the current catalog and schedule. With
/// [`PrefetchPolicy::ScheduledOnly`] it then waits until the next showing enters the horizon
/// and prefetches again (a new catalog or schedule replaces this task).
async fn run_prefetch(service: Arc<RelayService>, prefetch: Prefetch) {
    loop {
        let Some(catalog) = service.catalog.read().clone() else {
            return;
        };
        let schedule = service.schedule.read().clone();
        let now = clock::now();
        let horizon = prefetch.horizon.as_secs();
        let lessons: Vec<LessonId> = match prefetch.policy {
            PrefetchPolicy::None => return,
            PrefetchPolicy::All => catalog.body.entries().iter().map(|e| e.lesson.clone()).collect(),
            PrefetchPolicy::ScheduledOnly => {
                let mut scheduled: Vec<LessonId> = schedule
                    .iter()
                    .flat_map(|s| s.body.upcoming(now, horizon))
                    .map(|e| e.lesson.clone())
                    .collect();
                scheduled.sort();
                scheduled.dedup();
                scheduled
            }
        };
        prefetch_lessons(&service, &catalog, &lessons, prefetch.concurrency).await;
        if prefetch.policy != PrefetchPolicy::ScheduledOnly {
            return;
        }
        let Some(next) = schedule.and_then(|s| s.body.next_entering(clock::now(), horizon)) else {
            return;
        };
        tokio::time::sleep(Duration::from_secs(next.secs_since(clock::now()))).await;
    }
}

/// Fetches every chunk of `lessons` (those the catalog lists) that is not cached yet.
async fn prefetch_lessons(
    service: &Arc<RelayService>,
    catalog: &Signed<Catalog>,
    lessons: &[LessonId],
    concurrency: usize,
) {
    let mut chunks = Vec::new();
    for entry in lessons.iter().filter_map(|l| catalog.body.entry(l)) {
        let bytes = match service.fetch_manifest(entry.manifest).await {
            Ok(b) => b,
            Err(e) => {
                tracing::warn!(lesson = %entry.lesson, error = %e.message, "prefetch: no manifest");
                continue;
            }
        };
        match service.trust.lock().verify_manifest(&entry.lesson, &bytes) {
            Ok(m) => chunks.extend(m.chunk_refs().into_iter().map(|r| r.id)),
            Err(e) => tracing::warn!(lesson = %entry.lesson, error = %e, "prefetch: manifest refused"),
        }
    }
    let mut running = JoinSet::new();
    for id in chunks {
        if service.store.has(&id) {
            continue;
        }
        while running.len() >= concurrency {
            running.join_next().await;
        }
        let service = service.clone();
        running.spawn(async move {
            if let Err(e) = service.ensure_chunk(id).await {
                tracing::warn!(chunk = %id, error = %e.message, "prefetch failed; a child's request will fetch it");
            }
        });
    }
    while running.join_next().await.is_some() {}
    tracing::info!(lessons = lessons.len(), "prefetch complete");
}
