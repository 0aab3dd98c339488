//! `courseway demo`: a whole delivery tree on loopback with generated courseware.
//!
//! Starts an origin, city relays, district relays and stations in one process (real QUIC with
//! mutual TLS between every pair of nodes, a RocksDB store per node), publishes a lesson, and
//! shows the stations syncing. The lesson is real video by default: a test pattern with a tone
//! made by GStreamer (videotestsrc, audiotestsrc) and put through the same ingest pipeline as an
//! upload at the origin (`crates/media`: the H.264/AAC rendition ladder in MPEG-TS segments),
//! with a handout attached; `--courseware synthetic` publishes pseudo-random bytes of a chosen
//! size instead, which is quicker to make and what the delivery figures are measured with. With
//! `--exit-when-synced --json` its last line is one JSON object with the figures.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::Context;
use courseway::topology::{DeploymentKeys, MetricsTarget, Topology, TopologyConfig};
use courseway_content::schedule::{ScheduleEntry, Target};
use courseway_content::synthetic::SyntheticLesson;
use courseway_content::{Category, ChunkId, LessonId, LessonManifest};
use courseway_media::testsrc::{make_test_source, TestSource};
use courseway_media::{AttachmentInput, CancelToken, LadderConfig, LessonMeta};
use courseway_net::RateLimit;
use courseway_origin::admin::workflow::Role;
use courseway_origin::admin::{AdminApi, AdminConfig};
use courseway_relay::PrefetchPolicy;
use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};
use std::collections::BTreeMap;

#[derive(Debug, clap::Args)]
pub struct DemoArgs {
    /// Stations (villages) syncing the lesson.
    #[arg(long, default_value_t = 20)]
    stations: usize,
    /// City relays under the origin.
    #[arg(long, default_value_t = 2)]
    city_relays: usize,
    /// District relays, spread over the city relays.
    #[arg(long, default_value_t = 4)]
    district_relays: usize,
    /// What the demo publishes: a GStreamer-made video lesson (transcoded into the 720p, 360p
    /// and audio-only ladder), or synthetic bytes of `--lesson-mb`.
    #[arg(long, value_enum, default_value_t = Courseware::Video)]
    courseware: Courseware,
    /// Length of the video lesson in seconds (`--courseware video`).
    #[arg(long, default_value_t = 40)]
    lesson_seconds: u32,
    /// Size of the synthetic lesson in MB: three renditions and a handout (`--courseware synthetic`).
    #[arg(long, default_value_t = 8)]
    lesson_mb: u32,
    /// Each station's download cap in Mbit/s (0: uncapped).
    #[arg(long, default_value_t = 0.0)]
    link_mbit: f64,
    /// Far villages: the last stations, on a slow line (`--far-link-kbit`). The lesson is put on
    /// the schedule for every village (`--showing-in-minutes`); a far village will not have it
    /// in time, says so in its heartbeat, and `courseway status` shows it at risk with its reason.
    #[arg(long, default_value_t = 1)]
    far_villages: usize,
    /// The far villages' download cap in kbit/s.
    #[arg(long, default_value_t = 64)]
    far_link_kbit: u64,
    /// Minutes from the start until the lesson's showing in every village.
    #[arg(long, default_value_t = 45)]
    showing_in_minutes: u64,
    /// Relays fetch published lessons before any station asks.
    #[arg(long)]
    prefetch: bool,
    /// Exit once every station holds the lesson (otherwise keep serving until Ctrl-C).
    #[arg(long)]
    exit_when_synced: bool,
    /// End with one JSON line of figures.
    #[arg(long)]
    json: bool,
    /// Where the nodes' stores go (default: a temporary directory removed at the end).
    #[arg(long)]
    dir: Option<PathBuf>,
}

/// What the demo publishes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Courseware {
    /// A test pattern with a tone, made and transcoded by GStreamer.
    Video,
    /// Pseudo-random bytes shaped like a lesson (no transcode; any size).
    Synthetic,
}

pub fn run(args: DemoArgs) -> anyhow::Result<()> {
    anyhow::ensure!(args.lesson_mb > 0, "--lesson-mb must be at least 1");
    anyhow::ensure!(
        (2..=3600).contains(&args.lesson_seconds),
        "--lesson-seconds must be between 2 and 3600"
    );
    anyhow::ensure!(
        args.far_villages < args.stations,
        "--far-villages must be fewer than --stations (the demo waits for the other villages)"
    );
    anyhow::ensure!(args.far_link_kbit >= 8, "--far-link-kbit must be at least 8");
    anyhow::ensure!(
        (1..=7 * 24 * 60).contains(&args.showing_in_minutes),
        "--showing-in-minutes must be between 1 and 10080"
    );
    anyhow::ensure!(
        args.link_mbit >= 0.0,
        "--link-mbit must not be negative (0 means uncapped)"
    );
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the runtime")?;
    runtime.block_on(run_async(args))
}

