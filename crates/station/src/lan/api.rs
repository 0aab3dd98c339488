//! The JSON behind the TV page (`/api/status`, `/api/lessons`, `/api/schedule`; the shapes are
//! in the [module docs](super)). The views are pure functions of what the station knows; the
//! routes gather it.

use std::collections::BTreeMap;
use std::sync::Arc;

use courseway_content::schedule::{LiveShowing, Place};
use courseway_content::{Category, ChannelId, LessonId, LessonManifest, RenditionKind, Schedule, UnixTime};
use courseway_node::live::ChannelSummary;
use courseway_store::StoreStats;
use serde_json::{json, Value};

use crate::planner::Plan;
use crate::SyncStatus;

/// How many days ahead `/api/schedule` lists (after today).
pub const SCHEDULE_DAYS_AHEAD: u64 = 7;

const DAY: u64 = 86_400;

/// A wall-clock instant in the station's local time.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LocalTime {
    /// `YYYY-MM-DD`.
    pub date: String,
    /// `HH:MM`.
    pub time: String,
    /// The Unix time of that day's local midnight.
    pub day_start: u64,
}

/// `t` in local time at `utc_offset_secs` from UTC.
pub fn local_time(t: UnixTime, utc_offset_secs: i32) -> LocalTime {
    let local = t.0 as i64 + i64::from(utc_offset_secs);
    let days = local.div_euclid(DAY as i64);
    let secs = local.rem_euclid(DAY as i64);
    let (y, m, d) = civil_from_days(days);
    LocalTime {
        date: format!("{y:04}-{m:02}-{d:02}"),
        time: format!("{:02}:{:02}", secs / 3600, secs % 3600 / 60),
        day_start: (days * DAY as i64 - i64::from(utc_offset_secs)).max(0) as u64,
    }
}

/// (year, month, day) of a count of days since 1970-01-01 (Howard Hinnant's algorithm).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = (if mp < 10 { mp + 3 } else { mp - 9 }) as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

/// How much of a lesson the store holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Held {
    pub bytes: u64,
    pub size: u64,
}

impl Held {
    /// Every chunk held.
    pub fn ready(&self) -> bool {
        self.bytes == self.size
    }
}

/// What the station knows, for the views.
#[derive(Debug, Clone)]
pub struct Snapshot {
    pub station: String,
    pub place: Place,
    pub now: UnixTime,
    pub utc_offset_secs: i32,
    pub status: SyncStatus,
    pub store: StoreStats,
    pub downloads_allowed: bool,
    pub playing: usize,
    pub lessons: Arc<Vec<Arc<LessonManifest>>>,
    /// Per lesson of `lessons`.
    pub held: BTreeMap<LessonId, Held>,
    pub plan: Option<Arc<Plan>>,
    pub schedule: Option<Schedule>,
    /// Milliseconds since the epoch (for the age of live segments).
    pub now_ms: u64,
    /// The live channels this station follows, with what it holds of each.
    pub live: Vec<(ChannelId, ChannelSummary)>,
}

impl Snapshot {
    fn held(&self, lesson: &LessonId) -> Held {
        self.held.get(lesson).copied().unwrap_or_default()
    }

    fn planned(&self, lesson: &LessonId) -> Option<&crate::planner::PlannedLesson> {
        self.plan.as_ref()?.lessons.iter().find(|l| &l.lesson == lesson)
    }
}

fn time_value(t: Option<UnixTime>) -> Value {
    t.map_or(Value::Null, |t| json!(t.0))
}

fn area(a: &Option<courseway_content::AreaName>) -> Value {
    a.as_ref().map_or(Value::Null, |a| json!(a.as_str()))
}

