//! Node config files (TOML), one per role, turned into the libraries' config structs.
//!
//! The file format lives here, in the binary, so the libraries stay free of serde: each
//! library takes a plain config struct. Every key is documented in `config/*.toml`, with its
//! default. Unknown keys are refused (a misspelt key would otherwise be silently ignored), and
//! a bad value is reported with its key, line and column by the TOML parser. Relative paths are
//! taken relative to the config file's directory.

use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use anyhow::{bail, ensure, Context};
use bytesize::ByteSize;
use courseway_content::schedule::Place;
use courseway_content::{AreaName, Category, ChannelId, NodeName};
use courseway_net::{CongestionControl, RateLimit, TransportConfig};
use courseway_node::{Parent, UpstreamConfig};
use courseway_origin::mirror::MirrorSelection;
use courseway_relay::PrefetchPolicy;
use courseway_station::planner::{BandwidthPolicy, BandwidthWindow, TimeOfDay};
use courseway_station::retention::RetentionPolicy;
use courseway_station::{LessonFilter, ReportsConfig};
use courseway_store::StoreConfig;
use serde::de::Error as _;
use serde::{Deserialize, Deserializer};

/// `[store]`: the node's chunk store.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StoreSection {
    /// The store's directory (created if missing).
    pub path: PathBuf,
    /// Bytes of chunks the store may hold, e.g. "200 GiB".
    pub budget: ByteSize,
    /// Hash every chunk again when it is read.
    #[serde(default = "yes")]
    pub verify_on_read: bool,
    /// fsync every chunk write.
    #[serde(default)]
    pub sync_chunk_writes: bool,
}

impl StoreSection {
    fn to_config(&self, base: &Path) -> anyhow::Result<StoreConfig> {
        ensure!(
            self.budget.as_u64() >= 16 << 20,
            "store.budget = \"{}\" is too small to hold even a few chunks; give at least \"16 MiB\"",
            self.budget
        );
        let mut config = StoreConfig::new(base.join(&self.path), self.budget.as_u64());
        config.verify_on_read = self.verify_on_read;
        config.sync_chunk_writes = self.sync_chunk_writes;
        Ok(config)
    }
}

/// `[transport]`: QUIC settings (see crates/net/src/transport.rs for why the defaults are what
/// they are).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TransportSection {
    /// "cubic", "bbr" or "newreno": the controller for what this node sends.
    pub congestion: Option<Congestion>,
    pub keep_alive_secs: Option<u64>,
    pub idle_timeout_secs: Option<u64>,
}

impl TransportSection {
    fn to_config(&self, mut base: TransportConfig) -> TransportConfig {
        if let Some(c) = self.congestion {
            base.congestion = c.0;
        }
        if let Some(s) = self.keep_alive_secs {
            base.keep_alive_interval = Duration::from_secs(s);
        }
        if let Some(s) = self.idle_timeout_secs {
            base.idle_timeout = Duration::from_secs(s);
        }
        base
    }
}

/// A congestion controller's name in a config file.
#[derive(Debug, Clone, Copy)]
pub struct Congestion(pub CongestionControl);

impl<'de> Deserialize<'de> for Congestion {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        match s.to_ascii_lowercase().as_str() {
            "cubic" => Ok(Self(CongestionControl::Cubic)),
            "bbr" => Ok(Self(CongestionControl::Bbr)),
            "newreno" => Ok(Self(CongestionControl::NewReno)),
            _ => Err(D::Error::custom(format!(
                "unknown congestion controller {s:?}; use \"cubic\", \"bbr\" or \"newreno\""
            ))),
        }
    }
}

/// `[metrics]`: where Prometheus scrapes the node.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MetricsSection {
    /// TCP address of the `/metrics` endpoint, e.g. "127.0.0.1:9400".
    pub listen: SocketAddr,
}

/// `[[parent]]`: one parent, in priority order.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ParentSection {
    /// The name in the parent's certificate (its connection is refused otherwise).
    pub name: NodeNameValue,
    /// The parent's address, "host:port".
    pub addr: SocketAddr,
}

/// `[upstream]`: how the node treats its parents.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpstreamSection {
    pub retry_after_secs: Option<u64>,
    pub connect_timeout_secs: Option<u64>,
    pub primary_recheck_secs: Option<u64>,
    pub stall_timeout_secs: Option<u64>,
    pub max_attempts: Option<u32>,
}

fn upstream_config(parents: &[ParentSection], section: &UpstreamSection) -> anyhow::Result<UpstreamConfig> {
    ensure!(
        !parents.is_empty(),
        "no [[parent]] is configured; add at least one [[parent]] with name and addr"
    );
    let mut c = UpstreamConfig::new(
        parents
            .iter()
            .map(|p| Parent {
                name: p.name.0.clone(),
                addr: p.addr,
            })
            .collect(),
    );
    let secs = |v: Option<u64>, d: Duration| v.map(Duration::from_secs).unwrap_or(d);
    c.retry_after = secs(section.retry_after_secs, c.retry_after);
    c.connect_timeout = secs(section.connect_timeout_secs, c.connect_timeout);
    c.primary_recheck = secs(section.primary_recheck_secs, c.primary_recheck);
    c.stall_timeout = secs(section.stall_timeout_secs, c.stall_timeout);
    c.max_attempts = section.max_attempts.unwrap_or(c.max_attempts);
    ensure!(c.max_attempts > 0, "upstream.max_attempts must be at least 1");
    ensure!(
        !c.stall_timeout.is_zero() && !c.connect_timeout.is_zero(),
        "upstream.stall_timeout_secs and upstream.connect_timeout_secs must be above zero"
    );
    Ok(c)
}

/// A node name in a config file, checked when read.
#[derive(Debug, Clone)]
pub struct NodeNameValue(pub NodeName);

impl<'de> Deserialize<'de> for NodeNameValue {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        NodeName::from_str(&s).map(Self).map_err(D::Error::custom)
    }
}

/// A link rate such as "2 Mbit/s", "512 kbit/s" or "1.5 Mbit/s".
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Rate {
    pub bits_per_sec: u64,
}

impl FromStr for Rate {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let t = s.trim();
        let split = t.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(t.len());
        let (number, unit) = t.split_at(split);
        let number: f64 = number
            .parse()
            .map_err(|_| format!("{s:?} is not a rate; write it like \"2 Mbit/s\" or \"512 kbit/s\""))?;
        let unit = unit.trim().to_ascii_lowercase();
        let prefix = ["bit/s", "bps", "bit"]
            .iter()
            .find_map(|suffix| unit.strip_suffix(suffix))
            .ok_or_else(|| format!("unknown rate unit in {s:?}; use bit/s, kbit/s, Mbit/s or Gbit/s"))?;
        let scale = match prefix.trim() {
            "" => 1.0,
            "k" => 1e3,
            "m" => 1e6,
            "g" => 1e9,
            _ => {
                return Err(format!(
                    "unknown rate unit in {s:?}; use bit/s, kbit/s, Mbit/s or Gbit/s"
                ))
            }
        };
        let bits = number * scale;
        if !(bits >= 8_000.0 && bits.is_finite()) {
            return Err(format!("{s:?} is below 8 kbit/s, too slow to fetch anything"));
        }
        Ok(Self {
            bits_per_sec: bits as u64,
        })
    }
}

impl fmt::Display for Rate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:.3} Mbit/s", self.bits_per_sec as f64 / 1e6)
    }
}

impl<'de> Deserialize<'de> for Rate {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d)?.parse().map_err(D::Error::custom)
    }
}

/// A lesson category in a config file: "required" (必修) or "elective" (选修).
#[derive(Debug, Clone, Copy)]
pub struct CategoryValue(pub Category);

