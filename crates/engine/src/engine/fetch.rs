//! Executes a table's fetch plan: page through its listings (or discover parents, then page
//! through each parent's children) and hand every row to the part writer. One code path for
//! all 22 tables; what differs is the catalog entry.
//!
//! A read can stop at any request: near the deadline (between pages), or when the request is
//! throttled (the token's rate-limit budget is spent, Capsule is down). Either way it returns
//! the cursor where the next invocation picks up, so no page is read twice within a run.

use std::collections::BTreeSet;
use std::time::Instant;

use bytes::Bytes;
use chrono::{DateTime, Timelike, Utc};
use futures::StreamExt;
use serde_json::Value;
use url::Url;

use super::recent::RecentRead;
use super::row::{RowBuilder, matches_all};
use super::snapshot::SnapshotRows;
use crate::output::{self, PartWriter, RunManifest};
use capsule_client::{CapsuleClient, ListingPage, RawRecord, count_records};
use capsule_core::catalog::{self, Constant, Fetch, Listing, METADATA_COLUMNS, ParentDiscovery, TableSpec};
use capsule_core::integration::{FanOutMode, RunId};
use capsule_core::observe::Event;
use capsule_core::ports::{Cursor, Discovery, ObjectSink, PassCount};
use capsule_core::progress::{Activity, ActivityFn};
use capsule_core::runlog::RunLog;
use capsule_core::{Result, SyncError};

/// Capsule's `since` format: UTC, seconds, `Z`.
pub fn since_param(t: chrono::DateTime<chrono::Utc>) -> String {
    t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

/// Walks `Link rel="next"` from a first URL.
pub struct Pager<'a> {
    client: &'a CapsuleClient,
    next: Option<Url>,
    envelope: &'a str,
    extras: Vec<&'a str>,
    /// A 404 ends the listing quietly (a fanned-out parent deleted since it was discovered).
    missing_ok: bool,
    seen: BTreeSet<String>,
    log: Option<RunLog>,
}

impl<'a> Pager<'a> {
    pub fn new(client: &'a CapsuleClient, first: Url, envelope: &'a str, extras: Vec<&'a str>) -> Pager<'a> {
        Pager { client, next: Some(first), envelope, extras, missing_ok: false, seen: BTreeSet::new(), log: None }
    }

    /// The page the next call reads, if any.
    pub fn peek_next(&self) -> Option<&Url> {
        self.next.as_ref()
    }

    pub async fn next_page(&mut self) -> Result<Option<ListingPage>> {
        let Some(url) = self.next.take() else {
            return Ok(None);
        };
        if !self.seen.insert(url.as_str().to_string()) {
            return Err(SyncError::BadResponse {
                request: url.path().to_string(),
                message: format!("Link rel=\"next\" points back to a page already read ({url})"),
            });
        }
        match self.client.get_listing_page(&url, self.envelope, &self.extras).await {
            Ok(page) => {
                self.next = page.next.clone();
                Ok(Some(page))
            }
            Err(SyncError::Rejected { status: 404, .. }) if self.missing_ok => {
                let message = format!("{} answered 404: the parent no longer exists; skipped", url.path());
                match &self.log {
                    Some(log) => log.info(Event::ParentGone, message, Value::Null),
                    None => tracing::info!(event = Event::ParentGone.as_str(), "{message}"),
                }
                Ok(None)
            }
            Err(e) => Err(e),
        }
    }
}

/// How an extraction ended.
#[derive(Debug, PartialEq, Eq)]
pub enum Extracted {
    Done,
    /// Stopped: near the deadline (`not_before` None), or because nothing may be sent to Capsule
    /// before `not_before`. Resume at `cursor`.
    Paused {
        cursor: Box<Cursor>,
        not_before: Option<DateTime<Utc>>,
        /// The request Capsule kept failing, when that is why (not a rate-limit wait).
        failing: Option<String>,
    },
}

/// Why reading stopped early: a pause (resumable at the cursor) or a failure.
enum Halt {
    Pause(Box<Cursor>, Option<Wait>),
    Fail(SyncError),
}

/// What a pause waits for: an instant, and the request that kept failing if that is why.
struct Wait {
    until: DateTime<Utc>,
    failing: Option<String>,
}

impl From<SyncError> for Halt {
    fn from(e: SyncError) -> Halt {
        Halt::Fail(e)
    }
}

/// A request's error, as a halt: a throttled request pauses the run at `cursor` (the request
/// is made again on resume); anything else fails it.
fn halt_at(error: SyncError, cursor: &Cursor) -> Halt {
    match error {
        SyncError::Throttled { until, failing, .. } => {
            Halt::Pause(Box::new(cursor.clone()), Some(Wait { until, failing }))
        }
        other => Halt::Fail(other),
    }
}

/// A fanned-out parent: (child path template, entity, parent id).
type Parent = (String, Option<String>, i64);

/// Everything an extraction needs.
pub struct Extraction<'a> {
    pub client: &'a CapsuleClient,
    pub sink: &'a dyn ObjectSink,
    pub integration: &'a str,
    pub run_id: &'a RunId,
    pub table: &'static TableSpec,
    pub since: Option<DateTime<Utc>>,
    /// The run continues from a bookmark (not a first load): see [`capsule_core::catalog::Membership`].
    pub from_bookmark: bool,
    /// A recent-window read ([`super::recent`]); None reads the whole table.
    pub recent: Option<RecentRead>,
    pub fan_out: FanOutMode,
    pub rows: RowBuilder,
    pub progress: Option<&'a ActivityFn>,
    /// Pause (between pages) once this instant has passed.
    pub deadline: Option<Instant>,
    /// Where to start: the default cursor for a fresh run, a checkpoint's for a continuation.
    pub resume: Cursor,
    /// Pages read by this invocation: at least one before pausing, so every invocation progresses.
    pub pages_read: u64,
    pub log: RunLog,
    /// T0 of the run.
    pub started: DateTime<Utc>,
    /// Another table's snapshot of this sync that stands in for the discovery listing, or why it
    /// cannot ([`super::snapshot::of_same_listing`]); a fresh run of a fan-out table only.
    pub listing_snapshot: Option<std::result::Result<RunManifest, String>>,
    /// The instant the parents were discovered at, when that snapshot's (its T0).
    pub discovered_at: Option<DateTime<Utc>>,
}

