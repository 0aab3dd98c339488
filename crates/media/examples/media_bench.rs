//! Transcode time of a 60 s 720p source into the default three-rung ladder, beside ffmpeg with
//! the same settings, in the same run. Not a test: run it on an idle machine.
//!
//! ```text
//! cargo test --workspace --locked --no-run
//! $CARGO_TARGET_DIR/debug/examples/media_bench [SECONDS] [PRESET]
//! ```
//!
//! Both sides: 720p at 1.5 Mbit/s and 360p at 0.5 Mbit/s H.264 Main 4:2:0 (CBR with a 600 ms
//! VBV buffer, as x264enc's default `pass=cbr`), key frames every 4 s, AAC-LC 64 kbit/s stereo,
//! 4 s MPEG-TS segments, an audio-only rendition. GStreamer encodes AAC once and tees it; ffmpeg
//! encodes it once per output stream (three times), as its HLS muxer needs.

use std::process::Command;
use std::time::{Duration, Instant};

use courseway_media::testsrc::{make_test_source, TestSource};
use courseway_media::{transcode, CancelToken, LadderConfig};

fn main() {
    let mut args = std::env::args().skip(1);
    let seconds: u32 = args.next().map(|s| s.parse().expect("SECONDS")).unwrap_or(60);
    let preset = args.next().unwrap_or_else(|| LadderConfig::default().x264_preset);
    let dir = tempfile::tempdir().expect("temp dir");
    let src = dir.path().join("source.mp4");
    make_test_source(&src, &TestSource::video_audio(1280, 720, seconds)).expect("source");
    println!("source: {seconds} s 1280x720 25 fps + AAC stereo (videotestsrc/audiotestsrc), preset {preset}");

    let config = LadderConfig {
        x264_preset: preset.clone(),
        ..LadderConfig::default()
    };
    let started = Instant::now();
    let output = transcode(&src, &config, &dir.path().join("gst"), |_| {}, &CancelToken::new()).expect("transcode");
    let gst = started.elapsed();
    let names: Vec<&str> = output.renditions.iter().map(|r| r.name.as_str()).collect();
    println!(
        "courseway-media (GStreamer): {:.2} s  renditions {names:?}",
        gst.as_secs_f64()
    );

    let out = dir.path().join("ff");
    for v in ["0", "1", "2"] {
        std::fs::create_dir_all(out.join(v)).unwrap();
    }
    let gop = 25 * 4;
    let started = Instant::now();
    let status = Command::new("ffmpeg")
        .args(["-v", "error", "-y", "-i"])
        .arg(&src)
        .args([
            "-filter_complex",
            "[0:v]split=2[a][b];[a]scale=1280:720[v0];[b]scale=640:360[v1]",
        ])
        .args([
            "-map", "[v0]", "-map", "0:a", "-map", "[v1]", "-map", "0:a", "-map", "0:a",
        ])
        .args([
            "-c:v",
            "libx264",
            "-preset",
            &preset,
            "-profile:v",
            "main",
            "-pix_fmt",
            "yuv420p",
        ])
        .args([
            "-g",
            &gop.to_string(),
            "-keyint_min",
            &gop.to_string(),
            "-sc_threshold",
            "0",
        ])
        .args(["-b:v:0", "1500k", "-maxrate:v:0", "1500k", "-bufsize:v:0", "900k"])
        .args(["-b:v:1", "500k", "-maxrate:v:1", "500k", "-bufsize:v:1", "300k"])
        .args(["-c:a", "aac", "-b:a", "64k", "-ac", "2"])
        .args(["-f", "hls", "-hls_time", "4", "-hls_playlist_type", "vod"])
        .args([
            "-var_stream_map",
            "v:0,a:0 v:1,a:1 a:2",
            "-master_pl_name",
            "master.m3u8",
        ])
        .arg("-hls_segment_filename")
        .arg(out.join("%v/seg%05d.ts"))
        .arg(out.join("%v/index.m3u8"))
        .status()
        .expect("ffmpeg runs");
    assert!(status.success(), "ffmpeg failed");
    let ff = started.elapsed();
    println!("ffmpeg (libx264, aac):       {:.2} s", ff.as_secs_f64());
    println!(
        "ratio GStreamer / ffmpeg: {:.2}  (real-time factor: GStreamer {:.2}x, ffmpeg {:.2}x)",
        gst.as_secs_f64() / ff.as_secs_f64(),
        f64::from(seconds) / gst.as_secs_f64(),
        f64::from(seconds) / ff.as_secs_f64().max(Duration::from_millis(1).as_secs_f64()),
    );
}
