//! The station's share of its village line, applied: bandwidth windows set the download rate
//! from moment to moment, the daily quota closes the gate for the rest of the local day, and
//! the goodput actually achieved is measured for the planner.
//!
//! [`Throttle::tick`] is called every few seconds with the time and the byte counter; it is the
//! only place the rate changes. Downloads wait on [`Throttle::wait_open`] before each chunk.

use std::sync::Arc;

use courseway_content::UnixTime;
use courseway_net::{RateLimit, SharedLimiter};
use courseway_store::{Durability, Store};
use parking_lot::Mutex;
use tokio::sync::watch;

use crate::planner::BandwidthPolicy;

/// Goodput assumed before any has been measured, when no rate cap is configured: 1 Mbit/s, a
/// cautious guess for a village line (it only affects estimates until the first measurement).
pub const ASSUMED_GOODPUT: u64 = 125_000;
/// Weight of the newest sample in the goodput average.
const GOODPUT_WEIGHT: f64 = 0.2;
const QUOTA_KEY: &[u8] = b"station/quota-day";

#[derive(Debug, Clone, Copy, Default)]
struct QuotaDay {
    /// Local day number (days since the epoch, local time).
    day: i64,
    used: u64,
}

#[derive(Debug, Default)]
struct Meter {
    /// The byte counter and time at the last tick.
    last: Option<(u64, UnixTime)>,
    /// Measured goodput at full share, bytes per second (None until measured).
    link_estimate: Option<f64>,
}

/// The station's bandwidth policy in force.
#[derive(Debug)]
pub(crate) struct Throttle {
    /// Replaced by a config reload ([`Throttle::set_policy`]).
    policy: Mutex<BandwidthPolicy>,
    /// The line's rate at a 100 % share (the configured cap).
    cap: Option<RateLimit>,
    limiter: Option<SharedLimiter>,
    gate: watch::Sender<bool>,
    quota: Mutex<QuotaDay>,
    meter: Mutex<Meter>,
    store: Arc<Store>,
}

impl Throttle {
    /// A throttle for `policy` over a line capped at `cap`; restores today's quota use.
    pub fn new(policy: BandwidthPolicy, cap: Option<RateLimit>, store: Arc<Store>) -> Self {
        let quota = store
            .get_meta(QUOTA_KEY)
            .ok()
            .flatten()
            .and_then(|b| <[u8; 16]>::try_from(b.as_slice()).ok())
            .map(|b| QuotaDay {
                day: i64::from_le_bytes(b[..8].try_into().expect("8 bytes")),
                used: u64::from_le_bytes(b[8..].try_into().expect("8 bytes")),
            })
            .unwrap_or_default();
        Self {
            policy: Mutex::new(policy),
            cap,
            limiter: cap.map(SharedLimiter::new),
            gate: watch::Sender::new(true),
            quota: Mutex::new(quota),
            meter: Mutex::new(Meter::default()),
            store,
        }
    }

    /// The policy in force.
    pub fn policy(&self) -> BandwidthPolicy {
        self.policy.lock().clone()
    }

    /// Puts a new policy in force from the next tick on (a config reload). Today's quota count
    /// carries over.
    pub fn set_policy(&self, policy: BandwidthPolicy) {
        *self.policy.lock() = policy;
    }

    /// The limiter every download is paced by (None: no cap).
    pub fn limiter(&self) -> Option<&SharedLimiter> {
        self.limiter.as_ref()
    }

    fn local_day(&self, t: UnixTime) -> i64 {
        (t.0 as i64 + i64::from(self.policy.lock().utc_offset_secs)).div_euclid(86_400)
    }

    /// Brings the throttle up to `now`: counts the bytes received since the last tick against
    /// today's quota, measures goodput (while `downloading`), and sets the rate and the gate.
    pub fn tick(&self, now: UnixTime, bytes_received: u64, downloading: bool) {
        let policy = self.policy();
        let share = policy.share_at(now);
        let delta = {
            let mut meter = self.meter.lock();
            let delta = match meter.last {
                Some((bytes, at)) => {
                    let delta = bytes_received.saturating_sub(bytes);
                    let secs = now.secs_since(at);
                    if downloading && secs > 0 && share > 0 {
                        let sample = delta as f64 / secs as f64 * 100.0 / f64::from(share);
                        meter.link_estimate = Some(match meter.link_estimate {
                            Some(e) => e + GOODPUT_WEIGHT * (sample - e),
                            None => sample,
                        });
                    }
                    delta
                }
                None => 0,
            };
            meter.last = Some((bytes_received, now));
            delta
        };
        let quota_left = {
            let mut q = self.quota.lock();
            let today = self.local_day(now);
            if q.day != today {
                *q = QuotaDay { day: today, used: 0 };
            }
            q.used += delta;
            let mut bytes = [0u8; 16];
            bytes[..8].copy_from_slice(&q.day.to_le_bytes());
            bytes[8..].copy_from_slice(&q.used.to_le_bytes());
            // Losing the last few seconds of the count to a crash only lets a few more bytes
            // through; not worth a sync.
            if let Err(e) = self.store.put_meta(QUOTA_KEY, &bytes, Durability::Buffered) {
                tracing::warn!(error = %e, "could not save today's download count");
            }
            policy.daily_quota.map(|quota| quota.saturating_sub(q.used))
        };
        let open = share > 0 && quota_left != Some(0);
        if let (Some(limiter), Some(cap)) = (&self.limiter, self.cap) {
            let rate = (cap.bytes_per_sec() * u64::from(share) / 100).max(1);
            let burst = cap.burst().min(rate).max(1);
            if let Ok(limit) = RateLimit::new(rate, burst) {
                if limit != limiter.limit() {
                    limiter.set_limit(limit);
                }
            }
        }
        self.gate.send_if_modified(|g| std::mem::replace(g, open) != open);
    }

