//! The station's LAN server: what the TV, a set-top box, a projector's PC or a phone in the
//! village gets over plain HTTP, with no internet.
//!
//! - [`hls`]: HLS for every **ready** lesson (every chunk held and verified), per rendition, so a
//!   set-top box or VLC plays the URL directly; attachments to download. Bodies are streamed
//!   from the store chunk by chunk (the store verifies each chunk as it reads it).
//! - [`assets`]: the TV page (HTML, CSS, a little JS) and hls.js, compiled into the binary.
//! - [`api`]: the JSON the page is built from.
//! - [`capture`] (pure): playback records derived from segment requests.
//! - [`attendance`] (pure checks): the attendance form for a scheduled showing.
//! - [`routes`]: the HTTP edge that ties them together.
//!
//! # URLs
//!
//! | method | path | answer |
//! | --- | --- | --- |
//! | GET | `/` | the TV page (zh-CN first, English second; arrow keys, Enter, Back/Escape) |
//! | GET | `/assets/{app.js, style.css, hls.min.js, hls.js-LICENSE.txt}` | the page's assets |
//! | GET | `/hls/{lesson}/master.m3u8` | master playlist: one variant per rendition |
//! | GET | `/hls/{lesson}/{rendition}/index.m3u8` | VOD media playlist |
//! | GET | `/hls/{lesson}/{rendition}/{n}.ts` | segment `n` (`video/mp2t`; byte ranges) |
//! | GET | `/files/{lesson}/{n}` | attachment `n` (its media type; byte ranges; a download) |
//! | GET | `/live/{channel}.m3u8` | live master playlist: the renditions held here, best first |
//! | GET | `/live/{channel}/{rendition}.m3u8` | live media playlist (sliding window, gaps marked) |
//! | GET | `/live/{channel}/{rendition}/{seq}.ts` | live segment `seq` (`video/mp2t`) |
//! | GET | `/api/status` | station, place, sync state, disk, live channels, playbacks in progress |
//! | GET | `/api/lessons` | the lessons this station holds or fetches: ready or not, progress, URLs |
//! | GET | `/api/schedule` | this station's showings from local midnight today to 7 days ahead |
//! | POST | `/api/attendance` | `{lesson, show_at, present, names?, pin?}` for a scheduled showing |
//!
//! Every GET also answers HEAD. A lesson this station does not hold, or does not hold whole
//! yet, is 404 with the reason in the body (JSON under `/api`, plain text elsewhere); a refused
//! attendance form is 400/404/409 with `{"error": reason, "field": name}`, and, where
//! [`LanConfig::attendance_pin`] is set, 403 for a missing or wrong PIN and 429 for a minute
//! after [`attendance::PIN_TRIES`] wrong ones in a row. Ids in paths are
//! validated identifiers matched against the verified manifests; nothing from a request reaches
//! the filesystem.
//!
//! # JSON
//!
//! - `/api/status`: `{station, place: {district, town, groups}, now, utc_offset_seconds, today,
//!   sync: {catalog_version, schedule_version, synced, lessons_wanted, lessons_ready,
//!   bytes_wanted, bytes_ready, lessons_due, lessons_at_risk, goodput_bytes_per_second,
//!   last_synced_at, downloads_allowed, disk_full}, disk: {budget_bytes, used_bytes,
//!   pinned_bytes, free_bytes}, live: {on_air, channels: [{channel, on_air, newest_sequence,
//!   seconds_since_last_segment, segment_seconds, renditions, playlist, playlists, showing}]},
//!   playing, attendance_pin}` (`channels`: the live channels this station follows, renditions top first;
//!   `showing`: the current or next live showing of the channel here, or `null`; `playing`
//!   counts playback sessions in progress; `attendance_pin`: whether the form asks for a PIN).
//! - `/api/lessons`: `{lessons: [{id, version, title, publisher, category, tags, language,
//!   duration_seconds, ready, size_bytes, held_bytes, next_showing, estimated_ready, at_risk,
//!   hls, renditions: [{name, kind, width, height, bandwidth, codecs, hls}], attachments: [{name,
//!   media_type, size_bytes, url}]}]}` (`hls` URLs are `null` until the lesson is ready).
//! - `/api/schedule`: `{today, showings: [{kind: "lesson", lesson, title, show_at, local_date,
//!   local_time, today, state, ready, at_risk, estimated_ready, attendance, attendance_open}]}`
//!   where `state` is `ready`, `downloading`, `at_risk` or `unknown` (not in this station's
//!   catalog) and `attendance` is `{present, names, recorded_at}` once entered; live showings
//!   not over yet are in the same list, in time order, as `{kind: "live", channel, title,
//!   show_at, ends_at, duration_seconds, local_date, local_time, end_local_time, now, today,
//!   state: on_air|upcoming|not_followed, followed, playlist}` (never at risk, no attendance).
//!
//! # Viewing records
//!
//! Every record goes to the [`ViewingSink`] in [`LanConfig`]: one per playback session when it
//! has been idle for [`LanConfig::idle_after`] or when the server stops, and one per attendance
//! form (with `attendance: Some(n)`, `rendition: ""`, `seconds_watched: 0`, `started_at` = the
//! showing, `device: "attendance-form <address>"`). The names typed on the form stay in the
//! station's store with the count (`lan/attendance/...`): `Viewing` has no field for them.

