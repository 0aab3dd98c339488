//! Proptest strategies for the content types (feature `strategies`), shared with the wire
//! codec's property tests.

use proptest::collection::vec;
use proptest::prelude::*;

use crate::catalog::{Catalog, CatalogEntry};
use crate::chunk::{ChunkId, ChunkRef, MAX_CHUNK_SIZE};
use crate::lesson::{Attachment, Category, LessonManifest, Rendition, RenditionKind, Segment};
use crate::live::LiveSegment;
use crate::name::{AreaName, ChannelId, LessonId, NodeName};
use crate::schedule::{LiveShowing, Schedule, ScheduleEntry, Target};
use crate::signing::{OnlineKey, RootKey, Signable, Signed};
use crate::time::UnixTime;

// A name that is only dots is refused ("." and ".." name directories): the first character is a letter or digit.
const NAME: &str = "[a-zA-Z0-9][a-zA-Z0-9._:-]{0,23}";

pub fn chunk_id() -> impl Strategy<Value = ChunkId> {
    any::<[u8; 32]>().prop_map(ChunkId::from_bytes)
}

pub fn chunk_ref() -> impl Strategy<Value = ChunkRef> {
    (chunk_id(), 0..=MAX_CHUNK_SIZE as u32).prop_map(|(id, size)| ChunkRef { id, size })
}

pub fn lesson_id() -> impl Strategy<Value = LessonId> {
    NAME.prop_map(|s| LessonId::new(s).expect("pattern yields valid names"))
}

pub fn node_name() -> impl Strategy<Value = NodeName> {
    NAME.prop_map(|s| NodeName::new(s).expect("pattern yields valid names"))
}

pub fn area_name() -> impl Strategy<Value = AreaName> {
    NAME.prop_map(|s| AreaName::new(s).expect("pattern yields valid names"))
}

pub fn channel_id() -> impl Strategy<Value = ChannelId> {
    NAME.prop_map(|s| ChannelId::new(s).expect("pattern yields valid names"))
}

pub fn unix_time() -> impl Strategy<Value = UnixTime> {
    any::<u64>().prop_map(UnixTime)
}

fn text() -> impl Strategy<Value = String> {
    "\\PC{0,40}"
}

fn segment() -> impl Strategy<Value = Segment> {
    (any::<u32>(), vec(chunk_ref(), 1..4)).prop_map(|(duration_ms, chunks)| Segment { duration_ms, chunks })
}

fn rendition_kind() -> impl Strategy<Value = RenditionKind> {
    prop_oneof![
        (any::<u16>(), any::<u16>()).prop_map(|(width, height)| RenditionKind::Video { width, height }),
        Just(RenditionKind::Audio),
    ]
}

pub fn manifest() -> impl Strategy<Value = LessonManifest> {
    let renditions = vec(
        (
            "[a-z0-9]{1,8}",
            rendition_kind(),
            any::<u32>(),
            "[a-z0-9.,]{0,30}",
            vec(segment(), 0..5),
        ),
        0..4,
    )
    .prop_map(|rs| {
        let mut seen = std::collections::HashSet::new();
        rs.into_iter()
            .filter(|r| seen.insert(r.0.clone()))
            .map(|(name, kind, bandwidth, codecs, segments)| Rendition {
                name,
                kind,
                bandwidth,
                codecs,
                segments,
            })
            .collect::<Vec<_>>()
    });
    let attachments = vec((text(), "[a-z/.-]{1,30}", vec(chunk_ref(), 0..4)), 0..3).prop_map(|atts| {
        atts.into_iter()
            .map(|(name, media_type, chunks)| Attachment {
                name,
                media_type,
                chunks,
            })
            .collect()
    });
    (
        lesson_id(),
        any::<u32>(),
        (text(), text()),
        prop_oneof![Just(Category::Required), Just(Category::Elective)],
        vec("[a-z]{0,10}", 0..5),
        "[a-zA-Z-]{0,10}",
        any::<u64>(),
        renditions,
        attachments,
    )
        .prop_map(
            |(id, version, (title, publisher), category, tags, language, duration_ms, renditions, attachments)| {
                LessonManifest {
                    id,
                    version,
                    title,
                    publisher,
                    category,
                    tags,
                    language,
                    duration_ms,
                    renditions,
                    attachments,
                }
            },
        )
}

