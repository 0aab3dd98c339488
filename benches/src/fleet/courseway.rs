//! The Courseway side: a real tree (QUIC, mutual TLS, RocksDB at every node) in this process,
//! every station behind its own linkemu UDP proxy in front of its town relay.
//!
//! The proxies run on a runtime of their own (threads named `linkemu`), so the CPU they cost
//! (link emulation, not Courseway) is told apart from the nodes' by thread.

use std::collections::BTreeMap;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use courseway::topology::DeploymentKeys;
use courseway_content::synthetic::BuiltLesson;
use courseway_content::{NodeName, RootKey};
use courseway_linkemu::{LinkConfig, ProxyConfig, UdpProxy};
use courseway_net::{DeploymentCa, RateLimit};
use courseway_node::{Parent, UpstreamConfig};
use courseway_origin::{Origin, OriginConfig};
use courseway_proto::Role;
use courseway_relay::{Relay, RelayConfig, RelayStats};
use courseway_station::{Station, StationConfig};
use courseway_store::StoreConfig;
use serde_json::{json, Value};

use super::{host, lesson_bytes, procfs, ratio, ClassTimes, FleetConfig};

fn loopback() -> SocketAddr {
    SocketAddr::from((Ipv4Addr::LOCALHOST, 0))
}

/// What one Courseway run measured.
#[derive(Debug, Clone)]
pub struct Outcome {
    pub lesson_bytes: u64,
    pub times: ClassTimes,
    /// Every station that finished holds every chunk byte for byte (read back verified).
    pub identical: bool,
    pub mismatches: usize,
    pub origin_chunk_bytes_sent: u64,
    pub origin_duplicate_sends: u64,
    pub city: Vec<RelayStats>,
    pub town: Vec<RelayStats>,
    /// Seconds to start the tree (stores, endpoints, certificates, proxies).
    pub startup_s: f64,
    /// CPU seconds from t = 0 to the last station, by thread name.
    pub cpu_by_thread: BTreeMap<String, f64>,
    /// CPU seconds of every process from t = 0 to the last station.
    pub cpu_total_s: f64,
    /// Peak RSS per process (the origin and relays; each station host).
    pub peak_rss_bytes: Vec<(String, u64)>,
    /// The most open files of one process.
    pub open_fds_peak: usize,
    pub processes: usize,
    /// Datagrams the station lines dropped at random, at the queue, and carried downstream.
    pub link_lost: u64,
    pub link_queue_dropped: u64,
    pub link_forwarded: u64,
    /// Bytes each station's line had carried down when the station came to hold the lesson
    /// (datagram payloads, as the link emulator charges its rate; 0 if it never did).
    pub line_bytes: Vec<u64>,
    /// Seconds until each station held the lesson, by station.
    pub arrivals: Vec<Option<f64>>,
    pub rate_of: Vec<u64>,
}

/// Sums hits, misses and coalesced joins over a tier.
fn tier(stats: &[RelayStats]) -> Value {
    let hits: u64 = stats.iter().map(|s| s.hits).sum();
    let misses: u64 = stats.iter().map(|s| s.misses).sum();
    let coalesced: u64 = stats.iter().map(|s| s.coalesced).sum();
    let errors: u64 = stats.iter().map(|s| s.errors).sum();
    json!({
        "requests": hits + misses + coalesced,
        "hits": hits, "misses": misses, "coalesced": coalesced, "errors": errors,
        // Served without a fetch of its own: from the cache, or by joining the fetch already
        // running (what nginx logs as HIT after waiting on proxy_cache_lock).
        "hit_ratio": ratio(hits + coalesced, hits + misses + coalesced),
        "hit_ratio_cache_only": ratio(hits, hits + misses + coalesced),
        "bytes_fetched": stats.iter().map(|s| s.bytes_fetched).sum::<u64>(),
        "bytes_served": stats.iter().map(|s| s.bytes_served).sum::<u64>(),
    })
}

