//! Runs one table of one integration: lease → bookmark → page and write → manifest → commit.
//!
//! The commit protocol: the bookmark moves only after every part file and the (pending) manifest
//! are durable, only while this run still holds the lease, and only from the bookmark generation
//! the run started from; then the manifest is published for loaders. On failure nothing moves,
//! the attempt's manifests and parts are deleted, and a retry of the same run id writes the same
//! keys (stale keys of an earlier attempt are removed when the retry commits), so retries never
//! duplicate files. A commit whose answer is lost is confirmed against the stored bookmark.
//!
//! Near a deadline (Lambda's time limit), or when the token's rate-limit window is spent for
//! longer than the client waits in place, a run finishes its current part, saves a checkpoint
//! and ends as `continued`; the continuation (same run id, same lease owner, the next
//! invocation number) resumes at the cursor. Who may start, renew, resume and take over is
//! [`crate::lifecycle`]'s business.

mod fetch;
pub mod recent;
pub(crate) mod row;
mod snapshot;

mod commit;
mod local_dispatch;
mod manifest;
mod read;
mod start;

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use chrono::{DateTime, Utc};

pub(crate) use fetch::Extracted;
pub use row::coerce;
pub(crate) use row::{RowBuilder, matches_all};

use crate::lifecycle::{self, Invocation};
use crate::output::{self, WriterOptions};
use capsule_client::CapsuleClient;
use capsule_core::SyncError;
use capsule_core::catalog::TableSpec;
use capsule_core::integration::{Integration, RunId};
use capsule_core::manifest::RunManifest;
use capsule_core::observe::Event;
use capsule_core::ports::{ObjectSink, RunState, StateStore, TableRunRecord};
use capsule_core::progress::ActivityFn;
use capsule_core::runlog::RunLog;
use commit::*;
pub use local_dispatch::{LocalDispatch, run_tables};
use manifest::*;
use read::*;
use start::*;

/// The adapters a run writes through.
#[derive(Clone, Copy)]
pub struct RunPorts<'a> {
    pub state: &'a dyn StateStore,
    pub sink: &'a dyn ObjectSink,
}

/// A lease lasts this long unless renewed; the heartbeat renews it every third of it. A run
/// whose process died is taken over after this (locally at once, when its pid is gone).
pub const DEFAULT_LEASE_TTL: Duration = Duration::from_secs(300);

/// How long a parked lease waits for its continuation unless configured: Lambda keeps an
/// asynchronous event queued for up to six hours (its maximum event age), and a newer run must
/// not take the table from a run whose continuation is still on its way.
pub(crate) const DEFAULT_PARKED_HOLD: Duration = Duration::from_secs(6 * 3600);

/// Knobs of a table run that aren't integration settings.
#[derive(Debug, Clone, Copy)]
pub struct RunOptions {
    pub writer: WriterOptions,
    /// How long a lease lasts before another run may take it over.
    pub lease_ttl: Duration,
    /// How long a parked lease (and its checkpoint) waits for the continuation past `not_before`.
    pub parked_hold: Duration,
    /// How long past its kill time an invocation's lease may last (clock skew between hosts).
    pub kill_grace: Duration,
}

impl Default for RunOptions {
    fn default() -> Self {
        RunOptions {
            writer: WriterOptions::default(),
            lease_ttl: DEFAULT_LEASE_TTL,
            parked_hold: DEFAULT_PARKED_HOLD,
            kill_grace: Duration::from_secs(5),
        }
    }
}

pub use capsule_core::progress::TablesProgress;

/// One table run to do.
pub struct TableRun<'a> {
    pub client: &'a CapsuleClient,
    pub deps: RunPorts<'a>,
    pub integration: &'a Integration,
    pub table: &'static TableSpec,
    pub run_id: &'a RunId,
    pub options: RunOptions,
    /// Told what the run is doing (pages read, retries, waits), for a live view.
    pub progress: Option<Arc<ActivityFn>>,
    /// Checkpoint and stop once this instant passes (between pages); None runs to the end.
    pub deadline: Option<Instant>,
    /// When the runtime kills this invocation (Lambda's deadline): no lease outlives it, and no
    /// wait is slept in place past the working `deadline`.
    pub kill_at: Option<DateTime<Utc>>,
    /// The run's first invocation, or a continuation from its checkpoint.
    pub invocation: Invocation,
}

/// What a table run did. `error` is set when `record.state` is failed (or skipped).
#[derive(Debug)]
pub struct TableRunOutcome {
    pub record: TableRunRecord,
    pub manifest: Option<RunManifest>,
    pub error: Option<SyncError>,
}

impl TableRun<'_> {
    /// Runs the table. Never panics on bad input; every failure ends in a failed run record.
    /// The run's process log is saved with it, whatever the outcome — except for a refused
    /// duplicate, which writes nothing at all.
    pub async fn run(self) -> TableRunOutcome {
        let log = RunLog::new();
        let (outcome, invocation) = self.run_logged(&log).await;
        if matches!(outcome.error, Some(SyncError::Superseded(_))) {
            return outcome;
        }
        let key = output::log_key(&self.integration.name, self.table.name, self.run_id, invocation);
        if let Err(e) = self.deps.sink.put(&key, Bytes::from(log.to_ndjson())).await {
            tracing::warn!(event = Event::RunLogNotSaved.as_str(), %key, error = %e);
        }
        outcome
    }

    async fn run_logged(&self, log: &RunLog) -> (TableRunOutcome, u32) {
        let mut client = self.client.for_run_logged(log.clone());
        if let Some(progress) = &self.progress {
            client = client.with_activity(progress.clone());
        }
        let mut record =
            TableRunRecord::new(&self.integration.name, self.table.name, self.run_id, RunState::Running, Utc::now());
        let start = match self.start(log).await {
            Ok(start) => start,
            Err(error) => return (self.not_started(record, error, log).await, 1),
        };
        let seq = start.seq();
        record.started_at = start.started;
        self.record_running(&record, seq, log).await;
        let work = self.extract_and_publish(&client, &start, &mut record, log);
        let result = lifecycle::with_heartbeat(self.deps.state, &start.lease, self.lease_timing(), work).await;
        record.requests = add(start.earlier_requests(), client.stats());
        record.finished_at = Some(Utc::now());
        let outcome = match result {
            Ok(Published::Done(manifest, base)) => self.commit(&start, record, *manifest, base, log).await,
            Ok(Published::Parked(checkpoint)) => self.park(&start, record, *checkpoint, log).await,
            Err(error) => self.fail(&start, record, error, log).await,
        };
        (outcome, seq)
    }
}
