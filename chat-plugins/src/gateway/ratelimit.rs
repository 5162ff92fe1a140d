//! Per-user token buckets: `rate` messages per second, bursts up to `rate`, shared by all
//! of a user's devices.

use std::sync::Mutex;
use std::time::Instant;

use crate::HashMap;

#[derive(Debug)]
pub struct RateLimits {
    rate: f64,
    buckets: Mutex<HashMap<String, (f64, Instant)>>,
}

impl RateLimits {
    pub fn new(per_second: u32) -> Self {
        RateLimits {
            rate: f64::from(per_second.max(1)),
            buckets: Mutex::new(HashMap::default()),
        }
    }

    /// Takes a token for `user`; false when the bucket is empty.
    pub fn allow(&self, user: &str) -> bool {
        self.allow_at(user, Instant::now())
    }

    fn allow_at(&self, user: &str, now: Instant) -> bool {
        let mut buckets = self.buckets.lock().expect("rate limit lock");
        let (tokens, last) = buckets.entry(user.to_string()).or_insert((self.rate, now));
        let refill = now.saturating_duration_since(*last).as_secs_f64() * self.rate;
        *tokens = (*tokens + refill).min(self.rate);
        *last = now;
        if *tokens >= 1.0 {
            *tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn a_burst_is_capped_and_tokens_come_back_with_time() {
        let limits = RateLimits::new(10);
        let t0 = Instant::now();
        let allowed = (0..15).filter(|_| limits.allow_at("u", t0)).count();
        assert_eq!(allowed, 10);
        assert!(!limits.allow_at("u", t0));
        assert!(limits.allow_at("other", t0), "buckets are per user");
        let later = t0 + Duration::from_millis(350);
        let refilled = (0..10).filter(|_| limits.allow_at("u", later)).count();
        assert_eq!(refilled, 3);
    }
}
