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
