//! A token bucket, pure: no clock, no locks, no async. Time is an argument.
//!
//! The bucket holds up to `burst` bytes of credit and gains `bytes_per_sec` per second. Taking
//! `n` bytes needs `n` bytes of credit. Starting full, it guarantees that over any interval of
//! length `t` since its creation at most `bytes_per_sec × t + burst` bytes are taken, which is
//! what the property test checks. Credit is kept in byte-nanoseconds (u128), so refills are
//! exact and never drift however often they are computed.
//!
//! [`crate::pacing`] wraps it for async senders (per connection and per node caps).

use std::time::{Duration, Instant};

use crate::error::NetError;

const NANOS_PER_SEC: u128 = 1_000_000_000;

/// A rate cap: sustained bytes per second and the largest burst.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateLimit {
    bytes_per_sec: u64,
    burst: u64,
}

impl RateLimit {
    /// A limit of `bytes_per_sec` sustained, with bursts of up to `burst` bytes. Both must be
    /// positive.
    pub fn new(bytes_per_sec: u64, burst: u64) -> Result<Self, NetError> {
        if bytes_per_sec == 0 || burst == 0 {
            return Err(NetError::RateLimit {
                reason: format!(
                    "rate {bytes_per_sec} B/s with burst {burst} B would never let a byte through; both must be above zero (leave the limit out for no cap)"
                ),
            });
        }
        Ok(Self { bytes_per_sec, burst })
    }

    /// A limit in bits per second (how link speeds are quoted) with a burst of `burst_ms`
    /// milliseconds' worth of bytes, at least one 16 KiB write.
    pub fn from_bits_per_sec(bits_per_sec: u64, burst_ms: u64) -> Result<Self, NetError> {
        let bytes_per_sec = bits_per_sec / 8;
        let burst = (u128::from(bytes_per_sec) * u128::from(burst_ms) / 1000).max(16 * 1024);
        Self::new(bytes_per_sec, u64::try_from(burst).unwrap_or(u64::MAX))
    }

    pub fn bytes_per_sec(&self) -> u64 {
        self.bytes_per_sec
    }

    pub fn burst(&self) -> u64 {
        self.burst
    }
}

/// A token bucket over bytes. See the module doc.
#[derive(Debug, Clone)]
pub struct TokenBucket {
    limit: RateLimit,
    /// Credit in byte-nanoseconds, at most `burst × 10⁹`.
    credit: u128,
    /// When `credit` was last brought up to date.
    updated: Instant,
}

impl TokenBucket {
    /// A full bucket at `now`.
    pub fn new(limit: RateLimit, now: Instant) -> Self {
        Self {
            limit,
            credit: Self::capacity(limit),
            updated: now,
        }
    }

    /// The bucket's limit.
    pub fn limit(&self) -> RateLimit {
        self.limit
    }

    /// Changes the limit from `now` on: credit earned so far counts at the old rate, and is
    /// capped at the new burst.
    pub fn set_limit(&mut self, limit: RateLimit, now: Instant) {
        self.refill(now);
        self.limit = limit;
        self.credit = self.credit.min(Self::capacity(limit));
    }

    fn capacity(limit: RateLimit) -> u128 {
        u128::from(limit.burst) * NANOS_PER_SEC
    }

    /// Adds the credit earned since the last update. A `now` earlier than a previous one earns
    /// nothing (and does not move the bucket's time back).
    fn refill(&mut self, now: Instant) {
        let elapsed = now.saturating_duration_since(self.updated);
        if elapsed.is_zero() {
            return;
        }
        let earned = elapsed.as_nanos().saturating_mul(u128::from(self.limit.bytes_per_sec));
        self.credit = self.credit.saturating_add(earned).min(Self::capacity(self.limit));
        self.updated = now;
    }

    /// Whole bytes that could be taken at `now`.
    pub fn available(&mut self, now: Instant) -> u64 {
        self.refill(now);
        // Credit is at most burst × 10⁹, so the quotient fits in u64.
        u64::try_from(self.credit / NANOS_PER_SEC).unwrap_or(u64::MAX)
    }

    /// Takes `n` bytes of credit if there is enough at `now`.
    pub fn try_take(&mut self, n: u64, now: Instant) -> bool {
        self.refill(now);
        let need = u128::from(n) * NANOS_PER_SEC;
        if need <= self.credit {
            self.credit -= need;
            true
        } else {
            false
        }
    }

