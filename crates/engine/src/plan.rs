//! The quota plan: before a first load, how many requests (and hours of the token's hourly
//! quota) a full load and each scheduled run of an integration will take, table by table.
//!
//! Sizes come from the account itself: each listing is counted without being read
//! ([`count_records`]), and incremental tables and deleted feeds are counted again with `since`
//! one schedule interval ago (what a scheduled run reads). A fan-out table (tracks) costs one
//! request per parent that has children: its last successful run says how many, else a sample
//! of the discovery listing's first page is scaled up. The requests the engine adds on top (the
//! paging-shift guard) are counted as the engine spends them.

use std::collections::BTreeSet;

use chrono::{DateTime, Duration, Utc};
use serde::Serialize;
use url::Url;

use crate::engine::matches_all;
use crate::engine::recent::Recency;
use capsule_client::since_param;
use capsule_client::{CapsuleClient, ListingPage, RawRecord, count_records, count_requests, with_page};
use capsule_core::Result;
use capsule_core::catalog::{Fetch, Listing, Replication, TableSpec};
use capsule_core::integration::Integration;
use capsule_core::ports::{RunState, TableRunRecord};

/// Capsule's documented limit per token and hour.
pub const HOURLY_LIMIT: u64 = 4000;

/// Pages of a fan-out table's discovery listing read to estimate its parents.
const SAMPLE_PAGES: u64 = 10;

/// One table's estimate.
#[derive(Debug, Clone, Serialize)]
pub struct TablePlan {
    pub table: &'static str,
    pub replication: &'static str,
    /// Rows a first load writes (None where a filter or fan-out makes it unknown up front).
    pub rows: Option<u64>,
    pub first_load_requests: u64,
    /// Rows and requests of one scheduled run after the first load.
    pub scheduled_rows: Option<u64>,
    pub scheduled_requests: u64,
    /// How the figures were found.
    pub basis: String,
}

/// The plan of an integration.
#[derive(Debug, Clone, Serialize)]
pub struct Plan {
    pub integration: String,
    pub tables: Vec<TablePlan>,
    /// Requests a run may spend per hour: the limit less the integration's reserve.
    pub usable_per_hour: u64,
    pub first_load_requests: u64,
    pub first_load_hours: f64,
    pub scheduled_requests: u64,
    pub scheduled_hours: f64,
    /// Scheduled runs per day, and their requests per day.
    pub runs_per_day: f64,
    pub daily_requests: u64,
    /// What making this plan cost.
    pub probe_requests: u64,
}

/// Estimates an integration's first load and scheduled runs. `history` is its run records
/// (any order); `now` is when the plan is made.
pub async fn plan(
    client: &CapsuleClient,
    integration: &Integration,
    history: &[TableRunRecord],
    now: DateTime<Utc>,
) -> Result<Plan> {
    let interval = Duration::minutes(i64::from(integration.frequency_minutes));
    let mut probe = Probe { client, requests: 0, newest: None };
    let mut tables = Vec::new();
    let selected = integration.selected_tables()?;
    for &spec in &selected {
        // A listing another selected table reads is read once (the dispatchers wait for it).
        let shares = spec.waits_for(&selected);
        let table = match spec.fetch {
            Fetch::Listings(_) if let Some(source) = shares => shared_listing(spec, source),
            Fetch::Listings(listings) => {
                let mut table = probe.listings(spec, listings, (integration.history_start, now - interval)).await?;
                if let Some(recent) = recent_share(integration, spec, probe.newest.as_ref(), now - interval) {
                    recent.apply(&mut table, integration);
                }
                table
            }
            Fetch::FanOut { discover, .. } => probe.fan_out(spec, discover, history, shares.is_some()).await?,
        };
        tables.push(table);
    }
    let usable_per_hour = HOURLY_LIMIT * u64::from(100 - integration.rate_reserve_percent.min(100)) / 100;
    let first_load_requests = tables.iter().map(|t| t.first_load_requests).sum();
    let scheduled_requests = tables.iter().map(|t| t.scheduled_requests).sum();
    let hours = |requests: u64| requests as f64 / usable_per_hour.max(1) as f64;
    let runs_per_day = 24.0 * 60.0 / f64::from(integration.frequency_minutes.max(1));
    Ok(Plan {
        integration: integration.name.to_string(),
        usable_per_hour,
        first_load_requests,
        first_load_hours: hours(first_load_requests),
        scheduled_requests,
        scheduled_hours: hours(scheduled_requests),
        runs_per_day,
        daily_requests: (scheduled_requests as f64 * runs_per_day).round() as u64,
        probe_requests: probe.requests,
        tables,
    })
}

