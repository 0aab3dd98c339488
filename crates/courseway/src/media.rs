//! `courseway media probe|transcode`: the ingest pipeline run locally, with no origin, so an
//! operator can check a file before uploading it.
//!
//! `transcode` writes HLS into the output directory: `master.m3u8` listing every rendition,
//! `<rendition>/index.m3u8` and its `segNNNNN.ts` segments, and `poster.jpg`. The playlists are
//! made from the lesson manifest by `courseway-hls`, the code a station serves them with.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context;
use courseway_content::{Category, LessonId, RenditionKind};
use courseway_media::{
    build_manifest, probe, transcode, CancelToken, LadderConfig, LessonMeta, MediaInfo, TranscodeOutput,
};

/// Name of the master playlist in the output directory.
pub const MASTER_PLAYLIST: &str = "master.m3u8";
/// Name of each rendition's media playlist, in the rendition's directory.
pub const MEDIA_PLAYLIST: &str = "index.m3u8";

#[derive(Debug, clap::Subcommand)]
pub enum MediaCommand {
    /// Show a file's container, duration and streams, or why it is not playable media.
    Probe {
        /// The media file.
        file: PathBuf,
    },
    /// Transcode a file into the rendition ladder and write it as HLS.
    Transcode(TranscodeArgs),
}

#[derive(Debug, clap::Args)]
pub struct TranscodeArgs {
    /// The media file.
    file: PathBuf,
    /// Output directory (new or empty).
    #[arg(long)]
    out: PathBuf,
    /// x264 speed preset: ultrafast .. veryslow (slower is better quality per bit).
    #[arg(long, default_value_t = LadderConfig::default().x264_preset)]
    preset: String,
    /// Segment duration in seconds.
    #[arg(long, default_value_t = 4)]
    segment_seconds: u64,
    /// Make no audio-only rendition (an audio-only source still gets one).
    #[arg(long)]
    no_audio_rendition: bool,
}

pub fn run(command: MediaCommand) -> anyhow::Result<()> {
    match command {
        MediaCommand::Probe { file } => {
            let info = probe(&file)?;
            print!("{}", describe(&file, &info));
            Ok(())
        }
        MediaCommand::Transcode(args) => run_transcode(args),
    }
}

fn describe(file: &Path, info: &MediaInfo) -> String {
    let mut s = format!("{}: playable media\n", file.display());
    s += &format!("  container: {}\n", info.container.as_deref().unwrap_or("(none)"));
    s += &format!("  duration:  {:.3} s\n", info.duration.as_secs_f64());
    for v in &info.video {
        let fps = v
            .fps()
            .map(|f| format!("{f:.3} fps"))
            .unwrap_or_else(|| "variable frame rate".into());
        s += &format!(
            "  video:     {} {}x{} {fps}{}{}\n",
            v.codec,
            v.width,
            v.height,
            if v.interlaced { " interlaced" } else { "" },
            if v.is_image { " (still image)" } else { "" },
        );
    }
    for a in &info.audio {
        s += &format!("  audio:     {} {} ch {} Hz\n", a.codec, a.channels, a.sample_rate);
    }
    if info.other_streams > 0 {
        s += &format!("  other:     {} stream(s), not transcoded\n", info.other_streams);
    }
    s
}

/// A lesson id for a local transcode, from the file name (any other character becomes '-').
fn local_lesson_id(file: &Path) -> LessonId {
    let stem = file
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default();
    let cleaned: String = stem
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-') {
                c
            } else {
                '-'
            }
        })
        .take(100)
        .collect();
    LessonId::new(format!("local-{cleaned}")).unwrap_or_else(|_| LessonId::new("local").expect("valid id"))
}

