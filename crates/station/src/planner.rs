//! The download planner: turns the schedule into deadlines, orders downloads by deadline, and
//! estimates when each lesson will be ready under the station's bandwidth windows and daily
//! quota, so a lesson that will miss its showing is known (and reported) early.
//!
//! Pure: no IO, no clock. Time, the link's measured goodput and what is already held are
//! passed in; the station's sync loop calls [`plan`] again whenever any of them changes.
//!
//! The model: the station may use `share(t)` percent of its link's goodput at local time `t`
//! (bandwidth windows, e.g. 100 % from 22:00 to 06:00 and 30 % by day), and at most
//! `daily_quota` bytes per local day. Downloads go one lesson after another in deadline order
//! (earliest showing first; lessons with no showing ahead last), so each lesson's finish time
//! is when the cumulative bytes up to and including it have been allowed through.

use std::collections::BTreeMap;

use courseway_content::schedule::Place;
use courseway_content::{LessonId, Schedule, UnixTime};

const DAY: u64 = 86_400;
/// How far ahead finish times are simulated; a lesson not done by then has no estimate.
pub const SIMULATION_HORIZON_SECS: u64 = 60 * DAY;

/// A time of day, in seconds after local midnight.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct TimeOfDay(u32);

impl TimeOfDay {
    /// `hours:minutes`; `None` unless 0 ≤ hours < 24 and 0 ≤ minutes < 60.
    pub fn new(hours: u32, minutes: u32) -> Option<Self> {
        (hours < 24 && minutes < 60).then_some(Self(hours * 3600 + minutes * 60))
    }

    /// Seconds after midnight.
    pub fn secs(self) -> u32 {
        self.0
    }
}

impl std::str::FromStr for TimeOfDay {
    type Err = String;

    /// "22:00", "6:30".
    fn from_str(s: &str) -> Result<Self, String> {
        let bad = || format!("{s:?} is not a time of day; write it as HH:MM, e.g. \"22:00\"");
        let (h, m) = s.trim().split_once(':').ok_or_else(bad)?;
        let (h, m) = (h.parse().map_err(|_| bad())?, m.parse().map_err(|_| bad())?);
        Self::new(h, m).ok_or_else(bad)
    }
}

/// Part of the day with its own share of the link. `end` before `start` wraps past midnight.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BandwidthWindow {
    pub start: TimeOfDay,
    pub end: TimeOfDay,
    /// Percent of the link's goodput the station may use in this window (0–100).
    pub share_percent: u8,
}

impl BandwidthWindow {
    fn contains(&self, t: u32) -> bool {
        let (s, e) = (self.start.0, self.end.0);
        if s <= e {
            s <= t && t < e
        } else {
            t >= s || t < e
        }
    }
}

/// How much of the link the station may use, and when.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BandwidthPolicy {
    /// Windows in priority order: the first that contains a time of day gives its share.
    pub windows: Vec<BandwidthWindow>,
    /// Share outside every window (percent, 0–100).
    pub default_share_percent: u8,
    /// Bytes the station may download per local day (None: no quota).
    pub daily_quota: Option<u64>,
    /// Local time minus UTC, in seconds (China: +8 h).
    pub utc_offset_secs: i32,
}

impl Default for BandwidthPolicy {
    /// The whole link at any time, no quota, UTC+8.
    fn default() -> Self {
        Self {
            windows: Vec::new(),
            default_share_percent: 100,
            daily_quota: None,
            utc_offset_secs: 8 * 3600,
        }
    }
}

impl BandwidthPolicy {
    fn local_secs_of_day(&self, t: u64) -> u32 {
        ((t as i64 + i64::from(self.utc_offset_secs)).rem_euclid(DAY as i64)) as u32
    }

    /// The share (percent) at instant `t`.
    pub fn share_at(&self, t: UnixTime) -> u8 {
        let local = self.local_secs_of_day(t.0);
        self.windows
            .iter()
            .find(|w| w.contains(local))
            .map(|w| w.share_percent)
            .unwrap_or(self.default_share_percent)
            .min(100)
    }

