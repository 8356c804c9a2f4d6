//! Capsule's rate-limit headers. What is done with them is the `budget` module's business: the
//! server tells us the budget left and when it refills, so no token bucket (`governor` and
//! friends) is needed, only a shared count of the window.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use http::HeaderMap;

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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_three_headers_and_the_time_to_reset() {
        let mut h = HeaderMap::new();
        h.insert("x-ratelimit-limit", "4000".parse().unwrap());
        h.insert("x-ratelimit-remaining", "12".parse().unwrap());
        h.insert("x-ratelimit-reset", "1010".parse().unwrap());
        let s = RateLimitStatus::from_headers(&h).unwrap();
        assert_eq!(s, RateLimitStatus { limit: 4000, remaining: 12, reset: 1010 });
        assert_eq!(s.until_reset(UNIX_EPOCH + Duration::from_secs(1000)), Duration::from_secs(10));
        assert_eq!(s.until_reset(UNIX_EPOCH + Duration::from_secs(2000)), Duration::ZERO);
        h.remove("x-ratelimit-reset");
        assert!(RateLimitStatus::from_headers(&h).is_none());
    }
}
