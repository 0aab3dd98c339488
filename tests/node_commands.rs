//! The operator's path, as separate processes: `courseway keys init`, `keys issue` for each
//! node, then `courseway origin`, `relay` and `station` from config files, stopped with
//! SIGTERM. The station's store is then opened and every chunk compared with the published
//! bytes.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdout, Command, Output, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use courseway_content::synthetic::SyntheticLesson;
use courseway_content::LessonId;
use courseway_store::{Store, StoreConfig};

/// The `courseway` binary, built by `cargo test --workspace` beside the test executables.
fn courseway() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let dir = exe.parent().and_then(Path::parent).unwrap();
    let bin = dir.join("courseway");
    assert!(
        bin.is_file(),
        "{} is missing: run the tests with `cargo test --workspace`",
        bin.display()
    );
    bin
}

fn run_ok(args: &[&str]) -> Output {
    let out = Command::new(courseway()).args(args).output().unwrap();
    assert!(
        out.status.success(),
        "courseway {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// A node process whose stdout lines arrive on a channel; SIGKILLed if the test fails.
struct Node {
    child: Child,
    lines: mpsc::Receiver<String>,
}

impl Node {
    fn start(role: &str, config: &Path) -> Self {
        let mut child = Command::new(courseway())
            .args([role, "--config", config.to_str().unwrap()])
            .env("RUST_LOG", "warn")
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let stdout: ChildStdout = child.stdout.take().unwrap();
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Self { child, lines }
    }

    /// Waits for a line containing every one of `words`; returns it.
    fn wait_for(&self, words: &[&str], timeout: Duration) -> String {
        let deadline = std::time::Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) if words.iter().all(|w| line.contains(w)) => return line,
                Ok(_) => {}
                Err(e) => panic!("no line with {words:?} within {timeout:?}: {e}"),
            }
        }
    }

    /// The address from a "... listening on ADDR (UDP, QUIC)" line.
    fn listen_addr(&self) -> String {
        let line = self.wait_for(&["listening on"], Duration::from_secs(30));
        line.split("listening on ")
            .nth(1)
            .and_then(|rest| rest.split_whitespace().next())
            .unwrap()
            .to_string()
    }

    /// The address from the "metrics on http://ADDR/metrics" line.
    fn metrics_addr(&self) -> String {
        let line = self.wait_for(&["metrics on http://"], Duration::from_secs(30));
        line.trim_start_matches("metrics on http://")
            .trim_end_matches("/metrics")
            .to_string()
    }

    /// SIGTERM, then the exit status must be success (a clean shutdown).
    fn stop(mut self) {
        let pid = self.child.id().to_string();
        assert!(Command::new("kill").args(["-TERM", &pid]).status().unwrap().success());
        let status = self.child.wait().unwrap();
        assert!(status.success(), "node exited with {status} after SIGTERM");
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `GET /metrics` over a plain TCP connection, asking for OpenMetrics as Prometheus does; the
/// body, after checking the status and type.
fn scrape(addr: &str) -> String {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(addr).unwrap();
    stream
        .write_all(
            b"GET /metrics HTTP/1.1\r\nHost: test\r\nAccept: application/openmetrics-text;version=1.0.0\r\n\
              Connection: close\r\n\r\n",
        )
        .unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    let (head, body) = response.split_once("\r\n\r\n").unwrap();
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert!(head.contains("application/openmetrics-text"), "{head}");
    body.to_string()
}

/// `GET path` from `addr`: the response head and body (HTTP/1.1, connection closed).
fn http_get(addr: &str, path: &str) -> (String, String) {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(addr).unwrap();
    write!(stream, "GET {path} HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n").unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    let (head, body) = response.split_once("\r\n\r\n").unwrap();
    (head.to_string(), body.to_string())
}

/// The value of the sample `series` (name with labels, exactly as exposed).
fn sample(metrics: &str, series: &str) -> f64 {
    metrics
        .lines()
        .find_map(|l| l.strip_prefix(series).and_then(|rest| rest.strip_prefix(' ')))
        .unwrap_or_else(|| panic!("no {series} in:\n{metrics}"))
        .trim()
        .parse()
        .unwrap()
}

fn write(path: &Path, text: &str) -> PathBuf {
    std::fs::write(path, text).unwrap();
    path.to_path_buf()
}

#[test]
fn operator_sets_up_keys_and_runs_origin_relay_station_from_config_files() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let deployment = d.join("deployment");
    run_ok(&[
        "keys",
        "init",
        "--dir",
        deployment.to_str().unwrap(),
        "--name",
        "Test City",
    ]);
    for (role, name) in [
        ("origin", "origin"),
        ("relay", "district-07"),
        ("station", "village-0123"),
    ] {
        let out = d.join(name);
        run_ok(&[
            "keys",
            "issue",
            "--keys",
            deployment.to_str().unwrap(),
            "--role",
            role,
            "--name",
            name,
            "--out",
            out.to_str().unwrap(),
        ]);
    }

    let origin_toml = write(
        &d.join("origin.toml"),
        "[node]\ncredentials = \"origin\"\nlisten = \"127.0.0.1:0\"\n\
         [metrics]\nlisten = \"127.0.0.1:0\"\n\
         [store]\npath = \"origin-store\"\nbudget = \"1 GiB\"\n\
         [origin]\nonline_key = \"deployment/online.key\"\nsynthetic_lessons = 2\nsynthetic_lesson_size = \"2 MB\"\n\
         [origin.admin]\nlisten = \"127.0.0.1:0\"\ndata = \"admin\"\nspool = \"spool\"\n",
    );
    let origin = Node::start("origin", &origin_toml);
    let origin_addr = origin.listen_addr();
    let origin_metrics = origin.metrics_addr();
    origin.wait_for(&["published 2 synthetic lessons"], Duration::from_secs(60));

    let relay_toml = write(
        &d.join("relay.toml"),
        &format!(
            "[node]\ncredentials = \"district-07\"\nlisten = \"127.0.0.1:0\"\n\
             [metrics]\nlisten = \"127.0.0.1:0\"\n\
             [store]\npath = \"relay-store\"\nbudget = \"1 GiB\"\n\
             [[parent]]\nname = \"origin\"\naddr = \"{origin_addr}\"\n[relay]\nprefetch = \"none\"\n"
        ),
    );
    let relay = Node::start("relay", &relay_toml);
    let relay_addr = relay.listen_addr();
    let relay_metrics = relay.metrics_addr();

    let station_toml = write(
        &d.join("station.toml"),
        &format!(
            "[node]\ncredentials = \"village-0123\"\nbind = \"127.0.0.1:0\"\n\
             [metrics]\nlisten = \"127.0.0.1:0\"\n\
             [store]\npath = \"station-store\"\nbudget = \"1 GiB\"\n\
             [[parent]]\nname = \"district-07\"\naddr = \"{relay_addr}\"\n\
             [station]\nrate_limit = \"50 Mbit/s\"\n\
             [station.lan]\nlisten = \"127.0.0.1:0\"\n"
        ),
    );
    let station = Node::start("station", &station_toml);
    let station_metrics = station.metrics_addr();
    let page = station.wait_for(&["TV page and HLS on http://"], Duration::from_secs(30));
    let lan_addr = page
        .trim_start_matches("TV page and HLS on http://")
        .trim_end_matches('/')
        .to_string();
    station.wait_for(&["synced", "2/2 lessons ready"], Duration::from_secs(120));
    // The station's LAN server lists both lessons as ready and serves their playlists.
    let (head, lessons) = http_get(&lan_addr, "/api/lessons");
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert_eq!(lessons.matches("\"ready\":true").count(), 2, "{lessons}");
    let (head, master) = http_get(&lan_addr, "/hls/synthetic-001/master.m3u8");
    assert!(
        head.starts_with("HTTP/1.1 200") && head.contains("application/vnd.apple.mpegurl"),
        "{head}"
    );
    assert!(master.starts_with("#EXTM3U"), "{master}");

    // What each node's /metrics says agrees with what happened.
    let lesson_bytes: u64 = (1..=2u64)
        .map(|i| {
            let id = LessonId::new(format!("synthetic-{i:03}")).unwrap();
            let l = SyntheticLesson::of_size(id, i, 2_000_000).build();
            l.chunks.values().map(|c| c.len() as u64).sum::<u64>()
        })
        .sum();
    let s = scrape(&station_metrics);
    assert_eq!(sample(&s, "courseway_station_lessons_ready"), 2.0);
    assert_eq!(sample(&s, "courseway_station_synced"), 1.0);
    assert_eq!(sample(&s, "courseway_station_ready_bytes"), lesson_bytes as f64);
    assert_eq!(sample(&s, "courseway_upstream_verification_failures_total"), 0.0);
    assert!(
        s.contains("courseway_build_info{version=\"0.1.0\",role=\"station\"} 1"),
        "{s}"
    );
    let r = scrape(&relay_metrics);
    // No prefetch and one station: every chunk was a miss, fetched once and served once.
    assert_eq!(sample(&r, "courseway_relay_fetched_bytes_total"), lesson_bytes as f64);
    assert_eq!(sample(&r, "courseway_relay_served_bytes_total"), lesson_bytes as f64);
    assert_eq!(sample(&r, "courseway_relay_chunk_requests_total{result=\"hit\"}"), 0.0);
    assert!(sample(&r, "courseway_relay_chunk_requests_total{result=\"miss\"}") > 0.0);
    // The one station is connected to it.
    assert_eq!(sample(&r, "courseway_relay_connected_children"), 1.0);
    // Each chunk fetched once at each tier, and each fetch timed.
    let chunks = sample(&r, "courseway_relay_chunk_requests_total{result=\"miss\"}");
    assert_eq!(sample(&r, "courseway_upstream_fetch_seconds_count"), chunks);
    assert_eq!(sample(&s, "courseway_upstream_fetch_seconds_count"), chunks);
    assert_eq!(
        sample(&r, "courseway_catalog_version"),
        sample(&s, "courseway_catalog_version")
    );
    let o = scrape(&origin_metrics);
    assert_eq!(
        sample(&o, "courseway_origin_chunk_sent_bytes_total"),
        lesson_bytes as f64
    );
    assert_eq!(sample(&o, "courseway_store_pinned_bytes"), lesson_bytes as f64);

    // Every metric the alert rules and the Grafana dashboards name is one these nodes expose (a
    // renamed metric would leave an alert that never fires, a panel that stays empty).
    let deploy = Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy");
    let mut texts = vec![std::fs::read_to_string(deploy.join("prometheus/alerts.yml")).unwrap()];
    for entry in std::fs::read_dir(deploy.join("grafana/dashboards")).unwrap() {
        texts.push(std::fs::read_to_string(entry.unwrap().path()).unwrap());
    }
    let exposed = format!("{o}{r}{s}");
    let used: Vec<&str> = texts
        .iter()
        .flat_map(|t| t.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_')))
        .filter(|w| w.starts_with("courseway_"))
        .collect();
    assert!(!used.is_empty());
    // A family whose series come with data this run has none of (showings ahead, station
    // heartbeats at the origin) counts by its `# TYPE` line.
    for name in used {
        let family = format!("# TYPE {name} ");
        assert!(
            exposed.lines().any(|l| {
                (l.starts_with(name) && l[name.len()..].starts_with([' ', '{'])) || l.starts_with(&family)
            }),
            "deploy/ uses the metric {name}, which no node exposes"
        );
    }
    // SIGHUP: the station reads its config again and puts a closed bandwidth window in force
    // (its downloads gate shuts); a broken config is refused and the settings stay; the origin
    // and relay keep running (they read their config only at start).
    assert_eq!(sample(&s, "courseway_station_downloads_allowed"), 1.0);
    let hup = |node: &Node| {
        let pid = node.child.id().to_string();
        assert!(Command::new("kill").args(["-HUP", &pid]).status().unwrap().success());
    };
    let closed = std::fs::read_to_string(&station_toml).unwrap() + "[station.bandwidth]\ndefault_share_percent = 0\n";
    std::fs::write(&station_toml, &closed).unwrap();
    hup(&station);
    station.wait_for(&["config reloaded"], Duration::from_secs(30));
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while sample(&scrape(&station_metrics), "courseway_station_downloads_allowed") != 0.0 {
        assert!(
            std::time::Instant::now() < deadline,
            "the reloaded window never closed the gate"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    std::fs::write(&station_toml, closed.replace("= 0\n", "= 250\n")).unwrap();
    hup(&station);
    hup(&relay);
    hup(&origin);
    std::thread::sleep(Duration::from_secs(1));
    assert_eq!(
        sample(&scrape(&station_metrics), "courseway_station_downloads_allowed"),
        0.0
    );
    station.stop();
    relay.stop();
    origin.stop();

    // Every chunk of both lessons is in the station's store, byte for byte.
    let store = Store::open(StoreConfig::new(d.join("station-store"), 1 << 30)).unwrap();
    for i in 1..=2u64 {
        let id = LessonId::new(format!("synthetic-{i:03}")).unwrap();
        let lesson = SyntheticLesson::of_size(id, i, 2_000_000).build();
        for (chunk, bytes) in &lesson.chunks {
            assert_eq!(
                store.get(chunk, 0).unwrap().as_deref(),
                Some(bytes.as_slice()),
                "chunk {chunk}"
            );
        }
    }
    assert!(store.verify_all().unwrap().is_clean());
}

#[test]
fn a_bad_config_is_refused_naming_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let config = write(
        &dir.path().join("station.toml"),
        "[node]\ncredentials = \"keys\"\n[store]\npath = \"s\"\nbudget = \"1 GiB\"\n\
         [[parent]]\nname = \"district-07\"\naddr = \"127.0.0.1:7400\"\n[station]\nrate_limit = \"2 MB/s\"\n",
    );
    let out = Command::new(courseway())
        .args(["station", "--config", config.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("rate_limit") && stderr.contains("Mbit/s"), "{stderr}");

    // Credentials that are missing: the error says how to make them.
    let config = write(
        &dir.path().join("station.toml"),
        "[node]\ncredentials = \"keys\"\n[store]\npath = \"s\"\nbudget = \"1 GiB\"\n\
         [[parent]]\nname = \"district-07\"\naddr = \"127.0.0.1:7400\"\n",
    );
    let out = Command::new(courseway())
        .args(["station", "--config", config.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("courseway keys issue --role station"), "{stderr}");
}

#[test]
fn json_logs_are_one_object_per_line() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let deployment = d.join("deployment");
    run_ok(&["keys", "init", "--dir", deployment.to_str().unwrap()]);
    run_ok(&[
        "keys",
        "issue",
        "--keys",
        deployment.to_str().unwrap(),
        "--role",
        "origin",
        "--name",
        "origin",
        "--out",
        d.join("origin").to_str().unwrap(),
    ]);
    let config = write(
        &d.join("origin.toml"),
        "[node]\ncredentials = \"origin\"\nlisten = \"127.0.0.1:0\"\n\
         [store]\npath = \"origin-store\"\nbudget = \"1 GiB\"\n\
         [origin]\nonline_key = \"deployment/online.key\"\nsynthetic_lessons = 1\nsynthetic_lesson_size = \"1 MB\"\n",
    );
    let mut child = Command::new(courseway())
        .args(["--log-format", "json", "origin", "--config", config.to_str().unwrap()])
        .env("RUST_LOG", "info")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let mut lines = BufReader::new(stderr).lines();
    // Publishing the synthetic lesson logs "published" at info.
    let published = loop {
        let line = lines.next().expect("the origin logged nothing").unwrap();
        let event: serde_json::Value =
            serde_json::from_str(&line).unwrap_or_else(|e| panic!("not a JSON object ({e}): {line}"));
        assert!(event["level"].is_string() && event["timestamp"].is_string(), "{line}");
        if event["message"] == "published" {
            break event;
        }
    };
    assert_eq!(published["version"], 1);
    let _ = child.kill();
    let _ = child.wait();
}
