//! The origin's admin HTTP API: uploads, ingest jobs, the review workflow, publication,
//! schedules, preview and the audit log, for people and for `courseway ingest|review|publish|…`.
//!
//! - [`workflow`] (pure): lesson states and transitions, roles and who may do what, metadata
//!   validation. Every rule lives here, with unit tests.
//! - [`tokens`]: bearer tokens (hashed) in `<data>/tokens.json`, made by `courseway admin token`.
//! - [`db`]: the records (lessons, media layout, jobs, uploads, audit log) in `<data>/db`.
//! - [`spool`]: resumable, streamed uploads in `<spool>/uploads/`; transcoded lessons in
//!   `<spool>/lessons/<id>/`.
//! - [`ingest`]: jobs (probe, transcode on the blocking pool, build the manifest) and the chunks
//!   of a transcoded lesson for `Origin::publish`.
//! - `intake`: lessons a mirror offers for review (`[[mirror]] review = "local"`).
//! - [`enrol`]: one-time enrolment tokens in `<data>/enrol-tokens.json` and the checks of
//!   `POST /api/enrol`, which issues a node certificate from the deployment CA to a key the
//!   node made.
//! - [`ratelimit`]: per-address and per-token request limits (429 with `Retry-After`).
//! - [`recording`]: a live channel recorded into a file in the spool, then ingested like an
//!   upload into a lesson that goes to `submitted` for review (回看).
//! - [`api`]: the HTTP edge (routes, authentication, JSON errors, audit of every action).
//!
//! See `docs/ARCHITECTURE.md` (the admin API) for the endpoints.

pub mod api;
pub mod db;
pub mod enrol;
pub mod ingest;
mod intake;
mod private_file;
pub mod ratelimit;
pub mod recording;
pub mod spool;
pub mod tokens;
pub mod workflow;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use courseway_media::LadderConfig;
use courseway_node::http::{HttpBindError, HttpServer};
use parking_lot::Mutex;

use crate::Origin;

/// How the admin API runs (`[origin.admin]`).
#[derive(Debug, Clone)]
pub struct AdminConfig {
    /// TCP address of the HTTP API.
    pub listen: SocketAddr,
    /// The admin database (`db/`) and the token file (`tokens.json`).
    pub data: PathBuf,
    /// Uploads and transcoded lessons.
    pub spool: PathBuf,
    /// Largest upload accepted, in bytes (checked on the declared size, before any body).
    pub max_upload: u64,
    /// Largest attachment accepted, in bytes (an attachment is read whole to be cut by FastCDC).
    pub max_attachment: u64,
    /// Transcodes that may run at once (each uses every core GStreamer gives it).
    pub jobs: usize,
    pub ladder: LadderConfig,
    /// Requests per minute per client address and per token.
    pub rate_limits: ratelimit::RateLimits,
    /// Enrolment (`POST /api/enrol`); `None`: the origin holds no CA key and enrols nobody.
    pub enrol: Option<enrol::EnrolConfig>,
    /// An upload body that sends nothing for this long is taken as cut (the client resumes).
    pub upload_idle: std::time::Duration,
}

impl AdminConfig {
    /// Default limits: uploads up to 16 GiB, attachments up to 256 MiB, one transcode at a time.
    pub fn new(listen: SocketAddr, data: PathBuf, spool: PathBuf) -> Self {
        Self {
            listen,
            data,
            spool,
            max_upload: 16 << 30,
            max_attachment: 256 << 20,
            jobs: 1,
            ladder: LadderConfig::default(),
            rate_limits: ratelimit::RateLimits::default(),
            enrol: None,
            upload_idle: spool::DEFAULT_BODY_IDLE,
        }
    }

    /// The enrolment token file `courseway token create` writes.
    pub fn enrol_tokens_file(&self) -> PathBuf {
        self.data.join(enrol::ENROL_TOKENS_FILE)
    }

    /// The token file `courseway admin token create` writes.
    pub fn tokens_file(&self) -> PathBuf {
        self.data.join(tokens::TOKENS_FILE)
    }
}

