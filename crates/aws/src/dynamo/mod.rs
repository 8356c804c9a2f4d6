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

mod budget;
mod due_index;
mod item;
mod migration;
mod transaction;

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::Duration;

use async_trait::async_trait;
use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::operation::put_item::PutItemError;
use aws_sdk_dynamodb::types::{
    AttributeValue, Put, ReturnValue, ReturnValuesOnConditionCheckFailure, TransactWriteItem,
};
use chrono::Utc;

use capsule_core::integration::{Integration, RunId};
use capsule_core::observe::Event;
use capsule_core::ports::DEFAULT_HISTORY;
use capsule_core::ports::{
    Bookmark, BookmarkBase, Checkpoint, DispatchRecord, Lease, LeaseGrant, LeaseOwner, Parking, StateStore,
    TableRunRecord, TableState, Wake, not_waiting_for,
};
use capsule_core::{Result, SyncError};
use item::*;

/// A DynamoDB table as the state store.
#[derive(Clone, Debug)]
pub struct DynamoState {
    pub(super) client: Client,
    pub(super) table: String,
    /// Run records and dispatch records expire (DynamoDB TTL) this long after they end.
    pub(super) history: Duration,
    /// The due index is known to hold every integration ([`due_index`]).
    pub(super) index_built: Arc<AtomicBool>,
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
            .expression_attribute_values(":owner", s(wanted.owner.to_string()))
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
                    holder: held.as_ref().map(|l| l.owner.clone()),
                    until: held.map(|l| l.expires_at),
                })
            }
            Err(e) => Err(db_err("PutItem", e)),
        }
    }

    async fn resume_lease(
        &self,
        integration: &str,
        table: &str,
        owner: &LeaseOwner,
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
            .expression_attribute_values(":owner", s(owner.to_string()))
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
            .expression_attribute_values(":owner", s(lease.owner.to_string()))
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
}
