//! The rate-limit budget as an item per token: optimistic updates on `ver`, with a fast path
//! that claims a request with one conditional increment.

use std::time::Duration;

use async_trait::async_trait;
use aws_sdk_dynamodb::types::{AttributeValue, ReturnValue};

use capsule_core::budget::{BudgetChange, BudgetPolicy, Claim, RateBudget, RateBudgetStore};
use capsule_core::{Result, SyncError};

use super::*;

/// Conflicting updates of one budget retried this many times (each re-reads the item). Only a
/// new window and header corrections take this path; claims increment in place.
pub(super) const BUDGET_UPDATE_ATTEMPTS: u32 = 50;

pub(super) fn budget_key_item(key: &str) -> [(&'static str, AttributeValue); 2] {
    [("pk", s(format!("BUDGET#{key}"))), ("sk", s("BUDGET"))]
}

/// A budget item: its numbers as top-level attributes, so a claim can increment `used` in place
/// under a condition; `ver` counts every change (the optimistic updates' check).
pub(super) fn budget_item(key: &str, budget: &RateBudget, ver: i64) -> Item {
    let mut item: Item = budget_key_item(key).into_iter().map(|(k, v)| (k.to_string(), v)).collect();
    item.insert("limit".into(), n(i64::from(budget.limit)));
    item.insert("window_reset".into(), n(budget.window_reset));
    item.insert("used".into(), n(i64::from(budget.used)));
    item.insert("ver".into(), n(ver));
    item.insert("ttl".into(), n(budget.window_reset + 86_400));
    item
}

/// The budget and its version from a budget item.
pub(super) fn read_budget(item: &Item) -> Result<(RateBudget, i64)> {
    let num = |name: &str| {
        item.get(name).and_then(|v| v.as_n().ok()).and_then(|v| v.parse::<i64>().ok()).ok_or_else(|| {
            SyncError::State(format!("rate-limit budget item {} has no number `{name}`", key_text(item, "pk")))
        })
    };
    let budget =
        RateBudget { limit: num("limit")? as u32, window_reset: num("window_reset")?, used: num("used")? as u32 };
    Ok((budget, num("ver")?))
}

/// What one optimistic update of a budget did.
pub(super) enum Attempted {
    /// Written, or nothing to write: the budget as stored now.
    Done(Option<RateBudget>),
    /// Another writer changed the budget between the read and the write.
    Conflict,
}

impl DynamoState {
    fn budget_key(key: &str) -> Item {
        budget_key_item(key).into_iter().map(|(k, v)| (k.to_string(), v)).collect()
    }

    /// The stored budget and its version (a consistent read).
    async fn stored_budget(&self, key: &str) -> Result<Option<(RateBudget, i64)>> {
        let out = self
            .client
            .get_item()
            .table_name(&self.table)
            .set_key(Some(Self::budget_key(key)))
            .consistent_read(true)
            .send()
            .await
            .map_err(|e| db_err("GetItem", e))?;
        out.item.as_ref().map(read_budget).transpose()
    }

    /// One optimistic update: read, change, write conditioned on the version read.
    async fn update_budget_once(&self, key: &str, change: BudgetChange<'_>) -> Result<Attempted> {
        let current = self.stored_budget(key).await?;
        let version = current.as_ref().map_or(0, |(_, v)| *v);
        let current = current.map(|(b, _)| b);
        let Some(next) = change(current.as_ref()) else { return Ok(Attempted::Done(current)) };
        let result = self
            .client
            .put_item()
            .table_name(&self.table)
            .set_item(Some(budget_item(key, &next, version + 1)))
            .condition_expression("attribute_not_exists(pk) OR #ver = :ver")
            .expression_attribute_names("#ver", "ver")
            .expression_attribute_values(":ver", n(version))
            .send()
            .await;
        match result {
            Ok(_) => Ok(Attempted::Done(Some(next))),
            Err(e) if is_conditional_failure(&e) => Ok(Attempted::Conflict),
            Err(e) => Err(db_err("PutItem", e)),
        }
    }

    /// One conditional increment of the window `known` describes, below its share: the budget
    /// as stored after it, or None when the condition failed (another window or limit, or the
    /// share spent).
    async fn increment(&self, key: &str, policy: &BudgetPolicy, known: &RateBudget) -> Result<Option<RateBudget>> {
        let result = self
            .client
            .update_item()
            .table_name(&self.table)
            .set_key(Some(Self::budget_key(key)))
            .update_expression("SET #used = #used + :one, #ver = #ver + :one")
            .condition_expression("#limit = :limit AND window_reset = :reset AND #used < :cap")
            .expression_attribute_names("#used", "used")
            .expression_attribute_names("#ver", "ver")
            .expression_attribute_names("#limit", "limit")
            .expression_attribute_values(":one", n(1))
            .expression_attribute_values(":limit", n(i64::from(known.limit)))
            .expression_attribute_values(":reset", n(known.window_reset))
            .expression_attribute_values(":cap", n(i64::from(policy.cap(known.limit))))
            .return_values(ReturnValue::AllNew)
            .send()
            .await;
        match result {
            Ok(out) => Ok(out.attributes.as_ref().map(read_budget).transpose()?.map(|(b, _)| b)),
            Err(e) if is_conditional_failure(&e) => Ok(None),
            Err(e) => Err(db_err("UpdateItem", e)),
        }
    }
}

#[async_trait]
impl RateBudgetStore for DynamoState {
    /// Optimistic: read, change, write conditioned on the version read; on conflict, again.
    async fn update_budget(&self, key: &str, change: BudgetChange<'_>) -> Result<Option<RateBudget>> {
        for _ in 0..BUDGET_UPDATE_ATTEMPTS {
            match self.update_budget_once(key, change).await? {
                Attempted::Done(stored) => return Ok(stored),
                Attempted::Conflict => {
                    let jitter = rand::random::<u64>() % 20;
                    tokio::time::sleep(Duration::from_millis(jitter)).await;
                }
            }
        }
        Err(SyncError::State(format!("rate-limit budget {key}: too many concurrent updates")))
    }

    /// A conditional increment in place while the window is one the claimer knows (told, or
    /// read) and below its share. Only a new window (or a changed limit, or a spent share) takes
    /// one optimistic update; a claimer that loses that race increments the winner's window next,
    /// so many invocations starting at once do not retry against each other (with 20 of them
    /// retrying optimistic writes, one waited ~9 s on moto).
    async fn claim(
        &self,
        key: &str,
        policy: &BudgetPolicy,
        now: i64,
        known: Option<&RateBudget>,
    ) -> Result<(Claim, Option<RateBudget>)> {
        let mut known = known.filter(|k| now < k.window_reset).cloned();
        for _ in 0..BUDGET_UPDATE_ATTEMPTS {
            if let Some(window) = &known
                && let Some(stored) = self.increment(key, policy, window).await?
            {
                return Ok((Claim::Granted, Some(stored)));
            }
            let verdict = std::sync::Mutex::new(Claim::Granted);
            let change = |current: Option<&RateBudget>| {
                let (next, claim) = RateBudget::claim(current, policy, now);
                *verdict.lock().unwrap() = claim;
                next
            };
            match self.update_budget_once(key, &change).await? {
                Attempted::Done(stored) => return Ok((*verdict.lock().unwrap(), stored)),
                Attempted::Conflict => {
                    known = self.stored_budget(key).await?.map(|(b, _)| b).filter(|b| now < b.window_reset);
                }
            }
        }
        Err(SyncError::State(format!("rate-limit budget {key}: too many concurrent claims")))
    }
}