/// Brings the records in line with the origin's catalog after a step was cut between changing
/// the catalog and writing the record: an `approved` lesson that is in the catalog is
/// `published`; a `published` lesson that is not is `withdrawn`. Returns how many changed.
fn records_follow_the_catalog(db: &db::AdminDb, origin: &Origin) -> Result<usize, db::DbError> {
    use workflow::LessonState;
    let catalog = origin.catalog();
    let version = catalog.as_ref().map(|c| c.body.version);
    let entry = |id: &str| {
        catalog.as_ref().and_then(|c| {
            c.body
                .entries()
                .iter()
                .find(|e| e.lesson.as_str() == id)
                .map(|e| e.manifest)
        })
    };
    let listed = |id: &str| entry(id).is_some();
    let mut changed = 0;
    for mut lesson in db.lessons()? {
        // A mirrored lesson's approved version may be a newer one than the version listed.
        let this_version_listed = match &lesson.source {
            None => listed(&lesson.id),
            Some(_) => {
                let held = db.media(&lesson.id)?.and_then(|m| ingest::stored_manifest(&m).ok());
                held.is_some_and(|m| entry(&lesson.id) == Some(m.hash()))
            }
        };
        let next = match LessonState::parse(&lesson.state) {
            Some(LessonState::Approved) if this_version_listed => LessonState::Published,
            Some(LessonState::Published) if !listed(&lesson.id) => LessonState::Withdrawn,
            _ => continue,
        };
        lesson.state = next.as_str().into();
        lesson.catalog_version = version;
        lesson.updated = courseway_node::clock::now().0;
        db.put_lesson(&lesson)?;
        changed += 1;
    }
    Ok(changed)
}

