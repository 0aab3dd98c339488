//! The Courseway side: a real tree (QUIC, mutual TLS, RocksDB at every node) in this process,
//! every station behind its own linkemu UDP proxy in front of its town relay.
//!
//! The proxies run on a runtime of their own (threads named `linkemu`), so the CPU they cost
//! (link emulation, not Courseway) is told apart from the nodes' by thread.

use std::collections::BTreeMap;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::Result;
use courseway::topology::DeploymentKeys;
use courseway_content::synthetic::BuiltLesson;
use courseway_content::NodeName;
use courseway_linkemu::{LinkConfig, ProxyConfig, UdpProxy};
use courseway_node::{Parent, UpstreamConfig};
use courseway_origin::{Origin, OriginConfig};
use courseway_proto::Role;
use courseway_relay::{Relay, RelayConfig, RelayStats};
use courseway_station::{Station, StationConfig};
use courseway_store::StoreConfig;
use serde_json::{json, Value};

use super::{lesson_bytes, procfs, ratio, ClassTimes, FleetConfig};

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
    /// CPU seconds of the whole process from t = 0 to the last station.
    pub cpu_total_s: f64,
    pub peak_rss_bytes: u64,
    pub open_fds_peak: usize,
    /// Datagrams the station lines dropped at random, at the queue, and carried downstream.
    pub link_lost: u64,
    pub link_queue_dropped: u64,
    pub link_forwarded: u64,
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
        "hit_ratio": ratio(hits, hits + misses + coalesced),
        "bytes_fetched": stats.iter().map(|s| s.bytes_fetched).sum::<u64>(),
        "bytes_served": stats.iter().map(|s| s.bytes_served).sum::<u64>(),
    })
}

impl Outcome {
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
pub async fn run(config: &FleetConfig, lesson: &BuiltLesson, dir: &Path) -> Result<Outcome> {
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

    // The station lines: one proxy per station, on the link emulator's own runtime.
    let linkemu = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .thread_name("linkemu")
        .enable_all()
        .build()?;
    let mut proxies = Vec::new();
    let mut stations = Vec::new();
    for i in 0..config.stations {
        let town = &towns[i % towns.len()];
        let rate = config.rate_of(i);
        let link = LinkConfig {
            rate_bps: Some(rate),
            delay: config.delay,
            loss: config.loss,
            queue_bytes: config.queue_bytes(rate),
            seed: i as u64 + 1,
            ..LinkConfig::default()
        };
        let upstream = town.local_addr()?;
        let proxy = linkemu
            .spawn(async move { UdpProxy::start(upstream, ProxyConfig::symmetric(link)).await })
            .await??;
        let name = NodeName::new(format!("village-{:04}", i + 1))?;
        let mut sc = StationConfig::new(
            name.clone(),
            loopback(),
            store(name.as_str()),
            UpstreamConfig::new(vec![Parent {
                name: town.name().clone(),
                addr: proxy.local_addr(),
            }]),
        );
        sc.retry_after = Duration::from_secs(1);
        stations.push(Station::start(sc, keys.enroll(Role::Station, &name)?, keys.root_public()).await?);
        proxies.push(proxy);
    }
    let startup_s = started.elapsed().as_secs_f64();
    tracing::info!(startup_s, stations = stations.len(), "tree up");

    // t = 0: publish.
    procfs::reset_peak_rss();
    let cpu_before = procfs::process_cpu("self");
    let threads_before = procfs::threads_cpu();
    let t0 = Instant::now();
    let version = origin.publish(&[(lesson.manifest.clone(), &lesson.chunks)])?;
    let mut done: Vec<Option<f64>> = vec![None; stations.len()];
    let mut statuses: Vec<_> = stations.iter().map(|s| s.status()).collect();
    let mut open_fds_peak = procfs::open_fds();
    let mut last_log = Instant::now();
    loop {
        let now = t0.elapsed().as_secs_f64();
        for (i, status) in statuses.iter_mut().enumerate() {
            if done[i].is_none() {
                let s = status.borrow_and_update();
                if s.synced && s.catalog_version >= version {
                    done[i] = Some(now);
                }
            }
        }
        let complete = done.iter().flatten().count();
        if complete == stations.len() || t0.elapsed() > config.timeout {
            break;
        }
        if last_log.elapsed() > Duration::from_secs(10) {
            open_fds_peak = open_fds_peak.max(procfs::open_fds());
            tracing::info!(t = now, complete, of = stations.len(), "courseway: waiting");
            last_log = Instant::now();
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let cpu_total_s = procfs::process_cpu("self") - cpu_before;
    let cpu_by_thread = procfs::threads_delta(&threads_before, &procfs::threads_cpu());
    let peak_rss_bytes = procfs::status_kb("self", "VmHWM");
    open_fds_peak = open_fds_peak.max(procfs::open_fds());

    // Byte for byte, read back through each store's verifying read.
    let mut mismatches = 0;
    for (i, s) in stations.iter().enumerate() {
        if done[i].is_none() {
            continue;
        }
        for (id, bytes) in &lesson.chunks {
            match s.store().get(id, 0) {
                Ok(Some(held)) if &held == bytes => {}
                _ => mismatches += 1,
            }
        }
    }
    let mut times = ClassTimes::default();
    for (i, t) in done.iter().enumerate() {
        times.record(i, *t);
    }
    let (mut lost, mut queue_dropped, mut forwarded) = (0, 0, 0);
    for p in &proxies {
        let st = p.stats();
        lost += st.downlink.dropped_loss + st.uplink.dropped_loss;
        queue_dropped += st.downlink.dropped_queue + st.uplink.dropped_queue;
        forwarded += st.downlink.forwarded_packets;
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
        link_lost: lost,
        link_queue_dropped: queue_dropped,
        link_forwarded: forwarded,
    };

    // Stop everything: stations first (concurrently), then proxies, relays, origin.
    let mut closing = tokio::task::JoinSet::new();
    for s in stations {
        closing.spawn(s.shutdown());
    }
    while closing.join_next().await.is_some() {}
    drop(proxies);
    linkemu.shutdown_background();
    for mut r in towns.into_iter().chain(cities) {
        r.shutdown();
    }
    origin.shutdown();
    Ok(outcome)
}
