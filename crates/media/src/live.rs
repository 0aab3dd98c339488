//! Live ingest: a GStreamer pipeline takes a live feed (MPEG-TS over UDP, an SRT listener, an
//! RTSP pull from a camera or encoder, an RTMP pull from a media server, or a test pattern) and cuts it into a ladder of renditions, each a run of MPEG-TS segments of
//! about [`LiveIngestConfig::segment`] that start on key frames, handed to a callback as they
//! close.
//!
//! ```text
//!                       ┌ h264parse ─ tee ─────────────────────────────── splitmuxsink source
//!   udpsrc / srtsrc ─ tsdemux          └ decodebin ─ I420 ─ tee rawv ┐    (passthrough: H.264
//!                       └ aacparse ─ tee ─────────────────────────────── + AAC as sent)
//!                                      └ decodebin ─ tee rawa ───────┤
//!                    (transcode: decodebin ─ I420 ─ tee rawv ─ x264enc ─ splitmuxsink source)
//!   videotestsrc ─ I420 ─ tee rawv ─────────────────────────────────────┤  (test pattern)
//!   rawv ─ videoscale ─ I420 WxH ─ x264enc ─┐
//!   rawa ─ voaacenc ─ tee aac ──────────────┴── splitmuxsink <low rung>
//!                         └──────────────────── splitmuxsink <audio only>
//! ```
//!
//! An RTSP feed takes the demuxer's place as a bin of `rtspsrc` and one `parsebin` per RTP
//! stream (depayloader and parser found by caps), exposing each parsed elementary stream as a
//! pad, and announcing no more pads once every stream has one ([`LiveInput::Rtsp`]).
//!
//! **Passthrough or transcode** is decided on the feed's codecs ([`LiveCodecs::Auto`]): the
//! demuxer's pads are held (blocked) until it has announced them all, their caps are read
//! ([`FeedCodecs`]), and the rest of the pipeline is built for them: the source rendition
//! passes H.264 (+ AAC) through, anything else is decoded and encoded to H.264 + AAC. A config
//! can force either.
//!
//! **Alignment**: every encoded rung's `splitmuxsink` asks its `x264enc` for a key frame at
//! each segment boundary (`send-keyframe-requests`, running time `n x segment`) and the
//! encoders also have `key-int-max` = one segment of frames, so encoded rungs cut at the same
//! running times; the audio-only rung cuts at the first audio frame past the boundary (within
//! ~21 ms). A passed-through source is cut on the feed's own key frames: aligned with the
//! others when the feed's GOP divides the segment length. Each rendition counts its segments
//! from 0 ([`CutSegment::index`]); the origin numbers segment `n` of every rendition the same.
//!
//! `splitmuxsink` writes each segment to the spool directory and posts a message when it is
//! closed; the bus thread reads the file, deletes it and calls back with the bytes, the
//! rendition and the segment's duration (from the running times of its opening and closing).
//! The pipeline text is built by a pure function ([`pipeline_description`]) with unit tests.

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use gstreamer as gst;
use gstreamer::prelude::*;
use std::sync::Mutex;

/// Where the live feed comes from. Its `Debug` and `Display` leave a pull URL's password out,
/// so neither a log line nor an error shows it.
#[derive(Clone, PartialEq, Eq)]
pub enum LiveInput {
    /// A moving test pattern and a tone, encoded here (H.264 + AAC).
    TestPattern { width: u32, height: u32, fps: u32 },
    /// MPEG-TS over UDP (e.g. an encoder's or OBS's `udp://` output), listened for on
    /// `address:port` (a multicast group address joins the group).
    UdpMpegTs { address: IpAddr, port: u16 },
    /// An SRT listener on `port` (callers push MPEG-TS with `srt://host:port`), with the SRT
    /// receive latency in milliseconds.
    Srt { port: u16, latency_ms: u32 },
    /// Pulled from an RTSP server (an IP camera, an encoder, a media server) at `url`
    /// (`rtsp://host[:port]/path`), with the jitter buffer's latency in milliseconds. RTP over
    /// UDP, falling back to TCP when UDP does not arrive.
    Rtsp { url: String, latency_ms: u32 },
    /// Pulled from an RTMP server at `url` (`rtmp://host[:port]/app/stream`): GStreamer has no
    /// RTMP server element, so an encoder or OBS that can only push RTMP pushes to a media
    /// server (e.g. nginx with its RTMP module) that the origin pulls from. FLV with H.264 +
    /// AAC (or anything `flvdemux` reads, then transcoded).
    Rtmp { url: String },
}

/// The feed as an operator reads it in logs: a pull URL's password is left out.
impl std::fmt::Display for LiveInput {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            LiveInput::TestPattern { width, height, fps } => write!(f, "test pattern {width}x{height} at {fps} fps"),
            LiveInput::UdpMpegTs { address, port } => write!(f, "MPEG-TS on udp://{address}:{port}"),
            LiveInput::Srt { port, .. } => write!(f, "SRT listener on port {port}"),
            LiveInput::Rtsp { url, .. } | LiveInput::Rtmp { url } => f.write_str(&without_password(url)),
        }
    }
}

impl std::fmt::Debug for LiveInput {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            LiveInput::TestPattern { width, height, fps } => f
                .debug_struct("TestPattern")
                .field("width", width)
                .field("height", height)
                .field("fps", fps)
                .finish(),
            LiveInput::UdpMpegTs { address, port } => f
                .debug_struct("UdpMpegTs")
                .field("address", address)
                .field("port", port)
                .finish(),
            LiveInput::Srt { port, latency_ms } => f
                .debug_struct("Srt")
                .field("port", port)
                .field("latency_ms", latency_ms)
                .finish(),
            LiveInput::Rtsp { url, latency_ms } => f
                .debug_struct("Rtsp")
                .field("url", &without_password(url))
                .field("latency_ms", latency_ms)
                .finish(),
            LiveInput::Rtmp { url } => f.debug_struct("Rtmp").field("url", &without_password(url)).finish(),
        }
    }
}

/// `url` with the password of its user info (`scheme://user:password@host/...`) replaced by
/// `***`. Pure.
pub fn without_password(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    let authority_end = rest.find('/').unwrap_or(rest.len());
    let (authority, path) = rest.split_at(authority_end);
    match authority.rsplit_once('@') {
        Some((user_info, host)) => {
            let user = user_info.split_once(':').map_or(user_info, |(user, _)| user);
            format!("{scheme}://{user}:***@{host}{path}")
        }
        None => url.to_owned(),
    }
}

