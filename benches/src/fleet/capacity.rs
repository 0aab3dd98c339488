//! Serving capacity: one relay with the lesson cached serving 100 concurrent QUIC clients, then
//! one nginx serving the same chunks as files over HTTPS (a self-signed certificate, TLS 1.3) to
//! 100 concurrent clients; loopback, no link emulation, each for the same fixed time.
//!
//! Both servers and their clients share this machine's two cores: the figure is what a server
//! delivers while its clients also run, so the ratio matters more than either figure.

use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr};
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use courseway::topology::DeploymentKeys;
use courseway_content::synthetic::BuiltLesson;
use courseway_content::{ChunkId, NodeName};
use courseway_net::{Client, TransportConfig};
use courseway_node::{Parent, UpstreamConfig};
use courseway_origin::{Origin, OriginConfig};
use courseway_proto::{GetChunk, Role};
use courseway_relay::{Relay, RelayConfig};
use courseway_store::StoreConfig;
use serde_json::{json, Value};

use super::nginx::{free_addr, write_files, Nginx};
use super::{lesson_bytes, procfs};

fn loopback() -> SocketAddr {
    SocketAddr::from((Ipv4Addr::LOCALHOST, 0))
}

/// One side's result.
#[derive(Debug, Clone)]
pub struct Side {
    pub bytes: u64,
    pub seconds: f64,
    pub errors: u64,
    /// CPU seconds of the server (the relay: this process minus the clients is not separable,
    /// so for Courseway this is the whole process; for nginx, its processes).
    pub server_cpu_s: f64,
    pub process_cpu_s: f64,
}

impl Side {
    pub fn mbyte_per_s(&self) -> f64 {
        self.bytes as f64 / self.seconds / 1e6
    }

    pub fn to_json(&self) -> Value {
        json!({
            "bytes": self.bytes, "seconds": self.seconds, "errors": self.errors,
            "mbyte_per_s": self.mbyte_per_s(),
            "server_cpu_s": self.server_cpu_s, "this_process_cpu_s": self.process_cpu_s,
        })
    }
}

