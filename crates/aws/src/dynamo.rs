//! DynamoDB as the state store, one table (single-table design):
//!
//! | pk | sk | holds |
//! |---|---|---|
//! | `INT#<name>` | `INTEGRATION` | the integration's settings |
//! | `INT#<name>` | `BOOKMARK#<table>` | the bookmark |
//! | `INT#<name>` | `LEASE#<table>` | `owner`, `fence`, `invocation`, `next`, `expires_at`, `ttl` (DynamoDB TTL removes stale leases) |
//! | `INT#<name>` | `CHECKPOINT#<table>` | a paused run's checkpoint |
//! | `INT#<name>` | `LOCK#<name>` | a short lock (`holder`, `expires_ms`): OAuth refreshes of the integration's secret |
//! | `INT#<name>` | `RUN#<finished_at>#<run_id>#<table>` | a table run record (newest = highest) |
//! | `DISPATCH#<name>` | `DISPATCH#<run_id>` | a scheduler dispatch (its own partition: the orchestrator's IAM role may write only `DISPATCH#` partitions) |
//! | `BUDGET#<key>` | `BUDGET` | a token's rate-limit window (`ver` for optimistic updates) |
//! | `INTEGRATIONS` | `<name>` | the registry: listing integrations is one query, not a scan |
//! | `DUE#<name>` | `WAKE` | the integration's entry in the due index ([`due_index`]) |
//!
//! Run and dispatch records carry `ttl` (their end plus the history retention, default 90 days):
//! DynamoDB's TTL removes them, so the table does not grow with every run.
//!
//! Documents are stored as JSON in a `doc` attribute; the attributes conditions look at (lease
//! owner and expiry) are top-level. Every change that could race is conditional: a lease is taken
//! only if absent, expired or already ours; commit is one transaction that deletes our lease
//! (conditioned on still owning it), writes the bookmark and the run record and drops the
//! checkpoint — so two runs of one table can never both advance a bookmark. Lease conditions
//! check the fencing number too (`#owner = :owner AND fence = :fence`, [`Lease::fence`]): a
//! duplicate, stale or replaced invocation of the same run can write nothing either.

mod due_index;

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::Duration;

use async_trait::async_trait;
use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::error::DisplayErrorContext;
use aws_sdk_dynamodb::operation::put_item::PutItemError;
use aws_sdk_dynamodb::operation::transact_write_items::TransactWriteItemsError;
use aws_sdk_dynamodb::types::{
    AttributeValue, Delete, Put, ReturnValue, ReturnValuesOnConditionCheckFailure, TransactWriteItem,
};
use chrono::Utc;
use serde::Serialize;
use serde::de::DeserializeOwned;

use capsule_core::budget::{BudgetChange, BudgetPolicy, Claim, RateBudget, RateBudgetStore};
use capsule_core::integration::{Integration, RunId};
use capsule_core::observe::Event;
pub use capsule_core::ports::DEFAULT_HISTORY;
use capsule_core::ports::{
    Bookmark, BookmarkBase, Checkpoint, DispatchRecord, Lease, LeaseGrant, Parking, StateStore, TableRunRecord,
    TableState, Wake, not_waiting_for,
};
use capsule_core::{Result, SyncError};

type Item = HashMap<String, AttributeValue>;

/// A DynamoDB table as the state store.
#[derive(Clone, Debug)]
pub struct DynamoState {
    client: Client,
    table: String,
    /// Run records and dispatch records expire (DynamoDB TTL) this long after they end.
    history: Duration,
    /// The due index is known to hold every integration ([`due_index`]).
    index_built: Arc<AtomicBool>,
}

/// The partition listing every integration's name (so listing them is a query, not a scan).
const REGISTRY: &str = "INTEGRATIONS";

fn registry_item(name: &str) -> Item {
    HashMap::from([("pk".into(), s(REGISTRY)), ("sk".into(), s(name))])
}

fn s(v: impl Into<String>) -> AttributeValue {
    AttributeValue::S(v.into())
}

fn n(v: i64) -> AttributeValue {
    AttributeValue::N(v.to_string())
}

fn pk(integration: &str) -> AttributeValue {
    s(format!("INT#{integration}"))
}

/// Dispatch records' own partition, so IAM can let the orchestrator write only these.
fn dispatch_pk(integration: &str) -> AttributeValue {
    s(format!("DISPATCH#{integration}"))
}

fn db_err<E: std::error::Error>(op: &str, e: E) -> SyncError {
    SyncError::State(format!("DynamoDB {op}: {}", DisplayErrorContext(e)))
}