/// What is done to the feed's codecs for the source rendition.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LiveCodecs {
    /// Decided on the feed: passthrough when it is H.264 (+ AAC, or no audio), else transcode
    /// at `video_kbps`.
    Auto { video_kbps: u32 },
    /// Forced: the feed is H.264 + AAC, parsed and segmented as sent (no quality lost, little
    /// CPU).
    Passthrough,
    /// Forced: decoded and encoded to H.264 at `video_kbps` + AAC.
    Transcode { video_kbps: u32 },
}

/// One rendition of the ladder.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RenditionKind {
    /// The feed's own quality: passed through or transcoded per [`LiveCodecs`].
    Source,
    /// H.264 scaled to `width` x `height` at `video_kbps`, with AAC.
    Video { width: u32, height: u32, video_kbps: u32 },
    /// AAC only.
    AudioOnly,
}

/// A named rendition of the ladder.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LiveRenditionConfig {
    /// In the playlist URL (`/live/<channel>/<name>.m3u8`).
    pub name: String,
    pub kind: RenditionKind,
}

impl LiveRenditionConfig {
    pub fn new(name: &str, kind: RenditionKind) -> Self {
        Self {
            name: name.to_owned(),
            kind,
        }
    }
}

/// The default ladder: the source, a low rung of 426x240 at 200 kbit/s video + 48 kbit/s AAC
/// (≤ 400 kbit/s with MPEG-TS overhead, which is large at low rates: measured ~350 kbit/s),
/// and audio only.
pub fn default_ladder() -> Vec<LiveRenditionConfig> {
    vec![
        LiveRenditionConfig::new("source", RenditionKind::Source),
        LiveRenditionConfig::new(
            "low",
            RenditionKind::Video {
                width: 426,
                height: 240,
                video_kbps: 200,
            },
        ),
        LiveRenditionConfig::new("audio", RenditionKind::AudioOnly),
    ]
}

/// How a live feed is ingested.
#[derive(Debug, Clone)]
pub struct LiveIngestConfig {
    pub input: LiveInput,
    pub codecs: LiveCodecs,
    /// Whether the feed's audio is carried (`false` ignores it; a feed without audio is
    /// detected and carried as video only).
    pub audio: bool,
    /// AAC bit rate of the encoded renditions (kbit/s).
    pub audio_kbps: u32,
    /// Target segment length; each segment starts on a key frame (default 2 s).
    pub segment: Duration,
    /// Video bit rate of the test pattern.
    pub test_video_kbps: u32,
    /// The renditions, best first (the order is the ladder's rung order).
    pub renditions: Vec<LiveRenditionConfig>,
    /// Where segments are written while they are cut (one file per rendition at a time;
    /// deleted once read).
    pub spool: PathBuf,
}

impl LiveIngestConfig {
    /// 2 s segments, with audio, passthrough decided on the feed, one rendition ("source");
    /// see [`default_ladder`] for a full ladder.
    pub fn new(input: LiveInput, spool: impl Into<PathBuf>) -> Self {
        Self {
            input,
            codecs: LiveCodecs::Auto {
                video_kbps: DEFAULT_TRANSCODE_KBPS,
            },
            audio: true,
            audio_kbps: DEFAULT_AUDIO_KBPS,
            segment: DEFAULT_SEGMENT,
            test_video_kbps: 400,
            renditions: vec![LiveRenditionConfig::new("source", RenditionKind::Source)],
            spool: spool.into(),
        }
    }
}

/// AAC bit rate of encoded renditions unless configured (kbit/s).
pub const DEFAULT_AUDIO_KBPS: u32 = 48;

/// Default segment length.
pub const DEFAULT_SEGMENT: Duration = Duration::from_secs(2);

/// Video bit rate of a transcoded source rendition unless configured (kbit/s).
pub const DEFAULT_TRANSCODE_KBPS: u32 = 1500;

/// Frame rate assumed for key-frame intervals of a decoded feed.
const ASSUMED_FPS: u32 = 25;

/// One cut segment: MPEG-TS bytes starting on a key frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CutSegment {
    /// Index of the rendition in [`LiveIngestConfig::renditions`].
    pub rendition: usize,
    /// The rendition's segments counted from 0 since the ingest started.
    pub index: u64,
    /// Which run of the feed cut it: 0 from a [`LiveIngest`]; a [`crate::live_feed::LiveFeed`]
    /// counts up each time a restarted feed cuts its first segment. Segments of different
    /// epochs do not share a timeline (timestamps start over): a playlist marks the change
    /// with `EXT-X-DISCONTINUITY`.
    pub epoch: u32,
    pub duration_ms: u32,
    /// Picture size (0 x 0 for audio only) and RFC 6381 codecs, as cut.
    pub width: u32,
    pub height: u32,
    pub codecs: String,
    pub bytes: Vec<u8>,
}

/// What went wrong starting or running a live ingest.
#[derive(Debug, thiserror::Error)]
pub enum LiveIngestError {
    #[error("GStreamer element {element} is missing; install the Debian package {package}")]
    MissingElement { element: String, package: &'static str },
    #[error("the live segment spool {path} cannot be used: {source}; check that the directory is writable")]
    Spool {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("the live pipeline could not be built: {0}")]
    Build(String),
    #[error("the live pipeline failed: {0}")]
    Pipeline(String),
    #[error("the live ladder is empty or names a rendition twice; give each [[live]] rendition once")]
    Ladder,
    #[error("{0}")]
    Init(String),
}

/// Which Debian package ships a GStreamer element used here.
fn package_of(element: &str) -> &'static str {
    match element {
        "srtsrc" | "tsdemux" => "gstreamer1.0-plugins-bad",
        "udpsrc" | "rtspsrc" => "gstreamer1.0-plugins-good",
        "parsebin" => "gstreamer1.0-plugins-base",
        "rtmp2src" => "gstreamer1.0-plugins-bad",
        "flvdemux" => "gstreamer1.0-plugins-good",
        other => crate::transcode::package_for(other),
    }
}