impl<'de> Deserialize<'de> for CategoryValue {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        match s.as_str() {
            "required" | "必修" => Ok(Self(Category::Required)),
            "elective" | "选修" => Ok(Self(Category::Elective)),
            _ => Err(D::Error::custom(format!(
                "unknown category {s:?}; use \"required\" (必修) or \"elective\" (选修)"
            ))),
        }
    }
}

fn yes() -> bool {
    true
}

/// `[node]` of an origin or relay.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServingNodeSection {
    /// Directory written by `courseway keys issue` (node.crt, node.key, ca.crt, root.pub).
    pub credentials: PathBuf,
    /// UDP address children connect to.
    pub listen: SocketAddr,
}

/// `origin.toml`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OriginFile {
    #[serde(default)]
    pub metrics: Option<MetricsSection>,
    pub node: ServingNodeSection,
    pub store: StoreSection,
    #[serde(default)]
    pub transport: Option<TransportSection>,
    pub origin: OriginSection,
    /// Upstream origins whose catalogs this origin mirrors.
    #[serde(default)]
    pub mirror: Vec<MirrorSection>,
    /// Live feeds this origin ingests and broadcasts.
    #[serde(default)]
    pub live: Vec<LiveSection>,
}

/// `[[live]]`: a live feed the origin takes in, cuts into segments and broadcasts on a channel.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LiveSection {
    /// The channel stations follow (`[station] live_channels`), e.g. "city-live".
    pub channel: ChannelValue,
    /// "udp://ADDRESS:PORT" (MPEG-TS over UDP), "srt://:PORT" (an SRT listener) or "test"
    /// (a test pattern and tone).
    pub input: String,
    /// The renditions, best first: `{ name = "source" }` (the feed's quality), `{ name,
    /// width, height, video_kbps }` (scaled H.264 + AAC) or `{ name, audio_only = true }`.
    #[serde(default = "default_ladder")]
    pub ladder: Vec<LadderEntry>,
    /// Segment length in seconds; each segment starts on a key frame.
    #[serde(default = "default_segment_seconds")]
    pub segment_seconds: f64,
    /// "auto" (passthrough when the feed is H.264 + AAC, else transcode), "passthrough" or
    /// "transcode": what is done to the feed for the source rendition.
    #[serde(default = "default_codecs")]
    pub codecs: String,
    /// Video bit rate of the source rendition when it is transcoded (kbit/s).
    #[serde(default = "default_transcode_kbps")]
    pub transcode_kbps: u32,
    /// AAC bit rate of the encoded renditions (kbit/s).
    #[serde(default = "default_audio_kbps")]
    pub audio_kbps: u32,
    /// Whether the feed's audio is carried (false ignores it).
    #[serde(default = "default_true")]
    pub audio: bool,
    /// SRT receive latency in milliseconds.
    #[serde(default = "default_srt_latency")]
    pub srt_latency_ms: u32,
    /// RTSP jitter-buffer latency in milliseconds.
    #[serde(default = "default_rtsp_latency")]
    pub rtsp_latency_ms: u32,
}

/// One rendition of `[[live]] ladder`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LadderEntry {
    pub name: String,
    pub width: Option<u32>,
    pub height: Option<u32>,
    pub video_kbps: Option<u32>,
    #[serde(default)]
    pub audio_only: bool,
}

fn default_ladder() -> Vec<LadderEntry> {
    courseway_media::live::default_ladder()
        .into_iter()
        .map(|r| {
            use courseway_media::live::RenditionKind;
            let (width, height, video_kbps) = match r.kind {
                RenditionKind::Video {
                    width,
                    height,
                    video_kbps,
                } => (Some(width), Some(height), Some(video_kbps)),
                _ => (None, None, None),
            };
            LadderEntry {
                name: r.name,
                width,
                height,
                video_kbps,
                audio_only: r.kind == RenditionKind::AudioOnly,
            }
        })
        .collect()
}

fn default_codecs() -> String {
    "auto".into()
}

fn default_transcode_kbps() -> u32 {
    courseway_media::live::DEFAULT_TRANSCODE_KBPS
}

fn default_audio_kbps() -> u32 {
    courseway_media::live::DEFAULT_AUDIO_KBPS
}

fn default_segment_seconds() -> f64 {
    2.0
}

fn default_true() -> bool {
    true
}

fn default_srt_latency() -> u32 {
    120
}

fn default_rtsp_latency() -> u32 {
    200
}

/// The receive latencies of the live inputs that have one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FeedLatency {
    pub srt_ms: u32,
    pub rtsp_ms: u32,
}

/// A live channel id in a config file.
#[derive(Debug, Clone)]
pub struct ChannelValue(pub ChannelId);

impl<'de> Deserialize<'de> for ChannelValue {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        ChannelId::new(s.as_str())
            .map(Self)
            .map_err(|e| D::Error::custom(format!("{s:?} is not a channel id: {e}")))
    }
}

/// One `[[live]]`, resolved.
#[derive(Debug, Clone)]
pub struct LiveSettings {
    pub channel: ChannelId,
    pub ingest: courseway_media::live::LiveIngestConfig,
}

/// Reads an `input` of `[[live]]`.
pub fn live_input(input: &str, latency: FeedLatency) -> anyhow::Result<courseway_media::live::LiveInput> {
    use courseway_media::live::LiveInput;
    if input == "test" {
        return Ok(LiveInput::TestPattern {
            width: 640,
            height: 360,
            fps: 25,
        });
    }
    if let Some(rest) = input.strip_prefix("udp://") {
        let addr: SocketAddr = rest
            .parse()
            .map_err(|_| anyhow::anyhow!("live.input = {input:?}: give udp://ADDRESS:PORT, e.g. udp://0.0.0.0:5004"))?;
        return Ok(LiveInput::UdpMpegTs {
            address: addr.ip(),
            port: addr.port(),
        });
    }
    if let Some(rest) = input.strip_prefix("srt://") {
        let port: u16 = rest.strip_prefix(':').and_then(|p| p.parse().ok()).ok_or_else(|| {
            anyhow::anyhow!("live.input = {input:?}: give srt://:PORT (this origin listens), e.g. srt://:7001")
        })?;
        return Ok(LiveInput::Srt {
            port,
            latency_ms: latency.srt_ms,
        });
    }
    if let Some(rest) = ["rtsp://", "rtsps://", "rtspt://"]
        .iter()
        .find_map(|scheme| input.strip_prefix(scheme))
    {
        ensure!(
            pull_url_is_usable(rest),
            "live.input = {input:?}: give rtsp://HOST[:PORT]/PATH (the camera's or encoder's stream URL), e.g. rtsp://10.0.0.20:554/stream1"
        );
        return Ok(LiveInput::Rtsp {
            url: input.to_owned(),
            latency_ms: latency.rtsp_ms,
        });
    }
    if let Some(rest) = ["rtmp://", "rtmps://"]
        .iter()
        .find_map(|scheme| input.strip_prefix(scheme))
    {
        ensure!(
            pull_url_is_usable(rest) && rest.split('/').filter(|p| !p.is_empty()).count() >= 3,
            "live.input = {input:?}: give rtmp://HOST[:PORT]/APP/STREAM (a stream on an RTMP server the encoder pushes to), e.g. rtmp://127.0.0.1/live/city"
        );
        return Ok(LiveInput::Rtmp { url: input.to_owned() });
    }
    bail!(
        "live.input = {input:?} is not understood; give \"udp://ADDRESS:PORT\", \"srt://:PORT\", \"rtsp://HOST[:PORT]/PATH\", \"rtmp://HOST[:PORT]/APP/STREAM\" or \"test\""
    )
}

