//! Reading listings: each pass pages through one listing from the cursor, with the paging-shift
//! guard (a deleted feed that grew during the pass reads the listing again), counts for the live
//! view, the recent-window cutoff, and rows from the same job's snapshot instead of Capsule.

use std::collections::BTreeSet;

use chrono::{DateTime, Timelike, Utc};
use serde_json::Value;
use url::Url;

use super::*;
use crate::engine::row::matches_all;
use crate::engine::snapshot::SnapshotRows;
use crate::output::PartWriter;
use capsule_client::{ListingPage, RawRecord, count_records, since_param};
use capsule_core::catalog::{self, Constant, Listing, METADATA_COLUMNS};
use capsule_core::observe::Event;
use capsule_core::ports::{Cursor, PassCount};
use capsule_core::{Result, SyncError};

/// Re-reads of one listing after deletions shifted its pages, at most.
pub(super) const MAX_REREADS: u32 = 2;

impl Extraction<'_> {
    /// Ids the deleted feed lists (deleted or newly restricted) since a second before `since`
    /// (Capsule's timestamps have second precision); the first page of 100 is enough to tell
    /// whether anything new appeared during a pass.
    pub(super) async fn deleted_ids(&self, feed: &str, since: DateTime<Utc>) -> Result<BTreeSet<i64>> {
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
    pub(super) async fn read_listings(
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
    pub(super) async fn rows_from_snapshot(
        &mut self,
        listings: &[Listing],
        writer: &mut PartWriter<'_>,
    ) -> Result<bool> {
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

    /// Before a pass's first page: park if the time is up, and note what the deleted feed
    /// already shows (that can't shift the pass's pages).
    pub(super) async fn begin_pass(&mut self, listing: &Listing, at: &mut Cursor) -> Result<(), Halt> {
        if self.should_park() {
            return Err(Halt::Park(Box::new(at.clone()), None));
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
    pub(super) async fn pages_shifted(&mut self, listing: &Listing, at: &Cursor) -> Result<bool, Halt> {
        let shifted = match listing.deleted_feed {
            Some(feed) => self.deleted_feed_grew(feed, at).await?,
            None => at.count.shrank(),
        };
        self.give_up_after_rereads(listing, shifted, at.pass)
    }

    /// A shift seen after [`MAX_REREADS`] re-reads fails the run (logged); before, the caller
    /// reads the listing again.
    pub(super) fn give_up_after_rereads(&self, listing: &Listing, shifted: bool, pass: u32) -> Result<bool, Halt> {
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

    pub(super) fn log_reread(&self, listing: &Listing, pass: u32) {
        let message = format!(
            "records were deleted while {} was paged (offset paging may have skipped one): reading it again",
            listing.path
        );
        self.log.warn(Event::PagingShiftReread, message, serde_json::json!({"pass": pass}));
    }

    /// Whether the deleted feed lists ids it did not before the pass.
    pub(super) async fn deleted_feed_grew(&mut self, feed: &str, at: &Cursor) -> Result<bool, Halt> {
        let since = at.pass_started.unwrap_or(self.started);
        let now = self.deleted_ids(feed, since).await.map_err(|e| halt_at(e, at))?;
        let baseline: BTreeSet<i64> = at.baseline.iter().copied().collect();
        Ok(!now.is_subset(&baseline))
    }

    /// Early in a pass (after its first page, when more follow; or the first page after a
    /// resume that cut the count short): how many records the listing holds now. `page_url`
    /// is a page of the listing (any page: the count asks for others by number).
    pub(super) async fn count_at_start(
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
    pub(super) async fn count_records(
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
    pub(super) async fn read_listing(
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
                // A park while counting resumes after this page (the cursor), count still to do.
                if let Some(total) = self.count_at_start(listing.envelope, &at.count, this_page.as_deref(), at).await? {
                    at.count.at_start = Some(total);
                }
            }
            if let Some(next) = pager.peek_next()
                && self.should_park()
            {
                at.next_url = Some(next.to_string());
                return Err(Halt::Park(Box::new(at.clone()), None));
            }
        }
        at.next_url = None;
        Ok(())
    }

    pub(super) async fn write_page(
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
    pub(super) async fn write_record(
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
    pub(super) fn reaches_cutoff(&mut self, records: &[RawRecord<'_>]) -> bool {
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

    pub(super) fn first_url(&self, listing: &Listing) -> Result<Url> {
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
