//! BLAKE3 chunk hashing and chunking throughput.

use courseway_content::chunking::{attachment_ranges, refs_for, segment_ranges};
use courseway_content::synthetic::pseudo_random;
use courseway_content::ChunkId;
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};

fn hashing(c: &mut Criterion) {
    let mut group = c.benchmark_group("chunk_hash");
    for size in [64 * 1024, 256 * 1024, 1 << 20] {
        let data = pseudo_random(1, &[], size);
        group.throughput(Throughput::Bytes(size as u64));
        group.bench_with_input(BenchmarkId::from_parameter(size), &data, |b, d| {
            b.iter(|| ChunkId::of(d))
        });
    }
    group.finish();

    let data = pseudo_random(2, &[], 16 << 20);
    let mut group = c.benchmark_group("chunking_16MiB");
    group.throughput(Throughput::Bytes(data.len() as u64));
    group.sample_size(20);
    group.bench_function("attachment_cdc_and_hash", |b| {
        b.iter(|| refs_for(&data, &attachment_ranges(&data)))
    });
    group.bench_function("segment_fixed_and_hash", |b| {
        b.iter(|| refs_for(&data, &segment_ranges(&data)))
    });
    group.finish();
}

criterion_group!(benches, hashing);
criterion_main!(benches);