/// The elements a pipeline for `config` may need.
pub fn required_elements(config: &LiveIngestConfig) -> Vec<&'static str> {
    let mut e = vec!["splitmuxsink", "mpegtsmux", "h264parse", "tee", "queue"];
    match config.input {
        LiveInput::TestPattern { .. } => e.extend(["videotestsrc", "x264enc"]),
        LiveInput::UdpMpegTs { .. } => e.extend(["udpsrc", "tsdemux"]),
        LiveInput::Srt { .. } => e.extend(["srtsrc", "tsdemux"]),
        LiveInput::Rtsp { .. } => e.extend(["rtspsrc", "parsebin"]),
        LiveInput::Rtmp { .. } => e.extend(["rtmp2src", "flvdemux"]),
    }
    let feed = !matches!(config.input, LiveInput::TestPattern { .. });
    let scaled = config
        .renditions
        .iter()
        .any(|r| matches!(r.kind, RenditionKind::Video { .. }));
    if feed && (scaled || !matches!(config.codecs, LiveCodecs::Passthrough)) {
        e.push("decodebin");
    }
    if scaled || !matches!(config.codecs, LiveCodecs::Passthrough) {
        e.extend(["x264enc", "videoconvert"]);
    }
    if scaled {
        e.push("videoscale");
    }
    if config.audio {
        e.extend(["aacparse", "voaacenc", "audioconvert", "audioresample"]);
        if !feed {
            e.push("audiotestsrc");
        }
    }
    e.sort_unstable();
    e.dedup();
    e
}

/// The video of a feed, as its demuxer announced it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FeedVideo {
    H264,
    /// Something to decode (MPEG-2, HEVC, ...).
    Other,
    /// Raw pictures (the test pattern).
    Raw,
}

/// The audio of a feed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FeedAudio {
    Aac,
    Other,
    Raw,
}

/// What the feed carries, read from the demuxer's pad caps.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FeedCodecs {
    pub video: Option<FeedVideo>,
    pub audio: Option<FeedAudio>,
}

impl FeedCodecs {
    /// The test pattern: raw video and audio made here.
    pub const RAW: FeedCodecs = FeedCodecs {
        video: Some(FeedVideo::Raw),
        audio: Some(FeedAudio::Raw),
    };
}

/// Classifies a demuxer pad by its caps' structure name (and `mpegversion` for `audio/mpeg`).
pub fn classify_pad(name: &str, mpegversion: Option<i32>) -> Option<Result<FeedVideo, FeedAudio>> {
    match name {
        "video/x-h264" => Some(Ok(FeedVideo::H264)),
        n if n.starts_with("video/") => Some(Ok(FeedVideo::Other)),
        // ADTS AAC is audio/mpeg version 2 or 4; version 1 is MP1/MP2/MP3.
        "audio/mpeg" if matches!(mpegversion, Some(2 | 4)) => Some(Err(FeedAudio::Aac)),
        n if n.starts_with("audio/") => Some(Err(FeedAudio::Other)),
        _ => None,
    }
}

/// Whether the source rendition passes the feed through: forced by the config, or (auto) when
/// the video is H.264 and the audio AAC or absent.
pub fn passes_through(codecs: LiveCodecs, feed: &FeedCodecs) -> bool {
    match codecs {
        LiveCodecs::Passthrough => true,
        LiveCodecs::Transcode { .. } => false,
        LiveCodecs::Auto { .. } => {
            feed.video == Some(FeedVideo::H264) && matches!(feed.audio, None | Some(FeedAudio::Aac))
        }
    }
}

/// The `gst-launch` text that demuxes a feed: its demuxer is named `demux`, and the rest
/// ([`pipeline_description`]) is added once its pads are known. `None` when the head is not a
/// launch line: the test pattern (all in [`pipeline_description`]) and RTSP (a bin built in
/// code, since a parser is added per stream as the server describes them).
pub fn feed_description(input: &LiveInput) -> Option<String> {
    let source = match input {
        LiveInput::TestPattern { .. } | LiveInput::Rtsp { .. } => return None,
        LiveInput::UdpMpegTs { address, port } => format!(
            "udpsrc address={address} port={port} buffer-size=2097152 caps=\"video/mpegts,systemstream=(boolean)true,packetsize=(int)188\""
        ),
        LiveInput::Srt { port, latency_ms } => {
            format!("srtsrc uri=\"srt://:{port}?mode=listener\" latency={latency_ms} keep-listening=true")
        }
        LiveInput::Rtmp { url } => {
            return Some(format!("rtmp2src location=\"{}\" ! flvdemux name=demux", launch_quoted(url)))
        }
    };
    Some(format!("{source} ! tsdemux name=demux latency=200"))
}

/// `text` for a double-quoted `gst-launch` property value: quotes and backslashes escaped.
fn launch_quoted(text: &str) -> String {
    text.replace('\\', "\\\\").replace('"', "\\\"")
}

