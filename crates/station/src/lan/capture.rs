//! Viewing capture: playback records derived from HLS access. Pure: no clock, no IO.
//!
//! A playback session is one client address playing one rendition of one lesson. Each segment
//! the LAN server sends is fed in as a [`SegmentFetch`] with the time; a session that fetches
//! nothing for `idle_after` seconds is over, and so is every session when the server stops.
//! Times are whole seconds, so a session ends when *more than* `idle_after` whole seconds lie
//! between its last fetch and now: never before `idle_after` real seconds (a fetch at 10.9 s
//! and a sweep at 11.1 s are a second apart in whole seconds but not in fact).
//! An ended session becomes one [`Viewing`]: when it started (its first segment), the seconds
//! watched (the sum of the `EXTINF` durations of the *distinct* segments fetched, so a player
//! that fetches a segment twice, or in byte ranges, counts it once) and the device (a short
//! user-agent class and the client's address).
//! A session is credited with at most the time it lasted plus [`PLAYER_BUFFER_SECS`].
//!
//! Fetches never move time backwards: a `now` earlier than a session's last fetch (the wall
//! clock stepped back) is treated as that last fetch's time.

use std::collections::btree_map::Entry;
use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

use courseway_content::{LessonId, UnixTime};
use courseway_proto::Viewing;

/// One segment sent to a client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SegmentFetch {
    pub client: IpAddr,
    /// The `User-Agent` header (empty when there was none).
    pub user_agent: String,
    pub lesson: LessonId,
    pub rendition: String,
    /// The segment's index in its rendition.
    pub segment: usize,
    /// Its `EXTINF` duration.
    pub duration_ms: u32,
}

/// What identifies a playback session.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct SessionKey {
    client: IpAddr,
    lesson: LessonId,
    rendition: String,
}

#[derive(Debug, Clone)]
struct Session {
    started_at: UnixTime,
    last_fetch: UnixTime,
    device: String,
    /// Indices of the segments fetched, and the sum of their durations.
    segments: BTreeSet<usize>,
    watched_ms: u64,
}

/// The playback sessions in progress.
#[derive(Debug, Clone)]
pub struct Capture {
    idle_after_secs: u64,
    sessions: BTreeMap<SessionKey, Session>,
}

impl Capture {
    /// Sessions end after `idle_after_secs` without a segment fetch (at least 1).
    pub fn new(idle_after_secs: u64) -> Self {
        Self {
            idle_after_secs: idle_after_secs.max(1),
            sessions: BTreeMap::new(),
        }
    }

    /// Sessions in progress.
    pub fn len(&self) -> usize {
        self.sessions.len()
    }

    /// No session in progress.
    pub fn is_empty(&self) -> bool {
        self.sessions.is_empty()
    }

    /// A segment was sent at `now`: starts or extends its session. Returns the sessions that
    /// had gone idle by `now` (including this client's old session of the same rendition, if it
    /// had gone idle: the new fetch then starts a new session).
    pub fn fetched(&mut self, now: UnixTime, fetch: SegmentFetch) -> Vec<Viewing> {
        let ended = self.expire(now);
        let key = SessionKey {
            client: fetch.client,
            lesson: fetch.lesson,
            rendition: fetch.rendition,
        };
        let session = match self.sessions.entry(key) {
            Entry::Occupied(o) => o.into_mut(),
            Entry::Vacant(v) => v.insert(Session {
                started_at: now,
                last_fetch: now,
                device: device(fetch.client, &fetch.user_agent),
                segments: BTreeSet::new(),
                watched_ms: 0,
            }),
        };
        session.last_fetch = session.last_fetch.max(now);
        if session.segments.insert(fetch.segment) {
            session.watched_ms += u64::from(fetch.duration_ms);
        }
        ended
    }

    /// The sessions idle at `now` (no fetch for more than `idle_after_secs` whole seconds) end.
    pub fn expire(&mut self, now: UnixTime) -> Vec<Viewing> {
        let idle = self.idle_after_secs;
        let ended: Vec<SessionKey> = self
            .sessions
            .iter()
            .filter(|(_, s)| now.secs_since(s.last_fetch) > idle)
            .map(|(k, _)| k.clone())
            .collect();
        ended
            .into_iter()
            .filter_map(|k| self.sessions.remove_entry(&k))
            .map(|(k, s)| viewing(k, s))
            .collect()
    }

    /// Every session ends (the server stops).
    pub fn finish(&mut self) -> Vec<Viewing> {
        std::mem::take(&mut self.sessions)
            .into_iter()
            .map(|(k, s)| viewing(k, s))
            .collect()
    }
}

