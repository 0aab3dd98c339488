//! Live channels, for every role: the window of recent verified segments a node keeps (pinned
//! in its store while in the window) and hands to a child that subscribes, so a late joiner
//! starts at the live edge.
//!
//! [`LiveWindow`] is the pure core (no IO, times passed in); [`keep`] applies its decisions to
//! the store (pins on blocking threads).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;

use courseway_content::{ChannelId, ChunkId, LiveSegment, Signed};
use courseway_store::{PinReason, Store, StoreError};
use parking_lot::Mutex;

use crate::blocking::store_io;

/// Segments kept per channel and rendition unless configured otherwise (12 s of 2 s segments).
pub const DEFAULT_LIVE_WINDOW: usize = 6;

/// Completion times kept per channel (for latency figures), oldest dropped first.
const MAX_ARRIVALS: usize = 16_384;

/// One segment's place: rendition and sequence number.
pub type SegmentKey = (String, u64);

#[derive(Default)]
struct Channel {
    /// Per rendition, by sequence number.
    segments: BTreeMap<String, BTreeMap<u64, Arc<Signed<LiveSegment>>>>,
    /// When each segment was held whole here (ms since the epoch).
    complete: BTreeMap<SegmentKey, u64>,
    arrivals: std::collections::VecDeque<(SegmentKey, u64)>,
}

/// What inserting a segment changed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Inserted {
    /// New and inside the window; `evicted` left the window to make room.
    New { evicted: Vec<Arc<Signed<LiveSegment>>> },
    /// Already held.
    Known,
    /// Older than every segment of a full window: too late to be useful.
    TooOld,
}

/// The recent segments of every live channel a node carries.
pub struct LiveWindow {
    len: usize,
    channels: Mutex<HashMap<ChannelId, Channel>>,
    /// Chunks of segments inside a window (with how many segments use each).
    chunks: Mutex<HashMap<ChunkId, u32>>,
}

impl std::fmt::Debug for LiveWindow {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LiveWindow")
            .field("len", &self.len)
            .finish_non_exhaustive()
    }
}

impl LiveWindow {
    /// Keeps `len` segments (at least 1) per channel and rendition.
    pub fn new(len: usize) -> Self {
        Self {
            len: len.max(1),
            channels: Mutex::new(HashMap::new()),
            chunks: Mutex::new(HashMap::new()),
        }
    }

    /// Segments kept per channel and rendition.
    pub fn capacity(&self) -> usize {
        self.len
    }

    /// Adds a verified segment.
    pub fn insert(&self, segment: Arc<Signed<LiveSegment>>) -> Inserted {
        let body = &segment.body;
        let mut channels = self.channels.lock();
        let rendition = channels
            .entry(body.channel.clone())
            .or_default()
            .segments
            .entry(body.rendition.clone())
            .or_default();
        if rendition.contains_key(&body.sequence) {
            return Inserted::Known;
        }
        if rendition.len() >= self.len && rendition.keys().next().is_some_and(|first| body.sequence < *first) {
            return Inserted::TooOld;
        }
        rendition.insert(body.sequence, segment.clone());
        let mut evicted = Vec::new();
        while rendition.len() > self.len {
            if let Some((_, old)) = rendition.pop_first() {
                evicted.push(old);
            }
        }
        let mut chunks = self.chunks.lock();
        for c in &body.chunks {
            *chunks.entry(c.id).or_default() += 1;
        }
        for old in &evicted {
            for c in &old.body.chunks {
                if let Some(n) = chunks.get_mut(&c.id) {
                    *n -= 1;
                    if *n == 0 {
                        chunks.remove(&c.id);
                    }
                }
            }
        }
        Inserted::New { evicted }
    }

    /// Every segment in `channel`'s window, all renditions, oldest sequence first.
    pub fn window(&self, channel: &ChannelId) -> Vec<Arc<Signed<LiveSegment>>> {
        let channels = self.channels.lock();
        let mut all: Vec<_> = channels
            .get(channel)
            .map(|c| c.segments.values().flat_map(|r| r.values().cloned()).collect())
            .unwrap_or_default();
        all.sort_by_key(|s| s.body.sequence);
        all
    }

    /// The window of one rendition, oldest first.
    pub fn rendition(&self, channel: &ChannelId, rendition: &str) -> Vec<Arc<Signed<LiveSegment>>> {
        let channels = self.channels.lock();
        channels
            .get(channel)
            .and_then(|c| c.segments.get(rendition))
            .map(|r| r.values().cloned().collect())
            .unwrap_or_default()
    }

