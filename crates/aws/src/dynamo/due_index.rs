//! The due index on DynamoDB (the engine's `due` module): one item per integration,
//!
//! | pk | sk | holds |
//! |---|---|---|
//! | `DUE#<name>` | `WAKE` | `integration`, `ver`, and while there is something to look at, `due` (always `DUE`) and `wake_at` |
//! | `DUE#` | `BUILT` | marks the index built for integrations registered before it existed |
//!
//! The global secondary index [`INDEX`] is keyed `due` / `wake_at` and is sparse: an entry with
//! nothing to look at has neither attribute and is not in it. So "what is due now" is one query
//! (`due = DUE AND wake_at <= now`, earliest first) that reads the due entries only. `wake_at` is
//! fixed-width UTC text, so it sorts as time does. Its own `DUE#` partitions let IAM give both
//! functions these items and nothing more of each other's.

use aws_sdk_dynamodb::types::AttributeValue;
use chrono::{DateTime, SecondsFormat, Utc};

use super::{DynamoState, Item, db_err, is_conditional_failure, key_text, n, s};
use capsule_core::observe::Event;
use capsule_core::ports::{StateStore, Wake};
use capsule_core::{Result, SyncError};

/// The global secondary index of due entries (template.yaml's `due`).
pub(crate) const INDEX: &str = "due";
/// The index's one partition value: ten thousand integrations' wake-ups are far below what one
/// index partition takes, and one partition keeps the query in due-time order.
const DUE: &str = "DUE";

pub(super) fn wake_pk(integration: &str) -> AttributeValue {
    s(format!("DUE#{integration}"))
}

const WAKE_SK: &str = "WAKE";

fn wake_text(at: DateTime<Utc>) -> String {
    at.to_rfc3339_opts(SecondsFormat::Millis, true)
}

/// The wake item of a newly registered integration: due at once.
pub(super) fn new_wake_item(integration: &str, now: DateTime<Utc>) -> Item {
    Item::from([
        ("pk".into(), wake_pk(integration)),
        ("sk".into(), s(WAKE_SK)),
        ("integration".into(), s(integration)),
        // Never reused by a later integration of the same name: a settle seen before a delete
        // cannot apply to it.
        ("ver".into(), n(now.timestamp_millis())),
        ("due".into(), s(DUE)),
        ("wake_at".into(), s(wake_text(now))),
    ])
}

fn wake_from(item: &Item) -> Result<Wake> {
    let text = |name: &str| item.get(name).and_then(|v| v.as_s().ok());
    let integration = text("integration")
        .ok_or_else(|| SyncError::State(format!("due index item {} has no `integration`", key_text(item, "pk"))))?;
    let at = text("wake_at")
        .map(|t| DateTime::parse_from_rfc3339(t).map(|t| t.with_timezone(&Utc)))
        .transpose()
        .map_err(|e| SyncError::State(format!("due index item of `{integration}`: `wake_at` is not a time: {e}")))?;
    let version = item.get("ver").and_then(|v| v.as_n().ok()).and_then(|v| v.parse().ok()).unwrap_or(0);
    Ok(Wake { integration: integration.clone(), at, version })
}

impl DynamoState {
    pub(super) async fn get_wake(&self, integration: &str) -> Result<Option<Wake>> {
        self.get_key(wake_pk(integration), WAKE_SK).await?.as_ref().map(wake_from).transpose()
    }

    /// `wake_at = min(wake_at, at)`, the version raised when it moves.
    pub(super) async fn lower_wake(&self, integration: &str, at: DateTime<Utc>) -> Result<()> {
        let result = self
            .client
            .update_item()
            .table_name(&self.table)
            .key("pk", wake_pk(integration))
            .key("sk", s(WAKE_SK))
            .update_expression(
                "SET wake_at = :at, #due = :due, integration = :name, ver = if_not_exists(ver, :zero) + :one",
            )
            .condition_expression("attribute_not_exists(wake_at) OR wake_at > :at")
            .expression_attribute_names("#due", "due")
            .expression_attribute_values(":at", s(wake_text(at)))
            .expression_attribute_values(":due", s(DUE))
            .expression_attribute_values(":name", s(integration))
            .expression_attribute_values(":zero", n(0))
            .expression_attribute_values(":one", n(1))
            .send()
            .await;
        match result {
            Ok(_) => Ok(()),
            Err(e) if is_conditional_failure(&e) => Ok(()),
            Err(e) => Err(db_err("UpdateItem", e)),
        }
    }