impl Outcome {
    /// How each class's lines were used up to each station's arrival: the bytes carried down
    /// per lesson byte (QUIC headers, control frames, retransmissions), and the share of the time
    /// the line was busy (line bytes at the line's rate over the time taken). A station's time
    /// over its bound is the first divided by the second: this says which one a miss comes from.
    pub fn line_use(&self) -> Value {
        let class = |slow: bool| {
            let stations: Vec<(f64, f64, f64)> = self
                .line_bytes
                .iter()
                .enumerate()
                .filter(|(i, _)| FleetConfig::is_slow(*i) == slow)
                .filter_map(|(i, &bytes)| {
                    let t = self.arrivals[i]?;
                    let overhead = bytes as f64 / self.lesson_bytes as f64;
                    let busy = bytes as f64 * 8.0 / (self.rate_of[i] as f64 * t);
                    Some((t, overhead, busy))
                })
                .collect();
            if stations.is_empty() {
                return Value::Null;
            }
            let n = stations.len() as f64;
            let last = stations
                .iter()
                .copied()
                .max_by(|a, b| a.0.total_cmp(&b.0))
                .expect("not empty");
            json!({
                "line_bytes_per_lesson_byte_mean": stations.iter().map(|s| s.1).sum::<f64>() / n,
                "line_busy_mean": stations.iter().map(|s| s.2).sum::<f64>() / n,
                "last_station": {"seconds": last.0, "line_bytes_per_lesson_byte": last.1, "line_busy": last.2},
            })
        };
        json!({"normal": class(false), "slow": class(true)})
    }

    pub fn city_hit_ratio(&self) -> Value {
        tier(&self.city)
    }

    pub fn town_hit_ratio(&self) -> Value {
        tier(&self.town)
    }

    /// The CPU the nodes used (everything but the link emulator's threads).
    pub fn node_cpu_s(&self) -> f64 {
        self.cpu_total_s - self.cpu_by_thread.get("linkemu").copied().unwrap_or(0.0)
    }
}

