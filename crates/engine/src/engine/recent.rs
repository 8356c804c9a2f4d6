//! Recent reads: a full table need not be read whole every run when part of it can be known
//! unchanged since the previous snapshot. Two kinds, both data in the catalog ([`Recency`]):
//! - **newest first** (entries, by `entryAt`, the one order Capsule documents): the run carries
//!   over the previous snapshot's rows dated before the cutoff (the previous run's T0 less the
//!   lookback), then reads the listing from its newest page until a page reaches past the
//!   cutoff, writing only the records at or after it;
//! - **changed parents** (tracks, whose tasks' `updatedAt` moves when the track does): the run
//!   discovers every parent as usual, carries over the children of the parents that no record
//!   changed since the cutoff, and asks only the others.
//!
//! The carried and the read halves are disjoint, so the run is again a complete snapshot with
//! one row per record: the warehouse contract and views are those of any full table. What a
//! recent read cannot see, a refresh catches every `full_refresh_days`: a whole read for entries,
//! and for changed-parents tables a rolling one ([`Slices`]: a slice of the parents a day, so no
//! day carries the whole read). The README lists and measures the blind spots. Previous
//! snapshots are read a slice at a time, so memory stays flat.

use std::collections::BTreeSet;

use chrono::{DateTime, Utc};

use super::snapshot::SnapshotRows;
use crate::output::{self, PartWriter};
use capsule_client::RawRecord;
use capsule_core::catalog::{Fetch, TableSpec};
use capsule_core::integration::{FanOutMode, Integration, RunId};
use capsule_core::manifest::{RunManifest, WindowSummary};
use capsule_core::ports::{ObjectSink, StateStore};
use capsule_core::{Result, SyncError};

/// What a recent read of a table keys on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Recency {
    /// The listing is ordered newest first by this field: read its newest pages.
    NewestFirst(&'static str),
    /// The discovery records' field moves whenever their parent's children change: ask only the
    /// parents a record changed since the cutoff names.
    ChangedParents(&'static str),
}

impl Recency {
    /// The instant field compared with the cutoff.
    pub fn field(self) -> &'static str {
        match self {
            Recency::NewestFirst(field) | Recency::ChangedParents(field) => field,
        }
    }
}

/// How a recent run reads.
#[derive(Debug, Clone)]
pub struct Window {
    pub recency: Recency,
    /// Records at or after this instant are read from Capsule; older rows are carried over.
    pub cutoff: DateTime<Utc>,
    /// The previous committed run, whose files hold the older rows.
    pub base: RunManifest,
    /// The whole read the snapshot descends from (for a rolling refresh: its oldest slice's).
    pub full_refresh_at: DateTime<Utc>,
    /// A changed-parents read: the slices of its rolling refresh.
    pub slices: Option<Slices>,
}

/// The rolling refresh of a changed-parents table. Its parents fall into `full_refresh_days`
/// slices by id; a slice whose parents were last all asked `full_refresh_days` ago is due, and a
/// run asks a due slice's parents whether they changed or not. The first (whole) read dates its
/// slices a day apart, so one slice comes due a day: every parent is asked again within
/// `full_refresh_days`, and no day pays for a whole read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Slices {
    /// When each slice's parents were last all asked.
    pub refreshed_at: Vec<DateTime<Utc>>,
    /// The slices this run asks again.
    pub due: BTreeSet<usize>,
}

impl Slices {
    /// The slices of a whole read at `at`: slice k dated k days earlier, so slice n−1 comes due
    /// after a day and slice 0 after n days.
    pub(crate) fn staggered(at: DateTime<Utc>, days: u32) -> Vec<DateTime<Utc>> {
        (0..i64::from(days)).map(|k| at - chrono::Duration::days(k)).collect()
    }

    /// The slices as they stand at `started`, `refreshed_at` as the previous snapshot left them.
    fn at(refreshed_at: Vec<DateTime<Utc>>, started: DateTime<Utc>, days: u32) -> Slices {
        let period = chrono::Duration::days(i64::from(days));
        let due = (0..refreshed_at.len()).filter(|k| started - refreshed_at[*k] >= period).collect();
        Slices { refreshed_at, due }
    }

    /// The slice a parent falls in.
    pub(crate) fn slice_of(&self, parent_id: i64) -> usize {
        parent_id.rem_euclid(self.refreshed_at.len() as i64) as usize
    }

    /// Whether a run asks this parent again although no record marks it changed.
    pub fn refreshes(&self, parent_id: i64) -> bool {
        self.due.contains(&self.slice_of(parent_id))
    }

    /// The slices once this run (started at `started`) has asked the due ones.
    pub fn after(&self, started: DateTime<Utc>) -> Vec<DateTime<Utc>> {
        let at = |(k, at): (usize, &DateTime<Utc>)| if self.due.contains(&k) { started } else { *at };
        self.refreshed_at.iter().enumerate().map(at).collect()
    }
}

