//! The engine's ports: small traits with a local adapter each (in `capsule-local`) and an AWS
//! adapter each (DynamoDB, S3, Secrets Manager). And the records that cross them.

mod checkpoint;
mod lease;
mod records;

use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use chrono::{DateTime, Utc};
use secrecy::SecretString;

use crate::Result;
use crate::budget::RateBudgetStore;
use crate::events::TableSyncEvent;
use crate::integration::{Integration, RunId};

pub use checkpoint::*;
pub use lease::*;
pub use records::*;

/// Supplies the Capsule token of one integration.
#[async_trait]
pub trait TokenProvider: Send + Sync {
    /// The current token (providers may cache it until it expires).
    async fn token(&self) -> Result<SecretString>;
    /// The token read again, past any cache (OAuth: refreshed), after Capsule refused the last one.
    async fn refresh(&self) -> Result<SecretString> {
        self.token().await
    }
}

/// Where output objects go (a directory, an S3 bucket). Keys use `/` separators.
#[async_trait]
pub trait ObjectSink: Send + Sync {
    /// Starts streaming an object; nothing is visible at `key` until [`ObjectUpload::finish`].
    async fn begin(&self, key: &str) -> Result<Box<dyn ObjectUpload>>;
    /// Writes a small object at once (manifests, schemas).
    async fn put(&self, key: &str, body: Bytes) -> Result<()>;
    /// Reads a whole (small) object; None when absent.
    async fn get(&self, key: &str) -> Result<Option<Bytes>>;
    /// Reads bytes `range` of an object (fewer at its end), so a large object is read a slice at
    /// a time in flat memory; None when absent. `range` must be within the object's size.
    async fn get_range(&self, key: &str, range: std::ops::Range<u64>) -> Result<Option<Bytes>>;
    /// Keys under a prefix.
    async fn list(&self, prefix: &str) -> Result<Vec<String>>;
    /// Removes an object; removing a missing one is not an error.
    async fn delete(&self, key: &str) -> Result<()>;
    /// Removes everything under a folder-like prefix (ending in `/`), unfinished objects included
    /// where the sink can see them (a killed run's `.partial` files locally; S3 keeps incomplete
    /// multipart uploads invisible and its lifecycle rule aborts them).
    async fn remove_prefix(&self, prefix: &str) -> Result<()> {
        for key in self.list(prefix).await? {
            self.delete(&key).await?;
        }
        Ok(())
    }
    /// Where `key` lives, for people (a path, an `s3://` URL).
    fn locate(&self, key: &str) -> String;
}

/// One object being written.
#[async_trait]
pub trait ObjectUpload: Send {
    async fn write(&mut self, chunk: Bytes) -> Result<()>;
    /// Makes the object durable and visible at its key (replacing any previous one).
    async fn finish(self: Box<Self>) -> Result<()>;
    /// Drops everything written; the key is left as it was.
    async fn abort(self: Box<Self>);
}

/// Integrations, bookmarks, leases, checkpoints, run history and the tokens' rate-limit budgets.
/// Every change that could race is conditional.
///
/// A lease belongs to a run (`owner`) and, while an invocation of the run works, to that
/// invocation (`invocation`, its sequence number): every write of a run is fenced on both, so a
/// duplicate or stale invocation can write nothing. Between invocations the lease is *parked*
/// (`invocation` 0) for the one numbered `next`.
#[async_trait]
pub trait StateStore: RateBudgetStore + Send + Sync {
    async fn get_integration(&self, name: &str) -> Result<Option<Integration>>;
    /// Fails if an integration of that name exists.
    async fn create_integration(&self, integration: &Integration) -> Result<()>;
    /// Fails if it does not exist.
    async fn update_integration(&self, integration: &Integration) -> Result<()>;
    async fn list_integrations(&self) -> Result<Vec<Integration>>;
    /// Removes the integration and its bookmarks and leases (run history is kept for audit).
    /// Returns whether it existed.
    async fn delete_integration(&self, name: &str) -> Result<bool>;

    async fn bookmark(&self, integration: &str, table: &str) -> Result<Option<Bookmark>>;

    /// Forgets a table's bookmark: its next run starts from the integration's history start
    /// (a backfill).
    async fn delete_bookmark(&self, integration: &str, table: &str) -> Result<()>;

    /// Takes the lease `wanted` describes for a run's first invocation, unless another run holds
    /// an unexpired one ([`SyncError::LeaseHeld`]). A lease whose holder is gone (expired, or
    /// locally a process that no longer exists) is taken over and returned as `displaced`.
    async fn acquire_lease(&self, wanted: &Lease) -> Result<LeaseGrant>;

    /// Takes a parked lease for invocation `seq` of the run `owner`: only if the lease waits for
    /// exactly that invocation (or its holder stopped renewing it). Anything else is a duplicate
    /// or stale invocation: [`SyncError::Superseded`], nothing written.
    async fn resume_lease(
        &self,
        integration: &str,
        table: &str,
        owner: &LeaseOwner,
        seq: u32,
        ttl: Duration,
    ) -> Result<Lease>;

