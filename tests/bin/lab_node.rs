//! Hosts the netlab node roles for `tests/kernel_shaping.rs`: `lab-node lab-origin ...` and
//! `lab-node lab-station ...`, each run inside a network namespace with `ip netns exec`.

use clap::Parser;
use courseway_netlab::node::NodeCommand;

#[derive(Debug, Parser)]
struct Cli {
    #[command(subcommand)]
    role: NodeCommand,
}

fn main() {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_writer(std::io::stderr)
        .init();
    if let Err(e) = cli.role.run() {
        eprintln!("lab-node: {e}");
        std::process::exit(1);
    }
}
