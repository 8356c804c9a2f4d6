//! The local state store: one JSON document in the data directory. Every operation takes an
//! exclusive lock on `state.lock` (so several `capsule-sync` processes are safe), reads the
//! document, applies the change and writes it back by atomic rename (so a crash never leaves
//! a torn file). A corrupt file is reported, never overwritten.
//!
//! The tokens' rate-limit budgets live in `rate-budgets.json` beside it, under their own lock:
//! they change on every request, and a lost update there costs at most one request's count, so
//! they are written without fsync and never make `state.json` rewrite itself per request.
//!
//! Leases record the holding process (`host:pid`): a lease whose process is gone from this host
//! (kill -9, OOM, a closed laptop) is taken over at once instead of after it expires.
//!
//! Every file here is 0600 (temp files are created so, then renamed into place).

use std::collections::BTreeMap;
use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::FileModes;
use capsule_core::budget::{BudgetChange, RateBudget, RateBudgetStore};
use capsule_core::integration::Integration;
use capsule_core::integration::RunId;
use capsule_core::observe::Event;
use capsule_core::ports::{
    Bookmark, BookmarkBase, Checkpoint, DispatchRecord, Lease, LeaseGrant, LeaseOwner, Parking, RunState, StateStore,
    TableRunRecord, TableState, Wake, not_waiting_for,
};
use capsule_core::process::ProcessId;
use capsule_core::stored::{self, Kind, SCHEMA_VERSION};
use capsule_core::{Result, SyncError};

/// Run records kept in the file; older ones are dropped.
const MAX_RUN_RECORDS: usize = 10_000;

#[derive(Debug, Default, Serialize, Deserialize)]
struct StateDoc {
    version: u32,
    #[serde(default)]
    integrations: BTreeMap<String, Integration>,
    /// Keyed `integration/table`.
    #[serde(default)]
    bookmarks: BTreeMap<String, Bookmark>,
    #[serde(default)]
    leases: BTreeMap<String, Lease>,
    /// Oldest first.
    #[serde(default)]
    runs: Vec<TableRunRecord>,
    /// Keyed `integration/table`: at most one paused run per table (it holds the lease).
    #[serde(default)]
    checkpoints: BTreeMap<String, Checkpoint>,
    /// Oldest first.
    #[serde(default)]
    dispatches: Vec<DispatchRecord>,
    /// Keyed `integration/name`: holder and expiry.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    locks: BTreeMap<String, (String, DateTime<Utc>)>,
    /// The due index, by integration (the engine's `due` module). None in a file written before it
    /// existed: every integration is then due at once, and the scheduler settles each.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    wakes: Option<BTreeMap<String, Wake>>,
}

impl StateDoc {
    /// The due index, built on first use for a file written before it existed.
    fn wakes(&mut self) -> &mut BTreeMap<String, Wake> {
        let integrations = &self.integrations;
        self.wakes.get_or_insert_with(|| {
            // Due since before any query's `now`: the first one returns them all.
            let long_ago = DateTime::UNIX_EPOCH;
            integrations
                .keys()
                .map(|name| (name.clone(), Wake { integration: name.clone(), at: Some(long_ago), version: 1 }))
                .collect()
        })
    }

    /// Brings a registered integration's wake forward to `at` (see [`StateStore::wake_by`]).
    fn wake_by(&mut self, integration: &str, at: DateTime<Utc>) {
        if !self.integrations.contains_key(integration) {
            return;
        }
        let wake = self.wakes().entry(integration.to_string()).or_insert_with(|| Wake {
            integration: integration.to_string(),
            at: None,
            version: 0,
        });
        if wake.at.is_none_or(|current| at < current) {
            wake.at = Some(at);
            wake.version += 1;
        }
    }
}

fn key(integration: &str, table: &str) -> String {
    format!("{integration}/{table}")
}

/// `state.json` (and `state.lock`) in a data directory.
#[derive(Debug, Clone)]
pub struct StateFile {
    path: PathBuf,
    budgets: PathBuf,
    /// Run and dispatch records older than this are dropped when the file is written.
    history: Duration,
}

impl StateFile {
    pub fn new(data_dir: &Path) -> StateFile {
        StateFile {
            path: data_dir.join("state.json"),
            budgets: data_dir.join("rate-budgets.json"),
            history: capsule_core::ports::DEFAULT_HISTORY,
        }
    }

