//! `courseway media probe|transcode` as an operator runs them: HLS on disk, read back with
//! m3u8-rs and with ffprobe (which follows the master playlist like a player).

use std::path::Path;
use std::process::{Command, Output};

use courseway_media::testsrc::{make_test_source, TestSource};

fn courseway(args: &[&str], paths: &[&Path]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_courseway"))
        .args(args)
        .args(paths)
        .output()
        .unwrap()
}

#[test]
fn media_cli_probe_describes_media_and_refuses_junk() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("lesson.mp4");
    make_test_source(&src, &TestSource::video_audio(640, 360, 2)).unwrap();
    let out = courseway(&["media", "probe"], &[&src]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("640x360 25.000 fps"), "{stdout}");
    assert!(stdout.contains("2 ch 48000 Hz"), "{stdout}");

    let junk = dir.path().join("junk.mp4");
    std::fs::write(&junk, courseway_content::synthetic::pseudo_random(3, &[], 50_000)).unwrap();
    let out = courseway(&["media", "probe"], &[&junk]);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("is not a media file"), "{stderr}");
}

#[test]
fn media_cli_transcode_writes_hls_that_ffprobe_plays() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("lesson.mp4");
    make_test_source(&src, &TestSource::video_audio(1280, 720, 6)).unwrap();
    let hls = dir.path().join("hls");
    let out = courseway(&["media", "transcode", "--preset", "superfast", "--out"], &[&hls, &src]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("master playlist"), "{stdout}");

    let master = std::fs::read(hls.join("master.m3u8")).unwrap();
    let master = m3u8_rs::parse_master_playlist_res(&master).unwrap();
    let uris: Vec<&str> = master.variants.iter().map(|v| v.uri.as_str()).collect();
    assert_eq!(uris, ["720p/index.m3u8", "360p/index.m3u8", "audio/index.m3u8"]);
    let res = |i: usize| master.variants[i].resolution.map(|r| (r.width, r.height));
    assert_eq!((res(0), res(1), res(2)), (Some((1280, 720)), Some((640, 360)), None));
    assert_eq!(master.variants[0].codecs.as_deref(), Some("avc1.4d401f,mp4a.40.2"));
    assert_eq!(master.variants[2].codecs.as_deref(), Some("mp4a.40.2"));
    assert!(master.variants.iter().all(|v| v.bandwidth > 0));
    assert!(master.variants[0].bandwidth > master.variants[1].bandwidth);

    for v in &master.variants {
        let path = hls.join(&v.uri);
        let media = m3u8_rs::parse_media_playlist_res(&std::fs::read(&path).unwrap()).unwrap();
        assert_eq!(media.playlist_type, Some(m3u8_rs::MediaPlaylistType::Vod));
        assert!(media.end_list);
        assert_eq!(media.target_duration, 4);
        assert_eq!(media.segments.len(), 2, "6 s in 4 s segments");
        let total: f32 = media.segments.iter().map(|s| s.duration).sum();
        assert!((total - 6.0).abs() < 0.5, "{}: {total}", v.uri);
        for s in &media.segments {
            assert!(path.parent().unwrap().join(&s.uri).is_file(), "{}", s.uri);
        }
    }
    assert!(hls.join("poster.jpg").is_file());

    // ffprobe reads the whole presentation through the master playlist.
    let probe = Command::new("ffprobe")
        .args([
            "-v",
            "error",
            "-of",
            "json",
            "-show_entries",
            "format=duration:stream=codec_name,width,height",
        ])
        .arg(hls.join("master.m3u8"))
        .output()
        .unwrap();
    assert!(probe.status.success(), "{}", String::from_utf8_lossy(&probe.stderr));
    let info: serde_json::Value = serde_json::from_slice(&probe.stdout).unwrap();
    let duration: f64 = info["format"]["duration"].as_str().unwrap().parse().unwrap();
    assert!((duration - 6.0).abs() < 0.5, "{info}");
    let sizes: Vec<(u64, u64)> = info["streams"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|s| s["codec_name"] == "h264")
        .map(|s| (s["width"].as_u64().unwrap(), s["height"].as_u64().unwrap()))
        .collect();
    assert!(sizes.contains(&(1280, 720)) && sizes.contains(&(640, 360)), "{info}");

    // A second run into the same directory is refused and leaves it as it was.
    let again = courseway(&["media", "transcode", "--out"], &[&hls, &src]);
    assert!(!again.status.success());
    assert!(String::from_utf8_lossy(&again.stderr).contains("not empty"));
    assert!(hls.join("master.m3u8").is_file());
}
