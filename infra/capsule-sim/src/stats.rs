//! Request statistics: what tests read to count the requests a sync made.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// Counts since start (or the last reset).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Stats {
    /// Every request that reached `/api/v2`.
    pub total: u64,
    /// Per endpoint, ids folded: `GET /parties/{id}/people`.
    pub by_endpoint: BTreeMap<String, u64>,
    /// Per response status (injected faults included; dropped connections count as 0).
    pub by_status: BTreeMap<u16, u64>,
}

impl Stats {
    pub fn record_request(&mut self, method: &str, path: &str) {
        self.total += 1;
        *self.by_endpoint.entry(endpoint_key(method, path)).or_default() += 1;
    }

    pub fn record_status(&mut self, status: u16) {
        *self.by_status.entry(status).or_default() += 1;
    }

    /// Requests to one endpoint key, 0 when never called.
    pub fn count(&self, endpoint: &str) -> u64 {
        self.by_endpoint.get(endpoint).copied().unwrap_or(0)
    }
}

/// `GET /parties/123/people` → `GET /parties/{id}/people`.
pub fn endpoint_key(method: &str, path: &str) -> String {
    let folded: Vec<&str> = path
        .split('/')
        .map(|seg| if !seg.is_empty() && seg.chars().all(|c| c.is_ascii_digit() || c == ',') { "{id}" } else { seg })
        .collect();
    format!("{method} {}", folded.join("/"))
}

/// This process's peak resident memory in MiB (Linux `VmHWM`; NaN elsewhere), for benchmarks.
pub fn peak_rss_mib() -> f64 {
    peak_rss_mib_at("/proc/self/status")
}

/// Another running process's peak resident memory in MiB (a simulator started as a child).
pub fn peak_rss_mib_of(pid: u32) -> f64 {
    peak_rss_mib_at(&format!("/proc/{pid}/status"))
}

fn peak_rss_mib_at(status: &str) -> f64 {
    std::fs::read_to_string(status)
        .ok()
        .and_then(|s| s.lines().find(|l| l.starts_with("VmHWM:")).map(str::to_string))
        .and_then(|l| l.split_whitespace().nth(1).and_then(|kb| kb.parse::<f64>().ok()))
        .map_or(f64::NAN, |kb| kb / 1024.0)
}
