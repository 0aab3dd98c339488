//! GStreamer media pipeline: probe an upload, transcode it to the rendition ladder.
//!
//! - [`probe()`]: the GStreamer discoverer reads a file's container, duration and streams, and
//!   refuses what is not playable media with a [`ProbeError`] that says why.
//! - [`ladder`]: the rendition ladder from config and the pure choice of renditions for a
//!   source ([`plan`]: never upscale, audio-only sources get only the audio rendition).
//! - [`transcode()`]: one GStreamer pipeline decodes the source once and encodes every rendition
//!   (H.264 Main 4:2:0 + AAC-LC) into MPEG-TS segments that start on key frames, plus a poster
//!   JPEG, with progress reporting and cancellation.
//! - [`lesson`]: turns a transcode's output (and attachments) into a
//!   [`courseway_content::LessonManifest`] and the bytes of its chunks, ready for the origin's
//!   `publish`.
//! - [`codecs`]: RFC 6381 codec strings (`avc1.4d401f`) read from the encoded stream.
//!
//! GStreamer does the IO; the choices (ladder, names, codec strings, manifest) are pure
//! functions with unit tests. HLS playlists are written by `courseway-hls`, which the station
//! uses too without depending on GStreamer.

pub mod codecs;
pub mod ladder;
pub mod lesson;
pub mod live;
pub mod live_feed;
pub mod probe;
pub mod testsrc;
pub mod transcode;

use std::sync::OnceLock;

pub use ladder::{plan, LadderConfig, Plan, PlanError, PlannedVideo, VideoRung};
pub use lesson::{build_lesson, build_manifest, AttachmentInput, LessonBuild, LessonError, LessonMeta};
pub use probe::{probe, AudioStream, MediaInfo, ProbeError, VideoStream};
pub use transcode::{transcode, CancelToken, Progress, RenditionOutput, SegmentFile, TranscodeError, TranscodeOutput};

/// Initialises GStreamer once per process; later calls return the first result.
pub fn init() -> Result<(), String> {
    static INIT: OnceLock<Result<(), String>> = OnceLock::new();
    INIT.get_or_init(|| gstreamer::init().map_err(|e| format!("GStreamer could not start: {e}")))
        .clone()
}
