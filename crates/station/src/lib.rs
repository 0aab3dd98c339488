//! The station node's fetcher: follows the signed catalog from its parents and downloads the
//! lessons it should hold, verifying every chunk, within its rate cap.
//!
//! - One subscription upstream (re-made on another parent when one fails) delivers catalogs and
//!   schedules; each is checked by the station's [`TrustState`] (signature chain to the root it
//!   was enrolled with, expiry, rollback) and saved before it is used. The latest schedule is
//!   kept ([`Station::schedule`]) for the planner.
//! - For each published lesson the [`LessonFilter`] wants, the manifest is fetched and checked
//!   against the catalog's hash, its chunks are pinned, and the missing ones are fetched with
//!   [`courseway_node::Upstream::fetch_chunk`]: resumed from the last byte after a cut, refused
//!   and fetched elsewhere when the bytes do not match, paced by the station's rate cap.
//! - [`retention`] (pure) decides what the store holds: lessons shown here soon (or just now)
//!   are pinned and fetched first; other wanted lessons are kept while they fit in free room
//!   (never by evicting one another); lessons whose showings here are over are let go. A lesson
//!   that leaves the catalog (withdrawn), the filter or the pinned span is unpinned, so eviction
//!   can reclaim its chunks (those another pinned lesson shares stay pinned). The store's budget
//!   is the station's disk quota: it is never exceeded, and pinned chunks are never evicted.
//! - A sync pass that could not finish (parents down) is retried; a newer catalog replaces the
//!   pass in progress.
//!
//! - [`planner`] (pure) orders the downloads by the schedule: the lessons shown here soonest
//!   first, with a finish estimate for each and an at-risk flag for those that will miss their
//!   showing; [`throttle`] applies the bandwidth windows and the daily quota to the rate cap and
//!   measures goodput. Both are re-run every [`PACER_TICK`] and on every new catalog or schedule.
//!
//! - [`outbox`] keeps viewing records (synced) until the origin acknowledged them, sending them
//!   up as reports with ids that stay the same across resends; [`heartbeat`] builds the
//!   station's health and inventory, sent every `reports.heartbeat` and on every change.
//! - [`lan`] serves the village's LAN over HTTP: HLS for every ready lesson, the TV page and its
//!   JSON API, attachments, and the viewing records derived from playback and attendance
//!   ([`Station::serve_lan`]; [`Station::viewing_sink`] puts them in the outbox). The verified
//!   manifests of the retained lessons are kept in the store's `meta`
//!   (`station/manifest/<lesson>`), so a restarted station with no parent reachable still
//!   knows, and serves, what it holds.

pub mod abr;
pub mod heartbeat;
pub mod lan;
pub mod live;
pub mod outbox;
pub mod planner;
pub mod retention;
mod throttle;

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use courseway_content::schedule::Place;
use courseway_content::{
    Catalog, Category, ChannelId, ChunkId, ChunkRef, LessonId, LessonManifest, LiveSegment, NodeName, PublicKey,
    Schedule, Signed, TrustError, TrustState, UnixTime,
};
use courseway_net::{read_response, Client, Enrollment, NetError, RateLimit, Revocations, TransportConfig};
use courseway_node::live::{LiveWindow, SegmentKey, DEFAULT_LIVE_WINDOW};
use courseway_node::metrics::{self, FnCollector, MetricsCollector};
use courseway_node::{clock, persist, store_io, task::AbortOnDrop, SignedKind, Upstream, UpstreamConfig};
use courseway_proto::{Announcement, Request, Response, Subscribe, Topic};
use courseway_store::{PinReason, Store, StoreConfig, StoreError};
use parking_lot::Mutex;

pub use crate::outbox::{Outbox, OutboxError, ReportsConfig};
use crate::planner::{next_showings, plan, BandwidthPolicy, LessonNeed, Plan, PlanContext};
use crate::retention::{classify, Retention, RetentionPolicy};
use crate::throttle::Throttle;
use tokio::sync::watch;
use tokio::task::JoinSet;

/// Which published lessons a station holds.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LessonFilter {
    /// Only these categories (empty: every category).
    pub categories: Vec<Category>,
    /// Only lessons with at least one of these tags (empty: any tags).
    pub tags: Vec<String>,
}

impl LessonFilter {
    /// Whether the station should hold `manifest`.
    pub fn wants(&self, manifest: &LessonManifest) -> bool {
        (self.categories.is_empty() || self.categories.contains(&manifest.category))
            && (self.tags.is_empty() || manifest.tags.iter().any(|t| self.tags.contains(t)))
    }
}

/// How a station runs.
#[derive(Debug, Clone)]
pub struct StationConfig {
    pub name: NodeName,
    /// Local UDP address for the connections to parents (port 0: any).
    pub bind: SocketAddr,
    pub store: StoreConfig,
    pub transport: TransportConfig,
    pub upstream: UpstreamConfig,
    pub filter: LessonFilter,
    /// Download cap, shared by all of the station's transfers.
    pub rate_cap: Option<RateLimit>,
    /// Chunks fetched at once.
    pub concurrency: usize,
    /// Wait before retrying a sync pass that could not finish.
    pub retry_after: Duration,
    /// Where the station sits, for matching schedule targets (its name is filled in from the
    /// config's `name`).
    pub place: Place,
    /// Bandwidth windows and daily quota; shares apply to `rate_cap` (the line's rate).
    pub bandwidth: BandwidthPolicy,
    /// A lesson must be ready this long before its showing, or it is at risk.
    pub ready_margin: Duration,
    /// Which lessons are pinned, kept while they fit, or let go.
    pub retention: RetentionPolicy,
    /// Viewing reports and heartbeats.
    pub reports: ReportsConfig,
    /// Live channels followed (each served at `/live/<channel>/<rendition>.m3u8` on the LAN).
    pub live_channels: Vec<ChannelId>,
    /// Live segments kept (pinned) per channel and rendition: the sliding window of the live
    /// playlist.
    pub live_window: usize,
    /// How live segments are fetched: the rendition choice, the live edge, retries.
    pub live_fetch: live::LiveFetchConfig,
}