/// A player buffers ahead of what it shows, but not by more than this: a session is credited
/// with at most the time between its first and last fetch plus this. So a device that fetches a
/// whole lesson in seconds (a download, or someone padding the figures) is not counted as
/// having watched it.
pub const PLAYER_BUFFER_SECS: u64 = 60;

/// The milliseconds a session is credited with: its distinct segments' durations, capped by the
/// wall-clock time it lasted plus [`PLAYER_BUFFER_SECS`].
pub fn credited_ms(watched_ms: u64, started_at: UnixTime, last_fetch: UnixTime) -> u64 {
    watched_ms.min((last_fetch.secs_since(started_at) + PLAYER_BUFFER_SECS) * 1000)
}

fn viewing(key: SessionKey, session: Session) -> Viewing {
    let credited = credited_ms(session.watched_ms, session.started_at, session.last_fetch);
    // Rounded to the nearest second.
    let seconds = (credited + 500) / 1000;
    Viewing {
        lesson: key.lesson,
        rendition: key.rendition,
        started_at: session.started_at,
        seconds_watched: u32::try_from(seconds).unwrap_or(u32::MAX),
        device: session.device,
        attendance: None,
    }
}

/// The device as a viewing record names it: `"<class> <address>"`, e.g. `"phone 192.168.1.20"`.
pub fn device(client: IpAddr, user_agent: &str) -> String {
    format!("{} {}", device_class(user_agent), client)
}

