//! Rate limiting by token buckets: one per space, or one per client address for the
//! unauthenticated pairing routes, for space creation requests and for space requests whose
//! token fails.
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

/// Keys a [`SweptMap`] holds before its first sweep.
const SWEEP_AT: usize = 4096;

/// A map of per-key state whose stale entries are forgotten in sweeps. A sweep runs when a new
/// key would take the map past a mark, then the mark is set to twice what the sweep kept (at
/// least [`SWEEP_AT`]): a sweep costs the map's size, so each insert pays O(1) on average
/// however many keys are live, and the map holds at most twice the keys live at its last sweep.
#[derive(Debug)]
pub(crate) struct SweptMap<K, V> {
    map: HashMap<K, V>,
    next_sweep: usize,
    #[cfg(test)]
    sweeps: u64,
}

impl<K: Hash + Eq, V> SweptMap<K, V> {
    pub(crate) fn new() -> SweptMap<K, V> {
        SweptMap {
            map: HashMap::new(),
            next_sweep: SWEEP_AT,
            #[cfg(test)]
            sweeps: 0,
        }
    }

    /// The value for `key`, made by `make` if there is none; a new key at the mark first
    /// forgets every entry `stale` says is.
    pub(crate) fn get_or_insert_with(
        &mut self,
        key: K,
        mut stale: impl FnMut(&K, &V) -> bool,
        make: impl FnOnce() -> V,
    ) -> &mut V {
        if self.map.len() >= self.next_sweep && !self.map.contains_key(&key) {
            self.map.retain(|k, v| !stale(k, v));
            self.next_sweep = self.map.len().saturating_mul(2).max(SWEEP_AT);
            #[cfg(test)]
            {
                self.sweeps += 1;
            }
        }
        self.map.entry(key).or_insert_with(make)
    }

    /// The value for `key`, if there is one.
    pub(crate) fn get_mut(&mut self, key: &K) -> Option<&mut V> {
        self.map.get_mut(key)
    }

    /// Entries held and sweeps run so far.
    #[cfg(test)]
    pub(crate) fn stats(&self) -> (usize, u64) {
        (self.map.len(), self.sweeps)
    }
}

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
    buckets: Mutex<SweptMap<K, Bucket>>,
}

impl<K: Hash + Eq + Copy> RateLimiter<K> {
    /// `per_second` sustained, `burst` at most at once.
    pub fn new(per_second: u32, burst: u32) -> RateLimiter<K> {
        RateLimiter {
            per_second: f64::from(per_second.max(1)),
            burst: f64::from(burst.max(1)),
            buckets: Mutex::new(SweptMap::new()),
        }
    }

    /// `per_minute` sustained, all of them at once at most.
    pub fn per_minute(per_minute: u32) -> RateLimiter<K> {
        let per_minute = f64::from(per_minute.max(1));
        RateLimiter {
            per_second: per_minute / 60.0,
            burst: per_minute,
            buckets: Mutex::new(SweptMap::new()),
        }
    }

    /// Takes one token for `space`, or says how long until one is available.
    pub fn check(&self, space: &K) -> Result<(), Duration> {
        self.check_at(space, Instant::now())
    }

    /// Gives back a token [`RateLimiter::check`] took for what turned out not to count.
    pub fn refund(&self, key: &K) {
        let mut buckets = self.buckets.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(bucket) = buckets.get_mut(key) {
            bucket.tokens = (bucket.tokens + 1.0).min(self.burst);
        }
    }

    /// How long until `key` has a token again if its bucket is empty; `None` if a request
    /// would pass. Takes nothing: for refusing before costly work whose outcome decides
    /// whether to charge.
    pub fn spent(&self, key: &K) -> Option<Duration> {
        self.spent_at(key, Instant::now())
    }

    fn spent_at(&self, key: &K, now: Instant) -> Option<Duration> {
        let mut buckets = self.buckets.lock().unwrap_or_else(PoisonError::into_inner);
        // No bucket is a full one.
        let bucket = buckets.get_mut(key)?;
        let refill = now.saturating_duration_since(bucket.updated).as_secs_f64() * self.per_second;
        let tokens = (bucket.tokens + refill).min(self.burst);
        (tokens < 1.0).then(|| Duration::from_secs_f64((1.0 - tokens) / self.per_second))
    }