/// The `gst-launch` text of the ladder for a feed carrying `feed`, segments of rendition `i`
/// written to `location(i)` (a `printf` pattern). For a demuxed feed its entry points are the
/// elements named `vin` (the demuxer's video pad) and `ain` (its audio pad); for the test
/// pattern ([`FeedCodecs::RAW`]) it includes the sources and stands alone. Pure.
pub fn pipeline_description(
    config: &LiveIngestConfig,
    feed: &FeedCodecs,
    location: &dyn Fn(usize) -> String,
) -> String {
    let ns = config.segment.as_nanos().max(1_000_000);
    let audio = config.audio && feed.audio.is_some();
    let video = feed.video.is_some();
    let pass = passes_through(config.codecs, feed) && feed.video != Some(FeedVideo::Raw);
    let (fps, source_kbps) = match (&config.input, config.codecs) {
        (LiveInput::TestPattern { fps, .. }, _) => (*fps, config.test_video_kbps),
        (_, LiveCodecs::Auto { video_kbps } | LiveCodecs::Transcode { video_kbps }) => (ASSUMED_FPS, video_kbps),
        (_, LiveCodecs::Passthrough) => (ASSUMED_FPS, DEFAULT_TRANSCODE_KBPS),
    };
    // Key frames come on request at each cut (splitmuxsink send-keyframe-requests); the
    // encoder adds one only if a request is missed (every 4 segments), so periodic key frames
    // never cut a few frames after a requested one.
    let gop = (4 * u128::from(fps) * config.segment.as_millis() / 1000).max(1);
    let x264 = |kbps: u32| {
        format!(
            "x264enc tune=zerolatency speed-preset=ultrafast bitrate={kbps} key-int-max={gop} \
             ! video/x-h264,profile=main ! h264parse config-interval=-1"
        )
    };
    let ladder = &config.renditions;
    let scaled = ladder.iter().any(|r| matches!(r.kind, RenditionKind::Video { .. }));
    let audio_only = ladder.iter().any(|r| r.kind == RenditionKind::AudioOnly);
    // Raw video is needed by scaled rungs, and by the source unless it is passed through.
    let need_rawv = video && (scaled || !pass);
    // Encoded AAC at audio_kbps: by every rung but a passed-through source.
    let need_aac = audio && (scaled || audio_only || !pass);
    let raw_audio = "audioconvert ! audioresample ! audio/x-raw,rate=48000,channels=2";
    let mut d = String::new();
    match &config.input {
        LiveInput::TestPattern { width, height, fps } => {
            d.push_str(&format!(
                "videotestsrc is-live=true pattern=ball ! video/x-raw,width={width},height={height},framerate={fps}/1,format=I420 ! tee name=rawv "
            ));
            if audio {
                d.push_str(&format!(
                    "audiotestsrc is-live=true wave=sine freq=440 ! {raw_audio} ! tee name=rawa "
                ));
            }
        }
        _ => {
            if video {
                if pass {
                    d.push_str("identity name=vin ! h264parse config-interval=-1 ! tee name=srcv ");
                    if need_rawv {
                        d.push_str(
                            "srcv. ! queue ! decodebin ! videoconvert ! video/x-raw,format=I420 ! tee name=rawv ",
                        );
                    }
                } else {
                    d.push_str(
                        "identity name=vin ! decodebin ! videoconvert ! video/x-raw,format=I420 ! tee name=rawv ",
                    );
                }
            }
            if audio {
                if pass {
                    d.push_str("identity name=ain ! aacparse ! tee name=srca ");
                    if need_aac {
                        d.push_str(&format!("srca. ! queue ! decodebin ! {raw_audio} ! tee name=rawa "));
                    }
                } else {
                    d.push_str(&format!("identity name=ain ! decodebin ! {raw_audio} ! tee name=rawa "));
                }
            }
        }
    }
    if need_aac {
        d.push_str(&format!(
            "rawa. ! queue ! voaacenc bitrate={} ! aacparse ! tee name=aac ",
            config.audio_kbps * 1000
        ));
    }
    for (i, r) in ladder.iter().enumerate() {
        let sink = format!("sink{i}");
        let has_video = video && r.kind != RenditionKind::AudioOnly;
        if !has_video && !audio {
            continue;
        }
        d.push_str(&format!(
            "splitmuxsink name={sink} muxer-factory=mpegtsmux send-keyframe-requests={has_video} max-size-bytes=0 \
             max-size-time={ns} location=\"{}\" ",
            location(i)
        ));
        match &r.kind {
            RenditionKind::Source if has_video => {
                if pass {
                    d.push_str(&format!("srcv. ! queue ! {sink}.video "));
                } else {
                    d.push_str(&format!(
                        "rawv. ! queue ! {} ! queue ! {sink}.video ",
                        x264(source_kbps)
                    ));
                }
            }
            RenditionKind::Video {
                width,
                height,
                video_kbps,
            } if has_video => {
                d.push_str(&format!(
                    "rawv. ! queue ! videoscale ! videoconvert ! video/x-raw,width={width},height={height},format=I420 \
                     ! {} ! queue ! {sink}.video ",
                    x264(*video_kbps)
                ));
            }
            _ => {}
        }
        if audio {
            let from = if pass && r.kind == RenditionKind::Source {
                "srca"
            } else {
                "aac"
            };
            // A queue that never blocks on time or count: the audio waits for the video of the
            // same segment.
            d.push_str(&format!(
                "{from}. ! queue max-size-time=0 max-size-buffers=0 max-size-bytes=67108864 ! {sink}.audio_0 "
            ));
        }
    }
    d
}

/// MPEG-TS overhead over the elementary streams' bit rates, in percent (packet headers, PES
/// headers, PCR and tables), for the nominal bit rate of an encoded rendition.
const TS_OVERHEAD_PERCENT: u64 = 40;

/// How a cut segment's rendition is announced: its rung (its place in the ladder), nominal bit
/// rate (the encoders' rates plus MPEG-TS overhead; a passed-through source's is measured from
/// the segment), picture size and codecs.
pub fn rendition_info(config: &LiveIngestConfig, cut: &CutSegment) -> courseway_content::LiveRendition {
    let measured = (cut.bytes.len() as u64 * 8000)
        .checked_div(u64::from(cut.duration_ms))
        .unwrap_or(0);
    let audio = if config.audio && cut.codecs.contains("mp4a") {
        u64::from(config.audio_kbps) * 1000
    } else {
        0
    };
    let with_overhead = |bps: u64| bps * (100 + TS_OVERHEAD_PERCENT) / 100;
    let nominal = match config.renditions.get(cut.rendition).map(|r| &r.kind) {
        Some(RenditionKind::Video { video_kbps, .. }) => with_overhead(u64::from(*video_kbps) * 1000 + audio),
        Some(RenditionKind::AudioOnly) => with_overhead(audio),
        Some(RenditionKind::Source) | None => measured,
    };
    courseway_content::LiveRendition {
        rung: cut.rendition.min(usize::from(u8::MAX)) as u8,
        bandwidth: nominal.min(u64::from(u32::MAX)) as u32,
        width: cut.width.min(u32::from(u16::MAX)) as u16,
        height: cut.height.min(u32::from(u16::MAX)) as u16,
        codecs: cut.codecs.clone(),
    }
}

/// A running live ingest; dropping it stops the pipeline.
pub struct LiveIngest {
    pipeline: gst::Pipeline,
    stop: Arc<AtomicBool>,
    bus_thread: Option<JoinHandle<Result<(), LiveIngestError>>>,
}

impl std::fmt::Debug for LiveIngest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LiveIngest").finish_non_exhaustive()
    }
}