fn run_transcode(args: TranscodeArgs) -> anyhow::Result<()> {
    let defaults = LadderConfig::default();
    let config = LadderConfig {
        x264_preset: args.preset,
        segment_duration: Duration::from_secs(args.segment_seconds),
        audio_only: if args.no_audio_rendition {
            None
        } else {
            defaults.audio_only.clone()
        },
        ..defaults
    };
    config.validate().context("invalid transcode options")?;

    let cancel = CancelToken::new();
    let on_signal = cancel.clone();
    std::thread::spawn(move || {
        let Ok(rt) = tokio::runtime::Builder::new_current_thread().enable_all().build() else {
            return;
        };
        if rt.block_on(tokio::signal::ctrl_c()).is_ok() {
            on_signal.cancel();
        }
    });

    let bar = indicatif::ProgressBar::new(0);
    bar.set_style(
        indicatif::ProgressStyle::with_template("{spinner} transcoding [{bar:40}] {percent:>3}% {msg} eta {eta}")
            .expect("valid template")
            .progress_chars("=> "),
    );
    let output = transcode(
        &args.file,
        &config,
        &args.out,
        |p| {
            bar.set_length(p.duration.as_millis() as u64);
            bar.set_position(p.position.as_millis() as u64);
            bar.set_message(format!(
                "{:.0}/{:.0} s",
                p.position.as_secs_f64(),
                p.duration.as_secs_f64()
            ));
        },
        &cancel,
    );
    bar.finish_and_clear();
    let output = output.with_context(|| format!("transcoding {}", args.file.display()))?;
    write_hls(&args.file, &args.out, &output)?;
    print!("{}", summary(&args.out, &output));
    Ok(())
}

/// Writes the master playlist and one media playlist per rendition beside the segments.
fn write_hls(file: &Path, out: &Path, output: &TranscodeOutput) -> anyhow::Result<()> {
    let meta = LessonMeta {
        id: local_lesson_id(file),
        version: 1,
        title: file
            .file_name()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_default(),
        publisher: "local".into(),
        category: Category::Elective,
        tags: Vec::new(),
        language: "und".into(),
    };
    // Only the manifest is needed here: the chunks are hashed and dropped.
    let manifest = build_manifest(meta, output, &[], |_, _| {})?;
    let master = courseway_hls::master_playlist(&manifest, |r| format!("{}/{MEDIA_PLAYLIST}", r.name));
    let path = out.join(MASTER_PLAYLIST);
    std::fs::write(&path, master).with_context(|| format!("writing {}", path.display()))?;
    for (rendition, produced) in manifest.renditions.iter().zip(&output.renditions) {
        let text = courseway_hls::media_playlist(rendition, |i, _| {
            produced.segments[i]
                .path
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default()
        });
        let path = produced.dir.join(MEDIA_PLAYLIST);
        std::fs::write(&path, text).with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(())
}

fn summary(out: &Path, output: &TranscodeOutput) -> String {
    let source = output.source.duration.as_secs_f64();
    let elapsed = output.elapsed.as_secs_f64();
    let mut s = format!(
        "transcoded {:.1} s of media in {:.1} s ({:.2}x real time)\n",
        source,
        elapsed,
        source / elapsed.max(0.001)
    );
    for r in &output.renditions {
        let kind = match r.kind {
            RenditionKind::Video { width, height } => format!("{width}x{height}"),
            RenditionKind::Audio => "audio".into(),
        };
        s += &format!(
            "  {:<6} {:<9} {:>3} segments {:>9.1} kB  peak {:>5} kbit/s  {}\n",
            r.name,
            kind,
            r.segments.len(),
            r.size() as f64 / 1000.0,
            r.peak_bandwidth(output.plan.segment_duration) / 1000,
            r.codecs
        );
    }
    if let Some(poster) = &output.poster {
        s += &format!("  poster: {}\n", poster.display());
    }
    s += &format!("master playlist: {}\n", out.join(MASTER_PLAYLIST).display());
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn media_local_lesson_ids_are_valid_identifiers() {
        assert_eq!(
            local_lesson_id(Path::new("/x/第一课 intro.mp4")).as_str(),
            "local-----intro"
        );
        assert_eq!(local_lesson_id(Path::new("a.b.mkv")).as_str(), "local-a.b");
        assert_eq!(local_lesson_id(Path::new("")).as_str(), "local-");
    }
}
