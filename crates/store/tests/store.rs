//! Store behaviour on a real RocksDB in a temporary directory.

use courseway_content::synthetic::pseudo_random;
use courseway_content::ChunkId;
use courseway_store::*;

fn chunk(n: u64, len: usize) -> (ChunkId, Vec<u8>) {
    let bytes = pseudo_random(n, &[], len);
    (ChunkId::of(&bytes), bytes)
}

fn open(dir: &tempfile::TempDir, budget: u64) -> Store {
    Store::open(StoreConfig::new(dir.path().join("db"), budget)).unwrap()
}

#[test]
fn put_get_and_resume_from_offset() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(&dir, 10 << 20);
    let (id, bytes) = chunk(1, 300_000);
    assert!(!store.has(&id));
    assert_eq!(store.get(&id, 0).unwrap(), None);
    assert_eq!(store.put(id, &bytes).unwrap(), PutOutcome::Stored);
    assert_eq!(store.put(id, &bytes).unwrap(), PutOutcome::AlreadyPresent);
    assert!(store.has(&id));
    assert_eq!(store.size_of(&id), Some(300_000));
    assert_eq!(store.get(&id, 0).unwrap().unwrap(), bytes);
    assert_eq!(store.get(&id, 123_456).unwrap().unwrap(), &bytes[123_456..]);
    assert_eq!(store.get(&id, 300_000).unwrap().unwrap(), Vec::<u8>::new());
    assert!(matches!(
        store.get(&id, 300_001),
        Err(StoreError::OffsetBeyondEnd { .. })
    ));
}

#[test]
fn a_chunk_that_does_not_match_its_id_is_never_written() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(&dir, 10 << 20);
    let (id, mut bytes) = chunk(2, 1000);
    bytes[10] ^= 0x40;
    let err = store.put(id, &bytes).unwrap_err();
    assert!(matches!(err, StoreError::HashMismatch(_)), "{err}");
    assert!(!store.has(&id));
    assert_eq!(store.stats().used_bytes, 0);
    drop(store);
    assert!(open(&dir, 10 << 20).verify_all().unwrap().is_clean());
}

#[test]
fn oversized_chunks_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(&dir, 10 << 20);
    let (id, bytes) = chunk(3, (1 << 20) + 1);
    assert!(matches!(store.put(id, &bytes), Err(StoreError::TooLarge { .. })));
}

#[test]
fn the_budget_is_kept_by_eviction() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(&dir, 1_000_000);
    for n in 0..50 {
        let (id, bytes) = chunk(n, 100_000);
        store.put(id, &bytes).unwrap();
        assert!(store.stats().used_bytes <= 1_000_000);
    }
    let stats = store.stats();
    assert_eq!(stats.chunks, 10);
    assert_eq!(stats.evicted_chunks, 40);
    assert_eq!(stats.evicted_bytes, 4_000_000);
    let v = store.verify_all().unwrap();
    assert!(v.is_clean(), "{v:?}");
    assert_eq!(v.verified, 10);
}

#[test]
fn pins_protect_chunks_and_survive_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let (pinned_id, pinned_bytes) = chunk(100, 100_000);
    {
        let store = open(&dir, 500_000);
        store.pin(&[pinned_id], PinReason::Scheduled, "lesson-1").unwrap();
        store.put(pinned_id, &pinned_bytes).unwrap();
    }
    let store = open(&dir, 500_000);
    assert!(store.is_pinned(&pinned_id));
    for n in 0..40 {
        let (id, bytes) = chunk(n, 100_000);
        store.put(id, &bytes).unwrap();
    }
    assert!(store.has(&pinned_id), "a pinned chunk was evicted");
    assert!(matches!(store.remove(&pinned_id), Err(StoreError::Pinned { .. })));
    // Two holders: the chunk stays pinned until both let go.
    store.pin(&[pinned_id], PinReason::LiveWindow, "ch-1").unwrap();
    assert_eq!(store.unpin_holder(PinReason::Scheduled, "lesson-1").unwrap(), 1);
    assert!(store.is_pinned(&pinned_id));
    assert_eq!(store.unpin_holder(PinReason::LiveWindow, "ch-1").unwrap(), 1);
    assert!(!store.is_pinned(&pinned_id));
    assert!(store.remove(&pinned_id).unwrap());
}

