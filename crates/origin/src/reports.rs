//! Station reports at the origin: stored exactly once, and what is made from them.
//!
//! - [`ReportStore`] (IO) writes each viewing report to the origin's store under its id
//!   (`report/id/<id>`, synced) before the origin acknowledges it; an id seen before is
//!   acknowledged without a second write, so a resend (after a lost acknowledgement, a cut
//!   connection or a station restart) is counted once. Each heartbeat replaces the station's
//!   latest health (`report/health/<station>`), and every scheduled showing a heartbeat lists is
//!   remembered with whether the lesson was ready before it (`report/ready/...`), for the
//!   monthly report's "ready on time".
//! - [`monthly`] (pure) aggregates one month per district and town; [`fleet`] (pure) turns the
//!   latest heartbeats into the fleet status.
//!
//! Months and days are UTC.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use courseway_content::encoding::{put_u8, Decode, Decoder, Encode};
use courseway_content::{LessonId, NodeName, Schedule, UnixTime};
use courseway_proto::{Health, LessonState, Report, ReportId, Viewing};
use courseway_store::{Durability, Store, StoreError};
use parking_lot::Mutex;
use serde::Serialize;

const REPORT_PREFIX: &[u8] = b"report/id/";
const HEALTH_PREFIX: &[u8] = b"report/health/";
const READY_PREFIX: &[u8] = b"report/ready/";

fn report_key(id: &ReportId) -> Vec<u8> {
    let mut k = REPORT_PREFIX.to_vec();
    k.extend_from_slice(&id.0);
    k
}

fn health_key(station: &NodeName) -> Vec<u8> {
    let mut k = HEALTH_PREFIX.to_vec();
    k.extend_from_slice(station.as_str().as_bytes());
    k
}

/// `report/ready/<station>\0<lesson>\0<showing>`: names hold no NUL, so the parts split back.
fn ready_key(station: &NodeName, lesson: &LessonId, showing: UnixTime) -> Vec<u8> {
    let mut k = READY_PREFIX.to_vec();
    k.extend_from_slice(station.as_str().as_bytes());
    k.push(0);
    k.extend_from_slice(lesson.as_str().as_bytes());
    k.push(0);
    k.extend_from_slice(&showing.0.to_be_bytes());
    k
}

fn parse_ready_key(key: &[u8]) -> Option<(NodeName, LessonId, UnixTime)> {
    let rest = key.strip_prefix(READY_PREFIX)?;
    // The showing's bytes may hold zeros: split it off from the end first.
    let (names, tail) = rest.split_at(rest.len().checked_sub(9)?);
    if tail[0] != 0 {
        return None;
    }
    let showing = UnixTime(u64::from_be_bytes(tail[1..].try_into().ok()?));
    let cut = names.iter().position(|b| *b == 0)?;
    let station = std::str::from_utf8(&names[..cut]).ok()?.parse().ok()?;
    let lesson = std::str::from_utf8(&names[cut + 1..]).ok()?.parse().ok()?;
    Some((station, lesson, showing))
}

/// The latest heartbeat of a station, as the origin keeps it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StationHealth {
    pub station: NodeName,
    /// When the station made it (its clock).
    pub created_at: UnixTime,
    /// When the origin received it (the origin's clock): what "last seen" means.
    pub received_at: UnixTime,
    pub health: Health,
}

impl StationHealth {
    fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::new();
        self.station.encode(&mut out);
        self.created_at.encode(&mut out);
        self.received_at.encode(&mut out);
        self.health.encode(&mut out);
        out
    }

    fn from_bytes(bytes: &[u8]) -> Option<Self> {
        let mut d = Decoder::new(bytes);
        let s = Self {
            station: NodeName::decode(&mut d).ok()?,
            created_at: UnixTime::decode(&mut d).ok()?,
            received_at: UnixTime::decode(&mut d).ok()?,
            health: Health::decode(&mut d).ok()?,
        };
        d.finish("station health").ok()?;
        Some(s)
    }
}

/// Whether a scheduled lesson was ready before its showing, as heartbeats told it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Readiness {
    pub station: NodeName,
    pub lesson: LessonId,
    pub showing: UnixTime,
    /// A heartbeat made before the showing said the lesson was ready.
    pub ready_on_time: bool,
}

