//! Live channel segment announcements.

use crate::chunk::ChunkRef;
use crate::encoding::{put_seq, put_str, put_u16, put_u32, put_u64, put_u8, Decode, DecodeError, Decoder, Encode};
use crate::lesson::MAX_CHUNKS_PER_SEGMENT;
use crate::name::ChannelId;

/// Live announcement format version understood by this build (2: with [`LiveRendition`]; 3:
/// with [`LiveSegment::discontinuity`]).
pub const LIVE_FORMAT: u8 = 3;

/// What a rendition of a live channel is, announced with each of its segments so a station can
/// choose between renditions and write a master playlist without opening a segment.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default)]
pub struct LiveRendition {
    /// The rendition's place in the channel's ladder: 0 is the best (source quality), higher
    /// is cheaper. Stations step down the ladder by this order.
    pub rung: u8,
    /// Nominal bit rate in bits per second (video + audio), the HLS `BANDWIDTH` of the
    /// rendition's ladder entry (a station measures the real one from segment sizes).
    pub bandwidth: u32,
    /// Picture size; 0 x 0 for audio only.
    pub width: u16,
    pub height: u16,
    /// RFC 6381 codecs, e.g. `avc1.4d401e,mp4a.40.2` (empty when not known).
    pub codecs: String,
}

/// One segment of a live channel in one rendition, announced as soon as it is cut.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct LiveSegment {
    pub channel: ChannelId,
    pub rendition: String,
    pub info: LiveRendition,
    /// Consecutive per channel and rendition; a gap means a lost segment. The renditions of a
    /// channel cut together share numbers: segment `n` of every rendition covers the same time
    /// (as far as the ingest could align their cuts).
    pub sequence: u64,
    /// The segment's discontinuity sequence number (HLS `EXT-X-DISCONTINUITY-SEQUENCE`):
    /// segments with different numbers do not share a timeline (the feed or the origin
    /// restarted, so timestamps start over), and a playlist puts `EXT-X-DISCONTINUITY` between
    /// them. Never decreases along a channel's sequence.
    pub discontinuity: u64,
    pub duration_ms: u32,
    /// Milliseconds since the Unix epoch when the origin cut the segment, for latency figures.
    pub cut_at_ms: u64,
    pub chunks: Vec<ChunkRef>,
}

impl LiveSegment {
    /// The segment's size in bytes.
    pub fn size(&self) -> u64 {
        self.chunks.iter().map(|c| u64::from(c.size)).sum()
    }
}

impl Encode for LiveSegment {
    fn encode(&self, out: &mut Vec<u8>) {
        put_u8(out, LIVE_FORMAT);
        self.channel.encode(out);
        put_str(out, &self.rendition);
        put_u8(out, self.info.rung);
        put_u32(out, self.info.bandwidth);
        put_u16(out, self.info.width);
        put_u16(out, self.info.height);
        put_str(out, &self.info.codecs);
        put_u64(out, self.sequence);
        put_u64(out, self.discontinuity);
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
            info: LiveRendition {
                rung: d.u8("rendition rung")?,
                bandwidth: d.u32("rendition bandwidth")?,
                width: d.u16("rendition width")?,
                height: d.u16("rendition height")?,
                codecs: d.str("rendition codecs", 64)?,
            },
            sequence: d.u64("sequence")?,
            discontinuity: d.u64("discontinuity sequence")?,
            duration_ms: d.u32("segment duration")?,
            cut_at_ms: d.u64("cut time")?,
            chunks: d.seq("segment chunks", MAX_CHUNKS_PER_SEGMENT)?,
        })
    }
}
