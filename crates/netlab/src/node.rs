//! Courseway nodes inside a namespace: an origin and a station, each its own process started
//! with `ip netns exec` (a process enters a namespace whole; switching one thread would need
//! `setns`, and so `unsafe` or a crate that changes the workspace's libc features).
//!
//! A binary that wants to host them embeds [`NodeCommand`] in its command line and calls
//! [`NodeCommand::run`]; the parent side spawns it with [`OriginProcess::spawn`] and
//! [`run_station`]. The deployment's keys travel through files ([`save_keys`], [`load_keys`]),
//! the lesson through its parameters: both sides build the same [`lesson`] from its size and
//! seed, so the station checks every chunk byte by byte against it.
//!
//! Protocol on standard output: the origin prints `READY {json}` once it serves the published
//! lesson and `STATS {json}` when its standard input closes (then it exits); the station prints
//! `REPORT {json}` when synced or timed out, then exits.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, ChildStdout, Stdio};
use std::time::{Duration, Instant};

use courseway::topology::DeploymentKeys;
use courseway_content::synthetic::{BuiltLesson, SyntheticLesson};
use courseway_content::{LessonId, NodeName, RootKey};
use courseway_net::{CongestionControl, DeploymentCa, TransportConfig};
use courseway_node::{Parent, UpstreamConfig};
use courseway_origin::{Origin, OriginConfig};
use courseway_proto::Role;
use courseway_station::{Station, StationConfig};
use courseway_store::StoreConfig;
use serde_json::json;

use crate::error::LabError;
use crate::netns::Namespace;

/// The congestion controller, as a command-line value.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Cc {
    Cubic,
    Bbr,
    Newreno,
}

impl Cc {
    pub fn to_congestion(self) -> CongestionControl {
        match self {
            Cc::Cubic => CongestionControl::Cubic,
            Cc::Bbr => CongestionControl::Bbr,
            Cc::Newreno => CongestionControl::NewReno,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Cc::Cubic => "cubic",
            Cc::Bbr => "bbr",
            Cc::Newreno => "newreno",
        }
    }
}

/// The lesson both sides build: the demo's ladder (720p, 360p, audio, 4-second segments, one
/// 300 kB handout) with enough segments for about `bytes` bytes.
pub fn lesson(bytes: u64, seed: u64) -> BuiltLesson {
    let per_segment = (1_500_000u64 + 500_000 + 64_000) / 2;
    let segments = bytes.div_ceil(per_segment).max(1) as u32;
    SyntheticLesson::standard(LessonId::new("netlab-lesson").expect("a valid id"), seed, segments).build()
}

/// Writes the deployment's CA and root and online seeds into `dir` (which must exist).
pub fn save_keys(keys: &DeploymentKeys, dir: &Path) -> Result<(), LabError> {
    keys.ca
        .save(&dir.join("ca.pem"), &dir.join("ca.key"))
        .map_err(|e| LabError::Node(format!("saving the lab CA: {e}")))?;
    for (file, seed) in [("root.seed", keys.root.seed()), ("online.seed", keys.online_seed)] {
        std::fs::write(dir.join(file), seed).map_err(|e| LabError::io(format!("writing {file}"), e))?;
    }
    Ok(())
}

/// Reads keys written by [`save_keys`].
pub fn load_keys(dir: &Path) -> Result<DeploymentKeys, LabError> {
    let ca = DeploymentCa::load(&dir.join("ca.pem"), &dir.join("ca.key"))
        .map_err(|e| LabError::Node(format!("loading the lab CA from {}: {e}", dir.display())))?;
    let seed = |file: &str| -> Result<[u8; 32], LabError> {
        let bytes = std::fs::read(dir.join(file)).map_err(|e| LabError::io(format!("reading {file}"), e))?;
        bytes
            .try_into()
            .map_err(|_| LabError::Node(format!("{file} must hold 32 bytes")))
    };
    Ok(DeploymentKeys {
        ca,
        root: RootKey::from_seed(seed("root.seed")?),
        online_seed: seed("online.seed")?,
    })
}

/// An origin serving one synthetic lesson.
#[derive(Debug, Clone, clap::Args)]
pub struct OriginArgs {
    /// Directory written by `save_keys`.
    #[arg(long)]
    pub keys: PathBuf,
    /// The origin's store directory.
    #[arg(long)]
    pub store: PathBuf,
    /// UDP address to serve on.
    #[arg(long)]
    pub listen: SocketAddr,
    /// Congestion controller of the origin's connections (the sending side).
    #[arg(long, value_enum)]
    pub cc: Cc,
    #[arg(long)]
    pub lesson_bytes: u64,
    #[arg(long, default_value_t = 1)]
    pub lesson_seed: u64,
}

impl OriginArgs {
    fn to_args(&self) -> Vec<String> {
        vec![
            "lab-origin".into(),
            "--keys".into(),
            self.keys.display().to_string(),
            "--store".into(),
            self.store.display().to_string(),
            "--listen".into(),
            self.listen.to_string(),
            "--cc".into(),
            self.cc.as_str().into(),
            "--lesson-bytes".into(),
            self.lesson_bytes.to_string(),
            "--lesson-seed".into(),
            self.lesson_seed.to_string(),
        ]
    }
}

