//! The editor's and operator's path through the `courseway` binary against a running origin
//! process: `admin token create` (while the origin runs), `ingest` with a real media file,
//! `review list|reject|submit|approve`, `publish`, `lessons --search`, `schedule add|list`,
//! `withdraw`, and a refusal printing the server's reason.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use courseway_media::testsrc::{make_test_source, TestSource};

fn courseway() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let bin = exe.parent().and_then(Path::parent).unwrap().join("courseway");
    assert!(
        bin.is_file(),
        "{} is missing: run the tests with `cargo test --workspace`",
        bin.display()
    );
    bin
}

fn with<'a>(args: &[&'a str], auth: &[&'a str]) -> Vec<&'a str> {
    [args, auth].concat()
}

fn run(args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut c = Command::new(courseway());
    c.args(args)
        .env_remove("COURSEWAY_SERVER")
        .env_remove("COURSEWAY_TOKEN");
    for (k, v) in env {
        c.env(k, v);
    }
    c.output().unwrap()
}

fn run_ok(args: &[&str], env: &[(&str, &str)]) -> String {
    let out = run(args, env);
    assert!(
        out.status.success(),
        "courseway {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

struct Origin {
    child: Child,
    lines: mpsc::Receiver<String>,
}

impl Origin {
    fn wait_for(&self, prefix: &str) -> String {
        loop {
            let line = self
                .lines
                .recv_timeout(Duration::from_secs(60))
                .expect("the origin prints its addresses");
            if let Some(rest) = line.strip_prefix(prefix) {
                return rest.to_string();
            }
        }
    }
}

impl Drop for Origin {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn admin_cli_ingest_review_publish_schedule_withdraw() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let deployment = d.join("deployment");
    run_ok(&["keys", "init", "--dir", deployment.to_str().unwrap()], &[]);
    run_ok(
        &[
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
        ],
        &[],
    );
    let config = d.join("origin.toml");
    std::fs::write(
        &config,
        "[node]\ncredentials = \"origin\"\nlisten = \"127.0.0.1:0\"\n\
         [store]\npath = \"origin-store\"\nbudget = \"1 GiB\"\n\
         [origin]\nonline_key = \"deployment/online.key\"\n\
         [origin.admin]\nlisten = \"127.0.0.1:0\"\ndata = \"admin\"\nspool = \"spool\"\nmax_upload = \"64 MiB\"\n",
    )
    .unwrap();
    let mut child = Command::new(courseway())
        .args(["origin", "--config", config.to_str().unwrap()])
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let (tx, lines) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let origin = Origin { child, lines };
    let server = origin.wait_for("admin API on http://");

    // Tokens are made on the origin's machine while it runs.
    let c = config.to_str().unwrap();
    let token = |role: &str, name: &str| {
        run_ok(
            &[
                "admin", "token", "create", "--config", c, "--role", role, "--name", name,
            ],
            &[],
        )
        .trim()
        .to_string()
    };
    let (sam, rita, paul) = (
        token("submitter", "sam"),
        token("reviewer", "rita"),
        token("publisher", "paul"),
    );
    assert!(run_ok(&["admin", "token", "list", "--config", c], &[]).contains("rita"));

    let source = d.join("讲座.mp4");
    make_test_source(&source, &TestSource::video_audio(320, 240, 3)).unwrap();
    let as_sam = [("COURSEWAY_SERVER", server.as_str()), ("COURSEWAY_TOKEN", sam.as_str())];
    let out = run_ok(
        &[
            "ingest",
            source.to_str().unwrap(),
            "--title",
            "冬小麦病虫害防治",
            "--department",
            "农业局",
            "--category",
            "required",
            "--tags",
            "农业,小麦",
            "--submit",
        ],
        &as_sam,
    );
    let lesson = out.lines().last().unwrap().trim().to_string();
    assert!(lesson.starts_with("lesson-"), "{out}");

    let rev = ["--server", server.as_str(), "--token", rita.as_str()];
    let publ = ["--server", server.as_str(), "--token", paul.as_str()];
    assert!(run_ok(&with(&["review", "list"], &rev), &[]).contains(&lesson));
    // The reviewer sends it back; the submitter submits again; both steps then pass.
    assert!(run_ok(
        &with(&["review", "reject", &lesson, "--comment", "请写明第几讲"], &rev),
        &[]
    )
    .contains("rejected"));
    assert!(run_ok(&["review", "submit", &lesson], &as_sam).contains("submitted"));
    assert!(run_ok(&with(&["review", "approve", &lesson], &rev), &[]).contains("reviewed"));
    // A submitter cannot publish: the command fails with the server's reason.
    let refused = run(&["publish", &lesson], &as_sam);
    assert!(!refused.status.success());
    let err = String::from_utf8_lossy(&refused.stderr);
    assert!(err.contains("403") && err.contains("may not publish"), "{err}");
    assert!(run_ok(&with(&["review", "approve", &lesson], &publ), &[]).contains("approved"));
    let published = run_ok(&with(&["publish", &lesson], &publ), &[]);
    assert!(published.contains("published (catalog v1)"), "{published}");

    let found = run_ok(&["lessons", "--search", "小麦"], &as_sam);
    assert!(found.contains(&lesson) && found.contains("published"), "{found}");
    assert!(run_ok(&["lessons", "--search", "no-such-lesson"], &as_sam)
        .trim()
        .is_empty());

    let added = run_ok(
        &with(
            &[
                "schedule",
                "add",
                &lesson,
                "--at",
                "2026-12-01 19:30",
                "--target",
                "town:town-1",
            ],
            &publ,
        ),
        &[],
    );
    assert!(
        added.contains("2026-12-01 19:30 UTC") && added.contains("schedule v1"),
        "{added}"
    );
    // A live showing (直播预告) keeps the lesson's showing.
    let live = run_ok(
        &with(
            &[
                "schedule",
                "add",
                "--live",
                "city-live",
                "--at",
                "2026-12-02 19:00 +08:00",
                "--title",
                "春耕技术直播课",
                "--minutes",
                "90",
            ],
            &publ,
        ),
        &[],
    );
    assert!(
        live.contains("live channel city-live (90 min)")
            && live.contains("2026-12-02 11:00 UTC")
            && live.contains("schedule v2"),
        "{live}"
    );
    let listed = run_ok(&with(&["schedule", "list"], &publ), &[]);
    assert!(listed.contains(&lesson) && listed.contains("town:town-1"), "{listed}");
    assert!(
        listed.contains("live city-live") && listed.contains("90 min") && listed.contains("春耕技术直播课"),
        "{listed}"
    );

    let withdrawn = run_ok(&with(&["withdraw", &lesson], &publ), &[]);
    assert!(withdrawn.contains("withdrawn (catalog v2)"), "{withdrawn}");

    // Stopped with SIGTERM, the origin exits cleanly.
    let pid = origin.child.id().to_string();
    assert!(Command::new("kill").args(["-TERM", &pid]).status().unwrap().success());
    let mut origin = origin;
    assert!(origin.child.wait().unwrap().success());
}

/// A node started from a config file, its stdout read line by line.
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
        let stdout = child.stdout.take().unwrap();
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
    fn wait_for(&self, words: &[&str]) -> String {
        loop {
            let line = self
                .lines
                .recv_timeout(Duration::from_secs(120))
                .unwrap_or_else(|e| panic!("no line with {words:?}: {e}"));
            if words.iter().all(|w| line.contains(w)) {
                return line;
            }
        }
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn admin_cli_token_enroll_station_and_revoke() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let s = |p: &Path| p.to_str().unwrap().to_string();
    let deployment = d.join("deployment");
    run_ok(&["keys", "init", "--dir", &s(&deployment)], &[]);
    run_ok(
        &[
            "keys",
            "issue",
            "--keys",
            &s(&deployment),
            "--role",
            "origin",
            "--name",
            "origin",
            "--out",
            &s(&d.join("origin")),
        ],
        &[],
    );
    let config = d.join("origin.toml");
    std::fs::write(
        &config,
        "[node]\ncredentials = \"origin\"\nlisten = \"127.0.0.1:0\"\n\
         [store]\npath = \"origin-store\"\nbudget = \"1 GiB\"\n\
         [origin]\nonline_key = \"deployment/online.key\"\nsynthetic_lessons = 1\nsynthetic_lesson_size = \"1 MB\"\n\
         [origin.admin]\nlisten = \"127.0.0.1:0\"\ndata = \"admin\"\nspool = \"spool\"\n\
         enrol_ca_key = \"deployment/ca.key\"\n",
    )
    .unwrap();
    let origin = Node::start("origin", &config);
    let line = origin.wait_for(&["listening on"]);
    let origin_addr = line
        .split("listening on ")
        .nth(1)
        .unwrap()
        .split_whitespace()
        .next()
        .unwrap()
        .to_string();
    let server = origin
        .wait_for(&["admin API on http://"])
        .trim_start_matches("admin API on http://")
        .to_string();
    let c = s(&config);

    // The operator makes a token at the origin; it is printed once.
    let token = run_ok(
        &[
            "token",
            "create",
            "--config",
            &c,
            "--role",
            "station",
            "--name",
            "village-7",
            "--expires",
            "1h",
        ],
        &[],
    )
    .trim()
    .to_string();
    assert!(token.starts_with("cwe_"), "{token}");
    assert!(!std::fs::read_to_string(d.join("admin/enrol-tokens.json"))
        .unwrap()
        .contains(&token[4..68]));
    let listed = run_ok(&["token", "list", "--config", &c], &[]);
    assert!(listed.contains("village-7") && listed.contains("expires"), "{listed}");
    // A second token for a name with one outstanding is refused.
    let again = run(
        &[
            "token",
            "create",
            "--config",
            &c,
            "--role",
            "station",
            "--name",
            "village-7",
        ],
        &[],
    );
    assert!(!again.status.success());

    // On the new node: enrol, then run the station from the credentials it wrote.
    let creds = d.join("village-7");
    let out = run_ok(
        &["enroll", "--token", &token, "--parent", &server, "--out", &s(&creds)],
        &[],
    );
    assert!(out.contains("enrolled as station village-7"), "{out}");
    for f in ["node.crt", "node.key", "ca.crt", "root.pub"] {
        assert!(creds.join(f).is_file(), "{f}");
    }
    assert_eq!(
        std::fs::read(creds.join("root.pub")).unwrap(),
        std::fs::read(deployment.join("root.pub")).unwrap()
    );
    assert!(run_ok(&["token", "list", "--config", &c], &[]).contains("used"));
    // The token enrols one node only.
    let reused = run(
        &[
            "enroll",
            "--token",
            &token,
            "--parent",
            &server,
            "--out",
            &s(&d.join("second")),
        ],
        &[],
    );
    assert!(!reused.status.success());
    let err = String::from_utf8_lossy(&reused.stderr);
    assert!(err.contains("409") && err.contains("used"), "{err}");
    assert!(!d.join("second/node.key").exists());

    let station_toml = d.join("station.toml");
    std::fs::write(
        &station_toml,
        format!(
            "[node]\ncredentials = \"village-7\"\nbind = \"127.0.0.1:0\"\n\
             [store]\npath = \"station-store\"\nbudget = \"1 GiB\"\n\
             [[parent]]\nname = \"origin\"\naddr = \"{origin_addr}\"\n"
        ),
    )
    .unwrap();
    let station = Node::start("station", &station_toml);
    station.wait_for(&["synced", "1/1 lessons ready"]);

    // The operator revokes it through the admin API.
    let ops = run_ok(
        &[
            "admin", "token", "create", "--config", &c, "--role", "operator", "--name", "olga",
        ],
        &[],
    )
    .trim()
    .to_string();
    let auth = ["--server", server.as_str(), "--token", ops.as_str()];
    let revoked = run_ok(&with(&["admin", "revoke", "--name", "village-7"], &auth), &[]);
    assert!(revoked.contains("village-7 revoked (catalog v2)"), "{revoked}");
    assert_eq!(run_ok(&with(&["admin", "revoked"], &auth), &[]).trim(), "village-7");
    // A new token for the revoked name cannot enrol it again.
    let token = run_ok(
        &[
            "token",
            "create",
            "--config",
            &c,
            "--role",
            "station",
            "--name",
            "village-7",
        ],
        &[],
    )
    .trim()
    .to_string();
    let refused = run(
        &[
            "enroll",
            "--token",
            &token,
            "--parent",
            &server,
            "--out",
            &s(&d.join("third")),
        ],
        &[],
    );
    let err = String::from_utf8_lossy(&refused.stderr);
    assert!(!refused.status.success() && err.contains("revoked"), "{err}");
    drop(station);
    drop(origin);
}
