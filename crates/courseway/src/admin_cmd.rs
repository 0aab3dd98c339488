//! The operator and editor commands that talk to an origin's admin API: `ingest`, `review`,
//! `publish`, `withdraw`, `lessons`, `schedule`, `live record|stop|recordings`, `report monthly`; and `admin token`, which works on the origin's
//! machine (it writes the token file named by the origin's config).
//!
//! The server and token come from `--server` / `--token`, else `COURSEWAY_SERVER` /
//! `COURSEWAY_TOKEN`. A refusal prints the server's reason.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{bail, Context};
use clap::{Args, Subcommand};
use courseway::admin_client::{self, percent_encode, AdminClient};
use courseway_origin::admin::{tokens, workflow::Role};
use indicatif::{ProgressBar, ProgressStyle};
use serde_json::{json, Value};

/// Where the admin API is and who is asking.
#[derive(Debug, Args)]
pub struct ServerArgs {
    /// The origin's admin API, HOST:PORT ([origin.admin] listen). Default: $COURSEWAY_SERVER.
    #[arg(long)]
    server: Option<String>,
    /// Bearer token (from `courseway admin token create`). Default: $COURSEWAY_TOKEN.
    #[arg(long)]
    token: Option<String>,
}

impl ServerArgs {
    fn client(&self) -> anyhow::Result<AdminClient> {
        let server = match &self.server {
            Some(s) => s.clone(),
            None => std::env::var(admin_client::SERVER_ENV)
                .context("no admin API given: pass --server HOST:PORT or set COURSEWAY_SERVER")?,
        };
        let token = match &self.token {
            Some(t) => t.clone(),
            None => std::env::var(admin_client::TOKEN_ENV)
                .context("no token given: pass --token or set COURSEWAY_TOKEN (an operator makes one with `courseway admin token create`)")?,
        };
        Ok(AdminClient::new(&server, &token)?)
    }
}

#[derive(Debug, Args)]
pub struct IngestArgs {
    /// The media file (video with audio, video only, or audio only).
    file: PathBuf,
    #[arg(long)]
    title: String,
    /// The publishing department (发布部门), e.g. 农业局.
    #[arg(long)]
    department: String,
    /// required (必修) or elective (选修).
    #[arg(long)]
    category: String,
    /// Comma-separated tags.
    #[arg(long, value_delimiter = ',')]
    tags: Vec<String>,
    /// BCP 47 language tag.
    #[arg(long, default_value = "zh-CN")]
    language: String,
    #[arg(long, default_value = "")]
    description: String,
    /// What the file is: `video` (it must have a video stream) or `audio` (audio only, e.g. a
    /// radio programme). The origin refuses a file that is not what it is declared to be.
    #[arg(long, value_parser = ["video", "audio"])]
    media: Option<String>,
    /// A file that goes with the lesson (PDF, slides, …); repeat for several.
    #[arg(long = "attach")]
    attachments: Vec<PathBuf>,
    /// Submit the lesson for review once it is transcoded.
    #[arg(long)]
    submit: bool,
    /// Return once the job is started instead of waiting for the transcode.
    #[arg(long)]
    no_wait: bool,
    #[command(flatten)]
    server: ServerArgs,
}

#[derive(Debug, Subcommand)]
pub enum ReviewCommand {
    /// Lessons waiting for a review step (submitted, reviewed, approved).
    List {
        #[command(flatten)]
        server: ServerArgs,
    },
    /// Submit a draft, rejected or withdrawn lesson for review (submitter).
    Submit {
        id: String,
        #[command(flatten)]
        server: ServerArgs,
    },
    /// Pass the lesson's current step: a reviewer reviews a submitted lesson, a publisher
    /// approves a reviewed one.
    Approve {
        id: String,
        #[arg(long)]
        comment: Option<String>,
        #[command(flatten)]
        server: ServerArgs,
    },
    /// Send the lesson back to its submitter with a comment.
    Reject {
        id: String,
        /// What the submitter should change.
        #[arg(long)]
        comment: String,
        #[command(flatten)]
        server: ServerArgs,
    },
}

