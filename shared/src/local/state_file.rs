//! The local state store: one JSON document in the data directory. Every operation takes an
//! exclusive lock on `state.lock` (so several `capsule-sync` processes are safe), reads the
//! document, applies the change and writes it back by atomic rename (so a crash never leaves
//! a torn file). A corrupt file is reported, never overwritten.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Duration;

use async_trait::async_trait;
use chrono::Utc;
use serde::{Deserialize, Serialize};

use crate::integration::Integration;
use crate::integration::RunId;
use crate::ports::{Bookmark, Checkpoint, DispatchRecord, Lease, RunState, StateStore, TableRunRecord};
use crate::{Result, SyncError};

/// Run records kept in the file; older ones are dropped.
const MAX_RUN_RECORDS: usize = 10_000;
const FORMAT_VERSION: u32 = 1;

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
}

fn key(integration: &str, table: &str) -> String {
    format!("{integration}/{table}")
}

/// `state.json` (and `state.lock`) in a data directory.
#[derive(Debug, Clone)]
pub struct StateFile {
    path: PathBuf,
}

impl StateFile {
    pub fn new(data_dir: &Path) -> StateFile {
        StateFile { path: data_dir.join("state.json") }
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
        let path = self.path.clone();
        tokio::task::spawn_blocking(move || transact_blocking(&path, write, f))
            .await
            .map_err(|e| SyncError::Internal(format!("state file task failed: {e}")))?
    }
}

fn state_err(what: &str, path: &Path, e: impl std::fmt::Display) -> SyncError {
    SyncError::State(format!("{what} {}: {e}", path.display()))
}

fn transact_blocking<R>(path: &Path, write: bool, f: impl FnOnce(&mut StateDoc) -> Result<R>) -> Result<R> {
    let dir = path.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir).map_err(|e| state_err("creating", dir, e))?;
    let lock_path = path.with_extension("lock");
    let lock = File::options()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&lock_path)
        .map_err(|e| state_err("opening", &lock_path, e))?;
    lock.lock().map_err(|e| state_err("locking", &lock_path, e))?;

    let mut doc = match std::fs::read(path) {
        Ok(bytes) => serde_json::from_slice::<StateDoc>(&bytes)
            .map_err(|e| state_err("the state file is corrupt (fix or move it away; it was not changed):", path, e))?,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            StateDoc { version: FORMAT_VERSION, ..Default::default() }
        }
        Err(e) => return Err(state_err("reading", path, e)),
    };
    if doc.version > FORMAT_VERSION {
        return Err(state_err("written by a newer capsule-sync (format version too new):", path, doc.version));
    }
    let out = f(&mut doc)?;
    if write {
        doc.version = FORMAT_VERSION;
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
    doc.leases.get(&key(&lease.integration, &lease.table)).is_some_and(|l| l.owner == lease.owner)
}

fn lease_lost(lease: &Lease) -> SyncError {
    SyncError::State(format!(
        "the lease on {}/{} is no longer held by {} (it expired and another run took it); nothing was committed",
        lease.integration, lease.table, lease.owner
    ))
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
            if doc.integrations.contains_key(&integration.name) {
                return Err(SyncError::Config(format!("an integration named `{}` already exists", integration.name)));
            }
            doc.integrations.insert(integration.name.clone(), integration);
            Ok(())
        })
        .await
    }

    async fn update_integration(&self, integration: &Integration) -> Result<()> {
        let integration = integration.clone();
        self.transact(true, move |doc| match doc.integrations.get_mut(&integration.name) {
            Some(existing) => {
                *existing = integration;
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

    async fn acquire_lease(&self, integration: &str, table: &str, owner: &str, ttl: Duration) -> Result<Lease> {
        let lease = Lease {
            integration: integration.to_string(),
            table: table.to_string(),
            owner: owner.to_string(),
            expires_at: Utc::now() + chrono::Duration::from_std(ttl).unwrap_or(chrono::Duration::hours(1)),
        };
        self.transact(true, move |doc| {
            let k = key(&lease.integration, &lease.table);
            if let Some(held) = doc.leases.get(&k)
                && held.owner != lease.owner
                && held.expires_at > Utc::now()
            {
                return Err(SyncError::LeaseHeld {
                    integration: lease.integration.clone(),
                    table: lease.table.clone(),
                    holder: held.owner.clone(),
                    until: held.expires_at.to_rfc3339(),
                });
            }
            doc.leases.insert(k, lease.clone());
            Ok(lease)
        })
        .await
    }

    async fn commit(&self, lease: &Lease, bookmark: &Bookmark, record: &TableRunRecord) -> Result<()> {
        let (lease, bookmark, record) = (lease.clone(), bookmark.clone(), record.clone());
        self.transact(true, move |doc| {
            if !lease_is_held(doc, &lease) {
                return Err(lease_lost(&lease));
            }
            let k = key(&lease.integration, &lease.table);
            doc.bookmarks.insert(k.clone(), bookmark);
            doc.leases.remove(&k);
            doc.checkpoints.remove(&k);
            push_final(doc, record);
            Ok(())
        })
        .await
    }

    async fn record_failure(&self, lease: &Lease, record: &TableRunRecord) -> Result<()> {
        let (lease, record) = (lease.clone(), record.clone());
        self.transact(true, move |doc| {
            if lease_is_held(doc, &lease) {
                let k = key(&lease.integration, &lease.table);
                doc.leases.remove(&k);
                doc.checkpoints.remove(&k);
            }
            push_final(doc, record);
            Ok(())
        })
        .await
    }

    async fn record_run(&self, record: &TableRunRecord) -> Result<()> {
        let record = record.clone();
        self.transact(true, move |doc| {
            doc.runs.push(record);
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

    async fn save_checkpoint(&self, lease: &Lease, checkpoint: &Checkpoint, record: &TableRunRecord) -> Result<()> {
        let (lease, checkpoint, record) = (lease.clone(), checkpoint.clone(), record.clone());
        self.transact(true, move |doc| {
            if !lease_is_held(doc, &lease) {
                return Err(lease_lost(&lease));
            }
            doc.checkpoints.insert(key(&lease.integration, &lease.table), checkpoint);
            push_final(doc, record);
            Ok(())
        })
        .await
    }

    async fn checkpoint(&self, integration: &str, table: &str, run_id: &RunId) -> Result<Option<Checkpoint>> {
        let (k, run_id) = (key(integration, table), run_id.clone());
        self.transact(false, move |doc| Ok(doc.checkpoints.get(&k).filter(|c| c.run_id == run_id).cloned())).await
    }

    async fn record_dispatch(&self, dispatch: &DispatchRecord) -> Result<()> {
        let dispatch = dispatch.clone();
        self.transact(true, move |doc| {
            doc.dispatches.push(dispatch);
            Ok(())
        })
        .await
    }

    async fn last_dispatch(&self, integration: &str) -> Result<Option<DispatchRecord>> {
        let integration = integration.to_string();
        self.transact(false, move |doc| Ok(doc.dispatches.iter().rev().find(|d| d.integration == integration).cloned()))
            .await
    }
}
