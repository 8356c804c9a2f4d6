//! What an operator changes on an integration, decided here for every front end (the CLI
//! parses, calls one of these, and prints): an edit's new settings, its change log and the
//! backfills it orders; pause and resume; and the files a purge removes.

use std::collections::{BTreeMap, BTreeSet};

use chrono::{DateTime, Utc};

use crate::output;
use capsule_core::catalog::{self, Replication};
use capsule_core::integration::{
    FanOutMode, Integration, IntegrationStatus, RecentWindow, TableSelection, TokenSource,
};
use capsule_core::ports::{ObjectSink, RunState, StateStore};
use capsule_core::{Result, SyncError};

/// The settings an edit changes; `None` (or empty) leaves one as it is.
#[derive(Debug, Clone, Default)]
pub struct Edit {
    /// The tables, replacing the selection.
    pub tables: Option<Vec<String>>,
    pub add_tables: Vec<String>,
    pub remove_tables: Vec<String>,
    /// Columns per table, replacing that table's selection.
    pub columns: BTreeMap<String, Vec<String>>,
    /// Tables that go back to every column.
    pub all_columns: Vec<String>,
    pub frequency_minutes: Option<u32>,
    pub history_start: Option<DateTime<Utc>>,
    pub lookback_minutes: Option<u32>,
    pub rate_reserve_percent: Option<u8>,
    pub fan_out: Option<FanOutMode>,
    /// `Some(None)` turns recent-window mode off.
    pub recent_window: Option<Option<RecentWindow>>,
    pub api_base_url: Option<String>,
    pub token: Option<TokenSource>,
}

impl Edit {
    /// The integration after this edit, validated: unknown tables or columns, an empty
    /// selection and out-of-range values are refused, naming what is wrong.
    pub fn apply(&self, before: &Integration) -> Result<Integration> {
        let mut after = before.clone();
        after.tables = self.tables(before)?;
        for (table, columns) in &self.columns {
            after.columns.insert(table.clone(), columns.clone());
        }
        for table in table_names(&self.all_columns)? {
            after.columns.remove(&table);
        }
        after.frequency_minutes = self.frequency_minutes.unwrap_or(before.frequency_minutes);
        after.history_start = self.history_start.unwrap_or(before.history_start);
        after.lookback_minutes = self.lookback_minutes.unwrap_or(before.lookback_minutes);
        after.rate_reserve_percent = self.rate_reserve_percent.unwrap_or(before.rate_reserve_percent);
        after.fan_out = self.fan_out.unwrap_or(before.fan_out);
        after.recent_window = self.recent_window.unwrap_or(before.recent_window);
        after.api_base_url = self.api_base_url.clone().unwrap_or_else(|| before.api_base_url.clone());
        after.token = self.token.clone().unwrap_or_else(|| before.token.clone());
        after.validate()?;
        Ok(after)
    }

    /// The table selection after the edit (empty: all 22).
    fn tables(&self, before: &Integration) -> Result<TableSelection> {
        let mut tables: BTreeSet<String> = match &self.tables {
            Some(list) => table_names(list)?.into_iter().collect(),
            None => before.selected_tables()?.iter().map(|t| t.name.to_string()).collect(),
        };
        tables.extend(table_names(&self.add_tables)?);
        for table in table_names(&self.remove_tables)? {
            tables.remove(&table);
        }
        if tables.is_empty() {
            return Err(SyncError::Config("an integration needs at least one table".into()));
        }
        Ok(if tables.len() == catalog::TABLES.len() { TableSelection::All } else { tables.into_iter().collect() })
    }
}

/// Table names as given, checked against the catalog (an empty list stays empty here, where
/// `resolve_tables` would read it as "all tables").
fn table_names(list: &[String]) -> Result<Vec<String>> {
    if list.is_empty() {
        return Ok(Vec::new());
    }
    Ok(catalog::resolve_tables(list)?.iter().map(|t| t.name.to_string()).collect())
}

/// An edit ready to store: the integration as it will be, what changed (the log `integrations
/// show` keeps) and the tables whose next run reads from the history start.
#[derive(Debug, Clone)]
pub struct EditPlan {
    pub after: Integration,
    pub changes: Vec<String>,
    pub backfill: Vec<&'static str>,
}

