//! The origin node: the top of the tree.
//!
//! It holds every published chunk (pinned as origin-owned: the only copy), keeps the catalog,
//! signs a new catalog version with its online key on every publication or withdrawal, signs a
//! new schedule version whenever the schedule is replaced, and serves its children (city relays,
//! or stations directly in a small deployment) with the shared [`courseway_node::NodeService`]
//! machinery. New catalogs and schedules are pushed down subscriptions.
//!
//! Lessons are published from their manifest and chunk bytes: by the [`admin`] API (uploads,
//! ingest through GStreamer, the review workflow), by a [`mirror`] of an upstream origin, or
//! directly (the demo's synthetic courseware).

pub mod admin;
pub mod live_numbering;
pub mod mirror;
pub mod reports;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use courseway_content::encoding::Encode;
use courseway_content::{
    Catalog, CatalogEntry, ChannelId, ChunkId, ChunkRef, LessonId, LessonManifest, LiveRendition, LiveSegment,
    LiveShowing, NodeName, OnlineKey, Schedule, ScheduleEntry, Signed, UnixTime, MAX_CHUNK_SIZE,
};
use courseway_net::{Enrollment, IncomingRequest, NetError, PeerIdentity, Revocations, Server, TransportConfig};
use courseway_node::live::{self as live_window, LiveWindow, DEFAULT_LIVE_WINDOW};
use courseway_node::metrics::{self, FnCollector, MetricsCollector};
use courseway_node::{clock, persist, reply_error, send_stored_chunk, serve_connection, store_io, NodeService};
use courseway_proto::{Announcement, ErrorCode, ErrorReply, GetChunk, Report, Role, Welcome};
use courseway_store::{Durability, PinReason, Store, StoreConfig, StoreError};
use parking_lot::{Mutex, RwLock};
use tokio::sync::broadcast;

/// How an origin runs.
#[derive(Debug, Clone)]
pub struct OriginConfig {
    pub name: NodeName,
    /// Where children connect (UDP).
    pub listen: SocketAddr,
    pub store: StoreConfig,
    pub transport: TransportConfig,
    /// How long a signed catalog or schedule stays valid; nodes refuse it after that (freeze
    /// protection).
    pub catalog_validity: Duration,
}

/// What went wrong at the origin.
#[derive(Debug, thiserror::Error)]
pub enum OriginError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Net(#[from] NetError),
    #[error(transparent)]
    Persist(#[from] persist::PersistError),
    #[error(
        "lesson {lesson} references chunk {chunk}, but its bytes were not given; publish every chunk with its manifest"
    )]
    MissingChunk { lesson: LessonId, chunk: ChunkId },
    #[error("lesson {lesson} is not in the catalog, so it cannot be withdrawn; check the lesson id")]
    NotPublished { lesson: LessonId },
    #[error("lesson {lesson} references chunk {chunk}, which is not in the origin's store; fetch or store every chunk before publishing")]
    ChunkNotStored { lesson: LessonId, chunk: ChunkId },
    #[error("a schedule holds at most {max} entries of a kind ({count} given); split it or drop past showings")]
    ScheduleTooLarge { count: usize, max: usize },
    #[error("{node} is this origin's own name; an origin cannot revoke itself")]
    RevokeSelf { node: NodeName },
    #[error("a catalog lists at most {max} revoked nodes; this revocation would make {count}")]
    TooManyRevoked { count: usize, max: usize },
}

/// Counters of what the origin sent.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct OriginStats {
    pub catalog_version: u64,
    pub schedule_version: u64,
    /// Chunk body bytes sent to children.
    pub chunk_bytes_sent: u64,
    /// Chunk requests a child made for a chunk it had already been sent in full.
    pub duplicate_chunk_sends: u64,
    /// Manifests sent to children.
    pub manifests_sent: u64,
    /// Live segments signed and announced.
    pub live_segments: u64,
    /// Chunks of live segments sent in full to children (one per segment chunk and child that
    /// follows the channel: children coalesce their own children's requests).
    pub live_chunk_sends: u64,
}

