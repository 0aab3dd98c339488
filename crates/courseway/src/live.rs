//! Live feeds at the origin: what an ingest cuts becomes a signed, announced segment.

use courseway_content::ChannelId;
use courseway_media::live::{rendition_info, CutSegment, LiveIngestConfig};
use courseway_origin::{LiveCut, Origin, OriginError};

/// Publishes one segment `cut` by the ingest configured with `ingest` on `channel`: the
/// rendition's name and announced description come from the config. Store IO: call it from
/// the ingest's own thread (the `on_segment` callback), never from async code. Returns the
/// segment's sequence number.
pub fn publish_cut(
    origin: &Origin,
    channel: &ChannelId,
    ingest: &LiveIngestConfig,
    cut: &CutSegment,
) -> Result<u64, OriginError> {
    origin.publish_live_segment(
        channel,
        &ingest.renditions[cut.rendition].name,
        &rendition_info(ingest, cut),
        LiveCut {
            index: cut.index,
            epoch: cut.epoch,
            duration_ms: cut.duration_ms,
            bytes: &cut.bytes,
        },
    )
}
