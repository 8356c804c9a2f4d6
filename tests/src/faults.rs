//! Fault injection around any adapter: a state store and an object sink that behave like the
//! one they wrap until a chosen step of a table run, where they fail (the call returns an error,
//! after its effect when the step is "after") or crash (the call never returns: the test drops
//! the run's future there, as a killed process stops, with no cleanup).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use capsule_core::budget::{BudgetChange, BudgetPolicy, Claim, RateBudget, RateBudgetStore};
use capsule_core::integration::{Integration, RunId};
use capsule_core::ports::{
    Bookmark, BookmarkBase, Checkpoint, DispatchRecord, Lease, LeaseGrant, LeaseOwner, ObjectSink, ObjectUpload,
    Parking, RunState, StateStore, TableRunRecord, TableState, Wake,
};
use capsule_core::{Result, SyncError};
use tokio::sync::Notify;

/// A step of a table run where a fault can be injected.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// The first part file has been written (visible).
    PartWritten,
    /// Every part is written: the run lists its folder for parts of earlier attempts.
    LastPartWritten,
    /// The run manifest has been written where it waits for the commit.
    ManifestWritten,
    /// The committed run's manifest has been published for loaders.
    ManifestPublished,
    /// A warehouse kit file has been written (the first run of an integration writes them).
    KitWritten,
    /// The commit (bookmark, run record, lease release in one write) is about to happen.
    BeforeCommit,
    /// The commit has happened.
    AfterCommit,
    /// The `running` run record is about to be written.
    RunningRecord,
    /// The run's process log has been written (after the commit).
    LogWritten,
}

impl Step {
    pub const ALL: [Step; 9] = [
        Step::PartWritten,
        Step::LastPartWritten,
        Step::ManifestWritten,
        Step::ManifestPublished,
        Step::KitWritten,
        Step::BeforeCommit,
        Step::AfterCommit,
        Step::RunningRecord,
        Step::LogWritten,
    ];

    /// For people (the reliability table).
    pub fn describe(self) -> &'static str {
        match self {
            Step::PartWritten => "after the first part file is written",
            Step::LastPartWritten => "after the last part file is written",
            Step::ManifestWritten => "after the (pending) manifest is written",
            Step::ManifestPublished => "after the manifest is published (post-commit)",
            Step::KitWritten => "after a warehouse kit file is written",
            Step::BeforeCommit => "before the bookmark and run record are written",
            Step::AfterCommit => "after the bookmark and run record are written",
            Step::RunningRecord => "when the `running` record is written",
            Step::LogWritten => "after the process log is written",
        }
    }
}

/// What happens at the step.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// The call returns an error (for "after" steps: after its effect, as when an answer is lost).
    Fail,
    /// The call never returns; the run is dropped there (a killed process).
    Crash,
}

/// One fault at one step, fired at most once.
#[derive(Clone)]
pub struct Injection {
    pub step: Step,
    pub fault: Fault,
    fired: Arc<AtomicBool>,
    crashed: Arc<Notify>,
}

impl Injection {
    pub fn new(step: Step, fault: Fault) -> Injection {
        Injection { step, fault, fired: Arc::default(), crashed: Arc::default() }
    }

    /// An injection that never fires (for a run broken only in [`Broken`]'s ways).
    pub fn none() -> Injection {
        let injection = Injection::new(Step::LogWritten, Fault::Fail);
        injection.fired.store(true, Ordering::SeqCst);
        injection
    }

    pub fn fired(&self) -> bool {
        self.fired.load(Ordering::SeqCst)
    }

    /// Resolves when the crash happened (the run is then stuck: drop it).
    pub async fn crashed(&self) {
        self.crashed.notified().await
    }

    /// Called by the wrappers at `step`: nothing, an error, or no return at all.
    async fn at(&self, step: Step) -> Result<()> {
        if step != self.step || self.fired.swap(true, Ordering::SeqCst) {
            return Ok(());
        }
        match self.fault {
            Fault::Fail => Err(SyncError::Output(format!("injected failure {}", step.describe()))),
            Fault::Crash => {
                self.crashed.notify_one();
                std::future::pending::<()>().await;
                unreachable!("a crashed call never returns")
            }
        }
    }
}

/// A state store that injects at the commit and the `running` record, and can be broken for
/// good in other places ([`Broken`]).
pub struct FaultyState {
    pub inner: Arc<dyn StateStore>,
    pub injection: Injection,
    pub broken: Broken,
}

