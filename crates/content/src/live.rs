//! Live channel segment announcements.

use crate::chunk::ChunkRef;
use crate::encoding::{put_seq, put_str, put_u32, put_u64, put_u8, Decode, DecodeError, Decoder, Encode};
use crate::lesson::MAX_CHUNKS_PER_SEGMENT;
use crate::name::ChannelId;

/// Live announcement format version understood by this build.
pub const LIVE_FORMAT: u8 = 1;

/// One segment of a live channel in one rendition, announced as soon as it is cut.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct LiveSegment {
    pub channel: ChannelId,
    pub rendition: String,
    /// Consecutive per channel and rendition; a gap means a lost segment.
    pub sequence: u64,
    pub duration_ms: u32,
    /// Milliseconds since the Unix epoch when the origin cut the segment, for latency figures.
    pub cut_at_ms: u64,
    pub chunks: Vec<ChunkRef>,
}

impl Encode for LiveSegment {
    fn encode(&self, out: &mut Vec<u8>) {
        put_u8(out, LIVE_FORMAT);
        self.channel.encode(out);
        put_str(out, &self.rendition);
        put_u64(out, self.sequence);
        put_u32(out, self.duration_ms);
        put_u64(out, self.cut_at_ms);
        put_seq(out, &self.chunks);
    }
}

impl Decode for LiveSegment {
    const WHAT: &'static str = "live segment";
    fn decode(d: &mut Decoder<'_>) -> Result<Self, DecodeError> {
        d.version("live segment", LIVE_FORMAT)?;
        Ok(Self {
            channel: ChannelId::decode(d)?,
            rendition: d.str("rendition name", 32)?,
            sequence: d.u64("sequence")?,
            duration_ms: d.u32("segment duration")?,
            cut_at_ms: d.u64("cut time")?,
            chunks: d.seq("segment chunks", MAX_CHUNKS_PER_SEGMENT)?,
        })
    }
}