/// Ctrl-C, heard from the moment the demo starts: a signal that arrives while the demo is busy
/// between two waits (verifying stores, printing) is kept, not lost. (`tokio::signal::ctrl_c()`
/// only sees signals that arrive after it is first polled.)
struct Interrupt(tokio::sync::watch::Receiver<bool>);

impl Interrupt {
    fn listen() -> anyhow::Result<Self> {
        let mut sigint = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::interrupt())
            .context("listening for Ctrl-C")?;
        let (tx, rx) = tokio::sync::watch::channel(false);
        tokio::spawn(async move {
            if sigint.recv().await.is_some() {
                let _ = tx.send(true);
            }
        });
        Ok(Self(rx))
    }

    /// Returns once Ctrl-C has been pressed (at once if it already was).
    async fn pressed(&mut self) {
        // The sender lives as long as the listening task; if that ended without a signal,
        // there is nothing more to wait for but the process's end.
        if self.0.wait_for(|pressed| *pressed).await.is_err() {
            std::future::pending::<()>().await;
        }
    }
}

async fn run_async(args: DemoArgs) -> anyhow::Result<()> {
    let mut interrupt = Interrupt::listen()?;
    let temp;
    let dir = match &args.dir {
        Some(d) => d.clone(),
        None => {
            temp = tempfile::tempdir().context("creating a temporary directory for the demo")?;
            temp.path().to_path_buf()
        }
    };
    let station_rate = if args.link_mbit > 0.0 {
        Some(RateLimit::from_bits_per_sec((args.link_mbit * 1e6) as u64, 100).context("--link-mbit")?)
    } else {
        None
    };
    let config = TopologyConfig {
        dir: dir.clone(),
        city_relays: args.city_relays,
        district_relays: args.district_relays,
        stations: args.stations,
        prefetch: if args.prefetch {
            PrefetchPolicy::All
        } else {
            PrefetchPolicy::None
        },
        station_rate,
        far_stations: args.far_villages,
        far_station_rate: Some(
            RateLimit::from_bits_per_sec(args.far_link_kbit * 1000, 100).context("--far-link-kbit")?,
        ),
        memtable_bytes: 4 << 20,
    };
    eprintln!(
        "Courseway demo: 1 origin → {} city relays → {} district relays → {} stations on loopback (QUIC, mutual TLS)",
        args.city_relays, args.district_relays, args.stations
    );
    eprintln!("  stores under {}", dir.display());
    let keys = DeploymentKeys::generate()?;
    let mut tree = Topology::start(&config, &keys).await?;
    eprintln!("  origin listening on {} (UDP, QUIC)", tree.origin.local_addr()?);
    let targets = tree.serve_metrics().await?;
    print_metrics_targets(&targets, &dir)?;
    // Viewings on a station's page go to its outbox and up to the origin as reports.
    let pages = tree.serve_lan().await?;
    for (name, url) in &pages {
        eprintln!("  TV page of station {name}: {url}");
    }
    let (admin, operator_token) = start_admin(&tree, &dir).await?;
    eprintln!(
        "  fleet status: COURSEWAY_SERVER={} COURSEWAY_TOKEN={operator_token} courseway status",
        admin.local_addr()
    );

    let (manifest, chunks) = match args.courseware {
        Courseware::Video => {
            // Transcoding takes a while: Ctrl-C stops it too.
            let cancel = CancelToken::new();
            tokio::select! {
                lesson = video_lesson(&dir, args.lesson_seconds, cancel.clone()) => lesson?,
                () = interrupt.pressed() => {
                    cancel.cancel();
                    eprintln!("  interrupted: stopping every node");
                    tree.shutdown().await;
                    anyhow::bail!("stopped by Ctrl-C while making the demo lesson");
                }
            }
        }
        Courseware::Synthetic => {
            // About `lesson_mb` MB: 720p + 360p + audio, four-second segments.
            let lesson = SyntheticLesson::of_size(
                LessonId::new("demo-lesson-001")?,
                1,
                u64::from(args.lesson_mb) * 1_000_000,
            )
            .build();
            (lesson.manifest, lesson.chunks)
        }
    };
    let lesson_bytes: u64 = chunks.values().map(|c| c.len() as u64).sum();
    let started = Instant::now();
    // Publishing writes the store synchronously (synced writes): off the async workers.
    let version = tokio::task::block_in_place(|| tree.origin.publish(&[(manifest.clone(), &chunks)]))?;
    eprintln!(
        "  published {} \"{}\" ({:.1} MB in {} renditions) as catalog v{version}",
        manifest.id,
        manifest.title,
        lesson_bytes as f64 / 1e6,
        manifest.renditions.len()
    );

    // Tonight's showing, in every village.
    let show_at = courseway_node::clock::now().plus_secs(args.showing_in_minutes * 60);
    let entry = ScheduleEntry {
        lesson: manifest.id.clone(),
        show_at,
        target: Target::All,
    };
    tokio::task::block_in_place(|| tree.origin.publish_schedule(vec![entry]))?;
    eprintln!("  scheduled its showing in every village at {}", show_at.utc());

    let near = args.stations - args.far_villages;
    let bars = TierBars::new(&tree, lesson_bytes);
    let interrupted = loop {
        bars.update(&tree, version);
        if near_stations_synced(&tree, near, version) && at_risk_heard(&tree, args.far_villages) {
            break false;
        }
        tokio::select! {
            () = tokio::time::sleep(Duration::from_millis(200)) => {}
            () = interrupt.pressed() => break true,
        }
    };
    bars.finish();
    if interrupted {
        eprintln!("  interrupted: stopping every node");
        tree.shutdown().await;
        anyhow::bail!(
            "stopped by Ctrl-C before every station held the lesson ({} of {} did)",
            tree_synced_hint(&bars),
            args.stations
        );
    }
    let seconds = started.elapsed().as_secs_f64();
    let at_risk = stations_at_risk(&tree);
    for (station, lesson, reason) in &at_risk {
        eprintln!("  at risk at {station}: {lesson}: {reason}");
    }

    // Measured, not assumed: re-hash everything the stations hold.
    let mut bad_chunks_served = 0usize;
    for s in &tree.stations {
        let v = s.store().verify_all()?;
        bad_chunks_served += v.corrupt.len() + v.missing_bodies.len();
    }
    let origin_bytes_sent = tree.origin.stats().chunk_bytes_sent;
    let first_tier = if args.city_relays > 0 {
        args.city_relays
    } else if args.district_relays > 0 {
        args.district_relays
    } else {
        args.stations
    };
    let egress_ratio = origin_bytes_sent as f64 / (lesson_bytes as f64 * first_tier as f64);
    eprintln!(
        "  every village on a normal line holds the lesson ({near} of {}), verified; egress ratio {egress_ratio:.3}; {seconds:.1} s",
        args.stations
    );
    if args.json {
        println!(
            "{}",
            serde_json::json!({
                "stations": args.stations,
                "courseware": match args.courseware {
                    Courseware::Video => "video",
                    Courseware::Synthetic => "synthetic",
                },
                "renditions": manifest.renditions.len(),
                "stations_complete": tree.stations_synced(version),
                "far_villages": args.far_villages,
                "at_risk": at_risk.iter().map(|(station, lesson, reason)| serde_json::json!({"station": station, "lesson": lesson, "reason": reason})).collect::<Vec<_>>(),
                "admin_api": admin.local_addr().to_string(),
                "lesson_bytes": lesson_bytes,
                "origin_bytes_sent": origin_bytes_sent,
                "first_tier_relays": first_tier,
                "egress_ratio": egress_ratio,
                "seconds": seconds,
                "bad_chunks_served": bad_chunks_served,
                "station_pages": pages.iter().map(|(name, url)| serde_json::json!({"station": name, "url": url})).collect::<Vec<_>>(),
            })
        );
    }
    if !args.exit_when_synced {
        eprintln!("  serving; press Ctrl-C to stop");
        interrupt.pressed().await;
        eprintln!("  stopping every node");
    }
    drop(admin);
    tree.shutdown().await;
    Ok(())
}

