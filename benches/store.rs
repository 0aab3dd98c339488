//! Store put and get throughput on RocksDB (including hash verification on both paths).

use courseway_content::synthetic::pseudo_random;
use courseway_content::ChunkId;
use courseway_store::{Store, StoreConfig};
use criterion::{criterion_group, criterion_main, Criterion, Throughput};

const CHUNK: usize = 256 * 1024;

fn chunks(seed: u64, n: usize) -> Vec<(ChunkId, Vec<u8>)> {
    (0..n as u64)
        .map(|i| {
            let bytes = pseudo_random(seed, &[i], CHUNK);
            (ChunkId::of(&bytes), bytes)
        })
        .collect()
}

fn store(c: &mut Criterion) {
    let dir = tempfile::tempdir().unwrap();
    // Budget large enough that puts do not evict: measures the write path itself.
    let store = Store::open(StoreConfig::new(dir.path().join("put"), 64 << 30)).unwrap();
    let mut seed = 0;
    let mut group = c.benchmark_group("store");
    group.throughput(Throughput::Bytes((CHUNK * 64) as u64));
    group.sample_size(20);
    group.bench_function("put_64x256KiB", |b| {
        b.iter_batched(
            || {
                seed += 1;
                chunks(seed, 64)
            },
            |batch| {
                for (id, bytes) in &batch {
                    store.put(*id, bytes).unwrap();
                }
            },
            criterion::BatchSize::PerIteration,
        )
    });

    // Eviction path: a budget of 32 MiB, so every put past warm-up evicts.
    let evicting = Store::open(StoreConfig::new(dir.path().join("evict"), 32 << 20)).unwrap();
    group.bench_function("put_64x256KiB_evicting", |b| {
        b.iter_batched(
            || {
                seed += 1;
                chunks(seed, 64)
            },
            |batch| {
                for (id, bytes) in &batch {
                    evicting.put(*id, bytes).unwrap();
                }
            },
            criterion::BatchSize::PerIteration,
        )
    });

    let hot = chunks(u64::MAX, 64);
    for (id, bytes) in &hot {
        store.put(*id, bytes).unwrap();
    }
    // With verify_on_read: these chunks were put by this process, so no read hashes them again
    // (a chunk is hashed on its first read after open only; see StoreConfig::verify_on_read).
    // Before that change this case re-hashed on every read: 563 MiB/s on 2026-11-22.
    group.bench_function("get_64x256KiB_verified_once", |b| {
        b.iter(|| {
            for (id, _) in &hot {
                store.get(id, 0).unwrap().unwrap();
            }
        })
    });
    let mut config = StoreConfig::new(dir.path().join("noverify"), 64 << 30);
    config.verify_on_read = false;
    let unverified = Store::open(config).unwrap();
    for (id, bytes) in &hot {
        unverified.put(*id, bytes).unwrap();
    }
    group.bench_function("get_64x256KiB_unverified", |b| {
        b.iter(|| {
            for (id, _) in &hot {
                unverified.get(id, 0).unwrap().unwrap();
            }
        })
    });
    group.finish();
}

criterion_group!(benches, store);
criterion_main!(benches);