    /// Keeps run and dispatch records this long.
    pub fn with_history(self, history: Duration) -> StateFile {
        StateFile { history, ..self }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Runs `f` on the document under the lock; writes it back when `f` succeeds and `write`.
    async fn transact<R: Send + 'static>(
        &self,
        write: bool,
        f: impl FnOnce(&mut StateDoc) -> Result<R> + Send + 'static,
    ) -> Result<R> {
        let (path, history) = (self.path.clone(), self.history);
        tokio::task::spawn_blocking(move || transact_blocking(&path, write, history, f))
            .await
            .map_err(|e| SyncError::Internal(format!("state file task failed: {e}")))?
    }
}

fn state_err(what: &str, path: &Path, e: impl std::fmt::Display) -> SyncError {
    SyncError::State(format!("{what} {}: {e}", path.display()))
}

/// Takes the exclusive lock beside `path` (`<name>.lock`), creating the directory if needed.
fn lock_beside(path: &Path) -> Result<File> {
    let dir = path.parent().unwrap_or(Path::new("."));
    FileModes::default().create_dir_all(dir).map_err(|e| state_err("creating", dir, e))?;
    let lock_path = path.with_extension("lock");
    let mut options = File::options();
    options.create(true).truncate(false).write(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let lock = options.open(&lock_path).map_err(|e| state_err("opening", &lock_path, e))?;
    lock.lock().map_err(|e| state_err("locking", &lock_path, e))?;
    Ok(lock)
}

/// The file's documents, brought up to date from the schema version the file was written with
/// (`capsule_core::stored`: the one place migrations live).
fn decode(path: &Path, bytes: &[u8]) -> Result<StateDoc> {
    let corrupt = |e: &dyn std::fmt::Display| {
        state_err("the state file is corrupt (fix or move it away; it was not changed):", path, e)
    };
    #[derive(serde::Deserialize)]
    struct Version {
        version: u32,
    }
    let Version { version } = serde_json::from_slice(bytes).map_err(|e| corrupt(&e))?;
    stored::check_version(&format!("the state file {}", path.display()), version)?;
    if version == SCHEMA_VERSION {
        // Nothing to upgrade: the whole file (up to 10,000 run records) read once, typed.
        return serde_json::from_slice(bytes).map_err(|e| corrupt(&e));
    }
    let mut file: serde_json::Value = serde_json::from_slice(bytes).map_err(|e| corrupt(&e))?;
    for (field, kind) in DOCUMENTS {
        match file.get_mut(field) {
            Some(serde_json::Value::Object(docs)) => docs.values_mut().for_each(|d| stored::upgrade(kind, d, version)),
            Some(serde_json::Value::Array(docs)) => docs.iter_mut().for_each(|d| stored::upgrade(kind, d, version)),
            _ => {}
        }
    }
    serde_json::from_value(file).map_err(|e| corrupt(&e))
}

/// The fields of the file that hold stored documents, and their kind.
const DOCUMENTS: [(&str, Kind); 6] = [
    ("integrations", Kind::Integration),
    ("bookmarks", Kind::Bookmark),
    ("leases", Kind::Lease),
    ("checkpoints", Kind::Checkpoint),
    ("runs", Kind::RunRecord),
    ("dispatches", Kind::Dispatch),
];

/// Reads (and for `write`, changes and replaces) the document. Only writers take the lock:
/// the file is replaced by an atomic rename, so a reader sees the old or the new one whole and
/// never waits for a writer.
fn transact_blocking<R>(
    path: &Path,
    write: bool,
    history: Duration,
    f: impl FnOnce(&mut StateDoc) -> Result<R>,
) -> Result<R> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let lock = if write { Some(lock_beside(path)?) } else { None };

    let mut doc = match std::fs::read(path) {
        Ok(bytes) => decode(path, &bytes)?,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            StateDoc { version: SCHEMA_VERSION, ..Default::default() }
        }
        Err(e) => return Err(state_err("reading", path, e)),
    };
    let out = f(&mut doc)?;
    if write {
        doc.version = SCHEMA_VERSION;
        drop_old_history(&mut doc, history);
        if doc.runs.len() > MAX_RUN_RECORDS {
            let excess = doc.runs.len() - MAX_RUN_RECORDS;
            doc.runs.drain(..excess);
        }
        if doc.dispatches.len() > MAX_RUN_RECORDS {
            let excess = doc.dispatches.len() - MAX_RUN_RECORDS;
            doc.dispatches.drain(..excess);
        }
        let mut tmp = tempfile::NamedTempFile::new_in(dir).map_err(|e| state_err("creating a temp file in", dir, e))?;
        serde_json::to_writer_pretty(&mut tmp, &doc).map_err(|e| state_err("encoding", path, e))?;
        tmp.write_all(b"\n").map_err(|e| state_err("writing", path, e))?;
        tmp.as_file().sync_all().map_err(|e| state_err("syncing", path, e))?;
        tmp.persist(path).map_err(|e| state_err("replacing", path, e.error))?;
    }
    drop(lock);
    Ok(out)
}

