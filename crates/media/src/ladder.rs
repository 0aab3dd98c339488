//! The rendition ladder: what a transcode makes, chosen from config and the probed source.
//!
//! Pure: [`plan`] takes a [`MediaInfo`] and a [`LadderConfig`] and decides the renditions, their
//! frame sizes, the output frame rate and the key-frame interval. Rules:
//! - never upscale: a video rung taller than the source is dropped; a source shorter than every
//!   rung gets one rendition at its own height (with the smallest rung's bit rate);
//! - frame width follows the source's display aspect ratio, rounded to an even number;
//! - frame rates above [`LadderConfig::max_fps`] are halved (50 → 25, 59.94 → 29.97), because
//!   old set-top boxes decode 720p only up to 30 frames per second (H.264 level 3.1);
//! - an audio-only source gets only the audio rendition; a video-only source no audio one;
//! - the key-frame interval is one segment, so every segment can start on a key frame.

use std::time::Duration;

use thiserror::Error;

use crate::probe::MediaInfo;

/// One video rung of the ladder.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VideoRung {
    /// Rendition name, used in playlists and directory names: `720p`.
    pub name: String,
    /// Frame height in pixels (even).
    pub height: u32,
    /// Target video bit rate in bits per second.
    pub bitrate: u32,
}

/// x264 speed presets, fastest first (x264's own names).
pub const X264_PRESETS: [&str; 10] = [
    "ultrafast",
    "superfast",
    "veryfast",
    "faster",
    "fast",
    "medium",
    "slow",
    "slower",
    "veryslow",
    "placebo",
];

/// What a transcode makes of a source.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LadderConfig {
    /// Video rungs, best first.
    pub video: Vec<VideoRung>,
    /// Name of the audio-only rendition, or `None` for no audio-only rendition when the source
    /// has video (an audio-only source always gets one, named `audio` if this is `None`).
    pub audio_only: Option<String>,
    /// AAC-LC bit rate in bits per second, for the audio of every rendition.
    pub audio_bitrate: u32,
    /// Target segment duration; every segment but the last lasts this long.
    pub segment_duration: Duration,
    /// x264 speed preset (one of [`X264_PRESETS`]): slower is better quality per bit.
    pub x264_preset: String,
    /// Highest output frame rate; faster sources are halved until they fit.
    pub max_fps: u32,
    /// Where the poster frame is taken (or half-way through a shorter source).
    pub poster_at: Duration,
}

impl Default for LadderConfig {
    /// 720p at 1.5 Mbit/s, 360p at 0.5 Mbit/s, audio-only AAC at 64 kbit/s, 4-second segments.
    fn default() -> Self {
        Self {
            video: vec![
                VideoRung {
                    name: "720p".into(),
                    height: 720,
                    bitrate: 1_500_000,
                },
                VideoRung {
                    name: "360p".into(),
                    height: 360,
                    bitrate: 500_000,
                },
            ],
            audio_only: Some("audio".into()),
            audio_bitrate: 64_000,
            segment_duration: Duration::from_secs(4),
            x264_preset: "fast".into(),
            max_fps: 30,
            poster_at: Duration::from_secs(3),
        }
    }
}

/// Why a ladder config or a plan cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum PlanError {
    #[error("rendition name {0:?} must be 1 to 32 of a-z, 0-9, '-' and '_'")]
    BadName(String),
    #[error("two renditions are named {0:?}; give each rung its own name")]
    DuplicateName(String),
    #[error("rung {name:?}: height {height} must be even and between 2 and 4320")]
    BadHeight { name: String, height: u32 },
    #[error("rung {0:?}: bit rate must be above zero")]
    ZeroBitrate(String),
    #[error("audio bit rate {0} bit/s is outside 8000..=320000")]
    BadAudioBitrate(u32),
    #[error("segment duration {0:?} must be between 1 and 60 seconds")]
    BadSegmentDuration(Duration),
    #[error("x264 preset {0:?} is not one of {presets}", presets = X264_PRESETS.join(", "))]
    BadPreset(String),
    #[error("max_fps {0} must be between 10 and 120")]
    BadMaxFps(u32),
    #[error("the ladder has more than {max} renditions", max = courseway_content::lesson::MAX_RENDITIONS)]
    TooManyRenditions,
    #[error("the source has neither video nor audio to encode")]
    NothingToEncode,
}

