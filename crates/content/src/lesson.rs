//! Lesson manifests: what a lesson is made of.
//!
//! A manifest lists a lesson's renditions (each an ordered list of media segments, each segment
//! a list of chunks) and its attachments. Its canonical encoding is hashed to name it; the
//! catalog carries that hash, so a manifest fetched from any relay is checked end to end.

use crate::chunk::{ChunkId, ChunkRef};
use crate::encoding::{put_seq, put_str, put_u16, put_u32, put_u64, put_u8, Decode, DecodeError, Decoder, Encode};
use crate::name::LessonId;

/// Manifest format version understood by this build.
pub const MANIFEST_FORMAT: u8 = 1;
/// Largest encoded manifest accepted (a two-hour lesson with three renditions is ~300 KiB).
pub const MAX_MANIFEST_SIZE: usize = 4 << 20;
/// Longest free-text field (title, publisher).
pub const MAX_TEXT_LEN: usize = 1024;
/// Most tags on a lesson.
pub const MAX_TAGS: usize = 32;
/// Most renditions of a lesson.
pub const MAX_RENDITIONS: usize = 16;
/// Most segments in a rendition (over 13 hours of 2-second segments).
pub const MAX_SEGMENTS: usize = 25_000;
/// Most chunks in a segment.
pub const MAX_CHUNKS_PER_SEGMENT: usize = 64;
/// Most attachments of a lesson.
pub const MAX_ATTACHMENTS: usize = 64;
/// Most chunks in one attachment (4 GiB at the smallest average).
pub const MAX_CHUNKS_PER_ATTACHMENT: usize = 65_536;

/// Whether every station must show a lesson or may choose it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Category {
    /// 必修: every targeted station shows it.
    Required,
    /// 选修: stations choose.
    Elective,
}

impl Encode for Category {
    fn encode(&self, out: &mut Vec<u8>) {
        put_u8(
            out,
            match self {
                Category::Required => 1,
                Category::Elective => 2,
            },
        );
    }
}

impl Decode for Category {
    const WHAT: &'static str = "category";
    fn decode(d: &mut Decoder<'_>) -> Result<Self, DecodeError> {
        match d.u8("category")? {
            1 => Ok(Category::Required),
            2 => Ok(Category::Elective),
            tag => Err(DecodeError::InvalidTag { field: "category", tag }),
        }
    }
}

/// What a rendition carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RenditionKind {
    /// Video (with or without audio) at the given frame size.
    Video { width: u16, height: u16 },
    /// Audio only, for radio and the weakest links.
    Audio,
}

impl Encode for RenditionKind {
    fn encode(&self, out: &mut Vec<u8>) {
        match self {
            RenditionKind::Video { width, height } => {
                put_u8(out, 1);
                put_u16(out, *width);
                put_u16(out, *height);
            }
            RenditionKind::Audio => put_u8(out, 2),
        }
    }
}

impl Decode for RenditionKind {
    const WHAT: &'static str = "rendition kind";
    fn decode(d: &mut Decoder<'_>) -> Result<Self, DecodeError> {
        match d.u8("rendition kind")? {
            1 => Ok(RenditionKind::Video {
                width: d.u16("width")?,
                height: d.u16("height")?,
            }),
            2 => Ok(RenditionKind::Audio),
            tag => Err(DecodeError::InvalidTag {
                field: "rendition kind",
                tag,
            }),
        }
    }
}

/// One media segment: a few seconds starting on a key frame, stored as one or more chunks.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Segment {
    pub duration_ms: u32,
    pub chunks: Vec<ChunkRef>,
}

impl Segment {
    /// Total bytes of the segment.
    pub fn size(&self) -> u64 {
        self.chunks.iter().map(|c| u64::from(c.size)).sum()
    }
}

impl Encode for Segment {
    fn encode(&self, out: &mut Vec<u8>) {
        put_u32(out, self.duration_ms);
        put_seq(out, &self.chunks);
    }
}

impl Decode for Segment {
    const WHAT: &'static str = "segment";
    fn decode(d: &mut Decoder<'_>) -> Result<Self, DecodeError> {
        let duration_ms = d.u32("segment duration")?;
        let chunks = d.seq("segment chunks", MAX_CHUNKS_PER_SEGMENT)?;
        if chunks.is_empty() {
            return Err(DecodeError::Invalid {
                field: "segment chunks",
                reason: "a segment has at least one chunk",
            });
        }
        Ok(Self { duration_ms, chunks })
    }
}

/// One encoding of a lesson, e.g. 720p at 1.5 Mbit/s.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Rendition {
    /// Short name used in URLs and playlists: `720p`, `360p`, `audio`.
    pub name: String,
    pub kind: RenditionKind,
    /// Peak bits per second, as HLS `BANDWIDTH`.
    pub bandwidth: u32,
    /// RFC 6381 codecs string, as HLS `CODECS`, e.g. `avc1.4d401f,mp4a.40.2`.
    pub codecs: String,
    pub segments: Vec<Segment>,
}

impl Rendition {
    /// Total bytes of all segments.
    pub fn size(&self) -> u64 {
        self.segments.iter().map(Segment::size).sum()
    }
}