pub fn catalog() -> impl Strategy<Value = Catalog> {
    let entry = (
        lesson_id(),
        chunk_id(),
        0..=crate::lesson::MAX_MANIFEST_SIZE as u32,
        any::<u64>(),
    )
        .prop_map(|(lesson, manifest, manifest_size, content_size)| CatalogEntry {
            lesson,
            manifest,
            manifest_size,
            content_size,
        });
    (
        any::<u64>(),
        unix_time(),
        unix_time(),
        vec(entry, 0..8),
        vec(node_name(), 0..4),
    )
        .prop_map(|(version, issued, expires, entries, revoked)| {
            let mut seen = std::collections::HashSet::new();
            let entries = entries.into_iter().filter(|e| seen.insert(e.lesson.clone())).collect();
            Catalog::with_revoked(version, issued, expires, entries, revoked).expect("duplicates were removed")
        })
}

pub fn target() -> impl Strategy<Value = Target> {
    prop_oneof![
        Just(Target::All),
        area_name().prop_map(Target::District),
        area_name().prop_map(Target::Town),
        node_name().prop_map(Target::Station),
        area_name().prop_map(Target::Group),
    ]
}

pub fn schedule() -> impl Strategy<Value = Schedule> {
    let entry = (lesson_id(), unix_time(), target()).prop_map(|(lesson, show_at, target)| ScheduleEntry {
        lesson,
        show_at,
        target,
    });
    let live = (channel_id(), unix_time(), any::<u32>(), ".{0,20}", target()).prop_map(
        |(channel, show_at, duration_secs, title, target)| LiveShowing {
            channel,
            show_at,
            duration_secs,
            title,
            target,
        },
    );
    (
        any::<u64>(),
        unix_time(),
        unix_time(),
        vec(entry, 0..8),
        vec(live, 0..4),
    )
        .prop_map(|(version, issued_at, expires_at, entries, live)| Schedule {
            version,
            issued_at,
            expires_at,
            entries,
            live,
        })
}

pub fn live_segment() -> impl Strategy<Value = LiveSegment> {
    (
        channel_id(),
        "[a-z0-9]{1,8}",
        (any::<u64>(), any::<u64>()),
        any::<u32>(),
        any::<u64>(),
        vec(chunk_ref(), 0..4),
        (
            any::<u8>(),
            any::<u32>(),
            any::<u16>(),
            any::<u16>(),
            "[a-z0-9.,]{0,24}",
        ),
    )
        .prop_map(
            |(
                channel,
                rendition,
                (sequence, discontinuity),
                duration_ms,
                cut_at_ms,
                chunks,
                (rung, bandwidth, width, height, codecs),
            )| LiveSegment {
                channel,
                rendition,
                info: crate::live::LiveRendition {
                    rung,
                    bandwidth,
                    width,
                    height,
                    codecs,
                },
                sequence,
                discontinuity,
                duration_ms,
                cut_at_ms,
                chunks,
            },
        )
}

/// A fixed online key delegated by a fixed root, for signing arbitrary values in tests.
pub fn test_signer() -> OnlineKey {
    let root = RootKey::from_seed([1; 32]);
    let seed = [2; 32];
    let delegation = root.delegate(
        OnlineKey::public_for_seed(seed),
        "test",
        UnixTime(0),
        UnixTime(u64::MAX),
    );
    OnlineKey::new(seed, delegation).expect("delegation is for this key")
}

/// `inner` values signed by [`test_signer`].
pub fn signed<T: Signable + std::fmt::Debug + Clone>(
    inner: impl Strategy<Value = T>,
) -> impl Strategy<Value = Signed<T>> {
    let signer = std::sync::Arc::new(test_signer());
    inner.prop_map(move |v| signer.sign(v))
}
