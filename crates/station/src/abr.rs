//! Live rendition choice (adaptive bit rate over the station's WAN line): which rung of a live
//! channel's ladder the station fetches. Pure: no IO and no clock; it is fed one
//! [`Fetched`] per segment (bytes, time taken, segment duration, lag behind the live edge) and
//! answers which rung to fetch next.
//!
//! - **Down** at once when the station has fallen [`AbrConfig::lag_limit`] segments or more
//!   behind the live edge, or after [`AbrConfig::slow_after`] segments in a row each took longer
//!   than [`AbrConfig::slow_ratio`] of its duration to arrive. It steps to the best rung whose
//!   bit rate fits in [`AbrConfig::fit_ratio`] of the goodput just measured (at least one rung
//!   down).
//! - **Up** one rung only after [`AbrConfig::up_after`] segments in a row whose goodput was at
//!   least [`AbrConfig::up_headroom`] times the next rung's bit rate, with the station at most
//!   one segment behind the edge, and never within [`AbrConfig::hold_after_down`] segments of a
//!   step down.

/// The decision's tunables (defaults in [`AbrConfig::default`]).
#[derive(Debug, Clone, PartialEq)]
pub struct AbrConfig {
    /// A segment that took longer than this share of its duration to arrive is slow (0.8).
    pub slow_ratio: f64,
    /// Slow segments in a row that make the station step down (2).
    pub slow_after: u32,
    /// Segments behind the live edge (after a fetch) that make the station step down at once (3).
    pub lag_limit: u64,
    /// A step down goes to the best rung whose bit rate is at most this share of the measured
    /// goodput (0.7).
    pub fit_ratio: f64,
    /// Goodput needed to step up, as a multiple of the next rung's bit rate (1.5).
    pub up_headroom: f64,
    /// Segments in a row with that headroom before a step up (4).
    pub up_after: u32,
    /// Segments after a step down during which the station never steps up (8).
    pub hold_after_down: u32,
}

impl Default for AbrConfig {
    fn default() -> Self {
        Self {
            slow_ratio: 0.8,
            slow_after: 2,
            lag_limit: 3,
            fit_ratio: 0.7,
            up_headroom: 1.5,
            up_after: 4,
            hold_after_down: 8,
        }
    }
}

/// One segment fetched over the WAN.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Fetched {
    pub bytes: u64,
    /// From the start of the fetch to its last byte.
    pub took_ms: u64,
    pub duration_ms: u32,
    /// How many segments the newest announced one is ahead of this one, once it arrived.
    pub lag: u64,
}

impl Fetched {
    /// Measured goodput in bits per second.
    pub fn goodput_bps(&self) -> f64 {
        self.bytes as f64 * 8000.0 / self.took_ms.max(1) as f64
    }
}

/// Why the rung changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reason {
    /// Fallen too far behind the live edge.
    Lag,
    /// Segments arrived too slowly, several in a row.
    Slow,
    /// Sustained headroom.
    Headroom,
}

/// What [`Abr::fetched`] decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    Stay,
    Switch { from: usize, to: usize, reason: Reason },
}

/// The rung choice of one live channel. Rungs are indexes into the ladder, 0 the best; the
/// ladder is passed in as bit rates (bits per second, best first) on every call, so it may grow
/// or shrink as renditions are announced.
#[derive(Debug, Clone)]
pub struct Abr {
    config: AbrConfig,
    current: usize,
    slow: u32,
    headroom: u32,
    /// Segments since the last step down (`None`: never stepped down).
    since_down: Option<u32>,
}

impl Abr {
    /// Starts at rung `start` (clamped to the ladder on use).
    pub fn new(config: AbrConfig, start: usize) -> Self {
        Self {
            config,
            current: start,
            slow: 0,
            headroom: 0,
            since_down: None,
        }
    }

    /// The rung to fetch, for a ladder of `rungs` entries.
    pub fn current(&self, rungs: usize) -> usize {
        self.current.min(rungs.saturating_sub(1))
    }

