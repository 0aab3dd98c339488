//! Schedules (播放计划): which lesson shows where and when, and when a live channel is on.
//!
//! # Format versions
//!
//! - 1: version, issue and expiry times, lesson showings.
//! - 2 ([`SCHEDULE_FORMAT`]): the same, then the live showings ([`LiveShowing`]).
//!
//! A schedule is written in format 1 when it has no live showing and in format 2 otherwise, so
//! every value has one encoding (a format-2 schedule with an empty live list is refused) and a
//! schedule saved or signed before the upgrade decodes, re-encodes to the same bytes and still
//! verifies. A build that knows only format 1 refuses a schedule with live showings rather
//! than dropping them unseen.

use crate::encoding::{put_seq, put_str, put_u32, put_u64, put_u8, Decode, DecodeError, Decoder, Encode};
use crate::name::{AreaName, ChannelId, LessonId, NodeName};
use crate::time::UnixTime;

/// Newest schedule format understood by this build: 2 adds live showings.
pub const SCHEDULE_FORMAT: u8 = 2;
/// The first schedule format (lesson showings only): still written for a schedule with no live
/// showing, and decoded.
pub const SCHEDULE_FORMAT_V1: u8 = 1;
/// Most entries in one schedule.
pub const MAX_SCHEDULE_ENTRIES: usize = 50_000;
/// Most live showings in one schedule.
pub const MAX_LIVE_SHOWINGS: usize = 10_000;
/// Longest live showing title, in bytes.
pub const MAX_LIVE_TITLE: usize = 300;

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

/// A live showing (直播预告): when a live channel broadcasts, for whom, and what. Stations show it
/// so people know when to tune in; there is nothing to download ahead, so planners, prefetchers
/// and readiness reports (which read [`Schedule::entries`] only) never see it.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct LiveShowing {
    pub channel: ChannelId,
    pub show_at: UnixTime,
    /// How long the broadcast is planned to last.
    pub duration_secs: u32,
    /// What is on (at most [`MAX_LIVE_TITLE`] bytes), e.g. "春耕技术直播课".
    pub title: String,
    pub target: Target,
}

impl LiveShowing {
    /// When the planned broadcast ends.
    pub fn ends_at(&self) -> UnixTime {
        self.show_at.plus_secs(u64::from(self.duration_secs))
    }
}

impl Encode for LiveShowing {
    fn encode(&self, out: &mut Vec<u8>) {
        self.channel.encode(out);
        self.show_at.encode(out);
        put_u32(out, self.duration_secs);
        put_str(out, &self.title);
        self.target.encode(out);
    }
}