#[derive(Debug, Args)]
pub struct LessonIdArgs {
    id: String,
    #[command(flatten)]
    server: ServerArgs,
}

#[derive(Debug, Args)]
pub struct LessonsArgs {
    /// Text to find in the title, department, description, tags or id.
    #[arg(long)]
    search: Option<String>,
    /// Only lessons in this state (draft, submitted, reviewed, approved, published, …).
    #[arg(long)]
    state: Option<String>,
    /// required or elective.
    #[arg(long)]
    category: Option<String>,
    /// Print the server's JSON.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    server: ServerArgs,
}

#[derive(Debug, Subcommand)]
pub enum ScheduleCommand {
    /// Add a showing to the schedule (signed and sent down the tree at once): a lesson, or with
    /// --live a live channel's broadcast (stations show when to tune in).
    Add {
        /// The lesson's id (not with --live).
        #[arg(required_unless_present = "live", conflicts_with = "live")]
        lesson: Option<String>,
        /// A live showing of this channel, e.g. city-live.
        #[arg(long)]
        live: Option<String>,
        /// What the live showing is about (default: the channel's name).
        #[arg(long, requires = "live")]
        title: Option<String>,
        /// How long the live showing lasts, in minutes.
        #[arg(long, requires = "live", default_value_t = 60)]
        minutes: u32,
        /// When it shows: "YYYY-MM-DD HH:MM" in UTC, or with an offset ("2026-12-01 19:30 +08:00").
        #[arg(long)]
        at: String,
        /// all, district:NAME, town:NAME, station:NAME or group:NAME.
        #[arg(long, default_value = "all")]
        target: String,
        #[command(flatten)]
        server: ServerArgs,
    },
    /// The current schedule.
    List {
        #[command(flatten)]
        server: ServerArgs,
    },
}

#[derive(Debug, Subcommand)]
pub enum LiveCommand {
    /// Start recording a live channel into a lesson (回看) with this metadata; it is made when
    /// the recording stops (`courseway live stop`).
    Record {
        /// The live channel, e.g. city-live.
        channel: String,
        #[arg(long)]
        title: String,
        /// The publishing department (发布部门).
        #[arg(long)]
        department: String,
        /// required (必修) or elective (选修).
        #[arg(long)]
        category: String,
        /// Comma-separated tags.
        #[arg(long, value_delimiter = ',')]
        tags: Vec<String>,
        #[arg(long, default_value = "zh-CN")]
        language: String,
        #[arg(long, default_value = "")]
        description: String,
        /// The rendition to record (default: the channel's top one).
        #[arg(long)]
        rendition: Option<String>,
        #[command(flatten)]
        server: ServerArgs,
    },
    /// Stop recording a live channel: the recording is transcoded into a lesson, which goes to
    /// review (submitted) once done. Prints the lesson id, the job and any gaps.
    Stop {
        channel: String,
        #[command(flatten)]
        server: ServerArgs,
    },
    /// The recordings in progress.
    Recordings {
        #[command(flatten)]
        server: ServerArgs,
    },
}

fn recording_line(r: &Value) -> String {
    let gaps = r["gaps"].as_array().map_or(0, Vec::len);
    format!(
        "{}/{}: {} segments ({:.0} s), {} gap(s)",
        r["channel"].as_str().unwrap_or("?"),
        r["rendition"].as_str().unwrap_or("?"),
        r["segments"].as_u64().unwrap_or(0),
        r["duration_ms"].as_u64().unwrap_or(0) as f64 / 1000.0,
        gaps
    )
}