/// Why the admin API could not start.
#[derive(Debug, thiserror::Error)]
pub enum AdminError {
    #[error(transparent)]
    Db(#[from] db::DbError),
    #[error(transparent)]
    Spool(#[from] spool::SpoolError),
    #[error(transparent)]
    Bind(#[from] HttpBindError),
    #[error("the ladder in [origin.admin] is not usable: {0}")]
    Ladder(String),
    #[error("enrolment ([origin.admin] enrol_ca_key) cannot start: {0}")]
    Enrol(#[from] enrol::EnrolError),
}

/// What the API's requests share.
#[derive(Debug)]
pub(crate) struct Inner {
    pub config: AdminConfig,
    pub db: Arc<db::AdminDb>,
    pub tokens: tokens::TokenStore,
    pub spool: Arc<spool::Spool>,
    pub origin: Arc<Origin>,
    /// Jobs queued or running.
    pub jobs: Mutex<HashMap<String, ingest::JobHandle>>,
    pub transcoders: Arc<tokio::sync::Semaphore>,
    /// One workflow step (or schedule change) at a time: steps read, check and write a record.
    pub workflow: tokio::sync::Mutex<()>,
    /// Jobs ended since start, by how: done, failed, cancelled.
    pub jobs_ended: [std::sync::atomic::AtomicU64; 3],
    pub limiter: ratelimit::Limiter,
    pub enroller: Option<Arc<enrol::Enroller>>,
    /// Live channels being recorded.
    pub recordings: Mutex<HashMap<courseway_content::ChannelId, ActiveRecording>>,
}

/// A recording in progress and the lesson it will make.
#[derive(Debug)]
pub(crate) struct ActiveRecording {
    pub recording: recording::Recording,
    pub metadata: workflow::Metadata,
    /// Who started it: the lesson's submitter.
    pub by: workflow::Principal,
}

/// The states a running job can be in, and how a job ends: the label values of the ingest
/// metrics.
pub(crate) const RUNNING_JOB_STATES: [&str; 4] = ["queued", "probing", "transcoding", "building"];
pub(crate) const ENDED_JOB_STATES: [&str; 3] = ["done", "failed", "cancelled"];

/// The running admin API.
#[derive(Debug)]
pub struct AdminApi {
    server: HttpServer,
    inner: Arc<Inner>,
}

impl AdminApi {
    /// Opens the admin database and the spool, and serves the API on `config.listen`.
    pub async fn start(config: AdminConfig, origin: Arc<Origin>) -> Result<Self, AdminError> {
        config
            .ladder
            .validate()
            .map_err(|e| AdminError::Ladder(e.to_string()))?;
        let db = Arc::new(db::AdminDb::open(&config.data.join("db"))?);
        let spool = spool::Spool::open(config.spool.clone(), config.upload_idle)?;
        let failed = ingest::fail_interrupted(&db, &config.spool.join("lessons"), courseway_node::clock::now().0)?;
        if failed > 0 {
            tracing::warn!(
                lessons = failed,
                "lessons whose transcode was cut by a restart are marked failed"
            );
        }
        let swept = ingest::sweep_used_uploads(&db, &spool)?;
        if swept > 0 {
            tracing::info!(
                uploads = swept,
                "removed the files of uploads already made into lessons"
            );
        }
        // A recording does not outlive the origin: what a stopped one left is never ingested.
        let recordings = config.spool.join(recording::RECORDINGS_DIR);
        if let Ok(left) = std::fs::read_dir(&recordings) {
            for f in left.flatten() {
                tracing::warn!(file = %f.path().display(), "removed a recording cut by a restart");
                let _ = std::fs::remove_file(f.path());
            }
        }
        let caught_up = records_follow_the_catalog(&db, &origin)?;
        if caught_up > 0 {
            tracing::warn!(
                lessons = caught_up,
                "lesson records brought in line with the catalog (a publication or withdrawal was cut before its record was written)"
            );
        }
        let enroller = match &config.enrol {
            Some(e) => Some(Arc::new(enrol::Enroller::open(e, config.enrol_tokens_file())?)),
            None => None,
        };
        let inner = Arc::new(Inner {
            tokens: tokens::TokenStore::new(config.tokens_file()),
            limiter: ratelimit::Limiter::new(config.rate_limits),
            enroller,
            transcoders: Arc::new(tokio::sync::Semaphore::new(config.jobs.max(1))),
            config,
            db,
            spool,
            origin,
            jobs: Mutex::new(HashMap::new()),
            workflow: tokio::sync::Mutex::new(()),
            jobs_ended: Default::default(),
            recordings: Mutex::new(HashMap::new()),
        });
        let server = HttpServer::bind(inner.config.listen, api::AdminHandler(inner.clone())).await?;
        tracing::info!(addr = %server.local_addr(), "admin API listening");
        Ok(Self { server, inner })
    }

    /// The review workflow as a mirror's review queue (`[[mirror]] review = "local"`).
    pub fn review_queue(&self) -> Arc<dyn crate::mirror::ReviewQueue> {
        Arc::new(intake::MirrorIntake(self.inner.clone()))
    }

    /// The ingest metrics (`courseway_origin_ingest_jobs{state}` for running jobs,
    /// `courseway_origin_ingest_jobs_ended_total{state}`), read at scrape time from memory.
    pub fn metrics(&self) -> Box<dyn courseway_node::metrics::MetricsCollector> {
        use std::sync::atomic::Ordering;
        Box::new(courseway_node::metrics::FnCollector::new(
            self.inner.clone(),
            |inner, s| {
                let running: Vec<String> = inner
                    .jobs
                    .lock()
                    .values()
                    .map(|j| j.record.lock().state.clone())
                    .collect();
                let series: Vec<([(&str, &str); 1], i64)> = RUNNING_JOB_STATES
                    .iter()
                    .map(|state| {
                        (
                            [("state", *state)],
                            running.iter().filter(|r| r == state).count() as i64,
                        )
                    })
                    .collect();
                s.gauges("origin_ingest_jobs", "Ingest jobs running now, by state", &series)?;
                let ended: Vec<([(&str, &str); 1], u64)> = ENDED_JOB_STATES
                    .iter()
                    .zip(&inner.jobs_ended)
                    .map(|(state, n)| ([("state", *state)], n.load(Ordering::Relaxed)))
                    .collect();
                s.counters(
                    "origin_ingest_jobs_ended",
                    "Ingest jobs ended since the origin started, by how they ended",
                    &ended,
                )
            },
        ))
    }

    /// Where the API listens.
    pub fn local_addr(&self) -> SocketAddr {
        self.server.local_addr()
    }

    /// Cancels running jobs (their output is removed; the lessons are marked failed).
    pub fn shutdown(&self) {
        for job in self.inner.jobs.lock().values() {
            job.cancel.cancel();
        }
    }
}
