//! How the origin numbers a live channel's segments: sequence numbers and discontinuity
//! numbers. Pure; the origin keeps one [`ChannelRun`] per channel and persists the discontinuity
//! number when it changes.
//!
//! - **Sequence** = the run's base (the Unix time in seconds of the channel's first segment in
//!   this origin's run) + the segment's index from the ingest, so segment `n` of every rendition
//!   has the same number and numbers keep growing across origin restarts (a segment lasts a
//!   second or more).
//! - **Discontinuity** (HLS `EXT-X-DISCONTINUITY-SEQUENCE`) = one more than the last one each
//!   time the timestamps start over: when the origin starts again on a channel it has numbered
//!   before, and when the ingest's epoch grows (the feed restarted). Small and exactly one
//!   apart, as players expect it (hls.js hangs on a discontinuity sequence in the billions).

/// Store `meta` key of a channel's last discontinuity number.
pub fn discontinuity_key(channel: &str) -> Vec<u8> {
    format!("live/discontinuity/{channel}").into_bytes()
}

/// One channel's numbering in this origin's run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChannelRun {
    base: u64,
    epoch: u32,
    discontinuity: u64,
    /// The epoch before the last change, until the next segment.
    before_change: Option<u32>,
}

impl ChannelRun {
    /// The first segment of the channel in this run, cut in `epoch`, at `now_secs`; `last` is
    /// the discontinuity number the channel had before (persisted), if it was ever numbered.
    pub fn begin(now_secs: u64, epoch: u32, last: Option<u64>) -> Self {
        Self {
            base: now_secs,
            epoch,
            discontinuity: last.map_or(0, |n| n + 1),
            before_change: None,
        }
    }

    /// Numbers a segment of ingest index `index` cut in `epoch`: (sequence, discontinuity, whether
    /// the discontinuity number just changed). An epoch older than the newest seen (which a
    /// feed that restarts one run after another never sends) keeps the current number.
    pub fn number(&mut self, index: u64, epoch: u32) -> (u64, u64, bool) {
        let changed = epoch > self.epoch;
        self.before_change = changed.then_some(self.epoch);
        if changed {
            self.epoch = epoch;
            self.discontinuity += 1;
        }
        (self.base + index, self.discontinuity, changed)
    }

    pub fn discontinuity(&self) -> u64 {
        self.discontinuity
    }

    /// Takes back the change the last [`ChannelRun::number`] made (it could not be persisted):
    /// the next segment of that epoch changes the number again.
    pub fn undo_change(&mut self) {
        if let Some(epoch) = self.before_change.take() {
            self.epoch = epoch;
            self.discontinuity -= 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_grow_by_one_at_each_restart_of_the_feed_or_the_origin() {
        let mut run = ChannelRun::begin(1_000, 0, None);
        assert_eq!(run.number(0, 0), (1_000, 0, false));
        assert_eq!(run.number(1, 0), (1_001, 0, false));
        // The feed restarted: its index carries on, its timestamps start over.
        assert_eq!(run.number(2, 1), (1_002, 1, true));
        // The other renditions of the same restart.
        assert_eq!(run.number(2, 1), (1_002, 1, false));
        assert_eq!(run.number(3, 0), (1_003, 1, false));
        // The origin restarted later: a new base, the next discontinuity number.
        let mut again = ChannelRun::begin(5_000, 0, Some(run.discontinuity()));
        assert_eq!(again.number(0, 0), (5_000, 2, false));
        assert_eq!(discontinuity_key("city-live"), b"live/discontinuity/city-live");
        // A change that could not be persisted is made again by the next segment.
        let mut run = ChannelRun::begin(1_000, 0, None);
        assert_eq!(run.number(0, 3), (1_000, 1, true));
        run.undo_change();
        assert_eq!(run.number(1, 3), (1_001, 1, true));
        run.undo_change();
        run.undo_change();
        assert_eq!(run.number(2, 0), (1_002, 0, false), "back where it was before epoch 3");
    }
}