pub fn live(command: LiveCommand) -> anyhow::Result<()> {
    runtime()?.block_on(async move {
        match command {
            LiveCommand::Record {
                channel,
                title,
                department,
                category,
                tags,
                language,
                description,
                rendition,
                server,
            } => {
                let body = json!({
                    "title": title, "department": department, "category": category, "tags": tags,
                    "language": language, "description": description, "rendition": rendition,
                });
                let v = server
                    .client()?
                    .post(&format!("/api/live/{}/record", percent_encode(&channel)), &body)
                    .await?;
                println!(
                    "recording {}/{}; stop with `courseway live stop {channel}`",
                    channel,
                    v["recording"]["rendition"].as_str().unwrap_or("?")
                );
            }
            LiveCommand::Stop { channel, server } => {
                let v = server
                    .client()?
                    .post(&format!("/api/live/{}/stop", percent_encode(&channel)), &json!({}))
                    .await?;
                println!("{}", recording_line(&v["recording"]));
                for g in v["recording"]["gaps"].as_array().into_iter().flatten() {
                    println!("  gap: segments {} to {}", g[0], g[1]);
                }
                println!(
                    "lesson {} (job {}) is being transcoded; it goes to review (submitted) when done",
                    v["lesson"].as_str().unwrap_or("?"),
                    v["job"].as_str().unwrap_or("?")
                );
            }
            LiveCommand::Recordings { server } => {
                let v = server.client()?.get("/api/live/recordings").await?;
                for r in v["recordings"].as_array().into_iter().flatten() {
                    println!(
                        "{}  {} (by {})",
                        recording_line(&r["recording"]),
                        r["title"].as_str().unwrap_or(""),
                        r["by"].as_str().unwrap_or("?")
                    );
                }
            }
        }
        Ok(())
    })
}

#[derive(Debug, Subcommand)]
pub enum AdminCommand {
    /// Admin API tokens (run on the origin's machine; works while the origin runs).
    #[command(subcommand)]
    Token(TokenCommand),
    /// Revoke a node (operator): the next catalog lists it and every node refuses it at the
    /// handshake and closes its connections.
    Revoke {
        /// The node's name, e.g. village-0123.
        #[arg(long)]
        name: String,
        #[command(flatten)]
        server: ServerArgs,
    },
    /// The nodes the current catalog revokes.
    Revoked {
        #[command(flatten)]
        server: ServerArgs,
    },
}

#[derive(Debug, Subcommand)]
pub enum TokenCommand {
    /// Make a token; prints it once (only its hash is kept).
    Create {
        /// The origin's config file (its [origin.admin] data directory holds the tokens).
        #[arg(long, short)]
        config: PathBuf,
        /// submitter, reviewer, publisher, operator or viewer.
        #[arg(long)]
        role: String,
        /// Who holds it (shown in the audit log).
        #[arg(long)]
        name: String,
        /// Bind the token to one department: it acts only on that department's lessons.
        #[arg(long)]
        department: Option<String>,
    },
    /// Remove a token.
    Revoke {
        #[arg(long, short)]
        config: PathBuf,
        #[arg(long)]
        name: String,
    },
    /// List the tokens (names and roles; the secrets are not kept).
    List {
        #[arg(long, short)]
        config: PathBuf,
    },
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("starting the runtime")
}

fn bar(len: u64, message: &str) -> ProgressBar {
    let bar = ProgressBar::new(len);
    bar.set_style(
        ProgressStyle::with_template("{msg:12} [{bar:40}] {bytes}/{total_bytes} {bytes_per_sec} eta {eta}")
            .expect("a valid template")
            .progress_chars("=> "),
    );
    bar.set_message(message.to_string());
    bar
}

fn lesson_line(l: &Value) -> String {
    format!(
        "{:<24} {:<10} {:<9} {:<12} {}",
        l["id"].as_str().unwrap_or("?"),
        l["state"].as_str().unwrap_or("?"),
        l["metadata"]["category"].as_str().unwrap_or("?"),
        l["metadata"]["department"].as_str().unwrap_or("?"),
        l["metadata"]["title"].as_str().unwrap_or("?"),
    )
}

