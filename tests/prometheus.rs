//! A real Prometheus server (Debian's `prometheus`) scrapes every node of a small tree through
//! the deployment's own config (deploy/prometheus: file_sd targets, the alert rules loaded),
//! and the figures it stores are the ones the tree really has after a sync. Each role's
//! `/metrics` also passes `promtool check metrics`.

use std::io::{Read, Write};
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use courseway::admin_client::percent_encode;
use courseway::topology::{DeploymentKeys, MetricsTarget, Topology, TopologyConfig};
use courseway_content::synthetic::SyntheticLesson;
use courseway_content::{LessonId, NodeName};
use courseway_node::http::HttpServer;
use courseway_node::metrics::{self, MetricsHandler};
use courseway_node::{Parent, UpstreamConfig};
use courseway_proto::Role;
use courseway_relay::PrefetchPolicy;
use courseway_station::{Station, StationConfig};
use courseway_store::StoreConfig;
use courseway_tests::{loopback, wait_until};
use serde_json::Value;

/// The Prometheus server, killed when dropped.
struct Prometheus {
    child: Child,
    addr: SocketAddr,
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A plain HTTP/1.0 GET on loopback (no chunked bodies): (status line, body).
fn get(addr: SocketAddr, path: &str) -> Option<(String, String)> {
    let mut stream = std::net::TcpStream::connect(addr).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(10))).ok()?;
    write!(stream, "GET {path} HTTP/1.0\r\nHost: test\r\n\r\n").ok()?;
    let mut response = String::new();
    stream.read_to_string(&mut response).ok()?;
    let (head, body) = response.split_once("\r\n\r\n")?;
    Some((head.lines().next()?.to_string(), body.to_string()))
}

/// The value of a PromQL query that yields one sample (None: no sample yet).
fn query(prometheus: &Prometheus, promql: &str) -> Option<f64> {
    let (status, body) = get(
        prometheus.addr,
        &format!("/api/v1/query?query={}", percent_encode(promql)),
    )?;
    assert!(status.contains("200"), "{promql}: {status}\n{body}");
    let v: Value = serde_json::from_str(&body).ok()?;
    let result = v["data"]["result"].as_array()?;
    result.first()?["value"][1].as_str()?.parse().ok()
}

/// Writes the deployment's Prometheus config into `dir` with the live targets (scraping every
/// second instead of every 30 s) and starts Prometheus on it.
fn start_prometheus(dir: &Path, targets: &[MetricsTarget]) -> Prometheus {
    let deploy = Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/prometheus");
    let config = std::fs::read_to_string(deploy.join("prometheus.yml"))
        .unwrap()
        .replace("scrape_interval: 30s", "scrape_interval: 1s")
        .replace("scrape_interval: 60s", "scrape_interval: 1s")
        .replace("evaluation_interval: 30s", "evaluation_interval: 1s");
    std::fs::write(dir.join("prometheus.yml"), config).unwrap();
    std::fs::copy(deploy.join("alerts.yml"), dir.join("alerts.yml")).unwrap();
    std::fs::create_dir_all(dir.join("targets")).unwrap();
    for (file, role) in [
        ("origin.json", "origin"),
        ("relays.json", "relay"),
        ("stations.json", "station"),
    ] {
        let list: Vec<Value> = targets
            .iter()
            .filter(|t| t.role == role)
            .map(|t| serde_json::json!({"targets": [t.addr.to_string()], "labels": {"node": t.name}}))
            .collect();
        std::fs::write(dir.join("targets").join(file), serde_json::to_string(&list).unwrap()).unwrap();
    }
    // A free port for Prometheus's web listener.
    let addr = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let child = Command::new("prometheus")
        .arg(format!("--config.file={}", dir.join("prometheus.yml").display()))
        .arg(format!("--storage.tsdb.path={}", dir.join("data").display()))
        .arg(format!("--web.listen-address={addr}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| {
            panic!("prometheus not runnable ({e}): install Debian's prometheus package (scripts/ensure-deps.sh does)")
        });
    Prometheus { child, addr }
}

