//! Mirroring an upstream origin: how centres interconnect (national → provincial → city).
//!
//! A mirror follows the upstream origin's signed catalog as a child of it (a certificate from the
//! upstream deployment's CA, its root key to verify against), picks the lessons of the chosen
//! publishers and categories, pulls their manifests and chunks through the normal verified chunk
//! path, and republishes them in this origin's own catalog, signed with this origin's key. A
//! lesson the upstream withdraws (or that leaves the selection) is withdrawn here too.
//!
//! - [`reconcile`] is the pure core: from the upstream catalog, the local catalog and the set of
//!   lessons this mirror published, what to publish and what to withdraw. A local lesson with
//!   the same id that the mirror did not publish is never replaced (a conflict, counted).
//! - The IO loop keeps one subscription upstream; every accepted upstream catalog (rollback,
//!   freeze and foreign keys refused by its own [`TrustState`], saved synced apart from the
//!   origin's own) starts a reconciliation, which replaces one still running and is retried until
//!   it completes.
//! - The mirrored set is saved after each lesson, so a restart neither republishes nor forgets.
//! - [`MirrorReview`] says who publishes: the mirror itself as soon as the chunks are held
//!   (`Automatic`: the upstream centre reviewed them), or this origin's own review workflow
//!   (`Local`): the fetched lesson is offered to a [`ReviewQueue`] (the admin API) as a submitted
//!   lesson, and a local reviewer and publisher take it from there. Either way the mirror
//!   withdraws what the upstream withdraws, and retracts offers still waiting for review.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use courseway_content::encoding::Decode;
use courseway_content::{
    Acceptance, Catalog, Category, ChunkId, ChunkRef, LessonId, LessonManifest, PublicKey, Signed, TrustState,
};
use courseway_net::{read_response, Client, Enrollment, TransportConfig};
use courseway_node::metrics::{FnCollector, MetricsCollector};
use courseway_node::{clock, persist, store_io, task::AbortOnDrop, Upstream, UpstreamConfig};
use courseway_proto::{Announcement, Request, Response, Subscribe, Topic};
use courseway_store::{Durability, PinReason, Store};
use parking_lot::Mutex;
use tokio::task::JoinSet;

use crate::{OriginError, Service};

/// Which of the upstream's lessons a mirror takes.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MirrorSelection {
    /// Only lessons of these publishing departments (empty: every publisher).
    pub publishers: Vec<String>,
    /// Only these categories (empty: both).
    pub categories: Vec<Category>,
}

impl MirrorSelection {
    /// Whether the mirror takes `manifest`.
    pub fn wants(&self, manifest: &LessonManifest) -> bool {
        (self.publishers.is_empty() || self.publishers.contains(&manifest.publisher))
            && (self.categories.is_empty() || self.categories.contains(&manifest.category))
    }
}

/// Where a mirror in [`MirrorReview::Local`] mode hands the lessons it has fetched: this
/// origin's review workflow. Both calls are idempotent and run on the blocking pool.
pub trait ReviewQueue: Send + Sync + std::fmt::Debug + 'static {
    /// A wanted upstream lesson whose manifest and chunks are now held (pinned) here. A lesson
    /// offered before with the same manifest is left as it is (a rejection stands until the
    /// upstream publishes a new version); a new version goes back to review.
    fn offer(&self, mirror: &str, manifest: &LessonManifest) -> Result<Offer, String>;
    /// The upstream withdrew the lesson (or it left the selection): a lesson of this mirror's
    /// still in this origin's catalog is withdrawn, and its record closed. Idempotent; a lesson
    /// of another source is left alone.
    fn retract(&self, mirror: &str, lesson: &LessonId) -> Result<(), String>;
}

/// What became of an offer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Offer {
    /// A new lesson, or a new version, is waiting for review.
    Offered,
    /// This manifest was offered before; its record stands as it is.
    Unchanged,
    /// A lesson of another source (a local upload, another mirror) has this id.
    Conflict,
}

/// Who publishes a mirror's lessons in this origin's catalog (`[[mirror]] review`).
#[derive(Debug, Clone, Default)]
pub enum MirrorReview {
    /// The mirror publishes a lesson as soon as its chunks are held.
    #[default]
    Automatic,
    /// The mirror offers each lesson to this origin's review workflow.
    Local(Arc<dyn ReviewQueue>),
}