/// Run records that ended longer than `history` ago, and dispatches as old but each
/// integration's latest (its schedule counts from it), go.
fn drop_old_history(doc: &mut StateDoc, history: Duration) {
    let cutoff = Utc::now() - chrono::Duration::from_std(history).unwrap_or(chrono::Duration::MAX);
    doc.runs.retain(|r| r.state == RunState::Running || r.finished_at.unwrap_or(r.started_at) >= cutoff);
    let mut latest: BTreeMap<String, chrono::DateTime<Utc>> = BTreeMap::new();
    for d in &doc.dispatches {
        let at = latest.entry(d.integration.clone()).or_insert(d.dispatched_at);
        *at = (*at).max(d.dispatched_at);
    }
    doc.dispatches.retain(|d| d.dispatched_at >= cutoff || latest.get(&d.integration) == Some(&d.dispatched_at));
}

/// A run's final record replaces its `running` one.
fn push_final(doc: &mut StateDoc, record: TableRunRecord) {
    doc.runs.retain(|r| {
        !(r.state == RunState::Running
            && r.run_id == record.run_id
            && r.table == record.table
            && r.integration == record.integration)
    });
    doc.runs.push(record);
}

fn lease_is_held(doc: &StateDoc, lease: &Lease) -> bool {
    doc.leases.get(&key(&lease.integration, &lease.table)).is_some_and(|l| l.same_holder(lease))
}

/// Stores the checkpoint and parks the lease for the invocation that resumes from it.
fn park(doc: &mut StateDoc, lease: &Lease, parking: Parking) {
    let k = key(&lease.integration, &lease.table);
    doc.leases.insert(k.clone(), lease.parked(&parking));
    doc.wake_by(&lease.integration, parking.checkpoint.not_before.unwrap_or_else(Utc::now));
    doc.checkpoints.insert(k, parking.checkpoint);
}