    /// The next instant after `t` at which the share or the quota day may change: a window
    /// edge or local midnight.
    fn next_change(&self, t: u64) -> u64 {
        let local = u64::from(self.local_secs_of_day(t));
        let day_start = t - local;
        let mut next = day_start + DAY;
        for w in &self.windows {
            for edge in [w.start.0, w.end.0] {
                let at = day_start + u64::from(edge);
                if at > t && at < next {
                    next = at;
                }
            }
        }
        next
    }

    fn is_local_midnight(&self, t: u64) -> bool {
        self.local_secs_of_day(t) == 0
    }
}

/// One lesson the station should hold.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LessonNeed {
    pub lesson: LessonId,
    /// Bytes still to download.
    pub remaining_bytes: u64,
    /// The lesson's next showing at this station, if one is scheduled ahead.
    pub showing: Option<UnixTime>,
}

/// The planner's inputs besides the lessons.
#[derive(Debug, Clone)]
pub struct PlanContext<'a> {
    pub now: UnixTime,
    /// The link's goodput in bytes per second, as measured (or configured before any
    /// measurement).
    pub link_bytes_per_sec: u64,
    pub policy: &'a BandwidthPolicy,
    /// Bytes downloaded so far in the current local day (counts against the quota).
    pub used_today: u64,
    /// A lesson must be ready this long before its showing.
    pub margin_secs: u64,
}

/// The plan for one lesson.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlannedLesson {
    pub lesson: LessonId,
    pub remaining_bytes: u64,
    pub showing: Option<UnixTime>,
    /// The showing minus the margin.
    pub deadline: Option<UnixTime>,
    /// When the lesson is expected to be complete (now if nothing remains; None if not within
    /// [`SIMULATION_HORIZON_SECS`]).
    pub estimated_ready: Option<UnixTime>,
    /// It will not be ready by its deadline.
    pub at_risk: bool,
}

/// What the station should do now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    /// Lessons in download order: earliest deadline first, unscheduled last.
    pub lessons: Vec<PlannedLesson>,
    /// Bytes per second the station may use right now (window share, quota).
    pub rate_now: u64,
    /// Bytes left in today's quota (None: no quota).
    pub quota_left_today: Option<u64>,
}

impl Plan {
    /// The lessons that will miss their deadline.
    pub fn at_risk(&self) -> impl Iterator<Item = &PlannedLesson> {
        self.lessons.iter().filter(|l| l.at_risk)
    }
}

/// Orders `needs` by deadline and estimates when each will be ready.
pub fn plan(needs: Vec<LessonNeed>, ctx: &PlanContext<'_>) -> Plan {
    let mut needs = needs;
    // Earliest showing first; lessons with no showing after every scheduled one; ties by id so
    // the order is stable across passes.
    needs.sort_by(|a, b| (a.showing.is_none(), a.showing, &a.lesson).cmp(&(b.showing.is_none(), b.showing, &b.lesson)));
    let quota_left_today = ctx.policy.daily_quota.map(|q| q.saturating_sub(ctx.used_today));
    let rate_now = if quota_left_today == Some(0) {
        0
    } else {
        ctx.link_bytes_per_sec * u64::from(ctx.policy.share_at(ctx.now)) / 100
    };
    let finishes = finish_times(&needs, ctx, quota_left_today);
    let lessons = needs
        .into_iter()
        .zip(finishes)
        .map(|(n, estimated_ready)| {
            let deadline = n.showing.map(|s| UnixTime(s.0.saturating_sub(ctx.margin_secs)));
            let at_risk = match (deadline, estimated_ready) {
                (Some(d), Some(r)) => r > d,
                (Some(_), None) => true,
                (None, _) => false,
            };
            PlannedLesson {
                lesson: n.lesson,
                remaining_bytes: n.remaining_bytes,
                showing: n.showing,
                deadline,
                estimated_ready,
                at_risk,
            }
        })
        .collect();
    Plan {
        lessons,
        rate_now,
        quota_left_today,
    }
}