fn valid_name(name: &str) -> bool {
    (1..=32).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_')
}

impl LadderConfig {
    /// Checks every field; names must be safe as directory names and URL segments.
    pub fn validate(&self) -> Result<(), PlanError> {
        let mut names: Vec<&str> = self.video.iter().map(|r| r.name.as_str()).collect();
        names.extend(self.audio_only.as_deref());
        for (i, name) in names.iter().enumerate() {
            if !valid_name(name) {
                return Err(PlanError::BadName((*name).to_owned()));
            }
            if names[..i].contains(name) {
                return Err(PlanError::DuplicateName((*name).to_owned()));
            }
        }
        if names.len() > courseway_content::lesson::MAX_RENDITIONS {
            return Err(PlanError::TooManyRenditions);
        }
        for rung in &self.video {
            if rung.height < 2 || rung.height > 4320 || rung.height % 2 != 0 {
                return Err(PlanError::BadHeight {
                    name: rung.name.clone(),
                    height: rung.height,
                });
            }
            if rung.bitrate == 0 {
                return Err(PlanError::ZeroBitrate(rung.name.clone()));
            }
        }
        if !(8_000..=320_000).contains(&self.audio_bitrate) {
            return Err(PlanError::BadAudioBitrate(self.audio_bitrate));
        }
        if self.segment_duration < Duration::from_secs(1) || self.segment_duration > Duration::from_secs(60) {
            return Err(PlanError::BadSegmentDuration(self.segment_duration));
        }
        if !X264_PRESETS.contains(&self.x264_preset.as_str()) {
            return Err(PlanError::BadPreset(self.x264_preset.clone()));
        }
        if !(10..=120).contains(&self.max_fps) {
            return Err(PlanError::BadMaxFps(self.max_fps));
        }
        Ok(())
    }
}

/// A video rendition to encode.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlannedVideo {
    pub name: String,
    pub width: u32,
    pub height: u32,
    /// Video bit rate in bits per second.
    pub bitrate: u32,
}

/// What one transcode makes of one source.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    /// Video renditions, best first (empty for an audio-only source).
    pub video: Vec<PlannedVideo>,
    /// Whether the video renditions carry the source's audio.
    pub video_with_audio: bool,
    /// The audio-only rendition's name, if one is made.
    pub audio_only: Option<String>,
    /// AAC bit rate in bits per second.
    pub audio_bitrate: u32,
    /// Output frame rate, or `None` to keep the source's (unknown or variable).
    pub framerate: Option<(i32, i32)>,
    /// Largest distance between key frames in frames: one segment.
    pub key_int_max: u32,
    pub segment_duration: Duration,
    /// Where the poster frame is taken, for a source with video.
    pub poster_at: Option<Duration>,
    pub x264_preset: String,
}

impl Plan {
    /// Names of all renditions in playlist order.
    pub fn rendition_names(&self) -> Vec<&str> {
        self.video
            .iter()
            .map(|v| v.name.as_str())
            .chain(self.audio_only.as_deref())
            .collect()
    }
}

/// Rounds to the nearest even number, at least 2.
fn even(x: f64) -> u32 {
    ((x / 2.0).round() as u32 * 2).max(2)
}

/// The output frame rate for a source frame rate: halved until it is at most `max_fps`.
pub fn output_framerate(source: (i32, i32), max_fps: u32) -> Option<(i32, i32)> {
    let (n, mut d) = source;
    if n <= 0 || d <= 0 {
        return None;
    }
    while f64::from(n) / f64::from(d) > f64::from(max_fps) + 0.01 {
        d = d.checked_mul(2)?;
    }
    Some((n, d))
}

