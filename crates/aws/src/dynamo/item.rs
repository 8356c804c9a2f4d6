//! The table's item layout: keys, documents as JSON in `doc`, run and lease items, and what a
//! refused condition or a cancelled transaction looked like.

use std::collections::HashMap;

use aws_sdk_dynamodb::error::DisplayErrorContext;
use aws_sdk_dynamodb::operation::transact_write_items::TransactWriteItemsError;
use aws_sdk_dynamodb::types::AttributeValue;
use capsule_core::ports::{Lease, TableRunRecord};
use capsule_core::stored::{self, SCHEMA_VERSION, Stored};
use capsule_core::{Result, SyncError};

pub(super) type Item = HashMap<String, AttributeValue>;

/// The partition listing every integration's name (so listing them is a query, not a scan).
pub(super) const REGISTRY: &str = "INTEGRATIONS";

pub(super) fn registry_item(name: &str) -> Item {
    HashMap::from([("pk".into(), s(REGISTRY)), ("sk".into(), s(name))])
}

pub(super) fn s(v: impl Into<String>) -> AttributeValue {
    AttributeValue::S(v.into())
}

pub(super) fn n(v: i64) -> AttributeValue {
    AttributeValue::N(v.to_string())
}

pub(super) fn pk(integration: &str) -> AttributeValue {
    s(format!("INT#{integration}"))
}

/// Dispatch records' own partition, so IAM can let the orchestrator write only these.
pub(super) fn dispatch_pk(integration: &str) -> AttributeValue {
    s(format!("DISPATCH#{integration}"))
}

pub(super) fn db_err<E: std::error::Error>(op: &str, e: E) -> SyncError {
    SyncError::State(format!("DynamoDB {op}: {}", DisplayErrorContext(e)))
}

/// A document's item: its keys, the document as JSON in `doc`, and the schema version it was
/// written with in `schema` (`capsule_core::stored`).
pub(super) fn doc_item<T: Stored>(pk_value: AttributeValue, sk: String, doc: &T) -> Result<Item> {
    let json = serde_json::to_string(doc).map_err(|e| SyncError::Internal(format!("encoding state: {e}")))?;
    let schema = n(i64::from(SCHEMA_VERSION));
    Ok(HashMap::from([
        ("pk".into(), pk_value),
        ("sk".into(), s(sk)),
        ("doc".into(), s(json)),
        ("schema".into(), schema),
    ]))
}

/// An item's key attribute as text, for messages (`?` when it is missing or not a string).
pub(super) fn key_text(item: &Item, name: &str) -> String {
    item.get(name).and_then(|v| v.as_s().ok()).map_or_else(|| "?".to_string(), String::clone)
}

/// The document of an item, brought up to date from the schema version it was written with (an
/// item without `schema` was written before versions were recorded).
pub(super) fn from_item<T: Stored>(item: &Item) -> Result<T> {
    let what = format!("state item {}/{}", key_text(item, "pk"), key_text(item, "sk"));
    let doc =
        item.get("doc").and_then(|v| v.as_s().ok()).ok_or_else(|| SyncError::State(format!("{what} has no `doc`")))?;
    let schema = match item.get("schema") {
        None => None,
        Some(v) => Some(
            v.as_n()
                .ok()
                .and_then(|n| n.parse::<u32>().ok())
                .ok_or_else(|| SyncError::State(format!("{what} has a `schema` that is not a version number")))?,
        ),
    };
    stored::decode(&what, schema, doc)
}

/// Run records sort by when they ended (fixed-width UTC timestamp), so a descending query with
/// a limit returns the newest ones. Run ids alone have second precision.
pub(super) fn run_sk(record: &TableRunRecord) -> String {
    let at = record.finished_at.unwrap_or(record.started_at).to_rfc3339_opts(chrono::SecondsFormat::Nanos, true);
    format!("RUN#{at}#{}#{}", record.run_id, record.table)
}

/// The key of the `running` record a run's final record replaces (same run, same start).
pub(super) fn running_sk(record: &TableRunRecord) -> String {
    run_sk(&TableRunRecord { finished_at: None, ..record.clone() })
}

/// The lease item: the document plus the attributes conditions read.
pub(super) fn lease_item(lease: &Lease) -> Result<Item> {
    let mut item = doc_item(pk(&lease.integration), format!("LEASE#{}", lease.table), lease)?;
    item.insert("owner".into(), s(lease.owner.to_string()));
    item.insert("invocation".into(), n(i64::from(lease.invocation)));
    item.insert("next".into(), n(i64::from(lease.next)));
    item.insert("fence".into(), n(lease.fence as i64));
    item.insert("expires_at".into(), n(lease.expires_at.timestamp()));
    item.insert("ttl".into(), n(lease.expires_at.timestamp() + 86_400));
    Ok(item)
}

/// The condition of every write fenced on a lease: still this holding.
pub(super) const HELD: &str = "#owner = :owner AND fence = :fence";

pub(super) fn is_conditional_failure<E: aws_sdk_dynamodb::error::ProvideErrorMetadata>(
    e: &aws_sdk_dynamodb::error::SdkError<E>,
) -> bool {
    e.as_service_error().and_then(|se| se.code()) == Some("ConditionalCheckFailedException")
}

/// Why a transaction did not happen.
pub(super) enum Cancelled {
    /// These items' conditions failed (indexes into the transaction).
    Conditions(Vec<usize>),
    Other(SyncError),
}

/// The indexes of the items whose condition failed, if that is why the transaction was cancelled.
pub(super) fn failed_conditions(e: &aws_sdk_dynamodb::error::SdkError<TransactWriteItemsError>) -> Option<Vec<usize>> {
    match e.as_service_error() {
        Some(TransactWriteItemsError::TransactionCanceledException(t)) => {
            let failed: Vec<usize> = t
                .cancellation_reasons()
                .iter()
                .enumerate()
                .filter(|(_, r)| r.code() == Some("ConditionalCheckFailed"))
                .map(|(i, _)| i)
                .collect();
            (!failed.is_empty()).then_some(failed)
        }
        _ => None,
    }
}