/// Whether the part of a pull URL after its scheme names a host and holds no blank or quote.
fn pull_url_is_usable(rest: &str) -> bool {
    let host = rest.split('/').next().unwrap_or_default();
    let host = host.rsplit('@').next().unwrap_or_default();
    !host.is_empty() && !rest.chars().any(|c| c.is_whitespace() || c == '"')
}

fn live_settings(l: LiveSection, spool_base: &Path) -> anyhow::Result<LiveSettings> {
    ensure!(
        (0.5..=30.0).contains(&l.segment_seconds),
        "live.segment_seconds = {} is out of range; give 0.5 to 30 (default 2)",
        l.segment_seconds
    );
    use courseway_media::live::{LiveCodecs, LiveRenditionConfig, RenditionKind};
    ensure!(
        (50..=20_000).contains(&l.transcode_kbps),
        "live.transcode_kbps = {} is out of range; give 50 to 20000 (default 1500)",
        l.transcode_kbps
    );
    ensure!(
        (16..=320).contains(&l.audio_kbps),
        "live.audio_kbps = {} is out of range; give 16 to 320 (default 48)",
        l.audio_kbps
    );
    let codecs = match l.codecs.as_str() {
        "auto" => LiveCodecs::Auto {
            video_kbps: l.transcode_kbps,
        },
        "passthrough" => LiveCodecs::Passthrough,
        "transcode" => LiveCodecs::Transcode {
            video_kbps: l.transcode_kbps,
        },
        other => bail!("live.codecs = {other:?} is not understood; give \"auto\", \"passthrough\" or \"transcode\" (default \"auto\")"),
    };
    ensure!(
        !l.ladder.is_empty() && l.ladder.len() <= 8,
        "live.ladder has {} renditions; give 1 to 8",
        l.ladder.len()
    );
    let mut renditions = Vec::new();
    for r in l.ladder {
        ensure!(
            !r.name.is_empty()
                && r.name.len() <= 32
                && r.name
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'),
            "live.ladder name = {:?}: give 1 to 32 letters, digits, '-' or '_'",
            r.name
        );
        ensure!(
            !renditions.iter().any(|x: &LiveRenditionConfig| x.name == r.name),
            "live.ladder names {:?} twice; each rendition once",
            r.name
        );
        let kind = match (r.audio_only, r.width, r.height, r.video_kbps) {
            (true, None, None, None) => RenditionKind::AudioOnly,
            (false, None, None, None) => RenditionKind::Source,
            (false, Some(width), Some(height), Some(video_kbps)) => {
                ensure!(
                    (16..=7680).contains(&width) && (16..=4320).contains(&height) && width % 2 == 0 && height % 2 == 0,
                    "live.ladder {:?}: width x height = {width} x {height}; give even sizes from 16x16 to 7680x4320",
                    r.name
                );
                ensure!(
                    (50..=20_000).contains(&video_kbps),
                    "live.ladder {:?}: video_kbps = {video_kbps} is out of range; give 50 to 20000",
                    r.name
                );
                RenditionKind::Video {
                    width,
                    height,
                    video_kbps,
                }
            }
            _ => bail!(
                "live.ladder {:?}: give either nothing but the name (the source), width, height and video_kbps (a scaled rendition), or audio_only = true",
                r.name
            ),
        };
        renditions.push(LiveRenditionConfig { name: r.name, kind });
    }
    ensure!(
        renditions.iter().filter(|r| r.kind == RenditionKind::Source).count() <= 1,
        "live.ladder has more than one source rendition (an entry with only a name); give one"
    );
    let input = live_input(
        &l.input,
        FeedLatency {
            srt_ms: l.srt_latency_ms,
            rtsp_ms: l.rtsp_latency_ms,
        },
    )?;
    let mut ingest = courseway_media::live::LiveIngestConfig::new(input, spool_base.join(l.channel.0.as_str()));
    ingest.segment = Duration::from_secs_f64(l.segment_seconds);
    ingest.audio = l.audio;
    ingest.audio_kbps = l.audio_kbps;
    ingest.codecs = codecs;
    ingest.renditions = renditions;
    Ok(LiveSettings {
        channel: l.channel.0,
        ingest,
    })
}

/// `[[mirror]]`: an upstream origin (national or provincial centre) this origin follows.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MirrorSection {
    /// Names the mirror in logs, metrics and the store.
    pub name: String,
    /// This origin's credentials in the upstream deployment (`courseway keys issue --role origin`
    /// run there): node.crt, node.key, ca.crt and the upstream's root.pub.
    pub credentials: PathBuf,
    /// Only lessons of these publishing departments (empty or absent: all).
    #[serde(default)]
    pub publishers: Vec<String>,
    /// Only these categories (empty or absent: both).
    #[serde(default)]
    pub categories: Vec<CategoryValue>,
    /// Chunks fetched at once.
    #[serde(default = "default_mirror_concurrency")]
    pub concurrency: usize,
    /// Who publishes the mirrored lessons here: "automatic" (the mirror, as soon as the chunks
    /// are held) or "local" (this origin's review workflow; needs [origin.admin]).
    #[serde(default)]
    pub review: MirrorReviewValue,
    /// The upstream origin(s), in priority order.
    #[serde(default)]
    pub parent: Vec<ParentSection>,
    #[serde(default)]
    pub upstream: UpstreamSection,
}

fn default_mirror_concurrency() -> usize {
    4
}

/// `mirror.review`: "automatic" or "local".
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum MirrorReviewValue {
    #[default]
    Automatic,
    Local,
}

/// `[origin]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OriginSection {
    /// The online signing key (`online.key` from `courseway keys init`).
    pub online_key: PathBuf,
    /// How long each signed catalog stays valid; the origin re-signs well before that.
    #[serde(default = "default_catalog_validity_hours")]
    pub catalog_validity_hours: u64,
    /// Publish this many synthetic lessons at start when nothing is published yet, to try a
    /// deployment before ingest exists.
    #[serde(default)]
    pub synthetic_lessons: u32,
    /// Size of each synthetic lesson.
    #[serde(default = "default_synthetic_size")]
    pub synthetic_lesson_size: ByteSize,
    /// The admin HTTP API (uploads, review, publication); absent: no admin API.
    #[serde(default)]
    pub admin: Option<AdminSection>,
}

/// `[origin.admin]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AdminSection {
    /// TCP address of the admin API.
    pub listen: SocketAddr,
    /// The admin database and the token file.
    pub data: PathBuf,
    /// Uploads and transcoded lessons.
    pub spool: PathBuf,
    #[serde(default = "default_max_upload")]
    pub max_upload: ByteSize,
    #[serde(default = "default_max_attachment")]
    pub max_attachment: ByteSize,
    #[serde(default = "default_jobs")]
    pub jobs: usize,
    /// Requests a minute one client address may make (0: no limit).
    #[serde(default = "default_requests_per_minute")]
    pub requests_per_minute_per_ip: u32,
    /// Requests a minute one token may make (0: no limit).
    #[serde(default = "default_requests_per_minute")]
    pub requests_per_minute_per_token: u32,
    /// Requests allowed at once above those rates.
    #[serde(default = "default_request_burst")]
    pub request_burst: u32,
    /// The deployment CA's key (`ca.key`): with it the origin enrols nodes (`POST /api/enrol`);
    /// absent: no enrolment.
    #[serde(default)]
    pub enrol_ca_key: Option<PathBuf>,
    /// Days a certificate issued by enrolment is valid.
    #[serde(default = "default_enrol_days")]
    pub enrol_certificate_days: u64,
    /// Seconds an upload's body may send nothing before the upload is taken as cut.
    #[serde(default = "default_upload_idle_seconds")]
    pub upload_idle_seconds: u64,
}

