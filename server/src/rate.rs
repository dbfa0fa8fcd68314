//! Rate limiting by token buckets: one per space, or one per client address for the
//! unauthenticated pairing routes.
//!
//! Limiting by space (after authentication) means a misbehaving device slows only its own space;
//! unauthenticated junk cannot drain a victim's bucket because it never gets this far. Pairing
//! routes have no space yet, so they are limited by the client's address key instead.

use std::{
    collections::HashMap,
    hash::Hash,
    sync::{Mutex, PoisonError},
    time::{Duration, Instant},
};

use mend_protocol::SpaceId;

/// Buckets tracked before idle (full) ones are swept.
const SWEEP_AT: usize = 4096;

#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    updated: Instant,
}

/// Token buckets keyed by space (or by another key, such as a client address's).
#[derive(Debug)]
pub struct RateLimiter<K = SpaceId> {
    per_second: f64,
    burst: f64,
    buckets: Mutex<HashMap<K, Bucket>>,
}

impl<K: Hash + Eq + Copy> RateLimiter<K> {
    /// `per_second` sustained, `burst` at most at once.
    pub fn new(per_second: u32, burst: u32) -> RateLimiter<K> {
        RateLimiter {
            per_second: f64::from(per_second.max(1)),
            burst: f64::from(burst.max(1)),
            buckets: Mutex::new(HashMap::new()),
        }
    }

    /// `per_minute` sustained, all of them at once at most.
    pub fn per_minute(per_minute: u32) -> RateLimiter<K> {
        let per_minute = f64::from(per_minute.max(1));
        RateLimiter {
            per_second: per_minute / 60.0,
            burst: per_minute,
            buckets: Mutex::new(HashMap::new()),
        }
    }

    /// Takes one token for `space`, or says how long until one is available.
    pub fn check(&self, space: &K) -> Result<(), Duration> {
        self.check_at(space, Instant::now())
    }

    fn check_at(&self, space: &K, now: Instant) -> Result<(), Duration> {
        let mut buckets = self.buckets.lock().unwrap_or_else(PoisonError::into_inner);
        if buckets.len() >= SWEEP_AT && !buckets.contains_key(space) {
            let (rate, burst) = (self.per_second, self.burst);
            buckets.retain(|_, b| {
                b.tokens + now.duration_since(b.updated).as_secs_f64() * rate < burst
            });
        }
        let bucket = buckets.entry(*space).or_insert(Bucket {
            tokens: self.burst,
            updated: now,
        });
        let refill = now.duration_since(bucket.updated).as_secs_f64() * self.per_second;
        bucket.tokens = (bucket.tokens + refill).min(self.burst);
        bucket.updated = now;
        if bucket.tokens >= 1.0 {
            bucket.tokens -= 1.0;
            Ok(())
        } else {
            Err(Duration::from_secs_f64(
                (1.0 - bucket.tokens) / self.per_second,
            ))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bursts_then_refills_per_space() {
        let limiter = RateLimiter::new(10, 3);
        let (a, b) = (SpaceId([1; 32]), SpaceId([2; 32]));
        let start = Instant::now();
        for _ in 0..3 {
            assert!(limiter.check_at(&a, start).is_ok());
        }
        let wait = limiter.check_at(&a, start);
        assert!(matches!(wait, Err(d) if d > Duration::ZERO && d <= Duration::from_millis(100)));
        assert!(
            limiter.check_at(&b, start).is_ok(),
            "another space is unaffected"
        );
        assert!(
            limiter
                .check_at(&a, start + Duration::from_millis(100))
                .is_ok()
        );
    }

    #[test]
    fn per_minute_buckets_allow_the_whole_minute_at_once() {
        let limiter = RateLimiter::<[u8; 32]>::per_minute(2);
        let start = Instant::now();
        assert!(limiter.check_at(&[1; 32], start).is_ok());
        assert!(limiter.check_at(&[1; 32], start).is_ok());
        let wait = limiter.check_at(&[1; 32], start);
        assert!(
            matches!(wait, Err(d) if d > Duration::from_secs(29)),
            "{wait:?}"
        );
        assert!(limiter.check_at(&[2; 32], start).is_ok());
    }
}