    /// Takes the result of fetching one segment of the current rung.
    pub fn fetched(&mut self, f: &Fetched, ladder: &[u64]) -> Decision {
        let c = &self.config;
        let from = self.current(ladder.len());
        self.current = from;
        if let Some(n) = self.since_down.as_mut() {
            *n = n.saturating_add(1);
        }
        let goodput = f.goodput_bps();
        let slow = f.took_ms as f64 > c.slow_ratio * f64::from(f.duration_ms);
        self.slow = if slow { self.slow + 1 } else { 0 };
        let cheapest = ladder.len().saturating_sub(1);
        let down_reason = if f.lag >= c.lag_limit {
            Some(Reason::Lag)
        } else if self.slow >= c.slow_after {
            Some(Reason::Slow)
        } else {
            None
        };
        if let Some(reason) = down_reason {
            self.slow = 0;
            self.headroom = 0;
            if from >= cheapest {
                return Decision::Stay;
            }
            let fits = (from + 1..ladder.len())
                .find(|&r| ladder[r] as f64 <= c.fit_ratio * goodput)
                .unwrap_or(cheapest);
            self.current = fits;
            self.since_down = Some(0);
            return Decision::Switch { from, to: fits, reason };
        }
        if from == 0 {
            self.headroom = 0;
            return Decision::Stay;
        }
        let next = ladder[from - 1] as f64;
        if goodput >= c.up_headroom * next && f.lag <= 1 && !slow {
            self.headroom += 1;
        } else {
            self.headroom = 0;
        }
        let held = self.since_down.is_some_and(|n| n < c.hold_after_down);
        if self.headroom >= c.up_after && !held {
            self.headroom = 0;
            self.current = from - 1;
            return Decision::Switch {
                from,
                to: from - 1,
                reason: Reason::Headroom,
            };
        }
        Decision::Stay
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Ladder of the issue: source 1.5 Mbit/s, low 360 kbit/s, audio 64 kbit/s.
    const LADDER: [u64; 3] = [1_500_000, 360_000, 64_000];

    /// Virtual time: a station fetching one segment after another over a link of `link_bps`
    /// (plus `rtt_ms` per segment) while the origin cuts one every `seg_ms`. Returns the rung
    /// fetched for every sequence number (`None`: skipped to stay near the live edge) and the
    /// switches.
    fn simulate(
        link_bps: impl Fn(u64) -> u64,
        rtt_ms: u64,
        seg_ms: u64,
        segments: u64,
        ladder: &[u64],
    ) -> (Vec<Option<usize>>, u32) {
        let mut abr = Abr::new(AbrConfig::default(), 0);
        let mut now = seg_ms; // segment 0 is announced at seg_ms
        let mut next = 0u64;
        let mut rungs = vec![None; segments as usize];
        let mut switches = 0;
        while next < segments {
            let announced_at = (next + 1) * seg_ms;
            now = now.max(announced_at);
            let rung = abr.current(ladder.len());
            let bytes = ladder[rung] * seg_ms / 8000;
            let took = bytes * 8000 / link_bps(now).max(1) + rtt_ms;
            now += took;
            let edge = now / seg_ms - 1;
            let lag = edge.saturating_sub(next);
            rungs[next as usize] = Some(rung);
            let f = Fetched {
                bytes,
                took_ms: took,
                duration_ms: seg_ms as u32,
                lag,
            };
            if let Decision::Switch { .. } = abr.fetched(&f, ladder) {
                switches += 1;
            }
            // Resume at the live edge: never more than two segments behind.
            next = (next + 1).max(edge.saturating_sub(2));
        }
        (rungs, switches)
    }

    #[test]
    fn a_1_mbit_line_settles_on_the_low_rung() {
        let (rungs, switches) = simulate(|_| 1_000_000, 40, 2000, 100, &LADDER);
        assert_eq!(rungs[0], Some(0));
        assert!(rungs[10..].iter().all(|&r| r == Some(1)), "{rungs:?}");
        assert_eq!(switches, 1);
    }

    #[test]
    fn a_fast_line_stays_at_the_top() {
        let (rungs, switches) = simulate(|_| 10_000_000, 40, 2000, 100, &LADDER);
        assert!(rungs.iter().all(|&r| r == Some(0)));
        assert_eq!(switches, 0);
    }

    #[test]
    fn one_slow_segment_is_not_a_step_down_but_lag_is() {
        let mut abr = Abr::new(AbrConfig::default(), 0);
        let slow = Fetched {
            bytes: 375_000,
            took_ms: 1900,
            duration_ms: 2000,
            lag: 1,
        };
        assert_eq!(abr.fetched(&slow, &LADDER), Decision::Stay);
        let fine = Fetched { took_ms: 500, ..slow };
        assert_eq!(abr.fetched(&fine, &LADDER), Decision::Stay);
        assert_eq!(abr.fetched(&slow, &LADDER), Decision::Stay);
        assert!(matches!(
            abr.fetched(&slow, &LADDER),
            Decision::Switch {
                from: 0,
                to: 1,
                reason: Reason::Slow
            }
        ));
        // A segment far behind the edge: straight down, to what the goodput fits (audio).
        let mut abr = Abr::new(AbrConfig::default(), 0);
        let behind = Fetched {
            bytes: 375_000,
            took_ms: 20_000,
            duration_ms: 2000,
            lag: 9,
        };
        assert!(matches!(
            abr.fetched(&behind, &LADDER),
            Decision::Switch {
                from: 0,
                to: 2,
                reason: Reason::Lag
            }
        ));
        assert_eq!(
            abr.fetched(&behind, &LADDER),
            Decision::Stay,
            "nothing below the cheapest rung"
        );
    }

    #[test]
    fn steps_up_only_after_the_hold_off_and_sustained_headroom() {
        let mut abr = Abr::new(AbrConfig::default(), 0);
        // Goodput 1.2 Mbit/s: the low rung fits in 70 % of it.
        let lagging = Fetched {
            bytes: 375_000,
            took_ms: 2500,
            duration_ms: 2000,
            lag: 4,
        };
        assert!(matches!(abr.fetched(&lagging, &LADDER), Decision::Switch { to: 1, .. }));
        // Plenty of headroom at once (goodput 9 Mbit/s): still held for 8 segments.
        let fast = Fetched {
            bytes: 90_000,
            took_ms: 80,
            duration_ms: 2000,
            lag: 0,
        };
        let mut ups = Vec::new();
        for i in 1..=12 {
            if let Decision::Switch { to, reason, .. } = abr.fetched(&fast, &LADDER) {
                assert_eq!(reason, Reason::Headroom);
                ups.push((i, to));
            }
        }
        assert_eq!(ups, vec![(8, 0)]);
    }

    proptest! {
        /// Whatever the line's rate, after a settling time the station fetches a rung the line
        /// can carry (or the cheapest), never flaps (at most a few switches), and a line with
        /// the headroom for the top rung ends at the top.
        #[test]
        fn the_chosen_rung_fits_the_line_and_does_not_flap(
            link_kbps in 50u64..20_000,
            rtt_ms in 1u64..300,
            seg_ms in prop::sample::select(vec![1000u64, 2000, 4000]),
        ) {
            let link = link_kbps * 1000;
            let (rungs, switches) = simulate(|_| link, rtt_ms, seg_ms, 200, &LADDER);
            let settled: Vec<usize> = rungs[100..].iter().flatten().copied().collect();
            prop_assert!(!settled.is_empty());
            for &r in &settled {
                prop_assert!(LADDER[r] <= link || r == LADDER.len() - 1, "rung {r} on {link_kbps} kbit/s");
            }
            prop_assert!(switches <= 4, "{switches} switches on {link_kbps} kbit/s: {rungs:?}");
            // What the station measures on the second rung (the round trip counts), and whether
            // the top rung arrives in time.
            let bits = |r: usize| (LADDER[r] * seg_ms / 1000) as f64;
            let took = |r: usize| bits(r) * 1000.0 / link as f64 + rtt_ms as f64;
            let top_fits = bits(1) * 1000.0 / took(1) >= 1.6 * LADDER[0] as f64 && took(0) < 0.75 * seg_ms as f64;
            if top_fits {
                prop_assert!(settled.iter().all(|&r| r == 0), "{rungs:?}");
            }
        }

        /// A line that drops to a fraction of its rate and comes back: the station steps down
        /// within a few segments of the drop and is back up within hold-off plus headroom
        /// segments of the recovery.
        #[test]
        fn a_dip_in_the_line_is_followed_down_and_back_up(dip_kbps in 100u64..900, rtt_ms in 1u64..100) {
            let seg = 2000;
            let line = move |now: u64| if (100_000..200_000).contains(&now) { dip_kbps * 1000 } else { 20_000_000 };
            let (rungs, _) = simulate(line, rtt_ms, seg, 200, &LADDER);
            // Segment i is announced at (i + 1) * seg: the dip covers segments 49 to 99.
            prop_assert!(rungs[40..48].iter().all(|&r| r == Some(0)), "{rungs:?}");
            prop_assert!(rungs[60..95].iter().flatten().all(|&r| r > 0), "{rungs:?}");
            prop_assert!(rungs[130..].iter().all(|&r| r == Some(0)), "{rungs:?}");
        }
    }
}
