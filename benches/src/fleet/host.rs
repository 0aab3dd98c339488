//! Station hosts: when one process cannot open enough files for every station, the harness
//! starts this binary again as `fleet host JSON` for a range of stations. The host builds the
//! same [`StationSet`] the in-process run does, and talks to the harness in lines:
//!
//! ```text
//! host → harness: ready
//! harness → host: go                    (t = 0: the origin publishes right after)
//! host → harness: done <station> <seconds since go>   (one per station)
//! host → harness: finished
//! host → harness: report <json>         (mismatched chunks, link counters, CPU by thread)
//! harness → host: stop
//! ```

use std::collections::BTreeMap;
use std::io::{BufRead, Write};
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use courseway_content::NodeName;
use courseway_node::Parent;
use serde_json::{json, Value};
use tokio::sync::mpsc;

use super::courseway::{load_keys, StationSet};
use super::{procfs, FleetConfig};

/// What a host reports after its stations finished.
#[derive(Debug, Clone, Default)]
pub struct Report {
    pub mismatches: usize,
    pub lost: u64,
    pub queue_dropped: u64,
    pub forwarded: u64,
    pub cpu_by_thread: BTreeMap<String, f64>,
}

/// The harness's handle on one host process.
#[derive(Debug)]
pub struct Host {
    child: Child,
    stdin: ChildStdin,
    lines: mpsc::UnboundedReceiver<String>,
    range: std::ops::Range<usize>,
}