impl StationConfig {
    /// A station holding every lesson, with no rate cap.
    pub fn new(name: NodeName, bind: SocketAddr, store: StoreConfig, upstream: UpstreamConfig) -> Self {
        Self {
            name,
            bind,
            store,
            transport: TransportConfig::default(),
            upstream,
            filter: LessonFilter::default(),
            rate_cap: None,
            concurrency: 2,
            retry_after: Duration::from_secs(5),
            place: Place::default(),
            bandwidth: BandwidthPolicy::default(),
            ready_margin: Duration::from_secs(30 * 60),
            retention: RetentionPolicy::default(),
            reports: ReportsConfig::default(),
            live_channels: Vec::new(),
            live_window: DEFAULT_LIVE_WINDOW,
            live_fetch: live::LiveFetchConfig::default(),
        }
    }
}

/// What a config reload changes in a running station (`courseway station` re-reads its config
/// file on SIGHUP); everything else in [`StationConfig`] needs a restart.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StationTunables {
    pub filter: LessonFilter,
    pub bandwidth: BandwidthPolicy,
    pub ready_margin: Duration,
    pub retention: RetentionPolicy,
}

/// What went wrong starting a station.
#[derive(Debug, thiserror::Error)]
pub enum StationError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Net(#[from] NetError),
    #[error(transparent)]
    Persist(#[from] persist::PersistError),
}

/// Where a station's sync stands.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SyncStatus {
    /// Version of the accepted catalog (0: none yet).
    pub catalog_version: u64,
    /// Version of the accepted schedule (0: none yet).
    pub schedule_version: u64,
    pub lessons_wanted: u32,
    pub lessons_ready: u32,
    pub bytes_wanted: u64,
    pub bytes_ready: u64,
    /// Chunks refused because their bytes did not match their id.
    pub bad_chunks: u64,
    /// Every lesson the retention policy holds is held: the pinned ones, and the kept ones that
    /// fit in the free room (see `lessons_without_room`).
    pub synced: bool,
    /// Wanted lessons with a showing here still ahead.
    pub lessons_due: u32,
    /// Lessons that will not be ready by their showing minus the margin.
    pub lessons_at_risk: u32,
    /// Measured goodput at a full share of the line, bytes per second (None until measured).
    pub goodput: Option<u64>,
    /// When every wanted lesson was last held (None: not since the station started).
    pub last_synced_at: Option<UnixTime>,
    /// The store's disk is full: no download starts until a probe write succeeds again.
    pub disk_full: bool,
    /// Lessons pinned by the retention policy (shown here soon or just now).
    pub lessons_pinned: u32,
    /// Wanted lessons not downloaded because they do not fit in the store's free room (only
    /// unpinned lessons wait for room; pinned ones evict them).
    pub lessons_without_room: u32,
    /// Lessons whose showings here are over (let go, not downloaded again).
    pub lessons_expired: u32,
}

/// How often the throttle and the plan are brought up to date.
pub const PACER_TICK: Duration = Duration::from_secs(5);

/// While the store's disk is full, how often a small write checks whether there is room again.
pub const DISK_PROBE: Duration = Duration::from_secs(1);

/// The `meta` key of that probe write.
const DISK_PROBE_KEY: &[u8] = b"station/disk-probe";

struct State {
    name: NodeName,
    store: Arc<Store>,
    upstream: Upstream,
    trust: Mutex<TrustState>,
    /// The revocation list of the newest verified catalog: a revoked parent is refused at the
    /// handshake and its connection closed.
    revocations: Revocations,
    status: watch::Sender<SyncStatus>,
    throttle: Throttle,
    place: Place,
    /// These three (and the throttle's policy) change on a config reload ([`Station::retune`]).
    ready_margin: Mutex<Duration>,
    retention: Mutex<RetentionPolicy>,
    /// The retention of every wanted lesson as the current sync pass classified it; the pacer
    /// classifies again each tick and starts a new pass when it changed.
    retained: Mutex<std::collections::BTreeMap<LessonId, Retention>>,
    /// Asks `follow` for a new sync pass (the retention changed with the clock).
    resync: tokio::sync::Notify,
    /// Bytes removed because no retained lesson used them.
    removed_bytes: std::sync::atomic::AtomicU64,
    /// The wanted lessons of the current sync pass, in catalog order.
    wanted: Mutex<Vec<(LessonId, Vec<ChunkRef>)>>,
    /// Their verified manifests, in catalog order (what the LAN server offers).
    manifests: Mutex<Arc<Vec<Arc<LessonManifest>>>>,
    plan: Mutex<Option<Arc<Plan>>>,
    filter: Mutex<LessonFilter>,
    concurrency: usize,
    retry_after: Duration,
    /// Store writes that failed because the disk was full.
    disk_full_writes: std::sync::atomic::AtomicU64,
    outbox: Arc<Outbox>,
    reports: ReportsConfig,
    /// Heartbeats acknowledged / not delivered.
    heartbeats_sent: std::sync::atomic::AtomicU64,
    heartbeat_failures: std::sync::atomic::AtomicU64,
    /// The live channels followed and their windows of recent segments.
    live_channels: Vec<ChannelId>,
    live: Arc<LiveWindow>,
    live_fetch: live::LiveFetchConfig,
    /// The rendition fetched per live channel.
    live_following: live::Following,
}

/// A running station.
pub struct Station {
    state: Arc<State>,
    client: Client,
    tasks: JoinSet<()>,
}

impl std::fmt::Debug for Station {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Station")
            .field("name", &self.state.name)
            .finish_non_exhaustive()
    }
}

