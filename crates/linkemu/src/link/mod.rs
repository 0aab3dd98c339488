//! The pure link model: no sockets, no clock, no async. Time is an argument (a [`Duration`]
//! since the link started) and randomness comes from a generator seeded by the config.
//!
//! A [`Link`] is one direction. [`Link::offer`] takes a packet's length and the time it reaches
//! the link and returns a [`Decision`]: dropped (and why), or delivered at a time. The IO edge
//! holds delivered packets until that time and then calls [`Link::confirm`], which says whether
//! a manual cut in between lost the packet after all.
//!
//! What happens to an offered packet, in order:
//!
//! 1. Two 64-bit values are drawn from the generator, one for loss and one for jitter, whatever
//!    happens next. So the n-th packet's loss and jitter depend only on the seed and `n`, not on
//!    timing, rate or queue state: a test with a fixed seed knows exactly which packets are lost.
//! 2. If the link is down at `now` (scheduled window or manual cut): dropped, [`DropReason::Outage`].
//! 3. With probability `loss`: dropped, [`DropReason::Loss`] (at the ingress, like netem, so a
//!    lost packet does not use the link's rate).
//! 4. With a rate: if the bytes still waiting for or in serialisation plus this packet exceed
//!    `queue_bytes`, tail-dropped, [`DropReason::QueueFull`]. Otherwise it is serialised after
//!    the packets ahead of it (FIFO) and finishes at `max(now, busy_until) + len × 8 / rate`.
//!    Without a rate it "finishes" at `now`.
//! 5. It arrives at `finish + delay + U[0, jitter]`, raised to the previous packet's arrival
//!    unless `reorder` is set.
//! 6. If its time on the link, `[now, arrival]`, meets a scheduled outage window: dropped,
//!    [`DropReason::Outage`] — a cut line loses what is on it. A dropped packet takes no place
//!    in the queue.
//!
//! A manual [`Link::cut`] likewise loses every packet still on the link: packets accepted
//! before it and due at or after the cut fail [`Link::confirm`], and the queue is emptied.
//!
//! Times never go back: a `now` earlier than one seen before is taken as the latest one seen.

mod config;
mod outage;

use std::time::Duration;

use rand_chacha::rand_core::{RngCore, SeedableRng};
use rand_chacha::ChaCha8Rng;

pub use config::{
    ConfigError, Direction, DuplexConfig, LinkConfig, DEFAULT_QUEUE_BYTES, MAX_DELAY, MAX_OUTAGES, MAX_QUEUE_BYTES,
    MIN_QUEUE_BYTES, MIN_RATE_BPS,
};
pub use outage::OutageSchedule;

const NANOS_PER_SEC: u128 = 1_000_000_000;

/// Why a packet was dropped.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DropReason {
    /// Random loss.
    Loss,
    /// The link was down when the packet arrived, or went down while the packet was on it.
    Outage,
    /// The bottleneck buffer was full (tail drop).
    QueueFull,
}

/// A packet the link will deliver, unless a manual cut loses it first.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Scheduled {
    at: Duration,
    len: usize,
    /// The link's cut generation when the packet was accepted.
    generation: u64,
}

impl Scheduled {
    /// When the packet arrives at the far end, since the link's start.
    pub fn at(&self) -> Duration {
        self.at
    }

    /// The packet's length in bytes.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether the packet is empty (a zero-length datagram).
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

/// What the link does with an offered packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// Deliver at [`Scheduled::at`], then call [`Link::confirm`].
    Deliver(Scheduled),
    /// Drop it.
    Drop(DropReason),
}