fn default_upload_idle_seconds() -> u64 {
    courseway_origin::admin::spool::DEFAULT_BODY_IDLE.as_secs()
}

fn default_requests_per_minute() -> u32 {
    600
}

fn default_request_burst() -> u32 {
    120
}

fn default_enrol_days() -> u64 {
    crate::keys::DEFAULT_NODE_DAYS
}

fn default_max_upload() -> ByteSize {
    ByteSize::gib(16)
}

fn default_max_attachment() -> ByteSize {
    ByteSize::mib(256)
}

fn default_jobs() -> usize {
    1
}

impl AdminSection {
    fn to_config(&self, base: &Path, credentials: &Path) -> anyhow::Result<courseway_origin::admin::AdminConfig> {
        use courseway_origin::admin::ratelimit::{RateLimits, RequestLimit};
        ensure!(
            self.jobs >= 1,
            "origin.admin.jobs = 0 would never transcode; give at least 1"
        );
        ensure!(
            self.request_burst >= 1,
            "origin.admin.request_burst = 0 would refuse every request; give at least 1 (or set the requests_per_minute_* keys to 0 for no limit)"
        );
        ensure!(
            self.enrol_certificate_days >= 1,
            "origin.admin.enrol_certificate_days must be at least 1"
        );
        ensure!(
            (1..=3600).contains(&self.upload_idle_seconds),
            "origin.admin.upload_idle_seconds = {} is out of range; give 1 to 3600 (default 60)",
            self.upload_idle_seconds
        );
        let mut c =
            courseway_origin::admin::AdminConfig::new(self.listen, base.join(&self.data), base.join(&self.spool));
        c.upload_idle = Duration::from_secs(self.upload_idle_seconds);
        c.max_upload = self.max_upload.as_u64();
        c.max_attachment = self.max_attachment.as_u64();
        c.jobs = self.jobs;
        c.rate_limits = RateLimits {
            per_ip: RequestLimit {
                per_minute: self.requests_per_minute_per_ip,
                burst: self.request_burst,
            },
            per_token: RequestLimit {
                per_minute: self.requests_per_minute_per_token,
                burst: self.request_burst,
            },
        };
        c.enrol = self
            .enrol_ca_key
            .as_ref()
            .map(|key| courseway_origin::admin::enrol::EnrolConfig {
                ca_cert: credentials.join(crate::keys::CA_CERT),
                ca_key: base.join(key),
                root_pub: credentials.join(crate::keys::ROOT_PUB),
                certificate_lifetime: Duration::from_secs(self.enrol_certificate_days * 86_400),
            });
        Ok(c)
    }
}

fn default_catalog_validity_hours() -> u64 {
    7 * 24
}

fn default_synthetic_size() -> ByteSize {
    ByteSize::mb(8)
}

/// `relay.toml`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RelayFile {
    #[serde(default)]
    pub metrics: Option<MetricsSection>,
    pub node: ServingNodeSection,
    pub store: StoreSection,
    #[serde(default)]
    pub transport: Option<TransportSection>,
    #[serde(default)]
    pub parent: Vec<ParentSection>,
    #[serde(default)]
    pub upstream: UpstreamSection,
    #[serde(default)]
    pub relay: RelaySection,
}

/// `[relay]`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RelaySection {
    /// "all", "scheduled" or "none": which published lessons to fetch before a child asks.
    pub prefetch: Option<Prefetch>,
    /// With "scheduled": how many hours ahead a showing's lesson is fetched.
    pub schedule_horizon_hours: Option<u64>,
    pub wait_timeout_secs: Option<u64>,
    pub prefetch_concurrency: Option<usize>,
    /// Live segments kept (pinned) per channel and rendition for children that join late.
    pub live_window: Option<usize>,
}

/// A prefetch policy's name in a config file.
#[derive(Debug, Clone, Copy)]
pub struct Prefetch(pub PrefetchPolicy);

impl<'de> Deserialize<'de> for Prefetch {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        match s.as_str() {
            "all" => Ok(Self(PrefetchPolicy::All)),
            "none" => Ok(Self(PrefetchPolicy::None)),
            "scheduled" => Ok(Self(PrefetchPolicy::ScheduledOnly)),
            _ => Err(D::Error::custom(format!(
                "unknown prefetch policy {s:?}; use \"all\", \"scheduled\" or \"none\""
            ))),
        }
    }
}

/// `[node]` of a station.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StationNodeSection {
    /// Directory written by `courseway keys issue`.
    pub credentials: PathBuf,
    /// Local UDP address for connections to parents.
    #[serde(default = "any_address")]
    pub bind: SocketAddr,
}

fn any_address() -> SocketAddr {
    SocketAddr::from(([0, 0, 0, 0], 0))
}

/// `station.toml`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StationFile {
    #[serde(default)]
    pub metrics: Option<MetricsSection>,
    pub node: StationNodeSection,
    pub store: StoreSection,
    #[serde(default)]
    pub transport: Option<TransportSection>,
    #[serde(default)]
    pub parent: Vec<ParentSection>,
    #[serde(default)]
    pub upstream: UpstreamSection,
    #[serde(default)]
    pub station: StationSection,
}

/// `[station]`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StationSection {
    /// Download cap shared by all transfers, e.g. "2 Mbit/s" (absent: no cap).
    pub rate_limit: Option<Rate>,
    /// Chunks fetched at once.
    pub concurrency: Option<usize>,
    /// Only these categories (absent or empty: all).
    #[serde(default)]
    pub categories: Vec<CategoryValue>,
    /// Only lessons with one of these tags (absent or empty: any).
    #[serde(default)]
    pub tags: Vec<String>,
    /// The district (county) this station is in, for schedule targets.
    pub district: Option<AreaValue>,
    /// The town this station is in, for schedule targets.
    pub town: Option<AreaValue>,
    /// Named groups this station belongs to, for schedule targets.
    #[serde(default)]
    pub groups: Vec<AreaValue>,
    /// Minutes before a showing its lesson must be ready (else it is reported at risk).
    pub ready_margin_minutes: Option<u64>,
    #[serde(default)]
    pub bandwidth: Option<BandwidthSection>,
    #[serde(default)]
    pub retention: Option<RetentionSection>,
    pub reports: Option<ReportsSection>,
    /// `[station.lan]`: the TV page and HLS on the village LAN (absent: not served).
    #[serde(default)]
    pub lan: Option<LanSection>,
    /// Live channels to follow, each served at `/live/<channel>/<rendition>.m3u8` on the LAN.
    #[serde(default)]
    pub live_channels: Vec<ChannelValue>,
    /// Live segments kept per channel and rendition: the live playlist's sliding window.
    pub live_window: Option<usize>,
}

/// `[station.retention]`: which lessons the store holds on to.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RetentionSection {
    /// Lessons shown here within this many days ahead are pinned (never evicted).
    pub pin_horizon_days: Option<u64>,
    /// Hours a lesson stays after its showing; then it is let go unless shown again.
    pub keep_after_showing_hours: Option<u64>,
}

fn retention_policy(section: Option<RetentionSection>) -> anyhow::Result<RetentionPolicy> {
    let mut policy = RetentionPolicy::default();
    let Some(r) = section else {
        return Ok(policy);
    };
    if let Some(days) = r.pin_horizon_days {
        ensure!(
            (1..=366).contains(&days),
            "station.retention.pin_horizon_days = {days}: give 1 to 366 days (lessons shown within that many days are pinned)"
        );
        policy.pin_horizon_secs = days * 86_400;
    }
    if let Some(hours) = r.keep_after_showing_hours {
        ensure!(
            hours <= 24 * 366,
            "station.retention.keep_after_showing_hours = {hours}: give at most {} hours",
            24 * 366
        );
        policy.keep_after_showing_secs = hours * 3600;
    }
    Ok(policy)
}