pub fn ingest(args: IngestArgs) -> anyhow::Result<()> {
    let client = args.server.client()?;
    runtime()?.block_on(async move {
        let size = std::fs::metadata(&args.file)
            .with_context(|| format!("cannot read {}", args.file.display()))?
            .len();
        let upload_bar = bar(size, "uploading");
        let b = upload_bar.clone();
        let upload = client
            .upload_file(&args.file, "media", move |sent| b.set_position(sent))
            .await
            .context("uploading the media file")?;
        upload_bar.finish();
        let mut attachments = Vec::new();
        for path in &args.attachments {
            let len = std::fs::metadata(path)
                .with_context(|| format!("cannot read {}", path.display()))?
                .len();
            let b = bar(len, "attachment");
            let b2 = b.clone();
            attachments.push(
                client
                    .upload_file(path, "attachment", move |sent| b2.set_position(sent))
                    .await
                    .with_context(|| format!("uploading {}", path.display()))?,
            );
            b.finish();
        }
        let created = client
            .post(
                "/api/lessons",
                &json!({
                    "upload": upload, "attachments": attachments, "title": args.title,
                    "department": args.department, "category": args.category, "tags": args.tags,
                    "language": args.language, "description": args.description,
                    "media": args.media,
                }),
            )
            .await
            .context("creating the lesson")?;
        let lesson = created["lesson"].as_str().unwrap_or_default().to_string();
        let job = created["job"].as_str().unwrap_or_default().to_string();
        if args.no_wait {
            eprintln!("lesson {lesson}: job {job} started; follow it with GET /api/jobs/{job}");
            println!("{lesson}");
            return Ok(());
        }
        let transcode = ProgressBar::new(1000);
        transcode.set_style(
            ProgressStyle::with_template("{msg:12} [{bar:40}] {percent}% {elapsed}")
                .expect("a valid template")
                .progress_chars("=> "),
        );
        loop {
            let j = client.get(&format!("/api/jobs/{job}")).await?;
            let state = j["state"].as_str().unwrap_or("?").to_string();
            transcode.set_message(state.clone());
            transcode.set_position((j["percent"].as_f64().unwrap_or(0.0) * 10.0) as u64);
            match state.as_str() {
                "done" => break,
                "failed" | "cancelled" => {
                    transcode.abandon();
                    bail!(
                        "the ingest job {job} {state}: {}",
                        j["error"].as_str().unwrap_or("no reason given")
                    );
                }
                _ => tokio::time::sleep(Duration::from_millis(500)).await,
            }
        }
        transcode.finish();
        if args.submit {
            client
                .post(&format!("/api/lessons/{lesson}/submit"), &json!({}))
                .await
                .context("submitting the lesson")?;
            eprintln!("lesson {lesson} transcoded and submitted for review");
        } else {
            eprintln!("lesson {lesson} transcoded; submit it with `courseway review submit {lesson}`");
        }
        println!("{lesson}");
        Ok(())
    })
}

pub fn review(command: ReviewCommand) -> anyhow::Result<()> {
    runtime()?.block_on(async move {
        match command {
            ReviewCommand::List { server } => {
                let client = server.client()?;
                for state in ["submitted", "reviewed", "approved"] {
                    let lessons = client.get(&format!("/api/lessons?state={state}")).await?;
                    for l in lessons.as_array().into_iter().flatten() {
                        println!("{}", lesson_line(l));
                    }
                }
            }
            ReviewCommand::Submit { id, server } => {
                let l = server
                    .client()?
                    .post(&format!("/api/lessons/{id}/submit"), &json!({}))
                    .await?;
                println!("{id} {}", l["state"].as_str().unwrap_or("?"));
            }
            ReviewCommand::Approve { id, comment, server } => {
                let client = server.client()?;
                let lesson = client.get(&format!("/api/lessons/{id}")).await?;
                let step = match lesson["state"].as_str() {
                    Some("submitted") => "review",
                    Some("reviewed") => "approve",
                    Some(other) => bail!("lesson {id} is {other}; only a submitted or reviewed lesson awaits approval"),
                    None => bail!("the origin's answer has no state"),
                };
                let l = client
                    .post(&format!("/api/lessons/{id}/{step}"), &json!({ "comment": comment }))
                    .await?;
                println!("{id} {}", l["state"].as_str().unwrap_or("?"));
            }
            ReviewCommand::Reject { id, comment, server } => {
                let l = server
                    .client()?
                    .post(&format!("/api/lessons/{id}/reject"), &json!({ "comment": comment }))
                    .await?;
                println!("{id} {}", l["state"].as_str().unwrap_or("?"));
            }
        }
        Ok(())
    })
}

