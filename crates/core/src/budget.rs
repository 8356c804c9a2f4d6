//! One rate-limit budget per Capsule token, shared by every table, invocation and process that
//! uses the token. Capsule allows 4,000 requests per hour per user in a fixed window and reports
//! it on every response (`X-RateLimit-Limit`, `-Remaining`, `-Reset`).
//!
//! The budget lives in the state store (a DynamoDB item, a small file beside `state.json`) so
//! that 22 concurrent Lambda invocations draw from one count. A request is *claimed* before it is
//! sent: granted while `used < limit × (1 − reserve)`, otherwise the caller learns when the window
//! resets and either waits (briefly) or checkpoints and stops. Responses correct the count when
//! the server knows better (another tool using the same token, a window that reset earlier than
//! guessed). The reserve leaves part of every window to the customer's other tools.
//!
//! Sharing between tables is first come, first served *per request*: every table run issues one
//! request at a time (tracks: four), so the runs waiting on a window take turns claiming from it,
//! and a small table needing a handful of requests finishes in the first window it gets.
//!
//! The budget's key is a hash of the API base URL and the token *source* (`secretsmanager:…`,
//! `env:…`), never the token: integrations that read the same secret share one budget.

use std::sync::Mutex;
use std::time::Duration;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::Result;
use crate::ratelimit::RateLimitStatus;

/// The stored state of one token's current window.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RateBudget {
    /// Requests per window, as the server last said (or the default before it said anything).
    pub limit: u32,
    /// Epoch seconds when the current window ends.
    pub window_reset: i64,
    /// Requests claimed (or known spent) in the current window.
    pub used: u32,
}

/// How a budget is shared out.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BudgetPolicy {
    /// Share of each window left unused for the customer's other tools (0.1 = 10 %).
    pub reserve: f64,
    /// The limit assumed before the server has reported one (Capsule: 4,000).
    pub default_limit: u32,
    /// How long a window is assumed to last until a response says when it resets (Capsule: 1 h).
    pub window: Duration,
}

impl Default for BudgetPolicy {
    fn default() -> Self {
        BudgetPolicy { reserve: 0.10, default_limit: 4000, window: Duration::from_secs(3600) }
    }
}

impl BudgetPolicy {
    /// Requests this connector may spend per window.
    pub fn cap(&self, limit: u32) -> u32 {
        ((f64::from(limit) * (1.0 - self.reserve.clamp(0.0, 0.95))).floor() as u32).max(1)
    }
}

/// The answer to a claim.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Claim {
    /// Send the request.
    Granted,
    /// The window's share is spent: nothing may be sent before this epoch second.
    WaitUntil(i64),
}

impl RateBudget {
    fn fresh(policy: &BudgetPolicy, limit: u32, now: i64) -> RateBudget {
        RateBudget { limit, window_reset: now + policy.window.as_secs() as i64, used: 0 }
    }

    /// Claims one request at `now` (epoch seconds). Returns the budget to store (None: unchanged)
    /// and the answer.
    pub fn claim(current: Option<&RateBudget>, policy: &BudgetPolicy, now: i64) -> (Option<RateBudget>, Claim) {
        let mut budget = match current {
            Some(b) if now < b.window_reset => b.clone(),
            // No window yet, or it has ended: a new one, its end guessed until a response says.
            Some(b) => RateBudget::fresh(policy, b.limit, now),
            None => RateBudget::fresh(policy, policy.default_limit, now),
        };
        if budget.used >= policy.cap(budget.limit) {
            return (None, Claim::WaitUntil(budget.window_reset));
        }
        budget.used += 1;
        (Some(budget), Claim::Granted)
    }

    /// What a response's headers say about the window. Returns the budget to store, or None when
    /// the stored one already agrees (most responses: no write).
    pub fn observe(
        current: Option<&RateBudget>,
        status: &RateLimitStatus,
        policy: &BudgetPolicy,
    ) -> Option<RateBudget> {
        let reset = status.reset as i64;
        let server_used = status.limit.saturating_sub(status.remaining);
        // A reset within half a window of ours is the same window (ours was guessed when it began).
        let half_window = (policy.window.as_secs() / 2).max(1) as i64;
        let next = match current {
            None => RateBudget { limit: status.limit, window_reset: reset, used: server_used },
            // The server is in a later window than we thought: its count is the truth.
            Some(b) if reset >= b.window_reset + half_window => {
                RateBudget { limit: status.limit, window_reset: reset, used: server_used }
            }
            // Same window (ours guessed a little off): keep the larger count.
            Some(b) => RateBudget { limit: status.limit, window_reset: reset, used: b.used.max(server_used) },
        };
        (current != Some(&next)).then_some(next)
    }
}

/// The stable key of a token's budget: a hash of where the API is and where the token comes from.
pub fn budget_key(api_base_url: &str, token_source: &str) -> String {
    let digest = Sha256::digest(format!("{api_base_url}\n{token_source}").as_bytes());
    digest.iter().take(12).map(|b| format!("{b:02x}")).collect()
}

/// A change to one stored budget: given what is stored, what to store instead (None: nothing).
pub type BudgetChange<'a> = &'a (dyn Fn(Option<&RateBudget>) -> Option<RateBudget> + Send + Sync);