    /// Waits until downloads are allowed (a window with a share above zero, quota left).
    pub async fn wait_open(&self) {
        let mut gate = self.gate.subscribe();
        // The sender lives as long as the throttle, which outlives every download.
        let _ = gate.wait_for(|open| *open).await;
    }

    /// Whether downloads are allowed now.
    pub fn is_open(&self) -> bool {
        *self.gate.borrow()
    }

    /// Bytes downloaded today (local time).
    pub fn used_today(&self) -> u64 {
        self.quota.lock().used
    }

    /// The line's rate at full share, for the planner: the configured cap, else the measured
    /// goodput, else [`ASSUMED_GOODPUT`].
    pub fn link_bytes_per_sec(&self) -> u64 {
        if let Some(cap) = self.cap {
            return cap.bytes_per_sec();
        }
        self.meter
            .lock()
            .link_estimate
            .map(|e| e.max(1.0) as u64)
            .unwrap_or(ASSUMED_GOODPUT)
    }

    /// Measured goodput at full share (None until measured).
    pub fn measured_goodput(&self) -> Option<u64> {
        self.meter.lock().link_estimate.map(|e| e as u64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::planner::{BandwidthWindow, TimeOfDay};

    /// 2026-12-01 00:00 in UTC+8.
    const MIDNIGHT: u64 = 1_796_083_200 - 8 * 3600;

    fn throttle(policy: BandwidthPolicy, cap: Option<RateLimit>) -> (Throttle, tempfile::TempDir) {
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(Store::open(courseway_store::StoreConfig::new(dir.path(), 64 << 20)).unwrap());
        (Throttle::new(policy, cap, store), dir)
    }

    #[test]
    fn the_window_sets_the_rate_and_a_zero_share_closes_the_gate() {
        let policy = BandwidthPolicy {
            windows: vec![BandwidthWindow {
                start: TimeOfDay::new(22, 0).unwrap(),
                end: TimeOfDay::new(6, 0).unwrap(),
                share_percent: 100,
            }],
            default_share_percent: 0,
            ..BandwidthPolicy::default()
        };
        let cap = RateLimit::new(250_000, 25_000).unwrap();
        let (t, _dir) = throttle(policy, Some(cap));
        t.tick(UnixTime(MIDNIGHT + 23 * 3600), 0, true);
        assert!(t.is_open());
        assert_eq!(t.limiter().unwrap().limit().bytes_per_sec(), 250_000);
        t.tick(UnixTime(MIDNIGHT + 30 * 3600), 0, true);
        assert!(!t.is_open());
    }

    #[test]
    fn the_quota_closes_the_gate_until_local_midnight_and_survives_a_restart() {
        let policy = BandwidthPolicy {
            daily_quota: Some(1_000),
            ..BandwidthPolicy::default()
        };
        let dir = tempfile::tempdir().unwrap();
        let open_store = || Arc::new(Store::open(courseway_store::StoreConfig::new(dir.path(), 64 << 20)).unwrap());
        {
            let t = Throttle::new(policy.clone(), None, open_store());
            t.tick(UnixTime(MIDNIGHT + 3600), 0, true);
            t.tick(UnixTime(MIDNIGHT + 3610), 600, true);
            assert!(t.is_open());
            assert_eq!(t.used_today(), 600);
        }
        // Restarted the same day: the 600 bytes still count.
        let t = Throttle::new(policy, None, open_store());
        t.tick(UnixTime(MIDNIGHT + 3620), 0, true);
        t.tick(UnixTime(MIDNIGHT + 3630), 400, true);
        assert!(!t.is_open());
        // Measured: 400 bytes in 10 s at a 100 % share.
        assert_eq!(t.measured_goodput(), Some(40));
        t.tick(UnixTime(MIDNIGHT + 86_400), 400, true);
        assert!(t.is_open());
        assert_eq!(t.used_today(), 0);
    }
}