/// A table whose rows are another selected table's snapshot of the same sync: no request.
fn shared_listing(spec: &'static TableSpec, source: &str) -> TablePlan {
    TablePlan {
        table: spec.name,
        replication: spec.replication.as_str(),
        rows: None,
        first_load_requests: 0,
        scheduled_rows: None,
        scheduled_requests: 0,
        basis: format!("read from the {source} snapshot of the same sync (no request)"),
    }
}

/// Pages of `n` records at `per_page` (an empty listing still takes one request).
fn pages(n: u64, per_page: u64) -> u64 {
    n.div_ceil(per_page).max(1)
}

/// What the paging-shift guard adds to a listing of `records`: the deleted feed asked before and
/// after, or, without one, the count of the listing the engine takes after its first page.
fn guard(listing: &Listing, records: u64) -> u64 {
    let per_page = u64::from(listing.max_per_page);
    match (records > per_page, listing.deleted_feed.is_some()) {
        (false, _) => 0,
        (true, true) => 2,
        (true, false) => count_requests(records as usize, per_page as usize),
    }
}

/// A recent-window table's scheduled cost: window reads, with a whole read every
/// `full_refresh_days`.
struct RecentShare {
    /// Records newer than one schedule interval (plus the lookback) ago, estimated from the
    /// listing's newest page.
    window_rows: u64,
    per_page: u64,
}

/// The recent-window estimate of a table, if the integration reads it that way.
fn recent_share(
    integration: &Integration,
    spec: &TableSpec,
    newest: Option<&ListingPage>,
    since: DateTime<Utc>,
) -> Option<RecentShare> {
    integration.recent_window?;
    let Some(Recency::NewestFirst(field)) = crate::engine::recent::recency(spec) else { return None };
    let Fetch::Listings([listing]) = spec.fetch else { return None };
    let cutoff = since - Duration::minutes(i64::from(integration.lookback_minutes));
    let instants: Vec<DateTime<Utc>> = newest?.records().filter_map(|r| r.ok()?.instant(field)).collect();
    let newer = instants.iter().filter(|t| **t >= cutoff).count() as u64;
    let window_rows = match (instants.first(), instants.last()) {
        // The page reaches past the cutoff: exact.
        _ if newer < instants.len() as u64 => newer,
        // Every record of the page is newer: scale by the time the page spans.
        (Some(first), Some(last)) if first > last => {
            let span = (*first - *last).num_seconds().max(1) as f64;
            let reach = (*first - cutoff).num_seconds().max(0) as f64;
            (instants.len() as f64 * reach / span).ceil() as u64
        }
        _ => newer,
    };
    Some(RecentShare { window_rows, per_page: u64::from(listing.max_per_page) })
}

impl RecentShare {
    /// Scheduled rows stay a whole snapshot (older rows are carried over); requests become the
    /// window's pages, averaged with a whole read every `full_refresh_days`.
    fn apply(&self, table: &mut TablePlan, integration: &Integration) {
        let Some(settings) = integration.recent_window else { return };
        let whole = table.scheduled_requests;
        let window = self.window_rows / self.per_page + 1;
        let runs_between = (f64::from(settings.full_refresh_days) * 24.0 * 60.0
            / f64::from(integration.frequency_minutes.max(1)))
        .max(1.0);
        table.scheduled_requests = ((whole as f64 + (runs_between - 1.0) * window as f64) / runs_between).ceil() as u64;
        table.basis = format!(
            "recent window: ~{} newer records a run in {window} request(s), older rows carried over; a whole \
             read of {whole} requests every {} days; averaged",
            self.window_rows, settings.full_refresh_days
        );
    }
}

struct Probe<'a> {
    client: &'a CapsuleClient,
    requests: u64,
    /// The first page of the last listing counted (its newest records, if it is newest first).
    newest: Option<ListingPage>,
}

