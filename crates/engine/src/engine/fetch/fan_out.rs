//! Fan-out tables (tracks, milestones, custom fields...): discover the parents through their
//! routes (or the same job's snapshot), save them beside the checkpoint, then read each parent's
//! children a few at a time.

use std::collections::BTreeSet;

use bytes::Bytes;
use futures::StreamExt;
use serde_json::Value;
use url::Url;

use super::*;
use crate::engine::row::matches_all;
use crate::engine::snapshot::SnapshotRows;
use crate::output::{self, PartWriter};
use capsule_client::{CapsuleClient, ListingPage, RawRecord};
use capsule_core::catalog::ParentDiscovery;
use capsule_core::manifest::RunManifest;
use capsule_core::observe::Event;
use capsule_core::ports::{Cursor, Discovery};
use capsule_core::runlog::RunLog;
use capsule_core::{Result, SyncError};

/// Discovered parents, and for a recent read those a record changed since the cutoff names
/// (`None` once only the parents left to ask are kept).
#[derive(Debug, Default)]
pub(super) struct Found {
    pub(super) parents: BTreeSet<Parent>,
    pub(super) changed: Option<BTreeSet<(String, i64)>>,
}

impl Found {
    fn add(&mut self, parent: Parent, changed: bool) {
        if let Some(set) = self.changed.as_mut().filter(|_| changed) {
            set.insert((parent.child_path.clone(), parent.id));
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

/// How a fan-out table reads each parent's children.
#[derive(Clone, Copy)]
pub(super) struct Children {
    pub(super) envelope: &'static str,
    pub(super) parent_id_column: &'static str,
    pub(super) max_per_page: u32,
}

/// Parents whose children are fetched at the same time (they share the token's rate limit).
pub(super) const FAN_OUT_CONCURRENCY: usize = 4;

/// Every page of one parent's children (a 404 means the parent is gone: no children).
pub(super) async fn read_children(
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

impl Extraction<'_> {
    /// Discovers the parents (or loads those a checkpoint saved), then reads every parent's
    /// children from the resume point on. A recent read first carries over the children of the
    /// parents no discovered record changed, and then asks only the others.
    pub(super) async fn read_fan_out(
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
            .filter(|p| resume.parent.as_ref().is_none_or(|at| (p.child_path.clone(), p.id) >= *at))
            .collect();
        let read = self.write_children(&todo, children, writer).await;
        // Only a run that parks needs its parents again: saved then, for its continuations.
        if matches!(read, Err(Halt::Park(..))) && !saved {
            let key = output::parents_key(self.integration, self.table.name, self.run_id);
            self.save_parents(&key, &Found { parents: todo.into_iter().collect(), changed: None }).await?;
        }
        read
    }

    /// Reads every parent's children, in parent order, and writes them.
    pub(super) async fn write_children(
        &mut self,
        todo: &[Parent],
        children: Children,
        writer: &mut PartWriter<'_>,
    ) -> Result<(), Halt> {
        let parents_key = Some(output::parents_key(self.integration, self.table.name, self.run_id));
        let (carried_rows, discovered_at) = (self.recent.as_ref().and_then(|r| r.carried), self.discovered_at);
        let at_parent = |i: usize| Cursor {
            parent: todo.get(i).map(|p| (p.child_path.clone(), p.id)),
            parents_key: parents_key.clone(),
            carried_rows,
            discovered_at,
            ..Cursor::default()
        };
        // Children are fetched FAN_OUT_CONCURRENCY parents at a time (they are small: a page or
        // two each) and written in parent order; a park happens between parents.
        let (client, log) = (self.client, self.log.clone());
        // The children's paths are owned and each fetch is made when the stream asks for it:
        // futures made up front would hold one request's state per parent (tens of thousands
        // on a big account). Owned paths also keep the run's future `Send` (a stream over a
        // borrowed iterator would not be, a higher-ranked lifetime limitation of the compiler).
        let paths: Vec<String> = todo.iter().map(|p| p.child_path.replace("{id}", &p.id.to_string())).collect();
        let mut fetched = futures::stream::iter(paths)
            .map(|path| {
                let log = log.clone();
                async move { read_children(client, &path, children.envelope, children.max_per_page, log).await }
            })
            .buffered(FAN_OUT_CONCURRENCY);
        let mut i = 0;
        while let Some(result) = fetched.next().await {
            let pages = result.map_err(|e| halt_at(e, &at_parent(i)))?;
            let Parent { entity, id, .. } = &todo[i];
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
            if i < todo.len() && self.should_park() {
                return Err(Halt::Park(Box::new(at_parent(i)), None));
            }
        }
        Ok(())
    }

    /// The parents to read, and whether a checkpoint already saved all of them: from that saved
    /// list, or discovered now (resuming a discovery that parked part way, whose parents so far
    /// are saved when it parks).
    pub(super) async fn parents(&mut self, routes: &[ParentDiscovery], resume: &Cursor) -> Result<(Found, bool), Halt> {
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
            if let Halt::Park(..) = &halt {
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

    pub(super) async fn load_parents(&self, key: &str) -> Result<Found> {
        let bytes = self.sink.get(key).await?.ok_or_else(|| {
            SyncError::State(format!("the checkpoint names the discovered parents at {key}, which is missing"))
        })?;
        Found::parse(&bytes).map_err(|e| SyncError::State(format!("{key} is not a list of parents: {e}")))
    }

    pub(super) async fn save_parents(&self, key: &str, found: &Found) -> Result<()> {
        self.sink.put(key, found.body()?).await
    }

    /// Reads the discovery listings from `from` on, adding (child path template, entity, parent
    /// id) to `found`. A park carries the discovery's position.
    pub(super) async fn discover_parents(
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
                    && self.should_park()
                {
                    at.next_url = Some(next.to_string());
                    let cursor = Cursor { discovery: Some(at), parents_key, ..Cursor::default() };
                    return Err(Halt::Park(Box::new(cursor), None));
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
    pub(super) fn note_parents(&self, route: &ParentDiscovery, record: &RawRecord<'_>, found: &mut Found) {
        if !matches_all(record, route.listing.filters) {
            return;
        }
        let changed = self.recent.as_ref().is_some_and(|r| r.window.marks_changed(record));
        for target in route.targets {
            if let Some(id) = record.value(target.id_field).as_ref().and_then(Value::as_i64) {
                found.add(
                    Parent { child_path: target.child_path.to_string(), entity: target.entity.map(str::to_string), id },
                    changed,
                );
            }
        }
    }

    /// Discovers the parents from the rows of another table's snapshot of the same listing.
    pub(super) async fn discover_from_snapshot(
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
}