/// `/api/status`.
pub fn status(s: &Snapshot) -> Value {
    let st = &s.status;
    json!({
        "station": s.station,
        "place": {
            "district": area(&s.place.district),
            "town": area(&s.place.town),
            "groups": s.place.groups.iter().map(|g| g.as_str()).collect::<Vec<_>>(),
        },
        "now": s.now.0,
        "utc_offset_seconds": s.utc_offset_secs,
        "today": local_time(s.now, s.utc_offset_secs).date,
        "sync": {
            "catalog_version": st.catalog_version,
            "schedule_version": st.schedule_version,
            "synced": st.synced,
            "lessons_wanted": st.lessons_wanted,
            "lessons_ready": st.lessons_ready,
            "bytes_wanted": st.bytes_wanted,
            "bytes_ready": st.bytes_ready,
            "lessons_due": st.lessons_due,
            "lessons_at_risk": st.lessons_at_risk,
            "goodput_bytes_per_second": st.goodput,
            "last_synced_at": time_value(st.last_synced_at),
            "downloads_allowed": s.downloads_allowed,
            "disk_full": st.disk_full,
        },
        "disk": {
            "budget_bytes": s.store.budget_bytes,
            "used_bytes": s.store.used_bytes,
            "pinned_bytes": s.store.pinned_bytes,
            "free_bytes": s.store.budget_bytes.saturating_sub(s.store.used_bytes),
        },
        "live": live(s),
        "playing": s.playing,
    })
}

/// A channel is on air while its newest segment arrived less than this many segment durations
/// ago (and at least [`ON_AIR_MIN_SECS`]).
pub const ON_AIR_SEGMENTS: u64 = 3;
/// The shortest on-air allowance, in seconds.
pub const ON_AIR_MIN_SECS: u64 = 10;

/// The playlist URL of one rendition of a live channel.
pub fn live_playlist_url(channel: &ChannelId, rendition: &str) -> String {
    format!("/live/{channel}/{rendition}.m3u8")
}

/// Whether a channel with this summary is on air at `now_ms`.
fn on_air(summary: &ChannelSummary, now_ms: u64) -> bool {
    let Some(last) = summary.last_complete_ms else {
        return false;
    };
    let segment = u64::from(summary.segment_ms.unwrap_or(2000));
    let allowance = (ON_AIR_SEGMENTS * segment).max(ON_AIR_MIN_SECS * 1000);
    now_ms.saturating_sub(last) < allowance
}

/// One live showing as the page shows it.
fn live_showing_view(s: &Snapshot, l: &LiveShowing) -> Value {
    let start = local_time(l.show_at, s.utc_offset_secs);
    let end = local_time(l.ends_at(), s.utc_offset_secs);
    json!({
        "channel": l.channel.as_str(),
        "title": l.title,
        "show_at": l.show_at.0,
        "ends_at": l.ends_at().0,
        "duration_seconds": l.duration_secs,
        "local_date": start.date,
        "local_time": start.time,
        "end_local_time": end.time,
        "now": l.show_at <= s.now && s.now < l.ends_at(),
    })
}

/// The `live` object of `/api/status`: `{on_air, channels: [...]}`.
pub fn live(s: &Snapshot) -> Value {
    let channels: Vec<Value> = s
        .live
        .iter()
        .map(|(channel, summary)| {
            let on = on_air(summary, s.now_ms);
            let next = s
                .schedule
                .as_ref()
                .and_then(|sch| sch.live_showings(channel, &s.place, s.now).next().cloned());
            json!({
                "channel": channel.as_str(),
                "on_air": on,
                "newest_sequence": summary.newest_sequence,
                "seconds_since_last_segment": summary
                    .last_complete_ms
                    .map(|t| s.now_ms.saturating_sub(t) as f64 / 1000.0),
                "segment_seconds": summary.segment_ms.map(|ms| f64::from(ms) / 1000.0),
                "renditions": summary.renditions,
                "playlist": summary.renditions.first().map(|r| live_playlist_url(channel, r)),
                "playlists": summary
                    .renditions
                    .iter()
                    .map(|r| (r.clone(), json!(live_playlist_url(channel, r))))
                    .collect::<serde_json::Map<_, _>>(),
                "showing": next.as_ref().map_or(Value::Null, |l| live_showing_view(s, l)),
            })
        })
        .collect();
    let on = channels.iter().filter(|c| c["on_air"] == true).count();
    json!({ "on_air": on, "channels": channels })
}

