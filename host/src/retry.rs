//! The retry policy for failed event deliveries: exponential backoff with full jitter.

use rand::Rng;
use std::time::Duration;

/// How often and how patiently a failed delivery is retried. Built with `const fn`s from
/// [`RetryPolicy::DEFAULT`], where every default is written once.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RetryPolicy {
    /// Delay before the second attempt.
    pub initial_delay: Duration,
    /// Factor applied to the delay after each failed attempt.
    pub multiplier: f64,
    /// Upper bound of any single delay.
    pub max_delay: Duration,
    /// Attempts in all (the first one included) before the delivery is dead-lettered.
    pub max_attempts: u32,
    /// Fraction of each delay that is randomised (0 = none, 1 = full jitter), so that many
    /// deliveries failing together do not retry together.
    pub jitter: f64,
}

impl RetryPolicy {
    /// The defaults: 200 ms, doubling, at most 30 s apart, 5 attempts, half of each delay random.
    pub const DEFAULT: Self = Self {
        initial_delay: Duration::from_millis(200),
        multiplier: 2.0,
        max_delay: Duration::from_secs(30),
        max_attempts: 5,
        jitter: 0.5,
    };

    /// The same policy, waiting `delay` before the second attempt.
    pub const fn initial_delay(mut self, delay: Duration) -> Self {
        self.initial_delay = delay;
        self
    }

    /// The same policy, each delay `multiplier` times the one before.
    pub const fn multiplier(mut self, multiplier: f64) -> Self {
        self.multiplier = multiplier;
        self
    }

    /// The same policy, no single delay longer than `delay`.
    pub const fn max_delay(mut self, delay: Duration) -> Self {
        self.max_delay = delay;
        self
    }

    /// The same policy, dead-lettering after `attempts` attempts in all.
    pub const fn max_attempts(mut self, attempts: u32) -> Self {
        self.max_attempts = attempts;
        self
    }

    /// The same policy, randomising the fraction `jitter` (0 to 1) of each delay.
    pub const fn jitter(mut self, jitter: f64) -> Self {
        self.jitter = jitter;
        self
    }

    /// The delay before the next attempt once `failed_attempts` attempts have failed, without
    /// jitter: `initial * multiplier^(failed_attempts - 1)`, capped at `max_delay`.
    pub fn base_delay(&self, failed_attempts: u32) -> Duration {
        let exponent = failed_attempts.saturating_sub(1).min(64) as i32;
        let secs = self.initial_delay.as_secs_f64() * self.multiplier.powi(exponent);
        Duration::from_secs_f64(secs.min(self.max_delay.as_secs_f64()))
    }

    /// [`RetryPolicy::base_delay`] with `jitter` of it drawn at random.
    pub fn delay(&self, failed_attempts: u32, rng: &mut impl Rng) -> Duration {
        let base = self.base_delay(failed_attempts).as_secs_f64();
        let jitter = self.jitter.clamp(0.0, 1.0);
        let fixed = base * (1.0 - jitter);
        let random = if jitter > 0.0 {
            rng.random_range(0.0..=base * jitter)
        } else {
            0.0
        };
        Duration::from_secs_f64(fixed + random)
    }

    /// Whether a delivery that has failed `failed_attempts` times has used up its attempts.
    pub fn is_exhausted(&self, failed_attempts: u32) -> bool {
        failed_attempts >= self.max_attempts
    }
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self::DEFAULT
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_exponentially_up_to_the_cap() {
        let policy = RetryPolicy::DEFAULT
            .initial_delay(Duration::from_millis(100))
            .multiplier(2.0)
            .max_delay(Duration::from_millis(500));
        assert_eq!(policy.base_delay(1), Duration::from_millis(100));
        assert_eq!(policy.base_delay(2), Duration::from_millis(200));
        assert_eq!(policy.base_delay(3), Duration::from_millis(400));
        assert_eq!(policy.base_delay(4), Duration::from_millis(500));
        assert_eq!(policy.base_delay(1000), Duration::from_millis(500));
    }

    #[test]
    fn jitter_stays_within_the_window() {
        let policy = RetryPolicy::DEFAULT
            .initial_delay(Duration::from_millis(100))
            .jitter(0.5);
        let mut rng = rand::rng();
        for _ in 0..1000 {
            let d = policy.delay(1, &mut rng);
            assert!(
                d >= Duration::from_millis(50) && d <= Duration::from_millis(100),
                "{d:?}"
            );
        }
        let exact = policy.jitter(0.0);
        assert_eq!(exact.delay(1, &mut rng), Duration::from_millis(100));
    }

    #[test]
    fn exhausted_exactly_at_max_attempts() {
        let policy = RetryPolicy::DEFAULT.max_attempts(5);
        assert!(!policy.is_exhausted(4));
        assert!(policy.is_exhausted(5));
    }
}
