//! Probing an upload with the GStreamer discoverer: is it playable media, and what is in it?
//!
//! [`probe`] reads the container, duration and streams of a file and refuses anything that a
//! transcode could not turn into a lesson, with a [`ProbeError`] that names the reason. The
//! checks on what the discoverer found ([`MediaInfo::check`]) are pure and unit-tested; the
//! mapping of GStreamer's errors to reasons is [`classify_failure`].

use std::path::{Path, PathBuf};
use std::time::Duration;

use gstreamer as gst;
use gstreamer::glib;
use gstreamer_pbutils as pbutils;
use gstreamer_pbutils::prelude::*;
use thiserror::Error;

/// How long the discoverer may take on one file before it is given up.
pub const PROBE_TIMEOUT: Duration = Duration::from_secs(30);

/// What the discoverer found in a playable file.
#[derive(Debug, Clone, PartialEq)]
pub struct MediaInfo {
    /// Human-readable container format, e.g. `ISO MP4/M4A`, `MPEG-2 Transport Stream`.
    pub container: Option<String>,
    pub duration: Duration,
    pub video: Vec<VideoStream>,
    pub audio: Vec<AudioStream>,
    /// Streams that are neither audio nor video (subtitles, data), ignored by the transcode.
    pub other_streams: usize,
}

/// One video stream.
#[derive(Debug, Clone, PartialEq)]
pub struct VideoStream {
    /// Codec description, e.g. `H.264 (High Profile)`.
    pub codec: String,
    pub width: u32,
    pub height: u32,
    /// Frames per second as a fraction (`0/1` when variable or unknown).
    pub framerate: (i32, i32),
    /// Pixel aspect ratio (`1/1` for square pixels).
    pub pixel_aspect: (i32, i32),
    pub interlaced: bool,
    /// A still picture (cover art, a photo) rather than moving video.
    pub is_image: bool,
}

impl VideoStream {
    /// Width in square pixels: the width the picture is shown at.
    pub fn display_width(&self) -> u32 {
        let (n, d) = self.pixel_aspect;
        if n <= 0 || d <= 0 {
            return self.width;
        }
        (u64::from(self.width) * n as u64 / d as u64) as u32
    }

    /// Frames per second, if known.
    pub fn fps(&self) -> Option<f64> {
        let (n, d) = self.framerate;
        (n > 0 && d > 0).then(|| f64::from(n) / f64::from(d))
    }
}

/// One audio stream.
#[derive(Debug, Clone, PartialEq)]
pub struct AudioStream {
    /// Codec description, e.g. `MPEG-4 AAC`.
    pub codec: String,
    pub channels: u32,
    pub sample_rate: u32,
}

impl MediaInfo {
    /// The stream a transcode uses: the first moving-video stream.
    pub fn main_video(&self) -> Option<&VideoStream> {
        self.video.iter().find(|v| !v.is_image)
    }

    /// The first audio stream.
    pub fn main_audio(&self) -> Option<&AudioStream> {
        self.audio.first()
    }

    /// Whether this can be made into a lesson: some moving video or audio, a duration.
    pub fn check(&self, path: &Path) -> Result<(), ProbeError> {
        let path = path.to_path_buf();
        if self.main_video().is_none() && self.audio.is_empty() {
            if self.video.iter().any(|v| v.is_image) {
                return Err(ProbeError::StillImage { path });
            }
            return Err(ProbeError::NoStreams { path });
        }
        if let Some(v) = self.main_video() {
            if v.width == 0 || v.height == 0 {
                return Err(ProbeError::Corrupt {
                    path,
                    reason: format!("its video stream has a frame size of {}x{}", v.width, v.height),
                });
            }
        }
        if self.duration.is_zero() {
            return Err(ProbeError::ZeroDuration { path });
        }
        Ok(())
    }
}