impl Probe<'_> {
    /// Records in a listing now (or changed since `since`), its first page's records and URL.
    async fn count(&mut self, listing: &Listing, since: Option<DateTime<Utc>>) -> Result<(u64, ListingPage, Url)> {
        let per_page = listing.max_per_page.to_string();
        let since = since.map(since_param);
        let mut params: Vec<(&str, &str)> = listing.params.to_vec();
        params.push(("perPage", &per_page));
        if let Some(since) = &since {
            params.push(("since", since));
        }
        let url: Url = self.client.url(listing.path, &params)?;
        let extra_keys: Vec<&str> = listing.extra_envelopes.iter().map(|e| e.key).collect();
        let first = self.client.get_listing_page(&url, listing.envelope, &extra_keys).await?;
        self.requests += 1;
        // Rows from the other arrays of the body (a deleted feed's restricted records).
        let extra = first.extras_len() as u64;
        let on_first = first.len() as u64;
        if on_first < u64::from(listing.max_per_page) || first.next.is_none() {
            return Ok((on_first + extra, first, url));
        }
        let counted = count_records(self.client, &url, listing.max_per_page as usize, listing.envelope).await?;
        self.requests += counted.requests;
        Ok((counted.records as u64 + extra, first, url))
    }

    /// Records from pages spread evenly over a listing of `pages` (page 1 is `first`): records
    /// are listed by id, and a sample of the first page alone would see only the oldest.
    async fn sample(
        &mut self,
        listing: &Listing,
        url: &Url,
        pages: u64,
        first: ListingPage,
    ) -> Result<Vec<ListingPage>> {
        let mut sample = vec![first];
        let picks: BTreeSet<u64> = (1..SAMPLE_PAGES).map(|k| 1 + k * (pages - 1) / (SAMPLE_PAGES - 1)).collect();
        for page in picks.into_iter().filter(|p| *p > 1) {
            let url = with_page(url, page as usize);
            sample.push(self.client.get_listing_page(&url, listing.envelope, &[]).await?);
            self.requests += 1;
        }
        Ok(sample)
    }

    /// A listed table: counted from the history start (a first load) and from one schedule
    /// interval ago (a scheduled run).
    async fn listings(
        &mut self,
        spec: &'static TableSpec,
        listings: &[Listing],
        (history_start, since): (DateTime<Utc>, DateTime<Utc>),
    ) -> Result<TablePlan> {
        let (mut rows, mut first, mut scheduled_rows, mut scheduled) = (Some(0u64), 0, Some(0u64), 0);
        let mut filtered = false;
        for listing in listings {
            let per_page = u64::from(listing.max_per_page);
            let (all, first_page, _) =
                self.count(listing, spec.replication.uses_since().then_some(history_start)).await?;
            self.newest = Some(first_page);
            let load_pages = pages(all, per_page);
            first += load_pages + guard(listing, all);
            if listing.filters.is_empty() {
                rows = rows.map(|r| r + all);
            } else {
                filtered = true;
                rows = None;
            }
            let changed = match spec.replication {
                Replication::Full => all,
                Replication::Incremental | Replication::DeletedFeed => self.count(listing, Some(since)).await?.0,
            };
            let changed_pages = pages(changed, per_page);
            scheduled += changed_pages + guard(listing, changed);
            scheduled_rows = scheduled_rows.zip((!filtered).then_some(changed)).map(|(a, b)| a + b);
        }
        let basis = match spec.replication {
            Replication::Full if filtered => "reads the whole listing every run (rows after its filter)",
            Replication::Full => "a full snapshot every run",
            Replication::Incremental => "changes in one schedule interval, counted with since",
            Replication::DeletedFeed => "tombstones in one schedule interval, counted with since",
        };
        Ok(TablePlan {
            table: spec.name,
            replication: spec.replication.as_str(),
            rows,
            first_load_requests: first,
            scheduled_rows,
            scheduled_requests: scheduled,
            basis: basis.to_string(),
        })
    }

    async fn fan_out(
        &mut self,
        spec: &'static TableSpec,
        discover: &[capsule_core::catalog::ParentDiscovery],
        history: &[TableRunRecord],
        shared: bool,
    ) -> Result<TablePlan> {
        let last = history
            .iter()
            .filter(|r| r.table == spec.name && r.state == RunState::Succeeded)
            .max_by_key(|r| r.started_at);
        let mut requests = 0;
        let mut parents_estimate = 0.0;
        for route in discover {
            let listing = &route.listing;
            let (all, first, url) = self.count(listing, None).await?;
            let discovery_pages = pages(all, u64::from(listing.max_per_page));
            // Read by another table of the sync, the listing costs this one nothing.
            if !shared {
                requests += discovery_pages + guard(listing, all);
            }
            let sample = self.sample(listing, &url, discovery_pages, first).await?;
            // Parents named in the sample, scaled to the whole listing (a parent's records sit
            // together, so a page names about as many parents as any other of its size).
            let records: Vec<RawRecord<'_>> = sample.iter().flat_map(ListingPage::records).collect::<Result<_>>()?;
            let named: BTreeSet<String> = records
                .iter()
                .filter(|r| matches_all(r, listing.filters))
                .flat_map(|r| route.targets.iter().filter_map(|t| r.value(t.id_field)).map(|id| id.to_string()))
                .collect();
            parents_estimate += named.len() as f64 * all as f64 / records.len().max(1) as f64;
        }
        let (total, basis) = match last {
            Some(run) => (run.requests.requests, format!("as its last run ({})", run.run_id)),
            None => (
                requests + parents_estimate.round() as u64,
                match shared {
                    true => "parents estimated from a sample of the first page (the discovery listing is shared)",
                    false => "discovery pages + parents estimated from a sample of the first page",
                }
                .to_string(),
            ),
        };
        Ok(TablePlan {
            table: spec.name,
            replication: spec.replication.as_str(),
            rows: last.map(|r| r.rows),
            first_load_requests: total,
            scheduled_rows: last.map(|r| r.rows),
            scheduled_requests: total,
            basis,
        })
    }
}