#[test]
fn pin_holders_lists_each_holder_once_per_reason() {
    let dir = tempfile::tempdir().unwrap();
    let ids: Vec<ChunkId> = (0..4).map(|n| chunk(200 + n, 10).0).collect();
    {
        let store = open(&dir, 1 << 20);
        assert!(store.pin_holders(PinReason::Scheduled).unwrap().is_empty());
        store.pin(&ids, PinReason::Scheduled, "lesson-b").unwrap();
        store.pin(&ids[..1], PinReason::Scheduled, "lesson-a").unwrap();
        // A holder whose name extends another's, and one whose chunk id is all ones.
        store.pin(&ids[1..2], PinReason::Scheduled, "lesson-a2").unwrap();
        store
            .pin(&[ChunkId::from_bytes([0xff; 32])], PinReason::Scheduled, "x")
            .unwrap();
        store.pin(&ids, PinReason::LiveWindow, "ch-1").unwrap();
    }
    let store = open(&dir, 1 << 20);
    assert_eq!(
        store.pin_holders(PinReason::Scheduled).unwrap(),
        ["lesson-a", "lesson-a2", "lesson-b", "x"]
    );
    assert_eq!(store.pin_holders(PinReason::LiveWindow).unwrap(), ["ch-1"]);
    assert!(store.pin_holders(PinReason::OriginOwned).unwrap().is_empty());
    store.unpin_holder(PinReason::Scheduled, "lesson-b").unwrap();
    // lesson-a still pins the chunk it shared with lesson-b.
    assert!(store.is_pinned(&ids[0]));
    assert_eq!(
        store.pin_holders(PinReason::Scheduled).unwrap(),
        ["lesson-a", "lesson-a2", "x"]
    );
}

#[test]
fn a_store_full_of_pins_refuses_new_chunks_with_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(&dir, 300_000);
    let chunks: Vec<_> = (0..3).map(|n| chunk(n, 100_000)).collect();
    let ids: Vec<_> = chunks.iter().map(|(id, _)| *id).collect();
    store.pin(&ids, PinReason::OriginOwned, "origin").unwrap();
    for (id, bytes) in &chunks {
        store.put(*id, bytes).unwrap();
    }
    let (id, bytes) = chunk(9, 100_000);
    let err = store.put(id, &bytes).unwrap_err();
    assert!(
        matches!(err, StoreError::Budget(PolicyError::BudgetExhausted { .. })),
        "{err}"
    );
    assert!(err.to_string().contains("raise the store budget"), "{err}");
    assert!(!store.has(&id));
    assert!(store.verify_all().unwrap().is_clean());
}

#[test]
fn eviction_state_survives_a_restart() {
    // Warm a hot set into the main queue, restart, then scan: the hot set must survive, which it
    // would not if the queues were rebuilt without their persisted order and membership.
    let dir = tempfile::tempdir().unwrap();
    let budget = 2_000_000;
    let hot: Vec<_> = (0..10).map(|n| chunk(n, 100_000)).collect();
    {
        let store = open(&dir, budget);
        for (id, bytes) in &hot {
            store.put(*id, bytes).unwrap();
            store.get(id, 0).unwrap();
        }
        // Push the hot set through the small queue into main.
        for n in 100..115 {
            let (id, bytes) = chunk(n, 100_000);
            store.put(id, &bytes).unwrap();
        }
        assert!(hot.iter().all(|(id, _)| store.has(id)));
    }
    let store = open(&dir, budget);
    let before = store.stats();
    assert!(before.main_bytes >= 1_000_000, "{before:?}");
    for n in 1000..1100 {
        let (id, bytes) = chunk(n, 100_000);
        store.put(id, &bytes).unwrap();
    }
    let survivors = hot.iter().filter(|(id, _)| store.has(id)).count();
    assert_eq!(survivors, hot.len(), "the hot set was flushed by a scan after restart");
}