/// Rate-limit budgets by key: read, changed and written back under their own lock.
fn update_budget_blocking(path: &Path, key: &str, change: BudgetChange<'_>) -> Result<Option<RateBudget>> {
    let _lock = lock_beside(path)?;
    let mut budgets: BTreeMap<String, RateBudget> = match std::fs::read(path) {
        Ok(bytes) => serde_json::from_slice(&bytes).unwrap_or_else(|e| {
            // Only counts: start again rather than stop syncing.
            tracing::warn!(event = Event::RateBudgetFileReset.as_str(), path = %path.display(), error = %e);
            BTreeMap::new()
        }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => BTreeMap::new(),
        Err(e) => return Err(state_err("reading", path, e)),
    };
    if let Some(next) = change(budgets.get(key)) {
        budgets.insert(key.to_string(), next);
        let dir = path.parent().unwrap_or(Path::new("."));
        let mut tmp = tempfile::NamedTempFile::new_in(dir).map_err(|e| state_err("creating a temp file in", dir, e))?;
        serde_json::to_writer(&mut tmp, &budgets).map_err(|e| state_err("encoding", path, e))?;
        tmp.persist(path).map_err(|e| state_err("replacing", path, e.error))?;
    }
    Ok(budgets.get(key).cloned())
}

#[async_trait]
impl RateBudgetStore for StateFile {
    async fn update_budget(&self, key: &str, change: BudgetChange<'_>) -> Result<Option<RateBudget>> {
        // Called per request on a tiny file with no fsync: a sub-millisecond blocking section,
        // done in place (the change closure borrows, so it cannot move to a blocking task).
        update_budget_blocking(&self.budgets, key, change)
    }
}

#[async_trait]
impl StateStore for StateFile {
    async fn get_integration(&self, name: &str) -> Result<Option<Integration>> {
        let name = name.to_string();
        self.transact(false, move |doc| Ok(doc.integrations.get(&name).cloned())).await
    }

    async fn create_integration(&self, integration: &Integration) -> Result<()> {
        let integration = integration.clone();
        self.transact(true, move |doc| {
            if doc.integrations.contains_key(integration.name.as_str()) {
                return Err(SyncError::Config(format!("an integration named `{}` already exists", integration.name)));
            }
            let name = integration.name.to_string();
            doc.integrations.insert(name.clone(), integration);
            doc.wakes().remove(&name);
            doc.wake_by(&name, Utc::now());
            Ok(())
        })
        .await
    }

    async fn update_integration(&self, integration: &Integration) -> Result<()> {
        let integration = integration.clone();
        self.transact(true, move |doc| match doc.integrations.get_mut(integration.name.as_str()) {
            Some(existing) => {
                *existing = integration.clone();
                doc.wake_by(&integration.name, Utc::now());
                Ok(())
            }
            None => Err(SyncError::Config(format!("no integration named `{}`", integration.name))),
        })
        .await
    }

    async fn list_integrations(&self) -> Result<Vec<Integration>> {
        self.transact(false, |doc| Ok(doc.integrations.values().cloned().collect())).await
    }

    async fn delete_integration(&self, name: &str) -> Result<bool> {
        let name = name.to_string();
        self.transact(true, move |doc| {
            let prefix = format!("{name}/");
            doc.bookmarks.retain(|k, _| !k.starts_with(&prefix));
            doc.leases.retain(|k, _| !k.starts_with(&prefix));
            doc.checkpoints.retain(|k, _| !k.starts_with(&prefix));
            doc.wakes().remove(&name);
            Ok(doc.integrations.remove(&name).is_some())
        })
        .await
    }

    async fn bookmark(&self, integration: &str, table: &str) -> Result<Option<Bookmark>> {
        let k = key(integration, table);
        self.transact(false, move |doc| Ok(doc.bookmarks.get(&k).cloned())).await
    }

    async fn delete_bookmark(&self, integration: &str, table: &str) -> Result<()> {
        let k = key(integration, table);
        self.transact(true, move |doc| {
            doc.bookmarks.remove(&k);
            Ok(())
        })
        .await
    }

    async fn acquire_lease(&self, wanted: &Lease) -> Result<LeaseGrant> {
        let lease = Lease { process: Some(ProcessId::this()), ..wanted.clone() };
        self.transact(true, move |doc| {
            let k = key(&lease.integration, &lease.table);
            let displaced = match doc.leases.get(&k) {
                Some(held) if held.owner == lease.owner => None,
                Some(held) if !held.can_be_taken_over(Utc::now()) => {
                    return Err(SyncError::LeaseHeld {
                        integration: lease.integration.clone(),
                        table: lease.table.clone(),
                        holder: Some(held.owner.clone()),
                        until: Some(held.expires_at),
                    });
                }
                other => other.cloned(),
            };
            let lease = Lease { attempt: capsule_core::ports::attempt_after(displaced.as_ref(), &lease), ..lease };
            doc.leases.insert(k, lease.clone());
            doc.wake_by(&lease.integration, lease.expires_at);
            Ok(LeaseGrant { lease, displaced })
        })
        .await
    }

    async fn resume_lease(
        &self,
        integration: &str,
        table: &str,
        owner: &LeaseOwner,
        seq: u32,
        ttl: Duration,
    ) -> Result<Lease> {
        let (integration, table, owner) = (integration.to_string(), table.to_string(), owner.clone());
        let expires_at = capsule_core::from_now(ttl);
        self.transact(true, move |doc| {
            let lease = doc.leases.get_mut(&key(&integration, &table)).filter(|l| {
                l.owner == owner && l.next == seq && (l.invocation == 0 || l.can_be_taken_over(Utc::now()))
            });
            let Some(lease) = lease else { return Err(not_waiting_for(&integration, &table, &owner, seq)) };
            *lease = Lease { process: Some(ProcessId::this()), ..lease.resumed(seq, expires_at) };
            let lease = lease.clone();
            doc.wake_by(&integration, lease.expires_at);
            Ok(lease)
        })
        .await
    }

    async fn renew_lease(&self, lease: &Lease) -> Result<()> {
        let lease = lease.clone();
        self.transact(true, move |doc| {
            if !lease_is_held(doc, &lease) {
                return Err(lease.lost());
            }
            // The whole lease, as DynamoDB's put writes it (a takeover may move its T0), with the
            // holding process kept.
            if let Some(held) = doc.leases.get_mut(&key(&lease.integration, &lease.table)) {
                *held = Lease { process: held.process.clone(), ..lease };
            }
            Ok(())
        })
        .await
    }

    async fn release_lease(&self, lease: &Lease) -> Result<()> {
        let lease = lease.clone();
        self.transact(true, move |doc| {
            if lease_is_held(doc, &lease) {
                doc.leases.remove(&key(&lease.integration, &lease.table));
            }
            Ok(())
        })
        .await
    }

    async fn commit(
        &self,
        lease: &Lease,
        bookmark: &Bookmark,
        base: BookmarkBase,
        record: &TableRunRecord,
    ) -> Result<()> {
        let (lease, bookmark, record) = (lease.clone(), bookmark.clone(), record.clone());
        self.transact(true, move |doc| {
            let k = key(&lease.integration, &lease.table);
            if !lease_is_held(doc, &lease) {
                // Committed already (this same commit, done twice): nothing more to do.
                return if doc.bookmarks.get(&k) == Some(&bookmark) { Ok(()) } else { Err(lease.lost()) };
            }
            if !base.matches(doc.bookmarks.get(&k)) {
                return Err(base.moved(&lease.integration, &lease.table));
            }
            doc.bookmarks.insert(k.clone(), bookmark);
            doc.leases.remove(&k);
            doc.checkpoints.remove(&k);
            push_final(doc, record);
            Ok(())
        })
        .await
    }

    async fn record_failure(&self, lease: &Lease, record: &TableRunRecord, retry: Option<&Parking>) -> Result<()> {
        let (lease, record, retry) = (lease.clone(), record.clone(), retry.cloned());
        self.transact(true, move |doc| {
            if lease_is_held(doc, &lease) {
                match retry {
                    Some(parking) => park(doc, &lease, parking),
                    None => {
                        let k = key(&lease.integration, &lease.table);
                        doc.leases.remove(&k);
                        doc.checkpoints.remove(&k);
                    }
                }
            }
            push_final(doc, record);
            Ok(())
        })
        .await
    }

    async fn record_run(&self, record: &TableRunRecord) -> Result<()> {
        let record = record.clone();
        self.transact(true, move |doc| {
            push_final(doc, record);
            Ok(())
        })
        .await
    }

    async fn runs(&self, integration: Option<&str>, limit: usize) -> Result<Vec<TableRunRecord>> {
        let integration = integration.map(str::to_string);
        self.transact(false, move |doc| {
            Ok(doc
                .runs
                .iter()
                .rev()
                .filter(|r| integration.as_ref().is_none_or(|i| &r.integration == i))
                .take(limit)
                .cloned()
                .collect())
        })
        .await
    }

    async fn save_checkpoint(&self, lease: &Lease, parking: &Parking, record: &TableRunRecord) -> Result<()> {
        let (lease, parking, record) = (lease.clone(), parking.clone(), record.clone());
        self.transact(true, move |doc| {
            if !lease_is_held(doc, &lease) {
                return Err(lease.lost());
            }
            park(doc, &lease, parking);
            push_final(doc, record);
            Ok(())
        })
        .await
    }

    async fn checkpoint(&self, integration: &str, table: &str, run_id: &RunId) -> Result<Option<Checkpoint>> {
        let (k, run_id) = (key(integration, table), run_id.clone());
        self.transact(false, move |doc| Ok(doc.checkpoints.get(&k).filter(|c| c.run_id == run_id).cloned())).await
    }

    async fn discard_checkpoint(&self, integration: &str, table: &str) -> Result<()> {
        let k = key(integration, table);
        self.transact(true, move |doc| {
            doc.checkpoints.remove(&k);
            Ok(())
        })
        .await
    }

    async fn table_states(&self, integration: &str) -> Result<Vec<TableState>> {
        let prefix = format!("{integration}/");
        self.transact(false, move |doc| {
            let tables: std::collections::BTreeSet<&String> =
                doc.leases.keys().chain(doc.checkpoints.keys()).filter(|k| k.starts_with(&prefix)).collect();
            Ok(tables
                .into_iter()
                .map(|k| TableState {
                    table: k[prefix.len()..].to_string(),
                    lease: doc.leases.get(k).cloned(),
                    checkpoint: doc.checkpoints.get(k).cloned(),
                })
                .collect())
        })
        .await
    }

    async fn try_lock(&self, integration: &str, name: &str, holder: &str, ttl: Duration) -> Result<bool> {
        let (k, holder, until) = (key(integration, name), holder.to_string(), capsule_core::from_now(ttl));
        self.transact(true, move |doc| {
            let free = doc.locks.get(&k).is_none_or(|(h, expires)| *h == holder || *expires <= Utc::now());
            if free {
                doc.locks.insert(k, (holder, until));
            }
            Ok(free)
        })
        .await
    }

    async fn unlock(&self, integration: &str, name: &str, holder: &str) -> Result<()> {
        let (k, holder) = (key(integration, name), holder.to_string());
        self.transact(true, move |doc| {
            if doc.locks.get(&k).is_some_and(|(h, _)| *h == holder) {
                doc.locks.remove(&k);
            }
            Ok(())
        })
        .await
    }

    async fn record_dispatch(&self, dispatch: &DispatchRecord) -> Result<()> {
        let dispatch = dispatch.clone();
        self.transact(true, move |doc| {
            // The same run's record again (its pending tables dispatched since) replaces it.
            doc.dispatches.retain(|d| !(d.integration == dispatch.integration && d.run_id == dispatch.run_id));
            if dispatch.needs_a_look() {
                doc.wake_by(&dispatch.integration, Utc::now());
            }
            doc.dispatches.push(dispatch);
            Ok(())
        })
        .await
    }

    async fn dispatches(&self, integration: &str, limit: usize) -> Result<Vec<DispatchRecord>> {
        let integration = integration.to_string();
        self.transact(false, move |doc| {
            Ok(doc.dispatches.iter().rev().filter(|d| d.integration == integration).take(limit).cloned().collect())
        })
        .await
    }

    async fn last_dispatch(&self, integration: &str) -> Result<Option<DispatchRecord>> {
        let integration = integration.to_string();
        self.transact(false, move |doc| Ok(doc.dispatches.iter().rev().find(|d| d.integration == integration).cloned()))
            .await
    }

    async fn due(&self, now: DateTime<Utc>, limit: usize) -> Result<Vec<Wake>> {
        self.transact(false, move |doc| {
            let mut due: Vec<Wake> =
                doc.wakes().values().filter(|w| w.at.is_some_and(|at| at <= now)).cloned().collect();
            due.sort_by(|a, b| (a.at, &a.integration).cmp(&(b.at, &b.integration)));
            due.truncate(limit);
            Ok(due)
        })
        .await
    }

    async fn wake(&self, integration: &str) -> Result<Option<Wake>> {
        let integration = integration.to_string();
        self.transact(false, move |doc| Ok(doc.wakes().get(&integration).cloned())).await
    }

    async fn wake_by(&self, integration: &str, at: DateTime<Utc>) -> Result<()> {
        let integration = integration.to_string();
        self.transact(true, move |doc| {
            doc.wake_by(&integration, at);
            Ok(())
        })
        .await
    }

    async fn settle_wake(&self, integration: &str, at: Option<DateTime<Utc>>, seen: u64) -> Result<bool> {
        let integration = integration.to_string();
        self.transact(true, move |doc| {
            let Some(wake) = doc.wakes().get_mut(&integration).filter(|w| w.version == seen) else { return Ok(false) };
            wake.at = at;
            wake.version += 1;
            Ok(true)
        })
        .await
    }
}