impl EditPlan {
    /// Compares `before` with `after`. Added tables are backfilled; so is every incremental
    /// table and deleted feed when the history start moves earlier.
    pub fn new(before: &Integration, after: Integration) -> Result<EditPlan> {
        let old: BTreeSet<&'static str> = before.selected_tables()?.iter().map(|t| t.name).collect();
        let new: BTreeSet<&'static str> = after.selected_tables()?.iter().map(|t| t.name).collect();
        let added: Vec<&'static str> = new.difference(&old).copied().collect();
        let removed: Vec<&'static str> = old.difference(&new).copied().collect();
        let mut changes = Vec::new();
        if !added.is_empty() || !removed.is_empty() {
            let plus = added.iter().map(|t| format!("+{t}"));
            let minus = removed.iter().map(|t| format!("-{t}"));
            changes.push(format!("tables: {}", plus.chain(minus).collect::<Vec<_>>().join(" ")));
        }
        changes.extend(column_changes(before, &after));
        changes.extend(setting_changes(before, &after));
        let mut backfill: BTreeSet<&'static str> = added.into_iter().collect();
        if after.history_start < before.history_start {
            let incremental = after.selected_tables()?.into_iter().filter(|t| t.replication != Replication::Full);
            backfill.extend(incremental.map(|t| t.name));
        }
        Ok(EditPlan { after, changes, backfill: backfill.into_iter().collect() })
    }

    /// Whether the edit changes nothing.
    pub fn is_empty(&self) -> bool {
        self.changes.is_empty()
    }

    /// Stores the edit in one write: the settings, the change log entry and the backfills, so a
    /// run in flight (a first load too) commits as before and the table's next run reads from
    /// the history start. Returns the integration as stored.
    pub async fn store(mut self, state: &dyn StateStore, now: DateTime<Utc>) -> Result<Integration> {
        for table in &self.backfill {
            self.after.order_backfill(table);
        }
        self.after.record_change(self.changes.join("; "), now);
        state.update_integration(&self.after).await?;
        Ok(self.after)
    }
}

fn column_changes(before: &Integration, after: &Integration) -> Vec<String> {
    let tables: BTreeSet<&String> = before.columns.keys().chain(after.columns.keys()).collect();
    let show = |c: Option<&Vec<String>>| c.map_or("all".to_string(), |c| c.join(","));
    tables
        .into_iter()
        .filter_map(|table| {
            let (old, new) = (before.columns.get(table), after.columns.get(table));
            (old != new).then(|| format!("columns[{table}]: {} → {}", show(old), show(new)))
        })
        .collect()
}

fn setting_changes(before: &Integration, after: &Integration) -> Vec<String> {
    let window = |w: Option<RecentWindow>| w.map_or_else(|| "off".to_string(), |w| w.to_string());
    let fields = [
        ("frequency", format!("{}m", before.frequency_minutes), format!("{}m", after.frequency_minutes)),
        ("history_start", before.history_start.to_rfc3339(), after.history_start.to_rfc3339()),
        ("lookback", format!("{}m", before.lookback_minutes), format!("{}m", after.lookback_minutes)),
        ("rate_reserve", format!("{}%", before.rate_reserve_percent), format!("{}%", after.rate_reserve_percent)),
        ("fan_out", before.fan_out.to_string(), after.fan_out.to_string()),
        ("recent_window", window(before.recent_window), window(after.recent_window)),
        ("api_base_url", before.api_base_url.clone(), after.api_base_url.clone()),
        ("token", before.token.to_string(), after.token.to_string()),
    ];
    fields
        .into_iter()
        .filter(|(_, old, new)| old != new)
        .map(|(name, old, new)| format!("{name}: {old} → {new}"))
        .collect()
}

/// What pausing or resuming did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PauseChange {
    /// It already was paused (or running): nothing was written.
    Already,
    /// It is now in this status.
    Now(IntegrationStatus),
}