/// The origin's admin API on loopback (for `courseway status`, `courseway lessons`, …) and a
/// fresh operator token for it.
async fn start_admin(tree: &Topology, dir: &Path) -> anyhow::Result<(AdminApi, String)> {
    let config = AdminConfig::new(
        std::net::SocketAddr::from((std::net::Ipv4Addr::LOCALHOST, 0)),
        dir.join("origin-admin"),
        dir.join("origin-spool"),
    );
    let token = courseway_origin::admin::tokens::create(
        &config.tokens_file(),
        &format!("demo-operator-{}", std::process::id()),
        Role::Operator,
        None,
        courseway_node::clock::now().0,
    )
    .context("making the demo's operator token")?;
    let admin = AdminApi::start(config, tree.origin.clone())
        .await
        .context("starting the origin's admin API")?;
    Ok((admin, token))
}

/// Whether the first `near` stations hold every lesson of catalog `version`.
fn near_stations_synced(tree: &Topology, near: usize, version: u64) -> bool {
    tree.stations[..near]
        .iter()
        .all(|s| matches!(&*s.status().borrow(), st if st.synced && st.catalog_version >= version))
}

/// Whether the origin has heard from `far` stations that a lesson is at risk there.
fn at_risk_heard(tree: &Topology, far: usize) -> bool {
    let mut stations: Vec<String> = stations_at_risk(tree).into_iter().map(|(s, _, _)| s).collect();
    stations.dedup();
    stations.len() >= far
}