struct Service {
    name: NodeName,
    store: Arc<Store>,
    signer: OnlineKey,
    catalog_validity: Duration,
    catalog: RwLock<Option<Arc<Signed<Catalog>>>>,
    schedule: RwLock<Option<Arc<Signed<Schedule>>>>,
    /// The revocation list of the current catalog, consulted by this origin's handshakes.
    revocations: Revocations,
    publish_lock: Mutex<()>,
    announce: broadcast::Sender<Announcement>,
    chunk_bytes_sent: AtomicU64,
    sent_to: Mutex<HashSet<(NodeName, ChunkId)>>,
    duplicate_chunk_sends: AtomicU64,
    manifests_sent: AtomicU64,
    reports: Arc<reports::ReportStore>,
    live: Arc<LiveWindow>,
    /// Each live channel's numbering in this run.
    live_runs: Mutex<HashMap<ChannelId, live_numbering::ChannelRun>>,
    live_segments: AtomicU64,
    live_chunk_sends: AtomicU64,
}

/// A station is counted offline in the origin's metrics after this long without a heartbeat
/// (three default heartbeat periods).
pub const FLEET_OFFLINE_AFTER: Duration = Duration::from_secs(15 * 60);

/// A running origin.
pub struct Origin {
    service: Arc<Service>,
    server: Arc<Server>,
    accept: tokio::task::JoinHandle<()>,
    refresh: tokio::task::JoinHandle<()>,
}

impl std::fmt::Debug for Origin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Origin")
            .field("name", &self.service.name)
            .finish_non_exhaustive()
    }
}

/// A published manifest's line in the catalog.
fn catalog_entry(manifest: &LessonManifest) -> CatalogEntry {
    CatalogEntry {
        lesson: manifest.id.clone(),
        manifest: manifest.hash(),
        manifest_size: manifest.to_bytes().len() as u32,
        content_size: manifest.content_size(),
    }
}

fn manifest_key(hash: &ChunkId) -> Vec<u8> {
    format!("manifest/{hash}").into_bytes()
}

/// One cut segment of a live channel's rendition, as an ingest hands it over.
#[derive(Clone, Copy)]
pub struct LiveCut<'a> {
    /// The rendition's segments counted from 0 since its ingest started (carried on across
    /// restarts of the feed).
    pub index: u64,
    /// Which run of the feed cut it: counted up when a restarted feed cuts its first segment
    /// (its timestamps start over). 0 for a feed never restarted.
    pub epoch: u32,
    pub duration_ms: u32,
    /// The MPEG-TS segment.
    pub bytes: &'a [u8],
}

impl std::fmt::Debug for LiveCut<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LiveCut")
            .field("index", &self.index)
            .field("epoch", &self.epoch)
            .field("duration_ms", &self.duration_ms)
            .field("bytes", &self.bytes.len())
            .finish()
    }
}

impl Origin {
    /// Opens the store, restores the last catalog and schedule, and starts serving.
    pub async fn start(config: OriginConfig, enrollment: Enrollment, signer: OnlineKey) -> Result<Self, OriginError> {
        let store = Arc::new(Store::open(config.store)?);
        let trust = persist::load_trust(&store, signer.delegation().root)?;
        let catalog = trust.catalog().cloned().map(Arc::new);
        let schedule = trust.schedule().cloned().map(Arc::new);
        let (announce, _) = broadcast::channel(64);
        let revocations = enrollment.revocations().clone();
        if let Some(c) = &catalog {
            revocations.replace(c.body.revoked());
        }
        let service = Arc::new(Service {
            name: config.name,
            store: store.clone(),
            signer,
            catalog_validity: config.catalog_validity,
            revocations,
            catalog: RwLock::new(catalog),
            schedule: RwLock::new(schedule),
            publish_lock: Mutex::new(()),
            announce,
            chunk_bytes_sent: AtomicU64::new(0),
            sent_to: Mutex::new(HashSet::new()),
            duplicate_chunk_sends: AtomicU64::new(0),
            manifests_sent: AtomicU64::new(0),
            reports: Arc::new(reports::ReportStore::open(store.clone())?),
            live: Arc::new(LiveWindow::new(DEFAULT_LIVE_WINDOW)),
            live_runs: Mutex::new(HashMap::new()),
            live_segments: AtomicU64::new(0),
            live_chunk_sends: AtomicU64::new(0),
        });
        let server = Arc::new(Server::bind(enrollment, &config.transport, config.listen)?);
        let accept = {
            let (server, service) = (server.clone(), service.clone());
            tokio::spawn(async move { server.serve(move |conn| serve_connection(service.clone(), conn)).await })
        };
        let refresh = tokio::spawn(refresh_loop(service.clone()));
        Ok(Self {
            service,
            server,
            accept,
            refresh,
        })
    }

    /// Where children connect.
    pub fn local_addr(&self) -> Result<SocketAddr, NetError> {
        self.server.local_addr()
    }

