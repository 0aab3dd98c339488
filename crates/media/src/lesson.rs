//! A lesson manifest and its chunks from a transcode's output and the lesson's attachments.
//!
//! Media segments are kept whole when they fit in a chunk and cut at 1 MiB otherwise;
//! attachments (PDF, slides, any file) are cut at content-defined boundaries, so a re-published
//! attachment shares most chunks with the old one (see `courseway_content::chunking`). The
//! result goes straight to the origin's `publish(&[(manifest, &chunks)])`.
//!
//! [`assemble`] is the pure core (bytes in, manifest and chunk map out); [`build_manifest`] and
//! [`build_lesson`] read the segment files of a [`TranscodeOutput`] one at a time.

use std::collections::BTreeMap;
use std::path::PathBuf;

use courseway_content::chunking::{attachment_ranges, refs_for, segment_ranges};
use courseway_content::{Attachment, Category, ChunkId, LessonId, LessonManifest, Rendition, RenditionKind, Segment};

use crate::transcode::TranscodeOutput;

/// The descriptive fields of a lesson (everything but its media).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LessonMeta {
    pub id: LessonId,
    pub version: u32,
    pub title: String,
    pub publisher: String,
    pub category: Category,
    pub tags: Vec<String>,
    pub language: String,
}

/// A file that goes with the lesson.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AttachmentInput {
    pub name: String,
    /// IANA media type, e.g. `application/pdf`.
    pub media_type: String,
    pub bytes: Vec<u8>,
}

/// One rendition's description and the bytes and duration of each of its segments.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RenditionBytes {
    pub name: String,
    pub kind: RenditionKind,
    pub bandwidth: u32,
    pub codecs: String,
    /// (bytes, duration in milliseconds) of each segment, in order.
    pub segments: Vec<(Vec<u8>, u32)>,
}

/// A manifest and the bytes of every chunk it references.
#[derive(Debug, Clone)]
pub struct LessonBuild {
    pub manifest: LessonManifest,
    pub chunks: BTreeMap<ChunkId, Vec<u8>>,
}

/// Why a lesson could not be built from a transcode's output.
#[derive(Debug, thiserror::Error)]
#[error("cannot read segment {}: {source}", path.display())]
pub struct LessonError {
    pub path: PathBuf,
    #[source]
    pub source: std::io::Error,
}

/// The chunks of `data` at `ranges`, each handed to `chunk` with its id.
fn chunked(
    data: &[u8],
    ranges: &[std::ops::Range<usize>],
    chunk: &mut dyn FnMut(ChunkId, &[u8]),
) -> Vec<courseway_content::ChunkRef> {
    let refs = refs_for(data, ranges);
    for (r, range) in refs.iter().zip(ranges) {
        chunk(r.id, &data[range.clone()]);
    }
    refs
}

/// A media segment: kept whole up to 1 MiB, else cut at 1 MiB offsets.
pub fn segment(data: &[u8], duration_ms: u32, chunk: &mut dyn FnMut(ChunkId, &[u8])) -> Segment {
    Segment {
        duration_ms,
        chunks: chunked(data, &segment_ranges(data), chunk),
    }
}

/// An attachment, cut at content-defined boundaries.
pub fn attachment(input: &AttachmentInput, chunk: &mut dyn FnMut(ChunkId, &[u8])) -> Attachment {
    Attachment {
        name: input.name.clone(),
        media_type: input.media_type.clone(),
        chunks: chunked(&input.bytes, &attachment_ranges(&input.bytes), chunk),
    }
}

fn manifest(
    meta: LessonMeta,
    duration_ms: u64,
    renditions: Vec<Rendition>,
    attachments: Vec<Attachment>,
) -> LessonManifest {
    LessonManifest {
        id: meta.id,
        version: meta.version,
        title: meta.title,
        publisher: meta.publisher,
        category: meta.category,
        tags: meta.tags,
        language: meta.language,
        duration_ms,
        renditions,
        attachments,
    }
}

/// Builds the manifest and chunk map from renditions' segment bytes and attachments (pure).
pub fn assemble(
    meta: LessonMeta,
    duration_ms: u64,
    renditions: Vec<RenditionBytes>,
    attachments: &[AttachmentInput],
) -> LessonBuild {
    let mut chunks = BTreeMap::new();
    let mut keep = |id: ChunkId, bytes: &[u8]| {
        chunks.entry(id).or_insert_with(|| bytes.to_vec());
    };
    let renditions = renditions
        .into_iter()
        .map(|r| Rendition {
            segments: r
                .segments
                .iter()
                .map(|(data, ms)| segment(data, *ms, &mut keep))
                .collect(),
            name: r.name,
            kind: r.kind,
            bandwidth: r.bandwidth,
            codecs: r.codecs,
        })
        .collect();
    let attachments = attachments.iter().map(|a| attachment(a, &mut keep)).collect();
    LessonBuild {
        manifest: manifest(meta, duration_ms, renditions, attachments),
        chunks,
    }
}