/// How a mirror runs.
#[derive(Debug, Clone)]
pub struct MirrorConfig {
    /// Names the mirror in logs, metrics and the store, e.g. `provincial`.
    pub name: String,
    /// The upstream origin(s), in priority order.
    pub upstream: UpstreamConfig,
    /// Local UDP address for the connections upstream (port 0: any).
    pub bind: SocketAddr,
    pub transport: TransportConfig,
    /// The upstream deployment's root key: its catalogs must chain to it.
    pub root: PublicKey,
    pub selection: MirrorSelection,
    /// Who publishes the mirrored lessons here.
    pub review: MirrorReview,
    /// Chunks fetched at once.
    pub concurrency: usize,
    /// Wait before retrying a reconciliation that could not finish.
    pub retry_after: Duration,
}

impl MirrorConfig {
    /// A mirror of every lesson, 4 chunks at a time, retried every 10 s.
    pub fn new(name: impl Into<String>, upstream: UpstreamConfig, root: PublicKey) -> Self {
        Self {
            name: name.into(),
            upstream,
            bind: SocketAddr::from(([0, 0, 0, 0], 0)),
            transport: TransportConfig::default(),
            root,
            selection: MirrorSelection::default(),
            review: MirrorReview::Automatic,
            concurrency: 4,
            retry_after: Duration::from_secs(10),
        }
    }
}

/// One upstream catalog entry as the mirror sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UpstreamLesson {
    pub manifest: ChunkId,
    /// Whether the selection takes it; `None` when its manifest could not be read this time (such
    /// a lesson is neither published nor withdrawn until it can).
    pub wanted: Option<bool>,
}

/// What a reconciliation does.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Reconciliation {
    /// Upstream lessons to publish here (new, or a new version of one mirrored before).
    pub publish: Vec<LessonId>,
    /// Mirrored lessons to withdraw here (gone upstream or no longer selected).
    pub withdraw: Vec<LessonId>,
    /// Wanted upstream lessons whose id a local lesson already uses; left alone.
    pub conflicts: Vec<LessonId>,
    /// Mirrored lessons neither wanted nor published here any more (a withdrawal that was cut
    /// short): dropped from the mirrored set and unpinned.
    pub forget: Vec<LessonId>,
}

/// Decides what to publish and withdraw. `local` is this origin's catalog (lesson → manifest
/// hash), `mirrored` the lessons this mirror took on (recorded before they are published, so a
/// mirrored lesson missing here is published again: to stop mirroring a lesson, narrow the
/// selection).
pub fn reconcile(
    upstream: &BTreeMap<LessonId, UpstreamLesson>,
    local: &BTreeMap<LessonId, ChunkId>,
    mirrored: &BTreeSet<LessonId>,
) -> Reconciliation {
    let mut r = Reconciliation::default();
    for (lesson, up) in upstream.iter().filter(|(_, u)| u.wanted == Some(true)) {
        match local.get(lesson) {
            Some(hash) if *hash == up.manifest => {}
            Some(_) if !mirrored.contains(lesson) => r.conflicts.push(lesson.clone()),
            _ => r.publish.push(lesson.clone()),
        }
    }
    for lesson in mirrored {
        let wanted = match upstream.get(lesson) {
            None => false,
            Some(u) => u.wanted.unwrap_or(true),
        };
        if wanted {
            continue;
        }
        if local.contains_key(lesson) {
            r.withdraw.push(lesson.clone());
        } else {
            r.forget.push(lesson.clone());
        }
    }
    r
}

/// Counters of a mirror, for its metrics.
#[derive(Debug, Default)]
struct MirrorCounters {
    catalogs_accepted: AtomicU64,
    catalogs_refused: AtomicU64,
    lessons_published: AtomicU64,
    lessons_offered: AtomicU64,
    lessons_withdrawn: AtomicU64,
    conflicts: AtomicI64,
    lessons_mirrored: AtomicI64,
    bytes_fetched: AtomicU64,
    upstream_version: AtomicU64,
    /// Unix seconds of the last completed reconciliation (0: none yet).
    last_reconciled: AtomicU64,
}