/// Station, lesson and reason of every lesson at risk, as the origin has it from heartbeats.
fn stations_at_risk(tree: &Topology) -> Vec<(String, String, String)> {
    tree.origin
        .fleet_status(courseway_origin::FLEET_OFFLINE_AFTER)
        .stations
        .into_iter()
        .flat_map(|st| {
            st.at_risk
                .into_iter()
                .map(move |r| (st.station.clone(), r.lesson, r.reason))
        })
        .collect()
}

/// Makes the video lesson: a `seconds`-long 720p test pattern with a tone, transcoded into the
/// default ladder under `dir/demo-media`, with a short handout, every chunk in memory.
async fn video_lesson(
    dir: &Path,
    seconds: u32,
    cancel: CancelToken,
) -> anyhow::Result<(LessonManifest, BTreeMap<ChunkId, Vec<u8>>)> {
    let source = dir.join("demo-source.mp4");
    let out = dir.join("demo-media");
    let bar = ProgressBar::with_draw_target(Some(u64::from(seconds) * 1000), ProgressDrawTarget::stderr_with_hz(4));
    bar.set_style(
        ProgressStyle::with_template("  {prefix:<16} [{bar:32}] {percent:>3}% {msg}")
            .expect("a valid template")
            .progress_chars("=> "),
    );
    bar.set_prefix("making video");
    bar.set_message(format!("{seconds} s of 720p test pattern (videotestsrc)"));
    let progress = bar.clone();
    let build = tokio::task::spawn_blocking(move || -> anyhow::Result<_> {
        make_test_source(&source, &TestSource::video_audio(1280, 720, seconds))
            .map_err(|e| anyhow::anyhow!("making the demo video with GStreamer: {e}"))?;
        progress.set_prefix("transcoding");
        progress.set_message("720p, 360p and audio-only renditions");
        let output = courseway_media::transcode(
            &source,
            &LadderConfig::default(),
            &out,
            |p| progress.set_position(p.position.as_millis() as u64),
            &cancel,
        )
        .context("transcoding the demo video (install the GStreamer plugins: ./scripts/demo does)")?;
        let _ = std::fs::remove_file(&source);
        let meta = LessonMeta {
            id: LessonId::new("demo-lesson-001")?,
            version: 1,
            title: "农村实用技术：示范课 (demo lesson)".into(),
            publisher: "demo-centre".into(),
            category: Category::Required,
            tags: vec!["demo".into()],
            language: "zh".into(),
        };
        let handout = AttachmentInput {
            name: "handout.txt".into(),
            media_type: courseway_media::lesson::media_type_for("handout.txt").into(),
            bytes: "示范课讲义 / Demo lesson handout\n\nA test pattern with a 440 Hz tone, made by GStreamer and \
                    transcoded into the Courseway rendition ladder.\n"
                .repeat(64)
                .into_bytes(),
        };
        let lesson =
            courseway_media::build_lesson(meta, &output, &[handout]).context("reading the transcoded segments")?;
        Ok((lesson.manifest, lesson.chunks))
    });
    let built = build.await.context("the transcode task failed");
    bar.finish_and_clear();
    let (manifest, chunks) = built??;
    let secs = manifest.duration_ms as f64 / 1000.0;
    eprintln!(
        "  made a {secs:.0} s video lesson with GStreamer: {}",
        manifest
            .renditions
            .iter()
            .map(|r| format!("{} ({} segments)", r.name, r.segments.len()))
            .collect::<Vec<_>>()
            .join(", ")
    );
    Ok((manifest, chunks))
}