/// State store calls that fail every time.
#[derive(Debug, Default)]
pub struct Broken {
    /// Every lease renewal fails (a state store the heartbeat cannot reach).
    pub renewals: bool,
    /// Every bookmark read fails once a commit was tried (its answer and its confirmation lost).
    pub bookmark_reads_after_commit: bool,
    /// Set by the first commit.
    pub committed: std::sync::atomic::AtomicBool,
}

fn broken(what: &str) -> SyncError {
    SyncError::State(format!("injected: {what} failed"))
}

#[async_trait]
impl RateBudgetStore for FaultyState {
    async fn update_budget(&self, key: &str, change: BudgetChange<'_>) -> Result<Option<RateBudget>> {
        self.inner.update_budget(key, change).await
    }

    async fn claim(
        &self,
        key: &str,
        policy: &BudgetPolicy,
        now: i64,
        known: Option<&RateBudget>,
    ) -> Result<(Claim, Option<RateBudget>)> {
        self.inner.claim(key, policy, now, known).await
    }
}

#[async_trait]
impl StateStore for FaultyState {
    async fn get_integration(&self, name: &str) -> Result<Option<Integration>> {
        self.inner.get_integration(name).await
    }
    async fn create_integration(&self, integration: &Integration) -> Result<()> {
        self.inner.create_integration(integration).await
    }
    async fn update_integration(&self, integration: &Integration) -> Result<()> {
        self.inner.update_integration(integration).await
    }
    async fn list_integrations(&self) -> Result<Vec<Integration>> {
        self.inner.list_integrations().await
    }
    async fn delete_integration(&self, name: &str) -> Result<bool> {
        self.inner.delete_integration(name).await
    }
    async fn bookmark(&self, integration: &str, table: &str) -> Result<Option<Bookmark>> {
        if self.broken.bookmark_reads_after_commit && self.broken.committed.load(Ordering::SeqCst) {
            return Err(broken("the bookmark read"));
        }
        self.inner.bookmark(integration, table).await
    }
    async fn delete_bookmark(&self, integration: &str, table: &str) -> Result<()> {
        self.inner.delete_bookmark(integration, table).await
    }
    async fn acquire_lease(&self, wanted: &Lease) -> Result<LeaseGrant> {
        self.inner.acquire_lease(wanted).await
    }
    async fn resume_lease(
        &self,
        integration: &str,
        table: &str,
        owner: &LeaseOwner,
        seq: u32,
        ttl: Duration,
    ) -> Result<Lease> {
        self.inner.resume_lease(integration, table, owner, seq, ttl).await
    }
    async fn renew_lease(&self, lease: &Lease) -> Result<()> {
        if self.broken.renewals {
            return Err(broken("the lease renewal"));
        }
        self.inner.renew_lease(lease).await
    }
    async fn release_lease(&self, lease: &Lease) -> Result<()> {
        self.inner.release_lease(lease).await
    }
    async fn commit(
        &self,
        lease: &Lease,
        bookmark: &Bookmark,
        base: BookmarkBase,
        record: &TableRunRecord,
    ) -> Result<()> {
        self.injection.at(Step::BeforeCommit).await?;
        self.broken.committed.store(true, Ordering::SeqCst);
        self.inner.commit(lease, bookmark, base, record).await?;
        self.injection.at(Step::AfterCommit).await
    }
    async fn record_failure(&self, lease: &Lease, record: &TableRunRecord, retry: Option<&Parking>) -> Result<()> {
        self.inner.record_failure(lease, record, retry).await
    }
    async fn record_run(&self, record: &TableRunRecord) -> Result<()> {
        if record.state == RunState::Running {
            self.injection.at(Step::RunningRecord).await?;
        }
        self.inner.record_run(record).await
    }
    async fn runs(&self, integration: Option<&str>, limit: usize) -> Result<Vec<TableRunRecord>> {
        self.inner.runs(integration, limit).await
    }
    async fn save_checkpoint(&self, lease: &Lease, parking: &Parking, record: &TableRunRecord) -> Result<()> {
        self.inner.save_checkpoint(lease, parking, record).await
    }
    async fn checkpoint(&self, integration: &str, table: &str, run_id: &RunId) -> Result<Option<Checkpoint>> {
        self.inner.checkpoint(integration, table, run_id).await
    }
    async fn discard_checkpoint(&self, integration: &str, table: &str) -> Result<()> {
        self.inner.discard_checkpoint(integration, table).await
    }
    async fn table_states(&self, integration: &str) -> Result<Vec<TableState>> {
        self.inner.table_states(integration).await
    }
    async fn try_lock(&self, integration: &str, name: &str, holder: &str, ttl: Duration) -> Result<bool> {
        self.inner.try_lock(integration, name, holder, ttl).await
    }
    async fn unlock(&self, integration: &str, name: &str, holder: &str) -> Result<()> {
        self.inner.unlock(integration, name, holder).await
    }
    async fn record_dispatch(&self, dispatch: &DispatchRecord) -> Result<()> {
        self.inner.record_dispatch(dispatch).await
    }
    async fn last_dispatch(&self, integration: &str) -> Result<Option<DispatchRecord>> {
        self.inner.last_dispatch(integration).await
    }
    async fn dispatches(&self, integration: &str, limit: usize) -> Result<Vec<DispatchRecord>> {
        self.inner.dispatches(integration, limit).await
    }
    async fn due(&self, now: chrono::DateTime<chrono::Utc>, limit: usize) -> Result<Vec<Wake>> {
        self.inner.due(now, limit).await
    }
    async fn wake(&self, integration: &str) -> Result<Option<Wake>> {
        self.inner.wake(integration).await
    }
    async fn wake_by(&self, integration: &str, at: chrono::DateTime<chrono::Utc>) -> Result<()> {
        self.inner.wake_by(integration, at).await
    }
    async fn settle_wake(
        &self,
        integration: &str,
        at: Option<chrono::DateTime<chrono::Utc>>,
        seen: u64,
    ) -> Result<bool> {
        self.inner.settle_wake(integration, at, seen).await
    }
}

