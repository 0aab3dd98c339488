//! When a link is down: scheduled `[start, end)` windows relative to the link's start, and a
//! manual switch.

use std::time::Duration;

use super::config::{validate_outages, ConfigError};

/// Outage windows, kept sorted and merged, plus a manual cut switch.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct OutageSchedule {
    /// Sorted by start, pairwise disjoint and not touching, each with `start < end`.
    windows: Vec<(Duration, Duration)>,
    cut: bool,
}

impl OutageSchedule {
    /// A schedule with these windows, in any order; overlapping or touching windows are merged.
    /// Each window must have `start < end`, and there may be at most
    /// [`MAX_OUTAGES`](super::config::MAX_OUTAGES).
    pub fn new(windows: &[(Duration, Duration)]) -> Result<Self, ConfigError> {
        validate_outages(windows)?;
        let mut sorted = windows.to_vec();
        sorted.sort_unstable();
        let mut merged: Vec<(Duration, Duration)> = Vec::with_capacity(sorted.len());
        for (start, end) in sorted {
            match merged.last_mut() {
                Some(last) if start <= last.1 => last.1 = last.1.max(end),
                _ => merged.push((start, end)),
            }
        }
        Ok(Self {
            windows: merged,
            cut: false,
        })
    }

    /// The merged windows, sorted.
    pub fn windows(&self) -> &[(Duration, Duration)] {
        &self.windows
    }

    /// Cuts the link until [`restore`](Self::restore), whatever the windows say.
    pub fn cut(&mut self) {
        self.cut = true;
    }

    /// Ends a manual cut. Scheduled windows still apply.
    pub fn restore(&mut self) {
        self.cut = false;
    }

    /// Whether the link is cut by hand.
    pub fn is_cut(&self) -> bool {
        self.cut
    }

    /// Whether a scheduled window covers `at`.
    pub fn scheduled_down(&self, at: Duration) -> bool {
        self.overlaps(at, at)
    }

    /// Whether the link is down at `at`: cut by hand, or in a scheduled window.
    pub fn is_down(&self, at: Duration) -> bool {
        self.cut || self.scheduled_down(at)
    }

    /// Whether a scheduled window meets the closed interval `[from, to]`, i.e. whether a packet
    /// on the link from `from` to `to` meets an outage. `to < from` is treated as `[from, from]`.
    pub fn overlaps(&self, from: Duration, to: Duration) -> bool {
        let to = to.max(from);
        // The first window that ends after `from`; earlier ones are over before it.
        let i = self.windows.partition_point(|&(_, end)| end <= from);
        self.windows.get(i).is_some_and(|&(start, _)| start <= to)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn windows_are_sorted_and_merged() {
        let s = OutageSchedule::new(&[(ms(50), ms(60)), (ms(10), ms(20)), (ms(15), ms(30)), (ms(30), ms(40))]).unwrap();
        assert_eq!(s.windows(), &[(ms(10), ms(40)), (ms(50), ms(60))]);
    }

    #[test]
    fn windows_are_half_open() {
        let s = OutageSchedule::new(&[(ms(10), ms(20))]).unwrap();
        assert!(!s.is_down(ms(9)));
        assert!(s.is_down(ms(10)));
        assert!(s.is_down(ms(19)));
        assert!(!s.is_down(ms(20)));
    }

    #[test]
    fn overlap_covers_packets_spanning_a_window() {
        let s = OutageSchedule::new(&[(ms(10), ms(20)), (ms(100), ms(200))]).unwrap();
        assert!(!s.overlaps(ms(0), ms(9)));
        assert!(s.overlaps(ms(0), ms(10)));
        assert!(s.overlaps(ms(5), ms(50)));
        assert!(s.overlaps(ms(19), ms(19)));
        assert!(!s.overlaps(ms(20), ms(99)));
        assert!(s.overlaps(ms(20), ms(100)));
        assert!(s.overlaps(ms(0), ms(1000)));
        assert!(!s.overlaps(ms(200), ms(1000)));
    }

    #[test]
    fn manual_cut_overrides_the_schedule() {
        let mut s = OutageSchedule::default();
        assert!(!s.is_down(ms(5)));
        s.cut();
        assert!(s.is_cut() && s.is_down(ms(5)));
        s.restore();
        assert!(!s.is_down(ms(5)));
    }

    #[test]
    fn bad_windows_are_refused() {
        let err = OutageSchedule::new(&[(ms(20), ms(10))]).unwrap_err();
        assert_eq!(err.field, "outages[0]");
    }
}
