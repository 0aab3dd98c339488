//! Request rate limits of the admin API: one token bucket per client address and one per
//! token (by the token's name), counting requests. A request over either limit is answered
//! 429 with `Retry-After` and a JSON reason, before it does any work.
//!
//! The buckets are `courseway_net::TokenBucket` (pure: time is an argument) counting one unit per
//! request. Idle buckets are dropped once full again, so the tables stay as small as the set of
//! recent clients.

use std::collections::HashMap;
use std::hash::Hash;
use std::net::IpAddr;
use std::time::{Duration, Instant};

use courseway_net::{RateLimit, TokenBucket};
use parking_lot::Mutex;

/// Requests per minute and burst for one key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RequestLimit {
    /// Sustained requests per minute; 0 turns the limit off.
    pub per_minute: u32,
    /// Requests allowed at once above the sustained rate (at least 1).
    pub burst: u32,
}

impl RequestLimit {
    /// The bucket's limit: units are requests × 60, so a per-minute rate is exact.
    fn bucket_limit(self) -> Option<RateLimit> {
        if self.per_minute == 0 {
            return None;
        }
        RateLimit::new(u64::from(self.per_minute), u64::from(self.burst.max(1)) * 60).ok()
    }
}

/// The admin API's limits (`[origin.admin]`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateLimits {
    pub per_ip: RequestLimit,
    pub per_token: RequestLimit,
}

impl Default for RateLimits {
    /// 600 requests a minute per address and per token, bursts of 120: far above what a person
    /// or the CLI does (an upload is a handful of requests), far below what guessing needs.
    fn default() -> Self {
        Self {
            per_ip: RequestLimit {
                per_minute: 600,
                burst: 120,
            },
            per_token: RequestLimit {
                per_minute: 600,
                burst: 120,
            },
        }
    }
}

/// One table of buckets.
#[derive(Debug)]
struct Table<K> {
    limit: Option<RateLimit>,
    buckets: Mutex<HashMap<K, TokenBucket>>,
}

/// Above this many buckets, full ones are swept out before a new one is added.
const SWEEP_ABOVE: usize = 4096;

impl<K: Hash + Eq + Clone> Table<K> {
    fn new(limit: RequestLimit) -> Self {
        Self {
            limit: limit.bucket_limit(),
            buckets: Mutex::new(HashMap::new()),
        }
    }

    /// Takes one request from `key`'s bucket, or says how long until one may be taken.
    fn take(&self, key: &K, now: Instant) -> Result<(), Duration> {
        let Some(limit) = self.limit else { return Ok(()) };
        let mut buckets = self.buckets.lock();
        if buckets.len() > SWEEP_ABOVE && !buckets.contains_key(key) {
            let full = limit.burst();
            buckets.retain(|_, b| b.available(now) < full);
        }
        let bucket = buckets
            .entry(key.clone())
            .or_insert_with(|| TokenBucket::new(limit, now));
        if bucket.try_take(60, now) {
            Ok(())
        } else {
            Err(bucket.time_until(60, now).unwrap_or(Duration::from_secs(60)))
        }
    }
}

/// Which limit a request went over.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Over {
    Address(Duration),
    Token(Duration),
}

impl Over {
    /// Whole seconds to wait (at least 1), for `Retry-After`.
    pub fn retry_after_secs(self) -> u64 {
        let (Over::Address(d) | Over::Token(d)) = self;
        d.as_secs() + u64::from(d.subsec_nanos() > 0)
    }
}

/// The admin API's limiter.
#[derive(Debug)]
pub struct Limiter {
    ip: Table<IpAddr>,
    token: Table<String>,
}

impl Limiter {
    pub fn new(limits: RateLimits) -> Self {
        Self {
            ip: Table::new(limits.per_ip),
            token: Table::new(limits.per_token),
        }
    }

    /// Counts a request from `ip`.
    pub fn address(&self, ip: IpAddr, now: Instant) -> Result<(), Over> {
        self.ip.take(&ip, now).map_err(Over::Address)
    }

    /// Counts a request made with the token named `token`.
    pub fn token(&self, token: &str, now: Instant) -> Result<(), Over> {
        self.token.take(&token.to_string(), now).map_err(Over::Token)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bursts_then_refuses_then_refills() {
        let limiter = Limiter::new(RateLimits {
            per_ip: RequestLimit {
                per_minute: 60,
                burst: 3,
            },
            per_token: RequestLimit {
                per_minute: 0,
                burst: 1,
            },
        });
        let t0 = Instant::now();
        let ip: IpAddr = "10.0.0.1".parse().unwrap();
        for _ in 0..3 {
            limiter.address(ip, t0).unwrap();
        }
        let over = limiter.address(ip, t0).unwrap_err();
        assert_eq!(over.retry_after_secs(), 1);
        // Another address has its own bucket; the token limit is off.
        limiter.address("10.0.0.2".parse().unwrap(), t0).unwrap();
        for _ in 0..1000 {
            limiter.token("alice", t0).unwrap();
        }
        // One request a second comes back.
        limiter.address(ip, t0 + Duration::from_secs(1)).unwrap();
        assert!(limiter.address(ip, t0 + Duration::from_secs(1)).is_err());
    }
}
