//! The knobs of a write-behind queue, with their defaults.

use std::time::Duration;

/// Default largest batch (distinct keys): 100.
pub const DEFAULT_MAX_BATCH: usize = 100;
/// Default longest wait before a batch goes out: 100 ms.
pub const DEFAULT_MAX_DELAY: Duration = Duration::from_millis(100);
/// Default queue capacity (writes): 10,000.
pub const DEFAULT_QUEUE_CAPACITY: usize = 10_000;
/// Default retries of a failed batch: 5.
pub const DEFAULT_MAX_RETRIES: u32 = 5;
/// Default first retry delay: 100 ms, doubling up to [`DEFAULT_MAX_BACKOFF`].
pub const DEFAULT_BACKOFF: Duration = Duration::from_millis(100);
/// Default longest retry delay: 5 s.
pub const DEFAULT_MAX_BACKOFF: Duration = Duration::from_secs(5);

/// The numbers that shape batching, backpressure and retries; set through
/// the builder methods of [`WriteBehindLayer`](super::WriteBehindLayer).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Config {
    /// A batch goes out when it holds this many distinct keys.
    pub max_batch: usize,
    /// A batch goes out at the latest this long after its first write.
    pub max_delay: Duration,
    /// Writes acknowledged and not yet taken by the worker.
    pub queue_capacity: usize,
    /// Retries of a failed batch before it is a dead letter.
    pub max_retries: u32,
    /// The first retry delay.
    pub backoff: Duration,
    /// The longest retry delay.
    pub max_backoff: Duration,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            max_batch: DEFAULT_MAX_BATCH,
            max_delay: DEFAULT_MAX_DELAY,
            queue_capacity: DEFAULT_QUEUE_CAPACITY,
            max_retries: DEFAULT_MAX_RETRIES,
            backoff: DEFAULT_BACKOFF,
            max_backoff: DEFAULT_MAX_BACKOFF,
        }
    }
}

impl Config {
    /// The wait before retry number `attempt` (from 1): the first delay
    /// doubled for each retry before it, capped at the longest, with ±50 %
    /// jitter.
    pub fn backoff(&self, attempt: u32) -> Duration {
        let base = self
            .backoff
            .saturating_mul(1u32 << attempt.saturating_sub(1).min(16))
            .min(self.max_backoff);
        base.mul_f64(0.5 + rand::random::<f64>())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_from_the_first_delay_up_to_the_longest_with_jitter() {
        let config = Config {
            backoff: Duration::from_millis(100),
            max_backoff: Duration::from_secs(1),
            ..Config::default()
        };
        for (attempt, base) in [
            (1, 100),
            (2, 200),
            (3, 400),
            (4, 800),
            (5, 1_000),
            (40, 1_000),
        ] {
            let base = Duration::from_millis(base);
            for _ in 0..50 {
                let wait = config.backoff(attempt);
                assert!(
                    wait >= base / 2 && wait <= base * 3 / 2,
                    "retry {attempt}: {wait:?}"
                );
            }
        }
    }
}