/// `publish ID` or `withdraw ID`.
pub fn step(step: &str, args: LessonIdArgs) -> anyhow::Result<()> {
    let client = args.server.client()?;
    runtime()?.block_on(async move {
        let l = client
            .post(&format!("/api/lessons/{}/{step}", args.id), &json!({}))
            .await?;
        println!(
            "{} {} (catalog v{})",
            args.id,
            l["state"].as_str().unwrap_or("?"),
            l["catalog_version"].as_u64().unwrap_or(0)
        );
        Ok(())
    })
}

pub fn lessons(args: LessonsArgs) -> anyhow::Result<()> {
    let client = args.server.client()?;
    runtime()?.block_on(async move {
        let mut query = Vec::new();
        for (k, v) in [
            ("q", &args.search),
            ("state", &args.state),
            ("category", &args.category),
        ] {
            if let Some(v) = v {
                query.push(format!("{k}={}", percent_encode(v)));
            }
        }
        let lessons = client.get(&format!("/api/lessons?{}", query.join("&"))).await?;
        if args.json {
            println!("{}", serde_json::to_string_pretty(&lessons)?);
        } else {
            for l in lessons.as_array().into_iter().flatten() {
                println!("{}", lesson_line(l));
            }
        }
        Ok(())
    })
}

pub fn schedule(command: ScheduleCommand) -> anyhow::Result<()> {
    runtime()?.block_on(async move {
        match command {
            ScheduleCommand::Add {
                lesson,
                live,
                title,
                minutes,
                at,
                target,
                server,
            } => {
                let at = admin_client::parse_time(&at).map_err(anyhow::Error::msg)?;
                let (body, what) = match (lesson, live) {
                    (Some(lesson), None) => (json!({ "lesson": lesson, "at": at, "target": target }), lesson),
                    (None, Some(channel)) => (
                        json!({ "live": channel, "at": at, "target": target, "title": title, "minutes": minutes }),
                        format!("live channel {channel} ({minutes} min)"),
                    ),
                    _ => bail!("give a lesson id or --live CHANNEL, not both"),
                };
                let v = server.client()?.post("/api/schedule", &body).await?;
                println!(
                    "{what} shows {} for {target} (schedule v{})",
                    admin_client::format_time(at),
                    v["version"].as_u64().unwrap_or(0)
                );
            }
            ScheduleCommand::List { server } => {
                let v = server.client()?.get("/api/schedule").await?;
                println!("schedule v{}", v["version"].as_u64().unwrap_or(0));
                for e in v["entries"].as_array().into_iter().flatten() {
                    println!(
                        "{}  {:<24} {}",
                        admin_client::format_time(e["at"].as_u64().unwrap_or(0)),
                        e["lesson"].as_str().unwrap_or("?"),
                        e["target"].as_str().unwrap_or("?")
                    );
                }
                for l in v["live"].as_array().into_iter().flatten() {
                    println!(
                        "{}  live {:<19} {}  {} min  {}",
                        admin_client::format_time(l["at"].as_u64().unwrap_or(0)),
                        l["live"].as_str().unwrap_or("?"),
                        l["target"].as_str().unwrap_or("?"),
                        l["duration_seconds"].as_u64().unwrap_or(0) / 60,
                        l["title"].as_str().unwrap_or("")
                    );
                }
            }
        }
        Ok(())
    })
}