/// A relay holding `lesson`, 100 (or `clients`) QUIC clients asking it for chunks round-robin.
pub async fn relay(lesson: &BuiltLesson, dir: &Path, clients: usize, duration: Duration) -> Result<Side> {
    let keys = DeploymentKeys::generate()?;
    let origin_name = NodeName::new("origin")?;
    let origin = Origin::start(
        OriginConfig {
            name: origin_name.clone(),
            listen: loopback(),
            store: StoreConfig::new(dir.join("origin"), 4 << 30),
            transport: TransportConfig::default(),
            catalog_validity: Duration::from_secs(86_400),
        },
        keys.enroll(Role::Origin, &origin_name)?,
        keys.online_key(courseway_node::clock::now()),
    )
    .await?;
    let relay_name = NodeName::new("relay")?;
    let relay = Relay::start(
        RelayConfig::new(
            relay_name.clone(),
            loopback(),
            StoreConfig::new(dir.join("relay"), 4 << 30),
            UpstreamConfig::new(vec![Parent {
                name: origin_name,
                addr: origin.local_addr()?,
            }]),
        ),
        keys.enroll(Role::Relay, &relay_name)?,
        keys.root_public(),
    )
    .await?;
    origin.publish(&[(lesson.manifest.clone(), &lesson.chunks)])?;
    // The relay prefetches what is published: wait until it holds every chunk.
    let want = lesson_bytes(lesson);
    let deadline = Instant::now() + Duration::from_secs(120);
    while relay.stats().bytes_fetched < want {
        if Instant::now() > deadline {
            bail!("the relay did not prefetch the lesson");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let addr = relay.local_addr()?;
    let ids: Arc<Vec<ChunkId>> = Arc::new(lesson.chunks.keys().copied().collect());
    let mut connections = Vec::new();
    for c in 0..clients {
        let name = NodeName::new(format!("cap-{c:03}"))?;
        let client = Client::bind(
            keys.enroll(Role::Station, &name)?,
            &TransportConfig::default(),
            loopback(),
        )?;
        let conn = client.connect(addr, &relay_name).await?;
        connections.push((client, conn));
    }
    let cpu_before = procfs::process_cpu("self");
    let t0 = Instant::now();
    let until = t0 + duration;
    let mut tasks = tokio::task::JoinSet::new();
    for (c, (client, conn)) in connections.into_iter().enumerate() {
        let ids = ids.clone();
        tasks.spawn(async move {
            let (mut bytes, mut errors) = (0u64, 0u64);
            let mut k = c;
            while Instant::now() < until {
                let id = ids[k % ids.len()];
                k += 1;
                match conn.fetch_chunk(GetChunk { id, offset: 0 }).await {
                    Ok((_, body)) => bytes += body.len() as u64,
                    Err(_) => errors += 1,
                }
            }
            drop(client);
            (bytes, errors)
        });
    }
    let (mut bytes, mut errors) = (0, 0);
    while let Some(r) = tasks.join_next().await {
        let (b, e) = r?;
        bytes += b;
        errors += e;
    }
    let seconds = t0.elapsed().as_secs_f64();
    let process_cpu_s = procfs::process_cpu("self") - cpu_before;
    drop(relay);
    origin.shutdown();
    Ok(Side {
        bytes,
        seconds,
        errors,
        server_cpu_s: process_cpu_s,
        process_cpu_s,
    })
}

/// Reads one response's body (counted, discarded) from a keep-alive TLS stream.
fn read_response(s: &mut impl Read, buf: &mut [u8]) -> Result<u64> {
    let mut head = Vec::new();
    let (split, got) = loop {
        let n = s.read(buf)?;
        if n == 0 {
            bail!("closed in the header");
        }
        head.extend_from_slice(&buf[..n]);
        if let Some(p) = head.windows(4).position(|w| w == b"\r\n\r\n") {
            break (p + 4, head.len());
        }
    };
    let text = String::from_utf8_lossy(&head[..split]).to_ascii_lowercase();
    if !text.starts_with("http/1.1 200") {
        bail!("{}", text.lines().next().unwrap_or_default());
    }
    let len: u64 = text
        .lines()
        .find_map(|l| l.strip_prefix("content-length:"))
        .context("no content-length")?
        .trim()
        .parse()?;
    let mut have = (got - split) as u64;
    while have < len {
        let want = ((len - have) as usize).min(buf.len());
        let n = s.read(&mut buf[..want])?;
        if n == 0 {
            bail!("closed in the body");
        }
        have += n as u64;
    }
    Ok(len)
}

/// nginx over HTTPS (2 workers, as the relay has 2 runtime threads) serving the chunk files,
/// `clients` threads each with one keep-alive TLS connection asking round-robin.
pub fn nginx_https(lesson: &BuiltLesson, dir: &Path, clients: usize, duration: Duration) -> Result<Side> {
    let files = dir.join("files");
    write_files(lesson, &files)?;
    let cert = rcgen::generate_simple_self_signed(vec!["localhost".to_string()])?;
    std::fs::create_dir_all(dir)?;
    std::fs::write(dir.join("cert.pem"), cert.cert.pem())?;
    std::fs::write(dir.join("key.pem"), cert.signing_key.serialize_pem())?;
    let addr = free_addr(Ipv4Addr::new(127, 0, 4, 1))?;
    let server = format!(
        "    ssl_certificate {d}/cert.pem;\n    ssl_certificate_key {d}/key.pem;\n    ssl_protocols TLSv1.3;\n\
         ssl_session_cache shared:ssl:10m;\n    location / {{ root {f}; }}\n",
        d = dir.display(),
        f = files.display()
    );
    // `listen ADDR ssl`: Nginx::start writes `listen ADDR;`, so the address carries the flag.
    let nginx = Nginx::start_with_listen(&dir.join("nginx"), addr, &format!("{addr} ssl"), 2, "", &server)?;

    let mut roots = rustls::RootCertStore::empty();
    roots.add(cert.cert.der().clone())?;
    let config = Arc::new(
        rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()?
            .with_root_certificates(roots)
            .with_no_client_auth(),
    );
    let ids: Arc<Vec<String>> = Arc::new(lesson.chunks.keys().map(ChunkId::to_string).collect());
    let nginx_cpu_before = nginx.cpu_s();
    let cpu_before = procfs::process_cpu("self");
    let t0 = Instant::now();
    let until = t0 + duration;
    let threads: Vec<_> = (0..clients)
        .map(|c| {
            let (config, ids) = (config.clone(), ids.clone());
            std::thread::spawn(move || -> Result<(u64, u64)> {
                let tcp = std::net::TcpStream::connect(addr)?;
                let name = rustls::pki_types::ServerName::try_from("localhost")?.to_owned();
                let mut tls = rustls::StreamOwned::new(rustls::ClientConnection::new(config, name)?, tcp);
                let mut buf = vec![0u8; 64 * 1024];
                let (mut bytes, mut errors) = (0, 0);
                let mut k = c;
                while Instant::now() < until {
                    let id = &ids[k % ids.len()];
                    k += 1;
                    tls.write_all(format!("GET /{id} HTTP/1.1\r\nHost: localhost\r\n\r\n").as_bytes())?;
                    match read_response(&mut tls, &mut buf) {
                        Ok(n) => bytes += n,
                        Err(_) => {
                            errors += 1;
                            break;
                        }
                    }
                }
                Ok((bytes, errors))
            })
        })
        .collect();
    let (mut bytes, mut errors) = (0, 0);
    for t in threads {
        match t.join() {
            Ok(Ok((b, e))) => {
                bytes += b;
                errors += e;
            }
            _ => errors += 1,
        }
    }
    let seconds = t0.elapsed().as_secs_f64();
    Ok(Side {
        bytes,
        seconds,
        errors,
        server_cpu_s: nginx.cpu_s() - nginx_cpu_before,
        process_cpu_s: procfs::process_cpu("self") - cpu_before,
    })
}
