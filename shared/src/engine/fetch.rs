//! Executes a table's fetch plan: page through its listings (or discover parents, then page
//! through each parent's children) and hand every row to the part writer. One code path for
//! all 22 tables; what differs is the catalog entry.

use std::collections::BTreeSet;

use serde_json::{Map, Value};
use url::Url;

use super::row::{RowBuilder, get_path, matches_all};
use crate::capsule::{CapsuleClient, ListingPage};
use crate::catalog::{Constant, Fetch, Listing, ParentDiscovery, TableSpec};
use crate::integration::FanOutMode;
use crate::output::PartWriter;
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
}

impl<'a> Pager<'a> {
    pub fn new(client: &'a CapsuleClient, first: Url, envelope: &'a str, extras: Vec<&'a str>) -> Pager<'a> {
        Pager { client, next: Some(first), envelope, extras, missing_ok: false, seen: BTreeSet::new() }
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
                tracing::info!(event = "parent_gone", request = %url.path(), "parent no longer exists; skipped");
                Ok(None)
            }
            Err(e) => Err(e),
        }
    }
}

/// Everything an extraction needs.
pub struct Extraction<'a> {
    pub client: &'a CapsuleClient,
    pub table: &'static TableSpec,
    pub since: Option<chrono::DateTime<chrono::Utc>>,
    pub fan_out: FanOutMode,
    pub rows: RowBuilder,
    pub progress: Option<&'a (dyn Fn(u64) + Send + Sync)>,
}

impl Extraction<'_> {
    pub async fn run(&mut self, writer: &mut PartWriter<'_>) -> Result<()> {
        match self.table.fetch {
            Fetch::Listings(listings) => {
                for listing in listings {
                    self.read_listing(listing, listing.path, &[], false, writer).await?;
                }
                Ok(())
            }
            Fetch::FanOut { discover, exhaustive, envelope, parent_id_column, max_per_page } => {
                let routes = match self.fan_out {
                    FanOutMode::Exhaustive if !exhaustive.is_empty() => exhaustive,
                    _ => discover,
                };
                let parents = self.discover_parents(routes).await?;
                tracing::info!(event = "parents_discovered", table = self.table.name, parents = parents.len());
                for (child_path, entity, id) in &parents {
                    let child = Listing {
                        path: child_path,
                        envelope,
                        params: &[],
                        constants: &[],
                        extra_envelopes: &[],
                        filters: &[],
                        max_per_page,
                    };
                    let path = child_path.replace("{id}", &id.to_string());
                    let mut parent_columns: Vec<(&'static str, Value)> = vec![(parent_id_column, Value::from(*id))];
                    if let Some(entity) = entity {
                        parent_columns.push(("entity", Value::String((*entity).to_string())));
                    }
                    self.read_listing(&child, &path, &parent_columns, true, writer).await?;
                }
                Ok(())
            }
        }
    }

    /// Pages through one listing and writes its rows.
    async fn read_listing(
        &mut self,
        listing: &Listing,
        path: &str,
        parent: &[(&'static str, Value)],
        missing_ok: bool,
        writer: &mut PartWriter<'_>,
    ) -> Result<()> {
        let url = self.first_url(listing, path)?;
        let extra_keys: Vec<&str> = listing.extra_envelopes.iter().map(|e| e.key).collect();
        let mut pager = Pager::new(self.client, url, listing.envelope, extra_keys);
        pager.missing_ok = missing_ok;
        while let Some(page) = pager.next_page().await? {
            for item in page.page.items {
                let record = into_object(item, listing)?;
                if matches_all(&record, listing.filters) {
                    let row = self.rows.build(record, listing.constants, parent, true);
                    writer.write_row(&row).await?;
                }
            }
            for (extra, items) in listing.extra_envelopes.iter().zip(page.extras) {
                for item in items {
                    let record = into_object(item, listing)?;
                    let constants: &[Constant] = extra.constants;
                    let row = self.rows.build(record, constants, parent, false);
                    writer.write_row(&row).await?;
                }
            }
            if let Some(progress) = self.progress {
                progress(writer.rows());
            }
        }
        Ok(())
    }

    /// Reads the discovery listings and returns (child path template, entity, parent id), deduplicated.
    async fn discover_parents(
        &mut self,
        routes: &[ParentDiscovery],
    ) -> Result<BTreeSet<(&'static str, Option<&'static str>, i64)>> {
        let mut parents = BTreeSet::new();
        for route in routes {
            let url = self.first_url(&route.listing, route.listing.path)?;
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

    fn first_url(&self, listing: &Listing, path: &str) -> Result<Url> {
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
        self.client.url(path, &params)
    }
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