/// `[station.reports]`: viewing reports and heartbeats.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReportsSection {
    /// Viewing records per report.
    pub batch: Option<usize>,
    /// Wait before sending again after a failed delivery.
    pub retry_after_secs: Option<u64>,
    /// Heartbeat period when nothing changes.
    pub heartbeat_secs: Option<u64>,
}

fn reports_config(section: Option<ReportsSection>) -> anyhow::Result<ReportsConfig> {
    let mut c = ReportsConfig::default();
    let Some(r) = section else {
        return Ok(c);
    };
    if let Some(b) = r.batch {
        ensure!(
            (1..=courseway_proto::MAX_VIEWINGS).contains(&b),
            "station.reports.batch = {b} is out of range; give 1 to {}",
            courseway_proto::MAX_VIEWINGS
        );
        c.batch = b;
    }
    if let Some(s) = r.retry_after_secs {
        ensure!(s >= 1, "station.reports.retry_after_secs must be at least 1");
        c.retry_after = Duration::from_secs(s);
    }
    if let Some(s) = r.heartbeat_secs {
        ensure!(
            s >= 5,
            "station.reports.heartbeat_secs = {s} is too often for a shared village line; give at least 5"
        );
        c.heartbeat = Duration::from_secs(s);
    }
    Ok(c)
}

/// `[station.lan]`: the LAN server (HLS, the TV page, viewing capture).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LanSection {
    /// TCP address of the page and HLS.
    #[serde(default = "lan_listen")]
    pub listen: SocketAddr,
    /// Seconds without a segment request after which a playback is over and recorded.
    pub playback_idle_seconds: Option<u64>,
    /// 4 to 12 digits the attendance form asks for (absent: no PIN).
    pub attendance_pin: Option<String>,
}

fn lan_listen() -> SocketAddr {
    SocketAddr::from(([0, 0, 0, 0], 8080))
}

/// The LAN server's settings, resolved (the viewing sink is the caller's).
#[derive(Clone, PartialEq, Eq)]
pub struct LanSettings {
    pub listen: SocketAddr,
    pub idle_after: Duration,
    pub attendance_pin: Option<String>,
}

impl std::fmt::Debug for LanSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LanSettings")
            .field("listen", &self.listen)
            .field("idle_after", &self.idle_after)
            .field("attendance_pin", &self.attendance_pin.as_ref().map(|_| "set"))
            .finish()
    }
}

/// `[station.bandwidth]`: how much of the village line the station may use, and when.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BandwidthSection {
    /// Percent of `rate_limit` outside every window.
    pub default_share_percent: Option<u8>,
    /// Bytes per local day, e.g. "5 GB" (absent: no quota).
    pub daily_quota: Option<ByteSize>,
    /// Local time's offset from UTC in hours, e.g. 8 for China.
    pub utc_offset_hours: Option<i8>,
    /// `[[station.bandwidth.window]]`: the first window containing a time of day gives its share.
    #[serde(default)]
    pub window: Vec<WindowSection>,
}

/// `[[station.bandwidth.window]]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WindowSection {
    /// "HH:MM" local time.
    pub from: TimeValue,
    /// "HH:MM" local time; before `from` means the window runs past midnight.
    pub until: TimeValue,
    /// Percent of `rate_limit` in this window.
    pub share_percent: u8,
}

/// A time of day in a config file.
#[derive(Debug, Clone, Copy)]
pub struct TimeValue(pub TimeOfDay);

impl<'de> Deserialize<'de> for TimeValue {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d)?.parse().map(Self).map_err(D::Error::custom)
    }
}

/// A district, town or group name in a config file.
#[derive(Debug, Clone)]
pub struct AreaValue(pub AreaName);

impl<'de> Deserialize<'de> for AreaValue {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        AreaName::new(s).map(Self).map_err(D::Error::custom)
    }
}

fn bandwidth_policy(section: Option<BandwidthSection>, cap: Option<&RateLimit>) -> anyhow::Result<BandwidthPolicy> {
    let Some(b) = section else {
        return Ok(BandwidthPolicy::default());
    };
    let mut policy = BandwidthPolicy::default();
    let percent = |key: &str, v: u8| -> anyhow::Result<u8> {
        ensure!(v <= 100, "{key} = {v} is not a percentage; give 0 to 100");
        Ok(v)
    };
    if let Some(p) = b.default_share_percent {
        policy.default_share_percent = percent("station.bandwidth.default_share_percent", p)?;
    }
    policy.daily_quota = b.daily_quota.map(|q| q.as_u64());
    if let Some(h) = b.utc_offset_hours {
        ensure!(
            (-12..=14).contains(&h),
            "station.bandwidth.utc_offset_hours = {h} is not a time zone; give -12 to 14 (8 for China)"
        );
        policy.utc_offset_secs = i32::from(h) * 3600;
    }
    for w in b.window {
        policy.windows.push(BandwidthWindow {
            start: w.from.0,
            end: w.until.0,
            share_percent: percent("station.bandwidth.window.share_percent", w.share_percent)?,
        });
    }
    ensure!(
        cap.is_some() || (policy.windows.is_empty() && policy.default_share_percent == 100),
        "[station.bandwidth] shares are percentages of the line: set station.rate_limit to the line's rate"
    );
    Ok(policy)
}

/// Reads and parses a config file.
fn read<T: serde::de::DeserializeOwned>(path: &Path, role: &str) -> anyhow::Result<(T, PathBuf)> {
    let text = std::fs::read_to_string(path).with_context(|| {
        format!(
            "reading the {role} config {} (see config/{role}.toml for an example)",
            path.display()
        )
    })?;
    let parsed =
        toml::from_str(&text).map_err(|e| anyhow::anyhow!("{} is not a valid {role} config: {e}", path.display()))?;
    let base = path.parent().map(Path::to_path_buf).unwrap_or_default();
    Ok((parsed, base))
}

/// An origin's config, resolved.
#[derive(Debug)]
pub struct OriginSettings {
    /// Where `/metrics` listens (absent: no metrics endpoint).
    pub metrics: Option<SocketAddr>,
    pub credentials: PathBuf,
    pub listen: SocketAddr,
    pub store: StoreConfig,
    pub transport: TransportConfig,
    pub online_key: PathBuf,
    pub catalog_validity: Duration,
    pub synthetic_lessons: u32,
    pub synthetic_lesson_bytes: u64,
    pub mirrors: Vec<MirrorSettings>,
    /// Live feeds to ingest and broadcast.
    pub live: Vec<LiveSettings>,
    /// The admin API, if configured.
    pub admin: Option<courseway_origin::admin::AdminConfig>,
}

/// One `[[mirror]]`, resolved. The upstream's root key comes from its credentials directory.
#[derive(Debug)]
pub struct MirrorSettings {
    pub name: String,
    pub credentials: PathBuf,
    pub selection: MirrorSelection,
    pub concurrency: usize,
    /// Whether this origin's own review workflow publishes the mirrored lessons.
    pub review: MirrorReviewValue,
    pub upstream: UpstreamConfig,
}

