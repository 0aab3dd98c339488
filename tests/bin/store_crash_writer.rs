//! Helper process for the store crash test: opens a store and writes, pins, reads and removes
//! chunks until it is killed. Prints `ready` once the store has opened.
//!
//! Usage: store-crash-writer DB_PATH SEED

use std::io::Write;

use courseway_store::{PinReason, Store, StoreConfig};
use courseway_tests::{crash_chunk, CRASH_BUDGET, CRASH_MEMTABLE};

fn main() {
    let mut args = std::env::args().skip(1);
    let (Some(path), Some(seed)) = (args.next(), args.next().and_then(|s| s.parse::<u64>().ok())) else {
        eprintln!("usage: store-crash-writer DB_PATH SEED");
        std::process::exit(2);
    };
    let mut config = StoreConfig::new(path, CRASH_BUDGET);
    config.memtable_bytes = CRASH_MEMTABLE;
    let store = match Store::open(config) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("open failed: {e}");
            std::process::exit(1);
        }
    };
    println!("ready");
    std::io::stdout().flush().expect("stdout");
    for n in 0u64.. {
        let (id, bytes) = crash_chunk(seed, n);
        if let Err(e) = store.put(id, &bytes) {
            eprintln!("put failed: {e}");
        }
        match n % 17 {
            3 => store
                .pin(&[id], PinReason::Scheduled, &format!("lesson-{}", n % 5))
                .expect("pin"),
            7 => {
                store
                    .unpin_holder(PinReason::Scheduled, &format!("lesson-{}", n % 5))
                    .expect("unpin");
            }
            11 => {
                let _ = store.remove(&crash_chunk(seed, n.saturating_sub(3)).0);
            }
            13 => store.flush_policy().expect("flush"),
            _ => {
                let _ = store.get(&crash_chunk(seed, n.saturating_sub(1)).0, 0);
            }
        }
    }
}