impl Decode for LiveShowing {
    const WHAT: &'static str = "live showing";
    fn decode(d: &mut Decoder<'_>) -> Result<Self, DecodeError> {
        Ok(Self {
            channel: ChannelId::decode(d)?,
            show_at: UnixTime::decode(d)?,
            duration_secs: d.u32("live showing duration")?,
            title: d.str("live showing title", MAX_LIVE_TITLE)?,
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
    /// Live showings (format 2; empty in a format-1 schedule).
    pub live: Vec<LiveShowing>,
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

    /// The format this schedule is encoded in: [`SCHEDULE_FORMAT_V1`] without live showings,
    /// [`SCHEDULE_FORMAT`] with.
    pub fn format(&self) -> u8 {
        if self.live.is_empty() {
            SCHEDULE_FORMAT_V1
        } else {
            SCHEDULE_FORMAT
        }
    }

    /// The live showings of `channel` for a station at `place` that are not over at `now`,
    /// soonest first.
    pub fn live_showings<'a>(
        &'a self,
        channel: &'a ChannelId,
        place: &'a Place,
        now: UnixTime,
    ) -> impl Iterator<Item = &'a LiveShowing> {
        let mut list: Vec<&LiveShowing> = self
            .live
            .iter()
            .filter(move |l| &l.channel == channel && l.target.includes(place) && l.ends_at() > now)
            .collect();
        list.sort_by_key(|l| l.show_at);
        list.into_iter()
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
        let format = self.format();
        put_u8(out, format);
        put_u64(out, self.version);
        self.issued_at.encode(out);
        self.expires_at.encode(out);
        put_seq(out, &self.entries);
        if format != SCHEDULE_FORMAT_V1 {
            put_seq(out, &self.live);
        }
    }
}

impl Decode for Schedule {
    const WHAT: &'static str = "schedule";
    fn decode(d: &mut Decoder<'_>) -> Result<Self, DecodeError> {
        let format = d.u8("format version")?;
        if format != SCHEDULE_FORMAT && format != SCHEDULE_FORMAT_V1 {
            return Err(DecodeError::UnsupportedVersion {
                what: "schedule",
                version: format,
                supported: SCHEDULE_FORMAT,
            });
        }
        let version = d.u64("schedule version")?;
        let issued_at = UnixTime::decode(d)?;
        let expires_at = UnixTime::decode(d)?;
        let entries = d.seq("schedule entries", MAX_SCHEDULE_ENTRIES)?;
        let live: Vec<LiveShowing> = if format == SCHEDULE_FORMAT_V1 {
            Vec::new()
        } else {
            d.seq("live showings", MAX_LIVE_SHOWINGS)?
        };
        if format == SCHEDULE_FORMAT && live.is_empty() {
            return Err(DecodeError::Invalid {
                field: "live showings",
                reason: "a format-2 schedule lists live showings; one without is written in format 1",
            });
        }
        Ok(Self {
            version,
            issued_at,
            expires_at,
            entries,
            live,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::encoding::{Decode, Encode};

    fn schedule(live: Vec<LiveShowing>) -> Schedule {
        Schedule {
            version: 4,
            issued_at: UnixTime(10),
            expires_at: UnixTime(1_000),
            entries: vec![ScheduleEntry {
                lesson: LessonId::new("maize-01").unwrap(),
                show_at: UnixTime(500),
                target: Target::All,
            }],
            live,
        }
    }

    fn live_showing(channel: &str, at: u64, target: Target) -> LiveShowing {
        LiveShowing {
            channel: ChannelId::new(channel).unwrap(),
            show_at: UnixTime(at),
            duration_secs: 3600,
            title: "春耕技术直播课".into(),
            target,
        }
    }

    #[test]
    fn a_schedule_with_live_showings_is_format_2_and_round_trips() {
        let s = schedule(vec![live_showing("city-live", 600, Target::All)]);
        let bytes = s.to_bytes();
        assert_eq!(bytes[0], SCHEDULE_FORMAT);
        assert_eq!(Schedule::from_bytes(&bytes).unwrap(), s);
    }

    #[test]
    fn a_schedule_without_live_showings_is_written_and_read_as_format_1() {
        let s = schedule(vec![]);
        // What a format-1 build wrote: the same bytes.
        let mut v1 = vec![SCHEDULE_FORMAT_V1];
        v1.extend_from_slice(&4u64.to_be_bytes());
        UnixTime(10).encode(&mut v1);
        UnixTime(1_000).encode(&mut v1);
        put_seq(&mut v1, &s.entries);
        assert_eq!(s.to_bytes(), v1);
        assert_eq!(Schedule::from_bytes(&v1).unwrap(), s);
        // A format-2 schedule with no live showing has another encoding of the same value: refused.
        let mut v2 = v1.clone();
        v2[0] = SCHEDULE_FORMAT;
        v2.extend_from_slice(&0u32.to_be_bytes());
        assert!(matches!(
            Schedule::from_bytes(&v2),
            Err(DecodeError::Invalid {
                field: "live showings",
                ..
            })
        ));
        // Unknown formats are refused.
        v1[0] = 3;
        assert!(matches!(
            Schedule::from_bytes(&v1),
            Err(DecodeError::UnsupportedVersion { version: 3, .. })
        ));
    }

    #[test]
    fn a_format_1_decoder_refuses_a_schedule_with_live_showings() {
        // A build that knows format 1 only checks the version byte exactly.
        let bytes = schedule(vec![live_showing("city-live", 600, Target::All)]).to_bytes();
        let mut d = Decoder::new(&bytes);
        assert!(matches!(
            d.version("schedule", SCHEDULE_FORMAT_V1),
            Err(DecodeError::UnsupportedVersion {
                version: 2,
                supported: 1,
                ..
            })
        ));
    }

    #[test]
    fn live_showings_for_a_place_that_are_not_over_come_soonest_first() {
        let town = AreaName::new("town-a").unwrap();
        let s = schedule(vec![
            live_showing("city-live", 9_000, Target::All),
            live_showing("city-live", 5_000, Target::Town(town.clone())),
            live_showing("city-live", 100, Target::All),
            live_showing("other", 6_000, Target::All),
            live_showing("city-live", 7_000, Target::Town(AreaName::new("town-b").unwrap())),
        ]);
        let place = Place {
            town: Some(town),
            ..Place::default()
        };
        let ch = ChannelId::new("city-live").unwrap();
        let at: Vec<u64> = s
            .live_showings(&ch, &place, UnixTime(4_000))
            .map(|l| l.show_at.0)
            .collect();
        // The one at 100 ended at 3,700.
        assert_eq!(at, vec![5_000, 9_000]);
    }
}