/// Why a file is not accepted as media.
#[derive(Debug, Error)]
pub enum ProbeError {
    #[error("cannot read {}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{} is empty (0 bytes); upload the lesson's video or audio file", path.display())]
    Empty { path: PathBuf },
    #[error(
        "{} is not a media file ({reason}); upload a video or audio file (MP4, MKV, MPEG-TS, WebM, MP3, WAV, ...)",
        path.display()
    )]
    NotMedia { path: PathBuf, reason: String },
    #[error("{} is truncated: {reason}; the upload or copy did not finish, send the whole file again", path.display())]
    Truncated { path: PathBuf, reason: String },
    #[error("{} is damaged and cannot be played: {reason}", path.display())]
    Corrupt { path: PathBuf, reason: String },
    #[error(
        "{} needs GStreamer plugins this machine does not have ({missing}); install them or re-encode the file to H.264/AAC",
        path.display()
    )]
    MissingPlugins { path: PathBuf, missing: String },
    #[error("{} has no audio or video stream", path.display())]
    NoStreams { path: PathBuf },
    #[error("{} is a still image, not a video; upload the lesson's video or audio", path.display())]
    StillImage { path: PathBuf },
    #[error("{} has no duration (zero or unknown length); it cannot be cut into segments", path.display())]
    ZeroDuration { path: PathBuf },
    #[error("probing {} took longer than {}s; the file may be damaged or on a slow disk", path.display(), PROBE_TIMEOUT.as_secs())]
    Timeout { path: PathBuf },
    #[error("{0}")]
    Init(String),
}