/// `promtool check metrics` on one node's exposition.
fn promtool_check_metrics(target: &MetricsTarget) {
    let (status, body) = get(target.addr, "/metrics").expect("a metrics endpoint answers");
    assert!(status.contains("200"), "{status}");
    let mut child = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("promtool");
    child.stdin.take().unwrap().write_all(body.as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    let report = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success() && report.trim().is_empty(),
        "promtool check metrics found problems in the {} {}'s /metrics:\n{report}",
        target.role,
        target.name
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prometheus_scrapes_every_node_and_sees_the_sync() {
    let dir = tempfile::tempdir().unwrap();
    let keys = DeploymentKeys::generate().unwrap();
    let mut tree = Topology::start(
        &TopologyConfig {
            dir: dir.path().join("nodes"),
            city_relays: 1,
            district_relays: 1,
            stations: 2,
            prefetch: PrefetchPolicy::None,
            station_rate: None,
            far_stations: 0,
            far_station_rate: None,
            memtable_bytes: 4 << 20,
        },
        &keys,
    )
    .await
    .unwrap();
    let mut targets = tree.serve_metrics().await.unwrap();

    let lessons: Vec<_> = (1..=2)
        .map(|i| SyntheticLesson::of_size(LessonId::new(format!("lesson-{i}")).unwrap(), i, 600_000).build())
        .collect();
    let published: Vec<_> = lessons.iter().map(|l| (l.manifest.clone(), &l.chunks)).collect();
    let version = tree.origin.publish(&published).unwrap();
    wait_until("the stations to sync", Duration::from_secs(60), || {
        tree.stations_synced(version) == 2
    })
    .await;

    // A third station joins under the district relay once it holds everything: every chunk it
    // asks for is a cache hit there.
    let name = NodeName::new("village-late").unwrap();
    let mut config = StationConfig::new(
        name.clone(),
        loopback(),
        StoreConfig::new(dir.path().join("nodes/village-late"), 1 << 30),
        UpstreamConfig::new(vec![Parent {
            name: tree.district[0].name().clone(),
            addr: tree.district[0].local_addr().unwrap(),
        }]),
    );
    config.retry_after = Duration::from_millis(200);
    let late = Station::start(config, keys.enroll(Role::Station, &name).unwrap(), keys.root_public())
        .await
        .unwrap();
    let mut registry = metrics::registry("station");
    registry.register_collector(late.metrics());
    let late_metrics = HttpServer::bind(loopback(), MetricsHandler::new(registry))
        .await
        .unwrap();
    targets.push(MetricsTarget {
        role: "station",
        name: name.to_string(),
        addr: late_metrics.local_addr(),
    });
    let mut status = late.status();
    wait_until("the late station to sync", Duration::from_secs(60), || {
        let s = status.borrow_and_update();
        s.synced && s.catalog_version == version
    })
    .await;

    for role in ["origin", "relay", "station"] {
        promtool_check_metrics(targets.iter().find(|t| t.role == role).unwrap());
    }

    let prometheus = start_prometheus(dir.path(), &targets);
    let nodes = targets.len() as f64;
    let expect = |promql: &'static str, want: f64| {
        let prometheus = &prometheus;
        async move {
            let mut last = None;
            let waited = tokio::time::timeout(Duration::from_secs(90), async {
                loop {
                    last = query(prometheus, promql);
                    if last == Some(want) {
                        return;
                    }
                    tokio::time::sleep(Duration::from_millis(250)).await;
                }
            })
            .await;
            assert!(waited.is_ok(), "{promql}: Prometheus says {last:?}, expected {want}");
        }
    };
    // Every node is scraped, through the deployment's file_sd config.
    expect("count(up == 1)", nodes).await;
    expect("count(courseway_build_info)", nodes).await;
    // What the tree did: each station holds both lessons; the district relay served the late
    // station from its cache; the origin sent each chunk once, to the city relay.
    expect("count(courseway_station_lessons_ready == 2)", 3.0).await;
    expect("count(courseway_station_synced == 1)", 3.0).await;
    expect(
        "sum(courseway_relay_chunk_requests_total{result=\"hit\"}) > bool 0",
        1.0,
    )
    .await;
    let lesson_bytes: u64 = lessons
        .iter()
        .flat_map(|l| l.chunks.values())
        .map(|c| c.len() as u64)
        .sum();
    let sent = query(&prometheus, "sum(courseway_origin_chunk_sent_bytes_total)").unwrap();
    assert_eq!(sent, lesson_bytes as f64, "the origin sent each chunk once");
    // The alert rules load and evaluate against the real series without errors.
    let (status, body) = get(prometheus.addr, "/api/v1/rules").unwrap();
    assert!(status.contains("200"), "{status}");
    let rules: Value = serde_json::from_str(&body).unwrap();
    let groups = rules["data"]["groups"].as_array().unwrap();
    assert!(!groups.is_empty(), "no alert rules loaded: {body}");
    for rule in groups.iter().flat_map(|g| g["rules"].as_array().unwrap()) {
        assert_ne!(
            rule["health"], "err",
            "rule {} fails: {}",
            rule["name"], rule["lastError"]
        );
    }

    drop(prometheus);
    late.shutdown().await;
    tree.shutdown().await;
}