    /// Extends a held lease to `lease.expires_at` (the heartbeat); fails if it is no longer held.
    async fn renew_lease(&self, lease: &Lease) -> Result<()>;

    /// Gives a held lease up without a record (a first invocation that found its run already
    /// committed); nothing happens if it is no longer held.
    async fn release_lease(&self, lease: &Lease) -> Result<()>;

    /// Success: stores the bookmark and the run record and releases the lease — all only if
    /// `lease` is still held ([`Lease::lost`] otherwise) and the stored bookmark is still `base`,
    /// the one the run started from ([`SyncError::BookmarkMoved`] otherwise: an edit dropped it
    /// for a backfill). Nothing changes when either fails. Idempotent: committing again what
    /// was committed (a transaction retried after it succeeded) succeeds.
    async fn commit(
        &self,
        lease: &Lease,
        bookmark: &Bookmark,
        base: BookmarkBase,
        record: &TableRunRecord,
    ) -> Result<()>;

    /// Failure: stores the run record. With `retry`, the checkpoint is kept (as given) and the lease
    /// parked for a retry of the same invocation; without, the lease is released and the
    /// checkpoint dropped. The bookmark is untouched either way.
    async fn record_failure(&self, lease: &Lease, record: &TableRunRecord, retry: Option<&Parking>) -> Result<()>;

    /// Stores a run record that holds no lease (a skipped run).
    async fn record_run(&self, record: &TableRunRecord) -> Result<()>;

    /// Run records, newest first; all integrations when `integration` is None.
    async fn runs(&self, integration: Option<&str>, limit: usize) -> Result<Vec<TableRunRecord>>;

    /// Saves where a run stopped (near its time limit, or waiting for the rate-limit window) and
    /// parks the lease for the next invocation — only while `lease` is held — and records the
    /// `continued` run record.
    async fn save_checkpoint(&self, lease: &Lease, parking: &Parking, record: &TableRunRecord) -> Result<()>;

    /// The checkpoint of a run, if it was continued.
    async fn checkpoint(&self, integration: &str, table: &str, run_id: &RunId) -> Result<Option<Checkpoint>>;

    /// Drops a table's checkpoint (of a run that was taken over).
    async fn discard_checkpoint(&self, integration: &str, table: &str) -> Result<()>;

    /// Tables of an integration with a lease or a checkpoint: runs in progress or waiting.
    async fn table_states(&self, integration: &str) -> Result<Vec<TableState>>;

    /// Takes the lock `name` of an integration for `holder` until `ttl` passes, unless another
    /// holder's unexpired lock stands (then false). Taking it again as its holder extends it.
    async fn try_lock(&self, integration: &str, name: &str, holder: &str, ttl: Duration) -> Result<bool>;

    /// Releases the lock if `holder` still holds it.
    async fn unlock(&self, integration: &str, name: &str, holder: &str) -> Result<()>;

    /// Records a scheduled run's dispatch; a record of the same run replaces the earlier one.
    /// A manual run's with tables still to send makes the integration due now in the due index
    /// ([`DispatchRecord::needs_a_look`]).
    async fn record_dispatch(&self, dispatch: &DispatchRecord) -> Result<()>;

    /// The latest dispatch of an integration.
    async fn last_dispatch(&self, integration: &str) -> Result<Option<DispatchRecord>>;

    /// An integration's dispatches, newest first (what the schedule started).
    async fn dispatches(&self, integration: &str, limit: usize) -> Result<Vec<DispatchRecord>>;

    /// The due index: integrations whose wake time is at or before `now`, earliest first, at
    /// most `limit` — one query, however many integrations are registered (the engine's `due` module).
    async fn due(&self, now: DateTime<Utc>, limit: usize) -> Result<Vec<Wake>>;

    /// An integration's entry in the due index (None: not registered, or nothing to look at).
    async fn wake(&self, integration: &str) -> Result<Option<Wake>>;

    /// Brings an integration's wake time forward to `at`; a wake already at or before it stays.
    /// The stores call it themselves from every write that gives the scheduler something to do
    /// (registering or editing an integration, taking or parking a lease).
    async fn wake_by(&self, integration: &str, at: DateTime<Utc>) -> Result<()>;

    /// Sets the wake time the scheduler computed after looking at the integration (None: nothing
    /// to look at until something changes, e.g. paused), only if its entry is still the version
    /// `seen`: a change in between brought it forward, and it stays so (false is returned).
    async fn settle_wake(&self, integration: &str, at: Option<DateTime<Utc>>, seen: u64) -> Result<bool>;
}

/// Starts table runs somewhere else (another Lambda invocation; in-process tasks locally).
#[async_trait]
pub trait Dispatcher: Send + Sync {
    async fn dispatch(&self, event: &TableSyncEvent) -> Result<()>;
}