/// Starts the tree, publishes `lesson` at t = 0, waits for every station (or the timeout),
/// checks every station's bytes, stops everything.
///
/// With `station_hosts` 0 the stations run in this process; else in that many processes (this
/// binary again, `fleet host`, see [`host`]), which the open-file limit may call for: a station
/// costs ~15 descriptors (RocksDB's files and directories, its QUIC socket, its proxy's two).
pub async fn run(config: &FleetConfig, lesson: &BuiltLesson, dir: &Path, station_hosts: usize) -> Result<Outcome> {
    let keys = DeploymentKeys::generate()?;
    let started = Instant::now();
    let store = |name: &str| {
        let mut s = StoreConfig::new(dir.join(name), 4 << 30);
        s.memtable_bytes = config.memtable_bytes;
        s
    };
    let origin_name = NodeName::new("origin")?;
    let origin = Origin::start(
        OriginConfig {
            name: origin_name.clone(),
            listen: loopback(),
            store: store("origin"),
            transport: Default::default(),
            catalog_validity: Duration::from_secs(7 * 86_400),
        },
        keys.enroll(Role::Origin, &origin_name)?,
        keys.online_key(courseway_node::clock::now()),
    )
    .await?;
    let origin_parent = Parent {
        name: origin_name,
        addr: origin.local_addr()?,
    };
    let mut cities = Vec::new();
    for c in 0..config.cities {
        let name = NodeName::new(format!("city-{}", c + 1))?;
        let rc = RelayConfig::new(
            name.clone(),
            loopback(),
            store(name.as_str()),
            UpstreamConfig::new(vec![origin_parent.clone()]),
        );
        cities.push(Relay::start(rc, keys.enroll(Role::Relay, &name)?, keys.root_public()).await?);
    }
    let mut towns = Vec::new();
    for t in 0..config.towns {
        let name = NodeName::new(format!("town-{:02}", t + 1))?;
        let city = &cities[t % cities.len()];
        let rc = RelayConfig::new(
            name.clone(),
            loopback(),
            store(name.as_str()),
            UpstreamConfig::new(vec![Parent {
                name: city.name().clone(),
                addr: city.local_addr()?,
            }]),
        );
        towns.push(Relay::start(rc, keys.enroll(Role::Relay, &name)?, keys.root_public()).await?);
    }

    let parents: Vec<Parent> = towns
        .iter()
        .map(|t| {
            Ok(Parent {
                name: t.name().clone(),
                addr: t.local_addr()?,
            })
        })
        .collect::<Result<_>>()?;
    let mut local = None;
    let mut hosts = Vec::new();
    if station_hosts == 0 {
        local = Some(StationSet::start(config, &keys, &parents, 0..config.stations, dir).await?);
    } else {
        let keys_file = dir.join("keys.json");
        std::fs::create_dir_all(dir)?;
        std::fs::write(&keys_file, save_keys(&keys))?;
        let per_host = config.stations.div_ceil(station_hosts);
        for h in 0..station_hosts {
            let range = (h * per_host).min(config.stations)..((h + 1) * per_host).min(config.stations);
            if !range.is_empty() {
                hosts.push(host::Host::spawn(
                    config,
                    lesson_bytes(lesson),
                    &keys_file,
                    &parents,
                    range,
                    dir,
                )?);
            }
        }
        for h in &mut hosts {
            h.expect("ready").await?;
        }
    }
    let startup_s = started.elapsed().as_secs_f64();
    tracing::info!(startup_s, stations = config.stations, hosts = hosts.len(), "tree up");

    // t = 0: publish.
    let cpu_before = procfs::process_cpu("self");
    let threads_before = procfs::threads_cpu();
    let hosts_cpu_before: f64 = hosts.iter().map(|h| procfs::process_cpu(&h.pid())).sum();
    let t0 = Instant::now();
    for h in &mut hosts {
        h.send("go")?;
    }
    let version = origin.publish(&[(lesson.manifest.clone(), &lesson.chunks)])?;
    let mut done: Vec<Option<f64>> = vec![None; config.stations];
    let mut line_bytes = vec![0u64; config.stations];
    let mut open_fds_peak = procfs::open_fds();
    let mut hosts_report = host::Report::default();
    if let Some(set) = &mut local {
        set.wait(version, t0, config.timeout, &mut done, &mut line_bytes, |_, _, _| {})
            .await;
        open_fds_peak = open_fds_peak.max(procfs::open_fds());
    } else {
        for h in &mut hosts {
            h.collect(&mut done, &mut line_bytes, &mut hosts_report).await?;
        }
    }
    let mut cpu_total_s = procfs::process_cpu("self") - cpu_before;
    let mut cpu_by_thread = procfs::threads_delta(&threads_before, &procfs::threads_cpu());
    let mut peak_rss_bytes = vec![("origin and relays".to_string(), procfs::status_kb("self", "VmHWM"))];
    cpu_total_s += hosts.iter().map(|h| procfs::process_cpu(&h.pid())).sum::<f64>() - hosts_cpu_before;
    for (name, cpu) in &hosts_report.cpu_by_thread {
        *cpu_by_thread.entry(name.clone()).or_insert(0.0) += cpu;
    }
    for h in &hosts {
        peak_rss_bytes.push((h.label(), procfs::status_kb(&h.pid(), "VmHWM")));
        open_fds_peak = open_fds_peak.max(h.open_fds());
    }

    let mut mismatches = hosts_report.mismatches;
    let (mut lost, mut queue_dropped, mut forwarded) =
        (hosts_report.lost, hosts_report.queue_dropped, hosts_report.forwarded);
    if let Some(set) = &local {
        mismatches += set.verify(lesson, &done);
        let (l, q, f) = set.link_stats();
        lost += l;
        queue_dropped += q;
        forwarded += f;
    }
    let mut times = ClassTimes::default();
    for (i, t) in done.iter().enumerate() {
        times.record(i, *t);
    }
    let origin_stats = origin.stats();
    let outcome = Outcome {
        lesson_bytes: lesson_bytes(lesson),
        identical: mismatches == 0 && done.iter().all(Option::is_some),
        mismatches,
        times,
        origin_chunk_bytes_sent: origin_stats.chunk_bytes_sent,
        origin_duplicate_sends: origin_stats.duplicate_chunk_sends,
        city: cities.iter().map(Relay::stats).collect(),
        town: towns.iter().map(Relay::stats).collect(),
        startup_s,
        cpu_by_thread,
        cpu_total_s,
        peak_rss_bytes,
        open_fds_peak,
        processes: 1 + hosts.len(),
        link_lost: lost,
        link_queue_dropped: queue_dropped,
        link_forwarded: forwarded,
        line_bytes,
        arrivals: done.clone(),
        rate_of: (0..config.stations).map(|i| config.rate_of(i)).collect(),
    };

    // Stop everything: stations first, then relays, origin.
    if let Some(set) = local {
        set.shutdown().await;
    }
    for h in hosts {
        h.stop().await;
    }
    for mut r in towns.into_iter().chain(cities) {
        r.shutdown();
    }
    origin.shutdown();
    Ok(outcome)
}