#[test]
fn a_chunk_damaged_on_disk_is_dropped_not_served() {
    let dir = tempfile::tempdir().unwrap();
    let (id, bytes) = chunk(7, 50_000);
    {
        let store = open(&dir, 10 << 20);
        store.put(id, &bytes).unwrap();
    }
    {
        // Simulate bit rot: rewrite the body behind the store's back.
        let cfs = ["chunks", "entries", "ghosts", "pins", "meta"];
        let db = rocksdb::DB::open_cf(&rocksdb::Options::default(), dir.path().join("db"), cfs).unwrap();
        let mut damaged = bytes.clone();
        damaged[0] ^= 1;
        db.put_cf(db.cf_handle("chunks").unwrap(), id.as_bytes(), &damaged)
            .unwrap();
    }
    let store = open(&dir, 10 << 20);
    assert_eq!(store.verify_all().unwrap().corrupt, vec![id]);
    let err = store.get(&id, 0).unwrap_err();
    assert!(matches!(err, StoreError::Corrupt { .. }), "{err}");
    assert!(!store.has(&id));
    assert_eq!(store.stats().corrupt_chunks, 1);
    assert_eq!(store.get(&id, 0).unwrap(), None);
    // It can be fetched again.
    store.put(id, &bytes).unwrap();
    assert_eq!(store.get(&id, 0).unwrap().unwrap(), bytes);
}

#[test]
fn a_chunk_is_hashed_on_its_first_read_after_open_and_not_again() {
    let dir = tempfile::tempdir().unwrap();
    let (id, bytes) = chunk(8, 40_000);
    {
        let store = open(&dir, 10 << 20);
        store.put(id, &bytes).unwrap();
        // Written by this process: hashed on the way in, not again on the way out.
        for _ in 0..3 {
            assert_eq!(store.get(&id, 0).unwrap().unwrap(), bytes);
        }
        assert_eq!(store.stats().hashed_reads, 0);
    }
    let store = open(&dir, 10 << 20);
    for offset in [0, 10, 0] {
        assert_eq!(store.get(&id, offset).unwrap().unwrap(), bytes[offset as usize..]);
    }
    assert_eq!(store.stats().hashed_reads, 1, "hashed once after the reopen");
    // Removed and stored again: hashed by the put, so still once.
    assert!(store.remove(&id).unwrap());
    store.put(id, &bytes).unwrap();
    assert_eq!(store.get(&id, 0).unwrap().unwrap(), bytes);
    assert_eq!(store.stats().hashed_reads, 1);
}

#[test]
fn a_shrunk_budget_is_honoured_after_reopen() {
    let dir = tempfile::tempdir().unwrap();
    {
        let store = open(&dir, 2_000_000);
        for n in 0..20 {
            let (id, bytes) = chunk(n, 100_000);
            store.put(id, &bytes).unwrap();
        }
    }
    let store = open(&dir, 500_000);
    let (id, bytes) = chunk(99, 100_000);
    store.put(id, &bytes).unwrap();
    assert!(store.stats().used_bytes <= 500_000);
    assert!(store.verify_all().unwrap().is_clean());
}

#[test]
fn meta_values_round_trip() {
    let dir = tempfile::tempdir().unwrap();
    {
        let store = open(&dir, 1 << 20);
        store.put_meta(b"catalog", b"v7", Durability::Synced).unwrap();
        store.put_meta(b"tmp", b"x", Durability::Buffered).unwrap();
        store.delete_meta(b"tmp", Durability::Synced).unwrap();
    }
    let store = open(&dir, 1 << 20);
    assert_eq!(store.get_meta(b"catalog").unwrap().as_deref(), Some(&b"v7"[..]));
    assert_eq!(store.get_meta(b"tmp").unwrap(), None);
}