/// An object sink that injects after parts, the manifest, the warehouse kits and the log are written,
/// and at the listing for stale parts.
pub struct FaultySink {
    pub inner: Arc<dyn ObjectSink>,
    pub injection: Injection,
}

fn step_after_put(key: &str) -> Option<Step> {
    if key.contains("/warehouse/") {
        Some(Step::KitWritten)
    } else if key.contains("/logs/") {
        Some(Step::LogWritten)
    } else if key.ends_with(".pending.json") {
        Some(Step::ManifestWritten)
    } else if key.ends_with(".redshift.json") || key.ends_with(".parents.json") {
        // The Redshift manifest goes just before the published one: not a step of its own.
        None
    } else if key.contains("/runs/") {
        Some(Step::ManifestPublished)
    } else {
        None
    }
}

#[async_trait]
impl ObjectSink for FaultySink {
    async fn begin(&self, key: &str) -> Result<Box<dyn ObjectUpload>> {
        let upload = self.inner.begin(key).await?;
        let injection = key.contains("/part-").then(|| self.injection.clone());
        Ok(Box::new(FaultyUpload { inner: upload, injection }))
    }
    async fn put(&self, key: &str, body: Bytes) -> Result<()> {
        self.inner.put(key, body).await?;
        match step_after_put(key) {
            Some(step) => self.injection.at(step).await,
            None => Ok(()),
        }
    }
    async fn get(&self, key: &str) -> Result<Option<Bytes>> {
        self.inner.get(key).await
    }
    async fn get_range(&self, key: &str, range: std::ops::Range<u64>) -> Result<Option<Bytes>> {
        self.inner.get_range(key, range).await
    }
    async fn list(&self, prefix: &str) -> Result<Vec<String>> {
        if prefix.contains("/run=") {
            self.injection.at(Step::LastPartWritten).await?;
        }
        self.inner.list(prefix).await
    }
    async fn delete(&self, key: &str) -> Result<()> {
        self.inner.delete(key).await
    }
    async fn remove_prefix(&self, prefix: &str) -> Result<()> {
        self.inner.remove_prefix(prefix).await
    }
    fn locate(&self, key: &str) -> String {
        self.inner.locate(key)
    }
}

struct FaultyUpload {
    inner: Box<dyn ObjectUpload>,
    injection: Option<Injection>,
}

#[async_trait]
impl ObjectUpload for FaultyUpload {
    async fn write(&mut self, chunk: Bytes) -> Result<()> {
        self.inner.write(chunk).await
    }
    async fn finish(self: Box<Self>) -> Result<()> {
        self.inner.finish().await?;
        match &self.injection {
            Some(injection) => injection.at(Step::PartWritten).await,
            None => Ok(()),
        }
    }
    async fn abort(self: Box<Self>) {
        self.inner.abort().await
    }
}
