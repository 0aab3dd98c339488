//! Async pacing on top of the pure [`TokenBucket`]: wait until bytes may be sent, then send.
//!
//! A [`SharedLimiter`] is one bucket behind a mutex, cheap to clone: make one per connection
//! for a per-connection cap, and one per node (shared by all of its connections) for a station's
//! line cap; pass both to [`write_limited`]. The mutex is never held across an await.
//!
//! The clock is tokio's ([`tokio::time::Instant`]), so tests with a paused runtime clock pace in
//! virtual time.

use std::sync::Arc;

use bytes::Bytes;
use parking_lot::Mutex;
use quinn::SendStream;

use crate::error::NetError;
use crate::limiter::{RateLimit, TokenBucket};

/// The most bytes written between two limiter checks. Small enough that several limiters
/// interleave smoothly, large enough to keep per-write overhead negligible.
pub const PACED_WRITE_SIZE: usize = 16 * 1024;

/// A token bucket shared between tasks.
#[derive(Debug, Clone)]
pub struct SharedLimiter {
    bucket: Arc<Mutex<TokenBucket>>,
}

fn now() -> std::time::Instant {
    tokio::time::Instant::now().into_std()
}

impl SharedLimiter {
    /// A full bucket with `limit`.
    pub fn new(limit: RateLimit) -> Self {
        Self {
            bucket: Arc::new(Mutex::new(TokenBucket::new(limit, now()))),
        }
    }

    /// The limit.
    pub fn limit(&self) -> RateLimit {
        self.bucket.lock().limit()
    }

    /// Changes the limit for every holder of this limiter, from now on.
    pub fn set_limit(&self, limit: RateLimit) {
        self.bucket.lock().set_limit(limit, now());
    }

    /// Waits until `n` bytes may be sent and takes them. More than the burst is taken in
    /// burst-sized parts, one after another.
    pub async fn acquire(&self, mut n: u64) {
        let burst = self.limit().burst();
        while n > 0 {
            let part = n.min(burst);
            loop {
                let wait = {
                    let mut bucket = self.bucket.lock();
                    let at = now();
                    if bucket.try_take(part, at) {
                        break;
                    }
                    bucket.time_until(part, at)
                };
                match wait {
                    Some(d) => tokio::time::sleep(d).await,
                    // Unreachable: `part` ≤ burst. Yield instead of spinning, should the limit
                    // ever change under us.
                    None => tokio::task::yield_now().await,
                }
            }
            n -= part;
        }
    }
}

/// Writes `bytes` to `send`, waiting on every limiter in `limiters` before each piece of at most
/// [`PACED_WRITE_SIZE`] bytes.
///
/// The pieces are slices of `bytes`, handed to quinn without copying them.
pub async fn write_limited(send: &mut SendStream, bytes: Bytes, limiters: &[&SharedLimiter]) -> Result<(), NetError> {
    let mut start = 0;
    while start < bytes.len() {
        let end = (start + PACED_WRITE_SIZE).min(bytes.len());
        for limiter in limiters {
            limiter.acquire((end - start) as u64).await;
        }
        send.write_chunk(bytes.slice(start..end))
            .await
            .map_err(|source| NetError::Write {
                what: "paced body",
                source,
            })?;
        start = end;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    /// In virtual time: acquiring `total` bytes at `rate` with `burst` takes at least
    /// (total − burst) / rate, and the per-node limiter shared by two tasks caps them together.
    #[tokio::test(start_paused = true)]
    async fn acquire_paces_in_virtual_time() {
        let node = SharedLimiter::new(RateLimit::new(100_000, 10_000).unwrap());
        let start = tokio::time::Instant::now();
        let a = {
            let node = node.clone();
            tokio::spawn(async move {
                for _ in 0..50 {
                    node.acquire(2_000).await;
                }
            })
        };
        let b = {
            let node = node.clone();
            tokio::spawn(async move { node.acquire(100_000).await })
        };
        a.await.unwrap();
        b.await.unwrap();
        let elapsed = start.elapsed();
        // 200 000 bytes through one 100 kB/s bucket with 10 kB burst: at least 1.9 s.
        assert!(elapsed >= Duration::from_millis(1900), "{elapsed:?}");
    }
}
