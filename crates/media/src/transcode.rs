//! Transcoding a source into the rendition ladder with one GStreamer pipeline.
//!
//! The source is decoded once; a tee feeds every rendition:
//!
//! ```text
//! filesrc ! decodebin ─ video ─ queue [! videoconvert ! deinterlace] [! videorate ! fps caps] ! tee
//!     tee ! queue ! videoconvertscale ! video/x-raw,format=I420,WxH ! x264enc
//!         ! video/x-h264,profile=main ! h264parse config-interval=-1 ! queue ! splitmuxsink (per rung)
//!     tee ! queue ! videoconvertscale ! jpegenc ! filesink poster.jpg   (one frame passes)
//!                    ─ audio ─ queue ! audioconvert ! audioresample ! channels 1..2 ! AAC ! aacparse ! tee
//!     tee ! queue ! splitmuxsink (the audio of each video rung, and the audio-only rendition)
//! ```
//!
//! Raw video is pinned to I420 before x264enc (8-bit 4:2:0; x264 would otherwise keep 4:4:4) and
//! the profile is asked for in caps after it. Each splitmuxsink muxes MPEG-TS and asks its
//! encoder for a key frame every segment duration (`send-keyframe-requests`), with x264's
//! `key-int-max` at one segment, so segments start on key frames at the same times in every
//! rendition. Segment durations come from splitmuxsink's fragment messages (running times).
//! Progress is the slowest rendition's position; cancellation stops the pipeline and removes
//! what was written.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use courseway_content::RenditionKind;
use gstreamer as gst;
use gstreamer::prelude::*;
use thiserror::Error;

use crate::codecs::{avc_codec_from_annex_b, codecs_string};
use crate::ladder::{plan, segment_file_name, LadderConfig, Plan, PlanError, PlannedVideo};
use crate::probe::{probe, MediaInfo, ProbeError};

/// File name of the poster image in the output directory.
pub const POSTER_FILE: &str = "poster.jpg";
/// A transcode whose position has not moved for this long is stopped.
pub const STALL_TIMEOUT: Duration = Duration::from_secs(120);
/// AAC encoders in order of preference (all produce AAC-LC).
pub const AAC_ENCODERS: [&str; 3] = ["avenc_aac", "fdkaacenc", "voaacenc"];

/// Asks a running transcode to stop; cheap to clone and share with another thread.
#[derive(Debug, Clone, Default)]
pub struct CancelToken(Arc<AtomicBool>);

impl CancelToken {
    pub fn new() -> Self {
        Self::default()
    }
    /// The transcode stops at its next check (within a fraction of a second).
    pub fn cancel(&self) {
        self.0.store(true, Ordering::SeqCst);
    }
    pub fn is_cancelled(&self) -> bool {
        self.0.load(Ordering::SeqCst)
    }
}

/// How far a transcode has got.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Progress {
    /// Position of the slowest rendition in the source.
    pub position: Duration,
    /// Duration of the source.
    pub duration: Duration,
}

impl Progress {
    /// Fraction done, 0.0 to 1.0.
    pub fn fraction(&self) -> f64 {
        if self.duration.is_zero() {
            return 0.0;
        }
        (self.position.as_secs_f64() / self.duration.as_secs_f64()).clamp(0.0, 1.0)
    }
}

/// One MPEG-TS segment on disk.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SegmentFile {
    pub path: PathBuf,
    pub duration: Duration,
    pub size: u64,
}

/// One rendition's segments.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RenditionOutput {
    pub name: String,
    pub kind: RenditionKind,
    /// Configured bit rate (video + audio), bits per second.
    pub target_bitrate: u32,
    /// RFC 6381 codecs, e.g. `avc1.4d401f,mp4a.40.2`.
    pub codecs: String,
    /// The directory holding the segments.
    pub dir: PathBuf,
    pub segments: Vec<SegmentFile>,
}

impl RenditionOutput {
    /// Peak bit rate as HLS `BANDWIDTH` defines it (the largest segment bit rate), over the
    /// segments at least half a target duration long so a short last segment does not
    /// dominate; all segments if none is that long.
    pub fn peak_bandwidth(&self, segment_duration: Duration) -> u32 {
        let rate = |s: &SegmentFile| (s.size as f64 * 8.0 / s.duration.as_secs_f64().max(0.001)) as u64;
        let long = self
            .segments
            .iter()
            .filter(|s| s.duration * 2 >= segment_duration)
            .map(rate)
            .max();
        let peak = long.or_else(|| self.segments.iter().map(rate).max()).unwrap_or(0);
        peak.min(u64::from(u32::MAX)) as u32
    }