    /// The renditions of `channel` with a segment in the window.
    pub fn renditions(&self, channel: &ChannelId) -> Vec<String> {
        let channels = self.channels.lock();
        channels
            .get(channel)
            .map(|c| c.segments.keys().cloned().collect())
            .unwrap_or_default()
    }

    /// Whether `id` is a chunk of a segment in a window.
    pub fn holds_chunk(&self, id: &ChunkId) -> bool {
        self.chunks.lock().contains_key(id)
    }

    /// Records that `segment` is held whole here since `at_ms` (ms since the epoch).
    pub fn mark_complete(&self, segment: &LiveSegment, at_ms: u64) {
        let mut channels = self.channels.lock();
        let c = channels.entry(segment.channel.clone()).or_default();
        let key = (segment.rendition.clone(), segment.sequence);
        if c.complete.insert(key.clone(), at_ms).is_none() {
            c.arrivals.push_back((key, at_ms));
            while c.arrivals.len() > MAX_ARRIVALS {
                if let Some((old, _)) = c.arrivals.pop_front() {
                    c.complete.remove(&old);
                }
            }
        }
    }

    /// Whether `segment` is held whole here.
    pub fn is_complete(&self, segment: &LiveSegment) -> bool {
        self.channels
            .lock()
            .get(&segment.channel)
            .is_some_and(|c| c.complete.contains_key(&(segment.rendition.clone(), segment.sequence)))
    }

    /// When each segment of `channel` was held whole here (ms since the epoch), for the last
    /// [`MAX_ARRIVALS`] segments.
    pub fn completions(&self, channel: &ChannelId) -> BTreeMap<SegmentKey, u64> {
        self.channels
            .lock()
            .get(channel)
            .map(|c| c.complete.clone())
            .unwrap_or_default()
    }
}

/// What a node holds of one live channel: for a status page.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ChannelSummary {
    /// The newest sequence number held whole, of any rendition.
    pub newest_sequence: Option<u64>,
    /// When the newest segment was held whole here (ms since the epoch).
    pub last_complete_ms: Option<u64>,
    /// Duration of the newest segment held whole, in ms.
    pub segment_ms: Option<u32>,
    /// Renditions with a segment held whole in the window, top first (largest mean segment
    /// size: the highest bit rate), then by name.
    pub renditions: Vec<String>,
}

impl LiveWindow {
    /// What this node holds of `channel` now.
    pub fn summary(&self, channel: &ChannelId) -> ChannelSummary {
        let channels = self.channels.lock();
        let Some(c) = channels.get(channel) else {
            return ChannelSummary::default();
        };
        let mut out = ChannelSummary::default();
        let mut sized: Vec<(u64, String)> = Vec::new();
        for (name, segments) in &c.segments {
            let whole: Vec<&Arc<Signed<LiveSegment>>> = segments
                .values()
                .filter(|s| c.complete.contains_key(&(name.clone(), s.body.sequence)))
                .collect();
            if whole.is_empty() {
                continue;
            }
            let bytes: u64 = whole
                .iter()
                .map(|s| s.body.chunks.iter().map(|c| u64::from(c.size)).sum::<u64>())
                .sum();
            sized.push((bytes / whole.len() as u64, name.clone()));
            for s in whole {
                let at = c.complete[&(name.clone(), s.body.sequence)];
                if out.newest_sequence.is_none_or(|n| s.body.sequence > n) {
                    out.newest_sequence = Some(s.body.sequence);
                    out.segment_ms = Some(s.body.duration_ms);
                }
                if out.last_complete_ms.is_none_or(|t| at > t) {
                    out.last_complete_ms = Some(at);
                }
            }
        }
        sized.sort_by(|a, b| b.0.cmp(&a.0).then(a.1.cmp(&b.1)));
        out.renditions = sized.into_iter().map(|(_, n)| n).collect();
        out
    }
}

/// The pin holder of one live segment.
pub fn pin_holder(segment: &LiveSegment) -> String {
    format!("live/{}/{}/{}", segment.channel, segment.rendition, segment.sequence)
}

/// Inserts a verified segment into `window`, pins its chunks (they may arrive later) and unpins
/// the segments that left the window. `Ok(true)` if it was new. Store IO: call on a blocking
/// thread (or use [`keep`]).
pub fn keep_blocking(
    window: &LiveWindow,
    store: &Store,
    segment: Arc<Signed<LiveSegment>>,
) -> Result<bool, StoreError> {
    match window.insert(segment.clone()) {
        Inserted::New { evicted } => {
            let pin: Vec<ChunkId> = segment.body.chunks.iter().map(|c| c.id).collect();
            store.pin(&pin, PinReason::LiveWindow, &pin_holder(&segment.body))?;
            for old in &evicted {
                store.unpin_holder(PinReason::LiveWindow, &pin_holder(&old.body))?;
            }
            Ok(true)
        }
        Inserted::Known | Inserted::TooOld => Ok(false),
    }
}