/// Where budgets are kept: every adapter applies a change atomically (read, change, conditional
/// write, retried on conflict) and returns the budget as stored afterwards.
#[async_trait]
pub trait RateBudgetStore: Send + Sync {
    async fn update_budget(&self, key: &str, change: BudgetChange<'_>) -> Result<Option<RateBudget>>;

    /// Claims one request ([`RateBudget::claim`]) and returns the answer and the budget as
    /// stored; `known` is the budget as the caller last saw it. Every request makes one claim,
    /// so a store with an atomic conditional increment overrides this with it (DynamoDB: one
    /// `UpdateItem` while the window is the one `known` describes; no read, no conflict).
    async fn claim(
        &self,
        key: &str,
        policy: &BudgetPolicy,
        now: i64,
        known: Option<&RateBudget>,
    ) -> Result<(Claim, Option<RateBudget>)> {
        let _ = known;
        claim_by_update(self, key, policy, now).await
    }
}

/// A claim as a general update of the stored budget (the default, and the fallback of stores
/// whose fast path did not apply).
pub(crate) async fn claim_by_update<S: RateBudgetStore + ?Sized>(
    store: &S,
    key: &str,
    policy: &BudgetPolicy,
    now: i64,
) -> Result<(Claim, Option<RateBudget>)> {
    let verdict = Mutex::new(Claim::Granted);
    let change = |current: Option<&RateBudget>| {
        let (next, claim) = RateBudget::claim(current, policy, now);
        *verdict.lock().unwrap() = claim;
        next
    };
    let stored = store.update_budget(key, &change).await?;
    let claim = *verdict.lock().unwrap();
    Ok((claim, stored))
}

/// A budget in this process only (a client with no state store: token checks, tests).
#[derive(Debug, Default)]
pub struct MemoryBudgets {
    budgets: Mutex<std::collections::HashMap<String, RateBudget>>,
}

#[async_trait]
impl RateBudgetStore for MemoryBudgets {
    async fn update_budget(&self, key: &str, change: BudgetChange<'_>) -> Result<Option<RateBudget>> {
        let mut budgets = self.budgets.lock().unwrap();
        if let Some(next) = change(budgets.get(key)) {
            budgets.insert(key.to_string(), next);
        }
        Ok(budgets.get(key).cloned())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy() -> BudgetPolicy {
        BudgetPolicy { reserve: 0.1, default_limit: 40, window: Duration::from_secs(4) }
    }

    #[test]
    fn claims_stop_at_the_limit_less_the_reserve_and_resume_in_the_next_window() {
        let p = policy();
        let mut stored: Option<RateBudget> = None;
        for i in 0..36 {
            let (next, claim) = RateBudget::claim(stored.as_ref(), &p, 100);
            assert_eq!(claim, Claim::Granted, "claim {i}");
            stored = next;
        }
        let (next, claim) = RateBudget::claim(stored.as_ref(), &p, 103);
        assert_eq!((next, claim), (None, Claim::WaitUntil(104)), "36 = 40 less 10 %");
        let (next, claim) = RateBudget::claim(stored.as_ref(), &p, 104);
        assert_eq!(claim, Claim::Granted, "a new window");
        assert_eq!(next.unwrap(), RateBudget { limit: 40, window_reset: 108, used: 1 });
    }

    #[test]
    fn responses_correct_the_count_and_the_window() {
        let p = BudgetPolicy::default();
        let ours = RateBudget { limit: 4000, window_reset: 5000, used: 10 };
        let status = |remaining, reset| RateLimitStatus { limit: 4000, remaining, reset };
        assert_eq!(RateBudget::observe(Some(&ours), &status(3990, 5000), &p), None, "agrees: no write");
        let other_tool = RateBudget::observe(Some(&ours), &status(3000, 5000), &p).unwrap();
        assert_eq!(other_tool.used, 1000, "another tool spent from the same token");
        let earlier = RateBudget::observe(Some(&ours), &status(3995, 4200), &p).unwrap();
        assert_eq!((earlier.window_reset, earlier.used), (4200, 10), "the guess was too long");
        let close = RateBudget::observe(Some(&ours), &status(3995, 5001), &p).unwrap();
        assert_eq!((close.window_reset, close.used), (5001, 10), "a second off is the same window");
        let later = RateBudget::observe(Some(&ours), &status(3999, 9000), &p).unwrap();
        assert_eq!((later.window_reset, later.used), (9000, 1), "the server moved on to a new window");
        let spent = RateBudget::observe(Some(&ours), &status(0, 5000), &p).unwrap();
        assert_eq!(RateBudget::claim(Some(&spent), &BudgetPolicy::default(), 4000).1, Claim::WaitUntil(5000));
    }

    #[test]
    fn keys_come_from_the_token_source_not_the_token() {
        let a = budget_key("https://api.capsulecrm.com/api/v2", "secretsmanager:capsule-sync/acme");
        assert_eq!(a, budget_key("https://api.capsulecrm.com/api/v2", "secretsmanager:capsule-sync/acme"));
        assert_ne!(a, budget_key("https://api.capsulecrm.com/api/v2", "secretsmanager:capsule-sync/other"));
        assert_eq!(a.len(), 24);
        assert!(!a.contains("acme"));
    }
}