/// What the origin counts about reports.
#[derive(Debug, Default)]
pub struct ReportCounters {
    /// Viewing reports written (each id once).
    pub stored: AtomicU64,
    /// Reports whose id was seen before: acknowledged again, not written again.
    pub duplicates: AtomicU64,
    /// Viewing records written.
    pub records: AtomicU64,
    /// Heartbeats taken.
    pub heartbeats: AtomicU64,
}

/// The origin's reports, in its store.
#[derive(Debug)]
pub struct ReportStore {
    store: Arc<Store>,
    /// The latest heartbeat of every station (what `report/health/` holds), for the fleet view
    /// and the metrics without a store scan.
    latest: Mutex<BTreeMap<NodeName, StationHealth>>,
    /// Makes "seen before? else write" one step, so two copies of a report arriving at once
    /// (over two relays) are written once.
    write: Mutex<()>,
    pub counters: ReportCounters,
}

impl ReportStore {
    /// The reports in `store`, with the latest heartbeats read back.
    pub fn open(store: Arc<Store>) -> Result<Self, StoreError> {
        let latest = store
            .scan_meta(HEALTH_PREFIX, usize::MAX)?
            .into_iter()
            .filter_map(|(_, v)| StationHealth::from_bytes(&v))
            .map(|h| (h.station.clone(), h))
            .collect();
        Ok(Self {
            store,
            latest: Mutex::new(latest),
            write: Mutex::new(()),
            counters: ReportCounters::default(),
        })
    }

    /// Takes a report (blocking on the disk): returns once it is written, synced, or once it is
    /// known to be held already. `now` is the origin's clock; `schedule` the origin's current
    /// one: a heartbeat's showings count only when they are in it (a station cannot make the
    /// origin keep, or label metrics with, showings nobody scheduled).
    pub fn take(&self, report: &Report, now: UnixTime, schedule: Option<&Schedule>) -> Result<(), StoreError> {
        if let Some(health) = &report.health {
            let mut health = health.clone();
            for l in &mut health.lessons {
                let scheduled = |at: UnixTime| {
                    schedule.is_some_and(|s| s.entries.iter().any(|e| e.lesson == l.lesson && e.show_at == at))
                };
                if l.showing.is_some_and(|at| !scheduled(at)) {
                    l.showing = None;
                }
            }
            self.take_health(report, &health, now)?;
        }
        if report.viewings.is_empty() {
            return Ok(());
        }
        let key = report_key(&report.id);
        let _one_at_a_time = self.write.lock();
        if self.store.get_meta(&key)?.is_some() {
            self.counters.duplicates.fetch_add(1, Ordering::Relaxed);
            tracing::debug!(station = %report.station, "report received again; already stored");
            return Ok(());
        }
        let mut value = Vec::new();
        report.encode(&mut value);
        self.store.put_meta(&key, &value, Durability::Synced)?;
        self.counters.stored.fetch_add(1, Ordering::Relaxed);
        self.counters
            .records
            .fetch_add(report.viewings.len() as u64, Ordering::Relaxed);
        Ok(())
    }

    fn take_health(&self, report: &Report, health: &Health, now: UnixTime) -> Result<(), StoreError> {
        self.counters.heartbeats.fetch_add(1, Ordering::Relaxed);
        let key = health_key(&report.station);
        let _one_at_a_time = self.write.lock();
        let newer = match self
            .store
            .get_meta(&key)?
            .as_deref()
            .and_then(StationHealth::from_bytes)
        {
            // The station's clock orders its heartbeats (a relay may deliver an older one
            // late), except a time ahead of the origin's by more than ten minutes: one bad
            // clock reading must not freeze the station's entry.
            Some(held) => held.created_at > now.plus_secs(600) || held.created_at <= report.created_at,
            None => true,
        };
        let mut puts: Vec<(Vec<u8>, Vec<u8>)> = Vec::new();
        let mut latest = None;
        if newer {
            let l = StationHealth {
                station: report.station.clone(),
                created_at: report.created_at,
                received_at: now,
                health: health.clone(),
            };
            puts.push((key, l.to_bytes()));
            latest = Some(l);
        }
        // Readiness of each scheduled showing: "not ready yet" when first seen, "ready on time"
        // once a heartbeat made before the showing says ready. Never turned back.
        for l in &health.lessons {
            let Some(showing) = l.showing else { continue };
            if report.created_at > showing {
                continue;
            }
            let key = ready_key(&report.station, &l.lesson, showing);
            let held = self.store.get_meta(&key)?;
            let ready = l.state == LessonState::Ready;
            match held.as_deref() {
                Some([1]) => {}
                Some(_) if !ready => {}
                _ => {
                    let mut v = Vec::new();
                    put_u8(&mut v, u8::from(ready));
                    puts.push((key, v));
                }
            }
        }
        if puts.is_empty() {
            return Ok(());
        }
        let borrowed: Vec<(&[u8], &[u8])> = puts.iter().map(|(k, v)| (k.as_slice(), v.as_slice())).collect();
        // Buffered: a heartbeat lost to a power cut is replaced by the next one.
        self.store.write_meta(&borrowed, &[], Durability::Buffered)?;
        if let Some(l) = latest {
            self.latest.lock().insert(l.station.clone(), l);
        }
        Ok(())
    }

