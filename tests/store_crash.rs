//! Crash test: a child process writes to a store continuously and is killed with SIGKILL at
//! random moments. After every kill the store must open without repair and every chunk it
//! reports present must verify against its hash, with entries and bodies matching one to one.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::Duration;

use courseway_store::{Store, StoreConfig};
use courseway_tests::{CRASH_BUDGET, CRASH_MEMTABLE};
use rand::{Rng, SeedableRng};

const ROUNDS: usize = 25;

#[test]
fn crash_store_survives_sigkill_during_writes() {
    let seed: u64 = std::env::var("CRASH_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(rand::random);
    println!("crash test seed {seed} (set CRASH_SEED to replay)");
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("db");
    let mut total_verified = 0u64;
    let mut max_chunks = 0u64;

    for round in 0..ROUNDS {
        let mut child = Command::new(env!("CARGO_BIN_EXE_store-crash-writer"))
            .arg(&db)
            .arg((seed ^ round as u64).to_string())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn the writer");
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        assert_eq!(
            line.trim(),
            "ready",
            "round {round}: the writer could not open the store after the last kill"
        );

        std::thread::sleep(Duration::from_millis(rng.gen_range(30..1500)));
        child.kill().expect("SIGKILL the writer");
        let status = child.wait().unwrap();
        assert!(!status.success(), "the writer was killed, not finished");

        let mut config = StoreConfig::new(&db, CRASH_BUDGET);
        config.memtable_bytes = CRASH_MEMTABLE;
        let store = Store::open(config).unwrap_or_else(|e| panic!("round {round}: reopen failed: {e}"));
        let report = store.verify_all().unwrap();
        assert!(report.is_clean(), "round {round}: {report:?}");
        let stats = store.stats();
        assert_eq!(
            stats.chunks, report.verified,
            "round {round}: index and verified bodies differ"
        );
        assert!(
            stats.used_bytes <= CRASH_BUDGET,
            "round {round}: budget exceeded: {stats:?}"
        );
        for id in store.chunk_ids() {
            let bytes = store.get(&id, 0).unwrap().expect("listed chunk is readable");
            id.verify(&bytes).unwrap();
        }
        total_verified += report.verified;
        max_chunks = max_chunks.max(stats.chunks);
    }
    println!("{ROUNDS} SIGKILL rounds; {total_verified} chunk verifications; up to {max_chunks} chunks held");
    assert!(
        max_chunks > 0,
        "the writer never got a chunk stored; the test proved nothing"
    );
}