impl Extraction<'_> {
    /// Tells the live view (if any) what has been read so far.
    fn report_reading(&self, rows: u64) {
        if let Some(progress) = self.progress {
            progress(Activity::Reading { rows, pages: self.pages_read, requests: self.client.stats().requests });
        }
    }

    /// Reads the table from the resume cursor to the end, or until it pauses.
    pub async fn run(&mut self, writer: &mut PartWriter<'_>) -> Result<Extracted> {
        let resume = std::mem::take(&mut self.resume);
        let read = match self.table.fetch {
            Fetch::Listings(listings) => self.read_listings(listings, resume, writer).await,
            Fetch::FanOut { discover, exhaustive, envelope, parent_id_column, max_per_page } => {
                let routes = match self.fan_out {
                    FanOutMode::Exhaustive if !exhaustive.is_empty() => exhaustive,
                    _ => discover,
                };
                let children = Children { envelope, parent_id_column, max_per_page };
                self.read_fan_out(routes, children, resume, writer).await
            }
        };
        match read {
            Ok(()) => Ok(Extracted::Done),
            Err(Halt::Pause(cursor, wait)) => Ok(Extracted::Paused {
                cursor,
                not_before: wait.as_ref().map(|w| w.until),
                failing: wait.and_then(|w| w.failing),
            }),
            Err(Halt::Fail(e)) => Err(e),
        }
    }

    fn should_pause(&self) -> bool {
        self.pages_read > 0 && self.deadline.is_some_and(|d| Instant::now() >= d)
    }

    /// Ids the deleted feed lists (deleted or newly restricted) since a second before `since`
    /// (Capsule's timestamps have second precision); the first page of 100 is enough to tell
    /// whether anything new appeared during a pass.
    async fn deleted_ids(&self, feed: &str, since: DateTime<Utc>) -> Result<BTreeSet<i64>> {
        let since = since_param(since - chrono::Duration::seconds(1));
        let url = self.client.url(feed, &[("since", since.as_str()), ("perPage", "100")])?;
        let (body, _) = self.client.get_json(&url).await?;
        Ok(body
            .values()
            .filter_map(Value::as_array)
            .flatten()
            .filter_map(|item| item.get("id").and_then(Value::as_i64))
            .collect())
    }

    /// Every listing of the plan in order; a listing whose pages shifted is read again.
    async fn read_listings(
        &mut self,
        listings: &[Listing],
        resume: Cursor,
        writer: &mut PartWriter<'_>,
    ) -> Result<(), Halt> {
        if self.rows_from_snapshot(listings, writer).await? {
            return Ok(());
        }
        let mut at = resume;
        at.pass_started.get_or_insert(self.started);
        self.carry_over(&mut at, writer).await?;
        while let Some(listing) = listings.get(at.listing) {
            if !at.checking {
                if at.next_url.is_none() {
                    self.begin_pass(listing, &mut at).await?;
                }
                self.read_listing(listing, &mut at, writer).await?;
                at.checking = true;
            }
            if self.pages_shifted(listing, &at).await? {
                at = Cursor {
                    listing: at.listing,
                    pass: at.pass + 1,
                    pass_started: Some(Utc::now()),
                    ..Cursor::default()
                };
                self.log_reread(listing, at.pass);
                continue;
            }
            at = Cursor { listing: at.listing + 1, pass_started: Some(Utc::now()), ..Cursor::default() };
        }
        Ok(())
    }

    /// A fresh run of a table whose listing another table of this sync has read (employees:
    /// parties): that table's snapshot stands in for every page, if it can (why not is logged).
    /// Its records changed within this run's window become rows as a page's would. True when
    /// the snapshot was read.
    async fn rows_from_snapshot(&mut self, listings: &[Listing], writer: &mut PartWriter<'_>) -> Result<bool> {
        let Some(snapshot) = self.listing_snapshot.take() else { return Ok(false) };
        // A table whose listing is shared has that one listing (a catalog test checks it).
        let [listing] = listings else { return Ok(false) };
        let snapshot = match snapshot {
            Ok(snapshot) => snapshot,
            Err(why) => {
                let message = format!("reading {}: {why}", listing.path);
                self.log.info(Event::ListingShared, message, serde_json::json!({"why": why}));
                return Ok(false);
            }
        };
        let source = catalog::table(&snapshot.table);
        let added = source.into_iter().flat_map(|t| t.added.iter().chain(METADATA_COLUMNS));
        let not_of_the_record: Vec<&str> = added.map(|c| c.name).collect();
        // What `since` would have returned (Capsule compares whole seconds).
        let window = self.since.map(|since| since.with_nanosecond(0).unwrap_or(since));
        let (mut records, written_before) = (0u64, writer.rows());
        let mut rows = SnapshotRows::new(self.sink, &snapshot);
        while let Some(mut record) = rows.next().await? {
            for name in &not_of_the_record {
                record.remove(name);
            }
            if window.is_some_and(|since| record.instant("updatedAt").is_some_and(|at| at < since)) {
                continue;
            }
            records += 1;
            self.write_record(listing, &record, writer).await?;
        }
        self.discovered_at = Some(snapshot.extracted_at);
        let message = format!(
            "{} rows from {records} records of the snapshot `{}` committed in this sync, as of {} (no page of {} read)",
            writer.rows() - written_before,
            snapshot.table,
            snapshot.extracted_at,
            listing.path
        );
        let fields = serde_json::json!({"from_table": snapshot.table, "records": records});
        self.log.info(Event::ListingShared, message, fields);
        self.report_reading(writer.rows());
        Ok(true)
    }

    /// A recent-window run's first step: the previous snapshot's older rows (once per run).
    async fn carry_over(&mut self, at: &mut Cursor, writer: &mut PartWriter<'_>) -> Result<(), Halt> {
        let Some(recent) = self.recent.as_mut() else { return Ok(()) };
        if let Some(carried) = at.carried_rows {
            recent.carried = Some(carried);
            return Ok(());
        }
        let window = &recent.window;
        let keep = |row: &RawRecord<'_>| !window.is_newer(row);
        let carried = window.carry_over(self.sink, self.run_id, &keep, writer).await?;
        recent.carried = Some(carried);
        log_carried(&self.log, &recent.window, carried, "reading the newer ones");
        at.carried_rows = Some(carried);
        Ok(())
    }

    /// Before a pass's first page: pause if the time is up, and note what the deleted feed
    /// already shows (that can't shift the pass's pages).
    async fn begin_pass(&mut self, listing: &Listing, at: &mut Cursor) -> Result<(), Halt> {
        if self.should_pause() {
            return Err(Halt::Pause(Box::new(at.clone()), None));
        }
        if let Some(feed) = listing.deleted_feed {
            let since = at.pass_started.unwrap_or(self.started);
            at.baseline = self.deleted_ids(feed, since).await.map_err(|e| halt_at(e, at))?.into_iter().collect();
        }
        Ok(())
    }

    /// After a pass's last page: whether records were deleted from pages already read while it
    /// ran (offset paging then skips one per deletion). Shifts after [`MAX_REREADS`] re-reads
    /// fail the run, so its bookmark stays and the next run reads the window again.
    async fn pages_shifted(&mut self, listing: &Listing, at: &Cursor) -> Result<bool, Halt> {
        let shifted = match listing.deleted_feed {
            Some(feed) => self.deleted_feed_grew(feed, at).await?,
            None => at.count.shrank(),
        };
        self.give_up_after_rereads(listing, shifted, at.pass)
    }

    /// A shift seen after [`MAX_REREADS`] re-reads fails the run (logged); before, the caller
    /// reads the listing again.
    fn give_up_after_rereads(&self, listing: &Listing, shifted: bool, pass: u32) -> Result<bool, Halt> {
        if !shifted || pass < MAX_REREADS {
            return Ok(shifted);
        }
        let message = format!(
            "records kept being deleted while {} was paged ({} passes): a record may have been skipped",
            listing.path,
            pass + 1
        );
        self.log.warn(Event::PagingShiftPersisted, message.clone(), serde_json::json!({"pass": pass}));
        let request = format!("GET {} (every page)", listing.path);
        Err(Halt::Fail(SyncError::Transient { request, message }))
    }

    fn log_reread(&self, listing: &Listing, pass: u32) {
        let message = format!(
            "records were deleted while {} was paged (offset paging may have skipped one): reading it again",
            listing.path
        );
        self.log.warn(Event::PagingShiftReread, message, serde_json::json!({"pass": pass}));
    }

    /// Whether the deleted feed lists ids it did not before the pass.
    async fn deleted_feed_grew(&mut self, feed: &str, at: &Cursor) -> Result<bool, Halt> {
        let since = at.pass_started.unwrap_or(self.started);
        let now = self.deleted_ids(feed, since).await.map_err(|e| halt_at(e, at))?;
        let baseline: BTreeSet<i64> = at.baseline.iter().copied().collect();
        Ok(!now.is_subset(&baseline))
    }

    /// Early in a pass (after its first page, when more follow; or the first page after a
    /// resume that interrupted the count): how many records the listing holds now. `page_url`
    /// is a page of the listing (any page: the count asks for others by number).
    async fn count_at_start(
        &mut self,
        envelope: &str,
        count: &PassCount,
        page_url: Option<&str>,
        at: &Cursor,
    ) -> Result<Option<usize>, Halt> {
        let Some(url) = page_url.filter(|_| count.at_start.is_none()) else { return Ok(None) };
        let url = Url::parse(url).map_err(|e| SyncError::Internal(format!("page URL `{url}`: {e}")))?;
        Ok(Some(self.count_records(&url, count.per_page, envelope, at).await?))
    }

    /// How many records a listing holds now, from a page's URL and size ([`count_records`]).
    async fn count_records(
        &mut self,
        first: &Url,
        per_page: usize,
        envelope: &str,
        at: &Cursor,
    ) -> Result<usize, Halt> {
        let counted = count_records(self.client, first, per_page, envelope).await.map_err(|e| halt_at(e, at))?;
        self.pages_read += counted.requests;
        Ok(counted.records)
    }

    /// Pages through one listing from `at.next_url` (or its first page) and writes its rows.
    async fn read_listing(
        &mut self,
        listing: &Listing,
        at: &mut Cursor,
        writer: &mut PartWriter<'_>,
    ) -> Result<(), Halt> {
        let url = match parse_cursor_url(&at.next_url)? {
            Some(url) => url,
            None => self.first_url(listing)?,
        };
        let extra_keys: Vec<&str> = listing.extra_envelopes.iter().map(|e| e.key).collect();
        let mut pager = Pager::new(self.client, url, listing.envelope, extra_keys);
        pager.log = Some(self.log.clone());
        loop {
            at.next_url = pager.peek_next().map(Url::to_string);
            let Some(page) = pager.next_page().await.map_err(|e| halt_at(e, at))? else { break };
            self.pages_read += 1;
            let this_page = at.next_url.take();
            at.count.read_page(page.len());
            let records = page.records().collect::<Result<Vec<_>>>()?;
            let last_page = self.reaches_cutoff(&records);
            self.write_page(listing, &page, records, writer).await?;
            if last_page {
                break;
            }
            at.next_url = pager.peek_next().map(Url::to_string);
            // A recent window is a few pages; counting the whole listing would cost more.
            if listing.deleted_feed.is_none() && at.next_url.is_some() && self.recent.is_none() {
                // A pause while counting resumes after this page (the cursor), count still to do.
                if let Some(total) = self.count_at_start(listing.envelope, &at.count, this_page.as_deref(), at).await? {
                    at.count.at_start = Some(total);
                }
            }
            if let Some(next) = pager.peek_next()
                && self.should_pause()
            {
                at.next_url = Some(next.to_string());
                return Err(Halt::Pause(Box::new(at.clone()), None));
            }
        }
        at.next_url = None;
        Ok(())
    }

    async fn write_page(
        &mut self,
        listing: &Listing,
        page: &ListingPage,
        records: Vec<RawRecord<'_>>,
        writer: &mut PartWriter<'_>,
    ) -> Result<()> {
        for record in &records {
            self.write_record(listing, record, writer).await?;
        }
        for (i, extra) in listing.extra_envelopes.iter().enumerate() {
            for record in page.extra_records(i) {
                let constants: &[Constant] = extra.constants;
                writer.write_line(self.rows.write(&record?, constants, &[], false)).await?;
            }
        }
        self.report_reading(writer.rows());
        Ok(())
    }

    /// A listed record as a row, if it is one: it passes the listing's filters, is within a
    /// recent read's window, and is a member (or, on a run from a bookmark, one that may have
    /// left: flagged).
    async fn write_record(
        &mut self,
        listing: &Listing,
        record: &RawRecord<'_>,
        writer: &mut PartWriter<'_>,
    ) -> Result<()> {
        if !matches_all(record, listing.filters) || self.recent.as_ref().is_some_and(|r| r.skips(record)) {
            return Ok(());
        }
        let flag = match listing.membership {
            None => None,
            Some(m) => match matches_all(record, m.conditions) {
                true => Some((m.removed_flag, Value::Bool(false))),
                // Perhaps a member before this change: the view needs to hear it left.
                false if self.from_bookmark => Some((m.removed_flag, Value::Bool(true))),
                false => return Ok(()),
            },
        };
        writer.write_line(self.rows.write(record, listing.constants, flag.as_slice(), true)).await
    }

    /// Recent-window reads: whether this page is the last one to read. A page out of
    /// newest-first order is logged, and the rest of the listing is read whole.
    fn reaches_cutoff(&mut self, records: &[RawRecord<'_>]) -> bool {
        let Some(recent) = self.recent.as_mut() else { return false };
        let was_disordered = recent.disordered;
        let reached = recent.page_reaches_cutoff(records);
        if recent.disordered && !was_disordered {
            let message = format!(
                "the listing is not newest first by {} as documented: reading the rest of it whole \
                 (rows older than {} may appear twice in this snapshot; the current view keeps one)",
                recent.window.recency.field(),
                recent.window.cutoff
            );
            self.log.warn(
                Event::RecentWindowDisorder,
                message,
                serde_json::json!({"field": recent.window.recency.field()}),
            );
        }
        reached
    }

    /// Discovers the parents (or loads those a checkpoint saved), then reads every parent's
    /// children from the resume point on. A recent read first carries over the children of the
    /// parents no discovered record changed, and then asks only the others.
    async fn read_fan_out(
        &mut self,
        routes: &[ParentDiscovery],
        children: Children,
        resume: Cursor,
        writer: &mut PartWriter<'_>,
    ) -> Result<(), Halt> {
        self.discovered_at = self.discovered_at.or(resume.discovered_at);
        let (found, saved) = self.parents(routes, &resume).await?;
        let parents = self.carry_over_unchanged(found, &resume, children, writer).await?;
        let todo: Vec<Parent> = parents
            .into_iter()
            .filter(|(path, _, id)| resume.parent.as_ref().is_none_or(|at| (path.clone(), *id) >= *at))
            .collect();
        let read = self.write_children(&todo, children, writer).await;
        // Only a run that pauses needs its parents again: saved then, for its continuations.
        if matches!(read, Err(Halt::Pause(..))) && !saved {
            let key = output::parents_key(self.integration, self.table.name, self.run_id);
            self.save_parents(&key, &Found { parents: todo.into_iter().collect(), changed: None }).await?;
        }
        read
    }

    /// The parents whose children are to be asked. A recent read asks only the changed ones and,
    /// once per run, carries the others' children over from the previous snapshot; parents no
    /// longer discovered lose theirs.
    async fn carry_over_unchanged(
        &mut self,
        found: Found,
        resume: &Cursor,
        children: Children,
        writer: &mut PartWriter<'_>,
    ) -> Result<Vec<Parent>, Halt> {
        let (Some(recent), Some(changed)) = (self.recent.as_mut(), found.changed) else {
            // A whole read, or the remaining (changed) parents a paused recent read saved.
            if let Some(recent) = self.recent.as_mut() {
                recent.carried = resume.carried_rows;
            }
            return Ok(found.parents.into_iter().collect());
        };
        // Asked: the changed parents, and those of the rolling refresh's due slices.
        let refreshes = |id: i64| recent.window.slices.as_ref().is_some_and(|s| s.refreshes(id));
        let (ask, unchanged): (Vec<Parent>, Vec<Parent>) = found
            .parents
            .into_iter()
            .partition(|(path, _, id)| changed.contains(&(path.clone(), *id)) || refreshes(*id));
        let refreshed = ask.iter().filter(|(path, _, id)| !changed.contains(&(path.clone(), *id))).count();
        if let Some(carried) = resume.carried_rows {
            recent.carried = Some(carried);
            return Ok(ask);
        }
        let unchanged: BTreeSet<(Option<String>, i64)> = unchanged.into_iter().map(|(_, e, id)| (e, id)).collect();
        let keep = |row: &RawRecord<'_>| {
            let entity = row.str("entity").map(|e| e.into_owned());
            let id = row.get(children.parent_id_column).and_then(|id| id.get().parse::<i64>().ok());
            id.is_some_and(|id| unchanged.contains(&(entity, id)))
        };
        let carried = recent.window.carry_over(self.sink, self.run_id, &keep, writer).await?;
        recent.carried = Some(carried);
        let asking = match recent.window.slices.as_ref().filter(|s| !s.due.is_empty()) {
            Some(slices) => format!(
                "asking the {} parents changed since, or unchanged but in a slice the rolling refresh \
                 asks again ({refreshed} parents, slices {:?})",
                ask.len(),
                slices.due
            ),
            None => format!("asking the {} parents changed since", ask.len()),
        };
        log_carried(&self.log, &recent.window, carried, &asking);
        Ok(ask)
    }

    /// Reads every parent's children, in parent order, and writes them.
    async fn write_children(
        &mut self,
        todo: &[Parent],
        children: Children,
        writer: &mut PartWriter<'_>,
    ) -> Result<(), Halt> {
        let parents_key = Some(output::parents_key(self.integration, self.table.name, self.run_id));
        let (carried_rows, discovered_at) = (self.recent.as_ref().and_then(|r| r.carried), self.discovered_at);
        let at_parent = |i: usize| Cursor {
            parent: todo.get(i).map(|(path, _, id)| (path.clone(), *id)),
            parents_key: parents_key.clone(),
            carried_rows,
            discovered_at,
            ..Cursor::default()
        };
        // Children are fetched FAN_OUT_CONCURRENCY parents at a time (they are small: a page or
        // two each) and written in parent order; a pause happens between parents.
        let (client, log) = (self.client, self.log.clone());
        // The children's paths are owned and each fetch is made when the stream asks for it:
        // futures made up front would hold one request's state per parent (tens of thousands
        // on a big account). Owned paths also keep the run's future `Send` (a stream over a
        // borrowed iterator would not be, a higher-ranked lifetime limitation of the compiler).
        let paths: Vec<String> =
            todo.iter().map(|(child_path, _, id)| child_path.replace("{id}", &id.to_string())).collect();
        let mut fetched = futures::stream::iter(paths)
            .map(|path| {
                let log = log.clone();
                async move { read_children(client, &path, children.envelope, children.max_per_page, log).await }
            })
            .buffered(FAN_OUT_CONCURRENCY);
        let mut i = 0;
        while let Some(result) = fetched.next().await {
            let pages = result.map_err(|e| halt_at(e, &at_parent(i)))?;
            let (_, entity, id) = &todo[i];
            let mut parent_columns: Vec<(&'static str, Value)> = vec![(children.parent_id_column, Value::from(*id))];
            if let Some(entity) = entity {
                parent_columns.push(("entity", Value::String(entity.clone())));
            }
            for record in pages.iter().flat_map(ListingPage::records) {
                writer.write_line(self.rows.write(&record?, &[], &parent_columns, true)).await?;
            }
            self.pages_read += pages.len() as u64;
            self.report_reading(writer.rows());
            i += 1;
            if i < todo.len() && self.should_pause() {
                return Err(Halt::Pause(Box::new(at_parent(i)), None));
            }
        }
        Ok(())
    }

    /// The parents to read, and whether a checkpoint already saved all of them: from that saved
    /// list, or discovered now (resuming a discovery that paused part way, whose parents so far
    /// are saved when it pauses).
    async fn parents(&mut self, routes: &[ParentDiscovery], resume: &Cursor) -> Result<(Found, bool), Halt> {
        let saved = match &resume.parents_key {
            Some(key) => self.load_parents(key).await?,
            None => Found::default(),
        };
        if resume.parents_key.is_some() && resume.discovery.is_none() {
            return Ok((saved, true));
        }
        let mut found = saved;
        // A recent read notes which parents changed, from the first discovered record on.
        if resume.discovery.is_none() && self.recent.is_some() {
            found.changed = Some(BTreeSet::new());
        }
        // Set only for a fresh run (no saved parents, no discovery part way).
        let snapshot = self.listing_snapshot.take();
        let not_shared = snapshot.as_ref().and_then(|s| s.as_ref().err()).map(|why| format!(" (read: {why})"));
        if let Some(Ok(snapshot)) = snapshot {
            self.discover_from_snapshot(routes, &snapshot, &mut found).await?;
            self.discovered_at = Some(snapshot.extracted_at);
            let message = format!(
                "{} parents found in the snapshot `{}` committed in this sync, as of {} (the listing is not read again)",
                found.parents.len(),
                snapshot.table,
                snapshot.extracted_at
            );
            let fields = serde_json::json!({"parents": found.parents.len(), "from_table": snapshot.table});
            self.log.info(Event::ParentsDiscovered, message, fields);
            return Ok((found, false));
        }
        let from = resume.discovery.clone().unwrap_or_default();
        if let Err(halt) = self.discover_parents(routes, from, &mut found).await {
            if let Halt::Pause(..) = &halt {
                let key = output::parents_key(self.integration, self.table.name, self.run_id);
                self.save_parents(&key, &found).await?;
            }
            return Err(halt);
        }
        let fields = serde_json::json!({"parents": found.parents.len()});
        let message = format!("{} parents found{}", found.parents.len(), not_shared.unwrap_or_default());
        self.log.info(Event::ParentsDiscovered, message, fields);
        Ok((found, false))
    }

    async fn load_parents(&self, key: &str) -> Result<Found> {
        let bytes = self.sink.get(key).await?.ok_or_else(|| {
            SyncError::State(format!("the checkpoint names the discovered parents at {key}, which is missing"))
        })?;
        Found::parse(&bytes).map_err(|e| SyncError::State(format!("{key} is not a list of parents: {e}")))
    }

    async fn save_parents(&self, key: &str, found: &Found) -> Result<()> {
        self.sink.put(key, found.body()?).await
    }

    /// Reads the discovery listings from `from` on, adding (child path template, entity, parent
    /// id) to `found`. A pause carries the discovery's position.
    async fn discover_parents(
        &mut self,
        routes: &[ParentDiscovery],
        from: Discovery,
        found: &mut Found,
    ) -> Result<(), Halt> {
        let parents_key = Some(output::parents_key(self.integration, self.table.name, self.run_id));
        let mut at = from;
        while let Some(route) = routes.get(at.route) {
            let url = match parse_cursor_url(&at.next_url)? {
                Some(url) => url,
                None => self.first_url(&route.listing)?,
            };
            let mut pager = Pager::new(self.client, url, route.listing.envelope, Vec::new());
            loop {
                at.next_url = pager.peek_next().map(Url::to_string);
                let cursor =
                    Cursor { discovery: Some(at.clone()), parents_key: parents_key.clone(), ..Cursor::default() };
                let Some(page) = pager.next_page().await.map_err(|e| halt_at(e, &cursor))? else { break };
                self.pages_read += 1;
                let this_page = at.next_url.clone();
                at.count.read_page(page.len());
                if pager.peek_next().is_some() {
                    at.next_url = pager.peek_next().map(Url::to_string);
                    let cursor =
                        Cursor { discovery: Some(at.clone()), parents_key: parents_key.clone(), ..Cursor::default() };
                    let envelope = route.listing.envelope;
                    if let Some(total) = self.count_at_start(envelope, &at.count, this_page.as_deref(), &cursor).await?
                    {
                        at.count.at_start = Some(total);
                    }
                }
                for record in page.records() {
                    self.note_parents(route, &record?, found);
                }
                if let Some(next) = pager.peek_next()
                    && self.should_pause()
                {
                    at.next_url = Some(next.to_string());
                    let cursor = Cursor { discovery: Some(at), parents_key, ..Cursor::default() };
                    return Err(Halt::Pause(Box::new(cursor), None));
                }
            }
            if self.give_up_after_rereads(&route.listing, at.count.shrank(), at.pass)? {
                at = Discovery { route: at.route, pass: at.pass + 1, ..Discovery::default() };
                self.log_reread(&route.listing, at.pass);
                continue;
            }
            at = Discovery { route: at.route + 1, ..Discovery::default() };
        }
        Ok(())
    }

    /// Adds the parents a discovery record names (if it passes the route's filters); for a
    /// recent read, notes them changed if the record changed since the cutoff.
    fn note_parents(&self, route: &ParentDiscovery, record: &RawRecord<'_>, found: &mut Found) {
        if !matches_all(record, route.listing.filters) {
            return;
        }
        let changed = self.recent.as_ref().is_some_and(|r| r.window.marks_changed(record));
        for target in route.targets {
            if let Some(id) = record.value(target.id_field).as_ref().and_then(Value::as_i64) {
                found.add((target.child_path.to_string(), target.entity.map(str::to_string), id), changed);
            }
        }
    }

    /// Discovers the parents from the rows of another table's snapshot of the same listing.
    async fn discover_from_snapshot(
        &self,
        routes: &[ParentDiscovery],
        snapshot: &RunManifest,
        found: &mut Found,
    ) -> Result<()> {
        let mut rows = SnapshotRows::new(self.sink, snapshot);
        while let Some(row) = rows.next().await? {
            for route in routes {
                self.note_parents(route, &row, found);
            }
        }
        Ok(())
    }

    fn first_url(&self, listing: &Listing) -> Result<Url> {
        let per_page = listing.max_per_page.to_string();
        let since = self.since.map(since_param);
        let mut params: Vec<(&str, &str)> = listing.params.to_vec();
        params.push(("perPage", &per_page));
        // Only the table's own listings take `since`; fanned-out children and discovery don't.
        if let Some(since) = since.as_deref()
            && self.table.replication.uses_since()
        {
            params.push(("since", since));
        }
        self.client.url(listing.path, &params)
    }
}

