//! Splitting content into chunks of at most [`MAX_CHUNK_SIZE`] bytes.
//!
//! Two policies, because the two kinds of content behave differently:
//! - **media segments** are produced once and never edited; a segment that fits in a chunk is
//!   kept whole (one request fetches it, one hash names it), a larger one is cut at fixed
//!   1 MiB offsets;
//! - **attachments** (PDF, slides) are re-published after edits, so their boundaries are
//!   content-defined (FastCDC 2020): an edit moves only the chunks around it, and a station
//!   that holds the old version fetches only the changed chunks.

use std::ops::Range;

use crate::chunk::{ChunkRef, MAX_CHUNK_SIZE};

/// Smallest content-defined chunk (except the last one of a file).
pub const CDC_MIN_SIZE: usize = 64 * 1024;
/// Target average content-defined chunk size.
pub const CDC_AVG_SIZE: usize = 256 * 1024;
/// Largest content-defined chunk.
pub const CDC_MAX_SIZE: usize = MAX_CHUNK_SIZE;

/// Byte ranges of `data` for a media segment: whole if it fits, else fixed 1 MiB pieces.
pub fn segment_ranges(data: &[u8]) -> Vec<Range<usize>> {
    if data.is_empty() {
        return Vec::new();
    }
    (0..data.len())
        .step_by(MAX_CHUNK_SIZE)
        .map(|start| start..(start + MAX_CHUNK_SIZE).min(data.len()))
        .collect()
}

/// Byte ranges of `data` for an attachment, at content-defined boundaries.
pub fn attachment_ranges(data: &[u8]) -> Vec<Range<usize>> {
    if data.is_empty() {
        return Vec::new();
    }
    fastcdc::v2020::FastCDC::new(data, CDC_MIN_SIZE as u32, CDC_AVG_SIZE as u32, CDC_MAX_SIZE as u32)
        .map(|c| c.offset..c.offset + c.length)
        .collect()
}

/// Chunk references for the given ranges of `data`.
pub fn refs_for(data: &[u8], ranges: &[Range<usize>]) -> Vec<ChunkRef> {
    ranges.iter().map(|r| ChunkRef::of(&data[r.clone()])).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use rand::{RngCore, SeedableRng};

    fn random_bytes(len: usize, seed: u64) -> Vec<u8> {
        let mut data = vec![0u8; len];
        rand::rngs::StdRng::seed_from_u64(seed).fill_bytes(&mut data);
        data
    }

    fn covers_exactly(ranges: &[Range<usize>], len: usize) -> bool {
        let mut next = 0;
        for r in ranges {
            if r.start != next || r.is_empty() || r.len() > MAX_CHUNK_SIZE {
                return false;
            }
            next = r.end;
        }
        next == len
    }

    #[test]
    fn small_segment_is_one_chunk() {
        let data = random_bytes(700_000, 1);
        assert_eq!(segment_ranges(&data), vec![0..700_000]);
    }

    #[test]
    fn large_segment_is_cut_at_one_mib() {
        let data = random_bytes(2 * MAX_CHUNK_SIZE + 5, 2);
        let ranges = segment_ranges(&data);
        assert_eq!(ranges.len(), 3);
        assert_eq!(ranges[2], 2 * MAX_CHUNK_SIZE..2 * MAX_CHUNK_SIZE + 5);
    }

    #[test]
    fn an_edit_reuses_most_attachment_chunks() {
        let original = random_bytes(8 << 20, 3);
        let mut edited = original.clone();
        // Insert 100 bytes in the middle, as an edit to one slide would.
        let middle = edited.len() / 2;
        edited.splice(middle..middle, std::iter::repeat_n(7u8, 100));

        let before: std::collections::HashSet<_> = refs_for(&original, &attachment_ranges(&original))
            .into_iter()
            .map(|r| r.id)
            .collect();
        let after = refs_for(&edited, &attachment_ranges(&edited));
        let reused = after.iter().filter(|r| before.contains(&r.id)).count();
        // Only the chunk (or two) around the edit may change.
        assert!(
            after.len() - reused <= 2,
            "{} of {} chunks changed",
            after.len() - reused,
            after.len()
        );
        assert!(after.len() >= 8, "expected many chunks, got {}", after.len());
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(32))]
        #[test]
        fn ranges_cover_input_with_bounded_chunks(len in 0usize..3_500_000, seed in any::<u64>()) {
            let data = random_bytes(len, seed);
            prop_assert!(covers_exactly(&segment_ranges(&data), len));
            prop_assert!(covers_exactly(&attachment_ranges(&data), len));
        }

        #[test]
        fn chunking_is_deterministic(len in 0usize..600_000, seed in any::<u64>()) {
            let data = random_bytes(len, seed);
            prop_assert_eq!(attachment_ranges(&data), attachment_ranges(&data));
        }
    }
}