    /// After a write that gives the scheduler something to do: a failure to bring the wake
    /// forward is logged, not returned (the write itself happened; the scheduler still looks
    /// at the integration by its earlier wake, or after its dispatch's watch).
    pub(super) async fn wake_after_write(&self, integration: &str, at: DateTime<Utc>) {
        if let Err(error) = self.lower_wake(integration, at).await {
            tracing::warn!(event = Event::WakeNotRecorded.as_str(), %integration, %error,
                           "the scheduler looks at it by its earlier wake time");
        }
    }

    pub(super) async fn settle(&self, integration: &str, at: Option<DateTime<Utc>>, seen: u64) -> Result<bool> {
        let update =
            self.client.update_item().table_name(&self.table).key("pk", wake_pk(integration)).key("sk", s(WAKE_SK));
        let update = match at {
            Some(at) => update
                .update_expression("SET wake_at = :at, #due = :due, ver = ver + :one")
                .expression_attribute_values(":at", s(wake_text(at)))
                .expression_attribute_values(":due", s(DUE)),
            None => update.update_expression("REMOVE wake_at, #due SET ver = ver + :one"),
        };
        let result = update
            .condition_expression("ver = :seen")
            .expression_attribute_names("#due", "due")
            .expression_attribute_values(":seen", n(seen as i64))
            .expression_attribute_values(":one", n(1))
            .send()
            .await;
        match result {
            Ok(_) => Ok(true),
            Err(e) if is_conditional_failure(&e) => Ok(false),
            Err(e) => Err(db_err("UpdateItem", e)),
        }
    }

    /// The due entries, earliest first: one query of the index (paged past 1 MB).
    pub(super) async fn query_due(&self, now: DateTime<Utc>, limit: usize) -> Result<Vec<Wake>> {
        self.build_index_once(now).await?;
        let mut out = Vec::new();
        let mut start: Option<Item> = None;
        loop {
            let page = self
                .client
                .query()
                .table_name(&self.table)
                .index_name(INDEX)
                .key_condition_expression("#due = :due AND wake_at <= :now")
                .expression_attribute_names("#due", "due")
                .expression_attribute_values(":due", s(DUE))
                .expression_attribute_values(":now", s(wake_text(now)))
                .scan_index_forward(true)
                .limit(i32::try_from(limit - out.len()).unwrap_or(i32::MAX).clamp(1, 1000))
                .set_exclusive_start_key(start)
                .send()
                .await
                .map_err(|e| db_err("Query", e))?;
            for item in page.items() {
                out.push(wake_from(item)?);
            }
            start = page.last_evaluated_key;
            if start.is_none() || out.len() >= limit {
                out.truncate(limit);
                return Ok(out);
            }
        }
    }

    pub(super) async fn delete_wake(&self, integration: &str) -> Result<()> {
        self.delete_key(wake_pk(integration), s(WAKE_SK)).await
    }

    /// Integrations registered before the index existed have no entry: once per table (marked
    /// by `DUE#`/`BUILT`), each is made due at `now` (the query's: this very query returns it),
    /// and the scheduler settles it on its look.
    async fn build_index_once(&self, now: chrono::DateTime<Utc>) -> Result<()> {
        if self.index_built.load(std::sync::atomic::Ordering::Relaxed) {
            return Ok(());
        }
        let marker = || [("pk".to_string(), s("DUE#")), ("sk".to_string(), s("BUILT"))];
        if self.get_key(s("DUE#"), "BUILT").await?.is_none() {
            let integrations = self.list_integrations().await?;
            for integration in &integrations {
                if self.get_wake(&integration.name).await?.is_none() {
                    self.lower_wake(&integration.name, now).await?;
                }
            }
            tracing::info!(event = Event::DueIndexBuilt.as_str(), integrations = integrations.len());
            let put = self.client.put_item().table_name(&self.table).set_item(Some(marker().into()));
            put.send().await.map_err(|e| db_err("PutItem", e))?;
        }
        self.index_built.store(true, std::sync::atomic::Ordering::Relaxed);
        Ok(())
    }
}