impl Station {
    /// Opens the store, restores the accepted catalog, and starts following the parents.
    pub async fn start(config: StationConfig, enrollment: Enrollment, root: PublicKey) -> Result<Self, StationError> {
        let store = Arc::new(Store::open(config.store)?);
        let trust = persist::load_trust(&store, root)?;
        // On a line of known rate, the parent may have only about a second of it in flight
        // toward us: it can neither overrun the village line's queue nor burst far ahead of the
        // cap's pacing of our reads.
        let transport = match config.rate_cap {
            Some(cap) => config.transport.for_line(cap.bytes_per_sec()),
            None => config.transport.clone(),
        };
        let revocations = enrollment.revocations().clone();
        if let Some(c) = trust.catalog() {
            revocations.replace(c.body.revoked());
        }
        let client = Client::bind(enrollment, &transport, config.bind)?;
        let status = watch::Sender::new(SyncStatus {
            catalog_version: trust.catalog().map(|c| c.body.version).unwrap_or(0),
            schedule_version: trust.schedule().map(|s| s.body.version).unwrap_or(0),
            ..SyncStatus::default()
        });
        let throttle_store = store.clone();
        let outbox = Arc::new(Outbox::open(config.name.clone(), store.clone(), config.reports.batch)?);
        let state = Arc::new(State {
            name: config.name.clone(),
            store,
            upstream: Upstream::new(client.clone(), config.upstream),
            trust: Mutex::new(trust),
            revocations,
            status,
            throttle: Throttle::new(config.bandwidth, config.rate_cap, throttle_store),
            place: Place {
                station: Some(config.name.clone()),
                ..config.place
            },
            ready_margin: Mutex::new(config.ready_margin),
            retention: Mutex::new(config.retention),
            retained: Mutex::new(Default::default()),
            resync: tokio::sync::Notify::new(),
            removed_bytes: std::sync::atomic::AtomicU64::new(0),
            wanted: Mutex::new(Vec::new()),
            manifests: Mutex::new(Arc::new(Vec::new())),
            plan: Mutex::new(None),
            filter: Mutex::new(config.filter),
            concurrency: config.concurrency.max(1),
            retry_after: config.retry_after,
            disk_full_writes: std::sync::atomic::AtomicU64::new(0),
            outbox,
            reports: config.reports,
            heartbeats_sent: std::sync::atomic::AtomicU64::new(0),
            heartbeat_failures: std::sync::atomic::AtomicU64::new(0),
            live_channels: config.live_channels.clone(),
            live: Arc::new(LiveWindow::new(config.live_window)),
            live_fetch: config.live_fetch.clone(),
            live_following: live::Following::default(),
        });
        // The window and quota in force from the first chunk on.
        state.throttle.tick(clock::now(), 0, false);
        let mut tasks = JoinSet::new();
        tasks.spawn(follow(state.clone()));
        tasks.spawn(pace(state.clone()));
        {
            let state = state.clone();
            tasks.spawn(async move {
                outbox::run_sender(state.outbox.clone(), &state.upstream, state.reports.retry_after).await
            });
        }
        tasks.spawn(heartbeats(state.clone()));
        for channel in config.live_channels {
            tasks.spawn(live::follow(state.clone(), channel));
        }
        Ok(Self { state, client, tasks })
    }

    /// Puts new tunables in force: the throttle follows the new bandwidth policy from its next
    /// tick, and a new sync pass applies the filter and the retention policy.
    pub fn retune(&self, t: StationTunables) {
        self.state.throttle.set_policy(t.bandwidth);
        *self.state.ready_margin.lock() = t.ready_margin;
        *self.state.retention.lock() = t.retention;
        *self.state.filter.lock() = t.filter;
        tracing::info!(station = %self.state.name, "new settings in force; syncing again");
        self.state.resync.notify_one();
    }

    /// The tunables in force.
    pub fn tunables(&self) -> StationTunables {
        StationTunables {
            filter: self.state.filter.lock().clone(),
            bandwidth: self.state.throttle.policy(),
            ready_margin: *self.state.ready_margin.lock(),
            retention: *self.state.retention.lock(),
        }
    }

    /// The station's name.
    pub fn name(&self) -> &NodeName {
        &self.state.name
    }

    /// Watches the sync status.
    pub fn status(&self) -> watch::Receiver<SyncStatus> {
        self.state.status.subscribe()
    }

    /// The latest verified schedule (restored from the store after a restart).
    pub fn schedule(&self) -> Option<Signed<Schedule>> {
        self.state.trust.lock().schedule().cloned()
    }

    /// The current download plan: lessons in download order with finish estimates and at-risk
    /// flags (None before the first sync pass has listed the wanted lessons).
    pub fn plan(&self) -> Option<Arc<Plan>> {
        self.state.plan.lock().clone()
    }

    /// Keeps a viewing record until the origin has it: returns once it is written (synced) to
    /// the station's store. The LAN server's sink calls this.
    pub async fn record_viewing(&self, viewing: courseway_proto::Viewing) -> Result<(), OutboxError> {
        self.state.outbox.record_async(viewing).await
    }

    /// A viewing sink for [`Station::serve_lan`] that keeps every record in this station's
    /// outbox, from where it goes up as a report. The write is synced before the sink returns
    /// (so an attendance form is answered only once it is kept), off the async workers'
    /// duty (`block_in_place`); a record that cannot be written is logged as an error.
    pub fn viewing_sink(&self) -> lan::ViewingSink {
        let (outbox, name) = (self.state.outbox.clone(), self.state.name.clone());
        Arc::new(move |viewing| {
            // A synced write: on a multi-threaded runtime the worker hands its other tasks
            // over while it waits for the disk (the QUIC sync and the LAN keep going).
            let record = || outbox.record(viewing);
            let written = match tokio::runtime::Handle::try_current() {
                Ok(h) if h.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread => {
                    tokio::task::block_in_place(record)
                }
                _ => record(),
            };
            if let Err(e) = written {
                tracing::error!(station = %name, error = %e, "a viewing record could not be kept in the outbox; it is lost");
            }
        })
    }

    /// The report outbox (a handle the LAN server can keep).
    pub fn outbox(&self) -> Arc<Outbox> {
        self.state.outbox.clone()
    }

    /// The station's health and inventory now, as its next heartbeat would say it.
    pub fn health(&self) -> courseway_proto::Health {
        current_health(&self.state)
    }

    /// The station's store (for inspection, and for the LAN server's reads).
    pub fn store(&self) -> &Arc<Store> {
        &self.state.store
    }

    /// The verified manifests of the lessons this station holds or is fetching, in catalog
    /// order (empty until the first sync pass has read them).
    pub fn lessons(&self) -> Arc<Vec<Arc<LessonManifest>>> {
        self.state.manifests.lock().clone()
    }

    /// When each segment of live `channel` was held whole here (ms since the epoch).
    pub fn live_completions(&self, channel: &ChannelId) -> std::collections::BTreeMap<SegmentKey, u64> {
        self.state.live.completions(channel)
    }

    /// The rendition this station fetches for live `channel` (`None` before its first segment).
    pub fn live_choice(&self, channel: &ChannelId) -> Option<live::LiveChoice> {
        self.state.live_following.choice(channel)
    }

