//! What to do with a failed attempt — decided in one place ([`classify_status`],
//! [`classify_transport`]), apart from how long to wait ([`backoff`]).

use std::time::Duration;

use backon::ExponentialBuilder;
use reqwest::StatusCode;

use crate::SyncError;

/// The outcome of one failed attempt.
#[derive(Debug)]
pub enum Attempt {
    /// Retry with backoff: 5xx, 408, timeouts, dropped connections, cut or garbled bodies.
    Transient(SyncError),
    /// Wait for the rate-limit window to reset, then try again; doesn't use up retries.
    RateLimited(Duration),
    /// Stop: retrying the same request cannot succeed.
    Fatal(SyncError),
}

/// How a non-2xx status is handled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StatusClass {
    Success,
    RateLimited,
    Auth,
    Transient,
    Rejected,
}

pub fn classify_status(status: StatusCode) -> StatusClass {
    match status.as_u16() {
        200..=299 => StatusClass::Success,
        429 => StatusClass::RateLimited,
        401 | 403 => StatusClass::Auth,
        408 | 500..=599 => StatusClass::Transient,
        _ => StatusClass::Rejected,
    }
}

/// Transport errors (connect, timeout, reset, body cut) are all worth another try.
pub fn classify_transport(error: &reqwest::Error, request: &str) -> Attempt {
    let what = if error.is_timeout() {
        "timed out"
    } else if error.is_connect() {
        "could not connect"
    } else if error.is_body() || error.is_decode() {
        "connection dropped while reading the body"
    } else {
        "request failed"
    };
    // reqwest's Display includes the URL, which holds no secret (the token is a header).
    Attempt::Transient(SyncError::Transient { request: request.to_string(), message: format!("{what}: {error}") })
}

/// The retry schedule: exponential with full jitter, bounded in count and per-wait length.
#[derive(Debug, Clone, Copy)]
pub struct RetryPolicy {
    /// Retries after the first attempt.
    pub max_retries: u32,
    pub min_delay: Duration,
    pub max_delay: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy { max_retries: 6, min_delay: Duration::from_millis(500), max_delay: Duration::from_secs(30) }
    }
}

pub fn backoff(policy: &RetryPolicy) -> ExponentialBuilder {
    ExponentialBuilder::default()
        .with_min_delay(policy.min_delay)
        .with_max_delay(policy.max_delay)
        .with_max_times(policy.max_retries as usize)
        .with_jitter()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_are_classified_as_documented() {
        let class = |s: u16| classify_status(StatusCode::from_u16(s).unwrap());
        assert_eq!(class(200), StatusClass::Success);
        assert_eq!(class(429), StatusClass::RateLimited);
        assert_eq!(class(401), StatusClass::Auth);
        assert_eq!(class(403), StatusClass::Auth);
        for s in [500, 502, 503, 504, 408] {
            assert_eq!(class(s), StatusClass::Transient, "{s}");
        }
        for s in [400, 404, 405, 422] {
            assert_eq!(class(s), StatusClass::Rejected, "{s}");
        }
    }
}