pub use courseway_lan_proto::device::device_class;

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn ip(last: u8) -> IpAddr {
        IpAddr::from([192, 168, 1, last])
    }

    fn fetch(client: IpAddr, lesson: &str, rendition: &str, segment: usize, duration_ms: u32) -> SegmentFetch {
        SegmentFetch {
            client,
            user_agent: "VLC/3.0.18 LibVLC/3.0.18".into(),
            lesson: LessonId::new(lesson).unwrap(),
            rendition: rendition.into(),
            segment,
            duration_ms,
        }
    }

    #[test]
    fn a_session_is_its_distinct_segments_and_ends_when_idle() {
        let mut c = Capture::new(60);
        for (t, seg) in [(100, 0), (104, 1), (104, 1), (108, 2), (150, 1)] {
            assert!(c
                .fetched(UnixTime(t), fetch(ip(20), "l1", "720p", seg, 4_000))
                .is_empty());
        }
        assert!(
            c.expire(UnixTime(210)).is_empty(),
            "60 whole seconds after the last fetch may be 59.1 real ones: it is still on"
        );
        let ended = c.expire(UnixTime(211));
        assert_eq!(
            ended,
            vec![Viewing {
                lesson: LessonId::new("l1").unwrap(),
                rendition: "720p".into(),
                started_at: UnixTime(100),
                seconds_watched: 12,
                device: "player 192.168.1.20".into(),
                attendance: None,
            }]
        );
        assert!(c.is_empty());
    }

    #[test]
    fn two_devices_and_two_renditions_are_separate_sessions() {
        let mut c = Capture::new(60);
        c.fetched(UnixTime(0), fetch(ip(1), "l1", "720p", 0, 4_000));
        c.fetched(UnixTime(1), fetch(ip(2), "l1", "720p", 0, 4_000));
        c.fetched(UnixTime(2), fetch(ip(1), "l1", "360p", 1, 3_500));
        c.fetched(UnixTime(3), fetch(ip(1), "l2", "720p", 0, 4_000));
        assert_eq!(c.len(), 4);
        let mut all = c.finish();
        all.sort_by(|a, b| (&a.device, &a.lesson, &a.rendition).cmp(&(&b.device, &b.lesson, &b.rendition)));
        let summary: Vec<_> = all
            .iter()
            .map(|v| {
                (
                    v.device.as_str(),
                    v.lesson.as_str(),
                    v.rendition.as_str(),
                    v.seconds_watched,
                )
            })
            .collect();
        assert_eq!(
            summary,
            vec![
                ("player 192.168.1.1", "l1", "360p", 4),
                ("player 192.168.1.1", "l1", "720p", 4),
                ("player 192.168.1.1", "l2", "720p", 4),
                ("player 192.168.1.2", "l1", "720p", 4),
            ]
        );
        assert!(c.is_empty());
    }

    #[test]
    fn a_lesson_fetched_in_seconds_is_not_a_lesson_watched() {
        let mut c = Capture::new(60);
        // 100 four-second segments (400 s of lesson) fetched within 5 seconds.
        for seg in 0..100 {
            c.fetched(
                UnixTime(1_000 + seg as u64 / 20),
                fetch(ip(9), "l1", "720p", seg, 4_000),
            );
        }
        let v = c.finish();
        assert_eq!(v[0].seconds_watched, 4 + PLAYER_BUFFER_SECS as u32);
    }

    #[test]
    fn a_fetch_after_the_idle_time_starts_a_new_session() {
        let mut c = Capture::new(60);
        c.fetched(UnixTime(0), fetch(ip(1), "l1", "720p", 0, 4_000));
        let ended = c.fetched(UnixTime(62), fetch(ip(1), "l1", "720p", 1, 4_000));
        assert_eq!(ended.len(), 1);
        assert_eq!((ended[0].started_at, ended[0].seconds_watched), (UnixTime(0), 4));
        let rest = c.finish();
        assert_eq!((rest[0].started_at, rest[0].seconds_watched), (UnixTime(62), 4));
    }

    #[test]
    fn a_clock_stepping_back_neither_ends_nor_shortens_a_session() {
        let mut c = Capture::new(60);
        c.fetched(UnixTime(1_000), fetch(ip(1), "l1", "720p", 0, 4_000));
        c.fetched(UnixTime(500), fetch(ip(1), "l1", "720p", 1, 4_000));
        assert!(c.expire(UnixTime(1_060)).is_empty());
        assert_eq!(c.expire(UnixTime(1_061)).len(), 1);
    }

    #[test]
    fn a_device_is_its_class_and_address() {
        assert_eq!(device(IpAddr::from([10, 0, 0, 7]), "curl/8"), "other 10.0.0.7");
        assert_eq!(
            device(IpAddr::from([10, 0, 0, 8]), "VLC/3.0.18 LibVLC/3.0.18"),
            "player 10.0.0.8"
        );
    }

    /// A session in the model: its start, its last fetch, its segments' durations.
    type ModelSession = (u64, u64, BTreeMap<usize, u32>);

    fn arb_fetch() -> impl Strategy<Value = (u64, u8, u8, usize, u32)> {
        // (seconds since the previous fetch, client, rendition, segment, duration)
        (0u64..100, 0u8..3, 0u8..2, 0usize..20, 1u32..10_000)
    }

    proptest! {
        /// Whatever the order and timing of fetches: every session ends exactly once (nothing
        /// lost, nothing twice), a record never counts a segment twice, and each session is
        /// credited with its distinct segments' durations, capped by the time it lasted plus
        /// the player's buffer.
        #[test]
        fn every_fetch_lands_in_exactly_one_record(
            fetches in proptest::collection::vec(arb_fetch(), 1..200),
            idle in 1u64..120,
        ) {
            let mut c = Capture::new(idle);
            let mut now = 1_000u64;
            let mut records = Vec::new();
            // The model: per (client, rendition), the current session's start, last fetch and
            // segments.
            let mut model: BTreeMap<(u8, u8), ModelSession> = BTreeMap::new();
            let mut expected = Vec::new();
            let credited = |start: u64, last: u64, segs: &BTreeMap<usize, u32>| {
                credited_ms(segs.values().map(|d| u64::from(*d)).sum::<u64>(), UnixTime(start), UnixTime(last))
            };
            for (gap, client, rendition, segment, duration) in fetches {
                now += gap;
                let open: Vec<_> = model.iter().filter(|(_, (_, last, _))| now - *last > idle).map(|(k, _)| *k).collect();
                for k in open {
                    let (start, last, segs) = model.remove(&k).unwrap();
                    expected.push((k, credited(start, last, &segs)));
                }
                let entry = model.entry((client, rendition)).or_insert((now, now, BTreeMap::new()));
                entry.1 = now;
                entry.2.entry(segment).or_insert(duration);
                records.extend(c.fetched(
                    UnixTime(now),
                    fetch(ip(client), "l", &format!("r{rendition}"), segment, duration),
                ));
            }
            records.extend(c.finish());
            for (k, (start, last, segs)) in model {
                expected.push((k, credited(start, last, &segs)));
            }
            prop_assert_eq!(records.len(), expected.len());
            let mut got: Vec<_> = records
                .iter()
                .map(|v| (v.device.clone(), v.rendition.clone(), u64::from(v.seconds_watched)))
                .collect();
            let mut want: Vec<_> = expected
                .iter()
                .map(|((client, r), ms)| (format!("player {}", ip(*client)), format!("r{r}"), (ms + 500) / 1000))
                .collect();
            got.sort();
            want.sort();
            prop_assert_eq!(got, want);
            prop_assert!(c.is_empty());
        }
    }
}