/// How a run of a full table reads it.
#[derive(Debug)]
pub enum ReadMode {
    /// The whole listing; `why` says why a configured recent window is not used.
    Whole {
        why: Option<String>,
    },
    Recent(Box<Window>),
}

/// How a table can be read recently, if it can at all (with the catalog's discovery route:
/// the exhaustive one asks every parent by design).
pub(crate) fn recency(table: &TableSpec) -> Option<Recency> {
    match table.fetch {
        Fetch::Listings([only]) => only.newest_first.map(Recency::NewestFirst),
        Fetch::FanOut { discover: [route], .. } => route.changed_by.map(Recency::ChangedParents),
        _ => None,
    }
}

/// Decides how this run reads `table`: a recent window when the integration asks for one, the
/// table can be read recently, and a usable previous snapshot with the same columns exists that
/// is refreshed well enough ([`refreshes`]); the whole table otherwise.
pub async fn choose(
    (state, sink): (&dyn StateStore, &dyn ObjectSink),
    integration: &Integration,
    table: &TableSpec,
    run_id: &RunId,
    (started, columns): (DateTime<Utc>, &[String]),
) -> Result<ReadMode> {
    let (Some(settings), Some(recency)) = (integration.recent_window, recency(table)) else {
        return Ok(ReadMode::Whole { why: None });
    };
    let whole = |why: String| Ok(ReadMode::Whole { why: Some(why) });
    if matches!(recency, Recency::ChangedParents(_)) && integration.fan_out == FanOutMode::Exhaustive {
        return whole("fan_out is exhaustive: every parent is asked".into());
    }
    let Some(bookmark) = state.bookmark(&integration.name, table.name).await? else {
        return whole("no earlier snapshot: the first run reads everything".into());
    };
    if &bookmark.run_id == run_id {
        return whole("a redo of a committed run reads everything".into());
    }
    let base = match previous_manifest(sink, integration, table, &bookmark.run_id).await {
        Ok(base) => base,
        Err(e) => return whole(format!("the previous snapshot's manifest cannot be used ({e})")),
    };
    if base.columns != columns {
        return whole("the column selection changed since the previous snapshot".into());
    }
    let (slices, full_refresh_at) = match refreshes(recency, &base, started, settings.full_refresh_days) {
        Ok(refresh) => refresh,
        Err(why) => return whole(why),
    };
    // Changes after what the previous run saw are read now: from its T0, or from the earlier
    // instant its parents were discovered at (another table's snapshot).
    let lookback = chrono::Duration::minutes(i64::from(integration.lookback_minutes));
    let cutoff = base.discovered_at.unwrap_or(base.extracted_at).min(base.extracted_at) - lookback;
    Ok(ReadMode::Recent(Box::new(Window { recency, cutoff, base, full_refresh_at, slices })))
}

/// How the previous snapshot is kept fresh, seen from a run started at `started`: a rolling
/// refresh's slices (changed-parents tables) and the instant every row was read from Capsule at
/// or after; or why a whole read is due instead.
fn refreshes(
    recency: Recency,
    base: &RunManifest,
    started: DateTime<Utc>,
    days: u32,
) -> std::result::Result<(Option<Slices>, DateTime<Utc>), String> {
    let full_refresh_at = base.full_refresh_at.unwrap_or(base.extracted_at);
    match recency {
        Recency::ChangedParents(_) => {
            let refreshed_at =
                base.slices_refreshed_at.clone().unwrap_or_else(|| Slices::staggered(full_refresh_at, days));
            if refreshed_at.len() != days as usize {
                return Err(format!(
                    "the refresh period changed ({} slices, now every {days} days): the parents are sliced again",
                    refreshed_at.len()
                ));
            }
            let slices = Slices::at(refreshed_at, started, days);
            // Every parent was asked at or after the oldest slice's date (once slices have
            // turned over; before that, the whole read's).
            let oldest = slices.after(started).into_iter().min();
            let full_refresh_at = oldest.map_or(full_refresh_at, |oldest| oldest.max(full_refresh_at));
            Ok((Some(slices), full_refresh_at))
        }
        Recency::NewestFirst(_) => {
            let age = started - full_refresh_at;
            if age >= chrono::Duration::days(i64::from(days)) {
                return Err(format!(
                    "a full refresh is due: the last whole read was {} days ago (every {days} days)",
                    age.num_days()
                ));
            }
            Ok((None, full_refresh_at))
        }
    }
}

