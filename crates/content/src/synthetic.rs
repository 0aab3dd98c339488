//! Deterministic synthetic courseware: lessons whose bytes come from a seed.
//!
//! Used by the demo, the tests and the benchmarks wherever a real lesson is not needed. The
//! bytes are a BLAKE3 keyed stream, so they do not compress and do not repeat across segments,
//! like real media. No IO: the caller stores the chunks wherever it likes.

use std::collections::BTreeMap;

use crate::chunk::{ChunkId, ChunkRef};
use crate::chunking::{attachment_ranges, refs_for, segment_ranges};
use crate::lesson::{Attachment, Category, LessonManifest, Rendition, RenditionKind, Segment};
use crate::name::LessonId;

/// The shape of a synthetic lesson.
#[derive(Debug, Clone)]
pub struct SyntheticLesson {
    pub id: LessonId,
    pub title: String,
    pub seed: u64,
    /// Number of media segments in each rendition.
    pub segments: u32,
    pub segment_duration_ms: u32,
    /// Renditions as (name, kind, bits per second).
    pub renditions: Vec<(String, RenditionKind, u32)>,
    /// Size of one attachment in bytes (0 for none).
    pub attachment_size: usize,
}

impl SyntheticLesson {
    /// A lesson with the default ladder (720p 1.5 Mbit/s, 360p 0.5 Mbit/s, audio 64 kbit/s).
    pub fn standard(id: LessonId, seed: u64, segments: u32) -> Self {
        Self {
            title: format!("合成课程 {id}"),
            id,
            seed,
            segments,
            segment_duration_ms: 4_000,
            renditions: vec![
                (
                    "720p".into(),
                    RenditionKind::Video {
                        width: 1280,
                        height: 720,
                    },
                    1_500_000,
                ),
                (
                    "360p".into(),
                    RenditionKind::Video {
                        width: 640,
                        height: 360,
                    },
                    500_000,
                ),
                ("audio".into(), RenditionKind::Audio, 64_000),
            ],
            attachment_size: 300_000,
        }
    }

    /// A lesson with the default ladder and about `bytes` of content in all (at least one
    /// segment).
    pub fn of_size(id: LessonId, seed: u64, bytes: u64) -> Self {
        let mut lesson = Self::standard(id, seed, 1);
        let per_segment: u64 = lesson
            .renditions
            .iter()
            .map(|(_, _, bps)| u64::from(*bps) * u64::from(lesson.segment_duration_ms) / 8_000)
            .sum();
        let media = bytes.saturating_sub(lesson.attachment_size as u64);
        lesson.segments = media.div_ceil(per_segment).clamp(1, u64::from(u32::MAX)) as u32;
        lesson
    }

    /// Builds the manifest and every chunk's bytes.
    pub fn build(&self) -> BuiltLesson {
        let mut chunks = BTreeMap::new();
        let mut renditions = Vec::new();
        for (r_index, (name, kind, bandwidth)) in self.renditions.iter().enumerate() {
            let segment_bytes = (u64::from(*bandwidth) * u64::from(self.segment_duration_ms) / 8_000) as usize;
            let mut segments = Vec::new();
            for s in 0..self.segments {
                let data = pseudo_random(self.seed, &[r_index as u64, u64::from(s)], segment_bytes.max(1));
                let refs = refs_for(&data, &segment_ranges(&data));
                for (r, range) in refs.iter().zip(segment_ranges(&data)) {
                    chunks.insert(r.id, data[range].to_vec());
                }
                segments.push(Segment {
                    duration_ms: self.segment_duration_ms,
                    chunks: refs,
                });
            }
            renditions.push(Rendition {
                name: name.clone(),
                kind: *kind,
                bandwidth: *bandwidth,
                codecs: match kind {
                    RenditionKind::Video { .. } => "avc1.4d401f,mp4a.40.2".into(),
                    RenditionKind::Audio => "mp4a.40.2".into(),
                },
                segments,
            });
        }
        let mut attachments = Vec::new();
        if self.attachment_size > 0 {
            let data = pseudo_random(self.seed, &[u64::MAX], self.attachment_size);
            let ranges = attachment_ranges(&data);
            let refs: Vec<ChunkRef> = refs_for(&data, &ranges);
            for (r, range) in refs.iter().zip(ranges) {
                chunks.insert(r.id, data[range].to_vec());
            }
            attachments.push(Attachment {
                name: "讲义.pdf".into(),
                media_type: "application/pdf".into(),
                chunks: refs,
            });
        }
        let manifest = LessonManifest {
            id: self.id.clone(),
            version: 1,
            title: self.title.clone(),
            publisher: "市委组织部".into(),
            category: Category::Required,
            tags: vec!["synthetic".into()],
            language: "zh-CN".into(),
            duration_ms: u64::from(self.segments) * u64::from(self.segment_duration_ms),
            renditions,
            attachments,
        };
        BuiltLesson { manifest, chunks }
    }
}

/// A synthetic lesson's manifest and the bytes of each of its chunks.
#[derive(Debug, Clone)]
pub struct BuiltLesson {
    pub manifest: LessonManifest,
    pub chunks: BTreeMap<ChunkId, Vec<u8>>,
}

/// `len` bytes from a BLAKE3 keyed stream selected by `seed` and `path`.
pub fn pseudo_random(seed: u64, path: &[u64], len: usize) -> Vec<u8> {
    let mut key = [0u8; 32];
    key[..8].copy_from_slice(&seed.to_le_bytes());
    let mut hasher = blake3::Hasher::new_keyed(&key);
    for p in path {
        hasher.update(&p.to_le_bytes());
    }
    let mut out = vec![0u8; len];
    hasher.finalize_xof().fill(&mut out);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::encoding::{Decode, Encode};

    #[test]
    fn synthetic_lesson_is_deterministic_and_consistent() {
        let spec = SyntheticLesson::standard(LessonId::new("demo-1").unwrap(), 7, 3);
        let a = spec.build();
        let b = spec.build();
        assert_eq!(a.manifest, b.manifest);
        assert_eq!(a.manifest.hash(), b.manifest.hash());
        for r in a.manifest.chunk_refs() {
            let bytes = &a.chunks[&r.id];
            assert_eq!(bytes.len(), r.size as usize);
            r.id.verify(bytes).unwrap();
        }
        // 720p at 1.5 Mbit/s for 4 s is 750,000 bytes: one chunk per segment.
        assert_eq!(a.manifest.renditions[0].segments[0].chunks.len(), 1);
        assert_eq!(LessonManifest::from_bytes(&a.manifest.to_bytes()).unwrap(), a.manifest);
    }

    #[test]
    fn of_size_comes_within_one_segment_of_the_size_asked() {
        for mb in [1u64, 8, 20] {
            let built = SyntheticLesson::of_size(LessonId::new("sized").unwrap(), 1, mb * 1_000_000).build();
            let total: u64 = built.chunks.values().map(|c| c.len() as u64).sum();
            // One segment across the ladder is 1,032,000 bytes.
            assert!(
                total >= mb * 1_000_000 && total < mb * 1_000_000 + 1_032_000,
                "{mb} MB: {total}"
            );
        }
    }
}