    /// The current catalog.
    pub fn catalog(&self) -> Option<Arc<Signed<Catalog>>> {
        self.service.catalog.read().clone()
    }

    /// The current schedule.
    pub fn schedule(&self) -> Option<Arc<Signed<Schedule>>> {
        self.service.schedule.read().clone()
    }

    /// What the origin has sent.
    pub fn stats(&self) -> OriginStats {
        OriginStats {
            catalog_version: self.catalog().map(|c| c.body.version).unwrap_or(0),
            schedule_version: self.schedule().map(|s| s.body.version).unwrap_or(0),
            chunk_bytes_sent: self.service.chunk_bytes_sent.load(Ordering::Relaxed),
            duplicate_chunk_sends: self.service.duplicate_chunk_sends.load(Ordering::Relaxed),
            manifests_sent: self.service.manifests_sent.load(Ordering::Relaxed),
            live_segments: self.service.live_segments.load(Ordering::Relaxed),
            live_chunk_sends: self.service.live_chunk_sends.load(Ordering::Relaxed),
        }
    }

    /// The origin's Prometheus metrics, read at scrape time.
    pub fn metrics(&self) -> Box<dyn MetricsCollector> {
        Box::new(FnCollector::new(self.service.clone(), |o, s| {
            s.counter(
                "origin_chunk_sent_bytes",
                "Chunk bytes sent to children",
                o.chunk_bytes_sent.load(Ordering::Relaxed),
            )?;
            s.counter(
                "origin_duplicate_chunk_sends",
                "Chunk requests a child made for a chunk it had already been sent in full",
                o.duplicate_chunk_sends.load(Ordering::Relaxed),
            )?;
            s.counter(
                "origin_live_segments",
                "Live segments signed and announced",
                o.live_segments.load(Ordering::Relaxed),
            )?;
            s.counter(
                "origin_live_chunk_sends",
                "Chunks of live segments sent in full to children (once per child that follows the channel)",
                o.live_chunk_sends.load(Ordering::Relaxed),
            )?;
            let r = &o.reports.counters;
            s.counter(
                "origin_reports_stored",
                "Viewing reports written (each report id once)",
                r.stored.load(Ordering::Relaxed),
            )?;
            s.counter(
                "origin_report_duplicates",
                "Reports received again (a resend after a lost acknowledgement): acknowledged, not stored twice",
                r.duplicates.load(Ordering::Relaxed),
            )?;
            s.counter(
                "origin_viewing_records",
                "Viewing records written",
                r.records.load(Ordering::Relaxed),
            )?;
            s.counter(
                "origin_heartbeats",
                "Station heartbeats taken",
                r.heartbeats.load(Ordering::Relaxed),
            )?;
            let fleet = reports::fleet(&o.reports.health(), clock::now(), FLEET_OFFLINE_AFTER.as_secs());
            s.gauges(
                "origin_fleet_stations",
                "Stations known from their heartbeats, by state (offline: no heartbeat for 15 minutes)",
                &[
                    ([("state", "online")], i64::from(fleet.stations_online)),
                    ([("state", "offline")], i64::from(fleet.stations_offline)),
                ],
            )?;
            let mut per_showing: Vec<(Vec<(&'static str, String)>, i64)> = Vec::new();
            for sh in &fleet.showings {
                for (state, n) in [
                    ("ready", sh.ready),
                    ("downloading", sh.downloading),
                    ("at_risk", sh.at_risk),
                    ("offline", sh.offline),
                ] {
                    let labels = vec![
                        ("lesson", sh.lesson.clone()),
                        ("showing", sh.show_at_utc.clone()),
                        ("district", sh.district.clone()),
                        ("state", state.to_owned()),
                    ];
                    per_showing.push((labels, i64::from(n)));
                }
            }
            s.gauges(
                "origin_fleet_showing_stations",
                "Per scheduled showing ahead and district: stations ready, downloading, at risk, offline (from heartbeats)",
                &per_showing,
            )?;
            // When each showing ahead starts, so an alert can ask "at risk within an hour of
            // its start" (a label cannot be compared with `time()`).
            let mut starts: Vec<(Vec<(&'static str, String)>, i64)> = Vec::new();
            for sh in &fleet.showings {
                let labels = vec![("lesson", sh.lesson.clone()), ("showing", sh.show_at_utc.clone())];
                if !starts.iter().any(|(l, _)| *l == labels) {
                    starts.push((labels, sh.show_at as i64));
                }
            }
            s.gauges(
                "origin_fleet_showing_start_timestamp_seconds",
                "When each scheduled showing ahead starts (Unix seconds)",
                &starts,
            )?;
            // One series per station at the origin only (relays never carry a station label):
            // what an "offline for hours" alert needs, for stations no Prometheus can scrape.
            let last_seen: Vec<(Vec<(&'static str, String)>, i64)> = fleet
                .stations
                .iter()
                .map(|st| {
                    let labels = vec![
                        ("station", st.station.clone()),
                        ("district", st.district.clone()),
                        ("town", st.town.clone()),
                    ];
                    (labels, st.last_seen as i64)
                })
                .collect();
            s.gauges(
                "origin_fleet_station_last_heartbeat_timestamp_seconds",
                "When the origin last had a heartbeat from each station (Unix seconds)",
                &last_seen,
            )?;
            metrics::scrape_catalog(s, o.catalog.read().as_deref(), clock::now())?;
            metrics::scrape_store(s, &o.store.stats())
        }))
    }

    /// What the origin counted of reports: stored, duplicates, records, heartbeats.
    pub fn report_counters(&self) -> &reports::ReportCounters {
        &self.service.reports.counters
    }

    /// Every viewing report stored (each once).
    pub fn reports(&self) -> Result<Vec<courseway_proto::Report>, StoreError> {
        self.service.reports.reports()
    }

    /// Every viewing record stored, with its station.
    pub fn viewings(&self) -> Result<Vec<(NodeName, courseway_proto::Viewing)>, StoreError> {
        self.service.reports.viewings()
    }

    /// The latest heartbeat of every station that sent one.
    pub fn station_health(&self) -> Result<Vec<reports::StationHealth>, StoreError> {
        Ok(self.service.reports.health())
    }

    /// The fleet: every station from its latest heartbeat (offline when none came for
    /// `offline_after`), and per showing ahead and district the ready / downloading / at-risk /
    /// offline counts.
    pub fn fleet_status(&self, offline_after: Duration) -> reports::FleetStatus {
        reports::fleet(&self.service.reports.health(), clock::now(), offline_after.as_secs())
    }

    /// The monthly report (per district and town) from what the stations reported.
    pub fn monthly_report(&self, month: reports::Month) -> Result<reports::MonthlyReport, StoreError> {
        let r = &self.service.reports;
        let health = r.health();
        Ok(reports::monthly(
            month,
            &r.viewings()?,
            &r.readiness()?,
            &reports::places(&health),
        ))
    }

    /// Publishes lessons: stores their chunks (pinned) and manifests, then signs and announces
    /// the next catalog version. Returns that version.
    pub fn publish(&self, lessons: &[(LessonManifest, &BTreeMap<ChunkId, Vec<u8>>)]) -> Result<u64, OriginError> {
        let s = &self.service;
        let _one_publication_at_a_time = s.publish_lock.lock();
        for (manifest, chunks) in lessons {
            let refs = manifest.chunk_refs();
            if let Some(missing) = refs.iter().find(|r| !chunks.contains_key(&r.id)) {
                return Err(OriginError::MissingChunk {
                    lesson: manifest.id.clone(),
                    chunk: missing.id,
                });
            }
            let ids: Vec<ChunkId> = refs.iter().map(|r| r.id).collect();
            s.store.pin(&ids, PinReason::OriginOwned, manifest.id.as_str())?;
            for r in &refs {
                s.store.put(r.id, &chunks[&r.id])?;
            }
            s.store.put_meta(
                &manifest_key(&manifest.hash()),
                &manifest.to_bytes(),
                Durability::Synced,
            )?;
        }
        let previous = s.catalog.read().clone();
        let mut entries: BTreeMap<LessonId, CatalogEntry> = previous
            .iter()
            .flat_map(|c| c.body.entries().iter().cloned())
            .map(|e| (e.lesson.clone(), e))
            .collect();
        for (manifest, _) in lessons {
            entries.insert(manifest.id.clone(), catalog_entry(manifest));
        }
        let revoked = s.revoked();
        let version = s.sign_and_announce(entries.into_values().collect(), revoked, clock::now())?;
        tracing::info!(version, lessons = lessons.len(), "published");
        Ok(version)
    }

    /// Revokes nodes: signs and announces the next catalog version listing them. Every node
    /// that accepts it refuses them at the handshake and closes their connections. Revoking a
    /// node already revoked changes nothing but the version. Returns the new catalog version.
    pub fn revoke(&self, nodes: &[NodeName]) -> Result<u64, OriginError> {
        let s = &self.service;
        if let Some(node) = nodes.iter().find(|n| **n == s.name) {
            return Err(OriginError::RevokeSelf { node: node.clone() });
        }
        let _one_publication_at_a_time = s.publish_lock.lock();
        let mut revoked = s.revoked();
        revoked.extend(nodes.iter().cloned());
        revoked.sort();
        revoked.dedup();
        let max = courseway_content::catalog::MAX_REVOKED_NODES;
        if revoked.len() > max {
            return Err(OriginError::TooManyRevoked {
                count: revoked.len(),
                max,
            });
        }
        let entries = s
            .catalog
            .read()
            .iter()
            .flat_map(|c| c.body.entries().to_vec())
            .collect();
        let version = s.sign_and_announce(entries, revoked, clock::now())?;
        tracing::warn!(version, nodes = ?nodes.iter().map(NodeName::as_str).collect::<Vec<_>>(), "revoked");
        Ok(version)
    }

    /// The nodes the current catalog revokes.
    pub fn revoked(&self) -> Vec<NodeName> {
        self.service.revoked()
    }

    /// Signs the current catalog again as the next version if less than half of its validity
    /// is left, so that children never see it expire while the origin runs. Returns the new
    /// version, if one was signed. The origin's own task calls this with the clock's time.
    pub fn refresh_catalog(&self, now: UnixTime) -> Result<Option<u64>, OriginError> {
        self.service.refresh_catalog(now)
    }

    /// The same for the schedule.
    pub fn refresh_schedule(&self, now: UnixTime) -> Result<Option<u64>, OriginError> {
        self.service.refresh_schedule(now)
    }

    /// Withdraws lessons: signs and announces the next catalog version without them. Their
    /// chunks stay in the origin's store (it holds the only copy); stations unpin them. Returns
    /// the new catalog version.
    pub fn withdraw(&self, lessons: &[LessonId]) -> Result<u64, OriginError> {
        self.service.withdraw_lessons(lessons)
    }

    /// A chunk from the origin's store, verified on read (None: not held).
    pub fn chunk(&self, id: &ChunkId) -> Result<Option<Vec<u8>>, OriginError> {
        Ok(self.service.store.get(id, 0)?)
    }

    /// Publishes lessons whose chunks are already in the origin's store (a mirror fetched them):
    /// pins them, stores the manifests, then signs and announces the next catalog version.
    pub fn publish_stored(&self, manifests: &[LessonManifest]) -> Result<u64, OriginError> {
        self.service.publish_stored(manifests)
    }

    /// Starts mirroring an upstream origin (see [`mirror`]); it stops when the handle is dropped.
    /// `enrollment` is this origin's identity in the upstream deployment.
    pub fn mirror(&self, config: mirror::MirrorConfig, enrollment: Enrollment) -> Result<mirror::Mirror, OriginError> {
        mirror::Mirror::start(self.service.clone(), config, enrollment)
    }

    /// Replaces the lesson showings of the schedule: signs version n + 1 holding `entries` (and
    /// the live showings as they are), saves it (synced) and announces it. Entries may name
    /// lessons not published yet (a term's schedule is usually made before every lesson is
    /// ready); nodes prepare those once the catalog lists them. Returns the new schedule version.
    pub fn publish_schedule(&self, entries: Vec<ScheduleEntry>) -> Result<u64, OriginError> {
        let max = courseway_content::schedule::MAX_SCHEDULE_ENTRIES;
        if entries.len() > max {
            return Err(OriginError::ScheduleTooLarge {
                count: entries.len(),
                max,
            });
        }
        let s = &self.service;
        let _one_publication_at_a_time = s.publish_lock.lock();
        let live = s
            .schedule
            .read()
            .as_ref()
            .map(|c| c.body.live.clone())
            .unwrap_or_default();
        let count = entries.len();
        let version = s.sign_schedule(entries, live, clock::now())?;
        tracing::info!(version, entries = count, "schedule published");
        Ok(version)
    }

    /// Replaces the live showings of the schedule (the lesson showings stay as they are): signs,
    /// saves and announces version n + 1 like [`Origin::publish_schedule`]. A schedule with live
    /// showings is written in schedule format 2, which nodes older than live showings refuse.
    pub fn publish_live_showings(&self, live: Vec<LiveShowing>) -> Result<u64, OriginError> {
        let max = courseway_content::schedule::MAX_LIVE_SHOWINGS;
        if live.len() > max {
            return Err(OriginError::ScheduleTooLarge { count: live.len(), max });
        }
        let s = &self.service;
        let _one_publication_at_a_time = s.publish_lock.lock();
        let entries = s
            .schedule
            .read()
            .as_ref()
            .map(|c| c.body.entries.clone())
            .unwrap_or_default();
        let count = live.len();
        let version = s.sign_schedule(entries, live, clock::now())?;
        tracing::info!(version, live_showings = count, "schedule published");
        Ok(version)
    }

    /// Publishes one cut segment of a live channel: stores its bytes as chunks (≤ 1 MiB each,
    /// pinned while the segment is in the live window), signs a [`LiveSegment`] of `rendition`
    /// (described by `info`) and announces it down the subscriptions. Sequence and
    /// discontinuity numbers are [`live_numbering`]'s: the renditions of one ingest are cut
    /// together, so segment [`LiveCut::index`] of each gets the same sequence number, and the
    /// discontinuity number grows by one each time the feed or the origin restarts (persisted in
    /// the store). Returns the sequence number. Store IO: call from a blocking thread.
    pub fn publish_live_segment(
        &self,
        channel: &ChannelId,
        rendition: &str,
        info: &LiveRendition,
        cut: LiveCut<'_>,
    ) -> Result<u64, OriginError> {
        let LiveCut {
            index,
            epoch,
            duration_ms,
            bytes,
        } = cut;
        let s = &self.service;
        let mut chunks = Vec::new();
        for piece in bytes.chunks(MAX_CHUNK_SIZE) {
            let id = ChunkId::of(piece);
            s.store.put(id, piece)?;
            chunks.push(ChunkRef {
                id,
                size: piece.len() as u32,
            });
        }
        let (sequence, discontinuity) = {
            let mut runs = s.live_runs.lock();
            let key = live_numbering::discontinuity_key(channel.as_str());
            let (run, begun) = match runs.entry(channel.clone()) {
                std::collections::hash_map::Entry::Occupied(e) => (e.into_mut(), false),
                std::collections::hash_map::Entry::Vacant(v) => {
                    let last = s
                        .store
                        .get_meta(&key)?
                        .and_then(|b| <[u8; 8]>::try_from(b.as_slice()).ok())
                        .map(u64::from_le_bytes);
                    (
                        v.insert(live_numbering::ChannelRun::begin(clock::now().0, epoch, last)),
                        true,
                    )
                }
            };
            let (sequence, discontinuity, changed) = run.number(index, epoch);
            if begun || changed {
                let persisted = s.store.put_meta(&key, &discontinuity.to_le_bytes(), Durability::Synced);
                if let Err(e) = persisted {
                    // Not numbered after all: the next segment begins (or changes) again, so a
                    // number the store never held is never handed out twice.
                    if begun {
                        runs.remove(channel);
                    } else {
                        run.undo_change();
                    }
                    return Err(e.into());
                }
            }
            (sequence, discontinuity)
        };
        let signed = Arc::new(s.signer.sign(LiveSegment {
            channel: channel.clone(),
            rendition: rendition.to_owned(),
            info: info.clone(),
            sequence,
            discontinuity,
            duration_ms,
            cut_at_ms: live_window::now_ms(),
            chunks,
        }));
        live_window::keep_blocking(&s.live, &s.store, signed.clone())?;
        s.live.mark_complete(&signed.body, live_window::now_ms());
        s.live_segments.fetch_add(1, Ordering::Relaxed);
        // No subscriber is not an error: a child that subscribes later gets the window.
        let _ = s.announce.send(Announcement::Live(Box::new((*signed).clone())));
        Ok(sequence)
    }

    /// The live segments of `channel` in the origin's window, oldest first.
    pub fn live_window(&self, channel: &ChannelId) -> Vec<Arc<Signed<LiveSegment>>> {
        self.service.live.window(channel)
    }

    /// Every announcement the origin makes from now on (catalogs, schedules, live segments), as
    /// its children get them; a receiver that falls behind by more than the channel's capacity
    /// gets `Lagged` and misses the oldest.
    pub fn live_announcements(&self) -> broadcast::Receiver<Announcement> {
        self.service.announce.subscribe()
    }

    /// When each live segment of `channel` was announced (ms since the epoch).
    pub fn live_completions(&self, channel: &ChannelId) -> BTreeMap<live_window::SegmentKey, u64> {
        self.service.live.completions(channel)
    }

    /// Stops accepting and closes every connection.
    pub fn shutdown(&self) {
        self.server.close();
        self.accept.abort();
        self.refresh.abort();
    }
}

impl Drop for Origin {
    fn drop(&mut self) {
        self.shutdown();
    }
}

impl Service {
    fn revoked(&self) -> Vec<NodeName> {
        self.catalog
            .read()
            .as_ref()
            .map(|c| c.body.revoked().to_vec())
            .unwrap_or_default()
    }

    fn withdraw_lessons(&self, lessons: &[LessonId]) -> Result<u64, OriginError> {
        let _one_publication_at_a_time = self.publish_lock.lock();
        let previous = self.catalog.read().clone();
        let mut entries: BTreeMap<LessonId, CatalogEntry> = previous
            .iter()
            .flat_map(|c| c.body.entries().iter().cloned())
            .map(|e| (e.lesson.clone(), e))
            .collect();
        for lesson in lessons {
            if entries.remove(lesson).is_none() {
                return Err(OriginError::NotPublished { lesson: lesson.clone() });
            }
        }
        let version = self.sign_and_announce(entries.into_values().collect(), self.revoked(), clock::now())?;
        tracing::info!(version, lessons = lessons.len(), "withdrew");
        Ok(version)
    }

    fn publish_stored(&self, manifests: &[LessonManifest]) -> Result<u64, OriginError> {
        let _one_publication_at_a_time = self.publish_lock.lock();
        for manifest in manifests {
            let refs = manifest.chunk_refs();
            let ids: Vec<ChunkId> = refs.iter().map(|r| r.id).collect();
            self.store.pin(&ids, PinReason::OriginOwned, manifest.id.as_str())?;
            if let Some(missing) = refs.iter().find(|r| !self.store.has(&r.id)) {
                return Err(OriginError::ChunkNotStored {
                    lesson: manifest.id.clone(),
                    chunk: missing.id,
                });
            }
            self.store.put_meta(
                &manifest_key(&manifest.hash()),
                &manifest.to_bytes(),
                Durability::Synced,
            )?;
        }
        let previous = self.catalog.read().clone();
        let mut entries: BTreeMap<LessonId, CatalogEntry> = previous
            .iter()
            .flat_map(|c| c.body.entries().iter().cloned())
            .map(|e| (e.lesson.clone(), e))
            .collect();
        for manifest in manifests {
            entries.insert(manifest.id.clone(), catalog_entry(manifest));
        }
        let version = self.sign_and_announce(entries.into_values().collect(), self.revoked(), clock::now())?;
        tracing::info!(version, lessons = manifests.len(), "published lessons already stored");
        Ok(version)
    }

    /// Signs `entries` and `revoked` as the next catalog version, issued `now`, saves it
    /// (synced), applies its revocations to this origin's handshakes and announces it.
    fn sign_and_announce(
        &self,
        entries: Vec<CatalogEntry>,
        revoked: Vec<NodeName>,
        now: UnixTime,
    ) -> Result<u64, OriginError> {
        let version = self.catalog.read().as_ref().map(|c| c.body.version).unwrap_or(0) + 1;
        let catalog = Catalog::with_revoked(
            version,
            now,
            now.plus_secs(self.catalog_validity.as_secs()),
            entries,
            revoked,
        )
        .expect("entries come from a catalog or are keyed by lesson id, so none repeats");
        let signed = self.signer.sign(catalog);
        persist::save_catalog(&self.store, &signed)?;
        self.revocations.replace(signed.body.revoked());
        *self.catalog.write() = Some(Arc::new(signed.clone()));
        // No subscriber is not an error: children fetch the catalog when they connect.
        let _ = self.announce.send(Announcement::Catalog(Box::new(signed)));
        Ok(version)
    }

    fn refresh_catalog(&self, now: UnixTime) -> Result<Option<u64>, OriginError> {
        let _one_publication_at_a_time = self.publish_lock.lock();
        let Some(current) = self.catalog.read().clone() else {
            return Ok(None);
        };
        let left = current.body.expires_at.secs_since(now);
        if left > self.catalog_validity.as_secs() / 2 {
            return Ok(None);
        }
        let version = self.sign_and_announce(current.body.entries().to_vec(), current.body.revoked().to_vec(), now)?;
        tracing::info!(version, "catalog signed again before it expires");
        Ok(Some(version))
    }

    /// Signs `entries` as the next schedule version, issued `now`, saves it (synced) and
    /// announces it. Call with `publish_lock` held.
    fn sign_schedule(
        &self,
        entries: Vec<ScheduleEntry>,
        live: Vec<LiveShowing>,
        now: UnixTime,
    ) -> Result<u64, OriginError> {
        let version = self.schedule.read().as_ref().map(|s| s.body.version).unwrap_or(0) + 1;
        let signed = self.signer.sign(Schedule {
            live,
            version,
            issued_at: now,
            expires_at: now.plus_secs(self.catalog_validity.as_secs()),
            entries,
        });
        persist::save_schedule(&self.store, &signed)?;
        *self.schedule.write() = Some(Arc::new(signed.clone()));
        // No subscriber is not an error: children get the schedule when they subscribe.
        let _ = self.announce.send(Announcement::Schedule(Box::new(signed)));
        Ok(version)
    }

    fn refresh_schedule(&self, now: UnixTime) -> Result<Option<u64>, OriginError> {
        let _one_publication_at_a_time = self.publish_lock.lock();
        let Some(current) = self.schedule.read().clone() else {
            return Ok(None);
        };
        if current.body.expires_at.secs_since(now) > self.catalog_validity.as_secs() / 2 {
            return Ok(None);
        }
        let version = self.sign_schedule(current.body.entries.clone(), current.body.live.clone(), now)?;
        tracing::info!(version, "schedule signed again before it expires");
        Ok(Some(version))
    }
}

/// Re-signs the catalog and the schedule before they expire; checks at an eighth of the validity (at least every
/// minute, at most every hour).
async fn refresh_loop(service: Arc<Service>) {
    let every = (service.catalog_validity / 8).clamp(Duration::from_secs(60), Duration::from_secs(3600));
    loop {
        tokio::time::sleep(every).await;
        let now = clock::now();
        if let Err(e) = service.refresh_catalog(now) {
            tracing::error!(error = %e, "could not sign the catalog again; children will refuse it once it expires");
        }
        if let Err(e) = service.refresh_schedule(now) {
            tracing::error!(error = %e, "could not sign the schedule again; children will refuse it once it expires");
        }
    }
}

impl NodeService for Service {
    fn welcome(&self) -> Welcome {
        Welcome {
            node: self.name.clone(),
            role: Role::Origin,
            software: concat!("courseway ", env!("CARGO_PKG_VERSION")).into(),
        }
    }

    async fn serve_chunk(&self, req: &mut IncomingRequest, get: GetChunk) -> Result<(), NetError> {
        let size = self.store.size_of(&get.id);
        if !send_stored_chunk(&self.store, req, get, &[]).await? {
            return reply_error(
                req,
                ErrorCode::NotFound,
                format!("chunk {} is not published here", get.id),
            )
            .await;
        }
        if let Some(size) = size {
            self.chunk_bytes_sent
                .fetch_add(u64::from(size.saturating_sub(get.offset)), Ordering::Relaxed);
            if get.offset == 0 && !self.sent_to.lock().insert((req.peer.name.clone(), get.id)) {
                self.duplicate_chunk_sends.fetch_add(1, Ordering::Relaxed);
            }
            if get.offset == 0 && self.live.holds_chunk(&get.id) {
                self.live_chunk_sends.fetch_add(1, Ordering::Relaxed);
            }
        }
        Ok(())
    }

    async fn manifest(&self, hash: ChunkId) -> Result<Vec<u8>, ErrorReply> {
        match store_io(&self.store, move |s| s.get_meta(&manifest_key(&hash))).await {
            Ok(Some(bytes)) => {
                self.manifests_sent.fetch_add(1, Ordering::Relaxed);
                Ok(bytes)
            }
            Ok(None) => Err(ErrorReply::new(
                ErrorCode::NotFound,
                format!("no manifest {hash} is published here"),
            )),
            Err(e) => Err(ErrorReply::new(ErrorCode::Internal, e.to_string())),
        }
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
        self.live.window(channel)
    }

    /// Writes the report (synced) before the acknowledgement; a report id seen before is
    /// acknowledged without a second write.
    async fn report(&self, peer: &PeerIdentity, report: Report) -> Result<(), ErrorReply> {
        courseway_node::reports::check_reporter(peer, &report)?;
        let now = clock::now();
        let station = report.station.clone();
        let reports = self.reports.clone();
        let schedule = self.schedule.read().clone();
        let taken =
            match tokio::task::spawn_blocking(move || reports.take(&report, now, schedule.as_ref().map(|s| &s.body)))
                .await
            {
                Ok(taken) => taken,
                Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
                Err(_) => return Err(ErrorReply::new(ErrorCode::Internal, "the origin is shutting down")),
            };
        taken.map_err(|e| {
            tracing::error!(%station, error = %e, "could not store a report; the station sends it again");
            ErrorReply::new(
                ErrorCode::Internal,
                format!("the origin could not store the report: {e}"),
            )
        })
    }
}