/// [`keep_blocking`] on tokio's blocking pool.
pub async fn keep(
    window: &Arc<LiveWindow>,
    store: &Arc<Store>,
    segment: Arc<Signed<LiveSegment>>,
) -> Result<bool, StoreError> {
    let window = window.clone();
    store_io(store, move |s| keep_blocking(&window, s, segment)).await
}

/// Milliseconds since the Unix epoch, from the system clock (for latency figures only).
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// The channels of `segments` (deduplicated), for logs and tests.
pub fn channels_of(segments: &[Arc<Signed<LiveSegment>>]) -> HashSet<ChannelId> {
    segments.iter().map(|s| s.body.channel.clone()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use courseway_content::signing::RootKey;
    use courseway_content::{OnlineKey, UnixTime};

    fn signer() -> OnlineKey {
        let root = RootKey::from_seed([1; 32]);
        let delegation = root.delegate(
            OnlineKey::public_for_seed([2; 32]),
            "test",
            UnixTime(0),
            UnixTime(u64::MAX / 2),
        );
        OnlineKey::new([2; 32], delegation).unwrap()
    }

    fn seg(signer: &OnlineKey, rendition: &str, sequence: u64) -> Arc<Signed<LiveSegment>> {
        let bytes = format!("{rendition}{sequence}").into_bytes();
        Arc::new(signer.sign(LiveSegment {
            channel: ChannelId::new("city-live").unwrap(),
            rendition: rendition.into(),
            info: Default::default(),
            sequence,
            discontinuity: 0,
            duration_ms: 2000,
            cut_at_ms: 0,
            chunks: vec![courseway_content::ChunkRef {
                id: ChunkId::of(&bytes),
                size: bytes.len() as u32,
            }],
        }))
    }

    #[test]
    fn a_live_channel_summary_counts_only_whole_segments_top_rendition_first() {
        let signer = signer();
        let w = LiveWindow::new(4);
        let ch = ChannelId::new("city-live").unwrap();
        assert_eq!(w.summary(&ch), ChannelSummary::default());
        // "low" segments are named with fewer bytes than "source" ones ("low1" < "source1").
        for (r, seq) in [("low", 7), ("source", 7), ("source", 8)] {
            w.insert(seg(&signer, r, seq));
        }
        assert_eq!(w.summary(&ch).newest_sequence, None, "nothing held whole yet");
        w.mark_complete(&seg(&signer, "low", 7).body, 1_000);
        w.mark_complete(&seg(&signer, "source", 7).body, 1_200);
        let s = w.summary(&ch);
        assert_eq!(
            (s.newest_sequence, s.last_complete_ms, s.segment_ms),
            (Some(7), Some(1_200), Some(2000))
        );
        assert_eq!(s.renditions, vec!["source".to_string(), "low".to_string()]);
        w.mark_complete(&seg(&signer, "source", 8).body, 3_000);
        assert_eq!(w.summary(&ch).newest_sequence, Some(8));
    }

    #[test]
    fn the_window_keeps_the_newest_segments_per_rendition() {
        let signer = signer();
        let w = LiveWindow::new(2);
        let ch = ChannelId::new("city-live").unwrap();
        assert!(matches!(w.insert(seg(&signer, "720p", 1)), Inserted::New { .. }));
        assert_eq!(w.insert(seg(&signer, "720p", 1)), Inserted::Known);
        assert!(matches!(w.insert(seg(&signer, "360p", 1)), Inserted::New { .. }));
        let first = seg(&signer, "720p", 1);
        match w.insert(seg(&signer, "720p", 3)) {
            Inserted::New { evicted } => assert!(evicted.is_empty()),
            other => panic!("{other:?}"),
        }
        match w.insert(seg(&signer, "720p", 4)) {
            Inserted::New { evicted } => assert_eq!(evicted[0].body.sequence, 1),
            other => panic!("{other:?}"),
        }
        assert!(!w.holds_chunk(&first.body.chunks[0].id));
        assert_eq!(w.insert(seg(&signer, "720p", 2)), Inserted::TooOld);
        let seqs: Vec<u64> = w.rendition(&ch, "720p").iter().map(|s| s.body.sequence).collect();
        assert_eq!(seqs, vec![3, 4]);
        assert_eq!(w.window(&ch).len(), 3);
        assert_eq!(w.renditions(&ch), vec!["360p".to_string(), "720p".to_string()]);
    }
}
