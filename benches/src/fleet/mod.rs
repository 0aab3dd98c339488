//! The fleet benchmark (issue #9): one publication to a city of stations through Courseway's
//! tree, and the same bytes through a tier of nginx caches, on loopback in one run. The binary
//! is `src/bin/fleet.rs`; the smoke test `tests/fleet_smoke.rs` runs [`courseway::run`] small.
//!
//! Shape: 1 origin → `cities` city relays → `towns` town relays (town `j` under city
//! `j % cities`) → `stations` stations (station `i` under town `i % towns`). Station `i` is on
//! the slow line class when `i % 5 == 4` (a fifth of them).

pub mod capacity;
pub mod courseway;
pub mod host;
pub mod nginx;
pub mod procfs;

use std::time::Duration;

use courseway_content::synthetic::{BuiltLesson, SyntheticLesson};
use courseway_content::{LessonId, RenditionKind};

/// The tree and the station lines.
#[derive(Debug, Clone)]
pub struct FleetConfig {
    pub cities: usize,
    pub towns: usize,
    pub stations: usize,
    /// The normal line, bits per second (the slow class gets a quarter).
    pub rate_bps: u64,
    /// One-way delay of every station line.
    pub delay: Duration,
    /// Random loss per packet, each direction (QUIC only: the HTTP clients emulate rate and
    /// delay, not loss).
    pub loss: f64,
    /// Bottleneck queue of a station line, as time at its rate (at least 16 KiB).
    pub queue: Duration,
    /// Memtable bytes of every node's store.
    pub memtable_bytes: usize,
    /// Whether each station is configured with its line's rate (`station.rate_limit`, as the
    /// deployment docs ask), which also sizes its receive windows to the line.
    pub stations_know_their_line: bool,
    /// Give up waiting for the fleet after this long.
    pub timeout: Duration,
    /// The seed of the lesson's bytes (station hosts rebuild it to check what they hold).
    pub lesson_seed: u64,
}

impl FleetConfig {
    /// Whether station `i` is on the slow line.
    pub fn is_slow(i: usize) -> bool {
        i % 5 == 4
    }

    /// Station `i`'s line rate in bits per second.
    pub fn rate_of(&self, i: usize) -> u64 {
        if Self::is_slow(i) {
            self.rate_bps / 4
        } else {
            self.rate_bps
        }
    }

    /// The bottleneck queue in bytes for a line of `rate_bps`.
    pub fn queue_bytes(&self, rate_bps: u64) -> usize {
        let bytes = (rate_bps as f64 / 8.0 * self.queue.as_secs_f64()) as usize;
        bytes.max(16 * 1024)
    }
}

/// The lesson: one 500 kbit/s rendition of 4-second segments (250 kB chunks) and a 100 kB
/// handout, about `bytes` in all.
pub fn lesson(bytes: u64, seed: u64) -> BuiltLesson {
    let mut spec = SyntheticLesson::standard(LessonId::new("fleet-lesson").expect("a valid id"), seed, 1);
    spec.renditions = vec![(
        "360p".into(),
        RenditionKind::Video {
            width: 640,
            height: 360,
        },
        500_000,
    )];
    spec.attachment_size = 100_000;
    spec.segments = bytes.saturating_sub(100_000).div_ceil(250_000).max(1) as u32;
    spec.build()
}

/// Total bytes of a lesson's chunks.
pub fn lesson_bytes(lesson: &BuiltLesson) -> u64 {
    lesson.chunks.values().map(|c| c.len() as u64).sum()
}

/// When the stations finished, per line class.
#[derive(Debug, Clone, Default)]
pub struct ClassTimes {
    /// Seconds from t = 0 until each station held the lesson (`None`: never, within the timeout).
    pub normal: Vec<Option<f64>>,
    pub slow: Vec<Option<f64>>,
}

impl ClassTimes {
    pub fn record(&mut self, station: usize, t: Option<f64>) {
        if FleetConfig::is_slow(station) {
            self.slow.push(t);
        } else {
            self.normal.push(t);
        }
    }

    /// The last station's time in a class (`None` if one never finished or the class is empty).
    pub fn last(times: &[Option<f64>]) -> Option<f64> {
        if times.is_empty() {
            return None;
        }
        times.iter().try_fold(0.0f64, |m, t| t.map(|t| m.max(t)))
    }

    /// The median station's time in a class.
    pub fn median(times: &[Option<f64>]) -> Option<f64> {
        let mut done: Vec<f64> = times.iter().flatten().copied().collect();
        if done.is_empty() {
            return None;
        }
        done.sort_by(f64::total_cmp);
        Some(done[done.len() / 2])
    }

    pub fn complete(&self) -> usize {
        self.normal.iter().chain(&self.slow).flatten().count()
    }
}

/// Hits over requests, 0 when there were none.
pub fn ratio(part: u64, whole: u64) -> f64 {
    if whole == 0 {
        0.0
    } else {
        part as f64 / whole as f64
    }
}
