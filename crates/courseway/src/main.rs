//! The `courseway` binary: one subcommand per role and operator verb.

mod admin_cmd;
mod demo;
mod media;
mod run;

use std::path::PathBuf;

use anyhow::Context;
use clap::{Parser, Subcommand, ValueEnum};
use courseway::keys;
use courseway_content::NodeName;
use courseway_proto::Role;
use courseway_store::{Store, StoreConfig};

#[derive(Debug, Parser)]
#[command(name = "courseway", version, about = "Lesson delivery for rural distance education")]
struct Cli {
    /// Log format on stderr: "text" for people, "json" (one object per line) for log shippers.
    /// The level comes from RUST_LOG (default: warn).
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text)]
    log_format: LogFormat,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the local demo: a delivery tree on loopback with a GStreamer-made lesson and its showing.
    Demo(demo::DemoArgs),
    /// Run an origin: the top of the tree, which signs the catalog and serves relays.
    Origin(NodeArgs),
    /// Run a relay: caches and fans out to the relays or stations below it.
    Relay(NodeArgs),
    /// Run a station: pulls the lessons it should hold from its parents.
    Station(NodeArgs),
    /// Make a deployment's keys and node credentials.
    #[command(subcommand)]
    Keys(KeysCommand),
    /// Inspect a node's chunk store.
    #[command(subcommand)]
    Store(StoreCommand),
    /// Probe or transcode a media file locally (GStreamer), writing HLS.
    #[command(subcommand)]
    Media(media::MediaCommand),
    /// Upload a media file to the origin's admin API, transcode it there, print the lesson id.
    Ingest(admin_cmd::IngestArgs),
    /// Review lessons: list, submit, approve, reject.
    #[command(subcommand)]
    Review(admin_cmd::ReviewCommand),
    /// Publish an approved lesson (signs the next catalog).
    Publish(admin_cmd::LessonIdArgs),
    /// Withdraw a published lesson (signs the next catalog without it).
    Withdraw(admin_cmd::LessonIdArgs),
    /// List and search the origin's lessons.
    Lessons(admin_cmd::LessonsArgs),
    /// The schedule of showings (播放计划).
    #[command(subcommand)]
    Schedule(admin_cmd::ScheduleCommand),
    /// Record a live channel into a lesson that goes to review (回看).
    #[command(subcommand)]
    Live(admin_cmd::LiveCommand),
    /// Administer the origin's admin API (tokens) and revoke nodes.
    #[command(subcommand)]
    Admin(admin_cmd::AdminCommand),
    /// One-time enrolment tokens for new nodes (at the origin).
    #[command(subcommand)]
    Token(admin_cmd::EnrolTokenCommand),
    /// Enrol this node with a token: make its key here, get its certificate from the origin.
    Enroll(admin_cmd::EnrollArgs),
    /// Reports made at the origin from what the stations sent (viewings, heartbeats).
    #[command(subcommand)]
    Report(admin_cmd::ReportCommand),
    /// The fleet from the stations' heartbeats: district → town → station (online, version,
    /// lessons ready, at risk with the reason, last seen), then each showing ahead.
    Status(admin_cmd::StatusArgs),
}

#[derive(Debug, clap::Args)]
struct NodeArgs {
    /// The node's config file (see config/ for a documented example of each role).
    #[arg(long, short)]
    config: PathBuf,
}

