//! A live ingest kept running: restarted when it stops (an RTSP camera gone, an SRT or UDP
//! pipeline error), with its segment numbers carrying on so the origin's sequence numbers only
//! grow.
//!
//! A pulled feed (RTSP, RTMP) that stays connected but sends nothing for [`stall_limit`] is restarted
//! too: a frozen camera posts no error. A listening input (UDP, SRT) is never restarted for
//! silence, since no one pushing is the normal state between broadcasts.
//!
//! The first start is checked as [`LiveIngest::start`] checks it (missing GStreamer elements, a
//! bad ladder, an unusable spool fail at once: retrying would not fix them); after that every
//! stop is followed by a new start after [`restart_delay`], on the feed's own thread.

use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::live::{CutSegment, LiveIngest, LiveIngestConfig, LiveIngestError, LiveInput};

/// First wait before a restart; it doubles for each start in a row that ran less than
/// [`STEADY_RUN`], up to [`MAX_RESTART_DELAY`].
pub const FIRST_RESTART_DELAY: Duration = Duration::from_secs(2);
/// Longest wait between restarts.
pub const MAX_RESTART_DELAY: Duration = Duration::from_secs(30);
/// A run at least this long resets the wait to [`FIRST_RESTART_DELAY`].
pub const STEADY_RUN: Duration = Duration::from_secs(60);

/// The wait before restart number `failures_in_a_row` (1 for the first restart after a steady
/// run). Pure.
pub fn restart_delay(failures_in_a_row: u32) -> Duration {
    let doublings = failures_in_a_row.saturating_sub(1).min(8);
    FIRST_RESTART_DELAY
        .saturating_mul(1 << doublings)
        .min(MAX_RESTART_DELAY)
}

/// How long a pulled feed may go without a segment before it is restarted: five segments, at
/// least 20 s (`None` for listening inputs). Pure.
pub fn stall_limit(config: &LiveIngestConfig) -> Option<Duration> {
    match config.input {
        LiveInput::Rtsp { .. } | LiveInput::Rtmp { .. } => Some((config.segment * 5).max(Duration::from_secs(20))),
        LiveInput::TestPattern { .. } | LiveInput::UdpMpegTs { .. } | LiveInput::Srt { .. } => None,
    }
}

/// A running, self-restarting live ingest; dropping it stops it.
pub struct LiveFeed {
    stop: Arc<AtomicBool>,
    restarts: Arc<AtomicU64>,
    thread: Option<JoinHandle<()>>,
}

impl std::fmt::Debug for LiveFeed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LiveFeed")
            .field("restarts", &self.restarts())
            .finish_non_exhaustive()
    }
}

impl LiveFeed {
    /// Starts the ingest (failing as [`LiveIngest::start`] does, except that a pipeline that
    /// fails once running is restarted) and keeps it running. `on_segment` gets every segment
    /// of every restart, [`CutSegment::index`] counted on from the segments before (each
    /// restart begins one past the highest index handed out).
    pub fn start(
        config: LiveIngestConfig,
        on_segment: impl Fn(CutSegment) + Send + Sync + 'static,
    ) -> Result<Self, LiveIngestError> {
        let on_segment: Arc<dyn Fn(CutSegment) + Send + Sync> = Arc::new(on_segment);
        let numbering = Arc::new(Numbering::default());
        let first = start_numbered(&config, &on_segment, &numbering);
        let first = match first {
            Ok(ingest) => Some(ingest),
            // A feed that cannot be reached yet is retried like one that stopped.
            Err(LiveIngestError::Pipeline(reason)) => {
                tracing::warn!(%reason, "the live feed did not start; retrying");
                None
            }
            Err(e) => return Err(e),
        };
        let stop = Arc::new(AtomicBool::new(false));
        let restarts = Arc::new(AtomicU64::new(0));
        let thread = {
            let (stop, restarts) = (stop.clone(), restarts.clone());
            std::thread::Builder::new()
                .name("live-feed".into())
                .spawn(move || supervise(first, &config, &on_segment, &numbering, &stop, &restarts))
                .map_err(|e| LiveIngestError::Build(format!("no thread for the live feed: {e}")))?
        };
        Ok(Self {
            stop,
            restarts,
            thread: Some(thread),
        })
    }

    /// How many times the ingest was restarted.
    pub fn restarts(&self) -> u64 {
        self.restarts.load(Ordering::Relaxed)
    }
}

impl Drop for LiveFeed {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Starts one ingest whose segment indices carry on from the runs before, in a new epoch if
/// the run before cut anything.
fn start_numbered(
    config: &LiveIngestConfig,
    on_segment: &Arc<dyn Fn(CutSegment) + Send + Sync>,
    numbering: &Arc<Numbering>,
) -> Result<LiveIngest, LiveIngestError> {
    let Run { base, epoch } = numbering.begin_run();
    let (on_segment, numbering) = (on_segment.clone(), numbering.clone());
    LiveIngest::start(config, move |mut cut| {
        cut.index += base;
        cut.epoch = epoch;
        numbering.cut(cut.index);
        on_segment(cut)
    })
}

/// Where one run of the ingest starts counting.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Run {
    /// Added to the run's segment indices.
    base: u64,
    epoch: u32,
}

/// The next segment index to hand out, the epoch, and when a segment (or the current start)
/// was last seen.
struct Numbering {
    next: AtomicU64,
    /// `next` when the current epoch began: a run that cut nothing leaves the epoch alone.
    epoch_began_at: AtomicU64,
    epoch: AtomicU32,
    epoch_clock: Instant,
    /// Milliseconds since `epoch_clock`.
    cut_at: AtomicU64,
}

