//! The catalog: the signed, versioned, expiring list of published lessons.

use crate::chunk::ChunkId;
use crate::encoding::{put_seq, put_u32, put_u64, put_u8, Decode, DecodeError, Decoder, Encode};
use crate::lesson::MAX_MANIFEST_SIZE;
use crate::name::{LessonId, NodeName};
use crate::time::UnixTime;

/// Catalog format version this build writes: 2 adds the revocation list.
pub const CATALOG_FORMAT: u8 = 2;
/// The first catalog format (no revocation list). Still decoded, so that a catalog a node saved
/// before the upgrade restores; it re-encodes as format 1, so its signature still verifies.
pub const CATALOG_FORMAT_V1: u8 = 1;
/// Most lessons in one catalog.
pub const MAX_CATALOG_ENTRIES: usize = 100_000;
/// Most revoked nodes in one catalog (a province counts under 10,000 stations).
pub const MAX_REVOKED_NODES: usize = 100_000;

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
    /// Nodes refused at every handshake, sorted, without duplicates. Empty in format 1.
    revoked: Vec<NodeName>,
    /// The format the catalog is encoded in: [`CATALOG_FORMAT`] for every new catalog,
    /// [`CATALOG_FORMAT_V1`] only for one decoded from that format.
    format: u8,
}

/// Two entries of a catalog name the same lesson.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("lesson {0} appears twice in the catalog; publish one version of each lesson")]
pub struct DuplicateLesson(pub LessonId);

impl Catalog {
    /// Builds a catalog, sorting entries by lesson id, with no revoked nodes.
    pub fn new(
        version: u64,
        issued_at: UnixTime,
        expires_at: UnixTime,
        entries: Vec<CatalogEntry>,
    ) -> Result<Self, DuplicateLesson> {
        Self::with_revoked(version, issued_at, expires_at, entries, Vec::new())
    }

    /// Builds a catalog that also lists revoked nodes (sorted and deduplicated here).
    pub fn with_revoked(
        version: u64,
        issued_at: UnixTime,
        expires_at: UnixTime,
        mut entries: Vec<CatalogEntry>,
        mut revoked: Vec<NodeName>,
    ) -> Result<Self, DuplicateLesson> {
        entries.sort_by(|a, b| a.lesson.cmp(&b.lesson));
        if let Some(w) = entries.windows(2).find(|w| w[0].lesson == w[1].lesson) {
            return Err(DuplicateLesson(w[0].lesson.clone()));
        }
        revoked.sort();
        revoked.dedup();
        Ok(Self {
            version,
            issued_at,
            expires_at,
            entries,
            revoked,
            format: CATALOG_FORMAT,
        })
    }

    /// The revoked nodes, sorted by name.
    pub fn revoked(&self) -> &[NodeName] {
        &self.revoked
    }

    /// Whether `node` is revoked.
    pub fn is_revoked(&self, node: &NodeName) -> bool {
        self.revoked.binary_search(node).is_ok()
    }

    /// The format this catalog is encoded in.
    pub fn format(&self) -> u8 {
        self.format
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
        put_u8(out, self.format);
        put_u64(out, self.version);
        self.issued_at.encode(out);
        self.expires_at.encode(out);
        put_seq(out, &self.entries);
        // Format 1 has no revocation list; only a decoded format-1 catalog (whose list is empty)
        // is written that way.
        if self.format != CATALOG_FORMAT_V1 {
            put_seq(out, &self.revoked);
        }
    }
}

impl Decode for Catalog {
    const WHAT: &'static str = "catalog";
    fn decode(d: &mut Decoder<'_>) -> Result<Self, DecodeError> {
        let format = d.u8("format version")?;
        if format != CATALOG_FORMAT && format != CATALOG_FORMAT_V1 {
            return Err(DecodeError::UnsupportedVersion {
                what: "catalog",
                version: format,
                supported: CATALOG_FORMAT,
            });
        }
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
        let revoked: Vec<NodeName> = if format == CATALOG_FORMAT_V1 {
            Vec::new()
        } else {
            d.seq("revoked nodes", MAX_REVOKED_NODES)?
        };
        if revoked.windows(2).any(|w| w[0] >= w[1]) {
            return Err(DecodeError::Invalid {
                field: "revoked nodes",
                reason: "names must be sorted without duplicates",
            });
        }
        Ok(Self {
            version,
            issued_at,
            expires_at,
            entries,
            revoked,
            format,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::encoding::{Decode, Encode};

    fn node(s: &str) -> NodeName {
        NodeName::new(s).unwrap()
    }

    #[test]
    fn revoked_nodes_are_sorted_deduplicated_and_round_trip() {
        let c = Catalog::with_revoked(
            3,
            UnixTime(10),
            UnixTime(20),
            vec![],
            vec![node("village-2"), node("village-1"), node("village-2")],
        )
        .unwrap();
        assert_eq!(c.revoked(), &[node("village-1"), node("village-2")]);
        assert!(c.is_revoked(&node("village-2")) && !c.is_revoked(&node("village-3")));
        let bytes = c.to_bytes();
        assert_eq!(bytes[0], CATALOG_FORMAT);
        assert_eq!(Catalog::from_bytes(&bytes).unwrap(), c);
    }

    #[test]
    fn unsorted_revocations_are_refused() {
        let c = Catalog::with_revoked(1, UnixTime(0), UnixTime(1), vec![], vec![node("a"), node("b")]).unwrap();
        let mut bytes = c.to_bytes();
        // Swap the two one-letter names (each is a u32 length then one byte, at the end).
        let n = bytes.len();
        bytes.swap(n - 1, n - 6);
        assert!(matches!(
            Catalog::from_bytes(&bytes),
            Err(DecodeError::Invalid {
                field: "revoked nodes",
                ..
            })
        ));
    }

    #[test]
    fn a_format_1_catalog_decodes_and_re_encodes_unchanged() {
        let mut v1 = vec![CATALOG_FORMAT_V1];
        v1.extend_from_slice(&7u64.to_be_bytes());
        UnixTime(5).encode(&mut v1);
        UnixTime(9).encode(&mut v1);
        v1.extend_from_slice(&0u32.to_be_bytes());
        let c = Catalog::from_bytes(&v1).unwrap();
        assert_eq!((c.version, c.format(), c.revoked().len()), (7, CATALOG_FORMAT_V1, 0));
        assert_eq!(c.to_bytes(), v1);
        // Unknown formats are refused.
        v1[0] = 3;
        assert!(matches!(
            Catalog::from_bytes(&v1),
            Err(DecodeError::UnsupportedVersion { version: 3, .. })
        ));
    }
}