fn mirror_settings(m: MirrorSection, base: &Path, names: &mut Vec<String>) -> anyhow::Result<MirrorSettings> {
    ensure!(
        !m.name.is_empty()
            && m.name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_'),
        "mirror.name = {:?} must be letters, digits, '-' or '_' (it names the mirror in the store and metrics)",
        m.name
    );
    ensure!(
        !names.contains(&m.name),
        "two [[mirror]] sections are named {:?}; give each its own name",
        m.name
    );
    names.push(m.name.clone());
    ensure!(m.concurrency > 0, "mirror.concurrency must be at least 1");
    let upstream = upstream_config(&m.parent, &m.upstream)
        .with_context(|| format!("in [[mirror]] {:?}: add [[mirror.parent]] with name and addr", m.name))?;
    Ok(MirrorSettings {
        name: m.name,
        credentials: base.join(m.credentials),
        selection: MirrorSelection {
            publishers: m.publishers,
            categories: m.categories.into_iter().map(|c| c.0).collect(),
        },
        concurrency: m.concurrency,
        review: m.review,
        upstream,
    })
}

/// Reads `origin.toml`.
pub fn origin(path: &Path) -> anyhow::Result<OriginSettings> {
    let (f, base): (OriginFile, _) = read(path, "origin")?;
    ensure!(
        f.origin.catalog_validity_hours >= 2,
        "origin.catalog_validity_hours = {} is too short: stations would refuse the catalog between two re-signings; give at least 2",
        f.origin.catalog_validity_hours
    );
    let store = f.store.to_config(&base)?;
    let spool_base = store.path.with_extension("live-spool");
    let mut live = Vec::new();
    for l in f.live {
        let channel = l.channel.0.clone();
        ensure!(
            !live.iter().any(|s: &LiveSettings| s.channel == channel),
            "[[live]] channel {channel} is given twice; one feed per channel"
        );
        live.push(live_settings(l, &spool_base)?);
    }
    Ok(OriginSettings {
        metrics: f.metrics.map(|m| m.listen),
        credentials: base.join(&f.node.credentials),
        listen: f.node.listen,
        store,
        live,
        transport: f
            .transport
            .map(|t| t.to_config(TransportConfig::default()))
            .unwrap_or_default(),
        online_key: base.join(&f.origin.online_key),
        catalog_validity: Duration::from_secs(f.origin.catalog_validity_hours * 3600),
        synthetic_lessons: f.origin.synthetic_lessons,
        synthetic_lesson_bytes: f.origin.synthetic_lesson_size.as_u64(),
        mirrors: {
            let mut names = Vec::new();
            f.mirror
                .into_iter()
                .map(|m| mirror_settings(m, &base, &mut names))
                .collect::<anyhow::Result<_>>()?
        },
        admin: f
            .origin
            .admin
            .as_ref()
            .map(|a| a.to_config(&base, &base.join(&f.node.credentials)))
            .transpose()?,
    })
    .and_then(|settings: OriginSettings| {
        if let Some(m) = settings
            .mirrors
            .iter()
            .find(|m| m.review == MirrorReviewValue::Local && settings.admin.is_none())
        {
            bail!(
                "[[mirror]] {:?} has review = \"local\", but this origin has no [origin.admin] to review in; add [origin.admin] or set review = \"automatic\"",
                m.name
            );
        }
        Ok(settings)
    })
}

/// A relay's config, resolved.
#[derive(Debug)]
pub struct RelaySettings {
    /// Where `/metrics` listens (absent: no metrics endpoint).
    pub metrics: Option<SocketAddr>,
    pub credentials: PathBuf,
    pub listen: SocketAddr,
    pub store: StoreConfig,
    pub transport: TransportConfig,
    pub upstream: UpstreamConfig,
    pub prefetch: PrefetchPolicy,
    pub wait_timeout: Option<Duration>,
    pub prefetch_concurrency: Option<usize>,
    pub schedule_horizon: Option<Duration>,
    pub live_window: Option<usize>,
}

/// Reads `relay.toml`.
pub fn relay(path: &Path) -> anyhow::Result<RelaySettings> {
    let (f, base): (RelayFile, _) = read(path, "relay")?;
    if let Some(0) = f.relay.prefetch_concurrency {
        anyhow::bail!("relay.prefetch_concurrency must be at least 1");
    }
    if let Some(n) = f.relay.live_window {
        ensure!(
            (1..=1000).contains(&n),
            "relay.live_window = {n} is out of range; give 1 to 1000 segments (default 6)"
        );
    }
    Ok(RelaySettings {
        metrics: f.metrics.map(|m| m.listen),
        credentials: base.join(&f.node.credentials),
        listen: f.node.listen,
        store: f.store.to_config(&base)?,
        transport: f
            .transport
            .map(|t| t.to_config(TransportConfig::default()))
            .unwrap_or_default(),
        upstream: upstream_config(&f.parent, &f.upstream)?,
        prefetch: f.relay.prefetch.map(|p| p.0).unwrap_or(PrefetchPolicy::All),
        wait_timeout: f.relay.wait_timeout_secs.map(Duration::from_secs),
        prefetch_concurrency: f.relay.prefetch_concurrency,
        schedule_horizon: f.relay.schedule_horizon_hours.map(|h| Duration::from_secs(h * 3600)),
        live_window: f.relay.live_window,
    })
}

/// A station's config, resolved.
#[derive(Debug)]
pub struct StationSettings {
    /// Where `/metrics` listens (absent: no metrics endpoint).
    pub metrics: Option<SocketAddr>,
    pub credentials: PathBuf,
    pub bind: SocketAddr,
    pub store: StoreConfig,
    pub transport: TransportConfig,
    pub upstream: UpstreamConfig,
    pub rate_cap: Option<RateLimit>,
    pub concurrency: Option<usize>,
    pub filter: LessonFilter,
    pub place: Place,
    pub bandwidth: BandwidthPolicy,
    pub ready_margin: Option<Duration>,
    pub retention: RetentionPolicy,
    pub reports: ReportsConfig,
    /// `[station.lan]` (absent: no LAN server).
    pub lan: Option<LanSettings>,
    pub live_channels: Vec<ChannelId>,
    pub live_window: Option<usize>,
}

