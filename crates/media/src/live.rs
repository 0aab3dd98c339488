//! Live ingest: a GStreamer pipeline takes a live feed (MPEG-TS over UDP, an SRT listener, or a
//! test pattern) and cuts it into MPEG-TS segments of about [`LiveIngestConfig::segment`] each,
//! every one starting on a key frame, handed to a callback as they close.
//!
//! ```text
//!   udpsrc / srtsrc ─ tsdemux ─ h264parse ─┐            (passthrough: H.264 + AAC as sent)
//!                             └ aacparse ──┤
//!   udpsrc / srtsrc ─ decodebin ─ x264enc ─┤            (transcode: anything GStreamer decodes)
//!                             └ voaacenc ──┤
//!   videotestsrc ─ x264enc ────────────────┤            (test pattern, for tests and demos)
//!   audiotestsrc ─ voaacenc ───────────────┴─ splitmuxsink (mpegtsmux, key-frame cuts)
//! ```
//!
//! `splitmuxsink` writes each segment to the spool directory and posts a message when it is
//! closed; the bus thread reads the file, deletes it and calls back with the bytes and the
//! segment's duration (from the running times of its opening and closing). The pipeline text is
//! built by a pure function ([`pipeline_description`]) with unit tests.

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use gstreamer as gst;
use gstreamer::prelude::*;

/// Where the live feed comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LiveInput {
    /// A moving test pattern and a tone, encoded here (H.264 + AAC).
    TestPattern { width: u32, height: u32, fps: u32 },
    /// MPEG-TS over UDP (e.g. an encoder's or OBS's `udp://` output), listened for on
    /// `address:port` (a multicast group address joins the group).
    UdpMpegTs { address: IpAddr, port: u16 },
    /// An SRT listener on `port` (callers push MPEG-TS with `srt://host:port`), with the SRT
    /// receive latency in milliseconds.
    Srt { port: u16, latency_ms: u32 },
}

/// What is done to the feed's codecs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LiveCodecs {
    /// The feed is H.264 + AAC: parsed and segmented as sent (no quality lost, little CPU).
    Passthrough,
    /// The feed is something else: decoded and encoded to H.264 at `video_kbps` + AAC.
    Transcode { video_kbps: u32 },
}

/// How a live feed is ingested.
#[derive(Debug, Clone)]
pub struct LiveIngestConfig {
    pub input: LiveInput,
    pub codecs: LiveCodecs,
    /// Whether the feed has an audio track to carry (a video-only feed must say `false`, or the
    /// segmenter waits for audio that never comes).
    pub audio: bool,
    /// Target segment length; each segment starts on a key frame (default 2 s).
    pub segment: Duration,
    /// Video bit rate of the test pattern.
    pub test_video_kbps: u32,
    /// Where segments are written while they are cut (one file at a time; deleted once read).
    pub spool: PathBuf,
}

impl LiveIngestConfig {
    /// 2 s segments, with audio, passthrough.
    pub fn new(input: LiveInput, spool: impl Into<PathBuf>) -> Self {
        Self {
            input,
            codecs: LiveCodecs::Passthrough,
            audio: true,
            segment: DEFAULT_SEGMENT,
            test_video_kbps: 400,
            spool: spool.into(),
        }
    }
}

/// Default segment length.
pub const DEFAULT_SEGMENT: Duration = Duration::from_secs(2);

/// One cut segment: MPEG-TS bytes starting on a key frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CutSegment {
    pub duration_ms: u32,
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
    #[error("{0}")]
    Init(String),
}

/// Which Debian package ships a GStreamer element used here.
fn package_of(element: &str) -> &'static str {
    match element {
        "srtsrc" | "tsdemux" => "gstreamer1.0-plugins-bad",
        "udpsrc" => "gstreamer1.0-plugins-good",
        other => crate::transcode::package_for(other),
    }
}

/// The elements a pipeline for `config` needs.
pub fn required_elements(config: &LiveIngestConfig) -> Vec<&'static str> {
    let mut e = vec!["splitmuxsink", "mpegtsmux", "h264parse"];
    match config.input {
        LiveInput::TestPattern { .. } => e.extend(["videotestsrc", "x264enc"]),
        LiveInput::UdpMpegTs { .. } => e.push("udpsrc"),
        LiveInput::Srt { .. } => e.push("srtsrc"),
    }
    if !matches!(config.input, LiveInput::TestPattern { .. }) {
        match config.codecs {
            LiveCodecs::Passthrough => e.push("tsdemux"),
            LiveCodecs::Transcode { .. } => e.extend(["decodebin", "x264enc"]),
        }
    }
    if config.audio {
        e.push("aacparse");
        let encodes = matches!(config.input, LiveInput::TestPattern { .. })
            || matches!(config.codecs, LiveCodecs::Transcode { .. });
        if encodes {
            e.push("voaacenc");
        }
        if matches!(config.input, LiveInput::TestPattern { .. }) {
            e.push("audiotestsrc");
        }
    }
    e
}

