//! Fault injection: rules that make chosen requests fail the ways a real API and network do.

use rand::{Rng, SeedableRng, rngs::SmallRng};
use serde::{Deserialize, Serialize};

/// What happens to a request a rule fires on.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Fault {
    /// Answer with this HTTP status and a JSON error body (e.g. 500, 502, 503).
    Status { status: u16 },
    /// Answer 429 `{"error":"rate limit reached"}` as if the quota were spent.
    RateLimited,
    /// Wait this long, then answer normally.
    Slow { millis: u64 },
    /// Answer 200 with the body cut in half (valid HTTP, invalid JSON).
    Truncated,
    /// Answer 200 with a body that is not JSON at all.
    Malformed,
    /// Send the headers and part of the body, then drop the connection.
    Drop,
}

/// One rule. Matching requests pass `after` times, then the rule fires (with `probability`)
/// up to `times` times.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FaultRule {
    /// Only requests to exactly this path below `/api/v2` (`/parties`, not `/parties/deleted`);
    /// every request when absent.
    #[serde(default)]
    pub path: Option<String>,
    pub fault: Fault,
    /// Let this many matching requests through first.
    #[serde(default)]
    pub after: u64,
    /// Fire at most this many times; unlimited when absent.
    #[serde(default)]
    pub times: Option<u64>,
    /// Fire with this probability on each eligible request; always when absent.
    #[serde(default)]
    pub probability: Option<f64>,
}

#[derive(Debug)]
struct ActiveRule {
    rule: FaultRule,
    seen: u64,
    fired: u64,
}

/// The installed rules, checked in order; the first that fires wins.
#[derive(Debug)]
pub struct FaultPlan {
    rules: Vec<ActiveRule>,
    rng: SmallRng,
}

impl FaultPlan {
    pub fn new(seed: u64) -> FaultPlan {
        FaultPlan { rules: Vec::new(), rng: SmallRng::seed_from_u64(seed) }
    }

    pub fn add(&mut self, rule: FaultRule) {
        self.rules.push(ActiveRule { rule, seen: 0, fired: 0 });
    }

    pub fn clear(&mut self) {
        self.rules.clear();
    }

    pub fn rules(&self) -> Vec<FaultRule> {
        self.rules.iter().map(|r| r.rule.clone()).collect()
    }

    /// The fault for a request to `path`, if any rule fires.
    pub fn fire(&mut self, path: &str) -> Option<Fault> {
        for active in &mut self.rules {
            let rule = &active.rule;
            if rule.path.as_deref().is_some_and(|p| p.trim_end_matches('/') != path.trim_end_matches('/')) {
                continue;
            }
            active.seen += 1;
            if active.seen <= rule.after || rule.times.is_some_and(|t| active.fired >= t) {
                continue;
            }
            if rule.probability.is_some_and(|p| !self.rng.random_bool(p.clamp(0.0, 1.0))) {
                continue;
            }
            active.fired += 1;
            return Some(rule.fault.clone());
        }
        None
    }
}