impl LiveIngest {
    /// Builds and starts the pipeline; `on_segment` is called on the ingest's own thread with
    /// every segment of every rendition as soon as it is closed (so it may block, e.g. to store
    /// and announce it).
    pub fn start(
        config: &LiveIngestConfig,
        mut on_segment: impl FnMut(CutSegment) + Send + 'static,
    ) -> Result<Self, LiveIngestError> {
        crate::init().map_err(LiveIngestError::Init)?;
        let mut names: Vec<&str> = config.renditions.iter().map(|r| r.name.as_str()).collect();
        names.sort_unstable();
        names.dedup();
        if names.is_empty() || names.len() != config.renditions.len() {
            return Err(LiveIngestError::Ladder);
        }
        for element in required_elements(config) {
            if gst::ElementFactory::find(element).is_none() {
                return Err(LiveIngestError::MissingElement {
                    element: element.to_owned(),
                    package: package_of(element),
                });
            }
        }
        std::fs::create_dir_all(&config.spool).map_err(|source| LiveIngestError::Spool {
            path: config.spool.clone(),
            source,
        })?;
        let spool = config.spool.clone();
        let location = move |i: usize| spool.join(format!("live-r{i}-%08d.ts")).to_string_lossy().into_owned();
        let pipeline = match (&config.input, feed_description(&config.input)) {
            (LiveInput::Rtsp { url, latency_ms }, _) => {
                tracing::debug!(url = %without_password(url), "starting the live ingest from an RTSP server");
                let pipeline = gst::Pipeline::with_name("live-ingest");
                let demux = rtsp_feed(url, *latency_ms)?;
                pipeline
                    .add(&demux)
                    .map_err(|e| LiveIngestError::Build(format!("the RTSP source: {e}")))?;
                attach_ladder(
                    &pipeline,
                    demux.upcast_ref(),
                    config.clone(),
                    Box::new(location),
                    BuildOn::NoMorePads,
                );
                pipeline
            }
            (_, None) => {
                let description = pipeline_description(config, &FeedCodecs::RAW, &location);
                tracing::debug!(pipeline = %description, "starting the live ingest");
                launch(&description)?
            }
            (_, Some(head)) => {
                tracing::debug!(pipeline = %head, "starting the live ingest; the ladder follows the feed's codecs");
                let pipeline = launch(&head)?;
                let demux = pipeline
                    .by_name("demux")
                    .ok_or_else(|| LiveIngestError::Build("no demuxer in the feed pipeline".into()))?;
                // tsdemux adds every pad before it sends data; flvdemux adds each on its first
                // tag and announces no-more-pads once the FLV header's streams all have one.
                let build_on = match config.input {
                    LiveInput::Rtmp { .. } => BuildOn::NoMorePads,
                    _ => BuildOn::FirstData,
                };
                attach_ladder(&pipeline, &demux, config.clone(), Box::new(location), build_on);
                pipeline
            }
        };
        let bus = pipeline.bus().expect("a pipeline has a bus");
        pipeline
            .set_state(gst::State::Playing)
            .map_err(|e| LiveIngestError::Pipeline(format!("could not start: {e}")))?;
        let stop = Arc::new(AtomicBool::new(false));
        let renditions = config.renditions.len();
        let bus_thread = {
            let stop = stop.clone();
            let pipeline = pipeline.downgrade();
            std::thread::Builder::new()
                .name("live-ingest".into())
                .spawn(move || {
                    let mut opened_at: Vec<Option<u64>> = vec![None; renditions];
                    let mut counts: Vec<u64> = vec![0; renditions];
                    while !stop.load(Ordering::Relaxed) {
                        let Some(msg) = bus.timed_pop_filtered(
                            gst::ClockTime::from_mseconds(100),
                            &[
                                gst::MessageType::Element,
                                gst::MessageType::Error,
                                gst::MessageType::Eos,
                            ],
                        ) else {
                            continue;
                        };
                        match msg.view() {
                            gst::MessageView::Error(e) => {
                                return Err(LiveIngestError::Pipeline(format!("{} ({:?})", e.error(), e.debug())));
                            }
                            gst::MessageView::Eos(_) => return Ok(()),
                            gst::MessageView::Element(e) => {
                                let Some(s) = e.structure() else { continue };
                                let Some(rendition) = msg
                                    .src()
                                    .and_then(|src| {
                                        src.name().strip_prefix("sink").and_then(|n| n.parse::<usize>().ok())
                                    })
                                    .filter(|&i| i < renditions)
                                else {
                                    continue;
                                };
                                let running = s.get::<u64>("running-time").ok();
                                if s.name() == "splitmuxsink-fragment-opened" {
                                    opened_at[rendition] = running;
                                } else if s.name() == "splitmuxsink-fragment-closed" {
                                    let Ok(location) = s.get::<String>("location") else {
                                        continue;
                                    };
                                    let duration_ms = match (opened_at[rendition], running) {
                                        (Some(a), Some(b)) if b > a => ((b - a) / 1_000_000) as u32,
                                        _ => 0,
                                    };
                                    let index = counts[rendition];
                                    counts[rendition] += 1;
                                    let (width, height) = pipeline
                                        .upgrade()
                                        .and_then(|p| p.by_name(&format!("sink{rendition}")))
                                        .map(|sink| picture_size(&sink))
                                        .unwrap_or((0, 0));
                                    match take_file(Path::new(&location)) {
                                        Ok(bytes) if !bytes.is_empty() => {
                                            let codecs = segment_codecs(&bytes, width > 0);
                                            on_segment(CutSegment {
                                                rendition,
                                                index,
                                                epoch: 0,
                                                duration_ms,
                                                width,
                                                height,
                                                codecs,
                                                bytes,
                                            })
                                        }
                                        Ok(_) => {}
                                        Err(e) => {
                                            tracing::warn!(%location, error = %e, "could not read a cut live segment")
                                        }
                                    }
                                }
                            }
                            _ => {}
                        }
                    }
                    Ok(())
                })
                .map_err(|e| LiveIngestError::Build(format!("no thread for the ingest: {e}")))?
        };
        Ok(Self {
            pipeline,
            stop,
            bus_thread: Some(bus_thread),
        })
    }

    /// Whether the pipeline stopped by itself (an error or the end of the feed).
    pub fn is_finished(&self) -> bool {
        self.bus_thread.as_ref().is_none_or(|t| t.is_finished())
    }

    /// Stops the pipeline; returns the error that stopped it earlier, if any.
    pub fn stop(mut self) -> Result<(), LiveIngestError> {
        self.halt()
    }

    fn halt(&mut self) -> Result<(), LiveIngestError> {
        self.stop.store(true, Ordering::Relaxed);
        let _ = self.pipeline.set_state(gst::State::Null);
        match self.bus_thread.take().map(|t| t.join()) {
            Some(Ok(result)) => result,
            Some(Err(_)) => Err(LiveIngestError::Pipeline("the ingest thread panicked".into())),
            None => Ok(()),
        }
    }
}

fn launch(description: &str) -> Result<gst::Pipeline, LiveIngestError> {
    gst::parse::launch(description)
        .map_err(|e| LiveIngestError::Build(e.to_string()))?
        .downcast::<gst::Pipeline>()
        .map_err(|_| LiveIngestError::Build("the description is not a pipeline".into()))
}

/// The demuxer's first video and audio pads, held (blocked) until it has announced them all.
#[derive(Default)]
struct HeldPads {
    video: Option<(gst::Pad, FeedVideo, gst::PadProbeId)>,
    audio: Option<(gst::Pad, FeedAudio, gst::PadProbeId)>,
    built: bool,
}

