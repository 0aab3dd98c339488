//! The retention policy: which of the lessons a station wants it must hold (pinned: never
//! evicted), which it keeps while there is room (evictable), and which it lets go.
//!
//! Pure: no IO, no clock. The sync pass calls [`classify`] with the schedule and "now" and
//! applies the result: pins for [`Retention::Pinned`], downloads for pinned lessons always and
//! for kept ones only into free room (so two kept lessons never evict each other in turn), and
//! unpins everything else.
//!
//! - **Pinned**: a showing here from `keep_after_showing` ago to `pin_horizon` ahead. The store
//!   never evicts it; the download plan fetches it first.
//! - **Kept**: wanted, with no showing here inside that span (a library lesson, or one shown
//!   later than the horizon). Held while it fits; evicted first when a pinned lesson needs room.
//! - **Expired**: every showing here is older than `keep_after_showing` and none is ahead: it
//!   was played and is done. Unpinned, not downloaded again; its chunks go when room is needed.

use std::collections::BTreeMap;

use courseway_content::schedule::Place;
use courseway_content::{LessonId, Schedule, UnixTime};

/// How long lessons are held around their showings (`[station.retention]`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetentionPolicy {
    /// Lessons shown here within this many seconds ahead are pinned.
    pub pin_horizon_secs: u64,
    /// A lesson stays pinned this many seconds after its showing (for a repeat the same day),
    /// and is expired after that unless it is shown again.
    pub keep_after_showing_secs: u64,
}

impl Default for RetentionPolicy {
    /// Pin a week ahead; keep two days after a showing.
    fn default() -> Self {
        Self {
            pin_horizon_secs: 7 * 86_400,
            keep_after_showing_secs: 2 * 86_400,
        }
    }
}

/// What the station does with one wanted lesson.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Retention {
    /// Held and never evicted: shown here soon (or just now).
    Pinned,
    /// Held while there is room; evicted before any pinned lesson.
    Kept,
    /// Shown here and done: let go.
    Expired,
}

/// Classifies `lessons` (the wanted lessons of the catalog) by the showings of `schedule` at
/// `place`.
pub fn classify<'a>(
    lessons: impl IntoIterator<Item = &'a LessonId>,
    schedule: Option<&Schedule>,
    place: &Place,
    now: UnixTime,
    policy: &RetentionPolicy,
) -> BTreeMap<LessonId, Retention> {
    // For each lesson: whether a showing falls in the pinned span, and whether any showing here
    // is ahead of the expiry line at all.
    let pin_from = now.0.saturating_sub(policy.keep_after_showing_secs);
    let pin_until = now.0.saturating_add(policy.pin_horizon_secs);
    let mut shown: BTreeMap<&LessonId, (bool, bool)> = BTreeMap::new();
    for e in schedule
        .map(|s| s.entries.as_slice())
        .unwrap_or_default()
        .iter()
        .filter(|e| e.target.includes(place))
    {
        let t = e.show_at.0;
        let (pinned, alive) = shown.entry(&e.lesson).or_default();
        *pinned |= (pin_from..=pin_until).contains(&t);
        *alive |= t >= pin_from;
    }
    lessons
        .into_iter()
        .map(|lesson| {
            let retention = match shown.get(lesson) {
                None => Retention::Kept,
                Some((true, _)) => Retention::Pinned,
                Some((false, true)) => Retention::Kept,
                Some((false, false)) => Retention::Expired,
            };
            (lesson.clone(), retention)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use courseway_content::{AreaName, ScheduleEntry, Target};
    use proptest::prelude::*;

    use super::*;

    const H: u64 = 3600;
    const NOW: u64 = 1_800_000_000;

    fn id(s: &str) -> LessonId {
        LessonId::new(s).unwrap()
    }

    fn schedule(entries: &[(&str, u64, Target)]) -> Schedule {
        Schedule {
            live: Vec::new(),
            version: 1,
            issued_at: UnixTime(NOW - 1000 * H),
            expires_at: UnixTime(NOW + 1000 * H),
            entries: entries
                .iter()
                .map(|(l, t, target)| ScheduleEntry {
                    lesson: id(l),
                    show_at: UnixTime(*t),
                    target: target.clone(),
                })
                .collect(),
        }
    }

    fn place() -> Place {
        Place {
            district: Some(AreaName::new("panyu").unwrap()),
            ..Place::default()
        }
    }

    fn run(lessons: &[&str], s: &Schedule) -> Vec<Retention> {
        let ids: Vec<LessonId> = lessons.iter().map(|l| id(l)).collect();
        let c = classify(&ids, Some(s), &place(), UnixTime(NOW), &RetentionPolicy::default());
        ids.iter().map(|l| c[l]).collect()
    }

    #[test]
    fn retention_pins_lessons_shown_here_soon_and_just_now() {
        let s = schedule(&[
            ("tomorrow", NOW + 24 * H, Target::All),
            ("yesterday", NOW - 24 * H, Target::All),
            ("next-month", NOW + 30 * 24 * H, Target::All),
            ("last-week", NOW - 7 * 24 * H, Target::All),
            ("elsewhere", NOW + H, Target::District(AreaName::new("huadu").unwrap())),
            (
                "library",
                NOW + 100 * 24 * H,
                Target::District(AreaName::new("huadu").unwrap()),
            ),
        ]);
        assert_eq!(
            run(
                &[
                    "tomorrow",
                    "yesterday",
                    "next-month",
                    "last-week",
                    "elsewhere",
                    "unscheduled"
                ],
                &s
            ),
            vec![
                Retention::Pinned,
                Retention::Pinned,
                Retention::Kept,
                Retention::Expired,
                Retention::Kept,
                Retention::Kept
            ]
        );
    }

    #[test]
    fn retention_a_repeat_showing_revives_an_old_lesson() {
        let s = schedule(&[
            ("repeat", NOW - 20 * 24 * H, Target::All),
            ("repeat", NOW + 2 * H, Target::All),
            ("later", NOW - 20 * 24 * H, Target::All),
            ("later", NOW + 20 * 24 * H, Target::All),
        ]);
        assert_eq!(run(&["repeat", "later"], &s), vec![Retention::Pinned, Retention::Kept]);
    }

    #[test]
    fn retention_without_a_schedule_keeps_everything() {
        let ids = [id("a"), id("b")];
        let c = classify(&ids, None, &place(), UnixTime(NOW), &RetentionPolicy::default());
        assert!(c.values().all(|r| *r == Retention::Kept));
    }

    proptest! {
        /// A lesson with a showing here inside [now - keep, now + horizon] is always pinned; a
        /// lesson is expired only when every showing here is before now - keep.
        #[test]
        fn retention_pins_exactly_the_span(offsets in proptest::collection::vec(-40i64..40, 0..6)) {
            let entries: Vec<(&str, u64, Target)> = offsets
                .iter()
                .map(|d| ("l", (NOW as i64 + d * 24 * H as i64) as u64, Target::All))
                .collect();
            let got = run(&["l"], &schedule(&entries))[0];
            let pinned = offsets.iter().any(|d| (-2..=7).contains(d));
            let expired = !offsets.is_empty() && offsets.iter().all(|d| *d < -2);
            let want = if pinned {
                Retention::Pinned
            } else if expired {
                Retention::Expired
            } else {
                Retention::Kept
            };
            prop_assert_eq!(got, want);
        }
    }
}