    /// The segments of live `channel` in this station's window, oldest first.
    pub fn live_window(&self, channel: &ChannelId) -> Vec<Arc<Signed<LiveSegment>>> {
        self.state.live.window(channel)
    }

    /// Starts the LAN server (HLS, the TV page, its JSON API, viewing capture); it runs until
    /// the returned [`lan::LanServer`] is dropped or shut down, independently of the station's
    /// sync.
    pub async fn serve_lan(
        &self,
        config: lan::LanConfig,
    ) -> Result<lan::LanServer, courseway_node::http::HttpBindError> {
        lan::LanServer::start(self.state.clone(), config).await
    }

    /// What fetching has cost: bytes received (including any thrown away), bad chunks
    /// refused, transfers resumed from an offset, parent switches.
    pub fn fetch_stats(&self) -> &courseway_node::FetchStats {
        self.state.upstream.stats()
    }

    /// The station's Prometheus metrics, read at scrape time.
    pub fn metrics(&self) -> Box<dyn MetricsCollector> {
        Box::new(FnCollector::new(self.state.clone(), |st, s| {
            let status = st.status.borrow().clone();
            s.gauge(
                "station_lessons_wanted",
                "Lessons of the accepted catalog this station should hold",
                i64::from(status.lessons_wanted),
            )?;
            s.gauge(
                "station_lessons_ready",
                "Lessons held complete and verified",
                i64::from(status.lessons_ready),
            )?;
            s.gauge(
                "station_wanted_bytes",
                "Bytes of the lessons this station should hold",
                i64::try_from(status.bytes_wanted).unwrap_or(i64::MAX),
            )?;
            s.gauge(
                "station_ready_bytes",
                "Bytes of those lessons held",
                i64::try_from(status.bytes_ready).unwrap_or(i64::MAX),
            )?;
            s.gauge(
                "station_synced",
                "1 when every wanted lesson of the accepted catalog is held",
                i64::from(status.synced),
            )?;
            s.gauge(
                "station_lessons_due",
                "Wanted lessons with a showing here still ahead",
                i64::from(status.lessons_due),
            )?;
            s.gauge(
                "station_lessons_at_risk",
                "Lessons that will not be ready by their showing minus the margin",
                i64::from(status.lessons_at_risk),
            )?;
            s.gauge(
                "station_goodput_bytes_per_second",
                "Measured download goodput at a full share of the line (0 until measured)",
                status.goodput.map_or(0, |g| i64::try_from(g).unwrap_or(i64::MAX)),
            )?;
            s.gauge(
                "station_last_synced_timestamp_seconds",
                "When every wanted lesson was last held, Unix time (0: not since start)",
                status
                    .last_synced_at
                    .map_or(0, |t| i64::try_from(t.0).unwrap_or(i64::MAX)),
            )?;
            s.gauge(
                "station_disk_full",
                "1 while the store's disk is full (downloads stop; what is held is still served)",
                i64::from(status.disk_full),
            )?;
            s.counter(
                "station_disk_full_writes",
                "Store writes that failed because the disk was full",
                st.disk_full_writes.load(Ordering::Relaxed),
            )?;
            s.gauge(
                "station_lessons_pinned",
                "Lessons pinned by the retention policy (shown here soon or just now; never evicted)",
                i64::from(status.lessons_pinned),
            )?;
            s.gauge(
                "station_lessons_without_room",
                "Unscheduled lessons not downloaded because the store has no free room for them",
                i64::from(status.lessons_without_room),
            )?;
            s.gauge(
                "station_lessons_expired",
                "Lessons whose showings here are over (let go by the retention policy)",
                i64::from(status.lessons_expired),
            )?;
            s.counter(
                "station_retention_removed_bytes",
                "Bytes removed from the store because no retained lesson uses them",
                st.removed_bytes.load(Ordering::Relaxed),
            )?;
            s.gauge(
                "station_downloads_allowed",
                "1 when the bandwidth window and the daily quota allow downloads now",
                i64::from(st.throttle.is_open()),
            )?;
            s.gauge(
                "station_downloaded_today_bytes",
                "Bytes downloaded since local midnight (counted against the daily quota)",
                i64::try_from(st.throttle.used_today()).unwrap_or(i64::MAX),
            )?;
            let o = st.outbox.stats();
            s.gauge(
                "station_outbox_records",
                "Viewing records kept until the origin acknowledges them",
                i64::try_from(o.depth.load(Ordering::Relaxed)).unwrap_or(i64::MAX),
            )?;
            s.counter(
                "station_reports_sent",
                "Viewing reports sent upstream (first sends and resends)",
                o.reports_sent.load(Ordering::Relaxed),
            )?;
            s.counter(
                "station_reports_acknowledged",
                "Viewing reports acknowledged after the origin's durable write",
                o.reports_acknowledged.load(Ordering::Relaxed),
            )?;
            s.counter(
                "station_report_records_acknowledged",
                "Viewing records acknowledged after the origin's durable write",
                o.records_acknowledged.load(Ordering::Relaxed),
            )?;
            s.counter(
                "station_heartbeats_sent",
                "Heartbeats (health and inventory) acknowledged by the parents",
                st.heartbeats_sent.load(Ordering::Relaxed),
            )?;
            s.counter(
                "station_heartbeat_failures",
                "Heartbeats that could not be delivered",
                st.heartbeat_failures.load(Ordering::Relaxed),
            )?;
            let choices = st.live_following.all();
            let label = |c: &ChannelId, l: &live::LiveChoice| {
                vec![("channel", c.as_str().to_owned()), ("rendition", l.rendition.clone())]
            };
            let channel = |c: &ChannelId| vec![("channel", c.as_str().to_owned())];
            s.gauges(
                "station_live_rendition",
                "Rung of the live rendition fetched per channel (0 = the best; the rendition label names it)",
                &choices
                    .iter()
                    .map(|(c, l)| (label(c, l), l.rung as i64))
                    .collect::<Vec<_>>(),
            )?;
            s.counters(
                "station_live_switches",
                "Live rendition switches (steps down and up) per channel",
                &choices
                    .iter()
                    .map(|(c, l)| (channel(c), l.switches))
                    .collect::<Vec<_>>(),
            )?;
            s.counters(
                "station_live_segments_lost",
                "Live segments not fetched after a retry (gaps in the LAN playlist)",
                &choices.iter().map(|(c, l)| (channel(c), l.lost)).collect::<Vec<_>>(),
            )?;
            s.counters(
                "station_live_segments_skipped",
                "Live segments skipped to stay at the live edge (after an outage or a slow line)",
                &choices.iter().map(|(c, l)| (channel(c), l.skipped)).collect::<Vec<_>>(),
            )?;
            metrics::scrape_catalog(s, st.trust.lock().catalog(), clock::now())?;
            metrics::scrape_store(s, &st.store.stats())?;
            metrics::scrape_upstream(s, st.upstream.stats())
        }))
    }