/// Pauses (`pause`) or resumes an integration. A resumed one is active again if it ever loaded
/// data — a bookmark, or a succeeded run (a backfill ordered meanwhile may have dropped every
/// bookmark) — and pending otherwise.
pub async fn set_paused(state: &dyn StateStore, mut integration: Integration, pause: bool) -> Result<PauseChange> {
    if (integration.status == IntegrationStatus::Paused) == pause {
        return Ok(PauseChange::Already);
    }
    integration.status = match pause {
        true => IntegrationStatus::Paused,
        false if ever_loaded(state, &integration).await? => IntegrationStatus::Active,
        false => IntegrationStatus::Pending,
    };
    integration.record_change(if pause { "paused" } else { "resumed" }, Utc::now());
    state.update_integration(&integration).await?;
    Ok(PauseChange::Now(integration.status))
}

/// Run records read at first when looking for a succeeded one: the newest are almost always
/// enough, and only an integration without one reads its whole history.
const RECENT_RUNS: usize = 100;
const ALL_RUNS: usize = 10_000;

/// Whether any table of the integration ever loaded: one bookmark read per table, then its
/// newest run records, and only if none succeeded there its whole run history.
async fn ever_loaded(state: &dyn StateStore, integration: &Integration) -> Result<bool> {
    for table in integration.selected_tables()? {
        if state.bookmark(&integration.name, table.name).await?.is_some() {
            return Ok(true);
        }
    }
    for limit in [RECENT_RUNS, ALL_RUNS] {
        let runs = state.runs(Some(&integration.name), limit).await?;
        if runs.iter().any(|r| r.state == RunState::Succeeded) {
            return Ok(true);
        }
        if runs.len() < limit {
            break;
        }
    }
    Ok(false)
}

/// Every file the integration wrote (its data and its `_meta/` tree), for a purge to list and
/// remove.
pub async fn files_of(sink: &dyn ObjectSink, integration: &str) -> Result<Vec<String>> {
    let mut keys = sink.list(&output::data_prefix(integration)).await?;
    keys.extend(sink.list(&output::meta_prefix(integration)).await?);
    Ok(keys)
}