#[derive(Debug, Subcommand)]
enum KeysCommand {
    /// Make a new deployment: root key, online signing key and CA.
    Init {
        /// Directory for the deployment's keys (must not hold keys already).
        #[arg(long)]
        dir: PathBuf,
        /// The deployment's name, written in the CA certificate.
        #[arg(long, default_value = "Courseway deployment")]
        name: String,
        /// Days the online signing key may sign before it must be renewed.
        #[arg(long, default_value_t = keys::DEFAULT_ONLINE_DAYS)]
        online_days: u64,
    },
    /// Delegate signing to a new online key (where root.key is kept); copy online.key to the origin.
    Online {
        /// The deployment's key directory.
        #[arg(long)]
        dir: PathBuf,
        /// Days the new online key may sign.
        #[arg(long, default_value_t = keys::DEFAULT_ONLINE_DAYS)]
        days: u64,
    },
    /// Issue a node's certificate and key from the deployment CA.
    Issue {
        /// The deployment's key directory (holds ca.crt, ca.key and root.pub).
        #[arg(long)]
        keys: PathBuf,
        /// The node's role.
        #[arg(long, value_enum)]
        role: RoleArg,
        /// The node's name, e.g. district-07 or village-0123.
        #[arg(long)]
        name: NodeName,
        /// Directory for the node's credentials (node.crt, node.key, ca.crt, root.pub).
        #[arg(long)]
        out: PathBuf,
        /// Days the certificate is valid.
        #[arg(long, default_value_t = keys::DEFAULT_NODE_DAYS)]
        days: u64,
    },
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum RoleArg {
    Origin,
    Relay,
    Station,
}

impl From<RoleArg> for Role {
    fn from(r: RoleArg) -> Self {
        match r {
            RoleArg::Origin => Role::Origin,
            RoleArg::Relay => Role::Relay,
            RoleArg::Station => Role::Station,
        }
    }
}

#[derive(Debug, Subcommand)]
enum StoreCommand {
    /// Hash every stored chunk and check that the index and the bodies match.
    Check {
        /// The store's directory.
        path: PathBuf,
    },
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let filter = tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into());
    let logs = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match cli.log_format {
        LogFormat::Text => logs.init(),
        LogFormat::Json => logs.json().flatten_event(true).init(),
    }
    match cli.command {
        Command::Demo(args) => demo::run(args),
        Command::Origin(args) => run::origin(&args.config),
        Command::Relay(args) => run::relay(&args.config),
        Command::Station(args) => run::station(&args.config),
        Command::Keys(KeysCommand::Init { dir, name, online_days }) => {
            let root = keys::init(&dir, &name, online_days)?;
            println!("deployment keys written to {}", dir.display());
            println!("  root key fingerprint {}", root.fingerprint());
            println!(
                "  move {} offline now: it is needed only to renew the online key (`courseway keys online`)",
                dir.join(keys::ROOT_KEY).display()
            );
            Ok(())
        }
        Command::Keys(KeysCommand::Online { dir, days }) => {
            keys::renew_online(&dir, days)?;
            println!(
                "{} renewed for {days} days; copy it to the origin and restart the origin",
                dir.join(keys::ONLINE_KEY).display()
            );
            Ok(())
        }
        Command::Keys(KeysCommand::Issue {
            keys: deployment,
            role,
            name,
            out,
            days,
        }) => {
            keys::issue(&deployment, role.into(), &name, days, &out)?;
            println!(
                "credentials for {} {name} written to {}; point the node's config `credentials` at it",
                keys::role_arg(role.into()),
                out.display()
            );
            Ok(())
        }
        Command::Store(StoreCommand::Check { path }) => store_check(path),
        Command::Media(command) => media::run(command),
        Command::Ingest(args) => admin_cmd::ingest(args),
        Command::Review(command) => admin_cmd::review(command),
        Command::Publish(args) => admin_cmd::step("publish", args),
        Command::Withdraw(args) => admin_cmd::step("withdraw", args),
        Command::Lessons(args) => admin_cmd::lessons(args),
        Command::Schedule(command) => admin_cmd::schedule(command),
        Command::Live(command) => admin_cmd::live(command),
        Command::Admin(command) => admin_cmd::admin(command),
        Command::Token(command) => admin_cmd::token(command),
        Command::Enroll(args) => admin_cmd::enroll(args),
        Command::Report(command) => admin_cmd::report(command),
        Command::Status(args) => admin_cmd::status(args),
    }
}

fn store_check(path: PathBuf) -> anyhow::Result<()> {
    anyhow::ensure!(
        path.join("CURRENT").is_file(),
        "{} is not a Courseway store (no RocksDB CURRENT file there); give the store directory from the node's config",
        path.display()
    );
    // The budget only matters for inserts; checking inserts nothing.
    let store = Store::open(StoreConfig::new(&path, u64::MAX)).context("opening the store")?;
    let report = store.verify_all().context("reading the store")?;
    println!(
        "{} chunks verified ({} bytes); {} corrupt, {} entries without body, {} bodies without entry",
        report.verified,
        report.verified_bytes,
        report.corrupt.len(),
        report.missing_bodies.len(),
        report.orphan_bodies.len()
    );
    for id in &report.corrupt {
        println!("corrupt: {id}");
    }
    anyhow::ensure!(
        report.is_clean(),
        "the store at {} has problems (listed above)",
        path.display()
    );
    Ok(())
}