/// Probes `path`: container, duration and streams, or why it is not playable media.
pub fn probe(path: &Path) -> Result<MediaInfo, ProbeError> {
    let meta = std::fs::metadata(path).map_err(|source| ProbeError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    if !meta.is_file() {
        return Err(ProbeError::Io {
            path: path.to_path_buf(),
            source: std::io::Error::new(std::io::ErrorKind::InvalidInput, "not a regular file"),
        });
    }
    if meta.len() == 0 {
        return Err(ProbeError::Empty {
            path: path.to_path_buf(),
        });
    }
    if let Some(reason) = iso_bmff_overrun(path, meta.len()) {
        return Err(ProbeError::Truncated {
            path: path.to_path_buf(),
            reason,
        });
    }
    crate::init().map_err(ProbeError::Init)?;
    let uri = file_uri(path)?;
    let discoverer = pbutils::Discoverer::new(gst::ClockTime::from_nseconds(PROBE_TIMEOUT.as_nanos() as u64))
        .map_err(|e| ProbeError::Init(format!("GStreamer discoverer could not start: {e}")))?;
    let path_buf = path.to_path_buf();
    let info = match discoverer.discover_uri(&uri) {
        Ok(info) => info,
        Err(e) => return Err(classify_failure(path, &error_text(&e), e.kind::<gst::StreamError>())),
    };
    match info.result() {
        pbutils::DiscovererResult::Ok => {}
        pbutils::DiscovererResult::Timeout => return Err(ProbeError::Timeout { path: path_buf }),
        pbutils::DiscovererResult::MissingPlugins => {
            let missing = info
                .missing_elements_installer_details()
                .iter()
                .filter_map(|d| d.split('|').nth(3).map(str::to_owned))
                .collect::<Vec<_>>()
                .join(", ");
            return Err(ProbeError::MissingPlugins {
                path: path_buf,
                missing: if missing.is_empty() { "unknown".into() } else { missing },
            });
        }
        other => {
            return Err(ProbeError::NotMedia {
                path: path_buf,
                reason: format!("the discoverer answered {other:?}"),
            })
        }
    }
    let media = media_info(&info);
    media.check(path)?;
    Ok(media)
}

/// The `file://` URI of `path` (made absolute first).
pub(crate) fn file_uri(path: &Path) -> Result<String, ProbeError> {
    let absolute = std::fs::canonicalize(path).map_err(|source| ProbeError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    glib::filename_to_uri(&absolute, None)
        .map(|u| u.to_string())
        .map_err(|e| ProbeError::Io {
            path: path.to_path_buf(),
            source: std::io::Error::new(std::io::ErrorKind::InvalidInput, e.to_string()),
        })
}

/// For an ISO base media file (MP4, MOV, M4A: first box `ftyp`), the reason it is truncated if
/// a top-level box runs past the end of the file; `None` for a whole file or another format.
fn iso_bmff_overrun(path: &Path, len: u64) -> Option<String> {
    use std::io::{Read, Seek, SeekFrom};
    let mut file = std::fs::File::open(path).ok()?;
    let mut offset = 0u64;
    let mut first = true;
    while offset + 8 <= len {
        let mut header = [0u8; 16];
        file.seek(SeekFrom::Start(offset)).ok()?;
        let got = file.read(&mut header).ok()?;
        let (size, kind) = top_level_box(&header[..got])?;
        if first && kind != *b"ftyp" {
            return None;
        }
        first = false;
        // `None`: the box extends to the end of the file.
        let size = size?;
        if offset + size > len {
            return Some(format!(
                "its '{}' box needs {} bytes but the file ends {} bytes into it",
                String::from_utf8_lossy(&kind),
                size,
                len - offset
            ));
        }
        offset += size;
    }
    None
}

/// Size (`None`: to the end of the file) and type of the ISO BMFF box starting `header`.
pub(crate) fn top_level_box(header: &[u8]) -> Option<(Option<u64>, [u8; 4])> {
    if header.len() < 8 {
        return None;
    }
    let kind: [u8; 4] = header[4..8].try_into().ok()?;
    if !kind.iter().all(|b| b.is_ascii_graphic()) {
        return None;
    }
    match u32::from_be_bytes(header[..4].try_into().ok()?) {
        0 => Some((None, kind)),
        1 if header.len() >= 16 => {
            let size = u64::from_be_bytes(header[8..16].try_into().ok()?);
            (size >= 16).then_some((Some(size), kind))
        }
        size if size >= 8 => Some((Some(u64::from(size)), kind)),
        _ => None,
    }
}

fn error_text(e: &glib::Error) -> String {
    e.message().to_owned()
}

/// Maps a GStreamer failure while reading `path` to the reason a person is told.
pub fn classify_failure(path: &Path, message: &str, stream_error: Option<gst::StreamError>) -> ProbeError {
    let path = path.to_path_buf();
    let reason = message.trim().trim_end_matches('.').to_owned();
    let lower = message.to_lowercase();
    if lower.contains("incomplete") || lower.contains("truncated") || lower.contains("end of file") {
        return ProbeError::Truncated { path, reason };
    }
    if lower.contains("no playable streams") {
        return ProbeError::NoStreams { path };
    }
    match stream_error {
        Some(gst::StreamError::TypeNotFound) | Some(gst::StreamError::WrongType) => {
            ProbeError::NotMedia { path, reason }
        }
        Some(gst::StreamError::CodecNotFound) => ProbeError::MissingPlugins { path, missing: reason },
        _ if lower.contains("could not determine type") => ProbeError::NotMedia { path, reason },
        _ => ProbeError::Corrupt { path, reason },
    }
}

fn caps_description(caps: Option<gst::Caps>) -> String {
    caps.map(|c| pbutils::pb_utils_get_codec_description(&c).to_string())
        .unwrap_or_else(|| "unknown".into())
}

fn media_info(info: &pbutils::DiscovererInfo) -> MediaInfo {
    let container = info
        .container_streams()
        .first()
        .map(|c| caps_description(c.caps()))
        .or_else(|| {
            info.stream_info()
                .filter(|s| s.is::<pbutils::DiscovererContainerInfo>())
                .map(|s| caps_description(s.caps()))
        });
    let video = info
        .video_streams()
        .iter()
        .map(|v| VideoStream {
            codec: caps_description(v.caps()),
            width: v.width(),
            height: v.height(),
            framerate: (v.framerate().numer(), v.framerate().denom()),
            pixel_aspect: (v.par().numer(), v.par().denom()),
            interlaced: v.is_interlaced(),
            is_image: v.is_image(),
        })
        .collect();
    let audio = info
        .audio_streams()
        .iter()
        .map(|a| AudioStream {
            codec: caps_description(a.caps()),
            channels: a.channels(),
            sample_rate: a.sample_rate(),
        })
        .collect();
    let av = info.video_streams().len() + info.audio_streams().len();
    MediaInfo {
        container,
        duration: info
            .duration()
            .map(|d| Duration::from_nanos(d.nseconds()))
            .unwrap_or_default(),
        video,
        audio,
        other_streams: info.stream_list().len().saturating_sub(av),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn video(width: u32, height: u32) -> VideoStream {
        VideoStream {
            codec: "H.264".into(),
            width,
            height,
            framerate: (25, 1),
            pixel_aspect: (1, 1),
            interlaced: false,
            is_image: false,
        }
    }

    fn info(video: Vec<VideoStream>, audio: usize, duration_ms: u64) -> MediaInfo {
        MediaInfo {
            container: Some("ISO MP4/M4A".into()),
            duration: Duration::from_millis(duration_ms),
            video,
            audio: (0..audio)
                .map(|_| AudioStream {
                    codec: "MPEG-4 AAC".into(),
                    channels: 2,
                    sample_rate: 48_000,
                })
                .collect(),
            other_streams: 0,
        }
    }

    #[test]
    fn media_check_accepts_video_audio_or_both() {
        let p = Path::new("x.mp4");
        info(vec![video(1280, 720)], 1, 10_000).check(p).unwrap();
        info(vec![video(1280, 720)], 0, 10_000).check(p).unwrap();
        info(vec![], 1, 10_000).check(p).unwrap();
    }

    #[test]
    fn media_check_refuses_no_streams_still_images_and_zero_duration() {
        let p = Path::new("x.mp4");
        assert!(matches!(
            info(vec![], 0, 10_000).check(p),
            Err(ProbeError::NoStreams { .. })
        ));
        let mut still = video(800, 600);
        still.is_image = true;
        assert!(matches!(
            info(vec![still], 0, 0).check(p),
            Err(ProbeError::StillImage { .. })
        ));
        assert!(matches!(
            info(vec![video(1280, 720)], 1, 0).check(p),
            Err(ProbeError::ZeroDuration { .. })
        ));
        assert!(matches!(
            info(vec![video(0, 720)], 1, 10).check(p),
            Err(ProbeError::Corrupt { .. })
        ));
    }

    #[test]
    fn media_display_width_follows_the_pixel_aspect_ratio() {
        let mut v = video(720, 576);
        v.pixel_aspect = (16, 15);
        assert_eq!(v.display_width(), 768);
        v.pixel_aspect = (0, 1);
        assert_eq!(v.display_width(), 720);
        assert_eq!(video(1, 1).fps(), Some(25.0));
    }

    #[test]
    fn media_iso_bmff_box_headers_are_read() {
        assert_eq!(top_level_box(b"\0\0\0\x20ftypisom"), Some((Some(32), *b"ftyp")));
        assert_eq!(top_level_box(b"\0\0\0\0mdat"), Some((None, *b"mdat")));
        let large = [0, 0, 0, 1, b'm', b'd', b'a', b't', 0, 0, 0, 1, 0, 0, 0, 0];
        assert_eq!(top_level_box(&large), Some((Some(1 << 32), *b"mdat")));
        assert_eq!(top_level_box(b"\0\0\0\x04ftyp"), None);
        assert_eq!(top_level_box(b"\0\0\0\x20\x01\x02\x03\x04"), None);
        assert_eq!(top_level_box(b"\0\0"), None);
    }

    #[test]
    fn media_failures_are_classified_by_reason() {
        let p = Path::new("x.mp4");
        assert!(matches!(
            classify_failure(
                p,
                "Could not determine type of stream.",
                Some(gst::StreamError::TypeNotFound)
            ),
            ProbeError::NotMedia { .. }
        ));
        assert!(matches!(
            classify_failure(
                p,
                "This file is incomplete and cannot be played.",
                Some(gst::StreamError::Demux)
            ),
            ProbeError::Truncated { .. }
        ));
        assert!(matches!(
            classify_failure(
                p,
                "This file contains no playable streams.",
                Some(gst::StreamError::Demux)
            ),
            ProbeError::NoStreams { .. }
        ));
        assert!(matches!(
            classify_failure(p, "Internal data stream error.", Some(gst::StreamError::Failed)),
            ProbeError::Corrupt { .. }
        ));
    }
}