    /// Stops syncing and closes the connections.
    pub async fn shutdown(mut self) {
        self.tasks.abort_all();
        while self.tasks.join_next().await.is_some() {}
        self.client.shutdown().await;
    }
}

/// Follows the parents' catalog and schedule announcements; each new catalog starts a sync pass.
async fn follow(state: Arc<State>) {
    // Dropped (and so aborted) with `follow` when the station shuts down.
    let mut pass = AbortOnDrop::default();
    let restored = state.trust.lock().catalog().cloned();
    if let Some(c) = restored {
        pass.replace(tokio::spawn(sync(state.clone(), c)));
    }
    let mut attempt = 0u32;
    loop {
        let subscribe = Request::Subscribe(Subscribe {
            topics: vec![Topic::Catalog, Topic::Schedule],
        });
        let (index, first, mut recv) = match state.upstream.request(&subscribe).await {
            Ok(opened) => opened,
            Err(e) => {
                attempt += 1;
                tracing::warn!(station = %state.name, error = %e, "cannot reach a parent; will retry");
                tokio::time::sleep(Duration::from_millis(200 << attempt.min(5))).await;
                continue;
            }
        };
        let mut next = Some(first);
        let mut refused = false;
        while let Some(response) = next.take() {
            if let Response::Announce(Announcement::Schedule(sched)) = &response {
                // A new schedule changes the download order: start the pass again.
                let current = state.trust.lock().catalog().cloned();
                match accept_schedule(&state, sched).await {
                    Ok(true) => {
                        if let Some(catalog) = current {
                            pass.replace(tokio::spawn(sync(state.clone(), catalog)));
                        }
                    }
                    Ok(false) => {}
                    Err(_) => refused = true,
                }
            }
            if let Response::Announce(Announcement::Catalog(c)) = response {
                let accepted = state.trust.lock().accept_catalog((*c).clone(), clock::now());
                match accepted {
                    Ok(courseway_content::Acceptance::New) => {
                        state.revocations.replace(c.body.revoked());
                        if c.body.is_revoked(&state.name) {
                            tracing::error!(
                                node = %state.name,
                                "the catalog revokes this station; its parents will refuse it (enrol it again under a new name)"
                            );
                        }
                        let saved = (*c).clone();
                        let save = move |s: &Store| persist::save_catalog(s, &saved);
                        if let Err(e) = store_io(&state.store, save).await {
                            tracing::error!(error = %e, "could not save the accepted catalog");
                        }
                        state.status.send_modify(|s| {
                            s.catalog_version = c.body.version;
                            s.synced = false;
                        });
                        pass.replace(tokio::spawn(sync(state.clone(), *c)));
                    }
                    Ok(courseway_content::Acceptance::Unchanged) => {}
                    Err(e) => {
                        state.upstream.stats().rejections.signed(SignedKind::Catalog, &e);
                        tracing::warn!(station = %state.name, parent = %state.upstream.parents()[index].name, error = %e, "refused a catalog");
                        refused = true;
                    }
                }
            }
            if refused {
                // A parent that sends what the trust rules refuse (stale, expired, forged, from
                // another deployment) is left for the next one, so it cannot freeze the station
                // on old content; it is skipped for its retry_after.
                state.upstream.mark_failed(index);
                break;
            }
            let read = tokio::select! {
                read = read_response(&mut recv) => read,
                () = state.resync.notified() => {
                    // A showing entered the pinned span, or a lesson's showings are over.
                    let current = state.trust.lock().catalog().cloned();
                    if let Some(catalog) = current {
                        pass.replace(tokio::spawn(sync(state.clone(), catalog)));
                    }
                    read_response(&mut recv).await
                }
            };
            match read {
                Ok(r) => next = Some(r),
                Err(e) => tracing::debug!(station = %state.name, error = %e, "subscription ended; subscribing again"),
            }
        }
        // Do not hammer a parent whose subscriptions end at once (nor cycle fast through parents
        // that all send what is refused).
        attempt = if refused { attempt + 1 } else { 0 };
        tokio::time::sleep(Duration::from_millis(200 << attempt.min(5))).await;
    }
}

/// Checks a schedule from upstream and, if it is newer, saves and keeps it. Whether it was
/// new; an error when it was refused (counted and logged).
async fn accept_schedule(state: &State, schedule: &Signed<Schedule>) -> Result<bool, TrustError> {
    let accepted = state.trust.lock().accept_schedule(schedule.clone(), clock::now());
    match accepted {
        Ok(courseway_content::Acceptance::New) => {
            let saved = schedule.clone();
            if let Err(e) = store_io(&state.store, move |s| persist::save_schedule(s, &saved)).await {
                tracing::error!(error = %e, "could not save the accepted schedule");
            }
            state.status.send_modify(|s| s.schedule_version = schedule.body.version);
            tracing::info!(station = %state.name, version = schedule.body.version, "accepted a new schedule");
            Ok(true)
        }
        Ok(courseway_content::Acceptance::Unchanged) => Ok(false),
        Err(e) => {
            state.upstream.stats().rejections.signed(SignedKind::Schedule, &e);
            tracing::warn!(station = %state.name, error = %e, "refused a schedule");
            Err(e)
        }
    }
}

/// Brings the store in line with `catalog`, retrying until every wanted lesson is held.
async fn sync(state: Arc<State>, catalog: Signed<Catalog>) {
    loop {
        match sync_pass(&state, &catalog).await {
            Ok(()) => {
                state.status.send_modify(|s| {
                    s.synced = true;
                    s.last_synced_at = Some(clock::now());
                });
                tracing::info!(station = %state.name, version = catalog.body.version, "synced");
                return;
            }
            Err(e) => {
                tracing::warn!(station = %state.name, error = %e, "sync pass incomplete; retrying");
                tokio::time::sleep(state.retry_after).await;
            }
        }
    }
}