/// The deployment's keys as JSON, for station hosts.
fn save_keys(keys: &DeploymentKeys) -> String {
    json!({
        "ca_cert": keys.ca.cert_pem(),
        "ca_key": keys.ca.key_pem(),
        "root_seed": hex(&keys.root.seed()),
        "online_seed": hex(&keys.online_seed),
    })
    .to_string()
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex(s: &str) -> Result<[u8; 32]> {
    let mut out = [0u8; 32];
    anyhow::ensure!(s.len() == 64, "a 32-byte seed in hex");
    for (i, o) in out.iter_mut().enumerate() {
        *o = u8::from_str_radix(&s[2 * i..2 * i + 2], 16)?;
    }
    Ok(out)
}

/// Reads what [`save_keys`] wrote.
pub fn load_keys(json: &str) -> Result<DeploymentKeys> {
    let v: Value = serde_json::from_str(json)?;
    let field = |k: &str| v[k].as_str().map(str::to_string).with_context(|| format!("keys: {k}"));
    Ok(DeploymentKeys {
        ca: DeploymentCa::from_pem(&field("ca_cert")?, &field("ca_key")?)?,
        root: RootKey::from_seed(unhex(&field("root_seed")?)?),
        online_seed: unhex(&field("online_seed")?)?,
    })
}

/// Stations behind their lines, in one process: each station's own linkemu proxy in front of
/// its town relay, the proxies on a runtime of their own.
pub struct StationSet {
    first: usize,
    stations: Vec<Station>,
    proxies: Vec<UdpProxy>,
    linkemu: tokio::runtime::Runtime,
}

impl std::fmt::Debug for StationSet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StationSet")
            .field("first", &self.first)
            .field("stations", &self.stations.len())
            .finish()
    }
}

/// Starts stations `range`, each behind its own emulated line (run on `linkemu`).
async fn start_stations(
    config: &FleetConfig,
    keys: &DeploymentKeys,
    parents: &[Parent],
    range: std::ops::Range<usize>,
    dir: &Path,
    linkemu: &tokio::runtime::Runtime,
) -> Result<(Vec<Station>, Vec<UdpProxy>)> {
    let mut proxies = Vec::new();
    let mut stations = Vec::new();
    for i in range {
        let town = &parents[i % parents.len()];
        let rate = config.rate_of(i);
        let link = LinkConfig {
            rate_bps: Some(rate),
            delay: config.delay,
            loss: config.loss,
            queue_bytes: config.queue_bytes(rate),
            seed: i as u64 + 1,
            ..LinkConfig::default()
        };
        let upstream = town.addr;
        let proxy = linkemu
            .spawn(async move { UdpProxy::start(upstream, ProxyConfig::symmetric(link)).await })
            .await??;
        let name = NodeName::new(format!("village-{:04}", i + 1))?;
        let mut store = StoreConfig::new(dir.join(name.as_str()), 4 << 30);
        store.memtable_bytes = config.memtable_bytes;
        let mut sc = StationConfig::new(
            name.clone(),
            loopback(),
            store,
            UpstreamConfig::new(vec![Parent {
                name: town.name.clone(),
                addr: proxy.local_addr(),
            }]),
        );
        sc.retry_after = Duration::from_secs(1);
        if config.stations_know_their_line {
            sc.rate_cap = Some(RateLimit::from_bits_per_sec(rate, 100)?);
        }
        stations.push(Station::start(sc, keys.enroll(Role::Station, &name)?, keys.root_public()).await?);
        proxies.push(proxy);
    }
    Ok((stations, proxies))
}

