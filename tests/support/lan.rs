//! A station with a ready lesson made by GStreamer, serving its LAN: the setup of the LAN,
//! browser and viewing tests.
//!
//! A 12-second 640x360 test source (videotestsrc + audiotestsrc) is transcoded by
//! `courseway_media::transcode` into two video renditions and an audio-only one (4-second
//! segments, like the real ladder), built into a lesson with an attachment, published at an
//! origin on loopback, and synced by a station over QUIC; the station then serves its LAN.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use courseway::topology::DeploymentKeys;
use courseway_content::{Category, LessonId, LessonManifest, NodeName, ScheduleEntry, Target};
use courseway_media::testsrc::{make_test_source, TestSource};
use courseway_media::{
    build_lesson, transcode, AttachmentInput, CancelToken, LadderConfig, LessonMeta, TranscodeOutput, VideoRung,
};
use courseway_node::{clock, Parent, UpstreamConfig};
use courseway_origin::Origin;
use courseway_proto::{Role, Viewing};
use courseway_station::lan::{LanConfig, LanServer};
use courseway_station::{Station, StationConfig};
use courseway_store::StoreConfig;
use parking_lot::Mutex;

use crate::{loopback, start_origin, wait_until};

/// The lesson's id.
pub const LESSON: &str = "party-history-01";
/// Seconds of media in the source.
pub const SOURCE_SECONDS: u32 = 12;
/// The attachment's name and bytes.
pub const HANDOUT_NAME: &str = "讲义 第一课.pdf";

/// The handout: a few hundred kB, so it spans several chunks.
pub fn handout() -> Vec<u8> {
    courseway_content::synthetic::pseudo_random(7, &[1], 600_000)
}

/// The running setup.
pub struct LanSetup {
    pub dir: tempfile::TempDir,
    pub origin: Origin,
    pub station: Station,
    pub lan: Option<LanServer>,
    /// What the LAN server's sink received.
    pub records: Arc<Mutex<Vec<Viewing>>>,
    /// The transcode's files (the segments' original bytes).
    pub output: TranscodeOutput,
    pub manifest: LessonManifest,
}

impl std::fmt::Debug for LanSetup {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LanSetup").finish_non_exhaustive()
    }
}

impl LanSetup {
    /// The LAN server's address.
    pub fn addr(&self) -> std::net::SocketAddr {
        self.lan.as_ref().expect("the LAN server runs").local_addr()
    }

    /// Stops the LAN server (its playback sessions end and are recorded).
    pub fn stop_lan(&mut self) {
        self.lan.take();
    }

    pub async fn shutdown(mut self) {
        self.stop_lan();
        self.station.shutdown().await;
        self.origin.shutdown();
    }
}

/// The ladder of the tests: 360p and 240p video and audio only, ultrafast, 4-second segments.
pub fn ladder() -> LadderConfig {
    LadderConfig {
        video: vec![
            VideoRung {
                name: "360p".into(),
                height: 360,
                bitrate: 800_000,
            },
            VideoRung {
                name: "240p".into(),
                height: 240,
                bitrate: 300_000,
            },
        ],
        x264_preset: "ultrafast".into(),
        segment_duration: Duration::from_secs(4),
        ..LadderConfig::default()
    }
}

/// Transcodes a test source in `dir` (blocking: run it on a blocking thread).
pub fn make_media(dir: &Path) -> TranscodeOutput {
    let source = dir.join("source.mp4");
    make_test_source(&source, &TestSource::video_audio(640, 360, SOURCE_SECONDS)).expect("make the test source");
    transcode(&source, &ladder(), &dir.join("media"), |_| {}, &CancelToken::new()).expect("transcode the test source")
}

/// Starts an origin, publishes the GStreamer lesson with a handout (and, if `show_in_secs`
/// is given, a showing of it that far from now for every station), starts a station, waits
/// until it holds the lesson and serves its LAN with sessions idle after `idle_after`.
pub async fn start(idle_after: Duration, show_in_secs: Option<i64>) -> LanSetup {
    let dir = tempfile::tempdir().unwrap();
    let media_dir = dir.path().to_path_buf();
    let output = tokio::task::spawn_blocking(move || make_media(&media_dir))
        .await
        .unwrap();
    let meta = LessonMeta {
        id: LessonId::new(LESSON).unwrap(),
        version: 1,
        title: "党史学习 第一课".into(),
        publisher: "组织部".into(),
        category: Category::Required,
        tags: vec!["党史".into()],
        language: "zh-CN".into(),
    };
    let attachment = AttachmentInput {
        name: HANDOUT_NAME.into(),
        media_type: "application/pdf".into(),
        bytes: handout(),
    };
    let lesson = build_lesson(meta, &output, &[attachment]).unwrap();

    let keys = DeploymentKeys::generate().unwrap();
    let origin_name = NodeName::new("origin").unwrap();
    let origin = start_origin(dir.path(), &keys).await;
    origin.publish(&[(lesson.manifest.clone(), &lesson.chunks)]).unwrap();
    if let Some(secs) = show_in_secs {
        let at = courseway_content::UnixTime((clock::now().0 as i64 + secs) as u64);
        origin
            .publish_schedule(vec![ScheduleEntry {
                lesson: lesson.manifest.id.clone(),
                show_at: at,
                target: Target::All,
            }])
            .unwrap();
    }

    let name = NodeName::new("village-0001").unwrap();
    let station = Station::start(
        StationConfig::new(
            name.clone(),
            loopback(),
            StoreConfig::new(dir.path().join("station"), 1 << 30),
            UpstreamConfig::new(vec![Parent {
                name: origin_name,
                addr: origin.local_addr().unwrap(),
            }]),
        ),
        keys.enroll(Role::Station, &name).unwrap(),
        keys.root_public(),
    )
    .await
    .unwrap();
    let mut status = station.status();
    wait_until("the station holds the lesson", Duration::from_secs(60), || {
        let s = status.borrow_and_update();
        s.synced && s.lessons_ready == 1 && (show_in_secs.is_none() || s.schedule_version >= 1)
    })
    .await;

    let records = Arc::new(Mutex::new(Vec::new()));
    let sink_records = records.clone();
    let mut config = LanConfig::new(loopback(), Arc::new(move |v: Viewing| sink_records.lock().push(v)));
    config.idle_after = idle_after;
    let lan = station.serve_lan(config).await.unwrap();
    LanSetup {
        dir,
        origin,
        station,
        lan: Some(lan),
        records,
        output,
        manifest: lesson.manifest,
    }
}
