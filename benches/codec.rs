//! Wire codec encode and decode throughput.

use courseway_content::encoding::{Decode, Encode};
use courseway_content::synthetic::SyntheticLesson;
use courseway_content::{ChunkId, LessonId, LessonManifest};
use courseway_proto::{
    encode_request, encode_response, try_decode_request, try_decode_response, ChunkHeader, GetChunk, ManifestReply,
    Request, Response,
};
use criterion::{criterion_group, criterion_main, Criterion, Throughput};

fn codec(c: &mut Criterion) {
    let mut group = c.benchmark_group("codec");
    let req = Request::GetChunk(GetChunk {
        id: ChunkId::of(b"x"),
        offset: 0,
    });
    let mut req_bytes = Vec::new();
    encode_request(&req, &mut req_bytes).unwrap();
    group.throughput(Throughput::Elements(1));
    group.bench_function("get_chunk_encode", |b| {
        let mut buf = Vec::with_capacity(64);
        b.iter(|| {
            buf.clear();
            encode_request(&req, &mut buf).unwrap();
        })
    });
    group.bench_function("get_chunk_decode", |b| {
        b.iter(|| try_decode_request(&req_bytes).unwrap().unwrap())
    });
    let header = Response::Chunk(ChunkHeader {
        id: ChunkId::of(b"x"),
        size: 1 << 20,
        offset: 0,
    });
    let mut header_bytes = Vec::new();
    encode_response(&header, &mut header_bytes).unwrap();
    group.bench_function("chunk_header_decode", |b| {
        b.iter(|| try_decode_response(&header_bytes).unwrap().unwrap())
    });

    // A one-hour lesson (900 segments × 3 renditions): the biggest frame a station routinely gets.
    // Built with a one-segment synthetic lesson, then stretched to 900 segments (generating an
    // hour of synthetic media just to hash it would dominate the benchmark's set-up).
    let mut manifest = SyntheticLesson::standard(LessonId::new("bench").unwrap(), 1, 1)
        .build()
        .manifest;
    for (r, rendition) in manifest.renditions.iter_mut().enumerate() {
        let template = rendition.segments[0].clone();
        rendition.segments = (0..900u32)
            .map(|i| {
                let mut s = template.clone();
                s.chunks[0].id = ChunkId::of(&[r as u8, (i >> 8) as u8, i as u8]);
                s
            })
            .collect();
    }
    let bytes = manifest.to_bytes();
    group.throughput(Throughput::Bytes(bytes.len() as u64));
    group.bench_function("manifest_1h_encode", |b| b.iter(|| manifest.to_bytes()));
    group.bench_function("manifest_1h_decode", |b| {
        b.iter(|| LessonManifest::from_bytes(&bytes).unwrap())
    });
    let frame = Response::Manifest(ManifestReply { bytes: bytes.clone() });
    let mut frame_bytes = Vec::new();
    encode_response(&frame, &mut frame_bytes).unwrap();
    group.bench_function("manifest_1h_frame_decode", |b| {
        b.iter(|| try_decode_response(&frame_bytes).unwrap().unwrap())
    });
    group.finish();
}

criterion_group!(benches, codec);
criterion_main!(benches);