impl StationSet {
    /// Starts stations `range` (station `i` under `parents[i % len]`).
    pub async fn start(
        config: &FleetConfig,
        keys: &DeploymentKeys,
        parents: &[Parent],
        range: std::ops::Range<usize>,
        dir: &Path,
    ) -> Result<Self> {
        let linkemu = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("linkemu")
            .enable_all()
            .build()?;
        let first = range.start;
        match start_stations(config, keys, parents, range, dir, &linkemu).await {
            Ok((stations, proxies)) => Ok(Self {
                first,
                stations,
                proxies,
                linkemu,
            }),
            Err(e) => {
                // A runtime may not be dropped inside another one: let its threads go.
                linkemu.shutdown_background();
                Err(e)
            }
        }
    }

    /// Waits until every station holds catalog `version` (or the timeout), recording in
    /// `done[first + k]` the seconds since `t0` and in `line_bytes[first + k]` the bytes its line
    /// had carried down by then; calls `on_done` for each.
    pub async fn wait(
        &mut self,
        version: u64,
        t0: Instant,
        timeout: Duration,
        done: &mut [Option<f64>],
        line_bytes: &mut [u64],
        mut on_done: impl FnMut(usize, f64, u64),
    ) {
        let mut statuses: Vec<_> = self.stations.iter().map(|s| s.status()).collect();
        let mut last_log = Instant::now();
        loop {
            let now = t0.elapsed().as_secs_f64();
            for (k, status) in statuses.iter_mut().enumerate() {
                let i = self.first + k;
                if done[i].is_none() {
                    let s = status.borrow_and_update();
                    if s.synced && s.catalog_version >= version {
                        let bytes = self.proxies[k].stats().downlink.forwarded_bytes;
                        done[i] = Some(now);
                        line_bytes[i] = bytes;
                        on_done(i, now, bytes);
                    }
                }
            }
            let complete = (self.first..self.first + self.stations.len())
                .filter(|i| done[*i].is_some())
                .count();
            if complete == self.stations.len() || t0.elapsed() > timeout {
                break;
            }
            if last_log.elapsed() > Duration::from_secs(10) {
                tracing::info!(t = now, complete, of = self.stations.len(), "courseway: waiting");
                last_log = Instant::now();
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Chunks that differ from (or are missing against) `lesson`, read back through each
    /// finished station's verifying read.
    pub fn verify(&self, lesson: &BuiltLesson, done: &[Option<f64>]) -> usize {
        let mut mismatches = 0;
        for (k, s) in self.stations.iter().enumerate() {
            if done[self.first + k].is_none() {
                continue;
            }
            for (id, bytes) in &lesson.chunks {
                match s.store().get(id, 0) {
                    Ok(Some(held)) if &held == bytes => {}
                    _ => mismatches += 1,
                }
            }
        }
        mismatches
    }

    /// Datagrams lost at random, dropped at the queue (both ways), and carried down.
    pub fn link_stats(&self) -> (u64, u64, u64) {
        let (mut lost, mut queue_dropped, mut forwarded) = (0, 0, 0);
        for p in &self.proxies {
            let st = p.stats();
            lost += st.downlink.dropped_loss + st.uplink.dropped_loss;
            queue_dropped += st.downlink.dropped_queue + st.uplink.dropped_queue;
            forwarded += st.downlink.forwarded_packets;
        }
        (lost, queue_dropped, forwarded)
    }

    pub async fn shutdown(self) {
        let mut closing = tokio::task::JoinSet::new();
        for s in self.stations {
            closing.spawn(s.shutdown());
        }
        while closing.join_next().await.is_some() {}
        drop(self.proxies);
        self.linkemu.shutdown_background();
    }
}
