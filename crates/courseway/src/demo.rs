//! `courseway demo`: a whole delivery tree on loopback with synthetic courseware.
//!
//! Starts an origin, city relays, district relays and stations in one process (real QUIC with
//! mutual TLS between every pair of nodes, a RocksDB store per node), publishes a synthetic
//! lesson, and shows the stations syncing. With `--exit-when-synced --json` its last line is one
//! JSON object with the figures.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::Context;
use courseway::topology::{DeploymentKeys, Topology, TopologyConfig};
use courseway_content::synthetic::SyntheticLesson;
use courseway_content::LessonId;
use courseway_net::RateLimit;
use courseway_relay::PrefetchPolicy;

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
    /// Size of the published lesson in MB (three renditions and a handout).
    #[arg(long, default_value_t = 8)]
    lesson_mb: u32,
    /// Each station's download cap in Mbit/s (0: uncapped).
    #[arg(long, default_value_t = 0.0)]
    link_mbit: f64,
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

pub fn run(args: DemoArgs) -> anyhow::Result<()> {
    anyhow::ensure!(args.lesson_mb > 0, "--lesson-mb must be at least 1");
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

async fn run_async(args: DemoArgs) -> anyhow::Result<()> {
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
        memtable_bytes: 4 << 20,
    };
    eprintln!(
        "Courseway demo: 1 origin → {} city relays → {} district relays → {} stations on loopback (QUIC, mutual TLS)",
        args.city_relays, args.district_relays, args.stations
    );
    eprintln!("  stores under {}", dir.display());
    let keys = DeploymentKeys::generate()?;
    let tree = Topology::start(&config, &keys).await?;
    eprintln!("  origin listening on {}", tree.origin.local_addr()?);

    // One lesson of about `lesson_mb` MB: 720p + 360p + audio, four-second segments.
    let lesson = SyntheticLesson::of_size(
        LessonId::new("demo-lesson-001")?,
        1,
        u64::from(args.lesson_mb) * 1_000_000,
    )
    .build();
    let lesson_bytes: u64 = lesson.chunks.values().map(|c| c.len() as u64).sum();
    let started = Instant::now();
    let version = tree.origin.publish(&[(lesson.manifest.clone(), &lesson.chunks)])?;
    eprintln!(
        "  published {} ({:.1} MB, {} chunks) as catalog v{version}",
        lesson.manifest.id,
        lesson_bytes as f64 / 1e6,
        lesson.chunks.len()
    );

    let mut last_report = Instant::now();
    loop {
        let synced = tree.stations_synced(version);
        if last_report.elapsed() >= Duration::from_secs(1) || synced == args.stations {
            let bytes: u64 = tree.station_status().iter().map(|s| s.bytes_ready).sum();
            eprintln!(
                "  [{:6.1} s] {synced}/{} stations ready, {:.1} MB delivered, origin sent {:.1} MB",
                started.elapsed().as_secs_f64(),
                args.stations,
                bytes as f64 / 1e6,
                tree.origin.stats().chunk_bytes_sent as f64 / 1e6
            );
            last_report = Instant::now();
        }
        if synced == args.stations {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let seconds = started.elapsed().as_secs_f64();

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
    eprintln!("  every station holds the lesson, verified; egress ratio {egress_ratio:.3}; {seconds:.1} s");
    if args.json {
        println!(
            "{}",
            serde_json::json!({
                "stations": args.stations,
                "stations_complete": tree.stations_synced(version),
                "lesson_bytes": lesson_bytes,
                "origin_bytes_sent": origin_bytes_sent,
                "first_tier_relays": first_tier,
                "egress_ratio": egress_ratio,
                "seconds": seconds,
                "bad_chunks_served": bad_chunks_served,
            })
        );
    }
    if !args.exit_when_synced {
        eprintln!("  serving; press Ctrl-C to stop");
        tokio::signal::ctrl_c().await.context("waiting for Ctrl-C")?;
    }
    tree.shutdown().await;
    Ok(())
}