impl Host {
    /// Starts `fleet host` for stations `range`.
    pub fn spawn(
        config: &FleetConfig,
        lesson_bytes: u64,
        keys_file: &Path,
        parents: &[Parent],
        range: std::ops::Range<usize>,
        dir: &Path,
    ) -> Result<Self> {
        let spec = json!({
            "cities": config.cities, "towns": config.towns, "stations": config.stations,
            "rate_bps": config.rate_bps, "delay_ms": config.delay.as_millis() as u64, "loss": config.loss,
            "queue_ms": config.queue.as_millis() as u64, "memtable_bytes": config.memtable_bytes,
            "timeout_s": config.timeout.as_secs(),
            "stations_know_their_line": config.stations_know_their_line,
            "keys": keys_file, "dir": dir,
            "parents": parents.iter().map(|p| json!([p.name.as_str(), p.addr.to_string()])).collect::<Vec<_>>(),
            "first": range.start, "end": range.end,
            "lesson_bytes": lesson_bytes, "lesson_seed": config.lesson_seed,
        });
        let mut child = Command::new(std::env::current_exe()?)
            .arg("host")
            .arg(spec.to_string())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .context("starting a station host")?;
        let stdin = child.stdin.take().context("host stdin")?;
        let stdout = child.stdout.take().context("host stdout")?;
        let (tx, lines) = mpsc::unbounded_channel();
        std::thread::spawn(move || {
            for line in std::io::BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Ok(Self {
            child,
            stdin,
            lines,
            range,
        })
    }

    pub fn pid(&self) -> String {
        self.child.id().to_string()
    }

    pub fn label(&self) -> String {
        format!("station host {}..{}", self.range.start, self.range.end)
    }

    pub fn open_fds(&self) -> usize {
        std::fs::read_dir(format!("/proc/{}/fd", self.child.id())).map_or(0, |d| d.count())
    }

    async fn line(&mut self) -> Result<String> {
        self.lines
            .recv()
            .await
            .context("a station host ended early (see its log above)")
    }

    /// Waits for the line `word`.
    pub async fn expect(&mut self, word: &str) -> Result<()> {
        let line = self.line().await?;
        if line != word {
            bail!("station host said {line:?}, expected {word:?}");
        }
        Ok(())
    }

    pub fn send(&mut self, line: &str) -> Result<()> {
        writeln!(self.stdin, "{line}")?;
        self.stdin.flush()?;
        Ok(())
    }

    /// Reads `done` lines into `done` and `line_bytes` until `finished`, then the report.
    pub async fn collect(
        &mut self,
        done: &mut [Option<f64>],
        line_bytes: &mut [u64],
        report: &mut Report,
    ) -> Result<()> {
        loop {
            let line = self.line().await?;
            let mut f = line.split_whitespace();
            match f.next() {
                Some("done") => {
                    let i: usize = f.next().context("station")?.parse()?;
                    let t: f64 = f.next().context("time")?.parse()?;
                    line_bytes[i] = f.next().context("line bytes")?.parse()?;
                    done[i] = Some(t);
                }
                Some("finished") => break,
                _ => bail!("station host said {line:?}"),
            }
        }
        let line = self.line().await?;
        let v: Value = serde_json::from_str(line.strip_prefix("report ").context("a report")?)?;
        report.mismatches += v["mismatches"].as_u64().unwrap_or(0) as usize;
        report.lost += v["lost"].as_u64().unwrap_or(0);
        report.queue_dropped += v["queue_dropped"].as_u64().unwrap_or(0);
        report.forwarded += v["forwarded"].as_u64().unwrap_or(0);
        if let Some(threads) = v["cpu_by_thread"].as_object() {
            for (k, cpu) in threads {
                *report.cpu_by_thread.entry(k.clone()).or_insert(0.0) += cpu.as_f64().unwrap_or(0.0);
            }
        }
        Ok(())
    }

    /// Tells the host to stop its stations and waits for it.
    pub async fn stop(mut self) {
        let _ = self.send("stop");
        let _ = tokio::task::spawn_blocking(move || self.child.wait()).await;
    }
}

fn read_stdin_line() -> String {
    let mut line = String::new();
    let _ = std::io::stdin().lock().read_line(&mut line);
    line.trim().to_string()
}

/// The host's side: `fleet host JSON`.
pub async fn serve(spec: &str) -> Result<()> {
    let v: Value = serde_json::from_str(spec)?;
    let u = |k: &str| v[k].as_u64().with_context(|| format!("host spec: {k}"));
    let config = FleetConfig {
        cities: u("cities")? as usize,
        towns: u("towns")? as usize,
        stations: u("stations")? as usize,
        rate_bps: u("rate_bps")?,
        delay: Duration::from_millis(u("delay_ms")?),
        loss: v["loss"].as_f64().context("loss")?,
        queue: Duration::from_millis(u("queue_ms")?),
        memtable_bytes: u("memtable_bytes")? as usize,
        stations_know_their_line: v["stations_know_their_line"]
            .as_bool()
            .context("host spec: stations_know_their_line")?,
        timeout: Duration::from_secs(u("timeout_s")?),
        lesson_seed: u("lesson_seed")?,
    };
    let keys = load_keys(&std::fs::read_to_string(v["keys"].as_str().context("keys")?)?)?;
    let dir = Path::new(v["dir"].as_str().context("dir")?).to_path_buf();
    let parents = v["parents"]
        .as_array()
        .context("parents")?
        .iter()
        .map(|p| {
            Ok(Parent {
                name: NodeName::new(p[0].as_str().context("parent name")?)?,
                addr: p[1].as_str().context("parent addr")?.parse::<SocketAddr>()?,
            })
        })
        .collect::<Result<Vec<_>>>()?;
    let range = u("first")? as usize..u("end")? as usize;
    let lesson = super::lesson(u("lesson_bytes")?, config.lesson_seed);
    let mut set = StationSet::start(&config, &keys, &parents, range, &dir).await?;
    println!("ready");
    let go = tokio::task::spawn_blocking(read_stdin_line).await?;
    if go != "go" {
        bail!("expected go, got {go:?}");
    }
    let t0 = Instant::now();
    let threads_before = procfs::threads_cpu();
    let mut done = vec![None; config.stations];
    let mut line_bytes = vec![0; config.stations];
    set.wait(1, t0, config.timeout, &mut done, &mut line_bytes, |i, t, bytes| {
        println!("done {i} {t} {bytes}")
    })
    .await;
    println!("finished");
    let cpu_by_thread = procfs::threads_delta(&threads_before, &procfs::threads_cpu());
    let mismatches = set.verify(&lesson, &done);
    let (lost, queue_dropped, forwarded) = set.link_stats();
    println!(
        "report {}",
        json!({"mismatches": mismatches, "lost": lost, "queue_dropped": queue_dropped,
               "forwarded": forwarded, "cpu_by_thread": cpu_by_thread})
    );
    let _ = tokio::task::spawn_blocking(read_stdin_line).await?;
    set.shutdown().await;
    Ok(())
}