/// A station syncing from one origin.
#[derive(Debug, Clone, clap::Args)]
pub struct StationArgs {
    #[arg(long)]
    pub keys: PathBuf,
    #[arg(long)]
    pub store: PathBuf,
    /// The origin's address.
    #[arg(long)]
    pub origin: SocketAddr,
    /// Congestion controller of the station's connection (it mostly sends requests and ACKs).
    #[arg(long, value_enum)]
    pub cc: Cc,
    /// The lesson the origin serves, to check the received bytes against.
    #[arg(long)]
    pub lesson_bytes: u64,
    #[arg(long, default_value_t = 1)]
    pub lesson_seed: u64,
    /// Give up (and report `synced: false`) after this long.
    #[arg(long, default_value_t = 600)]
    pub timeout_secs: u64,
}

impl StationArgs {
    fn to_args(&self) -> Vec<String> {
        vec![
            "lab-station".into(),
            "--keys".into(),
            self.keys.display().to_string(),
            "--store".into(),
            self.store.display().to_string(),
            "--origin".into(),
            self.origin.to_string(),
            "--cc".into(),
            self.cc.as_str().into(),
            "--lesson-bytes".into(),
            self.lesson_bytes.to_string(),
            "--lesson-seed".into(),
            self.lesson_seed.to_string(),
            "--timeout-secs".into(),
            self.timeout_secs.to_string(),
        ]
    }
}

/// The node roles a host binary offers (as its subcommands `lab-origin` and `lab-station`).
#[derive(Debug, Clone, clap::Subcommand)]
pub enum NodeCommand {
    /// (internal) Run an origin serving a synthetic lesson; used inside a lab namespace.
    LabOrigin(OriginArgs),
    /// (internal) Run a station until it holds the lesson; used inside a lab namespace.
    LabStation(StationArgs),
}

impl NodeCommand {
    /// Runs the role to its end (on a runtime of its own).
    pub fn run(self) -> Result<(), LabError> {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .map_err(|e| LabError::io("starting a runtime", e))?;
        match self {
            NodeCommand::LabOrigin(a) => rt.block_on(origin_main(a)),
            NodeCommand::LabStation(a) => rt.block_on(station_main(a)),
        }
    }
}

fn transport(cc: Cc) -> TransportConfig {
    TransportConfig {
        congestion: cc.to_congestion(),
        ..TransportConfig::default()
    }
}

fn say(line: String) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{line}");
    let _ = out.flush();
}

async fn origin_main(args: OriginArgs) -> Result<(), LabError> {
    let keys = load_keys(&args.keys)?;
    let name = NodeName::new("origin").expect("a valid name");
    let enrollment = keys
        .enroll(Role::Origin, &name)
        .map_err(|e| LabError::Node(e.to_string()))?;
    let origin = Origin::start(
        OriginConfig {
            name,
            listen: args.listen,
            store: StoreConfig::new(&args.store, 64 << 30),
            transport: transport(args.cc),
            catalog_validity: Duration::from_secs(7 * 86_400),
        },
        enrollment,
        keys.online_key(courseway_node::clock::now()),
    )
    .await
    .map_err(|e| LabError::Node(format!("starting the origin: {e}")))?;
    let built = lesson(args.lesson_bytes, args.lesson_seed);
    let lesson_bytes: u64 = built.chunks.values().map(|c| c.len() as u64).sum();
    let version = origin
        .publish(&[(built.manifest.clone(), &built.chunks)])
        .map_err(|e| LabError::Node(format!("publishing: {e}")))?;
    say(format!(
        "READY {}",
        json!({"version": version, "lesson_bytes": lesson_bytes, "chunks": built.chunks.len()})
    ));
    // Serve until the parent closes our standard input.
    let _ = tokio::task::spawn_blocking(|| {
        let mut sink = Vec::new();
        let _ = std::io::stdin().read_to_end(&mut sink);
    })
    .await;
    let stats = origin.stats();
    say(format!(
        "STATS {}",
        json!({"chunk_bytes_sent": stats.chunk_bytes_sent, "duplicate_chunk_sends": stats.duplicate_chunk_sends})
    ));
    origin.shutdown();
    Ok(())
}