/// When the ladder is built from the held pads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum BuildOn {
    /// On the first data on a held pad, or `no-more-pads`, whichever comes first: for a demuxer
    /// that adds every pad of its program before it sends data (`tsdemux`).
    FirstData,
    /// On `no-more-pads` only, the buffers of held pads dropped until then (blocking would
    /// stall a demuxer that runs every stream on one thread before it has added them all): for
    /// a source whose streams appear one by one, each flowing as soon as it appears (RTSP,
    /// `flvdemux`). What is dropped is the feed's first moments, before its last stream showed.
    NoMorePads,
}

/// What builds the ladder once the feed's pads are known.
struct Pending {
    pipeline: gst::glib::WeakRef<gst::Pipeline>,
    demux: gst::glib::WeakRef<gst::Element>,
    config: LiveIngestConfig,
    location: Box<dyn Fn(usize) -> String + Send + Sync>,
    held: Mutex<HeldPads>,
    build_on: BuildOn,
}

impl Pending {
    /// Builds the ladder for the pads held so far (once). `current` is the pad whose blocking
    /// probe is running (its probe is removed by returning `Remove`).
    fn build(&self, current: Option<&gst::Pad>) {
        let mut h = self.held.lock().expect("the pad list is never poisoned");
        if h.built {
            return;
        }
        h.built = true;
        let (Some(pipeline), Some(demux)) = (self.pipeline.upgrade(), self.demux.upgrade()) else {
            return;
        };
        let feed = FeedCodecs {
            video: h.video.as_ref().map(|v| v.1),
            audio: h.audio.as_ref().map(|a| a.1),
        };
        let passthrough = passes_through(self.config.codecs, &feed);
        tracing::info!(?feed, passthrough, "live feed codecs read; building the ladder");
        if let Err(e) = build_ladder(&pipeline, &self.config, &feed, &*self.location, &mut h, current) {
            gst::element_error!(
                demux,
                gst::CoreError::Negotiation,
                ["the live ladder could not be built: {}", e]
            );
        }
    }
}

/// Builds the ladder once `demux` has announced its pads, for the codecs they carry: the first
/// video and audio pads are blocked as they are added; the demuxer adds every pad of its
/// program before it sends data, so the first data (or event) on a held pad builds the ladder.
fn attach_ladder(
    pipeline: &gst::Pipeline,
    demux: &gst::Element,
    config: LiveIngestConfig,
    location: Box<dyn Fn(usize) -> String + Send + Sync>,
    build_on: BuildOn,
) {
    let carry_audio = config.audio;
    let pending = Arc::new(Pending {
        pipeline: pipeline.downgrade(),
        demux: demux.downgrade(),
        config,
        location,
        held: Mutex::new(HeldPads::default()),
        build_on,
    });
    {
        let pending = pending.clone();
        demux.connect_pad_added(move |_, pad| {
            let caps = pad.current_caps().unwrap_or_else(|| pad.query_caps(None));
            let Some(st) = caps.structure(0) else { return };
            let kind = classify_pad(st.name().as_str(), st.get::<i32>("mpegversion").ok());
            let mut h = pending.held.lock().expect("the pad list is never poisoned");
            if h.built {
                return;
            }
            let block = |pad: &gst::Pad| match pending.build_on {
                BuildOn::FirstData => {
                    let pending = pending.clone();
                    pad.add_probe(gst::PadProbeType::BLOCK_DOWNSTREAM, move |pad, _| {
                        pending.build(Some(pad));
                        gst::PadProbeReturn::Remove
                    })
                }
                // Events pass (sticky ones reach the ladder once linked); `no-more-pads` builds
                // the ladder, then removes the probe.
                BuildOn::NoMorePads => pad
                    .add_probe(gst::PadProbeType::BUFFER | gst::PadProbeType::BUFFER_LIST, |_, _| {
                        gst::PadProbeReturn::Drop
                    }),
            };
            match kind {
                Some(Ok(v)) if h.video.is_none() => {
                    if let Some(id) = block(pad) {
                        h.video = Some((pad.clone(), v, id));
                    }
                }
                Some(Err(a)) if h.audio.is_none() && carry_audio => {
                    if let Some(id) = block(pad) {
                        h.audio = Some((pad.clone(), a, id));
                    }
                }
                _ => {}
            }
        });
    }
    demux.connect_no_more_pads(move |_| pending.build(None));
}

/// Streams of an RTSP feed whose parser has not exposed its pads yet, and whether the server's
/// streams are all known.
#[derive(Default)]
struct RtspStreams {
    parsing: usize,
    /// Pads exposed so far (they are named `stream_<n>`).
    exposed: usize,
    all_known: bool,
    announced: bool,
}

impl RtspStreams {
    /// Whether the bin may now announce that it has no more pads (true once).
    fn complete(&mut self) -> bool {
        let done = self.all_known && self.parsing == 0 && !self.announced;
        self.announced |= done;
        done
    }
}