    /// Every stored viewing report, in id order.
    pub fn reports(&self) -> Result<Vec<Report>, StoreError> {
        Ok(self
            .store
            .scan_meta(REPORT_PREFIX, usize::MAX)?
            .into_iter()
            .filter_map(|(_, v)| {
                let mut d = Decoder::new(&v);
                Report::decode(&mut d).ok()
            })
            .collect())
    }

    /// Every viewing record with its station.
    pub fn viewings(&self) -> Result<Vec<(NodeName, Viewing)>, StoreError> {
        Ok(self
            .reports()?
            .into_iter()
            .flat_map(|r| {
                let station = r.station;
                r.viewings.into_iter().map(move |v| (station.clone(), v))
            })
            .collect())
    }

    /// The latest heartbeat of every station that sent one, by station name.
    pub fn health(&self) -> Vec<StationHealth> {
        self.latest.lock().values().cloned().collect()
    }

    /// Every scheduled showing heartbeats told of, with whether it was ready in time.
    pub fn readiness(&self) -> Result<Vec<Readiness>, StoreError> {
        Ok(self
            .store
            .scan_meta(READY_PREFIX, usize::MAX)?
            .into_iter()
            .filter_map(|(k, v)| {
                let (station, lesson, showing) = parse_ready_key(&k)?;
                Some(Readiness {
                    station,
                    lesson,
                    showing,
                    ready_on_time: v == [1],
                })
            })
            .collect())
    }
}

/// A calendar month, UTC.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Month {
    pub year: i64,
    pub month: u32,
}

impl Month {
    /// Parses `YYYY-MM`.
    pub fn parse(s: &str) -> Result<Self, String> {
        let bad = || format!("{s:?} is not a month; write it as YYYY-MM, e.g. 2026-12");
        let (y, m) = s.trim().split_once('-').ok_or_else(bad)?;
        let (year, month): (i64, u32) = (y.parse().map_err(|_| bad())?, m.parse().map_err(|_| bad())?);
        if y.len() != 4 || m.len() != 2 || !(1..=12).contains(&month) || year < 1970 {
            return Err(bad());
        }
        Ok(Self { year, month })
    }

    /// The month's first second and the next month's first second.
    pub fn range(self) -> (UnixTime, UnixTime) {
        let start = UnixTime::from_utc_date(self.year, self.month, 1).expect("years from 1970");
        let (ny, nm) = if self.month == 12 {
            (self.year + 1, 1)
        } else {
            (self.year, self.month + 1)
        };
        (start, UnixTime::from_utc_date(ny, nm, 1).expect("years from 1970"))
    }

    pub fn contains(self, t: UnixTime) -> bool {
        let (start, end) = self.range();
        start <= t && t < end
    }
}

impl std::fmt::Display for Month {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:04}-{:02}", self.year, self.month)
    }
}

/// One line of the monthly report: a district and town (the station's place as its latest
/// heartbeat gave it; "unknown" when none did).
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct AreaMonth {
    pub district: String,
    pub town: String,
    /// Stations with a playback or a scheduled showing this month.
    pub stations: u32,
    /// Seconds watched, summed over every playback, in hours.
    pub hours_played: f64,
    /// Showings held: distinct (station, lesson, UTC day) with at least one playback.
    pub showings: u32,
    /// People present: per showing, the largest attendance entered; summed.
    pub attendance: u64,
    /// Scheduled showings this month that heartbeats told of.
    pub lessons_scheduled: u32,
    /// Of those, the ones a heartbeat before the showing said were ready.
    pub lessons_ready_on_time: u32,
}