pub mod api;
pub mod assets;
pub mod attendance;
pub mod capture;
pub mod hls;
mod routes;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use courseway_node::clock;
use courseway_node::http::{HttpBindError, HttpServer};
use courseway_node::task::AbortOnDrop;
use courseway_proto::Viewing;
use parking_lot::Mutex;

use crate::State;
use capture::Capture;

/// Where viewing records go (the station's outbox, or a test's list).
pub type ViewingSink = Arc<dyn Fn(Viewing) + Send + Sync>;

/// How the LAN server runs.
#[derive(Clone)]
pub struct LanConfig {
    /// TCP address to serve on, e.g. `0.0.0.0:8080`.
    pub listen: SocketAddr,
    /// A playback session with no segment request for this long is over.
    pub idle_after: Duration,
    /// Receives every viewing record.
    pub sink: ViewingSink,
    /// If set, an attendance form is taken only with this PIN (the page asks for it), so a
    /// device on the village LAN cannot enter a showing's count before the admin does.
    pub attendance_pin: Option<String>,
}

impl std::fmt::Debug for LanConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LanConfig")
            .field("listen", &self.listen)
            .field("idle_after", &self.idle_after)
            .field("attendance_pin", &self.attendance_pin.as_ref().map(|_| "set"))
            .finish_non_exhaustive()
    }
}

/// Default [`LanConfig::idle_after`].
pub const DEFAULT_IDLE_AFTER: Duration = Duration::from_secs(60);

impl LanConfig {
    /// Serves on `listen`, sessions idle after [`DEFAULT_IDLE_AFTER`], attendance without a PIN.
    pub fn new(listen: SocketAddr, sink: ViewingSink) -> Self {
        Self {
            listen,
            idle_after: DEFAULT_IDLE_AFTER,
            sink,
            attendance_pin: None,
        }
    }
}

/// What the request handlers share.
pub(crate) struct Lan {
    pub(crate) state: Arc<State>,
    pub(crate) capture: Mutex<Capture>,
    pub(crate) sink: ViewingSink,
    /// Held while an attendance form is checked against the register and written, so two
    /// forms for one showing cannot both be taken.
    pub(crate) attendance: tokio::sync::Mutex<()>,
    pub(crate) attendance_pin: Option<String>,
    pub(crate) pin_guard: Mutex<attendance::PinGuard>,
}

impl Lan {
    pub(crate) fn emit(&self, records: Vec<Viewing>) {
        for v in records {
            tracing::info!(
                lesson = %v.lesson,
                rendition = %v.rendition,
                seconds = v.seconds_watched,
                device = %v.device,
                attendance = ?v.attendance,
                "viewing recorded"
            );
            (self.sink)(v);
        }
    }
}

/// A running LAN server. Dropping it (or [`LanServer::shutdown`]) stops serving and ends
/// every playback session in progress, sending its record to the sink.
pub struct LanServer {
    http: Option<HttpServer>,
    ticker: Option<AbortOnDrop>,
    lan: Arc<Lan>,
}

impl std::fmt::Debug for LanServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LanServer")
            .field("local_addr", &self.http.as_ref().map(HttpServer::local_addr))
            .finish_non_exhaustive()
    }
}

impl LanServer {
    pub(crate) async fn start(state: Arc<State>, config: LanConfig) -> Result<Self, HttpBindError> {
        let idle = config.idle_after.max(Duration::from_secs(1));
        let lan = Arc::new(Lan {
            state,
            capture: Mutex::new(Capture::new(idle.as_secs())),
            sink: config.sink,
            attendance: tokio::sync::Mutex::new(()),
            attendance_pin: config.attendance_pin,
            pin_guard: Mutex::new(attendance::PinGuard::default()),
        });
        let http = HttpServer::bind_streaming(config.listen, routes::LanHandler(lan.clone())).await?;
        // Idle sessions are ended a few times per idle period.
        let period = (idle / 4).clamp(Duration::from_millis(250), Duration::from_secs(15));
        let ticking = lan.clone();
        let ticker = tokio::spawn(async move {
            let mut tick = tokio::time::interval(period);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                let ended = ticking.capture.lock().expire(clock::now());
                ticking.emit(ended);
            }
        });
        tracing::info!(station = %lan.state.name, addr = %http.local_addr(), "LAN page and HLS served");
        Ok(Self {
            http: Some(http),
            ticker: Some(AbortOnDrop::new(ticker)),
            lan,
        })
    }

    /// Where the server listens.
    pub fn local_addr(&self) -> SocketAddr {
        self.http
            .as_ref()
            .map(HttpServer::local_addr)
            .expect("the server runs until dropped")
    }

    /// The page's URL for a browser on this machine (`0.0.0.0` shown as `127.0.0.1`).
    pub fn page_url(&self) -> String {
        let mut addr = self.local_addr();
        if addr.ip().is_unspecified() {
            addr.set_ip(std::net::Ipv4Addr::LOCALHOST.into());
        }
        format!("http://{addr}/")
    }

    /// Playback sessions in progress.
    pub fn sessions(&self) -> usize {
        self.lan.capture.lock().len()
    }

    /// Stops serving; every session in progress ends and is recorded.
    pub fn shutdown(self) {}
}

impl Drop for LanServer {
    fn drop(&mut self) {
        // Stop taking requests first, so no fetch lands after the sessions are closed.
        self.http.take();
        self.ticker.take();
        let ended = self.lan.capture.lock().finish();
        self.lan.emit(ended);
    }
}
