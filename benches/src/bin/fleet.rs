//! The fleet benchmark (issue #9): one lesson published at t = 0 to a city of stations through
//! Courseway (1 origin → 4 city relays → 36 town relays → 1,283 stations, every station behind
//! its own emulated line), then the same lesson through an nginx cache tier of the same shape to
//! one HTTP client per station, then one relay's serving capacity beside nginx HTTPS; all on
//! loopback, in one run. Prints progress to stderr and one JSON object to stdout.
//!
//! ```text
//! $CARGO_TARGET_DIR/debug/fleet --stations 1283 --rate-kbit 256 --lesson-mb 1
//! ```
//!
//! See docs/benchmarks.md ("Fleet") for the method and what limits each figure.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Result;
use clap::Parser;
use courseway_benches::fleet::{self, capacity, procfs, ClassTimes, FleetConfig};
use serde_json::{json, Value};

#[derive(Debug, Parser)]
#[command(about = "A city of stations through Courseway beside an nginx cache tier, on loopback")]
struct Args {
    #[arg(long, default_value_t = 1283)]
    stations: usize,
    #[arg(long, default_value_t = 4)]
    cities: usize,
    #[arg(long, default_value_t = 36)]
    towns: usize,
    /// The normal station line in kbit/s; a fifth of the stations get a quarter of it.
    #[arg(long, default_value_t = 256)]
    rate_kbit: u64,
    /// One-way delay of a station line, ms.
    #[arg(long, default_value_t = 50)]
    delay_ms: u64,
    /// Random loss per packet on a station line (QUIC; the HTTP clients emulate no loss).
    #[arg(long, default_value_t = 0.01)]
    loss: f64,
    /// The bottleneck queue of a station line, in ms at its rate (at least 16 KiB).
    #[arg(long, default_value_t = 500)]
    queue_ms: u64,
    /// Lesson size in MB (10^6 bytes; whole 250 kB segments plus a 100 kB handout).
    #[arg(long, default_value_t = 1.0)]
    lesson_mb: f64,
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Memtable of every node's store, KiB.
    #[arg(long, default_value_t = 512)]
    memtable_kib: usize,
    #[arg(long, default_value_t = 1800)]
    timeout_s: u64,
    /// Give every station its line's rate as `station.rate_limit`, which also sizes its receive
    /// windows to the line (`TransportConfig::for_line`). Off by default, as in the published
    /// runs (docs/benchmarks.md: the one run with it on).
    #[arg(long)]
    station_rate_limit: bool,
    /// Processes the stations run in besides this one (0: all in this process). Default: as
    /// many as the open-file limit calls for (~16 per station).
    #[arg(long)]
    station_hosts: Option<usize>,
    /// Skip the nginx tree.
    #[arg(long)]
    no_nginx: bool,
    /// Skip the serving-capacity comparison.
    #[arg(long)]
    no_capacity: bool,
    #[arg(long, default_value_t = 100)]
    capacity_clients: usize,
    #[arg(long, default_value_t = 10)]
    capacity_seconds: u64,
    /// Where the stores and nginx files go (default: a temporary directory in /dev/shm if it
    /// exists, else in $TMPDIR; removed after).
    #[arg(long)]
    dir: Option<PathBuf>,
}

fn class_json(times: &[Option<f64>], bound_s: f64) -> Value {
    let last = ClassTimes::last(times);
    json!({
        "stations": times.len(),
        "complete": times.iter().flatten().count(),
        "last_s": last,
        "median_s": ClassTimes::median(times),
        "bound_s": bound_s,
        "ratio_to_bound": last.map(|t| t / bound_s),
    })
}