/// The monthly report.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct MonthlyReport {
    pub month: String,
    /// By district, then town.
    pub areas: Vec<AreaMonth>,
    pub total: AreaMonth,
}

impl MonthlyReport {
    /// The report as CSV (one header line, one line per town, then the total).
    pub fn to_csv(&self) -> String {
        let mut out = String::from(
            "month,district,town,stations,hours_played,showings,attendance,lessons_scheduled,lessons_ready_on_time\n",
        );
        let quote = |s: &str| {
            if s.contains([',', '"', '\n']) {
                format!("\"{}\"", s.replace('"', "\"\""))
            } else {
                s.to_owned()
            }
        };
        for a in self.areas.iter().chain(std::iter::once(&self.total)) {
            out.push_str(&format!(
                "{},{},{},{},{:.2},{},{},{},{}\n",
                self.month,
                quote(&a.district),
                quote(&a.town),
                a.stations,
                a.hours_played,
                a.showings,
                a.attendance,
                a.lessons_scheduled,
                a.lessons_ready_on_time
            ));
        }
        out
    }
}

/// The name used for a place no heartbeat gave.
pub const UNKNOWN_AREA: &str = "unknown";

/// Aggregates one month (pure): playbacks started in the month, and showings scheduled in it.
/// `places` gives each station's (district, town).
pub fn monthly(
    month: Month,
    viewings: &[(NodeName, Viewing)],
    readiness: &[Readiness],
    places: &BTreeMap<NodeName, (Option<String>, Option<String>)>,
) -> MonthlyReport {
    let area_of = |s: &NodeName| -> (String, String) {
        let (d, t) = places.get(s).cloned().unwrap_or_default();
        (
            d.unwrap_or_else(|| UNKNOWN_AREA.to_owned()),
            t.unwrap_or_else(|| UNKNOWN_AREA.to_owned()),
        )
    };
    let mut rows: BTreeMap<(String, String), AreaMonth> = BTreeMap::new();
    let mut stations: BTreeMap<(String, String), BTreeSet<NodeName>> = BTreeMap::new();
    // (station, lesson, day) -> largest attendance entered for that showing.
    let mut showings: BTreeMap<(NodeName, LessonId, u64), Option<u32>> = BTreeMap::new();
    for (station, v) in viewings.iter().filter(|(_, v)| month.contains(v.started_at)) {
        let area = area_of(station);
        stations.entry(area.clone()).or_default().insert(station.clone());
        let row = rows.entry(area).or_default();
        row.hours_played += f64::from(v.seconds_watched) / 3600.0;
        let held = showings
            .entry((station.clone(), v.lesson.clone(), v.started_at.0 / 86_400))
            .or_default();
        *held = (*held).max(v.attendance);
    }
    for ((station, _, _), attendance) in &showings {
        let row = rows.entry(area_of(station)).or_default();
        row.showings += 1;
        row.attendance += u64::from(attendance.unwrap_or(0));
    }
    for r in readiness.iter().filter(|r| month.contains(r.showing)) {
        let area = area_of(&r.station);
        stations.entry(area.clone()).or_default().insert(r.station.clone());
        let row = rows.entry(area).or_default();
        row.lessons_scheduled += 1;
        row.lessons_ready_on_time += u32::from(r.ready_on_time);
    }
    let mut total = AreaMonth {
        district: "total".into(),
        town: String::new(),
        ..AreaMonth::default()
    };
    let areas: Vec<AreaMonth> = rows
        .into_iter()
        .map(|((district, town), mut row)| {
            row.stations = stations
                .get(&(district.clone(), town.clone()))
                .map_or(0, |s| s.len() as u32);
            row.district = district;
            row.town = town;
            total.stations += row.stations;
            total.hours_played += row.hours_played;
            total.showings += row.showings;
            total.attendance += row.attendance;
            total.lessons_scheduled += row.lessons_scheduled;
            total.lessons_ready_on_time += row.lessons_ready_on_time;
            row
        })
        .collect();
    MonthlyReport {
        month: month.to_string(),
        areas,
        total,
    }
}