/// Reads the segments of `output` one at a time and builds the manifest with `attachments`,
/// handing every chunk to `chunk` (which may store it, or drop it when only the manifest is
/// wanted, as for playlists).
pub fn build_manifest(
    meta: LessonMeta,
    output: &TranscodeOutput,
    attachments: &[AttachmentInput],
    mut chunk: impl FnMut(ChunkId, &[u8]),
) -> Result<LessonManifest, LessonError> {
    let mut renditions = Vec::new();
    for r in &output.renditions {
        let mut segments = Vec::new();
        for s in &r.segments {
            let bytes = std::fs::read(&s.path).map_err(|source| LessonError {
                path: s.path.clone(),
                source,
            })?;
            let ms = s.duration.as_millis().min(u128::from(u32::MAX)) as u32;
            segments.push(segment(&bytes, ms, &mut chunk));
        }
        renditions.push(Rendition {
            name: r.name.clone(),
            kind: r.kind,
            bandwidth: r.peak_bandwidth(output.plan.segment_duration),
            codecs: r.codecs.clone(),
            segments,
        });
    }
    let attachments = attachments.iter().map(|a| attachment(a, &mut chunk)).collect();
    let duration_ms = output.source.duration.as_millis().min(u128::from(u64::MAX)) as u64;
    Ok(manifest(meta, duration_ms, renditions, attachments))
}

/// Reads the segments of `output` and builds the lesson with `attachments`, every chunk's
/// bytes in memory: what the origin's `publish` takes.
pub fn build_lesson(
    meta: LessonMeta,
    output: &TranscodeOutput,
    attachments: &[AttachmentInput],
) -> Result<LessonBuild, LessonError> {
    let mut chunks = BTreeMap::new();
    let manifest = build_manifest(meta, output, attachments, |id, bytes| {
        chunks.entry(id).or_insert_with(|| bytes.to_vec());
    })?;
    Ok(LessonBuild { manifest, chunks })
}

/// IANA media type for an attachment from its file name's extension.
pub fn media_type_for(name: &str) -> &'static str {
    let ext = name
        .rsplit_once('.')
        .map(|(_, e)| e.to_ascii_lowercase())
        .unwrap_or_default();
    match ext.as_str() {
        "pdf" => "application/pdf",
        "ppt" => "application/vnd.ms-powerpoint",
        "pptx" => "application/vnd.openxmlformats-officedocument.presentationml.presentation",
        "doc" => "application/msword",
        "docx" => "application/vnd.openxmlformats-officedocument.wordprocessingml.document",
        "xls" => "application/vnd.ms-excel",
        "xlsx" => "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
        "txt" => "text/plain",
        "jpg" | "jpeg" => "image/jpeg",
        "png" => "image/png",
        "zip" => "application/zip",
        _ => "application/octet-stream",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use courseway_content::{Decode, Encode, MAX_CHUNK_SIZE};

    fn meta() -> LessonMeta {
        LessonMeta {
            id: LessonId::new("media-lesson").unwrap(),
            version: 1,
            title: "测试课程".into(),
            publisher: "农业局".into(),
            category: Category::Elective,
            tags: vec!["test".into()],
            language: "zh-CN".into(),
        }
    }

    fn bytes(len: usize, seed: u64) -> Vec<u8> {
        courseway_content::synthetic::pseudo_random(seed, &[], len)
    }

    #[test]
    fn media_lesson_keeps_small_segments_whole_and_cuts_large_ones() {
        let small = bytes(300_000, 1);
        let large = bytes(MAX_CHUNK_SIZE + 10, 2);
        let build = assemble(
            meta(),
            8_000,
            vec![RenditionBytes {
                name: "720p".into(),
                kind: RenditionKind::Video {
                    width: 1280,
                    height: 720,
                },
                bandwidth: 1_600_000,
                codecs: "avc1.4d401f,mp4a.40.2".into(),
                segments: vec![(small.clone(), 4_000), (large.clone(), 4_000)],
            }],
            &[],
        );
        let r = &build.manifest.renditions[0];
        assert_eq!(r.segments[0].chunks.len(), 1);
        assert_eq!(r.segments[1].chunks.len(), 2);
        assert_eq!(r.segments[1].size(), large.len() as u64);
        let joined: Vec<u8> = r.segments[1]
            .chunks
            .iter()
            .flat_map(|c| build.chunks[&c.id].clone())
            .collect();
        assert_eq!(joined, large);
        assert_eq!(build.chunks[&r.segments[0].chunks[0].id], small);
    }

    #[test]
    fn media_lesson_carries_attachments_as_content_defined_chunks() {
        let pdf = bytes(900_000, 3);
        let build = assemble(
            meta(),
            4_000,
            vec![RenditionBytes {
                name: "audio".into(),
                kind: RenditionKind::Audio,
                bandwidth: 70_000,
                codecs: "mp4a.40.2".into(),
                segments: vec![(bytes(32_000, 4), 4_000)],
            }],
            &[AttachmentInput {
                name: "讲义.pdf".into(),
                media_type: "application/pdf".into(),
                bytes: pdf.clone(),
            }],
        );
        let a = &build.manifest.attachments[0];
        assert!(a.chunks.len() > 1, "900 kB is cut at content-defined boundaries");
        let joined: Vec<u8> = a.chunks.iter().flat_map(|c| build.chunks[&c.id].clone()).collect();
        assert_eq!(joined, pdf);
        // Every referenced chunk is present, and the manifest survives its encoding.
        for r in build.manifest.chunk_refs() {
            r.id.verify(&build.chunks[&r.id]).unwrap();
        }
        let decoded = LessonManifest::from_bytes(&build.manifest.to_bytes()).unwrap();
        assert_eq!(decoded, build.manifest);
        assert_eq!(decoded.duration_ms, 4_000);
    }

    #[test]
    fn media_attachment_types_follow_the_extension() {
        assert_eq!(media_type_for("讲义.PDF"), "application/pdf");
        assert_eq!(media_type_for("slides.pptx").len(), 73);
        assert_eq!(media_type_for("noext"), "application/octet-stream");
    }
}
