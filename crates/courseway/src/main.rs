//! The `courseway` binary: one subcommand per role and operator verb.

mod demo;

use std::path::PathBuf;

use anyhow::Context;
use clap::{Parser, Subcommand};
use courseway_store::{Store, StoreConfig};

#[derive(Debug, Parser)]
#[command(name = "courseway", version, about = "Lesson delivery for rural distance education")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the local demo with synthetic courseware.
    Demo(demo::DemoArgs),
    /// Inspect a node's chunk store.
    #[command(subcommand)]
    Store(StoreCommand),
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
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into()))
        .with_writer(std::io::stderr)
        .init();
    match Cli::parse().command {
        Command::Demo(args) => demo::run(args),
        Command::Store(StoreCommand::Check { path }) => store_check(path),
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