#[derive(Debug, Subcommand)]
pub enum ReportCommand {
    /// Per district and town for one month (UTC): hours played, showings, attendance, lessons
    /// ready on time, from what the stations reported.
    Monthly {
        /// The month, YYYY-MM.
        #[arg(long)]
        month: String,
        /// json or csv.
        #[arg(long, value_enum, default_value_t = ReportFormat::Json)]
        format: ReportFormat,
        #[command(flatten)]
        server: ServerArgs,
    },
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum ReportFormat {
    Json,
    Csv,
}

pub fn report(command: ReportCommand) -> anyhow::Result<()> {
    runtime()?.block_on(async move {
        match command {
            ReportCommand::Monthly { month, format, server } => {
                let client = server.client()?;
                let path = |f: &str| format!("/api/reports/monthly?month={}&format={f}", percent_encode(&month));
                match format {
                    ReportFormat::Json => {
                        let v = client.get(&path("json")).await?;
                        println!("{}", serde_json::to_string_pretty(&v)?);
                    }
                    ReportFormat::Csv => print!("{}", client.get_text(&path("csv")).await?),
                }
            }
        }
        Ok(())
    })
}

#[derive(Debug, Args)]
pub struct StatusArgs {
    /// A station is offline when its last heartbeat is older than this many minutes.
    #[arg(long, default_value_t = 15)]
    offline_after_minutes: u64,
    /// Print the origin's JSON instead of the tables.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    server: ServerArgs,
}

/// `courseway status`: the fleet by district → town → station, then the showings ahead.
pub fn status(args: StatusArgs) -> anyhow::Result<()> {
    let client = args.server.client()?;
    runtime()?.block_on(async move {
        let v = client
            .get(&format!("/api/fleet?offline_after={}", args.offline_after_minutes * 60))
            .await?;
        if args.json {
            println!("{}", serde_json::to_string_pretty(&v)?);
            return Ok(());
        }
        print!("{}", fleet_tables(&v));
        Ok(())
    })
}

/// Rows as a table whose columns are as wide as their widest cell (counted in characters);
/// the columns named in `right` are right-aligned. The last column is not padded.
fn table(rows: &[Vec<String>], right: &[usize]) -> String {
    let columns = rows.iter().map(Vec::len).max().unwrap_or(0);
    let widths: Vec<usize> = (0..columns)
        .map(|c| {
            rows.iter()
                .filter_map(|r| r.get(c))
                .map(|s| s.chars().count())
                .max()
                .unwrap_or(0)
        })
        .collect();
    let mut out = String::new();
    for row in rows {
        let mut line = String::new();
        for (c, cell) in row.iter().enumerate() {
            let pad = " ".repeat(widths[c] - cell.chars().count());
            if c > 0 {
                line.push_str("  ");
            }
            if right.contains(&c) {
                line.push_str(&pad);
                line.push_str(cell);
            } else {
                line.push_str(cell);
                if c + 1 < row.len() {
                    line.push_str(&pad);
                }
            }
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

/// The fleet JSON as terminal tables: stations by district and town, then the showings ahead.
pub fn fleet_tables(v: &Value) -> String {
    let s = |v: &Value| v.as_str().unwrap_or("").to_owned();
    let n = |v: &Value| v.as_u64().unwrap_or(0).to_string();
    let mut out = format!(
        "{} stations online, {} offline\n\n",
        v["stations_online"].as_u64().unwrap_or(0),
        v["stations_offline"].as_u64().unwrap_or(0),
    );
    let mut rows = vec![[
        "DISTRICT",
        "TOWN",
        "STATION",
        "ONLINE",
        "VERSION",
        "READY",
        "LAST SEEN",
        "AT RISK",
    ]
    .map(str::to_owned)
    .to_vec()];
    let (mut district, mut town) = (String::new(), String::new());
    for st in v["stations"].as_array().into_iter().flatten() {
        let (d, t) = (s(&st["district"]), s(&st["town"]));
        // A district or town is named on its first line only.
        let show_d = if d != district { d.clone() } else { String::new() };
        let show_t = if d != district || t != town {
            t.clone()
        } else {
            String::new()
        };
        (district, town) = (d, t);
        let risks: Vec<String> = st["at_risk"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|r| format!("{}: {}", s(&r["lesson"]), s(&r["reason"])))
            .collect();
        rows.push(vec![
            show_d,
            show_t,
            s(&st["station"]),
            if st["online"].as_bool() == Some(true) {
                "yes"
            } else {
                "NO"
            }
            .to_owned(),
            s(&st["version"]),
            n(&st["lessons_ready"]),
            s(&st["last_seen_utc"]),
            if risks.is_empty() {
                "-".to_owned()
            } else {
                risks.join("; ")
            },
        ]);
    }
    out.push_str(&table(&rows, &[5]));
    let showings = v["showings"].as_array().cloned().unwrap_or_default();
    if !showings.is_empty() {
        let mut rows = vec![[
            "SHOWING",
            "LESSON",
            "DISTRICT",
            "READY",
            "DOWNLOADING",
            "PREDICTED FINISH",
            "AT RISK",
            "OFFLINE",
        ]
        .map(str::to_owned)
        .to_vec()];
        for sh in &showings {
            let finish = sh["predicted_finish"]
                .as_u64()
                .map_or("-".to_owned(), admin_client::format_time);
            rows.push(vec![
                s(&sh["show_at_utc"]),
                s(&sh["lesson"]),
                s(&sh["district"]),
                n(&sh["ready"]),
                n(&sh["downloading"]),
                finish,
                n(&sh["at_risk"]),
                n(&sh["offline"]),
            ]);
        }
        out.push('\n');
        out.push_str(&table(&rows, &[3, 4, 6, 7]));
    }
    out
}

fn tokens_file(config: &std::path::Path) -> anyhow::Result<PathBuf> {
    let settings = courseway::config::origin(config)?;
    let admin = settings.admin.with_context(|| {
        format!(
            "{} has no [origin.admin] section; add one to run the admin API",
            config.display()
        )
    })?;
    Ok(admin.tokens_file())
}

pub fn admin(command: AdminCommand) -> anyhow::Result<()> {
    match command {
        AdminCommand::Revoke { name, server } => {
            let client = server.client()?;
            let v = runtime()?.block_on(client.post("/api/revocations", &json!({ "name": name })))?;
            println!(
                "{name} revoked (catalog v{}); every node refuses it once it has that catalog",
                v["catalog_version"].as_u64().unwrap_or(0)
            );
        }
        AdminCommand::Revoked { server } => {
            let client = server.client()?;
            let v = runtime()?.block_on(client.get("/api/revocations"))?;
            for n in v["revoked"].as_array().into_iter().flatten() {
                println!("{}", n.as_str().unwrap_or("?"));
            }
        }
        AdminCommand::Token(TokenCommand::Create {
            config,
            role,
            name,
            department,
        }) => {
            let role = Role::parse(&role).with_context(|| {
                format!("role {role:?} is unknown; use submitter, reviewer, publisher, operator or viewer")
            })?;
            let path = tokens_file(&config)?;
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_secs());
            let token = tokens::create(&path, &name, role, department.as_deref(), now)?;
            eprintln!("token for {name} ({role}) made; it is shown once, keep it secret:");
            println!("{token}");
        }
        AdminCommand::Token(TokenCommand::Revoke { config, name }) => {
            tokens::revoke(&tokens_file(&config)?, &name)?;
            println!("token {name} revoked");
        }
        AdminCommand::Token(TokenCommand::List { config }) => {
            for t in tokens::read_entries(&tokens_file(&config)?)? {
                println!(
                    "{:<20} {:<10} {}",
                    t.name,
                    t.role,
                    t.department.as_deref().unwrap_or("(all departments)")
                );
            }
        }
    }
    Ok(())
}

#[derive(Debug, Subcommand)]
pub enum EnrolTokenCommand {
    /// Make a one-time enrolment token for a node (run on the origin's machine); prints it once.
    Create {
        /// The origin's config file (its [origin.admin] names the CA key and the token file).
        #[arg(long, short)]
        config: PathBuf,
        /// station or relay.
        #[arg(long)]
        role: String,
        /// The node's name, e.g. village-0123: the certificate will carry it.
        #[arg(long)]
        name: courseway_content::NodeName,
        /// How long the token may be used: e.g. 24h, 7d, 90m.
        #[arg(long, default_value = "24h")]
        expires: String,
    },
    /// The enrolment tokens: name, role, expiry, used or not (the secrets are not kept).
    List {
        #[arg(long, short)]
        config: PathBuf,
    },
}

pub fn token(command: EnrolTokenCommand) -> anyhow::Result<()> {
    match command {
        EnrolTokenCommand::Create {
            config,
            role,
            name,
            expires,
        } => {
            let role = match role.as_str() {
                "station" => courseway_proto::Role::Station,
                "relay" => courseway_proto::Role::Relay,
                other => bail!("role {other:?} cannot be enrolled with a token; use station or relay"),
            };
            let lifetime = courseway::enrol::parse_lifetime(&expires).map_err(anyhow::Error::msg)?;
            let token = courseway::enrol::create_token(&config, role, &name, lifetime)?;
            eprintln!(
                "enrolment token for {} {name} made, valid {expires} and for one node; it is shown once, hand it over privately:",
                courseway::keys::role_arg(role)
            );
            println!("{token}");
        }
        EnrolTokenCommand::List { config } => {
            let settings = courseway::config::origin(&config)?;
            let admin = settings
                .admin
                .with_context(|| format!("{} has no [origin.admin] section", config.display()))?;
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_secs());
            for t in courseway_origin::admin::enrol::read_entries(&admin.enrol_tokens_file())? {
                let state = match t.used {
                    Some(at) => format!("used {}", admin_client::format_time(at)),
                    None if t.expires <= now => "expired".to_string(),
                    None => format!("expires {}", admin_client::format_time(t.expires)),
                };
                println!("{:<24} {:<8} {state}", t.name, t.role);
            }
        }
    }
    Ok(())
}

#[derive(Debug, Args)]
pub struct EnrollArgs {
    /// The token from `courseway token create` (cwe_…).
    #[arg(long)]
    token: courseway_admin_proto::enrol::EnrolToken,
    /// The origin's admin API, HOST:PORT ([origin.admin] listen).
    #[arg(long)]
    parent: String,
    /// Directory for this node's credentials; point the node config's `credentials` at it.
    #[arg(long)]
    out: PathBuf,
}

pub fn enroll(args: EnrollArgs) -> anyhow::Result<()> {
    let identity = runtime()?.block_on(courseway::enrol::enroll(&args.parent, &args.token, &args.out))?;
    println!(
        "enrolled as {identity}; credentials written to {} (the private key never left this machine); point the node's config `credentials` at it",
        args.out.display()
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::fleet_tables;

    #[test]
    fn fleet_tables_line_up_columns_whatever_the_names() {
        let v = serde_json::json!({
            "stations_online": 1, "stations_offline": 1,
            "stations": [
                {"district": "conghua", "town": "a-very-long-town-name", "station": "village-0001", "online": true,
                 "version": "courseway 0.1.0", "lessons_ready": 12, "last_seen_utc": "2026-12-05 13:00 UTC", "at_risk": []},
                {"district": "conghua", "town": "jiekou", "station": "v2", "online": false,
                 "version": "courseway 0.1.0", "lessons_ready": 3, "last_seen_utc": "2026-12-04 08:00 UTC",
                 "at_risk": [{"lesson": "wheat-101", "reason": "today's download quota is spent"}]}
            ],
            "showings": [{"show_at_utc": "2026-12-05 19:30 UTC", "lesson": "wheat-101", "district": "conghua",
                          "ready": 1, "downloading": 0, "at_risk": 1, "offline": 1}]
        });
        let text = fleet_tables(&v);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines[0], "1 stations online, 1 offline");
        // Header and rows: every STATION cell starts in the same column.
        let column = lines[2].find("STATION").unwrap();
        assert_eq!(lines[3].find("village-0001"), Some(column), "{text}");
        assert_eq!(lines[4].find("v2"), Some(column), "{text}");
        assert!(lines[4].contains(" NO "), "{text}");
        assert!(
            lines[4].ends_with("wheat-101: today's download quota is spent"),
            "{text}"
        );
        assert!(lines[3].ends_with(" -"), "{text}");
        // The showings: counts right-aligned under their headers.
        let header = lines[6];
        let row = lines[7];
        assert_eq!(header.len(), row.len(), "{text}");
        assert!(row.ends_with(" 1        1"), "{text}");
    }
}