/// The rolling refresh a run leaves for the next (a changed-parents table read with a recent
/// window configured): this run's slices once asked, or, after a whole read, new staggered ones.
pub(crate) fn slices_after(
    integration: &Integration,
    table: &TableSpec,
    started: DateTime<Utc>,
    recent: Option<&RecentRead>,
) -> Option<Vec<DateTime<Utc>>> {
    let settings = integration.recent_window?;
    if !matches!(recency(table)?, Recency::ChangedParents(_)) || integration.fan_out == FanOutMode::Exhaustive {
        return None;
    }
    match recent.and_then(|r| r.window.slices.as_ref()) {
        Some(slices) => Some(slices.after(started)),
        None => Some(Slices::staggered(started, settings.full_refresh_days)),
    }
}

async fn previous_manifest(
    sink: &dyn ObjectSink,
    integration: &Integration,
    table: &TableSpec,
    run_id: &RunId,
) -> Result<RunManifest> {
    let key = output::manifest_key(&integration.name, table.name, run_id);
    let body = sink.get(&key).await?.ok_or_else(|| SyncError::Output(format!("{key} is missing")))?;
    serde_json::from_slice(&body).map_err(|e| SyncError::Output(format!("{key} is not a run manifest: {e}")))
}

impl Window {
    /// Whether a record is at or after the cutoff: read from Capsule, not carried over. A
    /// record without a readable order field is not: it cannot be placed in the listing's order,
    /// so it comes with the older rows (from the whole read) and is never lost or written twice.
    pub(crate) fn is_newer(&self, record: &RawRecord<'_>) -> bool {
        self.instant_of(record).is_some_and(|at| at >= self.cutoff)
    }

    /// Whether a discovery record marks its parent changed: changed since the cutoff, or of
    /// unknown date (asking a parent again is only a request; missing a change is a stale row).
    pub(crate) fn marks_changed(&self, record: &RawRecord<'_>) -> bool {
        self.instant_of(record).is_none_or(|at| at >= self.cutoff)
    }

    /// The record's order field as an instant.
    pub(crate) fn instant_of(&self, record: &RawRecord<'_>) -> Option<DateTime<Utc>> {
        record.instant(self.recency.field())
    }