impl Default for Numbering {
    fn default() -> Self {
        Self {
            next: AtomicU64::new(0),
            epoch_began_at: AtomicU64::new(0),
            epoch: AtomicU32::new(0),
            epoch_clock: Instant::now(),
            cut_at: AtomicU64::new(0),
        }
    }
}

impl Numbering {
    /// A run starts (runs never overlap: the supervisor starts one after the last stopped).
    fn begin_run(&self) -> Run {
        let base = self.next.load(Ordering::Relaxed);
        let mut epoch = self.epoch.load(Ordering::Relaxed);
        if base > self.epoch_began_at.load(Ordering::Relaxed) {
            epoch += 1;
            self.epoch.store(epoch, Ordering::Relaxed);
            self.epoch_began_at.store(base, Ordering::Relaxed);
        }
        self.cut_at.store(self.now_ms(), Ordering::Relaxed);
        Run { base, epoch }
    }

    /// A segment numbered `index` was cut.
    fn cut(&self, index: u64) {
        self.next.fetch_max(index + 1, Ordering::Relaxed);
        self.cut_at.store(self.now_ms(), Ordering::Relaxed);
    }

    fn now_ms(&self) -> u64 {
        self.epoch_clock.elapsed().as_millis() as u64
    }

    fn silent_for(&self) -> Duration {
        Duration::from_millis(self.now_ms().saturating_sub(self.cut_at.load(Ordering::Relaxed)))
    }
}

/// Sleeps up to `d`, waking early when `stop` is set; returns whether to go on.
fn pause(d: Duration, stop: &AtomicBool) -> bool {
    let until = Instant::now() + d;
    while Instant::now() < until {
        if stop.load(Ordering::Relaxed) {
            return false;
        }
        std::thread::sleep(Duration::from_millis(100).min(until.saturating_duration_since(Instant::now())));
    }
    !stop.load(Ordering::Relaxed)
}

fn supervise(
    mut running: Option<LiveIngest>,
    config: &LiveIngestConfig,
    on_segment: &Arc<dyn Fn(CutSegment) + Send + Sync>,
    numbering: &Arc<Numbering>,
    stop: &AtomicBool,
    restarts: &AtomicU64,
) {
    let stall = stall_limit(config);
    let mut failures_in_a_row = u32::from(running.is_none());
    loop {
        if let Some(ingest) = running.take() {
            let started = Instant::now();
            while !ingest.is_finished() {
                if !pause(Duration::from_millis(200), stop) {
                    let _ = ingest.stop();
                    return;
                }
                if stall.is_some_and(|limit| numbering.silent_for() > limit) {
                    tracing::warn!(input = %config.input, silent = ?numbering.silent_for(), "the live feed sends nothing; reconnecting");
                    break;
                }
            }
            let outcome = ingest.stop();
            if started.elapsed() >= STEADY_RUN {
                failures_in_a_row = 0;
            }
            failures_in_a_row += 1;
            match outcome {
                Ok(()) => tracing::warn!(input = %config.input, "the live feed ended; restarting it"),
                Err(e) => tracing::warn!(input = %config.input, error = %e, "the live feed stopped; restarting it"),
            }
        }
        if !pause(restart_delay(failures_in_a_row), stop) {
            return;
        }
        restarts.fetch_add(1, Ordering::Relaxed);
        match start_numbered(config, on_segment, numbering) {
            Ok(ingest) => running = Some(ingest),
            Err(e) => {
                failures_in_a_row += 1;
                tracing::warn!(input = %config.input, error = %e, "the live feed could not be restarted; retrying");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn restart_delay_doubles_from_two_seconds_up_to_thirty() {
        let secs: Vec<u64> = (0..8).map(|n| restart_delay(n).as_secs()).collect();
        assert_eq!(secs, [2, 2, 4, 8, 16, 30, 30, 30]);
        assert_eq!(restart_delay(u32::MAX), MAX_RESTART_DELAY);
    }

    #[test]
    fn only_a_pulled_feed_is_restarted_for_silence() {
        let mut c = LiveIngestConfig::new(
            LiveInput::Rtsp {
                url: "rtsp://10.0.0.20/stream1".into(),
                latency_ms: 200,
            },
            "/tmp/spool",
        );
        assert_eq!(stall_limit(&c), Some(Duration::from_secs(20)));
        c.segment = Duration::from_secs(6);
        assert_eq!(stall_limit(&c), Some(Duration::from_secs(30)));
        c.input = LiveInput::Srt {
            port: 7001,
            latency_ms: 120,
        };
        assert_eq!(stall_limit(&c), None);
    }

    #[test]
    fn indices_carry_on_and_a_run_that_cut_something_ends_its_epoch() {
        let n = Numbering::default();
        assert_eq!(n.begin_run(), Run { base: 0, epoch: 0 });
        // Two renditions cut 0..=4 and 0..=3: the next run starts after the furthest.
        for i in 0..5 {
            n.cut(i);
        }
        for i in 0..4 {
            n.cut(i);
        }
        assert_eq!(n.begin_run(), Run { base: 5, epoch: 1 });
        // A run that failed before its first segment: same base, same epoch.
        assert_eq!(n.begin_run(), Run { base: 5, epoch: 1 });
        n.cut(5);
        assert_eq!(n.begin_run(), Run { base: 6, epoch: 2 });
    }
}