/// What a mirror has done, for tests and status.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MirrorStats {
    pub upstream_version: u64,
    pub catalogs_accepted: u64,
    pub catalogs_refused: u64,
    pub lessons_mirrored: u64,
    pub lessons_published: u64,
    /// Lessons offered to this origin's review workflow (`MirrorReview::Local`).
    pub lessons_offered: u64,
    pub lessons_withdrawn: u64,
    pub conflicts: u64,
    pub bytes_fetched: u64,
    /// Whether the last accepted upstream catalog has been fully reconciled.
    pub reconciled: bool,
}

struct MirrorState {
    name: String,
    origin: Arc<Service>,
    upstream: Upstream,
    trust: Mutex<TrustState>,
    selection: MirrorSelection,
    review: MirrorReview,
    concurrency: usize,
    retry_after: Duration,
    mirrored: Mutex<BTreeSet<LessonId>>,
    /// Upstream manifests already fetched and checked, by hash (the current catalog's only).
    manifests: Mutex<BTreeMap<ChunkId, LessonManifest>>,
    counters: MirrorCounters,
    /// The upstream catalog version last reconciled in full.
    reconciled_version: AtomicU64,
}

/// A running mirror; stops when dropped.
pub struct Mirror {
    state: Arc<MirrorState>,
    _follow: AbortOnDrop,
}

impl std::fmt::Debug for Mirror {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Mirror")
            .field("name", &self.state.name)
            .finish_non_exhaustive()
    }
}

fn mirrored_key(name: &str) -> Vec<u8> {
    format!("mirror/{name}/lessons").into_bytes()
}

fn load_mirrored(store: &Store, name: &str) -> Result<BTreeSet<LessonId>, OriginError> {
    let Some(bytes) = store.get_meta(&mirrored_key(name))? else {
        return Ok(BTreeSet::new());
    };
    let text = String::from_utf8_lossy(&bytes);
    let mut set = BTreeSet::new();
    for line in text.lines().filter(|l| !l.is_empty()) {
        match LessonId::new(line.to_owned()) {
            Ok(id) => {
                set.insert(id);
            }
            Err(e) => tracing::warn!(mirror = name, line, error = %e, "ignoring a damaged mirrored-lesson record"),
        }
    }
    Ok(set)
}

fn save_mirrored(store: &Store, name: &str, set: &BTreeSet<LessonId>) -> Result<(), OriginError> {
    let text: String = set.iter().map(|l| format!("{}\n", l.as_str())).collect();
    store.put_meta(&mirrored_key(name), text.as_bytes(), Durability::Synced)?;
    Ok(())
}

impl Mirror {
    pub(crate) fn start(
        origin: Arc<Service>,
        config: MirrorConfig,
        enrollment: Enrollment,
    ) -> Result<Self, OriginError> {
        let name = config.name.clone();
        let trust = persist::load_mirror_trust(&origin.store, config.root, &name)?;
        let mirrored = load_mirrored(&origin.store, &name)?;
        let client = Client::bind(enrollment, &config.transport, config.bind)?;
        let counters = MirrorCounters::default();
        counters
            .lessons_mirrored
            .store(mirrored.len() as i64, Ordering::Relaxed);
        counters
            .upstream_version
            .store(trust.catalog().map(|c| c.body.version).unwrap_or(0), Ordering::Relaxed);
        let state = Arc::new(MirrorState {
            name,
            origin,
            upstream: Upstream::new(client, config.upstream),
            trust: Mutex::new(trust),
            selection: config.selection,
            review: config.review,
            concurrency: config.concurrency.max(1),
            retry_after: config.retry_after,
            mirrored: Mutex::new(mirrored),
            manifests: Mutex::new(BTreeMap::new()),
            counters,
            reconciled_version: AtomicU64::new(0),
        });
        let follow = AbortOnDrop::new(tokio::spawn(follow(state.clone())));
        Ok(Self { state, _follow: follow })
    }

    /// The mirror's name.
    pub fn name(&self) -> &str {
        &self.state.name
    }

    /// What the mirror has done.
    pub fn stats(&self) -> MirrorStats {
        let c = &self.state.counters;
        let upstream_version = c.upstream_version.load(Ordering::Relaxed);
        MirrorStats {
            upstream_version,
            catalogs_accepted: c.catalogs_accepted.load(Ordering::Relaxed),
            catalogs_refused: c.catalogs_refused.load(Ordering::Relaxed),
            lessons_mirrored: c.lessons_mirrored.load(Ordering::Relaxed).max(0) as u64,
            lessons_published: c.lessons_published.load(Ordering::Relaxed),
            lessons_offered: c.lessons_offered.load(Ordering::Relaxed),
            lessons_withdrawn: c.lessons_withdrawn.load(Ordering::Relaxed),
            conflicts: c.conflicts.load(Ordering::Relaxed).max(0) as u64,
            bytes_fetched: c.bytes_fetched.load(Ordering::Relaxed),
            reconciled: upstream_version > 0
                && self.state.reconciled_version.load(Ordering::Relaxed) == upstream_version,
        }
    }
}