/// The master playlist URL of a lesson.
pub fn master_url(lesson: &LessonId) -> String {
    format!("/hls/{lesson}/master.m3u8")
}

/// `/api/lessons`.
pub fn lessons(s: &Snapshot) -> Value {
    let list: Vec<Value> = s
        .lessons
        .iter()
        .map(|m| {
            let held = s.held(&m.id);
            let ready = held.ready();
            let planned = s.planned(&m.id);
            let renditions: Vec<Value> = m
                .renditions
                .iter()
                .map(|r| {
                    let (kind, w, h) = match r.kind {
                        RenditionKind::Video { width, height } => ("video", json!(width), json!(height)),
                        RenditionKind::Audio => ("audio", Value::Null, Value::Null),
                    };
                    json!({
                        "name": r.name,
                        "kind": kind,
                        "width": w,
                        "height": h,
                        "bandwidth": r.bandwidth,
                        "codecs": r.codecs,
                        "hls": if ready { json!(format!("/hls/{}/{}/index.m3u8", m.id, r.name)) } else { Value::Null },
                    })
                })
                .collect();
            let attachments: Vec<Value> = m
                .attachments
                .iter()
                .enumerate()
                .map(|(i, a)| {
                    json!({
                        "name": a.name,
                        "media_type": a.media_type,
                        "size_bytes": a.size(),
                        "url": if ready { json!(format!("/files/{}/{i}", m.id)) } else { Value::Null },
                    })
                })
                .collect();
            json!({
                "id": m.id.as_str(),
                "version": m.version,
                "title": m.title,
                "publisher": m.publisher,
                "category": match m.category { Category::Required => "required", Category::Elective => "elective" },
                "tags": m.tags,
                "language": m.language,
                "duration_seconds": m.duration_ms / 1000,
                "ready": ready,
                "size_bytes": held.size,
                "held_bytes": held.bytes,
                "next_showing": time_value(planned.and_then(|p| p.showing)),
                "estimated_ready": time_value(planned.and_then(|p| p.estimated_ready)),
                "at_risk": planned.is_some_and(|p| p.at_risk),
                "hls": if ready { json!(master_url(&m.id)) } else { Value::Null },
                "renditions": renditions,
                "attachments": attachments,
            })
        })
        .collect();
    json!({ "lessons": list })
}

/// An attendance form already entered for a showing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Recorded {
    pub present: u32,
    pub names: Vec<String>,
    pub recorded_at: UnixTime,
}

/// The showings of `/api/schedule`: this station's, from local midnight today to
/// [`SCHEDULE_DAYS_AHEAD`] days after today, in time order.
pub fn showings(s: &Snapshot) -> Vec<(LessonId, UnixTime)> {
    let Some(schedule) = &s.schedule else {
        return Vec::new();
    };
    let from = local_time(s.now, s.utc_offset_secs).day_start;
    let until = from + (SCHEDULE_DAYS_AHEAD + 1) * DAY;
    let mut list: Vec<(LessonId, UnixTime)> = schedule
        .entries
        .iter()
        .filter(|e| e.show_at.0 >= from && e.show_at.0 < until && e.target.includes(&s.place))
        .map(|e| (e.lesson.clone(), e.show_at))
        .collect();
    list.sort_by(|a, b| (a.1, &a.0).cmp(&(b.1, &b.0)));
    list.dedup();
    list
}