/// Each station's (district, town) from its latest heartbeat.
pub fn places(health: &[StationHealth]) -> BTreeMap<NodeName, (Option<String>, Option<String>)> {
    health
        .iter()
        .map(|h| {
            (
                h.station.clone(),
                (
                    h.health.district.as_ref().map(|d| d.as_str().to_owned()),
                    h.health.town.as_ref().map(|t| t.as_str().to_owned()),
                ),
            )
        })
        .collect()
}

/// A station in the fleet view.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FleetStation {
    pub district: String,
    pub town: String,
    pub station: String,
    /// A heartbeat arrived within the offline limit.
    pub online: bool,
    pub version: String,
    pub catalog_version: u64,
    pub lessons_ready: u32,
    /// Lessons at risk, with the station's reason.
    pub at_risk: Vec<FleetRisk>,
    /// When the origin last heard from it (Unix seconds) and as text.
    pub last_seen: u64,
    pub last_seen_utc: String,
    pub disk_free: u64,
    pub disk_total: u64,
    pub goodput: Option<u64>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FleetRisk {
    pub lesson: String,
    pub reason: String,
}

/// A scheduled showing still ahead, and where the stations that show it stand.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FleetShowing {
    pub lesson: String,
    pub show_at: u64,
    pub show_at_utc: String,
    /// The district, or "" for the stations with no district.
    pub district: String,
    pub ready: u32,
    pub downloading: u32,
    /// The latest predicted finish among those downloading (Unix seconds).
    pub predicted_finish: Option<u64>,
    pub at_risk: u32,
    /// Stations showing it whose last heartbeat is too old.
    pub offline: u32,
}

/// The fleet status at the origin.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FleetStatus {
    pub now: u64,
    /// A station is offline when its last heartbeat is older than this (seconds).
    pub offline_after_secs: u64,
    pub stations_online: u32,
    pub stations_offline: u32,
    /// By district, town, station.
    pub stations: Vec<FleetStation>,
    /// By showing time, lesson, district.
    pub showings: Vec<FleetShowing>,
}