/// The `gst-launch` description of the pipeline for `config`, segments written to
/// `location` (a `printf` pattern). Pure.
pub fn pipeline_description(config: &LiveIngestConfig, location: &str) -> String {
    let ns = config.segment.as_nanos().max(1_000_000);
    let mut d = format!(
        "splitmuxsink name=sink muxer-factory=mpegtsmux send-keyframe-requests=true max-size-bytes=0 \
         max-size-time={ns} location=\"{location}\" "
    );
    let x264 = |kbps: u32, fps: u32| {
        let gop = (u128::from(fps) * config.segment.as_millis() / 1000).max(1);
        format!(
            "x264enc tune=zerolatency speed-preset=ultrafast bitrate={kbps} key-int-max={gop} \
             ! video/x-h264,profile=main ! h264parse config-interval=-1"
        )
    };
    let aac = "audioconvert ! audioresample ! audio/x-raw,rate=48000,channels=2 ! voaacenc bitrate=64000 ! aacparse";
    let source = match &config.input {
        LiveInput::TestPattern { width, height, fps } => {
            d.push_str(&format!(
                "videotestsrc is-live=true pattern=ball ! video/x-raw,width={width},height={height},framerate={fps}/1,format=I420 \
                 ! {} ! queue ! sink.video ",
                x264(config.test_video_kbps, *fps)
            ));
            if config.audio {
                d.push_str(&format!(
                    "audiotestsrc is-live=true wave=sine freq=440 ! {aac} ! queue ! sink.audio_0 "
                ));
            }
            return d;
        }
        LiveInput::UdpMpegTs { address, port } => format!(
            "udpsrc address={address} port={port} buffer-size=2097152 caps=\"video/mpegts,systemstream=(boolean)true,packetsize=(int)188\""
        ),
        LiveInput::Srt { port, latency_ms } => {
            format!("srtsrc uri=\"srt://:{port}?mode=listener\" latency={latency_ms} keep-listening=true")
        }
    };
    match config.codecs {
        LiveCodecs::Passthrough => {
            d.push_str(&format!(
                "{source} ! tsdemux name=demux latency=200 demux. ! h264parse config-interval=-1 ! queue ! sink.video "
            ));
            if config.audio {
                d.push_str("demux. ! aacparse ! queue ! sink.audio_0 ");
            }
        }
        LiveCodecs::Transcode { video_kbps } => {
            d.push_str(&format!(
                "{source} ! decodebin name=dec dec. ! videoconvert ! video/x-raw,format=I420 ! {} ! queue ! sink.video ",
                x264(video_kbps, 25)
            ));
            if config.audio {
                d.push_str(&format!("dec. ! {aac} ! queue ! sink.audio_0 "));
            }
        }
    }
    d
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
    /// every segment as soon as it is closed (so it may block, e.g. to store and announce it).
    pub fn start(
        config: &LiveIngestConfig,
        mut on_segment: impl FnMut(CutSegment) + Send + 'static,
    ) -> Result<Self, LiveIngestError> {
        crate::init().map_err(LiveIngestError::Init)?;
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
        let location = config.spool.join("live-%08d.ts");
        let description = pipeline_description(config, &location.to_string_lossy());
        tracing::debug!(pipeline = %description, "starting the live ingest");
        let pipeline = gst::parse::launch(&description)
            .map_err(|e| LiveIngestError::Build(e.to_string()))?
            .downcast::<gst::Pipeline>()
            .map_err(|_| LiveIngestError::Build("the description is not a pipeline".into()))?;
        let bus = pipeline.bus().expect("a pipeline has a bus");
        pipeline
            .set_state(gst::State::Playing)
            .map_err(|e| LiveIngestError::Pipeline(format!("could not start: {e}")))?;
        let stop = Arc::new(AtomicBool::new(false));
        let bus_thread = {
            let stop = stop.clone();
            std::thread::Builder::new()
                .name("live-ingest".into())
                .spawn(move || {
                    let mut opened_at: Option<u64> = None;
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
                                let running = s.get::<u64>("running-time").ok();
                                if s.name() == "splitmuxsink-fragment-opened" {
                                    opened_at = running;
                                } else if s.name() == "splitmuxsink-fragment-closed" {
                                    let Ok(location) = s.get::<String>("location") else {
                                        continue;
                                    };
                                    let duration_ms = match (opened_at, running) {
                                        (Some(a), Some(b)) if b > a => ((b - a) / 1_000_000) as u32,
                                        _ => 0,
                                    };
                                    match take_file(Path::new(&location)) {
                                        Ok(bytes) if !bytes.is_empty() => on_segment(CutSegment { duration_ms, bytes }),
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
    fn pipelines_segment_on_key_frames_and_pass_h264_through() {
        let mut c = LiveIngestConfig::new(
            LiveInput::UdpMpegTs {
                address: [127, 0, 0, 1].into(),
                port: 5004,
            },
            "/tmp/x",
        );
        let d = pipeline_description(&c, "/tmp/x/%08d.ts");
        assert!(d.contains("max-size-time=2000000000"), "{d}");
        assert!(d.contains("udpsrc address=127.0.0.1 port=5004"), "{d}");
        assert!(d.contains("tsdemux") && !d.contains("x264enc"), "{d}");
        assert!(d.contains("aacparse ! queue ! sink.audio_0"), "{d}");
        c.codecs = LiveCodecs::Transcode { video_kbps: 800 };
        c.audio = false;
        c.input = LiveInput::Srt {
            port: 7001,
            latency_ms: 120,
        };
        let d = pipeline_description(&c, "/tmp/x/%08d.ts");
        assert!(d.contains("srt://:7001?mode=listener"), "{d}");
        assert!(
            d.contains("decodebin") && d.contains("bitrate=800 key-int-max=50"),
            "{d}"
        );
        assert!(!d.contains("audio_0"), "{d}");
        assert!(required_elements(&c).contains(&"srtsrc"));
    }
}