/// Notes a failed store write: a full disk stops the downloads (see [`wait_for_room`]).
fn store_failed(state: &State, e: &StoreError) {
    if !e.is_disk_full() {
        return;
    }
    state.disk_full_writes.fetch_add(1, Ordering::Relaxed);
    let newly_full = state
        .status
        .send_if_modified(|s| !std::mem::replace(&mut s.disk_full, true));
    if newly_full {
        tracing::error!(station = %state.name, path = %state.store.path().display(), error = %e, "the store's disk is full: downloads stop until there is room");
    }
}

/// While the store's disk is full, no download starts (its bytes could not be kept): a small
/// write probes the store every [`DISK_PROBE`] (RocksDB resumes writes by itself once there is
/// room); returns when one succeeds.
async fn wait_for_room(state: &State) {
    while state.status.borrow().disk_full {
        tokio::time::sleep(DISK_PROBE).await;
        let probe = store_io(&state.store, |s| {
            s.put_meta(DISK_PROBE_KEY, b"", courseway_store::Durability::Buffered)
        })
        .await;
        match probe {
            Ok(()) => {
                state.status.send_modify(|s| s.disk_full = false);
                tracing::info!(station = %state.name, "the store's disk has room again; downloads resume");
            }
            Err(e) if e.is_disk_full() => {}
            Err(e) => tracing::warn!(station = %state.name, error = %e, "the store cannot be written"),
        }
    }
}

async fn sync_pass(state: &Arc<State>, catalog: &Signed<Catalog>) -> Result<(), String> {
    wait_for_room(state).await;
    let mut lessons: Vec<(LessonId, Vec<ChunkRef>)> = Vec::new();
    let mut manifests = Vec::new();
    for entry in catalog.body.entries() {
        let manifest = wanted_manifest(state, &entry.lesson, entry.manifest).await?;
        if state.filter.lock().wants(&manifest) {
            lessons.push((manifest.id.clone(), manifest.chunk_refs()));
            manifests.push(Arc::new(manifest));
        }
    }
    let now = clock::now();
    let retention = {
        let trust = state.trust.lock();
        let ids = lessons.iter().map(|(id, _)| id);
        let policy = *state.retention.lock();
        classify(ids, trust.schedule().map(|s| &s.body), &state.place, now, &policy)
    };
    let kept = |id: &LessonId| retention.get(id).copied().unwrap_or(Retention::Kept);
    let expired = lessons.iter().filter(|(id, _)| kept(id) == Retention::Expired).count() as u32;
    lessons.retain(|(id, _)| kept(id) != Retention::Expired);
    manifests.retain(|m| kept(&m.id) != Retention::Expired);
    // The kept manifests follow the retained lessons: an expired, withdrawn or filtered-out
    // lesson's manifest goes with its chunks.
    keep_only_manifests(state, lessons.iter().map(|(id, _)| id.clone()).collect()).await;
    let pinned: Vec<LessonId> = lessons
        .iter()
        .filter(|(id, _)| kept(id) == Retention::Pinned)
        .map(|(id, _)| id.clone())
        .collect();
    let (keep, name) = (pinned.clone(), state.name.clone());
    store_io(&state.store, move |s| unpin_unwanted(s, &name, &keep))
        .await
        .map_err(|e| e.to_string())?;
    *state.retained.lock() = retention.clone();
    // What no retained lesson uses (withdrawn, filtered out, expired) is let go now, so the
    // room it took is free room for the lessons the station keeps.
    let retained: std::collections::HashSet<ChunkId> =
        lessons.iter().flat_map(|(_, refs)| refs.iter().map(|c| c.id)).collect();
    let removed = store_io(&state.store, move |s| remove_unretained(s, &retained))
        .await
        .map_err(|e| {
            store_failed(state, &e);
            e.to_string()
        })?;
    if removed > 0 {
        state.removed_bytes.fetch_add(removed, Ordering::Relaxed);
        tracing::info!(station = %state.name, bytes = removed, "removed the chunks of lessons no longer held");
    }
    state.status.send_modify(|s| {
        s.lessons_pinned = pinned.len() as u32;
        s.lessons_expired = expired;
        s.lessons_without_room = 0;
    });
    *state.wanted.lock() = lessons.clone();
    *state.manifests.lock() = Arc::new(manifests);
    // Download in the plan's order: the lesson shown here soonest first.
    let planned = replan(state);
    let position = |id: &LessonId| planned.lessons.iter().position(|l| &l.lesson == id);
    lessons.sort_by_key(|(id, _)| position(id));
    let bytes_wanted: u64 = lessons
        .iter()
        .flat_map(|(_, c)| c.iter())
        .map(|c| u64::from(c.size))
        .sum();
    let ready_now = |refs: &[ChunkRef]| refs.iter().all(|c| state.store.has(&c.id));
    let update = |state: &State| {
        let ready = lessons.iter().filter(|(_, refs)| ready_now(refs)).count() as u32;
        let bytes_ready: u64 = lessons
            .iter()
            .flat_map(|(_, c)| c.iter())
            .filter(|c| state.store.has(&c.id))
            .map(|c| u64::from(c.size))
            .sum();
        let bad = state.upstream.stats().bad_chunks.load(Ordering::Relaxed);
        state.status.send_modify(|s| {
            s.lessons_wanted = lessons.len() as u32;
            s.lessons_ready = ready;
            s.bytes_wanted = bytes_wanted;
            s.bytes_ready = bytes_ready;
            s.bad_chunks = bad;
        });
    };
    update(state);
    for (lesson, refs) in &lessons {
        if kept(lesson) == Retention::Pinned {
            let ids: Vec<_> = refs.iter().map(|c| c.id).collect();
            let holder = lesson.clone();
            store_io(&state.store, move |s| {
                s.pin(&ids, PinReason::Scheduled, holder.as_str())
            })
            .await
            .map_err(|e| {
                store_failed(state, &e);
                e.to_string()
            })?;
        } else {
            // Kept, not pinned: fetched only into free room left after what the pinned lessons
            // still need, so kept lessons never evict one another nor take a pinned lesson's room.
            let missing = missing_bytes(state, std::iter::once(refs));
            let pinned_missing = missing_bytes(
                state,
                lessons
                    .iter()
                    .filter(|(id, _)| kept(id) == Retention::Pinned)
                    .map(|(_, refs)| refs),
            );
            let stats = state.store.stats();
            let free = stats
                .budget_bytes
                .saturating_sub(stats.used_bytes)
                .saturating_sub(pinned_missing);
            if missing > free {
                tracing::info!(station = %state.name, %lesson, missing, free, "not downloading an unscheduled lesson: it does not fit in the store's free room");
                state.status.send_modify(|s| s.lessons_without_room += 1);
                continue;
            }
        }
        let mut running = JoinSet::new();
        let mut failure = None;
        for chunk in refs.iter().copied().filter(|c| !state.store.has(&c.id)) {
            // Outside the bandwidth windows, or the day's quota spent: wait. A full disk: wait.
            state.throttle.wait_open().await;
            wait_for_room(state).await;
            while running.len() >= state.concurrency {
                if let Some(Ok(Err(e))) = running.join_next().await {
                    failure = Some(e);
                }
            }
            let state = state.clone();
            running.spawn(async move {
                let bytes = state
                    .upstream
                    .fetch_chunk(chunk, state.throttle.limiter())
                    .await
                    .map_err(|e| e.to_string())?;
                store_io(&state.store, move |s| s.put(chunk.id, &bytes))
                    .await
                    .map_err(|e| {
                        store_failed(&state, &e);
                        e.to_string()
                    })?;
                state.status.send_modify(|s| s.bytes_ready += u64::from(chunk.size));
                Ok::<(), String>(())
            });
        }
        while let Some(done) = running.join_next().await {
            if let Ok(Err(e)) = done {
                failure = Some(e);
            }
        }
        update(state);
        replan(state);
        if let Some(e) = failure {
            return Err(format!("lesson {lesson}: {e}"));
        }
    }
    Ok(())
}

