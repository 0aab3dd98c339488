//! The station's heartbeat: its health and inventory as a [`Health`], built (purely) from the
//! sync status and the download plan, sent upstream every [`ReportsConfig::heartbeat`] and
//! whenever what it says changes.
//!
//! [`ReportsConfig::heartbeat`]: crate::outbox::ReportsConfig::heartbeat

use courseway_content::schedule::Place;
use courseway_content::LessonId;
use courseway_proto::{Health, LessonState, LessonStatus, MAX_HEALTH_LESSONS, MAX_REASON_LEN};

use crate::planner::{Plan, PlannedLesson};
use crate::SyncStatus;

/// What the heartbeat is built from.
#[derive(Debug)]
pub struct HealthInputs<'a> {
    pub status: &'a SyncStatus,
    pub plan: Option<&'a Plan>,
    pub place: &'a Place,
    pub store_budget: u64,
    pub store_used: u64,
    pub software: &'a str,
}

/// Why `l` will miss its showing, in words an operator can act on.
pub fn at_risk_reason(l: &PlannedLesson, plan: &Plan, status: &SyncStatus) -> String {
    let mb = l.remaining_bytes as f64 / 1e6;
    let mut reason = if status.disk_full {
        format!("the station's disk is full; {mb:.1} MB still to download")
    } else if plan.quota_left_today == Some(0) {
        format!("today's download quota is spent; {mb:.1} MB still to download")
    } else if plan.rate_now == 0 {
        format!("outside the download windows now; {mb:.1} MB still to download")
    } else {
        let rate = match status.goodput {
            // A village line can be a few kB/s: one decimal there, so it never reads "0 kB/s".
            Some(g) if g < 10_000 => format!("at the measured {:.1} kB/s", g as f64 / 1e3),
            Some(g) => format!("at the measured {:.0} kB/s", g as f64 / 1e3),
            None => "at the configured line rate (not measured yet)".to_owned(),
        };
        match (l.estimated_ready, l.deadline) {
            (Some(ready), Some(deadline)) => format!(
                "{mb:.1} MB still to download {rate}: ready about {}, after its deadline {}",
                ready.utc(),
                deadline.utc()
            ),
            _ => format!("{mb:.1} MB still to download {rate}: not ready within the planner's horizon"),
        }
    };
    if let Some(showing) = l.showing {
        reason.push_str(&format!(" (showing {})", showing.utc()));
    }
    let mut end = reason.len().min(MAX_REASON_LEN);
    while !reason.is_char_boundary(end) {
        end -= 1;
    }
    reason.truncate(end);
    reason
}

/// The station's health now. Lessons listed: at risk first, then downloading, then ready (at
/// most [`MAX_HEALTH_LESSONS`]).
pub fn build_health(inputs: &HealthInputs<'_>) -> Health {
    let status = inputs.status;
    let mut lessons: Vec<LessonStatus> = Vec::new();
    if let Some(plan) = inputs.plan {
        for l in &plan.lessons {
            let ready = l.remaining_bytes == 0;
            let state = if ready {
                LessonState::Ready
            } else if l.at_risk {
                LessonState::AtRisk
            } else {
                LessonState::Downloading
            };
            lessons.push(LessonStatus {
                lesson: l.lesson.clone(),
                state,
                showing: l.showing,
                estimated_ready: if ready { None } else { l.estimated_ready },
                remaining_bytes: if ready { 0 } else { l.remaining_bytes },
                reason: if state == LessonState::AtRisk {
                    at_risk_reason(l, plan, status)
                } else {
                    String::new()
                },
            });
        }
    }
    let rank = |s: LessonState| match s {
        LessonState::AtRisk => 0,
        LessonState::Downloading => 1,
        LessonState::Ready => 2,
    };
    // Stable: within a state, the plan's order (soonest showing first).
    lessons.sort_by_key(|l| rank(l.state));
    lessons.truncate(MAX_HEALTH_LESSONS);
    Health {
        disk_free: inputs.store_budget.saturating_sub(inputs.store_used),
        disk_total: inputs.store_budget,
        lessons_ready: status.lessons_ready,
        lessons_at_risk: status.lessons_at_risk,
        last_sync: status.last_synced_at,
        software: inputs.software.to_owned(),
        district: inputs.place.district.clone(),
        town: inputs.place.town.clone(),
        catalog_version: status.catalog_version,
        goodput: status.goodput,
        lessons,
    }
}

/// What, when it changes, makes a heartbeat go out at once: a new catalog, a lesson ready, a lesson
/// at risk or no longer, the disk full or not, the sync done.
pub fn change_key(h: &Health, status: &SyncStatus) -> (u64, u32, Vec<LessonId>, bool, bool) {
    (
        h.catalog_version,
        h.lessons_ready,
        h.lessons
            .iter()
            .filter(|l| l.state == LessonState::AtRisk)
            .map(|l| l.lesson.clone())
            .collect(),
        status.disk_full,
        status.synced,
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::planner::Plan;
    use courseway_content::UnixTime;

    fn planned(id: &str, remaining: u64, at_risk: bool) -> PlannedLesson {
        PlannedLesson {
            lesson: id.parse().unwrap(),
            remaining_bytes: remaining,
            showing: Some(UnixTime(1_796_153_400)),
            deadline: Some(UnixTime(1_796_151_600)),
            estimated_ready: Some(UnixTime(1_796_160_000)),
            at_risk,
        }
    }

    #[test]
    fn at_risk_lessons_come_first_with_their_reason() {
        let plan = Plan {
            lessons: vec![
                planned("held", 0, false),
                planned("coming", 5_000_000, false),
                planned("late", 40_000_000, true),
            ],
            rate_now: 100_000,
            quota_left_today: None,
        };
        let status = SyncStatus {
            lessons_ready: 1,
            lessons_at_risk: 1,
            goodput: Some(120_000),
            catalog_version: 4,
            ..SyncStatus::default()
        };
        let place = Place {
            district: Some("d1".parse().unwrap()),
            town: Some("t1".parse().unwrap()),
            ..Place::default()
        };
        let h = build_health(&HealthInputs {
            status: &status,
            plan: Some(&plan),
            place: &place,
            store_budget: 1000,
            store_used: 400,
            software: "courseway test",
        });
        let order: Vec<(&str, LessonState)> = h.lessons.iter().map(|l| (l.lesson.as_str(), l.state)).collect();
        assert_eq!(
            order,
            vec![
                ("late", LessonState::AtRisk),
                ("coming", LessonState::Downloading),
                ("held", LessonState::Ready)
            ]
        );
        let reason = &h.lessons[0].reason;
        assert!(reason.contains("40.0 MB") && reason.contains("120 kB/s"), "{reason}");
        assert!(reason.contains("2026-12-01 19:30 UTC"), "{reason}");
        assert!(h.lessons[1].reason.is_empty());
        assert_eq!((h.disk_free, h.disk_total), (600, 1000));
        assert_eq!(h.town.as_ref().map(|t| t.as_str()), Some("t1"));
    }

    #[test]
    fn a_spent_quota_is_named_as_the_reason() {
        let plan = Plan {
            lessons: vec![planned("late", 1_000_000, true)],
            rate_now: 0,
            quota_left_today: Some(0),
        };
        let reason = at_risk_reason(&plan.lessons[0], &plan, &SyncStatus::default());
        assert!(reason.contains("quota"), "{reason}");
    }
}