/// The Prometheus metrics of an origin's mirrors (`courseway_origin_mirror_*`, one series per
/// mirror, labelled by its name), read at scrape time.
pub fn metrics(mirrors: &[Mirror]) -> Box<dyn MetricsCollector> {
    let states: Vec<Arc<MirrorState>> = mirrors.iter().map(|m| m.state.clone()).collect();
    Box::new(FnCollector::new(states, |ms, s| {
        let series = |f: &dyn Fn(&MirrorCounters) -> i64| -> Vec<([(&str, &str); 1], i64)> {
            ms.iter()
                .map(|m| ([("mirror", m.name.as_str())], f(&m.counters)))
                .collect()
        };
        let counts = |f: &dyn Fn(&MirrorCounters) -> u64| -> Vec<([(&str, &str); 1], u64)> {
            ms.iter()
                .map(|m| ([("mirror", m.name.as_str())], f(&m.counters)))
                .collect()
        };
        let load = |a: &AtomicU64| a.load(Ordering::Relaxed);
        s.gauges(
            "origin_mirror_upstream_catalog_version",
            "Version of the upstream origin's catalog this mirror last accepted",
            &series(&|c| load(&c.upstream_version) as i64),
        )?;
        s.counters(
            "origin_mirror_catalogs_refused",
            "Upstream catalogs refused (bad signature, unknown key, rollback, expired)",
            &counts(&|c| load(&c.catalogs_refused)),
        )?;
        s.gauges(
            "origin_mirror_lessons",
            "Lessons this origin publishes because it mirrors them from upstream",
            &series(&|c| c.lessons_mirrored.load(Ordering::Relaxed)),
        )?;
        s.counters(
            "origin_mirror_lessons_offered",
            "Upstream lessons (or new versions) offered to this origin's review workflow",
            &counts(&|c| load(&c.lessons_offered)),
        )?;
        s.gauges(
            "origin_mirror_conflicts",
            "Wanted upstream lessons not mirrored because a local lesson has the same id",
            &series(&|c| c.conflicts.load(Ordering::Relaxed)),
        )?;
        s.counters(
            "origin_mirror_fetched_bytes",
            "Chunk bytes fetched from the upstream origin",
            &counts(&|c| load(&c.bytes_fetched)),
        )?;
        s.gauges(
            "origin_mirror_last_reconciled_timestamp_seconds",
            "When the mirror last brought this origin's catalog in line with upstream (0: never)",
            &series(&|c| load(&c.last_reconciled) as i64),
        )
    }))
}