/// Deletes the integration: its settings, bookmarks, leases and checkpoints (run history is
/// kept for audit), and first the `files` a purge listed, if any.
pub async fn delete(state: &dyn StateStore, sink: &dyn ObjectSink, integration: &str, files: &[String]) -> Result<()> {
    for key in files {
        sink.delete(key).await?;
    }
    state.delete_integration(integration).await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;
    use capsule_core::integration::RunId;
    use capsule_core::ports::TableRunRecord;
    use capsule_local::{LocalSink, StateFile};

    use super::*;

    fn acme(tables: &[&str]) -> Integration {
        let mut integration =
            Integration::new("acme".parse().unwrap(), TokenSource::Env { var: "T".into() }, Utc::now());
        integration.tables = tables.iter().map(|t| t.to_string()).collect();
        integration
    }

    fn strings(list: &[&str]) -> Vec<String> {
        list.iter().map(|t| t.to_string()).collect()
    }

    #[test]
    fn an_edit_adds_and_removes_tables_and_refuses_an_empty_or_unknown_selection() {
        let before = acme(&["parties", "users"]);
        let edit = Edit { add_tables: strings(&["cases"]), remove_tables: strings(&["users"]), ..Edit::default() };
        assert_eq!(edit.apply(&before).unwrap().tables, TableSelection::Only(strings(&["cases", "parties"])));
        let empty = Edit { remove_tables: strings(&["parties", "users"]), ..Edit::default() };
        assert!(empty.apply(&before).unwrap_err().to_string().contains("at least one table"));
        let unknown = Edit { add_tables: strings(&["partys"]), ..Edit::default() };
        assert!(unknown.apply(&before).unwrap_err().to_string().contains("partys"));
        let all =
            Edit { tables: Some(catalog::TABLES.iter().map(|t| t.name.to_string()).collect()), ..Edit::default() };
        assert_eq!(all.apply(&before).unwrap().tables, TableSelection::All, "every table is all of them");
    }

    #[test]
    fn an_edit_plan_logs_each_change_and_backfills_added_tables_and_an_earlier_history() {
        let before = acme(&["parties", "users"]);
        let edit = Edit { add_tables: strings(&["cases"]), frequency_minutes: Some(60), ..Edit::default() };
        let plan = EditPlan::new(&before, edit.apply(&before).unwrap()).unwrap();
        assert_eq!(plan.changes, ["tables: +cases", "frequency: 1440m → 60m"]);
        assert_eq!(plan.backfill, ["cases"]);

        let earlier = before.history_start - chrono::Duration::days(30);
        let edit = Edit { history_start: Some(earlier), ..Edit::default() };
        let plan = EditPlan::new(&before, edit.apply(&before).unwrap()).unwrap();
        assert_eq!(plan.backfill, ["parties"], "the incremental table reads again; users is a full table");
        assert!(EditPlan::new(&before, before.clone()).unwrap().is_empty());
    }

    #[tokio::test]
    async fn a_stored_edit_orders_its_backfills_in_the_same_write() {
        let dir = tempfile::tempdir().unwrap();
        let state = StateFile::new(dir.path());
        let before = acme(&["parties"]);
        state.create_integration(&before).await.unwrap();
        let edit = Edit { add_tables: strings(&["cases"]), ..Edit::default() };
        let plan = EditPlan::new(&before, edit.apply(&before).unwrap()).unwrap();
        plan.store(&state, Utc::now()).await.unwrap();
        let stored = state.get_integration("acme").await.unwrap().unwrap();
        assert_eq!(stored.tables, TableSelection::Only(strings(&["cases", "parties"])));
        assert_eq!(stored.backfills.get("cases"), Some(&1));
        assert_eq!(stored.changes.last().unwrap().what, "tables: +cases");
    }

    #[tokio::test]
    async fn resume_is_active_once_anything_loaded_and_pending_before() {
        let dir = tempfile::tempdir().unwrap();
        let state = StateFile::new(dir.path());
        state.create_integration(&acme(&["users"])).await.unwrap();
        let get = || async { state.get_integration("acme").await.unwrap().unwrap() };
        assert_eq!(set_paused(&state, get().await, true).await.unwrap(), PauseChange::Now(IntegrationStatus::Paused));
        assert_eq!(set_paused(&state, get().await, true).await.unwrap(), PauseChange::Already);
        assert_eq!(set_paused(&state, get().await, false).await.unwrap(), PauseChange::Now(IntegrationStatus::Pending));

        set_paused(&state, get().await, true).await.unwrap();
        let run = RunId::new(Utc::now());
        state.record_run(&TableRunRecord::new("acme", "users", &run, RunState::Succeeded, Utc::now())).await.unwrap();
        assert_eq!(set_paused(&state, get().await, false).await.unwrap(), PauseChange::Now(IntegrationStatus::Active));
        assert_eq!(get().await.changes.iter().filter(|c| c.what == "resumed").count(), 2);
    }

    #[tokio::test]
    async fn a_purge_lists_data_and_meta_files_and_delete_removes_them_with_the_integration() {
        let dir = tempfile::tempdir().unwrap();
        let (state, sink) = (StateFile::new(dir.path()), LocalSink::new(dir.path().join("output")));
        state.create_integration(&acme(&["users"])).await.unwrap();
        for key in ["acme/users/dt=2026-12-07/run=r/part-00000.ndjson.gz", "_meta/acme/runs/r/users.json", "other/x"] {
            sink.put(key, Bytes::from_static(b"{}")).await.unwrap();
        }
        let mut files = files_of(&sink, "acme").await.unwrap();
        files.sort();
        assert_eq!(files, ["_meta/acme/runs/r/users.json", "acme/users/dt=2026-12-07/run=r/part-00000.ndjson.gz"]);
        delete(&state, &sink, "acme", &files).await.unwrap();
        assert!(files_of(&sink, "acme").await.unwrap().is_empty());
        assert_eq!(sink.list("other/").await.unwrap(), ["other/x"], "another integration's files stay");
        assert!(state.get_integration("acme").await.unwrap().is_none());
    }
}