/// Discovered parents, and for a recent read those a record changed since the cutoff names
/// (`None` once only the parents left to ask are kept).
#[derive(Debug, Default)]
struct Found {
    parents: BTreeSet<Parent>,
    changed: Option<BTreeSet<(String, i64)>>,
}

impl Found {
    fn add(&mut self, parent: Parent, changed: bool) {
        if let Some(set) = self.changed.as_mut().filter(|_| changed) {
            set.insert((parent.0.clone(), parent.2));
        }
        self.parents.insert(parent);
    }

    /// As saved beside the checkpoint: a list of parents, or with a recent read's changed ones
    /// `{"parents": [...], "changed": [...]}`.
    fn body(&self) -> Result<Bytes> {
        #[derive(serde::Serialize)]
        struct WithChanged<'a> {
            parents: &'a BTreeSet<Parent>,
            changed: &'a BTreeSet<(String, i64)>,
        }
        let body = match &self.changed {
            None => serde_json::to_vec(&self.parents),
            Some(changed) => serde_json::to_vec(&WithChanged { parents: &self.parents, changed }),
        };
        body.map(Bytes::from).map_err(|e| SyncError::Internal(format!("parents: {e}")))
    }

    fn parse(bytes: &[u8]) -> serde_json::Result<Found> {
        #[derive(serde::Deserialize)]
        #[serde(untagged)]
        enum Saved {
            List(BTreeSet<Parent>),
            WithChanged { parents: BTreeSet<Parent>, changed: BTreeSet<(String, i64)> },
        }
        Ok(match serde_json::from_slice(bytes)? {
            Saved::List(parents) => Found { parents, changed: None },
            Saved::WithChanged { parents, changed } => Found { parents, changed: Some(changed) },
        })
    }
}

