//! How often and how patiently a forwarder target retries a failed delivery.

use std::time::Duration;

use serde::Deserialize;

/// Exponential backoff: the n-th retry waits `initial * multiplier^(n-1)`, capped.
#[derive(Debug, Clone, Copy, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RetryPolicy {
    /// Retries after the first attempt; 0 dead-letters on the first failure.
    pub retries: u32,
    pub initial_backoff_ms: u64,
    pub multiplier: f64,
    pub max_backoff_ms: u64,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            retries: 5,
            initial_backoff_ms: 100,
            multiplier: 2.0,
            max_backoff_ms: 30_000,
        }
    }
}

impl RetryPolicy {
    /// The pause before retry number `retry` (1-based).
    pub fn backoff(&self, retry: u32) -> Duration {
        let factor = self
            .multiplier
            .max(1.0)
            .powi(retry.saturating_sub(1) as i32);
        let ms = (self.initial_backoff_ms as f64 * factor).min(self.max_backoff_ms as f64);
        Duration::from_millis(ms as u64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_up_to_the_cap() {
        let p = RetryPolicy::default();
        let waits: Vec<u64> = (1..=10).map(|n| p.backoff(n).as_millis() as u64).collect();
        assert_eq!(
            waits,
            [100, 200, 400, 800, 1600, 3200, 6400, 12800, 25600, 30000]
        );
        let flat = RetryPolicy {
            multiplier: 0.5,
            ..p
        };
        assert_eq!(flat.backoff(4), Duration::from_millis(100));
    }
}