fn doc_item<T: Serialize>(pk_value: AttributeValue, sk: String, doc: &T) -> Result<Item> {
    let json = serde_json::to_string(doc).map_err(|e| SyncError::Internal(format!("encoding state: {e}")))?;
    Ok(HashMap::from([("pk".into(), pk_value), ("sk".into(), s(sk)), ("doc".into(), s(json))]))
}

fn from_item<T: DeserializeOwned>(item: &Item) -> Result<T> {
    let doc = item.get("doc").and_then(|v| v.as_s().ok()).ok_or_else(|| {
        SyncError::State(format!("state item {:?}/{:?} has no `doc`", item.get("pk"), item.get("sk")))
    })?;
    serde_json::from_str(doc).map_err(|e| SyncError::State(format!("state item is not valid: {e}")))
}

/// Run records sort by when they ended (fixed-width UTC timestamp), so a descending query with
/// a limit returns the newest ones. Run ids alone have second precision.
fn run_sk(record: &TableRunRecord) -> String {
    let at = record.finished_at.unwrap_or(record.started_at).to_rfc3339_opts(chrono::SecondsFormat::Nanos, true);
    format!("RUN#{at}#{}#{}", record.run_id, record.table)
}

/// The key of the `running` record a run's final record replaces (same run, same start).
fn running_sk(record: &TableRunRecord) -> String {
    run_sk(&TableRunRecord { finished_at: None, ..record.clone() })
}

/// The lease item: the document plus the attributes conditions read.
fn lease_item(lease: &Lease) -> Result<Item> {
    let mut item = doc_item(pk(&lease.integration), format!("LEASE#{}", lease.table), lease)?;
    item.insert("owner".into(), s(&lease.owner));
    item.insert("invocation".into(), n(i64::from(lease.invocation)));
    item.insert("next".into(), n(i64::from(lease.next)));
    item.insert("fence".into(), n(lease.fence as i64));
    item.insert("expires_at".into(), n(lease.expires_at.timestamp()));
    item.insert("ttl".into(), n(lease.expires_at.timestamp() + 86_400));
    Ok(item)
}

/// The condition of every write fenced on a lease: still this holding.
const HELD: &str = "#owner = :owner AND fence = :fence";

fn is_conditional_failure<E: aws_sdk_dynamodb::error::ProvideErrorMetadata>(
    e: &aws_sdk_dynamodb::error::SdkError<E>,
) -> bool {
    e.as_service_error().and_then(|se| se.code()) == Some("ConditionalCheckFailedException")
}

/// Why a transaction did not happen.
enum Cancelled {
    /// These items' conditions failed (indexes into the transaction).
    Conditions(Vec<usize>),
    Other(SyncError),
}