/// Counters of one direction. `offered` = `accepted` + the three drop counters at offer time;
/// `dropped_outage` also counts accepted packets a manual cut lost before delivery.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LinkStats {
    /// Packets offered.
    pub offered: u64,
    /// Packets accepted (scheduled for delivery).
    pub accepted: u64,
    /// Packets confirmed delivered.
    pub delivered_packets: u64,
    /// Bytes confirmed delivered.
    pub delivered_bytes: u64,
    /// Packets lost at random.
    pub dropped_loss: u64,
    /// Packets lost to an outage or a cut.
    pub dropped_outage: u64,
    /// Packets tail-dropped at a full queue.
    pub dropped_queue: u64,
}

/// One direction of an emulated link. See the module doc.
#[derive(Debug, Clone)]
pub struct Link {
    config: LinkConfig,
    schedule: OutageSchedule,
    rng: ChaCha8Rng,
    /// When the serialiser finishes the last accepted packet. The queue holds the bytes that
    /// `busy_until - now` represents at the rate.
    busy_until: Duration,
    /// The latest arrival time handed out (the floor for the next one unless `reorder`).
    last_arrival: Duration,
    /// The latest `now` seen.
    latest_now: Duration,
    /// How many manual cuts there have been.
    generation: u64,
    /// When the last manual cut happened.
    last_cut_at: Duration,
    stats: LinkStats,
}

impl Link {
    /// A link starting at time zero, up, with an empty queue.
    pub fn new(config: LinkConfig) -> Result<Self, ConfigError> {
        config.validate()?;
        let schedule = OutageSchedule::new(&config.outages)?;
        Ok(Self {
            rng: ChaCha8Rng::seed_from_u64(config.seed),
            config,
            schedule,
            busy_until: Duration::ZERO,
            last_arrival: Duration::ZERO,
            latest_now: Duration::ZERO,
            generation: 0,
            last_cut_at: Duration::ZERO,
            stats: LinkStats::default(),
        })
    }

    /// The configuration.
    pub fn config(&self) -> &LinkConfig {
        &self.config
    }

    /// The outage schedule (with the manual switch).
    pub fn schedule(&self) -> &OutageSchedule {
        &self.schedule
    }

    /// The counters.
    pub fn stats(&self) -> LinkStats {
        self.stats
    }

    /// Whether the link is down at `now` (scheduled window or manual cut).
    pub fn is_down(&self, now: Duration) -> bool {
        self.schedule.is_down(now)
    }

    /// Whether the link is cut by hand.
    pub fn is_cut(&self) -> bool {
        self.schedule.is_cut()
    }

    fn advance(&mut self, now: Duration) -> Duration {
        self.latest_now = self.latest_now.max(now);
        self.latest_now
    }

    /// Bytes waiting for or in serialisation at `now` (the part of the packet being sent that
    /// is not sent yet counts), rounded down. Always zero without a rate.
    pub fn backlog_bytes(&self, now: Duration) -> u64 {
        match self.config.rate_bps {
            None => 0,
            Some(rate) => bytes_in(self.busy_until.saturating_sub(now.max(self.latest_now)), rate),
        }
    }

    /// Decides what happens to a packet of `len` bytes reaching the link at `now`.
    pub fn offer(&mut self, now: Duration, len: usize) -> Decision {
        let now = self.advance(now);
        self.stats.offered += 1;
        // Always draw both, so that the n-th packet's fate depends only on the seed and n.
        let loss_draw = self.rng.next_u64();
        let jitter_draw = self.rng.next_u64();

        if self.schedule.is_down(now) {
            return self.dropped(DropReason::Outage);
        }
        if unit_interval(loss_draw) < self.config.loss {
            return self.dropped(DropReason::Loss);
        }
        let finish = match self.config.rate_bps {
            None => now,
            Some(rate) => {
                let backlog = bytes_in(self.busy_until.saturating_sub(now), rate);
                let len64 = u64::try_from(len).unwrap_or(u64::MAX);
                if backlog.saturating_add(len64) > self.config.queue_bytes as u64 {
                    return self.dropped(DropReason::QueueFull);
                }
                self.busy_until.max(now).saturating_add(serialisation(len, rate))
            }
        };
        let extra = scale(jitter_draw, self.config.jitter);
        let mut at = finish.saturating_add(self.config.delay).saturating_add(extra);
        if !self.config.reorder {
            at = at.max(self.last_arrival);
        }
        if self.schedule.overlaps(now, at) {
            return self.dropped(DropReason::Outage);
        }
        if self.config.rate_bps.is_some() {
            self.busy_until = finish;
        }
        self.last_arrival = self.last_arrival.max(at);
        self.stats.accepted += 1;
        Decision::Deliver(Scheduled {
            at,
            len,
            generation: self.generation,
        })
    }

