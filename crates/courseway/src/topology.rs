//! A whole delivery tree in one process, on loopback, with real QUIC between the nodes: an
//! origin, city relays, district relays under them and stations under those. Used by
//! `courseway demo` and by the end-to-end tests.

use std::net::{Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use courseway_content::{AreaName, NodeName, OnlineKey, PublicKey, RootKey, UnixTime};
use courseway_net::{DeploymentCa, Enrollment, NetError, RateLimit, Validity};
use courseway_node::http::{HttpBindError, HttpServer};
use courseway_node::metrics::{self, MetricsCollector, MetricsHandler};
use courseway_node::{Parent, UpstreamConfig};
use courseway_origin::{Origin, OriginConfig, OriginError};
use courseway_proto::Role;
use courseway_relay::{PrefetchPolicy, Relay, RelayConfig, RelayError};
use courseway_station::lan::{LanConfig, LanServer};
use courseway_station::{Station, StationConfig, StationError, SyncStatus};
use courseway_store::StoreConfig;

/// The shape of the tree.
#[derive(Debug, Clone)]
pub struct TopologyConfig {
    /// Where every node's store goes (one directory per node).
    pub dir: PathBuf,
    pub city_relays: usize,
    /// District relays, spread over the city relays.
    pub district_relays: usize,
    pub stations: usize,
    pub prefetch: PrefetchPolicy,
    /// Each station's download cap.
    pub station_rate: Option<RateLimit>,
    /// The last `far_stations` stations are far villages on a slower line...
    pub far_stations: usize,
    /// ...of this cap (`None`: the same as the others).
    pub far_station_rate: Option<RateLimit>,
    /// Memtable size of each node's store (small keeps hundreds of stations in one process lean).
    pub memtable_bytes: usize,
}

/// What went wrong building the tree.
#[derive(Debug, thiserror::Error)]
pub enum TopologyError {
    #[error(transparent)]
    Net(#[from] NetError),
    #[error(transparent)]
    Origin(#[from] OriginError),
    #[error(transparent)]
    Relay(#[from] RelayError),
    #[error(transparent)]
    Station(#[from] StationError),
    #[error(transparent)]
    Name(#[from] courseway_content::NameError),
    #[error("stations need at least one relay or the origin above them")]
    Shape,
}

/// A deployment's keys: the CA that issues node certificates, the root key and an online key.
pub struct DeploymentKeys {
    pub ca: DeploymentCa,
    pub root: RootKey,
    pub online_seed: [u8; 32],
}

impl std::fmt::Debug for DeploymentKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DeploymentKeys")
            .field("root", &self.root.public())
            .finish_non_exhaustive()
    }
}

impl DeploymentKeys {
    /// Fresh keys from the operating system's randomness.
    pub fn generate() -> Result<Self, NetError> {
        Ok(Self {
            ca: DeploymentCa::generate("Courseway demo CA")?,
            root: RootKey::from_seed(rand::random()),
            online_seed: rand::random(),
        })
    }

    /// The online key, delegated by the root for 30 days from `now`.
    pub fn online_key(&self, now: UnixTime) -> OnlineKey {
        let delegation = self.root.delegate(
            OnlineKey::public_for_seed(self.online_seed),
            "origin-online",
            now,
            now.plus_secs(30 * 86_400),
        );
        OnlineKey::new(self.online_seed, delegation).expect("the delegation names this key")
    }

    /// Enrols a node: a certificate for `role` and `name` from the deployment CA.
    pub fn enroll(&self, role: Role, name: &NodeName) -> Result<Enrollment, NetError> {
        let credentials = self
            .ca
            .issue(role, name, Validity::starting_now(Duration::from_secs(365 * 86_400)))?;
        Ok(Enrollment::new(self.ca.certificate().clone(), credentials))
    }

    /// The root public key nodes trust.
    pub fn root_public(&self) -> PublicKey {
        self.root.public()
    }
}

/// The running tree.
#[derive(Debug)]
pub struct Topology {
    /// Shared, so the origin's admin API can run beside the tree.
    pub origin: Arc<Origin>,
    pub city: Vec<Relay>,
    pub district: Vec<Relay>,
    pub stations: Vec<Station>,
    metrics: Vec<HttpServer>,
    lan: Vec<LanServer>,
}

/// One node's `/metrics` endpoint.
#[derive(Debug, Clone)]
pub struct MetricsTarget {
    /// "origin", "relay" or "station".
    pub role: &'static str,
    pub name: String,
    pub addr: SocketAddr,
}

fn loopback() -> SocketAddr {
    SocketAddr::from((Ipv4Addr::LOCALHOST, 0))
}

fn parents(of: &[(NodeName, SocketAddr)], index: usize) -> Vec<Parent> {
    // Primary: index mod n; backup: the next one (when there is one).
    let n = of.len();
    let mut list = vec![Parent {
        name: of[index % n].0.clone(),
        addr: of[index % n].1,
    }];
    if n > 1 {
        let b = (index + 1) % n;
        list.push(Parent {
            name: of[b].0.clone(),
            addr: of[b].1,
        });
    }
    list
}

impl Topology {
    /// Starts every node. Stations start syncing at once (there is nothing to sync until the
    /// origin publishes).
    pub async fn start(config: &TopologyConfig, keys: &DeploymentKeys) -> Result<Self, TopologyError> {
        let store = |name: &str| {
            let mut s = StoreConfig::new(config.dir.join(name), 64 << 30);
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
        let origin = Arc::new(origin);
        let origin_tier = vec![(origin_name, origin.local_addr()?)];

        let mut city = Vec::new();
        let mut city_tier = Vec::new();
        for i in 0..config.city_relays {
            let name = NodeName::new(format!("city-{}", i + 1))?;
            let mut rc = RelayConfig::new(
                name.clone(),
                loopback(),
                store(name.as_str()),
                UpstreamConfig::new(parents(&origin_tier, 0)),
            );
            rc.prefetch = config.prefetch;
            let relay = Relay::start(rc, keys.enroll(Role::Relay, &name)?, keys.root_public()).await?;
            city_tier.push((name, relay.local_addr()?));
            city.push(relay);
        }
        let above_district = if city_tier.is_empty() { &origin_tier } else { &city_tier };
        let mut district = Vec::new();
        let mut district_tier = Vec::new();
        for i in 0..config.district_relays {
            let name = NodeName::new(format!("district-{:02}", i + 1))?;
            let mut rc = RelayConfig::new(
                name.clone(),
                loopback(),
                store(name.as_str()),
                UpstreamConfig::new(parents(above_district, i)),
            );
            rc.prefetch = config.prefetch;
            let relay = Relay::start(rc, keys.enroll(Role::Relay, &name)?, keys.root_public()).await?;
            district_tier.push((name, relay.local_addr()?));
            district.push(relay);
        }
        let above_stations = if !district_tier.is_empty() {
            &district_tier
        } else if !city_tier.is_empty() {
            &city_tier
        } else {
            &origin_tier
        };
        let mut stations = Vec::new();
        for i in 0..config.stations {
            let name = NodeName::new(format!("village-{:04}", i + 1))?;
            let mut sc = StationConfig::new(
                name.clone(),
                loopback(),
                store(name.as_str()),
                UpstreamConfig::new(parents(above_stations, i)),
            );
            let far = i >= config.stations.saturating_sub(config.far_stations);
            sc.rate_cap = if far {
                config.far_station_rate.or(config.station_rate)
            } else {
                config.station_rate
            };
            sc.retry_after = Duration::from_secs(1);
            // Its district is its district relay's (else the city's); a town per three villages
            // of a district, so the fleet view has something to group.
            let (above, _) = &above_stations[i % above_stations.len()];
            let nth_in_district = i / above_stations.len();
            sc.place.district = Some(AreaName::new(above.as_str())?);
            sc.place.town = Some(AreaName::new(format!(
                "{}-town-{}",
                above.as_str(),
                nth_in_district / 3 + 1
            ))?);
            stations.push(Station::start(sc, keys.enroll(Role::Station, &name)?, keys.root_public()).await?);
        }
        Ok(Self {
            origin,
            city,
            district,
            stations,
            metrics: Vec::new(),
            lan: Vec::new(),
        })
    }

    /// Starts a `/metrics` endpoint on loopback for every node; returns where each listens.
    pub async fn serve_metrics(&mut self) -> Result<Vec<MetricsTarget>, HttpBindError> {
        let mut endpoints: Vec<(&'static str, String, Box<dyn MetricsCollector>)> =
            vec![("origin", "origin".into(), self.origin.metrics())];
        for r in self.city.iter().chain(&self.district) {
            endpoints.push(("relay", r.name().to_string(), r.metrics()));
        }
        for s in &self.stations {
            endpoints.push(("station", s.name().to_string(), s.metrics()));
        }
        let mut targets = Vec::new();
        for (role, name, collector) in endpoints {
            let mut registry = metrics::registry(role);
            registry.register_collector(collector);
            let server = HttpServer::bind(loopback(), MetricsHandler::new(registry)).await?;
            targets.push(MetricsTarget {
                role,
                name,
                addr: server.local_addr(),
            });
            self.metrics.push(server);
        }
        Ok(targets)
    }

    /// Starts every station's LAN server (the TV page and HLS) on loopback, each keeping its
    /// viewing records in its own outbox (sent up as reports); returns each station's name and
    /// page URL.
    pub async fn serve_lan(&mut self) -> Result<Vec<(String, String)>, HttpBindError> {
        let mut pages = Vec::new();
        for s in &self.stations {
            let server = s.serve_lan(LanConfig::new(loopback(), s.viewing_sink())).await?;
            pages.push((s.name().to_string(), server.page_url()));
            self.lan.push(server);
        }
        Ok(pages)
    }

    /// Each station's sync status.
    pub fn station_status(&self) -> Vec<SyncStatus> {
        self.stations.iter().map(|s| s.status().borrow().clone()).collect()
    }

    /// How many stations hold every lesson of catalog `version` (or a newer one).
    pub fn stations_synced(&self, version: u64) -> usize {
        self.station_status()
            .iter()
            .filter(|s| s.synced && s.catalog_version >= version)
            .count()
    }

    /// Stops every node.
    pub async fn shutdown(self) {
        // Concurrently: each station's endpoint drains for about a second after closing.
        // Playbacks in progress end (and are recorded) before their stations stop.
        drop(self.lan);
        let mut closing = tokio::task::JoinSet::new();
        for s in self.stations {
            closing.spawn(s.shutdown());
        }
        while closing.join_next().await.is_some() {}
        drop(self.metrics);
        drop(self.district);
        drop(self.city);
        self.origin.shutdown();
    }
}