/// Reads `station.toml`.
pub fn station(path: &Path) -> anyhow::Result<StationSettings> {
    let (f, base): (StationFile, _) = read(path, "station")?;
    if let Some(0) = f.station.concurrency {
        anyhow::bail!("station.concurrency must be at least 1");
    }
    let rate_cap = f
        .station
        .rate_limit
        .map(|r| RateLimit::from_bits_per_sec(r.bits_per_sec, 100))
        .transpose()
        .with_context(|| "station.rate_limit")?;
    let bandwidth = bandwidth_policy(f.station.bandwidth, rate_cap.as_ref())?;
    let reports = reports_config(f.station.reports)?;
    if let Some(n) = f.station.live_window {
        ensure!(
            (2..=1000).contains(&n),
            "station.live_window = {n} is out of range; give 2 to 1000 segments (default 6)"
        );
    }
    let lan = match f.station.lan {
        Some(l) => {
            let idle = l
                .playback_idle_seconds
                .unwrap_or(courseway_station::lan::DEFAULT_IDLE_AFTER.as_secs());
            ensure!(
                (1..=86_400).contains(&idle),
                "station.lan.playback_idle_seconds = {idle} is out of range; give 1 to 86400 (default 60)"
            );
            if let Some(pin) = &l.attendance_pin {
                ensure!(
                    (4..=12).contains(&pin.len()) && pin.bytes().all(|b| b.is_ascii_digit()),
                    "station.lan.attendance_pin must be 4 to 12 digits, e.g. \"2468\" (or leave it out for no PIN)"
                );
            }
            Some(LanSettings {
                listen: l.listen,
                idle_after: Duration::from_secs(idle),
                attendance_pin: l.attendance_pin,
            })
        }
        None => None,
    };
    Ok(StationSettings {
        metrics: f.metrics.map(|m| m.listen),
        credentials: base.join(&f.node.credentials),
        bind: f.node.bind,
        store: f.store.to_config(&base)?,
        transport: f
            .transport
            .map(|t| t.to_config(TransportConfig::default()))
            .unwrap_or_default(),
        upstream: upstream_config(&f.parent, &f.upstream)?,
        rate_cap,
        concurrency: f.station.concurrency,
        filter: LessonFilter {
            categories: f.station.categories.iter().map(|c| c.0).collect(),
            tags: f.station.tags,
        },
        place: Place {
            station: None,
            district: f.station.district.map(|a| a.0),
            town: f.station.town.map(|a| a.0),
            groups: f.station.groups.into_iter().map(|a| a.0).collect(),
        },
        bandwidth,
        ready_margin: f.station.ready_margin_minutes.map(|m| Duration::from_secs(m * 60)),
        retention: retention_policy(f.station.retention)?,
        reports,
        lan,
        live_channels: f.station.live_channels.into_iter().map(|c| c.0).collect(),
        live_window: f.station.live_window,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
        let p = dir.join(name);
        std::fs::write(&p, text).unwrap();
        p
    }

    #[test]
    fn live_inputs_parse_and_a_bad_one_says_what_to_give() {
        use courseway_media::live::LiveInput;
        let latency = FeedLatency {
            srt_ms: 120,
            rtsp_ms: 250,
        };
        assert_eq!(
            live_input("rtsp://admin:pw@10.0.0.20:554/stream1", latency).unwrap(),
            LiveInput::Rtsp {
                url: "rtsp://admin:pw@10.0.0.20:554/stream1".into(),
                latency_ms: 250
            }
        );
        assert!(matches!(
            live_input("rtspt://cam/live", latency).unwrap(),
            LiveInput::Rtsp { .. }
        ));
        assert_eq!(
            live_input("srt://:7001", latency).unwrap(),
            LiveInput::Srt {
                port: 7001,
                latency_ms: 120
            }
        );
        for bad in ["rtsp://", "rtsp:///path", "rtsp://cam/a b"] {
            let e = live_input(bad, latency).unwrap_err().to_string();
            assert!(e.contains("rtsp://HOST[:PORT]/PATH"), "{bad}: {e}");
        }
        assert_eq!(
            live_input("rtmp://127.0.0.1:1935/live/city", latency).unwrap(),
            LiveInput::Rtmp {
                url: "rtmp://127.0.0.1:1935/live/city".into()
            }
        );
        for bad in ["rtmp://host/live", "rtmp:///live/city", "rtmp://h/live/\"x"] {
            let e = live_input(bad, latency).unwrap_err().to_string();
            assert!(e.contains("rtmp://HOST[:PORT]/APP/STREAM"), "{bad}: {e}");
        }
        let e = live_input("http://cam/live", latency).unwrap_err().to_string();
        assert!(e.contains("is not understood") && e.contains("rtsp://"), "{e}");
    }

    #[test]
    fn live_ladders_parse_with_defaults_and_errors_name_the_key() {
        use courseway_media::live::{LiveCodecs, RenditionKind};
        let parse = |text: &str| {
            let section: LiveSection = toml::from_str(text).unwrap();
            live_settings(section, Path::new("/spool"))
        };
        let base = "channel = \"city-live\"\ninput = \"udp://0.0.0.0:5004\"\n";
        let l = parse(base).unwrap();
        assert_eq!(l.ingest.renditions, courseway_media::live::default_ladder());
        assert_eq!(l.ingest.codecs, LiveCodecs::Auto { video_kbps: 1500 });
        assert_eq!(l.ingest.audio_kbps, 48);
        let l = parse(&format!(
            "{base}codecs = \"transcode\"\ntranscode_kbps = 900\nladder = [{{ name = \"hd\" }}, {{ name = \"sd\", width = 640, height = 360, video_kbps = 300 }}, {{ name = \"radio\", audio_only = true }}]\n"
        ))
        .unwrap();
        assert_eq!(l.ingest.codecs, LiveCodecs::Transcode { video_kbps: 900 });
        assert_eq!(l.ingest.renditions[0].kind, RenditionKind::Source);
        assert_eq!(
            l.ingest.renditions[1].kind,
            RenditionKind::Video {
                width: 640,
                height: 360,
                video_kbps: 300
            }
        );
        assert_eq!(l.ingest.renditions[2].kind, RenditionKind::AudioOnly);
        for (extra, key) in [
            ("codecs = \"copy\"\n", "live.codecs"),
            ("ladder = []\n", "live.ladder"),
            (
                "ladder = [{ name = \"a\" }, { name = \"a\", audio_only = true }]\n",
                "twice",
            ),
            (
                "ladder = [{ name = \"sd\", width = 640 }]\n",
                "width, height and video_kbps",
            ),
            (
                "ladder = [{ name = \"sd\", width = 641, height = 360, video_kbps = 300 }]\n",
                "even sizes",
            ),
            ("audio_kbps = 1000\n", "live.audio_kbps"),
        ] {
            let e = parse(&format!("{base}{extra}")).unwrap_err().to_string();
            assert!(e.contains(key), "{extra}: {e}");
        }
    }

    #[test]
    fn the_example_configs_parse() {
        let examples = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../config");
        let o = origin(&examples.join("origin.toml")).unwrap();
        let admin = o.admin.as_ref().expect("the example documents [origin.admin]");
        assert_eq!(admin.max_upload, 16 << 30);
        assert_eq!(admin.jobs, 1);
        assert!(o.store.path.is_absolute() || o.store.path.starts_with(&examples));
        let r = relay(&examples.join("relay.toml")).unwrap();
        assert!(!r.upstream.parents.is_empty());
        let s = station(&examples.join("station.toml")).unwrap();
        assert_eq!(s.rate_cap.map(|c| c.bytes_per_sec()), Some(250_000));
        assert_eq!(
            s.reports,
            ReportsConfig::default(),
            "the example documents the defaults"
        );
        assert_eq!(
            s.lan,
            Some(LanSettings {
                listen: "0.0.0.0:8080".parse().unwrap(),
                idle_after: Duration::from_secs(60),
                attendance_pin: None,
            })
        );
    }

    #[test]
    fn rates_parse_in_the_usual_spellings() {
        for (text, bits) in [
            ("2 Mbit/s", 2_000_000),
            ("512 kbit/s", 512_000),
            ("1.5Mbit/s", 1_500_000),
            ("10 mbps", 10_000_000),
            ("1 Gbit/s", 1_000_000_000),
        ] {
            assert_eq!(text.parse::<Rate>().unwrap().bits_per_sec, bits, "{text}");
        }
        for bad in ["fast", "2 MB/s", "-1 Mbit/s", "1 bit/s", ""] {
            assert!(bad.parse::<Rate>().is_err(), "{bad}");
        }
    }

    #[test]
    fn errors_name_the_key_and_the_problem() {
        let dir = tempfile::tempdir().unwrap();
        let base = "[node]\ncredentials = \"keys\"\n[store]\npath = \"s\"\nbudget = \"1 GiB\"\n[[parent]]\nname = \"city-01\"\naddr = \"127.0.0.1:7400\"\n";
        let cases = [
            (format!("{base}[station]\nrate_limit = \"fast\"\n"), "rate_limit"),
            (format!("{base}[station]\ncategories = [\"sport\"]\n"), "categories"),
            (format!("{base}[station]\nrate_limt = \"2 Mbit/s\"\n"), "rate_limt"),
            (format!("{base}[station.lan]\nlisten = \"port 80\"\n"), "listen"),
            (format!("{base}[station.lan]\nlisen = \"0.0.0.0:80\"\n"), "lisen"),
            (
                format!("{base}[station.lan]\nplayback_idle_seconds = 0\n"),
                "station.lan.playback_idle_seconds",
            ),
            (base.replace("127.0.0.1:7400", "nowhere"), "addr"),
            (base.replace("city-01", "City 01!"), "name"),
            (base.replace("1 GiB", "1 KiB"), "store.budget"),
            (
                base.replace("[[parent]]\nname = \"city-01\"\naddr = \"127.0.0.1:7400\"\n", ""),
                "[[parent]]",
            ),
        ];
        for (text, key) in cases {
            let path = write(dir.path(), "station.toml", &text);
            let err = format!("{:#}", station(&path).unwrap_err());
            assert!(err.contains(key), "error for {key} does not name it: {err}");
        }
    }

    #[test]
    fn bandwidth_windows_and_place_are_read_and_checked() {
        let dir = tempfile::tempdir().unwrap();
        let base = "[node]\ncredentials = \"keys\"\n[store]\npath = \"s\"\nbudget = \"1 GiB\"\n[[parent]]\nname = \"d\"\naddr = \"127.0.0.1:7400\"\n";
        let good = format!(
            "{base}[station]\nrate_limit = \"4 Mbit/s\"\ntown = \"shiqiao\"\ngroups = [\"coops\"]\nready_margin_minutes = 45\n\
             [station.retention]\npin_horizon_days = 3\nkeep_after_showing_hours = 12\n\
             [station.bandwidth]\ndefault_share_percent = 30\ndaily_quota = \"5 GB\"\n\
             [[station.bandwidth.window]]\nfrom = \"22:00\"\nuntil = \"06:00\"\nshare_percent = 100\n"
        );
        let s = station(&write(dir.path(), "station.toml", &good)).unwrap();
        assert_eq!(s.bandwidth.default_share_percent, 30);
        assert_eq!(s.bandwidth.daily_quota, Some(5_000_000_000));
        assert_eq!(s.bandwidth.windows.len(), 1);
        assert_eq!(s.place.town.as_ref().map(|t| t.as_str()), Some("shiqiao"));
        assert_eq!(s.ready_margin, Some(Duration::from_secs(45 * 60)));
        assert_eq!(s.retention.pin_horizon_secs, 3 * 86_400);
        assert_eq!(s.retention.keep_after_showing_secs, 12 * 3600);
        assert_eq!(s.lan, None, "no [station.lan]: no LAN server");
        let lan = station(&write(
            dir.path(),
            "station.toml",
            &format!("{good}[station.lan]\nplayback_idle_seconds = 90\nattendance_pin = \"2468\"\n"),
        ))
        .unwrap()
        .lan
        .unwrap();
        assert_eq!(lan.listen, "0.0.0.0:8080".parse().unwrap());
        assert_eq!(lan.idle_after, Duration::from_secs(90));
        assert_eq!(lan.attendance_pin.as_deref(), Some("2468"));
        assert!(!format!("{lan:?}").contains("2468"), "the PIN stays out of logs");
        for pin in ["\"12\"", "\"12a4\"", "2468"] {
            let e = station(&write(
                dir.path(),
                "station.toml",
                &format!("{good}[station.lan]\nattendance_pin = {pin}\n"),
            ))
            .unwrap_err();
            assert!(format!("{e:#}").contains("attendance_pin"), "{pin}: {e:#}");
        }
        for (text, key) in [
            (
                good.replace("share_percent = 100", "share_percent = 130"),
                "share_percent",
            ),
            (good.replace("\"06:00\"", "\"6 am\""), "until"),
            (
                good.replace("pin_horizon_days = 3", "pin_horizon_days = 0"),
                "pin_horizon_days",
            ),
            (
                good.replace("keep_after_showing_hours = 12", "keep_after_hours = 12"),
                "keep_after_hours",
            ),
            (good.replace("rate_limit = \"4 Mbit/s\"\n", ""), "rate_limit"),
            (format!("{good}[station.reports]\nbatch = 0\n"), "station.reports.batch"),
            (
                format!("{good}[station.reports]\nheartbeat_secs = 1\n"),
                "station.reports.heartbeat_secs",
            ),
            (format!("{good}[station.reports]\nbatchsize = 5\n"), "batchsize"),
        ] {
            let err = format!("{:#}", station(&write(dir.path(), "station.toml", &text)).unwrap_err());
            assert!(err.contains(key), "error for {key} does not name it: {err}");
        }
    }

    #[test]
    fn mirrors_are_read_and_checked() {
        let dir = tempfile::tempdir().unwrap();
        let base =
            "[node]\ncredentials = \"keys\"\nlisten = \"127.0.0.1:7400\"\n[store]\npath = \"s\"\nbudget = \"1 GiB\"\n\
                    [origin]\nonline_key = \"online.key\"\n";
        let good = format!(
            "{base}[[mirror]]\nname = \"province\"\ncredentials = \"upstream\"\npublishers = [\"health\"]\n\
             categories = [\"必修\"]\n[[mirror.parent]]\nname = \"gd-origin\"\naddr = \"127.0.0.1:7500\"\n"
        );
        let o = origin(&write(dir.path(), "origin.toml", &good)).unwrap();
        assert_eq!(o.mirrors.len(), 1);
        assert_eq!(o.mirrors[0].review, MirrorReviewValue::Automatic);
        let m = &o.mirrors[0];
        assert_eq!(m.credentials, dir.path().join("upstream"));
        assert_eq!(m.selection.publishers, vec!["health".to_owned()]);
        assert_eq!(m.selection.categories, vec![Category::Required]);
        assert_eq!(m.upstream.parents[0].name.as_str(), "gd-origin");
        let twice = format!("{good}{}", &good[base.len()..]);
        for (text, key) in [
            (good.replace("\"province\"", "\"pro vince\""), "mirror.name"),
            (good.replace("\"必修\"", "\"sport\""), "categories"),
            (
                good.replace(
                    "[[mirror.parent]]\nname = \"gd-origin\"\naddr = \"127.0.0.1:7500\"\n",
                    "",
                ),
                "[[mirror.parent]]",
            ),
            (twice, "province"),
            // Review by this origin needs its admin API.
            (
                good.replace(
                    "categories = [\"必修\"]\n",
                    "categories = [\"必修\"]\nreview = \"local\"\n",
                ),
                "[origin.admin]",
            ),
            (
                good.replace(
                    "categories = [\"必修\"]\n",
                    "categories = [\"必修\"]\nreview = \"later\"\n",
                ),
                "review",
            ),
        ] {
            let err = format!("{:#}", origin(&write(dir.path(), "origin.toml", &text)).unwrap_err());
            assert!(err.contains(key), "error for {key} does not name it: {err}");
        }
    }

    #[test]
    fn relative_paths_are_relative_to_the_config_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = write(
            dir.path(),
            "relay.toml",
            "[node]\ncredentials = \"keys\"\nlisten = \"127.0.0.1:0\"\n[store]\npath = \"store\"\nbudget = \"1 GiB\"\n[[parent]]\nname = \"origin\"\naddr = \"127.0.0.1:7400\"\n",
        );
        let r = relay(&path).unwrap();
        assert_eq!(r.credentials, dir.path().join("keys"));
        assert_eq!(r.store.path, dir.path().join("store"));
        assert_eq!(r.prefetch, PrefetchPolicy::All);
    }
}
