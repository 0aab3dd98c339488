//! The catalog: the signed, versioned, expiring list of published lessons.

use crate::chunk::ChunkId;
use crate::encoding::{put_seq, put_u32, put_u64, put_u8, Decode, DecodeError, Decoder, Encode};
use crate::lesson::MAX_MANIFEST_SIZE;
use crate::name::LessonId;
use crate::time::UnixTime;

/// Catalog format version understood by this build.
pub const CATALOG_FORMAT: u8 = 1;
/// Most lessons in one catalog.
pub const MAX_CATALOG_ENTRIES: usize = 100_000;

/// One published lesson: which manifest names it, and how big it is.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct CatalogEntry {
    pub lesson: LessonId,
    /// Hash of the manifest's canonical encoding.
    pub manifest: ChunkId,
    /// Size of the encoded manifest in bytes.
    pub manifest_size: u32,
    /// Bytes of all the lesson's chunks (renditions and attachments), for planning downloads.
    pub content_size: u64,
}

impl Encode for CatalogEntry {
    fn encode(&self, out: &mut Vec<u8>) {
        self.lesson.encode(out);
        self.manifest.encode(out);
        put_u32(out, self.manifest_size);
        put_u64(out, self.content_size);
    }
}

impl Decode for CatalogEntry {
    const WHAT: &'static str = "catalog entry";
    fn decode(d: &mut Decoder<'_>) -> Result<Self, DecodeError> {
        let entry = Self {
            lesson: LessonId::decode(d)?,
            manifest: ChunkId::decode(d)?,
            manifest_size: d.u32("manifest size")?,
            content_size: d.u64("content size")?,
        };
        if entry.manifest_size as usize > MAX_MANIFEST_SIZE {
            return Err(DecodeError::TooLong {
                field: "manifest size",
                len: entry.manifest_size as usize,
                max: MAX_MANIFEST_SIZE,
            });
        }
        Ok(entry)
    }
}

/// The list of published lessons at one version.
///
/// Entries are sorted by lesson id with no duplicates; [`Catalog::new`] sorts them and decoding
/// refuses anything else, so one catalog has one encoding.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Catalog {
    /// Grows with every publication; a node refuses a version not greater than its own.
    pub version: u64,
    pub issued_at: UnixTime,
    /// After this instant the catalog is stale and refused (freeze protection).
    pub expires_at: UnixTime,
    entries: Vec<CatalogEntry>,
}

/// Two entries of a catalog name the same lesson.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("lesson {0} appears twice in the catalog; publish one version of each lesson")]
pub struct DuplicateLesson(pub LessonId);

impl Catalog {
    /// Builds a catalog, sorting entries by lesson id.
    pub fn new(
        version: u64,
        issued_at: UnixTime,
        expires_at: UnixTime,
        mut entries: Vec<CatalogEntry>,
    ) -> Result<Self, DuplicateLesson> {
        entries.sort_by(|a, b| a.lesson.cmp(&b.lesson));
        if let Some(w) = entries.windows(2).find(|w| w[0].lesson == w[1].lesson) {
            return Err(DuplicateLesson(w[0].lesson.clone()));
        }
        Ok(Self {
            version,
            issued_at,
            expires_at,
            entries,
        })
    }

    /// The entries, sorted by lesson id.
    pub fn entries(&self) -> &[CatalogEntry] {
        &self.entries
    }

    /// The entry for `lesson`, if it is published.
    pub fn entry(&self, lesson: &LessonId) -> Option<&CatalogEntry> {
        self.entries
            .binary_search_by(|e| e.lesson.cmp(lesson))
            .ok()
            .map(|i| &self.entries[i])
    }

    /// Total bytes of every published lesson.
    pub fn content_size(&self) -> u64 {
        self.entries.iter().map(|e| e.content_size).sum()
    }
}

impl Encode for Catalog {
    fn encode(&self, out: &mut Vec<u8>) {
        put_u8(out, CATALOG_FORMAT);
        put_u64(out, self.version);
        self.issued_at.encode(out);
        self.expires_at.encode(out);
        put_seq(out, &self.entries);
    }
}

impl Decode for Catalog {
    const WHAT: &'static str = "catalog";
    fn decode(d: &mut Decoder<'_>) -> Result<Self, DecodeError> {
        d.version("catalog", CATALOG_FORMAT)?;
        let version = d.u64("catalog version")?;
        let issued_at = UnixTime::decode(d)?;
        let expires_at = UnixTime::decode(d)?;
        let entries: Vec<CatalogEntry> = d.seq("catalog entries", MAX_CATALOG_ENTRIES)?;
        if entries.windows(2).any(|w| w[0].lesson >= w[1].lesson) {
            return Err(DecodeError::Invalid {
                field: "catalog entries",
                reason: "entries must be sorted by lesson id without duplicates",
            });
        }
        Ok(Self {
            version,
            issued_at,
            expires_at,
            entries,
        })
    }
}
