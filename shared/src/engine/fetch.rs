//! Executes a table's fetch plan: page through its listings (or discover parents, then page
//! through each parent's children) and hand every row to the part writer. One code path for
//! all 22 tables; what differs is the catalog entry.

use std::collections::BTreeSet;
use std::time::Instant;

use futures::StreamExt;

use serde_json::{Map, Value};
use url::Url;

use super::row::{RowBuilder, get_path, matches_all};
use crate::capsule::{CapsuleClient, ListingPage};
use crate::catalog::{Constant, Fetch, Listing, ParentDiscovery, TableSpec};
use crate::integration::FanOutMode;
use crate::output::PartWriter;
use crate::ports::Cursor;
use crate::runlog::RunLog;
use crate::{Result, SyncError};

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
                self.next = page.page.next.clone();
                Ok(Some(page))
            }
            Err(SyncError::Rejected { status: 404, .. }) if self.missing_ok => {
                let message = format!("{} answered 404: the parent no longer exists; skipped", url.path());
                match &self.log {
                    Some(log) => log.info("parent_gone", message, Value::Null),
                    None => tracing::info!(event = "parent_gone", "{message}"),
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
    /// Stopped near the deadline; resume at this cursor.
    Paused(Cursor),
}

/// Everything an extraction needs.
pub struct Extraction<'a> {
    pub client: &'a CapsuleClient,
    pub table: &'static TableSpec,
    pub since: Option<chrono::DateTime<chrono::Utc>>,
    pub fan_out: FanOutMode,
    pub rows: RowBuilder,
    pub progress: Option<&'a (dyn Fn(u64) + Send + Sync)>,
    /// Pause (between pages) once this instant has passed.
    pub deadline: Option<Instant>,
    /// Where to start: the default cursor for a fresh run, a checkpoint's for a continuation.
    pub resume: Cursor,
    /// Pages read by this invocation: at least one before pausing, so every invocation progresses.
    pub pages_read: u64,
    pub log: RunLog,
    /// T0 of the run.
    pub started: chrono::DateTime<chrono::Utc>,
}