/// The fleet (pure): each station from its latest heartbeat, and per showing ahead (as the
/// stations' heartbeats list it: a station counts for a showing when its heartbeat names the
/// lesson with that showing time) and district the ready / downloading / at-risk / offline
/// counts.
pub fn fleet(health: &[StationHealth], now: UnixTime, offline_after_secs: u64) -> FleetStatus {
    let area = |a: &Option<courseway_content::AreaName>| a.as_ref().map_or(String::new(), |a| a.as_str().to_owned());
    let online = |h: &StationHealth| now.secs_since(h.received_at) <= offline_after_secs;
    let mut stations: Vec<FleetStation> = health
        .iter()
        .map(|h| FleetStation {
            district: area(&h.health.district),
            town: area(&h.health.town),
            station: h.station.as_str().to_owned(),
            online: online(h),
            version: h.health.software.clone(),
            catalog_version: h.health.catalog_version,
            lessons_ready: h.health.lessons_ready,
            at_risk: h
                .health
                .lessons
                .iter()
                .filter(|l| l.state == LessonState::AtRisk)
                .map(|l| FleetRisk {
                    lesson: l.lesson.as_str().to_owned(),
                    reason: l.reason.clone(),
                })
                .collect(),
            last_seen: h.received_at.0,
            last_seen_utc: h.received_at.utc(),
            disk_free: h.health.disk_free,
            disk_total: h.health.disk_total,
            goodput: h.health.goodput,
        })
        .collect();
    stations.sort_by(|a, b| (&a.district, &a.town, &a.station).cmp(&(&b.district, &b.town, &b.station)));
    let mut showings: BTreeMap<(UnixTime, String, String), FleetShowing> = BTreeMap::new();
    for h in health {
        let up = online(h);
        for l in &h.health.lessons {
            let Some(at) = l.showing.filter(|t| *t >= now) else {
                continue;
            };
            let district = area(&h.health.district);
            let row = showings
                .entry((at, l.lesson.as_str().to_owned(), district.clone()))
                .or_insert_with(|| FleetShowing {
                    lesson: l.lesson.as_str().to_owned(),
                    show_at: at.0,
                    show_at_utc: at.utc(),
                    district,
                    ready: 0,
                    downloading: 0,
                    predicted_finish: None,
                    at_risk: 0,
                    offline: 0,
                });
            if !up {
                row.offline += 1;
                continue;
            }
            match l.state {
                LessonState::Ready => row.ready += 1,
                LessonState::AtRisk => row.at_risk += 1,
                LessonState::Downloading => {
                    row.downloading += 1;
                    if let Some(t) = l.estimated_ready {
                        row.predicted_finish = Some(row.predicted_finish.map_or(t.0, |p| p.max(t.0)));
                    }
                }
            }
        }
    }
    let stations_online = stations.iter().filter(|s| s.online).count() as u32;
    FleetStatus {
        now: now.0,
        offline_after_secs,
        stations_online,
        stations_offline: stations.len() as u32 - stations_online,
        stations,
        showings: showings.into_values().collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn name(s: &str) -> NodeName {
        s.parse().unwrap()
    }

    fn viewing(lesson: &str, at: UnixTime, secs: u32, attendance: Option<u32>) -> Viewing {
        Viewing {
            lesson: lesson.parse().unwrap(),
            rendition: "360p".into(),
            started_at: at,
            seconds_watched: secs,
            device: "tv".into(),
            attendance,
        }
    }

    #[test]
    fn months_parse_and_bound() {
        let m = Month::parse("2026-12").unwrap();
        let (start, end) = m.range();
        assert_eq!(start.utc(), "2026-12-01 00:00 UTC");
        assert_eq!(end.utc(), "2027-01-01 00:00 UTC");
        assert!(m.contains(start) && !m.contains(end));
        assert_eq!(Month::parse("2024-02").unwrap().range().1.utc(), "2024-03-01 00:00 UTC");
        for bad in ["2026-13", "2026-1", "26-12", "december", "2026-00", ""] {
            assert!(Month::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn a_month_is_aggregated_per_district_and_town() {
        let dec = |day: u32, hour: u64| UnixTime::from_utc_date(2026, 12, day).unwrap().plus_secs(hour * 3600);
        let mut places = BTreeMap::new();
        places.insert(name("v1"), (Some("d1".to_owned()), Some("t1".to_owned())));
        places.insert(name("v2"), (Some("d1".to_owned()), Some("t1".to_owned())));
        places.insert(name("v3"), (Some("d2".to_owned()), Some("t9".to_owned())));
        let viewings = vec![
            // One showing at v1 on the 1st, played on two devices, attendance entered twice.
            (name("v1"), viewing("maize", dec(1, 19), 1800, Some(20))),
            (name("v1"), viewing("maize", dec(1, 19), 1800, Some(25))),
            // Another day: another showing.
            (name("v1"), viewing("maize", dec(2, 19), 3600, None)),
            (name("v2"), viewing("pigs", dec(3, 20), 900, Some(7))),
            (name("v3"), viewing("pigs", dec(31, 23), 3600, Some(3))),
            // Not this month, and a station with no heartbeat.
            (
                name("v3"),
                viewing("pigs", UnixTime::from_utc_date(2027, 1, 1).unwrap(), 3600, Some(99)),
            ),
            (name("v9"), viewing("pigs", dec(5, 10), 360, None)),
        ];
        let readiness = vec![
            Readiness {
                station: name("v1"),
                lesson: "maize".parse().unwrap(),
                showing: dec(1, 19),
                ready_on_time: true,
            },
            Readiness {
                station: name("v2"),
                lesson: "pigs".parse().unwrap(),
                showing: dec(3, 20),
                ready_on_time: false,
            },
            Readiness {
                station: name("v3"),
                lesson: "pigs".parse().unwrap(),
                showing: UnixTime::from_utc_date(2026, 11, 30).unwrap(),
                ready_on_time: true,
            },
        ];
        let r = monthly(Month::parse("2026-12").unwrap(), &viewings, &readiness, &places);
        let rows: Vec<_> = r
            .areas
            .iter()
            .map(|a| {
                (
                    a.district.as_str(),
                    a.town.as_str(),
                    a.stations,
                    a.hours_played,
                    a.showings,
                    a.attendance,
                    a.lessons_scheduled,
                    a.lessons_ready_on_time,
                )
            })
            .collect();
        assert_eq!(
            rows,
            vec![
                ("d1", "t1", 2, 2.25, 3, 32, 2, 1),
                ("d2", "t9", 1, 1.0, 1, 3, 0, 0),
                ("unknown", "unknown", 1, 0.1, 1, 0, 0, 0),
            ]
        );
        assert_eq!(r.total.showings, 5);
        assert_eq!(r.total.attendance, 35);
        assert_eq!(r.total.stations, 4);
        let csv = r.to_csv();
        assert_eq!(csv.lines().count(), 1 + 3 + 1);
        assert!(csv.contains("2026-12,d1,t1,2,2.25,3,32,2,1"), "{csv}");
    }

    #[test]
    fn ready_keys_split_back() {
        let k = ready_key(&name("v-1"), &"lesson:1".parse().unwrap(), UnixTime(42));
        assert_eq!(
            parse_ready_key(&k),
            Some((name("v-1"), "lesson:1".parse().unwrap(), UnixTime(42)))
        );
    }
}

#[cfg(test)]
mod fleet_tests {
    use super::*;
    use courseway_proto::LessonStatus;

    fn status(lesson: &str, state: LessonState, showing: u64, finish: Option<u64>) -> LessonStatus {
        LessonStatus {
            lesson: lesson.parse().unwrap(),
            state,
            showing: Some(UnixTime(showing)),
            estimated_ready: finish.map(UnixTime),
            remaining_bytes: 0,
            reason: if state == LessonState::AtRisk {
                "disk full".into()
            } else {
                String::new()
            },
        }
    }

    fn station(name: &str, district: &str, seen: u64, lessons: Vec<LessonStatus>) -> StationHealth {
        StationHealth {
            station: name.parse().unwrap(),
            created_at: UnixTime(seen),
            received_at: UnixTime(seen),
            health: Health {
                disk_free: 1,
                disk_total: 2,
                lessons_ready: 1,
                lessons_at_risk: 0,
                last_sync: None,
                software: "courseway 0.1.0".into(),
                district: Some(district.parse().unwrap()),
                town: Some("t".parse().unwrap()),
                catalog_version: 3,
                goodput: None,
                lessons,
            },
        }
    }

    #[test]
    fn showings_are_counted_per_district_and_stale_stations_are_offline() {
        let now = 10_000;
        let health = vec![
            station(
                "v1",
                "d1",
                now - 10,
                vec![status("maize", LessonState::Ready, now + 3600, None)],
            ),
            station(
                "v2",
                "d1",
                now - 20,
                vec![status("maize", LessonState::Downloading, now + 3600, Some(now + 600))],
            ),
            station(
                "v3",
                "d1",
                now - 30,
                vec![status("maize", LessonState::AtRisk, now + 3600, None)],
            ),
            // Not heard from for two hours.
            station(
                "v4",
                "d1",
                now - 7200,
                vec![status("maize", LessonState::Ready, now + 3600, None)],
            ),
            station(
                "v5",
                "d2",
                now,
                vec![status("maize", LessonState::Ready, now + 3600, None)],
            ),
            // A showing already past is not listed.
            station("v6", "d2", now, vec![status("pigs", LessonState::Ready, now - 1, None)]),
        ];
        let f = fleet(&health, UnixTime(now), 900);
        assert_eq!((f.stations_online, f.stations_offline), (5, 1));
        assert_eq!(
            f.stations
                .iter()
                .filter(|s| !s.online)
                .map(|s| s.station.as_str())
                .collect::<Vec<_>>(),
            ["v4"]
        );
        let v3 = f.stations.iter().find(|s| s.station == "v3").unwrap();
        assert_eq!(
            v3.at_risk,
            vec![FleetRisk {
                lesson: "maize".into(),
                reason: "disk full".into()
            }]
        );
        let rows: Vec<_> = f
            .showings
            .iter()
            .map(|s| {
                (
                    s.district.as_str(),
                    s.ready,
                    s.downloading,
                    s.predicted_finish,
                    s.at_risk,
                    s.offline,
                )
            })
            .collect();
        assert_eq!(
            rows,
            vec![("d1", 1, 1, Some(now + 600), 1, 1), ("d2", 1, 0, None, 0, 0)]
        );
    }
}