async fn station_main(args: StationArgs) -> Result<(), LabError> {
    let keys = load_keys(&args.keys)?;
    let name = NodeName::new("village-0001").expect("a valid name");
    let enrollment = keys
        .enroll(Role::Station, &name)
        .map_err(|e| LabError::Node(e.to_string()))?;
    let built = lesson(args.lesson_bytes, args.lesson_seed);
    let lesson_bytes: u64 = built.chunks.values().map(|c| c.len() as u64).sum();
    let mut config = StationConfig::new(
        name,
        SocketAddr::from(([0, 0, 0, 0], 0)),
        StoreConfig::new(&args.store, 64 << 30),
        UpstreamConfig::new(vec![Parent {
            name: NodeName::new("origin").expect("a valid name"),
            addr: args.origin,
        }]),
    );
    config.transport = transport(args.cc);
    config.retry_after = Duration::from_secs(1);
    let started = Instant::now();
    let station = Station::start(config, enrollment, keys.root_public())
        .await
        .map_err(|e| LabError::Node(format!("starting the station: {e}")))?;
    let mut status = station.status();
    let synced = tokio::time::timeout(
        Duration::from_secs(args.timeout_secs),
        status.wait_for(|s| s.synced && s.catalog_version >= 1),
    )
    .await
    .is_ok_and(|r| r.is_ok());
    let seconds = started.elapsed().as_secs_f64();
    let bytes_ready = station.status().borrow().bytes_ready;
    let mut identical = true;
    for (id, bytes) in &built.chunks {
        match station.store().get(id, 0) {
            Ok(Some(got)) if got == *bytes => {}
            _ => identical = false,
        }
    }
    let fetch = station.fetch_stats();
    let relaxed = std::sync::atomic::Ordering::Relaxed;
    say(format!(
        "REPORT {}",
        json!({
            "synced": synced,
            "identical": identical,
            "seconds": seconds,
            "lesson_bytes": lesson_bytes,
            "bytes_ready": bytes_ready,
            "bytes_received": fetch.bytes_received.load(relaxed),
            "bad_chunks": fetch.bad_chunks.load(relaxed),
            "resumed": fetch.resumed.load(relaxed),
            "failovers": fetch.failovers.load(relaxed),
        })
    ));
    station.shutdown().await;
    Ok(())
}

/// Reads lines from a child until one starts with `tag`; returns the JSON after it.
fn expect_line(out: &mut impl BufRead, tag: &str, who: &str) -> Result<serde_json::Value, LabError> {
    let mut line = String::new();
    loop {
        line.clear();
        let n = out
            .read_line(&mut line)
            .map_err(|e| LabError::io(format!("reading the {who}'s output"), e))?;
        if n == 0 {
            return Err(LabError::Node(format!(
                "the {who} exited before printing `{tag}`; run it with RUST_LOG=info to see why"
            )));
        }
        if let Some(rest) = line.trim_end().strip_prefix(tag) {
            return serde_json::from_str(rest.trim())
                .map_err(|e| LabError::Node(format!("the {who} printed a bad `{tag}` line ({e}): {line}")));
        }
    }
}

/// An origin process inside a namespace. Dropping it kills the process.
#[derive(Debug)]
pub struct OriginProcess {
    child: Child,
    stdin: Option<ChildStdin>,
    stdout: BufReader<ChildStdout>,
    /// What the origin printed when ready: `version`, `lesson_bytes`, `chunks`.
    pub ready: serde_json::Value,
}

impl OriginProcess {
    /// Starts `exe lab-origin ...` inside `ns` and waits until it serves the lesson.
    pub fn spawn(ns: &Namespace, exe: &Path, args: &OriginArgs) -> Result<Self, LabError> {
        let mut child = ns
            .command(exe)
            .args(args.to_args())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .map_err(|source| LabError::Spawn {
                command: format!("ip netns exec {} {} lab-origin", ns.name(), exe.display()),
                source,
            })?;
        let stdin = child.stdin.take();
        let mut stdout = BufReader::new(child.stdout.take().expect("piped"));
        let ready = match expect_line(&mut stdout, "READY", "origin") {
            Ok(r) => r,
            Err(e) => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(e);
            }
        };
        Ok(Self {
            child,
            stdin,
            stdout,
            ready,
        })
    }

    /// Asks the origin to stop (closes its standard input) and returns its `STATS`.
    pub fn stop(mut self) -> Result<serde_json::Value, LabError> {
        drop(self.stdin.take());
        let stats = expect_line(&mut self.stdout, "STATS", "origin");
        let _ = self.child.wait();
        stats
    }
}

impl Drop for OriginProcess {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Runs `exe lab-station ...` inside `ns` to its end and returns its `REPORT`: `synced`,
/// `identical`, `seconds`, `lesson_bytes`, `bytes_ready`, `bytes_received`, `bad_chunks`,
/// `resumed`, `failovers`.
pub fn run_station(ns: &Namespace, exe: &Path, args: &StationArgs) -> Result<serde_json::Value, LabError> {
    let mut child = ns
        .command(exe)
        .args(args.to_args())
        .stdout(Stdio::piped())
        .spawn()
        .map_err(|source| LabError::Spawn {
            command: format!("ip netns exec {} {} lab-station", ns.name(), exe.display()),
            source,
        })?;
    let mut stdout = BufReader::new(child.stdout.take().expect("piped"));
    let report = expect_line(&mut stdout, "REPORT", "station");
    if report.is_err() {
        let _ = child.kill();
    }
    let _ = child.wait();
    report
}