/// When the cumulative bytes up to each lesson have been allowed through, stepping from one
/// change of share or quota day to the next.
fn finish_times(needs: &[LessonNeed], ctx: &PlanContext<'_>, mut quota_left: Option<u64>) -> Vec<Option<UnixTime>> {
    let mut out = vec![None; needs.len()];
    let mut next = 0;
    let mut left_in_current = needs.first().map(|n| n.remaining_bytes).unwrap_or(0);
    let mut t = ctx.now.0;
    let end = t + SIMULATION_HORIZON_SECS;
    loop {
        // Lessons with nothing (left) to fetch are ready at the current instant.
        while next < needs.len() && left_in_current == 0 {
            out[next] = Some(UnixTime(t));
            next += 1;
            left_in_current = needs.get(next).map(|n| n.remaining_bytes).unwrap_or(0);
        }
        if next == needs.len() || t >= end {
            return out;
        }
        let segment_end = ctx.policy.next_change(t).min(end);
        let rate = ctx.link_bytes_per_sec * u64::from(ctx.policy.share_at(UnixTime(t))) / 100;
        let mut capacity = rate.saturating_mul(segment_end - t);
        if let Some(q) = quota_left {
            capacity = capacity.min(q);
        }
        let mut used = 0u64;
        while capacity > 0 && next < needs.len() {
            let take = left_in_current.min(capacity);
            capacity -= take;
            used += take;
            left_in_current -= take;
            if left_in_current > 0 {
                break;
            }
            // Within this segment at a constant rate: done `used / rate` seconds in; lessons
            // after it with nothing to fetch are ready at the same instant.
            let done = UnixTime(t + used.div_ceil(rate.max(1)));
            out[next] = Some(done);
            next += 1;
            while next < needs.len() && needs[next].remaining_bytes == 0 {
                out[next] = Some(done);
                next += 1;
            }
            left_in_current = needs.get(next).map(|n| n.remaining_bytes).unwrap_or(0);
        }
        if let Some(q) = quota_left.as_mut() {
            *q -= used.min(*q);
        }
        t = segment_end;
        if ctx.policy.is_local_midnight(t) {
            quota_left = ctx.policy.daily_quota;
        }
    }
}

/// The next showing at or after `now` of each lesson, for a station at `place`.
pub fn next_showings(schedule: &Schedule, place: &Place, now: UnixTime) -> BTreeMap<LessonId, UnixTime> {
    let mut next: BTreeMap<LessonId, UnixTime> = BTreeMap::new();
    for e in schedule
        .entries
        .iter()
        .filter(|e| e.show_at >= now && e.target.includes(place))
    {
        next.entry(e.lesson.clone())
            .and_modify(|t| *t = (*t).min(e.show_at))
            .or_insert(e.show_at);
    }
    next
}

#[cfg(test)]
mod tests {
    use courseway_content::{AreaName, NodeName, ScheduleEntry, Target};
    use proptest::prelude::*;

    use super::*;

    fn id(s: &str) -> LessonId {
        LessonId::new(s).unwrap()
    }

    fn need(lesson: &str, bytes: u64, showing: Option<u64>) -> LessonNeed {
        LessonNeed {
            lesson: id(lesson),
            remaining_bytes: bytes,
            showing: showing.map(UnixTime),
        }
    }

    /// 2026-12-01 00:00 local time (UTC+8) is 2026-11-30 16:00 UTC.
    const MIDNIGHT: u64 = 1_796_083_200 - 8 * 3600;

    fn night_and_day() -> BandwidthPolicy {
        BandwidthPolicy {
            windows: vec![BandwidthWindow {
                start: "22:00".parse().unwrap(),
                end: "06:00".parse().unwrap(),
                share_percent: 100,
            }],
            default_share_percent: 30,
            daily_quota: None,
            utc_offset_secs: 8 * 3600,
        }
    }

    #[test]
    fn windows_wrap_past_midnight_and_use_local_time() {
        let p = night_and_day();
        assert_eq!(p.share_at(UnixTime(MIDNIGHT)), 100);
        assert_eq!(p.share_at(UnixTime(MIDNIGHT + 5 * 3600 + 3599)), 100);
        assert_eq!(p.share_at(UnixTime(MIDNIGHT + 6 * 3600)), 30);
        assert_eq!(p.share_at(UnixTime(MIDNIGHT + 21 * 3600 + 3599)), 30);
        assert_eq!(p.share_at(UnixTime(MIDNIGHT + 22 * 3600)), 100);
    }