#[test]
fn meta_scans_stay_inside_their_prefix_and_batches_are_atomic() {
    let dir = tempfile::tempdir().unwrap();
    {
        let store = open(&dir, 1 << 20);
        store.put_meta(b"outbox/a", b"", Durability::Synced).unwrap();
        store
            .write_meta(
                &[(b"outbox/rec/2", b"two"), (b"outbox/rec/1", b"one"), (b"outboy", b"no")],
                &[b"outbox/a"],
                Durability::Synced,
            )
            .unwrap();
        store.put_meta(b"outbox/rec/3", b"three", Durability::Synced).unwrap();
    }
    let store = open(&dir, 1 << 20);
    let all = store.scan_meta(b"outbox/", 100).unwrap();
    let keys: Vec<&[u8]> = all.iter().map(|(k, _)| k.as_slice()).collect();
    assert_eq!(keys, vec![&b"outbox/rec/1"[..], b"outbox/rec/2", b"outbox/rec/3"]);
    assert_eq!(all[0].1, b"one");
    assert_eq!(store.scan_meta(b"outbox/rec/", 2).unwrap().len(), 2);
    assert_eq!(
        store.last_meta_key(b"outbox/rec/").unwrap().as_deref(),
        Some(&b"outbox/rec/3"[..])
    );
    assert_eq!(store.last_meta_key(b"nothing/").unwrap(), None);
    assert!(store.scan_meta(b"zzz", 10).unwrap().is_empty());
}

#[test]
fn opening_a_path_that_is_a_file_says_what_is_wrong() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("not-a-dir");
    std::fs::write(&file, b"x").unwrap();
    let err = Store::open(StoreConfig::new(&file, 1 << 20)).unwrap_err();
    assert!(matches!(err, StoreError::Open { .. }));
    assert!(err.to_string().contains("not-a-dir"), "{err}");
}

#[test]
fn concurrent_writers_and_readers_keep_memory_and_disk_in_step() {
    // Writes are serialised but readers do not wait for them: while a batch is in flight the
    // readers must see either the old or the new state, never a stored chunk without its body.
    let dir = tempfile::tempdir().unwrap();
    let store = std::sync::Arc::new(open(&dir, 2_000_000));
    let chunks: Vec<_> = (0..60)
        .map(|n| chunk(1_000 + n, 50_000 + (n as usize % 7) * 10_000))
        .collect();
    let chunks = std::sync::Arc::new(chunks);
    let threads: Vec<_> = (0..4u64)
        .map(|t| {
            let (store, chunks) = (store.clone(), chunks.clone());
            std::thread::spawn(move || {
                for round in 0..200u64 {
                    let n = ((round * 7 + t * 13) % chunks.len() as u64) as usize;
                    let (id, bytes) = &chunks[n];
                    match (t + round) % 4 {
                        0 | 1 => {
                            store.put(*id, bytes).unwrap();
                        }
                        2 => {
                            if let Some(got) = store.get(id, 0).unwrap() {
                                assert_eq!(&got, bytes);
                            }
                        }
                        _ => {
                            store.remove(id).unwrap();
                        }
                    }
                    if round % 50 == 0 {
                        store.flush_policy().unwrap();
                    }
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    let stats = store.stats();
    assert_eq!(stats.corrupt_chunks, 0, "a reader saw an entry without its body");
    assert!(stats.used_bytes <= 2_000_000);
    let v = store.verify_all().unwrap();
    assert!(v.is_clean(), "{v:?}");
    let mut live = store.chunk_ids();
    drop(store);
    let reopened = open(&dir, 2_000_000);
    let mut rebuilt = reopened.chunk_ids();
    live.sort();
    rebuilt.sort();
    assert_eq!(live, rebuilt, "the state rebuilt from disk differs from the live state");
}
