//! Exponential backoff with full jitter, from a seeded generator so simulations replay.

/// Smallest wait before a retry (ms).
pub(crate) const BASE_MS: u64 = 500;
/// Longest wait before a retry (ms).
pub(crate) const MAX_MS: u64 = 60_000;

#[derive(Debug, Clone)]
pub(crate) struct Backoff {
    state: u64,
    attempts: u32,
}

impl Backoff {
    pub(crate) fn new(seed: u64) -> Self {
        Self {
            state: seed | 1,
            attempts: 0,
        }
    }

    fn next_random(&mut self) -> u64 {
        // xorshift64*
        self.state ^= self.state >> 12;
        self.state ^= self.state << 25;
        self.state ^= self.state >> 27;
        self.state.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// The wait before the next retry: uniform in [BASE/2, cap], cap doubling per failure.
    pub(crate) fn next_delay(&mut self) -> u64 {
        let cap = BASE_MS
            .saturating_mul(1u64 << self.attempts.min(16))
            .min(MAX_MS);
        self.attempts = self.attempts.saturating_add(1);
        let low = BASE_MS / 2;
        low + self.next_random() % (cap - low + 1)
    }

    pub(crate) fn reset(&mut self) {
        self.attempts = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_grow_are_jittered_and_capped() {
        let mut b = Backoff::new(42);
        let first: Vec<u64> = (0..20).map(|_| b.next_delay()).collect();
        assert!(first.iter().all(|d| (BASE_MS / 2..=MAX_MS).contains(d)));
        assert!(
            first[15..].iter().any(|d| *d > 10_000),
            "later delays reach far"
        );
        let mut c = Backoff::new(1_000);
        let other: Vec<u64> = (0..20).map(|_| c.next_delay()).collect();
        assert_ne!(first, other, "jitter differs per seed");
        b.reset();
        assert!(b.next_delay() <= BASE_MS);
    }
}
