//! The nginx side: the same lesson as files, an origin nginx → city nginx (proxy_cache with
//! proxy_cache_lock) → town nginx (the same) → one HTTP/1.1 client per station.
//!
//! Every nginx listens on its own 127.0.x.y address, runs as this user with its config, logs,
//! cache and temp files under one directory (`nginx -p DIR -c DIR/nginx.conf`). The clients run
//! in this process: each station's client keeps two keep-alive connections (as a station fetches
//! two chunks at a time), sleeps one round trip before each request and reads through a token
//! bucket at the station's line rate with a 64 KiB receive buffer, so TCP's flow control holds
//! the town nginx to that rate. Loss is not emulated on these links (linkemu only carries UDP).

use std::collections::BTreeMap;
use std::io::ErrorKind;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use courseway_content::synthetic::BuiltLesson;
use courseway_content::ChunkId;
use serde_json::{json, Value};
use tokio::net::{TcpSocket, TcpStream};

use super::{lesson_bytes, procfs, ratio, ClassTimes, FleetConfig};

/// A free TCP port on `ip` (bound and released: nginx binds it a moment later).
pub fn free_addr(ip: Ipv4Addr) -> Result<SocketAddr> {
    let l = std::net::TcpListener::bind(SocketAddrV4::new(ip, 0))?;
    Ok(l.local_addr()?)
}

/// One running nginx.
#[derive(Debug)]
pub struct Nginx {
    child: Child,
    pub dir: PathBuf,
    pub addr: SocketAddr,
}

fn running_as_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Uid:"))
                .map(|l| l.split_whitespace().nth(2) == Some("0"))
        })
        .unwrap_or(false)
}

impl Nginx {
    /// Writes `DIR/nginx.conf` around `server_block` and `http_extra`, starts nginx, waits for
    /// it to accept on `addr`.
    pub fn start(dir: &Path, addr: SocketAddr, workers: usize, http_extra: &str, server_block: &str) -> Result<Self> {
        Self::start_with_listen(dir, addr, &addr.to_string(), workers, http_extra, server_block)
    }

