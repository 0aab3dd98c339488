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
//! - [`enrol`]: one-time enrolment tokens in `<data>/enrol-tokens.json` and the checks of
//!   `POST /api/enrol`, which issues a node certificate from the deployment CA to a key the
//!   node made.
//! - [`ratelimit`]: per-address and per-token request limits (429 with `Retry-After`).
//! - [`api`]: the HTTP edge (routes, authentication, JSON errors, audit of every action).
//!
//! See `docs/ARCHITECTURE.md` (the admin API) for the endpoints.

pub mod api;
pub mod db;
pub mod enrol;
pub mod ingest;
pub mod ratelimit;
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
    pub limiter: ratelimit::Limiter,
    pub enroller: Option<Arc<enrol::Enroller>>,
}

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
        let spool = spool::Spool::open(config.spool.clone())?;
        let failed = ingest::fail_interrupted(&db, &config.spool.join("lessons"), courseway_node::clock::now().0)?;
        if failed > 0 {
            tracing::warn!(
                lessons = failed,
                "lessons whose transcode was cut by a restart are marked failed"
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
        });
        let server = HttpServer::bind(inner.config.listen, api::AdminHandler(inner.clone())).await?;
        tracing::info!(addr = %server.local_addr(), "admin API listening");
        Ok(Self { server, inner })
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