/// An RTSP pull as a demuxer-like bin named `demux`: `rtspsrc` with a `parsebin` per RTP
/// stream (which finds the depayloader and parser by caps), each parsed elementary stream
/// exposed as a pad of the bin, and `no-more-pads` once the server's streams are all known and
/// every one is parsed or found unparsable. An RTP stream carries one elementary stream, so a
/// stream is parsed when its `parsebin` exposes a pad (`parsebin` itself never announces
/// no-more-pads).
fn rtsp_feed(url: &str, latency_ms: u32) -> Result<gst::Bin, LiveIngestError> {
    let bin = gst::Bin::with_name("demux");
    let src = gst::ElementFactory::make("rtspsrc")
        .property("location", url)
        .property("latency", latency_ms)
        .build()
        .map_err(|e| LiveIngestError::Build(format!("rtspsrc: {e}")))?;
    bin.add(&src)
        .map_err(|e| LiveIngestError::Build(format!("rtspsrc: {e}")))?;
    let streams = Arc::new(Mutex::new(RtspStreams::default()));
    let announce = |bin: &gst::glib::WeakRef<gst::Bin>, streams: &Mutex<RtspStreams>| {
        if streams.lock().expect("the stream count is never poisoned").complete() {
            if let Some(bin) = bin.upgrade() {
                bin.no_more_pads();
            }
        }
    };
    {
        let (weak, streams) = (bin.downgrade(), streams.clone());
        src.connect_pad_added(move |_, pad| {
            let Some(bin) = weak.upgrade() else { return };
            let parse = match gst::ElementFactory::make("parsebin").build() {
                Ok(p) => p,
                Err(e) => {
                    tracing::error!(error = %e, "no parsebin for an RTSP stream");
                    return;
                }
            };
            if bin.add(&parse).is_err() {
                return;
            }
            streams.lock().expect("the stream count is never poisoned").parsing += 1;
            // Counts this stream as settled, once: parsed or found unparsable.
            let settled = {
                let (weak, streams) = (weak.clone(), streams.clone());
                let once = AtomicBool::new(false);
                Arc::new(move || {
                    if !once.swap(true, Ordering::Relaxed) {
                        streams.lock().expect("the stream count is never poisoned").parsing -= 1;
                        announce(&weak, &streams);
                    }
                })
            };
            {
                let settled = settled.clone();
                parse.connect("unknown-type", false, move |args| {
                    let caps = args.get(2).and_then(|v| v.get::<gst::Caps>().ok());
                    tracing::warn!(?caps, "an RTSP stream of an unknown type is left out");
                    settled();
                    None
                });
            }
            {
                let (weak, streams) = (weak.clone(), streams.clone());
                parse.connect_pad_added(move |_, parsed| {
                    let Some(bin) = weak.upgrade() else { return };
                    let n = {
                        let mut streams = streams.lock().expect("the stream count is never poisoned");
                        streams.exposed += 1;
                        streams.exposed
                    };
                    let ghost =
                        gst::GhostPad::builder_with_target(parsed).map(|b| b.name(format!("stream_{n}")).build());
                    let ghost = match ghost {
                        Ok(g) => g,
                        Err(e) => {
                            tracing::error!(error = %e, "could not expose an RTSP stream");
                            return;
                        }
                    };
                    let _ = ghost.set_active(true);
                    if let Err(e) = bin.add_pad(&ghost) {
                        tracing::error!(error = %e, "could not expose an RTSP stream");
                    }
                    settled();
                });
            }
            let _ = parse.sync_state_with_parent();
            let linked = parse.static_pad("sink").map(|sink| pad.link(&sink));
            if !matches!(linked, Some(Ok(_))) {
                tracing::warn!(caps = ?pad.current_caps(), "an RTSP stream could not be parsed; it is left out");
            }
        });
    }
    {
        let weak = bin.downgrade();
        src.connect_no_more_pads(move |_| {
            streams.lock().expect("the stream count is never poisoned").all_known = true;
            announce(&weak, &streams);
        });
    }
    Ok(bin)
}

fn build_ladder(
    pipeline: &gst::Pipeline,
    config: &LiveIngestConfig,
    feed: &FeedCodecs,
    location: &dyn Fn(usize) -> String,
    held: &mut HeldPads,
    current: Option<&gst::Pad>,
) -> Result<(), String> {
    if feed.video.is_none() && feed.audio.is_none() {
        return Err("the feed carries neither video nor audio".into());
    }
    let description = pipeline_description(config, feed, location);
    tracing::debug!(pipeline = %description, "the live ladder");
    let bin = gst::parse::bin_from_description(&description, false).map_err(|e| e.to_string())?;
    let mut links = Vec::new();
    if let Some((pad, _, _)) = &held.video {
        links.push((pad.clone(), "vin"));
    }
    if let Some((pad, _, _)) = &held.audio {
        links.push((pad.clone(), "ain"));
    }
    let mut ghosts = Vec::new();
    for (pad, entry) in &links {
        let target = bin
            .by_name(entry)
            .and_then(|e| e.static_pad("sink"))
            .ok_or_else(|| format!("no {entry} in the ladder"))?;
        let ghost = gst::GhostPad::builder_with_target(&target)
            .map_err(|e| e.to_string())?
            .name(*entry)
            .build();
        bin.add_pad(&ghost).map_err(|e| e.to_string())?;
        ghosts.push((pad.clone(), ghost));
    }
    pipeline.add(&bin).map_err(|e| e.to_string())?;
    for (pad, ghost) in &ghosts {
        pad.link(ghost).map_err(|e| format!("{e:?}"))?;
    }
    bin.sync_state_with_parent().map_err(|e| e.to_string())?;
    for (pad, id) in [
        held.video.take().map(|(p, _, id)| (p, id)),
        held.audio.take().map(|(p, _, id)| (p, id)),
    ]
    .into_iter()
    .flatten()
    {
        if current != Some(&pad) {
            pad.remove_probe(id);
        }
    }
    Ok(())
}

/// Width and height of the video a splitmuxsink takes (0 x 0 for none).
fn picture_size(sink: &gst::Element) -> (u32, u32) {
    sink.static_pad("video")
        .and_then(|p| p.current_caps())
        .and_then(|caps| {
            let s = caps.structure(0)?;
            Some((s.get::<i32>("width").ok()? as u32, s.get::<i32>("height").ok()? as u32))
        })
        .unwrap_or((0, 0))
}

/// RFC 6381 codecs of a cut segment: the H.264 profile and level from its SPS, and AAC-LC.
fn segment_codecs(bytes: &[u8], video: bool) -> String {
    let avc = if video {
        crate::codecs::avc_codec_from_annex_b(bytes)
    } else {
        None
    };
    if video && avc.is_none() {
        return String::new();
    }
    crate::codecs::codecs_string(avc.as_deref(), true)
}

impl Drop for LiveIngest {
    fn drop(&mut self) {
        let _ = self.halt();
    }
}