    #[test]
    fn times_of_day_parse_and_refuse_nonsense() {
        assert_eq!("6:30".parse::<TimeOfDay>().unwrap().secs(), 6 * 3600 + 1800);
        for bad in ["24:00", "7", "07:60", "x:00", ""] {
            assert!(bad.parse::<TimeOfDay>().is_err(), "{bad}");
        }
    }

    #[test]
    fn earliest_showing_first_and_unscheduled_last() {
        let policy = BandwidthPolicy::default();
        let ctx = PlanContext {
            now: UnixTime(MIDNIGHT),
            link_bytes_per_sec: 1000,
            policy: &policy,
            used_today: 0,
            margin_secs: 0,
        };
        let p = plan(
            vec![
                need("free", 1000, None),
                need("late", 1000, Some(MIDNIGHT + 9000)),
                need("soon", 1000, Some(MIDNIGHT + 100)),
            ],
            &ctx,
        );
        let order: Vec<_> = p.lessons.iter().map(|l| l.lesson.as_str()).collect();
        assert_eq!(order, ["soon", "late", "free"]);
        // One after another at 1000 B/s: ready after 1, 2 and 3 seconds.
        let ready: Vec<_> = p
            .lessons
            .iter()
            .map(|l| l.estimated_ready.unwrap().0 - MIDNIGHT)
            .collect();
        assert_eq!(ready, [1, 2, 3]);
        assert_eq!(p.rate_now, 1000);
        assert_eq!(p.at_risk().count(), 0);
    }

    #[test]
    fn a_lesson_that_only_the_night_can_carry_is_ready_after_the_night_starts() {
        // 10:00 local; a 2 Mbit/s link (250 kB/s) at 30 % by day is 75 kB/s.
        let policy = night_and_day();
        let now = MIDNIGHT + 10 * 3600;
        let ctx = PlanContext {
            now: UnixTime(now),
            link_bytes_per_sec: 250_000,
            policy: &policy,
            used_today: 0,
            margin_secs: 1800,
        };
        // 12 h of day at 75 kB/s is 3.24 GB; 4 GB needs 0.76 GB more at night (3040 s at full rate).
        let p = plan(vec![need("big", 4_000_000_000, Some(MIDNIGHT + 20 * 3600))], &ctx);
        let l = &p.lessons[0];
        assert_eq!(p.rate_now, 75_000);
        assert_eq!(l.estimated_ready, Some(UnixTime(MIDNIGHT + 22 * 3600 + 3040)));
        // Its 20:00 showing (deadline 19:30) cannot be met: at risk.
        assert!(l.at_risk);
        assert_eq!(l.deadline, Some(UnixTime(MIDNIGHT + 20 * 3600 - 1800)));
        // The same lesson shown the next evening is fine.
        let p = plan(vec![need("big", 4_000_000_000, Some(MIDNIGHT + 44 * 3600))], &ctx);
        assert!(!p.lessons[0].at_risk);
    }

    #[test]
    fn the_daily_quota_stops_downloads_until_local_midnight() {
        let policy = BandwidthPolicy {
            daily_quota: Some(1_000_000),
            ..BandwidthPolicy::default()
        };
        let ctx = PlanContext {
            now: UnixTime(MIDNIGHT + 23 * 3600),
            link_bytes_per_sec: 100_000,
            policy: &policy,
            used_today: 900_000,
            margin_secs: 0,
        };
        // 100 kB left today (1 s), then the next 500 kB after midnight (5 s).
        let p = plan(vec![need("a", 600_000, None)], &ctx);
        assert_eq!(p.quota_left_today, Some(100_000));
        assert_eq!(p.lessons[0].estimated_ready, Some(UnixTime(MIDNIGHT + 24 * 3600 + 5)));
        // Quota used up: nothing may be fetched now.
        let spent = PlanContext {
            used_today: 1_000_000,
            ..ctx
        };
        assert_eq!(plan(vec![need("a", 1, None)], &spent).rate_now, 0);
    }