impl Extraction<'_> {
    /// Ids the deleted feed lists (deleted or newly restricted) since a second before `since`
    /// (Capsule's timestamps have second precision); the first page of 100 is enough to tell
    /// whether anything new appeared during a pass.
    async fn deleted_ids(&self, feed: &str, since: chrono::DateTime<chrono::Utc>) -> Result<BTreeSet<i64>> {
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

    fn should_pause(&self) -> bool {
        self.pages_read > 0 && self.deadline.is_some_and(|d| Instant::now() >= d)
    }

    pub async fn run(&mut self, writer: &mut PartWriter<'_>) -> Result<Extracted> {
        let resume = std::mem::take(&mut self.resume);
        match self.table.fetch {
            Fetch::Listings(listings) => {
                let mut i = resume.listing;
                let mut start = parse_cursor_url(&resume.next_url)?;
                let mut pass = resume.pass;
                let mut pass_started = resume.pass_started.unwrap_or(self.started);
                let mut baseline: BTreeSet<i64> = resume.baseline.into_iter().collect();
                while let Some(listing) = listings.get(i) {
                    if start.is_none() {
                        if self.should_pause() {
                            let cursor = Cursor { listing: i, pass, ..Cursor::default() };
                            return Ok(Extracted::Paused(cursor));
                        }
                        // A new pass: what the deleted feed already shows can't shift its pages.
                        if let Some(feed) = listing.deleted_feed {
                            baseline = self.deleted_ids(feed, pass_started).await?;
                        }
                    }
                    if let Some(next) = self.read_listing(listing, start.take(), writer).await? {
                        return Ok(Extracted::Paused(Cursor {
                            listing: i,
                            parent: None,
                            next_url: Some(next.to_string()),
                            pass,
                            pass_started: Some(pass_started),
                            baseline: baseline.into_iter().collect(),
                        }));
                    }
                    if let Some(feed) = listing.deleted_feed
                        && pass < MAX_REREADS
                        && !self.deleted_ids(feed, pass_started).await?.is_subset(&baseline)
                    {
                        pass += 1;
                        pass_started = chrono::Utc::now();
                        let message = format!(
                            "records were deleted while {} was paged (offset paging may have skipped one): reading it again",
                            listing.path
                        );
                        self.log.warn("paging_shift_reread", message, serde_json::json!({"pass": pass}));
                        continue;
                    }
                    i += 1;
                    pass = 0;
                    pass_started = chrono::Utc::now();
                }
                Ok(Extracted::Done)
            }
            Fetch::FanOut { discover, exhaustive, envelope, parent_id_column, max_per_page } => {
                let routes = match self.fan_out {
                    FanOutMode::Exhaustive if !exhaustive.is_empty() => exhaustive,
                    _ => discover,
                };
                let parents = self.discover_parents(routes).await?;
                let fields = serde_json::json!({"parents": parents.len()});
                self.log.info("parents_discovered", format!("{} parents to read", parents.len()), fields);
                // Children are fetched FAN_OUT_CONCURRENCY parents at a time (they are small: a
                // page or two each) and written in parent order; a pause happens between parents.
                let todo: Vec<&(&'static str, Option<&'static str>, i64)> = parents
                    .iter()
                    .filter(|(path, _, id)| resume.parent.as_ref().is_none_or(|at| (path.to_string(), *id) >= *at))
                    .collect();
                let client = self.client;
                let log = self.log.clone();
                // Collected first: a lazily borrowed iterator in the stream would make the run's
                // future not `Send` (a higher-ranked lifetime limitation of the compiler).
                let fetches: Vec<_> = todo
                    .iter()
                    .map(|(child_path, _, id)| {
                        let (log, path) = (log.clone(), child_path.replace("{id}", &id.to_string()));
                        async move { read_children(client, &path, envelope, max_per_page, log).await }
                    })
                    .collect();
                let mut fetched = futures::stream::iter(fetches).buffered(FAN_OUT_CONCURRENCY);
                let mut i = 0;
                while let Some(children) = fetched.next().await {
                    let (child_path, entity, id) = *todo[i];
                    let (items, pages) = children?;
                    let mut parent_columns: Vec<(&'static str, Value)> = vec![(parent_id_column, Value::from(id))];
                    if let Some(entity) = entity {
                        parent_columns.push(("entity", Value::String(entity.to_string())));
                    }
                    for item in items {
                        let record = into_object(item, &Listing::plain(child_path, envelope, max_per_page))?;
                        let row = self.rows.build(record, &[], &parent_columns, true);
                        writer.write_row(&row).await?;
                    }
                    self.pages_read += pages;
                    if let Some(progress) = self.progress {
                        progress(writer.rows());
                    }
                    i += 1;
                    if let Some((next_path, _, next_id)) = todo.get(i)
                        && self.should_pause()
                    {
                        let parent = Some((next_path.to_string(), *next_id));
                        return Ok(Extracted::Paused(Cursor { listing: 0, parent, ..Cursor::default() }));
                    }
                }
                Ok(Extracted::Done)
            }
        }
    }

    /// Pages through one listing (from `start`, or its first page) and writes its rows.
    /// Returns the next page's URL when it paused for the deadline.
    async fn read_listing(
        &mut self,
        listing: &Listing,
        start: Option<Url>,
        writer: &mut PartWriter<'_>,
    ) -> Result<Option<Url>> {
        let url = match start {
            Some(url) => url,
            None => self.first_url(listing)?,
        };
        let extra_keys: Vec<&str> = listing.extra_envelopes.iter().map(|e| e.key).collect();
        let mut pager = Pager::new(self.client, url, listing.envelope, extra_keys);
        pager.log = Some(self.log.clone());
        while let Some(page) = pager.next_page().await? {
            self.pages_read += 1;
            for item in page.page.items {
                let record = into_object(item, listing)?;
                if matches_all(&record, listing.filters) {
                    let row = self.rows.build(record, listing.constants, &[], true);
                    writer.write_row(&row).await?;
                }
            }
            for (extra, items) in listing.extra_envelopes.iter().zip(page.extras) {
                for item in items {
                    let record = into_object(item, listing)?;
                    let constants: &[Constant] = extra.constants;
                    let row = self.rows.build(record, constants, &[], false);
                    writer.write_row(&row).await?;
                }
            }
            if let Some(progress) = self.progress {
                progress(writer.rows());
            }
            if let Some(next) = pager.peek_next()
                && self.should_pause()
            {
                return Ok(Some(next.clone()));
            }
        }
        Ok(None)
    }

    /// Reads the discovery listings and returns (child path template, entity, parent id), deduplicated.
    async fn discover_parents(
        &mut self,
        routes: &[ParentDiscovery],
    ) -> Result<BTreeSet<(&'static str, Option<&'static str>, i64)>> {
        let mut parents = BTreeSet::new();
        for route in routes {
            let url = self.first_url(&route.listing)?;
            let mut pager = Pager::new(self.client, url, route.listing.envelope, Vec::new());
            while let Some(page) = pager.next_page().await? {
                for item in page.page.items {
                    let record = into_object(item, &route.listing)?;
                    if !matches_all(&record, route.listing.filters) {
                        continue;
                    }
                    for target in route.targets {
                        if let Some(id) = get_path(&record, target.id_field).and_then(Value::as_i64) {
                            parents.insert((target.child_path, target.entity, id));
                        }
                    }
                }
            }
        }
        Ok(parents)
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

/// Re-reads of one listing after deletions shifted its pages, at most.
const MAX_REREADS: u32 = 2;

/// Parents whose children are fetched at the same time (they share the token's rate limit).
const FAN_OUT_CONCURRENCY: usize = 4;

/// Every page of one parent's children (a 404 means the parent is gone: no children). Returns
/// the items and the number of pages read.
async fn read_children(
    client: &CapsuleClient,
    path: &str,
    envelope: &str,
    max_per_page: u32,
    log: RunLog,
) -> Result<(Vec<Value>, u64)> {
    let per_page = max_per_page.to_string();
    let url = client.url(path, &[("perPage", per_page.as_str())])?;
    let mut pager = Pager::new(client, url, envelope, Vec::new());
    pager.missing_ok = true;
    pager.log = Some(log);
    let (mut items, mut pages) = (Vec::new(), 0);
    while let Some(page) = pager.next_page().await? {
        items.extend(page.page.items);
        pages += 1;
    }
    Ok((items, pages))
}

fn parse_cursor_url(url: &Option<String>) -> Result<Option<Url>> {
    url.as_deref()
        .map(|u| Url::parse(u).map_err(|e| SyncError::Internal(format!("checkpoint holds a bad URL `{u}`: {e}"))))
        .transpose()
}

fn into_object(item: Value, listing: &Listing) -> Result<Map<String, Value>> {
    match item {
        Value::Object(map) => Ok(map),
        other => Err(SyncError::BadResponse {
            request: format!("GET {}", listing.path),
            message: format!("an item of `{}` is not an object: {other}", listing.envelope),
        }),
    }
}