    fn dropped(&mut self, reason: DropReason) -> Decision {
        match reason {
            DropReason::Loss => self.stats.dropped_loss += 1,
            DropReason::Outage => self.stats.dropped_outage += 1,
            DropReason::QueueFull => self.stats.dropped_queue += 1,
        }
        Decision::Drop(reason)
    }

    /// Called when a scheduled packet is due (at or after [`Scheduled::at`]): true if it is
    /// delivered, false if a manual cut lost it while it was on the link.
    ///
    /// A packet survives if no cut happened since it was accepted, or if exactly one did and
    /// the packet was due before it (it was only confirmed late). A packet confirmed after two
    /// or more later cuts is counted lost even if it was due before the first of them: confirm
    /// packets when they are due.
    pub fn confirm(&mut self, scheduled: &Scheduled) -> bool {
        let survived = scheduled.generation == self.generation
            || (scheduled.generation + 1 == self.generation && scheduled.at < self.last_cut_at);
        if survived {
            self.stats.delivered_packets += 1;
            self.stats.delivered_bytes += u64::try_from(scheduled.len).unwrap_or(u64::MAX);
        } else {
            self.stats.dropped_outage += 1;
        }
        survived
    }

    /// Cuts the link at `now`: packets on it are lost, the queue is emptied, and offers are
    /// dropped until [`restore`](Self::restore). Cutting a cut link does nothing.
    pub fn cut(&mut self, now: Duration) {
        let now = self.advance(now);
        if self.schedule.is_cut() {
            return;
        }
        self.schedule.cut();
        self.generation += 1;
        self.last_cut_at = now;
        self.busy_until = self.busy_until.min(now);
        self.last_arrival = self.last_arrival.min(now);
    }

    /// Ends a manual cut at `now`. Scheduled outage windows still apply.
    pub fn restore(&mut self, now: Duration) {
        self.advance(now);
        self.schedule.restore();
    }
}

/// The top 53 bits of `draw` as a number in `[0, 1)`.
fn unit_interval(draw: u64) -> f64 {
    const SCALE: f64 = 1.0 / (1u64 << 53) as f64;
    (draw >> 11) as f64 * SCALE
}

/// `draw` mapped onto `[0, max]` (multiply-shift; the bias is below 2⁻³⁰ for `max` ≤ 60 s).
fn scale(draw: u64, max: Duration) -> Duration {
    let max_nanos = max.as_nanos();
    let nanos = (u128::from(draw) * (max_nanos + 1)) >> 64;
    // nanos ≤ max_nanos, which fits in u64 for any delay validation accepts.
    Duration::from_nanos(u64::try_from(nanos).unwrap_or(u64::MAX))
}

/// How long `len` bytes take at `rate_bps`, rounded up to the nanosecond.
fn serialisation(len: usize, rate_bps: u64) -> Duration {
    let bits = (len as u128) * 8;
    let nanos = (bits * NANOS_PER_SEC).div_ceil(u128::from(rate_bps));
    Duration::from_nanos(u64::try_from(nanos).unwrap_or(u64::MAX))
}

/// How many whole bytes `rate_bps` sends in `d`.
fn bytes_in(d: Duration, rate_bps: u64) -> u64 {
    let bytes = d.as_nanos() * u128::from(rate_bps) / (8 * NANOS_PER_SEC);
    u64::try_from(bytes).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests;
