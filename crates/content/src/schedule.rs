//! Schedules (播放计划): which lesson shows where and when.

use crate::encoding::{put_seq, put_u64, put_u8, Decode, DecodeError, Decoder, Encode};
use crate::name::{AreaName, LessonId, NodeName};
use crate::time::UnixTime;

/// Schedule format version understood by this build.
pub const SCHEDULE_FORMAT: u8 = 1;
/// Most entries in one schedule.
pub const MAX_SCHEDULE_ENTRIES: usize = 50_000;

/// Who a schedule entry is for.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Target {
    /// Every station.
    All,
    /// Every station in a district (county).
    District(AreaName),
    /// Every station in a town.
    Town(AreaName),
    /// One station.
    Station(NodeName),
    /// A named group of stations (e.g. all agricultural cooperatives).
    Group(AreaName),
}

/// Where a station sits, for matching schedule targets: its name (from its certificate), and
/// the district, town and groups its operator configured.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Place {
    pub station: Option<NodeName>,
    pub district: Option<AreaName>,
    pub town: Option<AreaName>,
    pub groups: Vec<AreaName>,
}

impl Target {
    /// Whether a showing for this target is for a station at `place`.
    pub fn includes(&self, place: &Place) -> bool {
        match self {
            Target::All => true,
            Target::District(d) => place.district.as_ref() == Some(d),
            Target::Town(t) => place.town.as_ref() == Some(t),
            Target::Station(s) => place.station.as_ref() == Some(s),
            Target::Group(g) => place.groups.contains(g),
        }
    }
}

impl Encode for Target {
    fn encode(&self, out: &mut Vec<u8>) {
        match self {
            Target::All => put_u8(out, 1),
            Target::District(n) => {
                put_u8(out, 2);
                n.encode(out);
            }
            Target::Town(n) => {
                put_u8(out, 3);
                n.encode(out);
            }
            Target::Station(n) => {
                put_u8(out, 4);
                n.encode(out);
            }
            Target::Group(n) => {
                put_u8(out, 5);
                n.encode(out);
            }
        }
    }
}

impl Decode for Target {
    const WHAT: &'static str = "schedule target";
    fn decode(d: &mut Decoder<'_>) -> Result<Self, DecodeError> {
        match d.u8("schedule target")? {
            1 => Ok(Target::All),
            2 => AreaName::decode(d).map(Target::District),
            3 => AreaName::decode(d).map(Target::Town),
            4 => NodeName::decode(d).map(Target::Station),
            5 => AreaName::decode(d).map(Target::Group),
            tag => Err(DecodeError::InvalidTag {
                field: "schedule target",
                tag,
            }),
        }
    }
}

/// One showing: a lesson, when it starts, and for whom.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ScheduleEntry {
    pub lesson: LessonId,
    pub show_at: UnixTime,
    pub target: Target,
}

impl Encode for ScheduleEntry {
    fn encode(&self, out: &mut Vec<u8>) {
        self.lesson.encode(out);
        self.show_at.encode(out);
        self.target.encode(out);
    }
}

impl Decode for ScheduleEntry {
    const WHAT: &'static str = "schedule entry";
    fn decode(d: &mut Decoder<'_>) -> Result<Self, DecodeError> {
        Ok(Self {
            lesson: LessonId::decode(d)?,
            show_at: UnixTime::decode(d)?,
            target: Target::decode(d)?,
        })
    }
}

/// The whole schedule at one version. Like the catalog, versions only grow, and a new version
/// replaces the whole set of entries.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Schedule {
    pub version: u64,
    pub issued_at: UnixTime,
    /// After this instant the schedule is stale and refused (freeze protection, as for catalogs).
    pub expires_at: UnixTime,
    pub entries: Vec<ScheduleEntry>,
}

impl Schedule {
    /// The entries whose showing starts in `[now, now + horizon_secs]`: not over yet, and close
    /// enough to prepare for.
    pub fn upcoming(&self, now: UnixTime, horizon_secs: u64) -> impl Iterator<Item = &ScheduleEntry> {
        let until = now.plus_secs(horizon_secs);
        self.entries
            .iter()
            .filter(move |e| e.show_at >= now && e.show_at <= until)
    }

    /// The first instant after `now` at which an entry enters the horizon `[now, now + horizon_secs]`
    /// (its showing minus the horizon), if any entry is still beyond it.
    pub fn next_entering(&self, now: UnixTime, horizon_secs: u64) -> Option<UnixTime> {
        self.entries
            .iter()
            .map(|e| UnixTime(e.show_at.0.saturating_sub(horizon_secs)))
            .filter(|at| *at > now)
            .min()
    }
}

impl Encode for Schedule {
    fn encode(&self, out: &mut Vec<u8>) {
        put_u8(out, SCHEDULE_FORMAT);
        put_u64(out, self.version);
        self.issued_at.encode(out);
        self.expires_at.encode(out);
        put_seq(out, &self.entries);
    }
}

impl Decode for Schedule {
    const WHAT: &'static str = "schedule";
    fn decode(d: &mut Decoder<'_>) -> Result<Self, DecodeError> {
        d.version("schedule", SCHEDULE_FORMAT)?;
        Ok(Self {
            version: d.u64("schedule version")?,
            issued_at: UnixTime::decode(d)?,
            expires_at: UnixTime::decode(d)?,
            entries: d.seq("schedule entries", MAX_SCHEDULE_ENTRIES)?,
        })
    }
}