/// Logs what a recent read carried over, and what it reads from Capsule instead.
fn log_carried(log: &RunLog, window: &super::recent::Window, carried: u64, then: &str) {
    let message = format!(
        "carried over {carried} rows from run {} (unchanged since {}); {then}",
        window.base.run_id, window.cutoff
    );
    log.info(Event::RecentWindowRead, message, serde_json::json!({"carried_rows": carried, "cutoff": window.cutoff}));
}

/// How a fan-out table reads each parent's children.
#[derive(Clone, Copy)]
struct Children {
    envelope: &'static str,
    parent_id_column: &'static str,
    max_per_page: u32,
}

/// Re-reads of one listing after deletions shifted its pages, at most.
const MAX_REREADS: u32 = 2;

/// Parents whose children are fetched at the same time (they share the token's rate limit).
const FAN_OUT_CONCURRENCY: usize = 4;

/// Every page of one parent's children (a 404 means the parent is gone: no children).
async fn read_children(
    client: &CapsuleClient,
    path: &str,
    envelope: &str,
    max_per_page: u32,
    log: RunLog,
) -> Result<Vec<ListingPage>> {
    let per_page = max_per_page.to_string();
    let url = client.url(path, &[("perPage", per_page.as_str())])?;
    let mut pager = Pager::new(client, url, envelope, Vec::new());
    pager.missing_ok = true;
    pager.log = Some(log);
    let mut pages = Vec::new();
    while let Some(page) = pager.next_page().await? {
        pages.push(page);
    }
    Ok(pages)
}

fn parse_cursor_url(url: &Option<String>) -> Result<Option<Url>> {
    url.as_deref()
        .map(|u| Url::parse(u).map_err(|e| SyncError::Internal(format!("checkpoint holds a bad URL `{u}`: {e}"))))
        .transpose()
}