/// Chooses the renditions for `source` under `config` (see the module doc for the rules).
pub fn plan(source: &MediaInfo, config: &LadderConfig) -> Result<Plan, PlanError> {
    config.validate()?;
    let has_audio = source.main_audio().is_some();
    let mut video = Vec::new();
    let mut framerate = None;
    let mut poster_at = None;
    if let Some(v) = source.main_video() {
        let aspect = f64::from(v.display_width().max(1)) / f64::from(v.height.max(1));
        let planned = |name: String, height: u32, bitrate: u32| PlannedVideo {
            name,
            width: even(f64::from(height) * aspect),
            height,
            bitrate,
        };
        video = config
            .video
            .iter()
            .filter(|r| r.height <= v.height)
            .map(|r| planned(r.name.clone(), r.height, r.bitrate))
            .collect();
        if video.is_empty() {
            let height = (v.height & !1).max(2);
            let bitrate = config.video.iter().map(|r| r.bitrate).min().unwrap_or(500_000);
            video.push(planned(format!("{height}p"), height, bitrate));
        }
        framerate = output_framerate(v.framerate, config.max_fps);
        let half = source.duration / 2;
        poster_at = Some(config.poster_at.min(half));
    }
    let audio_only = match (has_audio, video.is_empty()) {
        (false, _) => None,
        (true, true) => Some(config.audio_only.clone().unwrap_or_else(|| "audio".into())),
        (true, false) => config.audio_only.clone(),
    };
    if video.is_empty() && audio_only.is_none() {
        return Err(PlanError::NothingToEncode);
    }
    let fps = framerate.map(|(n, d)| f64::from(n) / f64::from(d)).unwrap_or(30.0);
    let key_int_max = (fps * config.segment_duration.as_secs_f64()).round().max(1.0) as u32;
    Ok(Plan {
        video_with_audio: has_audio && !video.is_empty(),
        video,
        audio_only,
        audio_bitrate: config.audio_bitrate,
        framerate,
        key_int_max,
        segment_duration: config.segment_duration,
        poster_at,
        x264_preset: config.x264_preset.clone(),
    })
}

