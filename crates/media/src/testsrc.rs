//! Test sources made with GStreamer's test elements (videotestsrc, audiotestsrc), for tests,
//! benchmarks and demos that need real media without shipping any.

use std::path::Path;

use gstreamer as gst;
use gstreamer::prelude::*;

/// The shape of a generated source file (MP4: H.264 + AAC, or M4A for audio only).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TestSource {
    pub width: u32,
    pub height: u32,
    pub fps: u32,
    pub seconds: u32,
    pub video: bool,
    pub audio: bool,
}

impl TestSource {
    /// `seconds` of `width`x`height` at 25 frames per second with a 440 Hz tone.
    pub fn video_audio(width: u32, height: u32, seconds: u32) -> Self {
        Self {
            width,
            height,
            fps: 25,
            seconds,
            video: true,
            audio: true,
        }
    }
}

/// Writes `source` to `path` (MP4 container). The video moves (a scrolling SMPTE pattern) so
/// the encoder has real work; it is encoded fast and at a high bit rate.
pub fn make_test_source(path: &Path, source: &TestSource) -> Result<(), String> {
    crate::init()?;
    let frames = source.fps * source.seconds;
    let mut desc = String::from("mp4mux name=mux ! filesink name=sink ");
    if source.video {
        desc.push_str(&format!(
            "videotestsrc num-buffers={frames} pattern=smpte horizontal-speed=4 \
             ! video/x-raw,width={w},height={h},framerate={fps}/1,format=I420 \
             ! x264enc speed-preset=ultrafast bitrate=4000 key-int-max={fps} ! h264parse ! queue ! mux. ",
            w = source.width,
            h = source.height,
            fps = source.fps,
        ));
    }
    if source.audio {
        // 48 kHz in buffers of one video frame's worth of samples.
        let per_buffer = 48_000 / source.fps;
        desc.push_str(&format!(
            "audiotestsrc num-buffers={frames} samplesperbuffer={per_buffer} wave=sine freq=440 \
             ! audio/x-raw,rate=48000,channels=2 ! audioconvert ! voaacenc bitrate=128000 ! aacparse ! queue ! mux. "
        ));
    }
    let pipeline = gst::parse::launch(&desc)
        .map_err(|e| format!("test source pipeline: {e}"))?
        .downcast::<gst::Pipeline>()
        .map_err(|_| "test source pipeline is not a pipeline".to_owned())?;
    let sink = pipeline.by_name("sink").ok_or("no sink in test pipeline")?;
    sink.set_property("location", path.to_string_lossy().as_ref());
    pipeline
        .set_state(gst::State::Playing)
        .map_err(|e| format!("test source: {e}"))?;
    let bus = pipeline.bus().expect("a pipeline has a bus");
    let result = match bus.timed_pop_filtered(gst::ClockTime::NONE, &[gst::MessageType::Eos, gst::MessageType::Error]) {
        Some(msg) => match msg.view() {
            gst::MessageView::Error(e) => Err(format!("test source: {} ({:?})", e.error(), e.debug())),
            _ => Ok(()),
        },
        None => Err("test source: bus closed".into()),
    };
    let _ = pipeline.set_state(gst::State::Null);
    result
}

/// Where a [`LiveTestFeed`] sends its MPEG-TS.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FeedTarget {
    /// MPEG-TS over UDP to `addr`.
    Udp(std::net::SocketAddr),
    /// MPEG-TS to an SRT listener at `addr` (this feed is the caller).
    Srt(std::net::SocketAddr),
}

/// The codecs a [`LiveTestFeed`] sends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FeedCodecs {
    /// H.264 + AAC (what an ingest passes through).
    H264Aac,
    /// MPEG-2 video + MPEG-1 layer 2 audio (what an ingest must transcode).
    Mpeg2Mp2,
}

/// A live encoder stand-in: a moving test pattern and a tone, encoded in real time and sent as
/// MPEG-TS, until dropped.
pub struct LiveTestFeed {
    pipeline: gst::Pipeline,
}

impl std::fmt::Debug for LiveTestFeed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LiveTestFeed").finish_non_exhaustive()
    }
}

impl LiveTestFeed {
    /// Starts sending 320x240 at 25 frames per second (a key frame every second) to `target`.
    pub fn start(target: &FeedTarget, codecs: FeedCodecs) -> Result<Self, String> {
        crate::init()?;
        let (video, audio) = match codecs {
            FeedCodecs::H264Aac => (
                "x264enc tune=zerolatency speed-preset=ultrafast bitrate=300 key-int-max=25 ! h264parse config-interval=-1",
                "voaacenc bitrate=64000 ! aacparse",
            ),
            FeedCodecs::Mpeg2Mp2 => (
                "mpeg2enc format=3 ! mpegvideoparse",
                "avenc_mp2 bitrate=128000 ! mpegaudioparse",
            ),
        };
        let sink = match target {
            FeedTarget::Udp(addr) => format!("udpsink host={} port={} sync=true", addr.ip(), addr.port()),
            FeedTarget::Srt(addr) => {
                format!("srtsink uri=\"srt://{addr}?mode=caller\" latency=120 wait-for-connection=false")
            }
        };
        let desc = format!(
            "mpegtsmux name=mux alignment=7 ! {sink} \
             videotestsrc is-live=true pattern=smpte horizontal-speed=4 \
             ! video/x-raw,width=320,height=240,framerate=25/1,format=I420 ! {video} ! queue ! mux. \
             audiotestsrc is-live=true wave=sine freq=440 ! audioconvert ! audioresample \
             ! audio/x-raw,rate=48000,channels=2 ! {audio} ! queue ! mux."
        );
        let pipeline = gst::parse::launch(&desc)
            .map_err(|e| format!("live test feed pipeline: {e}"))?
            .downcast::<gst::Pipeline>()
            .map_err(|_| "live test feed pipeline is not a pipeline".to_owned())?;
        pipeline
            .set_state(gst::State::Playing)
            .map_err(|e| format!("live test feed: {e}"))?;
        Ok(Self { pipeline })
    }
}

impl Drop for LiveTestFeed {
    fn drop(&mut self) {
        let _ = self.pipeline.set_state(gst::State::Null);
    }
}