/// The meta key under which a wanted lesson's verified manifest is kept.
fn manifest_key(lesson: &LessonId) -> Vec<u8> {
    format!("station/manifest/{lesson}").into_bytes()
}

/// The manifest of catalog entry `lesson`: the copy kept in the store if it still matches the
/// catalog, else fetched from a parent (checked against the catalog, then kept).
async fn wanted_manifest(
    state: &Arc<State>,
    lesson: &LessonId,
    hash: courseway_content::ChunkId,
) -> Result<LessonManifest, String> {
    let key = manifest_key(lesson);
    let kept = store_io(&state.store, move |s| s.get_meta(&key)).await;
    if let Ok(Some(bytes)) = kept {
        if let Ok(m) = state.trust.lock().verify_manifest(lesson, &bytes) {
            return Ok(m);
        }
    }
    let bytes = state.upstream.fetch_manifest(hash).await.map_err(|e| e.to_string())?;
    let manifest = state
        .trust
        .lock()
        .verify_manifest(lesson, &bytes)
        .map_err(|e| e.to_string())?;
    let key = manifest_key(lesson);
    let saved = store_io(&state.store, move |s| {
        s.put_meta(&key, &bytes, courseway_store::Durability::Buffered)
    })
    .await;
    if let Err(e) = saved {
        store_failed(state, &e);
        tracing::warn!(station = %state.name, %lesson, error = %e, "could not keep the lesson's manifest");
    }
    Ok(manifest)
}

/// The meta key listing the lessons whose manifests are kept (one id per line).
const KEPT_MANIFESTS_KEY: &[u8] = b"station/manifests";

/// Drops the kept manifests of the lessons no longer wanted (withdrawn, or outside the
/// filter), whatever their pins, and records which are kept.
async fn keep_only_manifests(state: &Arc<State>, wanted: Vec<LessonId>) {
    let kept = store_io(&state.store, move |s| {
        let listed = s.get_meta(KEPT_MANIFESTS_KEY)?.unwrap_or_default();
        for old in String::from_utf8_lossy(&listed).lines() {
            if let Ok(old) = LessonId::new(old) {
                if !wanted.contains(&old) {
                    s.delete_meta(&manifest_key(&old), courseway_store::Durability::Buffered)?;
                }
            }
        }
        let list = wanted.iter().map(LessonId::as_str).collect::<Vec<_>>().join("\n");
        if list.as_bytes() == listed.as_slice() {
            return Ok(());
        }
        s.put_meta(
            KEPT_MANIFESTS_KEY,
            list.as_bytes(),
            courseway_store::Durability::Buffered,
        )
    })
    .await;
    if let Err(e) = kept {
        tracing::warn!(station = %state.name, error = %e, "could not drop the kept manifests of unwanted lessons");
    }
}

/// Plans the wanted lessons of the current pass from what is held now, the schedule and the
/// throttle; keeps the plan and its figures in the status.
fn replan(state: &State) -> Arc<Plan> {
    let now = clock::now();
    let showings = state
        .trust
        .lock()
        .schedule()
        .map(|s| next_showings(&s.body, &state.place, now))
        .unwrap_or_default();
    let needs: Vec<LessonNeed> = state
        .wanted
        .lock()
        .iter()
        .map(|(lesson, refs)| LessonNeed {
            lesson: lesson.clone(),
            remaining_bytes: refs
                .iter()
                .filter(|c| !state.store.has(&c.id))
                .map(|c| u64::from(c.size))
                .sum(),
            showing: showings.get(lesson).copied(),
        })
        .collect();
    let planned = Arc::new(plan(
        needs,
        &PlanContext {
            now,
            link_bytes_per_sec: state.throttle.link_bytes_per_sec(),
            policy: &state.throttle.policy(),
            used_today: state.throttle.used_today(),
            margin_secs: state.ready_margin.lock().as_secs(),
        },
    ));
    let due = planned.lessons.iter().filter(|l| l.showing.is_some()).count() as u32;
    let at_risk = planned.at_risk().count() as u32;
    // Logged when a lesson becomes at risk, not on every re-plan.
    let was_at_risk: Vec<LessonId> = state
        .plan
        .lock()
        .as_ref()
        .map(|p| p.at_risk().map(|l| l.lesson.clone()).collect())
        .unwrap_or_default();
    for l in planned.at_risk().filter(|l| !was_at_risk.contains(&l.lesson)) {
        tracing::warn!(
            station = %state.name,
            lesson = %l.lesson,
            showing = ?l.showing,
            estimated_ready = ?l.estimated_ready,
            "lesson will not be ready before its showing"
        );
    }
    let goodput = state.throttle.measured_goodput();
    state.status.send_if_modified(|s| {
        let changed = (s.lessons_due, s.lessons_at_risk, s.goodput) != (due, at_risk, goodput);
        (s.lessons_due, s.lessons_at_risk, s.goodput) = (due, at_risk, goodput);
        changed
    });
    *state.plan.lock() = Some(planned.clone());
    planned
}

