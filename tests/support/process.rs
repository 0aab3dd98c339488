//! Nodes as separate `courseway` processes, for the tests that kill them.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc;
use std::time::Duration;

/// The `courseway` binary, built by `cargo test --workspace` beside the test executables.
pub fn courseway() -> PathBuf {
    let exe = std::env::current_exe().expect("the test executable's path");
    let dir = exe.parent().and_then(Path::parent).expect("target/<profile>");
    let bin = dir.join("courseway");
    assert!(
        bin.is_file(),
        "{} is missing: run the tests with `cargo test --workspace`",
        bin.display()
    );
    bin
}

/// Runs `courseway ARGS` to completion; panics with its stderr if it fails.
pub fn run_ok(args: &[&str]) -> Output {
    let out = Command::new(courseway()).args(args).output().expect("run courseway");
    assert!(
        out.status.success(),
        "courseway {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// `courseway keys init` in `dir/deployment`, then `keys issue` for each `(role, name)` into
/// `dir/NAME`.
pub fn deployment(dir: &Path, nodes: &[(&str, &str)]) {
    let deployment = dir.join("deployment");
    run_ok(&["keys", "init", "--dir", deployment.to_str().unwrap()]);
    for (role, name) in nodes {
        let out = dir.join(name);
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
}

/// A node process whose stdout lines arrive on a channel; SIGKILLed when dropped.
#[derive(Debug)]
pub struct NodeProcess {
    child: Child,
    lines: mpsc::Receiver<String>,
}

impl NodeProcess {
    /// `courseway ROLE --config CONFIG`, logging at `warn` to stderr (inherited).
    pub fn start(role: &str, config: &Path) -> Self {
        let mut child = Command::new(courseway())
            .args([role, "--config", config.to_str().unwrap()])
            .env("RUST_LOG", "warn")
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn courseway");
        let stdout = child.stdout.take().expect("piped stdout");
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

    /// Waits for a stdout line containing every one of `words`; returns it.
    pub fn wait_for(&self, words: &[&str], timeout: Duration) -> String {
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
    pub fn listen_addr(&self) -> String {
        let line = self.wait_for(&["listening on"], Duration::from_secs(30));
        line.split("listening on ")
            .nth(1)
            .and_then(|rest| rest.split_whitespace().next())
            .expect("an address after 'listening on'")
            .to_string()
    }

    /// The address from the "metrics on http://ADDR/metrics" line.
    pub fn metrics_addr(&self) -> String {
        let line = self.wait_for(&["metrics on http://"], Duration::from_secs(30));
        line.trim_start_matches("metrics on http://")
            .trim_end_matches("/metrics")
            .to_string()
    }

    /// SIGKILL, and reap.
    pub fn kill(mut self) {
        self.child.kill().expect("SIGKILL");
        let status = self.child.wait().expect("reap");
        assert!(!status.success(), "the node was killed, not finished");
    }

    /// SIGTERM, then the exit status must be success (a clean shutdown).
    pub fn stop(mut self) {
        let pid = self.child.id().to_string();
        assert!(Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .expect("kill -TERM")
            .success());
        let status = self.child.wait().expect("reap");
        assert!(status.success(), "node exited with {status} after SIGTERM");
    }
}

impl Drop for NodeProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `GET /metrics` over a plain TCP connection; the body.
pub fn scrape(addr: &str) -> String {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(addr).expect("connect to /metrics");
    stream
        .write_all(b"GET /metrics HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n")
        .expect("send the request");
    let mut response = String::new();
    stream.read_to_string(&mut response).expect("read the response");
    let (head, body) = response.split_once("\r\n\r\n").expect("an HTTP response");
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    body.to_string()
}

/// The value of the sample `series` (name with labels, exactly as exposed).
pub fn sample(metrics: &str, series: &str) -> f64 {
    metrics
        .lines()
        .find_map(|l| l.strip_prefix(series).and_then(|rest| rest.strip_prefix(' ')))
        .unwrap_or_else(|| panic!("no {series} in:\n{metrics}"))
        .trim()
        .parse()
        .expect("a number")
}

/// Every sample of the family `name` (any labels), summed.
pub fn family_sum(metrics: &str, name: &str) -> f64 {
    metrics
        .lines()
        .filter(|l| l.starts_with(name) && l[name.len()..].starts_with(['{', ' ']))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// A UDP port on loopback that was free a moment ago (for a node that must come back on the
/// same address after a kill).
pub fn free_udp_port() -> u16 {
    std::net::UdpSocket::bind("127.0.0.1:0")
        .and_then(|s| s.local_addr())
        .expect("bind a UDP socket on loopback")
        .port()
}