/// Prints where each node's metrics are, and writes them as a Prometheus file_sd target list.
fn print_metrics_targets(targets: &[MetricsTarget], dir: &Path) -> anyhow::Result<()> {
    let url = |t: &MetricsTarget| format!("http://{}/metrics", t.addr);
    for t in targets.iter().filter(|t| t.role != "station") {
        eprintln!("  metrics of {} {}: {}", t.role, t.name, url(t));
    }
    let stations: Vec<_> = targets.iter().filter(|t| t.role == "station").collect();
    if let (Some(first), Some(last)) = (stations.first(), stations.last()) {
        eprintln!("  metrics of station {}: {}", first.name, url(first));
        if stations.len() > 1 {
            eprintln!(
                "  … {} stations in all, up to {}: {}",
                stations.len(),
                last.name,
                url(last)
            );
        }
    }
    let file_sd: Vec<_> = targets
        .iter()
        .map(|t| serde_json::json!({"targets": [t.addr.to_string()], "labels": {"role": t.role, "node": t.name}}))
        .collect();
    let path = dir.join("prometheus-targets.json");
    std::fs::write(&path, serde_json::to_string_pretty(&file_sd)?)
        .with_context(|| format!("writing {}", path.display()))?;
    eprintln!(
        "  every node's metrics endpoint, for Prometheus file_sd_configs: {}",
        path.display()
    );
    Ok(())
}

/// One progress bar per tier: bytes of the lesson cached at the city and district relays, and
/// stations holding the whole lesson.
struct TierBars {
    _multi: MultiProgress,
    city: Option<ProgressBar>,
    district: Option<ProgressBar>,
    stations: ProgressBar,
}

impl TierBars {
    fn new(tree: &Topology, lesson_bytes: u64) -> Self {
        let multi = MultiProgress::with_draw_target(ProgressDrawTarget::stderr_with_hz(4));
        let bytes_style = ProgressStyle::with_template("  {prefix:<16} [{bar:32}] {bytes:>10}/{total_bytes:<10} {msg}")
            .expect("a valid template")
            .progress_chars("=> ");
        let count_style = ProgressStyle::with_template("  {prefix:<16} [{bar:32}] {pos:>10}/{len:<10} {msg}")
            .expect("a valid template")
            .progress_chars("=> ");
        let tier = |name: &str, relays: usize| {
            (relays > 0).then(|| {
                let bar = multi.add(ProgressBar::new(lesson_bytes * relays as u64));
                bar.set_style(bytes_style.clone());
                bar.set_prefix(format!("{relays} {name}"));
                bar
            })
        };
        let city = tier("city relays", tree.city.len());
        let district = tier("district relays", tree.district.len());
        let stations = multi.add(ProgressBar::new(tree.stations.len() as u64));
        stations.set_style(count_style);
        stations.set_prefix(format!("{} stations", tree.stations.len()));
        Self {
            _multi: multi,
            city,
            district,
            stations,
        }
    }

    fn update(&self, tree: &Topology, version: u64) {
        let cached =
            |relays: &[courseway_relay::Relay]| -> u64 { relays.iter().map(|r| r.store().stats().used_bytes).sum() };
        if let Some(bar) = &self.city {
            bar.set_position(cached(&tree.city).min(bar.length().unwrap_or(0)));
        }
        if let Some(bar) = &self.district {
            bar.set_position(cached(&tree.district).min(bar.length().unwrap_or(0)));
        }
        let delivered: u64 = tree.station_status().iter().map(|s| s.bytes_ready).sum();
        self.stations.set_position(tree.stations_synced(version) as u64);
        self.stations.set_message(format!(
            "ready · {:.1} MB delivered · origin sent {:.1} MB",
            delivered as f64 / 1e6,
            tree.origin.stats().chunk_bytes_sent as f64 / 1e6
        ));
    }

    fn finish(&self) {
        for bar in [&self.city, &self.district].into_iter().flatten() {
            bar.finish();
        }
        self.stations.finish();
    }
}

fn tree_synced_hint(bars: &TierBars) -> u64 {
    bars.stations.position()
}
