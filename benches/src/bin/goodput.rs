//! Goodput of a station behind an emulated rural link (issue #3): Courseway over QUIC with each
//! congestion controller, and TCP (curl from nginx) as the baseline, all across the same
//! emulated link between two network namespaces.
//!
//! ```text
//! sudo ./scripts/goodput-deps.sh            # nginx-light, curl, iproute2
//! sudo $CARGO_TARGET_DIR/debug/goodput --lesson-mb 20 --rate-mbit 2 --loss 0.01 --delay-ms 100
//! ```
//!
//! For each variant a fresh lab is built (so no TCP metrics cache or QUIC state carries over):
//! namespace `a` (the sender: origin or nginx, 10.77.0.1) and namespace `b` (the receiver:
//! station or curl, 10.77.0.2) joined by `courseway_netlab::TapLink`, which runs every frame
//! through the linkemu model (rate, one-way delay, random loss, a tail-drop queue), with the
//! same seeds for every variant. The origin and station are this binary again, started inside
//! the namespaces with `ip netns exec` (subcommands `lab-origin` and `lab-station`).
//!
//! Goodput = lesson bytes × 8 / seconds / line rate, where seconds run from the station's
//! start (QUIC handshake, catalog and manifest included) until it holds every chunk, or over
//! curl's whole transfer (connection set-up included) of one file holding the same bytes. The
//! line rate counts IP packets (headers of IP, UDP or TCP, QUIC and TLS included), so 1.0 is
//! out of reach: header overhead alone is ~3-4 %.
//!
//! Human-readable lines first; the last line is one JSON object with every run.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use clap::Parser;
use courseway_linkemu::{DirectionStats, DuplexConfig, LinkConfig};
use courseway_netlab::node::{self, Cc, NodeCommand, OriginArgs, OriginProcess, StationArgs};
use courseway_netlab::{unique_tag, LabError, TapLink, TapLinkConfig, TapStats};
use serde_json::{json, Value};

#[derive(Debug, Parser)]
#[command(about = "Goodput over an emulated lossy link: Courseway/QUIC (Cubic, BBR, NewReno) vs TCP (nginx + curl)")]
#[command(args_conflicts_with_subcommands = true)]
struct Cli {
    #[command(subcommand)]
    node: Option<NodeCommand>,
    #[command(flatten)]
    bench: BenchArgs,
}

#[derive(Debug, Clone, clap::Args)]
struct BenchArgs {
    /// Lesson size in MB (10^6 bytes; rounded up to whole 4-second segments plus a 300 kB handout).
    #[arg(long, default_value_t = 20.0)]
    lesson_mb: f64,
    /// Line rate in Mbit/s, each direction.
    #[arg(long, default_value_t = 2.0)]
    rate_mbit: f64,
    /// Random loss probability per packet, each direction.
    #[arg(long, default_value_t = 0.01)]
    loss: f64,
    /// One-way propagation delay in milliseconds.
    #[arg(long, default_value_t = 100)]
    delay_ms: u64,
    /// Bottleneck queue in bytes (tail drop). Default: one bandwidth-delay product (rate × RTT).
    #[arg(long)]
    queue_bytes: Option<usize>,
    /// Variants, comma-separated: quic-cubic, quic-bbr, quic-newreno, tcp-cubic, tcp-bbr, tcp-reno.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "quic-cubic,quic-bbr,quic-newreno,tcp-cubic,tcp-bbr"
    )]
    variants: Vec<String>,
    /// Seed of the link's loss draws (the same for every variant).
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Rounds over all variants (interleaved: round 1 runs every variant, then round 2, ...).
    #[arg(long, default_value_t = 1)]
    runs: u32,
    /// Port nginx listens on inside the sender's namespace.
    #[arg(long, default_value_t = 8080)]
    http_port: u16,
}

#[derive(Debug, Clone, Copy)]
enum Variant {
    Quic(Cc),
    Tcp(&'static str),
}

impl Variant {
    fn parse(s: &str) -> Result<Self> {
        Ok(match s.trim() {
            "quic-cubic" => Variant::Quic(Cc::Cubic),
            "quic-bbr" => Variant::Quic(Cc::Bbr),
            "quic-newreno" => Variant::Quic(Cc::Newreno),
            "tcp-cubic" => Variant::Tcp("cubic"),
            "tcp-bbr" => Variant::Tcp("bbr"),
            "tcp-reno" => Variant::Tcp("reno"),
            other => bail!(
                "unknown variant `{other}`; use quic-cubic, quic-bbr, quic-newreno, tcp-cubic, tcp-bbr or tcp-reno"
            ),
        })
    }