/// What this run of each table is expected to spend, without a request: a table whose last run
/// read from a bookmark is expected to spend what that run did (what a scheduled run reads
/// changes by the hour, so this is a guide); a full table, what its last run did; a table with
/// neither — a first load — from `plan` when one was made, else unknown (absent).
pub fn expected_requests(
    tables: &[&'static TableSpec],
    history: &[TableRunRecord],
    plan: Option<&Plan>,
) -> std::collections::BTreeMap<&'static str, u64> {
    let mut expected = std::collections::BTreeMap::new();
    for table in tables {
        let mut runs: Vec<&TableRunRecord> =
            history.iter().filter(|r| r.table == table.name && r.state == RunState::Succeeded).collect();
        runs.sort_by_key(|r| std::cmp::Reverse(r.started_at));
        let comparable = runs
            .iter()
            .find(|r| !table.replication.uses_since() || r.bookmark_before.is_some())
            .map(|r| r.requests.requests);
        let planned = plan
            .and_then(|p| p.tables.iter().find(|t| t.table == table.name))
            .map(|t| if runs.is_empty() { t.first_load_requests } else { t.scheduled_requests });
        if let Some(requests) = planned.or(comparable) {
            expected.insert(table.name, requests);
        }
    }
    expected
}

#[cfg(test)]
mod tests {
    use super::*;
    use capsule_core::catalog::table;

    #[test]
    fn a_run_is_expected_to_spend_what_the_last_comparable_run_did() {
        let id = capsule_core::integration::RunId::new(Utc::now());
        let run = |name: &str, requests: u64, bookmark: bool, minutes_ago: i64| {
            let started = Utc::now() - Duration::minutes(minutes_ago);
            let mut r = TableRunRecord::new("acme", name, &id, RunState::Succeeded, started);
            r.requests.requests = requests;
            r.bookmark_before = bookmark.then_some(started);
            r
        };
        let history = [run("parties", 900, false, 60), run("parties", 4, true, 30), run("users", 1, false, 30)];
        let tables = [table("parties").unwrap(), table("users").unwrap(), table("tasks").unwrap()];
        let expected = expected_requests(&tables, &history, None);
        assert_eq!(expected.get("parties"), Some(&4), "the incremental run, not the first load");
        assert_eq!(expected.get("users"), Some(&1), "a full table: its last run");
        assert_eq!(expected.get("tasks"), None, "a first load without a plan is not guessed");
    }

    #[test]
    fn the_guard_costs_what_the_engine_spends() {
        let Fetch::Listings(parties) = table("parties").unwrap().fetch else { panic!() };
        let Fetch::Listings(tasks) = table("tasks").unwrap().fetch else { panic!() };
        assert_eq!(guard(&parties[0], 100), 0);
        assert_eq!(guard(&parties[0], 100_000), 2);
        // The scale benchmark: 58,694 tasks took 587 pages and 19 more requests.
        assert_eq!(pages(58_694, 100) + guard(&tasks[0], 58_694), 606);
        assert_eq!(pages(0, 100), 1);
        assert_eq!(pages(100_001, 100), 1001);
    }
}