    /// How long from `now` until `n` bytes can be taken: zero if they can now, `None` if never
    /// (more than the burst; split the write).
    pub fn time_until(&mut self, n: u64, now: Instant) -> Option<Duration> {
        if n > self.limit.burst {
            return None;
        }
        self.refill(now);
        let need = u128::from(n) * NANOS_PER_SEC;
        let missing = need.saturating_sub(self.credit);
        // Round up so that waiting this long is always enough.
        let nanos = missing.div_ceil(u128::from(self.limit.bytes_per_sec));
        // At most burst × 10⁹ nanoseconds (rate ≥ 1), far inside u64 for any burst below 18 GB;
        // saturate rather than fail beyond that.
        Some(Duration::from_nanos(u64::try_from(nanos).unwrap_or(u64::MAX)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn limit(rate: u64, burst: u64) -> RateLimit {
        RateLimit::new(rate, burst).unwrap()
    }

    #[test]
    fn starts_full_then_refills_at_rate() {
        let t0 = Instant::now();
        let mut b = TokenBucket::new(limit(1000, 500), t0);
        assert!(b.try_take(500, t0));
        assert!(!b.try_take(1, t0));
        assert_eq!(b.time_until(100, t0), Some(Duration::from_millis(100)));
        assert!(!b.try_take(100, t0 + Duration::from_millis(99)));
        assert!(b.try_take(100, t0 + Duration::from_millis(100)));
        // Never more than the burst, however long it sat idle.
        assert_eq!(b.available(t0 + Duration::from_secs(3600)), 500);
    }

    #[test]
    fn more_than_burst_is_never_possible() {
        let t0 = Instant::now();
        let mut b = TokenBucket::new(limit(1000, 500), t0);
        assert_eq!(b.time_until(501, t0), None);
        assert!(!b.try_take(501, t0 + Duration::from_secs(10)));
        assert!(b.try_take(0, t0));
    }

    #[test]
    fn time_going_backwards_earns_nothing() {
        let t0 = Instant::now();
        let t1 = t0 + Duration::from_secs(1);
        let mut b = TokenBucket::new(limit(1000, 1000), t1);
        assert!(b.try_take(1000, t1));
        assert_eq!(b.available(t0), 0);
        assert_eq!(b.available(t1), 0);
        assert_eq!(b.available(t1 + Duration::from_millis(10)), 10);
    }

    #[test]
    fn a_new_limit_applies_from_then_on() {
        let t0 = Instant::now();
        let mut b = TokenBucket::new(limit(1000, 1000), t0);
        assert!(b.try_take(1000, t0));
        // Half a second at the old rate, then the rate drops to a tenth.
        let t1 = t0 + Duration::from_millis(500);
        b.set_limit(limit(100, 100), t1);
        // 500 bytes earned, capped at the new burst of 100.
        assert_eq!(b.available(t1), 100);
        assert!(b.try_take(100, t1));
        assert_eq!(b.time_until(50, t1), Some(Duration::from_millis(500)));
    }

    #[test]
    fn zero_limits_are_refused() {
        assert!(RateLimit::new(0, 10).is_err());
        assert!(RateLimit::new(10, 0).is_err());
        let l = RateLimit::from_bits_per_sec(4_000_000, 100).unwrap();
        assert_eq!(l.bytes_per_sec(), 500_000);
        assert_eq!(l.burst(), 50_000);
    }

    proptest! {
        /// Over any run, the bytes taken never exceed rate × elapsed + burst, and waiting the
        /// time `time_until` names is always enough.
        #[test]
        fn never_exceeds_rate_times_elapsed_plus_burst(
            rate in 1u64..5_000_000,
            burst in 1u64..2_000_000,
            ops in proptest::collection::vec((0u64..2_000_000_000, 0u64..4_000_000, any::<bool>()), 1..200),
        ) {
            let t0 = Instant::now();
            let mut bucket = TokenBucket::new(limit(rate, burst), t0);
            let mut now = t0;
            let mut taken: u128 = 0;
            for (advance_ns, n, wait) in ops {
                now += Duration::from_nanos(advance_ns);
                if wait {
                    if let Some(d) = bucket.time_until(n, now) {
                        now += d;
                        prop_assert!(bucket.try_take(n, now), "waited {:?} for {} bytes and still refused", d, n);
                        taken += u128::from(n);
                    } else {
                        prop_assert!(n > burst);
                    }
                } else if bucket.try_take(n, now) {
                    taken += u128::from(n);
                }
                let elapsed = now.duration_since(t0).as_nanos();
                prop_assert!(
                    taken * NANOS_PER_SEC <= u128::from(rate) * elapsed + u128::from(burst) * NANOS_PER_SEC,
                    "took {} bytes in {} ns at {} B/s, burst {}", taken, elapsed, rate, burst
                );
            }
        }
    }
}
