//! Per-credential rate limits: a token bucket per credential, refilled continuously. A till
//! integration gone wrong (a retry loop, a stolen key) is held to its own rate and cannot take the
//! engine's capacity from every other till. Each engine process keeps its own buckets, so with N
//! engines behind a balancer a credential gets up to N times its rate; set rates per engine.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use dashmap::DashMap;

#[derive(Debug)]
struct Bucket {
    tokens: f64,
    at: Instant,
}

/// Token buckets by credential.
#[derive(Debug, Default)]
pub struct RateLimiter {
    buckets: DashMap<String, Mutex<Bucket>>,
}

impl RateLimiter {
    /// Takes one token from `key`'s bucket (`rate` per second, at most `burst`), or says how long
    /// until one is there.
    pub fn take(&self, key: &str, rate: u32, burst: u32, now: Instant) -> Result<(), Duration> {
        let rate = f64::from(rate.max(1));
        let burst = f64::from(burst.max(1));
        let entry = match self.buckets.get(key) {
            Some(entry) => entry,
            None => self.buckets.entry(key.to_owned()).or_insert_with(|| Mutex::new(Bucket { tokens: burst, at: now })).downgrade(),
        };
        let mut bucket = entry.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let elapsed = now.saturating_duration_since(bucket.at).as_secs_f64();
        bucket.tokens = (bucket.tokens + elapsed * rate).min(burst);
        bucket.at = now;
        if bucket.tokens >= 1.0 {
            bucket.tokens -= 1.0;
            Ok(())
        } else {
            Err(Duration::from_secs_f64((1.0 - bucket.tokens) / rate))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_burst_then_the_rate() {
        let limiter = RateLimiter::default();
        let start = Instant::now();
        for _ in 0..5 {
            assert!(limiter.take("k", 10, 5, start).is_ok());
        }
        let wait = limiter.take("k", 10, 5, start).expect_err("burst used up");
        assert!(wait <= Duration::from_millis(100) && wait > Duration::ZERO, "{wait:?}");
        assert!(limiter.take("k", 10, 5, start + Duration::from_millis(100)).is_ok());
        assert!(limiter.take("k", 10, 5, start + Duration::from_millis(100)).is_err());
        // Other credentials have their own buckets.
        assert!(limiter.take("other", 10, 5, start).is_ok());
    }
}