/// Keeps one catalog subscription upstream; each accepted catalog starts a reconciliation.
async fn follow(state: Arc<MirrorState>) {
    let mut pass = AbortOnDrop::default();
    let restored = state.trust.lock().catalog().cloned();
    if let Some(c) = restored {
        pass.replace(tokio::spawn(reconcile_until_done(state.clone(), c)));
    }
    let mut attempt = 0u32;
    loop {
        let subscribe = Request::Subscribe(Subscribe {
            topics: vec![Topic::Catalog],
        });
        let (_, first, mut recv) = match state.upstream.request(&subscribe).await {
            Ok(opened) => opened,
            Err(e) => {
                attempt += 1;
                tracing::warn!(mirror = %state.name, error = %e, "cannot reach the upstream origin; will retry");
                tokio::time::sleep(Duration::from_millis(200 << attempt.min(6))).await;
                continue;
            }
        };
        attempt = 0;
        let mut next = Some(first);
        while let Some(response) = next.take() {
            if let Response::Announce(Announcement::Catalog(c)) = response {
                if accept(&state, &c).await {
                    pass.replace(tokio::spawn(reconcile_until_done(state.clone(), *c)));
                }
            }
            match read_response(&mut recv).await {
                Ok(r) => next = Some(r),
                Err(e) => tracing::debug!(mirror = %state.name, error = %e, "subscription ended; subscribing again"),
            }
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Checks an upstream catalog against the upstream's root key and saves it if new.
async fn accept(state: &MirrorState, catalog: &Signed<Catalog>) -> bool {
    let accepted = state.trust.lock().accept_catalog(catalog.clone(), clock::now());
    match accepted {
        Ok(Acceptance::New) => {
            let (saved, name) = (catalog.clone(), state.name.clone());
            let save = move |s: &Store| persist::save_mirror_catalog(s, &name, &saved);
            if let Err(e) = store_io(&state.origin.store, save).await {
                tracing::error!(mirror = %state.name, error = %e, "could not save the accepted upstream catalog");
            }
            state.counters.catalogs_accepted.fetch_add(1, Ordering::Relaxed);
            state
                .counters
                .upstream_version
                .store(catalog.body.version, Ordering::Relaxed);
            tracing::info!(mirror = %state.name, version = catalog.body.version, "accepted an upstream catalog");
            true
        }
        Ok(Acceptance::Unchanged) => false,
        Err(e) => {
            state.counters.catalogs_refused.fetch_add(1, Ordering::Relaxed);
            tracing::warn!(mirror = %state.name, error = %e, "refused the upstream origin's catalog");
            false
        }
    }
}

async fn reconcile_until_done(state: Arc<MirrorState>, catalog: Signed<Catalog>) {
    loop {
        match reconcile_pass(&state, &catalog).await {
            Ok(()) => {
                state.reconciled_version.store(catalog.body.version, Ordering::Relaxed);
                state.counters.last_reconciled.store(clock::now().0, Ordering::Relaxed);
                tracing::info!(mirror = %state.name, version = catalog.body.version, "mirrored the upstream catalog");
                return;
            }
            Err(e) => {
                tracing::warn!(mirror = %state.name, error = %e, "mirroring incomplete; retrying");
                tokio::time::sleep(state.retry_after).await;
            }
        }
    }
}

/// One attempt at bringing this origin's catalog in line with `catalog`. A lesson whose manifest
/// or chunks cannot be fetched now does not hold up the others; the pass then reports the first
/// such error so that it is retried.
async fn reconcile_pass(state: &Arc<MirrorState>, catalog: &Signed<Catalog>) -> Result<(), String> {
    let mut first_error: Option<String> = None;
    let mut manifests: BTreeMap<LessonId, LessonManifest> = BTreeMap::new();
    let mut upstream: BTreeMap<LessonId, UpstreamLesson> = BTreeMap::new();
    for entry in catalog.body.entries() {
        let wanted = match upstream_manifest(state, entry.manifest, entry.manifest_size, &entry.lesson).await {
            Ok(manifest) => {
                let wanted = state.selection.wants(&manifest);
                manifests.insert(entry.lesson.clone(), manifest);
                Some(wanted)
            }
            Err(e) => {
                tracing::warn!(mirror = %state.name, lesson = %entry.lesson, error = %e, "cannot read an upstream manifest; will retry");
                first_error.get_or_insert(e);
                None
            }
        };
        upstream.insert(
            entry.lesson.clone(),
            UpstreamLesson {
                manifest: entry.manifest,
                wanted,
            },
        );
    }
    // Keep only the manifests the current catalog names.
    let current: BTreeSet<ChunkId> = catalog.body.entries().iter().map(|e| e.manifest).collect();
    state.manifests.lock().retain(|hash, _| current.contains(hash));
    let local: BTreeMap<LessonId, ChunkId> = state
        .origin
        .catalog
        .read()
        .iter()
        .flat_map(|c| c.body.entries().iter())
        .map(|e| (e.lesson.clone(), e.manifest))
        .collect();
    let plan = reconcile(&upstream, &local, &state.mirrored.lock().clone());
    state
        .counters
        .conflicts
        .store(plan.conflicts.len() as i64, Ordering::Relaxed);
    for lesson in &plan.conflicts {
        tracing::warn!(mirror = %state.name, %lesson, "not mirrored: a local lesson has the same id");
    }
    if !plan.withdraw.is_empty() {
        let origin = state.origin.clone();
        let ids = plan.withdraw.clone();
        run_blocking(move || origin.withdraw_lessons(&ids)).await?;
        state
            .counters
            .lessons_withdrawn
            .fetch_add(plan.withdraw.len() as u64, Ordering::Relaxed);
        tracing::info!(mirror = %state.name, lessons = plan.withdraw.len(), "withdrew lessons withdrawn upstream");
    }
    let dropped: Vec<LessonId> = plan.withdraw.iter().chain(&plan.forget).cloned().collect();
    if !dropped.is_empty() {
        // Each lesson's review is closed (in review mode) and its pins dropped before it leaves
        // the mirrored set, so a pass cut in between, or a retraction that fails, finds it in
        // `forget` next time: the mirror never stops tracking a lesson it has not let go of.
        let mut let_go = Vec::new();
        for lesson in dropped {
            if let MirrorReview::Local(queue) = &state.review {
                let (queue, name, id) = (queue.clone(), state.name.clone(), lesson.clone());
                let retracted = match tokio::task::spawn_blocking(move || queue.retract(&name, &id)).await {
                    Ok(r) => r,
                    Err(e) => Err(format!("the review task failed: {e}")),
                };
                if let Err(e) = retracted {
                    tracing::warn!(mirror = %state.name, %lesson, error = %e, "could not close a withdrawn lesson's review; will retry");
                    first_error.get_or_insert(format!("closing the review of {lesson}: {e}"));
                    continue;
                }
            }
            let holder = lesson.as_str().to_owned();
            if let Err(e) = store_io(&state.origin.store, move |s| {
                s.unpin_holder(PinReason::OriginOwned, &holder)
            })
            .await
            {
                tracing::warn!(mirror = %state.name, %lesson, error = %e, "could not unpin a withdrawn lesson; will retry");
                first_error.get_or_insert(format!("unpinning {lesson}: {e}"));
                continue;
            }
            let_go.push(lesson);
        }
        if !let_go.is_empty() {
            let mut mirrored = state.mirrored.lock().clone();
            for lesson in &let_go {
                mirrored.remove(lesson);
            }
            save_set(state, mirrored).await?;
        }
    }
    for lesson in &plan.publish {
        let manifest = manifests.remove(lesson).expect("every planned lesson has a manifest");
        if matches!(state.review, MirrorReview::Automatic) {
            // Recorded as mirrored before it is published: a pass cut after the publication
            // still knows the lesson is the mirror's to withdraw. (In review mode the offer's
            // record carries its source, and the lesson is recorded once the offer is taken.)
            let mut mirrored = state.mirrored.lock().clone();
            if mirrored.insert(lesson.clone()) {
                save_set(state, mirrored).await?;
            }
        }
        let published = async {
            fetch_chunks(state, &manifest).await?;
            let stored = manifest.clone();
            match &state.review {
                MirrorReview::Automatic => {
                    let origin = state.origin.clone();
                    run_blocking(move || origin.publish_stored(&[stored])).await?;
                    state.counters.lessons_published.fetch_add(1, Ordering::Relaxed);
                    tracing::info!(mirror = %state.name, %lesson, version = manifest.version, "mirrored a lesson");
                }
                MirrorReview::Local(queue) => {
                    let (queue, name) = (queue.clone(), state.name.clone());
                    let offer = match tokio::task::spawn_blocking(move || queue.offer(&name, &stored)).await {
                        Ok(Ok(offer)) => offer,
                        Ok(Err(e)) => return Err(format!("offering it for review: {e}")),
                        Err(e) => return Err(format!("the review task failed: {e}")),
                    };
                    if offer == Offer::Conflict {
                        // Another source (a local upload, another mirror) owns the id: never ours.
                        state.counters.conflicts.fetch_add(1, Ordering::Relaxed);
                        tracing::warn!(mirror = %state.name, %lesson, "not offered: a lesson of another source has the same id");
                        return Ok(());
                    }
                    let mut mirrored = state.mirrored.lock().clone();
                    if mirrored.insert(lesson.clone()) {
                        save_set(state, mirrored).await?;
                    }
                    if offer == Offer::Offered {
                        state.counters.lessons_offered.fetch_add(1, Ordering::Relaxed);
                        tracing::info!(mirror = %state.name, %lesson, version = manifest.version, "offered a mirrored lesson for review");
                    }
                }
            }
            Ok::<(), String>(())
        };
        match published.await {
            Ok(()) => {}
            Err(e) => {
                tracing::warn!(mirror = %state.name, %lesson, error = %e, "could not mirror a lesson; will retry");
                first_error.get_or_insert(e);
            }
        }
    }
    match first_error {
        None => Ok(()),
        Some(e) => Err(e),
    }
}

/// Runs an origin publication on the blocking pool (it writes the store synchronously).
async fn run_blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, OriginError> + Send + 'static,
) -> Result<T, String> {
    match tokio::task::spawn_blocking(f).await {
        Ok(r) => r.map_err(|e| e.to_string()),
        Err(e) => Err(format!("publication task failed: {e}")),
    }
}

async fn save_set(state: &MirrorState, set: BTreeSet<LessonId>) -> Result<(), String> {
    let (name, saved) = (state.name.clone(), set.clone());
    store_io(&state.origin.store, move |s| save_mirrored(s, &name, &saved))
        .await
        .map_err(|e| format!("saving the mirrored lessons: {e}"))?;
    state
        .counters
        .lessons_mirrored
        .store(set.len() as i64, Ordering::Relaxed);
    *state.mirrored.lock() = set;
    Ok(())
}

/// The manifest an upstream catalog entry names: from this origin's store when it already holds
/// it, else fetched upstream; checked against the entry's hash and lesson id either way.
async fn upstream_manifest(
    state: &MirrorState,
    hash: ChunkId,
    size: u32,
    lesson: &LessonId,
) -> Result<LessonManifest, String> {
    if let Some(m) = state.manifests.lock().get(&hash) {
        return Ok(m.clone());
    }
    let key = crate::manifest_key(&hash);
    let held = store_io(&state.origin.store, move |s| s.get_meta(&key))
        .await
        .map_err(|e| e.to_string())?;
    let bytes = match held {
        Some(b) => b,
        None => state
            .upstream
            .fetch_manifest(hash)
            .await
            .map_err(|e| format!("manifest of {lesson}: {e}"))?,
    };
    if bytes.len() != size as usize || ChunkId::of(&bytes) != hash {
        return Err(format!(
            "the upstream sent a manifest for {lesson} that does not match its catalog entry; refused"
        ));
    }
    let manifest = LessonManifest::from_bytes(&bytes).map_err(|e| format!("manifest of {lesson}: {e}"))?;
    if manifest.id != *lesson {
        return Err(format!(
            "the upstream catalog lists manifest {hash} as lesson {lesson}, but it describes lesson {}; refused",
            manifest.id
        ));
    }
    state.manifests.lock().insert(hash, manifest.clone());
    Ok(manifest)
}

/// Pins a lesson's chunks (so nothing evicts them while the rest arrive) and fetches the missing
/// ones from upstream, verified, `concurrency` at a time.
async fn fetch_chunks(state: &Arc<MirrorState>, manifest: &LessonManifest) -> Result<(), String> {
    let refs = manifest.chunk_refs();
    let ids: Vec<ChunkId> = refs.iter().map(|r| r.id).collect();
    let holder = manifest.id.as_str().to_owned();
    store_io(&state.origin.store, move |s| {
        s.pin(&ids, PinReason::OriginOwned, &holder)
    })
    .await
    .map_err(|e| e.to_string())?;
    let missing: Vec<ChunkRef> = refs.into_iter().filter(|r| !state.origin.store.has(&r.id)).collect();
    let mut queue = missing.into_iter();
    let mut running = JoinSet::new();
    loop {
        while running.len() < state.concurrency {
            let Some(chunk) = queue.next() else { break };
            let state = state.clone();
            running.spawn(async move {
                let bytes = state
                    .upstream
                    .fetch_chunk(chunk, None)
                    .await
                    .map_err(|e| format!("chunk {}: {e}", chunk.id))?;
                let len = bytes.len() as u64;
                store_io(&state.origin.store, move |s| s.put(chunk.id, &bytes))
                    .await
                    .map_err(|e| e.to_string())?;
                state.counters.bytes_fetched.fetch_add(len, Ordering::Relaxed);
                Ok::<(), String>(())
            });
        }
        match running.join_next().await {
            None => return Ok(()),
            Some(Ok(Ok(()))) => {}
            Some(Ok(Err(e))) => return Err(e),
            Some(Err(e)) => return Err(format!("chunk task failed: {e}")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(s: &str) -> LessonId {
        LessonId::new(s.to_owned()).unwrap()
    }

    fn hash(n: u8) -> ChunkId {
        ChunkId::of(&[n])
    }

    fn up(entries: &[(&str, u8, bool)]) -> BTreeMap<LessonId, UpstreamLesson> {
        entries
            .iter()
            .map(|(l, h, w)| {
                (
                    id(l),
                    UpstreamLesson {
                        manifest: hash(*h),
                        wanted: Some(*w),
                    },
                )
            })
            .collect()
    }

    fn local(entries: &[(&str, u8)]) -> BTreeMap<LessonId, ChunkId> {
        entries.iter().map(|(l, h)| (id(l), hash(*h))).collect()
    }

    fn set(ids: &[&str]) -> BTreeSet<LessonId> {
        ids.iter().map(|s| id(s)).collect()
    }

    #[test]
    fn new_wanted_lessons_are_published_and_unwanted_ones_ignored() {
        let r = reconcile(&up(&[("a", 1, true), ("b", 2, false)]), &local(&[]), &set(&[]));
        assert_eq!(r.publish, vec![id("a")]);
        assert!(r.withdraw.is_empty() && r.conflicts.is_empty());
    }

    #[test]
    fn an_unchanged_mirrored_lesson_is_left_alone_and_a_new_version_republished() {
        let r = reconcile(
            &up(&[("a", 1, true), ("b", 3, true)]),
            &local(&[("a", 1), ("b", 2)]),
            &set(&["a", "b"]),
        );
        assert_eq!(r.publish, vec![id("b")]);
        assert!(r.withdraw.is_empty());
    }

    #[test]
    fn lessons_gone_upstream_or_deselected_are_withdrawn() {
        let r = reconcile(
            &up(&[("b", 2, false)]),
            &local(&[("a", 1), ("b", 2), ("local", 9)]),
            &set(&["a", "b"]),
        );
        assert!(r.publish.is_empty());
        assert_eq!(r.withdraw, vec![id("a"), id("b")]);
    }

    #[test]
    fn a_local_lesson_with_the_same_id_is_a_conflict_never_replaced_or_withdrawn() {
        let r = reconcile(&up(&[("x", 1, true)]), &local(&[("x", 7)]), &set(&[]));
        assert_eq!(r.conflicts, vec![id("x")]);
        assert!(r.publish.is_empty() && r.withdraw.is_empty());
        // Gone upstream: still not the mirror's to withdraw.
        let r = reconcile(&up(&[]), &local(&[("x", 7)]), &set(&[]));
        assert!(r.withdraw.is_empty());
    }

    #[test]
    fn a_mirrored_lesson_gone_from_both_catalogs_is_forgotten_not_withdrawn_again() {
        let r = reconcile(&up(&[]), &local(&[]), &set(&["a"]));
        assert!(r.withdraw.is_empty());
        assert_eq!(r.forget, vec![id("a")]);
    }

    #[test]
    fn a_mirrored_lesson_missing_here_is_published_again() {
        // Recorded as mirrored, then the pass was cut before (or during) its publication.
        let r = reconcile(&up(&[("a", 1, true)]), &local(&[]), &set(&["a"]));
        assert_eq!(r.publish, vec![id("a")]);
    }

    #[test]
    fn a_lesson_whose_manifest_cannot_be_read_is_neither_published_nor_withdrawn() {
        let mut upstream = up(&[("a", 1, true), ("b", 2, true)]);
        upstream.get_mut(&id("a")).unwrap().wanted = None;
        upstream.get_mut(&id("b")).unwrap().wanted = None;
        let r = reconcile(&upstream, &local(&[("a", 1)]), &set(&["a"]));
        assert_eq!(r, Reconciliation::default());
    }

    #[test]
    fn selection_filters_by_publisher_and_category() {
        let lesson = courseway_content::synthetic::SyntheticLesson::of_size(id("l"), 1, 1000).build();
        let mut m = lesson.manifest;
        m.publisher = "health".into();
        m.category = Category::Required;
        assert!(MirrorSelection::default().wants(&m));
        let s = MirrorSelection {
            publishers: vec!["health".into()],
            categories: vec![Category::Required],
        };
        assert!(s.wants(&m));
        let s = MirrorSelection {
            publishers: vec!["agriculture".into()],
            categories: vec![],
        };
        assert!(!s.wants(&m));
        let s = MirrorSelection {
            publishers: vec![],
            categories: vec![Category::Elective],
        };
        assert!(!s.wants(&m));
    }
}
