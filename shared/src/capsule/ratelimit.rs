//! Pacing from Capsule's rate-limit headers. The quota (4,000 requests/hour per user) is shared
//! by every table a token syncs, so one pacer is shared by every request of a client.
//!
//! This is not a token bucket (`governor` and friends): the server tells us the budget left and
//! when it refills, so we spread what is left over the time left, and stop until the reset when
//! nothing is left. That is a few lines of arithmetic on the headers, kept here.

use std::sync::Mutex;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use reqwest::header::HeaderMap;

/// The latest rate-limit state the server reported.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateLimitStatus {
    pub limit: u32,
    pub remaining: u32,
    /// Epoch seconds at which the window resets.
    pub reset: u64,
}

impl RateLimitStatus {
    pub fn from_headers(headers: &HeaderMap) -> Option<RateLimitStatus> {
        let num = |name: &str| headers.get(name)?.to_str().ok()?.trim().parse::<u64>().ok();
        Some(RateLimitStatus {
            limit: num("x-ratelimit-limit")? as u32,
            remaining: num("x-ratelimit-remaining")? as u32,
            reset: num("x-ratelimit-reset")?,
        })
    }

    /// Time until the reset, as seen from `now` (0 when it is already past).
    pub fn until_reset(&self, now: SystemTime) -> Duration {
        let now = now.duration_since(UNIX_EPOCH).unwrap_or_default();
        Duration::from_secs(self.reset).saturating_sub(now)
    }
}

/// Shared pacing state.
#[derive(Debug)]
pub struct Pacer {
    last: Mutex<Option<RateLimitStatus>>,
    /// Start slowing down when fewer than this share of the window's requests remain.
    low_water: f64,
    /// Never wait longer than this for one request (Capsule's window is one hour).
    max_wait: Duration,
}

impl Pacer {
    pub fn new(low_water: f64, max_wait: Duration) -> Pacer {
        Pacer { last: Mutex::new(None), low_water, max_wait }
    }

    pub fn observe(&self, status: RateLimitStatus) {
        *self.last.lock().unwrap() = Some(status);
    }

    pub fn last(&self) -> Option<RateLimitStatus> {
        *self.last.lock().unwrap()
    }

    /// How long to wait before the next request: nothing while the budget is healthy, the time
    /// left divided by the requests left when it runs low, the whole rest of the window at zero.
    pub fn delay_before_request(&self, now: SystemTime) -> Duration {
        let Some(s) = self.last() else {
            return Duration::ZERO;
        };
        let left = s.until_reset(now);
        if left.is_zero() {
            return Duration::ZERO;
        }
        let delay = if s.remaining == 0 {
            left
        } else if f64::from(s.remaining) < f64::from(s.limit) * self.low_water {
            left / s.remaining
        } else {
            Duration::ZERO
        };
        delay.min(self.max_wait)
    }

    /// How long to wait after a 429: until the reported reset (at least a second, at most `max_wait`).
    pub fn delay_after_429(&self, headers: &HeaderMap, now: SystemTime) -> Duration {
        match RateLimitStatus::from_headers(headers) {
            Some(s) => {
                self.observe(s);
                s.until_reset(now).max(Duration::from_secs(1)).min(self.max_wait)
            }
            None => Duration::from_secs(30).min(self.max_wait),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(secs: u64) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(secs)
    }

    #[test]
    fn paces_only_when_the_budget_runs_low() {
        let p = Pacer::new(0.1, Duration::from_secs(3600));
        assert_eq!(p.delay_before_request(at(1000)), Duration::ZERO, "nothing known yet");
        p.observe(RateLimitStatus { limit: 4000, remaining: 3000, reset: 2000 });
        assert_eq!(p.delay_before_request(at(1000)), Duration::ZERO);
        p.observe(RateLimitStatus { limit: 4000, remaining: 100, reset: 2000 });
        assert_eq!(p.delay_before_request(at(1000)), Duration::from_secs(10));
        p.observe(RateLimitStatus { limit: 4000, remaining: 0, reset: 2000 });
        assert_eq!(p.delay_before_request(at(1000)), Duration::from_secs(1000));
        assert_eq!(p.delay_before_request(at(2500)), Duration::ZERO, "window already reset");
    }

    #[test]
    fn waits_until_reset_after_429_and_caps_it() {
        let p = Pacer::new(0.1, Duration::from_secs(60));
        let mut h = HeaderMap::new();
        h.insert("x-ratelimit-limit", "4000".parse().unwrap());
        h.insert("x-ratelimit-remaining", "0".parse().unwrap());
        h.insert("x-ratelimit-reset", "1010".parse().unwrap());
        assert_eq!(p.delay_after_429(&h, at(1000)), Duration::from_secs(10));
        assert_eq!(p.delay_after_429(&h, at(1011)), Duration::from_secs(1), "at least a second");
        h.insert("x-ratelimit-reset", "9999".parse().unwrap());
        assert_eq!(p.delay_after_429(&h, at(1000)), Duration::from_secs(60), "capped");
    }
}