fn div(a: Option<f64>, b: Option<f64>) -> Value {
    match (a, b) {
        (Some(a), Some(b)) if b != 0.0 => json!(a / b),
        _ => Value::Null,
    }
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "warn,fleet=info,courseway_benches=info".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    // `fleet host JSON`: a station host started by this harness (see courseway_benches::fleet::host).
    let argv: Vec<String> = std::env::args().collect();
    if argv.get(1).map(String::as_str) == Some("host") {
        return fleet::host::serve(argv.get(2).map_or("", String::as_str)).await;
    }
    let args = Args::parse();
    let nofile_before = procfs::nofile_limit();
    let raised = procfs::raise_nofile(1 << 20);
    let config = FleetConfig {
        cities: args.cities,
        towns: args.towns,
        stations: args.stations,
        rate_bps: args.rate_kbit * 1000,
        delay: Duration::from_millis(args.delay_ms),
        loss: args.loss,
        queue: Duration::from_millis(args.queue_ms),
        memtable_bytes: args.memtable_kib * 1024,
        stations_know_their_line: args.station_rate_limit,
        timeout: Duration::from_secs(args.timeout_s),
        lesson_seed: args.seed,
    };
    // RocksDB stores and nginx caches go to tmpfs when there is one: 1,283 stores on a shared
    // disk would measure the disk (and this machine's disk was full), not the delivery.
    let tmp = if std::path::Path::new("/dev/shm").is_dir() {
        tempfile::tempdir_in("/dev/shm")?
    } else {
        tempfile::tempdir()?
    };
    let dir = args.dir.clone().unwrap_or_else(|| tmp.path().to_path_buf());
    let lesson = fleet::lesson((args.lesson_mb * 1e6) as u64, config.lesson_seed);
    // About 15 descriptors per station: split the stations over processes under the limit.
    let limit: usize = procfs::nofile_limit()
        .and_then(|(soft, _)| soft.parse().ok())
        .unwrap_or(1024);
    let station_fds = config.stations * 16;
    let station_hosts = args.station_hosts.unwrap_or(if station_fds + 2048 <= limit {
        0
    } else {
        station_fds.div_ceil(limit.saturating_sub(2048).max(1024))
    });
    let bytes = fleet::lesson_bytes(&lesson);
    let bound_normal = bytes as f64 * 8.0 / config.rate_bps as f64;
    let bound_slow = bytes as f64 * 8.0 / (config.rate_bps / 4) as f64;
    let delivered_gb = bytes as f64 * config.stations as f64 / 1e9;
    let load_before = procfs::loadavg();
    tracing::info!(
        bytes,
        chunks = lesson.chunks.len(),
        stations = config.stations,
        "courseway run"
    );

    let cw = fleet::courseway::run(&config, &lesson, &dir.join("courseway"), station_hosts).await?;
    let cw_node_cpu = cw.node_cpu_s();
    let cw_json = json!({
        "complete": cw.times.complete(),
        "identical": cw.identical,
        "mismatched_chunks": cw.mismatches,
        "normal": class_json(&cw.times.normal, bound_normal),
        "slow": class_json(&cw.times.slow, bound_slow),
        "origin_chunk_bytes_sent": cw.origin_chunk_bytes_sent,
        "origin_duplicate_sends": cw.origin_duplicate_sends,
        "origin_egress_ratio": cw.origin_chunk_bytes_sent as f64 / (bytes * config.cities as u64) as f64,
        "city_tier": cw.city_hit_ratio(),
        "town_tier": cw.town_hit_ratio(),
        "startup_s": cw.startup_s,
        "cpu_s_total": cw.cpu_total_s,
        "cpu_s_nodes": cw_node_cpu,
        "cpu_s_by_thread": cw.cpu_by_thread,
        "cpu_s_per_delivered_gb_nodes": cw_node_cpu / delivered_gb,
        "cpu_s_per_delivered_gb_with_linkemu": cw.cpu_total_s / delivered_gb,
        "peak_rss_bytes_by_process": cw.peak_rss_bytes.iter().map(|(k, v)| json!({"process": k, "vm_hwm_bytes": v})).collect::<Vec<_>>(),
        "peak_rss_bytes_sum": cw.peak_rss_bytes.iter().map(|(_, v)| v).sum::<u64>(),
        "processes": cw.processes,
        "open_fds_peak": cw.open_fds_peak,
        "link_datagrams_forwarded_down": cw.link_forwarded,
        "link_datagrams_lost": cw.link_lost,
        "link_datagrams_queue_dropped": cw.link_queue_dropped,
        "line_use": cw.line_use(),
    });
    tracing::info!(%cw_json, "courseway done");

    let mut out = json!({
        "config": {
            "stations": config.stations, "cities": config.cities, "towns": config.towns,
            "rate_kbit": args.rate_kbit, "slow_rate_kbit": args.rate_kbit / 4,
            "slow_share": "station i with i % 5 == 4",
            "delay_ms": args.delay_ms, "loss": config.loss, "queue_ms": args.queue_ms,
            "lesson_bytes": bytes, "lesson_chunks": lesson.chunks.len(),
            "memtable_kib": args.memtable_kib,
            "station_hosts": station_hosts,
            "stations_know_their_line": config.stations_know_their_line,
        },
        "machine": {
            "cpus": std::thread::available_parallelism().map_or(0, |n| n.get()),
            "loadavg_before": load_before,
            "nofile_limit_before": nofile_before,
            "nofile_raised_with_prlimit": raised,
            "nofile_limit_after": procfs::nofile_limit(),
            "dir": dir.display().to_string(),
        },
        "courseway": cw_json,
    });

    if !args.no_nginx {
        tracing::info!("nginx run");
        let ng = fleet::nginx::run(&config, &lesson, &dir.join("nginx")).await?;
        let ng_cpu = ng.nginx_cpu_s + ng.clients_cpu_s;
        let ng_egress = ng.origin_bytes_sent as f64 / (bytes * config.cities as u64) as f64;
        let ng_json = json!({
            "complete": ng.times.complete(),
            "failed_stations": ng.failed_stations,
            "identical": ng.identical,
            "mismatched_chunks": ng.mismatches,
            "normal": class_json(&ng.times.normal, bound_normal),
            "slow": class_json(&ng.times.slow, bound_slow),
            "origin_bytes_sent": ng.origin_bytes_sent,
            "origin_egress_ratio": ng_egress,
            "city_tier": ng.city,
            "town_tier": ng.town,
            "cpu_s_nginx": ng.nginx_cpu_s,
            "cpu_s_clients": ng.clients_cpu_s,
            "cpu_s_per_delivered_gb": ng_cpu / delivered_gb,
            "cpu_s_per_delivered_gb_nginx_only": ng.nginx_cpu_s / delivered_gb,
            "peak_rss_bytes_nginx_sum": ng.nginx_peak_rss_bytes,
            "peak_rss_bytes_clients_process": ng.clients_peak_rss_bytes,
        });
        let ratios = json!({
            "time_normal": div(ClassTimes::last(&cw.times.normal), ClassTimes::last(&ng.times.normal)),
            "time_slow": div(ClassTimes::last(&cw.times.slow), ClassTimes::last(&ng.times.slow)),
            "origin_egress": cw_json["origin_egress_ratio"].as_f64().unwrap_or(0.0) / ng_egress,
            "city_hit_ratio": div(cw_json["city_tier"]["hit_ratio"].as_f64(), ng.city["hit_ratio"].as_f64()),
            "town_hit_ratio": div(cw_json["town_tier"]["hit_ratio"].as_f64(), ng.town["hit_ratio"].as_f64()),
            "cpu_per_gb": (cw.cpu_total_s) / ng_cpu,
            "cpu_per_gb_servers": div(Some(cw_node_cpu), Some(ng_cpu)),
            "peak_rss": cw.peak_rss_bytes.iter().map(|(_, v)| v).sum::<u64>() as f64 / (ng.nginx_peak_rss_bytes + ng.clients_peak_rss_bytes) as f64,
        });
        out["nginx"] = ng_json;
        out["courseway_over_nginx"] = ratios;
    }

    if !args.no_capacity {
        let d = Duration::from_secs(args.capacity_seconds);
        tracing::info!("capacity: relay");
        let relay = capacity::relay(&lesson, &dir.join("cap-relay"), args.capacity_clients, d).await?;
        tracing::info!("capacity: nginx https");
        let (l, p, c) = (lesson.clone(), dir.join("cap-nginx"), args.capacity_clients);
        let nginx = tokio::task::spawn_blocking(move || capacity::nginx_https(&l, &p, c, d)).await??;
        out["capacity"] = json!({
            "clients": args.capacity_clients,
            "relay_quic": relay.to_json(),
            "nginx_https": nginx.to_json(),
            "throughput_ratio": relay.mbyte_per_s() / nginx.mbyte_per_s(),
        });
    }
    out["machine"]["loadavg_after"] = json!(procfs::loadavg());
    println!("{}", serde_json::to_string_pretty(&out)?);
    Ok(())
}