    /// Total bytes of all segments.
    pub fn size(&self) -> u64 {
        self.segments.iter().map(|s| s.size).sum()
    }
}

/// What a transcode produced.
#[derive(Debug, Clone)]
pub struct TranscodeOutput {
    pub source: MediaInfo,
    pub plan: Plan,
    pub renditions: Vec<RenditionOutput>,
    /// The poster JPEG, for a source with video.
    pub poster: Option<PathBuf>,
    /// Wall time the pipeline ran.
    pub elapsed: Duration,
}

/// Why a transcode failed. Whatever it had written is removed.
#[derive(Debug, Error)]
pub enum TranscodeError {
    #[error(transparent)]
    Probe(#[from] ProbeError),
    #[error("ladder: {0}")]
    Plan(#[from] PlanError),
    #[error("output directory {}: {reason}", path.display())]
    Output { path: PathBuf, reason: String },
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("GStreamer element {element} is missing; install {package}")]
    MissingElement { element: String, package: &'static str },
    #[error("no AAC encoder found (tried {tried}); install gstreamer1.0-libav", tried = AAC_ENCODERS.join(", "))]
    NoAacEncoder,
    #[error("the pipeline could not be built: {0}")]
    Build(String),
    #[error("the transcode failed in {element}: {message}{}", debug.as_deref().map(|d| format!(" ({d})")).unwrap_or_default())]
    Pipeline {
        element: String,
        message: String,
        debug: Option<String>,
    },
    #[error("the transcode made no progress for {}s at {position:?}", STALL_TIMEOUT.as_secs())]
    Stalled { position: Duration },
    #[error("rendition {0} produced no segments")]
    NoSegments(String),
    #[error("rendition {0}: no H.264 sequence parameter set seen, so its codec is unknown")]
    NoCodecInfo(String),
    #[error("the transcode was cancelled")]
    Cancelled,
    #[error("{0}")]
    Init(String),
}

/// Which Debian package ships a GStreamer element.
pub fn package_for(element: &str) -> &'static str {
    match element {
        "x264enc" => "gstreamer1.0-plugins-ugly",
        "avenc_aac" => "gstreamer1.0-libav",
        "voaacenc" | "fdkaacenc" | "mpegtsmux" | "h264parse" | "videoparsersbad" => "gstreamer1.0-plugins-bad",
        "splitmuxsink" | "jpegenc" | "deinterlace" | "aacparse" => "gstreamer1.0-plugins-good",
        _ => "gstreamer1.0-plugins-base",
    }
}

fn make(factory: &str) -> Result<gst::Element, TranscodeError> {
    gst::ElementFactory::make(factory)
        .build()
        .map_err(|_| TranscodeError::MissingElement {
            element: factory.to_owned(),
            package: package_for(factory),
        })
}

fn capsfilter(caps: gst::Caps) -> Result<gst::Element, TranscodeError> {
    gst::ElementFactory::make("capsfilter")
        .property("caps", caps)
        .build()
        .map_err(|e| TranscodeError::Build(e.to_string()))
}

/// A queue that never blocks its branch on time or buffer count (compressed audio, waiting for
/// the video of the same segment), bounded only in bytes.
fn unbounded_queue() -> Result<gst::Element, TranscodeError> {
    let q = make("queue")?;
    q.set_property("max-size-time", 0u64);
    q.set_property("max-size-buffers", 0u32);
    q.set_property("max-size-bytes", 64u32 << 20);
    Ok(q)
}

fn build_err(e: impl std::fmt::Display) -> TranscodeError {
    TranscodeError::Build(e.to_string())
}

fn add_chain(pipeline: &gst::Pipeline, chain: &[&gst::Element]) -> Result<(), TranscodeError> {
    pipeline.add_many(chain.iter().copied()).map_err(build_err)?;
    gst::Element::link_many(chain.iter().copied()).map_err(build_err)
}

/// Per-rendition state shared with pad probes and read by the bus loop.
#[derive(Debug)]
struct Track {
    name: String,
    kind: RenditionKind,
    target_bitrate: u32,
    dir: PathBuf,
    sink_name: String,
    /// Position in nanoseconds of the last buffer that reached the rendition's muxer.
    position_ns: Arc<AtomicU64>,
    /// The `avc1.*` string, once the first SPS went by.
    avc: Arc<Mutex<Option<String>>>,
    with_audio: bool,
    fragment_start: Option<u64>,
    segments: Vec<SegmentFile>,
}

/// Records on `pad` the position of every buffer relative to the first one.
fn track_position(pad: &gst::Pad, position_ns: Arc<AtomicU64>) {
    let first = Mutex::new(None::<u64>);
    pad.add_probe(gst::PadProbeType::BUFFER, move |_, info| {
        if let Some(pts) = info.buffer().and_then(|b| b.pts()) {
            let ns = pts.nseconds();
            let start = *first.lock().expect("position lock").get_or_insert(ns);
            position_ns.fetch_max(ns.saturating_sub(start), Ordering::Relaxed);
        }
        gst::PadProbeReturn::Ok
    });
}

/// Makes the splitmuxsink of one rendition, writing `dir/segNNNNN.ts`.
fn splitmux(name: &str, dir: &Path, plan: &Plan) -> Result<gst::Element, TranscodeError> {
    let mux = make("mpegtsmux")?;
    let sink = gst::ElementFactory::make("splitmuxsink")
        .name(name)
        .property("muxer", &mux)
        .property("max-size-time", plan.segment_duration.as_nanos() as u64)
        .property("max-size-bytes", 0u64)
        .property("send-keyframe-requests", true)
        .build()
        .map_err(|_| TranscodeError::MissingElement {
            element: "splitmuxsink".into(),
            package: package_for("splitmuxsink"),
        })?;
    let dir = dir.to_path_buf();
    sink.connect("format-location", false, move |args| {
        let index = args[1].get::<u32>().unwrap_or(0);
        Some(dir.join(segment_file_name(index)).to_string_lossy().to_value())
    });
    Ok(sink)
}

fn x264(video: &PlannedVideo, plan: &Plan) -> Result<gst::Element, TranscodeError> {
    let enc = make("x264enc")?;
    enc.set_property("bitrate", (video.bitrate / 1000).max(1));
    enc.set_property_from_str("speed-preset", &plan.x264_preset);
    enc.set_property("key-int-max", plan.key_int_max);
    Ok(enc)
}

fn aac_encoder(bitrate: u32) -> Result<gst::Element, TranscodeError> {
    let factory = AAC_ENCODERS
        .iter()
        .find(|f| gst::ElementFactory::find(f).is_some())
        .ok_or(TranscodeError::NoAacEncoder)?;
    let enc = make(factory)?;
    // All three take bits per second as a signed int.
    enc.set_property("bitrate", bitrate as i32);
    Ok(enc)
}

/// The pipeline and the state the bus loop reads.
struct Built {
    pipeline: gst::Pipeline,
    tracks: Vec<Track>,
    poster: Option<PathBuf>,
}

fn build_pipeline(source: &Path, info: &MediaInfo, plan: &Plan, out: &Path) -> Result<Built, TranscodeError> {
    let pipeline = gst::Pipeline::new();
    let filesrc = gst::ElementFactory::make("filesrc")
        .property("location", source.to_string_lossy().as_ref())
        .build()
        .map_err(build_err)?;
    let decodebin = make("decodebin")?;
    pipeline.add_many([&filesrc, &decodebin]).map_err(build_err)?;
    filesrc.link(&decodebin).map_err(build_err)?;

    let mut tracks = Vec::new();
    let mut video_head: Option<gst::Pad> = None;
    let mut audio_head: Option<gst::Pad> = None;
    let mut poster = None;

    // Audio: decode once, encode AAC once, tee to every rendition that carries audio.
    let audio_tee = if plan.video_with_audio || plan.audio_only.is_some() {
        let queue = make("queue")?;
        let convert = make("audioconvert")?;
        let resample = make("audioresample")?;
        let caps = capsfilter(
            gst::Caps::builder("audio/x-raw")
                .field("channels", gst::IntRange::new(1, 2))
                .build(),
        )?;
        let enc = aac_encoder(plan.audio_bitrate)?;
        let parse = make("aacparse")?;
        let tee = make("tee")?;
        add_chain(&pipeline, &[&queue, &convert, &resample, &caps, &enc, &parse, &tee])?;
        audio_head = queue.static_pad("sink");
        Some(tee)
    } else {
        None
    };
    let link_audio = |tee: &gst::Element, sink: &gst::Element| -> Result<(), TranscodeError> {
        let queue = unbounded_queue()?;
        pipeline.add(&queue).map_err(build_err)?;
        tee.link(&queue).map_err(build_err)?;
        let pad = sink
            .request_pad_simple("audio_%u")
            .ok_or_else(|| build_err("splitmuxsink gave no audio pad"))?;
        queue
            .static_pad("src")
            .expect("queue has a src pad")
            .link(&pad)
            .map_err(build_err)?;
        Ok(())
    };

    if !plan.video.is_empty() {
        let queue = make("queue")?;
        let mut chain = vec![queue.clone()];
        if info.main_video().is_some_and(|v| v.interlaced) {
            chain.push(make("videoconvert")?);
            chain.push(make("deinterlace")?);
        }
        if let Some((n, d)) = plan.framerate {
            chain.push(make("videorate")?);
            chain.push(capsfilter(
                gst::Caps::builder("video/x-raw")
                    .field("framerate", gst::Fraction::new(n, d))
                    .build(),
            )?);
        }
        let tee = make("tee")?;
        chain.push(tee.clone());
        add_chain(&pipeline, &chain.iter().collect::<Vec<_>>())?;
        video_head = queue.static_pad("sink");

        for (i, video) in plan.video.iter().enumerate() {
            let dir = out.join(&video.name);
            let sink_name = format!("rendition{i}");
            let q = make("queue")?;
            let scale = make("videoconvertscale")?;
            let raw = capsfilter(
                gst::Caps::builder("video/x-raw")
                    .field("format", "I420")
                    .field("width", video.width as i32)
                    .field("height", video.height as i32)
                    .field("pixel-aspect-ratio", gst::Fraction::new(1, 1))
                    .build(),
            )?;
            let enc = x264(video, plan)?;
            let profile = capsfilter(gst::Caps::builder("video/x-h264").field("profile", "main").build())?;
            let parse = make("h264parse")?;
            parse.set_property("config-interval", -1i32);
            let q2 = make("queue")?;
            let sink = splitmux(&sink_name, &dir, plan)?;
            add_chain(&pipeline, &[&q, &scale, &raw, &enc, &profile, &parse, &q2])?;
            pipeline.add(&sink).map_err(build_err)?;
            tee.link(&q).map_err(build_err)?;
            let video_pad = sink
                .request_pad_simple("video")
                .ok_or_else(|| build_err("splitmuxsink gave no video pad"))?;
            q2.static_pad("src")
                .expect("queue has a src pad")
                .link(&video_pad)
                .map_err(build_err)?;
            let track = Track {
                name: video.name.clone(),
                kind: RenditionKind::Video {
                    width: video.width as u16,
                    height: video.height as u16,
                },
                target_bitrate: video.bitrate + if plan.video_with_audio { plan.audio_bitrate } else { 0 },
                dir,
                sink_name,
                position_ns: Arc::new(AtomicU64::new(0)),
                avc: Arc::new(Mutex::new(None)),
                with_audio: plan.video_with_audio,
                fragment_start: None,
                segments: Vec::new(),
            };
            track_position(&video_pad, track.position_ns.clone());
            let avc = track.avc.clone();
            parse.static_pad("src").expect("h264parse has a src pad").add_probe(
                gst::PadProbeType::BUFFER,
                move |_, info| {
                    let Some(buffer) = info.buffer() else {
                        return gst::PadProbeReturn::Ok;
                    };
                    let found = buffer
                        .map_readable()
                        .ok()
                        .and_then(|m| avc_codec_from_annex_b(m.as_slice()));
                    match found {
                        Some(codec) => {
                            *avc.lock().expect("codec lock") = Some(codec);
                            gst::PadProbeReturn::Remove
                        }
                        None => gst::PadProbeReturn::Ok,
                    }
                },
            );
            if let (true, Some(audio_tee)) = (plan.video_with_audio, &audio_tee) {
                link_audio(audio_tee, &sink)?;
            }
            tracks.push(track);
        }

        // Poster: one frame at plan.poster_at, at the top rendition's size.
        if let (Some(at), Some(top)) = (plan.poster_at, plan.video.first()) {
            let path = out.join(POSTER_FILE);
            let q = make("queue")?;
            let scale = make("videoconvertscale")?;
            let caps = capsfilter(
                gst::Caps::builder("video/x-raw")
                    .field("width", top.width as i32)
                    .field("height", top.height as i32)
                    .field("pixel-aspect-ratio", gst::Fraction::new(1, 1))
                    .build(),
            )?;
            let jpeg = make("jpegenc")?;
            let sink = gst::ElementFactory::make("filesink")
                .property("location", path.to_string_lossy().as_ref())
                .property("async", false)
                .property("sync", false)
                .build()
                .map_err(build_err)?;
            add_chain(&pipeline, &[&q, &scale, &caps, &jpeg, &sink])?;
            tee.link(&q).map_err(build_err)?;
            let at_ns = at.as_nanos() as u64;
            let state = Mutex::new((None::<u64>, false)); // (first pts, taken)
                                                          // Frames other than the poster are consumed here (`Handled`): `Drop` makes
                                                          // gstreamer-rs 0.23 and GStreamer both release the buffer (criticals, double unref).
            q.static_pad("sink")
                .expect("queue has a sink pad")
                .add_probe(gst::PadProbeType::BUFFER, move |_, info| {
                    let Some(pts) = info.buffer().and_then(|b| b.pts()) else {
                        return gst::PadProbeReturn::Handled;
                    };
                    let mut state = state.lock().expect("poster lock");
                    let first = *state.0.get_or_insert(pts.nseconds());
                    if !state.1 && pts.nseconds().saturating_sub(first) >= at_ns {
                        state.1 = true;
                        return gst::PadProbeReturn::Ok;
                    }
                    gst::PadProbeReturn::Handled
                });
            poster = Some(path);
        }
    }

    if let (Some(name), Some(audio_tee)) = (&plan.audio_only, &audio_tee) {
        let dir = out.join(name);
        let sink_name = "rendition-audio".to_owned();
        let sink = splitmux(&sink_name, &dir, plan)?;
        pipeline.add(&sink).map_err(build_err)?;
        link_audio(audio_tee, &sink)?;
        let track = Track {
            name: name.clone(),
            kind: RenditionKind::Audio,
            target_bitrate: plan.audio_bitrate,
            dir,
            sink_name,
            position_ns: Arc::new(AtomicU64::new(0)),
            avc: Arc::new(Mutex::new(None)),
            with_audio: true,
            fragment_start: None,
            segments: Vec::new(),
        };
        let pad = sink.sink_pads().into_iter().next().expect("audio pad was requested");
        track_position(&pad, track.position_ns.clone());
        tracks.push(track);
    }

    // Link decoded streams to their branch as decodebin finds them; anything else (a second
    // video stream, subtitles) goes to a fakesink. A branch left without a stream gets EOS.
    let pipeline_weak = pipeline.downgrade();
    let heads = Arc::new(Mutex::new((video_head, audio_head)));
    let heads_for_pads = heads.clone();
    decodebin.connect_pad_added(move |_, pad| {
        let Some(pipeline) = pipeline_weak.upgrade() else {
            return;
        };
        let media = pad
            .current_caps()
            .or_else(|| Some(pad.query_caps(None)))
            .and_then(|c| c.structure(0).map(|s| s.name().to_string()))
            .unwrap_or_default();
        let mut heads = heads_for_pads.lock().expect("heads lock");
        let head = if media.starts_with("video/") {
            heads.0.take()
        } else if media.starts_with("audio/") {
            heads.1.take()
        } else {
            None
        };
        let linked = head.is_some_and(|sink| pad.link(&sink).is_ok());
        if !linked {
            if let Ok(fake) = gst::ElementFactory::make("fakesink")
                .property("sync", false)
                .property("async", false)
                .build()
            {
                if pipeline.add(&fake).is_ok() {
                    let _ = fake.sync_state_with_parent();
                    if let Some(sink) = fake.static_pad("sink") {
                        let _ = pad.link(&sink);
                    }
                }
            }
        }
    });
    decodebin.connect_no_more_pads(move |_| {
        let mut heads = heads.lock().expect("heads lock");
        for head in [heads.0.take(), heads.1.take()].into_iter().flatten() {
            head.send_event(gst::event::Eos::new());
        }
    });

    Ok(Built {
        pipeline,
        tracks,
        poster,
    })
}

/// Removes what a failed transcode wrote.
fn remove_outputs(out: &Path, plan: &Plan, created_out: bool) {
    for name in plan.rendition_names() {
        let _ = std::fs::remove_dir_all(out.join(name));
    }
    let _ = std::fs::remove_file(out.join(POSTER_FILE));
    if created_out {
        let _ = std::fs::remove_dir(out);
    }
}

/// Prepares `out`: it must not exist or be an empty directory. Returns whether it was created.
fn prepare_out(out: &Path) -> Result<bool, TranscodeError> {
    match std::fs::read_dir(out) {
        Ok(mut entries) => {
            if entries.next().is_some() {
                return Err(TranscodeError::Output {
                    path: out.to_path_buf(),
                    reason: "it is not empty; give a new or empty directory".into(),
                });
            }
            Ok(false)
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            std::fs::create_dir_all(out).map_err(|source| TranscodeError::Io {
                path: out.to_path_buf(),
                source,
            })?;
            Ok(true)
        }
        Err(source) => Err(TranscodeError::Io {
            path: out.to_path_buf(),
            source,
        }),
    }
}

/// Transcodes `source` into the ladder of `config`, writing `out/<rendition>/segNNNNN.ts` and
/// `out/poster.jpg`. Calls `progress` a few times a second; stops, removes its output and
/// returns [`TranscodeError::Cancelled`] once `cancel` is cancelled. Blocking: run it on a
/// thread of its own (or `spawn_blocking`).
pub fn transcode(
    source: &Path,
    config: &LadderConfig,
    out: &Path,
    mut progress: impl FnMut(Progress),
    cancel: &CancelToken,
) -> Result<TranscodeOutput, TranscodeError> {
    config.validate()?;
    let info = probe(source)?;
    let plan = plan(&info, config)?;
    crate::init().map_err(TranscodeError::Init)?;
    let created_out = prepare_out(out)?;
    let result = run(source, &info, &plan, out, &mut progress, cancel);
    match result {
        Ok(output) => Ok(output),
        Err(e) => {
            remove_outputs(out, &plan, created_out);
            Err(e)
        }
    }
}

fn run(
    source: &Path,
    info: &MediaInfo,
    plan: &Plan,
    out: &Path,
    progress: &mut dyn FnMut(Progress),
    cancel: &CancelToken,
) -> Result<TranscodeOutput, TranscodeError> {
    for name in plan.rendition_names() {
        let dir = out.join(name);
        std::fs::create_dir_all(&dir).map_err(|source| TranscodeError::Io { path: dir, source })?;
    }
    let Built {
        pipeline,
        mut tracks,
        poster,
    } = build_pipeline(source, info, plan, out)?;
    let started = Instant::now();
    let stop = |pipeline: &gst::Pipeline| {
        let _ = pipeline.set_state(gst::State::Null);
    };
    if let Err(e) = pipeline.set_state(gst::State::Playing) {
        let detail = pipeline
            .bus()
            .and_then(|b| b.pop_filtered(&[gst::MessageType::Error]))
            .map(|m| match m.view() {
                gst::MessageView::Error(err) => err.error().to_string(),
                _ => String::new(),
            })
            .unwrap_or_default();
        stop(&pipeline);
        return Err(TranscodeError::Build(format!("{e} {detail}")));
    }
    let bus = pipeline.bus().expect("a pipeline has a bus");
    let duration = info.duration;
    let mut last_position = Duration::ZERO;
    let mut last_move = Instant::now();
    let mut last_report = Instant::now() - Duration::from_secs(1);
    loop {
        if cancel.is_cancelled() {
            stop(&pipeline);
            return Err(TranscodeError::Cancelled);
        }
        let position = Duration::from_nanos(
            tracks
                .iter()
                .map(|t| t.position_ns.load(Ordering::Relaxed))
                .min()
                .unwrap_or(0),
        );
        if position != last_position {
            last_position = position;
            last_move = Instant::now();
        } else if last_move.elapsed() > STALL_TIMEOUT {
            stop(&pipeline);
            return Err(TranscodeError::Stalled { position });
        }
        if last_report.elapsed() >= Duration::from_millis(250) {
            last_report = Instant::now();
            progress(Progress {
                position: position.min(duration),
                duration,
            });
        }
        let Some(msg) = bus.timed_pop(gst::ClockTime::from_mseconds(100)) else {
            continue;
        };
        match msg.view() {
            gst::MessageView::Eos(_) => break,
            gst::MessageView::Error(err) => {
                let element = err
                    .src()
                    .map(|s| s.path_string().to_string())
                    .unwrap_or_else(|| "the pipeline".into());
                let message = err.error().to_string();
                let debug = err.debug().map(|d| d.to_string());
                stop(&pipeline);
                return Err(TranscodeError::Pipeline {
                    element,
                    message,
                    debug,
                });
            }
            gst::MessageView::Element(el) => {
                let (Some(s), Some(src)) = (el.structure(), msg.src()) else {
                    continue;
                };
                let Some(track) = tracks.iter_mut().find(|t| t.sink_name == src.name().as_str()) else {
                    continue;
                };
                let running_time = s.get::<u64>("running-time").ok();
                match s.name().as_str() {
                    "splitmuxsink-fragment-opened" => track.fragment_start = running_time,
                    "splitmuxsink-fragment-closed" => {
                        let location = s.get::<String>("location").unwrap_or_default();
                        let path = PathBuf::from(location);
                        let size = std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
                        let ns = running_time
                            .zip(track.fragment_start)
                            .map(|(end, start)| end.saturating_sub(start))
                            .unwrap_or(0);
                        track.segments.push(SegmentFile {
                            path,
                            duration: Duration::from_nanos(ns),
                            size,
                        });
                    }
                    _ => {}
                }
            }
            _ => {}
        }
    }
    stop(&pipeline);
    let elapsed = started.elapsed();
    progress(Progress {
        position: duration,
        duration,
    });

    let mut renditions = Vec::new();
    for track in tracks {
        if track.segments.is_empty() {
            return Err(TranscodeError::NoSegments(track.name));
        }
        let video = match track.kind {
            RenditionKind::Video { .. } => Some(
                track
                    .avc
                    .lock()
                    .expect("codec lock")
                    .clone()
                    .ok_or_else(|| TranscodeError::NoCodecInfo(track.name.clone()))?,
            ),
            RenditionKind::Audio => None,
        };
        renditions.push(RenditionOutput {
            codecs: codecs_string(video.as_deref(), track.with_audio),
            name: track.name,
            kind: track.kind,
            target_bitrate: track.target_bitrate,
            dir: track.dir,
            segments: track.segments,
        });
    }
    let poster = poster.filter(|p| std::fs::metadata(p).is_ok_and(|m| m.len() > 0));
    if poster.is_none() {
        let _ = std::fs::remove_file(out.join(POSTER_FILE));
    }
    Ok(TranscodeOutput {
        source: info.clone(),
        plan: plan.clone(),
        renditions,
        poster,
        elapsed,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn segment(ms: u64, size: u64) -> SegmentFile {
        SegmentFile {
            path: PathBuf::from("x.ts"),
            duration: Duration::from_millis(ms),
            size,
        }
    }

    #[test]
    fn media_peak_bandwidth_ignores_a_short_last_segment() {
        let r = RenditionOutput {
            name: "360p".into(),
            kind: RenditionKind::Video {
                width: 640,
                height: 360,
            },
            target_bitrate: 564_000,
            codecs: "avc1.4d401e,mp4a.40.2".into(),
            dir: PathBuf::from("360p"),
            segments: vec![segment(4_000, 250_000), segment(4_000, 300_000), segment(500, 60_000)],
        };
        assert_eq!(r.peak_bandwidth(Duration::from_secs(4)), 600_000);
        assert_eq!(r.size(), 610_000);
        let short = RenditionOutput {
            segments: vec![segment(1_000, 10_000)],
            ..r
        };
        assert_eq!(short.peak_bandwidth(Duration::from_secs(4)), 80_000);
    }

    #[test]
    fn media_progress_fraction_is_clamped() {
        let p = |pos, dur| Progress {
            position: Duration::from_secs(pos),
            duration: Duration::from_secs(dur),
        };
        assert_eq!(p(5, 10).fraction(), 0.5);
        assert_eq!(p(12, 10).fraction(), 1.0);
        assert_eq!(p(0, 0).fraction(), 0.0);
    }

    #[test]
    fn media_missing_elements_name_their_package() {
        assert_eq!(package_for("x264enc"), "gstreamer1.0-plugins-ugly");
        assert_eq!(package_for("avenc_aac"), "gstreamer1.0-libav");
        assert_eq!(package_for("mpegtsmux"), "gstreamer1.0-plugins-bad");
        assert_eq!(package_for("splitmuxsink"), "gstreamer1.0-plugins-good");
    }

    #[test]
    fn media_cancel_token_is_shared_between_clones() {
        let token = CancelToken::new();
        let other = token.clone();
        assert!(!token.is_cancelled());
        other.cancel();
        assert!(token.is_cancelled());
    }
}