    /// [`Nginx::start`] with the `listen` directive's argument given (e.g. `ADDR ssl`).
    pub fn start_with_listen(
        dir: &Path,
        addr: SocketAddr,
        listen: &str,
        workers: usize,
        http_extra: &str,
        server_block: &str,
    ) -> Result<Self> {
        std::fs::create_dir_all(dir)?;
        let d = dir.display();
        // As root, nginx's workers would switch to `nobody`, who cannot read a private temp dir.
        let user = if running_as_root() { "user root root;" } else { "" };
        let conf = format!(
            "worker_processes {workers};\n{user}\npid {d}/nginx.pid;\nerror_log {d}/error.log warn;\n\
             worker_rlimit_nofile 16384;\nevents {{ worker_connections 8192; }}\n\
             http {{\n  log_format fleet '$upstream_cache_status $body_bytes_sent $status';\n\
               sendfile on;\n  tcp_nopush on;\n  keepalive_requests 1000000;\n  keepalive_timeout 600s;\n\
               client_body_temp_path {d}/body;\n  proxy_temp_path {d}/proxy_temp;\n\
               default_type application/octet-stream;\n{http_extra}\n  server {{\n    listen {listen};\n\
                 access_log {d}/access.log fleet;\n{server_block}\n  }}\n}}\n"
        );
        let conf_path = dir.join("nginx.conf");
        std::fs::write(&conf_path, conf)?;
        let child = Command::new("nginx")
            .arg("-p")
            .arg(dir)
            .arg("-c")
            .arg(&conf_path)
            .args(["-g", "daemon off;"])
            .process_group(0)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("starting nginx (apt-get install nginx-light)")?;
        let mut nginx = Self {
            child,
            dir: dir.to_path_buf(),
            addr,
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(addr).is_err() {
            if let Some(status) = nginx.child.try_wait()? {
                let log = std::fs::read_to_string(dir.join("error.log")).unwrap_or_default();
                bail!("nginx in {} exited ({status}): {log}", dir.display());
            }
            if Instant::now() > deadline {
                bail!("nginx in {} does not listen on {addr}", dir.display());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(nginx)
    }

    fn pids(&self) -> Vec<String> {
        let master = self.child.id().to_string();
        let mut pids = procfs::children(&master);
        pids.push(master);
        pids
    }

    /// CPU seconds of the master and its workers so far.
    pub fn cpu_s(&self) -> f64 {
        self.pids().iter().map(|p| procfs::single_thread_cpu(p)).sum()
    }

    /// Peak RSS of the master and its workers, summed.
    pub fn peak_rss(&self) -> u64 {
        self.pids().iter().map(|p| procfs::status_kb(p, "VmHWM")).sum()
    }

    /// The access log: (cache status, body bytes) per request.
    pub fn access_log(&self) -> Vec<(String, u64)> {
        std::fs::read_to_string(self.dir.join("access.log"))
            .unwrap_or_default()
            .lines()
            .filter_map(|l| {
                let mut f = l.split_whitespace();
                Some((f.next()?.to_string(), f.next()?.parse().ok()?))
            })
            .collect()
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        // nginx runs in a process group of its own: TERM the group (master, workers, cache
        // manager and loader), then KILL whatever is left of it.
        let group = format!("-{}", self.child.id());
        let _ = Command::new("kill").args(["-TERM", "--", &group]).status();
        let deadline = Instant::now() + Duration::from_secs(3);
        while Instant::now() < deadline && !matches!(self.child.try_wait(), Ok(Some(_))) {
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = Command::new("kill")
            .args(["-KILL", "--", &group])
            .stderr(Stdio::null())
            .status();
        let _ = self.child.wait();
    }
}

/// A caching tier's `http` and `server` blocks, proxying to `upstream`.
fn cache_blocks(dir: &Path, upstream: SocketAddr) -> (String, String) {
    let d = dir.display();
    (
        format!(
            "  proxy_cache_path {d}/cache levels=1:2 keys_zone=fleet:16m max_size=8g inactive=1d use_temp_path=off;\n\
             upstream parent {{ server {upstream}; keepalive 64; }}\n"
        ),
        "    location / {\n      proxy_pass http://parent;\n      proxy_http_version 1.1;\n\
               proxy_set_header Connection \"\";\n      proxy_cache fleet;\n      proxy_cache_lock on;\n\
               proxy_cache_lock_timeout 1h;\n      proxy_cache_lock_age 1h;\n      proxy_cache_valid 200 1d;\n    }\n"
            .to_string(),
    )
}

/// Writes every chunk as a file named by its id (hex) under `dir`.
pub fn write_files(lesson: &BuiltLesson, dir: &Path) -> Result<()> {
    std::fs::create_dir_all(dir)?;
    for (id, bytes) in &lesson.chunks {
        std::fs::write(dir.join(id.to_string()), bytes)?;
    }
    Ok(())
}

/// A token bucket shared by one station's connections.
#[derive(Debug)]
struct Bucket {
    bytes_per_sec: f64,
    burst: f64,
    state: Mutex<(f64, Instant)>,
}

impl Bucket {
    fn new(bits_per_sec: u64) -> Self {
        let bytes_per_sec = bits_per_sec as f64 / 8.0;
        let burst = (bytes_per_sec * 0.05).max(4096.0);
        Self {
            bytes_per_sec,
            burst,
            state: Mutex::new((burst, Instant::now())),
        }
    }

    /// Takes `n` bytes; returns how long to wait before they may be used.
    fn take(&self, n: usize) -> Duration {
        let mut s = self.state.lock().expect("bucket lock");
        let now = Instant::now();
        s.0 = (s.0 + now.duration_since(s.1).as_secs_f64() * self.bytes_per_sec).min(self.burst);
        s.1 = now;
        s.0 -= n as f64;
        if s.0 >= 0.0 {
            Duration::ZERO
        } else {
            Duration::from_secs_f64(-s.0 / self.bytes_per_sec)
        }
    }
}

async fn write_all(s: &TcpStream, mut buf: &[u8]) -> std::io::Result<()> {
    while !buf.is_empty() {
        s.writable().await?;
        match s.try_write(buf) {
            Ok(n) => buf = &buf[n..],
            Err(e) if e.kind() == ErrorKind::WouldBlock => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

async fn read_some(s: &TcpStream, buf: &mut [u8]) -> std::io::Result<usize> {
    loop {
        s.readable().await?;
        match s.try_read(buf) {
            Ok(n) => return Ok(n),
            Err(e) if e.kind() == ErrorKind::WouldBlock => {}
            Err(e) => return Err(e),
        }
    }
}

async fn connect(addr: SocketAddr) -> std::io::Result<TcpStream> {
    let socket = TcpSocket::new_v4()?;
    socket.set_recv_buffer_size(64 * 1024)?;
    socket.connect(addr).await
}

/// GET `/{id}` on a keep-alive connection, reading through the bucket; the body.
async fn get(s: &TcpStream, id: &ChunkId, bucket: &Bucket) -> Result<Vec<u8>> {
    write_all(s, format!("GET /{id} HTTP/1.1\r\nHost: fleet\r\n\r\n").as_bytes()).await?;
    let mut buf = vec![0u8; 16 * 1024];
    let mut head = Vec::new();
    let split = loop {
        let n = read_some(s, &mut buf).await?;
        if n == 0 {
            bail!("connection closed in the header");
        }
        tokio::time::sleep(bucket.take(n)).await;
        head.extend_from_slice(&buf[..n]);
        if let Some(p) = head.windows(4).position(|w| w == b"\r\n\r\n") {
            break p + 4;
        }
    };
    let text = String::from_utf8_lossy(&head[..split]).to_ascii_lowercase();
    if !text.starts_with("http/1.1 200") {
        bail!("{}", text.lines().next().unwrap_or_default());
    }
    let len: usize = text
        .lines()
        .find_map(|l| l.strip_prefix("content-length:"))
        .context("no content-length")?
        .trim()
        .parse()?;
    let mut body = head.split_off(split);
    while body.len() < len {
        let want = (len - body.len()).min(buf.len());
        let n = read_some(s, &mut buf[..want]).await?;
        if n == 0 {
            bail!("connection closed in the body");
        }
        tokio::time::sleep(bucket.take(n)).await;
        body.extend_from_slice(&buf[..n]);
    }
    Ok(body)
}

/// One station: two connections take the chunks in order; returns mismatched chunks.
async fn station(
    addr: SocketAddr,
    rate_bps: u64,
    rtt: Duration,
    chunks: Arc<Vec<(ChunkId, Vec<u8>)>>,
) -> Result<usize> {
    let bucket = Arc::new(Bucket::new(rate_bps));
    let next = Arc::new(AtomicUsize::new(0));
    let mut workers = tokio::task::JoinSet::new();
    for _ in 0..2 {
        let (bucket, next, chunks) = (bucket.clone(), next.clone(), chunks.clone());
        workers.spawn(async move {
            let mut mismatches = 0;
            let mut conn: Option<TcpStream> = None;
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                let Some((id, want)) = chunks.get(i) else {
                    return Ok::<usize, anyhow::Error>(mismatches);
                };
                let mut attempts = 0;
                loop {
                    attempts += 1;
                    if conn.is_none() {
                        tokio::time::sleep(rtt).await; // the TCP handshake
                        conn = Some(connect(addr).await?);
                    }
                    tokio::time::sleep(rtt).await; // request out, first byte back
                    match get(conn.as_ref().expect("connected"), id, &bucket).await {
                        Ok(body) => {
                            if &body != want {
                                mismatches += 1;
                            }
                            break;
                        }
                        Err(e) if attempts < 5 => {
                            tracing::warn!(%addr, %id, "http fetch failed, retrying: {e:#}");
                            conn = None;
                        }
                        Err(e) => return Err(e),
                    }
                }
            }
        });
    }
    let mut mismatches = 0;
    while let Some(r) = workers.join_next().await {
        mismatches += r??;
    }
    Ok(mismatches)
}

/// What the nginx run measured.
#[derive(Debug, Clone)]
pub struct Outcome {
    pub lesson_bytes: u64,
    pub times: ClassTimes,
    pub identical: bool,
    pub mismatches: usize,
    pub failed_stations: usize,
    pub origin_bytes_sent: u64,
    pub city: Value,
    pub town: Value,
    /// CPU seconds of every nginx process from t = 0 to the last station.
    pub nginx_cpu_s: f64,
    /// CPU seconds of this process (the HTTP clients) over the same time.
    pub clients_cpu_s: f64,
    /// Peak RSS of every nginx process, summed.
    pub nginx_peak_rss_bytes: u64,
    pub clients_peak_rss_bytes: u64,
}

fn tier(instances: &[Nginx]) -> Value {
    let mut by_status: BTreeMap<String, u64> = BTreeMap::new();
    let mut bytes = 0;
    for n in instances {
        for (status, b) in n.access_log() {
            *by_status.entry(status).or_default() += 1;
            bytes += b;
        }
    }
    let total: u64 = by_status.values().sum();
    let hits = by_status.get("HIT").copied().unwrap_or(0);
    json!({"requests": total, "by_cache_status": by_status, "hit_ratio": ratio(hits, total), "bytes_served": bytes})
}

/// Starts the nginx tree under `dir`, lets every station's client fetch the lesson, measures,
/// stops nginx.
pub async fn run(config: &FleetConfig, lesson: &BuiltLesson, dir: &Path) -> Result<Outcome> {
    let files = dir.join("files");
    write_files(lesson, &files)?;
    let origin_addr = free_addr(Ipv4Addr::new(127, 0, 1, 1))?;
    let origin = Nginx::start(
        &dir.join("origin"),
        origin_addr,
        1,
        "",
        &format!("    location / {{ root {}; }}\n", files.display()),
    )?;
    let mut cities = Vec::new();
    for c in 0..config.cities {
        let d = dir.join(format!("city-{}", c + 1));
        let (http, server) = cache_blocks(&d, origin_addr);
        let addr = free_addr(Ipv4Addr::new(127, 0, 2, c as u8 + 1))?;
        cities.push(Nginx::start(&d, addr, 1, &http, &server)?);
    }
    let mut towns = Vec::new();
    for t in 0..config.towns {
        let d = dir.join(format!("town-{:02}", t + 1));
        let (http, server) = cache_blocks(&d, cities[t % cities.len()].addr);
        let addr = free_addr(Ipv4Addr::new(127, 0, 3, t as u8 + 1))?;
        towns.push(Nginx::start(&d, addr, 1, &http, &server)?);
    }
    let all = || std::iter::once(&origin).chain(&cities).chain(&towns);
    let chunks: Arc<Vec<(ChunkId, Vec<u8>)>> = Arc::new(
        lesson
            .manifest
            .renditions
            .iter()
            .flat_map(|r| r.segments.iter().flat_map(|s| s.chunks.iter()))
            .chain(lesson.manifest.attachments.iter().flat_map(|a| a.chunks.iter()))
            .map(|c| (c.id, lesson.chunks[&c.id].clone()))
            .collect(),
    );

    procfs::reset_peak_rss();
    let nginx_cpu_before: f64 = all().map(Nginx::cpu_s).sum();
    let self_cpu_before = procfs::process_cpu("self");
    let t0 = Instant::now();
    let rtt = config.delay * 2;
    let mut clients = tokio::task::JoinSet::new();
    for i in 0..config.stations {
        let addr = towns[i % towns.len()].addr;
        let rate = config.rate_of(i);
        let chunks = chunks.clone();
        let timeout = config.timeout;
        clients.spawn(async move {
            let r = tokio::time::timeout(timeout, station(addr, rate, rtt, chunks)).await;
            (i, r, t0.elapsed().as_secs_f64())
        });
    }
    let mut done: Vec<Option<f64>> = vec![None; config.stations];
    let (mut mismatches, mut failed) = (0, 0);
    let deadline = tokio::time::Instant::from_std(t0 + config.timeout);
    loop {
        let next = tokio::time::timeout_at(deadline, clients.join_next()).await;
        let Ok(Some(joined)) = next else { break };
        let (i, r, t) = joined?;
        match r {
            Ok(Ok(m)) => {
                mismatches += m;
                done[i] = Some(t);
            }
            Ok(Err(e)) => {
                tracing::warn!(station = i, "http station failed: {e:#}");
                failed += 1;
            }
            Err(_) => failed += 1,
        }
    }
    clients.abort_all();
    let nginx_cpu_s = all().map(Nginx::cpu_s).sum::<f64>() - nginx_cpu_before;
    let clients_cpu_s = procfs::process_cpu("self") - self_cpu_before;
    let mut times = ClassTimes::default();
    for (i, t) in done.iter().enumerate() {
        times.record(i, *t);
    }
    let origin_bytes_sent = origin.access_log().iter().map(|(_, b)| b).sum();
    Ok(Outcome {
        lesson_bytes: lesson_bytes(lesson),
        identical: mismatches == 0 && done.iter().all(Option::is_some),
        mismatches,
        failed_stations: failed,
        times,
        origin_bytes_sent,
        city: tier(&cities),
        town: tier(&towns),
        nginx_cpu_s,
        clients_cpu_s,
        nginx_peak_rss_bytes: all().map(Nginx::peak_rss).sum(),
        clients_peak_rss_bytes: procfs::status_kb("self", "VmHWM"),
    })
}
