//! Capsule's documented rate limit: a fixed window per user, reported on every response in
//! `X-RateLimit-Limit`, `X-RateLimit-Remaining` and `X-RateLimit-Reset` (UTC epoch seconds).

use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// The state of the current window.
#[derive(Debug)]
pub struct RateWindow {
    limit: u32,
    length: Duration,
    started: Duration,
    used: u32,
    /// Requests that arrived in each earlier window, oldest first (429s included).
    history: Vec<u32>,
}

/// What one request is told.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateVerdict {
    pub limit: u32,
    pub remaining: u32,
    /// Epoch seconds when the window resets (rounded up).
    pub reset: u64,
    pub allowed: bool,
}

fn now() -> Duration {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default()
}

impl RateWindow {
    pub fn new(limit: u32, length: Duration) -> RateWindow {
        RateWindow { limit, length, started: now(), used: 0, history: Vec::new() }
    }

    /// Requests per window so far, oldest first (the current window last).
    pub fn windows(&self) -> Vec<u32> {
        let mut all = self.history.clone();
        if self.used > 0 {
            all.push(self.used);
        }
        all
    }

    /// Counts one request and says whether it may proceed.
    pub fn admit(&mut self) -> RateVerdict {
        let now = now();
        if now >= self.started + self.length {
            self.started = now;
            if self.used > 0 {
                self.history.push(self.used);
            }
            self.used = 0;
        }
        self.used = self.used.saturating_add(1);
        let end = self.started + self.length;
        RateVerdict {
            limit: self.limit,
            remaining: self.limit.saturating_sub(self.used),
            reset: end.as_secs() + u64::from(end.subsec_nanos() > 0),
            allowed: self.used <= self.limit,
        }
    }
}