/// File name of segment `index` of a rendition: `seg00000.ts`.
pub fn segment_file_name(index: u32) -> String {
    format!("seg{index:05}.ts")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::probe::{AudioStream, VideoStream};

    fn source(width: u32, height: u32, fps: (i32, i32), audio: bool, video: bool) -> MediaInfo {
        MediaInfo {
            container: None,
            duration: Duration::from_secs(60),
            video: if video {
                vec![VideoStream {
                    codec: "H.264".into(),
                    width,
                    height,
                    framerate: fps,
                    pixel_aspect: (1, 1),
                    interlaced: false,
                    is_image: false,
                }]
            } else {
                vec![]
            },
            audio: if audio {
                vec![AudioStream {
                    codec: "AAC".into(),
                    channels: 2,
                    sample_rate: 48_000,
                }]
            } else {
                vec![]
            },
            other_streams: 0,
        }
    }

    #[test]
    fn media_ladder_default_on_a_1080p_source_makes_three_renditions() {
        let p = plan(&source(1920, 1080, (25, 1), true, true), &LadderConfig::default()).unwrap();
        assert_eq!(p.rendition_names(), ["720p", "360p", "audio"]);
        assert_eq!((p.video[0].width, p.video[0].height), (1280, 720));
        assert_eq!((p.video[1].width, p.video[1].height), (640, 360));
        assert_eq!(p.video[0].bitrate, 1_500_000);
        assert!(p.video_with_audio);
        assert_eq!(p.key_int_max, 100);
        assert_eq!(p.poster_at, Some(Duration::from_secs(3)));
    }

    #[test]
    fn media_ladder_never_upscales() {
        let p = plan(&source(640, 360, (30, 1), true, true), &LadderConfig::default()).unwrap();
        assert_eq!(p.rendition_names(), ["360p", "audio"]);
        let p = plan(&source(1280, 720, (30, 1), true, true), &LadderConfig::default()).unwrap();
        assert_eq!(p.rendition_names(), ["720p", "360p", "audio"]);
    }

    #[test]
    fn media_ladder_keeps_a_small_source_at_its_own_size() {
        let p = plan(&source(320, 241, (25, 1), false, true), &LadderConfig::default()).unwrap();
        assert_eq!(p.rendition_names(), ["240p"]);
        assert_eq!((p.video[0].width, p.video[0].height), (318, 240));
        assert_eq!(p.video[0].bitrate, 500_000);
    }

    #[test]
    fn media_ladder_audio_only_source_gets_only_the_audio_rendition() {
        let mut config = LadderConfig::default();
        let p = plan(&source(0, 0, (0, 1), true, false), &config).unwrap();
        assert_eq!(p.rendition_names(), ["audio"]);
        assert_eq!(p.poster_at, None);
        config.audio_only = None;
        let p = plan(&source(0, 0, (0, 1), true, false), &config).unwrap();
        assert_eq!(p.rendition_names(), ["audio"]);
        let p = plan(&source(1280, 720, (25, 1), true, true), &config).unwrap();
        assert_eq!(p.rendition_names(), ["720p", "360p"]);
    }

    #[test]
    fn media_ladder_video_only_source_has_no_audio() {
        let p = plan(&source(1280, 720, (25, 1), false, true), &LadderConfig::default()).unwrap();
        assert_eq!(p.rendition_names(), ["720p", "360p"]);
        assert!(!p.video_with_audio);
    }

    #[test]
    fn media_ladder_follows_the_display_aspect_ratio() {
        let mut s = source(720, 576, (25, 1), true, true);
        s.video[0].pixel_aspect = (16, 15);
        let p = plan(&s, &LadderConfig::default()).unwrap();
        assert_eq!(p.rendition_names(), ["360p", "audio"]);
        assert_eq!((p.video[0].width, p.video[0].height), (480, 360));
    }

    #[test]
    fn media_ladder_halves_fast_frame_rates_and_sets_the_key_interval() {
        assert_eq!(output_framerate((60, 1), 30), Some((60, 2)));
        assert_eq!(output_framerate((60_000, 1001), 30), Some((60_000, 2002)));
        assert_eq!(output_framerate((25, 1), 30), Some((25, 1)));
        assert_eq!(output_framerate((120, 1), 30), Some((120, 4)));
        assert_eq!(output_framerate((0, 1), 30), None);
        let p = plan(&source(1280, 720, (50, 1), true, true), &LadderConfig::default()).unwrap();
        assert_eq!(p.framerate, Some((50, 2)));
        assert_eq!(p.key_int_max, 100);
        let p = plan(&source(1280, 720, (0, 1), true, true), &LadderConfig::default()).unwrap();
        assert_eq!((p.framerate, p.key_int_max), (None, 120));
    }

    #[test]
    fn media_ladder_poster_is_taken_inside_a_short_source() {
        let mut s = source(1280, 720, (25, 1), true, true);
        s.duration = Duration::from_secs(2);
        let p = plan(&s, &LadderConfig::default()).unwrap();
        assert_eq!(p.poster_at, Some(Duration::from_secs(1)));
    }

    #[test]
    fn media_ladder_config_is_validated() {
        let ok = LadderConfig::default();
        ok.validate().unwrap();
        let mut c = ok.clone();
        c.video[1].name = "720p".into();
        assert_eq!(c.validate(), Err(PlanError::DuplicateName("720p".into())));
        let mut c = ok.clone();
        c.video[0].name = "../x".into();
        assert!(matches!(c.validate(), Err(PlanError::BadName(_))));
        let mut c = ok.clone();
        c.video[0].height = 721;
        assert!(matches!(c.validate(), Err(PlanError::BadHeight { .. })));
        let mut c = ok.clone();
        c.x264_preset = "quick".into();
        assert!(matches!(c.validate(), Err(PlanError::BadPreset(_))));
        let mut c = ok.clone();
        c.segment_duration = Duration::from_millis(500);
        assert!(matches!(c.validate(), Err(PlanError::BadSegmentDuration(_))));
        let mut c = ok;
        c.audio_bitrate = 0;
        assert!(matches!(c.validate(), Err(PlanError::BadAudioBitrate(0))));
    }

    #[test]
    fn media_segment_names_sort_in_order() {
        assert_eq!(segment_file_name(0), "seg00000.ts");
        assert_eq!(segment_file_name(12), "seg00012.ts");
        assert!(segment_file_name(9) < segment_file_name(10));
    }
}