impl Encode for Rendition {
    fn encode(&self, out: &mut Vec<u8>) {
        put_str(out, &self.name);
        self.kind.encode(out);
        put_u32(out, self.bandwidth);
        put_str(out, &self.codecs);
        put_seq(out, &self.segments);
    }
}

impl Decode for Rendition {
    const WHAT: &'static str = "rendition";
    fn decode(d: &mut Decoder<'_>) -> Result<Self, DecodeError> {
        Ok(Self {
            name: d.str("rendition name", 32)?,
            kind: RenditionKind::decode(d)?,
            bandwidth: d.u32("bandwidth")?,
            codecs: d.str("codecs", 128)?,
            segments: d.seq("segments", MAX_SEGMENTS)?,
        })
    }
}

/// A file that goes with a lesson (PDF, slides), chunked at content-defined boundaries.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Attachment {
    pub name: String,
    /// IANA media type, e.g. `application/pdf`.
    pub media_type: String,
    pub chunks: Vec<ChunkRef>,
}

impl Attachment {
    /// Total bytes of the file.
    pub fn size(&self) -> u64 {
        self.chunks.iter().map(|c| u64::from(c.size)).sum()
    }
}

impl Encode for Attachment {
    fn encode(&self, out: &mut Vec<u8>) {
        put_str(out, &self.name);
        put_str(out, &self.media_type);
        put_seq(out, &self.chunks);
    }
}

impl Decode for Attachment {
    const WHAT: &'static str = "attachment";
    fn decode(d: &mut Decoder<'_>) -> Result<Self, DecodeError> {
        Ok(Self {
            name: d.str("attachment name", 255)?,
            media_type: d.str("media type", 127)?,
            chunks: d.seq("attachment chunks", MAX_CHUNKS_PER_ATTACHMENT)?,
        })
    }
}

/// Everything a station needs to know to fetch and play one version of a lesson.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct LessonManifest {
    pub id: LessonId,
    /// Grows with each re-publication of the same lesson.
    pub version: u32,
    pub title: String,
    /// The department that made it (party school, agriculture, health, ...).
    pub publisher: String,
    pub category: Category,
    pub tags: Vec<String>,
    /// BCP 47 language tag, e.g. `zh-CN`.
    pub language: String,
    pub duration_ms: u64,
    pub renditions: Vec<Rendition>,
    pub attachments: Vec<Attachment>,
}

impl LessonManifest {
    /// The manifest's name: the hash of its canonical encoding.
    pub fn hash(&self) -> ChunkId {
        ChunkId::of(&self.to_bytes())
    }

    /// Total bytes of all renditions and attachments.
    pub fn content_size(&self) -> u64 {
        self.renditions.iter().map(Rendition::size).sum::<u64>()
            + self.attachments.iter().map(Attachment::size).sum::<u64>()
    }

    /// Every chunk the lesson references, each once, in first-use order.
    pub fn chunk_refs(&self) -> Vec<ChunkRef> {
        let mut seen = std::collections::HashSet::new();
        self.renditions
            .iter()
            .flat_map(|r| r.segments.iter().flat_map(|s| s.chunks.iter()))
            .chain(self.attachments.iter().flat_map(|a| a.chunks.iter()))
            .filter(|c| seen.insert(c.id))
            .copied()
            .collect()
    }

    /// Looks up a rendition by name.
    pub fn rendition(&self, name: &str) -> Option<&Rendition> {
        self.renditions.iter().find(|r| r.name == name)
    }
}

impl Encode for LessonManifest {
    fn encode(&self, out: &mut Vec<u8>) {
        put_u8(out, MANIFEST_FORMAT);
        self.id.encode(out);
        put_u32(out, self.version);
        put_str(out, &self.title);
        put_str(out, &self.publisher);
        self.category.encode(out);
        put_seq(out, &self.tags);
        put_str(out, &self.language);
        put_u64(out, self.duration_ms);
        put_seq(out, &self.renditions);
        put_seq(out, &self.attachments);
    }
}

impl Decode for LessonManifest {
    const WHAT: &'static str = "lesson manifest";
    fn decode(d: &mut Decoder<'_>) -> Result<Self, DecodeError> {
        if d.remaining() > MAX_MANIFEST_SIZE {
            return Err(DecodeError::TooLong {
                field: "lesson manifest",
                len: d.remaining(),
                max: MAX_MANIFEST_SIZE,
            });
        }
        d.version("lesson manifest", MANIFEST_FORMAT)?;
        let manifest = Self {
            id: LessonId::decode(d)?,
            version: d.u32("lesson version")?,
            title: d.str("title", MAX_TEXT_LEN)?,
            publisher: d.str("publisher", MAX_TEXT_LEN)?,
            category: Category::decode(d)?,
            tags: d.seq("tags", MAX_TAGS)?,
            language: d.str("language", 35)?,
            duration_ms: d.u64("duration")?,
            renditions: d.seq("renditions", MAX_RENDITIONS)?,
            attachments: d.seq("attachments", MAX_ATTACHMENTS)?,
        };
        let mut names: Vec<&str> = manifest.renditions.iter().map(|r| r.name.as_str()).collect();
        names.sort_unstable();
        if names.windows(2).any(|w| w[0] == w[1]) {
            return Err(DecodeError::Invalid {
                field: "renditions",
                reason: "two renditions share a name",
            });
        }
        Ok(manifest)
    }
}