    #[test]
    fn a_link_with_no_bandwidth_puts_every_scheduled_lesson_at_risk() {
        let policy = BandwidthPolicy {
            default_share_percent: 0,
            ..BandwidthPolicy::default()
        };
        let ctx = PlanContext {
            now: UnixTime(MIDNIGHT),
            link_bytes_per_sec: 100_000,
            policy: &policy,
            used_today: 0,
            margin_secs: 0,
        };
        let p = plan(
            vec![
                need("a", 1, Some(MIDNIGHT + 3600)),
                need("held", 0, Some(MIDNIGHT + 10)),
            ],
            &ctx,
        );
        assert_eq!(p.lessons[0].lesson.as_str(), "held");
        assert_eq!(p.lessons[0].estimated_ready, Some(UnixTime(MIDNIGHT)));
        assert!(!p.lessons[0].at_risk);
        assert_eq!(p.lessons[1].estimated_ready, None);
        assert!(p.lessons[1].at_risk);
    }

    #[test]
    fn showings_are_matched_to_the_station_and_the_next_one_counts() {
        let area = |s: &str| AreaName::new(s).unwrap();
        let place = Place {
            station: Some(NodeName::new("village-0001").unwrap()),
            district: Some(area("panyu")),
            town: Some(area("shiqiao")),
            groups: vec![area("coops")],
        };
        let entry = |lesson: &str, at: u64, target: Target| ScheduleEntry {
            lesson: id(lesson),
            show_at: UnixTime(at),
            target,
        };
        let schedule = Schedule {
            live: Vec::new(),
            version: 1,
            issued_at: UnixTime(0),
            expires_at: UnixTime(u64::MAX),
            entries: vec![
                entry("a", 500, Target::All),
                entry("a", 300, Target::Town(area("shiqiao"))),
                entry("a", 100, Target::All),                     // in the past
                entry("b", 400, Target::District(area("huadu"))), // another district
                entry("c", 600, Target::Group(area("coops"))),
                entry("d", 700, Target::Station(NodeName::new("village-0002").unwrap())),
            ],
        };
        let next = next_showings(&schedule, &place, UnixTime(200));
        assert_eq!(next.len(), 2);
        assert_eq!(next[&id("a")], UnixTime(300));
        assert_eq!(next[&id("c")], UnixTime(600));
    }

    proptest! {
        /// Finish times follow the download order, no lesson finishes before the bytes before it
        /// could have been carried at full rate, and at-risk means exactly "after the deadline".
        #[test]
        fn plans_are_consistent(
            sizes in proptest::collection::vec((0u64..50_000_000, proptest::option::of(0u64..(5 * DAY))), 0..12),
            rate in 1u64..2_000_000,
            day_share in 0u8..=100,
            start in 0u64..DAY,
            quota in proptest::option::of(1u64..500_000_000),
        ) {
            let policy = BandwidthPolicy {
                daily_quota: quota,
                default_share_percent: day_share,
                ..night_and_day()
            };
            let now = MIDNIGHT + start;
            let ctx = PlanContext { now: UnixTime(now), link_bytes_per_sec: rate, policy: &policy, used_today: 0, margin_secs: 600 };
            let needs: Vec<_> = sizes.iter().enumerate()
                .map(|(i, (b, s))| need(&format!("l{i}"), *b, s.map(|s| now + s)))
                .collect();
            let total = needs.len();
            let p = plan(needs, &ctx);
            prop_assert_eq!(p.lessons.len(), total);
            let mut cumulative = 0u64;
            let mut last = now;
            for l in &p.lessons {
                cumulative += l.remaining_bytes;
                if let Some(r) = l.estimated_ready {
                    prop_assert!(r.0 >= last);
                    prop_assert!(r.0 >= now + cumulative / rate);
                    last = r.0;
                }
                prop_assert_eq!(l.at_risk, l.deadline.is_some_and(|d| l.estimated_ready.is_none_or(|r| r > d)));
            }
            // Once one lesson has no estimate, none after it has.
            let first_none = p.lessons.iter().position(|l| l.estimated_ready.is_none()).unwrap_or(total);
            prop_assert!(p.lessons[first_none..].iter().all(|l| l.estimated_ready.is_none()));
        }
    }
}