/// Every [`PACER_TICK`]: the throttle follows the clock (windows, quota, goodput) and the plan
/// is brought up to date.
async fn pace(state: Arc<State>) {
    let mut tick = tokio::time::interval(PACER_TICK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let received = state.upstream.stats().bytes_received.load(Ordering::Relaxed);
        let downloading = !state.status.borrow().synced;
        let throttle_state = state.clone();
        store_io(&state.store, move |_| {
            throttle_state.throttle.tick(clock::now(), received, downloading)
        })
        .await;
        replan(&state);
        check_retention(&state);
    }
}

/// Classifies the wanted lessons again at the current time; asks for a new sync pass when a
/// lesson's retention changed (a showing entered the pinned span, or one's showings are over).
fn check_retention(state: &State) {
    let before = state.retained.lock().clone();
    if before.is_empty() {
        return;
    }
    let policy = *state.retention.lock();
    let now = classify(
        before.keys(),
        state.trust.lock().schedule().map(|s| &s.body),
        &state.place,
        clock::now(),
        &policy,
    );
    if now != before {
        tracing::info!(station = %state.name, "the retention of a lesson changed with the time; syncing again");
        *state.retained.lock() = now;
        state.resync.notify_one();
    }
}

/// Bytes of the chunks of `lessons` not held (a chunk two lessons share counted once).
fn missing_bytes<'a>(state: &State, lessons: impl Iterator<Item = &'a Vec<ChunkRef>>) -> u64 {
    let mut seen = std::collections::HashSet::new();
    lessons
        .flatten()
        .filter(|c| seen.insert(c.id) && !state.store.has(&c.id))
        .map(|c| u64::from(c.size))
        .sum()
}

/// Removes every unpinned chunk outside `retained`; returns the bytes removed.
fn remove_unretained(store: &Store, retained: &std::collections::HashSet<ChunkId>) -> Result<u64, StoreError> {
    let mut removed = 0;
    for id in store.chunk_ids() {
        if retained.contains(&id) || store.is_pinned(&id) {
            continue;
        }
        let size = store.size_of(&id).unwrap_or(0);
        if store.remove(&id)? {
            removed += u64::from(size);
        }
    }
    Ok(removed)
}

/// Drops the pins of every lesson the retention policy no longer pins (withdrawn from the
/// catalog, outside the filter, not shown here soon, or shown and done), so eviction can reclaim
/// their chunks. Pins are per lesson, so a chunk another pinned lesson shares stays pinned.
fn unpin_unwanted(store: &Store, station: &NodeName, pinned: &[LessonId]) -> Result<(), StoreError> {
    for holder in store.pin_holders(PinReason::Scheduled)? {
        if !pinned.iter().any(|lesson| lesson.as_str() == holder) {
            let dropped = store.unpin_holder(PinReason::Scheduled, &holder)?;
            tracing::info!(%station, lesson = %holder, chunks = dropped, "lesson no longer pinned; its chunks may be evicted");
        }
    }
    Ok(())
}

/// The station's health now, from its status and current plan.
fn current_health(state: &State) -> courseway_proto::Health {
    let status = state.status.borrow().clone();
    let plan = state.plan.lock().clone();
    let stats = state.store.stats();
    heartbeat::build_health(&heartbeat::HealthInputs {
        status: &status,
        plan: plan.as_deref(),
        place: &state.place,
        store_budget: stats.budget_bytes,
        store_used: stats.used_bytes,
        software: concat!("courseway ", env!("CARGO_PKG_VERSION")),
    })
}

/// Sends the station's health upstream every `reports.heartbeat`, and at once (at most every
/// `reports.heartbeat_min_gap`) when what it says changes. A heartbeat that cannot be delivered
/// is not kept: the next one replaces it.
async fn heartbeats(state: Arc<State>) {
    let mut last: Option<(_, tokio::time::Instant)> = None;
    let mut status = state.status.subscribe();
    loop {
        let health = current_health(&state);
        let key = heartbeat::change_key(&health, &status.borrow_and_update());
        let due = match &last {
            None => true,
            Some((k, at)) => *k != key || at.elapsed() >= state.reports.heartbeat,
        };
        if due {
            let created_at = clock::now();
            let mut bytes = Vec::new();
            courseway_content::encoding::Encode::encode(&health, &mut bytes);
            let id = courseway_node::reports::report_id(&[
                b"heartbeat",
                state.name.as_str().as_bytes(),
                &created_at.0.to_be_bytes(),
                &bytes,
            ]);
            let report = courseway_proto::Report {
                id,
                station: state.name.clone(),
                created_at,
                viewings: Vec::new(),
                health: Some(health),
            };
            match courseway_node::reports::send_report(&state.upstream, report).await {
                Ok(()) => {
                    state.heartbeats_sent.fetch_add(1, Ordering::Relaxed);
                    last = Some((key, tokio::time::Instant::now()));
                }
                Err(e) => {
                    state.heartbeat_failures.fetch_add(1, Ordering::Relaxed);
                    tracing::debug!(station = %state.name, error = %e, "heartbeat not delivered; the next one replaces it");
                    tokio::time::sleep(state.reports.retry_after).await;
                    continue;
                }
            }
        }
        // Wake on a status change (the plan is re-made with it) or on the next tick.
        let wait = state.reports.heartbeat_min_gap.max(Duration::from_millis(100));
        tokio::time::sleep(wait).await;
        let _ = tokio::time::timeout(state.reports.heartbeat, status.changed()).await;
    }
}
