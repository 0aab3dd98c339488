//! Probe and transcode real media made with videotestsrc/audiotestsrc, checked by ffprobe
//! (Debian's ffmpeg) as an independent reader of what GStreamer wrote.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use courseway_content::{Category, LessonId, RenditionKind};
use courseway_media::testsrc::{make_test_source, TestSource};
use courseway_media::{
    build_lesson, probe, transcode, AttachmentInput, CancelToken, LadderConfig, LessonMeta, ProbeError, Progress,
    TranscodeError, TranscodeOutput,
};
use serde_json::Value;

/// The default ladder with a faster x264 preset (superfast still makes Main profile streams;
/// ultrafast would make Constrained Baseline).
fn test_ladder() -> LadderConfig {
    LadderConfig {
        x264_preset: "superfast".into(),
        ..LadderConfig::default()
    }
}

fn source(dir: &Path, name: &str, spec: TestSource) -> std::path::PathBuf {
    let path = dir.join(name);
    make_test_source(&path, &spec).unwrap();
    path
}

fn ffprobe(path: &Path, args: &[&str]) -> Value {
    let out = Command::new("ffprobe")
        .args(["-v", "error", "-of", "json"])
        .args(args)
        .arg(path)
        .output()
        .expect("ffprobe runs (Debian package ffmpeg)");
    assert!(
        out.status.success(),
        "ffprobe {}: {}",
        path.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

fn meta(id: &str) -> LessonMeta {
    LessonMeta {
        id: LessonId::new(id).unwrap(),
        version: 1,
        title: "测试".into(),
        publisher: "test".into(),
        category: Category::Required,
        tags: vec![],
        language: "zh-CN".into(),
    }
}

/// Checks every segment of every rendition with ffprobe: codecs, profile, pixel format, frame
/// size, that each starts on a key frame, and durations within 0.5 s of the target (the last
/// may be shorter). Returns the total duration per rendition.
fn check_segments(output: &TranscodeOutput, expect_audio_in_video: bool) {
    let target = output.plan.segment_duration.as_secs_f64();
    for r in &output.renditions {
        assert!(!r.segments.is_empty(), "{} has segments", r.name);
        let mut total = 0.0;
        for (i, s) in r.segments.iter().enumerate() {
            let last = i + 1 == r.segments.len();
            let info = ffprobe(
                &s.path,
                &[
                    "-show_entries",
                    "stream=codec_name,profile,pix_fmt,width,height:format=duration",
                ],
            );
            let streams = info["streams"].as_array().unwrap();
            let video: Vec<&Value> = streams.iter().filter(|s| s["codec_name"] == "h264").collect();
            let audio: Vec<&Value> = streams.iter().filter(|s| s["codec_name"] == "aac").collect();
            assert_eq!(
                streams.len(),
                video.len() + audio.len(),
                "{}: only h264/aac: {info}",
                s.path.display()
            );
            match r.kind {
                RenditionKind::Video { width, height } => {
                    assert_eq!(video.len(), 1, "{}: {info}", s.path.display());
                    let v = video[0];
                    assert_eq!(v["profile"], "Main", "{}", s.path.display());
                    assert_eq!(v["pix_fmt"], "yuv420p", "{}", s.path.display());
                    assert_eq!(v["width"], u64::from(width));
                    assert_eq!(v["height"], u64::from(height));
                    assert_eq!(
                        audio.len(),
                        usize::from(expect_audio_in_video),
                        "{}: {info}",
                        s.path.display()
                    );
                    // The first video frame of every segment is a key frame.
                    let frames = ffprobe(
                        &s.path,
                        &[
                            "-select_streams",
                            "v",
                            "-read_intervals",
                            "%+#1",
                            "-show_entries",
                            "frame=key_frame,pict_type",
                        ],
                    );
                    let first = &frames["frames"][0];
                    assert_eq!(first["key_frame"], 1, "{} starts with {first}", s.path.display());
                }
                RenditionKind::Audio => {
                    assert!(video.is_empty());
                    assert_eq!(audio.len(), 1, "{}: {info}", s.path.display());
                }
            }
            if let Some(a) = audio.first() {
                assert_eq!(a["profile"], "LC");
            }
            let probed: f64 = info["format"]["duration"].as_str().unwrap().parse().unwrap();
            let reported = s.duration.as_secs_f64();
            assert!(
                (probed - reported).abs() <= 0.5,
                "{}: ffprobe {probed} vs reported {reported}",
                s.path.display()
            );
            if last {
                assert!(reported <= target + 0.5, "last segment {reported}");
            } else {
                assert!((reported - target).abs() <= 0.5, "{} segment {i}: {reported}", r.name);
            }
            assert_eq!(s.size, std::fs::metadata(&s.path).unwrap().len());
            total += reported;
        }
        let source = output.source.duration.as_secs_f64();
        assert!(
            (total - source).abs() <= 0.5,
            "{}: segments add up to {total}, source {source}",
            r.name
        );
    }
}

#[test]
fn media_probe_reports_streams_of_a_720p_source() {
    let dir = tempfile::tempdir().unwrap();
    let src = source(dir.path(), "a.mp4", TestSource::video_audio(1280, 720, 4));
    let info = probe(&src).unwrap();
    let v = info.main_video().unwrap();
    assert_eq!((v.width, v.height, v.framerate), (1280, 720, (25, 1)));
    assert!(v.codec.contains("H.264"), "{}", v.codec);
    let a = info.main_audio().unwrap();
    assert_eq!((a.channels, a.sample_rate), (2, 48_000));
    assert!(a.codec.contains("AAC"), "{}", a.codec);
    assert!((info.duration.as_secs_f64() - 4.0).abs() < 0.1, "{:?}", info.duration);
    // GStreamer names mp4mux's output by its family, "Quicktime".
    assert!(
        info.container
            .as_deref()
            .is_some_and(|c| c.contains("Quicktime") || c.contains("MP4")),
        "{:?}",
        info.container
    );
}

#[test]
fn media_probe_refuses_bad_inputs_with_the_reason() {
    let dir = tempfile::tempdir().unwrap();
    let empty = dir.path().join("empty.mp4");
    std::fs::write(&empty, b"").unwrap();
    assert!(matches!(probe(&empty), Err(ProbeError::Empty { .. })));

    let random = dir.path().join("random.mp4");
    std::fs::write(&random, courseway_content::synthetic::pseudo_random(1, &[], 200_000)).unwrap();
    let err = probe(&random).unwrap_err();
    assert!(matches!(err, ProbeError::NotMedia { .. }), "{err:?}");
    assert!(err.to_string().contains("not a media file"), "{err}");

    let whole = source(dir.path(), "whole.mp4", TestSource::video_audio(320, 240, 3));
    let data = std::fs::read(&whole).unwrap();
    let truncated = dir.path().join("truncated.mp4");
    std::fs::write(&truncated, &data[..data.len() / 2]).unwrap();
    let err = probe(&truncated).unwrap_err();
    assert!(matches!(err, ProbeError::Truncated { .. }), "{err:?}");
    assert!(err.to_string().contains("'mdat' box"), "{err}");

    let missing = dir.path().join("missing.mp4");
    assert!(matches!(probe(&missing), Err(ProbeError::Io { .. })));

    // A text file is not media either, whatever its name says.
    let text = dir.path().join("lesson.mkv");
    std::fs::write(&text, "这不是视频\n".repeat(1000)).unwrap();
    assert!(
        matches!(probe(&text), Err(ProbeError::NotMedia { .. })),
        "{:?}",
        probe(&text)
    );
}

#[test]
fn media_transcode_720p_source_into_the_full_ladder() {
    let dir = tempfile::tempdir().unwrap();
    let src = source(dir.path(), "a.mp4", TestSource::video_audio(1280, 720, 10));
    let out = dir.path().join("out");
    let mut reports: Vec<Progress> = Vec::new();
    let output = transcode(&src, &test_ladder(), &out, |p| reports.push(p), &CancelToken::new()).unwrap();

    let names: Vec<&str> = output.renditions.iter().map(|r| r.name.as_str()).collect();
    assert_eq!(names, ["720p", "360p", "audio"]);
    assert_eq!(
        output.renditions[0].kind,
        RenditionKind::Video {
            width: 1280,
            height: 720
        }
    );
    assert_eq!(output.renditions[0].codecs, "avc1.4d401f,mp4a.40.2");
    assert!(
        output.renditions[1].codecs.starts_with("avc1.4d40"),
        "{}",
        output.renditions[1].codecs
    );
    assert_eq!(output.renditions[2].codecs, "mp4a.40.2");
    assert_eq!(output.renditions[0].segments.len(), 3, "10 s in 4 s segments");
    check_segments(&output, true);

    // Segment boundaries line up across renditions (same durations).
    let durations = |i: usize| -> Vec<u128> {
        output.renditions[i]
            .segments
            .iter()
            .map(|s| s.duration.as_millis() / 100)
            .collect()
    };
    assert_eq!(durations(0), durations(1));

    // Progress went forward and ended at the source's duration.
    assert!(reports.len() >= 2, "{reports:?}");
    assert!(
        reports.windows(2).all(|w| w[0].position <= w[1].position),
        "{reports:?}"
    );
    assert_eq!(reports.last().unwrap().fraction(), 1.0);

    // The poster is a 1280x720 JPEG.
    let poster = output.poster.as_ref().expect("a video source has a poster");
    let info = ffprobe(poster, &["-show_entries", "stream=codec_name,width,height"]);
    assert_eq!(info["streams"][0]["codec_name"], "mjpeg");
    assert_eq!(info["streams"][0]["width"], 1280);

    // The manifest built from the output, with an attachment, lists every rendition, and the
    // HLS master playlist made from it lists every rendition too.
    let pdf = AttachmentInput {
        name: "讲义.pdf".into(),
        media_type: "application/pdf".into(),
        bytes: courseway_content::synthetic::pseudo_random(9, &[], 700_000),
    };
    let build = build_lesson(meta("media-720p"), &output, std::slice::from_ref(&pdf)).unwrap();
    assert_eq!(build.manifest.renditions.len(), 3);
    assert_eq!(build.manifest.attachments.len(), 1);
    for r in build.manifest.chunk_refs() {
        r.id.verify(&build.chunks[&r.id]).unwrap();
    }
    let seg0 = std::fs::read(&output.renditions[0].segments[0].path).unwrap();
    let chunk0 = &build.chunks[&build.manifest.renditions[0].segments[0].chunks[0].id];
    assert_eq!(&seg0[..chunk0.len()], &chunk0[..]);
    let master = courseway_hls::master_playlist(&build.manifest, |r| format!("{}/index.m3u8", r.name));
    let parsed = m3u8_rs::parse_master_playlist_res(master.as_bytes()).unwrap();
    let uris: Vec<&str> = parsed.variants.iter().map(|v| v.uri.as_str()).collect();
    assert_eq!(uris, ["720p/index.m3u8", "360p/index.m3u8", "audio/index.m3u8"]);
    for (v, r) in parsed.variants.iter().zip(&output.renditions) {
        assert_eq!(v.codecs.as_deref(), Some(r.codecs.as_str()));
        assert!(v.bandwidth > 0);
    }
    let media = courseway_hls::media_playlist(&build.manifest.renditions[1], |i, _| format!("seg{i:05}.ts"));
    let parsed = m3u8_rs::parse_media_playlist_res(media.as_bytes()).unwrap();
    assert_eq!(parsed.segments.len(), 3);
    assert_eq!(parsed.target_duration, 4);
}

#[test]
fn media_transcode_640x360_source_makes_no_720p_rendition() {
    let dir = tempfile::tempdir().unwrap();
    let src = source(dir.path(), "b.mp4", TestSource::video_audio(640, 360, 6));
    let output = transcode(
        &src,
        &test_ladder(),
        &dir.path().join("out"),
        |_| {},
        &CancelToken::new(),
    )
    .unwrap();
    let names: Vec<&str> = output.renditions.iter().map(|r| r.name.as_str()).collect();
    assert_eq!(names, ["360p", "audio"]);
    assert!(!dir.path().join("out/720p").exists());
    check_segments(&output, true);
}

#[test]
fn media_transcode_video_only_source() {
    let dir = tempfile::tempdir().unwrap();
    let spec = TestSource {
        audio: false,
        ..TestSource::video_audio(640, 360, 5)
    };
    let src = source(dir.path(), "c.mp4", spec);
    let output = transcode(
        &src,
        &test_ladder(),
        &dir.path().join("out"),
        |_| {},
        &CancelToken::new(),
    )
    .unwrap();
    let names: Vec<&str> = output.renditions.iter().map(|r| r.name.as_str()).collect();
    assert_eq!(names, ["360p"]);
    assert_eq!(output.renditions[0].codecs, "avc1.4d401e");
    check_segments(&output, false);
}

#[test]
fn media_transcode_audio_only_source() {
    let dir = tempfile::tempdir().unwrap();
    let spec = TestSource {
        video: false,
        ..TestSource::video_audio(0, 0, 9)
    };
    let src = source(dir.path(), "d.m4a", spec);
    let output = transcode(
        &src,
        &test_ladder(),
        &dir.path().join("out"),
        |_| {},
        &CancelToken::new(),
    )
    .unwrap();
    let names: Vec<&str> = output.renditions.iter().map(|r| r.name.as_str()).collect();
    assert_eq!(names, ["audio"]);
    assert!(output.poster.is_none());
    assert_eq!(output.renditions[0].segments.len(), 3);
    check_segments(&output, false);
}

#[test]
fn media_transcode_cancelled_removes_its_output() {
    let dir = tempfile::tempdir().unwrap();
    let src = source(dir.path(), "e.mp4", TestSource::video_audio(1280, 720, 10));
    let out = dir.path().join("out");
    let cancel = CancelToken::new();
    let mut seen = Vec::new();
    let result = transcode(
        &src,
        &test_ladder(),
        &out,
        |p| {
            seen.push(p);
            if p.position > Duration::ZERO {
                cancel.cancel();
            }
        },
        &cancel,
    );
    assert!(matches!(result, Err(TranscodeError::Cancelled)), "{result:?}");
    assert!(!out.exists(), "partial output is removed");
    assert!(
        seen.iter().all(|p| p.position < p.duration),
        "cancelled before the end: {seen:?}"
    );
}

#[test]
fn media_transcode_refuses_a_non_empty_output_directory_and_bad_input() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    std::fs::create_dir(&out).unwrap();
    std::fs::write(out.join("keep.txt"), b"mine").unwrap();
    let src = source(dir.path(), "f.mp4", TestSource::video_audio(320, 240, 2));
    let err = transcode(&src, &test_ladder(), &out, |_| {}, &CancelToken::new()).unwrap_err();
    assert!(matches!(err, TranscodeError::Output { .. }), "{err:?}");
    assert_eq!(std::fs::read(out.join("keep.txt")).unwrap(), b"mine");

    let junk = dir.path().join("junk.mp4");
    std::fs::write(&junk, vec![7u8; 10_000]).unwrap();
    let err = transcode(
        &junk,
        &test_ladder(),
        &dir.path().join("out2"),
        |_| {},
        &CancelToken::new(),
    )
    .unwrap_err();
    assert!(
        matches!(err, TranscodeError::Probe(ProbeError::NotMedia { .. })),
        "{err:?}"
    );
    assert!(!dir.path().join("out2").exists());
}