/// `/api/schedule`; `recorded` holds the attendance entered for each of [`showings`].
pub fn schedule(s: &Snapshot, recorded: &BTreeMap<(LessonId, UnixTime), Recorded>) -> Value {
    let today = local_time(s.now, s.utc_offset_secs);
    let list: Vec<Value> = showings(s)
        .into_iter()
        .map(|(lesson, at)| {
            let manifest = s.lessons.iter().find(|m| m.id == lesson);
            let held = s.held(&lesson);
            let planned = s.planned(&lesson);
            let at_risk = planned.is_some_and(|p| p.at_risk);
            let state = match manifest {
                None => "unknown",
                Some(_) if held.ready() => "ready",
                Some(_) if at_risk => "at_risk",
                Some(_) => "downloading",
            };
            let local = local_time(at, s.utc_offset_secs);
            let attendance = recorded.get(&(lesson.clone(), at)).map_or(
                Value::Null,
                |r| json!({"present": r.present, "names": r.names, "recorded_at": r.recorded_at.0}),
            );
            json!({
                "kind": "lesson",
                "lesson": lesson.as_str(),
                "title": manifest.map(|m| m.title.as_str()),
                "show_at": at.0,
                "local_date": local.date,
                "local_time": local.time,
                "today": local.day_start == today.day_start,
                "state": state,
                "ready": manifest.is_some() && held.ready(),
                "at_risk": at_risk,
                "estimated_ready": time_value(planned.and_then(|p| p.estimated_ready)),
                "attendance": attendance,
                "attendance_open": recorded.get(&(lesson.clone(), at)).is_none()
                    && at.0 <= s.now.0 + super::attendance::EARLIEST_BEFORE_SECS,
            })
        })
        .collect();
    let mut list = list;
    list.extend(live_showings(s));
    list.sort_by_key(|v| v["show_at"].as_u64());
    json!({ "today": today.date, "showings": list })
}

/// The live showings of `/api/schedule`: this station's, not over, starting before the end of
/// [`SCHEDULE_DAYS_AHEAD`] days after today. Nothing is downloaded for them; the page shows
/// when to tune in, and a button to watch once the channel is on air here.
fn live_showings(s: &Snapshot) -> Vec<Value> {
    let Some(schedule) = &s.schedule else {
        return Vec::new();
    };
    let today = local_time(s.now, s.utc_offset_secs);
    let until = today.day_start + (SCHEDULE_DAYS_AHEAD + 1) * DAY;
    let mut shown: Vec<&LiveShowing> = schedule
        .live
        .iter()
        .filter(|l| l.target.includes(&s.place) && l.ends_at() > s.now && l.show_at.0 < until)
        .collect();
    shown.sort_by(|a, b| (a.show_at, &a.channel).cmp(&(b.show_at, &b.channel)));
    shown
        .into_iter()
        .map(|l| {
            let held = s.live.iter().find(|(c, _)| *c == l.channel);
            let on = held.is_some_and(|(_, summary)| on_air(summary, s.now_ms));
            let state = match held {
                None => "not_followed",
                Some(_) if on => "on_air",
                Some(_) => "upcoming",
            };
            let mut v = live_showing_view(s, l);
            let local = local_time(l.show_at, s.utc_offset_secs);
            v["kind"] = json!("live");
            v["lesson"] = Value::Null;
            v["state"] = json!(state);
            v["today"] = json!(local.day_start == today.day_start);
            v["followed"] = json!(held.is_some());
            v["playlist"] = held
                .and_then(|(c, summary)| summary.renditions.first().map(|r| json!(live_playlist_url(c, r))))
                .unwrap_or(Value::Null);
            v["ready"] = json!(false);
            v["at_risk"] = json!(false);
            v["estimated_ready"] = Value::Null;
            v["attendance"] = Value::Null;
            v["attendance_open"] = json!(false);
            v
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn local_times_in_china() {
        // 2026-12-05 11:30:00 UTC is 19:30 in Beijing.
        let t = UnixTime(1_796_470_200);
        let l = local_time(t, 8 * 3600);
        assert_eq!((l.date.as_str(), l.time.as_str()), ("2026-12-05", "19:30"));
        assert_eq!(l.day_start, 1_796_470_200 - (19 * 3600 + 30 * 60));
        // 17:00 UTC is already the next day in Beijing.
        let l = local_time(UnixTime(1_796_490_000), 8 * 3600);
        assert_eq!((l.date.as_str(), l.time.as_str()), ("2026-12-06", "01:00"));
        let l = local_time(UnixTime(0), 0);
        assert_eq!(
            (l.date.as_str(), l.time.as_str(), l.day_start),
            ("1970-01-01", "00:00", 0)
        );
        assert_eq!(local_time(UnixTime(951_782_400), 0).date, "2000-02-29");
    }
}