    fn name(self) -> String {
        match self {
            Variant::Quic(cc) => format!("quic-{}", cc.as_str()),
            Variant::Tcp(cc) => format!("tcp-{cc}"),
        }
    }
}

/// What one variant measured.
struct Measured {
    bytes: u64,
    seconds: f64,
    identical: bool,
    extra: Value,
}

const NET: [u8; 3] = [10, 77, 0];

fn main() -> Result<()> {
    let cli = Cli::parse();
    // Logs from RUST_LOG only, on standard error (standard output is the report).
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_writer(std::io::stderr)
        .init();
    if let Some(role) = cli.node {
        return role.run().map_err(Into::into);
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    rt.block_on(bench(cli.bench))
}

async fn bench(args: BenchArgs) -> Result<()> {
    let variants: Vec<Variant> = args.variants.iter().map(|v| Variant::parse(v)).collect::<Result<_>>()?;
    let rate_bps = (args.rate_mbit * 1e6).round() as u64;
    let delay = Duration::from_millis(args.delay_ms);
    let bdp = (rate_bps as u128 * 2 * delay.as_nanos() / 8 / 1_000_000_000) as usize;
    let queue_bytes = args
        .queue_bytes
        .unwrap_or(bdp.max(courseway_linkemu::link::MIN_QUEUE_BYTES));
    let link = LinkConfig {
        rate_bps: Some(rate_bps),
        delay,
        jitter: Duration::ZERO,
        loss: args.loss,
        queue_bytes,
        outages: Vec::new(),
        seed: args.seed,
        reorder: false,
    };
    let lesson_bytes_wanted = (args.lesson_mb * 1e6).round() as u64;
    let lesson = node::lesson(lesson_bytes_wanted, 1);
    let lesson_bytes: u64 = lesson.chunks.values().map(|c| c.len() as u64).sum();
    let exe = std::env::current_exe().context("finding this binary to run the nodes")?;
    let ideal = lesson_bytes as f64 * 8.0 / rate_bps as f64;

    println!("goodput: station behind an emulated link (linkemu model on every frame, macvtap between two namespaces)");
    println!(
        "  link: {} Mbit/s each way, {} ms one way (RTT {} ms), {:.2} % random loss, queue {} bytes ({:.2} BDP), seed {}",
        args.rate_mbit,
        args.delay_ms,
        2 * args.delay_ms,
        args.loss * 100.0,
        queue_bytes,
        queue_bytes as f64 / bdp.max(1) as f64,
        args.seed
    );
    println!(
        "  lesson: {} bytes in {} chunks; {:.1} s at line rate",
        lesson_bytes,
        lesson.chunks.len(),
        ideal
    );

    let work = tempfile::tempdir().context("creating a working directory")?;
    let www = work.path().join("www");
    std::fs::create_dir_all(&www)?;
    let file: Vec<u8> = lesson.chunks.values().flat_map(|c| c.iter().copied()).collect();
    std::fs::write(www.join("lesson.bin"), &file)?;

    let tcp_ccs: Vec<&str> = variants
        .iter()
        .filter_map(|v| match v {
            Variant::Tcp(cc) => Some(*cc),
            Variant::Quic(_) => None,
        })
        .collect();
    let _allowed = AllowedTcpCc::ensure(&tcp_ccs)?;

    let mut runs = Vec::new();
    for round in 1..=args.runs {
        for &variant in &variants {
            let dir = work.path().join(format!("{}-{round}", variant.name()));
            std::fs::create_dir_all(&dir)?;
            let tap = TapLink::start(
                &unique_tag("gp"),
                NET,
                TapLinkConfig::new(DuplexConfig::symmetric(link.clone())),
            )
            .await
            .map_err(|e| match e {
                LabError::NotRoot(_) => anyhow::anyhow!("{e}; run the benchmark as root (sudo)"),
                e => e.into(),
            })?;
            let timeout = Duration::from_secs_f64(ideal * 10.0 + 60.0);
            let measured = match variant {
                Variant::Quic(cc) => quic(&tap, &exe, &dir, cc, lesson_bytes_wanted, timeout),
                Variant::Tcp(cc) => tcp(&tap, &dir, &www, &file, cc, args.http_port, timeout),
            };
            let stats = tap.close().await;
            let m = match measured {
                Ok(m) => m,
                Err(e) => {
                    println!("  {:<13} run {round}: FAILED: {e:#}", variant.name());
                    runs.push(json!({"variant": variant.name(), "run": round, "error": format!("{e:#}")}));
                    continue;
                }
            };
            let goodput = m.bytes as f64 * 8.0 / m.seconds / rate_bps as f64;
            println!(
                "  {:<13} run {round}: goodput {:.3} of line rate ({:.3} Mbit/s), {} bytes in {:.1} s, identical: {}; link a->b: {} pkts fwd, {} lost, {} queue-dropped; b->a: {} pkts fwd, {} lost, {} queue-dropped",
                variant.name(),
                goodput,
                m.bytes as f64 * 8.0 / m.seconds / 1e6,
                m.bytes,
                m.seconds,
                m.identical,
                stats.downlink.forwarded_packets,
                stats.downlink.dropped_loss,
                stats.downlink.dropped_queue,
                stats.uplink.forwarded_packets,
                stats.uplink.dropped_loss,
                stats.uplink.dropped_queue,
            );
            if stats.oversize_frames > 0 {
                println!(
                    "    warning: {} GSO frames crossed the link as one packet each",
                    stats.oversize_frames
                );
            }
            runs.push(json!({
                "variant": variant.name(),
                "run": round,
                "goodput": round3(goodput),
                "bytes": m.bytes,
                "seconds": round3(m.seconds),
                "identical": m.identical,
                "detail": m.extra,
                "link_stats": stats_json(&stats),
            }));
        }
    }
    let summary: Vec<Value> = variants
        .iter()
        .map(|v| {
            let g: Vec<f64> = runs
                .iter()
                .filter(|r| r["variant"] == v.name())
                .filter_map(|r| r["goodput"].as_f64())
                .collect();
            json!({"variant": v.name(), "goodput": g, "mean": if g.is_empty() { Value::Null } else { json!(round3(g.iter().sum::<f64>() / g.len() as f64)) }})
        })
        .collect();
    for s in &summary {
        println!(
            "  {:<13} goodput per run {}",
            s["variant"].as_str().unwrap_or(""),
            s["goodput"]
        );
    }
    println!(
        "{}",
        json!({
            "link": {
                "rate_bps": rate_bps,
                "delay_ms": args.delay_ms,
                "rtt_ms": 2 * args.delay_ms,
                "loss": args.loss,
                "queue_bytes": queue_bytes,
                "seed": args.seed,
                "mtu": 1500,
                "rate_counts": "IP packet bytes",
            },
            "lesson_bytes": lesson_bytes,
            "lesson_chunks": lesson.chunks.len(),
            "line_rate_seconds": round3(ideal),
            "summary": summary,
            "runs": runs,
        })
    );
    Ok(())
}

fn round3(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}

fn direction_json(d: &DirectionStats) -> Value {
    json!({
        "offered": d.offered,
        "forwarded_packets": d.forwarded_packets,
        "forwarded_bytes": d.forwarded_bytes,
        "dropped_loss": d.dropped_loss,
        "dropped_queue": d.dropped_queue,
        "dropped_overflow": d.dropped_overflow,
    })
}

fn stats_json(s: &TapStats) -> Value {
    json!({"a_to_b": direction_json(&s.downlink), "b_to_a": direction_json(&s.uplink), "oversize_frames": s.oversize_frames})
}

/// Courseway: an origin in `a`, a station in `b`.
fn quic(tap: &TapLink, exe: &Path, dir: &Path, cc: Cc, lesson_bytes: u64, timeout: Duration) -> Result<Measured> {
    let pair = tap.pair();
    let keys = dir.join("keys");
    std::fs::create_dir_all(&keys)?;
    node::save_keys(&courseway::topology::DeploymentKeys::generate()?, &keys)?;
    let listen = std::net::SocketAddr::from((pair.addr_a, 4433));
    let origin = OriginProcess::spawn(
        &pair.a,
        exe,
        &OriginArgs {
            keys: keys.clone(),
            store: dir.join("origin"),
            listen,
            cc,
            lesson_bytes,
            lesson_seed: 1,
        },
    )?;
    let report = node::run_station(
        &pair.b,
        exe,
        &StationArgs {
            keys,
            store: dir.join("station"),
            origin: listen,
            cc,
            lesson_bytes,
            lesson_seed: 1,
            timeout_secs: timeout.as_secs(),
        },
    )?;
    let origin_stats = origin.stop()?;
    if report["synced"] != true {
        bail!("the station did not finish within {timeout:?}: {report}");
    }
    Ok(Measured {
        bytes: report["lesson_bytes"].as_u64().unwrap_or(0),
        seconds: report["seconds"].as_f64().unwrap_or(f64::NAN),
        identical: report["identical"] == true,
        extra: json!({"station": report, "origin": origin_stats}),
    })
}

/// TCP: nginx in `a` serves the lesson's bytes as one file, curl in `b` fetches it.
fn tcp(
    tap: &TapLink,
    dir: &Path,
    www: &Path,
    expected: &[u8],
    cc: &str,
    port: u16,
    timeout: Duration,
) -> Result<Measured> {
    let pair = tap.pair();
    for ns in [&pair.a, &pair.b] {
        ns.sysctl("net.ipv4.tcp_congestion_control", cc)
            .with_context(|| format!("selecting TCP congestion control `{cc}` (for bbr: modprobe tcp_bbr)"))?;
    }
    let conf = dir.join("nginx.conf");
    std::fs::write(&conf, nginx_conf(dir, www, &pair.addr_a.to_string(), port))?;
    let mut nginx = pair
        .a
        .command("nginx")
        .args(["-e", &dir.join("error.log").display().to_string(), "-p"])
        .arg(dir)
        .arg("-c")
        .arg(&conf)
        .stdout(Stdio::null())
        .spawn()
        .context("starting nginx (install it with scripts/goodput-deps.sh)")?;
    let result = (|| {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let listening = pair.a.run("ss", &["-Hltn", &format!("sport = :{port}")])?;
            if !listening.trim().is_empty() {
                break;
            }
            if let Ok(Some(status)) = nginx.try_wait() {
                let log = std::fs::read_to_string(dir.join("error.log")).unwrap_or_default();
                bail!("nginx exited ({status}): {log}");
            }
            if Instant::now() > deadline {
                bail!("nginx did not listen on port {port} within 10 s");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let out: PathBuf = dir.join("fetched.bin");
        let url = format!("http://{}:{port}/lesson.bin", pair.addr_a);
        let written = pair.b.run(
            "curl",
            &[
                "-sS",
                "--max-time",
                &timeout.as_secs().to_string(),
                "-o",
                &out.display().to_string(),
                "-w",
                "%{size_download} %{time_total} %{time_connect}",
                &url,
            ],
        )?;
        let mut parts = written.split_whitespace();
        let bytes: u64 = parts.next().context("curl's size")?.parse()?;
        let seconds: f64 = parts.next().context("curl's time")?.parse()?;
        let connect: f64 = parts.next().context("curl's connect time")?.parse()?;
        let fetched = std::fs::read(&out)?;
        Ok(Measured {
            bytes,
            seconds,
            identical: fetched == expected,
            extra: json!({"curl_time_connect": connect, "tcp_congestion_control": cc}),
        })
    })();
    // nginx runs without a master process: killing the one process stops it.
    let _ = nginx.kill();
    let _ = nginx.wait();
    // Let both kernels finish closing their TCP connections while the link still carries
    // frames: an orphaned socket retrying its FIN into a dead link keeps its namespace, and the
    // lab's devices, alive for minutes after the namespace is deleted.
    let deadline = Instant::now() + Duration::from_secs(15);
    while Instant::now() < deadline {
        let open = [&pair.a, &pair.b].iter().any(|ns| {
            ns.run("ss", &["-Htan", "exclude", "time-wait"])
                .is_ok_and(|o| !o.trim().is_empty())
        });
        if !open {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    result
}

/// A namespace other than the first may only make a TCP congestion controller its default if
/// the root namespace lists it in `net.ipv4.tcp_allowed_congestion_control`. This adds the
/// controllers the run needs to that list and puts the list back when dropped.
struct AllowedTcpCc {
    original: Option<String>,
}

impl AllowedTcpCc {
    const KEY: &'static str = "net.ipv4.tcp_allowed_congestion_control";

    fn ensure(ccs: &[&str]) -> Result<Self> {
        if ccs.is_empty() {
            return Ok(Self { original: None });
        }
        let original = courseway_netlab::cmd::run("sysctl", &["-n", Self::KEY])?
            .trim()
            .to_string();
        let mut allowed: Vec<&str> = original.split_whitespace().collect();
        let missing: Vec<&str> = ccs.iter().copied().filter(|cc| !allowed.contains(cc)).collect();
        if missing.is_empty() {
            return Ok(Self { original: None });
        }
        allowed.extend(missing.iter().copied());
        println!(
            "  (adding {} to {} for the run; restored at the end)",
            missing.join(" "),
            Self::KEY
        );
        courseway_netlab::cmd::run("sysctl", &["-q", "-w", &format!("{}={}", Self::KEY, allowed.join(" "))])
            .context("allowing the TCP congestion controllers (for bbr: modprobe tcp_bbr)")?;
        Ok(Self {
            original: Some(original),
        })
    }
}

impl Drop for AllowedTcpCc {
    fn drop(&mut self) {
        if let Some(original) = &self.original {
            if let Err(e) = courseway_netlab::cmd::run("sysctl", &["-q", "-w", &format!("{}={original}", Self::KEY)]) {
                eprintln!("goodput: could not restore {}: {e}", Self::KEY);
            }
        }
    }
}

fn nginx_conf(dir: &Path, www: &Path, addr: &str, port: u16) -> String {
    format!(
        "daemon off;
master_process off;
worker_processes 1;
pid {dir}/nginx.pid;
error_log {dir}/error.log warn;
events {{ worker_connections 64; }}
http {{
    access_log off;
    sendfile on;
    client_body_temp_path {dir}/client_body;
    server {{
        listen {addr}:{port};
        root {www};
    }}
}}
",
        dir = dir.display(),
        www = www.display(),
    )
}