fn take_file(path: &Path) -> std::io::Result<Vec<u8>> {
    let bytes = std::fs::read(path)?;
    std::fs::remove_file(path)?;
    Ok(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_pull_url_is_shown_without_its_password() {
        assert_eq!(
            without_password("rtsp://admin:secret@10.0.0.20:554/stream1"),
            "rtsp://admin:***@10.0.0.20:554/stream1"
        );
        assert_eq!(without_password("rtmp://10.0.0.2/live/a"), "rtmp://10.0.0.2/live/a");
        assert_eq!(without_password("rtsp://cam/p@th"), "rtsp://cam/p@th");
        let input = LiveInput::Rtsp {
            url: "rtsp://u:p@cam/s".into(),
            latency_ms: 200,
        };
        assert_eq!(input.to_string(), "rtsp://u:***@cam/s");
        let debug = format!(
            "{input:?} {:?}",
            LiveInput::Rtmp {
                url: "rtmp://u:hunter2@h/a/b".into()
            }
        );
        assert!(!debug.contains(":p@") && !debug.contains("hunter2"), "{debug}");
        assert!(
            debug.contains("u:***@cam/s") && debug.contains("latency_ms: 200"),
            "{debug}"
        );
    }

    fn at(i: usize) -> String {
        format!("/tmp/x/r{i}-%08d.ts")
    }

    fn udp() -> LiveIngestConfig {
        LiveIngestConfig::new(
            LiveInput::UdpMpegTs {
                address: [127, 0, 0, 1].into(),
                port: 5004,
            },
            "/tmp/x",
        )
    }

    const H264_AAC: FeedCodecs = FeedCodecs {
        video: Some(FeedVideo::H264),
        audio: Some(FeedAudio::Aac),
    };
    const MPEG2_MP2: FeedCodecs = FeedCodecs {
        video: Some(FeedVideo::Other),
        audio: Some(FeedAudio::Other),
    };

    #[test]
    fn live_feed_pads_are_classified_and_passthrough_is_decided_on_them() {
        assert_eq!(classify_pad("video/x-h264", None), Some(Ok(FeedVideo::H264)));
        assert_eq!(classify_pad("video/mpeg", Some(2)), Some(Ok(FeedVideo::Other)));
        assert_eq!(classify_pad("audio/mpeg", Some(4)), Some(Err(FeedAudio::Aac)));
        assert_eq!(classify_pad("audio/mpeg", Some(1)), Some(Err(FeedAudio::Other)));
        assert_eq!(classify_pad("private/teletext", None), None);
        let auto = LiveCodecs::Auto { video_kbps: 900 };
        assert!(passes_through(auto, &H264_AAC));
        assert!(passes_through(
            auto,
            &FeedCodecs {
                video: Some(FeedVideo::H264),
                audio: None
            }
        ));
        assert!(!passes_through(auto, &MPEG2_MP2));
        assert!(!passes_through(
            auto,
            &FeedCodecs {
                video: Some(FeedVideo::H264),
                audio: Some(FeedAudio::Other)
            }
        ));
        assert!(passes_through(LiveCodecs::Passthrough, &MPEG2_MP2));
        assert!(!passes_through(LiveCodecs::Transcode { video_kbps: 1 }, &H264_AAC));
    }

    #[test]
    fn live_single_rendition_passes_h264_through_and_transcodes_the_rest() {
        let c = udp();
        assert_eq!(
            feed_description(&c.input).unwrap(),
            "udpsrc address=127.0.0.1 port=5004 buffer-size=2097152 caps=\"video/mpegts,systemstream=(boolean)true,packetsize=(int)188\" ! tsdemux name=demux latency=200"
        );
        let d = pipeline_description(&c, &H264_AAC, &at);
        assert!(d.contains("max-size-time=2000000000"), "{d}");
        assert!(
            d.contains("identity name=vin ! h264parse") && !d.contains("x264enc"),
            "{d}"
        );
        assert!(!d.contains("decodebin") && !d.contains("voaacenc"), "{d}");
        assert!(d.contains("srca. ! queue") && d.contains("sink0.audio_0"), "{d}");
        let d = pipeline_description(&c, &MPEG2_MP2, &at);
        assert!(
            d.contains("identity name=vin ! decodebin ! videoconvert ! video/x-raw,format=I420"),
            "{d}"
        );
        assert!(
            d.contains("x264enc") && d.contains("bitrate=1500 key-int-max=200"),
            "{d}"
        );
        assert!(d.contains("voaacenc bitrate=48000"), "{d}");
        let mut c = c;
        c.audio = false;
        c.input = LiveInput::Srt {
            port: 7001,
            latency_ms: 120,
        };
        assert!(feed_description(&c.input)
            .unwrap()
            .contains("srt://:7001?mode=listener"));
        let d = pipeline_description(&c, &MPEG2_MP2, &at);
        assert!(!d.contains("audio_0") && !d.contains("name=ain"), "{d}");
        assert!(required_elements(&c).contains(&"srtsrc"));
    }

    #[test]
    fn live_ladder_has_every_rendition_cut_on_the_same_boundaries() {
        let mut c = udp();
        c.renditions = default_ladder();
        c.segment = Duration::from_secs(1);
        let d = pipeline_description(&c, &H264_AAC, &at);
        // One splitmuxsink per rendition, all with the same segment length.
        for i in 0..3 {
            assert!(d.contains(&format!("splitmuxsink name=sink{i} ")), "{d}");
            assert!(d.contains(&format!("location=\"/tmp/x/r{i}-%08d.ts\"")), "{d}");
        }
        assert_eq!(d.matches("max-size-time=1000000000").count(), 3, "{d}");
        // The source is passed through; the low rung is decoded, pinned to 8-bit 4:2:0, scaled
        // and encoded with a key frame at least every segment (and on request at each cut).
        assert!(d.contains("srcv. ! queue ! sink0.video"), "{d}");
        assert!(
            d.contains("srcv. ! queue ! decodebin ! videoconvert ! video/x-raw,format=I420 ! tee name=rawv"),
            "{d}"
        );
        assert!(d.contains("video/x-raw,width=426,height=240,format=I420"), "{d}");
        assert!(d.contains("bitrate=200 key-int-max=100"), "{d}");
        assert!(d.contains("sink1.video") && !d.contains("sink2.video"), "{d}");
        assert!(d.contains("send-keyframe-requests=true"), "{d}");
        assert!(
            d.contains("name=sink2 muxer-factory=mpegtsmux send-keyframe-requests=false"),
            "{d}"
        );
        // One AAC encoder for the encoded rungs; the source keeps the feed's AAC.
        assert_eq!(d.matches("voaacenc").count(), 1, "{d}");
        assert!(
            d.contains("srca. ! queue max-size-time=0") && d.contains("aac. ! queue max-size-time=0"),
            "{d}"
        );
        // Transcoded, the source is encoded from the same raw pictures as the low rung.
        let d = pipeline_description(&c, &MPEG2_MP2, &at);
        assert!(
            d.contains("rawv. ! queue ! x264enc") && d.contains("bitrate=1500"),
            "{d}"
        );
        assert_eq!(d.matches("decodebin").count(), 2, "{d}");
        // The test pattern stands alone.
        let mut t = c.clone();
        t.input = LiveInput::TestPattern {
            width: 1280,
            height: 720,
            fps: 30,
        };
        t.test_video_kbps = 1200;
        let d = pipeline_description(&t, &FeedCodecs::RAW, &at);
        assert!(d.starts_with("videotestsrc is-live=true"), "{d}");
        assert!(!d.contains("vin") && !d.contains("decodebin"), "{d}");
        assert!(d.contains("bitrate=1200 key-int-max=120"), "{d}");
        // A feed without audio: no audio-only rendition.
        let d = pipeline_description(
            &c,
            &FeedCodecs {
                video: Some(FeedVideo::H264),
                audio: None,
            },
            &at,
        );
        assert!(!d.contains("sink2") && !d.contains("audio_0"), "{d}");
    }
}