    /// Writes the previous snapshot's rows that `keep` accepts as rows of `run_id`; returns how
    /// many. Reads each file a slice at a time, so memory stays flat.
    pub(crate) async fn carry_over(
        &self,
        sink: &dyn ObjectSink,
        run_id: &RunId,
        keep: &(dyn Fn(&RawRecord<'_>) -> bool + Sync),
        writer: &mut PartWriter<'_>,
    ) -> Result<u64> {
        let mut carried = 0;
        let mut rows = SnapshotRows::new(sink, &self.base);
        let run = serde_json::to_string(run_id.as_str()).map_err(|e| SyncError::Internal(e.to_string()))?;
        let mut line = Vec::new();
        while let Some(row) = rows.next().await? {
            if !keep(&row) {
                continue;
            }
            // The row as it was written, now a row of this run (`_extracted_at` kept).
            line.clear();
            line.push(b'{');
            for (i, (name, value)) in row.fields().enumerate() {
                if i > 0 {
                    line.push(b',');
                }
                serde_json::to_writer(&mut line, name).map_err(|e| SyncError::Internal(e.to_string()))?;
                line.push(b':');
                let value = if name == "_run_id" { run.as_str() } else { value.get() };
                line.extend_from_slice(value.as_bytes());
            }
            line.push(b'}');
            writer.write_line(&line).await?;
            carried += 1;
        }
        Ok(carried)
    }
}

/// The state of a recent-window read as its pages come.
#[derive(Debug)]
pub(crate) struct RecentRead {
    pub window: Window,
    /// The order field of the last record read.
    last: Option<DateTime<Utc>>,
    /// A page came out of newest-first order: the rest of the listing is read whole.
    pub disordered: bool,
    /// Rows carried over from the previous snapshot, once they are.
    pub carried: Option<u64>,
}

impl RecentRead {
    pub fn new(window: Window) -> RecentRead {
        RecentRead { window, last: None, disordered: false, carried: None }
    }

    /// Whether this page reaches past the cutoff (the read stops after it). A page out of
    /// newest-first order sets `disordered` (the caller logs it) and never stops the read.
    pub(crate) fn page_reaches_cutoff(&mut self, records: &[RawRecord<'_>]) -> bool {
        if self.disordered {
            return false;
        }
        let mut reached = false;
        for at in records.iter().filter_map(|r| self.window.instant_of(r)) {
            if self.last.is_some_and(|last| at > last) {
                self.disordered = true;
                return false;
            }
            self.last = Some(at);
            reached |= at < self.window.cutoff;
        }
        reached
    }

    /// What the manifest says of this read.
    pub fn summary(&self) -> WindowSummary {
        WindowSummary {
            cutoff: self.window.cutoff,
            base_run_id: self.window.base.run_id.clone(),
            carried_rows: self.carried.unwrap_or_default(),
        }
    }

    /// Whether a record read from Capsule is left out: not after the cutoff, so carried over.
    pub fn skips(&self, record: &RawRecord<'_>) -> bool {
        !self.disordered && !self.window.is_newer(record)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use capsule_core::catalog;
    use serde_json::json;
    use std::collections::BTreeMap;

    fn read(cutoff: &str) -> RecentRead {
        let base: RunManifest = serde_json::from_value(json!({
            "integration": "acme", "table": "entries", "run_id": "20261129T000000Z-abc123",
            "replication": "full", "compression": "gzip", "extracted_at": "2026-11-29T00:00:00Z",
            "finished_at": "2026-11-29T00:01:00Z", "since": null, "bookmark_before": null,
            "bookmark_after": null, "columns": [], "files": [], "rows": 0, "bytes": 0,
            "requests": 0, "retries": 0, "rate_limited": 0, "unknown_fields": []
        }))
        .unwrap();
        let cutoff = DateTime::parse_from_rfc3339(cutoff).unwrap().to_utc();
        let window =
            Window { recency: Recency::NewestFirst("entryAt"), cutoff, base, full_refresh_at: cutoff, slices: None };
        RecentRead::new(window)
    }

    #[test]
    fn one_slice_comes_due_a_day_and_every_parent_within_the_period() {
        let t0 = DateTime::parse_from_rfc3339("2026-11-01T00:00:00Z").unwrap().to_utc();
        let day = chrono::Duration::days(1);
        let mut refreshed_at = Slices::staggered(t0, 7);
        let mut asked_on: BTreeMap<usize, Vec<i32>> = BTreeMap::new();
        for d in 1..=14 {
            let slices = Slices::at(refreshed_at, t0 + day * d, 7);
            assert_eq!(slices.due.len(), 1, "day {d}: {:?}", slices.due);
            for k in &slices.due {
                asked_on.entry(*k).or_default().push(d);
            }
            refreshed_at = slices.after(t0 + day * d);
        }
        // Each slice every seven days, the last whole read's oldest first.
        assert_eq!(asked_on[&6], vec![1, 8]);
        assert_eq!(asked_on[&0], vec![7, 14]);
        // A week without runs: every slice is due at once.
        assert_eq!(Slices::at(refreshed_at, t0 + day * 30, 7).due.len(), 7);
        let slices = Slices { refreshed_at: Slices::staggered(t0, 7), due: BTreeSet::from([3]) };
        assert!(slices.refreshes(10) && slices.refreshes(-4) && !slices.refreshes(11));
    }

    /// A page's records' texts.
    fn page(times: &[&str]) -> Vec<String> {
        times.iter().enumerate().map(|(i, t)| json!({"id": i, "entryAt": t}).to_string()).collect()
    }

    fn records(texts: &[String]) -> Vec<RawRecord<'_>> {
        texts.iter().map(|t| RawRecord::parse(t).unwrap()).collect()
    }

    #[test]
    fn entries_and_tracks_can_be_read_recently() {
        let recent: Vec<(&str, Recency)> =
            catalog::TABLES.iter().filter_map(|t| recency(t).map(|r| (t.name, r))).collect();
        let expected = [("entries", Recency::NewestFirst("entryAt")), ("tracks", Recency::ChangedParents("updatedAt"))];
        assert_eq!(recent, expected);
    }

    #[test]
    fn the_read_stops_at_the_page_reaching_past_the_cutoff_and_skips_only_older_records() {
        let mut r = read("2026-11-28T12:00:00Z");
        assert!(!r.page_reaches_cutoff(&records(&page(&["2026-11-29T10:00:00Z", "2026-11-29T09:00:00Z"]))));
        let last = page(&["2026-11-28T13:00:00Z", "2026-11-28T11:00:00Z"]);
        let last = records(&last);
        assert!(r.page_reaches_cutoff(&last));
        assert!(!r.skips(&last[0]));
        assert!(r.skips(&last[1]));
        let undated = json!({"id": 9, "entryAt": "not a time"});
        let undated = undated.to_string();
        assert!(r.skips(&RawRecord::parse(&undated).unwrap()), "an undated record comes with the carried rows, once");
    }

    #[test]
    fn a_page_out_of_order_makes_the_rest_of_the_listing_read_whole() {
        let mut r = read("2026-11-28T12:00:00Z");
        assert!(!r.page_reaches_cutoff(&records(&page(&["2026-11-29T10:00:00Z"]))));
        let out_of_order = page(&["2026-11-28T11:00:00Z", "2026-11-29T11:00:00Z"]);
        let out_of_order = records(&out_of_order);
        assert!(!r.page_reaches_cutoff(&out_of_order), "never stops once disordered");
        assert!(r.disordered);
        assert!(!r.skips(&out_of_order[0]), "older records are written too");
    }
}
