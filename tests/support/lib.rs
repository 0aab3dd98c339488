//! Helpers shared by the end-to-end tests and their helper processes.

pub mod hostile;
pub mod http;
pub mod lan;
pub mod process;
pub mod webdriver;

use courseway_content::synthetic::pseudo_random;
use courseway_content::ChunkId;

/// The bytes of crash-test chunk `n` of a run seeded with `seed`: sizes vary from 1 byte to
/// 1 MiB so small (inline) and large (blob file) values are both exercised.
pub fn crash_chunk(seed: u64, n: u64) -> (ChunkId, Vec<u8>) {
    let size_selector = u64::from_le_bytes(pseudo_random(seed, &[n, 0], 8).try_into().expect("8 bytes"));
    let size = match size_selector % 4 {
        0 => 1 + (size_selector >> 8) as usize % 4096,
        1 => 4096 + (size_selector >> 8) as usize % 100_000,
        _ => 100_000 + (size_selector >> 8) as usize % ((1 << 20) - 100_000),
    };
    let bytes = pseudo_random(seed, &[n, 1], size);
    (ChunkId::of(&bytes), bytes)
}

/// Store budget used by the crash test: small, so eviction runs constantly.
pub const CRASH_BUDGET: u64 = 12 << 20;
/// Memtable size used by the crash test: small, so flushes to blob files happen often.
pub const CRASH_MEMTABLE: usize = 2 << 20;

/// A loopback address with a port the system picks.
pub fn loopback() -> std::net::SocketAddr {
    std::net::SocketAddr::from((std::net::Ipv4Addr::LOCALHOST, 0))
}

/// Polls `done` every 20 ms until it holds; panics naming `what` after `timeout` (a bound on a
/// hang, not a figure the test checks). Returns how long it took.
pub async fn wait_until(
    what: &str,
    timeout: std::time::Duration,
    mut done: impl FnMut() -> bool,
) -> std::time::Duration {
    let start = std::time::Instant::now();
    while !done() {
        assert!(
            start.elapsed() < timeout,
            "timed out after {timeout:?} waiting for {what}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    start.elapsed()
}

/// An origin named `origin` on loopback, its store under `dir/origin` (1 GiB), its catalogs
/// valid for a day: the upstream end of most end-to-end tests.
pub async fn start_origin(
    dir: &std::path::Path,
    keys: &courseway::topology::DeploymentKeys,
) -> courseway_origin::Origin {
    let name = courseway_content::NodeName::new("origin").expect("a valid name");
    courseway_origin::Origin::start(
        courseway_origin::OriginConfig {
            name: name.clone(),
            listen: loopback(),
            store: courseway_store::StoreConfig::new(dir.join("origin"), 1 << 30),
            transport: courseway_net::TransportConfig::default(),
            catalog_validity: std::time::Duration::from_secs(86_400),
        },
        keys.enroll(courseway_proto::Role::Origin, &name)
            .expect("an enrollment"),
        keys.online_key(courseway_node::clock::now()),
    )
    .await
    .expect("the origin starts")
}