    fn check_at(&self, space: &K, now: Instant) -> Result<(), Duration> {
        let mut buckets = self.buckets.lock().unwrap_or_else(PoisonError::into_inner);
        let (rate, burst) = (self.per_second, self.burst);
        // A bucket that has refilled is as good as a new one: forgetting it changes nothing.
        let bucket = buckets.get_or_insert_with(
            *space,
            |_, b| b.tokens + now.duration_since(b.updated).as_secs_f64() * rate >= burst,
            || Bucket {
                tokens: burst,
                updated: now,
            },
        );
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

/// Keys whose allowance, counted elsewhere, is known to be spent until some moment: the space
/// creations of an address are counted in storage (so every instance shares the count), and
/// once storage has said they are spent, the address's next creations are refused from memory
/// instead of asking it again.
#[derive(Debug)]
pub struct SpentUntil<K> {
    until: Mutex<SweptMap<K, Instant>>,
}

impl<K: Hash + Eq + Copy> SpentUntil<K> {
    /// Nothing known spent.
    pub fn new() -> SpentUntil<K> {
        SpentUntil {
            until: Mutex::new(SweptMap::new()),
        }
    }

    /// Notes that `key`'s allowance is spent for `wait` from now.
    pub fn mark(&self, key: &K, wait: Duration) {
        let now = Instant::now();
        // A wait too long for the clock is not worth remembering: storage still refuses.
        let Some(until) = now.checked_add(wait) else {
            return;
        };
        let mut map = self.until.lock().unwrap_or_else(PoisonError::into_inner);
        let held = map.get_or_insert_with(*key, |_, until| *until <= now, || until);
        *held = until.max(*held);
    }

    /// How long `key`'s allowance is still known to be spent, if it is.
    pub fn wait(&self, key: &K) -> Option<Duration> {
        let now = Instant::now();
        let mut map = self.until.lock().unwrap_or_else(PoisonError::into_inner);
        map.get_mut(key)
            .map(|until| until.saturating_duration_since(now))
            .filter(|wait| !wait.is_zero())
    }
}

impl<K: Hash + Eq + Copy> Default for SpentUntil<K> {
    fn default() -> Self {
        SpentUntil::new()
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

    /// Many keys cost a few sweeps, not one per key, and buckets that refilled are still
    /// forgotten, so the map stays bounded by the keys in use.
    #[test]
    fn sweeps_are_amortised_and_refilled_buckets_forgotten() {
        let limiter = RateLimiter::<u32>::new(10, 3);
        let start = Instant::now();
        let keys = 12_000;
        for key in 0..keys {
            assert!(limiter.check_at(&key, start).is_ok());
        }
        let stats = || {
            limiter
                .buckets
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .stats()
        };
        let (held, sweeps) = stats();
        assert_eq!(held, keys as usize, "none had refilled");
        assert!(sweeps <= 2, "{sweeps} sweeps");
        // A second later the first keys' buckets are full again: new keys push them out.
        let later = start + Duration::from_secs(1);
        for key in keys..2 * keys {
            assert!(limiter.check_at(&key, later).is_ok());
        }
        let (held, sweeps) = stats();
        assert_eq!(held, keys as usize, "only the keys in use are held");
        assert!(sweeps <= 5, "{sweeps} sweeps");
        // A forgotten key starts from a full bucket, as it would have.
        for _ in 0..3 {
            assert!(limiter.check_at(&0, later).is_ok());
        }
        assert!(limiter.check_at(&0, later).is_err());
    }

    /// `spent` says when a bucket is empty and how long until it is not, and never takes a
    /// token itself.
    #[test]
    fn spent_tells_an_empty_bucket_without_taking_from_it() {
        let limiter = RateLimiter::<u8>::new(10, 2);
        let start = Instant::now();
        assert_eq!(limiter.spent_at(&1, start), None, "an unseen key is full");
        assert!(limiter.check_at(&1, start).is_ok());
        assert_eq!(limiter.spent_at(&1, start), None, "one token left");
        assert_eq!(limiter.spent_at(&1, start), None, "asking took nothing");
        assert!(limiter.check_at(&1, start).is_ok());
        let wait = limiter.spent_at(&1, start);
        assert!(
            matches!(wait, Some(d) if d > Duration::ZERO && d <= Duration::from_millis(100)),
            "{wait:?}"
        );
        assert_eq!(
            limiter.spent_at(&1, start + Duration::from_millis(100)),
            None
        );
        assert_eq!(
            limiter.spent_at(&2, start),
            None,
            "another key is unaffected"
        );
    }

    #[test]
    fn spent_until_forgets_a_key_once_its_wait_is_over() {
        let spent = SpentUntil::<u8>::new();
        assert_eq!(spent.wait(&1), None);
        spent.mark(&1, Duration::from_secs(3600));
        assert!(
            spent
                .wait(&1)
                .is_some_and(|w| w > Duration::from_secs(3500))
        );
        assert_eq!(spent.wait(&2), None);
        // A shorter mark does not shorten a longer one.
        spent.mark(&1, Duration::from_secs(1));
        assert!(
            spent
                .wait(&1)
                .is_some_and(|w| w > Duration::from_secs(3500))
        );
        spent.mark(&3, Duration::ZERO);
        assert_eq!(spent.wait(&3), None);
        spent.mark(&4, Duration::MAX);
        assert_eq!(spent.wait(&4), None, "a wait past the clock is not kept");
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
