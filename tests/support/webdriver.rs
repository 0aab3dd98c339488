//! Headless Chromium driven through chromedriver's W3C WebDriver protocol: JSON over HTTP on
//! loopback, so the tests need no WebDriver crate (the protocol calls the browser tests make
//! are a handful: new session, navigate, execute a script, send keys).
//!
//! Chromium runs with a fresh profile and with every background service off
//! (`--disable-background-networking` and friends), so it never tries to reach the internet.

use std::net::{SocketAddr, TcpListener};
use std::os::unix::process::CommandExt;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use hyper::body::Bytes;
use hyper::{Method, StatusCode};
use serde_json::{json, Value};

use crate::http::Device;

/// Where Debian's `chromium` and `chromium-driver` packages put them.
pub const CHROMIUM: &str = "/usr/bin/chromium";
pub const CHROMEDRIVER: &str = "/usr/bin/chromedriver";

/// WebDriver key codes.
pub const ARROW_DOWN: &str = "\u{E015}";
pub const ARROW_LEFT: &str = "\u{E012}";
pub const ARROW_RIGHT: &str = "\u{E014}";
pub const ENTER: &str = "\u{E007}";
pub const ESCAPE: &str = "\u{E00C}";

/// A chromedriver process and one browser session; both end on drop.
#[derive(Debug)]
pub struct Browser {
    driver: Child,
    addr: SocketAddr,
    session: String,
    profile: tempfile::TempDir,
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

impl Browser {
    /// Starts chromedriver and a headless Chromium (panics naming the package when either is
    /// missing: `scripts/ensure-deps.sh` installs them).
    pub async fn start() -> Browser {
        for (path, package) in [(CHROMIUM, "chromium"), (CHROMEDRIVER, "chromium-driver")] {
            assert!(
                std::path::Path::new(path).exists(),
                "{path} is missing: install Debian's {package} package (scripts/ensure-deps.sh does)"
            );
        }
        let port = free_port();
        let driver = Command::new(CHROMEDRIVER)
            .arg(format!("--port={port}"))
            // Its own process group: Chromium and its helpers end with it (see Drop).
            .process_group(0)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start chromedriver");
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        let profile = tempfile::tempdir().unwrap();
        let mut browser = Browser {
            driver,
            addr,
            session: String::new(),
            profile,
        };
        // chromedriver answers /status once it listens.
        let started = std::time::Instant::now();
        while tokio::net::TcpStream::connect(addr).await.is_err() {
            assert!(
                started.elapsed() < Duration::from_secs(30),
                "chromedriver did not start listening"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        loop {
            if let Ok(Ok(a)) =
                tokio::time::timeout(Duration::from_secs(2), browser.raw(Method::GET, "/status", None)).await
            {
                if a["value"]["ready"] == json!(true) {
                    break;
                }
            }
            assert!(
                started.elapsed() < Duration::from_secs(30),
                "chromedriver did not start"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let args = vec![
            "--headless".to_string(),
            "--no-sandbox".into(),
            "--disable-gpu".into(),
            "--disable-quic".into(),
            "--no-first-run".into(),
            "--disable-background-networking".into(),
            "--disable-component-update".into(),
            "--disable-sync".into(),
            "--disable-dev-shm-usage".into(),
            "--window-size=1280,800".into(),
            format!("--user-data-dir={}", browser.profile.path().display()),
        ];
        let created = browser
            .raw(
                Method::POST,
                "/session",
                Some(json!({
                    "capabilities": {"alwaysMatch": {
                        "browserName": "chrome",
                        "goog:chromeOptions": {"binary": CHROMIUM, "args": args},
                    }}
                })),
            )
            .await
            .expect("a WebDriver session");
        browser.session = created["value"]["sessionId"]
            .as_str()
            .unwrap_or_else(|| panic!("no session: {created}"))
            .to_string();
        browser
    }

    async fn raw(&self, method: Method, path: &str, body: Option<Value>) -> Result<Value, String> {
        let device = Device::new([127, 0, 0, 1], "courseway-tests");
        let bytes = body.map(|b| Bytes::from(b.to_string())).unwrap_or_default();
        let a = device
            .send(self.addr, method, path, &[("content-type", "application/json")], bytes)
            .await;
        let v: Value = serde_json::from_slice(&a.body).map_err(|e| format!("{e}: {}", a.text()))?;
        if a.status != StatusCode::OK {
            return Err(format!("{path}: {} {v}", a.status));
        }
        Ok(v)
    }

    async fn call(&self, method: Method, what: &str, body: Option<Value>) -> Value {
        let path = format!("/session/{}/{what}", self.session);
        self.raw(method, &path, body)
            .await
            .unwrap_or_else(|e| panic!("WebDriver {what}: {e}"))["value"]
            .take()
    }

    /// Opens `url`.
    pub async fn goto(&self, url: &str) {
        self.call(Method::POST, "url", Some(json!({ "url": url }))).await;
    }

    /// Runs `script` (a function body; `return` gives the value) in the page.
    pub async fn eval(&self, script: &str) -> Value {
        self.call(
            Method::POST,
            "execute/sync",
            Some(json!({"script": script, "args": []})),
        )
        .await
    }

    /// Presses and releases `key` (a WebDriver key code or a character) as the keyboard would:
    /// trusted events, sent to the focused element.
    pub async fn press(&self, key: &str) {
        self.call(
            Method::POST,
            "actions",
            Some(json!({"actions": [{"type": "key", "id": "keyboard", "actions": [
                {"type": "keyDown", "value": key},
                {"type": "keyUp", "value": key},
            ]}]})),
        )
        .await;
    }

    /// Polls `script` until it returns `true`; panics naming `what` after `timeout` (a bound
    /// on a hang, not a figure the test checks), with what `report` says about the page.
    pub async fn wait_for(&self, what: &str, timeout: Duration, script: &str, report: &str) {
        let started = std::time::Instant::now();
        loop {
            if self.eval(script).await == json!(true) {
                return;
            }
            if started.elapsed() > timeout {
                let state = self.eval(report).await;
                panic!("timed out after {timeout:?} waiting for {what}; the page says: {state}");
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
}

impl Browser {
    /// Ends the session (Chromium quits) and chromedriver.
    pub async fn close(mut self) {
        let path = format!("/session/{}", self.session);
        let _ = self.raw(Method::DELETE, &path, None).await;
        self.session.clear();
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        // chromedriver's process group: chromedriver, Chromium and its helpers (all started by
        // this test, in a group of their own).
        let _ = Command::new("kill")
            .args(["-KILL", "--", &format!("-{}", self.driver.id())])
            .stderr(Stdio::null())
            .status();
        let _ = self.driver.wait();
    }
}