/// The indexes of the items whose condition failed, if that is why the transaction was cancelled.
fn failed_conditions(e: &aws_sdk_dynamodb::error::SdkError<TransactWriteItemsError>) -> Option<Vec<usize>> {
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

impl DynamoState {
    pub fn new(client: Client, table: &str) -> DynamoState {
        DynamoState { client, table: table.to_string(), history: DEFAULT_HISTORY, index_built: Arc::default() }
    }

    /// Keeps run and dispatch records this long (then DynamoDB's TTL removes them).
    pub fn with_history(self, history: Duration) -> DynamoState {
        DynamoState { history, ..self }
    }

    /// The `ttl` attribute of a history item that ended at `at`.
    fn expiry(&self, at: chrono::DateTime<Utc>) -> AttributeValue {
        n(at.timestamp() + self.history.as_secs() as i64)
    }

    /// A run record's item, expiring after the history's retention.
    fn run_item(&self, record: &TableRunRecord) -> Result<Item> {
        let mut item = doc_item(pk(&record.integration), run_sk(record), record)?;
        item.insert("ttl".into(), self.expiry(record.finished_at.unwrap_or(record.started_at)));
        Ok(item)
    }

    async fn delete_key(&self, pk: AttributeValue, sk: AttributeValue) -> Result<()> {
        self.client
            .delete_item()
            .table_name(&self.table)
            .key("pk", pk)
            .key("sk", sk)
            .send()
            .await
            .map_err(|e| db_err("DeleteItem", e))?;
        Ok(())
    }

    /// Integrations written before the registry partition existed: found by one scan, and
    /// registered so later listings are queries (a role that may not write the registry — the
    /// orchestrator's — leaves that to the next `capsule-sync integrations list`).
    async fn list_and_index_legacy_integrations(&self) -> Result<Vec<Integration>> {
        let mut out = Vec::new();
        let mut pages = self
            .client
            .scan()
            .table_name(&self.table)
            .filter_expression("sk = :sk")
            .expression_attribute_values(":sk", s("INTEGRATION"))
            .into_paginator()
            .send();
        while let Some(page) = pages.next().await {
            for item in page.map_err(|e| db_err("Scan", e))?.items() {
                out.push(from_item::<Integration>(item)?);
            }
        }
        for integration in &out {
            let put = self.client.put_item().table_name(&self.table).set_item(Some(registry_item(&integration.name)));
            if let Err(e) = put.send().await {
                tracing::warn!(event = Event::IntegrationNotRegistered.as_str(), integration = %integration.name,
                               error = %DisplayErrorContext(e), "listing integrations scans the table until it is");
            }
        }
        out.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(out)
    }

    async fn get(&self, integration: &str, sk: &str) -> Result<Option<Item>> {
        self.get_key(pk(integration), sk).await
    }

    /// One item by its key, read consistently.
    async fn get_key(&self, partition: AttributeValue, sk: &str) -> Result<Option<Item>> {
        let out = self
            .client
            .get_item()
            .table_name(&self.table)
            .key("pk", partition)
            .key("sk", s(sk))
            .consistent_read(true)
            .send()
            .await
            .map_err(|e| db_err("GetItem", e))?;
        Ok(out.item)
    }

    /// Items of one integration whose sort key starts with `prefix`, newest (highest) first.
    async fn query(&self, integration: &str, prefix: &str, limit: Option<i32>) -> Result<Vec<Item>> {
        self.query_partition(pk(integration), prefix, limit).await
    }

    /// Items of one partition whose sort key starts with `prefix`, newest (highest) first.
    async fn query_partition(&self, partition: AttributeValue, prefix: &str, limit: Option<i32>) -> Result<Vec<Item>> {
        let mut items = Vec::new();
        let mut start: Option<Item> = None;
        loop {
            // An empty prefix is the whole partition (`begins_with` refuses an empty value).
            let query = match prefix {
                "" => self.client.query().key_condition_expression("pk = :pk"),
                prefix => self
                    .client
                    .query()
                    .key_condition_expression("pk = :pk AND begins_with(sk, :prefix)")
                    .expression_attribute_values(":prefix", s(prefix)),
            };
            let out = query
                .table_name(&self.table)
                .expression_attribute_values(":pk", partition.clone())
                .scan_index_forward(false)
                .set_limit(limit)
                .set_exclusive_start_key(start)
                .send()
                .await
                .map_err(|e| db_err("Query", e))?;
            items.extend(out.items.unwrap_or_default());
            start = out.last_evaluated_key;
            if start.is_none() || limit.is_some_and(|l| items.len() >= l as usize) {
                return Ok(items);
            }
        }
    }

    /// Writes an integration if `condition` holds; otherwise a config error saying `refusal`.
    async fn put_integration(&self, integration: &Integration, condition: &str, refusal: String) -> Result<()> {
        let item = doc_item(pk(&integration.name), "INTEGRATION".into(), integration)?;
        let result = self
            .client
            .put_item()
            .table_name(&self.table)
            .set_item(Some(item))
            .condition_expression(condition)
            .send()
            .await;
        match result {
            Ok(_) => Ok(()),
            Err(e) if e.as_service_error().is_some_and(|se| se.is_conditional_check_failed_exception()) => {
                Err(SyncError::Config(refusal))
            }
            Err(e) => Err(db_err("PutItem", e)),
        }
    }

    fn lease_key(lease: &Lease) -> (AttributeValue, AttributeValue) {
        (pk(&lease.integration), s(format!("LEASE#{}", lease.table)))
    }

    /// Deletes our lease — the condition that makes a commit ours alone.
    fn release_ours(&self, lease: &Lease) -> TransactWriteItem {
        let (p, k) = Self::lease_key(lease);
        let delete = Delete::builder()
            .table_name(&self.table)
            .key("pk", p)
            .key("sk", k)
            .condition_expression(HELD)
            .expression_attribute_names("#owner", "owner")
            .expression_attribute_values(":owner", s(&lease.owner))
            .expression_attribute_values(":fence", n(lease.fence as i64))
            .build()
            .expect("table, key and condition are set");
        TransactWriteItem::builder().delete(delete).build()
    }

    /// Replaces our lease with `next` — only while `held` is still ours.
    fn replace_ours(&self, held: &Lease, next: &Lease) -> Result<TransactWriteItem> {
        let put = Put::builder()
            .table_name(&self.table)
            .set_item(Some(lease_item(next)?))
            .condition_expression(HELD)
            .expression_attribute_names("#owner", "owner")
            .expression_attribute_values(":owner", s(&held.owner))
            .expression_attribute_values(":fence", n(held.fence as i64))
            .build()
            .expect("table, item and condition are set");
        Ok(TransactWriteItem::builder().put(put).build())
    }

    /// Stores the checkpoint, parks the lease and writes the run record, in one transaction.
    async fn park(&self, lease: &Lease, parking: &Parking, record: &TableRunRecord) -> Result<()> {
        let items = vec![
            self.replace_ours(lease, &lease.parked(parking))?,
            self.put(doc_item(pk(&lease.integration), format!("CHECKPOINT#{}", lease.table), &parking.checkpoint)?),
            self.put(self.run_item(record)?),
            self.delete(&lease.integration, running_sk(record)),
        ];
        self.transact(items, lease).await?;
        self.wake_after_write(&lease.integration, parking.checkpoint.not_before.unwrap_or_else(Utc::now)).await;
        Ok(())
    }

    async fn lease(&self, integration: &str, table: &str) -> Result<Option<Lease>> {
        self.get(integration, &format!("LEASE#{table}")).await?.map(|i| from_item(&i)).transpose()
    }

    fn put(&self, item: Item) -> TransactWriteItem {
        let put = Put::builder().table_name(&self.table).set_item(Some(item)).build().expect("table and item are set");
        TransactWriteItem::builder().put(put).build()
    }

    fn delete(&self, integration: &str, sk: String) -> TransactWriteItem {
        let delete = Delete::builder()
            .table_name(&self.table)
            .key("pk", pk(integration))
            .key("sk", s(sk))
            .build()
            .expect("table and key are set");
        TransactWriteItem::builder().delete(delete).build()
    }

    async fn transact(&self, items: Vec<TransactWriteItem>, lease: &Lease) -> Result<()> {
        match self.send_transaction(items).await {
            Ok(()) => Ok(()),
            Err(Cancelled::Conditions(_)) => Err(lease.lost()),
            Err(Cancelled::Other(e)) => Err(e),
        }
    }

    /// One transaction, idempotent: the SDK retries a timed-out attempt with the same client
    /// request token, which DynamoDB answers with the first attempt's outcome instead of running
    /// it again (and failing its conditions against its own writes).
    async fn send_transaction(&self, items: Vec<TransactWriteItem>) -> std::result::Result<(), Cancelled> {
        let token = format!("{:032x}", rand::random::<u128>());
        match self
            .client
            .transact_write_items()
            .set_transact_items(Some(items))
            .client_request_token(token)
            .send()
            .await
        {
            Ok(_) => Ok(()),
            Err(e) => match failed_conditions(&e) {
                Some(failed) => Err(Cancelled::Conditions(failed)),
                None => Err(Cancelled::Other(db_err("TransactWriteItems", e))),
            },
        }
    }

    /// Writes the bookmark only if the stored one is still `base`.
    fn put_bookmark(&self, lease: &Lease, bookmark: &Bookmark, base: BookmarkBase) -> Result<TransactWriteItem> {
        let mut item = doc_item(pk(&lease.integration), format!("BOOKMARK#{}", lease.table), bookmark)?;
        item.insert("generation".into(), n(bookmark.generation as i64));
        let mut put = Put::builder().table_name(&self.table).set_item(Some(item));
        put = match base {
            BookmarkBase::Unchecked => put,
            BookmarkBase::Absent => put.condition_expression("attribute_not_exists(pk)"),
            // Written before generations existed: the item has no `generation` attribute.
            BookmarkBase::Generation(0) => {
                put.condition_expression("attribute_exists(pk) AND attribute_not_exists(generation)")
            }
            BookmarkBase::Generation(g) => {
                put.condition_expression("generation = :gen").expression_attribute_values(":gen", n(g as i64))
            }
        };
        Ok(TransactWriteItem::builder().put(put.build().expect("table and item are set")).build())
    }
}

#[async_trait]
impl StateStore for DynamoState {
    async fn get_integration(&self, name: &str) -> Result<Option<Integration>> {
        self.get(name, "INTEGRATION").await?.map(|item| from_item(&item)).transpose()
    }

    async fn create_integration(&self, integration: &Integration) -> Result<()> {
        let doc = Put::builder()
            .table_name(&self.table)
            .set_item(Some(doc_item(pk(&integration.name), "INTEGRATION".into(), integration)?))
            .condition_expression("attribute_not_exists(pk)")
            .build()
            .expect("table, item and condition are set");
        let items = vec![
            TransactWriteItem::builder().put(doc).build(),
            self.put(registry_item(&integration.name)),
            self.put(due_index::new_wake_item(&integration.name, Utc::now())),
        ];
        match self.send_transaction(items).await {
            Ok(()) => Ok(()),
            Err(Cancelled::Conditions(_)) => {
                Err(SyncError::Config(format!("an integration named `{}` already exists", integration.name)))
            }
            Err(Cancelled::Other(e)) => Err(e),
        }
    }

    async fn update_integration(&self, integration: &Integration) -> Result<()> {
        let missing = format!("no integration named `{}`", integration.name);
        self.put_integration(integration, "attribute_exists(pk)", missing).await?;
        self.wake_after_write(&integration.name, Utc::now()).await;
        Ok(())
    }

    async fn list_integrations(&self) -> Result<Vec<Integration>> {
        let names: Vec<String> = self
            .query_partition(s(REGISTRY), "", None)
            .await?
            .iter()
            .filter_map(|item| item.get("sk").and_then(|v| v.as_s().ok()).cloned())
            .collect();
        if names.is_empty() {
            return self.list_and_index_legacy_integrations().await;
        }
        let docs = futures::future::join_all(names.iter().map(|name| self.get_integration(name))).await;
        let mut out = Vec::new();
        for (name, doc) in names.iter().zip(docs) {
            match doc {
                Ok(doc) => out.extend(doc),
                // One unreadable integration must not hide the others (nor stop the tick).
                Err(error) => tracing::error!(event = Event::IntegrationTickFailed.as_str(), integration = %name,
                                              %error, "listed without it"),
            }
        }
        out.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(out)
    }

    async fn delete_integration(&self, name: &str) -> Result<bool> {
        let existed = self.get(name, "INTEGRATION").await?.is_some();
        for prefix in ["BOOKMARK#", "LEASE#", "CHECKPOINT#", "INTEGRATION"] {
            for item in self.query(name, prefix, None).await? {
                self.delete_key(item["pk"].clone(), item["sk"].clone()).await?;
            }
        }
        self.delete_key(s(REGISTRY), s(name)).await?;
        self.delete_wake(name).await?;
        Ok(existed)
    }

    async fn bookmark(&self, integration: &str, table: &str) -> Result<Option<Bookmark>> {
        self.get(integration, &format!("BOOKMARK#{table}")).await?.map(|item| from_item(&item)).transpose()
    }

    async fn delete_bookmark(&self, integration: &str, table: &str) -> Result<()> {
        self.client
            .delete_item()
            .table_name(&self.table)
            .key("pk", pk(integration))
            .key("sk", s(format!("BOOKMARK#{table}")))
            .send()
            .await
            .map_err(|e| db_err("DeleteItem", e))?;
        Ok(())
    }

    async fn acquire_lease(&self, wanted: &Lease) -> Result<LeaseGrant> {
        let now = Utc::now();
        let result = self
            .client
            .put_item()
            .table_name(&self.table)
            .set_item(Some(lease_item(wanted)?))
            .condition_expression("attribute_not_exists(pk) OR #owner = :owner OR expires_at < :now")
            .expression_attribute_names("#owner", "owner")
            .expression_attribute_values(":owner", s(&wanted.owner))
            .expression_attribute_values(":now", n(now.timestamp()))
            .return_values(ReturnValue::AllOld)
            // The holder that refused it, as it was then: read afterwards, it may have committed
            // and gone, and a copy of its own run's event would not know it was a duplicate.
            .return_values_on_condition_check_failure(ReturnValuesOnConditionCheckFailure::AllOld)
            .send()
            .await;
        match result {
            Ok(out) => {
                let previous: Option<Lease> = out.attributes.as_ref().map(from_item).transpose()?;
                let displaced = previous.filter(|p| p.owner != wanted.owner);
                // The attempt count is returned; the caller stores it when it renews the lease
                // of a run it took over from itself.
                let attempt = capsule_core::ports::attempt_after(displaced.as_ref(), wanted);
                self.wake_after_write(&wanted.integration, wanted.expires_at).await;
                Ok(LeaseGrant { lease: Lease { attempt, ..wanted.clone() }, displaced })
            }
            Err(e) if is_conditional_failure(&e) => {
                let refusing = match e.as_service_error() {
                    Some(PutItemError::ConditionalCheckFailedException(c)) => c.item().cloned(),
                    _ => None,
                };
                let held: Option<Lease> = match refusing {
                    Some(item) => Some(from_item(&item)?),
                    None => self.lease(&wanted.integration, &wanted.table).await?,
                };
                Err(SyncError::LeaseHeld {
                    integration: wanted.integration.clone(),
                    table: wanted.table.clone(),
                    holder: held.as_ref().map_or("another run".into(), |l| l.owner.clone()),
                    until: held.map_or(String::new(), |l| l.expires_at.to_rfc3339()),
                })
            }
            Err(e) => Err(db_err("PutItem", e)),
        }
    }

    async fn resume_lease(
        &self,
        integration: &str,
        table: &str,
        owner: &str,
        seq: u32,
        ttl: Duration,
    ) -> Result<Lease> {
        let now = Utc::now();
        let superseded = || not_waiting_for(integration, table, owner, seq);
        let current = self.lease(integration, table).await?.ok_or_else(superseded)?;
        let taken = current.resumed(seq, capsule_core::from_now(ttl));
        let result = self
            .client
            .put_item()
            .table_name(&self.table)
            .set_item(Some(lease_item(&taken)?))
            .condition_expression(
                "#owner = :owner AND fence = :fence AND #next = :seq AND (invocation = :zero OR expires_at < :now)",
            )
            .expression_attribute_names("#owner", "owner")
            .expression_attribute_names("#next", "next")
            .expression_attribute_values(":owner", s(owner))
            .expression_attribute_values(":fence", n(current.fence as i64))
            .expression_attribute_values(":seq", n(i64::from(seq)))
            .expression_attribute_values(":zero", n(0))
            .expression_attribute_values(":now", n(now.timestamp()))
            .send()
            .await;
        match result {
            Ok(_) => {
                self.wake_after_write(integration, taken.expires_at).await;
                Ok(taken)
            }
            Err(e) if is_conditional_failure(&e) => Err(superseded()),
            Err(e) => Err(db_err("PutItem", e)),
        }
    }

    async fn renew_lease(&self, lease: &Lease) -> Result<()> {
        let result = self
            .client
            .put_item()
            .table_name(&self.table)
            .set_item(Some(lease_item(lease)?))
            .condition_expression(HELD)
            .expression_attribute_names("#owner", "owner")
            .expression_attribute_values(":owner", s(&lease.owner))
            .expression_attribute_values(":fence", n(lease.fence as i64))
            .send()
            .await;
        match result {
            Ok(_) => Ok(()),
            Err(e) if is_conditional_failure(&e) => Err(lease.lost()),
            Err(e) => Err(db_err("PutItem", e)),
        }
    }

    async fn release_lease(&self, lease: &Lease) -> Result<()> {
        match self.send_transaction(vec![self.release_ours(lease)]).await {
            Ok(()) | Err(Cancelled::Conditions(_)) => Ok(()),
            Err(Cancelled::Other(e)) => Err(e),
        }
    }

    async fn commit(
        &self,
        lease: &Lease,
        bookmark: &Bookmark,
        base: BookmarkBase,
        record: &TableRunRecord,
    ) -> Result<()> {
        let mut items = vec![
            self.release_ours(lease),
            self.put_bookmark(lease, bookmark, base)?,
            self.put(self.run_item(record)?),
            self.delete(&lease.integration, format!("CHECKPOINT#{}", lease.table)),
        ];
        if running_sk(record) != run_sk(record) {
            items.push(self.delete(&lease.integration, running_sk(record)));
        }
        match self.send_transaction(items).await {
            Ok(()) => Ok(()),
            Err(Cancelled::Conditions(failed)) if !failed.contains(&0) => {
                Err(base.moved(&lease.integration, &lease.table))
            }
            Err(Cancelled::Conditions(_)) => {
                // The lease is gone: lost to another run, or released by this very commit when an
                // earlier attempt of it succeeded and only the answer was lost.
                let stored = self.bookmark(&lease.integration, &lease.table).await?;
                if stored.as_ref() == Some(bookmark) { Ok(()) } else { Err(lease.lost()) }
            }
            Err(Cancelled::Other(e)) => Err(e),
        }
    }

    async fn record_failure(&self, lease: &Lease, record: &TableRunRecord, retry: Option<&Parking>) -> Result<()> {
        let result = match retry {
            Some(parking) => self.park(lease, parking, record).await,
            None => {
                let items = vec![
                    self.release_ours(lease),
                    self.put(self.run_item(record)?),
                    self.delete(&lease.integration, format!("CHECKPOINT#{}", lease.table)),
                    self.delete(&lease.integration, running_sk(record)),
                ];
                self.transact(items, lease).await
            }
        };
        match result {
            // The lease is gone already: still keep the record of what happened.
            Err(SyncError::LeaseLost(_)) => self.record_run(record).await,
            other => other,
        }
    }

    async fn record_run(&self, record: &TableRunRecord) -> Result<()> {
        let mut items = vec![self.put(self.run_item(record)?)];
        // A final record replaces the run's `running` one (a run ended for it: taken over). A run
        // that ended the instant it started has the same key: one transaction may not touch an
        // item twice.
        if record.finished_at.is_some() && running_sk(record) != run_sk(record) {
            items.push(self.delete(&record.integration, running_sk(record)));
        }
        self.client
            .transact_write_items()
            .set_transact_items(Some(items))
            .send()
            .await
            .map_err(|e| db_err("TransactWriteItems", e))?;
        Ok(())
    }

    async fn runs(&self, integration: Option<&str>, limit: usize) -> Result<Vec<TableRunRecord>> {
        let mut records: Vec<TableRunRecord> = match integration {
            Some(name) => {
                self.query(name, "RUN#", Some(limit as i32)).await?.iter().map(from_item).collect::<Result<_>>()?
            }
            None => {
                let mut all = Vec::new();
                for i in self.list_integrations().await? {
                    for item in self.query(&i.name, "RUN#", Some(limit as i32)).await? {
                        all.push(from_item(&item)?);
                    }
                }
                all
            }
        };
        // Newest first by when they ended: run ids only have second precision.
        records.sort_by(|a: &TableRunRecord, b| {
            (b.finished_at, &b.run_id, &b.table).cmp(&(a.finished_at, &a.run_id, &a.table))
        });
        records.truncate(limit);
        Ok(records)
    }

    async fn save_checkpoint(&self, lease: &Lease, parking: &Parking, record: &TableRunRecord) -> Result<()> {
        self.park(lease, parking, record).await
    }

    async fn checkpoint(&self, integration: &str, table: &str, run_id: &RunId) -> Result<Option<Checkpoint>> {
        let found: Option<Checkpoint> =
            self.get(integration, &format!("CHECKPOINT#{table}")).await?.map(|i| from_item(&i)).transpose()?;
        Ok(found.filter(|c| &c.run_id == run_id))
    }

    async fn discard_checkpoint(&self, integration: &str, table: &str) -> Result<()> {
        self.client
            .delete_item()
            .table_name(&self.table)
            .key("pk", pk(integration))
            .key("sk", s(format!("CHECKPOINT#{table}")))
            .send()
            .await
            .map_err(|e| db_err("DeleteItem", e))?;
        Ok(())
    }

    async fn table_states(&self, integration: &str) -> Result<Vec<TableState>> {
        let mut states: std::collections::BTreeMap<String, TableState> = Default::default();
        fn state(states: &mut std::collections::BTreeMap<String, TableState>, table: String) -> &mut TableState {
            states.entry(table.clone()).or_insert(TableState { table, lease: None, checkpoint: None })
        }
        for item in self.query(integration, "LEASE#", None).await? {
            let lease: Lease = from_item(&item)?;
            let table = lease.table.clone();
            state(&mut states, table).lease = Some(lease);
        }
        for item in self.query(integration, "CHECKPOINT#", None).await? {
            let checkpoint: Checkpoint = from_item(&item)?;
            let table = checkpoint.table.clone();
            state(&mut states, table).checkpoint = Some(checkpoint);
        }
        Ok(states.into_values().collect())
    }

    async fn try_lock(&self, integration: &str, name: &str, holder: &str, ttl: Duration) -> Result<bool> {
        let now = Utc::now();
        let until = capsule_core::from_now(ttl);
        let item = HashMap::from([
            ("pk".to_string(), pk(integration)),
            ("sk".to_string(), s(format!("LOCK#{name}"))),
            ("holder".to_string(), s(holder)),
            ("expires_ms".to_string(), n(until.timestamp_millis())),
            ("ttl".to_string(), n(until.timestamp() + 86_400)),
        ]);
        let result = self
            .client
            .put_item()
            .table_name(&self.table)
            .set_item(Some(item))
            .condition_expression("attribute_not_exists(pk) OR holder = :holder OR expires_ms <= :now")
            .expression_attribute_values(":holder", s(holder))
            .expression_attribute_values(":now", n(now.timestamp_millis()))
            .send()
            .await;
        match result {
            Ok(_) => Ok(true),
            Err(e) if is_conditional_failure(&e) => Ok(false),
            Err(e) => Err(db_err("PutItem", e)),
        }
    }

    async fn unlock(&self, integration: &str, name: &str, holder: &str) -> Result<()> {
        let result = self
            .client
            .delete_item()
            .table_name(&self.table)
            .key("pk", pk(integration))
            .key("sk", s(format!("LOCK#{name}")))
            .condition_expression("holder = :holder")
            .expression_attribute_values(":holder", s(holder))
            .send()
            .await;
        match result {
            Ok(_) => Ok(()),
            Err(e) if is_conditional_failure(&e) => Ok(()),
            Err(e) => Err(db_err("DeleteItem", e)),
        }
    }

    async fn record_dispatch(&self, dispatch: &DispatchRecord) -> Result<()> {
        let mut item = doc_item(dispatch_pk(&dispatch.integration), format!("DISPATCH#{}", dispatch.run_id), dispatch)?;
        // Kept at least a month past the longest frequency: the schedule counts from the latest.
        let keep = self.history.max(Duration::from_secs(32 * 24 * 3600));
        item.insert("ttl".into(), n(dispatch.dispatched_at.timestamp() + keep.as_secs() as i64));
        self.client
            .put_item()
            .table_name(&self.table)
            .set_item(Some(item))
            .send()
            .await
            .map_err(|e| db_err("PutItem", e))?;
        if dispatch.needs_a_look() {
            self.wake_after_write(&dispatch.integration, Utc::now()).await;
        }
        Ok(())
    }

    async fn dispatches(&self, integration: &str, limit: usize) -> Result<Vec<DispatchRecord>> {
        let limit = i32::try_from(limit).unwrap_or(i32::MAX);
        let items = self.query_partition(dispatch_pk(integration), "DISPATCH#", Some(limit)).await?;
        items.iter().map(from_item).collect()
    }

    async fn last_dispatch(&self, integration: &str) -> Result<Option<DispatchRecord>> {
        let mut newest = self.query_partition(dispatch_pk(integration), "DISPATCH#", Some(1)).await?;
        if newest.is_empty() {
            // Written before dispatch records had their own partition.
            newest = self.query(integration, "DISPATCH#", Some(1)).await?;
        }
        newest.first().map(from_item).transpose()
    }

    async fn due(&self, now: chrono::DateTime<Utc>, limit: usize) -> Result<Vec<Wake>> {
        self.query_due(now, limit).await
    }

    async fn wake(&self, integration: &str) -> Result<Option<Wake>> {
        self.get_wake(integration).await
    }

    async fn wake_by(&self, integration: &str, at: chrono::DateTime<Utc>) -> Result<()> {
        self.lower_wake(integration, at).await
    }

    async fn settle_wake(&self, integration: &str, at: Option<chrono::DateTime<Utc>>, seen: u64) -> Result<bool> {
        self.settle(integration, at, seen).await
    }
}

/// Conflicting updates of one budget retried this many times (each re-reads the item). Only a
/// new window and header corrections take this path; claims increment in place.
const BUDGET_UPDATE_ATTEMPTS: u32 = 50;

fn budget_key_item(key: &str) -> [(&'static str, AttributeValue); 2] {
    [("pk", s(format!("BUDGET#{key}"))), ("sk", s("BUDGET"))]
}

/// A budget item: its numbers as top-level attributes, so a claim can increment `used` in place
/// under a condition; `ver` counts every change (the optimistic updates' check).
fn budget_item(key: &str, budget: &RateBudget, ver: i64) -> Item {
    let mut item: Item = budget_key_item(key).into_iter().map(|(k, v)| (k.to_string(), v)).collect();
    item.insert("limit".into(), n(i64::from(budget.limit)));
    item.insert("window_reset".into(), n(budget.window_reset));
    item.insert("used".into(), n(i64::from(budget.used)));
    item.insert("ver".into(), n(ver));
    item.insert("ttl".into(), n(budget.window_reset + 86_400));
    item
}

/// The budget and its version from a budget item.
fn read_budget(item: &Item) -> Result<(RateBudget, i64)> {
    let num = |name: &str| {
        item.get(name).and_then(|v| v.as_n().ok()).and_then(|v| v.parse::<i64>().ok()).ok_or_else(|| {
            SyncError::State(format!("rate-limit budget item {:?} has no number `{name}`", item.get("pk")))
        })
    };
    let budget =
        RateBudget { limit: num("limit")? as u32, window_reset: num("window_reset")?, used: num("used")? as u32 };
    Ok((budget, num("ver")?))
}

/// What one optimistic update of a budget did.
enum Attempted {
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
